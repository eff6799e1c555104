//! Committing the live drive: finish every stream, chunk every spool (small files packed
//! together, as backup does), store the directories that changed as tree packs, then
//! write the new head snapshot and forget the old one.
//!
//! Owns: the commit order and tree packing for the drive. Must not: change names or
//! attributes (only the "stored" marks and file states, after the objects are durable).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::content::{DriveFile, FileState, Tail};
use super::inode::{Body, Namespace};
use super::ns::NsFs;
use super::pool::{Counts, Pool, Slices};
use crate::chunker::StreamChunker;
use crate::codec::ObjectKind;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{ChunkRef, Node, NodeKind, Snapshot, Summary, TreeRef};
use crate::pipeline::pack::Pack;
use crate::pipeline::trees::{DirTree, Group};
use crate::pipeline::upload::{Job, Uploader};

/// A file chunked by this commit from bytes read without its lock: it becomes
/// `slices` if nothing wrote to it since `generation` was read.
struct Chunked {
    file: Arc<DriveFile>,
    generation: u64,
    slices: Slices,
}

/// Commit the drive (see the module doc). Commits run one at a time.
pub(crate) fn commit(fs: &NsFs<Pool>) -> Result<Option<ObjectId>> {
    let pool = fs.backing();
    let mut head = pool.drive.head.lock().expect("poisoned");
    renew_lock(fs)?;
    let Some(dirty) = changes(fs, head.is_some()) else { return Ok(None) };
    let chunked = upload(pool, |jobs, emitter| chunk_files(pool, &dirty, jobs, emitter))?;
    // Chunks streamed while files were written must be stored before anything names them.
    pool.drive.streamer.drain()?;
    // Until the new head is written nothing references the spools' chunks, so the spools
    // are kept until then, and put back if the commit fails.
    let swapped = swap_in(chunked);
    match write_head(fs, &mut head) {
        Ok(id) => Ok(Some(id)),
        Err(e) => {
            put_back(swapped);
            Err(e)
        }
    }
}

/// The files with bytes to store, or `None` when nothing changed since the head.
fn changes(fs: &NsFs<Pool>, has_head: bool) -> Option<Vec<Arc<DriveFile>>> {
    let ns = fs.lock();
    let dirty: Vec<Arc<DriveFile>> = ns
        .nodes
        .values()
        .filter_map(|n| match &n.body {
            Body::File(f) if f.state.lock().expect("poisoned").dirty() => Some(f.clone()),
            _ => None,
        })
        .collect();
    (!dirty.is_empty() || !root_stored(&ns) || !has_head).then_some(dirty)
}

/// A file whose spool was replaced by its stored chunks, with its state before.
struct Swapped {
    file: Arc<DriveFile>,
    generation: u64,
    before: FileState,
}

/// Files not written since they were chunked now read from their chunks.
fn swap_in(chunked: Vec<Chunked>) -> Vec<Swapped> {
    let mut swapped = Vec::new();
    for c in chunked {
        let mut state = c.file.state.lock().expect("poisoned");
        if c.file.generation.load(Ordering::Acquire) == c.generation {
            c.file.set_len_value(c.slices.len);
            let clean = FileState { head: c.slices, tail: Tail::None, base: None };
            let before = std::mem::replace(&mut *state, clean);
            drop(state);
            swapped.push(Swapped { file: c.file, generation: c.generation, before });
        }
    }
    swapped
}

/// A failed commit: files not written since get their spools back (and count as changed).
fn put_back(swapped: Vec<Swapped>) {
    for s in swapped {
        let mut state = s.file.state.lock().expect("poisoned");
        if s.file.generation.load(Ordering::Acquire) == s.generation && !state.dirty() {
            *state = s.before;
        }
    }
}

