//! `hashFiles` patterns with `@actions/glob` semantics (what GitHub's runner uses), on
//! workspace-relative `/`-separated paths. Pure: the runtime walks the file tree and asks.
//!
//! The rules, from `@actions/glob` and the minimatch options it sets:
//! - each argument may hold several patterns, one per line; lines are trimmed, blank lines
//!   and lines starting with `#` are skipped;
//! - a leading `!` negates (repeatable); patterns apply in order and the last one that
//!   matches a path decides (so a later positive pattern re-includes);
//! - `*` matches any run of characters within a segment, `?` one character, `[abc]`,
//!   `[a-z]`, `[!x]`/`[^x]` a class; `\` escapes; `**` as a whole segment matches any number
//!   of segments; dot files are not special; no brace or extglob expansion; case-sensitive;
//! - a pattern that matches a directory also matches everything below it (implicit
//!   descendants), so `src` or `for-hashing-*` pick up the files inside;
//! - `./` and `.` segments are ignored, `..` pops a segment; patterns may be absolute when they
//!   point inside the workspace root given to [`GlobPatterns::new`]; anything else outside the
//!   workspace never matches (the runner skips such files).
//!
//! This is deliberately separate from the branch/path filter globs of `on:` (in `plan`),
//! whose syntax differs (`**` inside a segment, `+`, no implicit descendants).

/// One compiled pattern.
#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    negate: bool,
    segments: Vec<Segment>,
    /// Written with a trailing `/`: the pattern itself matches directories only.
    dir_only: bool,
    /// Normalised outside the workspace: matches nothing.
    outside: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// `**`
    Globstar,
    /// A segment of literal characters and wildcards.
    Glob(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Char(char),
    Any,
    Star,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

/// A compiled list of `hashFiles` patterns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GlobPatterns {
    patterns: Vec<Pattern>,
}

impl GlobPatterns {
    /// Compiles patterns (each may contain several lines). `workspace` is the absolute root
    /// the relative paths given to [`GlobPatterns::matches`] are relative to; it is used only
    /// for absolute patterns.
    pub fn new<S: AsRef<str>>(patterns: &[S], workspace: &str) -> Self {
        let root: Vec<&str> = workspace
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        let mut out = Vec::new();
        for arg in patterns {
            for line in arg.as_ref().lines() {
                let mut p = line.trim();
                if p.is_empty() || p.starts_with('#') {
                    continue;
                }
                let mut negate = false;
                while let Some(rest) = p.strip_prefix('!') {
                    negate = !negate;
                    p = rest.trim();
                }
                if p.is_empty() {
                    continue;
                }
                out.push(compile(p, negate, &root));
            }
        }
        Self { patterns: out }
    }

    /// Whether there are no (non-comment) patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the workspace-relative `path` (`a/b/c.txt`, no leading `./`) is selected.
    /// `is_dir` tells whether it is a directory (only trailing-`/` patterns care).
    pub fn matches(&self, path: &str, is_dir: bool) -> bool {
        let segs: Vec<&str> = path
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        let mut selected = false;
        for p in &self.patterns {
            if p.outside || selected != p.negate {
                continue;
            }
            if p.matches(&segs, is_dir) {
                selected = !p.negate;
            }
        }
        selected
    }

    /// The directories a walk needs to visit: for each positive pattern, its literal leading
    /// segments (`src/lib/**/*.rs` → `src/lib`; `""` is the workspace root). Deduplicated,
    /// with roots that lie inside another root removed.
    pub fn search_roots(&self) -> Vec<String> {
        let mut roots: Vec<String> = Vec::new();
        for p in self.patterns.iter().filter(|p| !p.negate && !p.outside) {
            let mut lit = Vec::new();
            // The last segment names the matched entry itself, not a directory to search.
            let dirs = p.segments.len().saturating_sub(1);
            for seg in &p.segments[..dirs] {
                match seg {
                    Segment::Glob(toks) if toks.iter().all(|t| matches!(t, Tok::Char(_))) => {
                        lit.push(
                            toks.iter()
                                .filter_map(|t| match t {
                                    Tok::Char(c) => Some(*c),
                                    _ => None,
                                })
                                .collect::<String>(),
                        );
                    }
                    _ => break,
                }
            }
            roots.push(lit.join("/"));
        }
        roots.sort();
        roots.dedup();
        let all = roots.clone();
        roots.retain(|r| {
            !all.iter().any(|other| {
                other != r && (other.is_empty() || r.starts_with(&format!("{other}/")))
            })
        });
        roots
    }
}

