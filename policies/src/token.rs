//! Biscuit capability tokens: minting, offline attenuation, verification (once per token, then
//! cached) and the per-call authorizer run under [`RunLimits`].
//!
//! # Datalog vocabulary
//!
//! The authority block of a minted token holds:
//! - `principal("alice")`, `kind("user"|"agent")` (default user), optionally `task("triage")`
//!   and `group("…")` facts (Cedar sees them as `principal.task` and `principal in Group::"…"`);
//! - `tool("<prefix>__<tool>")` for each tool the holder may call, `upstream("<name>")` for each
//!   upstream all of whose tools it may call, or `tool("*")` for any;
//! - `intent("recipient"|"account"|"url", "…")`: values the user named, which policies read as
//!   `context.intent.recipients` and so on;
//! - with a TTL, `check if time($t), $t <= <expiry>`.
//!
//! Per call the authorizer adds `call_tool("…")`, `call_upstream("…")`, `arg("name", value)` for
//! every top-level argument, and `time(now)`, then applies
//! `allow if call_tool($t), tool($t); allow if call_upstream($u), upstream($u);
//! allow if tool("*"); deny if true`.
//!
//! An argument's value is the JSON value as a Biscuit term: a string, an integer (a number that
//! is not a 64-bit integer becomes its decimal string), a boolean, `null`, an array or a map.
//! Every argument is a fact, whatever its type, so a check can never pass vacuously because
//! the client sent a list where the check expected a string: `reject if arg("to", $t),
//! $t.ends_with("@evil.example")` meets an array `to` with a type error, and a type error
//! denies the call. A check that expects lists says so: `check all arg("to", $l),
//! $l.all($t -> $t.ends_with("@corp.example"))`. A call whose arguments are too many or too
//! large to give the authorizer ([`MAX_ARG_FACTS`], [`MAX_ARG_TERMS`], [`MAX_ARG_DEPTH`]) is
//! denied rather than judged on part of them.
//!
//! Attenuation appends a block of **checks** (`check if call_tool("demo__read_thread")`). Facts
//! in appended blocks are not visible to the authorizer's policies (Biscuit's default scope is
//! the authority block and the authorizer), so a holder can narrow a token but never widen it.
//!
//! Verification happens once per distinct token ([`Verifier::verify`] caches by SHA-256 of the
//! token text, bounded); the per-call authorizer runs under [`LIMITS`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{AuthorizerBuilder, BlockBuilder, MapKey, Term, date, string};
use biscuit_auth::datalog::RunLimits;
use biscuit_auth::{Algorithm, Biscuit, KeyPair, PrivateKey, PublicKey, UnverifiedBiscuit};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::cedar::{Intent, PreparedPrincipal, PrincipalInfo, PrincipalKind};

/// Limits on one authorizer run. A hostile token (thousands of facts, rules that explode) is
/// denied when it hits them instead of eating the gateway's CPU.
///
/// The fact and iteration limits and the block shape limits below are what bound the work;
/// `max_time` is wall-clock time and only a backstop. Biscuit reads the clock between
/// iterations and checks, never inside one check, so it cannot cut a costly check short, and a
/// thread the scheduler preempts can pass a small budget without doing any work: at 2 ms, a
/// loaded machine (a CI run on two cores) denied a token that allowed the call. 20 ms leaves
/// room for a preemption or two while still ending a run of many cheap checks.
pub const LIMITS: RunLimits = RunLimits { max_facts: 1_000, max_iterations: 100, max_time: Duration::from_millis(20) };
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
    #[error("token has expired")]
    Expired,
    #[error("token does not allow this call: {0}")]
    NotAllowed(String),
    #[error("token evaluation exceeded its limits")]
    Limits,
    #[error("token refused before evaluation: {0}")]
    Shape(String),
    #[error("token does not name its principal properly: {0}")]
    Principal(String),
}

/// What to put in a new token.
#[derive(Debug, Clone, Default)]
pub struct MintSpec {
    pub principal: String,
    /// `agent` or `user` (the default).
    pub agent: bool,
    pub task: Option<String>,
    pub groups: Vec<String>,
    /// Allowed tools as clients name them; with no tools and no upstreams, every tool.
    pub tools: Vec<String>,
    /// Upstreams all of whose tools are allowed.
    pub upstreams: Vec<String>,
    /// (kind, value) pairs: `recipient`, `account` or `url`.
    pub intents: Vec<(String, String)>,
    pub ttl: Option<Duration>,
}

