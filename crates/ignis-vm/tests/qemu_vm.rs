//! Real microVMs on the qemu backend (TCG here and in CI). Each test boots as few VMs as it
//! can: a TCG boot costs ~3 s of CPU on a 2-core machine.
//!
//! Needs `qemu-system-x86_64`, `qemu-img`, `mkfs.ext4`, busybox-static and apt access to
//! Debian's cloud kernel and packages (the image, with its ext4 root disk, is built once and
//! cached; concurrent tests wait for one build); without them every test prints
//! `skipped: <reason>`. One test asks for an image without packages (`debian:none`, initramfs
//! only) through its spec, as a profile would.

#![allow(clippy::tests_outside_test_module)] // integration tests live at the top level

use ignis_agent::{AgentClient, AgentError, ExecRequest, ExitStatus, Program};
use ignis_vm::qemu::{QemuConfig, QemuProvider};
use ignis_vm::sandbox::process_start_time;
use ignis_vm::{Backend, NetworkPolicy, SnapshotId, Vm, VmProvider, VmSpec};
use std::path::PathBuf;
use std::time::Duration;

fn spec() -> VmSpec {
    VmSpec {
        vm_type: "qemu-test".into(),
        backend: Backend::Qemu,
        image: PathBuf::new(),
        vcpus: 1,
        memory_mib: 512,
        disk_mib: 0,
        pids_max: None,
        network: NetworkPolicy::None,
    }
}

/// The agent binary, building it when this test binary runs without it (`cargo test -p`).
fn agent_bin() -> Result<PathBuf, String> {
    if let Ok(p) = ignis_agent::agent_binary_path() {
        return Ok(p);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", "ignis-agent", "--bin", "ignis-agent"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err("could not build ignis-agent".into());
    }
    ignis_agent::agent_binary_path().map_err(|e| e.to_string())
}

/// A provider on the default image (with its root disk), or `None` when the host cannot run
/// these tests.
fn provider(from_template: bool) -> Option<QemuProvider> {
    provider_with(from_template, |_| {})
}

/// [`provider`] with its config adjusted by `tweak`.
fn provider_with(from_template: bool, tweak: impl FnOnce(&mut QemuConfig)) -> Option<QemuProvider> {
    let mut config = QemuConfig::default();
    let p = QemuProvider::new(config.clone());
    if let Err(e) = p.qemu_available() {
        eprintln!("skipped: {e}");
        return None;
    }
    if !std::path::Path::new("/usr/bin/busybox").exists()
        && !std::path::Path::new("/bin/busybox").exists()
    {
        eprintln!("skipped: busybox-static not installed (scripts/test.sh installs it)");
        return None;
    }
    if !(which("qemu-img")
        && (which("mkfs.ext4") || std::path::Path::new("/usr/sbin/mkfs.ext4").exists()))
    {
        eprintln!("skipped: qemu-img or mkfs.ext4 not installed (scripts/test.sh installs them)");
        return None;
    }
    let agent = match agent_bin() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("skipped: {e}");
            return None;
        }
    };
    let mut recipe = ignis_vm::image::ImageRecipe {
        cache_dir: ignis_vm::image::cache_dir(),
        agent,
        kernel_meta: ignis_vm::image::DEFAULT_KERNEL_META.into(),
        programs: ignis_vm::image::DEFAULT_PROGRAMS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        packages: ignis_vm::image::rootdisk::DEFAULT_PACKAGES
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    recipe.programs.retain(|p| p != "git" || which("git"));
    config.recipe = Some(recipe);
    config.from_template = from_template;
    tweak(&mut config);
    Some(QemuProvider::new(config))
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .any(|d| d.join(name).is_file())
}

async fn sh(agent: &AgentClient, script: &str) -> (String, ExitStatus) {
    let mut req = ExecRequest::new(Program::Argv(vec![
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
    ]));
    req.env
        .insert("PATH".into(), "/usr/bin:/bin:/usr/sbin:/sbin".into());
    let out = agent.exec_collect(req).await.expect("exec");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        out.status,
    )
}

