//! Keys of an encrypted pool: the master key, the passphrase-wrapped key slots that hold it,
//! the subkeys derived from it, and the AEAD that seals object bytes.
//!
//! Owns: key derivation (Argon2id for passphrases, BLAKE3 `derive_key` for subkeys), the key
//! slot record, keyed object ids, and XChaCha20-Poly1305 sealing. Must not: do I/O, or know
//! the envelope layout (`codec` decides what is sealed with which associated data; a key
//! slot's stored form is in `store/shared.rs`).
//! docs/format.md ("Encryption") is the spec; docs/security.md the threat model.
//!
//! XChaCha20-Poly1305 takes a 192-bit nonce, so nonces are simply random: a repeat is as
//! likely as guessing a key. Every object gets a fresh one, also when its content repeats.
//! It is built here from HChaCha20 and AWS-LC's ChaCha20-Poly1305 (the construction of
//! draft-irtf-cfrg-xchacha), because AWS-LC's assembly seals and opens in one pass at about
//! 1.8x the speed of RustCrypto's `XChaCha20Poly1305`; the bytes are the same, which the
//! tests check against that crate.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use chacha20::cipher::consts::U10;
use chacha20::cipher::generic_array::GenericArray;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;

/// Bytes of an XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of a Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// BLAKE3 `derive_key` contexts: one per subkey, so no key ever serves two purposes.
const CONTEXT_ID: &str = "cuckoo 2026-11-24 object id key";
const CONTEXT_HEAD: &str = "cuckoo 2026-11-24 envelope header key";
const CONTEXT_BODY: &str = "cuckoo 2026-11-24 envelope body key";
const CONTEXT_CHUNKER: &str = "cuckoo 2026-11-24 chunker seed";
const CONTEXT_CACHE_MAC: &str = "cuckoo 2026-12-03 local cache table key";
const CONTEXT_CACHE_CIPHER: &str = "cuckoo 2026-12-03 local cache cipher key";
/// Associated data of a key slot's wrapped master key.
const SLOT_AAD: &[u8] = b"cuckoo key slot v1";

/// A passphrase, wiped from memory when dropped and never printed.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wrap `text`. Trailing newlines (from files and pipes) are not part of it.
    pub fn new(text: impl Into<String>) -> Passphrase {
        let mut text: String = text.into();
        while text.ends_with(['\n', '\r']) {
            text.pop();
        }
        Passphrase(Zeroizing::new(text))
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// True for the empty passphrase.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether two passphrases are the same (to confirm a typed one).
    pub fn eq_secret(&self, other: &Passphrase) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Where a passphrase comes from when a pool turns out to need one. `new` is true when the
/// passphrase will lock a new key slot (a prompt then asks twice).
pub trait PassphraseSource: Sync {
    /// The passphrase, or an error saying how to give one.
    fn passphrase(&self, new: bool) -> Result<Passphrase>;
}

impl PassphraseSource for Passphrase {
    fn passphrase(&self, _new: bool) -> Result<Passphrase> {
        Ok(self.clone())
    }
}

/// For callers that only open unencrypted pools: asking is an error.
pub struct NoPassphrase;

impl PassphraseSource for NoPassphrase {
    fn passphrase(&self, _new: bool) -> Result<Passphrase> {
        Err(Error::config("the pool is encrypted and no passphrase was given"))
    }
}

/// Argon2id cost parameters, stored in each key slot so they can differ per slot and grow
/// with hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB and 3 passes (RFC 9106's second recommendation, with one lane because the
    /// Argon2 crate computes lanes on one thread): 0.1 s per open on this project's CI machine.
    fn default() -> Self {
        KdfParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 }
    }
}

impl KdfParams {
    /// Reject costs too low to slow down guessing, or so high that opening would fail.
    pub fn validate(&self) -> Result<()> {
        let ok = (8 * 1024..=4 * 1024 * 1024).contains(&self.memory_kib)
            && (1..=64).contains(&self.iterations)
            && (1..=16).contains(&self.parallelism);
        if ok {
            Ok(())
        } else {
            Err(Error::config(format!(
                "key derivation costs {self:?} are out of range (memory 8 MiB to 4 GiB, 1 to 64 passes, 1 to 16 lanes)"
            )))
        }
    }

