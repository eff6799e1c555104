//! The records the pool stores besides raw chunks: trees (directories), snapshots and the
//! pool record, with their body encoding (postcard, inside the codec envelope).
//!
//! Owns: the shape of these records and their body bytes. Must not: compress, do I/O, or
//! read config. Adding a field means a new format version (docs/format.md).

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::redundancy::Scheme;

/// A slice of one chunk: file content is a list of these, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk.
    pub id: ObjectId,
    /// Where the slice starts inside the chunk (non-zero only for packed small files).
    pub offset: u32,
    /// Slice length.
    pub len: u32,
}

/// Metadata kept for every entry; enough to restore it and to tell an unchanged file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission and set-id bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Change time, nanoseconds since the epoch: only compared, never restored.
    pub ctime_ns: i64,
    /// Device of the source file system.
    pub dev: u64,
    /// Inode on that device.
    pub ino: u64,
    /// Hard-link count when backed up; entries with the same (dev, ino) and nlink > 1 are
    /// restored as one file with several names.
    pub nlink: u64,
    /// Extended attributes, sorted by name; POSIX ACLs are among them
    /// (`system.posix_acl_access`, `system.posix_acl_default`). Stored in the tree body's
    /// extension, not with the fields above (docs/format.md, "Tree extension").
    #[serde(skip)]
    pub xattrs: Vec<Xattr>,
}

/// One extended attribute: its full name (`user.x`, `security.selinux`, …) and raw value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Name, namespace prefix included.
    pub name: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// What an entry is, with what each kind needs to be restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file.
    File {
        /// Length in bytes (the sum of the slice lengths).
        size: u64,
        /// Content slices, in file order.
        content: Vec<ChunkRef>,
    },
    /// A directory and the tree listing it.
    Dir {
        /// The child tree (BLAKE3 of its body).
        tree: ObjectId,
        /// The tree pack holding the child's body, or `None` when it is in the same pack as
        /// this directory's body.
        pack: Option<ObjectId>,
    },
    /// A symbolic link and its raw target bytes.
    Symlink {
        /// Target, not resolved.
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket (restored as a socket node, which nothing listens on).
    Socket,
    /// A character device.
    CharDevice {
        /// Device number.
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Device number.
        rdev: u64,
    },
}

/// One directory entry. Names are raw bytes: Unix allows any byte but `/` and NUL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name within the directory.
    pub name: Vec<u8>,
    /// What it is.
    pub kind: NodeKind,
    /// Its metadata.
    pub meta: Meta,
}

/// A directory: entries sorted by name bytes, so equal directories have equal ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries, sorted by `name`.
    pub entries: Vec<Node>,
}

/// Where a tree's body is: its id and the tree pack that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TreeRef {
    /// BLAKE3 of the tree body.
    pub id: ObjectId,
    /// The pack object holding the body.
    pub pack: ObjectId,
}

/// Directory bodies stored together in one object, so a tree of many small directories
/// costs about (tree bytes / 256 KiB) objects rather than one per directory. Which bodies
/// share a pack is decided from content alone (see `backup::walker`), so an unchanged
/// subtree packs the same way every time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreePack {
    /// (tree id, tree body) pairs, children before parents.
    pub trees: Vec<(ObjectId, Vec<u8>)>,
}

impl TreePack {
    /// The body of tree `id`, checked against its id under the pool's `keys`.
    pub fn body(&self, id: &ObjectId, keys: &crate::crypto::Keys) -> Result<&[u8]> {
        let (_, body) = self
            .trees
            .iter()
            .find(|(t, _)| t == id)
            .ok_or_else(|| Error::corrupt(format!("tree {} is not in its pack", id.to_hex())))?;
        if keys.id_of(body) != *id {
            return Err(Error::corrupt(format!("tree {} does not match its id", id.to_hex())));
        }
        Ok(body)
    }
}

