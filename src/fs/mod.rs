//! The filesystem API: one `Fs` trait that a memory tree, a local directory, the pool's
//! live drive and any snapshot all implement, so a program (or the FUSE mount, or a test
//! suite) is written once against it. In the spirit of Python's PyFilesystem2.
//!
//! Owns: the trait, its value types (`Metadata`, `DirEntry`, `OpenOptions`, `File`), path
//! normalisation and the helpers built only on the trait (`copy_tree`, `walk`). Must not:
//! know any implementation's storage; implementations live in the submodules.
//!
//! The trait is synchronous, like `std::fs`: implementations over the pool block on their
//! tokio runtime, so call them from ordinary threads (or `spawn_blocking`), never from
//! inside an async task.
//!
//! Paths are relative to the file system's root; a leading `/` is allowed and `.`/`..` are
//! resolved lexically (`..` above the root is `InvalidInput`). Names are raw bytes, as on
//! Unix, and at most 255 bytes long.

mod cache;
mod commit;
mod content;
mod dal;
pub(crate) mod drive;
pub(crate) mod inode;
mod local;
mod memory;
pub(crate) mod ns;
pub(crate) mod pool;
pub(crate) mod readahead;
mod stream;

pub use dal::DalFs;
pub use drive::{DRIVE_HEAD_TAG, DRIVE_TAG, Drive, DriveOptions, SnapshotFs};
pub use local::LocalFs;
pub use memory::MemoryFs;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Longest file name, in bytes, any implementation accepts (Linux's `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// What an implementation supports; callers test these instead of guessing from errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Files and directories can be created, changed and removed.
    pub write: bool,
    /// Files can be written at any offset and opened in append mode.
    pub random_write: bool,
    /// Symbolic links can be created (reading them is always supported).
    pub symlinks: bool,
    /// A file can have several names (`hard_link`).
    pub hard_links: bool,
    /// Permission bits are kept.
    pub modes: bool,
    /// Modification times can be set and are kept to the nanosecond.
    pub mtimes: bool,
    /// `rename` replaces its target atomically.
    pub atomic_rename: bool,
    /// Written data survives the process (after `sync`).
    pub durable: bool,
}

impl Capabilities {
    /// Everything supported; `durable` says whether data outlives the process.
    pub fn full(durable: bool) -> Self {
        Capabilities {
            write: true,
            random_write: true,
            symlinks: true,
            hard_links: true,
            modes: true,
            mtimes: true,
            atomic_rename: true,
            durable,
        }
    }

    /// Reading only.
    pub fn read_only() -> Self {
        Capabilities {
            write: false,
            random_write: false,
            symlinks: false,
            hard_links: false,
            modes: false,
            mtimes: false,
            atomic_rename: false,
            durable: false,
        }
    }
}

/// What kind of entry a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed by this API).
    Symlink,
    /// A FIFO, socket or device node (only found in snapshots and local directories).
    Other,
}

/// An entry's metadata, as `lstat` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Its kind.
    pub file_type: FileType,
    /// Content length for files, target length for symlinks, 0 otherwise.
    pub len: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// A number unique among the file system's live entries (inode number); every name of
    /// a hard-linked file has the same.
    pub ino: u64,
    /// How many names the entry has: more than 1 only for hard-linked files (directories
    /// report 1).
    pub nlink: u64,
}

impl Metadata {
    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Dir
    }

    /// True for regular files.
    pub fn is_file(&self) -> bool {
        self.file_type == FileType::File
    }
}

/// One entry of `read_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Its name in the directory.
    pub name: OsString,
    /// Its metadata.
    pub metadata: Metadata,
}

/// How to open a file, as `std::fs::OpenOptions`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Allow writes.
    pub write: bool,
    /// Every write goes to the end of the file.
    pub append: bool,
    /// Empty the file on open.
    pub truncate: bool,
    /// Create the file if it does not exist.
    pub create: bool,
    /// Create the file and fail with `AlreadyExists` if it exists.
    pub create_new: bool,
    /// Permission bits for a created file.
    pub mode: Option<u32>,
}

impl OpenOptions {
    /// Read only.
    pub fn read() -> Self {
        OpenOptions::default()
    }

    /// Create or truncate for writing, as `File::create`.
    pub fn create() -> Self {
        OpenOptions { write: true, create: true, truncate: true, ..Default::default() }
    }

