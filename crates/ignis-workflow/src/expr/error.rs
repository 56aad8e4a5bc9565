//! Error types for parsing and evaluating expressions.

use super::ast::Span;

/// A syntax error: where (a byte offset into the source that was parsed, for templates the
/// whole template string) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at byte {offset})")]
pub struct ExprError {
    /// Byte offset into the parsed source.
    pub offset: usize,
    /// What is wrong, lower-case, no trailing period.
    pub message: String,
}

impl ExprError {
    /// Builds an error.
    pub fn new(offset: usize, message: impl Into<String>) -> Self {
        Self {
            offset,
            message: message.into(),
        }
    }
}

/// An evaluation failure (bad `format` string, invalid JSON for `fromJSON`, `hashFiles`
/// without a callback, a result over the size limit, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    /// What went wrong. Messages that reproduce GitHub's/act's text keep their wording.
    pub message: String,
    /// The expression node that failed.
    pub span: Span,
}

impl EvalError {
    /// Builds an error for the node at `span`.
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            span,
        }
    }
}

/// Either failure, for the helpers that parse and evaluate in one go ([`super::evaluate_if`],
/// [`super::evaluate_str`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseOrEvalError {
    /// The source did not parse.
    #[error("invalid expression: {0}")]
    Parse(#[from] ExprError),
    /// It parsed but evaluation failed.
    #[error("expression evaluation failed: {0}")]
    Eval(#[from] EvalError),
}
