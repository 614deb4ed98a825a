//! Biscuit capability tokens: minting, offline attenuation, verification (once per token, then
//! cached) and the per-call authorizer run under [`RunLimits`].
//!
//! # Datalog vocabulary
//!
//! The authority block of a minted token holds:
//! - `principal("alice")` and optionally `task("triage")`;
//! - `tool("<prefix>__<tool>")` for each tool the holder may call, or `tool("*")` for any;
//! - with a TTL, `check if time($t), $t <= <expiry>`.
//!
//! Per call the authorizer adds `call_tool("…")`, `call_upstream("…")`, `arg("name", value)` for
//! every scalar argument, and `time(now)`, then applies
//! `allow if call_tool($t), tool($t); allow if tool("*"); deny if true`.
//!
//! Attenuation appends a block of **checks** (`check if call_tool("demo__read_thread")`). Facts
//! in appended blocks are not visible to the authorizer's policies (Biscuit's default scope is
//! the authority block and the authorizer), so a holder can narrow a token but never widen it.
//!
//! Nothing here is wired into the call path yet: the gateway's authenticate and decide stages
//! still admit everything (see SECURITY.md). The CLI (`clawgate token …`) uses this module.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{AuthorizerBuilder, BlockBuilder, Term, date, string};
use biscuit_auth::datalog::RunLimits;
use biscuit_auth::{Algorithm, Biscuit, KeyPair, PrivateKey, PublicKey, UnverifiedBiscuit};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Limits on one authorizer run. A hostile token (thousands of facts, rules that explode) is
/// denied when it hits them instead of eating the gateway's CPU.
pub const LIMITS: RunLimits = RunLimits { max_facts: 1_000, max_iterations: 100, max_time: Duration::from_millis(2) };
/// Longest token accepted, in base64 characters.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
/// Verified tokens kept, by digest; the cache is cleared when it fills.
const CACHE: usize = 4_096;
/// Shape limits on attenuation blocks, checked once per token before any evaluation. Biscuit's
/// `RunLimits` are enforced between rule iterations, so a single iteration over a block of
/// thousands of facts joined with themselves runs for seconds before any limit is seen. So
/// appended blocks may hold checks only (no facts, no rules), at most this many, each query
/// joining at most [`MAX_BODY`] predicates.
const MAX_CHECKS: usize = 32;
const MAX_BODY: usize = 3;
const MAX_BLOCKS: usize = 16;

/// Why a token does not authorize a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenDenial {
    #[error("token is not valid base64 Biscuit or is too large")]
    Malformed,
    #[error("token signature does not verify against the root key")]
    BadSignature,
    #[error("token was revoked")]
    Revoked,
    #[error("token does not allow this call: {0}")]
    NotAllowed(String),
    #[error("token evaluation exceeded its limits")]
    Limits,
    #[error("token refused before evaluation: {0}")]
    Shape(String),
}

/// What to put in a new token.
#[derive(Debug, Clone, Default)]
pub struct MintSpec {
    pub principal: String,
    pub task: Option<String>,
    /// Allowed tools as clients name them; empty allows every tool.
    pub tools: Vec<String>,
    pub ttl: Option<Duration>,
}

/// A new root key pair: (private key hex, public key hex).
pub fn keygen() -> (String, String) {
    let kp = KeyPair::new();
    (kp.private().to_bytes_hex(), kp.public().to_bytes_hex())
}

pub fn public_key_from_hex(hex: &str) -> Result<PublicKey, String> {
    PublicKey::from_bytes_hex(hex.trim(), Algorithm::Ed25519).map_err(|e| format!("not an ed25519 public key: {e}"))
}

pub fn private_key_from_hex(hex: &str) -> Result<KeyPair, String> {
    let pk = PrivateKey::from_bytes_hex(hex.trim(), Algorithm::Ed25519).map_err(|e| format!("not an ed25519 private key: {e}"))?;
    Ok(KeyPair::from(&pk))
}

/// Mints a token signed by the root key; returns it in base64.
pub fn mint(root: &KeyPair, spec: &MintSpec, now: SystemTime) -> Result<String, String> {
    let e = |e: biscuit_auth::error::Token| e.to_string();
    let mut b = Biscuit::builder().fact(biscuit_auth::builder::fact("principal", &[string(&spec.principal)])).map_err(e)?;
    if let Some(task) = &spec.task {
        b = b.fact(biscuit_auth::builder::fact("task", &[string(task)])).map_err(e)?;
    }
    if spec.tools.is_empty() {
        b = b.fact(biscuit_auth::builder::fact("tool", &[string("*")])).map_err(e)?;
    }
    for t in &spec.tools {
        b = b.fact(biscuit_auth::builder::fact("tool", &[string(t)])).map_err(e)?;
    }
    if let Some(ttl) = spec.ttl {
        let params = HashMap::from([("expiry".to_owned(), date(&(now + ttl)))]);
        b = b.code_with_params("check if time($t), $t <= {expiry}", params, HashMap::new()).map_err(e)?;
    }
    b.build(root).map_err(e)?.to_base64().map_err(e)
}

