//! Which entries of a snapshot a restore writes: restic's `--include` and `--exclude`
//! (and their case-insensitive and file forms), in backup's pattern syntax, matched against
//! the path each entry was backed up from (`/home/u/src/a.conf`), so a pattern that picked
//! a file out of a backup picks it out of a restore.
//!
//! An excluded entry is not written, nor anything below it. With include patterns, an entry
//! is written if it or a directory above it matches one; directories on the way to such an
//! entry are created (with their recorded metadata), and ones that turn out to lead to
//! nothing are removed again if this restore created them.

use std::path::PathBuf;

use crate::backup::filter::{Patterns, gather};
use crate::backup::layout::source_of;
use crate::error::Result;

/// Which entries to restore, restic's options by name.
#[derive(Debug, Clone, Default)]
pub struct Select {
    /// Only entries matching these (`--include`).
    pub include: Vec<String>,
    /// … ignoring case (`--iinclude`).
    pub iinclude: Vec<String>,
    /// Files of include patterns, one per line (`--include-file`).
    pub include_files: Vec<PathBuf>,
    /// … ignoring case (`--iinclude-file`).
    pub iinclude_files: Vec<PathBuf>,
    /// Not entries matching these (`--exclude`).
    pub exclude: Vec<String>,
    /// … ignoring case (`--iexclude`).
    pub iexclude: Vec<String>,
    /// Files of exclude patterns (`--exclude-file`).
    pub exclude_files: Vec<PathBuf>,
    /// … ignoring case (`--iexclude-file`).
    pub iexclude_files: Vec<PathBuf>,
}

/// What to do with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Leave it (and what is below it) out.
    Skip,
    /// Restore it, and everything below it that is not excluded.
    Whole,
    /// A directory to look into for included entries; kept only if one is found.
    Enter,
}

/// `Select` compiled for one snapshot.
pub(crate) struct Chooser {
    include: Patterns,
    exclude: Patterns,
    /// The snapshot's paths, which say where its root was.
    paths: Vec<String>,
}

impl Chooser {
    /// Compile `select` for a snapshot of `paths`; a bad pattern is an error naming its option
    /// or file and line.
    pub(crate) fn new(select: &Select, paths: &[String]) -> Result<Chooser> {
        let include = gather(
            (&select.include, "--include"),
            (&select.iinclude, "--iinclude"),
            &select.include_files,
            &select.iinclude_files,
        )?;
        let exclude = gather(
            (&select.exclude, "--exclude"),
            (&select.iexclude, "--iexclude"),
            &select.exclude_files,
            &select.iexclude_files,
        )?;
        Ok(Chooser {
            include: Patterns::compile(&include, 0)?,
            exclude: Patterns::compile(&exclude, 0)?,
            paths: paths.to_vec(),
        })
    }

    /// True when every entry is restored.
    pub(crate) fn all(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// True when some entry may be excluded below an included directory.
    pub(crate) fn excludes_any(&self) -> bool {
        !self.exclude.is_empty()
    }

    /// Decide for the entry at `tree_path` (below the snapshot's root); `inside` when a
    /// directory above it was included.
    pub(crate) fn choose(&self, tree_path: &str, is_dir: bool, inside: bool) -> Choice {
        if self.all() {
            return Choice::Whole;
        }
        let source = source_of(&self.paths, tree_path);
        if self.exclude.matching(&source, is_dir).is_some() {
            return Choice::Skip;
        }
        if inside || self.include.is_empty() || self.include.matching(&source, is_dir).is_some() {
            return Choice::Whole;
        }
        if is_dir { Choice::Enter } else { Choice::Skip }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chooser(include: &[&str], exclude: &[&str]) -> Chooser {
        let select = Select {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..Select::default()
        };
        Chooser::new(&select, &["/etc".to_string(), "/home/u/src".to_string()]).unwrap()
    }

    #[test]
    fn patterns_match_where_entries_were_backed_up_from() {
        let c = chooser(&["*.conf"], &[]);
        assert_eq!(c.choose("etc/nginx/nginx.conf", false, false), Choice::Whole);
        assert_eq!(c.choose("etc/nginx/mime.types", false, false), Choice::Skip);
        assert_eq!(c.choose("etc/nginx", true, false), Choice::Enter);
        let c = chooser(&["/home/u/src"], &["*.o"]);
        assert_eq!(c.choose("home/u/src", true, false), Choice::Whole);
        assert_eq!(c.choose("home/u/src/a.c", false, true), Choice::Whole);
        assert_eq!(c.choose("home/u/src/a.o", false, true), Choice::Skip, "an exclude wins inside an include");
        assert_eq!(c.choose("etc/passwd", false, false), Choice::Skip);
        let c = chooser(&[], &["/etc"]);
        assert_eq!(c.choose("etc", true, false), Choice::Skip);
        assert_eq!(c.choose("home", true, false), Choice::Whole);
    }

    #[test]
    fn a_bad_pattern_names_its_option() {
        let select = Select { include: vec!["a[".into()], ..Select::default() };
        let e = Chooser::new(&select, &["/x".into()]).err().unwrap();
        assert!(e.to_string().contains("--include 'a['"), "{e}");
    }
}
