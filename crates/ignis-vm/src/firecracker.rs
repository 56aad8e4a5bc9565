//! The Firecracker backend: one `firecracker` process (optionally under `jailer`) per VM,
//! configured through its REST API on a Unix socket, the agent reached over hybrid vsock,
//! snapshots for fast allocation and a warm pool of restored clones.
//!
//! Every host resource a VM holds lives in a [`Machine`] whose `Drop` kills the process and
//! deletes its directory, so every failure path (a fault from the API, an agent that never
//! connects, a refill that fails halfway) leaks nothing. See `docs/firecracker.md`.

pub mod api;
pub mod host;
pub mod jailer;
pub mod models;

/// Swagger 2.0 -> JSON Schema conversion of `firecracker.yaml` (test support).
#[cfg(feature = "fake-firecracker")]
pub mod spec;

/// The fake Firecracker API server behind the `fake-firecracker` binary (test support).
#[cfg(feature = "fake-firecracker")]
pub mod fake_server;

use crate::image::GuestImage;
use crate::provider::{
    Backend, NetworkPolicy, SnapshotId, Vm, VmError, VmId, VmProvider, VmRecord, VmSpec,
};
use api::{ApiClient, ApiError};
use ignis_agent::AgentClient;
use jailer::{JailerConfig, PathMap};
use models::*;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

/// Guest CID of every VM: each VM has its own vsock device, so the CID need not be unique.
const GUEST_CID: u32 = 3;
/// Longest Unix socket path (`sun_path` is 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How the backend finds and drives Firecracker.
#[derive(Debug, Clone)]
pub struct FirecrackerConfig {
    /// The `firecracker` binary (`IGNIS_FIRECRACKER_BIN`).
    pub firecracker_bin: PathBuf,
    /// Run under `jailer` when set.
    pub jailer: Option<JailerConfig>,
    /// Uncompressed ELF `vmlinux` (`IGNIS_FIRECRACKER_KERNEL`).
    pub kernel: PathBuf,
    /// Initramfs booted with the kernel (`IGNIS_FIRECRACKER_INITRD`, or a guest image's).
    /// With one, the rootfs drive is optional: it is attached only when `VmSpec::image`
    /// names an existing rootfs file.
    pub initrd: Option<PathBuf>,
    /// Kernel command line: the agent is the guest's init and listens on `agent_port`.
    pub boot_args: String,
    /// Where image names (`VmSpec::image` that is not a file) resolve: `<dir>/<name>.ext4`.
    pub images_dir: PathBuf,
    /// Per-VM directories, snapshots and the drive slot live here.
    pub state_dir: PathBuf,
    /// Guest vsock port the agent listens on.
    pub agent_port: u32,
    /// Bound on every API call.
    pub api_timeout: Duration,
    /// Bound on the API socket appearing after the process starts.
    pub socket_timeout: Duration,
    /// Bound on the guest agent accepting a connection after boot or restore.
    pub agent_timeout: Duration,
    /// How long release waits after `SendCtrlAltDel` before killing the process.
    pub shutdown_grace: Duration,
    /// Warm pool size per VM type (profile name); 0 or absent = no pool.
    pub pool_sizes: HashMap<String, usize>,
    /// Run each process in a private mount namespace with its disk bind-mounted on one fixed
    /// path, so snapshots (which record the drive path) restore onto each clone's own disk.
    /// Needs root; the jailer's chroot does the same when configured.
    pub private_mount_ns: bool,
}

impl FirecrackerConfig {
    /// Defaults with paths from `IGNIS_FIRECRACKER_BIN`, `IGNIS_FIRECRACKER_KERNEL`,
    /// `IGNIS_FIRECRACKER_IMAGES`; state under `state_dir`.
    pub fn from_env(state_dir: impl Into<PathBuf>) -> Self {
        let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
        let state_dir = state_dir.into();
        Self {
            firecracker_bin: env("IGNIS_FIRECRACKER_BIN").unwrap_or_else(|| "firecracker".into()),
            jailer: None,
            kernel: env("IGNIS_FIRECRACKER_KERNEL").unwrap_or_else(|| state_dir.join("vmlinux")),
            initrd: env("IGNIS_FIRECRACKER_INITRD"),
            boot_args: format!(
                "console=ttyS0 reboot=k panic=1 pci=off random.trust_cpu=on init=/usr/local/bin/ignis-agent -- --vsock-port {}",
                DEFAULT_AGENT_PORT
            ),
            images_dir: env("IGNIS_FIRECRACKER_IMAGES").unwrap_or_else(|| state_dir.join("images")),
            state_dir,
            agent_port: DEFAULT_AGENT_PORT,
            api_timeout: Duration::from_secs(5),
            socket_timeout: Duration::from_secs(5),
            agent_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_millis(500),
            pool_sizes: HashMap::new(),
            private_mount_ns: rustix::process::geteuid().is_root(),
        }
    }

    /// [`FirecrackerConfig::from_env`] booting a guest image built by `ignis image build`:
    /// its ELF `vmlinux` and its initramfs, whose `/init` starts the agent on the vsock port
    /// the command line names (`ignis.transport=vsock:PORT`), so no rootfs is needed.
    pub fn from_image(state_dir: impl Into<PathBuf>, image: &GuestImage) -> Result<Self, VmError> {
        let kernel = image.vmlinux().ok_or_else(|| VmError::Unavailable {
            backend: Backend::Firecracker,
            reason: format!(
                "guest image {} has no ELF vmlinux (extraction from vmlinuz failed when it was built)",
                image.manifest.key
            ),
        })?;
        let mut c = Self::from_env(state_dir);
        c.kernel = kernel;
        c.initrd = Some(image.initrd());
        c.boot_args = image_boot_args(c.agent_port);
        Ok(c)
    }

