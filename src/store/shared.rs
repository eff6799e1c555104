//! Objects kept on every backend rather than placed: the pool record, key slots, snapshots,
//! locks, prune and forget records. Small, so any one backend can list and open the whole
//! pool.
//!
//! A pool with redundancy keeps working with as many backends unreachable as its scheme
//! tolerates: writes and lists here succeed if no more backends than that failed (a backend
//! marked down is not asked), and `repair` later copies what they missed.

use std::collections::BTreeSet;

use futures::future::join_all;

use super::{FORGET_PREFIX, KEYS_PREFIX, POOL_RECORD, SNAPSHOTS_PREFIX, Store, object_path, parse_piece_path};
use crate::backend::Backend;
use crate::codec::{self, ObjectKind};
use crate::crypto::{KeySlot, Keys};
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{self, ForgetRecord, PoolRecord};

/// Snapshot records a backend did not delete in a forget (it refused, or was marked down
/// and not asked: it may not hold them at all), and why: a forget record keeps them
/// forgotten; `repair` deletes what is left later.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeftCopies {
    /// The backend.
    pub backend: String,
    /// How many of the forgotten snapshots it did not delete.
    pub snapshots: usize,
    /// Why, from the first failure.
    pub why: String,
}

/// A key slot's stored form, kept with the other objects stored on every backend.
impl KeySlot {
    /// The stored form: an unencrypted envelope of kind `Key` (nothing in it is secret
    /// without the passphrase).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(ObjectKind::Key, &ObjectId([0; 32]), &model::to_body(self), 0, &Keys::plain())
    }

    /// Parse stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<KeySlot> {
        let body = codec::decode(ObjectKind::Key, &ObjectId([0; 32]), bytes, &Keys::plain())?;
        model::from_body("key slot", &body)
    }

    /// The slot's name: the plain BLAKE3 of its stored bytes (random salt makes it unique).
    pub fn id(encoded: &[u8]) -> ObjectId {
        ObjectId::of(encoded)
    }
}

