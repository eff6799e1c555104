//! `dump`: one path of a snapshot written to a stream, as restic's `dump` does: a file as
//! its bytes, a directory (or the whole snapshot) as a tar archive of everything below it,
//! with modes, owners, mtimes, symlinks, hard links and special files.
//!
//! Owns: turning tree entries into tar entries. Must not: buffer a file whole (content
//! streams through a bounded pipe into the archive, so memory stays bounded whatever the
//! sizes) or write anywhere but the given stream.
//!
//! The tar crate writes synchronously, so the archive is built on a blocking thread; the
//! async side walks the trees and pours each file's verified content into a pipe the
//! blocking side reads as that entry's data.

use std::collections::HashMap;

use tokio::io::AsyncWrite;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Meta, Node, NodeKind, Snapshot, TreeRef};
use crate::repository::{Need, Repository};
use crate::restore::stream_content;

/// Bytes of a file's content in flight between the tree walk and the archive.
const PIPE: usize = 1 << 20;

/// What a dump wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DumpOutcome {
    /// Entries in the archive (1 for a file dumped as itself).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// One entry for the archive: its header and, for a regular file, the pipe its content
/// arrives through.
struct Entry {
    header: tar::Header,
    /// PAX records: the nanosecond mtime (a tar header holds whole seconds) and extended
    /// attributes as `SCHILY.xattr.NAME`, which GNU tar and bsdtar restore (`--xattrs`).
    pax: Vec<(String, Vec<u8>)>,
    path: Vec<u8>,
    link: Option<Vec<u8>>,
    content: Option<tokio::io::DuplexStream>,
}

impl Repository {
    /// Write `path` of `snapshot` to `out`: a file as itself, a directory (or, for an empty
    /// path, the whole snapshot) as a tar archive whose entries are named as `ls` names them.
    pub async fn dump<W>(&self, snapshot: &Snapshot, path: &str, mut out: W) -> Result<DumpOutcome>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        self.locked("dump", Need::ReadOnly, async {
            let path = path.trim_matches('/');
            let start = self.lookup(snapshot, path).await?;
            match start.as_ref().map(|(n, _)| &n.kind) {
                Some(NodeKind::File { content, .. }) => {
                    let bytes = stream_content(self, content, &mut out).await?;
                    tokio::io::AsyncWriteExt::flush(&mut out).await.map_err(|e| Error::from_io("cannot write", e))?;
                    return Ok(DumpOutcome { entries: 1, bytes });
                }
                None | Some(NodeKind::Dir { .. }) => {}
                Some(_) => return Err(Error::config(format!("'{path}' is neither a file nor a directory"))),
            }
            archive(self, snapshot, path, start, out).await
        })
        .await
    }
}

/// The tar archive of the directory `start` at `path` (the snapshot's root if `None`).
async fn archive<W>(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    start: Option<(Node, TreeRef)>,
    out: W,
) -> Result<DumpOutcome>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Entry>(4);
    let handle = tokio::runtime::Handle::current();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut tar = tar::Builder::new(tokio_util::io::SyncIoBridge::new_with_handle(out, handle.clone()));
        while let Some(mut e) = rx.blocking_recv() {
            tar.append_pax_extensions(e.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
            match (e.link.take(), e.content.take()) {
                (Some(target), _) => tar.append_link(&mut e.header, bytes_path(&e.path), bytes_path(&target))?,
                (None, Some(pipe)) => {
                    let data = tokio_util::io::SyncIoBridge::new_with_handle(pipe, handle.clone());
                    tar.append_data(&mut e.header, bytes_path(&e.path), data)?
                }
                (None, None) => tar.append_data(&mut e.header, bytes_path(&e.path), std::io::empty())?,
            }
        }
        let mut out = tar.into_inner()?;
        std::io::Write::flush(&mut out)
    });
    let walked = walk(repo, snapshot, path, start, &tx).await;
    drop(tx);
    let written = writer.await.map_err(|e| Error::new(ErrorKind::Io, format!("dump: {e}")))?;
    let outcome = walked?;
    written.map_err(|e| Error::from_io("cannot write the archive", e))?;
    Ok(outcome)
}

/// Send every entry below `start` to the archive, in tree order, with file content.
async fn walk(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    start: Option<(Node, TreeRef)>,
    tx: &tokio::sync::mpsc::Sender<Entry>,
) -> Result<DumpOutcome> {
    let mut out = DumpOutcome::default();
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
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
            send(repo, tx, path, &node, &mut links, &mut out).await?;
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
        send(repo, tx, &p, &node, &mut links, &mut out).await?;
        if let Some(sub) = node.subtree(&pack) {
            let tree = repo.tree(&sub).await?;
            stack.push((p, sub.pack, tree, 0));
        }
    }
    Ok(out)
}

async fn send(
    repo: &Repository,
    tx: &tokio::sync::mpsc::Sender<Entry>,
    path: &str,
    node: &Node,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
    out: &mut DumpOutcome,
) -> Result<()> {
    let gone = || Error::from_io("cannot write the archive", std::io::ErrorKind::BrokenPipe.into());
    let mut header = header_for(&node.meta);
    let mut entry = Entry {
        header: tar::Header::new_gnu(),
        pax: pax(&node.meta),
        path: path.as_bytes().to_vec(),
        link: None,
        content: None,
    };
    let key = (node.meta.dev, node.meta.ino);
    match &node.kind {
        NodeKind::Dir { .. } => {
            header.set_entry_type(tar::EntryType::Directory);
            entry.path.push(b'/');
        }
        NodeKind::File { .. } if node.meta.nlink > 1 && links.contains_key(&key) => {
            header.set_entry_type(tar::EntryType::Link);
            entry.link = links.get(&key).cloned();
        }
        NodeKind::File { size, content } => {
            if node.meta.nlink > 1 {
                links.insert(key, entry.path.clone());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(*size);
            let (mut writer, reader) = tokio::io::duplex(PIPE);
            entry.content = Some(reader);
            entry.header = header;
            tx.send(entry).await.map_err(|_| gone())?;
            out.entries += 1;
            out.bytes += stream_content(repo, content, &mut writer).await?;
            return Ok(());
        }
        NodeKind::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            entry.link = Some(target.clone());
        }
        NodeKind::Fifo => header.set_entry_type(tar::EntryType::Fifo),
        NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
            let block = matches!(node.kind, NodeKind::BlockDevice { .. });
            header.set_entry_type(if block { tar::EntryType::Block } else { tar::EntryType::Char });
            let dev = *rdev as nix::libc::dev_t;
            header.set_device_major(nix::sys::stat::major(dev) as u32).ok();
            header.set_device_minor(nix::sys::stat::minor(dev) as u32).ok();
        }
        // tar has no sockets; restic and GNU tar leave them out too.
        NodeKind::Socket => return Ok(()),
    }
    entry.header = header;
    tx.send(entry).await.map_err(|_| gone())?;
    out.entries += 1;
    Ok(())
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
