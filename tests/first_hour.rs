//! The defects a new user met in the first hour (issue 15), each with a regression test
//! named after it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::Env;

/// A tree whose listing is far larger than a pipe's buffer.
fn many_files(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join(format!("a-file-with-a-rather-long-name-{i:05}.txt")), i.to_string()).unwrap();
    }
    src
}

#[test]
fn regression_a_closed_pipe_ends_ls_and_diff_quietly() {
    let env = Env::new();
    let src = many_files(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::remove_file(src.join("a-file-with-a-rather-long-name-00007.txt")).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join(format!("new-{i:05}")), "x").unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let listed = env.json(&["snapshots"]);
    let (a, b) = (listed[0]["id"].as_str().unwrap(), listed[1]["id"].as_str().unwrap());
    for args in [vec!["ls", "latest"], vec!["ls", "latest", "--json"], vec!["diff", a, b], vec!["diff", a, b, "--json"]]
    {
        // `cuckoo … | head -1`: read one line, then close the pipe.
        let mut child = env.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(!first.is_empty());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(141), "{args:?} exits as a process whose reader left: {err}");
    }
}

#[test]
fn regression_a_failed_mount_leaves_no_lock_behind() {
    let env = Env::new();
    let full = env.path("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("file"), "hidden if mounted over").unwrap();
    let missing = env.path("missing");
    let file = full.join("file");
    for (mountpoint, says) in [(&full, "not empty"), (&missing, "No such file"), (&file, "not a directory")] {
        let out = env.run(&["mount", mountpoint.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && said.contains(says), "{}: {said}", mountpoint.display());
        let locks: usize = (0..3).map(|i| common::count_files(&env.path(&format!("backend-{i}/locks")))).sum();
        assert_eq!(locks, 0, "a refused mount on {} left locks", mountpoint.display());
    }
    assert!(std::fs::read_dir(&missing).is_err(), "nothing was created");
}

#[test]
fn regression_forget_keep_last_0_alone_is_no_policy_and_forgets_nothing() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        std::fs::write(src.join("f"), i.to_string()).unwrap();
        env.ok(&["backup", src.to_str().unwrap()]);
    }
    for policy in [["--keep-last", "0"], ["--keep-daily", "0"]] {
        let out = env.run(&["forget", policy[0], policy[1]]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && said.contains("is no policy"), "{policy:?}: {said}");
    }
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 3);
    // With a real rule beside it, 0 simply adds nothing.
    env.ok(&["forget", "--keep-last", "2", "--keep-daily", "0"]);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
}

#[test]
fn regression_config_typos_are_errors_that_name_the_key_and_the_line() {
    let env = Env::new();
    let text = std::fs::read_to_string(&env.config).unwrap();
    let misspelt = text.replacen("weight = 2", "wieght = 2", 1);
    std::fs::write(&env.config, &misspelt).unwrap();
    let out = env.run(&["snapshots"]);
    let said = String::from_utf8_lossy(&out.stderr);
    let line = misspelt.lines().position(|l| l.starts_with("wieght")).unwrap() + 1;
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("line {line}: backend 'b1': unknown option 'wieght'; did you mean 'weight'?")),
        "{said}"
    );
    std::fs::write(&env.config, &text).unwrap();

    let out = env.run(&["backend", "add", "b9", "fs", &format!("rooot={}", env.path("b9").display())]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("unknown option 'rooot'; did you mean 'root'?"), "{said}");
    assert_eq!(std::fs::read_to_string(&env.config).unwrap(), text, "the config is unchanged");
}

#[test]
fn regression_a_failed_first_run_leaves_nothing_and_the_next_one_works() {
    let home = tempfile::tempdir().unwrap();
    let cuckoo = |password: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cuckoo"));
        c.arg("snapshots")
            .env_remove("CUCKOO_CONFIG")
            .env_remove("CUCKOO_PASSWORD")
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_DATA_HOME", home.path().join("data"))
            .stdin(Stdio::null());
        if let Some(p) = password {
            c.env("CUCKOO_PASSWORD", p);
        }
        c.output().unwrap()
    };
    let out = cuckoo(None);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("nothing was kept"), "{said}");
    assert!(!home.path().join("config/cuckoo/config.toml").exists(), "no config is written");
    assert_eq!(common::count_files(&home.path().join("data")), 0, "no pool files are left");

    let out = cuckoo(Some("secret"));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    for what in ["three directories on this disk", "encrypted", "stored twice", "catalogue"] {
        assert!(said.contains(what), "the first-run message says {what}: {said}");
    }
    assert!(cuckoo(Some("secret")).status.success(), "the pool opens again");
}
