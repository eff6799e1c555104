//! What a backup leaves out, as restic's options say it: patterns (`--exclude`,
//! `--iexclude`, exclude files), marker files (`--exclude-if-present`, `--exclude-caches`),
//! size (`--exclude-larger-than`) and file-system boundaries (`--one-file-system`).
//!
//! Patterns are matched against an entry's absolute path, as restic and gitignore do: `*`,
//! `?` and `[…]` stay within one path component and `**` spans any number; a pattern not
//! starting with `/` matches at any depth (`*.pyc`, `cache`, `build/out`); one ending in
//! `/` matches directories only; a leading `!` includes again what an earlier pattern
//! excluded (the last pattern that matches decides). An excluded directory is not entered,
//! so nothing below it can be included again (as in git).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// The marker `--exclude-caches` looks for (<https://bford.info/cachedir/>).
const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// What to leave out of a backup, restic's options by name.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    /// Patterns (`--exclude`).
    pub patterns: Vec<String>,
    /// Patterns matched ignoring case (`--iexclude`).
    pub ipatterns: Vec<String>,
    /// Files of patterns, one per line, `#` comments, `$VAR` expanded (`--exclude-file`).
    pub files: Vec<PathBuf>,
    /// Files of patterns matched ignoring case (`--iexclude-file`).
    pub ifiles: Vec<PathBuf>,
    /// Leave out directories holding a file of this name; `NAME:HEADER` only if the file
    /// starts with HEADER (`--exclude-if-present`).
    pub if_present: Vec<String>,
    /// Leave out directories tagged as caches by a `CACHEDIR.TAG` (`--exclude-caches`).
    pub caches: bool,
    /// Leave out files larger than this many bytes (`--exclude-larger-than`).
    pub larger_than: Option<u64>,
    /// Stay on the file system of each path given: a directory where another is mounted is
    /// kept, empty (`--one-file-system`).
    pub one_file_system: bool,
}

/// How often one exclude rule applied in a backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExcludeCount {
    /// The rule as the user gave it (`--exclude '*.pyc'`, `--exclude-caches`…).
    pub rule: String,
    /// Entries it left out (a directory counts once, whatever it held).
    pub entries: u64,
}

/// What the filter decided for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    /// Left out by rule N (`Filter::rules`), or by none the user gave (the catalogue, a
    /// local backend's directory).
    Excluded(Option<usize>),
    /// A directory where another file system is mounted: kept, not entered (rule N).
    KeepEmpty(usize),
}

struct Pattern {
    negated: bool,
    dir_only: bool,
    rule: usize,
}

/// Patterns compiled, restic's syntax (see the module doc); the last one that matches a
/// path decides. Shared by backup's excludes and restore's includes and excludes.
pub(crate) struct Patterns {
    set: GlobSet,
    patterns: Vec<Pattern>,
}

impl Patterns {
    /// Compile `(pattern, label, ignore_case)` triples, numbering their rules from `first`;
    /// a bad pattern is an error naming its label (option or file and line).
    pub(crate) fn compile(given: &[(String, String, bool)], first: usize) -> Result<Patterns> {
        let mut set = GlobSetBuilder::new();
        let mut patterns = Vec::new();
        for (i, (pattern, label, ignore_case)) in given.iter().enumerate() {
            let (glob, negated, dir_only) = to_glob(pattern);
            let glob = GlobBuilder::new(&glob)
                .literal_separator(true)
                .case_insensitive(*ignore_case)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::config(format!("{label}: not a valid pattern: {}", e.kind())))?;
            set.add(glob);
            patterns.push(Pattern { negated, dir_only, rule: first + i });
        }
        let set = set.build().map_err(|e| Error::config(format!("patterns: {e}")))?;
        Ok(Patterns { set, patterns })
    }

    /// True when there are no patterns.
    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The rule of the last pattern matching `path` that is not negated; `None` if none
    /// matches or the last one that does is a `!` pattern.
    pub(crate) fn matching(&self, path: &Path, is_dir: bool) -> Option<usize> {
        let last = self.set.matches(path).into_iter().rev().map(|i| &self.patterns[i]).find(|p| is_dir || !p.dir_only);
        last.filter(|p| !p.negated).map(|p| p.rule)
    }
}

