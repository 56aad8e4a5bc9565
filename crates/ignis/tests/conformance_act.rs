//! Conformance: every case of `shared/conformance/act` that needs neither Docker nor pwsh,
//! run with `ignis run --json` and compared with act's observed outcome — or GitHub's where
//! act deviates (`github_expected`). A case either passes or is listed in
//! [`EXPECTED_DEVIATIONS`] with the reason; the test fails on any other mismatch, and also
//! when a listed deviation starts passing (so the list stays honest).
//!
//! Procedure (the suite's README): copy `cases/` to a temp dir, gunzip the `prepare` files,
//! `git init` + commit, run each case from that root with the case's event and arguments.

// An integration test crate is a test module already.
#![allow(clippy::tests_outside_test_module)]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Cases where ignis knowingly differs from the recorded expectation, and why.
const EXPECTED_DEVIATIONS: &[(&str, &str)] = &[
    (
        "model/nested",
        "ignis reads -W directories without recursion, like GitHub (act recurses)",
    ),
    (
        "uses-github-noref",
        "`uses: actions/checkout` without @ref is refused at validation (exit 2, no job runs), \
         as GitHub rejects the workflow; act fails the job at run time",
    ),
];

fn suite_dir() -> PathBuf {
    let dir = std::env::var_os("IGNIS_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/act")
        });
    assert!(
        dir.join("cases").is_dir(),
        "conformance suite missing at {}: it must be present to run this test",
        dir.display()
    );
    dir
}

fn sh(cwd: &Path, args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .current_dir(cwd)
        .status()
        .expect("spawn");
    assert!(st.success(), "{args:?} failed in {}", cwd.display());
}

/// Copy `cases/` to a scratch repository, apply `prepare`, commit.
fn prepare(suite: &Path, cases: &[Value]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("repo");
    sh(
        suite,
        &["cp", "-r", "cases", root.to_str().expect("utf-8 path")],
    );
    sh(&root, &["chmod", "-R", "u+w", "."]);
    for case in cases {
        for p in case["prepare"].as_array().into_iter().flatten() {
            let gz = p["gunzip"].as_str().expect("gunzip");
            let to = p["to"].as_str().expect("to");
            let out = Command::new("gunzip")
                .arg("-c")
                .arg(root.join(gz))
                .output()
                .expect("gunzip");
            assert!(out.status.success(), "gunzip {gz}");
            std::fs::write(root.join(to), out.stdout).expect("write prepared file");
        }
    }
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args(args)
            .current_dir(&root)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .expect("git");
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    // act's defaults, which some cases assume (`assumes`): repository nektos/act.
    git(&["remote", "add", "origin", "https://github.com/nektos/act"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "conformance"]);
    tmp
}

#[derive(Debug, Default)]
struct Observed {
    exit: i32,
    jobs: BTreeMap<(String, String), String>,
    steps: BTreeMap<(String, String, String), (String, String)>,
    lines: Vec<String>,
    stderr: String,
}