/// Store the changed directories and a new head snapshot naming them; then mark the
/// directories stored and forget the old head.
fn write_head(fs: &NsFs<Pool>, head: &mut Option<ObjectId>) -> Result<ObjectId> {
    let pool = fs.backing();
    let (root, root_pack, builder, epoch) = {
        let mut ns = fs.lock();
        let epoch = ns.epoch;
        let mut b = TreeBuilder::default();
        let root = b.build(&mut ns, super::inode::ROOT, pool)?;
        let root_ref = b.finish_root(root.built, pool.repo.store().keys());
        ((root_ref, root.counts), root_ref.pack, b, epoch)
    };
    let packs = builder.packs;
    upload(pool, |jobs, emitter| {
        for (id, body) in packs {
            emitter.send(jobs, ObjectKind::Tree, id, body)?;
        }
        Ok(())
    })?;
    let snapshot = Snapshot {
        time_ns: crate::machine::now_ns(),
        hostname: crate::machine::hostname(),
        username: crate::machine::username(),
        paths: Vec::new(),
        tags: vec![crate::model::DRIVE_HEAD_TAG.to_string()],
        tree: root.0.id,
        tree_pack: root_pack,
        parent: *head,
        summary: Summary {
            files: root.1.files,
            dirs: root.1.dirs,
            others: root.1.others,
            bytes: root.1.bytes,
            ..Summary::default()
        },
        program_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let repo = &pool.repo;
    let id = pool.rt.block_on(crate::pipeline::commit_snapshot(
        repo.store(),
        repo.catalogue_arc(),
        repo.config().compression,
        &snapshot,
    ))?;
    {
        let mut ns = fs.lock();
        for (ino, tree) in builder.clean {
            ns.mark_stored(ino, TreeRef { id: tree, pack: builder.pack_of[&tree] }, epoch);
        }
    }
    if let Some(old) = head.replace(id)
        && old != id
    {
        // The new head is on the backends; losing the old one now loses nothing. If that
        // fails, the commit still stands: the old head stays as an older, restorable
        // state, and the drive opens at the newest head.
        let _ = pool.rt.block_on(repo.forget(&[old]));
    }
    Ok(id)
}

/// A lock that could not be refreshed for so long that others may have taken it for stale
/// (backends unreachable for half an hour) gave a prune elsewhere the chance to run: take
/// a new lock and sync, which applies that prune's record, then check that no file counts
/// on a chunk it deleted (`forget_pruned`).
fn renew_lock(fs: &NsFs<Pool>) -> Result<()> {
    let pool = fs.backing();
    let mut lock = pool.drive.lock.lock().expect("poisoned");
    if !lock.as_ref().is_some_and(|l| l.lost()) {
        return Ok(());
    }
    if let Some(old) = lock.take() {
        let _ = pool.rt.block_on(old.release());
    }
    *lock = Some(pool.rt.block_on(pool.repo.lock_shared("drive"))?);
    drop(lock);
    forget_pruned(fs)
}

/// Files whose chunks were stored but not yet named by a head when a prune elsewhere
/// deleted them go back to what the last commit recorded (as after a crash), and the
/// commit reports them. Pinned chunks are safe: they are still in memory.
fn forget_pruned(fs: &NsFs<Pool>) -> Result<()> {
    let pool = fs.backing();
    let reader = pool.repo.catalogue().reader()?;
    let gone = |s: &Slices| {
        s.refs.iter().any(|r| !pool.drive.streamer.is_pinned(&r.id) && !reader.has_object(&r.id).unwrap_or(false))
    };
    let mut lost = 0;
    let ns = fs.lock();
    for node in ns.nodes.values() {
        let Body::File(f) = &node.body else { continue };
        let mut state = f.state.lock().expect("poisoned");
        if gone(&state.head) {
            let base = state.base.take().filter(|b| !gone(b)).unwrap_or_default();
            f.set_len_value(base.len);
            *state = FileState { head: base, tail: Tail::None, base: None };
            f.generation.fetch_add(1, Ordering::AcqRel);
            lost += 1;
        }
    }
    if lost == 0 {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Backend,
        format!(
            "{lost} drive files lost changes written while the pool was unreachable for so long that \
             another machine's prune deleted their uploaded chunks; they are back at their last commit"
        ),
    ))
}

fn root_stored(ns: &Namespace<DriveFile>) -> bool {
    matches!(ns.nodes.get(&super::inode::ROOT).map(|n| &n.body), Some(Body::Dir(d)) if d.stored.is_some())
}

/// Names objects and queues those the pool and this commit lack.
pub(crate) struct Emitter {
    reader: crate::catalogue::Reader,
    queued: HashSet<ObjectId>,
}

impl Emitter {
    fn send(&mut self, jobs: &mpsc::Sender<Job>, kind: ObjectKind, id: ObjectId, body: Vec<u8>) -> Result<()> {
        if self.queued.contains(&id) || self.reader.has_object(&id).unwrap_or(false) || !self.queued.insert(id) {
            return Ok(());
        }
        jobs.blocking_send(Job { kind, id, body: Arc::new(body) })
            .map_err(|_| Error::new(ErrorKind::Interrupted, "uploads stopped"))
    }
}

