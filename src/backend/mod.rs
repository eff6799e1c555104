//! One storage place: an OpenDAL operator, with cuckoo's own concerns stacked over it as
//! layers of one small trait (`layer::Objects`), the way OpenDAL stacks its retry, timeout
//! and concurrency layers over a service:
//!
//! ```text
//! Deadline (deadline.rs)  a last bound on every operation
//!  └ Faulty (faults.rs)    faults injected by tests and drills
//!     └ Limited (limits.rs) rate limits from the config
//!        └ Dal (dal.rs)      the OpenDAL operator (+ its retry, timeout, concurrency layers)
//! ```
//!
//! Owns: building that stack from config (here) and mapping OpenDAL errors (`dal`). Must
//! not: choose where objects go (ring) or know object formats (codec); it moves opaque bytes
//! by path.

mod dal;

pub(crate) use dal::plain;
mod deadline;
mod faults;
mod layer;
mod limits;

use std::sync::Arc;
use std::time::Duration;

use opendal::Operator;
use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};

pub use faults::{Fault, Faults};

use crate::config::BackendConfig;
use crate::error::{Error, ErrorKind, Result};
use dal::Dal;
use deadline::Deadline;
use faults::Faulty;
use layer::Objects;
use limits::Limited;

use crate::limit::Shared;

/// The layers every backend has, outermost first.
type Stack = Deadline<Faulty<Limited<Dal>>>;

/// Put cuckoo's layers and OpenDAL's over the operator `op` built for `cfg`.
fn stack(cfg: &BackendConfig, op: Operator, faults: &Arc<Faults>, shared: &Shared) -> (Operator, Arc<Stack>) {
    let mut op =
        op.layer(TimeoutLayer::new().with_timeout(Duration::from_secs(120)).with_io_timeout(Duration::from_secs(60)));
    // OpenDAL marks every local I/O error it has no kind for as temporary, a read-only or
    // full disk among them: retried, each would cost 3 s before failing the same way. A
    // local disk's failures do not pass by waiting.
    if cfg.scheme != "fs" {
        op = op.layer(RetryLayer::new().with_jitter().with_max_times(4).with_min_delay(Duration::from_millis(200)));
    }
    let op = op.layer(ConcurrentLimitLayer::new(cfg.concurrency));
    let content_type = op.info().capability().write_with_content_type;
    let dal = Dal { name: cfg.name.clone(), scheme: cfg.scheme.clone(), op: op.clone(), content_type };
    let stack = Deadline {
        inner: Faulty { inner: Limited::new(dal, cfg.limits, shared), faults: faults.clone(), name: cfg.name.clone() },
        name: cfg.name.clone(),
        scheme: cfg.scheme.clone(),
    };
    (op, Arc::new(stack))
}

/// An opened backend.
#[derive(Clone)]
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
    /// The operator and the layers over it, or why OpenDAL could not build them (a root
    /// that is a file, say): such a backend is *down*, as one that does not answer is, so a
    /// redundant pool goes on without it and `backend list` names it alone.
    opened: std::result::Result<(Operator, Arc<Stack>), String>,
    faults: Arc<Faults>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("name", &self.name).field("scheme", &self.scheme).finish_non_exhaustive()
    }
}

impl Backend {
    /// Build the operator for `cfg` and the layers over it. Does no I/O: reachability shows
    /// on first use.
    pub fn open(cfg: &BackendConfig) -> Result<Backend> {
        Self::open_sharing(cfg, &Shared::default())
    }

    /// Like `open`, pacing its transfers also by limits other backends share.
    pub fn open_sharing(cfg: &BackendConfig, shared: &Shared) -> Result<Backend> {
        opendal::init_default_registry();
        let mut options = resolve_secrets(cfg)?;
        if let Some(root) = cfg.local_root()
            && !options.contains_key("atomic_write_dir")
        {
            // Without it a crash mid-write leaves a truncated object under its final name.
            options.insert("atomic_write_dir".into(), root.join(".cuckoo-tmp").display().to_string());
        }
        let faults = Arc::new(Faults::default());
        let opened = match Operator::via_iter(&cfg.scheme, options) {
            Ok(op) => Ok(stack(cfg, op, &faults, shared)),
            // Options that cannot work are the user's to fix: say so now.
            Err(e) if e.kind() == opendal::ErrorKind::ConfigInvalid => {
                return Err(Error::config(format!(
                    "backend '{}' ({}): invalid options: {}",
                    cfg.name,
                    cfg.scheme,
                    dal::plain(&e)
                )));
            }
            Err(e) => Err(format!("backend '{}' ({}): cannot be opened: {}", cfg.name, cfg.scheme, dal::plain(&e))),
        };
        Ok(Backend {
            name: cfg.name.clone(),
            scheme: cfg.scheme.clone(),
            weight: cfg.weight,
            capacity: cfg.capacity,
            drain: cfg.drain,
            opened,
            faults,
        })
    }

    /// The layers, or the error that kept them from being built.
    fn stack(&self) -> Result<&Stack> {
        match &self.opened {
            Ok((_, stack)) => Ok(stack),
            Err(why) => Err(Error::new(ErrorKind::Backend, why.clone())),
        }
    }

    /// Fault injection for tests and drills (see `Faults`).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The OpenDAL operator, for callers that need more than these few operations (none if
    /// it could not be built). It is below the layers: no limits, faults or deadlines apply.
    pub fn operator(&self) -> Option<&Operator> {
        self.opened.as_ref().ok().map(|(op, _)| op)
    }

    /// Store `bytes` at `path`, replacing what is there. Returns once the service reports the
    /// write complete (for `fs`: written, fsynced and renamed into place).
    pub async fn write(&self, path: &str, bytes: impl Into<bytes::Bytes>) -> Result<()> {
        self.stack()?.write(path, bytes.into()).await
    }

    /// The object at `path`, or `None` if it does not exist. The bytes are the service's
    /// buffer, not a copy (decoding reads them where they lie).
    pub async fn read(&self, path: &str) -> Result<Option<bytes::Bytes>> {
        self.stack()?.read(path).await
    }

    /// The object at `path` when it is expected to be `len` bytes long: asked for as a range,
    /// which some services answer with one request where a plain read first looks the length
    /// up (OpenDAL's `fs` also reads into a zeroed buffer of 2 MiB without it). A longer
    /// object comes back cut at `len`; the caller's decoding tells.
    pub async fn read_expecting(&self, path: &str, len: u64) -> Result<Option<bytes::Bytes>> {
        self.stack()?.read_range(path, 0..len).await
    }

    /// Bytes `range` of the object at `path`, fewer where it ends first; `None` if it does
    /// not exist.
    pub async fn read_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Option<bytes::Bytes>> {
        self.stack()?.read_range(path, range).await
    }

    /// The first `n` bytes of the object at `path`.
    pub async fn read_head(&self, path: &str, n: u64) -> Result<Vec<u8>> {
        match self.stack()?.read_range(path, 0..n).await? {
            Some(head) => Ok(head.into()),
            None => Err(Error::not_found(format!("backend '{}' ({}): read {path}: not found", self.name, self.scheme))),
        }
    }

    /// The length of the object at `path`, or `None` if it does not exist.
    pub async fn len(&self, path: &str) -> Result<Option<u64>> {
        self.stack()?.stat(path).await
    }

    /// Every object below `prefix` (a directory path ending in `/`), with its length.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.stack()?.list(prefix).await
    }

    /// Remove the object at `path`; a missing object is not an error.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.stack()?.delete(path).await
    }
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
