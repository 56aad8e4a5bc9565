//! The host side of the agent protocol: a cloneable handle that multiplexes requests over one
//! agent channel.
//!
//! Two background tasks own the channel: a writer that frames queued requests, and a reader that
//! routes each response by id to the request waiting for it. When the channel fails or closes,
//! every pending and future request gets [`AgentError::ChannelClosed`] at once. Dropping the last
//! clone of the client (and of its [`ExecHandle`]s) closes the write side, which makes the agent
//! kill everything it started and exit.

use crate::protocol::{
    self, CHUNK_LEN, CONNECTION_ID, CommandFiles, ExecRequest, ExitStatus, FrameCodec, InFrame,
    PROTOCOL_VERSION, Request, RequestFrame, Response, ResponseFrame, Stream,
};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

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
    /// A chunk of output, in the order the stream produced it.
    Output(Stream, Vec<u8>),
    /// The command ended; always the last event.
    Exit(ExitStatus),
}

/// A running command: its events in order, ending with exactly one `Exit` (or an error).
///
/// Dropping the handle does not stop the command; use [`ExecHandle::cancel`].
#[derive(Debug)]
pub struct ExecHandle {
    pub(crate) id: u64,
    pub(crate) pid: u32,
    pub(crate) events: mpsc::UnboundedReceiver<Response>,
    pub(crate) done: bool,
    pub(crate) client: AgentClient,
    /// The file command files' tar received so far ([`AgentClient::exec_with_files`]).
    pub(crate) files: Vec<u8>,
    /// Set by `FilesEnd`: `Some(None)` complete, `Some(Some(why))` failed.
    pub(crate) files_end: Option<Option<String>>,
}

impl ExecHandle {
    /// The request id, usable with [`AgentClient::cancel`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The command's pid inside the guest (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Next event; `None` after `Exit` (or an error) was delivered.
    ///
    /// # Cancel safety
    /// Cancel safe: an event is only taken from the queue when it is returned.
    pub async fn next(&mut self) -> Option<Result<ExecEvent, AgentError>> {
        if self.done {
            return None;
        }
        let mut received = self.events.recv().await;
        // The file command files travel before the exit status; they are kept, not events.
        loop {
            match received {
                Some(Response::Data(chunk)) => self.files.extend_from_slice(&chunk),
                Some(Response::FilesEnd { error }) => self.files_end = Some(error),
                _ => break,
            }
            received = self.events.recv().await;
        }
        let item = match received {
            Some(Response::Output { stream, data }) => Ok(ExecEvent::Output(stream, data)),
            Some(Response::Exit(status)) => {
                self.done = true;
                Ok(ExecEvent::Exit(status))
            }
            Some(Response::Error { message }) => {
                self.done = true;
                Err(AgentError::Remote(message))
            }
            Some(other) => {
                self.done = true;
                Err(AgentError::Remote(format!(
                    "unexpected answer to exec: {other:?}"
                )))
            }
            None => {
                self.done = true;
                Err(self.client.closed_error())
            }
        };
        Some(item)
    }

    /// The command's file command directory as a tar, from [`AgentClient::exec_with_files`]:
    /// `Some(Ok(tar))` once it arrived (it comes before `Exit`), `Some(Err(why))` when the
    /// agent could not pack it (e.g. the command removed the directory), `None` for a plain
    /// exec or before it arrived. Taking it leaves `None`.
    pub fn take_files(&mut self) -> Option<Result<Vec<u8>, String>> {
        match self.files_end.take()? {
            None => Some(Ok(std::mem::take(&mut self.files))),
            Some(why) => Some(Err(why)),
        }
    }

    /// Cancel this command (kills its whole process group).
    pub async fn cancel(&self) -> Result<(), AgentError> {
        self.client.cancel(self.id).await
    }

    /// Wait for the command to end, collecting its output.
    pub async fn collect(mut self) -> Result<ExecOutput, AgentError> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(event) = self.next().await {
            match event? {
                ExecEvent::Output(Stream::Stdout, data) => stdout.extend_from_slice(&data),
                ExecEvent::Output(Stream::Stderr, data) => stderr.extend_from_slice(&data),
                ExecEvent::Exit(status) => {
                    return Ok(ExecOutput {
                        stdout,
                        stderr,
                        status,
                    });
                }
            }
        }
        Err(self.client.closed_error())
    }
}

/// Collected result of a command.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}

