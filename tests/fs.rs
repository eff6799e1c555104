//! The filesystem conformance suite (`common/fs_suite.rs`) run against every `Fs`
//! implementation (memory, local directory, the pool's live drive, snapshot views), so a
//! program written against the trait behaves the same on each; and what only the drive
//! does: commits, reopening, hard links across directories, prune, outages.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use common::fs_suite::{assert_same, build_sample, conformance, kind, p};
use common::noise;
use cuckoo::fs::{self, Drive, DriveOptions, Fs, LocalFs, MemoryFs, OpenOptions, SnapshotFs};
use cuckoo::{BackupOptions, Config, ErrorKind, NoPassphrase, NoProgress, Repository};

#[test]
fn memory_fs_conforms() {
    conformance(&MemoryFs::new());
}

#[test]
fn local_fs_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&LocalFs::new(dir.path()).unwrap());
}

struct PoolEnv {
    dir: tempfile::TempDir,
    config: Config,
    rt: tokio::runtime::Runtime,
}

impl PoolEnv {
    fn new(scheme: &str) -> PoolEnv {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let config = rt.block_on(common::init_library_pool(dir.path(), 3, scheme));
        PoolEnv { dir, config, rt }
    }

    fn repo(&self) -> Arc<Repository> {
        Arc::new(self.rt.block_on(Repository::open(self.config.clone(), &NoPassphrase, &NoProgress)).unwrap())
    }

    fn drive(&self, repo: &Arc<Repository>) -> Drive {
        Drive::open(repo.clone(), self.rt.handle().clone(), DriveOptions::default()).unwrap()
    }
}

#[test]
fn live_drive_conforms_and_keeps_everything_across_reopen_and_a_lost_catalogue() {
    let env = PoolEnv::new("copies=2");
    let repo = env.repo();
    let drive = env.drive(&repo);
    conformance(&drive);
    let before = MemoryFs::new();
    fs::copy_tree(&drive, &p("/"), &before, &p("/")).unwrap();
    drive.close().unwrap();

    // Reopened with the same catalogue.
    let drive = env.drive(&repo);
    assert_same(&before, &p("/"), &drive, &p("/"));
    drive.close().unwrap();
    let catalogue = repo.catalogue_path().to_path_buf();
    drop(repo);

    // On another machine: a fresh catalogue rebuilt from the backends.
    std::fs::remove_file(catalogue).unwrap();
    let repo = env.repo();
    let drive = env.drive(&repo);
    assert_same(&before, &p("/"), &drive, &p("/"));
    // Only the latest head is kept.
    let heads =
        repo.snapshots().unwrap().into_iter().filter(|(_, s)| s.tags.contains(&fs::DRIVE_HEAD_TAG.into())).count();
    assert_eq!(heads, 1);
    drive.close().unwrap();
    let report = env.rt.block_on(repo.check(cuckoo::CheckOptions { read_data: Some(1.0) }, &NoProgress)).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

#[test]
fn commits_store_only_what_changed() {
    let env = PoolEnv::new("none");
    let repo = env.repo();
    let drive = env.drive(&repo);
    build_sample(&drive);
    let first = drive.commit().unwrap().expect("a first commit");
    let (_, head) = repo.find_snapshot(&first.to_hex()).unwrap();
    let s = &head.summary;
    assert_eq!((s.files, s.dirs, s.others, s.bytes), (7, 3, 1, 1 + 70_000 + 1_500_000 + 3 + 2 * 19));
    assert_eq!(drive.commit().unwrap(), None, "nothing changed, nothing committed");
    let stored = || repo.stats().unwrap().stored_bytes;
    let after_first = stored();
    drive.write(&p("/a/b/c/four"), b"four").unwrap();
    let second = drive.commit().unwrap().expect("a second commit");
    assert_ne!(first, second);
    // One small chunk and the changed directories, not the 1.5 MB file again.
    assert!(stored() - after_first < 10_000, "{} bytes added", stored() - after_first);
    // Deduplicated with backups: a backup of the same bytes adds no chunk.
    let src = env.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("three"), noise(1_500_000, 3)).unwrap();
    let done = env
        .rt
        .block_on(repo.backup(BackupOptions { paths: vec![src], ..Default::default() }, Arc::new(NoProgress)))
        .expect("a backup runs beside the open drive: both hold shared locks");
    assert!(done.snapshot.summary.bytes_added < 10_000, "{} bytes added", done.snapshot.summary.bytes_added);
    drive.close().unwrap();
}

