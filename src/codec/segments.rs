//! Segmented chunks (object format 4): a chunk's body cut into 64 KiB segments, each
//! compressed and sealed on its own, behind a table of their stored lengths and BLAKE3
//! chaining values. A read of a few bytes then fetches the table and the segment holding
//! them, opens 64 KiB and checks it against the chunk's id, instead of a whole chunk
//! (1 MiB on average, up to 64 MiB): what a random reader of the drive pays on a miss.
//!
//! Owns: the segmented layout (docs/format.md, "Segmented chunks"), which segments hold a
//! byte range and where they lie, and opening and checking them. Must not: do I/O.
//!
//! Why chaining values: BLAKE3 is a tree of 1 KiB leaves, and a 64 KiB segment at a 64 KiB
//! boundary is one of its subtrees. The table's values merge into the root, which must be
//! the chunk's id; a segment's own value is recomputed from its bytes. So a segment is
//! checked against the id alone, in an unencrypted pool as in an encrypted one, with the
//! same hash, and a chunk keeps its id whichever format stores it.

use rayon::prelude::*;

use super::{
    CODEC_SEGMENTED, HEAD_LEN, HEADER_LEN, Header, MAGIC, ObjectKind, compress_into, looks_incompressible, seal_head,
};
use crate::crypto::{Keys, NONCE_LEN, Part, TAG_LEN};
use crate::error::{Error, Result};
use crate::id::ObjectId;

/// Plain bytes per segment (the last one may be shorter): 64 BLAKE3 leaves.
pub const SEGMENT: usize = 64 << 10;
/// The format version of segmented chunks.
pub(super) const VERSION: u8 = 4;
/// Set in a table word when the segment is zstd-compressed; the other bits are its length.
const ZSTD_BIT: u32 = 1 << 31;
/// One table entry: the word, then the segment's chaining value (absent for one segment).
const ENTRY: usize = 4 + 32;

/// Segments of a body of `plain_len` bytes: at least one, for an empty body too.
fn count(plain_len: usize) -> usize {
    plain_len.div_ceil(SEGMENT).max(1)
}

fn table_len(n: usize) -> usize {
    if n == 1 { 4 } else { n * ENTRY }
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
pub(super) fn encode(id: &ObjectId, body: &[u8], level: i32, keys: &Keys, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
    let n = count(body.len());
    let sealed = keys.is_encrypted();
    let mut out = Vec::with_capacity(HEAD_LEN + table_len(n) + body.len() + (n + 1) * TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, ObjectKind::Chunk as u8, CODEC_SEGMENTED, 0]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    if sealed {
        seal_head(id, keys, nonce, CODEC_SEGMENTED, body.len(), &mut out);
    }
    let table_at = out.len();
    out.resize(table_at + table_len(n) + if sealed { TAG_LEN } else { 0 }, 0);
    let raw = level <= 0 || looks_incompressible(body);
    let mut table = Vec::with_capacity(table_len(n) + TAG_LEN);
    for (i, segment) in segments_of(body).enumerate() {
        let at = out.len();
        let zstd = !raw && compress_into(segment, level, segment.len() - segment.len() / 32, &mut out);
        if !zstd {
            out.truncate(at);
            out.extend_from_slice(segment);
        }
        let stored = (out.len() - at) as u32;
        if sealed {
            let aad = segment_aad(&out, i);
            let tag = keys.seal(Part::Body, &nonce_for(&nonce, i as u64), &aad, &mut out[at..]);
            out.extend_from_slice(&tag);
        }
        table.extend_from_slice(&(stored | if zstd { ZSTD_BIT } else { 0 }).to_le_bytes());
        if n > 1 {
            table.extend_from_slice(&keys.subtree_cv((i * SEGMENT) as u64, segment));
        }
    }
    if sealed {
        let tag = keys.seal(Part::Header, &nonce_for(&nonce, 1), &out[..HEAD_LEN], &mut table);
        table.extend_from_slice(&tag);
    }
    out[table_at..table_at + table.len()].copy_from_slice(&table);
    out
}

fn segments_of(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let n = count(body.len());
    (0..n).map(move |i| &body[i * SEGMENT..((i + 1) * SEGMENT).min(body.len())])
}

/// Where a segmented chunk's segments lie and what they must hash to: read from the first
/// `Layout::prefix_len` bytes of a stored copy, and only valid for that copy (each copy of
/// an encrypted chunk is sealed with its own nonce).
#[derive(Debug, Clone)]
pub struct Layout {
    id: ObjectId,
    plain_len: usize,
    words: Vec<u32>,
    cvs: Vec<[u8; 32]>,
    /// Stored offset of each segment, then the end of the object.
    starts: Vec<u64>,
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
        let start = if self.sealed { HEAD_LEN + TAG_LEN } else { HEADER_LEN };
        Some(start + table_len(count(self.plain_len)))
    }
}

