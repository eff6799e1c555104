//! The read cache of the drive and snapshot views: decoded chunks kept in memory up to a
//! bound, oldest out first, and fetches ahead of a reader that run in the background. Below
//! it is the pool's local cache on disk (`store::LocalCache`): a chunk missing here is looked
//! for there before the backends, and one fetched from the backends is kept there too.
//!
//! A random reader gets a few bytes without the whole chunk: from the disk cache, or else
//! from the 64 KiB segments of the chunk that hold them (`Store::read_chunk_range`), kept
//! here for the next read nearby; the whole chunk then goes to the disk cache behind it, so
//! what is read at random once is local the next time.
//!
//! Owns: which decoded chunks and segments are held, and that one chunk is fetched once
//! however many readers want it. Must not: know files, streams or the drive's state (`pool`
//! does).

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use lru::LruCache;

use crate::codec::SEGMENT;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::repository::Repository;

/// Decoded chunks, fetched from the pool when missing.
pub(crate) struct ChunkCache {
    repo: Arc<Repository>,
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
    limit: usize,
}

/// The cache's state and a signal for readers waiting on a fetch in flight.
struct Shared {
    state: Mutex<State>,
    fetched: Condvar,
    /// Reads that found their chunk still on its way: fetched ahead, too late.
    caught_up: AtomicU64,
    /// Segments read for random readers, by chunk and index, least recently used out first.
    segments: Mutex<LruCache<SegmentKey, Arc<Vec<u8>>>>,
    /// A whole chunk is being fetched into the disk cache behind a random reader.
    filling: AtomicBool,
}

/// A chunk and the index of one of its segments.
type SegmentKey = (ObjectId, u64);

/// Segments held for random readers: 16 MiB.
const SEGMENTS_KEPT: usize = 256;

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            state: Mutex::default(),
            fetched: Condvar::new(),
            caught_up: AtomicU64::new(0),
            segments: Mutex::new(LruCache::new(NonZeroUsize::new(SEGMENTS_KEPT).expect("not zero"))),
            filling: AtomicBool::new(false),
        }
    }
}

#[derive(Default)]
struct State {
    chunks: HashMap<ObjectId, Arc<Vec<u8>>>,
    order: VecDeque<ObjectId>,
    bytes: usize,
    fetching: HashSet<ObjectId>,
}

impl ChunkCache {
    /// A cache of at most `limit` bytes of decoded chunks of `repo`'s pool.
    pub fn new(repo: Arc<Repository>, rt: tokio::runtime::Handle, limit: usize) -> ChunkCache {
        ChunkCache { repo, rt, shared: Arc::default(), limit }
    }

    /// The most bytes of decoded chunks held.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many reads so far had to wait for a chunk fetched ahead of them (a count that
    /// rises while a sequential reader's read-ahead is too short for the backends' latency).
    pub fn caught_up(&self) -> u64 {
        self.shared.caught_up.load(Ordering::Relaxed)
    }

    /// A decoded chunk: from the cache, from a fetch already under way, or from the pool.
    /// Blocks; call it from outside the runtime.
    pub fn get(&self, id: &ObjectId) -> Result<Arc<Vec<u8>>> {
        {
            let mut state = self.shared.state.lock().expect("poisoned");
            let mut waited = false;
            loop {
                if let Some(c) = state.chunks.get(id) {
                    return Ok(c.clone());
                }
                if !state.fetching.contains(id) {
                    break;
                }
                if !waited {
                    waited = true;
                    self.shared.caught_up.fetch_add(1, Ordering::Relaxed);
                }
                state = self.shared.fetched.wait(state).expect("poisoned");
            }
        }
        let body = match self.repo.local_cache().and_then(|c| c.get(id)) {
            Some(body) => Arc::new(body),
            None => self.rt.block_on(self.repo.chunk_from_backends(*id, true))?,
        };
        self.shared.insert(self.limit, *id, body.clone());
        Ok(body)
    }

