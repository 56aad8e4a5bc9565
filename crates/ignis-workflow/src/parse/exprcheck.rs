//! Syntax checks of `${{ }}` templates and `if:` conditions through [`crate::expr`], the
//! same parser the runtime evaluates with, so validation and execution cannot disagree on
//! what is an expression. Offsets are bytes into the checked string.

use crate::expr::{self, Expr, ExprKind, TemplatePart};

/// An expression problem: byte offset into the checked string and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExprIssue {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

impl From<expr::ExprError> for ExprIssue {
    fn from(err: expr::ExprError) -> Self {
        Self {
            offset: err.offset,
            message: format!("invalid expression: {}", err.message),
        }
    }
}

/// What a successful check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExprFacts {
    /// Byte offsets and names of status-function calls.
    pub(crate) status_calls: Vec<(usize, String)>,
    /// Byte offsets and names (as written) of context references (`github`, `steps`, ...).
    pub(crate) contexts: Vec<(usize, String)>,
}

fn collect(e: &Expr, facts: &mut ExprFacts) {
    e.walk(&mut |node| {
        if let ExprKind::Call { func, .. } = &node.kind
            && func.is_status()
        {
            facts
                .status_calls
                .push((node.span.start, func.name().to_owned()));
        }
    });
    facts.contexts.extend(
        e.context_references()
            .into_iter()
            .map(|(name, span)| (span.start, name.to_owned())),
    );
}

/// Checks every `${{ }}` in a string value.
pub(crate) fn check_template(src: &str) -> Result<ExprFacts, ExprIssue> {
    let template = expr::parse_template(src)?;
    let mut facts = ExprFacts::default();
    for part in &template.parts {
        if let TemplatePart::Expr { expr, .. } = part {
            collect(expr, &mut facts);
        }
    }
    Ok(facts)
}

/// Checks an `if:` value (`${{ }}` optional).
pub(crate) fn check_condition(src: &str) -> Result<ExprFacts, ExprIssue> {
    let mut facts = ExprFacts::default();
    match expr::parse_condition(src)? {
        expr::Condition::Empty => {}
        expr::Condition::Expr(e) => collect(&e, &mut facts),
        expr::Condition::Template(t) => {
            for e in t.expressions() {
                collect(e, &mut facts);
            }
        }
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_status_calls_with_offsets() {
        let facts = check_template("a ${{ success() && 'failure()' == x }} b").expect("valid");
        assert_eq!(facts.status_calls, vec![(6, "success".to_owned())]);
    }

    #[test]
    fn unclosed_template_is_located() {
        let err = check_template("echo ${{ github.sha").expect_err("must fail");
        assert_eq!(err.offset, 5);
    }

    #[test]
    fn bad_syntax_offset_is_inside_the_template() {
        let err = check_template("x ${{ a == }}").expect_err("must fail");
        assert!(err.offset >= 6, "{err:?}");
    }

    #[test]
    fn conditions_are_implicit_expressions() {
        assert!(check_condition("github.ref == 'refs/heads/main'").is_ok());
        assert!(check_condition("${{ always() }}").is_ok());
        assert!(check_condition("a ==").is_err());
        assert!(check_condition("").is_ok());
    }
}
