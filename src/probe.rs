//! Checking a backend end to end: write, read back, list and delete a probe object, timing
//! each step. Used by `cuckoo backend test` and the health column of `backend list`.
//!
//! Owns: the probe protocol and its report. Must not: touch pool objects (the probe lives
//! under its own prefix and is removed).

use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::store::POOL_RECORD;

/// How one probe went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeReport {
    /// Backend name.
    pub backend: String,
    /// Steps that succeeded, with their duration in milliseconds.
    pub steps: Vec<(String, f64)>,
    /// The step that failed and why, if any.
    pub failure: Option<(String, String)>,
}

impl ProbeReport {
    /// True when every step succeeded.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

const PREFIX: &str = "cuckoo-probe/";

/// Write, read back, list and delete a 64 KiB probe object.
pub async fn probe(backend: &Backend) -> ProbeReport {
    let mut report = ProbeReport { backend: backend.name.clone(), steps: vec![], failure: None };
    let path = format!("{PREFIX}{:016x}", rand::random::<u64>());
    let data: Vec<u8> = (0..64 * 1024).map(|_| rand::random::<u8>()).collect();
    let steps: [(&str, Step); 4] =
        [("write", Step::Write), ("read", Step::Read), ("list", Step::List), ("delete", Step::Delete)];
    for (name, step) in steps {
        let start = Instant::now();
        let result = step.run(backend, &path, &data).await;
        match result {
            Ok(()) => report.steps.push((name.to_string(), ms(start.elapsed()))),
            Err(why) => {
                report.failure = Some((name.to_string(), why));
                // Leave nothing behind if a later step failed.
                let _ = backend.delete(&path).await;
                break;
            }
        }
    }
    // Services with real directories (fs, SFTP, WebDAV, FTP) keep the probe's directory after
    // its one object goes; an empty one is removed, on object stores this is a no-op.
    if let Some(op) = backend.operator() {
        let _ = op.delete(PREFIX).await;
    }
    report
}

enum Step {
    Write,
    Read,
    List,
    Delete,
}

impl Step {
    async fn run(&self, b: &Backend, path: &str, data: &[u8]) -> Result<(), String> {
        match self {
            Step::Write => b.write(path, data.to_vec()).await.map_err(|e| e.to_string()),
            Step::Read => match b.read(path).await.map_err(|e| e.to_string())? {
                Some(got) if got == data => Ok(()),
                Some(got) => Err(format!("read back {} bytes that differ from the {} written", got.len(), data.len())),
                None => Err("the object just written is not there".into()),
            },
            Step::List => {
                let listed = b.list(PREFIX).await.map_err(|e| e.to_string())?;
                match listed.iter().find(|(p, _)| p.ends_with(path)) {
                    Some((_, len)) if *len == data.len() as u64 => Ok(()),
                    Some((_, len)) => Err(format!("listed with {len} bytes instead of {}", data.len())),
                    None => Err("the object just written is not listed".into()),
                }
            }
            Step::Delete => {
                b.delete(path).await.map_err(|e| e.to_string())?;
                match b.read(path).await.map_err(|e| e.to_string())? {
                    None => Ok(()),
                    Some(_) => Err("still readable after delete".into()),
                }
            }
        }
    }
}

/// Health of a backend for listings: the time to stat its pool record, or the error. A
/// backend that answers but will not take a small write (read-only, no write permission,
/// full) is not healthy either: a pool needs to write there.
pub async fn ping(backend: &Backend) -> Result<f64, String> {
    let start = Instant::now();
    backend.len(POOL_RECORD).await.map_err(|e| e.to_string())?;
    let took = ms(start.elapsed());
    let path = format!("{PREFIX}ping-{:016x}", rand::random::<u64>());
    let written = backend.write(&path, b"cuckoo".to_vec()).await;
    let deleted = backend.delete(&path).await;
    if let Some(op) = backend.operator() {
        let _ = op.delete(PREFIX).await;
    }
    match (written, deleted) {
        (Err(e), _) => Err(format!("answers, but refuses writes: {e}")),
        (Ok(()), Err(e)) => Err(format!("answers, but refuses deletes: {e}")),
        (Ok(()), Ok(())) => Ok(took),
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
