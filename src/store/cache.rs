//! The local chunk cache: decoded chunks kept on this machine's disk, so the drive, `cat`
//! and restores read again what was read lately without asking the backends. Bounded by a
//! size, least recently used out first; shared by every cuckoo process of the pool on this
//! machine (files appear by rename, so a reader sees a whole file or none).
//!
//! Nothing in it is trusted. Each file carries the BLAKE3 hashes of its 16 KiB blocks, bound
//! to the chunk's id and length by a keyed hash; every block read is checked against them,
//! and a file that fails is deleted and the chunk fetched again. In an encrypted pool the
//! blocks are also encrypted (XChaCha20, seekable, so a 4 KiB read decrypts one block) with a
//! key derived from the master key: the disk holds no plaintext of the pool.
//!
//! Owns: the cache directory and its files (docs/format.md, "Local cache"), its size bound.
//! Must not: fetch from backends (callers do and hand it what they verified) or know files.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::ObjectId;

/// First bytes of a cache file; the digit is the layout's version.
const MAGIC: &[u8; 8] = b"CKOOCCH1";
/// Bytes before the block table: magic, plain length, the table's keyed hash.
const HEAD: usize = 8 + 8 + 32;
/// Bytes checked together: a random 4 KiB read reads and hashes one block, not the chunk.
pub const BLOCK: usize = 16 * 1024;
/// Chunks waiting to be written; past this the cache skips chunks rather than slow readers.
const QUEUE: usize = 32;
/// Seconds between writes of a chunk's last use to its file's mtime, which is how the order
/// of use survives a restart.
const TOUCH_EVERY: u64 = 60;
/// Longer than any chunk (the envelope allows 64 MiB): a length past it is damage.
const MAX_LEN: u64 = 1 << 30;
/// Temporary files older than this are a crashed writer's, and are removed.
const STALE: Duration = Duration::from_secs(3600);
/// The default bound is this share of the free space where the cache lives...
const DEFAULT_SHARE: u64 = 10;
/// ...but at most this much.
const DEFAULT_MAX: u64 = 20 << 30;

/// What the cache did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads of chunks it did not hold.
    pub misses: u64,
    /// Files that failed their check (deleted; the chunk is fetched from the backends).
    pub damaged: u64,
    /// Chunks written into it.
    pub written: u64,
    /// Chunks removed to stay within the bound.
    pub evicted: u64,
    /// Bytes it holds, as this process knows them.
    pub bytes: u64,
    /// Its bound in bytes.
    pub limit: u64,
}

/// A pool's chunk cache on local disk.
pub struct LocalCache {
    inner: Arc<Inner>,
    /// The writer's queue, started at the first chunk handed over: a command that reads no
    /// chunks neither takes stock of the directory nor waits for that at its end.
    queue: OnceLock<SyncSender<Job>>,
}

struct Inner {
    /// `<cache dir>/<pool id>`.
    dir: PathBuf,
    keys: Keys,
    limit: u64,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
    damaged: AtomicU64,
    written: AtomicU64,
    evicted: AtomicU64,
}

/// The cached chunks this process knows of: its own writes and reads, and what it found on
/// disk when it started.
#[derive(Default)]
struct Index {
    entries: HashMap<ObjectId, Entry>,
    bytes: u64,
}

struct Entry {
    /// Bytes of the file.
    size: u64,
    /// Seconds since the epoch of the last use (the file's mtime, at a coarser step).
    used: u64,
}

enum Job {
    Put(ObjectId, Arc<Vec<u8>>),
    Flush(SyncSender<()>),
}

/// A bound for a cache in `dir`: a tenth of the free space there, at most 20 GiB.
pub fn default_limit(dir: &Path) -> u64 {
    let free = nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
        .unwrap_or(10 << 30);
    (free / DEFAULT_SHARE).min(DEFAULT_MAX)
}

