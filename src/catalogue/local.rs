//! The catalogue's redb file: the table layout and every read and write of it. Only the
//! process holding the file opens it (see `mod.rs` for how the others reach it).
//!
//! Every change is one redb transaction, so a kill at any instant leaves it consistent, and
//! every change is idempotent, so a peer may send it again after the holder died mid-way.
//! Nothing read from the file is trusted: redb checks its own pages, not the values in them,
//! so every tree and snapshot body handed out is first checked against its id (BLAKE3,
//! keyed in an encrypted pool). A body that fails is reported as `Damaged`, never used.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::guard::{self, Db};
use super::{BackendUsage, Cached, Damage, Location, PieceAt, Record, RefcountMismatch, Session, Totals};
use crate::codec::ObjectKind;
use crate::crypto::Keys;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{self, NodeKind, Snapshot, Tree, TreePack};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SNAPSHOTS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("snapshots");
const TREES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("trees");
/// (session, pack id) -> tree pack stored by a backup or sync that has not committed its
/// snapshot yet. Their trees move to TREES in the commit's transaction, so a tree in TREES
/// always has its whole subtree stored. Keyed by session so that runs in several processes
/// each publish and clear only their own.
const STAGED: TableDefinition<(u64, [u8; 32]), &[u8]> = TableDefinition::new("staged_by_session");
/// The unkeyed table of earlier builds; dropped when met.
const OLD_STAGED: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("staged_tree_packs");
/// id -> (kind, plain length, pieces): each piece 11 bytes, the backend number (u16 LE), 1
/// for a shard or 0 for a whole copy, and its stored length (u64 LE).
const OBJECTS: TableDefinition<[u8; 32], (u8, u64, &[u8])> = TableDefinition::new("objects");
/// id -> number of distinct trees (or snapshots, for root trees) that reference it.
const REFS: TableDefinition<[u8; 32], u64> = TableDefinition::new("refs");
/// Prune records (from any machine) whose deletions this catalogue has applied.
const APPLIED_PRUNES: TableDefinition<[u8; 32], ()> = TableDefinition::new("applied_prunes");
/// backend name -> backend number used in OBJECTS (config order may change; names don't).
const BACKENDS: TableDefinition<&str, u16> = TableDefinition::new("backends");

const SCHEMA_KEY: &str = "schema";
/// Schema 1 kept one location per object; it is rebuilt from the backends when met.
const SCHEMA: &[u8] = b"2";
const OLD_SCHEMAS: [&[u8]; 1] = [b"1"];
const POOL_KEY: &str = "pool_id";
/// Present from creation until the first rebuild from the backends has finished, so a
/// rebuild cut short is redone by the next open.
const UNBUILT_KEY: &str = "unbuilt";

/// The catalogue file, opened by this process.
pub(super) struct Local {
    db: Db,
    /// Names bodies as the pool does, to check every body read back against its id.
    keys: Keys,
}

/// Bytes of catalogue pages kept in memory.
const CACHE_BYTES: usize = 16 << 20;

