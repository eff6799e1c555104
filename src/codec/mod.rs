//! The object envelope: how any object's body becomes the bytes stored on a backend, and back.
//!
//! Owns: the 12-byte header (magic, format version, kind, codec, flags, plain length), zstd,
//! and what an encrypted envelope seals with which associated data. Must not: do I/O, hold
//! keys (`crypto` does), or decide object names or placement. docs/format.md is the spec.
//!
//! An encrypted envelope hides the codec and plain length in a separately sealed 5-byte
//! header, so a ranged read of its first `HEAD_LEN` bytes still yields the plain length
//! (rebuilding a catalogue needs it) without fetching the object. A chunk that does not
//! compress is stored in segments that can be read one by one (`segments`).

mod segments;

use std::borrow::Cow;
use std::cell::RefCell;

pub use segments::{Layout, SEGMENT, plan as plan_segments, segments_for};

use crate::crypto::{Keys, NONCE_LEN, Part, TAG_LEN};
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;

/// First four bytes of every stored object.
pub const MAGIC: [u8; 4] = *b"CKOO";
/// The newest object format: this build reads it and every older one. Version 2 tree
/// bodies may carry an extension (extended attributes) after their entries; version 3 pool
/// records name the placement version their pool's writers use; version 4 chunks are
/// segmented (`segments`).
pub const FORMAT_VERSION: u8 = 4;

/// The version written for an object of `kind` other than a chunk (chunks are format 4,
/// `encode`): the oldest whose body format it uses, so an older build keeps reading what
/// did not change (snapshots, keys) and refuses, by name, what did (trees).
fn version_for(kind: ObjectKind) -> u8 {
    if kind == ObjectKind::Tree { 2 } else { 1 }
}
/// Bytes before the payload of an unencrypted envelope.
pub const HEADER_LEN: usize = 12;
/// Flags bit: the rest of the envelope is sealed (see the module doc).
const FLAG_ENCRYPTED: u8 = 1;
/// Sealed inner header: codec (1) and plain length (4), plus its tag.
const SEALED_HEADER_LEN: usize = 5 + TAG_LEN;
/// Bytes before the sealed payload of an encrypted envelope; also enough to read any
/// envelope's plain length.
pub const HEAD_LEN: usize = HEADER_LEN + NONCE_LEN + SEALED_HEADER_LEN;

/// What an object is; stored in the header so a misplaced object is caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum ObjectKind {
    /// A piece of file content.
    Chunk = 1,
    /// A directory listing.
    Tree = 2,
    /// A snapshot record.
    Snapshot = 3,
    /// The pool record kept on every backend.
    Pool = 4,
    /// A passphrase-wrapped master key (never encrypted by the pool's own keys).
    Key = 5,
    /// A lock held by a running backup, restore, check or prune.
    Lock = 6,
    /// The list of objects one prune deleted, for other machines' catalogues.
    Prune = 7,
    /// Snapshots forgotten while a backend could not delete its copies of them.
    Forget = 8,
}

impl ObjectKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => ObjectKind::Chunk,
            2 => ObjectKind::Tree,
            3 => ObjectKind::Snapshot,
            4 => ObjectKind::Pool,
            5 => ObjectKind::Key,
            6 => ObjectKind::Lock,
            7 => ObjectKind::Prune,
            8 => ObjectKind::Forget,
            _ => return None,
        })
    }

    /// The largest plain body a decoder accepts: a bound on what a hostile object can make
    /// us allocate.
    pub fn max_plain_len(self) -> usize {
        match self {
            ObjectKind::Chunk => 64 << 20,
            ObjectKind::Pool | ObjectKind::Key | ObjectKind::Lock => 1 << 20,
            ObjectKind::Tree | ObjectKind::Snapshot | ObjectKind::Prune | ObjectKind::Forget => u32::MAX as usize,
        }
    }
}

const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// Raw segments (`segments`): chunks of format 4 that do not compress, and only they.
const CODEC_SEGMENTED: u8 = 2;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

