//! The two MCP protocol eras, as a client (the gateway, facing an upstream) sees them.
//!
//! - **Legacy** (2025-11-25 and earlier): an `initialize` handshake opens a session; the server
//!   may send requests (sampling, elicitation, roots) back to the client mid-call.
//! - **Stateless** (2026-07-28): no handshake and no session. Every request carries an envelope
//!   in `params._meta` (protocol version, client capabilities, client info) and, over HTTP, the
//!   `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers. `server/discover` describes the
//!   server. A server that needs client input answers `resultType: "input_required"` and the
//!   client retries with `inputResponses` (MRTR).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::jsonrpc;
use crate::upstream::ServerInfo;

/// The newest legacy (session) revision, which the gateway speaks to legacy peers.
pub const LEGACY_LATEST: &str = "2025-11-25";
/// Legacy revisions the gateway accepts from clients and upstreams.
pub const LEGACY_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The stateless revision.
pub const MODERN: &str = "2026-07-28";
/// Stateless revisions the gateway accepts.
pub const MODERN_VERSIONS: &[&str] = &[MODERN];

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// The envelope keys that exist only on the 2026 wire; stripped before a legacy peer sees them.
pub const ENVELOPE_KEYS: &[&str] = &[META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Legacy,
    Stateless,
}

pub fn is_modern_version(v: &str) -> bool {
    MODERN_VERSIONS.contains(&v)
}

/// The `server/discover` probe. It carries the full envelope, as every 2026 request must.
pub fn discover_request(client_caps: &Value, client_info: &Value) -> Value {
    jsonrpc::request(
        Value::Null,
        "server/discover",
        Some(json!({"_meta": {
            META_PROTOCOL_VERSION: MODERN,
            META_CLIENT_CAPABILITIES: client_caps,
            META_CLIENT_INFO: client_info,
        }})),
    )
}

