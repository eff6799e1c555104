//! The defects a new user met in the first hour (issue 15), each with a regression test
//! named after it.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
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
    // Long names so even the plain diff (one line per new file) outgrows a 64 KiB pipe
    // buffer: a listing that fits lets the writer finish before the reader leaves.
    for i in 0..3000 {
        std::fs::write(src.join(format!("new-{i:05}-{}", "n".repeat(60))), "x").unwrap();
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
            .env("XDG_CACHE_HOME", home.path().join("cache"))
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

/// Every path in snapshot `id`, as `ls` prints it (the last column).
fn listed(env: &Env, id: &str) -> Vec<String> {
    env.ok(&["ls", id]).lines().map(|l| l.split_whitespace().last().unwrap().to_string()).collect()
}

#[test]
fn regression_exclude_cache_and_star_pyc_left_out_nothing() {
    let env = Env::new();
    let src = env.path("src");
    for (path, body) in [
        ("app/main.py", &b"print()"[..]),
        ("app/main.pyc", b"\x00"),
        ("app/pkg/__pycache__/mod.cpython-311.pyc", b"\x00"),
        ("cache/blob", b"x"),
        ("deep/down/cache/blob", b"x"),
        ("cached-but-kept", b"x"),
        ("logs/debug.log", b"x"),
        ("logs/important.log", b"x"),
        ("Photos/IMG_1.JPG", b"x"),
        ("tool-cache/CACHEDIR.TAG", b"Signature: 8a477f597d28d172789f06886806bc55\n"),
        ("tool-cache/data", b"x"),
        ("private/.nobackup", b""),
        ("private/secret", b"x"),
        ("media/big.iso", &[7u8; 5000][..]),
    ] {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let patterns = env.path("excludes.txt");
    std::fs::write(&patterns, "# logs, but not the important one\n*.log\n!important.log\n").unwrap();
    let out = env.json(&[
        "backup",
        src.to_str().unwrap(),
        "--exclude",
        "*.pyc",
        "--exclude",
        "cache",
        "--iexclude",
        "*.jpg",
        "--exclude-file",
        patterns.to_str().unwrap(),
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-larger-than",
        "4KiB",
        "--exclude",
        "*.tmpp",
    ]);
    let paths = listed(&env, out["id"].as_str().unwrap());
    for gone in [
        "main.pyc",
        "mod.cpython-311.pyc",
        "src/cache",
        "deep/down/cache",
        "debug.log",
        "IMG_1.JPG",
        "tool-cache",
        "private",
        "big.iso",
    ] {
        assert!(!paths.iter().any(|p| p.ends_with(gone)), "{gone} excluded: {paths:?}");
    }
    for kept in ["src/app/main.py", "src/cached-but-kept", "src/logs/important.log", "src/Photos", "src/media"] {
        assert!(paths.iter().any(|p| p == kept), "{kept} kept: {paths:?}");
    }
    let counts: Vec<(String, u64)> = out["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["rule"].as_str().unwrap().to_string(), e["entries"].as_u64().unwrap()))
        .collect();
    let of = |rule: &str| counts.iter().find(|(r, _)| r == rule).map(|(_, n)| *n);
    assert_eq!(of("--exclude '*.pyc'"), Some(2));
    assert_eq!(of("--exclude 'cache'"), Some(2));
    assert_eq!(of("--iexclude '*.jpg'"), Some(1));
    assert_eq!(of("--exclude-caches"), Some(1));
    assert_eq!(of("--exclude-if-present '.nobackup'"), Some(1));
    assert_eq!(of("--exclude-larger-than 4 KiB"), Some(1));
    assert_eq!(of("--exclude '*.tmpp'"), Some(0));
    let warnings = out["warnings"].to_string();
    assert!(warnings.contains("--exclude '*.tmpp' matched nothing"), "{warnings}");
    assert!(!warnings.contains("'*.pyc' matched nothing"), "{warnings}");

    // The text summary says what each rule left out.
    let text = env.ok(&["backup", src.to_str().unwrap(), "--exclude", "*.pyc"]);
    assert!(text.contains("excluded 2 entries: 2 by --exclude '*.pyc'"), "{text}");

    // A bad pattern is refused before anything is stored, naming the option.
    let bad = env.run(&["backup", src.to_str().unwrap(), "--exclude", "[oops"]);
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && said.contains("--exclude '[oops': not a valid pattern"), "{said}");
}

#[test]
fn files_from_lists_the_paths_to_back_up() {
    let env = Env::new();
    let (a, b, c) = (env.path("a"), env.path("b"), env.path("c"));
    for d in [&a, &b, &c] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f"), d.to_str().unwrap()).unwrap();
    }
    let list = env.path("list");
    std::fs::write(&list, format!("# what to keep\n{}\n\n{}\n", a.display(), b.display())).unwrap();
    let out = env.json(&["backup", "--files-from", list.to_str().unwrap()]);
    let paths = listed(&env, out["id"].as_str().unwrap());
    assert!(paths.contains(&"a/f".to_string()) && paths.contains(&"b/f".to_string()), "{paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with('c')), "{paths:?}");
    let raw = env.path("raw");
    std::fs::write(&raw, format!("{}\0", c.display())).unwrap();
    let out = env.json(&["backup", "--files-from-raw", raw.to_str().unwrap()]);
    assert_eq!(listed(&env, out["id"].as_str().unwrap()), ["c", "c/f"]);
}

#[test]
fn regression_json_times_carry_their_offset_and_listings_are_json_lines() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"x").unwrap();
    let done = env.json(&["backup", src.to_str().unwrap()]);
    let id = done["id"].as_str().unwrap();
    let time = done["time"].as_str().unwrap();
    let parsed = chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"));
    assert_eq!(parsed.timestamp_nanos_opt().unwrap(), done["time_ns"].as_i64().unwrap(), "{time}");
    // ls and diff stream one JSON object per line (JSON Lines), as the README says.
    let lines = env.ok(&["ls", id, "--json"]);
    let entries: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 3, "{lines}");
    for e in &entries {
        chrono::DateTime::parse_from_rfc3339(e["mtime"].as_str().unwrap()).unwrap();
    }
}

