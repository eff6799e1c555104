//! The content of one drive file: a *head* of chunk slices (stored, or streamed and
//! pinned until stored) followed by a *tail* of bytes written since: nothing, a stream
//! being chunked as it is written (memory only), or a spool (a local unnamed file).
//!
//! Owns: reads and writes at any offset over that layout, and moving bytes between the
//! forms: a file written front to back stays a stream; any other write, or a stream over
//! the memory limit, continues in a spool; a write below the head's end moves the head's
//! last slices into the spool (copy-on-write of the part after the write, never of the
//! whole file). Must not: commit (`commit` takes the states), or hold file bytes in
//! memory beyond what `stream` accounts for.

use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::pool::{Pool, Shared, Slices};
use super::readahead::MAX_AHEAD;
use super::stream::{At, Stream};
use crate::error::{Error, Result};

/// One file of the drive.
pub(crate) struct DriveFile {
    pub state: Mutex<FileState>,
    len: AtomicU64,
    /// Bumped by every change, so a commit can tell whether what it read is current.
    pub generation: AtomicU64,
}

pub(crate) struct FileState {
    /// Bytes `[0, head.len)`.
    pub head: Slices,
    /// Bytes `[head.len, file length)`.
    pub tail: Tail,
    /// While the tail holds bytes no commit stored: the content trees record for the file
    /// meanwhile, its last stored state (`None` for a file never stored: empty).
    pub base: Option<Slices>,
}

pub(crate) enum Tail {
    /// The file is its head.
    None,
    /// Written front to back from the head's end on.
    Stream(Stream),
    /// Bytes from the head's end on, at their own offsets in this file (a hole below).
    Spool(std::fs::File),
}

impl FileState {
    /// True if the tail holds bytes a commit must store.
    pub fn dirty(&self) -> bool {
        !matches!(self.tail, Tail::None)
    }

    /// What a tree records for the file now: its head once that is all, else its base.
    pub fn recorded(&self) -> Slices {
        if self.dirty() { self.base.clone().unwrap_or_default() } else { self.head.clone() }
    }

    /// Before the first change since the last commit: remember what that commit stored.
    fn begin_change(&mut self) {
        if !self.dirty() {
            self.base = Some(self.head.clone());
        }
    }
}

impl DriveFile {
    /// A stored file.
    pub fn stored(slices: Slices) -> DriveFile {
        let len = AtomicU64::new(slices.len);
        let state = FileState { head: slices, tail: Tail::None, base: None };
        DriveFile { len, state: Mutex::new(state), generation: AtomicU64::new(0) }
    }

    /// A new, empty file: its first write starts a stream.
    pub fn new_file(pool: &Pool) -> DriveFile {
        let state =
            FileState { head: Slices::default(), tail: Tail::Stream(Stream::new(&pool.drive.streamer, 0)), base: None };
        DriveFile { len: AtomicU64::new(0), state: Mutex::new(state), generation: AtomicU64::new(1) }
    }

    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub fn set_len_value(&self, len: u64) {
        self.len.store(len, Ordering::Release);
    }

