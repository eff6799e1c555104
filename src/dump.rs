//! `dump`: one path of a snapshot written to a stream, as restic's `dump` does: a file as
//! its bytes, a directory (or the whole snapshot) as a tar archive of everything below it,
//! with modes, owners, mtimes, symlinks, hard links, special files and extended
//! attributes, or as a zip archive (modes, mtimes, symlinks; a hard link's content again
//! under each name; no special files, which zip cannot hold).
//!
//! Owns: turning tree entries into archive entries. Must not: buffer a file whole (content
//! streams through a bounded pipe into the archive, so memory stays bounded whatever the
//! sizes) or write anywhere but the given stream.
//!
//! The tar and zip crates write synchronously, so the archive is built on a blocking
//! thread; the async side walks the trees and pours each file's verified content into a
//! pipe the blocking side reads as that entry's data. A zip goes out as a stream (sizes
//! and checksums after each file's data), so it needs no seekable output either.

use std::collections::HashMap;

use tokio::io::AsyncWrite;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Meta, Node, NodeKind, Snapshot, TreeRef};
use crate::repository::{Need, Repository};
use crate::restore::stream_content;

/// Bytes of a file's content in flight between the tree walk and the archive.
const PIPE: usize = 1 << 20;

/// The archive a directory is written as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Archive {
    /// POSIX tar with PAX records.
    #[default]
    Tar,
    /// Zip, deflated (level 1: fast; zip is for portability, the pool is compressed
    /// already).
    Zip,
}

impl std::str::FromStr for Archive {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Archive, String> {
        match s {
            "tar" => Ok(Archive::Tar),
            "zip" => Ok(Archive::Zip),
            _ => Err(format!("'{s}': give tar or zip")),
        }
    }
}

/// What a dump wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DumpOutcome {
    /// Entries in the archive (1 for a file dumped as itself).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries the archive format cannot hold, left out (sockets; in zip, also fifos and
    /// devices).
    pub left_out: u64,
}

/// One entry for the archive, whatever its format.
struct Entry {
    path: Vec<u8>,
    meta: Meta,
    what: What,
}

enum What {
    Dir,
    /// A regular file and the pipe its content arrives through.
    File {
        size: u64,
        data: tokio::io::DuplexStream,
    },
    /// Another name of a file already in the archive (tar only).
    HardLink(Vec<u8>),
    Symlink(Vec<u8>),
    Fifo,
    Device {
        block: bool,
        rdev: u64,
    },
}

impl Repository {
    /// Write `path` of `snapshot` to `out`: a file as itself, a directory (or, for an empty
    /// path, the whole snapshot) as a tar archive whose entries are named as `ls` names them.
    pub async fn dump<W>(&self, snapshot: &Snapshot, path: &str, format: Archive, mut out: W) -> Result<DumpOutcome>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        self.locked("dump", Need::ReadOnly, async {
            let path = path.trim_matches('/');
            let start = self.lookup(snapshot, path).await?;
            match start.as_ref().map(|(n, _)| &n.kind) {
                Some(NodeKind::File { content, .. }) => {
                    let bytes = stream_content(self, content, &mut out, true).await?;
                    tokio::io::AsyncWriteExt::flush(&mut out).await.map_err(|e| Error::from_io("cannot write", e))?;
                    return Ok(DumpOutcome { entries: 1, bytes, left_out: 0 });
                }
                None | Some(NodeKind::Dir { .. }) => {}
                Some(_) => return Err(Error::config(format!("'{path}' is neither a file nor a directory"))),
            }
            archive(self, snapshot, path, start, format, out).await
        })
        .await
    }
}

/// The archive of the directory `start` at `path` (the snapshot's root if `None`).
async fn archive<W>(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    start: Option<(Node, TreeRef)>,
    format: Archive,
    out: W,
) -> Result<DumpOutcome>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Entry>(4);
    let handle = tokio::runtime::Handle::current();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let out = tokio_util::io::SyncIoBridge::new_with_handle(out, handle.clone());
        let mut archive = match format {
            Archive::Tar => Writer::Tar(tar::Builder::new(out)),
            Archive::Zip => Writer::Zip(Box::new(zip::ZipWriter::new_stream(out))),
        };
        while let Some(e) = rx.blocking_recv() {
            archive.add(e, &handle)?;
        }
        archive.finish()
    });
    let walked = walk(repo, snapshot, path, start, format, &tx).await;
    drop(tx);
    let written = writer.await.map_err(|e| Error::new(ErrorKind::Io, format!("dump: {e}")))?;
    let outcome = walked?;
    written.map_err(|e| Error::from_io("cannot write the archive", e))?;
    Ok(outcome)
}

