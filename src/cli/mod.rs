//! Command-line front end: parses arguments, opens the pool, calls the library, prints.
//!
//! Owns: argument syntax, human and `--json` output, progress bars, exit codes. Must not:
//! contain storage logic; everything it does is a library call.

/// `println!` for command output: a reader that goes away (`cuckoo ls latest | head -1`)
/// ends the command quietly, as it ends any Unix tool, instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}

mod output;
mod progress;
mod secret;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use cuckoo::config::{self, BackendConfig, Config};
use cuckoo::{BackupOptions, ErrorKind, InitOutcome, Progress, Repository, RestoreOptions};

/// Exit code of a backup that completed but skipped unreadable entries.
const EXIT_PARTIAL: u8 = 3;
/// Exit code after Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(name = "cuckoo", version, about = "Deduplicated snapshots over a pool of storage backends")]
struct Cli {
    /// Pool config file [default: the user's config dir, cuckoo/config.toml]
    #[arg(long, global = true, env = "CUCKOO_CONFIG")]
    config: Option<PathBuf>,
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    json: bool,
    /// Take no lock for restore and check (for read-only credentials; a concurrent prune may make them fail)
    #[arg(long, global = true)]
    no_lock: bool,
    /// Read the pool's passphrase from this file [otherwise CUCKOO_PASSWORD, or a prompt]
    #[arg(long, global = true, env = "CUCKOO_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Argon2id costs for a new key slot.
#[derive(clap::Args)]
struct KdfArgs {
    /// Memory the passphrase hash uses, in MiB (more slows guessing down)
    #[arg(long, default_value_t = 64)]
    kdf_memory: u32,
    /// Passes of the passphrase hash over its memory
    #[arg(long, default_value_t = 3)]
    kdf_iterations: u32,
}

impl KdfArgs {
    fn params(&self) -> cuckoo::KdfParams {
        cuckoo::KdfParams {
            memory_kib: self.kdf_memory.saturating_mul(1024),
            iterations: self.kdf_iterations,
            parallelism: 1,
        }
    }
}

#[derive(Subcommand)]
enum KeyCommand {
    /// List the key slots
    List,
    /// Add a passphrase that also opens the pool
    Add {
        /// Read the new passphrase from this file [otherwise CUCKOO_NEW_PASSWORD, or a prompt]
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Remove a key slot (not the one whose passphrase was given)
    Remove {
        /// Key slot id or unique prefix, as `key list` shows
        id: String,
    },
    /// Change the passphrase that was given (replaces its key slot)
    Passwd {
        /// Read the new passphrase from this file [otherwise CUCKOO_NEW_PASSWORD, or a prompt]
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Create the pool on every backend of the config (or add new backends to it)
    Init {
        /// Encrypt the pool (the default; asks for a passphrase)
        #[arg(long, conflicts_with = "no_encrypt")]
        encrypt: bool,
        /// Store everything unencrypted (new pools are encrypted unless this is given)
        #[arg(long)]
        no_encrypt: bool,
        #[command(flatten)]
        kdf: KdfArgs,
        /// Redundancy across backends: none, copies=N or erasure=K+M [default: none for one
        /// backend, copies=2 for 2-4, erasure=3+2 for 5, erasure=4+2 for 6 or more]
        #[arg(long, value_parser = parse_scheme)]
        redundancy: Option<cuckoo::Scheme>,
    },
    /// Manage the passphrases (key slots) of an encrypted pool
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Back up files and directories as a new snapshot
    Backup {
        /// Paths to back up
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Label the snapshot (repeatable)
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Compare with this snapshot instead of the latest one of the same paths
        #[arg(long)]
        parent: Option<String>,
        /// Read every file, even those unchanged since the parent snapshot
        #[arg(long)]
        force: bool,
        /// Leave out this path (repeatable)
        #[arg(long)]
        exclude: Vec<PathBuf>,
    },
    /// List snapshots
    Snapshots,
    /// List the entries of a snapshot: SNAPSHOT or SNAPSHOT:PATH
    Ls {
        /// Snapshot id (or prefix, or `latest`), optionally followed by :PATH
        target: String,
    },
    /// Restore a snapshot into a directory
    Restore {
        /// Snapshot id, id prefix, or `latest`
        snapshot: String,
        /// Directory to restore into
        #[arg(long)]
        target: PathBuf,
        /// Restore only this path of the snapshot
        #[arg(long)]
        path: Option<String>,
    },
    /// Show sizes, deduplication and compression of the pool
    Stats,
    /// Verify the pool: every referenced object exists, refcounts agree; optionally read data
    Check {
        /// Download and verify every object
        #[arg(long)]
        read_data: bool,
        /// Download and verify a random part, e.g. 10%
        #[arg(long, value_parser = parse_percent, conflicts_with = "read_data")]
        read_data_subset: Option<f64>,
    },
    /// Forget snapshots, by id or by a retention policy (data goes only by a later prune)
    Forget {
        /// Snapshots to forget (ids or prefixes)
        snapshots: Vec<String>,
        /// Keep the newest N snapshots (per host and paths)
        #[arg(long)]
        keep_last: Option<u32>,
        /// Keep the newest snapshot of each of the last N hours that have one
        #[arg(long)]
        keep_hourly: Option<u32>,
        /// … days
        #[arg(long)]
        keep_daily: Option<u32>,
        /// … ISO weeks
        #[arg(long)]
        keep_weekly: Option<u32>,
        /// … months
        #[arg(long)]
        keep_monthly: Option<u32>,
        /// … years
        #[arg(long)]
        keep_yearly: Option<u32>,
        /// Keep snapshots with this tag (repeatable)
        #[arg(long)]
        keep_tag: Vec<String>,
        /// Only show what would be forgotten
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete the data no snapshot references any more (waits for no one: fails if the pool is in use)
    Prune {
        /// Only show what would be deleted and repacked
        #[arg(long)]
        dry_run: bool,
        /// Repack when chunks still in use hold more unused bytes than this share of the
        /// used ones (snapshots that name repacked chunks get new ids); `unlimited` never
        /// repacks
        #[arg(long, value_parser = parse_max_unused, default_value = "5%")]
        max_unused: f64,
    },
    /// Rebuild missing or corrupt copies and shards from what is left (resumable: run again)
    Repair {
        /// Download and verify every piece, replacing corrupt ones
        #[arg(long)]
        read_data: bool,
        /// Only show what would be done
        #[arg(long)]
        dry_run: bool,
    },
    /// Move pieces to where placement wants them after backends were added, reweighted or
    /// set to drain (also repairs; resumable: run again)
    Rebalance {
        /// Only show what would be moved
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove locks left by processes that died (stale: no refresh for 30 min, or a dead pid here)
    Unlock {
        /// Remove every lock, also ones that look alive
        #[arg(long)]
        all: bool,
    },
    /// Show what changed between two snapshots
    Diff {
        /// The older snapshot
        a: String,
        /// The newer snapshot
        b: String,
    },
    /// Write one file of a snapshot to standard output: SNAPSHOT:PATH
    Cat {
        /// Snapshot id (or prefix, or `latest`), a colon, and the file's path
        target: String,
    },
    /// Mount the live drive read-write (snapshots read-only under MOUNTPOINT/.snapshots/);
    /// runs until unmounted (umount, fusermount3 -u) or Ctrl-C, then commits everything
    Mount {
        /// An existing empty directory
        mountpoint: PathBuf,
        /// Commit changes to the pool every this many seconds (also on fsync and unmount)
        #[arg(long, default_value_t = 30)]
        commit_interval: u64,
        /// Mount even if MOUNTPOINT has entries (they are hidden while mounted)
        #[arg(long)]
        allow_non_empty: bool,
    },
    /// Keep the live drive's current state as a snapshot (while it is not mounted)
    Snapshot {
        /// Label the snapshot (repeatable)
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Manage backends
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
    },
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Add a backend to the config and the pool
    Add {
        /// Unique name (placement depends on it: do not rename later)
        name: String,
        /// OpenDAL scheme: fs, s3, gcs, azblob, webdav, sftp, ftp, gdrive, onedrive, dropbox, memory
        scheme: String,
        /// The scheme's options as key=value (e.g. root=/mnt/disk bucket=b)
        options: Vec<String>,
        /// Share of the data relative to the other backends
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
        /// Most requests in flight to this backend [default: 8 for sftp and ftp, else 16]
        #[arg(long)]
        concurrency: Option<usize>,
        /// Upload bandwidth limit, e.g. 10MiB (per second)
        #[arg(long, value_parser = parse_rate)]
        limit_upload: Option<u64>,
        /// Download bandwidth limit, e.g. 50MiB (per second)
        #[arg(long, value_parser = parse_rate)]
        limit_download: Option<u64>,
        /// Most requests per second to this backend
        #[arg(long)]
        requests_per_second: Option<u64>,
        /// Most bytes it may hold, e.g. 15GiB (placement never fills it past that)
        #[arg(long, value_parser = parse_size)]
        capacity: Option<u64>,
    },
    /// Change a backend's weight or capacity (then `cuckoo rebalance` moves data to match)
    Set {
        /// Backend name from the config
        name: String,
        /// New share of the data relative to the other backends
        #[arg(long)]
        weight: Option<f64>,
        /// Most bytes it may hold, e.g. 15GiB
        #[arg(long, value_parser = parse_size)]
        capacity: Option<u64>,
    },
    /// Move everything off a backend onto the others, then drop it from the config
    Remove {
        /// Backend name from the config
        name: String,
    },
    /// List backends: health, latency, and the objects and bytes stored on each
    List,
    /// Check a backend end to end: write, read back, list and delete a probe object
    Test {
        /// Backend name from the config
        name: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::from(output::EXIT_BROKEN_PIPE);
            }
            eprintln!("cuckoo: {}", one_line(&e));
            match e.downcast_ref::<cuckoo::Error>().map(|e| e.kind()) {
                Some(ErrorKind::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Output went to a reader that stopped reading (`cuckoo cat … | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The error and its causes on one line, without repeating a cause the context already says.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Load the config; with none anywhere, create the embedded default pool and say so.
async fn load_config(cli: &Cli) -> Result<Config> {
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

fn passphrase(cli: &Cli) -> secret::Source {
    secret::Source {
        file: cli.password_file.clone(),
        env: "CUCKOO_PASSWORD",
        flag: "--password-file",
        prompt: "Passphrase of the pool",
    }
}

fn new_passphrase(file: &Option<PathBuf>) -> secret::Source {
    secret::Source {
        file: file.clone(),
        env: "CUCKOO_NEW_PASSWORD",
        flag: "--new-password-file",
        prompt: "New passphrase",
    }
}

async fn open(cli: &Cli, config: Config) -> Result<Repository> {
    let bar = progress::Bar::new(cli.json);
    let repo = Repository::open(config, &passphrase(cli), &bar).await?;
    for (name, why) in repo.unavailable() {
        eprintln!(
            "cuckoo: warning: backend '{name}' is left out ({why}); redundancy {} covers it, `cuckoo repair` restores it",
            repo.pool().redundancy
        );
    }
    repo.set_no_lock(cli.no_lock);
    Ok(repo)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = load_config(&cli).await?;
    match &cli.command {
        Command::Init { no_encrypt, kdf, redundancy, .. } => {
            let options = cuckoo::InitOptions { encrypt: !no_encrypt, kdf: kdf.params(), redundancy: *redundancy };
            init(&cli, &config, &options).await
        }
        Command::Key { command } => key(&cli, config, command).await,
        Command::Backup { paths, tags, parent, force, exclude } => {
            let repo = open(&cli, config).await?;
            let parent = match parent {
                Some(p) => Some(repo.find_snapshot(p)?.0),
                None => None,
            };
            let options = BackupOptions {
                paths: paths.clone(),
                tags: tags.clone(),
                parent,
                force: *force,
                exclude: exclude.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect(),
                hostname: None,
            };
            interrupt_on_ctrl_c(&repo);
            let bar: Arc<dyn Progress> = Arc::new(progress::Bar::new(cli.json));
            let done = repo.backup(options, bar).await?;
            output::backup(&done, cli.json);
            let skipped = done.snapshot.summary.skipped > 0;
            Ok(if skipped { ExitCode::from(EXIT_PARTIAL) } else { ExitCode::SUCCESS })
        }
        Command::Snapshots => {
            let repo = open(&cli, config).await?;
            output::snapshots(&repo.snapshots()?, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { target } => {
            let repo = open(&cli, config).await?;
            let (spec, path) = target.split_once(':').unwrap_or((target.as_str(), ""));
            let (_, snapshot) = repo.find_snapshot(spec)?;
            let mut out = output::Listing::new(cli.json);
            repo.walk(&snapshot, path, &mut |p, node| out.entry(p, node)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { snapshot, target, path } => {
            let repo = open(&cli, config).await?;
            let (id, snap) = repo.find_snapshot(snapshot)?;
            interrupt_on_ctrl_c(&repo);
            let bar: Arc<dyn Progress> = Arc::new(progress::Bar::new(cli.json));
            let options = RestoreOptions { target: target.clone(), path: path.clone() };
            let done = repo.restore(&snap, options, bar).await.with_context(|| format!("restore of {}", id.short()))?;
            output::restore(&id, &done, cli.json);
            if done.failed.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "cuckoo: {} entries could not be restored (listed above); everything else was",
                    done.failed.len()
                );
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Check { read_data, read_data_subset } => {
            let repo = open(&cli, config).await?;
            let fraction = if *read_data { Some(1.0) } else { *read_data_subset };
            let bar = progress::Bar::new(cli.json);
            let report = repo.check(cuckoo::CheckOptions { read_data: fraction }, &bar).await?;
            output::check(&report, cli.json);
            Ok(if report.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
            dry_run,
        } => {
            let policy = cuckoo::forget::Policy {
                last: *keep_last,
                hourly: *keep_hourly,
                daily: *keep_daily,
                weekly: *keep_weekly,
                monthly: *keep_monthly,
                yearly: *keep_yearly,
                tags: keep_tag.clone(),
            };
            forget(&cli, config, snapshots, &policy, *dry_run).await
        }
        Command::Prune { dry_run, max_unused } => {
            let repo = open(&cli, config).await?;
            interrupt_on_ctrl_c(&repo);
            let bar = progress::Bar::new(cli.json);
            let options = cuckoo::PruneOptions { dry_run: *dry_run, max_unused: *max_unused };
            let report = repo.prune(options, &bar).await?;
            output::prune(&report, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Repair { read_data, dry_run } => {
            let options = cuckoo::RepairOptions { rebalance: false, read_data: *read_data, dry_run: *dry_run };
            repair(&cli, config, options).await
        }
        Command::Rebalance { dry_run } => {
            let options = cuckoo::RepairOptions { rebalance: true, read_data: false, dry_run: *dry_run };
            repair(&cli, config, options).await
        }
        Command::Unlock { all } => {
            let repo = open(&cli, config).await?;
            let removed = repo.unlock(*all).await?;
            output::message(
                cli.json,
                &format!("removed {} lock(s)", removed.len()),
                serde_json::json!({"removed": removed.iter().map(|l| l.id.to_hex()).collect::<Vec<_>>()}),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff { a, b } => {
            let repo = open(&cli, config).await?;
            let ((_, sa), (_, sb)) = (repo.find_snapshot(a)?, repo.find_snapshot(b)?);
            output::diff(&cuckoo::diff(&repo, &sa, &sb).await?, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Cat { target } => {
            let repo = open(&cli, config).await?;
            let (spec, path) = target.split_once(':').context("give SNAPSHOT:PATH")?;
            let (_, snapshot) = repo.find_snapshot(spec)?;
            repo.cat(&snapshot, path, &mut tokio::io::stdout()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Mount { mountpoint, commit_interval, allow_non_empty } => {
            let options = cuckoo::mount::MountOptions {
                commit_interval: std::time::Duration::from_secs((*commit_interval).max(1)),
                allow_non_empty: *allow_non_empty,
                ..Default::default()
            };
            cuckoo::mount::check_mountpoint(mountpoint, &options).map_err(|e| match e.kind() {
                ErrorKind::DirectoryNotEmpty => anyhow::anyhow!("{e} (`--allow-non-empty`)"),
                _ => e.into(),
            })?;
            let repo = Arc::new(open(&cli, config).await?);
            mount(repo, mountpoint.clone(), options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot { tags } => {
            let repo = Arc::new(open(&cli, config).await?);
            let rt = tokio::runtime::Handle::current();
            let tags = tags.clone();
            let id = tokio::task::spawn_blocking(move || -> Result<cuckoo::ObjectId> {
                let drive = cuckoo::fs::Drive::open(repo, rt, Default::default())?;
                let id = drive.snapshot(&tags)?;
                drive.close()?;
                Ok(id)
            })
            .await??;
            if cli.json {
                say!("{}", serde_json::json!({ "id": id.to_hex() }));
            } else {
                say!("snapshot {} of the drive saved", id.short());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats => {
            let repo = open(&cli, config).await?;
            output::stats(&repo.stats()?, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Backend { command: BackendCommand::List } => backend_list(&cli, config).await,
        Command::Backend { command: BackendCommand::Remove { name } } => backend_remove(&cli, config, name).await,
        Command::Backend { command: BackendCommand::Set { name, weight, capacity } } => {
            backend_set(&cli, config, name, *weight, *capacity)
        }
        Command::Backend { command: BackendCommand::Test { name } } => {
            let cfg = config
                .backends
                .iter()
                .find(|b| &b.name == name)
                .with_context(|| format!("no backend named '{name}' in {}", config.path.display()))?;
            let report = cuckoo::probe::probe(&cuckoo::backend::Backend::open(cfg)?).await;
            output::probe(&report, cli.json);
            Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Backend {
            command:
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
                },
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
            backend_add(&cli, config, backend).await
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
            eprintln!("cuckoo: usage unknown: {e}");
            None
        }
    };
    output::backends(&config.backends, usage.as_ref(), &health, cli.json);
    Ok(if health.iter().all(|h| h.is_ok()) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn forget(
    cli: &Cli,
    config: Config,
    ids: &[String],
    policy: &cuckoo::forget::Policy,
    dry_run: bool,
) -> Result<ExitCode> {
    let repo = open(cli, config).await?;
    let all = repo.snapshots()?;
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
    output::forget(&all, &decisions, dry_run, cli.json);
    if !dry_run {
        repo.forget(&gone).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn init(cli: &Cli, config: &Config, options: &cuckoo::InitOptions) -> Result<ExitCode> {
    match cuckoo::init(config, options, &passphrase(cli)).await? {
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
    let pool = added.pool.unwrap_or_else(|| "(existing)".to_string());
    output::message(
        cli.json,
        &format!(
            "added backend '{name}' ({scheme}, weight {weight}) to pool {pool}; new data is placed on it from now on"
        ),
        serde_json::json!({"backend": name, "scheme": scheme, "weight": weight, "pool": pool}),
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let n: f64 = text.trim_end_matches('%').parse().map_err(|_| format!("'{text}' is not a percentage"))?;
    if (0.0..=100.0).contains(&n) && n > 0.0 { Ok(n / 100.0) } else { Err(format!("'{text}' is not in (0, 100]")) }
}

fn parse_max_unused(text: &str) -> Result<f64, String> {
    if text == "unlimited" {
        return Ok(f64::INFINITY);
    }
    let n: f64 =
        text.trim_end_matches('%').parse().map_err(|_| format!("'{text}' is not a percentage or 'unlimited'"))?;
    if n >= 0.0 { Ok(n / 100.0) } else { Err(format!("'{text}' is negative")) }
}

fn parse_scheme(text: &str) -> Result<cuckoo::Scheme, String> {
    cuckoo::Scheme::parse(text).map_err(|e| e.context().to_string())
}

async fn repair(cli: &Cli, config: Config, options: cuckoo::RepairOptions) -> Result<ExitCode> {
    let repo = open(cli, config).await?;
    interrupt_on_ctrl_c(&repo);
    let bar = progress::Bar::new(cli.json);
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
            "backend '{name}' updated; `cuckoo rebalance --dry-run` shows what would move, `cuckoo rebalance` moves it"
        ),
        serde_json::json!({"backend": name, "weight": weight, "capacity": capacity}),
    );
    Ok(ExitCode::SUCCESS)
}

/// Drain first (the config says so, so an interrupted removal resumes with `rebalance` or
/// by running this again), then forget the backend once it holds nothing.
async fn backend_remove(cli: &Cli, mut config: Config, name: &str) -> Result<ExitCode> {
    let bar = progress::Bar::new(cli.json);
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

fn parse_size(text: &str) -> Result<u64, String> {
    cuckoo::parse_bytes(text).ok_or_else(|| format!("'{text}' is not a size such as 15GiB"))
}

fn parse_rate(text: &str) -> Result<u64, String> {
    cuckoo::parse_bytes(text).ok_or_else(|| format!("'{text}' is not a rate such as 10MiB"))
}

/// Mount the drive and wait for an unmount, Ctrl-C or SIGTERM; then commit and release.
async fn mount(repo: Arc<Repository>, mountpoint: PathBuf, options: cuckoo::mount::MountOptions) -> Result<()> {
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
        eprintln!("cuckoo: drive mounted on {}; unmount or press Ctrl-C to stop", mountpoint.display());
        mounted.wait(&stop)?;
        eprintln!("cuckoo: unmounted; every change is committed");
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