/// Intent kinds a token may carry.
pub const INTENT_KINDS: [&str; 3] = ["recipient", "account", "url"];

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
    if spec.principal.is_empty() || spec.principal == "anonymous" {
        return Err("the principal must be a non-empty name other than \"anonymous\"".into());
    }
    let fact = |name: &str, terms: &[Term]| biscuit_auth::builder::fact(name, terms);
    let mut b = Biscuit::builder().fact(fact("principal", &[string(&spec.principal)])).map_err(e)?;
    b = b.fact(fact("kind", &[string(if spec.agent { "agent" } else { "user" })])).map_err(e)?;
    if let Some(task) = &spec.task {
        b = b.fact(fact("task", &[string(task)])).map_err(e)?;
    }
    for g in &spec.groups {
        b = b.fact(fact("group", &[string(g)])).map_err(e)?;
    }
    if spec.tools.is_empty() && spec.upstreams.is_empty() {
        b = b.fact(fact("tool", &[string("*")])).map_err(e)?;
    }
    for t in &spec.tools {
        b = b.fact(fact("tool", &[string(t)])).map_err(e)?;
    }
    for u in &spec.upstreams {
        b = b.fact(fact("upstream", &[string(u)])).map_err(e)?;
    }
    for (k, v) in &spec.intents {
        if !INTENT_KINDS.contains(&k.as_str()) {
            return Err(format!("intent kind {k:?} is not one of {}", INTENT_KINDS.join(", ")));
        }
        b = b.fact(fact("intent", &[string(k), string(v)])).map_err(e)?;
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

/// A token whose signature and shape were checked, with its principal read from the
/// authority block and prepared for Cedar.
#[derive(Debug)]
pub struct VerifiedToken {
    pub biscuit: Biscuit,
    pub principal: PreparedPrincipal,
    /// SHA-256 of the token text: binds sessions and approvals to the credential.
    pub digest: [u8; 32],
    /// `Some(expiry)` when no check reads arguments and time is read only by TTL checks
    /// (`check if time($t), $t <= <date>`): the verdict then depends on the tool and upstream
    /// alone, plus `now <= expiry`, and is cached per (tool, upstream). `None`: the authorizer
    /// runs on every call.
    static_until: Option<SystemTime>,
    /// The earliest TTL any block sets (`check if time($t), $t <= <date>`): past it the token
    /// no longer authenticates at all, whatever is asked of it.
    expires: Option<SystemTime>,
    /// Every block's revocation id in lowercase hex, as revocation lists name them: rendered
    /// once at verification, since the list is checked on every use.
    revocation_ids: Vec<String>,
    verdicts: Mutex<HashMap<(String, String), Result<(), TokenDenial>>>,
}

/// Verdicts kept per token; cleared when full.
const VERDICTS: usize = 1_024;

/// Whether a token's verdict depends only on (tool, upstream) and its TTLs, and the earliest
/// TTL. Conservative: anything not recognised makes it `None`.
fn static_until(b: &Biscuit) -> Option<SystemTime> {
    let mut until = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 64);
    for i in 0..b.block_count() {
        let src = b.print_block_source(i).ok()?;
        let parsed = biscuit_auth::parser::parse_block_source(&src).ok()?;
        if !parsed.rules.is_empty() {
            return None;
        }
        for (text, _) in &parsed.checks {
            let t = text.trim().trim_end_matches(';').trim();
            if t.contains("arg(") {
                return None;
            }
            if t.contains("time(") {
                let date = t.strip_prefix("check if time($t), $t <= ")?;
                until = until.min(parse_rfc3339_utc(date.trim())?);
            }
        }
    }
    Some(until)
}

/// The earliest TTL set by any block, in the form minting and attenuation write
/// (`check if time($t), $t <= <date>`). Other time checks are left to the authorizer.
fn expiry(b: &Biscuit) -> Option<SystemTime> {
    let mut until: Option<SystemTime> = None;
    for i in 0..b.block_count() {
        let Ok(src) = b.print_block_source(i) else { continue };
        let Ok(parsed) = biscuit_auth::parser::parse_block_source(&src) else { continue };
        for (text, _) in &parsed.checks {
            let t = text.trim().trim_end_matches(';').trim();
            if let Some(at) = t.strip_prefix("check if time($t), $t <= ").and_then(|d| parse_rfc3339_utc(d.trim())) {
                until = Some(until.map_or(at, |u| u.min(at)));
            }
        }
    }
    until
}

/// Whole seconds since the epoch: Biscuit compares dates at that grain.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (how Biscuit prints dates) → time; anything else → `None`.
fn parse_rfc3339_utc(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, m, d, hh, mm, ss) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok().map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// Verifies tokens against the root key (once per distinct token) and authorizes calls.
pub struct Verifier {
    root: PublicKey,
    revoked: HashSet<String>,
    cache: Mutex<HashMap<[u8; 32], Arc<VerifiedToken>>>,
    /// The authorizer's policies, parsed once; each call clones it and adds its facts.
    template: Option<AuthorizerBuilder>,
}