/// The archive being written, on the blocking thread.
enum Writer<W: std::io::Write> {
    Tar(tar::Builder<W>),
    Zip(Box<zip::ZipWriter<zip::write::StreamWriter<W>>>),
}

impl<W: std::io::Write> Writer<W> {
    fn add(&mut self, e: Entry, handle: &tokio::runtime::Handle) -> std::io::Result<()> {
        match self {
            Writer::Tar(tar) => add_tar(tar, e, handle),
            Writer::Zip(zip) => add_zip(zip, e, handle).map_err(std::io::Error::other),
        }
    }

    fn finish(self) -> std::io::Result<()> {
        let mut out = match self {
            Writer::Tar(tar) => tar.into_inner()?,
            Writer::Zip(zip) => zip.finish().map_err(std::io::Error::other)?.into_inner(),
        };
        std::io::Write::flush(&mut out)
    }
}

fn add_tar<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    e: Entry,
    handle: &tokio::runtime::Handle,
) -> std::io::Result<()> {
    tar.append_pax_extensions(pax(&e.meta).iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    let mut header = header_for(&e.meta);
    let mut path = e.path;
    let link = match e.what {
        What::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            path.push(b'/');
            None
        }
        What::File { size, data } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
            let data = tokio_util::io::SyncIoBridge::new_with_handle(data, handle.clone());
            return tar.append_data(&mut header, bytes_path(&path), data);
        }
        What::HardLink(target) => {
            header.set_entry_type(tar::EntryType::Link);
            Some(target)
        }
        What::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            Some(target)
        }
        What::Fifo => {
            header.set_entry_type(tar::EntryType::Fifo);
            None
        }
        What::Device { block, rdev } => {
            header.set_entry_type(if block { tar::EntryType::Block } else { tar::EntryType::Char });
            let dev = rdev as nix::libc::dev_t;
            header.set_device_major(nix::sys::stat::major(dev) as u32).ok();
            header.set_device_minor(nix::sys::stat::minor(dev) as u32).ok();
            None
        }
    };
    match link {
        Some(target) => tar.append_link(&mut header, bytes_path(&path), bytes_path(&target)),
        None => tar.append_data(&mut header, bytes_path(&path), std::io::empty()),
    }
}

fn add_zip<W: std::io::Write>(
    zip: &mut zip::ZipWriter<zip::write::StreamWriter<W>>,
    e: Entry,
    handle: &tokio::runtime::Handle,
) -> zip::result::ZipResult<()> {
    let path = String::from_utf8_lossy(&e.path).into_owned();
    let secs = e.meta.mtime_ns.div_euclid(1_000_000_000);
    let mut options = zip::write::SimpleFileOptions::default().unix_permissions(e.meta.mode & 0o7777);
    if let Some(dos) = dos_time(secs) {
        options = options.last_modified_time(dos);
    }
    let options = match u32::try_from(secs) {
        // The exact time in UTC, which unzip prefers to the DOS field's local two seconds.
        Ok(secs) => options.with_extended_timestamp(Some(secs), None, None)?,
        Err(_) => options.into_full_options(),
    };
    match e.what {
        What::Dir => zip.add_directory(format!("{path}/"), options),
        What::File { size, data } => {
            let options = options
                .compression_method(zip::CompressionMethod::Deflated)
                .compression_level(Some(1))
                .large_file(size >= u32::MAX as u64);
            zip.start_file(path, options)?;
            let mut data = tokio_util::io::SyncIoBridge::new_with_handle(data, handle.clone());
            std::io::copy(&mut data, zip)?;
            Ok(())
        }
        What::Symlink(target) => zip.add_symlink(path, String::from_utf8_lossy(&target), options),
        What::HardLink(_) | What::Fifo | What::Device { .. } => unreachable!("never sent for zip"),
    }
}

