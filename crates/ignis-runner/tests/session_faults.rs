//! Release on every path, under injected faults (fake backend): after each test no session,
//! no VM, no record, no VM directory and no command process is left.
#![allow(clippy::tests_outside_test_module)] // integration tests live at the top level

mod session_support;

use ignis_agent::AgentError;
use ignis_runner::session::{SessionError, SessionEvent, SessionOutcome, SessionState};
use ignis_vm::fake::{Fault, VmEvent};
use session_support::{
    Env, eventually, fake_env, fake_env_with, marker, processes_with, sh, sleeper,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Wait until the command with `marker` runs on the host.
async fn started(marker: &str) {
    assert!(
        eventually(|| !processes_with(marker).is_empty()).await,
        "command {marker} never started"
    );
}

/// Assert no process of the command with `marker` is left.
async fn gone(marker: &str) {
    assert!(
        eventually(|| processes_with(marker).is_empty()).await,
        "command {marker} left processes: {:?}",
        processes_with(marker)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_fails() {
    let env = fake_env(2).expect("fake");
    let fake = env.fake.clone().expect("fake provider");
    fake.fail_allocate(Fault::ONCE);
    match env.manager.create_session(env.ctx("a")).await {
        Err(SessionError::Allocate { .. }) => {}
        other => panic!("expected Allocate error, got {other:?}"),
    }
    assert!(matches!(
        env.events.events().as_slice(),
        [SessionEvent::AllocationFailed { .. }]
    ));
    env.assert_clean();
    // The slot came back: the next run works.
    let s = env
        .manager
        .create_session(env.ctx("b"))
        .await
        .expect("second create");
    s.complete(SessionOutcome::Success);
    s.release().await.expect("release");
    assert_eq!(fake.stats().allocation_failures, 1);
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_fails_once_then_is_retried() {
    let env = fake_env(1).expect("fake");
    let fake = env.fake.clone().expect("fake provider");
    let s = env
        .manager
        .create_session(env.ctx("a"))
        .await
        .expect("create");
    let vm_id = s.vm_id().clone();
    fake.fail_release(Fault::ONCE);
    s.complete(SessionOutcome::Success);
    let info = s.release().await.expect("retried release succeeds");
    assert_eq!(info.state, SessionState::Released);
    assert_eq!(info.release_error, None);
    assert_eq!(
        fake.history(&vm_id),
        vec![
            VmEvent::Allocated,
            VmEvent::ReleaseFailed,
            VmEvent::Released
        ]
    );
    let events = env.events.events();
    assert!(events.iter().any(|e| matches!(
        e,
        SessionEvent::ReleaseFailed {
            attempt: 1,
            will_retry: true,
            ..
        }
    )));
    assert!(matches!(events.last(), Some(SessionEvent::Released { .. })));
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_that_keeps_failing_is_reported_not_dropped() {
    let env = fake_env(1).expect("fake");
    let fake = env.fake.clone().expect("fake provider");
    let s = env
        .manager
        .create_session(env.ctx("a"))
        .await
        .expect("create");
    let id = s.id().to_owned();
    fake.fail_release(Fault::Always);
    s.complete(SessionOutcome::Success);
    match s.release().await {
        Err(SessionError::Release { attempts: 3, .. }) => {}
        other => panic!("expected Release error after 3 attempts, got {other:?}"),
    }
    // Reported in the session, kept listed and on disk; the slot is free again.
    let info = env.manager.session(&id).expect("still listed");
    assert!(info.release_error.is_some());
    assert_eq!(env.records(), 1, "record kept for `ignis vm gc`");
    assert_eq!(env.manager.available_slots(), 1);
    assert_eq!(fake.stats().live, 1);
    // Clean up by hand, as `ignis vm gc` would after this process ends.
    fake.fail_release(Fault::Off);
    let record = std::fs::read(env.state.path().join(format!("sessions/{id}.json"))).unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    let vm: ignis_vm::VmRecord = serde_json::from_value(record["vm"].clone()).unwrap();
    ignis_vm::VmProvider::reap(&fake, &vm).await.expect("reap");
    assert_eq!(fake.stats().live, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_dies_mid_command() {
    let env = fake_env(1).expect("fake");
    let fake = env.fake.clone().expect("fake provider");
    let s = env
        .manager
        .create_session(env.ctx("a"))
        .await
        .expect("create");
    let m = marker();
    let (res, ()) = tokio::join!(s.run("step 1", sleeper(&m), None), async {
        started(&m).await;
        assert!(fake.drop_channel(s.vm_id()));
    });
    match res {
        Err(SessionError::Agent {
            source: AgentError::ChannelClosed,
            ..
        }) => {}
        other => panic!("expected ChannelClosed, got {other:?}"),
    }
    assert_eq!(s.state(), SessionState::Failed);
    s.release().await.expect("release");
    gone(&m).await;
    env.assert_clean();
}

async fn command_times_out(env: Env) {
    let s = env
        .manager
        .create_session(env.ctx("a"))
        .await
        .expect("create");
    let m = marker();
    let mut req = sleeper(&m);
    req.timeout = Some(Duration::from_millis(200));
    let out = s.run("step 1", req, None).await.expect("agent answers");
    assert!(out.status.timed_out, "{:?}", out.status);
    assert!(!out.status.success());
    gone(&m).await;
    s.complete(SessionOutcome::Failure);
    let info = s.release().await.expect("release");
    assert!(
        info.timeline
            .iter()
            .any(|e| e.session_state == SessionState::Failed)
    );
    env.assert_clean();
}

async fn cancel_mid_command(env: Env) {
    let s = env
        .manager
        .create_session(env.ctx("a"))
        .await
        .expect("create");
    let m = marker();
    let token = CancellationToken::new();
    let (res, ()) = tokio::join!(s.run("step 1", sleeper(&m), Some(&token)), async {
        started(&m).await;
        token.cancel();
    });
    assert!(
        matches!(res, Err(SessionError::Cancelled { .. })),
        "{res:?}"
    );
    assert_eq!(s.state(), SessionState::Cancelled);
    gone(&m).await;
    let info = s.release().await.expect("release");
    assert_eq!(info.state, SessionState::Released);
    env.assert_clean();
}

async fn executor_panics_and_drop_guard_releases(env: Env) {
    let manager = env.manager.clone();
    let ctx = env.ctx("a");
    let m = marker();
    let m2 = m.clone();
    let task = tokio::spawn(async move {
        let s = manager.create_session(ctx).await.expect("create");
        s.run("step 1", sh("true"), None).await.expect("step 1");
        // Leave a background process behind, then panic mid-run.
        s.run(
            "step 2",
            sh(&format!("(sleep {m2}; true) > /dev/null 2>&1 &")),
            None,
        )
        .await
        .expect("step 2");
        panic!("executor bug");
    });
    assert!(task.await.expect_err("task panicked").is_panic());
    // The guard's release runs on a spawned task: the session leaves the table and the vm is
    // released before `Released` is emitted, so wait for all three.
    assert!(
        eventually(|| env.manager.live_count() == 0
            && env.counter.counts().live == 0
            && matches!(
                env.events.events().last(),
                Some(SessionEvent::Released { .. })
            ))
        .await,
        "drop guard released the vm and said so: {:?}",
        env.events.events().last()
    );
    gone(&m).await;
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_cancelled_during_allocation_releases_the_late_vm() {
    let env =
        fake_env_with(1, |c| c.allocation_latency = Duration::from_millis(300)).expect("fake");
    let fake = env.fake.clone().expect("fake provider");
    let r = tokio::time::timeout(
        Duration::from_millis(50),
        env.manager.create_session(env.ctx("a")),
    )
    .await;
    assert!(r.is_err(), "create was cut off mid-allocation");
    assert_eq!(env.manager.live_count(), 0);
    // The allocation finishes in the background and its vm is released at once.
    assert!(
        eventually(|| {
            let s = fake.stats();
            s.allocations == 1 && s.releases == 1 && env.counter.counts().live == 0
        })
        .await,
        "late vm released: {:?}",
        fake.stats()
    );
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_record_write_failing_after_allocation_releases_the_vm() {
    let env = fake_env(1).expect("fake");
    let fake = env.fake.clone().expect("fake provider");
    // Replace the records directory with a file: the VM is allocated, the record cannot be
    // written, so the session must give the VM back.
    let dir = env.state.path().join("sessions");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a dir").unwrap();
    match env.manager.create_session(env.ctx("a")).await {
        Err(SessionError::Store(_)) => {}
        other => panic!("expected Store error, got {other:?}"),
    }
    assert!(
        eventually(|| fake.stats().live == 0 && env.manager.live_count() == 0).await,
        "vm released after half-way failure: {:?}",
        fake.stats()
    );
    assert_eq!(fake.stats().allocations, 1);
    std::fs::remove_file(&dir).unwrap();
    env.assert_clean();
}

/// The fault tests that need no injection, for every backend; `$factory(1)` returns `None`
/// (after saying why) where the backend cannot run here.
macro_rules! backend_faults {
    ($backend:ident, $factory:path) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn command_times_out() {
                let Some(env) = $factory(1) else { return };
                super::command_times_out(env).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cancel_mid_command() {
                let Some(env) = $factory(1) else { return };
                super::cancel_mid_command(env).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn executor_panics_and_drop_guard_releases() {
                let Some(env) = $factory(1) else { return };
                super::executor_panics_and_drop_guard_releases(env).await;
            }
        }
    };
}

backend_faults!(fake, session_support::fake_env);
backend_faults!(sandbox, session_support::sandbox_env);
