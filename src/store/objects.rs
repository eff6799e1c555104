//! Placed objects (chunks and tree packs): writing their pieces to the next healthy owners,
//! and reading them back from whichever pieces answer, rebuilding from shards if need be.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use futures::future::join_all;

use super::{Piece, Store, Stored, piece_path};
use crate::codec::ObjectKind;
use crate::error::{Error, ErrorKind, Result};
use crate::exec::cpu;
use crate::id::ObjectId;
use crate::redundancy::{self, Scheme};
use crate::ring::{keep_window, write_window};

impl Store {
    /// Store an encoded object with the pool's scheme. Pieces already present (same name,
    /// same length: names are content hashes, so a complete earlier write) are kept. A piece
    /// whose backend fails goes to the next eligible backend in ring order.
    pub async fn put(&self, kind: ObjectKind, id: &ObjectId, envelope: Vec<u8>) -> Result<Stored> {
        match self.scheme {
            Scheme::Copies(n) => self.put_copies(kind, id, envelope.into(), n as usize).await,
            Scheme::Erasure { data, parity } => self.put_shards(kind, id, envelope, data, parity).await,
        }
    }

    /// The backends that can take a piece of `len` bytes now, or an error saying why none can.
    fn order_for(&self, id: &ObjectId, pieces: usize, len: u64, needed: usize) -> Result<Vec<usize>> {
        let order = self.eligible(id, pieces, len, false);
        if order.len() < needed {
            let down: Vec<&str> = self.health.down().iter().map(|i| self.backends[*i].name.as_str()).collect();
            let full: Vec<&str> = (0..self.backends.len())
                .filter(|i| !self.has_room(*i, len))
                .map(|i| self.backends[i].name.as_str())
                .collect();
            return Err(Error::new(
                if full.len() >= down.len() { ErrorKind::Full } else { ErrorKind::Backend },
                format!(
                    "{} backends can take new data, {needed} needed (down: {}; full or draining: {})",
                    order.len(),
                    if down.is_empty() { "none".into() } else { down.join(", ") },
                    if full.is_empty() { "none".into() } else { full.join(", ") },
                ),
            ));
        }
        Ok(order)
    }

    async fn present(&self, path: &str, probe: &[usize], len: u64) -> Vec<bool> {
        let stats = join_all(probe.iter().map(|i| self.backends[*i].len(path))).await;
        stats
            .into_iter()
            .zip(probe)
            .map(|(s, i)| {
                self.health.observe(*i, &s);
                matches!(s, Ok(Some(l)) if l == len)
            })
            .collect()
    }

    async fn put_copies(&self, kind: ObjectKind, id: &ObjectId, envelope: Bytes, n: usize) -> Result<Stored> {
        let len = envelope.len() as u64;
        let path = piece_path(kind, id, false);
        let order = self.order_for(id, n, len, 1)?;
        // Copies rebalance left one rank further down count as much as those in the window.
        let probe: Vec<usize> = order.iter().take(keep_window(n)).copied().collect();
        let present = self.present(&path, &probe, len).await;
        let have: Vec<Piece> = probe
            .iter()
            .zip(&present)
            .filter(|(_, p)| **p)
            .map(|(i, _)| Piece { backend: *i, shard: false, stored_len: len })
            .collect();
        if have.len() >= n {
            return Ok(Stored { pieces: have, written: false, degraded: false });
        }
        let held = |i: &usize| have.iter().any(|p| p.backend == *i);
        let free: Vec<usize> = order.iter().take(write_window(n)).copied().filter(|i| !held(i)).collect();
        let chosen = self.pick(n, &free, n - have.len());
        // The chosen first; the rest of the order takes over from any that fails.
        let queue: VecDeque<usize> =
            chosen.iter().copied().chain(order.iter().copied().filter(|i| !held(i) && !chosen.contains(i))).collect();
        let queue = Mutex::new(queue);
        let slots = (0..n - have.len()).map(|_| self.write_with_failover(&path, &queue, false, envelope.clone()));
        let (written, failure) = gather(join_all(slots).await);
        let written_any = !written.is_empty();
        let mut pieces = have;
        pieces.extend(written);
        if pieces.is_empty() {
            let why = failure.map(|e| format!(": {e}")).unwrap_or_default();
            return Err(Error::new(ErrorKind::Backend, format!("{kind:?} {}: no backend took it{why}", id.short())));
        }
        Ok(Stored { degraded: pieces.len() < n, pieces, written: written_any })
    }

