//! Authentication and authorization state: who is calling (Biscuit token, API key or nobody),
//! and the engines that decide (token authorizer, Cedar, argument schemas).
//!
//! Everything the decide stage reads lives in one immutable [`AuthzState`]. Reloads (policy
//! files, keys, revocations, config, a new tool set) build a whole new state and swap the `Arc`
//! in one step, so a call decided during a swap sees one consistent set: the one it loaded at
//! the start of its decision. A state that fails to build is rejected and the last good one
//! stays in force.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use clawgate_policies::args::{ArgError, ArgSchema, SchemaCache};
use clawgate_policies::cedar::{Engine, EngineOptions, Inventory, PolicySource, PreparedPrincipal, PrincipalInfo, PrincipalKind};
use clawgate_policies::decision::{self, Decision, EngineKind};
use clawgate_policies::token::{CallFacts, Read, TokenDenial, VerifiedToken, Verifier};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::config::{Config, PolicyConfig, PolicyMode};

/// How long a principal's list of visible tools is reused before it is computed again
/// (policies may depend on the time of day). Calls are always decided fresh.
const VISIBLE_TTL: Duration = Duration::from_secs(5);
/// Principals whose visible lists are cached; cleared when full.
const VISIBLE_CACHE: usize = 4_096;
/// Approvals waiting for a 2026-07-28 client's retry.
const PENDING_APPROVALS: usize = 4_096;

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Principal {
    Anonymous(Arc<PreparedPrincipal>),
    ApiKey { principal: Arc<PreparedPrincipal>, digest: [u8; 32] },
    Token(Arc<VerifiedToken>),
}

impl Principal {
    pub fn prepared(&self) -> &PreparedPrincipal {
        match self {
            Principal::Anonymous(p) | Principal::ApiKey { principal: p, .. } => p,
            Principal::Token(t) => &t.principal,
        }
    }

    pub fn id(&self) -> &str {
        &self.prepared().info.id
    }

    /// Identifies the credential (SHA-256 of the token or key; zeros for anonymous). Sessions
    /// and approvals are bound to it.
    pub fn credential(&self) -> [u8; 32] {
        match self {
            Principal::Anonymous(_) => [0; 32],
            Principal::ApiKey { digest, .. } => *digest,
            Principal::Token(t) => t.digest,
        }
    }

    pub fn anonymous() -> Result<Self, String> {
        Ok(Principal::Anonymous(Arc::new(PreparedPrincipal::new(PrincipalInfo::anonymous())?)))
    }
}

/// Credentials that do not authenticate anyone.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials: {0}")]
    Token(TokenDenial),
    #[error("invalid credentials: unknown API key")]
    UnknownKey,
}

/// A tool's argument schemas: the pinned one and the operator's stricter one.
#[derive(Debug, Clone)]
struct ToolSchemas {
    pinned: ArgSchema,
    stricter: Option<ArgSchema>,
}

/// What one tool in the catalog looks like to the decide stage.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInput {
    pub meta: clawgate_policies::cedar::ToolMeta,
    pub stricter: Option<Value>,
}

/// One consistent set of everything the decide stage reads.
pub struct AuthzState {
    pub generation: u64,
    verifier: Option<Arc<Verifier>>,
    api_keys: Vec<([u8; 32], Arc<PreparedPrincipal>)>,
    anonymous: Arc<PreparedPrincipal>,
    /// `None`: no `[policy]` configured; every call is denied.
    engine: Option<Arc<Engine>>,
    pub mode: PolicyMode,
    sources: Arc<Vec<PolicySource>>,
    opts: EngineOptions,
    schemas: HashMap<String, ToolSchemas>,
    /// The tools the engine was built for, as it saw them.
    built_for: Arc<HashMap<String, ToolInput>>,
    /// Tools whose definition is not the one the engine was built for, after a rebuild for
    /// the new tool set failed: every call to them is denied until a rebuild succeeds.
    stale: Arc<std::collections::HashSet<String>>,
}

/// Authentication and decisions, swapped atomically on reload.
pub struct Authz {
    state: RwLock<Arc<AuthzState>>,
    /// The tool set the engine was last built for (to rebuild when policies change).
    inventory: Mutex<(Inventory, Vec<ToolInput>)>,
    schema_cache: Mutex<SchemaCache>,
    visible: Mutex<HashMap<[u8; 32], Visible>>,
    approvals: Mutex<HashMap<String, PendingApproval>>,
}

