//! Segmented chunks (object format 4): a chunk that does not compress is cut into 64 KiB
//! segments, each sealed on its own, behind a table of their BLAKE3 chaining values. A read
//! of a few bytes then fetches the table and the segment holding them, opens 64 KiB and
//! checks it against the chunk's id, instead of a whole chunk (1 MiB on average, up to
//! 64 MiB): what a random reader of the drive pays on a miss.
//!
//! Owns: the segmented layout (docs/format.md, "Segmented chunks"), which segments hold a
//! byte range and where they lie, and opening and checking them. Must not: do I/O.
//!
//! Why chaining values: BLAKE3 is a tree of 1 KiB leaves, and a 64 KiB segment at a 64 KiB
//! boundary is one of its subtrees. The table's values merge into the root, which must be
//! the chunk's id; a segment's own value is recomputed from its bytes. So a segment is
//! checked against the id alone, in an unencrypted pool as in an encrypted one, and a chunk
//! keeps its id whichever format stores it.
//!
//! Why only chunks that do not compress: segments compressed one by one lose the matches
//! between them, 25% more bytes on source code (64 MiB of it, zstd 3: 11.5 MB as 1 MiB
//! frames, 14.4 MB as 64 KiB ones). A compressible chunk stays one zstd frame and is read
//! whole; media, archives, packfiles and encrypted containers, what is read at random most,
//! rarely compress.

use std::ops::Range;

use rayon::prelude::*;

use super::{CODEC_SEGMENTED, HEAD_LEN, HEADER_LEN, Header, MAGIC, ObjectKind, seal_head};
use crate::crypto::{Keys, NONCE_LEN, Part, TAG_LEN};
use crate::error::{Error, Result};
use crate::id::ObjectId;

/// Plain bytes per segment (the last one may be shorter): 64 BLAKE3 leaves.
pub const SEGMENT: usize = 64 << 10;
/// The format version of segmented chunks (and of chunks written beside them).
pub(super) const VERSION: u8 = 4;
/// A table entry: one segment's chaining value.
const CV_LEN: usize = 32;

/// Segments of a body of `plain_len` bytes: at least one, for an empty body too.
fn count(plain_len: usize) -> usize {
    plain_len.div_ceil(SEGMENT).max(1)
}

/// Bytes of the table of `n` segments: none for one (the segment is checked against the id
/// itself), else a chaining value each, plus a tag when sealed.
fn table_len(n: usize, sealed: bool) -> usize {
    if n == 1 { 0 } else { n * CV_LEN + if sealed { TAG_LEN } else { 0 } }
}

/// The nonce of the `n`th message sealed under one key in an object: distinct for each, from
/// the object's random nonce (the last 8 bytes are ChaCha20's own nonce after HChaCha20).
fn nonce_for(nonce: &[u8], n: u64) -> [u8; NONCE_LEN] {
    let mut out: [u8; NONCE_LEN] = nonce.try_into().expect("a 24-byte nonce");
    let tail = u64::from_le_bytes(out[16..].try_into().expect("8 bytes")) ^ n;
    out[16..].copy_from_slice(&tail.to_le_bytes());
    out
}

/// A segment's associated data: the sealed head (bound to the id) and its index.
fn segment_aad(head: &[u8], i: usize) -> Vec<u8> {
    let mut aad = head[..HEAD_LEN].to_vec();
    aad.extend_from_slice(&(i as u32).to_le_bytes());
    aad
}

/// Encode chunk `id`'s `body` as a segmented envelope (see the module doc).
pub(super) fn encode(id: &ObjectId, body: &[u8], keys: &Keys, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
    let n = count(body.len());
    let sealed = keys.is_encrypted();
    let tags = if sealed { n * TAG_LEN } else { 0 };
    let mut out = Vec::with_capacity(HEAD_LEN + table_len(n, sealed) + body.len() + tags);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, ObjectKind::Chunk as u8, CODEC_SEGMENTED, 0]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    if sealed {
        seal_head(id, keys, nonce, CODEC_SEGMENTED, body.len(), &mut out);
    }
    let table_at = out.len();
    out.resize(table_at + table_len(n, sealed), 0);
    let mut table = Vec::with_capacity(table_len(n, sealed));
    for (i, segment) in segments_of(body).enumerate() {
        let at = out.len();
        out.extend_from_slice(segment);
        if sealed {
            let aad = segment_aad(&out, i);
            let tag = keys.seal(Part::Body, &nonce_for(&nonce, i as u64), &aad, &mut out[at..]);
            out.extend_from_slice(&tag);
        }
        if n > 1 {
            table.extend_from_slice(&keys.subtree_cv((i * SEGMENT) as u64, segment));
        }
    }
    if sealed && n > 1 {
        let tag = keys.seal(Part::Header, &nonce_for(&nonce, 1), &out[..HEAD_LEN], &mut table);
        table.extend_from_slice(&tag);
    }
    out[table_at..table_at + table.len()].copy_from_slice(&table);
    out
}

