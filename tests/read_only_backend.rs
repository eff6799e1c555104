//! A backend or the catalogue turned read-only under a pool, for real: the directory
//! bind-mounted read-only (root and mount rights needed; skipped, never passed, without
//! them). Every command says which backend refused and that running again will not help;
//! a forget stays forgotten on every machine; `repair` finishes it once the backend is
//! writable. A catalogue that cannot be written is used from a temporary copy.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Env;

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    // Where FUSE mounts are required, so are bind mounts: both need mount rights.
    let require = "CUCKOO_TEST_REQUIRE_FUSE";
    let trials = vec![
        common::trial(
            "regression_every_command_names_a_read_only_backend_and_forget_stays_forgotten",
            cannot(),
            require,
            regression_every_command_names_a_read_only_backend_and_forget_stays_forgotten,
        ),
        common::trial(
            "regression_commands_work_from_a_temporary_catalogue_when_its_file_cannot_be_written",
            cannot(),
            require,
            regression_commands_work_from_a_temporary_catalogue_when_its_file_cannot_be_written,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn cannot() -> Option<String> {
    let dir = tempfile::tempdir().ok()?;
    match ReadOnly::bind(dir.path()) {
        Ok(_) => None,
        Err(why) => Some(format!("cannot bind-mount a directory read-only ({why})")),
    }
}

/// `dir` bind-mounted read-only onto itself while this lives.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn bind(dir: &Path) -> Result<ReadOnly, String> {
        let run = |args: &[&str]| {
            let out = Command::new("mount").args(args).arg(dir).arg(dir).output().map_err(|e| e.to_string())?;
            if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
        };
        run(&["--bind"])?;
        let guard = ReadOnly(dir.to_path_buf());
        run(&["-o", "remount,bind,ro"])?;
        Ok(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn regression_every_command_names_a_read_only_backend_and_forget_stays_forgotten() {
    let env = Env::pool_with(3, "copies=2", |_| {});
    let src = env.mixed_tree(40, 1);
    let src = src.to_str().unwrap();
    env.ok(&["backup", src]);
    env.ok(&["backup", src, "--tag", "second"]);
    let ids = |env: &Env| -> Vec<String> {
        let list = env.json(&["snapshots"]);
        list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    };
    let before = ids(&env);
    assert_eq!(before.len(), 2);
    let mount = ReadOnly::bind(&env.path("backend-1")).unwrap();

    // `backend list` used to say "ok" for a backend that answers but takes no writes.
    let out = env.run(&["backend", "list", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b1 = rows[1]["error"].as_str().unwrap_or_default();
    assert!(rows[1]["healthy"] == false && b1.contains("refuses writes") && b1.contains("Read-only"), "{rows}");

    // forget said "forgot 1 of 2" and the snapshot came back at the next sync.
    let out = env.run(&["forget", &before[1]]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("backend 'b1' did not delete 1 record"), "{stdout}");
    assert!(stderr.contains("backend 'b1' refused") && stderr.contains("will not help"), "{stderr}");
    assert_eq!(ids(&env), before[..1]);

    // A backup succeeds around b1, and says so.
    let out = env.run(&["backup", src]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("backend 'b1' refused") && stderr.contains("read-only"), "{stderr}");
    let after = ids(&env);
    assert_eq!(after.len(), 2);
    assert!(!after.contains(&before[1]));

    // check used to call such a pool clean: it finds no damage, and says b1 refused its lock.
    let out = env.run(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("backend 'b1' refused"), "{stderr}");

    // repair cannot finish while b1 refuses, says why, and does not copy the forgotten
    // snapshot back.
    let out = env.run(&["repair"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backend 'b1' refused") && stderr.contains("will not help"), "{stderr}");
    assert_eq!(ids(&env), after);

    drop(mount);
    let out = env.ok(&["repair"]);
    assert!(out.contains("deleted 1 copy of forgotten snapshots"), "{out}");
    assert!(out.contains("removed 1 forget record"), "{out}");
    assert_eq!(ids(&env), after);
    for i in 0..3 {
        assert!(common::walk_files(&env.path(&format!("backend-{i}/forgotten"))).is_empty(), "b{i}");
        assert_eq!(common::walk_files(&env.path(&format!("backend-{i}/snapshots"))).len(), 2, "b{i}");
    }
    env.restore_matches("latest", Path::new(src), "out");
    env.ok(&["check", "--read-data"]);
}

fn regression_commands_work_from_a_temporary_catalogue_when_its_file_cannot_be_written() {
    let env = Env::with_catalogue("catalogues/pool.redb");
    let src = env.mixed_tree(30, 1);
    let src = src.to_str().unwrap();
    env.ok(&["backup", src]);
    let before = std::fs::read(env.path("catalogues/pool.redb")).unwrap();
    let mount = ReadOnly::bind(&env.path("catalogues")).unwrap();
    // Every command failed, the read-only ones too, calling the file damaged.
    for args in [&["snapshots"][..], &["ls", "latest"], &["check"], &["backup", src]] {
        let out = env.run(args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {said}");
        assert!(said.contains("cannot be opened for writing") && said.contains("temporary copy"), "{said}");
        assert!(!said.contains("damaged"), "{said}");
    }
    env.restore_matches("latest", Path::new(src), "out");
    drop(mount);
    assert_eq!(std::fs::read(env.path("catalogues/pool.redb")).unwrap(), before, "the file was not touched");
    // The backup made meanwhile is on the backends: the catalogue learns of it at sync.
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
}
