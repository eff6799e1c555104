//! Read-ahead only for readers that read in order, decided per open handle as the kernel
//! decides it for files: the window opens at the start of a file or after a read that
//! follows the last one, doubles while reads keep following, and closes at the first jump.
//! A database, an archive index or a video seek then fetches and decodes only the chunks it
//! reads, while `cp` and `rsync` stream with chunks fetched ahead.
//!
//! Owns: the pattern of one handle's reads. Must not: fetch anything (`pool` does).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The most chunks fetched ahead of a sequential reader.
pub(crate) const MAX_AHEAD: usize = 8;

/// How far a read may start from where the last one ended and still count as following
/// it: the mount serves one handle's reads on several threads, so they arrive a little
/// out of order.
const SLACK: u64 = 1 << 20;

/// One open handle's reads so far.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    /// Where the last read ended.
    next: AtomicU64,
    /// Chunks to fetch ahead now.
    window: AtomicUsize,
}

impl ReadAhead {
    /// Note a read of `len` bytes at `offset`; how many chunks to fetch ahead of it.
    pub fn on_read(&self, offset: u64, len: usize) -> usize {
        let last_end = self.next.swap(offset.saturating_add(len as u64), Ordering::Relaxed);
        let window = if offset.abs_diff(last_end) <= SLACK {
            (self.window.load(Ordering::Relaxed) * 2).clamp(1, MAX_AHEAD)
        } else {
            0
        };
        self.window.store(window, Ordering::Relaxed);
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_while_reads_follow_and_closes_at_a_jump() {
        let r = ReadAhead::default();
        let windows: Vec<usize> = (0..6).map(|i| r.on_read(i * 131_072, 131_072)).collect();
        assert_eq!(windows, [1, 2, 4, 8, 8, 8]);
        assert_eq!(r.on_read(900 << 20, 4096), 0, "a jump: random access");
        assert_eq!(r.on_read(17 << 20, 4096), 0);
        assert_eq!(r.on_read((17 << 20) + 4096, 4096), 1, "following again reopens it");
        // Slightly out of order, as threads deliver a sequential reader's requests.
        assert_eq!(r.on_read((17 << 20) + 3 * 4096, 4096), 2);
        assert_eq!(r.on_read((17 << 20) + 2 * 4096, 4096), 4);
        let random = ReadAhead::default();
        assert_eq!(random.on_read(300 << 20, 4096), 0, "a first read far into the file");
    }
}
