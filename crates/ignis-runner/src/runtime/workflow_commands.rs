//! Workflow commands: `::name key=value,...::data` lines on a step's stdout. The parser is
//! stateful per step because `::stop-commands::TOKEN` and `::echo::on|off` change how the
//! following lines are read. Escaping follows GitHub's runner: data unescapes `%25 %0D %0A`,
//! property values additionally `%3A %2C`.

use crate::events::AnnotationLevel;
use std::collections::BTreeMap;

/// One recognised command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowCommand {
    AddMask(String),
    Group(String),
    EndGroup,
    Annotation {
        level: AnnotationLevel,
        message: String,
        title: Option<String>,
        file: Option<String>,
        line: Option<u64>,
        col: Option<u64>,
    },
    Debug(String),
    /// Legacy `::set-output name=x::v`.
    SetOutput {
        name: String,
        value: String,
    },
    /// Legacy `::save-state name=x::v`.
    SaveState {
        name: String,
        value: String,
    },
    /// `::set-env name=x::v`, honoured only with `ACTIONS_ALLOW_UNSECURE_COMMANDS=true`.
    SetEnv {
        name: String,
        value: String,
    },
    /// `::add-path::dir`, honoured only with `ACTIONS_ALLOW_UNSECURE_COMMANDS=true`.
    AddPath(String),
    /// A recognised command that was malformed or not allowed; the text explains why.
    Invalid(String),
}

/// What to do with one output line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Processed {
    /// The line to show in the log (commands are hidden unless echo is on).
    pub print: Option<String>,
    pub command: Option<WorkflowCommand>,
}

/// Per-step command state.
#[derive(Debug, Clone, Default)]
pub struct CommandProcessor {
    stop_token: Option<String>,
    echo: bool,
    allow_unsecure: bool,
}

fn unescape_data(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%25", "%")
}

fn unescape_property(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%3A", ":")
        .replace("%2C", ",")
        .replace("%25", "%")
}

/// Escape data the way the runner expects it when written by toolkit code (used in tests and
/// when ignis itself echoes commands).
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Split `::cmd props::data` into its parts. `None` when the line is not a command.
fn split(line: &str) -> Option<(&str, BTreeMap<String, String>, &str)> {
    let rest = line.trim_start().strip_prefix("::")?;
    let end = rest.find("::")?;
    let head = &rest[..end];
    let data = &rest[end + 2..];
    let (name, props_text) = match head.find(' ') {
        Some(i) => (&head[..i], head[i + 1..].trim()),
        None => (head, ""),
    };
    if name.is_empty() {
        return None;
    }
    let mut props = BTreeMap::new();
    for pair in props_text.split(',').filter(|p| !p.trim().is_empty()) {
        if let Some((k, v)) = pair.split_once('=') {
            props.insert(k.trim().to_string(), unescape_property(v));
        }
    }
    Some((name, props, data))
}

impl CommandProcessor {
    /// `allow_unsecure` = the step's `ACTIONS_ALLOW_UNSECURE_COMMANDS` is `true`.
    pub fn new(allow_unsecure: bool) -> Self {
        CommandProcessor {
            stop_token: None,
            echo: false,
            allow_unsecure,
        }
    }

