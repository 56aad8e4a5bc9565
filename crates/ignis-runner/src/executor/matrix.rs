//! Matrix expansion at run time (a matrix may depend on `needs` outputs, so it is expanded
//! when the job becomes ready): cartesian product of the dimensions, `exclude` (partial
//! matches), then `include` (extend matching legs without overwriting original values, or add
//! a new leg), exactly as GitHub documents it. Also `--matrix key:value` filtering.

use super::exprs;
use ignis_workflow::expr::EvalContext;
use ignis_workflow::model::{MatrixEntries, MatrixSpec, MatrixValues};
use serde_json::{Map, Value};

/// GitHub's cap on legs per matrix.
pub const MAX_LEGS: usize = 256;

fn entries(
    e: &MatrixEntries,
    ctx: &EvalContext<'_>,
    what: &str,
) -> Result<Vec<Map<String, Value>>, String> {
    let list: Vec<Value> = match e {
        MatrixEntries::List(l) => l
            .iter()
            .map(|m| Value::Object(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
            .collect(),
        MatrixEntries::Expr(s) => {
            match exprs::value(&Value::String(s.clone()), ctx, what)?.into() {
                Value::Array(a) => a,
                Value::Null => vec![],
                other => return Err(format!("{what}: expected a list, got {other}")),
            }
        }
    };
    let mut out = Vec::new();
    for item in list {
        // Entries may themselves hold expressions.
        match serde_json::Value::from(exprs::value(&item, ctx, what)?) {
            Value::Object(m) => out.push(m),
            other => return Err(format!("{what}: expected a mapping, got {other}")),
        }
    }
    Ok(out)
}

fn matches_partial(leg: &Map<String, Value>, pattern: &Map<String, Value>) -> bool {
    pattern
        .iter()
        .all(|(k, v)| leg.get(k).is_some_and(|lv| value_matches(lv, v)))
}

fn value_matches(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => matches_partial(x, y),
        _ => a == b,
    }
}

/// Expand a job's matrix. `None` = the job has no matrix (one leg, `matrix` empty).
pub fn expand(
    spec: Option<&MatrixSpec>,
    ctx: &EvalContext<'_>,
) -> Result<Option<Vec<Map<String, Value>>>, String> {
    let Some(spec) = spec else { return Ok(None) };
    let (dims, include, exclude) = match spec {
        MatrixSpec::Matrix(m) => {
            let mut dims: Vec<(String, Vec<Value>)> = Vec::new();
            for (k, vals) in &m.dimensions {
                // A dimension name may itself be an expression.
                let k = &if k.contains("${{") {
                    exprs::string(k, ctx, "matrix key")?
                } else {
                    k.clone()
                };
                let list = match vals {
                    MatrixValues::List(l) => {
                        let mut out = Vec::new();
                        for v in l {
                            let ev = serde_json::Value::from(exprs::value(
                                v,
                                ctx,
                                &format!("matrix.{k}"),
                            )?);
                            match (v, ev) {
                                // An item that is an expression yielding a list is spliced in.
                                (Value::String(src), Value::Array(items))
                                    if src.contains("${{") =>
                                {
                                    out.extend(items)
                                }
                                (_, ev) => out.push(ev),
                            }
                        }
                        out
                    }
                    MatrixValues::Expr(s) => {
                        match serde_json::Value::from(exprs::value(
                            &Value::String(s.clone()),
                            ctx,
                            &format!("matrix.{k}"),
                        )?) {
                            Value::Array(a) => a,
                            other => {
                                return Err(format!("matrix.{k}: expected a list, got {other}"));
                            }
                        }
                    }
                };
                dims.push((k.clone(), list));
            }
            (
                dims,
                entries(&m.include, ctx, "matrix.include")?,
                entries(&m.exclude, ctx, "matrix.exclude")?,
            )
        }
        MatrixSpec::Expr(s) => {
            let v: Value = exprs::value(&Value::String(s.clone()), ctx, "strategy.matrix")?.into();
            let Value::Object(obj) = v else {
                return Err(format!("strategy.matrix: expected a mapping, got {v}"));
            };
            let mut dims = Vec::new();
            let (mut include, mut exclude) = (Vec::new(), Vec::new());
            for (k, v) in obj {
                let list_of_maps = |v: Value| -> Result<Vec<Map<String, Value>>, String> {
                    match v {
                        Value::Array(a) => a
                            .into_iter()
                            .map(|x| match x {
                                Value::Object(m) => Ok(m),
                                other => Err(format!("matrix.{k}: expected mappings, got {other}")),
                            })
                            .collect(),
                        other => Err(format!("matrix.{k}: expected a list, got {other}")),
                    }
                };
                match k.as_str() {
                    "include" => include = list_of_maps(v)?,
                    "exclude" => exclude = list_of_maps(v)?,
                    _ => match v {
                        Value::Array(a) => dims.push((k, a)),
                        other => return Err(format!("matrix.{k}: expected a list, got {other}")),
                    },
                }
            }
            (dims, include, exclude)
        }
    };
    let mut legs: Vec<Map<String, Value>> = Vec::new();
    if !dims.is_empty() {
        legs.push(Map::new());
        for (k, vals) in &dims {
            let mut next = Vec::with_capacity(legs.len() * vals.len());
            for leg in &legs {
                for v in vals {
                    let mut l = leg.clone();
                    l.insert(k.clone(), v.clone());
                    next.push(l);
                }
            }
            legs = next;
            if legs.len() > MAX_LEGS * 16 {
                return Err(format!("matrix has more than {MAX_LEGS} legs"));
            }
        }
    }
    legs.retain(|leg| !exclude.iter().any(|ex| matches_partial(leg, ex)));
    let original_keys: Vec<String> = dims.iter().map(|(k, _)| k.clone()).collect();
    let base_count = legs.len();
    for inc in include {
        let mut matched = false;
        for leg in legs.iter_mut().take(base_count) {
            // An include entry extends a leg when it does not change any original value.
            let compatible = inc
                .iter()
                .all(|(k, v)| !original_keys.contains(k) || leg.get(k).is_some_and(|lv| lv == v));
            if compatible {
                for (k, v) in &inc {
                    if !original_keys.contains(k) {
                        leg.insert(k.clone(), v.clone());
                    }
                }
                matched = true;
            }
        }
        if !matched {
            legs.push(inc);
        }
    }
    if legs.len() > MAX_LEGS {
        return Err(format!(
            "matrix has {} legs, more than GitHub's limit of {MAX_LEGS}",
            legs.len()
        ));
    }
    Ok(Some(legs))
}

/// Keep the legs matching every `--matrix key:value` filter (values compared as strings).
pub fn filter(
    legs: Vec<Map<String, Value>>,
    filters: &[(String, String)],
) -> Vec<Map<String, Value>> {
    if filters.is_empty() {
        return legs;
    }
    let as_str = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    legs.into_iter()
        .filter(|leg| {
            let keys: std::collections::BTreeSet<&str> =
                filters.iter().map(|(k, _)| k.as_str()).collect();
            keys.iter().all(|k| match leg.get(*k) {
                None => true,
                Some(v) => filters
                    .iter()
                    .filter(|(fk, _)| fk == k)
                    .any(|(_, fv)| *fv == as_str(v)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ignis_workflow::model::Matrix;
    use indexmap::IndexMap;
    use serde_json::json;

    fn m(dims: &[(&str, Value)], include: Value, exclude: Value) -> MatrixSpec {
        let to_entries = |v: Value| {
            MatrixEntries::List(
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| {
                        x.as_object()
                            .unwrap()
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect::<IndexMap<_, _>>()
                    })
                    .collect(),
            )
        };
        MatrixSpec::Matrix(Matrix {
            dimensions: dims
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        MatrixValues::List(v.as_array().unwrap().clone()),
                    )
                })
                .collect(),
            include: to_entries(include),
            exclude: to_entries(exclude),
        })
    }

    #[test]
    fn github_docs_example() {
        // From GitHub's "Expanding or adding matrix configurations".
        let spec = m(
            &[
                ("fruit", json!(["apple", "pear"])),
                ("animal", json!(["cat", "dog"])),
            ],
            json!([
                {"color": "green"},
                {"color": "pink", "animal": "cat"},
                {"fruit": "apple", "shape": "circle"},
                {"fruit": "banana"},
                {"fruit": "banana", "animal": "cat"}
            ]),
            json!([]),
        );
        let legs = expand(Some(&spec), &EvalContext::new()).unwrap().unwrap();
        let legs: Vec<Value> = legs.into_iter().map(Value::Object).collect();
        assert_eq!(
            legs,
            vec![
                json!({"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"}),
                json!({"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"}),
                json!({"fruit": "pear", "animal": "cat", "color": "pink"}),
                json!({"fruit": "pear", "animal": "dog", "color": "green"}),
                json!({"fruit": "banana"}),
                json!({"fruit": "banana", "animal": "cat"}),
            ]
        );
    }

    #[test]
    fn exclude_partial_and_filter() {
        let spec = m(
            &[("os", json!(["a", "b"])), ("v", json!([1, 2]))],
            json!([]),
            json!([{"os": "a", "v": 2}]),
        );
        let legs = expand(Some(&spec), &EvalContext::new()).unwrap().unwrap();
        assert_eq!(legs.len(), 3);
        let f = filter(legs, &[("v".into(), "1".into())]);
        assert_eq!(f.len(), 2);
        assert!(expand(None, &EvalContext::new()).unwrap().is_none());
    }
}
