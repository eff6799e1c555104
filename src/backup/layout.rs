//! Where the paths given to a backup go in its snapshot. Each path is made absolute and
//! normalised (`.` and `..` resolved as written, as restic does); the snapshot's root is the
//! deepest directory they all share below their parents, so one path `/home/u/src` is
//! `src` at the root (restored as `TARGET/src`), and `/data/a/x` with `/data/b/x` are
//! `a/x` and `b/x`. Directories on the way to a given path hold only what leads to one.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The given paths as a tree of names below the snapshot's root.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Selection {
    pub children: BTreeMap<Vec<u8>, Selected>,
}

/// One name in a `Selection`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Selected {
    /// A path given to the backup: everything below it.
    Whole(PathBuf),
    /// A directory on the way to given paths: only them.
    Part(PathBuf, Selection),
}

/// `path` made absolute and normalised lexically: `a/./b/../c` is `a/c`.
pub(crate) fn normalise(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| Error::io(format!("{}", path.display()), e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// The selection for `paths` (absolute and normalised). A path inside another given one is
/// dropped: the other holds it already.
pub(crate) fn select(paths: &[PathBuf]) -> Selection {
    let mut sorted: Vec<&PathBuf> = paths.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut kept: Vec<&PathBuf> = Vec::new();
    for p in sorted {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    let mut selection = Selection::default();
    if kept.iter().any(|p| p.parent().is_none()) {
        // The whole file system: one entry, named as before.
        selection.children.insert(b"root".to_vec(), Selected::Whole(PathBuf::from("/")));
        return selection;
    }
    let base = base_of(&kept);
    for path in kept {
        let rel: Vec<&std::ffi::OsStr> = path.strip_prefix(&base).expect("below the shared base").iter().collect();
        let mut at = &mut selection;
        let mut abs = base.clone();
        for (i, name) in rel.iter().enumerate() {
            abs.push(name);
            let key = name.as_bytes().to_vec();
            if i + 1 == rel.len() {
                at.children.insert(key, Selected::Whole(abs.clone()));
                break;
            }
            let next = at.children.entry(key).or_insert_with(|| Selected::Part(abs.clone(), Selection::default()));
            at = match next {
                Selected::Part(_, inner) => inner,
                Selected::Whole(_) => unreachable!("nested paths were dropped"),
            };
        }
    }
    selection
}

/// The directory a snapshot's root stands for: the deepest one the paths' parents share.
fn base_of(paths: &[&PathBuf]) -> PathBuf {
    let base = paths.iter().filter_map(|p| p.parent()).fold(None::<PathBuf>, |acc, parent| match acc {
        None => Some(parent.to_path_buf()),
        Some(acc) => {
            Some(acc.components().zip(parent.components()).take_while(|(a, b)| a == b).map(|(a, _)| a).collect())
        }
    });
    base.unwrap_or_else(|| PathBuf::from("/"))
}

/// Where the entry at `tree_path` (slash-separated, below the root) of a snapshot of `paths`
/// was backed up from: what restore's patterns are matched against, as backup's were.
pub(crate) fn source_of(paths: &[String], tree_path: &str) -> PathBuf {
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let rel = tree_path.trim_matches('/');
    if paths.iter().any(|p| p.parent().is_none()) {
        // The whole file system is the root's one entry, `root`.
        let below = rel.strip_prefix("root").unwrap_or(rel).trim_start_matches('/');
        return Path::new("/").join(below);
    }
    base_of(&paths.iter().collect::<Vec<_>>()).join(rel)
}

/// Every given path the selection holds.
pub(crate) fn wholes(selection: &Selection) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in selection.children.values() {
        match s {
            Selected::Whole(p) => out.push(p.clone()),
            Selected::Part(_, inner) => out.extend(wholes(inner)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &Selection) -> Vec<String> {
        let mut out = Vec::new();
        for (name, sel) in &s.children {
            let name = String::from_utf8_lossy(name).into_owned();
            match sel {
                Selected::Whole(_) => out.push(name),
                Selected::Part(_, inner) => out.extend(names(inner).into_iter().map(|n| format!("{name}/{n}"))),
            }
        }
        out
    }

    #[test]
    fn normalising_resolves_dots_as_written() {
        assert_eq!(normalise(Path::new("/tmp/x/data/../data/./bash")).unwrap(), Path::new("/tmp/x/data/bash"));
        assert_eq!(normalise(Path::new("/../..")).unwrap(), Path::new("/"));
        assert!(normalise(Path::new("rel")).unwrap().is_absolute());
    }

    #[test]
    fn one_path_is_its_name_and_paths_sharing_a_name_keep_what_tells_them_apart() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(names(&select(&[p("/home/u/src")])), ["src"]);
        assert_eq!(names(&select(&[p("/data/a/x"), p("/data/b/x")])), ["a/x", "b/x"]);
        assert_eq!(names(&select(&[p("/srv/www"), p("/home/u/docs")])), ["home/u/docs", "srv/www"]);
        assert_eq!(names(&select(&[p("/d/a"), p("/d/a/inner"), p("/d/a")])), ["a"], "nested and repeated");
        assert_eq!(names(&select(&[p("/"), p("/etc")])), ["root"]);
        let sel = select(&[p("/data/a/x"), p("/data/b/x")]);
        assert_eq!(wholes(&sel), [p("/data/a/x"), p("/data/b/x")]);
        match &sel.children[&b"a".to_vec()] {
            Selected::Part(dir, _) => assert_eq!(dir, &p("/data/a")),
            other => panic!("{other:?}"),
        }
    }
}
