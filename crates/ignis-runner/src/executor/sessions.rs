//! How the executor obtains sessions. [`SessionSource`] is the seam: the session manager
//! implements it for real runs; [`ProviderSessions`] is a direct implementation over a
//! [`VmProvider`] and profiles (one VM per session, a concurrency limit, release on every
//! path including drop).

use ignis_agent::AgentClient;
use ignis_vm::profile::{ProfileConfig, RunsOn};
use ignis_vm::{Backend, Vm, VmProvider, VmSpec};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::events::JobResult;

/// Facts about a live session, for events.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub session_id: String,
    pub vm_id: String,
    pub vm_type: String,
    pub backend: String,
    pub allocation_ms: u64,
}

/// A live session owning one VM. `release` must be called; implementations also release
/// on drop as a last resort.
#[async_trait::async_trait]
pub trait LiveSession: Send + Sync {
    fn info(&self) -> SessionInfo;
    fn agent(&self) -> AgentClient;
    /// The profile's extra setup commands (run by the executor in the VM).
    fn setup_commands(&self) -> Vec<String>;
    /// The profile's extra cleanup commands.
    fn cleanup_commands(&self) -> Vec<String>;
    /// Record the final state and release the VM.
    async fn release(self: Box<Self>, result: JobResult) -> Result<(), String>;
    /// A handle that snapshots this session's VM; `None` when the session cannot.
    fn snapshotter(&self) -> Option<Arc<dyn Snapshotter>> {
        None
    }
}

/// Snapshots one live session's VM. Cloned into every job leg of the session; a handle used
/// after release fails (the provider no longer knows the VM).
#[async_trait::async_trait]
pub trait Snapshotter: Send + Sync + std::fmt::Debug {
    /// Snapshot the VM as `name`; returns the provider's snapshot id.
    async fn snapshot(&self, name: &str) -> Result<String, String>;
}

/// A source of sessions: each call allocates exactly one VM.
#[async_trait::async_trait]
pub trait SessionSource: Send + Sync {
    /// Create a session for a job with these `runs-on` labels; with `snapshot` (a provider
    /// snapshot id) its VM is restored from it instead of booted fresh, under the same limit
    /// and release guarantees.
    async fn open(
        &self,
        labels: &[String],
        snapshot: Option<&str>,
    ) -> Result<Box<dyn LiveSession>, String>;
}

/// Sessions straight from a provider, with a concurrency limit.
#[derive(Debug)]
pub struct ProviderSessions {
    provider: Arc<dyn VmProvider>,
    profiles: ProfileConfig,
    backend: Option<Backend>,
    limit: Arc<tokio::sync::Semaphore>,
    counter: AtomicU64,
}

impl ProviderSessions {
    /// `backend` overrides the profile's backend (the `--backend` flag).
    pub fn new(
        provider: Arc<dyn VmProvider>,
        profiles: ProfileConfig,
        backend: Option<Backend>,
        max_sessions: usize,
    ) -> Self {
        ProviderSessions {
            provider,
            profiles,
            backend,
            limit: Arc::new(tokio::sync::Semaphore::new(max_sessions.max(1))),
            counter: AtomicU64::new(0),
        }
    }

    fn spec(&self, labels: &[String]) -> Result<(VmSpec, Vec<String>, Vec<String>), String> {
        // Labels that hold expressions (`${{ matrix.os }}`) cannot pick a profile before the
        // leg is known; the first profile serves them.
        let literal: Vec<String> = labels
            .iter()
            .filter(|l| !l.contains("${{"))
            .cloned()
            .collect();
        let resolved = if literal.is_empty() {
            self.profiles
                .profiles
                .iter()
                .next()
                .map(|(name, profile)| ignis_vm::profile::ResolvedProfile { name, profile })
                .ok_or_else(|| "no profile configured".to_string())?
        } else {
            let runs_on = if literal.len() == 1 {
                RunsOn::Label(literal[0].clone())
            } else {
                RunsOn::Labels(literal)
            };
            self.profiles.resolve(&runs_on).map_err(|e| e.to_string())?
        };
        let mut spec = resolved.spec();
        if let Some(b) = self.backend {
            spec.backend = b;
        }
        Ok((
            spec,
            resolved.profile.setup.clone(),
            resolved.profile.cleanup.clone(),
        ))
    }
}

