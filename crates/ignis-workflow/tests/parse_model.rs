//! The typed model built from each form the workflow syntax allows.
// Integration tests are their own crate: there is no `#[cfg(test)]` module to put them in.
#![allow(clippy::tests_outside_test_module)]

use ignis_workflow::model::*;
use ignis_workflow::{parse, parse_action};
use serde_json::json;

fn ok(src: &str) -> Workflow {
    parse("wf.yml", src).unwrap_or_else(|d| panic!("{d}"))
}

const JOB: &str = "jobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n";

#[test]
fn on_string_list_and_map() {
    let w = ok(&format!("on: push\n{JOB}"));
    assert_eq!(
        w.on.get("push"),
        Some(&Trigger::Push(RefFilters::default()))
    );
    let w = ok(&format!("on: [push, pull_request, issues]\n{JOB}"));
    let names: Vec<&str> = w.on.events.keys().map(String::as_str).collect();
    assert_eq!(names, ["push", "pull_request", "issues"]);
    let w = ok(&format!(
        "on:\n  push:\n    branches: [main, 'releases/**']\n    tags-ignore: ['v1*']\n    paths: ['src/**']\n  pull_request_target:\n    types: [opened]\n    branches-ignore: [dev]\n  issues:\n    types: [opened, labeled]\n  workflow_run:\n    workflows: [CI]\n    types: [completed]\n  schedule:\n    - cron: '0 3 * * 1'\n{JOB}"
    ));
    let Some(Trigger::Push(p)) = w.on.get("push") else {
        panic!("push")
    };
    assert_eq!(
        p.branches.as_deref(),
        Some(&["main".to_owned(), "releases/**".to_owned()][..])
    );
    assert_eq!(p.tags_ignore.as_deref(), Some(&["v1*".to_owned()][..]));
    assert_eq!(p.paths_ignore, None);
    let Some(Trigger::PullRequestTarget(pr)) = w.on.get("pull_request_target") else {
        panic!("prt")
    };
    assert_eq!(pr.types, ["opened"]);
    assert_eq!(pr.branches_ignore.as_deref(), Some(&["dev".to_owned()][..]));
    let Some(Trigger::Other(issues)) = w.on.get("issues") else {
        panic!("issues")
    };
    assert_eq!(issues.types, ["opened", "labeled"]);
    let Some(Trigger::Other(run)) = w.on.get("workflow_run") else {
        panic!("workflow_run")
    };
    assert_eq!(
        run.config,
        json!({"workflows": ["CI"], "types": ["completed"]})
    );
    assert_eq!(
        w.on.get("schedule"),
        Some(&Trigger::Schedule(vec![Schedule {
            cron: "0 3 * * 1".into(),
            timezone: None
        }]))
    );
}

#[test]
fn workflow_dispatch_and_call_inputs() {
    let w = ok(&format!(
        "on:\n  workflow_dispatch:\n    inputs:\n      level:\n        type: choice\n        options: [info, debug]\n        default: info\n      dry:\n        type: boolean\n        default: true\n      n:\n        type: number\n        required: true\n      env:\n        type: environment\n  workflow_call:\n    inputs:\n      x:\n        type: number\n        default: 3\n    outputs:\n      out:\n        value: ${{{{ jobs.a.outputs.o }}}}\n    secrets:\n      token:\n        required: true\n      other:\n{JOB}"
    ));
    let Some(Trigger::WorkflowDispatch(d)) = w.on.get("workflow_dispatch") else {
        panic!("dispatch")
    };
    assert_eq!(d.inputs["level"].input_type, DispatchInputType::Choice);
    assert_eq!(d.inputs["level"].options, ["info", "debug"]);
    assert_eq!(d.inputs["level"].default, Some(json!("info")));
    assert_eq!(d.inputs["dry"].default, Some(json!(true)));
    assert!(d.inputs["n"].required);
    assert_eq!(d.inputs["env"].input_type, DispatchInputType::Environment);
    assert_eq!(d.inputs["level"].location, Location::new(4, 7));
    let Some(Trigger::WorkflowCall(c)) = w.on.get("workflow_call") else {
        panic!("call")
    };
    assert_eq!(c.inputs["x"].input_type, CallInputType::Number);
    assert_eq!(c.inputs["x"].default, Some(json!(3)));
    assert_eq!(c.outputs["out"].value, "${{ jobs.a.outputs.o }}");
    assert!(c.secrets["token"].required);
    assert!(!c.secrets["other"].required);
}

