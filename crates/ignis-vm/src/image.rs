//! Guest images for the VM backends: a kernel from Debian's cloud kernel package and an
//! initramfs whose init starts the ignis agent on a virtio-serial port (QEMU) or, when the kernel
//! command line says `ignis.transport=vsock:PORT`, on that vsock port (Firecracker).
//!
//! Images are cached under `<cache>/images/<key>` where the key is a hash of every input (kernel
//! package and version, the bytes of the agent and of each host program copied in, the recipe
//! version), so a rebuilt agent gives a new image and an unchanged host reuses the old one.
//! Kernels are cached separately under `<cache>/kernels/<package>_<version>` so a new agent
//! does not download the kernel again.
//!
//! The root filesystem comes in two forms, both built by [`build`]:
//! - an initramfs (`initrd.cpio`, newc, uncompressed: under TCG decompressing costs more than
//!   copying): busybox-static for the basic tools, bash and git with their shared libraries
//!   (found with `ldd`), the agent, the virtio modules the cloud kernel builds as modules, and a
//!   small `/init` that mounts the pseudo filesystems, loads the modules and `exec`s the agent on
//!   the port named `ignis.agent`. Firecracker, and QEMU with an image built without packages,
//!   boot it as the whole root.
//! - when the recipe lists Debian packages (the default: [`rootdisk::DEFAULT_PACKAGES`]), an ext4
//!   root disk (`rootfs.ext4`, see [`rootdisk`]) holding the same userland plus those packages,
//!   and a tiny boot initramfs (`initrd-boot.cpio`: busybox, the modules, `/init`) whose `/init`
//!   loads `virtio_blk` (a module in the cloud kernel; ext4 is built in), mounts the disk named by
//!   `ignis.root=` on the kernel command line and `switch_root`s into it, where the same `/init`
//!   starts the agent.

/// The newc cpio writer.
pub mod cpio;
/// The ext4 root disk: Debian packages unpacked and `mkfs.ext4 -d`.
pub mod rootdisk;
/// ELF `vmlinux` extraction from a bzImage.
pub mod vmlinux;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Overrides the cache directory (images, kernels).
pub const CACHE_DIR_ENV: &str = "IGNIS_CACHE_DIR";
/// Bumped when the recipe (init script, layout) changes, so old images are not reused.
const RECIPE_VERSION: &str = "ignis-initramfs-4";
/// Lists the Debian packages of the root disk (comma or space separated) for
/// [`ImageRecipe::default_for_host`]; empty or `none` builds an initramfs-only image.
pub const PACKAGES_ENV: &str = "IGNIS_IMAGE_PACKAGES";
/// Kernel command-line parameter naming the root disk the boot initramfs switches to.
pub const ROOT_PARAM: &str = "ignis.root";
/// Present only on the root disk: tells `/init` it already runs from the disk.
const DISK_MARKER: &str = "etc/ignis-root-disk";
/// The meta package whose dependency names the versioned cloud kernel.
pub const DEFAULT_KERNEL_META: &str = "linux-image-cloud-amd64";
/// Modules the cloud kernel builds as `=m` and the guest needs: virtio transport over MMIO
/// (microvm), the console/serial port for the agent (QEMU), block, and vsock for the agent
/// under Firecracker (`vsock`, its virtio transport; all `=m` in Debian's cloud config).
/// In load order (each after the modules its `depends=` names): the initramfs names them
/// `NN-name.ko` and `/init` loads them in one pass (every failed `insmod` is an exec, which
/// costs under TCG).
const MODULES: &[&str] = &[
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_mmio.ko",
    "kernel/drivers/char/virtio_console.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/drivers/char/hw_random/virtio-rng.ko",
    "kernel/net/vmw_vsock/vsock.ko",
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
];
/// Host programs copied into the image (with their libraries) on top of busybox: workflows
/// expect bash; git is a single binary for local operations.
pub const DEFAULT_PROGRAMS: &[&str] = &["bash", "git"];
/// The port name the host gives the agent's virtio-serial port.
pub const AGENT_PORT_NAME: &str = "ignis.agent";
/// Kernel command-line parameter that selects the agent's transport: `ignis.transport=vsock:PORT`
/// makes `/init` start the agent on that vsock port (Firecracker has no virtio-serial);
/// absent, `/init` looks for the virtio-serial port named [`AGENT_PORT_NAME`] (QEMU).
pub const TRANSPORT_PARAM: &str = "ignis.transport";

