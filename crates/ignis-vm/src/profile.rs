//! Profiles: which machine a job's `runs-on` gets.
//!
//! A profile maps `runs-on` labels to a backend, an image and resource limits, and produces the
//! [`VmSpec`] a provider allocates. Profiles come from `ignis.toml`; without a file the built-in
//! default sends the GitHub-hosted Linux labels (`ubuntu-latest`, `ubuntu-24.04`,
//! `ubuntu-22.04`) and `self-hosted`/`linux` to the sandbox backend on the host image `/`.
//!
//! ```toml
//! # ignis.toml
//! [profiles.ubuntu]
//! labels = ["ubuntu-latest", "ubuntu-24.04", "linux"]
//! backend = "sandbox"          # sandbox | qemu | firecracker | fake
//! image = "/"                  # sandbox: lower layer directory; vm backends: image name
//! vcpus = 2
//! memory-mib = 4096
//! disk-mib = 10240
//! pids-max = 4096              # optional
//! network = "none"             # none | host | user
//! groups = ["ci"]              # optional: serve only `runs-on: { group: ci }`
//! setup = ["apt-get update"]   # optional, run by the executor before the first step
//! cleanup = []                 # optional, run by the executor after the last step
//!
//! [profiles.ubuntu.firecracker]  # optional, read only by the firecracker backend
//! binary = "/usr/local/bin/firecracker"  # wins over IGNIS_FIRECRACKER_BIN
//! pool-size = 2                  # warm microVMs restored from a snapshot; 0 = none
//! [profiles.ubuntu.firecracker.jailer]   # optional: run each microVM under `jailer`
//! binary = "/usr/local/bin/jailer"
//! uid = 10000
//! gid = 10000
//! chroot-base = "/srv/jailer"
//! netns = "/var/run/netns/ignis" # optional
//! new-pid-ns = true
//! cgroups = ["cpu.max=200000 100000"]
//! ```
//!
//! A profile's own name is one of its labels too. When several profiles satisfy a `runs-on`,
//! the first in file order wins.

use crate::provider::{Backend, NetworkPolicy, VmSpec};
use indexmap::IndexMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// File name looked up in the repository directory and under `$XDG_CONFIG_HOME/ignis/`.
pub const CONFIG_FILE_NAME: &str = "ignis.toml";

/// Errors loading profiles or resolving `runs-on`.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The config file could not be read (host problem or a wrong `--config` path).
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or does not match the schema (user error); the source
    /// carries the line and column.
    #[error("invalid config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A profile is inconsistent, e.g. zero vCPUs (user error).
    #[error("profile {profile}: {reason}")]
    Invalid { profile: String, reason: String },
    /// `runs-on` was empty (user error).
    #[error("runs-on names no label")]
    EmptyRunsOn,
    /// No profile satisfies every requested label (user error).
    #[error("no profile serves runs-on {requested}; known labels: {}", known.join(", "))]
    UnknownLabel {
        requested: String,
        known: Vec<String>,
    },
}

/// A job's `runs-on`, in GitHub's three shapes
/// (<https://docs.github.com/en/actions/writing-workflows/workflow-syntax-for-github-actions#jobsjob_idruns-on>).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum RunsOn {
    /// `runs-on: ubuntu-latest`
    Label(String),
    /// `runs-on: [self-hosted, linux]`: one runner must carry all of them.
    Labels(Vec<String>),
    /// `runs-on: { group: ci, labels: [linux] }`
    Group {
        group: Option<String>,
        #[serde(default, deserialize_with = "one_or_many")]
        labels: Vec<String>,
    },
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match <OneOrMany as serde::Deserialize>::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl RunsOn {
    fn labels(&self) -> &[String] {
        match self {
            RunsOn::Label(l) => std::slice::from_ref(l),
            RunsOn::Labels(v) => v,
            RunsOn::Group { labels, .. } => labels,
        }
    }
    fn group(&self) -> Option<&str> {
        match self {
            RunsOn::Group { group, .. } => group.as_deref(),
            _ => None,
        }
    }
}

impl From<&str> for RunsOn {
    fn from(label: &str) -> Self {
        RunsOn::Label(label.to_owned())
    }
}

