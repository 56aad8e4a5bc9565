//! Each kind of diagnostic, with exact `line:column` positions.
// Integration tests are their own crate: there is no `#[cfg(test)]` module to put them in.
#![allow(clippy::tests_outside_test_module)]

use ignis_workflow::{DiagnosticKind, Diagnostics, parse, parse_action};

fn errors(src: &str) -> Diagnostics {
    match parse("wf.yml", src) {
        Ok(w) => panic!("expected errors, parsed: {w:?}"),
        Err(d) => d,
    }
}

/// `line:column: message` of every diagnostic, for compact assertions.
fn rendered(src: &str) -> Vec<String> {
    errors(src)
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect()
}

/// Asserts exactly one diagnostic, at `line:column`, whose message contains `needle`.
#[track_caller]
fn one(src: &str, line: usize, column: usize, kind: DiagnosticKind, needle: &str) {
    let d = errors(src);
    assert_eq!(d.len(), 1, "{d}");
    let d = &d.0[0];
    assert_eq!((d.line, d.column), (line, column), "{d}");
    assert_eq!(d.kind, kind, "{d}");
    assert!(
        d.message.contains(needle),
        "`{}` lacks `{needle}`",
        d.message
    );
}

const HEAD: &str = "on: push\njobs:\n";

#[test]
fn empty_file_is_a_syntax_error() {
    one("", 1, 1, DiagnosticKind::Syntax, "file is empty");
    one(
        "# only a comment\n\n",
        1,
        1,
        DiagnosticKind::Syntax,
        "file is empty",
    );
}

#[test]
fn yaml_syntax_error_is_located() {
    let d = errors("on: push\njobs:\n  a:\n    steps: [1, 2\n  b: 3\n");
    assert_eq!(d.len(), 1, "{d}");
    assert_eq!(d.0[0].kind, DiagnosticKind::Syntax);
    assert_eq!((d.0[0].line, d.0[0].column), (5, 4), "{d}");
    assert!(d.0[0].message.starts_with("yaml syntax error"), "{d}");
    assert_eq!(d.to_string(), format!("wf.yml:5:4: {}", d.0[0].message));
    // A tab used for indentation.
    let d = errors("on: push\njobs:\n\ta: 1\n");
    assert_eq!(d.0[0].kind, DiagnosticKind::Syntax);
    assert_eq!((d.0[0].line, d.0[0].column), (3, 2), "{d}");
}

#[test]
fn unknown_keys_at_every_level() {
    let src = format!(
        "{HEAD}  a:\n    runs-on: x\n    stepz: []\n    steps:\n      - run: echo\n        shel: bash\nnmae: x\n"
    );
    assert_eq!(
        rendered(&src),
        [
            "5:5: unknown key `stepz` in job `a` (did you mean `steps`?)",
            "8:9: unknown key `shel` in job `a` step 0 (did you mean `shell`?)",
            "9:1: unknown key `nmae` in workflow (did you mean `name`?)",
        ]
    );
}

#[test]
fn wrong_types_are_schema_errors() {
    let src = format!(
        "{HEAD}  a:\n    runs-on: x\n    timeout-minutes: soon\n    continue-on-error: maybe\n    env: [1]\n    steps:\n      - run: [echo]\n"
    );
    let d = errors(&src);
    assert!(d.iter().all(|d| d.kind == DiagnosticKind::Schema), "{d}");
    assert_eq!(
        rendered(&src),
        [
            "5:22: job `a` `timeout-minutes`: expected a number or an expression, found a string",
            "6:24: job `a` `continue-on-error`: expected a boolean or an expression, found a string",
            "7:10: job `a` `env`: expected a mapping, found a sequence",
            "9:14: job `a` step 0 `run`: expected a string, found a sequence",
        ]
    );
}

#[test]
fn duplicate_keys_are_refused() {
    one(
        &format!("{HEAD}  a:\n    runs-on: x\n    runs-on: y\n    steps:\n      - run: echo\n"),
        5,
        5,
        DiagnosticKind::Schema,
        "`runs-on` is already defined",
    );
}