impl Layout {
    /// Parse and check the layout of segmented chunk `id` from the first bytes of a copy (at
    /// least `Header::layout_len`). The table must hash to the id, so a table that lies is
    /// caught here, and a segment that lies when it is opened.
    pub fn read(id: &ObjectId, prefix: &[u8], keys: &Keys) -> Result<Layout> {
        let header = super::read_header(ObjectKind::Chunk, id, prefix, keys)?;
        let Some(need) = header.layout_len() else {
            return Err(Error::corrupt("chunk is not segmented"));
        };
        if prefix.len() < need {
            return Err(Error::corrupt("segmented chunk is truncated inside its table"));
        }
        let n = count(header.plain_len);
        let start = if header.sealed { HEAD_LEN } else { HEADER_LEN };
        let mut table = prefix[start..start + table_len(n)].to_vec();
        let head = header.sealed.then(|| prefix[..HEAD_LEN].to_vec());
        if let Some(head) = &head {
            let nonce = nonce_for(&head[HEADER_LEN..HEADER_LEN + NONCE_LEN], 1);
            keys.open(Part::Header, &nonce, head, &mut table, &prefix[start + table_len(n)..need])?;
        }
        let (mut words, mut cvs, mut starts) = (Vec::with_capacity(n), Vec::new(), Vec::with_capacity(n + 1));
        let mut at = need as u64;
        for (i, entry) in table.chunks(if n == 1 { 4 } else { ENTRY }).enumerate() {
            let word = u32::from_le_bytes(entry[..4].try_into().expect("4 bytes"));
            let stored = (word & !ZSTD_BIT) as usize;
            let plain = segment_len(header.plain_len, i);
            if word & ZSTD_BIT == 0 && stored != plain || word & ZSTD_BIT != 0 && stored == 0 {
                return Err(Error::corrupt(format!("segment {i} of a chunk has a malformed length")));
            }
            starts.push(at);
            at += (stored + if header.sealed { TAG_LEN } else { 0 }) as u64;
            words.push(word);
            if n > 1 {
                cvs.push(entry[4..].try_into().expect("32 bytes"));
            }
        }
        starts.push(at);
        if n > 1 && root(keys, &cvs, header.plain_len as u64) != id.0 {
            return Err(Error::corrupt(format!("chunk {}: its segment table does not hash to its id", id.to_hex())));
        }
        Ok(Layout { id: *id, plain_len: header.plain_len, words, cvs, starts, head })
    }

    /// Length of the chunk's plain body.
    pub fn plain_len(&self) -> usize {
        self.plain_len
    }

    /// Bytes the whole stored copy has.
    pub fn stored_len(&self) -> u64 {
        *self.starts.last().expect("an end")
    }

    /// The segments holding plain bytes `range` (clamped to the body).
    pub fn segments(&self, range: std::ops::Range<u64>) -> std::ops::Range<usize> {
        let n = self.words.len();
        let first = ((range.start / SEGMENT as u64) as usize).min(n - 1);
        let end = (range.end.max(range.start + 1).div_ceil(SEGMENT as u64) as usize).clamp(first + 1, n);
        first..end
    }

    /// Where segments `segs` lie in the stored copy.
    pub fn stored(&self, segs: &std::ops::Range<usize>) -> std::ops::Range<u64> {
        self.starts[segs.start]..self.starts[segs.end]
    }

    /// The plain bytes of segments `segs`, from their stored bytes (`stored(segs)` of the
    /// copy), each opened and checked against the chunk's id. They start at plain offset
    /// `segs.start * SEGMENT`.
    pub fn open(&self, keys: &Keys, segs: std::ops::Range<usize>, bytes: &[u8]) -> Result<Vec<u8>> {
        let at = self.stored(&segs);
        if bytes.len() as u64 != at.end - at.start {
            return Err(Error::corrupt(format!("chunk {}: segments cut short", self.id.to_hex())));
        }
        let from = segs.start * SEGMENT;
        let to = (segs.end * SEGMENT).min(self.plain_len);
        let mut out = vec![0u8; to - from];
        for (i, plain) in segs.zip(out.chunks_mut(SEGMENT)) {
            let s = (self.starts[i] - at.start) as usize..(self.starts[i + 1] - at.start) as usize;
            self.open_one(keys, i, &bytes[s], plain)?;
        }
        Ok(out)
    }

