//! One storage place as a file system of its own: the objects of an OpenDAL service as
//! plain files (no chunks, no encryption, nothing of a pool), directories as key prefixes,
//! so `copy_tree` can move a folder from a cloud into the drive, or out of it.
//!
//! Owns: mapping the `Fs` calls onto a service's objects. Must not: know pools or
//! placement. The calls block on the runtime given at open, so make them from outside it.
//!
//! Object stores differ from a disk, and `capabilities()` says how: files are written front
//! to back only (no appends, no writes in the middle, no truncation), there are no modes,
//! owners, set mtimes, symlinks or hard links, and renaming moves files, not directories.
//! A directory exists if its marker object (`dir/`) does or if anything lies below it.
//!
//! FTP moves whole files only. OpenDAL's FTP client hands a connection back to its pool
//! without reading the server's final reply to a transfer, so a transfer that ends early
//! (a ranged read) leaves a reply that the next request on that connection takes for its
//! own ("426 Transfer aborted", "Data connection is already open"). With ranged reads and
//! uploads streamed across a file's writes, the conformance suite failed within seconds.
//! So on FTP the first read of a file fetches it whole into a temporary file, and a file
//! written gathers in one and is uploaded on close, in one transfer each: memory stays
//! bounded, and the suite passed 20 runs in 20.
//!
//! Tested (tests/backends.rs, `plain_files_of_*`) on fs, S3, Azure Blob, WebDAV, SFTP and
//! FTP servers. Not on the GCS emulator (gcp-storage-emulator), which stores no empty objects
//! (directory markers) and has no XML multipart upload, which OpenDAL's GCS writer uses for a
//! file written in pieces; a real GCS bucket has both.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::StreamExt;
use opendal::{EntryMode, ErrorKind as DalKind, Operator};

use super::{Capabilities, DirEntry, File, FileHandle, FileType, Fs, Metadata, OpenOptions, normalize, pretty};
use crate::backend::Backend;
use crate::config::BackendConfig;
use crate::error::{Error, ErrorKind, Result};

/// Stats of a directory's files asked for at once when listing it.
const LIST_STATS: usize = 16;
/// Bytes moved at once between a temporary file and an FTP transfer.
const SPOOL_PIECE: usize = 1 << 20;

/// The objects of one OpenDAL service as a file system.
#[derive(Clone)]
pub struct DalFs {
    op: Operator,
    rt: tokio::runtime::Handle,
    name: String,
    scheme: String,
    /// FTP: see the module doc.
    ftp: bool,
}

impl DalFs {
    /// The service `cfg` describes (a `[[backend]]` table), its `root` as this file
    /// system's root. `rt` runs the requests.
    pub fn open(cfg: &BackendConfig, rt: tokio::runtime::Handle) -> Result<DalFs> {
        let backend = Backend::open(cfg)?;
        let op = backend.operator().cloned().ok_or_else(|| {
            Error::new(ErrorKind::Backend, format!("backend '{}' ({}) cannot be opened", cfg.name, cfg.scheme))
        })?;
        Ok(DalFs { op, rt, name: cfg.name.clone(), scheme: cfg.scheme.clone(), ftp: cfg.scheme == "ftp" })
    }

    /// Run requests to completion on the runtime.
    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The object key of `path` (no leading slash; empty for the root).
    fn key(path: &Path) -> Result<String> {
        let parts = normalize(path)?;
        let parts: Vec<String> = parts
            .iter()
            .map(|p| {
                p.to_str().map(str::to_string).ok_or_else(|| {
                    Error::new(ErrorKind::InvalidInput, format!("{}: object names are UTF-8", pretty(path)))
                })
            })
            .collect::<Result<_>>()?;
        Ok(parts.join("/"))
    }

