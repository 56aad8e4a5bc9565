//! Checks that need more than one node at a time (job ids, `needs` and its cycles, step
//! ids, matrix size, `uses` references) or every string of the file (expressions). The
//! converter has already reported schema problems; these checks only add what it cannot see.

use super::Sink;
use super::convert::has_expr;
use super::exprcheck::{self, ExprIssue};
use super::yaml::{Node, NodeKind};
use crate::model::*;
use saphyr_parser::ScalarStyle;
use std::collections::{HashMap, HashSet};

use crate::plan::{self, matrix::MAX_LEGS as MAX_MATRIX_LEGS, matrix::MatrixError};

/// The message for features no backend can run yet (issue 4).
const NO_CONTAINER_BACKEND: &str = "no available backend can run it yet (the sandbox, qemu and firecracker backends run steps directly in the machine; docker is not supported)";

/// The entry of `key` in a mapping node.
fn entry<'n>(node: &'n Node, key: &str) -> Option<(&'n Node, &'n Node)> {
    match &node.kind {
        NodeKind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.text() == Some(key))
            .map(|(k, v)| (k, v)),
        _ => None,
    }
}

fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    entry(node, key).map(|(_, v)| v)
}

/// GitHub's identifier rule for job and step ids.
pub(crate) fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Workflow-wide checks.
pub(crate) fn workflow(root: &Node, source: &str, wf: &Workflow, sink: &mut Sink) {
    let lines: Vec<&str> = source.lines().collect();
    let jobs_node = get(root, "jobs");
    if let Some(NodeKind::Map(jobs)) = jobs_node.map(|n| &n.kind) {
        let ids: HashSet<&str> = jobs.iter().filter_map(|(k, _)| k.text()).collect();
        let mut edges: Vec<(&str, Vec<(&str, Location)>)> = Vec::new();
        for (key, job_node) in jobs {
            let Some(id) = key.text() else { continue };
            if !is_valid_id(id) {
                sink.semantic(
                    key.loc,
                    format!("job id `{id}` is invalid: ids must start with a letter or `_` and contain only alphanumeric characters, `-` or `_`"),
                );
            }
            let needs = needs_of(job_node);
            for (need, loc) in &needs {
                if *need == id {
                    sink.semantic(*loc, format!("job `{id}` needs itself"));
                } else if !ids.contains(need) {
                    sink.semantic(
                        *loc,
                        format!("job `{id}` needs `{need}`, which is not a job of this workflow"),
                    );
                }
            }
            edges.push((id, needs));
            job_checks(id, job_node, wf.jobs.get(id), sink);
        }
        cycles(&edges, sink);
    }
    let mut walker = ExprWalker {
        sink,
        lines: &lines,
        action: false,
    };
    walker.walk(root, &mut Vec::new());
}

/// Action-wide checks: step ids and `uses` of composite steps, and expressions.
pub(crate) fn action(root: &Node, source: &str, action: &Action, sink: &mut Sink) {
    let lines: Vec<&str> = source.lines().collect();
    if let (Some(steps_node), Runs::Composite { steps }) = (
        get(root, "runs").and_then(|r| get(r, "steps")),
        &action.runs,
    ) {
        step_checks("composite action", steps_node, steps, sink);
    }
    let mut walker = ExprWalker {
        sink,
        lines: &lines,
        action: true,
    };
    walker.walk(root, &mut Vec::new());
}

/// `needs:` entries of a job node with their locations.
fn needs_of(job: &Node) -> Vec<(&str, Location)> {
    match get(job, "needs").map(|n| (n, &n.kind)) {
        Some((n, NodeKind::Scalar(s))) if !s.is_null() => vec![(s.text.as_str(), n.loc)],
        Some((_, NodeKind::Seq(items))) => items
            .iter()
            .filter_map(|i| i.text().map(|t| (t, i.loc)))
            .collect(),
        _ => Vec::new(),
    }
}

