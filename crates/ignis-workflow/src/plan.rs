//! Planning: does a workflow trigger for an event, which jobs run in which order, and which
//! matrix legs each job has. Pure: the caller supplies the event payload and, while a run
//! goes on, the job results that matrices computed from `needs` depend on.
//!
//! [`plan`] is the entry point for `ignis list`, `ignis graph` and `ignis run`; the pieces
//! are public for the runtime: [`dag::DagState`] schedules jobs as their own needs finish,
//! [`evaluate::evaluate_matrix`] expands a deferred matrix once `needs` are known, and
//! [`evaluate::display_name`] names each leg like GitHub does.

pub mod dag;
pub mod evaluate;
pub mod filter;
pub mod matrix;
pub mod trigger;

use serde_json::Value;

use crate::expr::{self, EvalContext};
use crate::model::{Location, Workflow};
use dag::{Dag, DagError, JobIndex};
use evaluate::{LegNamer, MatrixEvalError, evaluate_matrix, matrix_contexts};
use matrix::{Leg, leg_matches_filter};
use trigger::{TriggerDecision, TriggerError, TriggerInput};

/// Why a workflow cannot be planned. All are user errors (in the workflow or the command
/// line); each carries the location in the workflow file where it applies.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A branch/tag/path filter pattern is invalid. The model keeps no location for `on:`
    /// entries, so the message names the key path (`on.push.branches`) instead.
    #[error("{source}")]
    Trigger {
        /// The filter problem.
        #[source]
        source: TriggerError,
    },
    /// `needs:` does not form a DAG.
    #[error("{location}: {source}")]
    Dag {
        /// The job at fault.
        location: Location,
        /// The graph problem.
        #[source]
        source: DagError,
    },
    /// A matrix cannot be expanded.
    #[error("{location}: job '{job}': {source}")]
    Matrix {
        /// The job whose matrix is wrong.
        job: String,
        /// Where the job is declared.
        location: Location,
        /// The matrix problem.
        #[source]
        source: MatrixEvalError,
    },
    /// `-j` names a job the workflow does not have.
    #[error("job '{job}' not found in the workflow")]
    UnknownJob {
        /// The requested job id.
        job: String,
    },
}

impl PlanError {
    /// Where in the workflow file the error applies, when known.
    pub fn location(&self) -> Option<Location> {
        match self {
            Self::Dag { location, .. } | Self::Matrix { location, .. } => Some(*location),
            Self::Trigger { .. } | Self::UnknownJob { .. } => None,
        }
    }
}

/// What to plan, beyond the workflow itself.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions<'a> {
    /// The event; `None` plans every job regardless of `on:` (`ignis list` without EVENT).
    pub event: Option<&'a str>,
    /// The event payload (`github.event`); `Null` when unknown.
    pub payload: Option<&'a Value>,
    /// The ref to match branch/tag filters against when the payload has none.
    pub git_ref: Option<&'a str>,
    /// Changed files for path filters, overriding the payload.
    pub changed_files: Option<&'a [String]>,
    /// `-j JOB`: plan only this job and the jobs it needs, transitively.
    pub job: Option<&'a str>,
    /// `--matrix key:value` (act): keep only legs whose value for `key` is one of the values.
    pub matrix_filter: Vec<(String, Vec<String>)>,
    /// Contexts available before any job runs (`github`, `inputs`, `vars`), used to expand
    /// matrices that read them and to evaluate job names.
    pub contexts: Option<&'a EvalContext<'a>>,
}

/// The plan for one workflow and event.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Whether (and why not) the workflow triggers; jobs are empty unless it runs.
    pub decision: TriggerDecision,
    /// The selected jobs in declaration order.
    pub jobs: Vec<PlannedJob>,
    /// The dependency graph over `jobs` (indices match).
    pub dag: Dag,
}

impl Plan {
    /// Display layers (see [`Dag::stages`]); scheduling must use [`Dag::state`] instead.
    pub fn stages(&self) -> Vec<Vec<JobIndex>> {
        self.dag.stages()
    }

    /// The number of job runs known now (static legs, one per job without a matrix, one
    /// placeholder per deferred matrix).
    pub fn run_count(&self) -> usize {
        self.jobs
            .iter()
            .map(|j| match &j.matrix {
                JobMatrix::Legs(legs) => legs.len(),
                JobMatrix::None | JobMatrix::Deferred => 1,
            })
            .sum()
    }
}