impl Local {
    /// Open or create the catalogue at `path` for a pool whose objects `keys` name; the flag
    /// is true until a rebuild from the backends has been marked done (`mark_built`).
    pub fn open(path: &Path, keys: Keys) -> Result<(Local, bool)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| unwritable(path, e))?;
        }
        // redb would cache up to 1 GiB of pages; the OS keeps the file in its page cache
        // anyway, and restores and backups touch each page about once.
        let db = redb::Builder::new().set_cache_size(CACHE_BYTES).create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::new(
                ErrorKind::Locked,
                format!(
                    "catalogue {} is in use by another cuckoo process on this machine (a running `cuckoo mount`, backup or restore); wait for it or unmount",
                    path.display()
                ),
            ),
            redb::DatabaseError::Storage(redb::StorageError::Io(e)) if refuses_writes(&e) => unwritable(path, e),
            e => Error::new(ErrorKind::Catalogue, format!("cannot open catalogue {}", path.display())).with_source(e),
        })?;
        let txn = db.begin_write()?;
        let fresh = {
            let mut meta = txn.open_table(META)?;
            let schema = meta.get(SCHEMA_KEY)?.map(|v| v.value().to_vec());
            match schema.as_deref() {
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA)?;
                    meta.insert(UNBUILT_KEY, &[][..])?;
                    true
                }
                Some(SCHEMA) => meta.get(UNBUILT_KEY)?.is_some(),
                Some(old) if OLD_SCHEMAS.contains(&old) => {
                    // A cache: drop it and let the caller rebuild it from the backends.
                    drop(meta);
                    for t in [SNAPSHOTS, TREES, OLD_STAGED] {
                        txn.delete_table(t)?;
                    }
                    txn.delete_table(REFS)?;
                    txn.delete_table(BACKENDS)?;
                    txn.delete_table(APPLIED_PRUNES)?;
                    txn.delete_table(redb::TableDefinition::<[u8; 32], (u8, u16, u64, u64)>::new("objects"))?;
                    let mut meta = txn.open_table(META)?;
                    meta.insert(SCHEMA_KEY, SCHEMA)?;
                    meta.insert(UNBUILT_KEY, &[][..])?;
                    true
                }
                Some(other) => {
                    return Err(Error::new(
                        ErrorKind::UnsupportedVersion,
                        format!(
                            "catalogue schema {:?} is newer than this build; delete it to rebuild",
                            String::from_utf8_lossy(other)
                        ),
                    ));
                }
            }
        };
        for t in [SNAPSHOTS, TREES] {
            txn.open_table(t)?;
        }
        txn.delete_table(OLD_STAGED)?;
        sweep_dead_sessions(&mut txn.open_table(STAGED)?)?;
        txn.open_table(OBJECTS)?;
        txn.open_table(REFS)?;
        txn.open_table(BACKENDS)?;
        txn.open_table(APPLIED_PRUNES)?;
        txn.commit()?;
        Ok((Local { db: Db::new(db, path), keys }, fresh))
    }

    /// Open the catalogue at `path` like `open`; a file too damaged to open (redb fails
    /// or panics on it) is moved aside and a new one created, since everything in it can
    /// be rebuilt from the backends. Also returns where the damaged file went.
    /// A file an earlier call found damaged (`guard`) is set aside too, once this process
    /// can take it (one another process holds is left to it).
    pub fn open_or_set_aside(path: &Path, keys: Keys) -> Result<(Local, bool, Option<PathBuf>)> {
        let marked = if path.exists() { guard::marked(path) } else { None };
        let damage = match (guard::run(path, || Local::open(path, keys.clone())), marked) {
            (Ok((catalogue, fresh)), None) => {
                guard::clear(path);
                return Ok((catalogue, fresh, None));
            }
            (Ok((catalogue, _)), Some(why)) => {
                drop(catalogue);
                why
            }
            // A file this process may not write (`ReadOnly`), or one another holds
            // (`Locked`), is not damaged: no rename.
            (Err(e), _) if e.kind() != ErrorKind::Catalogue => return Err(e),
            (Err(e), _) => e.to_string(),
        };
        let aside = path.with_extension(format!("damaged-{}", std::process::id()));
        std::fs::rename(path, &aside).map_err(|e| {
            Error::io(format!("catalogue {} is damaged ({damage}) and cannot be moved aside", path.display()), e)
        })?;
        guard::clear(path);
        let (catalogue, fresh) = Local::open(path, keys)?;
        Ok((catalogue, fresh, Some(aside)))
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Run one call on the file, its damage caught (`guard::guard`).
    pub fn guard<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        guard::run(self.path(), f)
    }

    /// Note that the rebuild from the backends has finished.
    pub fn mark_built(&self) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.remove(UNBUILT_KEY)?;
        txn.commit()?;
        Ok(())
    }

    /// The pool this catalogue describes, once set.
    pub fn pool_id(&self) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(META)?.get(POOL_KEY)?.map(|v| v.value().to_vec()))
    }

    /// Bind the catalogue to a pool.
    pub fn set_pool_id(&self, id: &[u8]) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(POOL_KEY, id)?;
        txn.commit()?;
        Ok(())
    }

    /// A consistent read view, for the many lookups of one backup or restore.
    pub fn reader(&self) -> Result<LocalReader> {
        Ok(LocalReader { txn: self.db.begin_read()?, keys: self.keys.clone(), path: self.path().to_path_buf() })
    }

    /// Record stored objects in one transaction. A tree recorded for the first time adds one
    /// reference to each distinct chunk and subtree it names.
    pub fn record(&self, session: Session, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut objects = txn.open_table(OBJECTS)?;
            let mut staged = txn.open_table(STAGED)?;
            let mut backends = txn.open_table(BACKENDS)?;
            for record in records {
                let (kind, id, location) = match record {
                    Record::Chunk { id, location } => (ObjectKind::Chunk, id, location),
                    Record::Located { kind, id, location } => (*kind, id, location),
                    Record::TreePack { id, location, body } => {
                        staged.insert((session.0, id.0), body.as_slice())?;
                        (ObjectKind::Tree, id, location)
                    }
                };
                let pieces = encode_pieces(&mut backends, &location.pieces)?;
                objects.insert(id.0, (kind as u8, location.plain_len, pieces.as_slice()))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Forget the staged trees of this session's run that never committed (their objects
    /// stay stored and are found again by content).
    pub fn clear_staged(&self, session: Session) -> Result<()> {
        let txn = self.db.begin_write()?;
        take_staged(&mut txn.open_table(STAGED)?, session)?;
        txn.commit()?;
        Ok(())
    }

    /// In one transaction: publish the staged trees (each first-time tree adds one reference
    /// to every distinct chunk and subtree it names) and record the snapshot.
    pub fn commit_staged(&self, session: Session, id: &ObjectId, snapshot: &Snapshot) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let packs = take_staged(&mut txn.open_table(STAGED)?, session)?;
            let mut trees = txn.open_table(TREES)?;
            let mut refs = txn.open_table(REFS)?;
            for body in packs {
                let pack: TreePack = model::from_body("tree pack", &body)?;
                for (id, body) in &pack.trees {
                    if trees.get(id.0)?.is_none() {
                        trees.insert(id.0, body.as_slice())?;
                        let tree = Tree::from_body(body)?;
                        for child in children(&tree) {
                            increment(&mut refs, &child)?;
                        }
                    }
                }
            }
            let mut snaps = txn.open_table(SNAPSHOTS)?;
            if snaps.get(id.0)?.is_none() {
                snaps.insert(id.0, model::to_body(snapshot).as_slice())?;
                increment(&mut refs, &snapshot.tree)?;
                increment(&mut refs, &snapshot.tree_pack)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Drop a snapshot record and its references to its root tree and pack. The trees stay:
    /// they may be shared, and their data goes only by prune.
    pub fn remove_snapshot(&self, id: &ObjectId) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut snaps = txn.open_table(SNAPSHOTS)?;
            let removed = snaps.remove(id.0)?.map(|v| v.value().to_vec());
            if let Some(body) = removed {
                let s: Snapshot = model::from_body("snapshot", &body)?;
                let mut refs = txn.open_table(REFS)?;
                for object in [s.tree, s.tree_pack] {
                    decrement(&mut refs, &object)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// All snapshots, oldest first. A damaged entry is an error: a list missing a snapshot
    /// could make prune delete what it references. (`sync` replaces damaged entries first.)
    pub fn snapshots(&self) -> Result<Vec<(ObjectId, Snapshot)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let id = ObjectId(k.value());
            match verified::<Snapshot>(&self.keys, &id, v.value()) {
                Cached::Verified(s) => out.push((id, s)),
                _ => {
                    return Err(Error::corrupt(format!(
                        "the catalogue's record of snapshot {} does not match its id (run the command again \
                         to have it replaced from the backends)",
                        id.short()
                    )));
                }
            }
        }
        out.sort_by_key(|(id, s)| (s.time_ns, *id));
        Ok(out)
    }

    /// Snapshot entries whose body does not match their id (cheap: snapshots are few).
    pub fn damaged_snapshots(&self) -> Result<Vec<ObjectId>> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in txn.open_table(SNAPSHOTS)?.iter()? {
            let (k, v) = row?;
            let id = ObjectId(k.value());
            if !matches!(verified::<Snapshot>(&self.keys, &id, v.value()), Cached::Verified(_)) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Every tree and snapshot entry whose body does not match its id.
    pub fn damaged(&self) -> Result<Vec<Damage>> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for (kind, table) in [(ObjectKind::Snapshot, SNAPSHOTS), (ObjectKind::Tree, TREES)] {
            for row in txn.open_table(table)?.iter()? {
                let (k, v) = row?;
                let id = ObjectId(k.value());
                if self.keys.id_of(v.value()) != id {
                    out.push(Damage { kind, id });
                }
            }
        }
        Ok(out)
    }

    /// Put the verified `body` of snapshot or tree `id` in place of a damaged entry.
    /// Reference counts stay: they were counted from the body as it was recorded, which
    /// matched its id, as this one does.
    pub fn replace_damaged(&self, kind: ObjectKind, id: &ObjectId, body: &[u8]) -> Result<()> {
        if self.keys.id_of(body) != *id {
            return Err(Error::corrupt(format!("{kind:?} {} does not match its id", id.short())));
        }
        let table = if kind == ObjectKind::Snapshot { SNAPSHOTS } else { TREES };
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(table)?;
            if t.get(id.0)?.is_some() {
                t.insert(id.0, body)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Drop damaged entries that cannot be replaced, then count every reference again from
    /// the verified entries left (the dropped bodies cannot say what they referenced).
    /// Dropping is safe: trees are fetched from the backends when missing, and snapshots
    /// are on the backends or were forgotten.
    pub fn drop_damaged(&self, damaged: &[Damage]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut snaps = txn.open_table(SNAPSHOTS)?;
            let mut trees = txn.open_table(TREES)?;
            for d in damaged {
                let table = if d.kind == ObjectKind::Snapshot { &mut snaps } else { &mut trees };
                let intact = table.get(d.id.0)?.is_some_and(|v| self.keys.id_of(v.value()) == d.id);
                if !intact {
                    table.remove(d.id.0)?;
                }
            }
        }
        recount_refs(&txn, &self.keys)?;
        txn.commit()?;
        // An entry iteration still finds but a lookup cannot (its key damaged out of the
        // table's order) is damage to the file's structure, not to one value: rebuild.
        if let Some(d) = self.damaged()?.into_iter().find(|d| damaged.contains(d)) {
            return Err(guard::mark(
                self.path(),
                &format!("entry {} cannot be removed: the table's order is broken", d.id.to_hex()),
            ));
        }
        Ok(())
    }

    /// Pieces and bytes per backend name, and totals over distinct objects.
    pub fn usage(&self) -> Result<(BTreeMap<String, BackendUsage>, Totals)> {
        let txn = self.db.begin_read()?;
        let names = backend_names(&txn)?;
        let mut usage: BTreeMap<String, BackendUsage> = BTreeMap::new();
        let mut totals = Totals::default();
        for row in txn.open_table(OBJECTS)?.iter()? {
            let (_, v) = row?;
            let (_, plain, pieces) = v.value();
            // Saturating: the values are a cache and may be damaged; totals are shown, not
            // trusted.
            totals.objects += 1;
            totals.plain_bytes = totals.plain_bytes.saturating_add(plain);
            for (b, _, stored) in decode_pieces(pieces) {
                let name = names.get(&b).cloned().unwrap_or_else(|| format!("#{b}"));
                let u = usage.entry(name).or_default();
                u.objects += 1;
                u.stored_bytes = u.stored_bytes.saturating_add(stored);
                totals.stored_bytes = totals.stored_bytes.saturating_add(stored);
            }
        }
        Ok((usage, totals))
    }

    /// Replace the recorded pieces of object `id` (after repair or rebalance moved them).
    pub fn set_pieces(&self, id: &ObjectId, kind: ObjectKind, plain_len: u64, pieces: &[PieceAt]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut backends = txn.open_table(BACKENDS)?;
            let encoded = encode_pieces(&mut backends, pieces)?;
            let mut objects = txn.open_table(OBJECTS)?;
            let plain = match objects.get(id.0)? {
                Some(v) if plain_len == 0 => v.value().1,
                _ => plain_len,
            };
            objects.insert(id.0, (kind as u8, plain, encoded.as_slice()))?;
        }
        txn.commit()?;
        Ok(())
    }
}

impl Local {
    /// Whether prune record `id` has been applied here.
    pub fn prune_applied(&self, id: &ObjectId) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(APPLIED_PRUNES)?.get(id.0)?.is_some())
    }

    /// In one transaction: drop the trees no snapshot reaches any more (with the references
    /// they held), forget the objects prune record `record` deleted, and remember it as
    /// applied, so no backup counts on those objects again.
    pub fn apply_prune(&self, record: &ObjectId, deleted: &[ObjectId]) -> Result<()> {
        let txn = self.db.begin_write()?;
        drop_unreachable_trees(&txn, &self.keys)?;
        {
            let mut objects = txn.open_table(OBJECTS)?;
            for id in deleted {
                objects.remove(id.0)?;
            }
            txn.open_table(APPLIED_PRUNES)?.insert(record.0, ())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Objects whose recorded reference count differs from what the published trees and
    /// snapshots imply.
    /// Set every reference count to what the verified trees and snapshots imply.
    pub fn recount(&self) -> Result<()> {
        let txn = self.db.begin_write()?;
        recount_refs(&txn, &self.keys)?;
        txn.commit()?;
        Ok(())
    }

    pub fn refcount_mismatches(&self) -> Result<Vec<RefcountMismatch>> {
        let txn = self.db.begin_read()?;
        let mut expected = expected_refs(&txn.open_table(TREES)?, &txn.open_table(SNAPSHOTS)?, &self.keys)?;
        let mut out = Vec::new();
        for row in txn.open_table(REFS)?.iter()? {
            let (k, v) = row?;
            let id = ObjectId(k.value());
            let want = expected.remove(&id).unwrap_or(0);
            if want != v.value() {
                out.push(RefcountMismatch { id, expected: want, recorded: v.value() });
            }
        }
        out.extend(expected.into_iter().map(|(id, want)| RefcountMismatch { id, expected: want, recorded: 0 }));
        Ok(out)
    }
}

/// A read transaction with typed lookups.
pub(super) struct LocalReader {
    txn: redb::ReadTransaction,
    keys: Keys,
    path: PathBuf,
}

impl LocalReader {
    /// Run one lookup, its damage caught (`guard::guard`).
    pub fn guard<T>(&self, f: impl FnOnce(&LocalReader) -> Result<T>) -> Result<T> {
        guard::run(&self.path, || f(self))
    }

    /// Whether object `id` is recorded as stored.
    pub fn has_object(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.txn.open_table(OBJECTS)?.get(id.0)?.is_some())
    }

    /// Where object `id` is, if recorded.
    pub fn location(&self, id: &ObjectId) -> Result<Option<Location>> {
        let Some(v) = self.txn.open_table(OBJECTS)?.get(id.0)? else {
            return Ok(None);
        };
        let (_, plain_len, pieces) = v.value();
        let names = backend_names(&self.txn)?;
        let pieces = decode_pieces(pieces)
            .filter_map(|(b, shard, stored_len)| Some(PieceAt { backend: names.get(&b)?.clone(), shard, stored_len }))
            .collect();
        Ok(Some(Location { plain_len, pieces }))
    }

    /// Tree `id`, checked against its id.
    pub fn tree(&self, id: &ObjectId) -> Result<Cached<Tree>> {
        Ok(match self.txn.open_table(TREES)?.get(id.0)? {
            Some(v) => verified(&self.keys, id, v.value()),
            None => Cached::Absent,
        })
    }

    /// Whether tree `id` is recorded (body known and stored).
    pub fn has_tree(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.txn.open_table(TREES)?.get(id.0)?.is_some())
    }

    /// Whether snapshot `id` is recorded.
    pub fn has_snapshot(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.txn.open_table(SNAPSHOTS)?.get(id.0)?.is_some())
    }

    /// The reference count of object `id`.
    pub fn refs(&self, id: &ObjectId) -> Result<u64> {
        Ok(self.txn.open_table(REFS)?.get(id.0)?.map(|v| v.value()).unwrap_or(0))
    }
}

