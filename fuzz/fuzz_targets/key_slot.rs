//! Key slots are read before the pool is unlocked, from any backend: hostile bytes must
//! decode to a slot or an error, and opening a decoded slot must not panic.
#![no_main]
use cuckoo::internals::crypto::{KeySlot, Passphrase};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(slot) = KeySlot::decode(data) {
        assert_eq!(KeySlot::decode(&slot.encode()).unwrap(), slot);
        // Costs out of range are refused before any hashing, so this stays cheap.
        if slot.kdf.memory_kib <= 8 * 1024 && slot.kdf.iterations <= 2 {
            let _ = slot.open(&Passphrase::new("fuzz"));
        }
    }
});
