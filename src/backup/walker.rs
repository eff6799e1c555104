//! The reading half of a backup: walk the source tree depth-first in name order, decide per
//! file whether the parent snapshot already has it, chunk and hash what it must read, and
//! build tree objects bottom-up.
//!
//! Owns: per-entry decisions, the pack stream, and the queue of directories waiting for
//! their small files' chunks. Must not: do network I/O (it only sends jobs) or commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use super::BackupWarning;
use super::filter::{Filter, Verdict};
use super::layout::{Selected, Selection};
use super::sparse;
use crate::catalogue::{Cached, Reader};
use crate::chunker::{ChunkerParams, StreamChunker};
use crate::codec::ObjectKind;
use crate::crypto::Keys;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::meta;
use crate::model::{ChunkRef, Meta, Node, NodeKind, Summary, Tree, TreeRef};
use crate::pipeline::pack::Pack;
use crate::pipeline::trees::{DirTree, Group};
use crate::pipeline::upload::Job;
use crate::progress::{EntryEvent, Progress};

/// Trees and file content of a snapshot in another pool, for `copy`: the walker reads them
/// instead of a local directory (on its blocking thread, so the calls block).
pub(crate) trait TreeSource: Send {
    /// The tree at `tref`, verified against its id.
    fn tree(&mut self, tref: &TreeRef) -> Result<Tree>;
    /// A file's bytes, the slices of `content` in order.
    fn open<'a>(&'a mut self, content: &[ChunkRef]) -> Box<dyn Read + 'a>;
}

/// An entry's content while its directory is being built.
enum Content {
    Ready(NodeKind),
    /// A small file in the pack stream: its slot and size.
    Packed(u64, u64),
    /// A subdirectory, by its slot.
    Subdir(u64),
}

struct Entry {
    name: Vec<u8>,
    meta: Meta,
    content: Content,
}

/// A directory whose listing is walked but whose tree may still wait for packed files.
struct DirBuild {
    slot: u64,
    entries: Vec<Entry>,
    /// Pack-stream offset that must be cut before the tree can be built.
    need: u64,
}

type Walked = (TreeRef, Summary, Vec<BackupWarning>);

pub(crate) struct Walker {
    params: ChunkerParams,
    out: Emitter,
    progress: Arc<dyn Progress>,
    abort: Arc<AtomicBool>,
    filter: Arc<Filter>,
    /// Entries each of `filter`'s rules left out.
    excluded: Vec<u64>,
    /// The device of the path given to the backup that is being walked.
    top_dev: u64,
    pack: Pack,
    waiting: VecDeque<DirBuild>,
    built: HashMap<u64, (ObjectId, Group)>,
    next_slot: u64,
    hardlinks: HashMap<(u64, u64), Vec<ChunkRef>>,
    buf: Vec<u8>,
    /// The all-zero chunk of the largest size, once a hole needed it.
    zero_chunk: Option<ObjectId>,
    summary: Summary,
    warnings: Vec<BackupWarning>,
    ignore_ctime: bool,
    ignore_inode: bool,
}

impl Walker {
    /// Tell unchanged files without comparing ctimes and/or inode numbers, which some file
    /// systems (FUSE, network mounts) do not keep stable (`--ignore-ctime`, `--ignore-inode`).
    pub fn ignoring(mut self, ctime: bool, inode: bool) -> Self {
        (self.ignore_ctime, self.ignore_inode) = (ctime, inode);
        self
    }

    pub fn new(
        params: ChunkerParams,
        keys: Keys,
        reader: Reader,
        jobs: mpsc::Sender<Job>,
        progress: Arc<dyn Progress>,
        abort: Arc<AtomicBool>,
        filter: Arc<Filter>,
    ) -> Self {
        Walker {
            params,
            pack: Pack::new(params, keys.chunker_seed()),
            out: Emitter { reader, jobs, keys, queued: HashSet::new() },
            progress,
            abort,
            excluded: vec![0; filter.rules().len()],
            filter,
            top_dev: 0,
            waiting: VecDeque::new(),
            built: HashMap::new(),
            next_slot: 0,
            hardlinks: HashMap::new(),
            buf: vec![0; 1 << 20],
            zero_chunk: None,
            ignore_ctime: false,
            ignore_inode: false,
            summary: Summary::default(),
            warnings: Vec::new(),
        }
    }

