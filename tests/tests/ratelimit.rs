//! `[rate_limit]` in the running gateway: the principal-wide limit refuses past its burst with a
//! `rate_limited` denial (audited) and lets calls through again once it refills; a per-tool rule
//! refuses one tool for one principal while other tools and other principals go on.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::time::{Duration, Instant};

use clawgate_tests::{Client, TestGateway};
use serde_json::{Value, json};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture-upstream");

/// A scratch directory, removed when the returned guard drops (also when the test fails).
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("clawgate-ratelimit-{name}")).tempdir().unwrap()
}

/// The outcome of a call: "allow", or "deny:<code>:<reason>:<engine>".
fn outcome(r: &Value) -> String {
    if r.get("result").is_some() {
        return "allow".into();
    }
    let d = &r["error"]["data"];
    format!("deny:{}:{}:{}", r["error"]["code"], d["reason"].as_str().unwrap_or("?"), d["engine"].as_str().unwrap_or("?"))
}

const LIMITED: &str = "deny:-32050:rate_limited:gateway";

#[tokio::test]
async fn the_principal_wide_limit_refuses_past_the_burst_and_refills() {
    let tmp = temp_dir("wide");
    let dir = tmp.path();
    let audit = dir.join("audit.jsonl");
    let cfg = clawgate_tests::fixture_config(FIXTURE, 1, "10s", &format!("[rate_limit]\ncalls = 3\nper = \"2s\"\n[audit]\nfile = \"{}\"\n", audit.display()));
    let gw = TestGateway::start(&cfg).await.unwrap();
    let c = Client::legacy(&gw.url()).await.unwrap();
    // Lists are not rate limited (and this waits for the upstream to be listed).
    for _ in 0..5 {
        assert!(c.request("tools/list", None).await.unwrap().response["result"]["tools"].is_array());
    }
    // A burst of 3, then one call every 2 s / 3 = 667 ms.
    for i in 0..3 {
        let r = c.call("up0__echo", json!({"text": format!("call {i}")})).await.unwrap().response;
        assert_eq!(r["result"]["content"][0]["text"], format!("call {i}"), "{r}");
    }
    let r = c.call("up0__echo", json!({"text": "one too many"})).await.unwrap().response;
    assert_eq!(outcome(&r), LIMITED, "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("rate limit: 3 calls per 2s; retry after 0."), "{message}");
    // The stateless era shares the limit: it is per principal, not per session.
    let s = Client::stateless(&gw.url());
    assert_eq!(outcome(&s.call("up0__echo", json!({})).await.unwrap().response), LIMITED);
    // One interval later, one more call.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = c.call("up0__echo", json!({"text": "again"})).await.unwrap().response;
    assert_eq!(r["result"]["content"][0]["text"], "again", "{r}");
    // The denials are audited like any other.
    let deadline = Instant::now() + Duration::from_secs(15);
    let denials = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let recs: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|r: &Value| r["event"] == "decision" && r["reason"] == "rate_limited").collect();
        if recs.len() >= 2 || Instant::now() > deadline {
            break recs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(denials.len(), 2, "{denials:?}");
    let d = &denials[0];
    assert_eq!((d["decision"].as_str(), d["engine"].as_str(), d["principal"].as_str(), d["target"].as_str()), (Some("deny"), Some("gateway"), Some("anonymous"), Some("up0__echo")), "{d}");
    assert!(d["detail"].as_str().unwrap().starts_with("rate limit: 3 calls per 2s; retry after "), "{d}");
    gw.stop().await;
    assert!(clawgate::audit::verify(&audit).unwrap() > 0);
}

#[tokio::test]
async fn a_tool_rule_limits_one_tool_per_principal() {
    let tmp = temp_dir("tool");
    let dir = tmp.path();
    let (private, public) = clawgate_policies::token::keygen();
    std::fs::write(dir.join("root.pub"), &public).unwrap();
    let root = clawgate_policies::token::private_key_from_hex(&private).unwrap();
    let token = |who: &str| {
        let spec = clawgate_policies::token::MintSpec { principal: who.into(), ..Default::default() };
        clawgate_policies::token::mint(&root, &spec, std::time::SystemTime::now()).unwrap()
    };
    let extra = format!(
        "[auth]\nbiscuit_public_key = \"{}\"\n[rate_limit]\ncalls = 100\nper = \"1m\"\n[[rate_limit.tool]]\nname = \"up0__ven*\"\ncalls = 2\nper = \"1m\"\n",
        dir.join("root.pub").display()
    );
    let gw = TestGateway::start(&clawgate_tests::fixture_config(FIXTURE, 1, "10s", &extra)).await.unwrap();
    let alice = Client::legacy_as(&gw.url(), json!({}), Some(&token("alice"))).await.unwrap();
    let bob = Client::legacy_as(&gw.url(), json!({}), Some(&token("bob"))).await.unwrap();
    assert!(alice.request("tools/list", None).await.unwrap().response["result"]["tools"].is_array());
    for _ in 0..2 {
        assert_eq!(outcome(&alice.call("up0__vendor", json!({})).await.unwrap().response), "allow");
    }
    let r = alice.call("up0__vendor", json!({})).await.unwrap().response;
    assert_eq!(outcome(&r), LIMITED, "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("rate limit: 2 calls per 1m for up0__ven*; retry after "), "{message}");
    // One call every 30 s once the burst is spent (less the time the calls took).
    let wait: f64 = message.rsplit("retry after ").next().unwrap().trim_end_matches('s').parse().unwrap();
    assert!((20.0..=30.0).contains(&wait), "{message}");
    // Alice's other tools still run, and so does Bob's call to the limited tool.
    for i in 0..5 {
        let r = alice.call("up0__echo", json!({"text": format!("e{i}")})).await.unwrap().response;
        assert_eq!(outcome(&r), "allow", "{r}");
    }
    assert_eq!(outcome(&bob.call("up0__vendor", json!({})).await.unwrap().response), "allow");
    assert_eq!(outcome(&alice.call("up0__vendor", json!({})).await.unwrap().response), LIMITED);
    gw.stop().await;
}
