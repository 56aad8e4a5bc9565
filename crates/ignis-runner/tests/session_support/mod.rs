//! Shared helpers of the session tests: test environments per backend, a counting provider
//! wrapper, the guest identity probe and host-leftover checks.

#![allow(dead_code)]

use ignis_agent::{ExecRequest, Program};
use ignis_runner::session::{SessionContext, SessionEvent, SessionManager, SessionObserver};
use ignis_vm::fake::{FakeConfig, FakeProvider};
use ignis_vm::profile::ProfileConfig;
use ignis_vm::{Backend, SnapshotId, Vm, VmError, VmProvider, VmRecord, VmSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The agent binary; built on demand when `cargo test -p ignis-runner` did not build it.
pub fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = ignis_agent::agent_binary_path() {
            return p;
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target dir");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "ignis-agent", "--bin", "ignis-agent"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for ignis-agent");
        assert!(status.success(), "building ignis-agent failed");
        ignis_agent::agent_binary_path().expect("ignis-agent after building it")
    })
    .clone()
}

/// Wraps any provider and counts what passes through, so the seed tests can check
/// allocation counts for every backend alike.
#[derive(Debug)]
pub struct CountingProvider {
    inner: Arc<dyn VmProvider>,
    counts: Mutex<Counts>,
}

/// Counters of a [`CountingProvider`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub allocations: u64,
    pub releases: u64,
    pub live: u64,
    pub max_live: u64,
    pub vm_ids: Vec<String>,
    /// Host resources of every VM handed out, to check nothing is left after release.
    pub records: Vec<VmRecord>,
}

impl CountingProvider {
    pub fn new(inner: Arc<dyn VmProvider>) -> Arc<Self> {
        Arc::new(CountingProvider {
            inner,
            counts: Mutex::default(),
        })
    }
    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl VmProvider for CountingProvider {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    async fn allocate(&self, spec: &VmSpec) -> Result<Vm, VmError> {
        {
            let mut c = self.counts.lock().unwrap();
            c.live += 1;
            c.max_live = c.max_live.max(c.live);
        }
        let r = self.inner.allocate(spec).await;
        let mut c = self.counts.lock().unwrap();
        match &r {
            Ok(vm) => {
                c.allocations += 1;
                c.vm_ids.push(vm.id.0.clone());
                c.records.push(vm.record.clone());
            }
            Err(_) => c.live -= 1,
        }
        r
    }
    async fn release(&self, vm: &Vm) -> Result<(), VmError> {
        let r = self.inner.release(vm).await;
        if r.is_ok() {
            let mut c = self.counts.lock().unwrap();
            c.releases += 1;
            c.live -= 1;
        }
        r
    }
    async fn snapshot(&self, vm: &Vm, name: &str) -> Result<SnapshotId, VmError> {
        self.inner.snapshot(vm, name).await
    }
    async fn restore(&self, s: &SnapshotId, spec: &VmSpec) -> Result<Vm, VmError> {
        self.inner.restore(s, spec).await
    }
    async fn reap(&self, record: &VmRecord) -> Result<(), VmError> {
        self.inner.reap(record).await
    }
}

/// Collects session events.
#[derive(Debug, Default)]
pub struct EventLog(pub Mutex<Vec<SessionEvent>>);

impl SessionObserver for EventLog {
    fn on_event(&self, event: &SessionEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl EventLog {
    pub fn events(&self) -> Vec<SessionEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// One backend under test.
pub struct Env {
    pub backend: Backend,
    pub manager: SessionManager,
    pub counter: Arc<CountingProvider>,
    /// Set for the fake backend: its own counters and fault switches.
    pub fake: Option<FakeProvider>,
    pub events: Arc<EventLog>,
    pub identity: ExecRequest,
    pub state: tempfile::TempDir,
    pub vm_root: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("backend", &self.backend)
            .finish()
    }
}

/// A profile set that sends `ubuntu-latest` (vm type `bionic-test`, as in the seed) to
/// `backend`.
pub fn profiles(backend: Backend) -> ProfileConfig {
    let text = format!(
        "[profiles.bionic-test]\nlabels = [\"ubuntu-latest\", \"linux\"]\nbackend = \"{backend}\"\npids-max = 512\nmemory-mib = 512\n"
    );
    ProfileConfig::from_toml(&text, Path::new("test.toml")).expect("test profile")
}

impl Env {
    fn build(
        backend: Backend,
        provider: Arc<dyn VmProvider>,
        fake: Option<FakeProvider>,
        identity: ExecRequest,
        limit: usize,
        vm_root: Option<tempfile::TempDir>,
    ) -> Env {
        let state = tempfile::tempdir().expect("state dir");
        let counter = CountingProvider::new(provider);
        let manager = SessionManager::builder()
            .max_concurrent_sessions(limit)
            .state_dir(state.path())
            .profiles(profiles(backend))
            .provider(counter.clone())
            .release_retry(3, Duration::from_millis(5))
            .build()
            .expect("session manager");
        Env {
            backend,
            manager,
            counter,
            fake,
            events: Arc::new(EventLog::default()),
            identity,
            state,
            vm_root,
        }
    }

    /// A context for one workflow run.
    pub fn ctx(&self, label: &str) -> SessionContext {
        SessionContext::new("ubuntu-latest")
            .with_label(label)
            .with_observer(self.events.clone())
    }

    /// Session records left in the state dir.
    pub fn records(&self) -> usize {
        std::fs::read_dir(self.state.path().join("sessions"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// After a test: no live session, no live VM, no record, no VM directory left.
    pub fn assert_clean(&self) {
        assert_eq!(self.manager.live_count(), 0, "live sessions");
        assert_eq!(
            self.manager.available_slots(),
            self.manager.max_concurrent_sessions()
        );
        assert_eq!(self.counter.counts().live, 0, "live vms (counting wrapper)");
        if let Some(f) = &self.fake {
            assert_eq!(f.stats().live, 0, "live vms (fake provider)");
            assert!(f.live_ids().is_empty());
        }
        assert_eq!(self.records(), 0, "session records left on disk");
        assert_no_leftovers(&self.counter.counts().records);
        if let Some(root) = &self.vm_root {
            let left: Vec<_> = std::fs::read_dir(root.path())
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "vm dirs left: {left:?}");
        }
    }
}

/// Nothing a released VM held is left on the host: no process, mount, cgroup or path.
pub fn assert_no_leftovers(records: &[VmRecord]) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .collect();
    for r in records {
        for &(pid, start) in &r.processes {
            assert!(
                !ignis_vm::fake::process_running(pid, start),
                "vm {}: process {pid} still runs",
                r.id
            );
        }
        for m in &r.mounts {
            let m = m.to_string_lossy();
            assert!(
                !mounted.contains(&m.as_ref()),
                "vm {}: {m} still mounted",
                r.id
            );
        }
        for c in &r.cgroups {
            assert!(!c.exists(), "vm {}: cgroup {} left", r.id, c.display());
        }
        for p in &r.paths {
            assert!(!p.exists(), "vm {}: {} left", r.id, p.display());
        }
    }
}

/// The sandbox backend, where this host can run it (root and a working sandbox).
pub fn sandbox_env(limit: usize) -> Option<Env> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: the sandbox seed tests need root");
        return None;
    }
    // The sandbox starts the agent binary as its PID 1.
    agent_bin();
    let provider = match ignis_vm::sandbox::SandboxProvider::new() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skipped: sandbox unavailable: {e}");
            return None;
        }
    };
    let identity = ExecRequest {
        program: Program::Argv(vec!["readlink".into(), "/proc/self/ns/pid".into()]),
        env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        cwd: None,
        stdin: None,
        timeout: None,
    };
    Some(Env::build(
        Backend::Sandbox,
        Arc::new(provider),
        None,
        identity,
        limit,
        None,
    ))
}