    /// Walk the selected paths into one root tree; `parent` is the parent snapshot's root
    /// tree.
    pub fn run(&mut self, selection: &Selection, parent: Option<ObjectId>) -> Result<Walked> {
        let parent = match parent {
            Some(id) => self.load_tree(&id)?,
            None => None,
        };
        let mut root = self.new_dir();
        self.add_selected(&mut root, selection, parent.as_ref())?;
        self.finish(root)
    }

    /// Build the root and everything still waiting, and hand over what the walk found.
    fn finish(&mut self, root: DirBuild) -> Result<Walked> {
        let slot = root.slot;
        self.queue_dir(root)?;
        self.pack.flush(&mut |c| self.out.chunk(c));
        self.build_ready()?;
        let (id, group) = self.built.remove(&slot).expect("root built after flush");
        let pack = self.emit_pack(group)?;
        Ok((TreeRef { id, pack }, std::mem::take(&mut self.summary), std::mem::take(&mut self.warnings)))
    }

    /// A snapshot of one file read from `input` (`backup --stdin`): its root holds `name`,
    /// with `meta`, and nothing else.
    pub fn run_stream(&mut self, name: &[u8], input: &mut impl Read, meta: Meta) -> Result<Walked> {
        let mut root = self.new_dir();
        let (content, size) = self.chunk_alone(input)?;
        self.summary.files += 1;
        self.summary.files_read += 1;
        self.summary.bytes += size;
        self.progress.advance(1, 0);
        root.entries.push(Entry {
            name: name.to_vec(),
            meta,
            content: Content::Ready(NodeKind::File { size, content }),
        });
        self.finish(root)
    }

    /// A snapshot of another pool's tree at `root` (`copy`): every entry as it is there,
    /// its files chunked afresh for this pool; `parent` is this pool's snapshot to take
    /// unchanged files from, as a backup does.
    pub fn run_tree(&mut self, src: &mut dyn TreeSource, root: &TreeRef, parent: Option<ObjectId>) -> Result<Walked> {
        let parent = match parent {
            Some(id) => self.load_tree(&id)?,
            None => None,
        };
        let mut dir = self.new_dir();
        let tree = src.tree(root)?;
        self.copy_entries(&mut dir, src, tree, root.pack, parent.as_ref())?;
        self.finish(dir)
    }

    fn copy_entries(
        &mut self,
        dir: &mut DirBuild,
        src: &mut dyn TreeSource,
        tree: Tree,
        pack: ObjectId,
        before: Option<&Tree>,
    ) -> Result<()> {
        for node in tree.entries {
            self.check_abort()?;
            let was = before.and_then(|t| t.get(&node.name));
            let content = match node.kind {
                NodeKind::Dir { .. } => {
                    let sub = node.subtree(&pack).expect("a directory");
                    let subtree = src.tree(&sub)?;
                    let parent = match was.map(|n| &n.kind) {
                        Some(NodeKind::Dir { tree, .. }) => self.load_tree(tree)?,
                        _ => None,
                    };
                    let mut child = self.new_dir();
                    self.copy_entries(&mut child, src, subtree, sub.pack, parent.as_ref())?;
                    self.summary.dirs += 1;
                    let slot = child.slot;
                    self.queue_dir(child)?;
                    Content::Subdir(slot)
                }
                NodeKind::File { size, content } => {
                    let copied = self.copy_file(dir, src, &node.meta, size, &content, was)?;
                    self.summary.files += 1;
                    self.summary.bytes += size;
                    copied
                }
                other => {
                    self.summary.others += 1;
                    Content::Ready(other)
                }
            };
            dir.entries.push(Entry { name: node.name, meta: node.meta, content });
        }
        Ok(())
    }

