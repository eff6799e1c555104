//! The local chunk cache (issue 18): what `cat` and the drive read is kept on this machine,
//! later reads and restores are served from it without the backends, and a damaged cache is
//! never believed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Env, noise};
use cuckoo::fs::{Drive, DriveOptions, Fs, OpenOptions};
use cuckoo::{NoPassphrase, NoProgress, Repository};

/// Move every backend's chunks away (or back): reads must then come from the cache.
fn hide_chunks(env: &Env, hidden: bool) {
    for i in 0..3 {
        let (data, away) = (env.path(&format!("backend-{i}/data")), env.path(&format!("backend-{i}/data.away")));
        let (from, to) = if hidden { (data, away) } else { (away, data) };
        if from.exists() {
            std::fs::rename(from, to).unwrap();
        }
    }
}

fn cached_files(root: &Path) -> Vec<PathBuf> {
    common::walk_files(root).into_iter().filter(|p| p.parent().unwrap().parent().unwrap().ends_with("chunks")).collect()
}

#[test]
fn what_cat_read_is_read_again_and_restored_without_the_backends() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let big = noise(5 << 20, 7);
    std::fs::write(src.join("big"), &big).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let cache = env.path("xdg-cache/cuckoo");

    hide_chunks(&env, true);
    assert!(!env.run(&["cat", "latest:src/big"]).status.success(), "nothing cached yet");
    hide_chunks(&env, false);
    let out = env.run(&["cat", "latest:src/big"]);
    assert!(out.status.success() && out.stdout == big);
    let files = cached_files(&cache);
    assert!(!files.is_empty(), "cat filled the cache");
    assert!(std::fs::read_dir(&cache).unwrap().flatten().any(|d| d.path().join("CACHEDIR.TAG").exists()));
    let stored: Vec<u8> = files.iter().flat_map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!stored.windows(64).any(|w| w == &big[..64]), "an encrypted pool's cache holds no plaintext");

    hide_chunks(&env, true);
    let out = env.run(&["cat", "latest:src/big"]);
    assert!(out.status.success() && out.stdout == big, "{}", String::from_utf8_lossy(&out.stderr));
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(std::fs::read(target.join("src/big")).unwrap(), big);
    assert!(!env.run(&["--no-cache", "cat", "latest:src/big"]).status.success(), "--no-cache asks the backends");

    // One bit of one cached chunk: that read fails rather than returning wrong bytes...
    let mut damaged = std::fs::read(&files[0]).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(&files[0], &damaged).unwrap();
    let out = env.run(&["cat", "latest:src/big"]);
    assert!(!out.status.success() && !out.stdout.ends_with(&big[big.len() - 1000..]));
    // ...and with the backends back it is fetched, right, and cached afresh.
    hide_chunks(&env, false);
    let out = env.run(&["cat", "latest:src/big"]);
    assert!(out.status.success() && out.stdout == big);
    assert_ne!(std::fs::read(&files[0]).unwrap(), damaged);
}

#[test]
fn a_cache_size_of_zero_or_a_bound_is_kept() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), noise(3 << 20, i)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let cache = env.path("xdg-cache/cuckoo");
    let cat = |args: &[&str]| assert!(env.run(args).status.success(), "{args:?}");
    cat(&["--cache-size", "0", "cat", "latest:src/f0"]);
    assert!(cached_files(&cache).is_empty(), "--cache-size 0 is no cache");
    for i in 0..4 {
        cat(&["--cache-size", "4MiB", "cat", &format!("latest:src/f{i}")]);
    }
    let held: u64 = cached_files(&cache).iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(held > 0 && held <= 4 << 20, "{held} bytes held under a 4 MiB bound");
    let shown = env.json(&["cache"]);
    assert_eq!(shown["bytes"].as_u64().unwrap(), held, "{shown}");
    let cleared = env.json(&["cache", "--clear"]);
    assert_eq!(cleared["cleared_bytes"].as_u64().unwrap(), held);
    assert!(cached_files(&cache).is_empty() && env.json(&["cache"])["bytes"] == 0);
    let dir = env.path("elsewhere");
    cat(&["--cache-dir", dir.to_str().unwrap(), "cat", "latest:src/f1"]);
    assert!(!cached_files(&dir).is_empty());
    let out = env.run(&["--cache-size", "lots", "snapshots"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("'lots' is not a size"));
}

#[test]
fn an_unknown_or_bad_cache_key_in_the_config_is_an_error() {
    let env = Env::new();
    let text = std::fs::read_to_string(env.path("pool.toml")).unwrap();
    std::fs::write(env.path("pool.toml"), format!("cache_size = \"huge\"\n{text}")).unwrap();
    let said = String::from_utf8_lossy(&env.run(&["snapshots"]).stderr).into_owned();
    assert!(said.contains("cache_size must be a size"), "{said}");
}

