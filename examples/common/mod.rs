//! The pool the examples use: the one `CUCKOO_CONFIG` names, or else a fresh, unencrypted
//! pool of three local directories in a temporary folder (removed when the example ends).

use std::path::PathBuf;

use cuckoo::{Config, InitOptions, NoPassphrase, Passphrase, PassphraseSource};

/// A pool config and what opens it; holds the temporary folder, if any, alive.
pub struct ExamplePool {
    pub config: Config,
    pub passphrase: Box<dyn PassphraseSource>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn pool() -> cuckoo::Result<ExamplePool> {
    if let Some(path) = std::env::var_os("CUCKOO_CONFIG") {
        let passphrase = Passphrase::new(std::env::var("CUCKOO_PASSWORD").unwrap_or_default());
        return Ok(ExamplePool {
            config: Config::load(&PathBuf::from(path))?,
            passphrase: Box::new(passphrase),
            _dir: None,
        });
    }
    let dir = tempfile::tempdir().map_err(|e| cuckoo::Error::new(cuckoo::ErrorKind::Io, e.to_string()))?;
    let mut text = format!("catalogue = {:?}\n", dir.path().join("catalogue.redb"));
    for i in 0..3 {
        let root = dir.path().join(format!("backend-{i}"));
        text.push_str(&format!("[[backend]]\nname = \"disk{i}\"\nscheme = \"fs\"\nroot = {root:?}\n"));
    }
    let config = Config::parse(&dir.path().join("pool.toml"), &text)?;
    cuckoo::init(&config, &InitOptions { encrypt: false, ..Default::default() }, &NoPassphrase).await?;
    Ok(ExamplePool { config, passphrase: Box::new(NoPassphrase), _dir: Some(dir) })
}
