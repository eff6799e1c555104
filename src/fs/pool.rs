//! The pool side of the live drive and snapshot views: chunks read through a small cache
//! with read-ahead for readers that want it, a stored file's chunk slices, and spool files (a file's layout of
//! chunks, stream and spool is `content`'s; the `Backing` the namespace calls is `drive`'s).
//!
//! Owns: reading chunk slices at any offset (pinned streamed chunks first, then the read
//! cache, `cache`), where spools are made, and the live drive's state (`DriveState`).
//! Must not: build trees or commit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::cache::ChunkCache;
use super::stream::Streamer;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::model::ChunkRef;
use crate::repository::Repository;

/// Bytes of a file shared with the chunk cache (or owned, for bytes not stored yet).
#[derive(Default)]
pub(crate) struct Shared {
    bytes: Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
}

impl Shared {
    pub fn owned(bytes: Vec<u8>) -> Shared {
        let range = 0..bytes.len();
        Shared { bytes: Arc::new(bytes), range }
    }
}

impl std::ops::Deref for Shared {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[self.range.clone()]
    }
}

/// A file's chunk slices with their start offsets, for ranged reads.
#[derive(Clone, Default)]
pub(crate) struct Slices {
    pub refs: Arc<Vec<ChunkRef>>,
    starts: Arc<Vec<u64>>,
    pub len: u64,
}

impl Slices {
    pub fn new(refs: Vec<ChunkRef>) -> Slices {
        let mut starts = Vec::with_capacity(refs.len());
        let mut at = 0u64;
        for r in &refs {
            starts.push(at);
            at += r.len as u64;
        }
        Slices { refs: Arc::new(refs), starts: Arc::new(starts), len: at }
    }

    /// Index of the slice holding byte `offset`.
    pub fn find(&self, offset: u64) -> usize {
        self.starts.partition_point(|&s| s <= offset).saturating_sub(1)
    }

    /// Start offset of slice `i`.
    pub fn start(&self, i: usize) -> u64 {
        self.starts[i]
    }

    /// These slices, then `more`.
    pub fn then(&self, more: impl IntoIterator<Item = ChunkRef>) -> Slices {
        Slices::new(self.refs.iter().copied().chain(more).collect())
    }

    /// The first `len` bytes (the last slice cut short).
    pub fn truncate(&self, len: u64) -> Slices {
        if len >= self.len {
            return self.clone();
        }
        let mut refs: Vec<ChunkRef> = Vec::new();
        let mut at = 0u64;
        for r in self.refs.iter() {
            if at >= len {
                break;
            }
            let keep = (len - at).min(r.len as u64) as u32;
            refs.push(ChunkRef { len: keep, ..*r });
            at += keep as u64;
        }
        Slices::new(refs)
    }

    /// Only the first `n` slices.
    pub fn first(&self, n: usize) -> Slices {
        Slices::new(self.refs[..n].to_vec())
    }
}

/// The pool side of the live drive and of snapshot views: where chunks come from (through
/// the read cache) and spools go, and, for the drive, its state.
pub(crate) struct Pool {
    pub repo: Arc<Repository>,
    pub rt: tokio::runtime::Handle,
    pub spool_dir: PathBuf,
    pub writable: bool,
    /// Decoded chunks for reads.
    chunks: ChunkCache,
    /// What only the live drive uses (a snapshot view leaves it empty).
    pub drive: DriveState,
}

/// The live drive's state beside the pool.
pub(crate) struct DriveState {
    /// The drive's current head snapshot. Held for the whole of a commit, so commits run
    /// one at a time.
    pub head: Mutex<Option<ObjectId>>,
    /// Where chunks of files written front to back go as they are cut.
    pub streamer: Streamer,
    /// The drive's shared lock on the pool (none for snapshot views).
    pub lock: Mutex<Option<crate::lock::Lock>>,
    /// Counts of stored subtrees, by tree id, so a commit sums only what changed.
    pub counts: Mutex<HashMap<ObjectId, Counts>>,
}

