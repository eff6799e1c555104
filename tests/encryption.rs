//! Encrypted pools (the default): what a provider sees, wrong passphrases, tampering, and the
//! key slot commands.

mod common;

use std::path::{Path, PathBuf};

use common::{Env, PASSPHRASE, assert_same_tree, noise, text};

/// Names and contents that must never appear on a backend.
const SECRET_NAMES: [&str; 3] = ["tax-return-2026.pdf", "diary-of-a-cuckoo", "passwords.kdbx"];

fn secret_tree(env: &Env) -> (PathBuf, Vec<Vec<u8>>) {
    let src = env.path("private");
    std::fs::create_dir_all(src.join(SECRET_NAMES[1])).unwrap();
    let mut contents = Vec::new();
    for (i, name) in [SECRET_NAMES[0], &format!("{}/entry.txt", SECRET_NAMES[1]), SECRET_NAMES[2]].iter().enumerate() {
        let mut body = format!("THE-SECRET-LINE-{i} of my {name}\n").into_bytes();
        body.extend(text(3000 + 5000 * i, i as u64));
        std::fs::write(src.join(name), &body).unwrap();
        contents.push(body);
    }
    // Incompressible data is stored raw when unencrypted: the strongest case for the grep.
    // Over twice the largest chunk (4 MiB), so it is always at least three chunks whatever
    // the pool's keyed cut points (3 MiB was sometimes one, failing the tamper test).
    let raw = noise(9 << 20, 9);
    std::fs::write(src.join("photo.raw"), &raw).unwrap();
    contents.push(raw);
    (src, contents)
}

fn backend_files(env: &Env) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() { walk(&p, out) } else { out.push(p) }
        }
    }
    let mut out = Vec::new();
    for i in 0..3 {
        walk(&env.path(&format!("backend-{i}")), &mut out);
    }
    out.sort();
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn backends_hold_no_name_content_or_plain_hash_of_the_tree() {
    let env = Env::new();
    let (src, contents) = secret_tree(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let mut needles: Vec<Vec<u8>> = SECRET_NAMES.iter().map(|n| n.as_bytes().to_vec()).collect();
    needles.push(b"private".to_vec());
    needles.push(src.to_str().unwrap().as_bytes().to_vec());
    for c in &contents {
        // Any 24-byte window from the start, middle and end of each file.
        for at in [0, c.len() / 2, c.len() - 24] {
            needles.push(c[at..at + 24].to_vec());
        }
        // An unkeyed BLAKE3 of the content would let a provider confirm a known file.
        needles.push(blake3::hash(c).as_bytes()[..16].to_vec());
        needles.push(blake3::hash(c).to_hex().as_bytes()[..32].to_vec());
    }
    needles.push(whoami().into_bytes());
    let files = backend_files(&env);
    assert!(files.len() >= 8, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let name = f.to_string_lossy();
        for n in &needles {
            assert!(!contains(&bytes, n), "{} found in {name}", String::from_utf8_lossy(n));
            assert!(!contains(name.as_bytes(), n), "{} in a path", String::from_utf8_lossy(n));
        }
    }

    // The right passphrase restores everything; `check --read-data` reads every object.
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_same_tree(&src, &out.join("private"));
    let v = env.json(&["check", "--read-data"]);
    assert_eq!(v["findings"].as_array().unwrap().len(), 0, "{v}");
}

fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap().unwrap().name
}

fn listing(env: &Env) -> Vec<(PathBuf, Vec<u8>)> {
    backend_files(env).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn a_wrong_or_missing_passphrase_is_a_clear_error_and_writes_nothing() {
    let env = Env::new();
    let (src, _) = secret_tree(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let before = listing(&env);
    for args in [&["backup", src.to_str().unwrap()][..], &["snapshots"], &["key", "add"]] {
        let out = env.command(args).env("CUCKOO_PASSWORD", "not it").env("CUCKOO_NEW_PASSWORD", "x").output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("wrong passphrase"), "{err}");
        assert!(!err.contains("not it"), "the passphrase is never echoed: {err}");
    }
    let out = env.command(&["snapshots"]).env_remove("CUCKOO_PASSWORD").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("CUCKOO_PASSWORD"), "{err}");
    assert!(listing(&env) == before, "a failed unlock changed the backends");
}