/// The fake backend with a limit of `limit`.
pub fn fake_env(limit: usize) -> Option<Env> {
    fake_env_with(limit, |_| {})
}

/// The fake backend, with a hook to adjust its config (e.g. latency).
pub fn fake_env_with(limit: usize, adjust: impl FnOnce(&mut FakeConfig)) -> Option<Env> {
    let root = tempfile::tempdir().expect("vm root");
    let mut config = FakeConfig::new(agent_bin());
    config.root = root.path().to_owned();
    adjust(&mut config);
    let fake = FakeProvider::new(config);
    Some(Env::build(
        Backend::Fake,
        Arc::new(fake.clone()),
        Some(fake),
        FakeProvider::identity_probe(),
        limit,
        Some(root),
    ))
}

/// A plain `sh -c` command with a PATH.
pub fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        program: Program::Argv(vec!["sh".into(), "-c".into(), script.into()]),
        env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        cwd: None,
        stdin: None,
        timeout: None,
    }
}

/// Pids of host processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            // Zombies have an empty cmdline and are not running anything.
            if String::from_utf8_lossy(&cmd).contains(marker) {
                found.push(pid);
            }
        }
    }
    found
}

/// Wait (bounded) until `cond` holds; returns whether it did. Not a timing assertion: the
/// bound only keeps a broken build from hanging.
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// A unique marker for process-leftover checks: a sleep duration (about 50 minutes) whose
/// digits are unique to this test process and call, so it shows in the command line of both
/// the shell and the `sleep` it starts.
pub fn marker() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "3000.{}0{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A command that prints `started` and then sleeps for `marker` seconds.
pub fn sleeper(marker: &str) -> ExecRequest {
    sh(&format!("echo started; sleep {marker}; true"))
}