    fn err(&self, what: &str, path: &str, e: opendal::Error) -> Error {
        let kind = match e.kind() {
            DalKind::NotFound => ErrorKind::NotFound,
            DalKind::AlreadyExists => ErrorKind::AlreadyExists,
            DalKind::PermissionDenied => ErrorKind::PermissionDenied,
            DalKind::IsADirectory => ErrorKind::IsADirectory,
            DalKind::NotADirectory => ErrorKind::NotADirectory,
            DalKind::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Backend,
        };
        Error::new(
            kind,
            format!("backend '{}' ({}): {what} /{path}: {}", self.name, self.scheme, crate::backend::plain(&e)),
        )
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            format!("backend '{}' ({}) as a file system: {what}", self.name, self.scheme),
        )
    }

    /// What is at `key`: a file, a directory, or nothing.
    fn lookup(&self, key: &str) -> Result<Option<Metadata>> {
        if key.is_empty() {
            return Ok(Some(dir_metadata(0)));
        }
        self.run(async {
            match self.op.stat(key).await {
                Ok(m) if m.is_dir() => return Ok(Some(dir_metadata(mtime(&m)))),
                Ok(m) => return Ok(Some(file_metadata(&m))),
                Err(e) if e.kind() == DalKind::NotFound => {}
                Err(e) => return Err(self.err("stat", key, e)),
            }
            let dir = format!("{key}/");
            match self.op.stat(&dir).await {
                Ok(m) => return Ok(Some(dir_metadata(mtime(&m)))),
                Err(e) if e.kind() == DalKind::NotFound => {}
                Err(e) => return Err(self.err("stat", &dir, e)),
            }
            // No marker: a directory if anything lies below it.
            match self.op.list(&dir).await {
                Ok(entries) if entries.iter().any(|e| e.path() != dir) => Ok(Some(dir_metadata(0))),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == DalKind::NotFound => Ok(None),
                Err(e) => Err(self.err("list", &dir, e)),
            }
        })
    }

    /// The metadata at `path`, or `NotFound` (`NotADirectory` when a file is in the way;
    /// some services fail the request then, others find nothing).
    fn existing(&self, path: &Path, key: &str) -> Result<Metadata> {
        let found = self.lookup(key);
        if let Ok(Some(m)) = found {
            return Ok(m);
        }
        let parent = key.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        if !parent.is_empty() && matches!(self.lookup(parent), Ok(Some(m)) if m.file_type == FileType::File) {
            return Err(Error::new(ErrorKind::NotADirectory, format!("{}: not a directory", pretty(path))));
        }
        found?;
        Err(Error::new(ErrorKind::NotFound, format!("{}: no such file or directory", pretty(path))))
    }

    /// `NotFound` unless the parent of `key` is a directory.
    fn parent_dir(&self, path: &Path, key: &str) -> Result<()> {
        let parent = key.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        match self.lookup(parent)? {
            Some(m) if m.is_dir() => Ok(()),
            Some(_) => Err(Error::new(ErrorKind::NotADirectory, format!("{}: a parent is a file", pretty(path)))),
            None => Err(Error::new(ErrorKind::NotFound, format!("{}: no such directory", pretty(path)))),
        }
    }

    /// The direct children of directory `key` (object paths, dirs with a trailing `/`).
    fn children(&self, key: &str) -> Result<Vec<opendal::Entry>> {
        let dir = if key.is_empty() { String::new() } else { format!("{key}/") };
        let listed = self.run(self.op.list(&dir));
        let entries = match listed {
            Ok(e) => e,
            Err(e) if e.kind() == DalKind::NotFound => Vec::new(),
            Err(e) => return Err(self.err("list", &dir, e)),
        };
        Ok(entries.into_iter().filter(|e| e.path() != dir && !e.path().is_empty() && e.path() != "/").collect())
    }
}

fn mtime(m: &opendal::Metadata) -> i64 {
    m.last_modified()
        .map(std::time::SystemTime::from)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}

