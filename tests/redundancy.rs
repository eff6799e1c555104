//! Redundancy through the CLI, on pools of local directories: losing backends outright,
//! repairing onto what is left and what is added, rebalancing after a backend joins, and
//! draining one out. Every restore is compared byte for byte with the source.

mod common;

use std::path::{Path, PathBuf};

use common::{Env, PASSPHRASE, assert_same_tree, dir_bytes, text, walk_files};

fn pool(n: usize, redundancy: &str) -> Env {
    Env::pool_with(n, redundancy, |_| {})
}

fn tree(env: &Env, files: usize, big: usize) -> PathBuf {
    env.mixed_tree(files, big)
}

fn restore_matches(env: &Env, snapshot: &str, src: &Path, name: &str) {
    env.restore_matches(snapshot, src, name)
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
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(
        said.contains("backend 'b1' has no pool record") && said.contains("'b3'"),
        "the lost backends are named: {said}"
    );
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
    // Which of an object's free places takes a piece depends on the loads at that moment,
    // and a real run's concurrent writes finish in another order than a dry run's plan:
    // up to 4 of 89 pieces apart in CI (regression: 2 % was assumed and failed once), and
    // 81 against 90 once on a loaded machine (regression: 1/16 was assumed then).
    let (planned, done) = (plan["pieces_written"].as_u64().unwrap(), moved["pieces_written"].as_u64().unwrap());
    assert!(planned.abs_diff(done) <= 2 + done / 8, "the dry run showed what happened: {planned} vs {done}");
    let written = moved["bytes_written"].as_u64().unwrap() as f64;
    let share = written / total as f64;
    // The sixth backend owns one of the two copies of about a third of the objects: a sixth
    // of the bytes. Objects are few hundred, so allow sampling noise.
    assert!((0.13..0.20).contains(&share), "moved {share:.3} of the stored bytes, expected about 1/6");
    assert_eq!(moved["bytes_deleted"], moved["bytes_written"], "moves, not copies: {moved}");
    // Nearly all of it went to the new backend; the rest evened out old ones that a pool of a
    // few hundred objects leaves more than 2.5 % off their shares (docs/redundancy.md). Over
    // eight runs of placement 3: 99.2 to 100 % to the new backend, 0.98 to 1.00 times its
    // share moved (placement 2: 84 to 100 %, 1.0 to 1.19 times).
    assert!(data_bytes(&env, 5) as f64 >= 0.9 * written, "the new backend got what moved");
    for (i, b) in before.iter().enumerate() {
        assert!(data_bytes(&env, i) <= b + total / 50, "backend-{i} received data in a rebalance toward b5");
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

/// Regression: a backend added pushed the last backend of some objects' windows out of
/// them, and rebalance moved those pieces whether or not their backends were over their
/// shares. The small backends, pushed out most, fell under theirs and balancing moves filled
/// them again from the large ones: 1.1 to 1.35 times the new backend's share moved, some of
/// it between old backends. Now pieces may stay one rank further down, and what moves goes
/// from backends over their shares to the new one.
#[test]
fn regression_adding_a_backend_to_unequal_weights_moves_its_share_and_only_to_it() {
    let env = pool(5, "copies=2");
    for (i, w) in [1, 2, 3, 5, 8].iter().enumerate() {
        env.ok(&["backend", "set", &format!("b{i}"), "--weight", &w.to_string()]);
    }
    let src = tree(&env, 900, 0);
    env.ok(&["backup", src.to_str().unwrap()]);
    let before: Vec<u64> = (0..5).map(|i| data_bytes(&env, i)).collect();
    let total: u64 = before.iter().sum();

    let root = env.path("backend-5");
    env.ok(&["backend", "add", "b5", "fs", &format!("root={}", root.display()), "--weight", "3"]);
    let target = env.json(&["stats"])["target_shares"]["b5"].as_f64().unwrap();
    let moved = env.json(&["rebalance"]);
    let written = moved["bytes_written"].as_u64().unwrap() as f64;
    let ideal = target * total as f64;
    // Balancing stops once the new backend is within 2.5 % of its share, and pieces are
    // whole chunks: 0.98 to 0.99 times the ideal in four runs here (1.26 before).
    assert!((0.85 * ideal..=1.1 * ideal).contains(&written), "moved {written} bytes, ideal {ideal:.0}");
    // All of it in four runs; an old backend left more than 2.5 % off by the backup's
    // concurrent writes would take a chunk or two.
    assert!(data_bytes(&env, 5) as f64 >= 0.97 * written, "what moved went to the new backend");
    for (i, b) in before.iter().enumerate() {
        assert!(data_bytes(&env, i) <= b + total / 100, "b{i} received data in a rebalance toward b5");
    }
    assert_eq!(env.json(&["rebalance"])["pieces_written"], 0, "rebalanced pools stay put");
    let check = env.json(&["check", "--read-data"]);
    assert_eq!(check["findings"].as_array().unwrap().len(), 0, "{check}");
    restore_matches(&env, "latest", &src, "out");
}

/// Placement 3 lets a copy stay in the last rank of an object's keep window, one past where
/// writes go. Storing the object again without the catalogue knowing it (another machine, or
/// a backup cut off before its catalogue commit) must find that copy and not write a third:
/// a write that looked only in the write window, as placement 2's did, would.
#[test]
fn a_copy_in_the_last_rank_of_the_keep_window_is_found_not_written_again() {
    use cuckoo::internals::{codec::ObjectKind, ring::keep_window, store::piece_path};
    let env = pool(5, "copies=2");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = cuckoo::Config::load(&env.config).unwrap();
        let pass = cuckoo::Passphrase::new(PASSPHRASE);
        let repo = cuckoo::Repository::open(config, &pass, &cuckoo::NoProgress).await.unwrap();
        let store = repo.store();
        let body = b"an object no catalogue has recorded".to_vec();
        let id = cuckoo::ObjectId::of(&body);
        let order = store.placement_order(&id, cuckoo::Scheme::Copies(2), body.len() as u64);
        let first = store.put(ObjectKind::Chunk, &id, body.clone()).await.unwrap();
        assert!(first.written && first.pieces.len() == 2, "{:?}", first.pieces);

        // Move one copy to the last rank of the keep window, as a rebalance may leave it.
        let path = piece_path(ObjectKind::Chunk, &id, false);
        let on = |i: usize| env.path(&format!("backend-{i}")).join(&path);
        let last = order[keep_window(2) - 1];
        assert!(first.pieces.iter().all(|p| p.backend != last), "writes go into the write window");
        std::fs::create_dir_all(on(last).parent().unwrap()).unwrap();
        std::fs::rename(on(first.pieces[0].backend), on(last)).unwrap();

        let again = store.put(ObjectKind::Chunk, &id, body.clone()).await.unwrap();
        assert!(!again.written, "a copy was written again: {:?}", again.pieces);
        let mut holders: Vec<usize> = again.pieces.iter().map(|p| p.backend).collect();
        holders.sort();
        let mut expected = vec![last, first.pieces[1].backend];
        expected.sort();
        assert_eq!(holders, expected);
        let copies = (0..5).filter(|i| on(*i).exists()).count();
        assert_eq!(copies, 2, "two copies on disk, not three");
        assert_eq!(std::fs::read(on(last)).unwrap(), body);
    });
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

/// Before: repair counted only pieces inside each object's placement window, so after a
/// backend was added (or placement changed with an upgrade) it wrote a further copy of every
/// object with one outside, and the pool grew by up to a copy of everything.
#[test]
fn regression_repair_after_adding_a_backend_writes_no_extra_copies() {
    let env = pool(4, "copies=2");
    let src = tree(&env, 300, 1);
    env.ok(&["backup", src.to_str().unwrap()]);
    let root = env.path("backend-4");
    env.ok(&["backend", "add", "b4", "fs", &format!("root={}", root.display())]);
    let repaired = env.json(&["repair"]);
    assert_eq!(repaired["pieces_written"], 0, "every object has its two copies: {repaired}");
    let plan = env.json(&["rebalance", "--dry-run"]);
    assert!(plan["pieces_written"].as_u64().unwrap() > 0, "rebalance still has pieces to move");
}
