//! The served OpenAPI document (`GET /api/v1/openapi.json`): [`ApiDoc`], which utoipa generates
//! from the handlers' attributes, completed with what every operation answers because of how the
//! API is mounted rather than because of what its handler does, and with the limits that come
//! from the config. Rules (so a new handler cannot forget them):
//!
//! - a JSON request body: 400 (malformed or wrong types), 413 (over `api.max_body`) and 415
//!   (not `application/json`), from the extractors' error handlers in `http::api`;
//! - path or query parameters: 400 (not parseable, or an unknown query parameter);
//! - a bearer security requirement, even an optional one: 401 with `WWW-Authenticate` (a token
//!   that is sent and refused is never treated as anonymous);
//! - a 429 carries `Retry-After`; every operation but the two that read only memory may answer
//!   503 while the database or shared state is unavailable;
//! - every `int64` without bounds gets the bounds of `i64`, which is what the handlers parse
//!   (beyond them, 400), so a schema-valid integer is never refused;
//! - `auth.min_password_len` and `api.comment_max_len` are written in as configured.
//!
//! Schema-level constraints on fields (lengths, patterns, ranges) sit on the request types
//! themselves, next to the checks they describe.

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use super::ApiDoc;
use crate::config::{ApiConfig, AuthConfig};

/// Operations that answer from memory only: no 503.
const MEMORY_ONLY: &[&str] = &["openapi_json", "list_plans"];

/// The document as served, for this config.
pub fn document(api: &ApiConfig, auth: &AuthConfig) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the generated document serializes");
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in item.values_mut().filter_map(Value::as_object_mut) {
                complete_operation(op);
            }
        }
    }
    bound_integers(&mut doc);
    let schemas = "/components/schemas";
    set(
        &mut doc,
        &format!("{schemas}/RegisterRequest/properties/password/minLength"),
        json!(auth.min_password_len),
    );
    set(&mut doc, &format!("{schemas}/CommentRequest/properties/body/maxLength"), json!(api.comment_max_len));
    doc
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    let slot = doc.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} is in the generated document"));
    *slot = value;
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    })
}

fn complete_operation(op: &mut Map<String, Value>) {
    let has_body = op.contains_key("requestBody");
    let has_params = op.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|reqs| reqs.iter().any(|r| r.as_object().is_some_and(|r| r.contains_key("bearer"))));
    let memory_only =
        op.get("operationId").and_then(Value::as_str).is_some_and(|id| MEMORY_ONLY.contains(&id));
    let responses = op.entry("responses").or_insert_with(|| json!({}));
    let responses = responses.as_object_mut().expect("responses is an object");
    let mut add = |status: &str, description: &str| {
        responses.entry(status).or_insert_with(|| error_response(description));
    };
    if has_body || has_params {
        add("400", "Malformed request: a parameter or the body is not what the schema says");
    }
    if has_body {
        add("413", "The body is larger than api.max_body");
        add("415", "The body is not application/json (code unsupported_media_type)");
    }
    if secured {
        add("401", "A bearer token is required here, or the one sent is invalid, expired or revoked");
    }
    if !memory_only {
        add("503", "The database or the shared state is unavailable; retry");
    }
    if let Some(r) = responses.get_mut("401").and_then(Value::as_object_mut) {
        header(
            r,
            "WWW-Authenticate",
            "The Bearer challenge (RFC 6750 §3)",
            json!({"type": "string", "pattern": "^Bearer "}),
        );
    }
    if let Some(r) = responses.get_mut("429").and_then(Value::as_object_mut) {
        header(
            r,
            "Retry-After",
            "Seconds until the limit lifts",
            json!({"type": "string", "pattern": "^[0-9]+$"}),
        );
    }
}

fn header(response: &mut Map<String, Value>, name: &str, description: &str, schema: Value) {
    let headers = response.entry("headers").or_insert_with(|| json!({}));
    if let Some(h) = headers.as_object_mut() {
        h.insert(name.to_owned(), json!({"description": description, "required": true, "schema": schema}));
    }
}

/// Adds `i64` bounds to every `int64` schema that has none.
fn bound_integers(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let integer = match m.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            if integer && m.get("format").and_then(Value::as_str) == Some("int64") {
                m.entry("minimum").or_insert(json!(i64::MIN));
                m.entry("maximum").or_insert(json!(i64::MAX));
            }
            m.values_mut().for_each(bound_integers);
        }
        Value::Array(a) => a.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_int64_gets_bounds_and_config_limits_are_written_in() {
        let api = ApiConfig { comment_max_len: 77, ..Default::default() };
        let auth = AuthConfig { min_password_len: 12, ..Default::default() };
        let doc = document(&api, &auth);
        let s = "/components/schemas";
        assert_eq!(
            doc.pointer(&format!("{s}/RegisterRequest/properties/password/minLength")),
            Some(&json!(12))
        );
        assert_eq!(doc.pointer(&format!("{s}/CommentRequest/properties/body/maxLength")), Some(&json!(77)));
        let mut unbounded = Vec::new();
        fn walk(v: &Value, at: String, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if m.get("format").and_then(Value::as_str) == Some("int64")
                        && !(m.contains_key("minimum") && m.contains_key("maximum"))
                    {
                        out.push(at.clone());
                    }
                    m.iter().for_each(|(k, x)| walk(x, format!("{at}/{k}"), out));
                }
                Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| walk(x, format!("{at}/{i}"), out)),
                _ => {}
            }
        }
        walk(&doc, String::new(), &mut unbounded);
        assert!(unbounded.is_empty(), "{unbounded:?}");
    }
}
