//! The sandbox's one syscall layer: every `unsafe` block, libc call and raw syscall of the
//! sandbox backend lives here.
//!
//! Each wrapper explains why the call is needed, carries a `// SAFETY:` line, and turns the
//! return code into an [`io::Result`]. Callers attach a [`Step`] to the error so a failure names
//! the setup step that failed.
//!
//! Two kinds of wrappers live here:
//! - host-side calls made by the ignis process (clone3, mount_setattr, pidfd, SCM_RIGHTS);
//! - child-side calls made between `clone3` and `execve`. Those run in a copy of a
//!   multi-threaded process, so they must be async-signal-safe: no allocation, no locks, no
//!   panics. They take pre-built `&CStr`s and return `io::Error::last_os_error()` values, which
//!   do not allocate.

use std::ffi::{CStr, c_char};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// One step of sandbox setup. The child reports a failing step as its number over the control
/// socket, so every syscall of the child has its own variant (and so its own error message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Waiting for the host's go-ahead (the host vanished).
    WaitGo = 1,
    /// Dropping supplementary groups inside the user namespace.
    SetGroups,
    /// Becoming gid 0 of the user namespace.
    SetGid,
    /// Becoming uid 0 of the user namespace.
    SetUid,
    /// Entering a new cgroup namespace rooted at the session cgroup.
    UnshareCgroup,
    /// Setting the hostname to the vm id.
    SetHostname,
    /// Making every mount private so nothing propagates back to the host.
    MakePrivate,
    /// Mounting the session's scratch tmpfs (upper, work, layer mount points).
    MountScratch,
    /// Creating a directory of the scratch area or of the root skeleton.
    Mkdir,
    /// Marking a masking directory opaque (hides the host's `/root`, `/home`, `/run`, `/tmp`).
    MarkOpaque,
    /// Attaching an idmapped lower layer inside the sandbox.
    MoveMountLower,
    /// Mounting the overlay root filesystem.
    MountOverlay,
    /// Opening the scratch area for the host (snapshots).
    OpenScratch,
    /// Mounting a fresh `/proc` for the pid namespace.
    MountProc,
    /// Mounting the `/dev` tmpfs.
    MountDev,
    /// Creating a device node placeholder in `/dev`.
    CreateDevNode,
    /// Bind-mounting a host device node into `/dev`.
    BindDevNode,
    /// Mounting `/dev/pts`.
    MountDevPts,
    /// Mounting `/dev/shm`.
    MountDevShm,
    /// Creating a `/dev` symlink.
    DevSymlink,
    /// Bringing the loopback interface up.
    LoopbackUp,
    /// Entering the new root (chdir).
    ChdirRoot,
    /// Swapping the root filesystem.
    PivotRoot,
    /// Detaching the host's root from the sandbox.
    DetachOldRoot,
    /// Handing the scratch area to the host.
    SendScratch,
    /// Wiring the agent's stdin/stdout/stderr.
    Dup2,
    /// Executing the agent (or init command).
    Exec,
}

impl Step {
    /// Every step, for decoding the number the child sent.
    const ALL: [Step; 27] = [
        Step::WaitGo,
        Step::SetGroups,
        Step::SetGid,
        Step::SetUid,
        Step::UnshareCgroup,
        Step::SetHostname,
        Step::MakePrivate,
        Step::MountScratch,
        Step::Mkdir,
        Step::MarkOpaque,
        Step::MoveMountLower,
        Step::MountOverlay,
        Step::OpenScratch,
        Step::MountProc,
        Step::MountDev,
        Step::CreateDevNode,
        Step::BindDevNode,
        Step::MountDevPts,
        Step::MountDevShm,
        Step::DevSymlink,
        Step::LoopbackUp,
        Step::ChdirRoot,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::SendScratch,
        Step::Dup2,
        Step::Exec,
    ];

