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

/// Fetch a remote action into `cache` (`cache/owner/repo/ref`) with git, reusing a
/// previous fetch. Offline, the error names the action and the URL.
pub fn fetch_remote(action: &ActionRef, cache: &Path) -> Result<PathBuf, ActionError> {
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
    let dest = cache.join(owner).join(repo).join(git_ref);
    if dest.join(".ignis-complete").exists() {
        return Ok(dest);
    }
    let url = format!("https://github.com/{owner}/{repo}");
    let fetch_err = |reason: String| ActionError::Fetch {
        action: name.clone(),
        url: url.clone(),
        reason,
    };
    let tmp = cache
        .join(owner)
        .join(repo)
        .join(format!(".{git_ref}.partial"));
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
        .and_then(|_| git(&["fetch", "-q", "--depth", "1", &url, git_ref]))
        .and_then(|_| git(&["checkout", "-q", "FETCH_HEAD"]));
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| fetch_err(e.to_string()))?;
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
}
