//! Restoring a snapshot into a local directory: byte-identical content, modes, owners (as
//! root), nanosecond mtimes, symlinks, hard links, empty directories and special files.
//!
//! Owns: the order of restore steps, creating entries and setting metadata (file content is
//! `content`'s). Must not: decide placement or decode objects itself (the store verifies
//! every chunk against its id).
//!
//! A walker creates directories, links and special files in tree order and hands regular
//! files to `content`, which fetches chunks in batches and writes them. Directory metadata is
//! set last, deepest first, because writing into a directory changes its mtime.

mod content;
mod select;
mod verify;

pub(crate) use content::stream_content;
use content::{Batch, Batcher, FileJob};
pub use select::Select;
pub(crate) use select::{Choice, Chooser};

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::stat::{Mode, SFlag, mknod};

use crate::error::{Error, ErrorKind, Result};
use crate::meta;
use crate::model::{Meta, Node, NodeKind, Snapshot, TreeRef};
use crate::progress::Progress;
use crate::repository::{Need, Repository};

/// Where and what to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Directory to restore into; created if missing.
    pub target: PathBuf,
    /// Only this path of the snapshot (slash-separated), restored under the same path.
    pub path: Option<String>,
    /// Which entries (`--include`, `--exclude`).
    pub select: Select,
    /// Read every restored file back and compare it with the snapshot (`--verify`).
    pub verify: bool,
    /// What to do with entries already in the target (`--overwrite`).
    pub overwrite: Overwrite,
    /// Remove what the target holds that the snapshot does not, in the directories restored
    /// (`--delete`): the target becomes the snapshot.
    pub delete: bool,
}

/// What restore does with an entry the target already has (restic's `--overwrite`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Write every entry again.
    #[default]
    Always,
    /// Leave a regular file whose size and mtime (to the nanosecond) match the snapshot's,
    /// and a symlink with the same target, and set their metadata: a restore into a tree
    /// restored before writes only what changed.
    IfChanged,
    /// Leave anything already there as it is.
    Never,
}

impl std::str::FromStr for Overwrite {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Overwrite, String> {
        match s {
            "always" => Ok(Overwrite::Always),
            "if-changed" => Ok(Overwrite::IfChanged),
            "never" => Ok(Overwrite::Never),
            _ => Err(format!("'{s}': give always, if-changed or never")),
        }
    }
}

/// Counters of a finished restore.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreOutcome {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Links and special files created.
    pub others: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Files read back and found equal to the snapshot (`--verify`).
    pub verified: u64,
    /// Entries left as the target had them (`--overwrite if-changed` or `never`).
    pub unchanged: u64,
    /// Entries removed from the target because the snapshot lacks them (`--delete`).
    pub deleted: u64,
    /// Entries that could not be restored as recorded (e.g. devices without root): one line
    /// each. None is dropped silently.
    pub warnings: Vec<String>,
    /// Entries not restored, one line each: files whose content the pool could not supply
    /// (missing or corrupt chunks; removed rather than left wrong), and entries the target
    /// could not take (a name too long for it, something in the way). Everything else was
    /// restored.
    pub failed: Vec<String>,
}

