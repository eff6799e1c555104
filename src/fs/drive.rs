//! The live drive: a mutable tree stored in the pool, deduplicated with every snapshot, and
//! read-only views of snapshots, both as `Fs` implementations.
//!
//! Owns: opening the drive at its head, committing it, and snapshots of it. Must not: hold
//! written bytes in memory beyond `DriveOptions::stream_bytes` (see `content` and
//! `stream`), or talk to backends except through `Repository` and `Store`.
//!
//! The drive's state on the backends is an ordinary snapshot tagged `drive-head` (so prune,
//! check, sync and restore treat it like any other). A commit chunks every changed file
//! (small ones packed together, as backup does), stores the directories that changed as
//! tree packs, writes the new head snapshot to every backend and then forgets the previous
//! head. A crash between the two leaves two heads; the newest wins and the older one stays
//! restorable. An open drive holds a shared lock, so prune waits for it. One machine should
//! have the drive open at a time: two writers each keep their own head (nothing is lost,
//! but the newest head wins at the next open).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Capabilities;
use super::commit::commit;
use super::content::DriveFile;
use super::inode::Attr;
use super::ns::{Backing, NsFs};
use super::pool::{Pool, Slices};
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{ChunkRef, Snapshot, Tree, TreeRef};
pub use crate::model::{DRIVE_HEAD_TAG, DRIVE_TAG};
use crate::repository::Repository;

/// How to open the drive.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// Where files being written are spooled (unnamed temporary files); defaults to
    /// `spool/` beside the catalogue.
    pub spool_dir: Option<PathBuf>,
    /// Bytes of decoded chunks kept for reads.
    pub cache_bytes: usize,
    /// Bytes of files written front to back that may wait in memory (chunked, until
    /// stored); past this, writes go to spool files until uploads catch up.
    pub stream_bytes: usize,
}

impl Default for DriveOptions {
    fn default() -> Self {
        DriveOptions { spool_dir: None, cache_bytes: 64 << 20, stream_bytes: 256 << 20 }
    }
}

/// The pool's live drive. Call `close` when done: it commits and releases the lock (a
/// drop does the same, best effort).
pub struct Drive {
    fs: NsFs<Pool>,
    closed: AtomicBool,
    /// This process's claim to be the drive's one writer on this machine.
    _claim: nix::fcntl::Flock<std::fs::File>,
}

/// Claim the drive for this process: an exclusive lock on a file beside the catalogue, which
/// the kernel releases when the process ends however it ends. Two writers of one drive would
/// each move its head, and the later one would hide the other's changes.
fn claim_drive(repo: &Repository) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::{Read, Write};
    let path = repo.catalogue_path().with_extension("drive-lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::from_io(format!("cannot open {}", path.display()), e))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut claim) => {
            let _ = claim.set_len(0).and_then(|_| write!(*claim, "{}", std::process::id()));
            Ok(claim)
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "the drive is open in another cuckoo process on this machine (pid {}, a `cuckoo mount`); \
                     unmount it first",
                    pid.trim()
                ),
            ))
        }
        Err((_, e)) => Err(Error::from_io(format!("cannot lock {}", path.display()), e.into())),
    }
}

/// The latest drive head among the pool's snapshots.
fn find_head(repo: &Repository) -> Result<Option<(ObjectId, Snapshot)>> {
    Ok(repo.snapshots()?.into_iter().rev().find(|(_, s)| s.tags.iter().any(|t| t == DRIVE_HEAD_TAG)))
}

fn root_attr(snapshot: Option<&Snapshot>) -> Attr {
    let mut attr = Attr::new(0o755);
    if let Some(s) = snapshot {
        attr.mtime_ns = s.time_ns;
        attr.ctime_ns = s.time_ns;
    }
    attr
}