/// Remove and return the packs `session` staged.
fn take_staged(staged: &mut redb::Table<(u64, [u8; 32]), &[u8]>, session: Session) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for row in staged.extract_from_if((session.0, [0; 32])..=(session.0, [0xff; 32]), |_, _| true)? {
        out.push(row?.1.value().to_vec());
    }
    Ok(out)
}

/// Drop what sessions of processes no longer running staged (killed mid-backup).
fn sweep_dead_sessions(staged: &mut redb::Table<(u64, [u8; 32]), &[u8]>) -> Result<()> {
    let mut dead = Vec::new();
    for row in staged.iter()? {
        let (session, _) = row?.0.value();
        if !Session(session).alive() {
            dead.push(session);
        }
    }
    dead.dedup();
    for session in dead {
        take_staged(staged, Session(session))?;
    }
    Ok(())
}

fn backend_names(txn: &redb::ReadTransaction) -> Result<BTreeMap<u16, String>> {
    Ok(txn
        .open_table(BACKENDS)?
        .iter()?
        .map(|r| r.map(|(k, v)| (v.value(), k.value().to_string())))
        .collect::<Result<_, _>>()?)
}

const PIECE_LEN: usize = 11;

fn encode_pieces(backends: &mut redb::Table<&str, u16>, pieces: &[PieceAt]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(pieces.len() * PIECE_LEN);
    for p in pieces {
        out.extend_from_slice(&backend_number(backends, &p.backend)?.to_le_bytes());
        out.push(p.shard as u8);
        out.extend_from_slice(&p.stored_len.to_le_bytes());
    }
    Ok(out)
}

