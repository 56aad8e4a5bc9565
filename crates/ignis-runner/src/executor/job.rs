//! One job leg inside a session: its directories, environment and contexts, its steps in
//! order (with `if:`, `continue-on-error`, timeouts, actions), its post steps, its outputs.
//! Nothing here allocates a VM: the leg receives the session it runs in.

use super::exprs;
use super::hash_files;
use super::process::{self, CommandEffects, Ended, LogTarget};
use super::{RunShared, SessionRef};
use crate::events::{JobResult, LogStream, RunEvent, Stage, StepResult};
use crate::runs::{LegRun, Redactor, StepRun as RecordedStep, StepSnapshot};
use crate::runtime::actions::{self, ActionRef};
use crate::runtime::file_commands::{self, PrependPath};
use crate::runtime::shell;
use ignis_agent::{CommandFiles, ExecRequest, Program};
use ignis_workflow::expr::{EvalContext, Map as ExprMap, Status, Value};
use ignis_workflow::model::{Action, BoolExpr, Defaults, Job, NumberExpr, Runs, Step, Workflow};
use indexmap::IndexMap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// GitHub's default job timeout.
pub const DEFAULT_JOB_TIMEOUT_MINUTES: f64 = 360.0;

/// What the scheduler hands a leg.
#[derive(Debug, Clone)]
pub struct LegSpec {
    pub workflow: Arc<Workflow>,
    pub job_id: String,
    /// Display name (evaluated by the planner or the scheduler).
    pub name: String,
    pub matrix: Option<serde_json::Value>,
    /// `strategy` context.
    pub strategy: serde_json::Value,
    /// `needs` context (only this job's direct needs).
    pub needs: serde_json::Value,
    /// Unique, filesystem-safe key of this leg within the run.
    pub key: String,
    /// `inputs` context (workflow_dispatch / workflow_call inputs).
    pub inputs: serde_json::Value,
    /// `secrets` context (a called workflow sees only what its caller passed).
    pub secrets: serde_json::Value,
}

/// How a leg ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LegResult {
    pub result: JobResult,
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

impl LegResult {
    /// A failure without outputs.
    pub fn failed() -> Self {
        LegResult {
            result: JobResult::Failure,
            outputs: serde_json::Map::new(),
        }
    }
}

/// How a leg of a failed run continues from a step snapshot (`ignis run --resume`): the
/// VM is restored from `snapshot`, the steps up to and including `after_index` keep their
/// recorded results (and fill the `steps` context), the leg's `GITHUB_ENV`, `GITHUB_PATH`
/// and command counter are put back, and the leg goes on at the next step.
#[derive(Debug, Clone)]
pub(crate) struct LegContinue {
    pub from_run: String,
    /// The session of the previous attempt the snapshot was taken in.
    pub session_id: String,
    pub snapshot: StepSnapshot,
    /// `GITHUB_ENV` variables with the secrets given now substituted back.
    pub env: IndexMap<String, String>,
    /// The recorded steps up to `after_index` (as recorded: placeholders for secrets).
    pub steps: Vec<RecordedStep>,
    /// Their outputs with the secrets substituted back, by step index.
    pub outputs: BTreeMap<usize, Vec<(String, String)>>,
    /// Snapshots of the previous attempt still valid after this resume point.
    pub kept_snapshots: Vec<StepSnapshot>,
    /// The leg's matrix combination in the previous attempt.
    pub matrix: Option<serde_json::Value>,
}

impl LegContinue {
    /// The latest usable step snapshot of a failed leg, or why there is none. A snapshot is
    /// usable when the job's definition up to the step it follows is unchanged (hashes), it
    /// is not blocked, and every secret its recorded env or outputs need is given again.
    pub(crate) fn from_record(
        leg: &LegRun,
        wf: &Workflow,
        secrets: &BTreeMap<String, String>,
        run_id: &str,
    ) -> Result<Self, String> {
        if !wf.jobs.contains_key(&leg.job_id) {
            return Err(format!("job {} no longer exists", leg.job_id));
        }
        let mut snaps: Vec<&StepSnapshot> = leg.snapshots.iter().collect();
        snaps.sort_by_key(|s| std::cmp::Reverse(s.after_index));
        let mut first_reason = None;
        for snap in snaps {
            match Self::try_from_snapshot(leg, snap, wf, secrets, run_id) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    first_reason.get_or_insert(e);
                }
            }
        }
        Err(first_reason.unwrap_or_else(|| {
            "no step snapshot was taken before the failure (run with --snapshot-steps to take them)"
                .to_string()
        }))
    }

    fn try_from_snapshot(
        leg: &LegRun,
        snap: &StepSnapshot,
        wf: &Workflow,
        secrets: &BTreeMap<String, String>,
        run_id: &str,
    ) -> Result<Self, String> {
        if let Some(why) = &snap.blocked {
            return Err(format!(
                "the snapshot after step {} is not usable: {why}",
                snap.after_index
            ));
        }
        if crate::runs::prefix_hash(wf, &leg.job_id, snap.after_index + 1) != snap.prefix_hash {
            return Err(format!(
                "the job's steps up to step {} (or its env/defaults) changed since run {run_id}",
                snap.after_index
            ));
        }
        let missing = |name: String| {
            format!("secret {name} (recorded in the job's env or step outputs) was not given again")
        };
        let mut env = IndexMap::new();
        for (k, v) in &snap.env {
            env.insert(k.clone(), Redactor::restore(v, secrets).map_err(missing)?);
        }
        let steps: Vec<RecordedStep> = leg
            .steps
            .iter()
            .filter(|s| s.index <= snap.after_index)
            .cloned()
            .collect();
        let mut outputs = BTreeMap::new();
        for st in &steps {
            let Some(outs) = &st.outputs else {
                return Err(format!(
                    "step {} has an output masked with ::add-mask::",
                    st.step_id
                ));
            };
            let mut restored = Vec::new();
            for (k, v) in outs {
                restored.push((k.clone(), Redactor::restore(v, secrets).map_err(missing)?));
            }
            outputs.insert(st.index, restored);
        }
        Ok(LegContinue {
            from_run: run_id.to_string(),
            session_id: leg.session_id.clone(),
            snapshot: snap.clone(),
            env,
            steps,
            outputs,
            kept_snapshots: leg
                .snapshots
                .iter()
                .filter(|s| s.after_index <= snap.after_index)
                .cloned()
                .collect(),
            matrix: leg.matrix.clone(),
        })
    }
}

/// Directories of a leg inside the VM.
#[derive(Debug, Clone)]
pub(crate) struct JobDirs {
    pub workspace: String,
    pub temp: String,
    pub files: String,
}

/// A post step registered by a node action.
#[derive(Debug, Clone)]
struct PostStep {
    step_id: String,
    name: String,
    action_dir: String,
    script: String,
    condition: String,
    env: BTreeMap<String, String>,
    state: Vec<(String, String)>,
}

/// The scope a list of steps runs in: the job itself, or a composite action.
#[derive(Debug, Default)]
struct Frame {
    steps: ExprMap,
    inputs: Option<Value>,
    /// `env:` of the composite's `uses:` step, visible to its inner steps.
    env: IndexMap<String, String>,
    id_prefix: String,
    status: Status,
    action_path: Option<String>,
}

/// Outcome of one step's main work.
struct StepRun {
    ok: bool,
    outputs: Vec<(String, String)>,
}

