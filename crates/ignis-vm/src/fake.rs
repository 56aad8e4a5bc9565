//! The `fake` backend: a provider for testing the layers above (sessions, executor, CLI).
//!
//! It does **not** isolate anything. Each fake VM is a real `ignis-agent` child process on the
//! host, spoken to over its stdin/stdout, running in a directory of its own. That directory is
//! the fake VM's identity: a command can read it as the working directory of its parent (the
//! agent), `readlink /proc/$PPID/cwd` (see [`FakeProvider::identity_probe`]), so tests can
//! check that every command of a session ran in the same VM and that sessions got different
//! VMs, just as the sandbox tests read the guest's pid namespace.
//!
//! What the fake adds on top: it counts allocations and releases (live count, totals, the
//! highest live count ever seen, a per-VM history), sleeps a configurable allocation latency,
//! and injects faults: allocation fails, release fails (once, n times, always), and the agent
//! channel drops while a command runs. Between the [`AgentClient`] and the agent's pipes sits a
//! byte pump owned by the provider; [`FakeProvider::drop_channel`] stops it, so the client sees
//! its channel close mid-command exactly as it would when a VM dies.

use crate::provider::{Backend, SnapshotId, Vm, VmError, VmId, VmProvider, VmRecord, VmSpec};
use ignis_agent::{AgentClient, ExecRequest, Program};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How long a released VM's agent gets to kill its commands and exit after its stdin closes.
const AGENT_EXIT_GRACE: Duration = Duration::from_secs(2);

/// How often an injected fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Never.
    #[default]
    Off,
    /// The next `n` calls fail, later calls succeed.
    Times(u32),
    /// Every call fails.
    Always,
}

impl Fault {
    /// The next call fails, later calls succeed.
    pub const ONCE: Fault = Fault::Times(1);

    /// Whether this call fails; consumes one use of a `Times` fault.
    fn fire(&mut self) -> bool {
        match self {
            Fault::Off => false,
            Fault::Always => true,
            Fault::Times(n) => {
                *n -= 1;
                if *n == 0 {
                    *self = Fault::Off;
                }
                true
            }
        }
    }
}

/// Where the agent binary is and how fake VMs behave.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The `ignis-agent` binary, speaking the protocol on stdin/stdout.
    pub agent_bin: PathBuf,
    /// Arguments to the agent.
    pub agent_args: Vec<String>,
    /// Extra time every allocation takes (simulates a slow backend).
    pub allocation_latency: Duration,
    /// Directory under which each fake VM gets its own directory.
    pub root: PathBuf,
}

impl FakeConfig {
    /// Defaults for the agent at `agent_bin`: `--stdio`, no latency, VM dirs under the temp
    /// dir.
    pub fn new(agent_bin: PathBuf) -> Self {
        FakeConfig {
            agent_bin,
            agent_args: vec!["--stdio".into()],
            allocation_latency: Duration::ZERO,
            root: std::env::temp_dir().join("ignis-fake"),
        }
    }

    /// Defaults with the agent binary found by [`ignis_agent::agent_binary_path`].
    pub fn discover() -> Result<Self, ignis_agent::AgentBinaryError> {
        ignis_agent::agent_binary_path().map(Self::new)
    }
}

/// One thing that happened to a fake VM, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmEvent {
    /// `allocate` handed it out.
    Allocated,
    /// `release` was called and an injected fault made it fail.
    ReleaseFailed,
    /// `release` freed it.
    Released,
    /// Its agent channel was dropped.
    ChannelDropped,
    /// A snapshot was taken of it.
    Snapshotted,
    /// `reap` released it from its record.
    Reaped,
}

/// Counters of a fake provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeStats {
    /// Successful allocations.
    pub allocations: u64,
    /// Allocations that failed (injected or real).
    pub allocation_failures: u64,
    /// Successful releases.
    pub releases: u64,
    /// Releases that failed (injected).
    pub release_failures: u64,
    /// Records reaped after a crash.
    pub reaps: u64,
    /// VMs allocated (or being allocated) and not released now.
    pub live: u64,
    /// The highest `live` ever seen.
    pub max_live: u64,
}

#[derive(Debug, Default)]
struct State {
    stats: FakeStats,
    allocate_fault: Fault,
    release_fault: Fault,
    live: HashMap<VmId, LiveVm>,
    history: BTreeMap<VmId, Vec<VmEvent>>,
    snapshots: HashMap<SnapshotId, VmId>,
}

#[derive(Debug)]
struct LiveVm {
    child: Child,
    dir: PathBuf,
    pumps: [JoinHandle<()>; 2],
}

/// The fake provider. Cheap to clone; clones share counters and faults.
#[derive(Debug, Clone)]
pub struct FakeProvider {
    config: Arc<FakeConfig>,
    state: Arc<Mutex<State>>,
    next: Arc<AtomicU64>,
}

