//! What the sandbox's first process does between `clone3` and `exec`.
//!
//! Everything the child needs is computed by the host into a [`ChildPlan`] *before* clone: the
//! child runs in a copy of a multi-threaded process and may not allocate. It only walks the
//! plan and calls the async-signal-safe wrappers of [`super::sys`]. A failing step is reported
//! to the host as `(step, errno)` over the control socket, then the child exits.

use super::sys::{self, Step};
use std::ffi::{CStr, CString, c_char};
use std::io;
use std::os::fd::RawFd;

/// A lower layer of the overlay.
#[derive(Debug)]
pub enum Lower {
    /// A detached (idmapped) mount made by the host, attached by the child at `mountpoint`.
    Fd { fd: RawFd, mountpoint: CString },
    /// A host path used as it is (no idmapping: unprivileged mode).
    Path,
}

/// How the child ends: exec the agent from an fd, or exec a given command (tests, tools).
#[derive(Debug)]
pub enum Exec {
    /// `execveat(fd, "", AT_EMPTY_PATH)` of the agent binary opened on the host.
    Fd(RawFd),
    /// `execve(path)` inside the new root.
    Path(CString),
}

/// Everything the child does, prepared by the host. All strings are pre-built.
#[derive(Debug)]
pub struct ChildPlan {
    pub ctl: RawFd,
    pub stdio: RawFd,
    pub stderr: RawFd,
    /// Root mode: drop supplementary groups (only allowed when the host wrote gid_map with
    /// privileges).
    pub setgroups: bool,
    pub hostname: CString,
    /// The scratch mount point (an empty host directory, only ever mounted inside the child).
    pub scratch: CString,
    pub scratch_opts: CString,
    /// Directories to create in the scratch area (upper, work, root, layer mount points).
    pub scratch_dirs: Vec<CString>,
    pub lowers: Vec<Lower>,
    /// Directories to create in the upper layer before mounting: (path, mode, opaque).
    pub upper_dirs: Vec<(CString, libc::mode_t, bool)>,
    pub overlay_target: CString,
    pub overlay_opts: CString,
    pub proc_dir: CString,
    pub dev_dir: CString,
    /// (placeholder inside the new /dev, host device node)
    pub dev_nodes: Vec<(CString, CString)>,
    pub pts_dir: CString,
    pub shm_dir: CString,
    /// (target, link path)
    pub dev_links: Vec<(CString, CString)>,
    pub sys_dir: CString,
    pub loopback: bool,
    pub exec: Exec,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

/// The child's pointer arrays for exec, built on the host (they point into a `ChildPlan`).
#[derive(Debug)]
pub struct ExecArgs {
    pub argv: Vec<*const c_char>,
    pub envp: Vec<*const c_char>,
}

impl ExecArgs {
    /// Null-terminated pointer arrays into `plan`. `plan` must outlive the clone.
    pub fn new(plan: &ChildPlan) -> ExecArgs {
        let ptrs = |v: &[CString]| {
            let mut p: Vec<*const c_char> = v.iter().map(|s| s.as_ptr()).collect();
            p.push(std::ptr::null());
            p
        };
        ExecArgs {
            argv: ptrs(&plan.argv),
            envp: ptrs(&plan.envp),
        }
    }
}

const OPAQUE_NAME: &CStr = c"user.overlay.opaque";

/// Runs the plan; never returns. On failure reports `(step, errno)` to the host and exits 127.
pub fn run((plan, args): &(&ChildPlan, &ExecArgs)) -> ! {
    let (step, err) = match setup(plan, args) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let errno = err.raw_os_error().unwrap_or(libc::EIO);
    // Nothing more can be done if the host is gone.
    let _ = sys::child_send_record(plan.ctl, step as u32, errno, None);
    sys::child_exit(127)
}

fn at(step: Step) -> impl Fn(io::Error) -> (Step, io::Error) {
    move |e| (step, e)
}

fn setup(plan: &ChildPlan, args: &ExecArgs) -> Result<std::convert::Infallible, (Step, io::Error)> {
    sys::child_wait_go(plan.ctl).map_err(at(Step::WaitGo))?;
    if plan.setgroups {
        sys::child_setgroups_empty().map_err(at(Step::SetGroups))?;
    }
    sys::child_setresgid0().map_err(at(Step::SetGid))?;
    sys::child_setresuid0().map_err(at(Step::SetUid))?;
    sys::child_unshare(libc::CLONE_NEWCGROUP).map_err(at(Step::UnshareCgroup))?;
    sys::child_sethostname(&plan.hostname).map_err(at(Step::SetHostname))?;
    sys::child_umask(0);

    // Nothing we mount may propagate back into the host's mount namespace.
    sys::child_mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(at(Step::MakePrivate))?;
    sys::child_mount(
        Some(c"tmpfs"),
        &plan.scratch,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&plan.scratch_opts),
    )
    .map_err(at(Step::MountScratch))?;
    for d in &plan.scratch_dirs {
        sys::child_mkdir(d, 0o755).map_err(at(Step::Mkdir))?;
    }
    for l in &plan.lowers {
        if let Lower::Fd { fd, mountpoint } = l {
            sys::child_move_mount(*fd, mountpoint).map_err(at(Step::MoveMountLower))?;
        }
    }
    for (d, mode, opaque) in &plan.upper_dirs {
        sys::child_mkdir(d, *mode).map_err(at(Step::Mkdir))?;
        if *opaque {
            sys::child_setxattr(d, OPAQUE_NAME, b"y").map_err(at(Step::MarkOpaque))?;
        }
    }
    sys::child_mount(
        Some(c"overlay"),
        &plan.overlay_target,
        Some(c"overlay"),
        0,
        Some(&plan.overlay_opts),
    )
    .map_err(at(Step::MountOverlay))?;
    let scratch_fd = sys::child_open_dir(&plan.scratch).map_err(at(Step::OpenScratch))?;

