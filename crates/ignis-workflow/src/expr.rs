//! GitHub Actions expressions: `${{ … }}` parsing with byte offsets, evaluation against
//! caller-supplied contexts, templates (strings with `${{ }}` parts) and `if:` conditions.
//!
//! Semantics follow GitHub's documentation ("Evaluate expressions in workflows and
//! actions") and, where the docs are silent, the runner's engine: loose `==` that converts
//! mismatched kinds to numbers, case-insensitive string comparison, arrays/objects equal only
//! to themselves, `&&`/`||` returning an operand, case-insensitive property access, object
//! filters (`.*`, `[*]`), .NET "G15" number printing, and the functions `contains`,
//! `startsWith`, `endsWith`, `format`, `join`, `toJSON`, `fromJSON`, `hashFiles`, `case`,
//! `success`, `failure`, `always`, `cancelled` (names case-insensitive).
//!
//! Why not zizmor's `github-actions-expressions`: it is a good *parser* for static analysis,
//! but its tree borrows the source (`Expr<'src>`), which the workflow model cannot store
//! without keeping every YAML string alive, and it only constant-folds: no contexts, no
//! filters over data, no status or `hashFiles` functions, unordered objects. The evaluator is
//! most of the work either way, so the parser here is a small recursive-descent one over an
//! owned tree (module `parser`), with GitHub's lexing rules and nesting limit.
//!
//! Tests: all 432 rows of act's expression tables (`tests/expr_conformance.rs`, GitHub's
//! behaviour asserted where act deviates) and GitHub's own actions/languageservices vectors
//! (`tests/expr_languageservices.rs`, 1017 of 1020; the 3 differences are documented there).
//!
//! The crate stays pure: `hashFiles` goes through a callback in [`EvalContext`]; the digest
//! ([`hash_files`]) and pattern matching ([`glob`]) parts of GitHub's algorithm are here for
//! the runtime to use.

mod ast;
mod error;
mod eval;
pub mod glob;
pub mod hash_files;
mod number;
mod parser;
mod template;
mod value;

pub use ast::{Accessor, BinaryOp, Expr, ExprKind, Function, Span};
pub use error::{EvalError, ExprError, ParseOrEvalError};
pub use eval::{
    DEFAULT_MAX_MEMORY, EvalContext, HashFilesFn, Status, evaluate, hash_files_requests,
};
pub use number::number_to_string;
pub use parser::{MAX_DEPTH, MAX_HEIGHT, MAX_NESTING};
pub use template::{Condition, Template, TemplatePart, parse_condition, parse_template};
pub use value::{Kind, Map, Value, cmp_ignore_case, eq_ignore_case};

/// Parses one expression (the text inside `${{ }}`, or a bare `if:`). Offsets in errors and
/// spans are byte offsets into `src`.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    parser::parse_at(src, 0)
}

impl Expr {
    /// Evaluates this expression; see [`evaluate`].
    pub fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Value, EvalError> {
        evaluate(self, ctx)
    }
}

/// Evaluates an `if:` value with GitHub's rules: `${{ }}` is optional, an empty value means
/// `success()`, and without a status function the condition is `success() && (…)`.
pub fn evaluate_if(src: &str, ctx: &EvalContext<'_>) -> Result<bool, ParseOrEvalError> {
    Ok(parse_condition(src)?.evaluate(ctx)?)
}

/// Parses and evaluates a string that may contain `${{ }}` parts; see [`Template::evaluate`].
pub fn evaluate_str(src: &str, ctx: &EvalContext<'_>) -> Result<Value, ParseOrEvalError> {
    Ok(parse_template(src)?.evaluate(ctx)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_rules() {
        let ok = EvalContext::new();
        let failed = EvalContext::new().with_status(Status::Failure);
        let cancelled = EvalContext::new().with_status(Status::Cancelled);
        assert!(evaluate_if("", &ok).unwrap());
        assert!(!evaluate_if("", &failed).unwrap());
        assert!(evaluate_if("true", &ok).unwrap());
        assert!(!evaluate_if("true", &failed).unwrap());
        assert!(evaluate_if("${{ failure() }}", &failed).unwrap());
        assert!(evaluate_if("  ${{ always() }}  ", &cancelled).unwrap());
        assert!(evaluate_if("cancelled()", &cancelled).unwrap());
        assert!(!evaluate_if("${{ false }}", &ok).unwrap());
        // Mixed text is a non-empty string: true (GitHub's pitfall).
        assert!(evaluate_if("${{ false }} == true", &ok).unwrap());
        // Errors are not hidden when the condition is evaluated…
        assert!(matches!(
            evaluate_if("fromJSON('x')", &ok),
            Err(ParseOrEvalError::Eval(_))
        ));
        // …but the implicit success() short-circuits before them.
        assert!(!evaluate_if("fromJSON('x')", &failed).unwrap());
        assert!(matches!(
            evaluate_if("1 <", &ok),
            Err(ParseOrEvalError::Parse(_))
        ));
    }

    #[test]
    fn contexts_and_status_introspection() {
        let e = parse("contains(needs.*.result, 'x') && MATRIX.os && success()").unwrap();
        assert!(e.uses_status_functions());
        let names: Vec<String> = e.referenced_contexts().into_iter().collect();
        assert_eq!(names, vec!["matrix", "needs"]);
        assert!(!parse("github.x").unwrap().uses_status_functions());
        let t = parse_template("a ${{ needs.b.outputs.c }} ${{ always() }}").unwrap();
        assert!(t.uses_status_functions());
        assert!(t.referenced_contexts().contains("needs"));
    }
}