impl FakeProvider {
    /// A provider with `config`.
    pub fn new(config: FakeConfig) -> Self {
        FakeProvider {
            config: Arc::new(config),
            state: Arc::default(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // NOTE: the lock is never held across an await or a user callback, so a poisoned lock
        // only means a test panicked elsewhere; the counters stay meaningful.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current counters.
    pub fn stats(&self) -> FakeStats {
        self.state().stats.clone()
    }

    /// Everything that happened to one VM, in order.
    pub fn history(&self, id: &VmId) -> Vec<VmEvent> {
        self.state().history.get(id).cloned().unwrap_or_default()
    }

    /// Ids of every VM ever allocated, in id order.
    pub fn allocated_ids(&self) -> Vec<VmId> {
        self.state().history.keys().cloned().collect()
    }

    /// Ids of VMs live now.
    pub fn live_ids(&self) -> Vec<VmId> {
        let mut v: Vec<VmId> = self.state().live.keys().cloned().collect();
        v.sort();
        v
    }

    /// Make allocations fail.
    pub fn fail_allocate(&self, fault: Fault) {
        self.state().allocate_fault = fault;
    }

    /// Make releases fail (the VM stays live).
    pub fn fail_release(&self, fault: Fault) {
        self.state().release_fault = fault;
    }

    /// Cut the agent channel of a live VM: the pump between the client and the agent stops
    /// and the agent's pipes close, so every in-flight request fails with `ChannelClosed`.
    /// The VM stays live until released. Returns false when `id` is not live.
    pub fn drop_channel(&self, id: &VmId) -> bool {
        let mut st = self.state();
        let Some(vm) = st.live.get(id) else {
            return false;
        };
        for p in &vm.pumps {
            p.abort();
        }
        st.history
            .entry(id.clone())
            .or_default()
            .push(VmEvent::ChannelDropped);
        true
    }

    /// The directory that is `id`'s identity, while it is live.
    pub fn vm_dir(&self, id: &VmId) -> Option<PathBuf> {
        self.state().live.get(id).map(|v| v.dir.clone())
    }

    /// A command that prints the identity of the fake VM it runs in: the directory of its
    /// agent (the command's parent process).
    pub fn identity_probe() -> ExecRequest {
        ExecRequest {
            program: Program::Argv(vec![
                "sh".into(),
                "-c".into(),
                "readlink /proc/$PPID/cwd".into(),
            ]),
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            cwd: None,
            stdin: None,
            timeout: None,
        }
    }

    fn event(st: &mut State, id: &VmId, ev: VmEvent) {
        st.history.entry(id.clone()).or_default().push(ev);
    }

    fn alloc_error(spec: &VmSpec, reason: impl Into<String>) -> VmError {
        VmError::Allocate {
            backend: Backend::Fake,
            vm_type: spec.vm_type.clone(),
            reason: reason.into(),
        }
    }

    async fn allocate_inner(&self, spec: &VmSpec) -> Result<Vm, VmError> {
        let started = Instant::now();
        if !self.config.allocation_latency.is_zero() {
            tokio::time::sleep(self.config.allocation_latency).await;
        }
        if self.state().allocate_fault.fire() {
            return Err(Self::alloc_error(spec, "injected fault"));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = VmId(format!("fake-{}-{n}", std::process::id()));
        let dir = self.config.root.join(&id.0);
        std::fs::create_dir_all(&dir).map_err(|e| VmError::Io {
            context: format!("creating {}", dir.display()),
            source: e,
        })?;
        let spawned = Command::new(&self.config.agent_bin)
            .args(&self.config.agent_args)
            .current_dir(&dir)
            .env("IGNIS_VM_ID", &id.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Self::alloc_error(
                    spec,
                    format!("spawning agent {}: {e}", self.config.agent_bin.display()),
                ));
            }
        };
        let (Some(mut agent_in), Some(mut agent_out)) = (child.stdin.take(), child.stdout.take())
        else {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Self::alloc_error(spec, "agent pipes missing"));
        };
        let pid = child.id().unwrap_or(0);
        // The pump: client <-> duplex <-> agent pipes. Aborting both tasks drops the duplex
        // end and the agent's pipes, which is how `drop_channel` cuts the channel.
        let (client_end, pump_end) = tokio::io::duplex(64 * 1024);
        let (mut pump_rd, mut pump_wr) = tokio::io::split(pump_end);
        let to_agent = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut pump_rd, &mut agent_in).await;
            let _ = agent_in.shutdown().await;
        });
        let from_agent = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut agent_out, &mut pump_wr).await;
            let _ = pump_wr.shutdown().await;
        });
        let (rd, wr) = tokio::io::split(client_end);
        let agent = AgentClient::new(rd, wr);
        let record = VmRecord {
            backend: Some(Backend::Fake),
            id: id.0.clone(),
            processes: process_start_time(pid)
                .map(|t| vec![(pid, t)])
                .unwrap_or_default(),
            mounts: Vec::new(),
            cgroups: Vec::new(),
            paths: vec![dir.clone()],
        };
        let mut st = self.state();
        st.live.insert(
            id.clone(),
            LiveVm {
                child,
                dir,
                pumps: [to_agent, from_agent],
            },
        );
        Self::event(&mut st, &id, VmEvent::Allocated);
        Ok(Vm {
            id,
            vm_type: spec.vm_type.clone(),
            backend: Backend::Fake,
            allocation_time: started.elapsed(),
            agent,
            record,
        })
    }

    /// Stop one VM's agent and remove its directory.
    async fn teardown(vm: LiveVm) {
        let LiveVm {
            mut child,
            dir,
            pumps,
        } = vm;
        for p in &pumps {
            p.abort();
        }
        // Aborting the pump closes the agent's stdin, which asks it to kill its commands and
        // exit; a kill follows only if it does not, since killing it first would orphan them.
        if tokio::time::timeout(AGENT_EXIT_GRACE, child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "removing fake vm dir");
        }
    }
}

