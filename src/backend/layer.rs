//! What the store asks of one storage place, as one small trait, so that cross-cutting
//! concerns stack as layers over the OpenDAL operator the way OpenDAL composes its own:
//! each wraps an inner implementation and forwards what it does not change.
//!
//! Owns: the `Objects` trait. Must not: know any service or concern (`dal`, `limits`,
//! `faults`, `deadline` do).

use std::ops::Range;

use bytes::Bytes;

use crate::error::Result;

/// Object operations on one backend, by path. Errors name the backend and the path.
pub(crate) trait Objects: Send + Sync + 'static {
    /// Store `bytes` at `path`, replacing what is there; returns once the service reports
    /// the write complete.
    fn write(&self, path: &str, bytes: Bytes) -> impl Future<Output = Result<()>> + Send;
    /// The object at `path`, or `None` if it does not exist.
    fn read(&self, path: &str) -> impl Future<Output = Result<Option<Bytes>>> + Send;
    /// Bytes `range` of the object at `path` (fewer where it ends first), or `None` if it
    /// does not exist.
    fn read_range(&self, path: &str, range: Range<u64>) -> impl Future<Output = Result<Option<Bytes>>> + Send;
    /// The length of the object at `path`, or `None` if it does not exist.
    fn stat(&self, path: &str) -> impl Future<Output = Result<Option<u64>>> + Send;
    /// Every object below `prefix`, with its length.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<(String, u64)>>> + Send;
    /// Remove the object at `path`; a missing object is not an error.
    fn delete(&self, path: &str) -> impl Future<Output = Result<()>> + Send;
}

/// Bytes `range` of a whole object, as a ranged read returns them: cut short where the
/// object ends.
pub(crate) fn cut(all: Bytes, range: Range<u64>) -> Bytes {
    let len = all.len() as u64;
    all.slice(range.start.min(len) as usize..range.end.min(len).max(range.start.min(len)) as usize)
}
