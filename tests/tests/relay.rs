//! End-to-end relay tests: a real clawgate (in process, over real HTTP) in front of real
//! fixture upstream processes.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::sync::Arc;
use std::time::Duration;

use clawgate_tests::{Client, TestGateway, fixture_config};
use serde_json::{Value, json};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture-upstream");

async fn gateway(n: usize, timeout: &str) -> TestGateway {
    TestGateway::start(&fixture_config(FIXTURE, n, timeout, "")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_is_lossless_both_ways() {
    // The keys after the upstream's own belong to it.
    let g = TestGateway::start(&fixture_config(FIXTURE, 1, "10s", "relay_methods = [\"vendor/custom\"]\n")).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();

    // Tool definitions keep fields the gateway does not know.
    let list = c.request("tools/list", None).await.unwrap().response;
    let vendor = list["result"]["tools"].as_array().unwrap().iter().find(|t| t["name"] == "up0__vendor").unwrap().clone();
    assert_eq!(vendor["x-vendor-tool"], json!({"keep": true}));
    assert_eq!(vendor["execution"], json!({"taskSupport": "optional"}));

    // A result full of vendor fields comes back intact (only the resource URI is namespaced).
    let r = c.call("up0__vendor", json!({})).await.unwrap().response;
    let expected = json!({
        "content": [{"type": "text", "text": "v"}, {"type": "resource_link", "uri": "up0+fx://thing", "name": "thing", "x-link": 1}],
        "structuredContent": {"nested": {"a": [1, 2.5, "x", null, true]}, "big": 12345678901234567i64},
        "_meta": {"vendor.example/trace": "abc", "progressToken": "not-rewritten"},
        "x-vendor-result": {"k": "v"},
        "isError": false,
    });
    assert_eq!(r["result"], expected);

    // Request-side unknown fields and _meta reach the upstream; only the name is rewritten.
    let params = json!({"name": "up0__echo", "arguments": {"text": "hi", "deep": {"x": [1]}}, "x-vendor-param": 7, "_meta": {"vendor.example/k": "v"}});
    let r = c.request("tools/call", Some(params)).await.unwrap().response;
    let seen = &r["result"]["structuredContent"]["params"];
    assert_eq!(seen["name"], "echo");
    assert_eq!(seen["x-vendor-param"], 7);
    assert_eq!(seen["arguments"], json!({"text": "hi", "deep": {"x": [1]}}));
    assert_eq!(seen["_meta"]["vendor.example/k"], "v");

    // A method the upstream lists in `relay_methods` passes through to it, and its error comes
    // back as is.
    let r = c.request("vendor/custom", Some(json!({"k": 1}))).await.unwrap().response;
    assert_eq!(r["error"]["code"], -32601);
    assert_eq!(r["error"]["data"]["x-echo-method"], "vendor/custom");
    // A client may not park a large self-description in a session.
    let init = |caps: Value| json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": caps, "clientInfo": {"name": "t", "version": "1"}}});
    let post = |body: Value| c.http.post(&c.url).header("content-type", "application/json").header("accept", "application/json, text/event-stream").body(body.to_string()).send();
    let r: Value = serde_json::from_str(&post(init(json!({"x-big": "a".repeat(70_000)}))).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("65536 bytes"), "{r}");
    let r: Value = serde_json::from_str(&post(init(json!({"x-small": "a".repeat(1_000)}))).await.unwrap().text().await.unwrap()).unwrap();
    assert!(r["result"]["protocolVersion"].is_string(), "{r}");
    // Any other method the gateway does not know is refused by the gateway: it never reaches
    // the upstream (the fixture would echo the method back).
    let r = c.request("vendor/other", Some(json!({"k": 1}))).await.unwrap().response;
    assert_eq!(r["error"]["code"], -32601, "{r}");
    assert!(r["error"].get("data").is_none_or(|d| d.get("x-echo-method").is_none()), "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("vendor/other"), "{r}");
    g.stop().await;
}

/// With several upstreams, a method goes to the one that lists it in `relay_methods`; a method
/// no upstream lists never leaves the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_methods_are_relayed_and_to_the_upstream_that_lists_them() {
    let g = TestGateway::start(&fixture_config(FIXTURE, 2, "10s", "relay_methods = [\"vendor/custom\", \"notifications/vendor/listed\"]\n")).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    let r = c.request("vendor/custom", Some(json!({}))).await.unwrap().response;
    assert_eq!(r["error"]["data"]["x-echo-upstream"], "up1", "{r}");
    // Notifications likewise: a listed one reaches its upstream, an unlisted one none, and
    // the ones the gateway knows go where they belong. (The front forwards a notification
    // before it answers 202, so the next request on the same pipe comes after it.)
    for m in ["notifications/vendor/listed", "notifications/vendor/other", "notifications/roots/list_changed"] {
        assert_eq!(c.notify(m, Some(json!({}))).await.unwrap(), 202);
    }
    let notified = |up: &'static str| {
        let c = &c;
        async move {
            let r = c.call(&format!("{up}__cancellations"), json!({})).await.unwrap().response;
            r["result"]["structuredContent"]["notified"].as_array().unwrap().iter().filter_map(Value::as_str).filter(|m| *m != "notifications/initialized").map(str::to_owned).collect::<Vec<_>>()
        }
    };
    assert_eq!(notified("up1").await, ["notifications/vendor/listed", "notifications/roots/list_changed"]);
    assert_eq!(notified("up0").await, ["notifications/roots/list_changed"]);
    for m in ["vendor/other", "tasks/list", "tasks/get"] {
        let r = c.request(m, Some(json!({}))).await.unwrap().response;
        assert_eq!(r["error"]["code"], -32601, "{r}");
        assert!(r["error"].get("data").is_none(), "{m} reached an upstream: {r}");
    }
    // The refusal names the method, with anything invisible in it spelled out.
    let r = c.request("vendor/\u{202E}x", Some(json!({}))).await.unwrap().response;
    assert_eq!(r["error"]["message"], "method not found: `vendor/\\u{202e}x`", "{r}");
    g.stop().await;
}

/// What the model reads of a result is cleaned wherever it sits: in text, in object keys, and
/// nested deeper than any fixed walk limit (the fixture echoes the arguments back; the client
/// may nest them 100 levels here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_cleaned_in_every_key_and_at_any_depth() {
    let g = TestGateway::start(&fixture_config(FIXTURE, 1, "10s", "[limits]\nmax_json_depth = 100\n")).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    // About 85 levels, in the request and in the result.
    let mut deep = json!({"leaf": "run\u{1B}[2J\u{200B}me"});
    for _ in 0..40 {
        deep = json!({"k": [deep]});
    }
    let args = json!({"text": "hi\u{202E}", "to\u{200B}ken": 1, "token": 2, "tag\u{E0041}": "v", "deep": deep});
    let r = c.call("up0__echo", args).await.unwrap().response;
    assert_eq!(r["result"]["content"][0]["text"], "hi");
    let seen = &r["result"]["structuredContent"]["params"]["arguments"];
    let keys: Vec<&str> = seen.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["text", "token [sanitised]", "token", "tag[hidden: A]", "deep"]);
    assert_eq!((seen["token [sanitised]"].as_i64(), seen["token"].as_i64()), (Some(1), Some(2)));
    let mut at = &seen["deep"];
    for _ in 0..40 {
        at = &at["k"][0];
    }
    assert_eq!(at["leaf"], "runme", "the deepest string is cleaned too");
    g.stop().await;
}

