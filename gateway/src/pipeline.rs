//! The gateway core: federation state and the call path.
//!
//! [`Gateway::handle_request`] is the one entry for client requests from every front. For a
//! `tools/call` the path is, in order (see ARCHITECTURE.md):
//!
//! front → authenticate → route → validate → label → decide → rate-limit → dispatch →
//! post-process → audit
//!
//! The front has already framed and limited the message and settled the era; [`Caller`] says
//! who asks and how to reach them. Failures are [`CallError`]s, turned into JSON-RPC errors only
//! in [`CallError::to_response`].

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use clawgate_adapters::era::{self, Envelope};
use clawgate_adapters::jsonrpc::{self, Answer, RawAnswer};
use clawgate_adapters::transport::http::HttpSpec;
use clawgate_adapters::transport::stdio::StdioSpec;
use clawgate_adapters::{CallOpts, Related, TransportSpec, Upstream, UpstreamEvent, UpstreamSpec};
use clawgate_policies::integrity::sanitize;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::catalog::{self, Catalog, Namespace, Route, UpstreamLists, UpstreamPolicy};
use crate::audit::Audit;
use crate::pins::LockFile;
use crate::config::{Config, TransportConfig, UpstreamConfig};
use crate::error::CallError;
use crate::session::{Session, Sessions, lock, new_session_id};
use crate::authz::{self, Authz, Principal, ToolInput};
use crate::config::{AuditOnFailure, PolicyMode};
use crate::stages::{self, CallInfo};
use clawgate_policies::cedar::{Inventory, PromptMeta, ToolAttrs, ToolMeta, UpstreamMeta};
use clawgate_policies::decision::{Decision, Denial, DenyReason, EngineKind};
use clawgate_policies::labels::{IntentValues, LabelView};

/// Most pages fetched from one upstream for one list (bounds a misbehaving paginator).
const MAX_LIST_PAGES: usize = 64;
/// Most MRTR rounds the gateway drives on behalf of a legacy client.
const MAX_INPUT_ROUNDS: usize = 8;
/// The `inputRequests` key and `requestState` prefix of the gateway's own approval round.
const APPROVAL_KEY: &str = "io.clawgate/approval";
const APPROVAL_STATE: &str = "cg-approval:";

/// Who is asking, and how to reach them while their request runs.
pub struct Caller {
    pub principal: Principal,
    pub era: CallerEra,
    /// Messages related to this request (progress, logging, server→client requests) go here:
    /// the POST's SSE stream, or stdout.
    pub out: mpsc::Sender<Value>,
    /// `Mcp-Param-*` headers the client sent, checked against its arguments. Never forwarded:
    /// a 2026-07-28 upstream gets headers the gateway builds from the arguments it sends.
    pub forward_headers: Vec<(String, String)>,
}

pub enum CallerEra {
    /// 2025-11-25 and earlier: a session.
    Legacy(Arc<Session>),
    /// 2026-07-28: the envelope from this request's `_meta`. `logs` says whether the request
    /// asked for log notifications (`io.modelcontextprotocol/logLevel`).
    Stateless { version: String, capabilities: Value, logs: bool },
}

impl Caller {
    pub fn session(&self) -> Option<&Arc<Session>> {
        match &self.era {
            CallerEra::Legacy(s) => Some(s),
            CallerEra::Stateless { .. } => None,
        }
    }

    fn capabilities(&self) -> Value {
        match &self.era {
            CallerEra::Legacy(s) => s.client_capabilities.clone(),
            CallerEra::Stateless { capabilities, .. } => capabilities.clone(),
        }
    }

    fn is_stateless(&self) -> bool {
        matches!(self.era, CallerEra::Stateless { .. })
    }
}

struct Slot {
    cfg: UpstreamConfig,
    spec: UpstreamSpec,
    /// Shared by every session; for `per_session` upstreams it serves lists only.
    shared: Upstream,
    per_session: bool,
}

pub struct Gateway {
    cfg: Arc<Config>,
    slots: Vec<Slot>,
    spaces: Vec<Namespace>,
    policies: Vec<UpstreamPolicy>,
    lists: Mutex<Vec<Option<UpstreamLists>>>,
    /// Which upstreams' lists are in the catalog now. Set only after the catalog that contains
    /// them is swapped in, so a reader that sees `true` never gets an older catalog.
    listed: Mutex<Vec<bool>>,
    /// The pins in force; reloaded when the lockfile changes on disk.
    pins: RwLock<Arc<LockFile>>,
    /// Serialises list refreshes so that concurrent triggers do not interleave.
    refresh_lock: tokio::sync::Mutex<()>,
    catalog: RwLock<Arc<Catalog>>,
    pub sessions: Sessions,
    /// List-changed notifications for 2026-07-28 `subscriptions/listen` streams.
    changes: broadcast::Sender<Value>,
    /// Flips to `true` when shutdown begins, ending every long-lived stream.
    closing: tokio::sync::watch::Sender<bool>,
    pub audit: Audit,
    pub authz: Authz,
    pub labels: crate::labels::LabelStore,
    /// `[rate_limit]`: per principal (and per principal and tool), in this process.
    pub rate_limit: stages::RateLimiter,
}

/// Resolves once the gateway starts shutting down.
pub struct Closing(tokio::sync::watch::Receiver<bool>);

impl Closing {
    pub async fn changed_to_true(&mut self) {
        let _ = self.0.wait_for(|c| *c).await;
    }
}