/// One job of a plan.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    /// The job id.
    pub id: String,
    /// The display name without matrix values (evaluated `name:`, or the id).
    pub name: String,
    /// Where the job is declared.
    pub location: Location,
    /// Direct `needs:` (all inside the plan).
    pub needs: Vec<String>,
    /// Its display stage (see [`Dag::stages`]).
    pub stage: usize,
    /// Its matrix legs.
    pub matrix: JobMatrix,
}

/// The matrix of a planned job.
#[derive(Debug, Clone)]
pub enum JobMatrix {
    /// No `strategy.matrix`: one run.
    None,
    /// The legs, known at plan time (after `--matrix` filtering; may be empty when the
    /// filter removed every leg).
    Legs(Vec<PlannedLeg>),
    /// The matrix reads `needs` (or another run-time context): expand it with
    /// [`evaluate::evaluate_matrix`] once those jobs have finished.
    Deferred,
}

/// One leg of a matrix job.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedLeg {
    /// The `matrix` context of the leg.
    pub values: Leg,
    /// GitHub's display name for it, e.g. `build (ubuntu, 18)`.
    pub name: String,
}

/// Contexts GitHub makes available to `strategy` before any job has run.
const PLAN_TIME_CONTEXTS: [&str; 3] = ["github", "inputs", "vars"];

/// Plans `workflow` for `options`: trigger decision, selected jobs with their static legs,
/// the DAG and display stages.
pub fn plan(workflow: &Workflow, options: &PlanOptions<'_>) -> Result<Plan, PlanError> {
    if let Some(source) = trigger::check_filters(&workflow.on).into_iter().next() {
        return Err(PlanError::Trigger { source });
    }
    let full = Dag::new(
        workflow
            .jobs
            .iter()
            .map(|(id, job)| (id.clone(), job.needs.iter().map(String::as_str))),
    )
    .map_err(|source| PlanError::Dag {
        location: dag_error_location(workflow, &source),
        source,
    })?;

    let null = Value::Null;
    let payload = options.payload.unwrap_or(&null);
    let decision = match options.event {
        None => TriggerDecision::Run,
        Some(event) => {
            let input = TriggerInput {
                event,
                payload,
                git_ref: options.git_ref,
                changed_files: options.changed_files,
            };
            trigger::decide(&workflow.on, &input).map_err(|source| PlanError::Trigger { source })?
        }
    };

    // Which jobs: all, or `-j` plus everything it needs.
    let selected: Vec<JobIndex> = match options.job {
        None => (0..full.len()).collect(),
        Some(id) => {
            let Some(j) = full.index_of(id) else {
                return Err(PlanError::UnknownJob { job: id.to_owned() });
            };
            let mut set = full.ancestors(j);
            set.push(j);
            set.sort_unstable();
            set
        }
    };
    let selected = if decision.runs() {
        selected
    } else {
        Vec::new()
    };

    let default_ctx = EvalContext::new();
    let ctx = options.contexts.unwrap_or(&default_ctx);
    let mut jobs = Vec::with_capacity(selected.len());
    for &j in &selected {
        let id = full.id(j);
        let Some(job) = workflow.jobs.get(id) else {
            continue; // unreachable: the DAG was built from these jobs
        };
        let matrix = job_matrix(job, ctx, &options.matrix_filter, false)?;
        jobs.push(PlannedJob {
            id: id.to_owned(),
            name: plain_name(job, ctx),
            location: job.location,
            needs: job.needs.clone(),
            stage: 0,
            matrix,
        });
    }
    let dag = Dag::new(
        jobs.iter()
            .map(|j| (j.id.clone(), j.needs.iter().map(String::as_str))),
    )
    .map_err(|source| PlanError::Dag {
        location: dag_error_location(workflow, &source),
        source,
    })?;
    for (job, stage) in jobs.iter_mut().zip(dag.stage_of()) {
        job.stage = stage;
    }
    Ok(Plan {
        decision,
        jobs,
        dag,
    })
}