fn decode_pieces(bytes: &[u8]) -> impl Iterator<Item = (u16, bool, u64)> + '_ {
    bytes.chunks_exact(PIECE_LEN).map(|c| {
        let b = u16::from_le_bytes([c[0], c[1]]);
        (b, c[2] == 1, u64::from_le_bytes(c[3..11].try_into().expect("8 bytes")))
    })
}

/// The distinct objects a tree references: subtrees, the packs holding them, and chunks.
fn children(tree: &Tree) -> HashSet<ObjectId> {
    let mut out = HashSet::new();
    for node in &tree.entries {
        match &node.kind {
            NodeKind::Dir { tree, pack } => {
                out.insert(*tree);
                out.extend(pack);
            }
            NodeKind::File { content, .. } => out.extend(content.iter().map(|c| c.id)),
            _ => {}
        }
    }
    out
}

/// `body` decoded, if it matches `id`.
fn verified<T: model::Decode>(keys: &Keys, id: &ObjectId, body: &[u8]) -> Cached<T> {
    if keys.id_of(body) != *id {
        return Cached::Damaged;
    }
    match T::decode(body) {
        Ok(value) => Cached::Verified(value),
        Err(_) => Cached::Damaged,
    }
}

/// Reference counts as the verified trees and snapshots imply them (damaged ones count
/// nothing).
fn expected_refs(
    trees: &impl ReadableTable<[u8; 32], &'static [u8]>,
    snapshots: &impl ReadableTable<[u8; 32], &'static [u8]>,
    keys: &Keys,
) -> Result<std::collections::HashMap<ObjectId, u64>> {
    let mut expected: std::collections::HashMap<ObjectId, u64> = std::collections::HashMap::new();
    for row in trees.iter()? {
        let (k, v) = row?;
        if let Cached::Verified(tree) = verified::<Tree>(keys, &ObjectId(k.value()), v.value()) {
            for child in children(&tree) {
                *expected.entry(child).or_default() += 1;
            }
        }
    }
    for row in snapshots.iter()? {
        let (k, v) = row?;
        if let Cached::Verified(s) = verified::<Snapshot>(keys, &ObjectId(k.value()), v.value()) {
            *expected.entry(s.tree).or_default() += 1;
            *expected.entry(s.tree_pack).or_default() += 1;
        }
    }
    Ok(expected)
}

