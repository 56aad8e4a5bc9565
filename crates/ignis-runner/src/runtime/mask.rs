//! Secret masking. Every secret and every `::add-mask::` value is replaced by `***` in log
//! lines, events, summaries and annotations. A multi-line secret is masked as a whole and
//! line by line, because output is split into lines before it is masked. Longer values are
//! replaced first so that a secret containing another secret leaves no partial text.

use std::sync::{Arc, RwLock};

/// The replacement text, as on GitHub.
pub const MASK: &str = "***";

/// A shared, growing set of values to mask. Cloning shares the set: a mask added by one step
/// applies to every later line of the run.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    values: Arc<RwLock<Vec<String>>>,
}

impl Masker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a value. Empty and whitespace-only values (and their lines) are ignored:
    /// masking them would destroy every line.
    pub fn add(&self, value: &str) {
        let mut candidates: Vec<&str> = Vec::new();
        let trimmed = value.trim_end_matches(['\r', '\n']);
        candidates.push(trimmed);
        if trimmed.contains('\n') {
            candidates.extend(trimmed.split('\n').map(|l| l.trim_end_matches('\r')));
        }
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for c in candidates {
            if c.trim().is_empty() || values.iter().any(|v| v == c) {
                continue;
            }
            values.push(c.to_string());
            changed = true;
        }
        if changed {
            // Longest first so overlapping secrets are fully covered.
            values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        }
    }

    /// How many values are masked (a secret counts once plus once per line).
    pub fn len(&self) -> usize {
        self.values.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.values
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Mask every registered value inside `text`.
    pub fn mask(&self, text: &str) -> String {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        if values.is_empty() {
            return text.to_string();
        }
        let mut out = text.to_string();
        for v in values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }

    /// Mask every string inside a JSON value (outputs, matrices).
    pub fn mask_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => *s = self.mask(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| self.mask_json(v)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|v| self.mask_json(v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_inside_longer_lines() {
        let m = Masker::new();
        m.add("s3cr3t");
        assert_eq!(
            m.mask("token=s3cr3t; again s3cr3t."),
            "token=***; again ***."
        );
        assert_eq!(m.mask("nothing here"), "nothing here");
    }

    #[test]
    fn longest_first() {
        let m = Masker::new();
        m.add("abc");
        m.add("abcdef");
        assert_eq!(m.mask("xabcdefx abc"), "x***x ***");
    }

    #[test]
    fn multiline_secret_line_by_line() {
        let m = Masker::new();
        m.add("line-one\nline-two\n");
        assert_eq!(m.mask("line-one"), "***");
        assert_eq!(m.mask("got line-two!"), "got ***!");
        assert_eq!(m.mask("line-one\nline-two"), "***");
    }

    #[test]
    fn empty_values_ignored_and_shared_between_clones() {
        let m = Masker::new();
        m.add("");
        m.add("  \n");
        assert!(m.is_empty());
        let c = m.clone();
        c.add("pw");
        assert_eq!(m.mask("pw"), "***");
    }

    #[test]
    fn masks_json() {
        let m = Masker::new();
        m.add("k");
        let mut v = serde_json::json!({"a": ["xk", 1], "b": "k"});
        m.mask_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": ["x***", 1], "b": "***"}));
    }
}
