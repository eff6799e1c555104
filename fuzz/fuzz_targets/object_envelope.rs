//! Any bytes handed to the envelope decoder, of a plain or an encrypted pool: an error or a
//! body, never a panic or a huge allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cuckoo_fuzz::object_envelope(data));
