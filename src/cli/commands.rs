//! Running each command: open the pool, call the library, hand the result to `output`.
//!
//! Owns: which library calls a command makes and its exit code. Must not: hold storage
//! logic (the library does) or format results (`output` does).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use cuckoo::config::{self, BackendConfig, Config};
use cuckoo::{BackupOptions, ErrorKind, InitOutcome, Progress, Repository, RestoreOptions};

use super::args::{BackendCommand, Cli, Command, KeyCommand, Record, Select, Which};
use super::{output, progress, secret};

/// Exit code of a backup that completed but skipped unreadable entries.
const EXIT_PARTIAL: u8 = 3;

/// Load the config, with the global limits and cache settings given on the command line.
async fn load_config(cli: &Cli) -> Result<Config> {
    let mut config = find_config(cli).await?;
    if cli.cache_dir.is_some() {
        config.cache.dir = cli.cache_dir.clone();
    }
    if cli.no_cache {
        config.cache.size = Some(0);
    } else if cli.cache_size.is_some() {
        config.cache.size = cli.cache_size;
    }
    if cli.limit_upload.is_some() {
        config.limits.upload = cli.limit_upload;
    }
    if cli.limit_download.is_some() {
        config.limits.download = cli.limit_download;
    }
    Ok(config)
}

/// Read the config; with none anywhere, create the embedded default pool and say so.
async fn find_config(cli: &Cli) -> Result<Config> {
    if let Some(path) = &cli.config {
        if !path.exists() {
            anyhow::bail!("config {} does not exist", path.display());
        }
        return Ok(Config::load(path)?);
    }
    let path = config::default_config_path()?;
    if path.exists() {
        return Ok(Config::load(&path)?);
    }
    let (config, text) = config::default_pool(&path)?;
    first_run(cli, &config).await?;
    config::write_new(&path, &text)?;
    output::first_run(&config, &path);
    Ok(config)
}

/// Create the embedded pool before its config is written, so a first run that fails (no
/// passphrase, two that differ) leaves nothing behind and the next run starts afresh.
async fn first_run(cli: &Cli, config: &Config) -> Result<()> {
    let roots: Vec<PathBuf> = config.backends.iter().filter_map(|b| b.local_root()).collect();
    let existed: Vec<bool> = roots.iter().map(|r| r.exists()).collect();
    match cuckoo::init(config, &cuckoo::InitOptions::default(), &passphrase(cli)).await {
        Ok(_) => Ok(()),
        // Its directories hold the pool already (the config was deleted): use them again.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => {
            for (root, existed) in roots.iter().zip(existed) {
                if !existed {
                    let _ = std::fs::remove_dir_all(root);
                }
            }
            // The folders above them, if this run made them and they are empty now.
            for dir in roots.first().into_iter().flat_map(|r| r.ancestors().skip(1).take(2)) {
                let _ = std::fs::remove_dir(dir);
            }
            Err(anyhow::Error::from(e).context("creating the default pool failed; nothing was kept"))
        }
    }
}

/// The progress bar of a command, with the detail `-v` asks for.
fn progress_bar(cli: &Cli) -> progress::Bar {
    progress::Bar::new(cli.json || cli.quiet).verbose(cli.verbose, cli.json)
}

fn passphrase(cli: &Cli) -> secret::Source {
    secret::Source {
        command: cli.password_command.clone(),
        file: cli.password_file.clone(),
        env: "CUCKOO_PASSWORD",
        flag: "--password-file",
        prompt: "Passphrase of the pool",
    }
}

fn new_passphrase(file: &Option<PathBuf>) -> secret::Source {
    secret::Source {
        command: None,
        file: file.clone(),
        env: "CUCKOO_NEW_PASSWORD",
        flag: "--new-password-file",
        prompt: "New passphrase",
    }
}

/// The backends' incidents of every pool this command opened, said when it ends.
static OPENED: std::sync::Mutex<Vec<cuckoo::TroubleLog>> = std::sync::Mutex::new(Vec::new());

/// Name every backend that failed requests during the command, why, and whether running
/// it again can help: a command that succeeded around a failing backend says so too.
pub fn report_troubles() {
    let logs = std::mem::take(&mut *OPENED.lock().unwrap_or_else(|e| e.into_inner()));
    for trouble in logs.iter().flat_map(|l| l.troubles()) {
        output::warning(&trouble.to_string());
    }
}

