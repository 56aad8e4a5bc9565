//! Sessions: one VM per run, allocated once, released on every path.
//!
//! [`SessionManager::create_session`] takes a slot under `max_concurrent_sessions` (a fair
//! semaphore: waiters are served in FIFO order), resolves the run's `runs-on` to a profile,
//! allocates exactly one VM through the provider of that profile's backend and hands back a
//! [`Session`]. Every command of the run goes to that session's agent; the step loop never
//! allocates.
//!
//! Release is RAII: a [`Session`] that is dropped without [`Session::release`] (the executor
//! panicked, its task was cancelled, an error returned early) spawns its own release on the
//! runtime it was created on. A release that fails is retried with backoff and, when it still
//! fails, reported three ways: the returned error, `tracing::error!` and the session's info
//! (`release_error`); the slot is freed but the session stays listed, and its on-disk record
//! stays so that a later `ignis vm gc` can reap it.
//!
//! Crash safety: while a session lives, a JSON record under the state dir names the owning
//! process and the VM's host resources (see [`store`]). [`SessionManager::reap_orphans`]
//! releases the VMs of records whose owner died.

/// On-disk session records and the generic reaper.
pub mod store;

use ignis_agent::{AgentClient, AgentError, ExecEvent, ExecOutput, ExecRequest};
use ignis_vm::profile::{ProfileConfig, ProfileError, RunsOn};
use ignis_vm::{Backend, SnapshotId, Vm, VmError, VmId, VmProvider, VmRecord};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use store::{Owner, SessionRecord, Store, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot};
use tokio_util::sync::CancellationToken;

pub use store::default_state_dir;

/// Errors of the session manager.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// `runs-on` names no configured profile (user error).
    #[error("resolving runs-on")]
    Profile(#[from] ProfileError),
    /// The profile wants a backend no provider was registered for (configuration error).
    #[error("no provider for backend {0}")]
    NoProvider(Backend),
    /// `try_create_session` found every slot taken.
    #[error("session limit of {limit} reached")]
    LimitReached { limit: usize },
    /// The manager was shut down while waiting for a slot.
    #[error("session manager closed")]
    Closed,
    /// The backend could not allocate a VM (host problem or backend bug).
    #[error("allocating a vm for session {session}")]
    Allocate {
        session: String,
        #[source]
        source: VmError,
    },
    /// Releasing the VM failed after every retry; it may still hold host resources, and its
    /// state record is kept for `ignis vm gc`.
    #[error("releasing vm {vm_id} of session {session} failed after {attempts} attempts")]
    Release {
        session: String,
        vm_id: String,
        attempts: u32,
        #[source]
        source: VmError,
    },
    /// The agent channel failed (the VM or its agent died).
    #[error("agent of session {session}")]
    Agent {
        session: String,
        #[source]
        source: AgentError,
    },
    /// A command was cancelled.
    #[error("command cancelled in session {session}")]
    Cancelled { session: String },
    /// Snapshot failed.
    #[error("snapshot of session {session}")]
    Snapshot {
        session: String,
        #[source]
        source: VmError,
    },
    /// The state record could not be written or read (host problem).
    #[error("session state record")]
    Store(#[from] StoreError),
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Waiting for its VM.
    Creating,
    /// VM allocated, nothing running.
    Active,
    /// Running commands.
    Executing,
    /// The run succeeded.
    Completed,
    /// The run failed (or the executor dropped the session without completing it).
    Failed,
    /// The run was cancelled.
    Cancelled,
    /// The VM was released.
    Released,
}

impl SessionState {
    /// Completed, Failed, Cancelled or Released.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SessionState::Completed
                | SessionState::Failed
                | SessionState::Cancelled
                | SessionState::Released
        )
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionState::Creating => "creating",
            SessionState::Active => "active",
            SessionState::Executing => "executing",
            SessionState::Completed => "completed",
            SessionState::Failed => "failed",
            SessionState::Cancelled => "cancelled",
            SessionState::Released => "released",
        })
    }
}

/// How a run ended, for [`Session::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// The run succeeded.
    Success,
    /// The run failed.
    Failure,
    /// The run was cancelled.
    Cancelled,
}

/// The VM column of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// No VM yet.
    None,
    /// Allocated, no command sent yet.
    Allocated,
    /// Executing an action (see [`Session::mark_executing`]).
    Running,
    /// Handed back to the provider.
    Released,
}