    /// Create or open for appending.
    pub fn append() -> Self {
        OpenOptions { write: true, append: true, create: true, ..Default::default() }
    }

    /// True if the open may change the file.
    pub fn writes(&self) -> bool {
        self.write || self.append || self.truncate || self.create || self.create_new
    }
}

/// An open file of some implementation: positioned reads and writes, no cursor.
/// `File` adds the cursor and the `std::io` traits.
#[allow(clippy::len_without_is_empty)] // `File::is_empty` exists; handles stay minimal
pub trait FileHandle: Send + Sync {
    /// Read up to `buf.len()` bytes at `offset`; 0 means end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;
    /// Write all of `data` at `offset`, growing the file (with zeros) as needed.
    fn write_at(&self, data: &[u8], offset: u64) -> Result<()>;
    /// Cut or grow (with zeros) to `len`.
    fn set_len(&self, len: u64) -> Result<()>;
    /// The current length.
    fn len(&self) -> Result<u64>;
    /// Make what was written durable (for the pool: stored on the backends).
    fn sync(&self) -> Result<()>;
}

/// An open file: a handle plus a cursor, usable with `std::io`.
pub struct File {
    handle: Box<dyn FileHandle>,
    pos: u64,
    append: bool,
    writable: bool,
}

impl File {
    /// Wrap a handle; `append` sends every `write` to the end.
    pub fn new(handle: Box<dyn FileHandle>, options: &OpenOptions) -> Self {
        File { handle, pos: 0, append: options.append, writable: options.write || options.append }
    }

