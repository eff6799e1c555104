//! The pool of backends as one content-addressed object store: names objects, places them
//! with the ring, and verifies everything it reads.
//!
//! Owns: object paths on backends (docs/format.md, "Layout"), placement decisions, read
//! fallback across backends, and the pool record. Must not: know about files, trees' meaning
//! or the catalogue; callers pass encoded envelopes and get verified plain bodies back.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::join_all;

use crate::backend::Backend;
use crate::codec::{self, ObjectKind};
use crate::config::BackendConfig;
use crate::crypto::{KEYS_PREFIX, KeySlot, Keys};
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{self, PoolRecord};
use crate::ring::Ring;

/// Path of the pool record on every backend.
pub const POOL_RECORD: &str = "cuckoo.pool";
/// Where locks live, on every backend.
pub const LOCKS_PREFIX: &str = "locks/";
/// Where prune records live, on every backend.
pub const PRUNE_PREFIX: &str = "prune/";

/// Where an object of `kind` named `id` lives on a backend.
pub fn object_path(kind: ObjectKind, id: &ObjectId) -> String {
    let hex = id.to_hex();
    match kind {
        // Two hex digits of fan-out keep directory sizes sane on file-system backends.
        ObjectKind::Chunk => format!("data/{}/{hex}", &hex[..2]),
        ObjectKind::Tree => format!("tree/{}/{hex}", &hex[..2]),
        ObjectKind::Snapshot => format!("snapshots/{hex}"),
        ObjectKind::Pool => POOL_RECORD.to_string(),
        ObjectKind::Key => format!("{KEYS_PREFIX}{hex}"),
        ObjectKind::Lock => format!("{LOCKS_PREFIX}{hex}"),
        ObjectKind::Prune => format!("{PRUNE_PREFIX}{hex}"),
    }
}

fn id_from_path(path: &str) -> Option<ObjectId> {
    let name = path.rsplit('/').next()?;
    ObjectId::from_hex(name).ok()
}

/// The backends of one pool and the placement over them.
///
/// A new object goes to the less loaded (stored bytes / weight) of its first two backends in
/// ring order: the ring alone leaves sampling noise of several percent when a pool holds a
/// few thousand objects, while two choices keep every backend at its weight share whatever
/// the object count. Readers without a catalogue find the object on the first or second try.
#[derive(Debug, Clone)]
pub struct Store {
    backends: Vec<Backend>,
    ring: Ring,
    loads: Arc<Vec<AtomicU64>>,
    keys: Keys,
}

/// The outcome of storing one object.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    /// Index of the backend holding it.
    pub backend: usize,
    /// Bytes on that backend.
    pub stored_len: u64,
    /// False when an identical object was already there (a resumed or concurrent backup).
    pub written: bool,
}

impl Store {
    /// Open every backend of `configs` (no I/O yet).
    pub fn open(configs: &[BackendConfig]) -> Result<Store> {
        let backends = configs.iter().map(Backend::open).collect::<Result<Vec<_>>>()?;
        let ring = Ring::new(backends.iter().map(|b| (b.name.as_str(), b.weight)))?;
        let loads = Arc::new(backends.iter().map(|_| AtomicU64::new(0)).collect());
        Ok(Store { backends, ring, loads, keys: Keys::plain() })
    }

    /// The same store, naming and sealing objects with `keys` (an unlocked encrypted pool).
    pub fn with_keys(mut self, keys: Keys) -> Store {
        self.keys = keys;
        self
    }

    /// The keys objects are named and sealed with.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The backends, in config order; indices everywhere refer to this order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
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

    /// The backends a new object `id` may go to, in ring order (one or two).
    pub fn candidates(&self, id: &ObjectId) -> Vec<usize> {
        let mut order = self.ring.order(id);
        order.truncate(2);
        order
    }

    fn choose(&self, candidates: &[usize]) -> usize {
        let fill = |i: usize| self.loads[i].load(Ordering::Relaxed) as f64 / self.backends[i].weight;
        let mut best = candidates[0];
        for &c in &candidates[1..] {
            if fill(c) < fill(best) {
                best = c;
            }
        }
        best
    }

    /// Store an encoded object, unless a candidate backend already holds an object of the
    /// same length: names are content hashes, so equal length means a complete earlier write.
    pub async fn put(&self, kind: ObjectKind, id: &ObjectId, envelope: Vec<u8>) -> Result<Stored> {
        let path = object_path(kind, id);
        let stored_len = envelope.len() as u64;
        let candidates = self.candidates(id);
        let present = join_all(candidates.iter().map(|i| self.backends[*i].len(&path))).await;
        for (i, len) in candidates.iter().zip(present) {
            if len? == Some(stored_len) {
                return Ok(Stored { backend: *i, stored_len, written: false });
            }
        }
        let index = self.choose(&candidates);
        self.loads[index].fetch_add(stored_len, Ordering::Relaxed);
        if let Err(e) = self.backends[index].write(&path, envelope).await {
            self.loads[index].fetch_sub(stored_len, Ordering::Relaxed);
            return Err(e);
        }
        Ok(Stored { backend: index, stored_len, written: true })
    }