/// One row of a session's timeline (as in the seed's "VM Lifecycle Timeline").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TimelineEntry {
    /// Milliseconds since the session was requested.
    pub t_ms: u64,
    /// The VM's state after the action.
    pub vm_state: VmState,
    /// The session's state after the action.
    pub session_state: SessionState,
    /// What happened, in words.
    pub action: String,
}

/// A point-in-time copy of a session: the seed's `Session { id, vm_id, vm_type, state,
/// snapshots, timeline }` plus the backend and any release error.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// Empty while the VM is being allocated.
    pub vm_id: String,
    /// The VM type (profile) the run's `runs-on` resolved to.
    pub vm_type: String,
    /// The backend of that profile.
    pub backend: Backend,
    /// Where the session is in its life.
    pub state: SessionState,
    /// Snapshots taken of its VM.
    pub snapshots: Vec<String>,
    /// Every state change, in order.
    pub timeline: Vec<TimelineEntry>,
    /// How long the provider took to allocate the VM, once it has.
    pub allocation_ms: Option<u64>,
    /// Why the last release attempt failed, if the VM could not be released.
    pub release_error: Option<String>,
}

/// What the manager tells an observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A VM was allocated and bound to a new session.
    Created {
        session_id: String,
        vm_id: String,
        vm_type: String,
        backend: Backend,
        allocation_ms: u64,
    },
    /// The backend failed to allocate; no VM is held.
    AllocationFailed { session_id: String, error: String },
    /// One release attempt failed; `will_retry` says whether another follows.
    ReleaseFailed {
        session_id: String,
        vm_id: String,
        attempt: u32,
        will_retry: bool,
        error: String,
    },
    /// The VM was released.
    Released { session_id: String, vm_id: String },
}

/// Receives session events. Called from whichever task causes the event: keep it quick.
pub trait SessionObserver: Send + Sync {
    fn on_event(&self, event: &SessionEvent);
}

impl SessionObserver for tokio::sync::mpsc::UnboundedSender<SessionEvent> {
    fn on_event(&self, event: &SessionEvent) {
        // A receiver that went away just stops listening.
        let _ = self.send(event.clone());
    }
}

impl<F: Fn(&SessionEvent) + Send + Sync> SessionObserver for F {
    fn on_event(&self, event: &SessionEvent) {
        self(event);
    }
}

/// What a run asks of the manager.
#[derive(Clone)]
pub struct SessionContext {
    /// The run's `runs-on`, resolved to a profile.
    pub runs_on: RunsOn,
    /// A label for logs (e.g. `ci.yml#42`).
    pub label: String,
    /// Told about this session's creation and release.
    pub observer: Option<Arc<dyn SessionObserver>>,
}