/// The segments of a chunk of `plain_len` bytes that hold its plain bytes `range` (clamped
/// to the body).
pub fn segments_for(plain_len: usize, range: Range<u64>) -> Range<usize> {
    let n = count(plain_len);
    let first = ((range.start / SEGMENT as u64) as usize).min(n - 1);
    let end = (range.end.max(range.start + 1).div_ceil(SEGMENT as u64) as usize).clamp(first + 1, n);
    first..end
}

/// Where a segmented chunk of `plain_len` bytes keeps its layout (its first bytes) and
/// segments `segs`, known before reading it: both can then be asked for at once.
pub fn plan(plain_len: usize, sealed: bool, segs: &Range<usize>) -> (usize, Range<u64>) {
    let first = if sealed { HEAD_LEN } else { HEADER_LEN } + table_len(count(plain_len), sealed);
    let at = |i| stored_at(first as u64, plain_len, sealed, i);
    (first, at(segs.start)..at(segs.end))
}

/// Stored offset of segment `i` (of the end, for the segment count) of a chunk of
/// `plain_len` bytes whose segments start at `first`: segments are raw, so offsets follow
/// from lengths.
fn stored_at(first: u64, plain_len: usize, sealed: bool, i: usize) -> u64 {
    let tag = if sealed { TAG_LEN } else { 0 };
    first + ((i * SEGMENT).min(plain_len) + i.min(count(plain_len)) * tag) as u64
}

fn segments_of(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let n = count(body.len());
    (0..n).map(move |i| &body[i * SEGMENT..((i + 1) * SEGMENT).min(body.len())])
}

/// Where a segmented chunk's segments lie and what they must hash to: read from the first
/// `Header::layout_len` bytes of a stored copy, and only valid for that copy (each copy of
/// an encrypted chunk is sealed with its own nonce).
#[derive(Debug, Clone)]
pub struct Layout {
    id: ObjectId,
    plain_len: usize,
    /// One chaining value per segment; empty for a chunk of one segment.
    cvs: Vec<[u8; 32]>,
    /// Stored offset of the first segment.
    first: u64,
    /// The sealed head (outer header, nonce, sealed inner header) of an encrypted chunk.
    head: Option<Vec<u8>>,
}

impl Header {
    /// For a segmented chunk, how many leading bytes hold its layout; `None` for any other
    /// object, which is read whole.
    pub fn layout_len(&self) -> Option<usize> {
        if self.codec != CODEC_SEGMENTED {
            return None;
        }
        let start = if self.sealed { HEAD_LEN } else { HEADER_LEN };
        Some(start + table_len(count(self.plain_len), self.sealed))
    }
}

impl Layout {
    /// Parse and check the layout of segmented chunk `id` from the first bytes of a copy (at
    /// least `Header::layout_len`). The table must hash to the id, so a table that lies is
    /// caught here, and a segment that lies when it is opened.
    pub fn read(id: &ObjectId, prefix: &[u8], keys: &Keys) -> Result<Layout> {
        let header = super::read_header(ObjectKind::Chunk, id, prefix, keys)?;
        let Some(first) = header.layout_len() else {
            return Err(Error::corrupt("chunk is not segmented"));
        };
        if prefix.len() < first {
            return Err(Error::corrupt("segmented chunk is truncated inside its table"));
        }
        let n = count(header.plain_len);
        let start = if header.sealed { HEAD_LEN } else { HEADER_LEN };
        let head = header.sealed.then(|| prefix[..HEAD_LEN].to_vec());
        let mut cvs = Vec::new();
        if n > 1 {
            let mut table = prefix[start..start + n * CV_LEN].to_vec();
            if let Some(head) = &head {
                let nonce = nonce_for(&head[HEADER_LEN..HEADER_LEN + NONCE_LEN], 1);
                keys.open(Part::Header, &nonce, head, &mut table, &prefix[start + n * CV_LEN..first])?;
            }
            cvs = table.chunks(CV_LEN).map(|cv| cv.try_into().expect("32 bytes")).collect();
            if root(keys, &cvs, header.plain_len as u64) != id.0 {
                return Err(Error::corrupt(format!(
                    "chunk {}: its segment table does not hash to its id",
                    id.to_hex()
                )));
            }
        }
        Ok(Layout { id: *id, plain_len: header.plain_len, cvs, first: first as u64, head })
    }

