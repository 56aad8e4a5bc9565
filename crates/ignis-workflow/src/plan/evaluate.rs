//! Evaluating the parts of a job the planner needs: the `strategy.matrix` template (which
//! may be one expression, hold expressions as keys or values, `${{ insert }}` merge keys, or
//! expressions yielding arrays spliced into a vector) and the job's display name.
//!
//! GitHub evaluates `strategy` with the `github`, `needs`, `vars` and `inputs` contexts
//! ("Contexts reference" → context availability). A matrix that reads `needs` can only be
//! expanded once those jobs have finished; [`matrix_contexts`] tells which contexts it reads.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::matrix::{Leg, MatrixError, expand_matrix, value_to_display};
use crate::expr::{self, EvalContext, EvalError, ExprError, parse_template};
use crate::model::{Job, Matrix, MatrixEntries, MatrixSpec, MatrixValues};

/// Why a matrix template could not be turned into legs. User errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatrixEvalError {
    /// An expression in the matrix does not parse.
    #[error("invalid expression in matrix '{text}': {source}")]
    Parse {
        /// The string holding the expression.
        text: String,
        /// The parse error.
        #[source]
        source: ExprError,
    },
    /// An expression in the matrix failed to evaluate.
    #[error("cannot evaluate matrix expression '{text}': {source}")]
    Eval {
        /// The string holding the expression.
        text: String,
        /// The evaluation error.
        #[source]
        source: EvalError,
    },
    /// `${{ insert }}` with something other than a mapping.
    #[error("matrix '${{{{ insert }}}}' needs a mapping value")]
    InsertNotMapping,
    /// The evaluated matrix is not a valid matrix.
    #[error(transparent)]
    Matrix(#[from] MatrixError),
}

/// The model's matrix written back as the JSON tree it came from (expressions stay strings).
pub fn matrix_template(spec: &MatrixSpec) -> Value {
    match spec {
        MatrixSpec::Expr(s) => Value::String(s.clone()),
        MatrixSpec::Matrix(Matrix {
            dimensions,
            include,
            exclude,
        }) => {
            let mut map = Map::new();
            for (key, values) in dimensions {
                let v = match values {
                    MatrixValues::List(items) => Value::Array(items.clone()),
                    MatrixValues::Expr(s) => Value::String(s.clone()),
                };
                map.insert(key.clone(), v);
            }
            for (key, entries) in [("include", include), ("exclude", exclude)] {
                match entries {
                    MatrixEntries::List(list) if list.is_empty() => {}
                    MatrixEntries::List(list) => {
                        let items = list
                            .iter()
                            .map(|e| {
                                Value::Object(
                                    e.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                                )
                            })
                            .collect();
                        map.insert(key.to_owned(), Value::Array(items));
                    }
                    MatrixEntries::Expr(s) => {
                        map.insert(key.to_owned(), Value::String(s.clone()));
                    }
                }
            }
            Value::Object(map)
        }
    }
}

/// Every context name (lower-cased) that expressions in the matrix read; empty for a fully
/// literal matrix. Unparsable expressions are skipped here (validation reports them).
pub fn matrix_contexts(spec: &MatrixSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect_contexts(&matrix_template(spec), &mut out);
    out
}

/// Whether a job's matrix reads `needs`, so it can only be expanded once those jobs finish.
pub fn matrix_depends_on_needs(job: &Job) -> bool {
    job.strategy
        .as_ref()
        .and_then(|s| s.matrix.as_ref())
        .is_some_and(|m| matrix_contexts(m).contains("needs"))
}

fn collect_contexts(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) if s.contains("${{") => {
            if let Ok(t) = parse_template(s) {
                out.extend(t.referenced_contexts());
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_contexts(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                if k.contains("${{")
                    && !is_insert(k)
                    && let Ok(t) = parse_template(k)
                {
                    out.extend(t.referenced_contexts());
                }
                collect_contexts(v, out);
            }
        }
        _ => {}
    }
}

/// Evaluates a matrix template with `ctx` (which must hold every context the matrix reads)
/// and expands it into legs.
pub fn evaluate_matrix(
    spec: &MatrixSpec,
    ctx: &EvalContext<'_>,
) -> Result<Vec<Leg>, MatrixEvalError> {
    let value = evaluate_tree(&matrix_template(spec), ctx)?;
    Ok(expand_matrix(&value)?)
}

/// Evaluates every `${{ }}` in a JSON tree: strings become the expression's value (a string
/// that is exactly one expression keeps the value's type), keys are interpolated,
/// `${{ insert }}` keys merge their mapping into the parent, and an array item that is one
/// expression yielding an array is spliced into the parent array.
pub fn evaluate_tree(v: &Value, ctx: &EvalContext<'_>) -> Result<Value, MatrixEvalError> {
    match v {
        Value::String(s) => evaluate_string(s, ctx),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let single = matches!(item, Value::String(s) if is_single_expression(s));
                match evaluate_tree(item, ctx)? {
                    Value::Array(inner) if single => out.extend(inner),
                    other => out.push(other),
                }
            }
            Ok(Value::Array(out))
        }
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let value = evaluate_tree(v, ctx)?;
                if is_insert(k) {
                    let Value::Object(inner) = value else {
                        return Err(MatrixEvalError::InsertNotMapping);
                    };
                    out.extend(inner);
                    continue;
                }
                let key = if k.contains("${{") {
                    value_to_display(&evaluate_string(k, ctx)?)
                } else {
                    k.clone()
                };
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

