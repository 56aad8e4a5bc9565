//! Quick machinery check with a shell as PID 1 (no agent needed).
#![allow(clippy::tests_outside_test_module)] // integration tests live at the top level

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
            None,
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

/// A minimal image directory: dash, its two libraries, `/etc/passwd`. As an ordinary user the
/// host root cannot be a lower layer (its submounts are locked), an image directory can.
fn tiny_image() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("ignis-sbx-image")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (from, to) in [
        ("/bin/sh", "bin/sh"),
        (
            "/lib/x86_64-linux-gnu/libc.so.6",
            "lib/x86_64-linux-gnu/libc.so.6",
        ),
        ("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
        ("/etc/passwd", "etc/passwd"),
    ] {
        let to = dir.path().join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
    }
    for d in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    dir
}

/// The part of the unprivileged test that runs as an ordinary user (uid 65534).
async fn unprivileged_body(image: &str) {
    let p = SandboxProvider::new().expect("provider as an ordinary user");
    let mut s = spec();
    s.image = image.into();
    let l = p
        .launch(&s, None, Init::Command(vec!["/bin/sh".into(), "-s".into()]))
        .await
        .expect("launch as an ordinary user");
    let status = std::fs::read_to_string(format!("/proc/{}/status", l.pid)).unwrap_or_default();
    let mut ch = l.channel;
    ch.write_all(
        b"while read k v rest; do [ \"$k\" = Uid: ] && echo uid=$v pid=$$; done < /proc/self/status\n\
          [ -O /etc/passwd ] && echo owned || echo not-owned\nexit 0\n",
    )
    .unwrap();
    ch.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    ch.read_to_string(&mut out).unwrap();
    p.stop(&l.id).await.expect("stop");
    assert!(out.contains("uid=0 pid=1"), "{out}");
    // Without idmapped mounts (root only), host root's files are not root's inside.
    assert!(out.contains("not-owned"), "{out}");
    let host_uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default();
    assert!(host_uid.contains("65534"), "{host_uid}");
    println!("unprivileged-ok");
}

#[tokio::test]
async fn an_ordinary_user_gets_root_only_inside_the_sandbox() {
    if let Some(image) = std::env::var_os("IGNIS_SBX_UNPRIV_CHILD") {
        return unprivileged_body(&image.to_string_lossy()).await;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to start the ordinary-user half");
        return;
    }
    use std::os::unix::process::CommandExt;
    let image = tiny_image();
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "an_ordinary_user_gets_root_only_inside_the_sandbox",
            "--nocapture",
        ])
        .env("IGNIS_SBX_UNPRIV_CHILD", image.path())
        .uid(65534)
        .gid(65534)
        .output();
    let out = match out {
        Ok(out) => out,
        // The test binary sits where uid 65534 cannot reach it (e.g. under /root).
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: uid 65534 cannot run the test binary: {e}");
            return;
        }
        Err(e) => panic!("run test binary as uid 65534: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("user namespaces are not available") {
        eprintln!("skipped: this host forbids unprivileged user namespaces: {stderr}");
        return;
    }
    assert!(
        out.status.success() && stdout.contains("unprivileged-ok"),
        "{stdout}\n{stderr}"
    );
}
