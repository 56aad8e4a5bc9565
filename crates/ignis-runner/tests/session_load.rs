//! Load: 500 sessions through a limit of 16 on the fake backend. Never more than 16 VMs live
//! (counted by the provider, including VMs being allocated), every one released.
#![allow(clippy::tests_outside_test_module)] // integration tests live at the top level

mod session_support;

use ignis_runner::session::SessionOutcome;
use session_support::{fake_env, sh};
use std::sync::Arc;

const SESSIONS: usize = 500;
const LIMIT: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_sessions_through_a_limit_of_sixteen() {
    let env = Arc::new(fake_env(LIMIT).expect("fake"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SESSIONS {
        let env = Arc::clone(&env);
        tasks.spawn(async move {
            let s = env
                .manager
                .create_session(env.ctx(&format!("run-{i}")))
                .await
                .expect("create");
            assert!(env.manager.live_count() <= LIMIT);
            let out = s.run("step", sh("echo ok"), None).await.expect("run");
            assert_eq!(out.stdout, b"ok\n");
            s.complete(SessionOutcome::Success);
            s.release().await.expect("release");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("session task");
    }
    let fake = env.fake.clone().expect("fake provider");
    let stats = fake.stats();
    assert_eq!(stats.allocations, SESSIONS as u64);
    assert_eq!(stats.releases, SESSIONS as u64);
    assert!(
        stats.max_live <= LIMIT as u64,
        "max live {}",
        stats.max_live
    );
    assert!(
        stats.max_live >= 2,
        "sessions did overlap: {}",
        stats.max_live
    );
    let counts = env.counter.counts();
    assert!(counts.max_live <= LIMIT as u64);
    let distinct: std::collections::BTreeSet<_> = counts.vm_ids.iter().collect();
    assert_eq!(distinct.len(), SESSIONS, "every session its own vm");
    env.assert_clean();
}
