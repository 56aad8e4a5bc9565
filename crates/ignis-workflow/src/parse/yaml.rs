//! A small span-preserving YAML tree built from `saphyr-parser` events.
//!
//! Every node keeps the 1-based line/column where it starts, mappings keep their key order
//! and duplicate keys (which a hash-map based loader would silently drop), and aliases are
//! expanded (GitHub accepts anchors) with a bound on the expanded size so a "billion laughs"
//! document is an error instead of an out-of-memory.

use crate::model::Location;
use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};
use serde_json::Value;
use std::collections::HashMap;

/// Upper bound on nodes (after alias expansion) in one document.
const MAX_NODES: usize = 1_000_000;
/// Upper bound on nesting depth, so recursive conversion cannot overflow the stack.
const MAX_DEPTH: usize = 256;

/// One YAML node with its location.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) loc: Location,
    /// Number of nodes in this subtree (for the alias-expansion bound).
    size: usize,
}

/// The shape of a node.
#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A scalar as written: its text, style and tag, plus what it needs for locating offsets.
#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    pub(crate) text: String,
    pub(crate) style: ScalarStyle,
    /// The tag suffix (`str`, `int`, ...) when the scalar is tagged.
    pub(crate) tag: Option<String>,
}

impl Node {
    /// The scalar, if this node is one.
    pub(crate) fn scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar's text, if this node is a scalar.
    pub(crate) fn text(&self) -> Option<&str> {
        self.scalar().map(|s| s.text.as_str())
    }

    /// Whether this node is YAML null (`~`, `null`, or nothing at all).
    pub(crate) fn is_null(&self) -> bool {
        matches!(self.scalar(), Some(s) if s.is_null())
    }

    /// A short name of the node's type for "expected X, found Y" messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Seq(_) => "a sequence",
            NodeKind::Map(_) => "a mapping",
            NodeKind::Scalar(s) => match s.value() {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "a string",
            },
        }
    }

    /// The node as JSON: scalars resolved with the YAML 1.2 core schema (as GitHub does),
    /// mappings keyed by the keys' text.
    pub(crate) fn to_value(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar(s) => s.value(),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// The text of a node used as a mapping key (non-scalar keys render as JSON).
    pub(crate) fn key_text(&self) -> String {
        match &self.kind {
            NodeKind::Scalar(s) => s.text.clone(),
            _ => self.to_value().to_string(),
        }
    }
}

impl Scalar {
    /// Whether the scalar resolves to null.
    pub(crate) fn is_null(&self) -> bool {
        matches!(self.value(), Value::Null)
    }

    /// The scalar's value under the YAML 1.2 core schema: plain scalars may be null, bool or
    /// number; quoted and block scalars, and `!!str`-tagged ones, are strings.
    pub(crate) fn value(&self) -> Value {
        if self.style != ScalarStyle::Plain {
            return Value::String(self.text.clone());
        }
        if self.tag.as_deref() == Some("str") {
            return Value::String(self.text.clone());
        }
        resolve_plain(&self.text)
    }
}

/// Resolves a plain scalar with the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(text) {
        return Value::Number(n.into());
    }
    if is_core_float(text)
        && let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
    {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

/// Core-schema integers: decimal with optional sign, `0o` octal, `0x` hex.
fn parse_int(text: &str) -> Option<i64> {
    if let Some(oct) = text.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return i64::from_str_radix(oct, 8).ok();
        }
        return None;
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return i64::from_str_radix(hex, 16).ok();
        }
        return None;
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    None
}

/// Core-schema floats: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`. Infinity and NaN
/// have no JSON form and stay strings.
fn is_core_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exponent_ok = match exponent {
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
        None => true,
    };
    mantissa_ok && exponent_ok
}

/// Why the YAML could not be turned into a tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct YamlError {
    pub(crate) loc: Location,
    pub(crate) message: String,
}

impl YamlError {
    fn new(loc: Location, message: impl Into<String>) -> Self {
        Self {
            loc,
            message: message.into(),
        }
    }
}

fn loc_of(span: &Span) -> Location {
    Location::new(span.start.line(), span.start.col() + 1)
}

impl From<ScanError> for YamlError {
    fn from(err: ScanError) -> Self {
        let m = err.marker();
        Self::new(
            Location::new(m.line(), m.col() + 1),
            format!("yaml syntax error: {}", err.info()),
        )
    }
}

/// A container being built.
enum Open {
    Seq(Vec<Node>, Location, usize),
    Map(Vec<(Node, Node)>, Option<Node>, Location, usize),
}

