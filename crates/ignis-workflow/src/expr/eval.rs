//! Evaluation of parsed expressions against caller-supplied contexts.

use std::fmt;

use indexmap::IndexMap;

use super::ast::{Accessor, BinaryOp, Expr, ExprKind, Function, Span};
use super::error::EvalError;
use super::number::number_to_string;
use super::value::{Value, fold_string};

/// The `hashFiles` callback the runtime supplies: it receives the patterns (one per
/// argument, each possibly holding several newline-separated patterns) and returns the hex
/// digest, `""` when nothing matched, or an error message. See [`super::hash_files`] for
/// the pure parts of GitHub's algorithm.
pub type HashFilesFn<'a> = &'a (dyn Fn(&[String]) -> Result<String, String> + Send + Sync);

/// The job (or, for a job-level `if:`, the workflow) state the status functions report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// Nothing before has failed: `success()` is true.
    #[default]
    Success,
    /// A previous step (or a needed job) failed: `failure()` is true.
    Failure,
    /// The run was cancelled: `cancelled()` is true.
    Cancelled,
}

/// Default cap on the bytes of strings built during one evaluation (`format`, `join`,
/// `toJSON`, …). GitHub also caps expression memory; without a cap, nested `format` calls
/// grow exponentially from a few hundred bytes of input.
pub const DEFAULT_MAX_MEMORY: usize = 16 * 1024 * 1024;

/// What an expression can see: contexts by name (`github`, `env`, `vars`, `secrets`,
/// `inputs`, `matrix`, `strategy`, `needs`, `steps`, `runner`, `job`, …), the status for
/// `success()` & co., and the runtime's `hashFiles` implementation.
///
/// Context names are matched case-insensitively; a context that was not supplied
/// evaluates to null, like a missing property.
#[derive(Clone)]
pub struct EvalContext<'a> {
    contexts: IndexMap<String, Value>,
    /// What `success()`, `failure()` and `cancelled()` report.
    pub status: Status,
    /// `hashFiles` support; `None` makes `hashFiles()` an evaluation error.
    pub hash_files: Option<HashFilesFn<'a>>,
    /// Cap on the bytes of strings produced during one evaluation.
    pub max_memory: usize,
}

impl Default for EvalContext<'_> {
    fn default() -> Self {
        Self {
            contexts: IndexMap::new(),
            status: Status::Success,
            hash_files: None,
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }
}

impl fmt::Debug for EvalContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvalContext")
            .field("contexts", &self.contexts.keys().collect::<Vec<_>>())
            .field("status", &self.status)
            .field("hash_files", &self.hash_files.is_some())
            .field("max_memory", &self.max_memory)
            .finish()
    }
}

impl<'a> EvalContext<'a> {
    /// An empty context: no named values, status success, no `hashFiles`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) a context.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        self.contexts
            .insert(name.to_ascii_lowercase(), value.into());
    }

    /// Builder form of [`EvalContext::set`].
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.set(name, value);
        self
    }

    /// Builder: sets the status.
    pub fn with_status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    /// Builder: sets the `hashFiles` callback.
    pub fn with_hash_files(mut self, f: HashFilesFn<'a>) -> Self {
        self.hash_files = Some(f);
        self
    }

    /// A context by name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.contexts.get(&name.to_ascii_lowercase())
    }

    /// Removes a context.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.contexts.shift_remove(&name.to_ascii_lowercase())
    }

    /// The supplied contexts (names lower-cased).
    pub fn contexts(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.contexts.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Evaluates `expr`.
pub fn evaluate(expr: &Expr, ctx: &EvalContext<'_>) -> Result<Value, EvalError> {
    let mut ev = Evaluator {
        ctx,
        budget: ctx.max_memory,
    };
    ev.eval(expr)
}

/// The pattern lists of every `hashFiles(…)` call in `expr`, arguments evaluated, in source
/// order and deduplicated. An async runtime can compute these digests first (for example by
/// asking the machine that holds the workspace) and then evaluate with a callback that looks
/// them up, instead of blocking inside the callback. Calls that short-circuiting would skip
/// are included too.
pub fn hash_files_requests(
    expr: &Expr,
    ctx: &EvalContext<'_>,
) -> Result<Vec<Vec<String>>, EvalError> {
    let mut calls = Vec::new();
    expr.walk(&mut |e| {
        if let ExprKind::Call {
            func: Function::HashFiles,
            args,
        } = &e.kind
        {
            calls.push(args);
        }
    });
    let mut out: Vec<Vec<String>> = Vec::new();
    for args in calls {
        let mut patterns = Vec::with_capacity(args.len());
        for a in args {
            patterns.push(evaluate(a, ctx)?.to_display_string());
        }
        if !out.contains(&patterns) {
            out.push(patterns);
        }
    }
    Ok(out)
}

struct Evaluator<'c, 'a> {
    ctx: &'c EvalContext<'a>,
    /// Bytes of produced strings still allowed.
    budget: usize,
}

/// The state of a dereference chain: once a `*` has been applied, later steps map over
/// every element and drop the ones that have nothing there.
enum Chain {
    One(Value),
    Filtered(Vec<Value>),
}

/// `.*` / `[*]`: the items of an array or the values of an object; nothing otherwise.
fn star_items(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => out.extend(items.iter().cloned()),
        Value::Object(map) => out.extend(map.values().cloned()),
        _ => {}
    }
}

