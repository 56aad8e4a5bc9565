//! Host-side parts of actions: packing the local repository for the built-in
//! `actions/checkout`, and fetching remote `owner/repo@ref` actions into a cache with git.
//! Everything here reads the host; nothing runs workflow code on the host.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Failures preparing an action.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("packing {dir}: {reason}")]
    Pack { dir: PathBuf, reason: String },
    #[error("action {action}: cannot fetch {url}: {reason}")]
    Fetch {
        action: String,
        url: String,
        reason: String,
    },
    #[error("invalid action reference {0:?}: expected owner/repo[/path]@ref")]
    BadReference(String),
}

/// A parsed `uses:` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRef {
    /// `./path` inside the workspace.
    Local(String),
    /// `owner/repo[/path]@ref`.
    Remote {
        owner: String,
        repo: String,
        path: String,
        git_ref: String,
    },
    /// `docker://image`.
    Docker(String),
}

impl ActionRef {
    pub fn parse(uses: &str) -> Result<ActionRef, ActionError> {
        let uses = uses.trim();
        if uses.starts_with("./") || uses == "." {
            return Ok(ActionRef::Local(uses.to_string()));
        }
        if let Some(img) = uses.strip_prefix("docker://") {
            return Ok(ActionRef::Docker(img.to_string()));
        }
        let bad = || ActionError::BadReference(uses.to_string());
        let (path_part, git_ref) = uses.split_once('@').ok_or_else(bad)?;
        let mut parts = path_part.splitn(3, '/');
        let owner = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
        let repo = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
        if git_ref.is_empty() {
            return Err(bad());
        }
        Ok(ActionRef::Remote {
            owner: owner.to_string(),
            repo: repo.to_string(),
            path: parts.next().unwrap_or_default().to_string(),
            git_ref: git_ref.to_string(),
        })
    }

    /// `actions/checkout@anything`, which ignis runs itself.
    pub fn is_checkout(&self) -> bool {
        matches!(self, ActionRef::Remote { owner, repo, path, .. }
            if owner.eq_ignore_ascii_case("actions") && repo.eq_ignore_ascii_case("checkout") && path.is_empty())
    }
}

fn pack_error(dir: &Path, reason: impl Into<String>) -> ActionError {
    ActionError::Pack {
        dir: dir.to_path_buf(),
        reason: reason.into(),
    }
}

