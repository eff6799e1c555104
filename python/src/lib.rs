//! The Python binding: a pool's live drive and its snapshots as one tree of paths, for the
//! fsspec and PyFilesystem2 classes in `python/cuckoo/`. A thin adapter over `cuckoo::fs`:
//! paths below `/.snapshots/<id or latest>/` go to read-only snapshot views, the rest to
//! the drive. Every call that does I/O releases the GIL, so Python threads run it at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cuckoo::fs::{Drive, DriveOptions, FileType, Fs, Metadata, OpenOptions, SnapshotFs};
use cuckoo::{ErrorKind, Passphrase, PassphraseSource, Repository};
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyIsADirectoryError, PyNotADirectoryError, PyOSError, PyPermissionError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

/// The directory holding the snapshot views, as in the mount.
const SNAPSHOTS: &str = "/.snapshots";

/// A library error as the Python exception its kind means, with the library's message and
/// the POSIX errno (which PyFilesystem2's error conversion reads).
fn py_err(e: cuckoo::Error) -> PyErr {
    let (errno, message) = (e.errno(), e.to_string());
    match e.kind() {
        ErrorKind::NotFound => PyFileNotFoundError::new_err((errno, message)),
        ErrorKind::AlreadyExists => PyFileExistsError::new_err((errno, message)),
        ErrorKind::IsADirectory => PyIsADirectoryError::new_err((errno, message)),
        ErrorKind::NotADirectory => PyNotADirectoryError::new_err((errno, message)),
        ErrorKind::ReadOnly | ErrorKind::PermissionDenied | ErrorKind::NotPermitted | ErrorKind::WrongPassphrase => {
            PyPermissionError::new_err((errno, message))
        }
        _ => PyOSError::new_err((errno, message)),
    }
}

/// The passphrase: given, from a file, or as the CLI finds it (`CUCKOO_PASSWORD_COMMAND`,
/// `CUCKOO_PASSWORD_FILE`, `CUCKOO_PASSWORD`); an unencrypted pool needs none.
struct Secret {
    password: Option<String>,
    password_file: Option<PathBuf>,
}

impl PassphraseSource for Secret {
    fn passphrase(&self, _new: bool) -> cuckoo::Result<Passphrase> {
        if let Some(p) = &self.password {
            return Ok(Passphrase::new(p.clone()));
        }
        if self.password_file.is_none()
            && let Ok(command) = std::env::var("CUCKOO_PASSWORD_COMMAND")
        {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| {
                    cuckoo::Error::new(ErrorKind::Config, "CUCKOO_PASSWORD_COMMAND cannot run").with_source(e)
                })?;
            if !out.status.success() {
                return Err(cuckoo::Error::new(
                    ErrorKind::Config,
                    format!("CUCKOO_PASSWORD_COMMAND failed ({})", out.status),
                ));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            return Ok(Passphrase::new(text.trim_end_matches(['\n', '\r']).to_string()));
        }
        let file = self.password_file.clone().or_else(|| std::env::var_os("CUCKOO_PASSWORD_FILE").map(PathBuf::from));
        if let Some(file) = file {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                cuckoo::Error::new(ErrorKind::Io, format!("cannot read passphrase file {}", file.display()))
                    .with_source(e)
            })?;
            return Ok(Passphrase::new(text.trim_end_matches(['\n', '\r']).to_string()));
        }
        match std::env::var("CUCKOO_PASSWORD") {
            Ok(p) => Ok(Passphrase::new(p)),
            Err(_) => Err(cuckoo::Error::new(
                ErrorKind::Config,
                "the pool is encrypted: give password= or password_file=, or set CUCKOO_PASSWORD",
            )),
        }
    }
}

/// Where a path leads: the drive, the list of snapshots, or a path inside one snapshot.
enum Place<'a> {
    Drive(&'a str),
    Snapshots,
    Snapshot(&'a str, String),
}

fn place(path: &str) -> Place<'_> {
    match path.strip_prefix(SNAPSHOTS) {
        Some("") | Some("/") => Place::Snapshots,
        Some(rest) if rest.starts_with('/') => {
            let rest = &rest[1..];
            let (spec, inner) = rest.split_once('/').unwrap_or((rest, ""));
            Place::Snapshot(spec, format!("/{inner}"))
        }
        _ => Place::Drive(path),
    }
}

fn info<'py>(py: Python<'py>, name: &str, m: &Metadata) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", name)?;
    d.set_item("size", if m.is_dir() { 0 } else { m.len })?;
    let kind = match m.file_type {
        FileType::File => "file",
        FileType::Dir => "directory",
        FileType::Symlink => "link",
        FileType::Other => "other",
    };
    d.set_item("type", kind)?;
    d.set_item("mtime", m.mtime_ns as f64 / 1e9)?;
    d.set_item("mode", m.mode)?;
    d.set_item("ino", m.ino)?;
    d.set_item("nlink", m.nlink)?;
    Ok(d)
}

