//! File commands: after each step the runner reads the files named by `GITHUB_ENV`,
//! `GITHUB_OUTPUT`, `GITHUB_STATE`, `GITHUB_PATH` and `GITHUB_STEP_SUMMARY`. The key/value
//! files accept `name=value` lines and `name<<DELIMITER` heredocs, exactly as GitHub's runner.

/// The step summary size limit GitHub enforces (1 MiB per step).
pub const SUMMARY_LIMIT: usize = 1024 * 1024;

/// A malformed file command file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileCommandError {
    #[error("{file}: line {line}: expected name=value or name<<DELIMITER")]
    Malformed { file: &'static str, line: usize },
    #[error("{file}: line {line}: empty name")]
    EmptyName { file: &'static str, line: usize },
    #[error("{file}: line {line}: delimiter {delimiter:?} never closed")]
    Unterminated {
        file: &'static str,
        line: usize,
        delimiter: String,
    },
    #[error("{file}: invalid utf-8")]
    Utf8 { file: &'static str },
    #[error("step summary is {size} bytes, over the 1 MiB limit; it was dropped")]
    SummaryTooLarge { size: usize },
}

/// The file names of one command's file command files, inside that command's own
/// directory: `GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_STATE`, `GITHUB_PATH`,
/// `GITHUB_STEP_SUMMARY`. One directory per command lets the runner create all five with one
/// `put_tar` and read them back with one `get_tar` (two messages per step instead of ten).
pub const FILE_NAMES: [&str; 5] = ["env", "output", "state", "path", "summary.md"];

/// A tar holding the five file command files, empty, mode 0666 (GitHub creates them before
/// the step; the toolkit refuses to append to a missing file).
pub fn empty_files_tar() -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for name in FILE_NAMES {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o666);
        h.set_mtime(0);
        b.append_data(&mut h, name, std::io::empty())?;
    }
    b.into_inner()
}

/// What a command left in its file command files, from the `get_tar` of its directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilesRead {
    /// Contents by position in [`FILE_NAMES`]; a missing file is empty ("no commands").
    pub contents: [Vec<u8>; 5],
    /// Files the step replaced with a symlink (the tar does not follow links): their
    /// positions, for the caller to read through the link.
    pub links: Vec<usize>,
}

/// Reads the file command files out of the tar of their directory. Entries other than the
/// five files (a step may create more in the directory) are ignored.
pub fn read_files_tar(data: &[u8]) -> std::io::Result<FilesRead> {
    let mut out = FilesRead::default();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // Only the directory's own entries (`./env`, `env`), not files in a subdirectory.
        if path
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .count()
            != 1
        {
            continue;
        }
        let Some(i) = FILE_NAMES.iter().position(|n| *n == name) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            out.links.push(i);
        } else if kind.is_file() {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut buf)?;
            out.contents[i] = buf;
        }
    }
    Ok(out)
}

/// Parse a key/value file command file (`GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_STATE`).
/// `file` names it in errors. Later assignments of the same name win (kept in order).
pub fn parse_key_values(
    file: &'static str,
    data: &[u8],
) -> Result<Vec<(String, String)>, FileCommandError> {
    let text = std::str::from_utf8(data).map_err(|_| FileCommandError::Utf8 { file })?;
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let lineno = i + 1;
        i += 1;
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        // GitHub picks whichever separator comes first on the line.
        let use_heredoc = match (eq, heredoc) {
            (Some(e), Some(h)) => h < e,
            (None, Some(_)) => true,
            _ => false,
        };
        if use_heredoc {
            let h = heredoc.unwrap_or_default();
            let name = &line[..h];
            let delimiter = &line[h + 2..];
            if name.is_empty() {
                return Err(FileCommandError::EmptyName { file, line: lineno });
            }
            if delimiter.is_empty() {
                return Err(FileCommandError::Malformed { file, line: lineno });
            }
            let mut value_lines = Vec::new();
            let mut closed = false;
            while i < lines.len() {
                let l = lines[i];
                i += 1;
                if l == delimiter {
                    closed = true;
                    break;
                }
                value_lines.push(l);
            }
            if !closed {
                return Err(FileCommandError::Unterminated {
                    file,
                    line: lineno,
                    delimiter: delimiter.to_string(),
                });
            }
            out.push((name.to_string(), value_lines.join("\n")));
        } else if let Some(e) = eq {
            let name = &line[..e];
            if name.is_empty() {
                return Err(FileCommandError::EmptyName { file, line: lineno });
            }
            out.push((name.to_string(), line[e + 1..].to_string()));
        } else {
            return Err(FileCommandError::Malformed { file, line: lineno });
        }
    }
    Ok(out)
}