    fn derive(&self, passphrase: &Passphrase, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.validate().map_err(|e| Error::corrupt(format!("key slot: {}", e.context())))?;
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::corrupt(format!("key slot: Argon2 parameters rejected: {e}")))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase.as_bytes(), salt, out.as_mut())
            .map_err(|e| Error::new(ErrorKind::Config, format!("key derivation failed: {e}")))?;
        Ok(out)
    }
}

/// The pool's master key: 32 random bytes every subkey derives from.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// A new random key.
    pub fn generate() -> MasterKey {
        MasterKey(Zeroizing::new(rand::random()))
    }

    /// A fixed key, for tests and known-answer vectors only.
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(Zeroizing::new(bytes))
    }
}

/// One way to unlock the pool: the master key sealed under a key derived from a passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySlot {
    /// When the slot was made, nanoseconds since the epoch.
    pub created_ns: i64,
    /// Argon2id costs.
    pub kdf: KdfParams,
    /// Argon2id salt.
    pub salt: [u8; 16],
    /// Nonce of the wrapped key.
    pub nonce: [u8; NONCE_LEN],
    /// The master key sealed with XChaCha20-Poly1305 (32 bytes + tag).
    pub wrapped: Vec<u8>,
}

impl KeySlot {
    /// Lock `master` under `passphrase`.
    pub fn seal(master: &MasterKey, passphrase: &Passphrase, kdf: KdfParams, created_ns: i64) -> Result<KeySlot> {
        kdf.validate()?;
        Self::seal_with(master, passphrase, kdf, created_ns, rand::random(), rand::random())
    }

    fn seal_with(
        master: &MasterKey,
        passphrase: &Passphrase,
        kdf: KdfParams,
        created_ns: i64,
        salt: [u8; 16],
        nonce: [u8; NONCE_LEN],
    ) -> Result<KeySlot> {
        let kek = kdf.derive(passphrase, &salt)?;
        let mut wrapped = master.0.to_vec();
        let tag = XChaCha(kek).seal(&nonce, SLOT_AAD, &mut wrapped);
        wrapped.extend_from_slice(&tag);
        Ok(KeySlot { created_ns, kdf, salt, nonce, wrapped })
    }

    /// The master key if `passphrase` is this slot's; `None` if it is not.
    pub fn open(&self, passphrase: &Passphrase) -> Result<Option<MasterKey>> {
        if self.wrapped.len() != 32 + TAG_LEN {
            return Err(Error::corrupt("key slot: wrapped key has the wrong length"));
        }
        let kek = self.kdf.derive(passphrase, &self.salt)?;
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&self.wrapped[..32]);
        let opened = XChaCha(kek).open(&self.nonce, SLOT_AAD, key.as_mut(), &self.wrapped[32..]);
        Ok(opened.then(|| MasterKey(key)))
    }
}

/// Try every slot with `passphrase`; the first that opens gives the master key and its id.
pub fn unlock(slots: &[(ObjectId, KeySlot)], passphrase: &Passphrase) -> Result<(MasterKey, ObjectId)> {
    if slots.is_empty() {
        return Err(Error::corrupt("the pool is encrypted but no backend holds a key slot"));
    }
    for (id, slot) in slots {
        if let Some(master) = slot.open(passphrase)? {
            return Ok((master, *id));
        }
    }
    Err(Error::new(
        ErrorKind::WrongPassphrase,
        format!("wrong passphrase: it opens none of the pool's {} key slots", slots.len()),
    ))
}

/// Which of the two envelope keys seals a part.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    Header,
    Body,
}

struct Secrets {
    id_key: Zeroizing<[u8; 32]>,
    header: XChaCha,
    body: XChaCha,
    chunker_seed: u64,
    cache_mac: Zeroizing<[u8; 32]>,
    cache_cipher: Zeroizing<[u8; 32]>,
}

/// What the pipeline needs to name and seal objects: nothing for an unencrypted pool, the
/// derived subkeys for an encrypted one. Cheap to clone.
#[derive(Clone)]
pub struct Keys(Option<Arc<Secrets>>);

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_encrypted() { "Keys(encrypted)" } else { "Keys(plain)" })
    }
}

