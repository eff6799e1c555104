//! The filesystem conformance suite: one set of cases that every `Fs` implementation must
//! pass, as far as its capabilities reach (tests/fs.rs runs it on memory, local directories
//! and the live drive over local directories; tests/backends.rs on the live drive over a
//! pool of every backend kind, and on each service as plain files, `DalFs`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use cuckoo::ErrorKind;
use cuckoo::fs::{self, FileType, Fs, MemoryFs, OpenOptions};

use super::{noise, text};

pub fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

pub fn kind<T: std::fmt::Debug>(r: cuckoo::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

fn files_round_trip(fs: &dyn Fs) {
    fs.create_dir(&p("/rt"), 0o755).unwrap();
    fs.write(&p("/rt/empty"), b"").unwrap();
    assert_eq!(fs.read(&p("/rt/empty")).unwrap(), b"");
    assert_eq!(fs.metadata(&p("/rt/empty")).unwrap().len, 0);
    fs.write(&p("/rt/a.txt"), b"hello").unwrap();
    let m = fs.metadata(&p("rt/a.txt")).unwrap();
    assert_eq!((m.file_type, m.len), (FileType::File, 5));
    assert!(fs.metadata(&p("/rt")).unwrap().is_dir());
    assert!(fs.exists(&p("/rt/./a.txt")).unwrap());
    assert!(!fs.exists(&p("/rt/b.txt")).unwrap());
    // Overwrite with shorter content: nothing of the old tail is left.
    fs.write(&p("/rt/a.txt"), b"hi").unwrap();
    assert_eq!(fs.read(&p("/rt/a.txt")).unwrap(), b"hi");
    // Append, truncate, extend with zeros.
    let mut f = fs.open(&p("/rt/a.txt"), &OpenOptions::append()).unwrap();
    f.write_all(b" there").unwrap();
    drop(f);
    assert_eq!(fs.read(&p("/rt/a.txt")).unwrap(), b"hi there");
    fs.set_len(&p("/rt/a.txt"), 2).unwrap();
    fs.set_len(&p("/rt/a.txt"), 4).unwrap();
    assert_eq!(fs.read(&p("/rt/a.txt")).unwrap(), b"hi\0\0");
    // Writing past the end leaves a zero-filled gap.
    let f = fs.open(&p("/rt/sparse"), &OpenOptions::create()).unwrap();
    f.write_at(b"x", 10).unwrap();
    assert_eq!(f.len().unwrap(), 11);
    drop(f);
    assert_eq!(fs.read(&p("/rt/sparse")).unwrap(), b"\0\0\0\0\0\0\0\0\0\0x");
    assert_eq!(fs.copy(&p("/rt/sparse"), &p("/rt/copy")).unwrap(), 11);
    assert_eq!(fs.read(&p("/rt/copy")).unwrap(), fs.read(&p("/rt/sparse")).unwrap());
}

fn names(fs: &dyn Fs) {
    fs.create_dir(&p("/names"), 0o755).unwrap();
    let odd = ["ünïcödé ✓", "日本語のファイル", "with space", "-dash", ".hidden", "a\nnewline", "emoji 🦀"];
    for n in odd {
        fs.write(&Path::new("/names").join(n), n.as_bytes()).unwrap();
    }
    let long = "x".repeat(255);
    fs.write(&Path::new("/names").join(&long), b"long").unwrap();
    assert_eq!(kind(fs.write(&Path::new("/names").join("y".repeat(256)), b"")), ErrorKind::NameTooLong);
    let listed: Vec<String> =
        fs.read_dir(&p("/names")).unwrap().into_iter().map(|e| e.name.into_string().unwrap()).collect();
    let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).chain([long.clone()]).collect();
    want.sort();
    assert_eq!(listed, want, "read_dir is sorted by name bytes");
    for n in odd {
        assert_eq!(fs.read(&Path::new("/names").join(n)).unwrap(), n.as_bytes());
    }
    assert_eq!(kind(fs.metadata(&p("/../etc"))), ErrorKind::InvalidInput);
}

