//! `ignis run --resume <run-id>` end to end on the sandbox backend: a failed run is recorded
//! (its id and the exact resume command are printed), the resume restores the failed job's
//! VM from the snapshot taken after its last successful step and continues AT the failed
//! step with the recorded `steps` context, `GITHUB_ENV` and `GITHUB_PATH`; upstream jobs that
//! succeeded are not re-run and downstream `needs` jobs see their recorded outputs. Secret
//! values never reach the record. Skips loudly where the sandbox cannot run.

// An integration test crate is a test module already.
#![allow(clippy::tests_outside_test_module)]

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const SECRET: &str = "s3cr3t-resume-value";

/// Step `first` appends to a counter file inside the VM and hands an env var (holding the
/// secret), a PATH entry and an output to later steps; step `check` fails unless the
/// `FIXED` var is `yes`, which the test passes only on resume.
const WORKFLOW: &str = r#"on: push
jobs:
  up:
    runs-on: ubuntu-latest
    outputs:
      token: ${{ steps.o.outputs.token }}
    steps:
      - id: o
        run: echo "token=up-$$-$RANDOM" >> "$GITHUB_OUTPUT"
  build:
    needs: up
    runs-on: ubuntu-latest
    outputs:
      count: ${{ steps.check.outputs.count }}
    steps:
      - id: first
        run: |
          echo x >> /tmp/ignis-resume-counter
          echo "FROM_FIRST=hello" >> "$GITHUB_ENV"
          echo "SECRET_ENV=${{ secrets.PW }}" >> "$GITHUB_ENV"
          mkdir -p /tmp/ignis-resume-bin
          printf '#!/bin/sh\necho tool-ok\n' > /tmp/ignis-resume-bin/resume-tool
          chmod +x /tmp/ignis-resume-bin/resume-tool
          echo /tmp/ignis-resume-bin >> "$GITHUB_PATH"
          echo "first=one" >> "$GITHUB_OUTPUT"
      - id: check
        env:
          SECRET: ${{ secrets.PW }}
        run: |
          test "${{ vars.FIXED }}" = yes
          test "$SECRET_ENV" = "$SECRET"
          echo "count=$(wc -l < /tmp/ignis-resume-counter)" >> "$GITHUB_OUTPUT"
          echo "env=$FROM_FIRST out=${{ steps.first.outputs.first }} $(resume-tool)"
  down:
    needs: [up, build]
    runs-on: ubuntu-latest
    steps:
      - run: echo "down token=${{ needs.up.outputs.token }} count=${{ needs.build.outputs.count }}"
"#;

struct Out {
    code: i32,
    events: Vec<Value>,
    stderr: String,
}

