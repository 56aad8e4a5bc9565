//! The real agent binary as a local child process over stdio: for this crate's tests, for the
//! backends' tests, and for benchmarks. No isolation: commands run on the host as the caller.

use crate::client::AgentClient;
use crate::locate::{AgentBinaryError, agent_binary_path};
use std::path::Path;
use std::process::Stdio;
use tokio::process::{Child, Command};

/// Errors starting a local agent.
#[derive(Debug, thiserror::Error)]
pub enum SpawnAgentError {
    #[error(transparent)]
    /// The binary could not be found.
    Binary(#[from] AgentBinaryError),
    #[error("cannot start agent {path}")]
    /// The binary could not be started.
    Spawn {
        /// The binary's path.
        path: String,
        #[source]
        /// Why it could not start.
        source: std::io::Error,
    },
}

/// Start the agent binary found by [`agent_binary_path`] with `--stdio` and connect a client.
///
/// The child is `kill_on_drop`; dropping the client (closing its stdin) also makes it exit.
/// Must be called inside a tokio runtime.
pub fn spawn_local_agent() -> Result<(AgentClient, Child), SpawnAgentError> {
    spawn_agent_at(&agent_binary_path()?)
}

/// Like [`spawn_local_agent`], with an explicit binary (e.g. `env!("CARGO_BIN_EXE_ignis-agent")`).
pub fn spawn_agent_at(path: &Path) -> Result<(AgentClient, Child), SpawnAgentError> {
    let mut child = Command::new(path)
        .arg("--stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SpawnAgentError::Spawn {
            path: path.display().to_string(),
            source,
        })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        // Unreachable with piped stdio; reported rather than panicking.
        return Err(SpawnAgentError::Spawn {
            path: path.display().to_string(),
            source: std::io::Error::other("child stdio not captured"),
        });
    };
    Ok((AgentClient::new(stdout, stdin), child))
}
