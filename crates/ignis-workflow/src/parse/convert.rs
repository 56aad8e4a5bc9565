//! Tree-to-model conversion. Each function converts what it can and records a diagnostic
//! for everything it cannot (unknown key, wrong type, missing key, bad value), so one pass
//! reports every schema problem of the file.

use super::Sink;
use super::yaml::{Node, NodeKind};
use crate::model::*;
use crate::plan::filter::FilterPattern;
use indexmap::IndexMap;
use serde_json::Value;

/// Every event GitHub can trigger a workflow with (the "Events that trigger workflows"
/// reference). An event name outside this list is refused like GitHub refuses it.
pub(crate) const EVENTS: &[&str] = &[
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "create",
    "delete",
    "deployment",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "gollum",
    "image_version",
    "issue_comment",
    "issues",
    "label",
    "merge_group",
    "milestone",
    "page_build",
    "project",
    "project_card",
    "project_column",
    "public",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_target",
    "push",
    "registry_package",
    "release",
    "repository_dispatch",
    "schedule",
    "status",
    "watch",
    "workflow_call",
    "workflow_dispatch",
    "workflow_run",
];

/// `GITHUB_TOKEN` permission scopes.
const PERMISSION_SCOPES: &[&str] = &[
    "actions",
    "artifact-metadata",
    "attestations",
    "checks",
    "contents",
    "deployments",
    "discussions",
    "id-token",
    "issues",
    "models",
    "packages",
    "pages",
    "pull-requests",
    "repository-projects",
    "security-events",
    "statuses",
];

const WORKFLOW_KEYS: &[&str] = &[
    "name",
    "run-name",
    "on",
    "permissions",
    "env",
    "defaults",
    "concurrency",
    "jobs",
];

const JOB_KEYS: &[&str] = &[
    "name",
    "needs",
    "if",
    "runs-on",
    "environment",
    "concurrency",
    "outputs",
    "env",
    "defaults",
    "permissions",
    "steps",
    "timeout-minutes",
    "strategy",
    "continue-on-error",
    "container",
    "services",
    "uses",
    "with",
    "secrets",
];

/// Keys GitHub accepts in a job that calls a reusable workflow.
const CALLER_JOB_KEYS: &[&str] = &[
    "name",
    "uses",
    "with",
    "secrets",
    "needs",
    "if",
    "permissions",
    "strategy",
    "concurrency",
];

const STEP_KEYS: &[&str] = &[
    "id",
    "if",
    "name",
    "uses",
    "run",
    "shell",
    "with",
    "env",
    "continue-on-error",
    "timeout-minutes",
    "working-directory",
];

/// Whether a string holds a `${{ }}` expression.
pub(crate) fn has_expr(s: &str) -> bool {
    s.contains("${{")
}

/// A checked mapping: its entries by key, duplicates and unknown keys already reported.
pub(crate) struct Fields<'n> {
    entries: IndexMap<&'n str, (&'n Node, &'n Node)>,
    loc: Location,
}

impl<'n> Fields<'n> {
    fn empty(loc: Location) -> Self {
        Self {
            entries: IndexMap::new(),
            loc,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.get(key).map(|(_, v)| *v)
    }

    fn key_loc(&self, key: &str) -> Option<Location> {
        self.entries.get(key).map(|(k, _)| k.loc)
    }

    fn has(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }
}

/// The Levenshtein distance, for "did you mean" hints on unknown keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggestion(key: &str, allowed: &[&str]) -> String {
    let best = allowed
        .iter()
        .map(|a| (distance(key, a), *a))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, a)) if d <= 2 || a.eq_ignore_ascii_case(key) => format!(" (did you mean `{a}`?)"),
        _ => String::new(),
    }
}

/// The converter: a diagnostics sink plus typed readers of tree nodes.
pub(crate) struct Cx<'s> {
    pub(crate) sink: &'s mut Sink,
}

