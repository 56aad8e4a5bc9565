//! The guest side: serve the protocol on one channel until the host goes away.
//!
//! One task reads frames and dispatches them; each command gets a task that streams its output
//! and reports its exit; one writer task frames every answer. Nothing the host sends can crash
//! the loop: undecodable or oversized frames are answered with an error under the best id
//! available. When the channel ends (EOF, I/O error) or the host asks to shut down, every
//! process group the agent created is killed before `serve` returns.

use crate::process::{self, Children, ReapMode};
use crate::protocol::{
    self, CHUNK_LEN, CONNECTION_ID, CommandFiles, ExecRequest, ExitStatus, FrameCodec, InFrame,
    PROTOCOL_VERSION, Program, Request, RequestFrame, Response, ResponseFrame, Stream,
};
use futures::{SinkExt, StreamExt};
use rustix::process::Signal;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};

/// How the agent behaves in its process.
#[derive(Debug, Clone, Copy)]
pub struct AgentConfig {
    /// Which exited children to collect (see [`ReapMode`]).
    pub reap: ReapMode,
    /// Running as init (PID 1): SIGTERM/SIGINT are forwarded to every command's process group
    /// instead of stopping the agent.
    pub init: bool,
}

impl AgentConfig {
    /// The configuration of the agent binary: reap everything, act as init when PID 1.
    pub fn for_binary() -> Self {
        AgentConfig {
            reap: ReapMode::All,
            init: rustix::process::getpid().is_init(),
        }
    }

    /// The configuration for serving inside a process that has other children (tests).
    pub fn in_process() -> Self {
        AgentConfig {
            reap: ReapMode::OwnChildren,
            init: false,
        }
    }
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeEnd {
    /// The channel reached EOF or failed: the host is gone.
    HostGone,
    /// The host sent `Shutdown`.
    Shutdown,
    /// The agent (not being init) got SIGTERM or SIGINT.
    Signalled,
}

/// Errors that stop the agent before it can serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The host denies signal handlers (seccomp?); without SIGCHLD no exit can be reported.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
}

/// Size of the buffer each output stream is read with; also the largest output chunk.
const OUTPUT_CHUNK: usize = 64 * 1024;
/// Answers queued for the writer before producers (output readers) wait.
const OUTGOING_QUEUE: usize = 256;
/// How long `serve` waits for killed commands to be reaped before returning.
const REAP_ON_EXIT: Duration = Duration::from_secs(2);