#[test]
fn drive_hard_links_persist_and_a_change_through_one_name_reaches_names_not_loaded() {
    let env = PoolEnv::new("none");
    let repo = env.repo();
    let drive = env.drive(&repo);
    drive.create_dir_all(&p("/x/d1")).unwrap();
    drive.create_dir_all(&p("/y/d2")).unwrap();
    drive.write(&p("/x/d1/f"), b"before").unwrap();
    drive.hard_link(&p("/x/d1/f"), &p("/y/d2/g")).unwrap();
    drive.close().unwrap();

    // Reopened, only /x/d1 is entered before the change: /y/d2 holds a name not loaded.
    let drive = env.drive(&repo);
    let f = drive.open(&p("/x/d1/f"), &OpenOptions { write: true, ..Default::default() }).unwrap();
    f.write_at(b"AFTER", 0).unwrap();
    drop(f);
    drive.close().unwrap();
    let drive = env.drive(&repo);
    assert_eq!(drive.read(&p("/y/d2/g")).unwrap(), b"AFTERe");
    let (f, g) = (drive.metadata(&p("/x/d1/f")).unwrap(), drive.metadata(&p("/y/d2/g")).unwrap());
    assert_eq!((f.ino, f.nlink, g.nlink), (g.ino, 2, 2));

    // Removing the loaded name leaves one plain file, stored as such.
    drive.remove_file(&p("/x/d1/f")).unwrap();
    drive.close().unwrap();
    let drive = env.drive(&repo);
    let g = drive.metadata(&p("/y/d2/g")).unwrap();
    assert_eq!((g.nlink, drive.read(&p("/y/d2/g")).unwrap()), (1, b"AFTERe".to_vec()));
    assert!(!drive.exists(&p("/x/d1/f")).unwrap());
    drive.close().unwrap();
}

#[test]
fn prune_moves_live_drive_trees_out_of_mostly_unused_tree_packs() {
    let env = PoolEnv::new("none");
    let repo = env.repo();
    let drive = env.drive(&repo);
    let file = |i: usize| PathBuf::from(format!("/d{}/e{i}/f", i % 10));
    for i in 0..3_000 {
        drive.create_dir_all(file(i).parent().unwrap()).unwrap();
        drive.write(&file(i), b"first").unwrap();
    }
    drive.commit().unwrap();
    // Half the directories change: their old trees die, the other half stay where they are.
    for i in (0..3_000).step_by(2) {
        drive.write(&file(i), b"second").unwrap();
    }
    drive.close().unwrap();
    let prune = |max_unused| {
        let options = cuckoo::PruneOptions { dry_run: false, max_unused };
        env.rt.block_on(repo.prune(options, &NoProgress)).unwrap()
    };
    let kept = prune(f64::INFINITY);
    assert!(kept.partly_used_chunks > 0, "{kept:?}");
    let before = repo.stats().unwrap().stored_bytes;
    let done = prune(0.05);
    assert!(done.repack.tree_packs > 0, "{done:?}");
    assert_eq!(done.repack.rewritten.len(), 1, "the drive's head");
    assert!(repo.stats().unwrap().stored_bytes < before);
    let report = env.rt.block_on(repo.check(cuckoo::CheckOptions { read_data: Some(1.0) }, &NoProgress)).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let drive = env.drive(&repo);
    for i in 0..3_000 {
        let want: &[u8] = if i % 2 == 0 { b"second" } else { b"first" };
        assert_eq!(drive.read(&file(i)).unwrap(), want, "{}", file(i).display());
    }
    drive.close().unwrap();
}

#[test]
fn snapshots_of_the_drive_are_read_only_views_and_restore() {
    let env = PoolEnv::new("copies=2");
    let repo = env.repo();
    let drive = env.drive(&repo);
    build_sample(&drive);
    let expected = MemoryFs::new();
    fs::copy_tree(&drive, &p("/"), &expected, &p("/")).unwrap();
    let id = drive.snapshot(&["first".to_string()]).unwrap();
    drive.write(&p("/top"), b"changed after the snapshot").unwrap();
    drive.remove_dir_all(&p("/a/b")).unwrap();
    drive.commit().unwrap();

    let view = drive.snapshot_fs(&id.to_hex()).unwrap();
    assert_same(&expected, &p("/"), &view, &p("/"));
    assert!(!view.capabilities().write);
    assert_eq!(kind(view.write(&p("/top"), b"x")), ErrorKind::ReadOnly);
    assert_eq!(kind(view.remove_file(&p("/top"))), ErrorKind::ReadOnly);
    assert_eq!(kind(view.create_dir(&p("/new"), 0o755)), ErrorKind::ReadOnly);
    drive.close().unwrap();

    // `cuckoo restore` of the drive snapshot gives the same tree on disk.
    let target = env.dir.path().join("restored");
    let (_, snapshot) = repo.find_snapshot(&id.to_hex()).unwrap();
    let options = cuckoo::RestoreOptions { target: target.clone(), path: None, ..Default::default() };
    let done = env.rt.block_on(repo.restore(&snapshot, options, Arc::new(NoProgress))).unwrap();
    assert!(done.failed.is_empty(), "{:?}", done.failed);
    assert_same(&expected, &p("/"), &LocalFs::new(&target).unwrap(), &p("/"));
}