impl Cx<'_> {
    fn type_error(&mut self, node: &Node, what: &str, expected: &str) {
        self.sink.schema(
            node.loc,
            format!("{what}: expected {expected}, found {}", node.type_name()),
        );
    }

    /// The mapping entries of `node`, reporting duplicates; `None` (and a diagnostic) when
    /// it is not a mapping.
    pub(crate) fn mapping<'n>(&mut self, node: &'n Node, what: &str) -> Option<Fields<'n>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.type_error(node, what, "a mapping");
            return None;
        };
        let mut fields = Fields::empty(node.loc);
        for (k, v) in entries {
            let Some(key) = k.text() else {
                self.sink
                    .schema(k.loc, format!("{what}: keys must be strings"));
                continue;
            };
            if fields.entries.contains_key(key) {
                self.sink
                    .schema(k.loc, format!("{what}: `{key}` is already defined"));
                continue;
            }
            fields.entries.insert(key, (k, v));
        }
        Some(fields)
    }

    /// Like [`Self::mapping`], also reporting keys outside `allowed`.
    fn fields<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Fields<'n> {
        let Some(fields) = self.mapping(node, what) else {
            return Fields::empty(node.loc);
        };
        for (key, (k, _)) in &fields.entries {
            if !allowed.contains(key) {
                let hint = suggestion(key, allowed);
                self.sink
                    .schema(k.loc, format!("unknown key `{key}` in {what}{hint}"));
            }
        }
        fields
    }

    fn require(&mut self, fields: &Fields<'_>, key: &str, what: &str) {
        if !fields.has(key) {
            self.sink
                .schema(fields.loc, format!("{what}: missing required key `{key}`"));
        }
    }

    /// A non-null scalar as text (numbers and booleans as written).
    pub(crate) fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.scalar() {
            Some(s) if !s.is_null() => Some(s.text.clone()),
            _ => {
                self.type_error(node, what, "a string");
                None
            }
        }
    }

    fn opt_string(&mut self, f: &Fields<'_>, key: &str, what: &str) -> Option<String> {
        let node = f.get(key)?;
        self.string(node, &format!("{what} `{key}`"))
    }

    /// A string or a sequence of strings.
    fn string_list(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        match &node.kind {
            NodeKind::Scalar(_) => self.string(node, what).map(|s| vec![s]),
            NodeKind::Seq(items) => Some(
                items
                    .iter()
                    .filter_map(|item| self.string(item, what))
                    .collect(),
            ),
            NodeKind::Map(_) => {
                self.type_error(node, what, "a string or a sequence of strings");
                None
            }
        }
    }

    /// A sequence of strings (a single string is refused: filters must be lists).
    fn seq_of_strings(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        match &node.kind {
            NodeKind::Seq(items) => Some(
                items
                    .iter()
                    .filter_map(|item| self.string(item, what))
                    .collect(),
            ),
            NodeKind::Scalar(s) if !s.is_null() => Some(vec![s.text.clone()]),
            _ => {
                self.type_error(node, what, "a sequence of strings");
                None
            }
        }
    }

    /// Compiles each filter pattern (`branches`, `paths`, ...) of `node` with the planner's
    /// compiler, reporting a bad one at its own item: the model keeps no locations for `on:`
    /// entries, so this is the last point where the error can say where it is.
    fn filter_patterns(&mut self, node: &Node, what: &str) {
        let items = match &node.kind {
            NodeKind::Seq(items) => items.as_slice(),
            NodeKind::Scalar(_) => std::slice::from_ref(node),
            NodeKind::Map(_) => return,
        };
        for item in items {
            let Some(text) = item.scalar().filter(|s| !s.is_null()).map(|s| &s.text) else {
                continue;
            };
            if let Err(err) = FilterPattern::new(text) {
                self.sink.schema(item.loc, format!("{what}: {err}"));
            }
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.scalar().map(|s| s.value()) {
            Some(Value::Bool(b)) => Some(b),
            _ => {
                self.type_error(node, what, "a boolean");
                None
            }
        }
    }

    fn bool_expr(&mut self, node: &Node, what: &str) -> Option<BoolExpr> {
        match node.scalar().map(|s| s.value()) {
            Some(Value::Bool(b)) => Some(BoolExpr::Literal(b)),
            Some(Value::String(s)) if has_expr(&s) => Some(BoolExpr::Expr(s)),
            _ => {
                self.type_error(node, what, "a boolean or an expression");
                None
            }
        }
    }

    fn number_expr(&mut self, node: &Node, what: &str) -> Option<NumberExpr> {
        match node.scalar().map(|s| s.value()) {
            Some(Value::Number(n)) => n.as_f64().map(NumberExpr::Literal),
            Some(Value::String(s)) if has_expr(&s) => Some(NumberExpr::Expr(s)),
            _ => {
                self.type_error(node, what, "a number or an expression");
                None
            }
        }
    }

    /// A mapping of names to scalar values (`env:`, `with:`), values keeping their type.
    fn scalar_map(&mut self, node: &Node, what: &str) -> IndexMap<String, Value> {
        let mut out = IndexMap::new();
        let Some(fields) = self.mapping(node, what) else {
            return out;
        };
        for (key, (_, v)) in &fields.entries {
            match &v.kind {
                NodeKind::Scalar(s) => {
                    out.insert((*key).to_owned(), s.value());
                }
                _ => self.type_error(v, &format!("{what} `{key}`"), "a scalar value"),
            }
        }
        out
    }

    /// A mapping of names to strings (`outputs:`, explicit `secrets:`).
    fn string_map(&mut self, node: &Node, what: &str) -> IndexMap<String, String> {
        let mut out = IndexMap::new();
        let Some(fields) = self.mapping(node, what) else {
            return out;
        };
        for (key, (_, v)) in &fields.entries {
            if let Some(s) = self.string(v, &format!("{what} `{key}`")) {
                out.insert((*key).to_owned(), s);
            }
        }
        out
    }
}

/// Converts a workflow tree.
pub(crate) fn workflow(root: &Node, sink: &mut Sink) -> Workflow {
    let mut cx = Cx { sink };
    let f = cx.fields(root, "workflow", WORKFLOW_KEYS);
    let on = match f.get("on") {
        Some(node) => on(&mut cx, node),
        None => {
            cx.sink.schema(
                root.loc,
                "workflow: missing required key `on` (no event triggers)",
            );
            On::default()
        }
    };
    let jobs = match f.get("jobs") {
        Some(node) => jobs(&mut cx, node),
        None => {
            cx.sink
                .schema(root.loc, "workflow: missing required key `jobs`");
            IndexMap::new()
        }
    };
    Workflow {
        name: cx.opt_string(&f, "name", "workflow"),
        run_name: cx.opt_string(&f, "run-name", "workflow"),
        on,
        permissions: f.get("permissions").and_then(|n| permissions(&mut cx, n)),
        env: f
            .get("env")
            .map(|n| cx.scalar_map(n, "workflow `env`"))
            .unwrap_or_default(),
        defaults: f.get("defaults").map(|n| defaults(&mut cx, n)),
        concurrency: f.get("concurrency").and_then(|n| concurrency(&mut cx, n)),
        jobs,
    }
}

