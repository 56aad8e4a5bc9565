//! The QEMU backend: one `microvm` per VM, booting the guest image's kernel and initramfs,
//! with the agent on a virtio-serial port bound to a Unix socket and QMP on another. When the
//! image has an ext4 root disk, the initramfs is a small one that switches to it, and each VM
//! gets its own qcow2 overlay on it (a virtio-blk device): see [`disk`].
//!
//! The accelerator is chosen by a real probe: `/dev/kvm` existing proves nothing (on a nested
//! PVM host stock kernels die with "KVM internal error … emulation failure" and QEMU *pauses*
//! instead of exiting). The first allocation boots the image once under KVM with a short
//! deadline, watching QMP's run state; on failure every VM of the process uses TCG, and a
//! warning says so once. Every VM also has a watchdog that kills QEMU when the guest enters a
//! dead run state (`internal-error`, `guest-panicked`), so a session fails instead of hanging.
//!
//! Snapshots are QMP `stop` + `migrate` to a `file:` URI, plus the root disk's current overlay
//! frozen as a layer (the live VM goes on with a new overlay, QMP `blockdev-add` +
//! `blockdev-snapshot`); restore starts QEMU on a fresh overlay over that layer with
//! `-incoming defer`, loads the file with `migrate-incoming` and `cont`s. The agent port is
//! captured before the host ever connected (the template waits for QMP's `VSERPORT_CHANGE`
//! instead of talking to the agent), so each clone's agent sees its host connect for the
//! first time on the clone's own socket.

/// Root-disk overlays, frozen layers and their garbage collection.
pub mod disk;
/// The QMP client.
pub mod qmp;

use crate::image::{self, GuestImage, ImageRecipe};
use crate::provider::{
    Backend, NetworkPolicy, SnapshotId, Vm, VmError, VmId, VmProvider, VmRecord, VmSpec,
};
use crate::sandbox::process_start_time;
use ignis_agent::AgentClient;
use qmp::Qmp;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::sync::Mutex as AsyncMutex;

/// The kernel command line measured to boot fastest and most reliably under TCG (see the
/// module docs of the issue): no KASLR, no mitigations, trusted TSC, one UART.
const BASE_CMDLINE: &str = "console=ttyS0 quiet mitigations=off nokaslr tsc=reliable no_timer_check cryptomgr.notests random.trust_cpu=on 8250.nr_uarts=1 audit=0 nowatchdog pci=off panic=-1";

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// How the accelerator is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// Probe KVM with a real boot, fall back to TCG.
    #[default]
    Auto,
    Force(Accel),
}

/// Settings of the QEMU backend.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// `qemu-system-x86_64` (or a path).
    pub qemu: PathBuf,
    /// Where per-VM directories (sockets, console log) go; short, for Unix socket paths.
    pub run_dir: PathBuf,
    /// Where snapshots go (memory state, metadata, frozen disk layers).
    pub snapshot_dir: PathBuf,
    /// Where each VM's root-disk overlays go (`<disk_dir>/<vm>/`): on the same filesystem as
    /// `snapshot_dir`, so freezing a layer is a hard link (a copy otherwise).
    pub disk_dir: PathBuf,
    /// `qemu-img` (or a path), which creates the overlays.
    pub qemu_img: PathBuf,
    /// The guest image to build or reuse; `None`: [`ImageRecipe::default_for_host`].
    pub recipe: Option<ImageRecipe>,
    pub accel: AccelChoice,
    /// How long a boot may take before the allocation fails (TCG on a loaded host is slow).
    pub boot_timeout: Duration,
    /// How long the KVM probe boot may take before KVM is declared unusable.
    pub kvm_probe_timeout: Duration,
    /// Allocate by restoring a per-image template snapshot instead of booting (the template
    /// is made by the first allocation and shared by every later process).
    pub from_template: bool,
}

impl Default for QemuConfig {
    fn default() -> Self {
        let cache = image::cache_dir();
        QemuConfig {
            qemu: PathBuf::from("qemu-system-x86_64"),
            run_dir: std::env::temp_dir().join("ignis-qemu"),
            snapshot_dir: cache.join("snapshots"),
            disk_dir: cache.join("qemu-disks"),
            qemu_img: PathBuf::from("qemu-img"),
            recipe: None,
            accel: AccelChoice::Auto,
            boot_timeout: Duration::from_secs(120),
            // a KVM guest that works reaches its agent in well under a second; one that does
            // not (nested PVM) hangs silently or pauses, so do not wait long for it
            kvm_probe_timeout: Duration::from_secs(5),
            from_template: true,
        }
    }
}

impl QemuConfig {
    /// The defaults, adjusted by `IGNIS_QEMU` (binary), `IGNIS_QEMU_IMG`, `IGNIS_QEMU_ACCEL`
    /// (`kvm`, `tcg`, `auto`) and `IGNIS_QEMU_TEMPLATE=0` (cold-boot every VM instead of
    /// restoring the template snapshot).
    pub fn from_env() -> Self {
        let mut c = QemuConfig::default();
        if let Some(q) = std::env::var_os("IGNIS_QEMU").filter(|q| !q.is_empty()) {
            c.qemu = PathBuf::from(q);
        }
        if let Some(q) = std::env::var_os("IGNIS_QEMU_IMG").filter(|q| !q.is_empty()) {
            c.qemu_img = PathBuf::from(q);
        }
        match std::env::var("IGNIS_QEMU_ACCEL").as_deref() {
            Ok("kvm") => c.accel = AccelChoice::Force(Accel::Kvm),
            Ok("tcg") => c.accel = AccelChoice::Force(Accel::Tcg),
            _ => {}
        }
        c.from_template = template_from_env(std::env::var("IGNIS_QEMU_TEMPLATE").ok().as_deref());
        c
    }
}

/// `IGNIS_QEMU_TEMPLATE`: on unless `0`, `false`, `no` or `off`.
fn template_from_env(v: Option<&str>) -> bool {
    !matches!(
        v.map(str::trim).map(str::to_ascii_lowercase).as_deref(),
        Some("0" | "false" | "no" | "off")
    )
}

/// The per-process verdict of the KVM probe (one probe even when VMs start at once).
static ACCEL_VERDICT: tokio::sync::OnceCell<Accel> = tokio::sync::OnceCell::const_new();

/// A running VM's host side.
#[derive(Debug)]
struct Running {
    pid: u32,
    child: Arc<AsyncMutex<tokio::process::Child>>,
    dir: PathBuf,
    qmp: Arc<AsyncMutex<Qmp>>,
    watchdog: tokio::task::JoinHandle<()>,
    launch: Launch,
    /// The VM's root-disk overlays (`<disk_dir>/<vm>/`), with a disk.
    disk: Option<LiveDisk>,
}

/// The live overlay of a VM with a root disk.
#[derive(Debug, Clone)]
struct LiveDisk {
    dir: PathBuf,
    /// The overlay QEMU writes to now.
    current: PathBuf,
    /// Its QMP node name is `root{generation}`; each snapshot adds one.
    generation: u32,
}

/// What a VM was started with: restore needs the same machine.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Launch {
    image_dir: PathBuf,
    accel: Accel,
    vcpus: u32,
    memory_mib: u64,
    /// Boots the image's root disk (an overlay over it, or over a snapshot's frozen layer).
    #[serde(default)]
    disk: bool,
}

impl Launch {
    fn root_disk(&self) -> PathBuf {
        self.image_dir.join("rootfs.ext4")
    }
}

/// What a new VM's root-disk overlay is created on.
#[derive(Debug, Clone)]
enum Backing {
    /// The image's raw ext4 disk (a fresh boot).
    Image,
    /// A snapshot's frozen layer (a restore).
    Layer(PathBuf),
}

