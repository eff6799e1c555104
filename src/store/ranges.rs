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

use bytes::Bytes;
use futures::future::join;
use lru::LruCache;

use super::{Piece, Store, piece_path};
use crate::codec::{self, Layout, ObjectKind, SEGMENT};
use crate::exec::cpu;
use crate::id::ObjectId;

/// Layouts kept: about 600 bytes each for a 1 MiB chunk, so a few MiB at most.
const KEEP: usize = 4096;

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
    /// The segments of chunk `id` (of `plain_len` bytes) holding its plain bytes `range`,
    /// from one whole copy in `hint` (the catalogue's; healthy backends first), each checked
    /// against the id. `None` when no copy is known, the chunk is not segmented (it
    /// compresses, or was written before format 4), or the read fails: the caller then reads
    /// the whole chunk.
    ///
    /// A copy read for the first time has its layout and the segments asked for at once:
    /// where they lie follows from the plain length, so a miss over a backend with tens of
    /// milliseconds per request waits for one round trip, not two.
    pub async fn read_chunk_range(
        &self,
        id: &ObjectId,
        hint: &[Piece],
        plain_len: u64,
        range: Range<u64>,
    ) -> Option<Segments> {
        // A copy shorter than the body is compressed, so not segmented: read it whole.
        let mut copies: Vec<&Piece> =
            hint.iter().filter(|p| !p.shard && (p.stored_len == 0 || p.stored_len >= plain_len)).collect();
        copies.sort_by_key(|p| !self.health.is_up(p.backend));
        let segs = codec::segments_for(plain_len as usize, range);
        for piece in copies.into_iter().take(2) {
            let key = (*id, piece.backend);
            let known = self.layouts.get(&key);
            if matches!(known, Some(None)) {
                return None;
            }
            let read = match known.flatten() {
                Some(layout) => self.read_segments(id, piece, layout, &segs).await,
                None => self.read_layout_and_segments(id, piece, plain_len as usize, &segs).await,
            };
            let Some((layout, bytes)) = read else { continue };
            let (keys, at, opening) = (self.keys.clone(), segs.clone(), layout.clone());
            match cpu(move || opening.open(&keys, at, &bytes)).await {
                Ok(bytes) => return Some(Segments { offset: (segs.start * SEGMENT) as u64, bytes }),
                // A copy rewritten since (another machine's repair, say) has another layout.
                Err(_) => self.layouts.forget(&key),
            }
        }
        None
    }

    async fn read_segments(
        &self,
        id: &ObjectId,
        piece: &Piece,
        layout: Arc<Layout>,
        segs: &Range<usize>,
    ) -> Option<(Arc<Layout>, Bytes)> {
        let path = piece_path(ObjectKind::Chunk, id, false);
        let read = self.backends[piece.backend].read_range(&path, layout.stored(segs)).await;
        self.health.observe(piece.backend, &read);
        Some((layout, read.ok()??))
    }

    /// The layout of a copy read for the first time, with segments `segs` read beside it;
    /// remembered, and remembered as absent when the copy is not segmented.
    async fn read_layout_and_segments(
        &self,
        id: &ObjectId,
        piece: &Piece,
        plain_len: usize,
        segs: &Range<usize>,
    ) -> Option<(Arc<Layout>, Bytes)> {
        let backend = &self.backends[piece.backend];
        let path = piece_path(ObjectKind::Chunk, id, false);
        let (first, at) = codec::plan_segments(plain_len, self.keys.is_encrypted(), segs);
        let (head, bytes) =
            join(backend.read_range(&path, 0..first as u64), backend.read_range(&path, at.clone())).await;
        self.health.observe(piece.backend, &head);
        self.health.observe(piece.backend, &bytes);
        let head = head.ok()??;
        let header = codec::read_header(ObjectKind::Chunk, id, &head, &self.keys).ok()?;
        if header.layout_len().is_none() {
            self.layouts.put((*id, piece.backend), None);
            return None;
        }
        let (keys, owned) = (self.keys.clone(), *id);
        let layout = Arc::new(cpu(move || Layout::read(&owned, &head, &keys)).await.ok()?);
        if layout.plain_len() != plain_len || layout.stored(segs) != at {
            return None;
        }
        self.layouts.put((*id, piece.backend), Some(layout.clone()));
        Some((layout, bytes.ok()??))
    }
}
