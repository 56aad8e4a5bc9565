//! Finding the `ignis-agent` binary that backends start (as PID 1 of a sandbox, or copied
//! into a guest image).

use std::path::{Path, PathBuf};

/// Environment variable that overrides where the agent binary is.
pub const AGENT_BIN_ENV: &str = "IGNIS_AGENT_BIN";
const AGENT_BIN_NAME: &str = "ignis-agent";

/// The agent binary could not be found (a host setup problem).
#[derive(Debug, thiserror::Error)]
pub enum AgentBinaryError {
    /// `IGNIS_AGENT_BIN` names a path that does not exist.
    #[error("{AGENT_BIN_ENV}={} does not exist", .0.display())]
    EnvPathMissing(PathBuf),
    /// Not next to the current executable nor one directory up.
    #[error(
        "ignis-agent binary not found (looked in {}); build it with `cargo build -p ignis-agent` or set {AGENT_BIN_ENV}",
        looked_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        /// The candidate paths, in lookup order.
        looked_in: Vec<PathBuf>,
    },
}

/// Where the agent binary is: `$IGNIS_AGENT_BIN`, else next to the current executable, else
/// one directory above it (test executables live in `target/<profile>/deps/`).
pub fn agent_binary_path() -> Result<PathBuf, AgentBinaryError> {
    if let Some(p) = std::env::var_os(AGENT_BIN_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(AgentBinaryError::EnvPathMissing(p))
        };
    }
    let exe = std::env::current_exe().ok();
    lookup_near(exe.as_deref())
}

/// The agent binary next to `exe` or one directory above it, ignoring `IGNIS_AGENT_BIN`: for
/// helpers (like a fake hypervisor binary) that ship in the same target directory.
pub fn agent_binary_near(exe: &Path) -> Result<PathBuf, AgentBinaryError> {
    lookup_near(Some(exe))
}

fn lookup_near(exe: Option<&Path>) -> Result<PathBuf, AgentBinaryError> {
    let dir = exe.and_then(Path::parent);
    let candidates: Vec<PathBuf> = [dir, dir.and_then(Path::parent)]
        .into_iter()
        .flatten()
        .map(|d| d.join(AGENT_BIN_NAME))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(AgentBinaryError::NotFound {
            looked_in: candidates,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_binary_next_to_or_above_exe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deps = dir.path().join("deps");
        std::fs::create_dir(&deps).expect("mkdir");
        let exe = deps.join("some-test");
        let err = lookup_near(Some(&exe)).expect_err("nothing there yet");
        let msg = err.to_string();
        assert!(msg.contains("cargo build -p ignis-agent"), "{msg}");
        std::fs::write(dir.path().join(AGENT_BIN_NAME), b"").expect("write");
        assert_eq!(
            lookup_near(Some(&exe)).expect("found above"),
            dir.path().join(AGENT_BIN_NAME)
        );
        assert_eq!(
            agent_binary_near(&exe).expect("found above"),
            dir.path().join(AGENT_BIN_NAME)
        );
        std::fs::write(deps.join(AGENT_BIN_NAME), b"").expect("write");
        assert_eq!(
            lookup_near(Some(&exe)).expect("found beside"),
            deps.join(AGENT_BIN_NAME)
        );
    }
}
