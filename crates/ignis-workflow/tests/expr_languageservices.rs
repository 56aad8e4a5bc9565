//! GitHub's own expression test vectors (actions/languageservices, see
//! `expr_languageservices/README.md`) run against `ignis_workflow::expr`.
//!
//! Every case must pass except these deliberate differences:
//! - `basic`: the empty expression `` evaluates to null in languageservices; ignis refuses it
//!   ("an expression was expected"), as the runner refuses an empty `${{ }}`.
//! - `basic`: `nosuchcontext.foo` is a parse error there; ignis's expression parser accepts
//!   any context name and the workflow validator (`parse`) checks which contexts a key may use.
//! - `syntax-errors` memory case: GitHub stops at about 1 MB of expression memory; ignis's
//!   default cap is [`expr::DEFAULT_MAX_MEMORY`] (16 MiB) so large `toJSON(github)` results are
//!   never refused where GitHub would accept them; the case therefore evaluates.

use std::path::Path;

use ignis_workflow::expr::{self, EvalContext, Value};

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

/// Whether the case is one of the documented deliberate differences (file, group).
fn skipped(file: &str, group: &str) -> bool {
    matches!(
        (file, group),
        ("basic.json", "empty_expression" | "unknown context")
            | ("syntax-errors.json", "memory-errors")
    )
}

/// Checks one case; `Err` describes a mismatch.
fn check(case: &serde_json::Value) -> Result<(), String> {
    let src = case["expr"].as_str().ok_or("case without expr")?;
    let mut ctx = EvalContext::new();
    if let Some(contexts) = case["contexts"].as_object() {
        for (name, v) in contexts {
            ctx.set(name, Value::from(v.clone()));
        }
    }
    let parsed = expr::parse(src);
    if let Some(err) = case.get("err") {
        let kind = err["kind"].as_str().unwrap_or_default();
        return match (kind, parsed) {
            ("parsing" | "lexing", Err(_)) => Ok(()),
            ("evaluation", Ok(e)) if expr::evaluate(&e, &ctx).is_err() => Ok(()),
            (_, parsed) => Err(format!(
                "expected {kind} error {}, got {:?}",
                err["value"],
                parsed.map(|e| expr::evaluate(&e, &ctx))
            )),
        };
    }
    let want = &case["result"];
    let got = parsed
        .map_err(|e| format!("parse error: {e}"))?
        .evaluate(&ctx)
        .map_err(|e| format!("evaluation error: {e}"))?;
    let kind_ok = matches!(
        (want["kind"].as_str().unwrap_or_default(), &got),
        ("Boolean", Value::Bool(_))
            | ("Number", Value::Number(_))
            | ("String", Value::String(_))
            | ("Null", Value::Null)
            | ("Array", Value::Array(_))
            | ("Object", Value::Object(_))
    );
    if kind_ok && json_eq(&got.to_json(), &want["value"]) {
        Ok(())
    } else {
        Err(format!("got {:?}, want {want}", got.to_json()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_languageservices_vectors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expr_languageservices");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("test vector directory")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        assert_eq!(files.len(), 28, "expected the 28 vector files");
        let (mut total, mut passed, mut skips) = (0, 0, 0);
        let mut failures = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("readable vector file");
            let suite: serde_json::Value = serde_json::from_str(&text).expect("valid json");
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            for (group, cases) in suite.as_object().expect("object of groups") {
                for case in cases.as_array().expect("array of cases") {
                    total += 1;
                    let src = case["expr"].as_str().unwrap_or_default();
                    if skipped(name.as_deref().unwrap_or_default(), group) {
                        skips += 1;
                        continue;
                    }
                    match check(case) {
                        Ok(()) => passed += 1,
                        Err(why) => failures.push(format!(
                            "{}/{group}: {:?}: {why}",
                            name.as_deref().unwrap_or("?"),
                            src.chars().take(120).collect::<String>()
                        )),
                    }
                }
            }
        }
        println!(
            "expr languageservices vectors: {total} cases, {passed} passed, {skips} skipped (documented)"
        );
        for f in &failures {
            println!("FAIL {f}");
        }
        assert_eq!(
            skips, 3,
            "exactly the three documented differences are skipped"
        );
        assert!(failures.is_empty(), "{} cases failed", failures.len());
    }
}
