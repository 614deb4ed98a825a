//! The audit log in the running gateway when it cannot be written: with the default
//! `[audit] on_failure = "deny"`, calls that would go through are denied (`audit_unavailable`)
//! once a write has failed, and the admin API's `/health` answers 503; with `"allow"` they go on
//! and `/health` says the log is degraded. `/dev/full` is a log every write to which fails
//! (ENOSPC), as on a full disk.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::time::{Duration, Instant};

use clawgate_tests::{Client, TestGateway};
use serde_json::{Value, json};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture-upstream");

/// The outcome of a call: "allow", or "deny:<code>:<reason>:<engine>".
fn outcome(r: &Value) -> String {
    if r.get("result").is_some() {
        return "allow".into();
    }
    let d = &r["error"]["data"];
    format!("deny:{}:{}:{}", r["error"]["code"], d["reason"].as_str().unwrap_or("?"), d["engine"].as_str().unwrap_or("?"))
}

fn config(extra: &str) -> String {
    clawgate_tests::fixture_config(FIXTURE, 1, "10s", &format!("[audit]\nfile = \"/dev/full\"\n{extra}"))
}

/// Serves the admin API for `g`; returns its `/health` URL.
async fn serve_admin(g: &TestGateway) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    tokio::spawn(clawgate::admin::serve(std::sync::Arc::clone(&g.gw), listener, std::future::pending()));
    url
}

/// `GET /health`: the HTTP status and the body.
async fn health(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.text().await.unwrap()).unwrap())
}

/// `GET /health` once it counts at least `lost` lost records (the writer fails the last ones a
/// group commit after they are queued), or after 5 s.
async fn health_once_lost(url: &str, lost: u64) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = health(url).await;
        if body["audit"]["records_lost"].as_u64().unwrap() >= lost || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn calls_are_denied_while_the_audit_log_cannot_be_written() {
    let gw = TestGateway::start(&config("")).await.unwrap();
    let admin = serve_admin(&gw).await;
    let (status, body) = health(&admin).await;
    assert_eq!((status, &body["status"], &body["audit"]["writable"]), (200, &json!("ok"), &json!(true)), "nothing written yet: {body}");
    let c = Client::legacy(&gw.url()).await.unwrap();
    // The first call's record is written after it is answered (group commit), so it goes
    // through; the failed write then makes the log unwritable.
    let deadline = Instant::now() + Duration::from_secs(10);
    let denied = loop {
        let r = c.call("up0__echo", json!({"text": "hi"})).await.unwrap().response;
        match outcome(&r).as_str() {
            "allow" => assert_eq!(r["result"]["content"][0]["text"], "hi", "{r}"),
            "deny:-32050:audit_unavailable:gateway" => break r,
            other => panic!("unexpected outcome {other}: {r}"),
        }
        assert!(Instant::now() < deadline, "no call was denied although every audit write fails");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let message = denied["error"]["message"].as_str().unwrap();
    assert!(message.contains("the audit log cannot record this call") && message.contains("last write failed"), "{message}");
    // And it stays so: every further call, on either era, is denied.
    let s = Client::stateless(&gw.url());
    for _ in 0..5 {
        assert_eq!(outcome(&c.call("up0__echo", json!({"text": "again"})).await.unwrap().response), "deny:-32050:audit_unavailable:gateway");
        assert_eq!(outcome(&s.call("up0__echo", json!({"text": "again"})).await.unwrap().response), "deny:-32050:audit_unavailable:gateway");
    }
    // A load balancer sees it: 503, and why.
    let (status, body) = health_once_lost(&admin, 12).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!((&body["status"], &body["audit"]["file"], &body["audit"]["writable"], &body["audit"]["on_failure"]), (&json!("degraded"), &json!(true), &json!(false), &json!("deny")), "{body}");
    assert!(body["audit"]["records_lost"].as_u64().unwrap() >= 12, "the allowed calls' records and the 11 denials': {body}");
    gw.stop().await;
}

#[tokio::test]
async fn with_on_failure_allow_calls_go_on_unrecorded() {
    let gw = TestGateway::start(&config("on_failure = \"allow\"\n")).await.unwrap();
    let admin = serve_admin(&gw).await;
    let c = Client::legacy(&gw.url()).await.unwrap();
    for i in 0..20 {
        let r = c.call("up0__echo", json!({"text": format!("call {i}")})).await.unwrap().response;
        assert_eq!(r["result"]["content"][0]["text"], format!("call {i}"), "{r}");
        // Time for the writer to try (and fail) between calls.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Calls go on, so the gateway still takes traffic, but says its log is degraded.
    let (status, body) = health_once_lost(&admin, 20).await;
    assert_eq!((status, &body["status"], &body["audit"]["writable"], &body["audit"]["on_failure"]), (200, &json!("degraded"), &json!(false), &json!("allow")), "{body}");
    assert!(body["audit"]["records_lost"].as_u64().unwrap() >= 20, "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn an_audit_log_that_cannot_be_opened_stops_the_gateway_at_startup() {
    let dir = tempfile::Builder::new().prefix("clawgate-audit-open").tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("audit.jsonl");
    let cfg = clawgate_tests::fixture_config(FIXTURE, 1, "10s", &format!("[audit]\nfile = \"{}\"\n", path.display()));
    let e = TestGateway::start(&cfg).await.err().unwrap().to_string();
    assert!(e.contains(&path.display().to_string()) && e.contains("cannot open the audit log"), "{e}");
}

/// A method relayed with no policy decision (`relay_methods`) still leaves a record: who asked
/// which upstream for what. Like a call, it is refused once the log cannot be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_methods_are_audited_and_refused_when_they_cannot_be() {
    let relay = "relay_methods = [\"vendor/custom\"]\n";
    let dir = tempfile::Builder::new().prefix("clawgate-audit-relay").tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let gw = TestGateway::start(&clawgate_tests::fixture_config(FIXTURE, 1, "10s", &format!("{relay}[audit]\nfile = \"{}\"\n", path.display()))).await.unwrap();
    let c = Client::legacy(&gw.url()).await.unwrap();
    let r = c.request("vendor/custom", Some(json!({}))).await.unwrap().response;
    assert_eq!(r["error"]["data"]["x-echo-method"], "vendor/custom", "relayed: {r}");
    gw.stop().await;
    assert_eq!(clawgate::audit::verify(&path), Ok(std::fs::read_to_string(&path).unwrap().lines().count()));
    let relays: Vec<Value> = std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["event"] == "relay").collect();
    assert_eq!(relays.len(), 1, "{relays:?}");
    assert_eq!((&relays[0]["upstream"], &relays[0]["method"]), (&json!("up0"), &json!("vendor/custom")), "{relays:?}");
    assert!(relays[0]["principal"].is_string(), "{relays:?}");

    let gw = TestGateway::start(&clawgate_tests::fixture_config(FIXTURE, 1, "10s", &format!("{relay}[audit]\nfile = \"/dev/full\"\n"))).await.unwrap();
    let c = Client::legacy(&gw.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.request("vendor/custom", Some(json!({}))).await.unwrap().response;
        if r["error"]["data"]["reason"] == "audit_unavailable" {
            assert_eq!(r["error"]["code"], -32050, "{r}");
            break;
        }
        assert_eq!(r["error"]["data"]["x-echo-method"], "vendor/custom", "{r}");
        assert!(Instant::now() < deadline, "no relayed request was refused although every audit write fails");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop().await;
}
