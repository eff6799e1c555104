//! Shards come from backends that may be hostile or broken: any bytes must open to a
//! verified shard or an error, and joining any set of opened shards must not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cuckoo_fuzz::shard(data));
