//! Repair and rebalance: bring every object's pieces back to what the pool's redundancy and
//! placement want, from whatever is left.
//!
//! `repair` writes what is missing: copies and shards lost with a backend, pieces that fail
//! verification (with `read_data`), and the objects every backend keeps (pool record, key
//! slots, snapshots, prune records). `rebalance` also moves pieces that sit on backends
//! placement no longer picks (a backend was added, reweighted or is draining), writing the
//! new piece before deleting the old one, so every object stays readable throughout. Both are
//! idempotent: an interrupted run is resumed by running it again, which skips what is done.
//!
//! Owns: deciding, per object, which pieces to write and delete. Must not: delete the last
//! verified piece of anything, or touch objects no backend lists (that is prune's domain).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::StreamExt;

use crate::check::wanted;
use crate::codec::ObjectKind;
use crate::error::{Error, Result};
use crate::exec::cpu;
use crate::id::ObjectId;
use crate::progress::Progress;
use crate::redundancy::{self, Scheme};
use crate::repository::{Need, Repository};
use crate::store::{LOCKS_PREFIX, POOL_RECORD, Piece, Store, object_path};

/// What to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct RepairOptions {
    /// Also move pieces to where placement wants them now (`cuckoo rebalance`).
    pub rebalance: bool,
    /// Download and verify every piece, replacing corrupt ones; otherwise pieces are trusted
    /// if listed.
    pub read_data: bool,
    /// Only count what would be done.
    pub dry_run: bool,
}

/// What was (or, in a dry run, would be) done.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    /// Chunks and tree packs looked at.
    pub objects: u64,
    /// Objects that needed nothing.
    pub healthy: u64,
    /// Objects that had pieces written.
    pub repaired: u64,
    /// Objects that had pieces moved or extra pieces removed.
    pub moved: u64,
    /// Pieces written.
    pub pieces_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Pieces deleted (moved away, surplus or corrupt).
    pub pieces_deleted: u64,
    /// Bytes deleted.
    pub bytes_deleted: u64,
    /// Pieces that failed verification.
    pub corrupt_pieces: u64,
    /// Copies of pool records, key slots, snapshots, prune and forget records written to
    /// backends that lacked them.
    pub shared_copied: u64,
    /// Copies of forgotten snapshots deleted from backends that had kept them.
    pub forgotten_deleted: u64,
    /// Forget records removed because no backend holds any of their snapshots any more.
    pub forget_records_removed: u64,
    /// Objects that could not be rebuilt from what is left (hex ids), with why.
    pub unrecoverable: Vec<(String, String)>,
    /// Objects that could not be fully repaired this time, because a backend failed
    /// (`Repository::backend_troubles` says which and whether running again can help).
    pub incomplete: u64,
}

impl Repository {
    /// Repair or rebalance the pool (see the module doc), under a shared lock: it only adds
    /// pieces and removes duplicates, so backups may run beside it, while prune may not.
    pub async fn repair(&self, options: RepairOptions, progress: &dyn Progress) -> Result<RepairReport> {
        let what = if options.rebalance { "rebalance" } else { "repair" };
        self.locked(what, Need::Shared, run(self, options, progress)).await
    }
}

/// Repair (and optionally rebalance) the pool; see the module doc.
async fn run(repo: &Repository, options: RepairOptions, progress: &dyn Progress) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    copy_shared(repo.store(), options, &mut report).await?;
    let objects = list_all(repo.store()).await?;
    report.objects = objects.len() as u64;
    let (_, mut planned) = pass(repo, &objects, options, Pass::Place, progress, &mut report).await?;
    if options.rebalance {
        // Balancing moves come after every piece is inside its window: before, they would
        // fill backends the first pass still had to move pieces to, and move bytes twice.
        for _ in 0..crate::ring::BALANCE_PASSES {
            let objects = if options.dry_run { planned } else { list_all(repo.store()).await? };
            let moved;
            (moved, planned) = pass(repo, &objects, options, Pass::Balance, progress, &mut report).await?;
            if moved == 0 {
                break;
            }
        }
    }
    Ok(report)
}

/// What a pass over the objects does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Write missing pieces; with rebalance, move pieces outside their window into it.
    Place,
    /// Move pieces within their window from backends over their share to ones under it.
    Balance,
}

/// Objects and their pieces, as listed (or, in a dry run, as they would be).
type Listing = HashMap<(ObjectKind, ObjectId), Vec<Piece>>;

