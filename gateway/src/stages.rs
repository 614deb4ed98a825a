//! The facts every stage of the call path sees, and the **rate-limit** stage, typed so that
//! [`crate::pipeline`] reads as the whole path, in order.
//!
//! Authentication, argument validation and the decision live in [`crate::authz`] (backed by
//! the `clawgate-policies` engine); data-flow labels in [`crate::labels`]. Rate limits are
//! here: [`RateLimiter`], built from `[rate_limit]`, over the pure GCRA limiter in
//! `clawgate_policies::ratelimit`. Limits are kept in memory, per gateway process: replicas do
//! not share them.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clawgate_policies::decision::{Denial, DenyReason, EngineKind};
use clawgate_policies::ratelimit::{Limiter, Quota, RetryAfter};
use serde_json::Value;

use crate::authz::Principal;
use crate::config::{RateLimitConfig, glob};

/// The facts about one call that the stages, the decision and the audit see.
#[derive(Debug)]
pub struct CallInfo<'a> {
    pub principal: &'a Principal,
    /// `tools/call`, `prompts/get` or `resources/read`.
    pub method: &'a str,
    /// The upstream's configured name.
    pub upstream: &'a str,
    /// The target as the client named it (namespaced tool or prompt name, or URI).
    pub target: &'a str,
    pub arguments: Option<&'a Value>,
    digest: OnceLock<[u8; 32]>,
}

impl<'a> CallInfo<'a> {
    pub fn new(principal: &'a Principal, method: &'a str, upstream: &'a str, target: &'a str, arguments: Option<&'a Value>) -> Self {
        Self { principal, method, upstream, target, arguments, digest: OnceLock::new() }
    }

    /// The call digest ([`crate::authz::call_digest`]: the credential, the target and the
    /// exact arguments), computed on first use. Only the audit records and approvals need it,
    /// so a gateway with neither never hashes the arguments.
    pub fn digest(&self) -> &[u8; 32] {
        self.digest.get_or_init(|| crate::authz::call_digest(self.principal, self.target, self.arguments))
    }
}

/// Stage "rate-limit": the principal-wide limit (`[rate_limit] calls/per`, keyed by principal)
/// and the first matching `[[rate_limit.tool]]` (keyed by principal and target). A call must
/// pass both; a call either refuses is counted by neither. Without `[rate_limit]` it never
/// limits.
#[derive(Debug, Default)]
pub struct RateLimiter {
    all: Option<Limit>,
    tools: Vec<(String, Limit)>,
}

#[derive(Debug)]
struct Limit {
    limiter: Limiter,
    /// How the limit reads in a denial: `10 calls per 1m for mail__send_*`.
    text: String,
}

impl Limit {
    fn new(quota: Quota, max_keys: usize, tool: Option<&str>) -> Result<Self, String> {
        let calls = if quota.calls() == 1 { "call" } else { "calls" };
        let mut text = format!("{} {calls} per {}", quota.calls(), fmt_duration(quota.per()));
        if quota.burst() != quota.calls() {
            text.push_str(&format!(" (burst {})", quota.burst()));
        }
        if let Some(t) = tool {
            text.push_str(&format!(" for {t}"));
        }
        let limiter = Limiter::new(quota, max_keys).map_err(|e| format!("rate_limit.{}: {e}", e.key()))?;
        Ok(Self { limiter, text })
    }

    fn denial(&self, r: RetryAfter) -> Denial {
        let full = if r.table_full { format!(" (the limiter already tracks its `max_keys` = {} keys)", self.limiter.max_keys()) } else { String::new() };
        let detail = format!("rate limit: {}{full}; retry after {}", self.text, fmt_retry(r.after));
        Denial { reason: DenyReason::RateLimited, engine: EngineKind::Gateway, policies: Vec::new(), detail }
    }
}

impl RateLimiter {
    /// The limits `[rate_limit]` configures (`None`: none).
    pub fn new(cfg: Option<&RateLimitConfig>) -> Result<Self, String> {
        let Some(cfg) = cfg else { return Ok(Self::default()) };
        Ok(Self {
            all: cfg.all.map(|q| Limit::new(q, cfg.max_keys, None)).transpose()?,
            tools: cfg.tools.iter().map(|t| Ok((t.name.clone(), Limit::new(t.quota, cfg.max_keys, Some(&t.name))?))).collect::<Result<_, String>>()?,
        })
    }

