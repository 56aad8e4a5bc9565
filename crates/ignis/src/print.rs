//! Printers: subscribers of the run event stream. The human printer prefixes every line by
//! its job (and matrix leg), shows groups as headers and ends with a table of jobs; the JSON
//! printer writes one event per line; the timeline records the session's life like the seed.

use ignis_runner::events::{EventSink, JobResult, LogStream, RunEvent, Stamped, StepResult};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

fn leg_key(job_id: &str, matrix: &Option<serde_json::Value>) -> String {
    match matrix {
        Some(m) => format!("{job_id}{m}"),
        None => job_id.to_string(),
    }
}

/// One row of the final table.
#[derive(Debug, Clone)]
struct JobRow {
    name: String,
    result: JobResult,
    duration_ms: u64,
    vm_id: String,
}

#[derive(Debug, Default)]
struct HumanState {
    names: HashMap<String, String>,
    rows: Vec<JobRow>,
    summaries: Vec<(String, String)>,
    annotations: Vec<String>,
    depth: HashMap<String, usize>,
}

/// The terminal printer (stdout).
#[derive(Debug, Default)]
pub struct HumanPrinter {
    state: Mutex<HumanState>,
    /// Print job summaries at the end.
    pub show_summaries: bool,
}

impl HumanPrinter {
    pub fn new() -> Self {
        HumanPrinter {
            state: Mutex::default(),
            show_summaries: true,
        }
    }
}

fn result_word(r: StepResult) -> &'static str {
    match r {
        StepResult::Success => "success",
        StepResult::Failure => "failure",
        StepResult::Skipped => "skipped",
        StepResult::Cancelled => "cancelled",
    }
}

