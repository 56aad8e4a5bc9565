//! CONTRACT (shared by every backend and by the session manager): the [`VmProvider`] trait and
//! the types that cross it. A provider hands out isolated machines reached through their agent;
//! it must never run workflow code on the host, and every machine it allocates must be
//! releasable, by [`VmProvider::release`] or, after a crash, from its [`VmRecord`].

use ignis_agent::AgentClient;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Which kind of machine a provider hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Linux namespaces + overlayfs + cgroups: no KVM needed.
    Sandbox,
    /// A QEMU `microvm`.
    Qemu,
    /// A Firecracker microVM.
    Firecracker,
    /// The in-process fake, for tests of the layers above.
    Fake,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sandbox => "sandbox",
            Backend::Qemu => "qemu",
            Backend::Firecracker => "firecracker",
            Backend::Fake => "fake",
        })
    }
}

/// Network policy of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPolicy {
    /// Loopback only.
    #[default]
    None,
    /// Share the host's network (sandbox only).
    Host,
    /// User-mode egress (pasta/passt or slirp).
    User,
}

/// What to allocate: resolved from a profile (see `profile`).
#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    /// Profile name / VM type, e.g. `ubuntu-latest`.
    pub vm_type: String,
    /// Which backend allocates it.
    pub backend: Backend,
    /// Root filesystem image: a directory (sandbox lower layer; `/` = host root) or an image name.
    pub image: PathBuf,
    /// Virtual CPUs (a CPU quota for the sandbox).
    pub vcpus: u32,
    /// Memory limit in MiB.
    pub memory_mib: u64,
    /// Writable disk size in MiB.
    pub disk_mib: u64,
    /// Cap on processes inside the machine; `None` leaves the backend default.
    pub pids_max: Option<u64>,
    /// What network the machine gets.
    pub network: NetworkPolicy,
}

/// Unique id of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmId(pub String);

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A snapshot a provider can restore from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotId(pub String);

/// An allocated machine. Release it with [`VmProvider::release`].
#[derive(Debug, Clone)]
pub struct Vm {
    /// Unique id, stable for the life of the machine.
    pub id: VmId,
    /// The VM type (profile name) it was allocated for.
    pub vm_type: String,
    /// The backend that allocated it.
    pub backend: Backend,
    /// Wall time the provider spent allocating (measured by the provider).
    pub allocation_time: Duration,
    /// Channel to the agent running inside the machine.
    pub agent: AgentClient,
    /// Host resources this VM holds, persisted by the session manager so that a later ignis
    /// process can reap them if this one dies.
    pub record: VmRecord,
}

/// Everything on the host a VM holds, in a form that survives the process that allocated it.
/// The session manager writes it to its state dir; [`VmProvider::reap`] releases it after a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmRecord {
    /// The backend whose `reap` releases this record (`None` in records of unknown origin).
    pub backend: Option<Backend>,
    /// The VM id the record belongs to.
    pub id: String,
    /// Host processes to kill: (pid, start time in clock ticks from /proc/PID/stat field 22),
    /// so a recycled pid is never killed by mistake.
    pub processes: Vec<(u32, u64)>,
    /// Mount points to detach (deepest first).
    pub mounts: Vec<PathBuf>,
    /// Cgroup directories to kill and remove.
    pub cgroups: Vec<PathBuf>,
    /// Files and directories to delete (sockets, overlays, scratch dirs).
    pub paths: Vec<PathBuf>,
}

/// Errors of a provider.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The backend cannot run on this host (host problem); the reason says what is missing.
    #[error("backend {backend} unavailable: {reason}")]
    Unavailable {
        /// The backend that cannot run.
        backend: Backend,
        /// What is missing.
        reason: String,
    },
    /// Allocation failed.
    #[error("allocating {vm_type} on {backend} failed: {reason}")]
    Allocate {
        /// The backend that failed.
        backend: Backend,
        /// The VM type being allocated.
        vm_type: String,
        /// What went wrong.
        reason: String,
    },
    /// Release failed; the VM may still hold resources.
    #[error("releasing vm {id} failed: {reason}")]
    Release {
        /// The VM that could not be released.
        id: VmId,
        /// What went wrong.
        reason: String,
    },
    /// Unknown VM id (already released or never allocated here).
    #[error("unknown vm {0}")]
    UnknownVm(VmId),
    /// Snapshot or restore failed or is not supported.
    #[error("snapshot {op} failed: {reason}")]
    Snapshot {
        /// The operation (`create`, `restore`, ...).
        op: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A host I/O operation failed.
    #[error("i/o error: {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A source of isolated machines. Implementations are `Send + Sync` and shared behind `Arc`.
#[async_trait::async_trait]
pub trait VmProvider: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Allocate one machine with a live agent channel.
    async fn allocate(&self, spec: &VmSpec) -> Result<Vm, VmError>;
    /// Release a machine and every host resource it holds. Idempotent errors: releasing an
    /// unknown id returns `UnknownVm`.
    async fn release(&self, vm: &Vm) -> Result<(), VmError>;
    /// Capture a snapshot of a live machine. The id stays restorable by a provider with the same
    /// configuration in a later ignis process (`ignis run --resume` depends on it) until
    /// [`VmProvider::remove_snapshot`] deletes it.
    async fn snapshot(&self, vm: &Vm, name: &str) -> Result<SnapshotId, VmError>;
    /// Allocate a new machine from a snapshot.
    async fn restore(&self, snapshot: &SnapshotId, spec: &VmSpec) -> Result<Vm, VmError>;
    /// Delete a snapshot and every host file it holds. Snapshots outlive the VM and the process
    /// that took them, so whoever records their ids also removes them.
    async fn remove_snapshot(&self, snapshot: &SnapshotId) -> Result<(), VmError> {
        Err(VmError::Snapshot {
            op: "remove",
            reason: format!("{} snapshots cannot be removed by this backend", snapshot.0),
        })
    }
    /// Release what a VM of a dead ignis process left behind, from its persisted record.
    async fn reap(&self, record: &VmRecord) -> Result<(), VmError>;
    /// Remove host leftovers of dead ignis processes that no record names: what a crash
    /// between creating a VM's resources and the session manager writing its record (or in
    /// the middle of a snapshot) leaves. Providers that name such resources after their owner
    /// process (pid + start time) find them here; a resource of a live process is never
    /// touched. Returns a description of each thing removed. Called by
    /// `SessionManager::reap_orphans` at start-up; the default has nothing to sweep.
    async fn reap_leftovers(&self) -> Result<Vec<String>, VmError> {
        Ok(Vec::new())
    }
}