/// Errors building or finding images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("host program {0} not found in PATH (install it, e.g. apt-get install {0})")]
    MissingProgram(String),
    #[error("busybox not found: install busybox-static (apt-get install busybox-static)")]
    NoBusybox,
    #[error("busybox at {0} is not statically linked: install busybox-static")]
    BusyboxNotStatic(PathBuf),
    #[error("cannot resolve the kernel package from {meta}: {detail}")]
    KernelPackage { meta: String, detail: String },
    #[error("kernel module {0} missing from the kernel package")]
    MissingModule(String),
    #[error("no image {0} in the cache")]
    NotFound(String),
    #[error("image key {0:?} matches more than one image")]
    Ambiguous(String),
    #[error(
        "image {key} is in use by qemu disk layers (remove those snapshots or release those VMs first): {users}"
    )]
    InUse { key: String, users: String },
    #[error("bad image manifest {path}: {detail}")]
    Manifest { path: PathBuf, detail: String },
    #[error(transparent)]
    Agent(#[from] ignis_agent::AgentBinaryError),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// ignis's cache directory: `$IGNIS_CACHE_DIR`, else `/var/cache/ignis` as root, else
/// `$XDG_CACHE_HOME/ignis`, else `~/.cache/ignis`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/cache/ignis");
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ignis");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("ignis")
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageRecipe {
    /// Cache root (see [`cache_dir`]).
    pub cache_dir: PathBuf,
    /// The agent binary to put in the image.
    pub agent: PathBuf,
    /// Meta package naming the kernel (its `Depends:` is the versioned image package).
    pub kernel_meta: String,
    /// Host programs (names in PATH) copied in with their shared libraries.
    pub programs: Vec<String>,
    /// Debian packages (plus their dependency closure) for the ext4 root disk; empty: no disk,
    /// the initramfs is the whole root.
    pub packages: Vec<String>,
}

impl ImageRecipe {
    /// The default recipe: the agent found by [`ignis_agent::agent_binary_path`], the
    /// cloud kernel, bash and git.
    pub fn default_for_host() -> Result<Self, ImageError> {
        Ok(ImageRecipe {
            cache_dir: cache_dir(),
            agent: ignis_agent::agent_binary_path()?,
            kernel_meta: DEFAULT_KERNEL_META.to_owned(),
            programs: DEFAULT_PROGRAMS.iter().map(|s| (*s).to_owned()).collect(),
            packages: packages_from_env(),
        })
    }
}

/// The root disk's packages: [`PACKAGES_ENV`] when set, else [`rootdisk::DEFAULT_PACKAGES`].
pub fn packages_from_env() -> Vec<String> {
    match std::env::var(PACKAGES_ENV) {
        Ok(v) => parse_package_list(&v),
        Err(_) => rootdisk::DEFAULT_PACKAGES
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    }
}

/// `a,b c` -> `[a, b, c]`; `none` or blank -> no packages.
pub fn parse_package_list(v: &str) -> Vec<String> {
    let list: Vec<String> = v
        .split([',', ' ', '\n', '\t'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if list.len() == 1 && list[0] == "none" {
        return Vec::new();
    }
    list
}

/// What an image holds, stored as `manifest.json` in its directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub key: String,
    pub kernel_package: String,
    pub kernel_version: String,
    /// `uname -r` inside the guest.
    pub kernel_release: String,
    pub programs: Vec<String>,
    pub agent_sha256: String,
    /// Seconds since the epoch.
    pub created: u64,
}

/// What an image's root disk holds, stored as `rootdisk.json` beside `rootfs.ext4`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootDiskManifest {
    /// The Debian packages asked for.
    pub packages: Vec<String>,
    /// The package files of their dependency closure that went onto the disk.
    pub debs: Vec<String>,
    /// The filesystem's size as the guest sees it (the file is sparse).
    pub size_bytes: u64,
}

/// A built image in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl GuestImage {
    /// The compressed kernel QEMU boots.
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    /// The ELF kernel Firecracker boots (absent when extraction failed).
    pub fn vmlinux(&self) -> Option<PathBuf> {
        Some(self.dir.join("vmlinux")).filter(|p| p.is_file())
    }
    /// The initramfs (uncompressed newc cpio) holding the whole userland.
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.cpio")
    }
    /// The ext4 root disk (sparse raw file), when the image has one.
    pub fn root_disk(&self) -> Option<PathBuf> {
        Some(self.dir.join("rootfs.ext4")).filter(|p| p.is_file())
    }
    /// What the root disk holds, when the image has one.
    pub fn root_disk_manifest(&self) -> Option<RootDiskManifest> {
        let text = fs::read(self.dir.join("rootdisk.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }
    /// The small initramfs that boots into [`GuestImage::root_disk`].
    pub fn boot_initrd(&self) -> PathBuf {
        self.dir.join("initrd-boot.cpio")
    }
    /// Bytes the image really occupies on the host (allocated blocks: the root disk is sparse).
    pub fn size(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.blocks() * 512)
                    .sum()
            })
            .unwrap_or(0)
    }

    fn load(dir: &Path) -> Result<Self, ImageError> {
        let path = dir.join("manifest.json");
        let text =
            fs::read_to_string(&path).map_err(io_err(format!("reading {}", path.display())))?;
        let manifest = serde_json::from_str(&text).map_err(|e| ImageError::Manifest {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        Ok(GuestImage {
            dir: dir.to_owned(),
            manifest,
        })
    }
}

fn images_dir(cache: &Path) -> PathBuf {
    cache.join("images")
}

/// Every image in the cache, newest first.
pub fn list(cache: &Path) -> Result<Vec<GuestImage>, ImageError> {
    let dir = images_dir(cache);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("listing {}", dir.display()))(e)),
    };
    let mut out: Vec<GuestImage> = rd
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| GuestImage::load(&e.path()).ok())
        .collect();
    out.sort_by_key(|i| std::cmp::Reverse(i.manifest.created));
    Ok(out)
}

