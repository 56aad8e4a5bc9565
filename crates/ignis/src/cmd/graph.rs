//! `ignis graph [-W PATH]... [EVENT]`: the job DAG as text, one block per workflow. Each job
//! is shown in its display stage (longest chain of needs) with the jobs it needs; a job
//! starts as soon as *its own* needs finish, so stages are a reading aid, not barriers.
//!
//! ```text
//! matrix (.github/workflows/push.yml)
//!   stage 0
//!     prepare
//!   stage 1
//!     build   <- prepare   [3 legs]
//! ```

use std::fmt::Write as _;
use std::process::ExitCode;

use ignis_workflow::plan::JobMatrix;

use super::list::{Args as ListArgs, Planned, plan_all};

pub type Args = ListArgs;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let planned = match plan_all(&args)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    print!("{}", render_graph(&planned));
    Ok(ExitCode::SUCCESS)
}

/// The text graph of every planned workflow that has jobs.
pub fn render_graph(planned: &[Planned]) -> String {
    let mut out = String::new();
    for p in planned.iter().filter(|p| !p.plan.jobs.is_empty()) {
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "{} ({})", p.workflow_name(), p.path.display());
        let width = p
            .plan
            .jobs
            .iter()
            .map(|j| j.id.chars().count())
            .max()
            .unwrap_or(0);
        for (stage, jobs) in p.plan.stages().iter().enumerate() {
            let _ = writeln!(out, "  stage {stage}");
            for &j in jobs {
                let job = &p.plan.jobs[j];
                let mut line = format!("    {:<width$}", job.id);
                if !job.needs.is_empty() {
                    let _ = write!(line, "  <- {}", job.needs.join(", "));
                }
                match &job.matrix {
                    JobMatrix::None => {}
                    JobMatrix::Legs(legs) if legs.len() == 1 => line.push_str("  [1 leg]"),
                    JobMatrix::Legs(legs) => {
                        let _ = write!(line, "  [{} legs]", legs.len());
                    }
                    JobMatrix::Deferred => line.push_str("  [matrix from needs]"),
                }
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
    }
    out
}
