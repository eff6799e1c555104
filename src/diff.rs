//! Comparing two snapshots: which paths were added, removed, changed in content or type, or
//! changed only in metadata. Subtrees with the same id are skipped without being read.
//!
//! Owns: the comparison. Must not: read file content, except that of small files whose
//! slices differ at equal size (see `same_bytes`).

use crate::error::Result;
use crate::model::{ChunkRef, Node, NodeKind, Snapshot, Tree, TreeRef};
use crate::repository::Repository;

/// How a path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the second snapshot.
    Added,
    /// Only in the first.
    Removed,
    /// Content or type changed.
    Modified,
    /// Same content, other mode, owner or mtime.
    Metadata,
}

/// Every difference between `a` and `b`, in path order.
pub async fn diff(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Vec<(String, Change)>> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), Some(Repository::root(a)), Some(Repository::root(b)))];
    while let Some((prefix, ta, tb)) = stack.pop() {
        if let (Some(x), Some(y)) = (ta, tb)
            && x.id == y.id
        {
            continue;
        }
        let (ea, eb) = (load(repo, ta).await?, load(repo, tb).await?);
        let (mut i, mut j) = (0, 0);
        let mut subdirs = Vec::new();
        while i < ea.entries.len() || j < eb.entries.len() {
            let (na, nb) = (ea.entries.get(i), eb.entries.get(j));
            let order = match (na, nb) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let pick = |n: &Node| format!("{prefix}/{}", String::from_utf8_lossy(&n.name));
            match order {
                std::cmp::Ordering::Less => {
                    let n = na.expect("present");
                    out.push((pick(n), Change::Removed));
                    subdirs.push((pick(n), n.subtree(&ta.expect("has entries").pack), None));
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let n = nb.expect("present");
                    out.push((pick(n), Change::Added));
                    subdirs.push((pick(n), None, n.subtree(&tb.expect("has entries").pack)));
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (x, y) = (na.expect("present"), nb.expect("present"));
                    let path = pick(x);
                    if let Some(change) = compare(repo, x, y).await? {
                        out.push((path.clone(), change));
                    }
                    let (sx, sy) =
                        (x.subtree(&ta.expect("has entries").pack), y.subtree(&tb.expect("has entries").pack));
                    if sx.is_some() || sy.is_some() {
                        subdirs.push((path, sx, sy));
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    out.sort_by(|x, y| x.0.cmp(&y.0));
    Ok(out)
}

async fn load(repo: &Repository, tref: Option<TreeRef>) -> Result<Tree> {
    match tref {
        Some(t) => repo.tree(&t).await,
        None => Ok(Tree::default()),
    }
}

async fn compare(repo: &Repository, a: &Node, b: &Node) -> Result<Option<Change>> {
    let same_kind = std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind);
    let same_content = match (&a.kind, &b.kind) {
        (NodeKind::File { size: s, content: c }, NodeKind::File { size: t, content: d }) => {
            s == t && (c == d || (*s < repo.pool().chunker.min as u64 && same_bytes(repo, c, d).await?))
        }
        (NodeKind::Dir { .. }, NodeKind::Dir { .. }) => true, // children are compared one by one
        (x, y) => x == y,
    };
    let (m, n) = (&a.meta, &b.meta);
    let same_meta = (m.mode, m.uid, m.gid, m.mtime_ns, &m.xattrs) == (n.mode, n.uid, n.gid, n.mtime_ns, &n.xattrs);
    Ok(match (same_kind && same_content, same_meta) {
        (false, _) => Some(Change::Modified),
        (true, false) => Some(Change::Metadata),
        (true, true) => None,
    })
}

/// A small file read again (say after a chmod) is packed anew: other slices, maybe the same
/// bytes. Large files are chunked alone, so equal bytes always mean equal chunk lists.
async fn same_bytes(repo: &Repository, a: &[ChunkRef], b: &[ChunkRef]) -> Result<bool> {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    crate::restore::stream_content(repo, a, &mut x, false).await?;
    crate::restore::stream_content(repo, b, &mut y, false).await?;
    Ok(x == y)
}