    /// Process one stdout line (without its newline).
    pub fn line(&mut self, raw: &str) -> Processed {
        let line = raw.trim_end_matches('\r');
        if let Some(token) = &self.stop_token {
            if let Some((name, _, _)) = split(line)
                && name == token
            {
                self.stop_token = None;
                return Processed::default();
            }
            return Processed {
                print: Some(line.to_string()),
                command: None,
            };
        }
        let Some((name, props, data)) = split(line) else {
            return Processed {
                print: Some(line.to_string()),
                command: None,
            };
        };
        let data_u = unescape_data(data);
        let echoed = |p: &Self| p.echo.then(|| line.to_string());
        let command = match name {
            "add-mask" => WorkflowCommand::AddMask(data_u),
            "group" => WorkflowCommand::Group(data_u),
            "endgroup" => WorkflowCommand::EndGroup,
            "error" | "warning" | "notice" => WorkflowCommand::Annotation {
                level: match name {
                    "error" => AnnotationLevel::Error,
                    "warning" => AnnotationLevel::Warning,
                    _ => AnnotationLevel::Notice,
                },
                message: data_u,
                title: props.get("title").cloned(),
                file: props.get("file").cloned(),
                line: props.get("line").and_then(|v| v.trim().parse().ok()),
                col: props.get("col").and_then(|v| v.trim().parse().ok()),
            },
            "debug" => WorkflowCommand::Debug(data_u),
            "stop-commands" => {
                if data.is_empty() {
                    WorkflowCommand::Invalid("stop-commands needs a token".into())
                } else {
                    self.stop_token = Some(data.to_string());
                    return Processed {
                        print: echoed(self),
                        command: None,
                    };
                }
            }
            "echo" => {
                match data.trim() {
                    "on" => self.echo = true,
                    "off" => self.echo = false,
                    _ => {
                        return Processed {
                            print: None,
                            command: Some(WorkflowCommand::Invalid(format!(
                                "invalid echo value {data:?}, expected on or off"
                            ))),
                        };
                    }
                }
                return Processed::default();
            }
            "set-output" | "save-state" | "set-env" => match props.get("name") {
                Some(n) if !n.is_empty() => {
                    let (name_s, value) = (n.clone(), data_u);
                    match name {
                        "set-output" => WorkflowCommand::SetOutput { name: name_s, value },
                        "save-state" => WorkflowCommand::SaveState { name: name_s, value },
                        _ if self.allow_unsecure => WorkflowCommand::SetEnv { name: name_s, value },
                        _ => WorkflowCommand::Invalid(
                            "the set-env command is disabled; set ACTIONS_ALLOW_UNSECURE_COMMANDS=true or use GITHUB_ENV".into(),
                        ),
                    }
                }
                _ => WorkflowCommand::Invalid(format!("{name} requires a name property")),
            },
            "add-path" => {
                if self.allow_unsecure {
                    WorkflowCommand::AddPath(data_u)
                } else {
                    WorkflowCommand::Invalid(
                        "the add-path command is disabled; set ACTIONS_ALLOW_UNSECURE_COMMANDS=true or use GITHUB_PATH".into(),
                    )
                }
            }
            // Problem matchers are accepted and ignored: they only decorate logs.
            "add-matcher" | "remove-matcher" => {
                return Processed {
                    print: echoed(self),
                    command: None,
                };
            }
            _ => {
                return Processed {
                    print: Some(line.to_string()),
                    command: None,
                };
            }
        };
        Processed {
            print: echoed(self),
            command: Some(command),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(p: &mut CommandProcessor, l: &str) -> Option<WorkflowCommand> {
        p.line(l).command
    }

    #[test]
    fn plain_lines_pass_through() {
        let mut p = CommandProcessor::new(false);
        assert_eq!(
            p.line("hello :: world").print.as_deref(),
            Some("hello :: world")
        );
        assert_eq!(p.line("::nosuch::x").print.as_deref(), Some("::nosuch::x"));
    }

    #[test]
    fn annotations_with_properties_and_escapes() {
        let mut p = CommandProcessor::new(false);
        let c = cmd(
            &mut p,
            "::error file=app.js,line=100,col=30,title=a%2Cb%3Ac::Hello%0Aerror%25!",
        );
        assert_eq!(
            c,
            Some(WorkflowCommand::Annotation {
                level: AnnotationLevel::Error,
                message: "Hello\nerror%!".into(),
                title: Some("a,b:c".into()),
                file: Some("app.js".into()),
                line: Some(100),
                col: Some(30),
            })
        );
        assert!(matches!(
            cmd(&mut p, "  ::warning::w"),
            Some(WorkflowCommand::Annotation {
                level: AnnotationLevel::Warning,
                ..
            })
        ));
        assert_eq!(
            cmd(&mut p, "::debug::d"),
            Some(WorkflowCommand::Debug("d".into()))
        );
    }

    #[test]
    fn mask_group_output_state() {
        let mut p = CommandProcessor::new(false);
        assert_eq!(
            cmd(&mut p, "::add-mask::pw"),
            Some(WorkflowCommand::AddMask("pw".into()))
        );
        assert_eq!(
            cmd(&mut p, "::group::Title"),
            Some(WorkflowCommand::Group("Title".into()))
        );
        assert_eq!(cmd(&mut p, "::endgroup::"), Some(WorkflowCommand::EndGroup));
        assert_eq!(
            cmd(&mut p, "::set-output name=zoo::zar"),
            Some(WorkflowCommand::SetOutput {
                name: "zoo".into(),
                value: "zar".into()
            })
        );
        assert_eq!(
            cmd(&mut p, "::save-state name=s::v"),
            Some(WorkflowCommand::SaveState {
                name: "s".into(),
                value: "v".into()
            })
        );
        assert!(matches!(
            cmd(&mut p, "::set-output::v"),
            Some(WorkflowCommand::Invalid(_))
        ));
    }

    #[test]
    fn unsecure_commands_need_opt_in() {
        let mut p = CommandProcessor::new(false);
        assert!(matches!(
            cmd(&mut p, "::set-env name=a::b"),
            Some(WorkflowCommand::Invalid(_))
        ));
        assert!(matches!(
            cmd(&mut p, "::add-path::/zip"),
            Some(WorkflowCommand::Invalid(_))
        ));
        let mut p = CommandProcessor::new(true);
        assert_eq!(
            cmd(&mut p, "::set-env name=a::b"),
            Some(WorkflowCommand::SetEnv {
                name: "a".into(),
                value: "b".into()
            })
        );
        assert_eq!(
            cmd(&mut p, "::add-path::/zip"),
            Some(WorkflowCommand::AddPath("/zip".into()))
        );
    }

    #[test]
    fn stop_commands_until_token() {
        let mut p = CommandProcessor::new(true);
        assert_eq!(p.line("::stop-commands::tok"), Processed::default());
        let r = p.line("::set-env name=foo::baz");
        assert_eq!(r.command, None);
        assert_eq!(r.print.as_deref(), Some("::set-env name=foo::baz"));
        assert_eq!(p.line("::tok::"), Processed::default());
        assert!(matches!(
            cmd(&mut p, "::set-env name=foo::baz"),
            Some(WorkflowCommand::SetEnv { .. })
        ));
    }

    #[test]
    fn echo_on_shows_commands() {
        let mut p = CommandProcessor::new(false);
        assert_eq!(p.line("::warning::x").print, None);
        p.line("::echo::on");
        let r = p.line("::warning::x");
        assert_eq!(r.print.as_deref(), Some("::warning::x"));
        assert!(r.command.is_some());
        p.line("::echo::off");
        assert_eq!(p.line("::warning::x").print, None);
    }

    #[test]
    fn escape_roundtrip() {
        let s = "a%b\nc\rd";
        assert_eq!(unescape_data(&escape_data(s)), s);
    }
}
