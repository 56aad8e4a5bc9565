//! `ignis runs ls|rm`: the run records `ignis run` keeps so that a failed run can be
//! continued with `ignis run --resume <run-id>` (see `ignis_runner::runs`).

use super::run::{remove_run, still_running};
use anyhow::Context;
use ignis_runner::events::JobResult;
use ignis_runner::runs::{RunRecord, RunStore, RunStoreError};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// List recorded runs, oldest first: id, result, attempt, backend, snapshots held.
    Ls,
    /// Remove runs with the snapshots they hold.
    Rm {
        /// Run ids (see `ignis runs ls`).
        ids: Vec<String>,
        /// Remove every recorded run that is not running.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

/// How long ago `unix_ms` was, in the largest whole unit.
fn age(unix_ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let s = now.saturating_sub(unix_ms) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn result_of(r: &RunRecord) -> &'static str {
    match r.result {
        Some(res) => res.as_str(),
        None if still_running(r) => "running",
        None => "interrupted",
    }
}

pub fn run(cmd: RunsCommand) -> anyhow::Result<ExitCode> {
    let store = RunStore::at(&ignis_runner::session::default_state_dir());
    match cmd {
        RunsCommand::Ls => {
            let (records, unreadable) = store.list();
            if records.is_empty() && unreadable.is_empty() {
                println!("no recorded runs");
            } else {
                println!(
                    "{:<20} {:<11} {:>7} {:<11} {:>9} {:>9}  WORKFLOWS",
                    "RUN", "RESULT", "ATTEMPT", "BACKEND", "SNAPSHOTS", "UPDATED"
                );
            }
            for r in &records {
                let workflows: Vec<&str> = r.workflows.iter().map(|w| w.path.as_str()).collect();
                println!(
                    "{:<20} {:<11} {:>7} {:<11} {:>9} {:>9}  {}",
                    r.run_id,
                    result_of(r),
                    r.attempt,
                    r.backend.to_string(),
                    r.snapshots().len(),
                    age(r.updated_unix_ms),
                    workflows.join(", ")
                );
            }
            for id in unreadable {
                println!("{id:<20} unreadable (written by another ignis version?)");
            }
            if let Some(r) = records
                .iter()
                .rev()
                .find(|r| r.result != Some(JobResult::Success) && !still_running(r))
            {
                println!(
                    "\ncontinue the newest failed run with: ignis run --resume {}",
                    r.run_id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Rm { ids, all } => {
            let records: Vec<RunRecord> = if all {
                store
                    .list()
                    .0
                    .into_iter()
                    .filter(|r| !still_running(r))
                    .collect()
            } else {
                let mut out = Vec::new();
                for id in &ids {
                    match store.load(id) {
                        Ok(r) if still_running(&r) => {
                            eprintln!("ignis: run {id} is still running");
                            return Ok(ExitCode::from(2));
                        }
                        Ok(r) => out.push(r),
                        Err(e @ (RunStoreError::UnknownRun(_) | RunStoreError::InvalidId(_))) => {
                            eprintln!("ignis: {e}");
                            return Ok(ExitCode::from(2));
                        }
                        // An unreadable record still goes (its snapshots cannot be named).
                        Err(_) => {
                            store.remove(id)?;
                            println!("removed run {id} (unreadable record)");
                        }
                    }
                }
                out
            };
            if records.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            let repo = std::env::current_dir().context("current directory")?;
            let (profiles, _) = ignis_vm::profile::ProfileConfig::discover(None, Some(&repo))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                for r in &records {
                    remove_run(&store, r, None, &profiles).await?;
                    println!(
                        "removed run {} ({} snapshot(s))",
                        r.run_id,
                        r.snapshots().len()
                    );
                }
                Ok::<(), anyhow::Error>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
