//! The sandbox backend: real isolation with Linux namespaces, no KVM. The default backend.
//!
//! # What a sandbox is
//! One process tree in its own user, mount, pid, uts, ipc, net and cgroup namespaces, whose
//! PID 1 is the `ignis-agent` (speaking frames over its stdin/stdout, a socketpair with the
//! host). Killing PID 1 makes the kernel kill every other process of the pid namespace, so the
//! sandbox's death never depends on cgroups.
//!
//! # Process model
//! The host calls `clone3` with every `CLONE_NEW*` flag (and `CLONE_PIDFD`), so the child is
//! PID 1 of the new pid namespace at once; no double fork. The child blocks on a control
//! socket while the host writes its `uid_map`/`gid_map`, puts it into the session cgroups and
//! idmaps the lower layers; then the host sends one byte and the child mounts the root
//! filesystem, pivots into it, sends the host an fd of its scratch area and execs the agent
//! from an fd opened before clone (`execveat`), so the agent needs no path inside. The child's
//! code between clone and exec only walks a plan of pre-built C strings and makes raw syscalls
//! (no allocation, no locks). A setup failure comes back as `(step, errno)` over the control
//! socket and names its step. We chose `clone3` over `Command::pre_exec` + `unshare` because
//! `CLONE_NEWPID` only applies to children of the unsharing process (a second fork in
//! `pre_exec`) and because `Command::spawn` waits for exec, which deadlocks with a child that
//! waits for its uid map.
//!
//! # Users
//! Root inside maps to an unprivileged host range. Running as root, each sandbox gets its own
//! range of 65536 ids at `uid_base + slot * 65536` (default base 2_000_000_000, 16384 slots
//! handed out round-robin), so two sandboxes never share a host uid and none is the host's
//! root. Running as an ordinary user, only the caller's own uid/gid is mapped to 0 (no
//! `newuidmap` needed); host files then show as `nobody` inside and `apt-get` cannot work,
//! and the image must be a directory without mount points: the kernel refuses a lower layer
//! whose submounts are locked, which is what the host root `/` is to an ordinary user.
//!
//! # Root filesystem
//! overlayfs: lowers are the image directory (`/` = the host's root filesystem, without its
//! submounts) plus snapshot layers, each cloned with `open_tree` and idmapped with
//! `mount_setattr(MOUNT_ATTR_IDMAP)` so host root's files appear root-owned inside; the upper and
//! work dirs live on a per-session tmpfs (size = `disk_mib`) that only exists inside the
//! sandbox's mount namespace, so a session leaves no mount and no directory on the host and
//! the tmpfs vanishes with the namespace. (Its pages are charged to the session's memory
//! cgroup: what a job writes counts against its memory limit.) The host's `/root`, `/home`, `/run` and `/tmp` are
//! masked with opaque upper directories. Inside: fresh `/proc`, minimal `/dev` (null, zero, full,
//! random, urandom, tty bound from the host; `/dev/pts`, `/dev/shm`), read-only `/sys` when the
//! network namespace is ours, and the GitHub layout `/home/runner/work` (workspace root),
//! `/home/runner/work/_temp` (`RUNNER_TEMP`) and `/opt/hostedtoolcache`, all owned by root
//! inside. Hostname = vm id. Files of the host root filesystem stay *readable* inside (that is
//! what a host-root lower layer means); use an image directory to expose less.
//!
//! # Network
//! `None`: a fresh network namespace with only `lo`, brought up with `SIOCSIFFLAGS`. `Host`:
//! the host's network namespace. `User`: a fresh namespace plus `pasta` (Debian: `passt`) for
//! egress; without `pasta` allocation fails with a clear error. The sandbox sees 10.0.2.15/24
//! behind gateway 10.0.2.2 and reaches what the host could reach on its network, the host's
//! own network addresses included, but not the host's loopback: pasta forwards no ports in
//! either direction and does not map the gateway to the host (see `PASTA_ARGS`). DNS uses the
//! host's `/etc/resolv.conf` as it is, so a host whose resolver listens on loopback
//! (systemd-resolved's 127.0.0.53) has no name resolution inside. IPv6, where the host has it,
//! keeps pasta's default (the host's address, copied). pasta does not exit with the
//! namespace, so the sandbox owns the daemon: it is born in the session's cgroups, recorded
//! in the [`VmRecord`] and killed on release.
//!
//! # Cgroups
//! Memory, pids and CPU limits per session, v2 where enabled,
//! else v1; a controller usable nowhere is reported once with `tracing::warn!` and skipped.
//!
//! # Snapshots
//! Snapshots are filesystem layers. **Process state is not captured**: a restored sandbox
//! starts with a fresh agent and no running commands; `restore` allocates a sandbox whose
//! lowers are the snapshot's layer, the layers it was built on, and the base image.
//!
//! Root mode, sandbox idle (PID 1 alone in its pid namespace, its cwd `/`, no fd on the root):
//! the snapshot is an **O(1) freeze**. The session's upper is a tmpfs the host made and
//! idmapped (so its files carry image-relative owners); the freeze attaches that tmpfs in the
//! store as the layer and moves the live sandbox onto a new overlay (the frozen upper and the
//! old lowers below a fresh upper tmpfs) with a helper that joins the sandbox's namespaces and
//! `pivot_root`s; no file is copied (the `freeze` module has the steps). Such a layer is a
//! mount in the host's mount namespace under the store, which outlives the ignis process like
//! any snapshot; `remove_snapshot` unmounts it.
//!
//! Otherwise (a background process still runs, an fd is open on the root, unprivileged mode)
//! the upper is **copied** into the store as a new layer directory, owners shifted back to
//! image-relative ids where needed; cost is one pass over the changed files. A busy sandbox
//! cannot be frozen safely: a process whose cwd or open file is on the old root keeps the old
//! overlay alive and could write into what is already a lower layer elsewhere.
//!
//! The copy store must be on another filesystem than the image (overlayfs refuses overlapping
//! layers); the default is under `/dev/shm`, in memory, so snapshots survive the ignis process
//! but not a reboot (frozen layers are tmpfs mounts, in memory too).
//!
//! Snapshots are persistent: each layer has a manifest beside it naming the layers it is built
//! on and its base image, and that store is the only registry, so any provider with the same
//! `state_dir` (in a later ignis process too) restores them; dropping a provider never deletes
//! a layer. [`VmProvider::remove_snapshot`] deletes one; it refuses while a sandbox of any
//! process runs on it (each sandbox holds a shared `flock` on its layers' manifests) and while
//! a later snapshot is built on it (the error names those dependants: remove the newest first).
//!
//! Known wart of the freeze: the agent is dynamically linked, and its libraries, mapped from
//! the old overlay when it started, keep that overlay alive (read-only use) for the agent's
//! life. The kernel notes it once per freeze or restore ("overlayfs: lowerdir is in-use as
//! upperdir/workdir of another mount"); nothing writes through the old overlay, so the warning
//! is harmless. A static agent would remove it.
//!
//! # Crash cleanup
//! A [`VmRecord`] lists the agent's (pid, start time), pasta's if any, and the cgroup
//! directories; nothing else exists on the host. [`VmProvider::reap`] kills the processes (the
//! agent's death ends the namespace) and removes the groups. An ignis killed after creating
//! the groups but before the session manager wrote the record leaves no record; the groups'
//! names (`sbx-<pid>-<start>-<n>`, the vm id) carry their owner, so
//! [`VmProvider::reap_leftovers`] (called by `SessionManager::reap_orphans`) finds the groups
//! of dead owners and removes them, killing what is still inside.