/// Serve the protocol on `reader`/`writer` until the host goes away or asks to shut down.
///
/// Every process group started is killed before this returns.
pub async fn serve<R, W>(reader: R, writer: W, config: AgentConfig) -> Result<ServeEnd, ServeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // SIGCHLD must be handled before the first spawn, or an early exit could go unnoticed.
    let mut sigchld = signal(SignalKind::child()).map_err(ServeError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;

    let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
    let writer_task = tokio::spawn(write_loop(writer, out_rx));
    let mut agent = Agent {
        out: Outbox(out_tx),
        children: Arc::new(Children::new(config.reap)),
        execs: Arc::new(Mutex::new(HashMap::new())),
        uploads: HashMap::new(),
        tasks: JoinSet::new(),
        shutdown_id: None,
    };
    let mut frames = FramedRead::new(reader, FrameCodec::new());

    let end = loop {
        tokio::select! {
            // Reaping first: a command's exit is reported as soon as it is known.
            biased;
            _ = sigchld.recv() => agent.children.reap(),
            // Forget finished tasks so a long session does not accumulate them.
            Some(_) = agent.tasks.join_next(), if !agent.tasks.is_empty() => {}
            frame = frames.next() => match frame {
                None => break ServeEnd::HostGone,
                Some(Err(e)) => {
                    tracing::warn!("host channel failed: {e}");
                    break ServeEnd::HostGone;
                }
                Some(Ok(InFrame::Payload(payload))) => {
                    match protocol::decode::<RequestFrame>(&payload) {
                        Ok(frame) => {
                            if agent.handle(frame).await {
                                break ServeEnd::Shutdown;
                            }
                        }
                        Err(e) => {
                            let id = protocol::peek_id(&payload).unwrap_or(CONNECTION_ID);
                            tracing::warn!(id, "undecodable request: {e}");
                            agent.out.error(id, format!("undecodable request: {e}")).await;
                        }
                    }
                }
                Some(Ok(InFrame::Oversized { len, id })) => {
                    let id = id.unwrap_or(CONNECTION_ID);
                    tracing::warn!(id, len, "oversized frame skipped");
                    let msg = format!(
                        "frame of {len} bytes exceeds the {} byte limit",
                        protocol::MAX_FRAME_LEN
                    );
                    agent.out.error(id, msg).await;
                }
            },
            _ = sigterm.recv() => {
                if !config.init { break ServeEnd::Signalled; }
                agent.children.signal_all(Signal::TERM);
            }
            _ = sigint.recv() => {
                if !config.init { break ServeEnd::Signalled; }
                agent.children.signal_all(Signal::INT);
            }
        }
    };

    agent.children.kill_all();
    if end == ServeEnd::Shutdown {
        // Answer the shutdown only once everything is dead, and make sure it is written.
        let (flushed_tx, flushed_rx) = oneshot::channel();
        let id = agent.shutdown_id.unwrap_or(CONNECTION_ID);
        agent.out.send(id, Response::Ok).await;
        let _ = agent.out.0.send(Outgoing::Flush(flushed_tx)).await;
        let _ = flushed_rx.await;
    }
    // Collect the killed commands so none is left a zombie (matters when not PID 1 of a
    // namespace, e.g. in tests); bounded, because SIGKILL is never ignored.
    let deadline = tokio::time::Instant::now() + REAP_ON_EXIT;
    agent.children.reap();
    while agent.children.running() > 0 {
        tokio::select! {
            _ = sigchld.recv() => agent.children.reap(),
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    agent.tasks.abort_all();
    drop(agent);
    writer_task.abort();
    Ok(end)
}

/// What the writer task is asked to do.
#[derive(Debug)]
enum Outgoing {
    Frame(ResponseFrame),
    /// Flush everything queued so far, then signal.
    Flush(oneshot::Sender<()>),
}

/// The sending side of the writer queue.
#[derive(Debug, Clone)]
struct Outbox(mpsc::Sender<Outgoing>);

impl Outbox {
    /// Queue an answer; silently dropped when the host is gone (nobody to tell).
    async fn send(&self, id: u64, body: Response) {
        let _ = self
            .0
            .send(Outgoing::Frame(ResponseFrame { id, body }))
            .await;
    }

    async fn error(&self, id: u64, message: String) {
        self.send(id, Response::Error { message }).await;
    }

    /// For blocking threads (tar, file reads).
    fn blocking_send(&self, id: u64, body: Response) -> bool {
        self.0
            .blocking_send(Outgoing::Frame(ResponseFrame { id, body }))
            .is_ok()
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(writer: W, mut queue: mpsc::Receiver<Outgoing>) {
    let mut sink = FramedWrite::new(writer, FrameCodec::new());
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        // Batch everything already queued into one flush.
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(frame) => {
                    let payload = match protocol::encode(&frame) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(id = frame.id, "cannot encode answer: {e}");
                            let fallback = ResponseFrame {
                                id: frame.id,
                                body: Response::Error {
                                    message: format!("agent cannot encode its answer: {e}"),
                                },
                            };
                            match protocol::encode(&fallback) {
                                Ok(p) => p,
                                Err(_) => continue,
                            }
                        }
                    };
                    if let Err(e) = sink.feed(payload).await {
                        tracing::warn!("host channel write failed: {e}");
                        return;
                    }
                }
                Outgoing::Flush(done) => {
                    let _ = sink.flush().await;
                    let _ = done.send(());
                }
            }
            next = queue.try_recv().ok();
        }
        if let Err(e) = sink.flush().await {
            tracing::warn!("host channel write failed: {e}");
            return;
        }
    }
}

/// Control block of a running command, shared by the dispatcher (signal, cancel) and the
/// command's task.
#[derive(Debug)]
struct ExecCtl {
    pgid: i32,
    cancelled: AtomicBool,
    finished: AtomicBool,
}

type ExecTable = Arc<Mutex<HashMap<u64, Arc<ExecCtl>>>>;

/// Where the bulk data of a request goes.
#[derive(Debug)]
enum Upload {
    File {
        file: std::fs::File,
        path: PathBuf,
        mode: u32,
        failed: Option<String>,
    },
    /// Chunks for a command's stdin or a tar unpacker.
    Channel(mpsc::UnboundedSender<Vec<u8>>),
    /// The request already failed and was answered; its remaining chunks are ignored.
    Discard,
}

struct Agent {
    out: Outbox,
    children: Arc<Children>,
    execs: ExecTable,
    uploads: HashMap<u64, Upload>,
    /// Command and helper tasks; aborted when `serve` returns.
    tasks: JoinSet<()>,
    /// Id of the `Shutdown` request, answered after everything is killed.
    shutdown_id: Option<u64>,
}

fn lock_execs(execs: &ExecTable) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ExecCtl>>> {
    // Every critical section is a single insert/remove/lookup: a poisoned map is consistent.
    execs.lock().unwrap_or_else(|e| e.into_inner())
}

/// Test hook: with `IGNIS_AGENT_TEST_PROTOCOL_1` set, the agent answers the requests added
/// after protocol version 1 the way a version-1 agent does ("undecodable request", nothing
/// run), so that callers' fallbacks for agents in older guest images can be tested end to
/// end. Read once.
fn emulates_protocol_1() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("IGNIS_AGENT_TEST_PROTOCOL_1").is_some())
}

/// Resolve a guest path from the host: relative paths are taken from `/`, like a missing cwd.
fn guest_path(p: &str) -> PathBuf {
    Path::new("/").join(p)
}

impl Agent {
    fn id_in_use(&self, id: u64) -> bool {
        self.uploads.contains_key(&id) || lock_execs(&self.execs).contains_key(&id)
    }