fn matrix_key(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Object(m) => {
            let sorted: BTreeMap<_, _> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            serde_json::to_string(&sorted).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

fn run_case(ignis: &Path, root: &Path, case: &Value, backend: &str) -> Observed {
    let args = &case["args"];
    let mut cmd = Command::new(ignis);
    cmd.current_dir(root)
        .env("IGNIS_STATE_DIR", state_dir())
        .arg("run")
        .arg(case["event"].as_str().unwrap_or("push"));
    cmd.arg("-W")
        .arg(case["workflow"].as_str().expect("workflow"));
    cmd.args(["--json", "--backend", backend, "-a", "nektos/act"]);
    if let Some(m) = args["inputs"].as_object() {
        for (k, v) in m {
            cmd.arg("--input")
                .arg(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(m) = args["secrets"].as_object() {
        for (k, v) in m {
            cmd.arg("-s")
                .arg(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(m) = args["vars"].as_object() {
        for (k, v) in m {
            cmd.arg("--var")
                .arg(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for (flag, key) in [
        ("--secret-file", "secret_file"),
        ("--env-file", "env_file"),
        ("-e", "event_payload"),
    ] {
        if let Some(p) = args[key].as_str() {
            cmd.arg(flag).arg(p);
        }
    }
    if let Some(m) = args["matrix_filter"].as_object() {
        for (k, vals) in m {
            for v in vals.as_array().into_iter().flatten() {
                cmd.arg("--matrix")
                    .arg(format!("{k}:{}", v.as_str().unwrap_or_default()));
            }
        }
    }
    if let Some(j) = args["job"].as_str() {
        cmd.arg("-j").arg(j);
    }
    cmd.env_remove("SHELL");
    let out = cmd.output().expect("run ignis");
    let mut obs = Observed {
        exit: out.status.code().unwrap_or(-1),
        ..Default::default()
    };
    obs.stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(ev) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let job = ev["job_id"].as_str().unwrap_or_default().to_string();
        let m = matrix_key(&ev["matrix"]);
        match ev["type"].as_str() {
            Some("job_finished") => {
                obs.jobs
                    .insert((job, m), ev["result"].as_str().unwrap_or_default().into());
            }
            Some("step_finished") if ev["stage"] == "Main" => {
                obs.steps.insert(
                    (job, m, ev["step_id"].as_str().unwrap_or_default().into()),
                    (
                        ev["outcome"].as_str().unwrap_or_default().into(),
                        ev["conclusion"].as_str().unwrap_or_default().into(),
                    ),
                );
            }
            Some("log") => obs
                .lines
                .push(ev["line"].as_str().unwrap_or_default().into()),
            _ => {}
        }
    }
    obs
}

/// Mismatches between `obs` and the case (GitHub's expectation where given).
fn compare(case: &Value, obs: &Observed) -> Vec<String> {
    let mut problems = Vec::new();
    let gh = &case["github_expected"];
    let exit = gh["exit"]
        .as_str()
        .or(case["exit"].as_str())
        .unwrap_or("success");
    let ok = obs.exit == 0;
    if ok != (exit == "success") {
        problems.push(format!("exit {} but expected {exit}", obs.exit));
    }
    let overrides: Vec<&Value> = gh["jobs"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    for job in case["jobs"].as_array().into_iter().flatten() {
        if job.get("requires").is_some() || job["result"] == "not-run" {
            continue;
        }
        let id = job["job_id"].as_str().unwrap_or_default();
        let m = matrix_key(&job["matrix"]);
        let ov = overrides
            .iter()
            .find(|o| o["job_id"] == job["job_id"] && matrix_key(&o["matrix"]) == m);
        let want = ov
            .and_then(|o| o["result"].as_str())
            .or(job["result"].as_str())
            .unwrap_or_default();
        match obs.jobs.get(&(id.to_string(), m.clone())) {
            Some(got) if got == want => {}
            got => problems.push(format!("job {id} {m}: got {got:?}, expected {want}")),
        }
        for step in job["steps"].as_array().into_iter().flatten() {
            if step["stage"] != "Main" {
                continue;
            }
            let sid = step["id"].as_str().unwrap_or_default();
            let sov = ov
                .and_then(|o| o["steps"].as_array())
                .and_then(|s| s.iter().find(|x| x["id"] == step["id"]));
            let want_outcome = sov
                .and_then(|s| s["result"].as_str())
                .or(step["result"].as_str())
                .unwrap_or_default();
            let want_conclusion = sov
                .and_then(|s| s["conclusion"].as_str())
                .or(step["conclusion"].as_str());
            match obs.steps.get(&(id.to_string(), m.clone(), sid.to_string())) {
                Some((o, c)) => {
                    if o != want_outcome {
                        problems.push(format!(
                            "step {id}/{sid}: outcome {o}, expected {want_outcome}"
                        ));
                    }
                    if let Some(wc) = want_conclusion
                        && c != wc
                    {
                        problems.push(format!("step {id}/{sid}: conclusion {c}, expected {wc}"));
                    }
                }
                None => problems.push(format!(
                    "step {id}/{sid}: not reported, expected {want_outcome}"
                )),
            }
        }
    }
    let lines: BTreeSet<&str> = obs.lines.iter().map(String::as_str).collect();
    for want in case["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !lines.contains(want) {
            problems.push(format!("output line {want:?} missing"));
        }
    }
    for absent in case["outputs_absent"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if obs.lines.iter().any(|l| l.contains(absent)) {
            problems.push(format!("output contains {absent:?}, which must be masked"));
        }
    }
    problems
}

fn needs_unavailable(case: &Value) -> Option<String> {
    let req: Vec<&str> = case["requires"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !req.is_empty() {
        return Some(format!("requires {}", req.join(" + ")));
    }
    let tools: Vec<&str> = case["host_tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if tools.contains(&"pwsh") {
        return Some("requires pwsh".into());
    }
    None
}

fn backend(ignis: &Path) -> Option<String> {
    if let Ok(b) = std::env::var("IGNIS_CONFORMANCE_BACKEND") {
        return Some(b);
    }
    // Sandbox where the host can run it (root), else the fake backend (host processes).
    let probe = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        probe.path().join("w.yml"),
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: 'true'\n",
    )
    .expect("write");
    for b in ["sandbox", "fake"] {
        let ok = Command::new(ignis)
            .current_dir(probe.path())
            .env("IGNIS_STATE_DIR", state_dir())
            .args(["run", "-W", "w.yml", "--json", "--backend", b])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(b.into());
        }
        eprintln!("conformance: backend {b} unavailable here");
    }
    None
}

#[test]
fn act_conformance_suite() {
    let suite = suite_dir();
    let ignis = PathBuf::from(env!("CARGO_BIN_EXE_ignis"));
    let Some(backend) = backend(&ignis) else {
        eprintln!("skipped: neither the sandbox nor the fake backend works on this host");
        return;
    };
    let mut cases: Vec<Value> = Vec::new();
    let mut stack = vec![suite.join("cases")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "case.json") {
                let text = std::fs::read_to_string(&p).expect("read case");
                cases.push(serde_json::from_str(&text).expect("case json"));
            }
        }
    }
    cases.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    assert!(
        cases.len() >= 60,
        "expected the whole suite, found {} cases",
        cases.len()
    );
    let only = std::env::var("IGNIS_CONFORMANCE_ONLY").ok();
    let scratch = prepare(&suite, &cases);
    let root = scratch.path().join("repo");
    let deviations: BTreeMap<&str, &str> = EXPECTED_DEVIATIONS.iter().copied().collect();
    let (mut passed, mut skipped, mut failures, mut deviating) = (0, 0, Vec::new(), Vec::new());
    for case in &cases {
        let name = case["name"].as_str().unwrap_or_default();
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        if let Some(why) = needs_unavailable(case) {
            eprintln!("conformance: {name}: skipped ({why})");
            skipped += 1;
            continue;
        }
        let obs = run_case(&ignis, &root, case, &backend);
        let problems = compare(case, &obs);
        match (problems.is_empty(), deviations.get(name)) {
            (true, None) => passed += 1,
            (true, Some(_)) => failures.push(format!(
                "{name}: listed as a deviation but now passes; remove it from EXPECTED_DEVIATIONS"
            )),
            (false, Some(why)) => {
                eprintln!(
                    "conformance: {name}: expected deviation ({why}): {}",
                    problems.join("; ")
                );
                deviating.push(name);
            }
            (false, None) => {
                let tail: String = obs
                    .stderr
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" / ");
                failures.push(format!("{name}: {} [stderr: {tail}]", problems.join("; ")));
            }
        }
    }
    eprintln!(
        "conformance on {backend}: {passed} passed, {} expected deviations, {skipped} skipped (docker/pwsh), {} failed",
        deviating.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n")
    );
}

/// ignis's session and run records of these tests, kept out of the machine's state dir.
fn state_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("state-conformance_act")
}
