//! A fixture MCP server for clawgate's tests and load runs (2025-11-25 era).
//!
//! `fixture-upstream stdio [--name N]` or `fixture-upstream http --port P [--name N]`.
//!
//! Tools: `echo` (returns its whole `params`, so tests can see exactly what arrived), `work`
//! (busy-waits `ms` milliseconds), `hang` (never answers), `crash` (exits the process mid-call),
//! `progress` (sends `steps` progress notifications), `vendor` (a result full of fields a relay
//! must keep), and, over stdio, `sample`/`elicit`/`roots` (server→client requests) and
//! `change_tools` (emits `tools/list_changed` and adds a tool).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, mpsc, oneshot};

struct Fixture {
    name: String,
    /// `--defs FILE`: extra tool definitions (a JSON array), re-read at every `tools/list`, so
    /// a test can change them after the gateway approved them (a rug pull).
    defs: Option<std::path::PathBuf>,
    /// `--extra-tools N`: N generated tools (`t000`, ...) with realistic definitions, for list
    /// benchmarks.
    extra_tools: usize,
    extra_tool: AtomicBool,
    /// Over HTTP: every `Authorization` header value received (the `seen_auth` tool returns
    /// them), to prove what a proxy forwards.
    seen_auth: std::sync::Mutex<Vec<String>>,
    /// Request ids named by `notifications/cancelled` messages received (stdio).
    cancelled: std::sync::Mutex<Vec<Value>>,
    /// Methods of every notification received (stdio).
    notified: std::sync::Mutex<Vec<Value>>,
    /// Request ids of `hang` calls received (stdio), so a test can wait until a call has
    /// really reached the upstream before it cancels it.
    hung: std::sync::Mutex<Vec<Value>>,
}

impl Fixture {
    fn tools(&self) -> Value {
        let any = json!({"type": "object"});
        let mut t = vec![
            json!({"name": "echo", "description": format!("Echo from {}", self.name), "inputSchema": any}),
            json!({"name": "work", "description": "Busy-wait `ms` milliseconds.", "inputSchema": {"type": "object", "properties": {"ms": {"type": "integer"}}}}),
            json!({"name": "hang", "description": "Never answers.", "inputSchema": any}),
            json!({"name": "crash", "description": "Exits mid-call.", "inputSchema": any}),
            json!({"name": "progress", "description": "Sends progress.", "inputSchema": any}),
            json!({"name": "vendor", "description": "Returns vendor fields.", "inputSchema": any, "x-vendor-tool": {"keep": true}, "execution": {"taskSupport": "optional"}}),
            json!({"name": "sample", "description": "Asks the client to sample.", "inputSchema": any}),
            json!({"name": "elicit", "description": "Asks the user.", "inputSchema": any}),
            json!({"name": "roots", "description": "Asks for roots.", "inputSchema": any}),
            json!({"name": "change_tools", "description": "Adds a tool and says so.", "inputSchema": any}),
            json!({"name": "cancellations", "description": "Request ids this server was told to cancel.", "inputSchema": any}),
            json!({"name": "seen_auth", "description": "Over HTTP: the Authorization headers this server received.", "inputSchema": any}),
            json!({"name": "verbatim", "description": "Over HTTP: answers with `result`, a string of JSON text, as the response's result, byte for byte.", "inputSchema": {"type": "object", "properties": {"result": {"type": "string"}}, "required": ["result"]}}),
        ];
        if let Some(extra) = self.defs.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).and_then(|t| serde_json::from_str::<Vec<Value>>(&t).ok()) {
            t.extend(extra);
        }
        for i in 0..self.extra_tools {
            t.push(json!({
                "name": format!("t{i:03}"),
                "title": format!("Generated tool {i}"),
                "description": "Looks up a record by id and returns its fields; read-only, safe to retry, paginated by cursor.",
                "inputSchema": {"type": "object", "properties": {
                    "id": {"type": "string", "description": "Record id."},
                    "fields": {"type": "array", "items": {"type": "string"}},
                    "cursor": {"type": "string"}}, "required": ["id"]},
                "annotations": {"readOnlyHint": true, "idempotentHint": true},
            }));
        }
        if self.extra_tool.load(Ordering::Relaxed) {
            t.push(json!({"name": "added", "description": "Appeared after change_tools.", "inputSchema": any}));
        }
        Value::Array(t)
    }
}

