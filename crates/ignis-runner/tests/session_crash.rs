//! Crash safety: an ignis process is SIGKILLed with live sessions; the next start's
//! `reap_orphans` releases their VMs from the records they left.
//!
//! The "ignis process" is this test binary run again with `IGNIS_CRASH_CHILD` set: it opens
//! a session manager on the given state dir, creates sessions, prints their records' paths
//! and waits to be killed.
#![allow(clippy::tests_outside_test_module)] // integration tests live at the top level

mod session_support;

use ignis_runner::session::{SessionManager, SessionOutcome};
use ignis_vm::fake::{FakeConfig, FakeProvider, process_running};
use session_support::{agent_bin, eventually, profiles};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

const CHILD_ENV: &str = "IGNIS_CRASH_CHILD";
const SESSIONS: usize = 3;

fn fake(root: &std::path::Path) -> FakeProvider {
    let mut c = FakeConfig::new(agent_bin());
    c.root = root.to_owned();
    FakeProvider::new(c)
}

/// The child's side: only does something when re-executed by `sigkill_with_live_sessions`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Some(dirs) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dirs = dirs.to_string_lossy().into_owned();
    let (state, root) = dirs.split_once(':').expect("state:root");
    let manager = SessionManager::builder()
        .max_concurrent_sessions(SESSIONS)
        .state_dir(state)
        .profiles(profiles(ignis_vm::Backend::Fake))
        .provider(Arc::new(fake(root.as_ref())))
        .build()
        .expect("manager");
    let mut held = Vec::new();
    for i in 0..SESSIONS {
        let s = manager
            .create_session(session_support_ctx(i))
            .await
            .expect("create");
        s.mark_executing("step 1");
        held.push(s);
    }
    println!("ready");
    // Wait to be killed; never release.
    std::future::pending::<()>().await;
}

fn session_support_ctx(i: usize) -> ignis_runner::session::SessionContext {
    ignis_runner::session::SessionContext::new("ubuntu-latest").with_label(format!("crash-{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_live_sessions_then_next_start_reaps() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let agent = agent_bin();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("{}:{}", state.path().display(), root.path().display()),
        )
        .env("IGNIS_AGENT_BIN", &agent)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // libtest prints "test crash_child ... " before the test's own output.
    let ready = lines.any(|l| l.map(|l| l.trim_end().ends_with("ready")).unwrap_or(false));
    assert!(ready, "child never became ready");

    // The child's sessions, as `ignis vm ls` sees them.
    let (records, errors) = SessionManager::list_records(state.path());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(records.len(), SESSIONS);
    assert!(
        records
            .iter()
            .all(|r| r.owner_alive && r.record.owner.pid == child.id())
    );
    let agents: Vec<(u32, u64)> = records
        .iter()
        .flat_map(|r| r.record.vm.processes.clone())
        .collect();
    assert_eq!(agents.len(), SESSIONS);
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), SESSIONS);

    child.kill().expect("SIGKILL");
    child.wait().expect("reap child");

    // The next start: a new manager on the same state dir reaps the orphans.
    let provider = fake(root.path());
    let manager = SessionManager::builder()
        .max_concurrent_sessions(2)
        .state_dir(state.path())
        .profiles(profiles(ignis_vm::Backend::Fake))
        .provider(Arc::new(provider.clone()))
        .build()
        .expect("manager");
    let (records, _) = SessionManager::list_records(state.path());
    assert!(records.iter().all(|r| !r.owner_alive), "owner is dead");
    let reports = manager.reap_orphans().await;
    assert_eq!(reports.len(), SESSIONS);
    assert!(reports.iter().all(|r| r.result.is_ok()), "{reports:?}");
    assert_eq!(provider.stats().reaps, SESSIONS as u64);
    assert!(
        SessionManager::list_records(state.path()).0.is_empty(),
        "records removed"
    );
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "vm dirs removed"
    );
    for (pid, start) in agents {
        assert!(
            eventually(|| !process_running(pid, start)).await,
            "agent {pid} still runs"
        );
    }
    // A second reap finds nothing; the manager works as usual.
    assert!(manager.reap_orphans().await.is_empty());
    let s = manager
        .create_session(session_support_ctx(9))
        .await
        .expect("create after reap");
    // A live session of this process is never reaped.
    assert!(manager.reap_orphans().await.is_empty());
    s.complete(SessionOutcome::Success);
    s.release().await.expect("release");
    assert_eq!(provider.stats().live, 0);
}

const ALLOC_CHILD_ENV: &str = "IGNIS_CRASH_ALLOC_CHILD";
const PAUSE_ENV: &str = "IGNIS_TEST_SANDBOX_PAUSE_ALLOCATION";

fn sandbox_provider(state_dir: &std::path::Path) -> ignis_vm::sandbox::SandboxProvider {
    let config = ignis_vm::sandbox::SandboxConfig {
        state_dir: state_dir.to_owned(),
        ..Default::default()
    };
    ignis_vm::sandbox::SandboxProvider::with_config(config).expect("sandbox provider")
}

