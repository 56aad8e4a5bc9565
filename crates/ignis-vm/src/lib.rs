//! `ignis-vm` defines the `VmProvider` contract and its backends. A provider hands out
//! isolated machines with an agent channel; it must never run workflow code on the host.

/// The provider contract every backend implements.
pub mod provider;
/// The fake backend: counts, latency and injected faults, for tests of the layers above.
pub mod fake;
/// Profiles: `runs-on` labels -> backend, image and limits (`ignis.toml`).
pub mod profile;
/// The Firecracker backend: a microVM per VM through Firecracker's REST API.
pub mod firecracker;
/// The sandbox backend: Linux namespaces + overlayfs + cgroups, the default (no KVM).
pub mod sandbox;
/// Guest images (kernel + initramfs with the agent) for the VM backends: build, cache, list.
pub mod image;
/// The QEMU backend: a `microvm` per VM, KVM when a guest can really boot, TCG otherwise.
pub mod qemu;
/// `ignis vm doctor`: what this host has and lacks for each backend, with the fix.
pub mod doctor;

pub use firecracker::{FirecrackerConfig, FirecrackerProvider};
pub use qemu::{QemuConfig, QemuProvider};
pub use sandbox::{SandboxConfig, SandboxProvider};
pub use provider::{Backend, NetworkPolicy, SnapshotId, Vm, VmError, VmId, VmProvider, VmRecord, VmSpec};
