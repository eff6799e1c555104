//! The command line's syntax: every command, flag and value parser (clap).
//!
//! Owns: what can be typed and its help text. Must not: run anything.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cuckoo", version, about = "Deduplicated snapshots over a pool of storage backends")]
pub struct Cli {
    /// Pool config file [default: the user's config dir, cuckoo/config.toml]
    #[arg(long, global = true, env = "CUCKOO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// Draw no progress (results, warnings and errors are still printed)
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Say more: -v which parent a backup compares with and where a restore goes; -vv also
    /// every file (new, modified, unchanged; restored). Not with --json
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Take no lock for restore and check (for read-only credentials; a concurrent prune may make them fail)
    #[arg(long, global = true)]
    pub no_lock: bool,
    /// Read the pool's passphrase from this file [otherwise CUCKOO_PASSWORD, or a prompt]
    #[arg(long, global = true, env = "CUCKOO_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Take the pool's passphrase from what this shell command prints (a password manager)
    #[arg(long, global = true, env = "CUCKOO_PASSWORD_COMMAND", conflicts_with = "password_file")]
    pub password_command: Option<String>,
    /// Limit uploads of the whole pool (all backends together) to RATE, on top of each
    /// backend's limit: KiB/s as a bare number (as restic's), or with a unit (`10MiB`)
    #[arg(long, global = true, value_name = "RATE", value_parser = parse_restic_rate)]
    pub limit_upload: Option<u64>,
    /// Limit downloads of the whole pool to RATE (as --limit-upload)
    #[arg(long, global = true, value_name = "RATE", value_parser = parse_restic_rate)]
    pub limit_download: Option<u64>,
    /// Keep the local chunk cache under DIR (one folder per pool) [default: cache_dir in the
    /// config, else the user's cache dir, cuckoo/]
    #[arg(long, global = true, value_name = "DIR", env = "CUCKOO_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Bound the local chunk cache to SIZE, e.g. 5GiB [default: cache_size in the config,
    /// else a tenth of the free space, at most 20GiB]
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_cache_size)]
    pub cache_size: Option<u64>,
    /// Use no local chunk cache: every read goes to the backends
    #[arg(long, global = true, conflicts_with = "cache_size")]
    pub no_cache: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// A rate in bytes per second from `10MiB`, `500k` or, as restic reads it, a bare number
/// of KiB/s.
fn parse_restic_rate(s: &str) -> Result<u64, String> {
    let bare = s.trim().chars().all(|c| c.is_ascii_digit());
    let rate = if bare { s.trim().parse::<u64>().ok().map(|k| k.saturating_mul(1024)) } else { cuckoo::parse_bytes(s) };
    rate.filter(|r| *r > 0).ok_or_else(|| format!("'{s}': give a rate such as 10MiB, 500k or, in KiB/s, 2048"))
}

/// Argon2id costs for a new key slot.
#[derive(clap::Args)]
pub struct KdfArgs {
    /// Memory the passphrase hash uses, in MiB (more slows guessing down)
    #[arg(long, default_value_t = 64)]
    pub kdf_memory: u32,
    /// Passes of the passphrase hash over its memory
    #[arg(long, default_value_t = 3)]
    pub kdf_iterations: u32,
}

impl KdfArgs {
    pub fn params(&self) -> cuckoo::KdfParams {
        cuckoo::KdfParams {
            memory_kib: self.kdf_memory.saturating_mul(1024),
            iterations: self.kdf_iterations,
            parallelism: 1,
        }
    }
}

