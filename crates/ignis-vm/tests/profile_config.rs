//! `ignis.toml`: schema, located errors, discovery and `runs-on` resolution.
#![allow(clippy::tests_outside_test_module)] // integration tests live at the top level

use ignis_vm::profile::{ProfileConfig, ProfileError, RunsOn};
use ignis_vm::{Backend, NetworkPolicy};
use std::path::Path;

const CONFIG: &str = r#"
[profiles.big]
labels = ["ubuntu-latest", "large"]
backend = "qemu"
image = "noble"
vcpus = 8
memory-mib = 16384
disk-mib = 40960
pids-max = 100000
network = "user"
groups = ["ci"]
setup = ["apt-get update"]
cleanup = ["rm -rf /tmp/cache"]

[profiles.small]
labels = ["ubuntu-latest", "linux"]
"#;

#[test]
fn full_schema_parses_into_a_spec() {
    let c = ProfileConfig::from_toml(CONFIG, Path::new("ignis.toml")).expect("valid");
    let big = c
        .resolve(&RunsOn::Labels(vec!["large".into()]))
        .expect("large");
    assert_eq!(big.name, "big");
    assert_eq!(big.profile.setup, vec!["apt-get update".to_owned()]);
    let spec = big.spec();
    assert_eq!(spec.vm_type, "big");
    assert_eq!(spec.backend, Backend::Qemu);
    assert_eq!(
        (spec.vcpus, spec.memory_mib, spec.disk_mib),
        (8, 16384, 40960)
    );
    assert_eq!(spec.pids_max, Some(100000));
    assert_eq!(spec.network, NetworkPolicy::User);
    // Defaults for an almost empty profile: sandbox on the host root.
    let small = c.spec_for(&RunsOn::from("linux")).expect("linux");
    assert_eq!(small.backend, Backend::Sandbox);
    assert_eq!(small.image, Path::new("/"));
    assert_eq!(small.network, NetworkPolicy::None);
}

