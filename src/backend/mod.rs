//! One storage place: an OpenDAL operator with retry, timeout and concurrency layers, and the
//! few operations the store needs, with errors that name the backend.
//!
//! Owns: building operators from config and mapping OpenDAL errors. Must not: choose where
//! objects go (ring) or know object formats (codec); it moves opaque bytes by path.

mod faults;

use std::time::Duration;

/// The longest any single backend operation may take, retries included (see `bounded`).
const OP_DEADLINE: Duration = Duration::from_secs(600);
/// Listings of large prefixes may legitimately take longer.
const LIST_DEADLINE: Duration = Duration::from_secs(1800);

pub use faults::{Fault, Faults};
use faults::{Then, damage};

use futures::TryStreamExt;
use opendal::Operator;
use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};

use std::sync::Arc;

use crate::config::BackendConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::limit::Limiter;

/// An opened backend.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Name from the config.
    pub name: String,
    /// OpenDAL scheme.
    pub scheme: String,
    /// Placement weight.
    pub weight: f64,
    /// Most bytes it may hold (config `capacity`).
    pub capacity: Option<u64>,
    /// Being emptied: placement sends it nothing new.
    pub drain: bool,
    op: Operator,
    content_type: bool,
    limits: Arc<Limiters>,
    faults: Arc<Faults>,
}

/// The rate limiters of one backend, shared by its clones.
#[derive(Debug, Default)]
struct Limiters {
    upload: Option<Limiter>,
    download: Option<Limiter>,
    requests: Option<Limiter>,
}

impl Limiters {
    async fn request(&self) {
        if let Some(l) = &self.requests {
            l.acquire(1).await;
        }
    }
}

impl Backend {
    /// Build the operator for `cfg`. Does no I/O: reachability shows on first use.
    pub fn open(cfg: &BackendConfig) -> Result<Backend> {
        opendal::init_default_registry();
        let mut options = resolve_secrets(cfg)?;
        if let Some(root) = cfg.local_root()
            && !options.contains_key("atomic_write_dir")
        {
            // Without it a crash mid-write leaves a truncated object under its final name.
            options.insert("atomic_write_dir".into(), root.join(".cuckoo-tmp").display().to_string());
        }
        let op = Operator::via_iter(&cfg.scheme, options).map_err(|e| {
            let (kind, what) = match e.kind() {
                opendal::ErrorKind::ConfigInvalid => (ErrorKind::Config, "invalid options"),
                _ => (ErrorKind::Backend, "cannot be opened"),
            };
            Error::new(kind, format!("backend '{}' ({}): {what}", cfg.name, cfg.scheme)).with_source(e)
        })?;
        let op = op
            .layer(TimeoutLayer::new().with_timeout(Duration::from_secs(120)).with_io_timeout(Duration::from_secs(60)))
            .layer(RetryLayer::new().with_jitter().with_max_times(4).with_min_delay(Duration::from_millis(200)))
            .layer(ConcurrentLimitLayer::new(cfg.concurrency));
        let content_type = op.info().capability().write_with_content_type;
        let l = cfg.limits;
        let limits = Arc::new(Limiters {
            upload: l.upload.map(Limiter::new),
            download: l.download.map(Limiter::new),
            requests: l.requests_per_second.map(Limiter::new),
        });
        Ok(Backend {
            name: cfg.name.clone(),
            scheme: cfg.scheme.clone(),
            weight: cfg.weight,
            capacity: cfg.capacity,
            drain: cfg.drain,
            op,
            content_type,
            limits,
            faults: Arc::default(),
        })
    }

    /// Fault injection for tests and drills (see `Faults`).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The OpenDAL operator, for callers that need more than these few operations.
    pub fn operator(&self) -> &Operator {
        &self.op
    }

    fn err(&self, what: &str, path: &str, e: opendal::Error) -> Error {
        let kind = match e.kind() {
            _ if is_out_of_space(&e) => ErrorKind::Full,
            opendal::ErrorKind::NotFound => ErrorKind::NotFound,
            opendal::ErrorKind::ConfigInvalid => ErrorKind::Config,
            opendal::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Backend,
        };
        Error::new(kind, format!("backend '{}' ({}): {what} {path}", self.name, self.scheme)).with_source(e)
    }

