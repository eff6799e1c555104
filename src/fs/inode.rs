//! The namespace shared by the in-memory file system, the live drive and snapshot views: an
//! inode table with POSIX rules for create, link, unlink, rmdir and rename. Directories that
//! come from a stored tree are loaded when first entered.
//!
//! Owns: names, the links from directories to inodes (several for a hard-linked file),
//! attributes and the "changed since stored" marks. Must not: hold file bytes (a file's
//! content is the implementation's `C`), or do I/O except through `Source::tree` when a
//! directory is first entered.
//!
//! Hard links are stored as the format has them (docs/format.md): every name of the file
//! is an entry with the same content, `nlink > 1` and the same `(dev, ino)`, its *group*.
//! Entries of one group found while loading become one inode. Since directories load
//! lazily, an inode may have names in directories not loaded yet; before such an inode
//! changes, every directory is loaded (once), so that each of its names is rewritten.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{ChunkRef, Meta, NodeKind, Tree, TreeRef};

/// The root directory's inode number (FUSE's too).
pub(crate) const ROOT: u64 = 1;

/// Where a namespace gets stored trees and file contents from.
pub(crate) trait Source<C>: Send + Sync {
    /// A stored directory's tree.
    fn tree(&self, tref: &TreeRef) -> Result<Tree>;
    /// The content of a stored file.
    fn stored_file(&self, size: u64, content: &[ChunkRef]) -> C;
}

/// The attributes every inode has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attr {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Kept while the namespace lives but not stored (trees have no access time): a name
    /// loaded from a tree starts with its mtime, and reads never change it (`noatime`).
    pub atime_ns: i64,
}

impl Attr {
    pub fn new(mode: u32) -> Attr {
        let now = crate::machine::now_ns();
        Attr {
            mode: mode & 0o7777,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            mtime_ns: now,
            ctime_ns: now,
            atime_ns: now,
        }
    }

    fn of(meta: &Meta) -> Attr {
        let (mode, uid, gid) = (meta.mode, meta.uid, meta.gid);
        Attr { mode, uid, gid, mtime_ns: meta.mtime_ns, ctime_ns: meta.ctime_ns, atime_ns: meta.mtime_ns }
    }

    /// The metadata stored for an inode with one name: no device or inode numbers, so a
    /// tree that did not change hashes the same in every session.
    pub fn meta(&self) -> Meta {
        Meta {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            dev: 0,
            ino: 0,
            nlink: 1,
            xattrs: Vec::new(),
        }
    }
}

pub(crate) enum Body<C> {
    Dir(Dir),
    File(Arc<C>),
    Symlink(Vec<u8>),
    /// FIFOs, sockets and devices from a snapshot: listed, never opened.
    Special(NodeKind),
}

#[derive(Default)]
pub(crate) struct Dir {
    /// `None` until loaded from `stored`.
    pub entries: Option<BTreeMap<Vec<u8>, u64>>,
    /// The stored tree equal to this directory, if nothing below it changed since.
    pub stored: Option<TreeRef>,
    /// The namespace epoch of the last change at or below this directory.
    pub changed_at: u64,
}

pub(crate) struct Inode<C> {
    /// (directory, name) of each loaded name: exactly one for a directory (the root's is
    /// itself), one or more for anything else.
    pub links: Vec<(u64, Vec<u8>)>,
    /// Names in all, counting those in directories not loaded yet.
    pub nlink: u32,
    /// The hard-link group `(dev, ino)` the inode is stored as while it has several names.
    pub group: Option<(u64, u64)>,
    pub attr: Attr,
    pub body: Body<C>,
}

impl<C> Inode<C> {
    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }

    /// The directory holding the first name (a directory's only one).
    pub fn parent(&self) -> u64 {
        self.links[0].0
    }

    /// The metadata stored with each of its names.
    pub fn meta(&self) -> Meta {
        let mut meta = self.attr.meta();
        if let (Some((dev, ino)), true) = (self.group, self.nlink > 1) {
            (meta.dev, meta.ino, meta.nlink) = (dev, ino, self.nlink as u64);
        }
        meta
    }
}

