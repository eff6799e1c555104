//! The pool description: a TOML file with one `[[backend]]` table per storage place.
//!
//! Owns: parsing and validating the file, default locations, the embedded default pool, and
//! editing the file (`backend add`) without losing the user's comments. Must not: open
//! backends or touch the catalogue.
//!
//! ```toml
//! catalogue = "/var/lib/cuckoo/catalogue.redb"   # optional
//! compression = 3                                 # optional zstd level, 0 = off
//! cache_dir = "/var/cache/cuckoo"                 # optional local chunk cache location
//! cache_size = "5GiB"                             # optional bound, 0 = no local cache
//!
//! [[backend]]
//! name = "disk-a"
//! scheme = "fs"          # any OpenDAL scheme compiled in
//! weight = 2             # optional, default 1: share of the data
//! root = "/mnt/a"        # every other key goes to OpenDAL as the scheme's option
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Keys of a `[[backend]]` table that cuckoo reads itself; all others go to OpenDAL.
const OWN_KEYS: [&str; 9] = [
    "name",
    "scheme",
    "weight",
    "concurrency",
    "limit_upload",
    "limit_download",
    "requests_per_second",
    "capacity",
    "drain",
];

/// The option names a scheme's OpenDAL service reads (its config struct's fields), so that
/// a misspelt option is an error rather than a setting silently ignored. `None` where the
/// names cannot be known.
fn scheme_options(scheme: &str) -> Option<&'static [&'static str]> {
    use opendal::services::*;
    match scheme {
        "fs" => field_names::<FsConfig>(),
        "memory" => field_names::<MemoryConfig>(),
        "s3" => field_names::<S3Config>(),
        "gcs" => field_names::<GcsConfig>(),
        "azblob" => field_names::<AzblobConfig>(),
        "webdav" => field_names::<WebdavConfig>(),
        "sftp" => field_names::<SftpConfig>(),
        "ftp" => field_names::<FtpConfig>(),
        "gdrive" => field_names::<GdriveConfig>(),
        "onedrive" => field_names::<OnedriveConfig>(),
        "dropbox" => field_names::<DropboxConfig>(),
        _ => None,
    }
}

/// The field names a derived `Deserialize` struct announces: serde hands them to the
/// deserializer, which here only records them.
fn field_names<T: serde::de::DeserializeOwned>() -> Option<&'static [&'static str]> {
    struct Fields(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names recorded")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> std::result::Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields.0
}

/// Refuse options the scheme does not have, naming the nearest valid key.
pub fn check_options<'a>(name: &str, scheme: &str, keys: impl IntoIterator<Item = &'a String>) -> Result<()> {
    let Some(known) = scheme_options(scheme) else { return Ok(()) };
    for key in keys {
        if known.contains(&key.as_str()) {
            continue;
        }
        let nearest = known
            .iter()
            .chain(OWN_KEYS.iter())
            .map(|k| (strsim::damerau_levenshtein(key, k), *k))
            .filter(|(d, _)| *d <= 2)
            .min();
        let hint = match nearest {
            Some((_, k)) => format!("; did you mean '{k}'?"),
            None => format!("; {scheme} takes {}, and every backend takes {}", known.join(", "), OWN_KEYS.join(", ")),
        };
        return Err(Error::config(format!("backend '{name}': unknown option '{key}'{hint}")));
    }
    Ok(())
}

/// The OpenDAL schemes this build compiles in.
pub const SCHEMES: [&str; 11] =
    ["fs", "memory", "s3", "gcs", "azblob", "webdav", "sftp", "ftp", "gdrive", "onedrive", "dropbox"];

/// One storage place.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Unique, stable name: placement hashes it, so renaming moves data.
    pub name: String,
    /// OpenDAL scheme.
    pub scheme: String,
    /// Relative share of the data this backend gets.
    pub weight: f64,
    /// Most requests in flight to this backend at once.
    pub concurrency: usize,
    /// Rate limits; none by default.
    pub limits: Limits,
    /// Bytes this backend may hold at most; placement never fills it past that.
    pub capacity: Option<u64>,
    /// Being emptied (`backend remove`): receives nothing new, its objects move away.
    pub drain: bool,
    /// The scheme's own options, as strings.
    pub options: BTreeMap<String, String>,
}

