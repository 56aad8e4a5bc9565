//! `ignis run --backend firecracker` end to end through the binary, against the fake
//! Firecracker (`fake-firecracker`, built by `cargo build -p ignis-vm --features
//! fake-firecracker`; it answers the REST API as firecracker.yaml says and bridges the vsock
//! `CONNECT` to a host `ignis-agent`). The kernel and initramfs come from a guest image in a
//! scratch cache, the way `ignis image build` leaves one, so this also covers the fallback to
//! the newest cached image. Skips loudly when either helper binary is not built.

// An integration test crate is a test module already.
#![allow(clippy::tests_outside_test_module)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fake Firecracker and the agent it bridges to, next to the `ignis` binary.
fn helpers() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_BIN_EXE_ignis")).parent()?.to_owned();
    let fake = dir.join("fake-firecracker");
    if !fake.is_file() {
        eprintln!(
            "skipped: {} not built (cargo build -p ignis-vm --features fake-firecracker --bin fake-firecracker)",
            fake.display()
        );
        return None;
    }
    if !dir.join("ignis-agent").is_file() {
        eprintln!("skipped: no ignis-agent next to {}", fake.display());
        return None;
    }
    Some(fake)
}

/// A guest image in `cache` as `ignis image build` leaves it, with placeholder kernel and
/// initramfs the fake accepts (an ELF header; any readable file).
fn cached_image(cache: &Path) -> PathBuf {
    let dir = cache.join("images/00e2e0firecracker");
    std::fs::create_dir_all(&dir).expect("image dir");
    let mut kernel = b"\x7fELF".to_vec();
    kernel.resize(4096, 0);
    std::fs::write(dir.join("vmlinux"), kernel).expect("vmlinux");
    std::fs::write(dir.join("vmlinuz"), b"bz").expect("vmlinuz");
    std::fs::write(dir.join("initrd.cpio"), b"070701").expect("initrd");
    let manifest = ignis_vm::image::Manifest {
        key: "00e2e0firecracker".into(),
        kernel_package: "linux-image-test".into(),
        kernel_version: "1".into(),
        kernel_release: "6.1.0-test".into(),
        programs: vec![],
        agent_sha256: String::new(),
        created: 1,
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).expect("manifest json"),
    )
    .expect("manifest");
    dir
}

/// `ignis run --json <args>` in a fresh repo with its own cache and state dirs; `profiles` is
/// the repository's `ignis.toml` when given.
fn ignis(
    scratch: &Path,
    fake: &Path,
    args: &[&str],
    profiles: Option<&str>,
) -> std::process::Output {
    ignis_with_bin_env(scratch, Some(fake), args, profiles)
}

/// [`ignis`], with `IGNIS_FIRECRACKER_BIN` set to `bin_env` or removed when `None`.
fn ignis_with_bin_env(
    scratch: &Path,
    bin_env: Option<&Path>,
    args: &[&str],
    profiles: Option<&str>,
) -> std::process::Output {
    let repo = scratch.join("repo");
    let wf = repo.join(".github/workflows");
    std::fs::create_dir_all(&wf).expect("mkdir");
    if let Some(toml) = profiles {
        std::fs::write(repo.join("ignis.toml"), toml).expect("ignis.toml");
    }
    if !wf.join("ci.yml").exists() {
        std::fs::write(
            wf.join("ci.yml"),
            "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hello-from-fc\n",
        )
        .expect("workflow");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ignis"));
    match bin_env {
        Some(bin) => cmd.env("IGNIS_FIRECRACKER_BIN", bin),
        None => cmd.env_remove("IGNIS_FIRECRACKER_BIN"),
    };
    cmd.current_dir(&repo)
        .args(["run", "--json"])
        .args(args)
        .env("IGNIS_CACHE_DIR", scratch.join("cache"))
        .env("IGNIS_STATE_DIR", scratch.join("state"))
        .env("IGNIS_FAKE_FC_LOG", scratch.join("requests.jsonl"))
        .env_remove("IGNIS_FIRECRACKER_KERNEL")
        .env_remove("IGNIS_FIRECRACKER_INITRD")
        .env_remove("IGNIS_FIRECRACKER_IMAGES")
        .output()
        .expect("run ignis")
}

#[test]
fn run_firecracker_boots_the_cached_image_and_releases_the_session() {
    let Some(fake) = helpers() else { return };
    let scratch = tempfile::Builder::new()
        .prefix("ifc")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let image = cached_image(&scratch.path().join("cache"));
    let out = ignis(scratch.path(), &fake, &["--backend", "firecracker"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let of = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    let created: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "session_created")
        .collect();
    assert_eq!(created.len(), 1, "one session for the run: {events:?}");
    assert_eq!(created[0]["backend"], "firecracker");
    assert_eq!(of("session_released"), 1, "the session is released");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello-from-fc"),
        "the step's output is in the stream"
    );

    let requests: Vec<Value> = std::fs::read_to_string(scratch.path().join("requests.jsonl"))
        .expect("the fake logged requests")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let boot = requests
        .iter()
        .find(|r| r["path"] == "/boot-source")
        .expect("boot-source sent");
    assert_eq!(
        boot["body"]["kernel_image_path"].as_str(),
        Some(image.join("vmlinux").to_string_lossy().as_ref())
    );
    assert_eq!(
        boot["body"]["initrd_path"].as_str(),
        Some(image.join("initrd.cpio").to_string_lossy().as_ref())
    );
    assert!(
        boot["body"]["boot_args"]
            .as_str()
            .is_some_and(|a| a.contains("ignis.transport=vsock:1024")),
        "{boot}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r["body"]["action_type"] == "SendCtrlAltDel"),
        "release shuts the microVM down"
    );
    let vms = scratch.path().join("state/firecracker/vms");
    let left: Vec<_> = std::fs::read_dir(&vms)
        .expect("the run's vm dir is under IGNIS_STATE_DIR")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "vm dirs left behind: {left:?}");
}

