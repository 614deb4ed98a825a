//! An upstream MCP server over Streamable HTTP: each message is a POST; a request's answer comes
//! back as one JSON body or as an SSE stream that may carry related notifications and server
//! requests before the response. A GET stream carries unrelated server messages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::inline;
use super::{ExtraHeaders, Inbound, TransportError};
use crate::jsonrpc::{self, Answer, RawAnswer};
use crate::sse;

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const PROTOCOL_HEADER: &str = "mcp-protocol-version";

#[derive(Clone)]
pub struct HttpSpec {
    pub url: String,
    /// Operator-configured headers (already expanded). The client's own `Authorization` is never
    /// among them: nothing from the client's request is copied here.
    pub headers: Vec<(String, String)>,
}

/// Header values and all of the URL but its origin may hold secrets (`${VAR}` expands into
/// both), so `Debug` shows the origin and the header names only.
impl std::fmt::Debug for HttpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSpec")
            .field("url", &redacted_url(&self.url))
            .field("headers", &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .finish()
    }
}

/// A URL as logs and `Debug` may show it: scheme, host and port, with everything else (user
/// info, path, query, fragment: where a credential can hide) replaced by `<redacted>`.
pub fn redacted_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(p) => {
            let host = p.host_str().unwrap_or_default();
            let port = p.port().map(|n| format!(":{n}")).unwrap_or_default();
            let rest = !p.username().is_empty() || p.password().is_some() || p.path() != "/" || p.query().is_some() || p.fragment().is_some();
            format!("{}://{host}{port}/{}", p.scheme(), if rest { "<redacted>" } else { "" })
        }
        Err(_) => "<redacted>".into(),
    }
}

/// The HTTP client every HTTP upstream shares: reqwest, and for plain `http://` upstreams the
/// inline connections of [`inline`], which carry `tools/call` and every other POST without a
/// hop through a connection task. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    pooled: reqwest::Client,
    inline: Option<Arc<inline::Pool>>,
    /// Background reads of reqwest responses dropped before their end (see [`inline::Drains`]).
    drains: Arc<inline::Drains>,
}

impl HttpClient {
    /// The reqwest client, for requests that are not MCP messages (the admin API, say).
    pub fn pooled(&self) -> &reqwest::Client {
        &self.pooled
    }

    /// Whether plain `http://` POSTs take the inline path (see [`inline`]).
    pub fn inline(&self) -> bool {
        self.inline.is_some()
    }
}

/// A shared, pooled HTTP client for every HTTP upstream, keeping up to `pool_idle_per_host`
/// idle connections per upstream host.
pub fn client(pool_idle_per_host: usize) -> Result<HttpClient, TransportError> {
    let pooled = reqwest::Client::builder()
        .pool_max_idle_per_host(pool_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| TransportError::Http(e.to_string()))?;
    let inline = inline::enabled_by_env().then(|| Arc::new(inline::Pool::new(pool_idle_per_host)));
    Ok(HttpClient { pooled, inline, drains: inline::Drains::new(pool_idle_per_host) })
}

/// An upstream's answer to a POST, from either path.
enum Response {
    Pooled(reqwest::Response),
    Inline(inline::Response),
}

impl Response {
    fn status(&self) -> http::StatusCode {
        match self {
            Self::Pooled(r) => r.status(),
            Self::Inline(r) => r.status(),
        }
    }

    fn headers(&self) -> &http::HeaderMap {
        match self {
            Self::Pooled(r) => r.headers(),
            Self::Inline(r) => r.headers(),
        }
    }

    /// The next piece of the body, `None` at its end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        match self {
            Self::Pooled(r) => r.chunk().await.map_err(|e| TransportError::Http(without_url(&e))),
            Self::Inline(r) => r.chunk().await,
        }
    }

    /// Lets go of a response the caller may have stopped reading before its end (an SSE stream
    /// once its answer is in). Its connection is only reused once the body has been read to the
    /// end, so the rest is read in the background, within the bounds of [`inline::Drains`]; an
    /// inline response does this itself when dropped.
    fn release(self, drains: &Arc<inline::Drains>) {
        let Self::Pooled(mut r) = self else { return };
        let Some(slot) = drains.try_start() else { return };
        inline::run_drain(async move {
            let _slot = slot;
            let mut left = inline::DRAIN_MAX_BYTES;
            let _ = tokio::time::timeout(inline::DRAIN_GRACE, async {
                while let Ok(Some(c)) = r.chunk().await {
                    if c.len() > left {
                        return;
                    }
                    left -= c.len();
                }
            })
            .await;
        });
    }
}