mod cgroup;
mod child;
mod freeze;
mod snapshot;
mod sys;

pub use cgroup::prewarm_migration;
pub use sys::Step;

use crate::provider::{
    Backend, NetworkPolicy, SnapshotId, Vm, VmError, VmId, VmProvider, VmRecord, VmSpec,
};
use cgroup::{CgroupLayout, Limits, SessionCgroup};
use child::{ChildPlan, Exec, ExecArgs, Lower};
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// Errors of the sandbox backend, one variant per failing host step.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The host forbids user namespaces (host problem); the message names the setting.
    #[error("user namespaces are not available: {0}")]
    UserNamespaces(String),
    /// clone3 failed for another reason (host problem).
    #[error("clone3 failed")]
    Clone(#[source] io::Error),
    /// The image is not a directory (user error in the profile).
    #[error("sandbox image {0} is not a directory")]
    Image(PathBuf),
    /// A path contains a character overlayfs options cannot carry (host configuration).
    #[error("path {0} cannot be used in overlayfs options (contains ',', ':' or '\\\\')")]
    OverlayPath(PathBuf),
    /// The agent binary was not found (installation problem).
    #[error("agent binary")]
    AgentMissing(#[source] ignis_agent::AgentBinaryError),
    /// Opening the agent binary failed.
    #[error("opening agent binary {path}")]
    AgentOpen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// As an ordinary user the image must hold no mount points (user error in the profile):
    /// the kernel refuses a lower layer with locked submounts, which the host root has.
    #[error(
        "image {0} contains mount points, which an ordinary user cannot use as a lower layer; \
         use an image directory without submounts or run ignis as root"
    )]
    UnprivilegedImage(PathBuf),
    /// `pasta` is needed for `network = "user"` but not installed (host problem).
    #[error("network = \"user\" needs `pasta` (Debian package `passt`), which is not installed")]
    PastaMissing,
    /// Starting `pasta` failed.
    #[error("starting pasta")]
    Pasta(#[source] io::Error),
    /// Preparing the state directory failed.
    #[error("preparing sandbox state dir {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Creating the session's cgroups failed.
    #[error("creating cgroups for {id}")]
    Cgroup {
        id: String,
        #[source]
        source: io::Error,
    },
    /// Attaching the child to its cgroups failed.
    #[error("attaching sandbox to its cgroups")]
    CgroupAttach(#[source] io::Error),
    /// `open_tree` of a lower layer failed.
    #[error("cloning lower layer {path}")]
    OpenTree {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the uid/gid map failed.
    #[error("writing {file} of the sandbox")]
    IdMap {
        file: &'static str,
        #[source]
        source: io::Error,
    },
    /// Opening the sandbox's user namespace failed.
    #[error("opening the sandbox user namespace")]
    OpenUserns(#[source] io::Error),
    /// `mount_setattr(MOUNT_ATTR_IDMAP)` failed.
    #[error("idmapping lower layer {path}")]
    Idmap {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Creating a socket or pipe failed.
    #[error("creating the {0} channel")]
    Channel(&'static str, #[source] io::Error),
    /// Talking to the child during setup failed.
    #[error("sandbox control channel")]
    Control(#[source] io::Error),
    /// A setup step inside the child failed.
    #[error("sandbox setup failed at {}", .step.name())]
    Child {
        step: Step,
        #[source]
        source: io::Error,
    },
    /// The child died or closed its control socket without reporting.
    #[error("sandbox child exited during setup")]
    ChildVanished,
    /// A string held a NUL byte.
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    /// Killing or reaping the sandbox failed.
    #[error("stopping sandbox {id}")]
    Stop {
        id: String,
        #[source]
        source: io::Error,
    },
    /// Removing the session cgroups failed.
    #[error("removing cgroups of {id}")]
    CgroupRemove {
        id: String,
        #[source]
        source: io::Error,
    },
    /// Creating the session's upper tmpfs failed.
    #[error("creating the session's upper layer")]
    Upper(#[source] io::Error),
    /// Snapshot store problem.
    #[error("{0}")]
    Snapshot(String),
    /// Snapshot copy failed.
    #[error("copying snapshot layer {path}")]
    SnapshotCopy {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Configuration of a [`SandboxProvider`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Private state: the scratch mount point and the snapshot store. Default:
    /// `/dev/shm/ignis-sandbox-<euid>` (a tmpfs, so it never overlaps a disk image).
    pub state_dir: PathBuf,
    /// The agent binary; `None` = [`ignis_agent::agent_binary_path`].
    pub agent_bin: Option<PathBuf>,
    /// First host uid/gid of the sandbox ranges (root only).
    pub uid_base: u32,
    /// Number of 65536-id ranges handed out round-robin (root only).
    pub uid_slots: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let euid = rustix::process::geteuid().as_raw();
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        SandboxConfig {
            state_dir: root.join(format!("ignis-sandbox-{euid}")),
            agent_bin: None,
            uid_base: 2_000_000_000,
            uid_slots: 16_384,
        }
    }
}

/// Ids mapped per sandbox (root mode): 0..65536 inside.
const ID_RANGE: u32 = 65_536;

/// What the sandbox runs as PID 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// `ignis-agent --stdio` (what [`VmProvider::allocate`] uses).
    Agent,
    /// An absolute path inside the sandbox and its arguments; stdin/stdout are the channel.
    Command(Vec<String>),
}

/// A launched sandbox: its id, the host end of its stdin/stdout channel and its record.
#[derive(Debug)]
pub struct Launched {
    /// The sandbox's VM id.
    pub id: VmId,
    /// Host end of PID 1's stdin and stdout.
    pub channel: UnixStream,
    /// Read end of PID 1's stderr.
    pub stderr: OwnedFd,
    /// Host resources of the sandbox.
    pub record: VmRecord,
    /// Host pid of PID 1.
    pub pid: u32,
    /// Time spent launching.
    pub elapsed: Duration,
}

/// A running sandbox's host-side state.
#[derive(Debug)]
struct Live {
    pid: u32,
    pidfd: OwnedFd,
    cgroup: SessionCgroup,
    /// The scratch tmpfs (mount points; upper/ and work/ in unprivileged mode) as the child
    /// handed it over.
    scratch: OwnedFd,
    /// Root mode: the session's upper tmpfs (upper/, work/), the original, not idmapped, mount.
    upper_mount: Option<OwnedFd>,
    /// Host uid that root inside maps to (`None` = unprivileged mode, ids not shifted).
    uid_base: Option<u32>,
    /// Snapshot layers below this sandbox's upper (newest first).
    layers: Vec<String>,
    /// Shared locks on those layers' manifests: no `remove_snapshot` (of any process) can
    /// delete a layer while this sandbox mounts it.
    layer_locks: Vec<std::fs::File>,
    /// Size of the upper tmpfs (MiB, 0 = kernel default), for the new upper of a freeze.
    disk_mib: u64,
    /// A freeze swapped the root but could not record its layer: later snapshots would name
    /// a parent the store does not have, so they are refused.
    broken: bool,
    image: PathBuf,
    /// The `pasta` daemon serving `network = "user"`: (pid, start time).
    pasta: Option<(u32, u64)>,
}

/// The sandbox [`VmProvider`].
#[derive(Debug)]
pub struct SandboxProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SandboxConfig,
    root: bool,
    cgroups: CgroupLayout,
    cgroups_missing: Vec<&'static str>,
    warned: Once,
    live: Mutex<HashMap<String, Live>>,
    /// One freeze at a time (they swap a live sandbox's root; see the `freeze` module).
    freeze_lock: Mutex<()>,
    next_slot: AtomicU32,
}

impl SandboxProvider {
    /// A provider with the default configuration.
    pub fn new() -> Result<SandboxProvider, VmError> {
        SandboxProvider::with_config(SandboxConfig::default())
    }

    /// A provider with `config`. Prepares the state directory and detects cgroups once.
    pub fn with_config(config: SandboxConfig) -> Result<SandboxProvider, VmError> {
        let root = rustix::process::geteuid().is_root();
        prepare_state_dir(&config.state_dir).map_err(to_unavailable)?;
        let (cgroups, cgroups_missing) = if root {
            CgroupLayout::detect()
        } else {
            (CgroupLayout::default(), vec!["memory", "pids", "cpu"])
        };
        let pid = std::process::id();
        Ok(SandboxProvider {
            inner: Arc::new(Inner {
                next_slot: AtomicU32::new(pid.wrapping_mul(7919) % config.uid_slots.max(1)),
                config,
                root,
                cgroups,
                cgroups_missing,
                warned: Once::new(),
                live: Mutex::new(HashMap::new()),
                freeze_lock: Mutex::new(()),
            }),
        })
    }

    /// Launches a sandbox running `init` as PID 1 on top of snapshot `from` (with the layers
    /// it is built on), or on `spec.image` alone. The caller owns the channel; stop it with
    /// [`SandboxProvider::stop`].
    pub async fn launch(
        &self,
        spec: &VmSpec,
        from: Option<&SnapshotId>,
        init: Init,
    ) -> Result<Launched, SandboxError> {
        let inner = self.inner.clone();
        let spec = spec.clone();
        let from = from.cloned();
        tokio::task::spawn_blocking(move || {
            let chain = match from {
                Some(s) => snapshot::open_chain(&inner.snapshot_store(), &s.0, &spec.image)?,
                None => snapshot::Chain {
                    layers: Vec::new(),
                    locks: Vec::new(),
                },
            };
            inner.launch(&spec, chain, init)
        })
        .await
        .map_err(|e| SandboxError::Control(io::Error::other(e)))?
    }

    /// Stops a sandbox started by [`SandboxProvider::launch`] and releases its host resources.
    pub async fn stop(&self, id: &VmId) -> Result<(), VmError> {
        let live = self.inner.live.lock().map_err(poisoned)?.remove(&id.0);
        let Some(live) = live else {
            return Err(VmError::UnknownVm(id.clone()));
        };
        let idc = id.0.clone();
        tokio::task::spawn_blocking(move || stop_live(&idc, live))
            .await
            .map_err(|e| VmError::Release {
                id: id.clone(),
                reason: e.to_string(),
            })?
            .map_err(|e| VmError::Release {
                id: id.clone(),
                reason: chain(&e),
            })
    }

    /// Ids of the sandboxes this provider holds.
    pub fn live_ids(&self) -> Vec<VmId> {
        self.inner
            .live
            .lock()
            .map(|m| m.keys().cloned().map(VmId).collect())
            .unwrap_or_default()
    }

    /// Forgets a live sandbox without stopping it (what a crashed ignis leaves behind); its
    /// record still lets [`VmProvider::reap`] clean it up. For crash tests.
    pub fn leak(&self, id: &VmId) -> bool {
        let live = self
            .inner
            .live
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&id.0));
        match live {
            Some(l) => {
                std::mem::forget(l);
                true
            }
            None => false,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }
}

fn poisoned<T>(_: T) -> VmError {
    VmError::Io {
        context: "sandbox state lock".into(),
        source: io::Error::other("poisoned"),
    }
}

fn to_unavailable(e: SandboxError) -> VmError {
    VmError::Unavailable {
        backend: Backend::Sandbox,
        reason: chain(&e),
    }
}

/// Creates the state dir: traversable (0711) so the sandbox's root, an unmapped uid for the
/// host's files, can reach the scratch mount point `mnt/` (0755, always empty on the host);
/// `snapshots/` (0700) holds root-owned layers only the host reads.
fn prepare_state_dir(dir: &Path) -> Result<(), SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| SandboxError::StateDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .map_err(err)?;
    let meta = std::fs::metadata(dir).map_err(err)?;
    if meta.uid() != rustix::process::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return Err(err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not owned by us or writable by others",
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(err)?;
    for (sub, mode) in [("mnt", 0o755), ("snapshots", 0o700)] {
        let p = dir.join(sub);
        std::fs::DirBuilder::new()
            .mode(mode)
            .create(&p)
            .or_else(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(err(e))
                }
            })?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    Ok(())
}

fn cstring(s: impl Into<Vec<u8>>, what: &'static str) -> Result<CString, SandboxError> {
    CString::new(s).map_err(|_| SandboxError::Nul(what))
}

fn overlay_safe(p: &Path) -> Result<String, SandboxError> {
    let s = p
        .to_str()
        .ok_or_else(|| SandboxError::OverlayPath(p.to_path_buf()))?;
    if s.contains([',', ':', '\\']) {
        return Err(SandboxError::OverlayPath(p.to_path_buf()));
    }
    Ok(s.to_owned())
}

/// Explains why user namespaces are refused, naming the setting to change. `read` returns the
/// value of a sysctl file under /proc/sys (None if absent).
pub fn userns_diagnosis(errno: i32, read: impl Fn(&str) -> Option<String>) -> String {
    let val = |k: &str| read(k).map(|v| v.trim().to_owned());
    if val("user/max_user_namespaces").as_deref() == Some("0") {
        return "user.max_user_namespaces is 0; set it to a positive number \
                (sysctl -w user.max_user_namespaces=15000)"
            .into();
    }
    if val("kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return "kernel.unprivileged_userns_clone is 0; enable it \
                (sysctl -w kernel.unprivileged_userns_clone=1) or run ignis as root"
            .into();
    }
    if val("kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return "kernel.apparmor_restrict_unprivileged_userns is 1; set it to 0 \
                (sysctl -w kernel.apparmor_restrict_unprivileged_userns=0), give ignis an \
                AppArmor profile that allows userns, or run ignis as root"
            .into();
    }
    if errno == libc::ENOSPC {
        return "the user namespace limit (user.max_user_namespaces) is reached".into();
    }
    format!(
        "clone3(CLONE_NEWUSER) failed with {}; check user.max_user_namespaces, \
         kernel.unprivileged_userns_clone and kernel.apparmor_restrict_unprivileged_userns",
        io::Error::from_raw_os_error(errno)
    )
}

/// Process identity is shared with the other backends (and `qemu` imports it from here).
pub use crate::host::process_start_time;
use crate::host::{kill_if_same, process_running, remove_path};

/// This process as an owner: (pid, start time). Fixed for the life of the process.
fn owner() -> (u32, u64) {
    static OWNER: OnceLock<(u32, u64)> = OnceLock::new();
    *OWNER.get_or_init(|| {
        let pid = std::process::id();
        (pid, process_start_time(pid).unwrap_or(0))
    })
}

/// The owner a vm id names (see `Inner::new_id`); `None` for names of another form, which
/// a sweep never touches.
fn owner_of_id(id: &str) -> Option<(u32, u64)> {
    let mut parts = id.strip_prefix("sbx-")?.split('-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    let n = parts.next()?;
    (parts.next().is_none() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((pid, start))
}

/// Test hook for crash tests: when `IGNIS_TEST_SANDBOX_PAUSE_ALLOCATION` names a file, a
/// launch creates that file once the child exists and sits in its cgroups, then blocks for
/// good, so a test can SIGKILL the process exactly in the window before the session record
/// is written. Read once per process.
fn pause_allocation_for_tests() {
    static HOOK: OnceLock<Option<PathBuf>> = OnceLock::new();
    let hook = HOOK
        .get_or_init(|| std::env::var_os("IGNIS_TEST_SANDBOX_PAUSE_ALLOCATION").map(PathBuf::from));
    if let Some(path) = hook {
        tracing::warn!(marker = %path.display(), "test hook: pausing sandbox allocation forever");
        if let Err(e) = std::fs::write(path, b"paused\n") {
            tracing::warn!(error = %e, "test hook: cannot write marker");
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Host resources of a half-built sandbox, released on drop unless disarmed.
struct LaunchGuard {
    cgroup: Option<SessionCgroup>,
    child: Option<sys::Cloned>,
    pasta: Option<(u32, u64)>,
}

impl Drop for LaunchGuard {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            let _ = sys::pidfd_signal(c.pidfd.as_fd(), libc::SIGKILL);
            let _ = sys::waitid_pidfd(c.pidfd.as_fd(), false);
        }
        if let Some((pid, start)) = self.pasta.take() {
            let _ = stop_helper(pid, start);
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.remove();
        }
    }
}

/// Dropping the provider releases every sandbox it still holds (RAII: a panicking caller
/// leaves nothing behind). Leaked sandboxes ([`SandboxProvider::leak`]) are not touched.
/// Snapshot layers are kept: by the [`VmProvider::snapshot`] contract they outlive the provider
/// and its process (a later `ignis run --resume` restores them), so only
/// [`VmProvider::remove_snapshot`] deletes them; whoever records the ids owns that.
impl Drop for Inner {
    fn drop(&mut self) {
        let live = match self.live.get_mut() {
            Ok(m) => std::mem::take(m),
            Err(p) => std::mem::take(p.into_inner()),
        };
        for (id, l) in live {
            if let Err(e) = stop_live(&id, l) {
                tracing::warn!(vm = %id, error = %chain(&e), "releasing sandbox on drop failed");
            }
        }
    }
}

impl Inner {
    /// Where snapshot layers live: `<state_dir>/snapshots` (see the `snapshot` module).
    fn snapshot_store(&self) -> PathBuf {
        self.config.state_dir.join("snapshots")
    }

    /// A vm id unique in this process (one counter for every provider) that names its owner:
    /// `sbx-<pid>-<start time>-<n>`. The session's cgroup dirs carry this name, so whatever
    /// a crash leaves before the session manager writes its record can still be traced to a
    /// dead owner and swept ([`VmProvider::reap_leftovers`]). The counter starts at a clock
    /// value so ids of one process stay unlikely to repeat even across providers.
    fn new_id(&self) -> String {
        static NEXT: OnceLock<AtomicU64> = OnceLock::new();
        let next = NEXT.get_or_init(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            AtomicU64::new((t & 0xff_ffff) << 8)
        });
        let n = next.fetch_add(1, Ordering::Relaxed);
        let (pid, start) = owner();
        format!("sbx-{pid}-{start}-{n:x}")
    }

    fn warn_cgroups_once(&self) {
        if self.cgroups_missing.is_empty() {
            return;
        }
        self.warned.call_once(|| {
            if self.root {
                tracing::warn!(
                    missing = ?self.cgroups_missing,
                    "no usable cgroup controller for these limits; sandboxes run without them"
                );
            } else {
                tracing::warn!("not running as root: sandboxes run without cgroup limits");
            }
        });
    }

    fn launch(
        &self,
        spec: &VmSpec,
        chain: snapshot::Chain,
        init: Init,
    ) -> Result<Launched, SandboxError> {
        let snapshot::Chain {
            layers,
            locks: layer_locks,
        } = chain;
        let started = Instant::now();
        self.warn_cgroups_once();
        if !spec.image.is_dir() {
            return Err(SandboxError::Image(spec.image.clone()));
        }
        let id = self.new_id();
        let state = &self.config.state_dir;
        let scratch = state.join("mnt");
        let scratch_s = overlay_safe(&scratch)?;
        let snap_root = state.join("snapshots");

        // Layer paths, newest first, then the base image.
        let mut layer_paths: Vec<PathBuf> = layers
            .iter()
            .map(|l| snap_root.join(l).join("layer"))
            .collect();
        layer_paths.push(spec.image.clone());

        let agent_file = match &init {
            Init::Agent => {
                let path = self
                    .config
                    .agent_bin
                    .clone()
                    .map_or_else(ignis_agent::agent_binary_path, Ok)
                    .map_err(SandboxError::AgentMissing)?;
                let f = std::fs::File::open(&path).map_err(|source| SandboxError::AgentOpen {
                    path: path.clone(),
                    source,
                })?;
                Some(OwnedFd::from(f))
            }
            Init::Command(_) => None,
        };
        if spec.network == NetworkPolicy::User && find_in_path("pasta").is_none() {
            return Err(SandboxError::PastaMissing);
        }

        let mut guard = LaunchGuard {
            cgroup: None,
            child: None,
            pasta: None,
        };
        if !self.cgroups.is_empty() {
            let limits = Limits::from_spec(spec);
            let cg = self
                .cgroups
                .create(&id, &limits)
                .map_err(|source| SandboxError::Cgroup {
                    id: id.clone(),
                    source,
                })?;
            guard.cgroup = Some(cg);
        }

        // Lower layers: idmapped detached clones (root) or plain paths (unprivileged).
        let mut lower_fds = Vec::new();
        let mut lower_opts = Vec::new();
        let mut lowers = Vec::new();
        for (i, p) in layer_paths.iter().enumerate() {
            if self.root {
                let fd = rustix::mount::open_tree(
                    rustix::fs::CWD,
                    p.as_path(),
                    rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                        | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC,
                )
                .map_err(|e| SandboxError::OpenTree {
                    path: p.clone(),
                    source: e.into(),
                })?;
                let mp = format!("{scratch_s}/l{i}");
                lowers.push(Lower::Fd {
                    fd: fd.as_raw_fd(),
                    mountpoint: cstring(mp.clone(), "path")?,
                });
                lower_opts.push(mp);
                lower_fds.push(fd);
            } else {
                lowers.push(Lower::Path);
                lower_opts.push(overlay_safe(p)?);
            }
        }

        let (ctl_host, ctl_child) =
            UnixStream::pair().map_err(|e| SandboxError::Channel("control", e))?;
        let (chan_host, chan_child) =
            UnixStream::pair().map_err(|e| SandboxError::Channel("agent", e))?;
        let (err_read, err_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| SandboxError::Channel("stderr", e.into()))?;

        // The upper layer (root mode): a tmpfs the host makes and keeps an fd of, idmapped like
        // the lowers but writable, attached by the child at `<scratch>/u`.
        let upper_mount = if self.root {
            Some(make_upper(spec.disk_mib).map_err(SandboxError::Upper)?)
        } else {
            None
        };
        if let Some((_, clone)) = &upper_mount {
            lowers.push(Lower::Fd {
                fd: clone.as_raw_fd(),
                mountpoint: cstring(format!("{scratch_s}/u"), "path")?,
            });
        }

        let fresh = layers.is_empty();
        let plan = self.plan(PlanInput {
            id: &id,
            scratch_s: &scratch_s,
            host_upper: upper_mount.is_some(),
            lowers,
            lower_opts: &lower_opts,
            fresh,
            disk_mib: spec.disk_mib,
            network: spec.network,
            ctl: ctl_child.as_raw_fd(),
            stdio: chan_child.as_raw_fd(),
            stderr: err_write.as_raw_fd(),
            init: &init,
            agent_fd: agent_file.as_ref().map(|f| f.as_raw_fd()),
        })?;
        let args = ExecArgs::new(&plan);

        let mut flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC;
        if spec.network != NetworkPolicy::Host {
            flags |= libc::CLONE_NEWNET;
        }
        let cloned = sys::clone_sandbox_child(flags as u64, &(&plan, &args));
        let cloned = cloned.map_err(|e| match e.raw_os_error() {
            Some(errno @ (libc::EPERM | libc::ENOSPC | libc::EACCES | libc::EUSERS)) => {
                SandboxError::UserNamespaces(userns_diagnosis(errno, |k| {
                    std::fs::read_to_string(Path::new("/proc/sys").join(k)).ok()
                }))
            }
            _ => SandboxError::Clone(e),
        })?;
        let pid = cloned.pid;
        guard.child = Some(cloned);
        drop(ctl_child);
        drop(chan_child);
        drop(err_write);

        // Uid/gid maps: a private 65536-id range (root) or our own id (unprivileged).
        let uid_base = if self.root {
            let slot =
                self.next_slot.fetch_add(1, Ordering::Relaxed) % self.config.uid_slots.max(1);
            let base = self
                .config
                .uid_base
                .saturating_add(slot.saturating_mul(ID_RANGE));
            let map = format!("0 {base} {ID_RANGE}\n");
            write_proc(pid, "uid_map", &map)?;
            write_proc(pid, "gid_map", &map)?;
            Some(base)
        } else {
            let uid = rustix::process::getuid().as_raw();
            let gid = rustix::process::getgid().as_raw();
            write_proc(pid, "setgroups", "deny")?;
            write_proc(pid, "uid_map", &format!("0 {uid} 1\n"))?;
            write_proc(pid, "gid_map", &format!("0 {gid} 1\n"))?;
            None
        };
        if let Some(cg) = &guard.cgroup {
            cg.attach(pid).map_err(SandboxError::CgroupAttach)?;
        }
        pause_allocation_for_tests();
        if !lower_fds.is_empty() || upper_mount.is_some() {
            let userns = sys::open_userns(pid).map_err(SandboxError::OpenUserns)?;
            for (fd, p) in lower_fds.iter().zip(&layer_paths) {
                sys::mount_setattr_idmap(fd.as_fd(), userns.as_fd()).map_err(|source| {
                    SandboxError::Idmap {
                        path: p.clone(),
                        source,
                    }
                })?;
            }
            if let Some((_, clone)) = &upper_mount {
                sys::mount_setattr_idmap_writable(clone.as_fd(), userns.as_fd()).map_err(
                    |source| SandboxError::Idmap {
                        path: PathBuf::from("<session upper>"),
                        source,
                    },
                )?;
            }
        }
        let start_time = process_start_time(pid).unwrap_or(0);

        // Go, then wait for READY + the scratch fd, then EOF (exec closed the socket).
        ctl_host
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(SandboxError::Control)?;
        io::Write::write_all(&mut &ctl_host, &[1]).map_err(SandboxError::Control)?;
        let mut scratch_fd = None;
        loop {
            match sys::recv_record(ctl_host.as_fd()).map_err(SandboxError::Control)? {
                None => break,
                Some((sys::READY, _, fd)) => scratch_fd = fd,
                Some((step, errno, _)) => {
                    let source = io::Error::from_raw_os_error(errno);
                    return Err(match Step::from_u32(step) {
                        Some(Step::MountOverlay) if !self.root && errno == libc::EINVAL => {
                            SandboxError::UnprivilegedImage(spec.image.clone())
                        }
                        Some(step) => SandboxError::Child { step, source },
                        None => SandboxError::Control(source),
                    });
                }
            }
        }
        let scratch_fd = scratch_fd.ok_or(SandboxError::ChildVanished)?;
        drop(lower_fds);
        // The attached clone lives on in the child's mount namespace; keep the original.
        let upper_mount = upper_mount.map(|(orig, _clone)| orig);

        if spec.network == NetworkPolicy::User {
            let cg = guard.cgroup.as_ref();
            guard.pasta = Some(start_pasta(&self.config.state_dir, &id, pid, uid_base, cg)?);
        }

        let Some(cloned) = guard.child.take() else {
            return Err(SandboxError::ChildVanished);
        };
        let cgroup = guard.cgroup.take().unwrap_or_default();
        let pasta = guard.pasta.take();
        let record = VmRecord {
            backend: Some(Backend::Sandbox),
            id: id.clone(),
            processes: std::iter::once((pid, start_time)).chain(pasta).collect(),
            mounts: Vec::new(),
            cgroups: cgroup.dirs.clone(),
            paths: Vec::new(),
        };
        let live = Live {
            pid,
            pidfd: cloned.pidfd,
            cgroup,
            scratch: scratch_fd,
            upper_mount,
            uid_base,
            layers,
            layer_locks,
            disk_mib: spec.disk_mib,
            broken: false,
            image: spec.image.clone(),
            pasta,
        };
        match self.live.lock() {
            Ok(mut m) => {
                m.insert(id.clone(), live);
            }
            Err(_) => {
                let _ = stop_live(&id, live);
                return Err(SandboxError::Control(io::Error::other(
                    "state lock poisoned",
                )));
            }
        }
        Ok(Launched {
            id: VmId(id),
            channel: chan_host,
            stderr: err_read,
            record,
            pid,
            elapsed: started.elapsed(),
        })
    }

    fn plan(&self, p: PlanInput<'_>) -> Result<ChildPlan, SandboxError> {
        let s = p.scratch_s;
        let c = |x: String| cstring(x, "path");
        let root = format!("{s}/root");
        let (upper, work) = if p.host_upper {
            (format!("{s}/u/upper"), format!("{s}/u/work"))
        } else {
            (format!("{s}/upper"), format!("{s}/work"))
        };
        let mut scratch_dirs = vec![c(root.clone())?];
        if !p.host_upper {
            scratch_dirs.push(c(upper.clone())?);
            scratch_dirs.push(c(work.clone())?);
        }
        for l in &p.lowers {
            if let Lower::Fd { mountpoint, .. } = l {
                scratch_dirs.push(mountpoint.clone());
            }
        }
        // Upper skeleton: mount points always; masks and the GitHub layout only on a fresh
        // sandbox (a snapshot layer already carries them, and re-masking would hide it).
        let mut upper_dirs = vec![
            (c(format!("{upper}/dev"))?, 0o755, false),
            (c(format!("{upper}/proc"))?, 0o555, false),
            (c(format!("{upper}/sys"))?, 0o555, false),
        ];
        if p.fresh {
            for (d, mode, opaque) in [
                ("tmp", 0o1777, true),
                ("run", 0o755, true),
                ("root", 0o700, true),
                ("home", 0o755, true),
                ("home/runner", 0o755, false),
                ("home/runner/work", 0o755, false),
                ("home/runner/work/_temp", 0o755, false),
                ("opt", 0o755, false),
                ("opt/hostedtoolcache", 0o755, false),
            ] {
                upper_dirs.push((c(format!("{upper}/{d}"))?, mode, opaque));
            }
        }
        let size = if p.disk_mib > 0 {
            format!(",size={}m", p.disk_mib)
        } else {
            String::new()
        };
        let dev = format!("{root}/dev");
        let dev_nodes = ["null", "zero", "full", "random", "urandom", "tty"]
            .iter()
            .map(|n| Ok((c(format!("{dev}/{n}"))?, c(format!("/dev/{n}"))?)))
            .collect::<Result<Vec<_>, SandboxError>>()?;
        let dev_links = [
            ("pts/ptmx", "ptmx"),
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ]
        .iter()
        .map(|(t, l)| Ok((c((*t).to_owned())?, c(format!("{dev}/{l}"))?)))
        .collect::<Result<Vec<_>, SandboxError>>()?;
        let (exec, argv) = match p.init {
            Init::Agent => match p.agent_fd {
                Some(fd) => (
                    Exec::Fd(fd),
                    vec![c("ignis-agent".into())?, c("--stdio".into())?],
                ),
                None => return Err(SandboxError::Nul("agent fd")),
            },
            Init::Command(argv) => {
                let first = argv
                    .first()
                    .ok_or(SandboxError::Nul("empty init command"))?;
                let v = argv
                    .iter()
                    .map(|a| cstring(a.as_bytes(), "init argument"))
                    .collect::<Result<Vec<_>, _>>()?;
                (Exec::Path(cstring(first.as_bytes(), "init command")?), v)
            }
        };
        let envp = vec![
            c("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())?,
            c("HOME=/root".into())?,
            c(format!("IGNIS_VM_ID={}", p.id))?,
        ];
        Ok(ChildPlan {
            ctl: p.ctl,
            stdio: p.stdio,
            stderr: p.stderr,
            setgroups: self.root,
            hostname: cstring(p.id, "vm id")?,
            scratch: c(s.to_owned())?,
            scratch_opts: c(format!("mode=755{size}"))?,
            scratch_dirs,
            lowers: p.lowers,
            upper_dirs,
            overlay_target: c(root.clone())?,
            overlay_opts: c(format!(
                "lowerdir={},upperdir={upper},workdir={work},userxattr",
                p.lower_opts.join(":")
            ))?,
            proc_dir: c(format!("{root}/proc"))?,
            dev_dir: c(dev.clone())?,
            dev_nodes,
            pts_dir: c(format!("{dev}/pts"))?,
            shm_dir: c(format!("{dev}/shm"))?,
            dev_links,
            sys_dir: c(format!("{root}/sys"))?,
            loopback: p.network != NetworkPolicy::Host,
            exec,
            argv,
            envp,
        })
    }
}

struct PlanInput<'a> {
    id: &'a str,
    scratch_s: &'a str,
    /// The upper is the host-made tmpfs attached at `<scratch>/u` (root mode).
    host_upper: bool,
    lowers: Vec<Lower>,
    lower_opts: &'a [String],
    fresh: bool,
    disk_mib: u64,
    network: NetworkPolicy,
    ctl: i32,
    stdio: i32,
    stderr: i32,
    init: &'a Init,
    agent_fd: Option<i32>,
}

/// The session's upper layer as a detached tmpfs (`size` = `disk_mib`, 0 = the kernel's default
/// of half the RAM) holding `upper/` and `work/`, and a clone of it to idmap and hand to the
/// child. Nothing of it is attached on the host: it lives as long as the fd or the sandbox's
/// overlay does. Why the host makes it (and not the child, inside the sandbox): its files get
/// image-relative owners through the idmapped clone, and the host can reach it by fd.
fn make_upper(disk_mib: u64) -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, OpenTreeFlags, fsconfig_create,
        fsconfig_set_string, fsmount, fsopen, open_tree,
    };
    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_set_string(fs.as_fd(), "mode", "755")?;
    if disk_mib > 0 {
        fsconfig_set_string(fs.as_fd(), "size", format!("{disk_mib}m"))?;
    }
    fsconfig_create(fs.as_fd())?;
    let mnt = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )?;
    for d in ["upper", "work"] {
        rustix::fs::mkdirat(mnt.as_fd(), d, rustix::fs::Mode::from_raw_mode(0o755))?;
    }
    let clone = open_tree(
        mnt.as_fd(),
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )?;
    Ok((mnt, clone))
}

fn write_proc(pid: u32, file: &'static str, content: &str) -> Result<(), SandboxError> {
    std::fs::write(format!("/proc/{pid}/{file}"), content)
        .map_err(|source| SandboxError::IdMap { file, source })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// pasta's options: configure the namespace's interface, and forward nothing but the
/// namespace's own outbound traffic. The defaults would undo the isolation: `-T auto` binds
/// every port the host listens on (loopback included) inside the namespace and forwards it to
/// the host, `-t`/`-u auto` expose the sandbox's listeners on the host, and without
/// `--no-map-gw` a connection to the gateway address lands on the host's loopback. With these,
/// the sandbox reaches what any other host on the network could reach, and the host's
/// loopback-only services stay out of reach.
///
/// The namespace gets its own IPv4 address, 10.0.2.15/24 behind gateway 10.0.2.2 (QEMU's
/// user-network convention), instead of pasta's default copy of the host's address: with the
/// copy, the host's own address is local inside the namespace, so services on the host's
/// network address would be unreachable from the sandbox. pasta proxies at layer 4, so the
/// address never appears outside. (Checked against passt 2023-03-09, Debian bookworm; the
/// options exist in every later version.)
const PASTA_ARGS: [&str; 17] = [
    "--config-net",
    "--quiet",
    "--no-map-gw",
    "-a",
    "10.0.2.15",
    "-n",
    "24",
    "-g",
    "10.0.2.2",
    "-t",
    "none",
    "-u",
    "none",
    "-T",
    "none",
    "-U",
    "none",
];

/// Connects the sandbox's network namespace to the outside with pasta (user-mode networking)
/// and returns the daemon's (pid, start time) once the namespace is configured (pasta forks
/// into the background only then).
///
/// pasta does not exit when the namespace's processes die, so the sandbox owns it: it joins
/// the session's cgroups before exec (a cgroup kill or a crash sweep takes it along), its
/// identity goes into the [`VmRecord`], and release kills it.
///
/// Privilege: running as root, pasta runs as host root (`--runas 0`) and joins the sandbox's
/// user and network namespaces by PID; after setup it confines itself (its own empty mount
/// namespace, no capabilities, a seccomp filter). Dropping to the sandbox's own id range before
/// exec (setns into its user namespace as its root) was tried: pasta then cannot open the
/// sandbox's `/proc/PID/ns/net` (ptrace rules; an inherited fd works around that) nor a
/// root-only `/dev/net/tun` (mode 0600 on this project's CI host), and keeping host root's ids
/// inside the namespace loses every capability at exec, so that mode could not be tested
/// here and is not used.
fn start_pasta(
    state_dir: &Path,
    id: &str,
    pid: u32,
    uid_base: Option<u32>,
    cgroup: Option<&SessionCgroup>,
) -> Result<(u32, u64), SandboxError> {
    let pasta = |e: io::Error| SandboxError::Pasta(e);
    // The pid file is created here and removed at once.
    let pidfile = state_dir.join(format!("pasta-{id}.pid"));
    let _ = std::fs::remove_file(&pidfile);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&pidfile)
        .map_err(pasta)?;
    // Ours (pasta keeps our ids): pasta drops CAP_DAC_OVERRIDE before it opens the file.
    drop(file);
    let result = (|| {
        let mut cmd = std::process::Command::new("pasta");
        // No environment: pasta needs none, and ours (LD_LIBRARY_PATH, ...) is not its business.
        cmd.env_clear().args(PASTA_ARGS).arg("-P").arg(&pidfile);
        let mut procs = Vec::new();
        for d in cgroup.map(|c| c.dirs.as_slice()).unwrap_or_default() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))
                .map_err(pasta)?;
            procs.push(OwnedFd::from(f));
        }
        if uid_base.is_some() {
            // As root pasta would switch to `nobody` before joining the namespaces, and
            // `nobody` may not join them (nor open a root-only /dev/net/tun).
            cmd.args(["--runas", "0"]);
        }
        cmd.arg(pid.to_string());
        sys::pre_exec_join_cgroups(&mut cmd, procs);
        // pasta's daemon points its stdio at /dev/null, so stderr reaches EOF when the
        // foreground process exits.
        let out = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(pasta)?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(pasta(io::Error::other(format!(
                "pasta exited with {}: {msg}",
                out.status
            ))));
        }
        let text = std::fs::read_to_string(&pidfile).map_err(pasta)?;
        let daemon: u32 = text.trim().parse().map_err(|_| {
            pasta(io::Error::other(format!(
                "pasta wrote no pid to {}",
                pidfile.display()
            )))
        })?;
        let start = process_start_time(daemon).ok_or_else(|| {
            pasta(io::Error::other(format!(
                "pasta daemon {daemon} exited at once"
            )))
        })?;
        Ok((daemon, start))
    })();
    let _ = std::fs::remove_file(&pidfile);
    result
}

