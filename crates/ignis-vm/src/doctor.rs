//! `ignis vm doctor`: what this host has and lacks for each backend, each gap with its exact
//! fix. The KVM check is a real probe: it creates a VM, runs a four-instruction real-mode
//! guest (`out 0x3f8, 0x42; hlt`) and checks the exits, because a `/dev/kvm` that opens is not
//! a hypervisor that runs guests (nested PVM, for one, has the device but boots no stock
//! kernel).

use crate::provider::Backend;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One fact about the host.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    /// Short id, e.g. `kvm-guest`.
    pub name: String,
    /// Whether the host passes it.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// The exact fix when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Whether a backend can run here, and what it misses.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackendStatus {
    /// The backend.
    pub backend: Backend,
    /// No required check failed.
    pub usable: bool,
    /// Names of required checks that failed.
    pub missing: Vec<String>,
    /// Names of optional checks that failed (the backend works, with less).
    pub degraded: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Every check, in the order they ran.
    pub checks: Vec<Check>,
    /// What each backend can do given those checks.
    pub backends: Vec<BackendStatus>,
    /// The default backend (sandbox) works: `ignis vm doctor` exits 0.
    pub default_backend_ok: bool,
}

/// Outcome of the KVM guest probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProbe {
    /// The guest ran its code and halted.
    RunsGuests {
        /// `KVM_GET_API_VERSION`.
        api_version: i32,
    },
    /// No usable `/dev/kvm`.
    NoDevice(String),
    /// `/dev/kvm` works but a guest does not run; the reason says how it failed.
    CannotRunGuests(String),
}

impl KvmProbe {
    /// Whether a guest really ran (hardware acceleration is usable, not just present).
    pub fn runs_guests(&self) -> bool {
        matches!(self, KvmProbe::RunsGuests { .. })
    }
}

/// Requirements per backend: (check name, required?).
fn requirements(b: Backend) -> &'static [(&'static str, bool)] {
    match b {
        Backend::Sandbox => &[
            ("user-namespaces", true),
            ("overlayfs", true),
            ("cgroup-v2", false),
            ("pasta", false),
        ],
        Backend::Qemu => &[
            ("qemu", true),
            ("qemu-img", true),
            ("guest-image-tools", true),
            ("kvm-guest", false),
            ("vhost-vsock", false),
        ],
        Backend::Firecracker => &[
            ("kvm-guest", true),
            ("firecracker", true),
            ("firecracker-kernel", true),
            ("jailer", false),
            ("tap", false),
            ("cgroup-v2", false),
        ],
        Backend::Fake => &[],
    }
}

/// Probe everything (runs the KVM guest probe and `--version` of the binaries it finds).
pub fn run() -> Report {
    let kvm = kvm_probe();
    let checks = vec![
        kvm_device_check(),
        kvm_guest_check(&kvm),
        binary_check(
            "firecracker",
            std::env::var_os("IGNIS_FIRECRACKER_BIN").map(PathBuf::from),
            FIRECRACKER_FIX,
        ),
        binary_check(
            "jailer",
            std::env::var_os("IGNIS_JAILER_BIN").map(PathBuf::from),
            FIRECRACKER_FIX,
        ),
        kernel_check(),
        binary_check(
            "qemu-system-x86_64",
            None,
            "apt-get install qemu-system-x86",
        )
        .renamed("qemu"),
        binary_check("qemu-img", None, "apt-get install qemu-utils"),
        tools_check(
            "guest-image-tools",
            &["mkfs.ext4", "cpio", "dpkg-deb", "apt-get"],
            &["/bin/busybox"],
            "apt-get install e2fsprogs cpio busybox-static (ignis image build needs them)",
        ),
        binary_check(
            "pasta",
            None,
            "apt-get install passt (only for network = \"user\" sandboxes)",
        ),
        qemu_accel_check(&kvm),
        cgroup_check(),
        userns_check(),
        overlay_check(),
        device_check(
            "vhost-vsock",
            "/dev/vhost-vsock",
            "modprobe vhost_vsock (and add vhost_vsock to /etc/modules-load.d/ignis.conf)",
        ),
        device_check(
            "tap",
            "/dev/net/tun",
            "modprobe tun; mkdir -p /dev/net && mknod /dev/net/tun c 10 200",
        ),
    ];
    let backends: Vec<BackendStatus> = [Backend::Sandbox, Backend::Qemu, Backend::Firecracker]
        .into_iter()
        .map(|b| {
            let failed = |required: bool| -> Vec<String> {
                requirements(b)
                    .iter()
                    .filter(|(n, r)| *r == required && checks.iter().any(|c| c.name == *n && !c.ok))
                    .map(|(n, _)| (*n).to_owned())
                    .collect()
            };
            let missing = failed(true);
            BackendStatus {
                backend: b,
                usable: missing.is_empty(),
                missing,
                degraded: failed(false),
            }
        })
        .collect();
    let default_backend_ok = backends
        .iter()
        .any(|b| b.backend == Backend::Sandbox && b.usable);
    Report {
        checks,
        backends,
        default_backend_ok,
    }
}

