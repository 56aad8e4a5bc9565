//! `ignis list [-W PATH]... [EVENT]`: the jobs that would run, one row per job, with the
//! columns of `act -l` (Stage, Job ID, Job name, Workflow name, Workflow file, Events).
//! Without EVENT every job of every workflow is listed; with EVENT only workflows that the
//! event triggers (filters are checked against `-e` payload when given). `--legs` adds one
//! row per static matrix leg with GitHub's display name. Invalid workflows exit 2 with
//! located errors before anything is listed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ignis_workflow::expr::{EvalContext, Value as ExprValue};
use ignis_workflow::model::Workflow;
use ignis_workflow::plan::{JobMatrix, Plan, PlanOptions, plan};

/// Arguments shared by `ignis list` and `ignis graph` (and `ignis run -l`).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Workflow file or directory (`*.yml`/`*.yaml`, no recursion; default
    /// `.github/workflows`); repeatable.
    #[arg(short = 'W', long = "workflows")]
    pub workflows: Vec<PathBuf>,
    /// Only workflows this event triggers (e.g. push, pull_request); all when omitted.
    pub event: Option<String>,
    /// Event payload JSON file (`github.event`), for branch/path/type filters.
    #[arg(short = 'e', long = "eventpath")]
    pub eventpath: Option<PathBuf>,
    /// Only this job (and the jobs it needs).
    #[arg(short = 'j', long = "job")]
    pub job: Option<String>,
    /// Keep only matrix legs with this value, `key:value` (repeatable, like act).
    #[arg(long = "matrix", value_name = "KEY:VALUE")]
    pub matrix: Vec<String>,
    /// One row per matrix leg, named like GitHub (`build (ubuntu, 18)`).
    #[arg(long)]
    pub legs: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let planned = match plan_all(&args)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    print!("{}", render_table(&planned, args.legs));
    Ok(ExitCode::SUCCESS)
}

/// A workflow file with its plan.
#[derive(Debug)]
pub struct Planned {
    /// The path as given/found.
    pub path: PathBuf,
    /// The parsed workflow.
    pub workflow: Workflow,
    /// Its plan for the requested event (jobs empty when it does not trigger).
    pub plan: Plan,
}

impl Planned {
    /// `name:` or, like act, the file name.
    pub fn workflow_name(&self) -> String {
        self.workflow
            .name
            .clone()
            .unwrap_or_else(|| self.file_name())
    }

    /// The file name (act's "Workflow file" column).
    pub fn file_name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// Loads, validates and plans every workflow. The inner `Err` is the exit code after the
/// located errors have been printed on stderr (2: invalid workflow or usage).
pub fn plan_all(args: &Args) -> anyhow::Result<Result<Vec<Planned>, ExitCode>> {
    let payload: serde_json::Value = match &args.eventpath {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading event payload {}", path.display()))?;
            match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!(
                        "{}:{}:{}: invalid event payload: {e}",
                        path.display(),
                        e.line(),
                        e.column()
                    );
                    return Ok(Err(ExitCode::from(2)));
                }
            }
        }
        None => serde_json::json!({}),
    };
    let mut matrix_filter: Vec<(String, Vec<String>)> = Vec::new();
    for m in &args.matrix {
        let Some((k, v)) = m.split_once(':') else {
            eprintln!("ignis: --matrix expects KEY:VALUE, got '{m}'");
            return Ok(Err(ExitCode::from(2)));
        };
        match matrix_filter.iter_mut().find(|(key, _)| key == k) {
            Some((_, values)) => values.push(v.to_owned()),
            None => matrix_filter.push((k.to_owned(), vec![v.to_owned()])),
        }
    }

    let workflows = match crate::workflows::load_valid(&args.workflows)? {
        Ok(w) => w,
        Err(rendered) => {
            eprintln!("{rendered}");
            return Ok(Err(ExitCode::from(2)));
        }
    };

    let event_name = args.event.as_deref().unwrap_or("");
    let github = serde_json::json!({ "event": payload, "event_name": event_name });
    let ctx = EvalContext::new().with("github", ExprValue::from(github));
    let mut out = Vec::new();
    let mut failed = false;
    let mut job_found = args.job.is_none();
    for (path, workflow) in workflows {
        // `-j` picks the workflows that have the job.
        if let Some(job) = &args.job {
            if !workflow.jobs.contains_key(job) {
                continue;
            }
            job_found = true;
        }
        let options = PlanOptions {
            event: args.event.as_deref(),
            payload: Some(&payload),
            job: args.job.as_deref(),
            matrix_filter: matrix_filter.clone(),
            contexts: Some(&ctx),
            ..PlanOptions::default()
        };
        match plan(&workflow, &options) {
            Ok(plan) => out.push(Planned {
                path,
                workflow,
                plan,
            }),
            Err(e) => {
                // Located errors render as `line:column: message` already.
                match e.location() {
                    Some(_) => eprintln!("{}:{e}", path.display()),
                    None => eprintln!("{}: {e}", path.display()),
                }
                failed = true;
            }
        }
    }
    if failed {
        return Ok(Err(ExitCode::from(2)));
    }
    if !job_found {
        eprintln!(
            "ignis: job '{}' not found in any workflow",
            args.job.as_deref().unwrap_or_default()
        );
        return Ok(Err(ExitCode::from(2)));
    }
    Ok(Ok(out))
}