fn ignis(dir: &Path, state: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .current_dir(dir)
        .env("IGNIS_STATE_DIR", state)
        .arg("run")
        .args(args)
        .output()
        .expect("run ignis");
    Out {
        code: out.status.code().unwrap_or(-1),
        events: String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

fn logs(events: &[Value]) -> Vec<String> {
    of_type(events, "log")
        .iter()
        .filter_map(|e| e["line"].as_str().map(str::to_string))
        .collect()
}

fn started_steps(events: &[Value], job: &str) -> Vec<String> {
    of_type(events, "step_started")
        .iter()
        .filter(|e| e["job_id"] == job)
        .filter_map(|e| e["step_id"].as_str().map(str::to_string))
        .collect()
}

fn job_result(events: &[Value], job: &str) -> Value {
    of_type(events, "job_finished")
        .into_iter()
        .find(|e| e["job_id"] == job)
        .map(|e| e["result"].clone())
        .unwrap_or(Value::Null)
}

/// The run id from "continue it with: ignis run --resume <id>".
fn resume_id(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains("ignis run --resume "))
        .unwrap_or_else(|| panic!("no resume command printed: {stderr}"));
    line.split("--resume ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("run id after --resume")
        .to_string()
}

fn repo(workflow: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = dir.path().join(".github/workflows");
    std::fs::create_dir_all(&wf).expect("mkdir");
    std::fs::write(wf.join("ci.yml"), workflow).expect("write");
    dir
}

/// Every file under `dir`, concatenated.
fn read_tree(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push_str(&String::from_utf8_lossy(
                    &std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    out
}

/// Snapshots the sandbox still holds for run `id` (its stores under /dev/shm are shared by
/// every test).
fn leftover_snapshots(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for store in std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
    {
        if !store
            .file_name()
            .to_string_lossy()
            .starts_with("ignis-sandbox-")
        {
            continue;
        }
        for e in std::fs::read_dir(store.path().join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("ignis-{id}-")) {
                out.push(name);
            }
        }
    }
    out
}

/// The sandbox where this host can run it, else `false` after saying why.
fn sandbox_available(state: &Path) -> bool {
    let dir =
        repo("on: push\njobs:\n  p:\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n");
    let out = ignis(dir.path(), state, &["--json", "--backend", "sandbox"]);
    if out.code == 0 {
        return true;
    }
    eprintln!(
        "skipped: the sandbox backend does not run here: {}",
        out.stderr.trim()
    );
    false
}

#[test]
fn resume_continues_at_the_failed_step_in_the_restored_vm() {
    let state = tempfile::tempdir().expect("state dir");
    if !sandbox_available(state.path()) {
        return;
    }
    let dir = repo(WORKFLOW);
    let pw = format!("PW={SECRET}");
    let first = ignis(
        dir.path(),
        state.path(),
        &[
            "--json",
            "--backend",
            "sandbox",
            "--snapshot-steps",
            "-s",
            &pw,
        ],
    );
    assert_eq!(
        first.code, 1,
        "the run fails at build/check: {}",
        first.stderr
    );
    assert_eq!(job_result(&first.events, "up"), "success");
    assert_eq!(job_result(&first.events, "build"), "failure");
    assert_eq!(job_result(&first.events, "down"), "skipped");
    let snaps = of_type(&first.events, "snapshot_created");
    assert!(
        snaps.iter().any(|s| s["after"] == "build/first"
            && s["name"].is_string()
            && s["vm_id"].is_string()
            && s["session_id"].is_string()
            && s["ms"].is_u64()),
        "a snapshot after build/first: {snaps:?}"
    );
    let up_token = of_type(&first.events, "job_finished")
        .into_iter()
        .find(|e| e["job_id"] == "up")
        .and_then(|e| e["outputs"]["token"].as_str().map(str::to_string))
        .expect("up's token output");
    let id = resume_id(&first.stderr);
    let started = of_type(&first.events, "run_started");
    assert_eq!(
        started[0]["record_id"],
        id.as_str(),
        "--json names the record"
    );
    assert_eq!(started[0]["attempt"], 1);
    assert!(
        first
            .stderr
            .contains(&format!("ignis run --resume {id} -s PW")),
        "the exact command names the secret to give again: {}",
        first.stderr
    );

    // The record holds the secret's name, never its value.
    let run_dir = state.path().join("runs").join(&id);
    let record_text = read_tree(&run_dir);
    assert!(record_text.contains("\"PW\""), "secret name recorded");
    assert!(!record_text.contains(SECRET), "secret value never recorded");
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("record.json")).expect("record.json"),
    )
    .expect("record is json");
    assert_eq!(record["result"], "failure");
    assert_eq!(record["workflows"][0]["jobs"]["up"]["result"], "success");
    let build = &record["workflows"][0]["legs"]["build-0"];
    assert_eq!(build["steps"][0]["conclusion"], "success");
    assert_eq!(build["steps"][1]["conclusion"], "failure");
    assert_eq!(build["snapshots"][0]["after_index"], 0);
    assert_eq!(build["snapshots"][0]["env"]["FROM_FIRST"], "hello");

    // Resume with the var that makes `check` pass.
    let second = ignis(
        dir.path(),
        state.path(),
        &["--json", "--resume", &id, "--var", "FIXED=yes", "-s", &pw],
    );
    assert_eq!(second.code, 0, "resume succeeds: {}", second.stderr);
    assert!(
        started_steps(&second.events, "up").is_empty(),
        "up is not re-run"
    );
    assert_eq!(job_result(&second.events, "up"), "success");
    assert_eq!(
        started_steps(&second.events, "build"),
        ["check"],
        "build continues at its failed step"
    );
    let kept: Vec<(&Value, &Value)> = second
        .events
        .iter()
        .filter(|e| e["type"] == "step_finished" && e["job_id"] == "build")
        .map(|e| (&e["step_id"], &e["kept_from"]))
        .collect();
    assert_eq!(
        kept,
        [
            (&Value::from("first"), &Value::from(id.as_str())),
            (&Value::from("check"), &Value::Null)
        ],
        "the replayed step says which run it is kept from; the run step does not"
    );
    let lines = logs(&second.events);
    assert!(
        lines.iter().any(|l| l.contains("kept from run")),
        "up is shown as kept: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("env=hello out=one tool-ok")),
        "env, steps context and PATH restored: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("down token={up_token} count=1")),
        "downstream sees up's recorded output and the counter from the restored vm (1: step 1 not re-run): {lines:?}"
    );
    let created = of_type(&second.events, "session_created");
    assert_eq!(created.len(), 1, "one vm for the resumed run");
    assert!(
        created[0]["restored_from"]
            .as_str()
            .is_some_and(|s| s.ends_with("build-0-s0")),
        "restored from the step snapshot: {:?}",
        created[0]
    );
    assert!(
        of_type(&first.events, "session_created")[0]
            .get("restored_from")
            .is_none(),
        "a fresh vm says nothing"
    );

    // The succeeded run's snapshots are gone, its record says success, secrets still absent.
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("record.json")).expect("record.json"),
    )
    .expect("record is json");
    assert_eq!(record["result"], "success");
    assert_eq!(record["attempt"], 2);
    assert!(!read_tree(&run_dir).contains(SECRET));
    assert_eq!(
        record["workflows"][0]["legs"]["build-0"]["snapshots"],
        serde_json::json!([]),
        "snapshots removed after success"
    );

    assert_eq!(leftover_snapshots(&id), Vec::<String>::new());

    // Resuming a run that succeeded is refused.
    let again = ignis(dir.path(), state.path(), &["--resume", &id]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("succeeded"), "{}", again.stderr);
}