impl Gateway {
    /// Builds the gateway and starts every upstream's supervisor and the event loop.
    pub fn start(cfg: Config) -> Result<Arc<Self>, CallError> {
        let http = clawgate_adapters::transport::http::client(64)
            .map_err(|e| CallError::InvalidRequest(format!("http client: {e}")))?;
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let mut slots = Vec::new();
        for up in &cfg.upstreams {
            let spec = upstream_spec(up, cfg.limits.max_upstream_message_bytes);
            let shared = Upstream::start(spec.clone(), http.clone(), ev_tx.clone());
            let per_session = matches!(up.transport, TransportConfig::Stdio { per_session: true, .. });
            slots.push(Slot { cfg: up.clone(), spec, shared, per_session });
        }
        let spaces: Vec<Namespace> = cfg.upstreams.iter().map(|u| Namespace { prefix: u.prefix.clone() }).collect();
        let policies = cfg
            .upstreams
            .iter()
            .map(|u| UpstreamPolicy { name: u.name.clone(), ns: Namespace { prefix: u.prefix.clone() }, pin: u.pin, poisoning: u.poisoning, overrides: u.tools.clone() })
            .collect();
        let pins = match &cfg.pins.lockfile {
            Some(path) => LockFile::load(path).map_err(CallError::InvalidRequest)?,
            None => LockFile::default(),
        };
        let audit = Audit::start(cfg.audit.file.as_deref()).map_err(CallError::InvalidRequest)?;
        let authz = Authz::new(&cfg).map_err(CallError::InvalidRequest)?;
        if cfg.policy.is_none() {
            tracing::warn!(target: "clawgate::policy", "no [policy] section: every call is denied");
        }
        let labels = crate::labels::LabelStore::new(&cfg.labels).map_err(|e| CallError::InvalidRequest(format!("labels: {e}")))?;
        let rate_limit = stages::RateLimiter::new(cfg.rate_limit.as_ref()).map_err(CallError::InvalidRequest)?;
        let (changes, _) = broadcast::channel(256);
        let gw = Arc::new(Self {
            audit,
            authz,
            labels,
            rate_limit,
            sessions: Sessions::new(cfg.limits.max_sessions, cfg.limits.session_idle_timeout),
            lists: Mutex::new(vec![None; slots.len()]),
            listed: Mutex::new(vec![false; slots.len()]),
            refresh_lock: tokio::sync::Mutex::new(()),
            catalog: RwLock::new(Arc::new(Catalog::default())),
            slots,
            spaces,
            policies,
            pins: RwLock::new(Arc::new(pins)),
            cfg: Arc::new(cfg),
            changes,
            closing: tokio::sync::watch::Sender::new(false),
        });
        tokio::spawn(event_loop(Arc::downgrade(&gw), ev_rx));
        tokio::spawn(sweep_loop(Arc::downgrade(&gw)));
        if gw.cfg.pins.lockfile.is_some() {
            tokio::spawn(lockfile_watch_loop(Arc::downgrade(&gw)));
        }
        tokio::spawn(relist_loop(Arc::downgrade(&gw)));
        tokio::spawn(policy_watch_loop(Arc::downgrade(&gw)));
        Ok(gw)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn subscribe_changes(&self) -> broadcast::Receiver<Value> {
        self.changes.subscribe()
    }

    pub fn closing(&self) -> Closing {
        Closing(self.closing.subscribe())
    }

    /// Ends every long-lived client stream (GET and `subscriptions/listen`) so that a graceful
    /// HTTP shutdown does not wait on them.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Closes a session that left the table (deleted, or idle too long): its upstream children
    /// and streams end, and its label scope is forgotten at once.
    pub async fn end_session(&self, s: &Session) {
        s.close().await;
        self.labels.forget(&session_scope(&s.id));
    }

    /// Stops every upstream (children get SIGTERM, then SIGKILL) and closes all sessions.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        for s in self.sessions.all() {
            if let Some(s) = self.sessions.remove(&s.id) {
                s.close().await;
            }
        }
        for slot in &self.slots {
            slot.shared.shutdown().await;
        }
        // Last: the records of everything above reach the file before the process exits.
        self.audit.flush(Duration::from_secs(5)).await;
    }

    // -----------------------------------------------------------------------------------------
    // Handshakes

    /// Legacy `initialize`: negotiates a version and opens a session.
    pub fn initialize(&self, params: Option<&Map<String, Value>>, principal: &Principal) -> Result<(Arc<Session>, Value), CallError> {
        let requested = params.and_then(|p| p.get("protocolVersion")).and_then(Value::as_str).unwrap_or(era::LEGACY_LATEST);
        let version = if era::LEGACY_VERSIONS.contains(&requested) { requested } else { era::LEGACY_LATEST };
        let caps = params.and_then(|p| p.get("capabilities")).cloned().unwrap_or_else(|| json!({}));
        let info = params.and_then(|p| p.get("clientInfo")).cloned().unwrap_or(Value::Null);
        // A session keeps both for its whole life (and sends the capabilities upstream): a
        // client may not park megabytes in each of thousands of sessions.
        let size = |v: &Value| serde_json::to_string(v).map_or(usize::MAX, |s| s.len());
        if size(&caps).saturating_add(size(&info)) > MAX_CLIENT_DESCRIPTION {
            return Err(CallError::InvalidParams(format!("`capabilities` and `clientInfo` together must be at most {MAX_CLIENT_DESCRIPTION} bytes of JSON")));
        }
        let session = Arc::new(Session::new(new_session_id()?, version.to_owned(), caps, info, principal.credential()));
        session.touch();
        self.sessions.insert(Arc::clone(&session))?;
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": server_capabilities(),
            "serverInfo": server_info(),
        });
        if let Some(instr) = self.instructions() {
            result["instructions"] = instr.into();
        }
        Ok((session, result))
    }

    fn discover(&self) -> Value {
        let mut result = json!({
            "supportedVersions": era::MODERN_VERSIONS,
            "capabilities": server_capabilities(),
            "ttlMs": 0,
            "cacheScope": "private",
            "_meta": {era::META_SERVER_INFO: server_info()},
        });
        if let Some(instr) = self.instructions() {
            result["instructions"] = instr.into();
        }
        result
    }

    fn instructions(&self) -> Option<String> {
        // Upstream instructions are not forwarded yet: they are model-visible text from the
        // upstream and will pass through the same sanitiser as tool descriptions first.
        None
    }

    // -----------------------------------------------------------------------------------------
    // Entry points

    /// Handles one client request and returns the full JSON-RPC response (with the client's id).
    pub async fn handle_request(&self, caller: &Caller, req: Value) -> Value {
        self.handle_request_out(caller, req).await.into_value()
    }

    /// [`Gateway::handle_request`], with an upstream's result relayed as the bytes it sent when
    /// nothing had to change in it: for a front that writes the response out as it is.
    pub async fn handle_request_out(&self, caller: &Caller, req: Value) -> Outgoing {
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let method = jsonrpc::method(&req).unwrap_or_default().to_owned();
        let mut resp = match self.route_request(caller, &method, req).await {
            Ok(Reply::Raw(answer)) if !caller.is_stateless() => return Outgoing::Raw { id, answer },
            Ok(Reply::Raw(answer)) => Outgoing::Raw { id: Value::Null, answer }.into_value(),
            Ok(Reply::Result(result)) => jsonrpc::result(Value::Null, result),
            Ok(Reply::Message(msg)) => msg,
            Err(e) => {
                if matches!(e, CallError::Upstream(_)) {
                    tracing::warn!(%method, error = %e, "call failed upstream");
                }
                e.to_response(Value::Null)
            }
        };
        if caller.is_stateless() {
            complete_for_stateless(&method, &mut resp);
        }
        if let Some(o) = resp.as_object_mut() {
            o.insert("id".into(), id);
        }
        Outgoing::Message(resp)
    }

    /// Methods and client notifications the gateway handles itself (here or in a front); none
    /// of them can be listed in an upstream's `relay_methods`.
    pub const OWN_METHODS: &[&str] = &[
        "initialize", "ping", "server/discover", "subscriptions/listen",
        "tools/list", "tools/call", "prompts/list", "prompts/get",
        "resources/list", "resources/templates/list", "resources/read", "resources/subscribe", "resources/unsubscribe",
        "completion/complete", "logging/setLevel",
        "notifications/initialized", "notifications/cancelled", "notifications/progress", "notifications/roots/list_changed",
    ];

    async fn route_request(&self, caller: &Caller, method: &str, req: Value) -> Result<Reply, CallError> {
        match method {
            "ping" => Ok(Reply::Result(json!({}))),
            "server/discover" => Ok(Reply::Result(self.discover())),
            "initialize" => Err(CallError::InvalidRequest("session already initialized".into())),
            "tools/list" => {
                let cat = self.catalog().await;
                let tools = match self.visible_for(&caller.principal) {
                    None => cat.tools.clone(),
                    Some(v) => cat.tools.iter().filter(|t| t.get("name").and_then(Value::as_str).is_some_and(|n| v.contains(n))).cloned().collect(),
                };
                Ok(Reply::Result(json!({ "tools": tools })))
            }
            "prompts/list" => {
                let cat = self.catalog().await;
                let prompts = cat.prompts.iter().filter(|p| self.may_read(&caller.principal, "prompts/get", &cat, p.get("name").and_then(Value::as_str).unwrap_or_default())).cloned().collect::<Vec<_>>();
                Ok(Reply::Result(json!({ "prompts": prompts })))
            }
            "resources/list" => self.list_resources(caller, "resources/list", "resources").await,
            "resources/templates/list" => Ok(Reply::Result(json!({"resourceTemplates": self.catalog().await.resource_templates.clone()}))),
            "tools/call" | "prompts/get" | "resources/read" => self.call(caller, method, req).await,
            "completion/complete" => self.complete(caller, req).await,
            "resources/subscribe" | "resources/unsubscribe" => self.subscribe(caller, method, req).await,
            "logging/setLevel" => self.set_level(caller, req).await,
            _ => self.passthrough(caller, method, req).await,
        }
    }

    /// The fast path for the list methods: the whole JSON-RPC response, spliced from the
    /// catalog's pre-serialised list with no per-request cloning or serialising. `None` for
    /// anything else (and for a request whose `id` is not plain), which takes
    /// [`Gateway::handle_request`]. The answer is byte-for-byte what that path would produce.
    pub async fn cached_list(&self, req: &Value, stateless: bool, principal: &Principal) -> Option<String> {
        let method = jsonrpc::method(req)?;
        let id = req.get("id").filter(|i| jsonrpc::valid_id(i))?;
        let cat = match method {
            "tools/list" | "resources/templates/list" => self.catalog().await,
            _ => return None,
        };
        let filtered;
        let (key, list) = match method {
            "tools/list" => match self.visible_for(principal) {
                None => ("tools", &cat.tools_json),
                Some(v) => {
                    let mut out = String::with_capacity(cat.tools_json.len());
                    out.push('[');
                    for (_, json) in cat.tools_each.iter().filter(|(n, _)| v.contains(n)) {
                        if out.len() > 1 {
                            out.push(',');
                        }
                        out.push_str(json);
                    }
                    out.push(']');
                    filtered = out;
                    ("tools", &filtered)
                }
            },
            _ => ("resourceTemplates", &cat.resource_templates_json),
        };
        // The empty catalog in place before the first build has no serialised lists yet.
        let list = if list.is_empty() { "[]" } else { list.as_str() };
        let extra = if stateless { r#","resultType":"complete","ttlMs":0,"cacheScope":"private""# } else { "" };
        Some(format!(r#"{{"jsonrpc":"2.0","result":{{"{key}":{list}{extra}}},"id":{id}}}"#))
    }

    /// A client notification.
    pub async fn handle_notification(&self, caller: &Caller, msg: Value) {
        match jsonrpc::method(&msg).unwrap_or_default() {
            "notifications/initialized" => {}
            "notifications/cancelled" => {
                if let (Some(s), Some(rid)) = (caller.session(), jsonrpc::params(&msg).and_then(|p| p.get("requestId"))) {
                    s.cancel(rid);
                }
            }
            "notifications/roots/list_changed" => {
                for i in 0..self.slots.len() {
                    if let Some(up) = self.running_upstream_for(caller, i) {
                        let _ = up.notify(msg.clone()).await;
                    }
                }
            }
            // Progress the client reports on a server request (sampling, elicitation) goes to
            // the upstream when there is only one to have asked.
            "notifications/progress" if self.slots.len() == 1 => {
                if let Some(up) = self.running_upstream_for(caller, 0) {
                    let _ = up.notify(msg.clone()).await;
                }
            }
            // Any other notification goes only to an upstream that lists it in `relay_methods`
            // (deny by default, like requests).
            other => match self.relaying_upstream(other) {
                Some(idx) => {
                    if let Some(up) = self.running_upstream_for(caller, idx) {
                        let _ = up.notify(msg.clone()).await;
                    }
                }
                None => tracing::debug!(method = other, "client notification dropped: no upstream relays it"),
            },
        }
    }

    // -----------------------------------------------------------------------------------------
    // The call path

    /// `tools/call`, `prompts/get` and `resources/read`: one ordered pipeline.
    async fn call(&self, caller: &Caller, method: &str, mut req: Value) -> Result<Reply, CallError> {
        // Stage "authenticate": the front attached the principal to the caller.
        let principal = &caller.principal;

        // Stage "route": the client-visible name → (upstream, original name). Unknown names fail
        // here and nothing is sent anywhere. A tool this principal can never call is unknown too
        // (checked only when a call is refused, so allowed calls pay nothing for it).
        let target = target_of(method, &req)?;
        let catalog = self.catalog().await;
        // One consistent policy set for the whole decision, whatever reloads meanwhile. Taken
        // after the catalog, whose first build teaches the engine the tools.
        let state = self.authz.state();
        let route = self.route_in(&catalog, method, &target)?;
        let slot = self.slots.get(route.upstream).ok_or(CallError::ShuttingDown)?;
        // Operator-fixed arguments replace whatever the client sent, before any check sees them.
        if !route.fixed_arguments.is_empty()
            && let Some(p) = jsonrpc::params_mut(&mut req)
        {
            let args = p.entry("arguments").or_insert_with(|| json!({}));
            if let Some(a) = args.as_object_mut() {
                for (k, v) in &route.fixed_arguments {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
        // The gateway declares no tasks: a task-augmented call would have its real result
        // fetched later through `tasks/result`, past post-processing, so it runs as a plain call.
        if method == "tools/call"
            && let Some(p) = jsonrpc::params_mut(&mut req)
        {
            p.remove("task");
        }
        // The gateway's own approval round (2026-07-28 retry) is taken off before anything else.
        let approval = take_approval(&mut req);
        // Borrowed, not copied: the request is not changed again until dispatch.
        let arguments = jsonrpc::params(&req).and_then(|p| p.get("arguments"));
        let info = CallInfo::new(principal, method, &slot.cfg.name, &target, arguments);
        let now = SystemTime::now();

        // Stage "validate": arguments against the pinned schema (and the operator's stricter
        // one); on the 2026 wire, the `Mcp-Param-*` headers against the arguments they mirror.
        let hidden = || method == "tools/call" && !self.authz.callable_at_all(&state, principal, &target, &slot.cfg.name);
        if method == "tools/call"
            && let Err(errors) = self.authz.check_args(&state, &target, arguments)
        {
            let d = Denial { reason: DenyReason::InvalidArguments, engine: EngineKind::Schema, policies: Vec::new(), detail: String::new() };
            self.audit_denial(&info, d);
            return Err(if hidden() { CallError::UnknownTool(target.clone()) } else { CallError::InvalidArguments(errors) });
        }
        if caller.is_stateless()
            && method == "tools/call"
            && let Some(schema) = catalog.tool_defs.get(&target).and_then(|d| d.get("inputSchema"))
        {
            era::check_param_headers(schema, arguments, &caller.forward_headers).map_err(CallError::HeaderMismatch)?;
        }
        // Stage "label": where each argument value came from, and who may read it. A store
        // that cannot answer in time denies the call.
        let scope = label_scope(caller);
        let view = if method == "tools/call" && !self.labels.enabled() {
            Some(LabelView::empty(false))
        } else if method == "tools/call" {
            let names: Vec<&str> = catalog.tool_defs.get(&target).and_then(|d| d.pointer("/inputSchema/properties")).and_then(Value::as_object).map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
            let roles = self.labels.roles(&target, names.iter().copied());
            let intent = &principal.prepared().info.intent;
            let intent = IntentValues::new(intent.recipients.iter().chain(&intent.accounts).chain(&intent.urls));
            match self.labels.trace(&scope, arguments, &intent, &roles).await {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(target: "clawgate::labels", %target, "call denied: {e}");
                    let den = Denial { reason: DenyReason::LabelStoreUnavailable, engine: EngineKind::Labels, policies: Vec::new(), detail: e.public().to_owned() };
                    self.audit_denial(&info, Denial { detail: e.detail, ..den.clone() });
                    return Err(CallError::Denied(den));
                }
            }
        } else {
            None
        };
        // Stage "decide": Biscuit ∧ Cedar (deny wins; an engine error denies).
        let decision = match &view {
            Some(v) => self.authz.decide_tool(&state, principal, &target, &slot.cfg.name, arguments, v, now),
            None => self.authz.decide_other(&state, principal, method, &slot.cfg.name, &target, now),
        };
        let shadow = state.mode == PolicyMode::Shadow;
        // Stage "rate-limit": per principal, and per principal and tool (`[rate_limit]`). Only
        // calls that would go through count, and the limit is checked before a human is asked
        // to approve. A refusal is the call's one audited decision.
        if (shadow || !matches!(decision, Decision::Deny(_)))
            && let Err(den) = self.rate_limit.check(principal.id(), &target, std::time::Instant::now())
        {
            self.audit_denial(&info, den.clone());
            return Err(CallError::Denied(den));
        }
        // A call that would go through is refused if its record cannot be kept (`on_failure`).
        self.audit_decision(&info, &decision, shadow, view.filter(|_| self.labels.enabled())).map_err(CallError::Denied)?;
        match (&decision, shadow) {
            (Decision::Allow { .. }, _) => {}
            (_, true) => tracing::warn!(target: "clawgate::policy", principal = %principal.id(), %target, "shadow mode: would {}: {}", decision.label(), authz::summary(&decision)),
            (Decision::Deny(d), false) => return Err(if hidden() { CallError::UnknownTool(target.clone()) } else { CallError::Denied(d.clone()) }),
            (Decision::Ask { policy, message }, false) => {
                if let Some(reply) = self.approve(caller, &info, policy, message, approval).await? {
                    return Ok(reply);
                }
            }
        }

        // The digest the withheld-result record needs, taken while the arguments are at hand
        // and only when that record goes anywhere (the decision record has computed it already).
        let labelled = matches!(method, "tools/call" | "resources/read") && self.labels.enabled();
        let digest = (labelled && self.audit.is_on()).then(|| format!("sha256:{}", hex::encode(info.digest())));

        // A 2026-07-28 upstream's `Mcp-Param-*` headers are the gateway's own, mirrored from
        // the arguments as sent (operator-fixed values included) per the upstream's schema; the
        // client's were checked above and never travel.
        let param_headers = match route.def.get("inputSchema") {
            Some(schema) if method == "tools/call" => era::param_headers(schema, arguments),
            _ => Vec::new(),
        };

        // Stage "dispatch": rewrite the name back to the upstream's and send. The client's own
        // credentials never travel: upstream requests carry only operator-configured headers.
        let key = if method == "resources/read" { "uri" } else { "name" };
        if let Some(p) = jsonrpc::params_mut(&mut req) {
            p.insert(key.into(), route.original.clone().into());
        }
        let answer = self.dispatch_answer(caller, route.upstream, req, &param_headers).await?;

        // Stage "post-process", when nothing in the result has to change: no string the
        // sanitiser would touch and no URI to namespace. The result is relayed as the upstream's
        // bytes; only its labels need it parsed. (A 2026-07-28 client's answer is completed
        // with fields of its own, so it takes the general path.)
        let post = Post { scope: &scope, slot, route: &route, target: &target, labelled, digest: digest.as_deref(), principal };
        let answer = match answer {
            Answer::Raw(raw) if !caller.is_stateless() && !catalog::may_namespace(&self.spaces[route.upstream], raw.result()) => {
                if !labelled {
                    if sanitize::json_is_clean(raw.result()) && raw.within_parse_depth() {
                        return Ok(Reply::Raw(raw));
                    }
                    Answer::Raw(raw)
                } else {
                    // The labels need the result parsed; cleaning the parse (which finds
                    // nothing, or the general path takes over) costs less than scanning the
                    // bytes as well. A result relayed as bytes must parse one way only: one that
                    // names a member twice, which a client may read differently from the parse
                    // the labels come from, is parsed and written out again like any other.
                    let clean = raw.unique_result_value().and_then(|mut result| sanitize::sanitize_value(&mut result).is_empty().then_some(result));
                    match clean {
                        Some(result) => {
                            self.record_labels(&post, &result).await?;
                            return Ok(Reply::Raw(raw));
                        }
                        None => Answer::Raw(raw),
                    }
                }
            }
            other => other,
        };
        self.post_process(answer, &post).await
    }

    /// Stage "post-process" in general: namespace the URIs the result carries, clean every
    /// string of the answer (result or error) of what a reviewer cannot see but the model
    /// reads, and record its labels.
    async fn post_process(&self, answer: Answer, post: &Post<'_>) -> Result<Reply, CallError> {
        let Post { slot, route, target, labelled, .. } = *post;
        let mut resp = answer.into_value().map_err(|e| unparsable(&slot.cfg.name, &e))?;
        if let Some(result) = resp.get_mut("result") {
            catalog::namespace_uris(&self.spaces[route.upstream], result);
        }
        self.sanitise_answer(&slot.cfg.name, target, &mut resp);
        // Record the answer's labels for later calls in this scope (an upstream's error carries
        // its data as well as a result does).
        let error_part;
        let answer = match (resp.get("result"), resp.get("error")) {
            (Some(r), _) => Some(r),
            (None, Some(e)) => {
                error_part = json!({ "structuredContent": e });
                Some(&error_part)
            }
            (None, None) => None,
        };
        if labelled && let Some(answer) = answer {
            self.record_labels(post, answer).await?;
        }
        Ok(Reply::Message(resp))
    }

    /// Records an answer's labels for later calls in this scope. If they cannot be recorded the
    /// answer is withheld: data the gateway cannot trace never reaches the model.
    async fn record_labels(&self, post: &Post<'_>, answer: &Value) -> Result<(), CallError> {
        let Post { scope, slot, route, target, digest, principal, .. } = *post;
        let upstream = &slot.cfg.name;
        match self.labels.record(scope, &format!("{upstream}/{}", route.original), target, slot.cfg.declares_labels, answer).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(target: "clawgate::labels", %upstream, %target, "result withheld: {e}");
                self.audit.record("labels.result_withheld", json!({"principal": principal.id(), "upstream": upstream, "target": target, "call": digest, "error": e.detail}));
                Err(CallError::Denied(Denial { reason: DenyReason::LabelStoreUnavailable, engine: EngineKind::Labels, policies: Vec::new(), detail: format!("{}; the result was withheld", e.public()) }))
            }
        }
    }

    /// Cleans every string of an upstream's answer (its result or its error, keys included)
    /// of hidden content, and logs and audits what was found.
    fn sanitise_answer(&self, upstream: &str, target: &str, answer: &mut Value) {
        sanitise_with(&self.audit, upstream, target, answer);
    }

    /// Stage "audit": one record per decision (never argument values; the call digest binds
    /// the record to the exact call). A decision that lets the call through (an allow, an ask,
    /// anything in shadow mode) whose record cannot be kept, because the audit log's last write
    /// failed or its queue is full, becomes an `audit_unavailable` denial under `[audit]
    /// on_failure = "deny"`: the `Err` is the denial to answer with.
    fn audit_decision(&self, info: &CallInfo<'_>, d: &Decision, shadow: bool, labels: Option<LabelView>) -> Result<(), Denial> {
        let p = info.principal;
        if let Decision::Deny(den) = d {
            tracing::info!(target: "clawgate::policy", principal = %p.id(), target = %info.target, reason = den.reason.as_str(), "denied: {den}");
        }
        if !self.audit.is_on() {
            return Ok(());
        }
        let strict = (shadow || !matches!(d, Decision::Deny(_))) && self.audit_must_keep_records();
        let unavailable = |detail: &str| Denial { reason: DenyReason::AuditUnavailable, engine: EngineKind::Gateway, policies: Vec::new(), detail: detail.to_owned() };
        if strict && !self.audit.writable() {
            // The denial replaces the decision in the log: one record per call.
            let den = unavailable("the audit log's last write failed");
            self.audit_denial(info, den.clone());
            return Err(den);
        }
        // Only owned copies cross to the writer, which renders the record (the labels part is
        // most of its cost) off the call's path.
        let queued = self.audit.decision(crate::audit::DecisionRecord {
            decision: d.clone(),
            principal: p.id().to_owned(),
            method: info.method.to_owned(),
            upstream: info.upstream.to_owned(),
            target: info.target.to_owned(),
            call: *info.digest(),
            shadow,
            labels,
        });
        if strict && !queued {
            let den = unavailable("the audit log's queue is full");
            tracing::info!(target: "clawgate::policy", principal = %p.id(), target = %info.target, reason = den.reason.as_str(), "denied: {den}");
            return Err(den);
        }
        Ok(())
    }

    /// [`Gateway::audit_decision`] for a denial, which cannot be refused again.
    fn audit_denial(&self, info: &CallInfo<'_>, d: Denial) {
        let _denied_anyway = self.audit_decision(info, &Decision::Deny(d), false, None);
    }

    /// A permit with `@ask`: get a human's approval for exactly this call. `Ok(None)` means
    /// approved (go on); `Ok(Some(reply))` is the `input_required` round for a 2026-07-28
    /// client; an error denies.
    async fn approve(&self, caller: &Caller, info: &CallInfo<'_>, policy: &str, message: &str, retry: Option<ApprovalRetry>) -> Result<Option<Reply>, CallError> {
        let digest = info.digest();
        let timeout = self.cfg.policy.as_ref().map_or(Duration::from_secs(120), |p| p.approval_timeout);
        let deny = |reason: DenyReason, detail: String| CallError::Denied(Denial { reason, engine: EngineKind::Gateway, policies: vec![policy.to_owned()], detail });
        let record = |outcome: &str| {
            self.audit.record("approval", json!({"outcome": outcome, "policy": policy, "principal": caller.principal.id(), "target": info.target, "call": format!("sha256:{}", hex::encode(digest))}));
        };
        let elicit = json!({
            "mode": "form",
            "message": format!("{message}\n\n{} wants to call {} with:\n{}", caller.principal.id(), info.target, preview(info.arguments)),
            "requestedSchema": {
                "type": "object",
                "properties": {"approve": {"type": "boolean", "title": "Approve this call", "default": false}},
                "required": ["approve"],
            },
        });
        if let Some(r) = retry {
            // The 2026-07-28 retry: the answer rides on the request; the approval it names must
            // be for exactly this call, unexpired and unused.
            if let Err(why) = self.authz.approval_take(&r.id, digest) {
                record("replay_refused");
                return Err(deny(DenyReason::ApprovalDenied, why.into()));
            }
            return if r.accepted {
                record("approved");
                Ok(None)
            } else {
                record("declined");
                Err(deny(DenyReason::ApprovalDenied, "the approver declined".into()))
            };
        }
        if caller.capabilities().get("elicitation").is_none() {
            record("unavailable");
            return Err(deny(DenyReason::ApprovalRequired, message.to_owned()));
        }
        match &caller.era {
            CallerEra::Stateless { .. } => {
                let id = self.authz.approval_open(*digest, timeout).ok_or_else(|| {
                    record("failed");
                    deny(DenyReason::EngineError, "no randomness for an approval id".into())
                })?;
                record("requested");
                let result = json!({
                    "resultType": "input_required",
                    "inputRequests": {APPROVAL_KEY: {"method": "elicitation/create", "params": elicit}},
                    "requestState": format!("{APPROVAL_STATE}{id}"),
                });
                Ok(Some(Reply::Result(result)))
            }
            CallerEra::Legacy(session) => {
                let id = self.authz.approval_open(*digest, timeout).ok_or_else(|| {
                    record("failed");
                    deny(DenyReason::EngineError, "no randomness for an approval id".into())
                })?;
                record("requested");
                let ask = jsonrpc::request(Value::Null, "elicitation/create", Some(elicit));
                let answer = match ask_session(session, &caller.out, ask, timeout).await {
                    Ok(a) => a,
                    Err(CallError::ClientTimeout(_)) => {
                        record("timeout");
                        return Err(deny(DenyReason::ApprovalDenied, format!("no answer within {timeout:?}")));
                    }
                    Err(e) => {
                        record("failed");
                        return Err(deny(DenyReason::ApprovalDenied, e.client_message()));
                    }
                };
                let accepted = approval_accepted(answer.get("result"));
                // The answer can come after the approval expired: then it no longer counts.
                self.authz.approval_take(&id, digest).map_err(|why| {
                    record("expired");
                    deny(DenyReason::ApprovalDenied, why.into())
                })?;
                if accepted {
                    record("approved");
                    Ok(None)
                } else {
                    record("declined");
                    Err(deny(DenyReason::ApprovalDenied, "the approver declined".into()))
                }
            }
        }
    }

    /// The tools `p` may see, or `None` when lists are not filtered (shadow mode).
    fn visible_for(&self, p: &Principal) -> Option<Arc<std::collections::HashSet<String>>> {
        let state = self.authz.state();
        if state.mode == PolicyMode::Shadow {
            return None;
        }
        Some(self.authz.visible_tools(&state, p))
    }

    /// Whether `p` may get the prompt (or read the resource) `target`: lists show only these.
    fn may_read(&self, p: &Principal, method: &str, cat: &Catalog, target: &str) -> bool {
        let upstream = match method {
            "prompts/get" => cat.prompt(target).map(|r| r.upstream),
            _ => catalog::route_uri(&self.spaces, target).map(|r| r.upstream),
        };
        upstream.is_some_and(|i| self.may_read_at(p, method, i, target))
    }

    /// [`Gateway::may_read`] for a target already routed to upstream `idx`. Shadow mode allows.
    fn may_read_at(&self, p: &Principal, method: &str, idx: usize, target: &str) -> bool {
        let state = self.authz.state();
        if state.mode == PolicyMode::Shadow {
            return true;
        }
        let Some(up) = self.slots.get(idx) else { return false };
        !self.authz.decide_other(&state, p, method, &up.cfg.name, target, SystemTime::now()).is_deny()
    }

    async fn route(&self, method: &str, target: &str) -> Result<Route, CallError> {
        self.route_in(&*self.catalog().await, method, target)
    }

    fn route_in(&self, catalog: &Catalog, method: &str, target: &str) -> Result<Route, CallError> {
        if let Some(q) = catalog.quarantined.get(target) {
            return Err(CallError::Quarantined { name: target.to_owned(), reason: q.reason.to_string() });
        }
        match method {
            "tools/call" => catalog.tool(target).cloned().ok_or_else(|| CallError::UnknownTool(target.into())),
            "prompts/get" => catalog.prompt(target).cloned().ok_or_else(|| CallError::UnknownPrompt(target.into())),
            _ => catalog::route_uri(&self.spaces, target).ok_or_else(|| CallError::UnknownResource(target.into())),
        }
    }

    /// Sends a request to an upstream and relays everything the upstream says about it until
    /// the response arrives. For a legacy client facing a 2026-07-28 upstream it also drives
    /// MRTR rounds (`input_required`) by asking the client through ordinary server requests.
    /// `headers` are the call's `Mcp-Param-*` headers for a 2026-07-28 upstream.
    async fn dispatch(&self, caller: &Caller, idx: usize, req: Value, headers: &[(String, String)]) -> Result<Value, CallError> {
        let name = self.upstream_name(idx);
        self.dispatch_answer(caller, idx, req, headers).await?.into_value().map_err(|e| unparsable(name, &e))
    }

    /// [`Gateway::dispatch`], with a plain success kept as the upstream's bytes when it cannot be
    /// asking for input (see [`Answer`]).
    async fn dispatch_answer(&self, caller: &Caller, idx: usize, req: Value, headers: &[(String, String)]) -> Result<Answer, CallError> {
        let up = self.upstream_for(caller, idx).await?;
        let mut req = req;
        // Only a caller with a session can be asked for input, and only a 2026-07-28 upstream
        // asks for it: only then can the request be needed again, so only then is it kept.
        let keep = caller.session().is_some() && up.may_ask_for_input();
        for _round in 0..MAX_INPUT_ROUNDS {
            let send = if keep { req.clone() } else { std::mem::take(&mut req) };
            let resp = match self.dispatch_once(caller, &up, send, headers).await? {
                Answer::Raw(raw) if memchr::memmem::find(raw.result(), b"input_required").is_none() => return Ok(Answer::Raw(raw)),
                answer => answer.into_value().map_err(|e| unparsable(up.name(), &e))?,
            };
            let needs_input = resp.get("result").and_then(|r| r.get("resultType")).and_then(Value::as_str) == Some("input_required");
            if needs_input && !keep && caller.session().is_some() {
                // A legacy upstream has no such answer (or the connection changed revision
                // under the call): it is relayed as it came, as that server would send it.
                tracing::warn!(upstream = %up.name(), "an upstream not known to speak 2026-07-28 asked for input; its answer is relayed as it is");
            }
            let Some(session) = caller.session().filter(|_| needs_input && keep) else { return Ok(Answer::Parsed(resp)) };
            // A legacy client cannot see `input_required`: ask it each question as a server
            // request, then retry with the answers (and the opaque requestState, byte for byte).
            let result = resp.get("result").cloned().unwrap_or(Value::Null);
            let mut answers = Map::new();
            if let Some(Value::Object(reqs)) = result.get("inputRequests") {
                for (key, ir) in reqs {
                    let m = ir.get("method").and_then(Value::as_str).unwrap_or_default();
                    let ask = self.for_client(up.name(), jsonrpc::request(Value::Null, m, ir.get("params").cloned()))?;
                    let answer = ask_session(session, &caller.out, ask, self.cfg.limits.client_request_timeout).await?;
                    match answer.get("result") {
                        Some(r) => {
                            answers.insert(key.clone(), r.clone());
                        }
                        None => return Ok(Answer::Parsed(resp)),
                    }
                }
            }
            if let Some(p) = jsonrpc::params_mut(&mut req) {
                p.insert("inputResponses".into(), Value::Object(answers));
                match result.get("requestState") {
                    Some(s) => p.insert("requestState".into(), s.clone()),
                    None => p.remove("requestState"),
                };
            }
        }
        Err(CallError::InvalidRequest(format!("more than {MAX_INPUT_ROUNDS} input rounds")))
    }

    async fn dispatch_once(&self, caller: &Caller, up: &Upstream, req: Value, headers: &[(String, String)]) -> Result<Answer, CallError> {
        let (rel_tx, mut rel_rx) = mpsc::channel(64);
        let opts = CallOpts {
            related: Some(rel_tx),
            envelope: Envelope {
                client_capabilities: Some(caller.capabilities()),
                log_level: caller.session().and_then(|s| lock(&s.log_level).clone()),
                headers: headers.to_vec(),
            },
            timeout: None,
            prefer_legacy: !caller.is_stateless(),
        };
        let call = up.request_answer(req, opts);
        tokio::pin!(call);
        loop {
            tokio::select! {
                biased;
                Some(rel) = rel_rx.recv() => self.relay_related(caller, up.name(), rel),
                resp = &mut call => {
                    // Whatever the upstream said before its response goes out before it.
                    while let Ok(rel) = rel_rx.try_recv() {
                        self.relay_related(caller, up.name(), rel);
                    }
                    return resp.map_err(CallError::from);
                }
            }
        }
    }

    /// An upstream's request for the client, made fit to relay: only a method MCP defines for
    /// clients (deny by default), with every string cleaned of hidden content like a result's,
    /// since a sampling prompt goes straight to the client's model and an elicitation message
    /// to its user.
    fn for_client(&self, upstream: &str, mut msg: Value) -> Result<Value, CallError> {
        let method = jsonrpc::method(&msg).unwrap_or_default().to_owned();
        if !CLIENT_METHODS.contains(&method.as_str()) {
            tracing::warn!(%upstream, method = %method.escape_debug(), "upstream request for the client refused: not a client method");
            return Err(CallError::NotAClientMethod(method));
        }
        self.sanitise_answer(upstream, &method, &mut msg);
        Ok(msg)
    }

    /// Relays one message the upstream sent about a call in flight.
    fn relay_related(&self, caller: &Caller, upstream: &str, rel: Related) {
        match rel {
            Related::Notification(mut msg) => {
                // On the 2026 wire a request gets log messages only if it asked for them, even
                // when a legacy upstream sends them anyway.
                if matches!(caller.era, CallerEra::Stateless { logs: false, .. }) && jsonrpc::method(&msg) == Some("notifications/message") {
                    return;
                }
                // Progress messages and log data reach the client too: cleaned like results.
                let method = jsonrpc::method(&msg).unwrap_or_default().to_owned();
                self.sanitise_answer(upstream, &method, &mut msg);
                if caller.out.try_send(msg).is_err() {
                    tracing::debug!("client stream full or closed; notification dropped");
                }
            }
            Related::Request(msg, responder) => {
                let upstream_id = msg.get("id").cloned().unwrap_or(Value::Null);
                let msg = self.for_client(upstream, msg);
                let out = caller.out.clone();
                let session = caller.session().cloned();
                let timeout = self.cfg.limits.client_request_timeout;
                tokio::spawn(async move {
                    let answer = match (msg, session) {
                        (Err(e), _) => Err(e),
                        (Ok(msg), Some(s)) => ask_session(&s, &out, msg, timeout).await,
                        (Ok(_), None) => Err(CallError::ClientCannot("server-initiated (2026-07-28 clients answer input_required instead)".into())),
                    };
                    let mut resp = match answer {
                        Ok(r) => r,
                        Err(e) => e.to_response(Value::Null),
                    };
                    if let Some(o) = resp.as_object_mut() {
                        o.insert("id".into(), upstream_id);
                    }
                    let _ = responder.respond(resp).await;
                });
            }
        }
    }

    /// The upstream instance serving this caller: the shared one, or the session's own for
    /// `per_session` upstreams (started on first use).
    async fn upstream_for(&self, caller: &Caller, idx: usize) -> Result<Upstream, CallError> {
        let slot = self.slots.get(idx).ok_or(CallError::ShuttingDown)?;
        let Some(session) = caller.session().filter(|_| slot.per_session) else { return Ok(slot.shared.clone()) };
        if let Some(u) = lock(&session.own_upstreams).get(&idx) {
            return Ok(u.clone());
        }
        let http = clawgate_adapters::transport::http::client(4).map_err(|e| CallError::InvalidRequest(e.to_string()))?;
        let (tx, rx) = mpsc::channel(256);
        let up = Upstream::start(slot.spec.clone(), http, tx);
        tokio::spawn(session_event_loop(Arc::downgrade(session), rx, slot.cfg.name.clone(), self.spaces.get(idx).cloned().ok_or(CallError::ShuttingDown)?, self.audit.clone()));
        let mut own = lock(&session.own_upstreams);
        Ok(own.entry(idx).or_insert(up).clone())
    }

    /// The upstream a caller's message would go to, but only if it is running already: a
    /// notification or a log level never starts a per-session child (a client could otherwise
    /// start one per session without any call being allowed).
    fn running_upstream_for(&self, caller: &Caller, idx: usize) -> Option<Upstream> {
        let slot = self.slots.get(idx)?;
        match caller.session().filter(|_| slot.per_session) {
            Some(session) => lock(&session.own_upstreams).get(&idx).cloned(),
            None => Some(slot.shared.clone()),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Other routed methods

    async fn complete(&self, caller: &Caller, mut req: Value) -> Result<Reply, CallError> {
        let r = jsonrpc::params(&req).and_then(|p| p.get("ref")).cloned().unwrap_or(Value::Null);
        let (route, key) = match r.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
                (self.route("prompts/get", name).await?, "name")
            }
            Some("ref/resource") => {
                let uri = r.get("uri").and_then(Value::as_str).unwrap_or_default();
                (self.route("resources/read", uri).await?, "uri")
            }
            _ => return Err(CallError::InvalidParams("`ref.type` must be `ref/prompt` or `ref/resource`".into())),
        };
        let (method, target) = if key == "name" { ("prompts/get", r.get("name")) } else { ("resources/read", r.get("uri")) };
        self.check_readable(caller, method, target.and_then(Value::as_str).unwrap_or_default(), route.upstream)?;
        if let Some(rf) = jsonrpc::params_mut(&mut req).and_then(|p| p.get_mut("ref")).and_then(Value::as_object_mut) {
            rf.insert(key.into(), route.original.into());
        }
        let mut resp = self.dispatch(caller, route.upstream, req, &[]).await?;
        self.sanitise_answer(self.upstream_name(route.upstream), "completion/complete", &mut resp);
        Ok(Reply::Message(resp))
    }

    /// Completions and subscriptions are allowed only on what the principal may get or read;
    /// anything else is as unknown as it is in the lists.
    fn check_readable(&self, caller: &Caller, method: &str, target: &str, upstream: usize) -> Result<(), CallError> {
        if self.may_read_at(&caller.principal, method, upstream, target) {
            return Ok(());
        }
        Err(if method == "prompts/get" { CallError::UnknownPrompt(target.into()) } else { CallError::UnknownResource(target.into()) })
    }

    async fn subscribe(&self, caller: &Caller, method: &str, mut req: Value) -> Result<Reply, CallError> {
        let uri = jsonrpc::params(&req).and_then(|p| p.get("uri")).and_then(Value::as_str).unwrap_or_default().to_owned();
        let route = self.route("resources/read", &uri).await?;
        if method == "resources/subscribe" {
            self.check_readable(caller, "resources/read", &uri, route.upstream)?;
        }
        if let Some(p) = jsonrpc::params_mut(&mut req) {
            p.insert("uri".into(), route.original.into());
        }
        let mut resp = self.dispatch(caller, route.upstream, req, &[]).await?;
        self.sanitise_answer(self.upstream_name(route.upstream), method, &mut resp);
        if let (Some(s), None) = (caller.session(), resp.get("error")) {
            let mut subs = lock(&s.subscriptions);
            if method == "resources/subscribe" { subs.insert(uri) } else { subs.remove(&uri) };
        }
        Ok(Reply::Message(resp))
    }

    async fn set_level(&self, caller: &Caller, req: Value) -> Result<Reply, CallError> {
        let level = jsonrpc::params(&req).and_then(|p| p.get("level")).and_then(Value::as_str).map(str::to_owned);
        if let Some(s) = caller.session() {
            *lock(&s.log_level) = level;
        }
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(up) = self.running_upstream_for(caller, i) else { continue };
            let logs = up.info().await.is_ok_and(|info| info.capabilities.get("logging").is_some());
            if logs {
                let opts = CallOpts { prefer_legacy: !caller.is_stateless(), ..CallOpts::default() };
                if let Err(e) = up.request(req.clone(), opts).await {
                    tracing::debug!(upstream = %slot.cfg.name, error = %e, "logging/setLevel failed");
                }
            }
        }
        Ok(Reply::Result(json!({})))
    }

    /// A method the gateway does not know is refused (deny by default: no policy governs it)
    /// unless an upstream lists it in `relay_methods`; then it is relayed to that upstream as it
    /// is, and its answer is cleaned like any other. The config loader refuses `tasks/*` there:
    /// tasks would live on the gateway's shared upstream connection, readable across
    /// principals, and their results would skip the call's post-processing.
    ///
    /// Each relayed request is audited (`relay`: principal, upstream, method), and refused like
    /// a call when the audit log cannot be written and `on_failure = "deny"`.
    async fn passthrough(&self, caller: &Caller, method: &str, req: Value) -> Result<Reply, CallError> {
        let Some(idx) = self.relaying_upstream(method) else {
            return Err(CallError::MethodNotFound(method.into()));
        };
        if self.audit.is_on() {
            if self.audit_must_keep_records() && !self.audit.writable() {
                return Err(CallError::Denied(Denial { reason: DenyReason::AuditUnavailable, engine: EngineKind::Gateway, policies: Vec::new(), detail: "the audit log's last write failed".into() }));
            }
            self.audit.record("relay", json!({"principal": caller.principal.id(), "upstream": self.upstream_name(idx), "method": method}));
        }
        let mut resp = self.dispatch(caller, idx, req, &[]).await?;
        self.sanitise_answer(self.upstream_name(idx), method, &mut resp);
        Ok(Reply::Message(resp))
    }

    /// The upstream that lists `method` in `relay_methods` (at most one: the loader checks).
    fn relaying_upstream(&self, method: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.cfg.relay_methods.iter().any(|m| m == method))
    }

    /// Whether what goes through must be refused when its audit record cannot be kept: an
    /// audit file and `on_failure = "deny"`.
    fn audit_must_keep_records(&self) -> bool {
        self.audit.has_file() && self.cfg.audit.on_failure == AuditOnFailure::Deny
    }

    async fn list_resources(&self, caller: &Caller, method: &str, key: &str) -> Result<Reply, CallError> {
        let mut all = Vec::new();
        let cat = self.catalog().await;
        for (i, slot) in self.slots.iter().enumerate() {
            // Listing never starts a per-session child (a client could start one per session
            // with no call allowed): the session's own child answers once a call started it,
            // the shared instance, which serves the tool list too, before.
            let up = self.running_upstream_for(caller, i).unwrap_or_else(|| slot.shared.clone());
            let Ok(info) = up.info().await else { continue };
            if info.capabilities.get("resources").is_none() {
                continue;
            }
            match fetch_all(&up, method, key).await {
                Ok(items) => {
                    let mut wrapped = json!({ key: items });
                    catalog::namespace_uris(&self.spaces[i], &mut wrapped);
                    self.sanitise_answer(up.name(), method, &mut wrapped);
                    if let Some(Value::Array(items)) = wrapped.get_mut(key).map(Value::take) {
                        all.extend(items.into_iter().filter(|r| self.may_read(&caller.principal, "resources/read", &cat, r.get("uri").and_then(Value::as_str).unwrap_or_default())));
                    }
                }
                Err(e) => tracing::warn!(upstream = %up.name(), error = %e, "{method} failed"),
            }
        }
        Ok(Reply::Result(json!({ key: all })))
    }

    // -----------------------------------------------------------------------------------------
    // Federation state

    /// The current catalog; upstreams never listed yet are listed first.
    pub async fn catalog(&self) -> Arc<Catalog> {
        let missing: Vec<usize> = lock(&self.listed).iter().enumerate().filter(|(_, l)| !**l).map(|(i, _)| i).collect();
        if !missing.is_empty() {
            // Boxed: listing is rare, and its state (kilobytes) would otherwise be part of the
            // future of every call that reads the catalog, copied whole into its box.
            Box::pin(self.list_missing(missing)).await;
        }
        Arc::clone(&self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Lists the upstreams not listed yet (each once, under the refresh lock).
    async fn list_missing(&self, missing: Vec<usize>) {
        let _g = self.refresh_lock.lock().await;
        for i in missing {
            if lock(&self.listed).get(i).is_some_and(|l| !*l) {
                let _ = self.refresh_unlocked(i).await;
            }
        }
    }

    /// Re-lists one upstream's tools and prompts. Returns which lists changed.
    async fn refresh(&self, idx: usize) -> (bool, bool) {
        let _g = self.refresh_lock.lock().await;
        self.refresh_unlocked(idx).await
    }

    async fn refresh_unlocked(&self, idx: usize) -> (bool, bool) {
        let Some(slot) = self.slots.get(idx) else { return (false, false) };
        let up = &slot.shared;
        let info = match up.info().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(upstream = %slot.cfg.name, error = %e, "cannot list: upstream unavailable");
                return (false, false);
            }
        };
        let mut fresh = UpstreamLists::default();
        if info.capabilities.get("tools").is_some() {
            match fetch_all(up, "tools/list", "tools").await {
                Ok(t) => fresh.tools = t,
                Err(e) => {
                    tracing::warn!(upstream = %slot.cfg.name, error = %e, "tools/list failed");
                    return (false, false);
                }
            }
        }
        if info.capabilities.get("prompts").is_some() {
            match fetch_all(up, "prompts/list", "prompts").await {
                Ok(p) => fresh.prompts = p,
                Err(e) => tracing::warn!(upstream = %slot.cfg.name, error = %e, "prompts/list failed"),
            }
        }
        if info.capabilities.get("resources").is_some() {
            match fetch_all(up, "resources/templates/list", "resourceTemplates").await {
                Ok(t) => fresh.resource_templates = t,
                Err(e) => tracing::debug!(upstream = %slot.cfg.name, error = %e, "resources/templates/list failed"),
            }
        }
        if let Some(l) = lock(&self.lists).get_mut(idx) {
            *l = Some(fresh);
        }
        self.rebuild()
    }

    /// Rebuilds the catalog from the cached lists and the pins in force, writes first-use pins,
    /// reports quarantines and findings, and swaps the catalog in. Returns whether the visible
    /// tool and prompt lists changed.
    fn rebuild(&self) -> (bool, bool) {
        let lists = lock(&self.lists).clone();
        let pins = Arc::clone(&self.pins.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let cat = Catalog::build(&self.policies, &lists, &pins);
        if !cat.new_pins.is_empty() {
            self.write_pins(&cat.new_pins);
        }
        let old = Arc::clone(&self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        for note in cat.notes.iter().filter(|n| !old.notes.contains(n)) {
            tracing::warn!(target: "clawgate::integrity", "{note}");
            self.audit.record("integrity.note", json!({"note": note}));
        }
        for (name, q) in &cat.quarantined {
            if old.quarantined.get(name) != Some(q) {
                let upstream = self.slots.get(q.upstream).map(|s| s.cfg.name.as_str()).unwrap_or_default();
                tracing::warn!(target: "clawgate::integrity", %upstream, "{} `{name}` quarantined: {}", q.kind.as_str(), q.reason);
                self.audit.record("integrity.quarantined", quarantine_json(name, upstream, q));
            }
        }
        for name in old.quarantined.keys().filter(|n| !cat.quarantined.contains_key(*n)) {
            tracing::info!(target: "clawgate::integrity", "`{name}` released from quarantine");
            self.audit.record("integrity.released", json!({"name": name}));
        }
        let changed = (old.tools != cat.tools, old.prompts != cat.prompts);
        // The policy engine learns the new tool set before the catalog exposes it, so a listed
        // tool is always one the engine can decide.
        let (inventory, tools) = self.inventory(&cat, &lists);
        if let Err(e) = self.authz.retool(inventory, tools) {
            tracing::error!(target: "clawgate::policy", "the policies do not fit the new tool set; the last good set stays in force and calls to new or changed tools are denied: {e}");
            self.audit.record("policy.rejected", json!({"cause": "tool set changed", "error": e}));
        }
        *self.catalog.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(cat);
        // INVARIANT: `listed[i]` turns true only after a catalog built from upstream i's lists
        // is in place.
        for (flag, l) in lock(&self.listed).iter_mut().zip(&lists) {
            *flag = l.is_some();
        }
        changed
    }

    /// What the policy engine needs to know about the catalog's tools and prompts.
    fn inventory(&self, cat: &Catalog, lists: &[Option<UpstreamLists>]) -> (Inventory, Vec<ToolInput>) {
        let upstreams = self
            .slots
            .iter()
            .zip(lists)
            .map(|(s, l)| UpstreamMeta {
                name: s.cfg.name.clone(),
                trusted: s.cfg.trusted,
                known: l.is_some(),
                prefix: s.cfg.prefix.clone(),
            })
            .collect();
        let mut tools = Vec::new();
        let mut metas = Vec::new();
        for (name, route) in cat.tool_routes() {
            let Some(slot) = self.slots.get(route.upstream) else { continue };
            let ov = slot.cfg.tools.get(&route.original);
            let ann = route.def.get("annotations").filter(|_| slot.cfg.trusted);
            let hint = |k: &str| ann.and_then(|a| a.get(k)).and_then(Value::as_bool);
            let read_only = ov.and_then(|o| o.read_only).or_else(|| hint("readOnlyHint")).unwrap_or(false);
            let attrs = ToolAttrs {
                category: ov.and_then(|o| o.category.clone()).unwrap_or_default(),
                owner: ov.and_then(|o| o.owner.clone()).unwrap_or_default(),
                sensitivity: ov.and_then(|o| o.sensitivity.clone()).unwrap_or_default(),
                read_only,
                destructive: ov.and_then(|o| o.destructive).or_else(|| hint("destructiveHint")).unwrap_or(!read_only),
                open_world: ov.and_then(|o| o.open_world).or_else(|| hint("openWorldHint")).unwrap_or(true),
            };
            let meta = ToolMeta {
                name: name.clone(),
                upstream: slot.cfg.name.clone(),
                input_schema: route.def.get("inputSchema").cloned().unwrap_or_else(|| json!({"type": "object"})),
                attrs,
                groups: ov.map(|o| o.groups.clone()).unwrap_or_default(),
            };
            metas.push(meta.clone());
            tools.push(ToolInput { meta, stricter: ov.and_then(|o| o.schema_value.clone()) });
        }
        let prompts = cat
            .prompt_routes()
            .filter_map(|(name, r)| Some(PromptMeta { name: name.clone(), upstream: self.slots.get(r.upstream)?.cfg.name.clone() }))
            .collect();
        (Inventory { upstreams, tools: metas, prompts }, tools)
    }

    /// Re-reads the config, keys, revocations and policy files and swaps them in if they all
    /// load; otherwise the last good set stays in force. Lists are re-announced.
    pub fn reload_policies(&self, why: &str) {
        let cfg = if self.cfg.source.is_file() {
            match Config::load(&self.cfg.source) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(target: "clawgate::policy", "reload ({why}) rejected, the last good policies stay in force: {e}");
                    self.audit.record("policy.rejected", json!({"cause": why, "error": e.to_string()}));
                    return;
                }
            }
        } else {
            (*self.cfg).clone()
        };
        match self.authz.reload(&cfg) {
            Ok(generation) => {
                tracing::info!(target: "clawgate::policy", generation, "policies reloaded ({why})");
                self.audit.record("policy.reloaded", json!({"cause": why, "generation": generation}));
                self.broadcast(jsonrpc::notification("notifications/tools/list_changed", None));
                self.broadcast(jsonrpc::notification("notifications/prompts/list_changed", None));
            }
            Err(e) => {
                tracing::error!(target: "clawgate::policy", "reload ({why}) rejected, the last good policies stay in force: {e}");
                self.audit.record("policy.rejected", json!({"cause": why, "error": e}));
            }
        }
    }

    /// Adds first-use pins: merged into what is on disk (never overwriting an entry), written
    /// atomically, and put in force.
    fn write_pins(&self, new: &[crate::pins::NewPin]) {
        let mut guard = self.pins.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut merged = match &self.cfg.pins.lockfile {
            Some(path) => LockFile::load(path).unwrap_or_else(|e| {
                tracing::error!("{e}; keeping the pins in memory");
                (**guard).clone()
            }),
            None => (**guard).clone(),
        };
        if merged.add_absent(new) {
            if let Some(path) = &self.cfg.pins.lockfile
                && let Err(e) = merged.save(path)
            {
                tracing::error!("{e}");
            }
            tracing::info!(target: "clawgate::integrity", "{} definition(s) pinned on first use", new.len());
            for p in new {
                tracing::debug!(target: "clawgate::integrity", upstream = %p.upstream, "{} `{}` pinned on first use ({})", p.kind.as_str(), p.name, p.entry.digest);
                self.audit.record("integrity.pinned", json!({"upstream": p.upstream, "kind": p.kind.as_str(), "name": p.name, "digest": p.entry.digest}));
            }
        }
        *guard = Arc::new(merged);
    }

    /// Re-reads the lockfile (it changed on disk: `clawgate tools approve`, an edit) and, if it
    /// parses, puts it in force and rebuilds. A broken lockfile leaves the last good pins.
    async fn reload_pins(&self) {
        let Some(path) = &self.cfg.pins.lockfile else { return };
        match LockFile::load(path) {
            Ok(lock) => {
                *self.pins.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(lock);
                let _g = self.refresh_lock.lock().await;
                let (tools, prompts) = self.rebuild();
                if tools {
                    self.broadcast(jsonrpc::notification("notifications/tools/list_changed", None));
                }
                if prompts {
                    self.broadcast(jsonrpc::notification("notifications/prompts/list_changed", None));
                }
            }
            Err(e) => tracing::error!("{e}; the previous pins stay in force"),
        }
    }

    /// What is quarantined now, for the admin API.
    pub fn quarantine_report(&self) -> Value {
        let cat = Arc::clone(&self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let items: Vec<Value> = cat
            .quarantined
            .iter()
            .map(|(name, q)| quarantine_json(name, self.slots.get(q.upstream).map(|s| s.cfg.name.as_str()).unwrap_or_default(), q))
            .collect();
        json!({"quarantined": items})
    }

    /// The raw definitions each upstream currently lists, after making sure every upstream
    /// was listed once (for `clawgate tools diff` and `approve`).
    pub async fn upstream_lists(&self) -> Vec<(String, Option<UpstreamLists>)> {
        self.catalog().await;
        let lists = lock(&self.lists).clone();
        self.slots.iter().map(|s| s.cfg.name.clone()).zip(lists).collect()
    }

    /// Sends a notification to every session's standalone stream and to 2026 subscribers.
    fn broadcast(&self, msg: Value) {
        for s in self.sessions.all() {
            s.send_standalone(msg.clone());
        }
        let _ = self.changes.send(msg);
    }

    fn upstream_name(&self, idx: usize) -> &str {
        self.slots.get(idx).map_or("", |s| s.cfg.name.as_str())
    }

    fn upstream_index(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.cfg.name == name)
    }

    async fn on_event(&self, ev: UpstreamEvent) {
        match ev {
            UpstreamEvent::Connected { upstream } => {
                let Some(i) = self.upstream_index(&upstream) else { return };
                let had = lock(&self.listed).get(i).is_some_and(|l| *l);
                let (tools, prompts) = self.refresh(i).await;
                if had && tools {
                    self.broadcast(jsonrpc::notification("notifications/tools/list_changed", None));
                }
                if had && prompts {
                    self.broadcast(jsonrpc::notification("notifications/prompts/list_changed", None));
                }
            }
            UpstreamEvent::Notification { upstream, msg } => {
                let Some(i) = self.upstream_index(&upstream) else { return };
                match jsonrpc::method(&msg).unwrap_or_default() {
                    "notifications/tools/list_changed" | "notifications/prompts/list_changed" => {
                        // Re-list first, then tell clients, so their re-list sees the change.
                        self.refresh(i).await;
                        self.broadcast(msg);
                    }
                    "notifications/resources/list_changed" => self.broadcast(msg),
                    "notifications/resources/updated" => {
                        let mut msg = msg;
                        let Some(uri) = jsonrpc::params_mut(&mut msg).and_then(|p| p.get_mut("uri")) else { return };
                        let exposed = self.spaces[i].uri(uri.as_str().unwrap_or_default());
                        *uri = exposed.clone().into();
                        for s in self.sessions.all() {
                            if lock(&s.subscriptions).contains(&exposed) {
                                s.send_standalone(msg.clone());
                            }
                        }
                    }
                    m => tracing::debug!(%upstream, method = m, "upstream notification outside any call dropped (no session to route it to)"),
                }
            }
            UpstreamEvent::Request { msg, responder, .. } => {
                // A shared upstream asked something outside any call: no client can be chosen
                // without guessing, and guessing would leak across sessions.
                let id = msg.get("id").cloned().unwrap_or(Value::Null);
                let resp = jsonrpc::error(id, jsonrpc::code::METHOD_NOT_FOUND, "no client session to route this request to", None);
                let _ = responder.respond(resp).await;
            }
        }
    }
}

