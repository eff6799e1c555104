//! Damage that redb meets after the file opened. It checks a file's header when it opens
//! it, but a broken page deep in a table shows only when a transaction reaches it, and then
//! redb may panic (a slice out of range, a failed assertion in its allocator, on a lookup or
//! as it closes the file) or say `Corrupted`. Either is caught here, at every call into the
//! file, and turned into one `Catalogue` error that says what happens next; a marker beside
//! the file makes the next open set it aside and rebuild it from the backends (`local`).
//!
//! Owns: catching redb's panics, the marker. Must not: decide what a command does about it
//! (`Repository::open` rebuilds at once when it meets damage while opening).

use std::cell::Cell;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Once;

use redb::Database;

use crate::error::{Error, ErrorKind, Result};

thread_local! {
    /// Calls into the file under way on this thread: their panics are answered by `run`.
    static INSIDE: Cell<u32> = const { Cell::new(0) };
    /// The last panic inside such a call was raised by this crate's own code.
    static OURS: Cell<bool> = const { Cell::new(false) };
}

/// Run `f`, one call into the catalogue file at `path`. A panic inside it, or an error in
/// which redb says the file is corrupted, marks the file and comes back as an error saying
/// the catalogue is damaged.
pub(super) fn run<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let why = match catch(f) {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) if corrupted(&e) => e.to_string(),
        Ok(Err(e)) => return Err(e),
        Err(panic) => panic,
    };
    Err(mark(path, &why))
}

/// Run `f`, its panic (silent) turned into its message. A panic raised by this crate's own
/// code is a defect here, not damage in the file: it goes on unwinding, reported as any
/// panic is, and marks nothing.
fn catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    quiet_panics_inside();
    INSIDE.with(|n| n.set(n.get() + 1));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    INSIDE.with(|n| n.set(n.get() - 1));
    outcome.map_err(|panic| {
        if OURS.with(|o| o.replace(false)) {
            std::panic::resume_unwind(panic);
        }
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the database library panicked".into())
    })
}

/// Note that the file at `path` is damaged; the error to give.
pub(super) fn mark(path: &Path, why: &str) -> Error {
    // If the marker cannot be written, the next open meets the damage again and says so.
    let _ = std::fs::write(marker(path), why);
    Error::new(
        ErrorKind::Catalogue,
        format!(
            "catalogue {} is damaged ({why}); it is a cache: the next command moves it aside and rebuilds \
             it from the backends",
            path.display()
        ),
    )
}

/// Whether an error is the damage `run` reports (so an open can rebuild at once).
pub fn is_damage(e: &Error) -> bool {
    e.kind() == ErrorKind::Catalogue && e.context().contains("is damaged (")
}

/// Whether the file at `path` was found damaged (and not set aside yet).
pub(super) fn marked(path: &Path) -> Option<String> {
    std::fs::read_to_string(marker(path)).ok()
}

/// Forget the mark, once the file it names is set aside.
pub(super) fn clear(path: &Path) {
    let _ = std::fs::remove_file(marker(path));
}

fn marker(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".damaged");
    PathBuf::from(name)
}

/// Whether redb says, anywhere in `e`'s sources, that the file is corrupted.
pub(super) fn corrupted(e: &Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if matches!(s.downcast_ref::<redb::Error>(), Some(redb::Error::Corrupted(_)))
            || matches!(s.downcast_ref::<redb::StorageError>(), Some(redb::StorageError::Corrupted(_)))
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// The panic hook stays silent for panics `run` answers: they are reported as one error
/// in the user's terms, not as a backtrace note from inside redb. Every other panic goes to
/// the hook that was there before, this crate's own inside `run` too (see `catch`).
fn quiet_panics_inside() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let earlier = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info.location().is_some_and(|l| in_this_crate(l.file()));
            let inside = INSIDE.with(Cell::get) > 0;
            if inside {
                // Every panic inside sets it, so none is judged by an earlier one's note.
                OURS.with(|o| o.set(ours));
            }
            if !inside || ours {
                earlier(info)
            }
        }));
    });
}

/// Whether a panic's source file is this crate's: named relative to the workspace when it is
/// built as one (`src/catalogue/local.rs`), by its full path when it is a dependency. Panics
/// raised anywhere else (a slice index in redb, an allocation in `alloc`) are redb misreading
/// a page, and count as damage.
fn in_this_crate(file: &str) -> bool {
    file.starts_with("src/") || file.starts_with(concat!(env!("CARGO_MANIFEST_DIR"), "/src/"))
}

/// The open redb file. redb writes its allocator state as it closes a file, and on damage
/// it can panic there, after a command's work is done: that panic marks the file instead
/// of ending the process.
pub(super) struct Db {
    db: Option<Database>,
    path: PathBuf,
    /// The file's device and inode: one set aside meanwhile is not the file at `path`.
    file: Option<(u64, u64)>,
}

impl Db {
    pub fn new(db: Database, path: &Path) -> Db {
        Db { db: Some(db), path: path.to_path_buf(), file: identity(path) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.db.as_ref().expect("open until dropped")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(db) = self.db.take()
            && let Err(why) = catch(move || drop(db))
            && identity(&self.path) == self.file
        {
            mark(&self.path, &why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_is_a_damage_error_and_marks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        // Raised outside this crate, as redb's are: here in the standard library's allocator.
        let outside = |n: usize| -> Result<usize> { Ok(Vec::<u8>::with_capacity(n).capacity()) };
        let e = run(&path, || outside(usize::MAX)).unwrap_err();
        assert!(is_damage(&e), "{e}");
        assert!(e.to_string().contains("capacity overflow"), "{e}");
        assert!(marked(&path).is_some_and(|why| why.contains("capacity overflow")));
        clear(&path);
        assert_eq!(marked(&path), None);
        let other = run::<()>(&path, || Err(Error::new(ErrorKind::NotFound, "x"))).unwrap_err();
        assert!(!is_damage(&other) && marked(&path).is_none(), "other errors pass through");
        assert_eq!(run(&path, || Ok(7)).unwrap(), 7);
    }

    /// A panic in this crate's own code inside a guarded call was reported as a damaged
    /// catalogue and marked it for a rebuild from the backends: a defect here blamed on the
    /// file, and hidden.
    #[test]
    fn regression_a_panic_in_this_crates_own_code_is_not_blamed_on_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let unwound = catch_unwind(AssertUnwindSafe(|| run::<()>(&path, || panic!("a defect of ours"))));
        assert!(unwound.is_err(), "it goes on unwinding");
        assert_eq!(marked(&path), None);
        assert!(!OURS.with(Cell::get), "the note is taken");
        // A panic of ours outside any guarded call, caught elsewhere, leaves no note that
        // would make the next damage look like a defect.
        assert!(catch_unwind(|| panic!("ours, outside")).is_err());
        assert!(is_damage(&run(&path, || Ok(Vec::<u8>::with_capacity(usize::MAX).capacity())).unwrap_err()));
        clear(&path);
        let e = run::<()>(&path, || Err(Error::new(ErrorKind::NotFound, "x"))).unwrap_err();
        assert!(!is_damage(&e));
        assert!(in_this_crate(file!()) && in_this_crate(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")));
        assert!(!in_this_crate("/rustc/abc/library/core/src/slice/index.rs"));
    }
}
