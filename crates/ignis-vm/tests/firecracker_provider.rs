//! The Firecracker provider against the fake Firecracker (a separate process started in place
//! of `firecracker`): the whole lifecycle, every fault path, and the warm pool. Every test
//! also checks that each request it caused validates against firecracker.yaml and that
//! nothing (process, socket, disk copy) is left behind.

// An integration-test crate is test-only by construction.
#![allow(clippy::tests_outside_test_module)]

mod firecracker_support;

use firecracker_support::{Env, eventually, process_dead, run, skip_unless_root};
use ignis_vm::{VmError, VmId, VmProvider, VmRecord};
use std::time::Duration;

fn assert_nothing_leaked(env: &Env, records: &[VmRecord]) {
    assert!(
        env.vm_dirs().is_empty(),
        "vm dirs left: {:?}",
        env.vm_dirs()
    );
    for r in records {
        for (pid, _) in &r.processes {
            assert!(process_dead(*pid), "process {pid} of {} still alive", r.id);
        }
        for p in &r.paths {
            assert!(!p.exists(), "{} left behind", p.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firecracker_lifecycle_boot_exec_snapshot_restore_release() {
    if skip_unless_root("firecracker_lifecycle_boot_exec_snapshot_restore_release") {
        return;
    }
    let env = Env::new("");
    let p = env.provider();
    let spec = env.spec();
    let vm = p.allocate(&spec).await.expect("allocate");
    assert_eq!(vm.backend, ignis_vm::Backend::Firecracker);
    assert_eq!(
        vm.record.processes.len(),
        1,
        "the firecracker process is recorded"
    );
    assert!(
        vm.record.paths.iter().any(|p| p.is_dir()),
        "the vm dir is recorded and exists"
    );

    let (code, out) = run(&vm, &["sh", "-c", "echo hello-from-guest"]).await;
    assert_eq!((code, out.as_str()), (Some(0), "hello-from-guest\n"));
    let scratch = env.dir.path().join("guest-file");
    vm.agent
        .write_file(&scratch.display().to_string(), b"state".to_vec(), 0o644)
        .await
        .expect("write_file");

    let snap = p.snapshot(&vm, "life").await.expect("snapshot");
    // The VM keeps running after the snapshot.
    let (code, _) = run(&vm, &["true"]).await;
    assert_eq!(code, Some(0));

    let clone = p.restore(&snap, &spec).await.expect("restore");
    assert_ne!(clone.id, vm.id);
    let (code, out) = run(&clone, &["cat", &scratch.display().to_string()]).await;
    assert_eq!((code, out.as_str()), (Some(0), "state"));

    // Removing the snapshot leaves the running clone alone and makes it unrestorable.
    p.remove_snapshot(&snap).await.expect("remove snapshot");
    p.remove_snapshot(&snap)
        .await
        .expect("removing twice is fine");
    assert!(
        p.restore(&snap, &spec).await.is_err(),
        "removed snapshot restores"
    );
    let (code, out) = run(&clone, &["cat", &scratch.display().to_string()]).await;
    assert_eq!((code, out.as_str()), (Some(0), "state"));

    let records = vec![vm.record.clone(), clone.record.clone()];
    p.release(&clone).await.expect("release clone");
    p.release(&vm).await.expect("release");
    assert!(
        matches!(p.release(&vm).await, Err(VmError::UnknownVm(_))),
        "second release is UnknownVm"
    );
    assert_eq!(p.live_vms(), 0);
    assert_nothing_leaked(&env, &records);

    let seen = env.assert_requests_match_spec();
    for op in [
        "PUT /machine-config",
        "PUT /boot-source",
        "PUT /drives/{drive_id}",
        "PUT /vsock",
        "PUT /actions InstanceStart",
        "PATCH /vm",
        "PUT /snapshot/create",
        "PUT /snapshot/load",
        "PUT /actions SendCtrlAltDel",
    ] {
        assert!(seen.contains(op), "{op} never sent; saw {seen:?}");
    }
    assert!(
        env.requests()
            .iter()
            .all(|r| r["status"].as_u64() < Some(300)),
        "a request failed: {:?}",
        env.requests()
    );
    let load = env
        .requests()
        .into_iter()
        .find(|r| r["path"] == "/snapshot/load")
        .expect("load");
    assert!(
        load["body"]["vsock_override"]["uds_path"]
            .as_str()
            .is_some(),
        "clone gets its own vsock path"
    );
}

#[tokio::test]
async fn firecracker_process_dies_before_socket_reports_stderr() {
    let env = Env::new("die-before-socket");
    let p = env.provider();
    let err = p.allocate(&env.spec()).await.expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("exited") && msg.contains("before its api socket appeared"),
        "{msg}"
    );
    assert!(
        msg.contains("dying before the api socket as asked"),
        "stderr not included: {msg}"
    );
    assert_eq!(p.live_vms(), 0);
    assert_nothing_leaked(&env, &[]);
}

#[tokio::test]
async fn firecracker_drive_fault_is_surfaced_verbatim_and_nothing_leaks() {
    let env = Env::new("");
    let fault = "Unable to create the block device: BackingFile(injected by test, \"/x\")";
    env.inject(&format!("fail PUT /drives/{{drive_id}} {fault}"));
    let p = env.provider();
    let err = p.allocate(&env.spec()).await.expect_err("must fail");
    assert!(
        err.to_string().contains(fault),
        "fault_message not verbatim: {err}"
    );
    assert!(matches!(err, VmError::Allocate { .. }), "{err:?}");
    assert_eq!(p.live_vms(), 0);
    // The process is killed when the VM is dropped; give the reaper a moment.
    assert!(eventually(Duration::from_secs(5), || env.vm_dirs().is_empty()).await);
    env.assert_requests_match_spec();
}

#[tokio::test]
async fn firecracker_agent_never_connects_times_out_and_nothing_leaks() {
    let env = Env::new("agent-never");
    let mut cfg = env.config();
    cfg.agent_timeout = Duration::from_millis(800);
    let p = ignis_vm::FirecrackerProvider::new(cfg);
    let err = p.allocate(&env.spec()).await.expect_err("must fail");
    assert!(err.to_string().contains("agent never connected"), "{err}");
    assert_eq!(p.live_vms(), 0);
    assert!(env.vm_dirs().is_empty(), "{:?}", env.vm_dirs());
    env.assert_requests_match_spec();
}

#[tokio::test]
async fn firecracker_hung_api_times_out() {
    let env = Env::new("hang-api");
    let mut cfg = env.config();
    cfg.api_timeout = Duration::from_millis(300);
    let p = ignis_vm::FirecrackerProvider::new(cfg);
    let err = p.allocate(&env.spec()).await.expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("timed out") && msg.contains("/machine-config"),
        "{msg}"
    );
    assert_eq!(p.live_vms(), 0);
    assert!(env.vm_dirs().is_empty());
}

#[tokio::test]
async fn firecracker_hung_instance_start_times_out() {
    let env = Env::new("");
    env.inject("hang PUT /actions");
    let mut cfg = env.config();
    cfg.api_timeout = Duration::from_millis(300);
    let p = ignis_vm::FirecrackerProvider::new(cfg);
    let err = p.allocate(&env.spec()).await.expect_err("must fail");
    assert!(err.to_string().contains("PUT /actions timed out"), "{err}");
    assert!(env.vm_dirs().is_empty());
}

#[tokio::test]
async fn firecracker_missing_binary_is_a_clear_error() {
    let env = Env::new("");
    let mut cfg = env.config();
    cfg.firecracker_bin = env.dir.path().join("no-such-firecracker");
    let err = ignis_vm::FirecrackerProvider::new(cfg)
        .allocate(&env.spec())
        .await
        .expect_err("must fail");
    assert!(
        err.to_string().contains("starting") && err.to_string().contains("no-such-firecracker"),
        "{err}"
    );
    assert!(env.vm_dirs().is_empty());
}

#[tokio::test]
async fn firecracker_release_unknown_vm_is_unknown() {
    let env = Env::new("");
    let p = env.provider();
    let vm = p.allocate(&env.spec()).await.expect("allocate");
    let mut other = vm.clone();
    other.id = VmId("fc-nope".into());
    assert!(matches!(
        p.release(&other).await,
        Err(VmError::UnknownVm(_))
    ));
    p.release(&vm).await.expect("release");
}

#[tokio::test]
async fn firecracker_reap_kills_the_recorded_process_and_removes_paths() {
    let env = Env::new("");
    let p = env.provider();
    let vm = p.allocate(&env.spec()).await.expect("allocate");
    let record = vm.record.clone();
    let (pid, _) = record.processes[0];
    assert!(!process_dead(pid));
    // A fresh provider (the next ignis process) reaps from the record alone.
    let other = env.provider();
    other.reap(&record).await.expect("reap");
    assert!(
        eventually(Duration::from_secs(5), || process_dead(pid)).await,
        "process {pid} survived reap"
    );
    for path in &record.paths {
        assert!(!path.exists(), "{} survived reap", path.display());
    }
    // The original provider's release now finds the VM gone on the host but still cleans up.
    let _ = p.release(&vm).await;
    assert_eq!(p.live_vms(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firecracker_pool_refills_in_background_from_the_template() {
    if skip_unless_root("firecracker_pool_refills_in_background_from_the_template") {
        return;
    }
    let env = Env::new("");
    let mut cfg = env.config();
    cfg.pool_sizes.insert("fc-test".into(), 2);
    let p = ignis_vm::FirecrackerProvider::new(cfg);
    let spec = env.spec();
    let first = p.allocate(&spec).await.expect("allocate from pool");
    let (code, _) = run(&first, &["true"]).await;
    assert_eq!(code, Some(0));
    assert!(
        eventually(Duration::from_secs(30), || p.pool_ready("fc-test") == 2).await,
        "pool never refilled"
    );
    let boots_before = env
        .requests()
        .iter()
        .filter(|r| r["body"]["action_type"] == "InstanceStart")
        .count();
    assert_eq!(boots_before, 1, "only the template is cold-booted");
    let second = p.allocate(&spec).await.expect("allocate pooled");
    let (code, out) = run(&second, &["sh", "-c", "echo pooled"]).await;
    assert_eq!((code, out.as_str()), (Some(0), "pooled\n"));
    assert!(
        eventually(Duration::from_secs(30), || p.pool_ready("fc-test") == 2).await,
        "pool not topped up"
    );
    let boots_after = env
        .requests()
        .iter()
        .filter(|r| r["body"]["action_type"] == "InstanceStart")
        .count();
    assert_eq!(boots_after, 1, "pooled allocations restore, never boot");

    let records = vec![first.record.clone(), second.record.clone()];
    p.release(&first).await.expect("release");
    p.release(&second).await.expect("release");
    p.drain_pools().await.expect("drain");
    assert_eq!(p.live_vms(), 0);
    assert_nothing_leaked(&env, &records);
    let seen = env.assert_requests_match_spec();
    assert!(
        seen.contains("PUT /snapshot/load") && seen.contains("PUT /snapshot/create"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firecracker_pool_failed_refill_leaks_nothing() {
    if skip_unless_root("firecracker_pool_failed_refill_leaks_nothing") {
        return;
    }
    let env = Env::new("");
    let mut cfg = env.config();
    cfg.pool_sizes.insert("fc-test".into(), 1);
    let p = ignis_vm::FirecrackerProvider::new(cfg);
    let spec = env.spec();
    p.warm(&spec).await.expect("warm");
    assert_eq!(p.pool_ready("fc-test"), 1);
    assert_eq!(p.live_vms(), 1);

    env.inject("fail PUT /snapshot/load Load microVM snapshot error: injected by test");
    let vm = p
        .allocate(&spec)
        .await
        .expect("pooled allocation still works");
    assert!(
        eventually(Duration::from_secs(30), || p
            .pool_last_error("fc-test")
            .is_some())
        .await,
        "refill never reported its failure"
    );
    let err = p.pool_last_error("fc-test").unwrap_or_default();
    assert!(err.contains("injected by test"), "{err}");
    // Only the VM handed out is alive: the failed clone left no process or directory.
    assert_eq!(p.live_vms(), 1);
    assert!(
        eventually(Duration::from_secs(5), || env.vm_dirs().len() == 1).await,
        "{:?}",
        env.vm_dirs()
    );

    // An allocation while refills fail surfaces the fault verbatim and leaks nothing either.
    let direct = p
        .allocate(&spec)
        .await
        .expect_err("pool empty and restore fails");
    assert!(direct.to_string().contains("injected by test"), "{direct}");
    assert!(
        eventually(Duration::from_secs(5), || env.vm_dirs().len() == 1).await,
        "{:?}",
        env.vm_dirs()
    );

    // Faults stay injected so no late refill can succeed after the drain.
    assert!(eventually(Duration::from_secs(30), || !p.pool_refilling("fc-test")).await);
    p.release(&vm).await.expect("release");
    p.drain_pools().await.expect("drain");
    assert!(eventually(Duration::from_secs(5), || env.vm_dirs().is_empty()).await);
    env.assert_requests_match_spec();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firecracker_network_user_gets_its_own_tap_and_releases_it() {
    let root = rustix::process::geteuid().is_root();
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .is_ok();
    if !root || !tun {
        eprintln!(
            "skipped: firecracker tap test needs root and /dev/net/tun (root: {root}, tun: {tun})"
        );
        return;
    }
    let env = Env::new("");
    let p = env.provider();
    let mut spec = env.spec();
    spec.network = ignis_vm::NetworkPolicy::User;
    let vm = p.allocate(&spec).await.expect("allocate with network");
    let tap_of = |r: &VmRecord| {
        r.paths
            .iter()
            .find(|p| p.starts_with("/sys/class/net"))
            .cloned()
            .expect("tap recorded")
    };
    let tap = tap_of(&vm.record);
    assert!(
        tap.exists(),
        "tap {} missing while the VM lives",
        tap.display()
    );
    let snap = p.snapshot(&vm, "net").await.expect("snapshot");
    let clone = p.restore(&snap, &spec).await.expect("restore with network");
    let clone_tap = tap_of(&clone.record);
    assert_ne!(tap, clone_tap, "each clone gets its own tap");
    let records = vec![vm.record.clone(), clone.record.clone()];
    p.release(&vm).await.expect("release");
    p.release(&clone).await.expect("release clone");
    assert!(
        !tap.exists() && !clone_tap.exists(),
        "taps survived release"
    );
    assert_nothing_leaked(&env, &records);
    let seen = env.assert_requests_match_spec();
    assert!(
        seen.contains("PUT /network-interfaces/{iface_id}"),
        "{seen:?}"
    );
    let load = env
        .requests()
        .into_iter()
        .find(|r| r["path"] == "/snapshot/load")
        .expect("load");
    assert_eq!(load["body"]["network_overrides"][0]["iface_id"], "eth0");
}

/// A guest image as `ignis image build` leaves it in the cache (ELF vmlinux, initramfs,
/// manifest), with placeholder contents the fake accepts.
fn fake_cached_image(cache: &std::path::Path, key: &str, created: u64) -> std::path::PathBuf {
    let dir = cache.join("images").join(key);
    std::fs::create_dir_all(&dir).expect("image dir");
    let mut k = b"\x7fELF".to_vec();
    k.resize(4096, 0);
    std::fs::write(dir.join("vmlinux"), k).expect("vmlinux");
    std::fs::write(dir.join("vmlinuz"), b"bz").expect("vmlinuz");
    std::fs::write(dir.join("initrd.cpio"), b"070701").expect("initrd");
    let manifest = ignis_vm::image::Manifest {
        key: key.into(),
        kernel_package: "linux-image-test".into(),
        kernel_version: "1".into(),
        kernel_release: "6.1.0-test".into(),
        programs: vec![],
        agent_sha256: String::new(),
        created,
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).expect("manifest json"),
    )
    .expect("manifest");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firecracker_boots_a_guest_image_initramfs_without_a_rootfs() {
    let env = Env::new("");
    let cache = env.dir.path().join("cache");
    let none = ignis_vm::FirecrackerConfig::from_env_or_cache(env.dir.path(), &cache);
    if std::env::var_os("IGNIS_FIRECRACKER_KERNEL").is_none() {
        let msg = none.expect_err("no image in an empty cache").to_string();
        assert!(msg.contains("ignis image build"), "{msg}");
    }
    fake_cached_image(&cache, "0000older", 1);
    let newest = fake_cached_image(&cache, "1111newer", 2);
    let image = ignis_vm::image::find(&cache, "1111").expect("find");
    let base = env.config();
    let mut config =
        ignis_vm::FirecrackerConfig::from_image(env.dir.path(), &image).expect("config from image");
    assert_eq!(config.kernel, newest.join("vmlinux"));
    assert_eq!(
        config.initrd.as_deref(),
        Some(newest.join("initrd.cpio").as_path())
    );
    if std::env::var_os("IGNIS_FIRECRACKER_KERNEL").is_none() {
        let cached = ignis_vm::FirecrackerConfig::from_env_or_cache(env.dir.path(), &cache)
            .expect("config from the cache");
        assert_eq!(
            cached.kernel,
            newest.join("vmlinux"),
            "the newest image wins"
        );
    }
    config.firecracker_bin = base.firecracker_bin;
    config.api_timeout = base.api_timeout;
    config.socket_timeout = base.socket_timeout;
    config.agent_timeout = base.agent_timeout;
    config.shutdown_grace = base.shutdown_grace;
    let p = ignis_vm::FirecrackerProvider::new(config);
    let mut spec = env.spec();
    spec.image = "default".into(); // names no rootfs: the initramfs is the root
    spec.vcpus = 2;
    spec.memory_mib = 384;
    let vm = p.allocate(&spec).await.expect("allocate");
    let (code, out) = run(&vm, &["sh", "-c", "echo from-initramfs"]).await;
    assert_eq!((code, out.as_str()), (Some(0), "from-initramfs\n"));
    let records = vec![vm.record.clone()];
    p.release(&vm).await.expect("release");
    assert_nothing_leaked(&env, &records);

    let seen = env.assert_requests_match_spec();
    assert!(
        !seen.contains("PUT /drives/{drive_id}"),
        "no rootfs drive without a rootfs; saw {seen:?}"
    );
    let reqs = env.requests();
    let boot = reqs
        .iter()
        .find(|r| r["path"] == "/boot-source")
        .expect("boot-source");
    assert_eq!(
        boot["body"]["initrd_path"].as_str(),
        Some(newest.join("initrd.cpio").to_string_lossy().as_ref())
    );
    let args = boot["body"]["boot_args"].as_str().expect("boot_args");
    for a in [
        "ignis.transport=vsock:1024",
        "console=ttyS0",
        "reboot=k",
        "panic=1",
    ] {
        assert!(args.split(' ').any(|x| x == a), "{a} missing from {args}");
    }
    assert!(
        !args.contains("init="),
        "the initramfs /init starts the agent: {args}"
    );
    let machine = reqs
        .iter()
        .find(|r| r["path"] == "/machine-config")
        .expect("machine-config");
    assert_eq!(machine["body"]["vcpu_count"], 2);
    assert_eq!(machine["body"]["mem_size_mib"], 384);
    assert!(
        reqs.iter().all(|r| r["status"].as_u64() < Some(300)),
        "a request failed: {reqs:?}"
    );
}
