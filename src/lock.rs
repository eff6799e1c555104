//! Locks on the backends, so that prune never deletes what a running backup will reference.
//!
//! Owns: taking, refreshing, releasing and judging locks (`locks/<random id>` on every
//! backend). Must not: decide what an operation does under its lock.
//!
//! Each holder writes its lock to every backend *then* lists the locks there: of two
//! conflicting holders, at least the later writer sees the other and backs off, so a backup
//! and a prune can never both proceed (backends list what was written before, which S3,
//! GCS, Azure and file systems guarantee). Backup, restore and check take shared locks;
//! prune takes an exclusive one. A holder rewrites its lock every `REFRESH`; a lock not
//! refreshed for `STALE`, or held by a dead process on this machine, is ignored and can be
//! removed with `cuckoo unlock`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::codec::{self, ObjectKind};
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{self, LockRecord};
use crate::store::{LOCKS_PREFIX, Store, object_path};

/// How often a holder proves it is alive.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock older than this since its last refresh belongs to a holder that died.
pub const STALE: Duration = Duration::from_secs(30 * 60);

/// A lock this process holds; `release` it when done.
pub struct Lock {
    store: Store,
    id: ObjectId,
    refresher: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

/// A lock found on the backends.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its id.
    pub id: ObjectId,
    /// Its record; `None` if it could not be read.
    pub record: Option<LockRecord>,
    /// Whether it is stale (see the module doc).
    pub stale: bool,
}

/// Take a lock for `operation`; fails with `ErrorKind::Locked` when a conflicting lock is
/// held, naming its holder.
pub async fn acquire(store: &Store, operation: &str, exclusive: bool) -> Result<Lock> {
    acquire_with(store, operation, exclusive, Arc::default()).await
}

/// Like `acquire`; `stop` is set if the lock could not be refreshed for so long that others
/// may take it for stale (the holder must then stop: a prune may run). `Lock::lost` says
/// afterwards whether that happened.
pub async fn acquire_with(store: &Store, operation: &str, exclusive: bool, stop: Arc<AtomicBool>) -> Result<Lock> {
    let now = crate::machine::now_ns();
    let record = LockRecord {
        exclusive,
        operation: operation.to_string(),
        hostname: crate::machine::hostname(),
        pid: std::process::id(),
        created_ns: now,
        refreshed_ns: now,
    };
    let id = ObjectId(rand::random());
    write(store, &id, &record).await?;
    let conflict = match list_locks(store, exclusive).await {
        Ok(locks) => {
            tidy_dead_here(store, &locks).await;
            locks.into_iter().find(|l| l.id != id && !l.stale && conflicts(exclusive, l.record.as_ref()))
        }
        Err(e) => {
            let _ = store.delete_everywhere(&object_path(ObjectKind::Lock, &id)).await;
            return Err(e);
        }
    };
    if let Some(other) = conflict {
        store.delete_everywhere(&object_path(ObjectKind::Lock, &id)).await?;
        return Err(Error::new(ErrorKind::Locked, describe_conflict(operation, &other)));
    }
    let lost = Arc::new(AtomicBool::new(false));
    let refresher = tokio::spawn(refresh(store.clone(), id, record, [stop, lost.clone()]));
    Ok(Lock { store: store.clone(), id, refresher, lost })
}

fn conflicts(exclusive: bool, other: Option<&LockRecord>) -> bool {
    // An unreadable lock could be anything: treat it as exclusive.
    exclusive || other.is_none_or(|o| o.exclusive)
}

fn describe_conflict(operation: &str, other: &Found) -> String {
    match &other.record {
        Some(r) => format!(
            "cannot {operation}: the pool is locked by {} on {} (pid {}) since {}; \
             if that process is gone, `cuckoo unlock` removes its lock once stale ({} min without refresh)",
            r.operation,
            r.hostname,
            r.pid,
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_nanos(r.created_ns.max(0) as u64)),
            STALE.as_secs() / 60
        ),
        None => format!(
            "cannot {operation}: lock {} cannot be read; `cuckoo unlock --all` removes every lock",
            other.id.short()
        ),
    }
}

