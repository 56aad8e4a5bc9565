//! Run records: what `ignis run --resume <run-id>` needs to continue a failed run.
//!
//! Every `ignis run` writes `<state dir>/runs/<run-id>/record.json` plus a copy of each
//! workflow file it ran. The record holds the event payload, inputs, vars and `--env-file`
//! variables, the **names** of the secrets that were given (never their values: a resume is
//! given `-s`/`--secret-file` again), the matrix legs, each job's and leg's result and outputs,
//! each top-level step's outcome, conclusion and outputs, and the VM snapshots taken after
//! setup and after successful steps, each with the leg's accumulated `GITHUB_ENV`,
//! `GITHUB_PATH` and command counter at that point.
//!
//! Secret values that flow into recorded env or step outputs (a step that writes a secret to
//! `GITHUB_ENV`) are stored as placeholders naming the secret ([`Redactor`]) and substituted
//! back on resume from the secrets given again. A value that holds an `::add-mask::` value
//! (which ignis cannot give back) makes that snapshot unusable instead of being written.
//!
//! The snapshots themselves live in the backend's store and may hold whatever the steps
//! wrote inside the VM; they are removed when the run succeeds or when the record is pruned.

use crate::events::JobResult;
use crate::runtime::mask::Masker;
use ignis_vm::Backend;
use ignis_workflow::model::Workflow;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The file holding a run's record inside its directory.
pub const RECORD_FILE: &str = "record.json";
/// The record format version; records of another version are listed but never resumed.
pub const RECORD_VERSION: u32 = 1;
/// Failed runs kept (with their snapshots) for `--resume`; older failed runs are pruned.
pub const KEEP_FAILED_RUNS: usize = 5;
/// Records of finished runs kept in total (successful runs hold no snapshots).
pub const KEEP_RUNS: usize = 50;

/// Errors of the run store.
#[derive(Debug, thiserror::Error)]
pub enum RunStoreError {
    /// No record with this id (user error: a typo or a pruned run).
    #[error("no run {0} in the run records (see `ignis runs ls`)")]
    UnknownRun(String),
    /// The id is not one ignis makes (user error).
    #[error("invalid run id {0:?}")]
    InvalidId(String),
    /// A record could not be read (host problem).
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record is not valid JSON of this version (written by another ignis, or damaged).
    #[error("run record {path} is not readable by this ignis")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A record could not be written (host problem).
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Run directories are 0700: a record holds the event payload, inputs, vars and env-file
/// values of a run, which are not for other local users.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A snapshot the backend holds for a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The provider's snapshot id (restore and remove take it).
    pub id: String,
    /// The backend that holds it.
    pub backend: Backend,
    /// The name ignis gave it.
    pub name: String,
    /// `setup` or `step <step id>`.
    pub after: String,
    /// Wall time of the snapshot.
    pub ms: u64,
    /// When it was taken.
    pub taken_unix_ms: u64,
}

/// One session (VM) of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionRun {
    pub session_id: String,
    pub vm_id: String,
    /// The run directory inside the VM (restored sessions keep using it).
    pub root: String,
    /// The snapshot taken after the setup commands, if any.
    pub setup_snapshot: Option<SnapshotRef>,
}

/// One top-level step of a leg as it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    /// 0-based index in the job's `steps:`.
    pub index: usize,
    /// The step's `id:`, if it has one (the key of the `steps` context).
    pub id: Option<String>,
    /// The step id of events (`id:` or the index).
    pub step_id: String,
    pub name: String,
    pub outcome: JobResult,
    pub conclusion: JobResult,
    /// Outputs with secret values as placeholders; `None` when a value held an
    /// `::add-mask::` value and was not recorded.
    pub outputs: Option<BTreeMap<String, String>>,
}

/// A snapshot taken after a successful step, with what the leg needs to continue after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSnapshot {
    pub snapshot: SnapshotRef,
    /// The index of the step it was taken after; a resume continues at the next step.
    pub after_index: usize,
    /// [`prefix_hash`] of the job over the steps up to and including `after_index`.
    pub prefix_hash: String,
    /// The leg's `GITHUB_ENV` variables (placeholders for secrets).
    pub env: IndexMap<String, String>,
    /// `GITHUB_PATH` entries, oldest first.
    pub path: Vec<String>,
    /// The leg's command counter (file command directories already used).
    pub seq: u32,
    /// Why this snapshot cannot be resumed from, when it cannot.
    pub blocked: Option<String>,
}