impl BackendConfig {
    /// The local directory a backend keeps its objects in, for the schemes that store on
    /// this machine's file system (`fs`); `None` for services.
    pub fn local_root(&self) -> Option<PathBuf> {
        match self.scheme.as_str() {
            "fs" => self.options.get("root").map(|r| std::path::absolute(r).unwrap_or_else(|_| PathBuf::from(r))),
            _ => None,
        }
    }
}

/// Per-backend rate limits (bytes per second, requests per second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Upload bandwidth.
    pub upload: Option<u64>,
    /// Download bandwidth.
    pub download: Option<u64>,
    /// Requests of any kind.
    pub requests_per_second: Option<u64>,
}

/// The whole pool description.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the file was read from (or will be written).
    pub path: PathBuf,
    /// Catalogue file, if set; otherwise a per-pool file in the data dir.
    pub catalogue: Option<PathBuf>,
    /// zstd level for new objects.
    pub compression: i32,
    /// Backends, in file order.
    pub backends: Vec<BackendConfig>,
    /// Bandwidth limits of the whole pool, shared by all its backends, on top of each
    /// backend's own (top-level `limit_upload` / `limit_download`, or the global
    /// `--limit-upload` / `--limit-download`). `requests_per_second` is per backend only.
    pub limits: Limits,
    /// The local chunk cache (top-level `cache_dir`, `cache_size`; `--cache-dir`,
    /// `--cache-size`, `--no-cache`).
    pub cache: CacheSettings,
}

/// Where the local chunk cache lives and how large it may grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheSettings {
    /// The directory holding one cache per pool; `None` for the user's cache directory
    /// (`$XDG_CACHE_HOME/cuckoo`).
    pub dir: Option<PathBuf>,
    /// Its bound in bytes: `None` for a tenth of the free space there (at most 20 GiB),
    /// `Some(0)` for no local cache.
    pub size: Option<u64>,
}

impl CacheSettings {
    /// The cache directory of pool `pool_id_hex`, unless the cache is off.
    pub fn dir_of(&self, pool_id_hex: &str) -> Result<Option<PathBuf>> {
        if self.size == Some(0) {
            return Ok(None);
        }
        let root = match &self.dir {
            Some(d) => d.clone(),
            None => dirs::cache_dir().map(|d| d.join("cuckoo")).ok_or_else(|| {
                Error::config("cannot find the user's cache directory; set XDG_CACHE_HOME, cache_dir or --no-cache")
            })?,
        };
        Ok(Some(root.join(pool_id_hex)))
    }
}

/// Default zstd level: level 3 stores text ~25% smaller than level 1 for ~15% more CPU.
pub const DEFAULT_COMPRESSION: i32 = 3;
/// Default requests in flight per backend.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Default requests in flight for `scheme`. OpenDAL opens one SSH or FTP connection per
/// request in flight, and stock servers refuse many at once (OpenSSH drops unauthenticated
/// connections beyond `MaxStartups` 10), so those get fewer.
pub fn default_concurrency(scheme: &str) -> usize {
    match scheme {
        "sftp" | "ftp" => 8,
        _ => DEFAULT_CONCURRENCY,
    }
}

