//! The `clawgate` binary itself: `check` exit codes and messages, and the stdio front driven
//! line by line on the embedded default (the bundled demo upstream).

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_clawgate");

/// A scratch directory, removed when the returned guard drops (also when the test fails).
fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

fn check(toml: &str) -> (i32, String, String) {
    let tmp = scratch("clawgate-cli");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(dir.join("policies/demo.cedar"), include_str!("../../examples/policies/demo.cedar")).unwrap();
    let path = dir.join("clawgate.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(BIN).args(["check", "--config"]).arg(&path).env("CLAWGATE_DEMO_KEY", "test-demo-key-0123456789").output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn check_accepts_the_quickstart_and_names_file_key_and_line_on_errors() {
    // The quickstart, with its demo upstream run from this binary: its policies validate
    // against the demo's live tools.
    let quickstart = include_str!("../../examples/quickstart.toml").replace("command = \"clawgate\"", &format!("command = \"{BIN}\""));
    let (code, out, err) = check(&quickstart);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (1 upstream(s), 4 policies)"), "{out}");
    assert!(!out.contains("warning"), "every tool the policies name is listed: {out}");

    // A policy naming an argument the tool does not have: file, line and cause.
    let policy = "\npermit (principal, action == Action::\"demo__send_email\", resource)\nwhen { context.args.recipent == \"x\" };\n";
    let with_typo = quickstart.replace("mode = \"enforce\"", &format!("mode = \"enforce\"\ninline = \"\"\"{policy}\"\"\""));
    let (code, _, err) = check(&with_typo);
    assert_eq!(code, 1);
    assert!(err.contains("clawgate.toml [policy] inline:") && err.contains("recipent"), "{err}");

    let (code, _, err) = check("[[upstream]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\ntimout = \"5s\"\n");
    assert_eq!(code, 1);
    assert!(err.contains("clawgate.toml:5"), "{err}");
    assert!(err.contains("timout"), "{err}");

    let (code, _, err) = check("[[upstream]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://x/mcp\"\nheaders = { Authorization = \"Bearer ${CLAWGATE_TEST_UNSET_VAR}\" }\n");
    assert_eq!(code, 1);
    assert!(err.contains("upstream[0].headers.Authorization") && err.contains("CLAWGATE_TEST_UNSET_VAR"), "{err}");

    let out = Command::new(BIN).args(["check", "--config", "/nonexistent/clawgate.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/clawgate.toml"));
}

#[test]
fn stdio_front_serves_one_client_and_keeps_stdout_for_protocol() {
    // The stdio client acts as the principal its CLAWGATE_TOKEN names: here the demo user's key.
    let key = "test-demo-key-0123456789";
    let mut child = Command::new(BIN)
        .arg("stdio")
        .env("CLAWGATE_DEMO_KEY", key)
        .env("CLAWGATE_TOKEN", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let send = |stdin: &mut std::process::ChildStdin, line: String| {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    };
    let mut recv = || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("stdout carried a non-JSON line {line:?}: {e}"))
    };
    send(&mut stdin, json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string());
    assert_eq!(recv()["result"]["protocolVersion"], "2025-11-25");
    send(&mut stdin, json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string());
    send(&mut stdin, json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}).to_string());
    let tools = recv();
    assert!(tools["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "demo__read_thread"), "{tools}");
    send(&mut stdin, json!({"jsonrpc":"2.0","id":"three","method":"tools/call","params":{"name":"demo__read_thread","arguments":{"thread_id":"t-100"}}}).to_string());
    let r = recv();
    assert_eq!(r["id"], "three");
    assert_eq!(r["result"]["structuredContent"]["subject"], "Q3 planning");
    // The demo user may get prompts (demo policy `demo-prompts-resources`).
    send(&mut stdin, json!({"jsonrpc":"2.0","id":"p","method":"prompts/list"}).to_string());
    let prompts = recv();
    assert!(prompts["result"]["prompts"].as_array().unwrap().iter().any(|p| p["name"] == "demo__summarize_thread"), "{prompts}");
    // A malformed line gets a parse error and the connection carries on.
    send(&mut stdin, "{not json".to_owned());
    assert_eq!(recv()["error"]["code"], -32700);
    send(&mut stdin, json!({"jsonrpc":"2.0","id":4,"method":"ping"}).to_string());
    assert_eq!(recv()["result"], json!({}));
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
}

/// One raw HTTP/1.1 exchange on a fresh connection; returns the head and whatever body arrived.
fn http(port: u16, request: &str) -> (String, std::net::TcpStream) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), s)
}