/// One pass over `objects`; returns how many had pieces moved and, in a dry run, where every
/// object's pieces would be afterwards.
async fn pass(
    repo: &Repository,
    objects: &Listing,
    options: RepairOptions,
    which: Pass,
    progress: &dyn Progress,
    report: &mut RepairReport,
) -> Result<(u64, Listing)> {
    let label = match which {
        Pass::Balance => "rebalance: balancing",
        Pass::Place if options.rebalance => "rebalance",
        Pass::Place => "repair",
    };
    progress.begin(label, Some(objects.len() as u64), None);
    let abort = repo.interrupt_flag();
    let mut outcomes = futures::stream::iter(objects.iter())
        .map(|((kind, id), pieces)| async move {
            ((*kind, *id), pieces, fix_object(repo, *kind, *id, pieces.clone(), options, which).await)
        })
        // A balancing move is decided on the loads the previous one left: eight decided at
        // once would all pick the same backend under its share and overshoot it.
        .buffer_unordered(if which == Pass::Balance { 1 } else { 8 });
    let mut moved = 0;
    let mut planned = Listing::new();
    while let Some((key, pieces, mut outcome)) = outcomes.next().await {
        progress.advance(1, 0);
        if options.dry_run {
            let after = outcome.as_mut().ok().and_then(|o| o.planned.take());
            planned.insert(key, after.unwrap_or_else(|| pieces.clone()));
        }
        let id = key.1;
        match outcome {
            Ok(o) if which == Pass::Balance => {
                moved += u64::from(o.moved);
                o.add_moves_to(report);
            }
            Ok(o) => o.add_to(report),
            Err(e) if e.kind() == crate::ErrorKind::Corrupt || e.kind() == crate::ErrorKind::NotFound => {
                report.unrecoverable.push((id.to_hex(), e.to_string()))
            }
            Err(_) => report.incomplete += 1,
        }
        if abort.load(std::sync::atomic::Ordering::Relaxed) {
            progress.end();
            return Err(Error::new(crate::ErrorKind::Interrupted, "repair interrupted; run it again to go on"));
        }
    }
    progress.end();
    Ok((moved, planned))
}

/// Every chunk and tree pack listed anywhere, with its pieces. Every backend must answer:
/// a backend that cannot be listed might hold the only good piece of something.
async fn list_all(store: &Store) -> Result<HashMap<(ObjectKind, ObjectId), Vec<Piece>>> {
    let mut all: HashMap<(ObjectKind, ObjectId), Vec<Piece>> = HashMap::new();
    let mut failed = Vec::new();
    for (i, listed) in store.list_all_pieces().await.into_iter().enumerate() {
        match listed {
            Ok(list) => {
                for (kind, id, piece) in list {
                    all.entry((kind, id)).or_default().push(piece);
                }
            }
            Err(e) => failed.push((i, e)),
        }
    }
    // Pieces on backends that are gone are rebuilt elsewhere, if the scheme can lose that
    // many; beyond that, repair would be guessing.
    if failed.len() > store.scheme().tolerates() {
        let (i, e) = failed.remove(0);
        let name = &store.backends()[i].name;
        return Err(Error::new(e.kind(), format!("cannot list backend '{name}': {}", e.context())));
    }
    Ok(all)
}

/// Copy every object kept on every backend to the (reachable) backends lacking it.
async fn copy_shared(store: &Store, options: RepairOptions, report: &mut RepairReport) -> Result<()> {
    let n = store.backends().len();
    let mut have: HashMap<String, Vec<usize>> = HashMap::new();
    let mut all_listed = true;
    for (i, b) in store.backends().iter().enumerate() {
        if !store.health().is_up(i) {
            all_listed = false;
            continue;
        }
        for (_, prefix) in crate::store::SHARED_PREFIXES {
            let Ok(list) = b.list(prefix).await else {
                all_listed = false;
                continue;
            };
            for (path, _) in list {
                have.entry(path).or_default().push(i);
            }
        }
        if let Ok(Some(_)) = b.len(POOL_RECORD).await {
            have.entry(POOL_RECORD.to_string()).or_default().push(i);
        }
    }
    settle_forgotten(store, &mut have, all_listed, options, report).await?;
    for (path, mut holders) in have {
        if path.starts_with(LOCKS_PREFIX) {
            continue;
        }
        // The pool record is read everywhere (a damaged one makes its backend unusable);
        // the rest only with `read_data`. A copy that fails its check counts as missing.
        if path == POOL_RECORD || options.read_data {
            let mut intact = Vec::new();
            for i in holders {
                if let Ok(Some(bytes)) = store.backends()[i].read(&path).await
                    && shared_is_intact(store, &path, &bytes)
                {
                    intact.push(i);
                }
            }
            holders = intact;
        }
        let lacking: Vec<usize> = (0..n).filter(|i| !holders.contains(i) && store.health().is_up(*i)).collect();
        if lacking.is_empty() {
            continue;
        }
        if options.dry_run {
            report.shared_copied += lacking.len() as u64;
            continue;
        }
        let Some(bytes) = read_verified_shared(store, &path, &holders).await else { continue };
        for i in lacking {
            if store.backends()[i].write(&path, bytes.clone()).await.is_ok() {
                report.shared_copied += 1;
            }
        }
    }
    Ok(())
}

