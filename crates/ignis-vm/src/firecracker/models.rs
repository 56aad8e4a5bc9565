//! Request bodies the backend sends, mirroring `firecracker.yaml`'s definitions field for
//! field. Optional fields are omitted rather than sent as `null`: Firecracker rejects unknown
//! or mistyped fields, so only what the spec names ever goes on the wire (the contract tests
//! validate every request against the spec).

use serde::Serialize;

/// `#/definitions/MachineConfiguration`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MachineConfiguration {
    pub vcpu_count: u32,
    pub mem_size_mib: u64,
    pub smt: bool,
}

/// `#/definitions/BootSource`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

/// `#/definitions/Drive` (virtio-block form).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    pub is_root_device: bool,
    pub is_read_only: bool,
}

/// `#/definitions/Vsock`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: String,
}

/// `#/definitions/NetworkInterface`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// `#/definitions/InstanceActionInfo`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
}

/// `#/definitions/Vm`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct VmState {
    pub state: VmStateValue,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum VmStateValue {
    Paused,
    Resumed,
}

/// `#/definitions/SnapshotCreateParams`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SnapshotCreateParams {
    pub snapshot_path: String,
    pub mem_file_path: String,
    pub snapshot_type: SnapshotType,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum SnapshotType {
    Full,
}

/// `#/definitions/SnapshotLoadParams`: memory from a file backend, the vsock socket moved to
/// the clone's own path, taps swapped for the clone's own.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SnapshotLoadParams {
    pub snapshot_path: String,
    pub mem_backend: MemoryBackend,
    pub resume_vm: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
}

/// `#/definitions/MemoryBackend`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum MemoryBackendType {
    File,
}

/// `#/definitions/VsockOverride`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VsockOverride {
    pub uds_path: String,
}

/// `#/definitions/NetworkOverride`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn optional_fields_are_omitted() {
        let b = BootSource {
            kernel_image_path: "/k".into(),
            boot_args: None,
            initrd_path: None,
        };
        assert_eq!(
            serde_json::to_value(&b).expect("json"),
            json!({"kernel_image_path": "/k"})
        );
        let l = SnapshotLoadParams {
            snapshot_path: "/s".into(),
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: "/m".into(),
            },
            resume_vm: true,
            vsock_override: None,
            network_overrides: vec![],
        };
        assert_eq!(
            serde_json::to_value(&l).expect("json"),
            json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"}, "resume_vm": true})
        );
    }

    #[test]
    fn enums_use_spec_spelling() {
        let a = InstanceActionInfo {
            action_type: ActionType::SendCtrlAltDel,
        };
        assert_eq!(
            serde_json::to_value(a).expect("json"),
            json!({"action_type": "SendCtrlAltDel"})
        );
        let v = VmState {
            state: VmStateValue::Paused,
        };
        assert_eq!(
            serde_json::to_value(v).expect("json"),
            json!({"state": "Paused"})
        );
    }
}
