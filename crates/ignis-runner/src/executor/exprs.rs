//! The one place the executor touches the expression engine: templates, conditions and
//! the typed `BoolExpr`/`NumberExpr` fields, with errors turned into plain messages that
//! name the field they came from.

use ignis_workflow::expr::{EvalContext, Status, Value, parse_condition, parse_template};
use ignis_workflow::model::{BoolExpr, NumberExpr};

/// Evaluate `src` as a template to a string (`${{ }}` interpolation).
pub(crate) fn string(src: &str, ctx: &EvalContext<'_>, what: &str) -> Result<String, String> {
    if !src.contains("${{") {
        return Ok(src.to_string());
    }
    let t = parse_template(src).map_err(|e| format!("{what}: {e}"))?;
    t.evaluate_string(ctx).map_err(|e| format!("{what}: {e}"))
}

/// Evaluate a YAML value: strings are templates (a lone `${{ x }}` keeps `x`'s type),
/// arrays and objects are evaluated element-wise.
pub(crate) fn value(
    v: &serde_json::Value,
    ctx: &EvalContext<'_>,
    what: &str,
) -> Result<Value, String> {
    Ok(match v {
        serde_json::Value::String(s) if s.contains("${{") => {
            let t = parse_template(s).map_err(|e| format!("{what}: {e}"))?;
            t.evaluate(ctx).map_err(|e| format!("{what}: {e}"))?
        }
        serde_json::Value::Array(a) => Value::array(
            a.iter()
                .map(|x| value(x, ctx, what))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        serde_json::Value::Object(o) => {
            let mut m = ignis_workflow::expr::Map::new();
            for (k, x) in o {
                if is_insert(k) {
                    // `${{ insert }}: mapping` merges the mapping into its parent.
                    match value(x, ctx, what)? {
                        Value::Object(inner) => {
                            for (ik, iv) in inner.iter() {
                                m.insert(ik.clone(), iv.clone());
                            }
                        }
                        other => {
                            return Err(format!(
                                "{what}: ${{{{ insert }}}} needs a mapping, got {}",
                                other.kind()
                            ));
                        }
                    }
                } else {
                    let key = if k.contains("${{") {
                        string(k, ctx, what)?
                    } else {
                        k.clone()
                    };
                    m.insert(key, value(x, ctx, what)?);
                }
            }
            Value::object(m)
        }
        other => Value::from(other),
    })
}

/// Whether a mapping key is the `${{ insert }}` directive.
fn is_insert(key: &str) -> bool {
    key.trim()
        .strip_prefix("${{")
        .and_then(|k| k.strip_suffix("}}"))
        .is_some_and(|k| k.trim() == "insert")
}

/// Evaluate a YAML value to the string GitHub would put in an env var or input.
pub(crate) fn value_string(
    v: &serde_json::Value,
    ctx: &EvalContext<'_>,
    what: &str,
) -> Result<String, String> {
    match v {
        serde_json::Value::String(s) => string(s, ctx, what),
        other => Ok(ignis_workflow::model::env_string(other)),
    }
}

/// Evaluate an `if:` (absent = `success()`).
pub(crate) fn condition(
    src: Option<&str>,
    ctx: &EvalContext<'_>,
    what: &str,
) -> Result<bool, String> {
    let Some(src) = src else {
        return Ok(ctx.status == Status::Success);
    };
    let c = parse_condition(src).map_err(|e| format!("{what}: {e}"))?;
    c.evaluate(ctx).map_err(|e| format!("{what}: {e}"))
}

pub(crate) fn bool_expr(
    b: Option<&BoolExpr>,
    ctx: &EvalContext<'_>,
    what: &str,
) -> Result<bool, String> {
    match b {
        None => Ok(false),
        Some(BoolExpr::Literal(v)) => Ok(*v),
        Some(BoolExpr::Expr(s)) => {
            let t = parse_template(s).map_err(|e| format!("{what}: {e}"))?;
            let v = t.evaluate(ctx).map_err(|e| format!("{what}: {e}"))?;
            Ok(match &v {
                Value::String(s) => s == "true",
                other => other.is_truthy(),
            })
        }
    }
}

pub(crate) fn number_expr(
    n: Option<&NumberExpr>,
    ctx: &EvalContext<'_>,
    what: &str,
) -> Result<Option<f64>, String> {
    match n {
        None => Ok(None),
        Some(NumberExpr::Literal(v)) => Ok(Some(*v)),
        Some(NumberExpr::Expr(s)) => {
            let t = parse_template(s).map_err(|e| format!("{what}: {e}"))?;
            let v = t
                .evaluate(ctx)
                .map_err(|e| format!("{what}: {e}"))?
                .to_number();
            if v.is_nan() {
                Err(format!("{what}: {s:?} is not a number"))
            } else {
                Ok(Some(v))
            }
        }
    }
}
