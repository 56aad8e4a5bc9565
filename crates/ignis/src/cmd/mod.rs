//! One module per subcommand; `dispatch` routes to it.

mod graph;
mod image;
mod list;
mod run;
mod runs;
mod validate;
mod vm;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Run GitHub Actions workflows, each run in its own isolated machine.
#[derive(Debug, Parser)]
#[command(name = "ignis", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check workflow files; exit 2 with located errors when invalid.
    Validate(validate::Args),
    /// List the jobs that would run.
    List(list::Args),
    /// Print the job dependency graph.
    Graph(graph::Args),
    /// Run workflows, one isolated session per run.
    Run(Box<run::Args>),
    /// List and remove the run records kept for `ignis run --resume`.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Build, list and remove guest images of the VM backends.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Inspect and manage live sessions and backends.
    #[command(subcommand)]
    Vm(vm::VmCommand),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::List(args) => list::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Run(args) => run::run(*args),
        Command::Runs(cmd) => runs::run(cmd),
        Command::Image(cmd) => image::run(cmd),
        Command::Vm(cmd) => vm::run(cmd),
    }
}