impl fmt::Display for RunsOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunsOn::Label(l) => write!(f, "{l}"),
            RunsOn::Labels(v) => write!(f, "[{}]", v.join(", ")),
            RunsOn::Group { group, labels } => {
                write!(f, "{{")?;
                if let Some(g) = group {
                    write!(f, "group: {g}")?;
                    if !labels.is_empty() {
                        write!(f, ", ")?;
                    }
                }
                if !labels.is_empty() {
                    write!(f, "labels: [{}]", labels.join(", "))?;
                }
                write!(f, "}}")
            }
        }
    }
}

/// One profile: what a matching job runs on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Profile {
    /// Labels this profile serves (its name is implied).
    #[serde(default)]
    pub labels: Vec<String>,
    /// The backend that allocates its machines (default: sandbox).
    #[serde(default = "default_backend")]
    pub backend: Backend,
    /// Sandbox: lower-layer directory (`/` = the host root). VM backends: an image name.
    #[serde(default = "default_image")]
    pub image: PathBuf,
    /// Virtual CPUs (a CPU quota for the sandbox).
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Memory limit in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Writable disk size in MiB.
    #[serde(default = "default_disk")]
    pub disk_mib: u64,
    /// Cap on processes inside the machine.
    #[serde(default = "default_pids")]
    pub pids_max: Option<u64>,
    /// What network the machine gets (default: loopback only).
    #[serde(default)]
    pub network: NetworkPolicy,
    /// Runner groups this profile serves; empty = any group.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Commands the executor runs in the session before the first step.
    #[serde(default)]
    pub setup: Vec<String>,
    /// Commands the executor runs in the session after the last step, however it ended.
    #[serde(default)]
    pub cleanup: Vec<String>,
    /// Snapshot the VM after every successful step, so that `ignis run --resume` continues a
    /// failed job at its failed step (as `ignis run --snapshot-steps`).
    #[serde(default)]
    pub snapshot_steps: bool,
    /// Firecracker backend settings (`[profiles.NAME.firecracker]`); other backends ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firecracker: Option<FirecrackerProfile>,
}

/// `[profiles.NAME.firecracker]`: how the Firecracker backend starts this profile's microVMs.
/// Explicit values here win over the environment (`IGNIS_FIRECRACKER_BIN`), which stays the
/// fallback, so one `ignis.toml` pins the binary a repository was tested with.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FirecrackerProfile {
    /// The `firecracker` binary; absent = `IGNIS_FIRECRACKER_BIN`, else `firecracker` on PATH.
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// Run each microVM under `jailer` with these settings; absent = no jailer.
    #[serde(default)]
    pub jailer: Option<JailerProfile>,
    /// Warm pool size for this profile's VM type (restored from a template snapshot and
    /// refilled in the background); absent or 0 = boot every VM cold.
    #[serde(default)]
    pub pool_size: Option<u32>,
}

/// `[profiles.NAME.firecracker.jailer]`: mirrors the backend's jailer settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct JailerProfile {
    /// The `jailer` binary (default: `jailer` on PATH).
    #[serde(default = "default_jailer_bin")]
    pub binary: PathBuf,
    /// Unprivileged uid Firecracker runs as inside the jail.
    pub uid: u32,
    /// Unprivileged gid Firecracker runs as inside the jail.
    pub gid: u32,
    /// Parent of every jail (`--chroot-base-dir`, default `/srv/jailer` as the jailer's own).
    #[serde(default = "default_chroot_base")]
    pub chroot_base: PathBuf,
    /// Network namespace to join (`--netns`).
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// Start Firecracker in a new pid namespace (`--new-pid-ns`, default on).
    #[serde(default = "default_true")]
    pub new_pid_ns: bool,
    /// cgroup v2 settings passed as `--cgroup key=value`.
    #[serde(default)]
    pub cgroups: Vec<String>,
}

fn default_jailer_bin() -> PathBuf {
    PathBuf::from("jailer")
}
fn default_chroot_base() -> PathBuf {
    PathBuf::from("/srv/jailer")
}
fn default_true() -> bool {
    true
}