fn compile(pattern: &str, negate: bool, root: &[&str]) -> Pattern {
    let dir_only = pattern.ends_with('/');
    let mut raw: Vec<&str> = pattern.split('/').collect();
    let mut outside = false;
    if pattern.starts_with('/') {
        // Absolute: must lie under the workspace root.
        let parts: Vec<&str> = raw.iter().copied().filter(|s| !s.is_empty()).collect();
        if parts.len() >= root.len() && parts[..root.len()] == *root {
            raw = parts[root.len()..].to_vec();
        } else {
            outside = true;
        }
    }
    let mut segments: Vec<Segment> = Vec::new();
    for s in raw {
        match s {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    outside = true;
                }
            }
            "**" => segments.push(Segment::Globstar),
            s => segments.push(Segment::Glob(compile_segment(s))),
        }
    }
    Pattern {
        negate,
        segments,
        dir_only,
        outside,
    }
}

fn compile_segment(s: &str) -> Vec<Tok> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
            }
            '?' => toks.push(Tok::Any),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                toks.push(Tok::Char(chars[i]));
            }
            '[' => match compile_class(&chars[i + 1..]) {
                Some((tok, used)) => {
                    toks.push(tok);
                    i += used;
                }
                None => toks.push(Tok::Char('[')),
            },
            c => toks.push(Tok::Char(c)),
        }
        i += 1;
    }
    toks
}

/// Parses a class after `[`; returns it and how many chars it used (through `]`), or
/// `None` when unterminated (then `[` is literal, as in minimatch).
fn compile_class(chars: &[char]) -> Option<(Tok, usize)> {
    let mut i = 0;
    let negated = matches!(chars.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    while i < chars.len() {
        let mut c = chars[i];
        if c == ']' && !first {
            return Some((Tok::Class { negated, items }, i + 1));
        }
        first = false;
        if c == '\\' && i + 1 < chars.len() {
            i += 1;
            c = chars[i];
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            let end = chars[i + 2];
            items.push((c, end));
            i += 3;
        } else {
            items.push((c, c));
            i += 1;
        }
    }
    None
}

impl Pattern {
    fn matches(&self, path: &[&str], is_dir: bool) -> bool {
        // The pattern itself (trailing-slash patterns only select directories), or, through
        // implicit descendants, anything strictly below something it matches.
        let whole = (!self.dir_only || is_dir) && match_segments(&self.segments, path);
        whole || (1..path.len()).any(|n| match_segments(&self.segments, &path[..n]))
    }
}

/// Segment-level matching with `**` spanning zero or more segments (dynamic programming,
/// so patterns with many `**` stay linear in path length times pattern length).
fn match_segments(pattern: &[Segment], path: &[&str]) -> bool {
    // reach[j]: pattern prefix processed so far can end exactly before path[j].
    let mut reach = vec![false; path.len() + 1];
    reach[0] = true;
    for seg in pattern {
        let mut next = vec![false; path.len() + 1];
        match seg {
            Segment::Globstar => {
                let mut on = false;
                for j in 0..=path.len() {
                    on |= reach[j];
                    next[j] = on;
                }
            }
            Segment::Glob(toks) => {
                for j in 0..path.len() {
                    if reach[j] && match_segment(toks, path[j]) {
                        next[j + 1] = true;
                    }
                }
            }
        }
        reach = next;
    }
    reach[path.len()]
}

/// Wildcard matching inside one segment (classic backtracking over the last `*`).
fn match_segment(toks: &[Tok], name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    let (mut t, mut c) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while c < chars.len() {
        match toks.get(t) {
            Some(Tok::Star) => {
                star = Some((t, c));
                t += 1;
                continue;
            }
            Some(tok) if single_matches(tok, chars[c]) => {
                t += 1;
                c += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, sc)) => {
                t = st + 1;
                c = sc + 1;
                star = Some((st, sc + 1));
            }
            None => return false,
        }
    }
    toks[t.min(toks.len())..].iter().all(|t| *t == Tok::Star)
}

