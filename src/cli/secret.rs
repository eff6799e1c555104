//! Where the CLI gets passphrases: a command's output, a file, an environment variable, or
//! a terminal prompt, in that order.

use std::path::PathBuf;

use cuckoo::{Error, ErrorKind, Passphrase, PassphraseSource};

/// One passphrase role (the pool's, or a new one for `key add`), with its flag and variable.
pub struct Source {
    /// A shell command whose standard output is the passphrase (`--password-command`).
    pub command: Option<String>,
    pub file: Option<PathBuf>,
    pub env: &'static str,
    pub flag: &'static str,
    pub prompt: &'static str,
}

impl PassphraseSource for Source {
    fn passphrase(&self, new: bool) -> cuckoo::Result<Passphrase> {
        let given = if let Some(command) = &self.command {
            run_command(command)?
        } else if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::new(ErrorKind::Io, format!("cannot read passphrase file {}", path.display())).with_source(e)
            })?;
            Passphrase::new(text)
        } else if let Ok(text) = std::env::var(self.env) {
            Passphrase::new(text)
        } else {
            return self.prompt(new);
        };
        check(given)
    }
}

impl Source {
    fn prompt(&self, new: bool) -> cuckoo::Result<Passphrase> {
        let ask = |label: &str| {
            // Failing here means there is no terminal: say what to do instead.
            rpassword::prompt_password(label).map_err(|_| {
                Error::new(
                    ErrorKind::Config,
                    format!("a passphrase is needed: set {} or give {}, or run on a terminal", self.env, self.flag),
                )
            })
        };
        let label = if new { format!("{} (new): ", self.prompt) } else { format!("{}: ", self.prompt) };
        let first = check(Passphrase::new(ask(&label)?))?;
        if new && Passphrase::new(ask("Repeat it: ")?).eq_secret(&first) {
            return Ok(first);
        }
        if new {
            return Err(Error::new(ErrorKind::Config, "the two passphrases differ; nothing was changed"));
        }
        Ok(first)
    }
}

/// The passphrase a password manager prints (`pass show pool`, `secret-tool lookup …`): the
/// command runs through `sh -c`, its errors go to the terminal, and failing is an error
/// that names it.
fn run_command(command: &str) -> cuckoo::Result<Passphrase> {
    let failed = |why: String| Error::new(ErrorKind::Config, format!("--password-command '{command}' {why}"));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| failed(format!("could not be run: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!("failed ({})", out.status)));
    }
    let text = String::from_utf8(out.stdout).map_err(|_| failed("printed something that is not UTF-8".into()))?;
    Ok(Passphrase::new(text))
}

fn check(p: Passphrase) -> cuckoo::Result<Passphrase> {
    if p.is_empty() { Err(Error::new(ErrorKind::Config, "the passphrase is empty")) } else { Ok(p) }
}