fn large_files(fs: &dyn Fs) {
    fs.create_dir(&p("/large"), 0o755).unwrap();
    let data = noise(9 << 20, 7);
    let mut f = fs.open(&p("/large/big"), &OpenOptions::create()).unwrap();
    for piece in data.chunks(100_000) {
        f.write_all(piece).unwrap();
    }
    drop(f);
    fs.sync().unwrap();
    assert_eq!(fs.metadata(&p("/large/big")).unwrap().len, data.len() as u64);
    let mut f = fs.open(&p("/large/big"), &OpenOptions::read()).unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert!(back == data, "large file content differs");
    // Ranged reads anywhere, across chunk boundaries.
    for (i, off) in [0u64, 1, 4095, 1 << 20, (5 << 20) + 17, data.len() as u64 - 3].into_iter().enumerate() {
        let mut buf = vec![0u8; 300_000 + i];
        f.seek(SeekFrom::Start(off)).unwrap();
        let n = f.read(&mut buf).unwrap();
        assert!(n > 0);
        assert_eq!(&buf[..n], &data[off as usize..off as usize + n], "read at {off}");
        let n = f.read_at(&mut buf, off).unwrap();
        assert_eq!(&buf[..n], &data[off as usize..off as usize + n], "read_at {off}");
    }
    assert_eq!(f.read_at(&mut [0u8; 10], data.len() as u64 + 5).unwrap(), 0);
    // Change a few bytes in the middle of a stored large file.
    let f = fs.open(&p("/large/big"), &OpenOptions { write: true, ..Default::default() }).unwrap();
    f.write_at(b"PATCH", 3 << 20).unwrap();
    drop(f);
    fs.sync().unwrap();
    let mut want = data.clone();
    want[3 << 20..(3 << 20) + 5].copy_from_slice(b"PATCH");
    assert!(fs.read(&p("/large/big")).unwrap() == want, "patched file differs");
}

fn renames(fs: &dyn Fs) {
    fs.create_dir_all(&p("/mv/a/deep")).unwrap();
    fs.create_dir(&p("/mv/b"), 0o755).unwrap();
    fs.write(&p("/mv/a/deep/f"), b"f").unwrap();
    fs.write(&p("/mv/x"), b"x").unwrap();
    fs.write(&p("/mv/y"), b"y").unwrap();
    // Over an existing file: replaced in one step.
    fs.rename(&p("/mv/x"), &p("/mv/y")).unwrap();
    assert_eq!(fs.read(&p("/mv/y")).unwrap(), b"x");
    assert!(!fs.exists(&p("/mv/x")).unwrap());
    // A directory with content, into another directory.
    fs.rename(&p("/mv/a"), &p("/mv/b/a2")).unwrap();
    assert_eq!(fs.read(&p("/mv/b/a2/deep/f")).unwrap(), b"f");
    assert_eq!(kind(fs.metadata(&p("/mv/a"))), ErrorKind::NotFound);
    // Over an empty directory: allowed; over a non-empty one: not.
    fs.create_dir(&p("/mv/empty"), 0o755).unwrap();
    fs.rename(&p("/mv/b/a2/deep"), &p("/mv/empty")).unwrap();
    assert_eq!(fs.read(&p("/mv/empty/f")).unwrap(), b"f");
    fs.create_dir(&p("/mv/other"), 0o755).unwrap();
    assert_eq!(kind(fs.rename(&p("/mv/other"), &p("/mv/empty"))), ErrorKind::DirectoryNotEmpty);
    assert_eq!(kind(fs.rename(&p("/mv/y"), &p("/mv/other"))), ErrorKind::IsADirectory);
    assert_eq!(kind(fs.rename(&p("/mv/other"), &p("/mv/y"))), ErrorKind::NotADirectory);
    assert_eq!(kind(fs.rename(&p("/mv/missing"), &p("/mv/z"))), ErrorKind::NotFound);
    // A file renamed to itself stays.
    fs.rename(&p("/mv/y"), &p("/mv/y")).unwrap();
    assert_eq!(fs.read(&p("/mv/y")).unwrap(), b"x");
}

