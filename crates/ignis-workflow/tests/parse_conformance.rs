//! Every workflow and action of the act conformance suite (`shared/conformance/act`): the
//! ones act (or GitHub) rejects before running are refused with located diagnostics, every
//! other one parses.
// Integration tests are their own crate: there is no `#[cfg(test)]` module to put them in.
#![allow(clippy::tests_outside_test_module)]

use ignis_workflow::{DiagnosticKind, Diagnostics, parse, parse_action};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Workflow files that must be refused, with why. GitHub's documented behaviour wins where
/// act differs.
const REFUSED: &[(&str, &str)] = &[
    ("model/empty-workflow/push.yml", "empty file"),
    ("model/nested/workflows/fail.yml", "empty file"),
    ("model/invalid-job-name/invalid-1.yml", "invalid job id"),
    ("model/invalid-job-name/invalid-2.yml", "invalid job id"),
    ("issue-1595/missing.yml", "needs names an unknown job"),
    ("issue-1595/no-first.yml", "needs names an unknown job"),
    // act plans this with 0 stages; GitHub rejects a workflow without `on:` as invalid.
    ("issue-1595/no-event.yml", "no `on`"),
    ("job-nil-step/push.yml", "null step"),
    (
        "uses-and-run-in-one-step/push.yml",
        "uses and run in one step",
    ),
    (
        "uses-github-empty/push.yml",
        "step with neither uses nor run",
    ),
    ("uses-github-noref/push.yml", "uses without @ref"),
];

/// Workflow files refused only because they ask for containers (issue 4: no backend can run
/// them yet); every diagnostic must be that refusal.
const CONTAINER_ONLY: &[&str] = &[
    "shells/defaults/push.yml",
    "shells/pwsh/push.yml",
    "shells/bash/push.yml",
    "shells/python/push.yml",
    "shells/sh/push.yml",
];

fn cases_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/act/cases");
    assert!(
        dir.is_dir(),
        "conformance suite not found at {} (shared/ must sit beside the repository)",
        dir.display()
    );
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "case.json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn assert_located(file: &str, source: &str, diags: &Diagnostics) {
    assert!(!diags.is_empty(), "{file}: refused without diagnostics");
    let lines = source.lines().count().max(1);
    for d in diags {
        assert_eq!(d.file, file);
        assert!(
            d.line >= 1 && d.line <= lines + 1 && d.column >= 1,
            "{file}: bad location in `{d}`"
        );
        assert!(
            d.to_string()
                .starts_with(&format!("{file}:{}:{}: ", d.line, d.column))
        );
    }
}

#[test]
fn every_conformance_workflow_parses_or_is_refused_with_located_errors() {
    let dir = cases_dir();
    let mut parsed = 0;
    let mut refused = Vec::new();
    let mut failures = Vec::new();
    for case in case_files(&dir) {
        let meta: Value = serde_json::from_str(&read(&case)).expect("case.json is JSON");
        let files = meta["workflow_files"].as_array().expect("workflow_files");
        for f in files {
            let rel = f.as_str().expect("file name");
            let source = read(&dir.join(rel));
            let result = parse(rel, &source);
            let expect_refused = REFUSED.iter().any(|(r, _)| *r == rel);
            let container_only = CONTAINER_ONLY.contains(&rel);
            match (result, expect_refused, container_only) {
                (Ok(wf), false, false) => {
                    assert!(!wf.jobs.is_empty(), "{rel}: no jobs");
                    parsed += 1;
                }
                (Err(d), true, false) => {
                    assert_located(rel, &source, &d);
                    refused.push(rel.to_owned());
                    eprintln!("{d}");
                }
                (Err(d), false, true) => {
                    assert_located(rel, &source, &d);
                    eprintln!("{d}");
                    for diag in &d {
                        if !(diag.kind == DiagnosticKind::Semantic
                            && diag.message.contains("no available backend"))
                        {
                            failures.push(format!("{rel}: unexpected diagnostic: {diag}"));
                        }
                    }
                }
                (Ok(_), _, _) => failures.push(format!("{rel}: parsed but must be refused")),
                (Err(d), _, _) => failures.push(format!("{rel}: refused:\n{d}")),
            }
        }
        // A case act refuses at planning or dry-run must have a refused file.
        let planner_error = meta["act_expectation"].as_array().is_some_and(|exps| {
            exps.iter().any(|e| {
                e["expects"] == "error" && (e["mode"] == "planner" || e["mode"] == "dry-run")
            })
        });
        if planner_error {
            let any = files
                .iter()
                .filter_map(Value::as_str)
                .any(|f| REFUSED.iter().any(|(r, _)| *r == f));
            if !any {
                failures.push(format!(
                    "{}: act refuses it but no file is in REFUSED",
                    case.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(refused.len(), REFUSED.len(), "refused: {refused:?}");
    assert!(parsed >= 55, "only {parsed} workflows parsed");
}

#[test]
fn the_shared_reusable_workflow_parses() {
    let path = cases_dir().join(".github/workflows/local-reusable-and-dispatch.yml");
    let wf =
        parse("local-reusable-and-dispatch.yml", &read(&path)).unwrap_or_else(|d| panic!("{d}"));
    assert!(wf.on.contains("workflow_call"));
}

#[test]
fn every_conformance_action_parses() {
    let dir = cases_dir();
    let mut stack = vec![dir.clone()];
    let mut count = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .is_some_and(|n| n == "action.yml" || n == "action.yaml")
            {
                let rel = path
                    .strip_prefix(&dir)
                    .expect("inside")
                    .display()
                    .to_string();
                if let Err(d) = parse_action(&rel, &read(&path)) {
                    panic!("{rel} refused:\n{d}");
                }
                count += 1;
            }
        }
    }
    assert!(count >= 20, "only {count} actions found");
}
