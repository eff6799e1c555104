//! Which backends are worth asking right now: a backend whose requests fail is marked down
//! for a while (5 s, doubling to 5 min while it keeps failing), and one that reported it is
//! out of space is marked full for the rest of the session. Reads then ask the others first
//! and writes go to the next healthy owners, so a dead provider costs one timeout, not one
//! per object.
//!
//! Owns: the down/full state per backend. Must not: do I/O or decide placement.

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
}

impl Health {
    /// All `n` backends healthy.
    pub fn new(n: usize) -> Health {
        Health {
            epoch: Instant::now(),
            down_until_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
            failures: (0..n).map(|_| AtomicU32::new(0)).collect(),
            full: (0..n).map(|_| AtomicBool::new(false)).collect(),
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
            Err(e) if e.kind() == ErrorKind::Full => self.full[i].store(true, Ordering::Relaxed),
            Err(e) if matches!(e.kind(), ErrorKind::Backend | ErrorKind::PermissionDenied) => self.mark_down(i),
            Err(_) => {}
        }
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
    fn a_burst_of_failures_while_down_is_one_failure() {
        let h = Health::new(1);
        for _ in 0..20 {
            h.observe::<()>(0, &Err(Error::new(ErrorKind::Backend, "refused")));
        }
        let left = h.down_until_ms[0].load(Ordering::Relaxed) - h.now_ms();
        assert!(left <= FIRST_BACKOFF.as_millis() as u64, "backoff {left} ms after one burst");
    }
}