/// Remove the trees that no snapshot reaches through other trees, releasing their references.
/// A damaged snapshot or reachable tree hides what it reaches, so then nothing is dropped:
/// the catalogue keeps entries it may not need rather than lose ones it does.
fn drop_unreachable_trees(txn: &redb::WriteTransaction, keys: &Keys) -> Result<usize> {
    let mut trees = txn.open_table(TREES)?;
    let mut stack = Vec::new();
    for row in txn.open_table(SNAPSHOTS)?.iter()? {
        let (k, v) = row?;
        match verified::<Snapshot>(keys, &ObjectId(k.value()), v.value()) {
            Cached::Verified(s) => stack.push(s.tree),
            _ => return Ok(0),
        }
    }
    let mut reachable = HashSet::new();
    while let Some(id) = stack.pop() {
        if !reachable.insert(id) {
            continue;
        }
        if let Some(body) = trees.get(id.0)? {
            let Cached::Verified(tree) = verified::<Tree>(keys, &id, body.value()) else { return Ok(0) };
            stack.extend(tree.entries.iter().filter_map(|n| match n.kind {
                NodeKind::Dir { tree, .. } => Some(tree),
                _ => None,
            }));
        }
    }
    let mut dead = Vec::new();
    for row in trees.iter()? {
        let id = row?.0.value();
        if !reachable.contains(&ObjectId(id)) {
            dead.push(id);
        }
    }
    let mut refs = txn.open_table(REFS)?;
    let mut recount = false;
    for id in &dead {
        let removed = trees.remove(id)?.map(|v| v.value().to_vec());
        match removed.map(|body| verified::<Tree>(keys, &ObjectId(*id), &body)) {
            Some(Cached::Verified(tree)) => {
                for child in children(&tree) {
                    decrement(&mut refs, &child)?;
                }
            }
            // A damaged body cannot say what it referenced.
            Some(_) => recount = true,
            None => {}
        }
    }
    drop((refs, trees));
    if recount {
        recount_refs(txn, keys)?;
    }
    Ok(dead.len())
}