/// Most names one inode may have (ext4's limit).
const LINK_MAX: u32 = 65_000;

/// The inode table.
pub(crate) struct Namespace<C> {
    pub nodes: HashMap<u64, Inode<C>>,
    next: u64,
    /// Counts changes, so a commit can tell which directories changed while it stored them.
    pub epoch: u64,
    /// Inodes with several names, by hard-link group: where a loaded entry of the group
    /// joins its inode.
    groups: HashMap<(u64, u64), u64>,
}

fn not_found(name: &[u8]) -> Error {
    Error::not_found(format!("no such file or directory: '{}'", String::from_utf8_lossy(name)))
}

impl<C> Namespace<C> {
    /// A namespace holding one empty root directory, or the stored tree `root`.
    pub fn new(root: Option<TreeRef>, attr: Attr) -> Self {
        let dir = match root {
            Some(tref) => Dir { entries: None, stored: Some(tref), changed_at: 0 },
            None => Dir { entries: Some(BTreeMap::new()), stored: None, changed_at: 0 },
        };
        let mut nodes = HashMap::new();
        let root = Inode { links: vec![(ROOT, Vec::new())], nlink: 1, group: None, attr, body: Body::Dir(dir) };
        nodes.insert(ROOT, root);
        Namespace { nodes, next: ROOT + 1, epoch: 0, groups: HashMap::new() }
    }

    pub fn get(&self, ino: u64) -> Result<&Inode<C>> {
        self.nodes.get(&ino).ok_or_else(|| Error::not_found(format!("inode {ino} is gone")))
    }

    pub fn get_mut(&mut self, ino: u64) -> Result<&mut Inode<C>> {
        self.nodes.get_mut(&ino).ok_or_else(|| Error::not_found(format!("inode {ino} is gone")))
    }

    /// The entries of directory `ino`, loading them from its stored tree first if needed.
    pub fn entries(&mut self, ino: u64, source: &dyn Source<C>) -> Result<&BTreeMap<Vec<u8>, u64>> {
        let tref = match &self.get(ino)?.body {
            Body::Dir(Dir { entries: Some(_), .. }) => None,
            Body::Dir(Dir { entries: None, stored, .. }) => *stored,
            _ => return Err(Error::new(ErrorKind::NotADirectory, "not a directory")),
        };
        if let Some(tref) = tref {
            let tree = source.tree(&tref)?;
            let mut entries = BTreeMap::new();
            for node in tree.entries {
                let group = node.meta.nlink > 1 && !matches!(node.kind, NodeKind::Dir { .. });
                let group = group.then_some((node.meta.dev, node.meta.ino));
                if let Some(existing) = group.and_then(|g| self.groups.get(&g).copied()) {
                    // Another name of an inode already loaded: the first entry's data holds.
                    if let Some(n) = self.nodes.get_mut(&existing) {
                        n.links.push((ino, node.name.clone()));
                    }
                    entries.insert(node.name, existing);
                    continue;
                }
                let body = match node.kind {
                    NodeKind::Dir { .. } => {
                        Body::Dir(Dir { entries: None, stored: node.subtree(&tref.pack), changed_at: 0 })
                    }
                    NodeKind::File { size, ref content } => Body::File(Arc::new(source.stored_file(size, content))),
                    NodeKind::Symlink { target } => Body::Symlink(target),
                    other => Body::Special(other),
                };
                let child = self.insert(ino, node.name.clone(), Attr::of(&node.meta), body);
                if let Some(g) = group {
                    let n = self.nodes.get_mut(&child).expect("just inserted");
                    (n.nlink, n.group) = (node.meta.nlink.min(LINK_MAX as u64) as u32, Some(g));
                    self.groups.insert(g, child);
                }
                entries.insert(node.name, child);
            }
            if let Body::Dir(d) = &mut self.get_mut(ino)?.body {
                d.entries = Some(entries);
            }
        }
        match &self.get(ino)?.body {
            Body::Dir(Dir { entries: Some(e), .. }) => Ok(e),
            _ => unreachable!("loaded above"),
        }
    }