/// `v[key]`: arrays take a whole, in-range number (after GitHub's number conversion, so
/// `null`→0, `true`→1, `' 0x02 '`→2); objects take the key's string form, case-insensitively.
fn index(v: &Value, key: &Value) -> Option<Value> {
    if matches!(key, Value::Array(_) | Value::Object(_)) {
        return None;
    }
    match v {
        Value::Array(items) => {
            let n = key.to_number();
            if n.fract() != 0.0 || n < 0.0 || n >= items.len() as f64 {
                return None;
            }
            // Whole, non-negative and below the length, so the cast is exact.
            items.get(n as usize).cloned()
        }
        Value::Object(_) => v.get(&key.to_display_string()).cloned(),
        _ => None,
    }
}

impl Evaluator<'_, '_> {
    fn charge(&mut self, bytes: usize, span: Span) -> Result<(), EvalError> {
        match self.budget.checked_sub(bytes) {
            Some(rest) => {
                self.budget = rest;
                Ok(())
            }
            None => Err(EvalError::new(
                span,
                "the maximum allowed memory size was exceeded",
            )),
        }
    }

    /// Produces a string result, charging it to the memory budget.
    fn string(&mut self, s: String, span: Span) -> Result<Value, EvalError> {
        self.charge(s.len(), span)?;
        Ok(Value::String(s))
    }

    fn eval(&mut self, e: &Expr) -> Result<Value, EvalError> {
        match &e.kind {
            ExprKind::Null => Ok(Value::Null),
            ExprKind::Bool(b) => Ok(Value::Bool(*b)),
            ExprKind::Number(n) => Ok(Value::Number(*n)),
            ExprKind::String(s) => Ok(Value::String(s.clone())),
            ExprKind::Context(name) => Ok(self.ctx.get(name).cloned().unwrap_or_default()),
            ExprKind::Access { base, path } => self.eval_access(base, path),
            ExprKind::Not(inner) => Ok(Value::Bool(!self.eval(inner)?.is_truthy())),
            ExprKind::Binary { op, lhs, rhs } => {
                let l = self.eval(lhs)?;
                match op {
                    BinaryOp::And if !l.is_truthy() => return Ok(l),
                    BinaryOp::Or if l.is_truthy() => return Ok(l),
                    BinaryOp::And | BinaryOp::Or => return self.eval(rhs),
                    _ => {}
                }
                let r = self.eval(rhs)?;
                let ord = l.loose_cmp(&r);
                Ok(Value::Bool(match op {
                    BinaryOp::Eq => l.loose_eq(&r),
                    BinaryOp::Ne => !l.loose_eq(&r),
                    BinaryOp::Lt => ord.is_some_and(|o| o.is_lt()),
                    BinaryOp::Le => ord.is_some_and(|o| o.is_le()),
                    BinaryOp::Gt => ord.is_some_and(|o| o.is_gt()),
                    BinaryOp::Ge => ord.is_some_and(|o| o.is_ge()),
                    BinaryOp::And | BinaryOp::Or => unreachable!("handled above"),
                }))
            }
            ExprKind::Call { func, args } => self.call(*func, args, e.span),
        }
    }