    /// Read at an offset without moving the cursor.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.handle.read_at(buf, offset)
    }

    /// Write at an offset without moving the cursor.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        self.handle.write_at(data, offset)
    }

    /// Cut or grow the file.
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.check_writable()?;
        self.handle.set_len(len)
    }

    /// The file's length now.
    pub fn len(&self) -> Result<u64> {
        self.handle.len()
    }

    /// True if the file is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Make the file's content durable.
    pub fn sync_all(&self) -> Result<()> {
        self.handle.sync()
    }

    fn check_writable(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::new(ErrorKind::PermissionDenied, "file is open for reading only"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File").field("pos", &self.pos).field("append", &self.append).finish_non_exhaustive()
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.handle.read_at(buf, self.pos).map_err(|e| e.to_io())?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.check_writable().map_err(|e| e.to_io())?;
        if self.append {
            self.pos = self.handle.len().map_err(|e| e.to_io())?;
        }
        self.handle.write_at(buf, self.pos).map_err(|e| e.to_io())?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for File {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let base = match to {
            SeekFrom::Start(n) => {
                self.pos = n;
                return Ok(n);
            }
            SeekFrom::Current(d) => (self.pos, d),
            SeekFrom::End(d) => (self.handle.len().map_err(|e| e.to_io())?, d),
        };
        match base.0.checked_add_signed(base.1) {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start of the file")),
        }
    }
}

/// A file system: see the module doc. Every path-taking method resolves the path the same
/// way, never follows a symlink in the last component (except `open`, which does as POSIX
/// `open` does), and reports errors by `ErrorKind`: `NotFound`, `AlreadyExists`,
/// `IsADirectory`, `NotADirectory`, `DirectoryNotEmpty`, `ReadOnly`, `Unsupported`,
/// `InvalidInput`, `NameTooLong`.
pub trait Fs: Send + Sync {
    /// What this implementation supports.
    fn capabilities(&self) -> Capabilities;
    /// Metadata of the entry at `path` (not following a final symlink).
    fn metadata(&self, path: &Path) -> Result<Metadata>;
    /// The entries of a directory, sorted by name bytes.
    fn read_dir(&self, path: &Path) -> Result<Vec<DirEntry>>;
    /// Open a file (see `OpenOptions`); directories give `IsADirectory`.
    fn open(&self, path: &Path, options: &OpenOptions) -> Result<File>;
    /// Create one directory; its parent must exist.
    fn create_dir(&self, path: &Path, mode: u32) -> Result<()>;
    /// Remove a file or symlink.
    fn remove_file(&self, path: &Path) -> Result<()>;
    /// Remove an empty directory.
    fn remove_dir(&self, path: &Path) -> Result<()>;
    /// Move an entry, replacing a file at `to` or an empty directory at `to` (if `from` is
    /// a directory too), as POSIX `rename` does.
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Set the permission bits.
    fn set_mode(&self, path: &Path, mode: u32) -> Result<()>;
    /// Set the modification time, without following a final symlink.
    fn set_mtime(&self, path: &Path, mtime_ns: i64) -> Result<()>;
    /// Create a symbolic link at `link` pointing to `target` (not checked).
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    /// Give the entry at `original` (not a directory; a final symlink is not followed)
    /// another name, `link`, as POSIX `link` does.
    fn hard_link(&self, original: &Path, link: &Path) -> Result<()>;
    /// The target of a symbolic link.
    fn read_link(&self, path: &Path) -> Result<PathBuf>;
    /// Make everything written so far durable (for the pool: commit the drive).
    fn sync(&self) -> Result<()>;

    /// True if `path` names an entry (a dangling symlink counts).
    fn exists(&self, path: &Path) -> Result<bool> {
        match self.metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Create a directory and any missing parents; an existing directory is fine.
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        let parts = normalize(path)?;
        let mut at = PathBuf::from("/");
        for part in parts {
            at.push(part);
            match self.create_dir(&at, 0o755) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists && self.metadata(&at)?.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Remove a directory and everything below it.
    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        for entry in self.read_dir(path)? {
            let child = path.join(&entry.name);
            if entry.metadata.is_dir() {
                self.remove_dir_all(&child)?;
            } else {
                self.remove_file(&child)?;
            }
        }
        self.remove_dir(path)
    }

    /// Truncate or extend the file at `path`.
    fn set_len(&self, path: &Path, len: u64) -> Result<()> {
        self.open(path, &OpenOptions { write: true, ..Default::default() })?.set_len(len)
    }

    /// The whole content of a file.
    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open(path, &OpenOptions::read())?.read_to_end(&mut out).map_err(|e| Error::from_io(pretty(path), e))?;
        Ok(out)
    }

    /// Replace (or create) a file with `data`.
    fn write(&self, path: &Path, data: &[u8]) -> Result<()> {
        self.open(path, &OpenOptions::create())?.write_at(data, 0)
    }

    /// Copy a file's content and mode within this file system.
    fn copy(&self, from: &Path, to: &Path) -> Result<u64> {
        copy_file(self, from, self, to)
    }
}

/// Split a path into its names, resolving `.` and `..` lexically; the root is empty.
pub fn normalize(path: &Path) -> Result<Vec<&OsStr>> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(Error::new(ErrorKind::InvalidInput, format!("{}: '..' above the root", pretty(path))));
                }
            }
            Component::Normal(name) => {
                if name.len() > NAME_MAX {
                    return Err(Error::new(
                        ErrorKind::NameTooLong,
                        format!("{}: a name is longer than {NAME_MAX} bytes", pretty(path)),
                    ));
                }
                if name.as_bytes().contains(&0) {
                    return Err(Error::new(ErrorKind::InvalidInput, "a name holds a NUL byte"));
                }
                parts.push(name);
            }
        }
    }
    Ok(parts)
}

/// A path for messages.
pub(crate) fn pretty(path: &Path) -> String {
    path.display().to_string()
}

/// Copy one file's content from one file system to another (replacing the target), then
/// its mode and mtime where the target keeps them. Streams in 1 MiB steps.
pub fn copy_file<S: Fs + ?Sized, D: Fs + ?Sized>(src: &S, from: &Path, dst: &D, to: &Path) -> Result<u64> {
    let meta = src.metadata(from)?;
    let reader = src.open(from, &OpenOptions::read())?;
    let writer = dst.open(to, &OpenOptions { mode: Some(meta.mode), ..OpenOptions::create() })?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = reader.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        writer.write_at(&buf[..n], at)?;
        at += n as u64;
    }
    drop(writer);
    let caps = dst.capabilities();
    if caps.modes {
        dst.set_mode(to, meta.mode)?;
    }
    if caps.mtimes {
        dst.set_mtime(to, meta.mtime_ns)?;
    }
    Ok(at)
}

/// What `copy_tree` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Files copied.
    pub files: u64,
    /// Directories created or merged into.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Further names of hard-linked files, made as links rather than copies.
    pub hard_links: u64,
    /// Bytes of file content copied.
    pub bytes: u64,
    /// Entries the target cannot hold (special files, or symlinks without support).
    pub skipped: u64,
}

