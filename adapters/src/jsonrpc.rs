//! JSON-RPC 2.0 framing shared by every transport.
//!
//! Messages stay raw `serde_json::Value` objects (with `preserve_order`), so that a relay keeps
//! every field it does not understand: unknown methods, vendor fields and `_meta` pass through
//! untouched. Only the few fields the gateway rewrites (ids, names, progress tokens) are touched,
//! through the helpers here.

use clawgate_policies::integrity::canonical::write_str;
use serde_json::{Map, Value};

/// The three shapes a JSON-RPC message can take, decided by which members it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has `method` and `id`.
    Request,
    /// Has `method` and no `id`.
    Notification,
    /// Has `id` and `result` or `error`, no `method`.
    Response,
}

/// Classifies a message, or `None` when it is not a JSON-RPC 2.0 message at all.
pub fn kind(msg: &Value) -> Option<Kind> {
    let obj = msg.as_object()?;
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return None;
    }
    let has_id = obj.get("id").is_some_and(valid_id);
    match obj.get("method") {
        Some(Value::String(_)) if has_id => Some(Kind::Request),
        Some(Value::String(_)) if obj.get("id").is_none() => Some(Kind::Notification),
        Some(_) => None,
        None if has_id && (obj.contains_key("result") || obj.contains_key("error")) => {
            Some(Kind::Response)
        }
        // A response to a request whose id could not be read carries `id: null`.
        None if obj.get("id") == Some(&Value::Null) && obj.contains_key("error") => {
            Some(Kind::Response)
        }
        None => None,
    }
}

/// JSON-RPC ids are strings or integers (MCP forbids `null` ids on requests).
pub fn valid_id(id: &Value) -> bool {
    matches!(id, Value::String(_)) || id.as_i64().is_some() || id.as_u64().is_some()
}

pub fn method(msg: &Value) -> Option<&str> {
    msg.get("method").and_then(Value::as_str)
}

pub fn id(msg: &Value) -> Option<&Value> {
    msg.get("id")
}

pub fn params(msg: &Value) -> Option<&Map<String, Value>> {
    msg.get("params").and_then(Value::as_object)
}

pub fn params_mut(msg: &mut Value) -> Option<&mut Map<String, Value>> {
    msg.get_mut("params").and_then(Value::as_object_mut)
}

/// `params._meta.progressToken`, if the request asks for progress.
pub fn progress_token(msg: &Value) -> Option<&Value> {
    params(msg)?.get("_meta")?.get("progressToken")
}

/// Builds a request. `params` is omitted when `None`.
pub fn request(id: Value, method: &str, params: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("jsonrpc".into(), "2.0".into());
    m.insert("id".into(), id);
    m.insert("method".into(), method.into());
    if let Some(p) = params {
        m.insert("params".into(), p);
    }
    Value::Object(m)
}

pub fn notification(method: &str, params: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("jsonrpc".into(), "2.0".into());
    m.insert("method".into(), method.into());
    if let Some(p) = params {
        m.insert("params".into(), p);
    }
    Value::Object(m)
}

pub fn result(id: Value, result: Value) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn error(id: Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut e = Map::new();
    e.insert("code".into(), code.into());
    e.insert("message".into(), message.into());
    if let Some(d) = data {
        e.insert("data".into(), d);
    }
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": Value::Object(e)})
}

