//! Sandbox latency: allocate + first exec round trip + release, and exec round trip of `true`
//! on a live sandbox against spawning `true` directly on the host.
//!
//! A bench binary (no criterion): each sample is one whole sandbox life, and the interesting
//! numbers are percentiles, which it prints. `cargo bench -p ignis-vm --bench sandbox`;
//! `IGNIS_BENCH_N` sets the sample count (default 300). Needs root and the `ignis-agent` binary
//! (`cargo build --release -p ignis-agent`, or set `IGNIS_AGENT_BIN`).

use ignis_agent::ExecRequest;
use ignis_vm::sandbox::SandboxProvider;
use ignis_vm::{Backend, NetworkPolicy, VmProvider, VmSpec};
use std::time::{Duration, Instant};

fn spec() -> VmSpec {
    VmSpec {
        vm_type: "ubuntu-latest".into(),
        backend: Backend::Sandbox,
        image: "/".into(),
        vcpus: 2,
        memory_mib: 2048,
        disk_mib: 2048,
        pids_max: Some(1024),
        // `IGNIS_BENCH_NET=host` measures without a network namespace (whose creation and
        // asynchronous teardown dominate the tail).
        network: match std::env::var("IGNIS_BENCH_NET").as_deref() {
            Ok("host") => NetworkPolicy::Host,
            _ => NetworkPolicy::None,
        },
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name}: n={} p50={:.3?} p90={:.3?} p99={:.3?} max={:.3?}",
        v.len(),
        pct(&v, 0.50),
        pct(&v, 0.90),
        pct(&v, 0.99),
        v[v.len() - 1]
    );
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench`-less args; only run for real.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: the sandbox bench needs root");
        return;
    }
    let n: usize = std::env::var("IGNIS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let p = SandboxProvider::new().expect("provider");
        let true_req = || ExecRequest::argv(["/bin/true"]);
        // Warm up page cache and the provider.
        for _ in 0..10 {
            let vm = p.allocate(&spec()).await.expect("allocate");
            vm.agent.exec_collect(true_req()).await.expect("exec");
            p.release(&vm).await.expect("release");
        }
        let (mut total, mut alloc, mut first, mut rel) = (vec![], vec![], vec![], vec![]);
        for _ in 0..n {
            let t0 = Instant::now();
            let vm = p.allocate(&spec()).await.expect("allocate");
            let t1 = Instant::now();
            let out = vm.agent.exec_collect(true_req()).await.expect("exec");
            assert!(out.status.success());
            let t2 = Instant::now();
            p.release(&vm).await.expect("release");
            let t3 = Instant::now();
            total.push(t3 - t0);
            alloc.push(t1 - t0);
            first.push(t2 - t1);
            rel.push(t3 - t2);
        }
        report("allocate+first exec+release", total);
        report("  allocate", alloc);
        report("  first exec (true)", first);
        report("  release", rel);

        let vm = p.allocate(&spec()).await.expect("allocate");
        let mut inside = vec![];
        for _ in 0..n {
            let t = Instant::now();
            vm.agent.exec_collect(true_req()).await.expect("exec");
            inside.push(t.elapsed());
        }
        p.release(&vm).await.expect("release");
        let mut direct = vec![];
        for _ in 0..n {
            let t = Instant::now();
            tokio::process::Command::new("/bin/true")
                .status()
                .await
                .expect("spawn");
            direct.push(t.elapsed());
        }
        report("exec true in live sandbox", inside);
        report("spawn true directly on host", direct);
    });
}
