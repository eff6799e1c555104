//! Back up a directory with a progress reporter of your own, then restore it and compare.
//!
//!     cargo run --example backup_with_progress -- /usr/share/doc
//!
//! Uses the pool `CUCKOO_CONFIG` names (and `CUCKOO_PASSWORD`), or a temporary one.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cuckoo::{BackupOptions, NoProgress, Progress, Repository, RestoreOptions};

/// Prints each phase and, every 1,000 items, how far it got; warnings as they come.
#[derive(Default)]
struct Report {
    items: AtomicU64,
    bytes: AtomicU64,
}

impl Progress for Report {
    fn begin(&self, phase: &str, _items: Option<u64>, total_bytes: Option<u64>) {
        self.items.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        match total_bytes {
            Some(b) => eprintln!("{phase}: {b} bytes to go"),
            None => eprintln!("{phase}"),
        }
    }

    fn advance(&self, items: u64, bytes: u64) {
        let before = self.items.fetch_add(items, Ordering::Relaxed);
        let done = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if (before + items) / 1000 > before / 1000 {
            eprintln!("  {} items, {done} bytes", before + items);
        }
    }

    fn warn(&self, message: &str) {
        eprintln!("  warning: {message}");
    }

    fn end(&self) {
        eprintln!("  done: {} items", self.items.load(Ordering::Relaxed));
    }
}

#[tokio::main]
async fn main() -> cuckoo::Result<()> {
    let source = std::env::args().nth(1).unwrap_or_else(|| "src".into());
    let pool = common::pool().await?;
    let repo = Repository::open(pool.config.clone(), pool.passphrase.as_ref(), &NoProgress).await?;

    let options = BackupOptions { paths: vec![source.clone().into()], ..Default::default() };
    let done = repo.backup(options, Arc::new(Report::default())).await?;
    let s = &done.snapshot.summary;
    println!("snapshot {}: {} files, {} bytes, {} bytes new", done.id.short(), s.files, s.bytes, s.bytes_added);

    let target = tempfile::tempdir().map_err(|e| cuckoo::Error::new(cuckoo::ErrorKind::Io, e.to_string()))?;
    let restore = RestoreOptions { target: target.path().to_path_buf(), ..Default::default() };
    let restored = repo.restore(&done.snapshot, restore, Arc::new(NoProgress)).await?;
    println!("restored {} files ({} bytes) into {}", restored.files, restored.bytes, target.path().display());
    Ok(())
}