    async fn put_shards(&self, kind: ObjectKind, id: &ObjectId, envelope: Vec<u8>, k: u8, m: u8) -> Result<Stored> {
        let len = redundancy::shard_object_len(envelope.len(), k) as u64;
        let path = piece_path(kind, id, true);
        let total = (k + m) as usize;
        let order = self.order_for(id, total, len, k as usize)?;
        let probe: Vec<usize> = order.iter().take(keep_window(total)).copied().collect();
        let present = self.present(&path, &probe, len).await;
        if present.iter().filter(|p| **p).count() >= total {
            let pieces = probe
                .iter()
                .zip(&present)
                .filter(|(_, p)| **p)
                .map(|(i, _)| Piece { backend: *i, shard: true, stored_len: len })
                .collect();
            return Ok(Stored { pieces, written: false, degraded: false });
        }
        let targets = self.pick(total, &order[..order.len().min(write_window(total))], total);
        let id_owned = *id;
        let shards = cpu(move || redundancy::split(&id_owned, &envelope, k, m)).await?;
        let spares = Mutex::new(order.iter().copied().filter(|i| !targets.contains(i)).collect::<VecDeque<usize>>());
        let writes = shards.into_iter().enumerate().map(|(i, shard)| {
            let first = targets.get(i).copied();
            let (spares, path, shard) = (&spares, &path, Bytes::from(shard));
            async move {
                let queue = Mutex::new(first.into_iter().collect::<VecDeque<usize>>());
                match self.write_with_failover(path, &queue, true, shard.clone()).await {
                    Ok(Some(p)) => Ok(Some(p)),
                    first_try => match self.write_with_failover(path, spares, true, shard).await {
                        Ok(None) => first_try,
                        spare => spare,
                    },
                }
            }
        });
        let (pieces, failure) = gather(join_all(writes).await);
        if pieces.len() < k as usize {
            let why = failure.map(|e| format!(": {e}")).unwrap_or_default();
            return Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "{kind:?} {}: only {} of its shards could be stored, {k} needed{why}",
                    id.short(),
                    pieces.len()
                ),
            ));
        }
        Ok(Stored { degraded: pieces.len() < total, pieces, written: true })
    }

    /// Write one piece to the first backend of `queue` that takes it: `None` if the queue
    /// held no usable backend, the last failure if every one tried failed.
    async fn write_with_failover(
        &self,
        path: &str,
        queue: &Mutex<VecDeque<usize>>,
        shard: bool,
        bytes: Bytes,
    ) -> Result<Option<Piece>> {
        let len = bytes.len() as u64;
        let mut failure = None;
        loop {
            let Some(i) = queue.lock().expect("poisoned").pop_front() else {
                return failure.map_or(Ok(None), Err);
            };
            if !self.health.is_up(i) || !self.has_room(i, len) {
                continue;
            }
            self.add_load(i, len);
            let r = self.backends[i].write(path, bytes.clone()).await;
            self.health.observe(i, &r);
            match r {
                Ok(()) => return Ok(Some(Piece { backend: i, shard, stored_len: len })),
                Err(e) => {
                    self.sub_load(i, len);
                    failure = Some(e);
                }
            }
        }
    }

    /// Write one piece's bytes to backend `index` (repair and rebalance).
    pub async fn write_piece(
        &self,
        kind: ObjectKind,
        id: &ObjectId,
        index: usize,
        shard: bool,
        bytes: Bytes,
    ) -> Result<Piece> {
        let len = bytes.len() as u64;
        let r = self.backends[index].write(&piece_path(kind, id, shard), bytes).await;
        self.health.observe(index, &r);
        r?;
        self.add_load(index, len);
        Ok(Piece { backend: index, shard, stored_len: len })
    }

    /// Delete one piece (rebalance, prune).
    pub async fn delete_piece(&self, kind: ObjectKind, id: &ObjectId, piece: &Piece) -> Result<()> {
        let r = self.backends[piece.backend].delete(&piece_path(kind, id, piece.shard)).await;
        self.health.observe(piece.backend, &r);
        r?;
        self.sub_load(piece.backend, piece.stored_len);
        Ok(())
    }

    /// The raw bytes of one piece, `None` if it is not there.
    pub async fn read_piece(&self, kind: ObjectKind, id: &ObjectId, piece: &Piece) -> Result<Option<Bytes>> {
        let r = self.backends[piece.backend].read(&piece_path(kind, id, piece.shard)).await;
        self.health.observe(piece.backend, &r);
        r.map_err(|e| self.name_error(piece, e))
    }

    /// Verify one piece's bytes on their own: a whole copy decodes to its id, a shard passes
    /// its checksum (its index is returned). The error says which backend holds the bad piece.
    pub fn check_piece(&self, kind: ObjectKind, id: &ObjectId, piece: &Piece, bytes: &[u8]) -> Result<Option<u8>> {
        let r = if piece.shard {
            redundancy::open_shard(id, bytes).map(|s| Some(s.index))
        } else {
            super::verify(kind, id, bytes, &self.keys).map(|_| None)
        };
        r.map_err(|e| self.name_error(piece, e))
    }

    fn name_error(&self, piece: &Piece, e: Error) -> Error {
        let b = &self.backends[piece.backend];
        if e.context().contains(&format!("'{}'", b.name)) {
            return e;
        }
        Error::new(e.kind(), format!("backend '{}': {}", b.name, e.context()))
    }

    /// Fetch, decode and verify object `id`. `hint` is where the catalogue says its pieces
    /// are; without one, or if those fail, the pieces are looked for on every backend.
    pub async fn get(&self, kind: ObjectKind, id: &ObjectId, hint: &[Piece]) -> Result<Vec<u8>> {
        self.get_located(kind, id, hint).await.map(|(body, _)| body)
    }

    /// Like `get`, also returning every piece known to exist (to record in the catalogue).
    pub async fn get_located(&self, kind: ObjectKind, id: &ObjectId, hint: &[Piece]) -> Result<(Vec<u8>, Vec<Piece>)> {
        let mut failure = None;
        if !hint.is_empty() {
            match self.read_from(kind, id, hint).await {
                Ok(body) => return Ok((body, hint.to_vec())),
                Err(e) => failure = Some(e),
            }
        } else if let Scheme::Copies(n) = self.scheme {
            // Where a copy most likely is, before asking every backend.
            let likely = self.ring.order(id, n as usize).into_iter().take(keep_window(n as usize));
            let likely = likely.filter(|i| self.health.is_up(*i));
            for backend in likely {
                let mut piece = Piece { backend, shard: false, stored_len: 0 };
                match self.read_piece(kind, id, &piece).await {
                    Ok(Some(bytes)) => {
                        piece.stored_len = bytes.len() as u64;
                        let (keys, id) = (self.keys.clone(), *id);
                        match cpu(move || super::verify(kind, &id, &bytes, &keys)).await {
                            Ok(body) => return Ok((body, vec![piece])),
                            Err(e) => failure = Some(worse(failure, self.name_error(&piece, e))),
                        }
                    }
                    Ok(None) => {}
                    Err(e) => failure = Some(worse(failure, e)),
                }
            }
        }
        let found = self.discover(kind, id).await;
        let known: Vec<Piece> = found.iter().filter(|p| !hint.contains(p)).copied().collect();
        if known.is_empty() {
            return Err(failure
                .unwrap_or_else(|| Error::not_found(format!("{kind:?} {} is on no reachable backend", id.to_hex()))));
        }
        match self.read_from(kind, id, &found).await {
            Ok(body) => Ok((body, found)),
            Err(e) => Err(worse(failure, e)),
        }
    }

    /// Every piece of `id` on the backends (those marked down are asked only if the others
    /// have none).
    async fn discover(&self, kind: ObjectKind, id: &ObjectId) -> Vec<Piece> {
        let ask = |up: bool| {
            let probes = (0..self.backends.len())
                .filter(move |i| self.health.is_up(*i) == up)
                .flat_map(|i| [(i, false), (i, true)])
                .map(|(i, shard)| async move {
                    let r = self.backends[i].len(&piece_path(kind, id, shard)).await;
                    self.health.observe(i, &r);
                    r.ok().flatten().map(|stored_len| Piece { backend: i, shard, stored_len })
                });
            join_all(probes)
        };
        let found: Vec<Piece> = ask(true).await.into_iter().flatten().collect();
        if !found.is_empty() {
            return found;
        }
        ask(false).await.into_iter().flatten().collect()
    }

    /// Read the object from `pieces`: whole copies first (healthy backends first), then
    /// shards, as few as needed.
    async fn read_from(&self, kind: ObjectKind, id: &ObjectId, pieces: &[Piece]) -> Result<Vec<u8>> {
        let mut ordered = pieces.to_vec();
        ordered.sort_by_key(|p| (p.shard, !self.health.is_up(p.backend)));
        let mut failure = None;
        for piece in ordered.iter().filter(|p| !p.shard) {
            match self.read_copy(kind, id, piece).await {
                Ok(body) => return Ok(body),
                Err(e) => failure = Some(worse(failure, e)),
            }
        }
        let shards: Vec<Piece> = ordered.into_iter().filter(|p| p.shard).collect();
        if !shards.is_empty() {
            match self.read_shards(kind, id, shards).await {
                Ok(body) => return Ok(body),
                Err(e) => failure = Some(worse(failure, e)),
            }
        }
        Err(failure.unwrap_or_else(|| Error::not_found(format!("{kind:?} {} has no pieces", id.to_hex()))))
    }

    /// One whole copy, read and verified. With a known length the read asks for exactly
    /// that (`Backend::read_expecting`); the length comes from the catalogue, which is not
    /// trusted, so bytes that fail to verify are read again whole before the copy counts as
    /// bad: a stale length costs a second read, never a false alarm.
    async fn read_copy(&self, kind: ObjectKind, id: &ObjectId, piece: &Piece) -> Result<Vec<u8>> {
        let sized = piece.stored_len > 0;
        let read = if sized {
            let r = self.backends[piece.backend].read_expecting(&piece_path(kind, id, false), piece.stored_len).await;
            self.health.observe(piece.backend, &r);
            r.map_err(|e| self.name_error(piece, e))
        } else {
            self.read_piece(kind, id, piece).await
        };
        let Some(bytes) = read? else {
            return Err(self.missing(kind, id, piece));
        };
        let (keys, at) = (self.keys.clone(), *id);
        match cpu(move || super::verify(kind, &at, &bytes, &keys)).await {
            Ok(body) => Ok(body),
            Err(_) if sized => Box::pin(self.read_copy(kind, id, &Piece { stored_len: 0, ..*piece })).await,
            Err(e) => Err(self.name_error(piece, e)),
        }
    }

    fn missing(&self, kind: ObjectKind, id: &ObjectId, piece: &Piece) -> Error {
        Error::not_found(format!(
            "backend '{}': {kind:?} {} is missing",
            self.backends[piece.backend].name,
            id.to_hex()
        ))
    }

    /// Read shards in waves of as many as are still needed, then rebuild and verify.
    async fn read_shards(&self, kind: ObjectKind, id: &ObjectId, shards: Vec<Piece>) -> Result<Vec<u8>> {
        let mut queue: VecDeque<Piece> = shards.into();
        let mut need = match self.scheme {
            Scheme::Erasure { data, .. } => data as usize,
            Scheme::Copies(_) => 1,
        };
        // Shards by index: a backend may hold a duplicate of a shard another one has (left
        // by repair before a rebalance), which adds nothing.
        let mut valid: std::collections::BTreeMap<u8, Bytes> = Default::default();
        let mut failure = None;
        while valid.len() < need {
            let wave: Vec<Piece> = (valid.len()..need).filter_map(|_| queue.pop_front()).collect();
            if wave.is_empty() {
                break;
            }
            let reads = join_all(wave.iter().map(|p| self.read_piece(kind, id, p))).await;
            for (piece, read) in wave.iter().zip(reads) {
                let bytes = match read {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        failure = Some(worse(failure, self.missing(kind, id, piece)));
                        continue;
                    }
                    Err(e) => {
                        failure = Some(worse(failure, e));
                        continue;
                    }
                };
                let id_owned = *id;
                let opened = cpu(move || {
                    redundancy::open_shard(&id_owned, &bytes).map(|s| (s.data, s.index)).map(|s| (s, bytes))
                });
                match opened.await {
                    Ok(((data, index), bytes)) => {
                        need = data as usize;
                        valid.insert(index, bytes);
                    }
                    Err(e) => failure = Some(worse(failure, self.name_error(piece, e))),
                }
            }
        }
        if valid.len() < need {
            let why = failure.map(|e| format!(": {}", e.context())).unwrap_or_default();
            return Err(Error::corrupt(format!(
                "{kind:?} {}: {} of the {need} shards needed could be read{why}",
                id.to_hex(),
                valid.len()
            )));
        }
        let valid: Vec<Bytes> = valid.into_values().collect();
        let (keys, id) = (self.keys.clone(), *id);
        cpu(move || {
            let opened = valid.iter().map(|b| redundancy::open_shard(&id, b)).collect::<Result<Vec<_>>>()?;
            let envelope = redundancy::join(&id, &opened)?;
            super::verify(kind, &id, &envelope, &keys)
        })
        .await
    }
}

/// The pieces that were written, and the first failure among the slots that wrote none.
fn gather(results: Vec<Result<Option<Piece>>>) -> (Vec<Piece>, Option<Error>) {
    let mut failure = None;
    let pieces = results
        .into_iter()
        .filter_map(|r| {
            r.unwrap_or_else(|e| {
                failure.get_or_insert(e);
                None
            })
        })
        .collect();
    (pieces, failure)
}

/// The more telling of two failures: corruption over unreachable over missing.
fn worse(a: Option<Error>, b: Error) -> Error {
    let rank = |e: &Error| match e.kind() {
        ErrorKind::Corrupt | ErrorKind::UnsupportedVersion => 3,
        ErrorKind::NotFound => 1,
        _ => 2,
    };
    match a {
        Some(a) if rank(&a) >= rank(&b) => a,
        _ => b,
    }
}
