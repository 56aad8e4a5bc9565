//! Contract tests: the fake Firecracker accepts exactly what firecracker.yaml accepts and
//! enforces Firecracker's call order; the backend's request bodies validate against the
//! spec. (Requests of every provider path are validated in `firecracker_provider.rs`.)

// An integration-test crate is test-only by construction.
#![allow(clippy::tests_outside_test_module)]

mod firecracker_support;

use firecracker_support::{Env, spec};
use ignis_vm::firecracker::api::{ApiClient, ApiError};
use ignis_vm::firecracker::models::*;
use serde_json::json;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A fake Firecracker process on its own socket, killed on drop.
struct Fake {
    child: Child,
    api: ApiClient,
    env: Env,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fake() -> Fake {
    let env = Env::new("");
    let sock = env.dir.path().join("api.sock");
    let child = Command::new(&env.bin)
        .arg("--api-sock")
        .arg(&sock)
        .arg("--id")
        .arg("contract")
        .spawn()
        .expect("spawn fake");
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "fake never opened its socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Fake {
        child,
        api: ApiClient::new(sock, Duration::from_secs(5)),
        env,
    }
}

fn fault_of(r: Result<ignis_vm::firecracker::api::ApiResponse, ApiError>) -> String {
    match r {
        Err(ApiError::Fault {
            status: 400,
            fault_message,
            ..
        }) => fault_message,
        other => panic!("expected a 400 fault, got {other:?}"),
    }
}

#[test]
fn firecracker_spec_is_present_and_complete() {
    let s = spec();
    for (m, p) in [
        ("PUT", "/machine-config"),
        ("PUT", "/boot-source"),
        ("PUT", "/drives/rootfs"),
        ("PUT", "/vsock"),
        ("PUT", "/network-interfaces/eth0"),
        ("PUT", "/actions"),
        ("PATCH", "/vm"),
        ("PUT", "/snapshot/create"),
        ("PUT", "/snapshot/load"),
    ] {
        assert!(s.find(m, p).is_some(), "spec lacks {m} {p}");
    }
}

#[test]
fn firecracker_backend_models_validate_against_the_spec() {
    let s = spec();
    let check = |m: &str, p: &str, v: serde_json::Value| {
        let body = serde_json::to_vec(&v).expect("json");
        s.validate(m, p, Some(&body))
            .unwrap_or_else(|e| panic!("{m} {p} {v}: {e}"));
    };
    check(
        "PUT",
        "/machine-config",
        serde_json::to_value(MachineConfiguration {
            vcpu_count: 2,
            mem_size_mib: 512,
            smt: false,
        })
        .expect("v"),
    );
    check(
        "PUT",
        "/boot-source",
        serde_json::to_value(BootSource {
            kernel_image_path: "/k".into(),
            boot_args: Some("console=ttyS0".into()),
            initrd_path: None,
        })
        .expect("v"),
    );
    check(
        "PUT",
        "/drives/rootfs",
        serde_json::to_value(Drive {
            drive_id: "rootfs".into(),
            path_on_host: "/d".into(),
            is_root_device: true,
            is_read_only: false,
        })
        .expect("v"),
    );
    check(
        "PUT",
        "/vsock",
        serde_json::to_value(Vsock {
            guest_cid: 3,
            uds_path: "/v.sock".into(),
        })
        .expect("v"),
    );
    check(
        "PUT",
        "/network-interfaces/eth0",
        serde_json::to_value(NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: Some("06:00:00:00:00:01".into()),
        })
        .expect("v"),
    );
    for a in [ActionType::InstanceStart, ActionType::SendCtrlAltDel] {
        check(
            "PUT",
            "/actions",
            serde_json::to_value(InstanceActionInfo { action_type: a }).expect("v"),
        );
    }
    for st in [VmStateValue::Paused, VmStateValue::Resumed] {
        check(
            "PATCH",
            "/vm",
            serde_json::to_value(VmState { state: st }).expect("v"),
        );
    }
    check(
        "PUT",
        "/snapshot/create",
        serde_json::to_value(SnapshotCreateParams {
            snapshot_path: "/s".into(),
            mem_file_path: "/m".into(),
            snapshot_type: SnapshotType::Full,
        })
        .expect("v"),
    );
    check(
        "PUT",
        "/snapshot/load",
        serde_json::to_value(SnapshotLoadParams {
            snapshot_path: "/s".into(),
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: "/m".into(),
            },
            resume_vm: true,
            vsock_override: Some(VsockOverride {
                uds_path: "/v2.sock".into(),
            }),
            network_overrides: vec![NetworkOverride {
                iface_id: "eth0".into(),
                host_dev_name: "tap1".into(),
            }],
        })
        .expect("v"),
    );
}

