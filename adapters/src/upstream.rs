//! One upstream MCP server, as the gateway sees it: a supervised connection (spawned or dialled,
//! handshaken, restarted with backoff when it dies), with our own JSON-RPC ids, in-flight
//! tracking, timeouts and cancellation.
//!
//! Messages the upstream sends on its own are routed either to the in-flight request they belong
//! to ([`Related`]) or, when they belong to none, to the gateway as an [`UpstreamEvent`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::era::{self, Era};
use crate::jsonrpc::{self, Answer, Kind};
use crate::transport::http::{HttpClient, HttpSpec, HttpTransport};
use crate::transport::stdio::{StdioSpec, StdioTransport};
use crate::transport::{ExtraHeaders, Inbound, TransportError};

#[derive(Debug, Clone)]
pub enum TransportSpec {
    Stdio(StdioSpec),
    Http(HttpSpec),
}

#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub name: String,
    pub transport: TransportSpec,
    /// Per-request timeout, and the limit on waiting for a (re)connection.
    pub timeout: Duration,
    /// Largest message accepted from the upstream.
    pub max_message: usize,
    /// `clientInfo` the gateway presents upstream.
    pub client_info: Value,
    /// Capabilities the gateway declares upstream (what it can relay to its clients).
    pub client_capabilities: Value,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum UpstreamError {
    #[error("upstream `{0}` is unavailable: {1}")]
    Unavailable(String, String),
    #[error("upstream `{0}` did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("upstream `{0}` failed: {1}")]
    Transport(String, TransportError),
    #[error("upstream `{0}` handshake failed: {1}")]
    Handshake(String, String),
}

/// What the handshake learnt about the upstream.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub era: Era,
    pub protocol_version: String,
    pub capabilities: Value,
    pub server_info: Value,
    pub instructions: Option<String>,
}

/// Per-call options for [`Upstream::request`].
#[derive(Debug, Default)]
pub struct CallOpts {
    /// Where messages the upstream sends about this request go (progress, logging, and
    /// server→client requests). `None` drops them to the gateway's event channel.
    pub related: Option<mpsc::Sender<Related>>,
    /// Envelope fields for a stateless upstream.
    pub envelope: era::Envelope,
    /// Overrides the upstream's configured timeout.
    pub timeout: Option<Duration>,
    /// The caller is a legacy-era client: use a legacy connection when the upstream offers one.
    pub prefer_legacy: bool,
}

/// A message from the upstream that arrived while one of our requests was in flight and belongs
/// to it (progress, logging during the call, sampling/elicitation/roots requests).
#[derive(Debug)]
pub enum Related {
    Notification(Value),
    /// A server→client request. Answer it through the [`Responder`], keeping its `id`.
    Request(Value, Responder),
}

/// Sends the answer to a server→client request back on the connection the request came from
/// (an HTTP upstream may have two: its 2026 one and a legacy session).
#[derive(Clone)]
pub struct Responder {
    conn: std::sync::Weak<Conn>,
    timeout: Duration,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").field("live", &(self.conn.strong_count() > 0)).finish()
    }
}

impl Responder {
    pub async fn respond(&self, msg: Value) -> Result<(), TransportError> {
        let conn = self.conn.upgrade().ok_or(TransportError::Closed)?;
        conn.send(msg, None, Vec::new(), self.timeout).await
    }
}

/// A message from the upstream that belongs to no in-flight request.
#[derive(Debug)]
pub enum UpstreamEvent {
    Notification { upstream: String, msg: Value },
    Request { upstream: String, msg: Value, responder: Responder },
    /// The connection was (re)established; lists may have changed.
    Connected { upstream: String },
}

struct Pending {
    tx: oneshot::Sender<Result<Value, TransportError>>,
    related: Option<mpsc::Sender<Related>>,
    /// The caller's progress token, restored on progress notifications; ours is `cg-<id>`.
    progress_token: Option<Value>,
}

enum Conn {
    Stdio(Box<StdioTransport>),
    Http(Arc<HttpTransport>),
}