/// The patterns of options `option` (as given) and `ioption` (ignoring case) and of pattern
/// files, as `(pattern, label, ignore_case)` for `Patterns::compile`.
pub(crate) fn gather(
    (patterns, option): (&[String], &str),
    (ipatterns, ioption): (&[String], &str),
    files: &[PathBuf],
    ifiles: &[PathBuf],
) -> Result<Vec<(String, String, bool)>> {
    let mut given = Vec::new();
    for (list, ignore_case, option) in [(patterns, false, option), (ipatterns, true, ioption)] {
        given.extend(list.iter().map(|p| (p.clone(), format!("{option} '{p}'"), ignore_case)));
    }
    for (files, ignore_case) in [(files, false), (ifiles, true)] {
        for file in files {
            given.extend(read_pattern_file(file)?.into_iter().map(|(p, label)| (p, label, ignore_case)));
        }
    }
    Ok(given)
}

/// `Excludes` compiled.
pub(crate) struct Filter {
    patterns: Patterns,
    markers: Vec<(String, Option<Vec<u8>>, usize)>,
    larger_than: Option<(u64, usize)>,
    one_file_system: Option<usize>,
    /// Paths never backed up, whatever the options (the catalogue, local backends).
    never: HashSet<PathBuf>,
    rules: Vec<String>,
}

impl Filter {
    /// Compile `excludes`; a bad pattern is an error naming its option or file and line.
    pub(crate) fn new(excludes: &Excludes, never: Vec<PathBuf>) -> Result<Filter> {
        let given = gather(
            (&excludes.patterns, "--exclude"),
            (&excludes.ipatterns, "--iexclude"),
            &excludes.files,
            &excludes.ifiles,
        )?;
        let mut f = Filter {
            patterns: Patterns::compile(&given, 0)?,
            markers: Vec::new(),
            larger_than: None,
            one_file_system: None,
            never: never.into_iter().collect(),
            rules: given.into_iter().map(|(_, label, _)| label).collect(),
        };
        for marker in &excludes.if_present {
            let (name, header) = match marker.split_once(':') {
                Some((name, header)) => (name, Some(header.as_bytes().to_vec())),
                None => (marker.as_str(), None),
            };
            if name.is_empty() || name.contains('/') {
                return Err(Error::config(format!("--exclude-if-present '{marker}': give a file name, not a path")));
            }
            f.markers.push((name.to_string(), header, f.rules.len()));
            f.rules.push(format!("--exclude-if-present '{marker}'"));
        }
        if excludes.caches {
            f.markers.push((CACHEDIR_TAG.into(), Some(CACHEDIR_SIGNATURE.to_vec()), f.rules.len()));
            f.rules.push("--exclude-caches".into());
        }
        if let Some(limit) = excludes.larger_than {
            f.larger_than = Some((limit, f.rules.len()));
            f.rules.push(format!("--exclude-larger-than {}", humansize::format_size(limit, humansize::BINARY)));
        }
        if excludes.one_file_system {
            f.one_file_system = Some(f.rules.len());
            f.rules.push("--one-file-system".into());
        }
        Ok(f)
    }

    /// The rules as the user gave them; `Verdict`s name them by index.
    pub(crate) fn rules(&self) -> &[String] {
        &self.rules
    }

    /// Whether a rule is a pattern or a marker, which the user expects to match something.
    pub(crate) fn expects_a_match(&self, rule: usize) -> bool {
        self.patterns.patterns.iter().any(|p| p.rule == rule) || self.markers.iter().any(|m| m.2 == rule)
    }