impl fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionContext")
            .field("runs_on", &self.runs_on)
            .field("label", &self.label)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl SessionContext {
    /// A context for `runs_on` without observer.
    pub fn new(runs_on: impl Into<RunsOn>) -> Self {
        SessionContext {
            runs_on: runs_on.into(),
            label: String::new(),
            observer: None,
        }
    }

    /// Set the observer.
    pub fn with_observer(mut self, observer: Arc<dyn SessionObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Set the log label.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
}

/// Builds a [`SessionManager`].
#[derive(Debug)]
pub struct SessionManagerBuilder {
    max_concurrent_sessions: usize,
    state_dir: Option<PathBuf>,
    profiles: ProfileConfig,
    providers: HashMap<Backend, Arc<dyn VmProvider>>,
    release_attempts: u32,
    release_backoff: Duration,
}

impl SessionManagerBuilder {
    /// At most `n` sessions live at once (at least 1).
    pub fn max_concurrent_sessions(mut self, n: usize) -> Self {
        self.max_concurrent_sessions = n.max(1);
        self
    }
    /// Where session records live (default: [`default_state_dir`]).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
    /// Profiles for `runs-on` (default: the built-in profile set).
    pub fn profiles(mut self, profiles: ProfileConfig) -> Self {
        self.profiles = profiles;
        self
    }
    /// Register the provider of one backend (replaces an earlier one of the same backend).
    pub fn provider(mut self, provider: Arc<dyn VmProvider>) -> Self {
        self.providers.insert(provider.backend(), provider);
        self
    }
    /// Release attempts (at least 1) and the delay before the second one; it doubles after.
    pub fn release_retry(mut self, attempts: u32, first_backoff: Duration) -> Self {
        self.release_attempts = attempts.max(1);
        self.release_backoff = first_backoff;
        self
    }
    /// Open the state dir and build the manager.
    pub fn build(self) -> Result<SessionManager, SessionError> {
        let state_dir = self.state_dir.unwrap_or_else(default_state_dir);
        let store = Store::open(&state_dir)?;
        Ok(SessionManager {
            inner: Arc::new(Inner {
                limit: self.max_concurrent_sessions,
                slots: Arc::new(Semaphore::new(self.max_concurrent_sessions)),
                profiles: self.profiles,
                providers: self.providers,
                store,
                state_dir,
                owner: Owner::current(),
                sessions: Mutex::default(),
                next: AtomicU64::new(1),
                release_attempts: self.release_attempts,
                release_backoff: self.release_backoff,
            }),
        })
    }
}

/// Hands out sessions. Cheap to clone; clones share the limit and the session table.
#[derive(Debug, Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    slots: Arc<Semaphore>,
    profiles: ProfileConfig,
    providers: HashMap<Backend, Arc<dyn VmProvider>>,
    store: Store,
    state_dir: PathBuf,
    owner: Owner,
    sessions: Mutex<HashMap<String, Arc<Shared>>>,
    next: AtomicU64,
    release_attempts: u32,
    release_backoff: Duration,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("limit", &self.limit)
            .field("state_dir", &self.state_dir)
            .field("backends", &self.providers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What one orphan reap did.
#[derive(Debug)]
pub struct ReapReport {
    pub session_id: String,
    pub vm_id: String,
    pub backend: Backend,
    pub owner_pid: u32,
    /// `Ok` when everything the record named was released and the record removed.
    pub result: Result<(), String>,
}

/// A record in the state dir and whether its owner still runs, for `ignis vm ls`.
#[derive(Debug, Clone)]
pub struct RecordStatus {
    pub record: SessionRecord,
    pub owner_alive: bool,
}

/// The state shared between a [`Session`] handle, its release task and the manager's table.
#[derive(Debug)]
struct Shared {
    id: String,
    vm_type: String,
    backend: Backend,
    requested: Instant,
    created_unix_ms: u64,
    observer: Option<Arc<dyn SessionObserver>>,
    data: Mutex<Data>,
}

impl fmt::Debug for dyn SessionObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionObserver")
    }
}

#[derive(Debug)]
struct Data {
    vm_id: String,
    state: SessionState,
    vm_state: VmState,
    snapshots: Vec<String>,
    timeline: Vec<TimelineEntry>,
    allocation_ms: Option<u64>,
    release_error: Option<String>,
    vm_record: VmRecord,
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, Data> {
        // NOTE: never held across an await; poison only means another task panicked while
        // recording, and the data is still consistent enough to release the VM.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set the state (and optionally the vm state) and append a timeline row.
    fn transition(&self, state: SessionState, vm_state: Option<VmState>, action: &str) {
        let t_ms = self.requested.elapsed().as_millis() as u64;
        let mut d = self.data();
        d.state = state;
        if let Some(v) = vm_state {
            d.vm_state = v;
        }
        let entry = TimelineEntry {
            t_ms,
            vm_state: d.vm_state,
            session_state: state,
            action: action.to_owned(),
        };
        d.timeline.push(entry);
    }

    fn info(&self) -> SessionInfo {
        let d = self.data();
        SessionInfo {
            id: self.id.clone(),
            vm_id: d.vm_id.clone(),
            vm_type: self.vm_type.clone(),
            backend: self.backend,
            state: d.state,
            snapshots: d.snapshots.clone(),
            timeline: d.timeline.clone(),
            allocation_ms: d.allocation_ms,
            release_error: d.release_error.clone(),
        }
    }

    fn record(&self, owner: Owner) -> SessionRecord {
        let d = self.data();
        SessionRecord {
            session_id: self.id.clone(),
            vm_id: d.vm_id.clone(),
            vm_type: self.vm_type.clone(),
            backend: self.backend,
            state: d.state,
            owner,
            created_unix_ms: self.created_unix_ms,
            vm: d.vm_record.clone(),
        }
    }

    fn emit(&self, event: SessionEvent) {
        if let Some(o) = &self.observer {
            o.on_event(&event);
        }
    }
}

impl SessionManager {
    /// A builder with a limit of 1, the default state dir and the built-in profiles.
    pub fn builder() -> SessionManagerBuilder {
        SessionManagerBuilder {
            max_concurrent_sessions: 1,
            state_dir: None,
            profiles: ProfileConfig::default(),
            providers: HashMap::new(),
            release_attempts: 4,
            release_backoff: Duration::from_millis(50),
        }
    }