fn file_metadata(m: &opendal::Metadata) -> Metadata {
    Metadata {
        file_type: FileType::File,
        len: m.content_length(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_ns: mtime(m),
        ino: 0,
        nlink: 1,
    }
}

fn dir_metadata(mtime_ns: i64) -> Metadata {
    Metadata { file_type: FileType::Dir, len: 0, mode: 0o755, uid: 0, gid: 0, mtime_ns, ino: 0, nlink: 1 }
}

impl Fs for DalFs {
    fn capabilities(&self) -> Capabilities {
        // Files and directories, and nothing a disk has beyond them.
        Capabilities { write: true, durable: true, ..Capabilities::read_only() }
    }

    fn metadata(&self, path: &Path) -> Result<Metadata> {
        let key = Self::key(path)?;
        self.existing(path, &key)
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<DirEntry>> {
        let key = Self::key(path)?;
        if !self.existing(path, &key)?.is_dir() {
            return Err(Error::new(ErrorKind::NotADirectory, format!("{}: not a directory", pretty(path))));
        }
        let children = self.children(&key)?;
        let stats = self.run(
            futures::stream::iter(children)
                .map(|e| async move {
                    let name = e.name().trim_end_matches('/').to_string();
                    let metadata = match e.metadata().mode() {
                        EntryMode::DIR => dir_metadata(mtime(e.metadata())),
                        // Listings do not all carry lengths: ask.
                        _ => match self.op.stat(e.path()).await {
                            Ok(m) => file_metadata(&m),
                            Err(err) => return Err(self.err("stat", e.path(), err)),
                        },
                    };
                    Ok(DirEntry { name: name.into(), metadata })
                })
                .buffered(LIST_STATS)
                .collect::<Vec<_>>(),
        );
        let mut entries: Vec<DirEntry> = stats.into_iter().collect::<Result<_>>()?;
        entries.sort_by(|a, b| a.name.as_encoded_bytes().cmp(b.name.as_encoded_bytes()));
        entries.dedup_by(|a, b| a.name == b.name);
        Ok(entries)
    }

    fn open(&self, path: &Path, options: &OpenOptions) -> Result<File> {
        let key = Self::key(path)?;
        let found = self.lookup(&key)?;
        if found.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(Error::new(ErrorKind::IsADirectory, format!("{}: is a directory", pretty(path))));
        }
        if !options.writes() {
            let Some(m) = found else {
                // Says NotADirectory if a file is in the way; NotFound otherwise.
                self.existing(path, &key)?;
                return Err(Error::new(ErrorKind::NotFound, format!("{}: no such file", pretty(path))));
            };
            let handle = Reader { fs: self.clone(), key, len: m.len, spooled: Mutex::new(None) };
            return Ok(File::new(Box::new(handle), options));
        }
        if options.create_new && found.is_some() {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("{}: already exists", pretty(path))));
        }
        if found.is_none() && !(options.create || options.create_new) {
            return Err(Error::new(ErrorKind::NotFound, format!("{}: no such file", pretty(path))));
        }
        if options.append || (found.is_some() && !options.truncate && !options.create_new) {
            return Err(self.unsupported("files are written whole, front to back (no appends or changes in place)"));
        }
        self.parent_dir(path, &key)?;
        let sink = if self.ftp {
            Sink::Spool(spool_file(&key)?)
        } else if self.op.info().capability().write_can_multi {
            Sink::Stream(self.run(self.op.writer(&key)).map_err(|e| self.err("write", &key, e))?)
        } else {
            Sink::Whole(Vec::new())
        };
        let handle = Writer { fs: self.clone(), key, state: Mutex::new(WriteState { sink: Some(sink), len: 0 }) };
        Ok(File::new(Box::new(handle), options))
    }

    fn create_dir(&self, path: &Path, _mode: u32) -> Result<()> {
        let key = Self::key(path)?;
        if key.is_empty() || self.lookup(&key)?.is_some() {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("{}: already exists", pretty(path))));
        }
        self.parent_dir(path, &key)?;
        let dir = format!("{key}/");
        self.run(self.op.create_dir(&dir)).map_err(|e| self.err("create directory", &dir, e))
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        let key = Self::key(path)?;
        if self.existing(path, &key)?.is_dir() {
            return Err(Error::new(ErrorKind::IsADirectory, format!("{}: is a directory", pretty(path))));
        }
        self.run(self.op.delete(&key)).map_err(|e| self.err("delete", &key, e))
    }

    fn remove_dir(&self, path: &Path) -> Result<()> {
        let key = Self::key(path)?;
        if key.is_empty() {
            return Err(Error::new(ErrorKind::PermissionDenied, "the root cannot be removed"));
        }
        if !self.existing(path, &key)?.is_dir() {
            return Err(Error::new(ErrorKind::NotADirectory, format!("{}: not a directory", pretty(path))));
        }
        if !self.children(&key)?.is_empty() {
            return Err(Error::new(ErrorKind::DirectoryNotEmpty, format!("{}: directory not empty", pretty(path))));
        }
        let dir = format!("{key}/");
        self.run(self.op.delete(&dir)).map_err(|e| self.err("delete", &dir, e))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let (a, b) = (Self::key(from)?, Self::key(to)?);
        if self.existing(from, &a)?.is_dir() {
            return Err(self.unsupported("directories cannot be renamed (move their files)"));
        }
        if a == b {
            return Ok(());
        }
        if self.lookup(&b)?.is_some_and(|m| m.is_dir()) {
            return Err(Error::new(ErrorKind::IsADirectory, format!("{}: is a directory", pretty(to))));
        }
        self.parent_dir(to, &b)?;
        let caps = self.op.info().capability();
        self.run(async {
            if caps.rename {
                return self.op.rename(&a, &b).await.map_err(|e| self.err("rename", &a, e));
            }
            if caps.copy {
                self.op.copy(&a, &b).await.map_err(|e| self.err("copy", &a, e))?;
            } else {
                let data = self.op.read(&a).await.map_err(|e| self.err("read", &a, e))?;
                self.op.write(&b, data).await.map_err(|e| self.err("write", &b, e))?;
            }
            self.op.delete(&a).await.map_err(|e| self.err("delete", &a, e))
        })
    }

    fn set_mode(&self, _path: &Path, _mode: u32) -> Result<()> {
        Err(self.unsupported("no permission bits"))
    }

    fn set_mtime(&self, _path: &Path, _mtime_ns: i64) -> Result<()> {
        Err(self.unsupported("modification times are the service's"))
    }

    fn symlink(&self, _target: &Path, _link: &Path) -> Result<()> {
        Err(self.unsupported("no symbolic links"))
    }

    fn hard_link(&self, _original: &Path, _link: &Path) -> Result<()> {
        Err(self.unsupported("no hard links"))
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf> {
        Err(Error::new(ErrorKind::InvalidInput, format!("{}: not a symbolic link", pretty(path))))
    }

    fn sync(&self) -> Result<()> {
        // A file is stored when its writer closes.
        Ok(())
    }
}