/// A tar stream of `dir`: in a git work tree, every tracked and untracked file that
/// `.gitignore` does not exclude (git's own rules) plus `.git`; otherwise the whole tree.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>, ActionError> {
    let listing = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .stderr(Stdio::null())
        .output();
    let in_git = matches!(&listing, Ok(o) if o.status.success()) && dir.join(".git").exists();
    let output = if in_git {
        let mut names = listing.map(|o| o.stdout).unwrap_or_default();
        names.extend_from_slice(b".git\0");
        let mut tar = Command::new("tar");
        tar.arg("-C")
            .arg(dir)
            .args(["-cf", "-", "--ignore-failed-read", "--null", "-T", "-"]);
        tar.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = tar
            .spawn()
            .map_err(|e| pack_error(dir, format!("running tar: {e}")))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| pack_error(dir, "tar stdin unavailable"))?;
        // Write from a thread: tar may fill its stdout pipe before reading all names.
        let writer = std::thread::spawn(move || stdin.write_all(&names));
        let out = child
            .wait_with_output()
            .map_err(|e| pack_error(dir, format!("running tar: {e}")))?;
        let _ = writer.join();
        out
    } else {
        Command::new("tar")
            .arg("-C")
            .arg(dir)
            .args(["-cf", "-", "."])
            .output()
            .map_err(|e| pack_error(dir, format!("running tar: {e}")))?
    };
    if !output.status.success() {
        return Err(pack_error(
            dir,
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(output.stdout)
}

/// Where remote actions are fetched from unless overridden: `{base}/{owner}/{repo}`.
pub const DEFAULT_ACTIONS_BASE_URL: &str = "https://github.com";

/// The environment variable that overrides [`DEFAULT_ACTIONS_BASE_URL`] (a GitHub
/// Enterprise host, a mirror, or `file:///dir` holding `owner/repo` git repositories for
/// offline use and tests).
pub const ACTIONS_BASE_URL_ENV: &str = "IGNIS_ACTIONS_BASE_URL";

/// The base URL for remote actions: [`ACTIONS_BASE_URL_ENV`] when set and not empty.
pub fn actions_base_url() -> String {
    std::env::var(ACTIONS_BASE_URL_ENV)
        .ok()
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_ACTIONS_BASE_URL.to_string())
}

/// Whether `s` may be used as one path component of the cache and of the URL: GitHub's
/// owner/repo characters, never `.`/`..`.
fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether a ref is safe to pass to git and to use as cache path components: git's ref
/// rules that matter here (no `..`, no leading `-` that git would read as an option, no
/// control characters, spaces or `\`).
fn safe_ref(r: &str) -> bool {
    !r.is_empty()
        && !r.starts_with('-')
        && !r.starts_with('/')
        && !r.ends_with('/')
        && !r.contains("..")
        && !r.contains("//")
        && !r.chars().any(|c| c.is_control() || c == ' ' || c == '\\')
}

/// Fetch a remote action from `{base_url}/{owner}/{repo}` into `cache`
/// (`cache/owner/repo/ref`) with git, reusing a previous fetch. When the fetch fails
/// (offline, unknown repository or ref), the error names the action and the URL.
pub fn fetch_remote(
    action: &ActionRef,
    cache: &Path,
    base_url: &str,
) -> Result<PathBuf, ActionError> {
    let ActionRef::Remote {
        owner,
        repo,
        git_ref,
        ..
    } = action
    else {
        return Err(ActionError::BadReference(format!("{action:?}")));
    };
    let name = format!("{owner}/{repo}@{git_ref}");
    if !safe_name(owner) || !safe_name(repo) || !safe_ref(git_ref) {
        return Err(ActionError::BadReference(name));
    }
    let dest = cache.join(owner).join(repo).join(git_ref);
    if dest.join(".ignis-complete").exists() {
        return Ok(dest);
    }
    let url = format!("{}/{owner}/{repo}", base_url.trim_end_matches('/'));
    let fetch_err = |reason: String| ActionError::Fetch {
        action: name.clone(),
        url: url.clone(),
        reason,
    };
    // Beside `dest` (same parent, so the final rename stays on one file system); a ref
    // with `/` nests, so the partial name flattens it.
    let tmp = cache
        .join(owner)
        .join(repo)
        .join(format!(".{}.partial", git_ref.replace('/', "%2F")));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| fetch_err(e.to_string()))?;
    let git = |args: &[&str]| -> Result<(), ActionError> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&tmp)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| fetch_err(format!("running git: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(fetch_err(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    };
    let result = git(&["init", "-q"])
        .and_then(|_| git(&["fetch", "-q", "--depth", "1", "--", &url, git_ref]))
        .and_then(|_| git(&["checkout", "-q", "FETCH_HEAD"]));
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&dest);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fetch_err(e.to_string()))?;
    }
    if let Err(e) = std::fs::rename(&tmp, &dest) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(fetch_err(e.to_string()));
    }
    std::fs::write(dest.join(".ignis-complete"), b"").map_err(|e| fetch_err(e.to_string()))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        assert_eq!(
            ActionRef::parse("./a/b").unwrap(),
            ActionRef::Local("./a/b".into())
        );
        assert_eq!(
            ActionRef::parse("docker://alpine").unwrap(),
            ActionRef::Docker("alpine".into())
        );
        let r = ActionRef::parse("actions/checkout@v4").unwrap();
        assert!(r.is_checkout());
        let r = ActionRef::parse("o/r/sub/dir@main").unwrap();
        assert_eq!(
            r,
            ActionRef::Remote {
                owner: "o".into(),
                repo: "r".into(),
                path: "sub/dir".into(),
                git_ref: "main".into()
            }
        );
        assert!(!r.is_checkout());
        assert!(ActionRef::parse("actions/checkout").is_err());
        assert!(ActionRef::parse("@v1").is_err());
        assert!(ActionRef::parse("o/@v1").is_err());
    }

    #[test]
    fn packs_git_tree_honouring_gitignore() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(d)
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        run(&["init", "-q"]);
        std::fs::write(d.join(".gitignore"), "ignored.txt\n").unwrap();
        std::fs::write(d.join("tracked.txt"), "t").unwrap();
        std::fs::write(d.join("ignored.txt"), "i").unwrap();
        std::fs::write(d.join("untracked.txt"), "u").unwrap();
        run(&["add", "tracked.txt"]);
        let tar = pack_dir(d).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut child = Command::new("tar")
            .arg("-C")
            .arg(out.path())
            .args(["-xf", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&tar).unwrap();
        assert!(child.wait().unwrap().success());
        assert!(out.path().join("tracked.txt").exists());
        assert!(out.path().join("untracked.txt").exists());
        assert!(!out.path().join("ignored.txt").exists());
        assert!(out.path().join(".git").is_dir());
    }
    /// A bare repository `base/owner/repo` with an `action.yml` on branch `main` and tag
    /// `v1`, built with the host's git (no network).
    fn bare_action_repo(base: &Path, owner: &str, repo: &str) {
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let git = |dir: &Path, args: &[&str]| {
            let out = Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
        };
        git(w, &["init", "-q", "-b", "main"]);
        std::fs::write(w.join("action.yml"), "name: greet\nruns:\n  using: composite\n  steps:\n    - run: echo hello-from-remote\n      shell: sh\n").unwrap();
        git(w, &["add", "action.yml"]);
        git(w, &["commit", "-qm", "action"]);
        git(w, &["tag", "v1"]);
        let bare = base.join(owner).join(repo);
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare"]);
        git(w, &["push", "-q", bare.to_str().unwrap(), "main", "v1"]);
    }

    #[test]
    fn fetches_from_a_local_base_url_and_reuses_the_cache() {
        let base = tempfile::tempdir().unwrap();
        bare_action_repo(base.path(), "me", "greet");
        let cache = tempfile::tempdir().unwrap();
        let url = format!("file://{}", base.path().display());
        for r in ["v1", "main"] {
            let a = ActionRef::parse(&format!("me/greet@{r}")).unwrap();
            let dir = fetch_remote(&a, cache.path(), &url).unwrap();
            assert_eq!(dir, cache.path().join("me/greet").join(r));
            let yml = std::fs::read_to_string(dir.join("action.yml")).unwrap();
            assert!(yml.contains("hello-from-remote"));
        }
        // Cached: found again with the source gone.
        drop(base);
        let a = ActionRef::parse("me/greet@v1").unwrap();
        assert!(fetch_remote(&a, cache.path(), &url).is_ok());
        // No partial directories left behind.
        let left: Vec<_> = std::fs::read_dir(cache.path().join("me/greet"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".partial"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn unreachable_source_error_names_the_action_and_url() {
        let base = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let url = format!("file://{}/nowhere", base.path().display());
        let a = ActionRef::parse("me/missing@v2").unwrap();
        let err = fetch_remote(&a, cache.path(), &url)
            .unwrap_err()
            .to_string();
        assert!(err.contains("action me/missing@v2"), "{err}");
        assert!(err.contains(&format!("{url}/me/missing")), "{err}");
        assert!(!cache.path().join("me/missing/v2").exists());
        // Unknown ref in an existing repository: same kind of error.
        bare_action_repo(base.path(), "me", "greet");
        let url = format!("file://{}", base.path().display());
        let a = ActionRef::parse("me/greet@nope").unwrap();
        let err = fetch_remote(&a, cache.path(), &url)
            .unwrap_err()
            .to_string();
        assert!(err.contains("action me/greet@nope"), "{err}");
    }

    #[test]
    fn refuses_refs_and_names_that_escape_or_look_like_options() {
        let cache = tempfile::tempdir().unwrap();
        for uses in [
            "me/greet@--upload-pack=touch /tmp/x",
            "me/greet@../../etc",
            "../x/greet@v1",
            "me/../..@v1",
        ] {
            let a = ActionRef::parse(uses).unwrap();
            let err = fetch_remote(&a, cache.path(), "file:///nonexistent").unwrap_err();
            assert!(matches!(err, ActionError::BadReference(_)), "{uses}: {err}");
        }
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    }

    #[test]
    fn base_url_defaults_to_github() {
        // Only the default is asserted: tests run in parallel, so the variable is not set.
        if std::env::var_os(ACTIONS_BASE_URL_ENV).is_none() {
            assert_eq!(actions_base_url(), DEFAULT_ACTIONS_BASE_URL);
        }
    }
}