#[tokio::test]
async fn firecracker_fake_rejects_what_the_spec_rejects() {
    let f = fake();
    // Unknown field (Firecracker's models deny unknown fields).
    let msg = fault_of(
        f.api
            .put(
                "/vsock",
                &json!({"guest_cid": 3, "uds_path": "/tmp/x", "extra": true}),
            )
            .await,
    );
    assert!(
        msg.contains("extra") || msg.contains("deserializing"),
        "{msg}"
    );
    // Wrong type, out-of-range value, bad enum, missing required field.
    fault_of(
        f.api
            .put(
                "/machine-config",
                &json!({"vcpu_count": "2", "mem_size_mib": 128}),
            )
            .await,
    );
    fault_of(
        f.api
            .put(
                "/machine-config",
                &json!({"vcpu_count": 33, "mem_size_mib": 128}),
            )
            .await,
    );
    fault_of(
        f.api
            .put("/actions", &json!({"action_type": "Reboot"}))
            .await,
    );
    fault_of(f.api.put("/boot-source", &json!({"boot_args": "x"})).await);
    // Unknown path and unknown method.
    let msg = fault_of(f.api.put("/no-such-thing", &json!({})).await);
    assert!(msg.contains("Invalid request method and/or path"), "{msg}");
    fault_of(f.api.call("DELETE", "/vm", None).await);
    // Not JSON at all.
    fault_of(
        f.api
            .call("PUT", "/vsock", Some(b"{not json".to_vec()))
            .await,
    );
    // And what the spec accepts is accepted.
    f.api
        .put(
            "/machine-config",
            &json!({"vcpu_count": 2, "mem_size_mib": 256}),
        )
        .await
        .expect("valid machine config");
    let v = f.api.get("/version").await.expect("version");
    assert!(String::from_utf8_lossy(&v.body).contains("firecracker_version"));
}

#[tokio::test]
async fn firecracker_fake_enforces_call_order() {
    let f = fake();
    let kernel = f.env.kernel.display().to_string();
    // Post-boot calls before boot.
    fault_of(f.api.patch("/vm", &json!({"state": "Paused"})).await);
    fault_of(
        f.api
            .put(
                "/snapshot/create",
                &json!({"snapshot_path": "/tmp/s", "mem_file_path": "/tmp/m"}),
            )
            .await,
    );
    // InstanceStart without a kernel.
    let msg = fault_of(
        f.api
            .put("/actions", &json!({"action_type": "InstanceStart"}))
            .await,
    );
    assert!(msg.contains("kernel"), "{msg}");
    // A drive that does not exist on the host.
    let msg = fault_of(
        f.api
            .put("/drives/rootfs", &json!({"drive_id": "rootfs", "path_on_host": "/nonexistent/disk", "is_root_device": true, "is_read_only": false}))
            .await,
    );
    assert!(msg.contains("/nonexistent/disk"), "{msg}");
    // Path id and body id must agree.
    fault_of(
        f.api
            .put("/drives/a", &json!({"drive_id": "b", "path_on_host": f.env.image.display().to_string(), "is_root_device": true, "is_read_only": false}))
            .await,
    );
    f.api
        .put("/boot-source", &json!({"kernel_image_path": kernel}))
        .await
        .expect("boot source");
    // snapshot/load after configuration.
    let msg = fault_of(
        f.api
            .put(
                "/snapshot/load",
                &json!({"snapshot_path": "/tmp/s", "mem_file_path": "/tmp/m"}),
            )
            .await,
    );
    assert!(msg.contains("not allowed after configuring"), "{msg}");
    f.api
        .put("/actions", &json!({"action_type": "InstanceStart"}))
        .await
        .expect("start");
    // Pre-boot calls after InstanceStart.
    let msg = fault_of(
        f.api
            .put(
                "/machine-config",
                &json!({"vcpu_count": 1, "mem_size_mib": 128}),
            )
            .await,
    );
    assert!(msg.contains("after starting"), "{msg}");
    fault_of(
        f.api
            .put("/actions", &json!({"action_type": "InstanceStart"}))
            .await,
    );
    // Snapshot needs a paused VM.
    let s = f.env.dir.path().join("s").display().to_string();
    let m = f.env.dir.path().join("m").display().to_string();
    let msg = fault_of(
        f.api
            .put(
                "/snapshot/create",
                &json!({"snapshot_path": s, "mem_file_path": m}),
            )
            .await,
    );
    assert!(msg.contains("not paused"), "{msg}");
    f.api
        .patch("/vm", &json!({"state": "Paused"}))
        .await
        .expect("pause");
    f.api
        .put(
            "/snapshot/create",
            &json!({"snapshot_path": s, "mem_file_path": m, "snapshot_type": "Full"}),
        )
        .await
        .expect("snapshot");
    f.api
        .patch("/vm", &json!({"state": "Resumed"}))
        .await
        .expect("resume");
    let info = f.api.get("/").await.expect("describe");
    assert!(String::from_utf8_lossy(&info.body).contains("Running"));
}
