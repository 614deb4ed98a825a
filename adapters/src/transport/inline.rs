//! HTTP/1.1 connections to plain `http://` upstreams, each driven inside the call that uses it.
//!
//! reqwest (hyper-util's pool) runs every connection as a task of its own: a call hands its
//! request to that task through a channel and is woken through another when the answer is in,
//! so each upstream exchange costs two task wakeups, often across the runtime's threads. Here
//! the call polls the connection itself, alongside its own future, so the bytes the socket
//! delivers complete the call in the same poll. Connections go back to a shared idle list once
//! their response has been read to the end. A response the call stops reading early (an SSE
//! stream, once the answer it waited for is in) is read to its end in the background, briefly
//! and within bounds, so that its connection goes back too: see [`Drains`].
//!
//! hyper's client hands the request and the response between the connection and the call through
//! channels, each hand-over waking the other side, which here is the same task: the two are
//! polled under [`LocalWakes`], which answers such wakes by polling again at once.
//!
//! Only plain `http://` URLs without credentials in them take this path, and only when no HTTP
//! proxy is configured in the environment; everything else (TLS, proxies, the long-lived
//! listen streams) stays on reqwest.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::TransportError;
use crate::wake::LocalWakes;

type Connection = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection idle for longer than this is closed rather than reused (reqwest's default too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a response dropped before its end may take to end, read in the background, for its
/// connection to be reused. A Streamable HTTP server ends the SSE stream of a POST right after
/// the answer (the event the call waited for), so the end is normally already on its way.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How much of the rest of a dropped response is read, at most, before its connection is closed
/// instead.
pub(crate) const DRAIN_MAX_BYTES: usize = 64 * 1024;

/// Environment variables that route plain HTTP through a proxy in reqwest; when one is set,
/// every request stays on reqwest so that the proxy is honoured.
const PROXY_VARS: [&str; 4] = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

/// Whether the inline path may be used in this process: not when an HTTP proxy is configured,
/// nor when `CLAWGATE_UPSTREAM_INLINE=0` turns it off (an escape hatch, and the switch the
/// load tests use to measure it).
pub(crate) fn enabled_by_env() -> bool {
    if PROXY_VARS.iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty())) {
        return false;
    }
    std::env::var("CLAWGATE_UPSTREAM_INLINE").map_or(true, |v| v != "0")
}

/// Where one transport's requests go on the inline path, taken once from its URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The `Host` header and the idle list's key: `host[:port]` as the URL spells it.
    authority: String,
    host: http::HeaderValue,
    connect_host: String,
    port: u16,
    /// The request target in origin form (`/mcp?x=y`).
    path: http::Uri,
}

impl Target {
    /// `None` when the URL must go through reqwest: not `http`, or credentials in it.
    pub(crate) fn from_url(url: &reqwest::Url) -> Option<Self> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host_str = url.host_str()?;
        let connect_host = match url.host()? {
            url::Host::Domain(d) => d.to_owned(),
            url::Host::Ipv4(a) => a.to_string(),
            url::Host::Ipv6(a) => a.to_string(),
        };
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str.to_owned(),
        };
        let mut path = url.path().to_owned();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        Some(Self {
            host: http::HeaderValue::from_str(&authority).ok()?,
            authority,
            connect_host,
            port,
            path: http::Uri::try_from(path).ok()?,
        })
    }

    /// A request to this target with `headers` (which carry no `Host`) and `body`.
    pub(crate) fn request(&self, method: http::Method, mut headers: http::HeaderMap, body: Vec<u8>) -> http::Request<Full<Bytes>> {
        headers.insert(http::header::HOST, self.host.clone());
        headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        let mut req = http::Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = method;
        *req.uri_mut() = self.path.clone();
        *req.headers_mut() = headers;
        req
    }
}

/// One HTTP/1.1 connection: the handle that sends requests and the state machine that moves
/// bytes, which only runs while someone polls it.
struct H1 {
    send: http1::SendRequest<Full<Bytes>>,
    conn: Connection,
    /// The connection future has finished (closed or failed): never poll it again.
    ended: bool,
    idle_since: Instant,
    /// The waker the connection and the call's future are polled with ([`drive`]).
    wakes: Arc<LocalWakes>,
}

