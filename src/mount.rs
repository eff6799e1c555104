//! The FUSE mount: the live drive read-write at the root, every snapshot read-only under
//! the hidden directory `/.snapshots/<snapshot id>/`.
//!
//! Owns: translating FUSE requests into calls on the drive's and the snapshot views'
//! inode-level API, open-file handles, inode numbering across views, `statfs`, and the
//! background commits. Must not: hold file data (the drive spools it) or decide POSIX
//! semantics (the namespace does); `Errno` appears only here.
//!
//! Inode numbers: the drive's own below 2^62, the `.snapshots` directory at 2^62, and
//! inode `i` of the `k`-th snapshot view opened at 2^63 + k·2^32 + i.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle as Fh, FopenFlags, Generation, INodeNo, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use crate::error::{Error, ErrorKind, Result};
use crate::fs::drive::{DRIVE_HEAD_TAG, Drive, SnapshotFs};
use crate::fs::inode::{Attr, ROOT};
use crate::fs::ns::{NsFs, NsHandle};
use crate::fs::pool::Pool;
use crate::fs::{FileHandle, FileType, Metadata};
use crate::id::ObjectId;
use crate::model::NodeKind;

/// How long the kernel may cache attributes and names. Every change goes through this
/// mount, so the kernel's caches only go stale if the same drive is changed elsewhere.
const TTL: Duration = Duration::from_secs(1);
const SNAPSHOTS: &[u8] = b".snapshots";
const SNAPSHOTS_INO: u64 = 1 << 62;
const VIEW_BIT: u64 = 1 << 63;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Changes are committed to the pool this often (and on fsync and unmount).
    pub commit_interval: Duration,
    /// Let every user reach the mount (with the kernel checking permissions), not only its
    /// owner; needs root or `user_allow_other` in /etc/fuse.conf.
    pub allow_other: bool,
    /// Mount over a directory that has entries (hidden while mounted); refused otherwise.
    pub allow_non_empty: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            commit_interval: Duration::from_secs(30),
            allow_other: nix::unistd::geteuid().is_root(),
            allow_non_empty: false,
        }
    }
}

/// Where an inode number points.
#[derive(Clone, Copy)]
enum Node {
    Drive(u64),
    SnapshotDir,
    View(usize, u64),
}

fn decode(ino: u64) -> Node {
    if ino == SNAPSHOTS_INO {
        Node::SnapshotDir
    } else if ino & VIEW_BIT != 0 {
        Node::View(((ino & !VIEW_BIT) >> 32) as usize, ino & 0xffff_ffff)
    } else {
        Node::Drive(ino)
    }
}

