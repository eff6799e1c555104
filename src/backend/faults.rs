//! The fault-injection layer, for tests and drills: a backend that fails every request,
//! stalls until its requests time out, returns corrupted bytes, has lost its objects,
//! refuses writes and deletes (read-only) or has no room for writes (full).
//! Off by default; one atomic load per request when off.
//!
//! Owns: the fault switches of one backend (shared by its clones) and the layer that obeys
//! them. Must not: be turned on by configuration; only code (tests, a drill harness) sets
//! them.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::layer::Objects;
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
    /// Writes and deletes are refused as by a read-only file system; reads work.
    ReadOnly = 16,
    /// Writes fail for lack of space; reads and deletes work.
    Full = 32,
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
enum Then {
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
    async fn enter(&self, backend: &str, what: &str, path: &str) -> Result<Then> {
        let on = self.on.load(Ordering::Relaxed);
        if on == 0 {
            return Ok(Then::Proceed);
        }
        let fail = |kind: ErrorKind, why: &str| {
            Error::new(kind, format!("backend '{backend}': {what} {path}: {why} (injected)"))
        };
        let refused = match what {
            "write" if self.has(on, Fault::ReadOnly) => Some(fail(ErrorKind::ReadOnly, "read-only file system")),
            "write" if self.has(on, Fault::Full) => Some(fail(ErrorKind::Full, "no space left on device")),
            "delete" if self.has(on, Fault::ReadOnly) => Some(fail(ErrorKind::ReadOnly, "read-only file system")),
            _ => None,
        };
        let others = on & !(Fault::ReadOnly as u8 | Fault::Full as u8);
        if refused.is_none() && others == 0 {
            return Ok(Then::Proceed);
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = refused {
            return Err(e);
        }
        if self.has(on, Fault::Stall) {
            tokio::time::sleep(Duration::from_millis(self.stall_ms.load(Ordering::Relaxed))).await;
            return Err(fail(ErrorKind::Backend, "timed out"));
        }
        if self.has(on, Fault::Fail) {
            return Err(fail(ErrorKind::Backend, "service unavailable"));
        }
        if self.has(on, Fault::Lose) {
            return Ok(Then::Vanish);
        }
        Ok(if self.has(on, Fault::Corrupt) { Then::Damage } else { Then::Proceed })
    }
}

/// Flip one bit in the middle, as a bad disk or a buggy proxy would.
fn damage(bytes: Bytes) -> Bytes {
    let mut bytes = Vec::from(bytes);
    let mid = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(mid) {
        *b ^= 0x10;
    }
    bytes.into()
}

/// `inner` obeying the fault switches.
pub(crate) struct Faulty<L> {
    pub inner: L,
    pub faults: Arc<Faults>,
    /// Backend name, for messages.
    pub name: String,
}

impl<L: Objects> Objects for Faulty<L> {
    async fn write(&self, path: &str, bytes: Bytes) -> Result<()> {
        // A lost or corrupting backend still takes writes.
        self.faults.enter(&self.name, "write", path).await?;
        self.inner.write(path, bytes).await
    }

    async fn read(&self, path: &str) -> Result<Option<Bytes>> {
        match self.faults.enter(&self.name, "read", path).await? {
            Then::Vanish => Ok(None),
            Then::Damage => Ok(self.inner.read(path).await?.map(damage)),
            Then::Proceed => self.inner.read(path).await,
        }
    }

    async fn read_range(&self, path: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        match self.faults.enter(&self.name, "read", path).await? {
            Then::Vanish => Ok(None),
            // The object is damaged, not the range alone: the range is cut from it.
            Then::Damage => Ok(self.inner.read(path).await?.map(|all| super::layer::cut(damage(all), range))),
            Then::Proceed => self.inner.read_range(path, range).await,
        }
    }

    async fn stat(&self, path: &str) -> Result<Option<u64>> {
        match self.faults.enter(&self.name, "stat", path).await? {
            Then::Vanish => Ok(None),
            _ => self.inner.stat(path).await,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        match self.faults.enter(&self.name, "list", prefix).await? {
            Then::Vanish => Ok(vec![]),
            _ => self.inner.list(prefix).await,
        }
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.faults.enter(&self.name, "delete", path).await?;
        self.inner.delete(path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::dal::Dal;

    fn layer() -> Faulty<Dal> {
        opendal::init_default_registry();
        let op = opendal::Operator::via_iter("memory", Vec::<(String, String)>::new()).unwrap();
        let dal = Dal { name: "m".into(), scheme: "memory".into(), op, content_type: false };
        Faulty { inner: dal, faults: Arc::default(), name: "m".into() }
    }

    #[tokio::test]
    async fn each_fault_changes_what_the_layer_below_answers() {
        let f = layer();
        let body = Bytes::from(vec![7u8; 100]);
        f.write("a/x", body.clone()).await.unwrap();
        assert_eq!(f.read("a/x").await.unwrap(), Some(body.clone()));

        f.faults.set(Fault::Corrupt);
        let read = f.read("a/x").await.unwrap().unwrap();
        assert_eq!((read.len(), read[50], read[49]), (100, 7 ^ 0x10, 7), "one bit flipped in the middle");
        assert_eq!(
            f.read_range("a/x", 0..10).await.unwrap().unwrap(),
            body.slice(..10),
            "the head is before the damage"
        );
        let range = f.read_range("a/x", 45..60).await.unwrap().unwrap();
        assert_eq!((range.len(), range[5], range[4]), (15, 7 ^ 0x10, 7), "a range holding the damage has it");
        assert_eq!(f.read_range("a/x", 90..200).await.unwrap().unwrap().len(), 10, "cut where the object ends");
        f.faults.clear();

        f.faults.set(Fault::Lose);
        assert_eq!(f.read("a/x").await.unwrap(), None);
        assert_eq!(f.stat("a/x").await.unwrap(), None);
        assert!(f.list("a/").await.unwrap().is_empty());
        f.write("a/y", body.clone()).await.unwrap();
        f.faults.clear();

        assert_eq!(f.list("a/").await.unwrap().len(), 2, "writes landed while lost");

        f.faults.set(Fault::ReadOnly);
        assert_eq!(f.write("a/z", body.clone()).await.unwrap_err().kind(), ErrorKind::ReadOnly);
        assert_eq!(f.delete("a/x").await.unwrap_err().kind(), ErrorKind::ReadOnly);
        assert_eq!(f.read("a/x").await.unwrap(), Some(body.clone()), "a read-only backend is read");
        f.faults.clear();

        f.faults.set(Fault::Full);
        assert_eq!(f.write("a/z", body.clone()).await.unwrap_err().kind(), ErrorKind::Full);
        f.delete("a/y").await.unwrap();
        assert_eq!(f.read("a/x").await.unwrap(), Some(body.clone()));
        f.faults.clear();

        f.faults.set(Fault::Fail);
        let err = f.read("a/x").await.unwrap_err();
        assert!(err.to_string().contains("injected") && err.kind() == ErrorKind::Backend, "{err}");
        assert!(f.delete("a/x").await.is_err());
        assert!(f.faults.hits() >= 8);
    }
}