const FIRECRACKER_FIX: &str = "not packaged by Debian: unpack firecracker-<ver>-x86_64.tgz from \
    https://github.com/firecracker-microvm/firecracker/releases into /usr/local/bin \
    (release-<ver>-x86_64/firecracker-<ver>-x86_64 -> firecracker, jailer-<ver>-x86_64 -> jailer) \
    or set IGNIS_FIRECRACKER_BIN / IGNIS_JAILER_BIN";

trait Renamed {
    fn renamed(self, name: &str) -> Self;
}
impl Renamed for Check {
    fn renamed(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }
}

fn ok(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn gap(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn kvm_device_check() -> Check {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => ok("kvm-device", "/dev/kvm opens read-write"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => gap(
            "kvm-device",
            "/dev/kvm is absent",
            "enable VT-x/AMD-V in firmware (or nested virtualization on the VM host), then modprobe kvm_intel or modprobe kvm_amd",
        ),
        Err(e) => gap(
            "kvm-device",
            format!("/dev/kvm: {e}"),
            "add the user to group kvm: usermod -aG kvm $USER (then log in again)",
        ),
    }
}

fn is_nested_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// The accelerator the qemu backend will use: KVM only when a probe guest really ran (the
/// qemu backend repeats that probe with its own image and falls back to TCG the same way).
fn qemu_accel_check(probe: &KvmProbe) -> Check {
    if probe.runs_guests() {
        ok("qemu-accel", "kvm")
    } else {
        ok(
            "qemu-accel",
            "tcg (software emulation, ~3 s boots): KVM cannot run a guest here",
        )
    }
}

fn kvm_guest_check(probe: &KvmProbe) -> Check {
    match probe {
        KvmProbe::RunsGuests { api_version } => ok(
            "kvm-guest",
            format!("a real-mode test guest ran and halted (KVM API {api_version})"),
        ),
        KvmProbe::NoDevice(r) => gap("kvm-guest", format!("no KVM: {r}"), "see kvm-device"),
        KvmProbe::CannotRunGuests(r) if is_nested_pvm() => gap(
            "kvm-guest",
            r.clone(),
            "run on bare metal or on a VM host with hardware nested virtualization (kvm_intel nested=1 / kvm_amd nested=1); PVM cannot boot stock guest kernels",
        ),
        KvmProbe::CannotRunGuests(r) => gap(
            "kvm-guest",
            format!("KVM present but cannot run guests: {r}"),
            "enable nested virtualization on the VM host (options kvm_intel nested=1) or run on bare metal",
        ),
    }
}

/// Create a VM, run `mov dx,0x3f8; mov al,0x42; out dx,al; hlt` in real mode, and check that
/// the guest wrote 0x42 to port 0x3f8 and then halted. Bounded by a 5 s watchdog.
pub fn kvm_probe() -> KvmProbe {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            let _ = tx.send(kvm_probe_inner());
        });
    if let Err(e) = spawned {
        return KvmProbe::CannotRunGuests(format!("cannot start the probe thread: {e}"));
    }
    let probe = rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| KvmProbe::CannotRunGuests("KVM_RUN did not return within 5 s".into()));
    match probe {
        // PVM runs a real-mode test guest, but only PVM-enabled guest kernels boot on it: a
        // stock Firecracker vmlinux does not. The module is the tell.
        KvmProbe::RunsGuests { api_version } if is_nested_pvm() => {
            KvmProbe::CannotRunGuests(format!(
                "KVM present but cannot run guests (nested PVM): /dev/kvm is served by kvm_pvm (API {api_version}); \
             the real-mode probe guest ran and halted, but PVM boots only PVM-enabled guest kernels, not a stock vmlinux"
            ))
        }
        other => other,
    }
}

