//! Taking a snapshot: walk the source tree, chunk what changed, store new objects, commit.
//!
//! Owns: the backup pipeline and its commit order. Must not: know object paths or codecs
//! beyond calling `codec::encode` and `Store::put`.
//!
//! One blocking thread walks and reads (`walker`): it chunks and hashes, so every id is known
//! at once, and sends only objects the pool lacks to a bounded channel. Tokio tasks take them
//! from there, compress on rayon and upload with bounded concurrency (`upload`). Chunks are
//! recorded in the catalogue as soon as they are durable, so a killed backup resumes without
//! uploading them again; trees are staged and become visible only when the snapshot commits,
//! after every object below them is stored.

pub(crate) mod filter;
pub(crate) mod layout;
mod sparse;
mod walker;

pub use filter::{ExcludeCount, Excludes};
pub(crate) use walker::TreeSource;

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::catalogue::Catalogue;
use crate::chunker::ChunkerParams;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{Snapshot, Summary};
use crate::progress::Progress;
use crate::repository::{Need, Repository};
use crate::store::Store;

/// What to back up and how.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Paths to back up; recorded absolute and normalised. The snapshot's root is the deepest
    /// directory they share below their parents: one path is its base name there, two named
    /// alike keep what tells them apart (`a/x`, `b/x`).
    pub paths: Vec<PathBuf>,
    /// Labels for the snapshot.
    pub tags: Vec<String>,
    /// Use this snapshot to skip unchanged files instead of the latest matching one.
    pub parent: Option<ObjectId>,
    /// Read every file even if the parent says it is unchanged.
    pub force: bool,
    /// Tell unchanged files by size and mtime without their ctime (`--ignore-ctime`).
    pub ignore_ctime: bool,
    /// … without their inode number (`--ignore-inode`).
    pub ignore_inode: bool,
    /// What to leave out (the catalogue and local backends' directories always are).
    pub exclude: Excludes,
    /// Hostname to record; defaults to this machine's.
    pub hostname: Option<String>,
    /// Time to record, nanoseconds since the epoch; defaults to now.
    pub time_ns: Option<i64>,
    /// Read, chunk and compress everything, but store nothing: the outcome says what would
    /// be added, and its id is the snapshot's that would have been written.
    pub dry_run: bool,
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: ObjectId,
    /// The snapshot as stored.
    pub snapshot: Snapshot,
    /// What the backup met that did not stop it, in the order met.
    pub warnings: Vec<BackupWarning>,
    /// Entries each exclude rule left out, in the order the rules were given.
    pub excluded: Vec<ExcludeCount>,
}

/// Something a backup met that did not stop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupWarning {
    /// An entry that could not be read: it is not in the snapshot.
    Skipped {
        /// The entry.
        path: PathBuf,
        /// Why, as the system said it.
        reason: String,
    },
    /// A file that changed while it was read: the bytes read are saved, as restic does.
    ChangedWhileRead {
        /// The file.
        path: PathBuf,
    },
    /// An exclude pattern or marker that left nothing out: often a typo, or a pattern
    /// written for another tool's syntax.
    ExcludedNothing {
        /// The rule as given.
        rule: String,
    },
    /// Objects stored with fewer pieces than the pool's redundancy asks (backends down or
    /// full): `repair` completes them.
    Degraded {
        /// How many.
        objects: u64,
        /// The pool's scheme, as written in its config.
        scheme: String,
    },
}

impl std::fmt::Display for BackupWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupWarning::Skipped { path, reason } => write!(f, "skipped {}: {reason}", path.display()),
            BackupWarning::ChangedWhileRead { path } => {
                write!(f, "changed while read: {} (the bytes read are saved)", path.display())
            }
            BackupWarning::ExcludedNothing { rule } => write!(f, "{rule} matched nothing"),
            BackupWarning::Degraded { objects, scheme } => write!(
                f,
                "{objects} objects were stored with less redundancy than {scheme} asks, as backends were down \
                 or full: run `cuckoo repair` once they are back"
            ),
        }
    }
}