/// A job's matrix legs, with display names and the `--matrix` filter applied.
///
/// At plan time (`run_time == false`) a matrix that reads anything but `github`, `inputs`
/// and `vars` is [`JobMatrix::Deferred`]. The runtime calls this again with
/// `run_time == true` and a `ctx` holding `needs` once the job's needs have finished.
pub fn job_matrix(
    job: &crate::model::Job,
    ctx: &EvalContext<'_>,
    matrix_filter: &[(String, Vec<String>)],
    run_time: bool,
) -> Result<JobMatrix, PlanError> {
    let Some(spec) = job.strategy.as_ref().and_then(|s| s.matrix.as_ref()) else {
        return Ok(JobMatrix::None);
    };
    if !run_time
        && !matrix_contexts(spec)
            .iter()
            .all(|c| PLAN_TIME_CONTEXTS.contains(&c.as_str()))
    {
        return Ok(JobMatrix::Deferred);
    }
    let legs = evaluate_matrix(spec, ctx).map_err(|source| PlanError::Matrix {
        job: job.id.clone(),
        location: job.location,
        source,
    })?;
    let namer = LegNamer::new(job);
    Ok(JobMatrix::Legs(
        legs.into_iter()
            .filter(|leg| leg_matches_filter(leg, matrix_filter))
            .map(|leg| PlannedLeg {
                name: namer.name(Some(&leg), ctx),
                values: leg,
            })
            .collect(),
    ))
}

/// The job name without matrix values: `name:` evaluated when it reads no `matrix`,
/// otherwise as written; the job id when there is no `name:`.
fn plain_name(job: &crate::model::Job, ctx: &EvalContext<'_>) -> String {
    let Some(raw) = job.name.as_deref() else {
        return job.id.clone();
    };
    match expr::parse_template(raw) {
        Ok(t) if !t.referenced_contexts().contains("matrix") => {
            t.evaluate_string(ctx).unwrap_or_else(|_| raw.to_owned())
        }
        _ => raw.to_owned(),
    }
}

