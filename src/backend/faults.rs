//! Faults injected on purpose, for tests and drills: a backend that fails every request,
//! stalls until its requests time out, returns corrupted bytes, or has lost its objects.
//! Off by default; one atomic load per request when off.
//!
//! Owns: the fault switches of one backend (shared by its clones). Must not: be turned on by
//! configuration; only code (tests, a drill harness) sets them.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// One way a provider misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Every request fails, as with a server that is down.
    Fail = 1,
    /// Every request hangs for the stall time, then fails as a timeout would.
    Stall = 2,
    /// Reads return the stored bytes with one bit flipped.
    Corrupt = 4,
    /// Objects are gone: reads find nothing, lists are empty (writes still land).
    Lose = 8,
}

/// The fault switches of one backend.
#[derive(Debug)]
pub struct Faults {
    on: AtomicU8,
    stall_ms: AtomicU64,
    hits: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults { on: AtomicU8::new(0), stall_ms: AtomicU64::new(2_000), hits: AtomicU64::new(0) }
    }
}

/// What a request must do after `Faults::enter` let it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Carry on normally.
    Proceed,
    /// Act as if the object did not exist.
    Vanish,
    /// Carry on, then damage what is read.
    Damage,
}

impl Faults {
    /// Switch `fault` on.
    pub fn set(&self, fault: Fault) {
        self.on.fetch_or(fault as u8, Ordering::Relaxed);
    }

    /// Switch every fault off.
    pub fn clear(&self) {
        self.on.store(0, Ordering::Relaxed);
    }

    /// How long a stalled request hangs before failing (default 2 s).
    pub fn set_stall(&self, stall: Duration) {
        self.stall_ms.store(stall.as_millis() as u64, Ordering::Relaxed);
    }

    /// Requests that met a fault so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn has(&self, on: u8, fault: Fault) -> bool {
        on & fault as u8 != 0
    }

    /// Called at the start of every request.
    pub(crate) async fn enter(&self, backend: &str, what: &str, path: &str) -> Result<Then> {
        let on = self.on.load(Ordering::Relaxed);
        if on == 0 {
            return Ok(Then::Proceed);
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        let fail =
            |why: &str| Error::new(ErrorKind::Backend, format!("backend '{backend}': {what} {path}: {why} (injected)"));
        if self.has(on, Fault::Stall) {
            tokio::time::sleep(Duration::from_millis(self.stall_ms.load(Ordering::Relaxed))).await;
            return Err(fail("timed out"));
        }
        if self.has(on, Fault::Fail) {
            return Err(fail("service unavailable"));
        }
        if self.has(on, Fault::Lose) {
            return Ok(Then::Vanish);
        }
        Ok(if self.has(on, Fault::Corrupt) { Then::Damage } else { Then::Proceed })
    }
}

/// Flip one bit in the middle, as a bad disk or a buggy proxy would.
pub(crate) fn damage(mut bytes: Vec<u8>) -> Vec<u8> {
    let mid = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(mid) {
        *b ^= 0x10;
    }
    bytes
}
