//! Content-defined chunking (FastCDC 2020) over a byte stream fed in pieces.
//!
//! Owns: chunk-size parameters and the streaming cut logic. Must not: hash, compress or store
//! chunks; it only says where one chunk ends and the next begins.
//!
//! The same chunker serves two streams in a backup: each large file on its own (so its chunks
//! do not depend on what precedes it), and one shared stream into which small files are
//! concatenated (so many small files cost one object per ~average chunk, not one each).

use fastcdc::v2020::{FastCDC, Normalization::Level1};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Minimum, average and maximum chunk sizes in bytes. Recorded in the pool record so every
/// machine writing to a pool cuts the same way (otherwise deduplication silently stops).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// No chunk is smaller, except the last one of a stream.
    pub min: u32,
    /// The size chunks cluster around.
    pub avg: u32,
    /// No chunk is larger.
    pub max: u32,
}

impl Default for ChunkerParams {
    /// 256 KiB / 1 MiB / 4 MiB: restic's 1 MiB average (docs/format.md explains the choice).
    fn default() -> Self {
        ChunkerParams { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 }
    }
}

impl ChunkerParams {
    /// Check the sizes are within what FastCDC accepts and ordered.
    pub fn validate(&self) -> Result<()> {
        let ok = (fastcdc::v2020::MINIMUM_MIN..=fastcdc::v2020::MINIMUM_MAX).contains(&self.min)
            && (fastcdc::v2020::AVERAGE_MIN..=fastcdc::v2020::AVERAGE_MAX).contains(&self.avg)
            && (fastcdc::v2020::MAXIMUM_MIN..=fastcdc::v2020::MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok { Ok(()) } else { Err(Error::config(format!("invalid chunk sizes {self:?}"))) }
    }
}

/// A chunker that is fed bytes in arbitrary pieces and emits the same chunks as if it had
/// seen the whole stream at once. Holds at most `2 * max` bytes.
pub struct StreamChunker {
    params: ChunkerParams,
    seed: u64,
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
}

impl StreamChunker {
    /// A chunker at stream offset 0. A non-zero `seed` (secret, in an encrypted pool) is
    /// mixed into FastCDC's gear table, so cut points depend on it as well as the content.
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        StreamChunker { params, seed, buf: Vec::with_capacity(2 * params.max as usize), base: 0 }
    }

    /// Total bytes pushed so far: the stream offset the next pushed byte will have.
    pub fn position(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Bytes pushed but not yet emitted as a chunk.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Those bytes.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Append `data`; `emit(offset, chunk)` is called for every chunk that is now final.
    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(u64, &[u8])) {
        let max = self.params.max as usize;
        while !data.is_empty() {
            let take = data.len().min(2 * max - self.buf.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            // A cut is final only once `max` bytes are buffered: more data could move it.
            self.cut_while(|pending| pending >= max, emit);
        }
    }

    /// End the stream: emit whatever is buffered as the last chunk(s).
    pub fn finish(&mut self, emit: &mut impl FnMut(u64, &[u8])) {
        self.cut_while(|pending| pending > 0, emit);
    }

    fn cut_while(&mut self, more: impl Fn(usize) -> bool, emit: &mut impl FnMut(u64, &[u8])) {
        let p = self.params;
        let mut start = 0;
        while more(self.buf.len() - start) {
            let cdc = FastCDC::with_level_and_seed(&self.buf[start..], p.min, p.avg, p.max, Level1, self.seed);
            let (_, end) = cdc.cut(0, self.buf.len() - start);
            emit(self.base + start as u64, &self.buf[start..start + end]);
            start += end;
        }
        self.buf.drain(..start);
        self.base += start as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams { min: 64, avg: 256, max: 1024 }
    }

    fn chunks_of(data: &[u8], pieces: &[usize]) -> Vec<(u64, Vec<u8>)> {
        let mut c = StreamChunker::new(small(), 0);
        let mut out = Vec::new();
        let mut emit = |o: u64, d: &[u8]| out.push((o, d.to_vec()));
        let mut rest = data;
        for &p in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = p.max(1).min(rest.len());
            c.push(&rest[..n], &mut emit);
            rest = &rest[n..];
        }
        c.finish(&mut emit);
        out
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
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

    #[test]
    fn matches_whole_buffer_fastcdc() {
        let data = pseudo_random(100_000, 9);
        let expected: Vec<usize> = FastCDC::new(&data, 64, 256, 1024).map(|c| c.length).collect();
        let got: Vec<usize> = chunks_of(&data, &[4096]).iter().map(|c| c.1.len()).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_seed_moves_the_cut_points() {
        let data = pseudo_random(100_000, 3);
        let cuts = |seed| {
            let mut c = StreamChunker::new(small(), seed);
            let mut v = Vec::new();
            c.push(&data, &mut |o, _| v.push(o));
            c.finish(&mut |o, _| v.push(o));
            v
        };
        assert_eq!(cuts(0x5eed), cuts(0x5eed));
        assert_ne!(cuts(0), cuts(0x5eed));
    }

    #[test]
    fn default_params_are_valid() {
        ChunkerParams::default().validate().unwrap();
        assert!(ChunkerParams { min: 10, avg: 5, max: 1 }.validate().is_err());
    }

    proptest! {
        #[test]
        fn piece_sizes_do_not_change_chunks(seed in any::<u64>(), len in 0usize..20_000,
                                            pieces in proptest::collection::vec(1usize..3000, 1..8)) {
            let data = pseudo_random(len, seed);
            let whole = chunks_of(&data, &[len.max(1)]);
            let pieced = chunks_of(&data, &pieces);
            prop_assert_eq!(&whole, &pieced);
            let joined: Vec<u8> = pieced.iter().flat_map(|c| c.1.clone()).collect();
            prop_assert_eq!(joined, data);
            let mut expect_offset = 0u64;
            for (offset, chunk) in &pieced {
                prop_assert_eq!(*offset, expect_offset);
                prop_assert!(chunk.len() <= 1024);
                expect_offset += chunk.len() as u64;
            }
        }
    }
}
