//! Verifying a pool: every object a snapshot references exists on a backend, the catalogue's
//! reference counts agree with the trees, and (with `read_data`) every byte decodes and
//! hashes to its name. Each finding names the snapshot and path it affects.
//!
//! Owns: the check walk and its report. Must not: repair anything (that is `repair`'s job),
//! or trust the catalogue's locations (it lists the backends itself).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;

use crate::codec::ObjectKind;
use crate::error::Result;
use crate::id::ObjectId;
use crate::model::{NodeKind, TreeRef};
use crate::progress::Progress;
use crate::repository::Repository;

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
    /// What is wrong.
    pub problem: String,
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
    /// Problems; empty means the pool is healthy.
    pub findings: Vec<Finding>,
}

/// Where an object is first referenced: (snapshot, path, kind).
type Referrers = HashMap<ObjectId, (ObjectId, String, ObjectKind)>;

/// Check the pool; see the module doc.
pub async fn check(repo: &Repository, options: CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut refs: Referrers = HashMap::new();
    // Snapshots share most of their trees: each tree is walked once, and what it references
    // is attributed to the first snapshot that reaches it.
    let mut seen_trees = HashSet::new();
    for (sid, snapshot) in repo.snapshots()? {
        report.snapshots += 1;
        walk_snapshot(repo, sid, Repository::root(&snapshot), &mut seen_trees, &mut refs, &mut report).await;
    }
    report.objects = refs.len() as u64;

    let stored = list_stored(repo).await?;
    for (id, (sid, path, kind)) in &refs {
        if !stored.contains_key(id) {
            report.findings.push(finding(sid, path, id, format!("{kind:?} is missing from every backend")));
        }
    }
    report.findings.extend(repo.catalogue_refcount_problems()?);

    if let Some(fraction) = options.read_data {
        read_data(repo, &refs, &stored, fraction, progress, &mut report).await;
    }
    report.findings.sort_by(|a, b| (&a.snapshot, &a.path).cmp(&(&b.snapshot, &b.path)));
    Ok(report)
}

fn finding(sid: &ObjectId, path: &str, object: &ObjectId, problem: String) -> Finding {
    Finding { snapshot: sid.short(), path: path.to_string(), object: object.to_hex(), problem }
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
                report.findings.push(finding(&sid, shown, &tref.pack, format!("directory cannot be read: {e}")));
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

/// Every object on every backend: id -> backend index.
async fn list_stored(repo: &Repository) -> Result<HashMap<ObjectId, usize>> {
    let mut stored = HashMap::new();
    for (i, b) in repo.store().backends().iter().enumerate() {
        for prefix in ["data/", "tree/"] {
            for (path, _) in b.list(prefix).await? {
                if let Some(id) = path.rsplit('/').next().and_then(|n| ObjectId::from_hex(n).ok()) {
                    stored.insert(id, i);
                }
            }
        }
    }
    Ok(stored)
}

/// Download a fraction of the objects (chosen at random each run) and verify them.
async fn read_data(
    repo: &Repository,
    refs: &Referrers,
    stored: &HashMap<ObjectId, usize>,
    fraction: f64,
    progress: &dyn Progress,
    report: &mut CheckReport,
) {
    let salt: u64 = rand::random();
    let chosen: Vec<(&ObjectId, &(ObjectId, String, ObjectKind))> = refs
        .iter()
        .filter(|(id, _)| stored.contains_key(id))
        .filter(|(id, _)| fraction >= 1.0 || ((id.prefix_u64() ^ salt) as f64 / u64::MAX as f64) < fraction)
        .collect();
    progress.begin("read data", Some(chosen.len() as u64), None);
    let mut results = futures::stream::iter(chosen)
        .map(|(id, referrer)| async move {
            let got = repo.store().get(referrer.2, id, stored.get(id).copied()).await;
            (id, referrer, got)
        })
        .buffer_unordered(16);
    while let Some((id, (sid, path, _), got)) = results.next().await {
        progress.advance(1, 0);
        report.objects_read += 1;
        match got {
            Ok(body) => report.bytes_read += body.len() as u64,
            Err(e) => report.findings.push(finding(sid, path, id, format!("unreadable: {e}"))),
        }
    }
    progress.end();
}