/// Counters stored with a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Other entries (links, special files).
    pub others: u64,
    /// Logical bytes of all files.
    pub bytes: u64,
    /// Files read because they were new or changed.
    pub files_read: u64,
    /// Bytes of those files.
    pub bytes_read: u64,
    /// Chunks and trees this snapshot added to the pool.
    pub objects_added: u64,
    /// Plain bytes of those objects.
    pub bytes_added: u64,
    /// Stored (compressed) bytes of those objects.
    pub stored_bytes_added: u64,
    /// Entries skipped because they could not be read.
    pub skipped: u64,
}

/// The tag of the snapshot that holds the drive's current state.
pub const DRIVE_HEAD_TAG: &str = "drive-head";
/// The tag of snapshots taken of the drive (`fs::Drive::snapshot`).
pub const DRIVE_TAG: &str = "drive";

/// A snapshot: the root tree of one backup run plus where and when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Start time, nanoseconds since the epoch.
    pub time_ns: i64,
    /// Machine that took it.
    pub hostname: String,
    /// User who took it.
    pub username: String,
    /// The absolute paths given to backup; each is an entry of the root tree under its
    /// base name.
    pub paths: Vec<String>,
    /// Labels given with `--tag`.
    pub tags: Vec<String>,
    /// The root tree.
    pub tree: ObjectId,
    /// The tree pack holding the root tree's body.
    pub tree_pack: ObjectId,
    /// The snapshot used to skip unchanged files, if any.
    pub parent: Option<ObjectId>,
    /// Counters.
    pub summary: Summary,
    /// The cuckoo version that wrote it.
    pub program_version: String,
}

/// A lock, kept on every backend while an operation runs: shared for backup, restore and
/// check, exclusive for prune.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// True for prune's lock, which excludes every other.
    pub exclusive: bool,
    /// What holds it ("backup", "prune", ...), for messages.
    pub operation: String,
    /// Machine of the holder.
    pub hostname: String,
    /// Process id of the holder on that machine.
    pub pid: u32,
    /// When it was taken, nanoseconds since the epoch.
    pub created_ns: i64,
    /// When the holder last proved it is alive; a lock not refreshed for a while is stale.
    pub refreshed_ns: i64,
}

/// The objects one prune deleted, kept on every backend so that every machine's catalogue
/// stops counting on them at its next sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneRecord {
    /// When the prune ran, nanoseconds since the epoch.
    pub time_ns: i64,
    /// Chunks and tree packs deleted.
    pub deleted: Vec<ObjectId>,
}

/// Snapshots forgotten while some backend could not delete its copy of them (read-only,
/// unreachable): kept on every backend that takes it, so that a copy left behind is not
/// listed, synced or copied back by `repair`, which deletes it once its backend lets it.
/// Deleted again once no backend holds any of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetRecord {
    /// When the forget ran, nanoseconds since the epoch.
    pub time_ns: i64,
    /// The snapshots forgotten.
    pub snapshots: Vec<ObjectId>,
}

/// The pool record, kept on every backend: which pool a backend belongs to and the settings
/// every writer must share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// Random id of the pool.
    pub pool_id: [u8; 16],
    /// When the pool was created, nanoseconds since the epoch.
    pub created_ns: i64,
    /// The chunk sizes every writer uses.
    pub chunker: ChunkerParams,
    /// The redundancy every writer stores new objects with (each object records its own).
    pub redundancy: Scheme,
    /// The placement version every writer of the pool uses (docs/format.md, "Placement"): a
    /// build that knows only older ones may read the pool but not write to it, so objects
    /// are never spread by two rules at once. `None` in pools created before it was
    /// recorded, which each build writes by its own (version 2 since 2026-12-02).
    pub placement: Option<u8>,
}

/// The pool record as written before placement versions were recorded (format version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecordV1 {
    /// Random id of the pool.
    pub pool_id: [u8; 16],
    /// When the pool was created, nanoseconds since the epoch.
    pub created_ns: i64,
    /// The chunk sizes every writer uses.
    pub chunker: ChunkerParams,
    /// The redundancy every writer stores new objects with.
    pub redundancy: Scheme,
}

impl From<PoolRecordV1> for PoolRecord {
    fn from(v: PoolRecordV1) -> PoolRecord {
        PoolRecord {
            pool_id: v.pool_id,
            created_ns: v.created_ns,
            chunker: v.chunker,
            redundancy: v.redundancy,
            placement: None,
        }
    }
}