fn removal_and_errors(fs: &dyn Fs) {
    fs.create_dir_all(&p("/rm/full/sub")).unwrap();
    fs.write(&p("/rm/full/sub/f"), b"1").unwrap();
    fs.write(&p("/rm/file"), b"1").unwrap();
    assert_eq!(kind(fs.remove_dir(&p("/rm/full"))), ErrorKind::DirectoryNotEmpty);
    assert_eq!(kind(fs.remove_dir(&p("/rm/file"))), ErrorKind::NotADirectory);
    assert_eq!(kind(fs.remove_file(&p("/rm/full"))), ErrorKind::IsADirectory);
    assert_eq!(kind(fs.remove_file(&p("/rm/nope"))), ErrorKind::NotFound);
    assert_eq!(kind(fs.open(&p("/rm/nope"), &OpenOptions::read())), ErrorKind::NotFound);
    assert_eq!(kind(fs.open(&p("/rm/full"), &OpenOptions::read())), ErrorKind::IsADirectory);
    assert_eq!(kind(fs.create_dir(&p("/rm/full"), 0o755)), ErrorKind::AlreadyExists);
    assert_eq!(kind(fs.create_dir(&p("/rm/no/such"), 0o755)), ErrorKind::NotFound);
    let new = OpenOptions { write: true, create_new: true, ..Default::default() };
    assert_eq!(kind(fs.open(&p("/rm/file"), &new)), ErrorKind::AlreadyExists);
    assert_eq!(kind(fs.metadata(&p("/rm/file/below"))), ErrorKind::NotADirectory);
    let ro = fs.open(&p("/rm/file"), &OpenOptions::read()).unwrap();
    assert_eq!(kind(ro.write_at(b"no", 0)), ErrorKind::PermissionDenied);
    fs.remove_dir_all(&p("/rm/full")).unwrap();
    fs.remove_file(&p("/rm/file")).unwrap();
    assert!(fs.read_dir(&p("/rm")).unwrap().is_empty());
    fs.remove_dir(&p("/rm")).unwrap();
}

fn links_modes_times(fs: &dyn Fs) {
    fs.create_dir(&p("/meta"), 0o755).unwrap();
    fs.write(&p("/meta/target"), b"pointed at").unwrap();
    fs.symlink(&p("target"), &p("/meta/link")).unwrap();
    fs.symlink(&p("nowhere"), &p("/meta/dangling")).unwrap();
    assert_eq!(fs.read_link(&p("/meta/link")).unwrap(), p("target"));
    assert_eq!(fs.metadata(&p("/meta/link")).unwrap().file_type, FileType::Symlink);
    assert_eq!(fs.metadata(&p("/meta/dangling")).unwrap().file_type, FileType::Symlink);
    assert_eq!(fs.read(&p("/meta/link")).unwrap(), b"pointed at", "open follows a symlink");
    assert_eq!(kind(fs.symlink(&p("x"), &p("/meta/link"))), ErrorKind::AlreadyExists);
    fs.set_mode(&p("/meta/target"), 0o640).unwrap();
    assert_eq!(fs.metadata(&p("/meta/target")).unwrap().mode, 0o640);
    let t = 1_234_567_890_123_456_789;
    fs.set_mtime(&p("/meta/target"), t).unwrap();
    fs.set_mtime(&p("/meta"), t + 1).unwrap();
    assert_eq!(fs.metadata(&p("/meta/target")).unwrap().mtime_ns, t);
    assert_eq!(fs.metadata(&p("/meta")).unwrap().mtime_ns, t + 1);
    let created = fs.open(&p("/meta/x"), &OpenOptions { mode: Some(0o600), ..OpenOptions::create() }).unwrap();
    drop(created);
    assert_eq!(fs.metadata(&p("/meta/x")).unwrap().mode & 0o777, 0o600);
}

