//! Parsing workflow and action files into the [model](crate::model), with validation whose
//! every error is located (`file:line:column: message`) and reported all at once.
//!
//! # Why a hand-written converter over a span-preserving YAML tree
//!
//! zizmor's `github-actions-models` (the preferred base) was evaluated first: it deserializes
//! with serde, so it stops at the first error, its models carry no locations (zizmor locates
//! findings with a second, tree-sitter parse), and it tolerates unknown keys. Our contract is
//! the opposite: every error at once, each with line and column, unknown keys included. So
//! the YAML is parsed with `saphyr-parser` (a maintained YAML 1.2 parser whose events carry
//! spans) into a small tree where every node knows its line/column (module `yaml`), and a
//! converter (module `convert`) walks that tree into the typed model, recording a [`Diagnostic`]
//! for each unknown key, wrong type or bad value instead of stopping. Cross-cutting checks
//! (job ids, `needs`, cycles, step ids, expressions, matrix size, unsupported container
//! features) run in the same pass or right after it (module `validate`).

mod convert;
mod exprcheck;
mod validate;
mod yaml;

use crate::model::{Action, Location, Workflow};
use serde::Serialize;

/// What kind of problem a [`Diagnostic`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticKind {
    /// The file is not valid YAML (or is empty).
    Syntax,
    /// Valid YAML that does not follow the workflow schema: unknown keys, wrong types,
    /// missing required keys, bad values.
    Schema,
    /// Schema-valid but meaningless or unsupported: unknown or cyclic `needs`, duplicate
    /// step ids, expression errors, too many matrix legs, container features no backend
    /// can run.
    Semantic,
}

/// One located problem in a workflow or action file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    /// The file name as given to [`parse`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Lowercase message without trailing period.
    pub message: String,
    /// The kind of problem.
    pub kind: DiagnosticKind,
}

impl Diagnostic {
    /// The diagnostic's position.
    pub fn location(&self) -> Location {
        Location::new(self.line, self.column)
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in one file, sorted by position. Never empty when returned as an
/// error.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The diagnostics, in position order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// One diagnostic per line, `file:line:column: message`.
impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub(crate) struct Sink {
    file: String,
    items: Vec<Diagnostic>,
}

impl Sink {
    pub(crate) fn new(file: &str) -> Self {
        Self {
            file: file.to_owned(),
            items: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, kind: DiagnosticKind, loc: Location, message: impl Into<String>) {
        self.items.push(Diagnostic {
            file: self.file.clone(),
            line: loc.line,
            column: loc.column,
            message: message.into(),
            kind,
        });
    }

    pub(crate) fn schema(&mut self, loc: Location, message: impl Into<String>) {
        self.push(DiagnosticKind::Schema, loc, message);
    }

    pub(crate) fn semantic(&mut self, loc: Location, message: impl Into<String>) {
        self.push(DiagnosticKind::Semantic, loc, message);
    }

    /// The result: `Ok(value)` when nothing was reported, else every diagnostic, sorted by
    /// position (stable, so same-position diagnostics keep their discovery order) and
    /// de-duplicated.
    pub(crate) fn finish<T>(mut self, value: T) -> Result<T, Diagnostics> {
        if self.items.is_empty() {
            return Ok(value);
        }
        self.items.sort_by_key(|d| (d.line, d.column));
        self.items.dedup();
        Err(Diagnostics(self.items))
    }
}

/// Loads the YAML tree, turning an empty file or a YAML error into a syntax diagnostic.
fn load_tree(file: &str, source: &str) -> Result<yaml::Node, Diagnostics> {
    let mut sink = Sink::new(file);
    match yaml::load(source) {
        Ok(Some(node)) => return Ok(node),
        Ok(None) => sink.push(DiagnosticKind::Syntax, Location::new(1, 1), "file is empty"),
        Err(err) => sink.push(DiagnosticKind::Syntax, err.loc, err.message),
    }
    Err(Diagnostics(sink.items))
}

/// Parses and validates one workflow file.
///
/// `file` is only used to label diagnostics. On failure every problem found is returned,
/// each located; parsing never panics on any input.
pub fn parse(file: &str, source: &str) -> Result<Workflow, Diagnostics> {
    let root = load_tree(file, source)?;
    let mut sink = Sink::new(file);
    let workflow = convert::workflow(&root, &mut sink);
    validate::workflow(&root, source, &workflow, &mut sink);
    sink.finish(workflow)
}

/// Parses and validates an action metadata file (`action.yml`/`action.yaml`).
pub fn parse_action(file: &str, source: &str) -> Result<Action, Diagnostics> {
    let root = load_tree(file, source)?;
    let mut sink = Sink::new(file);
    let action = convert::action(&root, &mut sink);
    validate::action(&root, source, &action, &mut sink);
    sink.finish(action)
}