/// The image whose key starts with `prefix`.
pub fn find(cache: &Path, prefix: &str) -> Result<GuestImage, ImageError> {
    let mut hits: Vec<GuestImage> = list(cache)?
        .into_iter()
        .filter(|i| !prefix.is_empty() && i.manifest.key.starts_with(prefix))
        .collect();
    match hits.len() {
        0 => Err(ImageError::NotFound(prefix.to_owned())),
        1 => Ok(hits.remove(0)),
        _ => Err(ImageError::Ambiguous(prefix.to_owned())),
    }
}

/// Delete one image, and the qemu template snapshots made from it.
///
/// Refused while a qemu disk layer outside those templates builds on the image's root disk (a
/// live VM's overlay or a snapshot's layer): they would be left pointing at nothing.
pub fn remove(image: &GuestImage) -> Result<(), ImageError> {
    if let Some(cache) = image.dir.parent().and_then(Path::parent) {
        let prefix = format!("template-{}-", image.manifest.key);
        if let Some(disk) = image.root_disk() {
            let mut layers = Vec::new();
            for dir in [cache.join("snapshots"), cache.join("qemu-disks")] {
                qcow2_layers(&dir, 1, &mut layers);
            }
            let users: Vec<String> = layers
                .iter()
                .filter(|l| {
                    !l.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                })
                .filter(|l| chain_bottom(l) == disk)
                .map(|l| l.display().to_string())
                .collect();
            if !users.is_empty() {
                return Err(ImageError::InUse {
                    key: image.manifest.key.clone(),
                    users: users.join(", "),
                });
            }
        }
        for e in fs::read_dir(cache.join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    fs::remove_dir_all(&image.dir).map_err(io_err(format!("removing {}", image.dir.display())))?;
    if let Some(images) = image.dir.parent() {
        // best effort: a builder holding it only keeps an empty file alive
        let _ = fs::remove_file(images.join(format!(".{}.lock", image.manifest.key)));
    }
    Ok(())
}

fn qcow2_layers(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() && depth > 0 => qcow2_layers(&p, depth - 1, out),
            Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "qcow2") => out.push(p),
            _ => {}
        }
    }
}

/// The file at the bottom of a qcow2 backing chain (the layer itself when it has no backing).
fn chain_bottom(layer: &Path) -> PathBuf {
    let mut at = layer.to_owned();
    // a chain is one layer per snapshot; the bound only guards against a cycle
    for _ in 0..4096 {
        match crate::qemu::disk::qcow2_backing(&at) {
            Some(next) => at = next,
            None => break,
        }
    }
    at
}

