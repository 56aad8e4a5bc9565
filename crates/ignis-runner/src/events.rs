//! The run event stream: every state change of a run is one [`RunEvent`], stamped with the
//! time since the run started. Printers, `--json`, stores and dashboards are all
//! [`EventSink`]s; nothing in the runner prints or persists outside this stream, so every
//! consumer sees the same (masked) facts in the same order.

use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Which part of a run a setup/cleanup command belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Setup,
    Cleanup,
}

/// A job's final result, with GitHub's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobResult {
    Success,
    Failure,
    Skipped,
    Cancelled,
}

impl JobResult {
    /// GitHub's spelling, as used by `needs.<id>.result`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobResult::Success => "success",
            JobResult::Failure => "failure",
            JobResult::Skipped => "skipped",
            JobResult::Cancelled => "cancelled",
        }
    }
}

/// A step's outcome or conclusion (same vocabulary as jobs).
pub type StepResult = JobResult;

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Lines ignis itself writes about a step (e.g. "timed out after 1m").
    System,
}

/// Severity of an annotation (`::error::`, `::warning::`, `::notice::`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnotationLevel {
    Error,
    Warning,
    Notice,
}

/// Which stage of an action a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Stage {
    Pre,
    Main,
    Post,
}

/// One state change of a run. Serialized with a `"type"` tag in snake_case; the field names
/// are the `--json` contract of issue 4.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    RunStarted {
        run_id: String,
        event_name: String,
        workflows: Vec<String>,
        /// The id of the run's record: what `ignis run --resume` takes (absent when the run
        /// is not recorded).
        #[serde(skip_serializing_if = "Option::is_none")]
        record_id: Option<String>,
        /// The attempt (1, then +1 per resume), with `record_id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
    },
    SessionCreated {
        session_id: String,
        vm_id: String,
        vm_type: String,
        backend: String,
        allocation_ms: u64,
        /// The snapshot the VM was restored from (`ignis run --resume`); absent for a fresh VM.
        #[serde(skip_serializing_if = "Option::is_none")]
        restored_from: Option<String>,
    },
    CommandStarted {
        phase: Phase,
        session_id: String,
        vm_id: String,
        command: String,
    },
    CommandFinished {
        phase: Phase,
        session_id: String,
        vm_id: String,
        command: String,
        exit_code: Option<i32>,
    },
    JobStarted {
        job_id: String,
        name: String,
        matrix: Option<serde_json::Value>,
        session_id: String,
        vm_id: String,
    },
    JobFinished {
        job_id: String,
        name: String,
        matrix: Option<serde_json::Value>,
        result: JobResult,
        session_id: String,
        vm_id: String,
        duration_ms: u64,
        outputs: serde_json::Map<String, serde_json::Value>,
    },
    StepStarted {
        job_id: String,
        matrix: Option<serde_json::Value>,
        step_id: String,
        name: String,
        stage: Stage,
        vm_id: String,
    },
    StepFinished {
        job_id: String,
        matrix: Option<serde_json::Value>,
        step_id: String,
        name: String,
        stage: Stage,
        outcome: StepResult,
        conclusion: StepResult,
        vm_id: String,
        duration_ms: u64,
        /// On `--resume`: the run whose recorded result this step keeps (it did not run again).
        #[serde(skip_serializing_if = "Option::is_none")]
        kept_from: Option<String>,
    },
    Log {
        job_id: String,
        matrix: Option<serde_json::Value>,
        step_id: String,
        stream: LogStream,
        line: String,
    },
    GroupStarted {
        job_id: String,
        matrix: Option<serde_json::Value>,
        step_id: String,
        title: String,
    },
    GroupEnded {
        job_id: String,
        matrix: Option<serde_json::Value>,
        step_id: String,
    },
    Annotation {
        job_id: String,
        matrix: Option<serde_json::Value>,
        step_id: String,
        level: AnnotationLevel,
        message: String,
        title: Option<String>,
        file: Option<String>,
        line: Option<u64>,
        col: Option<u64>,
    },
    StepSummary {
        job_id: String,
        matrix: Option<serde_json::Value>,
        step_id: String,
        markdown: String,
    },
    /// A snapshot of the session's VM was taken (after setup, or after a successful step
    /// with `--snapshot-steps`); `ignis run --resume` restores from it.
    SnapshotCreated {
        session_id: String,
        vm_id: String,
        /// The name ignis gave the snapshot.
        name: String,
        /// `setup`, or `<job id>/<step id>` of the step it follows.
        after: String,
        /// Wall time the backend took.
        ms: u64,
    },
    SessionReleased {
        session_id: String,
        vm_id: String,
    },
    /// A non-fatal problem worth telling the user (e.g. release failed, unsupported feature).
    Warning {
        message: String,
    },
    RunFinished {
        result: JobResult,
        duration_ms: u64,
    },
}

