//! Redundancy through the CLI, on pools of local directories: losing backends outright,
//! repairing onto what is left and what is added, rebalancing after a backend joins, and
//! draining one out. Every restore is compared byte for byte with the source.

mod common;

use std::path::{Path, PathBuf};

use common::{Env, PASSPHRASE, assert_same_tree, fs_pool_toml, noise, text, walk_files};

/// A pool of `n` equal `fs` backends (`backend-0`…), initialised with `redundancy`.
fn pool(n: usize, redundancy: &str) -> Env {
    pool_with(n, redundancy, |_| {})
}

/// Like `pool`, running `prepare` on the scratch directory before the pool is created.
fn pool_with(n: usize, redundancy: &str, prepare: impl FnOnce(&Path)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let config = dir.path().join("pool.toml");
    std::fs::write(&config, fs_pool_toml(dir.path(), n)).unwrap();
    let env = Env { dir, config };
    let out = env.ok(&["init", "--kdf-memory", "8", "--kdf-iterations", "1", "--redundancy", redundancy]);
    assert!(out.contains(redundancy), "init says what it chose: {out}");
    env
}

/// Small text files in nested directories, a few multi-chunk files, and incompressible ones.
fn tree(env: &Env, files: usize, big: usize) -> PathBuf {
    let src = env.path("src");
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

fn restore_matches(env: &Env, snapshot: &str, src: &Path, name: &str) {
    let out = env.path(name);
    env.ok(&["restore", snapshot, "--target", out.to_str().unwrap()]);
    assert_same_tree(src, &out.join("src"));
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .map(|e| e.unwrap())
        .map(|e| if e.file_type().unwrap().is_dir() { dir_bytes(&e.path()) } else { e.metadata().unwrap().len() })
        .sum()
}

fn data_bytes(env: &Env, i: usize) -> u64 {
    let b = env.path(&format!("backend-{i}"));
    dir_bytes(&b.join("data")) + dir_bytes(&b.join("tree"))
}

#[test]
fn erasure_3_2_survives_two_lost_backends_and_repair_restores_full_redundancy() {
    let env = pool(5, "erasure=3+2");
    let src = tree(&env, 240, 3);
    env.ok(&["backup", src.to_str().unwrap()]);
    let stored: u64 = (0..5).map(|i| data_bytes(&env, i)).sum();
    let plain = dir_bytes(&src);
    // 5 shards of a third each: ~1.67x what was stored once (before compression).
    assert!(stored < plain * 2, "erasure 3+2 stored {stored} for {plain} plain bytes");

    for lost in [1, 3] {
        std::fs::remove_dir_all(env.path(&format!("backend-{lost}"))).unwrap();
    }
    // A new machine, with nothing but the config, reads everything from three backends.
    let other = env.second_machine();
    let out = env.path("out-degraded");
    let run = env
        .command(&["restore", "latest", "--target", out.to_str().unwrap()])
        .env("CUCKOO_CONFIG", &other)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("left out"), "the lost backends are named");
    assert_same_tree(&src, &out.join("src"));

    let check = env.run(&["check", "--json"]);
    assert_eq!(check.status.code(), Some(1), "lost shards are a finding");
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert!(report["degraded"].as_u64().unwrap() > 0, "{report}");
    let lacking: Vec<&str> = report["backends"].as_object().unwrap().keys().map(String::as_str).collect();
    assert!(lacking.iter().all(|b| ["b1", "b3"].contains(b)) && !lacking.is_empty(), "{report}");

    // A sixth backend joins; repair rebuilds every lost shard onto the five placement wants.
    let root = env.path("backend-5");
    env.ok(&["backend", "add", "b5", "fs", &format!("root={}", root.display())]);
    let repaired = env.json(&["repair"]);
    assert!(repaired["pieces_written"].as_u64().unwrap() > 0, "{repaired}");
    assert!(repaired["unrecoverable"].as_array().unwrap().is_empty(), "{repaired}");
    let again = env.json(&["repair"]);
    assert_eq!(again["pieces_written"], 0, "a second repair finds nothing to do: {again}");
    let check = env.json(&["check", "--read-data"]);
    assert_eq!(check["findings"].as_array().unwrap().len(), 0, "{check}");
    assert_eq!(check["degraded"], 0);
    for i in [1, 3, 5] {
        assert!(data_bytes(&env, i) > 0, "backend-{i} holds shards again");
    }
    // Full redundancy again: two other backends can go and everything still reads.
    for lost in [0, 2] {
        std::fs::remove_dir_all(env.path(&format!("backend-{lost}"))).unwrap();
    }
    let third = env.path("machine-c.toml");
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    let first = cfg.lines().next().unwrap().to_string();
    std::fs::write(&third, cfg.replacen(&first, &format!("catalogue = {:?}", env.path("catalogue-c.redb")), 1))
        .unwrap();
    let out = env.path("out-after-repair");
    let run = env
        .command(&["restore", "latest", "--target", out.to_str().unwrap()])
        .env("CUCKOO_CONFIG", &third)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_same_tree(&src, &out.join("src"));
}