/// Reports each cycle in `needs` once, at the `needs` entry that closes it.
fn cycles(edges: &[(&str, Vec<(&str, Location)>)], sink: &mut Sink) {
    let index: HashMap<&str, usize> = edges
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; edges.len()];
    for start in 0..edges.len() {
        if state[start] != 0 {
            continue;
        }
        // Iterative DFS: (node, next edge index).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let needs = &edges[node].1;
            if *next >= needs.len() {
                state[node] = 2;
                stack.pop();
                continue;
            }
            let (need, loc) = needs[*next];
            *next += 1;
            let Some(&target) = index.get(need) else {
                continue;
            };
            if target == node {
                continue; // reported as "needs itself"
            }
            match state[target] {
                0 => {
                    state[target] = 1;
                    stack.push((target, 0));
                }
                1 => {
                    let pos = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                    let mut path: Vec<&str> =
                        stack[pos..].iter().map(|(n, _)| edges[*n].0).collect();
                    path.push(edges[target].0);
                    sink.semantic(loc, format!("cycle in `needs`: {}", path.join(" -> ")));
                }
                _ => {}
            }
        }
    }
}

fn job_checks(id: &str, node: &Node, job: Option<&Job>, sink: &mut Sink) {
    let Some(job) = job else { return };
    let what = format!("job `{id}`");
    if let Some((k, _)) = entry(node, "container") {
        sink.semantic(
            k.loc,
            format!("{what}: `container` is not supported: {NO_CONTAINER_BACKEND}"),
        );
    }
    if let Some((k, _)) = entry(node, "services") {
        sink.semantic(
            k.loc,
            format!("{what}: `services` are not supported: {NO_CONTAINER_BACKEND}"),
        );
    }
    if let (Some(uses), Some(n)) = (&job.uses, get(node, "uses")) {
        if has_expr(uses) {
            sink.schema(
                n.loc,
                format!("{what}: expressions are not allowed in `uses`"),
            );
        } else if !is_valid_workflow_ref(uses) {
            sink.schema(
                n.loc,
                format!("{what}: invalid reusable workflow reference `{uses}`: expected `./.github/workflows/<file>.yml` or `{{owner}}/{{repo}}/.github/workflows/<file>.yml@{{ref}}`"),
            );
        }
    }
    if let Some(steps_node) = get(node, "steps") {
        step_checks(&what, steps_node, &job.steps, sink);
    }
    if let Some(Strategy {
        matrix: Some(spec @ MatrixSpec::Matrix(m)),
        ..
    }) = &job.strategy
        && is_static(m)
    {
        // Expanded by the planner itself, so validation and planning agree on the legs.
        let result = plan::matrix::expand_matrix(&plan::evaluate::matrix_template(spec));
        let loc = get(node, "strategy")
            .and_then(|s| entry(s, "matrix"))
            .map_or(job.location, |(k, _)| k.loc);
        match result {
            Ok(_) => {}
            Err(MatrixError::TooManyLegs { count }) => sink.semantic(
                loc,
                format!("{what}: the matrix generates {count} jobs, more than GitHub's limit of {MAX_MATRIX_LEGS}"),
            ),
            // Already reported by the converter, at the offending vector.
            Err(MatrixError::EmptyVector { .. }) => {}
            Err(MatrixError::Empty) if m.dimensions.is_empty() && m.include.is_empty() => {}
            Err(err) => sink.semantic(loc, format!("{what}: {err}")),
        }
    }
}