/// One image, built once per process however many allocations wait for it.
type ImageCell = Arc<tokio::sync::OnceCell<GuestImage>>;

/// The QEMU backend. Cheap to share behind `Arc`.
#[derive(Debug)]
pub struct QemuProvider {
    config: QemuConfig,
    /// Guest images by the package list a spec asks for (`None`: the configured recipe).
    images: AsyncMutex<HashMap<Option<Vec<String>>, ImageCell>>,
    running: Mutex<HashMap<VmId, Running>>,
    /// Template snapshots by file, one per machine shape, made at most once per process.
    templates: AsyncMutex<HashMap<PathBuf, Arc<tokio::sync::OnceCell<SnapshotId>>>>,
    /// The last template used, for tests and benches.
    last_template: Mutex<Option<SnapshotId>>,
    /// Set when making or restoring a template failed: later allocations boot right away
    /// instead of paying for another failing attempt first.
    templates_failed: std::sync::atomic::AtomicBool,
    /// Whether [`QemuProvider::sweep_orphans`] ran.
    swept: std::sync::atomic::AtomicBool,
}

fn unavailable(reason: impl Into<String>) -> VmError {
    VmError::Unavailable {
        backend: Backend::Qemu,
        reason: reason.into(),
    }
}

fn alloc_err(spec: &VmSpec, reason: impl Into<String>) -> VmError {
    VmError::Allocate {
        backend: Backend::Qemu,
        vm_type: spec.vm_type.clone(),
        reason: reason.into(),
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let context = context.into();
    move |source| VmError::Io { context, source }
}

/// The host TSC frequency in kHz (`tsc_early_khz`: without it ~10% of TCG boots hang
/// calibrating the TSC). From `cpu MHz` of /proc/cpuinfo, which on a `tsc` clocksource is the
/// TSC rate.
pub fn host_tsc_khz() -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
        && let Ok(v) = s.trim().parse()
    {
        return Some(v);
    }
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_mhz(&info)
}

fn parse_cpu_mhz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

/// The kernel command line for this host.
pub fn kernel_cmdline() -> String {
    match host_tsc_khz() {
        Some(khz) => format!("{BASE_CMDLINE} tsc_early_khz={khz}"),
        None => BASE_CMDLINE.to_owned(),
    }
}

/// Whether `/dev/kvm` can be opened read-write (necessary, not sufficient).
fn kvm_openable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