#[test]
fn copies_2_rebalance_moves_only_the_new_share_and_remove_drains_a_backend() {
    let env = pool(5, "copies=2");
    let src = tree(&env, 600, 0);
    env.ok(&["backup", src.to_str().unwrap(), "--tag", "one"]);
    std::fs::write(src.join("late.txt"), text(50_000, 7)).unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "--tag", "two"]);
    let before: Vec<u64> = (0..5).map(|i| data_bytes(&env, i)).collect();
    let total: u64 = before.iter().sum();

    let root = env.path("backend-5");
    env.ok(&["backend", "add", "b5", "fs", &format!("root={}", root.display())]);
    let plan = env.json(&["rebalance", "--dry-run"]);
    assert_eq!(data_bytes(&env, 5), 0, "a dry run moves nothing");
    let moved = env.json(&["rebalance"]);
    assert_eq!(plan["pieces_written"], moved["pieces_written"], "the dry run showed what happened");
    let written = moved["bytes_written"].as_u64().unwrap() as f64;
    let share = written / total as f64;
    // The sixth backend owns one of the two copies of about a third of the objects: a sixth
    // of the bytes. Objects are few hundred, so allow sampling noise.
    assert!((0.11..0.23).contains(&share), "moved {share:.3} of the stored bytes, expected about 1/6");
    assert_eq!(moved["bytes_deleted"], moved["bytes_written"], "moves, not copies: {moved}");
    assert_eq!(data_bytes(&env, 5) as f64, written, "everything moved went to the new backend");
    for (i, b) in before.iter().enumerate() {
        assert!(data_bytes(&env, i) <= *b, "backend-{i} received data in a rebalance toward b5");
    }
    assert_eq!(env.json(&["rebalance"])["pieces_written"], 0, "rebalanced pools stay put");

    let out = env.ok(&["backend", "remove", "b2"]);
    assert!(out.contains("removed"), "{out}");
    assert!(!std::fs::read_to_string(&env.config).unwrap().contains("\"b2\""), "b2 left the config");
    assert_eq!(data_bytes(&env, 2), 0, "b2 was drained");
    let check = env.json(&["check", "--read-data"]);
    assert_eq!(check["findings"].as_array().unwrap().len(), 0, "{check}");
    restore_matches(&env, "latest", &src, "out-two");
    let snaps = env.json(&["snapshots"]);
    let first =
        snaps.as_array().unwrap().iter().find(|s| s["tags"][0] == "one").unwrap()["id"].as_str().unwrap().to_string();
    let out = env.path("out-one");
    env.ok(&["restore", &first, "--target", out.to_str().unwrap()]);
    assert!(!out.join("src/late.txt").exists());
    for d in 0..7 {
        let sub = format!("d{d}");
        assert_same_tree(&src.join(&sub), &out.join("src").join(&sub));
    }
}

