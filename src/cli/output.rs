//! Printing results: aligned text for people, JSON for scripts.

use cuckoo::BackendUsage;
use cuckoo::config::BackendConfig;
use cuckoo::model::{Node, NodeKind, Snapshot};
use cuckoo::{BackupOutcome, ObjectId, RestoreOutcome, Stats};
use humansize::{BINARY, format_size};
use serde_json::json;

fn local(ns: i64) -> chrono::DateTime<chrono::Local> {
    chrono::DateTime::from_timestamp_nanos(ns).with_timezone(&chrono::Local)
}

/// A time for people: local, to the second.
fn time(ns: i64) -> String {
    local(ns).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A time for programs: RFC 3339 with the local offset and every digit of the nanoseconds.
fn rfc3339(ns: i64) -> String {
    local(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// How long a run took: "2.4 s", "3m 12s".
fn took(d: std::time::Duration) -> String {
    if d.as_secs() < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
    }
}

pub fn size(n: u64) -> String {
    format_size(n, BINARY)
}

/// "1 file", "2 files".
fn count(n: impl TryInto<u64>, one: &str, many: &str) -> String {
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Exit code when the reader of our output went away: what a process killed by SIGPIPE
/// reports (Rust ignores SIGPIPE, and must: a backend's socket or ssh pipe closing may not
/// kill the process).
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// Write one line of output; see `say!`.
pub fn line(args: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{args}") {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("cuckoo: cannot write output: {e}");
        }
        std::process::exit(if e.kind() == std::io::ErrorKind::BrokenPipe { EXIT_BROKEN_PIPE.into() } else { 1 });
    }
}

/// What the first run made, so a newcomer knows where the data is and what protects it.
pub fn first_run(config: &cuckoo::Config, path: &std::path::Path) {
    eprintln!("cuckoo: no config found, so this created the default pool: three directories on this disk,");
    for root in config.backends.iter().filter_map(|b| b.local_root()) {
        eprintln!("  {}", root.display());
    }
    eprintln!(
        "cuckoo: encrypted with your passphrase (keep it: without it the data cannot be read), every object \
         stored twice, so losing one directory loses nothing; the catalogue (a rebuildable index) is under {}",
        cuckoo::config::data_dir().map(|d| d.join("catalogues").display().to_string()).unwrap_or_default()
    );
    eprintln!("cuckoo: config written to {}; add cloud backends with `cuckoo backend add`", path.display());
}

/// A note on what a long-running command is doing (stderr, so stdout stays data).
pub fn note(text: &str) {
    eprintln!("cuckoo: {text}");
}

/// A warning: something went wrong, or not as asked, and the command goes on.
pub fn warning(text: &str) {
    eprintln!("cuckoo: warning: {text}");
}

pub fn message(json: bool, text: &str, value: serde_json::Value) {
    if json {
        say!("{value}");
    } else {
        say!("{text}");
    }
}

fn snapshot_json(id: &ObjectId, s: &Snapshot) -> serde_json::Value {
    json!({
        "id": id.to_hex(), "short_id": id.short(), "time": rfc3339(s.time_ns), "time_ns": s.time_ns,
        "hostname": s.hostname, "username": s.username, "paths": s.paths, "tags": s.tags,
        "tree": s.tree.to_hex(), "tree_pack": s.tree_pack.to_hex(), "parent": s.parent.map(|p| p.to_hex()),
        "summary": {
            "files": s.summary.files, "dirs": s.summary.dirs, "others": s.summary.others,
            "bytes": s.summary.bytes, "files_read": s.summary.files_read, "bytes_read": s.summary.bytes_read,
            "objects_added": s.summary.objects_added, "bytes_added": s.summary.bytes_added,
            "stored_bytes_added": s.summary.stored_bytes_added, "skipped": s.summary.skipped,
        },
        "program_version": s.program_version,
    })
}

pub fn backup(done: &BackupOutcome, dry_run: bool, elapsed: std::time::Duration, json: bool) {
    let s = &done.snapshot.summary;
    if json {
        let mut v = snapshot_json(&done.id, &done.snapshot);
        v["dry_run"] = json!(dry_run);
        v["duration_s"] = json!(elapsed.as_secs_f64());
        v["warnings"] = json!(done.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>());
        v["excluded"] = json!(done.excluded);
        say!("{v}");
        return;
    }
    // Warnings were shown as they happened (progress); the summary only counts them.
    say!(
        "{} ({} read, {} unchanged), {}, {}",
        count(s.files, "file", "files"),
        s.files_read,
        s.files - s.files_read,
        count(s.dirs, "directory", "directories"),
        count(s.others, "other entry", "other entries")
    );
    say!(
        "{}: {}, {} ({} stored{})",
        if dry_run { "would add to the pool" } else { "added to the pool" },
        count(s.objects_added, "object", "objects"),
        size(s.bytes_added),
        size(s.stored_bytes_added),
        if dry_run { ", estimated" } else { "" }
    );
    if s.skipped > 0 {
        say!("skipped {} (listed above)", count(s.skipped, "unreadable entry", "unreadable entries"));
    }
    let left_out: Vec<String> =
        done.excluded.iter().filter(|e| e.entries > 0).map(|e| format!("{} by {}", e.entries, e.rule)).collect();
    if !left_out.is_empty() {
        let total: u64 = done.excluded.iter().map(|e| e.entries).sum();
        say!("excluded {}: {}", count(total, "entry", "entries"), left_out.join(", "));
    }
    if dry_run {
        say!("dry run: nothing stored ({} in {}) in {}", size(s.bytes), count(s.files, "file", "files"), took(elapsed));
        return;
    }
    say!(
        "snapshot {} saved ({} in {}) in {}",
        done.id.short(),
        size(s.bytes),
        count(s.files, "file", "files"),
        took(elapsed)
    );
}

pub fn snapshots(list: &[(ObjectId, Snapshot)], json: bool) {
    if json {
        say!("{}", serde_json::Value::Array(list.iter().map(|(id, s)| snapshot_json(id, s)).collect()));
        return;
    }
    say!("{:<9} {:<20} {:<16} {:>10} {:>10}  {:<12} paths", "id", "time", "host", "files", "size", "tags");
    for (id, s) in list {
        say!(
            "{:<9} {:<20} {:<16} {:>10} {:>10}  {:<12} {}",
            id.short(),
            time(s.time_ns),
            s.hostname,
            s.summary.files,
            size(s.summary.bytes),
            s.tags.join(","),
            s.paths.join(" ")
        );
    }
    say!("{}", count(list.len(), "snapshot", "snapshots"));
}

/// Streams `ls` lines as entries are visited.
pub struct Listing {
    json: bool,
}

/// An entry's kind name, size and what else it has (a link's target, a device number).
fn kind_size_extra(node: &Node) -> (&'static str, u64, String) {
    match &node.kind {
        NodeKind::File { size, .. } => ("file", *size, String::new()),
        NodeKind::Dir { .. } => ("dir", 0, String::new()),
        NodeKind::Symlink { target } => ("symlink", 0, String::from_utf8_lossy(target).into_owned()),
        NodeKind::Fifo => ("fifo", 0, String::new()),
        NodeKind::Socket => ("socket", 0, String::new()),
        NodeKind::CharDevice { rdev } => ("chardev", 0, rdev.to_string()),
        NodeKind::BlockDevice { rdev } => ("blockdev", 0, rdev.to_string()),
    }
}

/// An entry as `ls --json` and `find --json` print it.
fn entry_json(path: &str, node: &Node) -> serde_json::Value {
    let (kind, size, extra) = kind_size_extra(node);
    let m = &node.meta;
    json!({"path": path, "type": kind, "size": size, "mode": format!("{:o}", m.mode), "uid": m.uid,
           "gid": m.gid, "mtime": rfc3339(m.mtime_ns), "mtime_ns": m.mtime_ns, "link_target": extra})
}

impl Listing {
    pub fn new(json: bool) -> Listing {
        Listing { json }
    }

    pub fn entry(&mut self, path: &str, node: &Node) {
        if self.json {
            say!("{}", entry_json(path, node));
            return;
        }
        let (kind, size, extra) = kind_size_extra(node);
        let m = &node.meta;
        let letter = match kind {
            "dir" => 'd',
            "symlink" => 'l',
            "fifo" => 'p',
            "socket" => 's',
            "chardev" => 'c',
            "blockdev" => 'b',
            _ => '-',
        };
        let arrow = if kind == "symlink" { format!(" -> {extra}") } else { String::new() };
        say!(
            "{letter}{} {:>5} {:>5} {:>12} {} {path}{arrow}",
            mode_string(m.mode),
            m.uid,
            m.gid,
            size,
            time(m.mtime_ns)
        );
    }
}

fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    s
}

