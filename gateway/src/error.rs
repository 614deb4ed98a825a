//! Every way a client request can fail, and the **one** place where failures become JSON-RPC
//! errors and HTTP statuses. Messages are short, lower-case and leak no internals: details go to
//! the log, never to the client.

use clawgate_adapters::jsonrpc::{self, code};
use clawgate_adapters::{UpstreamError, era};
use http::StatusCode;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    // --- framing (front) ---
    #[error("parse error: {0}")]
    Parse(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("request body not received within {0:?} (`limits.client_read_timeout`)")]
    BodyTimeout(std::time::Duration),
    /// The body broke off or its framing was invalid (not a size limit).
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    #[error("JSON nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("origin `{0}` is not allowed")]
    ForbiddenOrigin(String),
    #[error("host `{0}` is not allowed")]
    ForbiddenHost(String),
    #[error("missing `Mcp-Session-Id` header: send `initialize` first")]
    SessionRequired,
    #[error("unknown or expired session")]
    UnknownSession,
    #[error("too many sessions")]
    TooManySessions,
    #[error("unsupported protocol version `{0}`")]
    BadProtocolHeader(String),
    // --- 2026-07-28 envelope ---
    #[error("unsupported protocol version")]
    UnsupportedVersion { requested: String },
    #[error("{0}")]
    HeaderMismatch(String),
    #[error("params._meta is missing the required envelope key(s): {0}")]
    MissingEnvelope(String),
    // --- routing ---
    #[error("method not found: `{}`", shown(.0))]
    MethodNotFound(String),
    #[error("unknown tool: `{}`", shown(.0))]
    UnknownTool(String),
    #[error("unknown prompt: `{}`", shown(.0))]
    UnknownPrompt(String),
    #[error("unknown resource: `{}`", shown(.0))]
    UnknownResource(String),
    #[error("invalid params: {0}")]
    InvalidParams(String),
    #[error("`{name}` is quarantined: {reason}; an operator can review it with `clawgate tools diff` and approve it with `clawgate tools approve`")]
    Quarantined { name: String, reason: String },
    // --- authorization ---
    #[error("{0}")]
    Unauthorized(String),
    #[error("denied: {0}")]
    Denied(clawgate_policies::decision::Denial),
    #[error("invalid arguments: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidArguments(Vec<clawgate_policies::args::ArgError>),
    // --- dispatch ---
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    #[error("the client did not answer within {0:?}")]
    ClientTimeout(std::time::Duration),
    #[error("the client cannot answer `{0}` requests")]
    ClientCannot(String),
    /// An upstream asked the client something MCP does not define for clients.
    #[error("`{}` is not a request the gateway relays to clients (only sampling, elicitation, roots and ping)", shown(.0))]
    NotAClientMethod(String),
    #[error("gateway is shutting down")]
    ShuttingDown,
}

impl CallError {
    pub fn code(&self) -> i64 {
        match self {
            Self::Parse(_) | Self::TooDeep(_) => code::PARSE_ERROR,
            Self::InvalidRequest(_) | Self::BodyTooLarge(_) | Self::BodyTimeout(_) | Self::BodyUnreadable(_) | Self::SessionRequired | Self::BadProtocolHeader(_) => code::INVALID_REQUEST,
            Self::ForbiddenOrigin(_) | Self::ForbiddenHost(_) | Self::UnknownSession | Self::TooManySessions => code::INVALID_REQUEST,
            Self::UnsupportedVersion { .. } => code::UNSUPPORTED_PROTOCOL_VERSION,
            Self::HeaderMismatch(_) => HEADER_MISMATCH,
            Self::MissingEnvelope(_) | Self::InvalidParams(_) | Self::UnknownTool(_) | Self::UnknownPrompt(_) => code::INVALID_PARAMS,
            Self::UnknownResource(_) => code::RESOURCE_NOT_FOUND,
            Self::Quarantined { .. } => QUARANTINED,
            Self::Unauthorized(_) => UNAUTHORIZED,
            Self::Denied(_) => DENIED,
            Self::InvalidArguments(_) => code::INVALID_PARAMS,
            Self::MethodNotFound(_) | Self::NotAClientMethod(_) => code::METHOD_NOT_FOUND,
            Self::Upstream(_) | Self::ClientTimeout(_) | Self::ClientCannot(_) | Self::ShuttingDown => code::INTERNAL_ERROR,
        }
    }