/// Count every reference again from the verified trees and snapshots.
fn recount_refs(txn: &redb::WriteTransaction, keys: &Keys) -> Result<()> {
    let expected = expected_refs(&txn.open_table(TREES)?, &txn.open_table(SNAPSHOTS)?, keys)?;
    txn.delete_table(REFS)?;
    let mut refs = txn.open_table(REFS)?;
    for (id, n) in expected {
        refs.insert(id.0, n)?;
    }
    Ok(())
}

fn decrement(refs: &mut redb::Table<[u8; 32], u64>, id: &ObjectId) -> Result<()> {
    let n = refs.get(id.0)?.map(|v| v.value()).unwrap_or(0);
    if n <= 1 {
        refs.remove(id.0)?;
    } else {
        refs.insert(id.0, n - 1)?;
    }
    Ok(())
}

fn increment(refs: &mut redb::Table<[u8; 32], u64>, id: &ObjectId) -> Result<()> {
    let n = refs.get(id.0)?.map(|v| v.value()).unwrap_or(0);
    refs.insert(id.0, n + 1)?;
    Ok(())
}

fn backend_number(table: &mut redb::Table<&str, u16>, name: &str) -> Result<u16> {
    if let Some(v) = table.get(name)? {
        return Ok(v.value());
    }
    let next = table.len()? as u16;
    table.insert(name, next)?;
    Ok(next)
}