impl From<&PoolRecord> for PoolRecordV1 {
    fn from(r: &PoolRecord) -> PoolRecordV1 {
        PoolRecordV1 { pool_id: r.pool_id, created_ns: r.created_ns, chunker: r.chunker, redundancy: r.redundancy }
    }
}

/// The pool record as written before redundancy existed (read as one copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecordV0 {
    /// Random id of the pool.
    pub pool_id: [u8; 16],
    /// When the pool was created, nanoseconds since the epoch.
    pub created_ns: i64,
    /// The chunk sizes every writer uses.
    pub chunker: ChunkerParams,
}

impl From<PoolRecordV0> for PoolRecord {
    fn from(v: PoolRecordV0) -> PoolRecord {
        PoolRecord {
            pool_id: v.pool_id,
            created_ns: v.created_ns,
            chunker: v.chunker,
            redundancy: Scheme::NONE,
            placement: None,
        }
    }
}

impl PoolRecord {
    /// The pool id as hex, as shown to people and used in file names.
    pub fn pool_id_hex(&self) -> String {
        hex::encode(self.pool_id)
    }
}

/// Encode any record body.
pub fn to_body<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records always serialise")
}

/// Decode a record body; trailing bytes are corruption, not slack.
pub fn from_body<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes(bytes)
        .map_err(|e| Error::corrupt(format!("{what} does not decode")).with_source(e))?;
    if !rest.is_empty() {
        return Err(Error::corrupt(format!("{what} has {} trailing bytes", rest.len())));
    }
    Ok(value)
}

/// Records the catalogue keeps and checks: decoded each by its own rules.
pub trait Decode: Sized {
    /// Decode a body.
    fn decode(bytes: &[u8]) -> Result<Self>;
}

impl Decode for Tree {
    fn decode(bytes: &[u8]) -> Result<Tree> {
        Tree::from_body(bytes)
    }
}

impl Decode for Snapshot {
    fn decode(bytes: &[u8]) -> Result<Snapshot> {
        from_body("snapshot", bytes)
    }
}

impl Node {
    /// Where this directory's tree is, given the pack of the tree listing this node.
    pub fn subtree(&self, parent_pack: &ObjectId) -> Option<TreeRef> {
        match &self.kind {
            NodeKind::Dir { tree, pack } => Some(TreeRef { id: *tree, pack: pack.unwrap_or(*parent_pack) }),
            _ => None,
        }
    }
}

/// Which snapshots a command considers, as restic's `--host`, `--tag` and `--path` say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Taken on any of these hosts (none given: any host).
    pub hosts: Vec<String>,
    /// Carrying every tag of at least one of these sets (none given: any tags).
    pub tags: Vec<Vec<String>>,
    /// Holding every one of these paths (absolute and normalised, as snapshots record them).
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && (self.tags.is_empty() || self.tags.iter().any(|set| set.iter().all(|t| s.tags.contains(t))))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }
}

/// The first byte of a tree body's extension, after the postcard `Tree`: its version.
const TREE_EXTENSION_V1: u8 = 1;

/// What a tree body carries after its entries: per entry (by index, increasing), what
/// the entries' fields leave out. Absent when no entry has any.
#[derive(Serialize, Deserialize)]
struct TreeExtensionV1 {
    xattrs: Vec<(u32, Vec<Xattr>)>,
}

impl Tree {
    /// The tree's body: its entries, then the extension if any entry has extended attributes.
    pub fn to_body(&self) -> Vec<u8> {
        let mut body = to_body(self);
        let xattrs: Vec<(u32, Vec<Xattr>)> = (self.entries.iter().enumerate())
            .filter(|(_, n)| !n.meta.xattrs.is_empty())
            .map(|(i, n)| (i as u32, n.meta.xattrs.clone()))
            .collect();
        if !xattrs.is_empty() {
            body.push(TREE_EXTENSION_V1);
            body.extend(to_body(&TreeExtensionV1 { xattrs }));
        }
        body
    }