    /// Decide for the entry at absolute `path`, whose metadata is `md`, below a path given
    /// to the backup that lives on device `top_dev`.
    pub(crate) fn check(&self, path: &Path, md: &std::fs::Metadata, top_dev: u64) -> Verdict {
        if self.never.contains(path) {
            return Verdict::Excluded(None);
        }
        let is_dir = md.is_dir();
        if let Some(rule) = self.patterns.matching(path, is_dir) {
            return Verdict::Excluded(Some(rule));
        }
        if let Some((limit, rule)) = self.larger_than
            && md.is_file()
            && md.len() > limit
        {
            return Verdict::Excluded(Some(rule));
        }
        if is_dir && let Some(rule) = self.marked(path) {
            return Verdict::Excluded(Some(rule));
        }
        if let Some(rule) = self.one_file_system
            && md.dev() != top_dev
        {
            return if is_dir { Verdict::KeepEmpty(rule) } else { Verdict::Excluded(Some(rule)) };
        }
        Verdict::Keep
    }

    /// The first marker rule directory `dir` matches.
    fn marked(&self, dir: &Path) -> Option<usize> {
        self.markers.iter().find_map(|(name, header, rule)| {
            let marker = dir.join(name);
            let found = match header {
                None => std::fs::symlink_metadata(&marker).is_ok(),
                Some(header) => starts_with(&marker, header),
            };
            found.then_some(*rule)
        })
    }
}

fn starts_with(file: &Path, header: &[u8]) -> bool {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(file) else { return false };
    let mut start = Vec::with_capacity(header.len());
    f.take(header.len() as u64).read_to_end(&mut start).is_ok() && start == header
}

/// The glob for a pattern, and whether it is negated or for directories only.
fn to_glob(pattern: &str) -> (String, bool, bool) {
    let (negated, rest) = match pattern.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let dir_only = rest.len() > 1 && rest.ends_with('/');
    let rest = if dir_only { rest.trim_end_matches('/') } else { rest };
    let glob = if rest.starts_with('/') { rest.to_string() } else { format!("**/{rest}") };
    (glob, negated, dir_only)
}

/// The patterns of an exclude file with their labels: one per line, blank lines and `#`
/// comments skipped, `$VAR` and `${VAR}` replaced from the environment (as restic does).
fn read_pattern_file(file: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::io(format!("cannot read exclude file {}", file.display()), e))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            let pattern = expand_env(l.trim());
            (pattern.clone(), format!("{} line {}: '{pattern}'", file.display(), i + 1))
        })
        .collect())
}

