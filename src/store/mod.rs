//! The pool of backends as one content-addressed object store: names objects, places their
//! pieces (whole copies or shards, per the pool's redundancy scheme) with the ring, reads
//! them back from whatever is left, and verifies everything it reads.
//!
//! Owns: object paths on backends (docs/format.md, "Layout"), placement decisions, backend
//! health (`health`), reads with fallback and reconstruction (`objects`), the objects kept on
//! every backend (`shared`: pool record, key slots, snapshots, locks), and the local chunk
//! cache in front of them (`cache`). Must not: know about
//! files, trees' meaning or the catalogue; callers pass encoded envelopes and get verified
//! plain bodies back.

mod cache;
mod health;
mod objects;
mod ranges;
mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use cache::{BLOCK as CACHE_BLOCK, CacheStats, LocalCache, default_limit as default_cache_limit};
pub use health::{Health, Incident, Trouble};
pub use ranges::Segments;
pub use shared::{LeftCopies, decode_pool_record, encode_pool_record, pool_record_is_sealed};

use crate::backend::Backend;
use crate::codec::{self, ObjectKind};
use crate::config::BackendConfig;
use crate::crypto::Keys;
use crate::error::Result;
use crate::id::ObjectId;
use crate::redundancy::Scheme;
use crate::ring::Ring;

/// Path of the pool record on every backend.
pub const POOL_RECORD: &str = "cuckoo.pool";
/// Where locks live, on every backend.
pub const LOCKS_PREFIX: &str = "locks/";
/// Where prune records live, on every backend.
pub const PRUNE_PREFIX: &str = "prune/";
/// Where forget records live, on every backend that would take them.
pub const FORGET_PREFIX: &str = "forgotten/";
/// Where snapshots live, on every backend.
pub const SNAPSHOTS_PREFIX: &str = "snapshots/";
/// Where key slots live, on every backend: `keys/<plain BLAKE3 of the slot's bytes>`.
pub const KEYS_PREFIX: &str = "keys/";
/// The objects every backend keeps a copy of, besides the pool record, by prefix; `repair`
/// copies them to backends that lack them.
pub const SHARED_PREFIXES: [(ObjectKind, &str); 4] = [
    (ObjectKind::Snapshot, SNAPSHOTS_PREFIX),
    (ObjectKind::Key, KEYS_PREFIX),
    (ObjectKind::Prune, PRUNE_PREFIX),
    (ObjectKind::Forget, FORGET_PREFIX),
];
/// Suffix of a shard object's name (docs/format.md, "Shards"); a backend holds at most one
/// shard of an object, so the shard's index lives in its header, not its name.
pub const SHARD_SUFFIX: &str = ".s";

/// Where an object of `kind` named `id` lives on a backend, stored whole.
pub fn object_path(kind: ObjectKind, id: &ObjectId) -> String {
    let hex = id.to_hex();
    match kind {
        // Two hex digits of fan-out keep directory sizes sane on file-system backends.
        ObjectKind::Chunk => format!("data/{}/{hex}", &hex[..2]),
        ObjectKind::Tree => format!("tree/{}/{hex}", &hex[..2]),
        ObjectKind::Snapshot => format!("{SNAPSHOTS_PREFIX}{hex}"),
        ObjectKind::Pool => POOL_RECORD.to_string(),
        ObjectKind::Key => format!("{KEYS_PREFIX}{hex}"),
        ObjectKind::Lock => format!("{LOCKS_PREFIX}{hex}"),
        ObjectKind::Prune => format!("{PRUNE_PREFIX}{hex}"),
        ObjectKind::Forget => format!("{FORGET_PREFIX}{hex}"),
    }
}

/// The kind and id of an object kept on every backend, from its path (`None` for the pool
/// record and anything else).
pub fn parse_shared_path(path: &str) -> Option<(ObjectKind, ObjectId)> {
    SHARED_PREFIXES.iter().find_map(|(kind, prefix)| {
        let hex = path.strip_prefix(prefix)?;
        Some((*kind, ObjectId::from_hex(hex).ok()?))
    })
}

/// Where a piece of object `id` lives on a backend.
pub fn piece_path(kind: ObjectKind, id: &ObjectId, shard: bool) -> String {
    let path = object_path(kind, id);
    if shard { path + SHARD_SUFFIX } else { path }
}