    /// The concurrency limit.
    pub fn max_concurrent_sessions(&self) -> usize {
        self.inner.limit
    }

    /// Free slots now.
    pub fn available_slots(&self) -> usize {
        self.inner.slots.available_permits()
    }

    /// The state dir holding session records.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The profile set.
    pub fn profiles(&self) -> &ProfileConfig {
        &self.inner.profiles
    }

    /// Sessions not yet released (including those whose release failed), oldest first.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let table: Vec<Arc<Shared>> = self.table().values().cloned().collect();
        let mut v: Vec<(Instant, SessionInfo)> =
            table.iter().map(|s| (s.requested, s.info())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// Number of sessions not yet released.
    pub fn live_count(&self) -> usize {
        self.table().len()
    }

    /// One session by id, while it is not released.
    pub fn session(&self, id: &str) -> Option<SessionInfo> {
        self.table().get(id).map(|s| s.info())
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Shared>>> {
        // NOTE: never held across an await.
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn new_id(&self) -> String {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        // pid + process start time + counter is unique across processes on this host, which
        // is all a session id has to be (records of several ignis processes share a dir).
        format!(
            "ses-{:x}-{:x}-{n}",
            self.inner.owner.pid, self.inner.owner.start_time
        )
    }

    /// Create a session: wait for a slot (FIFO), allocate exactly one VM for `ctx.runs_on`.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future while it waits for a slot gives up the place in the
    /// queue; dropping it during allocation lets the allocation finish in the background and
    /// releases the VM at once.
    pub async fn create_session(&self, ctx: SessionContext) -> Result<Session, SessionError> {
        // Resolve first: a bad `runs-on` must not wait for a slot.
        let (spec, provider) = self.resolve(&ctx)?;
        let permit = Arc::clone(&self.inner.slots)
            .acquire_owned()
            .await
            .map_err(|_| SessionError::Closed)?;
        self.allocate(ctx, spec, provider, permit, None).await
    }

    /// Like [`create_session`](Self::create_session), but the VM is allocated by restoring
    /// `snapshot` ([`VmProvider::restore`]) instead of booting fresh: same slot, record, drop
    /// guard and release guarantees. `ignis run --resume` continues failed runs with it.
    ///
    /// # Cancel safety
    /// As [`create_session`](Self::create_session).
    pub async fn restore_session(
        &self,
        ctx: SessionContext,
        snapshot: SnapshotId,
    ) -> Result<Session, SessionError> {
        let (spec, provider) = self.resolve(&ctx)?;
        let permit = Arc::clone(&self.inner.slots)
            .acquire_owned()
            .await
            .map_err(|_| SessionError::Closed)?;
        self.allocate(ctx, spec, provider, permit, Some(snapshot))
            .await
    }

    /// Delete a snapshot through the registered provider of `backend`.
    pub async fn remove_snapshot(
        &self,
        backend: Backend,
        snapshot: &SnapshotId,
    ) -> Result<(), SessionError> {
        let provider = self
            .inner
            .providers
            .get(&backend)
            .ok_or(SessionError::NoProvider(backend))?;
        provider
            .remove_snapshot(snapshot)
            .await
            .map_err(|source| SessionError::Snapshot {
                session: String::new(),
                source,
            })
    }

    /// Like [`create_session`](Self::create_session) but fails with `LimitReached` instead of
    /// waiting: taking the slot is the check, so two callers can never both get the last one.
    pub async fn try_create_session(&self, ctx: SessionContext) -> Result<Session, SessionError> {
        let (spec, provider) = self.resolve(&ctx)?;
        let permit = match Arc::clone(&self.inner.slots).try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                return Err(SessionError::LimitReached {
                    limit: self.inner.limit,
                });
            }
            Err(TryAcquireError::Closed) => return Err(SessionError::Closed),
        };
        self.allocate(ctx, spec, provider, permit, None).await
    }

    fn resolve(
        &self,
        ctx: &SessionContext,
    ) -> Result<(ignis_vm::VmSpec, Arc<dyn VmProvider>), SessionError> {
        let spec = self.inner.profiles.spec_for(&ctx.runs_on)?;
        let provider = self
            .inner
            .providers
            .get(&spec.backend)
            .cloned()
            .ok_or(SessionError::NoProvider(spec.backend))?;
        Ok((spec, provider))
    }

    async fn allocate(
        &self,
        ctx: SessionContext,
        spec: ignis_vm::VmSpec,
        provider: Arc<dyn VmProvider>,
        permit: OwnedSemaphorePermit,
        from: Option<SnapshotId>,
    ) -> Result<Session, SessionError> {
        let restored = from.as_ref().map(|s| s.0.clone());
        let shared = Arc::new(Shared {
            id: self.new_id(),
            vm_type: spec.vm_type.clone(),
            backend: spec.backend,
            requested: Instant::now(),
            created_unix_ms: store::unix_ms(),
            observer: ctx.observer.clone(),
            data: Mutex::new(Data {
                vm_id: String::new(),
                state: SessionState::Creating,
                vm_state: VmState::None,
                snapshots: Vec::new(),
                timeline: Vec::new(),
                allocation_ms: None,
                release_error: None,
                vm_record: VmRecord::default(),
            }),
        });
        shared.transition(SessionState::Creating, None, "session requested");
        self.table().insert(shared.id.clone(), Arc::clone(&shared));
        // Removes the table entry if this future is dropped before the session exists.
        let mut pending = PendingEntry {
            manager: self,
            id: Some(shared.id.clone()),
        };

        // Allocate in a task of its own: if this future is dropped mid-allocation the task
        // still finishes, sees nobody is waiting and releases the VM, so nothing leaks.
        let (tx, rx) = oneshot::channel::<Vm>();
        let task_provider = Arc::clone(&provider);
        let alloc = tokio::spawn(async move {
            let vm = match &from {
                Some(snapshot) => task_provider.restore(snapshot, &spec).await?,
                None => task_provider.allocate(&spec).await?,
            };
            if let Err(vm) = tx.send(vm)
                && let Err(e) = task_provider.release(&vm).await
            {
                tracing::error!(vm = %vm.id, error = %e, "releasing vm of an abandoned allocation");
            }
            Ok::<(), VmError>(())
        });
        let vm = match rx.await {
            Ok(vm) => vm,
            Err(_) => {
                // The sender was dropped without a VM: allocation failed or panicked.
                let error = match alloc.await {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => VmError::Allocate {
                        backend: shared.backend,
                        vm_type: shared.vm_type.clone(),
                        reason: "allocation produced no vm".into(),
                    },
                    Err(join) => VmError::Allocate {
                        backend: shared.backend,
                        vm_type: shared.vm_type.clone(),
                        reason: format!("allocation task failed: {join}"),
                    },
                };
                shared.transition(SessionState::Failed, None, "allocation failed");
                shared.emit(SessionEvent::AllocationFailed {
                    session_id: shared.id.clone(),
                    error: error.to_string(),
                });
                tracing::warn!(session = %shared.id, error = %error, "allocation failed");
                return Err(SessionError::Allocate {
                    session: shared.id.clone(),
                    source: error,
                });
            }
        };
        pending.id = None;
        let allocation_ms = vm.allocation_time.as_millis() as u64;
        {
            let mut d = shared.data();
            d.vm_id = vm.id.0.clone();
            d.allocation_ms = Some(allocation_ms);
            d.vm_record = vm.record.clone();
        }
        let action = match &restored {
            Some(snap) => format!("vm restored from snapshot {snap}, session created"),
            None => "vm allocated, session created".to_string(),
        };
        shared.transition(SessionState::Active, Some(VmState::Allocated), &action);
        let session = Session {
            shared: Arc::clone(&shared),
            manager: self.clone(),
            vm: Some(vm),
            provider,
            permit: Some(permit),
            runtime: tokio::runtime::Handle::current(),
        };
        // Persist before anyone runs a command in the VM; without a record a crash would
        // leak it. Dropping `session` on error releases the VM.
        self.inner
            .store
            .write(&shared.record(self.inner.owner))
            .map_err(SessionError::Store)?;
        shared.emit(SessionEvent::Created {
            session_id: shared.id.clone(),
            vm_id: session.vm_id().0.clone(),
            vm_type: shared.vm_type.clone(),
            backend: shared.backend,
            allocation_ms,
        });
        tracing::debug!(session = %shared.id, vm = %session.vm_id(), label = %ctx.label, allocation_ms, "session created");
        Ok(session)
    }

    fn persist(&self, shared: &Shared) {
        if let Err(e) = self.inner.store.write(&shared.record(self.inner.owner)) {
            tracing::warn!(session = %shared.id, error = %e, "updating session record");
        }
    }

    /// Release the VM with retries; the core of every release path.
    async fn release_vm(
        &self,
        shared: Arc<Shared>,
        vm: Vm,
        provider: Arc<dyn VmProvider>,
        permit: OwnedSemaphorePermit,
    ) -> Result<SessionInfo, SessionError> {
        let attempts = self.inner.release_attempts;
        let mut backoff = self.inner.release_backoff;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match provider.release(&vm).await {
                // Already gone counts as released: an earlier attempt may have finished the
                // job before reporting an error.
                Ok(()) | Err(VmError::UnknownVm(_)) => break Ok(()),
                Err(e) => {
                    let will_retry = attempt < attempts;
                    shared.emit(SessionEvent::ReleaseFailed {
                        session_id: shared.id.clone(),
                        vm_id: vm.id.0.clone(),
                        attempt,
                        will_retry,
                        error: e.to_string(),
                    });
                    shared.data().release_error = Some(e.to_string());
                    if !will_retry {
                        break Err(e);
                    }
                    tracing::warn!(session = %shared.id, vm = %vm.id, attempt, error = %e, "release failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        };
        let result = match outcome {
            Ok(()) => {
                shared.data().release_error = None;
                shared.transition(
                    SessionState::Released,
                    Some(VmState::Released),
                    "vm released, session cleaned up",
                );
                self.table().remove(&shared.id);
                if let Err(e) = self.inner.store.remove(&shared.id) {
                    tracing::warn!(session = %shared.id, error = %e, "removing session record");
                }
                shared.emit(SessionEvent::Released {
                    session_id: shared.id.clone(),
                    vm_id: vm.id.0.clone(),
                });
                Ok(shared.info())
            }
            Err(e) => {
                tracing::error!(session = %shared.id, vm = %vm.id, attempts = attempt, error = %e, "releasing vm failed; its record is kept for `ignis vm gc`");
                let state = shared.data().state;
                shared.transition(
                    state,
                    None,
                    &format!("release failed after {attempt} attempts: {e}"),
                );
                self.persist(&shared);
                Err(SessionError::Release {
                    session: shared.id.clone(),
                    vm_id: vm.id.0.clone(),
                    attempts: attempt,
                    source: e,
                })
            }
        };
        // Free the slot last: the limit bounds VMs, including ones being released.
        drop(permit);
        result
    }

    /// State records of every ignis process under `state_dir`, with owner liveness.
    pub fn list_records(state_dir: &Path) -> (Vec<RecordStatus>, Vec<StoreError>) {
        let (records, errors) = Store::at(state_dir).list();
        let statuses = records
            .into_iter()
            .map(|record| RecordStatus {
                owner_alive: record.owner.is_alive(),
                record,
            })
            .collect();
        (statuses, errors)
    }

    /// Release the VMs of sessions whose owning ignis process is dead (call at start-up).
    /// Each record goes to the registered provider of its backend, or to the generic
    /// [`store::reap_record`] when none is registered; its record is removed once reaped.
    /// Records of live processes (this one included) are left alone. Then each provider's
    /// [`VmProvider::reap_leftovers`] sweeps what dead processes left without a record
    /// (logged, not reported: no session owns it).
    pub async fn reap_orphans(&self) -> Vec<ReapReport> {
        let (records, errors) = self.inner.store.list();
        for e in errors {
            tracing::warn!(error = %e, "skipping unreadable session record");
        }
        let mut reports = Vec::new();
        for rec in records {
            if rec.owner.is_alive() {
                continue;
            }
            let result = match self.inner.providers.get(&rec.backend) {
                Some(p) => p.reap(&rec.vm).await.map_err(|e| e.to_string()),
                None => {
                    let vm = rec.vm.clone();
                    tokio::task::spawn_blocking(move || store::reap_record(&vm))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                }
            };
            let result = result.and_then(|()| {
                self.inner
                    .store
                    .remove(&rec.session_id)
                    .map_err(|e| e.to_string())
            });
            match &result {
                Ok(()) => {
                    tracing::info!(session = %rec.session_id, vm = %rec.vm_id, owner = rec.owner.pid, "reaped orphaned session")
                }
                Err(e) => {
                    tracing::error!(session = %rec.session_id, vm = %rec.vm_id, error = %e, "reaping orphaned session failed")
                }
            }
            reports.push(ReapReport {
                session_id: rec.session_id,
                vm_id: rec.vm_id,
                backend: rec.backend,
                owner_pid: rec.owner.pid,
                result,
            });
        }
        // Then what no record names: a crash between a VM's first host resource and its
        // record leaves resources only the provider can trace to their dead owner.
        for (backend, p) in &self.inner.providers {
            match p.reap_leftovers().await {
                Ok(items) => {
                    for item in items {
                        tracing::info!(%backend, "reaped leftover of a dead ignis: {item}");
                    }
                }
                Err(e) => {
                    tracing::error!(%backend, error = %e, "sweeping leftovers of dead ignis processes failed")
                }
            }
        }
        reports
    }
}

/// Removes a `Creating` entry from the table when allocation does not produce a session.
struct PendingEntry<'a> {
    manager: &'a SessionManager,
    id: Option<String>,
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.manager.table().remove(&id);
        }
    }
}

/// One live session: owns its VM and its slot until released.
///
/// Dropping it without [`release`](Self::release) marks it failed (unless it already ended)
/// and releases the VM in a task on the runtime it was created on.
pub struct Session {
    shared: Arc<Shared>,
    manager: SessionManager,
    vm: Option<Vm>,
    provider: Arc<dyn VmProvider>,
    permit: Option<OwnedSemaphorePermit>,
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.shared.id)
            .field("vm", &self.vm.as_ref().map(|v| &v.id))
            .finish_non_exhaustive()
    }
}

