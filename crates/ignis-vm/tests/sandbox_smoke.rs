//! Quick machinery check with a shell as PID 1 (no agent needed).

use ignis_vm::sandbox::{Init, SandboxProvider};
use ignis_vm::{Backend, NetworkPolicy, VmSpec};
use std::io::{Read, Write};

fn spec() -> VmSpec {
    VmSpec {
        vm_type: "ubuntu-latest".into(),
        backend: Backend::Sandbox,
        image: "/".into(),
        vcpus: 1,
        memory_mib: 512,
        disk_mib: 256,
        pids_max: Some(128),
        network: NetworkPolicy::None,
    }
}

#[tokio::test]
async fn shell_as_pid1_sees_an_isolated_world() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let p = SandboxProvider::new().expect("provider");
    let l = p
        .launch(
            &spec(),
            vec![],
            Init::Command(vec!["/bin/sh".into(), "-s".into()]),
        )
        .await
        .expect("launch");
    let mut ch = l.channel;
    ch.write_all(b"echo pid=$$ uid=$(id -u) host=$(hostname); ls -ln /etc/passwd; ls /proc | grep -c '^[0-9]'; exit 0\n").unwrap();
    ch.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    ch.read_to_string(&mut out).unwrap();
    eprintln!("{out}");
    eprintln!(
        "{}",
        std::fs::read_to_string(format!("/proc/{}/status", l.pid))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("Uid"))
            .collect::<String>()
    );
    assert!(out.contains("pid=1 uid=0"));
    p.stop(&l.id).await.expect("stop");
}
