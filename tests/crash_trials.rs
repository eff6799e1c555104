//! Crash trials: backup, prune (with repacking), repair, rebalance and the live drive's
//! commit are killed with SIGKILL at random instants, again and again, and after every kill
//! `check --read-data` must find nothing wrong and every snapshot must restore exactly as it
//! was taken (the drive's: every folder copied in whole, or not at all).
//!
//! `CUCKOO_CRASH_TRIALS=N` sets the kills per operation (2 by default, as in CI; docs/
//! crash-trials.md gives a long run), `CUCKOO_CRASH_SEED=S` replays a sequence of kill
//! instants (each run prints its seed).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Env, assert_same_tree, noise, text};

/// A small deterministic generator: the kill instants of a run follow from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Trials {
    env: Env,
    src: PathBuf,
    rng: Rng,
    /// The source tree as each snapshot took it, by the snapshot's time (prune's repacking
    /// writes a snapshot anew under another id, with the same time and contents).
    expected: BTreeMap<i64, PathBuf>,
    /// How long each operation takes when left alone: kills fall within that span.
    span: BTreeMap<&'static str, Duration>,
    states: usize,
    kills: usize,
    /// Folders copied into the drive, by name: the drive holds each whole or not at all.
    drive_copies: BTreeMap<String, PathBuf>,
}

impl Trials {
    /// Ids and times of the snapshots, oldest first.
    fn snapshots(&self) -> Vec<(String, i64)> {
        let list = self.env.json(&["snapshots"]);
        let pairs = list.as_array().unwrap().iter();
        pairs.map(|s| (s["id"].as_str().unwrap().to_string(), s["time_ns"].as_i64().unwrap())).collect()
    }

    /// Change the source a little: edit two files, add one, drop one.
    fn mutate(&mut self) {
        let n = self.rng.below(1_000_000);
        let dir = self.src.join(format!("d{}", n % 4));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("new{n}.bin")), noise(1_500_000 + (n % 7) as usize * 100_000, n)).unwrap();
        for f in common::walk_files(&self.src).into_iter().take(2) {
            let mut bytes = std::fs::read(&f).unwrap();
            bytes.extend_from_slice(&text(5_000, n));
            std::fs::write(&f, bytes).unwrap();
        }
        let files = common::walk_files(&self.src);
        if files.len() > 30 {
            std::fs::remove_file(&files[self.rng.below(files.len() as u64) as usize]).unwrap();
        }
    }

    /// A copy of the source as it is now, for the snapshots taken of it.
    fn keep_state(&mut self) -> PathBuf {
        self.states += 1;
        let copy = self.env.path(&format!("states/{}/src", self.states));
        std::fs::create_dir_all(&copy).unwrap();
        let ok = Command::new("cp").arg("-a").arg(format!("{}/.", self.src.display())).arg(&copy).status().unwrap();
        assert!(ok.success());
        copy
    }

    /// Run `args` alone once (to learn how long it takes), or killed at a random instant.
    fn run(&mut self, op: &'static str, args: &[&str], kill: bool) {
        if !kill {
            let start = Instant::now();
            self.env.ok(args);
            self.span.insert(op, start.elapsed());
            return;
        }
        let span = self.span.get(op).copied().unwrap_or(Duration::from_millis(500));
        let at = Duration::from_micros(self.rng.below(span.as_micros() as u64 * 6 / 5));
        let mut child = self.env.command(args).stdout(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.code().is_none() {
            self.kills += 1;
        }
    }

    /// After a kill: nothing is wrong with the pool and every snapshot restores exactly.
    fn verify(&self, after: &str) {
        let out = self.env.run(&["check", "--read-data"]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "check after {after}: {stdout}{stderr}");
        self.restores_match(after);
    }

    fn restores_match(&self, after: &str) {
        for (id, time) in self.snapshots() {
            if self.drive_heads().contains(&id) {
                self.drive_head_matches(&id, after);
                continue;
            }
            let expected = self.expected.get(&time).unwrap_or_else(|| panic!("after {after}: unknown snapshot {id}"));
            let out = self.env.path("restored");
            let _ = std::fs::remove_dir_all(&out);
            self.env.ok(&["restore", &id, "--target", out.to_str().unwrap()]);
            assert_same_tree(expected, &out.join("src"));
            std::fs::remove_dir_all(&out).unwrap();
        }
    }

    /// A backup, left alone or killed; a snapshot it managed to write is of the state now.
    fn backup(&mut self, kill: bool) {
        self.mutate();
        let state = self.keep_state();
        let before = self.snapshots();
        let src = self.src.to_str().unwrap().to_string();
        self.run("backup", &["backup", &src], kill);
        for (_, time) in self.snapshots().into_iter().filter(|s| !before.contains(s)) {
            self.expected.insert(time, state.clone());
        }
    }

    /// Ids of the drive's head snapshots.
    fn drive_heads(&self) -> Vec<String> {
        let list = self.env.json(&["snapshots", "--tag", "drive-head"]);
        list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    }

    /// A drive head holds each folder copied in exactly as it was, or not at all.
    fn drive_head_matches(&self, id: &str, after: &str) -> Vec<String> {
        let out = self.env.path("restored-drive");
        let _ = std::fs::remove_dir_all(&out);
        self.env.ok(&["restore", id, "--target", out.to_str().unwrap()]);
        let mut present = Vec::new();
        for entry in std::fs::read_dir(&out).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let copied = self.drive_copies.get(&name);
            let copied = copied.unwrap_or_else(|| panic!("after {after}: the drive holds {name}, never copied in"));
            assert_same_tree(copied, &out.join(&name));
            present.push(name);
        }
        std::fs::remove_dir_all(&out).unwrap();
        present
    }

    /// Copy a new folder into the live drive and commit (the `copy_into_drive` example,
    /// which `cargo test` builds), left alone or killed.
    fn drive_commit(&mut self, kill: bool) {
        self.mutate();
        let name = format!("t{}", self.drive_copies.len());
        let folder = self.env.path(&format!("drive-in/{name}"));
        std::fs::create_dir_all(folder.parent().unwrap()).unwrap();
        let ok = Command::new("cp").arg("-a").arg(&self.src).arg(&folder).status().unwrap();
        assert!(ok.success());
        self.drive_copies.insert(name.clone(), folder.clone());
        let exe = std::path::Path::new(env!("CARGO_BIN_EXE_cuckoo")).parent().unwrap().join("examples/copy_into_drive");
        assert!(exe.exists(), "{} is missing: `cargo build --examples` (plain `cargo test` builds it)", exe.display());
        let template = self.env.command(&[]);
        let mut command = Command::new(exe);
        for (key, value) in template.get_envs() {
            if let Some(value) = value {
                command.env(key, value);
            }
        }
        command.arg(&folder).stdout(std::process::Stdio::null());
        if !kill {
            let start = Instant::now();
            assert!(command.status().unwrap().success());
            self.span.insert("drive", start.elapsed());
            let heads = self.drive_heads();
            let newest = heads.last().expect("a drive head");
            assert!(self.drive_head_matches(newest, "a drive commit").contains(&name));
            return;
        }
        let span = self.span.get("drive").copied().unwrap_or(Duration::from_millis(500));
        let at = Duration::from_micros(self.rng.below(span.as_micros() as u64 * 6 / 5));
        let mut child = command.spawn().unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        if child.wait().unwrap().code().is_none() {
            self.kills += 1;
        }
    }

    /// Flip backend b0's weight, so that rebalance has pieces to move.
    fn reweigh(&mut self) {
        let config = std::fs::read_to_string(&self.env.config).unwrap();
        let flipped = if config.contains("weight = 1\n") {
            config.replacen("weight = 1\n", "weight = 5\n", 1)
        } else {
            config.replacen("weight = 5\n", "weight = 1\n", 1)
        };
        std::fs::write(&self.env.config, flipped).unwrap();
    }

    /// Delete some of backend b1's pieces, so that repair has work.
    fn damage(&mut self) {
        let pieces = common::walk_files(&self.env.path("backend-1/data"));
        for p in pieces.iter().step_by(3) {
            std::fs::remove_file(p).unwrap();
        }
    }
}

