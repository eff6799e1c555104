//! Which snapshots hold a file: restic's `find`. A pattern without a `/` is matched against
//! entry names, one with a `/` against the whole path in the snapshot (`*` stays within a
//! component, `**` spans any number); an entry matches if any pattern does.
//!
//! Owns: matching entries of snapshots. Must not: print (the CLI does).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::model::{Node, Snapshot};
use crate::repository::Repository;

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct FindOptions {
    /// Patterns; an entry matching any of them is found.
    pub patterns: Vec<String>,
    /// Match ignoring case.
    pub ignore_case: bool,
    /// Only entries modified at or after this time (ns since the epoch).
    pub newer_ns: Option<i64>,
    /// Only entries modified at or before this time.
    pub older_ns: Option<i64>,
}

/// Entries of one snapshot that matched.
#[derive(Debug, Clone)]
pub struct Found {
    /// The snapshot.
    pub id: ObjectId,
    /// Its record.
    pub snapshot: Snapshot,
    /// Each matching entry's path in the snapshot, and the entry.
    pub entries: Vec<(String, Node)>,
}

/// `FindOptions` compiled.
struct Matcher {
    names: GlobSet,
    paths: GlobSet,
    newer_ns: Option<i64>,
    older_ns: Option<i64>,
}

impl Matcher {
    fn new(options: &FindOptions) -> Result<Matcher> {
        if options.patterns.is_empty() {
            return Err(Error::config("give a pattern to find (e.g. '*.pdf' or 'home/*/notes.txt')"));
        }
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for p in &options.patterns {
            let glob = GlobBuilder::new(p.trim_start_matches('/'))
                .literal_separator(true)
                .case_insensitive(options.ignore_case)
                .build()
                .map_err(|e| Error::config(format!("'{p}' is not a valid pattern: {}", e.kind())))?;
            if p.contains('/') {
                paths.add(glob)
            } else {
                names.add(glob)
            };
        }
        let built = |set: GlobSetBuilder| set.build().map_err(|e| Error::config(format!("patterns: {e}")));
        Ok(Matcher {
            names: built(names)?,
            paths: built(paths)?,
            newer_ns: options.newer_ns,
            older_ns: options.older_ns,
        })
    }

    fn matches(&self, path: &str, node: &Node) -> bool {
        let mtime = node.meta.mtime_ns;
        if self.newer_ns.is_some_and(|t| mtime < t) || self.older_ns.is_some_and(|t| mtime > t) {
            return false;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        self.names.is_match(name) || self.paths.is_match(path)
    }
}

impl Repository {
    /// The entries of `snapshots` that `options` match, per snapshot (those with none are
    /// left out), in the order given.
    pub async fn find(&self, snapshots: &[(ObjectId, Snapshot)], options: &FindOptions) -> Result<Vec<Found>> {
        let matcher = Matcher::new(options)?;
        let mut out = Vec::new();
        for (id, snapshot) in snapshots {
            let mut entries = Vec::new();
            self.walk(snapshot, "", &mut |path, node| {
                if matcher.matches(path, node) {
                    entries.push((path.to_string(), node.clone()));
                }
            })
            .await?;
            if !entries.is_empty() {
                out.push(Found { id: *id, snapshot: snapshot.clone(), entries });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Meta, NodeKind};

    fn node(mtime_ns: i64) -> Node {
        let meta =
            Meta { mode: 0o644, uid: 0, gid: 0, mtime_ns, ctime_ns: 0, dev: 0, ino: 0, nlink: 1, xattrs: vec![] };
        Node { name: vec![], kind: NodeKind::File { size: 0, content: vec![] }, meta }
    }

    #[test]
    fn names_without_a_slash_paths_with_one_and_times() {
        let options =
            |p: &[&str]| FindOptions { patterns: p.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        let m = Matcher::new(&options(&["*.pdf", "src/*/notes.txt"])).unwrap();
        assert!(m.matches("src/a/b/report.pdf", &node(0)));
        assert!(m.matches("src/x/notes.txt", &node(0)) && !m.matches("src/x/y/notes.txt", &node(0)));
        assert!(!m.matches("src/report.pdf.txt", &node(0)));
        let m = Matcher::new(&FindOptions {
            ignore_case: true,
            newer_ns: Some(10),
            older_ns: Some(20),
            ..options(&["*.PDF"])
        })
        .unwrap();
        assert!(m.matches("a/x.pdf", &node(15)) && !m.matches("a/x.pdf", &node(5)) && !m.matches("a/x.pdf", &node(25)));
        assert!(Matcher::new(&options(&[])).is_err() && Matcher::new(&options(&["[x"])).is_err());
    }
}