#[test]
fn a_backup_snapshot_reads_like_its_source() {
    let env = PoolEnv::new("none");
    let src = env.dir.path().join("src");
    let local = LocalFs::new(env.dir.path()).unwrap();
    local.create_dir(&p("/src"), 0o755).unwrap();
    build_sample(&LocalFs::new(&src).unwrap());
    let repo = env.repo();
    env.rt
        .block_on(repo.backup(BackupOptions { paths: vec![src.clone()], ..Default::default() }, Arc::new(NoProgress)))
        .unwrap();
    let view = SnapshotFs::new(repo.clone(), env.rt.handle().clone(), "latest").unwrap();
    assert_same(&local, &p("/src"), &view, &p("/src"));
    let m = view.metadata(&p("/src/a/one")).unwrap();
    assert_eq!(m.mode, 0o600);
}

/// Commit until it works: after an outage the backends stay marked down for a few
/// seconds, and the background commit of a mount retries like this.
fn commit_after_outage(drive: &Drive) {
    let start = std::time::Instant::now();
    while let Err(e) = drive.commit() {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "no commit after the outage: {e}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Make every backend of `repo` fail (or recover, with `None`).
fn set_faults(repo: &Repository, fault: Option<cuckoo::backend::Fault>) {
    for b in repo.backends() {
        match fault {
            Some(f) => b.faults().set(f),
            None => b.faults().clear(),
        }
    }
}

fn write_in_pieces(drive: &Drive, path: &str, data: &[u8], options: &OpenOptions) {
    let mut f = drive.open(&p(path), options).unwrap();
    for piece in data.chunks(128 << 10) {
        f.write_all(piece).unwrap();
    }
}

#[test]
fn files_written_front_to_back_need_no_spool() {
    let env = PoolEnv::new("none");
    let repo = env.repo();
    let spool = env.dir.path().join("spool");
    let options = DriveOptions { spool_dir: Some(spool.clone()), stream_bytes: 64 << 20, ..Default::default() };
    let drive = Drive::open(repo.clone(), env.rt.handle().clone(), options).unwrap();
    // Without its directory no spool can be made: all that follows works without one.
    std::fs::remove_dir(&spool).unwrap();
    let data = noise(20 << 20, 21);
    write_in_pieces(&drive, "/big", &data, &OpenOptions::create());
    assert!(drive.read(&p("/big")).unwrap() == data, "read back before any commit");
    drive.commit().unwrap();
    // Appending to a stored file streams too.
    let more = noise(3 << 20, 22);
    write_in_pieces(&drive, "/big", &more, &OpenOptions::append());
    let whole = [data.clone(), more].concat();
    assert!(drive.read(&p("/big")).unwrap() == whole);
    drive.commit().unwrap();
    // Cutting a file only shortens its chunk list.
    drive.set_len(&p("/big"), 5_000_000).unwrap();
    drive.commit().unwrap();
    // A write into the middle needs a spool for the rest of the file.
    let f = drive.open(&p("/big"), &OpenOptions { write: true, ..Default::default() }).unwrap();
    let err = f.write_at(b"PATCH", 1 << 20).expect_err("no spool directory");
    assert!(err.to_string().contains("spool"), "{err}");
    std::fs::create_dir(&spool).unwrap();
    f.write_at(b"PATCH", 1 << 20).unwrap();
    drop(f);
    drive.close().unwrap();
    let mut want = whole[..5_000_000].to_vec();
    want[1 << 20..(1 << 20) + 5].copy_from_slice(b"PATCH");
    let drive = env.drive(&repo);
    assert!(drive.read(&p("/big")).unwrap() == want, "after reopening");
    drive.close().unwrap();
}

#[test]
fn streams_stay_within_their_memory_while_the_backends_fail() {
    let env = PoolEnv::new("none");
    let repo = env.repo();
    let spool = env.dir.path().join("spool");
    let options = DriveOptions { spool_dir: Some(spool.clone()), stream_bytes: 8 << 20, ..Default::default() };
    let drive = Drive::open(repo.clone(), env.rt.handle().clone(), options).unwrap();
    set_faults(&repo, Some(cuckoo::backend::Fault::Fail));
    // Nothing can be stored: past 8 MiB in memory the file must go on in a spool, so
    // without a spool directory the write stops there.
    let data = noise(24 << 20, 23);
    std::fs::remove_dir(&spool).unwrap();
    let mut probe = drive.open(&p("/probe"), &OpenOptions::create()).unwrap();
    let taken = data.chunks(128 << 10).take_while(|piece| probe.write_all(piece).is_ok()).count() * (128 << 10);
    assert!(((4 << 20)..=(8 << 20)).contains(&taken), "{taken} bytes held in memory");
    drop(probe);
    assert!(drive.read(&p("/probe")).unwrap() == data[..taken], "the refused write lost nothing before it");
    drive.remove_file(&p("/probe")).unwrap();
    std::fs::create_dir(&spool).unwrap();
    write_in_pieces(&drive, "/big", &data, &OpenOptions::create());
    assert!(drive.read(&p("/big")).unwrap() == data, "readable from memory and spool");
    assert!(drive.commit().is_err());
    set_faults(&repo, None);
    commit_after_outage(&drive);
    drive.close().unwrap();
    let drive = env.drive(&repo);
    assert!(drive.read(&p("/big")).unwrap() == data, "after reopening");
    drive.close().unwrap();
}

#[test]
fn a_failed_commit_loses_nothing_and_the_next_one_stores_everything() {
    let env = PoolEnv::new("none");
    let repo = env.repo();
    let drive = env.drive(&repo);
    drive.write(&p("/kept"), b"stored before the outage").unwrap();
    drive.commit().unwrap();
    set_faults(&repo, Some(cuckoo::backend::Fault::Fail));
    // Written front to back while every backend fails: its streamed chunks cannot be
    // stored, so the commit fails and they stay in memory until stored.
    let data = noise(6 << 20, 11);
    let mut f = drive.open(&p("/streamed"), &OpenOptions::create()).unwrap();
    for piece in data.chunks(64 << 10) {
        f.write_all(piece).unwrap();
    }
    drop(f);
    assert!(drive.commit().is_err());
    assert!(drive.read(&p("/streamed")).unwrap() == data, "readable meanwhile");
    set_faults(&repo, None);
    commit_after_outage(&drive);

    // One backend failing: chunks and trees fail over to the others, but the head must
    // reach every backend of this pool (no redundancy), so the commit fails after the
    // file's chunks were stored. The file keeps its spool and the retry stores it.
    repo.backends()[0].faults().set(cuckoo::backend::Fault::Fail);
    let late = noise(2 << 20, 12);
    drive.write(&p("/late"), &late).unwrap();
    let failed = drive.commit().expect_err("the head cannot reach b0");
    assert!(failed.to_string().contains("b0"), "{failed}");
    repo.backends()[0].faults().clear();
    commit_after_outage(&drive);
    drive.close().unwrap();

    let drive = env.drive(&repo);
    assert!(drive.read(&p("/streamed")).unwrap() == data);
    assert!(drive.read(&p("/late")).unwrap() == late);
    assert_eq!(drive.read(&p("/kept")).unwrap(), b"stored before the outage");
    drive.close().unwrap();
    let report = env.rt.block_on(repo.check(cuckoo::CheckOptions { read_data: Some(1.0) }, &NoProgress)).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

#[derive(Debug, Clone)]
enum Op {
    /// Write `len` bytes of pattern `seed` at `offset`, or at the end when `None`.
    Write {
        offset: Option<u64>,
        len: usize,
        seed: u64,
    },
    SetLen(u64),
    Commit,
    Reopen,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (proptest::option::weighted(0.3, 0u64..3_000_000), 1usize..400_000, any::<u64>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        1 => (0u64..3_000_000).prop_map(Op::SetLen),
        1 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 16, ..Default::default() })]

    /// Any mix of appends, writes anywhere, truncates, commits and reopens leaves a drive
    /// file equal to a plain byte vector that went through the same steps: the stream,
    /// spool and copy-on-write paths agree.
    #[test]
    fn drive_files_match_a_model(ops in proptest::collection::vec(op(), 1..25)) {
        let env = PoolEnv::new("none");
        let repo = env.repo();
        let mut drive = env.drive(&repo);
        let mut model: Vec<u8> = Vec::new();
        let path = p("/f");
        drive.write(&path, b"").unwrap();
        for op in ops {
            match op {
                Op::Write { offset, len, seed } => {
                    let at = offset.unwrap_or(model.len() as u64);
                    let data = noise(len, seed);
                    let f = drive.open(&path, &OpenOptions { write: true, ..Default::default() }).unwrap();
                    f.write_at(&data, at).unwrap();
                    let end = at as usize + len;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[at as usize..end].copy_from_slice(&data);
                }
                Op::SetLen(len) => {
                    drive.set_len(&path, len).unwrap();
                    model.resize(len as usize, 0);
                }
                Op::Commit => {
                    drive.commit().unwrap();
                }
                Op::Reopen => {
                    drive.close().unwrap();
                    drive = env.drive(&repo);
                }
            }
            proptest::prop_assert!(drive.read(&path).unwrap() == model);
        }
        drive.close().unwrap();
        let drive = env.drive(&repo);
        proptest::prop_assert!(drive.read(&path).unwrap() == model);
        drive.close().unwrap();
    }
}
