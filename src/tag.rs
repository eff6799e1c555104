//! `tag`: change the tags of existing snapshots (restic's `--add`, `--remove`, `--set`).
//!
//! Owns: the rule for a tag change. Must not: touch trees or data; only snapshot records.
//!
//! A snapshot's id is the hash of its record, tags included, so a changed snapshot is a new
//! record: it is written to every backend before the old one is forgotten, so an interruption
//! leaves at worst both (the same files twice, with different tags), never neither.

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::model::{DRIVE_HEAD_TAG, Snapshot};
use crate::repository::{Need, Repository};

/// How to change the tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChange {
    /// Tags to add.
    pub add: Vec<String>,
    /// Tags to remove.
    pub remove: Vec<String>,
    /// Replace all tags by these (then `add` and `remove` apply), when given.
    pub set: Option<Vec<String>>,
}

impl TagChange {
    /// True when the change changes nothing whatever the snapshot.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.set.is_none()
    }

    /// The tags `tags` become: sorted, without repeats. The live drive's head tag is the
    /// drive's own: kept where it is, never added.
    fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = match &self.set {
            Some(set) => set.clone(),
            None => tags.to_vec(),
        };
        out.extend(self.add.iter().cloned());
        out.retain(|t| !self.remove.contains(t) && t != DRIVE_HEAD_TAG);
        if tags.iter().any(|t| t == DRIVE_HEAD_TAG) {
            out.push(DRIVE_HEAD_TAG.to_string());
        }
        out.sort();
        out.dedup();
        out
    }
}

impl Repository {
    /// Change the tags of `snapshots`; returns (old id, new id) for each one that changed.
    pub async fn tag(
        &self,
        snapshots: &[(ObjectId, Snapshot)],
        change: &TagChange,
    ) -> Result<Vec<(ObjectId, ObjectId)>> {
        if change.is_empty() {
            return Err(Error::config("give --add, --remove or --set"));
        }
        if change.add.iter().chain(change.set.iter().flatten()).any(|t| t == DRIVE_HEAD_TAG || t.is_empty()) {
            return Err(Error::config(format!(
                "the tag '{DRIVE_HEAD_TAG}' is the drive's own, and tags cannot be empty"
            )));
        }
        self.locked("tag", Need::Shared, async {
            let mut changed = Vec::new();
            for (old, snapshot) in snapshots {
                let mut current = snapshot.tags.clone();
                current.sort();
                let tags = change.apply(&snapshot.tags);
                if tags == current {
                    continue;
                }
                let new = Snapshot { tags, ..snapshot.clone() };
                let compression = self.config().compression;
                let id =
                    crate::pipeline::commit_snapshot(self.store(), self.catalogue_arc(), compression, &new).await?;
                self.forget(&[*old]).await?;
                changed.push((*old, id));
            }
            Ok(changed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn set_then_add_then_remove_and_the_drive_head_stays() {
        let change = TagChange { add: tags(&["b", "a"]), remove: tags(&["x"]), set: None };
        assert_eq!(change.apply(&tags(&["x", "c"])), tags(&["a", "b", "c"]));
        let change = TagChange { set: Some(tags(&["only"])), ..TagChange::default() };
        assert_eq!(change.apply(&tags(&["x", DRIVE_HEAD_TAG])), tags(&[DRIVE_HEAD_TAG, "only"]));
        let change = TagChange { remove: tags(&[DRIVE_HEAD_TAG]), ..TagChange::default() };
        assert_eq!(change.apply(&tags(&[DRIVE_HEAD_TAG])), tags(&[DRIVE_HEAD_TAG]));
    }
}