/// The authorizer's policies: a tool the token names, an upstream it names, or any tool.
const POLICIES: &str = "allow if call_tool($t), tool($t); allow if call_upstream($u), upstream($u); allow if tool(\"*\"); deny if true;";

impl Verifier {
    pub fn new(root: PublicKey, revoked: impl IntoIterator<Item = String>) -> Self {
        let template = AuthorizerBuilder::new().code(POLICIES).ok().map(|b| b.set_limits(LIMITS));
        Self { root, revoked: revoked.into_iter().map(|r| r.trim().to_ascii_lowercase()).collect(), cache: Mutex::new(HashMap::new()), template }
    }

    /// Parses and verifies a token, or returns the cached result of doing so.
    pub fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, TokenDenial> {
        let token = token.trim();
        self.verify_digested(token, Sha256::digest(token.as_bytes()).into())
    }

    /// [`Verifier::verify`] for a caller that has hashed the (trimmed) token already:
    /// `digest` must be the SHA-256 of `token`'s bytes, the cache's key.
    pub fn verify_digested(&self, token: &str, digest: [u8; 32]) -> Result<Arc<VerifiedToken>, TokenDenial> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenDenial::Malformed);
        }
        let key = digest;
        let cached = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).cloned();
        let verified = match cached {
            Some(b) => b,
            None => {
                let b = Biscuit::from_base64(token, self.root).map_err(|e| match e {
                    biscuit_auth::error::Token::Format(biscuit_auth::error::Format::Signature(_)) => TokenDenial::BadSignature,
                    biscuit_auth::error::Token::Format(biscuit_auth::error::Format::UnknownPublicKey) => TokenDenial::BadSignature,
                    _ => TokenDenial::Malformed,
                })?;
                check_shape(&b)?;
                let info = principal_of(&b)?;
                let principal = PreparedPrincipal::new(info).map_err(TokenDenial::Principal)?;
                let until = static_until(&b);
                let expires = expiry(&b);
                let revocation_ids = b.revocation_identifiers().iter().map(hex::encode).collect();
                let v = Arc::new(VerifiedToken { biscuit: b, principal, digest: key, static_until: until, expires, revocation_ids, verdicts: Mutex::new(HashMap::new()) });
                let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if cache.len() >= CACHE {
                    cache.clear();
                }
                cache.insert(key, Arc::clone(&v));
                v
            }
        };
        // Revocation is checked on every use: a revocation list can change while a token is cached.
        if !self.revoked.is_empty() && verified.revocation_ids.iter().any(|id| self.revoked.contains(id)) {
            return Err(TokenDenial::Revoked);
        }
        if verified.expires.is_some_and(|e| secs(SystemTime::now()) > secs(e)) {
            return Err(TokenDenial::Expired);
        }
        Ok(verified)
    }

    /// The token's verdict for one call: from the per-token cache when the token's checks do
    /// not read arguments or time (beyond TTLs), else [`Verifier::authorize`].
    pub fn authorize_token(&self, t: &VerifiedToken, call: &CallFacts<'_>) -> Result<(), TokenDenial> {
        if t.static_until.is_none() {
            return self.authorize(&t.biscuit, call);
        }
        // TTL checks pass at the epoch; nothing else reads time or arguments.
        let at_epoch = CallFacts { arguments: None, now: SystemTime::UNIX_EPOCH, ..call.clone() };
        cached(t, call.now, (call.tool.to_owned(), call.upstream.to_owned()), || self.authorize(&t.biscuit, &at_epoch))
    }

    /// The token's verdict for `prompts/get` or `resources/read` of `target` on `upstream`.
    /// Tokens grant these by upstream only: `upstream("…")` or `tool("*")`; a token that
    /// names tools alone grants no prompt or resource. The authorizer sees
    /// `call_prompt("…")` or `call_resource("…")` (the client-visible name or URI),
    /// `call_upstream("…")` and `time(now)`, and no `call_tool`, so every check of the token
    /// applies as to a call: an expired token, or one attenuated to some tools
    /// (`check if call_tool(…)`), reads nothing.
    pub fn authorize_read(&self, t: &VerifiedToken, read: Read<'_>, upstream: &str, now: SystemTime) -> Result<(), TokenDenial> {
        let run = |now| {
            let Some(template) = &self.template else { return Err(TokenDenial::NotAllowed("the authorizer policies did not parse".into())) };
            run_authorizer(template.clone(), &t.biscuit, read.fact(), upstream, now, Vec::new()).map_err(denial)
        };
        if t.static_until.is_none() {
            return run(now);
        }
        let (kind, target) = read.fact();
        // A NUL never occurs in a tool name, so these keys never meet a call's.
        cached(t, now, (format!("\0{kind}\0{target}"), upstream.to_owned()), || run(SystemTime::UNIX_EPOCH))
    }

    /// Runs the authorizer for one call under [`LIMITS`]. Any engine error is a denial.
    ///
    /// A call whose arguments exceed [`MAX_ARG_FACTS`], [`MAX_ARG_TERMS`] or [`MAX_ARG_DEPTH`]
    /// is denied rather than judged on some of them: a `check all` or `reject if` over an
    /// argument the client pushed past a cut-off would otherwise hold vacuously.
    pub fn authorize(&self, biscuit: &Biscuit, call: &CallFacts<'_>) -> Result<(), TokenDenial> {
        let Some(template) = &self.template else { return Err(TokenDenial::NotAllowed("the authorizer policies did not parse".into())) };
        let args = match call.arguments {
            Some(Value::Object(args)) => arg_facts(args)?,
            _ => Vec::new(),
        };
        run_authorizer(template.clone(), biscuit, ("call_tool", call.tool), call.upstream, call.now, args).map_err(denial)
    }

    /// Whether the token allows `call.tool` for at least one assignment of arguments. The
    /// authorizer runs without argument facts; a failure caused only by checks that read
    /// `arg(…)` counts as "maybe", so the answer over-approximates: a tool the token allows
    /// with some arguments is never reported as hidden.
    pub fn may_allow(&self, biscuit: &Biscuit, call: &CallFacts<'_>) -> bool {
        let Some(template) = &self.template else { return false };
        match run_authorizer(template.clone(), biscuit, ("call_tool", call.tool), call.upstream, call.now, Vec::new()) {
            Ok(()) => true,
            Err(biscuit_auth::error::Token::FailedLogic(biscuit_auth::error::Logic::Unauthorized {
                policy: biscuit_auth::error::MatchedPolicy::Allow(_),
                checks,
            })) => checks.iter().all(|c| match c {
                biscuit_auth::error::FailedCheck::Block(b) => b.rule.contains("arg("),
                biscuit_auth::error::FailedCheck::Authorizer(a) => a.rule.contains("arg("),
            }),
            Err(_) => false,
        }
    }
}

