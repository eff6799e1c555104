//! Repacking, for prune: small files share chunks, so when some of them are gone from every
//! snapshot their bytes stay stored inside chunks that other files still use; likewise
//! directory listings in tree packs. When that dead weight passes `max_unused` of the live
//! data, the live slices of the sparsest such chunks are copied into new chunks, the live
//! trees of such packs into new packs, and the snapshots naming them are rewritten, so the
//! old objects become garbage for prune to delete.
//!
//! Files name slices of content-addressed chunks, so moving bytes means new trees, and a
//! rewritten snapshot gets a new id. It keeps its time, host, paths, tags, parent and
//! summary; the report lists old and new ids (like restic's `rewrite`). Subtrees that name
//! none of the moved chunks keep their trees and packs.
//!
//! Owns: choosing the chunks, copying their live slices, rewriting trees and snapshots.
//! Must not: delete anything but the replaced snapshot objects (prune deletes the rest),
//! or run outside prune's exclusive lock.

use std::collections::{HashMap, HashSet};

use crate::codec::ObjectKind;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{ChunkRef, Node, NodeKind, Snapshot, TreeRef};
use crate::pipeline::pack::Pack;
use crate::pipeline::rebuild::{BoxFuture, Packs, Uploads, travelling};
use crate::pipeline::trees::{DirTree, Group};
use crate::progress::Progress;
use crate::repository::Repository;

/// A live chunk or tree pack some of whose bytes no snapshot uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sparse {
    pub kind: ObjectKind,
    pub id: ObjectId,
    /// Plain length of the chunk.
    pub len: u64,
    /// Bytes some snapshot uses.
    pub used: u64,
}

/// The chunks worth repacking: sparsest first, until what is left unused is at most
/// `max_unused` (a fraction) of `used_bytes`, the bytes snapshots use. Empty when it is
/// already below.
pub(crate) fn choose(mut sparse: Vec<Sparse>, used_bytes: u64, max_unused: f64) -> Vec<Sparse> {
    let allowed = (used_bytes as f64 * max_unused) as u64;
    let mut unused: u64 = sparse.iter().map(|s| s.len - s.used).sum();
    // Fewest used bytes per byte reclaimed first: the cheapest copies that free the most.
    sparse.sort_by(|a, b| (a.used as f64 / a.len as f64).total_cmp(&(b.used as f64 / b.len as f64)));
    let mut chosen = Vec::new();
    for s in sparse {
        if unused <= allowed {
            break;
        }
        unused -= s.len - s.used;
        chosen.push(s);
    }
    chosen
}

/// What a repack did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepackReport {
    /// Chunks whose live slices were copied.
    pub chunks: u64,
    /// Tree packs whose live trees were moved.
    pub tree_packs: u64,
    /// Plain bytes copied into new chunks (trees moved are not counted).
    pub copied_bytes: u64,
    /// Plain bytes the old chunks and packs held that no snapshot used.
    pub freed_bytes: u64,
    /// Snapshots rewritten: (old id, new id), hex.
    pub rewritten: Vec<(String, String)>,
}

/// What `run` would do with `chosen`, without doing it.
pub(crate) fn planned(chosen: &[Sparse]) -> RepackReport {
    let chunks = || chosen.iter().filter(|s| s.kind == ObjectKind::Chunk);
    RepackReport {
        chunks: chunks().count() as u64,
        tree_packs: (chosen.len() - chunks().count()) as u64,
        copied_bytes: chunks().map(|s| s.used).sum(),
        freed_bytes: chosen.iter().map(|s| s.len - s.used).sum(),
        rewritten: Vec::new(),
    }
}

