//! `cuckoo backend test` and `backend list`: verdicts a person can act on, also when a
//! backend is down, and options read from the environment.

mod common;

use common::Env;

#[test]
fn backend_test_gives_a_verdict() {
    let env = Env::new();
    let ok = env.json(&["backend", "test", "b1"]);
    assert!(ok["failure"].is_null(), "{ok}");
    let steps: Vec<&str> = ok["steps"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(steps, ["write", "read", "list", "delete"]);
    // The probe leaves nothing behind.
    assert!(!env.path("backend-1/cuckoo-probe").exists(), "not even its directory");

    let bad = env.path("bad.toml");
    std::fs::write(&bad, "[[backend]]\nname = 'far'\nscheme = 'webdav'\nendpoint = 'http://127.0.0.1:9'\n").unwrap();
    let out = env.command(&["backend", "test", "far"]).env("CUCKOO_CONFIG", &bad).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("backend 'far': FAILED at write"), "{text}");
    assert!(!text.contains("(permanent)") && !text.contains("(temporary)") && !text.contains("context:"), "{text}");

    let out = env.run(&["backend", "test", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no backend named 'nope'"));
}

#[test]
fn backend_list_shows_usage_and_a_down_backend() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), common::noise(3 << 20, 1)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let list = env.json(&["backend", "list"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["healthy"] == true && r["latency_ms"].as_f64().is_some()));
    assert!(rows.iter().map(|r| r["objects"].as_u64().unwrap()).sum::<u64>() >= 3);

    // Backend b2's directory becomes a plain file: it is down, the others still show.
    let root = env.path("backend-2");
    std::fs::rename(&root, env.path("backend-2.moved")).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    let out = env.run(&["backend", "list", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["healthy"], true);
    assert_eq!(rows[2]["healthy"], false);
    assert!(rows[2]["error"].as_str().unwrap().contains("backend 'b2'"), "{rows}");
    // Two copies survive one lost backend: the pool opens, so the usage of every backend,
    // the broken one's too, is known from the catalogue.
    assert!(rows.as_array().unwrap().iter().all(|r| r["objects"].as_u64().is_some()), "{rows}");
}

#[test]
fn options_can_come_from_the_environment() {
    let env = Env::new();
    let cfg = env.path("env.toml");
    std::fs::write(&cfg, "[[backend]]\nname = 'e'\nscheme = 'fs'\nroot = 'env:CUCKOO_TEST_ROOT'\n").unwrap();
    let root = env.path("from-env");
    let run =
        |args: &[&str]| env.command(args).env("CUCKOO_CONFIG", &cfg).env("CUCKOO_TEST_ROOT", &root).output().unwrap();
    assert!(run(&["init"]).status.success());
    assert!(root.join("cuckoo.pool").exists());
    let out = env.command(&["snapshots"]).env("CUCKOO_CONFIG", &cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("environment variable CUCKOO_TEST_ROOT is not set"), "{err}");
}