    /// Open segment `i` from its stored bytes into `out` (its plain length) and check it.
    fn open_one(&self, keys: &Keys, i: usize, stored: &[u8], out: &mut [u8]) -> Result<()> {
        let zstd = self.words[i] & ZSTD_BIT != 0;
        match &self.head {
            None if zstd => self.inflate(i, stored, out)?,
            None => out.copy_from_slice(stored),
            Some(head) => {
                let (sealed, tag) = stored.split_at(stored.len() - TAG_LEN);
                let nonce = nonce_for(&head[HEADER_LEN..HEADER_LEN + NONCE_LEN], i as u64);
                let aad = segment_aad(head, i);
                if zstd {
                    let mut opened = vec![0u8; sealed.len()];
                    keys.open_into(Part::Body, &nonce, &aad, sealed, tag, &mut opened)?;
                    self.inflate(i, &opened, out)?;
                } else {
                    keys.open_into(Part::Body, &nonce, &aad, sealed, tag, out)?;
                }
            }
        }
        self.check(keys, i, out)
    }

    /// Decompress a segment's payload into exactly `out.len()` bytes, with this thread's
    /// decompressor (a new one per 64 KiB segment would cost more than the segment).
    fn inflate(&self, i: usize, payload: &[u8], out: &mut [u8]) -> Result<()> {
        thread_local! {
            static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let done = DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = zstd::bulk::Decompressor::new().ok();
            }
            match slot.as_mut() {
                Some(d) => d.decompress_to_buffer(payload, out),
                None => zstd::bulk::decompress_to_buffer(payload, out),
            }
        });
        match done {
            Ok(n) if n == out.len() => Ok(()),
            _ => Err(Error::corrupt(format!(
                "chunk {}: segment {i} does not decompress to its length",
                self.id.to_hex()
            ))),
        }
    }

    fn check(&self, keys: &Keys, i: usize, plain: &[u8]) -> Result<()> {
        let good = if self.cvs.is_empty() {
            keys.id_of(plain) == self.id
        } else {
            keys.subtree_cv((i * SEGMENT) as u64, plain) == self.cvs[i]
        };
        if good {
            Ok(())
        } else {
            Err(Error::corrupt(format!("chunk {}: segment {i} does not match its id", self.id.to_hex())))
        }
    }
}

/// Plain length of segment `i` of a body of `plain_len` bytes.
fn segment_len(plain_len: usize, i: usize) -> usize {
    plain_len.saturating_sub(i * SEGMENT).min(SEGMENT)
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
            "chunk {}: {} bytes stored, its table accounts for {}",
            id.to_hex(),
            bytes.len(),
            layout.stored_len()
        )));
    }
    let mut body = vec![0u8; layout.plain_len];
    let open = |(i, out): (usize, &mut [u8])| {
        let s = layout.starts[i] as usize..layout.starts[i + 1] as usize;
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

    /// Text-like and random bytes, so both codecs appear within one chunk.
    fn body(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                if (i / 40_000) % 2 == 0 {
                    b"segmented chunk text "[i % 21]
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
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
                assert!(codec::checks_content(&stored));
                let layout = layout_of(&id, &stored, &keys);
                assert_eq!(layout.stored_len(), stored.len() as u64, "len {len}");
                assert_eq!(codec::decode(ObjectKind::Chunk, &id, &stored, &keys).unwrap(), b, "len {len}");
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
    fn an_older_reader_is_refused_by_the_version_and_older_chunks_still_read() {
        let keys = Keys::plain();
        let b = body(3 * SEGMENT, 4);
        let id = keys.id_of(&b);
        let mut old = codec::encode_version(ObjectKind::Tree, 1, &id, &b, 3, &keys);
        old[5] = ObjectKind::Chunk as u8;
        assert!(!codec::checks_content(&old));
        assert_eq!(codec::decode(ObjectKind::Chunk, &id, &old, &keys).unwrap(), b, "format 1 chunks read");
        let mut relabelled = codec::encode(ObjectKind::Chunk, &id, &b, 3, &keys);
        relabelled[4] = 1;
        assert!(codec::decode(ObjectKind::Chunk, &id, &relabelled, &keys).is_err(), "segments are not one payload");
    }

    /// A change to these hashes is a change of the on-backend format (docs/format.md).
    #[test]
    fn segmented_known_answers() {
        let b: Vec<u8> = (0..SEGMENT + 1000).map(|i| (i % 251) as u8).collect();
        for (keys, want) in both_keys().into_iter().zip([
            "9ebb67e2c9be844c3b17ee4e067fafb7eac865a9afae23d9f312bf9d2cc7edd6",
            "901851a10e587dd3e2e0844d18cadb7b8c27f59d827b0266feaba5647b79bd31",
        ]) {
            let id = keys.id_of(&b);
            let stored = encode(&id, &b, 3, &keys, [9; NONCE_LEN]);
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
            prop_assert_eq!(&codec::decode(ObjectKind::Chunk, &id, &stored, &keys).unwrap(), &b);
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
