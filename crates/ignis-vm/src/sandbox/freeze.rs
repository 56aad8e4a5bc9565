//! O(1) snapshots: the live sandbox's upper tmpfs is frozen as a layer and the sandbox moves
//! onto a new overlay (old upper + old lowers as lowers, a fresh upper), without copying.
//!
//! How (root mode, upper made by the host, see `make_upper`):
//! 1. The sandbox must be idle: PID 1 alone in its pid namespace, its cwd `/`, no fd of it on
//!    the root filesystem. Otherwise something could keep writing through the old overlay into
//!    what is now a lower layer elsewhere, so the caller copies instead.
//! 2. The snapshot's directory in the store is claimed (`mkdir`) and the upper tmpfs is
//!    attached there (`move_mount`), still without a manifest, so no restore can use it yet.
//! 3. A helper cloned from the host joins the sandbox's user namespace (as its root) and mount
//!    namespace, builds the new overlay from fds (`fsconfig(FSCONFIG_SET_FD, "lowerdir+")`),
//!    attaches it on a plain directory of the current root, moves `/proc`, `/dev`, `/sys` and
//!    any other submount into it and `pivot_root(".", ".")`s: the kernel moves every process
//!    whose root and cwd are the old root (PID 1) onto the new root. The old root is detached.
//! 4. The frozen `upper/` is renamed `layer/` and the manifest written: the snapshot exists.
//!
//! The frozen files already carry image-relative owners (the upper was idmapped), so the
//! layer needs no id shifting. The old overlay lingers (read-only use) while the agent's
//! mapped libraries, loaded from it, are alive; nothing writes through it.

use super::child::{FreezePlan, FreezeStep};
use super::snapshot::{self, Manifest};
use super::{Inner, SandboxError, sys};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Directories tried, in order, as the new overlay's attach point.
const ATTACH_CANDIDATES: [&str; 4] = ["/tmp", "/mnt", "/opt", "/srv"];

/// Why the sandbox with PID 1 `pid` cannot be frozen now (`None` = it can).
fn busy_reason(pid: u32) -> Option<String> {
    let ns = |p: &str| fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(own) = ns(&pid.to_string()) else {
        return Some("its PID 1 is gone".into());
    };
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if n != pid.to_string() && ns(n).as_ref() == Some(&own) {
            return Some(format!("process {n} runs in it"));
        }
    }
    match fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) if cwd == Path::new("/") => {}
        _ => return Some("its PID 1 is not in /".into()),
    }
    let root_dev = fs::metadata(format!("/proc/{pid}/root")).ok()?.dev();
    for e in fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if fs::metadata(e.path()).is_ok_and(|m| m.dev() == root_dev) {
            return Some("its PID 1 holds a file of the root filesystem open".into());
        }
    }
    None
}

/// Mount points of the submounts directly under the root of `pid`'s mount namespace.
fn submounts(mountinfo: &str) -> Vec<String> {
    let rows: Vec<(&str, &str, String)> = mountinfo
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let id = f.next()?;
            let parent = f.next()?;
            let mp = f.nth(2)?;
            Some((id, parent, super::cgroup::unescape_mountinfo(mp)))
        })
        .collect();
    let Some(root) = rows.iter().rev().find(|r| r.2 == "/").map(|r| r.0) else {
        return Vec::new();
    };
    rows.iter()
        .filter(|r| r.1 == root && r.0 != root)
        .map(|r| r.2.clone())
        .collect()
}

fn cstr(s: String) -> Result<CString, SandboxError> {
    CString::new(s).map_err(|_| SandboxError::Nul("mount point"))
}

/// What the freeze needs from the live sandbox.
pub(super) struct Target {
    pub pid: u32,
    pub upper: OwnedFd,
    pub layers: Vec<String>,
    pub image: PathBuf,
    pub disk_mib: u64,
}

