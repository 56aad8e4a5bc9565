//! Per-session cgroups: memory, pids and CPU limits, on cgroup v2 where the controller is
//! enabled there, else on its cgroup v1 hierarchy (hybrid hosts such as this project's CI
//! machine, whose v2 hierarchy only offers `hugetlb`).
//!
//! Detection runs once per provider; a controller that is usable nowhere is reported once by
//! the provider and the sandbox runs without that limit.
//!
//! Testing: this project's CI host is hybrid (its v2 hierarchy offers only `hugetlb`), so the
//! v2 path is checked by unit tests against a temp dir laid out like a cgroup2 root (detection
//! from a mountinfo line, the `subtree_control` writes, the exact limit values), and by an
//! integration test that runs where v2 offers memory and pids and skips loudly elsewhere. Killing never depends on cgroups (the
//! agent is PID 1 of the sandbox's pid namespace); a group is only an extra net.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The controllers the sandbox limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// Where one controller lives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hierarchy {
    /// The unified hierarchy; the path is the `ignis` parent group.
    V2(PathBuf),
    /// A v1 hierarchy; the path is the `ignis` parent group in it.
    V1(PathBuf),
}

/// The host's usable controllers, found once.
#[derive(Debug, Clone, Default)]
pub struct CgroupLayout {
    memory: Option<Hierarchy>,
    pids: Option<Hierarchy>,
    cpu: Option<Hierarchy>,
}

/// Limits applied to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids_max: Option<u64>,
    /// CPU quota in whole CPUs.
    pub cpus: Option<u32>,
}

impl Limits {
    /// A profile's limits: `memory_mib` and `vcpus` of 0 mean "no limit".
    pub fn from_spec(spec: &crate::VmSpec) -> Limits {
        Limits {
            memory_bytes: (spec.memory_mib > 0).then(|| spec.memory_mib.saturating_mul(1 << 20)),
            pids_max: spec.pids_max,
            cpus: (spec.vcpus > 0).then_some(spec.vcpus),
        }
    }
}

/// One session's groups (one directory per distinct hierarchy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCgroup {
    pub dirs: Vec<PathBuf>,
}

