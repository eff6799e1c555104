//! Any bytes handed to the envelope decoder: an error or a body, never a panic or a huge
//! allocation.
#![no_main]
use cuckoo::codec::{self, ObjectKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kind in [ObjectKind::Chunk, ObjectKind::Tree, ObjectKind::Snapshot] {
        if let Ok(body) = codec::decode(kind, data) {
            assert_eq!(body.len(), codec::parse_header(data).unwrap().plain_len);
        }
    }
    let _ = cuckoo::store::verify(ObjectKind::Chunk, &cuckoo::ObjectId([0; 32]), data);
});
