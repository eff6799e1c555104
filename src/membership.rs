//! Changing which backends make up a pool: add one (proved to work before the config names
//! it), change its weight or capacity, and remove one (drain it, then forget it).
//!
//! Owns: the order of those steps, so that an interruption at any point leaves a pool that
//! opens and a config that says what to do next. Must not: parse arguments or print (the
//! CLI and other front ends do).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::{self, BackendConfig, Config};
use crate::crypto::PassphraseSource;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::redundancy::Scheme;
use crate::repair::{RepairOptions, RepairReport};
use crate::repository::{InitOptions, InitOutcome, Repository, init};

/// A backend added to the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The pool's id (hex) as written to the backend; `None` if it already carried the
    /// pool's record (added before, then dropped from the config) and nothing was written.
    pub pool: Option<String>,
    /// The pool's redundancy, when its record was read.
    pub redundancy: Option<Scheme>,
}

/// Add `backend` to the pool of `config`: check its settings, write the pool record (and
/// key slots) to it, and only then name it in the config file, so a backend that does not
/// work never enters the config.
pub async fn add(config: &mut Config, backend: BackendConfig, passphrase: &dyn PassphraseSource) -> Result<Added> {
    if !config::SCHEMES.contains(&backend.scheme.as_str()) {
        return Err(Error::config(format!(
            "unknown scheme '{}' (this build knows {})",
            backend.scheme,
            config::SCHEMES.join(", ")
        )));
    }
    if !(backend.weight.is_finite() && backend.weight > 0.0) || backend.concurrency == 0 {
        return Err(Error::config(format!(
            "backend '{}': the weight must be positive and the concurrency at least 1",
            backend.name
        )));
    }
    let mut trial = config.clone();
    trial.backends.push(backend.clone());
    let added = match init(&trial, &InitOptions::default(), passphrase).await {
        Ok(InitOutcome::Created(r) | InitOutcome::Adopted(r, _)) => {
            Added { pool: Some(r.pool_id_hex()), redundancy: Some(r.redundancy) }
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Added { pool: None, redundancy: None },
        Err(e) => return Err(e),
    };
    config.append_backend(backend)?;
    Ok(added)
}

/// Change the weight and/or capacity of backend `name` in the config file. Data moves only
/// when `rebalance` runs.
pub fn set(config: &mut Config, name: &str, weight: Option<f64>, capacity: Option<u64>) -> Result<()> {
    if weight.is_none() && capacity.is_none() {
        return Err(Error::config("give a weight and/or a capacity"));
    }
    if weight.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
        return Err(Error::config(format!("backend '{name}': the weight must be positive")));
    }
    config.edit_backend(name, |t| {
        if let Some(w) = weight {
            t["weight"] = toml_edit::value(w);
        }
        if let Some(c) = capacity {
            t["capacity"] = toml_edit::value(c as i64);
        }
        true
    })
}

/// How a removal went.
#[derive(Debug, Clone)]
pub enum Removed {
    /// The backend holds nothing of the pool any more and is gone from the config.
    Done {
        /// What the rebalance moved off it.
        report: RepairReport,
        /// Set when the backend could not be listed at the end (a provider gone for good):
        /// what it held was rebuilt on the others from their copies or shards.
        unlistable: Option<String>,
    },
    /// Pieces are left on it (or some objects could not be moved): it stays in the config,
    /// marked to drain, and removing it again goes on where this stopped.
    StillDraining {
        /// Pieces still on the backend.
        remaining: usize,
        /// What the rebalance did and could not do.
        report: RepairReport,
    },
}

/// Remove backend `name`: mark it draining in the config (so placement sends it nothing and
/// an interrupted removal resumes by running this again, or `rebalance`), move every piece it
/// holds to the backends placement now wants, and drop it from the config once it holds
/// nothing. Setting `interrupt` stops the rebalance at the next safe point.
pub async fn remove(
    config: &mut Config,
    name: &str,
    passphrase: &dyn PassphraseSource,
    progress: &dyn Progress,
    interrupt: Arc<AtomicBool>,
) -> Result<Removed> {
    let Some(index) = config.backends.iter().position(|b| b.name == name) else {
        return Err(Error::not_found(format!("no backend named '{name}' in {}", config.path.display())));
    };
    let left = config.backends.len() - 1;
    config.edit_backend(name, |t| {
        t["drain"] = toml_edit::value(true);
        true
    })?;
    let repo = Repository::open(config.clone(), passphrase, progress).await?.with_interrupt_flag(interrupt);
    repo.pool()
        .redundancy
        .check_fits(left)
        .map_err(|e| Error::new(e.kind(), format!("cannot remove '{name}': {}", e.context())))?;
    let options = RepairOptions { rebalance: true, read_data: false, dry_run: false };
    let report = repo.repair(options, progress).await?;
    let settled = report.unrecoverable.is_empty() && report.incomplete == 0;
    let (remaining, unlistable) = match repo.pieces_on(index).await {
        Ok(n) => (n, None),
        Err(e) if settled => (0, Some(e.to_string())),
        Err(e) => return Err(e),
    };
    if remaining > 0 || !settled {
        return Ok(Removed::StillDraining { remaining, report });
    }
    drop(repo);
    config.edit_backend(name, |_| false)?;
    Ok(Removed::Done { report, unlistable })
}
