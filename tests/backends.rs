//! One behaviour suite run against every backend kind: objects of 0 bytes to several chunk
//! sizes, overwrite, missing objects, listing thousands, concurrent writers, a full
//! backup/restore through a pool of that kind, and the filesystem conformance suite on the
//! live drive of a pool of every kind, and a real WebDAV server killed mid-backup. Real
//! servers come from the file named by `CUCKOO_TEST_BACKENDS` (written by
//! `.ci/servers.sh start`). A test whose server is missing is reported as ignored, with
//! the reason in its name; with `CUCKOO_TEST_REQUIRE_SERVERS=1` (as in `.ci/run`) it fails
//! instead. (`harness = false`: `main` lists the tests.)

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::fs_suite;
use cuckoo::backend::Backend;
use cuckoo::config::{BackendConfig, Config};
use cuckoo::fs::{self, Drive, DriveOptions, MemoryFs};
use cuckoo::{BackupOptions, InitOptions, KdfParams, NoProgress, Passphrase, Repository, RestoreOptions};
use futures::StreamExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()
}

/// The configured server of `kind`, isolated under a fresh root so runs never collide.
fn backend_config(kind: &str, scratch: &Path, tag: &str) -> Option<BackendConfig> {
    let mut cfg = match kind {
        "fs" | "memory" => BackendConfig {
            name: kind.into(),
            scheme: kind.into(),
            weight: 1.0,
            concurrency: 16,
            limits: Default::default(),
            capacity: None,
            drain: false,
            options: BTreeMap::new(),
        },
        _ => {
            let path = std::env::var_os("CUCKOO_TEST_BACKENDS")?;
            let config = Config::load(Path::new(&path)).unwrap();
            config.backends.into_iter().find(|b| b.name == kind)?
        }
    };
    let base = match kind {
        "fs" => scratch.join("fs").display().to_string(),
        _ => cfg.options.get("root").cloned().unwrap_or_else(|| "/".into()),
    };
    cfg.options.insert("root".into(), format!("{}/{tag}/", base.trim_end_matches('/')));
    cfg.name = format!("{kind}-{tag}");
    Some(cfg)
}

/// The kinds of server the behaviour suite runs against.
const KINDS: [&str; 7] = ["fs", "s3", "azblob", "gcs", "webdav", "sftp", "ftp"];

/// The kinds `DalFs` is tested on: not the GCS emulator, which stores no empty objects and has
/// no multipart upload (src/fs/dal.rs).
const PLAIN_FILE_KINDS: [&str; 6] = ["fs", "s3", "azblob", "webdav", "sftp", "ftp"];

/// Why tests needing servers of `kinds` cannot run here, if they cannot.
fn missing(kinds: &[&str]) -> Option<String> {
    let scratch = tempfile::tempdir().unwrap();
    let absent: Vec<&str> =
        kinds.iter().copied().filter(|k| backend_config(k, scratch.path(), "probe").is_none()).collect();
    (!absent.is_empty())
        .then(|| format!("no {} server (run `.ci/servers.sh start DIR`, set CUCKOO_TEST_BACKENDS)", absent.join(", ")))
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let need = |name: &str, kinds: &[&str], test: fn()| {
        common::trial(name, missing(kinds), "CUCKOO_TEST_REQUIRE_SERVERS", test)
    };
    let mut trials = vec![need("fs", &[], || suite("fs")), need("memory", &[], || suite("memory"))];
    for kind in &KINDS[1..] {
        let kind = *kind;
        trials.push(common::trial(kind, missing(&[kind]), "CUCKOO_TEST_REQUIRE_SERVERS", move || suite(kind)));
    }
    for kind in PLAIN_FILE_KINDS {
        let name = format!("plain_files_of_{kind}");
        trials.push(common::trial(&name, missing(&[kind]), "CUCKOO_TEST_REQUIRE_SERVERS", move || plain_files(kind)));
    }
    trials.extend([
        need("mixed_pool_of_every_kind", &KINDS, mixed_pool_of_every_kind),
        need(
            "the_live_drive_on_a_pool_of_every_kind_conforms",
            &KINDS,
            the_live_drive_on_a_pool_of_every_kind_conforms,
        ),
        need(
            "wrong_credentials_are_a_named_permission_error_without_the_secret",
            &["azblob"],
            wrong_credentials_are_a_named_permission_error_without_the_secret,
        ),
        common::trial(
            "a_webdav_server_stopped_mid_backup_loses_nothing",
            common::dav::wsgidav().is_none().then(|| "wsgidav is not installed (.ci/servers.sh install)".into()),
            "CUCKOO_TEST_REQUIRE_SERVERS",
            a_webdav_server_stopped_mid_backup_loses_nothing,
        ),
    ]);
    libtest_mimic::run(&args, trials).exit();
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}-{:x}", std::process::id(), rand::random::<u32>())
}