fn run(cmd: &mut Command) -> Result<String, ImageError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(io_err(format!("running {shown}")))?;
    if !out.status.success() {
        return Err(ImageError::Command {
            command: shown,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`resolve_kernel`], remembered in the cache until apt's package lists change (two
/// `apt-cache` runs cost seconds on a loaded host, on every allocation otherwise).
fn resolve_kernel_cached(cache: &Path, meta: &str) -> Result<(String, String), ImageError> {
    let stamp = apt_stamp();
    let memo = cache
        .join("kernels")
        .join(format!("{}.resolved", sanitize_name(meta)));
    if let Ok(text) = fs::read_to_string(&memo) {
        let mut parts = text.split('\n');
        if let (Some(s), Some(pkg), Some(ver)) = (parts.next(), parts.next(), parts.next())
            && s == stamp
            && !stamp.is_empty()
            && !pkg.is_empty()
            && !ver.is_empty()
        {
            return Ok((pkg.to_owned(), ver.to_owned()));
        }
    }
    let (pkg, ver) = resolve_kernel(meta)?;
    if let Some(dir) = memo.parent()
        && fs::create_dir_all(dir).is_ok()
    {
        // best effort: a missing memo only costs the apt-cache runs next time
        let _ = fs::write(&memo, format!("{stamp}\n{pkg}\n{ver}"));
    }
    Ok((pkg, ver))
}

/// Changes whenever apt's package lists do (`apt-get update`): memoized resolutions are valid
/// while it stays the same. Empty when apt's state cannot be read (nothing is memoized then).
fn apt_stamp() -> String {
    ["/var/cache/apt/pkgcache.bin", "/var/lib/apt/lists"]
        .iter()
        .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn sanitize_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The versioned kernel package the meta package depends on, and its candidate version.
fn resolve_kernel(meta: &str) -> Result<(String, String), ImageError> {
    let bad = |detail: String| ImageError::KernelPackage {
        meta: meta.to_owned(),
        detail,
    };
    let deps = run(Command::new("apt-cache").args(["depends", meta]))?;
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| bad("no linux-image-* dependency (run apt-get update?)".into()))?
        .to_owned();
    let policy = run(Command::new("apt-cache").args(["policy", &pkg]))?;
    let version = policy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate: "))
        .map(str::trim)
        .find(|v| *v != "(none)")
        .ok_or_else(|| bad(format!("{pkg} has no candidate version")))?
        .to_owned();
    Ok((pkg, version))
}

fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut f = fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io_err(format!("reading {}", path.display())))?;
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A program by name in `PATH` (or the sbin dirs), or a path that exists.
pub fn which_program(name: &str) -> Option<PathBuf> {
    which(name)
}

fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Map a host path to where it goes in the (usr-merged) image.
fn image_path(host: &Path) -> String {
    let s = host.to_string_lossy();
    for (from, to) in [
        ("/lib64/", "/usr/lib64/"),
        ("/lib/", "/usr/lib/"),
        ("/bin/", "/usr/bin/"),
        ("/sbin/", "/usr/sbin/"),
    ] {
        if let Some(rest) = s.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    s.into_owned()
}

/// The shared libraries (and the interpreter) `ldd` reports for a binary; none for a static one.
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(io_err("running ldd"))?;
    // ldd exits 1 with "not a dynamic executable" for static binaries.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

fn is_static(bin: &Path) -> Result<bool, ImageError> {
    Ok(shared_libs(bin)?.is_empty())
}

/// Host files going into the image: image path -> host path.
#[derive(Debug, Default)]
struct Payload {
    files: BTreeMap<String, (PathBuf, u32)>,
}

impl Payload {
    fn add_binary(&mut self, host: &Path, at: &str) -> Result<(), ImageError> {
        self.files.insert(at.to_owned(), (host.to_owned(), 0o755));
        for lib in shared_libs(host)? {
            self.files.insert(image_path(&lib), (lib, 0o755));
        }
        Ok(())
    }
}

/// The `/init` script: mount, load modules, switch to the root disk when the kernel command line
/// names one, find the agent's port, hand over to the agent. The same script is `/init` of the
/// initramfs and of the root disk; the disk's marker file tells the second run where it is.
fn init_script() -> String {
    format!(
        r#"#!/bin/sh
# ignis guest init: pseudo filesystems, virtio modules, then the agent as the only service.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ ! -e /{DISK_MARKER} ]; then
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs devtmpfs /dev
  # no depmod data here: the file names put the modules in dependency order
  for m in /lib/modules/ignis/*.ko; do insmod "$m" 2>/dev/null; done
  # a root disk (`{ROOT_PARAM}=/dev/vda`): mount it and run this script again from there
  root=""
  for arg in $(cat /proc/cmdline); do
    case "$arg" in
      {ROOT_PARAM}=*) root="${{arg#{ROOT_PARAM}=}}" ;;
    esac
  done
  if [ -n "$root" ]; then
    for try in $(seq 1 500); do
      [ -b "$root" ] && break
      sleep 0.01
    done
    mkdir -p /newroot
    if ! mount -t ext4 -o noatime,noinit_itable "$root" /newroot; then
      echo "ignis-init: cannot mount the root disk $root" >/dev/console
      poweroff -f
    fi
    for m in dev proc sys; do mount --move /$m /newroot/$m; done
    exec switch_root /newroot /init
  fi
fi
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
hostname ignis
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
# Firecracker has no virtio-serial: its kernel command line says `{TRANSPORT_PARAM}=vsock:PORT`
# and the agent listens on that vsock port instead (explicit, so the choice is deterministic).
vsock_port=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    {TRANSPORT_PARAM}=vsock:*) vsock_port="${{arg#{TRANSPORT_PARAM}=vsock:}}" ;;
  esac
done
if [ -n "$vsock_port" ]; then
  for try in $(seq 1 500); do
    [ -e /dev/vsock ] && break
    sleep 0.01
  done
  if [ ! -e /dev/vsock ]; then
    echo "ignis-init: {TRANSPORT_PARAM}=vsock:$vsock_port but no /dev/vsock" >/dev/console
    poweroff -f
  fi
  echo "ignis-init: agent on vsock port $vsock_port" >/dev/console
  cd /
  exec /usr/bin/ignis-agent --vsock-port "$vsock_port" --poweroff-on-exit
fi
port=""
for try in $(seq 1 500); do
  for p in /sys/class/virtio-ports/*; do
    [ -f "$p/name" ] && [ "$(cat "$p/name")" = "{AGENT_PORT_NAME}" ] && port="/dev/${{p##*/}}"
  done
  [ -n "$port" ] && [ -e "$port" ] && break
  sleep 0.01
done
if [ -z "$port" ]; then
  echo "ignis-init: no virtio-serial port named {AGENT_PORT_NAME}" >/dev/console
  poweroff -f
fi
mkdir -p /dev/virtio-ports
ln -sf "$port" /dev/virtio-ports/{AGENT_PORT_NAME}
echo "ignis-init: agent on $port" >/dev/console
cd /
exec /usr/bin/ignis-agent --serial "$port" --poweroff-on-exit
"#
    )
}