impl Config {
    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read config {}", path.display()), e))?;
        Self::parse(path, &text)
    }

    /// Parse config text; `path` is only used in messages and for relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let bad = |msg: String| Error::config(format!("config {}: {msg}", path.display()));
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e.span().map(|s| line_col(text, s.start)).map(|(l, c)| format!("line {l}, column {c}: "));
            bad(format!("{}{}", at.unwrap_or_default(), e.message().trim_end()))
        })?;
        let mut config = Config {
            path: path.to_path_buf(),
            catalogue: None,
            compression: DEFAULT_COMPRESSION,
            backends: vec![],
            limits: Limits::default(),
            cache: CacheSettings::default(),
        };
        for (key, value) in &table {
            match (key.as_str(), value) {
                ("catalogue", toml::Value::String(s)) => config.catalogue = Some(PathBuf::from(s)),
                ("compression", toml::Value::Integer(n)) if (0..=22).contains(n) => config.compression = *n as i32,
                ("limit_upload", v) => config.limits.upload = Some(pool_rate(key, v).map_err(&bad)?),
                ("limit_download", v) => config.limits.download = Some(pool_rate(key, v).map_err(&bad)?),
                ("cache_dir", toml::Value::String(s)) if !s.is_empty() => config.cache.dir = Some(PathBuf::from(s)),
                ("cache_size", v) => config.cache.size = Some(cache_size(v).map_err(&bad)?),
                ("backend", toml::Value::Array(items)) => {
                    for item in items {
                        let t = item.as_table().ok_or_else(|| bad("[[backend]] must be a table".into()))?;
                        config.backends.push(parse_backend(t, text).map_err(&bad)?);
                    }
                }
                (k, v) => return Err(bad(format!("unexpected key '{k}' = {v}"))),
            }
        }
        config.validate().map_err(|e| bad(e.context().to_string()))?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.backends.is_empty() {
            return Err(Error::config("no [[backend]] tables: a pool needs at least one"));
        }
        let mut seen = std::collections::HashSet::new();
        for b in &self.backends {
            if !seen.insert(b.name.as_str()) {
                return Err(Error::config(format!("backend name '{}' is used twice", b.name)));
            }
        }
        Ok(())
    }

    /// The text of a config with `backends` (used for new files).
    pub fn render(catalogue: Option<&Path>, backends: &[BackendConfig]) -> String {
        let mut doc = toml_edit::DocumentMut::new();
        if let Some(c) = catalogue {
            doc["catalogue"] = toml_edit::value(c.display().to_string());
        }
        let mut text = doc.to_string();
        for b in backends {
            text.push('\n');
            text.push_str(&render_backend(b));
        }
        text
    }

    /// Append a backend to the file at `self.path`, keeping everything else as written.
    pub fn append_backend(&mut self, backend: BackendConfig) -> Result<()> {
        if self.backends.iter().any(|b| b.name == backend.name) {
            return Err(Error::new(
                crate::ErrorKind::AlreadyExists,
                format!("a backend named '{}' already exists", backend.name),
            ));
        }
        let mut text = std::fs::read_to_string(&self.path)
            .map_err(|e| Error::io(format!("cannot read config {}", self.path.display()), e))?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&render_backend(&backend));
        // Check the result parses before replacing the user's file.
        Config::parse(&self.path, &text)?;
        write_atomically(&self.path, text.as_bytes())?;
        self.backends.push(backend);
        Ok(())
    }
}

impl Config {
    /// Rewrite the file at `self.path` with `edit` applied to the `[[backend]]` table named
    /// `name` (the table is removed when `edit` returns false), keeping everything else as
    /// the user wrote it.
    pub fn edit_backend(&mut self, name: &str, edit: impl FnOnce(&mut toml_edit::Table) -> bool) -> Result<()> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| Error::io(format!("cannot read config {}", self.path.display()), e))?;
        let mut doc: toml_edit::DocumentMut =
            text.parse().map_err(|e| Error::config(format!("config {}: {e}", self.path.display())))?;
        let tables = doc
            .get_mut("backend")
            .and_then(|b| b.as_array_of_tables_mut())
            .ok_or_else(|| Error::config(format!("config {} has no [[backend]] tables", self.path.display())))?;
        let index = tables
            .iter()
            .position(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
            .ok_or_else(|| Error::not_found(format!("no backend named '{name}' in {}", self.path.display())))?;
        let keep = edit(tables.get_mut(index).expect("found"));
        if !keep {
            tables.remove(index);
        }
        let text = doc.to_string();
        // Check the result parses before replacing the user's file.
        let parsed = Config::parse(&self.path, &text)?;
        write_atomically(&self.path, text.as_bytes())?;
        self.backends = parsed.backends;
        Ok(())
    }
}