fn kvm_probe_inner() -> KvmProbe {
    use kvm_ioctls::{Kvm, VcpuExit};
    let kvm = match Kvm::new() {
        Ok(k) => k,
        Err(e) => return KvmProbe::NoDevice(format!("opening /dev/kvm: {e}")),
    };
    let api_version = kvm.get_api_version();
    let fail =
        |step: &str, e: &dyn std::fmt::Display| KvmProbe::CannotRunGuests(format!("{step}: {e}"));
    let vm = match kvm.create_vm() {
        Ok(v) => v,
        Err(e) => return fail("KVM_CREATE_VM", &e),
    };
    const GUEST_ADDR: u64 = 0x1000;
    const SIZE: usize = 0x1000;
    let code: [u8; 7] = [0xba, 0xf8, 0x03, 0xb0, 0x42, 0xee, 0xf4];
    let mem = match GuestPage::new(SIZE) {
        Some(m) => m,
        None => return fail("allocating guest memory", &"out of memory"),
    };
    mem.write(&code);
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: GUEST_ADDR,
        memory_size: SIZE as u64,
        userspace_addr: mem.addr(),
        flags: 0,
    };
    // SAFETY: `mem` is a live, page-aligned allocation of `SIZE` bytes that outlives `vm` (it
    // is declared before `vm` is used and dropped after the vcpu and VM fds in this function);
    // the guest may write to it, which is fine for plain bytes we own.
    if let Err(e) = unsafe { vm.set_user_memory_region(region) } {
        return fail("KVM_SET_USER_MEMORY_REGION", &e);
    }
    let mut vcpu = match vm.create_vcpu(0) {
        Ok(v) => v,
        Err(e) => return fail("KVM_CREATE_VCPU", &e),
    };
    let mut sregs = match vcpu.get_sregs() {
        Ok(s) => s,
        Err(e) => return fail("KVM_GET_SREGS", &e),
    };
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if let Err(e) = vcpu.set_sregs(&sregs) {
        return fail("KVM_SET_SREGS", &e);
    }
    let regs = kvm_bindings::kvm_regs {
        rip: GUEST_ADDR,
        rflags: 2,
        ..Default::default()
    };
    if let Err(e) = vcpu.set_regs(&regs) {
        return fail("KVM_SET_REGS", &e);
    }
    let mut saw_out = false;
    for _ in 0..4 {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(0x3f8, data)) if data == [0x42] => saw_out = true,
            Ok(VcpuExit::Hlt) if saw_out => {
                drop(vcpu);
                drop(vm);
                drop(mem);
                return KvmProbe::RunsGuests { api_version };
            }
            Ok(VcpuExit::Hlt) => {
                return fail("KVM_RUN", &"guest halted without executing its code");
            }
            Ok(VcpuExit::InternalError) => {
                return fail("KVM_RUN", &"exit reason KVM_EXIT_INTERNAL_ERROR");
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return fail(
                    "KVM_RUN",
                    &format!("KVM_EXIT_FAIL_ENTRY (hardware reason {reason:#x}, cpu {cpu})"),
                );
            }
            Ok(other) => return fail("KVM_RUN", &format!("unexpected exit {other:?}")),
            Err(e) => return fail("KVM_RUN", &e),
        }
    }
    fail("KVM_RUN", &"guest never halted")
}