    /// Store `bytes` at `path`, replacing what is there. Returns once the service reports the
    /// write complete (for `fs`: written, fsynced and renamed into place).
    pub async fn write(&self, path: &str, bytes: impl Into<bytes::Bytes>) -> Result<()> {
        self.bounded("write", path, OP_DEADLINE, self.write_inner(path, bytes.into())).await
    }

    /// The object at `path`, or `None` if it does not exist. The bytes are the service's
    /// buffer, not a copy (decoding reads them where they lie).
    pub async fn read(&self, path: &str) -> Result<Option<bytes::Bytes>> {
        self.bounded("read", path, OP_DEADLINE, self.read_inner(path)).await
    }

    /// The first `n` bytes of the object at `path`.
    pub async fn read_head(&self, path: &str, n: u64) -> Result<Vec<u8>> {
        self.bounded("read", path, OP_DEADLINE, self.read_head_inner(path, n)).await
    }

    /// The length of the object at `path`, or `None` if it does not exist.
    pub async fn len(&self, path: &str) -> Result<Option<u64>> {
        self.bounded("stat", path, OP_DEADLINE, self.len_inner(path)).await
    }

    /// Every object below `prefix` (a directory path ending in `/`), with its length.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.bounded("list", prefix, LIST_DEADLINE, self.list_inner(prefix)).await
    }

    /// Remove the object at `path`; a missing object is not an error.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.bounded("delete", path, OP_DEADLINE, self.delete_inner(path)).await
    }

    /// OpenDAL's timeout and retry layers bound each attempt, but not the wait for a free
    /// connection or a request slot, and a service client can wait on its own connection pool
    /// without any timer (seen with FTP under load). This last bound turns any such hang into
    /// an error, so the backend is marked down and redundancy takes over.
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

    async fn write_inner(&self, path: &str, bytes: bytes::Bytes) -> Result<()> {
        self.faults.enter(&self.name, "write", path).await?;
        self.limits.request().await;
        if let Some(l) = &self.limits.upload {
            l.acquire(bytes.len() as u64).await;
        }
        let mut w = self.op.write_with(path, bytes);
        if self.content_type {
            // Some services (the GCS emulator among them) refuse writes without one.
            w = w.content_type("application/octet-stream");
        }
        w.await.map(|_| ()).map_err(|e| self.err("write", path, e))
    }

    async fn read_inner(&self, path: &str) -> Result<Option<bytes::Bytes>> {
        let then = self.faults.enter(&self.name, "read", path).await?;
        if then == Then::Vanish {
            return Ok(None);
        }
        self.limits.request().await;
        match self.op.read(path).await {
            Ok(buf) => {
                // Paid after the fact: the size is known only now. Over many reads the
                // average stays at the limit.
                if let Some(l) = &self.limits.download {
                    l.acquire(buf.len() as u64).await;
                }
                let bytes = buf.to_bytes();
                Ok(Some(if then == Then::Damage { damage(bytes.into()).into() } else { bytes }))
            }
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("read", path, e)),
        }
    }

    async fn read_head_inner(&self, path: &str, n: u64) -> Result<Vec<u8>> {
        if self.faults.enter(&self.name, "read", path).await? != Then::Proceed {
            // Lost or damaged: the whole-object read below reports it the same way.
            return match self.read(path).await? {
                Some(mut all) => {
                    all.truncate(n as usize);
                    Ok(all.into())
                }
                None => {
                    Err(Error::not_found(format!("backend '{}' ({}): read {path}: not found", self.name, self.scheme)))
                }
            };
        }
        // OpenDAL's FTP service leaves the data connection open after a partial read, and
        // the next request on that pooled connection fails: read whole objects there.
        if self.scheme != "ftp" {
            self.limits.request().await;
            if let Ok(buf) = self.op.read_with(path).range(0..n).await {
                return Ok(buf.to_vec());
            }
        }
        // A failed ranged read gets one plain read before giving up.
        match self.read(path).await? {
            Some(mut all) => {
                all.truncate(n as usize);
                Ok(all.into())
            }
            None => Err(Error::not_found(format!("backend '{}' ({}): read {path}: not found", self.name, self.scheme))),
        }
    }

    async fn len_inner(&self, path: &str) -> Result<Option<u64>> {
        if self.faults.enter(&self.name, "stat", path).await? == Then::Vanish {
            return Ok(None);
        }
        self.limits.request().await;
        match self.op.stat(path).await {
            Ok(meta) => Ok(Some(meta.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", path, e)),
        }
    }

    async fn list_inner(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        if self.faults.enter(&self.name, "list", prefix).await? == Then::Vanish {
            return Ok(vec![]);
        }
        self.limits.request().await;
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
                0 => self.len(entry.path()).await?.unwrap_or(0),
                n => n,
            };
            out.push((entry.path().to_string(), len));
        }
        Ok(out)
    }

    async fn delete_inner(&self, path: &str) -> Result<()> {
        self.faults.enter(&self.name, "delete", path).await?;
        self.limits.request().await;
        self.op.delete(path).await.map_err(|e| self.err("delete", path, e))
    }
}

