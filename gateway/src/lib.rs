//! clawgate: an MCP policy gateway that fronts MCP clients and federates upstream tool servers.
//!
//! # Layout
//! - [`config`]: the TOML config, validated into typed structs (errors name file, key, line).
//! - [`front`]: the Streamable HTTP front (both protocol eras on one endpoint) and the stdio front.
//! - [`session`]: legacy-era client sessions and the way back to a client.
//! - [`pipeline`]: the gateway core and the ordered call path of every request.
//! - [`authz`]: authentication (Biscuit tokens, API keys, anonymous) and the policy state the
//!   decide stage reads (token verifier, Cedar engine, argument schemas), swapped atomically.
//! - [`stages`]: the facts every stage of that path sees, and the rate-limit stage.
//! - [`catalog`]: federation — namespaced, merged tool/prompt lists and URI routing — with
//!   pins, quarantine, sanitising and operator overrides applied.
//! - [`pins`]: the lockfile (`clawgate.lock`).
//! - [`error`]: every failure, and the one place it becomes a JSON-RPC/HTTP error.
//! - [`admin`]: the operator API (quarantine report).
//! - [`audit`]: the hash-chained audit log.
//! - [`demo`]: the bundled demo upstream (`clawgate demo-upstream`).
//! - [`cli`]: the command line; [`policy_cli`]: `check`, `policy test|diff`, `schema`.
//!
//! Outward protocols (upstream transports) live in the `clawgate-adapters` crate.

pub mod admin;
pub mod audit;
pub mod authz;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod labels;
pub mod front;
pub mod pins;
pub mod pipeline;
pub mod policy_cli;
pub mod session;
pub mod stages;
pub mod tools_cli;

pub use config::Config;
pub use pipeline::Gateway;