/// One job leg (a matrix combination, or the whole job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegRun {
    pub job_id: String,
    pub name: String,
    pub matrix: Option<serde_json::Value>,
    /// [`job_hash`] of the job's definition when the leg ran.
    pub job_hash: String,
    pub result: Option<JobResult>,
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// The session it ran in (see [`WorkflowRun::sessions`]).
    pub session_id: String,
    pub steps: Vec<StepRun>,
    pub snapshots: Vec<StepSnapshot>,
}

/// One job's aggregated result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    pub job_hash: String,
    pub result: JobResult,
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

/// One workflow of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// Path relative to the repository.
    pub path: String,
    /// File name of the copy in the run's directory.
    pub copy: String,
    /// sha256 of the file as it ran.
    pub sha256: String,
    /// `github.run_id` (kept on resume, as GitHub keeps it on a re-run).
    pub github_run_id: String,
    pub result: Option<JobResult>,
    pub sessions: Vec<SessionRun>,
    /// Top-level jobs by id.
    pub jobs: IndexMap<String, JobRun>,
    /// Legs by their key (`<job>-<index>`, nested `<caller>.<job>-<index>`).
    pub legs: IndexMap<String, LegRun>,
}

impl WorkflowRun {
    /// Every snapshot id this workflow's record refers to.
    pub fn snapshots(&self) -> Vec<SnapshotRef> {
        let mut out: Vec<SnapshotRef> = Vec::new();
        for s in &self.sessions {
            out.extend(s.setup_snapshot.clone());
        }
        for l in self.legs.values() {
            out.extend(l.snapshots.iter().map(|s| s.snapshot.clone()));
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        out
    }
}

/// The whole record of one `ignis run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub version: u32,
    pub run_id: String,
    /// 1 for the first run, +1 for every resume.
    pub attempt: u32,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
    /// The ignis process writing the record (a resume refuses a run that is still going).
    pub pid: u32,
    pub repo_dir: PathBuf,
    pub event_name: String,
    /// The event payload (`-e`, or `{}`).
    pub event: serde_json::Value,
    pub only_job: Option<String>,
    /// `--input`/`--input-file` pairs as given.
    pub inputs: Vec<(String, String)>,
    pub vars: BTreeMap<String, String>,
    /// `--env-file` variables.
    pub env: IndexMap<String, String>,
    /// Names of the secrets given (values are never recorded).
    pub secret_names: Vec<String>,
    pub matrix_filter: Vec<(String, String)>,
    pub actor: Option<String>,
    pub backend: Backend,
    /// `workflow` or `job`.
    pub isolation: String,
    pub snapshot_steps: bool,
    /// `None` while the run is going (or when ignis died during it).
    pub result: Option<JobResult>,
    pub workflows: Vec<WorkflowRun>,
}

impl RunRecord {
    /// Drop the references to these snapshots (they were removed from the backend).
    pub fn forget_snapshots(&mut self, ids: &[String]) {
        for w in &mut self.workflows {
            for s in &mut w.sessions {
                if s.setup_snapshot
                    .as_ref()
                    .is_some_and(|x| ids.contains(&x.id))
                {
                    s.setup_snapshot = None;
                }
            }
            for l in w.legs.values_mut() {
                l.snapshots.retain(|x| !ids.contains(&x.snapshot.id));
            }
        }
    }

    /// Every snapshot the record refers to.
    pub fn snapshots(&self) -> Vec<SnapshotRef> {
        let mut out: Vec<SnapshotRef> = self.workflows.iter().flat_map(|w| w.snapshots()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        out
    }
}

/// The run records under `<state dir>/runs`.
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
}