pub fn restore(id: &ObjectId, done: &RestoreOutcome, elapsed: std::time::Duration, json: bool) {
    if json {
        let mut v = serde_json::to_value(done).expect("serialisable");
        v["snapshot"] = json!(id.to_hex());
        v["duration_s"] = json!(elapsed.as_secs_f64());
        say!("{v}");
        return;
    }
    for w in &done.warnings {
        eprintln!("warning: {w}");
    }
    for f in &done.failed {
        eprintln!("not restored: {f}");
    }
    if !done.failed.is_empty() {
        eprintln!(
            "cuckoo: {} could not be restored (listed above); everything else was",
            count(done.failed.len(), "entry", "entries")
        );
    }
    say!(
        "restored snapshot {}: {} ({}), {}, {} in {}",
        id.short(),
        count(done.files, "file", "files"),
        size(done.bytes),
        count(done.dirs, "directory", "directories"),
        count(done.others, "link or special file", "links and special files"),
        took(elapsed)
    );
    if done.unchanged > 0 || done.deleted > 0 {
        say!(
            "left as they were: {}; removed (not in the snapshot): {}",
            count(done.unchanged, "entry", "entries"),
            count(done.deleted, "entry", "entries")
        );
    }
    if done.verified > 0 {
        say!("verified: {} read back equal to the snapshot", count(done.verified, "file", "files"));
    }
}

