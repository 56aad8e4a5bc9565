//! Shared set-up of the Firecracker tests: a scratch state dir, a fake kernel and rootfs, and
//! a wrapper script that starts the `fake-firecracker` binary with per-test knobs (mode,
//! injected faults, request log), so tests running in parallel never share settings.

#![allow(dead_code)]

use ignis_vm::firecracker::spec::{self, Spec};
use ignis_vm::{Backend, FirecrackerConfig, FirecrackerProvider, NetworkPolicy, VmSpec};
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const FAKE: &str = env!("CARGO_BIN_EXE_fake-firecracker");

/// The `ignis-agent` binary the fake bridges vsock to: `IGNIS_AGENT_BIN`, else the one built
/// in this target dir (built on demand with the cargo running the tests).
pub fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("IGNIS_AGENT_BIN") {
            return PathBuf::from(p);
        }
        let fake = Path::new(FAKE);
        if let Some(p) = ignis_vm::firecracker::fake_server::agent_next_to(fake) {
            return p;
        }
        // `cargo test -p ignis-vm` does not build other packages' binaries: build it now.
        let target_dir = fake
            .parent()
            .and_then(Path::parent)
            .expect("target dir of the fake binary");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "ignis-agent", "--bin", "ignis-agent"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build for ignis-agent");
        assert!(status.success(), "building ignis-agent failed");
        ignis_vm::firecracker::fake_server::agent_next_to(fake)
            .expect("ignis-agent after building it")
    })
    .clone()
}

/// The spec, failing loudly when the shared copy is absent.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = spec::default_path();
        assert!(
            path.is_file(),
            "firecracker.yaml not found at {}: the contract tests need shared/firecracker/firecracker.yaml beside the repo (or IGNIS_FIRECRACKER_SPEC)",
            path.display()
        );
        Spec::load(&path).expect("firecracker.yaml parses")
    })
}

/// One test's world.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub log: PathBuf,
    pub control: PathBuf,
    pub image: PathBuf,
    pub kernel: PathBuf,
}

impl Env {
    /// `mode` is the fake's `IGNIS_FAKE_FC_MODE` (empty for normal).
    pub fn new(mode: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fc")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let log = dir.path().join("requests.jsonl");
        let control = dir.path().join("control");
        std::fs::write(&control, "").expect("control");
        let kernel = dir.path().join("vmlinux");
        let mut k = b"\x7fELF".to_vec();
        k.resize(4096, 0);
        std::fs::write(&kernel, k).expect("kernel");
        std::fs::create_dir_all(dir.path().join("images")).expect("images");
        let image = dir.path().join("images/test.ext4");
        let f = std::fs::File::create(&image).expect("image");
        f.set_len(8 * 1024 * 1024).expect("image size");
        let bin = dir.path().join("firecracker");
        let script = format!(
            "#!/bin/sh\nexport IGNIS_FAKE_FC_LOG='{}' IGNIS_FAKE_FC_CONTROL='{}' IGNIS_FAKE_FC_AGENT='{}' IGNIS_FAKE_FC_MODE='{}' IGNIS_FIRECRACKER_SPEC='{}'\nexec '{}' \"$@\"\n",
            log.display(),
            control.display(),
            agent_bin().display(),
            mode,
            spec::default_path().display(),
            FAKE
        );
        std::fs::write(&bin, script).expect("wrapper");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Self {
            dir,
            bin,
            log,
            control,
            image,
            kernel,
        }
    }

    pub fn config(&self) -> FirecrackerConfig {
        let mut c = FirecrackerConfig::from_env(self.dir.path());
        c.firecracker_bin = self.bin.clone();
        c.kernel = self.kernel.clone();
        c.images_dir = self.dir.path().join("images");
        c.api_timeout = Duration::from_secs(5);
        c.socket_timeout = Duration::from_secs(10);
        c.agent_timeout = Duration::from_secs(20);
        c.shutdown_grace = Duration::from_millis(500);
        c
    }

    pub fn provider(&self) -> FirecrackerProvider {
        FirecrackerProvider::new(self.config())
    }

    pub fn spec(&self) -> VmSpec {
        VmSpec {
            vm_type: "fc-test".into(),
            backend: Backend::Firecracker,
            image: self.image.clone(),
            vcpus: 1,
            memory_mib: 128,
            disk_mib: 64,
            pids_max: None,
            network: NetworkPolicy::None,
        }
    }

    /// Inject a fault: a line of the control file (`fail METHOD PATH message`, `hang METHOD PATH`).
    pub fn inject(&self, line: &str) {
        std::fs::write(&self.control, format!("{line}\n")).expect("control");
    }

    pub fn clear_faults(&self) {
        std::fs::write(&self.control, "").expect("control");
    }

    /// Every request the fake received, in order.
    pub fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("log line is json"))
            .collect()
    }

    /// Validate every logged request against firecracker.yaml (path, method, body) with the
    /// JSON-schema validator; return the set of operations seen.
    pub fn assert_requests_match_spec(&self) -> BTreeSet<String> {
        let spec = spec();
        let mut seen = BTreeSet::new();
        let reqs = self.requests();
        assert!(!reqs.is_empty(), "no request reached the fake");
        for r in &reqs {
            let method = r["method"].as_str().expect("method");
            let path = r["path"].as_str().expect("path");
            let body = match &r["body"] {
                Value::Null => None,
                b => Some(serde_json::to_vec(b).expect("body")),
            };
            let op = spec
                .validate(method, path, body.as_deref())
                .unwrap_or_else(|e| {
                    panic!(
                        "request not allowed by firecracker.yaml: {method} {path} {}: {e}",
                        r["body"]
                    )
                });
            let action = r["body"]["action_type"]
                .as_str()
                .map(|a| format!(" {a}"))
                .unwrap_or_default();
            seen.insert(format!("{} {}{action}", op.method, op.template));
        }
        seen
    }

    /// Directories of live VMs under the state dir.
    pub fn vm_dirs(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.dir.path().join("vms")) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => vec![],
        }
    }
}

/// True when `pid` is gone or a zombie (waited for soon by tokio's orphan reaper).
pub fn process_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
    }
}

/// Poll `cond` for up to `limit` (an upper bound for background work, not a speed assertion).
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Run `argv` through the VM's agent and return (exit code, stdout).
pub async fn run(vm: &ignis_vm::Vm, argv: &[&str]) -> (Option<i32>, String) {
    let out = vm
        .agent
        .exec_collect(ignis_agent::ExecRequest::argv(argv.iter().copied()))
        .await
        .expect("exec through the agent");
    (
        out.status.code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Restoring a snapshot onto a per-clone disk needs a private mount namespace (root) when no
/// jailer is configured; say so loudly and let the caller return.
pub fn skip_unless_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return false;
    }
    eprintln!(
        "skipped: {test} restores snapshots, which needs root (a private mount namespace per clone)"
    );
    true
}