    /// Handle one request; returns true when the agent should shut down.
    async fn handle(&mut self, frame: RequestFrame) -> bool {
        let RequestFrame { id, body } = frame;
        let starts_request = !matches!(body, Request::Data(_) | Request::End);
        if starts_request && (id == CONNECTION_ID || self.id_in_use(id)) {
            self.out
                .error(id, format!("request id {id} is reserved or in use"))
                .await;
            return false;
        }
        if emulates_protocol_1()
            && matches!(
                body,
                Request::ExecWithFiles { .. } | Request::RemoveAll { .. } | Request::Which { .. }
            )
        {
            if matches!(
                body,
                Request::ExecWithFiles {
                    stdin_follows: true,
                    ..
                }
            ) {
                self.uploads.insert(id, Upload::Discard);
            }
            let msg =
                "undecodable request: emulating a protocol-1 agent (IGNIS_AGENT_TEST_PROTOCOL_1)";
            self.out.error(id, msg.to_owned()).await;
            return false;
        }
        match body {
            Request::Hello { version } => {
                if version == PROTOCOL_VERSION {
                    let pid = rustix::process::getpid()
                        .as_raw_nonzero()
                        .get()
                        .unsigned_abs();
                    let body = Response::Hello {
                        version: PROTOCOL_VERSION,
                        pid,
                    };
                    self.out.send(id, body).await;
                } else {
                    let msg = format!(
                        "unsupported protocol version {version} (agent speaks {PROTOCOL_VERSION})"
                    );
                    self.out.error(id, msg).await;
                }
            }
            Request::Ping => self.out.send(id, Response::Pong).await,
            Request::Shutdown => {
                self.shutdown_id = Some(id);
                return true;
            }
            Request::Exec { req, stdin_follows } => self.exec(id, req, stdin_follows, None).await,
            Request::ExecWithFiles {
                req,
                stdin_follows,
                files,
            } => self.exec(id, req, stdin_follows, Some(files)).await,
            Request::Which { names, path } => {
                let paths = names
                    .iter()
                    .map(|n| {
                        (!n.is_empty() && !n.contains('/'))
                            .then(|| resolve_program(n, Some(&path), Path::new("/")).ok())
                            .flatten()
                            .map(|p| p.to_string_lossy().into_owned())
                    })
                    .collect();
                self.out.send(id, Response::Found { paths }).await;
            }
            Request::RemoveAll { path } => {
                let out = self.out.clone();
                let path = guest_path(&path);
                tokio::task::spawn_blocking(move || {
                    let answer = match remove_all(&path) {
                        Ok(()) => Response::Ok,
                        Err(e) => Response::Error {
                            message: format!("remove {}: {e}", path.display()),
                        },
                    };
                    out.blocking_send(id, answer);
                });
            }
            Request::Signal { target, signal } => {
                let ctl = lock_execs(&self.execs).get(&target).cloned();
                let result = match (ctl, process::signal_from_raw(signal)) {
                    (_, None) => Err(format!("invalid signal number {signal}")),
                    (None, _) => Err(format!("no running command with id {target}")),
                    (Some(ctl), Some(sig)) => process::kill_group(ctl.pgid, sig)
                        .map_err(|e| format!("signal process group {}: {e}", ctl.pgid)),
                };
                match result {
                    Ok(()) => self.out.send(id, Response::Ok).await,
                    Err(msg) => self.out.error(id, msg).await,
                }
            }
            Request::Cancel { target, grace } => {
                let ctl = lock_execs(&self.execs).get(&target).cloned();
                if let Some(ctl) = ctl {
                    ctl.cancelled.store(true, Ordering::SeqCst);
                    if grace.is_zero() {
                        let _ = process::kill_group(ctl.pgid, Signal::KILL);
                    } else {
                        let _ = process::kill_group(ctl.pgid, Signal::TERM);
                        self.tasks.spawn(async move {
                            tokio::time::sleep(grace).await;
                            if !ctl.finished.load(Ordering::SeqCst) {
                                let _ = process::kill_group(ctl.pgid, Signal::KILL);
                            }
                        });
                    }
                }
                self.out.send(id, Response::Ok).await;
            }
            Request::WriteFile { path, mode } => {
                let path = guest_path(&path);
                match open_for_write(&path) {
                    Ok(file) => {
                        let upload = Upload::File {
                            file,
                            path,
                            mode,
                            failed: None,
                        };
                        self.uploads.insert(id, upload);
                    }
                    Err(msg) => {
                        self.uploads.insert(id, Upload::Discard);
                        self.out.error(id, msg).await;
                    }
                }
            }
            Request::ReadFile { path } => {
                let out = self.out.clone();
                let path = guest_path(&path);
                tokio::task::spawn_blocking(move || read_file(&out, id, &path));
            }
            Request::PutTar { dest } => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.uploads.insert(id, Upload::Channel(tx));
                let out = self.out.clone();
                let dest = guest_path(&dest);
                tokio::task::spawn_blocking(move || {
                    let answer = match unpack_tar(rx, &dest) {
                        Ok(()) => Response::Ok,
                        Err(e) => Response::Error {
                            message: format!("unpack tar into {}: {e}", dest.display()),
                        },
                    };
                    out.blocking_send(id, answer);
                });
            }
            Request::GetTar { path } => {
                let out = self.out.clone();
                let path = guest_path(&path);
                tokio::task::spawn_blocking(move || {
                    let answer = match pack_tar(&out, id, &path) {
                        Ok(()) => Response::Done,
                        Err(e) => Response::Error {
                            message: format!("pack {} as tar: {e}", path.display()),
                        },
                    };
                    out.blocking_send(id, answer);
                });
            }
            Request::Data(chunk) => match self.uploads.get_mut(&id) {
                Some(Upload::File { file, failed, .. }) => {
                    if failed.is_none()
                        && let Err(e) = file.write_all(&chunk)
                    {
                        *failed = Some(e.to_string());
                    }
                }
                // The consumer may have stopped early (command closed stdin, bad tar); the
                // rest of the data has nowhere to go and is dropped.
                Some(Upload::Channel(tx)) => {
                    let _ = tx.send(chunk);
                }
                Some(Upload::Discard) => {}
                None => {
                    self.out
                        .error(id, format!("no upload in progress for id {id}"))
                        .await
                }
            },
            Request::End => match self.uploads.remove(&id) {
                Some(Upload::File {
                    file,
                    path,
                    mode,
                    failed,
                }) => {
                    let result = match failed {
                        Some(e) => Err(e),
                        None => file
                            .set_permissions(std::fs::Permissions::from_mode(mode))
                            .map_err(|e| e.to_string()),
                    };
                    match result {
                        Ok(()) => self.out.send(id, Response::Ok).await,
                        Err(e) => {
                            self.out
                                .error(id, format!("write {}: {e}", path.display()))
                                .await
                        }
                    }
                }
                // Closing the channel tells the consumer the data is complete.
                Some(Upload::Channel(_)) | Some(Upload::Discard) => {}
                None => {
                    self.out
                        .error(id, format!("no upload in progress for id {id}"))
                        .await
                }
            },
        }
        false
    }

    async fn exec(
        &mut self,
        id: u64,
        req: ExecRequest,
        stdin_follows: bool,
        files: Option<CommandFiles>,
    ) {
        let built = build_command(&req).and_then(|cmd| {
            if let Some(f) = &files {
                create_command_files(f)?;
            }
            Ok(cmd)
        });
        let mut cmd = match built {
            Ok(cmd) => cmd,
            Err(msg) => {
                if stdin_follows {
                    self.uploads.insert(id, Upload::Discard);
                }
                self.out.error(id, msg).await;
                return;
            }
        };
        let inline_stdin = if stdin_follows { None } else { req.stdin };
        let wants_stdin = stdin_follows || inline_stdin.is_some();
        cmd.stdin(if wants_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let spawned = self.children.spawn(&mut cmd);
        let (mut child, exit_rx) = match spawned {
            Ok(c) => c,
            Err(e) => {
                if stdin_follows {
                    self.uploads.insert(id, Upload::Discard);
                }
                let argv0 = cmd.get_program().to_string_lossy().into_owned();
                self.out
                    .error(id, format!("cannot run {argv0:?}: {e}"))
                    .await;
                return;
            }
        };
        let started = Instant::now();
        // Cast is lossless: pids are positive i32 values on Linux.
        let pid = child.id() as i32;
        let pipes = (|| -> std::io::Result<_> {
            let to_pipe = |fd: Option<OwnedFd>| -> std::io::Result<pipe::Receiver> {
                let fd = fd.ok_or_else(|| std::io::Error::other("output pipe missing"))?;
                pipe::Receiver::from_owned_fd(fd)
            };
            let stdout = to_pipe(child.stdout.take().map(OwnedFd::from))?;
            let stderr = to_pipe(child.stderr.take().map(OwnedFd::from))?;
            let stdin = match child.stdin.take() {
                Some(s) => Some(pipe::Sender::from_owned_fd(OwnedFd::from(s))?),
                None => None,
            };
            Ok((stdout, stderr, stdin))
        })();
        let (stdout, stderr, stdin) = match pipes {
            Ok(p) => p,
            Err(e) => {
                let _ = process::kill_group(pid, Signal::KILL);
                if stdin_follows {
                    self.uploads.insert(id, Upload::Discard);
                }
                self.out
                    .error(id, format!("cannot set up pipes: {e}"))
                    .await;
                return;
            }
        };
        let ctl = Arc::new(ExecCtl {
            pgid: pid,
            cancelled: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        });
        lock_execs(&self.execs).insert(id, ctl.clone());
        self.out
            .send(
                id,
                Response::Started {
                    pid: pid.unsigned_abs(),
                },
            )
            .await;

        if let Some(mut sink) = stdin {
            if stdin_follows {
                let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
                self.uploads.insert(id, Upload::Channel(tx));
                self.tasks.spawn(async move {
                    while let Some(chunk) = rx.recv().await {
                        // EPIPE: the command closed stdin; the rest is dropped.
                        if sink.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                });
            } else if let Some(bytes) = inline_stdin {
                self.tasks.spawn(async move {
                    let _ = sink.write_all(&bytes).await;
                });
            }
        }

        let out = self.out.clone();
        let execs = self.execs.clone();
        let timeout = req.timeout;
        self.tasks.spawn(async move {
            let run = Run {
                id,
                out,
                ctl,
                started,
                files: files.map(|f| guest_path(&f.dir)),
            };
            run.wait(stdout, stderr, exit_rx, timeout, execs).await;
        });
    }
}

/// Turn a request into a command: program, arguments, environment, working directory.
fn build_command(req: &ExecRequest) -> Result<Command, String> {
    let cwd = guest_path(req.cwd.as_deref().unwrap_or("/"));
    match std::fs::metadata(&cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "working directory {} is not a directory",
                cwd.display()
            ));
        }
        Err(e) => return Err(format!("working directory {}: {e}", cwd.display())),
    }
    let argv = match &req.program {
        Program::Argv(argv) => argv.clone(),
        Program::Script { shell, body, path } => {
            let script = cwd.join(path);
            write_script(&script, body)?;
            let script = script.to_string_lossy().into_owned();
            shell_argv(shell, &script)
        }
    };
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command line".to_owned());
    };
    let resolved = resolve_program(program, req.env.get("PATH").map(String::as_str), &cwd)?;
    let mut cmd = Command::new(resolved);
    std::os::unix::process::CommandExt::arg0(&mut cmd, program);
    cmd.args(args).env_clear().envs(&req.env).current_dir(&cwd);
    Ok(cmd)
}