#[test]
fn regression_a_backend_whose_root_is_a_file_is_a_lost_backend_not_a_failed_pool() {
    let env = Env::pool_with(5, "erasure=3+2", |_| {});
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), common::noise(3 << 20, 5)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let broken = env.path("backend-2");
    std::fs::remove_dir_all(&broken).unwrap();
    std::fs::write(&broken, b"not a directory").unwrap();

    assert!(env.ok(&["snapshots"]).contains("1 snapshot"));
    env.restore_matches("latest", &src, "out");
    // check reports the lost backend (exit 1) and names it alone.
    let check = env.run(&["check"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(said.contains("backend b2: cannot be listed") && !said.contains("backend b1: cannot"), "{said}");
    // backend list shows the others' usage and only b2 as down.
    let list = env.run(&["backend", "list"]);
    let said = String::from_utf8_lossy(&list.stdout);
    for line in said.lines().filter(|l| l.starts_with('b')) {
        assert!(!line.contains('?'), "usage is known for every backend: {said}");
        assert_eq!(line.starts_with("b2 "), line.contains("DOWN"), "{said}");
    }
    // Once the directory is back, repair restores full redundancy.
    std::fs::remove_file(&broken).unwrap();
    std::fs::create_dir(&broken).unwrap();
    env.ok(&["repair"]);
    assert!(env.ok(&["check"]).contains("no problems"));
}

#[test]
fn regression_two_paths_with_one_name_back_up_and_paths_are_stored_normalised() {
    let env = Env::new();
    let (a, b) = (env.path("data/a/x"), env.path("data/b/x"));
    for (d, body) in [(&a, "from a"), (&b, "from b")] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f"), body).unwrap();
    }
    let unnormalised = format!("{}/../b/./x", env.path("data/a").display());
    let done = env.json(&["backup", a.to_str().unwrap(), &unnormalised]);
    let stored: Vec<&str> = done["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(stored, [a.to_str().unwrap(), b.to_str().unwrap()], "absolute and normalised");
    // The root holds what tells the two apart; restore puts them below TARGET the same way.
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("a/x/f")).unwrap(), "from a");
    assert_eq!(std::fs::read_to_string(out.join("b/x/f")).unwrap(), "from b");
    // The next backup of the same paths finds them unchanged through the directories between.
    let again = env.json(&["backup", b.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(again["summary"]["files_read"], 0, "{again}");
    // One path alone is still its own name at the root.
    let one = env.json(&["backup", a.to_str().unwrap()]);
    assert!(env.ok(&["ls", one["id"].as_str().unwrap()]).lines().any(|l| l.ends_with(" x/f")));
}

/// What a restore tells its progress: the item total and the byte total up front, so a bar
/// can show "n/N items" and a time left, and every item counted up to it.
#[derive(Default)]
struct Recorded(std::sync::Mutex<(Vec<Begun>, u64, u64)>);

/// A phase's name, item total and byte total.
type Begun = (String, Option<u64>, Option<u64>);

impl cuckoo::Progress for Recorded {
    fn begin(&self, phase: &str, items: Option<u64>, bytes: Option<u64>) {
        self.0.lock().unwrap().0.push((phase.to_string(), items, bytes));
    }
    fn advance(&self, items: u64, bytes: u64) {
        let mut r = self.0.lock().unwrap();
        r.1 += items;
        r.2 += bytes;
    }
}

#[tokio::test]
async fn regression_restore_progress_knows_its_item_total() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::init_library_pool(dir.path(), 2, "copies=2").await;
    let repo = cuckoo::Repository::open(config, &cuckoo::NoPassphrase, &cuckoo::NoProgress).await.unwrap();
    let src = dir.path().join("src");
    for i in 0..25 {
        std::fs::create_dir_all(src.join(format!("d{}", i % 4))).unwrap();
        std::fs::write(src.join(format!("d{}/f{i}", i % 4)), common::text(1000 + i * 100, i as u64)).unwrap();
    }
    common::backup_with(&repo, &src).await;
    let (_, snapshot) = repo.find_snapshot("latest").unwrap();
    let seen = std::sync::Arc::new(Recorded::default());
    let options = cuckoo::RestoreOptions { target: dir.path().join("out"), path: None, ..Default::default() };
    repo.restore(&snapshot, options, seen.clone()).await.unwrap();
    let (begun, items, bytes) = &*seen.0.lock().unwrap();
    let restore = begun.iter().find(|(phase, ..)| phase == "restore").unwrap();
    assert_eq!(restore.1, Some(25), "the item total is known up front");
    assert_eq!(restore.2, Some(snapshot.summary.bytes));
    assert_eq!((*items, *bytes), (25, snapshot.summary.bytes), "and reached exactly");
}

