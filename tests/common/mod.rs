//! Helpers shared by the integration tests: a pool of local directories, the `cuckoo`
//! binary run against it, and a strict comparison of two trees.
#![allow(dead_code)]

pub mod dav;
pub mod fs_suite;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The passphrase of every test pool.
pub const PASSPHRASE: &str = "test passphrase";

/// A temporary home for one test: XDG dirs, a pool config, scratch space.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Env {
    /// A pool of three `fs` backends with weights 1, 2 and 3, initialised and encrypted
    /// (the default) with the passphrase `PASSPHRASE`, cheaply derived.
    pub fn new() -> Env {
        Self::with_catalogue("catalogue.redb")
    }

    pub fn with_catalogue(name: &str) -> Env {
        Self::build(name, None)
    }

    /// Like `new`, with `--redundancy SCHEME` (else the default: two copies for three backends).
    pub fn with_redundancy(scheme: &str) -> Env {
        Self::build("catalogue.redb", Some(scheme))
    }

    /// A pool of `n` equal `fs` backends (`backend-0`…) initialised with `redundancy`;
    /// `prepare` runs on the scratch directory first (to mount something there, say).
    pub fn pool_with(n: usize, redundancy: &str, prepare: impl FnOnce(&Path)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let config = dir.path().join("pool.toml");
        std::fs::write(&config, fs_pool_toml(dir.path(), n)).unwrap();
        let env = Env { dir, config };
        let out = env.ok(&["init", "--kdf-memory", "8", "--kdf-iterations", "1", "--redundancy", redundancy]);
        assert!(out.contains(redundancy), "init says what it chose: {out}");
        env
    }

    /// Small text files in nested directories, a few multi-chunk files, incompressible ones.
    pub fn mixed_tree(&self, files: usize, big: usize) -> PathBuf {
        let src = self.path("src");
        for i in 0..files {
            let dir = src.join(format!("d{}/e{}", i % 7, i % 23));
            std::fs::create_dir_all(&dir).unwrap();
            let data = if i % 3 == 0 { noise(300_000 + i * 10, i as u64) } else { text(2_000 + i * 37, i as u64) };
            std::fs::write(dir.join(format!("f{i}.dat")), data).unwrap();
        }
        for i in 0..big {
            std::fs::write(src.join(format!("big{i}.bin")), noise(6 << 20, 1000 + i as u64)).unwrap();
        }
        src
    }

    /// Restore `snapshot` into `name` through the CLI and compare it with `src`.
    pub fn restore_matches(&self, snapshot: &str, src: &Path, name: &str) {
        let out = self.path(name);
        self.ok(&["restore", snapshot, "--target", out.to_str().unwrap()]);
        assert_same_tree(src, &out.join("src"));
    }

    fn build(name: &str, redundancy: Option<&str>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pool.toml");
        let mut text = format!("catalogue = {:?}\n", dir.path().join(name));
        for (i, w) in [1, 2, 3].iter().enumerate() {
            let root = dir.path().join(format!("backend-{i}"));
            text.push_str(&format!("[[backend]]\nname = \"b{i}\"\nscheme = \"fs\"\nweight = {w}\nroot = {root:?}\n"));
        }
        std::fs::write(&config, text).unwrap();
        let env = Env { dir, config };
        let mut args = vec!["init", "--kdf-memory", "8", "--kdf-iterations", "1"];
        if let Some(r) = redundancy {
            args.extend(["--redundancy", r]);
        }
        env.ok(&args);
        env
    }

    /// Another machine's view of the same pool: same backends, its own catalogue and cache.
    pub fn second_machine(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let other = self.path("machine-b.toml");
        let cat = format!("catalogue = {:?}\ncache_dir = {:?}", self.path("catalogue-b.redb"), self.path("cache-b"));
        let text: String = text.lines().filter(|l| !l.starts_with("cache_dir")).map(|l| format!("{l}\n")).collect();
        let first_line = text.lines().next().unwrap();
        std::fs::write(&other, text.replacen(first_line, &cat, 1)).unwrap();
        other
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cuckoo"));
        c.args(args)
            .env("CUCKOO_CONFIG", &self.config)
            .env("XDG_CONFIG_HOME", self.path("xdg-config"))
            .env("XDG_DATA_HOME", self.path("xdg-data"))
            .env("XDG_CACHE_HOME", self.path("xdg-cache"))
            .env("CUCKOO_PASSWORD", PASSPHRASE);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.command(args))
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(self.ok(&a).trim()).unwrap()
    }

    /// Data objects stored on each backend.
    pub fn objects_per_backend(&self) -> Vec<usize> {
        (0..3).map(|i| count_files(&self.path(&format!("backend-{i}/data")))).collect()
    }
}

/// Run any command and require success; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.map(|e| {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() { count_files(&e.path()) } else { 1 }
    })
    .sum()
}

/// Bytes of every file below `dir` (0 if it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.map(|e| {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() { dir_bytes(&e.path()) } else { e.metadata().unwrap().len() }
    })
    .sum()
}

/// An unencrypted pool of `n` equal `fs` backends under `dir`, created through the library
/// with `scheme`; returns its config.
pub async fn init_library_pool(dir: &Path, n: usize, scheme: &str) -> cuckoo::Config {
    let config = cuckoo::Config::parse(&dir.join("pool.toml"), &fs_pool_toml(dir, n)).unwrap();
    let options = cuckoo::InitOptions {
        encrypt: false,
        redundancy: Some(cuckoo::Scheme::parse(scheme).unwrap()),
        ..Default::default()
    };
    cuckoo::init(&config, &options, &cuckoo::NoPassphrase).await.unwrap();
    config
}

