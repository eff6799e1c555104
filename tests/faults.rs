//! Fault injection through the library: a backend that fails, stalls, corrupts or loses
//! objects while backups and restores run. In every case no snapshot is lost, restores are
//! byte-identical, `check` names the damage and `repair` heals it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_same_tree, backup_with as backup, fs_pool_toml, noise, restore_latest_matches, text, walk_files};
use cuckoo::CheckOptions;
use cuckoo::RepairOptions;
use cuckoo::backend::Fault;
use cuckoo::{BackupOptions, Config, InitOptions, NoPassphrase, NoProgress, Repository, RestoreOptions};

struct Pool {
    dir: tempfile::TempDir,
    config: Config,
}

async fn pool(n: usize, scheme: &str) -> Pool {
    let dir = tempfile::tempdir().unwrap();
    let config = common::init_library_pool(dir.path(), n, scheme).await;
    Pool { dir, config }
}

impl Pool {
    async fn open(&self) -> Repository {
        Repository::open(self.config.clone(), &NoPassphrase, &NoProgress).await.unwrap()
    }

    fn tree(&self) -> PathBuf {
        let src = self.dir.path().join("src");
        for i in 0..80 {
            let dir = src.join(format!("d{}", i % 5));
            std::fs::create_dir_all(&dir).unwrap();
            let data = if i % 4 == 0 { noise(400_000, i) } else { text(3_000 + i as usize * 11, i) };
            std::fs::write(dir.join(format!("f{i}")), data).unwrap();
        }
        std::fs::write(src.join("big"), noise(5 << 20, 99)).unwrap();
        src
    }

    async fn restore_matches(&self, repo: &Repository, src: &Path, name: &str) {
        restore_latest_matches(repo, src, &self.dir.path().join(name)).await;
    }
}

