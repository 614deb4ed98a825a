//! The stdio front: one MCP client (Claude Desktop-style) over newline-delimited JSON-RPC on
//! stdin/stdout. stdout carries protocol messages only; logs go to stderr.
//!
//! The first request settles the era, as the reference SDKs do: `initialize` opens a legacy
//! session; a request carrying the 2026-07-28 `_meta` envelope makes the connection stateless.
//!
//! The whole connection acts as one principal: the `CLAWGATE_TOKEN` environment variable (a
//! Biscuit token or an API key), or the anonymous principal without it. It is authenticated
//! again (from the verifier's cache) on every message, so a revocation or key rotation picked
//! up by a reload applies to a running connection too.

use std::sync::Arc;

use clawgate_adapters::era;
use clawgate_adapters::jsonrpc::{self, Kind};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::error::CallError;
use crate::pipeline::{Caller, CallerEra, Gateway};
use crate::session::{Session, spawn_tracked};
use crate::authz::Principal;

enum Mode {
    Unset,
    Legacy(Arc<Session>),
    Stateless,
}

/// Serves one client until its input closes.
pub async fn serve<R, W>(gw: Arc<Gateway>, credential: Option<String>, input: R, output: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let limits = gw.config().limits.clone();
    let (out_tx, mut out_rx) = mpsc::channel::<Value>(1024);
    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(msg) = out_rx.recv().await {
            let mut line = jsonrpc::to_vec(&msg);
            line.push(b'\n');
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    let mut reader = BufReader::new(input);
    let mut mode = Mode::Unset;
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded read: at most max_body_bytes + 1 bytes per line.
        let n = (&mut reader).take(limits.max_body_bytes as u64 + 1).read_until(b'\n', &mut line).await?;
        if n == 0 {
            break;
        }
        if line.len() > limits.max_body_bytes && !line.ends_with(b"\n") {
            // Discard the rest of the over-long line, then report it.
            let mut sink = Vec::new();
            loop {
                sink.clear();
                let m = (&mut reader).take(64 * 1024).read_until(b'\n', &mut sink).await?;
                if m == 0 || sink.ends_with(b"\n") {
                    break;
                }
            }
            let _ = out_tx.send(CallError::BodyTooLarge(limits.max_body_bytes).to_response(Value::Null)).await;
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let msg = match super::parse_message(&line, limits.max_body_bytes + 1, limits.max_json_depth) {
            Ok(m) => m,
            Err(e) => {
                let _ = out_tx.send(e.to_response(Value::Null)).await;
                continue;
            }
        };
        let principal = match gw.authz.authenticate(credential.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                let _ = out_tx.send(CallError::Unauthorized(e.to_string()).to_response(msg.get("id").cloned().unwrap_or(Value::Null))).await;
                continue;
            }
        };
        handle(&gw, &principal, &mut mode, msg, &out_tx).await;
    }
    if let Mode::Legacy(s) = &mode
        && let Some(s) = gw.sessions.remove(&s.id) {
            s.close().await;
        }
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

async fn handle(gw: &Arc<Gateway>, principal: &Principal, mode: &mut Mode, msg: Value, out: &mpsc::Sender<Value>) {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let kind = jsonrpc::kind(&msg);
    let enveloped = jsonrpc::params(&msg).and_then(|p| p.get("_meta")).and_then(|m| m.get(era::META_PROTOCOL_VERSION));
    if matches!(mode, Mode::Unset) && kind == Some(Kind::Request) {
        if jsonrpc::method(&msg) == Some("initialize") {
            match gw.initialize(jsonrpc::params(&msg), principal) {
                Ok((session, result)) => {
                    session.set_standalone(out.clone());
                    *mode = Mode::Legacy(session);
                    let _ = out.send(jsonrpc::result(id, result)).await;
                }
                Err(e) => {
                    let _ = out.send(e.to_response(id)).await;
                }
            }
            return;
        }
        if enveloped.is_some() {
            *mode = Mode::Stateless;
        }
    }
    match (&*mode, kind) {
        (Mode::Unset, Some(Kind::Request)) => {
            let e = CallError::InvalidRequest("send `initialize` (or a 2026-07-28 request with its `_meta` envelope) first".into());
            let _ = out.send(e.to_response(id)).await;
        }
        (Mode::Legacy(_), Some(Kind::Request)) if jsonrpc::method(&msg) == Some("initialize") => {
            let _ = out.send(CallError::InvalidRequest("session already initialized".into()).to_response(id)).await;
        }
        (Mode::Legacy(s), Some(Kind::Request)) => {
            let caller = Caller { principal: principal.clone(), era: CallerEra::Legacy(Arc::clone(s)), out: out.clone(), forward_headers: Vec::new() };
            spawn_request(gw, caller, msg, out.clone(), Some(Arc::clone(s)));
        }
        (Mode::Stateless, Some(Kind::Request)) => {
            let meta = jsonrpc::params(&msg).and_then(|p| p.get("_meta"));
            let version = meta.and_then(|m| m.get(era::META_PROTOCOL_VERSION)).and_then(Value::as_str).unwrap_or_default().to_owned();
            if !era::is_modern_version(&version) {
                let _ = out.send(CallError::UnsupportedVersion { requested: version }.to_response(id)).await;
                return;
            }
            let capabilities = meta.and_then(|m| m.get(era::META_CLIENT_CAPABILITIES)).cloned().unwrap_or_else(|| serde_json::json!({}));
            let logs = meta.and_then(|m| m.get(era::META_LOG_LEVEL)).is_some();
            let caller = Caller { principal: principal.clone(), era: CallerEra::Stateless { version, capabilities, logs }, out: out.clone(), forward_headers: Vec::new() };
            spawn_request(gw, caller, msg, out.clone(), None);
        }
        (Mode::Legacy(s), Some(Kind::Notification)) => {
            let caller = Caller { principal: principal.clone(), era: CallerEra::Legacy(Arc::clone(s)), out: out.clone(), forward_headers: Vec::new() };
            gw.handle_notification(&caller, msg).await;
        }
        (Mode::Legacy(s), Some(Kind::Response)) => {
            s.complete(msg);
        }
        _ => {}
    }
}

fn spawn_request(gw: &Arc<Gateway>, caller: Caller, msg: Value, out: mpsc::Sender<Value>, session: Option<Arc<Session>>) {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let gw = Arc::clone(gw);
    spawn_tracked(session.as_ref(), &id, async move {
        let resp = gw.handle_request(&caller, msg).await;
        let _ = out.send(resp).await;
    });
}
