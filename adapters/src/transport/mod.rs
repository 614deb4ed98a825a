//! Raw JSON-RPC transports to one upstream server. They move messages and nothing else: MCP
//! semantics (handshake, id remapping, routing) live in [`crate::upstream`].

pub mod http;
mod inline;
pub mod stdio;

use serde_json::Value;

/// Something a transport received from the upstream.
#[derive(Debug)]
pub enum Inbound {
    /// A JSON-RPC message. `related_to` is the id of our request on whose response stream it
    /// arrived, when the transport knows (Streamable HTTP does, stdio does not).
    Message { msg: Value, related_to: Option<u64> },
    /// Our request `id` failed at the transport level (HTTP error, stream cut, ...).
    Failed { id: u64, error: TransportError },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("upstream process is not running")]
    NotRunning,
    #[error("could not start upstream process `{command}`: {reason}")]
    Spawn { command: String, reason: String },
    #[error("upstream closed the connection")]
    Closed,
    #[error("upstream HTTP request failed: {0}")]
    Http(String),
    #[error("upstream answered HTTP {status}")]
    Status { status: u16 },
    #[error("upstream session expired")]
    SessionExpired,
    #[error("upstream sent an invalid message: {0}")]
    Invalid(String),
}

/// Extra HTTP headers that a 2026-07-28 request carries (`Mcp-Method`, `Mcp-Name`, ...).
pub type ExtraHeaders = Vec<(String, String)>;