fn on(cx: &mut Cx<'_>, node: &Node) -> On {
    let mut out = On::default();
    let mut add = |cx: &mut Cx<'_>, name_node: &Node, config: Option<&Node>| {
        let Some(name) = cx.string(name_node, "event name") else {
            return;
        };
        if !EVENTS.contains(&name.as_str()) {
            let hint = suggestion(&name, EVENTS);
            cx.sink
                .schema(name_node.loc, format!("unknown event `{name}`{hint}"));
            return;
        }
        if out.events.contains_key(&name) {
            cx.sink
                .schema(name_node.loc, format!("event `{name}` is already defined"));
            return;
        }
        let trigger = trigger(cx, &name, config.filter(|c| !c.is_null()));
        out.events.insert(name, trigger);
    };
    match &node.kind {
        NodeKind::Scalar(_) => add(cx, node, None),
        NodeKind::Seq(items) => {
            for item in items {
                add(cx, item, None);
            }
        }
        NodeKind::Map(entries) => {
            for (k, v) in entries {
                add(cx, k, Some(v));
            }
        }
    }
    if out.events.is_empty() && !matches!(&node.kind, NodeKind::Map(e) if !e.is_empty()) {
        cx.sink.schema(node.loc, "`on` defines no event triggers");
    }
    out
}

fn trigger(cx: &mut Cx<'_>, event: &str, config: Option<&Node>) -> Trigger {
    match event {
        "push" => Trigger::Push(ref_filters(cx, event, config, true)),
        "pull_request" => Trigger::PullRequest(ref_filters(cx, event, config, false)),
        "pull_request_target" => Trigger::PullRequestTarget(ref_filters(cx, event, config, false)),
        "workflow_dispatch" => Trigger::WorkflowDispatch(workflow_dispatch(cx, config)),
        "workflow_call" => Trigger::WorkflowCall(workflow_call(cx, config)),
        "schedule" => Trigger::Schedule(schedule(cx, config)),
        _ => {
            let mut other = OtherTrigger::default();
            if let Some(config) = config {
                // Every other event takes at most `types`; `workflow_run` also filters by
                // workflow and branch.
                let allowed: &[&str] = if event == "workflow_run" {
                    &["types", "workflows", "branches", "branches-ignore"]
                } else {
                    &["types"]
                };
                let f = cx.fields(config, &format!("`on.{event}`"), allowed);
                for key in ["branches", "branches-ignore"] {
                    if let Some(node) = f.get(key) {
                        cx.filter_patterns(node, &format!("`on.{event}.{key}`"));
                    }
                }
                if let Some(types) = f.get("types") {
                    other.types = cx
                        .string_list(types, &format!("`on.{event}.types`"))
                        .unwrap_or_default();
                }
                other.config = config.to_value();
            }
            Trigger::Other(other)
        }
    }
}

fn ref_filters(cx: &mut Cx<'_>, event: &str, config: Option<&Node>, push: bool) -> RefFilters {
    let mut out = RefFilters::default();
    let Some(config) = config else {
        return out;
    };
    let allowed: &[&str] = if push {
        &[
            "branches",
            "branches-ignore",
            "tags",
            "tags-ignore",
            "paths",
            "paths-ignore",
        ]
    } else {
        &[
            "branches",
            "branches-ignore",
            "paths",
            "paths-ignore",
            "types",
        ]
    };
    let what = format!("`on.{event}`");
    let f = cx.fields(config, &what, allowed);
    let list = |cx: &mut Cx<'_>, key: &str| {
        let node = f.get(key)?;
        let what = format!("`on.{event}.{key}`");
        let patterns = cx.seq_of_strings(node, &what)?;
        if key != "types" {
            cx.filter_patterns(node, &what);
        }
        Some(patterns)
    };
    out.branches = list(cx, "branches");
    out.branches_ignore = list(cx, "branches-ignore");
    out.tags = list(cx, "tags");
    out.tags_ignore = list(cx, "tags-ignore");
    out.paths = list(cx, "paths");
    out.paths_ignore = list(cx, "paths-ignore");
    out.types = list(cx, "types").unwrap_or_default();
    for (a, b) in [
        ("branches", "branches-ignore"),
        ("tags", "tags-ignore"),
        ("paths", "paths-ignore"),
    ] {
        if let (true, Some(loc)) = (f.has(a), f.key_loc(b)) {
            cx.sink.schema(
                loc,
                format!("`on.{event}`: `{a}` and `{b}` cannot both be used for the same event"),
            );
        }
    }
    out
}