/// An upstream's error reaches the model as surely as its result: it is cleaned the same way,
/// whether it answers a call or a method relayed as is, and its data is labelled like a
/// result's (a later call that copies it is traced to it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_cleaned_and_labelled_like_results() {
    let g = TestGateway::start(&fixture_config(FIXTURE, 1, "10s", "relay_methods = [\"vendor/cust\\u202Eom\"]\n")).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    let secret = "the quarterly numbers are under embargo until friday noon";
    let r = c.call("up0__echo", json!({"fail": true, "text": "no\u{1B}[2J\u{E0041}", "leak": secret, "k\u{200B}": 1})).await.unwrap().response;
    assert_eq!(r["error"]["code"], -32000, "{r}");
    assert_eq!(r["error"]["message"], "no[hidden: A]");
    assert_eq!(r["error"]["data"]["leak"], secret);
    assert_eq!(r["error"]["data"]["k"], 1, "keys are cleaned too: {r}");
    let scope = format!("s:{}", c.session.clone().unwrap());
    let report = g.gw.labels.report(&scope).await.unwrap().unwrap();
    assert_eq!(report["results"], 1, "the error was recorded: {report}");
    assert_eq!(report["session"]["trusted"], false, "an upstream's error is untrusted like its results: {report}");
    assert!(report["recent"][0]["origin"].as_str().unwrap().starts_with("up0/echo#1"), "{report}");
    // A relayed method's error is cleaned as well.
    let r = c.request("vendor/cust\u{202E}om", Some(json!({}))).await.unwrap().response;
    assert_eq!(r["error"]["data"]["x-echo-method"], "vendor/custom", "{r}");
    g.stop().await;
}

/// The gateway declares no tasks: a task-augmented call reaches the upstream as a plain call
/// (so its result is post-processed like any other), and `tasks/*` methods, which would reach
/// other principals' tasks on the shared upstream connection, are never relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_never_reach_an_upstream() {
    let g = gateway(1, "10s").await;
    let c = Client::legacy(&g.url()).await.unwrap();
    let r = c.request("tools/call", Some(json!({"name": "up0__echo", "arguments": {"text": "hi"}, "task": {"ttl": 60000}}))).await.unwrap().response;
    let seen = &r["result"]["structuredContent"]["params"];
    assert_eq!(seen["arguments"], json!({"text": "hi"}), "{r}");
    assert!(seen.get("task").is_none(), "the task request was stripped: {r}");
    for m in ["tasks/list", "tasks/get", "tasks/result", "tasks/cancel"] {
        let r = c.request(m, Some(json!({"taskId": "t1"}))).await.unwrap().response;
        assert_eq!(r["error"]["code"], -32601, "{m}: {r}");
        assert!(r["error"].get("data").is_none_or(|d| d.get("x-echo-method").is_none()), "{m} reached the upstream: {r}");
    }
    g.stop().await;
}