impl EventSink for HumanPrinter {
    fn event(&self, ev: &Stamped) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let out = std::io::stdout();
        let mut out = out.lock();
        let name_of = |st: &HumanState, job_id: &str, m: &Option<serde_json::Value>| {
            st.names
                .get(&leg_key(job_id, m))
                .cloned()
                .unwrap_or_else(|| job_id.to_string())
        };
        let _ = match &ev.event {
            RunEvent::SessionCreated {
                session_id,
                vm_id,
                vm_type,
                backend,
                allocation_ms,
                restored_from,
            } => match restored_from {
                Some(snap) => writeln!(
                    out,
                    "[ignis] session {session_id}: vm {vm_id} ({vm_type} on {backend}) restored from snapshot {snap} in {allocation_ms} ms"
                ),
                None => writeln!(
                    out,
                    "[ignis] session {session_id}: vm {vm_id} ({vm_type} on {backend}) allocated in {allocation_ms} ms"
                ),
            },
            RunEvent::CommandFinished {
                phase,
                command,
                exit_code,
                ..
            } if exit_code != &Some(0) => {
                writeln!(
                    out,
                    "[ignis] {phase:?} command failed ({exit_code:?}): {command}"
                )
            }
            RunEvent::JobStarted {
                job_id,
                name,
                matrix,
                vm_id,
                ..
            } => {
                st.names.insert(leg_key(job_id, matrix), name.clone());
                writeln!(out, "[{name}] 🚀 job started on {vm_id}")
            }
            RunEvent::StepStarted {
                job_id,
                matrix,
                name,
                stage,
                ..
            } => {
                let n = name_of(&st, job_id, matrix);
                let stage = if *stage == ignis_runner::events::Stage::Main {
                    String::new()
                } else {
                    format!("{stage:?} ")
                };
                writeln!(out, "[{n}] ⭐ {stage}{name}")
            }
            RunEvent::Log {
                job_id,
                matrix,
                line,
                stream,
                ..
            } => {
                let n = name_of(&st, job_id, matrix);
                let depth = st.depth.get(&leg_key(job_id, matrix)).copied().unwrap_or(0);
                let indent = "  ".repeat(depth);
                let mark = if *stream == LogStream::Stderr {
                    "!"
                } else {
                    "|"
                };
                writeln!(out, "[{n}]   {mark} {indent}{line}")
            }
            RunEvent::GroupStarted {
                job_id,
                matrix,
                title,
                ..
            } => {
                let n = name_of(&st, job_id, matrix);
                *st.depth.entry(leg_key(job_id, matrix)).or_default() += 1;
                writeln!(out, "[{n}]   ▼ {title}")
            }
            RunEvent::GroupEnded { job_id, matrix, .. } => {
                let d = st.depth.entry(leg_key(job_id, matrix)).or_default();
                *d = d.saturating_sub(1);
                Ok(())
            }
            RunEvent::Annotation {
                job_id,
                matrix,
                level,
                message,
                file,
                line,
                ..
            } => {
                let n = name_of(&st, job_id, matrix);
                let loc = match (file, line) {
                    (Some(f), Some(l)) => format!(" {f}:{l}"),
                    (Some(f), None) => format!(" {f}"),
                    _ => String::new(),
                };
                let text = format!("{level:?}{loc}: {message}");
                st.annotations.push(format!("[{n}] {text}"));
                writeln!(out, "[{n}]   ❗ {text}")
            }
            RunEvent::StepFinished {
                job_id,
                matrix,
                name,
                outcome,
                conclusion,
                duration_ms,
                kept_from,
                ..
            } => {
                let n = name_of(&st, job_id, matrix);
                let icon = match conclusion {
                    StepResult::Success => "✅",
                    StepResult::Failure => "❌",
                    StepResult::Skipped => "⏭ ",
                    StepResult::Cancelled => "🚫",
                };
                let extra = if outcome != conclusion {
                    format!(" (outcome {})", result_word(*outcome))
                } else {
                    String::new()
                };
                let took = match kept_from {
                    Some(run) => format!("kept from run {run}"),
                    None => format!("{duration_ms} ms"),
                };
                writeln!(
                    out,
                    "[{n}] {icon} {} - {name}{extra} [{took}]",
                    result_word(*conclusion)
                )
            }
            RunEvent::StepSummary {
                job_id,
                matrix,
                markdown,
                ..
            } => {
                let n = name_of(&st, job_id, matrix);
                st.summaries.push((n, markdown.clone()));
                Ok(())
            }
            RunEvent::JobFinished {
                job_id,
                name,
                matrix,
                result,
                duration_ms,
                vm_id,
                ..
            } => {
                st.names.insert(leg_key(job_id, matrix), name.clone());
                st.rows.push(JobRow {
                    name: name.clone(),
                    result: *result,
                    duration_ms: *duration_ms,
                    vm_id: vm_id.clone(),
                });
                let icon = match result {
                    JobResult::Success => "🏁",
                    JobResult::Failure => "💥",
                    JobResult::Skipped => "⏭ ",
                    JobResult::Cancelled => "🚫",
                };
                writeln!(out, "[{name}] {icon} job {}", result.as_str())
            }
            RunEvent::SnapshotCreated {
                vm_id,
                name,
                after,
                ms,
                ..
            } => writeln!(
                out,
                "[ignis] snapshot {name} of vm {vm_id} after {after} ({ms} ms)"
            ),
            RunEvent::SessionReleased { session_id, vm_id } => {
                writeln!(out, "[ignis] session {session_id}: vm {vm_id} released")
            }
            RunEvent::Warning { message } => writeln!(out, "[ignis] warning: {message}"),
            RunEvent::RunFinished {
                result,
                duration_ms,
            } => {
                let _ = writeln!(out);
                let w = st
                    .rows
                    .iter()
                    .map(|r| r.name.chars().count())
                    .max()
                    .unwrap_or(3)
                    .max(3);
                let _ = writeln!(out, "{:<w$}  {:<9}  {:>9}  VM", "JOB", "RESULT", "DURATION");
                for r in &st.rows {
                    let _ = writeln!(
                        out,
                        "{:<w$}  {:<9}  {:>7}ms  {}",
                        r.name,
                        r.result.as_str(),
                        r.duration_ms,
                        if r.vm_id.is_empty() { "-" } else { &r.vm_id }
                    );
                }
                if self.show_summaries && !st.summaries.is_empty() {
                    let _ = writeln!(out, "\nStep summaries:");
                    for (n, md) in &st.summaries {
                        let _ = writeln!(out, "--- {n} ---\n{}", md.trim_end());
                    }
                }
                writeln!(out, "\nrun {} in {duration_ms} ms", result.as_str())
            }
            _ => Ok(()),
        };
    }
}

/// Collects step summaries for `--summary FILE`, whatever printer is active.
#[derive(Debug, Default)]
pub struct SummaryCollector {
    parts: Mutex<Vec<String>>,
}