fn step_checks(what: &str, steps_node: &Node, steps: &[Step], sink: &mut Sink) {
    let NodeKind::Seq(items) = &steps_node.kind else {
        return;
    };
    let mut seen: HashMap<&str, Location> = HashMap::new();
    for (step, node) in steps.iter().zip(items) {
        let swhat = format!("{what} step {}", step.index);
        if let (Some(id), Some(n)) = (&step.id, get(node, "id")) {
            if !has_expr(id) && !is_valid_id(id) {
                sink.semantic(
                    n.loc,
                    format!("{swhat}: step id `{id}` is invalid: ids must start with a letter or `_` and contain only alphanumeric characters, `-` or `_`"),
                );
            }
            if let Some(first) = seen.get(id.as_str()) {
                sink.semantic(
                    n.loc,
                    format!(
                        "{swhat}: step id `{id}` is already used by the step at line {}",
                        first.line
                    ),
                );
            } else {
                seen.insert(id, n.loc);
            }
        }
        if let (Some(uses), Some(n)) = (&step.uses, get(node, "uses")) {
            if has_expr(uses) {
                // GitHub resolves actions before any context exists.
                sink.schema(
                    n.loc,
                    format!("{swhat}: expressions are not allowed in `uses`"),
                );
            } else if uses.starts_with("docker://") {
                sink.semantic(
                    n.loc,
                    format!("{swhat}: docker actions (`{uses}`) are not supported: {NO_CONTAINER_BACKEND}"),
                );
            } else if !is_valid_action_ref(uses) {
                sink.schema(
                    n.loc,
                    format!("{swhat}: invalid action reference `{uses}`: expected `./path`, `docker://image` or `{{owner}}/{{repo}}[/path]@{{ref}}`"),
                );
            }
        }
    }
}

/// `./path`, or `owner/repo[/path]@ref` with non-empty parts.
fn is_valid_action_ref(uses: &str) -> bool {
    if uses.starts_with("./") || uses.starts_with(".\\") {
        return !uses.trim().is_empty();
    }
    let Some((path, reference)) = uses.split_once('@') else {
        return false;
    };
    let mut parts = path.split('/');
    let owner = parts.next().unwrap_or("");
    let repo = parts.next().unwrap_or("");
    !owner.is_empty() && !repo.is_empty() && !reference.is_empty() && parts.all(|p| !p.is_empty())
}

/// `./.github/workflows/x.yml` or `owner/repo/.github/workflows/x.yml@ref`.
fn is_valid_workflow_ref(uses: &str) -> bool {
    let yaml = |p: &str| p.ends_with(".yml") || p.ends_with(".yaml");
    if let Some(local) = uses.strip_prefix("./") {
        return local.starts_with(".github/workflows/") && yaml(local);
    }
    let Some((path, reference)) = uses.split_once('@') else {
        return false;
    };
    let mut parts = path.splitn(3, '/');
    let (owner, repo, file) = (parts.next(), parts.next(), parts.next());
    matches!((owner, repo, file), (Some(o), Some(r), Some(f))
        if !o.is_empty() && !r.is_empty() && f.starts_with(".github/workflows/") && yaml(f))
        && !reference.is_empty()
}

/// Whether no part of the matrix is an expression, so it can be expanded before running.
fn is_static(m: &Matrix) -> bool {
    m.dimensions
        .values()
        .all(|v| matches!(v, MatrixValues::List(_)))
        && matches!(m.include, MatrixEntries::List(_))
        && matches!(m.exclude, MatrixEntries::List(_))
}

/// Every context GitHub defines.
const CONTEXTS: &[&str] = &[
    "github", "env", "vars", "job", "jobs", "steps", "runner", "secrets", "strategy", "matrix",
    "needs", "inputs",
];

