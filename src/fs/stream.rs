//! Storing files while they are written: a file written front to back (the common case:
//! cp, rsync, downloads) is chunked as its bytes arrive and its chunks are uploaded in the
//! background, without being written to local disk at all. Each chunk stays in memory
//! (*pinned*) until it is durable in the pool, so the file can be read back meanwhile and
//! nothing is lost if an upload fails: pinned chunks are queued again by the next commit.
//!
//! Owns: per-file chunker state, the drive-wide uploader, pinned chunks and the memory
//! they and the chunkers' pending bytes take (at most `DriveOptions::stream_bytes`; a
//! write that would go over makes its file continue in a spool instead, so memory stays
//! bounded whatever is written and however slow the backends are). Must not: decide what
//! a commit stores, or touch spools (a stream that must stop hands its bytes to `content`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::chunker::StreamChunker;
use crate::codec::ObjectKind;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::ChunkRef;
use crate::pipeline::upload::{Job, OnStored, Uploader};
use crate::repository::Repository;

/// A file's chunking from file offset `start` on: `emitted` chunks cover `[start,
/// chunker offset)`, the chunker holds the rest up to `upto()`.
pub(crate) struct Stream {
    start: u64,
    chunker: StreamChunker,
    /// (file offset, chunk) of each chunk cut so far, in order.
    emitted: Vec<(u64, ChunkRef)>,
    /// The streamer's count of held bytes, which this stream's pending bytes are part of
    /// until it is finished or dropped.
    held: Arc<AtomicUsize>,
}

/// Where a byte of a stream is.
pub(crate) enum At<'a> {
    /// In a chunk cut already: its ref and the file offset of its first byte.
    Chunk(ChunkRef, u64),
    /// Still in the chunker: these bytes, from the asked offset on.
    Pending(&'a [u8]),
}

impl Stream {
    /// A stream whose first byte will be file offset `start`.
    pub fn new(out: &Streamer, start: u64) -> Stream {
        let repo = &out.repo;
        let chunker = StreamChunker::new(repo.pool().chunker, repo.store().keys().chunker_seed());
        Stream { start, chunker, emitted: Vec::new(), held: out.held.clone() }
    }

    /// File offset of the next byte; only a write at exactly this offset continues.
    pub fn upto(&self) -> u64 {
        self.start + self.chunker.position()
    }

    /// Bytes the chunker holds (counted in the streamer's held bytes).
    pub fn pending(&self) -> &[u8] {
        self.chunker.pending_bytes()
    }

    /// File offset of the first pending byte.
    pub fn pending_start(&self) -> u64 {
        self.upto() - self.pending().len() as u64
    }

    /// Chunks cut so far, with their file offsets.
    pub fn emitted(&self) -> &[(u64, ChunkRef)] {
        &self.emitted
    }

    /// Append `data` (the caller checked `Streamer::may_hold`).
    pub fn push(&mut self, data: &[u8], out: &Streamer) {
        out.held.fetch_add(data.len(), Ordering::AcqRel);
        let (start, emitted) = (self.start, &mut self.emitted);
        self.chunker.push(data, &mut |offset, chunk| emitted.push((start + offset, out.emit(chunk))));
    }

    /// Cut the last chunk: the stream's chunk list, every chunk durable or pinned.
    pub fn finish(mut self, out: &Streamer) -> Vec<ChunkRef> {
        let (start, emitted) = (self.start, &mut self.emitted);
        self.chunker.finish(&mut |offset, chunk| emitted.push((start + offset, out.emit(chunk))));
        std::mem::take(&mut self.emitted).into_iter().map(|(_, r)| r).collect()
    }

    /// Where file offset `at` (within the stream) is.
    pub fn locate(&self, at: u64) -> At<'_> {
        let pending_start = self.pending_start();
        if at >= pending_start {
            return At::Pending(&self.pending()[(at - pending_start) as usize..]);
        }
        let i = self.emitted.partition_point(|(o, _)| *o <= at) - 1;
        let (offset, r) = self.emitted[i];
        At::Chunk(r, offset)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Pending bytes of a finished stream became chunks (pinned, or dropped as known).
        self.held.fetch_sub(self.pending().len(), Ordering::AcqRel);
    }
}

struct Active {
    jobs: mpsc::Sender<Job>,
    uploader: Uploader,
    queued: HashSet<ObjectId>,
}

/// The uploader streamed chunks go to, started on first use and drained by each commit,
/// and the chunks not yet durable.
pub(crate) struct Streamer {
    repo: Arc<Repository>,
    rt: tokio::runtime::Handle,
    active: Mutex<Option<Active>>,
    /// Chunks cut but not yet durable, by id.
    pinned: Arc<Mutex<HashMap<ObjectId, Arc<Vec<u8>>>>>,
    /// Bytes of pinned chunks plus chunkers' pending bytes, and their limit.
    held: Arc<AtomicUsize>,
    limit: usize,
}

