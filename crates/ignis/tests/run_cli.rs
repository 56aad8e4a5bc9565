//! `ignis run` end to end through the binary: exit codes, the `--json` event contract of
//! issue 4, masking in the stream, and Ctrl-C (SIGINT) cancellation that still runs
//! `always()` steps and releases the session. Uses the fake backend (agent as a host child
//! process); skips loudly when the `ignis-agent` binary is not built.

// An integration test crate is a test module already.
#![allow(clippy::tests_outside_test_module)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn agent_available() -> bool {
    match ignis_vm::fake::FakeConfig::discover() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipped: no ignis-agent binary for the fake backend: {e}");
            false
        }
    }
}

fn repo(workflow: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = dir.path().join(".github/workflows");
    std::fs::create_dir_all(&wf).expect("mkdir");
    std::fs::write(wf.join("ci.yml"), workflow).expect("write");
    dir
}

fn ignis(dir: &Path, args: &[&str]) -> (i32, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .current_dir(dir)
        .env("IGNIS_STATE_DIR", state_dir())
        .arg("run")
        .args(args)
        .output()
        .expect("run ignis");
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out.status.code().unwrap_or(-1), events)
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

#[test]
fn json_stream_carries_the_documented_events() {
    if !agent_available() {
        return;
    }
    let dir = repo(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - id: hello\n        run: echo \"hi ${{ secrets.PW }}\"\n      - run: echo two\n  b:\n    needs: a\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        n: [1]\n    steps:\n      - run: echo leg-${{ matrix.n }}\n",
    );
    let (code, events) = ignis(
        dir.path(),
        &["--json", "--backend", "fake", "-s", "PW=hunter2-pw"],
    );
    assert_eq!(code, 0);
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e["type"].is_string()),
        "every object has a type"
    );
    let created = of_type(&events, "session_created");
    assert_eq!(created.len(), 1, "one session for the run");
    for f in ["session_id", "vm_id", "vm_type", "backend", "allocation_ms"] {
        assert!(!created[0][f].is_null(), "session_created.{f}");
    }
    let vm = created[0]["vm_id"].clone();
    let phases: Vec<&str> = of_type(&events, "command_finished")
        .iter()
        .filter_map(|e| e["phase"].as_str())
        .collect();
    assert!(phases.contains(&"setup") && phases.contains(&"cleanup"));
    assert!(
        of_type(&events, "command_finished")
            .iter()
            .all(|e| e["vm_id"] == vm && !e["exit_code"].is_null())
    );
    let finished = of_type(&events, "job_finished");
    assert_eq!(finished.len(), 2);
    assert!(
        finished
            .iter()
            .all(|e| e["result"] == "success" && e["session_id"] == created[0]["session_id"])
    );
    let leg = finished.iter().find(|e| e["job_id"] == "b").expect("job b");
    assert_eq!(leg["matrix"], serde_json::json!({"n": 1}));
    assert!(
        finished
            .iter()
            .find(|e| e["job_id"] == "a")
            .is_some_and(|e| e["matrix"].is_null())
    );
    let steps = of_type(&events, "step_finished");
    assert!(steps.iter().any(|e| e["step_id"] == "hello"
        && e["outcome"] == "success"
        && e["conclusion"] == "success"));
    assert!(
        steps
            .iter()
            .any(|e| e["job_id"] == "a" && e["step_id"] == "1"),
        "index ids for steps without id"
    );
    assert!(
        steps
            .iter()
            .all(|e| e["vm_id"] == vm && e["name"].is_string())
    );
    assert!(!of_type(&events, "step_started").is_empty());
    let logs = of_type(&events, "log");
    assert!(
        logs.iter()
            .any(|e| e["line"] == "hi ***" && e["stream"] == "stdout" && e["step_id"] == "hello")
    );
    assert!(
        !serde_json::to_string(&events)
            .expect("json")
            .contains("hunter2-pw")
    );
    assert_eq!(of_type(&events, "session_released").len(), 1);
    assert_eq!(of_type(&events, "run_finished")[0]["result"], "success");
}

#[test]
fn exit_codes_failure_and_invalid() {
    if !agent_available() {
        return;
    }
    let failing = repo(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: exit 3\n",
    );
    let (code, events) = ignis(failing.path(), &["--json", "--backend", "fake"]);
    assert_eq!(code, 1);
    assert_eq!(of_type(&events, "run_finished")[0]["result"], "failure");
    let invalid = repo("on: push\njobs:\n  a:\n    steps: 3\n");
    let (code, events) = ignis(invalid.path(), &["--json", "--backend", "fake"]);
    assert_eq!(code, 2, "invalid workflow");
    assert!(
        of_type(&events, "session_created").is_empty(),
        "no VM for an invalid workflow"
    );
    let (code, events) = ignis(failing.path(), &["--dryrun", "--backend", "fake"]);
    assert_eq!(code, 0, "dry run executes nothing");
    assert!(events.is_empty());
}