/// Run ids are made by [`RunStore::new_id`]: digits, letters and `-`.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl RunStore {
    /// The store under `state_dir` (created on first write).
    pub fn at(state_dir: &Path) -> RunStore {
        RunStore {
            dir: state_dir.join("runs"),
        }
    }

    /// A new run id: sortable by time, unique per process.
    pub fn new_id() -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:x}{n}", unix_ms() / 1000, std::process::id())
    }

    /// The directory of run `id`.
    pub fn run_dir(&self, id: &str) -> Result<PathBuf, RunStoreError> {
        if !valid_id(id) {
            return Err(RunStoreError::InvalidId(id.to_string()));
        }
        Ok(self.dir.join(id))
    }

    /// Load a record.
    pub fn load(&self, id: &str) -> Result<RunRecord, RunStoreError> {
        let path = self.run_dir(id)?.join(RECORD_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RunStoreError::UnknownRun(id.to_string()));
            }
            Err(source) => return Err(RunStoreError::Read { path, source }),
        };
        serde_json::from_slice(&text).map_err(|source| RunStoreError::Parse { path, source })
    }

    /// Write a record atomically (a reader never sees half a file).
    pub fn save(&self, record: &RunRecord) -> Result<(), RunStoreError> {
        let dir = self.run_dir(&record.run_id)?;
        let path = dir.join(RECORD_FILE);
        let write = |path: &Path| -> std::io::Result<()> {
            private_dir(&dir)?;
            let tmp = dir.join(format!(".{RECORD_FILE}.tmp"));
            let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        };
        write(&path).map_err(|source| RunStoreError::Write { path, source })
    }

    /// Keep a copy of a workflow file as it ran.
    pub fn save_file(&self, id: &str, name: &str, text: &str) -> Result<(), RunStoreError> {
        let dir = self.run_dir(id)?;
        let path = dir.join(name);
        private_dir(&dir)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|source| RunStoreError::Write { path, source })
    }

    /// Run ids, oldest first (ids start with the unix time in seconds), from a directory
    /// listing alone: cheap enough for every run.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|id| valid_id(id))
            .collect();
        ids.sort();
        ids
    }

    /// Every readable record, oldest first, and the ids of directories that could not be read.
    pub fn list(&self) -> (Vec<RunRecord>, Vec<String>) {
        let mut records = Vec::new();
        let mut bad = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (records, bad);
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !valid_id(&id) {
                continue;
            }
            match self.load(&id) {
                Ok(r) => records.push(r),
                Err(_) => bad.push(id),
            }
        }
        records.sort_by(|a, b| {
            a.created_unix_ms
                .cmp(&b.created_unix_ms)
                .then_with(|| a.run_id.cmp(&b.run_id))
        });
        (records, bad)
    }

    /// Delete a run's directory (its snapshots must be removed first).
    pub fn remove(&self, id: &str) -> Result<(), RunStoreError> {
        let dir = self.run_dir(id)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(RunStoreError::UnknownRun(id.to_string()))
            }
            Err(source) => Err(RunStoreError::Write { path: dir, source }),
        }
    }

    /// Records to prune now: failed (or unfinished, whose owner is gone) runs beyond the
    /// newest `keep_failed`, and any finished run beyond the newest `keep_total`. `except` is
    /// never pruned (the run being written).
    pub fn prune_candidates(
        &self,
        keep_failed: usize,
        keep_total: usize,
        except: &str,
    ) -> Vec<RunRecord> {
        let (records, _) = self.list();
        let mut out = Vec::new();
        let mut failed_seen = 0;
        let mut total_seen = 0;
        for r in records.into_iter().rev() {
            if r.run_id == except {
                continue;
            }
            total_seen += 1;
            let failed = r.result != Some(JobResult::Success);
            if failed {
                failed_seen += 1;
            }
            if (failed && failed_seen > keep_failed) || total_seen > keep_total {
                out.push(r);
            }
        }
        out
    }
}

/// A workflow's part of the record of a live run: the executor writes through it; writes
/// that record a snapshot are flushed to disk at once (a crash leaves a record that names
/// its snapshots), the rest when the run ends.
#[derive(Debug, Clone)]
pub struct RunJournal {
    record: Arc<Mutex<RunRecord>>,
    index: usize,
    store: RunStore,
    redactor: Redactor,
}

impl RunJournal {
    /// The journal of workflow `index` of `record`.
    pub fn new(
        record: Arc<Mutex<RunRecord>>,
        index: usize,
        store: RunStore,
        redactor: Redactor,
    ) -> Self {
        RunJournal {
            record,
            index,
            store,
            redactor,
        }
    }

    fn lock(&self) -> MutexGuard<'_, RunRecord> {
        // NOTE: never held across an await.
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run id.
    pub fn run_id(&self) -> String {
        self.lock().run_id.clone()
    }