#[test]
fn sigterm_shuts_down_promptly_even_with_open_streams() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(BIN).args(["serve", "--listen", &format!("127.0.0.1:{port}")]).env("CLAWGATE_DEMO_KEY", "test-demo-key-0123456789").stderr(Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (head, _) = http(port, &format!("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    let sid = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("mcp-session-id: ").map(str::to_owned)).unwrap();
    // Hold a standalone GET stream open while the gateway is asked to stop.
    let (head, _stream) = http(port, &format!("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {sid}\r\n\r\n"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let t0 = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(8), "still running {:?} after SIGTERM", t0.elapsed());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn tools_diff_and_approve_as_commands() {
    let tmp = scratch("clawgate-cli-tools");
    let dir = tmp.path();
    let config = dir.join("clawgate.toml");
    std::fs::write(&config, format!("[audit]\nfile = \"audit.jsonl\"\n[[upstream]]\nname = \"demo\"\ntransport = \"stdio\"\ncommand = \"{BIN}\"\nargs = [\"demo-upstream\"]\npin = \"strict\"\n")).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let cfg = config.to_str().unwrap();
    let (code, out, err) = run(&["tools", "diff", "--config", cfg]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("+ new tool `demo__read_thread`"), "{out}");
    let (code, out, err) = run(&["tools", "approve", "--config", cfg, "demo__read_thread"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("approved tool `demo__read_thread`"), "{out}");
    let (code, _, err) = run(&["tools", "approve", "--config", cfg, "demo__nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("`demo__nope`"), "{err}");
    let (code, out, _) = run(&["tools", "approve", "--config", cfg, "--all"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, err) = run(&["tools", "diff", "--config", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no differences"), "{out}");
    let lock = std::fs::read_to_string(dir.join("clawgate.lock")).unwrap();
    assert!(lock.contains("\"read_thread\"") && lock.contains("\"reviewed\": true"), "{lock}");
    // The CLI never writes the gateway's audit log.
    assert!(!dir.join("audit.jsonl").exists());
    std::fs::write(dir.join("bad.jsonl"), "{\"event\":\"x\",\"prev\":\"sha256:00\",\"hash\":\"sha256:11\"}\n").unwrap();
    let (code, _, err) = run(&["audit", "verify", dir.join("bad.jsonl").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("bad.jsonl:1"), "{err}");
}

#[test]
fn token_commands_mint_attenuate_and_inspect() {
    let tmp = scratch("clawgate-cli-token");
    let dir = tmp.path();
    let key = dir.join("root.key");
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).trim().to_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, _, err) = run(&["token", "keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let public = std::fs::read_to_string(dir.join("root.key.pub")).unwrap();
    let (code, token, err) = run(&["token", "mint", "--key", key.to_str().unwrap(), "--principal", "alice", "--task", "triage", "--tool", "demo__read_thread", "--ttl", "1h"]);
    assert_eq!(code, 0, "{err}");
    let (code, narrower, err) = run(&["token", "attenuate", "--token", &token, "--check", "check if call_tool(\"demo__read_thread\"), arg(\"thread_id\", \"t-100\");"]);
    assert_eq!(code, 0, "{err}");
    let (code, shown, _) = run(&["token", "inspect", "--token", &narrower]);
    assert_eq!(code, 0);
    assert!(shown.contains("principal(\"alice\")") && shown.contains("block 1") && shown.contains("t-100"), "{shown}");
    let (code, _, err) = run(&["token", "attenuate", "--token", &token, "--check", "tool(\"*\");"]);
    assert_eq!(code, 1, "facts cannot be appended");
    assert!(err.contains("checks only"), "{err}");
    // The minted token verifies against the written public key and narrows as attenuated.
    let v = clawgate_policies::token::Verifier::new(clawgate_policies::token::public_key_from_hex(&public).unwrap(), []);
    let vt = v.verify(&narrower).unwrap();
    let b = &vt.biscuit;
    let now = std::time::SystemTime::now();
    let args = json!({"thread_id": "t-100"});
    assert!(v.authorize(b, &clawgate_policies::token::CallFacts { tool: "demo__read_thread", upstream: "demo", arguments: Some(&args), now }).is_ok());
    let other = json!({"thread_id": "t-200"});
    assert!(v.authorize(b, &clawgate_policies::token::CallFacts { tool: "demo__read_thread", upstream: "demo", arguments: Some(&other), now }).is_err());
}

#[test]
fn policy_test_diff_and_schema_against_the_demo_tools() {
    let tmp = scratch("clawgate-cli-policy");
    let dir = tmp.path();
    for d in ["old", "new"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("old/p.cedar"), "@id(\"read\")\npermit (principal, action in Action::\"read\", resource);\n").unwrap();
    std::fs::write(
        dir.join("new/p.cedar"),
        "@id(\"read\")\npermit (principal, action in Action::\"read\", resource);\n@id(\"no-files\")\nforbid (principal, action == Action::\"demo__read_file\", resource);\n",
    )
    .unwrap();
    let config = dir.join("clawgate.toml");
    std::fs::write(&config, format!("[policy]\ndir = \"new\"\n[[upstream]]\nname = \"demo\"\ntransport = \"stdio\"\ncommand = \"{BIN}\"\nargs = [\"demo-upstream\"]\ntrusted = true\n")).unwrap();
    let calls = dir.join("calls.jsonl");
    std::fs::write(
        &calls,
        [
            json!({"tool": "demo__read_thread", "arguments": {"thread_id": "t-100"}, "principal": "alice"}),
            json!({"tool": "demo__read_file", "arguments": {"path": "reports/q3.txt"}, "principal": "alice"}),
            json!({"tool": "demo__send_email", "arguments": {"to": ["x@y"], "subject": "s", "body": "b"}, "principal": "alice"}),
            json!({"tool": "demo__read_thread", "arguments": {"thread_id": 5}, "principal": "alice"}),
        ]
        .iter()
        .map(|v| v.to_string() + "\n")
        .collect::<String>(),
    )
    .unwrap();
    // policy test: one line per call, with reasons; exit 3 because some are denied.
    let out = Command::new(BIN).args(["policy", "test", "--config"]).arg(&config).arg("--calls").arg(&calls).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!((lines[0]["decision"].as_str(), lines[0]["policies"][0].as_str()), (Some("allow"), Some("read")));
    assert_eq!((lines[1]["decision"].as_str(), lines[1]["reason"].as_str(), lines[1]["policies"][0].as_str()), (Some("deny"), Some("forbidden"), Some("no-files")));
    assert_eq!((lines[2]["decision"].as_str(), lines[2]["reason"].as_str()), (Some("deny"), Some("no_permit")));
    assert_eq!((lines[3]["reason"].as_str(), lines[3]["engine"].as_str()), (Some("invalid_arguments"), Some("schema")));
    assert!(lines[3]["detail"].as_str().unwrap().contains("arguments/thread_id"), "{}", lines[3]);
    // policy diff: exactly the read_file call flips.
    let out = Command::new(BIN).args(["policy", "diff", "--config"]).arg(&config).arg("--old").arg(dir.join("old")).arg("--new").arg(dir.join("new")).arg("--calls").arg(&calls).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("1 decision(s) flip"), "{text}");
    let flip: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!((flip["tool"].as_str(), flip["old"]["decision"].as_str(), flip["new"]["decision"].as_str()), (Some("demo__read_file"), Some("allow"), Some("deny")));
    // schema: the base plus one typed action per demo tool.
    let out = Command::new(BIN).args(["schema", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success());
    let schema = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(schema.contains("entity Principal in [Group]"), "{schema}");
    assert!(schema.contains(r#"action "demo__send_email" in ["call_tool", "write", "destructive", "open_world"]"#), "{schema}");
    assert!(schema.contains(r#""to": Set<String>"#), "{schema}");
}

#[test]
fn stdio_without_credentials_is_anonymous_and_bad_credentials_do_not_start() {
    let mut child = Command::new(BIN)
        .arg("stdio")
        .env("CLAWGATE_DEMO_KEY", "test-demo-key-0123456789")
        .env_remove("CLAWGATE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ask = |line: Value| {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut out = String::new();
        stdout.read_line(&mut out).unwrap();
        serde_json::from_str::<Value>(&out).unwrap()
    };
    ask(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}));
    let tools = ask(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
    assert_eq!(tools["result"]["tools"], json!([]), "the demo policies permit nothing to anonymous callers");
    let r = ask(json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"demo__read_thread","arguments":{"thread_id":"t-100"}}}));
    assert!(r["error"]["message"].as_str().unwrap().contains("unknown tool"), "{r}");
    // Prompts, completions and subscriptions follow the same policies.
    let prompts = ask(json!({"jsonrpc":"2.0","id":4,"method":"prompts/list"}));
    assert_eq!(prompts["result"]["prompts"], json!([]), "{prompts}");
    let r = ask(json!({"jsonrpc":"2.0","id":5,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"demo__summarize_thread"},"argument":{"name":"thread_id","value":"t"}}}));
    assert!(r["error"]["message"].as_str().unwrap().contains("unknown prompt"), "{r}");
    let r = ask(json!({"jsonrpc":"2.0","id":6,"method":"resources/subscribe","params":{"uri":"demo+file:///reports/q3.txt"}}));
    assert!(r["error"]["message"].as_str().unwrap().contains("unknown resource"), "{r}");
    let r = ask(json!({"jsonrpc":"2.0","id":7,"method":"prompts/get","params":{"name":"demo__summarize_thread","arguments":{"thread_id":"t-100"}}}));
    assert!(r.get("error").is_some(), "{r}");
    let _ = child.kill();
    let _ = child.wait();
    let out = Command::new(BIN).arg("stdio").env("CLAWGATE_DEMO_KEY", "test-demo-key-0123456789").env("CLAWGATE_TOKEN", "wrong-key").stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CLAWGATE_TOKEN: invalid credentials"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn labels_show_needs_the_admin_api_and_says_which_key() {
    let tmp = scratch("clawgate-cli-labels");
    let dir = tmp.path();
    let path = dir.join("clawgate.toml");
    std::fs::write(&path, "[labels]\nstrict = true\n").unwrap();
    let out = Command::new(BIN).args(["labels", "show", "--config"]).arg(&path).args(["--session", "abc"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("admin.http") && err.contains("clawgate.toml"), "{err}");
    // An admin address nobody listens on: a clear error, not a hang.
    std::fs::write(&path, "[admin]\nhttp = \"127.0.0.1:9\"\n").unwrap();
    let out = Command::new(BIN).args(["labels", "show", "--config"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot reach the admin API at 127.0.0.1:9"), "{err}");
}