/// Restore the latest snapshot through the library into `target` and compare it with
/// `src`, byte for byte.
pub async fn restore_latest_matches(repo: &cuckoo::Repository, src: &Path, target: &Path) {
    let (_, snapshot) = repo.find_snapshot("latest").unwrap();
    let options = cuckoo::RestoreOptions { target: target.to_path_buf(), path: None, ..Default::default() };
    let done = repo.restore(&snapshot, options, std::sync::Arc::new(cuckoo::NoProgress)).await.unwrap();
    assert!(done.failed.is_empty(), "{:?}", done.failed);
    assert_same_tree(src, &target.join("src"));
}

/// Back `src` up through the library.
pub async fn backup_with(repo: &cuckoo::Repository, src: &Path) {
    let options = cuckoo::BackupOptions { paths: vec![src.to_path_buf()], ..Default::default() };
    repo.backup(options, std::sync::Arc::new(cuckoo::NoProgress)).await.unwrap();
}

/// A test that needs something a machine may lack (a server, root, a tool): `missing` says
/// what is absent, if anything. Then it is reported as *ignored* (the harness counts it,
/// its name says why), unless `require` names an environment variable set to 1 (CI sets
/// them), which makes it fail: in CI nothing is skipped.
pub fn trial(
    name: &str,
    missing: Option<String>,
    require: &str,
    test: impl FnOnce() + Send + 'static,
) -> libtest_mimic::Trial {
    let required = std::env::var(require).is_ok_and(|v| v == "1");
    let require = require.to_string();
    match missing {
        None => libtest_mimic::Trial::test(name, move || {
            test();
            Ok(())
        }),
        Some(why) if required => libtest_mimic::Trial::test(name, move || {
            Err(format!("cannot run: {why}, and {require}=1 requires every test to run").into())
        }),
        Some(why) => {
            libtest_mimic::Trial::test(name, || Ok(())).with_kind(format!("skipped: {why}")).with_ignored_flag(true)
        }
    }
}

/// Every file below `dir`, sorted; empty if `dir` does not exist.
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk_files(&p)) } else { out.push(p) }
    }
    out.sort();
    out
}

/// Config text for a pool of `n` equal `fs` backends `b0`… rooted at `dir/backend-N`, with
/// its catalogue and local cache in `dir`.
pub fn fs_pool_toml(dir: &Path, n: usize) -> String {
    let mut text = format!("catalogue = {:?}\ncache_dir = {:?}\n", dir.join("catalogue.redb"), dir.join("cache"));
    for i in 0..n {
        let root = dir.join(format!("backend-{i}"));
        text.push_str(&format!("[[backend]]\nname = \"b{i}\"\nscheme = \"fs\"\nroot = {root:?}\n"));
    }
    text
}

/// Deterministic pseudo-random bytes (incompressible).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&counter.to_le_bytes());
        out.extend_from_slice(h.finalize().as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// Text-like, compressible bytes.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = ["alpha ", "beta ", "gamma ", "delta\n", "storage ", "chunk ", "cuckoo ", "pool "];
    let n = noise(len / 4 + 8, seed);
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(words[(n[i % n.len()] % 8) as usize].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// Compare two trees entry by entry: kind, content, mode, mtime (ns), link targets,
/// owner (as root), and that hard links stay hard links.
pub fn assert_same_tree(a: &Path, b: &Path) {
    compare(a, b, &mut HashMap::new(), true);
}

/// Like `assert_same_tree` for a part of a tree restored alone: a hard link whose other
/// names lie outside the part is restored as a plain file.
pub fn assert_same_subtree(a: &Path, b: &Path) {
    compare(a, b, &mut HashMap::new(), false);
}

fn compare(a: &Path, b: &Path, links: &mut HashMap<u64, u64>, whole: bool) {
    let (ma, mb) = (
        std::fs::symlink_metadata(a).unwrap(),
        std::fs::symlink_metadata(b).unwrap_or_else(|e| panic!("{}: {e}", b.display())),
    );
    let (ta, tb) = (ma.file_type(), mb.file_type());
    let what = a.display();
    assert_eq!(
        (ta.is_dir(), ta.is_file(), ta.is_symlink(), ta.is_fifo(), ta.is_socket()),
        (tb.is_dir(), tb.is_file(), tb.is_symlink(), tb.is_fifo(), tb.is_socket()),
        "type of {what}"
    );
    if !ta.is_symlink() {
        assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "mode of {what}");
    }
    assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()), "mtime of {what}");
    if nix::unistd::geteuid().is_root() {
        assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "owner of {what}");
    }
    if ta.is_symlink() {
        assert_eq!(std::fs::read_link(a).unwrap(), std::fs::read_link(b).unwrap(), "target of {what}");
    } else if ta.is_file() {
        assert_eq!(ma.len(), mb.len(), "size of {what}");
        assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap(), "content of {what}");
        if whole && ma.nlink() > 1 {
            let prev = links.insert(ma.ino(), mb.ino());
            assert!(prev.is_none() || prev == Some(mb.ino()), "hard link of {what} broken");
            assert_eq!(ma.nlink(), mb.nlink(), "link count of {what}");
        }
    } else if ta.is_dir() {
        let names = |p: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name()).collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        assert_eq!(na, nb, "entries of {what}");
        for n in na {
            compare(&a.join(&n), &b.join(&n), links, whole);
        }
    }
}
