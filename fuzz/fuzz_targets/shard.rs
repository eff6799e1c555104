//! Shards come from backends that may be hostile or broken: any bytes must open to a
//! verified shard or an error, and joining any set of opened shards must not panic.
#![no_main]
use cuckoo::ObjectId;
use cuckoo::internals::redundancy::{join, open_shard, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