/// The parts of a repository a backup needs.
struct Context<'a> {
    pub store: &'a Store,
    pub catalogue: Arc<Catalogue>,
    pub params: ChunkerParams,
    pub compression: i32,
    pub upload_concurrency: usize,
    pub abort: Arc<AtomicBool>,
}

/// What a backup reads.
enum Source {
    /// `BackupOptions::paths`.
    Paths,
    /// One stream, stored as a file of this name at the snapshot's root.
    Stream { name: String, input: Box<dyn Read + Send> },
    /// A snapshot of another pool (`copy`), read through `source`.
    Tree { source: Box<dyn TreeSource>, snapshot: Box<Snapshot> },
}

impl Repository {
    /// Back up `options.paths` as a new snapshot. Unchanged files are taken from the parent:
    /// `options.parent`, or the latest snapshot of the same paths from this host.
    pub async fn backup(&self, options: BackupOptions, progress: Arc<dyn Progress>) -> Result<BackupOutcome> {
        // The parent is chosen under the lock: one chosen before could be pruned meanwhile.
        self.locked("backup", Need::Shared, backup_locked(self, options, Source::Paths, progress)).await
    }

    /// Back up what `input` yields, to its end, as one file `name` (restic's `backup --stdin
    /// --stdin-filename`): a database dump piped in. The snapshot's path is `/NAME`; the file
    /// is recorded with mode 0644, this user's ids and the time of the backup. `options.paths`
    /// is ignored. Memory stays bounded whatever the length.
    pub async fn backup_stream(
        &self,
        name: &str,
        input: Box<dyn Read + Send>,
        options: BackupOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<BackupOutcome> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            return Err(Error::config(format!("--stdin-filename '{name}': give a file name, without slashes")));
        }
        let source = Source::Stream { name: name.to_string(), input };
        self.locked("backup", Need::Shared, backup_locked(self, options, source, progress)).await
    }
}

/// The paths a snapshot of `source` records: absolute, normalised, sorted.
fn source_paths(options: &BackupOptions, source: &Source) -> Result<Vec<PathBuf>> {
    match source {
        Source::Paths => absolute_paths(&options.paths),
        Source::Stream { name, .. } => Ok(vec![PathBuf::from("/").join(name)]),
        Source::Tree { snapshot, .. } => Ok(snapshot.paths.iter().map(PathBuf::from).collect()),
    }
}

/// Store `snapshot` of another pool, read through `source`, as a snapshot of this one with
/// the same time, host, user, paths and tags (`copy`): files are chunked afresh for this
/// pool, and those a parent here has unchanged are not read. The caller holds the lock.
pub(crate) async fn backup_tree(
    repo: &Repository,
    source: Box<dyn TreeSource>,
    snapshot: &Snapshot,
    progress: Arc<dyn Progress>,
) -> Result<BackupOutcome> {
    let options = BackupOptions {
        tags: snapshot.tags.clone(),
        hostname: Some(snapshot.hostname.clone()),
        time_ns: Some(snapshot.time_ns),
        ..BackupOptions::default()
    };
    let source = Source::Tree { source, snapshot: Box::new(snapshot.clone()) };
    backup_locked(repo, options, source, progress).await
}

