//! CONTRACT SKELETON (to be completed by the agent work): message types shared by host and agent.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Program {
    /// argv[0] looked up in PATH, then its arguments.
    Argv(Vec<String>),
    /// A script body written to a file inside the guest and run by `shell` (`{0}` = file path),
    /// e.g. `["bash", "-e", "{0}"]`.
    Script { shell: Vec<String>, body: String, path: String },
}

/// One command to execute inside the guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecRequest {
    pub program: Program,
    /// The complete environment (nothing is inherited from the agent unless listed here).
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a command ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code when it exited normally.
    pub code: Option<i32>,
    /// Signal number when it was killed by a signal.
    pub signal: Option<i32>,
    /// True when the agent killed it because its timeout elapsed.
    pub timed_out: bool,
    /// True when it was killed by a cancel request.
    pub cancelled: bool,
    pub duration: Duration,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}
