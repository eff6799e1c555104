//! Restoring file content: files are grouped into batches that need at most `BATCH_CHUNKS`
//! distinct chunks; a batch's chunks are fetched all at once while the previous batch is
//! written, so many small files packed into shared chunks cost one round trip per chunk, in
//! parallel, not one per file. A file needing more chunks streams alone, `PREFETCH` ahead.
//!
//! Owns: batching, fetching and writing content. Must not: create directories or links
//! (the tree walker does), or decode objects (the store verifies every chunk).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt, TryStreamExt};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::meta;
use crate::model::{ChunkRef, Meta};
use crate::progress::Progress;
use crate::repository::Repository;

/// Distinct chunks one batch may need.
const BATCH_CHUNKS: usize = 8;
/// Batches loaded while one is written. On the kernel tree (restore to tmpfs, glibc tuned
/// as `main.rs` does, 2026-12-02): 8 chunks × 2 batches 2.8–3.0 s and 129–133 MiB; 6 × 3
/// 3.0–3.1 s and 147–149 MiB; 6 × 2 3.1–3.2 s and 118–125 MiB; 4 × 4 3.5–3.6 s.
const LOADED: usize = 2;
/// Blocking tasks that write a batch of small files, each a share of the files in turn.
/// Writing a small file whole in one task (open, write, close, metadata) rather than one
/// tokio::fs hand-off per call cut the restore's system time from 5.3 s to ~2 s on the
/// kernel tree: the hand-offs, not the writes, were the cost.
const WRITERS: usize = 4;
/// Chunks fetched ahead within a file too large for a batch.
const PREFETCH: usize = 8;

/// One regular file to write.
pub(super) struct FileJob {
    pub path: PathBuf,
    pub meta: Meta,
    pub size: u64,
    pub content: Vec<ChunkRef>,
}

pub(super) enum Batch {
    Small(Vec<FileJob>),
    Large(FileJob),
}

enum Loaded {
    Small(Vec<FileJob>, Fetched),
    Large(FileJob),
}

/// Groups file jobs, in restore order, into batches.
#[derive(Default)]
pub(super) struct Batcher {
    jobs: Vec<FileJob>,
    chunks: HashSet<ObjectId>,
}

impl Batcher {
    /// Add a job; returns the batches it completed.
    pub fn push(&mut self, job: FileJob) -> Vec<Batch> {
        let ids: HashSet<ObjectId> = job.content.iter().map(|c| c.id).collect();
        let mut out = Vec::new();
        if ids.len() > BATCH_CHUNKS {
            out.extend(self.flush());
            out.push(Batch::Large(job));
            return out;
        }
        if self.chunks.union(&ids).count() > BATCH_CHUNKS {
            out.extend(self.flush());
        }
        self.chunks.extend(ids);
        self.jobs.push(job);
        out
    }

    /// The batch gathered so far, if any.
    pub fn flush(&mut self) -> Option<Batch> {
        self.chunks.clear();
        (!self.jobs.is_empty()).then(|| Batch::Small(std::mem::take(&mut self.jobs)))
    }
}

/// What `write_all` did.
#[derive(Default)]
pub(super) struct Written {
    pub files: u64,
    pub bytes: u64,
    /// Files not restored because the pool could not supply their content: "path: why".
    pub failed: Vec<String>,
}

/// Write every batch while the next `LOADED` batches' chunks load. A file whose chunks are
/// missing or corrupt is removed and reported, and the restore goes on; a local write error
/// stops it.
pub(super) async fn write_all(
    repo: &Repository,
    batches: impl Stream<Item = Batch>,
    progress: &dyn Progress,
    abort: &AtomicBool,
) -> Result<Written> {
    let failed = std::sync::Mutex::new(Vec::new());
    let outcome = |job: &FileJob, result: Result<()>| -> Result<u64> {
        match result {
            Ok(()) => Ok(1),
            Err(e) if is_pool_fault(&e) || is_entry_fault(&e) => {
                super::remove_existing(&job.path);
                failed.lock().expect("poisoned").push(format!("{}: {e}", job.path.display()));
                Ok(0)
            }
            Err(e) => Err(e),
        }
    };
    let (files, bytes) = batches
        .map(|batch| load(repo, batch))
        .buffered(LOADED)
        .map(Ok::<_, Error>)
        .try_fold((0u64, 0u64), |(files, bytes), loaded| {
            let outcome = &outcome;
            async move {
                if abort.load(Ordering::Relaxed) {
                    return Err(Error::new(ErrorKind::Interrupted, "restore interrupted"));
                }
                let done = std::sync::atomic::AtomicU64::new(0);
                let done_bytes = std::sync::atomic::AtomicU64::new(0);
                let count = |job: &FileJob, n: u64| {
                    done.fetch_add(n, Ordering::Relaxed);
                    done_bytes.fetch_add(n * job.size, Ordering::Relaxed);
                };
                match loaded {
                    Loaded::Small(jobs, chunks) => {
                        for (job, result) in write_small_files(jobs, chunks).await? {
                            progress.advance(1, job.size);
                            count(&job, outcome(&job, result)?);
                        }
                    }
                    Loaded::Large(job) => {
                        let slices = futures::stream::iter(job.content.iter().copied())
                            .map(|r| async move { fetch(repo, r.id).await.map(|c| (c, r)) })
                            .buffered(PREFETCH);
                        let result = write_file(&job, slices, progress).await;
                        count(&job, outcome(&job, result)?);
                    }
                }
                Ok((files + done.into_inner(), bytes + done_bytes.into_inner()))
            }
        })
        .await?;
    Ok(Written { files, bytes, failed: failed.into_inner().expect("poisoned") })
}