    fn eval_access(&mut self, base: &Expr, path: &[Accessor]) -> Result<Value, EvalError> {
        let mut chain = Chain::One(self.eval(base)?);
        for acc in path {
            let key = match acc {
                Accessor::Index(e) => Some(self.eval(e)?),
                _ => None,
            };
            chain = match (chain, acc) {
                (Chain::One(v), Accessor::Star) => {
                    let mut out = Vec::new();
                    star_items(&v, &mut out);
                    Chain::Filtered(out)
                }
                (Chain::One(v), Accessor::Property(name)) => {
                    Chain::One(v.get(name).cloned().unwrap_or_default())
                }
                (Chain::One(v), Accessor::Index(_)) => {
                    Chain::One(key.and_then(|k| index(&v, &k)).unwrap_or_default())
                }
                (Chain::Filtered(items), Accessor::Star) => {
                    let mut out = Vec::new();
                    for item in &items {
                        star_items(item, &mut out);
                    }
                    Chain::Filtered(out)
                }
                (Chain::Filtered(items), Accessor::Property(name)) => {
                    Chain::Filtered(items.iter().filter_map(|v| v.get(name).cloned()).collect())
                }
                (Chain::Filtered(items), Accessor::Index(_)) => Chain::Filtered(match key {
                    Some(k) => items.iter().filter_map(|v| index(v, &k)).collect(),
                    None => Vec::new(),
                }),
            };
        }
        Ok(match chain {
            Chain::One(v) => v,
            Chain::Filtered(items) => Value::array(items),
        })
    }

    fn call(&mut self, func: Function, args: &[Expr], span: Span) -> Result<Value, EvalError> {
        // `case` evaluates lazily; every other function takes all its arguments.
        if func == Function::Case {
            return self.case(args);
        }
        let mut vals = Vec::with_capacity(args.len());
        for a in args {
            vals.push(self.eval(a)?);
        }
        let arg = |i: usize| vals.get(i).cloned().unwrap_or_default();
        match func {
            Function::Success => Ok(Value::Bool(self.ctx.status == Status::Success)),
            Function::Failure => Ok(Value::Bool(self.ctx.status == Status::Failure)),
            Function::Cancelled => Ok(Value::Bool(self.ctx.status == Status::Cancelled)),
            Function::Always => Ok(Value::Bool(true)),
            Function::Contains => {
                let (search, item) = (arg(0), arg(1));
                Ok(Value::Bool(match &search {
                    Value::Array(items) => items.iter().any(|x| x.loose_eq(&item)),
                    _ => fold_string(&search.to_display_string())
                        .contains(&fold_string(&item.to_display_string())),
                }))
            }
            Function::StartsWith => {
                let (s, p) = (arg(0).to_display_string(), arg(1).to_display_string());
                Ok(Value::Bool(fold_string(&s).starts_with(&fold_string(&p))))
            }
            Function::EndsWith => {
                let (s, p) = (arg(0).to_display_string(), arg(1).to_display_string());
                Ok(Value::Bool(fold_string(&s).ends_with(&fold_string(&p))))
            }
            Function::Format => {
                let out = format(&vals, self.budget, span)?;
                self.string(out, span)
            }
            Function::Join => {
                let sep = match vals.get(1) {
                    None | Some(Value::Array(_) | Value::Object(_)) => ",".to_owned(),
                    Some(v) => v.to_display_string(),
                };
                let out = match arg(0) {
                    Value::Array(items) => {
                        let mut out = String::new();
                        for (i, item) in items.iter().enumerate() {
                            if i > 0 {
                                out.push_str(&sep);
                            }
                            out.push_str(&item.to_display_string());
                            if out.len() > self.budget {
                                break;
                            }
                        }
                        out
                    }
                    Value::Object(_) => String::new(),
                    other => other.to_display_string(),
                };
                self.string(out, span)
            }
            Function::ToJson => {
                let mut out = String::new();
                let budget = self.budget;
                write_json(&arg(0), 0, &mut out, budget).map_err(|()| self.over_budget(span))?;
                self.string(out, span)
            }
            Function::FromJson => {
                let text = arg(0).to_display_string();
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(json) => Ok(Value::from(json)),
                    Err(e) => Err(EvalError::new(span, format!("fromJSON: invalid JSON: {e}"))),
                }
            }
            Function::HashFiles => {
                let Some(hash) = self.ctx.hash_files else {
                    return Err(EvalError::new(
                        span,
                        "hashFiles is not available in this context",
                    ));
                };
                let patterns: Vec<String> = vals.iter().map(Value::to_display_string).collect();
                match hash(&patterns) {
                    Ok(digest) => self.string(digest, span),
                    Err(e) => Err(EvalError::new(span, format!("hashFiles failed: {e}"))),
                }
            }
            Function::Case => unreachable!("handled above"),
        }
    }

    fn over_budget(&self, span: Span) -> EvalError {
        EvalError::new(span, "the maximum allowed memory size was exceeded")
    }

    /// `case(pred1, value1, pred2, value2, …, default)`: the value of the first predicate
    /// that is `true`; predicates must be booleans.
    fn case(&mut self, args: &[Expr]) -> Result<Value, EvalError> {
        let mut pairs = args.chunks_exact(2);
        for pair in pairs.by_ref() {
            match self.eval(&pair[0])? {
                Value::Bool(true) => return self.eval(&pair[1]),
                Value::Bool(false) => {}
                _ => {
                    return Err(EvalError::new(
                        pair[0].span,
                        "case predicate must evaluate to a boolean value",
                    ));
                }
            }
        }
        match pairs.remainder() {
            [default] => self.eval(default),
            _ => Ok(Value::Null),
        }
    }
}