/// PATH used when the request's environment has none (what a login shell would get).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Find the executable for `argv0` the way `execvp` would, using the command's own PATH and
/// working directory.
///
/// Resolving here (instead of letting `std` search) keeps `Command::spawn` on its
/// `posix_spawn` (vfork) path, which `std` leaves for a full fork when the child's PATH differs
/// from ours; it also gives a clear "not found" error naming the PATH searched.
fn resolve_program(argv0: &str, path: Option<&str>, cwd: &Path) -> Result<PathBuf, String> {
    let executable =
        |p: &Path| p.is_file() && rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok();
    if argv0.contains('/') {
        // Relative paths are relative to the command's working directory, as in a shell there.
        return Ok(cwd.join(argv0));
    }
    let path = path.unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| cwd.join(dir).join(argv0))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| format!("command not found: {argv0:?} (PATH={path})"))
}

/// Creates a command's file command directory and its files, empty (an existing file is
/// truncated and gets `mode`).
fn create_command_files(files: &CommandFiles) -> Result<(), String> {
    let dir = guest_path(&files.dir);
    let fail = |p: &Path, e: std::io::Error| format!("create {}: {e}", p.display());
    std::fs::create_dir_all(&dir).map_err(|e| fail(&dir, e))?;
    for name in &files.names {
        // One plain name per file: nothing may land outside the directory.
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!("invalid command file name {name:?}"));
        }
        let path = dir.join(name);
        // A fresh file, as the runner creates: whatever else has the name (a symlink an
        // earlier command planted, say) is removed, never followed.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
            std::fs::remove_file(&path).map_err(|e| fail(&path, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(files.mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| fail(&path, e))?;
        file.set_permissions(std::fs::Permissions::from_mode(files.mode))
            .map_err(|e| fail(&path, e))?;
    }
    Ok(())
}

