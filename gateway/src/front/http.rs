//! The Streamable HTTP front at `[listen] path` (default `/mcp`), serving both eras on one
//! endpoint:
//!
//! - **2025-11-25 (sessions):** `initialize` opens a session (`Mcp-Session-Id`); POST carries
//!   requests, notifications and the client's answers; GET opens the standalone SSE stream;
//!   DELETE ends the session.
//! - **2026-07-28 (stateless):** a POST whose `MCP-Protocol-Version` header is not a legacy
//!   version. The `_meta` envelope and the `Mcp-Method`/`Mcp-Name` headers are checked against
//!   the body; `subscriptions/listen` replaces the GET stream.
//!
//! A POST is answered with JSON, or with SSE when the call produced messages before its response
//! and the client accepts `text/event-stream` ("by need"). Every request is first checked for
//! `Host` and `Origin` (DNS rebinding), size and depth.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clawgate_adapters::era;
use clawgate_adapters::jsonrpc::{self, Kind};
use clawgate_adapters::sse;
use clawgate_adapters::wake::Absorbing;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::{CallError, status_for_code};
use crate::pipeline::{Caller, CallerEra, Gateway, Outgoing};
use crate::session::{Session, tracked};
use crate::authz::Principal;

const SESSION: &str = "mcp-session-id";
const PROTOCOL: &str = "mcp-protocol-version";
const KEEPALIVE: Duration = Duration::from_secs(15);

struct App {
    gw: Arc<Gateway>,
    local: SocketAddr,
}

/// The axum router for the MCP endpoint.
pub fn router(gw: Arc<Gateway>, local: SocketAddr) -> Router {
    let path = gw.config().listen.path.clone();
    let app = Arc::new(App { gw, local });
    Router::new()
        .route(&path, post(handle_post).get(handle_get).delete(handle_delete))
        .with_state(app)
}

/// Serves the MCP endpoint until `shutdown` resolves: [`serve_router`] with [`router`].
pub async fn serve(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let limits = &gw.config().limits;
    let (read_timeout, max_connections) = (limits.client_read_timeout, limits.max_connections);
    serve_router(router(gw, local), listener, read_timeout, max_connections, shutdown).await
}

/// Serves `app` until `shutdown` resolves, then lets the open connections finish (as
/// `axum::serve(..).with_graceful_shutdown` does). The admin interface is served by it too.
///
/// A client gets `read_timeout` to send each request's headers, counted from the connection's
/// start or the previous answer; then hyper closes the connection. At most `max_connections`
/// are open at once: at the limit the loop stops accepting, and new connections wait in the
/// kernel's listen backlog until one closes (no descriptor, no task, no memory spent on them).
///
/// Each connection is one task polled under [`Absorbing`]: hyper hands the request body to the
/// handler, and the call that handler runs inline hands requests and responses to and from its
/// upstream connection, through channels that wake the other side, which is this same task.
/// Answered by polling again at once, those wakes cost no reschedule, and no wake of a parked
/// worker thread (see `clawgate_adapters::wake`).
pub async fn serve_router(
    app: Router,
    listener: tokio::net::TcpListener,
    read_timeout: Duration,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut full = false;
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(read_timeout);
    let http1 = Arc::new(http1);
    let service = hyper_util::service::TowerToHyperService::new(app);
    // `stop` tells the connections to finish; each holds `open` until it has.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first, then a connection to spend it on.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                full = false;
                slot
            }
            Err(_) => {
                if !full {
                    tracing::warn!(target: "clawgate::front", "{max_connections} connections open (`limits.max_connections`); new ones wait until one closes");
                    full = true;
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small JSON-RPC messages must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        let http1 = Arc::clone(&http1);
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(Absorbing::new(async move {
            let (_open, _slot) = (open, slot);
            let conn = http1.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        }));
    }
    drop(listener);
    drop(open_rx);
    let _ = stop_tx.send(true);
    open_tx.closed().await;
    Ok(())
}