/// What a routed method produced: a bare result, or a whole upstream response (whose error,
/// if any, is relayed as the upstream gave it).
enum Reply {
    Result(Value),
    Message(Value),
    /// An upstream's success relayed as the bytes it sent (see [`Answer`]).
    Raw(RawAnswer),
}

/// What goes back to the client for one request: a message, or an upstream's result relayed as
/// its bytes under the client's id.
pub enum Outgoing {
    Message(Value),
    Raw { id: Value, answer: RawAnswer },
}

impl Outgoing {
    /// The response as a message (parsing a relayed result).
    pub fn into_value(self) -> Value {
        match self {
            Self::Message(v) => v,
            Self::Raw { id, answer } => match answer.result_value() {
                Ok(result) => jsonrpc::result(id, result),
                Err(_) => jsonrpc::error(id, jsonrpc::code::INTERNAL_ERROR, "the upstream's answer could not be parsed", None),
            },
        }
    }

    /// A JSON-RPC error code, for an error response.
    pub fn error_code(&self) -> Option<i64> {
        match self {
            Self::Message(v) => v.get("error").and_then(|e| e.get("code")).and_then(Value::as_i64),
            Self::Raw { .. } => None,
        }
    }

    /// The response as compact JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            Self::Message(v) => jsonrpc::to_vec(v),
            Self::Raw { id, answer } => {
                let mut out = Vec::new();
                answer.write_response(id, &mut out);
                out
            }
        }
    }
}

