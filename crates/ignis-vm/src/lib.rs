//! `ignis-vm` defines the `VmProvider` contract and its backends. A provider hands out
//! isolated machines with an agent channel; it must never run workflow code on the host.

/// `ignis vm doctor`: what this host has and lacks for each backend, with the fix.
pub mod doctor;
/// The fake backend: counts, latency and injected faults, for tests of the layers above.
pub mod fake;
/// The Firecracker backend: a microVM per VM through Firecracker's REST API.
pub mod firecracker;
/// Host-process helpers shared by the backends: process identity by (pid, start time),
/// killing a recorded process, removing leftover paths.
pub mod host;
/// Guest images (kernel + initramfs with the agent) for the VM backends: build, cache, list.
pub mod image;
/// Profiles: `runs-on` labels -> backend, image and limits (`ignis.toml`).
pub mod profile;
/// The provider contract every backend implements.
pub mod provider;
/// The QEMU backend: a `microvm` per VM, KVM when a guest can really boot, TCG otherwise.
pub mod qemu;
/// The sandbox backend: Linux namespaces + overlayfs + cgroups, the default (no KVM).
pub mod sandbox;

pub use firecracker::{FirecrackerConfig, FirecrackerProvider};
pub use provider::{
    Backend, NetworkPolicy, SnapshotId, Vm, VmError, VmId, VmProvider, VmRecord, VmSpec,
};
pub use qemu::{QemuConfig, QemuProvider};
pub use sandbox::{SandboxConfig, SandboxProvider};
