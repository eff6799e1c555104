//! Rebuilding parts of stored snapshots: what repack (moved chunks) and rewrite (dropped
//! entries) share. A rebuilt directory gets a new tree; its unchanged subdirectories keep
//! their trees, and those that shared the old directory's pack travel up, as stored, with
//! the new one (`travelling`). New packs are kept (`Packs`) and stored before the snapshot
//! that names them (`Uploads`).
//!
//! Owns: re-encoding unchanged trees exactly and getting new objects to the pool. Must
//! not: decide which trees change (its callers do).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::mpsc;

use crate::codec::ObjectKind;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::model::{NodeKind, TreeRef};
use crate::pipeline::trees::Group;
use crate::pipeline::upload::{Job, Uploader};
use crate::repository::Repository;

/// A boxed future, for the recursive walks over trees.
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// New objects on their way to the pool (objects the pool has are skipped).
pub(crate) struct Uploads {
    jobs: mpsc::Sender<Job>,
    uploader: Uploader,
    reader: crate::catalogue::Reader,
    queued: HashSet<ObjectId>,
}

impl Uploads {
    pub(crate) fn start(repo: &Repository) -> Result<Uploads> {
        let (uploader, jobs) = Uploader::start(
            repo.store().clone(),
            repo.catalogue_arc(),
            repo.config().compression,
            repo.upload_concurrency(),
            Arc::new(AtomicBool::new(false)),
        );
        Ok(Uploads { jobs, uploader, reader: repo.catalogue().reader()?, queued: HashSet::new() })
    }

    pub(crate) async fn send_all(&mut self, kind: ObjectKind, objects: &mut Vec<(ObjectId, Vec<u8>)>) {
        for (id, body) in objects.drain(..) {
            if self.reader.has_object(&id).unwrap_or(false) || !self.queued.insert(id) {
                continue;
            }
            // A closed channel means an upload failed: `finish` reports it.
            let _ = self.jobs.send(Job { kind, id, body: Arc::new(body) }).await;
        }
    }

    /// Wait until everything sent is durable (or say what failed).
    pub(crate) async fn finish(self) -> Result<()> {
        drop(self.jobs);
        self.uploader.finish().await.map(|_| ())
    }
}

/// Tree packs made while rebuilding, kept until the snapshot naming them is written.
#[derive(Default)]
pub(crate) struct Packs {
    pending: Vec<(ObjectId, Vec<u8>)>,
}

impl Packs {
    /// Keep `group` as a pack to store; its id.
    pub(crate) fn stash(&mut self, repo: &Repository, group: Group) -> ObjectId {
        let body = group.into_pack_body();
        let id = repo.store().keys().id_of(&body);
        self.pending.push((id, body));
        id
    }

    /// Store the packs kept so far; they are durable when this returns.
    pub(crate) async fn store(&mut self, repo: &Repository) -> Result<()> {
        let mut uploads = Uploads::start(repo)?;
        uploads.send_all(ObjectKind::Tree, &mut self.pending).await;
        uploads.finish().await
    }
}

/// An unchanged tree and the subtrees stored in the same pack as it, as they are, to travel
/// up with a rebuilt parent. Each body is re-encoded and checked against its id, so a parent
/// never names a body that is not what its id says.
pub(crate) fn travelling(repo: &Repository, tref: TreeRef) -> BoxFuture<'_, Result<Group>> {
    Box::pin(async move {
        let tree = repo.tree(&tref).await?;
        let mut group = Group::default();
        for node in &tree.entries {
            if let NodeKind::Dir { pack: None, .. } = node.kind {
                let sub = travelling(repo, node.subtree(&tref.pack).expect("a directory")).await?;
                group.size += sub.size;
                group.trees.extend(sub.trees);
            }
        }
        let body = tree.to_body();
        if repo.store().keys().id_of(&body) != tref.id {
            return Err(Error::corrupt(format!("tree {} does not re-encode to its id", tref.id.to_hex())));
        }
        group.size += body.len();
        group.trees.push((tref.id, body));
        Ok(group)
    })
}
