//! `ignis image build|ls|rm|prune` in a private cache dir (`IGNIS_CACHE_DIR`): an
//! initramfs-only image (`--package none`, so no Debian packages are downloaded) is built,
//! listed, refused without a name, and pruned. Needs busybox-static and apt access to Debian's
//! cloud kernel; without them it prints `skipped: <reason>`.

// An integration test crate is a test module already.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ignis(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ignis"))
        .env("IGNIS_CACHE_DIR", cache)
        .args(args)
        .output()
        .expect("run ignis")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The agent next to the `ignis` binary (it goes into the image), built when missing.
fn agent() -> Option<PathBuf> {
    let a = PathBuf::from(env!("CARGO_BIN_EXE_ignis")).with_file_name("ignis-agent");
    if !a.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let _ = Command::new(cargo)
            .args(["build", "-q", "-p", "ignis-agent", "--bin", "ignis-agent"])
            .status();
    }
    a.is_file().then_some(a)
}

#[test]
fn image_build_ls_rm_prune_in_a_private_cache() {
    let cache = tempfile::tempdir().expect("tempdir");
    let empty = ignis(cache.path(), &["image", "ls"]);
    assert!(empty.status.success());
    assert!(
        stdout(&empty).starts_with("no images"),
        "{}",
        stdout(&empty)
    );
    let rm = ignis(cache.path(), &["image", "rm"]);
    assert!(!rm.status.success(), "rm without a name is refused");

    if !Path::new("/usr/bin/busybox").exists() && !Path::new("/bin/busybox").exists() {
        eprintln!("skipped: busybox-static not installed (scripts/test.sh installs it)");
        return;
    }
    let Some(agent) = agent() else {
        eprintln!("skipped: could not build ignis-agent");
        return;
    };
    let agent = agent.display().to_string();
    let build = ignis(
        cache.path(),
        &[
            "image",
            "build",
            "--package",
            "none",
            "--agent",
            &agent,
            "--json",
        ],
    );
    if !build.status.success() {
        let err = String::from_utf8_lossy(&build.stderr);
        if err.contains("apt") || err.contains("kernel package") {
            eprintln!("skipped: no apt access to Debian's cloud kernel: {err}");
            return;
        }
        panic!("image build failed: {err}");
    }
    let v: serde_json::Value = serde_json::from_slice(&build.stdout).expect("json");
    let key = v["key"].as_str().expect("key").to_owned();
    assert!(v["root_disk"].is_null(), "no packages, no disk: {v}");
    let dir = PathBuf::from(v["dir"].as_str().expect("dir"));
    assert!(dir.join("initrd.cpio").is_file() && dir.join("vmlinuz").is_file());
    assert!(v["size_bytes"].as_u64().is_some_and(|n| n > 1 << 20));

    let ls = stdout(&ignis(cache.path(), &["image", "ls"]));
    assert!(ls.contains(&key) && ls.contains("initramfs only"), "{ls}");
    // the newest image is kept, so keep 1 removes nothing here; keep 0 removes it
    let kept = ignis(cache.path(), &["image", "prune", "--keep", "1"]);
    assert!(kept.status.success() && stdout(&kept).is_empty());
    assert!(dir.is_dir());
    let pruned = ignis(cache.path(), &["image", "prune", "--keep", "0"]);
    assert!(pruned.status.success());
    assert_eq!(stdout(&pruned).trim(), format!("removed {key}"));
    assert!(!dir.exists());
    assert!(stdout(&ignis(cache.path(), &["image", "ls"])).starts_with("no images"));
}
