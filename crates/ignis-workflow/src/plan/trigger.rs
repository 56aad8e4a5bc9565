//! Does a workflow trigger for an event? (docs.github.com, "Workflow syntax for GitHub
//! Actions": `on.<event_name>.types`, `on.push.<branches|tags|branches-ignore|tags-ignore>`,
//! `on.<pull_request|pull_request_target>.<branches|branches-ignore>`,
//! `on.<push|pull_request|pull_request_target>.<paths|paths-ignore>`.)
//!
//! - A push runs the workflow when its ref passes the filters of its kind. With only tag
//!   filters a branch push does not run it, and with only branch filters a tag push does not;
//!   with neither, both do. Path filters are not evaluated for tag pushes.
//! - Pull request branch filters apply to the *base* branch (`pull_request.base.ref`).
//! - `types` narrows activity types (payload `action`); `pull_request` and
//!   `pull_request_target` default to `opened`, `synchronize` and `reopened`.
//! - Path filters look at the changed files; "if there are no files changed, the workflow
//!   will not run".
//! - `workflow_run` checks `workflows` against the triggering workflow's name and
//!   `branches`/`branches-ignore` against the branch it ran on. Any other event triggers
//!   when it is named (and its `types`, if any, include the payload's `action`).
//!
//! Local runs often lack parts of a real payload (act sends `{}` for push). Where the input
//! needed by a filter is missing entirely (no ref, no `action`, no changed-file list), that
//! filter is not evaluated rather than guessed: the workflow is not refused for what the
//! caller could not tell us. [`TriggerInput`] lets the caller supply the ref and file list.

use serde_json::Value;

use super::filter::{FilterList, PatternError};
use crate::model::{On, RefFilters, Trigger};

/// GitHub's default activity types for `pull_request` and `pull_request_target`.
pub const DEFAULT_PULL_REQUEST_TYPES: [&str; 3] = ["opened", "synchronize", "reopened"];

/// A filter list of the workflow holds an invalid pattern. User error in the workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("on.{event}.{filter}: {source}")]
pub struct TriggerError {
    /// The event whose filters are wrong.
    pub event: String,
    /// `branches`, `paths-ignore`, ...
    pub filter: &'static str,
    /// The pattern problem.
    #[source]
    pub source: PatternError,
}

/// What happened, as far as trigger matching needs to know.
#[derive(Debug, Clone, Copy)]
pub struct TriggerInput<'a> {
    /// The event name (`push`, `pull_request`, `workflow_dispatch`, ...).
    pub event: &'a str,
    /// The webhook payload (`github.event`); `{}` or `null` when unknown.
    pub payload: &'a Value,
    /// The full ref (`refs/heads/main`, `refs/tags/v1`) when the payload has none, e.g. the
    /// local checkout's branch. A bare name is taken as a branch.
    pub git_ref: Option<&'a str>,
    /// The changed files, overriding what the payload says (push payloads list them in
    /// `commits[].added/modified/removed`; pull request payloads do not list them).
    pub changed_files: Option<&'a [String]>,
}

impl<'a> TriggerInput<'a> {
    /// An input with only the event and its payload.
    pub fn new(event: &'a str, payload: &'a Value) -> Self {
        Self {
            event,
            payload,
            git_ref: None,
            changed_files: None,
        }
    }
}

/// Why a workflow does or does not run for an event; `Run` is the only positive answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerDecision {
    /// The workflow runs.
    Run,
    /// The workflow does not listen to this event.
    NotListening,
    /// The activity type (`action`) is not among `types`.
    ActivityType(String),
    /// The branch or tag does not pass the ref filters.
    Ref(String),
    /// No changed file passes the path filters.
    Paths,
    /// `workflow_run`: the triggering workflow is not among `workflows`.
    TriggeringWorkflow(String),
}

impl TriggerDecision {
    /// Whether the workflow runs.
    pub fn runs(&self) -> bool {
        matches!(self, Self::Run)
    }
}

