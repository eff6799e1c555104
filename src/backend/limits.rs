//! The rate-limit layer: requests per second, and upload and download bandwidth, as the
//! backend's config sets them.
//!
//! Owns: when a request may go. Must not: change what it does.

use bytes::Bytes;
use std::ops::Range;

use super::layer::Objects;
use crate::config::Limits;
use crate::error::Result;
use crate::limit::{Limiter, Shared};

/// `inner` with the backend's rate limits and the pool's, which all its backends share.
pub(crate) struct Limited<L> {
    inner: L,
    upload: Option<Limiter>,
    download: Option<Limiter>,
    requests: Option<Limiter>,
    shared: Shared,
}

impl<L> Limited<L> {
    pub fn new(inner: L, limits: Limits, shared: &Shared) -> Self {
        Limited {
            inner,
            upload: limits.upload.map(Limiter::new),
            download: limits.download.map(Limiter::new),
            requests: limits.requests_per_second.map(Limiter::new),
            shared: shared.clone(),
        }
    }

    async fn uploading(&self, bytes: u64) {
        if let Some(l) = &self.upload {
            l.acquire(bytes).await;
        }
        if let Some(l) = &self.shared.upload {
            l.acquire(bytes).await;
        }
    }

    async fn request(&self) {
        if let Some(l) = &self.requests {
            l.acquire(1).await;
        }
    }

    /// Paid after the fact: a read's size is known only once it is done. Over many reads the
    /// average stays at the limit.
    async fn downloaded(&self, bytes: Option<&Bytes>) {
        let Some(b) = bytes else { return };
        if let Some(l) = &self.download {
            l.acquire(b.len() as u64).await;
        }
        if let Some(l) = &self.shared.download {
            l.acquire(b.len() as u64).await;
        }
    }
}

impl<L: Objects> Objects for Limited<L> {
    async fn write(&self, path: &str, bytes: Bytes) -> Result<()> {
        self.request().await;
        self.uploading(bytes.len() as u64).await;
        self.inner.write(path, bytes).await
    }

    async fn read(&self, path: &str) -> Result<Option<Bytes>> {
        self.request().await;
        let got = self.inner.read(path).await?;
        self.downloaded(got.as_ref()).await;
        Ok(got)
    }

    async fn read_range(&self, path: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        self.request().await;
        let got = self.inner.read_range(path, range).await?;
        self.downloaded(got.as_ref()).await;
        Ok(got)
    }

    async fn stat(&self, path: &str) -> Result<Option<u64>> {
        self.request().await;
        self.inner.stat(path).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.request().await;
        self.inner.list(prefix).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.request().await;
        self.inner.delete(path).await
    }
}
