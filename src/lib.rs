//! Cuckoo Drive: one deduplicated drive pooled over many storage backends.
//!
//! Files are cut by FastCDC into chunks named by their BLAKE3 hash, compressed with zstd and
//! spread over the backends (any OpenDAL service) by weighted rendezvous hashing, as whole
//! copies or Reed-Solomon shards so that losing backends loses nothing. Snapshots
//! and trees are content-addressed objects on the backends too, so a pool can always be read
//! with nothing but its config; the local redb catalogue is a rebuildable cache.
//!
//! ```no_run
//! # async fn demo() -> cuckoo::Result<()> {
//! use std::sync::Arc;
//! use cuckoo::{BackupOptions, Config, NoProgress, Passphrase, Repository, RestoreOptions};
//!
//! let config = Config::load("pool.toml".as_ref())?;
//! let passphrase = Passphrase::new(std::env::var("CUCKOO_PASSWORD").unwrap_or_default());
//! let repo = Repository::open(config, &passphrase, &NoProgress).await?;
//! let done = repo
//!     .backup(BackupOptions { paths: vec!["/home/me/src".into()], ..Default::default() }, Arc::new(NoProgress))
//!     .await?;
//! println!("snapshot {}", done.id);
//! let (_, snapshot) = repo.find_snapshot("latest")?;
//! repo.restore(&snapshot, RestoreOptions { target: "/tmp/back".into(), path: None }, Arc::new(NoProgress)).await?;
//! # Ok(()) }
//! ```
//!
//! Module map (see ARCHITECTURE.md): pure steps `chunker`, `codec`, `ring`, `redundancy`,
//! `model`; I/O in `backend` and `store`; local state in `catalogue`; operations in `backup`,
//! `restore`, `check`, `repair`, `prune`, `repository`; the filesystem API in `fs` (one
//! `Fs` trait for memory, local directories, the pool's live drive and snapshot views) and
//! its FUSE adapter in `mount`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod backup;
pub mod catalogue;
pub mod check;
pub mod chunker;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod diff;
mod error;
mod exec;
pub mod forget;
pub mod fs;
pub mod id;
pub mod limit;
pub mod lock;
mod machine;
pub mod membership;
pub mod meta;
pub mod model;
pub mod mount;
mod pipeline;
pub mod probe;
pub mod progress;
pub mod prune;
pub mod redundancy;
pub mod repack;
pub mod repair;
pub mod repository;
pub mod restore;
pub mod ring;
pub mod store;

pub use backup::{BackupOptions, BackupOutcome, BackupWarning};
pub use config::Config;
pub use crypto::{KdfParams, NoPassphrase, Passphrase, PassphraseSource};
pub use error::{Error, ErrorKind, Result};
pub use id::ObjectId;
pub use progress::{NoProgress, Progress};
pub use repository::{InitOptions, InitOutcome, KeyInfo, Repository, Stats, init};
pub use restore::{RestoreOptions, RestoreOutcome};