    fn copy_file(
        &mut self,
        dir: &mut DirBuild,
        src: &mut dyn TreeSource,
        meta: &Meta,
        size: u64,
        content: &[ChunkRef],
        before: Option<&Node>,
    ) -> Result<Content> {
        if let Some(content) = self.reusable(before, size, meta.mtime_ns, meta.ctime_ns, meta.ino) {
            self.progress.advance(1, size);
            return Ok(Content::Ready(NodeKind::File { size, content }));
        }
        let key = (meta.dev, meta.ino);
        if meta.nlink > 1
            && let Some(content) = self.hardlinks.get(&key)
        {
            self.progress.advance(1, size);
            return Ok(Content::Ready(NodeKind::File { size, content: content.clone() }));
        }
        let mut input = src.open(content);
        let (content, read) = if size < self.params.min as u64 && meta.nlink <= 1 {
            let mut data = Vec::with_capacity(size as usize);
            input.read_to_end(&mut data).map_err(|e| Error::io("cannot read", e))?;
            self.summary.bytes_read += data.len() as u64;
            self.progress.advance(0, data.len() as u64);
            if data.is_empty() {
                (Content::Ready(NodeKind::File { size: 0, content: vec![] }), 0)
            } else {
                self.next_slot += 1;
                let slot = self.next_slot;
                let end = self.pack.add(slot, &data, &mut |c| self.out.chunk(c));
                dir.need = dir.need.max(end);
                (Content::Packed(slot, data.len() as u64), data.len() as u64)
            }
        } else {
            let (refs, read) = self.chunk_alone(&mut input)?;
            if meta.nlink > 1 {
                self.hardlinks.insert(key, refs.clone());
            }
            (Content::Ready(NodeKind::File { size: read, content: refs }), read)
        };
        if read != size {
            return Err(Error::corrupt(format!("a file of {size} bytes in the source pool read as {read}")));
        }
        self.summary.files_read += 1;
        self.progress.advance(1, 0);
        Ok(content)
    }

    /// The parent's content for a file that is unchanged by its size, mtime, and (unless
    /// ignored) ctime and inode.
    fn reusable(
        &self,
        before: Option<&Node>,
        size: u64,
        mtime_ns: i64,
        ctime_ns: i64,
        ino: u64,
    ) -> Option<Vec<ChunkRef>> {
        match before {
            Some(Node { kind: NodeKind::File { size: old_size, content }, meta: old, .. })
                if *old_size == size
                    && old.mtime_ns == mtime_ns
                    && (self.ignore_ctime || old.ctime_ns == ctime_ns)
                    && (self.ignore_inode || old.ino == ino) =>
            {
                Some(content.clone())
            }
            _ => None,
        }
    }

    /// Add the names of `selection` to `dir`, whose parent snapshot's tree is `before`.
    fn add_selected(&mut self, dir: &mut DirBuild, selection: &Selection, before: Option<&Tree>) -> Result<()> {
        for (name, selected) in &selection.children {
            let was = before.and_then(|t| t.get(name));
            match selected {
                Selected::Whole(path) => {
                    self.top_dev = std::fs::symlink_metadata(path).map(|m| m.dev()).unwrap_or(0);
                    self.add_entry(dir, path, name.clone(), was)?;
                }
                Selected::Part(path, inner) => self.add_way(dir, path, name, inner, was)?,
            }
        }
        Ok(())
    }

