//! Runs all 432 rows of act's expression test tables
//! (`shared/conformance/act/expressions/expr_cases.tsv`) through `ignis_workflow::expr`.
//!
//! Contexts are rebuilt from each row's `context` summary (and, for TestContexts, from what
//! the expressions and expected values require). Rows are evaluated without the implicit
//! `success() &&`, as act does (`DefaultStatusCheckNone`). A trailing ` }}` that act's tests
//! carry is stripped.
//!
//! Rows where act deviates from GitHub, asserted with GitHub's behaviour instead:
//! - the 6 non-empty `TestFunctionHashFiles` rows: act hashes the concatenated file contents;
//!   GitHub's runner hashes each file and then the list of digests. Expected values come from
//!   `hashfiles_github.tsv`, and the matched files are checked against its file list.
//! - `TestOperators` `secrets != env`: act fails with "Compare not implemented for types:
//!   left: map, right: map"; GitHub documents that "objects and arrays are only considered
//!   equal when they are the same instance", so two different objects are simply not equal
//!   and the result is `true`.
//! - `TestOperators` `github.event.commits[0].author.username1 !=
//!   github.event.commits[1].author.username2`: both properties are missing, so both sides
//!   are null; act says `true`, but in GitHub a missing property is null and
//!   `null == null` is true (languageservices `op_eq`), so `!=` is `false`.
//! - `TestFunctionContains` `contains(fromJSON('[{ "first": … },{ "second": … }]').first.result,
//!   'success')`: act applies `.first` to every element of an array implicitly; GitHub
//!   dereferences a property only on objects (an array needs an explicit `.*` filter), so
//!   `.first` on the array is null, `contains(null, 'success')` is `contains('', 'success')`,
//!   and the result is `false`.
//! - `TestContexts` `github.event.pull_request.labels.*.name` (no pull_request in the event):
//!   act returns null; in GitHub's engine a `*` filter always yields an array, empty when
//!   there is nothing to filter (actions/languageservices `op_idx_star`: `foo.*` with
//!   `foo = null` is `[]`), so the result is `[]`.
//!
//! The four `TestFunctionFormat` error rows must fail with act's exact message, and do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ignis_workflow::expr::glob::GlobPatterns;
use ignis_workflow::expr::hash_files::hash_files_digest;
use ignis_workflow::expr::{self, EvalContext, Value};
use serde_json::json;

fn data_dir() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/act/expressions");
    assert!(
        dir.join("expr_cases.tsv").is_file(),
        "conformance data missing: {} (expected shared/ beside the repository)",
        dir.display()
    );
    dir
}

fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Reads a TSV with `#` comments and a header into maps of column → unescaped value.
fn read_tsv(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).expect("readable tsv");
    let mut lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty());
    let header: Vec<String> = lines
        .next()
        .expect("header")
        .split('\t')
        .map(str::to_owned)
        .collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(
                    l.split('\t')
                        .map(unescape)
                        .chain(std::iter::repeat(String::new())),
                )
                .collect()
        })
        .collect()
}

fn obj(v: serde_json::Value) -> Value {
    Value::from(v)
}

/// The contexts each Go test sets up.
fn context_for(test: &str) -> EvalContext<'static> {
    let ctx = EvalContext::new();
    match test {
        "TestOperators" => ctx
            .with(
                "github",
                obj(json!({
                    "action": "push",
                    "event": {"commits": [
                        {"author": {"username": "someone"}},
                        {"author": {"username": "someone-else"}}
                    ]}
                })),
            )
            // Two distinct (empty) objects.
            .with("secrets", obj(json!({})))
            .with("env", obj(json!({}))),
        "TestOperatorsCompare" | "TestOperatorsBooleanEvaluation" => {
            ctx.with("github", obj(json!({"action": "push"})))
        }
        "TestContexts" => ctx
            .with("github", obj(json!({"action": "push", "event": {}})))
            .with("env", obj(json!({"TEST": "value"})))
            .with("job", obj(json!({"status": "success"})))
            .with(
                "steps",
                obj(json!({
                    "step-id": {"outputs": {"name": "value"}, "outcome": "success", "conclusion": "success"},
                    "step-id2": {"outputs": {}, "outcome": "failure", "conclusion": "skipped"}
                })),
            )
            .with(
                "runner",
                obj(json!({"os": "Linux", "temp": "/tmp", "tool_cache": "/opt/hostedtoolcache"})),
            )
            .with("secrets", obj(json!({"name": "value"})))
            .with("vars", obj(json!({"name": "value"})))
            .with("strategy", obj(json!({"fail-fast": true})))
            .with("matrix", obj(json!({"os": "Linux"})))
            .with(
                "needs",
                obj(json!({
                    "job-id": {"outputs": {"output-name": "value"}, "result": "success"},
                    "another-job-id": {"outputs": {"output-name": "value"}, "result": "success"}
                })),
            )
            .with("inputs", obj(json!({"name": "value"}))),
        "TestFunctionToJSON" => ctx.with("env", obj(json!({"key": "value"}))),
        "TestFunctionFormat" => ctx.with("github", obj(json!({}))),
        "TestMapContains" => ctx.with(
            "needs",
            obj(json!({
                "first-job": {"outputs": {}, "result": "success"},
                "second-job": {"outputs": {}, "result": "failure"}
            })),
        ),
        _ => ctx,
    }
}

