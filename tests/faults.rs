//! Fault injection through the library: a backend that fails, stalls, corrupts or loses
//! objects while backups and restores run. In every case no snapshot is lost, restores are
//! byte-identical, `check` names the damage and `repair` heals it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_same_tree, fs_pool_toml, noise, text, walk_files};
use cuckoo::CheckOptions;
use cuckoo::RepairOptions;
use cuckoo::Scheme;
use cuckoo::backend::Fault;
use cuckoo::{BackupOptions, Config, InitOptions, NoPassphrase, NoProgress, Repository, RestoreOptions};

struct Pool {
    dir: tempfile::TempDir,
    config: Config,
}

async fn pool(n: usize, scheme: &str) -> Pool {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(&dir.path().join("pool.toml"), &fs_pool_toml(dir.path(), n)).unwrap();
    let options =
        InitOptions { encrypt: false, redundancy: Some(Scheme::parse(scheme).unwrap()), ..Default::default() };
    cuckoo::init(&config, &options, &NoPassphrase).await.unwrap();
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

/// Restore the latest snapshot into `target` and compare it with `src`, byte for byte.
async fn restore_latest_matches(repo: &Repository, src: &Path, target: &Path) {
    let (_, snapshot) = repo.find_snapshot("latest").unwrap();
    let options = RestoreOptions { target: target.to_path_buf(), path: None };
    let done = repo.restore(&snapshot, options, Arc::new(NoProgress)).await.unwrap();
    assert!(done.failed.is_empty(), "{:?}", done.failed);
    assert_same_tree(src, &target.join("src"));
}

async fn backup(repo: &Repository, src: &Path) {
    let options = BackupOptions { paths: vec![src.to_path_buf()], ..Default::default() };
    repo.backup(options, Arc::new(NoProgress)).await.unwrap();
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

/// A real WebDAV server (WsgiDAV, as in `.ci/servers.sh`) on a free loopback port.
struct Dav {
    child: std::process::Child,
    port: u16,
}

impl Dav {
    fn start(root: &Path, port: u16) -> Option<Dav> {
        let scripts = std::process::Command::new("python3")
            .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
            .output()
            .ok()?;
        let scripts = String::from_utf8_lossy(&scripts.stdout).trim().to_string();
        let program = [format!("{scripts}/wsgidav"), "wsgidav".to_string()]
            .into_iter()
            .find(|p| std::process::Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))?;
        std::fs::create_dir_all(root).unwrap();
        let child = std::process::Command::new(program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--root"])
            .arg(root)
            .args(["--auth", "anonymous", "-q"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "wsgidav did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Dav { child, port })
    }
}

impl Drop for Dav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_mid_backup_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(mut dav) = Dav::start(&dir.path().join("dav"), port) else {
        assert!(std::env::var("CUCKOO_TEST_REQUIRE_SERVERS").is_err(), "wsgidav is not installed");
        eprintln!("skipped: wsgidav is not installed (.ci/servers.sh install)");
        return;
    };
    // Two local directories and the WebDAV server, two copies; the server is slowed so the
    // backup is still running when it is killed.
    let mut body = fs_pool_toml(dir.path(), 2);
    body.push_str(&format!(
        "[[backend]]\nname = \"dav\"\nscheme = \"webdav\"\nendpoint = \"http://127.0.0.1:{}\"\nlimit_upload = \"4MiB\"\n",
        dav.port
    ));
    let config = Config::parse(&dir.path().join("pool.toml"), &body).unwrap();
    let options = InitOptions { encrypt: false, redundancy: Some(Scheme::Copies(2)), ..Default::default() };
    cuckoo::init(&config, &options, &NoPassphrase).await.unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..24 {
        std::fs::write(src.join(format!("f{i}")), noise(1 << 20, i)).unwrap();
    }
    let repo = Repository::open(config.clone(), &NoPassphrase, &NoProgress).await.unwrap();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = dav.child.kill();
        let _ = dav.child.wait();
        dav
    });
    backup(&repo, &src).await;
    let dav = killer.await.unwrap();
    assert!(dav.child.id() > 0);
    drop(repo);
    // The server stays down: the pool opens without it and everything restores.
    let repo = Repository::open(config.clone(), &NoPassphrase, &NoProgress).await.unwrap();
    assert_eq!(repo.unavailable().len(), 1, "{:?}", repo.unavailable());
    restore_latest_matches(&repo, &src, &dir.path().join("out")).await;
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
        repo.restore(&snapshot, RestoreOptions { target: target.clone(), path: None }, Arc::new(NoProgress)),
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