    /// Decodes a step number sent by the child.
    pub fn from_u32(n: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == n)
    }

    /// Human name for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::WaitGo => "waiting for the host",
            Step::SetGroups => "setgroups",
            Step::SetGid => "setresgid",
            Step::SetUid => "setresuid",
            Step::UnshareCgroup => "unshare cgroup namespace",
            Step::SetHostname => "sethostname",
            Step::MakePrivate => "making mounts private",
            Step::MountScratch => "mounting scratch tmpfs",
            Step::Mkdir => "mkdir",
            Step::MarkOpaque => "marking masked directory opaque",
            Step::MoveMountLower => "attaching idmapped lower layer",
            Step::MountOverlay => "mounting overlay root",
            Step::OpenScratch => "opening scratch area",
            Step::MountProc => "mounting /proc",
            Step::MountDev => "mounting /dev",
            Step::CreateDevNode => "creating /dev node",
            Step::BindDevNode => "bind-mounting /dev node",
            Step::MountDevPts => "mounting /dev/pts",
            Step::MountDevShm => "mounting /dev/shm",
            Step::DevSymlink => "creating /dev symlink",
            Step::LoopbackUp => "bringing loopback up",
            Step::ChdirRoot => "chdir to new root",
            Step::PivotRoot => "pivot_root",
            Step::DetachOldRoot => "detaching old root",
            Step::SendScratch => "sending scratch fd",
            Step::Dup2 => "dup2 stdio",
            Step::Exec => "exec agent",
        }
    }
}

/// Marker the child sends with the scratch fd just before exec.
pub const READY: u32 = 0xffff;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

/// A child created by [`clone_sandbox`]: its pid and a pidfd (race-free kill and wait).
#[derive(Debug)]
pub struct Cloned {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

/// Creates the sandbox's first process with `clone3(flags | CLONE_PIDFD)`, then runs `child(arg)`
/// in it. The child is PID 1 of the new pid namespace when `flags` has `CLONE_NEWPID`.
///
/// Why clone3 and not `fork` + `unshare`: the new pid namespace must be entered at creation to
/// make the child PID 1 without a second fork, and `CLONE_PIDFD` gives the host a handle that
/// can never hit a recycled pid.
///
/// All signals are blocked in the calling thread around the clone, so the child starts with
/// every signal blocked and never runs the host's (tokio's) signal handlers; it unblocks them
/// right before exec.
///
/// # Safety
/// `child` runs in a copy of a multi-threaded process: it must only make async-signal-safe
/// calls (the child-side wrappers of this module), must not allocate, lock or panic, and must
/// never return (it ends with exec or `_exit`).
unsafe fn clone_sandbox<T>(flags: u64, child: fn(&T) -> !, arg: &T) -> io::Result<Cloned> {
    let mut pidfd: libc::c_int = -1;
    // SAFETY: all-zero is a valid clone_args (no stack, no tls, no set_tid).
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags | libc::CLONE_PIDFD as u64;
    args.pidfd = std::ptr::addr_of_mut!(pidfd) as u64;
    args.exit_signal = libc::SIGCHLD as u64;

    let mut all: libc::sigset_t = unsafe_sigset_full();
    let mut old: libc::sigset_t = unsafe_sigset_empty();
    // SAFETY: both sets are valid, initialised sigset_t values on our stack.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: clone3 with a null stack behaves like fork: the child continues on a copy of this
    // stack. `args` is a valid clone_args of the size we pass; `pidfd` outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of!(args),
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if ret == 0 {
        // In the child: the caller guarantees `child` is async-signal-safe and never returns.
        child(arg);
    }
    let err = io::Error::last_os_error();
    // SAFETY: restores the mask we saved above; `all` is unused afterwards.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, &mut all) };
    if ret < 0 {
        return Err(err);
    }
    // SAFETY: on success the kernel stored a fresh pidfd that nobody else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Cloned {
        pid: ret as u32,
        pidfd,
    })
}

/// Clones a helper (no new namespaces) that runs [`super::child::run_freeze`] on `plan`: it
/// joins the sandbox's namespaces and swaps its root (snapshot freeze).
pub fn clone_freeze_helper(plan: &super::child::FreezePlan) -> io::Result<Cloned> {
    // SAFETY: child::run_freeze only walks the pre-built plan and makes the async-signal-safe
    // calls of this module; it ends with _exit and never returns. `plan` outlives the clone.
    unsafe { clone_sandbox(0, super::child::run_freeze, plan) }
}

/// Clones the sandbox's first process, which runs [`super::child::run`] on `plan` (the safe
/// entry point; the only caller of [`clone_sandbox`]).
pub fn clone_sandbox_child(
    flags: u64,
    plan: &(&super::child::ChildPlan, &super::child::ExecArgs),
) -> io::Result<Cloned> {
    // SAFETY: child::run only walks the pre-built plan and makes the async-signal-safe calls of
    // this module; it ends with exec or _exit and never returns. `plan` outlives the clone.
    unsafe { clone_sandbox(flags, super::child::run, plan) }
}

