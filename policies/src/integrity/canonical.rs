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
                write_str(k, out);
                out.push(b':');
                write(child, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => array(items, out, write),
        Value::String(s) => write_str(s, out),
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

/// Appends a string exactly as canonical JSON writes it, which is exactly as serde_json escapes
/// it: `"` and `\\`, the five short escapes, and `\u00xx` (lowercase hex) for the other control
/// bytes; everything else as it is. Eight bytes at a time: long text with nothing to escape is
/// copied whole. Also the JSON-RPC writer's string writer (`clawgate_adapters::jsonrpc`).
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of the word is below 0x20, or is `"` or `\\` (exact for the word as a
    // whole: a borrow only ever flags bytes above one that is truly flagged).
    let needs_escape = |w: u64| {
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        (w.wrapping_sub(ONES * 0x20) & !w & HIGHS) | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) != 0
    };
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut clean = 0;
    let mut i = 0;
    while i < b.len() {
        if let Some(w) = b[i..].first_chunk::<8>()
            && !needs_escape(u64::from_le_bytes(*w))
        {
            i += 8;
            continue;
        }
        let c = b[i];
        let short = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0C => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x00..=0x1F => b'u',
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&b[clean..i]);
        out.extend_from_slice(&[b'\\', short]);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'0', b'0', HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xF)]]);
        }
        i += 1;
        clean = i;
    }
    out.extend_from_slice(&b[clean..]);
    out.push(b'"');
}

/// Appends an array of strings, in the order given (arrays keep their order in canonical JSON).
pub fn write_strs<'a>(items: impl IntoIterator<Item = &'a str>, out: &mut Vec<u8>) {
    array(items, out, write_str);
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

/// A number, boolean or null exactly as serde_json prints it, straight into `out`.
fn leaf(v: &Value, out: &mut Vec<u8>) {
    // Writing a plain value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// `sha256:<hex>` of the canonical JSON of a definition.
pub fn digest(v: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    write(v, &mut out);
    let hash = Sha256::digest(&out);
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

    /// Pins and audit chains were written with serde_json's escaper: the word-at-a-time one
    /// must match it byte for byte, for every ASCII byte (and some non-ASCII) at every offset of
    /// an eight-byte block, in keys, values and arrays of strings.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let long = "the quarterly report shows revenue growth ".repeat(50);
        let mut strings = vec![String::new(), long.clone(), format!("{long}\"\n{long}\\"), "\u{1}\u{1f}\"\\".repeat(9)];
        for c in (0u8..0x80).map(char::from).chain(['é', '\u{2028}', '😀']) {
            for at in 0..17 {
                let mut s: String = "abcdefghijklmnop".chars().take(at).collect();
                s.push(c);
                s.push_str("qrstuvwxyz");
                strings.push(s);
            }
        }
        for s in &strings {
            let mut out = Vec::new();
            write_str(s, &mut out);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
            let v = json!({ s.as_str(): [s, s] });
            let mut want = String::new();
            reference(&v, &mut want);
            assert_eq!(canonical_json(&v), want, "{s:?}");
            let mut out = Vec::new();
            write_strs([s.as_str()], &mut out);
            assert_eq!(out, serde_json::to_vec(&[s]).unwrap(), "{s:?}");
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
