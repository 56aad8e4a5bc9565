//! Running one command of a step in the VM: stream its output line by line through the
//! workflow-command processor and the masker into the event stream, honour cancellation and
//! timeouts, and collect what the step asked for (outputs, state, env, path, masks).

use crate::events::{EventBus, LogStream, RunEvent};
use crate::runtime::mask::Masker;
use crate::runtime::workflow_commands::{CommandProcessor, WorkflowCommand};
use ignis_agent::{AgentClient, CommandFiles, ExecEvent, ExecRequest, Stream};
use tokio_util::sync::CancellationToken;

/// Where the lines of a command go.
#[derive(Debug, Clone)]
pub(crate) struct LogTarget {
    pub bus: EventBus,
    pub masker: Masker,
    pub job_id: String,
    pub matrix: Option<serde_json::Value>,
    pub step_id: String,
}

impl LogTarget {
    pub fn log(&self, stream: LogStream, line: &str) {
        self.bus.emit(RunEvent::Log {
            job_id: self.job_id.clone(),
            matrix: self.matrix.clone(),
            step_id: self.step_id.clone(),
            stream,
            line: self.masker.mask(line),
        });
    }
}

/// Effects a step requested through workflow commands (file commands are read separately).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CommandEffects {
    pub outputs: Vec<(String, String)>,
    pub state: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub path: Vec<String>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    Cancelled,
    /// The agent or channel failed; the text says how.
    Failed(String),
}

impl Ended {
    pub fn success(&self) -> bool {
        matches!(self, Ended::Exited(0))
    }
}

/// The tar of a command's file command directory, or why the agent could not pack it;
/// `None` when the command was started without [`CommandFiles`] (or did not start).
pub(crate) type ReturnedFiles = Option<Result<Vec<u8>, String>>;

/// Run `req` and stream it. `cancel` stops it (the agent kills the process group). With
/// `files`, the agent creates them before the command and returns their directory.
pub(crate) async fn run(
    agent: &AgentClient,
    req: ExecRequest,
    target: &LogTarget,
    allow_unsecure: bool,
    cancel: &CancellationToken,
    files: Option<CommandFiles>,
) -> (Ended, CommandEffects, ReturnedFiles) {
    let mut effects = CommandEffects::default();
    if cancel.is_cancelled() {
        return (Ended::Cancelled, effects, None);
    }
    let started = match files {
        Some(f) => agent.exec_with_files(req, f).await,
        None => agent.exec(req).await,
    };
    let mut handle = match started {
        Ok(h) => h,
        Err(e) => {
            return (
                Ended::Failed(format!("starting the command failed: {e}")),
                effects,
                None,
            );
        }
    };
    let mut proc = CommandProcessor::new(allow_unsecure);
    let mut out_buf: Vec<u8> = Vec::new();
    let mut err_buf: Vec<u8> = Vec::new();
    let mut cancel_sent = false;
    let ended = loop {
        let ev = tokio::select! {
            ev = handle.next() => ev,
            _ = cancel.cancelled(), if !cancel_sent => {
                cancel_sent = true;
                // The exit arrives as an event with `cancelled` set.
                if let Err(e) = handle.cancel().await {
                    target.log(LogStream::System, &format!("cancelling the step failed: {e}"));
                }
                continue;
            }
        };
        match ev {
            Some(Ok(ExecEvent::Output(stream, bytes))) => {
                let buf = match stream {
                    Stream::Stdout => &mut out_buf,
                    Stream::Stderr => &mut err_buf,
                };
                buf.extend_from_slice(&bytes);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    handle_line(stream, &text, &mut proc, target, &mut effects);
                }
            }
            Some(Ok(ExecEvent::Exit(status))) => {
                break if status.cancelled || cancel_sent {
                    Ended::Cancelled
                } else if status.timed_out {
                    Ended::TimedOut
                } else if let Some(code) = status.code {
                    Ended::Exited(code)
                } else {
                    Ended::Signalled(status.signal.unwrap_or(0))
                };
            }
            Some(Err(e)) => break Ended::Failed(format!("lost the command: {e}")),
            None => break Ended::Failed("the command ended without an exit status".into()),
        }
    };
    for (stream, buf) in [(Stream::Stdout, out_buf), (Stream::Stderr, err_buf)] {
        if !buf.is_empty() {
            let text = String::from_utf8_lossy(&buf).into_owned();
            handle_line(stream, &text, &mut proc, target, &mut effects);
        }
    }
    (ended, effects, handle.take_files())
}

fn handle_line(
    stream: Stream,
    text: &str,
    proc: &mut CommandProcessor,
    target: &LogTarget,
    effects: &mut CommandEffects,
) {
    if stream == Stream::Stderr {
        target.log(LogStream::Stderr, text);
        return;
    }
    let processed = proc.line(text);
    // A mask must apply before the line that declared it is printed (echo on).
    if let Some(WorkflowCommand::AddMask(v)) = &processed.command {
        target.masker.add(v);
    }
    if let Some(line) = &processed.print {
        target.log(LogStream::Stdout, line);
    }
    let Some(cmd) = processed.command else { return };
    let m = |s: &str| target.masker.mask(s);
    match cmd {
        WorkflowCommand::AddMask(_) => {}
        WorkflowCommand::Group(title) => target.bus.emit(RunEvent::GroupStarted {
            job_id: target.job_id.clone(),
            matrix: target.matrix.clone(),
            step_id: target.step_id.clone(),
            title: m(&title),
        }),
        WorkflowCommand::EndGroup => target.bus.emit(RunEvent::GroupEnded {
            job_id: target.job_id.clone(),
            matrix: target.matrix.clone(),
            step_id: target.step_id.clone(),
        }),
        WorkflowCommand::Annotation {
            level,
            message,
            title,
            file,
            line,
            col,
        } => target.bus.emit(RunEvent::Annotation {
            job_id: target.job_id.clone(),
            matrix: target.matrix.clone(),
            step_id: target.step_id.clone(),
            level,
            message: m(&message),
            title: title.map(|t| m(&t)),
            file,
            line,
            col,
        }),
        WorkflowCommand::Debug(msg) => target.log(LogStream::System, &format!("##[debug]{msg}")),
        WorkflowCommand::SetOutput { name, value } => effects.outputs.push((name, value)),
        WorkflowCommand::SaveState { name, value } => effects.state.push((name, value)),
        WorkflowCommand::SetEnv { name, value } => effects.env.push((name, value)),
        WorkflowCommand::AddPath(p) => effects.path.push(p),
        WorkflowCommand::Invalid(why) => {
            target.log(LogStream::System, &format!("##[warning]{why}"))
        }
    }
}