#[test]
fn workflow_level_keys() {
    let w = ok(&format!(
        "name: CI\nrun-name: deploy ${{{{ github.ref }}}}\non: push\npermissions:\n  contents: read\n  id-token: write\nenv:\n  A: 1\n  B: true\n  C: text\ndefaults:\n  run:\n    shell: bash\n    working-directory: src\nconcurrency:\n  group: ci-${{{{ github.ref }}}}\n  cancel-in-progress: true\n{JOB}"
    ));
    assert_eq!(w.name.as_deref(), Some("CI"));
    assert_eq!(w.run_name.as_deref(), Some("deploy ${{ github.ref }}"));
    let Some(Permissions::Scopes(p)) = &w.permissions else {
        panic!("perms")
    };
    assert_eq!(p["id-token"], PermissionLevel::Write);
    assert_eq!(w.env["A"], json!(1));
    assert_eq!(env_string(&w.env["A"]), "1");
    assert_eq!(env_string(&w.env["B"]), "true");
    assert_eq!(w.env["C"], json!("text"));
    let run = w.defaults.and_then(|d| d.run).expect("defaults.run");
    assert_eq!(run.shell.as_deref(), Some("bash"));
    assert_eq!(run.working_directory.as_deref(), Some("src"));
    let c = w.concurrency.expect("concurrency");
    assert_eq!(c.cancel_in_progress, Some(BoolExpr::Literal(true)));
    let w = ok(&format!(
        "on: push\npermissions: read-all\nconcurrency: one\n{JOB}"
    ));
    assert_eq!(w.permissions, Some(Permissions::ReadAll));
    assert_eq!(w.concurrency.map(|c| c.group).as_deref(), Some("one"));
}

#[test]
fn job_forms() {
    let w = ok(
        "on: push\njobs:\n  first:\n    runs-on: [self-hosted, linux]\n    steps: [{run: echo}]\n  b:\n    name: B ${{ matrix.os }}\n    needs: first\n    if: github.event_name == 'push'\n    runs-on:\n      group: big\n      labels: gpu\n    environment:\n      name: prod\n      url: https://x\n    outputs:\n      o: ${{ steps.s.outputs.o }}\n    timeout-minutes: 10\n    continue-on-error: ${{ matrix.experimental }}\n    strategy:\n      fail-fast: false\n      max-parallel: 2\n      matrix:\n        os: [a, b]\n        node: [18, 20]\n        include:\n          - os: c\n            experimental: true\n        exclude:\n          - os: a\n            node: 18\n    steps:\n      - id: s\n        name: S\n        uses: ./local\n        with:\n          n: 1\n        env:\n          E: x\n        if: always()\n        continue-on-error: true\n        timeout-minutes: 2\n  c:\n    needs: [first, b]\n    runs-on: ${{ inputs.runner }}\n    environment: staging\n    strategy:\n      matrix: ${{ fromJSON(needs.b.outputs.o) }}\n    steps:\n      - run: make\n        shell: bash\n        working-directory: src\n",
    );
    let ids: Vec<&str> = w.jobs.keys().map(String::as_str).collect();
    assert_eq!(ids, ["first", "b", "c"]);
    let first = &w.jobs["first"];
    assert_eq!(
        first.runs_on,
        Some(RunsOn::Labels(vec!["self-hosted".into(), "linux".into()]))
    );
    assert_eq!(first.location, Location::new(3, 3));
    let b = &w.jobs["b"];
    assert_eq!(b.needs, ["first"]);
    assert_eq!(b.condition.as_deref(), Some("github.event_name == 'push'"));
    assert_eq!(
        b.runs_on,
        Some(RunsOn::Group {
            group: Some("big".into()),
            labels: vec!["gpu".into()]
        })
    );
    assert_eq!(
        b.environment.as_ref().and_then(|e| e.url.as_deref()),
        Some("https://x")
    );
    assert_eq!(b.timeout_minutes, Some(NumberExpr::Literal(10.0)));
    assert_eq!(
        b.continue_on_error,
        Some(BoolExpr::Expr("${{ matrix.experimental }}".into()))
    );
    let s = b.strategy.as_ref().expect("strategy");
    assert_eq!(s.fail_fast, Some(BoolExpr::Literal(false)));
    let Some(MatrixSpec::Matrix(m)) = &s.matrix else {
        panic!("matrix")
    };
    assert_eq!(
        m.dimensions["node"],
        MatrixValues::List(vec![json!(18), json!(20)])
    );
    let MatrixEntries::List(inc) = &m.include else {
        panic!("include")
    };
    assert_eq!(inc[0]["experimental"], json!(true));
    let step = &b.steps[0];
    assert_eq!(step.location, Location::new(33, 9));
    assert_eq!(step.id.as_deref(), Some("s"));
    assert_eq!(step.with["n"], json!(1));
    assert_eq!(step.condition.as_deref(), Some("always()"));
    assert_eq!(step.timeout_minutes, Some(NumberExpr::Literal(2.0)));
    let c = &w.jobs["c"];
    assert_eq!(
        c.runs_on,
        Some(RunsOn::Labels(vec!["${{ inputs.runner }}".into()]))
    );
    assert_eq!(
        c.environment.as_ref().map(|e| e.name.as_str()),
        Some("staging")
    );
    assert!(matches!(
        c.strategy.as_ref().and_then(|s| s.matrix.as_ref()),
        Some(MatrixSpec::Expr(_))
    ));
    assert_eq!(c.steps[0].working_directory.as_deref(), Some("src"));
    assert_eq!(c.steps[0].index, 0);
}