async fn backup_locked(
    repo: &Repository,
    mut options: BackupOptions,
    source: Source,
    progress: Arc<dyn Progress>,
) -> Result<BackupOutcome> {
    let host = options.hostname.clone().unwrap_or_else(crate::machine::hostname);
    let paths: Vec<String> = source_paths(&options, &source)?.iter().map(|p| p.display().to_string()).collect();
    let parent = match options.parent {
        Some(id) => Some(repo.find_snapshot(&id.to_hex())?),
        None => repo.snapshots()?.into_iter().rev().find(|(_, s)| s.hostname == host && s.paths == paths),
    };
    match &parent {
        Some((id, s)) => {
            let when = chrono::DateTime::from_timestamp_nanos(s.time_ns).with_timezone(&chrono::Local);
            progress.note(&format!("using parent snapshot {} of {}", id.short(), when.format("%Y-%m-%d %H:%M:%S")))
        }
        None => progress.note("no parent snapshot: every file is read"),
    }
    options.hostname = Some(host);
    // Compared with the walked paths, which are normalised: so must these be.
    let mut never = vec![repo.catalogue_path().to_path_buf()];
    never.extend(repo.config().backends.iter().filter_map(|b| b.local_root()));
    let never = never.iter().map(|p| layout::normalise(p)).collect::<Result<Vec<_>>>()?;
    let filter = Arc::new(filter::Filter::new(&options.exclude, never)?);
    let ctx = Context {
        store: repo.store(),
        catalogue: repo.catalogue_arc(),
        params: repo.pool().chunker,
        compression: repo.config().compression,
        upload_concurrency: repo.upload_concurrency(),
        abort: repo.interrupt_flag(),
    };
    run(ctx, options, source, filter, parent, &progress).await
}

