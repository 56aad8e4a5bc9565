//! A sandbox that fails half-way through allocation releases what it got. One test in this
//! binary, so the host inspection below sees no other sandbox of this process.
#![allow(clippy::tests_outside_test_module)] // integration tests live at the top level

use ignis_vm::sandbox::{Init, SandboxError, SandboxProvider, Step};
use ignis_vm::{Backend, NetworkPolicy, VmProvider, VmSpec};
use std::path::PathBuf;

fn spec() -> VmSpec {
    VmSpec {
        vm_type: "ubuntu-latest".into(),
        backend: Backend::Sandbox,
        image: "/".into(),
        vcpus: 1,
        memory_mib: 256,
        disk_mib: 64,
        pids_max: Some(64),
        network: NetworkPolicy::None,
    }
}

/// Session cgroups of this process under every `ignis` parent group.
fn our_cgroups() -> Vec<PathBuf> {
    let prefix = format!("sbx-{}-", std::process::id());
    let mut parents = vec![PathBuf::from("/sys/fs/cgroup/ignis")];
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        parents.push(e.path().join("ignis"));
    }
    parents
        .iter()
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// Processes whose parent is this test process (zombies included: unreaped is leaked).
fn our_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn allocation_failing_half_way_releases_what_it_got() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let p = SandboxProvider::new().expect("provider");
    assert!(our_cgroups().is_empty());

    // Fails in the child at its last step (exec), after cgroups, namespaces and mounts exist.
    let err = p
        .launch(
            &spec(),
            None,
            Init::Command(vec!["/nonexistent/init".into()]),
        )
        .await
        .expect_err("exec of a missing init must fail");
    assert!(
        matches!(
            err,
            SandboxError::Child {
                step: Step::Exec,
                ..
            }
        ),
        "unexpected error: {err:?}"
    );
    assert!(
        our_cgroups().is_empty(),
        "cgroups left: {:?}",
        our_cgroups()
    );
    assert!(
        our_children().is_empty(),
        "processes left: {:?}",
        our_children()
    );
    assert!(p.live_ids().is_empty());

    // Fails before anything is created.
    let mut bad = spec();
    bad.image = "/nonexistent-image-dir".into();
    let err = p.allocate(&bad).await.expect_err("missing image");
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert!(our_cgroups().is_empty());
    assert!(our_children().is_empty());

    // An unknown vm id is reported, not ignored.
    assert!(p.stop(&ignis_vm::VmId("sbx-none".into())).await.is_err());

    // A working launch for contrast: the child exists while it runs, and not after stop.
    let l = p
        .launch(
            &spec(),
            None,
            Init::Command(vec!["/bin/sleep".into(), "1000".into()]),
        )
        .await
        .expect("launch sleep");
    assert_eq!(our_children(), vec![l.pid]);
    assert_eq!(our_cgroups().len(), l.record.cgroups.len());
    p.stop(&l.id).await.expect("stop");
    assert!(our_children().is_empty());
    assert!(our_cgroups().is_empty());
}
