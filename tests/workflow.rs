//! A restic user's weekly workflow, replayed with cuckoo from end to end (issue 16's check):
//! two hosts backed up with tags over several weeks, a file found across snapshots, only
//! `*.conf` restored from one host's latest, a directory dumped as tar and compared, a
//! database dump piped in, the last three snapshots copied into a pool of other backends
//! and restored there, a snapshot rewritten without a file, and a retention run with prune.

mod common;

use std::path::Path;

use common::{Env, assert_same_tree};

const DAY: i64 = 86_400;

/// `days` before now, as `--time` takes it.
fn ago(days: i64) -> String {
    let t = chrono::Utc::now().timestamp() - days * DAY;
    chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339()
}

fn host_tree(root: &Path, host: &str) {
    for (path, body) in [
        ("etc/nginx/nginx.conf", format!("server_name {host};")),
        ("etc/app.conf", format!("host = {host}")),
        ("etc/motd", "welcome".to_string()),
        ("home/u/notes.txt", format!("notes of {host}")),
        ("home/u/.env", "TOKEN=secret".to_string()),
    ] {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, body).unwrap();
    }
    std::fs::write(root.join("home/u/big.bin"), common::noise(3 << 20, host.len() as u64)).unwrap();
}

fn ids(env: &Env, args: &[&str]) -> Vec<String> {
    let mut all = vec!["snapshots"];
    all.extend_from_slice(args);
    env.json(&all).as_array().unwrap().iter().map(|s| s["short_id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_restic_users_weekly_workflow() {
    let env = Env::new();
    let (a, b) = (env.path("host-a"), env.path("host-b"));
    host_tree(&a, "alpha");
    host_tree(&b, "beta");
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    // Three weekly backups of each host, the oldest a month ago.
    for (week, days) in [(1, 28), (2, 14), (3, 2)] {
        std::fs::write(a.join("home/u/notes.txt"), format!("alpha week {week}")).unwrap();
        env.ok(&["backup", sa, "--host", "alpha", "--tag", "weekly", "--time", &ago(days)]);
        env.ok(&["backup", sb, "--host", "beta", "--tag", "weekly", "--time", &ago(days)]);
    }
    assert_eq!(ids(&env, &["--host", "alpha"]).len(), 3);

    // find: which snapshots hold nginx.conf.
    let found = env.json(&["find", "nginx.conf", "--host", "alpha"]);
    assert_eq!(found.as_array().unwrap().len(), 3, "{found}");

    // Only *.conf from the latest snapshot of alpha.
    let confs = env.path("confs");
    env.ok(&["restore", "latest", "--host", "alpha", "-i", "*.conf", "--target", confs.to_str().unwrap()]);
    let mut got: Vec<String> =
        common::walk_files(&confs).iter().map(|p| p.strip_prefix(&confs).unwrap().display().to_string()).collect();
    got.sort();
    assert_eq!(got, ["host-a/etc/app.conf", "host-a/etc/nginx/nginx.conf"]);
    assert_eq!(std::fs::read_to_string(confs.join("host-a/etc/app.conf")).unwrap(), "host = alpha");

    // dump a directory as tar: it unpacks to the source.
    let tar = env.path("etc.tar");
    env.ok(&["dump", "latest:host-a/etc", "--host", "alpha", "--target", tar.to_str().unwrap()]);
    let unpacked = env.path("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    common::run_ok(std::process::Command::new("tar").args([
        "-xpf",
        tar.to_str().unwrap(),
        "-C",
        unpacked.to_str().unwrap(),
    ]));
    assert_same_tree(&a.join("etc"), &unpacked.join("host-a/etc"));

    // A database dump piped in.
    let dump = common::text(2 << 20, 4);
    let mut child = env
        .command(&["backup", "--stdin", "--stdin-filename", "db.sql", "--host", "alpha", "--tag", "db"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &dump).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(env.run(&["cat", "latest:db.sql", "--tag", "db"]).stdout, dump);

    // copy the last three snapshots into a pool of other backends and keys; restore there.
    let other = Env::with_redundancy("copies=1");
    let all = env.json(&["snapshots"]);
    let mut by_time: Vec<(i64, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["time_ns"].as_i64().unwrap(), s["short_id"].as_str().unwrap()))
        .collect();
    by_time.sort();
    let last3: Vec<&str> = by_time.iter().rev().take(3).map(|(_, id)| *id).collect();
    let mut args = vec!["copy", "--from-config", env.config.to_str().unwrap()];
    args.extend(last3.iter().copied());
    let copied = common::run_ok(other.command(&args).env("CUCKOO_FROM_PASSWORD", common::PASSPHRASE));
    assert!(copied.contains("copied 3 snapshots of 3"), "{copied}");
    let there = other.path("restored-b");
    other.ok(&["restore", "latest", "--host", "beta", "--target", there.to_str().unwrap()]);
    assert_same_tree(&b, &there.join("host-b"));
    assert_eq!(other.run(&["cat", "latest:db.sql"]).stdout, dump);

    // rewrite alpha's snapshots without the .env file, replacing them.
    env.ok(&["rewrite", "--host", "alpha", "-e", ".env", "--forget"]);
    let holders = env.json(&["find", ".env", "--host", "alpha"]);
    assert!(holders.as_array().unwrap().is_empty(), "{holders}");
    assert_eq!(env.json(&["find", ".env", "--host", "beta"]).as_array().unwrap().len(), 3);

    // Keep a week per host, and prune what nothing references any more.
    let out = env.ok(&["forget", "--keep-within", "7d", "--group-by", "host", "--prune"]);
    assert!(out.contains("prune") || out.contains("deleted"), "{out}");
    let left = env.json(&["snapshots"]);
    let left = left.as_array().unwrap();
    let week_ago_ns = (chrono::Utc::now().timestamp() - 8 * DAY) * 1_000_000_000;
    assert!(left.iter().all(|s| s["time_ns"].as_i64().unwrap() > week_ago_ns), "only the last week stays: {left:?}");
    let hosts: std::collections::BTreeSet<&str> = left.iter().map(|s| s["hostname"].as_str().unwrap()).collect();
    assert_eq!(hosts.into_iter().collect::<Vec<_>>(), ["alpha", "beta"]);
    assert!(env.ok(&["check", "--read-data"]).contains("no problems"));
    let last = env.path("last-a");
    env.ok(&["restore", "latest", "--host", "alpha", "--tag", "weekly", "--target", last.to_str().unwrap()]);
    std::fs::remove_file(a.join("home/u/.env")).unwrap();
    let restored_notes = std::fs::read_to_string(last.join("host-a/home/u/notes.txt")).unwrap();
    assert_eq!(restored_notes, "alpha week 3");
    assert!(!last.join("host-a/home/u/.env").exists());
}