/// A zeroed, page-aligned buffer used as guest memory.
struct GuestPage {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl GuestPage {
    fn new(size: usize) -> Option<Self> {
        let layout = std::alloc::Layout::from_size_align(size, 4096).ok()?;
        // SAFETY: `layout` has a non-zero size (callers pass a page).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Self { ptr, layout })
    }
    fn addr(&self) -> u64 {
        self.ptr as u64
    }
    fn write(&self, bytes: &[u8]) {
        let n = bytes.len().min(self.layout.size());
        // SAFETY: `ptr` points to `layout.size()` writable bytes we own; `n` is within it and
        // the source is a distinct slice.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr, n) }
    }
}

impl Drop for GuestPage {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this exact layout and not freed before.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Find `name` (or the explicit path) and ask it for `--version`.
fn binary_check(name: &str, explicit: Option<PathBuf>, fix: &str) -> Check {
    let path = explicit.or_else(|| which(name));
    let Some(path) = path else {
        return gap(name, format!("{name} not found in PATH"), fix);
    };
    match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_owned();
            ok(name, format!("{} ({first})", path.display()))
        }
        Ok(out) => gap(
            name,
            format!(
                "{} --version failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            fix,
        ),
        Err(e) => gap(name, format!("{}: {e}", path.display()), fix),
    }
}

/// Tools that are only run, never asked for a version: present in `PATH` (or at a fixed path).
fn tools_check(name: &str, in_path: &[&str], at: &[&str], fix: &str) -> Check {
    let missing: Vec<&str> = in_path
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .chain(at.iter().copied().filter(|p| !Path::new(p).is_file()))
        .collect();
    if missing.is_empty() {
        ok(name, format!("{} found", [in_path, at].concat().join(", ")))
    } else {
        gap(name, format!("missing: {}", missing.join(", ")), fix)
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn kernel_check() -> Check {
    let fix = "run `ignis image build` (it extracts an ELF vmlinux from Debian's linux-image-cloud-amd64 and builds the initramfs), or set IGNIS_FIRECRACKER_KERNEL to an uncompressed ELF vmlinux";
    // the same fallback `ignis run` uses: the newest cached guest image with a vmlinux
    let cached = || {
        crate::image::list(&crate::image::cache_dir())
            .ok()?
            .iter()
            .find_map(crate::image::GuestImage::vmlinux)
    };
    let Some(k) = std::env::var_os("IGNIS_FIRECRACKER_KERNEL")
        .filter(|k| !k.is_empty())
        .map(PathBuf::from)
        .or_else(cached)
    else {
        return gap(
            "firecracker-kernel",
            "IGNIS_FIRECRACKER_KERNEL is not set and no cached guest image has a vmlinux",
            fix,
        );
    };
    let mut magic = [0u8; 4];
    match std::fs::File::open(&k).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)) {
        Ok(()) if &magic == b"\x7fELF" => ok(
            "firecracker-kernel",
            format!("{} is an ELF kernel", k.display()),
        ),
        Ok(()) => gap(
            "firecracker-kernel",
            format!("{} is not an uncompressed ELF vmlinux", k.display()),
            fix,
        ),
        Err(e) => gap("firecracker-kernel", format!("{}: {e}", k.display()), fix),
    }
}

/// cgroup v2: the unified mount (at /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid
/// hosts) and its controllers; v1 controllers are reported as the fallback.
fn cgroup_check() -> Check {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (v2, v1) = parse_cgroup_mounts(&mountinfo);
    let fix = "boot with systemd.unified_cgroup_hierarchy=1 (kernel command line) so /sys/fs/cgroup is cgroup2 with memory, pids and cpu";
    let Some(root) = v2 else {
        return gap(
            "cgroup-v2",
            format!("no cgroup2 mount; v1 controllers: {}", v1.join(",")),
            fix,
        );
    };
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let have: Vec<&str> = controllers.split_whitespace().collect();
    let missing: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| !have.contains(c))
        .collect();
    if missing.is_empty() {
        ok(
            "cgroup-v2",
            format!("{} with {}", root.display(), have.join(",")),
        )
    } else {
        gap(
            "cgroup-v2",
            format!(
                "{} has [{}], lacks {} (held by cgroup v1: {}; limits fall back to v1 where present)",
                root.display(),
                have.join(","),
                missing.join(","),
                v1.join(",")
            ),
            fix,
        )
    }
}