/// Run `work` feeding an uploader, then wait until everything it queued is durable.
fn upload<T>(pool: &Pool, work: impl FnOnce(&mpsc::Sender<Job>, &mut Emitter) -> Result<T>) -> Result<T> {
    let repo = &pool.repo;
    let _in_runtime = pool.rt.enter();
    let (uploader, jobs) = Uploader::start(
        repo.store().clone(),
        repo.catalogue_arc(),
        repo.config().compression,
        repo.upload_concurrency(),
        // Its own flag: a failed commit must not stop the next one (or the repository).
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let mut emitter = Emitter { reader: repo.catalogue().reader()?, queued: HashSet::new() };
    let worked = work(&jobs, &mut emitter);
    drop(jobs);
    let uploaded = pool.rt.block_on(uploader.finish());
    let value = worked?;
    uploaded?;
    Ok(value)
}

/// Finish every stream (under its file's lock: the result is exactly the file), and
/// chunk every spool and every small file, reading without the file's lock so writers
/// never wait (`generation` tells afterwards whether the bytes read are current). Small
/// files share one pack stream, as in backup; a spool is chunked from the head's end.
fn chunk_files(
    pool: &Pool,
    files: &[Arc<DriveFile>],
    jobs: &mpsc::Sender<Job>,
    out: &mut Emitter,
) -> Result<Vec<Chunked>> {
    let params = pool.repo.pool().chunker;
    let keys = pool.repo.store().keys().clone();
    let mut pack = Pack::new(params, keys.chunker_seed());
    let mut packed = Vec::new();
    let mut done = Vec::new();
    let mut failed = None;
    let mut emit = |data: &[u8]| {
        let id = keys.id_of_large(data);
        if let Err(e) = out.send(jobs, ObjectKind::Chunk, id, data.to_vec()) {
            failed.get_or_insert(e);
        }
        id
    };
    for (slot, file) in files.iter().enumerate() {
        let (generation, len) = (file.generation.load(Ordering::Acquire), file.len());
        if len < params.min as u64 {
            let data = read_all(pool, file, len)?;
            pack.add(slot as u64, &data, &mut emit);
            packed.push((slot as u64, file.clone(), generation));
            continue;
        }
        let (spool, head) = {
            let mut state = file.state.lock().expect("poisoned");
            match std::mem::replace(&mut state.tail, Tail::None) {
                Tail::None => continue,
                Tail::Stream(s) => {
                    state.head = state.head.then(s.finish(&pool.drive.streamer));
                    state.base = None;
                    continue;
                }
                Tail::Spool(f) => {
                    let handle = f.try_clone().map_err(|e| Error::from_io("cannot reopen a spool file", e))?;
                    state.tail = Tail::Spool(f);
                    (handle, state.head.clone())
                }
            }
        };
        let mut chunker = StreamChunker::new(params, keys.chunker_seed());
        let mut refs = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = head.len;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            read_exact_at(&spool, &mut buf[..n], at)?;
            chunker.push(&buf[..n], &mut |_, c| refs.push(ChunkRef { id: emit(c), offset: 0, len: c.len() as u32 }));
            at += n as u64;
        }
        chunker.finish(&mut |_, c| refs.push(ChunkRef { id: emit(c), offset: 0, len: c.len() as u32 }));
        done.push(Chunked { file: file.clone(), generation, slices: head.then(refs) });
    }
    pack.flush(&mut emit);
    for (slot, file, generation) in packed {
        done.push(Chunked { file, generation, slices: Slices::new(pack.take(slot)) });
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// The whole content of a small file (short if it was cut meanwhile: the generation check
/// then discards what was read).
fn read_all(pool: &Pool, file: &DriveFile, len: u64) -> Result<Vec<u8>> {
    let mut data = vec![0u8; len as usize];
    let mut at = 0;
    while at < data.len() {
        match file.read_at(pool, &mut data[at..], at as u64, 0)? {
            0 => break,
            n => at += n,
        }
    }
    Ok(data)
}

fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    // A spool shorter than its recorded length was cut meanwhile; the generation check
    // discards what was read, so zeros are as good as anything.
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_io("cannot read a spool file", e)),
        }
    }
    Ok(())
}

/// Serialises changed directories bottom-up into tree packs with the packer backups use
/// (`pipeline::trees`): a changed directory's tree travels up in its parent's group until
/// the group is stored as a pack; an unchanged directory keeps the tree and pack it has.
#[derive(Default)]
struct TreeBuilder {
    /// Packs to upload: (id, body).
    packs: Vec<(ObjectId, Vec<u8>)>,
    /// The pack each tree built here went into.
    pack_of: HashMap<ObjectId, ObjectId>,
    /// Directories that may be marked stored once the packs are: (inode, tree).
    clean: Vec<(u64, ObjectId)>,
}

/// A directory's tree after `TreeBuilder::build`.
enum Built {
    /// Unchanged: its stored tree.
    Stored(TreeRef),
    /// Built now: its id, and the group of bodies travelling up with it (its own included).
    New(ObjectId, Group),
}

/// A directory as built by `TreeBuilder::build`.
struct BuiltDir {
    built: Built,
    /// Nothing below it is still spooled.
    clean: bool,
    /// What is below it.
    counts: Counts,
}

