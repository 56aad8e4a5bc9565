//! The fake backend against the real agent: counting, identity, faults.
#![allow(clippy::tests_outside_test_module)] // integration tests live at the top level

use ignis_agent::{AgentError, ExecEvent, ExecRequest, Program};
use ignis_vm::fake::{FakeConfig, FakeProvider, Fault, VmEvent};
use ignis_vm::profile::{ProfileConfig, RunsOn};
use ignis_vm::{Backend, VmError, VmProvider, VmRecord, VmSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The agent binary; this crate's tests cannot build it, so they skip loudly without it.
fn agent() -> Option<PathBuf> {
    match ignis_agent::agent_binary_path() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn provider(root: &std::path::Path) -> Option<FakeProvider> {
    let mut c = FakeConfig::new(agent()?);
    c.root = root.to_owned();
    Some(FakeProvider::new(c))
}

fn spec() -> VmSpec {
    let mut config = ProfileConfig::default();
    for p in config.profiles.values_mut() {
        p.backend = Backend::Fake;
    }
    config
        .spec_for(&RunsOn::from("ubuntu-latest"))
        .expect("default profile")
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        program: Program::Argv(vec!["sh".into(), "-c".into(), script.into()]),
        env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        cwd: None,
        stdin: None,
        timeout: None,
    }
}

async fn identity(vm: &ignis_vm::Vm) -> String {
    let out = vm
        .agent
        .exec_collect(FakeProvider::identity_probe())
        .await
        .expect("probe");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn allocate_exec_release_counts_and_identity() {
    let root = tempfile::tempdir().unwrap();
    let Some(p) = provider(root.path()) else {
        return;
    };
    let a = p.allocate(&spec()).await.expect("allocate a");
    let b = p.allocate(&spec()).await.expect("allocate b");
    assert_eq!(p.stats().live, 2);
    assert_eq!(p.stats().max_live, 2);
    let ida = identity(&a).await;
    assert_eq!(ida, identity(&a).await, "same vm, same identity");
    assert_eq!(PathBuf::from(&ida), p.vm_dir(&a.id).unwrap());
    assert_ne!(
        ida,
        identity(&b).await,
        "different vms, different identities"
    );
    assert_eq!(a.record.backend, Some(Backend::Fake));
    assert_eq!(a.record.processes.len(), 1);
    p.release(&a).await.expect("release a");
    p.release(&b).await.expect("release b");
    assert!(matches!(p.release(&a).await, Err(VmError::UnknownVm(_))));
    let s = p.stats();
    assert_eq!(
        (s.allocations, s.releases, s.live, s.max_live),
        (2, 2, 0, 2)
    );
    assert_eq!(
        p.history(&a.id),
        vec![VmEvent::Allocated, VmEvent::Released]
    );
    assert!(!PathBuf::from(&ida).exists(), "vm dir removed");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn injected_allocate_and_release_faults() {
    let root = tempfile::tempdir().unwrap();
    let Some(p) = provider(root.path()) else {
        return;
    };
    p.fail_allocate(Fault::ONCE);
    assert!(matches!(
        p.allocate(&spec()).await,
        Err(VmError::Allocate { .. })
    ));
    assert_eq!(p.stats().live, 0);
    assert_eq!(p.stats().allocation_failures, 1);
    let vm = p.allocate(&spec()).await.expect("second allocate succeeds");
    p.fail_release(Fault::Times(2));
    assert!(matches!(p.release(&vm).await, Err(VmError::Release { .. })));
    assert!(matches!(p.release(&vm).await, Err(VmError::Release { .. })));
    assert_eq!(p.stats().live, 1, "a failed release keeps the vm");
    p.release(&vm).await.expect("third release succeeds");
    assert_eq!(p.stats().live, 0);
    assert_eq!(
        p.history(&vm.id),
        vec![
            VmEvent::Allocated,
            VmEvent::ReleaseFailed,
            VmEvent::ReleaseFailed,
            VmEvent::Released
        ]
    );
}

#[tokio::test]
async fn dropped_channel_fails_in_flight_command() {
    let root = tempfile::tempdir().unwrap();
    let Some(p) = provider(root.path()) else {
        return;
    };
    let vm = p.allocate(&spec()).await.expect("allocate");
    let mut h = vm
        .agent
        .exec(sh("echo started; sleep 30"))
        .await
        .expect("exec");
    match h.next().await {
        Some(Ok(ExecEvent::Output(_, b))) => assert_eq!(b, b"started\n"),
        other => panic!("expected output, got {other:?}"),
    }
    assert!(p.drop_channel(&vm.id));
    let mut saw_closed = false;
    while let Some(ev) = h.next().await {
        match ev {
            Err(AgentError::ChannelClosed) => {
                saw_closed = true;
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(ExecEvent::Exit(s)) => panic!("command cannot exit normally: {s:?}"),
            Ok(_) => {}
        }
    }
    assert!(saw_closed, "in-flight request failed with ChannelClosed");
    assert!(matches!(
        vm.agent.exec_collect(sh("true")).await,
        Err(AgentError::ChannelClosed)
    ));
    p.release(&vm).await.expect("release after channel drop");
    assert_eq!(p.stats().live, 0);
}

#[tokio::test]
async fn latency_is_part_of_allocation_time() {
    let root = tempfile::tempdir().unwrap();
    let Some(agent) = agent() else { return };
    let mut c = FakeConfig::new(agent);
    c.root = root.path().to_owned();
    c.allocation_latency = Duration::from_millis(30);
    let p = FakeProvider::new(c);
    let vm = p.allocate(&spec()).await.expect("allocate");
    assert!(vm.allocation_time >= Duration::from_millis(30));
    p.release(&vm).await.expect("release");
}

#[tokio::test]
async fn reap_kills_recorded_agent_and_removes_dir() {
    let root = tempfile::tempdir().unwrap();
    let Some(p) = provider(root.path()) else {
        return;
    };
    let vm = p.allocate(&spec()).await.expect("allocate");
    let record: VmRecord = vm.record.clone();
    let (pid, start) = record.processes[0];
    assert_eq!(ignis_vm::fake::process_start_time(pid), Some(start));
    // A different provider instance (as after a restart) reaps from the record alone.
    let other = provider(root.path()).expect("agent");
    other.reap(&record).await.expect("reap");
    assert!(!record.paths[0].exists());
    p.reap(&record).await.expect("reap is idempotent");
    assert_eq!(p.stats().live, 0);
}
