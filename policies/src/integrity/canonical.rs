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
    let mut out = Vec::with_capacity(256);
    write(v, &mut out);
    // Only serde_json's own output and ASCII punctuation were written: always UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends the canonical JSON of `v` to `out`.
pub fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            // Sorted with their values: no lookup (and no key hashing) per key.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            sort_keys(&mut entries, |e| e.0);
            out.push(b'{');
            for (i, (k, child)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                leaf(k, out);
                out.push(b':');
                write(child, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => array(items, out, write),
        other => leaf(other, out),
    }
}

/// Sorts an object's entries into canonical key order: by UTF-16 code units, which for ASCII
/// keys is byte order (compared without re-encoding). For writers that emit canonical JSON
/// without building a [`Value`] first.
pub fn sort_keys<T>(entries: &mut [T], key: impl Fn(&T) -> &str) {
    if entries.iter().all(|e| key(e).is_ascii()) {
        entries.sort_unstable_by(|a, b| key(a).cmp(key(b)));
    } else {
        entries.sort_by(|a, b| key(a).encode_utf16().cmp(key(b).encode_utf16()));
    }
}

/// Appends a string exactly as canonical JSON writes it (serde_json's escaping).
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    leaf(s, out);
}

/// Appends an array of strings, in the order given (arrays keep their order in canonical JSON).
pub fn write_strs<'a>(items: impl IntoIterator<Item = &'a str>, out: &mut Vec<u8>) {
    array(items, out, leaf);
}

/// An array: `each` writes every item, in order, between commas.
fn array<T>(items: impl IntoIterator<Item = T>, out: &mut Vec<u8>, each: impl Fn(T, &mut Vec<u8>)) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(item, out);
    }
    out.push(b']');
}

/// A string, number, boolean or null exactly as serde_json prints it, straight into `out`.
fn leaf<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    // Writing a plain value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
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

    /// The writer before it wrote into one buffer: the output must not change by a byte, or
    /// every pin and audit chain written before would stop verifying.
    fn reference(v: &Value, out: &mut String) {
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
                    reference(&map[*k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    reference(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    #[test]
    fn output_is_byte_identical_to_the_reference_writer() {
        let cases = [
            json!(null),
            json!({"b": 1, "a": [true, false, null, -0.0, 1.5e300, -12, 18446744073709551615u64]}),
            json!({"ctrl": "\u{0}\u{7}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}", "quote\"\\": "é😀\u{2028}", "z": {}, "": []}),
            // Keys whose UTF-16 order differs from their byte order.
            json!({"\u{ff61}": 1, "\u{1f600}": 2, "a": 3, "\u{e9}": 4}),
            json!({"nested": {"b": [{"y": 1, "x": {"k": "v"}}], "a": "s"}}),
        ];
        for v in &cases {
            let mut want = String::new();
            reference(v, &mut want);
            assert_eq!(canonical_json(v), want, "{v}");
        }
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