/// An event with the milliseconds since the run started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stamped {
    pub t_ms: u64,
    #[serde(flatten)]
    pub event: RunEvent,
}

/// A subscriber of the run event stream. Sinks are called in emission order from whichever
/// task emits, so they must be quick (buffered writes, channel sends).
pub trait EventSink: Send + Sync {
    fn event(&self, event: &Stamped);
    /// Called once after `RunFinished`; flush buffers here.
    fn finish(&self) {}
}

/// The fan-out point of a run: stamps events and hands them to every sink, serialized so
/// all sinks see one total order.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

struct BusInner {
    start: Instant,
    sinks: Mutex<Vec<Arc<dyn EventSink>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").finish_non_exhaustive()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        EventBus {
            inner: Arc::new(BusInner {
                start: Instant::now(),
                sinks: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn subscribe(&self, sink: Arc<dyn EventSink>) {
        self.lock().push(sink);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<dyn EventSink>>> {
        // A sink that panicked must not silence the others: recover the guard.
        self.inner.sinks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Milliseconds since the run started.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.inner.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn emit(&self, event: RunEvent) {
        let sinks = self.lock();
        let stamped = Stamped {
            t_ms: self.elapsed_ms(),
            event,
        };
        for sink in sinks.iter() {
            sink.event(&stamped);
        }
    }

    pub fn finish(&self) {
        for sink in self.lock().iter() {
            sink.finish();
        }
    }
}

/// A sink that keeps every event, for tests and for building the final report.
#[derive(Debug, Default)]
pub struct Recorder {
    events: Mutex<Vec<Stamped>>,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn events(&self) -> Vec<Stamped> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl EventSink for Recorder {
    fn event(&self, event: &Stamped) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_has_type_and_fields() {
        let ev = Stamped {
            t_ms: 5,
            event: RunEvent::CommandFinished {
                phase: Phase::Setup,
                session_id: "s".into(),
                vm_id: "vm-1".into(),
                command: "mkdir".into(),
                exit_code: Some(0),
            },
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "command_finished");
        assert_eq!(v["phase"], "setup");
        assert_eq!(v["vm_id"], "vm-1");
        assert_eq!(v["exit_code"], 0);
        assert_eq!(v["t_ms"], 5);
        let job = RunEvent::JobFinished {
            job_id: "b".into(),
            name: "b".into(),
            matrix: None,
            result: JobResult::Cancelled,
            session_id: "s".into(),
            vm_id: "v".into(),
            duration_ms: 1,
            outputs: Default::default(),
        };
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["type"], "job_finished");
        assert_eq!(v["result"], "cancelled");
        assert!(v["matrix"].is_null());
    }

    #[test]
    fn bus_fans_out_in_order() {
        let bus = EventBus::new();
        let a = Recorder::new();
        let b = Recorder::new();
        bus.subscribe(a.clone());
        bus.subscribe(b.clone());
        bus.emit(RunEvent::Warning {
            message: "one".into(),
        });
        bus.emit(RunEvent::RunFinished {
            result: JobResult::Success,
            duration_ms: 0,
        });
        assert_eq!(a.events().len(), 2);
        assert_eq!(a.events(), b.events());
        assert!(matches!(a.events()[1].event, RunEvent::RunFinished { .. }));
    }
}