#[test]
fn invalid_job_ids() {
    one(
        &format!("{HEAD}  1job:\n    runs-on: x\n    steps:\n      - run: echo\n"),
        3,
        3,
        DiagnosticKind::Semantic,
        "job id `1job` is invalid",
    );
    one(
        &format!("{HEAD}  a.b:\n    runs-on: x\n    steps:\n      - run: echo\n"),
        3,
        3,
        DiagnosticKind::Semantic,
        "job id `a.b` is invalid",
    );
}

#[test]
fn needs_unknown_job_and_cycles() {
    one(
        &format!("{HEAD}  a:\n    needs: [ghost]\n    runs-on: x\n    steps:\n      - run: echo\n"),
        4,
        13,
        DiagnosticKind::Semantic,
        "needs `ghost`, which is not a job",
    );
    let cyc = format!(
        "{HEAD}  a:\n    needs: c\n    runs-on: x\n    steps: [{{run: echo}}]\n  b:\n    needs: a\n    runs-on: x\n    steps: [{{run: echo}}]\n  c:\n    needs: [b]\n    runs-on: x\n    steps: [{{run: echo}}]\n"
    );
    assert_eq!(rendered(&cyc), ["8:12: cycle in `needs`: a -> c -> b -> a"]);
    one(
        &format!("{HEAD}  a:\n    needs: a\n    runs-on: x\n    steps: [{{run: echo}}]\n"),
        4,
        12,
        DiagnosticKind::Semantic,
        "needs itself",
    );
}

#[test]
fn step_needs_exactly_one_of_uses_and_run() {
    one(
        &format!(
            "{HEAD}  a:\n    runs-on: x\n    steps:\n      - uses: actions/checkout@v4\n        run: echo\n"
        ),
        7,
        9,
        DiagnosticKind::Schema,
        "both `uses` and `run`",
    );
    one(
        &format!("{HEAD}  a:\n    runs-on: x\n    steps:\n      - name: nothing\n"),
        6,
        9,
        DiagnosticKind::Schema,
        "either `uses` or `run`",
    );
}

#[test]
fn duplicate_step_ids() {
    one(
        &format!(
            "{HEAD}  a:\n    runs-on: x\n    steps:\n      - id: s\n        run: echo\n      - id: s\n        run: echo\n"
        ),
        8,
        13,
        DiagnosticKind::Semantic,
        "step id `s` is already used by the step at line 6",
    );
}

#[test]
fn missing_runs_on_except_for_reusable_calls() {
    one(
        &format!("{HEAD}  a:\n    steps:\n      - run: echo\n"),
        3,
        3,
        DiagnosticKind::Schema,
        "missing required key `runs-on`",
    );
    let ok = format!(
        "{HEAD}  call:\n    uses: ./.github/workflows/x.yml\n    with:\n      a: 1\n    secrets: inherit\n"
    );
    parse("wf.yml", &ok).unwrap_or_else(|d| panic!("{d}"));
    one(
        &format!("{HEAD}  call:\n    uses: ./.github/workflows/x.yml\n    runs-on: x\n"),
        5,
        5,
        DiagnosticKind::Schema,
        "`runs-on` is not allowed in a job that calls a reusable workflow",
    );
}

#[test]
fn expression_errors_point_into_plain_scalars() {
    // `      - run: ` is 13 characters, so the value starts at column 14 and `nope(` at 23.
    one(
        &format!("{HEAD}  a:\n    runs-on: x\n    steps:\n      - run: echo ${{{{ nope(1) }}}}\n"),
        6,
        23,
        DiagnosticKind::Semantic,
        "invalid expression",
    );
    one(
        &format!("{HEAD}  a:\n    runs-on: x\n    steps:\n      - run: echo ${{{{ github.sha\n"),
        6,
        19,
        DiagnosticKind::Semantic,
        "unclosed expression",
    );
}

#[test]
fn expression_errors_point_into_literal_blocks() {
    let src = format!(
        "{HEAD}  a:\n    runs-on: x\n    steps:\n      - run: |\n          echo ok\n          echo ${{{{ github.sha\n"
    );
    one(&src, 8, 16, DiagnosticKind::Semantic, "unclosed expression");
}