fn ok(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn text(t: &str) -> Value {
    json!({"content": [{"type": "text", "text": t}]})
}

fn busy(ms: u64) {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Answers the methods that need no client interaction. `None` for the interactive tools.
fn simple(fx: &Fixture, msg: &Value) -> Option<Value> {
    let id = msg.get("id")?;
    let method = msg.get("method")?.as_str()?;
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    Some(match method {
        "initialize" => ok(id, json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {"listChanged": true}, "logging": {}},
            "serverInfo": {"name": fx.name, "version": "1"},
        })),
        "ping" => ok(id, json!({})),
        "tools/list" => ok(id, json!({"tools": fx.tools()})),
        "logging/setLevel" => ok(id, json!({})),
        "tools/call" => {
            let name = params.get("name").and_then(Value::as_str).unwrap_or_default();
            let args = params.get("arguments").cloned().unwrap_or(Value::Null);
            match name {
                // `fail`: the text comes back as a JSON-RPC error's message, the arguments as its data.
                "echo" if args.get("fail") == Some(&Value::Bool(true)) => {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": args.get("text").and_then(Value::as_str).unwrap_or("failed"), "data": args}})
                }
                "echo" => ok(id, json!({"content": [{"type": "text", "text": args.get("text").and_then(Value::as_str).unwrap_or(&fx.name)}], "structuredContent": {"upstream": fx.name, "pid": std::process::id(), "params": params}})),
                "cancellations" => ok(id, json!({"content": [], "structuredContent": {"cancelled": *fx.cancelled.lock().unwrap_or_else(std::sync::PoisonError::into_inner), "hung": *fx.hung.lock().unwrap_or_else(std::sync::PoisonError::into_inner), "notified": *fx.notified.lock().unwrap_or_else(std::sync::PoisonError::into_inner)}})),
                "work" => {
                    busy(args.get("ms").and_then(Value::as_u64).unwrap_or(1));
                    ok(id, text("worked"))
                }
                "vendor" => ok(id, json!({
                    "content": [{"type": "text", "text": "v"}, {"type": "resource_link", "uri": "fx://thing", "name": "thing", "x-link": 1}],
                    "structuredContent": {"nested": {"a": [1, 2.5, "x", null, true]}, "big": 12345678901234567i64},
                    "_meta": {"vendor.example/trace": "abc", "progressToken": "not-rewritten"},
                    "x-vendor-result": {"k": "v"},
                    "isError": false,
                })),
                "hang" | "crash" | "progress" | "sample" | "elicit" | "roots" | "change_tools" => return None,
                _ if fx.tools().as_array().is_some_and(|t| t.iter().any(|d| d["name"] == name)) => {
                    ok(id, json!({"content": [{"type": "text", "text": format!("{name} ran")}], "structuredContent": {"tool": name, "arguments": args}}))
                }
                _ => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": format!("unknown tool: {name}")}}),
            }
        }
        _ => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("method not found: {method}"), "data": {"x-echo-method": method, "x-echo-upstream": fx.name}}}),
    })
}

// ---------------------------------------------------------------------------------------------
// stdio

