//! The policy engine in the running gateway (Rust client over HTTP; the Python SDK client
//! covers the rule types in tests/interop/test_policy.py): hot reload under load, shadow mode,
//! credentials never forwarded upstream, sessions bound to their credential.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clawgate_tests::{Client, TestGateway};
use serde_json::{Value, json};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture-upstream");

/// A scratch directory with a `policies` directory in it, removed when the returned guard
/// drops (also when the test fails).
fn temp_dir(name: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(&format!("clawgate-policy-{name}")).tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("policies")).unwrap();
    d
}

/// Writes a file atomically (temp + rename), as deployment tools do.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn version(k: usize) -> String {
    // Two permits that both match: a decision made on one consistent set names both with the
    // same version; a torn set would name two versions (or one policy).
    format!("@id(\"v{k}-a\")\npermit (principal, action == Action::\"up0__echo\", resource);\n@id(\"v{k}-b\")\npermit (principal, action in Action::\"call_tool\", resource);\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_keeps_every_decision_consistent() {
    let tmp = temp_dir("reload");
    let dir = tmp.path();
    let audit = dir.join("audit.jsonl");
    let main = dir.join("policies/main.cedar");
    write_atomic(&main, &version(0));
    let cfg = clawgate_tests::fixture_config(
        FIXTURE,
        1,
        "10s",
        &format!("[policy]\ndir = \"{}\"\n[audit]\nfile = \"{}\"\n", dir.join("policies").display(), audit.display()),
    );
    let gw = TestGateway::start(&cfg).await.unwrap();
    let url = gw.url();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (url, stop, ok, failed) = (url.clone(), Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        workers.push(tokio::spawn(async move {
            let c = if w % 2 == 0 { Client::legacy(&url).await.unwrap() } else { Client::stateless(&url) };
            while !stop.load(Ordering::Relaxed) {
                let r = c.call("up0__echo", json!({"text": "x"})).await.unwrap().response;
                if r.get("result").is_some() {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed during reload: {r}");
                }
            }
        }));
    }
    for k in 1..=20 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        write_atomic(&main, &version(k));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    gw.stop().await;
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request fails during 20 policy swaps");
    let ok = ok.load(Ordering::Relaxed);
    assert!(ok > 200, "calls kept flowing ({ok})");
    // Every decision names exactly one version's two policies.
    let text = std::fs::read_to_string(&audit).unwrap();
    let mut versions = BTreeSet::new();
    let mut decisions = 0;
    for line in text.lines() {
        let rec: Value = serde_json::from_str(line).unwrap();
        if rec["event"] != "decision" {
            continue;
        }
        decisions += 1;
        assert_eq!(rec["decision"], "allow", "{rec}");
        let ps: Vec<&str> = rec["policies"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(ps.len(), 2, "{rec}");
        let v: BTreeSet<&str> = ps.iter().map(|p| p.split('-').next().unwrap()).collect();
        assert_eq!(v.len(), 1, "a decision mixed two policy sets: {rec}");
        versions.insert(v.into_iter().next().unwrap().to_owned());
    }
    assert_eq!(decisions, ok, "one decision record per call");
    assert!(versions.len() >= 15, "most of the 21 versions decided some call: {versions:?}");
    assert!(text.matches("\"policy.reloaded\"").count() >= 15, "reloads are audited");
}

#[tokio::test]
async fn shadow_mode_logs_would_deny_and_lets_calls_through() {
    let cfg = clawgate_tests::fixture_config(
        FIXTURE,
        1,
        "10s",
        "[policy]\nmode = \"shadow\"\ninline = '''\n@id(\"no-echo\")\nforbid (principal, action == Action::\"up0__echo\", resource);\n'''\n",
    );
    let gw = TestGateway::start(&cfg).await.unwrap();
    let c = Client::legacy(&gw.url()).await.unwrap();
    let r = c.call("up0__echo", json!({"text": "still runs"})).await.unwrap().response;
    assert_eq!(r["result"]["content"][0]["text"], "still runs", "{r}");
    // Shadow mode lists everything (calls go through anyway).
    let tools = c.request("tools/list", None).await.unwrap().response;
    assert!(tools["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "up0__echo"));
    gw.stop().await;
    // The same policy enforced denies.
    let cfg = cfg.replace("mode = \"shadow\"", "mode = \"enforce\"");
    let gw = TestGateway::start(&cfg).await.unwrap();
    let c = Client::legacy(&gw.url()).await.unwrap();
    let r = c.call("up0__echo", json!({"text": "x"})).await.unwrap().response;
    assert!(r["error"]["message"].as_str().unwrap().contains("unknown tool"), "{r}");
    gw.stop().await;
}

#[tokio::test]
async fn the_clients_authorization_is_never_forwarded_upstream() {
    let mut child = tokio::process::Command::new(FIXTURE).args(["http", "--name", "h"]).stdout(std::process::Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut addr = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut addr).await.unwrap();
    let tmp = temp_dir("forward");
    let dir = tmp.path();
    let (private, public) = clawgate_policies::token::keygen();
    std::fs::write(dir.join("root.pub"), &public).unwrap();
    let root = clawgate_policies::token::private_key_from_hex(&private).unwrap();
    let spec = clawgate_policies::token::MintSpec { principal: "p".into(), ..Default::default() };
    let key = clawgate_policies::token::mint(&root, &spec, std::time::SystemTime::now()).unwrap();
    let key = key.as_str();
    let cfg = format!(
        "[auth]\nbiscuit_public_key = \"{}\"\n[policy]\ninline = 'permit (principal, action, resource) when {{ principal.kind != \"anonymous\" }};'\n[[upstream]]\nname = \"h\"\ntransport = \"http\"\nurl = \"http://{}/mcp\"\nheaders = {{ Authorization = \"Bearer operator-configured\" }}\n",
        dir.join("root.pub").display(),
        addr.trim()
    );
    let gw = TestGateway::start(&cfg).await.unwrap();
    let c = Client::legacy_as(&gw.url(), json!({}), Some(key)).await.unwrap();
    let r = c.call("h__seen_auth", json!({})).await.unwrap().response;
    let seen: Vec<&str> = r["result"]["structuredContent"]["authorization"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(!seen.is_empty(), "{r}");
    assert!(seen.iter().all(|v| *v == "Bearer operator-configured"), "only the operator's header reaches the upstream: {seen:?}");
    assert!(!r.to_string().contains(key));
    // A session answers only to the credential that opened it.
    let mut thief = Client::legacy_as(&gw.url(), json!({}), None).await.unwrap();
    thief.session = c.session.clone();
    let r = thief.call("h__echo", json!({})).await.unwrap();
    assert_eq!(r.status, 404, "{:?}", r.response);
    // Bad credentials are refused at the door with 401.
    let mut bad = Client::stateless(&gw.url());
    bad.bearer = Some("not-a-key".into());
    let r = bad.call("h__echo", json!({})).await.unwrap();
    assert_eq!(r.status, 401, "{:?}", r.response);
    assert_eq!(r.response["error"]["code"], -32001);
    // Before the body is read: a body that is not even JSON still gets the 401, not a parse
    // error (so bad credentials never make the gateway buffer and parse a body).
    let (status, v) = bad.post_raw(b"{ not json".to_vec(), &[]).await.unwrap();
    assert_eq!((status, &v["error"]["code"]), (401, &json!(-32001)), "{v}");
    gw.stop().await;
    let _ = child.kill().await;
}


/// A Biscuit token governs reads as it governs calls: a sub-agent token attenuated to one tool
/// reads no resource or prompt (before, reads were decided by Cedar alone, so it kept its
/// principal's every read), a token that grants the upstream reads, and an expired token does
/// not authenticate at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_govern_reads_and_expire() {
    use clawgate_policies::token::{MintSpec, attenuate, keygen, mint, private_key_from_hex};
    let tmp = temp_dir("reads");
    let dir = tmp.path();
    let (private, public) = keygen();
    std::fs::write(dir.join("root.pub"), &public).unwrap();
    let root = private_key_from_hex(&private).unwrap();
    let now = std::time::SystemTime::now();
    let spec = MintSpec { principal: "alice".into(), upstreams: vec!["demo".into()], ttl: Some(std::time::Duration::from_secs(3600)), ..Default::default() };
    let full = mint(&root, &spec, now).unwrap();
    let narrowed = attenuate(&full, "check if call_tool(\"demo__read_thread\");").unwrap();
    let expired = mint(&root, &MintSpec { ttl: Some(std::time::Duration::from_secs(60)), ..spec.clone() }, now - std::time::Duration::from_secs(600)).unwrap();
    let cfg = format!(
        "[auth]\nbiscuit_public_key = \"{}\"\n[policy]\ninline = 'permit (principal, action, resource) when {{ principal.kind != \"anonymous\" }};'\n[[upstream]]\nname = \"demo\"\ntransport = \"stdio\"\ncommand = \"{FIXTURE}\"\nargs = [\"demo\"]\n",
        dir.join("root.pub").display()
    );
    let gw = TestGateway::start(&cfg).await.unwrap();
    let doc = json!({"uri": "demo+file:///public/readme.txt"});
    let prompt = json!({"name": "demo__summarize_thread", "arguments": {"thread_id": "t-100"}});

    let c = Client::legacy_as(&gw.url(), json!({}), Some(&full)).await.unwrap();
    let r = c.request("resources/read", Some(doc.clone())).await.unwrap().response;
    assert_eq!(r["result"]["contents"][0]["text"], "Welcome to the demo file share.", "{r}");
    assert!(c.request("prompts/get", Some(prompt.clone())).await.unwrap().response["result"]["messages"].is_array());
    let listed = c.request("resources/list", None).await.unwrap().response;
    assert_eq!(listed["result"]["resources"].as_array().unwrap().len(), 3, "{listed}");

    let sub = Client::legacy_as(&gw.url(), json!({}), Some(&narrowed)).await.unwrap();
    assert!(sub.call("demo__read_thread", json!({"thread_id": "t-100"})).await.unwrap().response["result"].is_object(), "the one tool it keeps");
    for (method, params) in [("resources/read", doc), ("prompts/get", prompt)] {
        let r = sub.request(method, Some(params)).await.unwrap().response;
        assert_eq!((&r["error"]["code"], &r["error"]["data"]["reason"]), (&json!(-32050), &json!("token_denied")), "{method}: {r}");
    }
    for (method, key) in [("resources/list", "resources"), ("prompts/list", "prompts")] {
        let r = sub.request(method, None).await.unwrap().response;
        assert_eq!(r["result"][key], json!([]), "{method}: {r}");
    }

    let mut late = Client::stateless(&gw.url());
    late.bearer = Some(expired);
    let r = late.request("resources/read", Some(json!({"uri": "demo+file:///public/readme.txt"}))).await.unwrap();
    assert_eq!(r.status, 401, "{:?}", r.response);
    assert!(r.response["error"]["message"].as_str().unwrap().contains("expired"), "{:?}", r.response);
    gw.stop().await;
}
