//! Parses arbitrary text as an expression, a template and an `if:` condition, evaluates
//! whatever parses against a small context, and feeds the text to the hashFiles glob
//! matcher. Any panic, overflow or runaway allocation is a bug.
#![no_main]

use ignis_workflow::expr::glob::GlobPatterns;
use ignis_workflow::expr::{self, EvalContext, Status, Value};
use libfuzzer_sys::fuzz_target;

fn context(status: Status, hash: expr::HashFilesFn<'_>) -> EvalContext<'_> {
    let github = serde_json::json!({
        "action": "push",
        "event_name": "push",
        "ref": "refs/heads/main",
        "event": {"commits": [
            {"author": {"username": "someone"}, "message": "x"},
            {"author": {"username": "someone-else"}}
        ], "number": 3.5, "labels": [{"name": "bug"}, null, [1, 2]]}
    });
    let mut ctx = EvalContext::new()
        .with("github", Value::from(github))
        .with("env", Value::from(serde_json::json!({"A": "1", "B": ""})))
        .with(
            "matrix",
            Value::from(serde_json::json!({"os": "linux", "n": [1, 2]})),
        )
        .with(
            "needs",
            Value::from(
                serde_json::json!({"a": {"result": "success", "outputs": {"x": "{\"k\":[1]}"}}}),
            ),
        )
        .with_status(status)
        .with_hash_files(hash);
    // Keep runs fast: a small memory cap still exercises the limit paths.
    ctx.max_memory = 1 << 20;
    ctx
}

fn exercise(v: &Value) {
    let _ = v.is_truthy();
    let _ = v.to_number();
    let s = v.to_display_string();
    let json = v.to_json();
    let _ = Value::from(json).loose_eq(v);
    let _ = Value::from(s).loose_cmp(v);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let status = match data.first().map(|b| b % 3) {
        Some(0) => Status::Success,
        Some(1) => Status::Failure,
        _ => Status::Cancelled,
    };
    let hash = |patterns: &[String]| -> Result<String, String> {
        let glob = GlobPatterns::new(patterns, "/ws");
        let _ = glob.search_roots();
        let files = ["a.txt", "dir/b.txt", "dir/sub/.c", "x"];
        let hit: Vec<&[u8]> = files
            .iter()
            .filter(|f| glob.matches(f, false))
            .map(|f| f.as_bytes())
            .collect();
        Ok(expr::hash_files::hash_files_digest(hit))
    };
    let ctx = context(status, &hash);

    if let Ok(e) = expr::parse(text) {
        let _ = e.uses_status_functions();
        let _ = e.referenced_contexts();
        if let Ok(v) = expr::evaluate(&e, &ctx) {
            exercise(&v);
        }
    }
    if let Ok(t) = expr::parse_template(text) {
        let _ = t.referenced_contexts();
        if let Ok(v) = t.evaluate(&ctx) {
            exercise(&v);
        }
    }
    let _ = expr::evaluate_if(text, &ctx);
    let glob = GlobPatterns::new(&[text], "/ws");
    let _ = glob.matches(text, false);
    let _ = glob.matches("a/b/c", true);
});