/// Freezes sandbox `id`'s upper as snapshot `name`. `Ok(None)`: not possible now (not idle,
/// unprivileged mode); the caller copies instead. On success the live sandbox runs on the new
/// overlay and its state (upper, layers, locks) is updated.
pub(super) fn try_freeze(
    inner: &Inner,
    id: &str,
    name: &str,
    store: &Path,
) -> Result<Option<crate::SnapshotId>, SandboxError> {
    let _serial = inner
        .freeze_lock
        .lock()
        .map_err(|_| SandboxError::Snapshot("freeze lock poisoned".into()))?;
    let target = {
        let live = inner
            .live
            .lock()
            .map_err(|_| SandboxError::Snapshot("state lock poisoned".into()))?;
        let l = live
            .get(id)
            .ok_or_else(|| SandboxError::Snapshot(format!("unknown vm {id}")))?;
        let (Some(_), Some(upper)) = (l.uid_base, l.upper_mount.as_ref()) else {
            return Ok(None);
        };
        Target {
            pid: l.pid,
            upper: upper.try_clone().map_err(SandboxError::Upper)?,
            layers: l.layers.clone(),
            image: l.image.clone(),
            disk_mib: l.disk_mib,
        }
    };
    if let Some(why) = busy_reason(target.pid) {
        tracing::debug!(vm = id, "snapshot copies: the sandbox is not idle ({why})");
        return Ok(None);
    }
    let mountinfo = fs::read_to_string(format!("/proc/{}/mountinfo", target.pid))
        .map_err(|e| SandboxError::Snapshot(format!("reading the sandbox's mounts: {e}")))?;
    let subs = submounts(&mountinfo);
    let root = PathBuf::from(format!("/proc/{}/root", target.pid));
    let Some(attach) = ATTACH_CANDIDATES.iter().find(|c| {
        !subs.iter().any(|s| s == *c || Path::new(s).starts_with(c))
            && root.join(c.trim_start_matches('/')).is_dir()
    }) else {
        tracing::debug!(
            vm = id,
            "snapshot copies: no free directory to attach the new root"
        );
        return Ok(None);
    };

    // Claim the name; the frozen tmpfs is attached here before the swap.
    let dest = store.join(name);
    match fs::DirBuilder::new().mode(0o700).create(&dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(SandboxError::Snapshot(format!(
                "snapshot {name} already exists"
            )));
        }
        Err(e) => {
            return Err(SandboxError::Snapshot(format!(
                "claiming {}: {e}",
                dest.display()
            )));
        }
    }
    let claim = dest.join(format!(".claim-{}", snapshot::owner_tag()));
    let unclaim = |attached: bool| {
        if attached {
            let _ = rustix::mount::unmount(&dest, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = fs::remove_file(&claim);
        let _ = fs::remove_dir(&dest);
    };
    // The claim is marked twice: on the directory, and in the tmpfs that will cover it, so a
    // crash sweep can tell a dead owner's half-made snapshot either way.
    let claim_name = format!(".claim-{}", snapshot::owner_tag());
    let marked = fs::write(&claim, b"").and_then(|()| {
        rustix::fs::openat(
            target.upper.as_fd(),
            claim_name.as_str(),
            rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .map(drop)
        .map_err(io::Error::from)
    });
    if let Err(e) = marked {
        unclaim(false);
        return Err(SandboxError::Snapshot(format!(
            "claiming {}: {e}",
            dest.display()
        )));
    }
    let attach_store = rustix::mount::move_mount(
        target.upper.as_fd(),
        "",
        rustix::fs::CWD,
        &dest,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    );
    if let Err(e) = attach_store {
        unclaim(false);
        return Err(SandboxError::Snapshot(format!(
            "attaching the frozen layer: {e}"
        )));
    }

    match swap(inner, &target, attach, &subs) {
        Ok(new_upper) => {
            let done = finish(store, name, &target, &dest);
            if let Err(e) = &done {
                tracing::error!(vm = id, error = %super::chain(e), "snapshot frozen but not recorded");
            }
            let lock = done.and_then(|()| snapshot::lock_layer(store, name));
            let mut live = inner
                .live
                .lock()
                .map_err(|_| SandboxError::Snapshot("state lock poisoned".into()))?;
            if let Some(l) = live.get_mut(id) {
                // The sandbox runs on the new overlay whatever happens next.
                l.upper_mount = Some(new_upper);
                l.layers.insert(0, name.to_owned());
                if let Ok(f) = &lock {
                    l.layer_locks
                        .push(f.try_clone().map_err(SandboxError::Upper)?);
                } else {
                    l.broken = true;
                }
            }
            lock.map(|_| Some(crate::SnapshotId(name.to_owned())))
        }
        Err((changed, e)) => {
            unclaim(true);
            if changed {
                // The helper's undo may not have restored the old root: no later snapshot of
                // this sandbox can trust what it believes its upper and layers are.
                if let Ok(mut live) = inner.live.lock()
                    && let Some(l) = live.get_mut(id)
                {
                    l.broken = true;
                }
                Err(e)
            } else {
                tracing::warn!(vm = id, error = %super::chain(&e), "snapshot freeze failed; copying instead");
                Ok(None)
            }
        }
    }
}

/// Renames the frozen `upper/` to `layer/` and writes the manifest (which makes the snapshot
/// visible to restore).
fn finish(store: &Path, name: &str, t: &Target, dest: &Path) -> Result<(), SandboxError> {
    let err = |e: io::Error| SandboxError::Snapshot(format!("recording snapshot {name}: {e}"));
    fs::rename(dest.join("upper"), dest.join("layer")).map_err(err)?;
    fs::remove_file(dest.join(format!(".claim-{}", snapshot::owner_tag()))).map_err(err)?;
    let m = Manifest {
        format: snapshot::FORMAT,
        parents: t.layers.clone(),
        image: t.image.clone(),
    };
    let text = serde_json::to_vec_pretty(&m).map_err(|e| err(io::Error::other(e)))?;
    snapshot::write_manifest(store, name, &text).map_err(err)
}

/// Builds the new upper and the layers and runs the helper. `Err((changed, e))`: `changed`
/// when the sandbox may have been modified (the helper got past attaching and its rollback
/// may have failed).
fn swap(
    inner: &Inner,
    t: &Target,
    attach: &str,
    subs: &[String],
) -> Result<OwnedFd, (bool, SandboxError)> {
    let early = |e: SandboxError| (false, e);
    let snap = |what: &str, e: io::Error| SandboxError::Snapshot(format!("{what}: {e}"));
    let userns =
        sys::open_userns(t.pid).map_err(|e| early(snap("opening the user namespace", e)))?;
    let mntns = fs::File::open(format!("/proc/{}/ns/mnt", t.pid))
        .map_err(|e| early(snap("opening the mount namespace", e)))?;
    let (new_upper, new_clone) =
        super::make_upper(t.disk_mib).map_err(|e| early(SandboxError::Upper(e)))?;
    sys::mount_setattr_idmap_writable(new_clone.as_fd(), userns.as_fd())
        .map_err(|e| early(snap("idmapping the new upper", e)))?;
    let clone_idmapped =
        |fd: std::os::fd::BorrowedFd<'_>, path: &Path| -> Result<OwnedFd, SandboxError> {
            let flags = rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC;
            let c = rustix::mount::open_tree(fd, path, flags)
                .map_err(|e| snap(&format!("cloning {}", path.display()), e.into()))?;
            sys::mount_setattr_idmap(c.as_fd(), userns.as_fd())
                .map_err(|e| snap(&format!("idmapping {}", path.display()), e))?;
            Ok(c)
        };
    // The frozen upper, seen through a read-only idmapped clone of its tmpfs.
    let frozen = rustix::mount::open_tree(
        t.upper.as_fd(),
        "",
        rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
            | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC
            | rustix::mount::OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| early(snap("cloning the frozen upper", e.into())))?;
    sys::mount_setattr_idmap(frozen.as_fd(), userns.as_fd())
        .map_err(|e| early(snap("idmapping the frozen upper", e)))?;
    let store = inner.snapshot_store();
    let mut lowers = Vec::new();
    for p in t
        .layers
        .iter()
        .map(|l| store.join(l).join("layer"))
        .chain(std::iter::once(t.image.clone()))
    {
        lowers.push(clone_idmapped(rustix::fs::CWD, &p).map_err(early)?);
    }
    // Staging layout under `attach`: f = frozen upper tmpfs, u = new upper tmpfs, l<i> = the
    // old lowers, root = the new overlay.
    let st = |x: &str| format!("{attach}/{x}");
    let mut mkdirs = vec![st("f"), st("u"), st("root")];
    let mut attach_fds = vec![
        (frozen.as_raw_fd(), st("f")),
        (new_clone.as_raw_fd(), st("u")),
    ];
    let mut lower_opts = vec![st("f/upper")];
    for (i, l) in lowers.iter().enumerate() {
        let mp = st(&format!("l{i}"));
        mkdirs.push(mp.clone());
        attach_fds.push((l.as_raw_fd(), mp.clone()));
        lower_opts.push(mp);
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lower_opts.join(":"),
        st("u/upper"),
        st("u/work")
    );
    let moves = subs
        .iter()
        .map(|m| Ok((cstr(m.clone())?, cstr(format!("{}{m}", st("root")))?)))
        .collect::<Result<Vec<_>, SandboxError>>()
        .map_err(early)?;
    let (ctl_host, ctl_child) =
        UnixStream::pair().map_err(|e| early(SandboxError::Channel("freeze control", e)))?;
    let plan = FreezePlan {
        ctl: ctl_child.as_raw_fd(),
        userns: userns.as_raw_fd(),
        mntns: mntns.as_raw_fd(),
        staging: cstr(attach.to_owned()).map_err(early)?,
        mkdirs: mkdirs
            .into_iter()
            .map(cstr)
            .collect::<Result<_, _>>()
            .map_err(early)?,
        attach: attach_fds
            .into_iter()
            .map(|(fd, p)| Ok((fd, cstr(p)?)))
            .collect::<Result<_, SandboxError>>()
            .map_err(early)?,
        overlay_target: cstr(st("root")).map_err(early)?,
        overlay_opts: cstr(opts).map_err(early)?,
        moves,
    };
    let helper = sys::clone_freeze_helper(&plan).map_err(|e| early(SandboxError::Clone(e)))?;
    drop(ctl_child);
    let record = sys::recv_record(ctl_host.as_fd());
    let _ = sys::waitid_pidfd(helper.pidfd.as_fd(), false);
    match record {
        Ok(Some((sys::READY, _, _))) => Ok(new_upper),
        Ok(Some((step, errno, _))) => {
            let step = FreezeStep::from_u32(step);
            let changed = step.is_none_or(FreezeStep::changes_sandbox);
            let what = step.map_or("an unknown step", FreezeStep::name);
            Err((
                changed,
                SandboxError::Snapshot(format!(
                    "freezing the sandbox failed at {what}: {}",
                    io::Error::from_raw_os_error(errno)
                )),
            ))
        }
        Ok(None) => Err((true, SandboxError::ChildVanished)),
        Err(e) => Err((true, SandboxError::Control(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submounts_are_the_children_of_the_root() {
        let mi = "\
300 200 0:50 / / rw - overlay overlay rw
301 300 0:51 / /proc rw - proc proc rw
302 300 0:52 / /dev rw - tmpfs tmpfs rw
303 302 0:5 /null /dev/null rw - devtmpfs udev rw
304 300 0:53 / /sys ro - sysfs sysfs ro
305 300 0:54 / /my\\040dir rw - tmpfs tmpfs rw";
        assert_eq!(submounts(mi), vec!["/proc", "/dev", "/sys", "/my dir"]);
        assert!(submounts("").is_empty());
    }
}
