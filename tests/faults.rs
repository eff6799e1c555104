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

/// The troubles `repo` recorded at backend `name`.
fn troubles_at(repo: &Repository, name: &str) -> Vec<cuckoo::BackendTrouble> {
    repo.backend_troubles().into_iter().filter(|t| t.backend == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_read_only_backend_is_named_with_its_reason_not_passed_over_in_silence() {
    let pool = pool(3, "copies=2").await;
    let src = pool.tree();
    let repo = pool.open().await;
    repo.backends()[1].faults().set(Fault::ReadOnly);
    backup(&repo, &src).await;
    // The backup succeeded around b1 (every object has two copies elsewhere), and says so.
    let seen = troubles_at(&repo, "b1");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].incident.trouble, cuckoo::Trouble::Refused);
    assert!(!seen[0].incident.trouble.retry_helps());
    let said = seen[0].to_string();
    assert!(said.contains("'b1'") && said.contains("read-only") && said.contains("will not help"), "{said}");
    assert!(troubles_at(&repo, "b0").is_empty() && troubles_at(&repo, "b2").is_empty());
    pool.restore_matches(&repo, &src, "out-1").await;
    // Putting the pieces back in their places cannot finish while b1 refuses: repair names
    // b1 and why, where it used to say only "a backend failed: run it again".
    let report = repo.repair(RepairOptions { rebalance: true, ..Default::default() }, &NoProgress).await.unwrap();
    assert!(report.incomplete > 0 && report.unrecoverable.is_empty(), "{report:?}");
    assert!(troubles_at(&repo, "b1")[0].incident.failures > seen[0].incident.failures);
    repo.backends()[1].faults().clear();
    drop(repo);
    let repo = pool.open().await;
    let report = repo.repair(RepairOptions { rebalance: true, ..Default::default() }, &NoProgress).await.unwrap();
    assert!(report.incomplete == 0 && report.moved > 0, "{report:?}");
    assert!(repo.backend_troubles().is_empty(), "{:?}", repo.backend_troubles());
    pool.restore_matches(&repo, &src, "out-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_full_backend_is_named_and_said_to_need_room_not_another_run() {
    let pool = pool(3, "copies=2").await;
    let src = pool.tree();
    let repo = pool.open().await;
    repo.backends()[2].faults().set(Fault::Full);
    backup(&repo, &src).await;
    let seen = troubles_at(&repo, "b2");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].incident.trouble, cuckoo::Trouble::Full);
    let said = seen[0].to_string();
    assert!(said.contains("'b2' is full") && said.contains("has room"), "{said}");
    let report = check(&repo).await;
    assert!(report.findings.is_empty(), "nothing is missing: {:?}", report.findings);
    pool.restore_matches(&repo, &src, "out").await;
}

/// Files under `dir` of backend `b{i}` in `pool`.
fn files_of(pool: &Pool, i: usize, dir: &str) -> usize {
    walk_files(&pool.dir.path().join(format!("backend-{i}/{dir}"))).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_forget_with_a_read_only_backend_stays_forgotten_and_repair_finishes_it() {
    let pool = pool(3, "copies=2").await;
    let src = pool.tree();
    let repo = pool.open().await;
    backup(&repo, &src).await;
    backup(&repo, &src).await;
    let all = repo.snapshots().unwrap();
    let (kept, gone) = (all[0].0, all[1].0);
    repo.backends()[1].faults().set(Fault::ReadOnly);
    let left = repo.forget(&[gone]).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!((left[0].backend.as_str(), left[0].snapshots), ("b1", 1));
    assert!(left[0].why.contains("read-only"), "{}", left[0].why);
    assert_eq!(files_of(&pool, 1, "snapshots"), 2, "b1 kept its copy");
    // It used to come back at the next sync, on this machine and every other, and `repair`
    // then copied it to every backend again.
    let ids = |repo: &Repository| repo.snapshots().unwrap().into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    repo.sync(&NoProgress).await.unwrap();
    assert_eq!(ids(&repo), vec![kept]);
    let mut elsewhere = pool.config.clone();
    elsewhere.catalogue = Some(pool.dir.path().join("other-machine.redb"));
    let other = Repository::open(elsewhere, &NoPassphrase, &NoProgress).await.unwrap();
    other.sync(&NoProgress).await.unwrap();
    assert_eq!(ids(&other), vec![kept], "another machine does not see it either");
    let report = repo.repair(RepairOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((report.forgotten_deleted, report.forget_records_removed), (0, 0), "{report:?}");
    assert_eq!(files_of(&pool, 0, "snapshots") + files_of(&pool, 2, "snapshots"), 2, "not copied back");
    // Once b1 takes deletes, repair deletes the copy and then the record.
    repo.backends()[1].faults().clear();
    drop((repo, other));
    let repo = pool.open().await;
    let report = repo.repair(RepairOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((report.forgotten_deleted, report.forget_records_removed), (1, 1), "{report:?}");
    for i in 0..3 {
        assert_eq!((files_of(&pool, i, "snapshots"), files_of(&pool, i, "forgotten")), (1, 0), "b{i}");
    }
    assert_eq!(ids(&repo), vec![kept]);
    pool.restore_matches(&repo, &src, "out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_every_backend_took_leaves_no_record_and_one_none_took_forgets_nothing() {
    let pool = pool(2, "copies=1").await;
    let src = pool.tree();
    let repo = pool.open().await;
    backup(&repo, &src).await;
    backup(&repo, &src).await;
    let all = repo.snapshots().unwrap();
    assert!(repo.forget(&[all[1].0]).await.unwrap().is_empty());
    assert_eq!(files_of(&pool, 0, "forgotten") + files_of(&pool, 1, "forgotten"), 0);
    // With one copy no backend may miss the record: a read-only one stops the forget
    // before anything is deleted, and the error says so.
    repo.backends()[0].faults().set(Fault::ReadOnly);
    let err = repo.forget(&[all[0].0]).await.unwrap_err();
    assert!(err.to_string().contains("nothing was forgotten") && err.to_string().contains("b0"), "{err}");
    repo.backends()[0].faults().clear();
    drop(repo);
    let repo = pool.open().await;
    repo.sync(&NoProgress).await.unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), 1);
    assert_eq!(files_of(&pool, 0, "snapshots"), 1);
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