async fn run_stdio(fx: Arc<Fixture>) -> anyhow::Result<()> {
    let (out_tx, mut out_rx) = mpsc::channel::<Value>(1024);
    tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        while let Some(m) = out_rx.recv().await {
            if out.write_all(format!("{m}\n").as_bytes()).await.is_err() || out.flush().await.is_err() {
                break;
            }
        }
    });
    let pending: Arc<Mutex<std::collections::HashMap<String, oneshot::Sender<Value>>>> = Arc::default();
    let mut next = 0u64;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let Ok(msg) = serde_json::from_str::<Value>(&line) else { continue };
        if msg.get("method").is_none() {
            if let Some(id) = msg.get("id").map(|i| i.to_string())
                && let Some(tx) = pending.lock().await.remove(&id) {
                    let _ = tx.send(msg);
                }
            continue;
        }
        if msg.get("id").is_none() {
            fx.notified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(msg["method"].clone());
            if msg["method"] == "notifications/cancelled" {
                fx.cancelled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(msg["params"]["requestId"].clone());
            }
            continue;
        }
        if let Some(resp) = simple(&fx, &msg) {
            let _ = out_tx.send(resp).await;
            continue;
        }
        let id = msg["id"].clone();
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let name = params.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let args = params.get("arguments").cloned().unwrap_or(Value::Null);
        next += 1;
        let ask_id = format!("fx-{next}");
        let out = out_tx.clone();
        let pending = Arc::clone(&pending);
        let fx = Arc::clone(&fx);
        tokio::spawn(async move {
            let ask = |method: &str, p: Value| {
                let out = out.clone();
                let pending = Arc::clone(&pending);
                let ask_id = ask_id.clone();
                let method = method.to_owned();
                async move {
                    let (tx, rx) = oneshot::channel();
                    pending.lock().await.insert(Value::String(ask_id.clone()).to_string(), tx);
                    let _ = out.send(json!({"jsonrpc": "2.0", "id": ask_id, "method": method, "params": p})).await;
                    rx.await.unwrap_or(Value::Null)
                }
            };
            let resp = match name.as_str() {
                "hang" => {
                    fx.hung.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(id.clone());
                    return;
                }
                "crash" => std::process::exit(3),
                "progress" => {
                    let steps = args.get("steps").and_then(Value::as_u64).unwrap_or(3);
                    let token = params.get("_meta").and_then(|m| m.get("progressToken")).cloned();
                    for i in 1..=steps {
                        if let Some(t) = &token {
                            let mut p = json!({"progressToken": t, "progress": i, "total": steps});
                            if let Some(m) = args.get("message") {
                                p["message"] = m.clone();
                            }
                            let _ = out.send(json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": p})).await;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    ok(&id, text(&format!("{} steps", steps)))
                }
                "sample" => {
                    let prompt = args.get("text").and_then(Value::as_str).unwrap_or("hi");
                    let a = ask("sampling/createMessage", json!({"messages": [{"role": "user", "content": {"type": "text", "text": prompt}}], "maxTokens": 10})).await;
                    ok(&id, json!({"content": [{"type": "text", "text": "sampled"}], "structuredContent": {"answer": a}}))
                }
                "elicit" => {
                    let a = ask("elicitation/create", json!({"message": "name?", "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}})).await;
                    ok(&id, json!({"content": [{"type": "text", "text": "elicited"}], "structuredContent": {"answer": a}}))
                }
                "roots" => {
                    // `method`: ask that instead, as a misbehaving server might.
                    let a = ask(args.get("method").and_then(Value::as_str).unwrap_or("roots/list"), json!({})).await;
                    ok(&id, json!({"content": [{"type": "text", "text": "roots"}], "structuredContent": {"answer": a}}))
                }
                "change_tools" => {
                    fx.extra_tool.store(true, Ordering::Relaxed);
                    let _ = out.send(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})).await;
                    ok(&id, text("changed"))
                }
                _ => return,
            };
            let _ = out.send(resp).await;
            // `after`: messages sent once the call is answered, outside any call.
            if let Some(Value::Array(after)) = args.get("after") {
                for m in after {
                    let _ = out.send(m.clone()).await;
                }
            }
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Streamable HTTP (JSON answers; SSE for `progress`)

async fn http_post(State(fx): State<Arc<Fixture>>, headers: axum::http::HeaderMap, body: Bytes) -> axum::response::Response {
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "bad json").into_response();
    };
    for v in headers.get_all("authorization") {
        fx.seen_auth.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(v.to_str().unwrap_or("<binary>").to_owned());
    }
    if msg["method"] == "tools/call" && msg["params"]["name"] == "seen_auth" {
        let seen = fx.seen_auth.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let r = ok(&msg["id"], json!({"content": [], "structuredContent": {"authorization": seen}}));
        return ([(axum::http::header::CONTENT_TYPE, "application/json")], r.to_string()).into_response();
    }
    if msg["method"] == "tools/call"
        && msg["params"]["name"] == "verbatim"
        && let Some(result) = msg["params"]["arguments"]["result"].as_str()
    {
        let r = format!(r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#, msg["id"]);
        return ([(axum::http::header::CONTENT_TYPE, "application/json")], r).into_response();
    }
    if msg.get("id").is_none() || msg.get("method").is_none() {
        return axum::http::StatusCode::ACCEPTED.into_response();
    }
    let is_init = msg["method"] == "initialize";
    let resp = match simple(&fx, &msg) {
        Some(r) => r,
        None => {
            let name = msg["params"]["name"].as_str().unwrap_or_default();
            match name {
                "hang" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return axum::http::StatusCode::GATEWAY_TIMEOUT.into_response();
                }
                "crash" => std::process::exit(3),
                "progress" => {
                    let token = msg["params"]["_meta"]["progressToken"].clone();
                    let mut body = String::new();
                    for i in 1..=3 {
                        if !token.is_null() {
                            body.push_str(&format!("event: message\ndata: {}\n\n", json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": i, "total": 3}})));
                        }
                    }
                    body.push_str(&format!("event: message\ndata: {}\n\n", ok(&msg["id"], text("3 steps"))));
                    return ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], body).into_response();
                }
                _ => json!({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "not over http"}}),
            }
        }
    };
    let mut r = ([(axum::http::header::CONTENT_TYPE, "application/json")], resp.to_string()).into_response();
    if is_init {
        r.headers_mut().insert("mcp-session-id", axum::http::HeaderValue::from_static("fixture-session"));
    }
    r
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let fx = Arc::new(Fixture { name: flag("--name").unwrap_or_else(|| "fixture".into()), defs: flag("--defs").map(Into::into), extra_tools: flag("--extra-tools").and_then(|n| n.parse().ok()).unwrap_or(0), extra_tool: AtomicBool::new(false), cancelled: std::sync::Mutex::default(), notified: std::sync::Mutex::default(), hung: std::sync::Mutex::default(), seen_auth: std::sync::Mutex::default() });
    match args.get(1).map(String::as_str) {
        // The bundled demo server (mail, files, bank, web, chat), for label tests.
        Some("demo") => Ok(clawgate::demo::run().await?),
        Some("http") => {
            let port: u16 = flag("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            println!("{}", listener.local_addr()?);
            let app = axum::Router::new()
                .route("/mcp", axum::routing::post(http_post).get(|| async { axum::http::StatusCode::METHOD_NOT_ALLOWED }).delete(|| async { axum::http::StatusCode::OK }))
                .with_state(fx);
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await?;
            Ok(())
        }
        _ => run_stdio(fx).await,
    }
}
