//! The fronts: how clients reach the gateway. Both frame and limit input, settle the protocol
//! era, then hand each message to [`crate::pipeline::Gateway`].

pub mod http;
pub mod stdio;

use clawgate_adapters::jsonrpc;
use serde_json::Value;

use crate::error::CallError;

/// Parses one client message under the configured limits: size, then nesting depth (checked on
/// the raw bytes before serde recurses), then JSON, then JSON-RPC shape.
pub fn parse_message(bytes: &[u8], max_bytes: usize, max_depth: usize) -> Result<Value, CallError> {
    if bytes.len() > max_bytes {
        return Err(CallError::BodyTooLarge(max_bytes));
    }
    if jsonrpc::depth_exceeds(bytes, max_depth) {
        return Err(CallError::TooDeep(max_depth));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| CallError::Parse(e.to_string()))?;
    if v.is_array() {
        return Err(CallError::InvalidRequest("JSON-RPC batches are not supported".into()));
    }
    if jsonrpc::kind(&v).is_none() {
        return Err(CallError::InvalidRequest("not a JSON-RPC 2.0 request, notification or response".into()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_before_parsing() {
        assert!(matches!(parse_message(&[b' '; 100], 10, 8), Err(CallError::BodyTooLarge(10))));
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(parse_message(deep.as_bytes(), 1 << 20, 64), Err(CallError::TooDeep(64))));
        assert!(matches!(parse_message(b"{nope", 100, 8), Err(CallError::Parse(_))));
        assert!(matches!(parse_message(b"[]", 100, 8), Err(CallError::InvalidRequest(_))));
        assert!(matches!(parse_message(br#"{"id":1,"method":"x"}"#, 100, 8), Err(CallError::InvalidRequest(_))));
        assert!(parse_message(br#"{"jsonrpc":"2.0","id":1,"method":"x"}"#, 100, 8).is_ok());
    }
}
