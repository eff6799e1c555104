//! `rewrite`: new snapshots without the entries that `--exclude` names (or with only those
//! `--include` names), e.g. a secret backed up by mistake, as restic's `rewrite` does. A
//! rewritten snapshot keeps exactly what `restore` with the same patterns would write.
//!
//! Owns: which entries go, rebuilding the trees above them, the new snapshot's record. Must
//! not: delete data (prune does, once no snapshot names it).
//!
//! The new snapshot keeps its time, host, user, paths, tags and parent; its counters lose
//! what was dropped; it gains the tag `rewrite` unless the original is forgotten. Only
//! directories on the way to a dropped entry get new trees: the rest keep theirs, so a
//! rewrite costs a few tree packs and one snapshot record. Each new snapshot is written
//! before its original is forgotten, so an interruption leaves at worst both.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::model::{DRIVE_HEAD_TAG, Node, NodeKind, Snapshot, Summary, TreeRef};
use crate::pipeline::rebuild::{BoxFuture, Packs, travelling};
use crate::pipeline::trees::{DirTree, Group};
use crate::repository::{Need, Repository};
use crate::restore::{Choice, Chooser, Select};

/// The tag a rewritten snapshot gets when its original is kept (restic's).
pub const REWRITE_TAG: &str = "rewrite";

/// What to drop and what to do with the originals.
#[derive(Debug, Clone, Default)]
pub struct RewriteOptions {
    /// Which entries stay: those `restore` with these patterns would write.
    pub select: Select,
    /// Forget each original once its new snapshot is written (else the new one is tagged
    /// `rewrite`).
    pub forget: bool,
    /// Only say what would be dropped.
    pub dry_run: bool,
}

/// What became of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing in it matched: left as it was.
    Unchanged,
    /// Written as this new snapshot.
    Written(ObjectId),
    /// It would be rewritten (a dry run).
    Planned,
    /// Nothing would be left: kept as it is (`forget` removes it).
    WouldBeEmpty,
}

/// Entries left out of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// The topmost entries dropped, as paths below the snapshot's root.
    pub paths: Vec<String>,
    /// Regular files dropped (those below dropped directories included).
    pub files: u64,
    /// Directories dropped.
    pub dirs: u64,
    /// Other entries dropped.
    pub others: u64,
    /// Bytes of the files dropped.
    pub bytes: u64,
}

/// One snapshot's rewrite.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The original.
    pub old: ObjectId,
    /// What became of it.
    pub outcome: Outcome,
    /// What was (or would be) left out.
    pub dropped: Dropped,
}

impl Repository {
    /// Rewrite `snapshots` keeping only what `options.select` keeps. The live drive's head
    /// is not rewritten (delete the file through the drive): naming it is an error.
    pub async fn rewrite(
        &self,
        snapshots: &[(ObjectId, Snapshot)],
        options: &RewriteOptions,
    ) -> Result<Vec<Rewritten>> {
        if let Some((id, _)) = snapshots.iter().find(|(_, s)| is_drive_head(s)) {
            return Err(Error::config(format!(
                "snapshot {} is the live drive's state: delete the file through the drive (or its mount) instead",
                id.short()
            )));
        }
        let need = if options.dry_run { Need::ReadOnly } else { Need::Shared };
        self.locked("rewrite", need, async {
            let mut done = Vec::with_capacity(snapshots.len());
            for (old, snapshot) in snapshots {
                done.push(rewrite_one(self, *old, snapshot, options).await?);
            }
            Ok(done)
        })
        .await
    }
}

/// True for the snapshot holding the live drive's state.
pub(crate) fn is_drive_head(s: &Snapshot) -> bool {
    s.tags.iter().any(|t| t == DRIVE_HEAD_TAG)
}

