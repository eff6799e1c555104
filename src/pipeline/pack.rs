//! The shared stream small files are packed into (duplicacy's pack-and-split): files are
//! appended in walk order, the stream is cut by FastCDC, and each file learns which slices of
//! which chunks hold it once the chunk holding its last byte is cut.
//!
//! Owns: offsets in the stream and the file -> slices resolution. Must not: store anything;
//! chunks leave through the `emit` callback.

use std::collections::{HashMap, VecDeque};

use crate::chunker::{ChunkerParams, StreamChunker};
use crate::id::ObjectId;
use crate::model::ChunkRef;

/// Small files waiting for their chunks, and the chunks they may still need.
pub(crate) struct Pack {
    chunker: StreamChunker,
    /// Cut chunks that an unresolved file may still overlap: (start, end, id).
    cut: VecDeque<(u64, u64, ObjectId)>,
    /// Packed files not yet resolved, in stream order: (slot, start, len).
    waiting: VecDeque<(u64, u64, u64)>,
    resolved: HashMap<u64, Vec<ChunkRef>>,
    /// Every byte before this offset is in a cut chunk.
    cut_upto: u64,
}

impl Pack {
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        Pack {
            chunker: StreamChunker::new(params, seed),
            cut: VecDeque::new(),
            waiting: VecDeque::new(),
            resolved: HashMap::new(),
            cut_upto: 0,
        }
    }

    /// Append one file's bytes under `slot`; returns the stream offset just past it, which
    /// is what its directory waits for.
    pub fn add(&mut self, slot: u64, data: &[u8], emit: &mut impl FnMut(&[u8]) -> ObjectId) -> u64 {
        let start = self.chunker.position();
        self.waiting.push_back((slot, start, data.len() as u64));
        let mut cuts = Vec::new();
        self.chunker.push(data, &mut |offset, chunk| cuts.push((offset, chunk.len() as u64, emit(chunk))));
        self.take_cuts(cuts);
        start + data.len() as u64
    }

    /// Cut the rest of the stream: every file resolves.
    pub fn flush(&mut self, emit: &mut impl FnMut(&[u8]) -> ObjectId) {
        let mut cuts = Vec::new();
        self.chunker.finish(&mut |offset, chunk| cuts.push((offset, chunk.len() as u64, emit(chunk))));
        self.take_cuts(cuts);
    }

    /// Whether every byte before `offset` is in a cut chunk.
    pub fn is_cut(&self, offset: u64) -> bool {
        offset <= self.cut_upto
    }

    /// Take a resolved file's slices.
    pub fn take(&mut self, slot: u64) -> Vec<ChunkRef> {
        self.resolved.remove(&slot).expect("file resolved before its directory")
    }

    fn take_cuts(&mut self, cuts: Vec<(u64, u64, ObjectId)>) {
        for (offset, len, id) in cuts {
            self.cut.push_back((offset, offset + len, id));
            self.cut_upto = offset + len;
        }
        while let Some(&(slot, start, len)) = self.waiting.front() {
            if start + len > self.cut_upto {
                break;
            }
            self.waiting.pop_front();
            self.resolved.insert(slot, self.slices(start, len));
        }
        let keep_from = self.waiting.front().map(|w| w.1).unwrap_or(self.cut_upto);
        while self.cut.front().is_some_and(|c| c.1 <= keep_from) {
            self.cut.pop_front();
        }
    }

    fn slices(&self, start: u64, len: u64) -> Vec<ChunkRef> {
        let end = start + len;
        self.cut
            .iter()
            .filter(|(cs, ce, _)| *cs < end && *ce > start)
            .map(|&(cs, ce, id)| {
                let from = start.max(cs);
                let to = end.min(ce);
                ChunkRef { id, offset: (from - cs) as u32, len: (to - from) as u32 }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_resolve_to_slices_that_rebuild_them() {
        let params = ChunkerParams { min: 64, avg: 256, max: 1024 };
        let mut pack = Pack::new(params, 0);
        let mut chunks: HashMap<ObjectId, Vec<u8>> = HashMap::new();
        let mut emit = |c: &[u8]| {
            let id = ObjectId::of(c);
            chunks.insert(id, c.to_vec());
            id
        };
        let files: Vec<Vec<u8>> =
            (0..200u32).map(|i| (0..(i * 7 % 300)).map(|j| (j * 31 + i) as u8).collect()).collect();
        for (slot, f) in files.iter().enumerate() {
            pack.add(slot as u64, f, &mut emit);
        }
        pack.flush(&mut emit);
        assert!(pack.waiting.is_empty());
        for (slot, f) in files.iter().enumerate() {
            let rebuilt: Vec<u8> = pack
                .take(slot as u64)
                .iter()
                .flat_map(|r| chunks[&r.id][r.offset as usize..(r.offset + r.len) as usize].to_vec())
                .collect();
            assert_eq!(&rebuilt, f, "file {slot}");
        }
        // ~30 KB of small files became a few dozen chunks, not 200 objects.
        assert!(chunks.len() < 80, "{} chunks", chunks.len());
    }
}