/// A 2026-07-28 upstream's `Mcp-Param-*` headers are built by the gateway from the arguments it
/// sends and the upstream's own schema: an operator-fixed value is mirrored as fixed (whatever
/// header the client sent for it), a header no schema declares never travels, and a legacy
/// client's call carries them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn param_headers_sent_upstream_are_built_from_the_arguments_sent() {
    use axum::http::HeaderMap;
    type Seen = Arc<std::sync::Mutex<Vec<Vec<(String, String)>>>>;
    let seen: Seen = Arc::default();
    async fn post(axum::extract::State(seen): axum::extract::State<Seen>, headers: HeaderMap, body: String) -> axum::response::Response {
        use axum::response::IntoResponse;
        let msg: Value = serde_json::from_str(&body).unwrap_or_default();
        let Some(id) = msg.get("id").cloned() else { return axum::http::StatusCode::ACCEPTED.into_response() };
        let result = match msg["method"].as_str().unwrap_or_default() {
            "server/discover" => json!({"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}, "serverInfo": {"name": "modern", "version": "1"}}),
            "tools/list" => json!({"tools": [{"name": "transfer", "description": "Moves money.", "inputSchema": {"type": "object", "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "account": {"type": "string", "x-mcp-header": "Account"},
                "amount": {"type": "integer"}}}}]}),
            "tools/call" => {
                let params: Vec<(String, String)> = headers.iter().filter(|(k, _)| k.as_str().starts_with("mcp-param-")).map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned())).collect();
                seen.lock().unwrap().push(params);
                json!({"content": [{"type": "text", "text": "ok"}], "structuredContent": {"arguments": msg["params"]["arguments"]}})
            }
            m => json!({"error": {"code": -32601, "message": format!("method not found: {m}")}}),
        };
        let mut answer = json!({"jsonrpc": "2.0", "id": id});
        match result.get("error") {
            Some(e) => answer["error"] = e.clone(),
            None => answer["result"] = result,
        }
        ([(axum::http::header::CONTENT_TYPE, "application/json")], answer.to_string()).into_response()
    }
    let app = axum::Router::new().route("/mcp", axum::routing::post(post)).with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cfg = format!("[[upstream]]\nname = \"bank\"\ntransport = \"http\"\nurl = \"http://{up}/mcp\"\n[upstream.tools.transfer]\nfixed_arguments = {{ account = \"corp-001\" }}\n");
    let g = TestGateway::start(&cfg).await.unwrap();

    // A legacy client: the upstream still gets the headers its schema asks for.
    let legacy = Client::legacy(&g.url()).await.unwrap();
    let r = legacy.call("bank__transfer", json!({"region": "eu", "amount": 5})).await.unwrap().response;
    assert_eq!(r["result"]["structuredContent"]["arguments"], json!({"region": "eu", "amount": 5, "account": "corp-001"}), "{r}");
    let mut got = seen.lock().unwrap().pop().unwrap();
    got.sort();
    assert_eq!(got, [("mcp-param-account".to_owned(), "corp-001".to_owned()), ("mcp-param-region".to_owned(), "eu".to_owned())]);

    // A 2026 client that sends a header for the fixed argument and one no schema declares.
    let modern = Client::stateless(&g.url());
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "bank__transfer", "arguments": {"region": "us", "amount": 7},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}});
    let headers = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "bank__transfer"), ("mcp-param-region", "us"), ("mcp-param-account", "victim-999"), ("mcp-param-evil", "x")];
    let (status, r) = modern.post_raw(body.to_string().into_bytes(), &headers).await.unwrap();
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["result"]["structuredContent"]["arguments"]["account"], "corp-001", "{r}");
    let mut got = seen.lock().unwrap().pop().unwrap();
    got.sort();
    assert_eq!(got, [("mcp-param-account".to_owned(), "corp-001".to_owned()), ("mcp-param-region".to_owned(), "us".to_owned())], "only the gateway's own headers");
    g.stop().await;
}