/// The child's side of `sigkill_during_sandbox_allocation_leaks_nothing`: allocates one sandbox
/// session with the pause hook set, so allocation stops for good once the sandbox's cgroups
/// and PID 1 exist and before the session record is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_alloc_child() {
    let Some(dirs) = std::env::var_os(ALLOC_CHILD_ENV) else {
        return;
    };
    let dirs = dirs.to_string_lossy().into_owned();
    let (state, sbx) = dirs.split_once(':').expect("state:sandbox-state");
    let manager = SessionManager::builder()
        .max_concurrent_sessions(1)
        .state_dir(state)
        .profiles(profiles(ignis_vm::Backend::Sandbox))
        .provider(Arc::new(sandbox_provider(sbx.as_ref())))
        .build()
        .expect("manager");
    let s = manager.create_session(session_support_ctx(0)).await;
    // Unreachable while the hook pauses allocation; the parent kills us before.
    panic!(
        "allocation was not paused: {:?}",
        s.map(|s| s.id().to_owned())
    );
}

/// Session cgroup dirs whose name says `pid` owns them, under every `ignis` parent group.
fn cgroups_of(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("sbx-{pid}-");
    let mut parents = vec![std::path::PathBuf::from("/sys/fs/cgroup/ignis")];
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        parents.push(e.path().join("ignis"));
    }
    parents
        .iter()
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// (pid, start time) of the processes whose parent is `ppid`.
fn children_of(ppid: u32) -> Vec<(u32, u64)> {
    let want = ppid.to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1));
        if parent == Some(want.as_str())
            && let Some(start) = ignis_vm::host::process_start_time(pid)
        {
            out.push((pid, start));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_sandbox_allocation_leaks_nothing() {
    if std::env::var_os(CHILD_ENV).is_some() || std::env::var_os(ALLOC_CHILD_ENV).is_some() {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: the sandbox crash test needs root");
        return;
    }
    let agent = agent_bin();
    let state = tempfile::tempdir().unwrap();
    // The sandbox state dir must be reachable by the sandbox's root (an unmapped host uid)
    // and lie on a tmpfs like the default one.
    let shm = tempfile::Builder::new()
        .prefix("ignis-crash-sbx")
        .tempdir_in("/dev/shm")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(shm.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let sbx = shm.path().join("sandbox");
    let marker = state.path().join("allocation-paused");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_alloc_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            ALLOC_CHILD_ENV,
            format!("{}:{}", state.path().display(), sbx.display()),
        )
        .env(PAUSE_ENV, &marker)
        .env("IGNIS_AGENT_BIN", &agent)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let paused = eventually(|| marker.exists()).await;
    if !paused {
        let _ = child.kill();
        let _ = child.wait();
        panic!("child never reached the pause point");
    }

    // The window: the sandbox's PID 1 and cgroups exist, no session record does.
    let sandboxes = children_of(child.id());
    assert_eq!(sandboxes.len(), 1, "one sandbox child: {sandboxes:?}");
    let cgroups = cgroups_of(child.id());
    if cgroups.is_empty() {
        eprintln!("note: no usable cgroup controller here; checking processes and dirs only");
    }
    let (records, _) = SessionManager::list_records(state.path());
    assert!(records.is_empty(), "no record may exist yet: {records:?}");

    child.kill().expect("SIGKILL");
    child.wait().expect("reap child");
    // Nothing else removes them: without the sweep these would leak for good.
    assert_eq!(
        cgroups_of(child.id()),
        cgroups,
        "cgroups outlive their owner"
    );

    // The next start.
    let manager = SessionManager::builder()
        .max_concurrent_sessions(1)
        .state_dir(state.path())
        .profiles(profiles(ignis_vm::Backend::Sandbox))
        .provider(Arc::new(sandbox_provider(&sbx)))
        .build()
        .expect("manager");
    assert!(manager.reap_orphans().await.is_empty(), "no record to reap");
    assert!(
        cgroups_of(child.id()).is_empty(),
        "cgroups left: {:?}",
        cgroups_of(child.id())
    );
    for (pid, start) in sandboxes {
        assert!(
            eventually(|| !process_running(pid, start)).await,
            "sandbox pid {pid} still runs"
        );
    }
    // No mount on the host, nothing in the sandbox's state dir but its two empty dirs.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&shm.path().display().to_string()),
        "a mount under {} leaked",
        shm.path().display()
    );
    for sub in ["mnt", "snapshots"] {
        let left: Vec<_> = std::fs::read_dir(sbx.join(sub))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
    assert!(SessionManager::list_records(state.path()).0.is_empty());
    // A sandbox of this (live) process is never swept, and the manager works as usual.
    let s = manager
        .create_session(session_support_ctx(1))
        .await
        .expect("create after sweep");
    assert!(manager.reap_orphans().await.is_empty());
    assert_eq!(cgroups_of(std::process::id()).len(), cgroups.len());
    s.complete(SessionOutcome::Success);
    s.release().await.expect("release");
    assert!(cgroups_of(std::process::id()).is_empty());
}
