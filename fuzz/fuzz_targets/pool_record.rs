//! The pool record read from every backend at open, plain or sealed.
#![no_main]
use cuckoo::internals::crypto::{Keys, MasterKey};
use cuckoo::internals::store::{decode_pool_record, encode_pool_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for keys in [Keys::plain(), Keys::from_master(&MasterKey::from_bytes([1; 32]))] {
        if let Ok(record) = decode_pool_record(data, &keys) {
            assert_eq!(decode_pool_record(&encode_pool_record(&record, &keys), &keys).unwrap(), record);
        }
    }
});