/// After a failed `accept`: a connection that went away before it was accepted costs nothing;
/// anything else (out of descriptors, say) is logged and accepting pauses for a second, as axum
/// does, rather than spinning.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::warn!(target: "clawgate::front", "accept failed: {e}; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// Responses: every front-raised failure goes through `error_response`.

fn error_response(e: &CallError, id: Value) -> Response {
    json_response(e.http_status(), &e.to_response(id), None)
}

fn json_response(status: StatusCode, body: &Value, session: Option<&str>) -> Response {
    // Straight into one buffer (`to_string` goes through `fmt::Write`, piece by piece), with
    // long strings escaped a word at a time.
    let bytes = jsonrpc::to_vec(body);
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    if let Some(sid) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        r.headers_mut().insert(SESSION, sid);
    }
    r
}

/// A request's response, as JSON.
fn out_response(status: StatusCode, out: &Outgoing) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], out.to_vec()).into_response()
}

/// A response already serialised (the cached list fast path).
fn raw_json_response(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn sse_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn sse_chunk(msg: &Value) -> Bytes {
    Bytes::from(sse::encode(&msg.to_string(), None))
}

// ---------------------------------------------------------------------------------------------
// Checks shared by every method.

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// DNS-rebinding defence: the `Host` must name this gateway (loopback names, the listen address,
/// or `allowed_hosts`), and a browser `Origin`, when present, must be loopback or listed.
fn check_host_origin(app: &App, h: &HeaderMap) -> Result<(), CallError> {
    let listen = &app.gw.config().listen;
    if let Some(host) = header_str(h, "host") {
        let bare = strip_port(host);
        let ok = is_loopback_name(bare)
            || listen.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(bare))
            || (!app.local.ip().is_unspecified() && bare.trim_matches(['[', ']']) == app.local.ip().to_string());
        if !ok {
            return Err(CallError::ForbiddenHost(host.to_owned()));
        }
    }
    if let Some(origin) = header_str(h, "origin") {
        let ok = listen.allowed_origins.iter().any(|a| a == origin)
            || is_loopback_origin(origin);
        if !ok {
            return Err(CallError::ForbiddenOrigin(origin.to_owned()));
        }
    }
    Ok(())
}

pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| h).trim_start_matches('[');
    }
    host.rsplit_once(':').map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
}

/// Whether a browser `Origin` names a loopback host.
pub(crate) fn is_loopback_origin(origin: &str) -> bool {
    url::Url::parse(origin).ok().and_then(|u| u.host_str().map(|s| is_loopback_name(s.trim_matches(['[', ']'])))).unwrap_or(false)
}

pub(crate) fn is_loopback_name(h: &str) -> bool {
    h.eq_ignore_ascii_case("localhost") || h == "::1" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn accepts(h: &HeaderMap) -> (bool, bool) {
    let Some(accept) = header_str(h, "accept") else { return (true, false) };
    let any = accept.contains("*/*");
    (any || accept.contains("application/json"), any || accept.contains("text/event-stream"))
}

/// The session a request names. A session answers only to the credential it was opened with:
/// a stolen session id with other (or no) credentials is an unknown session.
fn session_of(app: &App, h: &HeaderMap, principal: &Principal) -> Result<Arc<Session>, CallError> {
    let id = header_str(h, SESSION).ok_or(CallError::SessionRequired)?;
    app.gw.sessions.get(id).filter(|s| s.credential == principal.credential()).ok_or(CallError::UnknownSession)
}

/// `Authorization: Bearer <token or API key>`, if present.
fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = header_str(h, "authorization")?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}

/// The caller's principal; credentials that authenticate nobody get 401 here, before the
/// body is read. No credentials at all is the anonymous principal (policies decide).
fn authenticate(app: &App, h: &HeaderMap) -> Result<Principal, CallError> {
    let presented = header_str(h, "authorization").is_some();
    let credential = bearer(h);
    if presented && credential.is_none() {
        return Err(CallError::Unauthorized("the Authorization header must be `Bearer <token>`".into()));
    }
    app.gw.authz.authenticate(credential).map_err(|e| {
        tracing::info!(target: "clawgate::policy", "refused credentials: {e}");
        CallError::Unauthorized(e.to_string())
    })
}

