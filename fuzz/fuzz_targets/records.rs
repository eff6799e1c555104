//! Tree, tree-pack, snapshot, lock, prune- and forget-record bodies from hostile backends
//! (or a damaged catalogue) decode to a value or an error.
#![no_main]
use cuckoo::model::{self, ForgetRecord, LockRecord, PruneRecord, Snapshot, Tree, TreePack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::from_body(data) {
        let again = Tree::from_body(&tree.to_body()).unwrap();
        assert_eq!(again, tree);
    }
    let _ = model::from_body::<Snapshot>("snapshot", data);
    let _ = model::from_body::<LockRecord>("lock", data);
    let _ = model::from_body::<PruneRecord>("prune record", data);
    let _ = model::from_body::<ForgetRecord>("forget record", data);
    if let Ok(pack) = model::from_body::<TreePack>("tree pack", data) {
        for (id, _) in &pack.trees {
            let _ = pack.body(id, &cuckoo::internals::crypto::Keys::plain());
        }
    }
});