/// What post-processing a call's answer needs to know about the call.
#[derive(Clone, Copy)]
struct Post<'a> {
    /// The label scope.
    scope: &'a str,
    slot: &'a Slot,
    route: &'a Route,
    /// The client-visible name.
    target: &'a str,
    /// Whether the answer's labels are recorded.
    labelled: bool,
    /// The call digest, for the withheld-result record.
    digest: Option<&'a str>,
    principal: &'a Principal,
}

/// An upstream answer that was not JSON after all.
fn unparsable(upstream: &str, e: &serde_json::Error) -> CallError {
    CallError::Upstream(clawgate_adapters::UpstreamError::Transport(upstream.to_owned(), clawgate_adapters::transport::TransportError::Invalid(e.to_string())))
}

/// The label scope of a caller: its session, or (2026-07-28, no session) its credential, so
/// that one token's calls share labels across requests and replicas.
/// A session's label scope.
fn session_scope(id: &str) -> String {
    format!("s:{id}")
}

fn label_scope(caller: &Caller) -> String {
    match caller.session() {
        Some(s) => session_scope(&s.id),
        None => format!("c:{}", hex::encode(&caller.principal.credential()[..16])),
    }
}

fn target_of(method: &str, req: &Value) -> Result<String, CallError> {
    let key = if method == "resources/read" { "uri" } else { "name" };
    jsonrpc::params(req)
        .and_then(|p| p.get(key))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CallError::InvalidParams(format!("`params.{key}` must be a string")))
}