fn hard_links(fs: &dyn Fs) {
    assert!(fs.capabilities().hard_links);
    fs.create_dir_all(&p("/hl/sub")).unwrap();
    fs.write(&p("/hl/a"), b"one file").unwrap();
    fs.hard_link(&p("/hl/a"), &p("/hl/sub/b")).unwrap();
    let (a, b) = (fs.metadata(&p("/hl/a")).unwrap(), fs.metadata(&p("/hl/sub/b")).unwrap());
    assert_eq!((a.ino, a.nlink, b.nlink), (b.ino, 2, 2), "two names of one inode");
    // A change through one name shows through the other: content, mode, mtime.
    fs.write(&p("/hl/sub/b"), b"changed through b").unwrap();
    fs.set_mode(&p("/hl/a"), 0o600).unwrap();
    fs.set_mtime(&p("/hl/a"), 1_500_000_000_000_000_001).unwrap();
    assert_eq!(fs.read(&p("/hl/a")).unwrap(), b"changed through b");
    let b = fs.metadata(&p("/hl/sub/b")).unwrap();
    assert_eq!((b.mode, b.mtime_ns), (0o600, 1_500_000_000_000_000_001));
    // Errors as POSIX gives them.
    assert_eq!(kind(fs.hard_link(&p("/hl/sub"), &p("/hl/dirlink"))), ErrorKind::NotPermitted);
    assert_eq!(kind(fs.hard_link(&p("/hl/a"), &p("/hl/sub/b"))), ErrorKind::AlreadyExists);
    assert_eq!(kind(fs.hard_link(&p("/hl/missing"), &p("/hl/c"))), ErrorKind::NotFound);
    // Renaming one name over another of the same file does nothing.
    fs.rename(&p("/hl/a"), &p("/hl/sub/b")).unwrap();
    assert!(fs.exists(&p("/hl/a")).unwrap() && fs.exists(&p("/hl/sub/b")).unwrap());
    // A third name; removing names leaves the others whole.
    fs.hard_link(&p("/hl/sub/b"), &p("/hl/c")).unwrap();
    assert_eq!(fs.metadata(&p("/hl/c")).unwrap().nlink, 3);
    fs.remove_file(&p("/hl/a")).unwrap();
    fs.remove_file(&p("/hl/sub/b")).unwrap();
    let c = fs.metadata(&p("/hl/c")).unwrap();
    assert_eq!((c.nlink, c.mode), (1, 0o600));
    assert_eq!(fs.read(&p("/hl/c")).unwrap(), b"changed through b");
    // Symlinks can have several names too (the link itself, not its target).
    fs.symlink(&p("c"), &p("/hl/sym")).unwrap();
    fs.hard_link(&p("/hl/sym"), &p("/hl/sym2")).unwrap();
    assert_eq!(fs.read_link(&p("/hl/sym2")).unwrap(), p("c"));
    assert_eq!(fs.metadata(&p("/hl/sym2")).unwrap().file_type, FileType::Symlink);
}

fn concurrent_readers_and_writers(fs: &dyn Fs) {
    fs.create_dir(&p("/conc"), 0o755).unwrap();
    let shared = text(200_000, 3);
    fs.write(&p("/conc/shared"), &shared).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let shared = &shared;
            s.spawn(move || {
                for i in 0..25u64 {
                    let path = PathBuf::from(format!("/conc/t{t}-{i}"));
                    let data = text(1_000 + (i * 997) as usize, t * 100 + i);
                    fs.write(&path, &data).unwrap();
                    assert_eq!(fs.read(&path).unwrap(), data);
                    assert!(fs.read(&p("/conc/shared")).unwrap() == *shared);
                }
            });
        }
    });
    assert_eq!(fs.read_dir(&p("/conc")).unwrap().len(), 101);
}

fn copies_between_implementations(fs: &dyn Fs) {
    let src = MemoryFs::new();
    build_sample(&src);
    let stats = fs::copy_tree(&src, &p("/"), fs, &p("/copied")).unwrap();
    assert_eq!((stats.files, stats.symlinks, stats.hard_links), (6, 1, 1));
    let back = MemoryFs::new();
    fs::copy_tree(fs, &p("/copied"), &back, &p("/")).unwrap();
    assert_same(&src, &p("/"), &back, &p("/"));
}