    /// The configuration `ignis run` uses: [`FirecrackerConfig::from_env`] when
    /// `IGNIS_FIRECRACKER_KERNEL` is set, else [`FirecrackerConfig::from_image`] with the
    /// newest image in `cache` (see [`crate::image::cache_dir`]) that has a `vmlinux`.
    pub fn from_env_or_cache(state_dir: impl Into<PathBuf>, cache: &Path) -> Result<Self, VmError> {
        if std::env::var_os("IGNIS_FIRECRACKER_KERNEL").is_some_and(|k| !k.is_empty()) {
            return Ok(Self::from_env(state_dir));
        }
        let unavailable = |reason: String| VmError::Unavailable {
            backend: Backend::Firecracker,
            reason,
        };
        let images = crate::image::list(cache).map_err(|e| {
            unavailable(format!("listing guest images in {}: {e}", cache.display()))
        })?;
        let image = images
            .iter()
            .find(|i| i.vmlinux().is_some())
            .ok_or_else(|| {
                unavailable(format!(
                    "no guest image with a vmlinux in {} and IGNIS_FIRECRACKER_KERNEL is not set; run `ignis image build` first",
                    cache.display()
                ))
            })?;
        Self::from_image(state_dir, image)
    }
}

impl FirecrackerConfig {
    /// Apply the `[profiles.NAME.firecracker]` tables of `profiles` on top of this
    /// env/cache config. One provider serves every profile, so the process-wide settings
    /// (binary, jailer) come from the first profile in file order whose backend is
    /// firecracker and that sets them; an explicit profile value wins over
    /// `IGNIS_FIRECRACKER_BIN`, which stays the fallback. `pool-size` is per profile: it sizes
    /// the warm pool of that profile's VM type (its name).
    pub fn apply_profiles(&mut self, profiles: &crate::profile::ProfileConfig) {
        let fc_profiles = profiles
            .profiles
            .iter()
            .filter(|(_, p)| p.backend == Backend::Firecracker)
            .filter_map(|(name, p)| p.firecracker.as_ref().map(|f| (name, f)));
        let mut binary_set = false;
        let mut jailer_set = false;
        for (name, f) in fc_profiles {
            if let (false, Some(bin)) = (binary_set, &f.binary) {
                self.firecracker_bin.clone_from(bin);
                binary_set = true;
            }
            if let (false, Some(j)) = (jailer_set, &f.jailer) {
                self.jailer = Some(JailerConfig {
                    bin: j.binary.clone(),
                    uid: j.uid,
                    gid: j.gid,
                    chroot_base: j.chroot_base.clone(),
                    netns: j.netns.clone(),
                    new_pid_ns: j.new_pid_ns,
                    cgroups: j.cgroups.clone(),
                });
                jailer_set = true;
            }
            if let Some(size) = f.pool_size {
                self.pool_sizes
                    .insert(name.clone(), usize::try_from(size).unwrap_or(usize::MAX));
            }
        }
    }
}

/// Kernel command line for a guest image's initramfs: serial console, reboot on triple fault
/// (Firecracker exits), panic reboots at once, no PCI probe, and the agent on vsock `port`.
pub fn image_boot_args(port: u32) -> String {
    format!(
        "console=ttyS0 reboot=k panic=1 pci=off random.trust_cpu=on {}=vsock:{port}",
        crate::image::TRANSPORT_PARAM
    )
}

/// Vsock port of the guest agent unless configured otherwise.
pub const DEFAULT_AGENT_PORT: u32 = 1024;

/// The Firecracker provider. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct FirecrackerProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: FirecrackerConfig,
    next: AtomicU64,
    /// Live VMs handed out (or parked in a pool), by id.
    vms: Mutex<HashMap<String, Machine>>,
    pools: Mutex<HashMap<String, Pool>>,
    /// Serializes template builds so concurrent first allocations boot one template.
    template_build: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Pool {
    /// Booted template snapshot clones are restored from.
    template: Option<SnapshotId>,
    /// Spec the pool was built for: a different spec bypasses the pool.
    spec: Option<VmSpec>,
    /// Ready clones (already in `vms`).
    ready: VecDeque<Vm>,
    refilling: bool,
    /// Last refill error, for diagnostics.
    last_error: Option<String>,
}

/// Host resources of one VM. Dropping it kills the process and deletes every path: the
/// cleanup of last resort on every error path.
#[derive(Debug)]
struct Machine {
    id: String,
    dir: PathBuf,
    child: Option<Child>,
    api: ApiClient,
    disk: PathBuf,
    vsock: PathBuf,
    stderr: PathBuf,
    paths: PathMap,
    /// Extra paths to delete (the jail dir).
    extra_paths: Vec<PathBuf>,
    /// Tap device to delete.
    tap: Option<String>,
    record: VmRecord,
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        for (pid, start) in &self.record.processes {
            let _ = host::kill_if_same(*pid, *start);
        }
        if let Some(tap) = self.tap.take() {
            delete_tap(&tap);
        }
        let _ = host::remove_path(&self.dir);
        for p in &self.extra_paths {
            let _ = host::remove_path(p);
        }
    }
}

