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
