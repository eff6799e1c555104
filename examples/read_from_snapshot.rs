//! Read one file of the latest snapshot through the `Fs` trait, the same interface the
//! live drive, local directories and memory file systems have.
//!
//!     cargo run --example read_from_snapshot -- Cargo.toml
//!
//! Backs up the file's directory first when the pool is the temporary one.

mod common;

use std::path::Path;
use std::sync::Arc;

use cuckoo::fs::{Fs, OpenOptions, SnapshotFs};
use cuckoo::{BackupOptions, NoProgress, Repository};

fn main() -> cuckoo::Result<()> {
    let file = std::fs::canonicalize(std::env::args().nth(1).unwrap_or_else(|| "Cargo.toml".into()))
        .map_err(|e| cuckoo::Error::new(cuckoo::ErrorKind::NotFound, e.to_string()))?;
    let dir = file.parent().expect("a file has a parent");
    // The pool's I/O runs on a tokio runtime; `Fs` is called from outside it.
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let pool = rt.block_on(common::pool())?;
    let repo = Arc::new(rt.block_on(Repository::open(pool.config.clone(), pool.passphrase.as_ref(), &NoProgress))?);
    let options = BackupOptions { paths: vec![dir.to_path_buf()], ..Default::default() };
    rt.block_on(repo.backup(options, Arc::new(NoProgress)))?;

    // A snapshot's root holds each backed-up path under its base name.
    let view = SnapshotFs::new(repo, rt.handle().clone(), "latest")?;
    let inside = Path::new("/").join(dir.file_name().expect("a named directory")).join(file.file_name().unwrap());
    let meta = view.metadata(&inside)?;
    let handle = view.open(&inside, &OpenOptions::read())?;
    let mut head = vec![0u8; 200.min(meta.len as usize)];
    let n = handle.read_at(&mut head, 0)?;
    println!("{} in the latest snapshot: {} bytes; it begins:", inside.display(), meta.len);
    println!("{}", String::from_utf8_lossy(&head[..n]));
    Ok(())
}