/// Cleans what an upstream sent before a client sees it; what was cleaned is logged and
/// audited.
fn sanitise_with(audit: &Audit, upstream: &str, target: &str, answer: &mut Value) {
    let findings = sanitize::sanitize_value(answer);
    if !findings.is_empty() {
        let kinds: Vec<&str> = findings.kinds().map(|k| k.as_str()).collect();
        tracing::warn!(target: "clawgate::integrity", %upstream, %target, "result sanitised: {}", kinds.join(", "));
        audit.record("integrity.result_sanitised", json!({"upstream": upstream, "target": target, "findings": kinds}));
    }
}

/// Most bytes of JSON a session keeps of a client's `capabilities` and `clientInfo` together
/// (real clients send a few hundred).
const MAX_CLIENT_DESCRIPTION: usize = 64 * 1024;

/// The requests an upstream may send a client (through the gateway): those MCP defines.
const CLIENT_METHODS: &[&str] = &["sampling/createMessage", "elicitation/create", "roots/list", "ping"];

async fn ask_session(session: &Session, out: &mpsc::Sender<Value>, req: Value, timeout: Duration) -> Result<Value, CallError> {
    let method = jsonrpc::method(&req).unwrap_or_default().to_owned();
    let needed = match method.as_str() {
        "sampling/createMessage" => Some("sampling"),
        "elicitation/create" => Some("elicitation"),
        "roots/list" => Some("roots"),
        _ => None,
    };
    if let Some(cap) = needed
        && !session.can(cap) {
            return Err(CallError::ClientCannot(method));
        }
    session.ask_client(req, out, timeout).await
}