impl Keys {
    /// An unencrypted pool: plain BLAKE3 ids, nothing sealed.
    pub fn plain() -> Keys {
        Keys(None)
    }

    /// The subkeys of an encrypted pool.
    pub fn from_master(master: &MasterKey) -> Keys {
        let derive = |context| Zeroizing::new(blake3::derive_key(context, master.0.as_ref()));
        let seed = derive(CONTEXT_CHUNKER);
        Keys(Some(Arc::new(Secrets {
            id_key: derive(CONTEXT_ID),
            header: XChaCha(derive(CONTEXT_HEAD)),
            body: XChaCha(derive(CONTEXT_BODY)),
            chunker_seed: u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")),
            cache_mac: derive(CONTEXT_CACHE_MAC),
            cache_cipher: derive(CONTEXT_CACHE_CIPHER),
        })))
    }

    /// True for an encrypted pool.
    pub fn is_encrypted(&self) -> bool {
        self.0.is_some()
    }

    /// The id of an object body: keyed BLAKE3 when encrypted, so a provider cannot test
    /// whether a known file is stored by hashing it.
    pub fn id_of(&self, body: &[u8]) -> ObjectId {
        match &self.0 {
            None => ObjectId::of(body),
            Some(s) => ObjectId(*blake3::keyed_hash(&s.id_key, body).as_bytes()),
        }
    }

    /// Like `id_of`, hashing on the rayon pool when the body is large.
    pub fn id_of_large(&self, body: &[u8]) -> ObjectId {
        if body.len() < 256 * 1024 {
            return self.id_of(body);
        }
        let mut hasher = match &self.0 {
            None => blake3::Hasher::new(),
            Some(s) => blake3::Hasher::new_keyed(&s.id_key),
        };
        hasher.update_rayon(body);
        ObjectId(*hasher.finalize().as_bytes())
    }

    /// The BLAKE3 chaining value of `bytes` lying `offset` bytes into an object's body (a
    /// multiple of 1 KiB), hashed the way ids are: what lets one segment of a chunk be checked
    /// against the chunk's id without the rest of it (`codec::segments`).
    pub(crate) fn subtree_cv(&self, offset: u64, bytes: &[u8]) -> [u8; 32] {
        use blake3::hazmat::HasherExt;
        let mut hasher = match &self.0 {
            None => blake3::Hasher::new(),
            Some(s) => blake3::Hasher::new_keyed(&s.id_key),
        };
        hasher.set_input_offset(offset);
        hasher.update(bytes);
        hasher.finalize_non_root()
    }

    /// The parent of two subtrees' chaining values: the id itself when `root`.
    pub(crate) fn merge_cvs(&self, left: &[u8; 32], right: &[u8; 32], root: bool) -> [u8; 32] {
        use blake3::hazmat::{Mode, merge_subtrees_non_root, merge_subtrees_root};
        let mode = match &self.0 {
            None => Mode::Hash,
            Some(s) => Mode::KeyedHash(&s.id_key),
        };
        if root {
            *merge_subtrees_root(left, right, mode).as_bytes()
        } else {
            merge_subtrees_non_root(left, right, mode)
        }
    }

    /// The FastCDC gear seed: secret in an encrypted pool, so chunk boundaries (and with
    /// them the stored sizes) of a known file cannot be predicted by the provider.
    pub fn chunker_seed(&self) -> u64 {
        self.0.as_ref().map_or(0, |s| s.chunker_seed)
    }

    /// The keyed hash that binds a local cache file to its chunk. An unencrypted pool has no
    /// secret, so its key is public: the hash then guards against damage, not forgery (the
    /// machine is trusted, docs/security.md).
    pub(crate) fn cache_mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let key = match &self.0 {
            Some(s) => *s.cache_mac,
            None => blake3::derive_key(CONTEXT_CACHE_MAC, b"unencrypted pool"),
        };
        let mut hasher = blake3::Hasher::new_keyed(&key);
        for part in parts {
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }

    /// Encrypt or decrypt (the same XOR) bytes of chunk `id` as the local cache holds them,
    /// starting `offset` bytes into the chunk; nothing in an unencrypted pool. A stream cipher,
    /// so one block of a cached chunk is read without the rest. The nonce is the id: ids
    /// differ for different contents, so a keystream is only ever reused for the same bytes.
    pub(crate) fn cache_keystream(&self, id: &ObjectId, offset: u64, buf: &mut [u8]) {
        use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        let Some(s) = &self.0 else { return };
        let mut cipher = chacha20::XChaCha20::new(
            GenericArray::from_slice(&s.cache_cipher[..]),
            GenericArray::from_slice(&id.0[..NONCE_LEN]),
        );
        cipher.seek(offset);
        cipher.apply_keystream(buf);
    }

    fn cipher(&self, part: Part) -> &XChaCha {
        let s = self.0.as_ref().expect("sealing needs an encrypted pool");
        match part {
            Part::Header => &s.header,
            Part::Body => &s.body,
        }
    }

    /// Encrypt `buf` in place; returns the tag.
    pub(crate) fn seal(&self, part: Part, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        self.cipher(part).seal(nonce, aad, buf)
    }

    /// Decrypt `buf` in place, or say the bytes are not what this pool sealed.
    pub(crate) fn open(&self, part: Part, nonce: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> Result<()> {
        authentic(self.cipher(part).open(nonce, aad, buf, tag))
    }

    /// Decrypt `sealed` into `out` (of the same length), leaving the stored bytes as they are.
    pub(crate) fn open_into(
        &self,
        part: Part,
        nonce: &[u8],
        aad: &[u8],
        sealed: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        authentic(self.cipher(part).open_into(nonce, aad, sealed, tag, out))
    }
}

fn authentic(opened: bool) -> Result<()> {
    if opened {
        Ok(())
    } else {
        Err(Error::corrupt("authentication failed: the object was altered, swapped or sealed by another key"))
    }
}

/// An XChaCha20-Poly1305 key: per message, HChaCha20 of the key and the nonce's first 16
/// bytes is the ChaCha20-Poly1305 key, and 4 zero bytes then the nonce's last 8 its nonce.
struct XChaCha(Zeroizing<[u8; 32]>);

impl XChaCha {
    /// The message key and nonce for a 24-byte `nonce` (AWS-LC wipes its copy when dropped).
    fn for_nonce(&self, nonce: &[u8]) -> (LessSafeKey, Nonce) {
        assert_eq!(nonce.len(), NONCE_LEN, "XChaCha20 nonces are 24 bytes");
        let mut sub =
            chacha20::hchacha::<U10>(GenericArray::from_slice(&self.0[..]), GenericArray::from_slice(&nonce[..16]));
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &sub).expect("a 32-byte key"));
        sub.as_mut_slice().zeroize();
        let mut short = [0u8; 12];
        short[4..].copy_from_slice(&nonce[16..]);
        (key, Nonce::assume_unique_for_key(short))
    }

    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let (key, nonce) = self.for_nonce(nonce);
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
            .expect("objects are far below the AEAD's length limit");
        tag.as_ref().try_into().expect("a 16-byte tag")
    }

    /// Decrypt `buf` in place; false if the tag does not match.
    fn open(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
        let (key, nonce) = self.for_nonce(nonce);
        key.open_in_place_separate_tag(nonce, Aad::from(aad), tag, buf).is_ok()
    }

    /// Like `open`, decrypting `sealed` into `out`.
    fn open_into(&self, nonce: &[u8], aad: &[u8], sealed: &[u8], tag: &[u8], out: &mut [u8]) -> bool {
        let (key, nonce) = self.for_nonce(nonce);
        key.open_separate_gather(nonce, Aad::from(aad), sealed, tag, out).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams { memory_kib: 8 * 1024, iterations: 1, parallelism: 1 }
    }

    #[test]
    fn slot_opens_with_its_passphrase_only() {
        let master = MasterKey::generate();
        let slot = KeySlot::seal(&master, &Passphrase::new("correct horse"), fast(), 1).unwrap();
        let decoded = KeySlot::decode(&slot.encode()).unwrap();
        assert_eq!(decoded, slot);
        let opened = decoded.open(&Passphrase::new("correct horse\n")).unwrap().expect("right passphrase");
        assert_eq!(*opened.0, *master.0);
        assert!(decoded.open(&Passphrase::new("wrong")).unwrap().is_none());
        let slots = [(KeySlot::id(&slot.encode()), slot)];
        let err = unlock(&slots, &Passphrase::new("wrong")).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::WrongPassphrase);
    }

    #[test]
    fn tampered_slot_does_not_open() {
        let master = MasterKey::generate();
        let mut slot = KeySlot::seal(&master, &Passphrase::new("pw"), fast(), 1).unwrap();
        slot.wrapped[3] ^= 1;
        assert!(slot.open(&Passphrase::new("pw")).unwrap().is_none());
    }

    #[test]
    fn weak_kdf_costs_are_refused() {
        let weak = KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
        assert_eq!(
            KeySlot::seal(&MasterKey::generate(), &Passphrase::new("pw"), weak, 0).unwrap_err().kind(),
            ErrorKind::Config
        );
    }

    /// Known answers pin the derivations: a change here is a format change.
    #[test]
    fn known_answers() {
        let keys = Keys::from_master(&MasterKey::from_bytes([7; 32]));
        assert_eq!(
            keys.id_of(b"abc").to_hex(),
            hex::encode(blake3::keyed_hash(&blake3::derive_key(CONTEXT_ID, &[7; 32]), b"abc").as_bytes())
        );
        assert_eq!(keys.id_of(b"abc").to_hex(), "38bade3e8d5880b9ff6c773141e09a60b835f208181a343b51ce2e4dae046928");
        assert_eq!(keys.chunker_seed(), 16042974788962360676);
        let slot =
            KeySlot::seal_with(&MasterKey::from_bytes([7; 32]), &Passphrase::new("pw"), fast(), 0, [1; 16], [2; 24])
                .unwrap();
        assert_eq!(
            hex::encode(&slot.wrapped),
            "8a91bca3790c9340f518e830d71ab9dc7c54daba133a8c8fdbb81214aa83c5ec5284293ca4f6ba6d5698b07c37a071d6"
        );
    }

    proptest::proptest! {
        /// The AEAD is XChaCha20-Poly1305 exactly: what it seals, the reference crate opens
        /// (same ciphertext, same tag), and what the reference seals, it opens.
        #[test]
        fn xchacha_matches_the_reference(
            key: [u8; 32],
            nonce: [u8; 24],
            aad in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            msg in proptest::collection::vec(proptest::num::u8::ANY, 0..5000),
        ) {
            use chacha20poly1305::aead::{AeadInPlace, KeyInit};
            let reference = chacha20poly1305::XChaCha20Poly1305::new(&key.into());
            let mut ours = msg.clone();
            let tag = XChaCha(Zeroizing::new(key)).seal(&nonce, &aad, &mut ours);
            let mut theirs = msg.clone();
            let their_tag = reference.encrypt_in_place_detached(&nonce.into(), &aad, &mut theirs).unwrap();
            proptest::prop_assert_eq!(&ours, &theirs);
            proptest::prop_assert_eq!(&tag[..], &their_tag[..]);
            let mut apart = vec![0u8; msg.len()];
            proptest::prop_assert!(XChaCha(Zeroizing::new(key)).open_into(&nonce, &aad, &theirs, &their_tag, &mut apart));
            proptest::prop_assert_eq!(&apart, &msg);
            proptest::prop_assert!(XChaCha(Zeroizing::new(key)).open(&nonce, &aad, &mut theirs, &their_tag));
            proptest::prop_assert_eq!(&theirs, &msg);
            let mut bad = tag;
            bad[0] ^= 1;
            proptest::prop_assert!(!XChaCha(Zeroizing::new(key)).open(&nonce, &aad, &mut ours, &bad));
        }
    }

    #[test]
    fn plain_keys_are_plain_blake3() {
        assert_eq!(Keys::plain().id_of(b"abc"), ObjectId::of(b"abc"));
        let big = vec![3u8; 1 << 20];
        assert_eq!(Keys::plain().id_of_large(&big), ObjectId::of(&big));
        let keys = Keys::from_master(&MasterKey::generate());
        assert_eq!(keys.id_of_large(&big), keys.id_of(&big));
        assert_ne!(keys.id_of(&big), ObjectId::of(&big));
    }
}