/// GitHub's `format`: `{N}` placeholders, `{{` and `}}` escapes; anything else with a brace
/// is an error. Error texts are act's (which extend GitHub's `The following format string
/// is invalid: …`), because the conformance suite checks them verbatim.
fn format(vals: &[Value], budget: usize, span: Span) -> Result<String, EvalError> {
    let fmt = vals
        .first()
        .map(Value::to_display_string)
        .unwrap_or_default();
    let args = vals.get(1..).unwrap_or(&[]);
    let invalid = |prefix: &str| {
        EvalError::new(
            span,
            format!("{prefix}The following format string is invalid: '{fmt}'"),
        )
    };
    let mut out = String::new();
    let mut rest = fmt.as_str();
    loop {
        if out.len() > budget {
            return Err(EvalError::new(
                span,
                "the maximum allowed memory size was exceeded",
            ));
        }
        let lbrace = rest.find('{');
        let rbrace = rest.find('}');
        match (lbrace, rbrace) {
            (None, None) => {
                out.push_str(rest);
                return Ok(out);
            }
            (Some(l), r) if r.is_none_or(|r| l < r) => {
                out.push_str(&rest[..l]);
                let after = &rest[l + 1..];
                if let Some(escaped) = after.strip_prefix('{') {
                    out.push('{');
                    rest = escaped;
                    continue;
                }
                let Some(close) = after.find('}') else {
                    return Err(invalid("Unclosed brackets. "));
                };
                let digits = &after[..close];
                let index = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| digits.parse::<i32>().ok())
                    .flatten()
                    .ok_or_else(|| invalid(""))?;
                let Some(value) = usize::try_from(index).ok().and_then(|i| args.get(i)) else {
                    return Err(EvalError::new(
                        span,
                        format!(
                            "The following format string references more arguments than were supplied: '{fmt}'"
                        ),
                    ));
                };
                out.push_str(&value.to_display_string());
                rest = &after[close + 1..];
            }
            (_, Some(r)) => {
                out.push_str(&rest[..r]);
                if rest[r + 1..].starts_with('}') {
                    out.push('}');
                    rest = &rest[r + 2..];
                } else {
                    return Err(invalid("Closing bracket without opening one. "));
                }
            }
            (Some(_), None) => unreachable!("covered by the left-brace arm"),
        }
    }
}

