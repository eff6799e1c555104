//! Which backends are worth asking right now: a backend whose requests fail is marked down
//! for a while (5 s, doubling to 5 min while it keeps failing), and one that reported it is
//! out of space is marked full for the rest of the session. Reads then ask the others first
//! and writes go to the next healthy owners, so a dead provider costs one timeout, not one
//! per object.
//!
//! Every failure is also kept as an incident (what kind of trouble, how often, the first
//! message), so that a command can end by naming each backend that misbehaved and why,
//! and whether running it again can help.
//!
//! Owns: the down/full state per backend and its incidents. Must not: do I/O or decide
//! placement.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Health of every backend of one store, shared by its clones.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    down_until_ms: Vec<AtomicU64>,
    failures: Vec<AtomicU32>,
    full: Vec<AtomicBool>,
    incidents: Vec<Mutex<Vec<Incident>>>,
}

/// Why a backend failed requests, in the terms that decide what the user can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trouble {
    /// It did not answer or answered with an error: it may come back by itself.
    Unreachable,
    /// It refused the request: read-only, or these credentials may not do it.
    Refused,
    /// It has no space left (its disk, its quota, or its configured capacity).
    Full,
}

impl Trouble {
    /// Whether running the same command again, unchanged, can succeed.
    pub fn retry_helps(self) -> bool {
        self == Trouble::Unreachable
    }

    fn of(kind: ErrorKind) -> Option<Trouble> {
        match kind {
            ErrorKind::Backend => Some(Trouble::Unreachable),
            ErrorKind::PermissionDenied | ErrorKind::ReadOnly => Some(Trouble::Refused),
            ErrorKind::Full => Some(Trouble::Full),
            _ => None,
        }
    }
}

/// Failures of one kind at one backend during this session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Incident {
    /// What kind of failure.
    pub trouble: Trouble,
    /// How many requests failed this way.
    pub failures: u64,
    /// The first failure's message (it names the backend, the request and the path).
    pub first: String,
}

impl Health {
    /// All `n` backends healthy.
    pub fn new(n: usize) -> Health {
        Health {
            epoch: Instant::now(),
            down_until_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
            failures: (0..n).map(|_| AtomicU32::new(0)).collect(),
            full: (0..n).map(|_| AtomicBool::new(false)).collect(),
            incidents: (0..n).map(|_| Mutex::default()).collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// True unless backend `i` failed recently.
    pub fn is_up(&self, i: usize) -> bool {
        self.down_until_ms[i].load(Ordering::Relaxed) <= self.now_ms()
    }

    /// True once backend `i` reported it has no space left.
    pub fn is_full(&self, i: usize) -> bool {
        self.full[i].load(Ordering::Relaxed)
    }

    /// Note the outcome of a request to backend `i`: failures of the service (not "not
    /// found", not corrupt bytes) mark it down; success clears that.
    pub fn observe<T>(&self, i: usize, result: &Result<T, Error>) {
        match result {
            Ok(_) => {
                if self.failures[i].load(Ordering::Relaxed) != 0 {
                    self.failures[i].store(0, Ordering::Relaxed);
                    self.down_until_ms[i].store(0, Ordering::Relaxed);
                }
            }
            Err(e) => {
                match e.kind() {
                    ErrorKind::Full => self.full[i].store(true, Ordering::Relaxed),
                    ErrorKind::Backend | ErrorKind::PermissionDenied | ErrorKind::ReadOnly => self.mark_down(i),
                    _ => {}
                }
                self.note(i, e);
            }
        }
    }

    fn note(&self, i: usize, e: &Error) {
        let Some(trouble) = Trouble::of(e.kind()) else { return };
        let mut incidents = self.incidents[i].lock().expect("poisoned");
        match incidents.iter_mut().find(|n| n.trouble == trouble) {
            Some(n) => n.failures += 1,
            None => incidents.push(Incident { trouble, failures: 1, first: e.to_string() }),
        }
    }

    /// What went wrong at backend `i` since this store was opened, worst first (a full or
    /// refusing backend stays so until someone acts; an unreachable one may come back).
    pub fn incidents(&self, i: usize) -> Vec<Incident> {
        let mut all = self.incidents[i].lock().expect("poisoned").clone();
        all.sort_by_key(|n| std::cmp::Reverse(n.trouble));
        all
    }

    /// Take backend `i` out of use for a backoff period that doubles with each failure.
    /// Requests already in flight when it went down fail too; they are one failure, not
    /// one each (else a burst of uploads would push the backoff to its maximum at once).
    pub fn mark_down(&self, i: usize) {
        if !self.is_up(i) {
            return;
        }
        let n = self.failures[i].fetch_add(1, Ordering::Relaxed).min(6);
        let backoff = (FIRST_BACKOFF * 2u32.pow(n)).min(MAX_BACKOFF);
        self.down_until_ms[i].store(self.now_ms() + backoff.as_millis() as u64, Ordering::Relaxed);
    }

    /// Indices of the backends marked down now, for messages.
    pub fn down(&self) -> Vec<usize> {
        (0..self.failures.len()).filter(|i| !self.is_up(*i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_mark_down_and_success_restores() {
        let h = Health::new(3);
        assert!(h.is_up(1));
        h.observe::<()>(1, &Err(Error::new(ErrorKind::Backend, "refused")));
        assert!(!h.is_up(1) && h.is_up(0));
        assert_eq!(h.down(), vec![1]);
        h.observe::<()>(2, &Err(Error::not_found("gone")));
        assert!(h.is_up(2), "a missing object says nothing about the backend");
        h.observe(1, &Ok(()));
        assert!(h.is_up(1));
        h.observe::<()>(0, &Err(Error::new(ErrorKind::Full, "quota")));
        assert!(h.is_full(0) && h.is_up(0));
    }

    #[test]
    fn incidents_say_what_failed_how_often_and_whether_retrying_helps() {
        let h = Health::new(2);
        for _ in 0..3 {
            h.observe::<()>(0, &Err(Error::new(ErrorKind::ReadOnly, "backend 'a': write x: read-only file system")));
        }
        h.observe::<()>(0, &Err(Error::new(ErrorKind::Backend, "backend 'a': read y: connection refused")));
        h.observe::<()>(0, &Err(Error::not_found("backend 'a': y")));
        h.observe::<()>(1, &Ok(()));
        let seen = h.incidents(0);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!((seen[0].trouble, seen[0].failures), (Trouble::Refused, 3));
        assert!(seen[0].first.contains("read-only") && !seen[0].trouble.retry_helps());
        assert_eq!((seen[1].trouble, seen[1].failures), (Trouble::Unreachable, 1));
        assert!(seen[1].trouble.retry_helps());
        assert!(h.incidents(1).is_empty());
    }

    #[test]
    fn a_burst_of_failures_while_down_is_one_failure() {
        let h = Health::new(1);
        for _ in 0..20 {
            h.observe::<()>(0, &Err(Error::new(ErrorKind::Backend, "refused")));
        }
        let left = h.down_until_ms[0].load(Ordering::Relaxed) - h.now_ms();
        assert!(left <= FIRST_BACKOFF.as_millis() as u64, "backoff {left} ms after one burst");
    }
}