/// Standard and MCP error codes used across the gateway.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// MCP: the requested resource does not exist.
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// MCP 2026-07-28: the request's protocol version is not supported.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// Returns `true` when the JSON text nests objects/arrays deeper than `max`.
///
/// This runs over the raw bytes before parsing, in one pass with no allocation, so an over-deep
/// document is refused before serde recurses into it. Brackets inside strings do not count.
pub fn depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            // Inside a string only `"` and `\\` matter: jump from one to the next.
            b'"' => loop {
                match memchr::memchr2(b'"', b'\\', bytes.get(i..).unwrap_or_default()) {
                    None => return false,
                    Some(at) if bytes.get(i + at) == Some(&b'\\') => i += at + 2,
                    Some(at) => {
                        i += at + 1;
                        break;
                    }
                }
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A message as compact JSON: byte for byte what `serde_json::to_vec` writes (member order kept,
/// numbers printed by serde_json), with strings scanned eight bytes at a time. Relayed results
/// are mostly long clean strings, and serde_json looks at each byte in turn.
pub fn to_vec(msg: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(msg, &mut out);
    out
}

/// Appends `v` as compact JSON (see [`to_vec`]).
pub fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // Writing a number into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write(item, out);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_messages() {
        assert_eq!(kind(&json!({"jsonrpc":"2.0","id":1,"method":"x"})), Some(Kind::Request));
        assert_eq!(kind(&json!({"jsonrpc":"2.0","method":"x"})), Some(Kind::Notification));
        assert_eq!(kind(&json!({"jsonrpc":"2.0","id":"a","result":{}})), Some(Kind::Response));
        assert_eq!(kind(&json!({"jsonrpc":"2.0","id":null,"error":{}})), Some(Kind::Response));
        assert_eq!(kind(&json!({"jsonrpc":"1.0","id":1,"method":"x"})), None);
        assert_eq!(kind(&json!({"jsonrpc":"2.0","id":{},"method":"x"})), None);
        assert_eq!(kind(&json!({"jsonrpc":"2.0","id":null,"method":"x"})), None);
        assert_eq!(kind(&json!([1])), None);
    }

    #[test]
    fn depth_scan_ignores_strings_and_counts_nesting() {
        assert!(!depth_exceeds(br#"{"a":[1,{"b":"[[[[[["}]}"#, 3));
        assert!(depth_exceeds(br#"{"a":[1,{"b":[]}]}"#, 3));
        assert!(!depth_exceeds(br#"{"a":"\"[[[[\\"}"#, 1));
        let deep = "[".repeat(10_000);
        assert!(depth_exceeds(deep.as_bytes(), 64));
    }

    /// The fast writer is serde_json's writer, byte for byte: every ASCII byte and some
    /// non-ASCII at every offset of an eight-byte block, long clean runs, nesting, keys that need
    /// escaping, every kind of number.
    #[test]
    fn to_vec_is_serde_json_byte_for_byte() {
        let mut strings: Vec<String> = Vec::new();
        for c in (0u8..0x80).map(char::from).chain(['é', '\u{2028}', '\u{7f}', '😀']) {
            for at in 0..17 {
                let mut t = "abcdefghijklmnop".chars().take(at).collect::<String>();
                t.push(c);
                t.push_str("qrstuvwxyz");
                strings.push(t);
            }
        }
        let long = "the quarterly report shows revenue growth ".repeat(400);
        strings.extend([String::new(), long.clone(), format!("{long}\"\n{long}\\"), "\u{1}\u{1f}\"\\".repeat(9)]);
        for t in &strings {
            let v = Value::String(t.clone());
            assert_eq!(to_vec(&v), serde_json::to_vec(&v).unwrap(), "{t:?}");
        }
        let numbers = json!([0, -1, 1.5, -0.0, 1e300, 5e-324, 0.1, u64::MAX, i64::MIN, 12345678901234567890u64, 3.0]);
        let nested = json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": long}], "isError": false, "n": null, "a\"b\u{1}": {"": []}, "x": [[], {}, [true, false, null]]}, "numbers": numbers});
        assert_eq!(to_vec(&nested), serde_json::to_vec(&nested).unwrap());
        let keys: serde_json::Map<String, Value> = strings.iter().take(300).map(|k| (k.clone(), Value::from(k.len()))).collect();
        let keys = Value::Object(keys);
        assert_eq!(to_vec(&keys), serde_json::to_vec(&keys).unwrap());
    }
}