/// Largest directory [`pack_small_dir`] packs on the agent's own thread.
const SMALL_DIR_BYTES: u64 = 256 * 1024;

/// A tar of `dir`'s contents when it is small and flat (regular files and symlinks only, at
/// most [`SMALL_DIR_BYTES`] in total); `None` when it is not, so the caller packs it on a
/// blocking thread. Symlinks are archived as links, as [`pack_tar`] does.
fn pack_small_dir(dir: &Path) -> Option<std::io::Result<Vec<u8>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return Some(Err(e)),
    };
    let mut total = 0u64;
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        if meta.is_dir() {
            return None;
        }
        total += meta.len();
        if total > SMALL_DIR_BYTES {
            return None;
        }
        names.push(entry.file_name());
    }
    names.sort();
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let packed = (|| {
        for name in &names {
            builder.append_path_with_name(dir.join(name), name)?;
        }
        builder.into_inner()
    })();
    Some(packed)
}

/// `rm -rf` for one guest path: a missing path is not an error, a symlink is removed itself.
fn remove_all(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    }
}

/// Write a script file, creating its parent directories, executable by its owner only.
fn write_script(path: &Path, body: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("write script {}: {e}", path.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o700)
        .open(path)
        .map_err(fail)?;
    file.write_all(body.as_bytes()).map_err(fail)?;
    // An existing file keeps its old mode on open; the script must be 0700 regardless.
    file.set_permissions(std::fs::Permissions::from_mode(0o700))
        .map_err(fail)
}

/// The shell's argv with `{0}` replaced by the script path, or the path appended when no
/// argument mentions `{0}` (GitHub's `shell:` semantics).
fn shell_argv(shell: &[String], script: &str) -> Vec<String> {
    let mut argv: Vec<String> = shell.iter().map(|a| a.replace("{0}", script)).collect();
    if !shell.iter().any(|a| a.contains("{0}")) && !shell.is_empty() {
        argv.push(script.to_owned());
    }
    argv
}

fn open_for_write(path: &Path) -> Result<std::fs::File, String> {
    let fail = |e: std::io::Error| format!("write {}: {e}", path.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)
}

