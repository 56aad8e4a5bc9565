//! `ignis-agent` is the one agent that runs inside every VM or sandbox, plus the wire
//! protocol the host uses to talk to it. It must never trust the host's input to be
//! well-formed, and never outlive the host connection.

/// The host side: a cloneable handle that multiplexes requests over one agent channel.
pub mod client;
/// Frames and messages exchanged between host and agent.
pub mod protocol;

pub use client::{AgentClient, AgentError, ExecEvent, ExecHandle, ExecOutput};
pub use protocol::{ExecRequest, ExitStatus, Program, Stream};
