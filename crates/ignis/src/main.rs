//! The `ignis` command line: a thin layer over the library crates. It parses arguments,
//! calls library entry points and maps their errors to exit codes:
//! 0 success, 1 run failed or was cancelled, 2 invalid workflow or usage.

mod cmd;
mod print;
mod workflows;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ignis: {err:#}");
            ExitCode::from(2)
        }
    }
}