async fn open(cli: &Cli, config: Config) -> Result<Repository> {
    let bar = progress_bar(cli);
    let repo = Repository::open(config, &passphrase(cli), &bar).await?;
    OPENED.lock().unwrap_or_else(|e| e.into_inner()).push(repo.trouble_log());
    let redundancy = repo.pool().redundancy;
    for (name, why) in repo.unavailable() {
        output::warning(&if why == Repository::NO_POOL_RECORD {
            format!(
                "backend '{name}' has no pool record (new, or its provider lost what it held): it takes new \
                 data; `cuckoo repair` gives it the record and rebuilds what it should hold (redundancy \
                 {redundancy} covers it meanwhile)"
            )
        } else {
            format!(
                "backend '{name}' is left out ({why}); redundancy {redundancy} covers it, `cuckoo repair` \
                 restores it"
            )
        });
    }
    repo.set_no_lock(cli.no_lock);
    Ok(repo)
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    // These need no pool: answered before a config is read (or a default one made).
    match &cli.command {
        Command::Version => {
            output::version(cli.json);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Generate { bash_completion, zsh_completion, fish_completion, powershell_completion, man } => {
            use clap_complete::Shell;
            for (shell, file) in [
                (Shell::Bash, bash_completion),
                (Shell::Zsh, zsh_completion),
                (Shell::Fish, fish_completion),
                (Shell::PowerShell, powershell_completion),
            ] {
                if let Some(file) = file {
                    write_to(file, &mut |w| {
                        clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "cuckoo", w);
                        Ok(())
                    })?;
                }
            }
            if let Some(dir) = man {
                man_pages(dir)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let config = load_config(&cli).await?;
    match &cli.command {
        Command::Init { no_encrypt, kdf, redundancy, .. } => {
            let options = cuckoo::InitOptions { encrypt: !no_encrypt, kdf: kdf.params(), redundancy: *redundancy };
            init(&cli, &config, &options).await
        }
        Command::Key { command } => key(&cli, config, command).await,
        Command::Backup { paths, record, select } => backup(&cli, config, paths, record, select).await,
        Command::Snapshots { which, paths, latest } => {
            let filter = snapshot_filter(which, paths)?;
            let repo = open(&cli, config).await?;
            let mut list: Vec<_> = repo.snapshots()?.into_iter().filter(|(_, s)| filter.matches(s)).collect();
            if let Some(n) = latest {
                list = newest_per_group(list, *n);
            }
            output::snapshots(&list, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { target, which, paths } => ls(&cli, config, target, &snapshot_filter(which, paths)?).await,
        Command::Restore { snapshot, target, path, verify, overwrite, delete, select, which } => {
            let options = RestoreOptions {
                target: target.clone(),
                path: path.clone(),
                select: select.to_select(),
                verify: *verify,
                overwrite: *overwrite,
                delete: *delete,
            };
            restore(&cli, config, snapshot, options, &snapshot_filter(which, &[])?).await
        }
        Command::Check { read_data, read_data_subset } => {
            check(&cli, config, if *read_data { Some(1.0) } else { *read_data_subset }).await
        }
        Command::Forget {
            snapshots,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            keep_tag,
            keep_within,
            keep_within_hourly,
            keep_within_daily,
            keep_within_weekly,
            keep_within_monthly,
            keep_within_yearly,
            group_by,
            dry_run,
            prune: then_prune,
            which,
            paths,
        } => {
            let policy = cuckoo::forget::Policy {
                last: *keep_last,
                hourly: *keep_hourly,
                daily: *keep_daily,
                weekly: *keep_weekly,
                monthly: *keep_monthly,
                yearly: *keep_yearly,
                tags: keep_tag.clone(),
                within: *keep_within,
                within_hourly: *keep_within_hourly,
                within_daily: *keep_within_daily,
                within_weekly: *keep_within_weekly,
                within_monthly: *keep_within_monthly,
                within_yearly: *keep_within_yearly,
                group_by: *group_by,
            };
            let filter = snapshot_filter(which, paths)?;
            let code = forget(&cli, &config, snapshots, &policy, &filter, *dry_run).await?;
            if *then_prune {
                let options = cuckoo::PruneOptions { dry_run: *dry_run, ..Default::default() };
                return prune(&cli, config, options).await;
            }
            Ok(code)
        }
        Command::Prune { dry_run, max_unused } => {
            prune(&cli, config, cuckoo::PruneOptions { dry_run: *dry_run, max_unused: *max_unused }).await
        }
        Command::Repair { read_data, dry_run } => {
            let options = cuckoo::RepairOptions { rebalance: false, read_data: *read_data, dry_run: *dry_run };
            repair(&cli, config, options).await
        }
        Command::Rebalance { dry_run } => {
            let options = cuckoo::RepairOptions { rebalance: true, read_data: false, dry_run: *dry_run };
            repair(&cli, config, options).await
        }
        Command::Unlock { all } => unlock(&cli, config, *all).await,
        Command::Diff { a, b } => diff(&cli, config, a, b).await,
        Command::Find { patterns, snapshots, which, paths, newer, older, ignore_case } => {
            let filter = snapshot_filter(which, paths)?;
            let repo = open(&cli, config).await?;
            let chosen = if snapshots.is_empty() {
                repo.snapshots()?.into_iter().filter(|(_, s)| filter.matches(s)).collect()
            } else {
                snapshots.iter().map(|s| repo.find_snapshot_matching(s, &filter)).collect::<cuckoo::Result<Vec<_>>>()?
            };
            let options = cuckoo::FindOptions {
                patterns: patterns.clone(),
                ignore_case: *ignore_case,
                newer_ns: *newer,
                older_ns: *older,
            };
            let found = repo.find(&chosen, &options).await?;
            output::find(&found, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Cat { target, which, paths } => cat(&cli, config, target, &snapshot_filter(which, paths)?).await,
        Command::Tag { snapshots, add, remove, set, which, paths } => {
            let set = set.as_ref().map(|s| s.iter().filter(|t| !t.is_empty()).cloned().collect());
            let change = cuckoo::TagChange { add: add.clone(), remove: remove.clone(), set };
            tag(&cli, config, snapshots, &change, &snapshot_filter(which, paths)?).await
        }
        Command::Copy { snapshots, from_config, from_password_file, from_password_command, which, paths } => {
            let from = secret::Source {
                command: from_password_command.clone(),
                file: from_password_file.clone(),
                env: "CUCKOO_FROM_PASSWORD",
                flag: "--from-password-file",
                prompt: "Passphrase of the source pool",
            };
            copy(&cli, config, snapshots, from_config, &from, &snapshot_filter(which, paths)?).await
        }
        Command::Rewrite { snapshots, select, forget, dry_run, which, paths } => {
            let options = cuckoo::RewriteOptions { select: select.to_select(), forget: *forget, dry_run: *dry_run };
            rewrite(&cli, config, snapshots, &options, &snapshot_filter(which, paths)?).await
        }
        Command::Dump { spec, archive, target, which, paths } => {
            dump(&cli, config, spec, *archive, target.as_deref(), &snapshot_filter(which, paths)?).await
        }
        Command::Mount { mountpoint, commit_interval, allow_non_empty } => {
            let options = cuckoo::mount::MountOptions {
                commit_interval: std::time::Duration::from_secs((*commit_interval).max(1)),
                allow_non_empty: *allow_non_empty,
                ..Default::default()
            };
            mount(&cli, config, mountpoint.clone(), options).await
        }
        Command::Snapshot { tags } => snapshot(&cli, config, tags.clone()).await,
        Command::Stats => {
            let repo = open(&cli, config).await?;
            output::stats(&repo.stats()?, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache { clear } => cache(&cli, config, *clear).await,
        Command::Backend { command } => backend(&cli, config, command).await,
        Command::Version | Command::Generate { .. } => unreachable!("answered above"),
    }
}

/// Write through `write` to `file`, or to standard output for `-`.
fn write_to(
    file: &std::path::Path,
    write: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    if file.as_os_str() == "-" {
        return Ok(write(&mut std::io::stdout().lock())?);
    }
    let mut out = std::fs::File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
    write(&mut out).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

/// `cuckoo.1` and one page per command (`cuckoo-backup.1`, `cuckoo-backend-add.1`…) in `dir`.
fn man_pages(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut stack = vec![(String::from("cuckoo"), <Cli as clap::CommandFactory>::command())];
    while let Some((name, command)) = stack.pop() {
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let sub_name = format!("{name}-{}", sub.get_name());
            stack.push((sub_name.clone(), sub.clone().name(sub_name)));
        }
        let page = dir.join(format!("{name}.1"));
        write_to(&page, &mut |w| clap_mangen::Man::new(command.clone()).render(w))?;
    }
    Ok(())
}

async fn backup(cli: &Cli, config: Config, paths: &[PathBuf], record: &Record, select: &Select) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut paths = paths.to_vec();
    paths.extend(listed_paths(select)?);
    let repo = open(cli, config).await?;
    let parent = match &record.parent {
        Some(p) => Some(repo.find_snapshot(p)?.0),
        None => None,
    };
    let exclude = cuckoo::Excludes {
        patterns: select.excludes.exclude.clone(),
        ipatterns: select.excludes.iexclude.clone(),
        files: select.excludes.exclude_file.clone(),
        ifiles: select.excludes.iexclude_file.clone(),
        if_present: select.exclude_if_present.clone(),
        caches: select.exclude_caches,
        larger_than: select.exclude_larger_than,
        one_file_system: select.one_file_system,
    };
    let options = BackupOptions {
        paths,
        tags: record.tags.clone(),
        parent,
        force: record.force,
        ignore_ctime: record.ignore_ctime,
        ignore_inode: record.ignore_inode,
        exclude,
        hostname: record.host.clone(),
        time_ns: record.time,
        dry_run: record.dry_run,
    };
    interrupt_on_ctrl_c(&repo);
    let bar: Arc<dyn Progress> = Arc::new(progress_bar(cli));
    let done = if record.stdin {
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            anyhow::bail!(
                "--stdin reads standard input to its end: pipe something in (`pg_dump db | cuckoo backup --stdin`)"
            );
        }
        repo.backup_stream(&record.stdin_filename, Box::new(std::io::stdin()), options, bar).await?
    } else {
        repo.backup(options, bar).await?
    };
    output::backup(&done, record.dry_run, started.elapsed(), cli.json);
    let skipped = done.snapshot.summary.skipped > 0;
    Ok(if skipped { ExitCode::from(EXIT_PARTIAL) } else { ExitCode::SUCCESS })
}

/// The paths `--files-from`, `--files-from-verbatim` and `--files-from-raw` list.
fn listed_paths(select: &Select) -> Result<Vec<PathBuf>> {
    let read = |file: &PathBuf| {
        std::fs::read(file).with_context(|| format!("cannot read the list of paths {}", file.display()))
    };
    let mut out = Vec::new();
    for file in &select.files_from {
        let text = read(file)?;
        let lines = text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        out.extend(
            lines.filter(|l| !l.trim_ascii().is_empty() && !l.trim_ascii_start().starts_with(b"#")).map(path_of),
        );
    }
    for file in &select.files_from_verbatim {
        let text = read(file)?;
        out.extend(text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(path_of));
    }
    for file in &select.files_from_raw {
        let text = read(file)?;
        out.extend(text.split(|&b| b == 0).filter(|l| !l.is_empty()).map(path_of));
    }
    let listed =
        !(select.files_from.is_empty() && select.files_from_verbatim.is_empty() && select.files_from_raw.is_empty());
    if listed && out.is_empty() {
        anyhow::bail!("the lists of paths given are empty: nothing to back up");
    }
    Ok(out)
}

fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

/// The filter `--host`, `--tag` and `--path` give.
fn snapshot_filter(which: &Which, paths: &[PathBuf]) -> Result<cuckoo::SnapshotFilter> {
    Ok(cuckoo::SnapshotFilter {
        hosts: which.hosts.clone(),
        tags: which.tags.iter().map(|set| set.split(',').map(|t| t.trim().to_string()).collect()).collect(),
        paths: paths
            .iter()
            .map(|p| cuckoo::normalise_path(p).map(|p| p.display().to_string()))
            .collect::<cuckoo::Result<_>>()?,
    })
}

/// The newest `n` snapshots of each host and set of paths, oldest first (`snapshots --latest`).
fn newest_per_group(
    list: Vec<(cuckoo::ObjectId, cuckoo::model::Snapshot)>,
    n: usize,
) -> Vec<(cuckoo::ObjectId, cuckoo::model::Snapshot)> {
    let mut seen: std::collections::HashMap<(String, Vec<String>), usize> = std::collections::HashMap::new();
    let mut kept: Vec<_> = list
        .into_iter()
        .rev()
        .filter(|(_, s)| {
            let count = seen.entry((s.hostname.clone(), s.paths.clone())).or_default();
            *count += 1;
            *count <= n
        })
        .collect();
    kept.reverse();
    kept
}

async fn ls(cli: &Cli, config: Config, target: &str, filter: &cuckoo::SnapshotFilter) -> Result<ExitCode> {
    let repo = open(cli, config).await?;
    let (spec, path) = target.split_once(':').unwrap_or((target, ""));
    let (_, snapshot) = repo.find_snapshot_matching(spec, filter)?;
    let mut out = output::Listing::new(cli.json);
    repo.walk(&snapshot, path, &mut |p, node| out.entry(p, node)).await?;
    Ok(ExitCode::SUCCESS)
}

async fn restore(
    cli: &Cli,
    config: Config,
    snapshot: &str,
    options: RestoreOptions,
    filter: &cuckoo::SnapshotFilter,
) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let repo = open(cli, config).await?;
    let (id, snap) = repo.find_snapshot_matching(snapshot, filter)?;
    interrupt_on_ctrl_c(&repo);
    let bar: Arc<dyn Progress> = Arc::new(progress_bar(cli));
    let done = repo.restore(&snap, options, bar).await.with_context(|| format!("restore of {}", id.short()))?;
    output::restore(&id, &done, started.elapsed(), cli.json);
    Ok(if done.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn check(cli: &Cli, config: Config, read_data: Option<f64>) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let repo = open(cli, config).await?;
    let bar = progress_bar(cli);
    let report = repo.check(cuckoo::CheckOptions { read_data }, &bar).await?;
    output::check(&report, started.elapsed(), cli.json);
    Ok(if report.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn prune(cli: &Cli, config: Config, options: cuckoo::PruneOptions) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let repo = open(cli, config).await?;
    interrupt_on_ctrl_c(&repo);
    let bar = progress_bar(cli);
    let report = repo.prune(options, &bar).await?;
    output::prune(&report, started.elapsed(), cli.json);
    Ok(ExitCode::SUCCESS)
}

async fn unlock(cli: &Cli, config: Config, all: bool) -> Result<ExitCode> {
    let repo = open(cli, config).await?;
    let removed = repo.unlock(all).await?;
    output::message(
        cli.json,
        &format!("removed {} lock(s)", removed.len()),
        serde_json::json!({"removed": removed.iter().map(|l| l.id.to_hex()).collect::<Vec<_>>()}),
    );
    Ok(ExitCode::SUCCESS)
}

async fn diff(cli: &Cli, config: Config, a: &str, b: &str) -> Result<ExitCode> {
    let repo = open(cli, config).await?;
    let ((_, sa), (_, sb)) = (repo.find_snapshot(a)?, repo.find_snapshot(b)?);
    output::diff(&cuckoo::diff(&repo, &sa, &sb).await?, cli.json);
    Ok(ExitCode::SUCCESS)
}

async fn cat(cli: &Cli, config: Config, target: &str, filter: &cuckoo::SnapshotFilter) -> Result<ExitCode> {
    let repo = open(cli, config).await?;
    let (spec, path) = target.split_once(':').context("give SNAPSHOT:PATH")?;
    let (_, snapshot) = repo.find_snapshot_matching(spec, filter)?;
    repo.cat(&snapshot, path, &mut tokio::io::stdout()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn cache(cli: &Cli, config: Config, clear: bool) -> Result<ExitCode> {
    let repo = open(cli, config).await?;
    let Some(cache) = repo.local_cache() else {
        output::message(cli.json, "no local chunk cache (--no-cache or cache_size = 0)", serde_json::json!(null));
        return Ok(ExitCode::SUCCESS);
    };
    cache.flush();
    let freed = if clear { Some(cache.clear()?) } else { None };
    output::cache(cache.dir(), &cache.stats(), freed, cli.json);
    Ok(ExitCode::SUCCESS)
}

async fn tag(
    cli: &Cli,
    config: Config,
    specs: &[String],
    change: &cuckoo::TagChange,
    filter: &cuckoo::SnapshotFilter,
) -> Result<ExitCode> {
    let repo = open(cli, config).await?;
    let chosen = chosen(&repo, specs, filter)?;
    let changed = repo.tag(&chosen, change).await?;
    let lines: Vec<String> = changed.iter().map(|(old, new)| format!("{} -> {}", old.short(), new.short())).collect();
    output::message(
        cli.json,
        &format!(
            "changed the tags of {} of {} snapshots{}{}",
            changed.len(),
            chosen.len(),
            if lines.is_empty() { "" } else { ": " },
            lines.join(", ")
        ),
        serde_json::json!({"changed": changed.iter().map(|(o, n)| serde_json::json!({"old": o.to_hex(), "new": n.to_hex()})).collect::<Vec<_>>()}),
    );
    Ok(ExitCode::SUCCESS)
}

/// The snapshots named by `specs`, or with none, all that pass `filter`.
fn chosen(
    repo: &Repository,
    specs: &[String],
    filter: &cuckoo::SnapshotFilter,
) -> cuckoo::Result<Vec<(cuckoo::ObjectId, cuckoo::model::Snapshot)>> {
    if specs.is_empty() {
        Ok(repo.snapshots()?.into_iter().filter(|(_, s)| filter.matches(s)).collect())
    } else {
        specs.iter().map(|s| repo.find_snapshot_matching(s, filter)).collect()
    }
}

async fn copy(
    cli: &Cli,
    config: Config,
    specs: &[String],
    from_config: &std::path::Path,
    from_passphrase: &secret::Source,
    filter: &cuckoo::SnapshotFilter,
) -> Result<ExitCode> {
    let source_config =
        Config::load(from_config).with_context(|| format!("the source pool's config {}", from_config.display()))?;
    let bar = progress_bar(cli);
    let from = Repository::open(source_config, from_passphrase, &bar)
        .await
        .with_context(|| format!("opening the source pool of {}", from_config.display()))?;
    let repo = open(cli, config).await?;
    interrupt_on_ctrl_c(&repo);
    let chosen = chosen(&from, specs, filter)?;
    let bar = Arc::new(progress_bar(cli));
    let done = repo.copy(&from, &chosen, bar).await?;
    output::copy(&done, &chosen, cli.json);
    Ok(ExitCode::SUCCESS)
}

async fn rewrite(
    cli: &Cli,
    config: Config,
    specs: &[String],
    options: &cuckoo::RewriteOptions,
    filter: &cuckoo::SnapshotFilter,
) -> Result<ExitCode> {
    let repo = open(cli, config).await?;
    let mut chosen = chosen(&repo, specs, filter)?;
    if specs.is_empty() {
        // Chosen by filters only: the live drive's head is the drive's to change.
        chosen.retain(|(_, s)| !s.tags.iter().any(|t| t == cuckoo::fs::DRIVE_HEAD_TAG));
    }
    let done = repo.rewrite(&chosen, options).await?;
    output::rewrite(&done, options.dry_run, cli.json);
    let left_whole = done.iter().any(|r| r.outcome == cuckoo::RewriteOutcome::WouldBeEmpty);
    Ok(if left_whole { ExitCode::from(EXIT_PARTIAL) } else { ExitCode::SUCCESS })
}

async fn dump(
    cli: &Cli,
    config: Config,
    spec: &str,
    format: cuckoo::Archive,
    target: Option<&std::path::Path>,
    filter: &cuckoo::SnapshotFilter,
) -> Result<ExitCode> {
    let (id_spec, path) = spec.split_once(':').unwrap_or((spec, ""));
    let repo = open(cli, config).await?;
    let (_, snapshot) = repo.find_snapshot_matching(id_spec, filter)?;
    let done = match target {
        Some(file) => {
            let out =
                tokio::fs::File::create(file).await.with_context(|| format!("cannot create {}", file.display()))?;
            repo.dump(&snapshot, path, format, out).await?
        }
        None => {
            let is_file = matches!(
                repo.lookup(&snapshot, path.trim_matches('/')).await?,
                Some((cuckoo::model::Node { kind: cuckoo::model::NodeKind::File { .. }, .. }, _))
            );
            if !is_file && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                anyhow::bail!("dump writes an archive: redirect it (`> out.tar`, `| tar t`) or give --target FILE");
            }
            repo.dump(&snapshot, path, format, tokio::io::stdout()).await?
        }
    };
    if done.left_out > 0 {
        // On standard error, so an archive piped out stays an archive.
        output::warning(&format!(
            "{} entries left out: the archive format cannot hold them (sockets; in zip also fifos and devices)",
            done.left_out
        ));
    }
    if target.is_some() {
        output::message(
            cli.json,
            &format!("dumped {} entries, {}", done.entries, output::size(done.bytes)),
            serde_json::to_value(&done).expect("serialisable"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn mount(
    cli: &Cli,
    config: Config,
    mountpoint: PathBuf,
    options: cuckoo::mount::MountOptions,
) -> Result<ExitCode> {
    // Checked before the pool is opened, so a bad mountpoint takes no lock.
    cuckoo::mount::check_mountpoint(&mountpoint, &options).map_err(|e| match e.kind() {
        ErrorKind::DirectoryNotEmpty => anyhow::anyhow!("{e} (`--allow-non-empty`)"),
        _ => e.into(),
    })?;
    let repo = Arc::new(open(cli, config).await?);
    serve_mount(repo, mountpoint, options).await?;
    Ok(ExitCode::SUCCESS)
}

async fn snapshot(cli: &Cli, config: Config, tags: Vec<String>) -> Result<ExitCode> {
    let repo = Arc::new(open(cli, config).await?);
    let rt = tokio::runtime::Handle::current();
    let id = tokio::task::spawn_blocking(move || -> Result<cuckoo::ObjectId> {
        let drive = cuckoo::fs::Drive::open(repo, rt, Default::default())?;
        let id = drive.snapshot(&tags)?;
        drive.close()?;
        Ok(id)
    })
    .await??;
    output::message(
        cli.json,
        &format!("snapshot {} of the drive saved", id.short()),
        serde_json::json!({ "id": id.to_hex() }),
    );
    Ok(ExitCode::SUCCESS)
}

async fn backend(cli: &Cli, config: Config, command: &BackendCommand) -> Result<ExitCode> {
    match command {
        BackendCommand::List => backend_list(cli, config).await,
        BackendCommand::Remove { name } => backend_remove(cli, config, name).await,
        BackendCommand::Set { name, weight, capacity } => backend_set(cli, config, name, *weight, *capacity),
        BackendCommand::Test { name } => {
            let cfg = config
                .backends
                .iter()
                .find(|b| &b.name == name)
                .with_context(|| format!("no backend named '{name}' in {}", config.path.display()))?;
            let report = cuckoo::probe::probe(&cuckoo::backend::Backend::open(cfg)?).await;
            output::probe(&report, cli.json);
            Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        BackendCommand::Add {
            name,
            scheme,
            options,
            weight,
            concurrency,
            limit_upload,
            limit_download,
            requests_per_second,
            capacity,
        } => {
            let limits = config::Limits {
                upload: *limit_upload,
                download: *limit_download,
                requests_per_second: requests_per_second.filter(|r| *r > 0),
            };
            let concurrency = concurrency.unwrap_or_else(|| config::default_concurrency(scheme));
            let backend = BackendConfig {
                name: name.clone(),
                scheme: scheme.clone(),
                weight: *weight,
                concurrency,
                limits,
                capacity: *capacity,
                drain: false,
                options: config::parse_options(name, scheme, options)?,
            };
            backend_add(cli, config, backend).await
        }
    }
}

/// Health comes from each backend directly, so the list still shows when one is down; usage
/// needs the pool open, and is left out (with the reason) when it cannot be.
async fn backend_list(cli: &Cli, config: Config) -> Result<ExitCode> {
    let health = futures::future::join_all(config.backends.iter().map(|cfg| async move {
        match cuckoo::backend::Backend::open(cfg) {
            Ok(backend) => cuckoo::probe::ping(&backend).await,
            Err(e) => Err(e.to_string()),
        }
    }))
    .await;
    let usage = match Repository::open(config.clone(), &passphrase(cli), &progress::Bar::new(true)).await {
        Ok(repo) => Some(repo.usage()?.into_iter().map(|(b, u)| (b.name, u)).collect()),
        Err(e) => {
            output::warning(&format!("usage unknown: {e}"));
            None
        }
    };
    output::backends(&config.backends, usage.as_ref(), &health, cli.json);
    Ok(if health.iter().all(|h| h.is_ok()) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn forget(
    cli: &Cli,
    config: &Config,
    ids: &[String],
    policy: &cuckoo::forget::Policy,
    filter: &cuckoo::SnapshotFilter,
    dry_run: bool,
) -> Result<ExitCode> {
    let repo = open(cli, config.clone()).await?;
    // With a policy, snapshots the filter leaves out are neither kept nor forgotten: not
    // considered. Named snapshots are named whatever the filter (as in restic).
    let all: Vec<_> = repo.snapshots()?.into_iter().filter(|(_, s)| !ids.is_empty() || filter.matches(s)).collect();
    let decisions: Vec<(cuckoo::ObjectId, Vec<String>)> = match (ids.is_empty(), policy.is_empty()) {
        (false, true) => {
            let chosen: Vec<cuckoo::ObjectId> =
                ids.iter().map(|s| repo.find_snapshot(s).map(|(id, _)| id)).collect::<cuckoo::Result<_>>()?;
            all.iter()
                .map(|(id, _)| (*id, if chosen.contains(id) { vec![] } else { vec!["not named".into()] }))
                .collect()
        }
        (true, false) => cuckoo::forget::apply(&all, policy).into_iter().map(|d| (d.id, d.reasons)).collect(),
        (true, true) => anyhow::bail!(
            "nothing to forget: name snapshots, or give a policy (--keep-last, --keep-daily, …); as in restic, \
             a --keep-* of 0 is no policy"
        ),
        (false, false) => {
            anyhow::bail!("name snapshots to forget, or give a policy (--keep-last, --keep-daily, …), not both")
        }
    };
    let gone: Vec<cuckoo::ObjectId> = decisions.iter().filter(|(_, r)| r.is_empty()).map(|(id, _)| *id).collect();
    // Said after it is done: a forget that fails has forgotten nothing and says only that.
    let left = if dry_run { Vec::new() } else { repo.forget(&gone).await? };
    output::forget(&all, &decisions, &left, dry_run, cli.json);
    Ok(ExitCode::SUCCESS)
}

async fn init(cli: &Cli, config: &Config, options: &cuckoo::InitOptions) -> Result<ExitCode> {
    let outcome = cuckoo::init(config, options, &passphrase(cli)).await?;
    let (InitOutcome::Created(record) | InitOutcome::Adopted(record, _)) = &outcome;
    if let Some(note) = cuckoo::placement_note(&config.backends, record.redundancy) {
        output::warning(&note);
    }
    match outcome {
        InitOutcome::Created(record) => output::message(
            cli.json,
            &format!(
                "created pool {} on {} backends, redundancy {} ({}), {}",
                record.pool_id_hex(),
                config.backends.len(),
                record.redundancy,
                match record.redundancy.tolerates() {
                    0 => "a lost backend loses data; choose --redundancy copies=2 to survive one".to_string(),
                    n => format!(
                        "survives {n} lost backend{}, {:.2}x storage",
                        if n == 1 { "" } else { "s" },
                        record.redundancy.overhead()
                    ),
                },
                if options.encrypt {
                    "encrypted (XChaCha20-Poly1305; keep the passphrase: without it the data cannot be read)"
                } else {
                    "unencrypted (--no-encrypt)"
                }
            ),
            serde_json::json!({"pool": record.pool_id_hex(), "created": true, "encrypted": options.encrypt,
                               "redundancy": record.redundancy.to_string()}),
        ),
        InitOutcome::Adopted(record, names) => output::message(
            cli.json,
            &format!("added {} to pool {}", names.join(", "), record.pool_id_hex()),
            serde_json::json!({"pool": record.pool_id_hex(), "added": names}),
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn key(cli: &Cli, config: Config, command: &KeyCommand) -> Result<ExitCode> {
    let repo = open(cli, config).await?;
    if !repo.is_encrypted() {
        anyhow::bail!("the pool is not encrypted: it has no passphrases");
    }
    match command {
        KeyCommand::List => output::keys(&repo.key_slots().await?, cli.json),
        KeyCommand::Add { new_password_file, kdf } => {
            let new = cuckoo::PassphraseSource::passphrase(&new_passphrase(new_password_file), true)?;
            let id = repo.add_key(new, kdf.params()).await?;
            output::message(
                cli.json,
                &format!("added key slot {}", id.short()),
                serde_json::json!({"added": id.to_hex()}),
            );
        }
        KeyCommand::Remove { id } => {
            let id = repo.remove_key(id).await?;
            output::message(
                cli.json,
                &format!("removed key slot {}", id.short()),
                serde_json::json!({"removed": id.to_hex()}),
            );
        }
        KeyCommand::Passwd { new_password_file, kdf } => {
            let new = cuckoo::PassphraseSource::passphrase(&new_passphrase(new_password_file), true)?;
            let id = repo.change_passphrase(new, kdf.params()).await?;
            output::message(
                cli.json,
                &format!("passphrase changed (key slot {})", id.short()),
                serde_json::json!({"changed": id.to_hex()}),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn backend_add(cli: &Cli, mut config: Config, backend: BackendConfig) -> Result<ExitCode> {
    let (name, scheme, weight) = (backend.name.clone(), backend.scheme.clone(), backend.weight);
    let added = cuckoo::membership::add(&mut config, backend, &passphrase(cli)).await?;
    let pool = added.pool.clone().unwrap_or_else(|| "(existing)".to_string());
    if let Some(note) = added.redundancy.and_then(|r| cuckoo::placement_note(&config.backends, r)) {
        output::warning(&note);
    }
    output::message(
        cli.json,
        &format!(
            "added backend '{name}' ({scheme}, weight {weight}) to pool {pool}; new data is placed on it from now on"
        ),
        serde_json::json!({"backend": name, "scheme": scheme, "weight": weight, "pool": pool}),
    );
    Ok(ExitCode::SUCCESS)
}

async fn repair(cli: &Cli, config: Config, options: cuckoo::RepairOptions) -> Result<ExitCode> {
    let repo = open(cli, config).await?;
    interrupt_on_ctrl_c(&repo);
    let bar = progress_bar(cli);
    let report = repo.repair(options, &bar).await?;
    output::repair(&report, options, cli.json);
    Ok(if report.unrecoverable.is_empty() && report.incomplete == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn backend_set(
    cli: &Cli,
    mut config: Config,
    name: &str,
    weight: Option<f64>,
    capacity: Option<u64>,
) -> Result<ExitCode> {
    cuckoo::membership::set(&mut config, name, weight, capacity)?;
    output::message(
        cli.json,
        &format!(
            "backend '{name}' updated; `cuckoo rebalance --dry-run` shows what would move, `cuckoo rebalance` moves it, and `cuckoo stats` each backend's target share (and whether the weights can all be met)"
        ),
        serde_json::json!({"backend": name, "weight": weight, "capacity": capacity}),
    );
    Ok(ExitCode::SUCCESS)
}

/// Drain first (the config says so, so an interrupted removal resumes with `rebalance` or
/// by running this again), then forget the backend once it holds nothing.
async fn backend_remove(cli: &Cli, mut config: Config, name: &str) -> Result<ExitCode> {
    let bar = progress_bar(cli);
    let options = cuckoo::RepairOptions { rebalance: true, read_data: false, dry_run: false };
    match cuckoo::membership::remove(&mut config, name, &passphrase(cli), &bar, ctrl_c_flag()).await? {
        cuckoo::membership::Removed::StillDraining { remaining, report } => {
            output::repair(&report, options, cli.json);
            anyhow::bail!(
                "backend '{name}' still holds {remaining} pieces; it stays in the config, draining: run `cuckoo backend remove {name}` again"
            );
        }
        cuckoo::membership::Removed::Done { report, unlistable } => {
            if let Some(why) = unlistable {
                output::warning(&format!(
                    "'{name}' cannot be listed ({why}); its data was rebuilt from the other backends"
                ));
            }
            output::message(
                cli.json,
                &format!(
                    "moved {} pieces ({}) off '{name}' and removed it from the config; its files can be deleted",
                    report.pieces_deleted,
                    humansize::format_size(report.bytes_deleted, humansize::BINARY)
                ),
                serde_json::json!({"removed": name, "pieces_moved": report.pieces_deleted, "bytes_moved": report.bytes_deleted}),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Mount the drive and wait for an unmount, Ctrl-C or SIGTERM; then commit and release.
async fn serve_mount(repo: Arc<Repository>, mountpoint: PathBuf, options: cuckoo::mount::MountOptions) -> Result<()> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => t.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let drive = cuckoo::fs::Drive::open(repo, rt, Default::default())?;
        let mounted = cuckoo::mount::mount(drive, &mountpoint, &options)?;
        output::note(&format!("drive mounted on {}; unmount or press Ctrl-C to stop", mountpoint.display()));
        mounted.wait(&stop)?;
        output::note("unmounted; every change is committed");
        Ok(())
    })
    .await?
}

fn interrupt_on_ctrl_c(repo: &Repository) {
    stop_on_ctrl_c(repo.interrupt_flag());
}

/// A flag Ctrl-C sets, for work started through a library function.
fn ctrl_c_flag() -> Arc<std::sync::atomic::AtomicBool> {
    let flag = Arc::default();
    stop_on_ctrl_c(Arc::clone(&flag));
    flag
}

fn stop_on_ctrl_c(flag: Arc<std::sync::atomic::AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            output::warning("interrupted; stopping at the next safe point");
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
}