/// A small tree with the kinds every implementation holds.
pub fn build_sample(fs: &dyn Fs) {
    fs.create_dir_all(&p("/a/b/c")).unwrap();
    fs.write(&p("/a/one"), b"1").unwrap();
    fs.write(&p("/a/b/two"), &text(70_000, 2)).unwrap();
    fs.write(&p("/a/b/c/three"), &noise(1_500_000, 3)).unwrap();
    fs.write(&p("/a/empty"), b"").unwrap();
    fs.write(&p("/top"), b"top").unwrap();
    fs.symlink(&p("a/one"), &p("/link")).unwrap();
    fs.write(&p("/a/b/shared"), b"one file, two names").unwrap();
    fs.hard_link(&p("/a/b/shared"), &p("/a/b/c/also")).unwrap();
    fs.set_mode(&p("/a/one"), 0o600).unwrap();
    fs.set_mtime(&p("/a/b/two"), 1_000_000_007).unwrap();
    fs.set_mtime(&p("/a/b"), 2_000_000_009).unwrap();
}

/// Two trees hold the same names, kinds, bytes, link targets, modes and file mtimes.
pub fn assert_same(a: &dyn Fs, ap: &Path, b: &dyn Fs, bp: &Path) {
    let listing = |fs: &dyn Fs, root: &Path| {
        let mut out = Vec::new();
        fs::walk(fs, root, &mut |path, m| {
            out.push((path.strip_prefix(root).unwrap().to_path_buf(), m.clone()));
            Ok(())
        })
        .unwrap();
        out
    };
    let (left, right) = (listing(a, ap), listing(b, bp));
    let names = |v: &Vec<(PathBuf, fs::Metadata)>| v.iter().map(|(p, m)| (p.clone(), m.file_type)).collect::<Vec<_>>();
    assert_eq!(names(&left), names(&right));
    // Names that are one file on one side are one file on the other.
    let groups = |v: &Vec<(PathBuf, fs::Metadata)>| {
        let mut by_ino: std::collections::BTreeMap<u64, Vec<PathBuf>> = Default::default();
        for (path, m) in v.iter().filter(|(_, m)| m.nlink > 1 && !m.is_dir()) {
            by_ino.entry(m.ino).or_default().push(path.clone());
        }
        let mut g: Vec<Vec<PathBuf>> = by_ino.into_values().collect();
        g.sort();
        g
    };
    assert_eq!(groups(&left), groups(&right), "hard-link groups");
    for ((path, ma), (_, mb)) in left.iter().zip(&right) {
        let (pa, pb) = (ap.join(path), bp.join(path));
        match ma.file_type {
            FileType::File => {
                assert!(a.read(&pa).unwrap() == b.read(&pb).unwrap(), "{} differs", path.display());
                assert_eq!(ma.mode, mb.mode, "{} mode", path.display());
                assert_eq!(ma.mtime_ns, mb.mtime_ns, "{} mtime", path.display());
            }
            FileType::Symlink => assert_eq!(a.read_link(&pa).unwrap(), b.read_link(&pb).unwrap()),
            _ => {}
        }
    }
}

/// The suite every `Fs` runs: first what holds whatever the capabilities, then each part
/// the capabilities promise. A part they leave out is checked to be refused by name and
/// said as skipped, so a store of plain objects (`DalFs`) runs the same suite as the drive.
pub fn conformance(fs: &dyn Fs) {
    let caps = fs.capabilities();
    assert!(caps.write);
    plain_files(fs);
    let mut skipped = Vec::new();
    let mut part = |wanted: bool, name: &str, run: &dyn Fn(&dyn Fs)| {
        if wanted { run(fs) } else { skipped.push(name.to_string()) }
    };
    removal_and_errors(fs);
    concurrent_readers_and_writers(fs);
    // A disk's file system: writes anywhere, links, modes, times, atomic renames of
    // directories too, names up to NAME_MAX bytes.
    let disk = caps.random_write && caps.symlinks && caps.modes && caps.mtimes && caps.atomic_rename;
    part(caps.random_write, "files_round_trip (appends, writes past the end)", &files_round_trip);
    part(caps.random_write, "large_files (writes at any offset)", &large_files);
    part(disk, "names (the 255-byte limit of a disk's names)", &names);
    part(disk, "renames (of directories)", &renames);
    part(disk, "links_modes_times", &links_modes_times);
    part(caps.hard_links, "hard_links", &hard_links);
    part(
        caps.symlinks && caps.hard_links,
        "copies_between_implementations (with links)",
        &copies_between_implementations,
    );
    if !skipped.is_empty() {
        eprintln!("conformance: skipped, the capabilities leave them out: {}", skipped.join("; "));
    }
}

