//! The bottom layer: one OpenDAL operator (with OpenDAL's own retry, timeout and
//! concurrency layers), the services' quirks worked around, and OpenDAL's errors mapped to
//! the library's, naming the backend.
//!
//! Owns: every call into OpenDAL. Must not: limit, inject or bound anything (the layers
//! above do).

use bytes::Bytes;
use futures::TryStreamExt;
use opendal::Operator;
use std::ops::Range;

use super::layer::{Objects, cut};
use crate::error::{Error, ErrorKind, Result};

/// An OpenDAL operator as the store's object interface.
pub(crate) struct Dal {
    pub name: String,
    pub scheme: String,
    pub op: Operator,
    /// Some services (the GCS emulator among them) refuse writes without a content type.
    pub content_type: bool,
}

impl Dal {
    fn err(&self, what: &str, path: &str, e: opendal::Error) -> Error {
        let kind = match e.kind() {
            _ if is_out_of_space(&e) => ErrorKind::Full,
            _ if is_read_only(&e) => ErrorKind::ReadOnly,
            opendal::ErrorKind::NotFound => ErrorKind::NotFound,
            opendal::ErrorKind::ConfigInvalid => ErrorKind::Config,
            opendal::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Backend,
        };
        Error::new(kind, format!("backend '{}' ({}): {what} {path}: {}", self.name, self.scheme, plain(&e)))
    }
}

/// What an OpenDAL error says, in the user's terms: its message and its cause, without
/// OpenDAL's kind, status, operation and context map (the backend, the operation and the
/// path are named by the caller).
pub(crate) fn plain(e: &opendal::Error) -> String {
    let mut text = e.message().to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    text
}

impl Objects for Dal {
    async fn write(&self, path: &str, bytes: Bytes) -> Result<()> {
        let mut w = self.op.write_with(path, bytes);
        if self.content_type {
            w = w.content_type("application/octet-stream");
        }
        w.await.map(|_| ()).map_err(|e| self.err("write", path, e))
    }

    async fn read(&self, path: &str) -> Result<Option<Bytes>> {
        match self.op.read(path).await {
            Ok(buf) => Ok(Some(buf.to_bytes())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("read", path, e)),
        }
    }

    async fn read_range(&self, path: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        // OpenDAL's FTP service leaves the data connection open after a partial read, and
        // the next request on that pooled connection fails: read whole objects there.
        if self.scheme != "ftp"
            && let Ok(buf) = self.op.read_with(path).range(range.clone()).await
        {
            return Ok(Some(buf.to_bytes()));
        }
        // A failed ranged read gets one plain read before giving up.
        Ok(self.read(path).await?.map(|all| cut(all, range)))
    }

    async fn stat(&self, path: &str) -> Result<Option<u64>> {
        match self.op.stat(path).await {
            Ok(meta) => Ok(Some(meta.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        // OpenDAL's FTP lister waits out the 60 s I/O timeout on a directory that does not
        // exist (the server answers 550 and opens no data connection); a stat says so at once.
        if self.scheme == "ftp" && !prefix.is_empty() {
            match self.op.stat(prefix).await {
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(vec![]),
                _ => {}
            }
        }
        let lister = match self.op.lister_with(prefix).recursive(true).await {
            Ok(l) => l,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(self.err("list", prefix, e)),
        };
        let entries: Vec<opendal::Entry> = match lister.try_collect().await {
            Ok(v) => v,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(self.err("list", prefix, e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            // Some services list the directory itself or intermediate directories.
            if entry.metadata().is_dir() || entry.path().ends_with('/') {
                continue;
            }
            let len = match entry.metadata().content_length() {
                0 => self.stat(entry.path()).await?.unwrap_or(0),
                n => n,
            };
            out.push((entry.path().to_string(), len));
        }
        Ok(out)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.op.delete(path).await.map_err(|e| self.err("delete", path, e))
    }
}

/// Services say "no space" in their own words: a local disk's ENOSPC, S3-compatible and
/// WebDAV servers' quota errors (HTTP 507 Insufficient Storage), Azure's and Google's quota
/// messages. A full backend is not a broken one: placement skips it, reads go on.
pub(crate) fn is_out_of_space(e: &opendal::Error) -> bool {
    let text = format!("{e:?}").to_ascii_lowercase();
    ["no space left", "quota", "insufficient storage", "insufficientstorage", "storage full", " 507 "]
        .iter()
        .any(|needle| text.contains(needle))
}

/// A local disk mounted read-only (EROFS) refuses every write: not a failure retrying can
/// cure. (Services that refuse for lack of rights say so as "permission denied".)
pub(crate) fn is_read_only(e: &opendal::Error) -> bool {
    let text = format!("{e:?}").to_ascii_lowercase();
    ["read-only file system", "(os error 30)"].iter().any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_message_and_cause_without_opendal_internals() {
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "create root dir failed")
            .with_operation("Builder::build")
            .with_context("root", "/x")
            .set_source(std::io::Error::from_raw_os_error(2));
        let text = plain(&e);
        assert!(text.starts_with("create root dir failed: No such file or directory"), "{text}");
        assert!(!text.contains("permanent") && !text.contains("Builder") && !text.contains("context"), "{text}");
    }

    #[test]
    fn out_of_space_is_full_not_broken() {
        let enospc = opendal::Error::new(opendal::ErrorKind::Unexpected, "no storage space")
            .set_source(std::io::Error::from_raw_os_error(28));
        assert!(is_out_of_space(&enospc));
        let quota = opendal::Error::new(opendal::ErrorKind::Unexpected, "QuotaExceeded: the bucket is over quota");
        assert!(is_out_of_space(&quota));
        let refused = opendal::Error::new(opendal::ErrorKind::Unexpected, "connection refused");
        assert!(!is_out_of_space(&refused));
    }

    #[test]
    fn a_read_only_file_system_is_read_only_not_broken() {
        let erofs = opendal::Error::new(opendal::ErrorKind::Unexpected, "write failed")
            .set_source(std::io::Error::from_raw_os_error(30));
        assert!(is_read_only(&erofs));
        let refused = opendal::Error::new(opendal::ErrorKind::Unexpected, "connection refused");
        assert!(!is_read_only(&refused));
    }
}
