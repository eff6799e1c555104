//! Sparse files: where a file's data is, so its holes are never read. A 10 GiB file with
//! a few MiB written costs a few MiB of reading, and restores sparse again (restore leaves
//! zeros unwritten).
//!
//! Owns: asking the file system for data extents (`SEEK_DATA`/`SEEK_HOLE`). Must not: chunk
//! or store anything.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};

/// Whether `md` describes a file with fewer blocks allocated than its length needs.
pub(super) fn is_sparse(md: &std::fs::Metadata) -> bool {
    md.len() > 0 && md.blocks().saturating_mul(512) < md.len()
}

/// The `[start, end)` ranges of `file` (of length `size`) that hold data, in order; `None`
/// where the file system cannot say (then the whole file is read as usual).
pub(super) fn data_extents(file: &File, size: u64) -> Option<Vec<(u64, u64)>> {
    let fd = file.as_fd();
    let mut extents = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match lseek(fd, pos as i64, Whence::SeekData) {
            Ok(at) => at as u64,
            Err(Errno::ENXIO) => break, // only a hole is left
            Err(_) => return None,
        };
        if start >= size {
            break;
        }
        let end = lseek(fd, start as i64, Whence::SeekHole).ok()? as u64;
        extents.push((start, end.min(size)));
        pos = end;
    }
    Some(extents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn extents_of_a_sparse_file_skip_its_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let file = File::create(&path).unwrap();
        file.set_len(64 << 20).unwrap();
        file.write_all_at(&[1u8; 4096], 16 << 20).unwrap();
        file.sync_all().unwrap();
        let md = std::fs::metadata(&path).unwrap();
        let Some(extents) = data_extents(&file, md.len()) else { return }; // no SEEK_DATA here
        assert!(is_sparse(&md));
        let data: u64 = extents.iter().map(|(s, e)| e - s).sum();
        assert!(data < 1 << 20 && extents.iter().any(|&(s, e)| s <= 16 << 20 && e >= (16 << 20) + 4096), "{extents:?}");
    }
}