/// Up to `size` bytes of `file` at `offset`: fewer only at its end.
fn read_exact_at(file: &cuckoo::fs::File, offset: u64, size: usize) -> cuckoo::Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let mut done = 0;
    while done < size {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") }
}

/// A pool opened for Python: its live drive (read-write) and its snapshots (read-only).
#[pyclass(module = "cuckoo._cuckoo", weakref)]
struct Pool {
    /// The drive, shared by the calls in flight (the lock is held only to clone it, so
    /// threads work on the drive at once), taken out by `close`.
    drive: Mutex<Option<Arc<Drive>>>,
    /// Snapshot views opened so far, by snapshot id.
    views: Mutex<HashMap<String, SnapshotFs>>,
    repo: Arc<Repository>,
    /// Runs the pool's I/O; dropped last, after everything that uses it.
    _rt: tokio::runtime::Runtime,
}

impl Pool {
    fn drive<T>(&self, f: impl FnOnce(&Drive) -> cuckoo::Result<T>) -> PyResult<T> {
        let drive = self.drive.lock().expect("not poisoned").clone();
        let drive = drive.ok_or_else(|| PyValueError::new_err("the pool is closed"))?;
        f(&drive).map_err(py_err)
    }

    /// The view of snapshot `spec`, resolved on every call (`latest` moves with each commit,
    /// here or on another machine), opened once per snapshot.
    fn view(&self, spec: &str) -> PyResult<SnapshotFs> {
        let id = self.repo.find_snapshot(spec).map_err(py_err)?.0.to_hex();
        if let Some(v) = self.views.lock().expect("not poisoned").get(&id) {
            return Ok(v.clone());
        }
        let view = self.drive(|d| d.snapshot_fs(&id))?;
        self.views.lock().expect("not poisoned").insert(id, view.clone());
        Ok(view)
    }

    /// Run `f` on the file system and path that `path` leads to.
    fn on<T>(&self, path: &str, f: impl FnOnce(&dyn Fs, &Path) -> cuckoo::Result<T>) -> PyResult<T> {
        match place(path) {
            Place::Drive(p) => self.drive(|d| f(d, Path::new(p))),
            Place::Snapshot(spec, inner) => f(&self.view(spec)?, Path::new(&inner)).map_err(py_err),
            Place::Snapshots => Err(PyPermissionError::new_err(format!("{SNAPSHOTS} lists the snapshots: read-only"))),
        }
    }

    fn snapshot_names(&self) -> PyResult<Vec<String>> {
        let mut names: Vec<String> = self.repo.snapshots().map_err(py_err)?.iter().map(|(id, _)| id.to_hex()).collect();
        names.push("latest".into());
        Ok(names)
    }

    fn dir_metadata(&self) -> PyResult<Metadata> {
        self.drive(|d| d.metadata(Path::new("/")))
    }
}