struct State {
    session_id: Option<String>,
    protocol_version: Option<String>,
}

pub struct HttpTransport {
    name: String,
    spec: HttpSpec,
    /// `spec.url`, parsed once rather than on every request. `None` if it does not parse:
    /// each request then reports the parse error, as before.
    url: Option<reqwest::Url>,
    /// Where POSTs go on the inline path, when the client has one and the URL qualifies.
    inline: Option<inline::Target>,
    client: HttpClient,
    state: Mutex<State>,
    inbound: mpsc::Sender<Inbound>,
    max_message: usize,
    dead_tx: watch::Sender<bool>,
}

impl HttpTransport {
    pub fn new(
        name: &str,
        spec: HttpSpec,
        client: HttpClient,
        inbound: mpsc::Sender<Inbound>,
        max_message: usize,
    ) -> Arc<Self> {
        let (dead_tx, _) = watch::channel(false);
        let url = reqwest::Url::parse(&spec.url).ok();
        let inline = url.as_ref().filter(|_| client.inline()).and_then(inline::Target::from_url);
        Arc::new(Self {
            name: name.to_owned(),
            url,
            inline,
            spec,
            client,
            state: Mutex::new(State { session_id: None, protocol_version: None }),
            inbound,
            max_message,
            dead_tx,
        })
    }

    pub fn set_protocol_version(&self, v: Option<String>) {
        if let Ok(mut s) = self.state.lock() {
            s.protocol_version = v;
        }
    }