/// Every regular file under `root`, as sorted `/`-separated relative paths.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

/// The files a hashFiles call selects in `root`.
fn matched_files(root: &Path, patterns: &[String]) -> Vec<String> {
    let glob = GlobPatterns::new(patterns, &root.to_string_lossy());
    walk(root)
        .into_iter()
        .filter(|f| glob.matches(f, false))
        .collect()
}

/// Numbers compare as doubles (Go's `1.0` is JSON `1.0`, ours `1`); objects ignore order.
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn value_matches(got: &Value, expected_json: &str, expected_go: &str) -> bool {
    match expected_go {
        "math.NaN()" => matches!(got, Value::Number(n) if n.is_nan()),
        "math.Inf(1)" => *got == Value::Number(f64::INFINITY),
        "math.Inf(-1)" => *got == Value::Number(f64::NEG_INFINITY),
        _ => match serde_json::from_str::<serde_json::Value>(expected_json) {
            Ok(want) => json_eq(&got.to_json(), &want),
            Err(e) => panic!("bad expected_json {expected_json:?}: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_expression_cases() {
        let dir = data_dir();
        let rows = read_tsv(&dir.join("expr_cases.tsv"));
        let github_hashes: HashMap<String, (String, String)> =
            read_tsv(&dir.join("hashfiles_github.tsv"))
                .into_iter()
                .map(|r| {
                    (
                        r["name"].clone(),
                        (
                            r["files_matched_in_lexical_order"].clone(),
                            r["github_runner_algorithm_value"].clone(),
                        ),
                    )
                })
                .collect();
        let hash_root = dir.join("expr_hashfiles_testdata");
        assert!(hash_root.is_dir(), "missing {}", hash_root.display());
        let hash_cb = |patterns: &[String]| -> Result<String, String> {
            let files = matched_files(&hash_root, patterns);
            let contents = files
                .iter()
                .map(|f| std::fs::read(hash_root.join(f)).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(hash_files_digest(contents))
        };

        let mut failures = Vec::new();
        let mut github_overrides = 0;
        for (i, row) in rows.iter().enumerate() {
            let (test, name) = (&row["test"], &row["name"]);
            let raw = &row["expression"];
            let src = raw.strip_suffix(" }}").unwrap_or(raw);
            let mut ctx = context_for(test);
            if test == "TestFunctionHashFiles" {
                ctx = ctx.with_hash_files(&hash_cb);
            }
            let label = format!("row {} {test}/{name}: {src}", i + 1);
            let result = expr::parse(src)
                .map_err(|e| e.to_string())
                .and_then(|e| expr::evaluate(&e, &ctx).map_err(|e| e.to_string()));

            // GitHub's behaviour where act deviates (see the module doc).
            let github_expected: Option<&str> = match (test.as_str(), src) {
                ("TestOperators", "secrets != env") => Some("true"),
                (
                    "TestOperators",
                    "github.event.commits[0].author.username1 != github.event.commits[1].author.username2",
                ) => Some("false"),
                ("TestFunctionContains", s) if s.contains(").first.result") => Some("false"),
                ("TestContexts", "github.event.pull_request.labels.*.name") => Some("[]"),
                _ => None,
            };
            if test == "TestFunctionHashFiles" {
                let (want_files, want) = github_hashes.get(name).cloned().unwrap_or_default();
                if !want.is_empty() {
                    github_overrides += 1;
                    let parsed = expr::parse(src).expect("hashFiles row parses");
                    let expr::ExprKind::Call { args, .. } = &parsed.kind else {
                        panic!("{label}: not a call")
                    };
                    let patterns: Vec<String> = args
                        .iter()
                        .map(|a| {
                            expr::evaluate(a, &ctx)
                                .expect("pattern")
                                .to_display_string()
                        })
                        .collect();
                    let files = matched_files(&hash_root, &patterns).join(" ");
                    if files != want_files {
                        failures.push(format!("{label}: matched {files:?}, want {want_files:?}"));
                    }
                }
                let want = if want.is_empty() { String::new() } else { want };
                match &result {
                    Ok(Value::String(got)) if *got == want => {}
                    other => failures.push(format!("{label}: got {other:?}, want {want:?}")),
                }
                continue;
            }
            if let Some(want) = github_expected {
                github_overrides += 1;
                match &result {
                    Ok(got) if value_matches(got, want, "") => {}
                    other => failures.push(format!("{label}: got {other:?}, want GitHub's {want}")),
                }
                continue;
            }
            let expected_error = &row["expected_error"];
            if !expected_error.is_empty() {
                match &result {
                    Err(msg) if msg == expected_error => {}
                    other => failures.push(format!(
                        "{label}: got {other:?}, want error {expected_error:?}"
                    )),
                }
                continue;
            }
            match &result {
                Ok(got) if value_matches(got, &row["expected_json"], &row["expected_go"]) => {}
                other => failures.push(format!(
                    "{label}: got {other:?}, want {} ({})",
                    row["expected_json"], row["expected_go"]
                )),
            }
        }
        let passed = rows.len() - failures.len();
        println!(
            "expr conformance: {} rows, {passed} passed ({github_overrides} asserted with GitHub's behaviour where act deviates)",
            rows.len()
        );
        for f in &failures {
            println!("FAIL {f}");
        }
        assert_eq!(rows.len(), 432, "the suite has 432 rows");
        assert!(failures.is_empty(), "{} rows failed", failures.len());
    }
}