#[pymethods]
impl Pool {
    /// Open the pool of `config` (default: `CUCKOO_CONFIG`, else the CLI's default config).
    #[new]
    #[pyo3(signature = (config=None, password=None, password_file=None))]
    fn new(
        py: Python<'_>,
        config: Option<PathBuf>,
        password: Option<String>,
        password_file: Option<PathBuf>,
    ) -> PyResult<Pool> {
        let config = match config.or_else(|| std::env::var_os("CUCKOO_CONFIG").map(PathBuf::from)) {
            Some(path) => path,
            None => cuckoo::config::default_config_path().map_err(py_err)?,
        };
        let secret = Secret { password, password_file };
        py.detach(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| cuckoo::Error::new(ErrorKind::Io, "cannot start the I/O runtime").with_source(e))?;
            let config = cuckoo::Config::load(&config)?;
            let repo = Arc::new(rt.block_on(Repository::open(config, &secret, &cuckoo::NoProgress))?);
            let drive = Drive::open(repo.clone(), rt.handle().clone(), DriveOptions::default())?;
            Ok(Pool { drive: Mutex::new(Some(Arc::new(drive))), views: Mutex::new(HashMap::new()), repo, _rt: rt })
        })
        .map_err(py_err)
    }

    /// The entry at `path` as a dict (name, size, type, mtime, mode, ino, nlink).
    fn info<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyDict>> {
        let m = match place(path) {
            Place::Snapshots => py.detach(|| self.dir_metadata())?,
            _ => py.detach(|| self.on(path, |fs, p| fs.metadata(p)))?,
        };
        info(py, path, &m)
    }

    /// The entries of the directory `path`, as `info` gives them, sorted by name.
    fn listdir<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        if let Place::Snapshots = place(path) {
            let m = py.detach(|| self.dir_metadata())?;
            return self.snapshot_names()?.iter().map(|n| info(py, &join(SNAPSHOTS, n), &m)).collect();
        }
        // `/.snapshots` is reached by its path but not listed in the root: a recursive copy or
        // removal of `/` would otherwise walk every snapshot.
        let entries = py.detach(|| self.on(path, |fs, p| fs.read_dir(p)))?;
        let mut out = Vec::with_capacity(entries.len());
        for e in &entries {
            out.push(info(py, &join(path, &e.name.to_string_lossy()), &e.metadata)?);
        }
        Ok(out)
    }

    /// Bytes `start..end` of the file at `path` (`end` None: to its end).
    #[pyo3(signature = (path, start=0, end=None))]
    fn read<'py>(&self, py: Python<'py>, path: &str, start: u64, end: Option<u64>) -> PyResult<Bound<'py, PyBytes>> {
        let data = py.detach(|| {
            self.on(path, |fs, p| {
                let file = fs.open(p, &OpenOptions::read())?;
                let end = end.unwrap_or(u64::MAX).min(file.len()?);
                read_exact_at(&file, start, end.saturating_sub(start) as usize)
            })
        })?;
        Ok(PyBytes::new(py, &data))
    }

    /// A file open for writing at `path`: created or emptied, or (`append`) written at its
    /// end.
    #[pyo3(signature = (path, append=false))]
    fn open_write(&self, py: Python<'_>, path: &str, append: bool) -> PyResult<Writer> {
        let options = if append { OpenOptions::append() } else { OpenOptions::create() };
        let file = py.detach(|| self.on(path, |fs, p| fs.open(p, &options)))?;
        let offset = if append { py.detach(|| file.len()).map_err(py_err)? } else { 0 };
        Ok(Writer { file: Mutex::new(Some(file)), offset: Mutex::new(offset) })
    }

    /// The file at `path` for positioned reads and writes, opened as `std::fs::OpenOptions`
    /// would with these flags.
    #[pyo3(signature = (path, write=false, append=false, truncate=false, create=false, create_new=false))]
    #[allow(clippy::too_many_arguments)]
    fn open(
        &self,
        py: Python<'_>,
        path: &str,
        write: bool,
        append: bool,
        truncate: bool,
        create: bool,
        create_new: bool,
    ) -> PyResult<Handle> {
        let options = OpenOptions { write, append, truncate, create, create_new, mode: None };
        let file = py.detach(|| self.on(path, |fs, p| fs.open(p, &options)))?;
        Ok(Handle { file: Mutex::new(Some(file)) })
    }

    /// Create the directory `path` (its parent must exist).
    fn mkdir(&self, py: Python<'_>, path: &str) -> PyResult<()> {
        py.detach(|| self.on(path, |fs, p| fs.create_dir(p, 0o755)))
    }

    /// Remove the empty directory `path`.
    fn rmdir(&self, py: Python<'_>, path: &str) -> PyResult<()> {
        py.detach(|| self.on(path, |fs, p| fs.remove_dir(p)))
    }

    /// Remove the file or symlink `path`.
    fn remove(&self, py: Python<'_>, path: &str) -> PyResult<()> {
        py.detach(|| self.on(path, |fs, p| fs.remove_file(p)))
    }

    /// Move `src` to `dst` (within the drive), as POSIX rename.
    fn rename(&self, py: Python<'_>, src: &str, dst: &str) -> PyResult<()> {
        match (place(src), place(dst)) {
            (Place::Drive(a), Place::Drive(b)) => py.detach(|| self.drive(|d| d.rename(Path::new(a), Path::new(b)))),
            _ => Err(PyPermissionError::new_err("snapshots are read-only")),
        }
    }

    /// Set the modification time of `path` (seconds since the epoch).
    fn set_mtime(&self, py: Python<'_>, path: &str, mtime: f64) -> PyResult<()> {
        py.detach(|| self.on(path, |fs, p| fs.set_mtime(p, (mtime * 1e9) as i64)))
    }

    /// Store the drive's changes on the backends; the id of the drive's new state, or None
    /// if nothing changed.
    fn commit(&self, py: Python<'_>) -> PyResult<Option<String>> {
        py.detach(|| self.drive(|d| d.commit())).map(|id| id.map(|i| i.to_hex()))
    }

    /// Keep the drive's current state as a snapshot with `tags`; its id.
    #[pyo3(signature = (tags=Vec::new()))]
    fn snapshot(&self, py: Python<'_>, tags: Vec<String>) -> PyResult<String> {
        let id = py.detach(|| self.drive(|d| d.snapshot(&tags)))?;
        Ok(id.to_hex())
    }

    /// The pool's snapshots: dicts of id, time (seconds), hostname, paths, tags.
    fn snapshots<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let list = py.detach(|| self.repo.snapshots()).map_err(py_err)?;
        list.iter()
            .map(|(id, s)| {
                let d = PyDict::new(py);
                d.set_item("id", id.to_hex())?;
                d.set_item("time", s.time_ns as f64 / 1e9)?;
                d.set_item("hostname", &s.hostname)?;
                d.set_item("paths", &s.paths)?;
                d.set_item("tags", &s.tags)?;
                Ok(d)
            })
            .collect()
    }

    /// Commit and release the pool; later calls fail.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let drive = self.drive.lock().expect("not poisoned").take();
        self.views.lock().expect("not poisoned").clear();
        let Some(drive) = drive else { return Ok(()) };
        py.detach(|| match Arc::try_unwrap(drive) {
            Ok(drive) => drive.close(),
            // Calls still in flight hold it: commit now; the last of them releases the
            // lock (dropping the drive commits again and releases it).
            Err(shared) => shared.commit().map(|_| ()),
        })
        .map_err(py_err)
    }

    /// True once `close` ran.
    #[getter]
    fn closed(&self) -> bool {
        self.drive.lock().expect("not poisoned").is_none()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // A pool dropped without `close` still stores what was written.
        if let Some(d) = self.drive.lock().expect("not poisoned").take()
            && let Ok(d) = Arc::try_unwrap(d)
        {
            let _ = d.close();
        }
    }
}

