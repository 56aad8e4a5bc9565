//! `ignis vm` (to be implemented).

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum VmCommand {
    /// List live sessions.
    Ls,
}

pub fn run(_cmd: VmCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("ignis vm is not implemented yet")
}