    /// Store a small object on every backend (snapshots), all at once.
    pub async fn put_everywhere(&self, path: &str, envelope: &[u8]) -> Result<()> {
        let writes = self.backends.iter().map(|b| b.write(path, envelope.to_vec()));
        join_all(writes).await.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    /// Delete the object at `path` from every backend (missing is fine).
    pub async fn delete_everywhere(&self, path: &str) -> Result<()> {
        join_all(self.backends.iter().map(|b| b.delete(path))).await.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    /// Fetch, decode and verify object `id`. `hint` is where the catalogue says it is; after
    /// that the ring's order is tried, so objects are found after the backend set changed.
    pub async fn get(&self, kind: ObjectKind, id: &ObjectId, hint: Option<usize>) -> Result<Vec<u8>> {
        self.get_located(kind, id, hint).await.map(|(body, _)| body)
    }

    /// Like `get`, also saying which backend served the object and its stored length.
    pub async fn get_located(&self, kind: ObjectKind, id: &ObjectId, hint: Option<usize>) -> Result<(Vec<u8>, Stored)> {
        let id = *id;
        let path = object_path(kind, &id);
        let mut order = self.ring.order(&id);
        if let Some(h) = hint.filter(|h| *h < self.backends.len()) {
            order.retain(|i| *i != h);
            order.insert(0, h);
        }
        let mut failure = None;
        for i in order {
            let backend = &self.backends[i];
            match backend.read(&path).await {
                Ok(Some(bytes)) => {
                    let stored = Stored { backend: i, stored_len: bytes.len() as u64, written: false };
                    let keys = self.keys.clone();
                    let body = crate::exec::cpu(move || verify_owned(kind, &id, bytes, &keys)).await.map_err(|e| {
                        Error::new(e.kind(), format!("backend '{}': {path}: {}", backend.name, e.context()))
                    })?;
                    return Ok((body, stored));
                }
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        }
        Err(failure.unwrap_or_else(|| Error::not_found(format!("{kind:?} {} is on no backend", id.to_hex()))))
    }

    /// Ids of all snapshots on any backend.
    pub async fn list_snapshots(&self) -> Result<BTreeSet<ObjectId>> {
        self.list_everywhere("snapshots/").await
    }

    /// Ids of the objects under `prefix` on any backend (snapshots, locks, prune records).
    pub async fn list_everywhere(&self, prefix: &str) -> Result<BTreeSet<ObjectId>> {
        let lists = join_all(self.backends.iter().map(|b| b.list(prefix))).await;
        let mut ids = BTreeSet::new();
        for list in lists {
            ids.extend(list?.iter().filter_map(|(p, _)| id_from_path(p)));
        }
        Ok(ids)
    }

    /// Read and open an object kept on every backend whose name is not its content hash
    /// (locks): the first backend that has it answers; `None` if none has it any more.
    pub async fn get_named(&self, kind: ObjectKind, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        let path = object_path(kind, id);
        for backend in &self.backends {
            if let Some(bytes) = backend.read(&path).await? {
                return codec::decode(kind, id, &bytes, &self.keys).map(Some);
            }
        }
        Ok(None)
    }

    /// The plain length recorded in a stored object's header, read without fetching it.
    pub async fn plain_len(&self, index: usize, kind: ObjectKind, id: &ObjectId) -> Result<u64> {
        let path = object_path(kind, id);
        let head = self.backends[index].read_head(&path, codec::HEAD_LEN as u64).await?;
        Ok(codec::read_header(kind, id, &head, &self.keys)?.plain_len as u64)
    }

    /// Every chunk on backend `index`, with its stored length.
    pub async fn list_chunks(&self, index: usize) -> Result<Vec<(ObjectId, u64)>> {
        let list = self.backends[index].list("data/").await?;
        Ok(list.iter().filter_map(|(p, len)| Some((id_from_path(p)?, *len))).collect())
    }

    /// The pool record's bytes from every backend: `None` where a backend has none (new or
    /// foreign); any unreachable backend is an error naming it. Decode them with
    /// `decode_pool_record` once the keys are known.
    pub async fn read_pool_records(&self) -> Result<Vec<Option<Vec<u8>>>> {
        let reads = join_all(self.backends.iter().map(|b| b.read(POOL_RECORD))).await;
        reads.into_iter().zip(&self.backends).map(|(r, b)| r.map_err(|e| unreachable(b, e))).collect()
    }

    /// Write the pool record, sealed with this store's keys, to the backends in `which`.
    pub async fn write_pool_record(&self, record: &PoolRecord, which: &[usize]) -> Result<()> {
        let bytes = encode_pool_record(record, &self.keys);
        let writes = which.iter().map(|i| self.backends[*i].write(POOL_RECORD, bytes.clone()));
        join_all(writes).await.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    /// Every key slot on any backend, by name, each checked against its name.
    pub async fn read_key_slots(&self) -> Result<Vec<(ObjectId, KeySlot, Vec<u8>)>> {
        let lists = join_all(self.backends.iter().map(|b| b.list(KEYS_PREFIX))).await;
        let mut found: Vec<(ObjectId, KeySlot, Vec<u8>)> = Vec::new();
        for (list, backend) in lists.into_iter().zip(&self.backends) {
            for (path, _) in list.map_err(|e| unreachable(backend, e))? {
                let Some(id) = id_from_path(&path) else { continue };
                if found.iter().any(|(f, _, _)| *f == id) {
                    continue;
                }
                let Some(bytes) = backend.read(&path).await? else { continue };
                if KeySlot::id(&bytes) != id {
                    return Err(Error::corrupt(format!(
                        "backend '{}': key slot {path} does not match its name",
                        backend.name
                    )));
                }
                let slot = KeySlot::decode(&bytes)
                    .map_err(|e| Error::new(e.kind(), format!("backend '{}': {path}: {e}", backend.name)))?;
                found.push((id, slot, bytes));
            }
        }
        Ok(found)
    }

    /// Write a key slot's bytes to the backends in `which`; returns its name.
    pub async fn write_key_slot(&self, bytes: &[u8], which: &[usize]) -> Result<ObjectId> {
        let id = KeySlot::id(bytes);
        let path = object_path(ObjectKind::Key, &id);
        let writes = which.iter().map(|i| self.backends[*i].write(&path, bytes.to_vec()));
        join_all(writes).await.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(id)
    }

    /// Delete key slot `id` from every backend.
    pub async fn delete_key_slot(&self, id: &ObjectId) -> Result<()> {
        self.delete_everywhere(&object_path(ObjectKind::Key, id)).await
    }
}

fn unreachable(b: &Backend, e: Error) -> Error {
    Error::new(ErrorKind::Backend, format!("backend '{}' ({}) is unreachable", b.name, b.scheme)).with_source(e)
}

/// Decode an envelope and check its body hashes to the id it was fetched by.
pub fn verify(kind: ObjectKind, id: &ObjectId, bytes: &[u8], keys: &Keys) -> Result<Vec<u8>> {
    verify_owned(kind, id, bytes.to_vec(), keys)
}

/// Like `verify`, consuming the fetched bytes (see `codec::decode_owned`).
pub fn verify_owned(kind: ObjectKind, id: &ObjectId, bytes: Vec<u8>, keys: &Keys) -> Result<Vec<u8>> {
    let body = codec::decode_owned(kind, id, bytes, keys)?;
    if keys.id_of_large(&body) != *id {
        return Err(Error::corrupt(format!("content does not match its id {}", id.to_hex())));
    }
    Ok(body)
}

/// The pool record has no id to bind it to; the all-zero id stands in.
const POOL_RECORD_ID: ObjectId = ObjectId([0; 32]);

/// The pool record's bytes: the envelope, then a BLAKE3 of its body (it has no id to check).
pub fn encode_pool_record(record: &PoolRecord, keys: &Keys) -> Vec<u8> {
    let body = model::to_body(record);
    let mut bytes = codec::encode(ObjectKind::Pool, &POOL_RECORD_ID, &body, 0, keys);
    bytes.extend_from_slice(keys.id_of(&body).0.as_slice());
    bytes
}

/// True if the pool record's bytes are sealed: the pool needs a passphrase to open.
pub fn pool_record_is_sealed(bytes: &[u8]) -> bool {
    bytes.len() > 7 && bytes[..4] == codec::MAGIC && bytes[7] & 1 == 1
}

/// Parse and check the pool record's bytes.
pub fn decode_pool_record(bytes: &[u8], keys: &Keys) -> Result<PoolRecord> {
    if bytes.len() < 32 {
        return Err(Error::corrupt("pool record is truncated"));
    }
    let (envelope, sum) = bytes.split_at(bytes.len() - 32);
    let body = codec::decode(ObjectKind::Pool, &POOL_RECORD_ID, envelope, keys)?;
    if keys.id_of(&body).0 != sum {
        return Err(Error::corrupt("pool record checksum mismatch"));
    }
    model::from_body("pool record", &body)
}