impl QemuProvider {
    pub fn new(config: QemuConfig) -> Self {
        QemuProvider {
            config,
            images: AsyncMutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            templates: AsyncMutex::new(HashMap::new()),
            last_template: Mutex::new(None),
            templates_failed: std::sync::atomic::AtomicBool::new(false),
            swept: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether QEMU can be found.
    pub fn qemu_available(&self) -> Result<PathBuf, VmError> {
        let q = &self.config.qemu;
        if q.components().count() > 1 {
            return if q.is_file() {
                Ok(q.clone())
            } else {
                Err(unavailable(format!("{} does not exist", q.display())))
            };
        }
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(q))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                unavailable(format!(
                    "{} not found in PATH (install qemu-system-x86 from bookworm-backports, see scripts/test.sh)",
                    q.display()
                ))
            })
    }

    /// The guest image, built (or found in the cache) on first use.
    pub async fn image(&self) -> Result<GuestImage, VmError> {
        self.image_with(None).await
    }

    /// The image a spec asks for: its `image` is empty or `/` for the configured one, or
    /// `debian:PKG,PKG...` for the configured recipe with that package list on the root disk
    /// (`debian:none`: no disk), built on first use and cached by inputs like any image.
    pub async fn image_for(&self, spec: &VmSpec) -> Result<GuestImage, VmError> {
        self.image_with(spec_packages(spec)?).await
    }

    async fn image_with(&self, packages: Option<Vec<String>>) -> Result<GuestImage, VmError> {
        let cell = self
            .images
            .lock()
            .await
            .entry(packages.clone())
            .or_default()
            .clone();
        let recipe = self.config.recipe.clone();
        cell.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || {
                let mut recipe = match recipe {
                    Some(r) => r,
                    None => ImageRecipe::default_for_host()?,
                };
                if let Some(p) = packages {
                    recipe.packages = p;
                }
                image::build(&recipe)
            })
            .await
            .map_err(|e| unavailable(format!("image build task: {e}")))?
            .map_err(|e| unavailable(format!("guest image: {e}")))
        })
        .await
        .cloned()
    }

    /// The accelerator every VM of this process uses (probing KVM once).
    pub async fn accel(&self) -> Result<Accel, VmError> {
        if let AccelChoice::Force(a) = self.config.accel {
            return Ok(a);
        }
        Ok(*ACCEL_VERDICT.get_or_init(|| self.decide_accel()).await)
    }

    async fn decide_accel(&self) -> Accel {
        if !kvm_openable() {
            tracing::warn!(
                "qemu: /dev/kvm is not usable; guests run under TCG (software emulation, slow)"
            );
            return Accel::Tcg;
        }
        // The verdict holds until the host reboots (or the image, i.e. the guest kernel,
        // changes): remembered on disk so each ignis process does not pay the probe again.
        let memo = self.verdict_memo().await;
        if let Some(path) = &memo
            && let Ok(text) = std::fs::read_to_string(path)
        {
            match text.trim() {
                "kvm" => return Accel::Kvm,
                "tcg" => {
                    tracing::warn!(
                        "qemu: KVM cannot boot a guest on this host (probed earlier since boot: {}); guests run under TCG (software emulation, slow)",
                        path.display()
                    );
                    return Accel::Tcg;
                }
                _ => {}
            }
        }
        let verdict = match self.probe_kvm().await {
            Ok(()) => Accel::Kvm,
            Err(reason) => {
                tracing::warn!(
                    "qemu: KVM cannot boot a guest on this host ({reason}); guests run under TCG (software emulation, slow)"
                );
                Accel::Tcg
            }
        };
        if let Some(path) = memo
            && let Some(dir) = path.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            // best effort: without the memo the next process probes again
            let _ = std::fs::write(&path, verdict.as_str());
        }
        verdict
    }

    /// Where the probe verdict is remembered: keyed by the host's boot id, the QEMU binary
    /// and the image.
    async fn verdict_memo(&self) -> Option<PathBuf> {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let image = self.image().await.ok()?;
        let qemu = self.qemu_available().ok()?;
        let qemu_id = std::fs::metadata(&qemu)
            .and_then(|m| m.modified())
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        Some(image::cache_dir().join("accel").join(format!(
            "{}-{}-{qemu_id}",
            boot.trim(),
            image.manifest.key
        )))
    }

    /// Whether template allocation failed and this provider now boots every VM.
    pub fn templates_failed(&self) -> bool {
        self.templates_failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The template snapshot allocations restore from, once made or found.
    pub fn template_snapshot(&self) -> Option<SnapshotId> {
        self.last_template
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Remove what VMs that died during allocation left behind: an ignis process killed
    /// before its session manager recorded the VM leaves a QEMU, a run dir and an overlay dir
    /// that no record will ever reap. A run dir whose `owner` file names a process that is
    /// gone has its QEMU killed (when it is still the recorded one) and goes, with the overlay
    /// dir of the same name; a VM whose owner lives is never touched. A run dir without an
    /// owner file goes when it is older than `min_age` and its QMP socket has no listener.
    /// Overlay dirs without a run dir here are left alone (another process's, with another
    /// TMPDIR). Likewise a snapshot state file older than `min_age` without its metadata
    /// (written last) is a snapshot interrupted by a dead process: it goes, and its layer is
    /// marked for collection. Returns what was removed. Runs once per provider on its first
    /// allocation.
    pub fn sweep_orphans(&self, min_age: Duration) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for e in std::fs::read_dir(&self.config.run_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("vm-") || name.starts_with("tpl-")) {
                continue;
            }
            let dir = e.path();
            let orphan = match read_owner(&dir) {
                // the allocating process is gone: whatever it started is garbage (a VM it
                // handed out has a record, and reaping that finds nothing left to do)
                Some(owner) if !owner.alive() => {
                    if let Some((pid, start)) = owner.qemu {
                        kill_recorded(pid, start);
                        wait_gone(pid, start);
                    }
                    true
                }
                Some(_) => false,
                None => {
                    let old_enough = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age >= min_age);
                    old_enough && !qmp_listening(&dir.join("qmp.sock"))
                }
            };
            if !orphan {
                continue;
            }
            if remove_tree(&dir).is_ok() {
                let _ = remove_tree(&self.config.disk_dir.join(&name));
                removed.push(dir);
            }
        }
        // a snapshot's metadata is written last: an old state file without it is a snapshot
        // whose process died while taking it (its id was never returned to anyone)
        for e in std::fs::read_dir(&self.config.snapshot_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let state = e.path();
            let old_enough = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if state.extension().is_some_and(|x| x == "state")
                && old_enough
                && !state.with_extension("json").exists()
                && remove_if_present(&state).is_ok()
            {
                let layer = state.with_extension("qcow2");
                if layer.exists() {
                    let _ = std::fs::write(disk::removed_marker(&layer), b"");
                }
                removed.push(state);
            }
        }
        if !removed.is_empty() {
            tracing::warn!(
                "qemu: removed what VMs or snapshots interrupted by a dead ignis left: {removed:?}"
            );
            self.collect_layers();
        }
        removed
    }

    /// Delete the disk layers of removed snapshots that nothing uses any more (best effort:
    /// a failure leaves files for the next collection).
    fn collect_layers(&self) {
        if let Err(e) = disk::collect(&self.config.snapshot_dir, &self.config.disk_dir) {
            tracing::warn!("qemu: collecting unused snapshot disk layers: {e}");
        }
    }

    /// The probe's verdict if it already ran in this process.
    pub fn accel_verdict() -> Option<Accel> {
        ACCEL_VERDICT.get().copied()
    }

    /// Boot the image once under KVM: success is the agent answering.
    async fn probe_kvm(&self) -> Result<(), String> {
        let image = self.image().await.map_err(|e| e.to_string())?;
        let launch = Launch {
            image_dir: image.dir.clone(),
            accel: Accel::Kvm,
            vcpus: 1,
            memory_mib: 512,
            disk: image.root_disk().is_some(),
        };
        let spec = VmSpec {
            vm_type: "kvm-probe".into(),
            backend: Backend::Qemu,
            image: image.dir.clone(),
            vcpus: 1,
            memory_mib: 512,
            disk_mib: 0,
            pids_max: None,
            network: NetworkPolicy::None,
        };
        let result = self
            .boot(
                &spec,
                launch,
                None,
                Backing::Image,
                self.config.kvm_probe_timeout,
            )
            .await;
        match result {
            Ok(vm) => {
                let _ = self.release(&vm).await;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// QEMU's arguments; `overlay` is the root disk's top layer when `launch.disk`.
    fn qemu_args(
        &self,
        launch: &Launch,
        dir: &Path,
        incoming: bool,
        overlay: Option<&Path>,
    ) -> Vec<String> {
        let image_dir = &launch.image_dir;
        let (initrd, cmdline) = match overlay {
            Some(_) => (
                image_dir.join("initrd-boot.cpio"),
                format!("{} {}=/dev/vda", kernel_cmdline(), image::ROOT_PARAM),
            ),
            None => (image_dir.join("initrd.cpio"), kernel_cmdline()),
        };
        let mut a: Vec<String> = vec![
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-M".into(),
            "microvm,x-option-roms=on,pit=on,pic=on,rtc=on,isa-serial=on".into(),
            "-accel".into(),
            launch.accel.as_str().into(),
            "-cpu".into(),
            match launch.accel {
                Accel::Kvm => "host".into(),
                Accel::Tcg => "max".into(),
            },
            "-smp".into(),
            launch.vcpus.max(1).to_string(),
            "-m".into(),
            format!("{}M", launch.memory_mib.max(256)),
            "-kernel".into(),
            image_dir.join("vmlinuz").display().to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
            "-append".into(),
            cmdline,
            "-chardev".into(),
            format!("file,id=con,path={}", dir.join("console.log").display()),
            "-serial".into(),
            "chardev:con".into(),
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!(
                "socket,id=agent,path={},server=on,wait=off",
                dir.join("agent.sock").display()
            ),
            "-device".into(),
            format!(
                "virtserialport,chardev=agent,name={},id=agentport",
                image::AGENT_PORT_NAME
            ),
            "-device".into(),
            "virtio-rng-device".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
        ];
        if let Some(overlay) = overlay {
            // node names `root{N}`: a snapshot adds the next generation on top
            let node = serde_json::json!({
                "driver": "qcow2",
                "node-name": "root0",
                "file": { "driver": "file", "filename": overlay.display().to_string() },
            });
            a.push("-blockdev".into());
            a.push(node.to_string());
            a.push("-device".into());
            a.push("virtio-blk-device,drive=root0,id=rootdisk".into());
        }
        if incoming {
            a.push("-incoming".into());
            a.push("defer".into());
        }
        a
    }

    /// The virtual size of the image's root disk (every layer of a chain has it).
    fn disk_size(launch: &Launch) -> Result<u64, String> {
        std::fs::metadata(launch.root_disk())
            .map(|m| m.len())
            .map_err(|e| format!("root disk {}: {e}", launch.root_disk().display()))
    }

    /// Create `<disk_dir>/<name>/disk-0.qcow2` over `backing`.
    async fn new_overlay(
        &self,
        launch: &Launch,
        name: &str,
        backing: &Backing,
    ) -> Result<LiveDisk, String> {
        let dir = self.config.disk_dir.join(name);
        private_dir(&self.config.disk_dir)
            .map_err(|e| format!("creating {}: {e}", self.config.disk_dir.display()))?;
        // never share a directory with another VM (run dirs of processes with another TMPDIR
        // could have the same name)
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let current = dir.join("disk-0.qcow2");
        let (file, format) = match backing {
            Backing::Image => (launch.root_disk(), "raw"),
            Backing::Layer(p) => (p.clone(), "qcow2"),
        };
        if !file.is_file() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("disk layer {} does not exist", file.display()));
        }
        let made = match Self::disk_size(launch) {
            Ok(size) => {
                disk::create_overlay(&self.config.qemu_img, &file, format, &current, size).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(LiveDisk {
            dir,
            current,
            generation: 0,
        })
    }

    /// Start QEMU for `launch` in a fresh run dir; with `incoming`, load that snapshot file.
    /// Returns once the agent answers (or the deadline passes / the guest dies).
    async fn boot(
        &self,
        spec: &VmSpec,
        launch: Launch,
        incoming: Option<&Path>,
        backing: Backing,
        timeout: Duration,
    ) -> Result<Vm, VmError> {
        let started = Instant::now();
        let qemu = self.qemu_available()?;
        std::fs::create_dir_all(&self.config.run_dir)
            .map_err(io(format!("creating {}", self.config.run_dir.display())))?;
        let dir = tempfile::Builder::new()
            .prefix("vm-")
            .tempdir_in(&self.config.run_dir)
            .map_err(io("creating a vm run dir"))?
            .keep();
        let id = VmId(format!(
            "qemu-{}",
            dir.file_name()
                .map(|n| n.to_string_lossy().trim_start_matches("vm-").to_owned())
                .unwrap_or_default()
        ));
        let disk = if launch.disk {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match self.new_overlay(&launch, &name, &backing).await {
                Ok(d) => Some(d),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(alloc_err(spec, e));
                }
            }
        } else {
            None
        };
        let disk_dir = disk.as_ref().map(|d| d.dir.clone());
        let remove_dirs = {
            let dir = dir.clone();
            let disk_dir = disk_dir.clone();
            move || {
                let _ = std::fs::remove_dir_all(&dir);
                if let Some(d) = &disk_dir {
                    let _ = std::fs::remove_dir_all(d);
                }
            }
        };
        let log = match std::fs::File::create(dir.join("qemu.log")) {
            Ok(l) => l,
            Err(e) => {
                remove_dirs();
                return Err(io("creating qemu.log")(e));
            }
        };
        let log2 = match log.try_clone() {
            Ok(l) => l,
            Err(e) => {
                remove_dirs();
                return Err(io("cloning qemu.log")(e));
            }
        };
        let mut cmd = tokio::process::Command::new(&qemu);
        cmd.args(self.qemu_args(
            &launch,
            &dir,
            incoming.is_some(),
            disk.as_ref().map(|d| d.current.as_path()),
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .kill_on_drop(true);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                remove_dirs();
                return Err(alloc_err(spec, format!("starting {}: {e}", qemu.display())));
            }
        };
        let pid = child.id().unwrap_or(0);
        write_owner(&dir, pid);
        let child = Arc::new(AsyncMutex::new(child));
        let cleanup = |reason: String| {
            let child = child.clone();
            let dir = dir.clone();
            let remove_dirs = remove_dirs.clone();
            async move {
                let mut c = child.lock().await;
                let _ = c.kill().await;
                let tail =
                    tail_of(&dir.join("qemu.log"), 800) + &tail_of(&dir.join("console.log"), 1500);
                remove_dirs();
                if tail.trim().is_empty() {
                    reason
                } else {
                    format!("{reason}; qemu/console output: {}", tail.trim())
                }
            }
        };
        let qmp = match Qmp::connect(&dir.join("qmp.sock"), Duration::from_secs(10)).await {
            Ok(q) => q,
            Err(e) => return Err(alloc_err(spec, cleanup(format!("qmp: {e}")).await)),
        };
        let qmp = Arc::new(AsyncMutex::new(qmp));
        // Connect to the agent before a restored guest runs: a guest captured while its host
        // was connected must never see the port without a host (its agent would take that as
        // the host leaving and power off).
        let agent = match connect_agent(&dir.join("agent.sock"), timeout).await {
            Ok(a) => a,
            Err(e) => return Err(alloc_err(spec, cleanup(e).await)),
        };
        if let Some(file) = incoming {
            let r = async {
                let mut q = qmp.lock().await;
                q.execute(
                    "migrate-incoming",
                    Some(serde_json::json!({ "uri": format!("file:{}", file.display()) })),
                )
                .await?;
                // the state is loaded when the VM leaves `inmigrate`
                let t0 = Instant::now();
                loop {
                    let st = q.status().await?;
                    if st != "inmigrate" {
                        break;
                    }
                    if t0.elapsed() > timeout {
                        return Err(qmp::QmpError::Timeout("incoming migration".into()));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                q.execute("cont", None).await.map(|_| ())
            }
            .await;
            if let Err(e) = r {
                return Err(VmError::Snapshot {
                    op: "restore",
                    reason: cleanup(format!("loading {}: {e}", file.display())).await,
                });
            }
        }
        // Ready = the agent answers, while QMP says the guest is alive and QEMU has not exited.
        let ready = async {
            let ping = agent.ping();
            tokio::pin!(ping);
            loop {
                tokio::select! {
                    r = &mut ping => return r.map(|_| ()).map_err(|e| format!("agent: {e}")),
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        if let Ok(Some(status)) = child.lock().await.try_wait() {
                            return Err(format!("qemu exited during boot ({status})"));
                        }
                        let st = qmp.lock().await.status().await.map_err(|e| format!("qmp: {e}"))?;
                        if qmp::is_dead_state(&st) {
                            return Err(format!("guest stopped in state {st} (KVM internal error or panic)"));
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(alloc_err(spec, cleanup(e).await)),
            Err(_) => {
                return Err(alloc_err(
                    spec,
                    cleanup(format!("agent not ready after {timeout:?}")).await,
                ));
            }
        }
        let start_time = process_start_time(pid).unwrap_or(0);
        let watchdog = tokio::spawn(watchdog(qmp.clone(), child.clone(), id.clone()));
        let record = VmRecord {
            backend: Some(Backend::Qemu),
            id: id.0.clone(),
            processes: vec![(pid, start_time)],
            mounts: Vec::new(),
            cgroups: Vec::new(),
            paths: std::iter::once(dir.clone()).chain(disk_dir).collect(),
        };
        self.lock().insert(
            id.clone(),
            Running {
                pid,
                child,
                dir,
                qmp,
                watchdog,
                launch,
                disk,
            },
        );
        Ok(Vm {
            id,
            vm_type: spec.vm_type.clone(),
            backend: Backend::Qemu,
            allocation_time: started.elapsed(),
            agent,
            record,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn launch_for(&self, spec: &VmSpec, image: &GuestImage, accel: Accel) -> Launch {
        Launch {
            image_dir: image.dir.clone(),
            accel,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            disk: image.root_disk().is_some(),
        }
    }

    fn check_spec(spec: &VmSpec) -> Result<(), VmError> {
        spec_packages(spec)?;
        if spec.network != NetworkPolicy::None {
            return Err(alloc_err(
                spec,
                format!(
                    "network policy {:?} is not supported by the qemu backend yet (only none)",
                    spec.network
                ),
            ));
        }
        Ok(())
    }

    /// The template snapshot of `spec`'s image and machine shape: booted, agent waiting for
    /// its host. Found in the snapshot dir when an earlier process made it; made otherwise,
    /// under a lock file so concurrent processes make it once.
    async fn template(&self, spec: &VmSpec) -> Result<SnapshotId, VmError> {
        let image = self.image_for(spec).await?;
        let accel = self.accel().await?;
        let launch = self.launch_for(spec, &image, accel);
        let file = self.template_path(&image, &launch);
        let cell = self
            .templates
            .lock()
            .await
            .entry(file.clone())
            .or_default()
            .clone();
        let snap = cell
            .get_or_try_init(|| async {
                if template_complete(&file, &launch) {
                    return Ok(SnapshotId(file.display().to_string()));
                }
                let lock_path = file.with_extension("lock");
                let _lock = lock_exclusive(&lock_path)
                    .await
                    .map_err(|e| VmError::Snapshot {
                        op: "template",
                        reason: format!("locking {}: {e}", lock_path.display()),
                    })?;
                if template_complete(&file, &launch) {
                    return Ok(SnapshotId(file.display().to_string()));
                }
                let made = PathBuf::from(self.make_template(spec, launch.clone()).await?.0);
                // install under the shared name: layer, then metadata, then state, so a state
                // file is never seen without its metadata and layer
                let mut installed = Ok(());
                if launch.disk {
                    installed =
                        std::fs::rename(made.with_extension("qcow2"), file.with_extension("qcow2"));
                }
                let installed = installed
                    .and_then(|()| {
                        std::fs::rename(made.with_extension("json"), file.with_extension("json"))
                    })
                    .and_then(|()| std::fs::rename(&made, &file));
                if let Err(e) = installed {
                    for ext in ["qcow2", "json", "state"] {
                        let _ = std::fs::remove_file(made.with_extension(ext));
                    }
                    return Err(VmError::Snapshot {
                        op: "template",
                        reason: format!("installing {}: {e}", file.display()),
                    });
                }
                Ok(SnapshotId(file.display().to_string()))
            })
            .await?
            .clone();
        *self
            .last_template
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(snap.clone());
        Ok(snap)
    }

    /// The template of an image for one machine shape, shared by every process: keyed by the
    /// launch (image, accelerator, vcpus, memory, root disk), the kernel command line (host TSC)
    /// and the QEMU binary, any of which would make the saved state unloadable or wrong.
    fn template_path(&self, image: &GuestImage, launch: &Launch) -> PathBuf {
        use sha2::Digest;
        let qemu = self
            .qemu_available()
            .unwrap_or_else(|_| self.config.qemu.clone());
        let qemu_mtime = std::fs::metadata(&qemu)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let mut h = sha2::Sha256::new();
        h.update(format!(
            "{launch:?}\0{}\0{}\0{qemu_mtime}",
            kernel_cmdline(),
            qemu.display()
        ));
        let key: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.config
            .snapshot_dir
            .join(format!("template-{}-{key}.state", image.manifest.key))
    }

    /// Boot without ever connecting to the agent, wait until the agent opened its port
    /// (QMP `VSERPORT_CHANGE`), and save the machine; with a root disk, the VM's overlay
    /// becomes the template's layer. The template VM is then discarded.
    async fn make_template(&self, spec: &VmSpec, launch: Launch) -> Result<SnapshotId, VmError> {
        let qemu = self.qemu_available()?;
        let snap_err = |reason: String| VmError::Snapshot {
            op: "template",
            reason,
        };
        std::fs::create_dir_all(&self.config.run_dir).map_err(io("creating run dir"))?;
        let dir = tempfile::Builder::new()
            .prefix("tpl-")
            .tempdir_in(&self.config.run_dir)
            .map_err(io("creating a template run dir"))?;
        let disk = if launch.disk {
            let name = dir
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Some(
                self.new_overlay(&launch, &name, &Backing::Image)
                    .await
                    .map_err(snap_err)?,
            )
        } else {
            None
        };
        let result = async {
            let mut child = tokio::process::Command::new(&qemu)
                .args(self.qemu_args(
                    &launch,
                    dir.path(),
                    false,
                    disk.as_ref().map(|d| d.current.as_path()),
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting qemu: {e}"))?;
            if let Some(pid) = child.id() {
                write_owner(dir.path(), pid);
            }
            let saved = async {
                let mut q = Qmp::connect(&dir.path().join("qmp.sock"), Duration::from_secs(10))
                    .await
                    .map_err(|e| e.to_string())?;
                let t0 = Instant::now();
                loop {
                    let st = q.status().await.map_err(|e| e.to_string())?;
                    if qmp::is_dead_state(&st) {
                        return Err(format!("template guest stopped in state {st}"));
                    }
                    let opened = q.events.iter().any(|e| {
                        e["event"] == "VSERPORT_CHANGE"
                            && e["data"]["open"] == serde_json::Value::Bool(true)
                    });
                    if opened {
                        break;
                    }
                    if t0.elapsed() > self.config.boot_timeout {
                        return Err("template agent never opened its port".to_owned());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Clones of one snapshot share the kernel's RNG state; the guest reseeds its
                // CRNG (mixing RDSEED/RDRAND or the cycle counter) at the first random read
                // once the last reseed is older than max(1 s, uptime / 2). Saving the template
                // after that much idle time makes every clone reseed before anything (boot_id,
                // AT_RANDOM) is drawn from it, so clones never share random values.
                let idle = t0.elapsed() + Duration::from_secs(1);
                tokio::time::sleep(idle).await;
                let file = self.new_snapshot_file(spec)?;
                // `stop` drains and flushes the block layer: the overlay is the disk as the
                // saved memory knows it
                let saved = match save_state(&mut q, &file).await {
                    Ok(()) => save_launch(&file, &launch),
                    Err(e) => Err(e),
                };
                if let Err(e) = saved {
                    let _ = std::fs::remove_file(&file);
                    let _ = std::fs::remove_file(file.with_extension("json"));
                    return Err(e);
                }
                Ok(file)
            }
            .await;
            let _ = child.kill().await;
            let file = saved?;
            if let Some(d) = &disk {
                // QEMU is gone: the overlay can simply move (or be copied) to the layer's name
                let layer = file.with_extension("qcow2");
                if std::fs::rename(&d.current, &layer).is_err() {
                    disk::link_or_copy(&d.current, &layer)
                        .map_err(|e| format!("keeping the template's disk layer: {e}"))?;
                }
            }
            Ok(SnapshotId(file.display().to_string()))
        }
        .await;
        if let Some(d) = &disk {
            let _ = std::fs::remove_dir_all(&d.dir);
        }
        result.map_err(snap_err)
    }

    fn new_snapshot_file(&self, spec: &VmSpec) -> Result<PathBuf, String> {
        private_dir(&self.config.snapshot_dir)
            .map_err(|e| format!("creating {}: {e}", self.config.snapshot_dir.display()))?;
        let f = tempfile::Builder::new()
            .prefix(&format!("{}-", sanitize(&spec.vm_type)))
            .suffix(".state")
            .tempfile_in(&self.config.snapshot_dir)
            .map_err(|e| format!("creating a snapshot file: {e}"))?;
        let (_, path) = f
            .keep()
            .map_err(|e| format!("keeping the snapshot file: {e}"))?;
        Ok(path)
    }

    /// Mix fresh host entropy into a clone's pool: clones of one snapshot share their RNG state.
    async fn reseed(agent: &AgentClient) -> Result<(), String> {
        let mut seed = vec![0u8; 256];
        {
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut seed))
                .map_err(|e| format!("host entropy: {e}"))?;
        }
        agent
            .write_file("/dev/urandom", seed, 0o666)
            .await
            .map_err(|e| format!("writing guest entropy: {e}"))
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn save_state(q: &mut Qmp, file: &Path) -> Result<(), String> {
    q.execute("stop", None).await.map_err(|e| e.to_string())?;
    migrate_to(q, file).await
}

/// Writes a stopped machine's memory and device state to `file` and waits until it is whole.
async fn migrate_to(q: &mut Qmp, file: &Path) -> Result<(), String> {
    q.execute(
        "migrate",
        Some(serde_json::json!({ "uri": format!("file:{}", file.display()) })),
    )
    .await
    .map_err(|e| e.to_string())?;
    q.wait_migration(Duration::from_secs(120))
        .await
        .map_err(|e| e.to_string())
}

fn save_launch(file: &Path, launch: &Launch) -> Result<(), String> {
    let meta = serde_json::to_vec(launch).map_err(|e| e.to_string())?;
    std::fs::write(file.with_extension("json"), meta)
        .map_err(|e| format!("writing snapshot metadata: {e}"))
}

fn load_launch(file: &Path) -> Result<Launch, String> {
    let text = std::fs::read(file.with_extension("json"))
        .map_err(|e| format!("reading snapshot metadata: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("bad snapshot metadata: {e}"))
}

/// The last `max` bytes of a log file, for error messages.
fn tail_of(path: &Path, max: usize) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    let from = data.len().saturating_sub(max);
    String::from_utf8_lossy(&data[from..]).into_owned()
}

/// Connect to the agent socket QEMU created (it appears a moment after QEMU starts).
async fn connect_agent(path: &Path, timeout: Duration) -> Result<AgentClient, String> {
    let t0 = Instant::now();
    let stream = loop {
        match UnixStream::connect(path).await {
            Ok(s) => break s,
            Err(e) if t0.elapsed() > timeout => {
                return Err(format!("agent socket {}: {e}", path.display()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let (r, w) = stream.into_split();
    Ok(AgentClient::new(r, w))
}

/// Kill QEMU when the guest can no longer run (QEMU would sit paused forever), so the agent
/// channel closes and the session fails instead of hanging.
async fn watchdog(
    qmp: Arc<AsyncMutex<Qmp>>,
    child: Arc<AsyncMutex<tokio::process::Child>>,
    id: VmId,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let st = qmp.lock().await.status().await;
        match st {
            Ok(s) if qmp::is_dead_state(&s) => {
                tracing::error!(vm = %id, state = %s, "qemu guest died; killing qemu");
                let _ = child.lock().await.kill().await;
                return;
            }
            Ok(_) => {}
            // QMP gone: QEMU exited
            Err(_) => return,
        }
    }
}

/// Kill a recorded process if it is still the one recorded (same start time).
fn kill_recorded(pid: u32, start_time: u64) {
    if pid == 0 || process_start_time(pid) != Some(start_time) {
        return;
    }
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
}

/// The package list a spec's `image` names: `None` for empty or `/` (the provider's own
/// recipe), the list for `debian:PKG,PKG...`; anything else is refused, since the qemu backend
/// has no other kind of image name.
fn spec_packages(spec: &VmSpec) -> Result<Option<Vec<String>>, VmError> {
    let name = spec.image.to_string_lossy();
    if name.is_empty() || name == "/" {
        return Ok(None);
    }
    match name.strip_prefix("debian:") {
        Some(list) => Ok(Some(image::parse_package_list(list))),
        None => Err(alloc_err(
            spec,
            format!(
                "image {name:?}: the qemu backend takes `debian:PKG,PKG...` (Debian packages for the root disk, `debian:none` for none) or no image (the default packages)"
            ),
        )),
    }
}

/// Whether a template's files are all there (the layer only for a launch with a disk).
fn template_complete(file: &Path, launch: &Launch) -> bool {
    file.is_file()
        && file.with_extension("json").is_file()
        && (!launch.disk || file.with_extension("qcow2").is_file())
}

/// An exclusive `flock` on `path` (created), polled so no runtime thread blocks; released when
/// Creates `dir` (and its parents) and makes it 0700: VM disks and snapshots hold whatever
/// the steps had in the guest, secrets included, so other local users must not read them.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// the returned file is dropped.
async fn lock_exclusive(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(rustix::io::Errno::WOULDBLOCK) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `<run dir>/owner`: which process allocated the VM, and its QEMU (pid and start time each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    ignis: (u32, u64),
    qemu: Option<(u32, u64)>,
}

impl Owner {
    fn alive(&self) -> bool {
        process_start_time(self.ignis.0) == Some(self.ignis.1)
    }
}

/// Write `<dir>/owner` for a QEMU this process just started (best effort: without it the
/// sweep falls back to the QMP check).
fn write_owner(dir: &Path, qemu_pid: u32) {
    let me = std::process::id();
    let (Some(my_start), Some(q_start)) = (process_start_time(me), process_start_time(qemu_pid))
    else {
        return;
    };
    let _ = std::fs::write(
        dir.join("owner"),
        format!(
            "{me} {my_start}
{qemu_pid} {q_start}
"
        ),
    );
}

fn read_owner(dir: &Path) -> Option<Owner> {
    let text = std::fs::read_to_string(dir.join("owner")).ok()?;
    let mut lines = text.lines().map(|l| {
        let mut f = l.split_whitespace().map(str::parse::<u64>);
        match (f.next(), f.next()) {
            (Some(Ok(pid)), Some(Ok(start))) => u32::try_from(pid).ok().map(|p| (p, start)),
            _ => None,
        }
    });
    let ignis = lines.next().flatten()?;
    Some(Owner {
        ignis,
        qemu: lines.next().flatten(),
    })
}

/// Wait (up to a second) until a killed process is gone, so its files can go.
fn wait_gone(pid: u32, start: u64) {
    for _ in 0..100 {
        if process_start_time(pid) != Some(start) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a QEMU listens on this QMP socket (a socket file whose process died refuses).
fn qmp_listening(sock: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(sock).is_ok()
}

/// Remove a file, a missing one being fine.
fn remove_if_present(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Remove a directory tree, a missing one being fine.
fn remove_tree(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl QemuProvider {
    /// Freeze the live overlay of a stopped VM as `layer` and put a new overlay on top of it
    /// (QMP `blockdev-add` + `blockdev-snapshot`). On error the VM still runs on its old overlay
    /// and `layer` does not exist.
    async fn freeze_disk(
        &self,
        q: &mut Qmp,
        launch: &Launch,
        live: &LiveDisk,
        layer: &Path,
    ) -> Result<LiveDisk, String> {
        disk::link_or_copy(&live.current, layer)
            .map_err(|e| format!("linking the disk layer {}: {e}", layer.display()))?;
        let generation = live.generation + 1;
        let next = live.dir.join(format!("disk-{generation}.qcow2"));
        let node = format!("root{generation}");
        let r = async {
            let size = Self::disk_size(launch)?;
            disk::create_overlay(&self.config.qemu_img, layer, "qcow2", &next, size).await?;
            q.execute(
                "blockdev-add",
                Some(serde_json::json!({
                    "driver": "qcow2",
                    "node-name": node,
                    "file": { "driver": "file", "filename": next.display().to_string() },
                    "backing": null,
                })),
            )
            .await
            .map_err(|e| e.to_string())?;
            if let Err(e) = q
                .execute(
                    "blockdev-snapshot",
                    Some(serde_json::json!({
                        "node": format!("root{}", live.generation),
                        "overlay": node,
                    })),
                )
                .await
            {
                let _ = q
                    .execute(
                        "blockdev-del",
                        Some(serde_json::json!({ "node-name": node })),
                    )
                    .await;
                return Err(e.to_string());
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => Ok(LiveDisk {
                dir: live.dir.clone(),
                current: next,
                generation,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(layer);
                let _ = std::fs::remove_file(&next);
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl VmProvider for QemuProvider {
    fn backend(&self) -> Backend {
        Backend::Qemu
    }

    async fn allocate(&self, spec: &VmSpec) -> Result<Vm, VmError> {
        Self::check_spec(spec)?;
        self.qemu_available()?;
        if !self.swept.swap(true, std::sync::atomic::Ordering::Relaxed) {
            // well past any boot: a dir this old without a QEMU is an orphan
            self.sweep_orphans(self.config.boot_timeout * 2);
        }
        let templates_failed = &self.templates_failed;
        if self.config.from_template && !templates_failed.load(std::sync::atomic::Ordering::Relaxed)
        {
            // the template is an optimization: when it cannot be made or restored, boot (and
            // do not try again in this provider)
            let t0 = Instant::now();
            let restored = match self.template(spec).await {
                Ok(snap) => self.restore(&snap, spec).await,
                Err(e) => Err(e),
            };
            match restored {
                Ok(mut vm) => {
                    vm.allocation_time = t0.elapsed();
                    return Ok(vm);
                }
                Err(e @ VmError::Unavailable { .. }) => return Err(e),
                Err(e) => {
                    templates_failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        "qemu: allocation from the template failed ({e}); this provider boots every VM from now on"
                    );
                }
            }
        }
        let image = self.image_for(spec).await?;
        let accel = self.accel().await?;
        let launch = self.launch_for(spec, &image, accel);
        self.boot(spec, launch, None, Backing::Image, self.config.boot_timeout)
            .await
    }

    async fn release(&self, vm: &Vm) -> Result<(), VmError> {
        let running = self
            .lock()
            .remove(&vm.id)
            .ok_or_else(|| VmError::UnknownVm(vm.id.clone()))?;
        running.watchdog.abort();
        {
            let mut child = running.child.lock().await;
            let _ = child.start_kill();
            child.wait().await.map_err(|e| VmError::Release {
                id: vm.id.clone(),
                reason: format!("waiting for qemu (pid {}): {e}", running.pid),
            })?;
        }
        drop(running.qmp);
        let dirs = std::iter::once(running.dir.clone()).chain(running.disk.map(|d| d.dir));
        for d in dirs {
            remove_tree(&d).map_err(|e| VmError::Release {
                id: vm.id.clone(),
                reason: format!("removing {}: {e}", d.display()),
            })?;
        }
        // the VM's overlays may have been the last users of removed snapshots' layers
        self.collect_layers();
        Ok(())
    }

    async fn snapshot(&self, vm: &Vm, name: &str) -> Result<SnapshotId, VmError> {
        let (qmp, launch) = {
            let map = self.lock();
            let r = map
                .get(&vm.id)
                .ok_or_else(|| VmError::UnknownVm(vm.id.clone()))?;
            (r.qmp.clone(), r.launch.clone())
        };
        let err = |reason: String| VmError::Snapshot {
            op: "snapshot",
            reason,
        };
        let spec_like = VmSpec {
            vm_type: format!("{}-{name}", vm.vm_type),
            backend: Backend::Qemu,
            image: launch.image_dir.clone(),
            vcpus: launch.vcpus,
            memory_mib: launch.memory_mib,
            disk_mib: 0,
            pids_max: None,
            network: NetworkPolicy::None,
        };
        let file = self.new_snapshot_file(&spec_like).map_err(err)?;
        // one snapshot of a VM at a time: the QMP lock is held from `stop` to `cont`
        let mut q = qmp.lock().await;
        // the live disk as of now (a snapshot taken meanwhile would have replaced it)
        let live = self.lock().get(&vm.id).and_then(|r| r.disk.clone());
        let result = async {
            // `stop` drains and flushes the block layer: the overlay then holds exactly the
            // disk the memory image knows
            q.execute("stop", None).await.map_err(|e| e.to_string())?;
            let next = match &live {
                Some(live) => Some(
                    self.freeze_disk(&mut q, &launch, live, &file.with_extension("qcow2"))
                        .await?,
                ),
                None => None,
            };
            if let Some(next) = &next
                && let Some(r) = self.lock().get_mut(&vm.id)
            {
                r.disk = Some(next.clone());
            }
            migrate_to(&mut q, &file).await?;
            save_launch(&file, &launch)
        }
        .await;
        // the live machine goes on either way
        let resumed = q.execute("cont", None).await;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(file.with_extension("json"));
            // a frozen layer may already be the backing file of the VM's new overlay: mark it
            // and let the collection delete it once nothing builds on it
            let layer = file.with_extension("qcow2");
            if layer.exists() {
                let _ = std::fs::write(disk::removed_marker(&layer), b"");
                self.collect_layers();
            }
            return Err(err(e));
        }
        resumed.map_err(|e| err(format!("resuming after the snapshot: {e}")))?;
        Ok(SnapshotId(file.display().to_string()))
    }

    async fn restore(&self, snapshot: &SnapshotId, spec: &VmSpec) -> Result<Vm, VmError> {
        Self::check_spec(spec)?;
        let file = PathBuf::from(&snapshot.0);
        let launch = load_launch(&file).map_err(|reason| VmError::Snapshot {
            op: "restore",
            reason,
        })?;
        let backing = Backing::Layer(file.with_extension("qcow2"));
        let vm = self
            .boot(spec, launch, Some(&file), backing, self.config.boot_timeout)
            .await?;
        if let Err(reason) = Self::reseed(&vm.agent).await {
            let _ = self.release(&vm).await;
            return Err(VmError::Snapshot {
                op: "restore",
                reason,
            });
        }
        Ok(vm)
    }

    /// Deletes the snapshot's memory state and metadata at once (it can no longer be
    /// restored) and its disk layer as soon as no other layer builds on it: a later snapshot of
    /// the same VM chain, or a live VM restored from it, keeps the layer until it is gone too
    /// (collected after every release, reap and removal). Removing twice is fine.
    async fn remove_snapshot(&self, snapshot: &SnapshotId) -> Result<(), VmError> {
        let file = PathBuf::from(&snapshot.0);
        let err = |p: &Path, e: std::io::Error| VmError::Snapshot {
            op: "remove",
            reason: format!("removing {}: {e}", p.display()),
        };
        if file.extension().is_none_or(|e| e != "state") {
            return Err(VmError::Snapshot {
                op: "remove",
                reason: format!("{} is not a qemu snapshot", snapshot.0),
            });
        }
        for p in [file.clone(), file.with_extension("json")] {
            remove_if_present(&p).map_err(|e| err(&p, e))?;
        }
        let layer = file.with_extension("qcow2");
        if layer.exists() {
            let marker = disk::removed_marker(&layer);
            std::fs::write(&marker, b"").map_err(|e| err(&marker, e))?;
        }
        let snapshot_dir = file.parent().unwrap_or(&self.config.snapshot_dir);
        disk::collect(snapshot_dir, &self.config.disk_dir).map_err(|e| VmError::Snapshot {
            op: "remove",
            reason: format!("collecting unused disk layers: {e}"),
        })?;
        Ok(())
    }

    async fn reap(&self, record: &VmRecord) -> Result<(), VmError> {
        // a VM of this very process: release it properly (its QEMU is our child to wait for)
        let id = VmId(record.id.clone());
        let ours = self.lock().remove(&id);
        if let Some(running) = ours {
            running.watchdog.abort();
            let mut child = running.child.lock().await;
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        for (pid, start) in &record.processes {
            kill_recorded(*pid, *start);
        }
        // give the kernel a moment to tear the process down before deleting its files
        for (pid, start) in &record.processes {
            for _ in 0..100 {
                if process_start_time(*pid) != Some(*start) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for p in &record.paths {
            match std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(VmError::Release {
                        id: VmId(record.id.clone()),
                        reason: format!("removing {}: {e}", p.display()),
                    });
                }
            }
        }
        self.collect_layers();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_mhz_to_khz() {
        assert_eq!(
            parse_cpu_mhz("processor : 0\ncpu MHz\t\t: 2100.000\n"),
            Some(2_100_000)
        );
        assert_eq!(parse_cpu_mhz("cpu MHz : 2199.998"), Some(2_199_998));
        assert_eq!(parse_cpu_mhz("nothing"), None);
        assert_eq!(parse_cpu_mhz("cpu MHz : x"), None);
    }

    #[test]
    fn cmdline_has_the_measured_options() {
        let c = kernel_cmdline();
        for opt in [
            "console=ttyS0",
            "nokaslr",
            "tsc=reliable",
            "pci=off",
            "8250.nr_uarts=1",
        ] {
            assert!(c.contains(opt), "{c}");
        }
    }

    #[test]
    fn args_wire_agent_port_and_qmp() {
        let p = QemuProvider::new(QemuConfig::default());
        let launch = Launch {
            image_dir: PathBuf::from("/img"),
            accel: Accel::Tcg,
            vcpus: 2,
            memory_mib: 512,
            disk: false,
        };
        let a = p
            .qemu_args(&launch, Path::new("/run/x"), true, None)
            .join(" ");
        assert!(a.contains("-M microvm,x-option-roms=on,pit=on"), "{a}");
        assert!(
            a.contains("socket,id=agent,path=/run/x/agent.sock,server=on,wait=off"),
            "{a}"
        );
        assert!(a.contains("name=ignis.agent"), "{a}");
        assert!(a.contains("-qmp unix:/run/x/qmp.sock"), "{a}");
        assert!(a.contains("-accel tcg -cpu max -smp 2 -m 512M"), "{a}");
        assert!(a.ends_with("-incoming defer"), "{a}");
    }

    #[tokio::test]
    async fn release_unknown_and_bad_network() {
        let p = QemuProvider::new(QemuConfig::default());
        let spec = VmSpec {
            vm_type: "t".into(),
            backend: Backend::Qemu,
            image: PathBuf::new(),
            vcpus: 1,
            memory_mib: 256,
            disk_mib: 0,
            pids_max: None,
            network: NetworkPolicy::Host,
        };
        let err = p.allocate(&spec).await.expect_err("host network refused");
        assert!(err.to_string().contains("not supported"), "{err}");
    }

    #[test]
    fn snapshot_and_disk_dirs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().expect("tempdir");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        let fresh = t.path().join("a/b");
        private_dir(&fresh).expect("create");
        assert_eq!(mode(&fresh), 0o700);
        let old = t.path().join("old");
        std::fs::create_dir(&old).expect("mkdir");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&old).expect("existing");
        assert_eq!(mode(&old), 0o700, "an existing dir is tightened");
    }

    #[tokio::test]
    async fn remove_snapshot_removes_state_metadata_and_layer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = QemuProvider::new(QemuConfig {
            snapshot_dir: dir.path().to_owned(),
            disk_dir: dir.path().join("disks"),
            ..QemuConfig::default()
        });
        let state = dir.path().join("s.state");
        std::fs::write(&state, b"x").expect("state");
        std::fs::write(state.with_extension("json"), b"{}").expect("json");
        std::fs::write(state.with_extension("qcow2"), b"not used by anything").expect("layer");
        let id = SnapshotId(state.display().to_string());
        p.remove_snapshot(&id).await.expect("remove");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        p.remove_snapshot(&id)
            .await
            .expect("removing twice is fine");
        assert!(
            load_launch(&state).is_err(),
            "a removed snapshot cannot be restored"
        );
        let bad = SnapshotId(dir.path().join("x.txt").display().to_string());
        assert!(p.remove_snapshot(&bad).await.is_err(), "not a snapshot");
    }

    #[test]
    fn spec_image_names_packages() {
        let mut spec = VmSpec {
            vm_type: "t".into(),
            backend: Backend::Qemu,
            image: PathBuf::from("/"),
            vcpus: 1,
            memory_mib: 256,
            disk_mib: 0,
            pids_max: None,
            network: NetworkPolicy::None,
        };
        assert_eq!(spec_packages(&spec).expect("default"), None);
        spec.image = PathBuf::new();
        assert_eq!(spec_packages(&spec).expect("default"), None);
        spec.image = PathBuf::from("debian:python3, nodejs");
        assert_eq!(
            spec_packages(&spec).expect("list"),
            Some(vec!["python3".to_owned(), "nodejs".to_owned()])
        );
        spec.image = PathBuf::from("debian:none");
        assert_eq!(spec_packages(&spec).expect("none"), Some(Vec::new()));
        spec.image = PathBuf::from("ubuntu-22.04");
        let err = spec_packages(&spec).expect_err("not a qemu image name");
        assert!(err.to_string().contains("debian:PKG"), "{err}");
    }

    #[test]
    fn sweep_removes_only_old_dirs_without_a_qemu() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = QemuProvider::new(QemuConfig {
            run_dir: t.path().join("run"),
            disk_dir: t.path().join("disks"),
            snapshot_dir: t.path().join("snaps"),
            ..QemuConfig::default()
        });
        let mk = |name: &str| {
            let d = t.path().join("run").join(name);
            std::fs::create_dir_all(&d).expect("run dir");
            std::fs::create_dir_all(t.path().join("disks").join(name)).expect("disk dir");
            d
        };
        // a dead QEMU: its socket file is left, nobody listens
        let dead = mk("vm-dead");
        drop(std::os::unix::net::UnixListener::bind(dead.join("qmp.sock")).expect("bind"));
        // a live one
        let live = mk("vm-live");
        let _listener =
            std::os::unix::net::UnixListener::bind(live.join("qmp.sock")).expect("bind");
        // something else in the run dir
        let other = t.path().join("run/keep-me");
        std::fs::create_dir_all(&other).expect("other");
        // an interrupted snapshot (no metadata) and a complete one
        let snaps = t.path().join("snaps");
        std::fs::create_dir_all(&snaps).expect("snaps");
        std::fs::write(snaps.join("cut.state"), b"x").expect("cut");
        std::fs::write(snaps.join("cut.qcow2"), b"not a qcow2").expect("cut layer");
        std::fs::write(snaps.join("ok.state"), b"x").expect("ok");
        std::fs::write(snaps.join("ok.json"), b"{}").expect("ok json");

        // an ignis that died during allocation left its QEMU running (a `sleep` stands in)
        let killed = mk("vm-killed");
        let mut stray = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("sleep");
        let stray_start = process_start_time(stray.id()).expect("start");
        std::fs::write(
            killed.join("owner"),
            format!("{} 1\n{} {stray_start}\n", std::process::id(), stray.id()),
        )
        .expect("owner");
        // our own VM (owner alive) stays even without a listener
        let mine = mk("vm-mine");
        write_owner(&mine, std::process::id());

        let young = p.sweep_orphans(Duration::from_secs(3600));
        assert_eq!(
            young,
            vec![killed.clone()],
            "young dirs stay, dead owners' go"
        );
        let status = stray.wait().expect("wait");
        assert!(!status.success(), "the stray qemu was killed: {status:?}");
        assert!(mine.exists());
        let removed = p.sweep_orphans(Duration::ZERO);
        assert_eq!(removed, vec![dead.clone(), snaps.join("cut.state")]);
        assert!(!dead.exists() && !t.path().join("disks/vm-dead").exists());
        assert!(
            !snaps.join("cut.qcow2").exists(),
            "its unused layer is collected"
        );
        assert!(snaps.join("ok.state").exists());
        assert!(live.exists() && t.path().join("disks/vm-live").exists());
        assert!(mine.exists(), "a live owner's VM is never swept");
        assert!(other.exists());
    }

    #[test]
    fn template_switch_is_on_unless_turned_off() {
        assert!(template_from_env(None));
        assert!(template_from_env(Some("1")));
        assert!(!template_from_env(Some("0")));
        assert!(!template_from_env(Some("off")));
        assert!(QemuConfig::default().from_template);
    }

    #[test]
    fn args_with_a_root_disk() {
        let p = QemuProvider::new(QemuConfig::default());
        let launch = Launch {
            image_dir: PathBuf::from("/img"),
            accel: Accel::Tcg,
            vcpus: 1,
            memory_mib: 512,
            disk: true,
        };
        let a = p.qemu_args(
            &launch,
            Path::new("/run/x"),
            false,
            Some(Path::new("/d/disk-0.qcow2")),
        );
        let joined = a.join(" ");
        assert!(joined.contains("-initrd /img/initrd-boot.cpio"), "{joined}");
        assert!(joined.contains("ignis.root=/dev/vda"), "{joined}");
        assert!(joined.contains("virtio-blk-device,drive=root0"), "{joined}");
        let node = a
            .iter()
            .position(|x| x == "-blockdev")
            .and_then(|i| a.get(i + 1))
            .expect("blockdev");
        let v: serde_json::Value = serde_json::from_str(node).expect("json");
        assert_eq!(v["file"]["filename"], "/d/disk-0.qcow2");
        assert_eq!(v["node-name"], "root0");
    }

    #[tokio::test]
    async fn reap_ignores_recycled_pids_and_removes_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("vm-x");
        std::fs::create_dir(&junk).expect("mkdir");
        let p = QemuProvider::new(QemuConfig::default());
        let me = std::process::id();
        // our own pid with a wrong start time must not be killed
        let record = VmRecord {
            backend: Some(Backend::Qemu),
            id: "qemu-x".into(),
            processes: vec![(me, 1)],
            paths: vec![junk.clone()],
            ..VmRecord::default()
        };
        p.reap(&record).await.expect("reap");
        assert!(!junk.exists());
        p.reap(&record).await.expect("reap twice");
    }
}