/// The 2026-07-28 `subscriptions/listen` request for every list change (the stateless
/// replacement of the GET stream), with its routing headers.
pub fn listen_request(version: &str, client_caps: &Value, client_info: &Value) -> (Value, Vec<(String, String)>) {
    let msg = jsonrpc::request(
        "clawgate-listen".into(),
        "subscriptions/listen",
        Some(json!({
            "notifications": {"toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true},
            "_meta": {META_PROTOCOL_VERSION: version, META_CLIENT_CAPABILITIES: client_caps, META_CLIENT_INFO: client_info},
        })),
    );
    let headers = headers_for(&msg);
    (msg, headers)
}

pub fn initialize_request(client_caps: &Value, client_info: &Value) -> Value {
    jsonrpc::request(
        Value::Null,
        "initialize",
        Some(json!({
            "protocolVersion": LEGACY_LATEST,
            "capabilities": client_caps,
            "clientInfo": client_info,
        })),
    )
}

/// Reads a `server/discover` answer; `None` when the upstream is not a 2026 server (an error,
/// or no modern version in `supportedVersions`).
pub fn parse_discover(resp: &Value) -> Option<ServerInfo> {
    let result = resp.get("result")?;
    let versions = result.get("supportedVersions")?.as_array()?;
    let version = MODERN_VERSIONS
        .iter()
        .find(|v| versions.iter().any(|s| s.as_str() == Some(v)))?;
    Some(ServerInfo {
        era: Era::Stateless,
        protocol_version: (*version).to_owned(),
        capabilities: result.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        server_info: result
            .get("_meta")
            .and_then(|m| m.get(META_SERVER_INFO))
            .or_else(|| result.get("serverInfo"))
            .cloned()
            .unwrap_or(Value::Null),
        instructions: result.get("instructions").and_then(Value::as_str).map(str::to_owned),
    })
}

pub fn parse_initialize(resp: &Value) -> Result<ServerInfo, String> {
    if let Some(err) = resp.get("error") {
        return Err(format!("initialize failed: {err}"));
    }
    let result = resp.get("result").ok_or("initialize answer has no result")?;
    let version = result.get("protocolVersion").and_then(Value::as_str).ok_or("no protocolVersion")?;
    if !LEGACY_VERSIONS.contains(&version) {
        return Err(format!("unsupported protocol version `{version}`"));
    }
    Ok(ServerInfo {
        era: Era::Legacy,
        protocol_version: version.to_owned(),
        capabilities: result.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        server_info: result.get("serverInfo").cloned().unwrap_or(Value::Null),
        instructions: result.get("instructions").and_then(Value::as_str).map(str::to_owned),
    })
}

/// Per-request fields a caller may pass when the upstream is stateless.
#[derive(Debug, Default, Clone)]
pub struct Envelope {
    /// The end client's capabilities, when it declared them; the gateway's own otherwise.
    pub client_capabilities: Option<Value>,
    /// The log level a legacy client set with `logging/setLevel`; stamped as
    /// `io.modelcontextprotocol/logLevel` for a stateless upstream, which logs only on request.
    pub log_level: Option<String>,
    /// Extra HTTP headers (e.g. `Mcp-Param-*`) to send with the request.
    pub headers: Vec<(String, String)>,
}

/// Fits a request to the upstream's era. For a stateless upstream it writes the envelope into
/// `params._meta` and returns the routing headers; for a legacy one it strips the envelope keys
/// a 2026 client may have sent (a legacy server may reject them).
pub fn decorate_request(info: &ServerInfo, msg: &mut Value, env: &Envelope, gateway_caps: &Value, client_info: &Value) -> Vec<(String, String)> {
    match info.era {
        Era::Legacy => {
            if let Some(meta) = jsonrpc::params_mut(msg).and_then(|p| p.get_mut("_meta")).and_then(Value::as_object_mut) {
                for k in ENVELOPE_KEYS {
                    meta.remove(*k);
                }
            }
            if let Some(p) = jsonrpc::params_mut(msg)
                && p.get("_meta").and_then(Value::as_object).is_some_and(Map::is_empty) {
                    p.remove("_meta");
                }
            Vec::new()
        }
        Era::Stateless => {
            if let Some(obj) = msg.as_object_mut() {
                let params = obj.entry("params").or_insert_with(|| json!({}));
                if let Some(p) = params.as_object_mut() {
                    let meta = p.entry("_meta").or_insert_with(|| json!({}));
                    if let Some(m) = meta.as_object_mut() {
                        m.insert(META_PROTOCOL_VERSION.into(), info.protocol_version.clone().into());
                        let caps = env.client_capabilities.clone().unwrap_or_else(|| gateway_caps.clone());
                        m.insert(META_CLIENT_CAPABILITIES.into(), caps);
                        m.entry(META_CLIENT_INFO).or_insert_with(|| client_info.clone());
                        if let Some(level) = &env.log_level {
                            m.entry(META_LOG_LEVEL).or_insert_with(|| level.clone().into());
                        }
                    }
                }
            }
            let mut h = headers_for(msg);
            h.extend(env.headers.iter().cloned());
            h
        }
    }
}

/// Legacy methods that have no 2026-07-28 counterpart, answered `{}` by the gateway instead of
/// being sent to a stateless upstream: `ping` (no session to keep alive), `logging/setLevel`
/// (the level travels in each request's envelope instead) and resource (un)subscription
/// (updates arrive on the `subscriptions/listen` stream).
pub fn answered_locally(era: Era, method: &str) -> bool {
    era == Era::Stateless && matches!(method, "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe")
}

/// The 2026-07-28 routing headers for a request: `MCP-Protocol-Version` (from the envelope),
/// `Mcp-Method`, and `Mcp-Name` for the methods that name a target.
pub fn headers_for(msg: &Value) -> Vec<(String, String)> {
    let mut h = Vec::new();
    let Some(method) = jsonrpc::method(msg) else { return h };
    let params = jsonrpc::params(msg);
    if let Some(v) = params.and_then(|p| p.get("_meta")).and_then(|m| m.get(META_PROTOCOL_VERSION)).and_then(Value::as_str) {
        h.push(("mcp-protocol-version".into(), v.to_owned()));
    }
    h.push(("mcp-method".into(), encode_header_value(method)));
    if let Some(name) = name_of(method, params) {
        h.push(("mcp-name".into(), encode_header_value(name)));
    }
    h
}

/// The value `Mcp-Name` carries for a method, if any.
pub fn name_of<'a>(method: &str, params: Option<&'a Map<String, Value>>) -> Option<&'a str> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    params?.get(key)?.as_str()
}