impl Drive {
    /// Open the drive of `repo` at its latest head (empty if it has none), taking a shared
    /// lock on the pool. `rt` runs the pool's I/O; call the drive from outside it.
    pub fn open(repo: Arc<Repository>, rt: tokio::runtime::Handle, options: DriveOptions) -> Result<Drive> {
        let claim = claim_drive(&repo)?;
        let lock = rt.block_on(repo.lock_shared("drive"))?;
        let opened = (|| {
            let head = find_head(&repo)?;
            let spool = match options.spool_dir {
                Some(dir) => dir,
                None => repo.catalogue_path().parent().unwrap_or(Path::new(".")).join("spool"),
            };
            std::fs::create_dir_all(&spool)
                .map_err(|e| Error::from_io(format!("cannot create {}", spool.display()), e))?;
            let root = head.as_ref().map(|(_, s)| Repository::root(s));
            let attr = root_attr(head.as_ref().map(|(_, s)| s));
            let pool = Pool::new(repo.clone(), rt.clone(), spool, true, (options.cache_bytes, options.stream_bytes));
            *pool.drive.head.lock().expect("poisoned") = head.map(|(id, _)| id);
            Ok(NsFs::new(pool, root, attr))
        })();
        match opened {
            Ok(fs) => {
                *fs.backing().drive.lock.lock().expect("poisoned") = Some(lock);
                Ok(Drive { fs, closed: AtomicBool::new(false), _claim: claim })
            }
            Err(e) => {
                let _ = rt.block_on(lock.release());
                Err(e)
            }
        }
    }

    /// Store every change on the backends and move the head; `None` if nothing changed.
    pub fn commit(&self) -> Result<Option<ObjectId>> {
        commit(&self.fs)
    }

    /// The snapshot holding the drive's last commit.
    pub fn head(&self) -> Option<ObjectId> {
        *self.fs.backing().drive.head.lock().expect("poisoned")
    }

    /// Commit, then keep the drive's state as a snapshot of its own (tagged `drive` and
    /// `tags`), restorable like any other and subject to `forget`.
    pub fn snapshot(&self, tags: &[String]) -> Result<ObjectId> {
        self.commit()?;
        let pool = self.fs.backing();
        let head = self.head().ok_or_else(|| Error::new(ErrorKind::NotFound, "the drive has no commit"))?;
        let (_, mut snapshot) = pool.repo.find_snapshot(&head.to_hex())?;
        snapshot.time_ns = crate::machine::now_ns();
        snapshot.tags = std::iter::once(DRIVE_TAG.to_string()).chain(tags.iter().cloned()).collect();
        snapshot.parent = Some(head);
        let repo = &pool.repo;
        pool.rt.block_on(crate::pipeline::commit_snapshot(
            repo.store(),
            repo.catalogue_arc(),
            repo.config().compression,
            &snapshot,
        ))
    }

    /// A read-only view of snapshot `spec` (`latest`, an id or a prefix), under this
    /// drive's lock.
    pub fn snapshot_fs(&self, spec: &str) -> Result<SnapshotFs> {
        let pool = self.fs.backing();
        SnapshotFs::new(pool.repo.clone(), pool.rt.clone(), spec)
    }

    /// Commit and release the lock.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    pub(crate) fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let committed = commit(&self.fs);
        let lock = self.fs.backing().drive.lock.lock().expect("poisoned").take();
        if let Some(lock) = lock {
            self.fs.backing().rt.block_on(lock.release())?;
        }
        committed.map(|_| ())
    }

    pub(crate) fn ns(&self) -> &NsFs<Pool> {
        &self.fs
    }
}

impl Drop for Drive {
    fn drop(&mut self) {
        // Blocking on the runtime from inside it would panic; async callers must `close`.
        if tokio::runtime::Handle::try_current().is_err() {
            let _ = self.shutdown();
        }
    }
}

/// A snapshot as a read-only file system. It takes no lock: like `restore --no-lock`, a
/// prune running meanwhile can make reads fail, never return wrong bytes. Views opened
/// through `Drive::snapshot_fs` are covered by the drive's lock.
#[derive(Clone)]
pub struct SnapshotFs {
    fs: NsFs<Pool>,
    id: ObjectId,
}

impl SnapshotFs {
    /// View snapshot `spec` (`latest`, an id or a unique prefix) of `repo`.
    pub fn new(repo: Arc<Repository>, rt: tokio::runtime::Handle, spec: &str) -> Result<SnapshotFs> {
        let (id, snapshot) = repo.find_snapshot(spec)?;
        let pool = Pool::new(repo, rt, std::env::temp_dir(), false, (32 << 20, 0));
        Ok(SnapshotFs { fs: NsFs::new(pool, Some(Repository::root(&snapshot)), root_attr(Some(&snapshot))), id })
    }

    /// The snapshot shown.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    pub(crate) fn ns(&self) -> &NsFs<Pool> {
        &self.fs
    }
}