/// The gateway's approval answer on a 2026-07-28 retry.
struct ApprovalRetry {
    id: String,
    accepted: bool,
}

/// Takes the gateway's own `requestState` and `inputResponses` entry off a retried call.
fn take_approval(req: &mut Value) -> Option<ApprovalRetry> {
    let p = jsonrpc::params_mut(req)?;
    let state = p.get("requestState").and_then(Value::as_str)?.strip_prefix(APPROVAL_STATE)?.to_owned();
    p.remove("requestState");
    let answer = match p.get_mut("inputResponses").and_then(Value::as_object_mut) {
        Some(r) => r.remove(APPROVAL_KEY),
        None => None,
    };
    if p.get("inputResponses").and_then(Value::as_object).is_some_and(|r| r.is_empty()) {
        p.remove("inputResponses");
    }
    Some(ApprovalRetry { id: state, accepted: approval_accepted(answer.as_ref()) })
}

/// An elicitation answer approves only when accepted with `approve: true`.
fn approval_accepted(result: Option<&Value>) -> bool {
    let Some(r) = result else { return false };
    r.get("action").and_then(Value::as_str) == Some("accept") && r.get("content").and_then(|c| c.get("approve")).and_then(Value::as_bool) == Some(true)
}

/// The arguments as the approver sees them: compact JSON, cut at 2,000 characters.
fn preview(args: Option<&Value>) -> String {
    let s = args.map(Value::to_string).unwrap_or_else(|| "{}".into());
    match s.char_indices().nth(2000) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Fetches every page of a list from one upstream.
async fn fetch_all(up: &Upstream, method: &str, key: &str) -> Result<Vec<Value>, CallError> {
    let mut items = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_LIST_PAGES {
        let params = cursor.take().map(|c| json!({"cursor": c}));
        let resp = up.request(jsonrpc::request(Value::Null, method, params), CallOpts::default()).await?;
        let Some(result) = resp.get("result") else {
            return Err(CallError::InvalidRequest(format!("{method} failed upstream")));
        };
        if let Some(Value::Array(page)) = result.get(key) {
            items.extend(page.iter().cloned());
        }
        match result.get("nextCursor") {
            Some(c) if !c.is_null() => cursor = Some(c.clone()),
            _ => return Ok(items),
        }
    }
    Ok(items)
}

/// Results on the 2026-07-28 wire carry `resultType`, and list results carry cache hints.
fn complete_for_stateless(method: &str, resp: &mut Value) {
    let Some(result) = resp.get_mut("result").and_then(Value::as_object_mut) else { return };
    result.entry("resultType").or_insert_with(|| "complete".into());
    if matches!(method, "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" | "resources/read" | "server/discover") {
        result.entry("ttlMs").or_insert_with(|| 0.into());
        result.entry("cacheScope").or_insert_with(|| "private".into());
    }
}

pub fn server_info() -> Value {
    json!({"name": "clawgate", "version": env!("CARGO_PKG_VERSION")})
}

fn server_capabilities() -> Value {
    json!({
        "tools": {"listChanged": true},
        "prompts": {"listChanged": true},
        "resources": {"subscribe": true, "listChanged": true},
        "logging": {},
        "completions": {},
    })
}

/// What the gateway declares to upstreams as their client: it can relay sampling, elicitation
/// and roots requests to the client session that caused them.
fn gateway_client_capabilities() -> Value {
    json!({"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": true}})
}