#[derive(Clone)]
struct Visible {
    generation: u64,
    at: Instant,
    tools: Arc<HashSet<String>>,
}

/// An approval a human gave, waiting to be used by the retried call.
#[derive(Debug, Clone)]
struct PendingApproval {
    call: [u8; 32],
    expires: Instant,
}

/// Reads the policy sources a config names: the directory's `*.cedar` files (recursively, in
/// path order), then the inline text, then embedded ones.
pub fn read_sources(p: &PolicyConfig, config_file: &Path) -> Result<Vec<PolicySource>, String> {
    let mut out: Vec<PolicySource> = p.embedded.iter().map(|(file, text)| PolicySource { file: file.clone(), text: text.clone() }).collect();
    if let Some(dir) = &p.dir {
        let mut files = Vec::new();
        collect_cedar(dir, &mut files, 0).map_err(|e| format!("{}: key `policy.dir` in {}: cannot read the policy directory: {e}", dir.display(), config_file.display()))?;
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            out.push(PolicySource { file: f.display().to_string(), text });
        }
    }
    if let Some(inline) = &p.inline {
        out.push(PolicySource { file: format!("{} [policy] inline", config_file.display()), text: inline.clone() });
    }
    Ok(out)
}

fn collect_cedar(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> std::io::Result<()> {
    if depth > 8 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_cedar(&path, out, depth + 1)?;
        } else if path.extension().is_some_and(|e| e == "cedar") {
            out.push(path);
        }
    }
    Ok(())
}

/// The files whose changes trigger a reload, with what was last seen of each.
pub fn watched_files(cfg: &Config) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if cfg.source.is_file() {
        v.push(cfg.source.clone());
    }
    v.extend(cfg.auth.biscuit_public_key.clone());
    v.extend(cfg.auth.revocation_file.clone());
    if let Some(dir) = cfg.policy.as_ref().and_then(|p| p.dir.clone()) {
        let mut files = Vec::new();
        let _ = collect_cedar(&dir, &mut files, 0);
        files.sort();
        v.push(dir);
        v.extend(files);
    }
    v
}

/// A fingerprint of the watched files (modification time and length of each).
pub fn fingerprint(files: &[PathBuf]) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    files.iter().map(|f| (f.clone(), std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))).collect()
}

/// Reads the key and revocation files an `[auth]` section names.
fn read_verifier(cfg: &Config) -> Result<Option<Arc<Verifier>>, String> {
    let Some(key_file) = &cfg.auth.biscuit_public_key else { return Ok(None) };
    let hex = std::fs::read_to_string(key_file).map_err(|e| format!("{}: key `auth.biscuit_public_key`: cannot read: {e}", key_file.display()))?;
    let key = clawgate_policies::token::public_key_from_hex(&hex).map_err(|e| format!("{}: key `auth.biscuit_public_key`: {e}", key_file.display()))?;
    let revoked = match &cfg.auth.revocation_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| format!("{}: key `auth.revocation_file`: cannot read: {e}", f.display()))?
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
        None => Vec::new(),
    };
    Ok(Some(Arc::new(Verifier::new(key, revoked))))
}

impl Authz {
    /// Builds the first state from a config. Errors name the file (and line) at fault.
    pub fn new(cfg: &Config) -> Result<Self, String> {
        let anonymous = Arc::new(PreparedPrincipal::new(PrincipalInfo::anonymous())?);
        let authz = Self {
            state: RwLock::new(Arc::new(AuthzState {
                generation: 0,
                verifier: None,
                api_keys: Vec::new(),
                anonymous,
                engine: None,
                mode: PolicyMode::Enforce,
                sources: Arc::new(Vec::new()),
                opts: EngineOptions::default(),
                schemas: HashMap::new(),
                built_for: Arc::default(),
                stale: Arc::default(),
            })),
            // Until the upstreams are listed, the engine knows their names but not their tools.
            inventory: Mutex::new((
                Inventory {
                    upstreams: cfg
                        .upstreams
                        .iter()
                        .map(|u| clawgate_policies::cedar::UpstreamMeta { name: u.name.clone(), trusted: u.trusted, known: false, prefix: u.prefix.clone() })
                        .collect(),
                    ..Inventory::default()
                },
                Vec::new(),
            )),
            schema_cache: Mutex::new(SchemaCache::default()),
            visible: Mutex::new(HashMap::new()),
            approvals: Mutex::new(HashMap::new()),
        };
        authz.reload(cfg)?;
        Ok(authz)
    }