impl H1 {
    /// Whether a pooled connection can take a request now. Polling it once lets it read a close
    /// the server sent while it sat idle, and lets it ask for the next request.
    fn usable(&mut self) -> bool {
        if self.ended || self.idle_since.elapsed() > IDLE_TIMEOUT {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        if Pin::new(&mut self.conn).poll(&mut cx).is_ready() {
            self.ended = true;
            return false;
        }
        self.send.is_ready()
    }
}

/// Polls `fut` with the connection running alongside it in the same task: the connection first,
/// so that what it reads this turn completes `fut` in the same poll. Both are polled under
/// `wakes`: a wake one of them gives the other during the poll is answered by polling both again
/// here, not by waking the task.
async fn drive<F: Future>(conn: &mut Connection, ended: &mut bool, wakes: &Arc<LocalWakes>, fut: F) -> Result<F::Output, TransportError> {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(wakes.clone());
    std::future::poll_fn(move |cx| {
        wakes.poll(cx, &waker, |inner| {
            let mut outcome = None;
            if !*ended && let Poll::Ready(r) = Pin::new(&mut *conn).poll(inner) {
                *ended = true;
                outcome = Some(r);
            }
            if let Poll::Ready(v) = fut.as_mut().poll(inner) {
                return Poll::Ready(Ok(v));
            }
            match outcome {
                // The connection is gone and `fut` still waits on it: it never will complete.
                Some(Err(e)) => Poll::Ready(Err(TransportError::Http(format!("request error: {e}")))),
                Some(Ok(())) => Poll::Ready(Err(TransportError::Closed)),
                None if *ended => Poll::Ready(Err(TransportError::Closed)),
                None => Poll::Pending,
            }
        })
    })
    .await
}

fn timed_out() -> TransportError {
    TransportError::Http("timeout error: the upstream did not answer in time".into())
}

/// The background reads of responses dropped before their end ([`DRAIN_GRACE`]), counted so that
/// at most `max` run at once. Without the bound, an upstream that never ends its SSE streams
/// would have every call of a busy gateway leave a socket and a task behind for the grace
/// period; beyond the bound, a dropped response's connection is closed.
pub(crate) struct Drains {
    running: AtomicUsize,
    max: usize,
}

/// One running drain's place in [`Drains`], given back on drop.
pub(crate) struct DrainSlot(Arc<Drains>);

impl Drains {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { running: AtomicUsize::new(0), max })
    }

    pub(crate) fn try_start(self: &Arc<Self>) -> Option<DrainSlot> {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| DrainSlot(self.clone()))
    }

    #[cfg(test)]
    fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}

impl Drop for DrainSlot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts `fut` (a drain) at once, in the caller's poll: when the rest of the response is
/// already in, that finishes it without a task. Otherwise it goes on as a task of its own.
pub(crate) fn run_drain(fut: impl Future<Output = ()> + Send + 'static) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let mut fut = Box::pin(fut);
    if fut.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending() {
        rt.spawn(fut);
    }
}

/// Idle inline connections, shared by every transport of one HTTP client, keyed by authority.
pub(crate) struct Pool {
    #[expect(clippy::vec_box, reason = "connections move between this list and the calls; boxed, each move is a pointer")]
    idle: Mutex<HashMap<String, Vec<Box<H1>>>>,
    max_idle: usize,
    /// Only a connection that can go back to the idle list is worth draining: at most as many
    /// drains as idle connections.
    drains: Arc<Drains>,
}

impl Pool {
    pub(crate) fn new(max_idle_per_host: usize) -> Self {
        Self { idle: Mutex::new(HashMap::new()), max_idle: max_idle_per_host, drains: Drains::new(max_idle_per_host) }
    }

    fn take(&self, target: &Target) -> Option<Box<H1>> {
        loop {
            let mut h = self.idle.lock().ok()?.get_mut(&target.authority)?.pop()?;
            if h.usable() {
                return Some(h);
            }
        }
    }

    fn put(&self, authority: &str, h: Box<H1>) {
        let Ok(mut idle) = self.idle.lock() else { return };
        if let Some(list) = idle.get_mut(authority) {
            if list.len() < self.max_idle {
                list.push(h);
            }
            return;
        }
        if self.max_idle > 0 {
            idle.insert(authority.to_owned(), vec![h]);
        }
    }

