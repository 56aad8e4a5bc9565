//! The `WorkflowExecutor`: create the session (one VM) -> setup commands -> jobs as a true
//! DAG -> cleanup commands (always) -> final state -> release. With `Isolation::Job` every job
//! leg gets its own session instead. **Nothing inside the job or step loops allocates a VM**:
//! legs receive the session they run in.

mod exprs;
mod hash_files;
mod job;
mod managed;
mod process;
pub mod sessions;

pub use job::{DEFAULT_JOB_TIMEOUT_MINUTES, LegResult, LegSpec};
pub use managed::ManagerSessions;
pub use sessions::{LiveSession, ProviderSessions, SessionInfo, SessionSource, Snapshotter};

use crate::events::{EventBus, JobResult, Phase, RunEvent};
use crate::runs::{RunJournal, SessionRun, SnapshotRef, WorkflowRun};
use crate::runtime::contexts::{self, RunInfo};
use crate::runtime::mask::Masker;
use ignis_agent::{AgentClient, ExecRequest, Program};
use ignis_workflow::expr::{EvalContext, Status, Value};
use ignis_workflow::model::{Job, JobSecrets, Trigger, Workflow};
use indexmap::IndexMap;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Where jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Every job of a run in the run's one VM, each with its own workspace and environment.
    #[default]
    Workflow,
    /// Every job leg in its own session (GitHub-hosted semantics).
    Job,
}

/// Run-wide settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The local repository (checkout source, reusable workflows).
    pub repo_dir: PathBuf,
    /// Base directory inside the VM for run files; each session gets a subdirectory.
    pub vm_root: String,
    pub isolation: Isolation,
    /// Host cache of remote actions.
    pub action_cache: PathBuf,
    /// Where remote actions are fetched from (`{base}/{owner}/{repo}`); defaults to GitHub,
    /// overridden by `IGNIS_ACTIONS_BASE_URL`.
    pub actions_base_url: String,
    /// Concurrent job legs per run.
    pub max_parallel_jobs: usize,
    /// `PATH`, `HOME`, `LANG`... given to every command (the agent passes nothing implicitly).
    pub base_env: BTreeMap<String, String>,
    /// Repository facts the caller already read (`ignis run` reads them to plan the run);
    /// `None` reads them at `execute`. Saves a second round of `git` processes per run.
    pub git_facts: Option<contexts::GitFacts>,
    /// When sessions are snapshotted (for `ignis run --resume`).
    pub snapshots: SnapshotPolicy,
}

/// When the executor snapshots a session's VM. Snapshots are events (`snapshot_created`),
/// rows of the session timeline and entries of the run record; `ignis run --resume`
/// restores from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// After the setup commands of every fresh session whose profile has `setup` commands
    /// (a resume restores it instead of running them again).
    pub setup: bool,
    /// After every successful top-level step of every job leg (not after the last one).
    pub steps: bool,
}

/// A failed run to continue (`ignis run --resume`): the record of its previous attempt.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The ignis run id (for notices).
    pub run_id: String,
    /// The workflow's part of the previous attempt's record.
    pub previous: WorkflowRun,
}

impl ExecutorConfig {
    pub fn new(repo_dir: PathBuf) -> Self {
        let mut base_env = BTreeMap::new();
        base_env.insert(
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            }),
        );
        base_env.insert(
            "HOME".into(),
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
        );
        base_env.insert("LANG".into(), "C.UTF-8".into());
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("ignis/actions");
        ExecutorConfig {
            repo_dir,
            vm_root: "/tmp/ignis".into(),
            isolation: Isolation::Workflow,
            action_cache: cache,
            actions_base_url: crate::runtime::actions::actions_base_url(),
            max_parallel_jobs: 16,
            base_env,
            git_facts: None,
            snapshots: SnapshotPolicy::default(),
        }
    }
}

/// What to run: one workflow for one event.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub workflow: Arc<Workflow>,
    /// Path of the workflow file relative to the repository.
    pub workflow_path: String,
    pub info: RunInfo,
    /// `-j`: run only this job (and nothing else; GitHub has no such thing, act does).
    pub only_job: Option<String>,
    pub secrets: BTreeMap<String, String>,
    pub vars: BTreeMap<String, String>,
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// `--matrix key:value` filters.
    pub matrix_filter: Vec<(String, String)>,
    /// `--env-file` variables (below workflow `env:`).
    pub env: IndexMap<String, String>,
    /// Where this run is recorded (`None`: not recorded).
    pub journal: Option<RunJournal>,
    /// Continue this failed run instead of starting afresh.
    pub resume: Option<Arc<Resume>>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub result: JobResult,
    /// Per job id: aggregated result and outputs.
    pub jobs: IndexMap<String, LegResult>,
    pub duration: Duration,
}

/// Cancellation of a run: `cancel` = first Ctrl-C (graceful), `kill` = second (stop at once).
#[derive(Debug, Clone, Default)]
pub struct CancelSignals {
    pub cancel: CancellationToken,
    pub kill: CancellationToken,
}

/// Tools found in the VM by the setup probe.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tools {
    pub bash: bool,
    pub node: Option<String>,
    /// `python`, else `python3`: GitHub's `python` shell on a machine (Debian, ignis's guest
    /// images) that only has `python3`.
    pub python: Option<String>,
}

/// A session as the job runner sees it.
#[derive(Debug, Clone)]
pub(crate) struct SessionRef {
    pub session_id: String,
    pub vm_id: String,
    pub agent: AgentClient,
    pub root: String,
    pub tool_cache: String,
    pub event_path: String,
    pub tools: Tools,
    /// Remote actions already copied into this VM.
    pub fetched: Arc<Mutex<BTreeSet<String>>>,
    /// The backend (for snapshot records).
    pub backend: Option<ignis_vm::Backend>,
    /// Snapshots this session's VM, when it can.
    pub snapshotter: Option<Arc<dyn Snapshotter>>,
    /// The VM was restored from a snapshot: legs that do not continue from it clear their
    /// directories first.
    pub restored: bool,
}