    /// The tool set the engine was last built for.
    pub fn inventory(&self) -> Inventory {
        self.inventory.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.clone()
    }

    /// The Cedar engine in force (`None` without `[policy]`).
    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.state().engine.clone()
    }

    pub fn state(&self) -> Arc<AuthzState> {
        Arc::clone(&self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Rebuilds from a (re-read) config with the current tool set; swaps it in only if every
    /// part builds.
    pub fn reload(&self, cfg: &Config) -> Result<u64, String> {
        let verifier = read_verifier(cfg)?;
        let mut api_keys = Vec::new();
        for k in &cfg.auth.api_keys {
            let info = PrincipalInfo {
                id: k.principal.clone(),
                kind: if k.agent { PrincipalKind::Agent } else { PrincipalKind::User },
                task: k.task.clone(),
                groups: k.groups.clone(),
                intent: Default::default(),
            };
            let p = PreparedPrincipal::new(info).map_err(|e| format!("{}: key `auth.api_keys`: {e}", cfg.source.display()))?;
            api_keys.push((Sha256::digest(k.key.as_bytes()).into(), Arc::new(p)));
        }
        let (sources, mode, opts) = match &cfg.policy {
            Some(p) => (read_sources(p, &cfg.source)?, p.mode, EngineOptions { utc_offset_minutes: p.utc_offset_minutes, ..EngineOptions::default() }),
            None => (Vec::new(), PolicyMode::Enforce, EngineOptions::default()),
        };
        let inv = self.inventory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let engine = match cfg.policy {
            Some(_) => Some(Arc::new(Engine::build(&sources, &inv.0, opts).map_err(|e| e.to_string())?)),
            None => None,
        };
        if let Some(e) = &engine
            && !cfg.labels.enabled
            && let Some(id) = e.reading_context("labels").first()
        {
            return Err(format!("{}: key `labels.enabled`: labels are off, but policy `{id}` reads context.labels (it would never see a label, so it could never deny)", cfg.source.display()));
        }
        let schemas = self.schemas_for(&inv.1);
        let built_for = Arc::new(inv.1.iter().map(|t| (t.meta.name.clone(), t.clone())).collect());
        if let Some(e) = &engine {
            for w in &e.warnings {
                tracing::info!(target: "clawgate::policy", "{w}");
            }
        }
        // The inventory lock is held across the swap so that a concurrent `retool` cannot
        // interleave between building and swapping.
        let mut guard = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = guard.generation + 1;
        let anonymous = Arc::clone(&guard.anonymous);
        *guard = Arc::new(AuthzState { generation, verifier, api_keys, anonymous, engine, mode, sources: Arc::new(sources), opts, schemas, built_for, stale: Arc::default() });
        drop(guard);
        drop(inv);
        Ok(generation)
    }

    /// Rebuilds the engine for a new tool set with the policies in force. If the policies do
    /// not validate against the new tools, the last good engine stays, arguments are checked
    /// against the new schemas, calls to tools it was not built for as they now are (new or
    /// changed) are denied, and the error is returned.
    pub fn retool(&self, inventory: Inventory, tools: Vec<ToolInput>) -> Result<u64, String> {
        let mut inv = self.inventory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.state();
        // The tool set is recorded even if the policies do not fit it, so that a corrected
        // policy reload validates against the real tools.
        let built = match &old.engine {
            Some(_) => Engine::build(&old.sources, &inventory, old.opts).map(|e| Some(Arc::new(e))).map_err(|e| e.to_string()),
            None => Ok(None),
        };
        let schemas = self.schemas_for(&tools);
        // On failure the engine in force stays, arguments are checked against the schemas the
        // upstreams now publish, and every tool the engine does not know as it now is, is
        // denied: its policies were written against a definition that is gone.
        let (engine, built_for, stale, outcome) = match built {
            Ok(engine) => (engine, Arc::new(tools.iter().map(|t| (t.meta.name.clone(), t.clone())).collect()), Arc::default(), Ok(())),
            Err(e) => {
                let stale: std::collections::HashSet<String> = tools.iter().filter(|t| old.built_for.get(&t.meta.name) != Some(*t)).map(|t| t.meta.name.clone()).collect();
                (old.engine.clone(), Arc::clone(&old.built_for), Arc::new(stale), Err(e))
            }
        };
        *inv = (inventory, tools);
        let mut guard = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let cur = &**guard;
        let state = AuthzState {
            generation: cur.generation + 1,
            verifier: cur.verifier.clone(),
            api_keys: cur.api_keys.clone(),
            anonymous: Arc::clone(&cur.anonymous),
            engine,
            mode: cur.mode,
            sources: Arc::clone(&cur.sources),
            opts: cur.opts,
            schemas,
            built_for,
            stale,
        };
        let generation = state.generation;
        *guard = Arc::new(state);
        drop(guard);
        drop(inv);
        outcome.map(|()| generation)
    }

    fn schemas_for(&self, tools: &[ToolInput]) -> HashMap<String, ToolSchemas> {
        let mut cache = self.schema_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tools
            .iter()
            .map(|t| (t.meta.name.clone(), ToolSchemas { pinned: cache.get(&t.meta.input_schema), stricter: t.stricter.as_ref().map(|s| cache.get(s)) }))
            .collect()
    }

    /// Credentials → principal. `None` is the anonymous principal.
    pub fn authenticate(&self, credential: Option<&str>) -> Result<Principal, AuthError> {
        let state = self.state();
        let Some(c) = credential.map(str::trim).filter(|c| !c.is_empty()) else {
            return Ok(Principal::Anonymous(Arc::clone(&state.anonymous)));
        };
        let digest: [u8; 32] = Sha256::digest(c.as_bytes()).into();
        if let Some((d, p)) = state.api_keys.iter().find(|(d, _)| *d == digest) {
            return Ok(Principal::ApiKey { principal: Arc::clone(p), digest: *d });
        }
        match &state.verifier {
            // The digest taken for the API keys is the token cache's key too.
            Some(v) => v.verify_digested(c, digest).map(Principal::Token).map_err(AuthError::Token),
            None => Err(AuthError::UnknownKey),
        }
    }

    /// Checks a call's arguments against the tool's schemas.
    pub fn check_args(&self, state: &AuthzState, tool: &str, args: Option<&Value>) -> Result<(), Vec<ArgError>> {
        let Some(s) = state.schemas.get(tool) else {
            return Err(vec![ArgError { path: String::new(), message: "the tool's schema is not loaded yet".into() }]);
        };
        s.pinned.check(args)?;
        match &s.stricter {
            Some(st) => st.check(args),
            None => Ok(()),
        }
    }

    /// The decision for a `tools/call`: the token's authorizer and Cedar, combined.
    #[allow(clippy::too_many_arguments, reason = "the parts of one tool call")]
    pub fn decide_tool(&self, state: &AuthzState, p: &Principal, tool: &str, upstream: &str, args: Option<&Value>, labels: &clawgate_policies::labels::LabelView, now: SystemTime) -> Decision {
        let Some(engine) = &state.engine else {
            return Decision::deny(decision::DenyReason::NoPermit, EngineKind::Cedar, "no [policy] is configured, so every call is denied");
        };
        if state.stale.contains(tool) {
            return Decision::deny(decision::DenyReason::EngineError, EngineKind::Cedar, "the tool's definition changed and the policies in force could not be rebuilt for it (see the policy.rejected record); it is refused until a policy reload fits it");
        }
        let token = match (p, &state.verifier) {
            (Principal::Token(t), Some(v)) => Some(v.authorize_token(t, &CallFacts { tool, upstream, arguments: args, now })),
            (Principal::Token(_), None) => Some(Err(TokenDenial::BadSignature)),
            _ => None,
        };
        // Both engines run even when the first denies, so a shadow-mode record is complete and
        // the cost does not reveal which engine denied.
        let cedar = engine.decide_tool_labelled(p.prepared(), tool, args, labels, now);
        decision::combine(token, cedar)
    }

    /// The decision for `prompts/get` or `resources/read`: the token's authorizer (which
    /// grants reads by upstream, and whose checks, TTL and attenuation apply as to calls) ∧
    /// Cedar.
    pub fn decide_other(&self, state: &AuthzState, p: &Principal, method: &str, upstream: &str, target: &str, now: SystemTime) -> Decision {
        let Some(engine) = &state.engine else {
            return Decision::deny(decision::DenyReason::NoPermit, EngineKind::Cedar, "no [policy] is configured, so every call is denied");
        };
        let read = if method == "prompts/get" { Read::Prompt(target) } else { Read::Resource(target) };
        let token = match (p, &state.verifier) {
            (Principal::Token(t), Some(v)) => Some(v.authorize_read(t, read, upstream, now)),
            (Principal::Token(_), None) => Some(Err(TokenDenial::BadSignature)),
            _ => None,
        };
        let v = if method == "prompts/get" { engine.decide_prompt(p.prepared(), upstream, target, now) } else { engine.decide_resource(p.prepared(), upstream, target, now) };
        decision::combine(token, v)
    }

    /// The tools `p` may call with at least one assignment of arguments (lists show exactly
    /// these), cached per credential for [`VISIBLE_TTL`] and per state generation.
    pub fn visible_tools(&self, state: &AuthzState, p: &Principal) -> Arc<HashSet<String>> {
        let key = p.credential();
        let key = if matches!(p, Principal::Anonymous(_)) { key } else { Sha256::digest([&key[..], p.id().as_bytes()].concat()).into() };
        if let Some(v) = self.visible.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key)
            && v.generation == state.generation
            && v.at.elapsed() < VISIBLE_TTL
        {
            return Arc::clone(&v.tools);
        }
        let set = Arc::new(self.compute_visible(state, p));
        let mut cache = self.visible.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= VISIBLE_CACHE {
            cache.clear();
        }
        cache.insert(key, Visible { generation: state.generation, at: Instant::now(), tools: Arc::clone(&set) });
        set
    }

    /// Whether `p` may call `tool` with some arguments, computed for this tool alone (the call
    /// path asks only when a call is refused, to answer a hidden tool as an unknown one).
    pub fn callable_at_all(&self, state: &AuthzState, p: &Principal, tool: &str, upstream: &str) -> bool {
        if state.mode == PolicyMode::Shadow {
            return true;
        }
        callable(state, p, tool, upstream, SystemTime::now())
    }

    fn compute_visible(&self, state: &AuthzState, p: &Principal) -> HashSet<String> {
        let now = SystemTime::now();
        let inv = self.inventory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inv.0.tools.iter().filter(|t| callable(state, p, &t.name, &t.upstream, now)).map(|t| t.name.clone()).collect()
    }

    // --- approvals ------------------------------------------------------------------------

    /// Records a pending approval for `call` and returns its id (for `requestState`).
    /// `None` if the OS has no randomness to give (the caller then denies).
    pub fn approval_open(&self, call: [u8; 32], ttl: Duration) -> Option<String> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).ok()?;
        let id = hex::encode(id);
        let mut m = self.approvals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.retain(|_, a| a.expires > Instant::now());
        if m.len() >= PENDING_APPROVALS {
            m.clear();
        }
        m.insert(id.clone(), PendingApproval { call, expires: Instant::now() + ttl });
        Some(id)
    }

    /// Uses an approval: it must exist, be unexpired, be for exactly this call, and be unused.
    /// It is removed whatever the outcome (single use).
    pub fn approval_take(&self, id: &str, call: &[u8; 32]) -> Result<(), &'static str> {
        let a = self.approvals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
        match a {
            None => Err("the approval is unknown, expired or already used"),
            Some(a) if a.expires <= Instant::now() => Err("the approval expired"),
            Some(a) if &a.call != call => Err("the approval was given for a different call"),
            Some(_) => Ok(()),
        }
    }
}