    /// A new connection, boxed: hyper's connection state is most of a kilobyte, and it moves
    /// between the idle list and the calls.
    async fn connect(target: &Target, deadline: Instant) -> Result<Box<H1>, TransportError> {
        let connect_by = deadline.min(Instant::now() + CONNECT_TIMEOUT);
        let tcp = tokio::time::timeout_at(connect_by, TcpStream::connect((target.connect_host.as_str(), target.port)))
            .await
            .map_err(|_| TransportError::Http("connect error: timed out".into()))?
            .map_err(|e| TransportError::Http(format!("connect error: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| TransportError::Http(format!("connect error: {e}")))?;
        Ok(Box::new(H1 { send, conn, ended: false, idle_since: Instant::now(), wakes: LocalWakes::new() }))
    }

    /// Sends `req` on an idle connection to `target`, or a new one, and returns the response
    /// once its head is in. When the connection closed before the request was written (a pooled
    /// one the server has just dropped), the request is sent again, once, on a new connection.
    pub(crate) async fn send(self: &Arc<Self>, target: &Target, mut req: http::Request<Full<Bytes>>, timeout: Duration) -> Result<Response, TransportError> {
        let deadline = Instant::now() + timeout;
        let mut h = match self.take(target) {
            Some(h) => h,
            None => Self::connect(target, deadline).await?,
        };
        let mut resent = false;
        let head = loop {
            // Queuing the request wakes the connection: noted, and answered by the first poll.
            h.wakes.hold();
            let sent = h.send.try_send_request(req);
            match tokio::time::timeout_at(deadline, drive(&mut h.conn, &mut h.ended, &h.wakes, sent)).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Ok(resp))) => break resp,
                Ok(Ok(Err(mut e))) => match e.take_message().filter(|_| !resent) {
                    // Never written: safe to send again, once, on a new connection.
                    Some(again) => {
                        resent = true;
                        req = again;
                        h = Self::connect(target, deadline).await?;
                    }
                    None => return Err(TransportError::Http(format!("request error: {}", e.error()))),
                },
            }
        };
        let (parts, body) = head.into_parts();
        Ok(Response { pool: self.clone(), authority: target.authority.clone(), h: Some(h), parts, body: Some(body), deadline, finished: false })
    }

    /// Reads the rest of a dropped response, within [`DRAIN_GRACE`] (and the call's deadline)
    /// and [`DRAIN_MAX_BYTES`], then puts its connection back; on any failure, timeout or
    /// excess the connection is dropped, so closed. What the rest carries is not delivered: an
    /// SSE stream ends after the answer the call has already taken.
    async fn drain(slot: DrainSlot, pool: Arc<Pool>, authority: String, mut h: Box<H1>, mut body: Incoming, until: Instant) {
        let _slot = slot;
        let mut left = DRAIN_MAX_BYTES;
        loop {
            let Ok(Ok(frame)) = tokio::time::timeout_at(until, drive(&mut h.conn, &mut h.ended, &h.wakes, body.frame())).await else { return };
            match frame {
                None => break,
                Some(Ok(frame)) => match frame.data_ref().map_or(0, Bytes::len) {
                    n if n > left => return,
                    n => left -= n,
                },
                Some(Err(_)) => return,
            }
        }
        if !h.ended {
            h.idle_since = Instant::now();
            pool.put(&authority, h);
        }
    }
}

/// An upstream response whose body is read by polling its connection. Once the body has been
/// read to its end, dropping this puts the connection back in the idle list; a body dropped
/// before its end is drained first ([`Pool::drain`]), or its connection closed.
pub(crate) struct Response {
    pool: Arc<Pool>,
    authority: String,
    h: Option<Box<H1>>,
    parts: http::response::Parts,
    /// Taken by a drain on drop.
    body: Option<Incoming>,
    deadline: Instant,
    finished: bool,
}

impl Response {
    pub(crate) fn status(&self) -> http::StatusCode {
        self.parts.status
    }

    pub(crate) fn headers(&self) -> &http::HeaderMap {
        &self.parts.headers
    }