#[test]
fn first_profile_in_file_order_wins_and_groups_filter() {
    let c = ProfileConfig::from_toml(CONFIG, Path::new("ignis.toml")).expect("valid");
    assert_eq!(
        c.resolve(&RunsOn::from("ubuntu-latest")).unwrap().name,
        "big"
    );
    let other_group: RunsOn =
        serde_json::from_str(r#"{"group": "other", "labels": "ubuntu-latest"}"#).unwrap();
    assert_eq!(c.resolve(&other_group).unwrap().name, "small");
    let ci: RunsOn =
        serde_json::from_str(r#"{"group": "ci", "labels": ["ubuntu-latest"]}"#).unwrap();
    assert_eq!(c.resolve(&ci).unwrap().name, "big");
}

#[test]
fn unknown_field_is_a_located_error() {
    let text = "[profiles.x]\nlabels = [\"a\"]\nmemroy-mib = 5\n";
    let err = ProfileConfig::from_toml(text, Path::new("ignis.toml")).unwrap_err();
    let ProfileError::Parse { path, source } = &err else {
        panic!("expected a parse error, got {err:?}");
    };
    assert_eq!(path, Path::new("ignis.toml"));
    let msg = source.to_string();
    assert!(msg.contains("line 3"), "{msg}");
    assert!(msg.contains("memroy-mib"), "{msg}");
}

#[test]
fn bad_values_are_refused() {
    for (text, needle) in [
        ("[profiles.x]\nvcpus = 0\n", "vcpus"),
        ("[profiles.x]\nbackend = \"vmware\"\n", "vmware"),
        ("[profiles.x]\nnetwork = \"bridged\"\n", "bridged"),
        ("[profiles.x]\nlabels = [\"\"]\n", "empty label"),
    ] {
        let err = ProfileConfig::from_toml(text, Path::new("ignis.toml")).unwrap_err();
        let mut msg = err.to_string();
        if let Some(s) = std::error::Error::source(&err) {
            msg.push_str(&s.to_string());
        }
        assert!(msg.contains(needle), "{text:?}: {msg}");
    }
}

#[test]
fn unknown_label_lists_known_ones() {
    let c = ProfileConfig::default();
    let req = RunsOn::Labels(vec!["self-hosted".into(), "gpu".into()]);
    let msg = c.resolve(&req).unwrap_err().to_string();
    assert!(msg.contains("[self-hosted, gpu]"), "{msg}");
    for l in [
        "linux",
        "self-hosted",
        "ubuntu-22.04",
        "ubuntu-24.04",
        "ubuntu-latest",
    ] {
        assert!(msg.contains(l), "{msg}");
    }
    assert!(matches!(
        c.resolve(&RunsOn::Labels(vec![])),
        Err(ProfileError::EmptyRunsOn)
    ));
}

#[test]
fn discovery_prefers_explicit_then_repo_then_default() {
    let repo = tempfile::tempdir().unwrap();
    // No file anywhere relevant: the built-in default.
    let (c, from) = ProfileConfig::discover(None, Some(repo.path())).unwrap();
    if from.is_none() {
        assert_eq!(c, ProfileConfig::default());
    }
    std::fs::write(repo.path().join("ignis.toml"), CONFIG).unwrap();
    let (c, from) = ProfileConfig::discover(None, Some(repo.path())).unwrap();
    assert_eq!(
        from.as_deref(),
        Some(repo.path().join("ignis.toml").as_path())
    );
    assert!(c.profiles.contains_key("big"));
    let explicit = repo.path().join("other.toml");
    std::fs::write(&explicit, "[profiles.only]\nlabels = [\"z\"]\n").unwrap();
    let (c, _) = ProfileConfig::discover(Some(&explicit), Some(repo.path())).unwrap();
    assert_eq!(c.profiles.len(), 1);
    let missing = repo.path().join("missing.toml");
    assert!(matches!(
        ProfileConfig::discover(Some(&missing), None),
        Err(ProfileError::Read { .. })
    ));
}

const FIRECRACKER: &str = r#"
[profiles.plain]
labels = ["linux"]

[profiles.micro]
labels = ["ubuntu-latest"]
backend = "firecracker"

[profiles.micro.firecracker]
binary = "/opt/fc/firecracker"
pool-size = 3

[profiles.micro.firecracker.jailer]
binary = "/opt/fc/jailer"
uid = 10000
gid = 10001
netns = "/var/run/netns/ignis"
cgroups = ["cpu.max=200000 100000"]

[profiles.later]
labels = ["later"]
backend = "firecracker"

[profiles.later.firecracker]
binary = "/ignored/firecracker"
pool-size = 1
"#;

#[test]
fn firecracker_table_parses_and_reaches_the_backend_config() {
    let c = ProfileConfig::from_toml(FIRECRACKER, Path::new("ignis.toml")).expect("valid");
    let micro = c.profiles["micro"].firecracker.as_ref().expect("table");
    assert_eq!(
        micro.binary.as_deref(),
        Some(Path::new("/opt/fc/firecracker"))
    );
    assert_eq!(micro.pool_size, Some(3));
    let jailer = micro.jailer.as_ref().expect("jailer");
    assert_eq!((jailer.uid, jailer.gid), (10000, 10001));
    assert_eq!(jailer.chroot_base, Path::new("/srv/jailer"), "default");
    assert!(jailer.new_pid_ns, "default on");
    assert!(c.profiles["plain"].firecracker.is_none());

    let mut fc = ignis_vm::firecracker::FirecrackerConfig::from_env("/tmp/ignis-unused-state");
    fc.apply_profiles(&c);
    assert_eq!(
        fc.firecracker_bin,
        Path::new("/opt/fc/firecracker"),
        "the first firecracker profile's binary wins"
    );
    let j = fc.jailer.as_ref().expect("jailer applied");
    assert_eq!(j.bin, Path::new("/opt/fc/jailer"));
    assert_eq!(j.netns.as_deref(), Some(Path::new("/var/run/netns/ignis")));
    assert_eq!(j.cgroups, vec!["cpu.max=200000 100000".to_owned()]);
    assert_eq!(fc.pool_sizes.get("micro"), Some(&3));
    assert_eq!(
        fc.pool_sizes.get("later"),
        Some(&1),
        "pool size is per profile"
    );
    assert_eq!(fc.pool_sizes.get("plain"), None);
}

#[test]
fn firecracker_table_without_binary_keeps_the_env_fallback() {
    let text = "[profiles.x]\nbackend = \"firecracker\"\n[profiles.x.firecracker]\npool-size = 2\n";
    let c = ProfileConfig::from_toml(text, Path::new("ignis.toml")).expect("valid");
    let mut fc = ignis_vm::firecracker::FirecrackerConfig::from_env("/tmp/ignis-unused-state");
    let before = fc.firecracker_bin.clone();
    fc.apply_profiles(&c);
    assert_eq!(fc.firecracker_bin, before);
    assert!(fc.jailer.is_none());
    assert_eq!(fc.pool_sizes.get("x"), Some(&2));
}

#[test]
fn unknown_firecracker_key_is_a_located_error() {
    let text = "[profiles.x]\nbackend = \"firecracker\"\n[profiles.x.firecracker]\nbinary = \"/fc\"\npool-sise = 2\n";
    let err = ProfileConfig::from_toml(text, Path::new("ignis.toml")).unwrap_err();
    let ProfileError::Parse { source, .. } = &err else {
        panic!("expected a parse error, got {err:?}");
    };
    let msg = source.to_string();
    assert!(msg.contains("line 5"), "{msg}");
    assert!(msg.contains("pool-sise"), "{msg}");

    let jail = "[profiles.x.firecracker.jailer]\nuid = 1\ngid = 1\nchroot = \"/j\"\n";
    let err = ProfileConfig::from_toml(jail, Path::new("ignis.toml")).unwrap_err();
    let ProfileError::Parse { source, .. } = &err else {
        panic!("expected a parse error, got {err:?}");
    };
    let msg = source.to_string();
    assert!(msg.contains("line 4") && msg.contains("chroot"), "{msg}");

    let empty = "[profiles.x.firecracker]\nbinary = \"\"\n";
    assert!(matches!(
        ProfileConfig::from_toml(empty, Path::new("ignis.toml")),
        Err(ProfileError::Invalid { .. })
    ));
}