async fn rewrite_one(
    repo: &Repository,
    old: ObjectId,
    snapshot: &Snapshot,
    options: &RewriteOptions,
) -> Result<Rewritten> {
    let mut editor = Editor {
        repo,
        chooser: Chooser::new(&options.select, &snapshot.paths)?,
        packs: Packs::default(),
        dropped: Dropped::default(),
    };
    // The root is not kept emptied: a snapshot of nothing is not written.
    let edit = editor.edit(Repository::root(snapshot), String::new(), false, false).await?;
    let dropped = std::mem::take(&mut editor.dropped);
    let outcome = match edit {
        Edit::Same => Outcome::Unchanged,
        Edit::Gone => Outcome::WouldBeEmpty,
        Edit::New(..) if options.dry_run => Outcome::Planned,
        Edit::New(tree, group) => {
            let tree_pack = editor.packs.stash(repo, group);
            editor.packs.store(repo).await?;
            let new = rewritten(snapshot, tree, tree_pack, &dropped, options.forget);
            let compression = repo.config().compression;
            let id = crate::pipeline::commit_snapshot(repo.store(), repo.catalogue_arc(), compression, &new).await?;
            if options.forget && id != old {
                repo.forget(&[old]).await?;
            }
            Outcome::Written(id)
        }
    };
    Ok(Rewritten { old, outcome, dropped })
}

/// The new record: the original's, with the new root, fewer counted entries and the tag.
fn rewritten(s: &Snapshot, tree: ObjectId, tree_pack: ObjectId, dropped: &Dropped, forget: bool) -> Snapshot {
    let mut tags = s.tags.clone();
    if !forget && !tags.iter().any(|t| t == REWRITE_TAG) {
        tags.push(REWRITE_TAG.to_string());
        tags.sort();
    }
    let summary = Summary {
        files: s.summary.files.saturating_sub(dropped.files),
        dirs: s.summary.dirs.saturating_sub(dropped.dirs),
        others: s.summary.others.saturating_sub(dropped.others),
        bytes: s.summary.bytes.saturating_sub(dropped.bytes),
        ..s.summary.clone()
    };
    Snapshot { tree, tree_pack, tags, summary, program_version: env!("CARGO_PKG_VERSION").to_string(), ..s.clone() }
}

/// What became of one directory.
enum Edit {
    /// Nothing below it dropped.
    Same,
    /// Looked into for included entries and none found: it goes too.
    Gone,
    /// Rebuilt: its new tree and the bodies travelling up with it.
    New(ObjectId, Group),
}

struct Editor<'a> {
    repo: &'a Repository,
    chooser: Chooser,
    packs: Packs,
    dropped: Dropped,
}

