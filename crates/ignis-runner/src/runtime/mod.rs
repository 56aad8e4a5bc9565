//! The step runtime: everything that turns one step into a command in the VM and its output
//! back into state (masking, workflow and file commands, shells, contexts).

/// Checkout packing and remote action fetching.
pub mod actions;
/// The `github` context and `GITHUB_*` variables of a local run.
pub mod contexts;
/// Directories made with one `put_tar` instead of a `mkdir -p` process.
pub mod dirs;
/// Dotenv files for secrets, vars, inputs and env.
pub mod env;
/// `GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_PATH`, `GITHUB_STATE`, `GITHUB_STEP_SUMMARY`.
pub mod file_commands;
/// Secret masking.
pub mod mask;
/// GitHub's shells.
pub mod shell;
/// `::command::` lines.
pub mod workflow_commands;
