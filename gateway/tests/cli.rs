//! The `clawgate` binary itself: `check` exit codes and messages, and the stdio front driven
//! line by line on the embedded default (the bundled demo upstream).

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_clawgate");

fn check(toml: &str) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!("clawgate-cli-{}-{}", std::process::id(), toml.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("clawgate.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(BIN).args(["check", "--config"]).arg(&path).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn check_accepts_the_quickstart_and_names_file_key_and_line_on_errors() {
    let (code, out, _) = check(include_str!("../../examples/quickstart.toml"));
    assert_eq!(code, 0);
    assert!(out.contains("ok (1 upstream(s))"), "{out}");

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
    let mut child = Command::new(BIN).arg("stdio").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
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
    let mut child = Command::new(BIN).args(["serve", "--listen", &format!("127.0.0.1:{port}")]).stderr(Stdio::null()).spawn().unwrap();
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
    let dir = std::env::temp_dir().join(format!("clawgate-cli-tools-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
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
    let dir = std::env::temp_dir().join(format!("clawgate-cli-token-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
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
    let b = v.verify(&narrower).unwrap();
    let now = std::time::SystemTime::now();
    let args = json!({"thread_id": "t-100"});
    assert!(v.authorize(&b, &clawgate_policies::token::CallFacts { tool: "demo__read_thread", upstream: "demo", arguments: Some(&args), now }).is_ok());
    let other = json!({"thread_id": "t-200"});
    assert!(v.authorize(&b, &clawgate_policies::token::CallFacts { tool: "demo__read_thread", upstream: "demo", arguments: Some(&other), now }).is_err());
}
