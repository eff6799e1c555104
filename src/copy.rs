//! `copy`: snapshots of one pool stored in another (restic's `copy`), which may have other
//! backends, keys, chunker seed and redundancy. Files are read from the source pool and
//! chunked afresh for the target, so what the target already holds (an earlier copy, a
//! backup of the same files) is not stored again.
//!
//! Owns: which snapshots to copy (those the target lacks), reading the source for the
//! backup walker. Must not: change the source (it is read under a read-only lock).
//!
//! The walker runs on a blocking thread and asks for trees and chunks over a channel; an
//! async loop here answers from the source pool, several chunks at once. A file's next
//! chunks are asked for before they are read, and recent chunks are kept, since small files
//! share them. Memory stays bounded: `AHEAD` chunks in flight, `KEPT` kept.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use crate::backup::{BackupOutcome, TreeSource};
use crate::codec::ObjectKind;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{ChunkRef, Snapshot, Tree, TreeRef};
use crate::progress::Progress;
use crate::repository::{Need, Repository};

/// Chunks of a file asked for ahead of the one being read.
const AHEAD: usize = 8;
/// Decoded chunks kept, for the small files that share them.
const KEPT: usize = 8;

/// What became of one snapshot.
#[derive(Debug)]
pub enum Copied {
    /// Stored in the target as this snapshot.
    Written(ObjectId, Box<BackupOutcome>),
    /// The target has it already (same time, host, user, paths and tags): this one.
    Present(ObjectId),
}

impl Repository {
    /// Copy `snapshots` of `from` into this pool, oldest first, skipping those it has.
    pub async fn copy(
        &self,
        from: &Repository,
        snapshots: &[(ObjectId, Snapshot)],
        progress: Arc<dyn Progress>,
    ) -> Result<Vec<(ObjectId, Copied)>> {
        if from.pool().pool_id == self.pool().pool_id {
            return Err(Error::config("the source and the target are the same pool"));
        }
        let mut order = snapshots.to_vec();
        order.sort_by_key(|(_, s)| s.time_ns);
        let work = async {
            let mut done = Vec::with_capacity(order.len());
            for (id, snapshot) in &order {
                if let Some((there, _)) = self.snapshots()?.into_iter().find(|(_, s)| same(s, snapshot)) {
                    done.push((*id, Copied::Present(there)));
                    continue;
                }
                let outcome = copy_one(self, from, snapshot, progress.clone()).await?;
                done.push((*id, Copied::Written(outcome.id, Box::new(outcome))));
            }
            Ok(done)
        };
        self.locked("copy", Need::Shared, from.locked("copy", Need::ReadOnly, work)).await
    }
}

/// The same snapshot, copied before: all but its trees and parent, which differ by pool.
fn same(a: &Snapshot, b: &Snapshot) -> bool {
    let tags = |s: &Snapshot| {
        let mut t = s.tags.clone();
        t.sort();
        t
    };
    a.time_ns == b.time_ns
        && a.hostname == b.hostname
        && a.username == b.username
        && a.paths == b.paths
        && tags(a) == tags(b)
}

async fn copy_one(
    target: &Repository,
    from: &Repository,
    snapshot: &Snapshot,
    progress: Arc<dyn Progress>,
) -> Result<BackupOutcome> {
    let (asks, rx) = mpsc::channel(AHEAD * 2);
    let source = Box::new(Remote { asks, kept: VecDeque::new() });
    // The walker gets each failure to read the source as the answer it asked for; the loop
    // ends when the walker does (and drops its side).
    let ((), copied) = tokio::join!(serve(from, rx), crate::backup::backup_tree(target, source, snapshot, progress));
    copied
}

/// A question from the walker.
enum Ask {
    Tree(TreeRef, oneshot::Sender<Result<Tree>>),
    Chunk(ObjectId, oneshot::Sender<Result<Arc<Vec<u8>>>>),
}

/// Answer the walker until it is done, several questions at once.
async fn serve(from: &Repository, mut rx: mpsc::Receiver<Ask>) {
    let mut inflight = FuturesUnordered::new();
    loop {
        tokio::select! {
            ask = rx.recv() => match ask {
                Some(ask) => inflight.push(answer(from, ask)),
                None => break,
            },
            Some(()) = inflight.next(), if !inflight.is_empty() => {}
        }
    }
    while inflight.next().await.is_some() {}
}

async fn answer(from: &Repository, ask: Ask) {
    // Both pools may name their backends alike: say which pool failed.
    let sourced = |e: Error| Error::new(e.kind(), format!("the source pool: {}", e.context()));
    // A walker gone meanwhile (it failed) no longer waits for the answer.
    match ask {
        Ask::Tree(tref, reply) => {
            let _ = reply.send(from.tree(&tref).await.map_err(sourced));
        }
        Ask::Chunk(id, reply) => {
            let got = from.store().get(ObjectKind::Chunk, &id, &from.location_hint(&id)).await;
            let _ = reply.send(got.map(Arc::new).map_err(sourced));
        }
    }
}

/// A chunk's body, when the source pool has answered.
type Pending = oneshot::Receiver<Result<Arc<Vec<u8>>>>;