/// Over HTTP, what a shared upstream sends on its GET stream belongs to no call: it never
/// lands in the one call that happens to be in flight (another session's data could).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_upstreams_stray_messages_never_reach_the_call_in_flight() {
    use axum::response::IntoResponse;
    type Push = tokio::sync::broadcast::Sender<String>;
    let (push, _) = tokio::sync::broadcast::channel::<String>(16);
    async fn post(axum::extract::State(push): axum::extract::State<Push>, body: String) -> axum::response::Response {
        let msg: Value = serde_json::from_str(&body).unwrap_or_default();
        let Some(id) = msg.get("id").cloned() else { return axum::http::StatusCode::ACCEPTED.into_response() };
        let result = match msg["method"].as_str().unwrap_or_default() {
            "initialize" => json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "logging": {}}, "serverInfo": {"name": "chatty", "version": "1"}}),
            "tools/list" => json!({"tools": [{"name": "slow", "description": "Takes a while.", "inputSchema": {"type": "object"}}]}),
            "tools/call" => {
                // While the call runs, the server talks on its GET stream about something else.
                let stray = [
                    json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "another session's secret"}}),
                    json!({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"}),
                ];
                for m in stray {
                    let _ = push.send(format!("event: message\ndata: {m}\n\n"));
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
                json!({"content": [{"type": "text", "text": "done"}]})
            }
            _ => json!({}),
        };
        let answer = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
        ([(axum::http::header::CONTENT_TYPE, "application/json"), (axum::http::HeaderName::from_static("mcp-session-id"), "up-session-1")], answer).into_response()
    }
    async fn get(axum::extract::State(push): axum::extract::State<Push>) -> axum::response::Response {
        let rx = push.subscribe();
        let events = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.ok().map(|e| (Ok::<_, std::io::Error>(e), rx)) });
        ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], axum::body::Body::from_stream(events)).into_response()
    }
    let app = axum::Router::new().route("/mcp", axum::routing::post(post).get(get)).with_state(push.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let g = TestGateway::start(&format!("[[upstream]]\nname = \"chatty\"\ntransport = \"http\"\nurl = \"http://{up}/mcp\"\n")).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    // The gateway's GET stream is open once the upstream has a subscriber.
    for _ in 0..100 {
        if push.receiver_count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(push.receiver_count() > 0, "the gateway opened the upstream's GET stream");
    let r = c.call("chatty__slow", json!({})).await.unwrap();
    assert_eq!(r.response["result"]["content"][0]["text"], "done", "{:?}", r.response);
    assert!(r.related.is_empty(), "nothing from the GET stream reached the call: {:?}", r.related);
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_across_upstreams_and_sessions_are_never_cross_wired() {
    let g = gateway(3, "20s").await;
    let url = g.url();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Arc::new(Client::legacy(&url).await.unwrap()));
    }
    clients.push(Arc::new(Client::stateless(&url)));
    let mut tasks = Vec::new();
    for i in 0..100usize {
        let c = Arc::clone(&clients[i % clients.len()]);
        tasks.push(tokio::spawn(async move {
            let up = format!("up{}", i % 3);
            let token = format!("call-{i}");
            if i % 4 == 0 {
                // Progress calls: each must see only its own token's notifications.
                let ex = c.request("tools/call", Some(json!({"name": format!("{up}__progress"), "arguments": {"steps": 3}, "_meta": {"progressToken": token}}))).await.unwrap();
                assert_eq!(ex.response["result"]["content"][0]["text"], "3 steps", "{i}: {:?}", ex.response);
                assert_eq!(ex.related.len(), 3, "{i}: {:?}", ex.related);
                for n in &ex.related {
                    assert_eq!(n["params"]["progressToken"], json!(token));
                }
            } else {
                let ex = c.call(&format!("{up}__echo"), json!({"text": token})).await.unwrap();
                assert_eq!(ex.response["result"]["content"][0]["text"], json!(token), "{i}");
                assert_eq!(ex.response["result"]["structuredContent"]["upstream"], json!(up), "{i}");
                assert!(ex.related.is_empty());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_requests_reach_the_session_that_caused_them() {
    let g = gateway(1, "10s").await;
    let c = Client::legacy(&g.url()).await.unwrap();
    let answer: clawgate_tests::Answerer = Arc::new(|req: &Value| match req["method"].as_str() {
        Some("sampling/createMessage") => json!({"role": "assistant", "content": {"type": "text", "text": "from-client"}, "model": "m"}),
        Some("elicitation/create") => json!({"action": "accept", "content": {"name": "Ada"}}),
        Some("roots/list") => json!({"roots": [{"uri": "file:///tmp"}]}),
        _ => json!({}),
    });
    for (tool, path, want) in [("sample", "/result/content/text", "from-client"), ("elicit", "/result/content/name", "Ada"), ("roots", "/result/roots/0/uri", "file:///tmp")] {
        let ex = c.request_answering("tools/call", Some(json!({"name": format!("up0__{tool}"), "arguments": {}})), Some(Arc::clone(&answer))).await.unwrap();
        assert!(ex.sse, "{tool}: the call streamed its server request");
        let got = ex.response["result"]["structuredContent"]["answer"].pointer(path).cloned();
        assert_eq!(got, Some(json!(want)), "{tool}: {:?}", ex.response);
    }
    // What the upstream asks the client is cleaned like a result (a sampling prompt goes to
    // the client's model), and so are its progress messages.
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&asked);
    let record: clawgate_tests::Answerer = Arc::new(move |req: &Value| {
        seen.lock().unwrap().push(req.clone());
        json!({"role": "assistant", "content": {"type": "text", "text": "ok"}, "model": "m"})
    });
    let ex = c.request_answering("tools/call", Some(json!({"name": "up0__sample", "arguments": {"text": "summarise\u{200B} this\u{E0041}\u{1B}[8m"}})), Some(record)).await.unwrap();
    assert_eq!(ex.response["result"]["content"][0]["text"], "sampled", "{:?}", ex.response);
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["params"]["messages"][0]["content"]["text"], "summarise this[hidden: A]", "{asked:?}");
    let ex = c.request("tools/call", Some(json!({"name": "up0__progress", "arguments": {"steps": 2, "message": "step\u{202E}1"}, "_meta": {"progressToken": "p"}}))).await.unwrap();
    assert_eq!(ex.related.len(), 2, "{:?}", ex.related);
    assert!(ex.related.iter().all(|n| n["params"]["message"] == "step1"), "{:?}", ex.related);
    // A request MCP does not define for clients never reaches the client; the upstream is told.
    let ex = c.request_answering("tools/call", Some(json!({"name": "up0__roots", "arguments": {"method": "vendor/read_clipboard"}})), Some(Arc::clone(&answer))).await.unwrap();
    assert!(ex.related.iter().all(|m| m["method"] != "vendor/read_clipboard"), "{:?}", ex.related);
    assert_eq!(ex.response["result"]["structuredContent"]["answer"]["error"]["code"], -32601, "{:?}", ex.response);
    // A client that did not declare elicitation is never asked; the upstream gets an error.
    let bare = Client::legacy_with(&g.url(), json!({})).await.unwrap();
    let ex = bare.call("up0__elicit", json!({})).await.unwrap();
    assert!(ex.related.is_empty());
    assert!(ex.response["result"]["structuredContent"]["answer"]["error"].is_object(), "{:?}", ex.response);
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changed_relists_then_notifies_clients() {
    let g = gateway(1, "10s").await;
    let c = Client::legacy(&g.url()).await.unwrap();
    let before = c.request("tools/list", None).await.unwrap().response;
    assert!(!before.to_string().contains("up0__added"));
    // Open the standalone GET stream.
    let resp = c.http.get(&c.url).header("accept", "text/event-stream").header("mcp-session-id", c.session.clone().unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    c.call("up0__change_tools", json!({})).await.unwrap();
    let mut dec = clawgate_adapters::sse::Decoder::new(1 << 20);
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        use futures_util::StreamExt;
        while let Some(chunk) = stream.next().await {
            for ev in dec.feed(&chunk.unwrap()).unwrap() {
                let m: Value = serde_json::from_str(&ev.data).unwrap();
                if m["method"] == "notifications/tools/list_changed" {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(got);
    let after = c.request("tools/list", None).await.unwrap().response;
    assert!(after.to_string().contains("up0__added"), "the gateway re-listed before notifying");
    g.stop().await;
}

/// A session's own (`per_session`) child, speaking outside any call, is treated like a shared
/// upstream: its log message reaches the session cleaned; a resource update the session did
/// not subscribe to, a tool-list change (the list is the shared instance's) and a vendor
/// notification do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_session_childs_messages_outside_calls_are_filtered_and_cleaned() {
    let cfg = format!("[listen]\nhttp = \"127.0.0.1:0\"\n[[upstream]]\nname = \"own\"\ntransport = \"stdio\"\nper_session = true\ncommand = \"{FIXTURE}\"\nargs = [\"stdio\"]\n");
    let g = TestGateway::start(&cfg).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    let resp = c.http.get(&c.url).header("accept", "text/event-stream").header("mcp-session-id", c.session.clone().unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let after = json!([
        {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "fx://secret"}},
        {"jsonrpc": "2.0", "method": "notifications/vendor/x", "params": {}},
        {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"},
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "done\u{200B}\u{1B}[2J"}},
    ]);
    let r = c.call("own__progress", json!({"steps": 0, "after": after})).await.unwrap().response;
    assert_eq!(r["result"]["content"][0]["text"], "0 steps", "{r}");
    let mut dec = clawgate_adapters::sse::Decoder::new(1 << 20);
    let mut got = Vec::new();
    // Everything the child sent comes before the log message, so once it is here the rest
    // would be too; a little longer for anything out of order.
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        use futures_util::StreamExt;
        while let Some(chunk) = stream.next().await {
            for ev in dec.feed(&chunk.unwrap()).unwrap() {
                got.push(serde_json::from_str::<Value>(&ev.data).unwrap());
            }
            if got.iter().any(|m| m["method"] == "notifications/message") {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return;
            }
        }
    })
    .await;
    let methods: Vec<&str> = got.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(methods, ["notifications/message"], "{got:?}");
    assert_eq!(got[0]["params"]["data"], "done", "{got:?}");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_errors_and_the_gateway_stays_up() {
    let cfg = fixture_config(FIXTURE, 2, "20s", "[[upstream]]\nname = \"slow\"\ntransport = \"stdio\"\ncommand = \"")
        + FIXTURE
        + "\"\nargs = [\"stdio\"]\ntimeout = \"1s\"\n[limits]\nmax_body_bytes = 65536\nmax_json_depth = 32\n";
    let g = TestGateway::start(&cfg).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    let other = Client::legacy(&g.url()).await.unwrap();
    let healthy = || async { other.call("up1__echo", json!({"text": "still here"})).await.unwrap().response["result"]["content"][0]["text"] == "still here" };

    let (s, v) = c.post_raw(b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\"".to_vec(), &[]).await.unwrap();
    assert_eq!((s, v["error"]["code"].clone()), (400, json!(-32700)));
    assert!(healthy().await);

    let big = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"up0__echo\",\"arguments\":{{\"text\":\"{}\"}}}}}}", "a".repeat(70_000));
    let (s, v) = c.post_raw(big.into_bytes(), &[]).await.unwrap();
    assert_eq!(s, 413);
    assert!(v["error"]["message"].as_str().unwrap().contains("65536"));

    // A chunked body: over the limit is still 413; broken framing is a 400 that says so.
    let raw = |body: String| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(g.addr).await.unwrap();
        let head = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        tcp.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = raw(format!("{:x}\r\n{}\r\n0\r\n\r\n", 70_000, "a".repeat(70_000))).await;
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("65536"), "{answer}");
    let answer = raw("5\r\n{\"jso\r\nzz\r\n".into()).await;
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("request body could not be read") && answer.contains("-32600"), "{answer}");
    assert!(healthy().await);

    let deep = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{}{}}}", "[".repeat(100), "]".repeat(100));
    let (s, v) = c.post_raw(deep.into_bytes(), &[]).await.unwrap();
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("deeper than 32"), "{v}");

    let r = c.call("up0__nope", json!({})).await.unwrap().response;
    assert_eq!(r["error"]["code"], -32602);
    assert_eq!(r["error"]["message"], "unknown tool: `up0__nope`");

    let raw = reqwest::Client::new();
    let r = raw.post(g.url()).header("content-type", "application/json").header("accept", "application/json").header("mcp-session-id", "deadbeef").body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = raw.post(g.url()).header("content-type", "application/json").header("origin", "http://evil.example").body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = raw.post(g.url()).header("content-type", "application/json").header("host", "evil.example").body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(healthy().await);

    // An upstream that hangs past its timeout.
    let t0 = std::time::Instant::now();
    let r = c.call("slow__hang", json!({})).await.unwrap().response;
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("did not answer within 1s"), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(healthy().await);

    // An upstream that crashes mid-call: an error, then it is restarted and serves again.
    let r = c.call("up0__crash", json!({})).await.unwrap().response;
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("up0"), "{r}");
    assert!(healthy().await);
    let mut back = false;
    for _ in 0..50 {
        if c.call("up0__echo", json!({"text": "back"})).await.unwrap().response["result"]["content"][0]["text"] == "back" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "crashed upstream was restarted");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_era_is_served_on_the_same_endpoint() {
    let g = gateway(1, "10s").await;
    let c = Client::stateless(&g.url());
    let d = c.request("server/discover", None).await.unwrap();
    assert_eq!(d.response["result"]["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(d.response["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "clawgate");
    let r = c.call("up0__echo", json!({"text": "modern"})).await.unwrap();
    assert_eq!(r.response["result"]["content"][0]["text"], "modern");
    assert_eq!(r.response["result"]["resultType"], "complete");
    // The gateway's own envelope keys never reach a legacy upstream.
    assert!(r.response["result"]["structuredContent"]["params"].get("_meta").is_none(), "{:?}", r.response);
    let l = c.request("tools/list", None).await.unwrap().response;
    assert_eq!(l["result"]["cacheScope"], "private");

    let raw = |headers: Vec<(&'static str, String)>, body: Value| {
        let url = g.url();
        async move {
            let mut rb = reqwest::Client::new().post(url).header("content-type", "application/json").header("accept", "application/json, text/event-stream");
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            let r = rb.body(body.to_string()).send().await.unwrap();
            (r.status().as_u16(), serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap_or(Value::Null))
        }
    };
    let env = |v: &str| json!({"io.modelcontextprotocol/protocolVersion": v, "io.modelcontextprotocol/clientCapabilities": {}});
    // Unsupported version: -32022 with the supported list.
    let (s, v) = raw(vec![("mcp-protocol-version", "2099-01-01".into()), ("mcp-method", "tools/list".into())], json!({"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta": env("2099-01-01")}})).await;
    assert_eq!((s, v["error"]["code"].clone(), v["id"].clone()), (400, json!(-32022), json!(5)));
    assert_eq!(v["error"]["data"], json!({"supported": ["2026-07-28"], "requested": "2099-01-01"}));
    // Mcp-Method disagreeing with the body: -32020.
    let (s, v) = raw(vec![("mcp-protocol-version", "2026-07-28".into()), ("mcp-method", "prompts/list".into())], json!({"jsonrpc":"2.0","id":6,"method":"tools/list","params":{"_meta": env("2026-07-28")}})).await;
    assert_eq!((s, v["error"]["code"].clone()), (400, json!(-32020)));
    // Mcp-Name disagreeing with the tool name: -32020.
    let (s, v) = raw(vec![("mcp-protocol-version", "2026-07-28".into()), ("mcp-method", "tools/call".into()), ("mcp-name", "up0__vendor".into())], json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"up0__echo","_meta": env("2026-07-28")}})).await;
    assert_eq!((s, v["error"]["code"].clone()), (400, json!(-32020)));
    // Missing envelope: -32602.
    let (s, v) = raw(vec![("mcp-protocol-version", "2026-07-28".into()), ("mcp-method", "tools/list".into())], json!({"jsonrpc":"2.0","id":8,"method":"tools/list"})).await;
    assert_eq!((s, v["error"]["code"].clone()), (400, json!(-32602)));
    // initialize does not exist on this wire.
    let (s, v) = raw(vec![("mcp-protocol-version", "2026-07-28".into()), ("mcp-method", "initialize".into())], json!({"jsonrpc":"2.0","id":9,"method":"initialize","params":{"_meta": env("2026-07-28")}})).await;
    assert_eq!((s, v["error"]["code"].clone()), (404, json!(-32601)));
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lifecycle() {
    let g = gateway(1, "10s").await;
    let c = Client::legacy(&g.url()).await.unwrap();
    assert_eq!(c.session.as_ref().unwrap().len(), 32);
    c.call("up0__echo", json!({"text": "hi"})).await.unwrap();
    let scope = format!("s:{}", c.session.clone().unwrap());
    assert!(g.gw.labels.scopes().contains(&scope), "the call opened the session's label scope");
    let r = c.http.delete(&c.url).header("mcp-session-id", c.session.clone().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!g.gw.labels.scopes().contains(&scope), "a deleted session's label scope is forgotten at once");
    let (s, _) = c.post_raw(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec(), &[]).await.unwrap();
    assert_eq!(s, 404, "a deleted session is gone");
    let raw = reqwest::Client::new();
    let r = raw.post(g.url()).header("content-type", "application/json").header("accept", "application/json").body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).send().await.unwrap();
    assert_eq!(r.status(), 400, "no session header");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_children_are_shared_unless_per_session() {
    let cfg = fixture_config(FIXTURE, 1, "10s", "[[upstream]]\nname = \"own\"\ntransport = \"stdio\"\nper_session = true\ncommand = \"")
        + FIXTURE
        + "\"\nargs = [\"stdio\"]\n";
    let g = TestGateway::start(&cfg).await.unwrap();
    let a = Client::legacy(&g.url()).await.unwrap();
    let b = Client::legacy(&g.url()).await.unwrap();
    async fn pid(c: &Client, tool: &str) -> u64 {
        c.call(tool, json!({})).await.unwrap().response["result"]["structuredContent"]["pid"].as_u64().unwrap()
    }
    assert_eq!(pid(&a, "up0__echo").await, pid(&b, "up0__echo").await, "one shared child");
    let (pa, pb) = (pid(&a, "own__echo").await, pid(&b, "own__echo").await);
    assert_ne!(pa, pb, "one child per session");
    assert_eq!(pa, pid(&a, "own__echo").await, "a session keeps its child");
    // A log level, a notification or a resource list starts no child: only a call that was
    // let through does.
    let c = Client::legacy(&g.url()).await.unwrap();
    assert!(c.request("logging/setLevel", Some(json!({"level": "debug"}))).await.unwrap().response.get("result").is_some());
    assert!(c.request("resources/list", None).await.unwrap().response.get("result").is_some());
    c.notify("notifications/roots/list_changed", None).await.unwrap();
    c.request("ping", None).await.unwrap();
    let own = |c: &Client| g.gw.sessions.get(c.session.as_deref().unwrap()).unwrap().own_upstreams.lock().unwrap().len();
    assert_eq!(own(&c), 0, "no per-session child for a session that made no call");
    assert_eq!(own(&a), 1);
    // Ending a session stops its own child.
    let r = a.http.delete(&a.url).header("mcp-session-id", a.session.clone().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !std::path::Path::new(&format!("/proc/{pa}")).exists() || std::fs::read_to_string(format!("/proc/{pa}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    assert!(gone, "the session's child {pa} was terminated");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_front_finishes_answers_in_flight_and_refuses_new_connections() {
    let mut g = gateway(1, "10s").await;
    let c = Arc::new(Client::legacy(&g.url()).await.unwrap());
    let c2 = Arc::clone(&c);
    let call = tokio::spawn(async move { c2.call("up0__work", json!({"ms": 1500})).await });
    // Let the call reach the upstream (which then busy-waits), then stop the front.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let served = g.stop_front().unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(g.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the front stopped accepting");
    assert!(!call.is_finished(), "the call is still in flight");
    assert!(!served.is_finished(), "the front waits for the connection whose answer is in flight");
    let r = tokio::time::timeout(Duration::from_secs(10), call).await.unwrap().unwrap().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.response["result"]["content"][0]["text"], "worked", "{}", r.response);
    // With the answer written, the front closes its connections and returns.
    tokio::time::timeout(Duration::from_secs(5), served).await.unwrap().unwrap();
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_too_slow_to_send_a_request_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = TestGateway::start(&fixture_config(FIXTURE, 1, "10s", "[limits]\nclient_read_timeout = \"300ms\"\n")).await.unwrap();
    // Headers that never end: the connection is closed once the timeout passes.
    let mut tcp = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    tcp.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut seen)).await;
    assert!(closed.is_ok(), "the connection with unfinished headers was closed");
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the timeout: {:?}", started.elapsed());
    // A connection that sends nothing at all is closed too.
    let mut tcp = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut seen)).await;
    assert!(closed.is_ok(), "the silent connection was closed");
    // A body that stops short of its length: 408, with a JSON-RPC error that names the limit.
    let mut tcp = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let head = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n";
    tcp.write_all(format!("{head}{{\"jsonrpc\":").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the answer came and the connection closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within 300ms") && answer.contains("client_read_timeout"), "{answer}");
    assert!(answer.contains("-32600"), "{answer}");
    // A client that sends its requests promptly is unaffected, also after an idle pause shorter
    // than the timeout.
    let c = Client::legacy(&g.url()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = c.call("up0__echo", json!({"text": "on time"})).await.unwrap();
    assert_eq!(r.response["result"]["structuredContent"]["params"]["arguments"]["text"], "on time", "{}", r.response);
    g.stop().await;
}

/// At `limits.max_connections` the front stops accepting: a further connection's request waits
/// (in the listen backlog) and is answered once an open connection closes.
#[tokio::test]
async fn connections_past_the_limit_wait_for_one_to_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = TestGateway::start(&fixture_config(FIXTURE, 1, "10s", "[limits]\nmax_connections = 2\nclient_read_timeout = \"20s\"\n")).await.unwrap();
    let first = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let request = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{]";
    third.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(700), third.read_to_end(&mut answer)).await;
    assert!(early.is_err() && answer.is_empty(), "answered past the limit: {}", String::from_utf8_lossy(&answer));
    drop(first);
    let read = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "answered once a connection closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("-32700"), "{answer}");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cancellation_reaches_the_upstream() {
    let g = gateway(1, "30s").await;
    let c = Arc::new(Client::legacy(&g.url()).await.unwrap());
    let c2 = Arc::clone(&c);
    let call = tokio::spawn(async move {
        c2.post_raw(br#"{"jsonrpc":"2.0","id":"long-1","method":"tools/call","params":{"name":"up0__hang","arguments":{}}}"#.to_vec(), &[]).await.unwrap()
    });
    async fn seen(c: &Client) -> Value {
        c.call("up0__cancellations", json!({})).await.unwrap().response["result"]["structuredContent"].clone()
    }
    // Cancel only once the call has reached the upstream: a cancellation that lands while the
    // call is still in the gateway's pipeline ends it there, and the upstream never hears of it.
    async fn poll(c: &Client, key: &str) -> Value {
        for _ in 0..200 {
            let v = seen(c).await;
            if v[key].as_array().is_some_and(|a| !a.is_empty()) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        seen(c).await
    }
    let state = poll(&c, "hung").await;
    let hung = state["hung"].as_array().cloned().unwrap_or_default();
    assert_eq!(hung.len(), 1, "the hang call reached the upstream: {state}");
    c.notify("notifications/cancelled", Some(json!({"requestId": "long-1", "reason": "user"}))).await.unwrap();
    let cancelled = poll(&c, "cancelled").await["cancelled"].clone();
    // The upstream heard about it, under its own id for the call (not the client's).
    let ids = cancelled.as_array().unwrap();
    assert_eq!(ids.len(), 1, "{cancelled}");
    assert!(ids[0].is_u64(), "the gateway's upstream id, not the client's: {cancelled}");
    assert_eq!(ids[0], hung[0], "the upstream was told to cancel the very request it holds");
    let (_, resp) = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap();
    assert_eq!(resp["id"], "long-1");
    assert!(resp["error"]["message"].as_str().unwrap().contains("cancelled"), "{resp}");
    g.stop().await;
}

/// Starts the fixture as a Streamable HTTP server; returns it and its `host:port`.
async fn http_fixture(name: &str) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(FIXTURE).args(["http", "--name", name]).stdout(std::process::Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut addr = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut addr).await.unwrap();
    (child, addr.trim().to_owned())
}

