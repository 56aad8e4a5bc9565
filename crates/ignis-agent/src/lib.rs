//! `ignis-agent` is the one agent that runs inside every VM or sandbox, plus the wire protocol
//! the host uses to talk to it. It must never trust the host's input to be well-formed, and
//! never outlive the host connection.
//!
//! - Host side: [`AgentClient`] multiplexes requests (exec, signal, files, tar) over one channel.
//! - Guest side: [`serve`] answers them; the `ignis-agent` binary runs it over stdio, an
//!   inherited fd, a virtio-serial port or vsock.
//! - [`testing::spawn_local_agent`] runs the real binary as a local child for tests, and
//!   [`agent_binary_path`] finds that binary for backends that start it.

#![deny(missing_docs)]

/// The guest side: serve the protocol until the host goes away.
mod agent;
/// The host side: a cloneable handle that multiplexes requests over one agent channel.
pub mod client;
/// Finding the agent binary on the host.
mod locate;
/// Spawning commands in their own process groups and reaping them.
mod process;
/// Frames and messages exchanged between host and agent.
pub mod protocol;
/// Helpers for tests (of this crate and of the backends): the real agent as a local child.
pub mod testing;
/// Channels the agent binary can serve on.
pub mod transport;

pub use agent::{AgentConfig, ServeEnd, ServeError, serve};
pub use client::{AgentClient, AgentError, ExecEvent, ExecHandle, ExecOutput};
pub use locate::{AgentBinaryError, agent_binary_near, agent_binary_path};
pub use process::ReapMode;
pub use protocol::{CommandFiles, ExecRequest, ExitStatus, Program, Stream};