fn default_backend() -> Backend {
    Backend::Sandbox
}
fn default_image() -> PathBuf {
    PathBuf::from("/")
}
fn default_vcpus() -> u32 {
    2
}
fn default_memory() -> u64 {
    4096
}
fn default_disk() -> u64 {
    10 * 1024
}
#[allow(clippy::unnecessary_wraps)]
fn default_pids() -> Option<u64> {
    Some(4096)
}

impl Profile {
    /// A profile with the defaults above serving `labels`.
    pub fn new(backend: Backend, labels: &[&str]) -> Self {
        Profile {
            labels: labels.iter().map(|s| (*s).to_owned()).collect(),
            backend,
            image: default_image(),
            vcpus: default_vcpus(),
            memory_mib: default_memory(),
            disk_mib: default_disk(),
            pids_max: default_pids(),
            network: NetworkPolicy::None,
            groups: Vec::new(),
            setup: Vec::new(),
            cleanup: Vec::new(),
            snapshot_steps: false,
            firecracker: None,
        }
    }

    fn serves(&self, name: &str, runs_on: &RunsOn) -> bool {
        let group_ok = match runs_on.group() {
            None => true,
            Some(g) => self.groups.is_empty() || self.groups.iter().any(|x| x == g),
        };
        group_ok
            && runs_on
                .labels()
                .iter()
                .all(|l| l == name || self.labels.iter().any(|x| x == l))
    }

    /// The spec a provider allocates for this profile.
    pub fn spec(&self, name: &str) -> VmSpec {
        VmSpec {
            vm_type: name.to_owned(),
            backend: self.backend,
            image: self.image.clone(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            disk_mib: self.disk_mib,
            pids_max: self.pids_max,
            network: self.network,
        }
    }
}

/// The whole `ignis.toml`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProfileConfig {
    /// Profiles by name, in file order.
    #[serde(default)]
    pub profiles: IndexMap<String, Profile>,
}

/// A profile chosen for a `runs-on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedProfile<'a> {
    /// The profile's name (its VM type).
    pub name: &'a str,
    /// The profile itself.
    pub profile: &'a Profile,
}

impl ResolvedProfile<'_> {
    /// The spec to allocate.
    pub fn spec(&self) -> VmSpec {
        self.profile.spec(self.name)
    }
}

impl Default for ProfileConfig {
    /// The built-in default: GitHub's Linux labels and `self-hosted`/`linux` on the sandbox
    /// backend with the host root as image.
    fn default() -> Self {
        let mut profiles = IndexMap::new();
        profiles.insert(
            "ubuntu-latest".to_owned(),
            Profile::new(
                Backend::Sandbox,
                &["ubuntu-24.04", "ubuntu-22.04", "self-hosted", "linux"],
            ),
        );
        ProfileConfig { profiles }
    }
}