#[test]
fn a_corrupt_or_missing_copy_is_read_around_named_by_check_and_healed_by_repair() {
    let env = pool(3, "copies=2");
    let src = tree(&env, 60, 1);
    env.ok(&["backup", src.to_str().unwrap()]);
    let chunks: Vec<PathBuf> = (0..3).flat_map(|i| walk_files(&env.path(&format!("backend-{i}/data")))).collect();
    let mut bytes = std::fs::read(&chunks[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&chunks[0], bytes).unwrap();
    std::fs::remove_file(&chunks[1]).unwrap();

    restore_matches(&env, "latest", &src, "out-1");
    let check = env.run(&["check", "--read-data", "--json"]);
    assert_eq!(check.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let problems: Vec<String> = report["findings"].as_array().unwrap().iter().map(|f| f.to_string()).collect();
    assert!(problems.iter().any(|p| p.contains("piece unreadable") && p.contains("\"backend\":\"b")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("1 of its 2 copies")), "{problems:?}");
    // A damaged pool record makes its backend unusable, not the pool.
    let record = env.path("backend-2/cuckoo.pool");
    let mut bytes = std::fs::read(&record).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&record, bytes).unwrap();
    let run = env.run(&["snapshots"]);
    assert!(run.status.success() && String::from_utf8_lossy(&run.stderr).contains("'b2' is left out"));
    let fixed = env.json(&["repair", "--read-data"]);
    assert_eq!(fixed["corrupt_pieces"], 1, "{fixed}");
    assert!(fixed["shared_copied"].as_u64().unwrap() >= 1, "the pool record was rewritten: {fixed}");
    let run = env.run(&["snapshots"]);
    assert!(run.status.success() && run.stderr.is_empty(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(fixed["pieces_written"].as_u64().unwrap() >= 2, "{fixed}");
    let check = env.json(&["check", "--read-data"]);
    assert_eq!(check["findings"].as_array().unwrap().len(), 0, "{check}");
    let _ = PASSPHRASE;
}

#[test]
fn a_full_backend_is_skipped_not_failed() {
    let env = pool(3, "copies=2");
    // b0 may hold almost nothing: new data goes to the other two.
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, cfg.replacen("name = \"b0\"", "name = \"b0\"\ncapacity = \"64KiB\"", 1)).unwrap();
    let src = tree(&env, 120, 1);
    env.ok(&["backup", src.to_str().unwrap()]);
    assert!(data_bytes(&env, 0) <= 64 * 1024, "b0 filled past its capacity: {}", data_bytes(&env, 0));
    restore_matches(&env, "latest", &src, "out");
    let check = env.json(&["check"]);
    assert_eq!(check["findings"].as_array().unwrap().len(), 0, "two backends still hold two copies: {check}");
}

/// A real full disk: one backend's root is a 2 MiB tmpfs. ENOSPC marks it full, the pieces
/// it refused go to the others, and the backup, check and restore are unaffected.
#[test]
fn a_backend_whose_disk_fills_up_is_skipped_not_failed() {
    let mut mounted = None;
    let env = pool_with(3, "copies=2", |dir| {
        let root = dir.join("backend-0");
        std::fs::create_dir_all(&root).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&root)
            .status()
            .is_ok_and(|s| s.success());
        mounted = ok.then_some(root);
    });
    let Some(root) = mounted else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(root);
    let src = tree(&env, 90, 2);
    let run = env.run(&["backup", src.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{said}");
    assert!(!said.contains("less redundancy"), "every object still got two copies: {said}");
    let check = env.json(&["check", "--read-data"]);
    assert_eq!(check["findings"].as_array().unwrap().len(), 0, "{check}");
    restore_matches(&env, "latest", &src, "out");
}