fn workflow_dispatch(cx: &mut Cx<'_>, config: Option<&Node>) -> WorkflowDispatch {
    let mut out = WorkflowDispatch::default();
    let Some(config) = config else {
        return out;
    };
    let f = cx.fields(config, "`on.workflow_dispatch`", &["inputs"]);
    let Some(inputs) = f.get("inputs") else {
        return out;
    };
    if inputs.is_null() {
        return out;
    }
    let Some(inputs) = cx.mapping(inputs, "`on.workflow_dispatch.inputs`") else {
        return out;
    };
    for (name, (k, v)) in &inputs.entries {
        let what = format!("workflow_dispatch input `{name}`");
        let f = cx.fields(
            v,
            &what,
            &["description", "required", "default", "type", "options"],
        );
        let input_type = match f.get("type") {
            None => DispatchInputType::String,
            Some(t) => match cx.string(t, &what).as_deref() {
                Some("string") | None => DispatchInputType::String,
                Some("boolean") => DispatchInputType::Boolean,
                Some("number") => DispatchInputType::Number,
                Some("choice") => DispatchInputType::Choice,
                Some("environment") => DispatchInputType::Environment,
                Some(other) => {
                    cx.sink.schema(
                        t.loc,
                        format!(
                            "{what}: unknown type `{other}` (expected string, boolean, number, choice or environment)"
                        ),
                    );
                    DispatchInputType::String
                }
            },
        };
        let options = f
            .get("options")
            .and_then(|o| cx.seq_of_strings(o, &format!("{what} `options`")))
            .unwrap_or_default();
        if input_type == DispatchInputType::Choice && options.is_empty() {
            cx.sink
                .schema(v.loc, format!("{what}: a choice input needs `options`"));
        }
        let default = f.get("default").map(Node::to_value);
        if let (DispatchInputType::Choice, Some(Value::String(d))) = (input_type, &default)
            && !options.contains(d)
            && let Some(n) = f.get("default")
        {
            cx.sink.schema(
                n.loc,
                format!("{what}: default `{d}` is not one of the options"),
            );
        }
        out.inputs.insert(
            (*name).to_owned(),
            DispatchInput {
                description: cx.opt_string(&f, "description", &what),
                required: f
                    .get("required")
                    .and_then(|n| cx.boolean(n, &format!("{what} `required`")))
                    .unwrap_or(false),
                default,
                input_type,
                options,
                location: k.loc,
            },
        );
    }
    out
}

fn workflow_call(cx: &mut Cx<'_>, config: Option<&Node>) -> WorkflowCall {
    let mut out = WorkflowCall::default();
    let Some(config) = config else {
        return out;
    };
    let f = cx.fields(
        config,
        "`on.workflow_call`",
        &["inputs", "outputs", "secrets"],
    );
    if let Some(inputs) = f.get("inputs").filter(|n| !n.is_null())
        && let Some(inputs) = cx.mapping(inputs, "`on.workflow_call.inputs`")
    {
        for (name, (k, v)) in &inputs.entries {
            let what = format!("workflow_call input `{name}`");
            let f = cx.fields(v, &what, &["description", "required", "default", "type"]);
            // GitHub's reference says `type` is required; act's suite (and act) accept
            // inputs without it, so it is tolerated and defaults to `string`.
            let input_type = match f.get("type") {
                None => CallInputType::String,
                Some(t) => match cx.string(t, &what).as_deref() {
                    Some("string") | None => CallInputType::String,
                    Some("boolean") => CallInputType::Boolean,
                    Some("number") => CallInputType::Number,
                    Some(other) => {
                        cx.sink.schema(
                            t.loc,
                            format!(
                                "{what}: unknown type `{other}` (expected string, boolean or number)"
                            ),
                        );
                        CallInputType::String
                    }
                },
            };
            out.inputs.insert(
                (*name).to_owned(),
                CallInput {
                    description: cx.opt_string(&f, "description", &what),
                    required: f
                        .get("required")
                        .and_then(|n| cx.boolean(n, &format!("{what} `required`")))
                        .unwrap_or(false),
                    default: f.get("default").map(Node::to_value),
                    input_type,
                    location: k.loc,
                },
            );
        }
    }
    if let Some(outputs) = f.get("outputs").filter(|n| !n.is_null())
        && let Some(outputs) = cx.mapping(outputs, "`on.workflow_call.outputs`")
    {
        for (name, (_, v)) in &outputs.entries {
            let what = format!("workflow_call output `{name}`");
            let f = cx.fields(v, &what, &["description", "value"]);
            cx.require(&f, "value", &what);
            out.outputs.insert(
                (*name).to_owned(),
                CallOutput {
                    description: cx.opt_string(&f, "description", &what),
                    value: cx.opt_string(&f, "value", &what).unwrap_or_default(),
                },
            );
        }
    }
    if let Some(secrets) = f.get("secrets").filter(|n| !n.is_null())
        && let Some(secrets) = cx.mapping(secrets, "`on.workflow_call.secrets`")
    {
        for (name, (_, v)) in &secrets.entries {
            let what = format!("workflow_call secret `{name}`");
            let mut secret = CallSecret::default();
            if !v.is_null() {
                let f = cx.fields(v, &what, &["description", "required"]);
                secret.description = cx.opt_string(&f, "description", &what);
                secret.required = f
                    .get("required")
                    .and_then(|n| cx.boolean(n, &format!("{what} `required`")))
                    .unwrap_or(false);
            }
            out.secrets.insert((*name).to_owned(), secret);
        }
    }
    out
}