fn unauthorized(e: &CallError) -> Response {
    let mut r = error_response(e, Value::Null);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
    r
}

/// The era of a request: the 2026-07-28 path when `MCP-Protocol-Version` is present and not a
/// legacy version (an unknown version then gets -32022 with the supported list).
fn is_stateless(h: &HeaderMap) -> bool {
    header_str(h, PROTOCOL).is_some_and(|v| !era::LEGACY_VERSIONS.contains(&v.trim()))
}

// ---------------------------------------------------------------------------------------------
// POST

async fn handle_post(State(app): State<Arc<App>>, h: HeaderMap, body: Body) -> Response {
    if let Err(e) = check_host_origin(&app, &h) {
        return error_response(&e, Value::Null);
    }
    // Credentials first: a client whose credentials authenticate nobody never gets the gateway
    // to buffer and parse a body.
    let principal = match authenticate(&app, &h) {
        Ok(p) => p,
        Err(e) => return unauthorized(&e),
    };
    let limits = &app.gw.config().limits;
    if !header_str(&h, "content-type").is_some_and(|c| c.starts_with("application/json")) {
        let e = CallError::InvalidRequest("`Content-Type` must be `application/json`".into());
        return json_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, &e.to_response(Value::Null), None);
    }
    // A body already in hyper's buffer (the usual small message) is taken without arming the
    // timer: `timeout` polls the read first.
    let bytes = match tokio::time::timeout(limits.client_read_timeout, axum::body::to_bytes(body, limits.max_body_bytes)).await {
        Ok(Ok(b)) => b,
        // Over the limit, or the body itself failed (bad chunked framing, a connection that
        // broke off): different faults, different answers.
        Ok(Err(e)) => {
            let e = e.into_inner();
            let e = if e.is::<http_body_util::LengthLimitError>() { CallError::BodyTooLarge(limits.max_body_bytes) } else { CallError::BodyUnreadable(e.to_string()) };
            return error_response(&e, Value::Null);
        }
        Err(_) => return error_response(&CallError::BodyTimeout(limits.client_read_timeout), Value::Null),
    };
    let msg = match super::parse_message(&bytes, limits.max_body_bytes, limits.max_json_depth) {
        Ok(m) => m,
        Err(e) => return error_response(&e, Value::Null),
    };
    let (json_ok, sse_ok) = accepts(&h);
    if !json_ok && !sse_ok {
        let e = CallError::InvalidRequest("`Accept` must include `application/json` or `text/event-stream`".into());
        return json_response(StatusCode::NOT_ACCEPTABLE, &e.to_response(Value::Null), None);
    }
    if is_stateless(&h) {
        post_stateless(app, h, msg, sse_ok, principal).await
    } else {
        post_legacy(app, h, msg, sse_ok, principal).await
    }
}

async fn post_legacy(app: Arc<App>, h: HeaderMap, msg: Value, sse_ok: bool, principal: Principal) -> Response {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    if jsonrpc::method(&msg) == Some("initialize") {
        return match app.gw.initialize(jsonrpc::params(&msg), &principal) {
            Ok((session, result)) => json_response(StatusCode::OK, &jsonrpc::result(id, result), Some(&session.id)),
            Err(e) => error_response(&e, id),
        };
    }
    let session = match session_of(&app, &h, &principal) {
        Ok(s) => s,
        Err(e) => return error_response(&e, id),
    };
    if let Some(v) = header_str(&h, PROTOCOL)
        && v.trim() != session.protocol_version && !era::LEGACY_VERSIONS.contains(&v.trim()) {
            return error_response(&CallError::BadProtocolHeader(v.to_owned()), id);
        }
    let caller = |out| Caller {
        principal: principal.clone(),
        era: CallerEra::Legacy(Arc::clone(&session)),
        out,
        forward_headers: Vec::new(),
    };
    match jsonrpc::kind(&msg) {
        Some(Kind::Request) => {
            if let Some(raw) = app.gw.cached_list(&msg, false, &principal).await {
                return raw_json_response(raw);
            }
            run(app, caller, msg, sse_ok, Some(Arc::clone(&session)), false).await
        }
        Some(Kind::Notification) => {
            let (tx, _rx) = mpsc::channel(1);
            // Boxed: its state would otherwise be part of every request's handler future.
            Box::pin(app.gw.handle_notification(&caller(tx), msg)).await;
            StatusCode::ACCEPTED.into_response()
        }
        Some(Kind::Response) => {
            if !session.complete(msg) {
                tracing::debug!(session = %session.id, "client answered a request nobody waits for");
            }
            StatusCode::ACCEPTED.into_response()
        }
        None => error_response(&CallError::InvalidRequest("not JSON-RPC".into()), id),
    }
}