fn unsafe_sigset_full() -> libc::sigset_t {
    // SAFETY: sigfillset fully initialises the zeroed set.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut s);
        s
    }
}

fn unsafe_sigset_empty() -> libc::sigset_t {
    // SAFETY: sigemptyset fully initialises the zeroed set.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        s
    }
}

/// Makes a detached mount `fd` (from `open_tree(OPEN_TREE_CLONE)`) idmapped with the mapping
/// of the user namespace `userns`, and read-only.
///
/// Why: the lower layer's files are owned by host uids (root = 0). Inside the sandbox host 0 is
/// unmapped and would show as `nobody`; through an idmapped mount host 0 appears as the
/// sandbox's root without the sandbox ever holding the host's uid 0.
pub fn mount_setattr_idmap(fd: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
    mount_setattr_idmap_as(fd, userns, libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_RDONLY)
}

/// Like [`mount_setattr_idmap`] but writable: for the session's upper tmpfs, so the files the
/// sandbox's root writes are stored with image-relative ids (its root = raw 0), and the upper
/// can later serve as a lower layer of any sandbox without shifting owners.
pub fn mount_setattr_idmap_writable(fd: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
    mount_setattr_idmap_as(fd, userns, libc::MOUNT_ATTR_IDMAP)
}

fn mount_setattr_idmap_as(fd: BorrowedFd<'_>, userns: BorrowedFd<'_>, set: u64) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `fd` and `userns` are open descriptors; `attr` is a valid mount_attr of the size
    // we pass; the empty path with AT_EMPTY_PATH refers to `fd` itself.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
    .map(drop)
}

/// Sends `sig` through a pidfd. Why a pidfd: the pid may already be reaped and reused; the
/// pidfd always names the process we created.
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd is an open pidfd; null siginfo and zero flags are allowed.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

/// Reaps the process behind `pidfd` if it exited (`nohang`) or waits for it. Returns `true`
/// when it was reaped. Why: the sandbox's PID 1 is our child; without this it stays a zombie.
pub fn waitid_pidfd(pidfd: BorrowedFd<'_>, nohang: bool) -> io::Result<bool> {
    // SAFETY: all-zero siginfo_t is a valid out-buffer.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `info` is a valid out-buffer; P_PIDFD takes the pidfd as id.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                flags,
            )
        };
        if r == 0 {
            // SAFETY: waitid filled `info`; si_pid is valid for SIGCHLD-class info.
            return Ok(unsafe { info.si_pid() } != 0);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            // Already reaped: nothing left to wait for.
            Some(libc::ECHILD) => return Ok(true),
            _ => return Err(e),
        }
    }
}

/// Sends `sig` to a plain pid (crash cleanup, where no pidfd survives). Callers check the
/// process start time first so a recycled pid is never hit.
pub fn kill_pid(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill has no memory-safety preconditions.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Receives one control record (step, errno) and at most one fd from the child.
/// Returns `None` at end of stream (the child exec'd or died).
pub fn recv_record(sock: BorrowedFd<'_>) -> io::Result<Option<(u32, i32, Option<OwnedFd>)>> {
    let mut buf = [0u8; 8];
    // Room for exactly one fd.
    let mut cmsg = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero msghdr is valid; we fill the pointers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    let n = loop {
        // SAFETY: msg points at live buffers of the stated sizes.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        break n as usize;
    };
    let mut fd = None;
    // SAFETY: msg was filled by recvmsg; CMSG_* walk only within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
                // The fd is new in our table and owned by nobody else.
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if n == 0 {
        return Ok(None);
    }
    if n < 8 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "short control record",
        ));
    }
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Ok(Some((step, errno, fd)))
}

/// Opens `/proc/self/fd/N`-free handle to a user namespace: `/proc/PID/ns/user`.
pub fn open_userns(pid: u32) -> io::Result<OwnedFd> {
    let path = format!("/proc/{pid}/ns/user");
    let f = std::fs::File::open(path)?;
    Ok(OwnedFd::from(f))
}