macro_rules! delegate_fs {
    ($t:ty) => {
        impl $crate::fs::Fs for $t {
            fn capabilities(&self) -> $crate::fs::Capabilities {
                $crate::fs::Fs::capabilities(&self.fs)
            }
            fn metadata(&self, path: &std::path::Path) -> $crate::Result<$crate::fs::Metadata> {
                $crate::fs::Fs::metadata(&self.fs, path)
            }
            fn read_dir(&self, path: &std::path::Path) -> $crate::Result<Vec<$crate::fs::DirEntry>> {
                $crate::fs::Fs::read_dir(&self.fs, path)
            }
            fn open(
                &self,
                path: &std::path::Path,
                options: &$crate::fs::OpenOptions,
            ) -> $crate::Result<$crate::fs::File> {
                $crate::fs::Fs::open(&self.fs, path, options)
            }
            fn create_dir(&self, path: &std::path::Path, mode: u32) -> $crate::Result<()> {
                $crate::fs::Fs::create_dir(&self.fs, path, mode)
            }
            fn remove_file(&self, path: &std::path::Path) -> $crate::Result<()> {
                $crate::fs::Fs::remove_file(&self.fs, path)
            }
            fn remove_dir(&self, path: &std::path::Path) -> $crate::Result<()> {
                $crate::fs::Fs::remove_dir(&self.fs, path)
            }
            fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> $crate::Result<()> {
                $crate::fs::Fs::rename(&self.fs, from, to)
            }
            fn set_mode(&self, path: &std::path::Path, mode: u32) -> $crate::Result<()> {
                $crate::fs::Fs::set_mode(&self.fs, path, mode)
            }
            fn set_mtime(&self, path: &std::path::Path, mtime_ns: i64) -> $crate::Result<()> {
                $crate::fs::Fs::set_mtime(&self.fs, path, mtime_ns)
            }
            fn symlink(&self, target: &std::path::Path, link: &std::path::Path) -> $crate::Result<()> {
                $crate::fs::Fs::symlink(&self.fs, target, link)
            }
            fn hard_link(&self, original: &std::path::Path, link: &std::path::Path) -> $crate::Result<()> {
                $crate::fs::Fs::hard_link(&self.fs, original, link)
            }
            fn read_link(&self, path: &std::path::Path) -> $crate::Result<std::path::PathBuf> {
                $crate::fs::Fs::read_link(&self.fs, path)
            }
            fn sync(&self) -> $crate::Result<()> {
                $crate::fs::Fs::sync(&self.fs)
            }
        }
    };
}
pub(crate) use delegate_fs;

delegate_fs!(Drive);
delegate_fs!(SnapshotFs);

/// What the namespace asks of the pool: trees, file content, and commits on sync.
impl Backing for Pool {
    type Content = DriveFile;

    fn capabilities(&self) -> Capabilities {
        if self.writable { Capabilities::full(true) } else { Capabilities::read_only() }
    }

    fn tree(&self, tref: &TreeRef) -> Result<Tree> {
        self.rt.block_on(self.repo.tree(tref))
    }

    fn stored_file(&self, _size: u64, content: &[ChunkRef]) -> DriveFile {
        DriveFile::stored(Slices::new(content.to_vec()))
    }

    fn new_file(&self) -> Result<DriveFile> {
        Ok(DriveFile::new_file(self))
    }

    fn len(&self, c: &DriveFile) -> u64 {
        c.len()
    }

    fn read_at(&self, c: &DriveFile, buf: &mut [u8], offset: u64, ahead: usize) -> Result<usize> {
        c.read_at(self, buf, offset, ahead)
    }

    fn write_at(&self, c: &DriveFile, data: &[u8], offset: u64) -> Result<()> {
        c.write_at(self, data, offset)
    }

    fn set_len(&self, c: &DriveFile, len: u64) -> Result<()> {
        c.set_len(self, len)
    }

    fn sync_file(&self, fs: &NsFs<Self>, _: &DriveFile) -> Result<()> {
        // A file is durable only with a tree naming it, so fsync commits the drive; files
        // that did not change cost nothing.
        self.sync_all(fs)
    }

    fn sync_all(&self, fs: &NsFs<Self>) -> Result<()> {
        if self.writable {
            commit(fs)?;
        }
        Ok(())
    }

    fn caught_up(&self) -> u64 {
        Pool::caught_up(self)
    }
}
