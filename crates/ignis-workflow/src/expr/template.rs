//! Strings with `${{ … }}` parts, and `if:` conditions.

use std::collections::BTreeSet;

use super::ast::{Expr, Span};
use super::error::{EvalError, ExprError};
use super::eval::{EvalContext, Status, evaluate};
use super::parser::parse_at;
use super::value::Value;

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePart {
    /// Text copied verbatim.
    Literal(String),
    /// A `${{ … }}` expression. `span` covers the whole `${{ … }}`; the expression's own spans
    /// are offsets into the template string too.
    Expr {
        /// The parsed expression.
        expr: Expr,
        /// Where `${{` starts and `}}` ends.
        span: Span,
    },
}

/// A parsed string value that may contain `${{ … }}` expressions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    /// The pieces, in order. A string without `${{` is one literal part (or none when empty).
    pub parts: Vec<TemplatePart>,
}

/// Parses a string with `${{ … }}` parts. The closing `}}` is searched outside single-quoted
/// strings, so `${{ format('}}') }}` works; an unclosed `${{` or an empty `${{ }}` is an error.
pub fn parse_template(src: &str) -> Result<Template, ExprError> {
    let mut parts = Vec::new();
    let mut literal_start = 0;
    let mut pos = 0;
    while let Some(found) = src[pos..].find("${{") {
        let open = pos + found;
        let inner_start = open + 3;
        let close = find_close(src, inner_start).ok_or_else(|| {
            ExprError::new(open, "unclosed expression: '${{' without a matching '}}'")
        })?;
        if literal_start < open {
            parts.push(TemplatePart::Literal(src[literal_start..open].to_owned()));
        }
        let expr = parse_at(&src[inner_start..close], inner_start)?;
        parts.push(TemplatePart::Expr {
            expr,
            span: Span {
                start: open,
                end: close + 2,
            },
        });
        pos = close + 2;
        literal_start = pos;
    }
    if literal_start < src.len() {
        parts.push(TemplatePart::Literal(src[literal_start..].to_owned()));
    }
    Ok(Template { parts })
}

/// The offset of the `}}` that closes an expression starting at `from`, skipping quoted
/// strings (`''` inside a string toggles twice, which is harmless).
fn find_close(src: &str, from: usize) -> Option<usize> {
    let bytes = src.as_bytes();
    let mut in_string = false;
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => in_string = !in_string,
            b'}' if !in_string && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

impl Template {
    /// Whether there is no expression in it.
    pub fn is_literal(&self) -> bool {
        self.expressions().next().is_none()
    }

    /// The text of a template without expressions.
    pub fn as_literal(&self) -> Option<String> {
        self.is_literal().then(|| {
            self.parts
                .iter()
                .filter_map(|p| match p {
                    TemplatePart::Literal(s) => Some(s.as_str()),
                    TemplatePart::Expr { .. } => None,
                })
                .collect()
        })
    }

    /// The template's expressions.
    pub fn expressions(&self) -> impl Iterator<Item = &Expr> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Expr { expr, .. } => Some(expr),
            TemplatePart::Literal(_) => None,
        })
    }

    /// The expression when the template is exactly one `${{ … }}` and nothing else.
    pub fn single_expression(&self) -> Option<&Expr> {
        match self.parts.as_slice() {
            [TemplatePart::Expr { expr, .. }] => Some(expr),
            _ => None,
        }
    }

    /// Whether any expression calls a status function.
    pub fn uses_status_functions(&self) -> bool {
        self.expressions().any(Expr::uses_status_functions)
    }

    /// Context names referenced by any expression (lower-cased).
    pub fn referenced_contexts(&self) -> BTreeSet<String> {
        self.expressions()
            .flat_map(Expr::referenced_contexts)
            .collect()
    }

    /// The `hashFiles` pattern lists its expressions need; see [`super::hash_files_requests`].
    pub fn hash_files_requests(
        &self,
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<Vec<String>>, EvalError> {
        let mut out: Vec<Vec<String>> = Vec::new();
        for e in self.expressions() {
            for r in super::eval::hash_files_requests(e, ctx)? {
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Evaluates the template. A template that is exactly one `${{ x }}` yields `x`'s value
    /// unchanged (so `matrix: ${{ fromJSON(…) }}` or a `with:` value keeps its type); any
    /// other template yields a string, each expression converted with GitHub's string rules.
    pub fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Value, EvalError> {
        if let Some(expr) = self.single_expression() {
            return evaluate(expr, ctx);
        }
        Ok(Value::String(self.evaluate_string(ctx)?))
    }

    /// Evaluates the template to a string (interpolation).
    pub fn evaluate_string(&self, ctx: &EvalContext<'_>) -> Result<String, EvalError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Literal(s) => out.push_str(s),
                TemplatePart::Expr { expr, .. } => {
                    out.push_str(&evaluate(expr, ctx)?.to_display_string());
                }
            }
        }
        Ok(out)
    }
}

/// A parsed `if:` condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// An empty `if:`, which behaves like `success()`.
    Empty,
    /// An expression (bare, or the single `${{ … }}` the value consisted of).
    Expr(Expr),
    /// Text mixed with `${{ … }}`: it evaluates to a string, so it is true unless empty —
    /// GitHub's well-known `if: ${{ a }} == b` pitfall, reproduced on purpose.
    Template(Template),
}