/// The drive's random reads: a fresh drive (nothing in memory) serves them from the disk
/// cache, block by block, identical to what was written, with the backends gone.
#[test]
fn random_reads_of_the_drive_come_from_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = rt.block_on(common::init_library_pool(dir.path(), 3, "copies=2"));
    let open = || Arc::new(rt.block_on(Repository::open(config.clone(), &NoPassphrase, &NoProgress)).unwrap());
    let body = noise(9 << 20, 3);
    let path = Path::new("/file");
    {
        let repo = open();
        let drive = Drive::open(repo.clone(), rt.handle().clone(), DriveOptions::default()).unwrap();
        drive.open(path, &OpenOptions::create()).unwrap().write_all(&body).unwrap();
        drive.close().unwrap();
    }
    {
        // Read once, in order: cached.
        let repo = open();
        let drive = Drive::open(repo.clone(), rt.handle().clone(), DriveOptions::default()).unwrap();
        assert_eq!(drive.read(path).unwrap(), body);
        drive.close().unwrap();
        repo.local_cache().unwrap().flush();
        assert!(repo.local_cache().unwrap().stats().written >= 2);
    }
    for i in 0..3 {
        std::fs::rename(dir.path().join(format!("backend-{i}/data")), dir.path().join(format!("away-{i}"))).unwrap();
    }
    // No memory cache to speak of: every read goes to the disk cache.
    let repo = open();
    let options = DriveOptions { cache_bytes: 1, ..DriveOptions::default() };
    let drive = Drive::open(repo.clone(), rt.handle().clone(), options).unwrap();
    let file = drive.open(path, &OpenOptions::read()).unwrap();
    let mut seed = 1u64;
    for _ in 0..200 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let offset = (seed >> 20) % (body.len() as u64 - 3);
        let mut buf = vec![0u8; 4096];
        let n = file.read_at(&mut buf, offset).unwrap();
        assert!(n > 0);
        assert_eq!(&buf[..n], &body[offset as usize..offset as usize + n], "at {offset}");
    }
    let stats = repo.local_cache().unwrap().stats();
    assert!(stats.hits >= 200 && stats.damaged == 0, "{stats:?}");
    drop(file);
    drive.close().unwrap();
}

/// A random read of the drive that misses every cache fetches and checks the one 64 KiB
/// segment holding it, not its chunk (object format 4): with one byte of segment 1 of
/// every chunk damaged on the only backend, and no local cache, reads that fall in other
/// segments return the written bytes, and a read in a damaged segment fails rather than
/// returning other bytes. In a plain and in an encrypted pool.
#[test]
fn random_reads_of_the_drive_fetch_only_the_segment_that_holds_them() {
    segment_reads(false);
    segment_reads(true);
}

fn segment_reads(encrypted: bool) {
    use cuckoo::internals::codec::{SEGMENT, plan_segments};
    use cuckoo::model::NodeKind;
    use cuckoo::{InitOptions, KdfParams, Passphrase};
    let segment = SEGMENT as u64;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut config =
        cuckoo::Config::parse(&dir.path().join("pool.toml"), &common::fs_pool_toml(dir.path(), 1)).unwrap();
    config.cache.size = Some(0);
    let passphrase = Passphrase::new("segments");
    let fast = KdfParams { memory_kib: 8 * 1024, iterations: 1, parallelism: 1 };
    let init =
        InitOptions { encrypt: encrypted, kdf: fast, redundancy: Some(cuckoo::Scheme::parse("copies=1").unwrap()) };
    rt.block_on(cuckoo::init(&config, &init, &passphrase)).unwrap();
    let open = || Arc::new(rt.block_on(Repository::open(config.clone(), &passphrase, &NoProgress)).unwrap());
    let body = noise(6 << 20, 5);
    let path = Path::new("/file");
    let repo = open();
    let drive = Drive::open(repo.clone(), rt.handle().clone(), DriveOptions::default()).unwrap();
    drive.open(path, &OpenOptions::create()).unwrap().write_all(&body).unwrap();
    drive.close().unwrap();
    let (_, snapshot) = repo.find_snapshot("latest").unwrap();
    let (node, _) = rt.block_on(repo.lookup(&snapshot, "file")).unwrap().unwrap();
    let NodeKind::File { content, .. } = node.kind else { panic!("a file") };
    assert!(content.len() >= 3, "several chunks");

    let mut damaged_at = Vec::new();
    let mut start = 0u64;
    for r in &content {
        let hex = r.id.to_hex();
        let file = dir.path().join(format!("backend-0/data/{}/{hex}", &hex[..2]));
        let mut stored = std::fs::read(&file).unwrap();
        assert_eq!(stored[4], 4, "chunks are written in format 4");
        if r.len as u64 > segment {
            let (_, at) = plan_segments(r.len as usize, encrypted, &(1..2));
            stored[at.start as usize + 100] ^= 1;
            std::fs::write(&file, stored).unwrap();
            damaged_at.push(start + segment + 100);
        }
        start += r.len as u64;
    }
    assert!(!damaged_at.is_empty());

    let repo = open();
    let options = DriveOptions { cache_bytes: 1, ..DriveOptions::default() };
    let drive = Drive::open(repo.clone(), rt.handle().clone(), options).unwrap();
    // A handle per read: a handle's first read counts as reading in order (and fetches
    // ahead) only near the file's start, so these all read at random.
    let read_at = |buf: &mut [u8], offset: u64| drive.open(path, &OpenOptions::read()).unwrap().read_at(buf, offset);
    let mut good = 0;
    let starts = content.iter().scan(0u64, |at, r| Some(std::mem::replace(at, *at + r.len as u64)));
    for (r, start) in content.iter().zip(starts) {
        // Segment 0 and, where there is one, segment 2: never the damaged one.
        for inside in [2000, 2 * segment + 300] {
            if inside + 4096 > r.len as u64 || start + inside < 2 << 20 {
                continue;
            }
            let offset = start + inside;
            let mut buf = vec![0u8; 4096];
            let n = read_at(&mut buf, offset).unwrap_or_else(|e| panic!("at {offset}: {e}"));
            assert_eq!(&buf[..n], &body[offset as usize..offset as usize + n], "at {offset}");
            good += 1;
        }
    }
    assert!(good >= 2, "{good} reads of undamaged segments");
    for offset in damaged_at.into_iter().filter(|o| *o >= 2 << 20) {
        let mut buf = vec![0u8; 100];
        let read = read_at(&mut buf, offset);
        assert!(read.is_err(), "a damaged segment at {offset} was read as {:?}", read.map(|n| &buf[..n]));
    }
    drive.close().unwrap();
}
