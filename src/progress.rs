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
}

/// Progress that is not shown.
pub struct NoProgress;

impl Progress for NoProgress {}
