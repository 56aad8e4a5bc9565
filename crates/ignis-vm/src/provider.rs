//! CONTRACT (shared by every backend and by the session manager).

use ignis_agent::AgentClient;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Which kind of machine a provider hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sandbox,
    Qemu,
    Firecracker,
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
    pub backend: Backend,
    /// Root filesystem image: a directory (sandbox lower layer; `/` = host root) or an image name.
    pub image: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    pub pids_max: Option<u64>,
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
    pub id: VmId,
    pub vm_type: String,
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
    pub backend: Option<Backend>,
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
    Unavailable { backend: Backend, reason: String },
    /// Allocation failed.
    #[error("allocating {vm_type} on {backend} failed: {reason}")]
    Allocate { backend: Backend, vm_type: String, reason: String },
    /// Release failed; the VM may still hold resources.
    #[error("releasing vm {id} failed: {reason}")]
    Release { id: VmId, reason: String },
    /// Unknown VM id (already released or never allocated here).
    #[error("unknown vm {0}")]
    UnknownVm(VmId),
    /// Snapshot or restore failed or is not supported.
    #[error("snapshot {op} failed: {reason}")]
    Snapshot { op: &'static str, reason: String },
    #[error("i/o error: {context}")]
    Io { context: String, #[source] source: std::io::Error },
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
    /// Capture a snapshot of a live machine.
    async fn snapshot(&self, vm: &Vm, name: &str) -> Result<SnapshotId, VmError>;
    /// Allocate a new machine from a snapshot.
    async fn restore(&self, snapshot: &SnapshotId, spec: &VmSpec) -> Result<Vm, VmError>;
    /// Release what a VM of a dead ignis process left behind, from its persisted record.
    async fn reap(&self, record: &VmRecord) -> Result<(), VmError>;
}
