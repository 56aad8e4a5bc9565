//! What ignis adds on top of Firecracker, measured against the fake Firecracker: the median
//! round trip of one API call through `ApiClient` (connect, write, parse), and whole
//! allocations (process start, socket wait, configuration, vsock handshake, agent ping).
//! Run: `cargo bench -p ignis-vm --bench firecracker_api` (as root, for restores).

use ignis_vm::firecracker::api::ApiClient;
use ignis_vm::{
    Backend, FirecrackerConfig, FirecrackerProvider, NetworkPolicy, VmProvider, VmSpec,
};
use std::path::Path;
use std::time::{Duration, Instant};

const FAKE: &str = env!("CARGO_BIN_EXE_fake-firecracker");

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() * 9 / 10]
}

fn report(name: &str, samples: Vec<Duration>) {
    let n = samples.len();
    println!(
        "{name:<44} n={n:<5} median={:>10.1?} p90={:>10.1?}",
        median(samples.clone()),
        p90(samples)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::Builder::new()
        .prefix("fcb")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let sock = dir.path().join("api.sock");
    let agent = ignis_vm::firecracker::fake_server::agent_next_to(Path::new(FAKE));
    let mut child = tokio::process::Command::new(FAKE)
        .arg("--api-sock")
        .arg(&sock)
        .envs(agent.iter().map(|a| ("IGNIS_FAKE_FC_AGENT", a.as_os_str())))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn fake");
    while tokio::net::UnixStream::connect(&sock).await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let api = ApiClient::new(&sock, Duration::from_secs(5));
    let mut get = Vec::new();
    let mut put = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        api.get("/version").await.expect("get");
        get.push(t.elapsed());
        let t = Instant::now();
        api.put(
            "/machine-config",
            &serde_json::json!({"vcpu_count": 1, "mem_size_mib": 128}),
        )
        .await
        .expect("put");
        put.push(t.elapsed());
    }
    report("api round trip GET /version", get);
    report("api round trip PUT /machine-config (validated)", put);
    let _ = child.kill().await;

    let Some(agent) = agent else {
        println!("ignis-agent not built next to the fake: skipping allocation numbers");
        return;
    };
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"\x7fELF").expect("kernel");
    let image = dir.path().join("rootfs.ext4");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(64 << 20))
        .expect("image");
    let wrapper = dir.path().join("firecracker");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport IGNIS_FAKE_FC_AGENT='{}'\nexec '{FAKE}' \"$@\"\n",
            agent.display()
        ),
    )
    .expect("wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // The fake's own start-up (spec parse + validator compile) is part of every allocation
    // below; measure it alone so it can be subtracted.
    let mut startup = Vec::new();
    for i in 0..20 {
        let sock = dir.path().join(format!("s{i}.sock"));
        let t = Instant::now();
        let mut c = tokio::process::Command::new(&wrapper)
            .arg("--api-sock")
            .arg(&sock)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn fake");
        while tokio::net::UnixStream::connect(&sock).await.is_err() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        startup.push(t.elapsed());
        let _ = c.kill().await;
    }
    report("fake process start to api socket ready", startup);
    let mut cfg = FirecrackerConfig::from_env(dir.path());
    cfg.firecracker_bin = wrapper;
    cfg.kernel = kernel;
    let p = FirecrackerProvider::new(cfg);
    let spec = VmSpec {
        vm_type: "bench".into(),
        backend: Backend::Firecracker,
        image,
        vcpus: 1,
        memory_mib: 128,
        disk_mib: 64,
        pids_max: None,
        network: NetworkPolicy::None,
    };
    let mut boot = Vec::new();
    let mut release = Vec::new();
    for _ in 0..20 {
        let vm = p.allocate(&spec).await.expect("allocate");
        boot.push(vm.allocation_time);
        let t = Instant::now();
        p.release(&vm).await.expect("release");
        release.push(t.elapsed());
    }
    report("allocate, cold boot path (fake, 64 MiB disk)", boot);
    report("release (SendCtrlAltDel + exit + cleanup)", release);
    let vm = p.allocate(&spec).await.expect("allocate");
    let snap = p.snapshot(&vm, "bench").await.expect("snapshot");
    p.release(&vm).await.expect("release");
    let mut restore = Vec::new();
    for _ in 0..20 {
        match p.restore(&snap, &spec).await {
            Ok(vm) => {
                restore.push(vm.allocation_time);
                p.release(&vm).await.expect("release");
            }
            Err(e) => {
                println!("restore unavailable: {e}");
                return;
            }
        }
    }
    report("restore from snapshot (fake)", restore);
}