#[async_trait::async_trait]
impl VmProvider for FakeProvider {
    fn backend(&self) -> Backend {
        Backend::Fake
    }

    async fn allocate(&self, spec: &VmSpec) -> Result<Vm, VmError> {
        // Count the VM as live from the start of allocation, so `max_live` also bounds VMs
        // that are half allocated.
        {
            let mut st = self.state();
            st.stats.live += 1;
            st.stats.max_live = st.stats.max_live.max(st.stats.live);
        }
        let res = self.allocate_inner(spec).await;
        let mut st = self.state();
        match &res {
            Ok(_) => st.stats.allocations += 1,
            Err(_) => {
                st.stats.live -= 1;
                st.stats.allocation_failures += 1;
            }
        }
        res
    }

    async fn release(&self, vm: &Vm) -> Result<(), VmError> {
        let live = {
            let mut st = self.state();
            if !st.live.contains_key(&vm.id) {
                return Err(VmError::UnknownVm(vm.id.clone()));
            }
            if st.release_fault.fire() {
                st.stats.release_failures += 1;
                Self::event(&mut st, &vm.id, VmEvent::ReleaseFailed);
                return Err(VmError::Release {
                    id: vm.id.clone(),
                    reason: "injected fault".into(),
                });
            }
            let live = st.live.remove(&vm.id);
            st.stats.releases += 1;
            st.stats.live -= 1;
            Self::event(&mut st, &vm.id, VmEvent::Released);
            live
        };
        if let Some(live) = live {
            Self::teardown(live).await;
        }
        Ok(())
    }

    async fn snapshot(&self, vm: &Vm, name: &str) -> Result<SnapshotId, VmError> {
        let mut st = self.state();
        if !st.live.contains_key(&vm.id) {
            return Err(VmError::UnknownVm(vm.id.clone()));
        }
        let snap = SnapshotId(format!("{}@{name}", vm.id));
        st.snapshots.insert(snap.clone(), vm.id.clone());
        Self::event(&mut st, &vm.id, VmEvent::Snapshotted);
        Ok(snap)
    }

    async fn restore(&self, snapshot: &SnapshotId, spec: &VmSpec) -> Result<Vm, VmError> {
        if !self.state().snapshots.contains_key(snapshot) {
            return Err(VmError::Snapshot {
                op: "restore",
                reason: format!("unknown snapshot {}", snapshot.0),
            });
        }
        // The fake keeps no guest state, so a restored VM is a fresh one.
        self.allocate(spec).await
    }

    async fn reap(&self, record: &VmRecord) -> Result<(), VmError> {
        for &(pid, start) in &record.processes {
            // Kill only the process that was recorded, never a process that reused its pid.
            if process_running(pid, start)
                && let Some(p) = rustix::process::Pid::from_raw(pid as i32)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        for path in &record.paths {
            match std::fs::remove_dir_all(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(VmError::Io {
                        context: format!("removing {}", path.display()),
                        source: e,
                    });
                }
            }
        }
        let id = VmId(record.id.clone());
        let live = {
            let mut st = self.state();
            st.stats.reaps += 1;
            let live = st.live.remove(&id);
            if live.is_some() {
                st.stats.live -= 1;
            }
            Self::event(&mut st, &id, VmEvent::Reaped);
            live
        };
        if let Some(live) = live {
            Self::teardown(live).await;
        }
        Ok(())
    }
}

// Process identity is shared with the other backends; re-exported for the session store.
pub use crate::host::{process_running, process_start_time};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_times_counts_down() {
        let mut f = Fault::Times(2);
        assert!(f.fire());
        assert!(f.fire());
        assert!(!f.fire());
        assert_eq!(f, Fault::Off);
        let mut a = Fault::Always;
        assert!(a.fire() && a.fire());
    }
}