/// Cloneable handle to one agent. `Send + Sync`; all methods take `&self`.
#[derive(Debug, Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    next_id: AtomicU64,
    /// Set when the agent turned down a request added after protocol version 1 (an older
    /// agent binary, e.g. in a guest image built earlier): callers use the older requests.
    no_command_files: AtomicBool,
    /// Encoded request payloads for the writer task. Dropping the last sender ends the writer,
    /// which closes the channel towards the agent.
    outgoing: mpsc::UnboundedSender<Bytes>,
    shared: Arc<Shared>,
}

/// State shared with the reader and writer tasks (which must not hold `Inner`, or the client
/// could never be dropped).
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    closed: CancellationToken,
}

#[derive(Debug, Default)]
struct Pending {
    routes: HashMap<u64, mpsc::UnboundedSender<Response>>,
    /// Set once the channel is gone; `Some(reason)` when the agent gave one (version mismatch).
    closed: Option<Option<String>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A poisoned lock only means another thread panicked while routing; the map is still
        // consistent (every operation on it is a single insert/remove).
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fail every pending request and refuse new ones.
    fn close(&self, reason: Option<String>) {
        let routes = {
            let mut p = self.lock();
            if p.closed.is_none() {
                p.closed = Some(reason);
            }
            std::mem::take(&mut p.routes)
        };
        // Dropping the senders makes each waiting receiver see the end of its channel.
        drop(routes);
        self.closed.cancel();
    }

    fn route(&self, frame: ResponseFrame) {
        let terminal = frame.body.is_terminal();
        let mut p = self.lock();
        let Some(tx) = p.routes.get(&frame.id) else {
            if frame.id == CONNECTION_ID {
                if let Response::Error { message } = &frame.body {
                    tracing::warn!("agent reported a connection error: {message}");
                }
            } else {
                tracing::debug!(id = frame.id, "answer for an abandoned request dropped");
            }
            return;
        };
        // A failed send means the caller dropped its receiver: forget the route.
        if tx.send(frame.body).is_err() || terminal {
            p.routes.remove(&frame.id);
        }
    }
}

/// A request in flight: its id and the answers routed to it.
struct Call {
    id: u64,
    rx: mpsc::UnboundedReceiver<Response>,
}

