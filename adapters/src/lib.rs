//! clawgate's outward-facing adapters: everything that talks to the world beyond the gateway.
//!
//! # Layout
//! - [`jsonrpc`]: raw JSON-RPC framing helpers and input limits shared by all transports.
//! - [`sse`]: a bounded Server-Sent Events decoder/encoder.
//! - [`era`]: the two MCP protocol eras (2025-11-25 sessions, 2026-07-28 stateless) as seen by
//!   a client: handshake messages and per-request decoration.
//! - [`transport`]: raw transports to one upstream (child process over stdio, Streamable HTTP).
//! - [`upstream`]: one supervised upstream connection with id remapping, timeouts, cancellation
//!   and routing of server-initiated messages.
//! - [`redis_log`]: bounded per-key append-only logs in Redis (the shared label store).
//! - [`wake`]: polling a task's halves again instead of waking it, for hyper's hand-overs
//!   inside one task.

pub mod era;
pub mod jsonrpc;
pub mod redis_log;
pub mod sse;
pub mod transport;
pub mod upstream;
pub mod wake;

pub use upstream::{CallOpts, Related, ServerInfo, TransportSpec, Upstream, UpstreamError, UpstreamEvent, UpstreamSpec};
