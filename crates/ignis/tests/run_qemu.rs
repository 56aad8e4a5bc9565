//! `ignis run --backend qemu` on real microVMs (TCG here and in CI): every step and the
//! profile's setup and cleanup commands run in one guest (the guest's boot id is the same in
//! each, its kernel is not the host's), release leaves no qemu process, run directory or disk
//! overlay behind, and a failed run resumes from the step snapshot (`--snapshot-steps`) in a
//! VM restored from it. One test, so the VM boots stay few on a 2-core CI machine: one cold
//! boot for the first run, one restore for the resume.
//!
//! Needs `qemu-system-x86_64`, `qemu-img`, `mkfs.ext4`, busybox-static and apt access to
//! Debian's kernel and packages (the guest image is built once and cached, as for
//! `crates/ignis-vm/tests/qemu_vm.rs`); without them it prints `skipped: <reason>`.

// An integration test crate is a test module already.
#![allow(clippy::tests_outside_test_module)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .any(|d| d.join(name).is_file())
}

/// Why this host cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !which("qemu-system-x86_64") {
        return Some("qemu-system-x86_64 not installed (scripts/test.sh installs it)".into());
    }
    if !which("qemu-img") {
        return Some("qemu-img not installed (scripts/test.sh installs it)".into());
    }
    if !Path::new("/usr/bin/busybox").exists() && !Path::new("/bin/busybox").exists() {
        return Some("busybox-static not installed (scripts/test.sh installs it)".into());
    }
    if !which("mkfs.ext4") && !Path::new("/usr/sbin/mkfs.ext4").exists() {
        return Some("mkfs.ext4 not installed (scripts/test.sh installs it)".into());
    }
    None
}

/// The agent next to the `ignis` binary (it goes into the guest image), built when this test
/// binary runs without it (`cargo test -p ignis`).
fn ensure_agent() -> Result<(), String> {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_ignis"));
    if exe.with_file_name("ignis-agent").is_file() {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args(["build", "-q", "-p", "ignis-agent", "--bin", "ignis-agent"])
        .status()
        .is_ok_and(|s| s.success());
    if ok && exe.with_file_name("ignis-agent").is_file() {
        Ok(())
    } else {
        Err("could not build ignis-agent next to the ignis binary".into())
    }
}

struct Out {
    code: i32,
    events: Vec<Value>,
    stderr: String,
}

fn ignis(dir: &Path, state: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .current_dir(dir)
        .env("IGNIS_STATE_DIR", state)
        // One cold boot per run: no template VM to boot and snapshot first.
        .env("IGNIS_QEMU_TEMPLATE", "0")
        .env("IGNIS_QEMU_ACCEL", "tcg")
        .arg("run")
        .args(args)
        .output()
        .expect("run ignis");
    Out {
        code: out.status.code().unwrap_or(-1),
        events: String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

fn log_values(events: &[Value], prefix: &str) -> Vec<String> {
    of_type(events, "log")
        .iter()
        .filter_map(|e| e["line"].as_str())
        .filter_map(|l| l.strip_prefix(prefix).map(str::to_string))
        .collect()
}

fn started_steps(events: &[Value], job: &str) -> Vec<String> {
    of_type(events, "step_started")
        .iter()
        .filter(|e| e["job_id"] == job)
        .filter_map(|e| e["step_id"].as_str().map(str::to_string))
        .collect()
}

/// After a run: nothing of its VMs is left on the host.
fn assert_released(events: &[Value]) {
    let vms: Vec<String> = of_type(events, "session_created")
        .iter()
        .filter_map(|e| e["vm_id"].as_str().map(str::to_string))
        .collect();
    assert!(!vms.is_empty(), "the run created a session");
    for vm in vms {
        let suffix = vm.trim_start_matches("qemu-").to_string();
        let run_dir = std::env::temp_dir()
            .join("ignis-qemu")
            .join(format!("vm-{suffix}"));
        assert!(!run_dir.exists(), "{} left behind", run_dir.display());
        let disks = ignis_vm::image::cache_dir().join("qemu-disks");
        for e in std::fs::read_dir(&disks).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(&suffix),
                "overlay {name} of {vm} left behind"
            );
        }
        for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            assert!(
                !(cmdline.contains("qemu-system") && cmdline.contains(&suffix)),
                "qemu of {vm} still running: {cmdline}"
            );
        }
    }
}