fn evaluate_string(s: &str, ctx: &EvalContext<'_>) -> Result<Value, MatrixEvalError> {
    if !s.contains("${{") {
        return Ok(Value::String(s.to_owned()));
    }
    let template = parse_template(s).map_err(|source| MatrixEvalError::Parse {
        text: s.to_owned(),
        source,
    })?;
    let value = template
        .evaluate(ctx)
        .map_err(|source| MatrixEvalError::Eval {
            text: s.to_owned(),
            source,
        })?;
    Ok(value.to_json())
}

fn is_single_expression(s: &str) -> bool {
    s.contains("${{") && parse_template(s).is_ok_and(|t| t.single_expression().is_some())
}

/// `${{ insert }}` (any spacing or case), GitHub's directive to merge a mapping into its parent.
fn is_insert(key: &str) -> bool {
    key.trim()
        .strip_prefix("${{")
        .and_then(|k| k.strip_suffix("}}"))
        .is_some_and(|inner| inner.trim().eq_ignore_ascii_case("insert"))
}

/// A job's display name, as GitHub shows it: the evaluated `name:` (or the job id), followed
/// by the leg's values in parentheses — unless `name:` itself reads `matrix`, in which case
/// the evaluated name stands alone (`build (ubuntu, 18)` vs `PHP ubuntu 18`). `ctx` supplies
/// the other contexts a name may read; a name that fails to evaluate is shown as written.
pub fn display_name(job: &Job, leg: Option<&Leg>, ctx: &EvalContext<'_>) -> String {
    LegNamer::new(job).name(leg, ctx)
}

/// [`display_name`] for many legs of one job: the `name:` template is parsed once.
#[derive(Debug)]
pub struct LegNamer<'j> {
    raw: &'j str,
    parsed: Option<crate::expr::Template>,
    uses_matrix: bool,
}

impl<'j> LegNamer<'j> {
    /// Prepares the names of `job`'s legs.
    pub fn new(job: &'j Job) -> Self {
        let raw = job.name.as_deref().unwrap_or(&job.id);
        let parsed = parse_template(raw).ok();
        let uses_matrix = parsed
            .as_ref()
            .is_some_and(|t| t.referenced_contexts().contains("matrix"));
        Self {
            raw,
            parsed,
            uses_matrix,
        }
    }

    fn evaluated(&self, ctx: &EvalContext<'_>) -> String {
        match &self.parsed {
            Some(t) if t.is_literal() => self.raw.to_owned(),
            Some(t) => t
                .evaluate_string(ctx)
                .unwrap_or_else(|_| self.raw.to_owned()),
            None => self.raw.to_owned(),
        }
    }