/// Run-wide state shared by every leg.
#[derive(Debug)]
pub(crate) struct RunShared {
    pub bus: EventBus,
    pub masker: Masker,
    pub github: serde_json::Map<String, serde_json::Value>,
    pub vars: serde_json::Value,
    pub repo_dir: PathBuf,
    pub repo_name: String,
    pub action_cache: PathBuf,
    pub actions_base_url: String,
    pub base_env: BTreeMap<String, String>,
    pub kill: CancellationToken,
    pub event_json: Vec<u8>,
    /// `--env-file` variables: the lowest layer of every job's `env`.
    pub extra_env: IndexMap<String, String>,
    /// The run's secrets (to put recorded placeholders back on resume; never recorded).
    pub secrets: BTreeMap<String, String>,
    pub policy: SnapshotPolicy,
    pub journal: Option<RunJournal>,
    pub resume: Option<Arc<Resume>>,
    /// Legs that continue from a step snapshot of the previous attempt in the shared,
    /// restored session (`--isolation workflow`), by leg key.
    pub continue_legs: Mutex<BTreeMap<String, job::LegContinue>>,
    /// Prefix of snapshot names: unique per run attempt and workflow.
    pub snap_prefix: String,
    /// Masked values once the secrets are in: more later means a step used `::add-mask::`.
    pub masks_at_start: usize,
    pub snap_counter: std::sync::atomic::AtomicU32,
}

/// Executes planned workflows in sessions.
#[derive(Clone)]
pub struct WorkflowExecutor {
    sessions: Arc<dyn SessionSource>,
    config: ExecutorConfig,
}

impl std::fmt::Debug for WorkflowExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowExecutor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The `runs-on` labels of a job as written (expressions are not evaluated for profile choice).
fn labels_of(job: &Job) -> Vec<String> {
    match &job.runs_on {
        Some(ignis_workflow::model::RunsOn::Labels(l)) => l.clone(),
        Some(ignis_workflow::model::RunsOn::Group { labels, .. }) => labels.clone(),
        None => vec![],
    }
}

/// The boxed future of [`WorkflowExecutor::run_graph`] (boxed: reusable workflows recurse).
type GraphFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (JobResult, IndexMap<String, LegResult>)> + Send + 'a>,
>;

/// State of one job id in the DAG.
#[derive(Debug, Clone)]
enum Node {
    Pending,
    Running,
    Done(LegResult),
}

impl WorkflowExecutor {
    pub fn new(sessions: Arc<dyn SessionSource>, config: ExecutorConfig) -> Self {
        WorkflowExecutor { sessions, config }
    }

