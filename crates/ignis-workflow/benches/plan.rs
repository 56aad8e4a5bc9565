//! Parse + validate + plan every workflow of the act conformance suite
//! (`shared/conformance/act/cases`, located from `CARGO_MANIFEST_DIR`), one benchmark per
//! workflow file (`parse_validate_plan/*`), the planner alone on each valid parsed workflow
//! (`plan_only/*`), and the whole suite per iteration (`whole_suite`). Criterion's median
//! per benchmark is the number reported in `BENCHMARKS.md`.
//!
//! Run: `cargo bench -p ignis-workflow --bench plan -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use ignis_workflow::plan::{PlanOptions, plan};

/// Every workflow file the suite's cases load (`case.json` `workflow_files`), sorted.
fn workflows() -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/act/cases");
    assert!(
        root.is_dir(),
        "conformance suite missing at {}",
        root.display()
    );
    let mut cases = Vec::new();
    collect(&root, &mut cases);
    let mut out: Vec<(String, String, String)> = Vec::new();
    for case in cases {
        let text = std::fs::read_to_string(&case).expect("read case.json");
        let json: serde_json::Value = serde_json::from_str(&text).expect("case.json is JSON");
        let event = json["event"].as_str().unwrap_or("push").to_owned();
        for file in json["workflow_files"].as_array().into_iter().flatten() {
            let Some(rel) = file.as_str() else { continue };
            if out.iter().any(|(r, _, _)| r == rel) {
                continue;
            }
            let source = std::fs::read_to_string(root.join(rel)).expect("read workflow");
            out.push((rel.to_owned(), source, event.clone()));
        }
    }
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.file_name().is_some_and(|n| n == "case.json") {
            out.push(path);
        }
    }
}

/// What the CLI does before anything runs: parse (with validation) and plan.
fn parse_and_plan(file: &str, source: &str, event: &str) -> usize {
    match ignis_workflow::parse(file, source) {
        Ok(workflow) => {
            let options = PlanOptions {
                event: Some(event),
                ..PlanOptions::default()
            };
            plan(&workflow, &options).map_or(0, |p| p.run_count())
        }
        // Invalid workflows are refused by validation: that is their whole cost.
        Err(diags) => diags.len(),
    }
}

fn bench(c: &mut Criterion) {
    let all = workflows();
    let mut group = c.benchmark_group("parse_validate_plan");
    for (file, source, event) in &all {
        group.bench_function(file.as_str(), |b| {
            b.iter(|| parse_and_plan(black_box(file), black_box(source), event));
        });
    }
    group.finish();

    // The planner alone, on the already parsed valid workflows: what `plan()` adds to parsing.
    let parsed: Vec<(String, ignis_workflow::model::Workflow, String)> = all
        .iter()
        .filter_map(|(file, source, event)| {
            ignis_workflow::parse(file, source)
                .ok()
                .map(|w| (file.clone(), w, event.clone()))
        })
        .collect();
    let mut group = c.benchmark_group("plan_only");
    for (file, workflow, event) in &parsed {
        group.bench_function(file.as_str(), |b| {
            b.iter(|| {
                let options = PlanOptions {
                    event: Some(event),
                    ..PlanOptions::default()
                };
                plan(black_box(workflow), &options).map_or(0, |p| p.run_count())
            });
        });
    }
    group.finish();

    c.bench_function("whole_suite", |b| {
        b.iter(|| {
            all.iter()
                .map(|(file, source, event)| {
                    parse_and_plan(black_box(file), black_box(source), event)
                })
                .sum::<usize>()
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