fn schedule(cx: &mut Cx<'_>, config: Option<&Node>) -> Vec<Schedule> {
    let mut out = Vec::new();
    let Some(config) = config else {
        return out;
    };
    let NodeKind::Seq(items) = &config.kind else {
        cx.type_error(config, "`on.schedule`", "a sequence of `cron` entries");
        return out;
    };
    for item in items {
        let f = cx.fields(item, "`on.schedule` entry", &["cron", "timezone"]);
        cx.require(&f, "cron", "`on.schedule` entry");
        let Some(cron) = cx.opt_string(&f, "cron", "`on.schedule` entry") else {
            continue;
        };
        if cron.split_whitespace().count() != 5
            && let Some(n) = f.get("cron")
        {
            cx.sink.schema(
                n.loc,
                format!(
                    "invalid cron `{cron}`: expected five fields (minute hour day month weekday)"
                ),
            );
        }
        out.push(Schedule {
            cron,
            timezone: cx.opt_string(&f, "timezone", "`on.schedule` entry"),
        });
    }
    out
}

fn permissions(cx: &mut Cx<'_>, node: &Node) -> Option<Permissions> {
    if let Some(s) = node.scalar() {
        return match s.text.as_str() {
            "read-all" => Some(Permissions::ReadAll),
            "write-all" => Some(Permissions::WriteAll),
            other => {
                cx.sink.schema(
                    node.loc,
                    format!("`permissions`: expected `read-all`, `write-all` or a mapping, found `{other}`"),
                );
                None
            }
        };
    }
    let f = cx.fields(node, "`permissions`", PERMISSION_SCOPES);
    let mut scopes = IndexMap::new();
    for (scope, (_, v)) in &f.entries {
        let level = match v.text() {
            Some("read") => PermissionLevel::Read,
            Some("write") => PermissionLevel::Write,
            Some("none") => PermissionLevel::None,
            _ => {
                cx.sink.schema(
                    v.loc,
                    format!("permission `{scope}`: expected `read`, `write` or `none`"),
                );
                continue;
            }
        };
        scopes.insert((*scope).to_owned(), level);
    }
    Some(Permissions::Scopes(scopes))
}

fn defaults(cx: &mut Cx<'_>, node: &Node) -> Defaults {
    let f = cx.fields(node, "`defaults`", &["run"]);
    let run = f.get("run").map(|run| {
        let f = cx.fields(run, "`defaults.run`", &["shell", "working-directory"]);
        RunDefaults {
            shell: cx.opt_string(&f, "shell", "`defaults.run`"),
            working_directory: cx.opt_string(&f, "working-directory", "`defaults.run`"),
        }
    });
    Defaults { run }
}

fn concurrency(cx: &mut Cx<'_>, node: &Node) -> Option<Concurrency> {
    if node.scalar().is_some() {
        return cx.string(node, "`concurrency`").map(|group| Concurrency {
            group,
            cancel_in_progress: None,
        });
    }
    let f = cx.fields(node, "`concurrency`", &["group", "cancel-in-progress"]);
    cx.require(&f, "group", "`concurrency`");
    Some(Concurrency {
        group: cx.opt_string(&f, "group", "`concurrency`")?,
        cancel_in_progress: f
            .get("cancel-in-progress")
            .and_then(|n| cx.bool_expr(n, "`concurrency.cancel-in-progress`")),
    })
}

fn jobs(cx: &mut Cx<'_>, node: &Node) -> IndexMap<String, Job> {
    let mut out = IndexMap::new();
    let Some(f) = cx.mapping(node, "`jobs`") else {
        return out;
    };
    if f.entries.is_empty() {
        cx.sink
            .schema(node.loc, "`jobs` must define at least one job");
    }
    for (id, (k, v)) in &f.entries {
        out.insert((*id).to_owned(), job(cx, id, k.loc, v));
    }
    out
}

