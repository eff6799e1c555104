//! Crash trials: backup, prune (with repacking), repair and rebalance are killed with
//! SIGKILL at random instants, again and again, and after every kill `check --read-data`
//! must find nothing wrong and every snapshot must restore exactly as it was taken.
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
}

impl Trials {
    fn snapshot_ids(&self) -> Vec<String> {
        self.snapshots().into_iter().map(|(id, _)| id).collect()
    }

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
fn killed_at_random_instants_backup_prune_repair_and_rebalance_lose_nothing() {
    let seed = std::env::var("CUCKOO_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash trials: CUCKOO_CRASH_SEED={seed}");
    let env = Env::new();
    let src = env.mixed_tree(40, 1);
    let mut t =
        Trials { env, src, rng: Rng(seed | 1), expected: BTreeMap::new(), span: BTreeMap::new(), states: 0, kills: 0 };
    // Learn each operation's span once, left alone.
    t.backup(false);
    t.backup(false);
    t.run("prune", &["prune", "--max-unused", "0%"], false);
    t.damage();
    t.run("repair", &["repair"], false);
    t.reweigh();
    t.run("rebalance", &["rebalance"], false);
    t.verify("the runs left alone");

    for round in 0..trials_per_operation() {
        t.backup(true);
        t.verify(&format!("killed backup {round}"));

        // Forget the oldest, then prune with repacking, killed.
        let oldest = t.snapshot_ids()[0].clone();
        t.env.ok(&["forget", &oldest]);
        t.backup(false);
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
    }
    eprintln!("crash trials: {} kills landed mid-run of {} trials", t.kills, 4 * trials_per_operation());
}
