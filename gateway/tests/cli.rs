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