/// Parses `source` into the tree of its single document; `Ok(None)` for an empty stream
/// (no document, or a document holding nothing but comments).
pub(crate) fn load(source: &str) -> Result<Option<Node>, YamlError> {
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let mut total = 0usize;
    for event in Parser::new_from_str(source).keep_tags(true) {
        let (event, span) = event?;
        let loc = loc_of(&span);
        let finished = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError::new(
                        loc,
                        "a workflow file must hold exactly one yaml document",
                    ));
                }
                None
            }
            Event::Alias(id) => {
                let node = anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| YamlError::new(loc, "alias to an unknown anchor"))?;
                Some((node, 0))
            }
            Event::Scalar(text, style, anchor, tag) => {
                let node = Node {
                    kind: NodeKind::Scalar(Scalar {
                        text: text.into_owned(),
                        style,
                        tag: tag.map(|t| t.suffix.clone()),
                    }),
                    loc,
                    size: 1,
                };
                Some((node, anchor))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Open::Seq(Vec::new(), loc, anchor));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Open::Map(Vec::new(), None, loc, anchor));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Seq(items, loc, anchor)) => {
                    let size = 1 + items.iter().map(|n| n.size).sum::<usize>();
                    Some((
                        Node {
                            kind: NodeKind::Seq(items),
                            loc,
                            size,
                        },
                        anchor,
                    ))
                }
                Some(Open::Map(entries, _, loc, anchor)) => {
                    let size = 1 + entries.iter().map(|(k, v)| k.size + v.size).sum::<usize>();
                    Some((
                        Node {
                            kind: NodeKind::Map(entries),
                            loc,
                            size,
                        },
                        anchor,
                    ))
                }
                None => return Err(YamlError::new(loc, "unbalanced yaml structure")),
            },
        };
        if stack.len() > MAX_DEPTH {
            return Err(YamlError::new(loc, "yaml nesting is too deep"));
        }
        let Some((node, anchor)) = finished else {
            continue;
        };
        total = total.saturating_add(node.size);
        if total > MAX_NODES {
            return Err(YamlError::new(
                loc,
                "yaml document is too large (aliases expand to too many nodes)",
            ));
        }
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Open::Seq(items, ..)) => items.push(node),
            Some(Open::Map(entries, pending, ..)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
    // A document of only comments yields one null scalar: treat it as empty.
    Ok(root.filter(|n| !(n.is_null() && n.scalar().is_some_and(|s| s.text.is_empty()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tree(src: &str) -> Node {
        match load(src) {
            Ok(Some(n)) => n,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn locations_are_one_based() {
        let n = tree("a: 1\nb:\n  - x\n  - y: z\n");
        let NodeKind::Map(entries) = &n.kind else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.loc, Location::new(1, 1));
        assert_eq!(entries[0].1.loc, Location::new(1, 4));
        assert_eq!(entries[1].0.loc, Location::new(2, 1));
        let NodeKind::Seq(items) = &entries[1].1.kind else {
            panic!("not a seq")
        };
        assert_eq!(items[0].loc, Location::new(3, 5));
        assert_eq!(items[1].loc, Location::new(4, 5));
    }

    #[test]
    fn core_schema_scalars() {
        let n = tree("a: 1\nb: true\nc: '1'\nd: 1.5\ne: ~\nf: on\ng: 0x1F\nh: .inf\ni: !!str 3\n");
        assert_eq!(
            n.to_value(),
            json!({"a": 1, "b": true, "c": "1", "d": 1.5, "e": null, "f": "on", "g": 31, "h": ".inf", "i": "3"})
        );
    }

    #[test]
    fn duplicate_keys_are_kept() {
        let n = tree("a: 1\na: 2\n");
        let NodeKind::Map(entries) = &n.kind else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        let n = tree("a: &x [1, 2]\nb: *x\n");
        assert_eq!(n.to_value(), json!({"a": [1, 2], "b": [1, 2]}));
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = load(&bomb).expect_err("bomb must fail");
        assert!(err.message.contains("too large"), "{}", err.message);
    }

    #[test]
    fn empty_and_comment_only_are_none() {
        assert!(load("").expect("ok").is_none());
        assert!(load("# just a comment\n").expect("ok").is_none());
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = load("a: [1, 2\nb: 3\n").expect_err("must fail");
        assert!(err.loc.line >= 1);
        assert!(err.message.starts_with("yaml syntax error"));
    }

    #[test]
    fn multiple_documents_are_refused() {
        let err = load("a: 1\n---\nb: 2\n").expect_err("must fail");
        assert_eq!(err.loc.line, 2);
    }
}
