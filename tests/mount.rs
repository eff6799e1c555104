//! What needs root: the FUSE mount with real tools (rsync in and verify after a remount, a
//! git workflow inside the mount, snapshots under /.snapshots, a snapshot of the drive
//! restored by `cuckoo restore`, pjdfstest's POSIX conformance count), and a backend on a
//! real full disk (a tmpfs).
//!
//! A test the machine cannot run (no root, no /dev/fuse, a tool missing) is reported as
//! ignored, the reason in its name, unless `CUCKOO_TEST_REQUIRE_FUSE=1` (CI sets it), which
//! makes it fail instead. (`harness = false`: `main` lists the tests.)

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, assert_same_tree, noise, run_ok, text};

/// Why the FUSE tests cannot run here, if they cannot.
fn no_fuse() -> Option<String> {
    let root = nix::unistd::geteuid().is_root();
    (!(root && Path::new("/dev/fuse").exists())).then(|| "needs root and /dev/fuse".to_string())
}

/// What of `tools` is not on the PATH.
fn no_tools(tools: &[&str]) -> Option<String> {
    let absent: Vec<&str> =
        tools.iter().copied().filter(|t| Command::new(t).arg("--version").output().is_err()).collect();
    (!absent.is_empty()).then(|| format!("needs {}", absent.join(" and ")))
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let require = "CUCKOO_TEST_REQUIRE_FUSE";
    let trials = vec![
        common::trial(
            "rsync_git_snapshots_and_restore_through_the_mount",
            no_fuse().or_else(|| no_tools(&["rsync", "git"])),
            require,
            rsync_git_snapshots_and_restore_through_the_mount,
        ),
        common::trial(
            "backups_listings_and_restores_run_beside_a_writing_mount",
            no_fuse(),
            require,
            backups_listings_and_restores_run_beside_a_writing_mount,
        ),
        common::trial(
            "pjdfstest_posix_conformance",
            no_fuse()
                .or_else(|| find_pjdfstest().is_none().then(|| "needs pjdfstest (cargo install pjdfstest)".into())),
            require,
            pjdfstest_posix_conformance,
        ),
        common::trial(
            "one_file_system_keeps_mount_points_empty",
            (!nix::unistd::geteuid().is_root()).then(|| "needs root to mount a tmpfs".to_string()),
            require,
            one_file_system_keeps_mount_points_empty,
        ),
        common::trial(
            "a_backend_whose_disk_fills_up_is_skipped_not_failed",
            (!nix::unistd::geteuid().is_root()).then(|| "needs root to mount a tmpfs".to_string()),
            require,
            a_backend_whose_disk_fills_up_is_skipped_not_failed,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn is_mounted(dir: &Path) -> bool {
    let want = std::fs::canonicalize(dir).unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m) == want))
}

/// A running `cuckoo mount`.
struct Mounted {
    child: Child,
    dir: PathBuf,
}

