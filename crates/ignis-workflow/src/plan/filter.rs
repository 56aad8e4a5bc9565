//! GitHub's filter patterns for `branches`, `tags` and `paths` (and their `-ignore` twins).
//!
//! See docs.github.com, "Workflow syntax for GitHub Actions" → "Filter pattern cheat sheet":
//! - `*` matches zero or more characters except `/`;
//! - `**` matches zero or more of any character (`**/` also matches no directory at all, so
//!   `**/README.md` matches `README.md`);
//! - `?` matches zero or one of the *preceding* character, `+` one or more of it;
//! - `[...]` matches one character listed or in a range (`a-z`, `A-Z`, `0-9` only);
//! - `\` escapes the next character;
//! - `!` at the start negates: patterns are checked in order and the last one that matches wins.
//!
//! The pattern language is regex-like, so each pattern compiles to an anchored regex (RE2
//! semantics, linear time: a hostile pattern cannot blow up matching).

use regex::Regex;

/// A filter pattern that GitHub would refuse. User error: the workflow file is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter pattern '{pattern}': {reason} at position {position}")]
pub struct PatternError {
    /// The pattern as written (without a leading `!`).
    pub pattern: String,
    /// Byte offset of the problem inside `pattern`.
    pub position: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

/// One compiled pattern of a filter list.
#[derive(Debug, Clone)]
pub struct FilterPattern {
    source: String,
    negative: bool,
    regex: Regex,
}

impl FilterPattern {
    /// Compiles one pattern; a leading `!` makes it negative.
    pub fn new(raw: &str) -> Result<Self, PatternError> {
        let (negative, pattern) = match raw.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let source = to_regex(pattern)?;
        let regex = Regex::new(&source).map_err(|_| PatternError {
            pattern: pattern.to_owned(),
            position: 0,
            reason: "not a valid pattern",
        })?;
        Ok(Self {
            source: pattern.to_owned(),
            negative,
            regex,
        })
    }

    /// The pattern text without the leading `!`.
    pub fn pattern(&self) -> &str {
        &self.source
    }