    /// One call by `principal` to `target` at `now`: allowed and counted, or a
    /// [`DenyReason::RateLimited`] denial saying which limit and how long to wait.
    pub fn check(&self, principal: &str, target: &str, now: Instant) -> Result<(), Denial> {
        // The tool's limit first: when it refuses, the principal-wide one is not touched.
        let tool = match self.tools.iter().find(|(pattern, _)| glob(pattern, target)) {
            Some((_, limit)) => {
                // Length-prefixed, so that no two (principal, target) pairs share a key.
                let key = format!("{}:{principal}{target}", principal.len());
                limit.limiter.check(&key, now).map_err(|r| limit.denial(r))?;
                Some((limit, key))
            }
            None => None,
        };
        if let Some(all) = &self.all
            && let Err(r) = all.limiter.check(principal, now)
        {
            if let Some((limit, key)) = tool {
                limit.limiter.refund(&key);
            }
            return Err(all.denial(r));
        }
        Ok(())
    }
}

/// `1m`, `90s`, `1500ms`: the largest unit that divides the duration.
fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms > 0 && ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms > 0 && ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms > 0 && ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// Seconds with one decimal, rounded up: a client that waits that long is allowed.
fn fmt_retry(d: Duration) -> String {
    let tenths = d.as_nanos().div_ceil(100_000_000).max(1);
    format!("{}.{}s", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitTool;

    fn cfg(all: Option<(u64, u64)>, tools: &[(&str, u64, u64)]) -> RateLimitConfig {
        let q = |calls, secs| Quota::new(calls, Duration::from_secs(secs), None).unwrap();
        RateLimitConfig {
            all: all.map(|(c, s)| q(c, s)),
            max_keys: 1000,
            tools: tools.iter().map(|&(name, c, s)| RateLimitTool { name: name.into(), quota: q(c, s) }).collect(),
        }
    }

    #[test]
    fn no_config_never_limits() {
        let r = RateLimiter::new(None).unwrap();
        let now = Instant::now();
        assert!((0..1000).all(|_| r.check("p", "t", now).is_ok()));
    }

    #[test]
    fn principal_wide_and_first_matching_tool_rule() {
        let r = RateLimiter::new(Some(&cfg(Some((5, 60)), &[("mail__send_*", 2, 60), ("mail__*", 1, 60)]))).unwrap();
        let now = Instant::now();
        assert!(r.check("alice", "mail__send_email", now).is_ok());
        assert!(r.check("alice", "mail__send_sms", now).is_ok(), "per tool, not per rule");
        assert!(r.check("alice", "mail__send_email", now).is_ok(), "the first matching rule (2 calls) applies, not the later `mail__*` (1 call)");
        let d = r.check("alice", "mail__send_email", now).unwrap_err();
        assert_eq!((d.reason, d.engine), (DenyReason::RateLimited, EngineKind::Gateway));
        assert_eq!(d.detail, "rate limit: 2 calls per 1m for mail__send_*; retry after 30.0s");
        assert!(r.check("bob", "mail__send_email", now).is_ok(), "per principal");
        // The principal-wide limit: alice has used 3 of 5 (the refused call did not count).
        assert!(r.check("alice", "mail__read", now).is_ok());
        assert!(r.check("alice", "other", now).is_ok());
        let d = r.check("alice", "other", now).unwrap_err();
        assert_eq!(d.detail, "rate limit: 5 calls per 1m; retry after 12.0s");
    }

    #[test]
    fn a_call_the_principal_wide_limit_refuses_does_not_count_against_the_tool() {
        let r = RateLimiter::new(Some(&cfg(Some((1, 60)), &[("t", 2, 3600)]))).unwrap();
        let now = Instant::now();
        assert!(r.check("p", "u", now).is_ok());
        for _ in 0..5 {
            assert!(r.check("p", "t", now).unwrap_err().detail.contains("rate limit: 1 call per 1m;"));
        }
        let later = now + Duration::from_secs(60);
        assert!(r.check("p", "t", later).is_ok());
        let more = later + Duration::from_secs(60);
        assert!(r.check("p", "t", more).is_ok(), "the refused calls were refunded: the tool limit still has its second call");
        assert!(r.check("p", "t", more + Duration::from_secs(60)).unwrap_err().detail.starts_with("rate limit: 2 calls per 1h for t;"));
    }

    #[test]
    fn formats() {
        assert_eq!((fmt_duration(Duration::from_secs(60)), fmt_duration(Duration::from_secs(90)), fmt_duration(Duration::from_millis(1500)), fmt_duration(Duration::from_secs(7200))), ("1m".into(), "90s".into(), "1500ms".into(), "2h".into()));
        assert_eq!((fmt_retry(Duration::from_millis(1150)), fmt_retry(Duration::from_millis(1200)), fmt_retry(Duration::from_nanos(1))), ("1.2s".into(), "1.2s".into(), "0.1s".into()));
    }
}
