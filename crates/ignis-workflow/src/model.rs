//! The typed workflow model: GitHub's workflow syntax reference, literally.
//!
//! Built by [`crate::parse()`] (workflows) and [`crate::parse_action()`] (`action.yml`). The model
//! does not evaluate anything: every value that may hold a `${{ }}` expression is kept as the
//! source string (or a [`serde_json::Value`] for `with`/`env`/matrix values) for the runtime to
//! evaluate in the right context. Jobs and steps carry their source [`Location`] so the
//! runtime can report located errors long after parsing.
//!
//! Maps keep declaration order ([`IndexMap`]): GitHub shows jobs, matrix legs and inputs in the
//! order they were written.

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;

/// A 1-based line and column (in characters) in a workflow or action file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl Location {
    /// A location from 1-based line and column.
    pub fn new(line: usize, column: usize) -> Self {
        Self { line, column }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A workflow file (`.github/workflows/*.yml`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workflow {
    /// `name:`; GitHub shows the file path when absent.
    pub name: Option<String>,
    /// `run-name:` (may hold expressions over `github` and `inputs`).
    pub run_name: Option<String>,
    /// `on:` — the events that trigger the workflow.
    pub on: On,
    /// `permissions:` of the `GITHUB_TOKEN`.
    pub permissions: Option<Permissions>,
    /// `env:` for every job (values keep their YAML scalar type; see [`env_string`]).
    pub env: IndexMap<String, Value>,
    /// `defaults:` for every job.
    pub defaults: Option<Defaults>,
    /// `concurrency:` of the whole workflow.
    pub concurrency: Option<Concurrency>,
    /// `jobs:` in declaration order, keyed by job id.
    pub jobs: IndexMap<String, Job>,
}

/// `on:` — every form (`on: push`, `on: [push, pull_request]`, `on: {push: {...}}`) becomes a
/// map from event name to its configuration, in declaration order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct On {
    /// Event name to trigger configuration.
    pub events: IndexMap<String, Trigger>,
}

impl On {
    /// The trigger configured for `event`, if the workflow listens to it.
    pub fn get(&self, event: &str) -> Option<&Trigger> {
        self.events.get(event)
    }

    /// Whether the workflow listens to `event` at all (filters are the planner's business).
    pub fn contains(&self, event: &str) -> bool {
        self.events.contains_key(event)
    }
}

/// The configuration of one event under `on:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// `push` with its branch/tag/path filters.
    Push(RefFilters),
    /// `pull_request` with its filters and `types`.
    PullRequest(RefFilters),
    /// `pull_request_target` with its filters and `types`.
    PullRequestTarget(RefFilters),
    /// `workflow_dispatch` with its inputs.
    WorkflowDispatch(WorkflowDispatch),
    /// `workflow_call` (reusable workflow) with inputs, outputs and secrets.
    WorkflowCall(WorkflowCall),
    /// `schedule`: a list of cron entries.
    Schedule(Vec<Schedule>),
    /// Any other event (`issues`, `release`, `workflow_run`, ...), by name.
    Other(OtherTrigger),
}

/// Branch, tag and path filters of `push`, `pull_request` and `pull_request_target`.
///
/// `None` means the filter is absent (which is not the same as an empty list for GitHub:
/// an absent `branches` matches every branch).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RefFilters {
    /// `branches:` glob patterns (with `!` negation).
    pub branches: Option<Vec<String>>,
    /// `branches-ignore:` glob patterns.
    pub branches_ignore: Option<Vec<String>>,
    /// `tags:` glob patterns (`push` only).
    pub tags: Option<Vec<String>>,
    /// `tags-ignore:` glob patterns (`push` only).
    pub tags_ignore: Option<Vec<String>>,
    /// `paths:` glob patterns.
    pub paths: Option<Vec<String>>,
    /// `paths-ignore:` glob patterns.
    pub paths_ignore: Option<Vec<String>>,
    /// `types:` activity types (`pull_request*` only; empty means GitHub's defaults).
    pub types: Vec<String>,
}

/// `workflow_dispatch:`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct WorkflowDispatch {
    /// `inputs:` in declaration order.
    pub inputs: IndexMap<String, DispatchInput>,
}