pub(crate) struct JobRunner {
    rt: Arc<RunShared>,
    session: SessionRef,
    spec: LegSpec,
    dirs: JobDirs,
    /// Contexts fixed for the whole leg (github, vars, secrets, inputs, matrix, strategy,
    /// needs, runner, job).
    base: EvalContext<'static>,
    github: serde_json::Map<String, serde_json::Value>,
    /// workflow + job `env:` plus `GITHUB_ENV` assignments.
    env: IndexMap<String, String>,
    path: PrependPath,
    cancel: CancellationToken,
    timed_out: Arc<AtomicBool>,
    seq: u32,
    posts: Vec<PostStep>,
    defaults_shell: Option<String>,
    defaults_wd: Option<String>,
    job_failed: bool,
    /// The job's `steps` context after the last step (for job outputs).
    job_steps: ExprMap,
    /// Cancellation of the step being run (see [`JobRunner::arm_step_token`]).
    step_cancel: CancellationToken,
    /// The command number whose file command files already exist.
    prepared_seq: Option<u32>,
    /// The leg's directory inside the VM (holds `dirs`).
    leg_root: String,
    /// Continue from a step snapshot of a failed run.
    cont: Option<LegContinue>,
    /// While a continuing leg replays its recorded steps: the run they come from.
    kept_from: Option<String>,
    /// This leg's part of the run record.
    record: LegRun,
    /// `env` after the job's own layers (`--env-file`, workflow, job): what `GITHUB_ENV`
    /// changed is recorded against it.
    env_base: IndexMap<String, String>,
    /// The last top-level main step's name, outcome, conclusion and outputs (for the record).
    last_main: Option<MainStepEnd>,
}

/// How a top-level main step ended: name, outcome, conclusion, outputs.
type MainStepEnd = (String, StepResult, StepResult, Vec<(String, String)>);

fn to_value(v: &serde_json::Value) -> Value {
    Value::from(v)
}

