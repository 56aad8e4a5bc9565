//! CONTRACT SKELETON (to be completed by the agent work): the host-side agent client.
//! Signatures here are the contract other crates code against; bodies are filled in by the
//! agent implementation.

use crate::protocol::{ExecRequest, ExitStatus, Stream};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Errors talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The channel to the agent closed (agent died, VM gone).
    #[error("agent channel closed")]
    ChannelClosed,
    /// The agent answered with an error.
    #[error("agent error: {0}")]
    Remote(String),
    /// An I/O error on the channel.
    #[error("agent i/o")]
    Io(#[from] std::io::Error),
}

/// One event of a running command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Output(Stream, Vec<u8>),
    Exit(ExitStatus),
}

/// A running command: its events in order, ending with exactly one `Exit` (or an error).
#[derive(Debug)]
pub struct ExecHandle {
    pub(crate) id: u64,
    pub(crate) events: tokio::sync::mpsc::Receiver<Result<ExecEvent, AgentError>>,
    pub(crate) client: AgentClient,
}

impl ExecHandle {
    /// The request id, usable with [`AgentClient::cancel`].
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Next event; `None` after `Exit` was delivered.
    pub async fn next(&mut self) -> Option<Result<ExecEvent, AgentError>> {
        self.events.recv().await
    }
    /// Cancel this command (kills its whole process group).
    pub async fn cancel(&self) -> Result<(), AgentError> {
        self.client.cancel(self.id).await
    }
}

/// Collected result of a command.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

/// Cloneable handle to one agent. `Send + Sync`; all methods take `&self`.
#[derive(Debug, Clone)]
pub struct AgentClient {
    _priv: std::sync::Arc<()>,
}

impl AgentClient {
    /// Start speaking the protocol over a byte stream pair (socketpair, virtio-serial, vsock).
    pub fn new<R, W>(_reader: R, _writer: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        todo!("agent client")
    }
    pub async fn exec(&self, _req: ExecRequest) -> Result<ExecHandle, AgentError> {
        todo!()
    }
    /// Run and collect all output.
    pub async fn exec_collect(&self, _req: ExecRequest) -> Result<ExecOutput, AgentError> {
        todo!()
    }
    /// Kill the process group of a running command.
    pub async fn cancel(&self, _exec_id: u64) -> Result<(), AgentError> {
        todo!()
    }
    /// Send a signal to the process group of a running command.
    pub async fn signal(&self, _exec_id: u64, _signal: i32) -> Result<(), AgentError> {
        todo!()
    }
    pub async fn write_file(&self, _path: &str, _data: Vec<u8>, _mode: u32) -> Result<(), AgentError> {
        todo!()
    }
    pub async fn read_file(&self, _path: &str) -> Result<Vec<u8>, AgentError> {
        todo!()
    }
    /// Unpack a tar stream into `dest` inside the guest.
    pub async fn put_tar(&self, _dest: &str, _tar: Vec<u8>) -> Result<(), AgentError> {
        todo!()
    }
    /// Pack `path` inside the guest as a tar stream.
    pub async fn get_tar(&self, _path: &str) -> Result<Vec<u8>, AgentError> {
        todo!()
    }
    /// Round trip time.
    pub async fn ping(&self) -> Result<Duration, AgentError> {
        todo!()
    }
    /// Ask the agent to kill everything and exit.
    pub async fn shutdown(&self) -> Result<(), AgentError> {
        todo!()
    }
}