fn render_backend(b: &BackendConfig) -> String {
    let mut t = toml_edit::Table::new();
    t["name"] = toml_edit::value(&b.name);
    t["scheme"] = toml_edit::value(&b.scheme);
    if b.weight != 1.0 {
        t["weight"] = toml_edit::value(b.weight);
    }
    if b.concurrency != default_concurrency(&b.scheme) {
        t["concurrency"] = toml_edit::value(b.concurrency as i64);
    }
    let l = b.limits;
    for (key, v) in [
        ("limit_upload", l.upload),
        ("limit_download", l.download),
        ("requests_per_second", l.requests_per_second),
        ("capacity", b.capacity),
    ] {
        if let Some(v) = v {
            t[key] = toml_edit::value(v as i64);
        }
    }
    if b.drain {
        t["drain"] = toml_edit::value(true);
    }
    for (k, v) in &b.options {
        t[k.as_str()] = toml_edit::value(v);
    }
    let mut doc = toml_edit::DocumentMut::new();
    let mut array = toml_edit::ArrayOfTables::new();
    array.push(t);
    doc["backend"] = toml_edit::Item::ArrayOfTables(array);
    doc.to_string()
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The line of `key = …` in the `[[backend]]` table named `name`, for messages.
fn line_of_key(text: &str, name: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let named = |l: &str| {
        l.split_once('=').is_some_and(|(k, v)| k.trim() == "name" && v.trim().trim_matches(['"', '\'']) == name)
    };
    let at = lines.iter().position(|l| named(l))?;
    // The table starts at the `[[backend]]` above its name and ends at the next one.
    let start = lines[..at].iter().rposition(|l| l.trim() == "[[backend]]").unwrap_or(0);
    let end = lines[start + 1..].iter().position(|l| l.trim().starts_with('[')).map_or(lines.len(), |i| start + 1 + i);
    (start..end).find(|&i| lines[i].split_once('=').is_some_and(|(k, _)| k.trim() == key)).map(|i| i + 1)
}

/// A top-level rate: bytes per second, as a number or a string such as "10MiB".
fn pool_rate(key: &str, v: &toml::Value) -> std::result::Result<u64, String> {
    match v {
        toml::Value::Integer(n) if *n > 0 => Ok(*n as u64),
        toml::Value::String(s) => {
            crate::limit::parse_bytes(s).ok_or_else(|| format!("{key} must be a rate such as \"10MiB\", got \"{s}\""))
        }
        v => Err(format!("{key} must be a positive rate, got {v}")),
    }
}

/// The cache's bound: bytes, as a number or a string such as "5GiB"; 0 turns it off.
fn cache_size(v: &toml::Value) -> std::result::Result<u64, String> {
    match v {
        toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        toml::Value::String(s) => crate::limit::parse_bytes(s)
            .or((s.trim() == "0").then_some(0))
            .ok_or_else(|| format!("cache_size must be a size such as \"5GiB\" (0 for no cache), got \"{s}\"")),
        v => Err(format!("cache_size must be a size such as \"5GiB\" (0 for no cache), got {v}")),
    }
}

fn parse_backend(t: &toml::Table, text: &str) -> std::result::Result<BackendConfig, String> {
    let string = |k: &str| match t.get(k) {
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("backend '{k}' must be a non-empty string")),
        None => Err(format!("a [[backend]] table lacks '{k}'")),
    };
    let name = string("name")?;
    let scheme = string("scheme")?;
    if !SCHEMES.contains(&scheme.as_str()) {
        return Err(format!("backend '{name}': unknown scheme '{scheme}' (this build knows {})", SCHEMES.join(", ")));
    }
    let weight = match t.get("weight") {
        None => 1.0,
        Some(toml::Value::Integer(n)) => *n as f64,
        Some(toml::Value::Float(f)) => *f,
        Some(v) => {
            return Err(format!("backend '{name}': weight must be a number, got {v}"));
        }
    };
    if !(weight.is_finite() && weight > 0.0) {
        return Err(format!("backend '{name}': weight must be positive, got {weight}"));
    }
    let concurrency = match t.get("concurrency") {
        None => default_concurrency(&scheme),
        Some(toml::Value::Integer(n)) if *n > 0 => *n as usize,
        Some(v) => {
            return Err(format!("backend '{name}': concurrency must be a positive integer, got {v}"));
        }
    };
    let mut options = BTreeMap::new();
    for (k, v) in t.iter().filter(|(k, _)| !OWN_KEYS.contains(&k.as_str())) {
        let v = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => v.to_string(),
            other => {
                return Err(format!("backend '{name}': option '{k}' must be a plain value, got {other}"));
            }
        };
        options.insert(k.clone(), v);
    }
    check_options(&name, &scheme, options.keys()).map_err(|e| {
        let key = options.keys().find(|k| e.context().contains(&format!("'{k}'"))).cloned().unwrap_or_default();
        match line_of_key(text, &name, &key) {
            Some(line) => format!("line {line}: {}", e.context()),
            None => e.context().to_string(),
        }
    })?;
    let rate = |key: &str| match t.get(key) {
        None => Ok(None),
        Some(toml::Value::Integer(n)) if *n > 0 => Ok(Some(*n as u64)),
        Some(toml::Value::String(s)) => crate::limit::parse_bytes(s)
            .map(Some)
            .ok_or_else(|| format!("backend '{name}': {key} must be a rate such as \"10MiB\", got \"{s}\"")),
        Some(v) => Err(format!("backend '{name}': {key} must be a positive rate, got {v}")),
    };
    let limits = Limits {
        upload: rate("limit_upload")?,
        download: rate("limit_download")?,
        requests_per_second: rate("requests_per_second")?,
    };
    let capacity = match t.get("capacity") {
        None => None,
        Some(toml::Value::Integer(n)) if *n > 0 => Some(*n as u64),
        Some(toml::Value::String(s)) => Some(
            crate::limit::parse_bytes(s)
                .ok_or_else(|| format!("backend '{name}': capacity must be a size such as \"100GiB\", got \"{s}\""))?,
        ),
        Some(v) => return Err(format!("backend '{name}': capacity must be a positive size, got {v}")),
    };
    let drain = match t.get("drain") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(v) => return Err(format!("backend '{name}': drain must be true or false, got {v}")),
    };
    Ok(BackendConfig { name, scheme, weight, concurrency, limits, capacity, drain, options })
}

