//! What each fuzz target checks, one function per target: the targets in `fuzz_targets/`
//! call these, and `tests/fuzz_corpus.rs` replays every input of `corpus/` through the same
//! functions on each test run, so a fixed defect's input stays fixed on stable Rust too.
//! Each function returns for any bytes, or panics on a broken invariant.

use cuckoo::ObjectId;
use cuckoo::internals::codec::{self, ObjectKind};
use cuckoo::internals::crypto::{KeySlot, Keys, MasterKey, Passphrase};
use cuckoo::internals::redundancy::{join, open_shard, split};
use cuckoo::internals::store::{decode_pool_record, encode_pool_record};
use cuckoo::model::{self, ForgetRecord, LockRecord, PruneRecord, Snapshot, Tree, TreePack};

/// Any bytes handed to the envelope decoder, of a plain or an encrypted pool: an error or a
/// body, never a panic or a huge allocation.
pub fn object_envelope(data: &[u8]) {
    let id = ObjectId([0; 32]);
    for keys in [Keys::plain(), Keys::from_master(&MasterKey::from_bytes([1; 32]))] {
        for kind in [ObjectKind::Chunk, ObjectKind::Tree, ObjectKind::Snapshot, ObjectKind::Key, ObjectKind::Forget] {
            if let Ok(body) = codec::decode(kind, &id, data, &keys) {
                assert_eq!(body.len(), codec::read_header(kind, &id, data, &keys).unwrap().plain_len);
            }
        }
        let _ = cuckoo::internals::store::verify(ObjectKind::Chunk, &id, data, &keys);
    }
    damaged_segmented_chunk(data);
}

/// A segmented chunk (format 4) made of the input's bytes, damaged at one byte the input
/// chooses: hostile bytes alone never pass its table's hash, so this is how the fuzzer
/// reaches the segment parsing behind it. Decoding gives the body or an error, never other
/// bytes; so does a ranged read of any segments.
fn damaged_segmented_chunk(data: &[u8]) {
    let Some((control, body)) = data.split_first_chunk::<6>() else { return };
    let keys = Keys::plain();
    let id = keys.id_of(body);
    // Level 0: stored raw, so segmented whatever the bytes.
    let mut stored = codec::encode(ObjectKind::Chunk, &id, body, 0, &keys);
    let at = u32::from_le_bytes(control[..4].try_into().unwrap()) as usize % stored.len();
    stored[at] ^= control[4] | 1;
    if let Ok(decoded) = codec::decode_verified(ObjectKind::Chunk, &id, &stored, &keys) {
        assert_eq!(decoded, body, "a damaged chunk decoded to other bytes");
    }
    let Ok(layout) = codec::Layout::read(&id, &stored, &keys) else { return };
    let start = control[5] as u64 * codec::SEGMENT as u64 / 64;
    let segs = layout.segments(start..start + 4096);
    let range = layout.stored(&segs);
    let (from, to) = (range.start as usize, (range.end as usize).min(stored.len()));
    if let Ok(plain) = layout.open(&keys, segs.clone(), &stored[from.min(to)..to]) {
        let first = segs.start * codec::SEGMENT;
        assert_eq!(plain, body[first..first + plain.len()], "a damaged segment opened to other bytes");
    }
}

/// Tree, tree-pack, snapshot, lock, prune- and forget-record bodies from hostile backends
/// (or a damaged catalogue) decode to a value or an error.
pub fn records(data: &[u8]) {
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
            let _ = pack.body(id, &Keys::plain());
        }
    }
}

/// The pool record read from every backend at open, plain or sealed.
pub fn pool_record(data: &[u8]) {
    for keys in [Keys::plain(), Keys::from_master(&MasterKey::from_bytes([1; 32]))] {
        if let Ok(record) = decode_pool_record(data, &keys) {
            assert_eq!(decode_pool_record(&encode_pool_record(&record, &keys), &keys).unwrap(), record);
        }
    }
}

/// Key slots are read before the pool is unlocked, from any backend: hostile bytes must
/// decode to a slot or an error, and opening a decoded slot must not panic.
pub fn key_slot(data: &[u8]) {
    if let Ok(slot) = KeySlot::decode(data) {
        assert_eq!(KeySlot::decode(&slot.encode()).unwrap(), slot);
        // Costs out of range are refused before any hashing, so this stays cheap.
        if slot.kdf.memory_kib <= 8 * 1024 && slot.kdf.iterations <= 2 {
            let _ = slot.open(&Passphrase::new("fuzz"));
        }
    }
}

/// Shards come from backends that may be hostile or broken: any bytes must open to a
/// verified shard or an error, and joining any set of opened shards must not panic.
pub fn shard(data: &[u8]) {
    let id = ObjectId::of(b"fuzz");
    let _ = open_shard(&id, data);
    // Split the input as an object, damage one shard with the input's first byte, and join
    // what still opens: either the object or an error, never other bytes.
    if let Some((&k, rest)) = data.split_first() {
        let (data_shards, parity) = (k % 5 + 1, k / 64 + 1);
        let shards = split(&id, rest, data_shards, parity).unwrap();
        let mut damaged = shards.clone();
        let at = (k as usize) % damaged.len();
        if let Some(b) = damaged[at].last_mut() {
            *b ^= 1;
        }
        let opened: Vec<_> = damaged.iter().filter_map(|s| open_shard(&id, s).ok()).collect();
        if let Ok(object) = join(&id, &opened) {
            assert_eq!(object, rest);
        }
    }
}

/// What a target checks of one input.
pub type Check = fn(&[u8]);

/// Every target by name, for replaying a corpus directory.
pub const TARGETS: [(&str, Check); 5] = [
    ("object_envelope", object_envelope),
    ("records", records),
    ("pool_record", pool_record),
    ("key_slot", key_slot),
    ("shard", shard),
];