/// Most `arg(name, value)` facts one call gives the authorizer: one per top-level argument.
pub const MAX_ARG_FACTS: usize = 64;
/// Most JSON values the arguments may hold together, counting every array item, map entry
/// and nested value.
pub const MAX_ARG_TERMS: usize = 1_024;
/// Deepest nesting of arrays and maps inside one argument.
pub const MAX_ARG_DEPTH: usize = 16;

/// The `arg` facts for one call's arguments, or [`TokenDenial::Limits`] when they are too many
/// or too large to judge whole.
fn arg_facts(args: &serde_json::Map<String, Value>) -> Result<Vec<(&str, Term)>, TokenDenial> {
    if args.len() > MAX_ARG_FACTS {
        return Err(TokenDenial::Limits);
    }
    let mut budget = MAX_ARG_TERMS;
    args.iter().map(|(k, v)| Ok((k.as_str(), arg_term(v, &mut budget, 0)?))).collect()
}

/// An argument's value as a Biscuit term, within the shared `budget` of values.
fn arg_term(v: &Value, budget: &mut usize, depth: usize) -> Result<Term, TokenDenial> {
    *budget = budget.checked_sub(1).ok_or(TokenDenial::Limits)?;
    let nested = |depth: usize| if depth >= MAX_ARG_DEPTH { Err(TokenDenial::Limits) } else { Ok(depth + 1) };
    Ok(match v {
        Value::String(s) => string(s),
        Value::Bool(b) => Term::Bool(*b),
        Value::Null => Term::Null,
        Value::Number(n) => match n.as_i64() {
            Some(i) => Term::Integer(i),
            None => string(&n.to_string()),
        },
        Value::Array(items) => {
            let d = nested(depth)?;
            Term::Array(items.iter().map(|i| arg_term(i, budget, d)).collect::<Result<_, _>>()?)
        }
        Value::Object(m) => {
            let d = nested(depth)?;
            Term::Map(m.iter().map(|(k, v)| Ok((MapKey::Str(k.clone()), arg_term(v, budget, d)?))).collect::<Result<_, TokenDenial>>()?)
        }
    })
}

/// A read a token is asked about: `prompts/get` or `resources/read`, by client-visible name
/// or URI.
#[derive(Debug, Clone, Copy)]
pub enum Read<'a> {
    Prompt(&'a str),
    Resource(&'a str),
}

impl<'a> Read<'a> {
    /// The fact that names it: `call_prompt` or `call_resource`, and its value.
    fn fact(self) -> (&'static str, &'a str) {
        match self {
            Read::Prompt(p) => ("call_prompt", p),
            Read::Resource(r) => ("call_resource", r),
        }
    }
}

/// A verdict from the token's cache (checked against its TTLs first), or `run`'s, kept.
fn cached(t: &VerifiedToken, now: SystemTime, key: (String, String), run: impl FnOnce() -> Result<(), TokenDenial>) -> Result<(), TokenDenial> {
    let until = t.static_until.unwrap_or(SystemTime::UNIX_EPOCH);
    if secs(now) > secs(until) {
        return Err(TokenDenial::NotAllowed("a check in the token failed".into()));
    }
    if let Some(v) = t.verdicts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
        return v.clone();
    }
    let v = run();
    let mut cache = t.verdicts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.len() >= VERDICTS {
        cache.clear();
    }
    cache.insert(key, v.clone());
    v
}

