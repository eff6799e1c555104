//! Commands run side by side on one machine: the first to open the catalogue holds it and
//! serves the others. Two backups at once, restores and listings during a backup, and a
//! `kill -9` of either side mid-backup, after which the other finishes and nothing is lost.
//! (The mount beside a backup is in `tests/mount.rs`: it needs FUSE.)
//!
//! Backends are slowed to a few MiB/s so that the commands overlap for seconds.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Env, assert_same_tree, noise, text};

/// A pool whose backends take uploads at `rate` each.
fn slow_pool(rate: &str) -> Env {
    let env = Env::new();
    let config = std::fs::read_to_string(&env.config).unwrap();
    let slowed = config.replace("scheme = \"fs\"\n", &format!("scheme = \"fs\"\nlimit_upload = \"{rate}\"\n"));
    std::fs::write(&env.config, slowed).unwrap();
    env
}

/// `name`: text files and `mib` MiB of incompressible data.
fn tree(env: &Env, name: &str, seed: u64, mib: usize) -> PathBuf {
    let root = env.path(name);
    for i in 0..40u64 {
        let dir = root.join(format!("d{}", i % 5));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("t{i}")), text(3_000 + i as usize * 11, seed + i)).unwrap();
    }
    std::fs::write(root.join("bulk.bin"), noise(mib << 20, seed)).unwrap();
    root
}

fn spawn_backup(env: &Env, src: &Path) -> Child {
    env.command(&["backup", src.to_str().unwrap(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for a backup and return its snapshot id.
fn finished(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backup failed: {}\n{stderr}", out.status);
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    done["id"].as_str().unwrap().to_string()
}

fn restored_matches(env: &Env, snapshot: &str, src: &Path, into: &str) {
    let target = env.path(into);
    env.ok(&["restore", snapshot, "--target", target.to_str().unwrap()]);
    assert_same_tree(src, &target.join(src.file_name().unwrap()));
}

/// Wait until `child` has opened the catalogue (its file exists) and is still running.
fn wait_until_running(env: &Env, child: &mut Child) {
    let start = Instant::now();
    while !env.path("catalogue.redb").exists() || start.elapsed() < Duration::from_millis(300) {
        assert!(child.try_wait().unwrap().is_none(), "the command ended before it could be overlapped");
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `Child::kill` is SIGKILL on Unix: no handler runs, nothing is released.
fn kill_9(child: &mut Child) {
    if let Some(status) = child.try_wait().unwrap() {
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        panic!("the command ended ({status}) before the kill: {stderr}");
    }
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn two_backups_at_once_both_land() {
    let env = slow_pool("2MiB");
    let (a, b) = (tree(&env, "tree-a", 1, 12), tree(&env, "tree-b", 2, 12));
    let mut first = spawn_backup(&env, &a);
    wait_until_running(&env, &mut first);
    let second = spawn_backup(&env, &b);
    let (ida, idb) = (finished(first), finished(second));
    restored_matches(&env, &ida, &a, "out-a");
    restored_matches(&env, &idb, &b, "out-b");
    let check = env.ok(&["check"]);
    assert!(check.contains("no problems"), "{check}");
}

#[test]
fn restore_and_listings_run_during_a_backup() {
    let env = Env::new();
    let a = tree(&env, "tree-a", 1, 4);
    let ida = env.json(&["backup", a.to_str().unwrap()])["id"].as_str().unwrap().to_string();
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, config.replace("scheme = \"fs\"\n", "scheme = \"fs\"\nlimit_upload = \"3MiB\"\n"))
        .unwrap();
    let b = tree(&env, "tree-b", 2, 24);
    let mut running = spawn_backup(&env, &b);
    wait_until_running(&env, &mut running);

    let listed = env.json(&["snapshots"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "the running backup has not committed: {listed}");
    assert!(env.ok(&["ls", &ida]).contains("bulk.bin"));
    restored_matches(&env, &ida, &a, "out-a");
    let cat = env.command(&["cat", &format!("{ida}:tree-a/d0/t0")]).output().unwrap();
    assert!(cat.status.success(), "{}", String::from_utf8_lossy(&cat.stderr));
    assert_eq!(cat.stdout, std::fs::read(a.join("d0/t0")).unwrap());
    env.ok(&["stats"]);
    env.ok(&["diff", &ida, &ida]);
    let check = env.ok(&["check"]);
    assert!(check.contains("no problems"), "{check}");
    assert!(running.try_wait().unwrap().is_none(), "the listings overlapped the backup");

    let idb = finished(running);
    restored_matches(&env, &idb, &b, "out-b");
}

/// Kill the process holding the catalogue while another backup is served by it: the other
/// takes the catalogue over and finishes, at several instants.
#[test]
fn kill_9_of_the_catalogues_holder_mid_backup_leaves_the_peer_to_finish() {
    let env = slow_pool("2MiB");
    let mut trees = Vec::new();
    for (round, delay) in [200u64, 900, 1800].into_iter().enumerate() {
        // New data each round, so that the killed backup has work left to do.
        let seed = 10 * round as u64;
        let (x, y) =
            (tree(&env, &format!("tree-x{round}"), seed, 16), tree(&env, &format!("tree-y{round}"), seed + 1, 10));
        let mut holder = spawn_backup(&env, &x);
        wait_until_running(&env, &mut holder);
        let peer = spawn_backup(&env, &y);
        std::thread::sleep(Duration::from_millis(delay));
        kill_9(&mut holder);
        let id = finished(peer);
        restored_matches(&env, &id, &y, &format!("out-y-{round}"));
        trees.push(x);
    }
    for (round, x) in trees.iter().enumerate() {
        let id = finished(spawn_backup(&env, x));
        restored_matches(&env, &id, x, &format!("out-x-{round}"));
    }
    let check = env.ok(&["check", "--read-data"]);
    assert!(check.contains("no problems"), "{check}");
}

/// Kill a peer mid-backup: the holder's backup is unharmed.
#[test]
fn kill_9_of_a_peer_mid_backup_leaves_the_holder_unharmed() {
    let env = slow_pool("2MiB");
    let (x, y) = (tree(&env, "tree-x", 1, 16), tree(&env, "tree-y", 2, 10));
    let mut holder = spawn_backup(&env, &x);
    wait_until_running(&env, &mut holder);
    for delay in [100u64, 600] {
        let mut peer = spawn_backup(&env, &y);
        std::thread::sleep(Duration::from_millis(delay));
        kill_9(&mut peer);
    }
    let id = finished(holder);
    restored_matches(&env, &id, &x, "out-x");
    let idy = finished(spawn_backup(&env, &y));
    restored_matches(&env, &idy, &y, "out-y");
    let check = env.ok(&["check"]);
    assert!(check.contains("no problems"), "{check}");
}