    /// The attempt being recorded (1 = first run).
    pub fn attempt(&self) -> u32 {
        self.lock().attempt
    }

    /// The index of this workflow in the record.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Hides secret values in what gets recorded.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Change this workflow's part in memory (the caller writes the record when the run
    /// ends: one write per run keeps records off the hot path of fast runs).
    pub fn update(&self, f: impl FnOnce(&mut WorkflowRun)) {
        let mut rec = self.lock();
        if let Some(w) = rec.workflows.get_mut(self.index) {
            f(w);
        }
        rec.updated_unix_ms = unix_ms();
    }

    /// Change this workflow's part and write the record now: used when a snapshot is
    /// recorded, so that a record that outlives a crash still names every snapshot.
    pub fn update_and_flush(&self, f: impl FnOnce(&mut WorkflowRun)) {
        let mut rec = self.lock();
        if let Some(w) = rec.workflows.get_mut(self.index) {
            f(w);
        }
        rec.updated_unix_ms = unix_ms();
        if let Err(e) = self.store.save(&rec) {
            tracing::warn!(error = %e, "writing the run record");
        }
    }

    /// A copy of this workflow's part.
    pub fn snapshot_of(&self) -> WorkflowRun {
        self.lock()
            .workflows
            .get(self.index)
            .cloned()
            .unwrap_or_default()
    }
}

/// Replaces secret values by placeholders naming the secret, and back.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (name, value), longest value first.
    secrets: Vec<(String, String)>,
    masker: Masker,
}

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

impl Redactor {
    /// A redactor for these secrets; `masker` also knows the run's `::add-mask::` values.
    pub fn new(secrets: &BTreeMap<String, String>, masker: Masker) -> Self {
        let mut secrets: Vec<(String, String)> = secrets
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        secrets.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        Redactor { secrets, masker }
    }