/// Decides whether a workflow with `on` runs for `input`.
pub fn decide(on: &On, input: &TriggerInput<'_>) -> Result<TriggerDecision, TriggerError> {
    let Some(trigger) = on.get(input.event) else {
        return Ok(TriggerDecision::NotListening);
    };
    let action = input.payload.get("action").and_then(Value::as_str);
    match trigger {
        Trigger::Push(filters) => decide_push(input, filters),
        Trigger::PullRequest(filters) | Trigger::PullRequestTarget(filters) => {
            if let Some(action) = action {
                let allowed = if filters.types.is_empty() {
                    DEFAULT_PULL_REQUEST_TYPES.contains(&action)
                } else {
                    filters.types.iter().any(|t| t == action)
                };
                if !allowed {
                    return Ok(TriggerDecision::ActivityType(action.to_owned()));
                }
            }
            decide_pull_request(input, filters)
        }
        Trigger::Other(other) => {
            if let Some(action) = action
                && !other.types.is_empty()
                && !other.types.iter().any(|t| t == action)
            {
                return Ok(TriggerDecision::ActivityType(action.to_owned()));
            }
            if input.event == "workflow_run" {
                return decide_workflow_run(input, &other.config);
            }
            Ok(TriggerDecision::Run)
        }
        Trigger::WorkflowDispatch(_) | Trigger::WorkflowCall(_) | Trigger::Schedule(_) => {
            Ok(TriggerDecision::Run)
        }
    }
}

/// Shorthand for `decide(..)?.runs()`.
pub fn triggers(on: &On, input: &TriggerInput<'_>) -> Result<bool, TriggerError> {
    Ok(decide(on, input)?.runs())
}

/// Compiles every filter list of every event, so invalid patterns are reported when the
/// workflow is planned even if the event at hand would not look at them.
pub fn check_filters(on: &On) -> Vec<TriggerError> {
    let mut errors = Vec::new();
    for (event, trigger) in &on.events {
        if let Trigger::Other(other) = trigger {
            for filter in ["branches", "branches-ignore"] {
                let patterns: Vec<&str> = other
                    .config
                    .get(filter)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if let Err(source) = FilterList::new(&patterns) {
                    errors.push(TriggerError {
                        event: event.clone(),
                        filter,
                        source,
                    });
                }
            }
            continue;
        }
        let (Trigger::Push(f) | Trigger::PullRequest(f) | Trigger::PullRequestTarget(f)) = trigger
        else {
            continue;
        };
        for (name, list) in filter_lists(f) {
            if let Some(list) = list
                && let Err(source) = FilterList::new(list)
            {
                errors.push(TriggerError {
                    event: event.clone(),
                    filter: name,
                    source,
                });
            }
        }
    }
    errors
}

