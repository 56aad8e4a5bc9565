//! Plans every workflow of the act conformance suite (`shared/conformance/act/cases`) that act
//! loaded and ran, and checks the planned jobs and static matrix legs against `case.json`
//! (`github_expected` wins where act deviates from GitHub).

// An integration test file is a test module of its own; the workspace lint targets unit tests.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ignis_workflow::expr::{EvalContext, Value as ExprValue};
use ignis_workflow::plan::{JobMatrix, PlanOptions, plan};
use serde_json::{Value, json};

fn cases_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/act/cases");
    assert!(
        root.is_dir(),
        "conformance suite missing: expected {} (shared/ beside the repository)",
        root.display()
    );
    root
}

fn case_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            case_files(&path, out);
        } else if path.file_name().is_some_and(|n| n == "case.json") {
            out.push(path);
        }
    }
}

/// Canonical text of a leg (keys sorted) so legs compare regardless of key order.
fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map_or_else(|| v.clone(), |f| json!(f as i64)),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

/// Expected runs per job id: the case's `jobs`, with `github_expected` entries replacing
/// act's where given. Jobs of called reusable workflows (`called_by`) are not this
/// workflow's jobs.
fn expected_runs(case: &Value) -> BTreeMap<String, Vec<String>> {
    let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let overrides: Vec<&Value> = case
        .pointer("/github_expected/jobs")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    for job in case["jobs"].as_array().into_iter().flatten() {
        if job.get("called_by").is_some() {
            continue;
        }
        let id = job["job_id"].as_str().unwrap_or_default().to_owned();
        let matrix = overrides
            .iter()
            .find(|o| o["job_id"] == job["job_id"] && o["matrix"] == job["matrix"])
            .map_or(&job["matrix"], |o| &o["matrix"]);
        runs.entry(id).or_default().push(canonical(matrix));
    }
    for list in runs.values_mut() {
        list.sort();
    }
    runs
}

/// Cases act ran successfully that ignis refuses on purpose, with the reason. The test
/// checks they are still refused, so this list cannot go stale silently.
const KNOWN_REFUSALS: &[(&str, &str)] = &[];

#[test]
fn every_conformance_workflow_act_ran_plans_like_act() {
    let root = cases_root();
    let mut files = Vec::new();
    case_files(&root, &mut files);
    assert!(
        files.len() >= 60,
        "expected the whole suite, found {} cases",
        files.len()
    );
    let mut planned = 0;
    let mut matrices_checked = 0;
    let mut failures = Vec::new();
    for case_path in &files {
        let case: Value =
            serde_json::from_str(&std::fs::read_to_string(case_path).expect("read case.json"))
                .expect("case.json is JSON");
        let name = case["name"].as_str().unwrap_or("?").to_owned();
        let expected = expected_runs(&case);
        if expected.is_empty() {
            // act refused or never ran the workflow (invalid files are the parser's tests).
            continue;
        }
        let requires = case.get("requires").is_some();
        // act ran it to the end (or would have, given docker/pwsh): it must plan. Other
        // cases with jobs are planned when they parse; act failed on them too.
        let must_plan = case["exit"] == "success" || case["exit_if_requirements_met"] == "success";
        let known_refusal = KNOWN_REFUSALS.iter().find(|(n, _)| *n == name);
        let args = &case["args"];
        let event = case["event"].as_str().unwrap_or("push");
        let payload: Value = match args.get("event_payload").and_then(Value::as_str) {
            Some(p) => {
                serde_json::from_str(&std::fs::read_to_string(root.join(p)).expect("payload"))
                    .expect("payload is JSON")
            }
            None => json!({}),
        };
        let matrix_filter: Vec<(String, Vec<String>)> = args
            .get("matrix_filter")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let vals = v.as_array().into_iter().flatten().filter_map(Value::as_str);
                        (k.clone(), vals.map(str::to_owned).collect())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let ctx = EvalContext::new()
            .with(
                "github",
                ExprValue::from(
                    json!({"event": payload, "event_name": event, "ref": "refs/heads/main"}),
                ),
            )
            .with(
                "inputs",
                ExprValue::from(args.get("inputs").cloned().unwrap_or(json!({}))),
            );

        let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut deferred = Vec::new();
        let mut skipped = false;
        for wf_file in case["workflow_files"].as_array().into_iter().flatten() {
            let rel = wf_file.as_str().unwrap_or_default();
            let source = std::fs::read_to_string(root.join(rel)).expect("read workflow");
            let workflow = match ignis_workflow::parse(rel, &source) {
                Ok(w) => w,
                Err(diags) if requires => {
                    eprintln!(
                        "skipped: {name}: needs {} which ignis refuses today: {diags}",
                        case["requires"]
                    );
                    skipped = true;
                    break;
                }
                Err(diags) if known_refusal.is_some() || !must_plan => {
                    let why = known_refusal.map_or("act failed on it too", |(_, why)| why);
                    eprintln!("refused as expected: {name}: {why}: {diags}");
                    skipped = true;
                    break;
                }
                Err(diags) => {
                    failures.push(format!("{name}: {rel} does not parse:\n{diags}"));
                    skipped = true;
                    break;
                }
            };
            let options = PlanOptions {
                event: Some(event),
                payload: Some(&payload),
                job: args.get("job").and_then(Value::as_str),
                matrix_filter: matrix_filter.clone(),
                contexts: Some(&ctx),
                ..PlanOptions::default()
            };
            let p = match plan(&workflow, &options) {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{name}: {rel}: plan failed: {e}"));
                    skipped = true;
                    break;
                }
            };
            planned += 1;
            if known_refusal.is_some() {
                failures.push(format!("{name}: listed in KNOWN_REFUSALS but now parses"));
            }
            if !p.decision.runs() {
                failures.push(format!(
                    "{name}: {rel} does not trigger for {event}: {:?}",
                    p.decision
                ));
                continue;
            }
            for job in &p.jobs {
                let legs: Vec<String> = match &job.matrix {
                    JobMatrix::None => vec![canonical(&Value::Null)],
                    JobMatrix::Legs(legs) => legs
                        .iter()
                        .map(|l| canonical(&Value::Object(l.values.clone())))
                        .collect(),
                    // Reads job outputs: expanded by the runtime (see the unit tests).
                    JobMatrix::Deferred => {
                        deferred.push(job.id.clone());
                        continue;
                    }
                };
                got.entry(job.id.clone()).or_default().extend(legs);
            }
        }
        if skipped {
            continue;
        }
        for list in got.values_mut() {
            list.sort();
        }
        let got_ids: Vec<&String> = got.keys().chain(&deferred).collect();
        for id in expected.keys() {
            if !got_ids.contains(&id) {
                failures.push(format!("{name}: job '{id}' missing from the plan"));
            }
        }
        for (id, runs) in &got {
            match expected.get(id) {
                None => failures.push(format!(
                    "{name}: planned job '{id}' that act did not report"
                )),
                Some(want) if want != runs => {
                    failures.push(format!(
                        "{name}: job '{id}': planned {runs:?}, expected {want:?}"
                    ));
                }
                Some(want) => {
                    if want.len() > 1 || want.first().is_some_and(|w| w != "null") {
                        matrices_checked += 1;
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("planned {planned} workflows; {matrices_checked} static matrices matched case.json");
    assert!(planned >= 50, "only {planned} workflows planned");
    assert!(
        matrices_checked >= 8,
        "only {matrices_checked} static matrices checked"
    );
}