fn upstream_spec(up: &UpstreamConfig, max_message: usize) -> UpstreamSpec {
    let transport = match &up.transport {
        TransportConfig::Stdio { command, args, env, cwd, .. } => {
            TransportSpec::Stdio(StdioSpec { command: command.clone(), args: args.clone(), env: env.clone(), cwd: cwd.clone() })
        }
        TransportConfig::Http { url, headers } => TransportSpec::Http(HttpSpec { url: url.clone(), headers: headers.clone() }),
    };
    UpstreamSpec {
        name: up.name.clone(),
        transport,
        timeout: up.timeout,
        max_message,
        client_info: server_info(),
        client_capabilities: gateway_client_capabilities(),
    }
}

async fn event_loop(gw: std::sync::Weak<Gateway>, mut rx: mpsc::Receiver<UpstreamEvent>) {
    while let Some(ev) = rx.recv().await {
        let Some(gw) = gw.upgrade() else { return };
        gw.on_event(ev).await;
    }
}

/// Events from a session's own (`per_session`) upstream belong to that session alone.
/// What a session's own (`per_session`) child sends outside any call. It belongs to that
/// session alone, but gets the same treatment as a shared upstream's: log messages and
/// `resources/list_changed` go on, `resources/updated` only for a URI the session subscribed
/// to (namespaced first), each cleaned like a result; anything else is dropped (the tool and
/// prompt lists come from the shared instance), and a request is refused, as no call is there
/// to answer it.
async fn session_event_loop(session: std::sync::Weak<Session>, mut rx: mpsc::Receiver<UpstreamEvent>, upstream: String, space: Namespace, audit: Audit) {
    while let Some(ev) = rx.recv().await {
        let Some(s) = session.upgrade() else { return };
        match ev {
            UpstreamEvent::Notification { mut msg, .. } => {
                let method = jsonrpc::method(&msg).unwrap_or_default().to_owned();
                match method.as_str() {
                    "notifications/message" | "notifications/resources/list_changed" => {}
                    "notifications/resources/updated" => {
                        let Some(uri) = jsonrpc::params_mut(&mut msg).and_then(|p| p.get_mut("uri")) else { continue };
                        let exposed = space.uri(uri.as_str().unwrap_or_default());
                        if !lock(&s.subscriptions).contains(&exposed) {
                            continue;
                        }
                        *uri = exposed.into();
                    }
                    m => {
                        tracing::debug!(%upstream, method = %m.escape_debug(), "per-session upstream notification outside any call dropped");
                        continue;
                    }
                }
                sanitise_with(&audit, &upstream, &method, &mut msg);
                s.send_standalone(msg);
            }
            UpstreamEvent::Request { msg, responder, .. } => {
                let id = msg.get("id").cloned().unwrap_or(Value::Null);
                let resp = jsonrpc::error(id, jsonrpc::code::METHOD_NOT_FOUND, "no call in flight to route this request to", None);
                let _ = responder.respond(resp).await;
            }
            UpstreamEvent::Connected { .. } => {}
        }
    }
}

