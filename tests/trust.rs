//! Nothing unverified is trusted: a damaged catalogue never misleads restore, backup,
//! check or prune, and restore never writes outside its target.
//! Regression tests for the defects of issue 20, named after what they fix.

mod common;

use common::{Env, noise};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// The catalogue's tables as `catalogue.rs` lays them out (id -> body).
const TREES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("trees");
const SNAPSHOTS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("snapshots");

/// Two directories of files large enough to be chunks of their own, so a prune working from
/// a wrong tree would delete chunks still in use.
fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    for (dir, seed) in [("a", 1u64), ("b", 2), ("b/deeper", 3)] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
        std::fs::write(src.join(dir).join("data.bin"), noise(600 << 10, seed)).unwrap();
        std::fs::write(src.join(dir).join("note.txt"), format!("note of {dir}\n")).unwrap();
    }
    src
}

/// Give every entry of `table` the body of the next one: each body still decodes, but none
/// matches its id any more (what an edited or misdirected write in the file does).
fn rotate_bodies(env: &Env, table: TableDefinition<[u8; 32], &[u8]>) -> usize {
    let db = redb::Database::open(env.path("catalogue.redb")).unwrap();
    let rows: Vec<([u8; 32], Vec<u8>)> = {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(table).unwrap();
        t.iter().unwrap().map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())).unwrap()).collect()
    };
    assert!(rows.len() >= 2, "need two entries to rotate");
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(table).unwrap();
        for (i, (key, _)) in rows.iter().enumerate() {
            t.insert(key, rows[(i + 1) % rows.len()].1.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
    rows.len()
}

fn restore_latest(env: &Env, target: &str) -> std::path::PathBuf {
    let out = env.path(target);
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    out.join("src")
}

fn findings(env: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = args.to_vec();
    a.push("--json");
    let out = env.run(&a);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    v["findings"].as_array().unwrap().clone()
}

#[test]
fn regression_edited_catalogue_trees_mislead_neither_restore_nor_backup_nor_prune() {
    let env = Env::new();
    let src = source(&env);
    env.ok(&["backup", src.to_str().unwrap()]);

    // Restore: every tree body is checked against its id and fetched again when it fails.
    assert!(rotate_bodies(&env, TREES) >= 4);
    common::assert_same_tree(&src, &restore_latest(&env, "out-1"));

    // Check names the damage it finds (and mends it); the next check is clean.
    rotate_bodies(&env, TREES);
    let found = findings(&env, &["check"]);
    assert!(
        !found.is_empty() && found.iter().all(|f| f["snapshot"] == "catalogue"),
        "check must report the damaged entries: {found:?}"
    );
    assert_eq!(findings(&env, &["check", "--read-data"]), Vec::<serde_json::Value>::new());

    // An unchanged backup must not take its file list from damaged parent trees: the
    // snapshot it writes restores exactly, even through a catalogue rebuilt from scratch.
    rotate_bodies(&env, TREES);
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::remove_file(env.path("catalogue.redb")).unwrap();
    common::assert_same_tree(&src, &restore_latest(&env, "out-2"));

    // Prune builds its live set from verified trees only: nothing in use is deleted.
    std::fs::write(src.join("a/data.bin"), noise(600 << 10, 9)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let listed = env.json(&["snapshots"]);
    for old in &listed.as_array().unwrap()[..2] {
        env.ok(&["forget", &old["id"].as_str().unwrap()[..8]]);
    }
    rotate_bodies(&env, TREES);
    let pruned = env.json(&["prune"]);
    assert!(pruned["unused_objects"].as_u64().unwrap() >= 1, "the old a/data.bin is garbage: {pruned}");
    assert_eq!(findings(&env, &["check", "--read-data"]), Vec::<serde_json::Value>::new());
    common::assert_same_tree(&src, &restore_latest(&env, "out-3"));
}

#[test]
fn regression_edited_catalogue_snapshots_are_replaced_from_the_backends() {
    let env = Env::new();
    let src = source(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let kept = std::fs::read(src.join("b/data.bin")).unwrap();
    std::fs::remove_file(src.join("b/data.bin")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let listed = env.json(&["snapshots"]);

    // Each snapshot record now names the other's trees: listings, restores and prune must
    // all see the snapshots as the backends hold them.
    rotate_bodies(&env, SNAPSHOTS);
    assert_eq!(env.json(&["snapshots"]), listed);
    rotate_bodies(&env, SNAPSHOTS);
    assert_eq!(env.json(&["prune"])["unused_objects"], 0, "both snapshots are still live");
    let first = listed[0]["id"].as_str().unwrap();
    let out = env.path("out-first");
    env.ok(&["restore", first, "--target", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("src/b/data.bin")).unwrap(), kept);
    assert_eq!(findings(&env, &["check", "--read-data"]), Vec::<serde_json::Value>::new());
}

/// The catalogue's object table (id -> kind, plain length, pieces of 11 bytes: backend u16,
/// shard flag, stored length u64, little-endian).
const OBJECTS: TableDefinition<[u8; 32], (u8, u64, &[u8])> = TableDefinition::new("objects");

/// One row of `OBJECTS`, owned: (id, (kind, plain length, pieces)).
type ObjectRow = ([u8; 32], (u8, u64, Vec<u8>));

/// Reads ask a backend for the length the catalogue recorded; the catalogue is not trusted,
/// so lengths too short (the object comes back cut) and too long (the service refuses the
/// range) must cost another read, never a failed or wrong restore.
#[test]
fn stale_piece_lengths_in_the_catalogue_cost_a_read_not_a_failure() {
    let env = Env::new();
    let src = source(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let db = redb::Database::open(env.path("catalogue.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    let edited = {
        let mut t = txn.open_table(OBJECTS).unwrap();
        let rows: Vec<ObjectRow> = t
            .iter()
            .unwrap()
            .map(|r| r.map(|(k, v)| (k.value(), (v.value().0, v.value().1, v.value().2.to_vec()))).unwrap())
            .collect();
        for (i, (id, (kind, plain, mut pieces))) in rows.iter().cloned().enumerate() {
            for piece in pieces.chunks_exact_mut(11) {
                let len = u64::from_le_bytes(piece[3..11].try_into().unwrap());
                let wrong = if i % 2 == 0 { len - 1 } else { len + 4096 };
                piece[3..11].copy_from_slice(&wrong.to_le_bytes());
            }
            t.insert(id, (kind, plain, pieces.as_slice())).unwrap();
        }
        rows.len()
    };
    txn.commit().unwrap();
    drop(db);
    assert!(edited >= 4, "chunks and tree packs: {edited}");
    common::assert_same_tree(&src, &restore_latest(&env, "out"));
    let cat = env.run(&["cat", "latest:src/a/data.bin"]);
    assert!(cat.status.success(), "{}", String::from_utf8_lossy(&cat.stderr));
    assert!(cat.stdout == std::fs::read(src.join("a/data.bin")).unwrap(), "cat reads the file whole");
}

/// Whether two (large) files hold the same bytes, compared a MiB at a time.
fn same_content(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

/// Every file below `dir` with its content, for "nothing here changed" comparisons.
fn snapshot_of(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    common::walk_files(dir).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn regression_restore_never_writes_through_symlinks_or_hard_links_planted_in_the_target() {
    use std::os::unix::fs::symlink;
    let env = Env::new();
    let src = source(&env);
    std::fs::write(src.join("b/deeper/linked.txt"), "two names\n").unwrap();
    std::fs::hard_link(src.join("b/deeper/linked.txt"), src.join("b/linked-too.txt")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);

    let outside = env.path("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("victim.txt"), "must stay\n").unwrap();
    std::fs::write(outside.join("victim-linked.txt"), "must stay too\n").unwrap();
    std::fs::write(outside.join("victim-hard.txt"), "hard-linked, must stay\n").unwrap();
    let before = snapshot_of(&outside);

    // One target per depth, each with a symlink to a directory outside where the snapshot
    // has a directory; the deepest also plants file symlinks and a hard link.
    let plants: [(&str, &[&str]); 4] =
        [("t0", &[]), ("t1", &["src"]), ("t2", &["src", "b"]), ("t3", &["src", "b", "deeper"])];
    for (target, dirs) in plants {
        let t = env.path(target);
        let mut at = t.clone();
        std::fs::create_dir_all(&at).unwrap();
        for (i, d) in dirs.iter().enumerate() {
            at = at.join(d);
            if i + 1 < dirs.len() {
                std::fs::create_dir_all(&at).unwrap();
            }
        }
        if !dirs.is_empty() {
            symlink(outside.join("dir"), &at).unwrap();
        }
        if dirs.is_empty() {
            // Files: a symlink where a file is restored, one where a hard-linked file is,
            // and a hard link to a file outside.
            std::fs::create_dir_all(t.join("src/a")).unwrap();
            std::fs::create_dir_all(t.join("src/b")).unwrap();
            symlink(outside.join("victim.txt"), t.join("src/a/data.bin")).unwrap();
            symlink(outside.join("victim-linked.txt"), t.join("src/b/linked-too.txt")).unwrap();
            std::fs::hard_link(outside.join("victim-hard.txt"), t.join("src/a/note.txt")).unwrap();
        }
        env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
        common::assert_same_tree(&src, &t.join("src"));
        assert_eq!(snapshot_of(&outside), before, "restore into {target} wrote outside it");
    }
}

#[test]
fn regression_a_damaged_catalogue_file_is_set_aside_and_rebuilt() {
    let env = Env::new();
    let src = source(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let path = env.path("catalogue.redb");
    let len = std::fs::metadata(&path).unwrap().len();
    type Damage = Box<dyn Fn(&std::path::Path)>;
    let damages: [(&str, Damage); 3] = [
        (
            "random bytes",
            Box::new(|p| {
                let mut bytes = std::fs::read(p).unwrap();
                bytes[..4096].copy_from_slice(&noise(4096, 5));
                std::fs::write(p, bytes).unwrap();
            }),
        ),
        (
            "truncated",
            Box::new(move |p| std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(len / 3).unwrap()),
        ),
        ("emptied", Box::new(|p| std::fs::write(p, b"").unwrap())),
    ];
    for (i, (what, damage)) in damages.iter().enumerate() {
        damage(&path);
        let out = env.run(&["snapshots", "--json"]);
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().len(), 1);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("damaged") || *what == "emptied", "{what}: says what happened: {said}");
        common::assert_same_tree(&src, &restore_latest(&env, &format!("out-{i}")));
    }
}

/// Damage anywhere in the catalogue file, not only where redb looks when it opens it: bytes
/// overwritten on one page at a time, across the whole file (a seeded walk, the same every
/// run). No command may panic, and a restore that succeeds restores the snapshot exactly.
/// Before `catalogue::guard`, some of these ended `snapshots` or `restore` with exit 101.
#[test]
fn damage_anywhere_in_the_catalogue_never_panics_nor_restores_wrong() {
    let env = Env::new();
    let src = source(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let path = env.path("catalogue.redb");
    let good = std::fs::read(&path).unwrap();
    let pages = good.len() / 4096;
    for trial in 0..12usize {
        let mut bytes = good.clone();
        // Every page in turn (spread over the file), at an offset and with bytes that vary.
        let page = (trial * 7919) % pages;
        let at = page * 4096 + [2, 8, 16, 40, 100, 1000][trial % 6];
        bytes[at..at + 16].copy_from_slice(&noise(16, trial as u64 + 1));
        std::fs::write(&path, &bytes).unwrap();
        for f in std::fs::read_dir(env.path("")).unwrap().flatten() {
            if f.file_name().to_string_lossy().contains("damaged") {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
        for args in [&["snapshots"][..], &["check"][..]] {
            let out = env.run(args);
            assert_ne!(
                out.status.code(),
                Some(101),
                "trial {trial}, {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let target = env.path(&format!("out-{trial}"));
        let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert_ne!(out.status.code(), Some(101), "trial {trial}: {}", String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            common::assert_same_tree(&src, &target.join("src"));
        }
    }
}

/// `check` found reference counts the trees did not imply and told the user to delete the
/// catalogue, finding them again at every run until they did; it now recounts them.
#[test]
fn regression_check_recounts_wrong_reference_counts_instead_of_asking_to_delete_the_catalogue() {
    const REFS: TableDefinition<[u8; 32], u64> = TableDefinition::new("refs");
    let env = Env::new();
    let src = source(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let db = redb::Database::open(env.path("catalogue.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut refs = txn.open_table(REFS).unwrap();
        let ids: Vec<[u8; 32]> = refs.iter().unwrap().take(3).map(|r| r.unwrap().0.value()).collect();
        for id in &ids {
            refs.insert(id, 40).unwrap();
        }
        refs.insert([7u8; 32], 2).unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    let found = findings(&env, &["check"]);
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found.iter().all(|f| f["problem"].as_str().unwrap().contains("recounted")), "{found:?}");
    assert_eq!(findings(&env, &["check"]), Vec::<serde_json::Value>::new());
    common::assert_same_tree(&src, &restore_latest(&env, "out"));
}

#[test]
fn regression_a_path_too_long_for_the_target_does_not_stop_the_restore() {
    let env = Env::new();
    let src = env.path("src");
    // About 3,800 bytes of path: fine where it is, too long (over PATH_MAX) below a target
    // with a long name of its own.
    let mut deep = src.clone();
    for i in 0..15 {
        deep = deep.join(format!("{i:02}{}", "d".repeat(248)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("far.txt"), "far away\n").unwrap();
    std::fs::write(src.join("near.txt"), "close by\n").unwrap();
    std::fs::create_dir_all(src.join("z")).unwrap();
    std::fs::write(src.join("z/after.txt"), "restored after the failure\n").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);

    let target = env.path("t").join("l".repeat(250)).join("m".repeat(250));
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "reported as a partial restore: {said}");
    assert!(said.contains("not restored") && said.contains("too long"), "{said}");
    assert_eq!(std::fs::read(target.join("src/near.txt")).unwrap(), b"close by\n");
    assert_eq!(std::fs::read(target.join("src/z/after.txt")).unwrap(), b"restored after the failure\n");
}

#[test]
fn regression_sparse_files_are_not_read_through_their_holes_and_restore_sparse() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let sparse = std::fs::File::create(src.join("disk.img")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    for (at, seed) in [(0u64, 1u64), (700 << 20, 2), ((1 << 30) - (1 << 20), 3)] {
        sparse.write_all_at(&noise(1 << 20, seed), at).unwrap();
    }
    sparse.sync_all().unwrap();
    drop(sparse);
    let allocated = std::fs::metadata(src.join("disk.img")).unwrap().blocks() * 512;
    assert!(allocated < 64 << 20, "the test's file system keeps holes ({allocated} bytes allocated)");
    let done = env.json(&["backup", src.to_str().unwrap()]);
    let read = done["summary"]["bytes_read"].as_u64().unwrap();
    assert!(read < 16 << 20, "only the data was read, not 1 GiB of holes: {read}");
    assert_eq!(done["summary"]["bytes"].as_u64(), Some(1 << 30));
    let out = restore_latest(&env, "out");
    assert!(same_content(&src.join("disk.img"), &out.join("disk.img")));
    let restored = std::fs::metadata(out.join("disk.img")).unwrap().blocks() * 512;
    assert!(restored < 64 << 20, "restored sparse: {restored} bytes allocated");
}