#[test]
fn version_completions_and_man_pages_need_no_pool() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cuckoo"))
            .args(args)
            .env_remove("CUCKOO_CONFIG")
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run(&["version"]).starts_with(&format!("cuckoo {}", env!("CARGO_PKG_VERSION"))));
    let v: serde_json::Value = serde_json::from_str(&run(&["version", "--json"])).unwrap();
    assert_eq!(v["format"], cuckoo::FORMAT_VERSION);
    assert_eq!(v["placement"], cuckoo::PLACEMENT_VERSION);
    let man = dir.path().join("man");
    let bash = run(&["generate", "--bash-completion", "-", "--man", man.to_str().unwrap()]);
    assert!(bash.contains("_cuckoo") && bash.contains("--exclude-caches"));
    // It loads in bash and completes subcommands.
    let script = dir.path().join("cuckoo.bash");
    std::fs::write(&script, &bash).unwrap();
    let completed = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p cuckoo >/dev/null && COMP_WORDS=(cuckoo re) COMP_CWORD=1 && _cuckoo cuckoo re cuckoo && echo ${{COMPREPLY[@]}}",
            script.display()
        ))
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&completed.stdout);
    for word in ["restore", "rewrite", "repair", "rebalance"] {
        assert!(
            words.split_whitespace().any(|w| w == word),
            "{word}: {words} {}",
            String::from_utf8_lossy(&completed.stderr)
        );
    }
    for page in ["cuckoo.1", "cuckoo-backup.1", "cuckoo-backend-add.1"] {
        assert!(std::fs::read_to_string(man.join(page)).unwrap().contains(".TH"), "{page}");
    }
    assert!(!dir.path().join("config/cuckoo").exists(), "no default pool was made");
}

#[test]
fn snapshot_filters_host_tag_path_and_latest_n() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f"), d.to_str().unwrap()).unwrap();
    }
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    env.ok(&["backup", a_s, "--tag", "daily"]);
    env.ok(&["backup", b_s, "--tag", "daily", "--tag", "important"]);
    std::fs::write(a.join("g"), b"later").unwrap();
    env.ok(&["backup", a_s, "--tag", "weekly"]);
    let count = |args: &[&str]| {
        let mut all = vec!["snapshots"];
        all.extend_from_slice(args);
        env.json(&all).as_array().unwrap().len()
    };
    assert_eq!(count(&[]), 3);
    assert_eq!(count(&["--tag", "daily"]), 2);
    assert_eq!(count(&["--tag", "daily,important"]), 1, "a comma: every tag of the set");
    assert_eq!(count(&["--tag", "weekly", "--tag", "important"]), 2, "repeated: any set");
    assert_eq!(count(&["--path", a_s]), 2);
    assert_eq!(count(&["--path", &format!("{a_s}/../a")]), 2, "paths are normalised");
    assert_eq!(count(&["--host", "no-such-host"]), 0);
    let host = env.json(&["snapshots"])[0]["hostname"].as_str().unwrap().to_string();
    assert_eq!(count(&["--host", &host]), 3);
    assert_eq!(count(&["--latest", "1"]), 2, "the newest of each host and paths");

    // `latest` with a filter is the newest snapshot it passes.
    assert!(!env.ok(&["ls", "latest", "--tag", "daily", "--path", a_s]).contains("a/g"));
    assert!(env.ok(&["ls", "latest", "--path", a_s]).contains("a/g"));
    let out = env.path("out");
    env.ok(&["restore", "latest", "--tag", "important", "--target", out.to_str().unwrap()]);
    assert!(out.join("b/f").exists() && !out.join("a").exists());
    let none = env.run(&["restore", "latest", "--tag", "nope", "--target", out.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("no snapshot matches the filter"));

    // forget applies its policy to the snapshots the filter passes, and --prune follows.
    let plan = env.json(&["forget", "--keep-last", "1", "--path", a_s, "--dry-run"]);
    let decided = plan["snapshots"].as_array().unwrap();
    assert_eq!(decided.len(), 2, "only a's snapshots are considered: {plan}");
    assert_eq!(decided.iter().filter(|d| d["keep"] == false).count(), 1);
    let done = env.ok(&["forget", "--keep-last", "1", "--path", a_s, "--prune"]);
    assert!(done.contains("forgot 1 of 2 snapshots") && done.contains("unreferenced object"), "{done}");
    assert_eq!(count(&[]), 2);
}

