//! The pool record read from every backend at open, plain or sealed.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cuckoo_fuzz::pool_record(data));