#[test]
fn reusable_workflow_call_job() {
    let w = ok(
        "on: push\njobs:\n  call:\n    uses: octo/repo/.github/workflows/ci.yml@v1\n    with:\n      debug: true\n    secrets:\n      token: ${{ secrets.T }}\n",
    );
    let j = &w.jobs["call"];
    assert_eq!(
        j.uses.as_deref(),
        Some("octo/repo/.github/workflows/ci.yml@v1")
    );
    assert_eq!(j.runs_on, None);
    assert_eq!(j.with["debug"], json!(true));
    let Some(JobSecrets::Map(s)) = &j.secrets else {
        panic!("secrets")
    };
    assert_eq!(s["token"], "${{ secrets.T }}");
}

#[test]
fn anchors_are_expanded() {
    let w = ok(
        "on: push\njobs:\n  a:\n    runs-on: x\n    env: &e\n      K: v\n    steps: [{run: echo}]\n  b:\n    runs-on: x\n    env: *e\n    steps: [{run: echo}]\n",
    );
    assert_eq!(w.jobs["b"].env["K"], json!("v"));
}

#[test]
fn actions_of_every_runtime() {
    let a = parse_action(
        "action.yml",
        "name: c\ninputs:\n  who:\n    description: d\n    required: true\n    default: 3\noutputs:\n  o:\n    value: ${{ steps.x.outputs.o }}\nruns:\n  using: composite\n  steps:\n    - id: x\n      run: echo\n      shell: bash\n    - uses: ./other\n",
    )
    .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(a.inputs["who"].default.as_deref(), Some("3"));
    assert!(a.inputs["who"].required);
    assert_eq!(
        a.outputs["o"].value.as_deref(),
        Some("${{ steps.x.outputs.o }}")
    );
    let Runs::Composite { steps } = &a.runs else {
        panic!("composite")
    };
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1].uses.as_deref(), Some("./other"));
    let a = parse_action(
        "action.yml",
        "name: n\nruns:\n  using: node24\n  main: main.js\n  pre: pre.js\n  pre-if: runner.os == 'Linux'\n  post: post.js\n",
    )
    .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        a.runs,
        Runs::Node {
            using: "node24".into(),
            main: "main.js".into(),
            pre: Some("pre.js".into()),
            pre_if: Some("runner.os == 'Linux'".into()),
            post: Some("post.js".into()),
            post_if: None,
        }
    );
    let a = parse_action(
        "action.yml",
        "name: d\nruns:\n  using: docker\n  image: Dockerfile\n  args: [a, b]\n",
    )
    .unwrap_or_else(|d| panic!("{d}"));
    assert!(matches!(a.runs, Runs::Docker { ref args, .. } if args == &["a", "b"]));
}

#[test]
fn crlf_and_byte_order_mark_are_accepted() {
    let src = format!("\u{feff}on: push\r\n{}", JOB.replace('\n', "\r\n"));
    let w = ok(&src);
    assert_eq!(w.jobs["a"].location, Location::new(3, 3));
    assert_eq!(w.jobs["a"].steps[0].run.as_deref(), Some("echo"));
}