impl Conn {
    async fn send(&self, msg: Value, our_id: Option<u64>, extra: ExtraHeaders, timeout: Duration) -> Result<(), TransportError> {
        match self {
            Conn::Stdio(t) => t.send(&msg).await,
            // Requests run concurrently (their answers arrive on the inbound channel);
            // notifications and responses are sent in order and awaited.
            Conn::Http(t) if our_id.is_some() => {
                t.send(msg, our_id, extra, timeout);
                Ok(())
            }
            Conn::Http(t) => t.post(&msg, None, &extra, timeout, false).await.map(|_| ()),
        }
    }
    async fn closed(&self) {
        match self {
            Conn::Stdio(t) => t.closed().await,
            Conn::Http(t) => t.closed().await,
        }
    }
    async fn shutdown(&self) {
        match self {
            Conn::Stdio(t) => t.shutdown().await,
            Conn::Http(t) => t.shutdown().await,
        }
    }
}

#[derive(Clone)]
enum State {
    Connecting,
    Ready(Arc<Live>),
    Failed(String),
    Closed,
}

struct Live {
    conn: Arc<Conn>,
    info: ServerInfo,
}

/// Most requests in flight on one upstream connection. Over HTTP each in-flight request holds at
/// most one pooled connection, so this also bounds the connection pool; further calls wait for a
/// slot within their own timeout.
pub const MAX_IN_FLIGHT: usize = 256;

struct Inner {
    spec: UpstreamSpec,
    in_flight: tokio::sync::Semaphore,
    /// For an HTTP upstream that speaks 2026-07-28: a legacy (session) connection to the same
    /// server, opened on first use by a legacy client, so that legacy clients keep legacy
    /// semantics end to end (server→client requests mid-call). `Err` once the server refused it.
    legacy_side: tokio::sync::Mutex<Option<Result<Arc<Live>, ()>>>,
    http: HttpClient,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    state: watch::Sender<State>,
    events: mpsc::Sender<UpstreamEvent>,
}

/// A handle to one upstream. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

impl Upstream {
    /// Starts the supervisor: connect, handshake, serve; on death fail in-flight calls and
    /// reconnect with exponential backoff (200 ms doubling to 30 s).
    pub fn start(spec: UpstreamSpec, http: HttpClient, events: mpsc::Sender<UpstreamEvent>) -> Self {
        let (state, _) = watch::channel(State::Connecting);
        let inner = Arc::new(Inner {
            spec,
            legacy_side: tokio::sync::Mutex::new(None),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            http,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            state,
            events,
        });
        tokio::spawn(supervise(Arc::downgrade(&inner)));
        Self { inner }
    }

    pub fn name(&self) -> &str {
        &self.inner.spec.name
    }

    pub fn timeout(&self) -> Duration {
        self.inner.spec.timeout
    }

    /// The handshake result, waiting for the connection up to the upstream's timeout.
    pub async fn info(&self) -> Result<ServerInfo, UpstreamError> {
        Ok(self.live(self.inner.spec.timeout).await?.info.clone())
    }

    /// Whether a request sent now could be answered `resultType: "input_required"`, which only
    /// a 2026-07-28 connection does: `false` once the connection in use has shaken hands on a
    /// legacy revision, `true` while it is being made or when it speaks 2026-07-28 (a legacy
    /// caller may then be served on the legacy side, but that side can fail over to the main
    /// connection, so the answer stays `true`). A caller that would have to send a request
    /// again after such an answer keeps a copy of it only when this says so.
    pub fn may_ask_for_input(&self) -> bool {
        !matches!(&*self.inner.state.borrow(), State::Ready(live) if live.info.era != Era::Stateless)
    }

    async fn live(&self, wait: Duration) -> Result<Arc<Live>, UpstreamError> {
        let name = &self.inner.spec.name;
        let mut rx = self.inner.state.subscribe();
        // A connection that is being (re)established is waited for; one whose last attempt
        // failed (and is backing off) fails the call at once instead of holding it.
        let fut = rx.wait_for(|s| matches!(s, State::Ready(_) | State::Closed | State::Failed(_)));
        match tokio::time::timeout(wait, fut).await {
            Ok(Ok(s)) => match &*s {
                State::Ready(live) => Ok(Arc::clone(live)),
                State::Failed(why) => Err(UpstreamError::Unavailable(name.clone(), why.clone())),
                _ => Err(UpstreamError::Unavailable(name.clone(), "shut down".into())),
            },
            Ok(Err(_)) => Err(UpstreamError::Unavailable(name.clone(), "shut down".into())),
            Err(_) => {
                let why = match &*self.inner.state.borrow() {
                    State::Failed(why) => why.clone(),
                    _ => "not connected".into(),
                };
                Err(UpstreamError::Unavailable(name.clone(), why))
            }
        }
    }

