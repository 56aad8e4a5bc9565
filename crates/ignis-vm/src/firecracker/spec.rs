//! Firecracker's Swagger 2.0 description turned into JSON Schema validators, one per
//! operation (method + path template), used by the fake server to accept exactly what the
//! spec accepts and by the contract tests to check every request the backend sent.
//!
//! Conversion: each operation's body schema becomes `{ ..schema, "definitions": <all> }` so
//! `#/definitions/X` references resolve unchanged (Swagger 2.0 schemas are draft-4 JSON
//! Schema). Every object schema gets `additionalProperties: false` unless it says otherwise,
//! because Firecracker's serde models reject unknown fields even where the spec is silent.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Errors loading the spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading firecracker spec {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing firecracker spec {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// One operation of the API.
#[derive(Debug)]
pub struct Operation {
    pub method: String,
    pub template: String,
    pub operation_id: String,
    body: Option<Body>,
}

struct Body {
    required: bool,
    schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("required", &self.required)
            .field("schema", &self.schema)
            .finish()
    }
}

/// The whole API: every path and method the spec names.
#[derive(Debug)]
pub struct Spec {
    pub version: String,
    pub operations: Vec<Operation>,
}

/// Where the spec lives in this repository's layout (`<repo>/../shared/firecracker/`), unless
/// `IGNIS_FIRECRACKER_SPEC` says otherwise.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("IGNIS_FIRECRACKER_SPEC") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/firecracker/firecracker.yaml")
}

