//! The seed's five VM-allocation verification tests (shared/seed/000_d363b1a41c976bb5.txt),
//! run against every backend: one VM per workflow, allocated once, every command in it,
//! released after. Besides the allocation counts, each command reads the guest's own identity
//! (the fake: its VM directory; the sandbox: its pid namespace) to show that the commands of
//! one session really ran in one machine and different sessions in different ones.
//!
//! A backend is added with one `seed_suite!` line.
#![allow(clippy::tests_outside_test_module)] // integration tests live at the top level

mod session_support;

use ignis_runner::session::{Session, SessionError, SessionOutcome, SessionState};
use session_support::Env;
use std::collections::BTreeSet;

/// Run the identity probe in `session` as `action` and return what it printed.
async fn identity(env: &Env, session: &Session, action: &str) -> String {
    let out = session
        .run(action, env.identity.clone(), None)
        .await
        .expect("identity probe runs");
    assert!(out.status.success(), "identity probe failed: {out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!id.is_empty(), "identity probe printed nothing");
    id
}

/// Run `steps` commands in one session; every one must see the same guest and the same
/// vm id. Returns (vm id, guest identity).
async fn run_workflow(
    env: &Env,
    name: &str,
    setup: usize,
    steps: usize,
    cleanup: usize,
) -> (String, String) {
    let session = env
        .manager
        .create_session(env.ctx(name))
        .await
        .expect("create session");
    let vm_id = session.vm_id().0.clone();
    let mut seen = BTreeSet::new();
    let mut executions = 0;
    for (kind, n) in [
        ("setup command", setup),
        ("step", steps),
        ("cleanup command", cleanup),
    ] {
        for i in 1..=n {
            seen.insert(identity(env, &session, &format!("{kind} {i}")).await);
            assert_eq!(session.vm_id().0, vm_id, "vm id changed inside a session");
            executions += 1;
        }
    }
    assert_eq!(
        seen.len(),
        1,
        "{name}: commands of one session saw different guests: {seen:?}"
    );
    assert_eq!(executions, setup + steps + cleanup);
    session.complete(SessionOutcome::Success);
    assert_eq!(session.state(), SessionState::Completed);
    let info = session.release().await.expect("release");
    assert_eq!(info.state, SessionState::Released);
    assert_eq!(info.vm_id, vm_id);
    // The seed's timeline: requested, allocated, one row per command, completed, released.
    assert_eq!(info.timeline.len(), 2 + executions + 2);
    assert_eq!(info.timeline[1].session_state, SessionState::Active);
    assert!(
        info.timeline[2..2 + executions]
            .iter()
            .all(|e| e.session_state == SessionState::Executing)
    );
    assert_eq!(
        info.timeline.last().map(|e| e.session_state),
        Some(SessionState::Released)
    );
    (vm_id, seen.into_iter().next().expect("one identity"))
}

async fn single_workflow_multiple_steps_one_vm(env: Env) {
    let before = env.counter.counts();
    assert_eq!(before.allocations, 0);
    run_workflow(&env, "build-project", 0, 5, 0).await;
    let c = env.counter.counts();
    assert_eq!(c.allocations, 1, "one VM for five steps");
    assert_eq!(c.releases, 1);
    env.assert_clean();
}

async fn multiple_workflows_multiple_vms(env: Env) {
    let (a, b, c) = tokio::join!(
        run_workflow(&env, "build-project", 0, 5, 0),
        run_workflow(&env, "run-tests", 0, 3, 0),
        run_workflow(&env, "deploy", 0, 7, 0),
    );
    let vm_ids: BTreeSet<_> = [&a.0, &b.0, &c.0].into_iter().collect();
    let guests: BTreeSet<_> = [&a.1, &b.1, &c.1].into_iter().collect();
    assert_eq!(vm_ids.len(), 3, "each workflow its own vm");
    assert_eq!(guests.len(), 3, "each workflow its own guest: {guests:?}");
    let counts = env.counter.counts();
    assert_eq!(counts.allocations, 3);
    assert_eq!(counts.releases, 3);
    env.assert_clean();
}

async fn vm_reuse_after_completion(env: Env) {
    let first = run_workflow(&env, "first", 0, 2, 0).await;
    let c = env.counter.counts();
    assert_eq!(
        (c.allocations, c.releases, c.live),
        (1, 1, 0),
        "first vm released"
    );
    assert_eq!(env.manager.live_count(), 0);
    let second = run_workflow(&env, "second", 0, 2, 0).await;
    assert_ne!(first.0, second.0, "a released vm is never handed out again");
    assert_ne!(first.1, second.1, "a new run gets a fresh guest");
    let c = env.counter.counts();
    assert_eq!((c.allocations, c.releases, c.live), (2, 2, 0));
    env.assert_clean();
}

async fn concurrent_workflow_limit_enforced(env: Env) {
    assert_eq!(env.manager.max_concurrent_sessions(), 1);
    let a = env
        .manager
        .create_session(env.ctx("a"))
        .await
        .expect("first session");
    // At the limit: the try_ form refuses, the waiting form queues.
    match env.manager.try_create_session(env.ctx("b")).await {
        Err(SessionError::LimitReached { limit: 1 }) => {}
        other => panic!("expected LimitReached, got {other:?}"),
    }
    let waiting = {
        let manager = env.manager.clone();
        let ctx = env.ctx("b");
        tokio::spawn(async move { manager.create_session(ctx).await })
    };
    let id_a1 = identity(&env, &a, "step 1").await;
    let id_a2 = identity(&env, &a, "step 2").await;
    assert_eq!(id_a1, id_a2);
    assert!(
        !waiting.is_finished(),
        "second session must wait for the slot"
    );
    assert_eq!(env.counter.counts().allocations, 1);
    a.complete(SessionOutcome::Success);
    a.release().await.expect("release a");
    let b = waiting
        .await
        .expect("join")
        .expect("second session after release");
    let id_b1 = identity(&env, &b, "step 1").await;
    let id_b2 = identity(&env, &b, "step 2").await;
    assert_eq!(id_b1, id_b2);
    assert_ne!(id_a1, id_b1);
    b.complete(SessionOutcome::Success);
    b.release().await.expect("release b");
    let c = env.counter.counts();
    assert_eq!(c.allocations, 2);
    assert_eq!(c.max_live, 1, "never more than the limit live");
    env.assert_clean();
}

async fn step_execution_vm_consistency(env: Env) {
    // 12 executions: 2 setup commands, 9 steps, 1 cleanup command, one VM.
    run_workflow(&env, "consistency", 2, 9, 1).await;
    let c = env.counter.counts();
    assert_eq!(c.allocations, 1, "12 executions, one vm");
    assert_eq!(c.releases, 1);
    env.assert_clean();
}

/// The five seed tests for one backend; `$factory(limit)` returns `None` (after saying why)
/// where the backend cannot run here.
macro_rules! seed_suite {
    ($backend:ident, $factory:path) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn test_single_workflow_multiple_steps_one_vm() {
                let Some(env) = $factory(4) else { return };
                single_workflow_multiple_steps_one_vm(env).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn test_multiple_workflows_multiple_vms() {
                let Some(env) = $factory(3) else { return };
                multiple_workflows_multiple_vms(env).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn test_vm_reuse_after_completion() {
                let Some(env) = $factory(1) else { return };
                vm_reuse_after_completion(env).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn test_concurrent_workflow_limit_enforced() {
                let Some(env) = $factory(1) else { return };
                concurrent_workflow_limit_enforced(env).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn test_step_execution_vm_consistency() {
                let Some(env) = $factory(2) else { return };
                step_execution_vm_consistency(env).await;
            }
        }
    };
}

seed_suite!(fake, session_support::fake_env);
seed_suite!(sandbox, session_support::sandbox_env);
