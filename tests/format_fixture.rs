//! A pool written by an older build (tests/fixtures/pool-v1: object format 1, trees without
//! extended attributes) is read by this one: its snapshots list, check, restore to the
//! manifest recorded when it was made, and take new backups beside the old ones.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const PASSPHRASE: &str = "fixture passphrase";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fixture's backends copied into a scratch directory (tests must not change it), with
/// a config naming them there.
struct OldPool {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl OldPool {
    fn new() -> OldPool {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!("catalogue = {:?}\n", dir.path().join("catalogue.redb"));
        for (name, weight) in [("a", 1), ("b", 1), ("c", 2)] {
            let root = dir.path().join(name);
            copy_dir(&fixture().join("pool-v1").join(name), &root);
            text.push_str(&format!(
                "[[backend]]\nname = {name:?}\nscheme = \"fs\"\nweight = {weight}\nroot = {root:?}\n"
            ));
        }
        let config = dir.path().join("pool.toml");
        std::fs::write(&config, text).unwrap();
        OldPool { dir, config }
    }

    fn ok(&self, args: &[&str]) -> String {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cuckoo"));
        c.args(args)
            .env("CUCKOO_CONFIG", &self.config)
            .env("CUCKOO_PASSWORD", PASSPHRASE)
            .env("XDG_CONFIG_HOME", self.dir.path().join("x"))
            .env("XDG_DATA_HOME", self.dir.path().join("x"))
            .env("XDG_CACHE_HOME", self.dir.path().join("x"));
        common::run_ok(&mut c)
    }

    fn restore(&self, snapshot: &str, name: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        self.ok(&["restore", snapshot, "--target", out.to_str().unwrap()]);
        out.join("src")
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn manifest(dir: &Path) -> String {
    let out = Command::new("bash").arg(fixture().join("manifest.sh")).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_pool_written_in_format_1_lists_checks_and_restores_byte_for_byte() {
    let pool = OldPool::new();
    let list: serde_json::Value = serde_json::from_str(pool.ok(&["snapshots", "--json"]).trim()).unwrap();
    let tags: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["tags"][0].as_str().unwrap()).collect();
    assert_eq!(tags, ["first", "second"]);
    assert_eq!(list[1]["hostname"], "fixture");
    assert!(pool.ok(&["check", "--read-data"]).contains("no problems"));

    let restored = pool.restore("latest", "out");
    let expected = std::fs::read_to_string(fixture().join("pool-v1/manifest.txt")).unwrap();
    assert_eq!(manifest(&restored), expected);
    let first = pool.restore(list[0]["short_id"].as_str().unwrap(), "out-first");
    assert!(!std::fs::read_to_string(first.join("docs/note5.txt")).unwrap().contains("more"));
}

#[test]
fn a_pool_written_in_format_1_takes_new_backups_and_old_snapshots_stay_readable() {
    let pool = OldPool::new();
    let src = pool.dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/new.txt"), b"written by this build").unwrap();
    pool.ok(&["backup", src.to_str().unwrap()]);
    assert!(pool.ok(&["check", "--read-data"]).contains("no problems"));
    let restored = pool.restore("latest", "out-new");
    assert_eq!(std::fs::read(restored.join("d/new.txt")).unwrap(), b"written by this build");
    let second = pool.ok(&["snapshots", "--tag", "second", "--json"]);
    let id =
        serde_json::from_str::<serde_json::Value>(second.trim()).unwrap()[0]["short_id"].as_str().unwrap().to_string();
    let again = pool.restore(&id, "out-second");
    let expected = std::fs::read_to_string(fixture().join("pool-v1/manifest.txt")).unwrap();
    assert_eq!(manifest(&again), expected);
}

/// The fixture's pool records (format 1: no placement version) are the bytes a build that
/// wrote version 1 left: a command of this build reads them and never rewrites them.
#[test]
fn a_pool_record_without_a_placement_version_is_left_as_it_was() {
    let pool = OldPool::new();
    let src = pool.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    pool.ok(&["backup", src.to_str().unwrap()]);
    pool.ok(&["repair"]);
    for name in ["a", "b", "c"] {
        let record = std::fs::read(pool.dir.path().join(name).join("cuckoo.pool")).unwrap();
        assert_eq!(record, std::fs::read(fixture().join("pool-v1").join(name).join("cuckoo.pool")).unwrap());
        assert_eq!(record[4], 1, "format version 1");
    }
}

/// A pool whose record names a placement version newer than this build's was made by a
/// newer build, whose writers spread objects by rules this one does not know: this build
/// reads it (snapshots, restore, check) and refuses, by name, everything that writes.
#[test]
fn a_pool_placed_by_a_newer_version_is_read_but_not_written() {
    use cuckoo::internals::crypto::Keys;
    use cuckoo::internals::store::{decode_pool_record, encode_pool_record};

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pool.toml");
    std::fs::write(&config, common::fs_pool_toml(dir.path(), 2)).unwrap();
    let env = common::Env { dir, config };
    env.ok(&["init", "--no-encrypt", "--redundancy", "copies=2"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), common::text(200_000, 1)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    for i in 0..2 {
        let path = env.path(&format!("backend-{i}/cuckoo.pool"));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes[4], 3, "a new pool's record is format 3");
        let mut record = decode_pool_record(&bytes, &Keys::plain()).unwrap();
        assert_eq!(record.placement, Some(cuckoo::PLACEMENT_VERSION), "a new pool records its placement");
        record.placement = Some(cuckoo::PLACEMENT_VERSION + 1);
        std::fs::write(&path, encode_pool_record(&record, &Keys::plain())).unwrap();
    }
    let newer = format!("placement version {}", cuckoo::PLACEMENT_VERSION + 1);
    for args in [vec!["backup", src.to_str().unwrap()], vec!["prune"], vec!["repair"], vec!["rebalance"]] {
        let out = env.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must refuse");
        assert!(stderr.contains(&newer) && stderr.contains("upgrade cuckoo"), "{args:?}: {stderr}");
    }
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1, "nothing was written");
    env.restore_matches("latest", &src, "out");
    assert!(env.ok(&["check", "--read-data"]).contains("no problems"));
}