/// The walker's side: questions out, answers back, on its blocking thread.
struct Remote {
    asks: mpsc::Sender<Ask>,
    kept: VecDeque<(ObjectId, Arc<Vec<u8>>)>,
}

impl Remote {
    fn ask_chunk(&self, id: ObjectId) -> Pending {
        let (tx, rx) = oneshot::channel();
        // A closed channel drops `tx`: the receiver then reports the source gone.
        let _ = self.asks.blocking_send(Ask::Chunk(id, tx));
        rx
    }

    fn kept(&self, id: &ObjectId) -> Option<Arc<Vec<u8>>> {
        self.kept.iter().find(|(k, _)| k == id).map(|(_, body)| body.clone())
    }

    fn keep(&mut self, id: ObjectId, body: Arc<Vec<u8>>) {
        if self.kept.len() == KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back((id, body));
    }
}

fn gone() -> Error {
    Error::new(ErrorKind::Interrupted, "the source pool stopped answering")
}

impl TreeSource for Remote {
    fn tree(&mut self, tref: &TreeRef) -> Result<Tree> {
        let (tx, rx) = oneshot::channel();
        self.asks.blocking_send(Ask::Tree(*tref, tx)).map_err(|_| gone())?;
        rx.blocking_recv().map_err(|_| gone())?
    }

    fn open<'a>(&'a mut self, content: &[ChunkRef]) -> Box<dyn Read + 'a> {
        Box::new(Content { remote: self, refs: content.to_vec(), next: 0, asked: 0, ahead: VecDeque::new(), at: None })
    }
}

/// One file's bytes, its chunks asked for `AHEAD` at a time.
struct Content<'a> {
    remote: &'a mut Remote,
    refs: Vec<ChunkRef>,
    /// The slice being read.
    next: usize,
    /// Slices before this one have been considered for asking ahead.
    asked: usize,
    /// Chunks asked for: the slice each is for, in slice order.
    ahead: VecDeque<(usize, Pending)>,
    /// The chunk of the slice being read, and how much of the slice is read.
    at: Option<(Arc<Vec<u8>>, usize)>,
}

impl Content<'_> {
    /// Ask for the chunks of the coming slices, up to `AHEAD`, unless kept or just asked.
    fn ask_ahead(&mut self) {
        self.asked = self.asked.max(self.next);
        while self.ahead.len() < AHEAD && self.asked < self.refs.len() {
            let (i, id) = (self.asked, self.refs[self.asked].id);
            self.asked += 1;
            let repeat = self.ahead.back().is_some_and(|(j, _)| self.refs[*j].id == id);
            if repeat || self.remote.kept(&id).is_some() {
                continue;
            }
            let rx = self.remote.ask_chunk(id);
            self.ahead.push_back((i, rx));
        }
    }

    /// The chunk of slice `i`.
    fn body(&mut self, i: usize) -> std::io::Result<Arc<Vec<u8>>> {
        // Answers for slices already read (their chunk was kept meanwhile) are not needed.
        while self.ahead.front().is_some_and(|(j, _)| *j < i) {
            self.ahead.pop_front();
        }
        let id = self.refs[i].id;
        if let Some(body) = self.remote.kept(&id) {
            return Ok(body);
        }
        let rx = match self.ahead.front() {
            Some((j, _)) if *j == i => self.ahead.pop_front().expect("front").1,
            _ => self.remote.ask_chunk(id),
        };
        let body = rx.blocking_recv().map_err(|_| gone()).and_then(|r| r).map_err(std::io::Error::other)?;
        self.remote.keep(id, body.clone());
        Ok(body)
    }
}

impl Read for Content<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(r) = self.refs.get(self.next).copied() {
            if self.at.is_none() {
                self.ask_ahead();
                let body = self.body(self.next)?;
                self.at = Some((body, 0));
            }
            let (body, done) = self.at.as_mut().expect("set above");
            if *done == r.len as usize {
                self.next += 1;
                self.at = None;
                continue;
            }
            let (start, end) = (r.offset as usize + *done, r.offset as usize + r.len as usize);
            let slice = body.get(start..end).ok_or_else(|| {
                std::io::Error::other(Error::corrupt(format!(
                    "a slice {}+{} lies outside chunk {}",
                    r.offset,
                    r.len,
                    r.id.to_hex()
                )))
            })?;
            let n = slice.len().min(buf.len());
            buf[..n].copy_from_slice(&slice[..n]);
            *done += n;
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_the_same_snapshot_whatever_its_trees_and_tag_order() {
        let a = Snapshot {
            time_ns: 5,
            hostname: "h".into(),
            username: "u".into(),
            paths: vec!["/a".into()],
            tags: vec!["x".into(), "y".into()],
            tree: ObjectId([1; 32]),
            tree_pack: ObjectId([2; 32]),
            parent: None,
            summary: Default::default(),
            program_version: "0".into(),
        };
        let b = Snapshot {
            tree: ObjectId([3; 32]),
            parent: Some(ObjectId([4; 32])),
            tags: vec!["y".into(), "x".into()],
            ..a.clone()
        };
        assert!(same(&a, &b));
        assert!(!same(&a, &Snapshot { time_ns: 6, ..b.clone() }));
        assert!(!same(&a, &Snapshot { tags: vec!["x".into()], ..b }));
    }
}