    /// Length of the chunk's plain body.
    pub fn plain_len(&self) -> usize {
        self.plain_len
    }

    /// Stored offset of segment `i` (of the end, for the segment count).
    fn start(&self, i: usize) -> u64 {
        stored_at(self.first, self.plain_len, self.head.is_some(), i)
    }

    /// Bytes the whole stored copy has.
    pub fn stored_len(&self) -> u64 {
        self.start(count(self.plain_len))
    }

    /// The segments holding plain bytes `range` (clamped to the body).
    pub fn segments(&self, range: Range<u64>) -> Range<usize> {
        segments_for(self.plain_len, range)
    }

    /// Where segments `segs` lie in the stored copy.
    pub fn stored(&self, segs: &Range<usize>) -> Range<u64> {
        self.start(segs.start)..self.start(segs.end)
    }

    /// The plain bytes of segments `segs`, from their stored bytes (`stored(segs)` of the
    /// copy), each opened and checked against the chunk's id. They start at plain offset
    /// `segs.start * SEGMENT`.
    pub fn open(&self, keys: &Keys, segs: Range<usize>, bytes: &[u8]) -> Result<Vec<u8>> {
        let at = self.stored(&segs);
        if bytes.len() as u64 != at.end - at.start {
            return Err(Error::corrupt(format!("chunk {}: segments cut short", self.id.to_hex())));
        }
        let from = segs.start * SEGMENT;
        let to = (segs.end * SEGMENT).min(self.plain_len);
        let mut out = vec![0u8; to - from];
        for i in segs {
            let s = (self.start(i) - at.start) as usize..(self.start(i + 1) - at.start) as usize;
            let p = i * SEGMENT - from..((i + 1) * SEGMENT).min(self.plain_len) - from;
            self.open_one(keys, i, &bytes[s], &mut out[p])?;
        }
        Ok(out)
    }

    /// Open segment `i` from its stored bytes into `out` (its plain length) and check it.
    fn open_one(&self, keys: &Keys, i: usize, stored: &[u8], out: &mut [u8]) -> Result<()> {
        match &self.head {
            None => out.copy_from_slice(stored),
            Some(head) => {
                let (sealed, tag) = stored.split_at(stored.len() - TAG_LEN);
                let nonce = nonce_for(&head[HEADER_LEN..HEADER_LEN + NONCE_LEN], i as u64);
                keys.open_into(Part::Body, &nonce, &segment_aad(head, i), sealed, tag, out)?;
            }
        }
        let good = if self.cvs.is_empty() {
            keys.id_of(out) == self.id
        } else {
            keys.subtree_cv((i * SEGMENT) as u64, out) == self.cvs[i]
        };
        if good {
            Ok(())
        } else {
            Err(Error::corrupt(format!("chunk {}: segment {i} does not match its id", self.id.to_hex())))
        }
    }
}

/// The root of the BLAKE3 tree over segments' chaining values, for a body of `len` bytes:
/// the id. BLAKE3's left subtree is the largest power of two of leaves short of the whole,
/// so at a segment size that is a power of two it is always whole segments.
fn root(keys: &Keys, cvs: &[[u8; 32]], len: u64) -> [u8; 32] {
    fn subtree(keys: &Keys, cvs: &[[u8; 32]], len: u64, is_root: bool) -> [u8; 32] {
        if cvs.len() == 1 {
            return cvs[0];
        }
        let left = blake3::hazmat::left_subtree_len(len);
        let k = (left / SEGMENT as u64) as usize;
        let l = subtree(keys, &cvs[..k], left, false);
        let r = subtree(keys, &cvs[k..], len - left, false);
        keys.merge_cvs(&l, &r, is_root)
    }
    subtree(keys, cvs, len, true)
}

