//! The `cuckoo` command: a thin adapter from command lines to the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