/// Parses an `if:` value: `${{ }}` is optional; a value that is exactly one `${{ … }}`
/// (surrounding whitespace allowed) is that expression.
pub fn parse_condition(src: &str) -> Result<Condition, ExprError> {
    if src.trim().is_empty() {
        return Ok(Condition::Empty);
    }
    if !src.contains("${{") {
        return parse_at(src, 0).map(Condition::Expr);
    }
    let template = parse_template(src)?;
    let mut exprs = Vec::new();
    let mut only_whitespace = true;
    for part in template.parts {
        match part {
            TemplatePart::Expr { expr, .. } => exprs.push(expr),
            TemplatePart::Literal(s) => only_whitespace &= s.trim().is_empty(),
        }
    }
    if only_whitespace && exprs.len() == 1 {
        return Ok(Condition::Expr(exprs.remove(0)));
    }
    // Re-parse to keep the literal parts we consumed above.
    parse_template(src).map(Condition::Template)
}

impl Condition {
    /// Whether it calls `success()`, `failure()`, `always()` or `cancelled()`.
    pub fn uses_status_functions(&self) -> bool {
        match self {
            Condition::Empty => false,
            Condition::Expr(e) => e.uses_status_functions(),
            Condition::Template(t) => t.uses_status_functions(),
        }
    }

    /// Context names it references (lower-cased).
    pub fn referenced_contexts(&self) -> BTreeSet<String> {
        match self {
            Condition::Empty => BTreeSet::new(),
            Condition::Expr(e) => e.referenced_contexts(),
            Condition::Template(t) => t.referenced_contexts(),
        }
    }

    /// Evaluates the condition with GitHub's implicit `success() &&` when it calls no status
    /// function: with a failed or cancelled status it is false without being evaluated.
    pub fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<bool, EvalError> {
        if !self.uses_status_functions() && ctx.status != Status::Success {
            return Ok(false);
        }
        Ok(match self {
            Condition::Empty => true,
            Condition::Expr(e) => evaluate(e, ctx)?.is_truthy(),
            Condition::Template(t) => !t.evaluate_string(ctx)?.is_empty(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_literals_and_expressions() {
        let t = parse_template("a ${{ 'x}}' }} b ${{1}}").unwrap();
        assert_eq!(t.parts.len(), 4);
        assert_eq!(t.parts[0], TemplatePart::Literal("a ".into()));
        let TemplatePart::Expr { expr, span } = &t.parts[1] else {
            panic!()
        };
        assert_eq!(*span, Span { start: 2, end: 14 });
        assert_eq!(expr.span, Span { start: 6, end: 11 });
        assert_eq!(
            t.evaluate(&EvalContext::new()).unwrap(),
            Value::from("a x}} b 1")
        );
    }

    #[test]
    fn single_expression_keeps_type() {
        let t = parse_template("${{ fromJSON('[1,2]') }}").unwrap();
        assert_eq!(
            t.evaluate(&EvalContext::new()).unwrap().to_json(),
            serde_json::json!([1, 2])
        );
        let t = parse_template(" ${{ 1 }}").unwrap();
        assert_eq!(t.evaluate(&EvalContext::new()).unwrap(), Value::from(" 1"));
    }

    #[test]
    fn literal_templates() {
        let t = parse_template("no expressions here }}").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.as_literal().as_deref(), Some("no expressions here }}"));
        assert_eq!(parse_template("").unwrap().parts, vec![]);
    }

    #[test]
    fn template_errors_are_located() {
        let e = parse_template("abc ${{ 1 ").unwrap_err();
        assert_eq!(e.offset, 4);
        let e = parse_template("abc ${{ 1 < }}").unwrap_err();
        assert_eq!(e.offset, 12);
        let e = parse_template("x ${{ }}").unwrap_err();
        assert_eq!(e.message, "an expression was expected");
    }
}