/// Copy the tree at `src_path` in `src` to `dst_path` in `dst`, merging into existing
/// directories and replacing existing files: files, directories and symlinks with their
/// modes and mtimes, between any two implementations (local directory, memory, the live
/// drive, a snapshot). Names of one hard-linked file stay one file where `dst` has hard
/// links (as `cp -a` and `rsync -H` do). Directory mtimes are set after their content.
pub fn copy_tree(src: &dyn Fs, src_path: &Path, dst: &dyn Fs, dst_path: &Path) -> Result<CopyStats> {
    let mut copy = Copy { src, dst, stats: CopyStats::default(), linked: HashMap::new() };
    copy.entry(src_path, &src.metadata(src_path)?, dst_path)?;
    Ok(copy.stats)
}

/// One `copy_tree` run.
struct Copy<'a> {
    src: &'a dyn Fs,
    dst: &'a dyn Fs,
    stats: CopyStats,
    /// Where the first name of each hard-linked source file was copied, by inode.
    linked: HashMap<u64, PathBuf>,
}

impl Copy<'_> {
    fn entry(&mut self, from: &Path, meta: &Metadata, to: &Path) -> Result<()> {
        let caps = self.dst.capabilities();
        if meta.nlink > 1 && meta.file_type != FileType::Dir && caps.hard_links {
            if let Some(first) = self.linked.get(&meta.ino) {
                self.replace(to)?;
                self.dst.hard_link(first, to)?;
                self.stats.hard_links += 1;
                return Ok(());
            }
            self.linked.insert(meta.ino, to.to_path_buf());
        }
        match meta.file_type {
            FileType::File => {
                self.stats.bytes += copy_file(self.src, from, self.dst, to)?;
                self.stats.files += 1;
            }
            FileType::Dir => self.dir(from, meta, to)?,
            FileType::Symlink if caps.symlinks => {
                let target = self.src.read_link(from)?;
                self.replace(to)?;
                self.dst.symlink(&target, to)?;
                if caps.mtimes {
                    self.dst.set_mtime(to, meta.mtime_ns)?;
                }
                self.stats.symlinks += 1;
            }
            FileType::Symlink | FileType::Other => self.stats.skipped += 1,
        }
        Ok(())
    }

    fn dir(&mut self, from: &Path, meta: &Metadata, to: &Path) -> Result<()> {
        let dst = self.dst;
        match dst.create_dir(to, meta.mode) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists && dst.metadata(to)?.is_dir() => {}
            Err(e) => return Err(e),
        }
        for entry in self.src.read_dir(from)? {
            self.entry(&from.join(&entry.name), &entry.metadata, &to.join(&entry.name))?;
        }
        let caps = dst.capabilities();
        if caps.modes {
            dst.set_mode(to, meta.mode)?;
        }
        if caps.mtimes {
            dst.set_mtime(to, meta.mtime_ns)?;
        }
        self.stats.dirs += 1;
        Ok(())
    }

    /// Make room for a new name at `to`: a file or symlink there goes, a directory stays
    /// (and the caller's create fails on it).
    fn replace(&self, to: &Path) -> Result<()> {
        match self.dst.metadata(to) {
            Ok(m) if !m.is_dir() => self.dst.remove_file(to),
            _ => Ok(()),
        }
    }
}

/// Every entry below `path` (not `path` itself), depth-first in name order, with its path.
/// Lists one directory at a time, so memory follows the depth, not the size, of the tree.
pub fn walk(fs: &dyn Fs, path: &Path, visit: &mut dyn FnMut(&Path, &Metadata) -> Result<()>) -> Result<()> {
    for entry in fs.read_dir(path)? {
        let child = path.join(&entry.name);
        visit(&child, &entry.metadata)?;
        if entry.metadata.is_dir() {
            walk(fs, &child, visit)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_and_refuses_escapes() {
        let n = |p: &str| {
            normalize(Path::new(p)).map(|v| v.iter().map(|s| s.to_str().unwrap().to_string()).collect::<Vec<_>>())
        };
        assert_eq!(n("/a/./b/../c").unwrap(), ["a", "c"]);
        assert_eq!(n("").unwrap(), Vec::<String>::new());
        assert_eq!(n("/").unwrap(), Vec::<String>::new());
        assert_eq!(n("a/..").unwrap(), Vec::<String>::new());
        assert_eq!(n("/..").unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(n(&"x".repeat(256)).unwrap_err().kind(), ErrorKind::NameTooLong);
        assert!(n(&"x".repeat(255)).is_ok());
    }
}
