//! `NsFs`: the `Fs` trait (by path) and an inode-level API (for the FUSE mount) over a
//! `Namespace`, for any file-content store (`Backing`): memory for `MemoryFs`, the pool for
//! the live drive and snapshot views.
//!
//! Owns: locking (one mutex for names, each file's content behind its own), open/create
//! semantics, and keeping mtimes and change marks right after writes. Must not: know how
//! content is stored.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::inode::{Attr, Body, Dir, Namespace, Source};
use super::readahead::ReadAhead;
use super::{Capabilities, DirEntry, File, FileHandle, FileType, Fs, Metadata, OpenOptions, normalize, pretty};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{ChunkRef, NodeKind, Tree, TreeRef};

/// Symlinks followed by one `open` before it gives up (Linux's limit).
const MAX_SYMLINKS: usize = 40;

/// A store of file contents under a namespace.
pub(crate) trait Backing: Send + Sync + Sized + 'static {
    /// One file's content.
    type Content: Send + Sync + 'static;
    /// What the file system supports; `write: false` makes every change `ReadOnly`.
    fn capabilities(&self) -> Capabilities;
    /// A stored directory's tree.
    fn tree(&self, tref: &TreeRef) -> Result<Tree>;
    /// The content of a stored file.
    fn stored_file(&self, size: u64, content: &[ChunkRef]) -> Self::Content;
    /// An empty new file.
    fn new_file(&self) -> Result<Self::Content>;
    /// Current length.
    fn len(&self, c: &Self::Content) -> u64;
    /// Positioned read; 0 at end of file. `ahead`: chunks the reader will likely want next
    /// (`readahead`), for a backing that fetches.
    fn read_at(&self, c: &Self::Content, buf: &mut [u8], offset: u64, ahead: usize) -> Result<usize>;
    /// Positioned write, zero-filling any gap.
    fn write_at(&self, c: &Self::Content, data: &[u8], offset: u64) -> Result<()>;
    /// Cut or zero-extend.
    fn set_len(&self, c: &Self::Content, len: u64) -> Result<()>;
    /// Make one file's content durable.
    fn sync_file(&self, fs: &NsFs<Self>, c: &Self::Content) -> Result<()>;
    /// Make everything durable.
    fn sync_all(&self, fs: &NsFs<Self>) -> Result<()>;
    /// How many reads so far waited for a chunk fetched ahead of them (`readahead`), for a
    /// backing that fetches.
    fn caught_up(&self) -> u64 {
        0
    }
}

struct Src<'a, B>(&'a B);

impl<B: Backing> Source<B::Content> for Src<'_, B> {
    fn tree(&self, tref: &TreeRef) -> Result<Tree> {
        self.0.tree(tref)
    }
    fn stored_file(&self, size: u64, content: &[ChunkRef]) -> B::Content {
        self.0.stored_file(size, content)
    }
}

pub(crate) struct Shared<B: Backing> {
    pub ns: Mutex<Namespace<B::Content>>,
    pub backing: B,
}

/// A namespace-backed file system; cheap to clone (shared state).
pub(crate) struct NsFs<B: Backing>(pub Arc<Shared<B>>);

impl<B: Backing> Clone for NsFs<B> {
    fn clone(&self) -> Self {
        NsFs(self.0.clone())
    }
}

/// What the kernel (or `Fs::metadata`) is told about an inode.
pub(crate) fn kind_of<C>(body: &Body<C>) -> FileType {
    match body {
        Body::Dir(_) => FileType::Dir,
        Body::File(_) => FileType::File,
        Body::Symlink(_) => FileType::Symlink,
        Body::Special(_) => FileType::Other,
    }
}

impl<B: Backing> NsFs<B> {
    pub fn new(backing: B, root: Option<TreeRef>, root_attr: Attr) -> Self {
        NsFs(Arc::new(Shared { ns: Mutex::new(Namespace::new(root, root_attr)), backing }))
    }

    pub fn backing(&self) -> &B {
        &self.0.backing
    }