/// One `workflow_dispatch` input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DispatchInput {
    /// `description:`.
    pub description: Option<String>,
    /// `required:` (default false).
    pub required: bool,
    /// `default:` with its YAML type (a boolean input defaults to a bool, etc.).
    pub default: Option<Value>,
    /// `type:` (default `string`).
    pub input_type: DispatchInputType,
    /// `options:` of a `choice` input.
    pub options: Vec<String>,
    /// Where the input is declared.
    pub location: Location,
}

/// The `type:` of a `workflow_dispatch` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchInputType {
    /// `string` (the default).
    #[default]
    String,
    /// `boolean`.
    Boolean,
    /// `number`.
    Number,
    /// `choice` (see [`DispatchInput::options`]).
    Choice,
    /// `environment`: the name of a deployment environment.
    Environment,
}

/// `workflow_call:` — the interface of a reusable workflow.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct WorkflowCall {
    /// `inputs:`.
    pub inputs: IndexMap<String, CallInput>,
    /// `outputs:`.
    pub outputs: IndexMap<String, CallOutput>,
    /// `secrets:`.
    pub secrets: IndexMap<String, CallSecret>,
}

/// One `workflow_call` input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallInput {
    /// `description:`.
    pub description: Option<String>,
    /// `required:` (default false).
    pub required: bool,
    /// `default:` with its YAML type; may be a string holding an expression.
    pub default: Option<Value>,
    /// `type:` (documented as required; tolerated when absent and then `string`, as act does).
    pub input_type: CallInputType,
    /// Where the input is declared.
    pub location: Location,
}

/// The `type:` of a `workflow_call` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallInputType {
    /// `boolean`.
    Boolean,
    /// `number`.
    Number,
    /// `string`.
    String,
}

/// One `workflow_call` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallOutput {
    /// `description:`.
    pub description: Option<String>,
    /// `value:` — an expression, usually over `jobs.<id>.outputs`.
    pub value: String,
}

/// One `workflow_call` secret.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CallSecret {
    /// `description:`.
    pub description: Option<String>,
    /// `required:` (default false).
    pub required: bool,
}

/// One `schedule:` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// `cron:` (POSIX cron syntax, five fields).
    pub cron: String,
    /// `timezone:` (IANA name), when given.
    pub timezone: Option<String>,
}

/// Any event other than the ones with dedicated variants.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct OtherTrigger {
    /// `types:` activity types, when given.
    pub types: Vec<String>,
    /// The whole configuration mapping as written (e.g. `workflow_run`'s `workflows` and
    /// `branches`), or `Null` for a bare event name.
    pub config: Value,
}

/// `permissions:` at workflow or job level.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permissions {
    /// `read-all`.
    ReadAll,
    /// `write-all`.
    WriteAll,
    /// A map of scope (`contents`, `id-token`, ...) to level; `{}` disables everything.
    Scopes(IndexMap<String, PermissionLevel>),
}

/// The access level of one permission scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionLevel {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `none`.
    None,
}

/// `defaults:` at workflow or job level.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Defaults {
    /// `defaults.run`.
    pub run: Option<RunDefaults>,
}

/// `defaults.run`: defaults of every `run:` step.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RunDefaults {
    /// `shell:`.
    pub shell: Option<String>,
    /// `working-directory:`.
    pub working_directory: Option<String>,
}

/// `concurrency:` at workflow or job level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concurrency {
    /// `group:` (the string form sets only this); may hold expressions.
    pub group: String,
    /// `cancel-in-progress:`.
    pub cancel_in_progress: Option<BoolExpr>,
}

/// A boolean or an expression yielding one (`continue-on-error: ${{ matrix.experimental }}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum BoolExpr {
    /// A literal `true`/`false`.
    Literal(bool),
    /// A string holding a `${{ }}` expression, evaluated by the runtime.
    Expr(String),
}

/// A number or an expression yielding one (`timeout-minutes: ${{ inputs.timeout }}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum NumberExpr {
    /// A literal number. GitHub floors `timeout-minutes`.
    Literal(f64),
    /// A string holding a `${{ }}` expression, evaluated by the runtime.
    Expr(String),
}