/// A file open for reading: ranged reads of the object, or, on FTP, reads of a whole copy
/// fetched at the first read.
struct Reader {
    fs: DalFs,
    key: String,
    len: u64,
    spooled: Mutex<Option<std::fs::File>>,
}

impl Reader {
    fn read_spooled(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let mut spooled = self.spooled.lock().expect("not poisoned");
        if spooled.is_none() {
            *spooled = Some(self.fs.run(self.download()).map_err(|e| self.fs.err("read", &self.key, e))?);
        }
        let file = spooled.as_ref().expect("just fetched");
        file.read_at(buf, offset).map_err(|e| Error::from_io(format!("/{}: temporary copy", self.key), e))
    }

    /// The whole object, into a new temporary file.
    async fn download(&self) -> opendal::Result<std::fs::File> {
        let mut file = tempfile::tempfile().map_err(temporary)?;
        let mut stream = self.fs.op.reader(&self.key).await?.into_bytes_stream(..).await?;
        while let Some(piece) = stream.next().await {
            file.write_all(&piece.map_err(temporary)?).map_err(temporary)?;
        }
        Ok(file)
    }
}

impl FileHandle for Reader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        if self.fs.ftp {
            return self.read_spooled(buf, offset);
        }
        let end = (offset + buf.len() as u64).min(self.len);
        let got = self.fs.run(async {
            if offset == 0 && end == self.len {
                // The whole object: a plain read, which FTP servers end cleanly (a ranged one
                // is cut at its end, and some report that as an aborted transfer).
                self.fs.op.read(&self.key).await
            } else {
                self.fs.op.read_with(&self.key).range(offset..end).await
            }
        });
        let data = got.map_err(|e| self.fs.err("read", &self.key, e))?.to_bytes();
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }

    fn write_at(&self, _data: &[u8], _offset: u64) -> Result<()> {
        Err(Error::new(ErrorKind::PermissionDenied, format!("/{}: open for reading only", self.key)))
    }

    fn set_len(&self, _len: u64) -> Result<()> {
        Err(Error::new(ErrorKind::PermissionDenied, format!("/{}: open for reading only", self.key)))
    }

    fn len(&self) -> Result<u64> {
        Ok(self.len)
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

struct WriteState {
    sink: Option<Sink>,
    len: u64,
}

/// Where written bytes go: streamed to the service; or, for a service that takes an object
/// in one request only (WebDAV), gathered and sent whole on close; or, on FTP, gathered in
/// a temporary file and uploaded whole on close (module doc).
enum Sink {
    Stream(opendal::Writer),
    Whole(Vec<u8>),
    Spool(std::fs::File),
}

/// A failure of the local temporary copy, inside a transfer's error type.
fn temporary(e: std::io::Error) -> opendal::Error {
    opendal::Error::new(DalKind::Unexpected, "temporary copy").set_source(e)
}

fn spool_file(key: &str) -> Result<std::fs::File> {
    tempfile::tempfile().map_err(|e| Error::from_io(format!("/{key}: temporary copy"), e))
}

/// A file being written front to back; stored when closed (`sync`, or drop).
struct Writer {
    fs: DalFs,
    key: String,
    state: Mutex<WriteState>,
}

impl Writer {
    fn close(&self) -> Result<()> {
        let sink = self.state.lock().expect("not poisoned").sink.take();
        let done = match sink {
            Some(Sink::Stream(mut w)) => self.fs.run(w.close()).map(|_| ()),
            Some(Sink::Whole(data)) => self.fs.run(self.fs.op.write(&self.key, data)).map(|_| ()),
            Some(Sink::Spool(file)) => self.fs.run(self.upload(&file)),
            None => return Ok(()),
        };
        done.map_err(|e| self.fs.err("write", &self.key, e))
    }

    /// The temporary file's bytes, as the object.
    async fn upload(&self, file: &std::fs::File) -> opendal::Result<()> {
        let mut w = self.fs.op.writer(&self.key).await?;
        let mut piece = vec![0; SPOOL_PIECE];
        let mut at = 0;
        loop {
            let n = file.read_at(&mut piece, at).map_err(temporary)?;
            if n == 0 {
                break;
            }
            w.write(piece[..n].to_vec()).await?;
            at += n as u64;
        }
        w.close().await.map(|_| ())
    }
}

impl FileHandle for Writer {
    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> Result<usize> {
        Err(self.fs.unsupported("a file being written cannot be read back until it is closed"))
    }

    fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        let mut state = self.state.lock().expect("not poisoned");
        if offset != state.len {
            return Err(self.fs.unsupported("files are written front to back"));
        }
        match state.sink.as_mut().ok_or_else(|| self.fs.unsupported("the file is closed"))? {
            Sink::Stream(w) => self.fs.run(w.write(data.to_vec())).map_err(|e| self.fs.err("write", &self.key, e))?,
            Sink::Whole(buf) => buf.extend_from_slice(data),
            Sink::Spool(file) => {
                file.write_all(data).map_err(|e| Error::from_io(format!("/{}: temporary copy", self.key), e))?
            }
        }
        state.len += data.len() as u64;
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<()> {
        match self.state.lock().expect("not poisoned").len == len {
            true => Ok(()),
            false => Err(self.fs.unsupported("files cannot be truncated or extended")),
        }
    }

    fn len(&self) -> Result<u64> {
        Ok(self.state.lock().expect("not poisoned").len)
    }

    fn sync(&self) -> Result<()> {
        self.close()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A write error here has no caller left: `sync` is how to see it.
        let _ = self.close();
    }
}