/// Run a backup: see the module doc for the pipeline and commit order.
async fn run(
    ctx: Context<'_>,
    options: BackupOptions,
    source: Source,
    filter: Arc<filter::Filter>,
    parent: Option<(ObjectId, Snapshot)>,
    progress: &Arc<dyn Progress>,
) -> Result<BackupOutcome> {
    let paths = source_paths(&options, &source)?;
    let time_ns = options.time_ns.unwrap_or_else(crate::machine::now_ns);
    let parent_tree = if options.force { None } else { parent.as_ref().map(|(_, s)| s.tree) };

    let (uploader, jobs) = if options.dry_run {
        crate::pipeline::upload::Uploader::start_dry(ctx.store.clone(), ctx.compression, ctx.upload_concurrency)
    } else {
        ctx.catalogue.clear_staged()?;
        crate::pipeline::upload::Uploader::start(
            ctx.store.clone(),
            ctx.catalogue.clone(),
            ctx.compression,
            ctx.upload_concurrency,
            ctx.abort.clone(),
        )
    };
    progress.begin("backup", None, None);
    let selection = layout::select(&paths);
    // A stream's length is not known ahead; paths are counted by a scan beside the walk.
    let scan = match &source {
        Source::Paths => Some(walker::spawn_scan(layout::wholes(&selection), filter.clone(), progress.clone())),
        Source::Stream { .. } => None,
        Source::Tree { snapshot, .. } => {
            progress.totals(snapshot.summary.files, snapshot.summary.bytes);
            None
        }
    };
    let username = match &source {
        Source::Tree { snapshot, .. } => snapshot.username.clone(),
        _ => crate::machine::username(),
    };

    let walk_progress = progress.clone();
    let catalogue = ctx.catalogue.clone();
    let params = ctx.params;
    let keys = ctx.store.keys().clone();
    let abort = ctx.abort.clone();

    let walk_filter = filter.clone();
    let (ignore_ctime, ignore_inode) = (options.ignore_ctime, options.ignore_inode);
    let walked = tokio::task::spawn_blocking(move || {
        let mut w = walker::Walker::new(params, keys, catalogue.reader()?, jobs, walk_progress, abort, walk_filter)
            .ignoring(ignore_ctime, ignore_inode);
        let walked = match source {
            Source::Paths => w.run(&selection, parent_tree)?,
            Source::Stream { name, mut input } => w.run_stream(name.as_bytes(), &mut input, stream_meta(time_ns))?,
            Source::Tree { mut source, snapshot } => {
                w.run_tree(source.as_mut(), &Repository::root(&snapshot), parent_tree)?
            }
        };
        Ok((walked, w.excluded().to_vec()))
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, "backup walker crashed").with_source(e));
    if let Some(scan) = scan {
        scan.stop();
    }
    // Whatever the walker did, wait for uploads in flight so none outlives the backup.
    let uploaded = uploader.finish().await;
    let walked = walked?;
    let (root, mut summary, warnings, excluded) = match (walked, uploaded) {
        (_, Err(e)) | (Err(e), _) => return Err(e),
        (Ok((w, excluded)), Ok(up)) => {
            let mut s: Summary = w.1;
            s.objects_added = up.objects;
            s.bytes_added = up.plain_bytes;
            s.stored_bytes_added = up.stored_bytes;
            let mut warnings = w.2;
            if up.degraded > 0 {
                let warning = BackupWarning::Degraded { objects: up.degraded, scheme: ctx.store.scheme().to_string() };
                progress.warn(&warning.to_string());
                warnings.push(warning);
            }
            for (rule, n) in excluded.iter().enumerate() {
                if *n == 0 && filter.expects_a_match(rule) {
                    let warning = BackupWarning::ExcludedNothing { rule: filter.rules()[rule].clone() };
                    progress.warn(&warning.to_string());
                    warnings.push(warning);
                }
            }
            (w.0, s, warnings, excluded)
        }
    };
    let excluded = filter
        .rules()
        .iter()
        .zip(excluded)
        .map(|(rule, entries)| ExcludeCount { rule: rule.clone(), entries })
        .collect();
    if ctx.abort.load(Ordering::Relaxed) {
        return Err(Error::new(
            ErrorKind::Interrupted,
            "backup interrupted; uploaded data will be reused by the next backup",
        ));
    }
    summary.skipped = warnings.iter().filter(|w| matches!(w, BackupWarning::Skipped { .. })).count() as u64;
    progress.end();

    let snapshot = Snapshot {
        time_ns,
        hostname: options.hostname.clone().unwrap_or_else(crate::machine::hostname),
        username,
        paths: paths.iter().map(|p| p.display().to_string()).collect(),
        tags: options.tags.clone(),
        tree: root.id,
        tree_pack: root.pack,
        parent: parent.map(|(id, _)| id),
        summary,
        program_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let id = if options.dry_run {
        ctx.store.keys().id_of(&crate::model::to_body(&snapshot))
    } else {
        commit(&ctx, &snapshot).await?
    };
    Ok(BackupOutcome { id, snapshot, warnings, excluded })
}

/// How a stream backed up as a file is recorded: a regular file, 0644, this user's, made at
/// the time of the backup.
fn stream_meta(time_ns: i64) -> crate::model::Meta {
    crate::model::Meta {
        mode: 0o644,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        mtime_ns: time_ns,
        ctime_ns: time_ns,
        dev: 0,
        ino: 0,
        nlink: 1,
        xattrs: Vec::new(),
    }
}

/// Make the snapshot durable: its object on every backend is the commit point; the
/// catalogue follows (and would catch up from the backends if we died in between).
async fn commit(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<ObjectId> {
    crate::pipeline::commit_snapshot(ctx.store, ctx.catalogue.clone(), ctx.compression, snapshot).await
}

/// `path` as snapshots record paths: absolute, with `.` and `..` resolved as written.
pub fn normalise_path(path: &std::path::Path) -> Result<PathBuf> {
    layout::normalise(path)
}

/// The paths to back up, absolute, normalised and checked to exist, sorted (as restic
/// records them, so the same paths in another order find the same parent).
fn absolute_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::config("nothing to back up: give at least one path"));
    }
    let mut out: Vec<PathBuf> = Vec::with_capacity(paths.len());
    for p in paths {
        let abs = layout::normalise(p)?;
        std::fs::symlink_metadata(&abs).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(format!("{} does not exist", p.display())),
            _ => Error::io(format!("cannot read {}", p.display()), e),
        })?;
        out.push(abs);
    }
    out.sort();
    out.dedup();
    Ok(out)
}
