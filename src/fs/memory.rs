//! `MemoryFs`: a file system held in memory, for tests and scratch space.
//!
//! Owns: file bytes in memory. Must not: persist anything; `sync` has nothing to do.

use std::sync::RwLock;

use super::Capabilities;
use super::inode::Attr;
use super::ns::{Backing, NsFs};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{ChunkRef, Tree, TreeRef};

/// Files larger than this are refused, so a runaway offset cannot exhaust memory.
const MAX_FILE: u64 = 1 << 36;

/// An empty file system in memory; clones share it.
#[derive(Clone)]
pub struct MemoryFs {
    fs: NsFs<Memory>,
}

impl MemoryFs {
    /// A new, empty file system.
    pub fn new() -> Self {
        MemoryFs { fs: NsFs::new(Memory, None, Attr::new(0o755)) }
    }
}

impl Default for MemoryFs {
    fn default() -> Self {
        MemoryFs::new()
    }
}

pub(crate) struct Memory;

fn grow(data: &mut Vec<u8>, len: u64) -> Result<()> {
    if len > MAX_FILE {
        return Err(Error::new(ErrorKind::Full, "a memory file system file is limited to 64 GiB"));
    }
    data.resize(len as usize, 0);
    Ok(())
}

impl Backing for Memory {
    type Content = RwLock<Vec<u8>>;

    fn capabilities(&self) -> Capabilities {
        Capabilities::full(false)
    }

    fn tree(&self, _: &TreeRef) -> Result<Tree> {
        unreachable!("a memory file system has no stored trees")
    }

    fn stored_file(&self, _: u64, _: &[ChunkRef]) -> Self::Content {
        unreachable!("a memory file system has no stored files")
    }

    fn new_file(&self) -> Result<Self::Content> {
        Ok(RwLock::new(Vec::new()))
    }

    fn len(&self, c: &Self::Content) -> u64 {
        c.read().expect("poisoned").len() as u64
    }

    fn read_at(&self, c: &Self::Content, buf: &mut [u8], offset: u64, _ahead: usize) -> Result<usize> {
        let data = c.read().expect("poisoned");
        let start = (offset.min(data.len() as u64)) as usize;
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, c: &Self::Content, bytes: &[u8], offset: u64) -> Result<()> {
        let mut data = c.write().expect("poisoned");
        let end = offset + bytes.len() as u64;
        if end > data.len() as u64 {
            grow(&mut data, end)?;
        }
        data[offset as usize..end as usize].copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, c: &Self::Content, len: u64) -> Result<()> {
        grow(&mut c.write().expect("poisoned"), len)
    }

    fn sync_file(&self, _: &NsFs<Self>, _: &Self::Content) -> Result<()> {
        Ok(())
    }

    fn sync_all(&self, _: &NsFs<Self>) -> Result<()> {
        Ok(())
    }
}

super::drive::delegate_fs!(MemoryFs);