impl Session {
    fn vm_ref(&self) -> &Vm {
        self.vm
            .as_ref()
            .expect("a Session holds its vm until release consumes it")
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }
    /// The VM's id; the same for every command of the session.
    pub fn vm_id(&self) -> &VmId {
        &self.vm_ref().id
    }
    /// The profile name.
    pub fn vm_type(&self) -> &str {
        &self.shared.vm_type
    }
    /// The backend.
    pub fn backend(&self) -> Backend {
        self.shared.backend
    }
    /// Time the provider spent allocating.
    pub fn allocation_time(&self) -> Duration {
        self.vm_ref().allocation_time
    }
    /// The VM.
    pub fn vm(&self) -> &Vm {
        self.vm_ref()
    }
    /// The VM's agent: run commands with it.
    pub fn agent(&self) -> &AgentClient {
        &self.vm_ref().agent
    }
    /// Current state.
    pub fn state(&self) -> SessionState {
        self.shared.data().state
    }
    /// A copy of the session's data and timeline.
    pub fn info(&self) -> SessionInfo {
        self.shared.info()
    }

    /// Record that `action` (e.g. "step 3: build") starts: state Executing, vm Running.
    pub fn mark_executing(&self, action: &str) {
        let was = self.state();
        self.shared
            .transition(SessionState::Executing, Some(VmState::Running), action);
        if was != SessionState::Executing {
            self.manager.persist(&self.shared);
        }
    }