/// Services say "no space" in their own words: a local disk's ENOSPC, S3-compatible and
/// WebDAV servers' quota errors (HTTP 507 Insufficient Storage), Azure's and Google's quota
/// messages. A full backend is not a broken one: placement skips it, reads go on.
fn is_out_of_space(e: &opendal::Error) -> bool {
    let text = format!("{e:?}").to_ascii_lowercase();
    ["no space left", "quota", "insufficient storage", "insufficientstorage", "storage full", " 507 "]
        .iter()
        .any(|needle| text.contains(needle))
}

/// Option values of the form `env:NAME` come from environment variable NAME, and
/// `file:PATH` from a file only its owner can read; so a config can be shared or committed
/// without its secrets. Messages name the variable or file, never the value.
fn resolve_secrets(cfg: &BackendConfig) -> Result<std::collections::BTreeMap<String, String>> {
    let bad = |key: &str, why: String| Error::config(format!("backend '{}': option '{key}': {why}", cfg.name));
    let mut out = cfg.options.clone();
    for (key, value) in out.iter_mut() {
        if let Some(var) = value.strip_prefix("env:") {
            *value = std::env::var(var).map_err(|_| bad(key, format!("environment variable {var} is not set")))?;
        } else if let Some(path) = value.strip_prefix("file:") {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| bad(key, format!("cannot read {path}: {e}")))?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(bad(key, format!("{path} is readable by others: chmod 600 it")));
            }
            let text = std::fs::read_to_string(path).map_err(|e| bad(key, format!("cannot read {path}: {e}")))?;
            *value = text.trim_end_matches(['\n', '\r']).to_string();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(value: &str) -> BackendConfig {
        BackendConfig {
            name: "b".into(),
            scheme: "memory".into(),
            weight: 1.0,
            concurrency: 1,
            limits: Default::default(),
            capacity: None,
            drain: false,
            options: [("secret".to_string(), value.to_string())].into(),
        }
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
    fn secrets_come_from_env_or_private_files_and_never_show() {
        use std::os::unix::fs::PermissionsExt;
        let var = format!("CUCKOO_TEST_SECRET_{}", std::process::id());
        assert!(resolve_secrets(&cfg(&format!("env:{var}"))).unwrap_err().to_string().contains(&var));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve_secrets(&cfg(&format!("file:{}", path.display()))).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && !err.contains("s3cr3t"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let got = resolve_secrets(&cfg(&format!("file:{}", path.display()))).unwrap();
        assert_eq!(got["secret"], "s3cr3t");
        assert_eq!(resolve_secrets(&cfg("plain")).unwrap()["secret"], "plain");
    }
}
