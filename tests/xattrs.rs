//! Extended attributes and POSIX ACLs: recorded by backup, restored by restore (and kept by
//! copy and rewrite), compared with `getfattr` and `getfacl`.
//!
//! A test the machine cannot run (no root for `security.*` and `trusted.*`, the `attr` or
//! `acl` tools missing, a scratch file system without user attributes) is reported as
//! ignored, the reason in its name, unless `CUCKOO_TEST_REQUIRE_XATTRS=1` (CI sets it),
//! which makes it fail instead. (`harness = false`: `main` lists the tests.)

mod common;

use std::path::Path;
use std::process::Command;

use common::{Env, run_ok};

/// Why these tests cannot run here, if they cannot.
fn cannot() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for security.* and trusted.* attributes".into());
    }
    for tool in ["getfattr", "setfattr", "getfacl", "setfacl"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!("needs {tool} (the attr and acl packages)"));
        }
    }
    let probe = tempfile::NamedTempFile::new().unwrap();
    if xattr::set(probe.path(), "user.probe", b"1").is_err() {
        return Some("needs a scratch file system with user attributes".into());
    }
    None
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let require = "CUCKOO_TEST_REQUIRE_XATTRS";
    let trials = vec![
        common::trial(
            "xattrs_and_acls_round_trip_through_backup_restore_copy_and_rewrite",
            cannot(),
            require,
            xattrs_and_acls_round_trip_through_backup_restore_copy_and_rewrite,
        ),
        common::trial(
            "a_restore_into_a_restored_tree_makes_its_attributes_the_snapshots",
            cannot(),
            require,
            a_restore_into_a_restored_tree_makes_its_attributes_the_snapshots,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn tool(dir: &Path, program: &str, args: &[&str]) -> String {
    run_ok(Command::new(program).current_dir(dir).args(args))
}

/// Every attribute of every entry below `dir` (symlinks themselves), hex values.
fn attributes(dir: &Path) -> String {
    tool(dir, "getfattr", &["-R", "-h", "-d", "-m", "-", "-e", "hex", "."])
}

/// Every ACL below `dir`, access and default.
fn acls(dir: &Path) -> String {
    tool(dir, "getfacl", &["-R", "-P", "."])
}

/// A tree with user, security and trusted attributes, binary values, access and default
/// ACLs, on files, directories and a symlink.
fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("shared/inner")).unwrap();
    std::fs::write(src.join("notes.txt"), b"notes").unwrap();
    std::fs::write(src.join("shared/report.pdf"), common::noise(400_000, 3)).unwrap();
    std::fs::write(src.join("shared/inner/plain"), b"no attributes").unwrap();
    std::os::unix::fs::symlink("notes.txt", src.join("link")).unwrap();
    let set = |path: &str, name: &str, value: &[u8]| xattr::set(src.join(path), name, value).unwrap();
    set("notes.txt", "user.comment", b"kept with the file");
    set("notes.txt", "user.binary", &[0, 1, 2, 255, 0]);
    set("notes.txt", "security.cuckoo", b"label");
    set("shared", "user.project", b"apollo");
    set("shared/report.pdf", "trusted.origin", b"scanner");
    set("link", "trusted.link", b"on the link itself");
    tool(&src, "setfacl", &["-m", "u:nobody:rw,g:daemon:r", "notes.txt"]);
    tool(&src, "setfacl", &["-m", "u:nobody:rwx", "shared"]);
    tool(&src, "setfacl", &["-d", "-m", "u:nobody:rx,g:daemon:rwx", "shared"]);
    tool(&src, "setfacl", &["-m", "u:daemon:r", "shared/report.pdf"]);
    src
}

fn xattrs_and_acls_round_trip_through_backup_restore_copy_and_rewrite() {
    let env = Env::new();
    let src = source(&env);
    let (want_attrs, want_acls) = (attributes(&src), acls(&src));
    assert!(want_acls.contains("default:user:nobody:r-x"), "{want_acls}");
    env.ok(&["backup", src.to_str().unwrap()]);

    let check = |out: &Path| {
        assert_eq!(attributes(out), want_attrs, "attributes of {}", out.display());
        assert_eq!(acls(out), want_acls, "ACLs of {}", out.display());
        common::assert_same_tree(&src, out);
    };
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    check(&out.join("src"));

    // A copy into a pool of other keys keeps them too.
    let other = Env::with_redundancy("copies=1");
    run_ok(
        other
            .command(&["copy", "--from-config", env.config.to_str().unwrap()])
            .env("CUCKOO_FROM_PASSWORD", common::PASSPHRASE),
    );
    let copied = other.path("out-copied");
    other.ok(&["restore", "latest", "--target", copied.to_str().unwrap()]);
    check(&copied.join("src"));

    // Rewriting keeps the attributes of what stays.
    env.ok(&["rewrite", "latest", "-e", "*.nothing-matches", "-e", "plain", "--forget"]);
    let rewritten = env.path("out-rewritten");
    env.ok(&["restore", "latest", "--target", rewritten.to_str().unwrap()]);
    std::fs::write(rewritten.join("src/shared/inner/plain"), b"no attributes").unwrap();
    assert_eq!(attributes(&rewritten.join("src")), want_attrs);

    // `dump` carries them as PAX records that GNU tar restores.
    let tar = env.path("dump.tar");
    env.ok(&["dump", "latest", "--target", tar.to_str().unwrap()]);
    let untarred = env.path("untarred");
    std::fs::create_dir_all(&untarred).unwrap();
    tool(&untarred, "tar", &["--xattrs", "--xattrs-include=*", "-xf", tar.to_str().unwrap()]);
    let user =
        |dir: &Path| tool(dir, "getfattr", &["-R", "-h", "-d", "-m", "^(user|trusted|security)\\.", "-e", "hex", "."]);
    assert_eq!(user(&untarred.join("src")), user(&src));

    // A changed attribute alone is a metadata change, and the next backup records it.
    xattr::set(src.join("notes.txt"), "user.comment", b"changed").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let ids: Vec<String> =
        env.json(&["snapshots"]).as_array().unwrap().iter().map(|s| s["short_id"].as_str().unwrap().into()).collect();
    let diff = env.ok(&["diff", &ids[0], &ids[1]]);
    assert!(diff.lines().any(|l| l.starts_with("U ") && l.ends_with("notes.txt")), "{diff}");
    assert!(env.ok(&["check", "--read-data"]).contains("no problems"));
}

fn a_restore_into_a_restored_tree_makes_its_attributes_the_snapshots() {
    let env = Env::new();
    let src = source(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let out = env.path("out");
    let target = out.to_str().unwrap();
    env.ok(&["restore", "latest", "--target", target]);
    let restored = out.join("src");
    // Drift in the restored tree: an attribute added, one changed, an ACL entry removed.
    xattr::set(restored.join("notes.txt"), "user.added", b"later").unwrap();
    xattr::set(restored.join("shared"), "user.project", b"gemini").unwrap();
    tool(&restored, "setfacl", &["-x", "u:daemon", "shared/report.pdf"]);
    env.ok(&["restore", "latest", "--target", target, "--overwrite", "if-changed"]);
    assert_eq!(attributes(&restored), attributes(&src));
    assert_eq!(acls(&restored), acls(&src));
}
