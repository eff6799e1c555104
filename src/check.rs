//! Verifying a pool: every object a snapshot references exists on a backend with all the
//! pieces its redundancy asks for, the catalogue's reference counts agree with the trees, and
//! (with `read_data`) every piece of every object is downloaded and verified on its own (a
//! copy decodes to its name, a shard passes its checksum). Each finding names the snapshot
//! and path it affects and, for a missing or corrupt piece, the backend.
//!
//! Owns: the check walk and its report. Must not: repair anything (that is `repair`'s job),
//! or trust the catalogue's locations (it lists the backends itself).

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::StreamExt;

use crate::codec::ObjectKind;
use crate::error::Result;
use crate::id::ObjectId;
use crate::model::{NodeKind, TreeRef};
use crate::progress::Progress;
use crate::redundancy::Scheme;
use crate::repository::{Need, Repository};
use crate::store::Piece;

/// What to verify beyond structure.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Download and verify this fraction (0..=1) of the referenced objects; `None` reads none.
    pub read_data: Option<f64>,
}

/// One problem, with where it hurts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// A snapshot affected (the first found referencing the object).
    pub snapshot: String,
    /// The path in that snapshot.
    pub path: String,
    /// The object at fault.
    pub object: String,
    /// The backend at fault, when one is.
    pub backend: Option<String>,
    /// What is wrong.
    pub problem: String,
}

/// What one backend lacks or holds damaged.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendReport {
    /// Pieces placement wants there that are not there.
    pub missing: u64,
    /// Pieces there that fail verification.
    pub corrupt: u64,
    /// The backend could not be listed.
    pub unreachable: bool,
}

/// The outcome of a check.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    /// Snapshots walked.
    pub snapshots: u64,
    /// Distinct objects the snapshots reference.
    pub objects: u64,
    /// Objects downloaded and verified.
    pub objects_read: u64,
    /// Bytes downloaded.
    pub bytes_read: u64,
    /// Objects readable but with fewer pieces than their redundancy asks for.
    pub degraded: u64,
    /// Per backend name.
    pub backends: BTreeMap<String, BackendReport>,
    /// Problems; empty means the pool is healthy.
    pub findings: Vec<Finding>,
}

/// Where an object is first referenced: (snapshot, path, kind).
type Referrer = (ObjectId, String, ObjectKind);
type Referrers = HashMap<ObjectId, Referrer>;

impl Repository {
    /// Verify the pool (see the module doc).
    pub async fn check(&self, options: CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
        self.locked("check", Need::ReadOnly, check(self, options, progress)).await
    }
}

/// Check the pool; see the module doc.
async fn check(repo: &Repository, options: CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut refs: Referrers = HashMap::new();
    // Snapshots share most of their trees: each tree is walked once, and what it references
    // is attributed to the first snapshot that reaches it.
    let mut seen_trees = HashSet::new();
    // Listed before the walk, which replaces every damaged tree it reaches.
    for damage in repo.catalogue().damaged()? {
        report.findings.push(Finding {
            snapshot: "catalogue".into(),
            path: String::new(),
            object: damage.id.to_hex(),
            backend: None,
            problem: format!(
                "the catalogue's copy of this {} did not match its id; it was replaced from the backends or dropped",
                if damage.kind == ObjectKind::Snapshot { "snapshot" } else { "tree" }
            ),
        });
    }
    for (sid, snapshot) in repo.snapshots()? {
        report.snapshots += 1;
        walk_snapshot(repo, sid, Repository::root(&snapshot), &mut seen_trees, &mut refs, &mut report).await;
    }
    report.objects = refs.len() as u64;

    let stored = list_stored(repo, &mut report).await;
    for (id, (sid, path, kind)) in &refs {
        match stored.get(id) {
            None => {
                report.findings.push(finding(sid, path, id, None, format!("{kind:?} is missing from every backend")))
            }
            Some(pieces) => check_redundancy(repo, (sid, path, *kind), id, pieces, &mut report),
        }
    }
    repo.drop_damaged_trees()?;
    report.findings.extend(refcount_problems(repo)?);

    if let Some(fraction) = options.read_data {
        read_data(repo, &refs, &stored, fraction, progress, &mut report).await;
    }
    report.findings.sort_by(|a, b| (&a.snapshot, &a.path).cmp(&(&b.snapshot, &b.path)));
    Ok(report)
}