/// The directory the kernel package is unpacked into (cached per package version).
fn ensure_kernel(cache: &Path, pkg: &str, version: &str) -> Result<PathBuf, ImageError> {
    let safe_version = version.replace([':', '/'], "_");
    // the module list is part of the name: a kernel unpacked for an older list lacks modules
    let mut h = Sha256::new();
    // the set, not the load order, decides what is unpacked
    let mut set = MODULES.to_vec();
    set.sort_unstable();
    h.update(set.join("\0"));
    let modules_tag = &hex(&h.finalize())[..8];
    let dir = cache
        .join("kernels")
        .join(format!("{pkg}_{safe_version}_{modules_tag}"));
    if dir.join("ok").is_file() {
        return Ok(dir);
    }
    let parent = cache.join("kernels");
    fs::create_dir_all(&parent).map_err(io_err(format!("creating {}", parent.display())))?;
    let work = tempfile::Builder::new()
        .prefix(".kernel-")
        .tempdir_in(&parent)
        .map_err(io_err("creating a kernel work dir"))?;
    run(Command::new("apt-get")
        .args(["download", "-q", &format!("{pkg}={version}")])
        .current_dir(work.path()))?;
    let deb = fs::read_dir(work.path())
        .map_err(io_err("listing the download dir"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| ImageError::Command {
            command: format!("apt-get download {pkg}"),
            detail: "no .deb file was downloaded".into(),
        })?;
    let root = work.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let out = work.path().join("out");
    fs::create_dir(&out).map_err(io_err("creating kernel out dir"))?;
    let boot = root.join("boot");
    let vmlinuz = fs::read_dir(&boot)
        .map_err(io_err(format!("listing {}", boot.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| ImageError::Command {
            command: format!("dpkg-deb -x {}", deb.display()),
            detail: "no /boot/vmlinuz-* in the package".into(),
        })?;
    let release = vmlinuz
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_owned()
        })
        .unwrap_or_default();
    let bz = fs::read(&vmlinuz).map_err(io_err("reading vmlinuz"))?;
    fs::write(out.join("vmlinuz"), &bz).map_err(io_err("writing vmlinuz"))?;
    match vmlinux::extract_vmlinux(&bz) {
        Ok(elf) => fs::write(out.join("vmlinux"), elf).map_err(io_err("writing vmlinux"))?,
        Err(e) => tracing::warn!("no ELF vmlinux for firecracker: {e}"),
    }
    let mods = root.join("lib/modules").join(&release);
    let mods_out = out.join("modules");
    fs::create_dir(&mods_out).map_err(io_err("creating modules dir"))?;
    for m in MODULES {
        let src = mods.join(m);
        let name = Path::new(m)
            .file_name()
            .ok_or_else(|| ImageError::MissingModule((*m).to_owned()))?;
        fs::copy(&src, mods_out.join(name))
            .map_err(|_| ImageError::MissingModule((*m).to_owned()))?;
    }
    fs::write(out.join("release"), &release).map_err(io_err("writing release"))?;
    fs::write(out.join("ok"), b"").map_err(io_err("writing ok"))?;
    match fs::rename(&out, &dir) {
        Ok(()) => {}
        // another builder won the race: use theirs
        Err(_) if dir.join("ok").is_file() => {}
        Err(e) => return Err(io_err(format!("installing {}", dir.display()))(e)),
    }
    Ok(dir)
}

/// Build the image for `recipe`, or return the cached one with the same key.
///
/// Blocking (downloads, hashing, writing tens of MB): call it from `spawn_blocking`. Builders
/// of the same key (threads or processes) take turns on a lock file, so the second one finds
/// the first one's image instead of building it again.
pub fn build(recipe: &ImageRecipe) -> Result<GuestImage, ImageError> {
    let (pkg, version) = resolve_kernel_cached(&recipe.cache_dir, &recipe.kernel_meta)?;
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(ImageError::NoBusybox)?;
    if !is_static(&busybox)? {
        return Err(ImageError::BusyboxNotStatic(busybox));
    }
    let mut payload = Payload::default();
    payload.add_binary(&recipe.agent, "/usr/bin/ignis-agent")?;
    for prog in &recipe.programs {
        let host = which(prog).ok_or_else(|| ImageError::MissingProgram(prog.clone()))?;
        let name = host
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| prog.clone());
        payload.add_binary(&host, &format!("/usr/bin/{name}"))?;
    }
    payload
        .files
        .insert("/usr/bin/busybox".into(), (busybox.clone(), 0o755));
    let mut packages = recipe.packages.clone();
    packages.sort();
    packages.dedup();
    let debs = if packages.is_empty() {
        Vec::new()
    } else {
        rootdisk::resolve_cached(&recipe.cache_dir, &packages)?
    };

    // The key: recipe version, kernel, the bytes of every host file, the package files.
    let mut h = Sha256::new();
    h.update(RECIPE_VERSION);
    h.update(format!("\0{pkg}\0{version}\0"));
    h.update(init_script());
    let mut agent_sha = String::new();
    for (at, (host, _)) in &payload.files {
        let sum = sha256_file(host)?;
        if at == "/usr/bin/ignis-agent" {
            agent_sha = sum.clone();
        }
        h.update(format!("{at}\0{sum}\0"));
    }
    for d in &debs {
        h.update(format!("deb\0{}\0{}\0", d.file, d.hash));
    }
    let key = hex(&h.finalize())[..16].to_owned();
    let images = images_dir(&recipe.cache_dir);
    let dir = images.join(&key);
    if let Ok(img) = GuestImage::load(&dir) {
        return Ok(img);
    }
    fs::create_dir_all(&images).map_err(io_err(format!("creating {}", images.display())))?;
    let _lock = lock_file(&images.join(format!(".{key}.lock")))?;
    if let Ok(img) = GuestImage::load(&dir) {
        return Ok(img);
    }
    let kernel = ensure_kernel(&recipe.cache_dir, &pkg, &version)?;
    let release =
        fs::read_to_string(kernel.join("release")).map_err(io_err("reading kernel release"))?;

    let work = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&images)
        .map_err(io_err("creating an image work dir"))?;
    let out = work.path().join("img");
    fs::create_dir(&out).map_err(io_err("creating image dir"))?;
    fs::copy(kernel.join("vmlinuz"), out.join("vmlinuz")).map_err(io_err("copying vmlinuz"))?;
    if kernel.join("vmlinux").is_file() {
        // a hard link saves ~60 MB per image; copy across filesystems
        if fs::hard_link(kernel.join("vmlinux"), out.join("vmlinux")).is_err() {
            fs::copy(kernel.join("vmlinux"), out.join("vmlinux"))
                .map_err(io_err("copying vmlinux"))?;
        }
    }
    // strip the agent once for both roots
    if let Some((host, _)) = payload.files.get_mut("/usr/bin/ignis-agent") {
        *host = stripped_copy(host, work.path())?;
    }
    let modules = kernel.join("modules");
    write_initramfs(&out.join("initrd.cpio"), &payload, &busybox, &modules)?;
    if !debs.is_empty() {
        let tree = work.path().join("rootfs");
        rootdisk::unpack(&recipe.cache_dir, &debs, &tree)?;
        let mut sink = TreeSink { root: tree.clone() };
        write_userland(&mut sink, &payload, &busybox, None)?;
        sink.file(DISK_MARKER, 0o644, b"")
            .map_err(io_err("writing the root tree"))?;
        rootdisk::make_ext4(&tree, &out.join("rootfs.ext4"))?;
        // the boot initramfs only needs busybox, the modules and /init
        let mut boot = Payload::default();
        boot.files
            .insert("/usr/bin/busybox".into(), (busybox.clone(), 0o755));
        write_initramfs(&out.join("initrd-boot.cpio"), &boot, &busybox, &modules)?;
    }
    let manifest = Manifest {
        key: key.clone(),
        kernel_package: pkg,
        kernel_version: version,
        kernel_release: release.trim().to_owned(),
        programs: recipe.programs.clone(),
        agent_sha256: agent_sha,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    if !debs.is_empty() {
        let disk = RootDiskManifest {
            packages,
            debs: debs.iter().map(|d| d.file.clone()).collect(),
            size_bytes: rootdisk::ROOT_DISK_BYTES,
        };
        let json = serde_json::to_vec_pretty(&disk).map_err(|e| ImageError::Manifest {
            path: out.join("rootdisk.json"),
            detail: e.to_string(),
        })?;
        fs::write(out.join("rootdisk.json"), json).map_err(io_err("writing rootdisk.json"))?;
    }
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ImageError::Manifest {
        path: out.join("manifest.json"),
        detail: e.to_string(),
    })?;
    fs::write(out.join("manifest.json"), json).map_err(io_err("writing manifest"))?;
    match fs::rename(&out, &dir) {
        Ok(()) => {}
        Err(_) if dir.join("manifest.json").is_file() => {}
        Err(e) => return Err(io_err(format!("installing {}", dir.display()))(e)),
    }
    GuestImage::load(&dir)
}