/// Methods that do not exist on the 2026-07-28 wire.
const NOT_STATELESS: &[&str] = &["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"];

async fn post_stateless(app: Arc<App>, h: HeaderMap, msg: Value, sse_ok: bool, principal: Principal) -> Response {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    if jsonrpc::kind(&msg) != Some(Kind::Request) {
        // No client→server notifications or responses exist on this wire.
        return StatusCode::ACCEPTED.into_response();
    }
    let (version, capabilities) = match check_envelope(&h, &msg) {
        Ok(v) => v,
        Err(e) => return json_response(status_for_code(e.code()), &e.to_response(id), None),
    };
    let method = jsonrpc::method(&msg).unwrap_or_default();
    if NOT_STATELESS.contains(&method) {
        let e = CallError::MethodNotFound(method.to_owned());
        return json_response(status_for_code(e.code()), &e.to_response(id), None);
    }
    if method == "subscriptions/listen" {
        return listen(&app, &msg);
    }
    if let Some(raw) = app.gw.cached_list(&msg, true, &principal).await {
        return raw_json_response(raw);
    }
    let forward_headers = h
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("mcp-param-"))
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let logs = jsonrpc::params(&msg).and_then(|p| p.get("_meta")).and_then(|m| m.get(era::META_LOG_LEVEL)).is_some();
    let caller = move |out| Caller {
        principal: principal.clone(),
        era: CallerEra::Stateless { version: version.clone(), capabilities: capabilities.clone(), logs },
        out,
        forward_headers,
    };
    run(app, caller, msg, sse_ok, None, true).await
}

/// The 2026-07-28 checks, in the order the reference SDK applies them: the `_meta` envelope is
/// present; the routing headers match the body; the version is supported.
fn check_envelope(h: &HeaderMap, msg: &Value) -> Result<(String, Value), CallError> {
    let meta = jsonrpc::params(msg).and_then(|p| p.get("_meta")).and_then(Value::as_object);
    let version = meta.and_then(|m| m.get(era::META_PROTOCOL_VERSION)).and_then(Value::as_str);
    let caps = meta.and_then(|m| m.get(era::META_CLIENT_CAPABILITIES));
    let missing: Vec<&str> = [(era::META_PROTOCOL_VERSION, version.is_some()), (era::META_CLIENT_CAPABILITIES, caps.is_some())]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(k, _)| *k)
        .collect();
    let (Some(version), Some(caps)) = (version, caps) else {
        return Err(CallError::MissingEnvelope(missing.join(", ")));
    };
    let method = jsonrpc::method(msg).unwrap_or_default();
    let single = |name: &str| -> Result<Option<String>, CallError> {
        let mut values = h.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(CallError::HeaderMismatch(format!("{name} header sent more than once")));
        }
        match first {
            None => Ok(None),
            Some(v) => {
                let s = v.to_str().map_err(|_| CallError::HeaderMismatch(format!("{name} header is not ASCII")))?;
                era::decode_header_value(s).map(Some).ok_or_else(|| CallError::HeaderMismatch(format!("{name} header has a malformed base64 value")))
            }
        }
    };
    let header_version = single(PROTOCOL)?;
    if header_version.as_deref() != Some(version) {
        return Err(CallError::HeaderMismatch("MCP-Protocol-Version header does not match params._meta protocol version".into()));
    }
    if single("mcp-method")?.as_deref() != Some(method) {
        return Err(CallError::HeaderMismatch("Mcp-Method header does not match the request body's method".into()));
    }
    let name = single("mcp-name")?;
    if let Some(expected) = era::name_of(method, jsonrpc::params(msg))
        && name.as_deref() != Some(expected) {
            return Err(CallError::HeaderMismatch("Mcp-Name header does not match the request body".into()));
        }
    if !era::is_modern_version(version) {
        return Err(CallError::UnsupportedVersion { requested: version.to_owned() });
    }
    Ok((version.to_owned(), caps.clone()))
}