fn merge_defaults(
    wf: Option<&Defaults>,
    job: Option<&Defaults>,
) -> (Option<String>, Option<String>) {
    let pick = |f: fn(&Defaults) -> Option<String>| job.and_then(f).or_else(|| wf.and_then(f));
    (
        pick(|d| d.run.as_ref().and_then(|r| r.shell.clone())),
        pick(|d| d.run.as_ref().and_then(|r| r.working_directory.clone())),
    )
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The environment variable name of an action input (`INPUT_<NAME>`).
fn input_env_name(name: &str) -> String {
    format!("INPUT_{}", name.replace(' ', "_").to_uppercase())
}

impl JobRunner {
    pub(crate) fn new(
        rt: Arc<RunShared>,
        session: SessionRef,
        spec: LegSpec,
        cancel: CancellationToken,
    ) -> Self {
        let leg_root = format!("{}/{}", session.root, sanitize(&spec.key));
        let repo_name = rt.repo_name.clone();
        let dirs = JobDirs {
            workspace: format!("{leg_root}/work/{repo_name}"),
            temp: format!("{leg_root}/temp"),
            files: format!("{leg_root}/files"),
        };
        let mut github = rt.github.clone();
        github.insert("job".into(), spec.job_id.clone().into());
        github.insert("workspace".into(), dirs.workspace.clone().into());
        github.insert("event_path".into(), session.event_path.clone().into());
        let job = &spec.workflow.jobs[&spec.job_id];
        let (defaults_shell, defaults_wd) =
            merge_defaults(spec.workflow.defaults.as_ref(), job.defaults.as_ref());
        let runner = serde_json::json!({
            "os": "Linux", "arch": "X64", "name": format!("ignis-{}", session.vm_id),
            "environment": "self-hosted", "temp": dirs.temp, "tool_cache": session.tool_cache,
            "workspace": format!("{leg_root}/work"), "debug": "",
        });
        let mut base = EvalContext::new();
        base.set(
            "github",
            to_value(&serde_json::Value::Object(github.clone())),
        );
        base.set("vars", to_value(&rt.vars));
        base.set("secrets", to_value(&spec.secrets));
        base.set("inputs", to_value(&spec.inputs));
        base.set(
            "matrix",
            spec.matrix
                .as_ref()
                .map(to_value)
                .unwrap_or_else(|| Value::object(ExprMap::new())),
        );
        base.set("strategy", to_value(&spec.strategy));
        base.set("needs", to_value(&spec.needs));
        base.set("runner", to_value(&runner));
        base.hash_files = Some(hash_files::callback());
        let record = LegRun {
            job_id: spec.job_id.clone(),
            name: spec.name.clone(),
            matrix: spec.matrix.clone(),
            job_hash: crate::runs::job_hash(&spec.workflow, &spec.job_id),
            result: None,
            outputs: serde_json::Map::new(),
            session_id: session.session_id.clone(),
            steps: Vec::new(),
            snapshots: Vec::new(),
        };
        JobRunner {
            leg_root,
            cont: None,
            kept_from: None,
            record,
            env_base: IndexMap::new(),
            last_main: None,
            rt,
            session,
            spec,
            dirs,
            base,
            github,
            env: IndexMap::new(),
            path: PrependPath::default(),
            cancel,
            timed_out: Arc::new(AtomicBool::new(false)),
            seq: 0,
            posts: Vec::new(),
            defaults_shell,
            defaults_wd,
            job_failed: false,
            job_steps: ExprMap::new(),
            step_cancel: CancellationToken::new(),
            prepared_seq: None,
        }
    }

    /// Continue from a step snapshot (the session's VM was restored from it). A leg whose
    /// matrix combination changed since starts over instead.
    pub(crate) fn resuming(mut self, cont: Option<LegContinue>) -> Self {
        self.cont = cont.filter(|c| c.matrix == self.spec.matrix);
        self
    }

    fn job(&self) -> &Job {
        &self.spec.workflow.jobs[&self.spec.job_id]
    }

    /// Put this leg's part in the run record; `flush` writes the record now.
    fn record_leg(&self, flush: bool) {
        if let Some(j) = &self.rt.journal {
            let (key, leg) = (self.spec.key.clone(), self.record.clone());
            let put = |w: &mut crate::runs::WorkflowRun| {
                w.legs.insert(key, leg);
            };
            if flush {
                j.update_and_flush(put);
            } else {
                j.update(put);
            }
        }
    }

    /// Resume notices, and the record of a continuing leg starting from the previous one.
    fn announce_resume(&mut self) {
        let Some(resume) = self.rt.resume.clone() else {
            return;
        };
        if let Some(c) = &self.cont {
            self.record.steps = c.steps.clone();
            self.record.snapshots = c.kept_snapshots.clone();
            let after = c
                .steps
                .iter()
                .find(|s| s.index == c.snapshot.after_index)
                .map(|s| s.step_id.clone())
                .unwrap_or_else(|| c.snapshot.after_index.to_string());
            self.system(
                "",
                &format!(
                    "##[notice]resuming run {}: vm restored from snapshot {} taken after step {after}; steps 0..={} are not re-run, the job continues at step {}",
                    c.from_run,
                    c.snapshot.snapshot.name,
                    c.snapshot.after_index,
                    c.snapshot.after_index + 1
                ),
            );
            return;
        }
        let Some(prev) = resume.previous.legs.get(&self.spec.key) else {
            return;
        };
        let why = match LegContinue::from_record(
            prev,
            &self.spec.workflow,
            &self.rt.secrets,
            &resume.run_id,
        ) {
            Err(why) => why,
            Ok(_) if prev.matrix != self.spec.matrix => {
                "its matrix combination changed".to_string()
            }
            Ok(_) => "its snapshot was not restored (the run's one vm was restored from another job's snapshot, or the restore failed)".to_string(),
        };
        self.system(
            "",
            &format!(
                "##[notice]resuming run {}: the job starts again from its first step: {why}",
                resume.run_id
            ),
        );
    }

    /// Emit the recorded results of the steps a continuing leg does not run again and put
    /// them in the `steps` context; put back its env, PATH and command counter.
    fn restore_from(&mut self, frame: &mut Frame, steps: &[Step], c: LegContinue) -> usize {
        for (k, v) in c.env {
            self.env.insert(k, v);
        }
        for p in &c.snapshot.path {
            self.path.add(p.clone());
        }
        self.seq = c.snapshot.seq;
        self.prepared_seq = None;
        self.kept_from = Some(c.from_run.clone());
        let mut outputs = c.outputs;
        for rec in &c.steps {
            let outs = outputs.remove(&rec.index).unwrap_or_default();
            if let Some(step) = steps.get(rec.index) {
                self.finish_step(
                    frame,
                    step,
                    &rec.step_id,
                    &rec.name,
                    Stage::Main,
                    rec.outcome,
                    rec.conclusion,
                    outs,
                    Instant::now(),
                );
            }
        }
        self.kept_from = None;
        // The restored steps are in the record already.
        self.last_main = None;
        c.snapshot.after_index + 1
    }

    /// After a top-level step: record it and, with `--snapshot-steps`, snapshot the VM when
    /// the step succeeded and the job is still on its success path (never after the last
    /// step: nothing is left to resume there).
    async fn after_top_step(&mut self, frame: &Frame, step: &Step, total: usize) {
        let Some((name, outcome, conclusion, outputs)) = self.last_main.take() else {
            return;
        };
        let step_id = step.id.clone().unwrap_or_else(|| step.index.to_string());
        let redactor = self.rt.journal.as_ref().map(|j| j.redactor().clone());
        let recorded_outputs = redactor.as_ref().and_then(|r| {
            outputs
                .iter()
                .map(|(k, v)| r.redact(v).map(|v| (k.clone(), v)))
                .collect::<Option<BTreeMap<_, _>>>()
        });
        self.record.steps.push(RecordedStep {
            index: step.index,
            id: step.id.clone(),
            step_id: step_id.clone(),
            name,
            outcome,
            conclusion,
            outputs: recorded_outputs,
        });
        let wanted = self.rt.policy.steps
            && self.rt.journal.is_some()
            && outcome == StepResult::Success
            && frame.status != Status::Failure
            && !self.cancelled()
            && step.index + 1 < total;
        if !wanted {
            return;
        }
        let label = format!("{}-s{}", self.spec.key, step.index);
        let after = format!("{}/{step_id}", self.spec.job_id);
        let Some(snapshot) = super::take_snapshot(&self.rt, &self.session, &label, after).await
        else {
            return;
        };
        let mut blocked = None;
        if !self.posts.is_empty() {
            blocked = Some(
                "an action's post step was registered before it (ignis cannot restore one)"
                    .to_string(),
            );
        }
        if self.rt.masker.len() > self.rt.masks_at_start {
            // Added masks are not recorded (they are secrets too), so a resumed run could
            // not mask them any more.
            blocked.get_or_insert_with(|| {
                "a step used ::add-mask:: (masked values are never recorded)".to_string()
            });
        }
        if self.record.steps.iter().any(|s| s.outputs.is_none()) {
            blocked.get_or_insert_with(|| {
                "a step output holds a value masked with ::add-mask::".to_string()
            });
        }
        let mut env = IndexMap::new();
        for (k, v) in &self.env {
            if self.env_base.get(k) == Some(v) {
                continue;
            }
            match redactor.as_ref().and_then(|r| r.redact(v)) {
                Some(v) => {
                    env.insert(k.clone(), v);
                }
                None => {
                    blocked.get_or_insert_with(|| {
                        format!("env {k} holds a value masked with ::add-mask::")
                    });
                }
            }
        }
        let path: Vec<String> = self
            .path
            .apply("")
            .split(':')
            .filter(|p| !p.is_empty())
            .rev()
            .map(str::to_string)
            .collect();
        self.record.snapshots.push(StepSnapshot {
            snapshot,
            after_index: step.index,
            prefix_hash: crate::runs::prefix_hash(
                &self.spec.workflow,
                &self.spec.job_id,
                step.index + 1,
            ),
            env,
            path,
            seq: self.seq,
            blocked,
        });
        // Written now: a record that outlives a crash still names the snapshot.
        self.record_leg(true);
    }

    fn target(&self, step_id: &str) -> LogTarget {
        LogTarget {
            bus: self.rt.bus.clone(),
            masker: self.rt.masker.clone(),
            job_id: self.spec.job_id.clone(),
            matrix: self.spec.matrix.clone(),
            step_id: step_id.to_string(),
        }
    }

    fn system(&self, step_id: &str, line: &str) {
        self.target(step_id).log(LogStream::System, line);
    }

    /// Logs `error` as the step's `##[error]` line and fails the step before it runs.
    fn fail_step(&self, step_id: &str, error: impl std::fmt::Display) -> StepRun {
        self.system(step_id, &format!("##[error]{error}"));
        StepRun {
            ok: false,
            outputs: vec![],
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Contexts for an expression in `frame`, with `extra_env` (a step's own env) on top.
    fn ctx(
        &self,
        frame: &Frame,
        extra_env: Option<&IndexMap<String, String>>,
    ) -> EvalContext<'static> {
        let mut c = self.base.clone();
        let mut env = ExprMap::new();
        for (k, v) in self
            .env
            .iter()
            .chain(frame.env.iter())
            .chain(extra_env.into_iter().flatten())
        {
            env.insert(k.clone(), Value::String(v.clone()));
        }
        c.set("env", Value::object(env));
        c.set("steps", Value::object(frame.steps.clone()));
        if let Some(inputs) = &frame.inputs {
            c.set("inputs", inputs.clone());
        }
        let job_status = if self.cancelled() {
            "cancelled"
        } else if self.job_failed {
            "failure"
        } else {
            "success"
        };
        c.set(
            "job",
            Value::object_from([("status", Value::from(job_status))]),
        );
        if let Some(p) = &frame.action_path {
            let mut gh = self.github.clone();
            gh.insert("action_path".into(), p.clone().into());
            c.set("github", to_value(&serde_json::Value::Object(gh)));
        }
        c.status = if self.cancelled() {
            Status::Cancelled
        } else {
            frame.status
        };
        c
    }

    /// Computes, in the machine, the `hashFiles` digests these step fields need.
    async fn prefetch_hash_files(
        &self,
        templates: &[&str],
        conditions: &[&str],
        ctx: &EvalContext<'_>,
    ) {
        let requests = hash_files::requests(templates, conditions, ctx);
        if requests.is_empty() {
            return;
        }
        hash_files::prefetch(
            &self.session.agent,
            &self.rt.base_env,
            &self.dirs.workspace,
            requests,
        )
        .await;
    }

    /// Run the leg: directories, env, steps, post steps, outputs.
    pub(crate) async fn run(mut self) -> LegResult {
        let started = Instant::now();
        let job_name = self.spec.name.clone();
        self.rt.bus.emit(RunEvent::JobStarted {
            job_id: self.spec.job_id.clone(),
            name: job_name.clone(),
            matrix: self.spec.matrix.clone(),
            session_id: self.session.session_id.clone(),
            vm_id: self.session.vm_id.clone(),
        });
        self.announce_resume();
        self.record_leg(false);
        let result = hash_files::scope(self.run_inner()).await;
        let mut outputs = serde_json::Map::new();
        if result.is_ok() {
            // Job outputs see the job's steps context, kept by `run_inner`.
            let frame = Frame {
                steps: std::mem::take(&mut self.job_steps),
                ..Frame::default()
            };
            let ctx = self.ctx(&frame, None);
            for (name, expr) in self.job().outputs.clone() {
                match exprs::string(
                    &expr,
                    &ctx,
                    &format!("jobs.{}.outputs.{name}", self.spec.job_id),
                ) {
                    Ok(v) => {
                        // GitHub drops outputs that contain a secret instead of masking them.
                        if self.rt.masker.mask(&v) == v {
                            outputs.insert(name, v.into());
                        } else {
                            self.system(
                                "",
                                &format!(
                                    "##[warning]skip output '{name}' since it may contain secret"
                                ),
                            );
                        }
                    }
                    Err(e) => self.system("", &format!("##[error]{e}")),
                }
            }
        }
        let job_result = match result {
            Ok(()) if self.timed_out.load(Ordering::SeqCst) => JobResult::Failure,
            Ok(()) if self.cancelled() => JobResult::Cancelled,
            Ok(()) if self.job_failed => JobResult::Failure,
            Ok(()) => JobResult::Success,
            Err(e) => {
                self.system("", &format!("##[error]{e}"));
                if self.cancelled() && !self.timed_out.load(Ordering::SeqCst) {
                    JobResult::Cancelled
                } else {
                    JobResult::Failure
                }
            }
        };
        self.rt.bus.emit(RunEvent::JobFinished {
            job_id: self.spec.job_id.clone(),
            name: job_name,
            matrix: self.spec.matrix.clone(),
            result: job_result,
            session_id: self.session.session_id.clone(),
            vm_id: self.session.vm_id.clone(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            outputs: outputs.clone(),
        });
        self.record.result = Some(job_result);
        self.record.outputs = outputs.clone();
        self.record_leg(false);
        LegResult {
            result: job_result,
            outputs,
        }
    }

    async fn run_inner(&mut self) -> Result<(), String> {
        // Job directories: one round trip in the run's VM, no allocation. In a VM restored
        // from a snapshot, a leg that starts over first clears what an earlier attempt left.
        if self.session.restored && self.cont.is_none() {
            let mut argv: Vec<String> = ["sh", "-c", "rm -rf \"$0\" && mkdir -p \"$@\""]
                .map(String::from)
                .to_vec();
            argv.push(self.leg_root.clone());
            argv.extend([
                self.dirs.workspace.clone(),
                self.dirs.temp.clone(),
                self.dirs.files.clone(),
            ]);
            let mkdir = ExecRequest {
                program: Program::Argv(argv),
                env: self.rt.base_env.clone(),
                cwd: None,
                stdin: None,
                timeout: Some(Duration::from_secs(60)),
            };
            match self.session.agent.exec_collect(mkdir).await {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    return Err(format!(
                        "creating the job directories failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Err(e) => return Err(format!("creating the job directories failed: {e}")),
            }
        } else {
            // One `put_tar` of the three directories (relative to the leg's root), not a
            // `mkdir -p` process.
            let root = format!("{}/", self.leg_root);
            let rel: Vec<&str> = [&self.dirs.workspace, &self.dirs.temp, &self.dirs.files]
                .into_iter()
                .map(|d| d.strip_prefix(&root).unwrap_or(d.as_str()))
                .collect();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let tar = crate::runtime::dirs::directories_tar(&rel, now)
                .map_err(|e| format!("creating the job directories failed: {e}"))?;
            self.session
                .agent
                .put_tar(&self.leg_root, tar)
                .await
                .map_err(|e| format!("creating the job directories failed: {e}"))?;
        }

        // Job env (--env-file < workflow < job), evaluated with the job's contexts.
        let frame0 = Frame::default();
        for (k, v) in &self.rt.extra_env {
            self.env.insert(k.clone(), v.clone());
        }
        let wf_env = self.spec.workflow.env.clone();
        for (k, v) in &wf_env {
            let ctx = self.ctx(&frame0, None);
            let s = exprs::value_string(v, &ctx, &format!("env.{k}"))?;
            self.env.insert(k.clone(), s);
        }
        let job_env = self.job().env.clone();
        for (k, v) in &job_env {
            let ctx = self.ctx(&frame0, None);
            let s = exprs::value_string(v, &ctx, &format!("jobs.{}.env.{k}", self.spec.job_id))?;
            self.env.insert(k.clone(), s);
        }

        // Job timeout: cancel the leg's token and remember why.
        let ctx = self.ctx(&frame0, None);
        let minutes =
            exprs::number_expr(self.job().timeout_minutes.as_ref(), &ctx, "timeout-minutes")?
                .unwrap_or(DEFAULT_JOB_TIMEOUT_MINUTES);
        let timeout = Duration::try_from_secs_f64(minutes.max(0.0) * 60.0).unwrap_or(Duration::MAX);
        let timer = {
            let token = self.cancel.clone();
            let flag = self.timed_out.clone();
            let bus = self.rt.bus.clone();
            let (job_id, matrix) = (self.spec.job_id.clone(), self.spec.matrix.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => {
                        flag.store(true, Ordering::SeqCst);
                        bus.emit(RunEvent::Log {
                            job_id, matrix, step_id: String::new(), stream: LogStream::System,
                            line: format!("##[error]The job has exceeded the maximum execution time of {minutes}m"),
                        });
                        token.cancel();
                    }
                    _ = token.cancelled() => {}
                }
            })
        };

        let steps = self.job().steps.clone();
        let mut frame = Frame::default();
        self.env_base = self.env.clone();
        let first = match self.cont.take() {
            Some(c) => self.restore_from(&mut frame, &steps, c),
            None => 0,
        };
        let total = steps.len();
        for step in steps.iter().skip(first) {
            self.last_main = None;
            self.run_step(&mut frame, step).await;
            self.after_top_step(&frame, step, total).await;
        }
        let res: Result<(), String> = Ok(());
        if frame.status == Status::Failure {
            self.job_failed = true;
        }
        // Post steps run in reverse order, after everything else (also after failure).
        let posts = std::mem::take(&mut self.posts);
        for post in posts.into_iter().rev() {
            self.run_post(&mut frame, post).await;
        }
        if frame.status == Status::Failure {
            self.job_failed = true;
        }
        timer.abort();
        // Outputs are evaluated against the job's steps context.
        self.job_steps = frame.steps;
        res
    }

    fn run_steps<'a>(
        &'a mut self,
        frame: &'a mut Frame,
        steps: &'a [Step],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            for step in steps {
                self.run_step(frame, step).await;
            }
            Ok(())
        })
    }

    fn step_display_name(&self, step: &Step, ctx: &EvalContext<'_>) -> String {
        if let Some(n) = &step.name {
            return exprs::string(n, ctx, "name").unwrap_or_else(|_| n.clone());
        }
        if let Some(r) = &step.run {
            let first = r.lines().next().unwrap_or_default();
            return format!("Run {first}");
        }
        step.uses
            .clone()
            .map(|u| format!("Run {u}"))
            .unwrap_or_else(|| format!("step {}", step.index))
    }

    async fn run_step(&mut self, frame: &mut Frame, step: &Step) {
        let step_id = format!(
            "{}{}",
            frame.id_prefix,
            step.id.clone().unwrap_or_else(|| step.index.to_string())
        );
        let ctx0 = self.ctx(frame, None);
        // `hashFiles` digests are computed in the machine before evaluation: first for the
        // step's env (evaluated first), then for the fields that may read that env.
        hash_files::clear();
        let env_srcs: Vec<&str> = step.env.values().filter_map(|v| v.as_str()).collect();
        self.prefetch_hash_files(&env_srcs, &[], &ctx0).await;
        // Step env (evaluated first: `if:` may read it).
        let mut step_env = IndexMap::new();
        let mut setup_error = None;
        for (k, v) in &step.env {
            let ctx = self.ctx(frame, Some(&step_env));
            match exprs::value_string(v, &ctx, &format!("env.{k}")) {
                Ok(s) => {
                    step_env.insert(k.clone(), s);
                }
                Err(e) => setup_error = Some(e),
            }
        }
        let ctx = self.ctx(frame, Some(&step_env));
        {
            let mut templates: Vec<&str> = step.with.values().filter_map(|v| v.as_str()).collect();
            templates.extend(
                [&step.name, &step.run, &step.shell, &step.working_directory]
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            );
            if let Some(BoolExpr::Expr(s)) = &step.continue_on_error {
                templates.push(s);
            }
            if let Some(NumberExpr::Expr(s)) = &step.timeout_minutes {
                templates.push(s);
            }
            let conditions: Vec<&str> = step.condition.as_deref().into_iter().collect();
            self.prefetch_hash_files(&templates, &conditions, &ctx)
                .await;
        }
        let name = self.rt.masker.mask(&self.step_display_name(step, &ctx0));
        self.arm_step_token();
        let run_it = match exprs::condition(
            step.condition.as_deref(),
            &ctx,
            &format!("step {step_id} if"),
        ) {
            Ok(b) => b,
            Err(e) => {
                setup_error = Some(e);
                true
            }
        };
        let continue_on_error =
            exprs::bool_expr(step.continue_on_error.as_ref(), &ctx, "continue-on-error")
                .unwrap_or_else(|e| {
                    setup_error.get_or_insert(e);
                    false
                });
        if !run_it && setup_error.is_none() {
            self.finish_step(
                frame,
                step,
                &step_id,
                &name,
                Stage::Main,
                StepResult::Skipped,
                StepResult::Skipped,
                vec![],
                Instant::now(),
            );
            return;
        }
        let started = Instant::now();
        self.rt.bus.emit(RunEvent::StepStarted {
            job_id: self.spec.job_id.clone(),
            matrix: self.spec.matrix.clone(),
            step_id: step_id.clone(),
            name: name.clone(),
            stage: Stage::Main,
            vm_id: self.session.vm_id.clone(),
        });
        let run = match setup_error {
            Some(e) => {
                self.system(&step_id, &format!("##[error]{e}"));
                StepRun {
                    ok: false,
                    outputs: vec![],
                }
            }
            None => {
                let timeout = match exprs::number_expr(
                    step.timeout_minutes.as_ref(),
                    &ctx,
                    "timeout-minutes",
                ) {
                    Ok(t) => t.and_then(|m| Duration::try_from_secs_f64(m.max(0.0) * 60.0).ok()),
                    Err(e) => {
                        self.system(&step_id, &format!("##[error]{e}"));
                        None
                    }
                };
                self.step_main(frame, step, &step_id, &step_env, timeout)
                    .await
            }
        };
        let outcome = if self.cancelled() && !run.ok && !self.timed_out.load(Ordering::SeqCst) {
            StepResult::Cancelled
        } else if run.ok {
            StepResult::Success
        } else {
            StepResult::Failure
        };
        let conclusion = if outcome == StepResult::Failure && continue_on_error {
            StepResult::Success
        } else {
            outcome
        };
        self.finish_step(
            frame,
            step,
            &step_id,
            &name,
            Stage::Main,
            outcome,
            conclusion,
            run.outputs,
            started,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_step(
        &mut self,
        frame: &mut Frame,
        step: &Step,
        step_id: &str,
        name: &str,
        stage: Stage,
        outcome: StepResult,
        conclusion: StepResult,
        outputs: Vec<(String, String)>,
        started: Instant,
    ) {
        if conclusion == StepResult::Failure {
            frame.status = Status::Failure;
        }
        if stage == Stage::Main && frame.id_prefix.is_empty() && frame.action_path.is_none() {
            self.last_main = Some((name.to_string(), outcome, conclusion, outputs.clone()));
        }
        if let Some(id) = &step.id {
            let mut out = ExprMap::new();
            for (k, v) in outputs {
                out.insert(k, Value::String(v));
            }
            frame.steps.insert(
                id.clone(),
                Value::object_from([
                    ("outputs", Value::object(out)),
                    ("outcome", Value::from(outcome.as_str())),
                    ("conclusion", Value::from(conclusion.as_str())),
                ]),
            );
        }
        self.rt.bus.emit(RunEvent::StepFinished {
            job_id: self.spec.job_id.clone(),
            matrix: self.spec.matrix.clone(),
            step_id: step_id.to_string(),
            name: name.to_string(),
            stage,
            outcome,
            conclusion,
            vm_id: self.session.vm_id.clone(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            kept_from: self.kept_from.clone(),
        });
    }

    /// Fix the token the commands of the step about to run use: a step whose `if:` was
    /// evaluated after the leg was cancelled (an `always()`/`cancelled()` step) is stopped
    /// only by a second Ctrl-C; any other step stops when the leg is cancelled, even if
    /// the cancellation lands between its `if:` and its first command.
    fn arm_step_token(&mut self) {
        self.step_cancel = if self.cancel.is_cancelled() {
            self.rt.kill.child_token()
        } else {
            self.cancel.child_token()
        };
    }

    /// The full process environment of a command.
    fn process_env(
        &mut self,
        frame: &Frame,
        step_env: &IndexMap<String, String>,
    ) -> (BTreeMap<String, String>, FilePaths) {
        self.seq += 1;
        let files = FilePaths::new(&self.dirs.files, self.seq);
        let mut env = self.rt.base_env.clone();
        for (k, v) in crate::runtime::contexts::github_env(&self.github) {
            env.insert(k, v);
        }
        env.insert("RUNNER_OS".into(), "Linux".into());
        env.insert("RUNNER_ARCH".into(), "X64".into());
        env.insert(
            "RUNNER_NAME".into(),
            format!("ignis-{}", self.session.vm_id),
        );
        env.insert("RUNNER_TEMP".into(), self.dirs.temp.clone());
        env.insert("RUNNER_TOOL_CACHE".into(), self.session.tool_cache.clone());
        env.insert(
            "RUNNER_WORKSPACE".into(),
            self.dirs
                .workspace
                .rsplit_once('/')
                .map(|x| x.0.to_string())
                .unwrap_or_default(),
        );
        env.insert("GITHUB_ENV".into(), files.env.clone());
        env.insert("GITHUB_OUTPUT".into(), files.output.clone());
        env.insert("GITHUB_STATE".into(), files.state.clone());
        env.insert("GITHUB_PATH".into(), files.path.clone());
        env.insert("GITHUB_STEP_SUMMARY".into(), files.summary.clone());
        env.insert("GITHUB_ACTION".into(), format!("__run_{}", self.seq));
        if let Some(p) = &frame.action_path {
            env.insert("GITHUB_ACTION_PATH".into(), p.clone());
        }
        for (k, v) in self
            .env
            .iter()
            .chain(frame.env.iter())
            .chain(step_env.iter())
        {
            env.insert(k.clone(), v.clone());
        }
        let base_path = env.get("PATH").cloned().unwrap_or_default();
        env.insert("PATH".into(), self.path.apply(&base_path));
        (env, files)
    }

    /// Run one command with file commands; returns success and the effects applied.
    async fn command(
        &mut self,
        step_id: &str,
        program: Program,
        env: BTreeMap<String, String>,
        files: FilePaths,
        cwd: String,
        timeout: Option<Duration>,
    ) -> (bool, Vec<(String, String)>, Vec<(String, String)>) {
        let allow_unsecure = env
            .get("ACTIONS_ALLOW_UNSECURE_COMMANDS")
            .is_some_and(|v| v == "true");
        let req = ExecRequest {
            program,
            env,
            cwd: Some(cwd),
            stdin: None,
            timeout,
        };
        let token = self.step_cancel.clone();
        let target = self.target(step_id);
        let agent = self.session.agent.clone();
        // GitHub creates the file command files before the step (the toolkit refuses to
        // append to a missing file). The agent creates them with the command and sends them
        // back before its exit status: one round trip per command.
        let mut run = None;
        if agent.supports_command_files() {
            let with_files = CommandFiles {
                dir: files.dir.clone(),
                names: file_commands::FILE_NAMES.map(str::to_string).to_vec(),
                mode: 0o666,
            };
            let r = process::run(
                &agent,
                req.clone(),
                &target,
                allow_unsecure,
                &token,
                Some(with_files),
            )
            .await;
            // An agent older than that request turned it down without running anything:
            // then the older way below.
            if agent.supports_command_files() {
                run = Some(r);
            }
        }
        let (ended, effects, returned) = match run {
            Some(r) => r,
            None => {
                // Usually the previous command already created this one's files while its
                // own were read back (see below), which saves a round trip.
                if self.prepared_seq != Some(files.seq)
                    && let Err(err) = self.create_file_commands(&files).await
                {
                    self.system(
                        step_id,
                        &format!("##[error]creating the file command files: {err}"),
                    );
                    return (false, vec![], vec![]);
                }
                process::run(&agent, req, &target, allow_unsecure, &token, None).await
            }
        };
        match &ended {
            Ended::Exited(0) => {}
            Ended::Exited(c) => self.system(
                step_id,
                &format!("##[error]Process completed with exit code {c}."),
            ),
            Ended::Signalled(s) => self.system(
                step_id,
                &format!("##[error]Process was killed by signal {s}."),
            ),
            Ended::TimedOut => self.system(step_id, "##[error]The action has timed out."),
            Ended::Cancelled => self.system(step_id, "##[error]The operation was canceled."),
            Ended::Failed(why) => self.system(step_id, &format!("##[error]{why}")),
        }
        let CommandEffects {
            mut outputs,
            mut state,
            env: set_env,
            path,
        } = effects;
        for (k, v) in set_env {
            self.env.insert(k, v);
        }
        for p in path {
            self.path.add(p);
        }
        let mut ok = ended.success();
        let read = match returned {
            Some(tar) => self.parse_file_commands(step_id, &files, tar).await,
            None => {
                // Read this command's files and create the next command's in the same round
                // trip.
                let next = FilePaths::new(&self.dirs.files, self.seq + 1);
                let (read, created) = tokio::join!(
                    self.read_file_commands(step_id, &files),
                    self.create_file_commands(&next)
                );
                self.prepared_seq = created.is_ok().then_some(next.seq);
                read
            }
        };
        match read {
            Ok(fc) => {
                for (k, v) in fc.env {
                    self.env.insert(k, v);
                }
                for p in fc.path {
                    self.path.add(p);
                }
                outputs.extend(fc.outputs);
                state.extend(fc.state);
            }
            Err(e) => {
                self.system(step_id, &format!("##[error]{e}"));
                ok = false;
            }
        }
        (ok, outputs, state)
    }

    /// Create the five (empty) file command files of one command in its own directory:
    /// one `put_tar`.
    async fn create_file_commands(&self, files: &FilePaths) -> Result<(), ignis_agent::AgentError> {
        let tar = file_commands::empty_files_tar().map_err(ignis_agent::AgentError::Io)?;
        self.session.agent.put_tar(&files.dir, tar).await
    }

    async fn read_file_commands(
        &self,
        step_id: &str,
        files: &FilePaths,
    ) -> Result<FileCommandsRead, String> {
        // One `get_tar` of the command's directory.
        let tar = self
            .session
            .agent
            .get_tar(&files.dir)
            .await
            .map_err(|e| e.to_string());
        self.parse_file_commands(step_id, files, tar).await
    }

    /// The file commands in the tar of a command's directory; a missing tar (the step removed
    /// the directory) means no commands.
    async fn parse_file_commands(
        &self,
        step_id: &str,
        files: &FilePaths,
        tar: Result<Vec<u8>, String>,
    ) -> Result<FileCommandsRead, String> {
        let agent = &self.session.agent;
        let read = match tar {
            Ok(tar) => file_commands::read_files_tar(&tar)
                .map_err(|e| format!("reading the file command files: {e}"))?,
            Err(_) => file_commands::FilesRead::default(),
        };
        let file_commands::FilesRead {
            mut contents,
            links,
        } = read;
        // A file replaced by a symlink: read through the link, like the runner would.
        for i in links {
            let Some(name) = file_commands::FILE_NAMES.get(i) else {
                continue;
            };
            contents[i] = agent
                .read_file(&format!("{}/{name}", files.dir))
                .await
                .unwrap_or_default();
        }
        let [env, output, state, path, summary] = contents;
        let mut out = FileCommandsRead {
            env: file_commands::parse_key_values("GITHUB_ENV", &env).map_err(|e| e.to_string())?,
            outputs: file_commands::parse_key_values("GITHUB_OUTPUT", &output)
                .map_err(|e| e.to_string())?,
            state: file_commands::parse_key_values("GITHUB_STATE", &state)
                .map_err(|e| e.to_string())?,
            path: file_commands::parse_path_file(&path).map_err(|e| e.to_string())?,
        };
        match file_commands::take_summary(&summary) {
            Ok(Some(md)) => self.rt.bus.emit(RunEvent::StepSummary {
                job_id: self.spec.job_id.clone(),
                matrix: self.spec.matrix.clone(),
                step_id: step_id.to_string(),
                markdown: self.rt.masker.mask(&md),
            }),
            Ok(None) => {}
            Err(e) => self.system(step_id, &format!("##[warning]{e}")),
        }
        // GitHub refuses to let a step override a few variables through GITHUB_ENV.
        out.env
            .retain(|(k, _)| !k.eq_ignore_ascii_case("NODE_OPTIONS"));
        Ok(out)
    }

    fn resolve_dir(&self, wd: Option<&str>) -> String {
        match wd {
            None | Some("") => self.dirs.workspace.clone(),
            Some(d) if d.starts_with('/') => d.to_string(),
            Some(d) => format!("{}/{}", self.dirs.workspace, d.trim_start_matches("./")),
        }
    }

    async fn step_main(
        &mut self,
        frame: &mut Frame,
        step: &Step,
        step_id: &str,
        step_env: &IndexMap<String, String>,
        timeout: Option<Duration>,
    ) -> StepRun {
        let ctx = self.ctx(frame, Some(step_env));
        if let Some(script) = &step.run {
            let body = match exprs::string(script, &ctx, "run") {
                Ok(b) => b,
                Err(e) => return self.fail_step(step_id, e),
            };
            // In a composite action, `shell:` is required and job defaults do not apply.
            let in_composite = frame.action_path.is_some();
            // A step's own value, else `defaults.run`'s; either may be an expression
            // (`${{ env.MY_SHELL }}`).
            let run_setting = |own: &Option<String>, default: &Option<String>, what: &str| {
                own.clone()
                    .or_else(|| default.clone().filter(|_| !in_composite))
                    .map(|v| exprs::string(&v, &ctx, what))
                    .transpose()
            };
            let shell_name = match run_setting(&step.shell, &self.defaults_shell, "shell") {
                Ok(s) => s,
                Err(e) => return self.fail_step(step_id, e),
            };
            let shell = match shell::resolve(shell_name.as_deref(), self.session.tools.bash) {
                Ok(s) => s.with_python(self.session.tools.python.as_deref()),
                Err(e) => return self.fail_step(step_id, e),
            };
            let wd = match run_setting(
                &step.working_directory,
                &self.defaults_wd,
                "working-directory",
            ) {
                Ok(w) => w,
                Err(e) => return self.fail_step(step_id, e),
            };
            let cwd = self.resolve_dir(wd.as_deref());
            let (env, files) = self.process_env(frame, step_env);
            let path = format!("{}/{}{}", self.dirs.temp, files.stem, shell.extension);
            let program = Program::Script {
                shell: shell.argv.clone(),
                body,
                path,
            };
            let (ok, outputs, _state) = self
                .command(step_id, program, env, files, cwd, timeout)
                .await;
            return StepRun { ok, outputs };
        }
        let Some(uses) = step.uses.clone() else {
            self.system(step_id, "##[error]step has neither run nor uses");
            return StepRun {
                ok: false,
                outputs: vec![],
            };
        };
        let action = match ActionRef::parse(&uses) {
            Ok(a) => a,
            Err(e) => return self.fail_step(step_id, e),
        };
        // `with:` values, evaluated in the caller's scope.
        let mut with = IndexMap::new();
        for (k, v) in &step.with {
            match exprs::value_string(v, &ctx, &format!("with.{k}")) {
                Ok(s) => {
                    with.insert(k.clone(), s);
                }
                Err(e) => return self.fail_step(step_id, e),
            }
        }
        if action.is_checkout() {
            let ok = self.checkout(step_id, &with).await;
            return StepRun {
                ok,
                outputs: vec![],
            };
        }
        let action_dir = match &action {
            ActionRef::Docker(img) => {
                self.system(
                    step_id,
                    &format!("##[error]docker action docker://{img} is not supported: no ignis backend runs containers yet"),
                );
                return StepRun {
                    ok: false,
                    outputs: vec![],
                };
            }
            ActionRef::Local(p) => self
                .resolve_dir(Some(p.as_str()))
                .trim_end_matches('/')
                .trim_end_matches("/.")
                .to_string(),
            ActionRef::Remote { .. } => match self.fetch_remote(&action).await {
                Ok(d) => d,
                Err(e) => return self.fail_step(step_id, e),
            },
        };
        let meta = match self.load_action(&action_dir, &uses).await {
            Ok(a) => a,
            Err(e) => return self.fail_step(step_id, e),
        };
        self.run_action(
            frame,
            step_id,
            &uses,
            &action_dir,
            meta,
            with,
            step_env,
            timeout,
        )
        .await
    }

    async fn load_action(&self, dir: &str, uses: &str) -> Result<Action, String> {
        let mut last = String::new();
        for file in ["action.yml", "action.yaml"] {
            let path = format!("{dir}/{file}");
            match self.session.agent.read_file(&path).await {
                Ok(bytes) => {
                    let text =
                        String::from_utf8(bytes).map_err(|_| format!("{path}: not utf-8"))?;
                    return ignis_workflow::parse_action(&path, &text).map_err(|d| {
                        let msgs: Vec<String> = d.iter().map(|x| x.to_string()).collect();
                        format!("invalid action {uses}: {}", msgs.join("; "))
                    });
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!(
            "can't find 'action.yml' or 'action.yaml' for action '{uses}' under {dir} ({last}); did you forget to run actions/checkout before running your local action?"
        ))
    }

    async fn fetch_remote(&self, action: &ActionRef) -> Result<String, String> {
        let ActionRef::Remote {
            owner,
            repo,
            path,
            git_ref,
        } = action
        else {
            return Err("not a remote action".into());
        };
        let cache = self.rt.action_cache.clone();
        let base_url = self.rt.actions_base_url.clone();
        let a = action.clone();
        let host_dir =
            tokio::task::spawn_blocking(move || actions::fetch_remote(&a, &cache, &base_url))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        let vm_dir = format!("{}/_actions/{owner}/{repo}/{git_ref}", self.session.root);
        let first = self
            .session
            .fetched
            .lock()
            .map(|mut s| s.insert(vm_dir.clone()))
            .unwrap_or(true);
        if first {
            let tar = tokio::task::spawn_blocking(move || actions::pack_dir(&host_dir))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            self.session
                .agent
                .put_tar(&vm_dir, tar)
                .await
                .map_err(|e| format!("copying the action into the vm: {e}"))?;
        }
        Ok(if path.is_empty() {
            vm_dir
        } else {
            format!("{vm_dir}/{path}")
        })
    }

    async fn checkout(&mut self, step_id: &str, with: &IndexMap<String, String>) -> bool {
        if let Some(repo) = with.get("repository").filter(|r| !r.is_empty()) {
            let own = self
                .github
                .get("repository")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            if repo != own {
                self.system(step_id, &format!("##[error]actions/checkout of another repository ({repo}) is not supported: ignis checks out the local repository only"));
                return false;
            }
        }
        let dest = match with.get("path").filter(|p| !p.is_empty()) {
            Some(p) => self.resolve_dir(Some(p)),
            None => self.dirs.workspace.clone(),
        };
        let src = self.rt.repo_dir.clone();
        let tar = match tokio::task::spawn_blocking(move || actions::pack_dir(&src)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                self.system(step_id, &format!("##[error]{e}"));
                return false;
            }
            Err(e) => {
                self.system(step_id, &format!("##[error]{e}"));
                return false;
            }
        };
        match self.session.agent.put_tar(&dest, tar).await {
            Ok(()) => true,
            Err(e) => {
                self.system(
                    step_id,
                    &format!("##[error]copying the repository into the workspace: {e}"),
                );
                false
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_action(
        &mut self,
        frame: &mut Frame,
        step_id: &str,
        uses: &str,
        action_dir: &str,
        meta: Action,
        with: IndexMap<String, String>,
        step_env: &IndexMap<String, String>,
        timeout: Option<Duration>,
    ) -> StepRun {
        // Inputs: `with:` values, else the action's defaults (evaluated in the caller's scope).
        let ctx = self.ctx(frame, Some(step_env));
        // GitHub allows `hashFiles` in input defaults (and in `pre-if`): digest the patterns
        // of the defaults that apply before evaluating them.
        let given = |name: &str| with.keys().any(|k| k.eq_ignore_ascii_case(name));
        let defaults: Vec<&str> = meta
            .inputs
            .iter()
            .filter(|(name, _)| !given(name))
            .filter_map(|(_, input)| input.default.as_deref())
            .collect();
        let pre_if: Vec<&str> = match &meta.runs {
            Runs::Node {
                pre: Some(_),
                pre_if: Some(c),
                ..
            } => vec![c.as_str()],
            _ => vec![],
        };
        self.prefetch_hash_files(&defaults, &pre_if, &ctx).await;
        let mut inputs = IndexMap::new();
        for (name, input) in &meta.inputs {
            let v = match with.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                Some((_, v)) => v.clone(),
                None => match &input.default {
                    // An expression error in a default fails the step, as on GitHub.
                    Some(d) => match exprs::string(d, &ctx, &format!("inputs.{name}.default")) {
                        Ok(v) => v,
                        Err(e) => return self.fail_step(step_id, e),
                    },
                    None => String::new(),
                },
            };
            inputs.insert(name.clone(), v);
        }
        for (k, v) in &with {
            if !inputs.keys().any(|n| n.eq_ignore_ascii_case(k)) {
                inputs.insert(k.clone(), v.clone());
            }
        }
        match meta.runs {
            Runs::Docker { .. } => {
                self.system(step_id, &format!("##[error]docker action {uses} is not supported: no ignis backend runs containers yet"));
                StepRun {
                    ok: false,
                    outputs: vec![],
                }
            }
            Runs::Composite { steps } => {
                let mut in_ctx = ExprMap::new();
                for (k, v) in &inputs {
                    in_ctx.insert(k.clone(), Value::String(v.clone()));
                }
                let mut inner = Frame {
                    steps: ExprMap::new(),
                    inputs: Some(Value::object(in_ctx)),
                    env: frame
                        .env
                        .iter()
                        .chain(step_env.iter())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    id_prefix: format!("{step_id}/"),
                    status: Status::Success,
                    action_path: Some(action_dir.to_string()),
                };
                let _ = self.run_steps(&mut inner, &steps).await;
                let ok = inner.status != Status::Failure;
                let ctx = self.ctx(&inner, None);
                // The inner steps replaced the digests prepared for this step.
                hash_files::clear();
                let sources: Vec<&str> = meta
                    .outputs
                    .values()
                    .filter_map(|o| o.value.as_deref())
                    .collect();
                self.prefetch_hash_files(&sources, &[], &ctx).await;
                let mut outputs = Vec::new();
                for (name, out) in &meta.outputs {
                    if let Some(v) = &out.value {
                        match exprs::string(v, &ctx, &format!("outputs.{name}")) {
                            Ok(s) => outputs.push((name.clone(), s)),
                            Err(e) => self.system(step_id, &format!("##[warning]{e}")),
                        }
                    }
                }
                StepRun { ok, outputs }
            }
            Runs::Node {
                using,
                main,
                pre,
                pre_if,
                post,
                post_if,
            } => {
                let Some(node) = self.session.tools.node.clone() else {
                    self.system(
                        step_id,
                        &format!(
                            "##[error]action {uses} uses {using} but no node was found in the vm"
                        ),
                    );
                    return StepRun {
                        ok: false,
                        outputs: vec![],
                    };
                };
                let mut input_env = BTreeMap::new();
                for (k, v) in &inputs {
                    input_env.insert(input_env_name(k), v.clone());
                }
                let node_frame = Frame {
                    action_path: Some(action_dir.to_string()),
                    env: frame.env.clone(),
                    ..Frame::default()
                };
                let mut state = Vec::new();
                if let Some(pre) = pre {
                    let cond = pre_if.clone().unwrap_or_else(|| "always()".into());
                    let pctx = self.ctx(frame, Some(step_env));
                    if exprs::condition(Some(&cond), &pctx, "pre-if").unwrap_or(false) {
                        let (mut env, files) = self.process_env(&node_frame, step_env);
                        env.extend(input_env.clone());
                        let program =
                            Program::Argv(vec![node.clone(), format!("{action_dir}/{pre}")]);
                        let cwd = self.dirs.workspace.clone();
                        let (ok, _o, st) = self
                            .command(step_id, program, env, files, cwd, timeout)
                            .await;
                        state.extend(st);
                        if !ok {
                            return StepRun {
                                ok: false,
                                outputs: vec![],
                            };
                        }
                    }
                }
                let (mut env, files) = self.process_env(&node_frame, step_env);
                env.extend(input_env.clone());
                for (k, v) in &state {
                    env.insert(format!("STATE_{k}"), v.clone());
                }
                let program = Program::Argv(vec![node.clone(), format!("{action_dir}/{main}")]);
                let cwd = self.dirs.workspace.clone();
                let (ok, outputs, st) = self
                    .command(step_id, program, env, files, cwd, timeout)
                    .await;
                state.extend(st);
                if let Some(post) = post {
                    let mut penv: BTreeMap<String, String> = step_env
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    penv.extend(input_env);
                    self.posts.push(PostStep {
                        step_id: step_id.to_string(),
                        name: format!("Post {uses}"),
                        action_dir: action_dir.to_string(),
                        script: post,
                        condition: post_if.unwrap_or_else(|| "always()".into()),
                        env: penv,
                        state,
                    });
                }
                StepRun { ok, outputs }
            }
        }
    }

    async fn run_post(&mut self, frame: &mut Frame, post: PostStep) {
        let ctx = self.ctx(frame, None);
        let name = post.name.clone();
        let fake_step = Step {
            index: 0,
            location: Default::default(),
            id: None,
            condition: None,
            name: None,
            uses: None,
            run: None,
            shell: None,
            with: IndexMap::new(),
            env: IndexMap::new(),
            continue_on_error: None,
            timeout_minutes: None,
            working_directory: None,
        };
        self.arm_step_token();
        // `post-if` may call `hashFiles`: digest the workspace as it is now, after the steps.
        hash_files::clear();
        self.prefetch_hash_files(&[], &[post.condition.as_str()], &ctx)
            .await;
        // A condition that cannot be evaluated fails the post step (GitHub fails the step).
        let (run_it, skipped) = match exprs::condition(Some(&post.condition), &ctx, "post-if") {
            Ok(b) => (b, StepResult::Skipped),
            Err(e) => {
                self.system(&post.step_id, &format!("##[error]{e}"));
                (false, StepResult::Failure)
            }
        };
        if !run_it {
            self.finish_step(
                frame,
                &fake_step,
                &post.step_id,
                &name,
                Stage::Post,
                skipped,
                skipped,
                vec![],
                Instant::now(),
            );
            return;
        }
        let started = Instant::now();
        self.rt.bus.emit(RunEvent::StepStarted {
            job_id: self.spec.job_id.clone(),
            matrix: self.spec.matrix.clone(),
            step_id: post.step_id.clone(),
            name: name.clone(),
            stage: Stage::Post,
            vm_id: self.session.vm_id.clone(),
        });
        let ok = match self.session.tools.node.clone() {
            None => false,
            Some(node) => {
                let node_frame = Frame {
                    action_path: Some(post.action_dir.clone()),
                    ..Frame::default()
                };
                let (mut env, files) = self.process_env(&node_frame, &IndexMap::new());
                env.extend(post.env.clone());
                for (k, v) in &post.state {
                    env.insert(format!("STATE_{k}"), v.clone());
                }
                let program =
                    Program::Argv(vec![node, format!("{}/{}", post.action_dir, post.script)]);
                let cwd = self.dirs.workspace.clone();
                self.command(&post.step_id, program, env, files, cwd, None)
                    .await
                    .0
            }
        };
        let r = if ok {
            StepResult::Success
        } else {
            StepResult::Failure
        };
        self.finish_step(
            frame,
            &fake_step,
            &post.step_id,
            &name,
            Stage::Post,
            r,
            r,
            vec![],
            started,
        );
    }
}

/// Paths of the file command files of one command.
#[derive(Debug, Clone)]
pub(crate) struct FilePaths {
    seq: u32,
    stem: String,
    /// The command's own directory, holding its five files.
    dir: String,
    env: String,
    output: String,
    state: String,
    path: String,
    summary: String,
}

impl FilePaths {
    fn new(dir: &str, seq: u32) -> Self {
        let stem = format!("step-{seq}");
        let dir = format!("{dir}/{stem}");
        let [env, output, state, path, summary] =
            file_commands::FILE_NAMES.map(|name| format!("{dir}/{name}"));
        FilePaths {
            seq,
            env,
            output,
            state,
            path,
            summary,
            dir,
            stem,
        }
    }
}

struct FileCommandsRead {
    env: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
    state: Vec<(String, String)>,
    path: Vec<String>,
}
