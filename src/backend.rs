//! One storage place: an OpenDAL operator with retry, timeout and concurrency layers, and the
//! few operations the store needs, with errors that name the backend.
//!
//! Owns: building operators from config and mapping OpenDAL errors. Must not: choose where
//! objects go (ring) or know object formats (codec); it moves opaque bytes by path.

use std::time::Duration;

use futures::TryStreamExt;
use opendal::Operator;
use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};

use crate::config::BackendConfig;
use crate::error::{Error, ErrorKind, Result};

/// An opened backend.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Name from the config.
    pub name: String,
    /// OpenDAL scheme.
    pub scheme: String,
    /// Placement weight.
    pub weight: f64,
    op: Operator,
    content_type: bool,
}

impl Backend {
    /// Build the operator for `cfg`. Does no I/O: reachability shows on first use.
    pub fn open(cfg: &BackendConfig) -> Result<Backend> {
        opendal::init_default_registry();
        let mut options = cfg.options.clone();
        if cfg.scheme == "fs" && !options.contains_key("atomic_write_dir") {
            // Without it a crash mid-write leaves a truncated object under its final name.
            if let Some(root) = options.get("root") {
                let tmp = std::path::Path::new(root).join(".cuckoo-tmp");
                options.insert("atomic_write_dir".into(), tmp.display().to_string());
            }
        }
        let op = Operator::via_iter(&cfg.scheme, options).map_err(|e| {
            Error::config(format!("backend '{}' ({}): invalid options", cfg.name, cfg.scheme)).with_source(e)
        })?;
        let op = op
            .layer(TimeoutLayer::new().with_timeout(Duration::from_secs(120)).with_io_timeout(Duration::from_secs(60)))
            .layer(RetryLayer::new().with_jitter().with_max_times(4).with_min_delay(Duration::from_millis(200)))
            .layer(ConcurrentLimitLayer::new(cfg.concurrency));
        let content_type = op.info().capability().write_with_content_type;
        Ok(Backend { name: cfg.name.clone(), scheme: cfg.scheme.clone(), weight: cfg.weight, op, content_type })
    }

    fn err(&self, what: &str, path: &str, e: opendal::Error) -> Error {
        let kind = match e.kind() {
            opendal::ErrorKind::NotFound => ErrorKind::NotFound,
            opendal::ErrorKind::ConfigInvalid => ErrorKind::Config,
            _ => ErrorKind::Backend,
        };
        Error::new(kind, format!("backend '{}' ({}): {what} {path}", self.name, self.scheme)).with_source(e)
    }

    /// Store `bytes` at `path`, replacing what is there. Returns once the service reports the
    /// write complete (for `fs`: written, fsynced and renamed into place).
    pub async fn write(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let mut w = self.op.write_with(path, bytes);
        if self.content_type {
            // Some services (the GCS emulator among them) refuse writes without one.
            w = w.content_type("application/octet-stream");
        }
        w.await.map(|_| ()).map_err(|e| self.err("write", path, e))
    }

    /// The object at `path`, or `None` if it does not exist.
    pub async fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.op.read(path).await {
            Ok(buf) => Ok(Some(buf.to_vec())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("read", path, e)),
        }
    }

    /// The first `n` bytes of the object at `path`.
    pub async fn read_head(&self, path: &str, n: u64) -> Result<Vec<u8>> {
        match self.op.read_with(path).range(0..n).await {
            Ok(buf) => Ok(buf.to_vec()),
            Err(e) => Err(self.err("read", path, e)),
        }
    }

    /// The length of the object at `path`, or `None` if it does not exist.
    pub async fn len(&self, path: &str) -> Result<Option<u64>> {
        match self.op.stat(path).await {
            Ok(meta) => Ok(Some(meta.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", path, e)),
        }
    }

    /// Every object below `prefix` (a directory path ending in `/`), with its length.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
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
                0 => self.len(entry.path()).await?.unwrap_or(0),
                n => n,
            };
            out.push((entry.path().to_string(), len));
        }
        Ok(out)
    }

    /// Remove the object at `path`; a missing object is not an error.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.op.delete(path).await.map_err(|e| self.err("delete", path, e))
    }
}
