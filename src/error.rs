//! The library's one error type: a kind a caller can branch on, plus the context that a
//! person needs to act (which backend, which path, which object).
//!
//! Owns: `Error`, `ErrorKind`, `Result`. Must not: format for a terminal or pick exit codes
//! (the binary does that), or hide a source error's text.

use std::fmt;

/// What went wrong, coarse enough to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