/// Calls the HTTP fixture's `verbatim` tool under request id `id`; the response body's exact text.
async fn verbatim(c: &Client, id: &str, result: String) -> (u16, String) {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "h__verbatim", "arguments": {"result": result}}});
    c.post_text(body.to_string().into_bytes(), &[("mcp-protocol-version", "2025-11-25")]).await.unwrap()
}

/// A result nothing has to change in reaches the client as the upstream's very bytes (member
/// order, spacing, number spelling) under the client's id, and its labels are still recorded.
/// One the gateway must change (hidden content, a URI to namespace, a member named twice, a
/// 2026-07-28 client's completion) is parsed and written out again, changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_nothing_has_to_change_in_are_relayed_as_the_upstreams_bytes() {
    let (_fx, addr) = http_fixture("h").await;
    let cfg = format!("[listen]\nhttp = \"127.0.0.1:0\"\n[[upstream]]\nname = \"h\"\ntransport = \"http\"\nurl = \"http://{addr}/mcp\"\n");
    let g = TestGateway::start(&cfg).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    let call = |id: &'static str, result: &str| verbatim(&c, id, result.to_owned());

    let clean = r#"{ "content" : [{"type":"text","text":"the lab door code is 7 4 1 9, \"quoted\" \\ and\nsplit"}], "n": 1e2, "z":[ 1 ,2] }"#;
    let (status, body) = call("req-1", clean).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!(r#"{{"jsonrpc":"2.0","id":"req-1","result":{clean}}}"#));
    let scope = format!("s:{}", c.session.clone().unwrap());
    let report = g.gw.labels.report(&scope).await.unwrap().unwrap();
    assert_eq!(report["results"], 1, "the relayed result's labels were recorded: {report}");
    assert!(report["recent"][0]["origin"].as_str().unwrap().starts_with("h/verbatim#1"), "{report}");

    // Hidden content (here spelt as an escape) is cleaned.
    let (_, body) = call("req-2", r#"{"content":[{"type":"text","text":"a\u200bb\u001b[2Jc"}]}"#).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((&v["id"], &v["result"]["content"][0]["text"]), (&json!("req-2"), &json!("abc")), "{body}");
    // A URI is namespaced.
    let (_, body) = call("req-3", r#"{"content":[{"type":"resource_link","uri":"fx://thing","name":"thing"}]}"#).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["content"][0]["uri"], "h+fx://thing", "{body}");
    // A member named twice reaches the client once: the one the labels were recorded from.
    let (_, body) = call("req-4", r#"{"content":[{"type":"text","text":"nothing to see in this text","text":"the embargoed figures are in this one"}]}"#).await;
    assert_eq!(body.matches(r#""text":"#).count(), 1, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "the embargoed figures are in this one", "{body}");

    // A 2026-07-28 client's answer is completed.
    let s = Client::stateless(&g.url());
    let r = s.call("h__verbatim", json!({"result": r#"{"content":[{"type":"text","text":"plain"}]}"#})).await.unwrap().response;
    assert_eq!((&r["result"]["content"][0]["text"], &r["result"]["resultType"]), (&json!("plain"), &json!("complete")), "{r}");
    g.stop().await;

    // With labels off nothing parses the result at all: its bytes are checked as they are.
    let g = TestGateway::start(&format!("{cfg}[labels]\nenabled = false\n")).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    let call = |id: &'static str, result: &str| verbatim(&c, id, result.to_owned());
    let (_, body) = call("r1", clean).await;
    assert_eq!(body, format!(r#"{{"jsonrpc":"2.0","id":"r1","result":{clean}}}"#));
    let long = format!(r#"{{"content":[{{"type":"text","text":"a{}b"}}]}}"#, r"\n".repeat(17));
    for (result, text) in [(r#"{"content":[{"type":"text","text":"a\u200bb\u001b[2Jc"}]}"#, "abc"), (long.as_str(), "a b")] {
        let (_, body) = call("r2", result).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["result"]["content"][0]["text"], text, "{body}");
    }
    g.stop().await;
}

/// Only a 2026-07-28 connection asks for input (`resultType: "input_required"`), so only for
/// one does the gateway keep a copy of the request to send again with the client's answers. An
/// answer of that shape from a legacy upstream is relayed as that server sent it: the client is
/// asked nothing, and the call is not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_upstreams_input_required_answer_is_relayed_as_it_came() {
    let (_fx, addr) = http_fixture("h").await;
    let cfg = format!("[listen]\nhttp = \"127.0.0.1:0\"\n[[upstream]]\nname = \"h\"\ntransport = \"http\"\nurl = \"http://{addr}/mcp\"\n");
    let g = TestGateway::start(&cfg).await.unwrap();
    // The client can be asked: the gateway would have asked it, were the upstream 2026-07-28.
    let c = Client::legacy_as(&g.url(), json!({"elicitation": {}}), None).await.unwrap();
    let asked = r#"{"resultType":"input_required","inputRequests":{"q":{"method":"elicitation/create","params":{"message":"Your name?","requestedSchema":{"type":"object","properties":{"name":{"type":"string"}}}}}},"requestState":"s1"}"#;
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), verbatim(&c, "q-1", asked.to_owned())).await.expect("answered with no question put to the client");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], "q-1", "{body}");
    assert_eq!(v["result"], serde_json::from_str::<Value>(asked).unwrap(), "relayed as it came: {body}");
    g.stop().await;
}
