//! The library's one error type: a kind a caller can branch on, plus the context that a
//! person needs to act (which backend, which path, which object).
//!
//! Owns: `Error`, `ErrorKind`, `Result`. Must not: format for a terminal or pick exit codes
//! (the binary does that), or hide a source error's text.

use std::fmt;

/// What went wrong, coarse enough to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The config file or a command argument is malformed or inconsistent.
    Config,
    /// A snapshot, path or object that was asked for does not exist.
    NotFound,
    /// Something already exists where it must not (an initialised pool, a backend name).
    AlreadyExists,
    /// A backend could not be reached or failed an operation.
    Backend,
    /// A backend refused an operation for lack of rights (credentials, ACLs).
    PermissionDenied,
    /// Stored bytes do not decode or do not match their id: never returned as data.
    Corrupt,
    /// An object was written by a newer format version than this build reads.
    UnsupportedVersion,
    /// Local file-system I/O failed.
    Io,
    /// The local catalogue could not be opened or updated.
    Catalogue,
    /// The operation was interrupted on request.
    Interrupted,
    /// The passphrase opens none of the pool's key slots.
    WrongPassphrase,
    /// Another operation holds a conflicting lock on the pool.
    Locked,
    /// A backend is out of space (its quota, its disk, or its configured capacity).
    Full,
    /// A file operation was given a directory (`EISDIR`).
    IsADirectory,
    /// A path component that must be a directory is not (`ENOTDIR`).
    NotADirectory,
    /// A directory to remove or replace still has entries (`ENOTEMPTY`).
    DirectoryNotEmpty,
    /// The file system, or this part of it, is read-only (`EROFS`).
    ReadOnly,
    /// The implementation does not support the operation (see `fs::Capabilities`).
    Unsupported,
    /// A path or argument is malformed: `..` above the root, a NUL byte, a bad offset.
    InvalidInput,
    /// A file name is longer than 255 bytes (`ENAMETOOLONG`).
    NameTooLong,
    /// Not allowed on this kind of entry, whoever asks: a hard link to a directory (`EPERM`).
    NotPermitted,
    /// A file has as many names as it may have (`EMLINK`).
    TooManyLinks,
}

/// The library error: a kind, a one-line context, and the underlying cause if any.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    context: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` described by `context`.
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Error { kind, context: context.into(), source: None }
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind, for callers that branch on it.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The context line, without the cause.
    pub fn context(&self) -> &str {
        &self.context
    }

    pub(crate) fn io(context: impl Into<String>, e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, context).with_source(e)
    }

    pub(crate) fn corrupt(context: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, context)
    }

    pub(crate) fn config(context: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, context)
    }

    pub(crate) fn not_found(context: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, context)
    }

    /// A local I/O error with its kind carried over where the library has one, so file-system
    /// callers can branch on "not found" or "not empty" whichever implementation they use.
    pub(crate) fn from_io(context: impl Into<String>, e: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match e.kind() {
            // EPERM and EACCES share an `io::ErrorKind`, but mean different things.
            _ if e.raw_os_error() == Some(nix::libc::EPERM) => ErrorKind::NotPermitted,
            Io::TooManyLinks => ErrorKind::TooManyLinks,
            Io::NotFound => ErrorKind::NotFound,
            Io::AlreadyExists => ErrorKind::AlreadyExists,
            Io::PermissionDenied => ErrorKind::PermissionDenied,
            Io::IsADirectory => ErrorKind::IsADirectory,
            Io::NotADirectory => ErrorKind::NotADirectory,
            Io::DirectoryNotEmpty => ErrorKind::DirectoryNotEmpty,
            Io::ReadOnlyFilesystem => ErrorKind::ReadOnly,
            Io::Unsupported => ErrorKind::Unsupported,
            Io::InvalidInput | Io::InvalidFilename => ErrorKind::InvalidInput,
            Io::StorageFull | Io::QuotaExceeded => ErrorKind::Full,
            _ if e.raw_os_error() == Some(nix::libc::ENAMETOOLONG) => ErrorKind::NameTooLong,
            _ => ErrorKind::Io,
        };
        Error::new(kind, context).with_source(e)
    }

    /// The same error as `std::io::Error` (kind from `errno`, message kept), for the
    /// `Read`/`Write` impls of `fs::File`.
    pub fn to_io(&self) -> std::io::Error {
        std::io::Error::new(std::io::Error::from_raw_os_error(self.errno()).kind(), self.to_string())
    }

    /// The POSIX errno closest to this error's kind.
    pub fn errno(&self) -> i32 {
        use nix::libc;
        match self.kind {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::AlreadyExists => libc::EEXIST,
            ErrorKind::PermissionDenied | ErrorKind::WrongPassphrase => libc::EACCES,
            ErrorKind::IsADirectory => libc::EISDIR,
            ErrorKind::NotADirectory => libc::ENOTDIR,
            ErrorKind::DirectoryNotEmpty => libc::ENOTEMPTY,
            ErrorKind::ReadOnly => libc::EROFS,
            ErrorKind::Unsupported => libc::ENOTSUP,
            ErrorKind::InvalidInput | ErrorKind::Config => libc::EINVAL,
            ErrorKind::NameTooLong => libc::ENAMETOOLONG,
            ErrorKind::NotPermitted => libc::EPERM,
            ErrorKind::TooManyLinks => libc::EMLINK,
            ErrorKind::Full => libc::ENOSPC,
            ErrorKind::Interrupted => libc::EINTR,
            ErrorKind::Locked => libc::EBUSY,
            _ => libc::EIO,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::new(ErrorKind::Catalogue, "catalogue").with_source(e)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);