/// Shared description of a failure on the allocation path.
impl Machine {
    /// An allocation error (with the tail of Firecracker's stderr) when the process has
    /// already exited while we wait for `what`: waiting on would only run into the timeout.
    fn fail_if_exited(&mut self, spec: &VmSpec, what: &str) -> Result<(), VmError> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(alloc_err(
                spec,
                format!(
                    "firecracker exited ({status}) before {what}; stderr: {}",
                    host::tail(&self.stderr, 2048)
                ),
            ));
        }
        Ok(())
    }
}

fn alloc_err(spec: &VmSpec, reason: impl Into<String>) -> VmError {
    VmError::Allocate {
        backend: Backend::Firecracker,
        vm_type: spec.vm_type.clone(),
        reason: reason.into(),
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let context = context.into();
    move |source| VmError::Io { context, source }
}

impl FirecrackerProvider {
    /// A provider with `config`; nothing is started until the first allocation.
    pub fn new(config: FirecrackerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                next: AtomicU64::new(0),
                vms: Mutex::new(HashMap::new()),
                pools: Mutex::new(HashMap::new()),
                template_build: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &FirecrackerConfig {
        &self.inner.config
    }

    /// Number of live VMs this provider holds (handed out plus pooled).
    pub fn live_vms(&self) -> usize {
        lock(&self.inner.vms).len()
    }

    /// Ready clones in the pool of `vm_type`.
    pub fn pool_ready(&self, vm_type: &str) -> usize {
        lock(&self.inner.pools)
            .get(vm_type)
            .map(|p| p.ready.len())
            .unwrap_or(0)
    }

    /// Whether a refill of `vm_type` is running.
    pub fn pool_refilling(&self, vm_type: &str) -> bool {
        lock(&self.inner.pools)
            .get(vm_type)
            .is_some_and(|p| p.refilling)
    }

    /// Last error a background refill of `vm_type` hit, if any.
    pub fn pool_last_error(&self, vm_type: &str) -> Option<String> {
        lock(&self.inner.pools)
            .get(vm_type)
            .and_then(|p| p.last_error.clone())
    }

    /// Build the template of `spec.vm_type` if needed and fill its pool; returns when the pool
    /// is full (or the first refill error).
    pub async fn warm(&self, spec: &VmSpec) -> Result<(), VmError> {
        self.inner.ensure_template(spec).await?;
        self.inner.refill(spec.clone()).await
    }

    /// Release every pooled VM (the provider's VMs handed out stay with their owners).
    pub async fn drain_pools(&self) -> Result<(), VmError> {
        let vms: Vec<Vm> = {
            let mut pools = lock(&self.inner.pools);
            pools.values_mut().flat_map(|p| p.ready.drain(..)).collect()
        };
        for vm in vms {
            self.inner.release_vm(&vm.id).await?;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn new_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("fc-{}-{n}", std::process::id())
    }

    fn resolve_image(&self, spec: &VmSpec) -> Result<PathBuf, VmError> {
        if spec.image.is_file() {
            return Ok(spec.image.clone());
        }
        let named = self
            .config
            .images_dir
            .join(&spec.image)
            .with_extension("ext4");
        if named.is_file() {
            return Ok(named);
        }
        Err(alloc_err(
            spec,
            format!(
                "rootfs image {} not found (looked for the file and for {}); build one with `ignis image build`",
                spec.image.display(),
                named.display()
            ),
        ))
    }

    /// The fixed path every VM's disk is bind-mounted on inside its own mount namespace.
    fn drive_slot(&self) -> PathBuf {
        self.config.state_dir.join("drive-slot")
    }

    /// Create the VM's directory, its disk copy, and start the process; returns once the API
    /// socket answers.
    async fn spawn(&self, spec: &VmSpec, disk_source: Option<&Path>) -> Result<Machine, VmError> {
        let cfg = &self.config;
        let id = self.new_id();
        let fc = &cfg.firecracker_bin;
        let (dir, extra_paths, paths) = match &cfg.jailer {
            Some(j) => (
                j.root(fc, &id),
                vec![j.jail_dir(fc, &id)],
                PathMap {
                    root: Some(j.root(fc, &id)),
                },
            ),
            None => (
                cfg.state_dir.join("vms").join(&id),
                vec![],
                PathMap { root: None },
            ),
        };
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut m = Machine {
            id: id.clone(),
            api: ApiClient::new(dir.join("api.sock"), cfg.api_timeout),
            disk: dir.join("rootfs.ext4"),
            vsock: dir.join("vsock.sock"),
            stderr: dir.join("firecracker.stderr"),
            dir,
            child: None,
            paths,
            extra_paths,
            tap: None,
            record: VmRecord {
                backend: Some(Backend::Firecracker),
                id: id.clone(),
                ..VmRecord::default()
            },
        };
        m.record.paths.push(m.dir.clone());
        m.record.paths.extend(m.extra_paths.iter().cloned());
        for sock in [m.api.socket(), m.vsock.as_path()] {
            if sock.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(alloc_err(
                    spec,
                    format!("socket path too long for a unix socket: {}", sock.display()),
                ));
            }
        }
        if let Some(source) = disk_source {
            host::cow_copy(source, &m.disk).map_err(|e| {
                alloc_err(spec, format!("copying rootfs {}: {e}", source.display()))
            })?;
        }

        let stdout = std::fs::File::create(m.dir.join("firecracker.log"))
            .map_err(io_err("creating firecracker.log"))?;
        let stderr =
            std::fs::File::create(&m.stderr).map_err(io_err("creating firecracker.stderr"))?;
        let mut cmd = match &cfg.jailer {
            Some(j) => {
                self.stage_jail(&m, j)?;
                let mut c = Command::new(&j.bin);
                c.args(j.args(fc, &id, &m.paths.vmm_path(m.api.socket())));
                c
            }
            None => {
                let mut c = Command::new(fc);
                c.arg("--api-sock").arg(m.api.socket()).arg("--id").arg(&id);
                if cfg.private_mount_ns && disk_source.is_some() {
                    let slot = self.drive_slot();
                    if !slot.exists() {
                        std::fs::File::create(&slot)
                            .map_err(io_err(format!("creating {}", slot.display())))?;
                    }
                    private_disk_mount(&mut c, &m.disk, &slot)?;
                }
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            let bin = cfg.jailer.as_ref().map(|j| &j.bin).unwrap_or(fc);
            alloc_err(spec, format!("starting {}: {e}", bin.display()))
        })?;
        if let Some(pid) = child.id() {
            let tracked = match cfg.jailer.as_ref().and_then(|j| j.pid_file(fc, &id)) {
                Some(_) => None, // the real VMM pid is read once the jail wrote it (below)
                None => Some(pid),
            };
            if let Some(pid) = tracked
                && let Some(start) = host::process_start_time(pid)
            {
                m.record.processes.push((pid, start));
            }
        }
        m.child = Some(child);
        self.wait_for_socket(spec, &mut m).await?;
        if let Some(pid_file) = cfg.jailer.as_ref().and_then(|j| j.pid_file(fc, &id))
            && let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            && let Some(start) = host::process_start_time(pid)
        {
            m.record.processes.push((pid, start));
        }
        Ok(m)
    }

    /// Hard-link (or copy) the kernel and initrd into the jail and hand the jail to the
    /// jail's uid.
    fn stage_jail(&self, m: &Machine, j: &JailerConfig) -> Result<(), VmError> {
        let kernel = m.dir.join("vmlinux");
        let mut staged = vec![m.dir.clone(), kernel.clone()];
        let mut files = vec![(self.config.kernel.clone(), kernel)];
        if let Some(initrd) = &self.config.initrd {
            files.push((initrd.clone(), m.dir.join("initrd")));
        }
        for (from, to) in files {
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to)
                    .map_err(io_err(format!("staging {} in the jail", from.display())))?;
            }
            staged.push(to);
        }
        if m.disk.is_file() {
            staged.push(m.disk.clone());
        }
        for p in &staged {
            rustix::fs::chown(
                p.as_path(),
                Some(rustix::fs::Uid::from_raw(j.uid)),
                Some(rustix::fs::Gid::from_raw(j.gid)),
            )
            .map_err(|e| VmError::Io {
                context: format!("chown {}", p.display()),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// Poll until the API socket accepts a connection, failing fast (with the process's
    /// stderr) if it exits first.
    async fn wait_for_socket(&self, spec: &VmSpec, m: &mut Machine) -> Result<(), VmError> {
        let deadline = Instant::now() + self.config.socket_timeout;
        loop {
            m.fail_if_exited(spec, "its api socket appeared")?;
            if UnixStream::connect(m.api.socket()).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(alloc_err(
                    spec,
                    format!(
                        "firecracker api socket {} did not appear within {:?}; stderr: {}",
                        m.api.socket().display(),
                        self.config.socket_timeout,
                        host::tail(&m.stderr, 2048)
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Path of the disk as Firecracker must see it.
    fn drive_path(&self, m: &Machine) -> String {
        if self.config.jailer.is_none() && self.config.private_mount_ns {
            self.drive_slot().display().to_string()
        } else {
            m.paths.vmm_path(&m.disk)
        }
    }

    /// Cold boot: configure every device, start the instance, connect the agent.
    async fn boot(&self, spec: &VmSpec) -> Result<(Machine, AgentClient), VmError> {
        if spec.network == NetworkPolicy::Host {
            return Err(alloc_err(
                spec,
                "network policy `host` is sandbox-only; use `user` or `none`",
            ));
        }
        // With an initramfs the rootfs is optional: attached only when the spec names one.
        let image = match self.resolve_image(spec) {
            Ok(image) => Some(image),
            Err(_) if self.config.initrd.is_some() => None,
            Err(e) => return Err(e),
        };
        if !self.config.kernel.is_file() {
            return Err(VmError::Unavailable {
                backend: Backend::Firecracker,
                reason: format!(
                    "kernel {} not found; set IGNIS_FIRECRACKER_KERNEL to an uncompressed vmlinux",
                    self.config.kernel.display()
                ),
            });
        }
        let mut m = self.spawn(spec, image.as_deref()).await?;
        let fault = |e: ApiError| alloc_err(spec, e.to_string());
        let vcpus = spec.vcpus.clamp(1, 32);
        m.api
            .put(
                "/machine-config",
                &MachineConfiguration {
                    vcpu_count: vcpus,
                    mem_size_mib: spec.memory_mib.max(128),
                    smt: false,
                },
            )
            .await
            .map_err(fault)?;
        let (kernel, initrd) = match &self.config.jailer {
            Some(_) => (
                "/vmlinux".to_owned(),
                self.config.initrd.as_ref().map(|_| "/initrd".to_owned()),
            ),
            None => (
                self.config.kernel.display().to_string(),
                self.config.initrd.as_ref().map(|p| p.display().to_string()),
            ),
        };
        m.api
            .put(
                "/boot-source",
                &BootSource {
                    kernel_image_path: kernel,
                    boot_args: Some(self.config.boot_args.clone()),
                    initrd_path: initrd,
                },
            )
            .await
            .map_err(fault)?;
        if image.is_some() {
            let drive = Drive {
                drive_id: "rootfs".into(),
                path_on_host: self.drive_path(&m),
                is_root_device: true,
                is_read_only: false,
            };
            m.api.put("/drives/rootfs", &drive).await.map_err(fault)?;
        }
        m.api
            .put(
                "/vsock",
                &Vsock {
                    guest_cid: GUEST_CID,
                    uds_path: m.paths.vmm_path(&m.vsock),
                },
            )
            .await
            .map_err(fault)?;
        if spec.network == NetworkPolicy::User {
            let tap = create_tap(&m.id).map_err(|e| alloc_err(spec, e))?;
            m.tap = Some(tap.clone());
            m.record
                .paths
                .push(PathBuf::from(format!("/sys/class/net/{tap}")));
            m.api
                .put(
                    "/network-interfaces/eth0",
                    &NetworkInterface {
                        iface_id: "eth0".into(),
                        host_dev_name: tap,
                        guest_mac: Some(guest_mac(&m.id)),
                    },
                )
                .await
                .map_err(fault)?;
        }
        m.api
            .put(
                "/actions",
                &InstanceActionInfo {
                    action_type: ActionType::InstanceStart,
                },
            )
            .await
            .map_err(fault)?;
        let agent = self.connect_agent(spec, &mut m).await?;
        Ok((m, agent))
    }

    /// Connect to the guest agent over hybrid vsock, retrying until it listens.
    async fn connect_agent(&self, spec: &VmSpec, m: &mut Machine) -> Result<AgentClient, VmError> {
        let deadline = Instant::now() + self.config.agent_timeout;
        let mut last = String::from("no attempt");
        loop {
            m.fail_if_exited(spec, "the agent connected")?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(alloc_err(
                    spec,
                    format!(
                        "agent never connected on vsock port {} within {:?} (last attempt: {last})",
                        self.config.agent_port, self.config.agent_timeout
                    ),
                ));
            }
            let attempt = vsock_connect(&m.vsock, self.config.agent_port);
            match tokio::time::timeout(remaining.min(Duration::from_secs(2)), attempt).await {
                Ok(Ok(stream)) => {
                    let (r, w) = stream.into_split();
                    let agent = AgentClient::new(r, w);
                    match tokio::time::timeout(
                        remaining.max(Duration::from_millis(100)),
                        agent.ping(),
                    )
                    .await
                    {
                        Ok(Ok(_)) => return Ok(agent),
                        Ok(Err(e)) => last = format!("agent ping failed: {e}"),
                        Err(_) => last = "agent ping timed out".into(),
                    }
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = "vsock handshake timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn register(&self, spec: &VmSpec, m: Machine, agent: AgentClient, started: Instant) -> Vm {
        let vm = Vm {
            id: VmId(m.id.clone()),
            vm_type: spec.vm_type.clone(),
            backend: Backend::Firecracker,
            allocation_time: started.elapsed(),
            agent,
            record: m.record.clone(),
        };
        lock(&self.vms).insert(m.id.clone(), m);
        vm
    }

    async fn release_vm(&self, id: &VmId) -> Result<(), VmError> {
        let mut m = lock(&self.vms)
            .remove(&id.0)
            .ok_or_else(|| VmError::UnknownVm(id.clone()))?;
        // Ask the guest to shut down; Firecracker exits when the guest resets.
        let polite = ApiClient::new(m.api.socket(), self.config.shutdown_grace);
        let _ = polite
            .put(
                "/actions",
                &InstanceActionInfo {
                    action_type: ActionType::SendCtrlAltDel,
                },
            )
            .await;
        if let Some(mut child) = m.child.take()
            && tokio::time::timeout(self.config.shutdown_grace, child.wait())
                .await
                .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        let mut failures = Vec::new();
        if let Some(tap) = m.tap.take()
            && let Err(e) = delete_tap_checked(&tap)
        {
            failures.push(e);
        }
        for p in std::iter::once(&m.dir).chain(m.extra_paths.iter()) {
            if let Err(e) = host::remove_path(p) {
                failures.push(format!("removing {}: {e}", p.display()));
            }
        }
        // `m` drops here: it re-checks the recorded process (jailed VMM) and paths.
        drop(m);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(VmError::Release {
                id: id.clone(),
                reason: failures.join("; "),
            })
        }
    }

    fn snapshot_dir(&self, name: &str) -> Result<PathBuf, VmError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !name.starts_with('.');
        if !ok {
            return Err(VmError::Snapshot {
                op: "create",
                reason: format!(
                    "invalid snapshot name {name:?}: use 1-64 of [A-Za-z0-9._-], not starting with '.'"
                ),
            });
        }
        Ok(self.config.state_dir.join("snapshots").join(name))
    }

    async fn snapshot_vm(&self, vm: &Vm, name: &str) -> Result<SnapshotId, VmError> {
        let snap_dir = self.snapshot_dir(name)?;
        let (api, vm_dir, disk, paths) = {
            let vms = lock(&self.vms);
            let m = vms
                .get(&vm.id.0)
                .ok_or_else(|| VmError::UnknownVm(vm.id.clone()))?;
            (
                m.api.clone(),
                m.dir.clone(),
                m.disk.clone(),
                m.paths.clone(),
            )
        };
        let err = |e: ApiError| VmError::Snapshot {
            op: "create",
            reason: e.to_string(),
        };
        let tmp = self
            .config
            .state_dir
            .join("snapshots")
            .join(format!(".{name}.tmp"));
        let _ = host::remove_path(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        let state_file = vm_dir.join("snap.vmstate");
        let mem_file = vm_dir.join("snap.mem");
        api.patch(
            "/vm",
            &VmState {
                state: VmStateValue::Paused,
            },
        )
        .await
        .map_err(err)?;
        let created = async {
            api.put(
                "/snapshot/create",
                &SnapshotCreateParams {
                    snapshot_path: paths.vmm_path(&state_file),
                    mem_file_path: paths.vmm_path(&mem_file),
                    snapshot_type: SnapshotType::Full,
                },
            )
            .await
            .map_err(err)?;
            // The disk must match the memory image: copy it while the guest is paused.
            // (an initramfs-only VM has no disk)
            if disk.is_file() {
                host::cow_copy(&disk, &tmp.join("rootfs.ext4"))
                    .map_err(io_err("copying the disk into the snapshot"))?;
            }
            std::fs::rename(&state_file, tmp.join("vmstate"))
                .map_err(io_err("moving the vm state"))?;
            std::fs::rename(&mem_file, tmp.join("mem"))
                .map_err(io_err("moving the memory file"))?;
            Ok::<(), VmError>(())
        }
        .await;
        let resumed = api
            .patch(
                "/vm",
                &VmState {
                    state: VmStateValue::Resumed,
                },
            )
            .await
            .map_err(err);
        if let Err(e) = created.and(resumed) {
            let _ = host::remove_path(&tmp);
            let _ = host::remove_path(&state_file);
            let _ = host::remove_path(&mem_file);
            return Err(e);
        }
        let _ = host::remove_path(&snap_dir);
        std::fs::rename(&tmp, &snap_dir).map_err(io_err(format!(
            "publishing snapshot {}",
            snap_dir.display()
        )))?;
        Ok(SnapshotId(name.to_owned()))
    }

    async fn restore_vm(
        &self,
        snapshot: &SnapshotId,
        spec: &VmSpec,
    ) -> Result<(Machine, AgentClient), VmError> {
        let snap_dir = self.snapshot_dir(&snapshot.0)?;
        let rerr = |reason: String| VmError::Snapshot {
            op: "restore",
            reason,
        };
        if !snap_dir.join("vmstate").is_file() {
            return Err(rerr(format!(
                "no snapshot {} in {}",
                snapshot.0,
                snap_dir.display()
            )));
        }
        let snap_disk = Some(snap_dir.join("rootfs.ext4")).filter(|d| d.is_file());
        if snap_disk.is_some() && self.config.jailer.is_none() && !self.config.private_mount_ns {
            return Err(VmError::Unavailable {
                backend: Backend::Firecracker,
                reason: "restoring a snapshot onto a per-clone disk needs a private mount namespace (run as root) or the jailer".into(),
            });
        }
        let mut m = self.spawn(spec, snap_disk.as_deref()).await?;
        // The snapshot and memory files stay in the snapshot dir (the memory file must outlive
        // every clone); the jail gets hard links when jailed.
        let (state, mem) = match &self.config.jailer {
            Some(_) => {
                for f in ["vmstate", "mem"] {
                    std::fs::hard_link(snap_dir.join(f), m.dir.join(f))
                        .map_err(io_err("linking the snapshot into the jail"))?;
                }
                ("/vmstate".to_owned(), "/mem".to_owned())
            }
            None => (
                snap_dir.join("vmstate").display().to_string(),
                snap_dir.join("mem").display().to_string(),
            ),
        };
        let mut network_overrides = Vec::new();
        if spec.network == NetworkPolicy::User {
            let tap = create_tap(&m.id).map_err(rerr)?;
            m.tap = Some(tap.clone());
            m.record
                .paths
                .push(PathBuf::from(format!("/sys/class/net/{tap}")));
            network_overrides.push(NetworkOverride {
                iface_id: "eth0".into(),
                host_dev_name: tap,
            });
        }
        let load = SnapshotLoadParams {
            snapshot_path: state,
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: mem,
            },
            resume_vm: true,
            vsock_override: Some(VsockOverride {
                uds_path: m.paths.vmm_path(&m.vsock),
            }),
            network_overrides,
        };
        m.api
            .put("/snapshot/load", &load)
            .await
            .map_err(|e| rerr(e.to_string()))?;
        let agent = self.connect_agent(spec, &mut m).await?;
        // Every clone starts from the same memory image: give its kernel pool fresh entropy
        // (VMGenID does this in-kernel on Firecracker >= 1.10; this covers older guests too).
        let seed = host::random_bytes(256).map_err(io_err("reading host entropy"))?;
        agent
            .write_file("/dev/urandom", seed, 0o666)
            .await
            .map_err(|e| {
                rerr(format!(
                    "reseeding the clone's entropy through the agent: {e}"
                ))
            })?;
        Ok((m, agent))
    }

    /// Boot a template VM, wait for its agent, snapshot it, release it.
    async fn ensure_template(&self, spec: &VmSpec) -> Result<SnapshotId, VmError> {
        let _building = self.template_build.lock().await;
        if let Some(t) = lock(&self.pools)
            .get(&spec.vm_type)
            .and_then(|p| p.template.clone())
        {
            return Ok(t);
        }
        let name = format!("pool-{}", sanitize(&spec.vm_type));
        let started = Instant::now();
        let (m, agent) = self.boot(spec).await?;
        let vm = self.register(spec, m, agent, started);
        let snap = self.snapshot_vm(&vm, &name).await;
        self.release_vm(&vm.id).await?;
        let snap = snap?;
        let mut pools = lock(&self.pools);
        let pool = pools.entry(spec.vm_type.clone()).or_default();
        pool.template = Some(snap.clone());
        pool.spec = Some(spec.clone());
        Ok(snap)
    }

    /// Restore clones until the pool of `spec.vm_type` is full. Stops at the first error,
    /// which is recorded (and returned); a failed clone leaves nothing behind.
    async fn refill(self: &Arc<Self>, spec: VmSpec) -> Result<(), VmError> {
        let size = self
            .config
            .pool_sizes
            .get(&spec.vm_type)
            .copied()
            .unwrap_or(0);
        let template = {
            let mut pools = lock(&self.pools);
            let pool = pools.entry(spec.vm_type.clone()).or_default();
            if pool.refilling {
                return Ok(());
            }
            pool.refilling = true;
            pool.template.clone()
        };
        let result = async {
            let template = template.ok_or_else(|| VmError::Snapshot {
                op: "restore",
                reason: "pool has no template".into(),
            })?;
            loop {
                let have = lock(&self.pools)
                    .get(&spec.vm_type)
                    .map(|p| p.ready.len())
                    .unwrap_or(0);
                if have >= size {
                    return Ok(());
                }
                let started = Instant::now();
                let (m, agent) = self.restore_vm(&template, &spec).await?;
                let vm = self.register(&spec, m, agent, started);
                lock(&self.pools)
                    .entry(spec.vm_type.clone())
                    .or_default()
                    .ready
                    .push_back(vm);
            }
        }
        .await;
        let mut pools = lock(&self.pools);
        let pool = pools.entry(spec.vm_type.clone()).or_default();
        pool.refilling = false;
        pool.last_error = result.as_ref().err().map(|e: &VmError| e.to_string());
        result
    }

    fn spawn_refill(self: &Arc<Self>, spec: VmSpec) {
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = inner.refill(spec).await {
                tracing::warn!(error = %e, "firecracker pool refill failed");
            }
        });
    }

    async fn allocate_vm(self: &Arc<Self>, spec: &VmSpec) -> Result<Vm, VmError> {
        let started = Instant::now();
        let pool_size = self
            .config
            .pool_sizes
            .get(&spec.vm_type)
            .copied()
            .unwrap_or(0);
        if pool_size > 0 {
            let same_spec = lock(&self.pools)
                .get(&spec.vm_type)
                .and_then(|p| p.spec.clone())
                .is_none_or(|s| &s == spec);
            if same_spec {
                let template = self.ensure_template(spec).await?;
                let pooled = lock(&self.pools)
                    .get_mut(&spec.vm_type)
                    .and_then(|p| p.ready.pop_front());
                self.spawn_refill(spec.clone());
                if let Some(mut vm) = pooled {
                    vm.allocation_time = started.elapsed();
                    return Ok(vm);
                }
                let (m, agent) = self.restore_vm(&template, spec).await?;
                return Ok(self.register(spec, m, agent, started));
            }
        }
        let (m, agent) = self.boot(spec).await?;
        Ok(self.register(spec, m, agent, started))
    }
}

#[async_trait::async_trait]
impl VmProvider for FirecrackerProvider {
    fn backend(&self) -> Backend {
        Backend::Firecracker
    }

    async fn allocate(&self, spec: &VmSpec) -> Result<Vm, VmError> {
        self.inner.allocate_vm(spec).await
    }

    async fn release(&self, vm: &Vm) -> Result<(), VmError> {
        self.inner.release_vm(&vm.id).await
    }

    async fn snapshot(&self, vm: &Vm, name: &str) -> Result<SnapshotId, VmError> {
        self.inner.snapshot_vm(vm, name).await
    }

    async fn restore(&self, snapshot: &SnapshotId, spec: &VmSpec) -> Result<Vm, VmError> {
        let started = Instant::now();
        let (m, agent) = self.inner.restore_vm(snapshot, spec).await?;
        Ok(self.inner.register(spec, m, agent, started))
    }

    /// A snapshot is one self-contained directory (state, memory, disk copy). Clones restored
    /// from it keep running: their memory mapping and disk are their own open files (or hard
    /// links in a jail), which outlive the directory entry. Removing twice is fine.
    async fn remove_snapshot(&self, snapshot: &SnapshotId) -> Result<(), VmError> {
        let dir = self.inner.snapshot_dir(&snapshot.0)?;
        match host::remove_path(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VmError::Snapshot {
                op: "remove",
                reason: format!("removing {}: {e}", dir.display()),
            }),
        }
    }

    async fn reap(&self, record: &VmRecord) -> Result<(), VmError> {
        reap_record(record)
    }
}

/// Release what a dead ignis process's VM left: kill its recorded processes (only if the pid
/// still names the same process), delete its tap and paths.
pub fn reap_record(record: &VmRecord) -> Result<(), VmError> {
    for (pid, start) in &record.processes {
        let _ = host::kill_if_same(*pid, *start);
    }
    let mut failures = Vec::new();
    for p in &record.paths {
        if let Some(tap) = p
            .strip_prefix("/sys/class/net")
            .ok()
            .and_then(|t| t.to_str())
        {
            if Path::new("/sys/class/net").join(tap).exists()
                && let Err(e) = delete_tap_checked(tap)
            {
                failures.push(e);
            }
            continue;
        }
        if let Err(e) = host::remove_path(p) {
            failures.push(format!("removing {}: {e}", p.display()));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(VmError::Release {
            id: VmId(record.id.clone()),
            reason: failures.join("; "),
        })
    }
}

/// Make the child enter a private mount namespace with `disk` bind-mounted on `slot`.
fn private_disk_mount(cmd: &mut Command, disk: &Path, slot: &Path) -> Result<(), VmError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| VmError::Io {
            context: format!("path with NUL: {}", p.display()),
            source: std::io::ErrorKind::InvalidInput.into(),
        })
    };
    let (disk, slot) = (c(disk)?, c(slot)?);
    // SAFETY: the closure runs in the forked child before exec and only makes raw syscalls
    // (unshare, mount) on CStrings allocated before the fork; it allocates nothing and takes
    // no locks. CLONE_NEWNS affects only the child, which is single-threaded at this point.
    unsafe {
        cmd.pre_exec(move || {
            use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
            // SAFETY: unsharing only the mount namespace of this single-threaded child is
            // what the block comment above covers; no other thread shares its fs state.
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)?;
            mount_change(
                c"/",
                MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
            )?;
            mount_bind(disk.as_c_str(), slot.as_c_str())?;
            Ok(())
        });
    }
    Ok(())
}

/// A tap device named after the VM (`ifc` + 12 hex digits fits IFNAMSIZ).
fn create_tap(vm_id: &str) -> Result<String, String> {
    let name = format!("ifc{:012x}", fnv(vm_id) & 0xffff_ffff_ffff);
    run_ip(&["tuntap", "add", "dev", &name, "mode", "tap"])?;
    if let Err(e) = run_ip(&["link", "set", &name, "up"]) {
        delete_tap(&name);
        return Err(e);
    }
    Ok(name)
}

fn delete_tap(name: &str) {
    let _ = delete_tap_checked(name);
}

fn delete_tap_checked(name: &str) -> Result<(), String> {
    run_ip(&["link", "del", name])
}

fn run_ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {}: {e} (install iproute2)", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Locally administered unicast MAC derived from the VM id.
fn guest_mac(vm_id: &str) -> String {
    let h = fnv(vm_id).to_be_bytes();
    format!("06:00:{:02x}:{:02x}:{:02x}:{:02x}", h[4], h[5], h[6], h[7])
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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
        .take(48)
        .collect()
}

/// Host side of Firecracker's hybrid vsock: connect to `uds_path`, ask for guest `port`,
/// expect `OK <host port>`. Errors are strings for the retry loop's "last attempt".
pub async fn vsock_connect(uds_path: &Path, port: u32) -> Result<UnixStream, String> {
    let mut stream = UnixStream::connect(uds_path)
        .await
        .map_err(|e| format!("connecting {}: {e}", uds_path.display()))?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| format!("sending CONNECT: {e}"))?;
    // Read the answer byte by byte so nothing after the newline (agent bytes) is consumed.
    let mut line = Vec::with_capacity(16);
    let mut reader = BufReader::with_capacity(1, &mut stream);
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading CONNECT answer: {e}"))?;
    let text = String::from_utf8_lossy(&line);
    match text.trim_end().strip_prefix("OK ") {
        Some(n) if n.parse::<u32>().is_ok() => Ok(stream),
        _ if line.is_empty() => Err(format!(
            "guest closed the connection to port {port} (nothing listening yet)"
        )),
        _ => Err(format!("unexpected CONNECT answer {:?}", text.trim_end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn vsock_handshake_keeps_following_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.sock");
        let l = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = [0u8; 13];
            s.read_exact(&mut buf).await.expect("read");
            assert_eq!(&buf, b"CONNECT 1024\n");
            s.write_all(b"OK 1073741824\nhello").await.expect("write");
        });
        let mut s = vsock_connect(&path, 1024).await.expect("handshake");
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).await.expect("rest");
        assert_eq!(&rest, b"hello");
    }

    #[tokio::test]
    async fn vsock_refusal_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.sock");
        let l = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            drop(s);
        });
        let err = vsock_connect(&path, 52).await.expect_err("refused");
        assert!(
            err.contains("nothing listening") || err.contains("CONNECT"),
            "{err}"
        );
    }

    #[test]
    fn snapshot_names_are_checked() {
        let p = FirecrackerProvider::new(FirecrackerConfig::from_env("/tmp/x"));
        assert!(p.inner.snapshot_dir("ok-1.2_3").is_ok());
        for bad in ["", "../x", ".hidden", "a/b", &"x".repeat(65)] {
            assert!(p.inner.snapshot_dir(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn guest_mac_is_local_unicast() {
        let mac = guest_mac("fc-1-2");
        assert!(mac.starts_with("06:00:"));
        assert_eq!(mac.len(), 17);
        assert!(create_tap_name_fits());
    }

    fn create_tap_name_fits() -> bool {
        format!("ifc{:012x}", fnv("anything") & 0xffff_ffff_ffff).len() <= 15
    }

    #[test]
    fn reap_removes_paths_and_ignores_dead_processes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vm_dir = dir.path().join("vm");
        std::fs::create_dir_all(vm_dir.join("sub")).expect("mkdir");
        let record = VmRecord {
            backend: Some(Backend::Firecracker),
            id: "fc-x".into(),
            processes: vec![(u32::MAX, 1)],
            paths: vec![vm_dir.clone()],
            ..VmRecord::default()
        };
        reap_record(&record).expect("reap");
        assert!(!vm_dir.exists());
    }
}