/// An exclusive `flock` on `path` (created), released when the file is dropped.
fn lock_file(path: &Path) -> Result<fs::File, ImageError> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io_err(format!("locking {}", path.display()))(e.into()))?;
    Ok(f)
}

/// The agent with its debug info stripped when `strip` exists (a debug build is ~50 MB, which
/// the guest would copy into RAM at every boot); the original otherwise.
fn stripped_copy(host: &Path, scratch: &Path) -> Result<PathBuf, ImageError> {
    let Some(strip) = which("strip") else {
        return Ok(host.to_owned());
    };
    let dest = scratch.join("agent.stripped");
    let ok = Command::new(strip)
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dest)
        .arg(host)
        .status()
        .is_ok_and(|s| s.success());
    Ok(if ok { dest } else { host.to_owned() })
}

/// Where a root's entries go: a cpio archive (initramfs) or a directory tree (root disk).
/// Names have no leading `/`.
trait RootSink {
    fn dir(&mut self, name: &str, perm: u32) -> std::io::Result<()>;
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> std::io::Result<()>;
    fn symlink(&mut self, name: &str, target: &str) -> std::io::Result<()>;
    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> std::io::Result<()>;
}

impl<W: Write> RootSink for cpio::NewcWriter<W> {
    fn dir(&mut self, name: &str, perm: u32) -> std::io::Result<()> {
        cpio::NewcWriter::dir(self, name, perm)
    }
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> std::io::Result<()> {
        cpio::NewcWriter::file(self, name, perm, data)
    }
    fn symlink(&mut self, name: &str, target: &str) -> std::io::Result<()> {
        cpio::NewcWriter::symlink(self, name, target)
    }
    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> std::io::Result<()> {
        cpio::NewcWriter::char_dev(self, name, perm, major, minor)
    }
}

/// A directory tree that already holds unpacked packages: files replace what is there (the
/// host's agent, bash, git and their libraries must be the ones that run), links and
/// directories are only added where nothing exists (a package's real program beats a busybox
/// applet), and device nodes are skipped (devtmpfs provides them; mknod would need root).
struct TreeSink {
    root: PathBuf,
}

impl TreeSink {
    fn at(&self, name: &str) -> PathBuf {
        self.root.join(name.trim_start_matches('/'))
    }
}