/// Errors that come from the pool's content rather than from this machine.
/// Errors of one entry of the target (its name, what is in its place), not of the whole
/// target: a full or read-only disk, or a failing device, still stops the restore.
pub(super) fn is_entry_fault(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NameTooLong
            | ErrorKind::IsADirectory
            | ErrorKind::NotADirectory
            | ErrorKind::DirectoryNotEmpty
            | ErrorKind::AlreadyExists
            | ErrorKind::NotPermitted
            | ErrorKind::TooManyLinks
            | ErrorKind::InvalidInput
    )
}

fn is_pool_fault(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotFound
            | ErrorKind::Corrupt
            | ErrorKind::Backend
            | ErrorKind::PermissionDenied
            | ErrorKind::UnsupportedVersion
    )
}

type Fetched = HashMap<ObjectId, std::result::Result<Arc<Vec<u8>>, (ErrorKind, String)>>;

/// Write a batch's files from its fetched chunks, `WRITERS` blocking tasks at once.
async fn write_small_files(jobs: Vec<FileJob>, chunks: Fetched) -> Result<Vec<(FileJob, Result<()>)>> {
    let chunks = Arc::new(chunks);
    let mut shares: Vec<Vec<FileJob>> = (0..WRITERS).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        shares[i % WRITERS].push(job);
    }
    let tasks = shares.into_iter().filter(|s| !s.is_empty()).map(|share| {
        let chunks = chunks.clone();
        tokio::task::spawn_blocking(move || {
            let write = |job: FileJob| {
                let result = write_small_file(&job, &chunks);
                (job, result)
            };
            share.into_iter().map(write).collect::<Vec<_>>()
        })
    });
    let mut out = Vec::new();
    for done in futures::future::join_all(tasks).await {
        out.extend(done.map_err(|e| Error::new(ErrorKind::Io, "restore writer crashed").with_source(e))?);
    }
    Ok(out)
}

/// Create one file whose chunks are all in memory, write it, and set its metadata.
fn write_small_file(job: &FileJob, chunks: &Fetched) -> Result<()> {
    use std::io::Write;
    let io = |what: &str, e: std::io::Error| Error::from_io(format!("cannot {what} {}", job.path.display()), e);
    if job.meta.nlink <= 1 {
        super::remove_existing(&job.path);
    }
    let mut file = super::open_options().create(true).truncate(true).open(&job.path).map_err(|e| io("create", e))?;
    let (mut written, mut holes) = (0u64, false);
    for r in &job.content {
        let chunk = match &chunks[&r.id] {
            Ok(c) => c,
            Err((kind, why)) => return Err(Error::new(*kind, why.clone())),
        };
        let bytes = slice(job, chunk, r)?;
        if is_hole(bytes) {
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Current(bytes.len() as i64)).map_err(|e| io("seek in", e))?;
            holes = true;
        } else {
            file.write_all(bytes).map_err(|e| io("write", e))?;
        }
        written += r.len as u64;
    }
    check_size(job, written)?;
    if holes {
        file.set_len(written).map_err(|e| io("set the length of", e))?;
    }
    meta::apply_to_file(&file, &job.meta).map_err(|e| io("set metadata of", e))
}

fn slice<'a>(job: &FileJob, chunk: &'a [u8], r: &ChunkRef) -> Result<&'a [u8]> {
    let (from, to) = (r.offset as usize, r.offset as usize + r.len as usize);
    chunk.get(from..to).ok_or_else(|| {
        Error::corrupt(format!("{}: slice {from}..{to} is outside chunk {}", job.path.display(), r.id.to_hex()))
    })
}

fn check_size(job: &FileJob, written: u64) -> Result<()> {
    if written == job.size {
        return Ok(());
    }
    Err(Error::corrupt(format!("{}: content is {written} bytes, recorded size {}", job.path.display(), job.size)))
}

/// Write the slices of one file to `out` in order, fetching `PREFETCH` chunks ahead; with
/// `keep`, chunks fetched from the backends go into the local cache (a file a user reads).
pub(crate) async fn stream_content(
    repo: &Repository,
    content: &[ChunkRef],
    out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    keep: bool,
) -> Result<u64> {
    let mut slices = futures::stream::iter(content.iter().copied())
        .map(|r| async move { repo.chunk(r.id, keep).await.map(|c| (c, r)) })
        .buffered(PREFETCH);
    let mut written = 0u64;
    while let Some(item) = slices.next().await {
        let (chunk, r) = item?;
        let slice = chunk
            .get(r.offset as usize..(r.offset + r.len) as usize)
            .ok_or_else(|| Error::corrupt(format!("slice outside chunk {}", r.id.to_hex())))?;
        out.write_all(slice).await.map_err(|e| Error::from_io("cannot write output", e))?;
        written += r.len as u64;
    }
    out.flush().await.map_err(|e| Error::from_io("cannot write output", e))?;
    Ok(written)
}