/// Reference counts in the catalogue that disagree with its trees, set right once found.
fn refcount_problems(repo: &Repository) -> Result<Vec<Finding>> {
    let mismatches = repo.catalogue().refcount_mismatches()?;
    if !mismatches.is_empty() {
        repo.catalogue().recount_refs()?;
    }
    Ok(mismatches
        .into_iter()
        .map(|m| Finding {
            snapshot: "catalogue".into(),
            path: String::new(),
            object: m.id.to_hex(),
            backend: None,
            problem: format!(
                "reference count was {}, the trees imply {}: recounted from the trees",
                m.recorded, m.expected
            ),
        })
        .collect())
}

fn finding(sid: &ObjectId, path: &str, object: &ObjectId, backend: Option<&str>, problem: String) -> Finding {
    Finding {
        snapshot: sid.short(),
        path: path.to_string(),
        object: object.to_hex(),
        backend: backend.map(str::to_string),
        problem,
    }
}

/// How many pieces an object stored as `pieces` should have under the pool's scheme: a
/// whole object is held to as many copies as the scheme survives losses plus one; a sharded
/// one to the pool's K+M (its own scheme is in its shards' headers, read with `read_data`).
pub(crate) fn wanted(scheme: Scheme, pieces: &[Piece]) -> Option<(Scheme, usize)> {
    let sharded = pieces.iter().any(|p| p.shard);
    match (sharded, scheme) {
        (false, Scheme::Copies(n)) => Some((scheme, n as usize)),
        (false, s) => Some((Scheme::Copies(s.tolerates() as u8 + 1), s.tolerates() + 1)),
        (true, s @ Scheme::Erasure { .. }) => Some((s, s.pieces())),
        (true, Scheme::Copies(_)) => None,
    }
}

/// An object present but short of pieces is a finding, charged to the backends that should
/// hold the missing ones.
fn check_redundancy(
    repo: &Repository,
    (sid, path, kind): (&ObjectId, &str, ObjectKind),
    id: &ObjectId,
    pieces: &[Piece],
    report: &mut CheckReport,
) {
    let store = repo.store();
    let Some((scheme, want)) = wanted(store.scheme(), pieces) else { return };
    let have: HashSet<usize> =
        pieces.iter().filter(|p| p.shard == matches!(scheme, Scheme::Erasure { .. })).map(|p| p.backend).collect();
    if have.len() >= want {
        return;
    }
    report.degraded += 1;
    let intended = store.intended(id, scheme, 0);
    let lacking: Vec<&str> = intended
        .iter()
        .filter(|i| !have.contains(i))
        .take(want - have.len())
        .map(|i| store.backends()[*i].name.as_str())
        .collect();
    for name in &lacking {
        report.backends.entry(name.to_string()).or_default().missing += 1;
    }
    let what = if matches!(scheme, Scheme::Erasure { .. }) { "shards" } else { "copies" };
    let problem = format!(
        "{kind:?} has {} of its {want} {what} (run `cuckoo repair`); lacking on: {}",
        have.len(),
        lacking.join(", ")
    );
    report.findings.push(finding(sid, path, id, lacking.first().copied(), problem));
}

/// Record every object below `root`; trees that cannot be read are findings.
async fn walk_snapshot(
    repo: &Repository,
    sid: ObjectId,
    root: TreeRef,
    seen_trees: &mut HashSet<ObjectId>,
    refs: &mut Referrers,
    report: &mut CheckReport,
) {
    let mut stack = vec![(String::new(), root)];
    refs.entry(root.pack).or_insert((sid, "/".into(), ObjectKind::Tree));
    while let Some((path, tref)) = stack.pop() {
        if !seen_trees.insert(tref.id) {
            continue;
        }
        let tree = match repo.tree(&tref).await {
            Ok(t) => t,
            Err(e) => {
                let shown = if path.is_empty() { "/" } else { &path };
                report.findings.push(finding(&sid, shown, &tref.pack, None, format!("directory cannot be read: {e}")));
                continue;
            }
        };
        for node in &tree.entries {
            let p = format!("{path}/{}", String::from_utf8_lossy(&node.name));
            match &node.kind {
                NodeKind::File { content, .. } => {
                    for c in content {
                        refs.entry(c.id).or_insert_with(|| (sid, p.clone(), ObjectKind::Chunk));
                    }
                }
                NodeKind::Dir { pack, .. } => {
                    if let Some(pack) = pack {
                        refs.entry(*pack).or_insert_with(|| (sid, p.clone(), ObjectKind::Tree));
                    }
                    stack.push((p, node.subtree(&tref.pack).expect("a directory")));
                }
                _ => {}
            }
        }
    }
}