/// Compress `body` at zstd `level` into an envelope of `kind` for object `id`, sealed when
/// `keys` belong to an encrypted pool. The body is stored raw when zstd does not save at
/// least 1/32 of it (incompressible data costs nothing to read back).
///
/// A chunk that compresses is one zstd frame; one that does not is stored segmented
/// (`segments`), so that a few of its bytes can be read without the rest.
pub fn encode(kind: ObjectKind, id: &ObjectId, body: &[u8], level: i32, keys: &Keys) -> Vec<u8> {
    if kind != ObjectKind::Chunk {
        return encode_with_nonce(kind, version_for(kind), id, body, level, keys, rand::random());
    }
    assert!(body.len() <= kind.max_plain_len(), "object body too large");
    let nonce = rand::random();
    if level > 0 && !looks_incompressible(body) {
        let sealed = keys.is_encrypted();
        let (out, codec) = envelope(kind, segments::VERSION, body, Some(level), sealed);
        if codec == CODEC_ZSTD {
            return finish(out, codec, id, sealed.then_some(keys), nonce, body.len());
        }
    }
    segments::encode(id, body, keys, nonce)
}

/// `encode`, stamped with format `version`: for a body whose format depends on what it holds
/// (a pool record without a placement version is written as version 1 wrote it).
pub fn encode_version(kind: ObjectKind, version: u8, id: &ObjectId, body: &[u8], level: i32, keys: &Keys) -> Vec<u8> {
    assert!((1..=FORMAT_VERSION).contains(&version), "a known format version");
    encode_with_nonce(kind, version, id, body, level, keys, rand::random())
}

fn encode_with_nonce(
    kind: ObjectKind,
    version: u8,
    id: &ObjectId,
    body: &[u8],
    level: i32,
    keys: &Keys,
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    let zstd = (level > 0 && !looks_incompressible(body)).then_some(level);
    let sealed = is_sealed(kind, keys);
    let (out, codec) = envelope(kind, version, body, zstd, sealed);
    finish(out, codec, id, sealed.then_some(keys), nonce, body.len())
}

/// The header and payload of an envelope of one payload: zstd at `zstd`'s level if that
/// saves 1/32, else raw. Room for the sealed head is left when `sealed`; its codec is
/// returned, and set in the header of an unsealed one.
fn envelope(kind: ObjectKind, version: u8, body: &[u8], zstd: Option<i32>, sealed: bool) -> (Vec<u8>, u8) {
    assert!(body.len() <= kind.max_plain_len(), "object body too large");
    let start = if sealed { HEAD_LEN } else { HEADER_LEN };
    let mut out = Vec::with_capacity(start + body.len() / 2 + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[version, kind as u8, CODEC_ZSTD, 0]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.resize(start, 0);
    let budget = body.len() - body.len() / 32;
    let codec = if zstd.is_some_and(|level| compress_into(body, level, budget, &mut out)) {
        CODEC_ZSTD
    } else {
        out.truncate(start);
        out.extend_from_slice(body);
        CODEC_RAW
    };
    out[6] = codec;
    (out, codec)
}

/// Seal an envelope that `envelope` left room for the sealed head in; `None` for `keys`
/// when it stays plain.
fn finish(
    mut out: Vec<u8>,
    codec: u8,
    id: &ObjectId,
    keys: Option<&Keys>,
    nonce: [u8; NONCE_LEN],
    plain_len: usize,
) -> Vec<u8> {
    let Some(keys) = keys else { return out };
    let mut head = out[..HEADER_LEN].to_vec();
    seal_head(id, keys, nonce, codec, plain_len, &mut head);
    out[..HEAD_LEN].copy_from_slice(&head);
    let (head, payload) = out.split_at_mut(HEAD_LEN);
    let tag = keys.seal(Part::Body, &nonce, head, payload);
    out.extend_from_slice(&tag);
    out
}

/// Key slots must be readable before the pool is unlocked; everything else of an encrypted
/// pool is sealed.
fn is_sealed(kind: ObjectKind, keys: &Keys) -> bool {
    keys.is_encrypted() && kind != ObjectKind::Key
}

/// Turn the 12-byte outer header in `out` into the sealed head of an encrypted envelope
/// (`HEAD_LEN` bytes): the outer header then says only what the object is, and the sealed
/// inner header, bound to the id by its associated data (so objects cannot be swapped),
/// holds the codec and plain length. What follows is sealed with the head as associated data.
fn seal_head(id: &ObjectId, keys: &Keys, nonce: [u8; NONCE_LEN], codec: u8, plain_len: usize, out: &mut Vec<u8>) {
    out.truncate(HEADER_LEN);
    out[6] = 0;
    out[7] = FLAG_ENCRYPTED;
    out[8..HEADER_LEN].fill(0);
    out.extend_from_slice(&nonce);
    let mut inner = [0u8; 5];
    inner[0] = codec;
    inner[1..].copy_from_slice(&(plain_len as u32).to_le_bytes());
    let tag = keys.seal(Part::Header, &nonce, &header_aad(&out[..HEADER_LEN], id), &mut inner);
    out.extend_from_slice(&inner);
    out.extend_from_slice(&tag);
}

fn header_aad(outer: &[u8], id: &ObjectId) -> [u8; HEADER_LEN + 32] {
    let mut aad = [0u8; HEADER_LEN + 32];
    aad[..HEADER_LEN].copy_from_slice(&outer[..HEADER_LEN]);
    aad[HEADER_LEN..].copy_from_slice(&id.0);
    aad
}

/// zstd of `body` appended to `out`, if it fits in `budget` bytes (callers have sampled
/// the body with `looks_incompressible` first).
fn compress_into(body: &[u8], level: i32, budget: usize, out: &mut Vec<u8>) -> bool {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            let c = zstd::bulk::Compressor::new(level).expect("zstd level is valid");
            *slot = Some((level, c));
        }
        let (_, compressor) = slot.as_mut().expect("just set");
        let start = out.len();
        out.resize(start + zstd::zstd_safe::compress_bound(body.len()), 0);
        match compressor.compress_to_buffer(body, &mut out[start..]) {
            Ok(n) if n <= budget => {
                out.truncate(start + n);
                true
            }
            _ => false,
        }
    })
}