fn quarantine_json(name: &str, upstream: &str, q: &catalog::Quarantined) -> Value {
    let changes: Vec<String> = match &q.reason {
        catalog::QuarantineReason::Changed(c) => c.iter().map(|c| clawgate_policies::integrity::diff::describe(c, 200)).collect(),
        _ => Vec::new(),
    };
    json!({"name": name, "upstream": upstream, "kind": q.kind.as_str(), "original": q.original, "reason": q.reason.to_string(), "changes": changes})
}

/// Re-lists every upstream periodically, so a server that changes its definitions without
/// saying so (no `list_changed`) is still caught.
async fn relist_loop(gw: std::sync::Weak<Gateway>) {
    let Some(every) = gw.upgrade().map(|g| g.cfg.pins.relist_interval) else { return };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(gw) = gw.upgrade() else { return };
        for i in 0..gw.slots.len() {
            let (tools, prompts) = gw.refresh(i).await;
            if tools {
                gw.broadcast(jsonrpc::notification("notifications/tools/list_changed", None));
            }
            if prompts {
                gw.broadcast(jsonrpc::notification("notifications/prompts/list_changed", None));
            }
        }
    }
}

/// Reloads policies, keys and config when their files change (polled every 250 ms) or on
/// SIGHUP.
async fn policy_watch_loop(gw: std::sync::Weak<Gateway>) {
    let files = match gw.upgrade() {
        Some(g) => authz::watched_files(&g.cfg),
        None => return,
    };
    let mut files = files;
    let mut last = authz::fingerprint(&files);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let why = tokio::select! {
            _ = tick.tick() => "file change",
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
        };
        let Some(gw) = gw.upgrade() else { return };
        if why == "file change" {
            // New files in the policy directory count too.
            files = authz::watched_files(&gw.cfg);
            let now = authz::fingerprint(&files);
            if now == last {
                continue;
            }
            last = now;
        }
        gw.reload_policies(why);
    }
}

/// Puts lockfile edits (`clawgate tools approve`) in force without a restart.
async fn lockfile_watch_loop(gw: std::sync::Weak<Gateway>) {
    let stamp = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Some(gw) = gw.upgrade() else { return };
        let Some(path) = gw.cfg.pins.lockfile.clone() else { return };
        let now = stamp(&path);
        if last.is_none() {
            last = Some(now);
            continue;
        }
        if last.as_ref() != Some(&now) {
            last = Some(now);
            gw.reload_pins().await;
        }
    }
}

async fn sweep_loop(gw: std::sync::Weak<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let Some(gw) = gw.upgrade() else { return };
        for s in gw.sessions.sweep() {
            tracing::debug!(session = %s.id, "idle session closed");
            gw.end_session(&s).await;
        }
        gw.labels.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cached_lists_match_the_general_path_byte_for_byte() {
        let cfg = Config::parse("", std::path::Path::new("t.toml"), std::path::Path::new("."), &|_| None).unwrap();
        let gw = Gateway::start(cfg).unwrap();
        for (stateless, id) in [(false, json!(7)), (true, json!("a\"b"))] {
            let caller = Caller {
                principal: Principal::anonymous().unwrap(),
                era: if stateless { CallerEra::Stateless { version: era::MODERN.into(), capabilities: json!({}), logs: false } } else {
                    CallerEra::Legacy(Arc::new(Session::new("s".into(), "2025-11-25".into(), json!({}), Value::Null, [0; 32])))
                },
                out: mpsc::channel(1).0,
                forward_headers: Vec::new(),
            };
            for method in ["tools/list", "resources/templates/list"] {
                let req = json!({"jsonrpc": "2.0", "id": id, "method": method});
                let general = gw.handle_request(&caller, req.clone()).await;
                let fast: Value = serde_json::from_str(&gw.cached_list(&req, stateless, &caller.principal).await.unwrap()).unwrap();
                assert_eq!(fast, general, "{method} stateless={stateless}");
            }
        }
        let anon = Principal::anonymous().unwrap();
        assert!(gw.cached_list(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call"}), false, &anon).await.is_none());
    }

    #[tokio::test]
    async fn reading_the_catalog_adds_no_listing_state_to_a_calls_future() {
        // Every call reads the catalog; listing (rare) is boxed, so the call's future, copied
        // whole into its box per request, does not carry the kilobytes of a listing round.
        let cfg = Config::parse("", std::path::Path::new("t.toml"), std::path::Path::new("."), &|_| None).unwrap();
        let gw = Gateway::start(cfg).unwrap();
        let anon = Principal::anonymous().unwrap();
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        let (catalog, cached) = (std::mem::size_of_val(&gw.catalog()), std::mem::size_of_val(&gw.cached_list(&req, false, &anon)));
        assert!(catalog <= 512 && cached <= 1024, "catalog(): {catalog} bytes, cached_list(): {cached} bytes");
        assert!(gw.cached_list(&req, false, &anon).await.is_some());
    }

    #[test]
    fn stateless_results_get_result_type_and_cache_hints() {
        let mut r = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}});
        complete_for_stateless("tools/list", &mut r);
        assert_eq!(r["result"]["resultType"], "complete");
        assert_eq!(r["result"]["cacheScope"], "private");
        let mut r = json!({"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required"}});
        complete_for_stateless("tools/call", &mut r);
        assert_eq!(r["result"]["resultType"], "input_required");
        assert!(r["result"].get("ttlMs").is_none());
    }
}