/// Whether the token (without argument facts) and Cedar (with `context.args` unknown) may
/// allow `tool` for `p`: an over-approximation that never hides a callable tool.
fn callable(state: &AuthzState, p: &Principal, tool: &str, upstream: &str, now: SystemTime) -> bool {
    let Some(engine) = &state.engine else { return false };
    let token_ok = match (p, &state.verifier) {
        (Principal::Token(tok), Some(v)) => v.may_allow(&tok.biscuit, &CallFacts { tool, upstream, arguments: None, now }),
        (Principal::Token(_), None) => false,
        _ => true,
    };
    token_ok && engine.tool_visible(p.prepared(), tool, now)
}

/// The digest an approval is bound to: the credential, the tool and the exact arguments.
pub fn call_digest(p: &Principal, tool: &str, args: Option<&Value>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(p.credential());
    h.update(p.id().as_bytes());
    h.update([0]);
    h.update(tool.as_bytes());
    h.update([0]);
    let mut json = Vec::with_capacity(256);
    clawgate_policies::integrity::canonical::write(args.unwrap_or(&Value::Null), &mut json);
    h.update(&json);
    h.finalize().into()
}

/// A one-line summary of a decision for logs and audit (never argument values).
pub fn summary(d: &Decision) -> Value {
    match d {
        Decision::Allow { policies } => serde_json::json!({"decision": "allow", "policies": policies}),
        Decision::Ask { policy, .. } => serde_json::json!({"decision": "ask", "policies": [policy]}),
        Decision::Deny(den) => serde_json::json!({"decision": "deny", "reason": den.reason.as_str(), "engine": den.engine.as_str(), "policies": den.policies, "detail": den.detail}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anonymous_principal_prepares() {
        assert_eq!(Principal::anonymous().unwrap().id(), "anonymous");
    }

    #[test]
    fn labels_off_refuses_policies_that_read_labels() {
        let cfg = |policy: &str| {
            let text = format!("[labels]\nenabled = false\n[policy]\ninline = '{policy}'\n[[upstream]]\nname = \"u\"\ntransport = \"http\"\nurl = \"http://127.0.0.1:1/mcp\"\n");
            crate::config::Config::parse(&text, std::path::Path::new("gw.toml"), std::path::Path::new("/"), &|_| None).unwrap()
        };
        let e = Authz::new(&cfg("@id(\"r\") forbid (principal, action, resource) when { context has labels && context.labels.strict };")).err().unwrap();
        assert!(e.contains("gw.toml") && e.contains("labels.enabled") && e.contains("`r`"), "{e}");
        // A policy that never reads labels loads, and so does the same one with labels on.
        assert!(Authz::new(&cfg("permit (principal, action, resource) when { context has time };")).is_ok());
        let on = crate::config::Config::parse("[policy]\ninline = 'forbid (principal, action, resource) when { context has labels };'\n", std::path::Path::new("gw.toml"), std::path::Path::new("/"), &|_| None).unwrap();
        assert!(Authz::new(&on).is_ok());
    }

    /// A tool whose new definition the policies in force do not validate against is checked
    /// against its new schema and refused outright, never judged by policies written for the
    /// definition that is gone; once the definition fits again, it is allowed again.
    #[test]
    fn a_changed_tool_the_policies_no_longer_fit_is_denied_until_they_do() {
        use clawgate_policies::cedar::{ToolAttrs, ToolMeta, UpstreamMeta};
        use clawgate_policies::labels::LabelView;
        let text = "[policy]\ninline = 'permit (principal, action == Action::\"u__send\", resource) when { context.args.to like \"*@corp.example\" };'\n[[upstream]]\nname = \"u\"\ntransport = \"http\"\nurl = \"http://127.0.0.1:1/mcp\"\n";
        let cfg = crate::config::Config::parse(text, std::path::Path::new("gw.toml"), std::path::Path::new("/"), &|_| None).unwrap();
        let authz = Authz::new(&cfg).unwrap();
        let tool = |schema: Value| ToolInput { meta: ToolMeta { name: "u__send".into(), upstream: "u".into(), input_schema: schema, attrs: ToolAttrs::default(), groups: Vec::new() }, stricter: None };
        let inv = |t: &ToolInput| Inventory { upstreams: vec![UpstreamMeta { name: "u".into(), trusted: false, known: true, prefix: "u".into() }], tools: vec![t.meta.clone()], prompts: Vec::new() };
        let p = Principal::anonymous().unwrap();
        let view = LabelView::empty(false);
        let now = SystemTime::now();
        let decide = |args: Value| {
            let st = authz.state();
            authz.decide_tool(&st, &p, "u__send", "u", Some(&args), &view, now)
        };
        let v1 = tool(serde_json::json!({"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}));
        authz.retool(inv(&v1), vec![v1.clone()]).unwrap();
        assert!(matches!(decide(serde_json::json!({"to": "a@corp.example"})), Decision::Allow { .. }));
        // `to` becomes a number: the policy no longer validates, so the rebuild fails.
        let v2 = tool(serde_json::json!({"type": "object", "properties": {"to": {"type": "integer"}}, "required": ["to"]}));
        assert!(authz.retool(inv(&v2), vec![v2.clone()]).is_err());
        let st = authz.state();
        assert!(authz.check_args(&st, "u__send", Some(&serde_json::json!({"to": "a@corp.example"}))).is_err(), "the new schema is the one checked");
        assert!(authz.check_args(&st, "u__send", Some(&serde_json::json!({"to": 5}))).is_ok());
        let d = decide(serde_json::json!({"to": 5}));
        assert!(matches!(&d, Decision::Deny(x) if x.reason == decision::DenyReason::EngineError), "{d:?}");
        // The definition fits again: allowed again.
        authz.retool(inv(&v1), vec![v1.clone()]).unwrap();
        assert!(matches!(decide(serde_json::json!({"to": "a@corp.example"})), Decision::Allow { .. }));
    }
}
