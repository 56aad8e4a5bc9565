//! The values expressions evaluate to, and GitHub's coercion rules between them.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;

/// An ordered map of property names to values (the `Object` kind). Declaration order is kept
/// because `toJSON`, `.*` and `join` expose it.
pub type Map = IndexMap<String, Value>;

/// A value as GitHub's expression engine sees it: null, boolean, number (always `f64`),
/// string, array or object.
///
/// Arrays and objects sit behind an [`Arc`] for two reasons: contexts such as `github.event`
/// are large and are dereferenced on every evaluation (cloning is a reference-count bump),
/// and GitHub compares arrays and objects *by identity* (`env == env` is true, two separate
/// `fromJSON('{}')` are not equal), which [`Arc::ptr_eq`] gives us.
///
/// The derived [`PartialEq`] is structural equality for Rust callers and tests; the
/// expression operator `==` is [`Value::loose_eq`].
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null`, also the result of dereferencing a missing property.
    #[default]
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// Every number is a double, as in GitHub's engine (NaN and ±Infinity included).
    Number(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Arc<Vec<Value>>),
    /// An object with ordered keys; lookups by expression are case-insensitive.
    Object(Arc<Map>),
}

/// The kind of a [`Value`], for messages and coercion decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`Value::Null`]
    Null,
    /// [`Value::Bool`]
    Bool,
    /// [`Value::Number`]
    Number,
    /// [`Value::String`]
    String,
    /// [`Value::Array`]
    Array,
    /// [`Value::Object`]
    Object,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Null => "null",
            Kind::Bool => "boolean",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Array => "array",
            Kind::Object => "object",
        })
    }
}

impl Value {
    /// Builds an array value.
    pub fn array(items: Vec<Value>) -> Self {
        Value::Array(Arc::new(items))
    }

    /// Builds an object value.
    pub fn object(map: Map) -> Self {
        Value::Object(Arc::new(map))
    }

    /// Builds an object from `(key, value)` pairs, keeping their order.
    pub fn object_from<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Self {
        Value::object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The value's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }

    /// GitHub's truthiness: `false`, `null`, `0`, `-0`, `NaN` and `''` are falsy; everything
    /// else, including empty arrays and objects, is truthy.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => *n != 0.0 && !n.is_nan(),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// GitHub's conversion to a number: null → 0, booleans → 0/1, strings parsed (surrounding
    /// whitespace ignored, empty → 0, decimal/exponent, `0x` hex, `0o` octal, `Infinity`;
    /// anything else → NaN), arrays and objects → NaN.
    pub fn to_number(&self) -> f64 {
        match self {
            Value::Null => 0.0,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => *n,
            Value::String(s) => super::number::string_to_number(s),
            Value::Array(_) | Value::Object(_) => f64::NAN,
        }
    }

    /// GitHub's conversion to a string, used by `format`, `join`, `contains` & co. and by
    /// `${{ }}` interpolation: null → `''`, booleans → `true`/`false`, numbers in .NET "G15"
    /// form (`1`, `1.5`, `1E+20`, `NaN`, `Infinity`), arrays → `Array`, objects → `Object`.
    pub fn to_display_string(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => super::number::number_to_string(*n),
            Value::String(s) => s.clone(),
            Value::Array(_) => "Array".to_owned(),
            Value::Object(_) => "Object".to_owned(),
        }
    }

    /// The string content if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The object map if this is an object.
    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The items if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Case-insensitive property lookup (an exact match wins over a case-folded one).
    /// `None` when this is not an object or has no such key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let map = self.as_object()?;
        if let Some(v) = map.get(key) {
            return Some(v);
        }
        map.iter()
            .find(|(k, _)| eq_ignore_case(k, key))
            .map(|(_, v)| v)
    }

    /// GitHub's `==`: same kinds compare directly (strings case-insensitively, arrays and
    /// objects by identity); otherwise, unless one side is an array or object (never equal),
    /// both sides are converted to numbers.
    pub fn loose_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => a == b,
            (Value::String(a), Value::String(b)) => eq_ignore_case(a, b),
            (Value::Array(a), Value::Array(b)) => Arc::ptr_eq(a, b),
            (Value::Object(a), Value::Object(b)) => Arc::ptr_eq(a, b),
            (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
                false
            }
            _ => self.to_number() == other.to_number(),
        }
    }

    /// GitHub's ordering for `<`, `<=`, `>`, `>=`: strings compare ordinally ignoring case,
    /// mixed kinds compare as numbers; `None` when unordered (NaN, arrays, objects), which
    /// makes every relational operator false.
    pub fn loose_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::String(a), Value::String(b)) => Some(cmp_ignore_case(a, b)),
            (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
                None
            }
            _ => self.to_number().partial_cmp(&other.to_number()),
        }
    }

    /// Converts to JSON. Numbers that are whole and within ±2^53 become JSON integers (so
    /// `1` stays `1`, not `1.0`); NaN and ±Infinity, which JSON cannot hold, become the
    /// strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => number_to_json(*n),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Object(map) => serde_json::Value::Object(
                map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            ),
        }
    }
}

/// Largest integer an `f64` represents exactly (2^53).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

fn number_to_json(n: f64) -> serde_json::Value {
    if n.is_nan() {
        return serde_json::Value::String("NaN".to_owned());
    }
    if n.is_infinite() {
        let s = if n > 0.0 { "Infinity" } else { "-Infinity" };
        return serde_json::Value::String(s.to_owned());
    }
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        // Exact: |n| <= 2^53 and whole, so the cast loses nothing (and -0 becomes 0).
        return serde_json::Value::from(n as i64);
    }
    serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(items) => {
                Value::array(items.into_iter().map(Value::from).collect())
            }
            serde_json::Value::Object(map) => {
                Value::object(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
            }
        }
    }
}

impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Self {
        Value::from(v.clone())
    }
}

impl From<Value> for serde_json::Value {
    fn from(v: Value) -> Self {
        v.to_json()
    }
}

/// Serializes as the JSON of [`Value::to_json`].
impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// Deserializes any JSON-like data (numbers become doubles).
impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(Value::from)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Number(n as f64)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::array(items)
    }
}

impl From<Map> for Value {
    fn from(map: Map) -> Self {
        Value::object(map)
    }
}

/// Folds one character the way .NET's `OrdinalIgnoreCase` does: to its simple uppercase
/// mapping when that is a single character, else unchanged.
fn fold(c: char) -> char {
    // .NET's invariant upper-casing leaves the Turkish dotless i alone ('ı' != 'I' on GitHub).
    if c == '\u{131}' {
        return c;
    }
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// Case-insensitive equality (GitHub ignores case when comparing strings).
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// Case-insensitive ordinal comparison (both sides upper-cased, so `'a' < '['` like GitHub).
pub fn cmp_ignore_case(a: &str, b: &str) -> Ordering {
    a.chars().map(fold).cmp(b.chars().map(fold))
}

/// Upper-cases a string for the case-insensitive `contains`/`startsWith`/`endsWith`.
pub(crate) fn fold_string(s: &str) -> String {
    s.chars().map(fold).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_follows_github() {
        for falsy in [
            Value::Null,
            Value::Bool(false),
            Value::Number(0.0),
            Value::Number(-0.0),
            Value::Number(f64::NAN),
            Value::from(""),
        ] {
            assert!(!falsy.is_truthy(), "{falsy:?}");
        }
        for truthy in [
            Value::Bool(true),
            Value::Number(-1.0),
            Value::Number(f64::INFINITY),
            Value::from("0"),
            Value::from("false"),
            Value::array(vec![]),
            Value::object(Map::new()),
        ] {
            assert!(truthy.is_truthy(), "{truthy:?}");
        }
    }

    #[test]
    fn identity_equality_for_containers() {
        let a = Value::object(Map::new());
        let b = Value::object(Map::new());
        assert!(a.loose_eq(&a.clone()));
        assert!(!a.loose_eq(&b));
        assert!(!a.loose_eq(&Value::Null));
        assert!(Value::from("ABC").loose_eq(&Value::from("abc")));
        assert!(Value::from(" 0x10 ").loose_eq(&Value::Number(16.0)));
    }

    #[test]
    fn ordering_upper_cases() {
        assert_eq!(
            Value::from("a").loose_cmp(&Value::from("[")),
            Some(Ordering::Less)
        );
        assert_eq!(Value::Number(f64::NAN).loose_cmp(&Value::Number(1.0)), None);
        assert!(eq_ignore_case("ς", "Σ"));
    }

    #[test]
    fn json_round_trip_keeps_integers_and_order() {
        let json: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":[1.5,null,true,"x"],"c":{}}"#).unwrap();
        let v = Value::from(json.clone());
        assert_eq!(v.to_json(), json);
        assert_eq!(
            Value::Number(f64::NAN).to_json(),
            serde_json::Value::from("NaN")
        );
        assert_eq!(
            Value::Number(f64::NEG_INFINITY).to_json(),
            serde_json::Value::from("-Infinity")
        );
        assert_eq!(Value::Number(-0.0).to_json(), serde_json::Value::from(0));
        assert_eq!(
            Value::Number(1e300).to_json(),
            serde_json::Value::from(1e300)
        );
    }

    #[test]
    fn serde_goes_through_json() {
        let v: Value = serde_json::from_str(r#"{"a":[1,"x",null]}"#).unwrap();
        assert_eq!(
            v.get("A").and_then(Value::as_array).map(<[Value]>::len),
            Some(3)
        );
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"a":[1,"x",null]}"#);
    }

    #[test]
    fn case_insensitive_get_prefers_exact() {
        let v = Value::object_from([("Key", Value::from(1.0)), ("key", Value::from(2.0))]);
        assert_eq!(v.get("key"), Some(&Value::Number(2.0)));
        assert_eq!(v.get("KEY"), Some(&Value::Number(1.0)));
        assert_eq!(v.get("nope"), None);
        assert_eq!(Value::from("str").get("x"), None);
    }
}