impl TreeBuilder {
    /// Build directory `ino` and everything changed below it; stored subtrees are reused.
    fn build(&mut self, ns: &mut Namespace<DriveFile>, ino: u64, pool: &Pool) -> Result<BuiltDir> {
        let keys = pool.repo.store().keys();
        let entries: Vec<(Vec<u8>, u64)> = match &ns.get(ino)?.body {
            Body::Dir(d) => match (&d.stored, &d.entries) {
                (Some(tref), _) => {
                    let counts = stored_counts(pool, tref)?;
                    return Ok(BuiltDir { built: Built::Stored(*tref), clean: true, counts });
                }
                (None, Some(e)) => e.iter().map(|(n, i)| (n.clone(), *i)).collect(),
                (None, None) => return Err(Error::corrupt("a changed directory was never loaded")),
            },
            _ => return Err(Error::new(ErrorKind::NotADirectory, "not a directory")),
        };
        let (mut clean, mut counts) = (true, Counts::default());
        let mut dir = DirTree::default();
        for (name, child) in entries {
            let meta = ns.get(child)?.meta();
            if !ns.get(child)?.is_dir() {
                let (kind, stored) = leaf_kind(&ns.get(child)?.body);
                clean &= stored;
                counts.add(Counts::of(&kind));
                dir.push(Node { name, kind, meta });
                continue;
            }
            let sub = self.build(ns, child, pool)?;
            clean &= sub.clean;
            counts.add(sub.counts);
            match sub.built {
                Built::Stored(t) => {
                    let kind = NodeKind::Dir { tree: t.id, pack: Some(t.pack) };
                    counts.add(Counts::of(&kind));
                    dir.push(Node { name, kind, meta });
                }
                Built::New(id, group) => {
                    counts.add(Counts::of(&NodeKind::Dir { tree: id, pack: None }));
                    dir.push_subtree(name, meta, id, group, &mut |g| Ok(self.store(g, keys)))?;
                }
            }
        }
        let (id, group) = dir.finish(keys);
        if clean {
            self.clean.push((ino, id));
            pool.drive.counts.lock().expect("poisoned").insert(id, counts);
        }
        Ok(BuiltDir { built: Built::New(id, group), clean, counts })
    }

    /// Make a group a pack to upload; returns its id.
    fn store(&mut self, group: Group, keys: &crate::crypto::Keys) -> ObjectId {
        let trees: Vec<ObjectId> = group.trees.iter().map(|(t, _)| *t).collect();
        let body = group.into_pack_body();
        let id = keys.id_of(&body);
        self.pack_of.extend(trees.into_iter().map(|t| (t, id)));
        self.packs.push((id, body));
        id
    }

    /// The root's tree and pack, storing what still travels with it.
    fn finish_root(&mut self, root: Built, keys: &crate::crypto::Keys) -> TreeRef {
        match root {
            Built::Stored(t) => t,
            Built::New(id, group) => TreeRef { id, pack: self.store(group, keys) },
        }
    }
}

/// A non-directory's node kind, and whether its content is stored (nothing left to store).
fn leaf_kind(body: &Body<DriveFile>) -> (NodeKind, bool) {
    match body {
        Body::File(f) => {
            let state = f.state.lock().expect("poisoned");
            let s = state.recorded();
            (NodeKind::File { size: s.len, content: s.refs.to_vec() }, !state.dirty())
        }
        Body::Symlink(t) => (NodeKind::Symlink { target: t.clone() }, true),
        Body::Special(k) => (k.clone(), true),
        Body::Dir(_) => unreachable!("directories are built, not leaves"),
    }
}

impl Counts {
    /// What one entry adds (a directory counts itself; its content is added separately).
    fn of(kind: &NodeKind) -> Counts {
        match kind {
            NodeKind::File { size, .. } => Counts { files: 1, bytes: *size, ..Counts::default() },
            NodeKind::Dir { .. } => Counts { dirs: 1, ..Counts::default() },
            _ => Counts { others: 1, ..Counts::default() },
        }
    }
}

/// Counts below a stored tree, remembered by tree id (trees come from the catalogue, or
/// the backends for trees it lacks).
fn stored_counts(pool: &Pool, tref: &TreeRef) -> Result<Counts> {
    if let Some(c) = pool.drive.counts.lock().expect("poisoned").get(&tref.id) {
        return Ok(*c);
    }
    let tree = pool.rt.block_on(pool.repo.tree(tref))?;
    let mut counts = Counts::default();
    for node in &tree.entries {
        counts.add(Counts::of(&node.kind));
        if let Some(sub) = node.subtree(&tref.pack) {
            counts.add(stored_counts(pool, &sub)?);
        }
    }
    pool.drive.counts.lock().expect("poisoned").insert(tref.id, counts);
    Ok(counts)
}