/// `subscriptions/listen`: a long-lived SSE answer carrying the list-changed notifications the
/// client asked for, each tagged with its subscription id.
fn listen(app: &App, msg: &Value) -> Response {
    let filter = jsonrpc::params(msg).and_then(|p| p.get("notifications")).cloned().unwrap_or_else(|| json!({}));
    let sub_id = msg.get("id").cloned().unwrap_or(Value::Null);
    let wants = |method: &str| {
        let key = match method {
            "notifications/tools/list_changed" => "toolsListChanged",
            "notifications/prompts/list_changed" => "promptsListChanged",
            "notifications/resources/list_changed" => "resourcesListChanged",
            _ => return false,
        };
        filter.get(key).and_then(Value::as_bool).unwrap_or(false)
    };
    let mut changes = app.gw.subscribe_changes();
    let mut closing = app.gw.closing();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let ack = jsonrpc::notification(
        "notifications/subscriptions/acknowledged",
        Some(json!({"notifications": filter.clone(), "_meta": {"io.modelcontextprotocol/subscriptionId": sub_id.clone()}})),
    );
    let filter_ok: Vec<&str> = ["notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/resources/list_changed"]
        .into_iter()
        .filter(|m| wants(m))
        .collect();
    tokio::spawn(async move {
        if tx.send(sse_chunk(&ack)).await.is_err() {
            return;
        }
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        loop {
            tokio::select! {
                () = closing.changed_to_true() => return,
                ev = changes.recv() => match ev {
                    Ok(mut n) => {
                        let m = jsonrpc::method(&n).unwrap_or_default();
                        if !filter_ok.contains(&m) { continue; }
                        if let Some(o) = n.as_object_mut() {
                            o.insert("params".into(), json!({"_meta": {"io.modelcontextprotocol/subscriptionId": sub_id.clone()}}));
                        }
                        if tx.send(sse_chunk(&n)).await.is_err() { return; }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
                _ = keepalive.tick() => {
                    if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() { return; }
                }
            }
        }
    });
    sse_response(rx)
}

/// Runs one request and answers by need: JSON when the response is the first thing the call
/// produces, SSE when related messages come first and the client accepts SSE. A client that
/// accepts only JSON gets related messages on its standalone stream instead.
async fn run(
    app: Arc<App>,
    caller: impl FnOnce(mpsc::Sender<Value>) -> Caller,
    msg: Value,
    sse_ok: bool,
    session: Option<Arc<Session>>,
    stateless: bool,
) -> Response {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let (out_tx, mut out_rx) = mpsc::channel::<Value>(64);
    let caller = caller(out_tx);
    let gw = Arc::clone(&app.gw);
    // The call runs inline, driven by this response future (or by the SSE stream's task):
    // no task hop per request, and when the client goes away the call is dropped with it.
    let mut task = Box::pin(tracked(session.as_ref(), &id, async move { gw.handle_request_out(&caller, msg).await }));
    let finish = |res: Option<Outgoing>| -> Outgoing { res.unwrap_or_else(|| Outgoing::Message(jsonrpc::error(id.clone(), jsonrpc::code::INTERNAL_ERROR, "request cancelled", None))) };
    let status_of = |resp: &Outgoing| -> StatusCode {
        match resp.error_code() {
            Some(code) if stateless => status_for_code(code),
            _ => StatusCode::OK,
        }
    };
    tokio::select! {
        biased;
        Some(first) = out_rx.recv() => {
            if !sse_ok {
                // Related messages go to the standalone stream; the answer stays JSON.
                let mut first = Some(first);
                let resp = loop {
                    if let Some(m) = first.take()
                        && let Some(s) = &session { s.send_standalone(m); }
                    tokio::select! {
                        res = &mut task => break finish(res),
                        Some(m) = out_rx.recv() => first = Some(m),
                    }
                };
                return out_response(status_of(&resp), &resp);
            }
            let (tx, rx) = mpsc::channel::<Bytes>(64);
            tokio::spawn(async move {
                if tx.send(sse_chunk(&first)).await.is_err() { return; }
                loop {
                    tokio::select! {
                        biased;
                        Some(m) = out_rx.recv() => {
                            if tx.send(sse_chunk(&m)).await.is_err() { return; }
                        }
                        res = &mut task => {
                            while let Ok(m) = out_rx.try_recv() {
                                let _ = tx.send(sse_chunk(&m)).await;
                            }
                            if let Some(resp) = res {
                                let _ = tx.send(sse_chunk(&resp.into_value())).await;
                            }
                            return;
                        }
                    }
                }
            });
            sse_response(rx)
        }
        res = &mut task => {
            // The call can finish in the same poll that queued related messages (it runs
            // inline): they still go first, by need, on an SSE response if the client takes
            // one, else on the session's standalone stream.
            let resp = finish(res);
            let mut queued = Vec::new();
            while let Ok(m) = out_rx.try_recv() {
                queued.push(m);
            }
            if queued.is_empty() {
                return out_response(status_of(&resp), &resp);
            }
            if sse_ok {
                let resp = resp.into_value();
                let (tx, rx) = mpsc::channel::<Bytes>(queued.len() + 1);
                for m in queued.iter().chain(std::iter::once(&resp)) {
                    let _ = tx.try_send(sse_chunk(m));
                }
                return sse_response(rx);
            }
            if let Some(s) = &session {
                for m in queued {
                    s.send_standalone(m);
                }
            }
            out_response(status_of(&resp), &resp)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GET and DELETE (legacy sessions only)

async fn handle_get(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Err(e) = check_host_origin(&app, &h) {
        return error_response(&e, Value::Null);
    }
    if is_stateless(&h) {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response();
    }
    if !accepts(&h).1 {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    let principal = match authenticate(&app, &h) {
        Ok(p) => p,
        Err(e) => return unauthorized(&e),
    };
    let session = match session_of(&app, &h, &principal) {
        Ok(s) => s,
        Err(e) => return error_response(&e, Value::Null),
    };
    let (msg_tx, mut msg_rx) = mpsc::channel::<Value>(256);
    session.set_standalone(msg_tx);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut closing = app.gw.closing();
    tokio::spawn(async move {
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        loop {
            tokio::select! {
                () = closing.changed_to_true() => return,
                m = msg_rx.recv() => match m {
                    Some(m) => if tx.send(sse_chunk(&m)).await.is_err() { return; },
                    None => return,
                },
                _ = keepalive.tick() => {
                    if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() { return; }
                }
            }
        }
    });
    sse_response(rx)
}

async fn handle_delete(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Err(e) = check_host_origin(&app, &h) {
        return error_response(&e, Value::Null);
    }
    let principal = match authenticate(&app, &h) {
        Ok(p) => p,
        Err(e) => return unauthorized(&e),
    };
    let id = match session_of(&app, &h, &principal) {
        Ok(s) => s.id.clone(),
        Err(e) => return error_response(&e, Value::Null),
    };
    match app.gw.sessions.remove(&id) {
        Some(s) => {
            app.gw.end_session(&s).await;
            StatusCode::OK.into_response()
        }
        None => error_response(&CallError::UnknownSession, Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parsing() {
        assert_eq!(strip_port("localhost:8080"), "localhost");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("example.com"), "example.com");
        assert!(is_loopback_name("127.0.0.1"));
        assert!(is_loopback_name("::1"));
        assert!(!is_loopback_name("evil.example.com"));
    }
}