/// Parse `key=value` words from the command line into backend options.
pub fn parse_options(name: &str, scheme: &str, words: &[String]) -> Result<BTreeMap<String, String>> {
    let options: BTreeMap<String, String> = words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() && !OWN_KEYS.contains(&k) => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::config(format!("'{w}' is not an option of the form key=value"))),
        })
        .collect::<Result<_>>()?;
    check_options(name, scheme, options.keys())?;
    Ok(options)
}

/// Where the config lives when neither `--config` nor `CUCKOO_CONFIG` says.
pub fn default_config_path() -> Result<PathBuf> {
    dirs::config_dir()
        .map(|d| d.join("cuckoo").join("config.toml"))
        .ok_or_else(|| Error::config("cannot find the user's config directory; pass --config"))
}

/// Where per-machine state (catalogues, the embedded pool) lives.
pub fn data_dir() -> Result<PathBuf> {
    dirs::data_dir()
        .map(|d| d.join("cuckoo"))
        .ok_or_else(|| Error::config("cannot find the user's data directory; set XDG_DATA_HOME"))
}

/// The embedded default pool: three local-directory backends under the data dir, and the
/// text of its config file (not written: see `write_new`).
pub fn default_pool(config_path: &Path) -> Result<(Config, String)> {
    let base = data_dir()?.join("pool");
    let backends: Vec<BackendConfig> = ["local-1", "local-2", "local-3"]
        .iter()
        .map(|name| BackendConfig {
            name: name.to_string(),
            scheme: "fs".into(),
            weight: 1.0,
            concurrency: DEFAULT_CONCURRENCY,
            limits: Limits::default(),
            capacity: None,
            drain: false,
            options: BTreeMap::from([("root".to_string(), base.join(name).display().to_string())]),
        })
        .collect();
    let text = format!(
        "# Created by cuckoo: a pool of three local directories. Add cloud backends with\n\
         # `cuckoo backend add NAME SCHEME key=value...`.\n{}",
        Config::render(None, &backends)
    );
    Ok((Config::parse(config_path, &text)?, text))
}

/// Write a new config file (and its folder), e.g. the text `default_pool` made, once the
/// pool it describes exists.
pub fn write_new(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    }
    write_atomically(path, text.as_bytes())
}