impl Repository {
    /// Restore a snapshot (or a path in it) into a directory.
    pub async fn restore(
        &self,
        snapshot: &Snapshot,
        options: RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreOutcome> {
        self.locked("restore", Need::ReadOnly, run(self, snapshot, options, progress)).await
    }

    /// Write the content of the file at `path` in `snapshot` to `out`, streaming.
    pub async fn cat(
        &self,
        snapshot: &Snapshot,
        path: &str,
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<u64> {
        match self.lookup(snapshot, path).await? {
            Some((Node { kind: NodeKind::File { content, .. }, .. }, _)) => {
                stream_content(self, &content, out, true).await
            }
            Some(_) => Err(Error::config(format!("'{path}' is not a regular file"))),
            None => Err(Error::config("give a file: SNAPSHOT:PATH")),
        }
    }
}

async fn run(
    repo: &Repository,
    snapshot: &Snapshot,
    options: RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreOutcome> {
    let target = options.target.clone();
    std::fs::create_dir_all(&target).map_err(|e| Error::from_io(format!("cannot create {}", target.display()), e))?;
    let sub = options.path.as_deref().unwrap_or("").trim_matches('/').to_string();
    let start = repo.lookup(snapshot, &sub).await?;
    let total = match &start {
        Some((Node { kind: NodeKind::File { size, .. }, .. }, _)) => *size,
        _ => 0,
    };
    let chooser = Chooser::new(&options.select, &snapshot.paths)?;
    // Totals are known for a whole snapshot (its summary) or one file; a sub-tree or a
    // selection counts up.
    let (items, bytes) = match (&start, sub.is_empty() && chooser.all()) {
        (_, true) => (Some(snapshot.summary.files), Some(snapshot.summary.bytes)),
        (Some((Node { kind: NodeKind::File { .. }, .. }, _)), _) => (Some(1), Some(total)),
        _ => (None, None),
    };
    progress.note(&format!(
        "restoring {} into {}",
        if sub.is_empty() { "the snapshot" } else { &sub },
        target.display()
    ));
    progress.begin("restore", items, bytes.filter(|b| *b > 0));

    if options.delete && !chooser.all() {
        return Err(Error::config(
            "--delete removes what the snapshot lacks: it cannot be combined with --include or --exclude",
        ));
    }
    // `--delete` never removes the pool's own files, whatever the target holds.
    let mut protect = vec![repo.catalogue_path().to_path_buf(), repo.config().path.clone()];
    protect.extend(repo.config().backends.iter().filter_map(|b| b.local_root()));
    let protect = protect.iter().map(|p| crate::backup::layout::normalise(p)).collect::<Result<Vec<_>>>()?;
    let mut walker = TreeWalker {
        overwrite: options.overwrite,
        delete: options.delete,
        protect,
        chooser,
        verify: options.verify.then(Vec::new),
        target: target.clone(),
        out: RestoreOutcome::default(),
        dirs: Vec::new(),
        links: HashMap::new(),
        jobs: VecDeque::new(),
        batcher: Batcher::default(),
        progress: progress.clone(),
    };
    // Parents of a sub-path are created with their recorded metadata too.
    let mut prefix = PathBuf::new();
    let parts: Vec<&str> = sub.split('/').filter(|p| !p.is_empty()).collect();
    for i in 0..parts.len().saturating_sub(1) {
        prefix.push(parts[i]);
        if let Some((node, _)) = repo.lookup(snapshot, &parts[..=i].join("/")).await? {
            walker.make_dir(&target.join(&prefix), &node.meta, false)?;
        }
    }
    let abort = repo.interrupt_flag();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
    let batches = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let restore_files = content::write_all(repo, batches, progress.as_ref(), &abort);
    let walk = async {
        let result = walker.walk(repo, &target, &prefix, start, Repository::root(snapshot), &tx).await;
        let last = walker.batcher.flush();
        if let (Ok(()), Some(batch)) = (&result, last) {
            let _ = tx.send(batch).await;
        }
        drop(tx);
        result
    };
    let (walked, restored) = futures::join!(walk, restore_files);
    // A failed write stops the walker with a bare "stopped": report the write's own error.
    let written = restored?;
    walked?;
    let to_verify = walker.verify.take();
    let mut out = walker.finish()?;
    out.files += written.files;
    out.bytes += written.bytes;
    out.failed.extend(written.failed);
    progress.end();
    if let Some(list) = to_verify {
        // Files that failed are reported already; the rest must read back as recorded.
        let failed: Vec<&str> = out.failed.iter().map(String::as_str).collect();
        let list = list
            .into_iter()
            .filter(|w| !failed.iter().any(|f| f.starts_with(&format!("{}: ", w.path.display()))))
            .collect();
        progress.begin("verify", None, None);
        let (verified, differ) = verify::verify_all(repo, list).await;
        progress.end();
        out.verified = verified;
        out.failed.extend(differ);
    }
    Ok(out)
}

/// Walks trees, creating everything but regular file content, which it queues.
struct TreeWalker {
    overwrite: Overwrite,
    delete: bool,
    /// Paths `--delete` leaves, with what leads to them: the catalogue, the config file and
    /// local backends.
    protect: Vec<PathBuf>,
    chooser: Chooser,
    /// With `--verify`: every file whose content this restore writes.
    verify: Option<Vec<verify::Written>>,
    target: PathBuf,
    out: RestoreOutcome,
    /// Directories and their metadata, applied at the end deepest first; the flag marks one
    /// this restore created only to look for included entries in.
    dirs: Vec<(PathBuf, Meta, bool)>,
    /// (dev, ino) of hard-linked files already restored -> their path.
    links: HashMap<(u64, u64), PathBuf>,
    jobs: VecDeque<FileJob>,
    batcher: Batcher,
    progress: Arc<dyn Progress>,
}

impl TreeWalker {
    async fn walk(
        &mut self,
        repo: &Repository,
        target: &Path,
        prefix: &Path,
        start: Option<(Node, TreeRef)>,
        root: TreeRef,
        tx: &tokio::sync::mpsc::Sender<Batch>,
    ) -> Result<()> {
        // Each directory to walk, and whether it was included whole.
        let mut stack: Vec<(PathBuf, TreeRef, bool)> = Vec::new();
        match start {
            None => stack.push((target.to_path_buf(), root, false)),
            Some((node, parent)) => {
                let path = target.join(prefix).join(OsStr::from_bytes(&node.name));
                if let Some(whole) = self.chosen_entry(&path, &node, false)? {
                    stack.push((path, node.subtree(&parent.pack).expect("a directory"), whole));
                }
                self.send_jobs(tx).await?;
            }
        }
        while let Some((dir, tref, inside)) = stack.pop() {
            let tree = repo.tree(&tref).await?;
            if self.delete {
                self.delete_extra(&dir, &tree);
            }
            let mut subdirs = Vec::new();
            for node in &tree.entries {
                let path = dir.join(OsStr::from_bytes(&node.name));
                if let Some(whole) = self.chosen_entry(&path, node, inside)? {
                    subdirs.push((path, node.subtree(&tref.pack).expect("a directory"), whole));
                }
                self.send_jobs(tx).await?;
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// Remove what directory `dir` holds that `tree` does not name (`--delete`). Nothing is
    /// followed: a symlink is removed as a link, a directory with what is in it.
    fn delete_extra(&mut self, dir: &Path, tree: &crate::model::Tree) {
        let Ok(listing) = std::fs::read_dir(dir) else { return };
        for entry in listing.flatten() {
            let name = entry.file_name();
            if tree.get(name.as_bytes()).is_some() {
                continue;
            }
            let path = entry.path();
            let absolute = crate::backup::layout::normalise(&path).unwrap_or_else(|_| path.clone());
            if self.protect.iter().any(|p| p.starts_with(&absolute)) {
                self.out
                    .warnings
                    .push(format!("{}: kept despite --delete: it holds the pool's own data", path.display()));
                continue;
            }
            let removed = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            match removed {
                Ok(()) => self.out.deleted += 1,
                Err(e) => self.out.failed.push(format!("{}: --delete could not remove it: {e}", path.display())),
            }
        }
    }

    /// Whether the entry at `path` is to be left as the target has it (`--overwrite`).
    fn keep_existing(&mut self, path: &Path, node: &Node) -> bool {
        if self.overwrite == Overwrite::Always || matches!(node.kind, NodeKind::Dir { .. }) {
            return false;
        }
        let Ok(md) = std::fs::symlink_metadata(path) else { return false };
        let same = match (&node.kind, self.overwrite) {
            (_, Overwrite::Never) => true,
            (NodeKind::File { size, .. }, _) => {
                use std::os::unix::fs::MetadataExt;
                md.is_file()
                    && md.len() == *size
                    && md.mtime() * 1_000_000_000 + md.mtime_nsec() == node.meta.mtime_ns
                    && (node.meta.nlink <= 1 || md.nlink() > 1)
            }
            (NodeKind::Symlink { target }, _) => {
                md.file_type().is_symlink()
                    && std::fs::read_link(path).is_ok_and(|t| t.as_os_str().as_bytes() == target.as_slice())
            }
            _ => false,
        };
        if same && self.overwrite == Overwrite::IfChanged {
            self.apply(path, &node.meta, md.file_type().is_symlink());
        }
        if same {
            self.out.unchanged += 1;
            self.progress.entry(crate::progress::EntryEvent::Unchanged, path);
        }
        same
    }

    /// Create the entry at `path` if the selection wants it; for a directory to walk next,
    /// whether it was included whole (else it is only looked into).
    fn chosen_entry(&mut self, path: &Path, node: &Node, inside: bool) -> Result<Option<bool>> {
        let is_dir = matches!(node.kind, NodeKind::Dir { .. });
        let choice = if self.chooser.all() {
            Choice::Whole
        } else {
            let rel = path.strip_prefix(&self.target).unwrap_or(path);
            self.chooser.choose(&rel.to_string_lossy(), is_dir, inside)
        };
        match choice {
            Choice::Skip => Ok(None),
            Choice::Whole => Ok(self.entry_or_report(path, node)?.then_some(true)),
            Choice::Enter => {
                check_name(&node.name, path)?;
                match self.make_dir(path, &node.meta, true) {
                    Ok(()) => Ok(Some(false)),
                    Err(e) if content::is_entry_fault(&e) => {
                        self.out.failed.push(format!("{}: {e}", path.display()));
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn send_jobs(&mut self, tx: &tokio::sync::mpsc::Sender<Batch>) -> Result<()> {
        while let Some(job) = self.jobs.pop_front() {
            for batch in self.batcher.push(job) {
                tx.send(batch).await.map_err(|_| Error::new(ErrorKind::Interrupted, "restore stopped"))?;
            }
        }
        Ok(())
    }

    /// Like `entry`, but an entry the target cannot take (a name too long for it, a
    /// directory in the way) is reported in `failed` and the restore goes on without it
    /// (and, for a directory, without what is below it).
    fn entry_or_report(&mut self, path: &Path, node: &Node) -> Result<bool> {
        match self.entry(path, node) {
            Err(e) if content::is_entry_fault(&e) => {
                self.out.failed.push(format!("{}: {e}", path.display()));
                Ok(false)
            }
            other => other,
        }
    }

    /// Create one entry; true for a directory, whose tree is to be walked next.
    fn entry(&mut self, path: &Path, node: &Node) -> Result<bool> {
        check_name(&node.name, path)?;
        if self.keep_existing(path, node) {
            return Ok(false);
        }
        let io = |what: &str, e: std::io::Error| Error::from_io(format!("cannot {what} {}", path.display()), e);
        match &node.kind {
            NodeKind::Dir { .. } => {
                self.make_dir(path, &node.meta, false)?;
                return Ok(true);
            }
            NodeKind::File { size, content } => {
                let key = (node.meta.dev, node.meta.ino);
                if node.meta.nlink > 1 {
                    if let Some(first) = self.links.get(&key) {
                        remove_existing(path);
                        std::fs::hard_link(first, path).map_err(|e| io("hard-link", e))?;
                        self.out.others += 1;
                        return Ok(false);
                    }
                    // Create it now so later names can link to it before its content lands:
                    // a new file, never one that was there (it may be linked from outside).
                    remove_existing(path);
                    create_new(path).map_err(|e| io("create", e))?;
                    self.links.insert(key, path.to_path_buf());
                }
                if let Some(list) = &mut self.verify {
                    list.push(verify::Written { path: path.to_path_buf(), content: content.clone() });
                }
                self.progress.entry(crate::progress::EntryEvent::Restored, path);
                self.jobs.push_back(FileJob {
                    path: path.to_path_buf(),
                    meta: node.meta.clone(),
                    size: *size,
                    content: content.clone(),
                });
            }
            NodeKind::Symlink { target } => {
                remove_existing(path);
                std::os::unix::fs::symlink(OsStr::from_bytes(target), path).map_err(|e| io("create symlink", e))?;
                self.apply(path, &node.meta, true);
                self.out.others += 1;
            }
            NodeKind::Fifo | NodeKind::Socket | NodeKind::CharDevice { .. } | NodeKind::BlockDevice { .. } => {
                self.special(path, node);
            }
        }
        Ok(false)
    }

    /// Create a directory, or keep one that is there. Anything else in its place (a symlink
    /// above all, which would lead every entry below out of the target) is replaced, so
    /// every directory the restore writes into is a real one inside the target.
    /// A `provisional` directory is removed at the end if this restore created it and left
    /// it empty (it was only looked into for included entries).
    fn make_dir(&mut self, path: &Path, meta: &Meta, provisional: bool) -> Result<()> {
        let existing = std::fs::symlink_metadata(path).ok().map(|m| m.file_type());
        if existing.is_some_and(|t| !t.is_dir()) {
            std::fs::remove_file(path)
                .map_err(|e| Error::from_io(format!("cannot replace {} by a directory", path.display()), e))?;
        }
        let created = match std::fs::create_dir(path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && is_real_dir(path) => false,
            Err(e) => {
                return Err(Error::from_io(format!("cannot create directory {}", path.display()), e));
            }
        };
        self.out.dirs += 1;
        self.dirs.push((path.to_path_buf(), meta.clone(), provisional && created));
        Ok(())
    }

    fn special(&mut self, path: &Path, node: &Node) {
        let (kind, rdev) = match node.kind {
            NodeKind::Fifo => (SFlag::S_IFIFO, 0),
            NodeKind::Socket => (SFlag::S_IFSOCK, 0),
            NodeKind::CharDevice { rdev } => (SFlag::S_IFCHR, rdev),
            NodeKind::BlockDevice { rdev } => (SFlag::S_IFBLK, rdev),
            _ => unreachable!("only special files"),
        };
        remove_existing(path);
        match mknod(path, kind, Mode::from_bits_truncate(node.meta.mode), rdev as nix::libc::dev_t) {
            Ok(()) => {
                self.apply(path, &node.meta, false);
                self.out.others += 1;
            }
            Err(e) => self.out.warnings.push(format!("not restored: {} ({kind:?}): {e}", path.display())),
        }
    }

    fn apply(&mut self, path: &Path, meta: &Meta, symlink: bool) {
        if let Err(e) = meta::apply(path, meta, symlink) {
            self.out.warnings.push(format!("metadata not restored: {}: {e}", path.display()));
        }
    }

    fn finish(mut self) -> Result<RestoreOutcome> {
        for (path, meta, provisional) in std::mem::take(&mut self.dirs).into_iter().rev() {
            // Deepest first, so a chain of empty looked-into directories goes entirely.
            if provisional && std::fs::remove_dir(&path).is_ok() {
                self.out.dirs -= 1;
                continue;
            }
            self.apply(&path, &meta, false);
        }
        Ok(self.out)
    }
}

/// Names come from the backends: refuse any that would escape the target directory.
fn check_name(name: &[u8], path: &Path) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(Error::corrupt(format!(
            "refusing entry name {:?} under {}",
            String::from_utf8_lossy(name),
            path.display()
        )));
    }
    Ok(())
}

fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
}

/// Open `path` for writing without following a symlink there: restore writes only inside
/// its target, whatever the target held before.
pub(super) fn open_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).custom_flags(nix::libc::O_NOFOLLOW);
    options
}

/// Create a new, empty file; fails if anything is at `path`.
fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    open_options().create_new(true).open(path)
}

/// Unlink whatever non-directory is at `path`, so what is written there next is a new
/// file: one planted as a symlink or hard link to a file outside the target stays as it was.
pub(super) fn remove_existing(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok() {
        let _ = std::fs::remove_file(path);
    }
}