/// Bytes of each sample `looks_incompressible` tries.
const SAMPLE: usize = 16 << 10;

/// True if three samples of a large body (start, middle, end) each save less than 1/32
/// at zstd's fastest level. Media, archives and encrypted files are common in backups, and
/// zstd spends as long failing on them as succeeding on text; this costs under 5% of that.
/// A body compressible only between the samples is stored raw: a little space, never bytes.
fn looks_incompressible(body: &[u8]) -> bool {
    if body.len() < 8 * SAMPLE {
        return false;
    }
    let starts = [0, body.len() / 2 - SAMPLE / 2, body.len() - SAMPLE];
    starts.into_iter().all(|at| {
        let sample = &body[at..at + SAMPLE];
        let packed = zstd::bulk::compress(sample, 1).map(|c| c.len()).unwrap_or(SAMPLE);
        packed > SAMPLE - SAMPLE / 32
    })
}

/// The parsed header of a stored object.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// What the object is.
    pub kind: ObjectKind,
    /// Length of the decoded body.
    pub plain_len: usize,
    codec: u8,
    sealed: bool,
}

/// Parse and check the header of an object of `kind` named `id` from its first bytes
/// (`HEAD_LEN` of them, or the whole object if shorter); opens the sealed header of an
/// encrypted envelope.
pub fn read_header(kind: ObjectKind, id: &ObjectId, bytes: &[u8], keys: &Keys) -> Result<Header> {
    if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC {
        return Err(Error::corrupt("not a cuckoo object (bad magic)"));
    }
    if !(1..=FORMAT_VERSION).contains(&bytes[4]) {
        return Err(Error::new(
            ErrorKind::UnsupportedVersion,
            format!("object format version {} is not supported by this build (reads {FORMAT_VERSION})", bytes[4]),
        ));
    }
    let found =
        ObjectKind::from_u8(bytes[5]).ok_or_else(|| Error::corrupt(format!("unknown object kind {}", bytes[5])))?;
    if found != kind {
        return Err(Error::corrupt(format!("expected a {kind:?} object, found a {found:?}")));
    }
    let sealed = match bytes[7] {
        0 => false,
        FLAG_ENCRYPTED => true,
        _ => return Err(Error::new(ErrorKind::UnsupportedVersion, "object uses flags this build does not know")),
    };
    if sealed != is_sealed(kind, keys) {
        // Never accept plaintext in an encrypted pool: a provider could plant it.
        return Err(Error::corrupt(if sealed {
            "object is encrypted, but the pool is not"
        } else {
            "object is not encrypted, but the pool is"
        }));
    }
    let (codec, plain_len) = if sealed { open_header(id, bytes, keys)? } else { (bytes[6], le_u32(&bytes[8..12])) };
    // Only format 4 chunks may be segmented: a build that reads only format 3 refuses
    // them by their version, rather than taking segments for one payload.
    if codec == CODEC_SEGMENTED && (bytes[4] < segments::VERSION || kind != ObjectKind::Chunk) {
        return Err(Error::corrupt(format!("unknown codec {codec} for a {kind:?} object of format {}", bytes[4])));
    }
    if plain_len > kind.max_plain_len() {
        return Err(Error::corrupt(format!("object claims {plain_len} bytes, over the limit")));
    }
    Ok(Header { kind, plain_len, codec, sealed })
}