    /// A directory on the way to selected paths: its metadata, and only what leads to them.
    fn add_way(
        &mut self,
        dir: &mut DirBuild,
        path: &Path,
        name: &[u8],
        inner: &Selection,
        before: Option<&Node>,
    ) -> Result<()> {
        // Followed: the way to a path may pass through a symlink (`/home` -> `/usr/home`).
        let md = match std::fs::metadata(path) {
            Ok(md) if md.is_dir() => md,
            Ok(_) => {
                self.skip(path, "not a directory");
                return Ok(());
            }
            Err(e) => {
                self.skip(path, e);
                return Ok(());
            }
        };
        let was = match before.map(|n| &n.kind) {
            Some(NodeKind::Dir { tree, .. }) => self.load_tree(tree)?,
            _ => None,
        };
        let mut sub = self.new_dir();
        self.add_selected(&mut sub, inner, was.as_ref())?;
        self.summary.dirs += 1;
        let slot = sub.slot;
        self.queue_dir(sub)?;
        let meta = self.meta_of(path, &md);
        dir.entries.push(Entry { name: name.to_vec(), meta, content: Content::Subdir(slot) });
        Ok(())
    }

    /// An entry's metadata with its extended attributes; ones that cannot be read are a
    /// warning, and the entry is kept without them.
    fn meta_of(&mut self, path: &Path, md: &std::fs::Metadata) -> Meta {
        let mut meta = meta::from_std(md);
        match meta::read_xattrs(path) {
            Ok(xattrs) => meta.xattrs = xattrs,
            Err(e) => self.warn(BackupWarning::Skipped {
                path: path.to_path_buf(),
                reason: format!("extended attributes not read ({e}); the entry is kept without them"),
            }),
        }
        meta
    }

    /// Entries each rule of the filter left out, in the filter's order.
    pub fn excluded(&self) -> &[u64] {
        &self.excluded
    }

    fn new_dir(&mut self) -> DirBuild {
        self.next_slot += 1;
        DirBuild { slot: self.next_slot, entries: Vec::new(), need: 0 }
    }

    fn check_abort(&self) -> Result<()> {
        if self.abort.load(Ordering::Relaxed) || self.out.jobs.is_closed() {
            return Err(Error::new(ErrorKind::Interrupted, "backup stopped"));
        }
        Ok(())
    }

    fn warn(&mut self, warning: BackupWarning) {
        self.progress.warn(&warning.to_string());
        self.warnings.push(warning);
    }

    fn skip(&mut self, path: &Path, e: impl std::fmt::Display) {
        self.warn(BackupWarning::Skipped { path: path.to_path_buf(), reason: e.to_string() });
    }

