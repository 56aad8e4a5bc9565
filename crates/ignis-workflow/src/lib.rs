//! `ignis-workflow` turns GitHub Actions workflow files into a typed, validated model,
//! evaluates `${{ }}` expressions and plans runs (trigger matching, job DAG, matrices).
//!
//! It is pure: no I/O, no async, no processes. Anything that needs the outside world
//! (reading files for `hashFiles`, running steps) is supplied by the caller.

/// `${{ }}` expressions: parsing (with byte offsets), evaluation, templates.
pub mod expr;
/// The typed workflow model (GitHub's workflow syntax reference, literally).
pub mod model;
/// Parsing YAML into the model, with located, accumulated diagnostics.
pub mod parse;
/// Planning: trigger matching, the job DAG, matrix expansion, display names.
pub mod plan;

pub use parse::{Diagnostic, DiagnosticKind, Diagnostics, parse, parse_action};