fn trials_per_operation() -> usize {
    std::env::var("CUCKOO_CRASH_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

#[test]
fn killed_at_random_instants_backup_prune_repair_rebalance_and_drive_commit_lose_nothing() {
    let seed = std::env::var("CUCKOO_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash trials: CUCKOO_CRASH_SEED={seed}");
    let env = Env::new();
    let src = env.mixed_tree(40, 1);
    let mut t = Trials {
        env,
        src,
        rng: Rng(seed | 1),
        expected: BTreeMap::new(),
        span: BTreeMap::new(),
        states: 0,
        kills: 0,
        drive_copies: BTreeMap::new(),
    };
    // Learn each operation's span once, left alone.
    t.backup(false);
    t.backup(false);
    t.run("prune", &["prune", "--max-unused", "0%"], false);
    t.damage();
    t.run("repair", &["repair"], false);
    t.reweigh();
    t.run("rebalance", &["rebalance"], false);
    t.drive_commit(false);
    t.verify("the runs left alone");

    for round in 0..trials_per_operation() {
        t.backup(true);
        t.verify(&format!("killed backup {round}"));

        // Forget all but the last few (the drive's head stays: forget always keeps it), so
        // that long runs verify a bounded number of snapshots; then prune with repacking,
        // killed.
        t.backup(false);
        t.env.ok(&["forget", "--keep-last", "3", "--group-by", "host"]);
        t.run("prune", &["prune", "--max-unused", "0%"], true);
        t.verify(&format!("killed prune {round}"));

        // A killed repair leaves the pool no worse: everything still restores, and the
        // next repair finishes the job.
        t.damage();
        t.run("repair", &["repair"], true);
        t.restores_match(&format!("killed repair {round}"));
        t.env.ok(&["repair"]);
        t.verify(&format!("repair after killed repair {round}"));

        t.reweigh();
        t.run("rebalance", &["rebalance"], true);
        t.verify(&format!("killed rebalance {round}"));

        t.drive_commit(true);
        t.verify(&format!("killed drive commit {round}"));
    }
    eprintln!("crash trials: {} kills landed mid-run of {} trials", t.kills, 5 * trials_per_operation());
}