    pub fn lock(&self) -> MutexGuard<'_, Namespace<B::Content>> {
        self.0.ns.lock().expect("namespace lock poisoned")
    }

    fn writable(&self) -> Result<()> {
        if !self.0.backing.capabilities().write {
            return Err(Error::new(ErrorKind::ReadOnly, "this file system is read-only"));
        }
        Ok(())
    }

    fn src(&self) -> Src<'_, B> {
        Src(&self.0.backing)
    }

    // ---- inode-level API (the FUSE mount uses these) ----

    pub fn attr(&self, ino: u64) -> Result<Metadata> {
        let ns = self.lock();
        let node = ns.get(ino)?;
        let len = match &node.body {
            Body::File(c) => self.0.backing.len(c),
            Body::Symlink(t) => t.len() as u64,
            _ => 0,
        };
        Ok(Metadata {
            file_type: kind_of(&node.body),
            len,
            mode: node.attr.mode,
            uid: node.attr.uid,
            gid: node.attr.gid,
            mtime_ns: node.attr.mtime_ns,
            ino,
            nlink: if node.is_dir() { 1 } else { node.nlink as u64 },
        })
    }

    /// The inode's access and change times, which `Metadata` leaves out.
    pub fn times(&self, ino: u64) -> Result<(i64, i64)> {
        let attr = self.lock().get(ino)?.attr;
        Ok((attr.atime_ns, attr.ctime_ns))
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<u64> {
        self.lock().lookup(parent, name, &self.src())
    }

    /// (name, inode, kind) of each entry, in name order.
    pub fn list(&self, dir: u64) -> Result<Vec<(Vec<u8>, u64, FileType)>> {
        let mut ns = self.lock();
        let entries: Vec<(Vec<u8>, u64)> = ns.entries(dir, &self.src())?.iter().map(|(n, i)| (n.clone(), *i)).collect();
        entries.into_iter().map(|(n, i)| Ok((n, i, kind_of(&ns.get(i)?.body)))).collect()
    }

    pub fn parent_of(&self, ino: u64) -> Result<u64> {
        Ok(self.lock().get(ino)?.parent())
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], attr: Attr) -> Result<u64> {
        self.writable()?;
        let body = Body::Dir(Dir { entries: Some(Default::default()), ..Default::default() });
        self.lock().create(parent, name, attr, body, &self.src())
    }

    pub fn mkfile(&self, parent: u64, name: &[u8], attr: Attr) -> Result<(u64, Arc<B::Content>)> {
        self.writable()?;
        let content = Arc::new(self.0.backing.new_file()?);
        let ino = self.lock().create(parent, name, attr, Body::File(content.clone()), &self.src())?;
        Ok((ino, content))
    }

    pub fn mksymlink(&self, parent: u64, name: &[u8], target: &[u8], attr: Attr) -> Result<u64> {
        self.writable()?;
        if target.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "a symlink needs a target"));
        }
        self.lock().create(parent, name, attr, Body::Symlink(target.to_vec()), &self.src())
    }

    /// Create a FIFO, socket or device node (FUSE `mknod`).
    pub fn mkspecial(&self, parent: u64, name: &[u8], kind: NodeKind, attr: Attr) -> Result<u64> {
        self.writable()?;
        self.lock().create(parent, name, attr, Body::Special(kind), &self.src())
    }

    /// The node kind of a FIFO, socket or device, and its link count as `stat` gives it:
    /// what `Metadata` folds into `FileType::Other`, and a directory's count.
    pub fn detail(&self, ino: u64) -> Result<(Option<NodeKind>, u32)> {
        let mut ns = self.lock();
        let node = ns.get(ino)?;
        let nlink = node.nlink;
        let special = match &node.body {
            Body::Special(k) => Some(k.clone()),
            Body::Dir(_) => {
                // A directory's link count is 2 plus its subdirectories (their "..").
                let entries: Vec<u64> = ns.entries(ino, &self.src())?.values().copied().collect();
                let subdirs = entries.iter().filter(|i| ns.get(**i).is_ok_and(|n| n.is_dir())).count();
                return Ok((None, 2 + subdirs as u32));
            }
            _ => None,
        };
        Ok((special, nlink))
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.writable()?;
        let removed = self.lock().unlink(parent, name, &self.src())?;
        drop(removed); // an open handle keeps the content alive until it closes
        Ok(())
    }

    /// Another name for `ino` (a hard link).
    pub fn link(&self, ino: u64, parent: u64, name: &[u8]) -> Result<()> {
        self.writable()?;
        self.lock().link(ino, parent, name, &self.src())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.writable()?;
        self.lock().rmdir(parent, name, &self.src())
    }

    pub fn rename(&self, from: (u64, &[u8]), to: (u64, &[u8]), no_replace: bool) -> Result<()> {
        self.writable()?;
        self.lock().rename(from, to, no_replace, &self.src())
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match &self.lock().get(ino)?.body {
            Body::Symlink(t) => Ok(t.clone()),
            _ => Err(Error::new(ErrorKind::InvalidInput, "not a symbolic link")),
        }
    }

    /// Change mode, owner, atime or mtime (each if given).
    pub fn set_attr(
        &self,
        ino: u64,
        mode: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        (atime_ns, mtime_ns): (Option<i64>, Option<i64>),
    ) -> Result<()> {
        self.writable()?;
        self.lock().set_attr(ino, &self.src(), |a| {
            if let Some(m) = mode {
                a.mode = m & 0o7777;
            }
            if let Some(u) = owner.0 {
                a.uid = u;
            }
            if let Some(g) = owner.1 {
                a.gid = g;
            }
            if let Some(t) = mtime_ns {
                a.mtime_ns = t;
            }
            if let Some(t) = atime_ns {
                a.atime_ns = t;
            }
        })
    }

    /// The content of a regular file, for a handle.
    pub fn content(&self, ino: u64) -> Result<Arc<B::Content>> {
        match &self.lock().get(ino)?.body {
            Body::File(c) => Ok(c.clone()),
            Body::Dir(_) => Err(Error::new(ErrorKind::IsADirectory, "is a directory")),
            _ => Err(Error::new(ErrorKind::InvalidInput, "not a regular file")),
        }
    }

    pub fn handle(&self, ino: u64, content: Arc<B::Content>) -> NsHandle<B> {
        NsHandle { fs: self.clone(), ino, content, reads: ReadAhead::default() }
    }

    /// A file's content changed: new mtime and ctime, and the change mark on every
    /// directory holding one of its names.
    pub fn touched(&self, ino: u64) -> Result<()> {
        let mut ns = self.lock();
        let now = crate::machine::now_ns();
        let Some(node) = ns.nodes.get_mut(&ino) else { return Ok(()) };
        node.attr.mtime_ns = now;
        node.attr.ctime_ns = now;
        ns.node_changed(ino, &self.src())
    }

    pub fn statistics(&self) -> (u64, u64) {
        let ns = self.lock();
        let bytes =
            ns.nodes.values().map(|n| if let Body::File(c) = &n.body { self.0.backing.len(c) } else { 0 }).sum();
        (ns.nodes.len() as u64, bytes)
    }

    // ---- by path ----

    fn resolve(&self, path: &Path) -> Result<u64> {
        let parts = normalize(path)?;
        self.lock().resolve(&parts, &self.src()).map_err(|e| with_path(e, path))
    }

    fn resolve_parent<'p>(&self, parts: &[&'p OsStr], path: &Path) -> Result<(u64, &'p [u8])> {
        self.lock().resolve_parent(parts, &self.src()).map_err(|e| with_path(e, path))
    }

    fn open_at(&self, path: &Path, options: &OpenOptions, depth: usize) -> Result<File> {
        if options.writes() {
            self.writable()?;
        }
        let parts = normalize(path)?;
        if parts.is_empty() {
            return Err(Error::new(ErrorKind::IsADirectory, "the root is a directory"));
        }
        let (parent, name) = self.resolve_parent(&parts, path)?;
        let found = self.lookup(parent, name);
        let (ino, content) = match found {
            Ok(ino) => {
                if options.create_new {
                    return Err(Error::new(ErrorKind::AlreadyExists, format!("{} already exists", pretty(path))));
                }
                if let Ok(target) = self.readlink(ino) {
                    if depth >= MAX_SYMLINKS {
                        return Err(Error::new(
                            ErrorKind::InvalidInput,
                            format!("{}: too many symlinks", pretty(path)),
                        ));
                    }
                    let target = PathBuf::from(OsString::from_vec(target));
                    let next = if target.is_absolute() {
                        target
                    } else {
                        path.parent().unwrap_or(Path::new("/")).join(target)
                    };
                    return self.open_at(&next, options, depth + 1);
                }
                (ino, self.content(ino).map_err(|e| with_path(e, path))?)
            }
            Err(e) if e.kind() == ErrorKind::NotFound && (options.create || options.create_new) => {
                self.mkfile(parent, name, Attr::new(options.mode.unwrap_or(0o644)))?
            }
            Err(e) => return Err(with_path(e, path)),
        };
        if options.truncate && self.0.backing.len(&content) > 0 {
            self.0.backing.set_len(&content, 0)?;
            self.touched(ino)?;
        }
        Ok(File::new(Box::new(self.handle(ino, content)), options))
    }
}