/// Replace a file so a crash leaves either the old or the new content, never a mix.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("cannot write {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_options_the_test_servers_use_are_known_and_typos_are_named() {
        for (scheme, keys) in [
            (
                "s3",
                &["endpoint", "bucket", "region", "access_key_id", "secret_access_key", "disable_config_load", "root"]
                    [..],
            ),
            ("azblob", &["endpoint", "container", "account_name", "account_key"]),
            (
                "gcs",
                &[
                    "endpoint",
                    "bucket",
                    "skip_signature",
                    "allow_anonymous",
                    "disable_vm_metadata",
                    "disable_config_load",
                ],
            ),
            ("webdav", &["endpoint", "username", "password", "root"]),
            ("ftp", &["endpoint", "user", "password", "root"]),
            ("sftp", &["endpoint", "user", "key", "known_hosts_strategy", "root"]),
            ("fs", &["root", "atomic_write_dir"]),
        ] {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            check_options("b", scheme, keys.iter()).unwrap_or_else(|e| panic!("{scheme}: {e}"));
        }
        let err = check_options("b", "fs", [&"rooot".to_string()]).unwrap_err().to_string();
        assert!(err.contains("unknown option 'rooot'; did you mean 'root'?"), "{err}");
        let err = check_options("b", "fs", [&"wieght".to_string()]).unwrap_err().to_string();
        assert!(err.contains("did you mean 'weight'?"), "{err}");
    }

    #[test]
    fn config_errors_say_where() {
        let path = Path::new("pool.toml");
        let text = "[[backend]]\nname = \"a\"\nscheme = \"fs\"\nroot = \"/x\"\nwieght = 2\n";
        let err = Config::parse(path, text).unwrap_err().to_string();
        assert!(err.contains("line 5: backend 'a': unknown option 'wieght'; did you mean 'weight'?"), "{err}");
        let err = Config::parse(path, "[[backend]]\nname = \"a\nscheme = 1\n").unwrap_err().to_string();
        assert!(err.contains("line 2, column"), "{err}");
        let err = Config::parse(path, "[[backend]]\nname = \"a\"\nscheme = \"fs\"\nweight = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("weight must be a number"), "{err}");
    }

    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn parses_backends_and_options() {
        let c = parse(
            "compression = 5\n[[backend]]\nname='a'\nscheme='fs'\nroot='/x'\n\
             [[backend]]\nname='b'\nscheme='s3'\nweight=2.5\nbucket='bk'\nenable_virtual_host_style=true\n",
        )
        .unwrap();
        assert_eq!(c.compression, 5);
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.backends[1].weight, 2.5);
        assert_eq!(c.backends[1].options["enable_virtual_host_style"], "true");
        assert_eq!(c.backends[0].options["root"], "/x");
    }

    #[test]
    fn rejects_bad_configs_with_a_reason() {
        for (text, needle) in [
            ("[[backend]]\nname='a'\nscheme='nope'\n", "unknown scheme"),
            ("[[backend]]\nscheme='fs'\n", "lacks 'name'"),
            ("[[backend]]\nname='a'\nscheme='fs'\nweight=-1\n", "positive"),
            ("[[backend]]\nname='a'\nscheme='fs'\n[[backend]]\nname='a'\nscheme='fs'\n", "twice"),
            ("", "at least one"),
            ("backend = [", "config test.toml"),
            ("colour = 'red'\n[[backend]]\nname='a'\nscheme='fs'\n", "unexpected key"),
            ("[[backend]]\nname='a'\nscheme='fs'\nlimit_upload='fast'\n", "rate such as"),
            ("limit_download = 'slow'\n[[backend]]\nname='a'\nscheme='fs'\n", "limit_download must be a rate"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn pool_limits_are_top_level_keys() {
        let c = parse("limit_upload = '2MiB'\nlimit_download = 4096\n[[backend]]\nname='a'\nscheme='fs'\n").unwrap();
        assert_eq!((c.limits.upload, c.limits.download), (Some(2 << 20), Some(4096)));
        assert_eq!(c.backends[0].limits, Limits::default(), "a backend's own limits are its own");
    }

    #[test]
    fn append_keeps_comments_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "# mine\n[[backend]]\nname='a'\nscheme='fs'\nroot='/a'\n").unwrap();
        let mut c = Config::load(&path).unwrap();
        let opts = parse_options("b", "fs", &["root=/b".into()]).unwrap();
        let limits = Limits { upload: Some(1 << 20), download: None, requests_per_second: Some(50) };
        let b = BackendConfig {
            name: "b".into(),
            scheme: "fs".into(),
            weight: 3.0,
            concurrency: 4,
            limits,
            capacity: Some(1 << 30),
            drain: true,
            options: opts,
        };
        c.append_backend(b).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# mine"));
        let again = Config::load(&path).unwrap();
        assert_eq!(again.backends, c.backends);
        assert!(parse_options("b", "fs", &["noequals".into()]).is_err());
    }
}