/// Makes the child of `cmd`, between fork and exec, join the cgroups whose `cgroup.procs`
/// files are open in `cgroup_procs` (writing "0" moves the writer), so a helper process such
/// as `pasta` is born inside the session's groups: killing the groups takes it along. The
/// fds move into the hook and close on exec (they are `O_CLOEXEC`).
pub fn pre_exec_join_cgroups(cmd: &mut std::process::Command, cgroup_procs: Vec<OwnedFd>) {
    use std::os::unix::process::CommandExt;
    let hook = move || -> io::Result<()> {
        for fd in &cgroup_procs {
            // SAFETY: writes one byte from a static buffer to an fd we own.
            let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and only makes raw `write`
    // syscalls on fds opened before the fork: no allocation, no locks.
    unsafe {
        cmd.pre_exec(hook);
    }
}

// ---------------------------------------------------------------------------------------------
// Child side (async-signal-safe: no allocation, no locks, no panics)
// ---------------------------------------------------------------------------------------------

/// Reads the host's one-byte go-ahead. EOF means the host gave up; the child must exit.
pub fn child_wait_go(fd: RawFd) -> io::Result<()> {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading into a 1-byte stack buffer.
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
        if n == 1 {
            return Ok(());
        }
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

// NOTE: the three id calls below are raw syscalls on purpose. glibc's setgroups/setresuid/
// setresgid broadcast the change to every thread it knows of (SIGSETXID) and wait for them;
// after clone3 the child still has the parent's thread list, so the wrappers can hang forever.
// The child is single-threaded, so the per-thread raw syscall is exactly right.

/// Drops supplementary groups (host root's groups are unmapped inside).
pub fn child_setgroups_empty() -> io::Result<()> {
    // SAFETY: zero-length list, null pointer allowed.
    cvt_long(unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) })
        .map(drop)
}

/// Becomes gid 0 of the user namespace (host gid = the mapped base).
pub fn child_setresgid0() -> io::Result<()> {
    // SAFETY: no pointers.
    cvt_long(unsafe { libc::syscall(libc::SYS_setresgid, 0, 0, 0) }).map(drop)
}

/// Becomes uid 0 of the user namespace. Before this the child still has the host's kuid (0 when
/// ignis runs as root), which is unmapped inside; after it the child's host uid is the mapped
/// base, never the host's root.
pub fn child_setresuid0() -> io::Result<()> {
    // SAFETY: no pointers.
    cvt_long(unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) }).map(drop)
}

/// Enters new namespaces after clone (used for the cgroup namespace, created once the host put
/// us into the session cgroup so that it becomes the namespace's root).
pub fn child_unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: no pointers.
    cvt(unsafe { libc::unshare(flags) }).map(drop)
}

/// Sets the UTS hostname (the vm id).
pub fn child_sethostname(name: &CStr) -> io::Result<()> {
    let b = name.to_bytes();
    // SAFETY: pointer and length describe `name`'s bytes.
    cvt(unsafe { libc::sethostname(b.as_ptr().cast(), b.len()) }).map(drop)
}

/// Sets the file mode creation mask (0 so the modes we pass are the modes we get).
pub fn child_umask(mask: libc::mode_t) {
    // SAFETY: no pointers; umask cannot fail.
    unsafe { libc::umask(mask) };
}

/// `mount(2)` with pre-built C strings.
pub fn child_mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: all pointers are null or point at NUL-terminated strings alive for the call.
    cvt(unsafe { libc::mount(p(src), target.as_ptr(), p(fstype), flags, p(data).cast()) }).map(drop)
}

