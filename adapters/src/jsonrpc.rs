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

/// An upstream's response as the gateway received it: parsed, or, for a plain success, the
/// body as it came with the span of its `result`, so that a result nothing needs to change can
/// be relayed without being parsed into a [`Value`] and written out again.
#[derive(Debug)]
pub enum Answer {
    Parsed(Value),
    Raw(RawAnswer),
}

impl Answer {
    /// The response as a [`Value`] (parsing a raw one).
    pub fn into_value(self) -> Result<Value, serde_json::Error> {
        match self {
            Self::Parsed(v) => Ok(v),
            Self::Raw(r) => serde_json::from_slice(&r.body),
        }
    }
}

/// serde_json's recursion limit: a parse takes at most one fewer nested containers.
const PARSE_DEPTH: usize = 128;

/// A success response kept as bytes: see [`Answer`].
#[derive(Debug, Clone)]
pub struct RawAnswer {
    body: bytes::Bytes,
    result: std::ops::Range<usize>,
}

impl RawAnswer {
    /// `body` as a raw answer when it is a JSON-RPC 2.0 success response to `id`: one object
    /// with `"jsonrpc": "2.0"`, `"id": id`, a `result` and no `error` or `method`, its members
    /// named once each. Anything else (a batch, an error, another id, a duplicate member, text
    /// that is not JSON) is `None`, for the caller to parse as usual. The result may still be
    /// nested deeper than a parse takes: see [`RawAnswer::within_parse_depth`].
    pub fn parse(body: bytes::Bytes, id: u64) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            jsonrpc: std::borrow::Cow<'a, str>,
            id: u64,
            #[serde(borrow)]
            result: &'a serde_json::value::RawValue,
            error: Option<serde::de::IgnoredAny>,
            method: Option<serde::de::IgnoredAny>,
        }
        let env: Envelope<'_> = serde_json::from_slice(&body).ok()?;
        if env.jsonrpc != "2.0" || env.id != id || env.error.is_some() || env.method.is_some() {
            return None;
        }
        let text = env.result.get();
        // The raw value borrows from `body`: its span is where its bytes start within it.
        let start = (text.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
        let result = start..start.checked_add(text.len())?;
        (body.get(result.clone())? == text.as_bytes()).then_some(Self { body, result })
    }

    /// Whether the result nests no deeper than a parse of it takes (serde_json's limit, 127
    /// containers). Taking the raw value does not count nesting: a result relayed unparsed
    /// must be bounded like one whose labels parse it ([`RawAnswer::unique_result_value`]).
    pub fn within_parse_depth(&self) -> bool {
        !depth_exceeds(self.result(), PARSE_DEPTH - 1)
    }

    /// The `result` member's JSON text, exactly as the upstream sent it.
    pub fn result(&self) -> &[u8] {
        self.body.get(self.result.clone()).unwrap_or_default()
    }

    /// The `result` parsed.
    pub fn result_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(self.result())
    }

    /// The `result` parsed, or `None` when it is not JSON or an object in it names a member
    /// twice. A parse keeps the last of two such members and a client's parser may keep the
    /// first: a result relayed as bytes must mean one thing, or its labels, recorded from the
    /// parse, could miss what the client reads.
    pub fn unique_result_value(&self) -> Option<Value> {
        use serde::de::DeserializeSeed as _;
        let mut de = serde_json::Deserializer::from_slice(self.result());
        let v = unique::Unique.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(v)
    }

    /// The response the client gets: `{"jsonrpc":"2.0","id":<id>,"result":<the upstream's bytes>}`.
    pub fn write_response(&self, id: &Value, out: &mut Vec<u8>) {
        out.reserve(self.result.len() + 48);
        out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        write(id, out);
        out.extend_from_slice(br#","result":"#);
        out.extend_from_slice(self.result());
        out.push(b'}');
    }
}

