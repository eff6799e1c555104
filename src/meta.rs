//! Reading and applying file metadata on the local file system (Unix).
//!
//! Owns: the translation between `std::fs::Metadata` and `model::Meta`, and restoring
//! modes, owners and nanosecond times. Must not: read or write file content.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::model::Meta;

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
    }
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
    file.set_permissions(std::fs::Permissions::from_mode(meta.mode))?;
    let t = timespec(meta.mtime_ns);
    nix::sys::stat::futimens(file, &t, &t).map_err(std::io::Error::from)
}

fn timespec(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Apply owner (as root), mode (not for symlinks, which have none on Linux) and mtime.
/// Owner goes first: chown clears set-id bits, which the mode then sets again.
pub fn apply(path: &Path, meta: &Meta, is_symlink: bool) -> std::io::Result<()> {
    if is_root() {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))?;
    }
    if !is_symlink {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode))?;
    }
    set_mtime(path, meta.mtime_ns)
}

/// Set the modification time to the nanosecond, without following a symlink.
pub fn set_mtime(path: &Path, mtime_ns: i64) -> std::io::Result<()> {
    let t = timespec(mtime_ns);
    utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(std::io::Error::from)
}