impl Store {
    /// Run `op` on every backend (not marked down, unless `strict`). Returns each backend's
    /// result, or an error if more backends failed than `allowed` or all of them did.
    async fn on_every<'a, T, F, Fut>(&'a self, strict: bool, allowed: usize, op: F) -> Result<Vec<Option<T>>>
    where
        F: Fn(&'a Backend) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let calls = self.backends.iter().enumerate().map(|(i, b)| {
            let asked = strict || self.health.is_up(i);
            let fut = asked.then(|| op(b));
            async move {
                match fut {
                    Some(f) => {
                        let r = f.await;
                        self.health.observe(i, &r);
                        r.map_err(|e| unreachable(b, e))
                    }
                    None => Err(Error::new(ErrorKind::Backend, format!("backend '{}' is marked down", b.name))),
                }
            }
        });
        let results = join_all(calls).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > allowed || failed == results.len() {
            let first = results.into_iter().find_map(|r| r.err()).expect("failed > 0");
            return Err(first);
        }
        Ok(results.into_iter().map(|r| r.ok()).collect())
    }

    /// Store a small object on every backend (snapshots, locks, prune records).
    pub async fn put_everywhere(&self, path: &str, envelope: &[u8]) -> Result<()> {
        self.on_every(false, self.scheme.tolerates(), |b| b.write(path, envelope.to_vec())).await.map(drop)
    }

    /// Like `put_everywhere`, but every backend must take it (an exclusive lock).
    pub async fn put_on_all(&self, path: &str, envelope: &[u8]) -> Result<()> {
        self.on_every(true, 0, |b| b.write(path, envelope.to_vec())).await.map(drop)
    }

    /// Delete the object at `path` from every backend (missing is fine).
    pub async fn delete_everywhere(&self, path: &str) -> Result<()> {
        self.on_every(false, self.scheme.tolerates(), |b| b.delete(path)).await.map(drop)
    }

    /// Ids of all snapshots on any backend.
    pub async fn list_snapshots(&self) -> Result<BTreeSet<ObjectId>> {
        self.list_everywhere(SNAPSHOTS_PREFIX).await
    }

    /// Delete snapshot records from every backend, so that no machine lists them again.
    ///
    /// A forget record naming them is stored first, on every backend that takes it: a copy
    /// a backend keeps (it is read-only, or marked down) then stays forgotten, whoever
    /// lists it, instead of coming back at the next sync or being copied everywhere again
    /// by `repair`. If every copy went, the record is removed again. Nothing is deleted if
    /// the record could not be stored where the scheme needs it.
    pub async fn forget_snapshots(&self, ids: &[ObjectId]) -> Result<Vec<LeftCopies>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let record_path = self.store_forget_record(ids).await?;
        let mut left: Vec<LeftCopies> = Vec::new();
        for id in ids {
            let path = object_path(ObjectKind::Snapshot, id);
            let deletes = self.backends.iter().enumerate().map(|(i, b)| self.delete_if_up(i, b, &path));
            for (b, result) in self.backends.iter().zip(join_all(deletes).await) {
                let Err(why) = result else { continue };
                match left.iter_mut().find(|l| l.backend == b.name) {
                    Some(l) => l.snapshots += 1,
                    None => left.push(LeftCopies { backend: b.name.clone(), snapshots: 1, why }),
                }
            }
        }
        if left.is_empty() {
            // Best effort: a record that stays behind only costs a read per sync until
            // `repair` finds it covers nothing and removes it.
            let _ = self.on_every(false, usize::MAX, |b| b.delete(&record_path)).await;
        }
        Ok(left)
    }

    /// Store a forget record of `ids` on every backend that takes it, or on none (then the
    /// error says so): returns its path.
    async fn store_forget_record(&self, ids: &[ObjectId]) -> Result<String> {
        let record = ForgetRecord { time_ns: crate::machine::now_ns(), snapshots: ids.to_vec() };
        let body = model::to_body(&record);
        let id = self.keys.id_of(&body);
        let path = object_path(ObjectKind::Forget, &id);
        let envelope = codec::encode(ObjectKind::Forget, &id, &body, 3, &self.keys);
        let writes = self.backends.iter().enumerate().map(|(i, b)| {
            let (envelope, path) = (envelope.clone(), &path);
            async move {
                if !self.health.is_up(i) {
                    return Err(Error::new(ErrorKind::Backend, format!("backend '{}' is marked down", b.name)));
                }
                let r = b.write(path, envelope).await;
                self.health.observe(i, &r);
                r
            }
        });
        let took = join_all(writes).await;
        let refused: Vec<&Error> = took.iter().filter_map(|r| r.as_ref().err()).collect();
        if refused.len() <= self.scheme.tolerates() && refused.len() < took.len() {
            return Ok(path);
        }
        // Where it did land, the record would forget the snapshots all the same.
        let landed = took.iter().zip(&self.backends).filter(|(r, _)| r.is_ok()).map(|(_, b)| b.delete(&path));
        let what = if join_all(landed).await.iter().all(|r| r.is_ok()) {
            "nothing was forgotten"
        } else {
            "the snapshots may count as forgotten where a backend kept the record: run forget again"
        };
        let e = refused[0];
        Err(Error::new(e.kind(), format!("the forget record could not be stored ({e}); {what}")))
    }

    /// Delete `path` at backend `i` unless it is marked down; why not, if it was not.
    async fn delete_if_up(&self, i: usize, b: &Backend, path: &str) -> Result<(), String> {
        if !self.health.is_up(i) {
            let earlier = self.health.incidents(i).into_iter().next().map(|n| n.first);
            return Err(earlier.unwrap_or_else(|| format!("backend '{}' failed earlier requests", b.name)));
        }
        let r = b.delete(path).await;
        self.health.observe(i, &r);
        r.map_err(|e| e.to_string())
    }

    /// The snapshots some forget record names: not to be listed, synced or copied, whichever
    /// backend still holds a copy. A record no backend gives intact is passed over (a
    /// snapshot then shows up again: a lost record never costs data).
    pub async fn forgotten_snapshots(&self) -> Result<BTreeSet<ObjectId>> {
        Ok(self.forget_records().await?.into_iter().flat_map(|(_, r)| r.snapshots).collect())
    }

    /// Every readable forget record, with its id.
    pub async fn forget_records(&self) -> Result<Vec<(ObjectId, ForgetRecord)>> {
        let mut records = Vec::new();
        for id in self.list_everywhere(FORGET_PREFIX).await? {
            let Ok(body) = self.get_everywhere(ObjectKind::Forget, &id).await else { continue };
            if let Ok(record) = model::from_body::<ForgetRecord>("forget record", &body) {
                records.push((id, record));
            }
        }
        Ok(records)
    }

    /// Ids of the objects under `prefix` on any backend (snapshots, locks, prune records).
    pub async fn list_everywhere(&self, prefix: &str) -> Result<BTreeSet<ObjectId>> {
        let lists = self.on_every(false, self.scheme.tolerates(), |b| b.list(prefix)).await?;
        Ok(lists.into_iter().flatten().flatten().filter_map(|(p, _)| Some(parse_piece_path(&p)?.0)).collect())
    }

    /// Fetch and verify a content-addressed object kept on every backend (a snapshot, a
    /// prune record): healthy backends are asked first, one at a time.
    pub async fn get_everywhere(&self, kind: ObjectKind, id: &ObjectId) -> Result<Vec<u8>> {
        let path = object_path(kind, id);
        let mut order: Vec<usize> = (0..self.backends.len()).collect();
        order.sort_by_key(|i| !self.health.is_up(*i));
        let mut failure = None;
        for i in order {
            let read = self.backends[i].read(&path).await;
            self.health.observe(i, &read);
            let e = match read {
                Ok(Some(bytes)) => match super::verify(kind, id, &bytes, &self.keys) {
                    Ok(body) => return Ok(body),
                    Err(e) => e,
                },
                Ok(None) => continue,
                Err(e) => e,
            };
            let name = &self.backends[i].name;
            failure = Some(Error::new(e.kind(), format!("backend '{name}': {path}: {}", e.context())));
        }
        Err(failure.unwrap_or_else(|| Error::not_found(format!("{kind:?} {} is on no backend", id.to_hex()))))
    }

    /// Like `list_everywhere`, but every backend must answer (an exclusive lock must see the
    /// shared locks, which may be missing from the backends that were down when written).
    pub async fn list_on_all(&self, prefix: &str) -> Result<BTreeSet<ObjectId>> {
        let lists = self.on_every(true, 0, |b| b.list(prefix)).await?;
        Ok(lists.into_iter().flatten().flatten().filter_map(|(p, _)| Some(parse_piece_path(&p)?.0)).collect())
    }

    /// Read and open an object kept on every backend: the first backend that has it
    /// answers; `None` if none has it any more.
    pub async fn get_named(&self, kind: ObjectKind, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        let path = object_path(kind, id);
        let mut failure = None;
        for (i, backend) in self.backends.iter().enumerate().filter(|(i, _)| self.health.is_up(*i)) {
            let read = backend.read(&path).await;
            self.health.observe(i, &read);
            match read {
                Ok(Some(bytes)) => return codec::decode(kind, id, &bytes, &self.keys).map(Some),
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if self.health.down().len() > self.scheme.tolerates() => Err(e),
            _ => Ok(None),
        }
    }

    /// The pool record's bytes from every backend: `Ok(None)` where a backend has none (new
    /// or foreign), `Err` where it could not be reached. Decode them with
    /// `decode_pool_record` once the keys are known.
    pub async fn read_pool_records(&self) -> Vec<Result<Option<Vec<u8>>>> {
        let reads = join_all(self.backends.iter().map(|b| b.read(POOL_RECORD))).await;
        reads
            .into_iter()
            .zip(&self.backends)
            .enumerate()
            .map(|(i, (r, b))| {
                self.health.observe(i, &r);
                r.map(|found| found.map(Vec::from)).map_err(|e| unreachable(b, e))
            })
            .collect()
    }

    /// Write the pool record, sealed with this store's keys, to the backends in `which`.
    pub async fn write_pool_record(&self, record: &PoolRecord, which: &[usize]) -> Result<()> {
        let bytes = encode_pool_record(record, &self.keys);
        let writes = which.iter().map(|i| self.backends[*i].write(POOL_RECORD, bytes.clone()));
        join_all(writes).await.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    /// Every key slot on any reachable backend, by name, each checked against its name.
    pub async fn read_key_slots(&self) -> Result<Vec<(ObjectId, KeySlot, Vec<u8>)>> {
        // Every slot is on every backend, and this runs before the pool's scheme is known:
        // any one reachable backend will do.
        let lists = self.on_every(false, self.backends.len() - 1, |b| b.list(KEYS_PREFIX)).await?;
        let mut found: Vec<(ObjectId, KeySlot, Vec<u8>)> = Vec::new();
        for (list, backend) in lists.into_iter().zip(&self.backends) {
            for (path, _) in list.into_iter().flatten() {
                let Some((id, _)) = parse_piece_path(&path) else { continue };
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
                found.push((id, slot, bytes.into()));
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
    if e.kind() != ErrorKind::Backend {
        return e;
    }
    // Name the backend once, however the error began.
    let named = format!("backend '{}' ({})", b.name, b.scheme);
    let full = e.to_string();
    let why = full.strip_prefix(&named).map(|r| r.trim_start_matches(':').trim_start()).unwrap_or(&full);
    Error::new(e.kind(), format!("{named} is unreachable: {why}"))
}

/// The pool record has no id to bind it to; the all-zero id stands in.
const POOL_RECORD_ID: ObjectId = ObjectId([0; 32]);

/// The pool record's bytes: the envelope, then a BLAKE3 of its body (it has no id to check).
/// A record without a placement version is written as format version 1 wrote it, so a
/// backend added to an older pool gets the record every other backend has.
pub fn encode_pool_record(record: &PoolRecord, keys: &Keys) -> Vec<u8> {
    let (version, body) = match record.placement {
        Some(_) => (3, model::to_body(record)),
        None => (1, model::to_body(&model::PoolRecordV1::from(record))),
    };
    let mut bytes = codec::encode_version(ObjectKind::Pool, version, &POOL_RECORD_ID, &body, 0, keys);
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
    // `decode` checked the version byte. Format 3 names the placement version; older
    // records have none, and those from before redundancy existed have no scheme either
    // (one copy).
    if envelope[4] >= 3 {
        return model::from_body("pool record", &body);
    }
    model::from_body::<model::PoolRecordV1>("pool record", &body)
        .map(PoolRecord::from)
        .or_else(|e| model::from_body::<model::PoolRecordV0>("pool record", &body).map(PoolRecord::from).map_err(|_| e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkerParams;
    use crate::redundancy::Scheme;

    fn record(placement: Option<u8>) -> PoolRecord {
        PoolRecord {
            pool_id: [7; 16],
            created_ns: 1_700_000_000_000_000_000,
            chunker: ChunkerParams::default(),
            redundancy: Scheme::default_for(3),
            placement,
        }
    }

    #[test]
    fn a_recorded_placement_is_format_3_and_an_unrecorded_one_is_written_as_format_1_wrote_it() {
        let keys = Keys::plain();
        let recorded = encode_pool_record(&record(Some(2)), &keys);
        assert_eq!(recorded[4], 3);
        assert_eq!(decode_pool_record(&recorded, &keys).unwrap(), record(Some(2)));

        let unrecorded = encode_pool_record(&record(None), &keys);
        assert_eq!(unrecorded[4], 1);
        let body =
            codec::decode(ObjectKind::Pool, &POOL_RECORD_ID, &unrecorded[..unrecorded.len() - 32], &keys).unwrap();
        assert_eq!(body, model::to_body(&model::PoolRecordV1::from(&record(None))));
        assert_eq!(decode_pool_record(&unrecorded, &keys).unwrap(), record(None));
    }

    #[test]
    fn a_record_from_before_redundancy_reads_as_one_copy_without_a_placement() {
        let keys = Keys::plain();
        let old = model::PoolRecordV0 { pool_id: [1; 16], created_ns: 5, chunker: ChunkerParams::default() };
        let body = model::to_body(&old);
        let mut bytes = codec::encode_version(ObjectKind::Pool, 1, &POOL_RECORD_ID, &body, 0, &keys);
        bytes.extend_from_slice(keys.id_of(&body).0.as_slice());
        let read = decode_pool_record(&bytes, &keys).unwrap();
        assert_eq!((read.redundancy, read.placement), (Scheme::NONE, None));
    }
}
