//! Bench: 500 sessions through a limit of 16 on the fake backend (a real `ignis-agent`
//! child per VM). Each session runs one command (`true`) and is released. Prints sessions
//! per second per round, the median, and the peak RSS of this host process (VmHWM).
//!
//! Run: `cargo build --release -p ignis-agent && cargo bench -p ignis-runner --bench sessions`
//! (or set IGNIS_AGENT_BIN). `IGNIS_BENCH_BACKEND=sandbox` runs the same load on the sandbox
//! backend (root only). Results go in BENCHMARKS.md by hand.

use ignis_agent::{ExecRequest, Program};
use ignis_runner::session::{SessionContext, SessionManager, SessionOutcome};
use ignis_vm::VmProvider;
use ignis_vm::fake::{FakeConfig, FakeProvider};
use ignis_vm::profile::ProfileConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const SESSIONS: usize = 500;
const LIMIT: usize = 16;
const ROUNDS: usize = 3;

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let agent = match ignis_agent::agent_binary_path() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let state = tempfile::tempdir().expect("state dir");
    let root = tempfile::tempdir().expect("vm root");
    let mut config = FakeConfig::new(agent);
    config.root = root.path().to_owned();
    let fake = FakeProvider::new(config);
    let sandbox = std::env::var("IGNIS_BENCH_BACKEND").is_ok_and(|b| b == "sandbox");
    let (backend, provider): (&str, Arc<dyn VmProvider>) = if sandbox {
        match ignis_vm::sandbox::SandboxProvider::new() {
            Ok(p) => ("sandbox", Arc::new(p)),
            Err(e) => {
                eprintln!("skipped: sandbox unavailable: {e}");
                return;
            }
        }
    } else {
        ("fake", Arc::new(fake.clone()))
    };
    let profiles = ProfileConfig::from_toml(
        &format!("[profiles.bench]\nlabels = [\"ubuntu-latest\"]\nbackend = \"{backend}\"\n"),
        Path::new("bench.toml"),
    )
    .expect("profile");
    let manager = SessionManager::builder()
        .max_concurrent_sessions(LIMIT)
        .state_dir(state.path())
        .profiles(profiles)
        .provider(provider)
        .build()
        .expect("manager");
    let req = ExecRequest {
        program: Program::Argv(vec!["true".into()]),
        env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        cwd: None,
        stdin: None,
        timeout: None,
    };
    let mut rates = Vec::new();
    for round in 0..ROUNDS {
        let started = Instant::now();
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..SESSIONS {
                let manager = manager.clone();
                let req = req.clone();
                tasks.spawn(async move {
                    let s = manager
                        .create_session(SessionContext::new("ubuntu-latest"))
                        .await
                        .expect("create");
                    let out = s.run("step", req, None).await.expect("run");
                    assert!(out.status.success());
                    s.complete(SessionOutcome::Success);
                    s.release().await.expect("release");
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.expect("session task");
            }
        });
        let secs = started.elapsed().as_secs_f64();
        let rate = SESSIONS as f64 / secs;
        println!("round {round}: {SESSIONS} sessions in {secs:.2}s = {rate:.0} sessions/s");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let max_live = if sandbox {
        "n/a".to_owned()
    } else {
        let stats = fake.stats();
        assert_eq!(stats.live, 0);
        assert!(stats.max_live <= LIMIT as u64);
        stats.max_live.to_string()
    };
    assert_eq!(manager.live_count(), 0);
    println!(
        "{backend}: median {:.0} sessions/s over {ROUNDS} rounds; max live {max_live} (limit {LIMIT}); peak RSS (VmHWM) {} KiB",
        rates[ROUNDS / 2],
        vm_hwm_kib().map_or("?".into(), |k| k.to_string())
    );
}