    // A fresh /proc shows only this pid namespace (must be mounted while the host's /proc is
    // still visible, or the kernel refuses it as "too revealing").
    sys::child_mount(
        Some(c"proc"),
        &plan.proc_dir,
        Some(c"proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(at(Step::MountProc))?;
    sys::child_mount(
        Some(c"tmpfs"),
        &plan.dev_dir,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(c"mode=755,size=64k"),
    )
    .map_err(at(Step::MountDev))?;
    for (inside, host) in &plan.dev_nodes {
        sys::child_touch(inside).map_err(at(Step::CreateDevNode))?;
        sys::child_mount(Some(host), inside, None, libc::MS_BIND, None)
            .map_err(at(Step::BindDevNode))?;
    }
    sys::child_mkdir(&plan.pts_dir, 0o755).map_err(at(Step::Mkdir))?;
    sys::child_mount(
        Some(c"devpts"),
        &plan.pts_dir,
        Some(c"devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(at(Step::MountDevPts))?;
    sys::child_mkdir(&plan.shm_dir, 0o1777).map_err(at(Step::Mkdir))?;
    sys::child_mount(
        Some(c"tmpfs"),
        &plan.shm_dir,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(c"mode=1777"),
    )
    .map_err(at(Step::MountDevShm))?;
    for (target, link) in &plan.dev_links {
        sys::child_symlink(target, link).map_err(at(Step::DevSymlink))?;
    }
    // sysfs needs the network namespace to be ours; with the host's network it is refused and
    // /sys stays an empty directory, which is fine for build jobs.
    let _ = sys::child_mount(
        Some(c"sysfs"),
        &plan.sys_dir,
        Some(c"sysfs"),
        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    );
    if plan.loopback {
        sys::child_loopback_up().map_err(at(Step::LoopbackUp))?;
    }

    sys::child_chdir(&plan.overlay_target).map_err(at(Step::ChdirRoot))?;
    sys::child_pivot_root_dot().map_err(at(Step::PivotRoot))?;
    sys::child_detach(c".").map_err(at(Step::DetachOldRoot))?;
    sys::child_chdir(c"/").map_err(at(Step::ChdirRoot))?;

    sys::child_send_record(plan.ctl, sys::READY, 0, Some(scratch_fd))
        .map_err(at(Step::SendScratch))?;
    sys::child_dup2(plan.stdio, 0).map_err(at(Step::Dup2))?;
    sys::child_dup2(plan.stdio, 1).map_err(at(Step::Dup2))?;
    sys::child_dup2(plan.stderr, 2).map_err(at(Step::Dup2))?;
    sys::child_umask(0o022);
    sys::child_reset_signals();
    let err = match &plan.exec {
        Exec::Fd(fd) => sys::child_execveat(*fd, &args.argv, &args.envp),
        Exec::Path(p) => sys::child_execve(p, &args.argv, &args.envp),
    };
    Err((Step::Exec, err))
}

/// Steps of the freeze helper, reported to the host as `(step, errno)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum FreezeStep {
    SetnsUser = 1,
    SetGroups,
    SetGid,
    SetUid,
    SetnsMnt,
    MountStaging,
    Mkdir,
    AttachLayer,
    MountOverlay,
    MoveSubmount,
    Chdir,
    PivotRoot,
    DetachOldRoot,
}

impl FreezeStep {
    const ALL: [FreezeStep; 13] = [
        FreezeStep::SetnsUser,
        FreezeStep::SetGroups,
        FreezeStep::SetGid,
        FreezeStep::SetUid,
        FreezeStep::SetnsMnt,
        FreezeStep::MountStaging,
        FreezeStep::Mkdir,
        FreezeStep::AttachLayer,
        FreezeStep::MountOverlay,
        FreezeStep::MoveSubmount,
        FreezeStep::Chdir,
        FreezeStep::PivotRoot,
        FreezeStep::DetachOldRoot,
    ];

    /// The step a number names (`None` for anything else, e.g. `READY`).
    pub fn from_u32(n: u32) -> Option<FreezeStep> {
        FreezeStep::ALL.iter().copied().find(|s| *s as u32 == n)
    }

    /// What the step does, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            FreezeStep::SetnsUser => "joining the sandbox's user namespace",
            FreezeStep::SetGroups => "dropping supplementary groups",
            FreezeStep::SetGid => "becoming gid 0 of the sandbox",
            FreezeStep::SetUid => "becoming uid 0 of the sandbox",
            FreezeStep::SetnsMnt => "joining the sandbox's mount namespace",
            FreezeStep::MountStaging => "mounting the staging tmpfs",
            FreezeStep::Mkdir => "creating a staging directory",
            FreezeStep::AttachLayer => "attaching a layer in the staging area",
            FreezeStep::MountOverlay => "mounting the new overlay",
            FreezeStep::MoveSubmount => "moving /proc, /dev and other submounts to the new root",
            FreezeStep::Chdir => "entering the new root",
            FreezeStep::PivotRoot => "pivoting into the new root",
            FreezeStep::DetachOldRoot => "detaching the old root",
        }
    }

    /// Whether a failure at this step may have changed the sandbox (after the staging tmpfs
    /// was mounted; the helper then tries to undo what it did).
    pub fn changes_sandbox(self) -> bool {
        self as u32 >= FreezeStep::MountStaging as u32
    }
}

/// What the freeze helper does, prepared by the host (fds are open in the host and inherited
/// by the clone; strings are pre-built). Layers are attached in a staging tmpfs mounted over a
/// plain directory of the sandbox's root, as the sandbox's own child does in its scratch area:
/// overlayfs, mounted inside a user namespace, wants them attached in the mount namespace.
#[derive(Debug)]
pub struct FreezePlan {
    pub ctl: RawFd,
    pub userns: RawFd,
    pub mntns: RawFd,
    /// The staging directory (e.g. `/tmp`), overmounted by a tmpfs for the swap.
    pub staging: CString,
    /// Directories to create in the staging tmpfs (layer mount points, the new root).
    pub mkdirs: Vec<CString>,
    /// Detached layer mounts and where to attach them in the staging area.
    pub attach: Vec<(RawFd, CString)>,
    /// Where the new overlay is mounted (in the staging area) and its options.
    pub overlay_target: CString,
    pub overlay_opts: CString,
    /// Submounts of the current root: (their mount point, the same path under the new root).
    pub moves: Vec<(CString, CString)>,
}

/// The freeze helper: joins the sandbox's user (as its root) and mount namespaces, mounts the
/// new overlay in a staging tmpfs, moves the submounts into it and pivots every process whose
/// root is the old root into it; then detaches the old root. A failure before the pivot is
/// undone (submounts moved back, staging detached). Never returns.
pub fn run_freeze(plan: &FreezePlan) -> ! {
    let mut moved = 0usize;
    let mut staged = false;
    let result = freeze(plan, &mut moved, &mut staged);
    match result {
        Ok(()) => {
            let _ = sys::child_send_record(plan.ctl, sys::READY, 0, None);
            sys::child_exit(0)
        }
        Err((step, err)) => {
            if staged {
                for (from, to) in plan.moves[..moved].iter().rev() {
                    let _ = sys::child_move_mount_path(to, from);
                }
                let _ = sys::child_detach(&plan.staging);
            }
            let errno = err.raw_os_error().unwrap_or(libc::EIO);
            let _ = sys::child_send_record(plan.ctl, step as u32, errno, None);
            sys::child_exit(1)
        }
    }
}

fn freeze(
    plan: &FreezePlan,
    moved: &mut usize,
    staged: &mut bool,
) -> Result<(), (FreezeStep, io::Error)> {
    let at = |step: FreezeStep| move |e: io::Error| (step, e);
    sys::child_setns(plan.userns, libc::CLONE_NEWUSER).map_err(at(FreezeStep::SetnsUser))?;
    sys::child_setgroups_empty().map_err(at(FreezeStep::SetGroups))?;
    sys::child_setresgid0().map_err(at(FreezeStep::SetGid))?;
    sys::child_setresuid0().map_err(at(FreezeStep::SetUid))?;
    sys::child_setns(plan.mntns, libc::CLONE_NEWNS).map_err(at(FreezeStep::SetnsMnt))?;
    sys::child_mount(
        Some(c"tmpfs"),
        &plan.staging,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(c"mode=700,size=64k"),
    )
    .map_err(at(FreezeStep::MountStaging))?;
    *staged = true;
    for d in &plan.mkdirs {
        sys::child_mkdir(d, 0o755).map_err(at(FreezeStep::Mkdir))?;
    }
    for (fd, target) in &plan.attach {
        sys::child_move_mount(*fd, target).map_err(at(FreezeStep::AttachLayer))?;
    }
    sys::child_mount(
        Some(c"overlay"),
        &plan.overlay_target,
        Some(c"overlay"),
        0,
        Some(&plan.overlay_opts),
    )
    .map_err(at(FreezeStep::MountOverlay))?;
    for (from, to) in &plan.moves {
        sys::child_move_mount_path(from, to).map_err(at(FreezeStep::MoveSubmount))?;
        *moved += 1;
    }
    sys::child_chdir(&plan.overlay_target).map_err(at(FreezeStep::Chdir))?;
    sys::child_pivot_root_dot().map_err(at(FreezeStep::PivotRoot))?;
    *staged = false;
    sys::child_detach(c".").map_err(at(FreezeStep::DetachOldRoot))?;
    sys::child_chdir(c"/").map_err(at(FreezeStep::Chdir))?;
    Ok(())
}