/// SIGKILLs a host helper process that is not our child (pasta is reparented when it forks
/// into the background) and waits, bounded, until it is gone.
fn stop_helper(pid: u32, start: u64) -> io::Result<()> {
    if kill_if_same(pid, start)? {
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_running(pid, start) {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("helper process {pid} survived SIGKILL"),
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

/// Kills PID 1 (and so the whole pid namespace), reaps it, removes the cgroups.
fn stop_live(id: &str, live: Live) -> Result<(), SandboxError> {
    let stop = |source| SandboxError::Stop {
        id: id.to_owned(),
        source,
    };
    match sys::pidfd_signal(live.pidfd.as_fd(), libc::SIGKILL) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => return Err(stop(e)),
    }
    sys::waitid_pidfd(live.pidfd.as_fd(), false).map_err(stop)?;
    if let Some((pid, start)) = live.pasta {
        stop_helper(pid, start).map_err(stop)?;
    }
    drop(live.scratch);
    live.cgroup
        .remove()
        .map_err(|source| SandboxError::CgroupRemove {
            id: id.to_owned(),
            source,
        })?;
    tracing::debug!(vm = id, pid = live.pid, "sandbox stopped");
    Ok(())
}

#[async_trait::async_trait]
impl VmProvider for SandboxProvider {
    fn backend(&self) -> Backend {
        Backend::Sandbox
    }

    async fn allocate(&self, spec: &VmSpec) -> Result<Vm, VmError> {
        self.allocate_on(spec, None).await
    }

    async fn release(&self, vm: &Vm) -> Result<(), VmError> {
        self.stop(&vm.id).await
    }

    async fn snapshot(&self, vm: &Vm, name: &str) -> Result<SnapshotId, VmError> {
        let inner = self.inner.clone();
        let id = vm.id.0.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || snapshot::take(&inner, &id, &name))
            .await
            .map_err(|e| VmError::Snapshot {
                op: "create",
                reason: e.to_string(),
            })?
            .map_err(|e| VmError::Snapshot {
                op: "create",
                reason: chain(&e),
            })
    }

    /// Works from any provider on the same `state_dir`, in this process or a later one: the
    /// chain is read from the manifests in the store.
    async fn restore(&self, snapshot: &SnapshotId, spec: &VmSpec) -> Result<Vm, VmError> {
        self.allocate_on(spec, Some(snapshot)).await
    }

    /// Refuses while a sandbox (of any ignis process) runs on the layer, or while another
    /// snapshot is built on it (the error names them: remove the newest first).
    async fn remove_snapshot(&self, snapshot: &SnapshotId) -> Result<(), VmError> {
        let store = self.inner.snapshot_store();
        let name = snapshot.0.clone();
        tokio::task::spawn_blocking(move || snapshot::remove(&store, &name))
            .await
            .map_err(|e| VmError::Snapshot {
                op: "remove",
                reason: e.to_string(),
            })?
            .map_err(|e| VmError::Snapshot {
                op: "remove",
                reason: chain(&e),
            })
    }

    /// Sweeps what dead ignis processes left without a record: session cgroups (named
    /// `sbx-<pid>-<start>-<n>` after their owner; what is still inside is killed, `pasta`
    /// included), hidden snapshot work dirs (`.<name>.<pid>-<start>.tmp` / `.removing`) and
    /// `pasta-<vm id>.pid` files. Nothing else of a sandbox exists on the host: its scratch
    /// tmpfs lives in its own mount namespace, and its processes die with PID 1, which exits
    /// when its channel to the dead owner closes.
    async fn reap_leftovers(&self) -> Result<Vec<String>, VmError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let dead = |name: &str| {
                owner_of_id(name).is_some_and(|(pid, start)| !process_running(pid, start))
            };
            let mut out: Vec<String> = cgroup::sweep(&inner.cgroups.parents(), dead)
                .into_iter()
                .map(|p| format!("cgroup {}", p.display()))
                .collect();
            out.extend(
                snapshot::sweep(&inner.snapshot_store())
                    .into_iter()
                    .map(|p| format!("snapshot work dir {}", p.display())),
            );
            // pasta pid files live for the few milliseconds of a launch.
            for e in std::fs::read_dir(&inner.config.state_dir)
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(id) = name
                    .strip_prefix("pasta-")
                    .and_then(|n| n.strip_suffix(".pid"))
                else {
                    continue;
                };
                if dead(id) && std::fs::remove_file(e.path()).is_ok() {
                    out.push(format!("pasta pid file {}", e.path().display()));
                }
            }
            out
        })
        .await
        .map_err(|e| VmError::Io {
            context: "sweeping sandbox leftovers".into(),
            source: io::Error::other(e),
        })
    }

    async fn reap(&self, record: &VmRecord) -> Result<(), VmError> {
        let record = record.clone();
        tokio::task::spawn_blocking(move || reap_record(&record))
            .await
            .map_err(|e| VmError::Io {
                context: "reap".into(),
                source: io::Error::other(e),
            })?
    }
}