impl AgentClient {
    /// Start speaking the protocol over a byte stream pair (socketpair, virtio-serial, vsock).
    ///
    /// Must be called inside a tokio runtime: it spawns the reader and writer tasks. The version
    /// handshake is sent at once; a mismatch fails every request with [`AgentError::Remote`].
    pub fn new<R, W>(reader: R, writer: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            closed: CancellationToken::new(),
        });
        let (outgoing, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, queue, shared.clone()));
        tokio::spawn(read_loop(reader, shared.clone()));
        let client = AgentClient {
            inner: Arc::new(Inner {
                next_id: AtomicU64::new(CONNECTION_ID + 1),
                no_command_files: AtomicBool::new(false),
                outgoing,
                shared,
            }),
        };
        // The handshake goes first; its answer is checked by a small task so that `new` stays
        // synchronous and the first real request is not delayed by a round trip.
        if let Ok(call) = client.start(Request::Hello {
            version: PROTOCOL_VERSION,
        }) {
            let shared = client.inner.shared.clone();
            tokio::spawn(async move {
                let mut rx = call.rx;
                match rx.recv().await {
                    Some(Response::Hello { version, .. }) if version == PROTOCOL_VERSION => {}
                    Some(Response::Error { message }) => shared.close(Some(message)),
                    Some(other) => shared.close(Some(format!(
                        "unexpected answer to the protocol handshake: {other:?}"
                    ))),
                    None => {}
                }
            });
        }
        client
    }

    /// The error for a request that lost its channel.
    fn closed_error(&self) -> AgentError {
        match &self.inner.shared.lock().closed {
            Some(Some(reason)) => AgentError::Remote(reason.clone()),
            _ => AgentError::ChannelClosed,
        }
    }

    /// Whether the channel to the agent is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.is_cancelled()
    }

    /// Resolves when the channel to the agent is gone (agent exited, VM died, I/O error).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn closed(&self) {
        self.inner.shared.closed.cancelled().await
    }

    /// Register a new request id and queue its frame.
    fn start(&self, body: Request) -> Result<Call, AgentError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let payload = protocol::encode(&RequestFrame { id, body }).map_err(codec_to_agent)?;
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut p = self.inner.shared.lock();
            if p.closed.is_some() {
                drop(p);
                return Err(self.closed_error());
            }
            p.routes.insert(id, tx);
        }
        if self.inner.outgoing.send(payload).is_err() {
            self.inner.shared.lock().routes.remove(&id);
            return Err(self.closed_error());
        }
        Ok(Call { id, rx })
    }

    /// Queue a frame that belongs to an existing request (bulk data, end marker).
    fn send_more(&self, id: u64, body: Request) -> Result<(), AgentError> {
        let payload = protocol::encode(&RequestFrame { id, body }).map_err(codec_to_agent)?;
        self.inner
            .outgoing
            .send(payload)
            .map_err(|_| self.closed_error())
    }

    /// Send `data` as chunks of `id`'s bulk payload, then the end marker.
    fn send_bulk(&self, id: u64, data: &[u8]) -> Result<(), AgentError> {
        for chunk in data.chunks(CHUNK_LEN) {
            self.send_more(id, Request::Data(chunk.to_vec()))?;
        }
        self.send_more(id, Request::End)
    }

    /// Wait for the single answer of a request.
    async fn answer(&self, call: &mut Call) -> Result<Response, AgentError> {
        match call.rx.recv().await {
            Some(Response::Error { message }) => Err(AgentError::Remote(message)),
            Some(r) => Ok(r),
            None => Err(self.closed_error()),
        }
    }

    /// Wait for an `Ok`.
    async fn expect_ok(&self, mut call: Call) -> Result<(), AgentError> {
        match self.answer(&mut call).await? {
            Response::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Collect `Data` chunks up to `Done`.
    async fn download(&self, mut call: Call) -> Result<Vec<u8>, AgentError> {
        let mut out = Vec::new();
        loop {
            match self.answer(&mut call).await? {
                Response::Data(chunk) => out.extend_from_slice(&chunk),
                Response::Done => return Ok(out),
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Start a command; returns once the agent has spawned it (so a command that cannot start,
    /// e.g. an unknown argv[0], fails here with [`AgentError::Remote`]).
    pub async fn exec(&self, mut req: ExecRequest) -> Result<ExecHandle, AgentError> {
        // Small stdin rides in the exec frame; larger stdin is streamed after it.
        let big_stdin = match &req.stdin {
            Some(s) if s.len() > CHUNK_LEN => req.stdin.take(),
            _ => None,
        };
        let call = self.start(Request::Exec {
            req,
            stdin_follows: big_stdin.is_some(),
        })?;
        if let Some(stdin) = big_stdin {
            self.send_bulk(call.id, &stdin)?;
        }
        self.started(call).await
    }

    /// The `Started` answer of an exec, as a handle.
    async fn started(&self, mut call: Call) -> Result<ExecHandle, AgentError> {
        match self.answer(&mut call).await? {
            Response::Started { pid } => Ok(ExecHandle {
                id: call.id,
                pid,
                events: call.rx,
                done: false,
                client: self.clone(),
                files: Vec::new(),
                files_end: None,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Like [`AgentClient::exec`], and the agent also creates `files` (empty) before the
    /// command starts and sends their directory back before the exit status
    /// ([`ExecHandle::take_files`]): a step's file commands in one round trip instead of
    /// three (create, exec, read).
    ///
    /// An agent older than this request answers that it cannot decode it and runs nothing;
    /// that fails here and [`AgentClient::supports_command_files`] turns false, so the
    /// caller can do the same with `put_tar`, [`AgentClient::exec`] and `get_tar`.
    pub async fn exec_with_files(
        &self,
        mut req: ExecRequest,
        files: CommandFiles,
    ) -> Result<ExecHandle, AgentError> {
        let big_stdin = match &req.stdin {
            Some(s) if s.len() > CHUNK_LEN => req.stdin.take(),
            _ => None,
        };
        let call = self.start(Request::ExecWithFiles {
            req,
            stdin_follows: big_stdin.is_some(),
            files,
        })?;
        if let Some(stdin) = big_stdin {
            self.send_bulk(call.id, &stdin)?;
        }
        self.started(call)
            .await
            .map_err(|e| self.note_unsupported(e))
    }

    /// Whether the agent handles [`AgentClient::exec_with_files`], [`AgentClient::remove_all`]
    /// and [`AgentClient::which`]; true until an agent turned one down.
    pub fn supports_command_files(&self) -> bool {
        !self.inner.no_command_files.load(Ordering::Relaxed)
    }

    /// Remembers an "undecodable request" answer (an agent older than the request).
    fn note_unsupported(&self, e: AgentError) -> AgentError {
        if let AgentError::Remote(m) = &e
            && m.starts_with("undecodable request")
        {
            self.inner.no_command_files.store(true, Ordering::Relaxed);
        }
        e
    }

    /// Where each of `names` is in the guest, searched like `command -v` through `path` (a
    /// `PATH` value), without starting a shell. Fails on an agent older than this request
    /// (see [`AgentClient::supports_command_files`]).
    pub async fn which(
        &self,
        names: &[&str],
        path: &str,
    ) -> Result<Vec<Option<String>>, AgentError> {
        let mut call = self.start(Request::Which {
            names: names.iter().map(|n| n.to_string()).collect(),
            path: path.to_owned(),
        })?;
        match self.answer(&mut call).await {
            Ok(Response::Found { paths }) if paths.len() == names.len() => Ok(paths),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(self.note_unsupported(e)),
        }
    }

    /// Remove a file or directory tree in the guest (`rm -rf`; a missing path is fine)
    /// without starting a process. Fails on an agent older than this request (see
    /// [`AgentClient::supports_command_files`]).
    pub async fn remove_all(&self, path: &str) -> Result<(), AgentError> {
        let call = self.start(Request::RemoveAll {
            path: path.to_owned(),
        })?;
        self.expect_ok(call)
            .await
            .map_err(|e| self.note_unsupported(e))
    }

    /// Run and collect all output.
    pub async fn exec_collect(&self, req: ExecRequest) -> Result<ExecOutput, AgentError> {
        self.exec(req).await?.collect().await
    }

    /// Kill the process group of a running command (SIGKILL at once). Succeeds when the
    /// command has already ended.
    pub async fn cancel(&self, exec_id: u64) -> Result<(), AgentError> {
        self.cancel_with_grace(exec_id, Duration::ZERO).await
    }

    /// Send SIGTERM to the process group of a running command, then SIGKILL after `grace`.
    pub async fn cancel_with_grace(&self, exec_id: u64, grace: Duration) -> Result<(), AgentError> {
        let call = self.start(Request::Cancel {
            target: exec_id,
            grace,
        })?;
        self.expect_ok(call).await
    }

    /// Send a signal to the process group of a running command.
    pub async fn signal(&self, exec_id: u64, signal: i32) -> Result<(), AgentError> {
        let call = self.start(Request::Signal {
            target: exec_id,
            signal,
        })?;
        self.expect_ok(call).await
    }

    /// Write `data` to `path` (parent directories created), then set its permission bits.
    pub async fn write_file(&self, path: &str, data: Vec<u8>, mode: u32) -> Result<(), AgentError> {
        let call = self.start(Request::WriteFile {
            path: path.to_owned(),
            mode,
        })?;
        self.send_bulk(call.id, &data)?;
        self.expect_ok(call).await
    }

    /// Read a whole file from the guest.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, AgentError> {
        let call = self.start(Request::ReadFile {
            path: path.to_owned(),
        })?;
        self.download(call).await
    }

    /// Unpack a tar stream into `dest` inside the guest.
    pub async fn put_tar(&self, dest: &str, tar: Vec<u8>) -> Result<(), AgentError> {
        let call = self.start(Request::PutTar {
            dest: dest.to_owned(),
        })?;
        self.send_bulk(call.id, &tar)?;
        self.expect_ok(call).await
    }

    /// Pack `path` inside the guest as a tar stream.
    pub async fn get_tar(&self, path: &str) -> Result<Vec<u8>, AgentError> {
        let call = self.start(Request::GetTar {
            path: path.to_owned(),
        })?;
        self.download(call).await
    }

    /// Round trip time.
    pub async fn ping(&self) -> Result<Duration, AgentError> {
        let started = Instant::now();
        let mut call = self.start(Request::Ping)?;
        match self.answer(&mut call).await? {
            Response::Pong => Ok(started.elapsed()),
            other => Err(unexpected(&other)),
        }
    }

    /// Check the protocol version explicitly; returns the agent's pid (1 when it is init).
    pub async fn hello(&self) -> Result<u32, AgentError> {
        let mut call = self.start(Request::Hello {
            version: PROTOCOL_VERSION,
        })?;
        match self.answer(&mut call).await? {
            Response::Hello { pid, .. } => Ok(pid),
            other => Err(unexpected(&other)),
        }
    }

    /// Ask the agent to kill everything and exit.
    pub async fn shutdown(&self) -> Result<(), AgentError> {
        let call = self.start(Request::Shutdown)?;
        self.expect_ok(call).await
    }
}

fn unexpected(r: &Response) -> AgentError {
    AgentError::Remote(format!("unexpected answer from agent: {r:?}"))
}

fn codec_to_agent(e: protocol::CodecError) -> AgentError {
    match e {
        protocol::CodecError::Io(e) => AgentError::Io(e),
        other => AgentError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, other)),
    }
}

async fn write_loop<W>(writer: W, mut queue: mpsc::UnboundedReceiver<Bytes>, shared: Arc<Shared>)
where
    W: AsyncWrite + Unpin,
{
    let mut sink = FramedWrite::new(writer, FrameCodec::new());
    loop {
        let payload = tokio::select! {
            p = queue.recv() => p,
            // Stop writing (and drop the writer) once the reader saw the agent go away.
            () = shared.closed.cancelled() => None,
        };
        let Some(payload) = payload else { break };
        let mut result = sink.feed(payload).await;
        // Batch whatever else is queued into the same flush.
        while result.is_ok() {
            match queue.try_recv() {
                Ok(p) => result = sink.feed(p).await,
                Err(_) => break,
            }
        }
        if let Err(e) = result.and(sink.flush().await) {
            tracing::debug!("agent channel write failed: {e}");
            shared.close(None);
            return;
        }
    }
    // All clients are gone (or the channel closed): close our side so the agent sees EOF.
    let _ = sink.close().await;
}

async fn read_loop<R>(reader: R, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin,
{
    let mut frames = FramedRead::new(reader, FrameCodec::new());
    while let Some(frame) = frames.next().await {
        match frame {
            Ok(InFrame::Payload(payload)) => match protocol::decode::<ResponseFrame>(&payload) {
                Ok(frame) => shared.route(frame),
                Err(e) => {
                    let id = protocol::peek_id(&payload).unwrap_or(CONNECTION_ID);
                    tracing::warn!(id, "undecodable answer from agent: {e}");
                    shared.route(ResponseFrame {
                        id,
                        body: Response::Error {
                            message: format!("undecodable answer from agent: {e}"),
                        },
                    });
                }
            },
            Ok(InFrame::Oversized { len, id }) => {
                let id = id.unwrap_or(CONNECTION_ID);
                shared.route(ResponseFrame {
                    id,
                    body: Response::Error {
                        message: format!("agent sent an oversized frame of {len} bytes"),
                    },
                });
            }
            Err(e) => {
                tracing::debug!("agent channel read failed: {e}");
                break;
            }
        }
    }
    shared.close(None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A scripted fake agent on the other end of a duplex pipe.
    async fn read_request(io: &mut (impl AsyncRead + Unpin)) -> RequestFrame {
        let len = io.read_u32().await.expect("frame header") as usize;
        let mut buf = vec![0; len];
        io.read_exact(&mut buf).await.expect("frame body");
        protocol::decode(&buf).expect("valid request")
    }

    async fn write_response(io: &mut (impl AsyncWrite + Unpin), id: u64, body: Response) {
        let payload = protocol::encode(&ResponseFrame { id, body }).expect("encodable");
        io.write_u32(payload.len() as u32).await.expect("write");
        io.write_all(&payload).await.expect("write");
    }

    /// An agent from before `ExecWithFiles` (e.g. in an older guest image) cannot decode it,
    /// answers so and runs nothing: the client reports the request as unsupported from then
    /// on, so callers fall back to put_tar + exec + get_tar.
    #[tokio::test]
    async fn an_older_agent_turns_command_files_off() {
        let (client_io, mut agent_io) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(client_io);
        let client = AgentClient::new(r, w);
        let hello = read_request(&mut agent_io).await;
        write_response(
            &mut agent_io,
            hello.id,
            Response::Hello {
                version: PROTOCOL_VERSION,
                pid: 1,
            },
        )
        .await;
        assert!(client.supports_command_files());
        let files = CommandFiles {
            dir: "/tmp/f".into(),
            names: vec!["env".into()],
            mode: 0o666,
        };
        let fake = async {
            let req = read_request(&mut agent_io).await;
            assert!(matches!(req.body, Request::ExecWithFiles { .. }));
            let message = "undecodable request: unknown variant".to_string();
            write_response(&mut agent_io, req.id, Response::Error { message }).await;
        };
        let (res, ()) = tokio::join!(
            client.exec_with_files(ExecRequest::argv(["true"]), files),
            fake
        );
        assert!(res.is_err());
        assert!(!client.supports_command_files());
    }

    #[tokio::test]
    async fn pending_requests_fail_when_channel_drops() {
        let (client_io, mut agent_io) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(client_io);
        let client = AgentClient::new(r, w);
        let hello = read_request(&mut agent_io).await;
        assert!(matches!(hello.body, Request::Hello { version } if version == PROTOCOL_VERSION));
        write_response(
            &mut agent_io,
            hello.id,
            Response::Hello {
                version: PROTOCOL_VERSION,
                pid: 1,
            },
        )
        .await;
        let c2 = client.clone();
        let ping = tokio::spawn(async move { c2.ping().await });
        let req = read_request(&mut agent_io).await;
        assert_eq!(req.body, Request::Ping);
        drop(agent_io);
        assert!(matches!(
            ping.await.expect("task"),
            Err(AgentError::ChannelClosed)
        ));
        client.closed().await;
        assert!(matches!(
            client.ping().await,
            Err(AgentError::ChannelClosed)
        ));
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AgentClient>();
        assert_send_sync::<ExecHandle>();
        assert_send_sync::<AgentError>();
    }

    #[tokio::test]
    async fn oversized_request_is_refused_locally() {
        let (client_io, mut agent_io) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(client_io);
        let client = AgentClient::new(r, w);
        let _hello = read_request(&mut agent_io).await;
        let huge = "x".repeat(protocol::MAX_FRAME_LEN + 1);
        match client.exec(ExecRequest::argv([huge])).await {
            Err(AgentError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput),
            other => panic!("expected a local error, got {other:?}"),
        }
        // The channel is unaffected.
        let c = client.clone();
        let ping = tokio::spawn(async move { c.ping().await });
        let req = read_request(&mut agent_io).await;
        assert_eq!(req.body, Request::Ping);
        write_response(&mut agent_io, req.id, Response::Pong).await;
        ping.await.expect("task").expect("pong");
    }

    #[tokio::test]
    async fn version_mismatch_fails_requests_with_reason() {
        let (client_io, mut agent_io) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(client_io);
        let client = AgentClient::new(r, w);
        let hello = read_request(&mut agent_io).await;
        write_response(
            &mut agent_io,
            hello.id,
            Response::Error {
                message: "unsupported protocol version 1".into(),
            },
        )
        .await;
        client.closed().await;
        match client.ping().await {
            Err(AgentError::Remote(m)) => assert!(m.contains("unsupported"), "{m}"),
            other => panic!("expected remote error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn responses_are_routed_by_id_and_exec_ends_with_exit() {
        let (client_io, mut agent_io) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(client_io);
        let client = AgentClient::new(r, w);
        let _hello = read_request(&mut agent_io).await;
        let c = client.clone();
        let exec = tokio::spawn(async move { c.exec_collect(ExecRequest::argv(["x"])).await });
        let req = read_request(&mut agent_io).await;
        let c = client.clone();
        let ping = tokio::spawn(async move { c.ping().await });
        let ping_req = read_request(&mut agent_io).await;
        // Interleave answers of both requests.
        write_response(&mut agent_io, req.id, Response::Started { pid: 42 }).await;
        write_response(&mut agent_io, ping_req.id, Response::Pong).await;
        write_response(
            &mut agent_io,
            req.id,
            Response::Output {
                stream: Stream::Stdout,
                data: b"out".to_vec(),
            },
        )
        .await;
        let status = ExitStatus {
            code: Some(3),
            signal: None,
            timed_out: false,
            cancelled: false,
            duration: Duration::from_millis(5),
        };
        write_response(&mut agent_io, req.id, Response::Exit(status.clone())).await;
        ping.await.expect("task").expect("pong");
        let out = exec.await.expect("task").expect("exit");
        assert_eq!(out.stdout, b"out");
        assert_eq!(out.status, status);
    }

    #[tokio::test]
    async fn exec_interrupted_by_channel_loss_reports_closed_once() {
        let (client_io, mut agent_io) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(client_io);
        let client = AgentClient::new(r, w);
        let _hello = read_request(&mut agent_io).await;
        let c = client.clone();
        let exec = tokio::spawn(async move { c.exec(ExecRequest::argv(["x"])).await });
        let req = read_request(&mut agent_io).await;
        write_response(&mut agent_io, req.id, Response::Started { pid: 42 }).await;
        let mut handle = exec.await.expect("task").expect("started");
        assert_eq!(handle.pid(), 42);
        drop(agent_io);
        assert!(matches!(
            handle.next().await,
            Some(Err(AgentError::ChannelClosed))
        ));
        assert!(handle.next().await.is_none());
    }
}