impl LocalCache {
    /// The cache in `dir` (created, with a CACHEDIR.TAG so backup tools skip it), holding at
    /// most `limit` bytes, its files sealed with `keys`. Files are written on a thread of its
    /// own, started when first needed, which first takes stock of what the directory holds.
    pub fn open(dir: &Path, keys: Keys, limit: u64) -> Result<LocalCache> {
        let cannot = |e| Error::from_io(format!("cannot create the local cache {}", dir.display()), e);
        std::fs::create_dir_all(dir).map_err(cannot)?;
        let tag = dir.join("CACHEDIR.TAG");
        if !tag.exists() {
            std::fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n# cuckoo's local chunk cache: it can be deleted\n",
            )
            .map_err(cannot)?;
        }
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            keys,
            limit,
            index: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            damaged: AtomicU64::new(0),
            written: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        });
        Ok(LocalCache { inner, queue: OnceLock::new() })
    }

    /// The writer's queue, starting the writer. If no thread can be started, the queue is
    /// closed and nothing is cached, which costs reads, not correctness.
    fn queue(&self) -> &SyncSender<Job> {
        self.queue.get_or_init(|| {
            let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE);
            let worker = self.inner.clone();
            let _ = std::thread::Builder::new().name("cuckoo-cache".into()).spawn(move || worker.run(jobs));
            queue
        })
    }

    /// Where the cache lives.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The whole chunk, if the cache holds it intact.
    pub fn get(&self, id: &ObjectId) -> Option<Vec<u8>> {
        self.read_at(id, 0, usize::MAX)
    }

    /// Up to `len` bytes of the chunk from `offset` (fewer at its end), if the cache holds it
    /// intact. Reads and checks only the blocks they fall in.
    pub fn read_at(&self, id: &ObjectId, offset: usize, len: usize) -> Option<Vec<u8>> {
        let got = self.inner.read_at(id, offset, len);
        let counter = if got.is_some() { &self.inner.hits } else { &self.inner.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        got
    }

    /// Whether the cache holds chunk `id` (without checking it).
    pub fn holds(&self, id: &ObjectId) -> bool {
        self.inner.index.lock().expect("poisoned").entries.contains_key(id)
    }

    /// Keep `body`, a chunk verified against `id`, for later. Written in the background;
    /// skipped when the writer is behind, since a cache may always miss.
    pub fn put(&self, id: ObjectId, body: Arc<Vec<u8>>) {
        if self.inner.index.lock().expect("poisoned").entries.contains_key(&id) {
            return;
        }
        match self.queue().try_send(Job::Put(id, body)) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Wait until everything handed to `put` so far is written (or skipped), and the cache
    /// has taken stock of its directory.
    pub fn flush(&self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if self.queue().send(Job::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Remove every cached chunk (another process's chunks in flight may still appear).
    /// Returns the bytes freed.
    pub fn clear(&self) -> Result<u64> {
        self.flush();
        let mut index = self.inner.index.lock().expect("poisoned");
        let chunks = self.inner.dir.join("chunks");
        let freed = index.bytes;
        match std::fs::remove_dir_all(&chunks) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::from_io(format!("cannot remove {}", chunks.display()), e)),
        }
        index.entries.clear();
        index.bytes = 0;
        Ok(freed)
    }

    /// What it did and holds (what it holds is known once it has taken stock: after `flush`).
    pub fn stats(&self) -> CacheStats {
        let i = &self.inner;
        CacheStats {
            hits: i.hits.load(Ordering::Relaxed),
            misses: i.misses.load(Ordering::Relaxed),
            damaged: i.damaged.load(Ordering::Relaxed),
            written: i.written.load(Ordering::Relaxed),
            evicted: i.evicted.load(Ordering::Relaxed),
            bytes: i.index.lock().expect("poisoned").bytes,
            limit: i.limit,
        }
    }
}

impl Drop for LocalCache {
    /// Chunks handed over are written before the pool closes: a `cat` that ends at once
    /// still leaves its chunks for the next reader.
    fn drop(&mut self) {
        if self.queue.get().is_some() {
            self.flush();
        }
    }
}

/// Why a cached file was not used.
enum Miss {
    /// Not there (never cached, or evicted).
    Absent,
    /// There but not what it must be: deleted.
    Damaged,
}

impl Inner {
    fn path(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join("chunks").join(&hex[..2]).join(hex)
    }

    fn read_at(&self, id: &ObjectId, offset: usize, len: usize) -> Option<Vec<u8>> {
        match self.try_read(id, offset, len) {
            Ok((bytes, file, size)) => {
                self.touch(id, &file, size);
                Some(bytes)
            }
            Err(Miss::Absent) => None,
            Err(Miss::Damaged) => {
                self.damaged.fetch_add(1, Ordering::Relaxed);
                self.forget(id);
                let _ = std::fs::remove_file(self.path(id));
                None
            }
        }
    }

    fn try_read(&self, id: &ObjectId, offset: usize, len: usize) -> std::result::Result<(Vec<u8>, File, u64), Miss> {
        // A file that cannot be opened (gone, or no descriptors left) is a miss, not damage.
        let file = File::open(self.path(id)).map_err(|_| Miss::Absent)?;
        let damaged = |_| Miss::Damaged;
        let size = file.metadata().map_err(damaged)?.len();
        let mut head = [0u8; HEAD];
        file.read_exact_at(&mut head, 0).map_err(damaged)?;
        let total = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        if total > MAX_LEN {
            return Err(Miss::Damaged);
        }
        let blocks = total.div_ceil(BLOCK as u64);
        let data_at = HEAD as u64 + blocks * 32;
        if &head[..8] != MAGIC || size != data_at + total {
            return Err(Miss::Damaged);
        }
        let mut table = vec![0u8; blocks as usize * 32];
        file.read_exact_at(&mut table, HEAD as u64).map_err(damaged)?;
        if self.keys.cache_mac(&[MAGIC, &id.0, &head[8..16], &table]) != head[16..48] {
            return Err(Miss::Damaged);
        }
        let total = total as usize;
        let end = offset.saturating_add(len).min(total);
        if offset >= end {
            return Ok((Vec::new(), file, size));
        }
        let first = offset / BLOCK;
        let start = first * BLOCK;
        let stop = end.div_ceil(BLOCK).saturating_mul(BLOCK).min(total);
        let mut bytes = vec![0u8; stop - start];
        file.read_exact_at(&mut bytes, data_at + start as u64).map_err(damaged)?;
        self.keys.cache_keystream(id, start as u64, &mut bytes);
        for (i, block) in bytes.chunks(BLOCK).enumerate() {
            if blake3::hash(block).as_bytes()[..] != table[(first + i) * 32..(first + i + 1) * 32] {
                return Err(Miss::Damaged);
            }
        }
        bytes.truncate(end - start);
        bytes.drain(..offset - start);
        Ok((bytes, file, size))
    }

    /// Note a use of a cached chunk; now and then in its file too, for the next process.
    fn touch(&self, id: &ObjectId, file: &File, size: u64) {
        let now = unix_seconds(SystemTime::now());
        let mut index = self.index.lock().expect("poisoned");
        let index = &mut *index;
        let entry = index.entries.entry(*id).or_insert_with(|| {
            // Written by another process since this one took stock.
            index.bytes += size;
            Entry { size, used: 0 }
        });
        if now >= entry.used + TOUCH_EVERY {
            entry.used = now;
            let _ = file.set_modified(SystemTime::now());
        }
    }

    fn forget(&self, id: &ObjectId) {
        let mut index = self.index.lock().expect("poisoned");
        if let Some(e) = index.entries.remove(id) {
            index.bytes -= e.size;
        }
    }

    /// The writer's loop: take stock, then write what readers hand over, evicting as it goes.
    fn run(&self, jobs: Receiver<Job>) {
        self.take_stock();
        for job in jobs {
            match job {
                Job::Put(id, body) => {
                    if self.index.lock().expect("poisoned").entries.contains_key(&id) {
                        continue;
                    }
                    // A chunk that cannot be written (disk full, permissions) is only not
                    // cached; the reader already has it.
                    if let Ok(size) = self.write(&id, &body) {
                        self.written.fetch_add(1, Ordering::Relaxed);
                        let mut index = self.index.lock().expect("poisoned");
                        index.bytes += size;
                        index.entries.insert(id, Entry { size, used: unix_seconds(SystemTime::now()) });
                        drop(index);
                        self.evict();
                    }
                }
                Job::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Add the files already in the directory to the index, removing dead temporary files.
    fn take_stock(&self) {
        let Ok(dirs) = std::fs::read_dir(self.dir.join("chunks")) else { return };
        let mut found = Vec::new();
        for dir in dirs.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else { continue };
            for file in files.flatten() {
                let Ok(meta) = file.metadata() else { continue };
                let modified = meta.modified().unwrap_or(UNIX_EPOCH);
                let name = file.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') {
                    if modified.elapsed().is_ok_and(|age| age > STALE) {
                        let _ = std::fs::remove_file(file.path());
                    }
                    continue;
                }
                if let Ok(id) = ObjectId::from_hex(&name) {
                    found.push((id, Entry { size: meta.len(), used: unix_seconds(modified) }));
                }
            }
        }
        let mut index = self.index.lock().expect("poisoned");
        for (id, entry) in found {
            if !index.entries.contains_key(&id) {
                index.bytes += entry.size;
                index.entries.insert(id, entry);
            }
        }
        drop(index);
        self.evict();
    }

    /// Write one chunk's file: to a temporary name, then renamed into place. Not synced: a
    /// file lost in a crash is fetched again, and a torn one fails its check.
    fn write(&self, id: &ObjectId, body: &[u8]) -> std::io::Result<u64> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let table: Vec<u8> = body.chunks(BLOCK).flat_map(|b| *blake3::hash(b).as_bytes()).collect();
        let len = (body.len() as u64).to_le_bytes();
        let mac = self.keys.cache_mac(&[MAGIC, &id.0, &len, &table]);
        let mut sealed = body.to_vec();
        self.keys.cache_keystream(id, 0, &mut sealed);
        let path = self.path(id);
        let dir = path.parent().expect("a chunk file is in a directory");
        std::fs::create_dir_all(dir)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{}.{}.{n}", id.to_hex(), std::process::id()));
        let written = (|| {
            let mut f = std::io::BufWriter::new(File::create(&tmp)?);
            for part in [&MAGIC[..], &len, &mac, &table, &sealed] {
                f.write_all(part)?;
            }
            f.into_inner().map_err(|e| e.into_error())?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map(|()| (HEAD + table.len() + body.len()) as u64)
    }

    /// Past the bound, remove the least recently used files until a tenth is free again, so
    /// eviction runs now and then, not at every write.
    fn evict(&self) {
        let mut index = self.index.lock().expect("poisoned");
        if index.bytes <= self.limit {
            return;
        }
        let goal = self.limit - self.limit / 10;
        let mut order: Vec<(u64, ObjectId)> = index.entries.iter().map(|(id, e)| (e.used, *id)).collect();
        order.sort_unstable();
        let mut out = Vec::new();
        for (_, id) in order {
            if index.bytes <= goal {
                break;
            }
            let e = index.entries.remove(&id).expect("listed");
            index.bytes -= e.size;
            out.push(id);
        }
        drop(index);
        self.evicted.fetch_add(out.len() as u64, Ordering::Relaxed);
        for id in out {
            let _ = std::fs::remove_file(self.path(&id));
        }
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn body(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn filled(keys: Keys, chunks: &[(ObjectId, Vec<u8>)], limit: u64) -> (tempfile::TempDir, LocalCache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path(), keys, limit).unwrap();
        for (id, b) in chunks {
            cache.put(*id, Arc::new(b.clone()));
        }
        cache.flush();
        (dir, cache)
    }

    #[test]
    fn reads_whole_chunks_and_ranges_across_blocks_as_they_were() {
        for keys in [Keys::plain(), Keys::from_master(&MasterKey::from_bytes([5; 32]))] {
            let b = body(3 * BLOCK + 1000, 1);
            let id = keys.id_of(&b);
            let (_dir, cache) = filled(keys, &[(id, b.clone())], 1 << 30);
            assert_eq!(cache.get(&id).unwrap(), b);
            for (offset, len) in [(0, 4096), (BLOCK - 10, 20), (2 * BLOCK + 5, 5000), (3 * BLOCK + 999, 99), (5, 0)] {
                let want = &b[offset.min(b.len())..(offset + len).min(b.len())];
                assert_eq!(cache.read_at(&id, offset, len).unwrap(), want, "{offset}+{len}");
            }
            assert_eq!(cache.read_at(&id, b.len() + 7, 10).unwrap(), b"");
            assert_eq!(cache.get(&ObjectId([9; 32])), None);
            let stats = cache.stats();
            assert_eq!((stats.written, stats.misses, stats.damaged), (1, 1, 0));
        }
    }

    #[test]
    fn an_encrypted_pools_cache_holds_no_plaintext() {
        let keys = Keys::from_master(&MasterKey::from_bytes([5; 32]));
        let b = b"a line that must not appear on the local disk ".repeat(100);
        let id = keys.id_of(&b);
        let (dir, cache) = filled(keys, &[(id, b.clone())], 1 << 30);
        let stored = std::fs::read(cache.inner.path(&id)).unwrap();
        assert!(!stored.windows(20).any(|w| w == &b[..20]));
        drop(dir);
    }

    #[test]
    fn a_damaged_or_swapped_file_is_deleted_and_never_served() {
        let keys = Keys::from_master(&MasterKey::from_bytes([5; 32]));
        let (a, b) = (body(2 * BLOCK, 1), body(2 * BLOCK, 2));
        let (ia, ib) = (keys.id_of(&a), keys.id_of(&b));
        let (_dir, cache) = filled(keys, &[(ia, a.clone()), (ib, b)], 1 << 30);
        // One bit of the data, in the second block.
        let path = cache.inner.path(&ia);
        let mut stored = std::fs::read(&path).unwrap();
        let at = stored.len() - 10;
        stored[at] ^= 1;
        std::fs::write(&path, &stored).unwrap();
        assert_eq!(cache.read_at(&ia, 0, 100).unwrap(), &a[..100], "the first block is intact");
        assert_eq!(cache.read_at(&ia, BLOCK, 100), None);
        assert!(!path.exists(), "the damaged file is gone");
        // Another chunk's file under this id: its table is bound to the other id.
        std::fs::copy(cache.inner.path(&ib), &path).unwrap();
        assert_eq!(cache.get(&ia), None);
        // Cut short.
        cache.put(ia, Arc::new(a.clone()));
        cache.flush();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(HEAD as u64 + 40).unwrap();
        assert_eq!(cache.get(&ia), None);
        // A length no chunk has (regression: the size check overflowed).
        let mut huge = MAGIC.to_vec();
        huge.extend(u64::MAX.to_le_bytes());
        huge.resize(HEAD + 64, 0);
        std::fs::write(&path, huge).unwrap();
        assert_eq!(cache.get(&ia), None);
        assert_eq!(cache.stats().damaged, 4);
    }

    #[test]
    fn the_bound_holds_and_the_least_recently_used_go_first() {
        let keys = Keys::plain();
        let chunks: Vec<(ObjectId, Vec<u8>)> = (0..10u8)
            .map(|i| {
                let b = body(100_000, i);
                (keys.id_of(&b), b)
            })
            .collect();
        let (_dir, cache) = filled(keys.clone(), &chunks[..5], 550_000);
        // Used long ago, except the first: it goes last.
        for (id, _) in &chunks[1..5] {
            cache.inner.index.lock().unwrap().entries.get_mut(id).unwrap().used = 1;
        }
        for (id, b) in &chunks[5..] {
            cache.put(*id, Arc::new(b.clone()));
        }
        cache.flush();
        let stats = cache.stats();
        assert!(stats.bytes <= 550_000 && stats.evicted >= 5, "{stats:?}");
        assert!(cache.get(&chunks[0].0).is_some(), "the recently used chunk stayed");
        assert!(cache.get(&chunks[9].0).is_some(), "the newest stayed");
        assert!(chunks[1..5].iter().all(|(id, _)| cache.get(id).is_none()));
        let on_disk = files(cache.dir());
        assert_eq!(on_disk as usize, cache.inner.index.lock().unwrap().entries.len());
    }

    #[test]
    fn a_new_process_finds_what_an_earlier_one_cached() {
        let keys = Keys::plain();
        let b = body(50_000, 3);
        let id = keys.id_of(&b);
        let (dir, cache) = filled(keys.clone(), &[(id, b.clone())], 1 << 30);
        let size = cache.stats().bytes;
        drop(cache);
        let again = LocalCache::open(dir.path(), keys, 1 << 30).unwrap();
        again.flush();
        assert_eq!(again.stats().bytes, size);
        assert_eq!(again.get(&id).unwrap(), b);
        assert!(dir.path().join("CACHEDIR.TAG").exists());
    }

    fn files(dir: &Path) -> u64 {
        let mut n = 0;
        for d in std::fs::read_dir(dir.join("chunks")).unwrap().flatten() {
            n += std::fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .filter(|f| !f.file_name().to_string_lossy().starts_with('.'))
                .count() as u64;
        }
        n
    }
}
