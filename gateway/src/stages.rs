//! The seams of the call path that later work fills in, typed so that [`crate::pipeline`]
//! reads as the whole path, in order.
//!
//! Authentication, argument validation and the decision live in [`crate::authz`] (backed by
//! the `clawgate-policies` engine); data-flow labels in [`crate::labels`]. What is still a
//! seam: **rate-limit**, which never limits yet.

use serde_json::Value;

/// The facts about one call that the stages, the decision and the audit see.
#[derive(Debug)]
pub struct CallInfo<'a> {
    /// `tools/call`, `prompts/get` or `resources/read`.
    pub method: &'a str,
    /// The upstream's configured name.
    pub upstream: &'a str,
    /// The target as the client named it (namespaced tool or prompt name, or URI).
    pub target: &'a str,
    pub arguments: Option<&'a Value>,
}

/// The rate-limit stage refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited;

/// Stage "rate-limit". Never limits yet.
pub fn rate_limit(_call: &CallInfo<'_>) -> Result<(), RateLimited> {
    Ok(())
}
