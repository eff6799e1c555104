//! The layering of ARCHITECTURE.md, kept by the build: no file of `src/` may import from a
//! higher layer, and no files may import each other in a circle. Read from the source text
//! (`crate::` and `super::` paths), so it needs no tool beyond the test itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom; a top-level module may use its own layer and those below.
const LAYERS: &[(&str, &[&str])] = &[
    ("foundation", &["error", "id", "progress", "exec", "machine", "limit"]),
    ("pure formats and pipeline steps", &["chunker", "crypto", "codec", "redundancy", "ring", "model"]),
    (
        "I/O: config file, backends, store, catalogue, local metadata",
        &["config", "backend", "store", "catalogue", "lock", "probe", "meta"],
    ),
    ("the repository handle", &["repository"]),
    ("the shared write pipeline", &["pipeline"]),
    (
        "operations",
        &[
            "backup",
            "restore",
            "check",
            "prune",
            "repack",
            "repair",
            "forget",
            "find",
            "diff",
            "dump",
            "tag",
            "rewrite",
            "copy",
            "membership",
        ],
    ),
    ("filesystem API and mount", &["fs", "mount"]),
    ("front ends", &["cli", "main", "lib", "internals"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's module path: `src/fs/pool.rs` is `["fs", "pool"]`, `src/fs/mod.rs` is `["fs"]`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The file that defines the longest prefix of `path` that is a file of its own.
fn file_of(path: &[String], files: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|n| files.get(&path[..n]).cloned())
}

/// The code of a file without comments and without its unit tests.
fn code(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    body.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Module paths a file names: `crate::a::b`, `crate::{a, b::{c, d}}`, `super::x`.
fn imports(module: &[String], text: &str) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    for (root, prefix) in [("crate::", Vec::new()), ("super::", parent(module))] {
        for (at, _) in text.match_indices(root) {
            if at > 0 && text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            paths(&prefix, &text[at + root.len()..], &mut out);
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

/// The paths of one use tree starting at `rest`, below `prefix`.
fn paths(prefix: &[String], rest: &str, out: &mut BTreeSet<Vec<String>>) {
    if let Some(group) = rest.strip_prefix('{') {
        let (mut depth, mut start) = (0, 0);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    paths(prefix, group[start..i].trim(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    paths(prefix, group[start..i].trim(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let id = ident_at(rest);
    if id.is_empty() || id == "self" {
        out.insert(prefix.to_vec());
        return;
    }
    let mut path = prefix.to_vec();
    path.push(id.to_string());
    match rest[id.len()..].strip_prefix("::") {
        Some(next) => paths(&path, next, out),
        None => {
            out.insert(path);
        }
    }
}

/// What `super` names in module `module` (in `a/b.rs` and in `a/b/mod.rs` alike: `a`).
fn parent(module: &[String]) -> Vec<String> {
    module[..module.len().saturating_sub(1)].to_vec()
}

fn layer_of(module: &[String]) -> usize {
    let top = module.first().map(String::as_str).unwrap_or("lib");
    LAYERS
        .iter()
        .position(|(_, mods)| mods.contains(&top))
        .unwrap_or_else(|| panic!("module `{top}` is in no layer: add it to LAYERS and to ARCHITECTURE.md"))
}

/// Every file's imports of other files of the crate.
fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut list = Vec::new();
    rust_files(&src(), &mut list);
    let files: BTreeMap<Vec<String>, PathBuf> = list.iter().map(|f| (module_of(f), f.clone())).collect();
    let mut graph = BTreeMap::new();
    for file in &list {
        let module = module_of(file);
        let text = code(&std::fs::read_to_string(file).unwrap());
        let targets =
            imports(&module, &text).into_iter().filter_map(|p| file_of(&p, &files)).filter(|t| t != file).collect();
        graph.insert(file.clone(), targets);
    }
    graph
}

fn short(p: &Path) -> String {
    p.strip_prefix(src()).unwrap().display().to_string()
}

#[test]
fn no_file_imports_from_a_higher_layer() {
    let mut upward = Vec::new();
    for (file, targets) in graph() {
        if module_of(&file).is_empty() {
            continue; // lib.rs declares every module
        }
        let here = layer_of(&module_of(&file));
        for t in targets {
            let there = layer_of(&module_of(&t));
            if there > here {
                upward.push(format!("{} ({}) -> {} ({})", short(&file), LAYERS[here].0, short(&t), LAYERS[there].0));
            }
        }
    }
    assert!(upward.is_empty(), "imports pointing up a layer:\n{}", upward.join("\n"));
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let graph = graph();
    // Depth-first search for a back edge; report the first circle found.
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in &graph[node] {
            match state.get(next) {
                Some(1) => {
                    let from = stack.iter().position(|p| p == next).unwrap();
                    return Some(stack[from..].to_vec());
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node)
            && let Some(circle) = visit(node, &graph, &mut state, &mut Vec::new())
        {
            let names: Vec<String> = circle.iter().map(|p| short(p)).collect();
            panic!("files importing each other in a circle: {} -> {}", names.join(" -> "), names[0]);
        }
    }
}

#[test]
fn the_checker_sees_imports_of_every_form() {
    let m = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let found = imports(
        &m(&["fs", "pool"]),
        "use crate::model::{self, ChunkRef};\nuse crate::{codec, store::{Piece, objects::Get}};\nlet x = crate::machine::now_ns();\nuse super::content::DriveFile;",
    );
    let wanted: [&[&str]; 6] = [
        &["model"],
        &["model", "ChunkRef"],
        &["codec"],
        &["store", "objects", "Get"],
        &["machine", "now_ns"],
        &["fs", "content", "DriveFile"],
    ];
    for want in wanted {
        assert!(found.contains(&m(want)), "{want:?} in {found:?}");
    }
}
