//! Sessions from the session manager: the executor's [`SessionSource`] for real runs (the
//! manager's limit, persisted records for crash recovery, drop guard and timeline).

use super::sessions::{LiveSession, SessionInfo, SessionSource, Snapshotter, unreachable_agent};
use crate::events::JobResult;
use ignis_agent::AgentClient;
use ignis_vm::profile::RunsOn;

/// Sessions from the [`SessionManager`](crate::session::SessionManager): its limit, its
/// persisted records (crash recovery), its drop guard and its timeline.
#[derive(Debug, Clone)]
pub struct ManagerSessions {
    manager: crate::session::SessionManager,
}

impl ManagerSessions {
    pub fn new(manager: crate::session::SessionManager) -> Self {
        ManagerSessions { manager }
    }

    pub fn manager(&self) -> &crate::session::SessionManager {
        &self.manager
    }
}

#[async_trait::async_trait]
impl SessionSource for ManagerSessions {
    async fn open(
        &self,
        labels: &[String],
        snapshot: Option<&str>,
    ) -> Result<Box<dyn LiveSession>, String> {
        let literal: Vec<String> = labels
            .iter()
            .filter(|l| !l.contains("${{"))
            .cloned()
            .collect();
        let runs_on = match literal.len() {
            // Labels only known per leg (`${{ matrix.os }}`): the first profile serves them.
            0 => RunsOn::Label(
                self.manager
                    .profiles()
                    .profiles
                    .keys()
                    .next()
                    .cloned()
                    .ok_or("no profile configured")?,
            ),
            1 => RunsOn::Label(literal[0].clone()),
            _ => RunsOn::Labels(literal),
        };
        let (setup, cleanup) = match self.manager.profiles().resolve(&runs_on) {
            Ok(r) => (r.profile.setup.clone(), r.profile.cleanup.clone()),
            Err(e) => return Err(e.to_string()),
        };
        let ctx = crate::session::SessionContext::new(runs_on);
        let session = match snapshot {
            Some(s) => {
                self.manager
                    .restore_session(ctx, ignis_vm::SnapshotId(s.to_string()))
                    .await
            }
            None => self.manager.create_session(ctx).await,
        }
        .map_err(|e| chain(&e))?;
        Ok(Box::new(ManagedSession {
            session: Some(session),
            setup,
            cleanup,
        }))
    }
}

struct ManagedSession {
    session: Option<crate::session::Session>,
    setup: Vec<String>,
    cleanup: Vec<String>,
}

#[async_trait::async_trait]
impl LiveSession for ManagedSession {
    fn info(&self) -> SessionInfo {
        match &self.session {
            Some(s) => SessionInfo {
                session_id: s.id().to_string(),
                vm_id: s.vm_id().to_string(),
                vm_type: s.vm_type().to_string(),
                backend: s.backend().to_string(),
                allocation_ms: u64::try_from(s.allocation_time().as_millis()).unwrap_or(u64::MAX),
            },
            None => SessionInfo {
                session_id: String::new(),
                vm_id: String::new(),
                vm_type: String::new(),
                backend: String::new(),
                allocation_ms: 0,
            },
        }
    }
    fn agent(&self) -> AgentClient {
        match &self.session {
            Some(s) => {
                s.mark_executing("running workflow commands");
                s.agent().clone()
            }
            None => unreachable_agent(),
        }
    }
    fn setup_commands(&self) -> Vec<String> {
        self.setup.clone()
    }
    fn cleanup_commands(&self) -> Vec<String> {
        self.cleanup.clone()
    }
    async fn release(mut self: Box<Self>, result: JobResult) -> Result<(), String> {
        let Some(s) = self.session.take() else {
            return Ok(());
        };
        s.complete(match result {
            JobResult::Success | JobResult::Skipped => crate::session::SessionOutcome::Success,
            JobResult::Failure => crate::session::SessionOutcome::Failure,
            JobResult::Cancelled => crate::session::SessionOutcome::Cancelled,
        });
        s.release().await.map(|_| ()).map_err(|e| chain(&e))
    }
    fn snapshotter(&self) -> Option<std::sync::Arc<dyn Snapshotter>> {
        let handle = self.session.as_ref()?.snapshot_handle();
        Some(std::sync::Arc::new(ManagedSnapshotter { handle }))
    }
}

/// Snapshots through the session manager (recorded in the session's timeline).
#[derive(Debug)]
struct ManagedSnapshotter {
    handle: crate::session::SnapshotHandle,
}

#[async_trait::async_trait]
impl Snapshotter for ManagedSnapshotter {
    async fn snapshot(&self, name: &str) -> Result<String, String> {
        self.handle
            .snapshot(name)
            .await
            .map(|s| s.0)
            .map_err(|e| chain(&e))
    }
}

/// An error with its sources, `a: b: c`, so the reason a backend failed reaches the user.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
