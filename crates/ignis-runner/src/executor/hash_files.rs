//! `hashFiles()` for the step runtime.
//!
//! The workspace lives inside the run's machine, so the host never reads it: one agent exec
//! lists the regular files under the patterns' search roots (`find -L … -type f -print0`,
//! symlinks followed like `@actions/glob`), the host keeps those the patterns select
//! ([`GlobPatterns`]) in byte order of their workspace-relative path, one more exec digests
//! them (`xargs -0 sha256sum`), and the host combines the per-file digests
//! ([`FilesHasher`]): SHA-256 over the SHA-256 of each file, `""` when nothing matched.
//!
//! Expression evaluation is synchronous while the agent is async, so digests are computed
//! before a step's expressions are evaluated (from [`hash_files_requests`]) and the
//! evaluation callback only looks them up. The lookup table is task-local to the job leg
//! (see [`scope`]), which lets the leg's `EvalContext<'static>` carry a plain `'static`
//! callback.

use ignis_agent::{AgentClient, ExecRequest, Program};
use ignis_workflow::expr::glob::GlobPatterns;
use ignis_workflow::expr::hash_files::FilesHasher;
use ignis_workflow::expr::{
    Condition, EvalContext, HashFilesFn, hash_files_requests, parse_condition, parse_template,
};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Digest (or error message) per pattern list, for the expressions about to be evaluated.
type Table = Arc<Mutex<HashMap<Vec<String>, Result<String, String>>>>;

tokio::task_local! {
    static DIGESTS: Table;
}

/// The callback as a `'static` function pointer (a function item is not a `'static` value).
static LOOKUP: fn(&[String]) -> Result<String, String> = lookup;

/// Runs `f` (a job leg) with its own, initially empty, digest table.
pub(crate) async fn scope<F: Future>(f: F) -> F::Output {
    DIGESTS.scope(Table::default(), f).await
}

/// The callback to put in the leg's [`EvalContext`].
pub(crate) fn callback() -> HashFilesFn<'static> {
    &LOOKUP
}

fn lookup(patterns: &[String]) -> Result<String, String> {
    DIGESTS
        .try_with(|t| t.lock().ok().and_then(|t| t.get(patterns).cloned()))
        .ok()
        .flatten()
        .unwrap_or_else(|| Err("hashFiles is not available in this field".to_string()))
}

/// Forgets the previous step's digests: files change between steps.
pub(crate) fn clear() {
    let _ = DIGESTS.try_with(|t| {
        if let Ok(mut t) = t.lock() {
            t.clear();
        }
    });
}

fn insert(patterns: Vec<String>, digest: Result<String, String>) {
    let _ = DIGESTS.try_with(|t| {
        if let Ok(mut t) = t.lock() {
            t.insert(patterns, digest);
        }
    });
}