/// Slices of zeros at least this long are left as holes rather than written.
const HOLE_MIN: usize = 64 * 1024;

/// Whether `bytes` may be left as a hole: long enough to free whole blocks, and all zeros.
fn is_hole(bytes: &[u8]) -> bool {
    bytes.len() >= HOLE_MIN && bytes.iter().all(|&b| b == 0)
}

/// Fetch a batch's chunks; a chunk that cannot be had fails only the files that need it.
async fn load(repo: &Repository, batch: Batch) -> Loaded {
    match batch {
        Batch::Large(job) => Loaded::Large(job),
        Batch::Small(jobs) => {
            let ids: HashSet<ObjectId> = jobs.iter().flat_map(|j| j.content.iter().map(|c| c.id)).collect();
            let chunks = futures::stream::iter(ids)
                .map(|id| async move { (id, fetch(repo, id).await.map_err(|e| (e.kind(), e.to_string()))) })
                .buffer_unordered(BATCH_CHUNKS)
                .collect()
                .await;
            Loaded::Small(jobs, chunks)
        }
    }
}

/// A chunk to restore: from the local cache where it is, not added to it (a restore of a
/// whole tree would push out what users read).
async fn fetch(repo: &Repository, id: ObjectId) -> Result<Arc<Vec<u8>>> {
    repo.chunk(id, false).await
}

/// Write a large file's slices in order as they arrive, then its metadata.
async fn write_file(
    job: &FileJob,
    mut slices: impl Stream<Item = Result<(Arc<Vec<u8>>, ChunkRef)>> + Unpin,
    progress: &dyn Progress,
) -> Result<()> {
    let io = |what: &str, e: std::io::Error| Error::from_io(format!("cannot {what} {}", job.path.display()), e);
    if job.meta.nlink <= 1 {
        super::remove_existing(&job.path);
    }
    let mut file = tokio::fs::OpenOptions::from(super::open_options())
        .create(true)
        .truncate(true)
        .open(&job.path)
        .await
        .map_err(|e| io("create", e))?;
    let mut written = 0u64;
    let mut holes = false;
    while let Some(item) = slices.next().await {
        let (chunk, r) = item?;
        let bytes = slice(job, &chunk, &r)?;
        if is_hole(bytes) {
            // Zeros are not written: the file stays sparse, as its source was (or could be).
            file.seek(std::io::SeekFrom::Current(bytes.len() as i64)).await.map_err(|e| io("seek in", e))?;
            holes = true;
        } else {
            file.write_all(bytes).await.map_err(|e| io("write", e))?;
        }
        written += r.len as u64;
        progress.advance(0, r.len as u64);
    }
    check_size(job, written)?;
    file.flush().await.map_err(|e| io("write", e))?;
    if holes {
        // A hole at the end needs the length set; elsewhere this changes nothing.
        file.set_len(written).await.map_err(|e| io("set the length of", e))?;
    }
    drop(file);
    progress.advance(1, 0);
    meta::apply(&job.path, &job.meta, false).map_err(|e| io("set metadata of", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ids: &[u8]) -> FileJob {
        let meta = Meta { mode: 0, uid: 0, gid: 0, mtime_ns: 0, ctime_ns: 0, dev: 0, ino: 0, nlink: 1, xattrs: vec![] };
        let content = ids.iter().map(|i| ChunkRef { id: ObjectId([*i; 32]), offset: 0, len: 1 }).collect();
        FileJob { path: PathBuf::new(), meta, size: ids.len() as u64, content }
    }

    #[test]
    fn batches_hold_at_most_batch_chunks_distinct_chunks() {
        let mut b = Batcher::default();
        let mut batches = Vec::new();
        for i in 0..40u8 {
            // Files share chunks pairwise, as packed small files do.
            batches.extend(b.push(job(&[i / 2])));
        }
        batches.extend(b.push(job(&(100..130).collect::<Vec<u8>>())));
        batches.extend(b.flush());
        let sizes: Vec<usize> = batches
            .iter()
            .map(|b| match b {
                Batch::Small(jobs) => jobs.len(),
                Batch::Large(_) => 0,
            })
            .collect();
        // Two files per chunk: BATCH_CHUNKS chunks hold 2 * BATCH_CHUNKS files; the large
        // file (30 chunks) goes alone, after the batch before it is flushed.
        let full = 2 * BATCH_CHUNKS;
        let mut want = vec![full; 40 / full];
        want.push(40 % full);
        want.retain(|n| *n > 0);
        want.push(0);
        assert_eq!(sizes, want);
    }
}