/// Parse `GITHUB_PATH`: one directory per non-empty line, in file order.
pub fn parse_path_file(data: &[u8]) -> Result<Vec<String>, FileCommandError> {
    let text = std::str::from_utf8(data).map_err(|_| FileCommandError::Utf8 {
        file: "GITHUB_PATH",
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Check a step summary against the limit; returns the text to keep (`None` when empty).
pub fn take_summary(data: &[u8]) -> Result<Option<String>, FileCommandError> {
    if data.len() > SUMMARY_LIMIT {
        return Err(FileCommandError::SummaryTooLarge { size: data.len() });
    }
    let text = String::from_utf8_lossy(data).into_owned();
    Ok(if text.trim().is_empty() {
        None
    } else {
        Some(text)
    })
}

/// Directories added to `PATH`: GitHub prepends each new entry in front of earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrependPath {
    entries: Vec<String>,
}

impl PrependPath {
    pub fn add(&mut self, dir: String) {
        self.entries.retain(|e| *e != dir);
        self.entries.push(dir);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `PATH` for a step: added directories (newest first) then `base`.
    pub fn apply(&self, base: &str) -> String {
        let mut parts: Vec<&str> = self.entries.iter().rev().map(String::as_str).collect();
        if !base.is_empty() {
            parts.push(base);
        }
        parts.join(":")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_and_heredoc() {
        let data = b"a=1\n\nb=x=y\nmulti<<EOF\nline1\nline2\nEOF\nc<<X\r\n\r\nX\r\n";
        let kv = parse_key_values("GITHUB_OUTPUT", data).unwrap();
        assert_eq!(
            kv,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x=y".into()),
                ("multi".into(), "line1\nline2".into()),
                ("c".into(), "".into())
            ]
        );
    }

    #[test]
    fn heredoc_vs_equals_first_wins() {
        let kv = parse_key_values("GITHUB_ENV", b"a=b<<c\nk<<D\nv=1\nD\n").unwrap();
        assert_eq!(
            kv,
            vec![("a".into(), "b<<c".into()), ("k".into(), "v=1".into())]
        );
    }

    #[test]
    fn errors_are_located() {
        assert_eq!(
            parse_key_values("GITHUB_ENV", b"ok=1\nbad\n"),
            Err(FileCommandError::Malformed {
                file: "GITHUB_ENV",
                line: 2
            })
        );
        assert!(matches!(
            parse_key_values("GITHUB_ENV", b"x<<EOF\nno end"),
            Err(FileCommandError::Unterminated { line: 1, .. })
        ));
        assert!(matches!(
            parse_key_values("GITHUB_ENV", b"=v"),
            Err(FileCommandError::EmptyName { .. })
        ));
    }

    #[test]
    fn path_prepends_newest_first() {
        let mut p = PrependPath::default();
        for d in parse_path_file(b"/a\n\n /b \n").unwrap() {
            p.add(d);
        }
        assert_eq!(p.apply("/usr/bin"), "/b:/a:/usr/bin");
        p.add("/a".into());
        assert_eq!(p.apply(""), "/a:/b");
    }

    #[test]
    fn summary_cap() {
        assert_eq!(take_summary(b"  \n").unwrap(), None);
        assert_eq!(take_summary(b"# hi\n").unwrap().as_deref(), Some("# hi\n"));
        let big = vec![b'x'; SUMMARY_LIMIT + 1];
        assert!(matches!(
            take_summary(&big),
            Err(FileCommandError::SummaryTooLarge { .. })
        ));
    }
    #[test]
    fn files_tar_round_trip() {
        let tar = empty_files_tar().expect("tar");
        let read = read_files_tar(&tar).expect("read");
        assert_eq!(read, FilesRead::default());
        let mut a = tar::Archive::new(tar.as_slice());
        let mut names = Vec::new();
        for e in a.entries().expect("entries") {
            let e = e.expect("entry");
            assert_eq!(e.header().mode().expect("mode"), 0o666);
            assert_eq!(e.header().size().expect("size"), 0);
            names.push(e.path().expect("path").display().to_string());
        }
        assert_eq!(names, FILE_NAMES);
    }

    #[test]
    fn read_files_tar_takes_contents_links_and_ignores_the_rest() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).expect("append");
        };
        add("./output", b"x=1\n");
        add("./sub/env", b"NOPE=1\n");
        add("./other", b"junk");
        add("summary.md", b"# hi");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "./path", "/elsewhere").expect("link");
        let data = b.into_inner().expect("tar");
        let read = read_files_tar(&data).expect("read");
        assert_eq!(read.contents[0], b"");
        assert_eq!(read.contents[1], b"x=1\n");
        assert_eq!(read.contents[4], b"# hi");
        assert_eq!(read.links, vec![3]);
    }
}
