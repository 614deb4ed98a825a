//! Test support for clawgate: an in-process gateway on a free port, and a small MCP client over
//! Streamable HTTP (both eras) that records everything it receives. The load generator reuses
//! the client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};

pub const MODERN: &str = "2026-07-28";

/// An explicit allow-all policy. Relay tests opt in to it: a gateway without `[policy]`
/// denies every call.
pub const ALLOW_ALL: &str = "[policy]\ninline = \"permit (principal, action, resource);\"\n";

/// A gateway running in this process, serving HTTP on `127.0.0.1:<free port>`.
pub struct TestGateway {
    pub gw: Arc<clawgate::Gateway>,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    /// Starts a gateway from config text (relative paths resolve against the cwd).
    /// Without a `[policy]` section the config gets [`ALLOW_ALL`] (relay tests).
    pub async fn start(config: &str) -> anyhow::Result<Self> {
        let config = if config.contains("[policy]") { config.to_owned() } else { format!("{ALLOW_ALL}{config}") };
        let config = config.as_str();
        let mut cfg = clawgate::Config::parse(config, Path::new("test.toml"), Path::new("."), &|k| std::env::var(k).ok())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        cfg.listen.http = "127.0.0.1:0".parse()?;
        // Tests that do not name a lockfile keep pins in memory rather than writing to the cwd.
        if !config.contains("[pins]") {
            cfg.pins.lockfile = None;
        }
        let gw = clawgate::Gateway::start(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let g = Arc::clone(&gw);
        let served = tokio::spawn(async move {
            let _ = clawgate::front::http::serve(g, listener, async move {
                let _ = rx.await;
            })
            .await;
        });
        Ok(Self { gw, addr, stop: Some(tx), served: Some(served) })
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Tells the HTTP front to stop, as a shutdown signal does: it stops accepting at once, and
    /// the returned task ends once every open connection has (answers in flight are still
    /// written). The gateway itself keeps running until [`Self::stop`].
    pub fn stop_front(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.served.take()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.gw.shutdown().await;
    }
}

/// One request's outcome: HTTP status, the JSON-RPC response (if any) and every message that
/// arrived before it on the same stream.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub status: u16,
    pub response: Value,
    pub related: Vec<Value>,
    pub sse: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Legacy,
    Stateless,
}

/// How the client answers server→client requests that arrive mid-call.
pub type Answerer = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    pub era: Era,
    next: AtomicU64,
    pub capabilities: Value,
    /// Sent as `Authorization: Bearer …` on every request.
    pub bearer: Option<String>,
}

impl Client {
    fn new(url: &str, era: Era, capabilities: Value) -> Self {
        let http = reqwest::Client::builder().pool_max_idle_per_host(16).tcp_nodelay(true).build().unwrap_or_default();
        Self { http, url: url.to_owned(), session: None, era, next: AtomicU64::new(1), capabilities, bearer: None }
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.bearer {
            Some(b) => rb.header("authorization", format!("Bearer {b}")),
            None => rb,
        }
    }

    /// A 2025-11-25 client: `initialize`, then `notifications/initialized`.
    pub async fn legacy(url: &str) -> anyhow::Result<Self> {
        Self::legacy_with(url, json!({"sampling": {}, "elicitation": {}, "roots": {}})).await
    }

    pub async fn legacy_with(url: &str, capabilities: Value) -> anyhow::Result<Self> {
        Self::legacy_as(url, capabilities, None).await
    }