pub fn version(json: bool) {
    let (version, format, placement) = (env!("CARGO_PKG_VERSION"), cuckoo::FORMAT_VERSION, cuckoo::PLACEMENT_VERSION);
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    if json {
        say!("{}", json!({"version": version, "format": format, "placement": placement, "os": os, "arch": arch}));
    } else {
        say!("cuckoo {version} (object format {format}, placement {placement}) on {os}/{arch}");
    }
}

pub fn stats(s: &Stats, json: bool) {
    if json {
        say!("{}", serde_json::to_value(s).expect("serialisable"));
        return;
    }
    say!("snapshots:          {}", s.snapshots);
    say!("logical size:       {} (all snapshots)", size(s.logical_bytes));
    say!("unique data:        {} in {} objects", size(s.unique_bytes), s.objects);
    say!("stored:             {} (all copies or shards; redundancy {})", size(s.stored_bytes), s.redundancy);
    say!("dedup ratio:        {:.2}x", s.dedup_ratio);
    say!("compression ratio:  {:.2}x", s.compression_ratio);
    say!("{:<16} {:>10} {:>12} {:>7} {:>7}", "backend", "objects", "stored", "share", "target");
    for (name, u) in &s.backends {
        let share = if s.stored_bytes > 0 { 100.0 * u.stored_bytes as f64 / s.stored_bytes as f64 } else { 0.0 };
        let target = s.target_shares.get(name).map_or("-".to_string(), |t| format!("{:.1}%", 100.0 * t));
        say!("{name:<16} {:>10} {:>12} {share:>6.1}% {target:>7}", u.objects, size(u.stored_bytes));
    }
    if let Some(note) = &s.placement_note {
        say!("note: {note}");
    }
}