async fn objects(b: &Backend) {
    // OpenDAL's FTP writer never opens the upload for an empty body, so no 0-byte file
    // appears there; cuckoo never writes one (every object has a 12-byte header).
    let smallest = if b.scheme == "ftp" { 1 } else { 0 };
    for (i, size) in [0usize, 1, (1 << 20) + 7, 5 << 20].into_iter().enumerate().filter(|(_, s)| *s >= smallest) {
        let data = common::noise(size, i as u64);
        let path = format!("objects/o{i}");
        b.write(&path, data.clone()).await.unwrap();
        assert_eq!(b.len(&path).await.unwrap(), Some(size as u64), "{}: length of {size}-byte object", b.name);
        assert!(b.read(&path).await.unwrap().unwrap() == data, "{}: content of {size}-byte object", b.name);
    }
    // Overwrite replaces the whole object, also with a shorter one.
    b.write("objects/o3", b"short".to_vec()).await.unwrap();
    assert_eq!(b.read("objects/o3").await.unwrap().unwrap(), &b"short"[..]);
    // Missing objects are `None`, not errors; deleting one is fine.
    assert_eq!(b.read("objects/missing").await.unwrap(), None);
    assert_eq!(b.len("nowhere/missing").await.unwrap(), None);
    b.delete("objects/missing").await.unwrap();
    b.delete("objects/o2").await.unwrap();
    assert_eq!(b.read("objects/o2").await.unwrap(), None, "{}: deleted object still readable", b.name);
    assert_eq!(b.list("nowhere/").await.unwrap(), vec![], "{}: listing an absent prefix", b.name);
}

async fn listing_and_concurrency(b: &Backend) {
    const N: usize = 2000;
    futures::stream::iter(0..N)
        .map(|i| async move { b.write(&format!("many/{:02x}/{i}", i % 7), vec![b'x'; 1 + i % 100]).await.unwrap() })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    // A directory never made lists as empty, at once: every pool lists `locks/` before the
    // first lock exists (OpenDAL's FTP lister used to wait out its 60 s I/O timeout there).
    let missing = tokio::time::timeout(std::time::Duration::from_secs(30), b.list("never-made/")).await;
    assert!(missing.expect("listing a missing directory stalled").unwrap().is_empty(), "{}", b.name);
    let mut listed = b.list("many/").await.unwrap();
    listed.sort();
    assert_eq!(listed.len(), N, "{}: listed {} of {N} objects", b.name, listed.len());
    for (path, len) in &listed {
        let i: usize = path.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(*len, (1 + i % 100) as u64, "{}: listed length of {path}", b.name);
    }
    // Writers racing on one name. Cuckoo only ever does that with identical bytes (names are
    // content hashes), which must leave the object whole. Different bytes may mix on servers
    // that write in place (WsgiDAV does), so that is not asked of them.
    let object = common::noise(300_000, 50);
    futures::future::join_all((0..8).map(|_| b.write("race/one", object.clone()))).await;
    let got = b.read("race/one").await.unwrap().unwrap();
    assert!(got == object, "{}: identical concurrent writes left a damaged object", b.name);
}

/// A small real tree: this crate's sources, plus files of several chunks (enough objects
/// that every backend of a seven-backend pool receives some).
fn real_tree(scratch: &Path) -> PathBuf {
    let src = scratch.join("tree");
    let copy = std::process::Command::new("cp")
        .args(["-a", concat!(env!("CARGO_MANIFEST_DIR"), "/src")])
        .arg(&src)
        .status()
        .unwrap();
    assert!(copy.success());
    for i in 0..4 {
        std::fs::write(src.join(format!("several-chunks-{i}.bin")), common::noise(6 << 20, 7 + i)).unwrap();
    }
    std::os::unix::fs::symlink("lib.rs", src.join("link")).unwrap();
    src
}