/// Every piece on every backend, by object. A backend that cannot be listed is reported and
/// skipped: what it holds is then counted as missing.
async fn list_stored(repo: &Repository, report: &mut CheckReport) -> HashMap<ObjectId, Vec<Piece>> {
    let mut stored: HashMap<ObjectId, Vec<Piece>> = HashMap::new();
    let store = repo.store();
    for (listed, b) in store.list_all_pieces().await.into_iter().zip(store.backends()) {
        match listed {
            Ok(list) => {
                for (_, id, piece) in list {
                    stored.entry(id).or_default().push(piece);
                }
            }
            Err(e) => {
                report.backends.entry(b.name.clone()).or_default().unreachable = true;
                report.findings.push(Finding {
                    snapshot: "pool".into(),
                    path: String::new(),
                    object: String::new(),
                    backend: Some(b.name.clone()),
                    problem: format!("cannot be listed: {e}"),
                });
            }
        }
    }
    stored
}

/// Download every piece of a fraction of the objects (chosen at random each run) and verify
/// each on its own; an object none of whose pieces (or too few shards) verify is unreadable.
async fn read_data(
    repo: &Repository,
    refs: &Referrers,
    stored: &HashMap<ObjectId, Vec<Piece>>,
    fraction: f64,
    progress: &dyn Progress,
    report: &mut CheckReport,
) {
    let salt: u64 = rand::random();
    let chosen: Vec<(&ObjectId, &Referrer, &Vec<Piece>)> = refs
        .iter()
        .filter_map(|(id, r)| Some((id, r, stored.get(id)?)))
        .filter(|(id, _, _)| fraction >= 1.0 || ((id.prefix_u64() ^ salt) as f64 / u64::MAX as f64) < fraction)
        .collect();
    progress.begin("read data", Some(chosen.len() as u64), None);
    let store = repo.store();
    let mut results = futures::stream::iter(chosen)
        .map(|(id, referrer, pieces)| async move {
            let mut outcomes = Vec::new();
            for piece in pieces {
                let got = match store.read_piece(referrer.2, id, piece).await {
                    Ok(Some(bytes)) => {
                        let len = bytes.len() as u64;
                        store.check_piece(referrer.2, id, piece, &bytes).map(|index| (len, index))
                    }
                    Ok(None) => Err(crate::Error::not_found("listed but gone when read")),
                    Err(e) => Err(e),
                };
                outcomes.push((*piece, got));
            }
            (id, referrer, outcomes)
        })
        .buffer_unordered(8);
    while let Some((id, (sid, path, _), outcomes)) = results.next().await {
        progress.advance(1, 0);
        report.objects_read += 1;
        let several = outcomes.len() > 1;
        let mut whole_ok = false;
        let mut indices = HashSet::new();
        let mut shard_pieces = 0;
        for (piece, got) in outcomes {
            let name = &store.backends()[piece.backend].name;
            match got {
                Ok((len, index)) => {
                    report.bytes_read += len;
                    whole_ok |= !piece.shard;
                    if let Some(i) = index {
                        shard_pieces += 1;
                        indices.insert(i);
                    }
                }
                Err(e) => {
                    report.backends.entry(name.clone()).or_default().corrupt += 1;
                    report.findings.push(finding(sid, path, id, Some(name), format!("piece unreadable: {e}")));
                }
            }
        }
        let needed = match store.scheme() {
            Scheme::Erasure { data, .. } => data as usize,
            Scheme::Copies(_) => usize::MAX,
        };
        // With one piece, its finding already says the object is lost.
        if several && !whole_ok && indices.len() < needed {
            report.findings.push(finding(sid, path, id, None, "object cannot be read from what is left".into()));
        } else if shard_pieces >= store.scheme().pieces() && indices.len() < store.scheme().pieces() {
            // Enough shards by count (so the structure check passed), but two backends hold
            // the same one: the object is short of a shard.
            report.degraded += 1;
            let problem = format!(
                "{} shards stored but only {} distinct (run `cuckoo repair --read-data`)",
                shard_pieces,
                indices.len()
            );
            report.findings.push(finding(sid, path, id, None, problem));
        }
    }
    progress.end();
}