impl ProfileConfig {
    /// Parse a config file's text; `path` only names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ProfileError> {
        let config: ProfileConfig = toml::from_str(text).map_err(|e| ProfileError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Read and parse one file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Read {
            path: path.to_owned(),
            source: e,
        })?;
        Self::from_toml(&text, path)
    }

    /// Find the config: an explicit `--config` path (must exist), else `ignis.toml` in the
    /// repository directory, else `$XDG_CONFIG_HOME/ignis/ignis.toml` (or `~/.config/...`),
    /// else the built-in default. Returns the path it loaded, if any.
    pub fn discover(
        explicit: Option<&Path>,
        repo_dir: Option<&Path>,
    ) -> Result<(Self, Option<PathBuf>), ProfileError> {
        if let Some(p) = explicit {
            return Ok((Self::load(p)?, Some(p.to_owned())));
        }
        let mut candidates = Vec::new();
        if let Some(dir) = repo_dir {
            candidates.push(dir.join(CONFIG_FILE_NAME));
        }
        if let Some(dir) = config_home() {
            candidates.push(dir.join("ignis").join(CONFIG_FILE_NAME));
        }
        for c in candidates {
            if c.is_file() {
                return Ok((Self::load(&c)?, Some(c)));
            }
        }
        Ok((Self::default(), None))
    }

    fn validate(&self) -> Result<(), ProfileError> {
        for (name, p) in &self.profiles {
            let invalid = |reason: &str| ProfileError::Invalid {
                profile: name.clone(),
                reason: reason.to_owned(),
            };
            if name.is_empty() {
                return Err(invalid("empty profile name"));
            }
            if p.vcpus == 0 {
                return Err(invalid("vcpus must be at least 1"));
            }
            if p.memory_mib == 0 {
                return Err(invalid("memory-mib must be at least 1"));
            }
            if p.pids_max == Some(0) {
                return Err(invalid("pids-max must be at least 1"));
            }
            if p.labels.iter().any(String::is_empty) {
                return Err(invalid("empty label"));
            }
            if let Some(fc) = &p.firecracker {
                if fc.binary.as_ref().is_some_and(|b| b.as_os_str().is_empty()) {
                    return Err(invalid("firecracker.binary is empty"));
                }
                if let Some(j) = &fc.jailer
                    && (j.binary.as_os_str().is_empty() || j.chroot_base.as_os_str().is_empty())
                {
                    return Err(invalid(
                        "firecracker.jailer.binary and chroot-base must not be empty",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every label some profile serves (names included), sorted, for error messages.
    pub fn known_labels(&self) -> Vec<String> {
        let mut known: Vec<String> = self
            .profiles
            .iter()
            .flat_map(|(n, p)| std::iter::once(n.clone()).chain(p.labels.iter().cloned()))
            .collect();
        known.sort();
        known.dedup();
        known
    }

    /// The first profile that serves every label of `runs_on`.
    pub fn resolve(&self, runs_on: &RunsOn) -> Result<ResolvedProfile<'_>, ProfileError> {
        if runs_on.labels().is_empty() && runs_on.group().is_none() {
            return Err(ProfileError::EmptyRunsOn);
        }
        self.profiles
            .iter()
            .find(|(name, p)| p.serves(name, runs_on))
            .map(|(name, profile)| ResolvedProfile { name, profile })
            .ok_or_else(|| ProfileError::UnknownLabel {
                requested: runs_on.to_string(),
                known: self.known_labels(),
            })
    }

    /// Shorthand: the spec for `runs_on`.
    pub fn spec_for(&self, runs_on: &RunsOn) -> Result<VmSpec, ProfileError> {
        self.resolve(runs_on).map(|r| r.spec())
    }
}

fn config_home() -> Option<PathBuf> {
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".config")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_serves_github_linux_labels_on_sandbox() {
        let c = ProfileConfig::default();
        for l in [
            "ubuntu-latest",
            "ubuntu-24.04",
            "ubuntu-22.04",
            "self-hosted",
            "linux",
        ] {
            let spec = c.spec_for(&RunsOn::from(l)).expect(l);
            assert_eq!(spec.backend, Backend::Sandbox);
            assert_eq!(spec.image, PathBuf::from("/"));
            assert_eq!(spec.vm_type, "ubuntu-latest");
        }
        let both = RunsOn::Labels(vec!["self-hosted".into(), "linux".into()]);
        assert!(c.resolve(&both).is_ok());
    }

    #[test]
    fn unknown_label_lists_known_ones() {
        let c = ProfileConfig::default();
        let err = c.resolve(&RunsOn::from("windows-latest")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("windows-latest"), "{msg}");
        assert!(
            msg.contains("ubuntu-22.04") && msg.contains("self-hosted"),
            "{msg}"
        );
    }

    #[test]
    fn all_labels_must_be_served_by_one_profile() {
        let text = r#"
            [profiles.a]
            labels = ["x"]
            backend = "fake"
            [profiles.b]
            labels = ["y", "z"]
            backend = "fake"
        "#;
        let c = ProfileConfig::from_toml(text, Path::new("ignis.toml")).unwrap();
        let xy = RunsOn::Labels(vec!["x".into(), "y".into()]);
        assert!(matches!(
            c.resolve(&xy),
            Err(ProfileError::UnknownLabel { .. })
        ));
        let yz = RunsOn::Labels(vec!["z".into(), "y".into()]);
        assert_eq!(c.resolve(&yz).unwrap().name, "b");
        assert_eq!(c.resolve(&RunsOn::from("a")).unwrap().name, "a");
    }
}
