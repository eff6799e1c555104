//! Tree, tree-pack and snapshot bodies from hostile backends decode to a value or an error.
#![no_main]
use cuckoo::model::{self, Snapshot, Tree, TreePack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = model::from_body::<Tree>("tree", data) {
        let again: Tree = model::from_body("tree", &model::to_body(&tree)).unwrap();
        assert_eq!(again, tree);
    }
    let _ = model::from_body::<Snapshot>("snapshot", data);
    if let Ok(pack) = model::from_body::<TreePack>("tree pack", data) {
        for (id, _) in &pack.trees {
            let _ = pack.body(id, &cuckoo::internals::crypto::Keys::plain());
        }
    }
});