#[test]
fn implicit_if_expressions_are_checked() {
    one(
        &format!(
            "{HEAD}  a:\n    if: github.ref ==\n    runs-on: x\n    steps:\n      - run: echo\n"
        ),
        4,
        22,
        DiagnosticKind::Semantic,
        "invalid expression",
    );
    let ok = format!(
        "{HEAD}  a:\n    if: always() && github.ref == 'refs/heads/main'\n    runs-on: x\n    steps:\n      - run: echo\n        if: ${{{{ failure() }}}}\n"
    );
    parse("wf.yml", &ok).unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn status_functions_outside_if_are_refused() {
    one(
        &format!(
            "{HEAD}  a:\n    runs-on: x\n    steps:\n      - run: echo ${{{{ success() }}}}\n"
        ),
        6,
        23,
        DiagnosticKind::Semantic,
        "status function `success()` is only allowed in `if` conditions",
    );
}

#[test]
fn contexts_must_exist_and_be_available_at_the_key() {
    // `env` is not available in a job-level `if` (GitHub's context availability table).
    one(
        &format!(
            "{HEAD}  a:\n    if: env.X == 'y'\n    runs-on: x\n    steps:\n      - run: echo\n"
        ),
        4,
        9,
        DiagnosticKind::Semantic,
        "context `env` is not available here",
    );
    one(
        &format!(
            "{HEAD}  a:\n    runs-on: ${{{{ steps.s.outputs.os }}}}\n    steps:\n      - run: echo\n"
        ),
        4,
        18,
        DiagnosticKind::Semantic,
        "context `steps` is not available here",
    );
    one(
        &format!(
            "{HEAD}  a:\n    runs-on: x\n    steps:\n      - run: echo ${{{{ gihtub.sha }}}}\n"
        ),
        6,
        23,
        DiagnosticKind::Semantic,
        "unrecognized named-value `gihtub`",
    );
    let ok = format!(
        "run-name: ${{{{ inputs.x }}}}\n{HEAD}  a:\n    if: needs.b.result == 'success' && vars.X\n    needs: b\n    runs-on: ${{{{ matrix.os }}}}\n    strategy:\n      matrix:\n        os: ${{{{ fromJSON(needs.b.outputs.os) }}}}\n    env:\n      S: ${{{{ secrets.T }}}}\n    steps:\n      - run: echo ${{{{ env.S }}}} ${{{{ runner.os }}}} ${{{{ job.status }}}}\n        if: steps.x.outcome == 'success' || env.A\n  b:\n    runs-on: x\n    outputs:\n      os: ${{{{ steps.s.outputs.os }}}}\n    steps:\n      - id: s\n        run: echo\n"
    );
    parse("wf.yml", &ok).unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn too_many_matrix_legs() {
    let a: Vec<String> = (0..17).map(|i| i.to_string()).collect();
    let b: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    let src = format!(
        "{HEAD}  a:\n    runs-on: x\n    strategy:\n      matrix:\n        a: [{}]\n        b: [{}]\n    steps:\n      - run: echo\n",
        a.join(", "),
        b.join(", ")
    );
    one(&src, 6, 7, DiagnosticKind::Semantic, "generates 272 jobs");
    // Excluding one row (16 legs) brings it to 256: fine.
    let ok = src.replace(
        "    steps:",
        "        exclude:\n          - a: 0\n    steps:",
    );
    parse("wf.yml", &ok).unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn matrix_exclude_must_name_a_vector() {
    one(
        &format!(
            "{HEAD}  a:\n    runs-on: x\n    strategy:\n      matrix:\n        os: [a]\n        exclude:\n          - oss: a\n    steps:\n      - run: echo\n"
        ),
        6,
        7,
        DiagnosticKind::Semantic,
        "matrix exclude key 'oss' does not match any key within the matrix",
    );
}

#[test]
fn containers_services_and_docker_actions_are_refused() {
    let src = format!(
        "{HEAD}  a:\n    runs-on: x\n    container: node:20\n    services:\n      db:\n        image: postgres\n    steps:\n      - uses: docker://alpine:3\n"
    );
    let d = errors(&src);
    assert!(d.iter().all(|d| d.kind == DiagnosticKind::Semantic), "{d}");
    let at: Vec<(usize, usize)> = d.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(at, [(5, 5), (6, 5), (10, 15)], "{d}");
    assert!(
        d.iter().all(|d| d.message.contains("no available backend")),
        "{d}"
    );
}

#[test]
fn uses_references_are_checked() {
    one(
        &format!("{HEAD}  a:\n    runs-on: x\n    steps:\n      - uses: actions/checkout\n"),
        6,
        15,
        DiagnosticKind::Schema,
        "invalid action reference `actions/checkout`",
    );
    one(
        &format!("{HEAD}  a:\n    uses: octo/repo/.github/workflows/x.yml\n"),
        4,
        11,
        DiagnosticKind::Schema,
        "invalid reusable workflow reference",
    );
    one(
        &format!(
            "{HEAD}  a:\n    runs-on: x\n    steps:\n      - uses: ${{{{ inputs.action }}}}\n"
        ),
        6,
        15,
        DiagnosticKind::Schema,
        "expressions are not allowed in `uses`",
    );
}

#[test]
fn on_problems() {
    one(
        "jobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n",
        1,
        1,
        DiagnosticKind::Schema,
        "missing required key `on`",
    );
    one(
        "on: [push, pusj]\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n",
        1,
        12,
        DiagnosticKind::Schema,
        "unknown event `pusj` (did you mean `push`?)",
    );
    one(
        "on:\n  push:\n    branches: [main]\n    branches-ignore: [dev]\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n",
        4,
        5,
        DiagnosticKind::Schema,
        "cannot both be used",
    );
    one(
        "on:\n  issues:\n    typs: [opened]\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n",
        3,
        5,
        DiagnosticKind::Schema,
        "unknown key `typs` in `on.issues` (did you mean `types`?)",
    );
}

#[test]
fn bad_filter_patterns_are_located_at_their_item() {
    let src = "on:\n  push:\n    branches:\n      - main\n      - 'rel/[z-a]'\n    paths: ['ok/**', 'a\\']\n  workflow_run:\n    workflows: [ci]\n    branches-ignore: ['[']\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n";
    let d = errors(src);
    assert!(d.iter().all(|d| d.kind == DiagnosticKind::Schema), "{d}");
    assert_eq!(
        rendered(src),
        [
            "5:9: `on.push.branches`: invalid filter pattern 'rel/[z-a]': ranges can only include a-z, A-Z and 0-9 at position 6",
            "6:22: `on.push.paths`: invalid filter pattern 'a\\': missing character after '\\' at position 1",
            "9:23: `on.workflow_run.branches-ignore`: invalid filter pattern '[': missing closing bracket ']' after '[' at position 0",
        ]
    );
    assert_eq!(
        d.0[0].to_string(),
        "wf.yml:5:9: `on.push.branches`: invalid filter pattern 'rel/[z-a]': ranges can only include a-z, A-Z and 0-9 at position 6"
    );
}

#[test]
fn every_error_is_reported_at_once_in_position_order() {
    let src = "on: push\nfoo: 1\njobs:\n  1a:\n    needs: zz\n    runs-on: x\n    steps:\n      - id: s\n        run: echo ${{ always() }}\n      - id: s\n      - run: echo\n        with: {a: 1}\n";
    let d = errors(src);
    let at: Vec<(usize, usize)> = d.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(
        at,
        [(2, 1), (4, 3), (5, 12), (9, 23), (10, 9), (10, 13), (12, 9)],
        "{d}"
    );
    let text = d.to_string();
    assert_eq!(text.lines().count(), 7);
    assert!(text.lines().all(|l| l.starts_with("wf.yml:")), "{text}");
}

#[test]
fn actions_are_validated() {
    let ok = "name: a\ninputs:\n  who:\n    default: 3\nruns:\n  using: node20\n  main: index.js\n  post: post.js\n  post-if: always()\n";
    parse_action("action.yml", ok).unwrap_or_else(|d| panic!("{d}"));
    let bad = "runs:\n  using: composite\n  steps:\n    - run: echo\n    - uses: ./x\n      shell: bash\n";
    let d = parse_action("action.yml", bad).expect_err("must fail");
    let at: Vec<(usize, usize, &str)> = d
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (
                4,
                7,
                "composite action step 0: a `run` step of a composite action needs `shell`"
            ),
            (
                6,
                7,
                "composite action step 1: `shell` is only allowed with `run`"
            ),
        ]
    );
    let d =
        parse_action("action.yml", "runs:\n  using: node8\n  main: x.js\n").expect_err("must fail");
    assert_eq!((d.0[0].line, d.0[0].column), (2, 10), "{d}");
    assert!(d.0[0].message.contains("unknown runtime `node8`"));
}