impl SandboxProvider {
    async fn allocate_on(&self, spec: &VmSpec, from: Option<&SnapshotId>) -> Result<Vm, VmError> {
        let launched = self
            .launch(spec, from, Init::Agent)
            .await
            .map_err(|e| match e {
                SandboxError::Snapshot(reason) => VmError::Snapshot {
                    op: "restore",
                    reason,
                },
                SandboxError::UserNamespaces(_)
                | SandboxError::PastaMissing
                | SandboxError::AgentMissing(_) => VmError::Unavailable {
                    backend: Backend::Sandbox,
                    reason: chain(&e),
                },
                e => VmError::Allocate {
                    backend: Backend::Sandbox,
                    vm_type: spec.vm_type.clone(),
                    reason: chain(&e),
                },
            })?;
        let id = launched.id.clone();
        let agent = match agent_client(launched.channel, launched.stderr, &id) {
            Ok(a) => a,
            Err(e) => {
                let _ = self.stop(&id).await;
                return Err(VmError::Io {
                    context: format!("agent channel of {id}"),
                    source: e,
                });
            }
        };
        Ok(Vm {
            id,
            vm_type: spec.vm_type.clone(),
            backend: Backend::Sandbox,
            allocation_time: launched.elapsed,
            agent,
            record: launched.record,
        })
    }
}

