//! `ignis vm` (to be implemented).

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum VmCommand {
    /// List live sessions.
    Ls,
    /// What this host has and lacks for each backend (sandbox, qemu, firecracker), with the
    /// exact fix for each gap. Exits 0 when the default backend (sandbox) works.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: VmCommand) -> anyhow::Result<ExitCode> {
    if let VmCommand::Doctor { json } = cmd {
        return Ok(ignis_vm::doctor::cli(json));
    }
    anyhow::bail!("ignis vm is not implemented yet")
}