impl SummaryCollector {
    /// Every step summary of the run, in order, as one markdown document.
    pub fn markdown(&self) -> String {
        self.parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }
}

impl EventSink for SummaryCollector {
    fn event(&self, ev: &Stamped) {
        if let RunEvent::StepSummary { markdown, .. } = &ev.event {
            self.parts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(markdown.clone());
        }
    }
}

/// `--json`: one event object per line on stdout.
#[derive(Debug, Default)]
pub struct JsonPrinter {
    lock: Mutex<()>,
}

impl EventSink for JsonPrinter {
    fn event(&self, ev: &Stamped) {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(line) = serde_json::to_string(ev) {
            let out = std::io::stdout();
            let mut out = out.lock();
            let _ = writeln!(out, "{line}");
        }
    }
}

/// One row of the session timeline.
#[derive(Debug, Clone)]
struct TimelineRow {
    t_ms: u64,
    vm_state: String,
    vm_id: String,
    session_state: String,
    session_id: String,
    action: String,
}

/// `--timeline`: records the session timeline and prints it at the end (stderr, so that it
/// never mixes with `--json`).
#[derive(Debug, Default)]
pub struct TimelinePrinter {
    rows: Mutex<Vec<TimelineRow>>,
}

impl EventSink for TimelinePrinter {
    fn event(&self, ev: &Stamped) {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let mut push =
            |vm_state: &str, vm_id: &str, session_state: &str, session_id: &str, action: String| {
                rows.push(TimelineRow {
                    t_ms: ev.t_ms,
                    vm_state: vm_state.into(),
                    vm_id: vm_id.into(),
                    session_state: session_state.into(),
                    session_id: session_id.into(),
                    action,
                })
            };
        match &ev.event {
            RunEvent::RunStarted { .. } => push("-", "", "Creating", "", "Workflow starts".into()),
            RunEvent::SessionCreated {
                session_id,
                vm_id,
                allocation_ms,
                restored_from,
                ..
            } => push(
                "ALLOCATED",
                vm_id,
                "Active",
                session_id,
                match restored_from {
                    Some(snap) => format!(
                        "VM restored from snapshot {snap} ({allocation_ms} ms), session created, VM bound to session"
                    ),
                    None => format!(
                        "VM allocated ({allocation_ms} ms), session created, VM bound to session"
                    ),
                },
            ),
            RunEvent::CommandStarted {
                phase,
                session_id,
                vm_id,
                command,
            } => push(
                "RUNNING",
                vm_id,
                "Executing",
                session_id,
                format!("{phase:?} command: {command}"),
            ),
            RunEvent::StepStarted {
                job_id,
                step_id,
                name,
                vm_id,
                ..
            } => push(
                "RUNNING",
                vm_id,
                "Executing",
                "",
                format!("Step {job_id}/{step_id}: {name}"),
            ),
            RunEvent::SnapshotCreated {
                session_id,
                vm_id,
                name,
                after,
                ms,
            } => push(
                "RUNNING",
                vm_id,
                "Executing",
                session_id,
                format!("Snapshot {name} after {after} ({ms} ms)"),
            ),
            RunEvent::SessionReleased { session_id, vm_id } => push(
                "RELEASED",
                vm_id,
                "-",
                session_id,
                "VM released, session cleaned up".into(),
            ),
            RunEvent::RunFinished { result, .. } => {
                push("-", "", "Completed", "", format!("Run {}", result.as_str()))
            }
            _ => {}
        }
    }

    fn finish(&self) {
        let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "{:<10} {:<24} {:<24} ACTION",
            "TIME", "VM STATE", "SESSION STATE"
        );
        let _ = writeln!(err, "{}", "─".repeat(90));
        let mut vms = std::collections::BTreeSet::new();
        for r in rows.iter() {
            if !r.vm_id.is_empty() {
                vms.insert(r.vm_id.clone());
            }
            let _ = writeln!(
                err,
                "{:<10} {:<24} {:<24} {}",
                format!("T+{}ms", r.t_ms),
                format!("{} {}", r.vm_state, r.vm_id).trim(),
                format!("{} {}", r.session_state, r.session_id).trim(),
                r.action
            );
        }
        let _ = writeln!(err, "{}", "─".repeat(90));
        let _ = writeln!(err, "Total VMs used: {}", vms.len());
    }
}
