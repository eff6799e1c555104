//! Any bytes handed to the envelope decoder, of a plain or an encrypted pool: an error or a
//! body, never a panic or a huge allocation.
#![no_main]
use cuckoo::ObjectId;
use cuckoo::internals::codec::{self, ObjectKind};
use cuckoo::internals::crypto::{Keys, MasterKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = ObjectId([0; 32]);
    for keys in [Keys::plain(), Keys::from_master(&MasterKey::from_bytes([1; 32]))] {
        for kind in [ObjectKind::Chunk, ObjectKind::Tree, ObjectKind::Snapshot, ObjectKind::Key] {
            if let Ok(body) = codec::decode(kind, &id, data, &keys) {
                assert_eq!(body.len(), codec::read_header(kind, &id, data, &keys).unwrap().plain_len);
            }
        }
        let _ = cuckoo::internals::store::verify(ObjectKind::Chunk, &id, data, &keys);
    }
});