/// Appends a block of Datalog checks (offline: no key needed). Only checks are accepted.
pub fn attenuate(token: &str, checks: &str) -> Result<String, String> {
    let t = UnverifiedBiscuit::from_base64(token.trim()).map_err(|e| format!("not a token: {e}"))?;
    let block = BlockBuilder::new().code(checks).map_err(|e| format!("invalid Datalog: {e}"))?;
    if block.checks.is_empty() || !block.facts.is_empty() || !block.rules.is_empty() || !block.scopes.is_empty() {
        return Err("an attenuation block holds checks only (`check if …`)".into());
    }
    t.append(block).map_err(|e| e.to_string())?.to_base64().map_err(|e| e.to_string())
}

/// A readable dump of a token's blocks (signature not verified).
pub fn inspect(token: &str) -> Result<String, String> {
    let t = UnverifiedBiscuit::from_base64(token.trim()).map_err(|e| format!("not a token: {e}"))?;
    let mut out = String::new();
    for i in 0..t.block_count() {
        out.push_str(&format!("block {i}{}:\n", if i == 0 { " (authority)" } else { "" }));
        for line in t.print_block_source(i).map_err(|e| e.to_string())?.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    let ids: Vec<String> = t.revocation_identifiers().iter().map(hex::encode).collect();
    out.push_str(&format!("revocation ids: {}\n", ids.join(", ")));
    Ok(out)
}

/// The facts about one call that the authorizer sees.
#[derive(Debug, Clone)]
pub struct CallFacts<'a> {
    pub tool: &'a str,
    pub upstream: &'a str,
    pub arguments: Option<&'a Value>,
    pub now: SystemTime,
}

/// Verifies tokens against the root key (once per distinct token) and authorizes calls.
pub struct Verifier {
    root: PublicKey,
    revoked: HashSet<String>,
    cache: Mutex<HashMap<[u8; 32], Arc<Biscuit>>>,
}

impl Verifier {
    pub fn new(root: PublicKey, revoked: impl IntoIterator<Item = String>) -> Self {
        Self { root, revoked: revoked.into_iter().map(|r| r.to_ascii_lowercase()).collect(), cache: Mutex::new(HashMap::new()) }
    }

    /// Parses and verifies a token, or returns the cached result of doing so.
    pub fn verify(&self, token: &str) -> Result<Arc<Biscuit>, TokenDenial> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenDenial::Malformed);
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).cloned();
        let biscuit = match cached {
            Some(b) => b,
            None => {
                let b = Arc::new(Biscuit::from_base64(token, self.root).map_err(|e| match e {
                    biscuit_auth::error::Token::Format(biscuit_auth::error::Format::Signature(_)) => TokenDenial::BadSignature,
                    biscuit_auth::error::Token::Format(biscuit_auth::error::Format::UnknownPublicKey) => TokenDenial::BadSignature,
                    _ => TokenDenial::Malformed,
                })?);
                check_shape(&b)?;
                let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if cache.len() >= CACHE {
                    cache.clear();
                }
                cache.insert(key, Arc::clone(&b));
                b
            }
        };
        // Revocation is checked on every use: a revocation list can change while a token is cached.
        if biscuit.revocation_identifiers().iter().any(|id| self.revoked.contains(&hex::encode(id))) {
            return Err(TokenDenial::Revoked);
        }
        Ok(biscuit)
    }

    /// Runs the authorizer for one call under [`LIMITS`]. Any engine error is a denial.
    pub fn authorize(&self, biscuit: &Biscuit, call: &CallFacts<'_>) -> Result<(), TokenDenial> {
        let run = || -> Result<(), biscuit_auth::error::Token> {
            let mut a = AuthorizerBuilder::new()
                .fact(biscuit_auth::builder::fact("call_tool", &[string(call.tool)]))?
                .fact(biscuit_auth::builder::fact("call_upstream", &[string(call.upstream)]))?
                .fact(biscuit_auth::builder::fact("time", &[date(&call.now)]))?;
            if let Some(Value::Object(args)) = call.arguments {
                for (k, v) in args.iter().take(64) {
                    let term = match v {
                        Value::String(s) => string(s),
                        Value::Bool(b) => Term::Bool(*b),
                        Value::Number(n) => match n.as_i64() {
                            Some(i) => Term::Integer(i),
                            None => string(&n.to_string()),
                        },
                        _ => continue,
                    };
                    a = a.fact(biscuit_auth::builder::fact("arg", &[string(k), term]))?;
                }
            }
            let mut authorizer = a
                .code("allow if call_tool($t), tool($t); allow if tool(\"*\"); deny if true;")?
                .set_limits(LIMITS)
                .build(biscuit)?;
            authorizer.authorize_with_limits(LIMITS)?;
            Ok(())
        };
        run().map_err(|e| match e {
            biscuit_auth::error::Token::RunLimit(_) => TokenDenial::Limits,
            biscuit_auth::error::Token::FailedLogic(l) => TokenDenial::NotAllowed(logic_reason(&l)),
            other => TokenDenial::NotAllowed(other.to_string()),
        })
    }
}