    /// `text` with every secret value replaced by its placeholder; `None` when what is left
    /// still holds a masked value (an `::add-mask::` value or part of a secret).
    pub fn redact(&self, text: &str) -> Option<String> {
        let mut out = text.to_string();
        for (name, value) in &self.secrets {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("{OPEN}{name}{CLOSE}"));
            }
        }
        (self.masker.mask(&out) == out).then_some(out)
    }

    /// Substitute placeholders with the secrets given now; `Err(name)` for a missing one.
    pub fn restore(text: &str, secrets: &BTreeMap<String, String>) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(OPEN) {
            out.push_str(&rest[..start]);
            let after = &rest[start + OPEN.len_utf8()..];
            let Some(end) = after.find(CLOSE) else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let name = &after[..end];
            match secrets.get(name) {
                Some(v) => out.push_str(v),
                None => return Err(name.to_string()),
            }
            rest = &after[end + CLOSE.len_utf8()..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Drops `location` objects (`{line, column}`) so that moving a job in its file does not
/// change its hash.
fn strip_locations(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, v| {
                !(k == "location"
                    && v.as_object()
                        .is_some_and(|o| o.contains_key("line") && o.contains_key("column")))
            });
            m.values_mut().for_each(strip_locations);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_locations),
        _ => {}
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// sha256 of a file's text, hex.
pub fn text_hash(text: &str) -> String {
    sha256_hex(text.as_bytes())
}

/// What a job's behaviour depends on in its workflow: the workflow's `env:` and `defaults:`
/// and the job itself; with `steps = Some(n)` only its first `n` steps.
fn job_value(wf: &Workflow, job_id: &str, steps: Option<usize>) -> serde_json::Value {
    let mut job = wf
        .jobs
        .get(job_id)
        .and_then(|j| serde_json::to_value(j).ok())
        .unwrap_or_default();
    if let (Some(n), Some(s)) = (steps, job.get_mut("steps").and_then(|s| s.as_array_mut())) {
        s.truncate(n);
    }
    let mut v = serde_json::json!({
        "env": serde_json::to_value(&wf.env).unwrap_or_default(),
        "defaults": serde_json::to_value(&wf.defaults).unwrap_or_default(),
        "job": job,
    });
    strip_locations(&mut v);
    v
}

/// Hash of a job's whole definition (see [`prefix_hash`]).
pub fn job_hash(wf: &Workflow, job_id: &str) -> String {
    sha256_hex(job_value(wf, job_id, None).to_string().as_bytes())
}

/// Hash of a job's definition without its steps from index `n` on: a snapshot taken after
/// step `n - 1` is usable as long as this is unchanged, whatever happened to later steps.
pub fn prefix_hash(wf: &Workflow, job_id: &str, n: usize) -> String {
    sha256_hex(job_value(wf, job_id, Some(n)).to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf(text: &str) -> Workflow {
        ignis_workflow::parse("ci.yml", text).expect("valid workflow")
    }

    #[test]
    fn prefix_hash_ignores_later_steps_and_moves() {
        let a = wf(
            "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: one\n      - run: two\n",
        );
        let b = wf(
            "\n\non: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: one\n      - run: fixed\n",
        );
        assert_eq!(prefix_hash(&a, "j", 1), prefix_hash(&b, "j", 1));
        assert_ne!(prefix_hash(&a, "j", 2), prefix_hash(&b, "j", 2));
        assert_ne!(job_hash(&a, "j"), job_hash(&b, "j"));
        let c = wf(
            "on: push\nenv:\n  X: 1\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: one\n",
        );
        assert_ne!(
            prefix_hash(&a, "j", 1),
            prefix_hash(&c, "j", 1),
            "workflow env counts"
        );
    }

    #[test]
    fn redactor_round_trips_secrets_and_refuses_added_masks() {
        let mut secrets = BTreeMap::new();
        secrets.insert("PW".to_string(), "hunter2".to_string());
        secrets.insert("LONG".to_string(), "hunter2-and-more".to_string());
        let masker = Masker::new();
        for v in secrets.values() {
            masker.add(v);
        }
        let r = Redactor::new(&secrets, masker.clone());
        let red = r
            .redact("a=hunter2-and-more b=hunter2")
            .expect("redactable");
        assert!(!red.contains("hunter2"));
        assert_eq!(
            Redactor::restore(&red, &secrets).as_deref(),
            Ok("a=hunter2-and-more b=hunter2")
        );
        assert_eq!(
            Redactor::restore(&red, &BTreeMap::new()),
            Err("LONG".to_string())
        );
        masker.add("generated-token");
        assert_eq!(r.redact("x generated-token"), None);
        assert_eq!(r.redact("plain").as_deref(), Some("plain"));
    }

    #[test]
    fn store_saves_lists_prunes_and_refuses_bad_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RunStore::at(dir.path());
        let mk = |id: &str, t: u64, result: Option<JobResult>| RunRecord {
            version: RECORD_VERSION,
            run_id: id.to_string(),
            attempt: 1,
            created_unix_ms: t,
            updated_unix_ms: t,
            pid: 1,
            repo_dir: PathBuf::from("/r"),
            event_name: "push".into(),
            event: serde_json::json!({}),
            only_job: None,
            inputs: vec![],
            vars: BTreeMap::new(),
            env: IndexMap::new(),
            secret_names: vec![],
            matrix_filter: vec![],
            actor: None,
            backend: Backend::Sandbox,
            isolation: "workflow".into(),
            snapshot_steps: false,
            result,
            workflows: vec![],
        };
        for (i, r) in [
            Some(JobResult::Failure),
            Some(JobResult::Success),
            Some(JobResult::Failure),
            Some(JobResult::Failure),
        ]
        .into_iter()
        .enumerate()
        {
            store
                .save(&mk(&format!("r{i}"), i as u64, r))
                .expect("save");
        }
        assert_eq!(
            store.load("r1").expect("load").result,
            Some(JobResult::Success)
        );
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("runs/r1"))
                .expect("run dir")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "run dirs are private");
        }
        assert!(matches!(
            store.load("nope"),
            Err(RunStoreError::UnknownRun(_))
        ));
        assert!(matches!(
            store.load("../x"),
            Err(RunStoreError::InvalidId(_))
        ));
        let ids = |v: Vec<RunRecord>| v.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
        assert_eq!(ids(store.list().0), ["r0", "r1", "r2", "r3"]);
        assert_eq!(ids(store.prune_candidates(2, 50, "")), ["r0"]);
        assert_eq!(ids(store.prune_candidates(1, 50, "r3")), ["r0"]);
        assert_eq!(ids(store.prune_candidates(5, 2, "")), ["r1", "r0"]);
        store.remove("r0").expect("remove");
        assert!(matches!(
            store.remove("r0"),
            Err(RunStoreError::UnknownRun(_))
        ));
    }
}