/// Copy the live `slices` of the `chosen` chunks into new chunks, then rewrite every
/// snapshot that names them. New chunks and trees are durable before any new snapshot is
/// written, and each old snapshot is forgotten only after its replacement is written, so an
/// interruption leaves at worst a duplicate snapshot (the next prune rewrites it the same
/// way) and unreferenced new objects (garbage).
pub(crate) async fn run(
    repo: &Repository,
    chosen: &[Sparse],
    slices: &HashMap<ObjectId, Vec<(u32, u32)>>,
    progress: &dyn Progress,
) -> Result<RepackReport> {
    let mut report = RepackReport { copied_bytes: 0, ..planned(chosen) };
    let chunks: Vec<Sparse> = chosen.iter().filter(|s| s.kind == ObjectKind::Chunk).copied().collect();
    progress.begin("repack", Some(chunks.len() as u64), None);
    let relocated = copy_slices(repo, &chunks, slices, &mut report, progress).await;
    progress.end();
    let (moved, relocated) = (chosen.iter().map(|s| s.id).collect(), relocated?);
    let mut rewriter = Rewriter::new(repo, &moved, &relocated);
    for (old, snapshot) in repo.snapshots()? {
        let Some(new) = rewriter.snapshot(&snapshot).await? else { continue };
        let compression = repo.config().compression;
        let id = crate::pipeline::commit_snapshot(repo.store(), repo.catalogue_arc(), compression, &new).await?;
        if id != old {
            repo.forget(&[old]).await?;
        }
        report.rewritten.push((old.to_hex(), id.to_hex()));
    }
    Ok(report)
}

/// Where each live slice of a moved chunk went: (chunk, offset, len) -> new slices.
type Relocated = HashMap<(ObjectId, u32, u32), Vec<ChunkRef>>;

/// Append every live slice of the chosen chunks to one pack stream, in chunk order (so
/// files packed together stay together), and store the chunks it cuts.
async fn copy_slices(
    repo: &Repository,
    chosen: &[Sparse],
    slices: &HashMap<ObjectId, Vec<(u32, u32)>>,
    report: &mut RepackReport,
    progress: &dyn Progress,
) -> Result<Relocated> {
    let keys = repo.store().keys().clone();
    let mut pack = Pack::new(repo.pool().chunker, keys.chunker_seed());
    let mut order: Vec<(ObjectId, u32, u32)> = Vec::new();
    let mut uploads = Uploads::start(repo)?;
    let mut cut: Vec<(ObjectId, Vec<u8>)> = Vec::new();
    for s in chosen {
        let body = repo.store().get(ObjectKind::Chunk, &s.id, &repo.location_hint(&s.id)).await?;
        let mut own: Vec<(u32, u32)> = slices.get(&s.id).cloned().unwrap_or_default();
        own.sort_unstable();
        own.dedup();
        for (offset, len) in own {
            let bytes = body.get(offset as usize..offset as usize + len as usize).ok_or_else(|| {
                Error::corrupt(format!("a slice {offset}+{len} lies outside chunk {}", s.id.to_hex()))
            })?;
            report.copied_bytes += len as u64;
            pack.add(order.len() as u64, bytes, &mut |c| named(&keys, c, &mut cut));
            order.push((s.id, offset, len));
            uploads.send_all(ObjectKind::Chunk, &mut cut).await;
        }
        progress.advance(1, s.len);
    }
    pack.flush(&mut |c| named(&keys, c, &mut cut));
    uploads.send_all(ObjectKind::Chunk, &mut cut).await;
    uploads.finish().await?;
    Ok(order.into_iter().enumerate().map(|(slot, key)| (key, pack.take(slot as u64))).collect())
}

fn named(keys: &crate::crypto::Keys, chunk: &[u8], out: &mut Vec<(ObjectId, Vec<u8>)>) -> ObjectId {
    let id = keys.id_of_large(chunk);
    out.push((id, chunk.to_vec()));
    id
}

type Built = (ObjectId, Group);

/// Rewrites trees that name moved chunks or lie in moved packs. Snapshots share most of
/// their trees, so what is found about a tree is kept.
struct Rewriter<'a> {
    repo: &'a Repository,
    moved: &'a HashSet<ObjectId>,
    relocated: &'a Relocated,
    /// Whether a tree (by id and the pack it is stored in) must be rebuilt: it, or
    /// something below it, names a moved chunk or lies in a moved pack.
    needs: HashMap<(ObjectId, ObjectId), bool>,
    /// A rebuilt tree's new id and the bodies travelling up with it.
    built: HashMap<(ObjectId, ObjectId), Built>,
    /// Packs of the snapshot being rewritten, to store before it.
    packs: Packs,
}