/// Decode a whole segmented chunk, checking every segment (so the body matches the id
/// without hashing it again); segments open in parallel.
pub(super) fn decode(id: &ObjectId, bytes: &[u8], keys: &Keys) -> Result<Vec<u8>> {
    let layout = Layout::read(id, bytes, keys)?;
    if layout.stored_len() != bytes.len() as u64 {
        return Err(Error::corrupt(format!(
            "chunk {}: {} bytes stored, its layout accounts for {}",
            id.to_hex(),
            bytes.len(),
            layout.stored_len()
        )));
    }
    let mut body = vec![0u8; layout.plain_len];
    let open = |(i, out): (usize, &mut [u8])| {
        let s = layout.start(i) as usize..layout.start(i + 1) as usize;
        layout.open_one(keys, i, &bytes[s], out)
    };
    if body.is_empty() {
        open((0, &mut []))?;
    } else if body.len() > 4 * SEGMENT {
        body.par_chunks_mut(SEGMENT).enumerate().try_for_each(open)?;
    } else {
        body.chunks_mut(SEGMENT).enumerate().try_for_each(open)?;
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, HEAD_LEN};
    use crate::crypto::MasterKey;
    use crate::error::ErrorKind;
    use proptest::prelude::*;

    fn both_keys() -> [Keys; 2] {
        [Keys::plain(), Keys::from_master(&MasterKey::from_bytes([7; 32]))]
    }

    /// Bytes that do not compress, as chunks that get segmented are.
    fn body(len: usize, seed: u64) -> Vec<u8> {
        crate::codec::tests::noise(len, seed)
    }

    fn layout_of(id: &ObjectId, stored: &[u8], keys: &Keys) -> Layout {
        let header = codec::read_header(ObjectKind::Chunk, id, &stored[..HEAD_LEN.min(stored.len())], keys).unwrap();
        Layout::read(id, &stored[..header.layout_len().unwrap()], keys).unwrap()
    }

    #[test]
    fn the_table_hashes_to_the_id_at_every_boundary() {
        for keys in both_keys() {
            for len in [0, 1, 1024, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT, 3 * SEGMENT + 5, 5 << 20] {
                let b = body(len, len as u64);
                let id = keys.id_of_large(&b);
                let stored = codec::encode(ObjectKind::Chunk, &id, &b, 3, &keys);
                assert_eq!(stored[4], VERSION);
                let layout = layout_of(&id, &stored, &keys);
                assert_eq!(layout.stored_len(), stored.len() as u64, "len {len}");
                assert_eq!(codec::decode_verified(ObjectKind::Chunk, &id, &stored, &keys).unwrap(), b, "len {len}");
            }
        }
    }

    #[test]
    fn any_range_is_read_from_its_segments_alone() {
        for keys in both_keys() {
            let b = body(7 * SEGMENT + 999, 3);
            let id = keys.id_of_large(&b);
            let stored = codec::encode(ObjectKind::Chunk, &id, &b, 3, &keys);
            let layout = layout_of(&id, &stored, &keys);
            for (from, len) in [(0, 1), (4096, 4096), (SEGMENT - 10, 20), (3 * SEGMENT, SEGMENT), (b.len() - 5, 5)] {
                let segs = layout.segments(from as u64..(from + len) as u64);
                let at = layout.stored(&segs);
                let header = codec::read_header(ObjectKind::Chunk, &id, &stored[..HEAD_LEN], &keys).unwrap();
                let planned = plan(b.len(), keys.is_encrypted(), &segs);
                assert_eq!(planned, (header.layout_len().unwrap(), at.clone()), "known before reading");
                let plain = layout.open(&keys, segs.clone(), &stored[at.start as usize..at.end as usize]).unwrap();
                let skip = from - segs.start * SEGMENT;
                assert_eq!(&plain[skip..skip + len], &b[from..from + len]);
                assert!(segs.len() <= 2, "a small read opens one segment, two across a boundary");
            }
        }
    }

    #[test]
    fn a_damaged_or_swapped_segment_is_refused_never_returned() {
        for keys in both_keys() {
            let b = body(4 * SEGMENT, 9);
            let id = keys.id_of_large(&b);
            let stored = codec::encode(ObjectKind::Chunk, &id, &b, 3, &keys);
            let layout = layout_of(&id, &stored, &keys);
            let segs = 2..3;
            let at = layout.stored(&segs);
            for flip in [at.start, (at.start + at.end) / 2, at.end - 1] {
                let mut bad = stored.clone();
                bad[flip as usize] ^= 1;
                let err = layout.open(&keys, segs.clone(), &bad[at.start as usize..at.end as usize]).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Corrupt);
                assert!(codec::decode(ObjectKind::Chunk, &id, &bad, &keys).is_err());
            }
            // Another segment's bytes in its place.
            let other = layout.stored(&(1..2));
            let wrong = &stored[other.start as usize..other.end as usize];
            if wrong.len() == (at.end - at.start) as usize {
                assert!(layout.open(&keys, segs.clone(), wrong).is_err());
            }
            // A lying table: every byte of it, one at a time.
            let table = layout.stored(&(0..1)).start as usize;
            for at in HEADER_LEN..table {
                let mut bad = stored.clone();
                bad[at] ^= 0x40;
                let header = codec::read_header(ObjectKind::Chunk, &id, &bad[..HEAD_LEN], &keys);
                let read = header.and_then(|h| Layout::read(&id, &bad[..h.layout_len().unwrap_or(0).max(1)], &keys));
                let decoded = codec::decode(ObjectKind::Chunk, &id, &bad, &keys);
                assert!(read.is_err() || decoded.is_err(), "byte {at}");
                assert!(decoded.is_err(), "byte {at}");
            }
        }
    }

    #[test]
    fn chunks_that_compress_stay_one_frame_and_older_chunks_still_read() {
        let text: Vec<u8> = (0..3 * SEGMENT).map(|i| b"segmented chunk text "[i % 21]).collect();
        for keys in both_keys() {
            let id = keys.id_of(&text);
            let stored = codec::encode(ObjectKind::Chunk, &id, &text, 3, &keys);
            assert_eq!(stored[4], VERSION);
            assert!(stored.len() < text.len() / 10, "compressed as a whole");
            let header = codec::read_header(ObjectKind::Chunk, &id, &stored[..HEAD_LEN], &keys).unwrap();
            assert_eq!(header.layout_len(), None, "not segmented: read whole");
            assert_eq!(codec::decode_verified(ObjectKind::Chunk, &id, &stored, &keys).unwrap(), text);
            let other = ObjectId([3; 32]);
            assert!(
                codec::decode_verified(ObjectKind::Chunk, &other, &stored, &keys).is_err(),
                "checked against the id"
            );
        }
        let keys = Keys::plain();
        let b = body(3 * SEGMENT, 4);
        let id = keys.id_of(&b);
        let mut old = codec::encode_version(ObjectKind::Tree, 1, &id, &b, 3, &keys);
        old[5] = ObjectKind::Chunk as u8;
        assert_eq!(codec::decode_verified(ObjectKind::Chunk, &id, &old, &keys).unwrap(), b, "format 1 chunks read");
        let mut relabelled = codec::encode(ObjectKind::Chunk, &id, &b, 3, &keys);
        relabelled[4] = 1;
        assert!(codec::decode(ObjectKind::Chunk, &id, &relabelled, &keys).is_err(), "segments are not one payload");
    }

    /// A change to these hashes is a change of the on-backend format (docs/format.md).
    #[test]
    fn segmented_known_answers() {
        let b: Vec<u8> = (0..SEGMENT + 1000).map(|i| (i % 251) as u8).collect();
        for (keys, want) in both_keys().into_iter().zip([
            "0511e47781940c635d099652426bc65c7cfdbbd5a437fe6dab09b9007a62ec66",
            "3ce9ed0bd77ed228a20223998a803e49460442c859ab4142677a2bdbd7e646f0",
        ]) {
            let id = keys.id_of(&b);
            let stored = encode(&id, &b, &keys, [9; NONCE_LEN]);
            assert_eq!(blake3::hash(&stored).to_hex().as_str(), want, "{keys:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip_and_ranges(len in 0usize..300_000, from in 0usize..300_000, n in 1usize..70_000, level in 0i32..4, sealed: bool) {
            let keys = both_keys()[sealed as usize].clone();
            let b = body(len, len as u64 + 1);
            let id = keys.id_of_large(&b);
            let stored = codec::encode(ObjectKind::Chunk, &id, &b, level, &keys);
            prop_assert_eq!(&codec::decode_verified(ObjectKind::Chunk, &id, &stored, &keys).unwrap(), &b);
            let layout = layout_of(&id, &stored, &keys);
            let from = from.min(len);
            let to = (from + n).min(len);
            let segs = layout.segments(from as u64..to as u64);
            let at = layout.stored(&segs);
            let plain = layout.open(&keys, segs.clone(), &stored[at.start as usize..at.end as usize]).unwrap();
            let skip = from - (segs.start * SEGMENT).min(from);
            prop_assert_eq!(&plain[skip..skip + (to - from)], &b[from..to]);
        }
    }
}