impl RootSink for TreeSink {
    fn dir(&mut self, name: &str, perm: u32) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.at(name);
        if fs::symlink_metadata(&p).is_ok() {
            return Ok(());
        }
        fs::create_dir_all(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(perm))
    }
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.at(name);
        if let Ok(m) = fs::symlink_metadata(&p) {
            if m.is_dir() {
                fs::remove_dir_all(&p)?;
            } else {
                fs::remove_file(&p)?;
            }
        }
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&p, data)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(perm))
    }
    fn symlink(&mut self, name: &str, target: &str) -> std::io::Result<()> {
        let p = self.at(name);
        if fs::symlink_metadata(&p).is_ok() {
            return Ok(());
        }
        std::os::unix::fs::symlink(target, p)
    }
    fn char_dev(
        &mut self,
        _name: &str,
        _perm: u32,
        _major: u32,
        _minor: u32,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_initramfs(
    path: &Path,
    payload: &Payload,
    busybox: &Path,
    modules: &Path,
) -> Result<(), ImageError> {
    let f = fs::File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    let mut w = cpio::NewcWriter::new(BufWriter::new(f));
    write_userland(&mut w, payload, busybox, Some(modules))?;
    let mut inner = w.finish().map_err(io_err("writing the initramfs"))?;
    inner.flush().map_err(io_err("flushing the initramfs"))?;
    Ok(())
}

/// The userland every root gets: directories, usr-merge links, `/init`, `/etc` basics, the
/// payload (agent, programs, libraries), busybox applets, and (initramfs only) the modules.
fn write_userland<S: RootSink>(
    w: &mut S,
    payload: &Payload,
    busybox: &Path,
    modules: Option<&Path>,
) -> Result<(), ImageError> {
    let e = || io_err("writing the root filesystem");
    let mut dirs = std::collections::BTreeSet::new();
    for d in [
        "usr",
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "usr/local",
        "usr/local/bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "etc",
        "var",
        "var/tmp",
        "home",
        "mnt",
        "newroot",
    ] {
        add_dirs(&mut dirs, d);
    }
    if modules.is_some() {
        add_dirs(&mut dirs, "lib/modules/ignis");
    }
    for at in payload.files.keys() {
        if let Some(parent) = Path::new(at.trim_start_matches('/')).parent() {
            add_dirs(&mut dirs, &parent.to_string_lossy());
        }
    }
    // /lib is a directory (modules); its usr-merged content is reached via lib64/bin links
    for d in &dirs {
        let perm = if d == "tmp" || d == "var/tmp" {
            0o1777
        } else {
            0o755
        };
        w.dir(d, perm).map_err(e())?;
    }
    w.symlink("bin", "usr/bin").map_err(e())?;
    w.symlink("sbin", "usr/sbin").map_err(e())?;
    w.symlink("lib64", "usr/lib64").map_err(e())?;
    w.symlink("lib/x86_64-linux-gnu", "../usr/lib/x86_64-linux-gnu")
        .map_err(e())?;
    w.char_dev("dev/console", 0o600, 5, 1).map_err(e())?;
    w.char_dev("dev/null", 0o666, 1, 3).map_err(e())?;
    w.file("init", 0o755, init_script().as_bytes())
        .map_err(e())?;
    w.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )
    .map_err(e())?;
    w.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")
        .map_err(e())?;
    w.file("etc/hostname", 0o644, b"ignis\n").map_err(e())?;
    w.file("etc/hosts", 0o644, b"127.0.0.1 localhost ignis\n")
        .map_err(e())?;
    for (at, (host, perm)) in &payload.files {
        let data = fs::read(host).map_err(io_err(format!("reading {}", host.display())))?;
        w.file(at, *perm, &data).map_err(e())?;
    }
    // busybox applets, except where a real program is present
    let list = run(Command::new(busybox).arg("--list-full"))?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let at = image_path(Path::new(&format!("/{applet}")));
        if payload.files.contains_key(&at) || at == "/usr/bin/busybox" {
            continue;
        }
        let rel = at.trim_start_matches('/');
        if !dirs.contains(
            &Path::new(rel)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ) {
            continue;
        }
        w.symlink(rel, "/usr/bin/busybox").map_err(e())?;
    }
    let Some(modules) = modules else {
        return Ok(());
    };
    for (i, m) in MODULES.iter().enumerate() {
        let name = Path::new(m)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ImageError::MissingModule((*m).to_owned()))?;
        let src = modules.join(&name);
        let data = fs::read(&src).map_err(|_| ImageError::MissingModule((*m).to_owned()))?;
        w.file(&format!("lib/modules/ignis/{i:02}-{name}"), 0o644, &data)
            .map_err(e())?;
    }
    Ok(())
}

