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
//! repo.restore(&snapshot, RestoreOptions { target: "/tmp/back".into(), path: None, ..Default::default() }, Arc::new(NoProgress)).await?;
//! # Ok(()) }
//! ```
//!
//! The API: [`Repository`] (open a pool with [`Repository::open`], create one with
//! [`init`]) and its operations — `backup`, `restore`, `check`, `prune`, `repair`,
//! `forget`, `snapshots`, `lookup`, `walk`, `cat`, `stats` — with their options and outcomes
//! at the crate root; [`fs`], one `Fs` trait for memory, local directories, the pool's live
//! drive and read-only snapshot views, with `copy_tree` and `walk` over any of them;
//! [`mount`], the drive as a FUSE file system; [`membership`], adding and removing backends;
//! [`config`], [`model`] (snapshots and trees), [`backend`] and [`probe`]; the [`Progress`]
//! and [`PassphraseSource`] traits a front end implements; one [`Error`] with an
//! [`ErrorKind`]. `examples/` has runnable programs. ARCHITECTURE.md maps the inner modules.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The public surface: what a program using Cuckoo Drive needs. Everything else is
// `pub(crate)`, reachable from tests, benches and fuzz targets only through `internals`.
pub mod backend;
pub mod config;
pub mod forget;
pub mod fs;
pub mod membership;
pub mod model;
pub mod mount;
pub mod probe;

pub(crate) use internals::{
    backup, catalogue, check, chunker, codec, copy, crypto, diff, dump, error, exec, find, id, limit, lock, machine,
    meta, pipeline, progress, prune, redundancy, repack, repair, repository, restore, rewrite, ring, store, tag,
};

pub use backup::{BackupOptions, BackupOutcome, BackupWarning, ExcludeCount, Excludes, normalise_path};
pub use catalogue::BackendUsage;
pub use check::{BackendReport, CheckOptions, CheckReport, Finding};
/// The object format version this build writes (docs/format.md).
pub use codec::FORMAT_VERSION;
pub use config::{CacheSettings, Config};
pub use copy::Copied;
pub use crypto::{KdfParams, NoPassphrase, Passphrase, PassphraseSource};
pub use diff::{Change, diff};
pub use dump::{Archive, DumpOutcome};
pub use error::{Error, ErrorKind, Result};
pub use find::{FindOptions, Found};
pub use id::ObjectId;
pub use limit::parse_bytes;
pub use lock::Found as FoundLock;
pub use model::SnapshotFilter;
pub use progress::{EntryEvent, NoProgress, Progress};
pub use prune::{PruneOptions, PruneReport};
pub use redundancy::Scheme;
pub use repack::RepackReport;
pub use repair::{RepairOptions, RepairReport};
pub use repository::{InitOptions, InitOutcome, KeyInfo, Repository, Stats, init, placement_note};
pub use restore::{Overwrite, RestoreOptions, RestoreOutcome, Select};
pub use rewrite::{Dropped, Outcome as RewriteOutcome, REWRITE_TAG, RewriteOptions, Rewritten};
pub use ring::PLACEMENT_VERSION;
pub use store::{BackendTrouble, CacheStats, Incident, LeftCopies, LocalCache, Trouble, TroubleLog};
pub use tag::TagChange;

/// The crate's inner modules: its own tests, benchmarks and fuzz targets reach them here.
/// Not part of the API: anything in them may change in any release. A program using
/// Cuckoo Drive needs only what the crate root and its public modules export.
#[doc(hidden)]
pub mod internals;
