//! Copy a local folder into the pool's live drive (what `cuckoo mount` shows), commit, and
//! list what the drive holds.
//!
//!     cargo run --example copy_into_drive -- docs
//!
//! Uses the pool `CUCKOO_CONFIG` names (and `CUCKOO_PASSWORD`), or a temporary one.

mod common;

use std::path::Path;
use std::sync::Arc;

use cuckoo::fs::{self, Drive, DriveOptions, LocalFs};
use cuckoo::{NoProgress, Repository};

fn main() -> cuckoo::Result<()> {
    let source = std::env::args().nth(1).unwrap_or_else(|| "docs".into());
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let pool = rt.block_on(common::pool())?;
    let repo = Arc::new(rt.block_on(Repository::open(pool.config.clone(), pool.passphrase.as_ref(), &NoProgress))?);

    let drive = Drive::open(repo, rt.handle().clone(), DriveOptions::default())?;
    let local = LocalFs::new(&source)?;
    let name = Path::new(&source).file_name().map(|n| Path::new("/").join(n)).unwrap_or_else(|| "/copy".into());
    let copied = fs::copy_tree(&local, Path::new("/"), &drive, &name)?;
    println!(
        "copied {} files, {} directories, {} bytes into {}",
        copied.files,
        copied.dirs,
        copied.bytes,
        name.display()
    );

    fs::walk(&drive, Path::new("/"), &mut |path, meta| {
        println!("{:>10}  {}", if meta.is_dir() { "dir".to_string() } else { meta.len.to_string() }, path.display());
        Ok(())
    })?;
    // Closing commits: the drive's new state is a snapshot on the backends.
    drive.close()
}