impl Mounted {
    fn start(env: &Env, dir: &Path) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        let child = env
            .command(&["mount", dir.to_str().unwrap(), "--commit-interval", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut m = Mounted { child, dir: dir.to_path_buf() };
        let start = Instant::now();
        while !is_mounted(dir) {
            if let Some(status) = m.child.try_wait().unwrap() {
                panic!("cuckoo mount exited: {status}");
            }
            assert!(start.elapsed() < Duration::from_secs(30), "mount did not appear");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    /// Unmount from outside, as `umount` or `fusermount3 -u` do; cuckoo must then
    /// commit and exit cleanly.
    fn umount(mut self) {
        run_ok(Command::new("umount").arg(&self.dir));
        let status = self.child.wait().unwrap();
        assert!(status.success(), "cuckoo mount exited with {status}");
    }

    /// Stop with Ctrl-C (SIGINT): cuckoo unmounts, commits and exits cleanly.
    fn interrupt(mut self) {
        run_ok(Command::new("kill").args(["-INT", &self.child.id().to_string()]));
        let status = self.child.wait().unwrap();
        assert!(status.success(), "cuckoo mount exited with {status}");
        assert!(!is_mounted(&self.dir));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The drive mounted and written to all along, while backups, listings, a restore and a
/// check run beside it; then the mount is killed (`kill -9`) mid-backup and the backup,
/// served by it until then, takes the catalogue over and finishes.
fn backups_listings_and_restores_run_beside_a_writing_mount() {
    let env = Env::new();
    let mnt = env.path("mnt");
    let m = Mounted::start(&env, &mnt);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, dir) = (stop.clone(), mnt.join("written"));
        std::thread::spawn(move || {
            std::fs::create_dir(&dir).unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::fs::write(dir.join(format!("f{n}")), text(20_000, n)).unwrap();
                n += 1;
            }
            n
        })
    };
    // The drive itself has one writer per machine: a second mount, or a snapshot of the
    // drive, would move its head under the mount.
    let second = env.path("mnt2");
    std::fs::create_dir(&second).unwrap();
    for args in [vec!["mount", second.to_str().unwrap()], vec!["snapshot"]] {
        let out = env.run(&args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && said.contains("the drive is open in another cuckoo process"), "{said}");
    }
    assert!(!is_mounted(&second));
    let src = env.path("src");
    source_tree(&src);
    let done = env.json(&["backup", src.to_str().unwrap()]);
    let id = done["id"].as_str().unwrap();
    env.ok(&["snapshots"]);
    assert!(env.ok(&["ls", id]).contains("big.bin"));
    env.ok(&["restore", id, "--target", env.path("out").to_str().unwrap()]);
    assert_same_tree(&src, &env.path("out/src"));
    let cat = env.command(&["cat", &format!("{id}:src/empty")]).output().unwrap();
    assert!(cat.status.success(), "{}", String::from_utf8_lossy(&cat.stderr));
    env.ok(&["stats"]);
    env.ok(&["diff", id, id]);
    let check = env.ok(&["check"]);
    assert!(check.contains("no problems"), "{check}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > 10, "the mount was written to all along ({written} files)");
    for i in (0..written).step_by(37) {
        assert_eq!(std::fs::read(mnt.join(format!("written/f{i}"))).unwrap(), text(20_000, i));
    }

    // The mount holds the catalogue (it opened it first): kill it under a backup, slowed
    // (the mount read the config before the limit was added) so that it is mid-way.
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, config.replace("scheme = \"fs\"\n", "scheme = \"fs\"\nlimit_upload = \"3MiB\"\n"))
        .unwrap();
    let big = env.path("big");
    std::fs::create_dir(&big).unwrap();
    std::fs::write(big.join("data"), noise(16 << 20, 7)).unwrap();
    let mut backup = env
        .command(&["backup", big.to_str().unwrap(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(backup.try_wait().unwrap().is_none(), "the backup is still running when the mount is killed");
    let mut m = m;
    m.child.kill().unwrap();
    let _ = m.child.wait();
    let out = backup.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(m);
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    env.ok(&["restore", done["id"].as_str().unwrap(), "--target", env.path("out-big").to_str().unwrap()]);
    assert_same_tree(&big, &env.path("out-big/big"));
    let check = env.ok(&["check"]);
    assert!(check.contains("no problems"), "{check}");
}

/// `--one-file-system` (`-x`) keeps a directory where another file system is mounted, empty,
/// as restic does, so that a restore recreates the mount point.
fn one_file_system_keeps_mount_points_empty() {
    let env = Env::new();
    let src = env.path("src");
    let inner = src.join("mnt/other");
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::write(src.join("mnt/here"), b"on the same file system").unwrap();
    run_ok(Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&inner));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(inner.clone());
    std::fs::write(inner.join("elsewhere"), b"on the tmpfs").unwrap();
    let done = env.json(&["backup", src.to_str().unwrap(), "-x"]);
    let listing = env.ok(&["ls", done["id"].as_str().unwrap()]);
    assert!(listing.contains("src/mnt/here") && listing.contains("src/mnt/other"), "{listing}");
    assert!(!listing.contains("elsewhere"), "{listing}");
    assert_eq!(done["excluded"][0]["rule"], "--one-file-system");
    assert_eq!(done["excluded"][0]["entries"], 1);
    let without = env.json(&["backup", src.to_str().unwrap()]);
    assert!(env.ok(&["ls", without["id"].as_str().unwrap()]).contains("src/mnt/other/elsewhere"));
}

/// A source tree with what rsync and tar meet in practice.
fn source_tree(root: &Path) {
    for i in 0..300u64 {
        let dir = root.join(format!("d{}/sub{}", i % 7, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let data = if i % 10 == 0 { noise(200_000 + i as usize, i) } else { text(500 + i as usize * 37, i) };
        std::fs::write(dir.join(format!("file-{i}.txt")), data).unwrap();
    }
    std::fs::write(root.join("big.bin"), noise(12 << 20, 1)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("ünïcödé 日本 ✓"), b"names").unwrap();
    std::fs::write(root.join("x".repeat(255)), b"long name").unwrap();
    std::os::unix::fs::symlink("d0/sub0", root.join("link-to-dir")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    // One file with three names in different directories (rsync -H, tar and cp -a keep them).
    std::fs::write(root.join("d0/linked"), text(3_000, 9)).unwrap();
    std::fs::hard_link(root.join("d0/linked"), root.join("d1/sub1/also-linked")).unwrap();
    std::fs::hard_link(root.join("d0/linked"), root.join("linked-at-top")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(root.join("d1"), std::fs::Permissions::from_mode(0o750)).unwrap();
}

fn rsync_git_snapshots_and_restore_through_the_mount() {
    let env = Env::new();
    let src = env.path("src");
    source_tree(&src);
    let mnt = env.path("mnt");

    // A directory with files is refused: they would be hidden while mounted.
    let out = env.run(&["mount", src.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("not empty"), "{said}");
    assert!(!is_mounted(&src));

    // rsync a tree in, hard links too; it verifies with checksums while still mounted.
    let m = Mounted::start(&env, &mnt);
    run_ok(Command::new("rsync").arg("-aH").arg(format!("{}/", src.display())).arg(mnt.join("tree")));
    let check = || {
        run_ok(
            Command::new("rsync")
                .args(["-aH", "--checksum", "--dry-run", "--itemize-changes"])
                .arg(format!("{}/", src.display()))
                .arg(mnt.join("tree")),
        )
    };
    assert_eq!(check(), "", "rsync sees differences right after copying");
    let ino = |p: &Path| std::fs::symlink_metadata(p).unwrap().ino();
    let tree = mnt.join("tree");
    assert_eq!(ino(&tree.join("d0/linked")), ino(&tree.join("d1/sub1/also-linked")));
    assert_eq!(std::fs::symlink_metadata(tree.join("linked-at-top")).unwrap().nlink(), 3);
    // tar makes hard links with link(2) as it extracts.
    let archive = env.path("src.tar");
    run_ok(Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&archive).arg("."));
    std::fs::create_dir(mnt.join("untar")).unwrap();
    run_ok(Command::new("tar").arg("-C").arg(mnt.join("untar")).arg("-xf").arg(&archive));
    assert_eq!(ino(&mnt.join("untar/d0/linked")), ino(&mnt.join("untar/linked-at-top")));
    assert!(std::fs::read(mnt.join("untar/big.bin")).unwrap() == std::fs::read(src.join("big.bin")).unwrap());
    // And a real tree, where the machine has one: Debian's package docs (symlinks,
    // compressed files, thousands of small files).
    let real = Path::new("/usr/share/doc");
    let real_check = || {
        run_ok(
            Command::new("rsync")
                .args(["-a", "--checksum", "--dry-run", "--itemize-changes"])
                .arg(format!("{}/", real.display()))
                .arg(mnt.join("doc")),
        )
    };
    if real.is_dir() {
        run_ok(Command::new("rsync").arg("-a").arg(format!("{}/", real.display())).arg(mnt.join("doc")));
        assert_eq!(real_check(), "", "rsync sees differences in the copy of {}", real.display());
    }
    assert!(std::fs::read_dir(mnt.join(".snapshots")).is_ok(), "the snapshot directory is reachable");
    assert!(
        !std::fs::read_dir(&mnt).unwrap().any(|e| e.unwrap().file_name() == ".snapshots"),
        "and hidden from listings"
    );
    m.umount();

    // Mounted again: everything was committed.
    let m = Mounted::start(&env, &mnt);
    assert_eq!(check(), "", "rsync sees differences after a remount");
    if real.is_dir() {
        assert_eq!(real_check(), "", "rsync sees differences in {} after a remount", real.display());
    }

    // A git workflow inside the mount: clone, status, commit, fsck.
    let origin = env.path("origin");
    std::fs::create_dir_all(&origin).unwrap();
    let git = |dir: &Path, args: &[&str]| {
        run_ok(
            Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"])
                .args(args)
                .current_dir(dir),
        )
    };
    git(&origin, &["init", "-q"]);
    run_ok(Command::new("cp").arg("-r").arg(src.join("d0")).arg(&origin));
    git(&origin, &["add", "-A"]);
    git(&origin, &["commit", "-qm", "first"]);
    git(&mnt, &["clone", "-q", origin.to_str().unwrap(), "repo"]);
    let repo = mnt.join("repo");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    std::fs::write(repo.join("d0/new.txt"), b"added inside the mount\n").unwrap();
    std::fs::write(repo.join("d0/sub0/file-0.txt"), b"changed\n").unwrap();
    assert_eq!(git(&repo, &["status", "--porcelain"]).lines().count(), 2);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "second"]);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(git(&repo, &["log", "--oneline"]).lines().count(), 2);
    git(&repo, &["fsck", "--strict"]);
    m.interrupt();

    // A snapshot of the drive restores like any other.
    let snap = env.json(&["snapshot", "--tag", "after-git"]);
    let id = snap["id"].as_str().unwrap().to_string();
    let restored = env.path("restored");
    env.ok(&["restore", &id, "--target", restored.to_str().unwrap()]);
    let rsync_check = run_ok(
        Command::new("rsync")
            .args(["-aH", "--checksum", "--dry-run", "--itemize-changes"])
            .arg(format!("{}/", src.display()))
            .arg(restored.join("tree")),
    );
    assert_eq!(rsync_check, "", "the restored tree differs from the source");
    assert_eq!(git(&restored.join("repo"), &["log", "--oneline"]).lines().count(), 2);
    git(&restored.join("repo"), &["fsck", "--strict"]);

    // The restore holds exactly what the mount showed: names, bytes, modes, owners, link
    // targets and every mtime, directories included.
    let m = Mounted::start(&env, &mnt);
    assert_same_tree(&mnt.join("tree"), &restored.join("tree"));
    assert_same_tree(&mnt.join("repo"), &restored.join("repo"));

    // And the snapshot is visible read-only under /.snapshots/<id>/ while mounted.
    let view = mnt.join(".snapshots").join(&id);
    assert_eq!(std::fs::read(view.join("tree/big.bin")).unwrap(), std::fs::read(src.join("big.bin")).unwrap());
    let err = std::fs::write(view.join("tree/empty"), b"no").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS));
    let listed: Vec<String> = std::fs::read_dir(mnt.join(".snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed, [id], "only snapshots, not the drive's own head, are listed");
    m.umount();
    env.ok(&["check", "--read-data"]);
}

/// pjdfstest's POSIX suite against the mount: prints the counts and fails if any case
/// fails or fewer pass than when this test was written (docs/mount.md lists what is skipped).
fn pjdfstest_posix_conformance() {
    let pjdfstest = find_pjdfstest().expect("pjdfstest is installed");
    let env = Env::new();
    let mnt = env.path("mnt");
    let m = Mounted::start(&env, &mnt);
    let work = mnt.join("pjd");
    std::fs::create_dir(&work).unwrap();
    let config = env.path("pjdfstest.toml");
    // The features pjdfstest's own Linux ext4 CI enables, and ctime on rename, which the
    // drive does too.
    let features = "[features]\nposix_fallocate = {}\nutime_now = {}\nutimensat = {}\nrename_ctime = {}\n";
    let users = "[dummy_auth]\nentries = [[\"nobody\", \"nogroup\"], [\"daemon\", \"daemon\"]]\n";
    std::fs::write(&config, format!("{features}\n[settings]\nnaptime = 0.01\n\n{users}")).unwrap();
    let out = Command::new(pjdfstest).arg("-c").arg(&config).arg("-p").arg(&work).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let summary = text.lines().find(|l| l.starts_with("Summary:")).unwrap_or_else(|| panic!("no summary:\n{text}"));
    eprintln!("pjdfstest on the cuckoo mount: {summary}");
    let failed: Vec<&str> = text.lines().filter(|l| l.trim_end().ends_with("FAILED")).collect();
    eprintln!("failed:\n{}", failed.join("\n"));
    let count = |word: &str| -> u32 {
        summary
            .split(',')
            .find(|p| p.contains(word))
            .and_then(|p| p.split_whitespace().find_map(|w| w.parse().ok()))
            .unwrap()
    };
    assert!(count("passed") >= 382, "{summary}");
    assert!(failed.is_empty(), "every pjdfstest case passed when this test was written: {failed:?}");
    m.umount();
}

fn find_pjdfstest() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let candidates = home.into_iter().map(|h| h.join("bin/pjdfstest")).chain(
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).map(|d| d.join("pjdfstest")).collect::<Vec<_>>()),
    );
    candidates.into_iter().find(|p| p.is_file())
}

/// A real full disk: one backend's root is a 2 MiB tmpfs. ENOSPC marks it full, the pieces
/// it refused go to the others, and the backup, check and restore are unaffected.
fn a_backend_whose_disk_fills_up_is_skipped_not_failed() {
    let mut mounted = None;
    let env = Env::pool_with(3, "copies=2", |dir| {
        let root = dir.join("backend-0");
        std::fs::create_dir_all(&root).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&root)
            .status()
            .is_ok_and(|s| s.success());
        mounted = ok.then_some(root);
    });
    let root = mounted.expect("a 2 MiB tmpfs mounted (as root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(root);
    let src = env.mixed_tree(90, 2);
    let run = env.run(&["backup", src.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{said}");
    assert!(!said.contains("less redundancy"), "every object still got two copies: {said}");
    let check = env.json(&["check", "--read-data"]);
    assert_eq!(check["findings"].as_array().unwrap().len(), 0, "{check}");
    env.restore_matches("latest", &src, "out");
}