/// Writes `v` as JSON the way GitHub's `toJSON` prints it: two-space indentation, `": "`
/// after keys, `[]`/`{}` for empty containers, integers without `.0`. Fails when the output
/// grows past `budget` bytes.
fn write_json(v: &Value, indent: usize, out: &mut String, budget: usize) -> Result<(), ()> {
    if out.len() > budget {
        return Err(());
    }
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&json_number(*n)),
        Value::String(s) => push_json_string(s, out),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                push_indent(indent + 1, out);
                write_json(item, indent + 1, out, budget)?;
            }
            out.push('\n');
            push_indent(indent, out);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                push_indent(indent + 1, out);
                push_json_string(k, out);
                out.push_str(": ");
                write_json(item, indent + 1, out, budget)?;
            }
            out.push('\n');
            push_indent(indent, out);
            out.push('}');
        }
    }
    Ok(())
}

fn push_indent(level: usize, out: &mut String) {
    out.extend(std::iter::repeat_n("  ", level));
}

fn push_json_string(s: &str, out: &mut String) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        // Serializing a &str cannot fail; keep a valid (if lossy) result regardless.
        Err(_) => out.push_str("\"\""),
    }
}

/// A number as JSON text: whole numbers in the exactly-representable range print as
/// integers, others in shortest round-trip form; NaN/±Infinity (not JSON) as strings.
fn json_number(n: f64) -> String {
    match super::value::Value::Number(n).to_json() {
        serde_json::Value::Number(num) => num.to_string(),
        serde_json::Value::String(s) => format!("\"{s}\""),
        _ => number_to_string(n),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn eval_with(src: &str, ctx: &EvalContext<'_>) -> Result<Value, EvalError> {
        evaluate(&parse(src).expect("parses"), ctx)
    }

    fn eval(src: &str) -> Value {
        eval_with(src, &EvalContext::new()).expect("evaluates")
    }

    #[test]
    fn operators_return_operands() {
        assert_eq!(eval("0 || 'x'"), Value::from("x"));
        assert_eq!(eval("'' && 1"), Value::from(""));
        assert_eq!(eval("1 < 2 && 'b' >= 'A'"), Value::Bool(true));
        assert_eq!(eval("NaN == NaN"), Value::Bool(false));
        assert_eq!(eval("'abc' == 'ABC'"), Value::Bool(true));
    }

    #[test]
    fn short_circuit_skips_errors() {
        assert_eq!(eval("false && fromJSON('nope')"), Value::Bool(false));
        assert_eq!(eval("true || format('{')"), Value::Bool(true));
    }

    #[test]
    fn filters_map_over_elements() {
        let ctx = EvalContext::new().with(
            "foo",
            Value::from(serde_json::json!([
                {"one": 1, "two": 2},
                {"zero": 0},
                {"ONE": 3, "p": [10, 20]},
                [5, 6]
            ])),
        );
        let v = eval_with("foo.*.one", &ctx).unwrap();
        assert_eq!(v.to_json(), serde_json::json!([1, 3]));
        let v = eval_with("foo[*].p[1]", &ctx).unwrap();
        assert_eq!(v.to_json(), serde_json::json!([20]));
        let v = eval_with("foo.*.*", &ctx).unwrap();
        assert_eq!(v.to_json(), serde_json::json!([1, 2, 0, 3, [10, 20], 5, 6]));
        let v = eval_with("(foo.*.one)[1]", &ctx).unwrap();
        assert_eq!(v, Value::Number(3.0));
        let v = eval_with("foo[3][true]", &ctx).unwrap();
        assert_eq!(v, Value::Number(6.0));
    }

    #[test]
    fn format_rules() {
        assert_eq!(eval("format('{{{0}}}', 'x')"), Value::from("{x}"));
        assert_eq!(eval("format('{0}{1}', 1.5, null)"), Value::from("1.5"));
        for (src, want) in [
            ("format('{0}}', 1)", "Closing bracket without opening one. "),
            ("format('{0', 1)", "Unclosed brackets. "),
            ("format('{a}', 1)", "The following format string is invalid"),
            (
                "format('{-1}', 1)",
                "The following format string is invalid",
            ),
            ("format('{1}', 1)", "references more arguments"),
        ] {
            let e = eval_with(src, &EvalContext::new()).unwrap_err();
            assert!(e.message.contains(want), "{src}: {}", e.message);
        }
    }

    #[test]
    fn to_json_is_pretty() {
        assert_eq!(
            eval("toJSON(fromJSON('{\"a\":[1,2.5,{}],\"b\":[]}'))"),
            Value::from("{\n  \"a\": [\n    1,\n    2.5,\n    {}\n  ],\n  \"b\": []\n}")
        );
        assert_eq!(eval("toJSON(NaN)"), Value::from("\"NaN\""));
    }

    #[test]
    fn status_functions_follow_status() {
        for (status, s, f, c) in [
            (Status::Success, true, false, false),
            (Status::Failure, false, true, false),
            (Status::Cancelled, false, false, true),
        ] {
            let ctx = EvalContext::new().with_status(status);
            let got = eval_with(
                "format('{0}{1}{2}{3}', success(), failure(), cancelled(), always())",
                &ctx,
            )
            .unwrap();
            assert_eq!(got, Value::from(format!("{s}{f}{c}true")));
        }
    }

    #[test]
    fn hash_files_uses_callback() {
        let cb = |pats: &[String]| -> Result<String, String> { Ok(pats.join("|")) };
        let ctx = EvalContext::new().with_hash_files(&cb);
        assert_eq!(
            eval_with("hashFiles('a', '**/b')", &ctx).unwrap(),
            Value::from("a|**/b")
        );
        let e = parse(
            "hashFiles(format('{0}.lock', matrix.x)) || hashFiles('b', 'c') || hashFiles('b', 'c')",
        )
        .unwrap();
        let reqs = hash_files_requests(
            &e,
            &EvalContext::new().with("matrix", Value::from(serde_json::json!({"x": "y"}))),
        )
        .unwrap();
        assert_eq!(
            reqs,
            vec![
                vec!["y.lock".to_owned()],
                vec!["b".to_owned(), "c".to_owned()]
            ]
        );
        let err = eval_with("hashFiles('a')", &EvalContext::new()).unwrap_err();
        assert!(err.message.contains("not available"));
    }

    #[test]
    fn memory_is_capped() {
        let mut src = "'aaaaaaaaaaaaaaaa'".to_owned();
        for _ in 0..30 {
            src = format!("format('{{0}}{{0}}{{0}}{{0}}', {src})");
        }
        let e = eval_with(&src, &EvalContext::new()).unwrap_err();
        assert!(e.message.contains("memory"), "{}", e.message);
    }

    #[test]
    fn deepest_accepted_expressions_evaluate() {
        // The parser's limits keep evaluation recursion shallow enough for a 2 MiB test
        // thread even in debug builds.
        let chain = vec!["1"; super::super::MAX_HEIGHT as usize].join(" && ");
        assert_eq!(eval(&chain), Value::Number(1.0));
        let nots = format!("{}0", "!".repeat(48));
        assert_eq!(eval(&nots), Value::Bool(false));
        let calls = format!("{}'[1]'{}", "toJSON(fromJSON(".repeat(24), "))".repeat(24));
        assert_eq!(eval(&calls), Value::from("[\n  1\n]"));
        let parens = format!("{}1{}", "(".repeat(60), ")".repeat(60));
        assert_eq!(eval(&parens), Value::Number(1.0));
    }

    #[test]
    fn case_function() {
        assert_eq!(eval("case(false, 1, true, 2, 3)"), Value::Number(2.0));
        assert_eq!(eval("case(false, 1, 3)"), Value::Number(3.0));
        assert!(eval_with("case(1, 1, 3)", &EvalContext::new()).is_err());
    }
}