    /// Whether the pattern started with `!`.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Whether the pattern (ignoring negation) matches the whole `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

/// An ordered list of patterns, as written under `branches:`, `paths-ignore:` and so on.
#[derive(Debug, Clone, Default)]
pub struct FilterList {
    patterns: Vec<FilterPattern>,
}

impl FilterList {
    /// Compiles every pattern; the first invalid one is the error.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let patterns = patterns
            .iter()
            .map(|p| FilterPattern::new(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { patterns })
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[FilterPattern] {
        &self.patterns
    }

    /// Whether the list selects `name`: the last matching pattern decides (a positive one
    /// includes, a negative one excludes); no match at all means not selected.
    pub fn selects(&self, name: &str) -> bool {
        let mut selected = false;
        for p in &self.patterns {
            if p.matches(name) {
                selected = !p.negative;
            }
        }
        selected
    }

    /// Inclusion filter (`branches`, `tags`, `paths`): passes when any name is selected.
    pub fn includes_any<S: AsRef<str>>(&self, names: &[S]) -> bool {
        names.iter().any(|n| self.selects(n.as_ref()))
    }

    /// Exclusion filter (`branches-ignore`, `tags-ignore`, `paths-ignore`): passes unless
    /// every name is selected ("When all the path names match patterns in `paths-ignore`,
    /// the workflow will not run").
    pub fn ignores_all<S: AsRef<str>>(&self, names: &[S]) -> bool {
        names.iter().all(|n| self.selects(n.as_ref()))
    }
}

/// Translates one pattern (without `!`) into an anchored regex.
fn to_regex(pattern: &str) -> Result<String, PatternError> {
    let err = |position: usize, reason: &'static str| PatternError {
        pattern: pattern.to_owned(),
        position,
        reason,
    };
    let chars: Vec<(usize, char)> = pattern.char_indices().collect();
    let mut out = String::with_capacity(pattern.len() * 2 + 2);
    out.push('^');
    let mut i = 0;
    // Whether the previous token can take a `?`/`+` quantifier (regex would reject `a??+`
    // style nesting differently from GitHub; we only let plain atoms be quantified).
    let mut quantifiable = false;
    while i < chars.len() {
        let (pos, c) = chars[i];
        match c {
            '*' => {
                if chars.get(i + 1).map(|&(_, c)| c) == Some('*') {
                    if chars.get(i + 2).map(|&(_, c)| c) == Some('/') {
                        out.push_str("(?:.+/)?");
                        i += 3;
                    } else {
                        out.push_str(".*");
                        i += 2;
                    }
                } else {
                    out.push_str("[^/]*");
                    i += 1;
                }
                quantifiable = false;
            }
            '?' | '+' => {
                if quantifiable {
                    out.push(c);
                    quantifiable = false;
                } else {
                    // Nothing to repeat (start of pattern, or after a wildcard or another
                    // quantifier): the character stands for itself.
                    out.push_str(&regex::escape(&c.to_string()));
                    quantifiable = true;
                }
                i += 1;
            }
            '[' => {
                let start = i;
                i += 1;
                if chars.get(i).map(|&(_, c)| c) == Some(']') {
                    return Err(err(chars[i].0, "unexpected empty brackets '[]'"));
                }
                out.push('[');
                let class_start = i;
                loop {
                    let Some(&(p, c)) = chars.get(i) else {
                        return Err(err(chars[start].0, "missing closing bracket ']' after '['"));
                    };
                    if c == ']' {
                        break;
                    }
                    if c == '-' {
                        let prev = (i > class_start).then(|| chars[i - 1].1);
                        let next = chars.get(i + 1).map(|&(_, c)| c).filter(|&c| c != ']');
                        match (prev, next) {
                            (Some(a), Some(b)) if valid_range(a, b) => {
                                out.push('-');
                                out.push(b);
                                i += 2;
                                continue;
                            }
                            _ => {
                                return Err(err(p, "ranges can only include a-z, A-Z and 0-9"));
                            }
                        }
                    }
                    if !c.is_ascii_alphanumeric() {
                        return Err(err(p, "brackets can only include a-z, A-Z and 0-9"));
                    }
                    out.push(c);
                    i += 1;
                }
                out.push(']');
                i += 1;
                quantifiable = true;
            }
            '\\' => {
                let Some(&(_, next)) = chars.get(i + 1) else {
                    return Err(err(pos, "missing character after '\\'"));
                };
                out.push_str(&regex::escape(&next.to_string()));
                i += 2;
                quantifiable = true;
            }
            _ => {
                out.push_str(&regex::escape(&c.to_string()));
                i += 1;
                quantifiable = true;
            }
        }
    }
    out.push('$');
    Ok(out)
}

/// GitHub allows ranges only inside `a-z`, `A-Z` or `0-9`, low end first.
fn valid_range(a: char, b: char) -> bool {
    a <= b
        && (a.is_ascii_lowercase() && b.is_ascii_lowercase()
            || a.is_ascii_uppercase() && b.is_ascii_uppercase()
            || a.is_ascii_digit() && b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(patterns: &[&str], name: &str) -> bool {
        FilterList::new(patterns)
            .expect("valid patterns")
            .selects(name)
    }

    /// Every row of the docs' "Patterns to match branches and tags" table.
    #[test]
    fn docs_branch_and_tag_table() {
        let rows: &[(&str, &[&str])] = &[
            ("feature/*", &["feature/my-branch", "feature/your-branch"]),
            (
                "feature/**",
                &[
                    "feature/beta-a/my-branch",
                    "feature/your-branch",
                    "feature/mona/the/octocat",
                ],
            ),
            ("main", &["main"]),
            ("releases/mona-the-octocat", &["releases/mona-the-octocat"]),
            ("*", &["main", "releases"]),
            ("**", &["all/the/branches", "every/tag"]),
            ("*feature", &["mona-feature", "feature", "ver-10-feature"]),
            ("v2*", &["v2", "v2.0", "v2.9"]),
            ("v[12].[0-9]+.[0-9]+", &["v1.10.1", "v2.0.0"]),
        ];
        for (pattern, names) in rows {
            for name in *names {
                assert!(sel(&[pattern], name), "{pattern} should match {name}");
            }
        }
        assert!(!sel(&["feature/*"], "feature/a/b"));
        assert!(!sel(&["*"], "releases/10"));
        assert!(!sel(&["v[12].[0-9]+.[0-9]+"], "v3.0.0"));
        assert!(!sel(&["v[12].[0-9]+.[0-9]+"], "v1..0"));
        assert!(!sel(&["main"], "main2"));
    }

    /// Every row of the docs' "Patterns to match file paths" table.
    #[test]
    fn docs_path_table() {
        let rows: &[(&[&str], &[&str], &[&str])] = &[
            (&["*"], &["README.md", "server.rb"], &["a/b"]),
            (
                &["*.jsx?"],
                &["page.js", "page.jsx"],
                &["page.jsxx", "page.j"],
            ),
            (&["**"], &["all/the/files.md"], &[]),
            (&["*.js"], &["app.js", "index.js"], &["js/index.js"]),
            (
                &["**.js"],
                &["index.js", "js/index.js", "src/js/app.js"],
                &["a.ts"],
            ),
            (
                &["docs/*"],
                &["docs/README.md", "docs/file.txt"],
                &["docs/a/b.md"],
            ),
            (
                &["docs/**"],
                &["docs/README.md", "docs/mona/octocat.txt"],
                &["doc/x"],
            ),
            (
                &["docs/**/*.md"],
                &[
                    "docs/README.md",
                    "docs/mona/hello-world.md",
                    "docs/a/markdown/file.md",
                ],
                &["docs/a.txt"],
            ),
            (
                &["**/docs/**"],
                &[
                    "docs/hello.md",
                    "dir/docs/my-file.txt",
                    "space/docs/plan/space.doc",
                ],
                &["docsx/a"],
            ),
            (
                &["**/README.md"],
                &["README.md", "js/README.md"],
                &["README.mdx"],
            ),
            (
                &["**/*src/**"],
                &["a/src/app.js", "my-src/code/js/app.js"],
                &["src"],
            ),
            (
                &["**/*-post.md"],
                &["my-post.md", "path/their-post.md"],
                &["post.md"],
            ),
            (
                &["**/migrate-*.sql"],
                &[
                    "migrate-10909.sql",
                    "db/migrate-v1.0.sql",
                    "db/sept/migrate-v1.sql",
                ],
                &["db/migrate.sql"],
            ),
            (
                &["*.md", "!README.md"],
                &["hello.md"],
                &["README.md", "docs/hello.md"],
            ),
            (
                &["*.md", "!README.md", "README*"],
                &["hello.md", "README.md", "README.doc"],
                &[],
            ),
        ];
        for (patterns, yes, no) in rows {
            for name in *yes {
                assert!(sel(patterns, name), "{patterns:?} should match {name}");
            }
            for name in *no {
                assert!(!sel(patterns, name), "{patterns:?} should not match {name}");
            }
        }
    }

    #[test]
    fn negation_order_from_docs() {
        let p = ["releases/**", "!releases/**-alpha"];
        assert!(sel(&p, "releases/10"));
        assert!(sel(&p, "releases/beta/mona"));
        assert!(!sel(&p, "releases/10-alpha"));
        assert!(!sel(&p, "releases/beta/3-alpha"));
        assert!(!sel(&p, "main"));
        let paths = ["sub-project/**", "!sub-project/docs/**"];
        let list = FilterList::new(&paths).expect("valid");
        assert!(list.includes_any(&["sub-project/index.js"]));
        assert!(list.includes_any(&["sub-project/src/index.js"]));
        assert!(!list.includes_any(&["sub-project/docs/readme.md"]));
    }

    #[test]
    fn ignore_semantics() {
        let list = FilterList::new(&["docs/**"]).expect("valid");
        assert!(list.ignores_all(&["docs/a.md", "docs/b/c.md"]));
        assert!(!list.ignores_all(&["docs/a.md", "src/main.rs"]));
    }

    #[test]
    fn escapes_and_literals() {
        assert!(sel(&["\\!file"], "!file"));
        assert!(sel(&["escape\\\\backslash"], "escape\\backslash"));
        assert!(!sel(&[".yml"], "fyml"));
        assert!(sel(&["feature\\+x"], "feature+x"));
        assert!(!sel(&["feature\\+x"], "featurex"));
        assert!(sel(&["+x"], "+x"), "a leading quantifier is literal");
        assert!(
            sel(&["a(b)|c"], "a(b)|c"),
            "regex metacharacters are literal"
        );
        assert!(!sel(&["a(b)|c"], "c"));
        assert!(sel(&["[CB]at"], "Cat"));
        assert!(sel(&["[1-2]00"], "200"));
        assert!(!sel(&["[1-2]00"], "300"));
    }

    #[test]
    fn invalid_patterns_are_errors() {
        for bad in ["[]", "a[", "[a-", "[z-a]", "[a-Z]", "[.]", "trailing\\"] {
            let e = FilterPattern::new(bad).expect_err(bad);
            assert!(!e.reason.is_empty());
        }
    }
}