pub fn backends(
    list: &[BackendConfig],
    usage: Option<&std::collections::BTreeMap<String, BackendUsage>>,
    health: &[Result<f64, String>],
    json: bool,
) {
    let used = |name: &str| usage.map(|u| u.get(name).cloned().unwrap_or_default());
    if json {
        let v: Vec<_> = list
            .iter()
            .zip(health)
            .map(|(b, h)| {
                let u = used(&b.name);
                json!({"name": b.name, "scheme": b.scheme, "weight": b.weight, "concurrency": b.concurrency,
                       "healthy": h.is_ok(), "latency_ms": h.as_ref().ok(), "error": h.as_ref().err(),
                       "objects": u.as_ref().map(|u| u.objects), "stored_bytes": u.as_ref().map(|u| u.stored_bytes)})
            })
            .collect();
        say!("{}", serde_json::Value::Array(v));
        return;
    }
    say!("{:<16} {:<9} {:>7} {:>10} {:>12}  health", "name", "scheme", "weight", "objects", "stored");
    for (b, h) in list.iter().zip(health) {
        let (objects, stored) = match used(&b.name) {
            Some(u) => (u.objects.to_string(), size(u.stored_bytes)),
            None => ("?".into(), "?".into()),
        };
        let health = match h {
            Ok(ms) => format!("ok, {ms} ms"),
            Err(e) => format!("DOWN: {e}"),
        };
        say!("{:<16} {:<9} {:>7} {:>10} {:>12}  {health}", b.name, b.scheme, b.weight, objects, stored);
    }
}

pub fn probe(report: &cuckoo::probe::ProbeReport, json: bool) {
    if json {
        say!("{}", serde_json::to_value(report).expect("serialisable"));
        return;
    }
    let steps: Vec<String> = report.steps.iter().map(|(s, ms)| format!("{s} {ms} ms")).collect();
    match &report.failure {
        None => say!("backend '{}': OK ({})", report.backend, steps.join(", ")),
        Some((step, why)) => {
            let done = if steps.is_empty() { String::new() } else { format!(" after {}", steps.join(", ")) };
            say!("backend '{}': FAILED at {step}{done}: {why}", report.backend);
        }
    }
}

pub fn check(report: &cuckoo::CheckReport, elapsed: std::time::Duration, json: bool) {
    if json {
        let mut v = serde_json::to_value(report).expect("serialisable");
        v["duration_s"] = json!(elapsed.as_secs_f64());
        say!("{v}");
        return;
    }
    for f in &report.findings {
        match &f.backend {
            // A finding about a backend as a whole names no snapshot or object.
            Some(backend) if f.object.is_empty() => say!("backend {backend}: {}", f.problem),
            _ => {
                let object = f.object.get(..16).unwrap_or(&f.object);
                say!("snapshot {} {}: object {object}: {}", f.snapshot, f.path, f.problem);
            }
        }
    }
    let read = if report.objects_read > 0 {
        format!(", read and verified {} objects ({})", report.objects_read, size(report.bytes_read))
    } else {
        String::new()
    };
    let verdict = if report.findings.is_empty() {
        "no problems".to_string()
    } else {
        count(report.findings.len(), "problem", "problems")
    };
    for (name, b) in &report.backends {
        let state = if b.unreachable { ", unreachable" } else { "" };
        say!("backend {name}: {} pieces missing, {} corrupt{state}", b.missing, b.corrupt);
    }
    if report.degraded > 0 {
        say!(
            "{} less redundancy than asked: `cuckoo repair` rebuilds it",
            count(report.degraded, "object has", "objects have")
        );
    }
    say!(
        "checked {}, {}{read}: {verdict} ({})",
        count(report.snapshots, "snapshot", "snapshots"),
        count(report.objects, "object", "objects"),
        took(elapsed)
    );
}

