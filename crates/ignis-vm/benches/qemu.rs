//! QEMU backend latency: cold boot to agent ready, restore (from a template snapshot) to agent
//! ready, exec round trip of `true`, uploading a 10 MB repository with `put_tar` onto the root
//! disk, and a step snapshot (memory + frozen disk layer) of the VM holding it.
//!
//! A bench binary (no criterion): each sample is a whole boot, and medians are what matter.
//! `cargo bench -p ignis-vm --bench qemu` (or `--profile dev` to skip a release build: the
//! time is spent in the guest, not in host code). `IGNIS_BENCH_N` sets the boot/restore
//! sample count (default 5). It prints the accelerator used: on a host where KVM can run
//! guests the same command reports KVM numbers (`IGNIS_QEMU_ACCEL=tcg|kvm` forces one).

use ignis_agent::ExecRequest;
use ignis_vm::qemu::{QemuConfig, QemuProvider};
use ignis_vm::{Backend, NetworkPolicy, VmProvider, VmSpec};
use std::time::{Duration, Instant};

fn spec() -> VmSpec {
    VmSpec {
        vm_type: "bench".into(),
        backend: Backend::Qemu,
        image: Default::default(),
        vcpus: 1,
        memory_mib: 512,
        disk_mib: 0,
        pids_max: None,
        network: NetworkPolicy::None,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    if v.is_empty() {
        return;
    }
    println!(
        "{name}: n={} median={:.3?} min={:.3?} max={:.3?}",
        v.len(),
        v[v.len() / 2],
        v[0],
        v[v.len() - 1]
    );
}

/// A tar of a synthetic 10 MB repository: 160 files of 64 KiB of incompressible-ish bytes.
fn repo_tar() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..160 {
        let sub = dir.path().join(format!("src/m{}", i % 8));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let mut data = vec![0u8; 64 * 1024];
        for b in &mut data {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(sub.join(format!("f{i}.bin")), data).expect("write");
    }
    let out = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .args(["-cf", "-", "."])
        .output()
        .expect("tar");
    assert!(out.status.success());
    out.stdout
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("IGNIS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let cold = QemuProvider::new(QemuConfig {
        from_template: false,
        ..QemuConfig::from_env()
    });
    if let Err(e) = cold.qemu_available() {
        eprintln!("skipped: {e}");
        return;
    }
    let image = match cold.image().await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let accel = cold.accel().await.expect("accel");
    println!(
        "qemu bench: accel={accel:?} image={} kernel={} root={} host cpus={} load={}",
        image.manifest.key,
        image.manifest.kernel_release,
        if image.root_disk().is_some() {
            "ext4 disk + qcow2 overlay"
        } else {
            "initramfs"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );

    let mut boots = Vec::new();
    let mut execs = Vec::new();
    let mut uploads = Vec::new();
    let mut snapshots = Vec::new();
    let tar = repo_tar();
    println!("repository tar: {} bytes", tar.len());
    for i in 0..n {
        let t = Instant::now();
        let vm = cold.allocate(&spec()).await.expect("allocate");
        boots.push(t.elapsed());
        if i == 0 {
            for _ in 0..50 {
                let t = Instant::now();
                let out = vm
                    .agent
                    .exec_collect(ExecRequest::argv(["/bin/true"]))
                    .await
                    .expect("exec");
                assert!(out.status.success());
                execs.push(t.elapsed());
            }
        }
        if i < 3 {
            let t = Instant::now();
            vm.agent
                .put_tar(&format!("/root/ws{i}"), tar.clone())
                .await
                .expect("put_tar");
            uploads.push(t.elapsed());
            // a step snapshot of a live VM (stop + migrate to a file + cont)
            let t = Instant::now();
            let snap = cold.snapshot(&vm, "bench").await.expect("snapshot");
            snapshots.push(t.elapsed());
            cold.remove_snapshot(&snap).await.expect("remove snapshot");
        }
        cold.release(&vm).await.expect("release");
    }
    report("cold boot to agent ready", boots);
    report("exec round trip (/bin/true)", execs);
    report("put_tar 10 MB repository", uploads);
    report("snapshot of a live VM (after the upload)", snapshots);

    let mut config = QemuConfig::from_env();
    config.from_template = true;
    let warm = QemuProvider::new(config);
    let t = Instant::now();
    let first = warm
        .allocate(&spec())
        .await
        .expect("template + first restore");
    let first_took = t.elapsed();
    let made_now = warm
        .template_snapshot()
        .and_then(|snap| std::fs::metadata(snap.0).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age <= first_took);
    println!(
        "first template allocation ({}): {first_took:.3?}",
        if made_now {
            "template made now, then restored"
        } else {
            "template found in the cache"
        }
    );
    warm.release(&first).await.expect("release");
    let mut restores = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let vm = warm.allocate(&spec()).await.expect("restore");
        restores.push(t.elapsed());
        warm.release(&vm).await.expect("release");
    }
    report("restore to agent ready (incl. reseed)", restores);

    // what a workflow's first python step pays in a fresh session (cold guest page cache)
    let mut pythons = Vec::new();
    for _ in 0..3 {
        let vm = warm.allocate(&spec()).await.expect("restore");
        let t = Instant::now();
        let out = vm
            .agent
            .exec_collect(ExecRequest::argv([
                "/usr/bin/python3",
                "-c",
                "import json, subprocess, pathlib, re",
            ]))
            .await
            .expect("python3");
        if out.status.success() {
            pythons.push(t.elapsed());
        }
        warm.release(&vm).await.expect("release");
    }
    report("first python3 import in a fresh clone", pythons);
    println!("load at the end: {}", loadavg());
}