/// Refuses tokens whose appended blocks could make evaluation explode (see [`MAX_CHECKS`]).
fn check_shape(b: &Biscuit) -> Result<(), TokenDenial> {
    if b.block_count() > MAX_BLOCKS {
        return Err(TokenDenial::Shape(format!("more than {MAX_BLOCKS} blocks")));
    }
    for i in 1..b.block_count() {
        let src = b.print_block_source(i).map_err(|_| TokenDenial::Malformed)?;
        let parsed = biscuit_auth::parser::parse_block_source(&src).map_err(|_| TokenDenial::Malformed)?;
        if !parsed.facts.is_empty() || !parsed.rules.is_empty() {
            return Err(TokenDenial::Shape(format!("block {i} holds facts or rules; appended blocks may only hold checks")));
        }
        if parsed.checks.len() > MAX_CHECKS {
            return Err(TokenDenial::Shape(format!("block {i} holds more than {MAX_CHECKS} checks")));
        }
        if parsed.checks.iter().any(|(_, c)| c.queries.iter().any(|q| q.body.len() > MAX_BODY)) {
            return Err(TokenDenial::Shape(format!("a check in block {i} joins more than {MAX_BODY} predicates")));
        }
    }
    Ok(())
}

fn logic_reason(l: &biscuit_auth::error::Logic) -> String {
    match l {
        biscuit_auth::error::Logic::Unauthorized { checks, .. } if !checks.is_empty() => "a check in the token failed".into(),
        biscuit_auth::error::Logic::NoMatchingPolicy { .. } | biscuit_auth::error::Logic::Unauthorized { .. } => "the tool is not among the token's tools".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn setup() -> (KeyPair, Verifier) {
        let (private, public) = keygen();
        let root = private_key_from_hex(&private).unwrap();
        let v = Verifier::new(public_key_from_hex(&public).unwrap(), []);
        (root, v)
    }

    fn call<'a>(tool: &'a str, args: &'a Value, now: SystemTime) -> CallFacts<'a> {
        CallFacts { tool, upstream: "demo", arguments: Some(args), now }
    }

    #[test]
    fn mint_verify_authorize() {
        let (root, v) = setup();
        let now = SystemTime::now();
        let spec = MintSpec { principal: "alice".into(), task: Some("triage".into()), tools: vec!["demo__read_thread".into()], ttl: Some(Duration::from_secs(3600)) };
        let t = mint(&root, &spec, now).unwrap();
        let b = v.verify(&t).unwrap();
        let args = json!({"thread_id": "t-100"});
        assert_eq!(v.authorize(&b, &call("demo__read_thread", &args, now)), Ok(()));
        assert!(matches!(v.authorize(&b, &call("demo__send_email", &args, now)), Err(TokenDenial::NotAllowed(_))));
        // Expired: the TTL check fails later.
        let later = now + Duration::from_secs(7200);
        assert!(matches!(v.authorize(&b, &call("demo__read_thread", &args, later)), Err(TokenDenial::NotAllowed(r)) if r.contains("check")));
        assert!(inspect(&t).unwrap().contains("principal(\"alice\")"));
    }

    #[test]
    fn wrong_root_tampered_and_revoked_tokens_are_denied() {
        let (root, v) = setup();
        let (other, _) = setup();
        let now = SystemTime::now();
        let t = mint(&other, &MintSpec { principal: "mallory".into(), ..MintSpec::default() }, now).unwrap();
        assert_eq!(v.verify(&t).unwrap_err(), TokenDenial::BadSignature);
        let good = mint(&root, &MintSpec { principal: "bob".into(), ..MintSpec::default() }, now).unwrap();
        let mut bytes = good.clone().into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        assert!(v.verify(&String::from_utf8(bytes).unwrap()).is_err(), "tampered token");
        assert_eq!(v.verify("not a token").unwrap_err(), TokenDenial::Malformed);
        let ids = UnverifiedBiscuit::from_base64(&good).unwrap().revocation_identifiers();
        let revoking = Verifier::new(root.public(), [hex::encode(&ids[0])]);
        assert_eq!(revoking.verify(&good).unwrap_err(), TokenDenial::Revoked);
    }

    #[test]
    fn attenuation_only_narrows() {
        let (root, v) = setup();
        let now = SystemTime::now();
        let parent = mint(&root, &MintSpec { principal: "agent".into(), tools: vec!["demo__read_thread".into(), "demo__send_email".into()], ..MintSpec::default() }, now).unwrap();
        let child = attenuate(&parent, "check if call_tool(\"demo__read_thread\");").unwrap();
        let b = v.verify(&child).unwrap();
        let args = json!({});
        assert_eq!(v.authorize(&b, &call("demo__read_thread", &args, now)), Ok(()));
        assert!(v.authorize(&b, &call("demo__send_email", &args, now)).is_err(), "narrowed");
        // A block cannot add facts: widening is refused at attenuation...
        assert!(attenuate(&parent, "tool(\"demo__delete_all\");").is_err());
        // ...and a forged widening block (built directly) is ignored by the authorizer's policies.
        let forged = UnverifiedBiscuit::from_base64(&parent).unwrap().append(BlockBuilder::new().code("tool(\"*\");").unwrap()).unwrap().to_base64().unwrap();
        assert!(matches!(v.verify(&forged), Err(TokenDenial::Shape(_))), "a forged block with facts is refused");
        // Even if such a block got through, Biscuit's scoping keeps it from widening.
        let b = Biscuit::from_base64(&forged, root.public()).unwrap();
        assert!(v.authorize(&b, &call("demo__delete_all", &args, now)).is_err(), "facts in later blocks do not widen");
        // Argument constraints.
        let only_corp = attenuate(&parent, "check if call_tool(\"demo__send_email\"), arg(\"to\", $to), $to.ends_with(\"@corp.example\");").unwrap();
        let b = v.verify(&only_corp).unwrap();
        assert_eq!(v.authorize(&b, &call("demo__send_email", &json!({"to": "bob@corp.example"}), now)), Ok(()));
        assert!(v.authorize(&b, &call("demo__send_email", &json!({"to": "eve@evil.example"}), now)).is_err());
    }

    #[test]
    fn a_fact_explosion_is_denied_within_limits() {
        let (root, v) = setup();
        let now = SystemTime::now();
        let parent = mint(&root, &MintSpec { principal: "x".into(), ..MintSpec::default() }, now).unwrap();
        // A check whose evaluation needs far more facts than the limits allow.
        let mut facts = String::new();
        for i in 0..2000 {
            facts.push_str(&format!("n({i});"));
        }
        let hostile = UnverifiedBiscuit::from_base64(&parent).unwrap()
            .append(BlockBuilder::new().code(format!("{facts} pair($a, $b) <- n($a), n($b); check if pair(0, 1);")).unwrap())
            .unwrap()
            .to_base64()
            .unwrap();
        let t0 = std::time::Instant::now();
        assert!(matches!(v.verify(&hostile), Err(TokenDenial::Shape(_))));
        assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
        // A check-only block that joins too many predicates is refused the same way.
        let wide = attenuate(&parent, "check if arg($a, $b), arg($c, $d), arg($e, $f), arg($g, $h);").unwrap();
        assert!(matches!(v.verify(&wide), Err(TokenDenial::Shape(_))));
        // Within the shape limits, the run limits still bound a costly check: 64 arguments
        // joined three ways is 262,144 combinations.
        let costly = attenuate(&parent, "check if arg($a, $x), arg($b, $y), arg($c, $z), $x + $y + $z == -1;").unwrap();
        let b = v.verify(&costly).unwrap();
        let args: serde_json::Map<String, Value> = (0..64).map(|i| (format!("k{i}"), json!(i))).collect();
        let args = Value::Object(args);
        let t0 = std::time::Instant::now();
        assert!(v.authorize(&b, &call("demo__read_thread", &args, now)).is_err());
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }
}