pub fn find(found: &[cuckoo::Found], json: bool) {
    if json {
        let v: Vec<_> = found
            .iter()
            .map(|f| {
                let matches: Vec<_> = f.entries.iter().map(|(path, node)| entry_json(path, node)).collect();
                json!({"snapshot": f.id.to_hex(), "time": rfc3339(f.snapshot.time_ns), "hits": matches.len(), "matches": matches})
            })
            .collect();
        say!("{}", serde_json::Value::Array(v));
        return;
    }
    for f in found {
        say!("found in snapshot {} of {}:", f.id.short(), time(f.snapshot.time_ns));
        let mut listing = Listing::new(false);
        for (path, node) in &f.entries {
            listing.entry(path, node);
        }
        say!("");
    }
    let hits: usize = found.iter().map(|f| f.entries.len()).sum();
    say!("{} in {}", count(hits, "entry", "entries"), count(found.len(), "snapshot", "snapshots"));
}

pub fn copy(done: &[(ObjectId, cuckoo::Copied)], chosen: &[(ObjectId, Snapshot)], json: bool) {
    use cuckoo::Copied;
    let of = |id: &ObjectId| chosen.iter().find(|(c, _)| c == id).map(|(_, s)| s).expect("copied from the chosen");
    if json {
        let v: Vec<_> = done
            .iter()
            .map(|(id, c)| match c {
                Copied::Written(new, outcome) => json!({
                    "source": id.to_hex(), "target": new.to_hex(), "copied": true,
                    "files": outcome.snapshot.summary.files, "bytes": outcome.snapshot.summary.bytes,
                    "objects_added": outcome.snapshot.summary.objects_added,
                    "bytes_added": outcome.snapshot.summary.bytes_added,
                    "stored_bytes_added": outcome.snapshot.summary.stored_bytes_added,
                }),
                Copied::Present(there) => json!({"source": id.to_hex(), "target": there.to_hex(), "copied": false}),
            })
            .collect();
        say!("{}", serde_json::Value::Array(v));
        return;
    }
    for (id, c) in done {
        let s = of(id);
        let what = format!("snapshot {} of {} at {}", id.short(), s.hostname, time(s.time_ns));
        match c {
            Copied::Written(new, outcome) => {
                let sum = &outcome.snapshot.summary;
                say!(
                    "{what} -> {}: {}, {}; added {} ({} stored)",
                    new.short(),
                    count(sum.files as usize, "file", "files"),
                    size(sum.bytes),
                    size(sum.bytes_added),
                    size(sum.stored_bytes_added)
                );
            }
            Copied::Present(there) => say!("{what}: already in this pool as {}", there.short()),
        }
    }
    let copied = done.iter().filter(|(_, c)| matches!(c, Copied::Written(..))).count();
    say!("copied {} of {}", count(copied, "snapshot", "snapshots"), done.len());
}

