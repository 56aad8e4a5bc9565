//! Shells, exactly as GitHub documents them for Linux runners. A `run:` script is written
//! to a file under `RUNNER_TEMP` (with the extension the interpreter expects) and the shell's
//! command template is invoked with `{0}` replaced by that path.

/// A resolved shell: argv template containing `{0}` and the script file extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shell {
    pub argv: Vec<String>,
    pub extension: &'static str,
}

/// A `shell:` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("shell is empty")]
    Empty,
    #[error("custom shell {0:?} must contain {{0}} for the script path")]
    MissingPlaceholder(String),
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Resolve `shell:` (`None` = unspecified). `has_bash` says whether the VM has bash; GitHub
/// falls back to `sh` for the unspecified shell when it has not.
pub fn resolve(shell: Option<&str>, has_bash: bool) -> Result<Shell, ShellError> {
    let sh = |argv: &str| Shell {
        argv: words(argv),
        extension: ".sh",
    };
    let Some(name) = shell.map(str::trim) else {
        return Ok(if has_bash {
            sh("bash -e {0}")
        } else {
            sh("sh -e {0}")
        });
    };
    Ok(match name {
        "" => return Err(ShellError::Empty),
        "bash" => sh("bash --noprofile --norc -eo pipefail {0}"),
        "sh" => sh("sh -e {0}"),
        "python" => Shell {
            argv: words("python {0}"),
            extension: ".py",
        },
        "pwsh" => Shell {
            argv: vec!["pwsh".into(), "-command".into(), ". '{0}'".into()],
            extension: ".ps1",
        },
        "powershell" => Shell {
            argv: vec!["powershell".into(), "-command".into(), ". '{0}'".into()],
            extension: ".ps1",
        },
        "cmd" => Shell {
            argv: words("cmd /D /E:ON /V:OFF /S /C \"CALL \"{0}\"\""),
            extension: ".cmd",
        },
        custom => {
            if !custom.contains("{0}") {
                return Err(ShellError::MissingPlaceholder(custom.to_string()));
            }
            let argv = words(custom);
            let extension = match argv.first().map(String::as_str) {
                Some("python" | "python3") => ".py",
                Some("pwsh" | "powershell") => ".ps1",
                _ => "",
            };
            Shell { argv, extension }
        }
    })
}

impl Shell {
    /// GitHub's `python` shell runs `python`, which GitHub's images have. Debian (and
    /// ignis's guest images) only ship `python3`; `found` is what the machine has (`python`
    /// first), so the shell works there too. Other shells are unchanged.
    pub fn with_python(mut self, found: Option<&str>) -> Self {
        if let (Some(first), Some(found)) = (self.argv.first_mut(), found)
            && first == "python"
            && self.extension == ".py"
        {
            *first = found.to_string();
        }
        self
    }

    /// argv with `{0}` replaced by `path`.
    pub fn command(&self, path: &str) -> Vec<String> {
        self.argv.iter().map(|a| a.replace("{0}", path)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_table() {
        assert_eq!(resolve(None, true).unwrap().argv, ["bash", "-e", "{0}"]);
        assert_eq!(resolve(None, false).unwrap().argv, ["sh", "-e", "{0}"]);
        assert_eq!(
            resolve(Some("bash"), true).unwrap().argv,
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "{0}"]
        );
        assert_eq!(resolve(Some("sh"), true).unwrap().argv, ["sh", "-e", "{0}"]);
        let py = resolve(Some("python"), true).unwrap();
        assert_eq!(py.argv, ["python", "{0}"]);
        let py3 = py.clone().with_python(Some("/usr/bin/python3"));
        assert_eq!(py3.argv, ["/usr/bin/python3", "{0}"]);
        assert_eq!(py.clone().with_python(None).argv, ["python", "{0}"]);
        let bash = resolve(Some("bash"), true).unwrap();
        assert_eq!(bash.clone().with_python(Some("python3")), bash);
        assert_eq!(py.extension, ".py");
        assert_eq!(resolve(Some("bash"), true).unwrap().extension, ".sh");
    }

    #[test]
    fn custom_shell() {
        let s = resolve(Some("perl -w {0}"), true).unwrap();
        assert_eq!(s.command("/t/x"), ["perl", "-w", "/t/x"]);
        let s = resolve(Some("cp {0} action.yml"), true).unwrap();
        assert_eq!(s.command("/t/x"), ["cp", "/t/x", "action.yml"]);
        assert_eq!(
            resolve(Some("perl"), true),
            Err(ShellError::MissingPlaceholder("perl".into()))
        );
        assert_eq!(resolve(Some("  "), true), Err(ShellError::Empty));
    }
}