    /// Sends a request and waits for its response (the whole JSON-RPC response message, with
    /// *our* id in it: the caller puts its own id back). The request's `id` is replaced.
    ///
    /// Dropping the returned future, or a timeout, cancels the request upstream
    /// (`notifications/cancelled`).
    pub async fn request(&self, msg: Value, opts: CallOpts) -> Result<Value, UpstreamError> {
        let name = &self.inner.spec.name;
        self.request_answer(msg, opts).await?.into_value().map_err(|e| UpstreamError::Transport(name.clone(), TransportError::Invalid(e.to_string())))
    }

    /// [`Upstream::request`], with a plain success answered over HTTP kept as the bytes the
    /// upstream sent ([`Answer::Raw`]), for a caller that can relay it without parsing it.
    pub async fn request_answer(&self, mut msg: Value, opts: CallOpts) -> Result<Answer, UpstreamError> {
        let CallOpts { related, envelope, timeout, prefer_legacy } = opts;
        let timeout = timeout.unwrap_or(self.inner.spec.timeout);
        let name = self.inner.spec.name.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        let _slot = match tokio::time::timeout_at(deadline, self.inner.in_flight.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(UpstreamError::Unavailable(name, "shut down".into())),
            Err(_) => return Err(UpstreamError::Timeout(name, timeout)),
        };
        let mut live = self.live(timeout).await?;
        if prefer_legacy
            && live.info.era == Era::Stateless
            && let Some(side) = self.legacy_side(timeout).await
        {
            live = side;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        if era::answered_locally(live.info.era, jsonrpc::method(&msg).unwrap_or_default()) {
            return Ok(Answer::Parsed(jsonrpc::result(id.into(), json!({}))));
        }
        if let Some(obj) = msg.as_object_mut() {
            obj.insert("id".into(), id.into());
        }
        // Progress tokens are per-connection: two clients may pick the same one, so ours
        // replaces theirs and is mapped back on the way in.
        let mut progress_token = None;
        if let Some(meta) = jsonrpc::params_mut(&mut msg).and_then(|p| p.get_mut("_meta")).and_then(Value::as_object_mut)
            && let Some(tok) = meta.get_mut("progressToken") {
                progress_token = Some(std::mem::replace(tok, Value::String(format!("cg-{id}"))));
            }
        let extra = era::decorate_request(&live.info, &mut msg, &envelope, &self.inner.spec.client_capabilities, &self.inner.spec.client_info);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(id, Pending { tx, related, progress_token });
        let mut guard = InFlight { up: self, live: Some(Arc::clone(&live)), id };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut rx = rx;
        let answer = match &*live.conn {
            // Over HTTP the POST runs here, in the caller's future, and its answer usually
            // comes straight back: no hop through the transport's or the router's task.
            Conn::Http(t) => {
                let waited = async {
                    let post = t.call(&msg, id, &extra, remaining);
                    tokio::pin!(post);
                    tokio::select! {
                        biased;
                        r = &mut post => match r {
                            Ok(Some(v)) => Ok(v),
                            // The answer went through the router, after related messages.
                            Ok(None) => (&mut rx).await.unwrap_or(Err(TransportError::Closed)).map(Answer::Parsed),
                            Err(e) => Err(e),
                        },
                        r = &mut rx => r.unwrap_or(Err(TransportError::Closed)).map(Answer::Parsed),
                    }
                };
                tokio::time::timeout_at(deadline, waited).await
            }
            Conn::Stdio(_) => {
                if let Err(e) = live.conn.send(msg, Some(id), extra, remaining).await {
                    guard.live = None;
                    lock(&self.inner.pending).remove(&id);
                    return Err(UpstreamError::Transport(name, e));
                }
                tokio::time::timeout_at(deadline, &mut rx).await.map(|r| r.unwrap_or(Err(TransportError::Closed)).map(Answer::Parsed))
            }
        };
        match answer {
            Ok(outcome) => {
                guard.live = None;
                lock(&self.inner.pending).remove(&id);
                outcome.map_err(|e| UpstreamError::Transport(name, e))
            }
            // The guard cancels the request upstream.
            Err(_) => Err(UpstreamError::Timeout(name, timeout)),
        }
    }

    /// The legacy side connection of a 2026-07-28 HTTP upstream, opened on first use; `None`
    /// when the upstream is not HTTP or refuses the legacy handshake.
    async fn legacy_side(&self, timeout: Duration) -> Option<Arc<Live>> {
        let TransportSpec::Http(spec) = &self.inner.spec.transport else { return None };
        let mut side = self.inner.legacy_side.lock().await;
        if let Some(Ok(live)) = &*side {
            let Conn::Http(t) = &*live.conn else { return None };
            if !t.is_closed() {
                return Some(Arc::clone(live));
            }
        }
        if matches!(&*side, Some(Err(()))) {
            return None;
        }
        let (in_tx, in_rx) = mpsc::channel::<Inbound>(1024);
        let t = HttpTransport::new(&self.inner.spec.name, spec.clone(), self.inner.http.clone(), in_tx, self.inner.spec.max_message);
        let conn = Arc::new(Conn::Http(Arc::clone(&t)));
        tokio::spawn(route_inbound(Arc::downgrade(&self.inner), in_rx, Arc::downgrade(&conn), self.inner.spec.timeout));
        let init = era::initialize_request(&self.inner.spec.client_capabilities, &self.inner.spec.client_info);
        let info = match raw_request(&self.inner, &conn, init, timeout).await.map(|r| era::parse_initialize(&r)) {
            Ok(Ok(info)) => info,
            other => {
                tracing::info!(upstream = %self.inner.spec.name, outcome = ?other.err(), "upstream offers no legacy session; legacy clients use 2026-07-28");
                *side = Some(Err(()));
                return None;
            }
        };
        t.set_protocol_version(Some(info.protocol_version.clone()));
        let _ = conn.send(jsonrpc::notification("notifications/initialized", None), None, Vec::new(), timeout).await;
        t.open_listen_stream(None);
        let live = Arc::new(Live { conn, info });
        *side = Some(Ok(Arc::clone(&live)));
        Some(live)
    }

    /// Sends a notification upstream (e.g. a client's `notifications/cancelled` or
    /// `notifications/roots/list_changed`).
    pub async fn notify(&self, msg: Value) -> Result<(), UpstreamError> {
        let live = self.live(self.inner.spec.timeout).await?;
        live.conn
            .send(msg, None, Vec::new(), self.inner.spec.timeout)
            .await
            .map_err(|e| UpstreamError::Transport(self.inner.spec.name.clone(), e))
    }

    /// Stops the supervisor and the connection (SIGTERM/SIGKILL for a child, DELETE for HTTP).
    pub async fn shutdown(&self) {
        if let Some(Ok(side)) = self.inner.legacy_side.lock().await.take() {
            side.conn.shutdown().await;
        }
        let prev = self.inner.state.send_replace(State::Closed);
        if let State::Ready(live) = prev {
            live.conn.shutdown().await;
        }
    }
}

/// Cancels an in-flight request upstream when the caller gives up on it.
struct InFlight<'a> {
    up: &'a Upstream,
    live: Option<Arc<Live>>,
    id: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some(live) = self.live.take() else { return };
        if lock(&self.up.inner.pending).remove(&self.id).is_none() {
            return;
        }
        let cancel = jsonrpc::notification(
            "notifications/cancelled",
            Some(json!({"requestId": self.id, "reason": "cancelled by clawgate"})),
        );
        let timeout = self.up.inner.spec.timeout;
        tokio::spawn(async move {
            let _ = live.conn.send(cancel, None, Vec::new(), timeout).await;
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked while holding it; the map itself is
    // still consistent (every mutation is a single insert/remove).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn supervise(weak: std::sync::Weak<Inner>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if matches!(*inner.state.borrow(), State::Closed) {
            return;
        }
        // Calls made while this attempt runs wait for it; they fail fast only between attempts.
        inner.state.send_if_modified(|s| set_unless_closed(s, State::Connecting));
        let (in_tx, in_rx) = mpsc::channel::<Inbound>(1024);
        let started = tokio::time::Instant::now();
        let conn = match &inner.spec.transport {
            TransportSpec::Stdio(s) => StdioTransport::spawn(&inner.spec.name, s, in_tx, inner.spec.max_message).map(|t| Conn::Stdio(Box::new(t))),
            TransportSpec::Http(s) => Ok(Conn::Http(HttpTransport::new(
                &inner.spec.name,
                s.clone(),
                inner.http.clone(),
                in_tx,
                inner.spec.max_message,
            ))),
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(upstream = %inner.spec.name, error = %e, "upstream failed to start");
                inner.state.send_if_modified(|s| set_unless_closed(s, State::Failed(e.to_string())));
                drop(inner);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let conn = Arc::new(conn);
        tokio::spawn(route_inbound(Arc::downgrade(&inner), in_rx, Arc::downgrade(&conn), inner.spec.timeout));
        match handshake(&inner, &conn).await {
            Ok(info) => {
                tracing::info!(upstream = %inner.spec.name, era = ?info.era, version = %info.protocol_version, "upstream connected");
                if let Conn::Http(t) = &*conn {
                    t.open_listen_stream(listen_post(&inner, &info));
                }
                let live = Arc::new(Live { conn, info });
                if !inner.state.send_if_modified(|s| set_unless_closed(s, State::Ready(Arc::clone(&live)))) {
                    live.conn.shutdown().await;
                    return;
                }
                let _ = inner.events.send(UpstreamEvent::Connected { upstream: inner.spec.name.clone() }).await;
                let name = inner.spec.name.clone();
                let mut state_rx = inner.state.subscribe();
                drop(inner);
                tokio::select! {
                    _ = live.conn.closed() => {}
                    _ = state_rx.wait_for(|s| matches!(s, State::Closed)) => { return; }
                }
                tracing::warn!(upstream = %name, "upstream connection lost; restarting");
                let Some(inner) = weak.upgrade() else { return };
                inner.state.send_if_modified(|s| set_unless_closed(s, State::Connecting));
                fail_all(&inner, TransportError::Closed);
                live.conn.shutdown().await;
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(200);
                }
            }
            Err(e) => {
                tracing::error!(upstream = %inner.spec.name, error = %e, "upstream handshake failed");
                inner.state.send_if_modified(|s| set_unless_closed(s, State::Failed(e.to_string())));
                fail_all(&inner, TransportError::Closed);
                conn.shutdown().await;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// The body of the listen stream for a connection: none (GET) for legacy, a
/// `subscriptions/listen` request for 2026-07-28.
fn listen_post(inner: &Inner, info: &ServerInfo) -> Option<(Value, ExtraHeaders)> {
    (info.era == Era::Stateless).then(|| era::listen_request(&info.protocol_version, &inner.spec.client_capabilities, &inner.spec.client_info))
}

fn set_unless_closed(s: &mut State, new: State) -> bool {
    if matches!(s, State::Closed) {
        return false;
    }
    *s = new;
    true
}

fn fail_all(inner: &Inner, e: TransportError) {
    let drained: Vec<Pending> = lock(&inner.pending).drain().map(|(_, p)| p).collect();
    for p in drained {
        let _ = p.tx.send(Err(e.clone()));
    }
}

/// Detects the upstream's era once per connection: probe `server/discover` (2026-07-28), and
/// fall back to `initialize` (2025-11-25 and earlier).
async fn handshake(inner: &Arc<Inner>, conn: &Arc<Conn>) -> Result<ServerInfo, UpstreamError> {
    let name = inner.spec.name.clone();
    let t = inner.spec.timeout;
    let discover = era::discover_request(&inner.spec.client_capabilities, &inner.spec.client_info);
    match raw_request(inner, conn, discover, t).await {
        Ok(resp) => {
            if let Some(info) = era::parse_discover(&resp) {
                // No transport-level version header: on the 2026 wire each request carries its
                // own `MCP-Protocol-Version` (from its envelope), and a duplicate is rejected.
                return Ok(info);
            }
        }
        Err(UpstreamError::Transport(_, TransportError::Closed)) => {
            return Err(UpstreamError::Handshake(name, "connection closed during server/discover".into()));
        }
        Err(_) => {}
    }
    let init = era::initialize_request(&inner.spec.client_capabilities, &inner.spec.client_info);
    let resp = raw_request(inner, conn, init, t).await?;
    let info = era::parse_initialize(&resp).map_err(|e| UpstreamError::Handshake(name.clone(), e))?;
    if let Conn::Http(h) = &**conn {
        h.set_protocol_version(Some(info.protocol_version.clone()));
    }
    conn.send(jsonrpc::notification("notifications/initialized", None), None, Vec::new(), t)
        .await
        .map_err(|e| UpstreamError::Transport(name, e))?;
    Ok(info)
}

async fn raw_request(inner: &Inner, conn: &Conn, mut msg: Value, timeout: Duration) -> Result<Value, UpstreamError> {
    let name = inner.spec.name.clone();
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    if let Some(o) = msg.as_object_mut() {
        o.insert("id".into(), id.into());
    }
    let extra = era::headers_for(&msg);
    let (tx, rx) = oneshot::channel();
    lock(&inner.pending).insert(id, Pending { tx, related: None, progress_token: None });
    conn.send(msg, Some(id), extra, timeout).await.map_err(|e| UpstreamError::Transport(name.clone(), e))?;
    let out = match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(UpstreamError::Transport(name.clone(), e)),
        Ok(Err(_)) => Err(UpstreamError::Transport(name.clone(), TransportError::Closed)),
        Err(_) => Err(UpstreamError::Timeout(name.clone(), timeout)),
    };
    lock(&inner.pending).remove(&id);
    out
}

/// Routes what the transport received: responses to their waiter, related messages to the
/// request they belong to, the rest to the gateway.
async fn route_inbound(weak: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<Inbound>, conn: std::sync::Weak<Conn>, timeout: Duration) {
    while let Some(item) = rx.recv().await {
        let Some(inner) = weak.upgrade() else { return };
        match item {
            Inbound::Failed { id, error } => {
                if let Some(p) = lock(&inner.pending).remove(&id) {
                    let _ = p.tx.send(Err(error));
                }
            }
            Inbound::Message { msg, related_to } => {
                let responder = Responder { conn: conn.clone(), timeout };
                route_message(&inner, msg, related_to, responder).await;
            }
        }
    }
}

async fn route_message(inner: &Inner, mut msg: Value, related_to: Option<u64>, responder: Responder) {
    let name = &inner.spec.name;
    match jsonrpc::kind(&msg) {
        Some(Kind::Response) => {
            let Some(id) = msg.get("id").and_then(Value::as_u64) else {
                tracing::warn!(upstream = %name, "response with an id we never sent");
                return;
            };
            if let Some(p) = lock(&inner.pending).remove(&id) {
                let _ = p.tx.send(Ok(msg));
            }
        }
        Some(kind @ (Kind::Notification | Kind::Request)) => {
            let method = jsonrpc::method(&msg).unwrap_or_default().to_owned();
            // Which in-flight request does it belong to?
            let target = if method == "notifications/progress" {
                progress_owner(inner, &mut msg)
            } else if method.ends_with("/list_changed") || method == "notifications/resources/updated" {
                None
            } else if related_to.is_some() {
                related_to
            } else if responder.conn.upgrade().is_some_and(|c| matches!(&*c, Conn::Stdio(_))) {
                // Only stdio cannot say: over HTTP a message outside any response stream (the
                // GET or listen stream) is about no call, and guessing would hand one session's
                // messages to another's call.
                sole_inflight(inner)
            } else {
                None
            };
            let sink = target.and_then(|id| lock(&inner.pending).get(&id).and_then(|p| p.related.clone()));
            let related = match kind {
                Kind::Request => Related::Request(msg, responder),
                _ => Related::Notification(msg),
            };
            match sink {
                Some(sink) => {
                    let _ = sink.send(related).await;
                }
                None => {
                    let ev = match related {
                        Related::Request(msg, responder) => UpstreamEvent::Request { upstream: name.clone(), msg, responder },
                        Related::Notification(msg) => UpstreamEvent::Notification { upstream: name.clone(), msg },
                    };
                    let _ = inner.events.send(ev).await;
                }
            }
        }
        None => tracing::warn!(upstream = %name, "upstream sent something that is not JSON-RPC 2.0"),
    }
}

/// Maps our `cg-<id>` progress token back to the caller's, and names the request it belongs to.
fn progress_owner(inner: &Inner, msg: &mut Value) -> Option<u64> {
    let params = jsonrpc::params_mut(msg)?;
    let ours = params.get("progressToken")?.as_str()?;
    let id: u64 = ours.strip_prefix("cg-")?.parse().ok()?;
    let original = lock(&inner.pending).get(&id)?.progress_token.clone()?;
    params.insert("progressToken".into(), original);
    Some(id)
}

/// On a transport that cannot tell (stdio), a server message belongs to the only request in
/// flight that accepts related messages. With several in flight it is ambiguous and goes to
/// the gateway instead (which refuses server requests it cannot place).
fn sole_inflight(inner: &Inner) -> Option<u64> {
    let pending = lock(&inner.pending);
    let mut it = pending.iter().filter(|(_, p)| p.related.is_some()).map(|(id, _)| *id);
    let first = it.next()?;
    if it.next().is_some() { None } else { Some(first) }
}