async fn write(store: &Store, id: &ObjectId, record: &LockRecord) -> Result<()> {
    let envelope = codec::encode(ObjectKind::Lock, id, &model::to_body(record), 0, store.keys());
    let path = object_path(ObjectKind::Lock, id);
    if record.exclusive {
        // A backend that missed an exclusive lock could let a backup start beside a prune.
        store.put_on_all(&path, &envelope).await
    } else {
        store.put_everywhere(&path, &envelope).await
    }
}

async fn refresh(store: Store, id: ObjectId, mut record: LockRecord, signal: [Arc<AtomicBool>; 2]) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(REFRESH).await;
        record.refreshed_ns = crate::machine::now_ns();
        // A failed refresh is retried at the next tick; the lock only goes stale after several.
        if write(&store, &id, &record).await.is_ok() {
            last_ok = tokio::time::Instant::now();
        } else if last_ok.elapsed() + REFRESH >= STALE {
            signal.iter().for_each(|s| s.store(true, Ordering::Relaxed));
        }
    }
}

impl Lock {
    /// True if the lock went unrefreshed for so long that others may have taken it for stale.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Stop refreshing and remove the lock from every backend.
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        self.store.delete_everywhere(&object_path(ObjectKind::Lock, &self.id)).await
    }
}

/// Every lock on any backend.
pub async fn list(store: &Store) -> Result<Vec<Found>> {
    list_locks(store, false).await
}

/// The locks on the backends; with `all`, every backend must be listed (see `list_on_all`).
async fn list_locks(store: &Store, all: bool) -> Result<Vec<Found>> {
    let now = crate::machine::now_ns();
    let mut found = Vec::new();
    let ids = if all { store.list_on_all(LOCKS_PREFIX).await? } else { store.list_everywhere(LOCKS_PREFIX).await? };
    for id in ids {
        let record = match store.get_named(ObjectKind::Lock, &id).await {
            Ok(Some(body)) => model::from_body::<LockRecord>("lock", &body).ok(),
            Ok(None) => continue, // released while we listed
            Err(e) if e.kind() == ErrorKind::Backend => return Err(e),
            Err(_) => None,
        };
        let stale = record.as_ref().is_some_and(|r| is_stale(r, now));
        found.push(Found { id, record, stale });
    }
    Ok(found)
}

fn is_stale(r: &LockRecord, now_ns: i64) -> bool {
    let age = Duration::from_nanos(now_ns.saturating_sub(r.refreshed_ns).max(0) as u64);
    age > STALE || dead_here(r)
}

/// Held by a process of this machine that is gone (killed, crashed).
fn dead_here(r: &LockRecord) -> bool {
    r.hostname == crate::machine::hostname()
        && r.pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{}", r.pid)).exists()
}

/// Delete the locks of processes of this machine that died, so killed runs do not leave
/// locks behind for `unlock` to tidy. Only these: a lock of another machine that merely
/// went unrefreshed may belong to a run that is still going. Best effort.
async fn tidy_dead_here(store: &Store, locks: &[Found]) {
    for lock in locks {
        if lock.record.as_ref().is_some_and(dead_here) {
            let _ = store.delete_everywhere(&object_path(ObjectKind::Lock, &lock.id)).await;
        }
    }
}