const PROFILE: &str = r#"[profiles.default]
labels = ["ubuntu-latest"]
backend = "qemu"
vcpus = 1
memory-mib = 512
setup = ["cat /proc/sys/kernel/random/boot_id > /tmp/setup-boot"]
cleanup = ["test \"$(cat /proc/sys/kernel/random/boot_id)\" = \"$(cat /tmp/setup-boot)\""]
"#;

/// Two jobs, three steps before the failing one: each prints the guest's boot id and
/// kernel; `build/first` bumps a counter inside the guest; `build/check` fails unless the
/// `FIXED` var is `yes`.
const WORKFLOW: &str = r#"on: push
jobs:
  up:
    runs-on: ubuntu-latest
    outputs:
      token: ${{ steps.o.outputs.token }}
    steps:
      - run: echo "boot=$(cat /proc/sys/kernel/random/boot_id)"
      - id: o
        run: |
          echo "kernel=$(uname -r)"
          echo "setup-boot=$(cat /tmp/setup-boot)"
          echo "token=from-up" >> "$GITHUB_OUTPUT"
  build:
    needs: up
    runs-on: ubuntu-latest
    steps:
      - id: first
        run: |
          echo "boot=$(cat /proc/sys/kernel/random/boot_id)"
          echo x >> /tmp/counter
          echo "FROM_FIRST=kept" >> "$GITHUB_ENV"
      - id: check
        run: |
          test "${{ vars.FIXED }}" = yes
          echo "count=$(wc -l < /tmp/counter) env=$FROM_FIRST token=${{ needs.up.outputs.token }}"
"#;