fn dag_error_location(workflow: &Workflow, err: &DagError) -> Location {
    let job = match err {
        DagError::DuplicateJob { job } | DagError::UnknownNeed { job, .. } => job,
        DagError::Cycle { cycle } => match cycle.first() {
            Some(j) => j,
            None => return Location::new(1, 1),
        },
    };
    workflow
        .jobs
        .get(job)
        .map_or(Location::new(1, 1), |j| j.location)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf(src: &str) -> Workflow {
        match crate::parse("test.yml", src) {
            Ok(w) => w,
            Err(d) => panic!("test workflow must parse: {d}"),
        }
    }

    const MATRIX: &str = r#"
name: m
on:
  push:
    branches: [main]
jobs:
  prepare:
    runs-on: ubuntu-latest
    outputs:
      m: ${{ steps.s.outputs.m }}
    steps:
      - id: s
        run: echo "m={}" >> "$GITHUB_OUTPUT"
  build:
    needs: prepare
    runs-on: ${{ matrix.os }}
    strategy:
      matrix:
        os: [ubuntu, macos]
        node: [18, 20]
        exclude:
          - os: macos
            node: 18
    steps:
      - run: echo hi
  dynamic:
    needs: [prepare]
    runs-on: ubuntu-latest
    strategy:
      matrix: ${{ fromJSON(needs.prepare.outputs.m) }}
    steps:
      - run: echo hi
  last:
    name: Last ${{ github.ref_name }}
    needs: [build, dynamic]
    runs-on: ubuntu-latest
    steps:
      - run: echo hi
"#;

    #[test]
    fn plans_legs_stages_and_deferred_matrices() {
        let w = wf(MATRIX);
        let payload = serde_json::json!({"ref": "refs/heads/main"});
        let ctx = EvalContext::new().with(
            "github",
            expr::Value::from(serde_json::json!({"ref_name": "main"})),
        );
        let p = plan(
            &w,
            &PlanOptions {
                event: Some("push"),
                payload: Some(&payload),
                contexts: Some(&ctx),
                ..PlanOptions::default()
            },
        )
        .expect("plan");
        assert!(p.decision.runs());
        let ids: Vec<&str> = p.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["prepare", "build", "dynamic", "last"]);
        assert_eq!(
            p.jobs.iter().map(|j| j.stage).collect::<Vec<_>>(),
            [0, 1, 1, 2]
        );
        let JobMatrix::Legs(legs) = &p.jobs[1].matrix else {
            panic!("build has a static matrix");
        };
        let names: Vec<&str> = legs.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "build (ubuntu, 18)",
                "build (ubuntu, 20)",
                "build (macos, 20)"
            ]
        );
        assert!(matches!(p.jobs[2].matrix, JobMatrix::Deferred));
        assert_eq!(p.jobs[3].name, "Last main");
        assert_eq!(p.run_count(), 1 + 3 + 1 + 1);

        // A push to another branch does not trigger.
        let other = serde_json::json!({"ref": "refs/heads/dev"});
        let p = plan(
            &w,
            &PlanOptions {
                event: Some("push"),
                payload: Some(&other),
                ..PlanOptions::default()
            },
        )
        .expect("plan");
        assert_eq!(p.decision, TriggerDecision::Ref("dev".into()));
        assert!(p.jobs.is_empty());
    }

    #[test]
    fn deferred_matrix_expands_at_run_time() {
        let w = wf(MATRIX);
        let job = &w.jobs["dynamic"];
        let plan_ctx = EvalContext::new();
        assert!(matches!(
            job_matrix(job, &plan_ctx, &[], false),
            Ok(JobMatrix::Deferred)
        ));
        let needs = serde_json::json!({"prepare": {"result": "success", "outputs": {"m": "{\"shard\": [1, 2, 3]}"}}});
        let ctx = EvalContext::new().with("needs", expr::Value::from(needs));
        let Ok(JobMatrix::Legs(legs)) = job_matrix(job, &ctx, &[], true) else {
            panic!("expands once needs are known");
        };
        let names: Vec<&str> = legs.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["dynamic (1)", "dynamic (2)", "dynamic (3)"]);
        // Without the needs outputs, fromJSON('') fails: a located, typed error.
        let err = job_matrix(job, &plan_ctx, &[], true).expect_err("no needs");
        assert!(
            matches!(err, PlanError::Matrix { ref job, .. } if job == "dynamic"),
            "{err}"
        );
    }

    #[test]
    fn job_and_matrix_filters() {
        let w = wf(MATRIX);
        let p = plan(
            &w,
            &PlanOptions {
                job: Some("build"),
                matrix_filter: vec![("node".into(), vec!["20".into()])],
                ..PlanOptions::default()
            },
        )
        .expect("plan");
        let ids: Vec<&str> = p.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["prepare", "build"], "-j keeps the jobs it needs");
        let JobMatrix::Legs(legs) = &p.jobs[1].matrix else {
            panic!("static matrix");
        };
        assert_eq!(legs.len(), 2);
        assert!(legs.iter().all(|l| l.values["node"] == 20));
        let err = plan(
            &w,
            &PlanOptions {
                job: Some("nope"),
                ..PlanOptions::default()
            },
        )
        .expect_err("unknown job");
        assert_eq!(err, PlanError::UnknownJob { job: "nope".into() });
    }

    #[test]
    fn invalid_filter_patterns_fail_the_plan() {
        // `parse` already refuses bad patterns (located); a model built another way still
        // fails the plan.
        let mut w = wf(
            "on:\n  push:\n    branches: [main]\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n",
        );
        let Some(crate::model::Trigger::Push(filters)) = w.on.events.get_mut("push") else {
            panic!("push trigger expected");
        };
        filters.branches = Some(vec!["[z-a]".to_owned()]);
        let err = plan(&w, &PlanOptions::default()).expect_err("bad pattern");
        assert_eq!(err.location(), None);
        assert!(
            err.to_string()
                .starts_with("on.push.branches: invalid filter pattern '[z-a]'"),
            "{err}"
        );
    }

    #[test]
    fn matrix_errors_are_located_at_the_job() {
        let w = wf(r#"
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    strategy:
      matrix: ${{ fromJSON('{"os":[]}') }}
    steps:
      - run: echo
"#);
        let err = plan(&w, &PlanOptions::default()).expect_err("empty vector");
        assert_eq!(err.location(), Some(Location::new(4, 3)));
        assert_eq!(
            err.to_string(),
            "4:3: job 'a': matrix vector 'os' does not contain any values"
        );
    }
}