fn single_matches(tok: &Tok, ch: char) -> bool {
    match tok {
        Tok::Char(c) => *c == ch,
        Tok::Any => true,
        Tok::Star => false,
        Tok::Class { negated, items } => {
            items.iter().any(|&(lo, hi)| lo <= ch && ch <= hi) != *negated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(patterns: &[&str], path: &str) -> bool {
        GlobPatterns::new(patterns, "/ws").matches(path, false)
    }

    #[test]
    fn wildcards_within_segments() {
        assert!(sel(&["*.txt"], "a.txt"));
        assert!(sel(&["*.txt"], ".hidden.txt"));
        assert!(!sel(&["*.txt"], "dir/a.txt"));
        assert!(sel(&["?.txt"], "a.txt"));
        assert!(!sel(&["?.txt"], "ab.txt"));
        assert!(sel(&["[ab].txt"], "b.txt"));
        assert!(!sel(&["[!ab].txt"], "b.txt"));
        assert!(sel(&["[a-c]x"], "bx"));
        assert!(sel(&["\\*"], "*"));
        assert!(!sel(&["\\*"], "a"));
        assert!(sel(&["[abc"], "[abc"));
        assert!(!sel(&["A.txt"], "a.txt"));
    }

    #[test]
    fn globstar_and_implicit_descendants() {
        assert!(sel(&["**/x.lock"], "x.lock"));
        assert!(sel(&["**/x.lock"], "a/b/x.lock"));
        assert!(sel(&["src"], "src/a/b.rs"));
        assert!(sel(
            &["./for-hashing-**"],
            "for-hashing-3/nested/nested-data.txt"
        ));
        assert!(sel(&["./for-hashing-*.txt"], "for-hashing-1.txt"));
        assert!(!sel(&["./for-hashing-*.txt"], "for-hashing-3/data.txt"));
        assert!(sel(&["a/**/b"], "a/b"));
        assert!(sel(&["a/**/b"], "a/x/y/b"));
        assert!(!sel(&["**/non-extant-files"], "for-hashing-1.txt"));
    }

    #[test]
    fn negation_order_and_comments() {
        let pats = ["**/*.txt\n!**/skip.txt\n# comment\n\n", "**/skip.txt"];
        assert!(sel(&pats, "a/skip.txt"));
        assert!(!sel(&pats[..1], "a/skip.txt"));
        assert!(sel(&pats[..1], "a/keep.txt"));
        assert!(!sel(&["!!a", "!a"], "a"));
        assert!(sel(&["!!a"], "a"));
        assert!(!sel(&["# a"], "# a"));
    }

    #[test]
    fn dots_absolute_and_outside() {
        assert!(sel(&["./a/./b"], "a/b"));
        assert!(sel(&["a/../b"], "b"));
        assert!(!sel(&["../ws/a"], "a"));
        assert!(sel(&["/ws/a/*"], "a/b"));
        assert!(!sel(&["/other/a"], "a"));
        let dir_only = GlobPatterns::new(&["a/"], "/ws");
        assert!(dir_only.matches("a", true));
        assert!(!dir_only.matches("a", false));
        assert!(dir_only.matches("a/f", false));
    }

    #[test]
    fn search_roots_are_literal_prefixes() {
        let g = GlobPatterns::new(
            &["src/lib/**/*.rs", "src/lib/x/*.c", "docs/*.md", "!tmp/*"],
            "/ws",
        );
        assert_eq!(g.search_roots(), vec!["docs", "src/lib"]);
        let g = GlobPatterns::new(&["*.lock", "a/b"], "/ws");
        assert_eq!(g.search_roots(), vec![""]);
    }
}