/// Delete the copies of forgotten snapshots that backends kept (never copy them on), and
/// remove the forget records that no longer cover any copy: only when every backend was
/// listed, since one that was not may still hold one. Both leave `have`.
async fn settle_forgotten(
    store: &Store,
    have: &mut HashMap<String, Vec<usize>>,
    all_listed: bool,
    options: RepairOptions,
    report: &mut RepairReport,
) -> Result<()> {
    let records = store.forget_records().await?;
    let forgotten: std::collections::BTreeSet<ObjectId> =
        records.iter().flat_map(|(_, r)| r.snapshots.iter().copied()).collect();
    let mut still_held = std::collections::BTreeSet::new();
    for id in &forgotten {
        let path = object_path(ObjectKind::Snapshot, id);
        let Some(holders) = have.remove(&path) else { continue };
        for i in holders {
            if options.dry_run {
                report.forgotten_deleted += 1;
                continue;
            }
            let r = store.backends()[i].delete(&path).await;
            store.health().observe(i, &r);
            match r {
                Ok(()) => report.forgotten_deleted += 1,
                Err(_) => {
                    still_held.insert(*id);
                }
            }
        }
    }
    if !all_listed || options.dry_run {
        return Ok(());
    }
    for (record, forget) in records {
        if forget.snapshots.iter().any(|s| still_held.contains(s)) {
            continue;
        }
        let path = object_path(ObjectKind::Forget, &record);
        let holders = have.remove(&path).unwrap_or_default();
        let mut removed = true;
        for i in holders {
            let r = store.backends()[i].delete(&path).await;
            store.health().observe(i, &r);
            removed &= r.is_ok();
        }
        report.forget_records_removed += u64::from(removed);
    }
    Ok(())
}

/// The first copy of a shared object that verifies: a copy is only as good as its check
/// (a backend that damages bytes must not spread the damage).
async fn read_verified_shared(store: &Store, path: &str, holders: &[usize]) -> Option<Bytes> {
    for i in holders {
        let Ok(Some(bytes)) = store.backends()[*i].read(path).await else { continue };
        if shared_is_intact(store, path, &bytes) {
            return Some(bytes);
        }
    }
    None
}

fn shared_is_intact(store: &Store, path: &str, bytes: &[u8]) -> bool {
    let keys = store.keys();
    if path == POOL_RECORD {
        return crate::store::decode_pool_record(bytes, keys).is_ok();
    }
    match crate::store::parse_shared_path(path) {
        Some((ObjectKind::Key, id)) => {
            crate::crypto::KeySlot::id(bytes) == id && crate::crypto::KeySlot::decode(bytes).is_ok()
        }
        Some((kind, id)) => crate::store::verify(kind, &id, bytes, keys).is_ok(),
        None => false,
    }
}

/// What was done to one object.
#[derive(Debug, Default)]
struct Outcome {
    written: Vec<u64>,
    deleted: Vec<u64>,
    corrupt: u64,
    moved: bool,
    /// In a dry run, the pieces the object would have afterwards (for the next pass).
    planned: Option<Vec<Piece>>,
}

impl Outcome {
    /// Count what was moved, written and deleted (alone: a balancing pass's moves, whose
    /// objects the first pass counted).
    fn add_moves_to(self, r: &mut RepairReport) {
        if self.moved {
            r.moved += 1;
        }
        r.pieces_written += self.written.len() as u64;
        r.bytes_written += self.written.iter().sum::<u64>();
        r.pieces_deleted += self.deleted.len() as u64;
        r.bytes_deleted += self.deleted.iter().sum::<u64>();
    }

