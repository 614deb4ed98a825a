//! The audit log in the running gateway when it cannot be written: with the default
//! `[audit] on_failure = "deny"`, calls that would go through are denied (`audit_unavailable`)
//! once a write has failed; with `"allow"` they go on. `/dev/full` is a log every write to
//! which fails (ENOSPC), as on a full disk.

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

#[tokio::test]
async fn calls_are_denied_while_the_audit_log_cannot_be_written() {
    let gw = TestGateway::start(&config("")).await.unwrap();
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
    gw.stop().await;
}

#[tokio::test]
async fn with_on_failure_allow_calls_go_on_unrecorded() {
    let gw = TestGateway::start(&config("on_failure = \"allow\"\n")).await.unwrap();
    let c = Client::legacy(&gw.url()).await.unwrap();
    for i in 0..20 {
        let r = c.call("up0__echo", json!({"text": format!("call {i}")})).await.unwrap().response;
        assert_eq!(r["result"]["content"][0]["text"], format!("call {i}"), "{r}");
        // Time for the writer to try (and fail) between calls.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
