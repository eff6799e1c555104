//! Read-ahead only for readers that read in order, decided per open handle as the kernel
//! decides it for files: the window opens at the start of a file or after a read that
//! follows the last one, doubles while reads keep following, and closes at the first jump.
//! A database, an archive index or a video seek then fetches and decodes only the chunks it
//! reads, while `cp` and `rsync` stream with chunks fetched ahead.
//!
//! The window's ceiling starts at `MAX_AHEAD` and doubles, up to `MAX_AHEAD_SLOW`, each time
//! reads of the pool had to wait for a chunk fetched ahead: over a backend with tens of
//! milliseconds per request, eight chunks in flight bound a reader to eight chunks per
//! round trip. The pool bounds the bytes fetched ahead by its read cache.
//!
//! Owns: the pattern of one handle's reads. Must not: fetch anything (`pool` does).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The most chunks fetched ahead of a sequential reader while fetches keep ahead of it.
pub(crate) const MAX_AHEAD: usize = 8;

/// The most chunks fetched ahead once reads had to wait for them.
const MAX_AHEAD_SLOW: usize = 64;

/// How far a read may start from where the last one ended and still count as following
/// it: the mount serves one handle's reads on several threads, so they arrive a little
/// out of order.
const SLACK: u64 = 1 << 20;

/// One open handle's reads so far.
#[derive(Debug)]
pub(crate) struct ReadAhead {
    /// Where the last read ended.
    next: AtomicU64,
    /// Chunks to fetch ahead now.
    window: AtomicUsize,
    /// The most it may grow to.
    ceiling: AtomicUsize,
    /// The pool's count of reads that waited for a chunk fetched ahead, at the last read
    /// (`UNSEEN` before the first: waits before this handle opened are not its own).
    caught_up: AtomicU64,
}

const UNSEEN: u64 = u64::MAX;

impl Default for ReadAhead {
    fn default() -> ReadAhead {
        ReadAhead {
            next: AtomicU64::new(0),
            window: AtomicUsize::new(0),
            ceiling: AtomicUsize::new(MAX_AHEAD),
            caught_up: AtomicU64::new(UNSEEN),
        }
    }
}

impl ReadAhead {
    /// Note a read of `len` bytes at `offset`; how many chunks to fetch ahead of it.
    /// `caught_up` is the backing's count of reads that waited for a chunk fetched ahead.
    pub fn on_read(&self, offset: u64, len: usize, caught_up: u64) -> usize {
        let last_end = self.next.swap(offset.saturating_add(len as u64), Ordering::Relaxed);
        let following = offset.abs_diff(last_end) <= SLACK;
        let mut ceiling = self.ceiling.load(Ordering::Relaxed);
        let before = self.caught_up.swap(caught_up, Ordering::Relaxed);
        if before != UNSEEN && before < caught_up && following {
            ceiling = (ceiling * 2).min(MAX_AHEAD_SLOW);
            self.ceiling.store(ceiling, Ordering::Relaxed);
        }
        let window = if following { (self.window.load(Ordering::Relaxed) * 2).clamp(1, ceiling) } else { 0 };
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
        let windows: Vec<usize> = (0..6).map(|i| r.on_read(i * 131_072, 131_072, 0)).collect();
        assert_eq!(windows, [1, 2, 4, 8, 8, 8]);
        assert_eq!(r.on_read(900 << 20, 4096, 0), 0, "a jump: random access");
        assert_eq!(r.on_read(17 << 20, 4096, 0), 0);
        assert_eq!(r.on_read((17 << 20) + 4096, 4096, 0), 1, "following again reopens it");
        // Slightly out of order, as threads deliver a sequential reader's requests.
        assert_eq!(r.on_read((17 << 20) + 3 * 4096, 4096, 0), 2);
        assert_eq!(r.on_read((17 << 20) + 2 * 4096, 4096, 0), 4);
        let random = ReadAhead::default();
        assert_eq!(random.on_read(300 << 20, 4096, 0), 0, "a first read far into the file");
    }

    #[test]
    fn the_ceiling_rises_while_reads_wait_for_chunks_fetched_ahead() {
        let r = ReadAhead::default();
        let mut at = 0;
        let mut read = |caught_up| {
            at += 131_072;
            r.on_read(at, 131_072, caught_up)
        };
        assert_eq!((0..5).map(|_| read(0)).last(), Some(MAX_AHEAD), "fetches keep ahead: 8");
        assert_eq!(read(1), 16, "a read waited: the ceiling doubles");
        assert_eq!(read(1), 16, "no new wait: it stays");
        assert_eq!((2..10).map(read).last(), Some(MAX_AHEAD_SLOW), "bounded");
        let random = ReadAhead::default();
        assert_eq!(random.on_read(300 << 20, 4096, 5), 0, "waits do not open a random reader's window");
        assert_eq!(random.on_read(600 << 20, 4096, 6), 0);
        assert_eq!(random.ceiling.load(Ordering::Relaxed), MAX_AHEAD);
        let late = ReadAhead::default();
        assert_eq!(late.on_read(0, 4096, 40), 1, "waits before the handle opened are not its own");
        assert_eq!(late.ceiling.load(Ordering::Relaxed), MAX_AHEAD);
    }
}