fn job(cx: &mut Cx<'_>, id: &str, loc: Location, node: &Node) -> Job {
    let what = format!("job `{id}`");
    let f = cx.fields(node, &what, JOB_KEYS);
    let is_call = f.has("uses");
    if is_call {
        for (key, (k, _)) in &f.entries {
            if JOB_KEYS.contains(key) && !CALLER_JOB_KEYS.contains(key) {
                cx.sink.schema(
                    k.loc,
                    format!(
                        "{what}: `{key}` is not allowed in a job that calls a reusable workflow"
                    ),
                );
            }
        }
    } else {
        for key in ["with", "secrets"] {
            if let Some(kloc) = f.key_loc(key) {
                cx.sink.schema(
                    kloc,
                    format!("{what}: `{key}` is only allowed in a job that calls a reusable workflow (`uses`)"),
                );
            }
        }
        if matches!(node.kind, NodeKind::Map(_)) {
            if !f.has("runs-on") {
                cx.sink
                    .schema(loc, format!("{what}: missing required key `runs-on`"));
            }
            if !f.has("steps") {
                cx.sink.schema(
                    loc,
                    format!(
                        "{what}: missing required key `steps` (or `uses` for a reusable workflow)"
                    ),
                );
            }
        }
    }
    let steps = match f.get("steps") {
        Some(n) => steps(cx, n, &what, false),
        None => Vec::new(),
    };
    Job {
        id: id.to_owned(),
        location: loc,
        name: cx.opt_string(&f, "name", &what),
        needs: f
            .get("needs")
            .and_then(|n| cx.string_list(n, &format!("{what} `needs`")))
            .unwrap_or_default(),
        condition: f.get("if").and_then(|n| condition(cx, n, &what)),
        runs_on: f.get("runs-on").and_then(|n| runs_on(cx, n, &what)),
        environment: f.get("environment").and_then(|n| environment(cx, n, &what)),
        concurrency: f.get("concurrency").and_then(|n| concurrency(cx, n)),
        outputs: f
            .get("outputs")
            .map(|n| cx.string_map(n, &format!("{what} `outputs`")))
            .unwrap_or_default(),
        env: f
            .get("env")
            .map(|n| cx.scalar_map(n, &format!("{what} `env`")))
            .unwrap_or_default(),
        defaults: f.get("defaults").map(|n| defaults(cx, n)),
        permissions: f.get("permissions").and_then(|n| permissions(cx, n)),
        steps,
        timeout_minutes: f
            .get("timeout-minutes")
            .and_then(|n| cx.number_expr(n, &format!("{what} `timeout-minutes`"))),
        strategy: f.get("strategy").map(|n| strategy(cx, n, &what)),
        continue_on_error: f
            .get("continue-on-error")
            .and_then(|n| cx.bool_expr(n, &format!("{what} `continue-on-error`"))),
        container: f.get("container").map(Node::to_value),
        services: f
            .get("services")
            .and_then(|n| cx.mapping(n, &format!("{what} `services`")))
            .map(|s| {
                s.entries
                    .iter()
                    .map(|(name, (_, v))| ((*name).to_owned(), v.to_value()))
                    .collect()
            })
            .unwrap_or_default(),
        uses: cx.opt_string(&f, "uses", &what),
        with: f
            .get("with")
            .map(|n| cx.scalar_map(n, &format!("{what} `with`")))
            .unwrap_or_default(),
        secrets: f.get("secrets").and_then(|n| job_secrets(cx, n, &what)),
    }
}

/// `if:` — any scalar (GitHub accepts `if: true`), kept as written.
fn condition(cx: &mut Cx<'_>, node: &Node, what: &str) -> Option<String> {
    cx.string(node, &format!("{what} `if`"))
}

fn runs_on(cx: &mut Cx<'_>, node: &Node, what: &str) -> Option<RunsOn> {
    let what = format!("{what} `runs-on`");
    match &node.kind {
        NodeKind::Map(_) => {
            let f = cx.fields(node, &what, &["group", "labels"]);
            if !f.has("group") && !f.has("labels") {
                cx.sink
                    .schema(node.loc, format!("{what}: expected `group` or `labels`"));
            }
            Some(RunsOn::Group {
                group: cx.opt_string(&f, "group", &what),
                labels: f
                    .get("labels")
                    .and_then(|n| cx.string_list(n, &what))
                    .unwrap_or_default(),
            })
        }
        _ => {
            let labels = cx.string_list(node, &what)?;
            if labels.is_empty() {
                cx.sink
                    .schema(node.loc, format!("{what}: at least one label is required"));
            }
            Some(RunsOn::Labels(labels))
        }
    }
}

fn environment(cx: &mut Cx<'_>, node: &Node, what: &str) -> Option<Environment> {
    let what = format!("{what} `environment`");
    if node.scalar().is_some() {
        return cx
            .string(node, &what)
            .map(|name| Environment { name, url: None });
    }
    let f = cx.fields(node, &what, &["name", "url"]);
    cx.require(&f, "name", &what);
    Some(Environment {
        name: cx.opt_string(&f, "name", &what)?,
        url: cx.opt_string(&f, "url", &what),
    })
}

fn job_secrets(cx: &mut Cx<'_>, node: &Node, what: &str) -> Option<JobSecrets> {
    if let Some(s) = node.scalar() {
        if s.text == "inherit" {
            return Some(JobSecrets::Inherit);
        }
        cx.sink.schema(
            node.loc,
            format!("{what} `secrets`: expected `inherit` or a mapping"),
        );
        return None;
    }
    Some(JobSecrets::Map(
        cx.string_map(node, &format!("{what} `secrets`")),
    ))
}

fn strategy(cx: &mut Cx<'_>, node: &Node, what: &str) -> Strategy {
    let what = format!("{what} `strategy`");
    let f = cx.fields(node, &what, &["matrix", "fail-fast", "max-parallel"]);
    Strategy {
        matrix: f.get("matrix").and_then(|n| matrix(cx, n, &what)),
        fail_fast: f
            .get("fail-fast")
            .and_then(|n| cx.bool_expr(n, &format!("{what} `fail-fast`"))),
        max_parallel: f
            .get("max-parallel")
            .and_then(|n| cx.number_expr(n, &format!("{what} `max-parallel`"))),
    }
}