/// A cgroup mount from mountinfo: (mount point, is v2, v1 super options).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    path: PathBuf,
    v2: bool,
    options: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        // Fields: id parent maj:min root mountpoint opts [optional...] - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut l = left.split(' ');
        let mountpoint = l.nth(4);
        let mut r = right.split(' ');
        let fstype = r.next();
        let superopts = r.nth(1).unwrap_or("");
        let (Some(mp), Some(fs)) = (mountpoint, fstype) else {
            continue;
        };
        let v2 = match fs {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        out.push(CgroupMount {
            path: PathBuf::from(unescape_mountinfo(mp)),
            v2,
            options: superopts.split(',').map(str::to_owned).collect(),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub(super) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl CgroupLayout {
    /// Finds usable controllers and prepares an `ignis` parent group in each hierarchy.
    /// Returns the layout and the list of controllers that are unusable (for one warning).
    pub fn detect() -> (CgroupLayout, Vec<&'static str>) {
        let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        CgroupLayout::detect_from(&text)
    }

    /// [`CgroupLayout::detect`] on a given mountinfo text (tests point it at a fake cgroup
    /// tree in a temp dir).
    fn detect_from(mountinfo: &str) -> (CgroupLayout, Vec<&'static str>) {
        let mounts = parse_mountinfo(mountinfo);
        let mut layout = CgroupLayout::default();
        let mut missing = Vec::new();
        let v2 = mounts.iter().find(|m| m.v2);
        let v2_controllers: Vec<String> = v2
            .and_then(|m| fs::read_to_string(m.path.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let wanted: Vec<&'static str> = Controller::ALL
            .iter()
            .map(|c| c.name())
            .filter(|n| v2_controllers.iter().any(|x| x == n))
            .collect();
        let (v2_dir, v2_enabled) = match v2 {
            Some(m) if !wanted.is_empty() => prepare_v2(&m.path, &wanted),
            _ => (None, Vec::new()),
        };
        for c in Controller::ALL {
            let h = v2_dir
                .as_ref()
                .filter(|_| v2_enabled.contains(&c.name()))
                .map(|d| Hierarchy::V2(d.clone()));
            let h = h.or_else(|| {
                let m = mounts
                    .iter()
                    .find(|m| !m.v2 && m.options.iter().any(|o| o == c.name()))?;
                let dir = m.path.join("ignis");
                mkdir_exist_ok(&dir).ok()?;
                Some(Hierarchy::V1(dir))
            });
            if h.is_none() {
                missing.push(c.name());
            }
            match c {
                Controller::Memory => layout.memory = h,
                Controller::Pids => layout.pids = h,
                Controller::Cpu => layout.cpu = h,
            }
        }
        (layout, missing)
    }

    /// True when no controller is usable.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.pids.is_none() && self.cpu.is_none()
    }

    /// The `ignis` parent group of each hierarchy in use, each once: where session groups live.
    pub fn parents(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for h in [&self.memory, &self.pids, &self.cpu].into_iter().flatten() {
            let (Hierarchy::V2(p) | Hierarchy::V1(p)) = h;
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }

    /// Creates the session's groups and writes its limits. On error, removes what it created.
    pub fn create(&self, id: &str, limits: &Limits) -> io::Result<SessionCgroup> {
        let mut session = SessionCgroup::default();
        let result = self.create_inner(id, limits, &mut session);
        if let Err(e) = result {
            let _ = session.remove();
            return Err(e);
        }
        Ok(session)
    }

    fn create_inner(
        &self,
        id: &str,
        limits: &Limits,
        session: &mut SessionCgroup,
    ) -> io::Result<()> {
        let mut dir_of = |h: &Hierarchy| -> io::Result<(PathBuf, bool)> {
            let (base, v2) = match h {
                Hierarchy::V2(p) => (p, true),
                Hierarchy::V1(p) => (p, false),
            };
            let dir = base.join(id);
            if !session.dirs.contains(&dir) {
                fs::create_dir(&dir)?;
                session.dirs.push(dir.clone());
            }
            Ok((dir, v2))
        };
        if let Some(h) = &self.memory {
            let (dir, v2) = dir_of(h)?;
            if let Some(bytes) = limits.memory_bytes {
                if v2 {
                    fs::write(dir.join("memory.max"), bytes.to_string())?;
                    // No swap: a limit that can be swapped around is not a limit.
                    let _ = fs::write(dir.join("memory.swap.max"), "0");
                } else {
                    fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
                    let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
                }
            }
        }
        if let Some(h) = &self.pids {
            let (dir, _) = dir_of(h)?;
            if let Some(n) = limits.pids_max {
                fs::write(dir.join("pids.max"), n.to_string())?;
            }
        }
        if let Some(h) = &self.cpu {
            let (dir, v2) = dir_of(h)?;
            if let Some(cpus) = limits.cpus.filter(|c| *c > 0) {
                let period = 100_000u64;
                let quota = period * u64::from(cpus);
                if v2 {
                    fs::write(dir.join("cpu.max"), format!("{quota} {period}"))?;
                } else {
                    fs::write(dir.join("cpu.cfs_period_us"), period.to_string())?;
                    fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                }
            }
        }
        Ok(())
    }
}

fn mkdir_exist_ok(p: &Path) -> io::Result<()> {
    match fs::create_dir(p) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Prepares `<v2 root>/ignis` with `controllers` enabled for its children (in the root's
/// `cgroup.subtree_control`, then in `ignis`'s). Returns the group and the controllers that
/// could be enabled. One write enables them all (the kernel applies a `+a +b` list at once,
/// all or nothing); if it is refused, each is tried alone so one stubborn controller (e.g.
/// `cpu` while a real-time task runs) does not cost the others.
fn prepare_v2(root: &Path, controllers: &[&'static str]) -> (Option<PathBuf>, Vec<&'static str>) {
    let dir = root.join("ignis");
    if mkdir_exist_ok(&dir).is_err() {
        return (None, Vec::new());
    }
    let enable = |names: &[&str]| -> io::Result<()> {
        let list = names
            .iter()
            .map(|n| format!("+{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        fs::write(root.join("cgroup.subtree_control"), &list)?;
        fs::write(dir.join("cgroup.subtree_control"), &list)
    };
    if enable(controllers).is_ok() {
        return (Some(dir), controllers.to_vec());
    }
    let enabled: Vec<&'static str> = controllers
        .iter()
        .copied()
        .filter(|c| enable(&[c]).is_ok())
        .collect();
    (Some(dir), enabled)
}

impl SessionCgroup {
    /// Puts `pid` (and so everything it will fork) into every group of the session.
    pub fn attach(&self, pid: u32) -> io::Result<()> {
        for d in &self.dirs {
            fs::write(d.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// Kills what is left in the groups and removes them.
    pub fn remove(&self) -> io::Result<()> {
        remove_dirs(&self.dirs)
    }
}

/// Removes the session groups under `parents` whose directory name `is_orphan` accepts (the
/// caller decides from the owner the name carries), killing what is left in them. Returns the
/// removed directories; a group that cannot be removed is logged and the others go on.
pub fn sweep(parents: &[PathBuf], is_orphan: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for parent in parents {
        for e in fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            // Only directories are groups (the parent also holds the controllers' files).
            if !e.file_type().is_ok_and(|t| t.is_dir()) || !is_orphan(name) {
                continue;
            }
            match remove_one(&e.path()) {
                Ok(()) => out.push(e.path()),
                Err(err) => {
                    tracing::warn!(cgroup = %e.path().display(), error = %err, "removing orphaned cgroup failed")
                }
            }
        }
    }
    out
}

/// Starts, on a short-lived thread, a no-op migration of this process into the cgroup it is
/// already in, so that the sandbox's first real migration ([`SessionCgroup::attach`]) does
/// not wait for a whole RCU grace period.
///
/// Why: writing to `cgroup.procs` takes the kernel's global `cgroup_threadgroup_rwsem` for
/// writing, and the first writer after a quiet spell waits for an RCU grace period while
/// that lock switches to its writer mode (`rcu_sync_enter`; 6-10 ms on this project's CI
/// host, more than the rest of an allocation). Writers within about one grace period after
/// the previous one find it already switched and take microseconds; a writer arriving while
/// the switch is under way shares that grace period. Calling this early in a command that is
/// about to allocate a sandbox overlaps the wait with the command's other start-up work
/// (reading workflows, `git`, planning). Hosts mounted with `favordynmods` never wait.
///
/// Only as root (an ordinary user cannot write the file); the write goes to the group this
/// process is verifiably in already (its pid is listed in that `cgroup.procs`), so nothing
/// moves. Every failure is ignored: the allocation then simply pays the wait itself.
pub fn prewarm_migration() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("ignis-cgroup-warm".into())
        .spawn(|| {
            let pid = std::process::id();
            let (Ok(own), Ok(mountinfo)) = (
                fs::read_to_string("/proc/self/cgroup"),
                fs::read_to_string("/proc/self/mountinfo"),
            ) else {
                return;
            };
            let listed = |procs: &Path| {
                fs::read_to_string(procs).is_ok_and(|t| {
                    t.split_whitespace()
                        .any(|p| p.parse::<u32>().ok() == Some(pid))
                })
            };
            let mounts = parse_mountinfo(&mountinfo);
            if let Some(procs) = own_group_procs(&own, &mounts)
                .into_iter()
                .find(|p| listed(p))
            {
                let _ = fs::write(procs, pid.to_string());
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "cgroup prewarm thread not started");
    }
}

/// Candidate `cgroup.procs` files of the groups this process is in (from `/proc/self/cgroup`
/// text), v1 hierarchies first (hybrid hosts, where the sandbox's limits live), then v2.
fn own_group_procs(own: &str, mounts: &[CgroupMount]) -> Vec<PathBuf> {
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in own.lines() {
        // hierarchy-id:controller-list:path
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            for m in mounts.iter().filter(|m| m.v2) {
                v2.push(m.path.join(rel).join("cgroup.procs"));
            }
            continue;
        }
        let names: Vec<&str> = controllers.split(',').collect();
        for m in mounts.iter().filter(|m| !m.v2) {
            if m.options.iter().any(|o| names.contains(&o.as_str())) {
                v1.push(m.path.join(rel).join("cgroup.procs"));
            }
        }
    }
    v1.extend(v2);
    v1
}

/// Kills every process of each group (cgroup.kill on v2, SIGKILL per task on v1) and removes
/// the directories. Missing directories count as removed. Used by release and by reap.
pub fn remove_dirs(dirs: &[PathBuf]) -> io::Result<()> {
    let mut first_err = None;
    for d in dirs {
        if let Err(e) = remove_one(d) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn remove_one(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mut delay = Duration::from_micros(50);
    for _ in 0..200 {
        // Open without O_CREAT: `cgroup.kill` exists on v2 only.
        let killed_v2 = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.kill"))
            .and_then(|mut f| io::Write::write_all(&mut f, b"1"))
            .is_ok();
        if !killed_v2 && let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                let _ = super::sys::kill_pid(pid, libc::SIGKILL);
            }
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // Busy: tasks are still exiting; wait a little and retry.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
    fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prewarm_targets_the_groups_this_process_is_in() {
        let mounts = parse_mountinfo(
            "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
             33 25 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
             34 25 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        let own = "8:pids:/\n4:memory:/svc/a\n1:name=systemd:/\n0::/user.slice\n";
        assert_eq!(
            own_group_procs(own, &mounts),
            vec![
                PathBuf::from("/sys/fs/cgroup/pids/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/memory/svc/a/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/unified/user.slice/cgroup.procs"),
            ]
        );
        assert!(own_group_procs("garbage\n", &mounts).is_empty());
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw";

    #[test]
    fn mountinfo_finds_v1_and_v2_cgroup_mounts() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 5);
        assert!(
            m.iter()
                .any(|m| m.v2 && m.path == Path::new("/sys/fs/cgroup/unified"))
        );
        let mem = m.iter().find(|m| m.options.iter().any(|o| o == "memory"));
        assert_eq!(
            mem.map(|m| m.path.as_path()),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert!(!m.iter().any(|m| m.path == Path::new("/")));
    }

    fn spec(memory_mib: u64, pids_max: Option<u64>, vcpus: u32) -> crate::VmSpec {
        crate::VmSpec {
            vm_type: "t".into(),
            backend: crate::Backend::Sandbox,
            image: "/".into(),
            vcpus,
            memory_mib,
            disk_mib: 0,
            pids_max,
            network: crate::NetworkPolicy::None,
        }
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// A directory that looks like a cgroup2 root to the code under test: the files it reads
    /// exist; the ones it writes are created by the write (the real cgroupfs has them all).
    fn fake_v2_root(dir: &Path, controllers: &str) {
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(dir.join("cgroup.controllers"), format!("{controllers}\n")).expect("write");
        fs::write(dir.join("cgroup.subtree_control"), "").expect("write");
        fs::write(dir.join("cgroup.procs"), "").expect("write");
    }

    fn v2_mountinfo(path: &Path) -> String {
        format!(
            "41 31 0:38 / {} rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n",
            path.display()
        )
    }

    #[test]
    fn v2_limits_are_written_exactly_as_the_kernel_expects() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("unified");
        fake_v2_root(&root, "cpuset cpu io memory hugetlb pids rdma misc");
        let (layout, missing) = CgroupLayout::detect_from(&v2_mountinfo(&root));
        assert!(missing.is_empty(), "{missing:?}");
        let parent = root.join("ignis");
        assert_eq!(layout.parents(), vec![parent.clone()]);
        // One write enables the three controllers for the `ignis` group, one for its children.
        assert_eq!(
            read(&root.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        assert_eq!(
            read(&parent.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );

        let limits = Limits::from_spec(&spec(512, Some(256), 2));
        let cg = layout.create("sbx-1-2-3", &limits).expect("create");
        let dir = parent.join("sbx-1-2-3");
        assert_eq!(
            cg.dirs,
            vec![dir.clone()],
            "one group for all three controllers"
        );
        assert_eq!(read(&dir.join("memory.max")), "536870912");
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
        assert_eq!(read(&dir.join("pids.max")), "256");
        assert_eq!(read(&dir.join("cpu.max")), "200000 100000");
        // No v1 file is written on v2.
        for v1 in [
            "memory.limit_in_bytes",
            "cpu.cfs_quota_us",
            "cpu.cfs_period_us",
        ] {
            assert!(!dir.join(v1).exists(), "{v1} written on v2");
        }
        cg.attach(4242).expect("attach");
        assert_eq!(read(&dir.join("cgroup.procs")), "4242");

        // No limit in the profile: no limit file is written (the kernel default is "max").
        let cg = layout
            .create("sbx-1-2-4", &Limits::from_spec(&spec(0, None, 0)))
            .expect("create unlimited");
        let dir = parent.join("sbx-1-2-4");
        assert_eq!(cg.dirs, vec![dir.clone()]);
        for f in ["memory.max", "memory.swap.max", "pids.max", "cpu.max"] {
            assert!(!dir.join(f).exists(), "{f} written without a limit");
        }
    }

    #[test]
    fn controllers_missing_on_v2_fall_back_to_v1_one_by_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("unified");
        fake_v2_root(&root, "memory pids hugetlb");
        let cpu = tmp.path().join("cpu");
        fs::create_dir_all(&cpu).expect("mkdir");
        let mountinfo = format!(
            "{}32 31 0:29 / {} rw,relatime - cgroup cgroup rw,cpu,cpuacct\n",
            v2_mountinfo(&root),
            cpu.display()
        );
        let (layout, missing) = CgroupLayout::detect_from(&mountinfo);
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(read(&root.join("cgroup.subtree_control")), "+memory +pids");
        assert_eq!(
            layout.parents(),
            vec![root.join("ignis"), cpu.join("ignis")]
        );
        let cg = layout
            .create("sbx-9-9-9", &Limits::from_spec(&spec(64, Some(32), 1)))
            .expect("create");
        let (v2, v1) = (root.join("ignis/sbx-9-9-9"), cpu.join("ignis/sbx-9-9-9"));
        assert_eq!(cg.dirs, vec![v2.clone(), v1.clone()]);
        assert_eq!(read(&v2.join("memory.max")), "67108864");
        assert_eq!(read(&v2.join("pids.max")), "32");
        assert!(!v2.join("cpu.max").exists());
        assert_eq!(read(&v1.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&v1.join("cpu.cfs_quota_us")), "100000");

        // This host's layout: v2 offers only hugetlb, so nothing goes there.
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("unified");
        fake_v2_root(&root, "hugetlb");
        let (layout, missing) = CgroupLayout::detect_from(&v2_mountinfo(&root));
        assert!(layout.is_empty());
        assert_eq!(missing, vec!["memory", "pids", "cpu"]);
        assert_eq!(read(&root.join("cgroup.subtree_control")), "");
    }

    #[test]
    fn sweep_removes_only_the_groups_the_caller_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let parent = tmp.path().join("ignis");
        for d in ["sbx-dead", "sbx-live"] {
            fs::create_dir_all(parent.join(d)).expect("mkdir");
        }
        fs::write(parent.join("sbx-file"), b"").expect("a file is not a group");
        let removed = sweep(std::slice::from_ref(&parent), |n| n != "sbx-live");
        assert_eq!(removed, vec![parent.join("sbx-dead")]);
        assert!(parent.join("sbx-live").is_dir() && parent.join("sbx-file").is_file());
        // A missing parent (controller not mounted) is nothing to sweep.
        assert!(sweep(&[tmp.path().join("none")], |_| true).is_empty());
    }

    #[test]
    fn mountinfo_unescapes_spaces() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo("\\"), "\\");
    }
}