fn open_header(id: &ObjectId, bytes: &[u8], keys: &Keys) -> Result<(u8, usize)> {
    if bytes.len() < HEAD_LEN {
        return Err(Error::corrupt("encrypted object is truncated"));
    }
    if bytes[6] != 0 || bytes[8..HEADER_LEN] != [0; 4] {
        return Err(Error::corrupt("encrypted object has a malformed outer header"));
    }
    let nonce = &bytes[HEADER_LEN..HEADER_LEN + NONCE_LEN];
    let at = HEADER_LEN + NONCE_LEN;
    let mut inner = [0u8; 5];
    inner.copy_from_slice(&bytes[at..at + 5]);
    keys.open(Part::Header, nonce, &header_aad(bytes, id), &mut inner, &bytes[at + 5..HEAD_LEN])?;
    Ok((inner[0], le_u32(&inner[1..])))
}

fn le_u32(bytes: &[u8]) -> usize {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize
}

/// Decode an envelope that must be of `kind` and named `id`, and check that its body hashes
/// to the id (a segmented chunk is checked segment by segment as it is opened, so it is not
/// hashed twice).
pub fn decode_verified(kind: ObjectKind, id: &ObjectId, bytes: &[u8], keys: &Keys) -> Result<Vec<u8>> {
    let header = read_header(kind, id, bytes, keys)?;
    if header.codec == CODEC_SEGMENTED {
        return segments::decode(id, bytes, keys);
    }
    let body = decode_payload(header, bytes, keys)?;
    if keys.id_of_large(&body) != *id {
        return Err(Error::corrupt(format!("content does not match its id {}", id.to_hex())));
    }
    Ok(body)
}

/// Decode an envelope that must be of `kind` and named `id`; returns the plain body. The
/// stored bytes are only read: a sealed payload is opened straight into the body (or, when
/// compressed, into the buffer zstd reads), so a fetched chunk is written once on its way.
pub fn decode(kind: ObjectKind, id: &ObjectId, bytes: &[u8], keys: &Keys) -> Result<Vec<u8>> {
    let header = read_header(kind, id, bytes, keys)?;
    if header.codec == CODEC_SEGMENTED {
        return segments::decode(id, bytes, keys);
    }
    decode_payload(header, bytes, keys)
}

/// The body of an envelope that is one payload, raw or zstd, whose header was read.
fn decode_payload(header: Header, bytes: &[u8], keys: &Keys) -> Result<Vec<u8>> {
    let payload =
        if header.sealed { Cow::Owned(open_payload(bytes, keys)?) } else { Cow::Borrowed(&bytes[HEADER_LEN..]) };
    let body = match header.codec {
        CODEC_RAW => payload.into_owned(),
        CODEC_ZSTD => decompress(&payload, header.plain_len)?,
        other => return Err(Error::corrupt(format!("unknown codec {other}"))),
    };
    if body.len() != header.plain_len {
        return Err(Error::corrupt(format!("body is {} bytes, header says {}", body.len(), header.plain_len)));
    }
    Ok(body)
}

/// Compressed bytes beyond which a claimed length is taken on trust for one up-front
/// allocation. zstd rarely expands real data by more than this; a header claiming more is
/// either very repetitive data or a lie, so it is decoded growing as bytes really arrive.
const TRUSTED_RATIO: usize = 64;

/// Decompress `payload` to exactly `plain_len` bytes. Memory follows what the payload really
/// produces, never what the header claims: a 13-byte object claiming 4 GiB costs nothing.
fn decompress(payload: &[u8], plain_len: usize) -> Result<Vec<u8>> {
    let bad = |e: std::io::Error| Error::corrupt("zstd payload does not decompress").with_source(e);
    if plain_len <= payload.len().saturating_mul(TRUSTED_RATIO).max(64 << 10) {
        return zstd::bulk::decompress(payload, plain_len).map_err(bad);
    }
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::with_buffer(payload).map_err(bad)?;
    let mut body = Vec::with_capacity(payload.len().saturating_mul(4));
    // One byte past the claim is read, so a payload longer than its header is caught.
    decoder.take(plain_len as u64 + 1).read_to_end(&mut body).map_err(bad)?;
    Ok(body)
}

