//! The read cache of the drive and snapshot views: decoded chunks kept in memory up to a
//! bound, oldest out first, and fetches ahead of a reader that run in the background. Below
//! it is the pool's local cache on disk (`store::LocalCache`): a chunk missing here is looked
//! for there before the backends, and one fetched from the backends is kept there too.
//!
//! Owns: which decoded chunks are held, and that one chunk is fetched once however many
//! readers want it. Must not: know files, streams or the drive's state (`pool` does).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::error::Result;
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
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    fetched: Condvar,
    /// Reads that found their chunk still on its way: fetched ahead, too late.
    caught_up: AtomicU64,
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

    /// `len` bytes at `offset` of a chunk that only the local disk cache holds, read without
    /// the rest of it: what a random reader wants, one 16 KiB block instead of a chunk.
    /// `None` when memory holds or is fetching it (use `get`), or the disk cache lacks it.
    pub fn range(&self, id: &ObjectId, offset: usize, len: usize) -> Option<Vec<u8>> {
        {
            let state = self.shared.state.lock().expect("poisoned");
            if state.chunks.contains_key(id) || state.fetching.contains(id) {
                return None;
            }
        }
        self.repo.local_cache()?.read_at(id, offset, len)
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

impl Shared {
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