fn expand_env(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&std::env::var(name).unwrap_or_default());
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> Filter {
        let ex = Excludes { patterns: patterns.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        Filter::new(&ex, vec![]).unwrap()
    }

    /// The decision for a file (or, with a trailing `/`, a directory) at `path`, as the
    /// patterns alone make it.
    fn out(f: &Filter, path: &str) -> bool {
        let is_dir = path.ends_with('/');
        let path = Path::new(path.trim_end_matches('/'));
        f.patterns.matching(path, is_dir).is_some()
    }

    #[test]
    fn patterns_mean_what_restic_and_gitignore_users_expect() {
        let f = filter(&["*.pyc", "cache", "/home/u/tmp", "build/out", "logs/", "**/node_modules/**"]);
        assert!(out(&f, "/home/u/a/b/x.pyc"), "a bare glob matches the name at any depth");
        assert!(!out(&f, "/home/u/a/b/x.pyc.txt"));
        assert!(out(&f, "/home/u/cache") && out(&f, "/srv/deep/down/cache/"), "a bare name at any depth");
        assert!(!out(&f, "/home/u/cached") && !out(&f, "/home/u/my-cache"));
        assert!(out(&f, "/home/u/tmp") && !out(&f, "/other/home/u/tmp"), "a leading / anchors");
        assert!(out(&f, "/x/build/out") && !out(&f, "/x/build/out2"));
        assert!(out(&f, "/x/logs/") && !out(&f, "/x/logs"), "a trailing / is for directories only");
        assert!(out(&f, "/p/node_modules/a/b.js"));
        assert!(!out(&f, "/home/u/a/b/c.py"));
        let f = filter(&["node_modules", "**/target", "/abs/**/tmp"]);
        assert!(out(&f, "/w/app/node_modules/") && out(&f, "/w/crate/target/") && out(&f, "/w/a/b/target"));
        assert!(out(&f, "/abs/x/y/tmp") && out(&f, "/abs/tmp") && !out(&f, "/other/abs/x/tmp"));
        assert!(!out(&f, "/w/targets") && !out(&f, "/w/node_modules2"));
        // `*` stays within a component.
        let f = filter(&["/home/*/secret"]);
        assert!(out(&f, "/home/u/secret") && !out(&f, "/home/u/deep/secret"));
    }

    #[test]
    fn the_last_matching_pattern_decides_and_case_can_be_ignored() {
        let f = filter(&["*.log", "!important.log"]);
        assert!(out(&f, "/a/debug.log") && !out(&f, "/a/important.log"));
        let ex = Excludes { ipatterns: vec!["*.JPG".into()], ..Default::default() };
        let f = Filter::new(&ex, vec![]).unwrap();
        assert!(out(&f, "/pics/a.jpg") && out(&f, "/pics/b.Jpg"));
    }

    #[test]
    fn exclude_files_skip_comments_expand_the_environment_and_name_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("excludes");
        let home = std::env::var("HOME").unwrap_or_default();
        std::fs::write(&file, "# comment\n\n*.tmp\n${HOME}/scratch\n$HOME/b $NO_SUCH_VARIABLE_HERE\n").unwrap();
        let ex = Excludes { files: vec![file.clone()], ..Default::default() };
        let f = Filter::new(&ex, vec![]).unwrap();
        let scratch = format!("{home}/scratch");
        assert!(out(&f, "/x/a.tmp") && out(&f, &scratch) && !out(&f, "/x/a.txt"));
        assert_eq!(f.rules()[1], format!("{} line 4: '{scratch}'", file.display()));
        assert_eq!(f.rules()[2], format!("{} line 5: '{home}/b '", file.display()), "unset variables are empty");

        std::fs::write(&file, "ok\n[unclosed\n").unwrap();
        let ex = Excludes { files: vec![file.clone()], ..Default::default() };
        let e = Filter::new(&ex, vec![]).err().unwrap().to_string();
        assert!(e.contains("line 2: '[unclosed'") && e.contains("not a valid pattern"), "{e}");
    }

    #[test]
    fn markers_size_and_file_systems() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, tagged, plain) = (dir.path().join("c"), dir.path().join("t"), dir.path().join("p"));
        for d in [&cache, &tagged, &plain] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(cache.join(CACHEDIR_TAG), [CACHEDIR_SIGNATURE, b"\n# a cache"].concat()).unwrap();
        std::fs::write(tagged.join(CACHEDIR_TAG), b"not the signature").unwrap();
        std::fs::write(plain.join(".nobackup"), b"").unwrap();
        std::fs::write(dir.path().join("big"), vec![0; 2000]).unwrap();
        let ex = Excludes {
            if_present: vec![".nobackup".into()],
            caches: true,
            larger_than: Some(1000),
            one_file_system: true,
            ..Default::default()
        };
        let f = Filter::new(&ex, vec![dir.path().join("never")]).unwrap();
        let md = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        let dev = md(dir.path()).dev();
        assert_eq!(f.check(&cache, &md(&cache), dev), Verdict::Excluded(Some(1)), "a true CACHEDIR.TAG");
        assert_eq!(f.check(&tagged, &md(&tagged), dev), Verdict::Keep, "a tag without the signature");
        assert_eq!(f.check(&plain, &md(&plain), dev), Verdict::Excluded(Some(0)));
        let big = dir.path().join("big");
        assert_eq!(f.check(&big, &md(&big), dev), Verdict::Excluded(Some(2)));
        assert_eq!(f.check(&cache, &md(&cache), dev + 1), Verdict::Excluded(Some(1)));
        assert_eq!(f.check(&tagged, &md(&tagged), dev + 1), Verdict::KeepEmpty(3), "another file system");
        assert_eq!(f.check(&dir.path().join("never"), &md(&tagged), dev), Verdict::Excluded(None));
        assert_eq!(
            f.rules(),
            [
                "--exclude-if-present '.nobackup'",
                "--exclude-caches",
                "--exclude-larger-than 1000 B",
                "--one-file-system"
            ]
        );
    }
}