    /// Execute one workflow run. Always ends with `RunFinished` on `bus`, and every session
    /// it created is released before it returns.
    pub async fn execute(
        &self,
        req: RunRequest,
        bus: EventBus,
        masker: Masker,
        signals: CancelSignals,
    ) -> RunResult {
        let started = Instant::now();
        for v in req.secrets.values() {
            masker.add(v);
        }
        let git = match &self.config.git_facts {
            Some(facts) => facts.clone(),
            None => contexts::read_git(&self.config.repo_dir),
        };
        let github = contexts::github_context(&req.info, &git, &self.config.repo_dir);
        let repo_name = github
            .get("repository")
            .and_then(|v| v.as_str())
            .and_then(|r| r.rsplit('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("repo")
            .to_string();
        let rt = Arc::new(RunShared {
            bus: bus.clone(),
            masker: masker.clone(),
            github,
            vars: serde_json::to_value(&req.vars).unwrap_or_default(),
            repo_dir: self.config.repo_dir.clone(),
            repo_name,
            action_cache: self.config.action_cache.clone(),
            actions_base_url: self.config.actions_base_url.clone(),
            base_env: self.config.base_env.clone(),
            kill: signals.kill.clone(),
            event_json: serde_json::to_vec_pretty(&req.info.event)
                .unwrap_or_else(|_| b"{}".to_vec()),
            extra_env: req.env.clone(),
            secrets: req.secrets.clone(),
            policy: self.config.snapshots,
            journal: req.journal.clone(),
            resume: req.resume.clone(),
            continue_legs: Mutex::new(BTreeMap::new()),
            snap_prefix: match &req.journal {
                Some(j) => format!("ignis-{}-a{}-w{}", j.run_id(), j.attempt(), j.index()),
                None => format!("ignis-{}-{}", std::process::id(), req.info.run_id),
            },
            snap_counter: std::sync::atomic::AtomicU32::new(0),
            masks_at_start: masker.len(),
        });
        bus.emit(RunEvent::RunStarted {
            run_id: req.info.run_id.clone(),
            event_name: req.info.event_name.clone(),
            workflows: vec![req.workflow_path.clone()],
            record_id: req.journal.as_ref().map(RunJournal::run_id),
            attempt: req.journal.as_ref().map(RunJournal::attempt),
        });
        let secrets: serde_json::Value = serde_json::to_value(&req.secrets).unwrap_or_default();
        let inputs = serde_json::Value::Object(req.inputs.clone());

        let (result, jobs) = match self.config.isolation {
            Isolation::Workflow => {
                // One session for the whole run, allocated before any job starts.
                let labels = req
                    .workflow
                    .jobs
                    .values()
                    .find(|j| j.runs_on.is_some())
                    .map(labels_of)
                    .unwrap_or_default();
                // On resume the run's one VM is restored from the best snapshot of the
                // previous attempt (see `shared_restore`).
                let from = self.shared_restore(&rt, &req.workflow);
                match self.open(&rt, &labels, &signals, from).await {
                    Err(e) => {
                        bus.emit(RunEvent::Warning { message: e });
                        (JobResult::Failure, IndexMap::new())
                    }
                    Ok((live, sref)) => {
                        let provider = LegSessions::Shared(Box::new(sref));
                        let (r, jobs) = self
                            .run_graph(
                                &rt,
                                &provider,
                                &req,
                                req.workflow.clone(),
                                inputs,
                                secrets,
                                String::new(),
                                &signals,
                            )
                            .await;
                        self.close(&rt, live, provider.shared(), r).await;
                        (r, jobs)
                    }
                }
            }
            Isolation::Job => {
                let provider = LegSessions::PerLeg;
                self.run_graph(
                    &rt,
                    &provider,
                    &req,
                    req.workflow.clone(),
                    inputs,
                    secrets,
                    String::new(),
                    &signals,
                )
                .await
            }
        };
        let result = if signals.cancel.is_cancelled() && result != JobResult::Failure {
            JobResult::Cancelled
        } else {
            result
        };
        let duration = started.elapsed();
        bus.emit(RunEvent::RunFinished {
            result,
            duration_ms: ms(duration),
        });
        RunResult {
            result,
            jobs,
            duration,
        }
    }

    /// Create a session and run ignis's setup commands plus the profile's. With `from`, the
    /// VM is restored from that snapshot and keeps using the run directory it was taken with;
    /// the profile's setup commands are not run again (they ran before the snapshot), ignis's
    /// own idempotent setup is. A restore that fails falls back to a fresh session.
    async fn open(
        &self,
        rt: &Arc<RunShared>,
        labels: &[String],
        signals: &CancelSignals,
        from: Option<RestoreFrom>,
    ) -> Result<(Box<dyn LiveSession>, SessionRef), String> {
        let mut from = from;
        let (live, restored_root) = loop {
            let attempt = self
                .sessions
                .open(labels, from.as_ref().map(|f| f.snapshot.as_str()));
            let live = tokio::select! {
                s = attempt => s,
                _ = signals.kill.cancelled() => return Err("cancelled before the session was created".into()),
            };
            match (live, from.take()) {
                (Ok(l), f) => break (l, f),
                (Err(e), Some(f)) => {
                    rt.bus.emit(RunEvent::Warning {
                        message: format!(
                            "restoring snapshot {} failed, starting a fresh session instead: {e}",
                            f.name
                        ),
                    });
                    // Legs that were to continue from it start over.
                    rt.continue_legs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clear();
                }
                (Err(e), None) => return Err(e),
            }
        };
        let info = live.info();
        rt.bus.emit(RunEvent::SessionCreated {
            session_id: info.session_id.clone(),
            vm_id: info.vm_id.clone(),
            vm_type: info.vm_type.clone(),
            backend: info.backend.clone(),
            allocation_ms: info.allocation_ms,
            restored_from: restored_root.as_ref().map(|f| f.name.clone()),
        });
        let restored_root = restored_root.map(|f| f.root);
        let restored = restored_root.is_some();
        let root = restored_root.unwrap_or_else(|| {
            format!(
                "{}/{}",
                self.config.vm_root.trim_end_matches('/'),
                info.session_id
            )
        });
        let mut sref = SessionRef {
            session_id: info.session_id.clone(),
            vm_id: info.vm_id.clone(),
            agent: live.agent(),
            tool_cache: format!("{root}/tool-cache"),
            event_path: format!("{root}/event.json"),
            root,
            tools: Tools::default(),
            fetched: Arc::new(Mutex::new(BTreeSet::new())),
            backend: serde_json::from_value(serde_json::Value::String(info.backend.clone())).ok(),
            snapshotter: live.snapshotter(),
            restored,
        };
        let mut failed = None;
        // ignis's own setup, two round trips run concurrently and no process: the run
        // directory, its tool cache and the event payload file (GITHUB_EVENT_PATH) from one
        // tar, and the search for the tools GitHub's shells and node actions need. Both show
        // up as setup commands.
        let (layout, probed) =
            tokio::join!(self.setup_layout(rt, &sref), self.probe_tools(rt, &sref));
        match (layout, probed) {
            (Err(e), _) | (Ok(()), Err(e)) => failed = Some(e),
            (Ok(()), Ok(tools)) => sref.tools = tools,
        }
        if failed.is_none() && !restored {
            for cmd in live.setup_commands() {
                if let Err(e) = self.phase_command(rt, &sref, Phase::Setup, &cmd).await {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            self.close(rt, live, Some(sref), JobResult::Failure).await;
            return Err(format!("session setup failed: {e}"));
        }
        // Only a profile's setup is worth a snapshot: ignis's own setup is a few idempotent
        // commands that a restored session runs again anyway.
        let setup_snapshot = if rt.policy.setup && !restored && !live.setup_commands().is_empty() {
            take_snapshot(rt, &sref, "setup", "setup".into()).await
        } else {
            None
        };
        if let Some(j) = &rt.journal {
            let record = SessionRun {
                session_id: sref.session_id.clone(),
                vm_id: sref.vm_id.clone(),
                root: sref.root.clone(),
                setup_snapshot,
            };
            if record.setup_snapshot.is_some() {
                j.update_and_flush(|w| w.sessions.push(record));
            } else {
                j.update(|w| w.sessions.push(record));
            }
        }
        Ok((live, sref))
    }

    /// On resume with `--isolation workflow`: the snapshot the run's one VM is restored
    /// from. The latest usable step snapshot of a failed leg wins (that leg continues from
    /// it; other legs that run again start over in their cleared directories); without one,
    /// the previous session's setup snapshot (skips the profile's setup commands); else none.
    fn shared_restore(&self, rt: &Arc<RunShared>, wf: &Arc<Workflow>) -> Option<RestoreFrom> {
        let resume = rt.resume.as_ref()?;
        let mut best: Option<(String, job::LegContinue)> = None;
        for (key, leg) in &resume.previous.legs {
            if leg.result == Some(JobResult::Success) {
                continue;
            }
            if let Ok(c) = job::LegContinue::from_record(leg, wf, &rt.secrets, &resume.run_id)
                && best.as_ref().is_none_or(|(_, b)| {
                    c.snapshot.snapshot.taken_unix_ms > b.snapshot.snapshot.taken_unix_ms
                })
            {
                best = Some((key.clone(), c));
            }
        }
        if let Some((key, c)) = best {
            let session = resume
                .previous
                .sessions
                .iter()
                .find(|s| s.session_id == c.session_id)?;
            let from = RestoreFrom {
                snapshot: c.snapshot.snapshot.id.clone(),
                name: c.snapshot.snapshot.name.clone(),
                root: session.root.clone(),
            };
            rt.continue_legs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, c);
            return Some(from);
        }
        resume.previous.sessions.iter().rev().find_map(|s| {
            s.setup_snapshot.as_ref().map(|snap| RestoreFrom {
                snapshot: snap.id.clone(),
                name: snap.name.clone(),
                root: s.root.clone(),
            })
        })
    }

    /// Cleanup commands (always), then release.
    async fn close(
        &self,
        rt: &Arc<RunShared>,
        live: Box<dyn LiveSession>,
        sref: Option<SessionRef>,
        result: JobResult,
    ) {
        if let Some(sref) = &sref {
            for cmd in live.cleanup_commands() {
                let _ = self.phase_command(rt, sref, Phase::Cleanup, &cmd).await;
            }
            // The run directory: removed by the agent itself (no process), or with `rm -rf`
            // by an agent older than that request.
            if !self.remove_run_dir(rt, sref).await {
                let rm = format!("rm -rf '{}'", sref.root);
                let _ = self.phase_command(rt, sref, Phase::Cleanup, &rm).await;
            }
        }
        let info = live.info();
        if let Err(e) = live.release(result).await {
            rt.bus.emit(RunEvent::Warning {
                message: format!("releasing session {}: {e}", info.session_id),
            });
        }
        rt.bus.emit(RunEvent::SessionReleased {
            session_id: info.session_id,
            vm_id: info.vm_id,
        });
    }

    /// Creates the run directory with its tool cache and the event payload file in one
    /// `put_tar` (no process in the machine), reported as one setup command.
    async fn setup_layout(&self, rt: &Arc<RunShared>, sref: &SessionRef) -> Result<(), String> {
        let command = format!("create {} and {}", sref.tool_cache, sref.event_path);
        rt.bus.emit(RunEvent::CommandStarted {
            phase: Phase::Setup,
            session_id: sref.session_id.clone(),
            vm_id: sref.vm_id.clone(),
            command: command.clone(),
        });
        let r = match layout_tar(&rt.event_json) {
            Ok(tar) => sref
                .agent
                .put_tar(&sref.root, tar)
                .await
                .map_err(|e| format!("creating the run directory and event file: {e}")),
            Err(e) => Err(format!("packing the run directory: {e}")),
        };
        rt.bus.emit(RunEvent::CommandFinished {
            phase: Phase::Setup,
            session_id: sref.session_id.clone(),
            vm_id: sref.vm_id.clone(),
            command,
            exit_code: Some(if r.is_ok() { 0 } else { 1 }),
        });
        r
    }

    /// Finds `bash` (GitHub's default shell), `node` (node actions) and `python`/`python3`
    /// (the `python` shell) in the machine: the agent searches `PATH` itself (`which`, no
    /// process); an older agent gets `command -v` in `sh`. Reported as one setup command.
    async fn probe_tools(&self, rt: &Arc<RunShared>, sref: &SessionRef) -> Result<Tools, String> {
        if sref.agent.supports_command_files() {
            let path = rt.base_env.get("PATH").cloned().unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            });
            let command = format!("find bash, node and python in PATH={path}");
            rt.bus.emit(RunEvent::CommandStarted {
                phase: Phase::Setup,
                session_id: sref.session_id.clone(),
                vm_id: sref.vm_id.clone(),
                command: command.clone(),
            });
            let found = sref
                .agent
                .which(&["bash", "node", "python", "python3"], &path)
                .await;
            rt.bus.emit(RunEvent::CommandFinished {
                phase: Phase::Setup,
                session_id: sref.session_id.clone(),
                vm_id: sref.vm_id.clone(),
                command: command.clone(),
                exit_code: Some(if found.is_ok() { 0 } else { 1 }),
            });
            match found {
                Ok(paths) => {
                    let found = |i: usize| paths.get(i).cloned().flatten();
                    return Ok(Tools {
                        bash: found(0).is_some(),
                        node: found(1),
                        python: found(2).or_else(|| found(3)),
                    });
                }
                Err(e) if sref.agent.supports_command_files() => {
                    return Err(format!("Setup command `{command}` failed: {e}"));
                }
                // Turned down as unknown by an older agent: the shell below.
                Err(_) => {}
            }
        }
        let probe = "command -v bash || echo; command -v node || echo; \
                     command -v python || command -v python3 || echo";
        let out = self
            .phase_command_output(rt, sref, Phase::Setup, probe)
            .await?;
        let mut lines = out.lines().map(str::trim);
        let mut next = || lines.next().filter(|l| !l.is_empty()).map(str::to_string);
        Ok(Tools {
            bash: next().is_some(),
            node: next(),
            python: next(),
        })
    }

    /// Removes the run directory through the agent's `remove_all`, reported as a cleanup
    /// command. Returns false when the agent is too old for it (the caller falls back).
    async fn remove_run_dir(&self, rt: &Arc<RunShared>, sref: &SessionRef) -> bool {
        if !sref.agent.supports_command_files() {
            return false;
        }
        let command = format!("remove {}", sref.root);
        rt.bus.emit(RunEvent::CommandStarted {
            phase: Phase::Cleanup,
            session_id: sref.session_id.clone(),
            vm_id: sref.vm_id.clone(),
            command: command.clone(),
        });
        let r = sref.agent.remove_all(&sref.root).await;
        rt.bus.emit(RunEvent::CommandFinished {
            phase: Phase::Cleanup,
            session_id: sref.session_id.clone(),
            vm_id: sref.vm_id.clone(),
            command,
            exit_code: Some(if r.is_ok() { 0 } else { 1 }),
        });
        // Turned down as unknown: the caller runs `rm -rf` instead.
        r.is_ok() || sref.agent.supports_command_files()
    }

    async fn phase_command(
        &self,
        rt: &Arc<RunShared>,
        sref: &SessionRef,
        phase: Phase,
        cmd: &str,
    ) -> Result<(), String> {
        self.phase_command_output(rt, sref, phase, cmd)
            .await
            .map(|_| ())
    }

    async fn phase_command_output(
        &self,
        rt: &Arc<RunShared>,
        sref: &SessionRef,
        phase: Phase,
        cmd: &str,
    ) -> Result<String, String> {
        rt.bus.emit(RunEvent::CommandStarted {
            phase,
            session_id: sref.session_id.clone(),
            vm_id: sref.vm_id.clone(),
            command: cmd.to_string(),
        });
        let req = ExecRequest {
            program: Program::Argv(vec!["sh".into(), "-c".into(), cmd.to_string()]),
            env: rt.base_env.clone(),
            cwd: None,
            stdin: None,
            timeout: Some(Duration::from_secs(600)),
        };
        let res = sref.agent.exec_collect(req).await;
        let code = res.as_ref().ok().and_then(|o| o.status.code);
        rt.bus.emit(RunEvent::CommandFinished {
            phase,
            session_id: sref.session_id.clone(),
            vm_id: sref.vm_id.clone(),
            command: cmd.to_string(),
            exit_code: code,
        });
        match res {
            Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
            Ok(o) => Err(format!(
                "{phase:?} command `{cmd}` failed ({:?}): {}",
                o.status.code,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("{phase:?} command `{cmd}` failed: {e}")),
        }
    }

    /// Run the jobs of `workflow` as a DAG. Returns the run result and per-job results.
    #[allow(clippy::too_many_arguments)]
    fn run_graph<'a>(
        &'a self,
        rt: &'a Arc<RunShared>,
        sessions: &'a LegSessions,
        req: &'a RunRequest,
        workflow: Arc<Workflow>,
        inputs: serde_json::Value,
        secrets: serde_json::Value,
        key_prefix: String,
        signals: &'a CancelSignals,
    ) -> GraphFuture<'a> {
        Box::pin(async move {
            let mut nodes: IndexMap<String, Node> = IndexMap::new();
            let only = if key_prefix.is_empty() {
                req.only_job.clone()
            } else {
                None
            };
            for (id, _) in &workflow.jobs {
                if only.as_ref().is_none_or(|o| o == id) {
                    nodes.insert(id.clone(), Node::Pending);
                }
            }
            // Resume: jobs that succeeded keep their recorded result and outputs.
            if let Some(resume) = rt.resume.as_ref().filter(|_| key_prefix.is_empty()) {
                for (id, node) in nodes.iter_mut() {
                    let Some(prev) = resume.previous.jobs.get(id) else {
                        continue;
                    };
                    if prev.result != JobResult::Success {
                        continue;
                    }
                    let job = &workflow.jobs[id];
                    let changed = prev.job_hash != crate::runs::job_hash(&workflow, id);
                    let note = format!(
                        "##[notice]kept from run {}: job succeeded there, not re-run{}",
                        resume.run_id,
                        if changed {
                            " (its definition changed since; its recorded outputs are used)"
                        } else {
                            ""
                        }
                    );
                    rt.bus.emit(RunEvent::Log {
                        job_id: id.clone(),
                        matrix: None,
                        step_id: String::new(),
                        stream: crate::events::LogStream::System,
                        line: note,
                    });
                    let r = emit_job_end(
                        rt,
                        id,
                        &job.name.clone().unwrap_or_else(|| id.clone()),
                        None,
                        LegResult {
                            result: JobResult::Success,
                            outputs: prev.outputs.clone(),
                        },
                        None,
                    );
                    *node = Node::Done(r);
                }
            }
            let mut continue_on_error_failed: BTreeSet<String> = BTreeSet::new();
            let mut running: JoinSet<(String, LegResult, bool)> = JoinSet::new();
            let limit = Arc::new(tokio::sync::Semaphore::new(
                self.config.max_parallel_jobs.max(1),
            ));
            loop {
                // Start every job whose own needs are all finished.
                let ready: Vec<String> = nodes
                    .iter()
                    .filter(|(_, n)| matches!(n, Node::Pending))
                    .filter(|(id, _)| {
                        workflow.jobs[*id]
                            .needs
                            .iter()
                            .all(|d| matches!(nodes.get(d), Some(Node::Done(_)) | None))
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                let progressed = !ready.is_empty();
                for id in ready {
                    let job = &workflow.jobs[&id];
                    let mut needs = serde_json::Map::new();
                    let mut any_failed = false;
                    let mut all_success = true;
                    for d in &job.needs {
                        let (result, outputs) = match nodes.get(d) {
                            Some(Node::Done(r)) => (r.result, r.outputs.clone()),
                            _ => (JobResult::Skipped, serde_json::Map::new()),
                        };
                        let effective = if result == JobResult::Failure
                            && continue_on_error_failed.contains(d)
                        {
                            JobResult::Success
                        } else {
                            result
                        };
                        any_failed |= effective == JobResult::Failure
                            || ancestors_failed(&workflow, d, &nodes, &continue_on_error_failed);
                        all_success &= effective == JobResult::Success;
                        needs.insert(
                            d.clone(),
                            serde_json::json!({"result": result.as_str(), "outputs": outputs}),
                        );
                    }
                    let needs = serde_json::Value::Object(needs);
                    let mut ctx = EvalContext::new();
                    ctx.set(
                        "github",
                        Value::from(&serde_json::Value::Object(rt.github.clone())),
                    );
                    ctx.set("needs", Value::from(&needs));
                    ctx.set("vars", Value::from(&rt.vars));
                    ctx.set("inputs", Value::from(&inputs));
                    ctx.status = if signals.cancel.is_cancelled() {
                        Status::Cancelled
                    } else if any_failed {
                        Status::Failure
                    } else {
                        Status::Success
                    };
                    let uses_status = job
                        .condition
                        .as_deref()
                        .and_then(|c| ignis_workflow::expr::parse_condition(c).ok())
                        .is_some_and(|c| c.uses_status_functions());
                    let run_it = if !all_success && !uses_status {
                        // success() is false when a need was skipped or failed.
                        false
                    } else {
                        match exprs::condition(
                            job.condition.as_deref(),
                            &ctx,
                            &format!("jobs.{id}.if"),
                        ) {
                            Ok(b) => b && (all_success || uses_status),
                            Err(e) => {
                                rt.bus.emit(RunEvent::Warning { message: e });
                                false
                            }
                        }
                    };
                    if !run_it {
                        let name = job.name.clone().unwrap_or_else(|| id.clone());
                        let r = emit_job_end(
                            rt,
                            &id,
                            &name,
                            None,
                            LegResult {
                                result: JobResult::Skipped,
                                outputs: serde_json::Map::new(),
                            },
                            Some(sessions),
                        );
                        nodes.insert(id.clone(), Node::Done(r));
                        continue;
                    }
                    nodes.insert(id.clone(), Node::Running);
                    let job_ctx = ctx.clone();
                    let (jid, wf, inp, sec) = (
                        id.clone(),
                        workflow.clone(),
                        inputs.clone(),
                        secrets.clone(),
                    );
                    let prefix = key_prefix.clone();
                    let limit = limit.clone();
                    let this = self.clone();
                    let (rt2, req2, sessions2, signals2) =
                        (rt.clone(), req.clone(), sessions.clone(), signals.clone());
                    running.spawn(async move {
                        let (r, coe) = this
                            .run_job(
                                &rt2, &sessions2, &req2, wf, &jid, needs, inp, sec, prefix,
                                job_ctx, limit, &signals2,
                            )
                            .await;
                        (jid, r, coe)
                    });
                }
                if running.is_empty() {
                    // Skipped jobs may have made others ready without anything running.
                    if progressed && nodes.values().any(|n| matches!(n, Node::Pending)) {
                        continue;
                    }
                    break;
                }
                let Some(joined) = running.join_next().await else {
                    break;
                };
                match joined {
                    Ok((id, r, coe)) => {
                        if coe && r.result == JobResult::Failure {
                            continue_on_error_failed.insert(id.clone());
                        }
                        if let Some(j) = rt.journal.as_ref().filter(|_| key_prefix.is_empty()) {
                            let record = crate::runs::JobRun {
                                job_hash: crate::runs::job_hash(&workflow, &id),
                                result: r.result,
                                outputs: r.outputs.clone(),
                            };
                            let id = id.clone();
                            j.update(|w| {
                                w.jobs.insert(id, record);
                            });
                        }
                        nodes.insert(id, Node::Done(r));
                    }
                    Err(e) => {
                        rt.bus.emit(RunEvent::Warning {
                            message: format!("a job task failed: {e}"),
                        });
                        // Mark whatever is still running as failed so the loop ends.
                        for n in nodes.values_mut() {
                            if matches!(n, Node::Running) {
                                *n = Node::Done(LegResult {
                                    result: JobResult::Failure,
                                    outputs: serde_json::Map::new(),
                                });
                            }
                        }
                    }
                }
            }
            let mut result = JobResult::Success;
            let mut jobs = IndexMap::new();
            for (id, n) in nodes {
                let r = match n {
                    Node::Done(r) => r,
                    _ => LegResult {
                        result: JobResult::Skipped,
                        outputs: serde_json::Map::new(),
                    },
                };
                match r.result {
                    JobResult::Failure if !continue_on_error_failed.contains(&id) => {
                        result = JobResult::Failure
                    }
                    JobResult::Cancelled if result == JobResult::Success => {
                        result = JobResult::Cancelled
                    }
                    _ => {}
                }
                jobs.insert(id, r);
            }
            (result, jobs)
        })
    }

    /// Run all legs of one job (matrix, max-parallel, fail-fast) or a reusable workflow call.
    /// Returns the aggregated result and whether the job had `continue-on-error: true`.
    #[allow(clippy::too_many_arguments)]
    async fn run_job(
        &self,
        rt: &Arc<RunShared>,
        sessions: &LegSessions,
        req: &RunRequest,
        workflow: Arc<Workflow>,
        job_id: &str,
        needs: serde_json::Value,
        inputs: serde_json::Value,
        secrets: serde_json::Value,
        key_prefix: String,
        ctx: EvalContext<'static>,
        limit: Arc<tokio::sync::Semaphore>,
        signals: &CancelSignals,
    ) -> (LegResult, bool) {
        let job = &workflow.jobs[job_id];
        let fail = |msg: String| {
            rt.bus.emit(RunEvent::Log {
                job_id: job_id.to_string(),
                matrix: None,
                step_id: String::new(),
                stream: crate::events::LogStream::System,
                line: format!("##[error]{msg}"),
            });
            let name = job.name.clone().unwrap_or_else(|| job_id.to_string());
            (
                emit_job_end(rt, job_id, &name, None, LegResult::failed(), None),
                false,
            )
        };
        let mut ctx = ctx;
        ctx.set("secrets", Value::from(&secrets));
        if let Some(uses) = &job.uses {
            return match self
                .call_workflow(
                    rt,
                    sessions,
                    req,
                    job,
                    job_id,
                    uses,
                    &ctx,
                    &secrets,
                    &key_prefix,
                    signals,
                )
                .await
            {
                Ok(r) => (r, false),
                Err(e) => fail(e),
            };
        }
        // The planner expands the matrix now that `needs` is known (GitHub's include/exclude
        // rules, the 256-leg cap, display names, `--matrix` filters).
        let mut filter: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in &req.matrix_filter {
            match filter.iter_mut().find(|(fk, _)| fk == k) {
                Some((_, vals)) => vals.push(v.clone()),
                None => filter.push((k.clone(), vec![v.clone()])),
            }
        }
        let legs = match ignis_workflow::plan::job_matrix(job, &ctx, &filter, true) {
            Ok(ignis_workflow::plan::JobMatrix::Legs(legs)) => Some(
                legs.into_iter()
                    .map(|l| (l.values.into_iter().collect(), l.name))
                    .collect::<Vec<_>>(),
            ),
            Ok(ignis_workflow::plan::JobMatrix::Deferred) => {
                return fail(format!(
                    "jobs.{job_id}: the matrix could not be expanded at run time"
                ));
            }
            Ok(_) => None,
            Err(e) => return fail(e.to_string()),
        };
        let fail_fast = match job.strategy.as_ref().and_then(|s| s.fail_fast.as_ref()) {
            None => true,
            Some(b) => exprs::bool_expr(Some(b), &ctx, "fail-fast").unwrap_or(true),
        };
        let legs: Vec<Option<(serde_json::Map<String, serde_json::Value>, String)>> = match legs {
            None => vec![None],
            Some(l) if l.is_empty() => {
                // An empty matrix after filtering: nothing to run.
                return (
                    LegResult {
                        result: JobResult::Skipped,
                        outputs: serde_json::Map::new(),
                    },
                    false,
                );
            }
            Some(l) => l.into_iter().map(Some).collect(),
        };
        let total = legs.len();
        let max_parallel = match job.strategy.as_ref().and_then(|s| s.max_parallel.as_ref()) {
            None => total,
            Some(n) => exprs::number_expr(Some(n), &ctx, "max-parallel")
                .ok()
                .flatten()
                .map(|v| v.max(1.0) as usize)
                .unwrap_or(total),
        };
        let group_cancel = signals.cancel.child_token();
        let leg_limit = Arc::new(tokio::sync::Semaphore::new(max_parallel.max(1)));
        let mut set: JoinSet<(LegResult, bool)> = JoinSet::new();
        for (index, leg) in legs.into_iter().enumerate() {
            let (matrix, planned_name) = match leg {
                Some((values, name)) => (Some(serde_json::Value::Object(values)), Some(name)),
                None => (None, None),
            };
            let mut leg_ctx = ctx.clone();
            leg_ctx.set(
                "matrix",
                matrix.as_ref().map(Value::from).unwrap_or_default(),
            );
            let name =
                planned_name.unwrap_or_else(|| leg_name(job, job_id, matrix.as_ref(), &leg_ctx));
            let strategy = serde_json::json!({
                "fail-fast": fail_fast, "job-index": index, "job-total": total, "max-parallel": max_parallel,
            });
            let continue_on_error = exprs::bool_expr(
                job.continue_on_error.as_ref(),
                &leg_ctx,
                "continue-on-error",
            )
            .unwrap_or(false);
            let spec = LegSpec {
                workflow: workflow.clone(),
                job_id: job_id.to_string(),
                name,
                matrix,
                strategy,
                needs: needs.clone(),
                key: format!("{key_prefix}{job_id}-{index}"),
                inputs: inputs.clone(),
                secrets: secrets.clone(),
            };
            let (rt2, sessions2, group, limit, leg_limit) = (
                rt.clone(),
                sessions.clone(),
                group_cancel.clone(),
                limit.clone(),
                leg_limit.clone(),
            );
            let this = self.clone();
            let labels = labels_of(job);
            let signals2 = signals.clone();
            set.spawn(async move {
                let _leg_permit = leg_limit.acquire_owned().await;
                let _run_permit = limit.acquire_owned().await;
                if group.is_cancelled() && !signals2.cancel.is_cancelled()
                    || signals2.kill.is_cancelled()
                {
                    // fail-fast cancelled this queued leg before it started.
                    let cancelled = LegResult {
                        result: JobResult::Cancelled,
                        outputs: serde_json::Map::new(),
                    };
                    let r = emit_job_end(
                        &rt2,
                        &spec.job_id,
                        &spec.name,
                        spec.matrix.clone(),
                        cancelled,
                        None,
                    );
                    return (r, continue_on_error);
                }
                // Resume: a leg that succeeded keeps its recorded result and outputs.
                if let Some(kept) = this.kept_leg(&rt2, &spec) {
                    return (kept, continue_on_error);
                }
                let r = this
                    .run_leg(
                        &rt2,
                        &sessions2,
                        spec,
                        &labels,
                        group.child_token(),
                        &signals2,
                    )
                    .await;
                (r, continue_on_error)
            });
        }
        let mut agg = JobResult::Success;
        let mut outputs = serde_json::Map::new();
        let mut coe_all = true;
        while let Some(j) = set.join_next().await {
            let (r, coe) = match j {
                Ok(x) => x,
                Err(e) => {
                    rt.bus.emit(RunEvent::Warning {
                        message: format!("a job leg task failed: {e}"),
                    });
                    (
                        LegResult {
                            result: JobResult::Failure,
                            outputs: serde_json::Map::new(),
                        },
                        false,
                    )
                }
            };
            for (k, v) in r.outputs {
                outputs.insert(k, v);
            }
            match r.result {
                JobResult::Failure => {
                    coe_all &= coe;
                    agg = JobResult::Failure;
                    if fail_fast && !coe && total > 1 {
                        group_cancel.cancel();
                    }
                }
                JobResult::Cancelled if agg == JobResult::Success => agg = JobResult::Cancelled,
                _ => {}
            }
        }
        (
            LegResult {
                result: agg,
                outputs,
            },
            agg == JobResult::Failure && coe_all,
        )
    }

    /// One leg in its session (shared, or its own with `Isolation::Job`).
    async fn run_leg(
        &self,
        rt: &Arc<RunShared>,
        sessions: &LegSessions,
        spec: LegSpec,
        labels: &[String],
        cancel: CancellationToken,
        signals: &CancelSignals,
    ) -> LegResult {
        match sessions {
            LegSessions::Shared(sref) => {
                let cont = rt
                    .continue_legs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&spec.key);
                job::JobRunner::new(rt.clone(), SessionRef::clone(sref), spec, cancel)
                    .resuming(cont)
                    .run()
                    .await
            }
            LegSessions::PerLeg => {
                // Resume: this leg's own session is restored from its step snapshot (it
                // continues there) or its previous session's setup snapshot.
                let (from, cont) = self.leg_restore(rt, &spec);
                match self.open(rt, labels, signals, from).await {
                    Err(e) => {
                        rt.bus.emit(RunEvent::Warning { message: e });
                        emit_job_end(
                            rt,
                            &spec.job_id,
                            &spec.name,
                            spec.matrix.clone(),
                            LegResult::failed(),
                            None,
                        )
                    }
                    Ok((live, sref)) => {
                        let cont = if sref.restored { cont } else { None };
                        let r = job::JobRunner::new(rt.clone(), sref.clone(), spec, cancel)
                            .resuming(cont)
                            .run()
                            .await;
                        self.close(rt, live, Some(sref), r.result).await;
                        r
                    }
                }
            }
        }
    }

    /// Resume: the recorded result of a leg that succeeded in the previous attempt, if its
    /// job and matrix combination are unchanged; announced as kept.
    fn kept_leg(&self, rt: &Arc<RunShared>, spec: &LegSpec) -> Option<LegResult> {
        let resume = rt.resume.as_ref()?;
        let prev = resume.previous.legs.get(&spec.key)?;
        if prev.result != Some(JobResult::Success)
            || prev.matrix != spec.matrix
            || prev.job_hash != crate::runs::job_hash(&spec.workflow, &spec.job_id)
        {
            return None;
        }
        rt.bus.emit(RunEvent::Log {
            job_id: spec.job_id.clone(),
            matrix: spec.matrix.clone(),
            step_id: String::new(),
            stream: crate::events::LogStream::System,
            line: format!(
                "##[notice]kept from run {}: leg succeeded there, not re-run",
                resume.run_id
            ),
        });
        Some(emit_job_end(
            rt,
            &spec.job_id,
            &spec.name,
            spec.matrix.clone(),
            LegResult {
                result: JobResult::Success,
                outputs: prev.outputs.clone(),
            },
            None,
        ))
    }

    /// Resume with `--isolation job`: what this leg's session is restored from, and how the
    /// leg continues (from the step snapshot) when it is.
    fn leg_restore(
        &self,
        rt: &Arc<RunShared>,
        spec: &LegSpec,
    ) -> (Option<RestoreFrom>, Option<job::LegContinue>) {
        let Some(resume) = rt.resume.as_ref() else {
            return (None, None);
        };
        let Some(prev) = resume.previous.legs.get(&spec.key) else {
            return (None, None);
        };
        let session = resume
            .previous
            .sessions
            .iter()
            .find(|s| s.session_id == prev.session_id);
        let Some(session) = session else {
            return (None, None);
        };
        match job::LegContinue::from_record(prev, &spec.workflow, &rt.secrets, &resume.run_id) {
            Ok(c) => (
                Some(RestoreFrom {
                    snapshot: c.snapshot.snapshot.id.clone(),
                    name: c.snapshot.snapshot.name.clone(),
                    root: session.root.clone(),
                }),
                Some(c),
            ),
            Err(_) => (
                session.setup_snapshot.as_ref().map(|snap| RestoreFrom {
                    snapshot: snap.id.clone(),
                    name: snap.name.clone(),
                    root: session.root.clone(),
                }),
                None,
            ),
        }
    }

    /// A job that calls a local reusable workflow (`uses: ./.github/workflows/x.yml`).
    #[allow(clippy::too_many_arguments)]
    async fn call_workflow(
        &self,
        rt: &Arc<RunShared>,
        sessions: &LegSessions,
        req: &RunRequest,
        job: &Job,
        job_id: &str,
        uses: &str,
        ctx: &EvalContext<'static>,
        caller_secrets: &serde_json::Value,
        key_prefix: &str,
        signals: &CancelSignals,
    ) -> Result<LegResult, String> {
        let Some(rel) = uses.strip_prefix("./") else {
            return Err(format!(
                "remote reusable workflow {uses} is not supported: only local ./ workflows can be called"
            ));
        };
        let path = self.config.repo_dir.join(rel);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {uses}: {e}"))?;
        let called = ignis_workflow::parse(uses, &text).map_err(|d| {
            let msgs: Vec<String> = d.iter().map(|x| x.to_string()).collect();
            format!("invalid workflow {uses}: {}", msgs.join("; "))
        })?;
        let Some(Trigger::WorkflowCall(call)) = called.on.get("workflow_call").cloned() else {
            return Err(format!(
                "{uses} is not a reusable workflow: it has no on.workflow_call"
            ));
        };
        let mut inputs = serde_json::Map::new();
        for (name, input) in &call.inputs {
            let v = match job.with.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                Some((_, v)) => {
                    serde_json::Value::from(exprs::value(v, ctx, &format!("with.{name}"))?)
                }
                None => match &input.default {
                    Some(d) => serde_json::Value::from(exprs::value(
                        d,
                        ctx,
                        &format!("inputs.{name}.default"),
                    )?),
                    None if input.required => {
                        return Err(format!("{uses}: required input {name} was not given"));
                    }
                    None => serde_json::Value::Null,
                },
            };
            // Typed inputs: GitHub converts to the declared type.
            let v = match (input.input_type, v) {
                (ignis_workflow::model::CallInputType::Boolean, serde_json::Value::String(s)) => {
                    serde_json::Value::Bool(s == "true")
                }
                (ignis_workflow::model::CallInputType::Number, serde_json::Value::String(s)) => s
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(serde_json::Value::Number)
                    .unwrap_or_default(),
                (_, v) => v,
            };
            inputs.insert(name.clone(), v);
        }
        let secrets = match &job.secrets {
            Some(JobSecrets::Inherit) => caller_secrets.clone(),
            Some(JobSecrets::Map(m)) => {
                let mut s = serde_json::Map::new();
                for (k, v) in m {
                    s.insert(
                        k.clone(),
                        exprs::string(v, ctx, &format!("secrets.{k}"))?.into(),
                    );
                }
                serde_json::Value::Object(s)
            }
            None => serde_json::json!({}),
        };
        let called = Arc::new(called);
        let prefix = format!("{key_prefix}{job_id}.");
        let (result, jobs) = self
            .run_graph(
                rt,
                sessions,
                req,
                called,
                serde_json::Value::Object(inputs),
                secrets,
                prefix,
                signals,
            )
            .await;
        let mut jobs_ctx = serde_json::Map::new();
        for (id, r) in &jobs {
            jobs_ctx.insert(
                id.clone(),
                serde_json::json!({"result": r.result.as_str(), "outputs": r.outputs}),
            );
        }
        let mut octx = ctx.clone();
        octx.set("jobs", Value::from(&serde_json::Value::Object(jobs_ctx)));
        let mut outputs = serde_json::Map::new();
        for (name, out) in &call.outputs {
            outputs.insert(
                name.clone(),
                exprs::string(&out.value, &octx, &format!("outputs.{name}"))?.into(),
            );
        }
        Ok(LegResult { result, outputs })
    }
}