    fn add_to(self, r: &mut RepairReport) {
        if self.written.is_empty() && self.deleted.is_empty() {
            r.healthy += 1;
        }
        if !self.written.is_empty() && !self.moved {
            r.repaired += 1;
        }
        r.corrupt_pieces += self.corrupt;
        self.add_moves_to(r);
    }
}

/// Bring one object to its wanted pieces.
async fn fix_object(
    repo: &Repository,
    kind: ObjectKind,
    id: ObjectId,
    mut pieces: Vec<Piece>,
    options: RepairOptions,
    which: Pass,
) -> Result<Outcome> {
    let store = repo.store();
    let mut out = Outcome::default();
    let mut verified: HashMap<(usize, bool), Bytes> = HashMap::new();
    // Corrupt pieces are set aside, and deleted only once the object has all its pieces
    // again: a backend that damages bytes as it sends them must not cost the stored ones.
    let mut corrupt = Vec::new();
    if options.read_data {
        let mut good = Vec::new();
        for p in pieces {
            match read_verified(store, kind, &id, &p).await {
                Ok(bytes) => {
                    verified.insert((p.backend, p.shard), bytes);
                    good.push(p);
                }
                Err(e) if e.kind() == crate::ErrorKind::Backend => good.push(p), // unreachable: not proof of damage
                Err(_) => {
                    out.corrupt += 1;
                    corrupt.push(p);
                }
            }
        }
        pieces = good;
    }
    let scheme = match wanted(store.scheme(), &pieces) {
        Some((scheme, _)) => scheme,
        // Shards in a pool that now writes copies: keep them to their own scheme.
        None => shard_scheme(store, kind, &id, &pieces, &mut verified).await?,
    };
    let sharded = matches!(scheme, Scheme::Erasure { .. });
    // Pieces of the other form (left by a change of scheme) count for nothing here, but are
    // never deleted: they may be what an older reader finds.
    let mine: Vec<Piece> = pieces.iter().filter(|p| p.shard == sharded).copied().collect();
    let len = mine.first().map(|p| p.stored_len).unwrap_or(0);
    let (targets, keep) = windows(store, &id, scheme, len);
    let on_target: Vec<&Piece> = mine.iter().filter(|p| keep.contains(&p.backend)).collect();
    let lacks = |t: &&usize| !mine.iter().any(|p| p.backend == **t);
    // Missing pieces may go anywhere in the keep window, least full first: a piece a change
    // of backends pushed out of it then goes to the backend that pushed it, when that one is
    // short of its share, rather than to one that would have to give a piece back. Balancing
    // moves go into the write window only.
    let (open, free): (Vec<usize>, Vec<usize>) =
        (keep.iter().filter(lacks).copied().collect(), targets.iter().filter(lacks).copied().collect());
    let want = scheme.pieces().min(targets.len());
    // Repair counts every piece wherever it is: one outside the keep window (placed before
    // backends were added, or by an older placement) still protects the object, and writing
    // another would only add a copy. Rebalance counts those in it, and moves the rest.
    let counted = if options.rebalance { on_target.len() } else { distinct_backends(&mine) };
    let mut lacking = store.pick(scheme.pieces(), &open, want.saturating_sub(counted));
    if sharded {
        // A target holding a shard another target also holds gets a missing one instead.
        lacking.extend(duplicate_holders(&id, &on_target, &verified));
    }
    let mut surplus: Vec<Piece> =
        if options.rebalance { mine.iter().filter(|p| !keep.contains(&p.backend)).copied().collect() } else { vec![] };
    if which == Pass::Balance {
        // Only objects the first pass left whole and in place; the rest wait for a repair.
        if !(lacking.is_empty() && surplus.is_empty() && corrupt.is_empty()) {
            return Ok(out);
        }
        match store.balancing_move(&on_target, &targets, &free, len) {
            Some((from, to)) => {
                lacking.push(to);
                surplus.push(*from);
            }
            None => return Ok(out),
        }
    }
    if lacking.is_empty() && surplus.is_empty() {
        // Every target holds a verified piece: corrupt extras can go.
        if !corrupt.is_empty() && !options.dry_run {
            for p in &corrupt {
                store.delete_piece(kind, &id, p).await?;
            }
            record(repo, kind, &id, &mine)?;
        }
        out.deleted.extend(corrupt.iter().map(|p| p.stored_len));
        return Ok(out);
    }
    out.moved = !surplus.is_empty();
    if options.dry_run {
        // Later objects' decisions see this one's, as in a real run.
        store.plan(&lacking.iter().map(|i| (*i, len)).collect::<Vec<_>>(), &surplus);
        out.written.extend(lacking.iter().map(|_| len));
        out.deleted.extend(surplus.iter().chain(&corrupt).map(|p| p.stored_len));
        let mut planned: Vec<Piece> = mine.iter().filter(|p| !surplus.contains(p)).copied().collect();
        planned.extend(lacking.iter().map(|i| Piece { backend: *i, shard: sharded, stored_len: len }));
        out.planned = Some(planned);
        return Ok(out);
    }
    let new_pieces = if sharded {
        // Shards that stay count as present: those in the keep window but for one moved for
        // balance (whose index is then what is written), and in a repair those outside too.
        let mut kept: Vec<usize> = keep.iter().copied().filter(|t| !surplus.iter().any(|p| p.backend == *t)).collect();
        if !options.rebalance {
            kept.extend(mine.iter().map(|p| p.backend).filter(|b| !keep.contains(b)));
        }
        write_shards(store, kind, &id, scheme, &mine, &kept, &lacking, &mut verified).await?
    } else {
        write_copies(store, kind, &id, &mine, &lacking, &mut verified).await?
    };
    out.written.extend(new_pieces.iter().map(|p| p.stored_len));
    let mut final_pieces: Vec<Piece> = mine.clone();
    final_pieces.extend(&new_pieces);
    // Surplus goes only once every target holds a piece that verifies: a move must never
    // trade a good piece for a damaged one.
    let complete = lacking.len() == new_pieces.len();
    if complete && !surplus.is_empty() {
        for p in final_pieces.iter().filter(|p| keep.contains(&p.backend) && !new_pieces.contains(p)) {
            if let std::collections::hash_map::Entry::Vacant(slot) = verified.entry((p.backend, p.shard)) {
                // Not counted as lost: the surplus piece still holds it. `repair --read-data`
                // replaces the bad one.
                let bytes = read_verified(store, kind, &id, p).await.map_err(|e| {
                    Error::new(crate::ErrorKind::Backend, format!("{kind:?} {}: kept where it was: {e}", id.short()))
                })?;
                slot.insert(bytes);
            }
        }
    }
    if complete {
        // A corrupt piece on a backend that just got a good one was overwritten in place.
        let overwritten = |p: &Piece| new_pieces.iter().any(|n| (n.backend, n.shard) == (p.backend, p.shard));
        for p in surplus.iter().chain(corrupt.iter().filter(|p| !overwritten(p))) {
            store.delete_piece(kind, &id, p).await?;
            out.deleted.push(p.stored_len);
            final_pieces.retain(|q| q != p);
        }
    }
    record(repo, kind, &id, &final_pieces)?;
    if !complete {
        return Err(Error::new(
            crate::ErrorKind::Backend,
            format!("{kind:?} {}: some pieces could not be written", id.short()),
        ));
    }
    Ok(out)
}

