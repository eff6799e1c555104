//! Command-line front end: parses arguments, opens the pool, calls the library, prints.
//!
//! Owns: argument syntax (`args`), running each command (`commands`), human and `--json`
//! output (`output`), progress bars, exit codes. Must not: contain storage logic;
//! everything it does is a library call.

/// `println!` for command output: a reader that goes away (`cuckoo ls latest | head -1`)
/// ends the command quietly, as it ends any Unix tool, instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}

mod args;
mod commands;
mod output;
mod progress;
mod secret;

use std::process::ExitCode;

use clap::Parser;
use cuckoo::ErrorKind;

/// Exit code after Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;

pub fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(commands::run(cli));
    commands::report_troubles();
    match result {
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