async fn check(repo: &Repository) -> cuckoo::CheckReport {
    repo.check(CheckOptions { read_data: Some(1.0) }, &NoProgress).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_mid_backup_loses_nothing_and_rebalance_restores_placement() {
    let pool = pool(3, "copies=2").await;
    let src = pool.tree();
    let repo = pool.open().await;
    repo.backends()[1].faults().set(Fault::Fail);
    backup(&repo, &src).await;
    assert!(repo.backends()[1].faults().hits() > 0);
    repo.backends()[1].faults().clear();
    drop(repo);
    // Every object went to the two healthy backends: two copies each, none on b1.
    let repo = pool.open().await;
    let report = check(&repo).await;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    pool.restore_matches(&repo, &src, "out-1").await;
    let moved = repo.repair(RepairOptions { rebalance: true, ..Default::default() }, &NoProgress).await.unwrap();
    assert!(moved.moved > 0 && moved.unrecoverable.is_empty(), "{moved:?}");
    assert!(repo.pieces_on(1).await.unwrap() > 0, "b1 got its share back");
    pool.restore_matches(&repo, &src, "out-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_backend_costs_a_few_timeouts_not_one_per_object() {
    let pool = pool(3, "copies=2").await;
    let src = pool.tree();
    backup(&pool.open().await, &src).await;
    let repo = pool.open().await;
    let stalled = &repo.backends()[2];
    stalled.faults().set_stall(Duration::from_millis(1500));
    stalled.faults().set(Fault::Stall);
    pool.restore_matches(&repo, &src, "out").await;
    let objects = repo.stats().unwrap().objects;
    let hits = stalled.faults().hits();
    // The first requests wait for the timeout; after that the backend is marked down and
    // asked only when nothing else has an object.
    assert!(hits < objects / 2, "{hits} requests to a stalled backend for {objects} objects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupting_and_losing_backends_are_read_around_named_and_healed() {
    let pool = pool(5, "erasure=3+2").await;
    let src = pool.tree();
    backup(&pool.open().await, &src).await;
    let repo = pool.open().await;
    repo.backends()[0].faults().set(Fault::Corrupt);
    repo.backends()[3].faults().set(Fault::Lose);
    pool.restore_matches(&repo, &src, "out-1").await;
    let report = check(&repo).await;
    let corrupt = &report.backends["b0"];
    assert!(corrupt.corrupt > 0, "{:?}", report.backends);
    assert!(report.backends["b3"].missing > 0, "{:?}", report.backends);
    assert!(report.findings.iter().any(|f| f.backend.as_deref() == Some("b0") && f.problem.contains("checksum")));
    // A repair while b0 still damages what it sends: its stored shards look corrupt, are
    // rewritten in place, and none is lost.
    let before = repo.pieces_on(0).await.unwrap();
    let churn = repo.repair(RepairOptions { read_data: true, ..Default::default() }, &NoProgress).await.unwrap();
    assert!(churn.unrecoverable.is_empty(), "{churn:?}");
    assert_eq!(repo.pieces_on(0).await.unwrap(), before, "b0 keeps a shard of every object it had");
    // The provider stops corrupting but b3's objects stay lost: repair rewrites both.
    repo.backends()[0].faults().clear();
    drop(repo);
    for entry in walk_files(&pool.dir.path().join("backend-3/data")) {
        std::fs::remove_file(entry).unwrap();
    }
    let repo = pool.open().await;
    let healed = repo.repair(RepairOptions { read_data: true, ..Default::default() }, &NoProgress).await.unwrap();
    assert!(healed.pieces_written > 0 && healed.unrecoverable.is_empty(), "{healed:?}");
    let report = check(&repo).await;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    pool.restore_matches(&repo, &src, "out-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_too_many_backends_down_backups_fail_cleanly_and_nothing_is_lost() {
    let pool = pool(3, "copies=2").await;
    let src = pool.tree();
    let repo = pool.open().await;
    backup(&repo, &src).await;
    for i in [0, 1] {
        repo.backends()[i].faults().set(Fault::Fail);
    }
    let mtime = std::fs::metadata(&src).unwrap().modified().unwrap();
    std::fs::write(src.join("new"), b"more").unwrap();
    let options = BackupOptions { paths: vec![src.clone()], ..Default::default() };
    let err = repo.backup(options, Arc::new(NoProgress)).await.unwrap_err();
    assert!(err.to_string().contains("b0") || err.to_string().contains("b1"), "{err}");
    for i in [0, 1] {
        repo.backends()[i].faults().clear();
    }
    drop(repo);
    let repo = pool.open().await;
    assert_eq!(repo.snapshots().unwrap().len(), 1, "the failed backup left no snapshot");
    std::fs::remove_file(src.join("new")).unwrap();
    std::fs::File::open(&src).unwrap().set_modified(mtime).unwrap();
    pool.restore_matches(&repo, &src, "out").await;
}

/// The pool of `pool`, with backend `b{n}` added (a new directory) and adopted.
async fn with_new_backend(pool: &Pool, n: usize) -> Config {
    let text = fs_pool_toml(pool.dir.path(), n + 1);
    let config = Config::parse(&pool.dir.path().join("pool.toml"), &text).unwrap();
    cuckoo::init(&config, &InitOptions { encrypt: false, ..Default::default() }, &NoPassphrase).await.unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_run_correctly_during_a_rebalance_and_an_interrupted_rebalance_resumes() {
    let pool = pool(4, "copies=2").await;
    let src = pool.tree();
    backup(&pool.open().await, &src).await;
    let config = with_new_backend(&pool, 4).await;
    let repo = Repository::open(config.clone(), &NoPassphrase, &NoProgress).await.unwrap();

    // Stop the first rebalance after its first objects (as Ctrl-C would); what it did must
    // leave everything readable.
    repo.interrupt_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    let first = repo.repair(RepairOptions { rebalance: true, ..Default::default() }, &NoProgress).await;
    assert_eq!(first.unwrap_err().kind(), cuckoo::ErrorKind::Interrupted);
    let partial = repo.pieces_on(4).await.unwrap();
    drop(repo);
    let repo = Repository::open(config.clone(), &NoPassphrase, &NoProgress).await.unwrap();
    pool.restore_matches(&repo, &src, "out-after-stop").await;

    // The rest of the rebalance and a restore at the same time, through the same catalogue
    // whose records the rebalance is changing.
    let target = pool.dir.path().join("out-during");
    let (_, snapshot) = repo.find_snapshot("latest").unwrap();
    let (moved, restored) = tokio::join!(
        repo.repair(RepairOptions { rebalance: true, ..Default::default() }, &NoProgress),
        repo.restore(
            &snapshot,
            RestoreOptions { target: target.clone(), path: None, ..Default::default() },
            Arc::new(NoProgress)
        ),
    );
    let moved = moved.unwrap();
    assert!(restored.unwrap().failed.is_empty());
    assert_same_tree(&src, &target.join("src"));
    assert!(moved.pieces_written > 0, "the resumed rebalance had work left: {moved:?}");
    assert!(repo.pieces_on(4).await.unwrap() > partial, "the new backend got the rest of its share");
    let again = repo.repair(RepairOptions { rebalance: true, ..Default::default() }, &NoProgress).await.unwrap();
    assert_eq!(again.pieces_written, 0, "nothing left to move: {again:?}");
    let report = check(&repo).await;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    pool.restore_matches(&repo, &src, "out-after").await;
}