/// A file being written: bytes go to the drive as they come, chunked as they arrive.
#[pyclass(module = "cuckoo._cuckoo")]
struct Writer {
    file: Mutex<Option<cuckoo::fs::File>>,
    offset: Mutex<u64>,
}

#[pymethods]
impl Writer {
    /// Append `data`.
    fn write(&self, py: Python<'_>, data: &[u8]) -> PyResult<usize> {
        let data = data.to_vec();
        py.detach(|| {
            let guard = self.file.lock().expect("not poisoned");
            let file = guard.as_ref().ok_or_else(|| PyValueError::new_err("write to a closed file"))?;
            let mut offset = self.offset.lock().expect("not poisoned");
            file.write_at(&data, *offset).map_err(py_err)?;
            *offset += data.len() as u64;
            Ok(data.len())
        })
    }

    /// Finish the file: it is in the drive, and stored with the drive's next commit.
    fn close(&self, py: Python<'_>) {
        let file = self.file.lock().expect("not poisoned").take();
        py.detach(move || drop(file));
    }
}

/// An open file: positioned reads and writes, its length, truncation.
#[pyclass(module = "cuckoo._cuckoo")]
struct Handle {
    file: Mutex<Option<cuckoo::fs::File>>,
}

impl Handle {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&cuckoo::fs::File) -> cuckoo::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let guard = self.file.lock().expect("not poisoned");
            let file = guard.as_ref().ok_or_else(|| PyValueError::new_err("I/O on a closed file"))?;
            f(file).map_err(py_err)
        })
    }
}

#[pymethods]
impl Handle {
    /// Up to `size` bytes at `offset` (fewer at the end of the file).
    fn read_at<'py>(&self, py: Python<'py>, offset: u64, size: usize) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.with(py, |f| read_exact_at(f, offset, size))?;
        Ok(PyBytes::new(py, &data))
    }

    /// Write `data` at `offset`, growing the file as needed.
    fn write_at(&self, py: Python<'_>, offset: u64, data: &[u8]) -> PyResult<usize> {
        let data = data.to_vec();
        self.with(py, move |f| f.write_at(&data, offset).map(|()| data.len()))
    }

    /// The file's length.
    fn len(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |f| f.len())
    }

    /// Cut or grow the file to `size` bytes.
    fn set_len(&self, py: Python<'_>, size: u64) -> PyResult<()> {
        self.with(py, move |f| f.set_len(size))
    }

    /// Release the file.
    fn close(&self, py: Python<'_>) {
        let file = self.file.lock().expect("not poisoned").take();
        py.detach(move || drop(file));
    }
}

/// Cuckoo Drive's pool, drive and snapshots (see the `cuckoo` package for the fsspec and
/// PyFilesystem2 classes built on it).
#[pymodule]
fn _cuckoo(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Pool>()?;
    m.add_class::<Writer>()?;
    m.add_class::<Handle>()?;
    m.add("SNAPSHOTS", SNAPSHOTS)?;
    Ok(())
}
