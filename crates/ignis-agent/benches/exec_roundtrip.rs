//! Exec round trip of `true` through the agent (over stdio pipes, as a local child) versus
//! spawning `true` directly with `std::process::Command`. Target: the agent adds <= 1 ms.

use criterion::{Criterion, criterion_group, criterion_main};
use ignis_agent::ExecRequest;
use ignis_agent::testing::spawn_agent_at;
use std::path::Path;
use std::process::{Command, Stdio};

const AGENT: &str = env!("CARGO_BIN_EXE_ignis-agent");

fn exec_roundtrip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (client, child) = rt.block_on(async { spawn_agent_at(Path::new(AGENT)).expect("agent") });
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let mut req = ExecRequest::argv(["true"]);
    req.env.insert("PATH".into(), path);

    let mut group = c.benchmark_group("exec_true");
    group.bench_function("direct_status", |b| {
        b.iter(|| {
            let st = Command::new("true")
                .stdin(Stdio::null())
                .status()
                .expect("spawn true");
            assert!(st.success());
        })
    });
    // The agent resolves argv[0] itself and execs the file directly; std's posix_spawnp tries
    // each PATH entry in turn. The absolute path isolates the spawn cost from that search.
    group.bench_function("direct_status_abs_path", |b| {
        b.iter(|| {
            let st = Command::new("/usr/bin/true")
                .stdin(Stdio::null())
                .status()
                .expect("spawn true");
            assert!(st.success());
        })
    });
    group.bench_function("direct_output_piped", |b| {
        b.iter(|| {
            let out = Command::new("true")
                .stdin(Stdio::null())
                .output()
                .expect("spawn true");
            assert!(out.status.success());
        })
    });
    group.bench_function("via_agent", |b| {
        b.iter(|| {
            let out = rt
                .block_on(client.exec_collect(req.clone()))
                .expect("exec true");
            assert!(out.status.success());
        })
    });
    group.bench_function("agent_ping", |b| {
        b.iter(|| rt.block_on(client.ping()).expect("ping"))
    });
    group.finish();
    drop(client);
    drop(child);

    // Agent start-up cost as the sandbox pays it: spawn, first exec, close, reap.
    c.bench_function("agent_spawn_first_exec_exit", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (client, mut child) = spawn_agent_at(Path::new(AGENT)).expect("agent");
                let out = client.exec_collect(req.clone()).await.expect("exec true");
                assert!(out.status.success());
                drop(client);
                let st = child.wait().await.expect("agent exit");
                assert!(st.success());
            })
        })
    });
}

criterion_group!(benches, exec_roundtrip);
criterion_main!(benches);