fn read_file(out: &Outbox, id: u64, path: &Path) {
    let result = (|| -> std::io::Result<bool> {
        let mut file = std::fs::File::open(path)?;
        let mut buf = vec![0; CHUNK_LEN];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(true);
            }
            if !out.blocking_send(id, Response::Data(buf[..n].to_vec())) {
                return Ok(false);
            }
        }
    })();
    match result {
        Ok(true) => {
            out.blocking_send(id, Response::Done);
        }
        Ok(false) => {}
        Err(e) => {
            out.blocking_send(
                id,
                Response::Error {
                    message: format!("read {}: {e}", path.display()),
                },
            );
        }
    }
}

/// A blocking reader over chunks arriving on a channel (the host's tar upload).
struct ChunkReader {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn unpack_tar(rx: mpsc::UnboundedReceiver<Vec<u8>>, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut reader = ChunkReader {
        rx,
        chunk: Vec::new(),
        pos: 0,
    };
    let mut archive = tar::Archive::new(&mut reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    // `unpack` refuses entries that would land outside `dest` (`..`, absolute paths).
    archive.unpack(dest)?;
    // Consume the rest (padding after the end marker) so the answer follows the whole upload.
    std::io::copy(&mut reader, &mut std::io::sink())?;
    Ok(())
}

/// A blocking writer that ships what it is given as `Data` chunks of a download.
struct ChunkWriter<'a> {
    out: &'a Outbox,
    id: u64,
    buf: Vec<u8>,
}

impl ChunkWriter<'_> {
    fn ship(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_LEN));
        if self.out.blocking_send(self.id, Response::Data(chunk)) {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "host channel closed",
            ))
        }
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK_LEN - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_LEN {
            self.ship()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.ship()
    }
}

fn pack_tar(out: &Outbox, id: u64, path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut writer = ChunkWriter {
        out,
        id,
        buf: Vec::with_capacity(CHUNK_LEN),
    };
    {
        let mut builder = tar::Builder::new(&mut writer);
        // Symlinks are archived as links, not followed (they may point outside `path`).
        builder.follow_symlinks(false);
        if meta.is_dir() {
            builder.append_dir_all(".", path)?;
        } else {
            let name = path
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("file"));
            builder.append_path_with_name(path, name)?;
        }
        builder.finish()?;
    }
    writer.flush()
}

/// The task that follows one command to its end.
struct Run {
    id: u64,
    out: Outbox,
    ctl: Arc<ExecCtl>,
    started: Instant,
    /// The file command directory to send back before the exit status (`ExecWithFiles`).
    files: Option<PathBuf>,
}

impl Run {
    async fn wait(
        self,
        mut stdout: pipe::Receiver,
        mut stderr: pipe::Receiver,
        mut exit_rx: oneshot::Receiver<std::process::ExitStatus>,
        timeout: Option<Duration>,
        execs: ExecTable,
    ) {
        let mut out_buf = vec![0u8; OUTPUT_CHUNK];
        let mut err_buf = vec![0u8; OUTPUT_CHUNK];
        let (mut out_open, mut err_open) = (true, true);
        let mut timed_out = false;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let far_future = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let sleep = tokio::time::sleep_until(deadline.unwrap_or(far_future));
        tokio::pin!(sleep);
        let status = loop {
            tokio::select! {
                r = stdout.read(&mut out_buf), if out_open => match r {
                    Ok(n) if n > 0 => self.output(Stream::Stdout, &out_buf[..n]).await,
                    _ => out_open = false,
                },
                r = stderr.read(&mut err_buf), if err_open => match r {
                    Ok(n) if n > 0 => self.output(Stream::Stderr, &err_buf[..n]).await,
                    _ => err_open = false,
                },
                st = &mut exit_rx => break st.ok(),
                () = &mut sleep, if deadline.is_some() && !timed_out => {
                    timed_out = true;
                    let _ = process::kill_group(self.ctl.pgid, Signal::KILL);
                }
            }
        };
        let duration = self.started.elapsed();
        // Everything the command wrote before exiting is already in the pipes: take it without
        // waiting for EOF, which a background process holding the pipes may delay forever.
        if out_open {
            out_open = self.drain(&stdout, Stream::Stdout, &mut out_buf).await;
        }
        if err_open {
            err_open = self.drain(&stderr, Stream::Stderr, &mut err_buf).await;
        }
        self.ctl.finished.store(true, Ordering::SeqCst);
        lock_execs(&execs).remove(&self.id);
        let exit = match status {
            Some(st) => ExitStatus {
                code: st.code(),
                signal: st.signal(),
                timed_out,
                cancelled: self.ctl.cancelled.load(Ordering::SeqCst),
                duration,
            },
            None => {
                // The waiter was dropped: the agent is shutting down.
                return;
            }
        };
        if let Some(dir) = &self.files {
            self.send_files(dir).await;
        }
        self.out.send(self.id, Response::Exit(exit)).await;
        // Keep reading (and discarding) what background processes still write, so they do not
        // die of SIGPIPE just because the command that started them finished.
        while out_open || err_open {
            tokio::select! {
                r = stdout.read(&mut out_buf), if out_open => {
                    if !matches!(r, Ok(n) if n > 0) { out_open = false; }
                }
                r = stderr.read(&mut err_buf), if err_open => {
                    if !matches!(r, Ok(n) if n > 0) { err_open = false; }
                }
            }
        }
    }