/// Whether any ancestor of `id` failed (for `failure()` in a job-level `if:`).
fn ancestors_failed(
    wf: &Workflow,
    id: &str,
    nodes: &IndexMap<String, Node>,
    coe: &BTreeSet<String>,
) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![id.to_string()];
    while let Some(j) = stack.pop() {
        if !seen.insert(j.clone()) {
            continue;
        }
        if let Some(Node::Done(r)) = nodes.get(&j)
            && r.result == JobResult::Failure
            && !coe.contains(&j)
        {
            return true;
        }
        if let Some(job) = wf.jobs.get(&j) {
            stack.extend(job.needs.iter().cloned());
        }
    }
    false
}

/// GitHub's display name of a leg: `name:` evaluated, else `id (v1, v2)`.
fn leg_name(
    job: &Job,
    job_id: &str,
    matrix: Option<&serde_json::Value>,
    ctx: &EvalContext<'_>,
) -> String {
    if let Some(n) = &job.name {
        return exprs::string(n, ctx, "name").unwrap_or_else(|_| n.clone());
    }
    match matrix.and_then(|m| m.as_object()) {
        Some(m) if !m.is_empty() => {
            let vals: Vec<String> = m
                .values()
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            format!("{job_id} ({})", vals.join(", "))
        }
        _ => job_id.to_string(),
    }
}