impl<'a> Rewriter<'a> {
    fn new(repo: &'a Repository, moved: &'a HashSet<ObjectId>, relocated: &'a Relocated) -> Rewriter<'a> {
        Rewriter { repo, moved, relocated, needs: HashMap::new(), built: HashMap::new(), packs: Packs::default() }
    }

    /// The snapshot with its trees rewritten, or `None` if it names no moved chunk. Its new
    /// tree packs are durable when it is returned.
    async fn snapshot(&mut self, snapshot: &Snapshot) -> Result<Option<Snapshot>> {
        let root = Repository::root(snapshot);
        if !self.needs(root).await? {
            return Ok(None);
        }
        let (tree, group) = self.build(root).await?;
        let tree_pack = self.packs.stash(self.repo, group);
        self.packs.store(self.repo).await?;
        Ok(Some(Snapshot { tree, tree_pack, ..snapshot.clone() }))
    }

    fn needs(&mut self, tref: TreeRef) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            if let Some(&n) = self.needs.get(&(tref.id, tref.pack)) {
                return Ok(n);
            }
            let tree = self.repo.tree(&tref).await?;
            // A tree in a pack being emptied moves too, so its parent is rebuilt.
            let mut needed = self.moved.contains(&tref.pack);
            for node in &tree.entries {
                needed |= match &node.kind {
                    NodeKind::File { content, .. } => content.iter().any(|r| self.moved.contains(&r.id)),
                    NodeKind::Dir { .. } => self.needs(node.subtree(&tref.pack).expect("a directory")).await?,
                    _ => false,
                };
            }
            self.needs.insert((tref.id, tref.pack), needed);
            Ok(needed)
        })
    }

    /// Rebuild a tree that `needs` rewriting: files get their new slices; subdirectories
    /// that need it are rebuilt; others that shared this tree's pack travel up with the new
    /// one; those in packs of their own stay there.
    fn build(&mut self, tref: TreeRef) -> BoxFuture<'_, Result<Built>> {
        Box::pin(async move {
            if let Some(b) = self.built.get(&(tref.id, tref.pack)) {
                return Ok(b.clone());
            }
            let tree = self.repo.tree(&tref).await?;
            let mut out = DirTree::default();
            for node in tree.entries {
                match node.kind {
                    NodeKind::File { size, ref content } => {
                        let content = self.relocate(content)?;
                        out.push(Node { kind: NodeKind::File { size, content }, ..node });
                    }
                    NodeKind::Dir { tree: id, pack } => {
                        let child = node.subtree(&tref.pack).expect("a directory");
                        let (id, group) = if self.needs(child).await? {
                            self.build(child).await?
                        } else if pack.is_some() {
                            out.push(node);
                            continue;
                        } else {
                            (id, travelling(self.repo, child).await?)
                        };
                        out.push_subtree(node.name, node.meta, id, group, &mut |g| Ok(self.packs.stash(self.repo, g)))?;
                    }
                    _ => out.push(node),
                }
            }
            let built = out.finish(self.repo.store().keys());
            self.built.insert((tref.id, tref.pack), built.clone());
            Ok(built)
        })
    }

    fn relocate(&self, content: &[ChunkRef]) -> Result<Vec<ChunkRef>> {
        let mut out = Vec::with_capacity(content.len());
        for r in content {
            if !self.moved.contains(&r.id) {
                out.push(*r);
                continue;
            }
            let new = self.relocated.get(&(r.id, r.offset, r.len)).ok_or_else(|| {
                Error::new(ErrorKind::Corrupt, format!("a slice of chunk {} was not copied", r.id.to_hex()))
            })?;
            out.extend_from_slice(new);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse(n: u8, len: u64, used: u64) -> Sparse {
        Sparse { kind: ObjectKind::Chunk, id: ObjectId([n; 32]), len, used }
    }

    #[test]
    fn choose_takes_the_sparsest_until_unused_is_within_the_limit() {
        let all = vec![sparse(1, 100, 90), sparse(2, 100, 10), sparse(3, 100, 50), sparse(4, 100, 99)];
        // 151 unused of 1,000 live bytes: 15%.
        assert!(choose(all.clone(), 1_000, 0.20).is_empty(), "under the limit: nothing");
        let ids = |c: Vec<Sparse>| c.iter().map(|s| s.id.0[0]).collect::<Vec<_>>();
        // 10% allows 100: taking chunk 2 (90 unused) leaves 61.
        assert_eq!(ids(choose(all.clone(), 1_000, 0.10)), [2]);
        // 1% allows 10: chunks 2, 3 (50), then 1 (10) leaves 1.
        assert_eq!(ids(choose(all.clone(), 1_000, 0.01)), [2, 3, 1]);
        assert!(choose(all, 1_000, f64::INFINITY).is_empty());
    }
}