fn matrix(cx: &mut Cx<'_>, node: &Node, what: &str) -> Option<MatrixSpec> {
    let what = format!("{what} `matrix`");
    if let Some(s) = node.scalar() {
        if has_expr(&s.text) {
            return Some(MatrixSpec::Expr(s.text.clone()));
        }
        cx.type_error(node, &what, "a mapping or an expression");
        return None;
    }
    let f = cx.mapping(node, &what)?;
    let mut out = Matrix::default();
    for (key, (_, v)) in &f.entries {
        match *key {
            "include" | "exclude" => {
                let entries = matrix_entries(cx, v, &format!("{what} `{key}`"));
                if *key == "include" {
                    out.include = entries;
                } else {
                    out.exclude = entries;
                }
            }
            _ => {
                let values = match &v.kind {
                    NodeKind::Seq(items) => {
                        if items.is_empty() {
                            cx.sink.schema(
                                v.loc,
                                format!(
                                    "{what}: matrix vector `{key}` does not contain any values"
                                ),
                            );
                        }
                        MatrixValues::List(items.iter().map(Node::to_value).collect())
                    }
                    NodeKind::Scalar(s) if has_expr(&s.text) => MatrixValues::Expr(s.text.clone()),
                    _ => {
                        cx.type_error(v, &format!("{what} `{key}`"), "a sequence or an expression");
                        continue;
                    }
                };
                out.dimensions.insert((*key).to_owned(), values);
            }
        }
    }
    if out.dimensions.is_empty() && out.include.is_empty() {
        cx.sink.schema(
            node.loc,
            format!("{what}: a matrix needs at least one vector or `include` entry"),
        );
    }
    Some(MatrixSpec::Matrix(out))
}

fn matrix_entries(cx: &mut Cx<'_>, node: &Node, what: &str) -> MatrixEntries {
    match &node.kind {
        NodeKind::Scalar(s) if has_expr(&s.text) => MatrixEntries::Expr(s.text.clone()),
        NodeKind::Seq(items) => MatrixEntries::List(
            items
                .iter()
                .filter_map(|item| {
                    let f = cx.mapping(item, what)?;
                    Some(
                        f.entries
                            .iter()
                            .map(|(k, (_, v))| ((*k).to_owned(), v.to_value()))
                            .collect(),
                    )
                })
                .collect(),
        ),
        _ => {
            cx.type_error(node, what, "a sequence of mappings or an expression");
            MatrixEntries::default()
        }
    }
}

/// Converts `steps:`. In composite actions (`composite == true`) a `run` step needs `shell`.
pub(crate) fn steps(cx: &mut Cx<'_>, node: &Node, what: &str, composite: bool) -> Vec<Step> {
    let NodeKind::Seq(items) = &node.kind else {
        cx.type_error(node, &format!("{what} `steps`"), "a sequence");
        return Vec::new();
    };
    if items.is_empty() && !composite {
        cx.sink.schema(
            node.loc,
            format!("{what}: `steps` must contain at least one step"),
        );
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| step(cx, index, item, what, composite))
        .collect()
}

fn step(cx: &mut Cx<'_>, index: usize, node: &Node, what: &str, composite: bool) -> Step {
    let swhat = format!("{what} step {index}");
    let f = cx.fields(node, &swhat, STEP_KEYS);
    let is_map = matches!(node.kind, NodeKind::Map(_));
    match (f.key_loc("uses"), f.key_loc("run")) {
        (Some(_), Some(run)) => cx.sink.schema(
            run,
            format!("{swhat}: a step cannot have both `uses` and `run`"),
        ),
        (None, None) if is_map => cx.sink.schema(
            node.loc,
            format!("{swhat}: a step needs either `uses` or `run`"),
        ),
        (Some(_), None) => {
            for key in ["shell", "working-directory"] {
                if let Some(loc) = f.key_loc(key) {
                    cx.sink
                        .schema(loc, format!("{swhat}: `{key}` is only allowed with `run`"));
                }
            }
        }
        (None, Some(_)) => {
            if let Some(loc) = f.key_loc("with") {
                cx.sink
                    .schema(loc, format!("{swhat}: `with` is only allowed with `uses`"));
            }
            if composite && !f.has("shell") {
                cx.sink.schema(
                    node.loc,
                    format!("{swhat}: a `run` step of a composite action needs `shell`"),
                );
            }
        }
        (None, None) => {}
    }
    Step {
        index,
        location: node.loc,
        id: cx.opt_string(&f, "id", &swhat),
        condition: f.get("if").and_then(|n| condition(cx, n, &swhat)),
        name: cx.opt_string(&f, "name", &swhat),
        uses: cx.opt_string(&f, "uses", &swhat),
        run: cx.opt_string(&f, "run", &swhat),
        shell: cx.opt_string(&f, "shell", &swhat),
        with: f
            .get("with")
            .filter(|n| !n.is_null())
            .map(|n| cx.scalar_map(n, &format!("{swhat} `with`")))
            .unwrap_or_default(),
        env: f
            .get("env")
            .filter(|n| !n.is_null())
            .map(|n| cx.scalar_map(n, &format!("{swhat} `env`")))
            .unwrap_or_default(),
        continue_on_error: f
            .get("continue-on-error")
            .and_then(|n| cx.bool_expr(n, &format!("{swhat} `continue-on-error`"))),
        timeout_minutes: f
            .get("timeout-minutes")
            .and_then(|n| cx.number_expr(n, &format!("{swhat} `timeout-minutes`"))),
        working_directory: cx.opt_string(&f, "working-directory", &swhat),
    }
}