/// The pattern lists `hashFiles` calls in these templates and `if:` conditions need.
/// Unparsable sources are skipped: evaluating them reports the error.
pub(crate) fn requests(
    templates: &[&str],
    conditions: &[&str],
    ctx: &EvalContext<'_>,
) -> Vec<Vec<String>> {
    let mentions = |s: &str| s.to_ascii_lowercase().contains("hashfiles");
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut add = |found: Vec<Vec<String>>| {
        for r in found {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    };
    for src in templates.iter().filter(|s| mentions(s)) {
        if let Ok(t) = parse_template(src) {
            add(t.hash_files_requests(ctx).unwrap_or_default());
        }
    }
    for src in conditions.iter().filter(|s| mentions(s)) {
        match parse_condition(src) {
            Ok(Condition::Expr(e)) => add(hash_files_requests(&e, ctx).unwrap_or_default()),
            Ok(Condition::Template(t)) => add(t.hash_files_requests(ctx).unwrap_or_default()),
            Ok(Condition::Empty) | Err(_) => {}
        }
    }
    out
}

/// Computes each request in the machine and stores the results for the callback.
pub(crate) async fn prefetch(
    agent: &AgentClient,
    env: &BTreeMap<String, String>,
    workspace: &str,
    requests: Vec<Vec<String>>,
) {
    for patterns in requests {
        let digest = compute(agent, env, workspace, &patterns).await;
        insert(patterns, digest);
    }
}

/// Lists regular files (following symlinks) under each root, NUL-separated. A missing root
/// lists nothing; `find` reporting a problem (a symlink loop, an unreadable directory) is
/// tolerated as long as it listed something.
const LIST_SCRIPT: &str = r#"cd "$1" || exit 3
shift
for r in "$@"; do
  if [ -e "$r" ]; then find -L "$r" -type f -print0; fi
done
"#;

/// `hashFiles(patterns)` over the workspace inside the machine.
pub(crate) async fn compute(
    agent: &AgentClient,
    env: &BTreeMap<String, String>,
    workspace: &str,
    patterns: &[String],
) -> Result<String, String> {
    let globs = GlobPatterns::new(patterns, workspace);
    if globs.is_empty() {
        return Ok(String::new());
    }
    let roots: Vec<String> = globs
        .search_roots()
        .into_iter()
        .map(|r| if r.is_empty() { ".".to_string() } else { r })
        .collect();
    let mut argv = vec![
        "sh".to_string(),
        "-c".to_string(),
        LIST_SCRIPT.to_string(),
        "sh".to_string(),
        workspace.to_string(),
    ];
    argv.extend(roots);
    let listing = agent
        .exec_collect(request(Program::Argv(argv), env, None, None))
        .await
        .map_err(|e| format!("listing the workspace: {e}"))?;
    if !listing.status.success() && listing.stdout.is_empty() {
        return Err(format!(
            "listing the workspace failed: {}",
            String::from_utf8_lossy(&listing.stderr).trim()
        ));
    }
    let files = select(&globs, &listing.stdout);
    if files.is_empty() {
        return Ok(String::new());
    }
    let mut stdin = Vec::new();
    for f in &files {
        stdin.extend_from_slice(f.as_bytes());
        stdin.push(0);
    }
    let argv = ["xargs", "-0", "sha256sum", "--"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let sums = agent
        .exec_collect(request(
            Program::Argv(argv),
            env,
            Some(workspace.to_string()),
            Some(stdin),
        ))
        .await
        .map_err(|e| format!("hashing files: {e}"))?;
    if !sums.status.success() {
        return Err(format!(
            "hashing files failed: {}",
            String::from_utf8_lossy(&sums.stderr).trim()
        ));
    }
    combine(&sums.stdout, &files)
}

fn request(
    program: Program,
    env: &BTreeMap<String, String>,
    cwd: Option<String>,
    stdin: Option<Vec<u8>>,
) -> ExecRequest {
    ExecRequest {
        program,
        env: env.clone(),
        cwd,
        stdin,
        timeout: Some(Duration::from_secs(600)),
    }
}

/// The listed files (NUL-separated, relative to the workspace, maybe `./`-prefixed) the
/// patterns select, deduplicated, in byte order. Names that are not UTF-8 cannot be
/// matched by the patterns and are skipped.
fn select(globs: &GlobPatterns, listing: &[u8]) -> Vec<String> {
    let mut files: Vec<String> = listing
        .split(|b| *b == 0)
        .filter_map(|p| std::str::from_utf8(p).ok())
        .map(|p| {
            let mut p = p;
            while let Some(rest) = p.strip_prefix("./") {
                p = rest;
            }
            p
        })
        .filter(|p| !p.is_empty() && globs.matches(p, false))
        .map(str::to_string)
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Combines `sha256sum` output for `files` (in that order) into the `hashFiles` digest.
/// Each line is `<hex>  <name>\n`; coreutils writes `\<hex>  <escaped name>\n` for names
/// with a backslash or newline, which then holds no raw newline, while busybox writes the
/// raw name — so a line is delimited by the known name length, not by searching.
fn combine(output: &[u8], files: &[String]) -> Result<String, String> {
    let mut hasher = FilesHasher::new();
    let mut rest = output;
    for f in files {
        let escaped = rest.first() == Some(&b'\\');
        if escaped {
            rest = &rest[1..];
        }
        let (hex, after) = rest
            .split_at_checked(64)
            .ok_or_else(|| format!("sha256sum printed no digest for {f}"))?;
        let digest =
            parse_hex(hex).ok_or_else(|| format!("sha256sum printed no digest for {f}"))?;
        hasher.add_file_digest(digest);
        let after = after
            .get(2..)
            .ok_or_else(|| format!("truncated sha256sum output for {f}"))?;
        let end = if escaped {
            after.iter().position(|b| *b == b'\n')
        } else {
            (after.get(f.len()) == Some(&b'\n')).then_some(f.len())
        }
        .ok_or_else(|| format!("unexpected sha256sum output for {f}"))?;
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        return Err("sha256sum printed more lines than files".to_string());
    }
    Ok(hasher.finish())
}

fn parse_hex(hex: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(s, 16).ok()?;
    }
    (hex.len() == 64).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ignis_workflow::expr::hash_files::hash_files_digest;
    use sha2::{Digest, Sha256};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn line(contents: &[u8], name: &str) -> String {
        format!("{}  {name}\n", hex(&Sha256::digest(contents)))
    }

    #[test]
    fn select_filters_sorts_and_strips_dot_slash() {
        let globs = GlobPatterns::new(&["**/*.txt", "!skip/**"], "/w");
        let listing = b"./b.txt\0./a/c.txt\0./a/d.rs\0skip/e.txt\0a/c.txt\0";
        assert_eq!(select(&globs, listing), vec!["a/c.txt", "b.txt"]);
    }

    #[test]
    fn combine_matches_the_pure_digest() {
        let files = vec!["a b.txt".to_string(), "z.txt".to_string()];
        let out = format!("{}{}", line(b"one", "a b.txt"), line(b"two\n", "z.txt"));
        assert_eq!(
            combine(out.as_bytes(), &files),
            Ok(hash_files_digest([b"one".as_slice(), b"two\n".as_slice()]))
        );
    }

    #[test]
    fn combine_handles_raw_and_escaped_newline_names() {
        let files = vec!["x\ny".to_string(), "w\\n".to_string()];
        // busybox: raw name; coreutils: `\` prefix and escaped name.
        let out = format!(
            "{}\\{}",
            line(b"1", "x\ny"),
            line(b"2", "w\\\\n").trim_start_matches('\\')
        );
        assert_eq!(
            combine(out.as_bytes(), &files),
            Ok(hash_files_digest([b"1".as_slice(), b"2".as_slice()]))
        );
    }

    #[test]
    fn combine_rejects_mismatched_output() {
        let files = vec!["a".to_string()];
        assert!(combine(b"", &files).is_err());
        assert!(combine(b"zz  a\n", &files).is_err());
        let two = format!("{}{}", line(b"1", "a"), line(b"2", "b"));
        assert!(combine(two.as_bytes(), &files).is_err());
    }

    #[test]
    fn requests_come_from_templates_and_conditions() {
        let ctx = EvalContext::new();
        let r = requests(
            &["k-${{ hashFiles('**/*.lock') }}", "plain"],
            &["hashFiles('a', 'b') != ''", "${{ HASHFILES('**/*.lock') }}"],
            &ctx,
        );
        assert_eq!(
            r,
            vec![
                vec!["**/*.lock".to_string()],
                vec!["a".to_string(), "b".to_string()]
            ]
        );
    }

    #[tokio::test]
    async fn lookup_outside_a_scope_or_unprepared_is_an_error() {
        assert!(lookup(&["x".to_string()]).is_err());
        scope(async {
            insert(vec!["x".to_string()], Ok("d".to_string()));
            assert_eq!(lookup(&["x".to_string()]), Ok("d".to_string()));
            clear();
            assert!(lookup(&["x".to_string()]).is_err());
        })
        .await;
    }
}
