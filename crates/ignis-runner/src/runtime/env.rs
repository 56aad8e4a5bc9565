//! Dotenv files (`--env-file`, `--secret-file`, `--var-file`, `--input-file`) with godotenv's
//! semantics, as act reads them: `KEY=VALUE`, optional `export `, `#` comments, single quotes
//! literal, double quotes with `\n`, `\r`, `\t`, `\"`, `\\` escapes and multi-line values.

/// A malformed dotenv file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DotenvError {
    #[error("line {line}: expected KEY=VALUE")]
    Malformed { line: usize },
    #[error("line {line}: unterminated quoted value")]
    Unterminated { line: usize },
}

/// Parse a dotenv text into ordered pairs.
pub fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        // Skip blank space and comment lines.
        while i < chars.len()
            && (chars[i] == ' ' || chars[i] == '\t' || chars[i] == '\r' || chars[i] == '\n')
        {
            if chars[i] == '\n' {
                line += 1;
            }
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        if chars[i] == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let start_line = line;
        let mut key = String::new();
        while i < chars.len() && chars[i] != '=' && chars[i] != ':' && chars[i] != '\n' {
            key.push(chars[i]);
            i += 1;
        }
        let key = key
            .trim()
            .strip_prefix("export ")
            .map(str::trim)
            .unwrap_or(key.trim())
            .to_string();
        if i >= chars.len() || chars[i] == '\n' || key.is_empty() {
            return Err(DotenvError::Malformed { line: start_line });
        }
        i += 1; // '=' or ':'
        while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
            let q = chars[i];
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                let c = chars[i];
                if c == '\n' {
                    line += 1;
                }
                if c == q {
                    closed = true;
                    i += 1;
                    break;
                }
                if q == '"' && c == '\\' && i + 1 < chars.len() {
                    let n = chars[i + 1];
                    value.push(match n {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        other => other,
                    });
                    i += 2;
                    continue;
                }
                value.push(c);
                i += 1;
            }
            if !closed {
                return Err(DotenvError::Unterminated { line: start_line });
            }
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else {
            while i < chars.len() && chars[i] != '\n' {
                value.push(chars[i]);
                i += 1;
            }
            // An unquoted value ends at an inline comment (` #`).
            if let Some(p) = value.find(" #") {
                value.truncate(p);
            }
            value = value.trim().to_string();
        }
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn godotenv_forms() {
        let text = "# c\nA=1\nexport B = two words # note\nC=\"x\\ny\"\nD='a\\nb'\nE=\"multi\nline\"\nF:colon\n\n";
        let kv = parse_dotenv(text).unwrap();
        assert_eq!(
            kv,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x\ny".into()),
                ("D".into(), "a\\nb".into()),
                ("E".into(), "multi\nline".into()),
                ("F".into(), "colon".into()),
            ]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_dotenv("novalue\n"),
            Err(DotenvError::Malformed { line: 1 })
        );
        assert_eq!(
            parse_dotenv("\nA=\"open\n"),
            Err(DotenvError::Unterminated { line: 2 })
        );
    }
}
