//! Progress reporting from long operations to whatever front end shows it.
//!
//! Owns: the `Progress` trait. Must not: draw anything (the CLI draws bars with indicatif;
//! library users may ignore progress or log it).

/// Receives progress of one operation. All methods default to doing nothing.
pub trait Progress: Send + Sync {
    /// A phase starts; totals are given when already known.
    fn begin(&self, _phase: &str, _total_items: Option<u64>, _total_bytes: Option<u64>) {}
    /// Totals became known (a scan running beside a backup finished).
    fn totals(&self, _items: u64, _bytes: u64) {}
    /// Items and bytes done since the last call.
    fn advance(&self, _items: u64, _bytes: u64) {}
    /// Something was skipped or went wrong but the operation goes on.
    fn warn(&self, _message: &str) {}
    /// The phase ended.
    fn end(&self) {}
    /// Something worth saying when asked for detail (`-v`): which parent a backup compares
    /// with, where a restore goes.
    fn note(&self, _message: &str) {}
    /// What happened to one entry (`-vv`): a backup's file new, modified or unchanged; a
    /// restore's entry written or left as it was.
    fn entry(&self, _event: EntryEvent, _path: &std::path::Path) {}
}

/// What an operation did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryEvent {
    /// Backed up for the first time (no such entry in the parent).
    New,
    /// Read again: it changed since the parent.
    Modified,
    /// Taken from the parent unread, or (restore) left as the target had it.
    Unchanged,
    /// Written by a restore.
    Restored,
}

/// Progress that is not shown.
pub struct NoProgress;

impl Progress for NoProgress {}
