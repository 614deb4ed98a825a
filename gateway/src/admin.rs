//! The admin API, for operators: off unless `[admin] http` is set, bound to loopback unless a
//! bearer token is configured (`[admin] token_env`), never on the MCP listener. Without a token
//! it answers only requests whose `Host` (and browser `Origin`, if any) is a loopback name, so a
//! web page cannot reach it by DNS rebinding.
//!
//! - `GET /health`: `{"status": "ok" | "degraded", "audit": {...}}`; HTTP 503 while calls are
//!   being refused because the audit log cannot be written (`[audit] on_failure = "deny"`).
//! - `GET /quarantine`: every withheld definition, why, and for changed ones the changed paths.
//! - `GET /labels`: the label scopes this process holds (`s:<session>`, `c:<credential>`).
//! - `GET /labels/{scope}`: one scope's label state (synced with the shared store).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use crate::pipeline::Gateway;

/// Most connections the admin interface holds open at once.
const ADMIN_CONNECTIONS: usize = 64;

struct App {
    gw: Arc<Gateway>,
    token: Option<String>,
}

pub fn router(gw: Arc<Gateway>) -> Router {
    let token = gw.config().admin.token.clone();
    Router::new()
        .route("/health", get(health))
        .route("/quarantine", get(quarantine))
        .route("/labels", get(label_scopes))
        .route("/labels/{scope}", get(label_scope))
        .with_state(Arc::new(App { gw, token }))
}

pub async fn serve(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The same accept loop as the MCP endpoint's, with its client read timeout, and room for an
    // operator's tools rather than for every client.
    let read_timeout = gw.config().limits.client_read_timeout;
    crate::front::http::serve_router(router(gw), listener, read_timeout, ADMIN_CONNECTIONS, shutdown).await
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a request is refused, if it is. With a token, the bearer token must match. Without
/// one the API listens on loopback only, where a web page the operator visits could still
/// reach it by rebinding its own name to 127.0.0.1 (DNS rebinding): so the `Host` must be a
/// loopback name and a browser's `Origin`, when sent, loopback too.
fn refuse(app: &App, h: &HeaderMap) -> Option<Response> {
    match &app.token {
        Some(token) => {
            let ok = h
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| same(t.as_bytes(), token.as_bytes()));
            (!ok).then(|| json(StatusCode::UNAUTHORIZED, &json!({"error": "missing or wrong bearer token"})))
        }
        None => {
            let header = |name| h.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
            let host_ok = header(header::HOST).is_none_or(|host| crate::front::http::is_loopback_name(crate::front::http::strip_port(host)));
            let origin_ok = header(header::ORIGIN).is_none_or(crate::front::http::is_loopback_origin);
            (!(host_ok && origin_ok)).then(|| json(StatusCode::FORBIDDEN, &json!({"error": "without [admin] token_env the admin API answers only requests addressed to a loopback name (Host and Origin)"})))
        }
    }
}

fn json(status: StatusCode, v: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn health(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Some(refused) = refuse(&app, &h) {
        return refused;
    }
    let audit = app.gw.audit.status();
    let on_failure = app.gw.config().audit.on_failure;
    // A load balancer should send calls elsewhere while this gateway refuses them all.
    let refusing = !audit.writable && on_failure == crate::config::AuditOnFailure::Deny;
    let body = json!({
        "status": if audit.writable { "ok" } else { "degraded" },
        "audit": {
            "file": audit.file,
            "writable": audit.writable,
            "records_lost": audit.lost,
            "on_failure": on_failure.as_str(),
        },
    });
    json(if refusing { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }, &body)
}

async fn quarantine(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Some(refused) = refuse(&app, &h) {
        return refused;
    }
    app.gw.catalog().await;
    json(StatusCode::OK, &app.gw.quarantine_report())
}

async fn label_scopes(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if let Some(refused) = refuse(&app, &h) {
        return refused;
    }
    json(StatusCode::OK, &json!({"scopes": app.gw.labels.scopes(), "shared": app.gw.labels.shared()}))
}

async fn label_scope(State(app): State<Arc<App>>, h: HeaderMap, axum::extract::Path(scope): axum::extract::Path<String>) -> Response {
    if let Some(refused) = refuse(&app, &h) {
        return refused;
    }
    match app.gw.labels.report(&scope).await {
        Ok(Some(v)) => json(StatusCode::OK, &v),
        Ok(None) => json(StatusCode::NOT_FOUND, &json!({"error": format!("no labels for scope {scope}")})),
        Err(e) => json(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": e.to_string()})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