fn add_dirs(dirs: &mut std::collections::BTreeSet<String>, d: &str) {
    let mut acc = String::new();
    for part in d.split('/').filter(|p| !p.is_empty()) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        // these are symlinks into usr/
        if acc == "bin" || acc == "sbin" || acc == "lib64" || acc == "lib/x86_64-linux-gnu" {
            return;
        }
        dirs.insert(acc.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usr_merge_paths() {
        assert_eq!(
            image_path(Path::new("/lib64/ld-linux-x86-64.so.2")),
            "/usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(
            image_path(Path::new("/lib/x86_64-linux-gnu/libc.so.6")),
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(image_path(Path::new("/usr/bin/git")), "/usr/bin/git");
    }

    #[test]
    fn dirs_stop_at_usr_merge_links() {
        let mut d = std::collections::BTreeSet::new();
        add_dirs(&mut d, "lib/x86_64-linux-gnu/foo");
        add_dirs(&mut d, "usr/lib/x86_64-linux-gnu");
        assert!(d.contains("lib"));
        assert!(!d.contains("lib/x86_64-linux-gnu"));
        assert!(d.contains("usr/lib/x86_64-linux-gnu"));
    }

    #[test]
    fn cache_dir_env_override() {
        // only read, never set: the env is process-global and tests run in threads
        if let Some(v) = std::env::var_os(CACHE_DIR_ENV) {
            assert_eq!(cache_dir(), PathBuf::from(v));
        } else {
            assert!(cache_dir().ends_with("ignis"));
        }
    }

    #[test]
    fn list_and_find_on_empty_and_bad_cache() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(list(tmp.path()).expect("list").is_empty());
        assert!(matches!(
            find(tmp.path(), "ab"),
            Err(ImageError::NotFound(_))
        ));
        let bad = tmp.path().join("images/abc");
        fs::create_dir_all(&bad).expect("mkdir");
        fs::write(bad.join("manifest.json"), b"{").expect("write");
        assert!(
            list(tmp.path()).expect("list").is_empty(),
            "a bad manifest is skipped"
        );
    }

    #[test]
    fn remove_refuses_while_a_disk_layer_builds_on_the_image() {
        let Some(qemu_img) = which("qemu-img") else {
            eprintln!("skipped: qemu-img not installed");
            return;
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = tmp.path();
        let dir = cache.join("images/k1");
        fs::create_dir_all(&dir).expect("image dir");
        let manifest = Manifest {
            key: "k1".into(),
            kernel_package: "p".into(),
            kernel_version: "1".into(),
            kernel_release: "r".into(),
            programs: vec![],
            agent_sha256: String::new(),
            created: 1,
        };
        fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec(&manifest).expect("json"),
        )
        .expect("manifest");
        fs::write(dir.join("rootfs.ext4"), vec![0u8; 65536]).expect("disk");
        fs::create_dir_all(cache.join("snapshots")).expect("snapshots");
        let overlay = |name: &str| {
            let ok = Command::new(&qemu_img)
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(dir.join("rootfs.ext4"))
                .arg(cache.join("snapshots").join(name))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "qemu-img create");
        };
        overlay("template-k1-abc.qcow2");
        overlay("step-x.qcow2");
        let img = find(cache, "k1").expect("find");
        let err = remove(&img).expect_err("a snapshot layer uses the disk");
        assert!(err.to_string().contains("step-x.qcow2"), "{err}");
        assert!(dir.is_dir(), "nothing removed");
        fs::remove_file(cache.join("snapshots/step-x.qcow2")).expect("rm layer");
        remove(&img).expect("the image's own templates do not block it");
        assert!(!dir.exists());
        assert!(!cache.join("snapshots/template-k1-abc.qcow2").exists());
    }

    #[test]
    fn package_lists() {
        assert_eq!(
            parse_package_list("python3, git  curl"),
            ["python3", "git", "curl"]
        );
        assert!(parse_package_list("none").is_empty());
        assert!(parse_package_list(" ").is_empty());
    }

    #[test]
    fn init_script_names_the_port() {
        let s = init_script();
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("= \"ignis.agent\""));
        assert!(s.contains("exec /usr/bin/ignis-agent --serial \"$port\" --poweroff-on-exit"));
        // with `ignis.root=`, the initramfs mounts the disk and runs the disk's copy of itself,
        // which sees the marker and goes straight to the agent
        assert!(s.contains("ignis.root=*) root="));
        assert!(s.contains("exec switch_root /newroot /init"));
        assert!(s.contains("if [ ! -e /etc/ignis-root-disk ]; then"));
        let switch = s.find("switch_root").expect("switch");
        let agent = s.find("exec /usr/bin/ignis-agent").expect("agent");
        assert!(switch < agent);
    }

    #[test]
    fn init_script_switches_to_vsock_on_the_cmdline_parameter() {
        let s = init_script();
        assert!(s.contains("$(cat /proc/cmdline)"));
        assert!(
            s.contains("ignis.transport=vsock:*) vsock_port=\"${arg#ignis.transport=vsock:}\"")
        );
        assert!(
            s.contains("exec /usr/bin/ignis-agent --vsock-port \"$vsock_port\" --poweroff-on-exit")
        );
        // the vsock branch comes first: a vsock guest never waits for a serial port
        let vsock = s.find("--vsock-port").expect("vsock exec");
        let serial = s.find("--serial").expect("serial exec");
        assert!(vsock < serial);
        // and the whole script parses
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("init");
        fs::write(&path, &s).expect("write");
        let ok = Command::new("sh")
            .arg("-n")
            .arg(&path)
            .status()
            .expect("sh");
        assert!(ok.success(), "sh -n rejects the init script");
        assert!(
            MODULES
                .iter()
                .any(|m| m.ends_with("/vmw_vsock_virtio_transport.ko"))
        );
    }
}
