//! A pool opened for use: config, backends, pool record and catalogue together, and the
//! operations the CLI and library users call (init, backup, restore, list, stats).
//!
//! Owns: opening and initialising pools, keeping the catalogue in step with the backends
//! (`sync`), and resolving snapshot names. Must not: parse command lines or draw progress.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures::StreamExt;

use crate::catalogue::{BackendUsage, Cached, Catalogue, Damage, Location, PieceAt, Record, Substitute};
use crate::chunker::ChunkerParams;
use crate::codec::ObjectKind;
use crate::config::{BackendConfig, Config};
use crate::crypto::{self, KdfParams, KeySlot, Keys, MasterKey, Passphrase, PassphraseSource};
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{self, Node, PoolRecord, PruneRecord, Snapshot, Tree, TreePack, TreeRef};
use crate::progress::Progress;
use crate::redundancy::Scheme;
use crate::ring::Ring;
use crate::store::{LocalCache, Piece, Store};

/// An open pool.
pub struct Repository {
    config: Config,
    store: Store,
    pool: PoolRecord,
    unlocked: Option<Unlocked>,
    catalogue: Arc<Catalogue>,
    catalogue_path: PathBuf,
    abort: Arc<AtomicBool>,
    no_lock: AtomicBool,
    unavailable: Vec<(String, String)>,
    cache: Option<Arc<LocalCache>>,
}

/// The lock an operation takes (see `lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Shared, always (backup: it must see every finished prune).
    Shared,
    /// Shared, unless `set_no_lock` (restore, check).
    ReadOnly,
    /// Exclusive (prune).
    Exclusive,
}

/// How `init` went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// A new pool was created on every backend.
    Created(PoolRecord),
    /// The pool existed; these backends were added to it.
    Adopted(PoolRecord, Vec<String>),
}

/// One key slot, as `cuckoo key list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// The slot's id (hex).
    pub id: String,
    /// When it was made, nanoseconds since the epoch.
    pub created_ns: i64,
    /// Its Argon2id costs.
    pub kdf: KdfParams,
    /// True for the slot this session was unlocked with.
    pub current: bool,
}

/// Pool-wide totals for `stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    /// Snapshots in the pool.
    pub snapshots: u64,
    /// Sum of the file bytes of every snapshot.
    pub logical_bytes: u64,
    /// Plain bytes of the distinct objects stored.
    pub unique_bytes: u64,
    /// Bytes the objects take on the backends.
    pub stored_bytes: u64,
    /// Objects stored.
    pub objects: u64,
    /// logical / unique.
    pub dedup_ratio: f64,
    /// unique / (stored / the redundancy's overhead): what compression saves, redundancy
    /// aside (exact while every object was written with the pool's scheme).
    pub compression_ratio: f64,
    /// The redundancy new objects are written with.
    #[serde(serialize_with = "crate::redundancy::serialize_display")]
    pub redundancy: Scheme,
    /// Per backend name.
    pub backends: std::collections::BTreeMap<String, BackendUsage>,
    /// Per backend name, its share of the stored bytes under the pool's redundancy: its
    /// weight share where feasible (see `placement_note`).
    pub target_shares: std::collections::BTreeMap<String, f64>,
    /// What the weights cannot give under the pool's redundancy, if anything.
    pub placement_note: Option<String>,
}

/// How `init` creates a new pool.
#[derive(Debug, Clone, Copy)]
pub struct InitOptions {
    /// Encrypt everything on the backends (the default).
    pub encrypt: bool,
    /// Argon2id costs of the first key slot.
    pub kdf: KdfParams,
    /// Redundancy of new objects; `None` picks `Scheme::default_for` the backend count.
    pub redundancy: Option<Scheme>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { encrypt: true, kdf: KdfParams::default(), redundancy: None }
    }
}

/// Create a pool on the backends of `config`, or add backends that lack the pool record.
/// The passphrase is asked for (as a new one) when creating an encrypted pool, and to
/// unlock an existing encrypted pool before adding backends to it.
pub async fn init(config: &Config, options: &InitOptions, passphrase: &dyn PassphraseSource) -> Result<InitOutcome> {
    let store = Store::open_limited(&config.backends, config.limits)?;
    // Creating or extending a pool needs every backend: a pool record missed now would
    // make a backend look foreign later.
    let raw = store.read_pool_records().await.into_iter().collect::<Result<Vec<_>>>()?;
    let missing: Vec<usize> = (0..raw.len()).filter(|i| raw[*i].is_none()).collect();
    if missing.len() == raw.len() {
        return create(store, options, passphrase).await;
    }
    let (store, _) = unlock(store, &raw, passphrase).await?;
    let record = agreed_record(&store, &raw, None)?.expect("some backend has a record");
    if missing.is_empty() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("pool {} is already initialised on every backend", record.pool_id_hex()),
        ));
    }
    // Key slots first: a backend with the pool record must be able to unlock it.
    for (_, _, bytes) in store.read_key_slots().await? {
        store.write_key_slot(&bytes, &missing).await?;
    }
    store.write_pool_record(&record, &missing).await?;
    let names = missing.iter().map(|i| store.backends()[*i].name.clone()).collect();
    Ok(InitOutcome::Adopted(record, names))
}