/// An authorizer error as a denial; any engine error is one.
fn denial(e: biscuit_auth::error::Token) -> TokenDenial {
    match e {
        biscuit_auth::error::Token::RunLimit(_) => TokenDenial::Limits,
        biscuit_auth::error::Token::FailedLogic(l) => TokenDenial::NotAllowed(logic_reason(&l)),
        other => TokenDenial::NotAllowed(other.to_string()),
    }
}

/// One authorizer run: `subject` is the fact naming what is called (`call_tool`, or
/// `call_prompt`/`call_resource` for reads).
fn run_authorizer(template: AuthorizerBuilder, biscuit: &Biscuit, subject: (&str, &str), upstream: &str, now: SystemTime, args: Vec<(&str, Term)>) -> Result<(), biscuit_auth::error::Token> {
    let mut a = template
        .fact(biscuit_auth::builder::fact(subject.0, &[string(subject.1)]))?
        .fact(biscuit_auth::builder::fact("call_upstream", &[string(upstream)]))?
        .fact(biscuit_auth::builder::fact("time", &[date(&now)]))?;
    for (k, term) in args {
        a = a.fact(biscuit_auth::builder::Fact::new("arg".to_owned(), vec![string(k), term]))?;
    }
    let mut authorizer = a.build(biscuit)?;
    authorizer.authorize_with_limits(LIMITS)?;
    Ok(())
}