    /// Read up to `buf.len()` bytes at `offset`, fetching `ahead` chunks beyond; a short
    /// count stops at a slice's end.
    pub fn read_at(&self, pool: &Pool, buf: &mut [u8], offset: u64, ahead: usize) -> Result<usize> {
        let len = self.len();
        if offset >= len || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min((len - offset) as usize);
        let buf = &mut buf[..want];
        let state = self.state.lock().expect("poisoned");
        if offset < state.head.len {
            let head = state.head.clone();
            drop(state);
            // Stored chunks are read without the file's lock: readers do not wait on each other.
            let n = want.min((head.len - offset) as usize);
            return pool.read_slices(&head, &mut buf[..n], offset, ahead);
        }
        match &state.tail {
            Tail::None => Ok(0),
            Tail::Spool(file) => file.read_at(buf, offset).map_err(spool_io),
            Tail::Stream(s) => match s.locate(offset) {
                At::Pending(bytes) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    Ok(n)
                }
                At::Chunk(r, start) => {
                    drop(state);
                    pool.read_slices(&Slices::new(vec![r]), buf, offset - start, 0).map(|n| n.min(want))
                }
            },
        }
    }

    /// Up to `max` bytes at `offset`, fewer at a slice's end: for stored bytes a view of
    /// the cached chunk, so the FUSE mount answers most reads without a copy.
    pub fn read_shared(&self, pool: &Pool, offset: u64, max: usize, ahead: usize) -> Result<Shared> {
        let len = self.len();
        if offset >= len || max == 0 {
            return Ok(Shared::default());
        }
        let max = max.min((len - offset) as usize);
        let head = self.state.lock().expect("poisoned").head.clone();
        if offset < head.len {
            return pool.slice_at(&head, offset, max, ahead);
        }
        let mut buf = vec![0u8; max];
        let n = self.read_at(pool, &mut buf, offset, ahead)?;
        buf.truncate(n);
        Ok(Shared::owned(buf))
    }

    /// Write `data` at `offset`, growing the file (with zeros) as needed.
    pub fn write_at(&self, pool: &Pool, data: &[u8], offset: u64) -> Result<()> {
        let mut state = self.state.lock().expect("poisoned");
        state.begin_change();
        if offset < state.head.len {
            cut_head(pool, &mut state, offset)?;
        }
        let streams = match &state.tail {
            Tail::Stream(s) => s.upto() == offset,
            Tail::None => offset == state.head.len,
            Tail::Spool(_) => false,
        } && pool.drive.streamer.may_hold(data.len());
        if streams {
            if let Tail::None = state.tail {
                state.tail = Tail::Stream(Stream::new(&pool.drive.streamer, offset));
            }
            let Tail::Stream(s) = &mut state.tail else { unreachable!("a stream tail was made above") };
            s.push(data, &pool.drive.streamer);
        } else {
            spool(pool, &mut state)?.write_all_at(data, offset).map_err(spool_io)?;
        }
        self.len.fetch_max(offset + data.len() as u64, Ordering::AcqRel);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Cut or grow (with zeros) to `len`. Cutting into the head only shortens its slice
    /// list: nothing is fetched or copied.
    pub fn set_len(&self, pool: &Pool, len: u64) -> Result<()> {
        let mut state = self.state.lock().expect("poisoned");
        let current = self.len();
        if len == current {
            return Ok(());
        }
        state.begin_change();
        if len <= state.head.len {
            state.head = state.head.truncate(len);
            state.tail = Tail::None;
            state.base = None;
        } else if !matches!(&state.tail, Tail::Stream(s) if s.upto() == len) {
            spool(pool, &mut state)?.set_len(len).map_err(spool_io)?;
        }
        self.len.store(len, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// The tail as a spool, made from whatever the tail was. A stream's chunks that are
/// already stored join the head; the rest of its bytes (pinned chunks, pending bytes) are
/// in memory and go to the spool, so nothing is fetched. On an error the tail is as it was.
fn spool<'s>(pool: &Pool, state: &'s mut FileState) -> Result<&'s std::fs::File> {
    match &state.tail {
        Tail::Spool(_) => {}
        Tail::None => state.tail = Tail::Spool(pool.new_spool()?),
        Tail::Stream(s) => {
            let file = pool.new_spool()?;
            let stored = s.emitted().iter().take_while(|(_, r)| !pool.drive.streamer.is_pinned(&r.id)).count();
            for (offset, r) in &s.emitted()[stored..] {
                let body = pool.chunk(&r.id)?;
                file.write_all_at(&body[..r.len as usize], *offset).map_err(spool_io)?;
            }
            file.write_all_at(s.pending(), s.pending_start()).map_err(spool_io)?;
            state.head = state.head.then(s.emitted()[..stored].iter().map(|(_, r)| *r));
            state.tail = Tail::Spool(file);
        }
    }
    let Tail::Spool(f) = &state.tail else { unreachable!("made a spool above") };
    Ok(f)
}

/// Make the head end at or below `offset`: its slices from the one holding `offset` on
/// are copied into the spool (which the tail becomes).
fn cut_head(pool: &Pool, state: &mut FileState, offset: u64) -> Result<()> {
    // First the tail becomes a spool: a stream's stored chunks join the head there.
    let file = spool(pool, state)?.try_clone().map_err(spool_io)?;
    let head = state.head.clone();
    let i = head.find(offset);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = head.start(i);
    while at < head.len {
        let want = ((head.len - at) as usize).min(buf.len());
        let n = pool.read_slices(&head, &mut buf[..want], at, MAX_AHEAD)?;
        if n == 0 {
            return Err(Error::corrupt("a stored file is shorter than its slices"));
        }
        file.write_all_at(&buf[..n], at).map_err(spool_io)?;
        at += n as u64;
    }
    state.head = head.first(i);
    Ok(())
}

fn spool_io(e: std::io::Error) -> Error {
    Error::from_io("drive spool file", e)
}
