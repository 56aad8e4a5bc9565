//! The `github` context of a local run: from a `-e` event payload, else synthesized from the
//! local git repository (sha, ref, repository from the `origin` remote...). Reading the
//! repository happens on the host with `git`; it never runs workflow code.

use serde_json::{Map, Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// What the caller knows about the run, before any job starts.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub event_name: String,
    /// The event payload (`-e`), or `{}`.
    pub event: Value,
    pub run_id: String,
    pub run_number: u64,
    pub actor: Option<String>,
    pub repository: Option<String>,
    /// Workflow `name:` (or its file path when unnamed).
    pub workflow: String,
    /// Workflow file path relative to the repository root (for `workflow_ref`).
    pub workflow_path: String,
}

/// Facts read from the local repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitFacts {
    pub sha: Option<String>,
    /// Full ref, e.g. `refs/heads/main`.
    pub git_ref: Option<String>,
    pub repository: Option<String>,
    pub user: Option<String>,
}

/// Start `git -C dir args...` without waiting, so several queries overlap: each `git` costs a
/// few milliseconds of process start-up, and `ignis run` pays for them before any job starts.
fn spawn_git(dir: &Path, args: &[&str]) -> Option<Child> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// The trimmed stdout of a query started by [`spawn_git`], `None` on failure or empty output.
fn finish_git(child: Option<Child>) -> Option<String> {
    let out = child?.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// `owner/repo` from a GitHub-style remote URL (`https://host/o/r.git`, `git@host:o/r.git`).
pub fn repository_from_url(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let path = if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        rest.split_once('/')?.1
    } else {
        url.split_once(':')?.1
    };
    let mut parts = path.rsplit('/');
    let repo = parts.next()?;
    let owner = parts.next()?;
    (!owner.is_empty() && !repo.is_empty()).then(|| format!("{owner}/{repo}"))
}

/// Read what a github context needs from a local repository (missing facts stay `None`).
pub fn read_git(dir: &Path) -> GitFacts {
    // All four queries run at once (every child is waited for below, success or not).
    let sha = spawn_git(dir, &["rev-parse", "HEAD"]);
    let git_ref = spawn_git(dir, &["symbolic-ref", "-q", "HEAD"]);
    let origin = spawn_git(dir, &["remote", "get-url", "origin"]);
    let user = spawn_git(dir, &["config", "user.name"]);
    GitFacts {
        sha: finish_git(sha),
        git_ref: finish_git(git_ref),
        repository: finish_git(origin).and_then(|u| repository_from_url(&u)),
        user: finish_git(user),
    }
}

fn ref_name(full: &str) -> (&str, &'static str) {
    if let Some(b) = full.strip_prefix("refs/heads/") {
        (b, "branch")
    } else if let Some(t) = full.strip_prefix("refs/tags/") {
        (t, "tag")
    } else {
        (full, "branch")
    }
}