/// How many backends hold `pieces`.
fn distinct_backends(pieces: &[Piece]) -> usize {
    pieces.iter().map(|p| p.backend).collect::<HashSet<_>>().len()
}

/// Backends among `on_target` whose verified shard repeats an index an earlier one holds.
fn duplicate_holders(id: &ObjectId, on_target: &[&Piece], verified: &HashMap<(usize, bool), Bytes>) -> Vec<usize> {
    let mut seen = HashSet::new();
    on_target
        .iter()
        .filter_map(|p| {
            let index = redundancy::open_shard(id, verified.get(&(p.backend, true))?).ok()?.index;
            (!seen.insert(index)).then_some(p.backend)
        })
        .collect()
}

/// Where pieces of `id` may be written now, and where those written may stay: the first
/// backends in its order that are up and have room, `ring::write_window` and
/// `ring::keep_window` of them (any `pieces` of the first are right: see `Store`).
fn windows(store: &Store, id: &ObjectId, scheme: Scheme, len: u64) -> (Vec<usize>, Vec<usize>) {
    let mut keep: Vec<usize> =
        store.placement_order(id, scheme, len).into_iter().filter(|i| store.health().is_up(*i)).collect();
    keep.truncate(crate::ring::keep_window(scheme.pieces()));
    let write = keep[..keep.len().min(crate::ring::write_window(scheme.pieces()))].to_vec();
    (write, keep)
}