    /// Append a timeline row without changing state.
    pub fn note(&self, action: &str) {
        let state = self.state();
        self.shared.transition(state, None, action);
    }

    /// Record how the run ended: Completed, Failed or Cancelled.
    pub fn complete(&self, outcome: SessionOutcome) {
        let (state, action) = match outcome {
            SessionOutcome::Success => (SessionState::Completed, "session marked completed"),
            SessionOutcome::Failure => (SessionState::Failed, "session marked failed"),
            SessionOutcome::Cancelled => (SessionState::Cancelled, "session marked cancelled"),
        };
        self.shared.transition(state, None, action);
        self.manager.persist(&self.shared);
    }

    /// Run one command in the VM and collect its output, recording `action` in the timeline.
    /// A broken agent channel marks the session failed. With `cancel`, a cancellation kills
    /// the command's process group and returns `Cancelled` (the session is marked cancelled).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future leaves the command running until the session is
    /// released. Use `cancel` to stop a command.
    pub async fn run(
        &self,
        action: &str,
        req: ExecRequest,
        cancel: Option<&CancellationToken>,
    ) -> Result<ExecOutput, SessionError> {
        self.mark_executing(action);
        let agent_err = |source| SessionError::Agent {
            session: self.shared.id.clone(),
            source,
        };
        let mut handle = match self.agent().exec(req).await {
            Ok(h) => h,
            Err(e) => return Err(self.agent_failed(agent_err(e))),
        };
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut cancelled = false;
        let never = CancellationToken::new();
        let token = cancel.unwrap_or(&never);
        loop {
            let ev = tokio::select! {
                ev = handle.next() => ev,
                () = token.cancelled(), if !cancelled => {
                    cancelled = true;
                    if let Err(e) = handle.cancel().await {
                        return Err(self.agent_failed(agent_err(e)));
                    }
                    continue;
                }
            };
            match ev {
                Some(Ok(ExecEvent::Output(ignis_agent::Stream::Stdout, b))) => {
                    stdout.extend_from_slice(&b);
                }
                Some(Ok(ExecEvent::Output(ignis_agent::Stream::Stderr, b))) => {
                    stderr.extend_from_slice(&b);
                }
                Some(Ok(ExecEvent::Exit(status))) => {
                    if cancelled {
                        self.complete(SessionOutcome::Cancelled);
                        return Err(SessionError::Cancelled {
                            session: self.shared.id.clone(),
                        });
                    }
                    return Ok(ExecOutput {
                        stdout,
                        stderr,
                        status,
                    });
                }
                Some(Err(e)) => return Err(self.agent_failed(agent_err(e))),
                None => return Err(self.agent_failed(agent_err(AgentError::ChannelClosed))),
            }
        }
    }