/// A snapshot a session is restored from, and the run directory it was taken with.
#[derive(Debug, Clone)]
struct RestoreFrom {
    snapshot: String,
    name: String,
    root: String,
}

/// Snapshot the session's VM and announce it; a failure is a warning, never a run failure.
/// `label` makes the snapshot's name (unique within the run attempt); `after` says what it
/// follows (`setup` or `<job>/<step>`).
pub(crate) async fn take_snapshot(
    rt: &RunShared,
    sref: &SessionRef,
    label: &str,
    after: String,
) -> Option<SnapshotRef> {
    let snapshotter = sref.snapshotter.as_ref()?;
    let backend = sref.backend?;
    let n = rt
        .snap_counter
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let name = format!("{}-{n}-{label}", rt.snap_prefix);
    let started = Instant::now();
    match snapshotter.snapshot(&name).await {
        Ok(id) => {
            let ms = ms(started.elapsed());
            rt.bus.emit(RunEvent::SnapshotCreated {
                session_id: sref.session_id.clone(),
                vm_id: sref.vm_id.clone(),
                name: name.clone(),
                after: after.clone(),
                ms,
            });
            Some(SnapshotRef {
                id,
                backend,
                name,
                after,
                ms,
                taken_unix_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0),
            })
        }
        Err(e) => {
            rt.bus.emit(RunEvent::Warning {
                message: format!("snapshot after {after} failed (the run goes on): {e}"),
            });
            None
        }
    }
}