/// Entries and bytes below a directory, for snapshot summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    pub bytes: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.others += other.others;
        self.bytes += other.bytes;
    }
}

impl Pool {
    pub fn new(
        repo: Arc<Repository>,
        rt: tokio::runtime::Handle,
        spool_dir: PathBuf,
        writable: bool,
        (cache_limit, stream_limit): (usize, usize),
    ) -> Pool {
        let streamer = Streamer::new(repo.clone(), rt.clone(), stream_limit);
        Pool {
            chunks: ChunkCache::new(repo.clone(), rt.clone(), cache_limit),
            repo,
            rt,
            spool_dir,
            writable,
            drive: DriveState { head: Mutex::new(None), streamer, lock: Mutex::new(None), counts: Mutex::default() },
        }
    }

    /// A decoded chunk: streamed and not stored yet, or through the read cache.
    pub fn chunk(&self, id: &ObjectId) -> Result<Arc<Vec<u8>>> {
        match self.drive.streamer.pinned(id) {
            Some(body) => Ok(body),
            None => self.chunks.get(id),
        }
    }

    /// How many reads waited for a chunk fetched ahead of them (see `readahead`).
    pub fn caught_up(&self) -> u64 {
        self.chunks.caught_up()
    }

    /// Read stored slices at `offset`, fetching the `ahead` chunks after them meanwhile.
    pub fn read_slices(&self, slices: &Slices, buf: &mut [u8], offset: u64, ahead: usize) -> Result<usize> {
        let mut done = 0usize;
        while done < buf.len() {
            let piece = self.slice_at(slices, offset + done as u64, buf.len() - done, ahead)?;
            if piece.is_empty() {
                break;
            }
            buf[done..done + piece.len()].copy_from_slice(&piece);
            done += piece.len();
        }
        Ok(done)
    }

    /// The bytes at `offset` up to the end of the slice holding it (at most `max`), as a
    /// view of the cached chunk, not a copy; empty at the end. Starts fetching the chunks
    /// of the `ahead` slices after it (`readahead` says how many a reader wants).
    pub fn slice_at(&self, slices: &Slices, offset: u64, max: usize, ahead: usize) -> Result<Shared> {
        if offset >= slices.len || max == 0 {
            return Ok(Shared::default());
        }
        let i = slices.find(offset);
        let r = slices.refs[i];
        let from = r.offset as usize + (offset - slices.start(i)) as usize;
        let to = (r.offset + r.len) as usize;
        if ahead == 0 && self.drive.streamer.pinned(&r.id).is_none() {
            let want = (to.saturating_sub(from)).min(max);
            if let Some(bytes) = self.chunks.range(&r.id, from, want)? {
                return Ok(Shared { range: 0..bytes.len(), bytes: Arc::new(bytes) });
            }
        }
        let chunk = self.chunk(&r.id)?;
        if to > chunk.len() || from > to {
            return Err(Error::corrupt(format!("chunk {} is shorter than a file's slice of it", r.id.to_hex())));
        }
        if ahead > 0 {
            // What is fetched ahead must still be held when the reader gets there.
            let mut room = self.chunks.limit() / 2;
            let next: Vec<ObjectId> = slices.refs[i + 1..]
                .iter()
                .take(ahead)
                .take_while(|r| {
                    let fits = room > 0;
                    room = room.saturating_sub(r.len as usize);
                    fits
                })
                .map(|r| r.id)
                .collect();
            self.chunks.fetch_ahead(&next);
        }
        Ok(Shared { bytes: chunk, range: from..from + (to - from).min(max) })
    }

    /// A new spool file (unnamed: it disappears with its last handle).
    pub fn new_spool(&self) -> Result<std::fs::File> {
        tempfile::tempfile_in(&self.spool_dir)
            .map_err(|e| Error::from_io(format!("cannot create a spool file in {}", self.spool_dir.display()), e))
    }
}