impl Spec {
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| SpecError::Parse {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn parse(yaml: &str) -> Result<Self, String> {
        let doc: Value = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        if doc.get("swagger").and_then(Value::as_str) != Some("2.0") {
            return Err("not a swagger 2.0 document".into());
        }
        let version = doc
            .pointer("/info/version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let mut definitions = doc
            .get("definitions")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        close_definitions(&mut definitions);
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or("spec has no paths")?;
        let mut operations = Vec::new();
        for (template, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                let method = method.to_ascii_uppercase();
                if !["GET", "PUT", "PATCH", "POST", "DELETE"].contains(&method.as_str()) {
                    continue;
                }
                let operation_id = op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let body_param = op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .and_then(|ps| {
                        ps.iter()
                            .find(|p| p.get("in").and_then(Value::as_str) == Some("body"))
                    });
                let body = match body_param {
                    None => None,
                    Some(p) => {
                        let mut schema = p
                            .get("schema")
                            .cloned()
                            .ok_or_else(|| format!("{method} {template}: body without schema"))?;
                        close_objects(&mut schema);
                        if let Value::Object(o) = &mut schema {
                            o.insert("definitions".into(), definitions.clone());
                        }
                        let validator = jsonschema::draft4::new(&schema)
                            .map_err(|e| format!("{method} {template}: {e}"))?;
                        let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
                        Some(Body {
                            required,
                            schema,
                            validator,
                        })
                    }
                };
                operations.push(Operation {
                    method,
                    template: template.clone(),
                    operation_id,
                    body,
                });
            }
        }
        Ok(Self {
            version,
            operations,
        })
    }

    /// The operation `method path` maps to, if the spec has it.
    pub fn find(&self, method: &str, path: &str) -> Option<&Operation> {
        self.operations
            .iter()
            .find(|o| o.method == method && template_matches(&o.template, path))
    }

    /// Check one request: path and method must exist, the body must validate (and be present
    /// when required, absent when the operation takes none). The error is a readable reason.
    pub fn validate(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<&Operation, String> {
        let op = self
            .find(method, path)
            .ok_or_else(|| format!("Invalid request method and/or path: {method} {path}."))?;
        let body = body.filter(|b| !b.is_empty());
        match (&op.body, body) {
            (None, None) => Ok(op),
            (None, Some(_)) => Err(format!("{method} {path} takes no body")),
            (Some(b), None) if b.required => Err(format!("{method} {path}: missing required body")),
            (Some(_), None) => Ok(op),
            (Some(b), Some(bytes)) => {
                let value: Value = serde_json::from_slice(bytes).map_err(|e| {
                    format!("An error occurred when deserializing the json body of a request: {e}")
                })?;
                let errors: Vec<String> = b
                    .validator
                    .iter_errors(&value)
                    .map(|e| format!("{} at '{}'", e, e.instance_path()))
                    .collect();
                if errors.is_empty() {
                    Ok(op)
                } else {
                    Err(format!(
                        "An error occurred when deserializing the json body of a request ({}): {}",
                        op.operation_id,
                        errors.join("; ")
                    ))
                }
            }
        }
    }
}

/// `/drives/{drive_id}` matches `/drives/rootfs`.
pub fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

/// Add `additionalProperties: false` to every object schema that lists its properties and
/// does not say otherwise. Walks schema positions only (a property may be *named*
/// `properties`), so data such as `enum`, `default` and `example` is never touched.
fn close_objects(schema: &mut Value) {
    let Value::Object(o) = schema else { return };
    let lists_properties = o.get("properties").is_some_and(Value::is_object)
        && o.get("type")
            .and_then(Value::as_str)
            .is_none_or(|t| t == "object")
        && !o.contains_key("$ref");
    if lists_properties && !o.contains_key("additionalProperties") {
        o.insert("additionalProperties".into(), Value::Bool(false));
    }
    for map_key in ["properties", "definitions"] {
        if let Some(Value::Object(children)) = o.get_mut(map_key) {
            children.values_mut().for_each(close_objects);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child @ Value::Object(_)) = o.get_mut(key) {
            close_objects(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(children)) = o.get_mut(key) {
            children.iter_mut().for_each(close_objects);
        }
    }
}

/// The same for a map of named schemas (`definitions`).
fn close_definitions(defs: &mut Value) {
    if let Value::Object(children) = defs {
        children.values_mut().for_each(close_objects);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        let path = default_path();
        assert!(
            path.is_file(),
            "firecracker spec missing at {} (shared/firecracker/firecracker.yaml)",
            path.display()
        );
        Spec::load(&path).expect("spec loads")
    }

    #[test]
    fn firecracker_spec_loads_every_operation() {
        let s = spec();
        assert!(
            s.operations.len() >= 30,
            "{} operations",
            s.operations.len()
        );
        assert!(s.find("PUT", "/drives/rootfs").is_some());
        assert!(s.find("PUT", "/drives").is_none());
        assert!(s.find("DELETE", "/vm").is_none());
    }

    #[test]
    fn firecracker_spec_rejects_unknown_fields_and_types() {
        let s = spec();
        assert!(
            s.validate(
                "PUT",
                "/vsock",
                Some(br#"{"guest_cid":3,"uds_path":"/v.sock"}"#)
            )
            .is_ok()
        );
        let unknown = s.validate(
            "PUT",
            "/vsock",
            Some(br#"{"guest_cid":3,"uds_path":"/v","bogus":1}"#),
        );
        assert!(unknown.is_err(), "unknown field accepted");
        assert!(
            s.validate("PUT", "/vsock", Some(br#"{"guest_cid":2,"uds_path":"/v"}"#))
                .is_err(),
            "cid minimum 3"
        );
        assert!(
            s.validate("PUT", "/actions", Some(br#"{"action_type":"Reboot"}"#))
                .is_err()
        );
        assert!(
            s.validate("PATCH", "/vm", Some(br#"{"state":"Paused"}"#))
                .is_ok()
        );
        // Nested definitions are closed too.
        let nested = br#"{"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m","x":1}}"#;
        assert!(s.validate("PUT", "/snapshot/load", Some(nested)).is_err());
        assert!(s.validate("GET", "/", Some(b"{}")).is_err(), "body on GET");
        assert!(s.validate("PUT", "/actions", None).is_err(), "missing body");
    }
}
