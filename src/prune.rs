//! Prune: delete the chunks and tree packs no snapshot references any more, after
//! repacking chunks that deleted small files left mostly unused (`repack`).
//!
//! Owns: computing what is live, what is garbage, when to repack, and the delete order.
//! Must not: forget snapshots (that is `forget`; only a repack replaces one by its
//! rewrite), or run without the exclusive lock (`Repository::prune` takes it and syncs
//! first, so every snapshot on the backends is known).
//!
//! Safety, in order: (1) the exclusive lock means no backup, restore or check is running,
//! here or on another machine; (2) the live set is walked from every snapshot, and any tree
//! that cannot be read aborts the prune before anything is deleted; (3) the list of objects
//! to delete is written to every backend (`prune/<id>`) *before* the first delete, so every
//! other catalogue stops counting on them at its next sync, which a backup does after
//! taking its lock.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;

use crate::codec::{self, ObjectKind};
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{self, NodeKind, PruneRecord, TreeRef};
use crate::progress::Progress;
use crate::repack::{self, RepackReport, Sparse};
use crate::repository::{Need, Repository};
use crate::store::{Piece, object_path};

/// What prune should do.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Only report what would be deleted (and repacked).
    pub dry_run: bool,
    /// Repack when live chunks hold more unused bytes than this fraction of the bytes
    /// snapshots use in them, until they hold at most that; `f64::INFINITY` never repacks.
    pub max_unused: f64,
}

impl Default for PruneOptions {
    /// Repack past 5% unused, as restic's `prune --max-unused` does by default.
    fn default() -> Self {
        PruneOptions { dry_run: false, max_unused: 0.05 }
    }
}

/// What prune found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    /// Snapshots kept.
    pub snapshots: u64,
    /// Objects the snapshots reference.
    pub live_objects: u64,
    /// Bytes those take on the backends.
    pub live_stored_bytes: u64,
    /// Objects no snapshot references (deleted unless `dry_run`).
    pub unused_objects: u64,
    /// Bytes those take on the backends.
    pub unused_stored_bytes: u64,
    /// Live chunks and tree packs of which some bytes are no longer referenced (small files
    /// deleted from a shared chunk, directories changed since their pack was written), left
    /// after repacking.
    pub partly_used_chunks: u64,
    /// Plain bytes in those that no snapshot references.
    pub partly_used_unreferenced_bytes: u64,
    /// What repacking did (or, with `dry_run`, would do) before the deletes.
    pub repack: RepackReport,
    /// True if nothing was deleted because of `dry_run`.
    pub dry_run: bool,
}

/// One stored piece (copy or shard) of an object.
struct Stored {
    kind: ObjectKind,
    id: ObjectId,
    piece: Piece,
}

impl Repository {
    /// Delete the objects no snapshot references (see the module doc), under the exclusive
    /// lock.
    pub async fn prune(&self, options: PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
        self.locked("prune", Need::Exclusive, run(self, options, progress)).await
    }
}