/// Attaches a detached mount (an idmapped layer made by the host) at `target`.
pub fn child_move_mount(fd: RawFd, target: &CStr) -> io::Result<()> {
    // SAFETY: fd is inherited from the host and open; target is NUL-terminated.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// `mkdir`, treating "already exists" as success (mkdir -p of one component).
pub fn child_mkdir(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: NUL-terminated path.
    match cvt(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets an extended attribute (overlayfs' `user.overlay.opaque` marker).
pub fn child_setxattr(path: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: NUL-terminated path and name; value pointer and length describe `value`.
    cvt(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// Creates an empty regular file (a bind-mount target for a device node).
pub fn child_touch(path: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated path; the returned fd is closed right away.
    let fd = cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o666,
        )
    })?;
    // SAFETY: fd was just opened by us.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `symlink(target, link)`.
pub fn child_symlink(target: &CStr, link: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated strings.
    cvt(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }).map(drop)
}

/// Opens a directory as an fd for the host.
pub fn child_open_dir(path: &CStr) -> io::Result<RawFd> {
    // SAFETY: NUL-terminated path.
    cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// Brings `lo` up in the new network namespace with `SIOCSIFFLAGS` (no `ip` binary needed).
pub fn child_loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation.
    let s = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // struct ifreq: 16-byte name followed by a union whose first member we use is `short flags`.
    let mut ifr = [0u8; 40];
    ifr[..2].copy_from_slice(b"lo");
    // SAFETY: `ifr` is a 40-byte ifreq-shaped buffer with the interface name set.
    let r = unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, ifr.as_mut_ptr()) };
    let r = if r < 0 {
        r
    } else {
        let flags = i16::from_ne_bytes([ifr[16], ifr[17]])
            | (libc::IFF_UP as i16)
            | (libc::IFF_RUNNING as i16);
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: same buffer, now with the new flags.
        unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, ifr.as_mut_ptr()) }
    };
    let err = io::Error::last_os_error();
    // SAFETY: s was opened above.
    unsafe { libc::close(s) };
    if r < 0 { Err(err) } else { Ok(()) }
}

/// `chdir`.
pub fn child_chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated path.
    cvt(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// Joins the namespace behind `fd` (`nstype` = its `CLONE_NEW*` flag).
pub fn child_setns(fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: fd is inherited from the host and open.
    cvt(unsafe { libc::setns(fd, nstype) }).map(drop)
}

/// Moves the mount at `from` to `to` (both paths in the current mount namespace).
pub fn child_move_mount_path(from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated paths.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `pivot_root(".", ".")`: stacks the old root on top of the new one so it can be detached
/// without a put_old directory.
pub fn child_pivot_root_dot() -> io::Result<()> {
    // SAFETY: NUL-terminated literal paths.
    cvt_long(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) }).map(drop)
}

/// Detaches the old root (and every host mount under it) from the sandbox.
pub fn child_detach(path: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated path.
    cvt(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// Sends one control record and optionally an fd (SCM_RIGHTS) to the host.
pub fn child_send_record(sock: RawFd, step: u32, errno: i32, fd: Option<RawFd>) -> io::Result<()> {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&step.to_ne_bytes());
    buf[4..].copy_from_slice(&errno.to_ne_bytes());
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = [0u64; 4];
    // SAFETY: all-zero msghdr is valid; pointers set below point at live stack buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        msg.msg_control = cmsg.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure computation.
        msg.msg_controllen =
            unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        // SAFETY: the control buffer (32 bytes) is large enough for one fd's cmsg (24 bytes).
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: msg describes live buffers.
    cvt(unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) as libc::c_int }).map(drop)
}

/// `dup2`.
pub fn child_dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: no pointers.
    cvt(unsafe { libc::dup2(from, to) }).map(drop)
}

/// Restores default signal state for the agent: SIGPIPE back to default (Rust ignores it in
/// the host) and an empty signal mask (clone_sandbox blocked everything).
pub fn child_reset_signals() {
    // SAFETY: plain libc calls on stack values; failures leave the old state, which the agent
    // can still fix itself.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let empty = unsafe_sigset_empty();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Executes the binary behind `fd` (opened on the host before pivot_root, so the agent needs no
/// path inside the sandbox). Only returns on failure.
pub fn child_execveat(fd: RawFd, argv: &[*const c_char], envp: &[*const c_char]) -> io::Error {
    // SAFETY: argv and envp are null-terminated arrays of pointers to NUL-terminated strings
    // owned by the caller's pre-built plan.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// `execve` by path (init commands given by the caller).
pub fn child_execve(path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> io::Error {
    // SAFETY: see child_execveat.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// Ends the child without running any of the host's exit handlers.
pub fn child_exit(code: libc::c_int) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_their_numbers() {
        for s in Step::ALL {
            assert_eq!(Step::from_u32(s as u32), Some(s));
            assert!(!s.name().is_empty());
        }
        assert_eq!(Step::from_u32(0), None);
        assert_eq!(Step::from_u32(READY), None);
    }
}
