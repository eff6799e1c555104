//! Tree, tree-pack, snapshot, lock, prune- and forget-record bodies from hostile backends
//! (or a damaged catalogue) decode to a value or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cuckoo_fuzz::records(data));