pub fn rewrite(done: &[cuckoo::Rewritten], dry_run: bool, json: bool) {
    use cuckoo::RewriteOutcome as O;
    if json {
        let v: Vec<_> = done
            .iter()
            .map(|r| {
                let (outcome, new) = match &r.outcome {
                    O::Unchanged => ("unchanged", None),
                    O::Written(id) => ("written", Some(id.to_hex())),
                    O::Planned => ("planned", None),
                    O::WouldBeEmpty => ("would_be_empty", None),
                };
                json!({"old": r.old.to_hex(), "outcome": outcome, "new": new, "dropped": r.dropped})
            })
            .collect();
        say!("{}", serde_json::Value::Array(v));
        return;
    }
    for r in done {
        let d = &r.dropped;
        let what = format!(
            "{}, {}, {} ({})",
            count(d.files as usize, "file", "files"),
            count(d.dirs as usize, "directory", "directories"),
            count(d.others as usize, "other entry", "other entries"),
            size(d.bytes)
        );
        match &r.outcome {
            O::Unchanged => say!("snapshot {}: nothing matches, left as it is", r.old.short()),
            O::Written(id) => say!("snapshot {} -> {}: dropped {what}", r.old.short(), id.short()),
            O::Planned => say!("snapshot {}: would drop {what}", r.old.short()),
            O::WouldBeEmpty => warning(&format!(
                "snapshot {}: nothing would be left, so it is kept as it is (`cuckoo forget {}` removes it)",
                r.old.short(),
                r.old.short()
            )),
        }
        if dry_run || matches!(r.outcome, O::Written(_)) {
            for path in &d.paths {
                say!("  - {path}");
            }
        }
    }
    let written = done.iter().filter(|r| matches!(r.outcome, O::Written(_))).count();
    if !dry_run {
        say!("{} of {} rewritten", count(written, "snapshot", "snapshots"), done.len());
    }
}

pub fn cache(dir: &std::path::Path, stats: &cuckoo::CacheStats, freed: Option<u64>, json: bool) {
    if json {
        say!(
            "{}",
            json!({"dir": dir, "bytes": stats.bytes, "limit": stats.limit, "cleared_bytes": freed, "damaged": stats.damaged})
        );
        return;
    }
    if let Some(freed) = freed {
        say!("removed {} from the local chunk cache", size(freed));
    }
    say!("local chunk cache {}: {} of at most {}", dir.display(), size(stats.bytes), size(stats.limit));
    if stats.damaged > 0 {
        say!("{} damaged files found and removed", stats.damaged);
    }
}

pub fn diff(changes: &[(String, cuckoo::Change)], json: bool) {
    use cuckoo::Change;
    for (path, change) in changes {
        if json {
            say!("{}", json!({"path": path, "change": change}));
        } else {
            let mark = match change {
                Change::Added => '+',
                Change::Removed => '-',
                Change::Modified => 'M',
                Change::Metadata => 'U',
            };
            say!("{mark} {path}");
        }
    }
}

pub fn forget(
    all: &[(ObjectId, Snapshot)],
    decisions: &[(ObjectId, Vec<String>)],
    left: &[cuckoo::LeftCopies],
    dry_run: bool,
    json: bool,
) {
    let time_of = |id: &ObjectId| all.iter().find(|(i, _)| i == id).map(|(_, s)| time(s.time_ns)).unwrap_or_default();
    if json {
        let v: Vec<_> = decisions
            .iter()
            .map(|(id, reasons)| json!({"id": id.to_hex(), "keep": !reasons.is_empty(), "reasons": reasons}))
            .collect();
        say!("{}", json!({"dry_run": dry_run, "snapshots": v, "left_on_backends": left}));
        return;
    }
    for (id, reasons) in decisions {
        let verdict = if reasons.is_empty() { "forget".to_string() } else { format!("keep ({})", reasons.join(", ")) };
        say!("{} {}  {verdict}", id.short(), time_of(id));
    }
    let n = decisions.iter().filter(|(_, r)| r.is_empty()).count();
    let verb = if dry_run { "would forget" } else { "forgot" };
    say!(
        "{verb} {n} of {} (their data stays stored until `cuckoo prune`)",
        count(decisions.len(), "snapshot", "snapshots")
    );
    for l in left {
        say!(
            "backend '{}' did not delete {} of them ({}): a forget record on the other backends keeps them \
             forgotten on every machine; `cuckoo repair` deletes them once the backend allows it",
            l.backend,
            count(l.snapshots as u64, "record", "records"),
            l.why
        );
    }
}

