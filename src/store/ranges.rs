//! Ranged reads of chunks: the segments of one whole copy that hold a byte range, fetched,
//! opened and checked without the rest of the chunk (a segmented chunk, object format 4).
//!
//! Owns: which copy a ranged read uses and the layouts of copies read lately. Must not:
//! report or mend what it finds wrong: a ranged read that fails for any reason answers
//! `None`, and the caller reads the whole chunk, which tries every piece and says what is
//! damaged where.

use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::{Piece, Store, piece_path};
use crate::codec::{self, Layout, ObjectKind, SEGMENT};
use crate::exec::cpu;
use crate::id::ObjectId;

/// Layouts kept: about 600 bytes each for a 1 MiB chunk, so a few MiB at most.
const KEEP: usize = 4096;
/// Bytes read to find a layout at once: a table of 1 MiB chunk is 16 entries, 600 bytes;
/// longer ones take a second read.
const FIRST_READ: u64 = 4096;

/// Layouts by chunk and backend (copies of an encrypted chunk differ), least recently
/// used out first; `None` for a copy that is not segmented (a chunk that compresses, or
/// one written before format 4), so it is asked about once.
#[derive(Debug)]
pub(super) struct Layouts(Mutex<LruCache<CopyKey, Option<Arc<Layout>>>>);

/// A chunk and the backend holding one whole copy of it.
type CopyKey = (ObjectId, usize);

impl Default for Layouts {
    fn default() -> Layouts {
        Layouts(Mutex::new(LruCache::new(NonZeroUsize::new(KEEP).expect("not zero"))))
    }
}

impl Layouts {
    fn get(&self, key: &CopyKey) -> Option<Option<Arc<Layout>>> {
        self.0.lock().expect("poisoned").get(key).cloned()
    }

    fn put(&self, key: CopyKey, layout: Option<Arc<Layout>>) {
        self.0.lock().expect("poisoned").put(key, layout);
    }

    fn forget(&self, key: &CopyKey) {
        self.0.lock().expect("poisoned").pop(key);
    }
}

/// Plain bytes of a chunk from a ranged read: whole segments, starting at `offset`.
#[derive(Debug, Clone)]
pub struct Segments {
    /// Offset in the chunk's body of the first byte.
    pub offset: u64,
    /// The segments' plain bytes.
    pub bytes: Vec<u8>,
}

impl Store {
    /// The segments of chunk `id` holding its plain bytes `range`, from one whole copy in
    /// `hint` (the catalogue's; healthy backends first), each checked against the id. `None`
    /// when no copy is known, the chunk is not segmented (it compresses, or was written
    /// before format 4), or the read fails: the caller then reads the whole chunk.
    pub async fn read_chunk_range(&self, id: &ObjectId, hint: &[Piece], range: Range<u64>) -> Option<Segments> {
        let mut copies: Vec<&Piece> = hint.iter().filter(|p| !p.shard).collect();
        copies.sort_by_key(|p| !self.health.is_up(p.backend));
        for piece in copies.into_iter().take(2) {
            let key = (*id, piece.backend);
            let layout = match self.layouts.get(&key) {
                Some(known) => known?,
                None => {
                    let layout = self.read_layout(id, piece).await?.map(Arc::new);
                    self.layouts.put(key, layout.clone());
                    layout?
                }
            };
            let segs = layout.segments(range.clone());
            let path = piece_path(ObjectKind::Chunk, id, false);
            let read = self.backends[piece.backend].read_range(&path, layout.stored(&segs)).await;
            self.health.observe(piece.backend, &read);
            let Ok(Some(bytes)) = read else { continue };
            let keys = self.keys.clone();
            let at = segs.start;
            let opening = layout.clone();
            match cpu(move || opening.open(&keys, segs, &bytes)).await {
                Ok(bytes) => return Some(Segments { offset: (at * SEGMENT) as u64, bytes }),
                // A copy rewritten since (another machine's repair, say) has another layout.
                Err(_) => self.layouts.forget(&key),
            }
        }
        None
    }

    /// The layout of a copy, from its first bytes: `Some(None)` if it is not segmented,
    /// `None` if it cannot be read.
    async fn read_layout(&self, id: &ObjectId, piece: &Piece) -> Option<Option<Layout>> {
        let backend = &self.backends[piece.backend];
        let path = piece_path(ObjectKind::Chunk, id, false);
        let head = backend.read_range(&path, 0..FIRST_READ).await;
        self.health.observe(piece.backend, &head);
        let mut head = head.ok()??;
        let header = codec::read_header(ObjectKind::Chunk, id, &head, &self.keys).ok()?;
        let Some(need) = header.layout_len() else { return Some(None) };
        let need = need as u64;
        if (head.len() as u64) < need {
            head = backend.read_range(&path, 0..need).await.ok()??;
        }
        let (keys, id) = (self.keys.clone(), *id);
        cpu(move || Layout::read(&id, &head, &keys)).await.ok().map(Some)
    }
}