#[test]
fn sigint_cancels_runs_always_steps_and_releases() {
    if !agent_available() {
        return;
    }
    let dir = repo(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 60\n      - run: echo not-reached\n      - if: always()\n        run: echo always-ran\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .current_dir(dir.path())
        .env("IGNIS_STATE_DIR", state_dir())
        .args(["run", "--json", "--backend", "fake"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ignis");
    let stdout = child.stdout.take().expect("stdout");
    let mut events = Vec::new();
    let mut signalled = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(ev) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if !signalled && ev["type"] == "step_started" && ev["step_id"] == "0" {
            let ok = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(ok.success());
            signalled = true;
        }
        events.push(ev);
    }
    let status = child.wait().expect("wait");
    assert!(signalled, "the long step started");
    assert_eq!(status.code(), Some(1), "a cancelled run exits 1");
    let logs: Vec<&str> = of_type(&events, "log")
        .iter()
        .filter_map(|e| e["line"].as_str())
        .collect();
    assert!(logs.contains(&"always-ran"));
    assert!(!logs.contains(&"not-reached"));
    assert_eq!(of_type(&events, "job_finished")[0]["result"], "cancelled");
    assert_eq!(
        of_type(&events, "session_released").len(),
        1,
        "released after cancel"
    );
    assert_eq!(of_type(&events, "run_finished")[0]["result"], "cancelled");
}

#[test]
fn step_summaries_go_to_the_summary_file_masked() {
    if !agent_available() {
        return;
    }
    let dir = repo(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"## built with ${{ secrets.K }}\" >> \"$GITHUB_STEP_SUMMARY\"\n",
    );
    let file = dir.path().join("summary.md");
    let file_arg = file.display().to_string();
    let (code, events) = ignis(
        dir.path(),
        &[
            "--json",
            "--backend",
            "fake",
            "-s",
            "K=kval-123",
            "--summary",
            &file_arg,
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(of_type(&events, "step_summary").len(), 1);
    let md = std::fs::read_to_string(&file).expect("summary file");
    assert_eq!(md.trim(), "## built with ***");
}

#[test]
fn graph_flag_prints_the_job_dag_like_ignis_graph() {
    let dir = repo(
        "name: ci\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo a\n  b:\n    needs: a\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        n: [1, 2]\n    steps:\n      - run: echo b\n",
    );
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ignis"))
            .current_dir(dir.path())
            .env("IGNIS_STATE_DIR", state_dir())
            .args(args)
            .output()
            .expect("run ignis");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let g = run(&["run", "-g"]);
    assert_eq!(
        g,
        "ci (.github/workflows/ci.yml)\n  stage 0\n    a\n  stage 1\n    b  <- a  [2 legs]\n"
    );
    assert_eq!(g, run(&["graph", "push"]), "same text as `ignis graph`");
}

/// The sandbox backend where this host can run it (root, user namespaces), else `None`
/// after saying why.
fn sandbox_available(dir: &Path) -> bool {
    let probe = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .current_dir(dir)
        .env("IGNIS_STATE_DIR", state_dir())
        .args(["run", "--json", "--backend", "sandbox", "-W"])
        .arg(dir.join(".github/workflows/probe.yml"))
        .output();
    match probe {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "skipped: the sandbox backend does not run here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("skipped: cannot run ignis: {e}");
            false
        }
    }
}

/// `hashFiles` where GitHub's action metadata allows it: an input's `default` (composite and
/// node actions) and a node action's `post-if`, both computed in the machine over the
/// workspace as it is at that moment. The expected digests are GitHub's definition (SHA-256
/// over each file's SHA-256, in path order) of `one` and of `one` + `two`, worked out
/// independently with Python's hashlib.
#[test]
fn hash_files_in_action_input_defaults_and_post_if_on_the_sandbox() {
    if !agent_available() {
        return;
    }
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("skipped: no node on this host (the sandbox's root is the host's)");
        return;
    }
    const ONE: &str = "fe8d7a873dc48961a6af334c996b2cb3ce37149d5ce9c9253952a54c6a92c1ad";
    const ONE_TWO: &str = "11914c19a28a98c57d12f3cce6c32b7944784f4b4781a706c24eb1dc284e2856";
    // Each job writes the two local actions into its workspace; `$` is kept apart so that
    // ignis does not evaluate the actions' expressions while running the writing step.
    let make_actions = r#"      - run: |
          printf one > a.txt
          mkdir -p comp node
          D='$'
          cat > comp/action.yml <<EOF
          name: comp
          inputs:
            digest:
              default: ${D}{{ hashFiles('a.txt') }}
            given:
              default: ${D}{{ hashFiles('a.txt') }}
          runs:
            using: composite
            steps:
              - run: echo "default=${D}{{ inputs.digest }} given=${D}{{ inputs.given }}"
                shell: sh
          EOF
          cat > node/action.yml <<EOF
          name: node
          inputs:
            digest:
              default: ${D}{{ hashFiles('*.txt') }}
          runs:
            using: node20
            main: main.js
            post: post.js
            post-if: hashFiles('b.txt') != ''
          EOF
          echo 'console.log("main=" + process.env.INPUT_DIGEST)' > node/main.js
          echo 'console.log("post-ran")' > node/post.js
      - uses: ./comp
        with:
          given: explicit
      - id: n
        uses: ./node
"#;
    let workflow = format!(
        "on: push\njobs:\n  yes:\n    runs-on: ubuntu-latest\n    steps:\n{make_actions}      - run: printf two > b.txt\n      - run: echo \"late=${{{{ hashFiles('*.txt') }}}}\"\n  no:\n    needs: yes\n    runs-on: ubuntu-latest\n    steps:\n{make_actions}"
    );
    let dir = repo(&workflow);
    std::fs::write(
        dir.path().join(".github/workflows/probe.yml"),
        "on: push\njobs:\n  p:\n    runs-on: ubuntu-latest\n    steps:\n      - run: 'true'\n",
    )
    .expect("write probe");
    if !sandbox_available(dir.path()) {
        return;
    }
    let (code, events) = ignis(
        dir.path(),
        &[
            "--json",
            "--backend",
            "sandbox",
            "-W",
            ".github/workflows/ci.yml",
        ],
    );
    let lines = |job: &str| -> Vec<String> {
        of_type(&events, "log")
            .iter()
            .filter(|e| e["job_id"] == job)
            .filter_map(|e| e["line"].as_str().map(str::to_string))
            .collect()
    };
    let (yes, no) = (lines("yes"), lines("no"));
    assert_eq!(code, 0, "{yes:#?}\n{no:#?}");
    // Input defaults: digested when the input is not given, the `with:` value otherwise.
    for l in [&yes, &no] {
        assert!(
            l.contains(&format!("default={ONE} given=explicit")),
            "{l:#?}"
        );
        assert!(l.contains(&format!("main={ONE}")), "{l:#?}");
    }
    assert!(yes.contains(&format!("late={ONE_TWO}")), "{yes:#?}");
    // post-if sees the workspace at post time: b.txt exists in job `yes` only.
    let post = |job: &str| {
        of_type(&events, "step_finished")
            .into_iter()
            .find(|e| e["job_id"] == job && e["stage"] == "Post")
            .map(|e| e["conclusion"].clone())
    };
    assert_eq!(post("yes"), Some(Value::from("success")), "{yes:#?}");
    assert!(yes.contains(&"post-ran".to_string()), "{yes:#?}");
    assert_eq!(post("no"), Some(Value::from("skipped")), "{no:#?}");
    assert!(!no.contains(&"post-ran".to_string()), "{no:#?}");
}

/// Runs `workflow` on the fake backend; with `protocol_1`, the agent answers like one built
/// before `ExecWithFiles`/`Which`/`RemoveAll` (an older guest image). Returns the exit code,
/// the setup/cleanup command texts and the log lines.
fn run_fake(workflow: &str, protocol_1: bool) -> (i32, Vec<String>, Vec<String>) {
    let dir = repo(workflow);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ignis"));
    cmd.current_dir(dir.path())
        .env("IGNIS_STATE_DIR", state_dir())
        .args(["run", "--json", "--backend", "fake"]);
    if protocol_1 {
        cmd.env("IGNIS_AGENT_TEST_PROTOCOL_1", "1");
    }
    let out = cmd.output().expect("run ignis");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let texts = |t: &str, f: &str| -> Vec<String> {
        of_type(&events, t)
            .iter()
            .filter_map(|e| e[f].as_str().map(str::to_string))
            .collect()
    };
    (
        out.status.code().unwrap_or(-1),
        texts("command_finished", "command"),
        texts("log", "line"),
    )
}

/// File commands, setup and cleanup give the same results through the one-round-trip
/// requests and through the older requests an agent of an older guest image understands.
#[test]
fn file_commands_work_with_new_and_older_agents() {
    if !agent_available() {
        return;
    }
    let wf = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - id: s\n        run: |\n          echo FROM_ENV=yes >> \"$GITHUB_ENV\"\n          echo out=42 >> \"$GITHUB_OUTPUT\"\n      - run: echo \"env=$FROM_ENV out=${{ steps.s.outputs.out }}\"\n";
    for protocol_1 in [false, true] {
        let (code, commands, lines) = run_fake(wf, protocol_1);
        assert_eq!(code, 0, "protocol_1={protocol_1}: {lines:#?}");
        assert!(
            lines.contains(&"env=yes out=42".to_string()),
            "protocol_1={protocol_1}: {lines:#?}"
        );
        let used = |prefix: &str| commands.iter().any(|c| c.starts_with(prefix));
        if protocol_1 {
            // The older requests: the sh probe and rm -rf (after the refused new ones).
            assert!(used("command -v bash") && used("rm -rf "), "{commands:#?}");
        } else {
            assert!(used("find bash") && used("remove "), "{commands:#?}");
            assert!(!used("rm -rf ") && !used("command -v"), "{commands:#?}");
        }
    }
}

/// ignis's session and run records of these tests, kept out of the machine's state dir.
fn state_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("state-run_cli")
}