/// The principal named by a token's authority block.
pub fn principal_of(b: &Biscuit) -> Result<PrincipalInfo, TokenDenial> {
    let src = b.print_block_source(0).map_err(|_| TokenDenial::Malformed)?;
    let parsed = biscuit_auth::parser::parse_block_source(&src).map_err(|_| TokenDenial::Malformed)?;
    let mut id = None;
    let mut kind = PrincipalKind::User;
    let mut task = None;
    let mut groups = Vec::new();
    let mut intent = Intent::default();
    let bad = |m: &str| TokenDenial::Principal(m.to_owned());
    for (_, f) in &parsed.facts {
        let f = biscuit_auth::builder::Fact::from(f.clone());
        let terms: Vec<Option<&str>> = f
            .predicate
            .terms
            .iter()
            .map(|t| match t {
                biscuit_auth::builder::Term::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect();
        match (f.predicate.name.as_str(), terms.as_slice()) {
            ("principal", [Some(p)]) if id.replace((*p).to_owned()).is_some() => return Err(bad("more than one principal fact")),
            ("principal", [Some(_)]) => {}
            ("kind", [Some("agent")]) => kind = PrincipalKind::Agent,
            ("kind", [Some("user")]) => kind = PrincipalKind::User,
            ("kind", _) => return Err(bad("kind must be \"user\" or \"agent\"")),
            ("task", [Some(t)]) => task = Some((*t).to_owned()),
            ("group", [Some(g)]) => groups.push((*g).to_owned()),
            ("intent", [Some("recipient"), Some(v)]) => {
                intent.recipients.insert((*v).to_owned());
            }
            ("intent", [Some("account"), Some(v)]) => {
                intent.accounts.insert((*v).to_owned());
            }
            ("intent", [Some("url"), Some(v)]) => {
                intent.urls.insert((*v).to_owned());
            }
            _ => {}
        }
    }
    let id = id.ok_or_else(|| bad("no principal fact"))?;
    if id.is_empty() || id == "anonymous" {
        return Err(bad("the principal name is empty or reserved"));
    }
    Ok(PrincipalInfo { id, kind, task, groups, intent })
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
        let spec = MintSpec { principal: "alice".into(), task: Some("triage".into()), tools: vec!["demo__read_thread".into()], ttl: Some(Duration::from_secs(3600)), groups: vec!["mail".into()], intents: vec![("recipient".into(), "bob@corp.example".into())], ..MintSpec::default() };
        let t = mint(&root, &spec, now).unwrap();
        let vt = v.verify(&t).unwrap();
        assert_eq!(vt.principal.info.id, "alice");
        assert_eq!(vt.principal.info.task.as_deref(), Some("triage"));
        assert_eq!(vt.principal.info.groups, vec!["mail".to_owned()]);
        assert!(vt.principal.info.intent.recipients.contains("bob@corp.example"));
        let b = &vt.biscuit;
        let args = json!({"thread_id": "t-100"});
        assert_eq!(v.authorize(b, &call("demo__read_thread", &args, now)), Ok(()));
        assert!(matches!(v.authorize(b, &call("demo__send_email", &args, now)), Err(TokenDenial::NotAllowed(_))));
        // Expired: the TTL check fails later.
        let later = now + Duration::from_secs(7200);
        assert!(matches!(v.authorize(b, &call("demo__read_thread", &args, later)), Err(TokenDenial::NotAllowed(r)) if r.contains("check")));
        assert!(!v.may_allow(b, &call("demo__read_thread", &args, later)), "an expired token lists nothing");
        assert!(v.may_allow(b, &call("demo__read_thread", &args, now)));
        assert!(!v.may_allow(b, &call("demo__send_email", &args, now)));
        assert!(inspect(&t).unwrap().contains("principal(\"alice\")"));
        assert!(mint(&root, &MintSpec { principal: "anonymous".into(), ..MintSpec::default() }, now).is_err());
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
        let vt = v.verify(&child).unwrap();
        let b = &vt.biscuit;
        let args = json!({});
        assert_eq!(v.authorize(b, &call("demo__read_thread", &args, now)), Ok(()));
        assert!(v.authorize(b, &call("demo__send_email", &args, now)).is_err(), "narrowed");
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
        let vt = v.verify(&only_corp).unwrap();
        let b = &vt.biscuit;
        assert_eq!(v.authorize(b, &call("demo__send_email", &json!({"to": "bob@corp.example"}), now)), Ok(()));
        assert!(v.authorize(b, &call("demo__send_email", &json!({"to": "eve@evil.example"}), now)).is_err());
        // Listing: an argument check leaves the tool visible (some arguments pass), a tool
        // check hides what it excludes.
        assert!(v.may_allow(b, &call("demo__send_email", &json!({}), now)));
        let narrowed = v.verify(&child).unwrap();
        assert!(!v.may_allow(&narrowed.biscuit, &call("demo__send_email", &json!({}), now)));
        // Upstream grants.
        let up = mint(&root, &MintSpec { principal: "u".into(), upstreams: vec!["demo".into()], ..MintSpec::default() }, now).unwrap();
        let vt = v.verify(&up).unwrap();
        assert_eq!(v.authorize(&vt.biscuit, &call("demo__anything", &args, now)), Ok(()));
        let other = CallFacts { tool: "web__fetch", upstream: "web", arguments: None, now };
        assert!(v.authorize(&vt.biscuit, &other).is_err());
    }

    #[test]
    fn cached_verdicts_match_the_authorizer() {
        let (root, v) = setup();
        let now = SystemTime::now();
        let spec = MintSpec { principal: "a".into(), tools: vec!["demo__read_thread".into(), "demo__send_email".into()], ttl: Some(Duration::from_secs(60)), ..MintSpec::default() };
        let t = mint(&root, &spec, now).unwrap();
        let narrowed = attenuate(&t, "check if call_tool($t), $t.starts_with(\"demo__read\");").unwrap();
        let by_arg = attenuate(&t, "check if call_tool(\"demo__read_thread\") or arg(\"to\", \"bob@corp.example\");").unwrap();
        let odd_time = attenuate(&t, "check if time($t), $t >= 2020-01-01T00:00:00Z;").unwrap();
        assert!(v.verify(&t).unwrap().static_until.is_some());
        assert!(v.verify(&narrowed).unwrap().static_until.is_some());
        assert!(v.verify(&by_arg).unwrap().static_until.is_none(), "reads arguments");
        assert!(v.verify(&odd_time).unwrap().static_until.is_none(), "reads time beyond a TTL");
        let args = [json!({}), json!({"to": "bob@corp.example"}), json!({"to": "eve@evil.example"})];
        for tok in [&t, &narrowed, &by_arg, &odd_time] {
            let vt = v.verify(tok).unwrap();
            for tool in ["demo__read_thread", "demo__send_email", "demo__delete"] {
                for a in &args {
                    for at in [now, now + Duration::from_secs(30), now + Duration::from_secs(120)] {
                        let c = call(tool, a, at);
                        assert_eq!(v.authorize_token(&vt, &c).is_ok(), v.authorize(&vt.biscuit, &c).is_ok(), "{tool} {a} {at:?}");
                    }
                }
            }
        }
        assert_eq!(parse_rfc3339_utc("1970-01-02T00:00:01Z"), Some(SystemTime::UNIX_EPOCH + Duration::from_secs(86_401)));
        assert_eq!(parse_rfc3339_utc("2026-11-23T10:00:00Z"), Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_428_000)));
        assert_eq!(parse_rfc3339_utc("2026-11-23 10:00:00"), None);
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
        let vt = v.verify(&costly).unwrap();
        let b = &vt.biscuit;
        let args: serde_json::Map<String, Value> = (0..64).map(|i| (format!("k{i}"), json!(i))).collect();
        let args = Value::Object(args);
        let t0 = std::time::Instant::now();
        assert!(v.authorize(b, &call("demo__read_thread", &args, now)).is_err());
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    /// A client cannot push an argument out of the token's sight by padding: past
    /// [`MAX_ARG_FACTS`] arguments the call is denied, not judged on the first ones.
    #[test]
    fn padding_the_arguments_does_not_hide_one_from_the_token() {
        let (root, v) = setup();
        let now = SystemTime::now();
        let parent = mint(&root, &MintSpec { principal: "alice".into(), tools: vec!["demo__send_email".into()], ..MintSpec::default() }, now).unwrap();
        let no_ceo = attenuate(&parent, "reject if arg(\"to\", \"ceo@corp.example\");").unwrap();
        let vt = v.verify(&no_ceo).unwrap();
        let b = &vt.biscuit;
        let padded = |n: usize, to: &str| {
            let mut m: serde_json::Map<String, Value> = (0..n).map(|i| (format!("pad{i}"), json!(i))).collect();
            // Objects and nulls are facts and count like any argument.
            m.insert("nested".into(), json!({"a": 1}));
            m.insert("none".into(), Value::Null);
            m.insert("to".into(), json!(to));
            Value::Object(m)
        };
        let ok = padded(MAX_ARG_FACTS - 3, "bob@corp.example");
        assert_eq!(v.authorize(b, &call("demo__send_email", &ok, now)), Ok(()));
        let within = padded(MAX_ARG_FACTS - 3, "ceo@corp.example");
        assert!(matches!(v.authorize(b, &call("demo__send_email", &within, now)), Err(TokenDenial::NotAllowed(_))));
        let past = padded(MAX_ARG_FACTS - 2, "ceo@corp.example");
        assert_eq!(v.authorize(b, &call("demo__send_email", &past, now)), Err(TokenDenial::Limits));
        let past_harmless = padded(MAX_ARG_FACTS - 2, "bob@corp.example");
        assert_eq!(v.authorize(b, &call("demo__send_email", &past_harmless, now)), Err(TokenDenial::Limits), "too many to judge, whatever they hold");
    }

    /// Every argument is a fact, whatever its type. A check written for a string meets a list
    /// with a type error, which denies the call, instead of holding vacuously over an argument
    /// it could not see; checks written for lists and maps read them whole.
    #[test]
    fn lists_and_maps_are_judged_not_skipped() {
        let (root, v) = setup();
        let now = SystemTime::now();
        let parent = mint(&root, &MintSpec { principal: "alice".into(), tools: vec!["demo__send_email".into()], ..MintSpec::default() }, now).unwrap();
        let verdict = |check: &str, args: Value| {
            let t = attenuate(&parent, check).unwrap();
            let vt = v.verify(&t).unwrap();
            v.authorize(&vt.biscuit, &call("demo__send_email", &args, now))
        };
        let no_evil = "reject if arg(\"to\", $t), $t.ends_with(\"@evil.example\");";
        assert_eq!(verdict(no_evil, json!({"to": "bob@corp.example"})), Ok(()));
        assert!(verdict(no_evil, json!({"to": "eve@evil.example"})).is_err());
        // Before every argument was a fact, a list made this reject vacuous and the call passed.
        assert!(verdict(no_evil, json!({"to": ["bob@corp.example", "eve@evil.example"]})).is_err());
        assert!(verdict(no_evil, json!({"to": ["bob@corp.example"]})).is_err(), "a type error denies");
        let only_corp = "check all arg(\"to\", $t), $t.ends_with(\"@corp.example\");";
        assert_eq!(verdict(only_corp, json!({"to": "bob@corp.example"})), Ok(()));
        assert!(verdict(only_corp, json!({"to": ["eve@evil.example"]})).is_err());
        assert!(verdict(only_corp, json!({"to": {"addr": "eve@evil.example"}})).is_err());
        // A check written for lists.
        let all_corp = "check all arg(\"to\", $l), $l.all($t -> $t.ends_with(\"@corp.example\"));";
        assert_eq!(verdict(all_corp, json!({"to": ["bob@corp.example", "ann@corp.example"]})), Ok(()));
        assert!(verdict(all_corp, json!({"to": ["bob@corp.example", "eve@evil.example"]})).is_err());
        // A check written for maps, and null as a value.
        let no_bcc = "reject if arg(\"opts\", $m), $m.get(\"bcc\") == \"eve@evil.example\";";
        assert_eq!(verdict(no_bcc, json!({"opts": {"bcc": "bob@corp.example", "n": [1, null]}})), Ok(()));
        assert!(verdict(no_bcc, json!({"opts": {"bcc": "eve@evil.example"}})).is_err());
        assert!(verdict("check if arg(\"reply_to\", null);", json!({"reply_to": null})).is_ok());
        // Too large or too deep to judge whole: denied, whatever the check says.
        // `to`, the list and its items: one value over the limit, then exactly at it.
        let big: Vec<usize> = (0..MAX_ARG_TERMS - 1).collect();
        assert_eq!(verdict(no_evil, json!({"to": "bob@corp.example", "rows": big})), Err(TokenDenial::Limits));
        let fits: Vec<usize> = (0..MAX_ARG_TERMS - 2).collect();
        assert_eq!(verdict(no_evil, json!({"to": "bob@corp.example", "rows": fits})), Ok(()));
        let nest = |levels: usize| (0..levels).fold(json!(1), |v, _| json!([v]));
        assert_eq!(verdict(no_evil, json!({"to": "bob@corp.example", "deep": nest(MAX_ARG_DEPTH)})), Ok(()));
        assert_eq!(verdict(no_evil, json!({"to": "bob@corp.example", "deep": nest(MAX_ARG_DEPTH + 1)})), Err(TokenDenial::Limits));
    }

    /// Prompts and resources are granted by upstream (or `tool("*")`), never by a tool grant,
    /// and every check of the token applies to them: an attenuated token reads nothing its
    /// checks do not allow, and an expired one no longer authenticates.
    #[test]
    fn reads_are_granted_by_upstream_and_narrowed_like_calls() {
        let (root, v) = setup();
        let now = SystemTime::now();
        let read = |tok: &str, r: Read<'_>, up: &str, at: SystemTime| {
            let vt = v.verify(tok).unwrap();
            v.authorize_read(&vt, r, up, at)
        };
        let doc = Read::Resource("demo+file:///doc.md");
        let all = mint(&root, &MintSpec { principal: "alice".into(), ..MintSpec::default() }, now).unwrap();
        assert_eq!(read(&all, doc, "demo", now), Ok(()), "tool(\"*\") grants everything");
        let by_upstream = mint(&root, &MintSpec { principal: "alice".into(), upstreams: vec!["demo".into()], ttl: Some(Duration::from_secs(60)), ..MintSpec::default() }, now).unwrap();
        assert_eq!(read(&by_upstream, doc, "demo", now), Ok(()));
        assert_eq!(read(&by_upstream, Read::Prompt("demo__triage"), "demo", now), Ok(()));
        assert!(read(&by_upstream, doc, "web", now).is_err(), "another upstream");
        // Past the TTL: the cached verdict is not used, and a new verify refuses the token.
        assert!(read(&by_upstream, doc, "demo", now + Duration::from_secs(120)).is_err());
        let tools_only = mint(&root, &MintSpec { principal: "alice".into(), tools: vec!["demo__read_thread".into()], ..MintSpec::default() }, now).unwrap();
        assert!(read(&tools_only, doc, "demo", now).is_err(), "a tool grant is no read grant");
        // Attenuated to one tool: the sub-agent reads nothing (before, reads skipped the token).
        let narrowed = attenuate(&by_upstream, "check if call_tool(\"demo__read_thread\");").unwrap();
        assert!(read(&narrowed, doc, "demo", now).is_err());
        assert!(read(&narrowed, Read::Prompt("demo__triage"), "demo", now).is_err());
        // A check can name what may be read.
        let docs_only = attenuate(&by_upstream, "check if call_resource($r), $r.starts_with(\"demo+file:///doc\");").unwrap();
        assert_eq!(read(&docs_only, doc, "demo", now), Ok(()));
        assert!(read(&docs_only, Read::Resource("demo+file:///secret.md"), "demo", now).is_err());
        assert!(read(&docs_only, Read::Prompt("demo__triage"), "demo", now).is_err());
        // Twice, so the second answer comes from the verdict cache and must agree.
        assert!(read(&docs_only, Read::Resource("demo+file:///secret.md"), "demo", now).is_err());
        assert_eq!(read(&docs_only, doc, "demo", now), Ok(()));
        // An expired token does not authenticate.
        let short = mint(&root, &MintSpec { principal: "alice".into(), ttl: Some(Duration::from_secs(60)), ..MintSpec::default() }, now - Duration::from_secs(3600)).unwrap();
        assert_eq!(v.verify(&short).unwrap_err(), TokenDenial::Expired);
        let shortened = attenuate(&all, &format!("check if time($t), $t <= {};", biscuit_auth::builder::date(&(now - Duration::from_secs(5))))).unwrap();
        assert_eq!(v.verify(&shortened).unwrap_err(), TokenDenial::Expired, "a TTL an attenuation adds counts too");
    }
}