/// The object id and whether it is a shard, from a listed path.
pub fn parse_piece_path(path: &str) -> Option<(ObjectId, bool)> {
    let name = path.rsplit('/').next()?;
    match name.strip_suffix(SHARD_SUFFIX) {
        Some(hex) => Some((ObjectId::from_hex(hex).ok()?, true)),
        None => Some((ObjectId::from_hex(name).ok()?, false)),
    }
}

/// One stored piece of an object: a whole copy or one shard, on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Piece {
    /// Index of the backend holding it.
    pub backend: usize,
    /// A shard (else the whole object).
    pub shard: bool,
    /// Bytes on that backend.
    pub stored_len: u64,
}

/// The outcome of storing one object.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Every piece now stored.
    pub pieces: Vec<Piece>,
    /// False when the pieces were already there (a resumed or concurrent backup).
    pub written: bool,
    /// Fewer pieces than the scheme asks for could be placed (backends down or full):
    /// readable, but less redundant until `repair`.
    pub degraded: bool,
}

impl Stored {
    /// Bytes all pieces take on the backends.
    pub fn stored_len(&self) -> u64 {
        self.pieces.iter().map(|p| p.stored_len).sum()
    }
}

/// A backend that failed requests during a command, and how: said at its end in the
/// user's terms, with whether running it again can help.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackendTrouble {
    /// The backend's name.
    pub backend: String,
    /// What failed, how often, the first message.
    #[serde(flatten)]
    pub incident: Incident,
}

/// The incidents of one store's backends, readable after the store is gone.
#[derive(Debug, Clone)]
pub struct TroubleLog {
    names: Vec<String>,
    health: Arc<Health>,
}

impl TroubleLog {
    /// Every backend that failed requests so far, with how; in backend order.
    pub fn troubles(&self) -> Vec<BackendTrouble> {
        self.names
            .iter()
            .enumerate()
            .flat_map(|(i, name)| {
                self.health.incidents(i).into_iter().map(|incident| BackendTrouble { backend: name.clone(), incident })
            })
            .collect()
    }
}

impl std::fmt::Display for BackendTrouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Incident { trouble, failures, first } = &self.incident;
        let (b, n) = (&self.backend, failures);
        let requests = if *n == 1 { "request" } else { "requests" };
        match trouble {
            Trouble::Refused => write!(
                f,
                "backend '{b}' refused {n} {requests} (first: {first}): it is read-only or these credentials may \
                 not write there; running this again will not help until it accepts writes"
            ),
            Trouble::Full => write!(
                f,
                "backend '{b}' is full ({n} {requests} refused, first: {first}): new data went to the other \
                 backends; running this again will not help until it has room (free space, raise its quota or \
                 `capacity`, or lower its `weight`)"
            ),
            Trouble::Unreachable => write!(
                f,
                "backend '{b}' failed {n} {requests} (first: {first}): it may be down or unreachable; run this \
                 again once it answers"
            ),
        }
    }
}

/// The backends of one pool, the placement over them and their health.
///
/// Placement: an object of n pieces (copies or shards) is placed over the first n + 1
/// eligible backends in the ring's order for its id and piece count (eligible: not draining,
/// not down, not full), leaving out the one fullest for its weight (`Ring::pick`). The
/// ring's weight sets give each backend its weight share in expectation; the choice of n of
/// n + 1 holds it there whatever the object count, where the ring alone leaves sampling noise
/// of several percent in a pool of a few thousand objects. Once written, a piece may stay
/// one rank further down (`ring::keep_window`), so that a backend added pushes nothing out.
#[derive(Debug, Clone)]
pub struct Store {
    backends: Vec<Backend>,
    ring: Ring,
    loads: Arc<Vec<AtomicU64>>,
    health: Arc<Health>,
    keys: Keys,
    scheme: Scheme,
    /// Layouts of segmented chunk copies read lately (`ranges`).
    layouts: Arc<ranges::Layouts>,
}

impl Store {
    /// Open every backend of `configs` (no I/O yet).
    pub fn open(configs: &[BackendConfig]) -> Result<Store> {
        Self::open_limited(configs, crate::config::Limits::default())
    }