    fn agent_failed(&self, err: SessionError) -> SessionError {
        tracing::warn!(session = %self.shared.id, error = %err, "agent failed");
        self.shared
            .transition(SessionState::Failed, None, "agent channel failed");
        self.manager.persist(&self.shared);
        err
    }

    /// Snapshot the VM (recorded in the session's snapshots and timeline).
    pub async fn snapshot(&self, name: &str) -> Result<SnapshotId, SessionError> {
        self.snapshot_handle().snapshot(name).await
    }

    /// A cloneable handle that snapshots this session's VM from any task (the job legs of a
    /// run share its session); snapshots it takes are recorded here like [`Self::snapshot`]'s.
    pub fn snapshot_handle(&self) -> SnapshotHandle {
        SnapshotHandle {
            shared: Arc::clone(&self.shared),
            vm: self.vm_ref().clone(),
            provider: Arc::clone(&self.provider),
        }
    }

    /// Release the VM (retrying failed releases) and free the slot. A session that has not
    /// ended yet is marked failed first. Returns the final info.
    ///
    /// # Cancel safety
    /// Cancel safe: the release runs in a task of its own and finishes even if this future
    /// is dropped.
    pub async fn release(mut self) -> Result<SessionInfo, SessionError> {
        let task = self.spawn_release("released before completion");
        match task {
            Some(t) => t.await.unwrap_or_else(|join| {
                Err(SessionError::Release {
                    session: self.shared.id.clone(),
                    vm_id: String::new(),
                    attempts: 0,
                    source: VmError::Release {
                        id: VmId(String::new()),
                        reason: format!("release task failed: {join}"),
                    },
                })
            }),
            None => Ok(self.shared.info()),
        }
    }

