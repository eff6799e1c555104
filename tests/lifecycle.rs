//! `cuckoo check`, `diff` and `cat`: verification that names what is damaged, comparisons of
//! snapshots, and single files streamed out.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Env, dir_bytes, noise, text};

fn tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    std::fs::write(src.join("big.bin"), noise(5 << 20, 1)).unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("docs/note{i}.txt")), text(2000 + i * 10, i as u64)).unwrap();
    }
    src
}

fn chunk_files(env: &Env) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for i in 0..3 {
        let Ok(dirs) = std::fs::read_dir(env.path(&format!("backend-{i}/data"))) else { continue };
        for d in dirs {
            out.extend(std::fs::read_dir(d.unwrap().path()).unwrap().map(|f| f.unwrap().path()));
        }
    }
    out.sort();
    out
}

#[test]
fn check_passes_on_a_healthy_pool_and_names_missing_and_corrupt_objects() {
    // One copy: the lost data cannot be read around (tests/redundancy.rs covers that).
    let env = Env::with_redundancy("none");
    let src = tree(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let healthy = env.json(&["check", "--read-data"]);
    assert_eq!(healthy["findings"].as_array().unwrap().len(), 0, "{healthy}");
    assert_eq!(healthy["objects_read"], healthy["objects"]);

    // Corrupt one chunk (same length) and delete another.
    let chunks = chunk_files(&env);
    assert!(chunks.len() >= 3);
    let mut bytes = std::fs::read(&chunks[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&chunks[0], bytes).unwrap();
    std::fs::remove_file(&chunks[1]).unwrap();

    let out = env.run(&["check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "structure check finds the missing object only: {v}");
    assert!(findings[0]["problem"].as_str().unwrap().contains("missing"));
    assert!(findings[0]["path"].as_str().unwrap().starts_with("/src/"), "{v}");

    let out = env.run(&["check", "--read-data", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<&str> =
        v["findings"].as_array().unwrap().iter().map(|f| f["problem"].as_str().unwrap()).collect();
    assert!(problems.iter().any(|p| p.contains("unreadable")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("missing")), "{problems:?}");

    // A subset reads part of the objects.
    let out = env.run(&["check", "--read-data-subset", "50%", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["objects_read"].as_u64().unwrap() < v["objects"].as_u64().unwrap());
}

#[test]
fn diff_lists_added_removed_modified_and_metadata_changes() {
    let env = Env::new();
    let src = tree(&env);
    let a = env.json(&["backup", src.to_str().unwrap()])["id"].as_str().unwrap().to_string();
    std::fs::write(src.join("docs/new.txt"), b"new").unwrap();
    std::fs::remove_file(src.join("docs/note3.txt")).unwrap();
    std::fs::write(src.join("docs/note4.txt"), b"rewritten").unwrap();
    std::fs::set_permissions(src.join("docs/note5.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let b = env.json(&["backup", src.to_str().unwrap()])["id"].as_str().unwrap().to_string();
    let out = env.ok(&["diff", &a[..8], &b[..8]]);
    for line in ["+ /src/docs/new.txt", "- /src/docs/note3.txt", "M /src/docs/note4.txt", "U /src/docs/note5.txt"] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in:\n{out}");
    }
    assert!(!out.contains("note6"), "unchanged files are not listed:\n{out}");
    assert_eq!(env.ok(&["diff", &b[..8], &b[..8]]), "");
}

#[test]
fn cat_streams_one_file_byte_for_byte() {
    let env = Env::new();
    let src = tree(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    for path in ["src/big.bin", "src/docs/note7.txt"] {
        let out = env.run(&["cat", &format!("latest:{path}")]);
        assert!(out.status.success());
        assert!(out.stdout == std::fs::read(env.path(path)).unwrap(), "{path}");
    }
    let out = env.run(&["cat", "latest:src/docs"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
}

#[test]
fn restore_with_a_lost_chunk_restores_everything_else_and_names_the_rest() {
    // One copy: the lost data cannot be read around (tests/redundancy.rs covers that).
    let env = Env::with_redundancy("none");
    let src = tree(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let chunks = chunk_files(&env);
    std::fs::remove_file(&chunks[chunks.len() / 2]).unwrap();

    let out = env.path("out");
    let run = env.run(&["restore", "latest", "--target", out.to_str().unwrap(), "--json"]);
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let failed: Vec<String> = v["failed"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    assert!(!failed.is_empty());
    let mut restored = 0;
    for entry in std::fs::read_dir(src.join("docs")).unwrap().chain(std::fs::read_dir(&src).unwrap()) {
        let p = entry.unwrap().path();
        if !p.is_file() {
            continue;
        }
        let rel = p.strip_prefix(env.path("")).unwrap();
        let target = out.join(rel);
        if failed.iter().any(|f| f.starts_with(&target.display().to_string())) {
            assert!(!target.exists(), "a failed file was left behind: {}", target.display());
        } else {
            assert!(std::fs::read(&target).unwrap() == std::fs::read(&p).unwrap(), "{}", p.display());
            restored += 1;
        }
    }
    assert!(restored > 0);
}

#[test]
fn forget_by_id_and_by_policy_everywhere_and_keeps_the_pool_consistent() {
    let env = Env::new();
    let other = env.second_machine();
    let src = tree(&env);
    let mut ids = Vec::new();
    for i in 0..3 {
        std::fs::write(src.join(format!("docs/round{i}.txt")), format!("round {i}")).unwrap();
        ids.push(env.json(&["backup", src.to_str().unwrap()])["id"].as_str().unwrap().to_string());
    }
    let machine_b = |args: &[&str]| {
        let out = env.command(args).env("CUCKOO_CONFIG", &other).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(machine_b(&["snapshots", "--json"]).as_array().unwrap().len(), 3);

    env.ok(&["forget", &ids[0][..8]]);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    // The other machine's catalogue drops it too, and the pool still checks clean.
    assert_eq!(machine_b(&["snapshots", "--json"]).as_array().unwrap().len(), 2);
    assert_eq!(env.json(&["check"])["findings"].as_array().unwrap().len(), 0);

    let dry = env.json(&["forget", "--keep-last", "1", "--dry-run"]);
    let keep: Vec<bool> = dry["snapshots"].as_array().unwrap().iter().map(|s| s["keep"].as_bool().unwrap()).collect();
    assert_eq!(keep.iter().filter(|k| **k).count(), 1);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2, "dry run changed nothing");
    env.ok(&["forget", "--keep-last", "1"]);
    let left = env.json(&["snapshots"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["id"].as_str().unwrap(), ids[2]);
    env.ok(&["restore", "latest", "--target", env.path("out").to_str().unwrap()]);
    common::assert_same_tree(&src, &env.path("out/src"));
    let out = env.run(&["forget"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a policy"));
}

fn stored_bytes(env: &Env) -> u64 {
    (0..3).map(|i| dir_bytes(&env.path(&format!("backend-{i}")))).sum()
}

#[test]
fn prune_reclaims_space_and_other_machines_stop_counting_on_deleted_data() {
    let env = Env::new();
    let other = env.second_machine();
    let machine_b = |args: &[&str]| env.command(args).env("CUCKOO_CONFIG", &other).output().unwrap();
    let src = tree(&env);
    let first = env.json(&["backup", src.to_str().unwrap()])["id"].as_str().unwrap().to_string();
    // Machine B learns every object of the first snapshot.
    assert!(machine_b(&["snapshots"]).status.success());
    let big = std::fs::read(src.join("big.bin")).unwrap();
    std::fs::remove_file(src.join("big.bin")).unwrap();
    for i in 0..25 {
        std::fs::remove_file(src.join(format!("docs/note{i}.txt"))).unwrap();
    }
    std::fs::write(src.join("docs/new.txt"), text(50_000, 77)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);

    // Nothing is unreferenced while both snapshots exist; a dry run deletes nothing.
    assert_eq!(env.json(&["prune"])["unused_objects"], 0);
    env.ok(&["forget", &first[..8]]);
    let before = stored_bytes(&env);
    let dry = env.json(&["prune", "--dry-run"]);
    // big.bin alone is at least two chunks (4 MiB at most each; cut points depend on the key).
    assert!(dry["unused_objects"].as_u64().unwrap() >= 2, "{dry}");
    assert_eq!(stored_bytes(&env), before);
    let done = env.json(&["prune"]);
    // The deleted notes left chunks partly used: repacking them frees those chunks too.
    assert!(done["unused_objects"].as_u64().unwrap() >= dry["unused_objects"].as_u64().unwrap(), "{done}");
    let after = stored_bytes(&env);
    assert!(after + (5 << 20) < before, "5 MiB of big.bin reclaimed: {before} -> {after}");
    assert_eq!(env.json(&["check", "--read-data"])["findings"].as_array().unwrap().len(), 0);
    env.ok(&["restore", "latest", "--target", env.path("out").to_str().unwrap()]);
    common::assert_same_tree(&src, &env.path("out/src"));

    // B's catalogue still lists big.bin's chunks; its next backup must store them again.
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let out = machine_b(&["backup", src.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["summary"]["bytes_added"].as_u64().unwrap() >= big.len() as u64, "{v}");
    let out = machine_b(&["check", "--read-data", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), 0, "{v}");
    let restored = env.path("out-b");
    assert!(machine_b(&["restore", "latest", "--target", restored.to_str().unwrap()]).status.success());
    common::assert_same_tree(&src, &restored.join("src"));
}

#[test]
fn prune_repacks_chunks_that_deleted_small_files_left_mostly_unused() {
    let env = Env::new();
    let src = env.path("small");
    for i in 0..600u64 {
        let dir = src.join(format!("d{}", i % 6));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), text(4_000 + (i as usize % 50) * 100, i)).unwrap();
    }
    let first = env.json(&["backup", src.to_str().unwrap()])["id"].as_str().unwrap().to_string();
    // Three files in four go: the chunks they shared are a quarter used.
    for i in (0..600u64).filter(|i| i % 4 != 0) {
        std::fs::remove_file(src.join(format!("d{}/f{i}", i % 6))).unwrap();
    }
    let second = env.json(&["backup", src.to_str().unwrap()])["id"].as_str().unwrap().to_string();
    env.ok(&["forget", &first[..8]]);
    let before = stored_bytes(&env);

    // Below its limit prune only reports the dead weight; a dry run changes nothing.
    let kept = env.json(&["prune", "--max-unused", "unlimited"]);
    assert_eq!(kept["repack"]["chunks"], 0, "{kept}");
    assert!(kept["partly_used_unreferenced_bytes"].as_u64().unwrap() > 1_000_000, "{kept}");
    let before = before.min(stored_bytes(&env));
    let dry = env.json(&["prune", "--dry-run"]);
    assert!(dry["repack"]["chunks"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(stored_bytes(&env), before);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap()[0]["id"], second.as_str());

    let done = env.json(&["prune"]);
    let repack = &done["repack"];
    assert_eq!(repack["rewritten"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(repack["rewritten"][0][0], second.as_str());
    let after = stored_bytes(&env);
    // About 2.5 MB of files were stored; three quarters of them are gone for good now.
    assert!(after * 2 < before, "repacking reclaimed space: {before} -> {after}");
    assert!(done["partly_used_unreferenced_bytes"].as_u64().unwrap() * 20 < after, "{done}");
    assert_eq!(env.json(&["check", "--read-data"])["findings"].as_array().unwrap().len(), 0);
    let snapshots = env.json(&["snapshots"]);
    assert_eq!(snapshots.as_array().unwrap().len(), 1);
    assert_eq!(snapshots[0]["id"], repack["rewritten"][0][1]);
    env.ok(&["restore", "latest", "--target", env.path("out").to_str().unwrap()]);
    common::assert_same_tree(&src, &env.path("out/small"));
    // The next backup of the unchanged tree reads nothing and adds only trees.
    let next = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(next["summary"]["files_read"], 0, "{next}");
    // Nothing is left to repack.
    assert_eq!(env.json(&["prune"])["repack"]["chunks"], 0);
}

#[test]
fn prune_refuses_while_another_operation_holds_the_pool() {
    let env = Env::new();
    let src = tree(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let other = env.second_machine();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (repo, lock) = runtime.block_on(async {
        let config = cuckoo::Config::load(&other).unwrap();
        let pass = cuckoo::Passphrase::new(common::PASSPHRASE);
        let repo = cuckoo::Repository::open(config, &pass, &cuckoo::NoProgress).await.unwrap();
        let lock = cuckoo::internals::lock::acquire(repo.store(), "backup", false).await.unwrap();
        (repo, lock)
    });
    let out = env.run(&["prune"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked by backup"), "{err}");
    // Backups share: a second one runs beside the first.
    env.ok(&["backup", src.to_str().unwrap()]);
    // A live lock is not stale, so plain `unlock` keeps it.
    assert_eq!(env.json(&["unlock"])["removed"].as_array().unwrap().len(), 0);
    runtime.block_on(lock.release()).unwrap();

    // Under prune's exclusive lock: backups and restores wait their turn, except a restore
    // told not to lock (read-only credentials).
    let prune = runtime.block_on(cuckoo::internals::lock::acquire(repo.store(), "prune", true)).unwrap();
    let target = env.path("out");
    let restore = ["restore", "latest", "--target", target.to_str().unwrap()];
    assert!(String::from_utf8_lossy(&env.run(&restore).stderr).contains("locked by prune"));
    assert!(!env.run(&["backup", src.to_str().unwrap()]).status.success());
    env.ok(&[&["--no-lock"][..], &restore].concat());
    common::assert_same_tree(&src, &target.join("src"));
    runtime.block_on(prune.release()).unwrap();
    drop(repo);
    env.ok(&["prune"]);
}
