//! The typed seams of the call path that later work fills in.
//!
//! Each stage has its final signature so that [`crate::pipeline`] reads as the whole path, in
//! order. **Today they do nothing:** authentication yields the anonymous principal, validation
//! and labelling accept everything, the decision allows every call, the rate limit never
//! limits, post-processing returns results unchanged and the audit is a no-op. clawgate makes
//! no security claim until the policy engine lands; SECURITY.md says the same.

use serde_json::Value;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials were presented.
    Anonymous,
}

/// The facts about one call that the decision and the audit see.
#[derive(Debug)]
pub struct CallInfo<'a> {
    /// `tools/call`, `prompts/get`, `resources/read`, ...
    pub method: &'a str,
    /// The upstream's configured name.
    pub upstream: &'a str,
    /// The target as the client named it (namespaced tool or prompt name, or URI).
    pub target: &'a str,
    pub arguments: Option<&'a Value>,
}

/// The outcome of the decide stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { reason: DenyReason },
}

/// Why a call was denied; each maps to a stable JSON-RPC error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    Policy,
}

/// Stage "authenticate": credentials from the front → a principal. Always anonymous for now.
pub fn authenticate(_credentials: Option<&str>) -> Principal {
    Principal::Anonymous
}

/// Stage "validate": arguments against the pinned input schema. Accepts everything for now.
pub fn validate(_call: &CallInfo<'_>) -> Result<(), String> {
    Ok(())
}

/// Stage "label": provenance of argument values. Records nothing for now.
pub fn label(_call: &CallInfo<'_>) {}

/// Stage "decide": the authorization decision. Allows everything for now.
pub fn decide(_principal: &Principal, _call: &CallInfo<'_>) -> Decision {
    Decision::Allow
}

/// The rate-limit stage refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited;

/// Stage "rate-limit". Never limits for now.
pub fn rate_limit(_principal: &Principal, _call: &CallInfo<'_>) -> Result<(), RateLimited> {
    Ok(())
}

/// Stage "post-process": sanitising and result labels. Returns the result unchanged for now.
pub fn post_process(_call: &CallInfo<'_>, _response: &mut Value) {}

/// Stage "audit": one record per decision. A no-op for now.
pub fn audit(_principal: &Principal, _call: &CallInfo<'_>, _decision: &Decision, _ok: bool) {}
