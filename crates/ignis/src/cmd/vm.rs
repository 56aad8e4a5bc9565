//! `ignis vm`: live sessions (`ls`), reaping sessions of dead ignis processes (`gc`) and the
//! host check (`doctor`).

use anyhow::Context;
use ignis_runner::session::{SessionManager, default_state_dir};
use ignis_vm::VmProvider;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum VmCommand {
    /// List live sessions from the state records of every ignis process.
    Ls(StateArgs),
    /// Release the VMs of sessions whose ignis process died, and say what was released.
    Gc(StateArgs),
    /// What this host has and lacks for each backend (sandbox, qemu, firecracker), with the
    /// exact fix for each gap. Exits 0 when the default backend (sandbox) works.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// State dir holding session records (default: $IGNIS_STATE_DIR, /var/lib/ignis as root,
    /// else $XDG_STATE_HOME/ignis).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Print one JSON object per session.
    #[arg(long)]
    json: bool,
}

impl StateArgs {
    fn dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(default_state_dir)
    }
}

pub fn run(cmd: VmCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCommand::Doctor { json } => Ok(ignis_vm::doctor::cli(json)),
        VmCommand::Ls(args) => ls(&args),
        VmCommand::Gc(args) => gc(&args),
    }
}

fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn ls(args: &StateArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir();
    let (records, errors) = SessionManager::list_records(&dir);
    for e in &errors {
        eprintln!("ignis: warning: {e:#}");
    }
    if args.json {
        for r in &records {
            let v = serde_json::json!({
                "session_id": r.record.session_id,
                "vm_id": r.record.vm_id,
                "vm_type": r.record.vm_type,
                "backend": r.record.backend,
                "state": r.record.state,
                "owner_pid": r.record.owner.pid,
                "owner_alive": r.owner_alive,
                "age_s": r.record.age().as_secs(),
            });
            println!("{v}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        println!("no live sessions in {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:<24} {:<12} {:<10} {:>8} {:<6} {:>8}",
        "SESSION", "VM", "BACKEND", "STATE", "PID", "ALIVE", "AGE"
    );
    for r in &records {
        println!(
            "{:<28} {:<24} {:<12} {:<10} {:>8} {:<6} {:>8}",
            r.record.session_id,
            r.record.vm_id,
            r.record.backend.to_string(),
            r.record.state.to_string(),
            r.record.owner.pid,
            if r.owner_alive { "yes" } else { "no" },
            age(r.record.age()),
        );
    }
    let orphans = records.iter().filter(|r| !r.owner_alive).count();
    if orphans > 0 {
        println!("{orphans} orphaned session(s): run `ignis vm gc` to release them");
    }
    Ok(ExitCode::SUCCESS)
}

/// Providers that can reap: the fake always (reaping needs no agent), the sandbox where this
/// host supports it. Records of other backends go to the generic record reaper.
fn reap_providers() -> Vec<Arc<dyn VmProvider>> {
    let mut v: Vec<Arc<dyn VmProvider>> = Vec::new();
    let fake = ignis_vm::fake::FakeConfig::discover()
        .unwrap_or_else(|_| ignis_vm::fake::FakeConfig::new(PathBuf::from("ignis-agent")));
    v.push(Arc::new(ignis_vm::fake::FakeProvider::new(fake)));
    match ignis_vm::sandbox::SandboxProvider::new() {
        Ok(p) => v.push(Arc::new(p)),
        Err(e) => tracing::debug!(error = %e, "sandbox provider unavailable; generic reaper"),
    }
    v
}

fn gc(args: &StateArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let reports = runtime.block_on(async {
        let mut builder = SessionManager::builder().state_dir(&dir);
        for p in reap_providers() {
            builder = builder.provider(p);
        }
        let manager = builder
            .build()
            .with_context(|| format!("opening state dir {}", dir.display()))?;
        anyhow::Ok(manager.reap_orphans().await)
    })?;
    let mut failed = 0;
    for r in &reports {
        let (status, error) = match &r.result {
            Ok(()) => ("released", None),
            Err(e) => {
                failed += 1;
                ("failed", Some(e.as_str()))
            }
        };
        if args.json {
            let v = serde_json::json!({
                "session_id": r.session_id,
                "vm_id": r.vm_id,
                "backend": r.backend,
                "owner_pid": r.owner_pid,
                "status": status,
                "error": error,
            });
            println!("{v}");
        } else {
            match error {
                None => println!(
                    "released {} (vm {}, {}, owner pid {} dead)",
                    r.session_id, r.vm_id, r.backend, r.owner_pid
                ),
                Some(e) => println!("failed to release {} (vm {}): {e}", r.session_id, r.vm_id),
            }
        }
    }
    if reports.is_empty() && !args.json {
        println!("nothing to reap in {}", dir.display());
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_is_compact() {
        assert_eq!(age(Duration::from_secs(5)), "5s");
        assert_eq!(age(Duration::from_secs(65)), "1m05s");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 120)), "3h02m");
    }
}