/// The parts of the github context shared by every job of a run. `workspace`, `job`,
/// `action*` and `event_path` are set per job/step by the executor.
pub fn github_context(info: &RunInfo, git: &GitFacts, repo_dir: &Path) -> Map<String, Value> {
    let ev = &info.event;
    let dir_name = repo_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("repo");
    let repository = info
        .repository
        .clone()
        .or_else(|| {
            ev.pointer("/repository/full_name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| git.repository.clone())
        .unwrap_or_else(|| format!("local/{dir_name}"));
    let owner = repository.split('/').next().unwrap_or_default().to_string();
    let actor = info
        .actor
        .clone()
        .or_else(|| {
            ev.pointer("/sender/login")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| git.user.clone())
        .unwrap_or_else(|| "ignis".to_string());

    let mut sha = git.sha.clone().unwrap_or_default();
    let mut full_ref = git.git_ref.clone().unwrap_or_default();
    let (mut head_ref, mut base_ref) = (String::new(), String::new());
    match info.event_name.as_str() {
        "pull_request" | "pull_request_target" => {
            if let Some(n) = ev.get("number").and_then(Value::as_u64) {
                full_ref = format!("refs/pull/{n}/merge");
            } else if let Some(h) = ev.pointer("/pull_request/head/ref").and_then(Value::as_str) {
                full_ref = format!("refs/heads/{h}");
            }
            head_ref = ev
                .pointer("/pull_request/head/ref")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into();
            base_ref = ev
                .pointer("/pull_request/base/ref")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into();
            if let Some(s) = ev.pointer("/pull_request/head/sha").and_then(Value::as_str) {
                sha = s.to_string();
            }
        }
        _ => {
            if let Some(r) = ev.get("ref").and_then(Value::as_str) {
                full_ref = if r.starts_with("refs/") {
                    r.to_string()
                } else {
                    format!("refs/heads/{r}")
                };
            }
            if let Some(s) = ev.get("after").and_then(Value::as_str) {
                sha = s.to_string();
            }
        }
    }
    let (name, ref_type) = ref_name(&full_ref);
    let (name, ref_type) = (name.to_string(), ref_type);
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("event_name", json!(info.event_name));
    put("event", ev.clone());
    put("sha", json!(sha));
    put("ref", json!(full_ref));
    put("ref_name", json!(name));
    put("ref_type", json!(ref_type));
    put("ref_protected", json!(false));
    put("head_ref", json!(head_ref));
    put("base_ref", json!(base_ref));
    put("repository", json!(repository));
    put("repository_owner", json!(owner));
    put("actor", json!(actor));
    put("triggering_actor", json!(actor));
    put("run_id", json!(info.run_id));
    put("run_number", json!(info.run_number.to_string()));
    put("run_attempt", json!("1"));
    put("retention_days", json!("0"));
    put("workflow", json!(info.workflow));
    put(
        "workflow_ref",
        json!(format!("{repository}/{}@{full_ref}", info.workflow_path)),
    );
    put("workflow_sha", json!(sha));
    put("server_url", json!("https://github.com"));
    put("api_url", json!("https://api.github.com"));
    put("graphql_url", json!("https://api.github.com/graphql"));
    put("token", json!(""));
    put("action", json!(""));
    put("action_path", json!(""));
    put("action_ref", json!(""));
    put("action_repository", json!(""));
    put("job", json!(""));
    put("workspace", json!(""));
    put("event_path", json!(""));
    put("path", json!(""));
    put("env", json!(""));
    put("output", json!(""));
    put("state", json!(""));
    put("step_summary", json!(""));
    m
}

/// The `GITHUB_*` variables GitHub derives from the github context (per job; the executor
/// adds the per-step file command paths).
pub fn github_env(github: &Map<String, Value>) -> Vec<(String, String)> {
    let s = |k: &str| match github.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    let pairs = [
        ("GITHUB_EVENT_NAME", "event_name"),
        ("GITHUB_SHA", "sha"),
        ("GITHUB_REF", "ref"),
        ("GITHUB_REF_NAME", "ref_name"),
        ("GITHUB_REF_TYPE", "ref_type"),
        ("GITHUB_REF_PROTECTED", "ref_protected"),
        ("GITHUB_HEAD_REF", "head_ref"),
        ("GITHUB_BASE_REF", "base_ref"),
        ("GITHUB_REPOSITORY", "repository"),
        ("GITHUB_REPOSITORY_OWNER", "repository_owner"),
        ("GITHUB_ACTOR", "actor"),
        ("GITHUB_TRIGGERING_ACTOR", "triggering_actor"),
        ("GITHUB_RUN_ID", "run_id"),
        ("GITHUB_RUN_NUMBER", "run_number"),
        ("GITHUB_RUN_ATTEMPT", "run_attempt"),
        ("GITHUB_RETENTION_DAYS", "retention_days"),
        ("GITHUB_WORKFLOW", "workflow"),
        ("GITHUB_WORKFLOW_REF", "workflow_ref"),
        ("GITHUB_WORKFLOW_SHA", "workflow_sha"),
        ("GITHUB_SERVER_URL", "server_url"),
        ("GITHUB_API_URL", "api_url"),
        ("GITHUB_GRAPHQL_URL", "graphql_url"),
        ("GITHUB_JOB", "job"),
        ("GITHUB_WORKSPACE", "workspace"),
        ("GITHUB_EVENT_PATH", "event_path"),
    ];
    let mut out: Vec<(String, String)> = pairs.iter().map(|(e, k)| (e.to_string(), s(k))).collect();
    out.push(("CI".into(), "true".into()));
    out.push(("GITHUB_ACTIONS".into(), "true".into()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(event: &str, payload: Value) -> RunInfo {
        RunInfo {
            event_name: event.into(),
            event: payload,
            run_id: "7".into(),
            run_number: 3,
            actor: None,
            repository: None,
            workflow: "CI".into(),
            workflow_path: ".github/workflows/ci.yml".into(),
        }
    }

    #[test]
    fn remote_urls() {
        assert_eq!(
            repository_from_url("https://github.com/o/r.git").as_deref(),
            Some("o/r")
        );
        assert_eq!(
            repository_from_url("git@github.com:o/r.git").as_deref(),
            Some("o/r")
        );
        assert_eq!(
            repository_from_url("https://github.com/o/r/").as_deref(),
            Some("o/r")
        );
        assert_eq!(repository_from_url("nonsense"), None);
    }

    #[test]
    fn push_from_git_facts() {
        let git = GitFacts {
            sha: Some("abc".into()),
            git_ref: Some("refs/heads/main".into()),
            repository: Some("o/r".into()),
            user: Some("me".into()),
        };
        let g = github_context(&info("push", json!({})), &git, Path::new("/x/proj"));
        assert_eq!(g["sha"], "abc");
        assert_eq!(g["ref_name"], "main");
        assert_eq!(g["repository_owner"], "o");
        assert_eq!(g["actor"], "me");
        assert_eq!(g["run_number"], "3");
        let env = github_env(&g);
        assert!(env.contains(&("GITHUB_REF".into(), "refs/heads/main".into())));
        assert!(env.contains(&("CI".into(), "true".into())));
    }

    #[test]
    fn payload_wins_and_pull_request_refs() {
        let g = github_context(
            &info(
                "pull_request",
                json!({"number": 5, "pull_request": {"head": {"ref": "f", "sha": "h"}, "base": {"ref": "main"}}}),
            ),
            &GitFacts::default(),
            Path::new("/x/proj"),
        );
        assert_eq!(g["ref"], "refs/pull/5/merge");
        assert_eq!(g["head_ref"], "f");
        assert_eq!(g["base_ref"], "main");
        assert_eq!(g["sha"], "h");
        assert_eq!(g["repository"], "local/proj");
        let g = github_context(
            &info("push", json!({"ref": "refs/tags/v1", "after": "s"})),
            &GitFacts::default(),
            Path::new("/p"),
        );
        assert_eq!(g["ref_name"], "v1");
        assert_eq!(g["ref_type"], "tag");
        assert_eq!(g["sha"], "s");
    }

    /// The four queries run concurrently; each fact must still come from its own query.
    #[test]
    fn read_git_reads_a_real_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if !run(&["init", "-q", "-b", "trunk"]) {
            eprintln!("skipped: git is not usable here");
            return;
        }
        assert!(run(&["config", "user.name", "Some One"]));
        assert!(run(&["config", "user.email", "a@b"]));
        assert!(run(&[
            "remote",
            "add",
            "origin",
            "git@github.com:own/proj.git"
        ]));
        assert!(run(&["commit", "-q", "--allow-empty", "-m", "x"]));
        let facts = read_git(dir.path());
        let sha = facts.sha.clone().expect("sha");
        assert_eq!(sha.len(), 40, "{sha}");
        assert_eq!(facts.git_ref.as_deref(), Some("refs/heads/trunk"));
        assert_eq!(facts.repository.as_deref(), Some("own/proj"));
        assert_eq!(facts.user.as_deref(), Some("Some One"));

        // Not a repository: no sha, ref or remote (user.name may come from global config).
        let empty = tempfile::tempdir().expect("tempdir");
        let facts = read_git(empty.path());
        assert_eq!(
            (facts.sha, facts.git_ref, facts.repository),
            (None, None, None)
        );
    }
}
