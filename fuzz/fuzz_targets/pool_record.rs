//! The pool record read from every backend at open.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = cuckoo::store::decode_pool_record(data) {
        assert_eq!(cuckoo::store::decode_pool_record(&cuckoo::store::encode_pool_record(&record)).unwrap(), record);
    }
});