    fn add_entry(&mut self, dir: &mut DirBuild, path: &Path, name: Vec<u8>, before: Option<&Node>) -> Result<()> {
        self.check_abort()?;
        let md = match std::fs::symlink_metadata(path) {
            Ok(md) => md,
            Err(e) => {
                self.skip(path, e);
                return Ok(());
            }
        };
        let enter = match self.filter.check(path, &md, self.top_dev) {
            Verdict::Keep => true,
            Verdict::Excluded(rule) => {
                if let Some(rule) = rule {
                    self.excluded[rule] += 1;
                }
                return Ok(());
            }
            Verdict::KeepEmpty(rule) => {
                self.excluded[rule] += 1;
                false
            }
        };
        let meta = self.meta_of(path, &md);
        let ft = md.file_type();
        let content = if ft.is_dir() {
            match self.walk_dir(path, if enter { before } else { None }, enter) {
                Ok(slot) => Content::Subdir(slot),
                Err(e) if e.kind() == ErrorKind::Io => {
                    self.skip(path, e);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        } else if ft.is_file() {
            let bytes_read = self.summary.bytes_read;
            match self.file(dir, path, &md, before) {
                Ok(c) => {
                    // Counted once stored, at the size stored: a file that grew while read
                    // counts what was read, one that failed counts nothing.
                    self.summary.files += 1;
                    self.summary.bytes += match &c {
                        Content::Ready(NodeKind::File { size, .. }) | Content::Packed(_, size) => *size,
                        _ => 0,
                    };
                    c
                }
                Err(e) if e.kind() == ErrorKind::Io => {
                    self.summary.bytes_read = bytes_read;
                    self.skip(path, e);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        } else {
            self.summary.others += 1;
            Content::Ready(if ft.is_symlink() {
                match std::fs::read_link(path) {
                    Ok(t) => NodeKind::Symlink { target: t.as_os_str().as_bytes().to_vec() },
                    Err(e) => {
                        self.skip(path, e);
                        return Ok(());
                    }
                }
            } else if ft.is_fifo() {
                NodeKind::Fifo
            } else if ft.is_socket() {
                NodeKind::Socket
            } else if ft.is_char_device() {
                NodeKind::CharDevice { rdev: md.rdev() }
            } else {
                NodeKind::BlockDevice { rdev: md.rdev() }
            })
        };
        dir.entries.push(Entry { name, meta, content });
        Ok(())
    }

    /// Walk directory `path`, or only record it, empty, when not to `enter` it.
    fn walk_dir(&mut self, path: &Path, before: Option<&Node>, enter: bool) -> Result<u64> {
        let parent = match before.map(|n| &n.kind) {
            Some(NodeKind::Dir { tree, .. }) => self.load_tree(tree)?,
            _ => None,
        };
        let mut names: Vec<_> = if enter {
            let read = std::fs::read_dir(path).map_err(|e| Error::io("cannot list directory", e))?;
            read.map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()
                .map_err(|e| Error::io("cannot list directory", e))?
        } else {
            Vec::new()
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut dir = self.new_dir();
        for name in names {
            let child = path.join(&name);
            let before = parent.as_ref().and_then(|t| t.get(name.as_bytes()));
            self.add_entry(&mut dir, &child, name.as_bytes().to_vec(), before)?;
        }
        self.summary.dirs += 1;
        let slot = dir.slot;
        self.queue_dir(dir)?;
        Ok(slot)
    }

    fn file(
        &mut self,
        dir: &mut DirBuild,
        path: &Path,
        md: &std::fs::Metadata,
        before: Option<&Node>,
    ) -> Result<Content> {
        let size = md.len();
        let (mtime_ns, ctime_ns) =
            (md.mtime() * 1_000_000_000 + md.mtime_nsec(), md.ctime() * 1_000_000_000 + md.ctime_nsec());
        if let Some(content) = self.reusable(before, size, mtime_ns, ctime_ns, md.ino()) {
            self.progress.advance(1, size);
            self.progress.entry(EntryEvent::Unchanged, path);
            return Ok(Content::Ready(NodeKind::File { size, content }));
        }
        let event = if before.is_some() { EntryEvent::Modified } else { EntryEvent::New };
        self.progress.entry(event, path);
        let key = (md.dev(), md.ino());
        if md.nlink() > 1
            && let Some(content) = self.hardlinks.get(&key)
        {
            self.progress.advance(1, size);
            return Ok(Content::Ready(NodeKind::File { size, content: content.clone() }));
        }
        let mut file = File::open(path).map_err(|e| Error::io("cannot open", e))?;
        // Small files go to the shared stream, read whole first so a read error cannot leave
        // half a file in it. Hard-linked ones are chunked alone: their content must be known
        // now, for the other names.
        let content = if size < self.params.min as u64 && md.nlink() == 1 {
            let mut data = Vec::with_capacity(size as usize);
            (&mut file).take(self.params.min as u64).read_to_end(&mut data).map_err(|e| Error::io("cannot read", e))?;
            self.check_unchanged(path, &file, md, data.len() as u64);
            self.summary.files_read += 1;
            self.summary.bytes_read += data.len() as u64;
            self.progress.advance(1, data.len() as u64);
            if data.is_empty() {
                Content::Ready(NodeKind::File { size: 0, content: vec![] })
            } else {
                self.next_slot += 1;
                let slot = self.next_slot;
                let end = self.pack.add(slot, &data, &mut |c| self.out.chunk(c));
                dir.need = dir.need.max(end);
                Content::Packed(slot, data.len() as u64)
            }
        } else {
            let extents = if sparse::is_sparse(md) { sparse::data_extents(&file, size) } else { None };
            let (content, read) = match extents {
                Some(extents) => self.chunk_sparse(&mut file, size, &extents)?,
                None => self.chunk_alone(&mut file)?,
            };
            self.check_unchanged(path, &file, md, read);
            self.summary.files_read += 1;
            self.progress.advance(1, 0);
            if md.nlink() > 1 {
                self.hardlinks.insert(key, content.clone());
            }
            Content::Ready(NodeKind::File { size: read, content })
        };
        Ok(content)
    }

    /// Chunk the data extents of a sparse file of length `size`; each hole becomes slices of
    /// one all-zero chunk without being read.
    fn chunk_sparse(&mut self, file: &mut File, size: u64, extents: &[(u64, u64)]) -> Result<(Vec<ChunkRef>, u64)> {
        use std::io::{Seek, SeekFrom};
        let mut refs = Vec::new();
        let mut pos = 0u64;
        for &(start, end) in extents {
            self.zeros(start.saturating_sub(pos), &mut refs);
            file.seek(SeekFrom::Start(start)).map_err(|e| Error::io("cannot seek", e))?;
            let (more, read) = self.chunk_alone(&mut file.take(end - start))?;
            refs.extend(more);
            pos = start + read;
            if read < end - start {
                return Ok((refs, pos)); // the file shrank while read
            }
        }
        self.zeros(size.saturating_sub(pos), &mut refs);
        Ok((refs, pos.max(size)))
    }

    /// Slices of the all-zero chunk for a hole of `len` bytes.
    fn zeros(&mut self, mut len: u64, refs: &mut Vec<ChunkRef>) {
        let max = self.params.max;
        let id = match self.zero_chunk {
            Some(id) => id,
            None => *self.zero_chunk.insert(self.out.chunk(&vec![0; max as usize])),
        };
        self.progress.advance(0, len);
        while len > 0 {
            let n = len.min(max as u64) as u32;
            refs.push(ChunkRef { id, offset: 0, len: n });
            len -= n as u64;
        }
    }

    fn chunk_alone(&mut self, file: &mut impl Read) -> Result<(Vec<ChunkRef>, u64)> {
        let mut chunker = StreamChunker::new(self.params, self.out.keys.chunker_seed());
        let mut refs = Vec::new();
        let mut total = 0u64;
        let mut buf = std::mem::take(&mut self.buf);
        let result = loop {
            if let Err(e) = self.check_abort() {
                break Err(e);
            }
            let n = match file.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(Error::io("cannot read", e)),
            };
            total += n as u64;
            self.summary.bytes_read += n as u64;
            self.progress.advance(0, n as u64);
            chunker.push(&buf[..n], &mut |_, c| refs.push(chunk_ref(self.out.chunk(c), c)));
        };
        self.buf = buf;
        result?;
        chunker.finish(&mut |_, c| refs.push(chunk_ref(self.out.chunk(c), c)));
        Ok((refs, total))
    }

    /// Warn when a file changed while it was read: what was read is kept, as restic does.
    fn check_unchanged(&mut self, path: &Path, file: &File, md: &std::fs::Metadata, read: u64) {
        let changed = match file.metadata() {
            Ok(now) => now.len() != read || now.mtime() != md.mtime() || now.mtime_nsec() != md.mtime_nsec(),
            Err(_) => true,
        };
        if changed {
            self.warn(BackupWarning::ChangedWhileRead { path: path.to_path_buf() });
        }
    }

    /// A parent tree, to skip unchanged files. One the catalogue lacks, or holds damaged,
    /// is no parent: its files are read again rather than trusted from an unverified list.
    fn load_tree(&self, id: &ObjectId) -> Result<Option<Tree>> {
        match self.out.reader.tree(id)? {
            Cached::Verified(tree) => Ok(Some(tree)),
            Cached::Absent | Cached::Damaged => Ok(None),
        }
    }

    fn queue_dir(&mut self, dir: DirBuild) -> Result<()> {
        self.waiting.push_back(dir);
        self.build_ready()
    }

    /// Build every waiting directory whose packed files are cut, in walk (post-)order, so a
    /// directory is built after all its subdirectories.
    fn build_ready(&mut self) -> Result<()> {
        while self.waiting.front().is_some_and(|d| self.pack.is_cut(d.need)) {
            let mut dir = self.waiting.pop_front().expect("front exists");
            dir.entries.sort_by(|a, b| a.name.cmp(&b.name));
            let mut tree = DirTree::default();
            for Entry { name, meta, content } in dir.entries {
                match content {
                    Content::Ready(kind) => tree.push(Node { name, kind, meta }),
                    Content::Packed(slot, size) => {
                        let kind = NodeKind::File { size, content: self.pack.take(slot) };
                        tree.push(Node { name, kind, meta });
                    }
                    Content::Subdir(slot) => {
                        let (id, child) = self.built.remove(&slot).expect("child built first");
                        let out = &mut self.out;
                        tree.push_subtree(name, meta, id, child, &mut |g| out.tree_pack(g.into_pack_body()))?;
                    }
                }
            }
            let built = tree.finish(&self.out.keys);
            self.built.insert(dir.slot, built);
        }
        Ok(())
    }

    /// Store a group of tree bodies as one tree pack, unless the pool already has it.
    fn emit_pack(&mut self, group: Group) -> Result<ObjectId> {
        self.out.tree_pack(group.into_pack_body())
    }
}

fn chunk_ref(id: ObjectId, data: &[u8]) -> ChunkRef {
    ChunkRef { id, offset: 0, len: data.len() as u32 }
}

/// Names objects and queues the ones neither the pool nor this run has yet.
struct Emitter {
    reader: Reader,
    jobs: mpsc::Sender<Job>,
    keys: Keys,
    /// Objects queued in this run (the catalogue knows the older ones).
    queued: HashSet<ObjectId>,
}

impl Emitter {
    fn is_new(&mut self, id: &ObjectId) -> bool {
        // A catalogue read error only costs a redundant upload (the store skips equal objects).
        !self.queued.contains(id) && !self.reader.has_object(id).unwrap_or(false) && self.queued.insert(*id)
    }

    /// Hash a chunk and queue it if new.
    fn chunk(&mut self, data: &[u8]) -> ObjectId {
        let id = self.keys.id_of_large(data);
        if self.is_new(&id) {
            // A closed channel means the uploads failed; the walker notices at its next check.
            let _ = send(&self.jobs, Job { kind: ObjectKind::Chunk, id, body: Arc::new(data.to_vec()) });
        }
        id
    }

    fn tree_pack(&mut self, body: Vec<u8>) -> Result<ObjectId> {
        let id = self.keys.id_of(&body);
        if self.is_new(&id) {
            send(&self.jobs, Job { kind: ObjectKind::Tree, id, body: Arc::new(body) })?;
        }
        Ok(id)
    }
}

fn send(jobs: &mpsc::Sender<Job>, job: Job) -> Result<()> {
    jobs.blocking_send(job).map_err(|_| Error::new(ErrorKind::Interrupted, "uploads stopped"))
}

/// Counts files and bytes beside the backup so progress can show a total and an ETA.
pub(crate) struct Scan {
    stop: Arc<AtomicBool>,
}

impl Scan {
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub(crate) fn spawn_scan(paths: Vec<PathBuf>, filter: Arc<Filter>, progress: Arc<dyn Progress>) -> Scan {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let (mut files, mut bytes) = (0u64, 0u64);
        let mut stack: Vec<(PathBuf, u64)> = paths
            .into_iter()
            .map(|p| {
                let dev = std::fs::symlink_metadata(&p).map(|m| m.dev()).unwrap_or(0);
                (p, dev)
            })
            .collect();
        while let Some((p, top_dev)) = stack.pop() {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if filter.check(&p, &md, top_dev) != Verdict::Keep {
                continue;
            }
            if md.is_dir() {
                if let Ok(rd) = std::fs::read_dir(&p) {
                    stack.extend(rd.filter_map(|e| e.ok()).map(|e| (e.path(), top_dev)));
                }
            } else if md.is_file() {
                files += 1;
                bytes += md.len();
            }
        }
        progress.totals(files, bytes);
    });
    Scan { stop }
}