#[test]
fn resume_restarts_a_job_whose_earlier_steps_changed() {
    let state = tempfile::tempdir().expect("state dir");
    if !sandbox_available(state.path()) {
        return;
    }
    let dir = repo(WORKFLOW);
    let pw = format!("PW={SECRET}");
    let first = ignis(
        dir.path(),
        state.path(),
        &[
            "--json",
            "--backend",
            "sandbox",
            "--snapshot-steps",
            "-s",
            &pw,
        ],
    );
    assert_eq!(first.code, 1, "{}", first.stderr);
    let id = resume_id(&first.stderr);
    // Change step `first`: its snapshot no longer matches the job.
    let changed = WORKFLOW.replace(
        "echo x >> /tmp/ignis-resume-counter",
        "echo y >> /tmp/ignis-resume-counter",
    );
    std::fs::write(dir.path().join(".github/workflows/ci.yml"), changed).expect("edit");
    let second = ignis(
        dir.path(),
        state.path(),
        &["--json", "--resume", &id, "--var", "FIXED=yes", "-s", &pw],
    );
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(started_steps(&second.events, "build"), ["first", "check"]);
    let lines = logs(&second.events);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("starts again from its first step") && l.contains("changed")),
        "the notice says why: {lines:?}"
    );
    assert!(
        started_steps(&second.events, "up").is_empty(),
        "up still kept"
    );
    assert_eq!(
        leftover_snapshots(&id),
        Vec::<String>::new(),
        "a succeeded resume removes the first attempt's snapshots too"
    );
}

