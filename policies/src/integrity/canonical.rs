//! Canonical JSON and definition digests.
//!
//! A definition is pinned by the SHA-256 of its canonical JSON: object keys sorted by their
//! UTF-16 code units (RFC 8785 order; for the ASCII keys MCP uses this is byte order), no
//! whitespace, strings escaped as serde_json escapes them, numbers as serde_json prints them.
//! The whole definition object is covered — name, title, description, inputSchema,
//! outputSchema, annotations, `_meta` and any field an upstream adds — so that no change, however
//! small, goes unnoticed.

use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Writes `v` as canonical JSON.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(*k) {
                    write(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `sha256:<hex>` of the canonical JSON of a definition.
pub fn digest(v: &Value) -> String {
    let hash = Sha256::digest(canonical_json(v).as_bytes());
    format!("sha256:{}", hex::encode(hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "é"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"é","y":[1,2]},"b":1}"#);
        assert_eq!(digest(&a), digest(&b));
    }

    #[test]
    fn any_change_changes_the_digest() {
        let base = json!({"name": "t", "description": "d", "inputSchema": {"type": "object"}});
        let mut other = base.clone();
        other["description"] = "e".into();
        assert_ne!(digest(&base), digest(&other));
        let mut arr = json!({"a": [1, 2]});
        let d = digest(&arr);
        arr["a"] = json!([2, 1]);
        assert_ne!(d, digest(&arr), "array order is significant");
        assert!(digest(&base).starts_with("sha256:") && digest(&base).len() == 7 + 64);
    }
}