/// The `act -l` table (plus leg rows with `legs`), columns padded to their widest cell.
pub fn render_table(planned: &[Planned], legs: bool) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "Stage".into(),
        "Job ID".into(),
        "Job name".into(),
        "Workflow name".into(),
        "Workflow file".into(),
        "Events".into(),
    ]];
    // act orders rows by stage across all workflows, declaration order within a stage.
    let mut entries: Vec<(usize, [String; 6])> = Vec::new();
    for p in planned {
        let events = p
            .workflow
            .on
            .events
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        for job in &p.plan.jobs {
            let base = |name: String| {
                (
                    job.stage,
                    [
                        job.stage.to_string(),
                        job.id.clone(),
                        name,
                        p.workflow_name(),
                        p.file_name(),
                        events.clone(),
                    ],
                )
            };
            match &job.matrix {
                JobMatrix::Legs(leg_list) if legs => {
                    entries.extend(leg_list.iter().map(|l| base(l.name.clone())));
                }
                JobMatrix::Deferred if legs => {
                    entries.push(base(format!("{} (matrix from needs)", job.name)));
                }
                _ => {
                    // Like act: the job's `name:` as written, else its id.
                    let raw = p
                        .workflow
                        .jobs
                        .get(&job.id)
                        .and_then(|j| j.name.clone())
                        .unwrap_or_else(|| job.id.clone());
                    entries.push(base(raw));
                }
            }
        }
    }
    entries.sort_by_key(|(stage, _)| *stage);
    rows.extend(entries.into_iter().map(|(_, row)| row));
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKFLOW: &str = r#"
name: ci
on: [push, pull_request]
jobs:
  test:
    needs: lint
    runs-on: ubuntu-latest
    strategy:
      matrix:
        os: [ubuntu, macos]
        node: [18]
    steps:
      - run: echo
  lint:
    runs-on: ubuntu-latest
    steps:
      - run: echo
"#;

    fn planned(event: Option<&str>) -> Planned {
        let workflow = ignis_workflow::parse("ci.yml", WORKFLOW).expect("valid workflow");
        let plan = plan(
            &workflow,
            &PlanOptions {
                event,
                ..PlanOptions::default()
            },
        )
        .expect("plans");
        Planned {
            path: PathBuf::from(".github/workflows/ci.yml"),
            workflow,
            plan,
        }
    }

    #[test]
    fn table_like_act_ordered_by_stage() {
        let table = render_table(&[planned(Some("push"))], false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "Stage  Job ID  Job name  Workflow name  Workflow file  Events"
        );
        assert_eq!(
            lines[1],
            "0      lint    lint      ci             ci.yml         push,pull_request"
        );
        assert!(lines[2].starts_with("1      test    test "));
        assert_eq!(lines.len(), 3);
        let legs = render_table(&[planned(None)], true);
        assert!(legs.contains("test (ubuntu, 18)"), "{legs}");
        assert!(legs.contains("test (macos, 18)"), "{legs}");
        // Not triggered: header only.
        assert_eq!(
            render_table(&[planned(Some("release"))], false)
                .lines()
                .count(),
            1
        );
    }

    #[test]
    fn graph_shows_needs_and_legs() {
        let text = super::super::graph::render_graph(&[planned(None)]);
        assert_eq!(
            text,
            "ci (.github/workflows/ci.yml)\n  stage 0\n    lint\n  stage 1\n    test  <- lint  [2 legs]\n"
        );
    }
}