/// Step snapshots on firecracker: taken after each successful step but the last, recorded
/// as events, and deleted again when the run succeeds.
#[test]
fn run_firecracker_step_snapshots_are_taken_and_removed_after_success() {
    let Some(fake) = helpers() else { return };
    let scratch = tempfile::Builder::new()
        .prefix("ifc")
        .tempdir_in("/tmp")
        .expect("tempdir");
    cached_image(&scratch.path().join("cache"));
    let wf = scratch.path().join("repo/.github/workflows");
    std::fs::create_dir_all(&wf).expect("mkdir");
    std::fs::write(
        wf.join("ci.yml"),
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo one\n      - run: echo two\n      - run: echo three\n",
    )
    .expect("workflow");
    let out = ignis(
        scratch.path(),
        &fake,
        &["--backend", "firecracker", "--snapshot-steps"],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let snaps: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "snapshot_created")
        .collect();
    assert_eq!(
        snaps.len(),
        2,
        "after steps 0 and 1, not after the last: {snaps:?}"
    );
    let store = scratch.path().join("state/firecracker/snapshots");
    let left: Vec<_> = std::fs::read_dir(&store)
        .expect("snapshots were stored under the state dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "a successful run removes its snapshots: {left:?}"
    );
}

#[test]
fn run_firecracker_without_an_image_names_ignis_image_build() {
    let Some(fake) = helpers() else { return };
    let scratch = tempfile::Builder::new()
        .prefix("ifc")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let out = ignis(scratch.path(), &fake, &["--backend", "firecracker"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("ignis image build"), "stderr: {stderr}");
}

#[test]
fn run_firecracker_profile_sizes_the_microvm() {
    let Some(fake) = helpers() else { return };
    let scratch = tempfile::Builder::new()
        .prefix("ifc")
        .tempdir_in("/tmp")
        .expect("tempdir");
    cached_image(&scratch.path().join("cache"));
    let toml = "[profiles.micro]\nlabels = [\"ubuntu-latest\"]\nbackend = \"firecracker\"\nimage = \"default\"\nvcpus = 2\nmemory-mib = 512\ndisk-mib = 1024\n";
    let out = ignis(scratch.path(), &fake, &[], Some(toml));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let created: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "session_created")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["backend"], "firecracker");
    let requests: Vec<Value> = std::fs::read_to_string(scratch.path().join("requests.jsonl"))
        .expect("the fake logged requests")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let machine = requests
        .iter()
        .find(|r| r["path"] == "/machine-config")
        .expect("machine-config sent");
    assert_eq!(machine["body"]["vcpu_count"], 2, "{machine}");
    assert_eq!(machine["body"]["mem_size_mib"], 512, "{machine}");
}

#[test]
fn run_firecracker_takes_the_binary_from_the_profile() {
    let Some(fake) = helpers() else { return };
    let scratch = tempfile::Builder::new()
        .prefix("ifc")
        .tempdir_in("/tmp")
        .expect("tempdir");
    cached_image(&scratch.path().join("cache"));
    let toml = format!(
        "[profiles.x]\nlabels = [\"ubuntu-latest\"]\nbackend = \"firecracker\"\n[profiles.x.firecracker]\nbinary = {:?}\n",
        fake.display().to_string()
    );
    // No IGNIS_FIRECRACKER_BIN: only the profile names the fake, and `firecracker` is not
    // on this host's PATH, so success proves the profile's binary was started.
    let out = ignis_with_bin_env(scratch.path(), None, &[], Some(&toml));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello-from-fc"),
        "the step ran in the microVM"
    );
    let log = std::fs::read_to_string(scratch.path().join("requests.jsonl"))
        .expect("the fake (started from the profile's path) logged requests");
    assert!(log.contains("InstanceStart"), "{log}");
}

#[test]
fn run_firecracker_profile_pool_size_fills_a_warm_pool() {
    let Some(fake) = helpers() else { return };
    let scratch = tempfile::Builder::new()
        .prefix("ifc")
        .tempdir_in("/tmp")
        .expect("tempdir");
    cached_image(&scratch.path().join("cache"));
    let toml = "[profiles.x]\nlabels = [\"ubuntu-latest\"]\nbackend = \"firecracker\"\n[profiles.x.firecracker]\npool-size = 1\n";
    let out = ignis(scratch.path(), &fake, &[], Some(toml));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let log = std::fs::read_to_string(scratch.path().join("requests.jsonl"))
        .expect("the fake logged requests");
    assert!(
        log.contains("/snapshot/create"),
        "a pool size makes the backend snapshot a template: {log}"
    );
}
