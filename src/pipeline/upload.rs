//! The upload half of a backup: compress on rayon, store with bounded concurrency, record.
//!
//! Owns: the bounded job channel, the first error, and batching catalogue records. Must not:
//! decide what is new (the walker does) or commit snapshots.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::catalogue::{Catalogue, Record};
use crate::codec::{self, ObjectKind};
use crate::error::{Error, ErrorKind, Result};
use crate::exec::cpu;
use crate::id::ObjectId;
use crate::store::Store;

/// One object the pool lacks. The body is shared so that a writer can keep reading it
/// until it is stored (the drive's streams do).
pub(crate) struct Job {
    pub kind: ObjectKind,
    pub id: ObjectId,
    pub body: Arc<Vec<u8>>,
}

/// Called with each object's id once it is durable (before its catalogue record is).
pub(crate) type OnStored = Arc<dyn Fn(&ObjectId) + Send + Sync>;

/// Totals of what was actually written.
#[derive(Debug, Default)]
pub(crate) struct Uploaded {
    pub objects: u64,
    pub plain_bytes: u64,
    pub stored_bytes: u64,
    /// Objects stored with fewer pieces than the pool's redundancy asks (backends down).
    pub degraded: u64,
}

/// Jobs queued but not yet taken: with the uploads in flight this bounds memory to about
/// `(QUEUE + concurrency) * max chunk size`.
const QUEUE: usize = 8;
/// Catalogue records per transaction; also flushed every `FLUSH_EVERY`.
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(2);

pub(crate) struct Uploader {
    task: tokio::task::JoinHandle<Result<Uploaded>>,
}

impl Uploader {
    /// Start the upload task; the walker feeds the returned sender.
    pub fn start(
        store: Store,
        catalogue: Arc<Catalogue>,
        level: i32,
        concurrency: usize,
        abort: Arc<AtomicBool>,
    ) -> (Uploader, mpsc::Sender<Job>) {
        Self::start_notifying(store, catalogue, level, concurrency, abort, None)
    }

    /// Like `start`, calling `on_stored` as each object becomes durable.
    pub fn start_notifying(
        store: Store,
        catalogue: Arc<Catalogue>,
        level: i32,
        concurrency: usize,
        abort: Arc<AtomicBool>,
        on_stored: Option<OnStored>,
    ) -> (Uploader, mpsc::Sender<Job>) {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let task = tokio::spawn(run(store, catalogue, level, concurrency, abort, on_stored, rx));
        (Uploader { task }, tx)
    }

    /// Like `start`, but nothing is stored or recorded: each object is compressed (and
    /// sealed) only to count what it would take (`backup --dry-run`), its stored size being
    /// the envelope's times the pool's redundancy overhead.
    pub fn start_dry(store: Store, level: i32, concurrency: usize) -> (Uploader, mpsc::Sender<Job>) {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let task = tokio::spawn(async move {
            let seen = Mutex::new(std::collections::HashSet::new());
            let (objects, plain, stored) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
            let overhead = store.scheme().overhead();
            let (seen, objects, plain, stored, store) = (&seen, &objects, &plain, &stored, &store);
            tokio_stream_from(rx)
                .for_each_concurrent(concurrency, |Job { kind, id, body }| async move {
                    if !seen.lock().expect("poisoned").insert(id) {
                        return;
                    }
                    let keys = store.keys().clone();
                    let plain_len = body.len() as u64;
                    let len = cpu(move || codec::encode(kind, &id, &body, level, &keys).len()).await;
                    objects.fetch_add(1, Ordering::Relaxed);
                    plain.fetch_add(plain_len, Ordering::Relaxed);
                    stored.fetch_add((len as f64 * overhead) as u64, Ordering::Relaxed);
                })
                .await;
            Ok(Uploaded {
                objects: objects.load(Ordering::Relaxed),
                plain_bytes: plain.load(Ordering::Relaxed),
                stored_bytes: stored.load(Ordering::Relaxed),
                degraded: 0,
            })
        });
        (Uploader { task }, tx)
    }