fn with_path(e: Error, path: &Path) -> Error {
    Error::new(e.kind(), format!("{}: {}", pretty(path), e.context()))
}

/// An open file of an `NsFs`.
pub(crate) struct NsHandle<B: Backing> {
    fs: NsFs<B>,
    ino: u64,
    content: Arc<B::Content>,
    /// How this handle reads: in order (fetch ahead) or not.
    reads: ReadAhead,
}

impl<B: Backing> NsHandle<B> {
    /// Note a read of `len` bytes at `offset` through this handle; chunks to fetch ahead.
    pub fn read_ahead(&self, offset: u64, len: usize) -> usize {
        self.reads.on_read(offset, len, self.fs.backing().caught_up())
    }

    /// The file's content and the store it lives in, for reads that bypass `FileHandle`.
    pub fn content(&self) -> (&B::Content, &B) {
        (&self.content, self.fs.backing())
    }
}

impl<B: Backing> FileHandle for NsHandle<B> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let ahead = self.reads.on_read(offset, buf.len(), self.fs.0.backing.caught_up());
        self.fs.0.backing.read_at(&self.content, buf, offset, ahead)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        self.fs.writable()?;
        self.fs.0.backing.write_at(&self.content, data, offset)?;
        self.fs.touched(self.ino)
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.fs.writable()?;
        self.fs.0.backing.set_len(&self.content, len)?;
        self.fs.touched(self.ino)
    }

    fn len(&self) -> Result<u64> {
        Ok(self.fs.0.backing.len(&self.content))
    }

    fn sync(&self) -> Result<()> {
        self.fs.0.backing.sync_file(&self.fs, &self.content)
    }
}