pub fn keys(slots: &[cuckoo::KeyInfo], json: bool) {
    if json {
        say!("{}", serde_json::to_value(slots).expect("key info serialises"));
        return;
    }
    say!("{:<2}{:<10} {:<20} {:>8} {:>6}", "", "ID", "CREATED", "MEMORY", "PASSES");
    for k in slots {
        say!(
            "{:<2}{:<10} {:<20} {:>4} MiB {:>6}",
            if k.current { "*" } else { "" },
            &k.id[..8],
            time(k.created_ns),
            k.kdf.memory_kib / 1024,
            k.kdf.iterations
        );
    }
}

pub fn prune(r: &cuckoo::PruneReport, elapsed: std::time::Duration, json: bool) {
    if json {
        let mut v = serde_json::to_value(r).expect("prune report serialises");
        v["duration_s"] = json!(elapsed.as_secs_f64());
        say!("{v}");
        return;
    }
    let size = |b: u64| format_size(b, BINARY);
    let p = &r.repack;
    if p.chunks > 0 {
        let verb = if r.dry_run { "would repack" } else { "repacked" };
        say!("{verb} {} partly used chunks: {} copied, {} freed", p.chunks, size(p.copied_bytes), size(p.freed_bytes));
        for (old, new) in p.rewritten.iter().filter(|(old, new)| old != new) {
            let verb = if r.dry_run { "would be rewritten" } else { "rewritten" };
            say!("snapshot {} {verb} as {}", &old[..8], &new[..8]);
        }
    }
    say!(
        "{} {} {} ({} stored)",
        count(r.snapshots, "snapshot", "snapshots"),
        if r.snapshots == 1 { "references" } else { "reference" },
        count(r.live_objects, "object", "objects"),
        size(r.live_stored_bytes)
    );
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    say!(
        "{verb} {} ({} stored) in {}",
        count(r.unused_objects, "unreferenced object", "unreferenced objects"),
        size(r.unused_stored_bytes),
        took(elapsed)
    );
    if r.partly_used_chunks > 0 {
        say!(
            "{} still partly used: {} of them no snapshot references",
            count(r.partly_used_chunks, "chunk or tree pack is", "chunks and tree packs are"),
            size(r.partly_used_unreferenced_bytes)
        );
    }
}

pub fn repair(r: &cuckoo::RepairReport, options: cuckoo::RepairOptions, json: bool) {
    if json {
        say!("{}", serde_json::to_value(r).expect("repair report serialises"));
        return;
    }
    let size = |b: u64| format_size(b, BINARY);
    let (write, delete) = if options.dry_run { ("would write", "would delete") } else { ("wrote", "deleted") };
    say!(
        "{} objects: {} healthy, {} repaired, {} moved; {write} {} pieces ({}), {delete} {} ({})",
        r.objects,
        r.healthy,
        r.repaired,
        r.moved,
        r.pieces_written,
        size(r.bytes_written),
        r.pieces_deleted,
        size(r.bytes_deleted)
    );
    if r.corrupt_pieces > 0 {
        let verb = if options.dry_run { "found; repair would replace them" } else { "found and replaced" };
        say!("{} {verb}", count(r.corrupt_pieces, "corrupt piece", "corrupt pieces"));
    }
    if r.shared_copied > 0 {
        say!("{write} {} copies of snapshots, key slots and pool records", r.shared_copied);
    }
    if r.forgotten_deleted > 0 {
        say!("{delete} {} of forgotten snapshots that backends had kept", count(r.forgotten_deleted, "copy", "copies"));
    }
    if r.forget_records_removed > 0 {
        say!(
            "removed {} (no backend holds their snapshots any more)",
            count(r.forget_records_removed, "forget record", "forget records")
        );
    }
    for (id, why) in &r.unrecoverable {
        say!("cannot rebuild {}: {why}", &id[..16]);
    }
    if r.incomplete > 0 {
        say!(
            "{} could not be finished: the backends that failed are named below, with whether running repair \
             again can help",
            count(r.incomplete, "object", "objects")
        );
    }
}