async fn create(store: Store, options: &InitOptions, passphrase: &dyn PassphraseSource) -> Result<InitOutcome> {
    let all: Vec<usize> = (0..store.backends().len()).collect();
    let scheme = options.redundancy.unwrap_or_else(|| Scheme::default_for(all.len()));
    scheme.validate()?;
    scheme.check_fits(all.len())?;
    let keys = if options.encrypt {
        options.kdf.validate()?;
        let passphrase = passphrase.passphrase(true)?;
        let master = MasterKey::generate();
        let kdf = options.kdf;
        let (slot, master) = crate::exec::cpu(move || {
            KeySlot::seal(&master, &passphrase, kdf, crate::machine::now_ns()).map(|s| (s, master))
        })
        .await?;
        store.write_key_slot(&slot.encode(), &all).await?;
        Keys::from_master(&master)
    } else {
        Keys::plain()
    };
    let store = store.with_keys(keys);
    let record = PoolRecord {
        pool_id: rand::random(),
        created_ns: crate::machine::now_ns(),
        chunker: ChunkerParams::default(),
        redundancy: scheme,
        placement: Some(crate::ring::PLACEMENT_VERSION),
    };
    store.write_pool_record(&record, &all).await?;
    Ok(InitOutcome::Created(record))
}

/// The master key and the key slot that opened it.
struct Unlocked {
    master: MasterKey,
    slot: ObjectId,
}

/// If the pool records are sealed, ask for the passphrase, open a key slot with it and
/// return the store with the pool's keys.
async fn unlock(
    store: Store,
    raw: &[Option<Vec<u8>>],
    passphrase: &dyn PassphraseSource,
) -> Result<(Store, Option<Unlocked>)> {
    if !raw.iter().flatten().any(|bytes| crate::store::pool_record_is_sealed(bytes)) {
        return Ok((store, None));
    }
    let slots: Vec<(ObjectId, KeySlot)> =
        store.read_key_slots().await?.into_iter().map(|(id, slot, _)| (id, slot)).collect();
    let passphrase = passphrase.passphrase(false)?;
    let (master, slot) = crate::exec::cpu(move || crypto::unlock(&slots, &passphrase)).await?;
    let store = store.with_keys(Keys::from_master(&master));
    Ok((store, Some(Unlocked { master, slot })))
}

/// The pool record all backends that have one agree on, decoded with the store's keys. A
/// record that does not decode is an error, unless `damaged` collects it (opening a pool,
/// where such a backend counts as unavailable).
fn agreed_record(
    store: &Store,
    raw: &[Option<Vec<u8>>],
    mut damaged: Option<&mut Vec<(usize, Error)>>,
) -> Result<Option<PoolRecord>> {
    let mut found: Option<(usize, PoolRecord)> = None;
    let mut first_damage = None;
    for (i, bytes) in raw.iter().enumerate() {
        let Some(bytes) = bytes else { continue };
        let name = &store.backends()[i].name;
        let decoded = crate::store::decode_pool_record(bytes, store.keys())
            .map_err(|e| Error::new(e.kind(), format!("backend '{name}': pool record: {}", e.context())));
        let r = match (decoded, damaged.as_deref_mut()) {
            (Ok(r), _) => r,
            (Err(e), None) => return Err(e),
            (Err(e), Some(list)) => {
                first_damage.get_or_insert_with(|| Error::new(e.kind(), e.context().to_string()));
                list.push((i, e));
                continue;
            }
        };
        match &found {
            None => found = Some((i, r)),
            Some((j, f)) if f.pool_id != r.pool_id => {
                return Err(Error::config(format!(
                    "backends '{}' and '{name}' belong to different pools ({} and {})",
                    store.backends()[*j].name,
                    f.pool_id_hex(),
                    r.pool_id_hex()
                )));
            }
            _ => {}
        }
    }
    match (found, first_damage) {
        (None, Some(e)) => Err(e),
        (found, _) => Ok(found.map(|(_, r)| r)),
    }
}

impl Repository {
    /// The reason `unavailable` gives for a reachable backend without the pool record.
    pub const NO_POOL_RECORD: &str = "has no pool record";