impl<B: Backing> Fs for NsFs<B> {
    fn capabilities(&self) -> Capabilities {
        self.0.backing.capabilities()
    }

    fn metadata(&self, path: &Path) -> Result<Metadata> {
        self.attr(self.resolve(path)?)
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<DirEntry>> {
        let dir = self.resolve(path)?;
        let entries = self.list(dir).map_err(|e| with_path(e, path))?;
        entries
            .into_iter()
            .map(|(name, ino, _)| Ok(DirEntry { name: OsString::from_vec(name), metadata: self.attr(ino)? }))
            .collect()
    }

    fn open(&self, path: &Path, options: &OpenOptions) -> Result<File> {
        self.open_at(path, options, 0)
    }

    fn create_dir(&self, path: &Path, mode: u32) -> Result<()> {
        let parts = normalize(path)?;
        if parts.is_empty() {
            return Err(Error::new(ErrorKind::AlreadyExists, "the root exists"));
        }
        let (parent, name) = self.resolve_parent(&parts, path)?;
        self.mkdir(parent, name, Attr::new(mode)).map_err(|e| with_path(e, path))?;
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        let parts = normalize(path)?;
        if parts.is_empty() {
            return Err(Error::new(ErrorKind::IsADirectory, "the root is a directory"));
        }
        let (parent, name) = self.resolve_parent(&parts, path)?;
        self.unlink(parent, name).map_err(|e| with_path(e, path))
    }

    fn remove_dir(&self, path: &Path) -> Result<()> {
        let parts = normalize(path)?;
        if parts.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "the root cannot be removed"));
        }
        let (parent, name) = self.resolve_parent(&parts, path)?;
        self.rmdir(parent, name).map_err(|e| with_path(e, path))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let (fp, tp) = (normalize(from)?, normalize(to)?);
        if fp.is_empty() || tp.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "the root cannot be renamed or replaced"));
        }
        let f = self.resolve_parent(&fp, from)?;
        let t = self.resolve_parent(&tp, to)?;
        NsFs::rename(self, f, t, false).map_err(|e| with_path(e, from))
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<()> {
        self.set_attr(self.resolve(path)?, Some(mode), (None, None), (None, None))
    }

    fn set_mtime(&self, path: &Path, mtime_ns: i64) -> Result<()> {
        self.set_attr(self.resolve(path)?, None, (None, None), (None, Some(mtime_ns)))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        let parts = normalize(link)?;
        let (parent, name) = self.resolve_parent(&parts, link)?;
        self.mksymlink(parent, name, target.as_os_str().as_bytes(), Attr::new(0o777))
            .map_err(|e| with_path(e, link))?;
        Ok(())
    }

    fn hard_link(&self, original: &Path, link: &Path) -> Result<()> {
        let ino = self.resolve(original)?;
        let parts = normalize(link)?;
        let (parent, name) = self.resolve_parent(&parts, link)?;
        self.link(ino, parent, name).map_err(|e| with_path(e, link))
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf> {
        let target = self.readlink(self.resolve(path)?).map_err(|e| with_path(e, path))?;
        Ok(PathBuf::from(OsString::from_vec(target)))
    }

    fn sync(&self) -> Result<()> {
        self.0.backing.sync_all(self)
    }
}