    /// Like `open`, with bandwidth limits the backends share (the pool's, on top of each
    /// backend's own).
    pub fn open_limited(configs: &[BackendConfig], pool: crate::config::Limits) -> Result<Store> {
        let shared = crate::limit::Shared::new(pool.upload, pool.download);
        let backends = configs.iter().map(|c| Backend::open_sharing(c, &shared)).collect::<Result<Vec<_>>>()?;
        let ring = Ring::new(backends.iter().map(|b| (b.name.as_str(), b.weight)))?;
        let loads = Arc::new(backends.iter().map(|_| AtomicU64::new(0)).collect());
        let health = Arc::new(Health::new(backends.len()));
        Ok(Store { backends, ring, loads, health, keys: Keys::plain(), scheme: Scheme::NONE, layouts: Arc::default() })
    }

    /// The same store, naming and sealing objects with `keys` (an unlocked encrypted pool).
    pub fn with_keys(mut self, keys: Keys) -> Store {
        self.keys = keys;
        self
    }

    /// The same store, writing new objects with `scheme` (the pool's).
    pub fn with_scheme(mut self, scheme: Scheme) -> Store {
        self.scheme = scheme;
        self
    }

    /// The keys objects are named and sealed with.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The redundancy new objects are written with.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The backends, in config order; indices everywhere refer to this order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Which backends are down or full.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Every backend that failed requests since this store was opened, with how; in
    /// backend order.
    pub fn troubles(&self) -> Vec<BackendTrouble> {
        self.trouble_log().troubles()
    }

    /// A handle on this store's incidents that outlives it (for a front end to report at
    /// its very end, whatever the command did with the store).
    pub fn trouble_log(&self) -> TroubleLog {
        TroubleLog { names: self.backends.iter().map(|b| b.name.clone()).collect(), health: self.health.clone() }
    }

    /// The index of the backend called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }

    /// Tell placement how many bytes each backend already holds (from the catalogue).
    pub fn set_loads(&self, bytes: impl IntoIterator<Item = (usize, u64)>) {
        for (i, b) in bytes {
            self.loads[i].store(b, Ordering::Relaxed);
        }
    }

    /// Bytes placement believes backend `i` holds.
    pub fn load(&self, i: usize) -> u64 {
        self.loads[i].load(Ordering::Relaxed)
    }

    /// Whether backend `i` can take `len` more bytes: not draining, not full, and under its
    /// configured capacity.
    fn has_room(&self, i: usize, len: u64) -> bool {
        let b = &self.backends[i];
        !b.drain && !self.health.is_full(i) && b.capacity.is_none_or(|cap| self.load(i) + len <= cap)
    }

    /// The backends that may take a new piece of `id`, an object of `pieces` pieces, in ring
    /// order.
    fn eligible(&self, id: &ObjectId, pieces: usize, len: u64, include_down: bool) -> Vec<usize> {
        self.ring
            .order(id, pieces)
            .into_iter()
            .filter(|i| self.has_room(*i, len) && (include_down || self.health.is_up(*i)))
            .collect()
    }

    /// Every backend that may take a new piece of `id` under `scheme` (not draining, with
    /// room), in ring order, whether up or down.
    pub fn placement_order(&self, id: &ObjectId, scheme: Scheme, len: u64) -> Vec<usize> {
        self.eligible(id, scheme.pieces(), len, true)
    }

    /// Where `scheme` may put the pieces of `id` when every backend is up: its write window
    /// (`ring::write_window`), any `pieces` of which are right (see the type's doc); `repair`
    /// and `rebalance` write missing pieces there.
    pub fn intended(&self, id: &ObjectId, scheme: Scheme, len: u64) -> Vec<usize> {
        let mut order = self.placement_order(id, scheme, len);
        order.truncate(crate::ring::write_window(scheme.pieces()));
        order
    }

    /// Which `take` of `candidates` (from an object's window) get a piece of an object of
    /// `pieces` pieces: those least full for their weight.
    pub fn pick(&self, pieces: usize, candidates: &[usize], take: usize) -> Vec<usize> {
        self.ring.pick(pieces, candidates, take, |i| self.load(i) as f64 / self.backends[i].weight)
    }

    /// A piece of an object to move for balance (`ring::balancing_move`): which of `held`
    /// (in its keep window; `window` is its write window) goes, and where among `free`.
    pub fn balancing_move<'a>(
        &self,
        held: &[&'a Piece],
        window: &[usize],
        free: &[usize],
        len: u64,
    ) -> Option<(&'a Piece, usize)> {
        let loads: Vec<u64> = (0..self.backends.len()).map(|i| self.load(i)).collect();
        let holders: Vec<usize> = held.iter().map(|p| p.backend).collect();
        let (from, to) = crate::ring::balancing_move(&self.shares(), &loads, &holders, window, free, len)?;
        Some((held.iter().copied().find(|p| p.backend == from)?, to))
    }