/// One job under `jobs:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// The job id (the key under `jobs:`).
    pub id: String,
    /// Where the job id is written.
    pub location: Location,
    /// `name:` (may hold expressions over `matrix`, `needs`, ...).
    pub name: Option<String>,
    /// `needs:` (a single string becomes a one-element list), in declaration order.
    pub needs: Vec<String>,
    /// `if:` as written; an implicit expression unless wrapped in `${{ }}`.
    pub condition: Option<String>,
    /// `runs-on:`; `None` only for reusable-workflow calls (`uses:`).
    pub runs_on: Option<RunsOn>,
    /// `environment:`.
    pub environment: Option<Environment>,
    /// `concurrency:`.
    pub concurrency: Option<Concurrency>,
    /// `outputs:` name to expression string.
    pub outputs: IndexMap<String, String>,
    /// `env:`.
    pub env: IndexMap<String, Value>,
    /// `defaults:`.
    pub defaults: Option<Defaults>,
    /// `permissions:`.
    pub permissions: Option<Permissions>,
    /// `steps:` in order (empty for reusable-workflow calls).
    pub steps: Vec<Step>,
    /// `timeout-minutes:` (GitHub's default is 360).
    pub timeout_minutes: Option<NumberExpr>,
    /// `strategy:`.
    pub strategy: Option<Strategy>,
    /// `continue-on-error:`.
    pub continue_on_error: Option<BoolExpr>,
    /// `container:` as written (string image or mapping). Validation refuses it today: no
    /// backend can run containers yet.
    pub container: Option<Value>,
    /// `services:` as written. Validation refuses them today, like `container:`.
    pub services: IndexMap<String, Value>,
    /// `uses:` of a reusable-workflow call (`./.github/workflows/x.yml` or
    /// `owner/repo/.github/workflows/x.yml@ref`).
    pub uses: Option<String>,
    /// `with:` inputs of a reusable-workflow call.
    pub with: IndexMap<String, Value>,
    /// `secrets:` of a reusable-workflow call.
    pub secrets: Option<JobSecrets>,
}

/// `runs-on:` in any of its forms.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunsOn {
    /// A label or a list of labels; each may hold an expression (`${{ matrix.os }}`), and
    /// a whole-string expression may yield a list when evaluated.
    Labels(Vec<String>),
    /// `{group, labels}`: a runner group, optionally narrowed by labels.
    Group {
        /// `group:`.
        group: Option<String>,
        /// `labels:` (a single string becomes a one-element list).
        labels: Vec<String>,
    },
}

/// `environment:` of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Environment {
    /// The environment name (the string form sets only this).
    pub name: String,
    /// `url:`.
    pub url: Option<String>,
}

/// `secrets:` of a reusable-workflow call job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobSecrets {
    /// `secrets: inherit`.
    Inherit,
    /// Explicit secrets, name to value expression.
    Map(IndexMap<String, String>),
}

/// `strategy:` of a job.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Strategy {
    /// `matrix:`.
    pub matrix: Option<MatrixSpec>,
    /// `fail-fast:` (GitHub's default is true).
    pub fail_fast: Option<BoolExpr>,
    /// `max-parallel:`.
    pub max_parallel: Option<NumberExpr>,
}

/// `strategy.matrix`: a mapping, or one expression yielding the whole matrix
/// (`matrix: ${{ fromJSON(needs.setup.outputs.matrix) }}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatrixSpec {
    /// A matrix written as a mapping.
    Matrix(Matrix),
    /// An expression string yielding the matrix mapping at run time.
    Expr(String),
}

/// A matrix written as a mapping: dimensions plus `include`/`exclude`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Matrix {
    /// Dimensions in declaration order (every key except `include`/`exclude`).
    pub dimensions: IndexMap<String, MatrixValues>,
    /// `include:` entries.
    pub include: MatrixEntries,
    /// `exclude:` entries.
    pub exclude: MatrixEntries,
}

/// The values of one matrix dimension.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatrixValues {
    /// A literal list (values keep their YAML type; entries may be mappings).
    List(Vec<Value>),
    /// An expression yielding the list at run time.
    Expr(String),
}

/// `include:` or `exclude:` of a matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatrixEntries {
    /// Literal entries, each a mapping of key to value.
    List(Vec<IndexMap<String, Value>>),
    /// An expression yielding the entries at run time.
    Expr(String),
}

impl Default for MatrixEntries {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl MatrixEntries {
    /// Whether there are no literal entries (an expression is never empty).
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::List(list) if list.is_empty())
    }
}