/// Errors that say the file or its directory may be read but not written (a read-only
/// file system, an immutable file, no permission), as opposed to damage.
fn refuses_writes(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as Io;
    matches!(e.kind(), Io::ReadOnlyFilesystem | Io::PermissionDenied)
}

fn unwritable(path: &Path, e: std::io::Error) -> Error {
    let kind = if refuses_writes(&e) { ErrorKind::ReadOnly } else { ErrorKind::Io };
    Error::new(kind, format!("catalogue {} cannot be opened for writing", path.display())).with_source(e)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::catalogue::Session;
    use crate::model::{ChunkRef, Meta, Node, Summary};

    const S: Session = Session(7);

    fn tree_with_chunk(chunk: ObjectId, name: &[u8]) -> (ObjectId, Vec<u8>) {
        let meta =
            Meta { mode: 0o644, uid: 0, gid: 0, mtime_ns: 0, ctime_ns: 0, dev: 0, ino: 0, nlink: 1, xattrs: vec![] };
        let content = vec![ChunkRef { id: chunk, offset: 0, len: 1 }, ChunkRef { id: chunk, offset: 1, len: 1 }];
        let tree =
            Tree { entries: vec![Node { name: name.to_vec(), kind: NodeKind::File { size: 2, content }, meta }] };
        let body = tree.to_body();
        (ObjectId::of(&body), body)
    }

    pub(crate) fn snapshot_of(tree: ObjectId, tree_pack: ObjectId) -> Snapshot {
        Snapshot {
            time_ns: 1,
            hostname: "h".into(),
            username: "u".into(),
            paths: vec![],
            tags: vec![],
            tree,
            tree_pack,
            parent: None,
            summary: Summary::default(),
            program_version: "t".into(),
        }
    }

    #[test]
    fn records_locations_refs_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let (cat, fresh) = Local::open(&path, Keys::plain()).unwrap();
        assert!(fresh);
        let chunk = ObjectId::of(b"chunk");
        let loc = Location {
            plain_len: 20,
            pieces: vec![
                PieceAt { backend: "b".into(), shard: false, stored_len: 10 },
                PieceAt { backend: "c".into(), shard: true, stored_len: 7 },
            ],
        };
        let (t1, body1) = tree_with_chunk(chunk, b"x");
        let (t2, body2) = tree_with_chunk(chunk, b"y");
        // t1 appears in two packs: it must still count once.
        let pack_a = model::to_body(&TreePack { trees: vec![(t1, body1.clone()), (t2, body2)] });
        let pack_b = model::to_body(&TreePack { trees: vec![(t1, body1)] });
        let (pa, pb) = (ObjectId::of(&pack_a), ObjectId::of(&pack_b));
        cat.record(
            S,
            &[
                Record::Chunk { id: chunk, location: loc.clone() },
                Record::TreePack { id: pa, location: loc.clone(), body: pack_a },
                Record::TreePack { id: pb, location: loc.clone(), body: pack_b },
            ],
        )
        .unwrap();
        assert_eq!(cat.reader().unwrap().location(&chunk).unwrap(), Some(loc));
        let snap = snapshot_of(t1, pa);
        let sid = ObjectId::of(&model::to_body(&snap));
        assert!(!cat.reader().unwrap().has_tree(&t2).unwrap(), "staged trees are not visible");
        cat.commit_staged(S, &sid, &snap).unwrap();
        cat.mark_built().unwrap();
        drop(cat);
        let (cat, fresh) = Local::open(&path, Keys::plain()).unwrap();
        assert!(!fresh, "built, so not rebuilt again");
        assert_eq!(cat.snapshots().unwrap().len(), 1);
        let r = cat.reader().unwrap();
        // Two distinct trees reference the chunk; the repeated record of t1 counts once.
        assert_eq!(r.refs(&chunk).unwrap(), 2);
        assert!(r.has_tree(&t2).unwrap());
        assert_eq!(cat.reader().unwrap().refs(&t1).unwrap(), 1);
        assert_eq!(cat.reader().unwrap().refs(&pa).unwrap(), 1);
        assert_eq!(cat.usage().unwrap().0["b"].objects, 3);
    }

    /// Overwrite the value of `id` in `table` with `body`, as an edit of the file would.
    fn tamper(cat: &Local, table: TableDefinition<[u8; 32], &[u8]>, id: &ObjectId, body: &[u8]) {
        let txn = cat.db.begin_write().unwrap();
        txn.open_table(table).unwrap().insert(id.0, body).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn bodies_that_do_not_match_their_ids_are_never_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let (cat, _) = Local::open(&dir.path().join("c.redb"), Keys::plain()).unwrap();
        let chunk = ObjectId::of(b"chunk");
        let (t1, body1) = tree_with_chunk(chunk, b"x");
        let (t2, body2) = tree_with_chunk(ObjectId::of(b"other"), b"y");
        let pack = model::to_body(&TreePack { trees: vec![(t1, body1.clone()), (t2, body2.clone())] });
        let loc = Location { plain_len: 1, pieces: vec![] };
        cat.record(S, &[Record::TreePack { id: ObjectId::of(&pack), location: loc, body: pack.clone() }]).unwrap();
        let snap = snapshot_of(t1, ObjectId::of(&pack));
        let snap_body = model::to_body(&snap);
        let sid = ObjectId::of(&snap_body);
        cat.commit_staged(S, &sid, &snap).unwrap();
        assert!(matches!(cat.reader().unwrap().tree(&t1).unwrap(), Cached::Verified(_)));
        assert_eq!(cat.reader().unwrap().tree(&ObjectId::of(b"none")).unwrap(), Cached::Absent);

        // A body that decodes but belongs to another id.
        tamper(&cat, TREES, &t1, &body2);
        assert_eq!(cat.reader().unwrap().tree(&t1).unwrap(), Cached::Damaged);
        assert_eq!(cat.damaged().unwrap(), vec![Damage { kind: ObjectKind::Tree, id: t1 }]);
        // Replacing takes only the body that matches.
        assert!(cat.replace_damaged(ObjectKind::Tree, &t1, &body2).is_err());
        cat.replace_damaged(ObjectKind::Tree, &t1, &body1).unwrap();
        assert!(cat.damaged().unwrap().is_empty());

        // A damaged snapshot record stops listings rather than hide a snapshot.
        let other = Snapshot { hostname: "elsewhere".into(), ..snap.clone() };
        tamper(&cat, SNAPSHOTS, &sid, &model::to_body(&other));
        assert!(cat.snapshots().is_err());
        assert_eq!(cat.damaged_snapshots().unwrap(), vec![sid]);
        cat.replace_damaged(ObjectKind::Snapshot, &sid, &snap_body).unwrap();
        assert_eq!(cat.snapshots().unwrap(), vec![(sid, snap)]);

        // Dropping a damaged tree recounts references from what is left.
        tamper(&cat, TREES, &t2, b"garbage");
        cat.drop_damaged(&cat.damaged().unwrap()).unwrap();
        assert_eq!(cat.reader().unwrap().tree(&t2).unwrap(), Cached::Absent);
        assert!(cat.refcount_mismatches().unwrap().is_empty());
        assert_eq!(cat.reader().unwrap().refs(&chunk).unwrap(), 1);
    }
}