/// Remove stale locks, or every lock with `all`; returns what was removed.
pub async fn remove(store: &Store, all: bool) -> Result<Vec<Found>> {
    let mut removed = Vec::new();
    for lock in list(store).await? {
        if all || lock.stale {
            store.delete_everywhere(&object_path(ObjectKind::Lock, &lock.id)).await?;
            removed.push(lock);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;

    fn memory_store() -> Store {
        let configs: Vec<BackendConfig> = (0..2)
            .map(|i| BackendConfig {
                name: format!("m{i}"),
                scheme: "memory".into(),
                weight: 1.0,
                concurrency: 4,
                limits: Default::default(),
                capacity: None,
                drain: false,
                options: Default::default(),
            })
            .collect();
        Store::open(&configs).unwrap()
    }

    #[tokio::test]
    async fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let store = memory_store();
        let a = acquire(&store, "backup", false).await.unwrap();
        let b = acquire(&store, "restore", false).await.unwrap();
        let err = acquire(&store, "prune", true).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Locked);
        assert!(err.to_string().contains("locked by"), "{err}");
        assert_eq!(list(&store).await.unwrap().len(), 2, "the refused lock was taken back");
        a.release().await.unwrap();
        b.release().await.unwrap();
        let p = acquire(&store, "prune", true).await.unwrap();
        assert_eq!(acquire(&store, "backup", false).await.err().unwrap().kind(), ErrorKind::Locked);
        p.release().await.unwrap();
        assert!(list(&store).await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_cannot_refresh_is_told_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let config = BackendConfig {
            name: "f".into(),
            scheme: "fs".into(),
            weight: 1.0,
            concurrency: 4,
            limits: Default::default(),
            capacity: None,
            drain: false,
            options: [("root".to_string(), root.display().to_string())].into_iter().collect(),
        };
        let store = Store::open(&[config]).unwrap();
        let lost = Arc::new(AtomicBool::new(false));
        let lock = acquire_with(&store, "backup", false, lost.clone()).await.unwrap();
        // The backend goes away: every refresh fails from now on.
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::write(&root, b"not a directory").unwrap();
        tokio::time::sleep(REFRESH * 2).await;
        assert!(!lost.load(Ordering::Relaxed), "a few failed refreshes are tolerated");
        tokio::time::sleep(STALE).await;
        assert!(lost.load(Ordering::Relaxed) && lock.lost());
        lock.refresher.abort();
    }

    #[tokio::test]
    async fn locks_of_dead_local_processes_are_removed_by_the_next_lock() {
        let store = memory_store();
        let dead = |pid| LockRecord {
            exclusive: false,
            operation: "backup".into(),
            hostname: crate::machine::hostname(),
            pid,
            created_ns: crate::machine::now_ns(),
            refreshed_ns: crate::machine::now_ns(),
        };
        // pid_max on Linux is at most 2^22: these pids cannot be running.
        write(&store, &ObjectId([1; 32]), &dead(u32::MAX - 1)).await.unwrap();
        write(&store, &ObjectId([2; 32]), &dead(u32::MAX - 2)).await.unwrap();
        let elsewhere = LockRecord { hostname: "elsewhere".into(), ..dead(u32::MAX - 3) };
        write(&store, &ObjectId([3; 32]), &elsewhere).await.unwrap();
        let a = acquire(&store, "restore", false).await.unwrap();
        let left: Vec<ObjectId> = list(&store).await.unwrap().into_iter().map(|l| l.id).collect();
        assert_eq!(left.len(), 2, "ours and the other machine's: {left:?}");
        assert!(left.contains(&ObjectId([3; 32])) && left.contains(&a.id));
        a.release().await.unwrap();
    }

    #[tokio::test]
    async fn stale_locks_are_ignored_and_removable() {
        let store = memory_store();
        let old = LockRecord {
            exclusive: true,
            operation: "prune".into(),
            hostname: "elsewhere".into(),
            pid: 1,
            created_ns: 0,
            refreshed_ns: 0,
        };
        write(&store, &ObjectId([9; 32]), &old).await.unwrap();
        let a = acquire(&store, "backup", false).await.unwrap();
        a.release().await.unwrap();
        let removed = remove(&store, false).await.unwrap();
        assert_eq!(removed.len(), 1);
        assert!(list(&store).await.unwrap().is_empty());
    }
}
