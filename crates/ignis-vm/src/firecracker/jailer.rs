//! Running Firecracker under its `jailer`: chroot, uid/gid drop, cgroup, network namespace
//! and a new pid namespace. The jailer builds the chroot at
//! `<chroot_base>/<exec file name>/<id>/root`; every path Firecracker sees is relative to it,
//! so the backend stages the kernel and the disk inside before starting the process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Jailer settings of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary.
    pub bin: PathBuf,
    /// Unprivileged uid/gid Firecracker runs as inside the jail.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Parent of every jail (`--chroot-base-dir`).
    pub chroot_base: PathBuf,
    /// Network namespace to join (`--netns`), e.g. `/var/run/netns/ignis`.
    pub netns: Option<PathBuf>,
    /// Start Firecracker in a new pid namespace (`--new-pid-ns`).
    pub new_pid_ns: bool,
    /// cgroup settings passed as `--cgroup key=value` (cgroup v2).
    pub cgroups: Vec<String>,
}

impl JailerConfig {
    /// Directory the jailer creates for VM `id` (removed on release).
    pub fn jail_dir(&self, firecracker: &Path, id: &str) -> PathBuf {
        let exec_name = firecracker
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("firecracker"));
        self.chroot_base.join(exec_name).join(id)
    }

    /// The chroot: host path of the jail's `/`.
    pub fn root(&self, firecracker: &Path, id: &str) -> PathBuf {
        self.jail_dir(firecracker, id).join("root")
    }

    /// Arguments of `jailer` for VM `id`; `api_sock` is the socket path inside the jail.
    pub fn args(&self, firecracker: &Path, id: &str, api_sock: &str) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--id".into(),
            id.into(),
            "--exec-file".into(),
            firecracker.into(),
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--chroot-base-dir".into(),
            self.chroot_base.clone().into(),
            "--cgroup-version".into(),
            "2".into(),
        ];
        for c in &self.cgroups {
            a.push("--cgroup".into());
            a.push(c.into());
        }
        if let Some(ns) = &self.netns {
            a.push("--netns".into());
            a.push(ns.into());
        }
        if self.new_pid_ns {
            a.push("--new-pid-ns".into());
        }
        a.push("--".into());
        a.push("--api-sock".into());
        a.push(api_sock.into());
        a
    }

    /// With `--new-pid-ns` the jailer forks and writes Firecracker's pid into the jail; the
    /// process to track is that one, not the jailer.
    pub fn pid_file(&self, firecracker: &Path, id: &str) -> Option<PathBuf> {
        let exec_name = firecracker.file_name()?.to_string_lossy().into_owned();
        self.new_pid_ns
            .then(|| self.root(firecracker, id).join(format!("{exec_name}.pid")))
    }
}

/// Maps host paths to the paths Firecracker sees (inside the chroot when jailed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMap {
    /// The chroot's host path, when jailed.
    pub root: Option<PathBuf>,
}

impl PathMap {
    /// The path to put in an API request for a host path under the VM's directory.
    pub fn vmm_path(&self, host: &Path) -> String {
        match &self.root {
            Some(root) => match host.strip_prefix(root) {
                Ok(rel) => format!("/{}", rel.display()),
                Err(_) => host.display().to_string(),
            },
            None => host.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> JailerConfig {
        JailerConfig {
            bin: "/usr/bin/jailer".into(),
            uid: 1234,
            gid: 1234,
            chroot_base: "/srv/jail".into(),
            netns: Some("/var/run/netns/fc".into()),
            new_pid_ns: true,
            cgroups: vec!["memory.max=536870912".into()],
        }
    }

    #[test]
    fn jail_layout_follows_jailer() {
        let c = cfg();
        let fc = Path::new("/usr/bin/firecracker");
        assert_eq!(
            c.root(fc, "vm1"),
            PathBuf::from("/srv/jail/firecracker/vm1/root")
        );
        assert_eq!(
            c.pid_file(fc, "vm1"),
            Some(PathBuf::from(
                "/srv/jail/firecracker/vm1/root/firecracker.pid"
            ))
        );
        let args: Vec<String> = c
            .args(fc, "vm1", "/run/api.sock")
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.starts_with("--id vm1 --exec-file /usr/bin/firecracker --uid 1234 --gid 1234"),
            "{joined}"
        );
        assert!(joined.contains("--cgroup memory.max=536870912 --netns /var/run/netns/fc --new-pid-ns -- --api-sock /run/api.sock"), "{joined}");
    }

    #[test]
    fn paths_are_relative_to_the_chroot() {
        let m = PathMap {
            root: Some("/srv/jail/firecracker/vm1/root".into()),
        };
        assert_eq!(
            m.vmm_path(Path::new("/srv/jail/firecracker/vm1/root/rootfs.ext4")),
            "/rootfs.ext4"
        );
        let plain = PathMap { root: None };
        assert_eq!(
            plain.vmm_path(Path::new("/var/lib/x/rootfs.ext4")),
            "/var/lib/x/rootfs.ext4"
        );
    }
}
