//! Key slots are read before the pool is unlocked, from any backend: hostile bytes must
//! decode to a slot or an error, and opening a decoded slot must not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cuckoo_fuzz::key_slot(data));