#[derive(Subcommand)]
pub enum KeyCommand {
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
pub enum Command {
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
        #[arg(required_unless_present_any = ["files_from", "files_from_verbatim", "files_from_raw", "stdin"])]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        record: Record,
        #[command(flatten)]
        select: Select,
    },
    /// List snapshots
    Snapshots {
        #[command(flatten)]
        which: Which,
        /// Only snapshots holding PATH among their paths (repeatable: all of them)
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Only the newest N snapshots of each host and set of paths
        #[arg(long, value_name = "N")]
        latest: Option<usize>,
    },
    /// List the entries of a snapshot: SNAPSHOT or SNAPSHOT:PATH
    Ls {
        /// Snapshot id (or prefix, or `latest`), optionally followed by :PATH
        target: String,
        #[command(flatten)]
        which: Which,
        /// With `latest`: the newest snapshot holding PATH (repeatable: all of them)
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Find which snapshots hold entries matching PATTERN (a name, or with a `/` a path)
    Find {
        /// Patterns: `*.pdf`, `notes.txt`, `home/*/todo.md` (with a `/`: the path in the snapshot)
        #[arg(required = true)]
        patterns: Vec<String>,
        /// Only in this snapshot (id, prefix or `latest`; repeatable)
        #[arg(long = "snapshot", short = 's', value_name = "ID")]
        snapshots: Vec<String>,
        #[command(flatten)]
        which: Which,
        /// Only snapshots holding PATH among their paths (repeatable: all of them)
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Only entries modified at or after this time (2026-12-01, "2026-12-01 14:00" or RFC 3339)
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        newer: Option<i64>,
        /// Only entries modified at or before this time
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        older: Option<i64>,
        /// Match ignoring case
        #[arg(long, short = 'i')]
        ignore_case: bool,
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
        /// Then read every restored file back and compare it with the snapshot
        #[arg(long)]
        verify: bool,
        /// What to do with entries the target already has: always, if-changed (files of the
        /// same size and mtime, and same symlinks, are left) or never
        #[arg(long, default_value = "always", value_name = "WHEN")]
        overwrite: cuckoo::Overwrite,
        /// Remove what the target holds that the snapshot does not (the target becomes the
        /// snapshot; not with --include/--exclude)
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        select: EntryPatterns,
        #[command(flatten)]
        which: Which,
    },
    /// Show sizes, deduplication and compression of the pool
    Stats,
    /// Show the local chunk cache of this pool (where, how full), or empty it
    Cache {
        /// Remove every chunk it holds (they are fetched from the backends when read again)
        #[arg(long)]
        clear: bool,
    },
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
        /// Keep every snapshot made within this duration of the newest (e.g. 7d, 1y6m, 12h)
        #[arg(long, value_name = "DURATION")]
        keep_within: Option<cuckoo::forget::Span>,
        /// Keep the newest snapshot of each hour within this duration of the newest
        #[arg(long, value_name = "DURATION")]
        keep_within_hourly: Option<cuckoo::forget::Span>,
        /// … of each day
        #[arg(long, value_name = "DURATION")]
        keep_within_daily: Option<cuckoo::forget::Span>,
        /// … of each ISO week
        #[arg(long, value_name = "DURATION")]
        keep_within_weekly: Option<cuckoo::forget::Span>,
        /// … of each month
        #[arg(long, value_name = "DURATION")]
        keep_within_monthly: Option<cuckoo::forget::Span>,
        /// … of each year
        #[arg(long, value_name = "DURATION")]
        keep_within_yearly: Option<cuckoo::forget::Span>,
        /// Apply the policy to groups of snapshots with the same host, paths and/or tags
        #[arg(long, short = 'g', value_name = "host,paths,tags", default_value = "host,paths")]
        group_by: cuckoo::forget::GroupBy,
        /// Only show what would be forgotten
        #[arg(long)]
        dry_run: bool,
        /// Then delete the data no snapshot references any more (as `cuckoo prune`)
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        which: Which,
        /// Only snapshots holding PATH among their paths (repeatable: all of them)
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<PathBuf>,
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
        #[command(flatten)]
        which: Which,
        /// With `latest`: the newest snapshot holding PATH (repeatable: all of them)
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Change the tags of snapshots (all the filters pass, if no id is given)
    Tag {
        /// Snapshots (ids or prefixes, or `latest`)
        snapshots: Vec<String>,
        /// Add this tag (repeatable, or comma-separated)
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        /// Remove this tag (repeatable, or comma-separated)
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
        /// Replace all tags by these (repeatable, or comma-separated; `--set ''` clears them)
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        set: Option<Vec<String>>,
        #[command(flatten)]
        which: Which,
        /// Only snapshots of this path (repeatable)
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Copy snapshots from another pool into this one (all the filters pass, if no id is
    /// given); files are chunked afresh for this pool, so what it holds is not stored again,
    /// and snapshots it has already are skipped
    Copy {
        /// Snapshots of the source pool (ids or prefixes, or `latest`)
        snapshots: Vec<String>,
        /// The source pool's config file
        #[arg(long, value_name = "FILE")]
        from_config: PathBuf,
        /// Read the source pool's passphrase from FILE (else CUCKOO_FROM_PASSWORD, or a prompt)
        #[arg(long, value_name = "FILE", env = "CUCKOO_FROM_PASSWORD_FILE")]
        from_password_file: Option<PathBuf>,
        /// Run CMD for the source pool's passphrase
        #[arg(long, value_name = "CMD", env = "CUCKOO_FROM_PASSWORD_COMMAND", conflicts_with = "from_password_file")]
        from_password_command: Option<String>,
        #[command(flatten)]
        which: Which,
        /// Only snapshots of this path (repeatable)
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Write new snapshots without entries matching --exclude (or with only those matching
    /// --include); all the filters pass, if no id is given. The new ones keep time, host,
    /// paths and tags, and gain the tag `rewrite` unless --forget removes the originals
    Rewrite {
        /// Snapshots (ids or prefixes, or `latest`)
        snapshots: Vec<String>,
        #[command(flatten)]
        select: EntryPatterns,
        /// Forget each original once its new snapshot is written (data goes by a later prune)
        #[arg(long)]
        forget: bool,
        /// Only show what would be dropped
        #[arg(long, short = 'n')]
        dry_run: bool,
        #[command(flatten)]
        which: Which,
        /// Only snapshots of this path (repeatable)
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Write a file of a snapshot as itself, or a directory (or everything) as a tar archive
    Dump {
        /// Snapshot id (or prefix, or `latest`), a colon, and a path (empty or `/`: everything)
        spec: String,
        /// Archive format for directories: tar (modes, owners, ns mtimes, links, devices,
        /// extended attributes) or zip (modes, mtimes, symlinks; hard links as copies)
        #[arg(long, default_value = "tar", value_name = "tar|zip")]
        archive: cuckoo::Archive,
        /// Write to FILE instead of standard output
        #[arg(long, short = 't', value_name = "FILE")]
        target: Option<PathBuf>,
        #[command(flatten)]
        which: Which,
        /// With `latest`: the newest snapshot holding PATH (repeatable: all of them)
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<PathBuf>,
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
    /// Print the version of cuckoo, of the formats it writes, and the platform
    Version,
    /// Write shell completions and man pages (FILE `-` is standard output)
    #[command(arg_required_else_help = true)]
    Generate {
        /// Bash completion script
        #[arg(long, value_name = "FILE")]
        bash_completion: Option<PathBuf>,
        /// Zsh completion script
        #[arg(long, value_name = "FILE")]
        zsh_completion: Option<PathBuf>,
        /// Fish completion script
        #[arg(long, value_name = "FILE")]
        fish_completion: Option<PathBuf>,
        /// PowerShell completion script
        #[arg(long, value_name = "FILE")]
        powershell_completion: Option<PathBuf>,
        /// Man pages, one per command, into DIR
        #[arg(long, value_name = "DIR")]
        man: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum BackendCommand {
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

/// Which snapshots a command considers (restic's filters; with an id, they are not needed).
#[derive(clap::Args, Debug, Default)]
pub struct Which {
    /// Only snapshots taken on HOST (repeatable: any of them)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with every tag of TAG[,TAG…] (repeatable: any of the sets)
    #[arg(long = "tag", value_name = "TAG[,TAG…]")]
    pub tags: Vec<String>,
}

/// What a backup reads besides paths, what it records about itself, and what it compares
/// with.
#[derive(clap::Args, Debug, Default)]
pub struct Record {
    /// Label the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Compare with this snapshot instead of the latest one of the same paths
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot
    #[arg(long)]
    pub force: bool,
    /// Tell unchanged files without their ctime (file systems that do not keep it)
    #[arg(long)]
    pub ignore_ctime: bool,
    /// Tell unchanged files without their inode number (FUSE and network mounts)
    #[arg(long)]
    pub ignore_inode: bool,
    /// Read and compress everything, store nothing: say what the backup would add
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Back up standard input, to its end, as one file (a database dump piped in)
    #[arg(long, conflicts_with_all = ["paths", "files_from", "files_from_verbatim", "files_from_raw"])]
    pub stdin: bool,
    /// The name of the file --stdin makes (the snapshot's path is /NAME)
    #[arg(long, default_value = "stdin", requires = "stdin", value_name = "NAME")]
    pub stdin_filename: String,
    /// Record this host name instead of this machine's (it picks the parent snapshot too)
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Record this time instead of now (local time unless it says its offset)
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub time: Option<i64>,
}

/// Which entries a restore writes or a rewrite keeps (restic's flags); patterns are matched
/// against the paths the entries were backed up from, in backup's syntax.
#[derive(clap::Args, Debug, Default)]
pub struct EntryPatterns {
    /// Only entries matching PATTERN, and what is below a matching directory
    /// (repeatable; e.g. `*.conf`, `/home/u/src`)
    #[arg(long, short = 'i', value_name = "PATTERN")]
    pub include: Vec<String>,
    /// Like --include, ignoring case
    #[arg(long, value_name = "PATTERN")]
    pub iinclude: Vec<String>,
    /// Read include patterns from FILE, one per line
    #[arg(long, value_name = "FILE")]
    pub include_file: Vec<PathBuf>,
    /// Like --include-file, ignoring case
    #[arg(long, value_name = "FILE")]
    pub iinclude_file: Vec<PathBuf>,
    #[command(flatten)]
    pub excludes: Excludes,
}

/// Exclude patterns, one syntax for backup, restore and rewrite (restic's flags).
#[derive(clap::Args, Debug, Default)]
pub struct Excludes {
    /// Leave out entries matching PATTERN, and what is below them (repeatable): `*.pyc` and
    /// `cache` at any depth, `/abs/path` anchored, `**` across directories, `dir/`
    /// directories only, `!keep` to include again
    #[arg(long, short = 'e', value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Like --exclude, ignoring case
    #[arg(long, value_name = "PATTERN")]
    pub iexclude: Vec<String>,
    /// Read exclude patterns from FILE, one per line (`#` comments, $VAR expanded)
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Like --exclude-file, ignoring case
    #[arg(long, value_name = "FILE")]
    pub iexclude_file: Vec<PathBuf>,
}

impl EntryPatterns {
    /// As the library takes it.
    pub fn to_select(&self) -> cuckoo::Select {
        cuckoo::Select {
            include: self.include.clone(),
            iinclude: self.iinclude.clone(),
            include_files: self.include_file.clone(),
            iinclude_files: self.iinclude_file.clone(),
            exclude: self.excludes.exclude.clone(),
            iexclude: self.excludes.iexclude.clone(),
            exclude_files: self.excludes.exclude_file.clone(),
            iexclude_files: self.excludes.iexclude_file.clone(),
        }
    }
}

/// What a backup takes and leaves out (restic's flags).
#[derive(clap::Args, Debug, Default)]
pub struct Select {
    #[command(flatten)]
    pub excludes: Excludes,
    /// Leave out directories holding a file NAME (with :HEADER, only if it starts so)
    #[arg(long, value_name = "NAME[:HEADER]")]
    pub exclude_if_present: Vec<String>,
    /// Leave out directories marked as caches by a CACHEDIR.TAG file
    #[arg(long)]
    pub exclude_caches: bool,
    /// Leave out files larger than SIZE (e.g. 1GiB)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub exclude_larger_than: Option<u64>,
    /// Do not cross into other file systems (their mount points are kept, empty)
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Back up the paths listed in FILE, one per line (blank lines and `#` comments skipped)
    #[arg(long, value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Like --files-from, every line a path as it is
    #[arg(long, value_name = "FILE")]
    pub files_from_verbatim: Vec<PathBuf>,
    /// Back up the paths listed in FILE, separated by NUL bytes (`find -print0`)
    #[arg(long, value_name = "FILE")]
    pub files_from_raw: Vec<PathBuf>,
}

/// A time as people write it, in local time unless it says its offset; ns since the epoch.
fn parse_time(text: &str) -> Result<i64, String> {
    use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone};
    let local = |naive: NaiveDateTime| Local.from_local_datetime(&naive).earliest();
    let at = DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Local))
        .or_else(|| {
            ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
                .and_then(local)
        })
        .or_else(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().and_then(|d| local(d.and_hms_opt(0, 0, 0)?)));
    at.and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| format!("'{text}' is not a time such as 2026-12-01, \"2026-12-01 14:00\" or RFC 3339"))
}

fn parse_size(text: &str) -> Result<u64, String> {
    cuckoo::parse_bytes(text).ok_or_else(|| format!("'{text}' is not a size such as 15GiB"))
}

fn parse_cache_size(text: &str) -> Result<u64, String> {
    match text.trim() {
        "0" => Ok(0),
        _ => parse_size(text),
    }
}

fn parse_rate(text: &str) -> Result<u64, String> {
    cuckoo::parse_bytes(text).ok_or_else(|| format!("'{text}' is not a rate such as 10MiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn a_bare_global_rate_is_kib_per_second_as_in_restic() {
        assert_eq!(parse_restic_rate("2048"), Ok(2 << 20));
        assert_eq!(parse_restic_rate("10MiB"), Ok(10 << 20));
        assert!(parse_restic_rate("0").is_err() && parse_restic_rate("fast").is_err());
    }
}