#[test]
fn tampered_swapped_and_planted_objects_are_detected_never_returned() {
    // One copy, so the damage cannot be read around (tests/redundancy.rs covers that).
    let env = Env::with_redundancy("none");
    let (src, _) = secret_tree(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let chunks: Vec<PathBuf> =
        backend_files(&env).into_iter().filter(|p| p.to_string_lossy().contains("/data/")).collect();
    assert!(chunks.len() >= 3);
    // Flip one bit in the middle of one chunk; put another chunk's bytes under a third name.
    let mut bytes = std::fs::read(&chunks[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&chunks[0], bytes).unwrap();
    std::fs::copy(&chunks[1], &chunks[2]).unwrap();

    let out = env.run(&["check", "--read-data", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{v}");
    assert!(findings.iter().all(|f| f["problem"].as_str().unwrap().contains("authentication failed")), "{v}");

    let out = env.path("out");
    let run = env.run(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "damaged files are reported, not restored wrong");
    for (name, original) in
        walk_files(&src).into_iter().map(|p| (p.strip_prefix(&src).unwrap().to_path_buf(), std::fs::read(&p).unwrap()))
    {
        // A file is either restored exactly or named as failed; never wrong bytes.
        if let Ok(restored) = std::fs::read(out.join("private").join(&name))
            && !String::from_utf8_lossy(&run.stderr).contains(name.to_str().unwrap())
        {
            assert!(restored == original, "{} restored with wrong bytes", name.display());
        }
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk_files(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn key_slots_add_change_and_remove_passphrases() {
    let env = Env::new();
    let (src, _) = secret_tree(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let fast = ["--kdf-memory", "8", "--kdf-iterations", "1"];
    let with = |pass: &str, args: &[&str]| env.command(args).env("CUCKOO_PASSWORD", pass).output().unwrap();

    let mut add = env.command(&[&["key", "add"][..], &fast].concat());
    assert!(add.env("CUCKOO_NEW_PASSWORD", "second").output().unwrap().status.success());
    let slots = env.json(&["key", "list"]);
    assert_eq!(slots.as_array().unwrap().len(), 2, "{slots}");
    let first =
        slots.as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"].as_str().unwrap().to_string();
    assert!(with("second", &["snapshots"]).status.success(), "the new passphrase opens the pool");

    // The slot in use cannot be removed with its own passphrase; with the other one it can.
    let own = with(PASSPHRASE, &["key", "remove", &first[..8]]);
    assert!(!own.status.success() && String::from_utf8_lossy(&own.stderr).contains("key passwd"));
    assert!(with("second", &["key", "remove", &first[..8]]).status.success());
    assert!(!with(PASSPHRASE, &["snapshots"]).status.success(), "the removed passphrase no longer opens");

    let mut passwd = env.command(&[&["key", "passwd"][..], &fast].concat());
    let out = passwd.env("CUCKOO_PASSWORD", "second").env("CUCKOO_NEW_PASSWORD", "third").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!with("second", &["snapshots"]).status.success());
    let out = env.path("out");
    assert!(with("third", &["restore", "latest", "--target", out.to_str().unwrap()]).status.success());
    assert_same_tree(&src, &out.join("private"));

    // A backend added later gets the key slots before the pool record.
    let added = env.path("backend-new");
    let add = with("third", &["backend", "add", "n", "fs", &format!("root={}", added.display())]);
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    assert_eq!(std::fs::read_dir(added.join("keys")).unwrap().count(), 1);
    assert!(with("third", &["snapshots"]).status.success());
}

#[test]
fn no_encrypt_must_be_asked_for_and_then_stores_plainly() {
    let env = Env::new();
    let plain = env.path("plain.toml");
    let root = env.path("plain-backend");
    std::fs::write(
        &plain,
        format!("catalogue = {:?}\n[[backend]]\nname = 'p'\nscheme = 'fs'\nroot = {root:?}\n", env.path("plain.redb")),
    )
    .unwrap();
    let run =
        |args: &[&str]| env.command(args).env("CUCKOO_CONFIG", &plain).env_remove("CUCKOO_PASSWORD").output().unwrap();
    let out = run(&["init", "--no-encrypt", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["encrypted"], false);
    assert!(!root.join("keys").exists());
    let (src, _) = secret_tree(&env);
    assert!(run(&["backup", src.to_str().unwrap()]).status.success(), "no passphrase asked for");
    let key = run(&["key", "list"]);
    assert!(String::from_utf8_lossy(&key.stderr).contains("not encrypted"));
}