/// (cgroup2 mount point, v1 controller names) from `/proc/self/mountinfo`.
pub fn parse_cgroup_mounts(mountinfo: &str) -> (Option<PathBuf>, Vec<String>) {
    let mut v2 = None;
    let mut v1 = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = pre.split_whitespace().nth(4);
        let mut post = post.split_whitespace();
        let fstype = post.next();
        let opts = post.nth(1).unwrap_or("");
        match (fstype, mount_point) {
            (Some("cgroup2"), Some(mp)) if v2.is_none() => v2 = Some(PathBuf::from(mp)),
            (Some("cgroup"), Some(_)) => {
                for o in opts.split(',') {
                    if [
                        "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices",
                        "freezer", "hugetlb", "io",
                    ]
                    .contains(&o)
                    {
                        v1.push(o.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    (v2, v1)
}

fn read_num(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn userns_check() -> Check {
    let max = read_num("/proc/sys/user/max_user_namespaces");
    let debian = read_num("/proc/sys/kernel/unprivileged_userns_clone");
    let apparmor = read_num("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    let root = rustix::process::geteuid().is_root();
    match max {
        None => gap(
            "user-namespaces",
            "kernel without user namespaces",
            "use a kernel built with CONFIG_USER_NS=y",
        ),
        Some(0) => gap(
            "user-namespaces",
            "user.max_user_namespaces = 0",
            "sysctl -w user.max_user_namespaces=15000",
        ),
        Some(n) if !root && debian == Some(0) => gap(
            "user-namespaces",
            format!("max {n}, but kernel.unprivileged_userns_clone = 0"),
            "sysctl -w kernel.unprivileged_userns_clone=1",
        ),
        Some(n) if !root && apparmor == Some(1) => gap(
            "user-namespaces",
            format!("max {n}, but kernel.apparmor_restrict_unprivileged_userns = 1"),
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
        ),
        Some(n) => ok(
            "user-namespaces",
            format!(
                "user.max_user_namespaces = {n}{}",
                if root { " (running as root)" } else { "" }
            ),
        ),
    }
}

fn overlay_check() -> Check {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        ok("overlayfs", "overlay is in /proc/filesystems")
    } else {
        gap(
            "overlayfs",
            "overlay filesystem not available",
            "modprobe overlay",
        )
    }
}

fn device_check(name: &str, dev: &str, fix: &str) -> Check {
    match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => ok(name, format!("{dev} opens")),
        Err(e) => gap(name, format!("{dev}: {e}"), fix),
    }
}

/// `ignis vm doctor [--json]`: print the report; exit 0 when the default backend works.
pub fn cli(json: bool) -> std::process::ExitCode {
    use std::io::Write;
    let report = run();
    let text = if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => text + "\n",
            Err(e) => {
                eprintln!("ignis vm doctor: encoding the report: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    } else {
        report.render()
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if report.default_backend_ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

impl Report {
    /// Human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("host checks:\n");
        for c in &self.checks {
            out.push_str(&format!(
                "  [{}] {:<20} {}\n",
                if c.ok { " ok " } else { "MISS" },
                c.name,
                c.detail
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("         fix: {fix}\n"));
            }
        }
        out.push_str("backends:\n");
        for b in &self.backends {
            let state = if b.usable { "usable" } else { "unavailable" };
            out.push_str(&format!("  {:<12} {state}", b.backend.to_string()));
            if !b.missing.is_empty() {
                out.push_str(&format!("; missing: {}", b.missing.join(", ")));
            }
            if !b.degraded.is_empty() {
                out.push_str(&format!("; without: {}", b.degraded.join(", ")));
            }
            out.push('\n');
        }
        out.push_str(if self.default_backend_ok {
            "default backend (sandbox) works\n"
        } else {
            "default backend (sandbox) does NOT work: fix the gaps above\n"
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_cgroup_layout_is_understood() {
        let mi = "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                  31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
                  32 25 0:28 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu\n";
        let (v2, v1) = parse_cgroup_mounts(mi);
        assert_eq!(v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(v1, vec!["memory".to_owned(), "cpu".to_owned()]);
    }

    #[test]
    fn doctor_report_covers_every_backend_and_gives_fixes() {
        let r = run();
        for b in [Backend::Sandbox, Backend::Qemu, Backend::Firecracker] {
            assert!(r.backends.iter().any(|s| s.backend == b), "{b} missing");
        }
        for c in &r.checks {
            assert_eq!(
                c.ok,
                c.fix.is_none(),
                "check {} must have a fix exactly when it fails",
                c.name
            );
        }
        let fc = r
            .backends
            .iter()
            .find(|s| s.backend == Backend::Firecracker)
            .expect("firecracker");
        let kvm_ok = r.checks.iter().any(|c| c.name == "kvm-guest" && c.ok);
        assert_eq!(fc.missing.contains(&"kvm-guest".to_owned()), !kvm_ok);
        let text = r.render();
        assert!(text.contains("kvm-guest") && text.contains("backends:"));
        let json = serde_json::to_value(&r).expect("json");
        assert!(
            json["checks"]
                .as_array()
                .is_some_and(|a| a.len() == r.checks.len())
        );
    }

    #[test]
    fn kvm_probe_reports_a_definite_answer() {
        let p = kvm_probe();
        let dev = Path::new("/dev/kvm").exists();
        match &p {
            KvmProbe::NoDevice(_) => assert!(!dev || !rustix::process::geteuid().is_root()),
            KvmProbe::RunsGuests { api_version } => assert_eq!(*api_version, 12),
            KvmProbe::CannotRunGuests(reason) => assert!(!reason.is_empty()),
        }
        eprintln!("kvm probe on this host: {p:?}");
    }
}
