//! `LocalFs`: a directory of the local file system seen through the `Fs` trait.
//!
//! Owns: mapping trait calls onto `std::fs` below one root. Must not: follow `..` out of
//! the root (paths are normalised first). Symlinks inside the tree resolve as the OS
//! resolves them when a file is opened, as with any program working in that directory.

use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Capabilities, DirEntry, File, FileHandle, FileType, Fs, Metadata, OpenOptions, normalize, pretty};
use crate::error::{Error, Result};

/// A local directory as a file system.
#[derive(Debug, Clone)]
pub struct LocalFs {
    root: PathBuf,
}

impl LocalFs {
    /// The file system rooted at `root`, which must be an existing directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let md = std::fs::metadata(&root).map_err(|e| Error::from_io(pretty(&root), e))?;
        if !md.is_dir() {
            return Err(Error::new(crate::ErrorKind::NotADirectory, format!("{} is not a directory", pretty(&root))));
        }
        Ok(LocalFs { root })
    }

    /// Where `path` is on the local file system.
    pub fn local_path(&self, path: &Path) -> Result<PathBuf> {
        let mut at = self.root.clone();
        at.extend(normalize(path)?);
        Ok(at)
    }

    fn io<T>(&self, path: &Path, r: std::io::Result<T>) -> Result<T> {
        r.map_err(|e| Error::from_io(pretty(path), e))
    }
}

fn metadata_of(md: &std::fs::Metadata) -> Metadata {
    let ft = md.file_type();
    let file_type = if ft.is_file() {
        FileType::File
    } else if ft.is_dir() {
        FileType::Dir
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        FileType::Other
    };
    Metadata {
        file_type,
        len: if file_type == FileType::Dir { 0 } else { md.len() },
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        ino: md.ino(),
        nlink: if file_type == FileType::Dir { 1 } else { md.nlink() },
    }
}

impl Fs for LocalFs {
    fn capabilities(&self) -> Capabilities {
        Capabilities::full(true)
    }

    fn metadata(&self, path: &Path) -> Result<Metadata> {
        let p = self.local_path(path)?;
        Ok(metadata_of(&self.io(path, std::fs::symlink_metadata(p))?))
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<DirEntry>> {
        let p = self.local_path(path)?;
        let mut out = Vec::new();
        for entry in self.io(path, std::fs::read_dir(&p))? {
            let entry = self.io(path, entry)?;
            let md = self.io(path, entry.metadata())?;
            out.push(DirEntry { name: entry.file_name(), metadata: metadata_of(&md) });
        }
        out.sort_by(|a, b| a.name.as_encoded_bytes().cmp(b.name.as_encoded_bytes()));
        Ok(out)
    }

    fn open(&self, path: &Path, options: &OpenOptions) -> Result<File> {
        let p = self.local_path(path)?;
        let mut o = std::fs::OpenOptions::new();
        o.read(true)
            .write(options.write || options.append)
            .append(options.append)
            .truncate(options.truncate)
            .create(options.create)
            .create_new(options.create_new)
            .mode(options.mode.unwrap_or(0o644));
        let file = self.io(path, o.open(&p))?;
        if self.io(path, file.metadata())?.is_dir() {
            return Err(Error::new(crate::ErrorKind::IsADirectory, format!("{} is a directory", pretty(path))));
        }
        Ok(File::new(Box::new(LocalFile { file, path: pretty(path) }), options))
    }

    fn create_dir(&self, path: &Path, mode: u32) -> Result<()> {
        let p = self.local_path(path)?;
        self.io(path, std::fs::DirBuilder::new().mode(mode).create(p))
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        let p = self.local_path(path)?;
        self.io(path, std::fs::remove_file(p))
    }

    fn remove_dir(&self, path: &Path) -> Result<()> {
        let p = self.local_path(path)?;
        self.io(path, std::fs::remove_dir(p))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let (f, t) = (self.local_path(from)?, self.local_path(to)?);
        self.io(from, std::fs::rename(f, t))
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<()> {
        let p = self.local_path(path)?;
        self.io(path, std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)))
    }

    fn set_mtime(&self, path: &Path, mtime_ns: i64) -> Result<()> {
        let p = self.local_path(path)?;
        self.io(path, crate::meta::set_mtime(&p, mtime_ns))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        let p = self.local_path(link)?;
        self.io(link, std::os::unix::fs::symlink(target, p))
    }

    fn hard_link(&self, original: &Path, link: &Path) -> Result<()> {
        let (o, l) = (self.local_path(original)?, self.local_path(link)?);
        self.io(link, std::fs::hard_link(o, l))
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf> {
        let p = self.local_path(path)?;
        self.io(path, std::fs::read_link(p))
    }

    fn sync(&self) -> Result<()> {
        // Files are synced through their handles; the directory entries here are as durable
        // as the local file system makes them.
        Ok(())
    }
}

struct LocalFile {
    file: std::fs::File,
    path: String,
}

impl FileHandle for LocalFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map_err(|e| Error::from_io(self.path.clone(), e)),
            }
        }
    }

    fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        self.file.write_all_at(data, offset).map_err(|e| Error::from_io(self.path.clone(), e))
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.file.set_len(len).map_err(|e| Error::from_io(self.path.clone(), e))
    }

    fn len(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(|e| Error::from_io(self.path.clone(), e))?.len())
    }

    fn sync(&self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::from_io(self.path.clone(), e))
    }
}