/// Converts an `action.yml` tree.
pub(crate) fn action(root: &Node, sink: &mut Sink) -> Action {
    let mut cx = Cx { sink };
    let f = cx.fields(
        root,
        "action",
        &[
            "name",
            "description",
            "author",
            "inputs",
            "outputs",
            "runs",
            "branding",
        ],
    );
    let mut inputs = IndexMap::new();
    if let Some(node) = f.get("inputs").filter(|n| !n.is_null())
        && let Some(m) = cx.mapping(node, "action `inputs`")
    {
        for (name, (_, v)) in &m.entries {
            let what = format!("action input `{name}`");
            let mut input = ActionInput::default();
            if !v.is_null() {
                let f = cx.fields(
                    v,
                    &what,
                    &["description", "required", "default", "deprecationMessage"],
                );
                input.description = cx.opt_string(&f, "description", &what);
                input.required = f
                    .get("required")
                    .and_then(|n| cx.boolean(n, &format!("{what} `required`")))
                    .unwrap_or(false);
                input.default = f
                    .get("default")
                    .filter(|n| !n.is_null())
                    .and_then(|n| cx.string(n, &format!("{what} `default`")));
                input.deprecation_message = cx.opt_string(&f, "deprecationMessage", &what);
            }
            inputs.insert((*name).to_owned(), input);
        }
    }
    let mut outputs = IndexMap::new();
    if let Some(node) = f.get("outputs").filter(|n| !n.is_null())
        && let Some(m) = cx.mapping(node, "action `outputs`")
    {
        for (name, (_, v)) in &m.entries {
            let what = format!("action output `{name}`");
            let mut output = ActionOutput::default();
            if !v.is_null() {
                let f = cx.fields(v, &what, &["description", "value"]);
                output.description = cx.opt_string(&f, "description", &what);
                output.value = cx.opt_string(&f, "value", &what);
            }
            outputs.insert((*name).to_owned(), output);
        }
    }
    let runs = match f.get("runs") {
        Some(node) => runs(&mut cx, node),
        None => {
            cx.sink
                .schema(root.loc, "action: missing required key `runs`");
            None
        }
    };
    Action {
        name: cx.opt_string(&f, "name", "action"),
        description: cx.opt_string(&f, "description", "action"),
        author: cx.opt_string(&f, "author", "action"),
        inputs,
        outputs,
        runs: runs.unwrap_or(Runs::Composite { steps: Vec::new() }),
    }
}

fn runs(cx: &mut Cx<'_>, node: &Node) -> Option<Runs> {
    let f = cx.mapping(node, "action `runs`")?;
    let using_node = f.get("using");
    let Some(using) = using_node.and_then(|n| cx.string(n, "action `runs.using`")) else {
        if using_node.is_none() {
            cx.sink
                .schema(node.loc, "action `runs`: missing required key `using`");
        }
        return None;
    };
    match using.as_str() {
        "composite" => {
            let f = cx.fields(node, "composite action `runs`", &["using", "steps"]);
            cx.require(&f, "steps", "composite action `runs`");
            let steps = f
                .get("steps")
                .map(|n| steps(cx, n, "composite action", true))
                .unwrap_or_default();
            Some(Runs::Composite { steps })
        }
        "node12" | "node16" | "node20" | "node24" => {
            let what = "javascript action `runs`";
            let f = cx.fields(
                node,
                what,
                &["using", "main", "pre", "pre-if", "post", "post-if"],
            );
            cx.require(&f, "main", what);
            Some(Runs::Node {
                using,
                main: cx.opt_string(&f, "main", what).unwrap_or_default(),
                pre: cx.opt_string(&f, "pre", what),
                pre_if: cx.opt_string(&f, "pre-if", what),
                post: cx.opt_string(&f, "post", what),
                post_if: cx.opt_string(&f, "post-if", what),
            })
        }
        "docker" => {
            let what = "docker action `runs`";
            let f = cx.fields(
                node,
                what,
                &[
                    "using",
                    "image",
                    "entrypoint",
                    "args",
                    "env",
                    "pre-entrypoint",
                    "post-entrypoint",
                    "pre-if",
                    "post-if",
                ],
            );
            cx.require(&f, "image", what);
            Some(Runs::Docker {
                image: cx.opt_string(&f, "image", what).unwrap_or_default(),
                entrypoint: cx.opt_string(&f, "entrypoint", what),
                args: f
                    .get("args")
                    .and_then(|n| cx.seq_of_strings(n, "docker action `args`"))
                    .unwrap_or_default(),
                env: f
                    .get("env")
                    .map(|n| cx.scalar_map(n, "docker action `env`"))
                    .unwrap_or_default(),
                pre_entrypoint: cx.opt_string(&f, "pre-entrypoint", what),
                post_entrypoint: cx.opt_string(&f, "post-entrypoint", what),
                pre_if: cx.opt_string(&f, "pre-if", what),
                post_if: cx.opt_string(&f, "post-if", what),
            })
        }
        other => {
            if let Some(n) = using_node {
                cx.sink.schema(
                    n.loc,
                    format!("action `runs.using`: unknown runtime `{other}` (expected composite, node12, node16, node20, node24 or docker)"),
                );
            }
            None
        }
    }
}
