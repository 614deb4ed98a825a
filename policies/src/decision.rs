//! The decision for one call: every engine's verdict combined. Deny wins; an engine error is a
//! deny; `Ask` only when nothing denies.

use crate::cedar::{DenyKind, Verdict};
use crate::token::TokenDenial;

/// Which engine decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Authentication: no usable credentials.
    Auth,
    Biscuit,
    Cedar,
    Schema,
    /// The gateway itself (approval flow, engine not ready, rate limits).
    Gateway,
    /// The data-flow label store.
    Labels,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Auth => "auth",
            EngineKind::Biscuit => "biscuit",
            EngineKind::Cedar => "cedar",
            EngineKind::Schema => "schema",
            EngineKind::Gateway => "gateway",
            EngineKind::Labels => "labels",
        }
    }
}

/// Why a call is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The token does not allow it (tool not granted, a check failed, expired).
    TokenDenied,
    /// The token is invalid (signature, revoked, malformed, over its limits).
    TokenInvalid,
    /// A Cedar forbid matched.
    Forbidden,
    /// No Cedar permit matched: default deny.
    NoPermit,
    /// An engine failed: fail closed.
    EngineError,
    /// The arguments do not match the tool's schema.
    InvalidArguments,
    /// A permit requires approval and the client cannot be asked.
    ApprovalRequired,
    /// The human declined, or did not answer in time.
    ApprovalDenied,
    /// The label store could not be reached in time: labels are unknown, so the call is
    /// denied (or its result withheld).
    LabelStoreUnavailable,
    /// The principal (or the principal on this tool) is over its `[rate_limit]`.
    RateLimited,
    /// The call would go through, but its decision record cannot be kept (the audit log's
    /// queue is full or its last write failed) and `[audit] on_failure = "deny"`.
    AuditUnavailable,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::TokenDenied => "token_denied",
            DenyReason::TokenInvalid => "token_invalid",
            DenyReason::Forbidden => "forbidden",
            DenyReason::NoPermit => "no_permit",
            DenyReason::EngineError => "engine_error",
            DenyReason::InvalidArguments => "invalid_arguments",
            DenyReason::ApprovalRequired => "approval_required",
            DenyReason::ApprovalDenied => "approval_denied",
            DenyReason::LabelStoreUnavailable => "label_store_unavailable",
            DenyReason::RateLimited => "rate_limited",
            DenyReason::AuditUnavailable => "audit_unavailable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    pub engine: EngineKind,
    /// The policies that decided (forbids that matched), when Cedar decided.
    pub policies: Vec<String>,
    /// Human-readable detail: never holds a secret or an argument value.
    pub detail: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.reason {
            DenyReason::TokenDenied => "the capability token does not allow this call",
            DenyReason::TokenInvalid => "the capability token is not valid",
            DenyReason::Forbidden => "forbidden by policy",
            DenyReason::NoPermit => "no policy permits this call",
            DenyReason::EngineError => "the policy engine could not decide, so the call is denied",
            DenyReason::InvalidArguments => "invalid arguments",
            DenyReason::ApprovalRequired => "this call needs human approval and the client cannot be asked",
            DenyReason::ApprovalDenied => "approval was not given",
            DenyReason::LabelStoreUnavailable => "the label store is unavailable, so data-flow labels are unknown",
            DenyReason::RateLimited => "too many calls",
            DenyReason::AuditUnavailable => "the audit log cannot record this call, so it is denied",
        };
        f.write_str(what)?;
        if !self.policies.is_empty() {
            write!(f, " ({})", self.policies.join(", "))?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// The outcome of the decide stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow { policies: Vec<String> },
    Ask { policy: String, message: String },
    Deny(Denial),
}

impl Decision {
    pub fn deny(reason: DenyReason, engine: EngineKind, detail: impl Into<String>) -> Self {
        Decision::Deny(Denial { reason, engine, policies: Vec::new(), detail: detail.into() })
    }

    pub fn is_deny(&self) -> bool {
        matches!(self, Decision::Deny(_))
    }

    /// `allow`, `ask` or `deny`.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Ask { .. } => "ask",
            Decision::Deny(_) => "deny",
        }
    }
}

/// Combines the token's and Cedar's verdicts. Deny wins (the token is reported first, as the
/// outer boundary); an engine error in either is a deny; `Ask` needs the token to allow.
pub fn combine(token: Option<Result<(), TokenDenial>>, cedar: Verdict) -> Decision {
    if let Some(Err(t)) = token {
        let reason = match t {
            TokenDenial::NotAllowed(_) => DenyReason::TokenDenied,
            TokenDenial::Limits => DenyReason::EngineError,
            _ => DenyReason::TokenInvalid,
        };
        return Decision::Deny(Denial { reason, engine: EngineKind::Biscuit, policies: Vec::new(), detail: t.to_string() });
    }
    match cedar {
        Verdict::Allow { policies } => Decision::Allow { policies },
        Verdict::Ask { policy, message } => Decision::Ask { policy, message },
        Verdict::Deny { kind, policies, detail } => {
            let reason = match kind {
                DenyKind::Forbidden => DenyReason::Forbidden,
                DenyKind::NoPermit => DenyReason::NoPermit,
                DenyKind::Error => DenyReason::EngineError,
            };
            Decision::Deny(Denial { reason, engine: EngineKind::Cedar, policies, detail })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_and_errors_deny() {
        let allow = || Verdict::Allow { policies: vec!["p".into()] };
        assert!(matches!(combine(None, allow()), Decision::Allow { .. }));
        assert!(matches!(combine(Some(Ok(())), allow()), Decision::Allow { .. }));
        assert!(combine(Some(Err(TokenDenial::NotAllowed("x".into()))), allow()).is_deny());
        assert!(combine(Some(Err(TokenDenial::Limits)), allow()).is_deny());
        let ask = Verdict::Ask { policy: "a".into(), message: "m".into() };
        assert!(combine(Some(Err(TokenDenial::Revoked)), ask).is_deny(), "a token deny beats an ask");
        let err = Verdict::Deny { kind: DenyKind::Error, policies: vec![], detail: "boom".into() };
        assert!(matches!(combine(Some(Ok(())), err), Decision::Deny(Denial { reason: DenyReason::EngineError, .. })));
    }
}
