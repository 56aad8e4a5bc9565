//! Property tests: no input makes the expression parser, evaluator, template parser,
//! `if:` evaluation or the hashFiles glob panic, and a few algebraic facts hold.

use ignis_workflow::expr::glob::GlobPatterns;
use ignis_workflow::expr::{self, EvalContext, Status, Value};
use proptest::prelude::*;

fn ctx() -> EvalContext<'static> {
    EvalContext::new()
        .with(
            "github",
            Value::from(serde_json::json!({
                "event": {"commits": [{"author": {"name": "a"}}, {"author": null}]},
                "ref": "refs/heads/main"
            })),
        )
        .with(
            "matrix",
            Value::from(serde_json::json!({"os": "linux", "n": [1, 2.5]})),
        )
        .with("env", Value::from(serde_json::json!({"A": "x"})))
}

/// Strings built from the language's own tokens reach much deeper than random text.
fn token_soup() -> impl Strategy<Value = String> {
    let tokens = prop::sample::select(vec![
        "(",
        ")",
        "[",
        "]",
        ",",
        ".",
        "*",
        "!",
        "!=",
        "==",
        "<",
        "<=",
        ">",
        ">=",
        "&&",
        "||",
        "'a'",
        "''",
        "'{0}'",
        "'{{'",
        "'}'",
        "1",
        "-2.5e3",
        "0xff",
        "NaN",
        "Infinity",
        "null",
        "true",
        "github",
        "matrix",
        "env",
        "event",
        "commits",
        "n",
        "os",
        "contains",
        "startsWith",
        "endsWith",
        "format",
        "join",
        "toJSON",
        "fromJSON",
        "hashFiles",
        "success",
        "failure",
        "always",
        "cancelled",
        "case",
        "${{",
        "}}",
        " ",
        "@",
        "'[1,{}]'",
    ]);
    prop::collection::vec(tokens, 0..40).prop_map(|v| v.concat())
}

#[cfg(test)]
mod props {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_text_never_panics(src in any::<String>()) {
            let c = ctx();
            if let Ok(e) = expr::parse(&src) {
                let _ = expr::evaluate(&e, &c);
            }
            if let Ok(t) = expr::parse_template(&src) {
                let _ = t.evaluate(&c);
            }
            let _ = expr::evaluate_if(&src, &c.clone().with_status(Status::Failure));
            let g = GlobPatterns::new(&[src.as_str()], "/ws");
            let _ = g.matches(&src, false);
            let _ = g.search_roots();
        }

        #[test]
        fn token_soup_never_panics(src in token_soup()) {
            let c = ctx();
            if let Ok(e) = expr::parse(&src) {
                // Error offsets and spans stay inside the source.
                prop_assert!(e.span.end <= src.len());
                if let Ok(v) = expr::evaluate(&e, &c) {
                    let _ = v.to_display_string();
                    let _ = v.to_json();
                }
            } else if let Err(err) = expr::parse(&src) {
                prop_assert!(err.offset <= src.len(), "{err:?}");
            }
            if let Ok(t) = expr::parse_template(&src) {
                let _ = t.evaluate(&c);
            }
            let _ = expr::evaluate_if(&src, &c);
        }

        #[test]
        fn not_is_negated_truthiness(src in token_soup()) {
            let c = ctx();
            if let Ok(e) = expr::parse(&src)
                && let Ok(v) = expr::evaluate(&e, &c)
            {
                let negated = expr::parse(&format!("!({src})"))
                    .ok()
                    .and_then(|n| expr::evaluate(&n, &c).ok());
                if let Some(n) = negated {
                    prop_assert_eq!(n, Value::Bool(!v.is_truthy()));
                }
            }
        }

        #[test]
        fn string_literals_round_trip(s in any::<String>()) {
            let quoted = format!("'{}'", s.replace('\'', "''"));
            let e = expr::parse(&quoted);
            let v = expr::evaluate(&e.expect("a quoted string parses"), &EvalContext::new());
            prop_assert_eq!(v, Ok(Value::String(s)));
        }

        #[test]
        fn numbers_print_and_parse_back(n in any::<f64>()) {
            let s = expr::number_to_string(n);
            let back = Value::String(s.clone()).to_number();
            if n.is_nan() {
                prop_assert!(back.is_nan());
            } else if n == 0.0 || n.is_infinite() {
                // `-0` prints as `0`; -0.0 == 0.0, so one comparison covers both.
                prop_assert_eq!(back, n);
            } else {
                // 15 significant digits survive the round trip.
                prop_assert!(((back - n) / n).abs() < 1e-14, "{n} -> {s} -> {back}");
            }
        }
    }
}