    pub fn session_id(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.session_id.clone())
    }

    pub fn is_closed(&self) -> bool {
        *self.dead_tx.borrow()
    }

    pub async fn closed(&self) {
        let mut rx = self.dead_tx.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    fn build(&self, method: reqwest::Method, extra: &ExtraHeaders) -> reqwest::RequestBuilder {
        let client = &self.client.pooled;
        let rb = match &self.url {
            Some(url) => client.request(method, url.clone()),
            None => client.request(method, &self.spec.url),
        };
        let mut rb = rb.header(http::header::ACCEPT, "application/json, text/event-stream");
        for (k, v) in &self.spec.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Ok(s) = self.state.lock() {
            if let Some(sid) = &s.session_id {
                rb = rb.header(SESSION_HEADER, sid.as_str());
            }
            if let Some(v) = &s.protocol_version {
                rb = rb.header(PROTOCOL_HEADER, v.as_str());
            }
        }
        // Routing headers computed for this request replace same-named configured ones, so a
        // header can never be sent twice (2026 servers reject duplicates).
        let mut rb = match rb.build() {
            Ok(mut req) => {
                for (k, v) in extra {
                    if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
                        req.headers_mut().insert(name, value);
                    }
                }
                return reqwest::RequestBuilder::from_parts(client.clone(), req);
            }
            Err(_) => client.request(reqwest::Method::POST, &self.spec.url),
        };
        for (k, v) in extra {
            rb = rb.header(k.as_str(), v.as_str());
        }
        rb
    }

    /// The headers of a POST on the inline path: the same as [`Self::build`] sends, so both
    /// paths look alike to the server.
    fn post_headers(&self, extra: &ExtraHeaders) -> Result<http::HeaderMap, TransportError> {
        let bad = |name: &str| TransportError::Http(format!("request error: header `{name}` is not a valid HTTP header"));
        let mut h = http::HeaderMap::new();
        h.insert(http::header::ACCEPT, http::HeaderValue::from_static("application/json, text/event-stream"));
        // Configured values may be secrets: an error names the header, never its value.
        for (k, v) in &self.spec.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad(k))?;
            h.append(name, http::HeaderValue::from_str(v).map_err(|_| bad(k))?);
        }
        if let Ok(s) = self.state.lock() {
            if let Some(sid) = &s.session_id {
                h.append(SESSION_HEADER, http::HeaderValue::from_str(sid).map_err(|_| bad(SESSION_HEADER))?);
            }
            if let Some(v) = &s.protocol_version {
                h.append(PROTOCOL_HEADER, http::HeaderValue::from_str(v).map_err(|_| bad(PROTOCOL_HEADER))?);
            }
        }
        for (k, v) in extra {
            if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
                h.insert(name, value);
            }
        }
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        Ok(h)
    }

    /// Sends one message. A request's outcome arrives later on the inbound channel, tagged with
    /// `our_id`; notifications and responses are fire-and-forget (the server answers 202).
    pub fn send(self: &Arc<Self>, msg: Value, our_id: Option<u64>, extra: ExtraHeaders, timeout: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = this.post(&msg, our_id, &extra, timeout, false).await;
            if let (Err(error), Some(id)) = (outcome, our_id) {
                this.note_failure(&error);
                let _ = this.inbound.send(Inbound::Failed { id, error }).await;
            }
        });
    }

    /// Sends request `our_id` with its POST running in the caller's future, so the answer
    /// needs no hop through another task. The response comes back as `Some` when it is the
    /// first message on the POST (the usual case: a JSON body). When related messages came
    /// first, everything, the response included, goes to the inbound channel in order and this
    /// returns `None`.
    pub async fn call(&self, msg: &Value, our_id: u64, extra: &ExtraHeaders, timeout: Duration) -> Result<Option<Answer>, TransportError> {
        let outcome = self.post(msg, Some(our_id), extra, timeout, true).await;
        if let Err(e) = &outcome {
            self.note_failure(e);
        }
        outcome
    }

    fn note_failure(&self, error: &TransportError) {
        if matches!(error, TransportError::SessionExpired) {
            let _ = self.dead_tx.send(true);
        }
    }

    /// POSTs one message and delivers what comes back to the inbound channel; with `direct`,
    /// the response to `our_id` is returned instead when nothing was delivered before it.
    pub(crate) async fn post(
        &self,
        msg: &Value,
        our_id: Option<u64>,
        extra: &ExtraHeaders,
        timeout: Duration,
        mut direct: bool,
    ) -> Result<Option<Answer>, TransportError> {
        let body = jsonrpc::to_vec(msg);
        let sent_session = self.session_id().is_some();
        let mut resp = match (&self.inline, &self.client.inline) {
            (Some(target), Some(pool)) => {
                let req = target.request(http::Method::POST, self.post_headers(extra)?, body);
                Response::Inline(pool.send(target, req, timeout).await?)
            }
            _ => Response::Pooled(
                self.build(reqwest::Method::POST, extra)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .timeout(timeout)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| TransportError::Http(without_url(&e)))?,
            ),
        };
        let status = resp.status();
        // A session id is taken only from a successful `initialize` answer: any other response
        // (an error page, a 2026 answer) never turns a stateless connection into a session.
        if status.is_success()
            && jsonrpc::method(msg) == Some("initialize")
            && let (Some(sid), Ok(mut s)) = (resp.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()), self.state.lock())
        {
            s.session_id = Some(sid.to_owned());
        }
        // 404 means "session expired" only for a request that carried a session id.
        if status == reqwest::StatusCode::NOT_FOUND && sent_session {
            return Err(TransportError::SessionExpired);
        }
        if status == reqwest::StatusCode::ACCEPTED {
            return match our_id {
                Some(_) => Err(TransportError::Invalid("202 Accepted for a request".into())),
                None => Ok(None),
            };
        }
        let is_sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !status.is_success() {
            // A JSON-RPC error body is still a valid answer to the request (e.g. a 400 carrying
            // -32022 from a 2026-07-28 server): relay it rather than inventing our own error.
            if !is_sse
                && let Ok(bytes) = read_limited(&mut resp, self.max_message).await
                && let Ok(mut v) = serde_json::from_slice::<Value>(&bytes)
                && let Some(obj) = v.as_object_mut()
                && obj.contains_key("error")
                && !obj.contains_key("method")
            {
                // Some servers leave `id` out of errors about requests they did not parse.
                obj.entry("id").or_insert(Value::Null);
                // Servers built on the TypeScript SDK answer an unknown session with 400 and
                // "No valid session ID" instead of 404: that is an expired session too.
                let about_session = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.to_ascii_lowercase().contains("session"));
                if sent_session && status == reqwest::StatusCode::BAD_REQUEST && about_session {
                    return Err(TransportError::SessionExpired);
                }
                return Ok(self.hand_over(v, our_id, &mut direct).await.map(Answer::Parsed));
            }
            return Err(TransportError::Status { status: status.as_u16() });
        }
        if is_sse {
            let answer = self.pump_sse(&mut resp, our_id, &mut direct).await;
            resp.release(&self.client.drains);
            answer.map(|a| a.map(Answer::Parsed))
        } else {
            let bytes = Bytes::from(read_limited(&mut resp, self.max_message).await?);
            if bytes.is_empty() && our_id.is_none() {
                return Ok(None);
            }
            // The usual answer, a success to this very request with nothing before it, stays
            // as bytes: the caller parses it only if it has to change or read it.
            if direct
                && let Some(id) = our_id
                && let Some(raw) = RawAnswer::parse(bytes.clone(), id)
            {
                return Ok(Some(Answer::Raw(raw)));
            }
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| TransportError::Invalid(e.to_string()))?;
            match v {
                Value::Array(items) => {
                    for item in items {
                        self.deliver(item, our_id).await;
                    }
                    Ok(None)
                }
                v => Ok(self.hand_over(v, our_id, &mut direct).await.map(Answer::Parsed)),
            }
        }
    }

    /// Returns `msg` when it is the response to `our_id` and `direct` still holds (nothing was
    /// delivered before it on this POST, so the order the server sent is kept); otherwise
    /// delivers it to the inbound channel, after which nothing more is returned directly.
    async fn hand_over(&self, mut msg: Value, our_id: Option<u64>, direct: &mut bool) -> Option<Value> {
        answered_id(&mut msg, our_id);
        if *direct && our_id.is_some() && jsonrpc::kind(&msg) == Some(jsonrpc::Kind::Response) && msg.get("id").and_then(Value::as_u64) == our_id {
            return Some(msg);
        }
        *direct = false;
        let _ = self.inbound.send(Inbound::Message { msg, related_to: our_id }).await;
        None
    }

    async fn deliver(&self, mut msg: Value, related_to: Option<u64>) {
        answered_id(&mut msg, related_to);
        let _ = self.inbound.send(Inbound::Message { msg, related_to }).await;
    }

    /// Reads an SSE response until it carries the response to `our_id` (or ends).
    async fn pump_sse(&self, resp: &mut Response, our_id: Option<u64>, direct: &mut bool) -> Result<Option<Value>, TransportError> {
        let mut decoder = sse::Decoder::new(self.max_message);
        while let Some(chunk) = resp.chunk().await? {
            let events = decoder.feed(&chunk).map_err(|e| TransportError::Invalid(e.to_string()))?;
            for ev in events {
                if ev.data.trim().is_empty() {
                    continue;
                }
                let Ok(msg) = serde_json::from_str::<Value>(&ev.data) else {
                    tracing::warn!(upstream = %self.name, "upstream sent a non-JSON SSE event");
                    continue;
                };
                let is_final = jsonrpc::kind(&msg) == Some(jsonrpc::Kind::Response)
                    && our_id.is_some()
                    && msg.get("id").and_then(Value::as_u64) == our_id;
                let answer = self.hand_over(msg, our_id, direct).await;
                if is_final {
                    return Ok(answer);
                }
            }
        }
        match our_id {
            Some(_) => Err(TransportError::Closed),
            None => Ok(None),
        }
    }

    /// Opens the stream for server messages outside any request and keeps it open, reconnecting
    /// with backoff, until the transport is closed: the GET stream (legacy), or with `post` the
    /// 2026-07-28 `subscriptions/listen` request. A 405 (or 404 for `post`) means the server
    /// has none.
    pub fn open_listen_stream(self: &Arc<Self>, post: Option<(Value, ExtraHeaders)>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let Some(this) = weak.upgrade() else { return };
                if *this.dead_tx.borrow() {
                    return;
                }
                let resp = match &post {
                    None => this.build(reqwest::Method::GET, &Vec::new()).header(http::header::ACCEPT, "text/event-stream").send().await,
                    Some((body, extra)) => {
                        this.build(reqwest::Method::POST, extra)
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(body.to_string())
                            .send()
                            .await
                    }
                };
                match resp {
                    Ok(r) if r.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED => return,
                    Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND && post.is_some() => return,
                    Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                        let _ = this.dead_tx.send(true);
                        return;
                    }
                    Ok(r) if r.status().is_success() => {
                        backoff = Duration::from_millis(200);
                        let mut closed = this.dead_tx.subscribe();
                        let mut direct = false;
                        let mut r = Response::Pooled(r);
                        tokio::select! {
                            _ = this.pump_sse(&mut r, None, &mut direct) => {}
                            _ = closed.wait_for(|d| *d) => return,
                        }
                    }
                    Ok(_) | Err(_) => {}
                }
                drop(this);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
    }

    /// Ends the upstream session (DELETE), best effort.
    pub async fn shutdown(&self) {
        let _ = self.dead_tx.send(true);
        if self.session_id().is_some() {
            let _ = self
                .build(reqwest::Method::DELETE, &Vec::new())
                .timeout(Duration::from_secs(2))
                .send()
                .await;
        }
    }
}

