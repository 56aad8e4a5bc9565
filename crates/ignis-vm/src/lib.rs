//! `ignis-vm` defines the `VmProvider` contract and its backends. A provider hands out
//! isolated machines with an agent channel; it must never run workflow code on the host.

/// The provider contract every backend implements.
pub mod provider;

pub use provider::{Backend, NetworkPolicy, SnapshotId, Vm, VmError, VmId, VmProvider, VmRecord, VmSpec};