fn record(repo: &Repository, kind: ObjectKind, id: &ObjectId, pieces: &[Piece]) -> Result<()> {
    let location = crate::repository::location_of(repo.store(), 0, pieces);
    repo.catalogue().set_pieces(id, kind, location.plain_len, &location.pieces)
}

async fn read_verified(store: &Store, kind: ObjectKind, id: &ObjectId, piece: &Piece) -> Result<Bytes> {
    let bytes = store.read_piece(kind, id, piece).await?.ok_or_else(|| {
        Error::not_found(format!("backend '{}': listed but gone", store.backends()[piece.backend].name))
    })?;
    store.check_piece(kind, id, piece, &bytes)?;
    Ok(bytes)
}

/// The scheme recorded in an object's own shards.
async fn shard_scheme(
    store: &Store,
    kind: ObjectKind,
    id: &ObjectId,
    pieces: &[Piece],
    verified: &mut HashMap<(usize, bool), Bytes>,
) -> Result<Scheme> {
    for p in pieces.iter().filter(|p| p.shard) {
        let bytes = match verified.get(&(p.backend, p.shard)) {
            Some(b) => b.clone(),
            None => match read_verified(store, kind, id, p).await {
                Ok(b) => {
                    verified.insert((p.backend, p.shard), b.clone());
                    b
                }
                Err(_) => continue,
            },
        };
        let s = redundancy::open_shard(id, &bytes)?;
        return Ok(Scheme::Erasure { data: s.data, parity: s.parity });
    }
    Err(Error::corrupt(format!("{kind:?} {}: no shard of it verifies", id.short())))
}

/// Write a copy of the object to each backend in `lacking`, from any verified copy.
async fn write_copies(
    store: &Store,
    kind: ObjectKind,
    id: &ObjectId,
    have: &[Piece],
    lacking: &[usize],
    verified: &mut HashMap<(usize, bool), Bytes>,
) -> Result<Vec<Piece>> {
    let mut source = have.iter().find_map(|p| verified.get(&(p.backend, p.shard)).cloned());
    if source.is_none() {
        for p in have {
            if let Ok(b) = read_verified(store, kind, id, p).await {
                source = Some(b);
                break;
            }
        }
    }
    let bytes = source.ok_or_else(|| Error::corrupt(format!("{kind:?} {}: no copy of it verifies", id.short())))?;
    let mut written = Vec::new();
    for i in lacking {
        if let Ok(p) = store.write_piece(kind, id, *i, false, bytes.clone()).await {
            written.push(p);
        }
    }
    Ok(written)
}

/// Rebuild the object from its shards, and write the shards no target backend holds to the
/// targets in `lacking` (a shard held only off target is rewritten on target: a move).
#[allow(clippy::too_many_arguments)]
async fn write_shards(
    store: &Store,
    kind: ObjectKind,
    id: &ObjectId,
    scheme: Scheme,
    have: &[Piece],
    targets: &[usize],
    lacking: &[usize],
    verified: &mut HashMap<(usize, bool), Bytes>,
) -> Result<Vec<Piece>> {
    let Scheme::Erasure { data, parity } = scheme else { unreachable!("sharded scheme") };
    for p in have {
        if !verified.contains_key(&(p.backend, p.shard))
            && let Ok(b) = read_verified(store, kind, id, p).await
        {
            verified.insert((p.backend, p.shard), b);
        }
    }
    let held: Vec<(bool, Bytes)> = have
        .iter()
        .filter_map(|p| Some((targets.contains(&p.backend), verified.get(&(p.backend, p.shard))?.clone())))
        .collect();
    let id_owned = *id;
    let (present, all) = cpu(move || -> Result<(HashSet<u8>, Vec<Vec<u8>>)> {
        let opened =
            held.iter().map(|(t, b)| Ok((*t, redundancy::open_shard(&id_owned, b)?))).collect::<Result<Vec<_>>>()?;
        let shards: Vec<_> = opened.iter().map(|(_, s)| *s).collect();
        let object = redundancy::join(&id_owned, &shards)?;
        let present = opened.iter().filter(|(on_target, _)| *on_target).map(|(_, s)| s.index).collect();
        Ok((present, redundancy::split(&id_owned, &object, data, parity)?))
    })
    .await?;
    let missing = all.into_iter().enumerate().filter(|(i, _)| !present.contains(&(*i as u8)));
    let mut written = Vec::new();
    for ((_, shard), backend) in missing.zip(lacking) {
        if let Ok(p) = store.write_piece(kind, id, *backend, true, shard.into()).await {
            written.push(p);
        }
    }
    Ok(written)
}