    /// Start the release task once; `None` when it was already started.
    fn spawn_release(
        &mut self,
        unfinished_reason: &str,
    ) -> Option<tokio::task::JoinHandle<Result<SessionInfo, SessionError>>> {
        let vm = self.vm.take()?;
        let permit = self.permit.take()?;
        if !self.state().is_final() {
            self.shared
                .transition(SessionState::Failed, None, unfinished_reason);
        }
        let manager = self.manager.clone();
        let shared = Arc::clone(&self.shared);
        let provider = Arc::clone(&self.provider);
        Some(
            self.runtime
                .spawn(async move { manager.release_vm(shared, vm, provider, permit).await }),
        )
    }
}

/// Snapshots one session's VM; see [`Session::snapshot_handle`]. After the session is
/// released the provider refuses with `UnknownVm`.
#[derive(Clone)]
pub struct SnapshotHandle {
    shared: Arc<Shared>,
    vm: Vm,
    provider: Arc<dyn VmProvider>,
}

impl fmt::Debug for SnapshotHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotHandle")
            .field("session", &self.shared.id)
            .field("vm", &self.vm.id)
            .finish_non_exhaustive()
    }
}

impl SnapshotHandle {
    /// Snapshot the VM as `name`.
    pub async fn snapshot(&self, name: &str) -> Result<SnapshotId, SessionError> {
        let snap = self
            .provider
            .snapshot(&self.vm, name)
            .await
            .map_err(|source| SessionError::Snapshot {
                session: self.shared.id.clone(),
                source,
            })?;
        self.shared.data().snapshots.push(snap.0.clone());
        // a note in the timeline: the session's state does not change
        let state = self.shared.data().state;
        self.shared
            .transition(state, None, &format!("snapshot {}", snap.0));
        Ok(snap)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.vm.is_some() {
            let reason = if std::thread::panicking() {
                "dropped while panicking"
            } else {
                "dropped without release"
            };
            tracing::warn!(session = %self.shared.id, reason, "releasing session from drop guard");
            // If the runtime is shutting down the task may never run; the state record then
            // outlives this process and the next start reaps it.
            drop(self.spawn_release(reason));
        }
    }
}