/// A [`Value`] deserialiser that refuses an object naming a member twice; otherwise it builds
/// what `Value`'s own does.
mod unique {
    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};

    pub(super) struct Unique;

    impl<'de> DeserializeSeed<'de> for Unique {
        type Value = Value;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Unique {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(item) = seq.next_element_seed(Unique)? {
                items.push(item);
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(Unique)?;
                if out.insert(key, value).is_some() {
                    return Err(de::Error::custom("a member named twice"));
                }
            }
            Ok(Value::Object(out))
        }
    }
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

    /// A raw answer is taken only for a plain success to the request's own id, its result is
    /// the upstream's exact bytes, and the client's response is that result under the client's id.
    #[test]
    fn raw_answers_are_plain_successes_to_our_id_relayed_byte_for_byte() {
        let raw = |s: &str| RawAnswer::parse(bytes::Bytes::copy_from_slice(s.as_bytes()), 7);
        // Member order, spacing and number spelling as the upstream wrote them.
        let body = r#"{ "result" : {"n": 1e2, "z": 0, "a": "x\ny"}, "id": 7, "jsonrpc": "2.0" , "extra": [1]}"#;
        let a = raw(body).unwrap();
        assert_eq!(a.result(), br#"{"n": 1e2, "z": 0, "a": "x\ny"}"#);
        let mut out = Vec::new();
        a.write_response(&json!("client-1"), &mut out);
        assert_eq!(out, br#"{"jsonrpc":"2.0","id":"client-1","result":{"n": 1e2, "z": 0, "a": "x\ny"}}"#);
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), json!({"jsonrpc": "2.0", "id": "client-1", "result": {"n": 100.0, "z": 0, "a": "x\ny"}}));
        assert_eq!(Answer::Raw(a.clone()).into_value().unwrap(), serde_json::from_str::<Value>(body).unwrap());
        assert_eq!(a.result_value().unwrap(), json!({"n": 100.0, "z": 0, "a": "x\ny"}));
        assert_eq!(a.unique_result_value(), Some(json!({"n": 100.0, "z": 0, "a": "x\ny"})));
        // A result that means two things (a member named twice, at any depth) is not unique.
        let twice = raw(r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"a","text":"b"}]}}"#).unwrap();
        assert_eq!(twice.result_value().unwrap(), json!({"content": [{"type": "text", "text": "b"}]}));
        assert_eq!(twice.unique_result_value(), None);
        // Every kind of value parses as `Value` parses it.
        let all = r#"{"a":[null,true,false,-1,18446744073709551615,1.5e300,"\u00e9",{}],"b":{"c":[]}}"#;
        let all_raw = raw(&format!(r#"{{"jsonrpc":"2.0","id":7,"result":{all}}}"#)).unwrap();
        assert_eq!(all_raw.unique_result_value(), Some(serde_json::from_str::<Value>(all).unwrap()));
        // Escaped `jsonrpc` still reads "2.0".
        assert!(raw(r#"{"jsonrpc":"2\u002e0","id":7,"result":{}}"#).is_some());
        // No deeper than a parse of the result goes, with or without labels.
        let nested = |n: usize| format!(r#"{{"jsonrpc":"2.0","id":7,"result":{}{}}}"#, "[".repeat(n), "]".repeat(n));
        for n in PARSE_DEPTH - 8..PARSE_DEPTH + 8 {
            let r = raw(&nested(n)).unwrap();
            let parses = serde_json::from_str::<Value>(&format!("{}{}", "[".repeat(n), "]".repeat(n))).is_ok();
            assert_eq!((r.within_parse_depth(), r.unique_result_value().is_some()), (parses, parses), "{n} levels");
        }
        assert!(raw(&nested(PARSE_DEPTH - 8)).unwrap().within_parse_depth() && !raw(&nested(PARSE_DEPTH + 8)).unwrap().within_parse_depth());
        for not_raw in [
            r#"{"jsonrpc":"2.0","id":8,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":"7","result":{}}"#,
            r#"{"jsonrpc":"1.0","id":7,"result":{}}"#,
            r#"{"id":7,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"m"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"result":{},"error":{"code":1,"message":"m"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"x","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":7,"result":{},"result":{"b":1}}"#,
            r#"[{"jsonrpc":"2.0","id":7,"result":{}}]"#,
            r#"{"jsonrpc":"2.0","id":7,"result":{"#,
            r#"{"jsonrpc":"2.0","id":7,"result":{}} trailing"#,
            "",
        ] {
            assert!(raw(not_raw).is_none(), "{not_raw}");
        }
    }

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