fn filter_lists(f: &RefFilters) -> [(&'static str, Option<&Vec<String>>); 6] {
    [
        ("branches", f.branches.as_ref()),
        ("branches-ignore", f.branches_ignore.as_ref()),
        ("tags", f.tags.as_ref()),
        ("tags-ignore", f.tags_ignore.as_ref()),
        ("paths", f.paths.as_ref()),
        ("paths-ignore", f.paths_ignore.as_ref()),
    ]
}

fn compile(
    input: &TriggerInput<'_>,
    filter: &'static str,
    patterns: &[String],
) -> Result<FilterList, TriggerError> {
    FilterList::new(patterns).map_err(|source| TriggerError {
        event: input.event.to_owned(),
        filter,
        source,
    })
}

/// Include/exclude pair (`branches` / `branches-ignore`): `None` when neither is given.
/// The include/exclude pair's verdict on one ref name: `Some(decision)` naming the ref when
/// the pair filters it out, `None` when it passes or no pair is given.
fn refuses_ref(
    input: &TriggerInput<'_>,
    include: (&'static str, Option<&Vec<String>>),
    exclude: (&'static str, Option<&Vec<String>>),
    name: &str,
) -> Result<Option<TriggerDecision>, TriggerError> {
    let verdict = passes(input, include, exclude, &[name])?;
    Ok((verdict == Some(false)).then(|| TriggerDecision::Ref(name.to_owned())))
}

fn passes(
    input: &TriggerInput<'_>,
    include: (&'static str, Option<&Vec<String>>),
    exclude: (&'static str, Option<&Vec<String>>),
    names: &[&str],
) -> Result<Option<bool>, TriggerError> {
    let mut verdict = None;
    if let Some(patterns) = include.1 {
        let list = compile(input, include.0, patterns)?;
        verdict = Some(list.includes_any(names));
    }
    if let Some(patterns) = exclude.1 {
        let list = compile(input, exclude.0, patterns)?;
        let ok = !list.ignores_all(names);
        verdict = Some(verdict.unwrap_or(true) && ok);
    }
    Ok(verdict)
}

enum RefKind<'a> {
    Branch(&'a str),
    Tag(&'a str),
}

fn classify(full: &str) -> Option<RefKind<'_>> {
    if let Some(b) = full.strip_prefix("refs/heads/") {
        Some(RefKind::Branch(b))
    } else if let Some(t) = full.strip_prefix("refs/tags/") {
        Some(RefKind::Tag(t))
    } else if full.starts_with("refs/") || full.is_empty() {
        None
    } else {
        Some(RefKind::Branch(full))
    }
}

fn decide_push(input: &TriggerInput<'_>, f: &RefFilters) -> Result<TriggerDecision, TriggerError> {
    let full = input
        .payload
        .get("ref")
        .and_then(Value::as_str)
        .or(input.git_ref);
    let has_branch_filters = f.branches.is_some() || f.branches_ignore.is_some();
    let has_tag_filters = f.tags.is_some() || f.tags_ignore.is_some();
    let mut is_tag = false;
    match full.and_then(classify) {
        Some(RefKind::Branch(branch)) => {
            if !has_branch_filters && has_tag_filters {
                return Ok(TriggerDecision::Ref(branch.to_owned()));
            }
            if let Some(refused) = refuses_ref(
                input,
                ("branches", f.branches.as_ref()),
                ("branches-ignore", f.branches_ignore.as_ref()),
                branch,
            )? {
                return Ok(refused);
            }
        }
        Some(RefKind::Tag(tag)) => {
            is_tag = true;
            if !has_tag_filters && has_branch_filters {
                return Ok(TriggerDecision::Ref(tag.to_owned()));
            }
            if let Some(refused) = refuses_ref(
                input,
                ("tags", f.tags.as_ref()),
                ("tags-ignore", f.tags_ignore.as_ref()),
                tag,
            )? {
                return Ok(refused);
            }
        }
        None => {}
    }
    if is_tag {
        // "Path filters are not evaluated for pushes of tags."
        return Ok(TriggerDecision::Run);
    }
    decide_paths(input, f, push_changed_files(input.payload))
}

fn decide_pull_request(
    input: &TriggerInput<'_>,
    f: &RefFilters,
) -> Result<TriggerDecision, TriggerError> {
    let base = input
        .payload
        .pointer("/pull_request/base/ref")
        .and_then(Value::as_str)
        .or(input.git_ref);
    if let Some(base) = base {
        let branch = base.strip_prefix("refs/heads/").unwrap_or(base);
        if let Some(refused) = refuses_ref(
            input,
            ("branches", f.branches.as_ref()),
            ("branches-ignore", f.branches_ignore.as_ref()),
            branch,
        )? {
            return Ok(refused);
        }
    }
    decide_paths(input, f, None)
}

/// `on.workflow_run`: `workflows` names the triggering workflows (payload
/// `workflow_run.name`), `branches`/`branches-ignore` filter the branch it ran on
/// (`workflow_run.head_branch`).
fn decide_workflow_run(
    input: &TriggerInput<'_>,
    config: &Value,
) -> Result<TriggerDecision, TriggerError> {
    let strings = |key: &str| -> Option<Vec<String>> {
        config.get(key).and_then(Value::as_array).map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
    };
    let run = input.payload.get("workflow_run");
    if let (Some(workflows), Some(name)) = (
        strings("workflows"),
        run.and_then(|r| r.get("name")).and_then(Value::as_str),
    ) && !workflows.iter().any(|w| w == name)
    {
        return Ok(TriggerDecision::TriggeringWorkflow(name.to_owned()));
    }
    if let Some(branch) = run
        .and_then(|r| r.get("head_branch"))
        .and_then(Value::as_str)
    {
        let include = strings("branches");
        let exclude = strings("branches-ignore");
        if let Some(refused) = refuses_ref(
            input,
            ("branches", include.as_ref()),
            ("branches-ignore", exclude.as_ref()),
            branch,
        )? {
            return Ok(refused);
        }
    }
    Ok(TriggerDecision::Run)
}

fn decide_paths(
    input: &TriggerInput<'_>,
    f: &RefFilters,
    from_payload: Option<Vec<String>>,
) -> Result<TriggerDecision, TriggerError> {
    if f.paths.is_none() && f.paths_ignore.is_none() {
        return Ok(TriggerDecision::Run);
    }
    let files: Vec<String> = match (input.changed_files, from_payload) {
        (Some(files), _) => files.to_vec(),
        (None, Some(files)) => files,
        (None, None) => return Ok(TriggerDecision::Run),
    };
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    if names.is_empty() {
        return Ok(TriggerDecision::Paths);
    }
    let verdict = passes(
        input,
        ("paths", f.paths.as_ref()),
        ("paths-ignore", f.paths_ignore.as_ref()),
        &names,
    )?;
    Ok(if verdict == Some(false) {
        TriggerDecision::Paths
    } else {
        TriggerDecision::Run
    })
}

/// The union of `commits[].added/modified/removed` of a push payload, in first-seen order,
/// or `None` when the payload has no `commits` array.
pub fn push_changed_files(payload: &Value) -> Option<Vec<String>> {
    let commits = payload.get("commits")?.as_array()?;
    let mut files: Vec<String> = Vec::new();
    for commit in commits {
        for key in ["added", "modified", "removed"] {
            for file in commit
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !files.iter().any(|f| f == file) {
                    files.push(file.to_owned());
                }
            }
        }
    }
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OtherTrigger, WorkflowDispatch};
    use serde_json::json;

    fn on(events: Vec<(&str, Trigger)>) -> On {
        On {
            events: events.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    fn list(p: &[&str]) -> Option<Vec<String>> {
        Some(p.iter().map(|s| (*s).to_owned()).collect())
    }

    fn push_ref(on: &On, r: &str) -> bool {
        let payload = json!({ "ref": r });
        triggers(on, &TriggerInput::new("push", &payload)).expect("valid")
    }

    #[test]
    fn bare_events_trigger_when_named() {
        let o = on(vec![
            ("push", Trigger::Push(RefFilters::default())),
            (
                "workflow_dispatch",
                Trigger::WorkflowDispatch(WorkflowDispatch::default()),
            ),
            ("issues", Trigger::Other(OtherTrigger::default())),
        ]);
        let empty = json!({});
        for e in ["push", "workflow_dispatch", "issues"] {
            assert!(
                triggers(&o, &TriggerInput::new(e, &empty)).expect("ok"),
                "{e}"
            );
        }
        assert_eq!(
            decide(&o, &TriggerInput::new("pull_request", &empty)).expect("ok"),
            TriggerDecision::NotListening
        );
        assert!(push_ref(&o, "refs/tags/v1"));
    }

    #[test]
    fn push_branches_and_tags_from_docs() {
        let o = on(vec![(
            "push",
            Trigger::Push(RefFilters {
                branches: list(&["main", "mona/octocat", "releases/**"]),
                tags: list(&["v2", "v1.*"]),
                ..RefFilters::default()
            }),
        )]);
        for r in [
            "refs/heads/main",
            "refs/heads/mona/octocat",
            "refs/heads/releases/10",
            "refs/tags/v2",
            "refs/tags/v1.9.1",
        ] {
            assert!(push_ref(&o, r), "{r}");
        }
        for r in ["refs/heads/dev", "refs/tags/v3", "refs/tags/main"] {
            assert!(!push_ref(&o, r), "{r}");
        }
    }

    #[test]
    fn push_only_tags_skips_branches_and_vice_versa() {
        let tags_only = on(vec![(
            "push",
            Trigger::Push(RefFilters {
                tags: list(&["v*"]),
                ..RefFilters::default()
            }),
        )]);
        assert!(push_ref(&tags_only, "refs/tags/v1"));
        assert!(!push_ref(&tags_only, "refs/heads/main"));
        let branches_only = on(vec![(
            "push",
            Trigger::Push(RefFilters {
                branches_ignore: list(&["wip/**"]),
                ..RefFilters::default()
            }),
        )]);
        assert!(push_ref(&branches_only, "refs/heads/main"));
        assert!(!push_ref(&branches_only, "refs/heads/wip/x"));
        assert!(!push_ref(&branches_only, "refs/tags/v1"));
    }

    #[test]
    fn push_ignore_from_docs() {
        let o = on(vec![(
            "push",
            Trigger::Push(RefFilters {
                branches_ignore: list(&["mona/octocat", "releases/**-alpha"]),
                tags_ignore: list(&["v2", "v1.*"]),
                ..RefFilters::default()
            }),
        )]);
        assert!(!push_ref(&o, "refs/heads/mona/octocat"));
        assert!(!push_ref(&o, "refs/heads/releases/beta/3-alpha"));
        assert!(!push_ref(&o, "refs/tags/v1.9"));
        assert!(push_ref(&o, "refs/heads/main"));
        assert!(push_ref(&o, "refs/tags/v3"));
    }

    #[test]
    fn paths_from_payload_and_caller() {
        let o = on(vec![(
            "push",
            Trigger::Push(RefFilters {
                paths: list(&["sub-project/**", "!sub-project/docs/**"]),
                ..RefFilters::default()
            }),
        )]);
        let payload = json!({"ref": "refs/heads/main", "commits": [
            {"added": ["sub-project/docs/readme.md"], "modified": [], "removed": []},
            {"added": [], "modified": ["sub-project/src/index.js"], "removed": []},
        ]});
        assert!(triggers(&o, &TriggerInput::new("push", &payload)).expect("ok"));
        let docs_only = json!({"ref": "refs/heads/main", "commits": [{"modified": ["sub-project/docs/readme.md"]}]});
        assert_eq!(
            decide(&o, &TriggerInput::new("push", &docs_only)).expect("ok"),
            TriggerDecision::Paths
        );
        // An empty change list never runs a path-filtered workflow.
        let nothing = json!({"ref": "refs/heads/main", "commits": []});
        assert!(!triggers(&o, &TriggerInput::new("push", &nothing)).expect("ok"));
        // A caller-supplied list wins over the payload.
        let files = vec!["sub-project/index.js".to_owned()];
        let input = TriggerInput {
            changed_files: Some(&files),
            ..TriggerInput::new("push", &docs_only)
        };
        assert!(triggers(&o, &input).expect("ok"));
        // Tag pushes do not look at paths.
        let tag = json!({"ref": "refs/tags/v1", "commits": [{"modified": ["README.md"]}]});
        assert!(triggers(&o, &TriggerInput::new("push", &tag)).expect("ok"));
        // Unknown changes (no commits, no list): the filter is not evaluated.
        let unknown = json!({});
        assert!(triggers(&o, &TriggerInput::new("push", &unknown)).expect("ok"));
    }

    #[test]
    fn paths_ignore_needs_every_file_ignored() {
        let o = on(vec![(
            "push",
            Trigger::Push(RefFilters {
                paths_ignore: list(&["docs/**"]),
                ..RefFilters::default()
            }),
        )]);
        let docs = json!({"commits": [{"added": ["docs/a.md"], "removed": ["docs/b/c.md"]}]});
        assert!(!triggers(&o, &TriggerInput::new("push", &docs)).expect("ok"));
        let mixed = json!({"commits": [{"added": ["docs/a.md", "src/lib.rs"]}]});
        assert!(triggers(&o, &TriggerInput::new("push", &mixed)).expect("ok"));
    }

    #[test]
    fn pull_request_filters_the_base_branch_and_types() {
        let o = on(vec![(
            "pull_request",
            Trigger::PullRequest(RefFilters {
                branches: list(&["releases/**", "!releases/**-alpha"]),
                ..RefFilters::default()
            }),
        )]);
        let pr = |action: &str, base: &str, head: &str| json!({"action": action, "pull_request": {"base": {"ref": base}, "head": {"ref": head}}});
        let run = |p: &Value| triggers(&o, &TriggerInput::new("pull_request", p)).expect("ok");
        assert!(run(&pr("opened", "releases/10", "feature")));
        assert!(run(&pr("synchronize", "releases/beta/mona", "x")));
        assert!(!run(&pr("opened", "releases/10-alpha", "releases/10")));
        assert!(
            !run(&pr("opened", "main", "releases/10")),
            "head branch is irrelevant"
        );
        assert_eq!(
            decide(
                &o,
                &TriggerInput::new("pull_request", &pr("labeled", "releases/10", "x"))
            )
            .expect("ok"),
            TriggerDecision::ActivityType("labeled".into())
        );
        let typed = on(vec![(
            "pull_request_target",
            Trigger::PullRequestTarget(RefFilters {
                types: vec!["labeled".into()],
                ..RefFilters::default()
            }),
        )]);
        let labeled = pr("labeled", "main", "x");
        let opened = pr("opened", "main", "x");
        assert!(triggers(&typed, &TriggerInput::new("pull_request_target", &labeled)).expect("ok"));
        assert!(!triggers(&typed, &TriggerInput::new("pull_request_target", &opened)).expect("ok"));
    }

    #[test]
    fn other_event_types() {
        let o = on(vec![(
            "label",
            Trigger::Other(OtherTrigger {
                types: vec!["created".into()],
                config: Value::Null,
            }),
        )]);
        let created = json!({"action": "created"});
        let deleted = json!({"action": "deleted"});
        assert!(triggers(&o, &TriggerInput::new("label", &created)).expect("ok"));
        assert!(!triggers(&o, &TriggerInput::new("label", &deleted)).expect("ok"));
    }

    #[test]
    fn workflow_run_names_and_branches_from_docs() {
        let o = on(vec![(
            "workflow_run",
            Trigger::Other(OtherTrigger {
                types: vec!["requested".into()],
                config: json!({"workflows": ["Build"], "types": ["requested"],
                               "branches": ["releases/**", "!releases/**-alpha"]}),
            }),
        )]);
        let run = |name: &str, branch: &str| {
            let p = json!({"action": "requested", "workflow_run": {"name": name, "head_branch": branch}});
            triggers(&o, &TriggerInput::new("workflow_run", &p)).expect("ok")
        };
        assert!(run("Build", "releases/10"));
        assert!(run("Build", "releases/beta/mona"));
        assert!(!run("Build", "releases/10-alpha"));
        assert!(!run("Build", "main"));
        assert!(!run("Test", "releases/10"));
        let bad = on(vec![(
            "workflow_run",
            Trigger::Other(OtherTrigger {
                types: vec![],
                config: json!({"branches-ignore": ["a", "[]"]}),
            }),
        )]);
        let errors = check_filters(&bad);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].filter, "branches-ignore");
    }

    #[test]
    fn invalid_patterns_are_reported() {
        let o = on(vec![(
            "push",
            Trigger::Push(RefFilters {
                branches: list(&["[z-a]"]),
                ..RefFilters::default()
            }),
        )]);
        let errors = check_filters(&o);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].filter, "branches");
        assert!(
            errors[0]
                .to_string()
                .starts_with("on.push.branches: invalid filter pattern")
        );
        let p = json!({"ref": "refs/heads/main"});
        assert!(triggers(&o, &TriggerInput::new("push", &p)).is_err());
    }

    #[test]
    fn changed_files_union_keeps_first_seen_order() {
        let p = json!({"commits": [
            {"added": ["a"], "modified": ["b"], "removed": []},
            {"added": ["b"], "modified": [], "removed": ["c"]},
        ]});
        assert_eq!(
            push_changed_files(&p),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(push_changed_files(&json!({})), None);
    }
}