    /// The HTTP status for a failure raised by the front itself.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::ForbiddenOrigin(_) | Self::ForbiddenHost(_) => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::UnknownSession => StatusCode::NOT_FOUND,
            Self::TooManySessions => StatusCode::SERVICE_UNAVAILABLE,
            other => status_for_code(other.code()),
        }
    }

    /// The message the client sees. Upstream failures say which upstream and what kind of
    /// failure, never transport details (commands, URLs, OS errors).
    pub fn client_message(&self) -> String {
        match self {
            Self::Upstream(UpstreamError::Timeout(name, d)) => format!("upstream `{name}` did not answer within {d:?}"),
            Self::Upstream(UpstreamError::Unavailable(name, _) | UpstreamError::Handshake(name, _)) => {
                format!("upstream `{name}` is unavailable")
            }
            Self::Upstream(UpstreamError::Transport(name, e)) => match e {
                clawgate_adapters::transport::TransportError::Closed => format!("upstream `{name}` closed the connection before answering"),
                _ => format!("upstream `{name}` failed to answer"),
            },
            other => other.to_string(),
        }
    }

    pub fn data(&self) -> Option<Value> {
        match self {
            Self::UnsupportedVersion { requested } => Some(json!({"supported": era::MODERN_VERSIONS, "requested": requested})),
            Self::Denied(d) => Some(json!({"reason": d.reason.as_str(), "engine": d.engine.as_str(), "policies": d.policies})),
            Self::InvalidArguments(errs) => Some(json!({"errors": errs.iter().map(|e| json!({"path": e.path, "message": e.message})).collect::<Vec<_>>()})),
            _ => None,
        }
    }

    /// The JSON-RPC error response for this failure.
    pub fn to_response(&self, id: Value) -> Value {
        jsonrpc::error(id, self.code(), &self.client_message(), self.data())
    }
}

/// A name the client sent, as an error message quotes it: invisible and control characters
/// spelled out (`\u{202e}`), and cut after 200 characters so an error never grows with the
/// request.
fn shown(s: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for c in s.chars().take(MAX) {
        match c {
            '\'' | '"' | '\\' => out.push(c),
            _ => out.extend(c.escape_debug()),
        }
    }
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// clawgate: the credentials presented do not authenticate anyone (HTTP 401).
pub const UNAUTHORIZED: i64 = -32001;

/// clawgate: the policy decision denied the call.
pub const DENIED: i64 = -32050;

/// clawgate: the tool (prompt, template) is withheld until an operator approves it.
pub const QUARANTINED: i64 = -32051;

/// MCP 2026-07-28: an HTTP routing header disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;

/// On the 2026-07-28 wire, an error's JSON-RPC code decides the HTTP status.
pub fn status_for_code(code: i64) -> StatusCode {
    match code {
        code::PARSE_ERROR | code::INVALID_REQUEST | code::INVALID_PARAMS | HEADER_MISMATCH | -32021 | code::UNSUPPORTED_PROTOCOL_VERSION => {
            StatusCode::BAD_REQUEST
        }
        code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_client_sent_are_quoted_visibly_and_briefly() {
        assert_eq!(CallError::UnknownTool("up0__echo".into()).to_string(), "unknown tool: `up0__echo`");
        assert_eq!(CallError::UnknownTool("up0__ec\u{202E}ho\n".into()).to_string(), "unknown tool: `up0__ec\\u{202e}ho\\n`");
        assert_eq!(CallError::MethodNotFound("a\u{200B}b".into()).to_string(), "method not found: `a\\u{200b}b`");
        let long = "x".repeat(10_000);
        let m = CallError::UnknownPrompt(long).to_string();
        assert_eq!(m, format!("unknown prompt: `{}…`", "x".repeat(200)));
        assert_eq!(CallError::UnknownResource("é".repeat(200)).to_string(), format!("unknown resource: `{}`", "é".repeat(200)));
        assert_eq!(CallError::UnknownResource("file:///it's \"a\" b\\c".into()).to_string(), "unknown resource: `file:///it's \"a\" b\\c`");
    }
}