/// Wraps PID 1's channel in an [`ignis_agent::AgentClient`] and forwards its stderr to tracing.
fn agent_client(
    channel: UnixStream,
    stderr: OwnedFd,
    id: &VmId,
) -> io::Result<ignis_agent::AgentClient> {
    channel.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(channel)?;
    let (r, w) = stream.into_split();
    let err = tokio::net::unix::pipe::Receiver::from_owned_fd(stderr)?;
    let id = id.0.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(err).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "ignis_vm::sandbox::agent", vm = %id, "{line}");
        }
    });
    Ok(ignis_agent::AgentClient::new(r, w))
}

/// Releases what a sandbox of a dead ignis process left: kills its PID 1 if (pid, start time)
/// still match (the namespace dies with it), then removes its cgroups and paths.
fn reap_record(record: &VmRecord) -> Result<(), VmError> {
    let err = |context: String, source| VmError::Io { context, source };
    for (pid, start) in &record.processes {
        if kill_if_same(*pid, *start).map_err(|e| err(format!("killing pid {pid}"), e))? {
            // Wait (bounded) for it to go away; it is not our child, so poll /proc.
            let deadline = Instant::now() + Duration::from_secs(5);
            while process_running(*pid, *start) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    for m in &record.mounts {
        if let Err(e) = rustix::mount::unmount(m.as_path(), rustix::mount::UnmountFlags::DETACH)
            && e != rustix::io::Errno::INVAL
            && e != rustix::io::Errno::NOENT
        {
            return Err(err(format!("detaching {}", m.display()), e.into()));
        }
    }
    cgroup::remove_dirs(&record.cgroups).map_err(|e| err("removing cgroups".into(), e))?;
    for p in &record.paths {
        remove_path(p).map_err(|e| err(format!("removing {}", p.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnosis_names_the_setting() {
        let r = |k: &str, v: &'static str| {
            let k = k.to_owned();
            move |q: &str| (q == k).then(|| v.to_owned())
        };
        assert!(
            userns_diagnosis(libc::EPERM, r("user/max_user_namespaces", "0\n"))
                .contains("user.max_user_namespaces")
        );
        assert!(
            userns_diagnosis(libc::EPERM, r("kernel/unprivileged_userns_clone", "0"))
                .contains("kernel.unprivileged_userns_clone")
        );
        assert!(
            userns_diagnosis(
                libc::EACCES,
                r("kernel/apparmor_restrict_unprivileged_userns", "1")
            )
            .contains("kernel.apparmor_restrict_unprivileged_userns")
        );
        assert!(userns_diagnosis(libc::ENOSPC, |_| None).contains("max_user_namespaces"));
    }

    #[test]
    fn vm_ids_name_their_owner() {
        let (pid, start) = owner();
        assert_eq!(pid, std::process::id());
        assert!(start > 0);
        assert_eq!(
            owner_of_id(&format!("sbx-{pid}-{start}-1a")),
            Some((pid, start))
        );
        assert_eq!(owner_of_id("sbx-12-34-ff"), Some((12, 34)));
        // Other forms (an older ignis' `sbx-<pid>-<n>`, foreign groups) are never claimed.
        for other in [
            "sbx-12-ff",
            "sbx-12-34-ff-1",
            "sbx-12-34-",
            "sbx-x-34-1",
            "user.slice",
            "sbx-12-34-zz",
        ] {
            assert_eq!(owner_of_id(other), None, "{other}");
        }
    }

    #[test]
    fn overlay_paths_refuse_separators() {
        assert!(overlay_safe(Path::new("/a,b")).is_err());
        assert!(overlay_safe(Path::new("/a:b")).is_err());
        assert_eq!(
            overlay_safe(Path::new("/a/b")).ok().as_deref(),
            Some("/a/b")
        );
    }
}