async fn pool_round_trip(backends: Vec<BackendConfig>, scratch: &Path) {
    let names: Vec<String> = backends.iter().map(|b| b.name.clone()).collect();
    let config = Config {
        path: scratch.join("pool.toml"),
        catalogue: Some(scratch.join("catalogue.redb")),
        compression: 3,
        backends,
        limits: Default::default(),
        cache: cuckoo::CacheSettings { dir: Some(scratch.join("cache")), size: None },
    };
    let passphrase = Passphrase::new("pool passphrase");
    let fast = KdfParams { memory_kib: 8 * 1024, iterations: 1, parallelism: 1 };
    cuckoo::init(&config, &InitOptions { encrypt: true, kdf: fast, redundancy: None }, &passphrase).await.unwrap();
    let src = real_tree(scratch);
    let repo = Repository::open(config.clone(), &passphrase, &NoProgress).await.unwrap();
    let options = BackupOptions { paths: vec![src.clone()], ..Default::default() };
    let done = repo.backup(options, Arc::new(NoProgress)).await.unwrap();
    assert_eq!(done.snapshot.summary.skipped, 0);
    drop(repo);

    // Restore from the backends alone: no catalogue.
    std::fs::remove_file(scratch.join("catalogue.redb")).unwrap();
    let repo = Repository::open(config, &passphrase, &NoProgress).await.unwrap();
    let (_, snapshot) = repo.find_snapshot("latest").unwrap();
    let out = scratch.join("out");
    let options = RestoreOptions { target: out.clone(), path: None, ..Default::default() };
    repo.restore(&snapshot, options, Arc::new(NoProgress)).await.unwrap();
    common::assert_same_tree(&src, &out.join("tree"));
    let usage = repo.usage().unwrap();
    for (b, u) in &usage {
        assert!(u.objects > 0, "{}: pool {names:?} stored nothing on it", b.name);
    }
}

fn suite(kind: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let tag = unique("suite");
    let cfg = backend_config(kind, scratch.path(), &tag).expect("a configured server");
    let rt = runtime();
    rt.block_on(async {
        let b = Backend::open(&cfg).unwrap();
        objects(&b).await;
        listing_and_concurrency(&b).await;
    });
    if kind == "memory" {
        return; // each opened operator is a new, empty memory store: no pool across opens
    }
    let pool: Vec<BackendConfig> =
        ["a", "b"].iter().map(|t| backend_config(kind, scratch.path(), &unique(t)).unwrap()).collect();
    rt.block_on(pool_round_trip(pool, scratch.path()));
}

/// The service itself as a file system (`DalFs`): plain files, no pool.
fn plain_files(kind: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let cfg = backend_config(kind, scratch.path(), &unique("plain")).expect("a configured server");
    let rt = runtime();
    let fs = fs::DalFs::open(&cfg, rt.handle().clone()).unwrap();
    fs_suite::conformance(&fs);
}

/// Every kind in one pool: a real tree round-trips through all of them at once.
fn mixed_pool_of_every_kind() {
    let scratch = tempfile::tempdir().unwrap();
    let pool = every_kind(scratch.path(), "mixed");
    runtime().block_on(pool_round_trip(pool, scratch.path()));
}

/// One backend of every kind.
fn every_kind(scratch: &Path, tag: &str) -> Vec<BackendConfig> {
    let tag = unique(tag);
    KINDS.iter().map(|k| backend_config(k, scratch, &tag).expect("a configured server")).collect()
}