/// After release: the qemu process is gone and the run dir (sockets, logs) removed.
fn assert_released(vm: &Vm) {
    for (pid, start) in &vm.record.processes {
        assert_ne!(
            process_start_time(*pid),
            Some(*start),
            "qemu pid {pid} still alive"
        );
    }
    assert!(!vm.record.processes.is_empty());
    for p in &vm.record.paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_one_vm_isolated_and_fault_tolerant() {
    let Some(p) = provider(false) else { return };
    let image = p.image().await.expect("image");
    let vm = p.allocate(&spec()).await.expect("allocate");
    let a = &vm.agent;

    // every command runs in the same guest
    let (boot1, st) = sh(a, "cat /proc/sys/kernel/random/boot_id").await;
    assert!(st.success(), "{st:?}");
    let (boot2, _) = sh(
        a,
        "echo x > /tmp/state; cat /proc/sys/kernel/random/boot_id",
    )
    .await;
    let (state, _) = sh(a, "cat /tmp/state").await;
    assert_eq!(boot1, boot2);
    assert_eq!(boot1.len(), 36, "{boot1}");
    assert_eq!(state, "x");
    let host_boot =
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("host boot_id");
    assert_ne!(boot1, host_boot.trim(), "the guest is not the host");
    let (release, _) = sh(a, "uname -r").await;
    assert_eq!(release, image.manifest.kernel_release);
    let host_release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    if host_release != release {
        assert_ne!(release, host_release);
    }
    let (bash, st) = sh(a, "bash -c 'echo ${BASH_VERSION%%.*}'").await;
    assert!(st.success(), "bash runs: {st:?}");
    assert!(bash.parse::<u32>().is_ok(), "{bash}");
    // the root is the image's ext4 disk (through this VM's overlay), with Debian's python3
    let (py, st) = sh(
        a,
        "python3 -c 'import sys, json; print(json.dumps(sys.version_info[0]))'",
    )
    .await;
    assert!(st.success(), "python3 runs: {st:?} {py}");
    assert_eq!(py, "3");
    let (fs, _) = sh(
        a,
        "stat -f -c %T /; grep ' / ' /proc/mounts | cut -d' ' -f1,3",
    )
    .await;
    assert_eq!(fs, "ext2/ext3\n/dev/vda ext4", "root filesystem");
    assert!(image.root_disk().is_some());
    assert_eq!(
        vm.record.paths.len(),
        2,
        "run dir and disk dir: {:?}",
        vm.record.paths
    );
    let overlays: Vec<_> = std::fs::read_dir(&vm.record.paths[1])
        .expect("disk dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(overlays, ["disk-0.qcow2"]);

    // host files, processes and loopback are out of reach
    let marker = tempfile::NamedTempFile::new_in("/tmp").expect("marker");
    let marker_path = marker.path().display().to_string();
    let (seen, _) = sh(
        a,
        &format!("test -e {marker_path} && echo visible || echo absent"),
    )
    .await;
    assert_eq!(seen, "absent");
    let mut host_proc = std::process::Command::new("sleep")
        .arg("987654")
        .spawn()
        .expect("host process");
    let (ps, _) = sh(a, "ps -o args 2>/dev/null || ps").await;
    assert!(!ps.contains("987654"), "host process visible: {ps}");
    assert!(ps.contains("ignis-agent"), "guest ps works: {ps}");
    let _ = host_proc.kill();
    let _ = host_proc.wait();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let (net, _) = sh(
        a,
        &format!("timeout 3 bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' 2>/dev/null && echo reached || echo unreachable"),
    )
    .await;
    assert_eq!(net, "unreachable");
    assert!(
        listener.accept().is_err(),
        "nothing connected to the host listener"
    );

    // command timeout kills the command, the VM goes on
    let mut req = ExecRequest::new(Program::Argv(vec!["/bin/sleep".into(), "100".into()]));
    req.timeout = Some(Duration::from_millis(500));
    let out = a.exec_collect(req).await.expect("exec with timeout");
    assert!(out.status.timed_out, "{:?}", out.status);
    // cancel mid-command
    let h = a
        .exec(ExecRequest::new(Program::Argv(vec![
            "/bin/sleep".into(),
            "100".into(),
        ])))
        .await
        .expect("exec");
    h.cancel().await.expect("cancel");
    let out = h.collect().await.expect("cancelled command ends");
    assert!(out.status.cancelled, "{:?}", out.status);
    let (still, _) = sh(a, "cat /proc/sys/kernel/random/boot_id").await;
    assert_eq!(still, boot1, "same VM after timeout and cancel");

    // agent death (the agent is PID 1, which SIGKILL cannot touch: crash the guest kernel
    // under it): the channel closes, release still cleans up
    let _ = a
        .exec(ExecRequest::new(Program::Argv(vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo c > /proc/sysrq-trigger".into(),
        ])))
        .await;
    tokio::time::timeout(Duration::from_secs(60), a.closed())
        .await
        .expect("agent channel closes after the agent died");
    let err = a
        .exec_collect(ExecRequest::new(Program::Argv(vec!["/bin/true".into()])))
        .await
        .expect_err("no agent");
    assert!(
        matches!(err, AgentError::ChannelClosed | AgentError::Remote(_)),
        "{err}"
    );
    p.release(&vm).await.expect("release");
    assert_released(&vm);
    assert!(p.release(&vm).await.is_err(), "second release is UnknownVm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_vms_at_once_are_three_machines() {
    let Some(p) = provider(false) else { return };
    let s = spec();
    let (a, b, c) = tokio::join!(p.allocate(&s), p.allocate(&s), p.allocate(&s));
    let vms = [a.expect("vm a"), b.expect("vm b"), c.expect("vm c")];
    let mut ids = Vec::new();
    for vm in &vms {
        let (id, _) = sh(&vm.agent, "cat /proc/sys/kernel/random/boot_id").await;
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    // each has its own overlay: a write on A's disk is not on B's
    let (_, st) = sh(&vms[0].agent, "echo from-a > /root/a && sync").await;
    assert!(st.success(), "{st:?}");
    let (seen, _) = sh(&vms[1].agent, "cat /root/a 2>/dev/null || echo absent").await;
    assert_eq!(seen, "absent");
    let (mine, _) = sh(&vms[0].agent, "cat /root/a").await;
    assert_eq!(mine, "from-a");
    for vm in &vms {
        p.release(vm).await.expect("release");
        assert_released(vm);
    }
}

/// The files a snapshot keeps on the host (memory state, metadata, disk layer and its
/// removal marker).
fn snapshot_files(snap: &SnapshotId) -> Vec<PathBuf> {
    let state = PathBuf::from(&snap.0);
    ["state", "json", "qcow2", "removed"]
        .iter()
        .map(|e| state.with_extension(e))
        .filter(|p| p.exists())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restore_and_reap() {
    let Some(p) = provider(false) else { return };
    let vm = p.allocate(&spec()).await.expect("allocate");
    let (_, st) = sh(
        &vm.agent,
        "echo before-snapshot > /tmp/mark; echo first > /root/first",
    )
    .await;
    assert!(st.success(), "{st:?}");
    let (boot, _) = sh(&vm.agent, "cat /proc/sys/kernel/random/boot_id").await;
    let snap = p.snapshot(&vm, "t").await.expect("snapshot");
    assert_eq!(
        snapshot_files(&snap).len(),
        3,
        "state, metadata and the frozen layer"
    );
    // the original runs on, writing to a new overlay over the frozen layer
    let (after, st) = sh(
        &vm.agent,
        "cat /tmp/mark /root/first; echo second > /root/second; sync; cat /root/second",
    )
    .await;
    assert!(st.success(), "{st:?}");
    assert_eq!(after, "before-snapshot\nfirst\nsecond");

    // a new provider (as a later process would make) restores it
    drop(p);
    let Some(p2) = provider(false) else { return };
    let clone = p2.restore(&snap, &spec()).await.expect("restore");
    let (mark, _) = sh(
        &clone.agent,
        "cat /tmp/mark /root/first; cat /root/second 2>/dev/null || echo no-second",
    )
    .await;
    assert_eq!(mark, "before-snapshot\nfirst\nno-second");
    let (cboot, _) = sh(&clone.agent, "cat /proc/sys/kernel/random/boot_id").await;
    assert_eq!(cboot, boot, "a restored machine is the snapshotted one");
    assert_ne!(clone.id, vm.id);
    assert_ne!(
        clone.record.paths, vm.record.paths,
        "own sockets and overlay"
    );

    // a snapshot of the clone chains onto the first one's layer
    sh(&clone.agent, "echo third > /root/third; sync").await;
    let snap2 = p2.snapshot(&clone, "u").await.expect("second snapshot");
    // removing the first snapshot while the second builds on its layer keeps the layer
    p2.remove_snapshot(&snap).await.expect("remove first");
    assert!(
        p2.restore(&snap, &spec()).await.is_err(),
        "a removed snapshot cannot be restored"
    );
    let clone2 = p2
        .restore(&snap2, &spec())
        .await
        .expect("restore the chain");
    let (chain, _) = sh(&clone2.agent, "cat /root/first /root/third").await;
    assert_eq!(chain, "first\nthird");
    p2.release(&clone2).await.expect("release clone2");
    assert_released(&clone2);
    p2.release(&clone).await.expect("release clone");
    assert_released(&clone);

    // the reaper releases what a dead ignis left behind, from the record alone
    p2.reap(&vm.record).await.expect("reap");
    assert_released(&vm);
    p2.remove_snapshot(&snap2).await.expect("remove second");
    assert!(
        snapshot_files(&snap2).is_empty(),
        "{:?}",
        snapshot_files(&snap2)
    );
    assert!(
        snapshot_files(&snap).is_empty(),
        "the first layer goes with its last user: {:?}",
        snapshot_files(&snap)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_from_a_template_snapshot() {
    let Some(p) = provider(true) else { return };
    let s = spec();
    let a = p.allocate(&s).await.expect("first clone");
    let b = p.allocate(&s).await.expect("second clone");
    let (ba, st) = sh(
        &a.agent,
        "cat /proc/sys/kernel/random/boot_id; echo a > /tmp/who",
    )
    .await;
    assert!(st.success(), "{st:?}");
    sh(&a.agent, "echo a > /root/who; sync").await;
    let (bb, _) = sh(
        &b.agent,
        "cat /proc/sys/kernel/random/boot_id; cat /tmp/who /root/who 2>/dev/null || echo none",
    )
    .await;
    assert!(bb.ends_with("none"), "clones share no state: {bb}");
    let (py, st) = sh(&b.agent, "python3 -c 'print(6*7)'").await;
    assert!(st.success() && py == "42", "{st:?} {py}");
    let (ida, idb) = (ba.lines().next(), bb.lines().next());
    assert!(ida.is_some_and(|i| i.len() == 36), "{ba}");
    assert_ne!(ida, idb, "clones draw distinct random values (boot_id)");
    let (ra, _) = sh(&a.agent, "head -c 16 /dev/urandom | od -An -tx1").await;
    let (rb, _) = sh(&b.agent, "head -c 16 /dev/urandom | od -An -tx1").await;
    assert_ne!(ra, rb, "clones' /dev/urandom differ");
    p.release(&a).await.expect("release a");
    p.release(&b).await.expect("release b");
    assert_released(&a);
    assert_released(&b);
    // the template is shared across providers (processes) of the same image and shape
    let template = PathBuf::from(p.template_snapshot().expect("template made").0);
    assert!(template.is_file());
    assert!(
        template.with_extension("qcow2").is_file(),
        "the template keeps its disk layer"
    );
    drop(p);
    let Some(p2) = provider(true) else { return };
    let c = p2
        .allocate(&s)
        .await
        .expect("clone from the existing template");
    assert_eq!(
        p2.template_snapshot().map(|t| PathBuf::from(t.0)),
        Some(template)
    );
    let (bc, _) = sh(&c.agent, "cat /proc/sys/kernel/random/boot_id").await;
    assert_ne!(Some(bc.as_str()), ida);
    assert_ne!(Some(bc.as_str()), idb);
    p2.release(&c).await.expect("release c");
    assert_released(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initramfs_only_image_still_boots() {
    // a profile's `image = "debian:none"`: the default recipe without packages, so no disk;
    // and templates on, in a snapshot dir that cannot exist: the allocation boots instead
    let blocker = tempfile::NamedTempFile::new().expect("a file where a dir should be");
    let Some(p) = provider_with(true, |c| {
        c.snapshot_dir = blocker.path().join("snapshots");
    }) else {
        return;
    };
    let spec = VmSpec {
        image: PathBuf::from("debian:none"),
        ..spec()
    };
    let image = p.image_for(&spec).await.expect("image");
    assert!(image.root_disk().is_none(), "no packages, no disk");
    assert_ne!(
        Some(image.manifest.key.clone()),
        p.image().await.ok().map(|i| i.manifest.key),
        "a different image than the provider's default"
    );
    let vm = p
        .allocate(&spec)
        .await
        .expect("allocate falls back to a boot");
    assert!(p.templates_failed(), "the template could not be made");
    assert!(p.template_snapshot().is_none());
    let (root, st) = sh(&vm.agent, "stat -f -c %T /; uname -r").await;
    assert!(st.success(), "{st:?}");
    let mut lines = root.lines();
    let fs = lines.next().unwrap_or_default();
    assert!(
        fs == "ramfs" || fs == "tmpfs",
        "the initramfs is the root: {root}"
    );
    assert_eq!(lines.next(), Some(image.manifest.kernel_release.as_str()));
    assert_eq!(
        vm.record.paths.len(),
        1,
        "no overlay: {:?}",
        vm.record.paths
    );
    p.release(&vm).await.expect("release");
    assert_released(&vm);
}