/// An error answer that could not name our request (`"id": null`, e.g. a server that rejected
/// it before parsing) still answers the request this POST carried.
fn answered_id(msg: &mut Value, related_to: Option<u64>) {
    if let Some(id) = related_to
        && msg.get("id") == Some(&Value::Null)
        && msg.get("error").is_some()
        && let Some(o) = msg.as_object_mut()
    {
        o.insert("id".into(), id.into());
    }
}

async fn read_limited(resp: &mut Response, max: usize) -> Result<Vec<u8>, TransportError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > max {
            return Err(TransportError::Invalid(format!("response larger than {max} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// reqwest errors print the URL, which may carry credentials in its query: drop it.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<upstream url>");
    }
    let kind = if e.is_timeout() { "timeout" } else if e.is_connect() { "connect" } else { "request" };
    format!("{kind} error: {s}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::stdio::StdioSpec;
    use crate::upstream::{TransportSpec, UpstreamSpec};

    /// What an operator configured as a secret never shows in `Debug`, however deep the spec
    /// sits: header values, child environment values, and a URL's user info, path and query.
    #[test]
    fn debug_output_carries_no_configured_secret() {
        let spec = |transport| UpstreamSpec { name: "u".into(), transport, timeout: Duration::from_secs(1), max_message: 1, client_info: Value::Null, client_capabilities: Value::Null };
        let http = spec(TransportSpec::Http(HttpSpec { url: "https://user:pw-SECRET1@api.example:8443/t/SECRET2/mcp?key=SECRET3#SECRET4".into(), headers: vec![("Authorization".into(), "Bearer SECRET5".into())] }));
        let stdio = spec(TransportSpec::Stdio(StdioSpec { command: "srv".into(), args: vec!["--flag".into()], env: [("API_TOKEN".to_owned(), "SECRET6".to_owned())].into(), cwd: None }));
        for shown in [format!("{http:?}"), format!("{http:#?}"), format!("{stdio:?}")] {
            assert!(!shown.contains("SECRET"), "a secret leaked into Debug: {shown}");
        }
        let shown = format!("{http:?}");
        assert!(shown.contains("https://api.example:8443/<redacted>") && shown.contains("Authorization"), "{shown}");
        assert!(format!("{stdio:?}").contains("API_TOKEN"), "names stay visible");
        assert_eq!(redacted_url("http://127.0.0.1:9000/"), "http://127.0.0.1:9000/");
        assert_eq!(redacted_url("not a url SECRET"), "<redacted>");
    }
}