/// The contexts available at a workflow key, from GitHub's "Context availability" table;
/// `None` where the table says nothing (only unknown names are refused there).
fn allowed_contexts(path: &[Seg<'_>]) -> Option<&'static [&'static str]> {
    use Seg::{Index, Key};
    const GIV: &[&str] = &["github", "inputs", "vars"];
    const GSIV: &[&str] = &["github", "secrets", "inputs", "vars"];
    const CALL_OUTPUT: &[&str] = &["github", "jobs", "vars", "inputs"];
    const JOB_BASIC: &[&str] = &["github", "needs", "strategy", "matrix", "vars", "inputs"];
    const JOB_IF: &[&str] = &["github", "needs", "vars", "inputs"];
    const JOB_CREDS: &[&str] = &[
        "github", "needs", "strategy", "matrix", "env", "vars", "secrets", "inputs",
    ];
    const JOB_ENV: &[&str] = &[
        "github", "needs", "strategy", "matrix", "vars", "secrets", "inputs",
    ];
    const JOB_DEFAULTS: &[&str] = &[
        "github", "needs", "strategy", "matrix", "env", "vars", "inputs",
    ];
    const JOB_SECRETS: &[&str] = &[
        "github", "needs", "strategy", "matrix", "secrets", "inputs", "vars",
    ];
    const CONTAINER_ENV: &[&str] = &[
        "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "secrets",
        "inputs",
    ];
    const ENV_URL: &[&str] = &[
        "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "steps", "inputs",
    ];
    const STEP: &[&str] = &[
        "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "secrets",
        "steps", "inputs",
    ];
    const STEP_IF: &[&str] = &[
        "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "steps", "inputs",
    ];
    Some(match path {
        [Key("run-name")] | [Key("concurrency"), ..] => GIV,
        [Key("env"), ..] => GSIV,
        [
            Key("on"),
            Key("workflow_call"),
            Key("inputs"),
            Key(_),
            Key("default"),
        ] => GIV,
        [
            Key("on"),
            Key("workflow_call"),
            Key("outputs"),
            Key(_),
            Key("value"),
        ] => CALL_OUTPUT,
        [Key("jobs"), Key(_), rest @ ..] => match rest {
            [
                Key("concurrency" | "runs-on" | "name" | "timeout-minutes" | "with"),
                ..,
            ] => JOB_BASIC,
            [Key("container"), Key("credentials"), ..] => JOB_CREDS,
            [Key("container"), Key("env"), ..] => CONTAINER_ENV,
            [Key("container"), ..] => JOB_BASIC,
            [Key("services"), Key(_), Key("credentials"), ..] => JOB_CREDS,
            [Key("services"), Key(_), Key("env"), ..] => CONTAINER_ENV,
            [Key("services"), ..] => JOB_BASIC,
            [Key("continue-on-error")] => JOB_BASIC,
            [Key("defaults"), ..] => JOB_DEFAULTS,
            [Key("env"), ..] => JOB_ENV,
            [Key("environment"), Key("url")] => ENV_URL,
            [Key("environment"), ..] => JOB_BASIC,
            [Key("if")] => JOB_IF,
            [Key("outputs"), ..] => STEP,
            [Key("secrets"), ..] => JOB_SECRETS,
            [Key("strategy"), ..] => JOB_IF,
            [Key("steps"), Index, Key("if")] => STEP_IF,
            [Key("steps"), Index, ..] => STEP,
            _ => return None,
        },
        _ => return None,
    })
}

/// A key or index on the path from the root to a node.
#[derive(Debug, Clone, Copy)]
enum Seg<'n> {
    Key(&'n str),
    Index,
}

struct ExprWalker<'a, 's> {
    sink: &'s mut Sink,
    lines: &'a [&'a str],
    action: bool,
}

impl ExprWalker<'_, '_> {
    /// Whether the value at `path` is an `if:` (implicit expression, status functions allowed).
    fn is_condition(&self, path: &[Seg<'_>]) -> bool {
        use Seg::{Index, Key};
        if self.action {
            matches!(
                path,
                [Key("runs"), Key("steps"), Index, Key("if")]
                    | [Key("runs"), Key("pre-if" | "post-if")]
            )
        } else {
            matches!(
                path,
                [Key("jobs"), Key(_), Key("if")]
                    | [Key("jobs"), Key(_), Key("steps"), Index, Key("if")]
            )
        }
    }

    fn walk<'n>(&mut self, node: &'n Node, path: &mut Vec<Seg<'n>>) {
        match &node.kind {
            NodeKind::Scalar(s) => {
                let condition = self.is_condition(path);
                let result = if condition {
                    if s.is_null() {
                        return;
                    }
                    exprcheck::check_condition(&s.text)
                } else if has_expr(&s.text) {
                    exprcheck::check_template(&s.text)
                } else {
                    return;
                };
                match result {
                    Err(ExprIssue { offset, message }) => {
                        let loc = offset_location(node, self.lines, offset);
                        self.sink.semantic(loc, message);
                    }
                    Ok(facts) => {
                        if !condition {
                            for (offset, name) in &facts.status_calls {
                                let loc = offset_location(node, self.lines, *offset);
                                self.sink.semantic(
                                    loc,
                                    format!(
                                        "status function `{name}()` is only allowed in `if` conditions"
                                    ),
                                );
                            }
                        }
                        let allowed = if self.action {
                            None
                        } else {
                            allowed_contexts(path)
                        };
                        for (offset, name) in &facts.contexts {
                            let lower = name.to_ascii_lowercase();
                            let message = if !CONTEXTS.contains(&lower.as_str()) {
                                format!("unrecognized named-value `{name}`")
                            } else if let Some(allowed) = allowed
                                && !allowed.contains(&lower.as_str())
                            {
                                format!(
                                    "context `{name}` is not available here (available: {})",
                                    allowed.join(", ")
                                )
                            } else {
                                continue;
                            };
                            let loc = offset_location(node, self.lines, *offset);
                            self.sink.semantic(loc, message);
                        }
                    }
                }
            }
            NodeKind::Seq(items) => {
                for item in items {
                    path.push(Seg::Index);
                    self.walk(item, path);
                    path.pop();
                }
            }
            NodeKind::Map(entries) => {
                for (k, v) in entries {
                    let Some(key) = k.text() else { continue };
                    path.push(Seg::Key(key));
                    self.walk(v, path);
                    path.pop();
                }
            }
        }
    }
}

/// The location of byte `offset` inside a scalar's value: exact for single-line plain and
/// quoted scalars and for literal (`|`) blocks whose text can be matched against the source,
/// the scalar's start otherwise.
pub(crate) fn offset_location(node: &Node, lines: &[&str], offset: usize) -> Location {
    let Some(s) = node.scalar() else {
        return node.loc;
    };
    let text = s.text.as_str();
    let offset = offset.min(text.len());
    let Some(prefix) = text.get(..offset) else {
        return node.loc;
    };
    let line_idx = node.loc.line.saturating_sub(1);
    let chars_before = |p: &str| p.chars().count();
    match s.style {
        ScalarStyle::Plain | ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted
            if !text.contains('\n') =>
        {
            let quote = usize::from(s.style != ScalarStyle::Plain);
            let Some(line) = lines.get(line_idx) else {
                return node.loc;
            };
            let start_col = node.loc.column - 1 + quote;
            // Only exact when the source shows the value verbatim (no escapes).
            let shown: String = line
                .chars()
                .skip(start_col)
                .take(text.chars().count())
                .collect();
            if shown == text {
                Location::new(
                    node.loc.line,
                    node.loc.column + quote + chars_before(prefix),
                )
            } else {
                node.loc
            }
        }
        ScalarStyle::Literal => {
            let value_line = prefix.matches('\n').count();
            let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
            let Some(value_text) = text[line_start..].split('\n').next() else {
                return node.loc;
            };
            // The block's content starts on the line after its `|` header.
            for header in [line_idx, line_idx.saturating_sub(1)] {
                let first = header + 1;
                let Some(indent) = lines
                    .get(first..)
                    .and_then(|rest| rest.iter().find(|l| !l.trim().is_empty()))
                    .map(|l| l.len() - l.trim_start_matches(' ').len())
                else {
                    continue;
                };
                if let Some(src) = lines.get(first + value_line)
                    && src.get(indent..) == Some(value_text)
                {
                    let col =
                        src[..indent].chars().count() + 1 + chars_before(&prefix[line_start..]);
                    return Location::new(first + value_line + 1, col);
                }
            }
            node.loc
        }
        _ => node.loc,
    }
}