/// Header values are sent verbatim when they are printable ASCII without edge whitespace, and
/// as `=?base64?…?=` otherwise.
pub fn encode_header_value(v: &str) -> String {
    let printable = v.bytes().all(|b| (0x20..0x7f).contains(&b));
    let edge_space = v.starts_with(' ') || v.ends_with(' ');
    let looks_encoded = v.starts_with("=?") && v.ends_with("?=");
    let plain = !v.is_empty() && printable && !edge_space && !looks_encoded;
    if plain {
        v.to_owned()
    } else {
        format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(v.as_bytes()))
    }
}

/// Decodes a header value written by [`encode_header_value`]; `None` for a malformed sentinel.
pub fn decode_header_value(v: &str) -> Option<String> {
    let v = v.trim_matches(|c| c == ' ' || c == '\t');
    match v.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(v.to_owned()),
    }
}

/// The `Mcp-Param-*` headers a tool call carries to a 2026-07-28 upstream: one for each
/// top-level property whose schema (the upstream's own) carries `"x-mcp-header"` and whose
/// argument is a string, number or boolean, encoded as [`check_param_headers`] reads them.
/// Built from the arguments as sent, never copied from the client's request.
pub fn param_headers(input_schema: &Value, arguments: Option<&Value>) -> Vec<(String, String)> {
    let Some(props) = input_schema.get("properties").and_then(Value::as_object) else { return Vec::new() };
    let mut out = Vec::new();
    for (arg, prop) in props {
        let Some(token) = prop.get("x-mcp-header").and_then(Value::as_str) else { continue };
        let value = match arguments.and_then(|a| a.get(arg)) {
            Some(Value::String(s)) => encode_header_value(s),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        out.push((format!("mcp-param-{}", token.to_ascii_lowercase()), value));
    }
    out
}

/// Checks `Mcp-Param-*` headers against a tool call's arguments: every top-level property whose
/// schema carries `"x-mcp-header": "<Token>"` must be mirrored by an `Mcp-Param-<Token>` header
/// with the same value, and vice versa. `headers` are (lower-case name, raw value) pairs.
/// Returns a message naming the first mismatch.
pub fn check_param_headers(input_schema: &Value, arguments: Option<&Value>, headers: &[(String, String)]) -> Result<(), String> {
    let Some(props) = input_schema.get("properties").and_then(Value::as_object) else { return Ok(()) };
    for (arg, prop) in props {
        let Some(token) = prop.get("x-mcp-header").and_then(Value::as_str) else { continue };
        let name = format!("mcp-param-{}", token.to_ascii_lowercase());
        let mut sent = headers.iter().filter(|(k, _)| *k == name);
        let header = sent.next().map(|(_, v)| v);
        if sent.next().is_some() {
            return Err(format!("Mcp-Param-{token} header sent more than once"));
        }
        let value = arguments.and_then(|a| a.get(arg)).filter(|v| !v.is_null());
        match (header, value) {
            (None, None) => {}
            (Some(_), None) => return Err(format!("Mcp-Param-{token} header present but argument `{arg}` is absent")),
            (None, Some(_)) => return Err(format!("argument `{arg}` requires the Mcp-Param-{token} header")),
            (Some(h), Some(v)) => {
                let decoded = decode_header_value(h).ok_or_else(|| format!("Mcp-Param-{token} header has a malformed base64 value"))?;
                let same = match v {
                    Value::String(s) => *s == decoded,
                    Value::Bool(b) => decoded == if *b { "true" } else { "false" },
                    Value::Number(n) => decoded.parse::<f64>().ok().zip(n.as_f64()).is_some_and(|(a, b)| a == b),
                    _ => false,
                };
                if !same {
                    return Err(format!("Mcp-Param-{token} header does not match the request body's `{arg}` argument"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the gateway sends upstream is what a 2026-07-28 server checks: every mirrored
    /// argument, whatever its characters, passes [`check_param_headers`]; a changed one fails.
    #[test]
    fn built_param_headers_pass_the_servers_check() {
        let schema = json!({"properties": {"region": {"type": "string", "x-mcp-header": "Region"}, "n": {"type": "number", "x-mcp-header": "N"}, "on": {"type": "boolean", "x-mcp-header": "On"}, "free": {"type": "string"}}});
        for region in ["eu", " padded ", "naïve", "=?base64?x?=", "", "line\nbreak"] {
            let args = json!({"region": region, "n": 2.5, "on": true, "free": "x"});
            let h = param_headers(&schema, Some(&args));
            assert_eq!(h.len(), 3, "{h:?}");
            assert!(h.iter().all(|(k, _)| k.starts_with("mcp-param-")), "{h:?}");
            assert_eq!(check_param_headers(&schema, Some(&args), &h), Ok(()), "{region:?}");
            let other = json!({"region": format!("{region}x"), "n": 2.5, "on": true});
            assert!(check_param_headers(&schema, Some(&other), &h).is_err());
        }
        assert!(param_headers(&schema, Some(&json!({"free": "x"}))).is_empty());
    }

    #[test]
    fn param_headers_mirror_arguments() {
        let schema = json!({"properties": {"region": {"type": "string", "x-mcp-header": "Region"}, "n": {"type": "integer", "x-mcp-header": "N"}, "free": {"type": "string"}}});
        let h = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        assert!(check_param_headers(&schema, Some(&json!({"region": "eu", "n": 42})), &h(&[("mcp-param-region", "eu"), ("mcp-param-n", "42.0")])).is_ok());
        assert!(check_param_headers(&schema, Some(&json!({"region": "eu"})), &h(&[("mcp-param-region", "us")])).unwrap_err().contains("does not match"));
        assert!(check_param_headers(&schema, Some(&json!({"region": "eu"})), &h(&[])).unwrap_err().contains("requires"));
        assert!(check_param_headers(&schema, Some(&json!({})), &h(&[("mcp-param-region", "eu")])).unwrap_err().contains("absent"));
        assert!(check_param_headers(&schema, Some(&json!({"region": "é"})), &h(&[("mcp-param-region", &encode_header_value("é"))])).is_ok());
    }

    #[test]
    fn header_values_roundtrip() {
        for v in ["tools/call", "héllo", " edge", "a\nb", "=?base64?x?="] {
            assert_eq!(decode_header_value(&encode_header_value(v)).as_deref(), Some(v));
        }
        assert_eq!(encode_header_value("echo"), "echo");
        assert_eq!(decode_header_value("=?base64?!!?="), None);
    }

    #[test]
    fn legacy_decoration_strips_the_envelope_only() {
        let info = ServerInfo { era: Era::Legacy, protocol_version: LEGACY_LATEST.into(), capabilities: json!({}), server_info: Value::Null, instructions: None };
        let mut msg = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{META_PROTOCOL_VERSION: MODERN, "progressToken": 3, "vendor/x": 1}}});
        assert!(decorate_request(&info, &mut msg, &Envelope::default(), &json!({}), &json!({})).is_empty());
        assert_eq!(msg["params"]["_meta"], json!({"progressToken": 3, "vendor/x": 1}));
    }

    #[test]
    fn stateless_decoration_adds_envelope_and_headers() {
        let info = ServerInfo { era: Era::Stateless, protocol_version: MODERN.into(), capabilities: json!({}), server_info: Value::Null, instructions: None };
        let mut msg = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"échо"}});
        let h = decorate_request(&info, &mut msg, &Envelope::default(), &json!({"elicitation":{}}), &json!({"name":"clawgate"}));
        assert_eq!(msg["params"]["_meta"][META_PROTOCOL_VERSION], MODERN);
        assert_eq!(msg["params"]["_meta"][META_CLIENT_CAPABILITIES], json!({"elicitation":{}}));
        assert!(h.contains(&("mcp-method".into(), "tools/call".into())));
        assert!(h.iter().any(|(k, v)| k == "mcp-name" && v.starts_with("=?base64?")));
    }
}