    /// Decode a tree body, with its extension if it has one.
    pub fn from_body(bytes: &[u8]) -> Result<Tree> {
        let (mut tree, rest): (Tree, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| Error::corrupt("tree does not decode").with_source(e))?;
        let Some((&version, rest)) = rest.split_first() else { return Ok(tree) };
        if version != TREE_EXTENSION_V1 {
            return Err(Error::new(
                crate::error::ErrorKind::UnsupportedVersion,
                format!("tree extension version {version} is newer than this build reads ({TREE_EXTENSION_V1})"),
            ));
        }
        let ext: TreeExtensionV1 = from_body("tree extension", rest)?;
        let mut last = None;
        for (i, xattrs) in ext.xattrs {
            let fits = last.is_none_or(|l| i > l) && (i as usize) < tree.entries.len() && !xattrs.is_empty();
            if !fits {
                return Err(Error::corrupt(format!("tree extension names entry {i} out of order or range")));
            }
            tree.entries[i as usize].meta.xattrs = xattrs;
            last = Some(i);
        }
        Ok(tree)
    }

    /// Sort entries into the canonical order.
    pub fn sort(&mut self) {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Find an entry by name.
    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.entries.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta() -> Meta {
        Meta { mode: 0o644, uid: 1, gid: 2, mtime_ns: -5, ctime_ns: 7, dev: 3, ino: 4, nlink: 1, xattrs: vec![] }
    }

    #[test]
    fn tree_round_trip_and_lookup() {
        let mut t = Tree {
            entries: vec![
                Node { name: b"z".to_vec(), kind: NodeKind::Fifo, meta: meta() },
                Node {
                    name: "ä\n".as_bytes().to_vec(),
                    kind: NodeKind::File {
                        size: 3,
                        content: vec![ChunkRef { id: ObjectId::of(b"x"), offset: 1, len: 3 }],
                    },
                    meta: meta(),
                },
            ],
        };
        t.sort();
        let body = t.to_body();
        assert_eq!(body, to_body(&t), "no extended attributes: the body of format 1");
        let back = Tree::from_body(&body).unwrap();
        assert_eq!(back, t);
        assert!(back.get(b"z").is_some());
        assert!(back.get(b"y").is_none());
        let mut longer = body.clone();
        longer.push(0);
        assert!(Tree::from_body(&longer).is_err());
    }

    #[test]
    fn extended_attributes_round_trip_in_the_extension() {
        let xattr = |n: &str, v: &[u8]| Xattr { name: n.as_bytes().to_vec(), value: v.to_vec() };
        let node = |name: &[u8], xattrs: Vec<Xattr>| Node {
            name: name.to_vec(),
            kind: NodeKind::Fifo,
            meta: Meta { xattrs, ..meta() },
        };
        let t = Tree {
            entries: vec![
                node(b"a", vec![]),
                node(b"b", vec![xattr("system.posix_acl_access", &[2, 0, 0, 0]), xattr("user.k", b"")]),
                node(b"c", vec![xattr("user.x", b"1")]),
            ],
        };
        let body = t.to_body();
        assert_eq!(Tree::from_body(&body).unwrap(), t);
        // A reader of format 1 sees the entries alone: the extension follows them.
        let plain: Tree = postcard::take_from_bytes(&body).unwrap().0;
        assert!(plain.entries.iter().all(|n| n.meta.xattrs.is_empty()));
        let mut newer = to_body(&Tree { entries: vec![node(b"a", vec![])] });
        newer.push(9);
        let e = Tree::from_body(&newer).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::UnsupportedVersion, "{e}");
        let mut bad = to_body(&Tree { entries: vec![node(b"a", vec![])] });
        bad.push(TREE_EXTENSION_V1);
        bad.extend(to_body(&TreeExtensionV1 { xattrs: vec![(5, vec![xattr("user.x", b"")])] }));
        assert!(Tree::from_body(&bad).is_err(), "an index past the entries is corruption");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Tree::from_body(&bytes);
            let _ = from_body::<Snapshot>("snapshot", &bytes);
            let _ = from_body::<PoolRecord>("pool", &bytes);
            let _ = from_body::<TreePack>("tree pack", &bytes);
        }
    }
}