#[async_trait::async_trait]
impl SessionSource for ProviderSessions {
    async fn open(
        &self,
        labels: &[String],
        snapshot: Option<&str>,
    ) -> Result<Box<dyn LiveSession>, String> {
        let (spec, setup, cleanup) = self.spec(labels)?;
        let permit = self
            .limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let vm = match snapshot {
            Some(s) => self
                .provider
                .restore(&ignis_vm::SnapshotId(s.to_string()), &spec)
                .await
                .map_err(|e| e.to_string())?,
            None => self
                .provider
                .allocate(&spec)
                .await
                .map_err(|e| e.to_string())?,
        };
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let session_id = format!("session-{}-{n}", std::process::id());
        Ok(Box::new(ProviderSession {
            provider: self.provider.clone(),
            vm: Some(vm),
            session_id,
            setup,
            cleanup,
            _permit: permit,
        }))
    }
}

/// Snapshots through the provider directly.
#[derive(Debug)]
struct ProviderSnapshotter {
    provider: Arc<dyn VmProvider>,
    vm: Vm,
}

#[async_trait::async_trait]
impl Snapshotter for ProviderSnapshotter {
    async fn snapshot(&self, name: &str) -> Result<String, String> {
        self.provider
            .snapshot(&self.vm, name)
            .await
            .map(|s| s.0)
            .map_err(|e| e.to_string())
    }
}

struct ProviderSession {
    provider: Arc<dyn VmProvider>,
    vm: Option<Vm>,
    session_id: String,
    setup: Vec<String>,
    cleanup: Vec<String>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

#[async_trait::async_trait]
impl LiveSession for ProviderSession {
    fn info(&self) -> SessionInfo {
        let (vm_id, vm_type, backend, allocation_ms) = match &self.vm {
            Some(vm) => (
                vm.id.to_string(),
                vm.vm_type.clone(),
                vm.backend.to_string(),
                u64::try_from(vm.allocation_time.as_millis()).unwrap_or(u64::MAX),
            ),
            None => Default::default(),
        };
        SessionInfo {
            session_id: self.session_id.clone(),
            vm_id,
            vm_type,
            backend,
            allocation_ms,
        }
    }
    fn agent(&self) -> AgentClient {
        match &self.vm {
            Some(vm) => vm.agent.clone(),
            None => unreachable_agent(),
        }
    }
    fn setup_commands(&self) -> Vec<String> {
        self.setup.clone()
    }
    fn cleanup_commands(&self) -> Vec<String> {
        self.cleanup.clone()
    }
    async fn release(mut self: Box<Self>, _result: JobResult) -> Result<(), String> {
        match self.vm.take() {
            Some(vm) => self.provider.release(&vm).await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
    fn snapshotter(&self) -> Option<Arc<dyn Snapshotter>> {
        let vm = self.vm.clone()?;
        Some(Arc::new(ProviderSnapshotter {
            provider: self.provider.clone(),
            vm,
        }))
    }
}

impl Drop for ProviderSession {
    fn drop(&mut self) {
        // Last resort (panic, aborted task): release in the background.
        if let Some(vm) = self.vm.take() {
            let provider = self.provider.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = provider.release(&vm).await;
                });
            }
        }
    }
}

/// `info()`/`agent()` are only called before `release`; a released session has no VM. This
/// builds a client on a closed pipe so a misuse fails with `ChannelClosed` instead of a panic.
pub(crate) fn unreachable_agent() -> AgentClient {
    let (a, _b) = tokio::io::duplex(1);
    let (r, w) = tokio::io::split(a);
    AgentClient::new(r, w)
}