impl Streamer {
    pub fn new(repo: Arc<Repository>, rt: tokio::runtime::Handle, limit: usize) -> Streamer {
        Streamer { repo, rt, active: Mutex::new(None), pinned: Arc::default(), held: Arc::default(), limit }
    }

    /// True if `more` bytes may be held in memory now.
    pub fn may_hold(&self, more: usize) -> bool {
        self.held.load(Ordering::Acquire) + more <= self.limit
    }

    /// A chunk cut but not stored yet.
    pub fn pinned(&self, id: &ObjectId) -> Option<Arc<Vec<u8>>> {
        self.pinned.lock().expect("poisoned").get(id).cloned()
    }

    pub fn is_pinned(&self, id: &ObjectId) -> bool {
        self.pinned.lock().expect("poisoned").contains_key(id)
    }

    /// Name a chunk cut from a stream (whose bytes counted as held) and, unless the pool
    /// has it, pin it and queue it for upload. A failure to queue leaves it pinned: the
    /// next drain queues it again.
    fn emit(&self, chunk: &[u8]) -> ChunkRef {
        let id = self.repo.store().keys().id_of_large(chunk);
        let r = ChunkRef { id, offset: 0, len: chunk.len() as u32 };
        let stored = self.repo.catalogue().reader().and_then(|c| c.has_object(&id)).unwrap_or(false);
        let body = {
            let mut pinned = self.pinned.lock().expect("poisoned");
            if stored || pinned.contains_key(&id) {
                drop(pinned);
                self.held.fetch_sub(chunk.len(), Ordering::AcqRel);
                return r;
            }
            let body = Arc::new(chunk.to_vec());
            pinned.insert(id, body.clone());
            body
        };
        let _ = self.queue(id, body);
        r
    }

    fn queue(&self, id: ObjectId, body: Arc<Vec<u8>>) -> Result<()> {
        let jobs = {
            let mut active = self.active.lock().expect("poisoned");
            let a = active.get_or_insert_with(|| self.start());
            if !a.queued.insert(id) {
                return Ok(());
            }
            a.jobs.clone()
        };
        // Sent outside the lock: a full queue holds up this writer only.
        jobs.blocking_send(Job { kind: ObjectKind::Chunk, id, body })
            .map_err(|_| Error::new(ErrorKind::Interrupted, "streamed uploads stopped"))
    }

    fn start(&self) -> Active {
        let _in_runtime = self.rt.enter();
        let (pinned, held) = (self.pinned.clone(), self.held.clone());
        let on_stored: OnStored = Arc::new(move |id| {
            if let Some(body) = pinned.lock().expect("poisoned").remove(id) {
                held.fetch_sub(body.len(), Ordering::AcqRel);
            }
        });
        let (uploader, jobs) = Uploader::start_notifying(
            self.repo.store().clone(),
            self.repo.catalogue_arc(),
            self.repo.config().compression,
            self.repo.upload_concurrency(),
            Arc::new(AtomicBool::new(false)),
            Some(on_stored),
        );
        Active { jobs, uploader, queued: HashSet::new() }
    }

    /// Wait until every chunk cut so far is durable: the current uploader's, and pinned
    /// chunks an earlier failure left behind (queued again here). An error means some are
    /// still only in memory; they stay pinned and the next drain tries again.
    pub fn drain(&self) -> Result<()> {
        let first = self.finish_active();
        let left: Vec<(ObjectId, Arc<Vec<u8>>)> =
            self.pinned.lock().expect("poisoned").iter().map(|(id, b)| (*id, b.clone())).collect();
        if left.is_empty() {
            return first;
        }
        // Chunks of a failed upload, or cut by writers meanwhile: queued (again) and waited
        // for. Writers keep cutting new ones; only these must be durable now.
        for (id, body) in &left {
            self.queue(*id, body.clone())?;
        }
        let second = self.finish_active();
        let pinned = self.pinned.lock().expect("poisoned");
        let missing = left.iter().filter(|(id, _)| pinned.contains_key(id)).count();
        match (missing, second) {
            (0, _) => Ok(()),
            (_, Err(e)) => Err(e),
            (n, Ok(())) => Err(Error::new(ErrorKind::Backend, format!("{n} streamed chunks could not be stored"))),
        }
    }

    fn finish_active(&self) -> Result<()> {
        let Some(active) = self.active.lock().expect("poisoned").take() else { return Ok(()) };
        drop(active.jobs);
        self.rt.block_on(active.uploader.finish()).map(|_| ())
    }
}