    /// The command's file command directory as a tar (`Data` chunks), then `FilesEnd`. A
    /// small flat directory (the usual case: five short files) is packed right here, which
    /// spares a thread hop per step; anything bigger goes to a blocking thread.
    async fn send_files(&self, dir: &Path) {
        let error = match pack_small_dir(dir) {
            Some(Ok(tar)) => {
                for chunk in tar.chunks(CHUNK_LEN) {
                    self.out.send(self.id, Response::Data(chunk.to_vec())).await;
                }
                None
            }
            Some(Err(e)) => Some(format!("pack {} as tar: {e}", dir.display())),
            None => {
                let (out, id, dir) = (self.out.clone(), self.id, dir.to_path_buf());
                let packed = tokio::task::spawn_blocking(move || pack_tar(&out, id, &dir)).await;
                match packed {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!(
                        "pack {} as tar: {e}",
                        self.files.as_deref().unwrap_or(Path::new("?")).display()
                    )),
                    Err(e) => Some(format!("packing task failed: {e}")),
                }
            }
        };
        self.out.send(self.id, Response::FilesEnd { error }).await;
    }

    async fn output(&self, stream: Stream, data: &[u8]) {
        let body = Response::Output {
            stream,
            data: data.to_vec(),
        };
        self.out.send(self.id, body).await;
    }

    /// Read what is buffered in a pipe without waiting; returns whether it is still open.
    async fn drain(&self, pipe: &pipe::Receiver, stream: Stream, buf: &mut [u8]) -> bool {
        loop {
            match rustix::io::read(pipe.as_fd(), &mut *buf) {
                Ok(0) => return false,
                Ok(n) => self.output(stream, &buf[..n]).await,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return true,
                Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_argv_substitutes_or_appends() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shell_argv(&s(&["bash", "-e", "{0}"]), "/t/s.sh"),
            s(&["bash", "-e", "/t/s.sh"])
        );
        assert_eq!(
            shell_argv(&s(&["pwsh", "-command", ". '{0}'"]), "/t/s.ps1"),
            s(&["pwsh", "-command", ". '/t/s.ps1'"])
        );
        assert_eq!(shell_argv(&s(&["sh", "-e"]), "/x"), s(&["sh", "-e", "/x"]));
    }

    #[test]
    fn programs_resolve_through_the_commands_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        let path = format!("/nonexistent:{}", bin.display());
        assert!(resolve_program("tool", Some(&path), dir.path()).is_err());
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(resolve_program("tool", Some(&path), dir.path()), Ok(tool));
        // Empty PATH entries and relative ones are taken from the working directory.
        assert_eq!(
            resolve_program("tool", Some("bin"), dir.path()),
            Ok(dir.path().join("bin/tool"))
        );
        assert_eq!(
            resolve_program("./x", None, Path::new("/w")),
            Ok(PathBuf::from("/w/./x"))
        );
        let err = resolve_program("no-such-tool", Some("/bin"), dir.path()).expect_err("none");
        assert!(err.contains("command not found"), "{err}");
    }

    #[test]
    fn relative_guest_paths_start_at_root() {
        assert_eq!(guest_path("a/b"), PathBuf::from("/a/b"));
        assert_eq!(guest_path("/a/b"), PathBuf::from("/a/b"));
    }

    /// Start `serve` on one end of a duplex pipe; return the host end.
    fn start_agent() -> (
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<Result<ServeEnd, ServeError>>,
    ) {
        let (host, agent) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(async move {
            let (r, w) = tokio::io::split(agent);
            serve(r, w, AgentConfig::in_process()).await
        });
        (host, task)
    }

    async fn send_raw(io: &mut tokio::io::DuplexStream, payload: &[u8]) {
        io.write_u32(payload.len() as u32)
            .await
            .expect("write header");
        io.write_all(payload).await.expect("write payload");
    }

    async fn send(io: &mut tokio::io::DuplexStream, id: u64, body: Request) {
        let payload = protocol::encode(&RequestFrame { id, body }).expect("encodable");
        send_raw(io, &payload).await;
    }

    async fn recv(io: &mut tokio::io::DuplexStream) -> ResponseFrame {
        let len = io.read_u32().await.expect("read header") as usize;
        let mut buf = vec![0; len];
        io.read_exact(&mut buf).await.expect("read payload");
        protocol::decode(&buf).expect("decodable answer")
    }

    #[tokio::test]
    async fn garbage_gets_error_reply_and_agent_keeps_serving() {
        let (mut host, task) = start_agent();
        // A valid id varint followed by an invalid variant tag.
        send_raw(&mut host, &[5, 0xff, 0xff, 0xff]).await;
        let r = recv(&mut host).await;
        assert_eq!(r.id, 5);
        assert!(matches!(r.body, Response::Error { .. }), "{r:?}");
        // Not even an id: an unterminated varint.
        send_raw(&mut host, &[0x80]).await;
        let r = recv(&mut host).await;
        assert_eq!(r.id, CONNECTION_ID);
        assert!(matches!(r.body, Response::Error { .. }), "{r:?}");
        // An empty frame.
        send_raw(&mut host, &[]).await;
        assert_eq!(recv(&mut host).await.id, CONNECTION_ID);
        // Still alive.
        send(&mut host, 6, Request::Ping).await;
        assert_eq!(
            recv(&mut host).await,
            ResponseFrame {
                id: 6,
                body: Response::Pong
            }
        );
        drop(host);
        assert_eq!(
            task.await.expect("join").expect("serve"),
            ServeEnd::HostGone
        );
    }

    #[tokio::test]
    async fn random_payloads_get_errors_and_never_stop_the_agent() {
        let (mut host, task) = start_agent();
        // Deterministic xorshift: reproducible without a dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut sent = 0;
        while sent < 500 {
            let len = (next() % 48) as usize;
            let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Payloads that happen to be valid requests are not sent: they could act on the host
            // (write a file, run a command); only garbage is the point here.
            if protocol::decode::<RequestFrame>(&payload).is_ok() {
                continue;
            }
            send_raw(&mut host, &payload).await;
            let answer = recv(&mut host).await;
            assert!(
                matches!(answer.body, Response::Error { .. }),
                "{payload:?} -> {answer:?}"
            );
            sent += 1;
        }
        send(&mut host, 1, Request::Ping).await;
        assert_eq!(recv(&mut host).await.body, Response::Pong);
        drop(host);
        assert_eq!(
            task.await.expect("join").expect("serve"),
            ServeEnd::HostGone
        );
    }

    #[tokio::test]
    async fn oversized_frame_is_skipped_with_error_reply() {
        let (mut host, task) = start_agent();
        let big = protocol::encode(&RequestFrame {
            id: 9,
            body: Request::Data(vec![7; protocol::MAX_FRAME_LEN]),
        })
        .err();
        // encode() itself refuses it; build the frame by hand, like a hostile host would.
        assert!(big.is_some());
        let mut payload = postcard::to_allocvec(&RequestFrame {
            id: 9,
            body: Request::Data(vec![7; protocol::MAX_FRAME_LEN]),
        })
        .expect("postcard");
        assert!(payload.len() > protocol::MAX_FRAME_LEN);
        let writer = tokio::spawn(async move {
            send_raw(&mut host, &payload).await;
            payload.clear();
            send(&mut host, 10, Request::Ping).await;
            host
        });
        // The agent answers while the rest of the frame is still being skipped, so read
        // concurrently with the writer (duplex buffers are bounded).
        let mut host = writer.await.expect("writer");
        let first = recv(&mut host).await;
        assert_eq!(first.id, 9);
        match first.body {
            Response::Error { message } => assert!(message.contains("exceeds"), "{message}"),
            other => panic!("expected an error, got {other:?}"),
        }
        assert_eq!(
            recv(&mut host).await,
            ResponseFrame {
                id: 10,
                body: Response::Pong
            }
        );
        drop(host);
        assert_eq!(
            task.await.expect("join").expect("serve"),
            ServeEnd::HostGone
        );
    }

    #[tokio::test]
    async fn wrong_version_and_reused_ids_are_refused() {
        let (mut host, task) = start_agent();
        send(&mut host, 1, Request::Hello { version: 999 }).await;
        assert!(matches!(recv(&mut host).await.body, Response::Error { .. }));
        send(
            &mut host,
            2,
            Request::Hello {
                version: PROTOCOL_VERSION,
            },
        )
        .await;
        assert!(matches!(recv(&mut host).await.body, Response::Hello { .. }));
        send(&mut host, CONNECTION_ID, Request::Ping).await;
        assert!(matches!(recv(&mut host).await.body, Response::Error { .. }));
        send(&mut host, 3, Request::End).await;
        assert!(matches!(recv(&mut host).await.body, Response::Error { .. }));
        send(&mut host, 4, Request::Shutdown).await;
        assert_eq!(recv(&mut host).await.body, Response::Ok);
        assert_eq!(
            task.await.expect("join").expect("serve"),
            ServeEnd::Shutdown
        );
    }

    #[tokio::test]
    async fn in_process_exec_streams_and_exits() {
        let (mut host, task) = start_agent();
        let mut req = ExecRequest::argv(["sh", "-c", "printf out; printf err >&2; exit 3"]);
        req.env.insert("PATH".into(), "/usr/bin:/bin".into());
        send(
            &mut host,
            1,
            Request::Exec {
                req,
                stdin_follows: false,
            },
        )
        .await;
        assert!(matches!(
            recv(&mut host).await.body,
            Response::Started { .. }
        ));
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = loop {
            match recv(&mut host).await.body {
                Response::Output {
                    stream: Stream::Stdout,
                    data,
                } => stdout.extend(data),
                Response::Output {
                    stream: Stream::Stderr,
                    data,
                } => stderr.extend(data),
                Response::Exit(st) => break st,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(
            (stdout.as_slice(), stderr.as_slice()),
            (&b"out"[..], &b"err"[..])
        );
        assert_eq!(status.code, Some(3));
        drop(host);
        assert_eq!(
            task.await.expect("join").expect("serve"),
            ServeEnd::HostGone
        );
    }
}