/// `secs` as a zip's DOS time (UTC; the extended timestamp carries the exact one), if in
/// its range (1980 to 2107).
fn dos_time(secs: i64) -> Option<zip::DateTime> {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::from_timestamp(secs, 0)?;
    zip::DateTime::from_date_and_time(
        u16::try_from(t.year()).ok()?,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .ok()
}

/// Send every entry below `start` to the archive, in tree order, with file content.
async fn walk(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    start: Option<(Node, TreeRef)>,
    format: Archive,
    tx: &tokio::sync::mpsc::Sender<Entry>,
) -> Result<DumpOutcome> {
    let mut out = DumpOutcome::default();
    let mut sender = Sender { repo, tx, format, links: HashMap::new() };
    // Depth first, each directory's entries right after it: tar readers set a directory's
    // metadata once an entry outside it follows.
    let mut stack = Vec::new();
    match start {
        None => stack.push((
            String::new(),
            Repository::root(snapshot).pack,
            repo.tree(&Repository::root(snapshot)).await?,
            0,
        )),
        Some((node, parent)) => {
            sender.send(path, &node, &mut out).await?;
            let tref = node.subtree(&parent.pack).expect("a directory");
            stack.push((path.to_string(), tref.pack, repo.tree(&tref).await?, 0));
        }
    }
    while let Some((prefix, pack, tree, next)) = stack.last_mut() {
        let Some(node) = tree.entries.get(*next) else {
            stack.pop();
            continue;
        };
        *next += 1;
        let name = String::from_utf8_lossy(&node.name);
        let p = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        let (node, pack) = (node.clone(), *pack);
        sender.send(&p, &node, &mut out).await?;
        if let Some(sub) = node.subtree(&pack) {
            let tree = repo.tree(&sub).await?;
            stack.push((p, sub.pack, tree, 0));
        }
    }
    Ok(out)
}

/// Turns tree entries into archive entries, sending file content after each file's entry.
struct Sender<'a> {
    repo: &'a Repository,
    tx: &'a tokio::sync::mpsc::Sender<Entry>,
    format: Archive,
    /// The first name of each file with several, for tar's hard links.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl Sender<'_> {
    async fn send(&mut self, path: &str, node: &Node, out: &mut DumpOutcome) -> Result<()> {
        let gone = || Error::from_io("cannot write the archive", std::io::ErrorKind::BrokenPipe.into());
        let (tar, key) = (self.format == Archive::Tar, (node.meta.dev, node.meta.ino));
        let what = match &node.kind {
            NodeKind::Dir { .. } => What::Dir,
            NodeKind::File { .. } if tar && node.meta.nlink > 1 && self.links.contains_key(&key) => {
                What::HardLink(self.links[&key].clone())
            }
            NodeKind::File { size, content } => {
                if node.meta.nlink > 1 {
                    self.links.insert(key, path.as_bytes().to_vec());
                }
                let (mut writer, data) = tokio::io::duplex(PIPE);
                let entry = Entry {
                    path: path.as_bytes().to_vec(),
                    meta: node.meta.clone(),
                    what: What::File { size: *size, data },
                };
                self.tx.send(entry).await.map_err(|_| gone())?;
                out.entries += 1;
                out.bytes += stream_content(self.repo, content, &mut writer, false).await?;
                return Ok(());
            }
            NodeKind::Symlink { target } => What::Symlink(target.clone()),
            NodeKind::Fifo if tar => What::Fifo,
            NodeKind::CharDevice { rdev } if tar => What::Device { block: false, rdev: *rdev },
            NodeKind::BlockDevice { rdev } if tar => What::Device { block: true, rdev: *rdev },
            // tar has no sockets (restic and GNU tar leave them out too); zip has no special files.
            _ => {
                out.left_out += 1;
                return Ok(());
            }
        };
        let entry = Entry { path: path.as_bytes().to_vec(), meta: node.meta.clone(), what };
        self.tx.send(entry).await.map_err(|_| gone())?;
        out.entries += 1;
        Ok(())
    }
}

/// An entry's PAX records. An attribute whose name is not UTF-8 has no PAX form: left out.
fn pax(meta: &Meta) -> Vec<(String, Vec<u8>)> {
    let (secs, ns) = (meta.mtime_ns.div_euclid(1_000_000_000), meta.mtime_ns.rem_euclid(1_000_000_000));
    let mut records = vec![("mtime".to_string(), format!("{secs}.{ns:09}").into_bytes())];
    for x in &meta.xattrs {
        if let Ok(name) = std::str::from_utf8(&x.name) {
            records.push((format!("SCHILY.xattr.{name}"), x.value.clone()));
        }
    }
    records
}

fn header_for(meta: &Meta) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(meta.mode & 0o7777);
    h.set_uid(meta.uid.into());
    h.set_gid(meta.gid.into());
    h.set_mtime(meta.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
    h.set_size(0);
    h
}

fn bytes_path(bytes: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(bytes))
}