/// What every file system holds to, whatever its capabilities: files written whole and
/// read in ranges, names, errors as POSIX names them, renames of files, threads, trees
/// copied in and out; and what the capabilities leave out refused by name.
fn plain_files(fs: &dyn Fs) {
    let caps = fs.capabilities();
    fs.create_dir(&p("/pf"), 0o755).unwrap();
    fs.write(&p("/pf/a.txt"), b"hello").unwrap();
    let m = fs.metadata(&p("/pf/a.txt")).unwrap();
    assert_eq!((m.file_type, m.len), (FileType::File, 5));
    assert!(fs.metadata(&p("/pf")).unwrap().is_dir());
    assert!(fs.exists(&p("/pf/./a.txt")).unwrap() && !fs.exists(&p("/pf/b.txt")).unwrap());
    fs.write(&p("/pf/a.txt"), b"hi").unwrap();
    assert_eq!(fs.read(&p("/pf/a.txt")).unwrap(), b"hi", "overwritten whole");
    // Names beyond ASCII, sorted listings.
    let odd = ["ünïcödé ✓", "日本語", "with space", "-dash", ".hidden"];
    fs.create_dir(&p("/pf/names"), 0o755).unwrap();
    for n in odd {
        fs.write(&Path::new("/pf/names").join(n), n.as_bytes()).unwrap();
    }
    let listed: Vec<String> =
        fs.read_dir(&p("/pf/names")).unwrap().into_iter().map(|e| e.name.into_string().unwrap()).collect();
    let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    for n in odd {
        assert_eq!(fs.read(&Path::new("/pf/names").join(n)).unwrap(), n.as_bytes());
    }
    assert_eq!(kind(fs.metadata(&p("/../etc"))), ErrorKind::InvalidInput);
    // A large file streamed in, read back in ranges.
    let data = noise(9 << 20, 7);
    let mut f = fs.open(&p("/pf/big"), &OpenOptions::create()).unwrap();
    for piece in data.chunks(100_000) {
        f.write_all(piece).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs.metadata(&p("/pf/big")).unwrap().len, data.len() as u64);
    let f = fs.open(&p("/pf/big"), &OpenOptions::read()).unwrap();
    for off in [0u64, 4095, (5 << 20) + 17, data.len() as u64 - 3] {
        let mut buf = vec![0u8; 300_000];
        let n = f.read_at(&mut buf, off).unwrap();
        assert!(n > 0 && buf[..n] == data[off as usize..off as usize + n], "read_at {off}");
    }
    assert!(fs.read(&p("/pf/big")).unwrap() == data);
    // Errors as POSIX names them.
    fs.create_dir(&p("/pf/full"), 0o755).unwrap();
    fs.write(&p("/pf/full/f"), b"1").unwrap();
    assert_eq!(kind(fs.remove_dir(&p("/pf/full"))), ErrorKind::DirectoryNotEmpty);
    assert_eq!(kind(fs.remove_dir(&p("/pf/a.txt"))), ErrorKind::NotADirectory);
    assert_eq!(kind(fs.remove_file(&p("/pf/full"))), ErrorKind::IsADirectory);
    assert_eq!(kind(fs.remove_file(&p("/pf/nope"))), ErrorKind::NotFound);
    assert_eq!(kind(fs.open(&p("/pf/nope"), &OpenOptions::read())), ErrorKind::NotFound);
    assert_eq!(kind(fs.open(&p("/pf/full"), &OpenOptions::read())), ErrorKind::IsADirectory);
    assert_eq!(kind(fs.create_dir(&p("/pf/full"), 0o755)), ErrorKind::AlreadyExists);
    assert_eq!(kind(fs.create_dir(&p("/pf/no/such"), 0o755)), ErrorKind::NotFound);
    assert_eq!(kind(fs.write(&p("/pf/no/such"), b"x")), ErrorKind::NotFound);
    let new = OpenOptions { write: true, create_new: true, ..Default::default() };
    assert_eq!(kind(fs.open(&p("/pf/a.txt"), &new)), ErrorKind::AlreadyExists);
    assert_eq!(kind(fs.metadata(&p("/pf/a.txt/below"))), ErrorKind::NotADirectory);
    let ro = fs.open(&p("/pf/a.txt"), &OpenOptions::read()).unwrap();
    assert_eq!(kind(ro.write_at(b"no", 0)), ErrorKind::PermissionDenied);
    // What the capabilities leave out is refused, by name, and changes nothing.
    if !caps.random_write {
        assert_eq!(kind(fs.open(&p("/pf/a.txt"), &OpenOptions::append())), ErrorKind::Unsupported);
    }
    if !caps.modes {
        assert_eq!(kind(fs.set_mode(&p("/pf/a.txt"), 0o600)), ErrorKind::Unsupported);
    }
    if !caps.symlinks {
        assert_eq!(kind(fs.symlink(&p("a.txt"), &p("/pf/link"))), ErrorKind::Unsupported);
    }
    if !caps.hard_links {
        assert_eq!(kind(fs.hard_link(&p("/pf/a.txt"), &p("/pf/hl"))), ErrorKind::Unsupported);
    }
    assert_eq!(fs.read(&p("/pf/a.txt")).unwrap(), b"hi");
    // Files move; over an existing file, it is replaced.
    fs.write(&p("/pf/x"), b"x").unwrap();
    fs.rename(&p("/pf/x"), &p("/pf/full/y")).unwrap();
    fs.rename(&p("/pf/full/y"), &p("/pf/a.txt")).unwrap();
    assert_eq!(fs.read(&p("/pf/a.txt")).unwrap(), b"x");
    assert!(!fs.exists(&p("/pf/x")).unwrap() && !fs.exists(&p("/pf/full/y")).unwrap());
    // Several threads at once.
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                for i in 0..10u64 {
                    let path = PathBuf::from(format!("/pf/full/t{t}-{i}"));
                    let data = text(1_000 + (i * 997) as usize, t * 100 + i);
                    fs.write(&path, &data).unwrap();
                    assert_eq!(fs.read(&path).unwrap(), data);
                }
            });
        }
    });
    assert_eq!(fs.read_dir(&p("/pf/full")).unwrap().len(), 41);
    fs.remove_dir_all(&p("/pf/full")).unwrap();
    assert!(!fs.exists(&p("/pf/full")).unwrap());
    // A tree in and out, by copy_tree: the content and the names survive.
    let src = MemoryFs::new();
    src.create_dir_all(&p("/a/b/c")).unwrap();
    src.write(&p("/a/one"), b"1").unwrap();
    src.write(&p("/a/b/two"), &text(70_000, 2)).unwrap();
    src.write(&p("/a/b/c/three"), &noise(1_500_000, 3)).unwrap();
    src.write(&p("/a/empty-not"), b"0").unwrap();
    let stats = fs::copy_tree(&src, &p("/"), fs, &p("/pf/copied")).unwrap();
    assert_eq!(stats.files, 4);
    let back = MemoryFs::new();
    fs::copy_tree(fs, &p("/pf/copied"), &back, &p("/")).unwrap();
    for file in ["/a/one", "/a/b/two", "/a/b/c/three", "/a/empty-not"] {
        assert!(back.read(&p(file)).unwrap() == src.read(&p(file)).unwrap(), "{file}");
    }
}