#[test]
fn find_says_which_snapshots_hold_a_file() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("docs/old")).unwrap();
    std::fs::write(src.join("docs/Report.PDF"), b"v1").unwrap();
    std::fs::write(src.join("docs/old/notes.txt"), b"n").unwrap();
    let first = env.json(&["backup", src.to_str().unwrap()]);
    std::fs::remove_file(src.join("docs/Report.PDF")).unwrap();
    std::fs::write(src.join("docs/plan.pdf"), b"p").unwrap();
    let second = env.json(&["backup", src.to_str().unwrap()]);
    let (a, b) = (first["id"].as_str().unwrap(), second["id"].as_str().unwrap());

    let found = env.json(&["find", "*.pdf"]);
    let hits: Vec<(String, Vec<String>)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let paths = f["matches"].as_array().unwrap().iter().map(|m| m["path"].as_str().unwrap().to_string());
            (f["snapshot"].as_str().unwrap().to_string(), paths.collect())
        })
        .collect();
    assert_eq!(hits, [(b.to_string(), vec!["src/docs/plan.pdf".to_string()])], "case matters by default");
    let found = env.json(&["find", "-i", "*.pdf"]);
    assert_eq!(found.as_array().unwrap().len(), 2);
    assert_eq!(found[0]["snapshot"], a);
    assert_eq!(found[0]["matches"][0]["path"], "src/docs/Report.PDF");
    // A pattern with a slash is a path; --snapshot narrows; text names snapshots and counts.
    let text = env.ok(&["find", "src/*/old/notes.txt", "--snapshot", a]);
    assert!(text.contains(&format!("found in snapshot {}", &a[..8])) && text.contains("src/docs/old/notes.txt"));
    assert!(text.contains("1 entry in 1 snapshot"), "{text}");
    assert!(env.ok(&["find", "notes.txt", "--older", "1999-01-01"]).contains("0 entries in 0 snapshots"));
    let bad = env.run(&["find", "x", "--newer", "yesterday-ish"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a time"));
}

/// A backup of a directory that holds the pool itself (its local backends and catalogue)
/// leaves them out, even when the config names them through `.` or `..`.
#[test]
fn regression_a_backup_leaves_out_the_pool_however_the_config_spells_its_paths() {
    let env = Env::new();
    let config = std::fs::read_to_string(&env.config).unwrap();
    let dir = env.dir.path().display().to_string();
    // Every path in the config through a detour: `<dir>/backend-0` as `<dir>/./x/../backend-0`.
    std::fs::write(&env.config, config.replace(&format!("{dir}/"), &format!("{dir}/./x/../"))).unwrap();
    std::fs::create_dir_all(env.path("x")).unwrap();
    std::fs::write(env.path("mine.txt"), b"mine").unwrap();
    let done = env.json(&["backup", env.dir.path().to_str().unwrap()]);
    let listing = env.ok(&["ls", done["id"].as_str().unwrap()]);
    assert!(listing.contains("mine.txt"), "{listing}");
    for pool_part in ["backend-0", "backend-1", "backend-2", "catalogue.redb"] {
        assert!(!listing.contains(pool_part), "{pool_part} left out: {listing}");
    }
}

#[test]
fn restore_picks_entries_by_include_and_exclude_patterns() {
    let env = Env::new();
    let etc = env.path("etc");
    for (path, body) in [
        ("nginx/nginx.conf", "n"),
        ("nginx/mime.types", "m"),
        ("ssh/sshd_config", "s"),
        ("app.conf", "a"),
        ("empty/deep/none.txt", "x"),
        ("secret/keys.conf", "k"),
    ] {
        let file = etc.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, body).unwrap();
    }
    env.ok(&["backup", etc.to_str().unwrap()]);
    let out = env.path("out");
    let o = out.to_str().unwrap();
    env.ok(&["restore", "latest", "--target", o, "--include", "*.conf", "--exclude", "secret"]);
    let mut got: Vec<String> =
        common::walk_files(&out).iter().map(|p| p.strip_prefix(&out).unwrap().display().to_string()).collect();
    got.sort();
    assert_eq!(got, ["etc/app.conf", "etc/nginx/nginx.conf"], "only *.conf, and not below secret");
    assert!(!out.join("etc/empty").exists(), "directories that led to nothing are not left behind");
    assert!(!out.join("etc/ssh").exists());
    assert_eq!(std::fs::read(out.join("etc/nginx/nginx.conf")).unwrap(), b"n");

    // An anchored directory restores whole; an exclude still applies inside it.
    let out2 = env.path("out2");
    let anchored = format!("{}/nginx", etc.display());
    env.ok(&["restore", "latest", "--target", out2.to_str().unwrap(), "-i", &anchored, "-e", "*.types"]);
    assert!(out2.join("etc/nginx/nginx.conf").exists() && !out2.join("etc/nginx/mime.types").exists());
    assert!(!out2.join("etc/app.conf").exists());
    // A directory that was there before is kept even if nothing was restored into it.
    std::fs::create_dir_all(out2.join("etc/ssh")).unwrap();
    env.ok(&["restore", "latest", "--target", out2.to_str().unwrap(), "-i", "nothing-matches"]);
    assert!(out2.join("etc/ssh").is_dir());
    let bad = env.run(&["restore", "latest", "--target", o, "--include", "a["]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--include 'a['"));
}

#[test]
fn dump_writes_a_file_as_itself_and_a_directory_as_a_tar_or_zip_that_matches_the_source() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("docs/empty")).unwrap();
    std::fs::write(src.join("docs/a.txt"), common::text(3_000_000, 1)).unwrap();
    std::fs::write(src.join("b.bin"), common::noise(700_000, 2)).unwrap();
    std::fs::hard_link(src.join("b.bin"), src.join("b-link.bin")).unwrap();
    std::os::unix::fs::symlink("docs/a.txt", src.join("to-a")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);

    // A file: its bytes, on standard output.
    let out = env.run(&["dump", "latest:src/docs/a.txt"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(src.join("docs/a.txt")).unwrap());

    // A directory: a tar archive that GNU tar unpacks to the same tree.
    let tar = env.path("src.tar");
    env.ok(&["dump", "latest:src", "--target", tar.to_str().unwrap()]);
    let unpacked = env.path("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let status = std::process::Command::new("tar")
        .args(["-xpf", tar.to_str().unwrap(), "-C", unpacked.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    common::assert_same_tree(&src, &unpacked.join("src"));
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (unpacked.join("src/b.bin"), unpacked.join("src/b-link.bin"));
    assert_eq!(std::fs::metadata(a).unwrap().ino(), std::fs::metadata(b).unwrap().ino(), "hard links stay links");

    // As zip, streamed to standard output: Python's zipfile reads every entry back.
    let zip = env.run(&["dump", "latest:src", "--archive", "zip"]);
    assert!(zip.status.success(), "{}", String::from_utf8_lossy(&zip.stderr));
    let zip_file = env.path("src.zip");
    std::fs::write(&zip_file, &zip.stdout).unwrap();
    let unzipped = env.path("unzipped");
    let script = r#"
import sys, zipfile, json
z = zipfile.ZipFile(sys.argv[1])
z.extractall(sys.argv[2])
print(json.dumps({i.filename: [i.external_attr >> 16, list(i.date_time)] for i in z.infolist()}))
"#;
    let listed = std::process::Command::new("python3")
        .args(["-c", script, zip_file.to_str().unwrap(), unzipped.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let entries: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    for file in ["docs/a.txt", "b.bin", "b-link.bin"] {
        let got = std::fs::read(unzipped.join("src").join(file)).unwrap();
        assert_eq!(got, std::fs::read(src.join(file)).unwrap(), "{file}: a hard link's content under each name");
    }
    let mode = |name: &str| entries[name][0].as_u64().unwrap() as u32;
    assert_eq!(mode("src/to-a") & 0o170000, 0o120000, "a symlink: {entries}");
    assert_eq!(std::fs::read(unzipped.join("src/to-a")).unwrap(), b"docs/a.txt", "its target");
    assert_eq!(mode("src/docs/a.txt") & 0o7777, std::fs::metadata(src.join("docs/a.txt")).unwrap().mode() & 0o7777);
    assert!(entries.get("src/docs/empty/").is_some(), "empty directories too: {entries}");
    let mtime = std::fs::metadata(src.join("b.bin")).unwrap().mtime();
    let utc = chrono::DateTime::from_timestamp(mtime - mtime % 2, 0).unwrap().format("[%Y, %-m, %-d, %-H, %-M, %-S]");
    assert_eq!(entries["src/b.bin"][1].to_string().replace(',', ", "), utc.to_string());

    // The whole snapshot is `latest` or `latest:/`; a missing path says so.
    let whole = env.run(&["dump", "latest:/", "--target", env.path("all.tar").to_str().unwrap()]);
    assert!(whole.status.success());
    let missing = env.run(&["dump", "latest:src/nope"]);
    assert!(!missing.status.success());
}

#[test]
fn tag_adds_removes_and_sets_tags_and_the_snapshot_keeps_its_files() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "--tag", "old"]);
    let tags = || {
        let s = env.json(&["snapshots"]);
        let mut t: Vec<String> = s[0]["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().into()).collect();
        t.sort();
        (s.as_array().unwrap().len(), t)
    };
    let out = env.ok(&["tag", "latest", "--add", "keep,monthly", "--remove", "old"]);
    assert!(out.contains("changed the tags of 1 of 1 snapshots"), "{out}");
    assert_eq!(tags(), (1, vec!["keep".to_string(), "monthly".to_string()]), "the old record is gone");
    env.ok(&["tag", "--tag", "keep", "--set", "final"]);
    assert_eq!(tags(), (1, vec!["final".to_string()]));
    assert!(
        env.ok(&["tag", "latest", "--add", "final"]).contains("changed the tags of 0 of 1"),
        "no change, no new record"
    );
    env.ok(&["tag", "latest", "--set", ""]);
    assert_eq!(tags(), (1, vec![]));
    let restored = env.path("out");
    env.ok(&["restore", "latest", "--target", restored.to_str().unwrap()]);
    assert_eq!(std::fs::read(restored.join("src/f")).unwrap(), b"data");
    assert!(env.ok(&["check", "--read-data"]).contains("no problems"));
    let bad = env.run(&["tag", "latest"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("give --add, --remove or --set"));
}

#[test]
fn backup_stdin_stores_a_piped_stream_as_one_file_with_host_and_time_recorded() {
    use std::io::Write;
    let env = Env::new();
    // 9 MiB: several chunks, read from the pipe as it comes.
    let dump = common::text(9 << 20, 5);
    let mut child = env
        .command(&[
            "--json",
            "backup",
            "--stdin",
            "--stdin-filename",
            "db.sql",
            "--host",
            "db-server",
            "--time",
            "2026-01-02T03:04:05Z",
            "--tag",
            "nightly",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let body = dump.clone();
    let feeder = std::thread::spawn(move || stdin.write_all(&body).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let snaps = env.json(&["snapshots", "--host", "db-server"]);
    assert_eq!(snaps[0]["paths"][0], "/db.sql");
    assert!(snaps[0]["time"].as_str().unwrap().starts_with("2026-01-02T"), "{}", snaps[0]["time"]);
    let cat = env.run(&["dump", "latest:db.sql", "--host", "db-server"]);
    assert!(cat.stdout == dump, "the stream restores byte for byte");
    let restored = env.path("out");
    env.ok(&["restore", "latest", "--target", restored.to_str().unwrap()]);
    assert_eq!(std::fs::read(restored.join("db.sql")).unwrap(), dump);
    let bad = env.run(&["backup", "--stdin", "--stdin-filename", "a/b"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("give a file name"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn backup_dry_run_says_what_would_be_added_and_stores_nothing() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), common::noise(5 << 20, 9)).unwrap();
    std::fs::write(src.join("small"), b"s").unwrap();
    let stored = || (0..3).map(|i| common::count_files(&env.path(&format!("backend-{i}")))).sum::<usize>();
    let files_before = stored();
    let plan = env.json(&["backup", "--dry-run", src.to_str().unwrap()]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0, "no snapshot");
    assert_eq!(stored(), files_before, "nothing written to the backends");
    let done = env.json(&["backup", src.to_str().unwrap()]);
    let (p, d) = (&plan["summary"], &done["summary"]);
    assert_eq!(p["objects_added"], d["objects_added"], "the dry run counted what the backup added: {p} {d}");
    assert_eq!(p["bytes_added"], d["bytes_added"]);
    assert!(env.ok(&["backup", "-n", src.to_str().unwrap()]).contains("would add to the pool: 0 objects"));
}

#[test]
fn password_command_gives_the_passphrase_and_a_failing_one_says_so() {
    let env = Env::new();
    let with = |command: &str| {
        env.command(&["--password-command", command, "snapshots"]).env_remove("CUCKOO_PASSWORD").output().unwrap()
    };
    let ok = with(&format!("printf '%s\\n' '{}'", common::PASSPHRASE));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let failed = with("exit 3");
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("--password-command 'exit 3' failed"));
    let wrong = with("echo not-it");
    assert!(!wrong.status.success(), "a wrong passphrase opens nothing");
}

#[test]
fn ignore_ctime_and_ignore_inode_tell_unchanged_files_without_them() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let f = src.join("f");
    std::fs::write(&f, b"same bytes").unwrap();
    let s = src.to_str().unwrap();
    env.ok(&["backup", s]);
    let read = |extra: &[&str]| {
        let mut args = vec!["backup", s];
        args.extend_from_slice(extra);
        env.json(&args)["summary"]["files_read"].as_u64().unwrap()
    };
    // A chmod there and back changes only the ctime.
    let chmod_twice = || {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    chmod_twice();
    assert_eq!(read(&[]), 1, "ctime compared: read again");
    chmod_twice();
    assert_eq!(read(&["--ignore-ctime"]), 0, "ctime ignored: unchanged");
    // A copy over it with the same mtime is a new inode (and a new ctime).
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::fs::copy(&f, src.join("tmp")).unwrap();
    std::fs::File::options().write(true).open(src.join("tmp")).unwrap().set_modified(mtime).unwrap();
    std::fs::set_permissions(src.join("tmp"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(src.join("tmp"), &f).unwrap();
    assert_eq!(read(&["--ignore-inode"]), 1, "the ctime still differs");
    assert_eq!(read(&["--ignore-inode", "--ignore-ctime"]), 0, "size and mtime alone: unchanged");
}

#[test]
fn restore_verify_reads_files_back_and_reports_the_ones_that_differ() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), common::noise(6 << 20, 3)).unwrap();
    std::fs::write(src.join("small"), b"small").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let out = env.path("out");
    let done = env.json(&["restore", "latest", "--target", out.to_str().unwrap(), "--verify"]);
    assert_eq!(done["verified"], 2, "{done}");
    assert!(done["failed"].as_array().unwrap().is_empty());
    // A difference is found and named: restore/verify.rs's unit tests.
}

#[test]
fn restore_into_a_restored_tree_writes_only_what_changed_and_delete_makes_it_the_snapshot() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/a"), b"a").unwrap();
    std::fs::write(src.join("b"), common::noise(2 << 20, 4)).unwrap();
    std::os::unix::fs::symlink("d/a", src.join("link")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let out = env.path("out");
    let o = out.to_str().unwrap();
    env.ok(&["restore", "latest", "--target", o]);

    // Local changes: one file edited (new mtime), one extra file, one extra directory.
    std::fs::write(out.join("src/d/a"), b"edited").unwrap();
    std::fs::write(out.join("src/extra"), b"x").unwrap();
    std::fs::create_dir_all(out.join("src/d/more/deeper")).unwrap();
    let b_inode = std::fs::metadata(out.join("src/b")).unwrap().ino();

    let never = env.json(&["restore", "latest", "--target", o, "--overwrite", "never"]);
    assert_eq!(std::fs::read(out.join("src/d/a")).unwrap(), b"edited", "never: left as it was");
    assert!(never["unchanged"].as_u64().unwrap() >= 3, "{never}");

    let done = env.json(&["restore", "latest", "--target", o, "--overwrite", "if-changed", "--delete"]);
    assert_eq!(done["files"], 1, "only the edited file is written again: {done}");
    assert_eq!(done["deleted"], 2, "the extra file and directory: {done}");
    assert_eq!(std::fs::metadata(out.join("src/b")).unwrap().ino(), b_inode, "an unchanged file is left in place");
    common::assert_same_tree(&src, &out.join("src"));
    let bad = env.run(&["restore", "latest", "--target", o, "--delete", "--include", "*.c"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot be combined"));
}

/// Found on the last read of the change: `restore --delete` into a directory that held the
/// pool's own files (a local backend, the catalogue, the config) would have removed them.
#[test]
fn regression_restore_delete_never_removes_the_pools_own_files() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"f").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let root = env.path("");
    let done = env.json(&["restore", "latest", "--target", root.to_str().unwrap(), "--delete"]);
    let warnings = done["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("holds the pool's own data")), "{done}");
    for i in 0..3 {
        assert!(env.path(&format!("backend-{i}")).is_dir(), "backend-{i} survived");
    }
    assert!(env.config.exists(), "the config survived");
    assert!(env.ok(&["check", "--read-data"]).contains("no problems"));
    assert_eq!(std::fs::read(src.join("f")).unwrap(), b"f");
}

#[test]
fn rewrite_drops_a_file_from_snapshots_and_keeps_everything_else() {
    let env = Env::new();
    let src = env.mixed_tree(120, 0);
    let secret = src.join("d3/e10/secret.env");
    std::fs::write(&secret, b"TOKEN=hunter2").unwrap();
    std::fs::write(src.join("d1/app.conf"), b"conf").unwrap();
    let s = src.to_str().unwrap();
    env.ok(&["backup", s, "--tag", "daily"]);
    let original = env.json(&["snapshots"])[0]["short_id"].as_str().unwrap().to_string();

    // A dry run names what would go and changes nothing.
    let out = env.ok(&["rewrite", "latest", "-e", "*.env", "--dry-run"]);
    assert!(out.contains("would drop 1 file") && out.contains("src/d3/e10/secret.env"), "{out}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    let out = env.ok(&["rewrite", "latest", "-e", "*.nothing"]);
    assert!(out.contains("nothing matches") && out.contains("0 snapshots of 1 rewritten"), "{out}");

    let out = env.ok(&["rewrite", "latest", "-e", "*.env"]);
    assert!(out.contains("dropped 1 file") && out.contains("1 snapshot of 1 rewritten"), "{out}");
    let list = env.json(&["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "the original stays without --forget");
    let new = list.as_array().unwrap().iter().find(|s| s["short_id"] != original.as_str()).unwrap();
    let new_id = new["short_id"].as_str().unwrap().to_string();
    assert_eq!(new["tags"], serde_json::json!(["daily", "rewrite"]));
    assert_eq!(new["time"], list[0]["time"], "the time is kept");
    let old = list.as_array().unwrap().iter().find(|s| s["short_id"] == original.as_str()).unwrap();
    assert_eq!(new["summary"]["files"].as_u64().unwrap() + 1, old["summary"]["files"].as_u64().unwrap());

    // The new snapshot is the source without the secret, byte for byte and to the ns.
    let dir_mtime = std::fs::metadata(secret.parent().unwrap()).unwrap().modified().unwrap();
    std::fs::remove_file(&secret).unwrap();
    let dir = std::fs::File::open(secret.parent().unwrap()).unwrap();
    dir.set_times(std::fs::FileTimes::new().set_modified(dir_mtime)).unwrap();
    env.restore_matches(&new_id, &src, "out-new");
    let found = env.json(&["find", "secret.env"]);
    let holders: Vec<&str> = found.as_array().unwrap().iter().map(|f| &f["snapshot"].as_str().unwrap()[..8]).collect();
    assert_eq!(holders, [original.as_str()], "only the original still holds it");

    // --forget replaces the original; prune then deletes the secret's data; all checks.
    env.ok(&["rewrite", &original, "-e", "*.env", "--forget"]);
    let list = env.json(&["snapshots"]);
    assert!(list.as_array().unwrap().iter().all(|s| s["short_id"] != original.as_str()));
    assert!(env.json(&["find", "secret.env"]).as_array().unwrap().is_empty());
    env.ok(&["forget", &new_id]);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    // Repacking every shared chunk leaves no stored byte of the secret.
    let pruned = env.json(&["prune", "--max-unused", "0%"]);
    assert!(pruned["repack"]["freed_bytes"].as_u64().unwrap() >= 13, "{pruned}");
    assert!(env.ok(&["check", "--read-data"]).contains("no problems"));
    env.restore_matches("latest", &src, "out-after-prune");

    // --include keeps only what restore with it would write.
    env.ok(&["rewrite", "latest", "-i", "*.conf", "--forget"]);
    let out = env.path("out-conf");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    let files: Vec<_> = common::walk_files(&out).iter().map(|p| p.strip_prefix(&out).unwrap().to_owned()).collect();
    assert_eq!(files, [std::path::PathBuf::from("src/d1/app.conf")]);

    // What would leave nothing is kept, and the exit code says not everything was done.
    let emptied = env.run(&["rewrite", "latest", "-e", s]);
    assert_eq!(emptied.status.code(), Some(3), "{}", String::from_utf8_lossy(&emptied.stderr));
    assert!(String::from_utf8_lossy(&emptied.stderr).contains("nothing would be left"));
    assert!(env.ok(&["check"]).contains("no problems"));
}

#[test]
fn copy_moves_snapshots_to_a_pool_of_other_backends_and_keys_deduplicated() {
    let (a, b) = (Env::new(), Env::with_redundancy("erasure=2+1"));
    let src = a.mixed_tree(90, 1);
    std::fs::hard_link(src.join("big0.bin"), src.join("big0.link")).unwrap();
    std::os::unix::fs::symlink("d1/e1", src.join("shortcut")).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    let s = src.to_str().unwrap();
    a.ok(&["backup", s, "--host", "h1", "--tag", "weekly"]);
    a.ok(&["backup", s, "--host", "h2"]);
    let from = a.config.to_str().unwrap();
    let copy = |args: &[&str]| {
        let mut all = vec!["copy", "--from-config", from];
        all.extend_from_slice(args);
        common::run_ok(b.command(&all).env("CUCKOO_FROM_PASSWORD", common::PASSPHRASE))
    };

    let out = copy(&[]);
    assert!(out.contains("copied 2 snapshots of 2"), "{out}");
    let list = b.json(&["snapshots"]);
    let hosts: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["hostname"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["h1", "h2"]);
    assert_eq!(list[0]["tags"], serde_json::json!(["weekly"]));
    assert_eq!(list[0]["time"], a.json(&["snapshots"])[0]["time"], "the time is kept");
    b.restore_matches("latest", &src, "out-b");
    // The second copy found every chunk in the target already.
    let second = b.json(&["snapshots"])[1]["summary"]["objects_added"].as_u64().unwrap();
    assert!(second <= 2, "the same files again add at most tree objects: {second}");

    let out = copy(&[]);
    assert!(out.contains("already in this pool") && out.contains("copied 0 snapshots of 2"), "{out}");

    // A later snapshot copies only what changed; unchanged files are not read again.
    std::fs::write(src.join("d2/e2/f2.dat"), b"changed").unwrap();
    a.ok(&["backup", s, "--host", "h1"]);
    let copied = b
        .command(&["--json", "copy", "--from-config", from, "latest", "--host", "h1"])
        .env("CUCKOO_FROM_PASSWORD", common::PASSPHRASE)
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
    let done: serde_json::Value = serde_json::from_slice(&copied.stdout).unwrap();
    assert_eq!(done[0]["copied"], true, "{done}");
    let newest = b.json(&["snapshots", "--host", "h1", "--latest", "1"]);
    assert_eq!(newest[0]["summary"]["files_read"], 1, "only the changed file was read: {newest}");
    b.restore_matches("latest", &src, "out-b2");
    assert!(b.ok(&["check", "--read-data"]).contains("no problems"));

    let same = b
        .command(&["copy", "--from-config", b.config.to_str().unwrap()])
        .env("CUCKOO_FROM_PASSWORD", common::PASSPHRASE)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&same.stderr).contains("the same pool"),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
}

#[test]
fn global_limits_pace_all_backends_together() {
    // Two copies of 600 KB on three backends: 1.2 MB stored, about 400 KB per backend.
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("noise"), common::noise(600_000, 9)).unwrap();
    let started = std::time::Instant::now();
    env.ok(&["--limit-upload", "300k", "backup", src.to_str().unwrap()]);
    // At 300 KiB/s for the whole pool, after a one-second burst: at least ~2.9 s. Limits
    // of 300 KiB/s per backend would let it through in about one.
    let took = started.elapsed().as_secs_f64();
    assert!(took >= 2.5, "uploads shared the limit: {took:.2} s");
    let started = std::time::Instant::now();
    let out = env.path("out");
    env.ok(&["--limit-download", "200", "restore", "latest", "--target", out.to_str().unwrap()]);
    // 200 KiB/s (a bare number is KiB/s, as in restic) for 600 KB: at least ~1.9 s.
    let took = started.elapsed().as_secs_f64();
    assert!(took >= 1.5, "downloads shared the limit: {took:.2} s");
    assert_eq!(std::fs::read(out.join("src/noise")).unwrap(), common::noise(600_000, 9));
    let bad = env.run(&["--limit-upload", "fast", "snapshots"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("give a rate such as"));
}

#[test]
fn verbose_says_the_parent_and_lists_files_new_modified_and_unchanged() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    std::fs::write(src.join("b"), b"b").unwrap();
    let s = src.to_str().unwrap();
    let out = env.ok(&["-vv", "backup", s]);
    assert!(out.contains("no parent snapshot") && out.contains(&format!("new       {s}/a")), "{out}");
    std::fs::write(src.join("b"), b"bb").unwrap();
    std::fs::write(src.join("c"), b"c").unwrap();
    let out = env.ok(&["-vv", "backup", s]);
    assert!(out.contains("using parent snapshot"), "{out}");
    for line in [format!("unchanged {s}/a"), format!("modified  {s}/b"), format!("new       {s}/c")] {
        assert!(out.contains(&line), "{line}: {out}");
    }
    let one = env.ok(&["-v", "backup", s]);
    assert!(one.contains("using parent snapshot") && !one.contains("unchanged "), "-v says less: {one}");
    let target = env.path("out");
    let out = env.ok(&["-vv", "restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(out.contains(&format!("restored  {}", target.join("src/c").display())), "{out}");
    let json = env.ok(&["-vv", "--json", "backup", s]);
    assert!(serde_json::from_str::<serde_json::Value>(json.trim()).is_ok(), "--json output stays one value: {json}");
}

#[test]
fn a_copy_from_a_damaged_source_fails_naming_what_is_missing_and_writes_no_snapshot() {
    let (a, b) = (Env::new(), Env::new());
    let src = a.mixed_tree(10, 1);
    a.ok(&["backup", src.to_str().unwrap()]);
    // Every piece of every data object gone from the source's backends.
    for i in 0..3 {
        let _ = std::fs::remove_dir_all(a.path(&format!("backend-{i}/data")));
    }
    let failed = b
        .command(&["copy", "--from-config", a.config.to_str().unwrap()])
        .env("CUCKOO_FROM_PASSWORD", common::PASSPHRASE)
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("source pool") || err.contains("chunk"), "{err}");
    assert!(b.json(&["snapshots"]).as_array().unwrap().is_empty(), "no snapshot of a failed copy");
    assert!(b.ok(&["check"]).contains("no problems"));
}
