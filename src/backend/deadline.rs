//! The outermost layer: a last bound on every operation. OpenDAL's timeout and retry
//! layers bound each attempt, but not the wait for a free connection or a request slot,
//! and a service client can wait on its own connection pool without any timer (seen with
//! FTP under load). This turns any such hang into an error, so the backend is marked down
//! and redundancy takes over.
//!
//! Owns: the deadlines. Must not: retry (OpenDAL's retry layer does, below).

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use super::layer::Objects;
use crate::error::{Error, ErrorKind, Result};

/// The longest any single backend operation may take, retries included.
const OP_DEADLINE: Duration = Duration::from_secs(600);
/// Listings of large prefixes may legitimately take longer.
const LIST_DEADLINE: Duration = Duration::from_secs(1800);

/// `inner` with every operation bounded in time.
pub(crate) struct Deadline<L> {
    pub inner: L,
    /// Backend name and scheme, for messages.
    pub name: String,
    pub scheme: String,
}

impl<L> Deadline<L> {
    async fn bounded<T>(
        &self,
        what: &str,
        path: &str,
        deadline: Duration,
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(deadline, op).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "backend '{}' ({}): {what} {path}: no answer in {} s",
                    self.name,
                    self.scheme,
                    deadline.as_secs()
                ),
            )),
        }
    }
}

impl<L: Objects> Objects for Deadline<L> {
    async fn write(&self, path: &str, bytes: Bytes) -> Result<()> {
        self.bounded("write", path, OP_DEADLINE, self.inner.write(path, bytes)).await
    }

    async fn read(&self, path: &str) -> Result<Option<Bytes>> {
        self.bounded("read", path, OP_DEADLINE, self.inner.read(path)).await
    }

    async fn read_range(&self, path: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        self.bounded("read", path, OP_DEADLINE, self.inner.read_range(path, range)).await
    }

    async fn stat(&self, path: &str) -> Result<Option<u64>> {
        self.bounded("stat", path, OP_DEADLINE, self.inner.stat(path)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.bounded("list", prefix, LIST_DEADLINE, self.inner.list(prefix)).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.bounded("delete", path, OP_DEADLINE, self.inner.delete(path)).await
    }
}