#[test]
fn resume_errors_unknown_id() {
    let state = tempfile::tempdir().expect("state dir");
    let dir = repo(WORKFLOW);
    let out = ignis(dir.path(), state.path(), &["--resume", "1234-nope"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no run 1234-nope"), "{}", out.stderr);
    let bad = ignis(dir.path(), state.path(), &["--resume", "../etc"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("invalid run id"), "{}", bad.stderr);
}

#[test]
fn runs_ls_lists_and_rm_removes_a_failed_run_with_its_snapshots() {
    let state = tempfile::tempdir().expect("state dir");
    if !sandbox_available(state.path()) {
        return;
    }
    let dir = repo(WORKFLOW);
    // The profile key asks for step snapshots like --snapshot-steps.
    std::fs::write(
        dir.path().join("ignis.toml"),
        "[profiles.default]\nlabels = [\"ubuntu-latest\"]\nsnapshot-steps = true\n",
    )
    .expect("ignis.toml");
    let first = ignis(
        dir.path(),
        state.path(),
        &["--json", "--backend", "sandbox"],
    );
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert!(
        of_type(&first.events, "snapshot_created")
            .iter()
            .any(|e| e["after"] == "build/first"),
        "snapshot-steps = true in the profile"
    );
    let id = resume_id(&first.stderr);
    assert!(
        !leftover_snapshots(&id).is_empty(),
        "a failed run keeps its snapshots"
    );
    let runs = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ignis"))
            .current_dir(dir.path())
            .env("IGNIS_STATE_DIR", state.path())
            .arg("runs")
            .args(args)
            .output()
            .expect("ignis runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, ls) = runs(&["ls"]);
    assert_eq!(code, 0);
    let row = ls
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} listed: {ls}"));
    assert!(row.contains("failure") && row.contains("sandbox"), "{row}");
    assert!(ls.contains(&format!("ignis run --resume {id}")), "{ls}");
    let (code, _) = runs(&["rm", &id]);
    assert_eq!(code, 0);
    assert_eq!(leftover_snapshots(&id), Vec::<String>::new());
    assert!(!state.path().join("runs").join(&id).exists());
    let (code, _) = runs(&["rm", &id]);
    assert_eq!(code, 2, "unknown run");
}

/// The recorded env holds the secret only as a placeholder: resumed without the secret, the
/// job cannot get its env back, so it starts over (with a notice and a warning naming it).
#[test]
fn resume_without_the_secret_restarts_the_job_and_says_why() {
    let state = tempfile::tempdir().expect("state dir");
    if !sandbox_available(state.path()) {
        return;
    }
    let dir = repo(WORKFLOW);
    let pw = format!("PW={SECRET}");
    let first = ignis(
        dir.path(),
        state.path(),
        &[
            "--json",
            "--backend",
            "sandbox",
            "--snapshot-steps",
            "-s",
            &pw,
        ],
    );
    assert_eq!(first.code, 1, "{}", first.stderr);
    let id = resume_id(&first.stderr);
    let second = ignis(
        dir.path(),
        state.path(),
        &["--json", "--resume", &id, "--var", "FIXED=yes"],
    );
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.stderr.contains("secret(s) PW"),
        "warned: {}",
        second.stderr
    );
    assert_eq!(started_steps(&second.events, "build"), ["first", "check"]);
    let lines = logs(&second.events);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("starts again from its first step") && l.contains("secret PW")),
        "{lines:?}"
    );
    assert_eq!(leftover_snapshots(&id), Vec::<String>::new());
}

/// A profile with `setup` commands gets a snapshot after them by default; a resume restores
/// it instead of running them again.
#[test]
fn resume_restores_the_setup_snapshot_instead_of_running_setup_again() {
    let state = tempfile::tempdir().expect("state dir");
    if !sandbox_available(state.path()) {
        return;
    }
    let dir = repo(
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          test \"${{ vars.FIXED }}\" = yes\n          echo \"setups=$(wc -l < /tmp/ignis-setup-count)\"\n",
    );
    std::fs::write(
        dir.path().join("ignis.toml"),
        "[profiles.default]\nlabels = [\"ubuntu-latest\"]\nsetup = [\"echo ran >> /tmp/ignis-setup-count\"]\n",
    )
    .expect("ignis.toml");
    let first = ignis(
        dir.path(),
        state.path(),
        &["--json", "--backend", "sandbox"],
    );
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert!(
        of_type(&first.events, "snapshot_created")
            .iter()
            .any(|e| e["after"] == "setup"),
        "a setup snapshot by default when the profile has setup commands"
    );
    let id = resume_id(&first.stderr);
    let second = ignis(
        dir.path(),
        state.path(),
        &["--json", "--resume", &id, "--var", "FIXED=yes"],
    );
    assert_eq!(second.code, 0, "{}", second.stderr);
    let created = of_type(&second.events, "session_created");
    assert!(
        created[0]["restored_from"]
            .as_str()
            .is_some_and(|s| s.ends_with("setup")),
        "{:?}",
        created[0]
    );
    assert!(
        !of_type(&second.events, "command_started")
            .iter()
            .any(|e| e["command"]
                .as_str()
                .is_some_and(|c| c.contains("ignis-setup-count"))),
        "the profile's setup is not run again"
    );
    assert!(
        logs(&second.events).iter().any(|l| l == "setups=1"),
        "{:?}",
        logs(&second.events)
    );
    assert_eq!(leftover_snapshots(&id), Vec::<String>::new());

    // Without profile setup commands no snapshot is taken at all.
    let plain =
        repo("on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n");
    let out = ignis(
        plain.path(),
        state.path(),
        &["--json", "--backend", "sandbox"],
    );
    assert_eq!(out.code, 0);
    assert!(of_type(&out.events, "snapshot_created").is_empty());
}