/// One step of a job or of a composite action.
///
/// Exactly one of `uses` and `run` is set (validation guarantees it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// 0-based position in its job's (or action's) `steps:`.
    pub index: usize,
    /// Where the step's mapping starts (its first key, just after the `-`).
    pub location: Location,
    /// `id:`.
    pub id: Option<String>,
    /// `if:` as written; an implicit expression unless wrapped in `${{ }}`.
    pub condition: Option<String>,
    /// `name:`.
    pub name: Option<String>,
    /// `uses:` — `./local/path`, `owner/repo[/path]@ref` or `docker://image`.
    pub uses: Option<String>,
    /// `run:` — the script.
    pub run: Option<String>,
    /// `shell:`.
    pub shell: Option<String>,
    /// `with:` inputs of an action.
    pub with: IndexMap<String, Value>,
    /// `env:`.
    pub env: IndexMap<String, Value>,
    /// `continue-on-error:`.
    pub continue_on_error: Option<BoolExpr>,
    /// `timeout-minutes:`.
    pub timeout_minutes: Option<NumberExpr>,
    /// `working-directory:`.
    pub working_directory: Option<String>,
}

/// A local or remote action's metadata file (`action.yml`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// `name:` (required by GitHub; absent tolerated).
    pub name: Option<String>,
    /// `description:`.
    pub description: Option<String>,
    /// `author:`.
    pub author: Option<String>,
    /// `inputs:` in declaration order.
    pub inputs: IndexMap<String, ActionInput>,
    /// `outputs:` in declaration order.
    pub outputs: IndexMap<String, ActionOutput>,
    /// `runs:`.
    pub runs: Runs,
}

/// One input of an action.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ActionInput {
    /// `description:`.
    pub description: Option<String>,
    /// `required:` (GitHub does not enforce it; kept for warnings).
    pub required: bool,
    /// `default:` as a string (action inputs are strings; may hold expressions).
    pub default: Option<String>,
    /// `deprecationMessage:`.
    pub deprecation_message: Option<String>,
}

/// One output of an action.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ActionOutput {
    /// `description:`.
    pub description: Option<String>,
    /// `value:` — required for composite actions, absent for the others.
    pub value: Option<String>,
}

/// `runs:` of an action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "using_kind", rename_all = "snake_case")]
pub enum Runs {
    /// `using: composite`.
    Composite {
        /// `steps:`.
        steps: Vec<Step>,
    },
    /// `using: node12` .. `node24`.
    Node {
        /// The `using:` value (`node20`, ...).
        using: String,
        /// `main:` script, relative to the action directory.
        main: String,
        /// `pre:` script.
        pre: Option<String>,
        /// `pre-if:` condition (default `always()`).
        pre_if: Option<String>,
        /// `post:` script.
        post: Option<String>,
        /// `post-if:` condition (default `always()`).
        post_if: Option<String>,
    },
    /// `using: docker`. Validation of workflows refuses docker actions today; the model still
    /// describes them so the refusal can say what was asked.
    Docker {
        /// `image:` (`Dockerfile` or `docker://...`).
        image: String,
        /// `entrypoint:`.
        entrypoint: Option<String>,
        /// `args:`.
        args: Vec<String>,
        /// `env:`.
        env: IndexMap<String, Value>,
        /// `pre-entrypoint:`.
        pre_entrypoint: Option<String>,
        /// `post-entrypoint:`.
        post_entrypoint: Option<String>,
        /// `pre-if:`.
        pre_if: Option<String>,
        /// `post-if:`.
        post_if: Option<String>,
    },
}

/// The string GitHub puts in the environment for an `env:` value.
///
/// YAML scalars keep their type in the model (`FOO: 1` is a number, `BAR: true` a bool)
/// because `with:` and matrix values need it; environment variables are strings, so the
/// runtime converts with this: strings as-is, booleans `true`/`false`, numbers in their
/// shortest form, null as the empty string, arrays and objects as compact JSON.
pub fn env_string(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_string_converts_scalars_like_github() {
        assert_eq!(env_string(&json!("x")), "x");
        assert_eq!(env_string(&json!(true)), "true");
        assert_eq!(env_string(&json!(false)), "false");
        assert_eq!(env_string(&json!(3)), "3");
        assert_eq!(env_string(&json!(3.0)), "3");
        assert_eq!(env_string(&json!(1.5)), "1.5");
        assert_eq!(env_string(&json!(null)), "");
        assert_eq!(env_string(&json!(["a", 1])), r#"["a",1]"#);
    }

    #[test]
    fn matrix_entries_default_is_empty_list() {
        assert!(MatrixEntries::default().is_empty());
        assert!(!MatrixEntries::Expr("${{ x }}".into()).is_empty());
    }
}