/// The opened payload of a sealed envelope whose header was read already.
fn open_payload(bytes: &[u8], keys: &Keys) -> Result<Vec<u8>> {
    if bytes.len() < HEAD_LEN + TAG_LEN {
        return Err(Error::corrupt("encrypted object is truncated"));
    }
    let (head, rest) = bytes.split_at(HEAD_LEN);
    let (sealed, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce = &head[HEADER_LEN..HEADER_LEN + NONCE_LEN];
    let mut out = vec![0u8; sealed.len()];
    keys.open_into(Part::Body, nonce, head, sealed, tag, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use proptest::prelude::*;

    const ID: ObjectId = ObjectId([5; 32]);

    fn sealed_keys() -> Keys {
        Keys::from_master(&MasterKey::from_bytes([7; 32]))
    }

    /// Bytes that do not compress (xorshift), the same for the same seed.
    pub(super) fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Found by the `object_envelope` fuzz target: an unencrypted tree object of 13 bytes
    /// whose header claims 4 GiB made `decode` allocate 4 GiB before reading the payload.
    #[test]
    fn regression_a_header_claiming_4_gib_allocates_nothing() {
        let bytes = [0x43, 0x4b, 0x4f, 0x4f, 0x01, 0x02, 0x01, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff];
        assert!(decode(ObjectKind::Tree, &ID, &bytes, &Keys::plain()).is_err());
        // The same lie in front of a real payload: decoded as far as it goes, then refused.
        let mut lie = encode(ObjectKind::Tree, &ID, &[7u8; 1000], 3, &Keys::plain());
        lie[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(ObjectKind::Tree, &ID, &lie, &Keys::plain()).is_err());
    }

    #[test]
    fn very_repetitive_bodies_decode_past_the_trusted_ratio() {
        let body = vec![0u8; 8 << 20];
        for keys in [Keys::plain(), sealed_keys()] {
            let enc = encode(ObjectKind::Snapshot, &ID, &body, 3, &keys);
            assert!(enc.len() * TRUSTED_RATIO < body.len(), "the streaming path is taken");
            assert_eq!(decode(ObjectKind::Snapshot, &ID, &enc, &keys).unwrap(), body);
        }
    }

    #[test]
    fn incompressible_bodies_are_stored_raw_without_trying_and_text_still_compresses() {
        let keys = Keys::plain();
        let noise = noise(1 << 20, 7);
        assert!(looks_incompressible(&noise));
        let id = keys.id_of(&noise);
        let stored = encode(ObjectKind::Snapshot, &id, &noise, 3, &keys);
        assert_eq!(stored[6], CODEC_RAW);
        assert_eq!(decode(ObjectKind::Snapshot, &id, &stored, &keys).unwrap(), noise);
        let text: Vec<u8> = (0..1 << 20).map(|i| b"the quick brown fox "[i % 20]).collect();
        assert!(!looks_incompressible(&text));
        // Compressible only away from the samples: still correct, stored raw.
        let mut mixed = noise.clone();
        mixed[100_000..400_000].fill(b'a');
        assert!(looks_incompressible(&mixed));
        let id = keys.id_of(&mixed);
        let stored = encode(ObjectKind::Snapshot, &id, &mixed, 3, &keys);
        assert_eq!(decode(ObjectKind::Snapshot, &id, &stored, &keys).unwrap(), mixed);
        let id = keys.id_of(&text);
        assert_eq!(encode(ObjectKind::Snapshot, &id, &text, 3, &keys)[6], CODEC_ZSTD);
    }

    #[test]
    fn compressible_data_is_compressed() {
        let body = b"abcabcabc".repeat(1000);
        let enc = encode(ObjectKind::Snapshot, &ID, &body, 3, &Keys::plain());
        assert!(enc.len() < body.len() / 10);
        assert_eq!(enc[6], CODEC_ZSTD);
        assert_eq!(decode(ObjectKind::Snapshot, &ID, &enc, &Keys::plain()).unwrap(), body);
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let body = *blake3::hash(b"random enough").as_bytes();
        let enc = encode(ObjectKind::Snapshot, &ID, &body, 3, &Keys::plain());
        assert_eq!(enc[6], CODEC_RAW);
        assert_eq!(enc.len(), HEADER_LEN + body.len());
    }

    #[test]
    fn wrong_kind_version_and_truncation_are_errors() {
        let plain = Keys::plain();
        let enc = encode(ObjectKind::Tree, &ID, b"hello hello hello hello", 3, &plain);
        assert_eq!(decode(ObjectKind::Snapshot, &ID, &enc, &plain).unwrap_err().kind(), ErrorKind::Corrupt);
        assert_eq!(enc[4], 2, "trees are written in format 2");
        assert_eq!(encode(ObjectKind::Snapshot, &ID, b"x", 3, &plain)[4], 1, "snapshots did not change: format 1");
        let x = plain.id_of(b"x");
        assert_eq!(encode(ObjectKind::Chunk, &x, b"x", 3, &plain)[4], 4, "chunks are segmented: format 4");
        let mut older = enc.clone();
        older[4] = 1;
        assert!(decode(ObjectKind::Tree, &ID, &older, &plain).is_ok(), "format 1 trees still read");
        let mut newer = enc.clone();
        newer[4] = FORMAT_VERSION + 1;
        assert_eq!(decode(ObjectKind::Tree, &ID, &newer, &plain).unwrap_err().kind(), ErrorKind::UnsupportedVersion);
        assert!(decode(ObjectKind::Tree, &ID, &enc[..enc.len() - 1], &plain).is_err());
        assert!(decode(ObjectKind::Tree, &ID, &enc[..5], &plain).is_err());
    }

    #[test]
    fn sealed_envelope_hides_length_and_reads_its_header_from_a_prefix() {
        let keys = sealed_keys();
        let body = b"some text some text some text".repeat(100);
        let enc = encode(ObjectKind::Snapshot, &ID, &body, 3, &keys);
        assert_eq!(&enc[6..12], &[0, FLAG_ENCRYPTED, 0, 0, 0, 0]);
        assert_eq!(read_header(ObjectKind::Snapshot, &ID, &enc[..HEAD_LEN], &keys).unwrap().plain_len, body.len());
        assert_eq!(decode(ObjectKind::Snapshot, &ID, &enc, &keys).unwrap(), body);
        // Fresh nonce each time: equal content never gives equal bytes.
        assert_ne!(encode(ObjectKind::Snapshot, &ID, &body, 3, &keys), enc);
    }

    #[test]
    fn sealed_envelope_detects_tampering_swapping_and_downgrade() {
        let keys = sealed_keys();
        let enc = encode(ObjectKind::Tree, &ID, b"tree body tree body", 3, &keys);
        for at in [5, 8, 12, 40, HEAD_LEN, enc.len() - 1] {
            let mut bad = enc.clone();
            bad[at] ^= 0x10;
            assert_eq!(decode(ObjectKind::Tree, &ID, &bad, &keys).unwrap_err().kind(), ErrorKind::Corrupt, "byte {at}");
        }
        // Another object's bytes under this name, another pool's key, plaintext planted.
        assert!(decode(ObjectKind::Tree, &ObjectId([6; 32]), &enc, &keys).is_err());
        let other = Keys::from_master(&MasterKey::from_bytes([8; 32]));
        assert!(decode(ObjectKind::Tree, &ID, &enc, &other).is_err());
        let planted = encode(ObjectKind::Tree, &ID, b"tree body tree body", 3, &Keys::plain());
        assert!(decode(ObjectKind::Tree, &ID, &planted, &keys).is_err());
        assert!(decode(ObjectKind::Tree, &ID, &enc, &Keys::plain()).is_err());
    }

    /// A change to this vector is a change of the on-backend format (docs/format.md).
    #[test]
    fn sealed_envelope_known_answer() {
        let enc = encode_with_nonce(ObjectKind::Chunk, 1, &ID, b"hello", 3, &sealed_keys(), [9; NONCE_LEN]);
        assert_eq!(enc.len(), HEAD_LEN + 5 + TAG_LEN);
        assert_eq!(
            hex::encode(&enc),
            "434b4f4f0101000100000000090909090909090909090909090909090909090909090909\
             f963fcc2a89a5cd3849965c02a485acf620b0b3c25bcf69866f5554cf2ff5f6e2e78f3fe16932d7910a0"
        );
    }

    proptest! {
        #[test]
        fn round_trip(body in proptest::collection::vec(any::<u8>(), 0..5000), level in 0i32..5, sealed: bool) {
            let keys = if sealed { sealed_keys() } else { Keys::plain() };
            let enc = encode(ObjectKind::Snapshot, &ID, &body, level, &keys);
            prop_assert_eq!(decode(ObjectKind::Snapshot, &ID, &enc, &keys).unwrap(), body);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), sealed: bool) {
            let keys = if sealed { sealed_keys() } else { Keys::plain() };
            let _ = decode(ObjectKind::Snapshot, &ID, &bytes, &keys);
        }
    }
}