    /// Count a dry run's planned writes and deletes in the loads, so that placement decisions
    /// after them see them.
    pub fn plan(&self, written: &[(usize, u64)], deleted: &[Piece]) {
        written.iter().for_each(|(i, len)| self.add_load(*i, *len));
        deleted.iter().for_each(|p| self.sub_load(p.backend, p.stored_len));
    }

    /// Each backend's expected share of the pieces the pool's scheme writes: its weight
    /// share, or less where that is more than one piece of every object.
    pub fn shares(&self) -> Vec<f64> {
        self.ring.shares(self.scheme.pieces())
    }

    /// Whether every backend can get its weight share under the pool's scheme.
    pub fn feasible(&self) -> bool {
        self.ring.feasible(self.scheme.pieces())
    }

    fn add_load(&self, i: usize, len: u64) {
        self.loads[i].fetch_add(len, Ordering::Relaxed);
    }

    fn sub_load(&self, i: usize, len: u64) {
        let _ = self.loads[i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| Some(l.saturating_sub(len)));
    }

    /// The plain length recorded in a stored whole object's header, read without fetching it.
    pub async fn plain_len(&self, index: usize, kind: ObjectKind, id: &ObjectId) -> Result<u64> {
        let path = object_path(kind, id);
        let head = self.backends[index].read_head(&path, codec::HEAD_LEN as u64).await?;
        Ok(codec::read_header(kind, id, &head, &self.keys)?.plain_len as u64)
    }

    /// The plain length recorded in an object's header, read from the first bytes of a
    /// whole copy or of its first shard; `None` if neither answers.
    pub async fn plain_len_of(&self, kind: ObjectKind, id: &ObjectId, pieces: &[Piece]) -> Option<u64> {
        for p in pieces.iter().filter(|p| !p.shard) {
            if let Ok(n) = self.plain_len(p.backend, kind, id).await {
                return Some(n);
            }
        }
        let want = (crate::redundancy::SHARD_HEADER_LEN + codec::HEAD_LEN) as u64;
        for p in pieces.iter().filter(|p| p.shard) {
            let Ok(head) = self.backends[p.backend].read_head(&piece_path(kind, id, true), want).await else {
                continue;
            };
            if let Some((0, start)) = crate::redundancy::peek_shard(&head) {
                return codec::read_header(kind, id, start, &self.keys).ok().map(|h| h.plain_len as u64);
            }
        }
        None
    }

    /// Every chunk and tree pack piece on every backend, all backends listed at once (a slow
    /// lister costs its own time, not the sum). Per backend: its pieces, or why it failed.
    pub async fn list_all_pieces(&self) -> Vec<Result<Vec<(ObjectKind, ObjectId, Piece)>>> {
        let per_backend = (0..self.backends.len()).map(|i| async move {
            let (chunks, trees) =
                futures::join!(self.list_pieces(i, ObjectKind::Chunk), self.list_pieces(i, ObjectKind::Tree));
            let mut all: Vec<(ObjectKind, ObjectId, Piece)> =
                chunks?.into_iter().map(|(id, p)| (ObjectKind::Chunk, id, p)).collect();
            all.extend(trees?.into_iter().map(|(id, p)| (ObjectKind::Tree, id, p)));
            Ok(all)
        });
        futures::future::join_all(per_backend).await
    }

    /// Every piece of kind `kind` (chunks or tree packs) on backend `index`.
    pub async fn list_pieces(&self, index: usize, kind: ObjectKind) -> Result<Vec<(ObjectId, Piece)>> {
        let prefix = match kind {
            ObjectKind::Tree => "tree/",
            _ => "data/",
        };
        let result = self.backends[index].list(prefix).await;
        self.health.observe(index, &result);
        Ok(result?
            .into_iter()
            .filter_map(|(p, len)| {
                let (id, shard) = parse_piece_path(&p)?;
                Some((id, Piece { backend: index, shard, stored_len: len }))
            })
            .collect())
    }
}

/// Decode an envelope and check its body hashes to the id it was fetched by.
pub fn verify(kind: ObjectKind, id: &ObjectId, bytes: &[u8], keys: &Keys) -> Result<Vec<u8>> {
    codec::decode_verified(kind, id, bytes, keys)
}