    /// Bytes at `offset` of a chunk that memory does not hold, read without the rest of
    /// it: what a random reader wants. From the disk cache (`len` bytes, one 16 KiB block
    /// checked), or else from the chunk's segment that holds `offset` (up to `len` bytes, to
    /// the segment's end), fetched and checked alone. `None` when memory holds or is
    /// fetching the chunk, or it cannot be read in part (stored before segments, or only as
    /// shards, or a read failed): then `get` it whole.
    pub fn range(&self, id: &ObjectId, offset: usize, len: usize) -> Result<Option<Vec<u8>>> {
        {
            let state = self.shared.state.lock().expect("poisoned");
            if state.chunks.contains_key(id) || state.fetching.contains(id) {
                return Ok(None);
            }
        }
        let local = self.repo.local_cache();
        if let Some(bytes) = local.and_then(|c| c.read_at(id, offset, len)) {
            return if bytes.len() == len { Ok(Some(bytes)) } else { Err(short(id)) };
        }
        let index = (offset / SEGMENT) as u64;
        let segment = match self.shared.segment(id, index) {
            Some(segment) => segment,
            None => {
                let at = offset as u64;
                let Some(read) = self.rt.block_on(self.repo.chunk_range(*id, at..at + len as u64)) else {
                    return Ok(None);
                };
                self.shared.keep_segments(id, read.offset, read.bytes);
                if local.is_some_and(|c| !c.holds(id)) {
                    self.fill(*id);
                }
                self.shared.segment(id, index).ok_or_else(|| short(id))?
            }
        };
        let from = offset % SEGMENT;
        if from >= segment.len() {
            return Err(short(id));
        }
        Ok(Some(segment[from..segment.len().min(from + len)].to_vec()))
    }

    /// Fetch chunk `id` whole into the disk cache in the background, one chunk at a time
    /// (a random reader's next miss is served by segments meanwhile, and the fill takes at
    /// most one core from it).
    fn fill(&self, id: ObjectId) {
        if self.shared.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let (repo, shared) = (self.repo.clone(), self.shared.clone());
        self.rt.spawn(async move {
            // A failed fill costs nothing: the chunk is read again when wanted.
            let _ = repo.chunk_from_backends(id, true).await;
            shared.filling.store(false, Ordering::Release);
        });
    }

    /// Start fetching chunks a reader will want next, unless held or on their way.
    pub fn fetch_ahead(&self, ids: &[ObjectId]) {
        for id in ids {
            {
                let mut state = self.shared.state.lock().expect("poisoned");
                if state.chunks.contains_key(id) || !state.fetching.insert(*id) {
                    continue;
                }
            }
            let (repo, shared, limit, id) = (self.repo.clone(), self.shared.clone(), self.limit, *id);
            self.rt.spawn(async move {
                // A failed fetch ahead costs nothing: the reader fetches (and reports) it again.
                if let Ok(body) = repo.chunk(id, true).await {
                    shared.insert(limit, id, body);
                }
                shared.state.lock().expect("poisoned").fetching.remove(&id);
                shared.fetched.notify_all();
            });
        }
    }
}

fn short(id: &ObjectId) -> Error {
    Error::corrupt(format!("chunk {} is shorter than a file's slice of it", id.to_hex()))
}

impl Shared {
    fn segment(&self, id: &ObjectId, index: u64) -> Option<Arc<Vec<u8>>> {
        self.segments.lock().expect("poisoned").get(&(*id, index)).cloned()
    }

    /// Keep the segments of chunk `id` in `bytes`, which start at plain offset `offset`.
    fn keep_segments(&self, id: &ObjectId, offset: u64, bytes: Vec<u8>) {
        let mut segments = self.segments.lock().expect("poisoned");
        for (i, segment) in bytes.chunks(SEGMENT).enumerate() {
            segments.put((*id, offset / SEGMENT as u64 + i as u64), Arc::new(segment.to_vec()));
        }
    }

    fn insert(&self, limit: usize, id: ObjectId, body: Arc<Vec<u8>>) {
        let mut c = self.state.lock().expect("poisoned");
        if c.chunks.contains_key(&id) {
            return;
        }
        c.bytes += body.len();
        c.chunks.insert(id, body);
        c.order.push_back(id);
        while c.bytes > limit {
            let Some(old) = c.order.pop_front() else { break };
            if let Some(b) = c.chunks.remove(&old) {
                c.bytes -= b.len();
            }
        }
    }
}
