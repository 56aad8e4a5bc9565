//! `ignis run`: run the workflows of a repository for an event, like `act`, but each run in
//! its own isolated session (one VM per run). Flags follow act's names where act has them.

use crate::print::{HumanPrinter, JsonPrinter, SummaryCollector, TimelinePrinter};
use crate::workflows;
use anyhow::{Context, bail};
use ignis_runner::events::{EventBus, JobResult};
use ignis_runner::executor::{
    CancelSignals, ExecutorConfig, Isolation, ManagerSessions, Resume, RunRequest, SnapshotPolicy,
    WorkflowExecutor,
};
use ignis_runner::runs::{Redactor, RunJournal, RunRecord, RunStore, RunStoreError, SnapshotRef};
use ignis_runner::runtime::contexts::RunInfo;
use ignis_runner::runtime::env::parse_dotenv;
use ignis_runner::runtime::mask::Masker;
use ignis_runner::session::SessionManager;
use ignis_vm::profile::ProfileConfig;
use ignis_vm::{Backend, VmProvider};
use ignis_workflow::model::{Trigger, Workflow};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackendArg {
    Sandbox,
    Qemu,
    Firecracker,
    Fake,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum IsolationArg {
    Workflow,
    Job,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The event that triggers the workflows.
    #[arg(default_value = "push")]
    pub event: String,
    /// Workflow file or directory (default .github/workflows).
    #[arg(short = 'W', long = "workflows")]
    pub workflows: Vec<PathBuf>,
    /// Run only this job.
    #[arg(short = 'j', long = "job")]
    pub job: Option<String>,
    /// Event payload JSON file.
    #[arg(short = 'e', long = "eventpath")]
    pub event_path: Option<PathBuf>,
    /// Secret `K=V`, or `K` to read it from the environment.
    #[arg(short = 's', long = "secret")]
    pub secrets: Vec<String>,
    /// Dotenv file of secrets.
    #[arg(long = "secret-file")]
    pub secret_file: Option<PathBuf>,
    /// Variable `K=V` (`vars` context).
    #[arg(long = "var")]
    pub vars: Vec<String>,
    /// Dotenv file of variables.
    #[arg(long = "var-file")]
    pub var_file: Option<PathBuf>,
    /// Input `K=V` (`inputs` context of workflow_dispatch / workflow_call).
    #[arg(long = "input")]
    pub inputs: Vec<String>,
    /// Dotenv file of inputs.
    #[arg(long = "input-file")]
    pub input_file: Option<PathBuf>,
    /// Dotenv file of environment variables for every step.
    #[arg(long = "env-file")]
    pub env_file: Option<PathBuf>,
    /// Keep only matrix legs with `key:value` (repeatable).
    #[arg(long = "matrix")]
    pub matrix: Vec<String>,
    /// List the jobs that would run and exit.
    #[arg(short = 'l', long = "list")]
    pub list: bool,
    /// Print the job graph and exit.
    #[arg(short = 'g', long = "graph")]
    pub graph: bool,
    /// Plan and print, execute nothing.
    #[arg(short = 'n', long = "dryrun")]
    pub dryrun: bool,
    /// JSON Lines event stream on stdout.
    #[arg(long)]
    pub json: bool,
    /// Override the profile's backend.
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// One VM for the whole run (workflow, the default) or one per job leg (job).
    #[arg(long, value_enum)]
    pub isolation: Option<IsolationArg>,
    /// Maximum live sessions.
    #[arg(long = "max-sessions", default_value_t = 8)]
    pub max_sessions: usize,
    /// Print the session timeline at the end (stderr).
    #[arg(long)]
    pub timeline: bool,
    /// Write the step summaries (markdown) to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// The `github.actor` (act's flag).
    #[arg(short = 'a', long = "actor")]
    pub actor: Option<String>,
    /// Profile config file (default: ignis.toml in the repository, then the user config).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run in this directory (the repository root).
    #[arg(short = 'C', long = "directory")]
    pub directory: Option<PathBuf>,
    /// Snapshot the VM after every successful step, so that `--resume` continues a failed
    /// job at its failed step (the VM as it was before it, env, PATH and step outputs).
    #[arg(long = "snapshot-steps", conflicts_with = "no_snapshots")]
    pub snapshot_steps: bool,
    /// Take no snapshots, not even the default one after a profile's setup commands.
    #[arg(long = "no-snapshots")]
    pub no_snapshots: bool,
    /// Continue a failed run (its id is printed when it fails): succeeded jobs keep their
    /// results, failed ones run again, from their step snapshot when there is a usable one.
    /// The run's workflows, event, inputs, vars and filters are reused; secrets are not
    /// recorded, so pass -s/--secret-file again.
    #[arg(long, value_name = "RUN_ID", conflicts_with_all = ["workflows", "job", "event_path", "matrix", "list", "graph", "dryrun"])]
    pub resume: Option<String>,
}

fn key_values(
    items: &[String],
    what: &str,
    from_env: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            None if from_env && !item.is_empty() => {
                let v = std::env::var(item)
                    .with_context(|| format!("{what} {item}: not set in the environment"))?;
                out.push((item.clone(), v));
            }
            _ => bail!("invalid {what} {item:?}: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

fn dotenv(path: &Option<PathBuf>) -> anyhow::Result<Vec<(String, String)>> {
    let Some(p) = path else { return Ok(vec![]) };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    parse_dotenv(&text).with_context(|| format!("{}", p.display()))
}

/// The provider for `backend`; `profiles` (with any `--backend` override applied) carry the
/// Firecracker settings of `[profiles.NAME.firecracker]`.
fn provider(
    backend: Backend,
    profiles: &ignis_vm::profile::ProfileConfig,
) -> anyhow::Result<Arc<dyn VmProvider>> {
    Ok(match backend {
        Backend::Sandbox => Arc::new(ignis_vm::sandbox::SandboxProvider::new()?),
        Backend::Fake => {
            let config = ignis_vm::fake::FakeConfig::discover()
                .context("the fake backend needs the ignis-agent binary")?;
            Arc::new(ignis_vm::fake::FakeProvider::new(config))
        }
        Backend::Firecracker => {
            // The kernel comes from IGNIS_FIRECRACKER_KERNEL, else from the newest guest image
            // `ignis image build` left in the cache (its vmlinux + initramfs); VMs live in
            // ignis's state directory (where the session records that reap them live).
            let state = ignis_runner::session::default_state_dir().join("firecracker");
            let mut config = ignis_vm::firecracker::FirecrackerConfig::from_env_or_cache(
                state,
                &ignis_vm::image::cache_dir(),
            )?;
            // Binary, jailer and pool sizes from the profiles: an explicit profile value wins
            // over IGNIS_FIRECRACKER_BIN (see FirecrackerConfig::apply_profiles).
            config.apply_profiles(profiles);
            Arc::new(ignis_vm::firecracker::FirecrackerProvider::new(config))
        }
        Backend::Qemu => Arc::new(ignis_vm::qemu::QemuProvider::new(
            ignis_vm::qemu::QemuConfig::from_env(),
        )),
    })
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A failed run's record, or why it cannot be resumed (exit 2).
fn load_resumable(store: &RunStore, id: &str) -> Result<RunRecord, String> {
    let record = store.load(id).map_err(|e| format!("cannot resume: {e}"))?;
    if record.version != ignis_runner::runs::RECORD_VERSION {
        return Err(format!(
            "cannot resume run {id}: its record has version {}, this ignis reads version {}",
            record.version,
            ignis_runner::runs::RECORD_VERSION
        ));
    }
    match record.result {
        Some(JobResult::Success) => Err(format!(
            "cannot resume run {id}: it succeeded, there is nothing to continue"
        )),
        None if still_running(&record) => Err(format!(
            "cannot resume run {id}: it is still running (ignis process {})",
            record.pid
        )),
        _ => Ok(record),
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn backend_arg(b: Option<BackendArg>) -> Option<Backend> {
    b.map(|b| match b {
        BackendArg::Sandbox => Backend::Sandbox,
        BackendArg::Qemu => Backend::Qemu,
        BackendArg::Firecracker => Backend::Firecracker,
        BackendArg::Fake => Backend::Fake,
    })
}

/// The snapshot policy. Snapshots are taken only on backends whose snapshots ignis can
/// delete again (`VmProvider::remove_snapshot`): qemu and the sandbox; firecracker's
/// provider cannot yet, and the fake's hold no state.
///
/// By default: a snapshot after setup when the profile has `setup` commands (a resume
/// restores it instead of running them again), none otherwise: a run without profile setup
/// pays nothing. Measured here (2-core host under load, 40 snapshots each): a sandbox
/// snapshot 1.3-3.9 ms median (a freeze of the session's upper layer, a copy when busy) plus
/// ~0.1-0.3 ms to delete it, against a ~40 ms one-step run; a qemu snapshot ~0.65 s (TCG). `--snapshot-steps` (or a profile's
/// `snapshot-steps = true`) adds a snapshot after every successful step; `--no-snapshots`
/// takes none.
fn snapshot_policy(args: &Args, backend: Backend) -> SnapshotPolicy {
    let deletable = matches!(
        backend,
        Backend::Qemu | Backend::Sandbox | Backend::Firecracker
    );
    if args.no_snapshots || !deletable {
        if args.snapshot_steps && !args.no_snapshots {
            eprintln!(
                "ignis: warning: no snapshots on the {backend} backend (ignis cannot delete its snapshots yet); a failed run resumes without them"
            );
        }
        return SnapshotPolicy::default();
    }
    SnapshotPolicy {
        setup: true,
        steps: args.snapshot_steps,
    }
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    let state_dir = ignis_runner::session::default_state_dir();
    let store = RunStore::at(&state_dir);
    let previous = match &args.resume {
        None => None,
        Some(id) => match load_resumable(&store, id) {
            Ok(r) => Some(r),
            Err(msg) => {
                eprintln!("ignis: {msg}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    if let Some(prev) = &previous {
        // The run's own plan: repository, event, workflows, job and matrix filters. Vars,
        // inputs and env given now are added over the recorded ones; secrets are given again.
        let given = backend_arg(args.backend);
        if given.is_some_and(|b| b != prev.backend) {
            eprintln!(
                "ignis: cannot resume run {} on another backend: it ran on {} (its snapshots are {} snapshots)",
                prev.run_id, prev.backend, prev.backend
            );
            return Ok(ExitCode::from(2));
        }
        let isolation = match args.isolation {
            Some(IsolationArg::Job) => "job",
            Some(IsolationArg::Workflow) => "workflow",
            None => prev.isolation.as_str(),
        };
        if isolation != prev.isolation {
            eprintln!(
                "ignis: cannot resume run {} with --isolation {isolation}: it ran with --isolation {}",
                prev.run_id, prev.isolation
            );
            return Ok(ExitCode::from(2));
        }
        args.isolation = Some(if prev.isolation == "job" {
            IsolationArg::Job
        } else {
            IsolationArg::Workflow
        });
        args.backend = Some(match prev.backend {
            Backend::Sandbox => BackendArg::Sandbox,
            Backend::Qemu => BackendArg::Qemu,
            Backend::Firecracker => BackendArg::Firecracker,
            Backend::Fake => BackendArg::Fake,
        });
        args.directory = Some(prev.repo_dir.clone());
        args.event = prev.event_name.clone();
        args.workflows = prev
            .workflows
            .iter()
            .filter(|w| w.result != Some(JobResult::Success))
            .map(|w| PathBuf::from(&w.path))
            .collect();
        if args.workflows.is_empty() {
            // (An empty list would mean "every workflow" below.)
            eprintln!(
                "ignis: cannot resume run {}: none of its workflows failed",
                prev.run_id
            );
            return Ok(ExitCode::from(2));
        }
        args.job = prev.only_job.clone();
        args.matrix = prev
            .matrix_filter
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        args.actor = args.actor.take().or_else(|| prev.actor.clone());
        args.snapshot_steps |= prev.snapshot_steps;
    }
    if let Some(dir) = &args.directory {
        std::env::set_current_dir(dir).with_context(|| format!("entering {}", dir.display()))?;
    }
    let repo_dir = std::env::current_dir().context("current directory")?;
    // A run on the sandbox backend migrates its sandbox into cgroups, and a process's first
    // migration waits for an RCU grace period: start that wait now, so that it overlaps
    // loading, `git` and planning instead of the allocation (see `prewarm_migration`).
    let may_allocate = !(args.list || args.dryrun || args.graph);
    if may_allocate && matches!(args.backend, None | Some(BackendArg::Sandbox)) {
        ignis_vm::sandbox::prewarm_migration();
    }
    let loaded = match workflows::load_valid(&args.workflows)? {
        Ok(l) => l,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(ExitCode::from(2));
        }
    };
    let event: serde_json::Value = match (&previous, &args.event_path) {
        (Some(prev), _) => prev.event.clone(),
        (None, Some(p)) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?
        }
        (None, None) => serde_json::json!({}),
    };
    // The planner decides which workflows run for this event (branch, tag, path and
    // activity-type filters) and refuses plans it cannot build (exit 2, located).
    let git = ignis_runner::runtime::contexts::read_git(&repo_dir);
    let matrix_filter_grouped: Vec<(String, Vec<String>)> = {
        let mut g: Vec<(String, Vec<String>)> = Vec::new();
        for m in &args.matrix {
            if let Some((k, v)) = m.split_once(':') {
                match g.iter_mut().find(|(gk, _)| gk == k) {
                    Some((_, vals)) => vals.push(v.to_string()),
                    None => g.push((k.to_string(), vec![v.to_string()])),
                }
            }
        }
        g
    };
    let mut selected: Vec<(PathBuf, Workflow, ignis_workflow::plan::Plan)> = Vec::new();
    for (path, wf) in loaded {
        if args.job.as_ref().is_some_and(|j| !wf.jobs.contains_key(j)) {
            continue;
        }
        let options = ignis_workflow::plan::PlanOptions {
            event: Some(&args.event),
            payload: Some(&event),
            git_ref: git.git_ref.as_deref(),
            job: args.job.as_deref(),
            matrix_filter: matrix_filter_grouped.clone(),
            ..Default::default()
        };
        match ignis_workflow::plan::plan(&wf, &options) {
            Ok(plan) if plan.decision == ignis_workflow::plan::trigger::TriggerDecision::Run => {
                selected.push((path, wf, plan));
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("{}:{e}", path.display());
                return Ok(ExitCode::from(2));
            }
        }
    }
    if selected.is_empty() {
        eprintln!(
            "ignis: no workflow runs for event {:?}{}",
            args.event,
            args.job
                .as_ref()
                .map(|j| format!(" with job {j}"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::from(if args.job.is_some() { 2 } else { 0 }));
    }

    if args.graph {
        // The same DAG text as `ignis graph`, for the workflows this event runs.
        let planned: Vec<super::list::Planned> = selected
            .iter()
            .map(|(path, wf, plan)| super::list::Planned {
                path: PathBuf::from(relative(path, &repo_dir)),
                workflow: wf.clone(),
                plan: plan.clone(),
            })
            .collect();
        print!("{}", super::graph::render_graph(&planned));
        return Ok(ExitCode::SUCCESS);
    }
    if args.list || args.dryrun {
        for (path, wf, plan) in &selected {
            let rel = relative(path, &repo_dir);
            println!(
                "{}  ({rel})",
                wf.name.clone().unwrap_or_else(|| rel.clone())
            );
            for (n, stage) in plan.stages().iter().enumerate() {
                for &i in stage {
                    let job = &plan.jobs[i];
                    let needs = if job.needs.is_empty() {
                        String::new()
                    } else {
                        format!("  needs: {}", job.needs.join(", "))
                    };
                    let legs = match &job.matrix {
                        ignis_workflow::plan::JobMatrix::Legs(l) => l
                            .iter()
                            .map(|l| l.name.clone())
                            .collect::<Vec<_>>()
                            .join(", "),
                        ignis_workflow::plan::JobMatrix::Deferred => {
                            "matrix expanded at run time".into()
                        }
                        _ => String::new(),
                    };
                    let legs = if legs.is_empty() {
                        legs
                    } else {
                        format!("  legs: {legs}")
                    };
                    println!("  [{n}] {}  {}{needs}{legs}", job.id, job.name);
                }
            }
        }
        if args.dryrun {
            println!(
                "dry run: planned {} workflow(s); nothing was executed",
                selected.len()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

    let mut secrets: BTreeMap<String, String> = dotenv(&args.secret_file)?.into_iter().collect();
    secrets.extend(key_values(&args.secrets, "secret", true)?);
    let mut vars: BTreeMap<String, String> = previous
        .as_ref()
        .map(|p| p.vars.clone())
        .unwrap_or_default();
    vars.extend(dotenv(&args.var_file)?);
    vars.extend(key_values(&args.vars, "var", false)?);
    let mut input_pairs: Vec<(String, String)> = previous
        .as_ref()
        .map(|p| p.inputs.clone())
        .unwrap_or_default();
    input_pairs.extend(dotenv(&args.input_file)?);
    input_pairs.extend(key_values(&args.inputs, "input", false)?);
    let mut env_file: indexmap::IndexMap<String, String> =
        previous.as_ref().map(|p| p.env.clone()).unwrap_or_default();
    env_file.extend(dotenv(&args.env_file)?);
    if let Some(prev) = &previous {
        let missing: Vec<&str> = prev
            .secret_names
            .iter()
            .filter(|n| !secrets.contains_key(*n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "ignis: warning: run {} was given secret(s) {} that are not given now (secrets are never recorded: pass -s/--secret-file again)",
                prev.run_id,
                missing.join(", ")
            );
        }
    }
    let matrix_filter: Vec<(String, String)> = args
        .matrix
        .iter()
        .map(|m| {
            m.split_once(':')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .context(format!("invalid --matrix {m:?}: expected key:value"))
        })
        .collect::<anyhow::Result<_>>()?;

    let (profiles, _) =
        ignis_vm::profile::ProfileConfig::discover(args.config.as_deref(), Some(&repo_dir))?;
    let backend = backend_arg(args.backend);
    let effective_backend = backend
        .or_else(|| profiles.profiles.values().next().map(|p| p.backend))
        .unwrap_or(Backend::Sandbox);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // `--backend` overrides every profile's backend, before the provider reads the profiles.
    let mut profiles = profiles;
    if let Some(b) = backend {
        for p in profiles.profiles.values_mut() {
            p.backend = b;
        }
    }
    // A profile's `snapshot-steps = true` asks for step snapshots like the flag does.
    args.snapshot_steps |= profiles.profiles.values().any(|p| p.snapshot_steps);
    let policy = snapshot_policy(&args, effective_backend);
    // The run record: a new one, or the resumed run's as the next attempt.
    let run_id = previous
        .as_ref()
        .map(|p| p.run_id.clone())
        .unwrap_or_else(RunStore::new_id);
    let mut record = match &previous {
        Some(p) => {
            let mut r = p.clone();
            r.attempt += 1;
            r.result = None;
            r
        }
        None => RunRecord {
            version: ignis_runner::runs::RECORD_VERSION,
            run_id: run_id.clone(),
            attempt: 1,
            created_unix_ms: unix_ms(),
            updated_unix_ms: unix_ms(),
            pid: 0,
            repo_dir: repo_dir.clone(),
            event_name: args.event.clone(),
            event: event.clone(),
            only_job: args.job.clone(),
            inputs: vec![],
            vars: BTreeMap::new(),
            env: indexmap::IndexMap::new(),
            secret_names: vec![],
            matrix_filter: matrix_filter.clone(),
            actor: args.actor.clone(),
            backend: effective_backend,
            isolation: match args.isolation {
                Some(IsolationArg::Job) => "job".into(),
                _ => "workflow".into(),
            },
            snapshot_steps: policy.steps,
            result: None,
            workflows: vec![],
        },
    };
    record.pid = std::process::id();
    record.updated_unix_ms = unix_ms();
    record.inputs = input_pairs.clone();
    record.vars = vars.clone();
    record.env = env_file.clone();
    record.secret_names = secrets.keys().cloned().collect();
    record.snapshot_steps = policy.steps;
    let previous_snapshots: Vec<SnapshotRef> = record.snapshots();
    // Which workflow of the record each selected workflow is.
    let mut slots: Vec<usize> = Vec::new();
    for (i, (path, _, _)) in selected.iter().enumerate() {
        let rel = relative(path, &repo_dir);
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let slot = match record.workflows.iter().position(|w| w.path == rel) {
            Some(k) => k,
            None => {
                record.workflows.push(ignis_runner::runs::WorkflowRun {
                    path: rel.clone(),
                    copy: format!("workflow-{}.yml", record.workflows.len()),
                    github_run_id: format!("{}{}", std::process::id(), i),
                    ..Default::default()
                });
                record.workflows.len() - 1
            }
        };
        let w = &mut record.workflows[slot];
        w.sha256 = ignis_runner::runs::text_hash(&text);
        w.result = None;
        if let Err(e) = store.save_file(&run_id, &w.copy, &text) {
            eprintln!("ignis: warning: {e:#}");
        }
        slots.push(slot);
    }
    if let Err(e) = store.save(&record) {
        eprintln!(
            "ignis: warning: the run will not be resumable: {:#}",
            anyhow::Error::new(e)
        );
    }
    let record = Arc::new(std::sync::Mutex::new(record));
    runtime.block_on(async move {
        let provider = match provider(effective_backend, &profiles) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("ignis: {e:#}");
                return Ok(ExitCode::from(1));
            }
        };
        // Sessions come from the SessionManager: its limit (--max-sessions), persisted
        // records, and a reaper for what a crashed ignis left behind.
        let profiles_for_prune = profiles.clone();
        let manager = match ignis_runner::session::SessionManager::builder()
            .max_concurrent_sessions(args.max_sessions.max(1))
            .profiles(profiles)
            .provider(provider)
            .build()
        {
            Ok(m) => m,
            Err(e) => {
                eprintln!("ignis: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        for report in manager.reap_orphans().await {
            eprintln!(
                "ignis: reaped session {} (vm {}) left by process {}: {}",
                report.session_id,
                report.vm_id,
                report.owner_pid,
                report
                    .result
                    .as_ref()
                    .map(|_| "released".to_string())
                    .unwrap_or_else(|e| e.clone())
            );
        }
        let sessions = Arc::new(ManagerSessions::new(manager));
        let mut config = ExecutorConfig::new(repo_dir.clone());
        config.isolation = match args.isolation {
            Some(IsolationArg::Job) => Isolation::Job,
            _ => Isolation::Workflow,
        };
        config.snapshots = policy;
        // Planning already read the repository; the executor reuses it (no second `git` round).
        config.git_facts = Some(git.clone());
        let executor = WorkflowExecutor::new(sessions.clone(), config);

        let bus = EventBus::new();
        let human = Arc::new(HumanPrinter::new());
        let summaries = Arc::new(SummaryCollector::default());
        bus.subscribe(summaries.clone());
        if args.json {
            bus.subscribe(Arc::new(JsonPrinter::default()));
        } else {
            bus.subscribe(human.clone());
        }
        let timeline = Arc::new(TimelinePrinter::default());
        if args.timeline {
            bus.subscribe(timeline.clone());
        }
        let masker = Masker::new();
        let signals = CancelSignals::default();
        spawn_signal_handlers(signals.clone());

        let run_number = 1;
        let mut tasks = tokio::task::JoinSet::new();
        let redactor = Redactor::new(&secrets, masker.clone());
        for (i, (path, wf, _plan)) in selected.into_iter().enumerate() {
            let rel = relative(&path, &repo_dir);
            let slot = slots[i];
            let journal = RunJournal::new(record.clone(), slot, store.clone(), redactor.clone());
            let github_run_id = journal.snapshot_of().github_run_id;
            let resume = previous.as_ref().and_then(|p| {
                p.workflows.get(slot).filter(|w| w.path == rel).map(|w| {
                    Arc::new(Resume {
                        run_id: p.run_id.clone(),
                        previous: w.clone(),
                    })
                })
            });
            let (inputs, run_event) = resolve_inputs(&wf, &args.event, &event, &input_pairs);
            let info = RunInfo {
                event_name: args.event.clone(),
                event: run_event,
                run_id: github_run_id,
                run_number,
                actor: args.actor.clone(),
                repository: None,
                workflow: wf.name.clone().unwrap_or_else(|| rel.clone()),
                workflow_path: rel.clone(),
            };
            let req = RunRequest {
                workflow: Arc::new(wf),
                workflow_path: rel,
                info,
                only_job: args.job.clone(),
                secrets: secrets.clone(),
                vars: vars.clone(),
                inputs,
                matrix_filter: matrix_filter.clone(),
                env: env_file.clone(),
                journal: Some(journal),
                resume,
            };
            let (ex, bus, masker, signals) = (
                executor.clone(),
                bus.clone(),
                masker.clone(),
                signals.clone(),
            );
            tasks.spawn(async move { (slot, ex.execute(req, bus, masker, signals).await) });
        }
        let mut failed = false;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok((slot, res)) => {
                    failed |= res.result != JobResult::Success;
                    let mut rec = record.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(w) = rec.workflows.get_mut(slot) {
                        w.result = Some(res.result);
                    }
                }
                Err(e) => {
                    eprintln!("ignis: a run task failed: {e}");
                    failed = true;
                }
            }
        }
        bus.finish();
        let mut rec = record.lock().unwrap_or_else(|p| p.into_inner()).clone();
        rec.result = Some(if failed {
            JobResult::Failure
        } else {
            JobResult::Success
        });
        // Snapshots: all of them (this attempt's and earlier ones') go when the run
        // succeeded; after a failed resume, those the new attempt superseded go.
        let now = rec.snapshots();
        let gone: Vec<SnapshotRef> = if failed {
            previous_snapshots
                .into_iter()
                .filter(|p| !now.iter().any(|n| n.id == p.id))
                .collect()
        } else {
            let mut all = now;
            all.extend(previous_snapshots);
            all.sort_by(|a, b| a.id.cmp(&b.id));
            all.dedup_by(|a, b| a.id == b.id);
            all
        };
        let removed = remove_snapshots(gone, Some(sessions.manager()), &profiles_for_prune).await;
        rec.forget_snapshots(&removed);
        rec.updated_unix_ms = unix_ms();
        if let Err(e) = store.save(&rec) {
            eprintln!("ignis: warning: {:#}", anyhow::Error::new(e));
        }
        prune_runs(
            &store,
            &rec.run_id,
            failed,
            sessions.manager(),
            &profiles_for_prune,
        )
        .await;
        if failed {
            let secret_flags: String = rec
                .secret_names
                .iter()
                .map(|n| format!(" -s {n}"))
                .collect();
            eprintln!(
                "ignis: run {} failed; continue it with: ignis run --resume {}{secret_flags}",
                rec.run_id, rec.run_id
            );
            if !secret_flags.is_empty() {
                eprintln!(
                    "ignis: secrets are never recorded: give them again (-s NAME reads NAME from the environment; -s NAME=VALUE or --secret-file work too)"
                );
            }
        }
        if let Some(path) = &args.summary {
            std::fs::write(path, summaries.markdown())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// Delete one snapshot: through the manager's provider when it has the backend, else through
/// a provider built for it.
pub(super) async fn remove_snapshot(
    snap: &SnapshotRef,
    manager: Option<&SessionManager>,
    profiles: &ProfileConfig,
) -> anyhow::Result<()> {
    let id = ignis_vm::SnapshotId(snap.id.clone());
    if let Some(m) = manager {
        match m.remove_snapshot(snap.backend, &id).await {
            Err(ignis_runner::session::SessionError::NoProvider(_)) => {}
            other => return other.map_err(anyhow::Error::new),
        }
    }
    let provider = provider(snap.backend, profiles)?;
    provider.remove_snapshot(&id).await?;
    Ok(())
}

/// Delete snapshots, newest first and in passes: a snapshot taken in a VM restored from
/// another is built on it (sandbox layers), so the base goes only after its dependents.
/// Returns the ids removed; the others are named in a warning.
pub(super) async fn remove_snapshots(
    mut snaps: Vec<SnapshotRef>,
    manager: Option<&SessionManager>,
    profiles: &ProfileConfig,
) -> Vec<String> {
    snaps.sort_by_key(|s| std::cmp::Reverse(s.taken_unix_ms));
    let mut removed = Vec::new();
    loop {
        let before = snaps.len();
        let mut left = Vec::new();
        let mut errors = Vec::new();
        for snap in snaps {
            match remove_snapshot(&snap, manager, profiles).await {
                Ok(()) => removed.push(snap.id.clone()),
                Err(e) => {
                    errors.push(format!("{}: {e:#}", snap.id));
                    left.push(snap);
                }
            }
        }
        // Done, or a pass removed nothing: what is left cannot go.
        if left.is_empty() || left.len() == before {
            for e in errors {
                eprintln!("ignis: warning: removing snapshot {e}");
            }
            return removed;
        }
        snaps = left;
    }
}

/// Whether another ignis process is still writing this record.
pub(super) fn still_running(record: &RunRecord) -> bool {
    record.result.is_none()
        && record.pid != std::process::id()
        && Path::new(&format!("/proc/{}", record.pid)).exists()
}

/// Delete a run's snapshots and then its record; a snapshot that cannot be deleted is named
/// in a warning (the record goes anyway: it is all that still knows the id).
pub(super) async fn remove_run(
    store: &RunStore,
    record: &RunRecord,
    manager: Option<&SessionManager>,
    profiles: &ProfileConfig,
) -> anyhow::Result<()> {
    remove_snapshots(record.snapshots(), manager, profiles).await;
    store.remove(&record.run_id)?;
    Ok(())
}

/// Keep the newest failed runs (for `--resume`) and a bounded history; prune the rest with
/// their snapshots. After a successful run only the history bound is enforced, from a
/// directory listing (no record is read unless one goes); a failed run also reads the
/// records to keep only the newest failed ones.
async fn prune_runs(
    store: &RunStore,
    current: &str,
    failed: bool,
    manager: &SessionManager,
    profiles: &ProfileConfig,
) {
    let old: Vec<RunRecord> = if failed {
        store.prune_candidates(
            ignis_runner::runs::KEEP_FAILED_RUNS,
            ignis_runner::runs::KEEP_RUNS,
            current,
        )
    } else {
        let ids = store.ids();
        let excess = ids.len().saturating_sub(ignis_runner::runs::KEEP_RUNS);
        ids.iter()
            .take(excess)
            .filter(|id| id.as_str() != current)
            .filter_map(|id| store.load(id).ok())
            .collect()
    };
    for old in old {
        if still_running(&old) {
            continue;
        }
        match remove_run(store, &old, Some(manager), profiles).await {
            Ok(()) => {}
            // Another ignis pruned it first.
            Err(e) if matches!(e.downcast_ref(), Some(RunStoreError::UnknownRun(_))) => {}
            Err(e) => eprintln!("ignis: warning: pruning run {}: {e:#}", old.run_id),
        }
    }
}

/// The `inputs` context and the event payload of a run. `workflow_dispatch` and
/// `workflow_call` inputs get their declared defaults, given values (`-e` payload `inputs`,
/// then `--input`) override them, and `boolean`/`number` inputs get their type in `inputs`
/// (in `github.event.inputs` they stay strings, as on GitHub).
fn resolve_inputs(
    wf: &Workflow,
    event_name: &str,
    event: &serde_json::Value,
    given: &[(String, String)],
) -> (
    serde_json::Map<String, serde_json::Value>,
    serde_json::Value,
) {
    use ignis_workflow::model::{CallInputType, DispatchInputType};
    use serde_json::Value;
    #[derive(Clone, Copy)]
    enum Kind {
        Bool,
        Number,
        Other,
    }
    let mut declared: Vec<(String, Option<Value>, Kind)> = Vec::new();
    match wf.on.get(event_name) {
        Some(Trigger::WorkflowDispatch(d)) => {
            for (k, i) in &d.inputs {
                let kind = match i.input_type {
                    DispatchInputType::Boolean => Kind::Bool,
                    DispatchInputType::Number => Kind::Number,
                    _ => Kind::Other,
                };
                declared.push((k.clone(), i.default.clone(), kind));
            }
        }
        Some(Trigger::WorkflowCall(c)) => {
            for (k, i) in &c.inputs {
                let kind = match i.input_type {
                    CallInputType::Boolean => Kind::Bool,
                    CallInputType::Number => Kind::Number,
                    CallInputType::String => Kind::Other,
                };
                declared.push((k.clone(), i.default.clone(), kind));
            }
        }
        _ => {}
    }
    let mut raw = serde_json::Map::new();
    for (k, def, _) in &declared {
        if let Some(d) = def {
            raw.insert(k.clone(), d.clone());
        }
    }
    if let Some(g) = event.get("inputs").and_then(Value::as_object) {
        for (k, v) in g {
            raw.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in given {
        raw.insert(k.clone(), Value::String(v.clone()));
    }
    let mut run_event = event.clone();
    if event_name == "workflow_dispatch" && !raw.is_empty() {
        let as_strings: serde_json::Map<String, Value> = raw
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value::String(ignis_workflow::model::env_string(v)),
                )
            })
            .collect();
        if let Some(obj) = run_event.as_object_mut() {
            obj.insert("inputs".into(), Value::Object(as_strings));
        }
    }
    let mut typed = raw.clone();
    for (k, _, kind) in &declared {
        let Some(v) = typed.get_mut(k) else { continue };
        match (kind, &*v) {
            (Kind::Bool, Value::String(s)) => *v = Value::Bool(s == "true"),
            (Kind::Number, Value::String(s)) => {
                if let Some(n) = s.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                    *v = Value::Number(n);
                }
            }
            _ => {}
        }
    }
    (typed, run_event)
}

/// First SIGINT/SIGTERM: cancel gracefully. Second: stop at once (sessions are still released).
fn spawn_signal_handlers(signals: CancelSignals) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            count += 1;
            if count == 1 {
                eprintln!("ignis: cancelling (press Ctrl-C again to stop at once)");
                signals.cancel.cancel();
            } else {
                eprintln!("ignis: stopping now");
                signals.kill.cancel();
                signals.cancel.cancel();
            }
        }
    });
}