    /// Wait until every queued job is stored and recorded (the sender must be dropped).
    pub async fn finish(self) -> Result<Uploaded> {
        self.task.await.map_err(|e| Error::new(ErrorKind::Io, "upload task crashed").with_source(e))?
    }
}

async fn run(
    store: Store,
    catalogue: Arc<Catalogue>,
    level: i32,
    concurrency: usize,
    abort: Arc<AtomicBool>,
    on_stored: Option<OnStored>,
    rx: mpsc::Receiver<Job>,
) -> Result<Uploaded> {
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let pending: Mutex<(Vec<Record>, Instant)> = Mutex::new((Vec::new(), Instant::now()));
    let (objects, plain, stored) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let degraded = AtomicU64::new(0);
    let stream = tokio_stream_from(rx);
    stream
        .for_each_concurrent(concurrency, |job| async {
            if abort.load(Ordering::Relaxed) {
                return;
            }
            let id = job.id;
            match store_one(&store, level, job).await {
                Ok((record, written, plain_len, stored_len, short)) => {
                    if let Some(f) = &on_stored {
                        f(&id);
                    }
                    degraded.fetch_add(short as u64, Ordering::Relaxed);
                    if written {
                        objects.fetch_add(1, Ordering::Relaxed);
                        plain.fetch_add(plain_len, Ordering::Relaxed);
                        stored.fetch_add(stored_len, Ordering::Relaxed);
                    }
                    let batch = {
                        let mut p = pending.lock().expect("poisoned");
                        p.0.push(record);
                        if p.0.len() >= BATCH || p.1.elapsed() >= FLUSH_EVERY {
                            p.1 = Instant::now();
                            std::mem::take(&mut p.0)
                        } else {
                            Vec::new()
                        }
                    };
                    if let Err(e) = flush(&catalogue, batch).await {
                        fail(&first_error, &abort, e);
                    }
                }
                Err(e) => fail(&first_error, &abort, e),
            }
        })
        .await;
    let rest = std::mem::take(&mut pending.lock().expect("poisoned").0);
    flush(&catalogue, rest).await?;
    if let Some(e) = first_error.into_inner().expect("poisoned") {
        return Err(e);
    }
    Ok(Uploaded {
        objects: objects.into_inner(),
        plain_bytes: plain.into_inner(),
        stored_bytes: stored.into_inner(),
        degraded: degraded.into_inner(),
    })
}

fn fail(first: &Mutex<Option<Error>>, abort: &AtomicBool, e: Error) {
    abort.store(true, Ordering::Relaxed);
    first.lock().expect("poisoned").get_or_insert(e);
}

async fn store_one(store: &Store, level: i32, job: Job) -> Result<(Record, bool, u64, u64, bool)> {
    let Job { kind, id, body } = job;
    let plain_len = body.len() as u64;
    let keys = store.keys().clone();
    let (envelope, body) = cpu(move || (codec::encode(kind, &id, &body, level, &keys), body)).await;
    let stored = store.put(kind, &id, envelope).await?;
    let location = crate::repository::location_of(store, plain_len, &stored.pieces);
    let record = match kind {
        ObjectKind::Tree => {
            let body = Arc::try_unwrap(body).unwrap_or_else(|shared| (*shared).clone());
            Record::TreePack { id, location, body }
        }
        _ => Record::Chunk { id, location },
    };
    Ok((record, stored.written, plain_len, stored.stored_len(), stored.degraded))
}

async fn flush(catalogue: &Arc<Catalogue>, batch: Vec<Record>) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let catalogue = catalogue.clone();
    tokio::task::spawn_blocking(move || catalogue.record(&batch))
        .await
        .map_err(|e| Error::new(ErrorKind::Catalogue, "catalogue writer crashed").with_source(e))?
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