/// Announce the end of a job (or leg) that ran no step here: failed before it started,
/// cancelled while queued, skipped, or kept from the run being resumed.
fn emit_job_end(
    rt: &RunShared,
    job_id: &str,
    name: &str,
    matrix: Option<serde_json::Value>,
    result: LegResult,
    sessions: Option<&LegSessions>,
) -> LegResult {
    let shared = sessions.and_then(LegSessions::shared);
    rt.bus.emit(RunEvent::JobFinished {
        job_id: job_id.to_string(),
        name: name.to_string(),
        matrix,
        result: result.result,
        session_id: shared
            .as_ref()
            .map(|s| s.session_id.clone())
            .unwrap_or_default(),
        vm_id: shared.map(|s| s.vm_id).unwrap_or_default(),
        duration_ms: 0,
        outputs: result.outputs.clone(),
    });
    result
}

/// Where legs get their session.
#[derive(Debug, Clone)]
enum LegSessions {
    /// Boxed: a `SessionRef` is large and `PerLeg` is empty (clippy::large_enum_variant).
    Shared(Box<SessionRef>),
    PerLeg,
}

impl LegSessions {
    fn shared(&self) -> Option<SessionRef> {
        match self {
            LegSessions::Shared(s) => Some(SessionRef::clone(s)),
            LegSessions::PerLeg => None,
        }
    }
}

/// The run directory's initial contents, relative to it: `tool-cache/` and `event.json`.
fn layout_tar(event_json: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_size(0);
    dir.set_mode(0o755);
    dir.set_mtime(0);
    b.append_data(&mut dir, "tool-cache/", std::io::empty())?;
    let mut file = tar::Header::new_gnu();
    file.set_entry_type(tar::EntryType::Regular);
    file.set_size(event_json.len() as u64);
    file.set_mode(0o644);
    file.set_mtime(0);
    b.append_data(&mut file, "event.json", event_json)?;
    b.into_inner()
}