fn encode_view(k: usize, ino: u64) -> u64 {
    VIEW_BIT | ((k as u64) << 32) | ino
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// The FUSE kind and device number of a special node.
fn special_kind(kind: &NodeKind) -> (fuser::FileType, u32) {
    match kind {
        NodeKind::Socket => (fuser::FileType::Socket, 0),
        NodeKind::CharDevice { rdev } => (fuser::FileType::CharDevice, *rdev as u32),
        NodeKind::BlockDevice { rdev } => (fuser::FileType::BlockDevice, *rdev as u32),
        _ => (fuser::FileType::NamedPipe, 0),
    }
}

fn file_attr(
    ino: u64,
    m: &Metadata,
    (atime_ns, ctime_ns): (i64, i64),
    (special, nlink): (Option<NodeKind>, u32),
) -> FileAttr {
    let (kind, rdev) = match m.file_type {
        FileType::File => (fuser::FileType::RegularFile, 0),
        FileType::Dir => (fuser::FileType::Directory, 0),
        FileType::Symlink => (fuser::FileType::Symlink, 0),
        FileType::Other => special.as_ref().map(special_kind).unwrap_or((fuser::FileType::NamedPipe, 0)),
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.len,
        blocks: m.len.div_ceil(512),
        atime: system_time(atime_ns),
        mtime: system_time(m.mtime_ns),
        ctime: system_time(ctime_ns),
        crtime: system_time(m.mtime_ns),
        kind,
        perm: (m.mode & 0o7777) as u16,
        nlink,
        uid: m.uid,
        gid: m.gid,
        rdev,
        // Tools size their buffers by this (cp, rsync): large writes mean fewer requests.
        blksize: 1 << 20,
        flags: 0,
    }
}

/// An open file of the drive or of a snapshot view.
struct Open {
    handle: NsHandle<Pool>,
    writable: bool,
    /// Inode number seen by the kernel, and attributes at open: an unlinked file stays
    /// readable and `fstat`-able through its open handles, as POSIX wants.
    ino: u64,
    attr: FileAttr,
}

struct Views {
    list: Vec<SnapshotFs>,
    by_id: HashMap<ObjectId, usize>,
}

/// A directory listing: (inode, kind, name) of each entry, `.` and `..` first.
type Listing = Arc<Vec<(u64, fuser::FileType, Vec<u8>)>>;

struct Adapter {
    drive: Arc<Drive>,
    views: RwLock<Views>,
    open: Mutex<HashMap<u64, Arc<Open>>>,
    /// Listings of open directories, taken at opendir and again at rewinddir (offset 0),
    /// so listing a large directory costs one pass, not one per reply buffer.
    listings: Mutex<HashMap<u64, Listing>>,
    next_fh: AtomicU64,
    mounted_at: i64,
}

impl Adapter {
    fn drive(&self) -> &NsFs<Pool> {
        self.drive.ns()
    }

    fn view(&self, k: usize) -> Result<NsFs<Pool>> {
        let views = self.views.read().expect("poisoned");
        views.list.get(k).map(|v| v.ns().clone()).ok_or_else(|| Error::not_found("no such snapshot view"))
    }

    /// The namespace an inode lives in and its number there.
    fn ns_of(&self, ino: u64) -> Result<(NsFs<Pool>, u64, Option<usize>)> {
        match decode(ino) {
            Node::Drive(i) => Ok((self.drive().clone(), i, None)),
            Node::View(k, i) => Ok((self.view(k)?, i, Some(k))),
            Node::SnapshotDir => Err(Error::new(ErrorKind::IsADirectory, "the snapshot directory")),
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr> {
        if let Node::SnapshotDir = decode(ino) {
            let m = Metadata {
                file_type: FileType::Dir,
                len: 0,
                mode: 0o555,
                uid: 0,
                gid: 0,
                mtime_ns: self.mounted_at,
                ino,
                nlink: 1,
            };
            return Ok(file_attr(ino, &m, (self.mounted_at, self.mounted_at), (None, 2)));
        }
        let (ns, i, _) = self.ns_of(ino)?;
        let found = ns.attr(i).and_then(|m| Ok(file_attr(ino, &m, ns.times(i)?, ns.detail(i)?)));
        match found {
            Err(e) if e.kind() == ErrorKind::NotFound => self.unlinked_attr(ino).ok_or(e),
            other => other,
        }
    }

    /// The attributes of a file that was unlinked while open.
    fn unlinked_attr(&self, ino: u64) -> Option<FileAttr> {
        let open = self.open.lock().expect("poisoned");
        let o = open.values().find(|o| o.ino == ino)?;
        let mut attr = o.attr;
        attr.size = o.handle.len().unwrap_or(attr.size);
        attr.blocks = attr.size.div_ceil(512);
        attr.nlink = 0;
        Some(attr)
    }

    /// The drive's inode for a change; snapshots and their directory are read-only.
    fn writable(&self, ino: u64) -> Result<u64> {
        match decode(ino) {
            Node::Drive(i) => Ok(i),
            _ => Err(Error::new(ErrorKind::ReadOnly, "snapshots are read-only")),
        }
    }

    /// `.snapshots` is reserved in the drive's root.
    fn free_name(&self, parent: u64, name: &OsStr) -> Result<()> {
        if parent == ROOT && name.as_bytes() == SNAPSHOTS {
            return Err(Error::new(ErrorKind::AlreadyExists, "'.snapshots' is reserved for the snapshot views"));
        }
        Ok(())
    }

    fn new_attr(req: &Request, mode: u32, umask: u32) -> Attr {
        let mut attr = Attr::new(mode & !umask);
        attr.uid = req.uid();
        attr.gid = req.gid();
        attr
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr> {
        let ino = match decode(parent) {
            Node::Drive(p) if p == ROOT && name.as_bytes() == SNAPSHOTS => SNAPSHOTS_INO,
            Node::Drive(p) => self.drive().lookup(p, name.as_bytes())?,
            Node::SnapshotDir => encode_view(self.open_view(name)?, ROOT),
            Node::View(k, p) => encode_view(k, self.view(k)?.lookup(p, name.as_bytes())?),
        };
        self.attr(ino)
    }

    /// The view of snapshot `name` (its id), opened on first use.
    fn open_view(&self, name: &OsStr) -> Result<usize> {
        let name = name.to_str().ok_or_else(|| Error::not_found("not a snapshot id"))?;
        let id = ObjectId::from_hex(name).map_err(|_| Error::not_found(format!("no snapshot '{name}'")))?;
        if let Some(&k) = self.views.read().expect("poisoned").by_id.get(&id) {
            return Ok(k);
        }
        let view = self.drive.snapshot_fs(name)?;
        let mut views = self.views.write().expect("poisoned");
        if let Some(&k) = views.by_id.get(&id) {
            return Ok(k);
        }
        views.list.push(view);
        let k = views.list.len() - 1;
        views.by_id.insert(id, k);
        Ok(k)
    }

    /// (inode, kind, name) of a directory's entries, `.` and `..` first.
    fn entries(&self, ino: u64) -> Result<Vec<(u64, fuser::FileType, Vec<u8>)>> {
        use fuser::FileType as K;
        let kind = |t: FileType| match t {
            FileType::File => K::RegularFile,
            FileType::Dir => K::Directory,
            FileType::Symlink => K::Symlink,
            FileType::Other => K::NamedPipe,
        };
        let mut out = vec![(ino, K::Directory, b".".to_vec())];
        match decode(ino) {
            Node::SnapshotDir => {
                out.push((ROOT, K::Directory, b"..".to_vec()));
                for (id, s) in self.drive.ns().backing().repo.snapshots()? {
                    if !s.tags.iter().any(|t| t == DRIVE_HEAD_TAG) {
                        // Not opened yet: the number is provisional, lookup gives the real one.
                        out.push((SNAPSHOTS_INO + 1, K::Directory, id.to_hex().into_bytes()));
                    }
                }
            }
            _ => {
                let (ns, i, view) = self.ns_of(ino)?;
                let map = |n: u64| match view {
                    Some(k) => encode_view(k, n),
                    None => n,
                };
                let parent = if i == ROOT && view.is_some() { SNAPSHOTS_INO } else { map(ns.parent_of(i)?) };
                out.push((parent, K::Directory, b"..".to_vec()));
                for (name, child, t) in ns.list(i)? {
                    out.push((map(child), kind(t), name));
                }
            }
        }
        Ok(out)
    }

    fn add_open(&self, ino: u64, handle: NsHandle<Pool>, writable: bool) -> Result<u64> {
        let attr = self.attr(ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.open.lock().expect("poisoned").insert(fh, Arc::new(Open { handle, writable, ino, attr }));
        Ok(fh)
    }

    fn get_open(&self, fh: Fh) -> Result<Arc<Open>> {
        self.open
            .lock()
            .expect("poisoned")
            .get(&fh.0)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "bad file handle"))
    }

    fn open_file(&self, ino: u64, flags: OpenFlags) -> Result<u64> {
        let writes = flags.0 & libc_accmode() != nix::libc::O_RDONLY;
        let (ns, i, view) = self.ns_of(ino)?;
        if writes && view.is_some() {
            return Err(Error::new(ErrorKind::ReadOnly, "snapshots are read-only"));
        }
        let content = ns.content(i)?;
        self.add_open(ino, ns.handle(i, content), writes)
    }

    fn setattr(
        &self,
        ino: u64,
        fh: Option<Fh>,
        size: Option<u64>,
        mode: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        (atime, mtime): (Option<TimeOrNow>, Option<TimeOrNow>),
    ) -> Result<FileAttr> {
        let i = self.writable(ino)?;
        let drive = self.drive();
        if let Some(size) = size {
            match fh.map(|f| self.get_open(f)) {
                Some(open) => open?.handle.set_len(size)?,
                None => drive.handle(i, drive.content(i)?).set_len(size)?,
            }
        }
        let ns = |t: TimeOrNow| match t {
            TimeOrNow::Now => crate::machine::now_ns(),
            TimeOrNow::SpecificTime(t) => nanos(t),
        };
        let times = (atime.map(ns), mtime.map(ns));
        if mode.is_some() || owner.0.is_some() || owner.1.is_some() || times.0.is_some() || times.1.is_some() {
            drive.set_attr(i, mode, owner, times)?;
        }
        self.attr(ino)
    }

    fn statfs(&self) -> (u64, u64, u64) {
        const BLOCK: u64 = 4096;
        let repo = &self.drive.ns().backing().repo;
        let usage = repo.usage().unwrap_or_default();
        let (mut total, mut free) = (0u64, 0u64);
        for (backend, used) in usage {
            let (t, f) = backend_space(&backend, used.stored_bytes);
            total = total.saturating_add(t);
            free = free.saturating_add(f);
        }
        // What a user can store is what the backends hold divided by the redundancy.
        let overhead = repo.pool().redundancy.overhead().max(1.0);
        let blocks = |b: u64| (b as f64 / overhead) as u64 / BLOCK;
        (blocks(total), blocks(free), BLOCK)
    }
}

fn libc_accmode() -> i32 {
    nix::libc::O_ACCMODE
}

/// (total, free) bytes of one backend: its configured capacity, else the local file
/// system's for `fs` backends, else 1 PiB, as services do not report space.
fn backend_space(b: &crate::config::BackendConfig, used: u64) -> (u64, u64) {
    if let Some(cap) = b.capacity {
        return (cap, cap.saturating_sub(used));
    }
    if let Some(root) = b.local_root()
        && let Ok(s) = nix::sys::statvfs::statvfs(&root)
    {
        let f = s.fragment_size();
        return (s.blocks() * f, s.blocks_available() * f);
    }
    (1 << 50, (1u64 << 50).saturating_sub(used))
}

macro_rules! reply_err {
    ($reply:expr, $r:expr) => {
        match $r {
            Ok(v) => v,
            Err(e) => return $reply.error(errno(&e)),
        }
    };
}

impl fuser::Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let attr = reply_err!(reply, self.lookup(parent.0, name));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<Fh>, reply: ReplyAttr) {
        let attr = reply_err!(reply, self.attr(ino.0));
        reply.attr(&TTL, &attr);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<Fh>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let attr = reply_err!(reply, self.setattr(ino.0, fh, size, mode, (uid, gid), (atime, mtime)));
        reply.attr(&TTL, &attr);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = reply_err!(reply, self.ns_of(ino.0).and_then(|(ns, i, _)| ns.readlink(i)));
        reply.data(&target);
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let made = self.writable(parent.0).and_then(|p| {
            self.free_name(p, name)?;
            let attr = Self::new_attr(req, mode, umask);
            let rdev = rdev as u64;
            let ino = match mode & nix::libc::S_IFMT {
                nix::libc::S_IFREG => self.drive().mkfile(p, name.as_bytes(), attr)?.0,
                nix::libc::S_IFIFO => self.drive().mkspecial(p, name.as_bytes(), NodeKind::Fifo, attr)?,
                nix::libc::S_IFSOCK => self.drive().mkspecial(p, name.as_bytes(), NodeKind::Socket, attr)?,
                nix::libc::S_IFCHR => {
                    self.drive().mkspecial(p, name.as_bytes(), NodeKind::CharDevice { rdev }, attr)?
                }
                nix::libc::S_IFBLK => {
                    self.drive().mkspecial(p, name.as_bytes(), NodeKind::BlockDevice { rdev }, attr)?
                }
                _ => return Err(Error::new(ErrorKind::InvalidInput, "unknown file type")),
            };
            self.attr(ino)
        });
        let attr = reply_err!(reply, made);
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let made = self.writable(parent.0).and_then(|p| {
            self.free_name(p, name)?;
            let ino = self.drive().mkdir(p, name.as_bytes(), Self::new_attr(req, mode, umask))?;
            self.attr(ino)
        });
        let attr = reply_err!(reply, made);
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_err!(reply, self.writable(parent.0).and_then(|p| self.drive().unlink(p, name.as_bytes())));
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_err!(reply, self.writable(parent.0).and_then(|p| self.drive().rmdir(p, name.as_bytes())));
        reply.ok();
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let made = self.writable(parent.0).and_then(|p| {
            self.free_name(p, link_name)?;
            let attr = Self::new_attr(req, 0o777, 0);
            let ino = self.drive().mksymlink(p, link_name.as_bytes(), target.as_os_str().as_bytes(), attr)?;
            self.attr(ino)
        });
        let attr = reply_err!(reply, made);
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let done = (|| {
            let (p, np) = (self.writable(parent.0)?, self.writable(newparent.0)?);
            self.free_name(np, newname)?;
            let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            self.drive().rename((p, name.as_bytes()), (np, newname.as_bytes()), no_replace)
        })();
        reply_err!(reply, done);
        reply.ok();
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let made = (|| {
            let (i, np) = (self.writable(ino.0)?, self.writable(newparent.0)?);
            self.free_name(np, newname)?;
            self.drive().link(i, np, newname.as_bytes())?;
            self.attr(ino.0)
        })();
        let attr = reply_err!(reply, made);
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fh = reply_err!(reply, self.open_file(ino.0, flags));
        // Every change to a file goes through this mount, so its cached pages stay valid.
        reply.opened(Fh(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let open = reply_err!(reply, self.get_open(fh));
        let (content, pool) = open.handle.content();
        let size = size as usize;
        let ahead = open.handle.read_ahead(offset, size);
        let first = reply_err!(reply, content.read_shared(pool, offset, size, ahead));
        // FUSE wants the whole range unless at end of file. Most reads lie within one chunk
        // and go out straight from the cache; the others are put together here.
        if first.len() == size || first.is_empty() {
            return reply.data(&first);
        }
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&first);
        while out.len() < size {
            let next = reply_err!(reply, content.read_shared(pool, offset + out.len() as u64, size - out.len(), ahead));
            if next.is_empty() {
                break;
            }
            out.extend_from_slice(&next);
        }
        reply.data(&out);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let open = reply_err!(reply, self.get_open(fh));
        if !open.writable {
            return reply.error(Errno::EBADF);
        }
        reply_err!(reply, open.handle.write_at(data, offset));
        reply.written(data.len() as u32);
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: Fh, _lock_owner: fuser::LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.open.lock().expect("poisoned").remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: Fh, _datasync: bool, reply: ReplyEmpty) {
        reply_err!(reply, self.drive.commit());
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: Fh, _datasync: bool, reply: ReplyEmpty) {
        reply_err!(reply, self.drive.commit());
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let listing = reply_err!(reply, self.entries(ino.0));
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.listings.lock().expect("poisoned").insert(fh, Arc::new(listing));
        reply.opened(Fh(fh), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: Fh, offset: u64, mut reply: ReplyDirectory) {
        let kept = self.listings.lock().expect("poisoned").get(&fh.0).cloned();
        let listing = match kept {
            Some(l) if offset > 0 => l,
            _ => {
                let fresh: Listing = Arc::new(reply_err!(reply, self.entries(ino.0)));
                self.listings.lock().expect("poisoned").insert(fh.0, fresh.clone());
                fresh
            }
        };
        for (i, (child, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*child), i as u64 + 1, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: Fh, _flags: OpenFlags, reply: ReplyEmpty) {
        self.listings.lock().expect("poisoned").remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (blocks, free, bsize) = self.statfs();
        let (files, _) = self.drive().statistics();
        reply.statfs(
            blocks,
            free,
            free,
            files,
            u32::MAX as u64,
            bsize as u32,
            crate::fs::NAME_MAX as u32,
            bsize as u32,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let made = self.writable(parent.0).and_then(|p| {
            self.free_name(p, name)?;
            let (ino, content) = self.drive().mkfile(p, name.as_bytes(), Self::new_attr(req, mode, umask))?;
            let writes = flags & nix::libc::O_ACCMODE != nix::libc::O_RDONLY;
            let fh = self.add_open(ino, self.drive().handle(ino, content), writes)?;
            Ok((self.attr(ino)?, fh))
        });
        let (attr, fh) = reply_err!(reply, made);
        reply.created(&TTL, &attr, Generation(0), Fh(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }
}

/// A mounted drive. `unmount` (or an unmount from outside, then `wait`) commits
/// everything and releases the pool's lock.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    drive: Arc<Drive>,
    stop: Arc<AtomicBool>,
    committer: Option<std::thread::JoinHandle<()>>,
}

/// Mount `drive` at `mountpoint` (an existing empty directory).
pub fn mount(drive: Drive, mountpoint: &Path, options: &MountOptions) -> Result<Mounted> {
    // The drive holds a lock on the pool: a mount that fails must not leave it behind.
    if let Err(e) = check_mountpoint(mountpoint, options) {
        drive.close()?;
        return Err(e);
    }
    let drive = Arc::new(drive);
    let adapter = Adapter {
        drive: drive.clone(),
        views: RwLock::new(Views { list: Vec::new(), by_id: HashMap::new() }),
        open: Mutex::new(HashMap::new()),
        listings: Mutex::new(HashMap::new()),
        next_fh: AtomicU64::new(1),
        mounted_at: crate::machine::now_ns(),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("cuckoo".into()),
        fuser::MountOption::Subtype("cuckoo".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::RW,
    ];
    if options.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(4);
    let session = match fuser::spawn_mount(adapter, mountpoint, &config) {
        Ok(session) => session,
        Err(e) => {
            // The adapter (and its clone of the drive) went with the failed mount.
            if let Ok(drive) = Arc::try_unwrap(drive) {
                drive.close()?;
            }
            return Err(Error::from_io(format!("cannot mount on {}", mountpoint.display()), e));
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let committer = spawn_committer(drive.clone(), stop.clone(), options.commit_interval);
    Ok(Mounted { session: Some(session), drive, stop, committer: Some(committer) })
}

/// Whether `mountpoint` can take the drive: an existing directory, and an empty one unless
/// `allow_non_empty`. Front ends call it before opening the drive, so a bad mountpoint takes
/// no lock at all; `mount` calls it again.
pub fn check_mountpoint(mountpoint: &Path, options: &MountOptions) -> Result<()> {
    let meta = std::fs::metadata(mountpoint)
        .map_err(|e| Error::from_io(format!("cannot mount on {}", mountpoint.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::new(
            ErrorKind::NotADirectory,
            format!("cannot mount on {}: it is not a directory", mountpoint.display()),
        ));
    }
    if options.allow_non_empty {
        return Ok(());
    }
    // FUSE mounts over files without a word (fuse3 dropped the `nonempty` check), and they
    // would be hidden until the unmount: easy to take for lost, or to write beside by mistake.
    let mut entries = std::fs::read_dir(mountpoint)
        .map_err(|e| Error::from_io(format!("cannot mount on {}", mountpoint.display()), e))?;
    if entries.next().is_some() {
        return Err(Error::new(
            ErrorKind::DirectoryNotEmpty,
            format!(
                "cannot mount on {}: it is not empty, and its files would be hidden while mounted (allow a non-empty mountpoint to mount anyway)",
                mountpoint.display()
            ),
        ));
    }
    Ok(())
}

/// Commit every `interval` while mounted. A failed commit is reported and retried at the
/// next tick; the data stays in the spool meanwhile.
fn spawn_committer(drive: Arc<Drive>, stop: Arc<AtomicBool>, interval: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let tick = Duration::from_millis(200);
        let mut waited = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            waited += tick;
            if waited >= interval {
                waited = Duration::ZERO;
                if let Err(e) = drive.commit() {
                    eprintln!("cuckoo mount: commit failed, will retry: {e}");
                }
            }
        }
    })
}

impl Mounted {
    /// True until the file system is unmounted (by `unmount` or from outside).
    pub fn is_mounted(&self) -> bool {
        self.session.as_ref().is_some_and(|s| !s.guard.is_finished())
    }

    /// Unmount, then commit and release the lock.
    pub fn unmount(mut self) -> Result<()> {
        if let Some(session) = self.session.take()
            && !session.guard.is_finished()
        {
            session.umount_and_join().map_err(|e| Error::from_io("unmount failed", e))?;
        }
        self.finish()
    }

    /// Wait until unmounted from outside (`umount`, `fusermount3 -u`) or until `stop` is
    /// set (then unmount), and finish as `unmount` does.
    pub fn wait(self, stop: &AtomicBool) -> Result<()> {
        while self.is_mounted() && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.unmount()
    }

    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(c) = self.committer.take() {
            let _ = c.join();
        }
        self.drive.shutdown()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
        let _ = self.finish();
    }
}
