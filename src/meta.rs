//! Reading and applying file metadata on the local file system (Unix).
//!
//! Owns: the translation between `std::fs::Metadata` and `model::Meta`, and restoring
//! modes, owners, nanosecond times and extended attributes (POSIX ACLs among them). Must
//! not: read or write file content.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use xattr::FileExt;

use crate::model::{Meta, Xattr};

/// The metadata cuckoo keeps for an entry.
pub fn from_std(m: &std::fs::Metadata) -> Meta {
    Meta {
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        dev: m.dev(),
        ino: m.ino(),
        nlink: m.nlink(),
        xattrs: Vec::new(),
    }
}

/// The extended attributes of `path` (of a symlink itself, not its target), sorted by
/// name. A file system without them gives none.
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        // Gone between the listing and now: the file changed meanwhile; it is left out.
        if let Some(value) = xattr::get(path, &name).map_err(|e| named(&name, e))? {
            out.push(Xattr { name: name.as_bytes().to_vec(), value });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn unsupported(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::ENOTSUP)
}

fn named(name: &OsStr, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("extended attribute {}: {e}", name.to_string_lossy()))
}

/// Where extended attributes are set: a path (not following a symlink) or an open file.
enum Target<'a> {
    Path(&'a Path),
    File(&'a std::fs::File),
}

impl Target<'_> {
    fn list(&self) -> std::io::Result<Vec<OsString>> {
        match self {
            Target::Path(p) => xattr::list(p).map(|l| l.collect()),
            Target::File(f) => f.list_xattr().map(|l| l.collect()),
        }
    }

    fn get(&self, name: &OsStr) -> std::io::Result<Option<Vec<u8>>> {
        match self {
            Target::Path(p) => xattr::get(p, name),
            Target::File(f) => f.get_xattr(name),
        }
    }

    fn set(&self, name: &OsStr, value: &[u8]) -> std::io::Result<()> {
        match self {
            Target::Path(p) => xattr::set(p, name, value),
            Target::File(f) => f.set_xattr(name, value),
        }
    }

    fn remove(&self, name: &OsStr) -> std::io::Result<()> {
        match self {
            Target::Path(p) => xattr::remove(p, name),
            Target::File(f) => f.remove_xattr(name),
        }
    }
}

/// Whether restore may remove an attribute the snapshot lacks: the user's own and ACLs.
/// Security and trusted ones that the system sets itself (an SELinux label) are left.
fn restore_owns(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name.starts_with(b"system.posix_acl_")
}

/// Make the target's extended attributes those of `wanted`: set the missing and different
/// ones, remove user attributes and ACLs it lacks. Every attribute is tried; the first
/// failure (a file system without them, a `security.*` one without privilege) is returned.
fn sync_xattrs(target: Target<'_>, wanted: &[Xattr]) -> std::io::Result<()> {
    let have = match target.list() {
        Ok(have) => have,
        Err(e) if unsupported(&e) && wanted.is_empty() => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut first: Option<std::io::Error> = None;
    for name in &have {
        let name_bytes = name.as_bytes();
        if restore_owns(name_bytes)
            && !wanted.iter().any(|x| x.name == name_bytes)
            && let Err(e) = target.remove(name)
        {
            first.get_or_insert(named(name, e));
        }
    }
    for x in wanted {
        let name = OsStr::from_bytes(&x.name);
        if have.iter().any(|h| h == name) && target.get(name).ok().flatten().as_deref() == Some(&x.value[..]) {
            continue;
        }
        if let Err(e) = target.set(name, &x.value) {
            first.get_or_insert(named(name, e));
        }
    }
    first.map_or(Ok(()), Err)
}

/// Whether this process may give files away (restore owners).
pub fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| nix::unistd::geteuid().is_root())
}

/// Like `apply`, through an open regular file: no path lookups, which a restore of many
/// small files would otherwise pay three times per file.
pub fn apply_to_file(file: &std::fs::File, meta: &Meta) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if is_root() {
        std::os::unix::fs::fchown(file, Some(meta.uid), Some(meta.gid))?;
    }
    let xattrs = sync_xattrs(Target::File(file), &meta.xattrs);
    file.set_permissions(std::fs::Permissions::from_mode(meta.mode))?;
    let t = timespec(meta.mtime_ns);
    nix::sys::stat::futimens(file, &t, &t).map_err(std::io::Error::from)?;
    xattrs
}

fn timespec(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Apply owner (as root), extended attributes, mode (not for symlinks, which have none on
/// Linux) and mtime, in that order: a chown clears set-id bits and `security.capability`,
/// which the attributes and the mode then set again; attributes go before the mode, which
/// may take away the owner's write permission a user needs to set them (an ACL's mask
/// agrees with the mode's group bits either way). A failed attribute does not keep the
/// mode and mtime from being set; it is returned after them.
pub fn apply(path: &Path, meta: &Meta, is_symlink: bool) -> std::io::Result<()> {
    if is_root() {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))?;
    }
    let xattrs = sync_xattrs(Target::Path(path), &meta.xattrs);
    if !is_symlink {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode))?;
    }
    set_mtime(path, meta.mtime_ns)?;
    xattrs
}

/// Set the modification time to the nanosecond, without following a symlink.
pub fn set_mtime(path: &Path, mtime_ns: i64) -> std::io::Result<()> {
    let t = timespec(mtime_ns);
    utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(std::io::Error::from)
}