impl Editor<'_> {
    /// Edit the directory at `path`; `inside` when a directory above was included, `keep`
    /// when it stays even if emptied (all but directories only looked into).
    fn edit(&mut self, tref: TreeRef, path: String, inside: bool, keep: bool) -> BoxFuture<'_, Result<Edit>> {
        Box::pin(async move {
            if inside && !self.chooser.excludes_any() {
                return Ok(Edit::Same);
            }
            let tree = self.repo.tree(&tref).await?;
            let mut kept: Vec<(Node, Option<Edit>)> = Vec::with_capacity(tree.entries.len());
            let mut changed = false;
            for node in tree.entries {
                let child = join(&path, &node.name);
                let sub = node.subtree(&tref.pack);
                match self.chooser.choose(&child, sub.is_some(), inside) {
                    Choice::Skip => {
                        self.drop_entry(&node, sub, child).await?;
                        changed = true;
                    }
                    choice => {
                        let edit = match sub {
                            Some(sub) => Some(self.edit_child(sub, child, choice).await?),
                            None => None,
                        };
                        match edit {
                            Some(Edit::Gone) => changed = true,
                            Some(Edit::New(..)) => {
                                changed = true;
                                kept.push((node, edit));
                            }
                            _ => kept.push((node, edit)),
                        }
                    }
                }
            }
            if kept.is_empty() && !keep {
                self.dropped.dirs += 1;
                return Ok(Edit::Gone);
            }
            if !changed {
                return Ok(Edit::Same);
            }
            self.build(tref, kept).await
        })
    }

    /// Edit a subdirectory; one only looked into that turns out empty is listed as one
    /// dropped path rather than every entry below it.
    async fn edit_child(&mut self, sub: TreeRef, child: String, choice: Choice) -> Result<Edit> {
        let mark = self.dropped.paths.len();
        let edit = self.edit(sub, child.clone(), choice == Choice::Whole, choice == Choice::Whole).await?;
        if let Edit::Gone = edit {
            self.dropped.paths.truncate(mark);
            self.dropped.paths.push(child);
        }
        Ok(edit)
    }

    async fn build(&mut self, tref: TreeRef, kept: Vec<(Node, Option<Edit>)>) -> Result<Edit> {
        let mut out = DirTree::default();
        for (node, edit) in kept {
            let (id, group) = match (edit, &node.kind) {
                (Some(Edit::New(id, group)), _) => (id, group),
                (_, NodeKind::Dir { tree, pack: None }) => {
                    (*tree, travelling(self.repo, node.subtree(&tref.pack).expect("a directory")).await?)
                }
                _ => {
                    out.push(node);
                    continue;
                }
            };
            let (repo, packs) = (self.repo, &mut self.packs);
            out.push_subtree(node.name, node.meta, id, group, &mut |g| Ok(packs.stash(repo, g)))?;
        }
        let (id, group) = out.finish(self.repo.store().keys());
        Ok(Edit::New(id, group))
    }

    /// Count an entry left out, and everything below it.
    async fn drop_entry(&mut self, node: &Node, sub: Option<TreeRef>, path: String) -> Result<()> {
        self.dropped.paths.push(path);
        count(self.repo, node, sub, &mut self.dropped).await
    }
}

fn count<'a>(
    repo: &'a Repository,
    node: &'a Node,
    sub: Option<TreeRef>,
    into: &'a mut Dropped,
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        match (&node.kind, sub) {
            (NodeKind::File { size, .. }, _) => {
                into.files += 1;
                into.bytes += size;
            }
            (NodeKind::Dir { .. }, Some(sub)) => {
                into.dirs += 1;
                for child in repo.tree(&sub).await?.entries {
                    let below = child.subtree(&sub.pack);
                    count(repo, &child, below, into).await?;
                }
            }
            _ => into.others += 1,
        }
        Ok(())
    })
}

fn join(path: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if path.is_empty() { name.into_owned() } else { format!("{path}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(tags: &[&str]) -> Snapshot {
        Snapshot {
            time_ns: 1,
            hostname: "h".into(),
            username: "u".into(),
            paths: vec!["/a".into()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            tree: ObjectId([1; 32]),
            tree_pack: ObjectId([2; 32]),
            parent: None,
            summary: Summary { files: 10, dirs: 3, others: 1, bytes: 1000, ..Summary::default() },
            program_version: "0".into(),
        }
    }

    #[test]
    fn the_new_record_keeps_the_original_but_its_root_counts_and_tag() {
        let dropped = Dropped { paths: vec!["a/x".into()], files: 2, dirs: 1, others: 0, bytes: 300 };
        let new = rewritten(&snapshot(&["b", "a"]), ObjectId([3; 32]), ObjectId([4; 32]), &dropped, false);
        assert_eq!(new.tags, ["a", "b", "rewrite"]);
        assert_eq!((new.summary.files, new.summary.dirs, new.summary.bytes), (8, 2, 700));
        assert_eq!((new.time_ns, new.hostname.as_str(), new.tree), (1, "h", ObjectId([3; 32])));
        let new = rewritten(&snapshot(&["a"]), ObjectId([3; 32]), ObjectId([4; 32]), &dropped, true);
        assert_eq!(new.tags, ["a"], "with --forget the original is gone: no tag needed");
    }
}