/// The filesystem conformance suite on the live drive of an encrypted, redundant pool of
/// every kind, then the drive read back from the backends alone.
fn the_live_drive_on_a_pool_of_every_kind_conforms() {
    let scratch = tempfile::tempdir().unwrap();
    let backends = every_kind(scratch.path(), "drive");
    let catalogue = scratch.path().join("catalogue.redb");
    let config = Config {
        path: scratch.path().join("pool.toml"),
        catalogue: Some(catalogue.clone()),
        compression: 3,
        backends,
        limits: Default::default(),
        cache: cuckoo::CacheSettings { dir: Some(scratch.path().join("cache")), size: None },
    };
    let passphrase = Passphrase::new("pool passphrase");
    let fast = KdfParams { memory_kib: 8 * 1024, iterations: 1, parallelism: 1 };
    let rt = runtime();
    let init = InitOptions { encrypt: true, kdf: fast, redundancy: None };
    rt.block_on(cuckoo::init(&config, &init, &passphrase)).unwrap();
    let open = || Arc::new(rt.block_on(Repository::open(config.clone(), &passphrase, &NoProgress)).unwrap());
    let repo = open();
    let drive = Drive::open(repo.clone(), rt.handle().clone(), DriveOptions::default()).unwrap();
    fs_suite::conformance(&drive);
    let before = MemoryFs::new();
    fs::copy_tree(&drive, Path::new("/"), &before, Path::new("/")).unwrap();
    drive.close().unwrap();
    drop(repo);

    std::fs::remove_file(&catalogue).unwrap();
    let repo = open();
    let drive = Drive::open(repo.clone(), rt.handle().clone(), DriveOptions::default()).unwrap();
    fs_suite::assert_same(&before, Path::new("/"), &drive, Path::new("/"));
    drive.close().unwrap();
}

/// A refused credential is a permission error that names the backend and never shows the
/// secret. Azurite is the server here that checks keys.
fn wrong_credentials_are_a_named_permission_error_without_the_secret() {
    let scratch = tempfile::tempdir().unwrap();
    let mut cfg = backend_config("azblob", scratch.path(), &unique("perm")).expect("a configured server");
    let wrong = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleQ==";
    cfg.options.insert("account_key".into(), wrong.into());
    let err = runtime().block_on(async { Backend::open(&cfg).unwrap().write("x", b"x".to_vec()).await.unwrap_err() });
    let text = format!("{err} {err:?}");
    assert_eq!(err.kind(), cuckoo::ErrorKind::PermissionDenied, "{text}");
    assert!(err.to_string().contains(&format!("backend '{}'", cfg.name)), "{text}");
    assert!(!text.contains(wrong), "the secret leaked: {text}");
}

/// A real WebDAV server killed in the middle of a backup: the backup completes on the
/// other backends, the pool opens without the server and everything restores.
fn a_webdav_server_stopped_mid_backup_loses_nothing() {
    runtime().block_on(webdav_server_stopped_mid_backup());
}

async fn webdav_server_stopped_mid_backup() {
    let dir = tempfile::tempdir().unwrap();
    let mut dav = common::dav::Dav::start(&dir.path().join("dav"));
    // Two local directories and the WebDAV server, two copies; the server is slowed so the
    // backup is still running when it is killed.
    let mut body = common::fs_pool_toml(dir.path(), 2);
    body.push_str(&format!(
        "[[backend]]\nname = \"dav\"\nscheme = \"webdav\"\nendpoint = \"http://127.0.0.1:{}\"\nlimit_upload = \"4MiB\"\n",
        dav.port
    ));
    let config = Config::parse(&dir.path().join("pool.toml"), &body).unwrap();
    let options = InitOptions { encrypt: false, redundancy: Some(cuckoo::Scheme::Copies(2)), ..Default::default() };
    cuckoo::init(&config, &options, &cuckoo::NoPassphrase).await.unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..24 {
        std::fs::write(src.join(format!("f{i}")), common::noise(1 << 20, i)).unwrap();
    }
    let repo = Repository::open(config.clone(), &cuckoo::NoPassphrase, &NoProgress).await.unwrap();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let _ = dav.child.kill();
        let _ = dav.child.wait();
        dav
    });
    common::backup_with(&repo, &src).await;
    let dav = killer.await.unwrap();
    assert!(dav.child.id() > 0);
    drop(repo);
    // The server stays down: the pool opens without it and everything restores.
    let repo = Repository::open(config.clone(), &cuckoo::NoPassphrase, &NoProgress).await.unwrap();
    assert_eq!(repo.unavailable().len(), 1, "{:?}", repo.unavailable());
    common::restore_latest_matches(&repo, &src, &dir.path().join("out")).await;
}