    fn entries_mut(&mut self, ino: u64, source: &dyn Source<C>) -> Result<&mut BTreeMap<Vec<u8>, u64>> {
        self.entries(ino, source)?;
        match &mut self.get_mut(ino)?.body {
            Body::Dir(Dir { entries: Some(e), .. }) => Ok(e),
            _ => unreachable!("loaded by entries"),
        }
    }

    fn insert(&mut self, parent: u64, name: Vec<u8>, attr: Attr, body: Body<C>) -> u64 {
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, Inode { links: vec![(parent, name)], nlink: 1, group: None, attr, body });
        ino
    }

    /// Load every directory, so that each name of every inode is known. Costs a read of
    /// every stored tree not loaded yet; done at most once per namespace (see the module doc).
    fn load_all(&mut self, source: &dyn Source<C>) -> Result<()> {
        let mut todo = vec![ROOT];
        while let Some(dir) = todo.pop() {
            let children: Vec<u64> = self.entries(dir, source)?.values().copied().collect();
            todo.extend(children.into_iter().filter(|c| self.nodes.get(c).is_some_and(|n| n.is_dir())));
        }
        Ok(())
    }

    /// Make sure every name of `ino` is loaded, before a change that each of them must show.
    fn complete_links(&mut self, ino: u64, source: &dyn Source<C>) -> Result<()> {
        let node = self.get(ino)?;
        if node.links.len() >= node.nlink as usize {
            return Ok(());
        }
        self.load_all(source)?;
        // A stored count that the trees do not bear out is corrected to the names found.
        let node = self.get_mut(ino)?;
        node.nlink = node.links.len() as u32;
        Ok(())
    }

    /// `ino` changed (content or attributes): mark the directories holding its names, or
    /// the directory itself.
    pub fn node_changed(&mut self, ino: u64, source: &dyn Source<C>) -> Result<()> {
        let completed = self.complete_links(ino, source);
        let dirs: Vec<u64> = match self.nodes.get(&ino) {
            Some(n) if n.is_dir() => vec![ino],
            Some(n) => n.links.iter().map(|(dir, _)| *dir).collect(),
            None => Vec::new(),
        };
        for dir in dirs {
            self.changed(dir);
        }
        completed
    }

    /// A group id for an inode getting its second name; drive trees store `dev = 0`.
    fn new_group(&self) -> (u64, u64) {
        loop {
            let g = (0, rand::random::<u64>());
            if g.1 != 0 && !self.groups.contains_key(&g) {
                return g;
            }
        }
    }

    pub fn lookup(&mut self, parent: u64, name: &[u8], source: &dyn Source<C>) -> Result<u64> {
        if name.len() > super::NAME_MAX {
            return Err(Error::new(ErrorKind::NameTooLong, "file name longer than 255 bytes"));
        }
        self.entries(parent, source)?.get(name).copied().ok_or_else(|| not_found(name))
    }

    /// The inode at `parts` below the root; symlinks are not followed.
    pub fn resolve(&mut self, parts: &[&OsStr], source: &dyn Source<C>) -> Result<u64> {
        let mut ino = ROOT;
        for part in parts {
            ino = self.lookup(ino, part.as_bytes(), source)?;
        }
        Ok(ino)
    }

    /// The parent directory of `parts` and the last name (the root has none).
    pub fn resolve_parent<'p>(&mut self, parts: &[&'p OsStr], source: &dyn Source<C>) -> Result<(u64, &'p [u8])> {
        let (last, dirs) =
            parts.split_last().ok_or_else(|| Error::new(ErrorKind::InvalidInput, "the root has no parent"))?;
        let parent = self.resolve(dirs, source)?;
        Ok((parent, last.as_bytes()))
    }

    /// Mark `ino` (if a directory) and every directory above it as changed since stored:
    /// the next commit serialises exactly these. O(depth), which is small.
    pub fn changed(&mut self, mut ino: u64) {
        self.epoch += 1;
        while let Some(node) = self.nodes.get_mut(&ino) {
            if let Body::Dir(d) = &mut node.body {
                d.stored = None;
                d.changed_at = self.epoch;
            }
            if ino == ROOT {
                return;
            }
            ino = node.parent();
        }
    }

    /// Record that directory `ino` equals the stored tree `tref`, built at `epoch`, unless
    /// it changed since.
    pub fn mark_stored(&mut self, ino: u64, tref: TreeRef, epoch: u64) {
        if let Some(Inode { body: Body::Dir(d), .. }) = self.nodes.get_mut(&ino)
            && d.changed_at <= epoch
        {
            d.stored = Some(tref);
        }
    }

    /// A directory's entries changed: new mtime and ctime, and the change mark.
    fn dir_touched(&mut self, dir: u64) {
        let now = crate::machine::now_ns();
        if let Some(node) = self.nodes.get_mut(&dir) {
            node.attr.mtime_ns = now;
            node.attr.ctime_ns = now;
        }
        self.changed(dir);
    }

    /// Create `name` in `parent`.
    pub fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        attr: Attr,
        body: Body<C>,
        source: &dyn Source<C>,
    ) -> Result<u64> {
        check_name(name)?;
        if self.entries(parent, source)?.contains_key(name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("'{}' already exists", String::from_utf8_lossy(name)),
            ));
        }
        let ino = self.insert(parent, name.to_vec(), attr, body);
        self.entries_mut(parent, source)?.insert(name.to_vec(), ino);
        self.dir_touched(parent);
        Ok(ino)
    }

    /// Remove one name of a non-directory; returns the inode once its last name is gone.
    pub fn unlink(&mut self, parent: u64, name: &[u8], source: &dyn Source<C>) -> Result<Option<Inode<C>>> {
        let ino = self.lookup(parent, name, source)?;
        if self.get(ino)?.is_dir() {
            return Err(Error::new(
                ErrorKind::IsADirectory,
                format!("'{}' is a directory", String::from_utf8_lossy(name)),
            ));
        }
        // Every other name is rewritten with the new count, so all must be known.
        self.complete_links(ino, source)?;
        self.entries_mut(parent, source)?.remove(name);
        self.dir_touched(parent);
        let node = self.get_mut(ino)?;
        node.links.retain(|(dir, n)| !(*dir == parent && n == name));
        node.nlink = node.links.len() as u32;
        if node.links.is_empty() {
            if let Some(g) = node.group {
                self.groups.remove(&g);
            }
            return Ok(self.nodes.remove(&ino));
        }
        node.attr.ctime_ns = crate::machine::now_ns();
        if node.nlink == 1
            && let Some(g) = node.group.take()
        {
            self.groups.remove(&g);
        }
        self.node_changed(ino, source)?;
        Ok(None)
    }

    /// Give the non-directory `ino` another name, `name` in `parent` (POSIX `link`).
    pub fn link(&mut self, ino: u64, parent: u64, name: &[u8], source: &dyn Source<C>) -> Result<()> {
        check_name(name)?;
        if self.get(ino)?.is_dir() {
            return Err(Error::new(ErrorKind::NotPermitted, "directories cannot have hard links"));
        }
        self.complete_links(ino, source)?;
        if self.get(ino)?.nlink >= LINK_MAX {
            return Err(Error::new(ErrorKind::TooManyLinks, format!("a file has at most {LINK_MAX} names")));
        }
        if self.entries(parent, source)?.contains_key(name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("'{}' already exists", String::from_utf8_lossy(name)),
            ));
        }
        self.entries_mut(parent, source)?.insert(name.to_vec(), ino);
        let group = match self.get(ino)?.group {
            Some(g) => g,
            None => self.new_group(),
        };
        self.groups.insert(group, ino);
        let node = self.get_mut(ino)?;
        node.links.push((parent, name.to_vec()));
        node.nlink = node.links.len() as u32;
        node.group = Some(group);
        node.attr.ctime_ns = crate::machine::now_ns();
        self.dir_touched(parent);
        self.node_changed(ino, source)
    }

    /// Remove an empty directory.
    pub fn rmdir(&mut self, parent: u64, name: &[u8], source: &dyn Source<C>) -> Result<()> {
        let ino = self.lookup(parent, name, source)?;
        if !self.get(ino)?.is_dir() {
            return Err(Error::new(
                ErrorKind::NotADirectory,
                format!("'{}' is not a directory", String::from_utf8_lossy(name)),
            ));
        }
        if !self.entries(ino, source)?.is_empty() {
            return Err(Error::new(
                ErrorKind::DirectoryNotEmpty,
                format!("directory '{}' is not empty", String::from_utf8_lossy(name)),
            ));
        }
        self.entries_mut(parent, source)?.remove(name);
        self.dir_touched(parent);
        self.nodes.remove(&ino);
        Ok(())
    }

    /// POSIX rename: replaces a non-directory target, or an empty directory target when
    /// the source is a directory too. With `no_replace`, an existing target is an error.
    pub fn rename(
        &mut self,
        (from_dir, from): (u64, &[u8]),
        (to_dir, to): (u64, &[u8]),
        no_replace: bool,
        source: &dyn Source<C>,
    ) -> Result<()> {
        check_name(to)?;
        let ino = self.lookup(from_dir, from, source)?;
        let moving_dir = self.get(ino)?.is_dir();
        // The new ctime is stored with every name.
        self.complete_links(ino, source)?;
        self.entries(to_dir, source)?;
        if moving_dir && self.is_within(to_dir, ino) {
            return Err(Error::new(ErrorKind::InvalidInput, "cannot move a directory into itself"));
        }
        if let Some(&existing) = self.entries(to_dir, source)?.get(to) {
            if existing == ino {
                return Ok(());
            }
            if no_replace {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("'{}' already exists", String::from_utf8_lossy(to)),
                ));
            }
            match (moving_dir, self.get(existing)?.is_dir()) {
                (true, true) => self.rmdir(to_dir, to, source)?,
                (false, false) => drop(self.unlink(to_dir, to, source)?),
                (true, false) => {
                    return Err(Error::new(ErrorKind::NotADirectory, "cannot replace a file by a directory"));
                }
                (false, true) => {
                    return Err(Error::new(ErrorKind::IsADirectory, "cannot replace a directory by a file"));
                }
            }
        }
        self.entries_mut(from_dir, source)?.remove(from);
        self.entries_mut(to_dir, source)?.insert(to.to_vec(), ino);
        let node = self.get_mut(ino)?;
        if let Some(link) = node.links.iter_mut().find(|(dir, n)| *dir == from_dir && n == from) {
            *link = (to_dir, to.to_vec());
        }
        node.attr.ctime_ns = crate::machine::now_ns();
        self.dir_touched(from_dir);
        self.dir_touched(to_dir);
        self.node_changed(ino, source)
    }

    /// True if `ino` is `ancestor` or below it.
    fn is_within(&self, mut ino: u64, ancestor: u64) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            if ino == ROOT {
                return false;
            }
            match self.nodes.get(&ino) {
                Some(n) => ino = n.parent(),
                None => return false,
            }
        }
    }

    /// Change attributes with `f`; ctime follows, and the change mark.
    pub fn set_attr(&mut self, ino: u64, source: &dyn Source<C>, f: impl FnOnce(&mut Attr)) -> Result<()> {
        if self.get(ino)?.is_dir() {
            // The change mark drops the stored tree, so its entries must be here first.
            self.entries(ino, source)?;
        }
        self.complete_links(ino, source)?;
        let node = self.get_mut(ino)?;
        f(&mut node.attr);
        node.attr.ctime_ns = crate::machine::now_ns();
        self.node_changed(ino, source)
    }
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("'{}' is not a file name", String::from_utf8_lossy(name)),
        ));
    }
    if name.len() > super::NAME_MAX {
        return Err(Error::new(ErrorKind::NameTooLong, "file name longer than 255 bytes"));
    }
    Ok(())
}