/// Run prune; the caller holds the exclusive lock and has synced.
async fn run(repo: &Repository, options: PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
    let mut report = PruneReport { dry_run: options.dry_run, ..PruneReport::default() };
    let mut live = live_set(repo).await?;
    let (sparse, used_bytes) = sparse_objects(repo, &live)?;
    let chosen = repack::choose(sparse, used_bytes, options.max_unused);
    if !chosen.is_empty() {
        if options.dry_run {
            report.repack = repack::planned(&chosen);
        } else {
            report.repack = repack::run(repo, &chosen, &live.slices, progress).await?;
            live = live_set(repo).await?;
        }
    }
    report.snapshots = live.snapshots;
    let (sparse, _) = sparse_objects(repo, &live)?;
    report.partly_used_chunks = sparse.len() as u64;
    report.partly_used_unreferenced_bytes = sparse.iter().map(|s| s.len - s.used).sum();
    let stored = list_stored(repo).await?;
    let mut garbage: Vec<&Stored> = Vec::new();
    let mut garbage_ids = HashSet::new();
    for s in &stored {
        if live.objects.contains(&s.id) {
            report.live_stored_bytes += s.piece.stored_len;
        } else {
            report.unused_stored_bytes += s.piece.stored_len;
            garbage_ids.insert(s.id);
            garbage.push(s);
        }
    }
    report.live_objects = live.objects.len() as u64;
    report.unused_objects = garbage_ids.len() as u64;
    if options.dry_run || garbage.is_empty() {
        return Ok(report);
    }

    let deleted: Vec<ObjectId> = garbage_ids.into_iter().collect();
    let record_id = publish_record(repo, &deleted).await?;
    progress.begin("prune", Some(garbage.len() as u64), None);
    // Stop deleting on Ctrl-C or when the lock is lost (a backup may then be re-using these
    // objects); what is left is deleted by the next prune.
    let abort = repo.interrupt_flag();
    let mut deletes = futures::stream::iter(garbage)
        .map(|s| {
            let abort = abort.clone();
            async move {
                if abort.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(Error::new(ErrorKind::Interrupted, "prune stopped before deleting everything"));
                }
                repo.store().delete_piece(s.kind, &s.id, &s.piece).await
            }
        })
        .buffer_unordered(16);
    let mut first_error = None;
    while let Some(result) = deletes.next().await {
        progress.advance(1, 0);
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    progress.end();
    // Applied even after a failed delete: those objects are listed as gone everywhere, and
    // the next prune deletes what is left of them.
    repo.catalogue().apply_prune(&record_id, &deleted)?;
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Write the list of objects about to be deleted to every backend.
async fn publish_record(repo: &Repository, deleted: &[ObjectId]) -> Result<ObjectId> {
    let record = PruneRecord { time_ns: crate::machine::now_ns(), deleted: deleted.to_vec() };
    let body = model::to_body(&record);
    let keys = repo.store().keys();
    let id = keys.id_of(&body);
    let envelope = codec::encode(ObjectKind::Prune, &id, &body, 3, keys);
    repo.store().put_everywhere(&object_path(ObjectKind::Prune, &id), &envelope).await?;
    Ok(id)
}

/// Everything the snapshots reference, which slices of each chunk they use, and how many
/// bytes of trees they use in each tree pack.
struct Live {
    snapshots: u64,
    objects: HashSet<ObjectId>,
    slices: HashMap<ObjectId, Vec<(u32, u32)>>,
    pack_use: HashMap<ObjectId, u64>,
}

async fn live_set(repo: &Repository) -> Result<Live> {
    let mut live = Live { snapshots: 0, objects: HashSet::new(), slices: HashMap::new(), pack_use: HashMap::new() };
    // By tree and pack: the same directory stored in two packs uses both.
    let mut seen = HashSet::new();
    for (sid, snapshot) in repo.snapshots()? {
        live.snapshots += 1;
        let root = Repository::root(&snapshot);
        live.objects.insert(root.pack);
        let mut stack: Vec<TreeRef> = vec![root];
        while let Some(tref) = stack.pop() {
            if !seen.insert((tref.id, tref.pack)) {
                continue;
            }
            // Never delete on a partial view: an unreadable tree stops the prune.
            let tree = repo.tree(&tref).await.map_err(|e| {
                Error::new(e.kind(), format!("prune stopped, nothing deleted: snapshot {}: {e}", sid.short()))
            })?;
            *live.pack_use.entry(tref.pack).or_default() += tree.to_body().len() as u64;
            for node in &tree.entries {
                match &node.kind {
                    NodeKind::File { content, .. } => {
                        for c in content {
                            live.objects.insert(c.id);
                            live.slices.entry(c.id).or_default().push((c.offset, c.len));
                        }
                    }
                    NodeKind::Dir { pack, .. } => {
                        live.objects.extend(pack);
                        stack.push(node.subtree(&tref.pack).expect("a directory"));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(live)
}

/// Every piece of every chunk and tree pack on every backend. Every backend must answer:
/// pieces on one that cannot be listed would be left behind (and prune's exclusive lock
/// already needed them all).
async fn list_stored(repo: &Repository) -> Result<Vec<Stored>> {
    let mut stored = Vec::new();
    for listed in repo.store().list_all_pieces().await {
        stored.extend(listed?.into_iter().map(|(kind, id, piece)| Stored { kind, id, piece }));
    }
    Ok(stored)
}

/// Live chunks and tree packs some of whose bytes no snapshot uses, and the plain bytes
/// snapshots use in all live ones.
fn sparse_objects(repo: &Repository, live: &Live) -> Result<(Vec<Sparse>, u64)> {
    let reader = repo.catalogue().reader()?;
    let (mut sparse, mut used_bytes) = (Vec::new(), 0);
    let chunks = live.slices.iter().map(|(id, ranges)| (ObjectKind::Chunk, id, covered(ranges)));
    let packs = live.pack_use.iter().map(|(id, used)| (ObjectKind::Tree, id, *used));
    for (kind, id, used) in chunks.chain(packs) {
        let Some(location) = reader.location(id)? else { continue };
        used_bytes += used;
        if used < location.plain_len {
            sparse.push(Sparse { kind, id: *id, len: location.plain_len, used });
        }
    }
    Ok((sparse, used_bytes))
}

/// Bytes covered by the union of (offset, len) ranges.
fn covered(ranges: &[(u32, u32)]) -> u64 {
    let mut sorted: Vec<(u64, u64)> = ranges.iter().map(|&(o, l)| (o as u64, o as u64 + l as u64)).collect();
    sorted.sort_unstable();
    let (mut total, mut end) = (0u64, 0u64);
    for (start, stop) in sorted {
        let start = start.max(end);
        if stop > start {
            total += stop - start;
            end = stop;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::covered;

    #[test]
    fn covered_counts_overlaps_once() {
        assert_eq!(covered(&[]), 0);
        assert_eq!(covered(&[(0, 10), (5, 10), (30, 5), (30, 5)]), 20);
        assert_eq!(covered(&[(10, 5), (0, 100)]), 100);
    }
}
