//! `ignis-runner` owns sessions (one VM per run, released on every path), executes
//! planned workflows in them and emits the run event stream.

/// The run event stream and its sinks.
pub mod events;
/// The workflow executor: sessions, setup/cleanup, the job DAG, job legs and steps.
pub mod executor;
/// Run records for `ignis run --resume`: what ran, results, snapshots (never secret values).
pub mod runs;
/// The step runtime: shells, masking, workflow and file commands, contexts.
pub mod runtime;
/// Sessions: one VM per run, a concurrency limit, release on every path, crash records.
pub mod session;