    /// The next piece of the body, `None` at its end.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let (Some(h), Some(body)) = (self.h.as_mut(), self.body.as_mut()) else { return Err(TransportError::Closed) };
            let frame = match tokio::time::timeout_at(self.deadline, drive(&mut h.conn, &mut h.ended, &h.wakes, body.frame())).await {
                Err(_) => return Err(timed_out()),
                Ok(r) => r?,
            };
            match frame {
                None => {
                    self.finished = true;
                    return Ok(None);
                }
                Some(Err(e)) => return Err(TransportError::Http(format!("request error: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        let Some(mut h) = self.h.take() else { return };
        if h.ended {
            return;
        }
        if self.finished {
            h.idle_since = Instant::now();
            self.pool.put(&self.authority, h);
            return;
        }
        let until = (Instant::now() + DRAIN_GRACE).min(self.deadline);
        if let Some(body) = self.body.take()
            && until > Instant::now()
            && let Some(slot) = self.pool.drains.try_start()
        {
            run_drain(Pool::drain(slot, self.pool.clone(), std::mem::take(&mut self.authority), h, body, until));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn only_plain_http_without_credentials_is_inline() {
        assert!(Target::from_url(&url("https://example.com/mcp")).is_none());
        assert!(Target::from_url(&url("http://user:pw@example.com/mcp")).is_none());
        assert!(Target::from_url(&url("http://user@example.com/mcp")).is_none());
        let t = Target::from_url(&url("http://127.0.0.1:8080/mcp?k=v#frag")).unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/mcp?k=v");
        assert_eq!((t.connect_host.as_str(), t.port), ("127.0.0.1", 8080));
        let t = Target::from_url(&url("http://[::1]/")).unwrap();
        assert_eq!((t.authority.as_str(), t.connect_host.as_str(), t.port), ("[::1]", "::1", 80));
    }

    /// How the test server answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// This JSON body; with `close`, the connection is closed after the first answer (as by
        /// a server whose keep-alive timer fired). An empty body: no answer at all.
        Json { body: &'static str, close: bool },
        /// A chunked SSE stream: one event at once, and the stream's end after `end_after`
        /// (never, with `None`), as a Streamable HTTP server answers a POST.
        Sse { end_after: Option<Duration> },
    }

    const SSE_EVENT: &str = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";

    /// A real HTTP/1.1 server on a loopback socket that answers each request as `answer` says
    /// and counts the connections it accepted.
    #[allow(clippy::unwrap_used, reason = "test helper")]
    async fn server(answer: Answer) -> (Target, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // Read one request: its head, then `content-length` bytes of body.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + len);
                        match answer {
                            Answer::Json { body: "", .. } => continue, // never answer
                            Answer::Json { body, close } => {
                                let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                                if sock.write_all(resp.as_bytes()).await.is_err() || close {
                                    return;
                                }
                            }
                            Answer::Sse { end_after } => {
                                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                                let event = format!("{head}{:x}\r\n{SSE_EVENT}\r\n", SSE_EVENT.len());
                                if sock.write_all(event.as_bytes()).await.is_err() {
                                    return;
                                }
                                let Some(after) = end_after else {
                                    // Never ends: keep the socket until the client goes away.
                                    let _ = sock.read(&mut [0u8; 1]).await;
                                    return;
                                };
                                tokio::time::sleep(after).await;
                                if sock.write_all(b"0\r\n\r\n").await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (Target::from_url(&url(&format!("http://127.0.0.1:{port}/mcp"))).unwrap(), accepted)
    }

    #[allow(clippy::unwrap_used, reason = "test helper")]
    async fn call(pool: &Arc<Pool>, t: &Target, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        let mut resp = pool.send(t, t.request(http::Method::POST, http::HeaderMap::new(), b"{}".to_vec()), timeout).await?;
        assert_eq!(resp.status(), http::StatusCode::OK);
        let mut out = Vec::new();
        while let Some(c) = resp.chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn connections_are_reused_once_their_body_is_read() {
        let (t, accepted) = server(Answer::Json { body: r#"{"ok":true}"#, close: false }).await;
        let pool = Arc::new(Pool::new(4));
        for _ in 0..50 {
            assert_eq!(call(&pool, &t, Duration::from_secs(5)).await.unwrap(), br#"{"ok":true}"#);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "50 sequential calls share one connection");
        // Concurrent calls each take their own connection; the idle list keeps at most 4.
        let calls: Vec<_> = (0..8).map(|_| call(&pool, &t, Duration::from_secs(5))).collect();
        for r in futures_util::future::join_all(calls).await {
            assert_eq!(r.unwrap(), br#"{"ok":true}"#);
        }
        assert_eq!(pool.idle.lock().unwrap().get(&t.authority).map(Vec::len), Some(4));
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let (t, accepted) = server(Answer::Json { body: r#"{"n":1}"#, close: true }).await;
        let pool = Arc::new(Pool::new(4));
        for _ in 0..5 {
            assert_eq!(call(&pool, &t, Duration::from_secs(5)).await.unwrap(), br#"{"n":1}"#);
            // Give the server's close time to arrive, as it would for an idle connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out_and_its_connection_is_not_reused() {
        let (t, accepted) = server(Answer::Json { body: "", close: false }).await;
        let pool = Arc::new(Pool::new(4));
        let started = std::time::Instant::now();
        let err = call(&pool, &t, Duration::from_millis(200)).await.unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(pool.idle.lock().unwrap().get(&t.authority).is_none_or(Vec::is_empty));
        let _ = call(&pool, &t, Duration::from_millis(50)).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// Sends one request and reads the answer only up to its first piece (the SSE event), then
    /// drops it, as `pump_sse` does once the answer is in.
    #[allow(clippy::unwrap_used, reason = "test helper")]
    async fn first_event_only(pool: &Arc<Pool>, t: &Target) {
        let mut resp = pool.send(t, t.request(http::Method::POST, http::HeaderMap::new(), b"{}".to_vec()), Duration::from_secs(5)).await.unwrap();
        assert_eq!(resp.chunk().await.unwrap().unwrap(), SSE_EVENT.as_bytes());
    }

    /// Waits (up to 2 s) until `pool` holds `n` idle connections to `t`.
    #[allow(clippy::unwrap_used, reason = "test helper")]
    async fn idle_becomes(pool: &Pool, t: &Target, n: usize) -> usize {
        let idle = || pool.idle.lock().unwrap().get(&t.authority).map_or(0, Vec::len);
        for _ in 0..200 {
            if idle() == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        idle()
    }

    /// An SSE answer whose end comes after the event the call waited for: the call lets go
    /// at the event, the end is read in the background, and the connection is reused. Before
    /// drains, every such call opened a new connection (server-everything: one per call).
    #[tokio::test]
    async fn an_sse_answer_dropped_at_its_event_keeps_its_connection() {
        let (t, accepted) = server(Answer::Sse { end_after: Some(Duration::from_millis(20)) }).await;
        let pool = Arc::new(Pool::new(4));
        for _ in 0..5 {
            first_event_only(&pool, &t).await;
            assert_eq!(idle_becomes(&pool, &t, 1).await, 1, "the drained connection is back in the idle list");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "five calls, one connection");
        assert_eq!(pool.drains.running(), 0);
        // The end written straight after the event: drained, whether in the drop's own poll or
        // in a task, and reused too.
        let (t, accepted) = server(Answer::Sse { end_after: Some(Duration::ZERO) }).await;
        for _ in 0..5 {
            first_event_only(&pool, &t).await;
            assert_eq!(idle_becomes(&pool, &t, 1).await, 1);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A stream that never ends is given up after the grace period: its connection is closed,
    /// never pooled, and at most as many drains run at once as the pool keeps idle connections.
    #[tokio::test]
    async fn an_sse_stream_that_never_ends_is_closed_after_the_grace_period() {
        let (t, accepted) = server(Answer::Sse { end_after: None }).await;
        let pool = Arc::new(Pool::new(2));
        let started = std::time::Instant::now();
        for _ in 0..3 {
            first_event_only(&pool, &t).await;
        }
        let running = pool.drains.running();
        assert!(running <= 2, "{running} drains on a pool that keeps two idle connections");
        // Unless the machine stalled past the grace period, the first two still run.
        if started.elapsed() < DRAIN_GRACE {
            assert_eq!(running, 2, "the third dropped stream is closed at once: two drains at most");
        }
        tokio::time::sleep(DRAIN_GRACE + Duration::from_millis(300)).await;
        assert_eq!(pool.drains.running(), 0, "every drain gave up");
        assert_eq!(idle_becomes(&pool, &t, 0).await, 0, "and pooled nothing");
        first_event_only(&pool, &t).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4, "each call had a connection of its own");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = Target::from_url(&url(&format!("http://127.0.0.1:{port}/"))).unwrap();
        let err = call(&Arc::new(Pool::new(1)), &t, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("connect error"), "{err}");
    }

    #[test]
    fn requests_carry_host_and_length() {
        let t = Target::from_url(&url("http://localhost:9/mcp")).unwrap();
        let req = t.request(http::Method::POST, http::HeaderMap::new(), b"{}".to_vec());
        assert_eq!(req.headers()[http::header::HOST], "localhost:9");
        assert_eq!(req.headers()[http::header::CONTENT_LENGTH], "2");
        assert_eq!(req.uri(), "/mcp");
    }
}