    /// Open the pool of `config`: check every backend is reachable and in the pool, open the
    /// catalogue and bring it up to date with the backends.
    pub async fn open(
        config: Config,
        passphrase: &dyn PassphraseSource,
        progress: &dyn Progress,
    ) -> Result<Repository> {
        let store = Store::open_limited(&config.backends, config.limits)?;
        let results = store.read_pool_records().await;
        let mut unreachable = Vec::new();
        let mut raw = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            raw.push(r.unwrap_or_else(|e| {
                unreachable.push((i, e));
                None
            }));
        }
        if raw.iter().all(Option::is_none) {
            if let Some((_, e)) = unreachable.into_iter().next() {
                return Err(e);
            }
            return Err(Error::not_found("the pool is not initialised: run `cuckoo init`"));
        }
        let (store, unlocked) = unlock(store, &raw, passphrase).await?;
        let pool = agreed_record(&store, &raw, Some(&mut unreachable))?.expect("some backend has a record");
        let down: Vec<usize> = unreachable.iter().map(|(i, _)| *i).collect();
        if unreachable.len() > pool.redundancy.tolerates() {
            return Err(unreachable.remove(0).1);
        }
        // A reachable backend without the record is new (never initialised) or has lost
        // everything (a provider emptied it). Either way it holds nothing of the pool: a
        // redundant pool opens without it, and `repair` (or `init`) gives it the record.
        let bare: Vec<usize> = (0..raw.len()).filter(|i| raw[*i].is_none() && !down.contains(i)).collect();
        if let Some(&i) = bare.first()
            && down.len() + bare.len() > pool.redundancy.tolerates()
        {
            return Err(Error::config(format!(
                "backend '{}' is not part of pool {} (new, or it lost its data): run `cuckoo init` to add it{}",
                store.backends()[i].name,
                pool.pool_id_hex(),
                if pool.redundancy.tolerates() > 0 { ", or `cuckoo repair` to rebuild what it held" } else { "" }
            )));
        }
        let unavailable: Vec<(String, String)> = unreachable
            .iter()
            .map(|(i, e)| (store.backends()[*i].name.clone(), e.to_string()))
            .chain(bare.iter().map(|i| (store.backends()[*i].name.clone(), Self::NO_POOL_RECORD.to_string())))
            .collect();
        pool.chunker.validate()?;
        pool.redundancy.validate()?;
        let store = store.with_scheme(pool.redundancy);
        let catalogue_path = match &config.catalogue {
            Some(p) => p.clone(),
            None => crate::config::data_dir()?.join("catalogues").join(format!("{}.redb", pool.pool_id_hex())),
        };
        // Damage redb meets only past the file's header marks the file, so opening it again
        // sets it aside and rebuilds it, and the command goes on.
        let (catalogue, fresh) = match open_catalogue(&catalogue_path, &store, &pool, progress) {
            Err(e) if crate::catalogue::is_damage(&e) => open_catalogue(&catalogue_path, &store, &pool, progress)?,
            opened => opened?,
        };
        let cache = open_cache(&config, &pool, store.keys(), progress);
        let mut repo = Repository {
            config,
            store,
            pool,
            unlocked,
            catalogue: Arc::new(catalogue),
            catalogue_path,
            abort: Arc::default(),
            no_lock: AtomicBool::new(false),
            unavailable,
            cache,
        };
        match repo.settle_catalogue(fresh, progress).await {
            Err(e) if crate::catalogue::is_damage(&e) => {
                // Closed first: this process still holding the file would be served it again.
                drop(repo.catalogue);
                let (catalogue, fresh) = open_catalogue(&repo.catalogue_path, &repo.store, &repo.pool, progress)?;
                repo.catalogue = Arc::new(catalogue);
                repo.settle_catalogue(fresh, progress).await?;
            }
            settled => settled?,
        }
        Ok(repo)
    }

    /// Bring a just opened catalogue up to date: rebuilt from the backends if new, synced,
    /// and the backends' loads taken from it for placement.
    async fn settle_catalogue(&self, fresh: bool, progress: &dyn Progress) -> Result<()> {
        if fresh {
            self.rebuild_locations(progress).await?;
            self.catalogue.mark_built()?;
        }
        self.sync(progress).await?;
        let (usage, _) = self.catalogue.usage()?;
        self.store.set_loads(usage.iter().filter_map(|(name, u)| Some((self.store.index_of(name)?, u.stored_bytes))));
        Ok(())
    }

    /// Backends that were unreachable or had no pool record when the pool was opened, and
    /// why. Reads go around an unreachable one and writes to the next healthy owners while
    /// it stays down; one without the record (new, or emptied by its provider) holds none of
    /// the pool's objects but takes new ones; `repair` rebuilds what either should hold.
    pub fn unavailable(&self) -> &[(String, String)] {
        &self.unavailable
    }

    /// Every backend that failed requests since the pool was opened, how and how often,
    /// with whether running the command again can help: for a command to say at its end.
    pub fn backend_troubles(&self) -> Vec<crate::store::BackendTrouble> {
        self.store.troubles()
    }

    /// The same, as a handle that outlives the repository.
    pub fn trouble_log(&self) -> crate::store::TroubleLog {
        self.store.trouble_log()
    }

    /// True if the pool is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.store.keys().is_encrypted()
    }

    fn unlocked(&self) -> Result<&Unlocked> {
        self.unlocked.as_ref().ok_or_else(|| Error::config("the pool is not encrypted: it has no keys"))
    }

    /// The pool's key slots, marking the one this session was unlocked with.
    pub async fn key_slots(&self) -> Result<Vec<KeyInfo>> {
        let current = self.unlocked()?.slot;
        let mut slots: Vec<KeyInfo> = self
            .store
            .read_key_slots()
            .await?
            .into_iter()
            .map(|(id, slot, _)| KeyInfo {
                id: id.to_hex(),
                created_ns: slot.created_ns,
                kdf: slot.kdf,
                current: id == current,
            })
            .collect();
        slots.sort_by_key(|k| k.created_ns);
        Ok(slots)
    }

    /// Add a key slot that opens the pool with `passphrase`; returns its id.
    pub async fn add_key(&self, passphrase: Passphrase, kdf: KdfParams) -> Result<ObjectId> {
        let master = self.unlocked()?.master.clone();
        let slot = crate::exec::cpu(move || KeySlot::seal(&master, &passphrase, kdf, crate::machine::now_ns())).await?;
        let all: Vec<usize> = (0..self.store.backends().len()).collect();
        self.store.write_key_slot(&slot.encode(), &all).await
    }

    /// Remove the key slot whose id starts with `spec`. The slot this session was unlocked
    /// with is kept (use `change_passphrase`), so a pool can never lose its last way in.
    pub async fn remove_key(&self, spec: &str) -> Result<ObjectId> {
        let current = self.unlocked()?.slot;
        let spec = spec.to_ascii_lowercase();
        let slots = self.store.read_key_slots().await?;
        let mut matches =
            slots.iter().map(|(id, _, _)| *id).filter(|id| !spec.is_empty() && id.to_hex().starts_with(&spec));
        let id = match (matches.next(), matches.next()) {
            (Some(id), None) => id,
            (Some(_), Some(_)) => return Err(Error::config(format!("key id '{spec}' is ambiguous: give more digits"))),
            _ => return Err(Error::not_found(format!("no key slot '{spec}'"))),
        };
        if id == current {
            return Err(Error::config(
                "that is the key slot this passphrase opened: remove it with another passphrase, or use `key passwd`",
            ));
        }
        self.store.delete_key_slot(&id).await?;
        Ok(id)
    }

    /// Replace the passphrase of the key slot in use: the new slot is written to every
    /// backend before the old one is deleted, so an interruption leaves both usable.
    pub async fn change_passphrase(&self, passphrase: Passphrase, kdf: KdfParams) -> Result<ObjectId> {
        let old = self.unlocked()?.slot;
        let new = self.add_key(passphrase, kdf).await?;
        self.store.delete_key_slot(&old).await?;
        Ok(new)
    }

    /// The config the pool was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The pool record.
    pub fn pool(&self) -> &PoolRecord {
        &self.pool
    }

    /// The pool's backends, in config order (with their health and fault injection).
    pub fn backends(&self) -> &[crate::backend::Backend] {
        self.store.backends()
    }

    /// The object store over the backends. Not API: for the crate's own tests.
    #[doc(hidden)]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The catalogue file in use.
    pub fn catalogue_path(&self) -> &std::path::Path {
        &self.catalogue_path
    }

    /// Use `flag` as this repository's interrupt flag (see `interrupt_flag`), so a front end
    /// can stop work it starts through a library function that opens the repository.
    pub fn with_interrupt_flag(mut self, flag: Arc<AtomicBool>) -> Repository {
        self.abort = flag;
        self
    }

    /// Setting this flag stops a running backup or restore at the next safe point.
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        self.abort.clone()
    }

    /// Record where every chunk and tree pack is, by listing the backends (a new catalogue
    /// knows nothing). Backends that cannot be listed are skipped if the pool's redundancy
    /// tolerates it.
    async fn rebuild_locations(&self, progress: &dyn Progress) -> Result<()> {
        let mut found: HashMap<(ObjectKind, ObjectId), Vec<Piece>> = HashMap::new();
        let mut failed = Vec::new();
        for listed in self.store.list_all_pieces().await {
            match listed {
                Ok(list) => {
                    for (kind, id, piece) in list {
                        found.entry((kind, id)).or_default().push(piece);
                    }
                }
                Err(e) => failed.push(e),
            }
        }
        if failed.len() > self.store.scheme().tolerates() {
            return Err(failed.remove(0));
        }
        progress.begin("rebuild catalogue", Some(found.len() as u64), None);
        let store = &self.store;
        let mut records = futures::stream::iter(found)
            .map(|((kind, id), pieces)| async move {
                let plain_len = store.plain_len_of(kind, &id, &pieces).await.unwrap_or(0);
                Ok::<_, Error>(Record::Located { kind, id, location: location_of(store, plain_len, &pieces) })
            })
            .buffer_unordered(32);
        let mut batch = Vec::new();
        while let Some(r) = records.next().await {
            batch.push(r?);
            progress.advance(1, 0);
            if batch.len() >= 1024 {
                self.catalogue.record(&std::mem::take(&mut batch))?;
            }
        }
        self.catalogue.record(&batch)?;
        progress.end();
        Ok(())
    }

    /// Bring the catalogue up to date with snapshots other machines (or a lost catalogue)
    /// put on the backends: fetch each unknown snapshot and the trees it needs.
    pub async fn sync(&self, progress: &dyn Progress) -> Result<usize> {
        let (remote, forgotten) = futures::try_join!(self.store.list_snapshots(), self.store.forgotten_snapshots())?;
        let remote: std::collections::BTreeSet<ObjectId> = remote.difference(&forgotten).copied().collect();
        self.heal_snapshots(&remote, progress).await?;
        // Snapshots forgotten elsewhere: on no backend any more. One another process
        // committed since the listing is in the catalogue but was not listed, so what looks
        // forgotten is listed again: a snapshot is stored before the catalogue learns of it.
        let unlisted: Vec<ObjectId> =
            self.catalogue.snapshots()?.into_iter().map(|(id, _)| id).filter(|id| !remote.contains(id)).collect();
        if !unlisted.is_empty() {
            let now: std::collections::BTreeSet<ObjectId> =
                self.store.list_snapshots().await?.difference(&forgotten).copied().collect();
            for id in unlisted.iter().filter(|id| !now.contains(id)) {
                self.catalogue.remove_snapshot(id)?;
            }
        }
        self.apply_prune_records().await?;
        let reader = self.catalogue.reader()?;
        let missing: Vec<ObjectId> =
            remote.into_iter().filter(|id| !reader.has_snapshot(id).unwrap_or(false)).collect();
        drop(reader);
        if missing.is_empty() {
            return Ok(0);
        }
        progress.begin("sync snapshots", Some(missing.len() as u64), None);
        self.catalogue.clear_staged()?;
        for id in &missing {
            let body = self.store.get_everywhere(ObjectKind::Snapshot, id).await?;
            let snapshot: Snapshot = model::from_body("snapshot", &body)?;
            self.fetch_trees(Self::root(&snapshot)).await?;
            self.catalogue.commit_staged(id, &snapshot)?;
            progress.advance(1, 0);
        }
        progress.end();
        Ok(missing.len())
    }

    /// Replace catalogue records of snapshots that do not match their ids with the verified
    /// ones from the backends (dropping those no backend has any more), so that no listing,
    /// restore or prune ever works from a damaged record.
    async fn heal_snapshots(
        &self,
        remote: &std::collections::BTreeSet<ObjectId>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let damaged: Vec<Damage> = self
            .catalogue
            .damaged_snapshots()?
            .into_iter()
            .map(|id| Damage { kind: ObjectKind::Snapshot, id })
            .collect();
        let mut unreplaced = Vec::new();
        for d in damaged {
            progress.warn(&format!(
                "the catalogue's record of snapshot {} was damaged; {}",
                d.id.short(),
                if remote.contains(&d.id) { "replaced from the backends" } else { "dropped (no backend has it)" }
            ));
            if remote.contains(&d.id) {
                let body = self.store.get_everywhere(ObjectKind::Snapshot, &d.id).await?;
                self.catalogue.replace_damaged(d.kind, &d.id, &body)?;
            } else {
                unreplaced.push(d);
            }
        }
        if !unreplaced.is_empty() {
            self.catalogue.drop_damaged(&unreplaced)?;
        }
        Ok(())
    }

    /// Drop the catalogue's trees that still do not match their ids (those no snapshot
    /// reaches: `tree` replaces the others as it meets them) and recount references.
    pub(crate) fn drop_damaged_trees(&self) -> Result<()> {
        let damaged = self.catalogue.damaged()?;
        if !damaged.is_empty() {
            self.catalogue.drop_damaged(&damaged)?;
        }
        Ok(())
    }

    /// Forget the objects that prunes (here or elsewhere) deleted, so no backup refers to them.
    async fn apply_prune_records(&self) -> Result<()> {
        for id in self.store.list_everywhere(crate::store::PRUNE_PREFIX).await? {
            if self.catalogue.prune_applied(&id)? {
                continue;
            }
            let body = self.store.get_everywhere(ObjectKind::Prune, &id).await?;
            let record: PruneRecord = model::from_body("prune record", &body)?;
            self.catalogue.apply_prune(&id, &record.deleted)?;
        }
        Ok(())
    }

    /// Run `work` under a lock on the pool (see `lock`); the catalogue is synced once the
    /// lock is held, so it reflects every prune that finished before.
    pub(crate) async fn locked<T>(
        &self,
        operation: &str,
        need: Need,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        if need == Need::ReadOnly && self.no_lock.load(std::sync::atomic::Ordering::Relaxed) {
            return work.await;
        }
        if need != Need::ReadOnly {
            self.writable()?;
        }
        // Losing the lock (no refresh for too long) stops the operation, as Ctrl-C would.
        let lock =
            crate::lock::acquire_with(&self.store, operation, need == Need::Exclusive, self.abort.clone()).await?;
        let result = match self.sync(&crate::progress::NoProgress).await {
            Ok(_) => work.await,
            Err(e) => Err(e),
        };
        let lost = lock.lost();
        let released = lock.release().await;
        if lost {
            return Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "{operation}: its lock on the backends could not be refreshed for {} minutes, so a prune \
                     elsewhere may have run meanwhile; it was stopped if still running. Check that the \
                     backends are reachable, then run `cuckoo check`",
                    crate::lock::STALE.as_secs() / 60
                ),
            ));
        }
        let value = result?;
        released?;
        Ok(value)
    }

    /// Whether this build may write to the pool: not when the pool records a placement
    /// version newer than this build's, whose writers spread objects by rules this build
    /// does not know. Reading needs no rule: readers find objects wherever they are.
    pub fn writable(&self) -> Result<()> {
        match self.pool.placement {
            Some(v) if v > crate::ring::PLACEMENT_VERSION => Err(Error::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "pool {} places objects by placement version {v}, newer than this build's ({}): this \
                     build can read the pool but not write to it; upgrade cuckoo to write",
                    self.pool.pool_id_hex(),
                    crate::ring::PLACEMENT_VERSION
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Run restore and check without a shared lock: for backends this user may only read.
    /// A prune running meanwhile can then make them fail, never corrupt data. Backups always
    /// lock: unlocked, a prune could delete what they are about to reference.
    pub fn set_no_lock(&self, no_lock: bool) {
        self.no_lock.store(no_lock, std::sync::atomic::Ordering::Relaxed);
    }

    /// Chunk and tree pack pieces on backend `index`, by listing it.
    pub async fn pieces_on(&self, index: usize) -> Result<usize> {
        let (chunks, trees) = futures::join!(
            self.store.list_pieces(index, ObjectKind::Chunk),
            self.store.list_pieces(index, ObjectKind::Tree)
        );
        Ok(chunks?.len() + trees?.len())
    }

    /// Remove stale locks (or all, with `all`) left by processes that died.
    pub async fn unlock(&self, all: bool) -> Result<Vec<crate::lock::Found>> {
        crate::lock::remove(&self.store, all).await
    }

    pub(crate) fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    pub(crate) fn catalogue_arc(&self) -> Arc<Catalogue> {
        self.catalogue.clone()
    }

    /// Uploads one writer keeps in flight.
    pub(crate) fn upload_concurrency(&self) -> usize {
        upload_concurrency(&self.config.backends)
    }

    /// Take a shared lock for a long-lived holder (the live drive) and sync under it; the
    /// holder must `release` it. Prune waits until then.
    pub(crate) async fn lock_shared(&self, operation: &str) -> Result<crate::lock::Lock> {
        self.writable()?;
        // Its own stop flag: a long-lived holder checks `Lock::lost` itself, and a lost lock
        // must not interrupt every other operation of this repository.
        let stop = Arc::new(AtomicBool::new(false));
        let lock = crate::lock::acquire_with(&self.store, operation, false, stop).await?;
        if let Err(e) = self.sync(&crate::progress::NoProgress).await {
            let _ = lock.release().await;
            return Err(e);
        }
        Ok(lock)
    }

    /// Stage the tree packs holding every tree below `root` that the catalogue lacks.
    async fn fetch_trees(&self, root: TreeRef) -> Result<()> {
        let mut stack = vec![root];
        let mut packs: HashMap<ObjectId, TreePack> = HashMap::new();
        let reader = self.catalogue.reader()?;
        while let Some(tref) = stack.pop() {
            if reader.has_tree(&tref.id)? {
                continue; // its whole subtree is recorded
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = packs.entry(tref.pack) {
                let hint = self.location_hint(&tref.pack);
                let (body, pieces) = self.store.get_located(ObjectKind::Tree, &tref.pack, &hint).await?;
                let pack: TreePack = model::from_body("tree pack", &body)?;
                let location = location_of(&self.store, body.len() as u64, &pieces);
                self.catalogue.record(&[Record::TreePack { id: tref.pack, location, body }])?;
                slot.insert(pack);
            }
            let tree = Tree::from_body(packs[&tref.pack].body(&tref.id, self.store.keys())?)?;
            stack.extend(tree.entries.iter().filter_map(|n| n.subtree(&tref.pack)));
        }
        Ok(())
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(ObjectId, Snapshot)>> {
        self.catalogue.snapshots()
    }

    /// Forget snapshots: their records leave every backend and the catalogue. No data is
    /// deleted (that is prune's job), so this is safe beside running backups.
    ///
    /// A backend that keeps its copies (read-only, unreachable) is returned with how many
    /// and why; a forget record on the other backends keeps those copies forgotten on every
    /// machine, and `repair` deletes them once the backend lets it. If the record itself
    /// cannot be stored, nothing is forgotten and the error says so.
    pub async fn forget(&self, ids: &[ObjectId]) -> Result<Vec<crate::store::LeftCopies>> {
        let left = self.store.forget_snapshots(ids).await?;
        for id in ids {
            self.catalogue.remove_snapshot(id)?;
        }
        Ok(left)
    }

    /// Resolve `latest`, a full id or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(ObjectId, Snapshot)> {
        self.find_snapshot_matching(spec, &crate::model::SnapshotFilter::default())
    }

    /// Like `find_snapshot`, where `latest` is the newest snapshot `filter` passes (an id
    /// names its snapshot whatever the filter, as in restic).
    pub fn find_snapshot_matching(
        &self,
        spec: &str,
        filter: &crate::model::SnapshotFilter,
    ) -> Result<(ObjectId, Snapshot)> {
        let all = self.snapshots()?;
        if spec == "latest" {
            let none = if all.is_empty() { "the pool has no snapshots yet" } else { "no snapshot matches the filter" };
            return all.into_iter().rev().find(|(_, s)| filter.matches(s)).ok_or_else(|| Error::not_found(none));
        }
        let spec_l = spec.to_ascii_lowercase();
        let mut matches = all.into_iter().filter(|(id, _)| id.to_hex().starts_with(&spec_l));
        match (matches.next(), matches.next()) {
            (Some(m), None) if !spec.is_empty() => Ok(m),
            (Some(_), Some(_)) => Err(Error::config(format!("snapshot id '{spec}' is ambiguous: give more digits"))),
            _ => Err(Error::not_found(format!("no snapshot '{spec}'"))),
        }
    }

    /// A tree, from the catalogue or else the backends; either way checked against its id.
    /// A damaged catalogue entry is replaced by the verified body from the backends.
    pub async fn tree(&self, tref: &TreeRef) -> Result<Tree> {
        let cached = self.catalogue.reader()?.tree(&tref.id)?;
        if let Cached::Verified(tree) = cached {
            return Ok(tree);
        }
        let body = self.store.get(ObjectKind::Tree, &tref.pack, &self.location_hint(&tref.pack)).await?;
        let pack: TreePack = model::from_body("tree pack", &body)?;
        let body = pack.body(&tref.id, self.store.keys())?;
        // Mended silently: the caller gets the verified tree either way, and `check` reports
        // damage it finds.
        if cached == Cached::Damaged {
            self.catalogue.replace_damaged(ObjectKind::Tree, &tref.id, body)?;
        }
        Tree::from_body(body)
    }

    /// The root tree of a snapshot.
    pub fn root(snapshot: &Snapshot) -> TreeRef {
        TreeRef { id: snapshot.tree, pack: snapshot.tree_pack }
    }

    /// The node at `path` (slash-separated, relative to the snapshot root), with the tree
    /// that lists it; `None` for the root itself.
    pub async fn lookup(&self, snapshot: &Snapshot, path: &str) -> Result<Option<(Node, TreeRef)>> {
        let mut parent = Self::root(snapshot);
        let mut found: Option<Node> = None;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if let Some(node) = &found {
                parent = node
                    .subtree(&parent.pack)
                    .ok_or_else(|| Error::not_found(format!("'{path}': a component is not a directory")))?;
            }
            let tree = self.tree(&parent).await?;
            let node = tree.get(part.as_bytes()).cloned();
            found = Some(node.ok_or_else(|| Error::not_found(format!("no '{path}' in the snapshot")))?);
        }
        Ok(found.map(|n| (n, parent)))
    }

    /// Visit every entry below `path` in a snapshot, depth-first in name order, with its
    /// slash-separated path.
    pub async fn walk(&self, snapshot: &Snapshot, path: &str, visit: &mut dyn FnMut(&str, &Node)) -> Result<()> {
        let base = path.trim_matches('/').to_string();
        let start = match self.lookup(snapshot, &base).await? {
            None => Self::root(snapshot),
            Some((node, parent)) => {
                visit(&base, &node);
                match node.subtree(&parent.pack) {
                    Some(t) => t,
                    None => return Ok(()),
                }
            }
        };
        let mut stack = vec![(base, start)];
        while let Some((prefix, tref)) = stack.pop() {
            let tree = self.tree(&tref).await?;
            let mut subdirs = Vec::new();
            for node in &tree.entries {
                let name = String::from_utf8_lossy(&node.name);
                let p = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
                visit(&p, node);
                if let Some(sub) = node.subtree(&tref.pack) {
                    subdirs.push((p, sub));
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// The pool's local chunk cache on this machine, unless it is off.
    pub fn local_cache(&self) -> Option<&Arc<LocalCache>> {
        self.cache.as_ref()
    }

    /// A chunk, verified: from the local cache if it holds it, else from the backends. With
    /// `keep`, one fetched from the backends is cached for the next read (readers of the
    /// drive and `cat`; restores of whole trees would only push out what users read).
    pub(crate) async fn chunk(&self, id: ObjectId, keep: bool) -> Result<Arc<Vec<u8>>> {
        if let Some(cache) = self.cache.clone() {
            let cached = tokio::task::spawn_blocking(move || cache.get(&id)).await;
            if let Ok(Some(body)) = cached {
                return Ok(Arc::new(body));
            }
        }
        self.chunk_from_backends(id, keep).await
    }

    /// The segments of chunk `id` that hold its plain bytes `range`, read from the backends
    /// without the rest of the chunk (`Store::read_chunk_range`); `None` where that cannot
    /// be done, and the whole chunk must be read.
    pub(crate) async fn chunk_range(
        &self,
        id: ObjectId,
        range: std::ops::Range<u64>,
    ) -> Option<crate::store::Segments> {
        // The plain length places the segments before the table is read; without the
        // catalogue's word for it, read the chunk whole.
        let loc = self.catalogue.reader().and_then(|r| r.location(&id)).ok()??;
        self.store.read_chunk_range(&id, &pieces_of(&self.store, &loc), loc.plain_len, range).await
    }

    /// A chunk from the backends, verified; with `keep`, handed to the local cache.
    pub(crate) async fn chunk_from_backends(&self, id: ObjectId, keep: bool) -> Result<Arc<Vec<u8>>> {
        let body = Arc::new(self.store.get(ObjectKind::Chunk, &id, &self.location_hint(&id)).await?);
        if keep && let Some(cache) = &self.cache {
            cache.put(id, body.clone());
        }
        Ok(body)
    }

    /// Where the catalogue says object `id`'s pieces are (empty if it does not know).
    pub(crate) fn location_hint(&self, id: &ObjectId) -> Vec<Piece> {
        match self.catalogue.reader().and_then(|r| r.location(id)) {
            Ok(Some(loc)) => pieces_of(&self.store, &loc),
            _ => Vec::new(),
        }
    }

    /// Totals over the whole pool.
    pub fn stats(&self) -> Result<Stats> {
        let snapshots = self.snapshots()?;
        let (backends, totals) = self.catalogue.usage()?;
        let logical_bytes = snapshots.iter().map(|(_, s)| s.summary.bytes).sum();
        let once = (totals.stored_bytes as f64 / self.pool.redundancy.overhead()) as u64;
        Ok(Stats {
            snapshots: snapshots.len() as u64,
            logical_bytes,
            objects: totals.objects,
            unique_bytes: totals.plain_bytes,
            stored_bytes: totals.stored_bytes,
            dedup_ratio: ratio(logical_bytes, totals.plain_bytes),
            compression_ratio: ratio(totals.plain_bytes, once),
            redundancy: self.pool.redundancy,
            backends,
            target_shares: self.config.backends.iter().map(|b| b.name.clone()).zip(self.store.shares()).collect(),
            placement_note: placement_note(&self.config.backends, self.pool.redundancy),
        })
    }

    /// Objects and bytes per configured backend (zero for ones holding nothing yet).
    pub fn usage(&self) -> Result<Vec<(BackendConfig, BackendUsage)>> {
        let (usage, _) = self.catalogue.usage()?;
        Ok(self.config.backends.iter().map(|b| (b.clone(), usage.get(&b.name).cloned().unwrap_or_default())).collect())
    }
}

/// The catalogue file at `path` for `pool`, said aloud when it had to be set aside or
/// replaced by a temporary copy; also whether it is new (to be rebuilt from the backends).
fn open_catalogue(
    path: &std::path::Path,
    store: &Store,
    pool: &PoolRecord,
    progress: &dyn Progress,
) -> Result<(Catalogue, bool)> {
    let (catalogue, fresh, aside) = Catalogue::open_or_set_aside(path, store.keys().clone())?;
    match aside {
        Some(Substitute::SetAside(aside)) => progress.warn(&format!(
            "catalogue {} was damaged: moved to {} and rebuilt from the backends",
            path.display(),
            aside.display()
        )),
        Some(Substitute::Temporary(why)) => progress.warn(&why),
        None => {}
    }
    match catalogue.pool_id()? {
        Some(id) if id != pool.pool_id => {
            return Err(Error::config(format!(
                "catalogue {} belongs to another pool; point `catalogue` elsewhere or delete it",
                path.display()
            )));
        }
        Some(_) => {}
        None => catalogue.set_pool_id(&pool.pool_id)?,
    }
    Ok((catalogue, fresh))
}

/// The local chunk cache `config` asks for. One that cannot be made (a read-only home, say)
/// is a warning, not a failure: reads then all go to the backends.
fn open_cache(config: &Config, pool: &PoolRecord, keys: &Keys, progress: &dyn Progress) -> Option<Arc<LocalCache>> {
    let opened = config.cache.dir_of(&pool.pool_id_hex()).and_then(|dir| {
        let Some(dir) = dir else { return Ok(None) };
        std::fs::create_dir_all(&dir).map_err(|e| Error::from_io(format!("cannot create {}", dir.display()), e))?;
        let limit = config.cache.size.unwrap_or_else(|| crate::store::default_cache_limit(&dir));
        LocalCache::open(&dir, keys.clone(), limit).map(|c| Some(Arc::new(c)))
    });
    opened.unwrap_or_else(|e| {
        progress.warn(&format!("no local chunk cache: {e}"));
        None
    })
}

/// What the weights of `backends` cannot give under `scheme`, in words, or `None` if every
/// backend gets its weight share. A backend can hold at most one piece of each object, so
/// with n pieces per object none holds more than 1/n of the stored bytes; one weighted above
/// that holds exactly 1/n and the others share the rest by weight.
pub fn placement_note(backends: &[BackendConfig], scheme: Scheme) -> Option<String> {
    let ring = Ring::new(backends.iter().map(|b| (b.name.as_str(), b.weight))).ok()?;
    let pieces = scheme.pieces();
    if ring.feasible(pieces) {
        return None;
    }
    let total: f64 = backends.iter().map(|b| b.weight).sum();
    let shares = ring.shares(pieces);
    let capped: Vec<String> = backends
        .iter()
        .zip(&shares)
        .filter(|(b, s)| b.weight / total > **s + 1e-9)
        .map(|(b, s)| format!("'{}' gets {:.1} % instead of {:.1} %", b.name, 100.0 * s, 100.0 * b.weight / total))
        .collect();
    Some(format!(
        "with {scheme} each object has {pieces} pieces on distinct backends, so no backend can hold more than {:.1} % of the stored bytes: {}; the others share the rest by weight",
        100.0 / pieces as f64,
        capped.join(", ")
    ))
}

/// The catalogue's record of pieces stored by `store`.
pub(crate) fn location_of(store: &Store, plain_len: u64, pieces: &[Piece]) -> Location {
    let pieces = pieces
        .iter()
        .map(|p| PieceAt {
            backend: store.backends()[p.backend].name.clone(),
            shard: p.shard,
            stored_len: p.stored_len,
        })
        .collect();
    Location { plain_len, pieces }
}

/// The pieces of a catalogue location that are on backends of this config.
pub(crate) fn pieces_of(store: &Store, loc: &Location) -> Vec<Piece> {
    loc.pieces
        .iter()
        .filter_map(|p| Some(Piece { backend: store.index_of(&p.backend)?, shard: p.shard, stored_len: p.stored_len }))
        .collect()
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Uploads in flight for a backup: enough to keep every backend busy, few enough that
/// chunks waiting in memory stay in the tens of MiB.
fn upload_concurrency(backends: &[BackendConfig]) -> usize {
    backends.iter().map(|b| b.concurrency).sum::<usize>().clamp(4, 64)
}