    /// The display name of one leg (or of the job without a matrix).
    pub fn name(&self, leg: Option<&Leg>, ctx: &EvalContext<'_>) -> String {
        match leg {
            Some(leg) if self.uses_matrix => {
                let mut with_matrix = ctx.clone();
                with_matrix.set("matrix", expr::Value::from(Value::Object(leg.clone())));
                self.evaluated(&with_matrix)
            }
            Some(leg) if !leg.is_empty() => {
                let values: Vec<String> = leg.values().map(value_to_display).collect();
                format!("{} ({})", self.evaluated(ctx), values.join(", "))
            }
            _ => self.evaluated(ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use serde_json::json;

    fn job(name: Option<&str>) -> Job {
        Job {
            id: "build".into(),
            location: crate::model::Location::new(1, 1),
            name: name.map(str::to_owned),
            needs: vec![],
            condition: None,
            runs_on: None,
            environment: None,
            concurrency: None,
            outputs: IndexMap::new(),
            env: IndexMap::new(),
            defaults: None,
            permissions: None,
            steps: vec![],
            timeout_minutes: None,
            strategy: None,
            continue_on_error: None,
            container: None,
            services: IndexMap::new(),
            uses: None,
            with: IndexMap::new(),
            secrets: None,
        }
    }

    fn leg(v: Value) -> Leg {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn display_names_like_github() {
        let ctx = EvalContext::new();
        let l = leg(json!({"os": "ubuntu", "node": 18}));
        assert_eq!(
            display_name(&job(None), Some(&l), &ctx),
            "build (ubuntu, 18)"
        );
        assert_eq!(
            display_name(&job(Some("Build")), Some(&l), &ctx),
            "Build (ubuntu, 18)"
        );
        assert_eq!(
            display_name(
                &job(Some("PHP ${{ matrix.os }} ${{ matrix.node}}")),
                Some(&l),
                &ctx
            ),
            "PHP ubuntu 18"
        );
        assert_eq!(display_name(&job(None), None, &ctx), "build");
        let nested = leg(json!({"cfg": {"os": "linux", "cc": ["gcc", 12]}, "x": true}));
        assert_eq!(
            display_name(&job(None), Some(&nested), &ctx),
            "build (linux, gcc, 12, true)"
        );
        let gh = EvalContext::new().with("github", expr::Value::from(json!({"ref_name": "main"})));
        assert_eq!(
            display_name(&job(Some("ci ${{ github.ref_name }}")), Some(&l), &gh),
            "ci main (ubuntu, 18)"
        );
    }

    #[test]
    fn fromjson_matrix_and_dependencies() {
        let spec = MatrixSpec::Expr("${{fromJson('{\"A\": [\"A\", \"B\"]}')}}".into());
        assert!(matrix_contexts(&spec).is_empty());
        let legs = evaluate_matrix(&spec, &EvalContext::new()).expect("legs");
        assert_eq!(legs.len(), 2);
        assert_eq!(legs[1]["A"], "B");

        let needs = MatrixSpec::Expr("${{ fromJson(needs.prepare.outputs.matrix) }}".into());
        assert!(matrix_contexts(&needs).contains("needs"));
        let ctx = EvalContext::new().with(
            "needs",
            expr::Value::from(
                json!({"prepare": {"outputs": {"matrix": "{\"package\": [\"a\", \"b\"]}"}}}),
            ),
        );
        let legs = evaluate_matrix(&needs, &ctx).expect("legs");
        assert_eq!(
            legs.iter()
                .map(|l| l["package"].clone())
                .collect::<Vec<_>>(),
            [json!("a"), json!("b")]
        );
    }

    #[test]
    fn expression_keys_values_insert_and_splice() {
        // evalmatrixneeds2: the key is an expression too.
        let mut dims = IndexMap::new();
        dims.insert(
            "${{needs.prepare.outputs.helix}}".to_owned(),
            MatrixValues::Expr("${{fromJson(needs.prepare.outputs.matrix)}}".into()),
        );
        let spec = MatrixSpec::Matrix(Matrix {
            dimensions: dims,
            ..Matrix::default()
        });
        assert!(matrix_contexts(&spec).contains("needs"));
        let ctx = EvalContext::new().with(
            "needs",
            expr::Value::from(
                json!({"prepare": {"outputs": {"matrix": "[\"a\", \"b\"]", "helix": "steady"}}}),
            ),
        );
        let legs = evaluate_matrix(&spec, &ctx).expect("legs");
        assert_eq!(
            legs,
            vec![leg(json!({"steady": "a"})), leg(json!({"steady": "b"}))]
        );

        // evalmatrix-merge-map: ${{ insert }} merges mappings.
        let mut dims = IndexMap::new();
        dims.insert(
            "a".to_owned(),
            MatrixValues::List(vec![json!({"env": {
                "key1": "val1",
                "${{insert}}": {"key2": "val2"},
                "${{ insert }}": "${{fromJSON('{\"key3\":\"val3\"}')}}"
            }})]),
        );
        let spec = MatrixSpec::Matrix(Matrix {
            dimensions: dims,
            ..Matrix::default()
        });
        let legs = evaluate_matrix(&spec, &EvalContext::new()).expect("legs");
        assert_eq!(
            legs,
            vec![leg(
                json!({"a": {"env": {"key1": "val1", "key2": "val2", "key3": "val3"}}})
            )]
        );

        // evalmatrix-merge-array: an expression yielding an array is spliced (3 legs).
        let mut dims = IndexMap::new();
        dims.insert(
            "a".to_owned(),
            MatrixValues::List(vec![
                json!({"env": {"key1": "${{'val'}}1"}}),
                json!(
                    "${{fromJSON('[{\"env\":{\"key2\":\"val2\"}},{\"env\":{\"key3\":\"val3\"}}]')}}"
                ),
            ]),
        );
        let spec = MatrixSpec::Matrix(Matrix {
            dimensions: dims,
            ..Matrix::default()
        });
        let legs = evaluate_matrix(&spec, &EvalContext::new()).expect("legs");
        assert_eq!(legs.len(), 3);
        assert_eq!(legs[0], leg(json!({"a": {"env": {"key1": "val1"}}})));
    }

    #[test]
    fn errors_are_typed() {
        let bad = MatrixSpec::Expr("${{ fromJson('x') }}".into());
        assert!(matches!(
            evaluate_matrix(&bad, &EvalContext::new()),
            Err(MatrixEvalError::Eval { .. })
        ));
        let not_map = MatrixSpec::Expr("${{ fromJson('[1]') }}".into());
        assert!(matches!(
            evaluate_matrix(&not_map, &EvalContext::new()),
            Err(MatrixEvalError::Matrix(MatrixError::NotAMapping { .. }))
        ));
        let unclosed = MatrixSpec::Expr("${{ x".into());
        assert!(matches!(
            evaluate_matrix(&unclosed, &EvalContext::new()),
            Err(MatrixEvalError::Parse { .. })
        ));
    }
}