    /// A 2025-11-25 client presenting `bearer` (a Biscuit token or an API key).
    pub async fn legacy_as(url: &str, capabilities: Value, bearer: Option<&str>) -> anyhow::Result<Self> {
        let mut c = Self::new(url, Era::Legacy, capabilities.clone());
        c.bearer = bearer.map(str::to_owned);
        let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "clawgate-tests", "version": "1"}}});
        let r = c.auth(c.http.post(&c.url)).header("content-type", "application/json").header("accept", "application/json, text/event-stream").body(body.to_string()).send().await?;
        let sid = r.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned).context("no session id")?;
        let sse = r.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("text/event-stream"));
        let text = r.text().await?;
        // Some servers (the TypeScript SDK's) answer `initialize` on an SSE stream.
        let v: Value = if sse {
            let mut dec = clawgate_adapters::sse::Decoder::new(64 << 20);
            let events = dec.feed(text.as_bytes())?;
            let first = events.into_iter().find(|e| !e.data.is_empty()).context("initialize: an SSE stream without a message")?;
            serde_json::from_str(&first.data)?
        } else {
            serde_json::from_str(&text)?
        };
        if v.get("result").is_none() {
            bail!("initialize failed: {v}");
        }
        c.session = Some(sid);
        c.notify("notifications/initialized", None).await?;
        Ok(c)
    }

    /// A 2026-07-28 client: no handshake; every request carries the envelope.
    pub fn stateless(url: &str) -> Self {
        Self::new(url, Era::Stateless, json!({}))
    }

    fn builder(&self, method: &str, params: &Value) -> reqwest::RequestBuilder {
        let mut rb = self.auth(self.http.post(&self.url)).header("content-type", "application/json").header("accept", "application/json, text/event-stream");
        if let Some(s) = &self.session {
            rb = rb.header("mcp-session-id", s);
        }
        match self.era {
            Era::Legacy => rb.header("mcp-protocol-version", "2025-11-25"),
            Era::Stateless => {
                rb = rb.header("mcp-protocol-version", MODERN).header("mcp-method", method);
                let name = match method {
                    "tools/call" | "prompts/get" => params.get("name"),
                    "resources/read" => params.get("uri"),
                    _ => None,
                };
                if let Some(n) = name.and_then(Value::as_str) {
                    rb = rb.header("mcp-name", clawgate_adapters::era::encode_header_value(n));
                }
                rb
            }
        }
    }

    fn envelope(&self, params: Option<Value>) -> Value {
        let mut p = params.unwrap_or_else(|| json!({}));
        if self.era == Era::Stateless
            && let Some(o) = p.as_object_mut() {
                let meta = o.entry("_meta").or_insert_with(|| json!({}));
                meta["io.modelcontextprotocol/protocolVersion"] = MODERN.into();
                meta["io.modelcontextprotocol/clientCapabilities"] = self.capabilities.clone();
            }
        p
    }

    pub async fn notify(&self, method: &str, params: Option<Value>) -> anyhow::Result<u16> {
        let mut body = json!({"jsonrpc": "2.0", "method": method});
        if let Some(p) = params {
            body["params"] = p;
        }
        let r = self.builder(method, &Value::Null).body(body.to_string()).send().await?;
        Ok(r.status().as_u16())
    }

    pub async fn request(&self, method: &str, params: Option<Value>) -> anyhow::Result<Exchange> {
        self.request_answering(method, params, None).await
    }

    /// Sends a request; server→client requests on its SSE stream are answered by `answer`
    /// (POSTed back on the session), or with an error when `answer` is `None`.
    pub async fn request_answering(&self, method: &str, params: Option<Value>, answer: Option<Answerer>) -> anyhow::Result<Exchange> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let params = self.envelope(params);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let r = self.builder(method, &params).body(body.to_string()).send().await?;
        let status = r.status().as_u16();
        let is_sse = r.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("text/event-stream"));
        if !is_sse {
            let text = r.text().await?;
            let response = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Ok(Exchange { status, response, related: Vec::new(), sse: false });
        }
        let mut dec = clawgate_adapters::sse::Decoder::new(64 << 20);
        let mut stream = r.bytes_stream();
        let mut related = Vec::new();
        while let Some(chunk) = stream.next().await {
            for ev in dec.feed(&chunk?)? {
                // A priming event (an id and empty data, for resumption) carries no message.
                if ev.data.is_empty() {
                    continue;
                }
                let msg: Value = serde_json::from_str(&ev.data)?;
                if msg.get("id") == Some(&json!(id)) && msg.get("method").is_none() {
                    return Ok(Exchange { status, response: msg, related, sse: true });
                }
                if msg.get("method").is_some() && msg.get("id").is_some() {
                    let result = match &answer {
                        Some(f) => json!({"jsonrpc": "2.0", "id": msg["id"], "result": f(&msg)}),
                        None => json!({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "not supported"}}),
                    };
                    self.post_raw(result.to_string().into_bytes(), &[]).await?;
                }
                related.push(msg);
            }
        }
        bail!("stream ended without a response to request {id}")
    }

    pub async fn call(&self, tool: &str, args: Value) -> anyhow::Result<Exchange> {
        self.request("tools/call", Some(json!({"name": tool, "arguments": args}))).await
    }

    /// POSTs raw bytes with this client's session header plus `headers`.
    pub async fn post_raw(&self, body: Vec<u8>, headers: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
        let (status, text) = self.post_text(body, headers).await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// [`Client::post_raw`], answered with the response body's exact text.
    pub async fn post_text(&self, body: Vec<u8>, headers: &[(&str, &str)]) -> anyhow::Result<(u16, String)> {
        let mut rb = self.auth(self.http.post(&self.url)).header("content-type", "application/json").header("accept", "application/json, text/event-stream");
        if let Some(s) = &self.session {
            rb = rb.header("mcp-session-id", s);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.body(body).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }
}

/// Writes a config that runs `n` stdio fixture upstreams named `up0..` (plus `extra` TOML).
pub fn fixture_config(fixture_bin: &str, n: usize, timeout: &str, extra: &str) -> String {
    let mut s = String::from("[listen]\nhttp = \"127.0.0.1:0\"\n");
    for i in 0..n {
        s.push_str(&format!(
            "[[upstream]]\nname = \"up{i}\"\ntransport = \"stdio\"\ncommand = \"{fixture_bin}\"\nargs = [\"stdio\", \"--name\", \"up{i}\"]\ntimeout = \"{timeout}\"\n"
        ));
    }
    s.push_str(extra);
    s
}
