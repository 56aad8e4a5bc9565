//! Crash safety: one small JSON record per live session under the state dir.
//!
//! A record names the owning ignis process (pid and start time, so a recycled pid is never
//! mistaken for the owner), the session and the [`VmRecord`] of its VM. It is written once the
//! VM exists, rewritten on state changes and removed when the VM is released. A record whose
//! owner is dead belongs to a crashed ignis: [`reap_record`] releases what it names.

use super::SessionState;
use ignis_vm::host::{kill_if_same, process_running, process_start_time, remove_path};
use ignis_vm::{Backend, VmRecord};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors reading or writing state records.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state dir or a record could not be written or read (host problem).
    #[error("state record {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record is not valid JSON of this version (left by another ignis version or damaged).
    #[error("malformed state record {path}")]
    Malformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The process that owns a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// Clock ticks since boot at which the process started (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the owner still runs (same pid and same start time, not a zombie).
    pub fn is_alive(&self) -> bool {
        process_running(self.pid, self.start_time)
    }
}

/// What is persisted for one live session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRecord {
    pub session_id: String,
    pub vm_id: String,
    pub vm_type: String,
    pub backend: Backend,
    pub state: SessionState,
    pub owner: Owner,
    /// Milliseconds since the Unix epoch when the session was created.
    pub created_unix_ms: u64,
    pub vm: VmRecord,
}

impl SessionRecord {
    /// Age of the session now.
    pub fn age(&self) -> std::time::Duration {
        std::time::Duration::from_millis(unix_ms().saturating_sub(self.created_unix_ms))
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The default state dir: `$IGNIS_STATE_DIR`, else `/var/lib/ignis` as root, else
/// `$XDG_STATE_HOME/ignis` (or `~/.local/state/ignis`), else a dir under the temp dir.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IGNIS_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/ignis");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ignis");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".local/state/ignis");
    }
    std::env::temp_dir().join("ignis-state")
}

/// The records of one state dir (`<state dir>/sessions/<id>.json`).
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store under `state_dir`; creates the directory.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let dir = state_dir.join("sessions");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Io {
            path: dir.clone(),
            source: e,
        })?;
        Ok(Store { dir })
    }

    /// The store under `state_dir` without creating anything (for read-only listing).
    pub fn at(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.join("sessions"),
        }
    }

    fn path(&self, session_id: &str) -> PathBuf {
        self.dir.join(format!("{session_id}.json"))
    }

    /// Write (or replace) a record atomically: a crash leaves the old or the new one.
    pub fn write(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let path = self.path(&record.session_id);
        let tmp = self.dir.join(format!(".{}.tmp", record.session_id));
        let io = |e| StoreError::Io {
            path: path.clone(),
            source: e,
        };
        let json = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Malformed {
            path: path.clone(),
            source: e,
        })?;
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Remove a record; a missing record is fine.
    pub fn remove(&self, session_id: &str) -> Result<(), StoreError> {
        let path = self.path(session_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// Every record, sorted by creation time. Unreadable records come back as errors beside
    /// the good ones so one damaged file never hides the rest.
    pub fn list(&self) -> (Vec<SessionRecord>, Vec<StoreError>) {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (records, errors),
            Err(e) => {
                errors.push(StoreError::Io {
                    path: self.dir.clone(),
                    source: e,
                });
                return (records, errors);
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<SessionRecord>(&bytes) {
                    Ok(r) => records.push(r),
                    Err(e) => errors.push(StoreError::Malformed { path, source: e }),
                },
                // Removed between listing and reading: released meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(StoreError::Io { path, source: e }),
            }
        }
        records.sort_by(|a, b| {
            (a.created_unix_ms, &a.session_id).cmp(&(b.created_unix_ms, &b.session_id))
        });
        (records, errors)
    }
}

/// Release what a VM record names without a backend's help: kill its processes (only if
/// their start time still matches), detach its mounts, kill and remove its cgroups, delete its
/// paths. Used by `reap_orphans` when no provider for the record's backend is registered.
pub fn reap_record(record: &VmRecord) -> Result<(), std::io::Error> {
    use rustix::process::{Pid, Signal, kill_process};
    let mut first_err = None;
    for &(pid, start) in &record.processes {
        // Best effort, as before: a process that cannot be signalled is not ours to fail on.
        let _ = kill_if_same(pid, start);
    }
    for m in &record.mounts {
        match rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) => {}
            // Not mounted (any more) or gone: nothing to release.
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => {}
            Err(e) => {
                first_err.get_or_insert(std::io::Error::from(e));
            }
        }
    }
    for cg in &record.cgroups {
        if !cg.exists() {
            continue;
        }
        // cgroup v2 has cgroup.kill; for v1 kill every listed process.
        if std::fs::write(cg.join("cgroup.kill"), "1").is_err()
            && let Ok(procs) = std::fs::read_to_string(cg.join("cgroup.procs"))
        {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if let Some(p) = Pid::from_raw(pid) {
                    let _ = kill_process(p, Signal::KILL);
                }
            }
        }
        if let Err(e) = remove_cgroup(cg)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            first_err.get_or_insert(e);
        }
    }
    for path in &record.paths {
        if let Err(e) = remove_path(path) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// A cgroup dir can only be removed once its processes are gone, which takes a moment after
/// the kill; retry briefly.
fn remove_cgroup(cg: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for _ in 0..50 {
        last = std::fs::remove_dir(cg);
        match &last {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => return last,
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, owner: Owner) -> SessionRecord {
        SessionRecord {
            session_id: id.into(),
            vm_id: format!("vm-{id}"),
            vm_type: "ubuntu-latest".into(),
            backend: Backend::Fake,
            state: SessionState::Active,
            owner,
            created_unix_ms: unix_ms(),
            vm: VmRecord::default(),
        }
    }

    #[test]
    fn write_list_remove_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let r = record("s1", Owner::current());
        store.write(&r).unwrap();
        std::fs::write(tmp.path().join("sessions/bad.json"), b"{").unwrap();
        let (records, errors) = store.list();
        assert_eq!(records, vec![r]);
        assert_eq!(errors.len(), 1);
        store.remove("s1").unwrap();
        store.remove("s1").unwrap();
        assert!(store.list().0.is_empty());
    }

    #[test]
    fn owner_liveness_uses_start_time() {
        let me = Owner::current();
        assert!(me.is_alive());
        let recycled = Owner {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!recycled.is_alive());
    }

    #[test]
    fn reap_record_removes_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("vmdir");
        std::fs::create_dir_all(d.join("x")).unwrap();
        let rec = VmRecord {
            paths: vec![d.clone(), tmp.path().join("missing")],
            ..VmRecord::default()
        };
        reap_record(&rec).unwrap();
        assert!(!d.exists());
    }
}