#[test]
fn qemu_run_one_vm_per_run_and_resume_from_a_step_snapshot() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("skipped: {why}");
        return;
    }
    if let Err(e) = ensure_agent() {
        eprintln!("skipped: {e}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("state dir");
    std::fs::create_dir_all(dir.path().join(".github/workflows")).expect("mkdir");
    std::fs::write(dir.path().join(".github/workflows/ci.yml"), WORKFLOW).expect("write");
    std::fs::write(dir.path().join("ignis.toml"), PROFILE).expect("write");

    let first = ignis(
        dir.path(),
        state.path(),
        &["--json", "--backend", "qemu", "--snapshot-steps"],
    );
    if first.code != 1 && of_type(&first.events, "session_created").is_empty() {
        eprintln!(
            "skipped: the qemu backend does not run here: {}",
            first.stderr.trim()
        );
        return;
    }
    assert_eq!(first.code, 1, "build/check fails: {}", first.stderr);
    assert_eq!(of_type(&first.events, "session_created").len(), 1, "one vm");
    // One guest for every step and for the setup and cleanup commands.
    let boots = log_values(&first.events, "boot=");
    assert_eq!(boots.len(), 2, "{:?}", first.events);
    assert_eq!(boots[0], boots[1], "same guest in every step");
    assert_eq!(boots[0].len(), 36);
    let host_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    assert_ne!(boots[0], host_boot.trim(), "the steps ran in a guest");
    assert_eq!(log_values(&first.events, "setup-boot="), [boots[0].clone()]);
    let cleanup: Vec<&Value> = of_type(&first.events, "command_finished")
        .into_iter()
        .filter(|e| e["phase"] == "cleanup")
        .collect();
    assert!(
        !cleanup.is_empty() && cleanup.iter().all(|e| e["exit_code"] == 0),
        "cleanup ran in the same guest: {cleanup:?}"
    );
    let kernel = log_values(&first.events, "kernel=");
    let host_kernel = Command::new("uname").arg("-r").output().expect("uname");
    let host_kernel = String::from_utf8_lossy(&host_kernel.stdout)
        .trim()
        .to_string();
    assert_eq!(kernel.len(), 1);
    assert_ne!(kernel[0], host_kernel, "the guest's own kernel");
    assert!(
        of_type(&first.events, "snapshot_created")
            .iter()
            .any(|e| e["after"] == "build/first"),
        "a step snapshot after build/first"
    );
    assert_released(&first.events);
    let id = first
        .stderr
        .lines()
        .find_map(|l| l.split("ignis run --resume ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("resume command printed: {}", first.stderr))
        .to_string();
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(state.path().join("runs").join(&id).join("record.json"))
            .expect("record"),
    )
    .expect("json");
    let snapshot_files: Vec<String> = record["workflows"][0]["legs"]["build-0"]["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["snapshot"]["id"].as_str().map(str::to_string))
        .chain(
            record["workflows"][0]["sessions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["setup_snapshot"]["id"].as_str().map(str::to_string)),
        )
        .collect();
    assert!(!snapshot_files.is_empty());

    // Resume: the guest comes back from the snapshot taken after build/first.
    let second = ignis(
        dir.path(),
        state.path(),
        &["--json", "--resume", &id, "--var", "FIXED=yes"],
    );
    assert_eq!(second.code, 0, "resume succeeds: {}", second.stderr);
    assert!(started_steps(&second.events, "up").is_empty(), "up kept");
    assert_eq!(started_steps(&second.events, "build"), ["check"]);
    assert_eq!(
        log_values(&second.events, "count="),
        ["1 env=kept token=from-up"],
        "the counter from the restored guest: build/first did not run again"
    );
    assert_released(&second.events);
    for f in snapshot_files {
        assert!(
            !Path::new(&f).exists(),
            "snapshot {f} removed after success"
        );
    }
}

/// ignis SIGKILLed while a step runs in its qemu VM: the session record outlives it, and
/// `ignis vm gc` (what every next `ignis run` also does first) kills the orphaned QEMU and
/// deletes its run directory and disk overlay.
#[test]
fn qemu_sigkill_mid_step_then_gc_leaves_nothing() {
    use std::io::BufRead;
    if let Some(why) = missing_prerequisite() {
        eprintln!("skipped: {why}");
        return;
    }
    if let Err(e) = ensure_agent() {
        eprintln!("skipped: {e}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("state dir");
    std::fs::create_dir_all(dir.path().join(".github/workflows")).expect("mkdir");
    std::fs::write(
        dir.path().join(".github/workflows/ci.yml"),
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo step-is-running; sleep 600\n",
    )
    .expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .current_dir(dir.path())
        .env("IGNIS_STATE_DIR", state.path())
        .env("IGNIS_QEMU_TEMPLATE", "0")
        .env("IGNIS_QEMU_ACCEL", "tcg")
        .args(["run", "--json", "--backend", "qemu"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ignis");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && tx.send(v).is_err()
            {
                break;
            }
        }
    });
    let mut events = Vec::new();
    let running = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(180)) {
            Ok(v) => {
                let done = v["type"] == "log" && v["line"] == "step-is-running";
                events.push(v);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if !running {
        let _ = child.kill();
        let _ = child.wait();
        if of_type(&events, "session_created").is_empty() {
            eprintln!("skipped: the qemu backend does not run here");
            return;
        }
        panic!("the step never started: {events:?}");
    }
    child.kill().expect("SIGKILL ignis");
    child.wait().expect("reap ignis");

    let ls = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .env("IGNIS_STATE_DIR", state.path())
        .args(["vm", "ls", "--json"])
        .output()
        .expect("vm ls");
    let listed = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listed.contains("\"owner_alive\":false"),
        "the dead run's session is listed as orphaned: {listed}"
    );
    let gc = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .env("IGNIS_STATE_DIR", state.path())
        .args(["vm", "gc"])
        .output()
        .expect("vm gc");
    assert!(
        gc.status.success(),
        "gc: {}",
        String::from_utf8_lossy(&gc.stderr)
    );
    // QEMU exits asynchronously after its SIGKILL; give it a moment before looking.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_released(&events);
    let ls = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .env("IGNIS_STATE_DIR", state.path())
        .args(["vm", "ls", "--json"])
        .output()
        .expect("vm ls");
    assert!(
        String::from_utf8_lossy(&ls.stdout).trim().is_empty(),
        "no session left after gc"
    );
}
