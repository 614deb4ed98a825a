//! Client sessions (legacy era) and the way back to a client.
//!
//! A legacy client opens a session with `initialize`; the gateway keeps what it declared (protocol
//! version, capabilities), its standalone stream (the GET stream, or stdout on stdio), the
//! server→client requests awaiting its answers, its in-flight calls (for cancellation) and its
//! resource subscriptions. A 2026-07-28 client has no session: each request stands alone.
//!
//! The session id is 128 random bits from the OS CSPRNG. It routes messages; it never
//! authenticates anyone.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use clawgate_adapters::Upstream;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::error::CallError;

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is a single map/set operation: a poisoned lock still guards
    // consistent data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A new session id: 128 bits from the OS CSPRNG, hex-encoded (visible ASCII, as MCP requires).
pub fn new_session_id() -> Result<String, CallError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|_| CallError::InvalidRequest("no entropy for a session id".into()))?;
    Ok(hex::encode(b))
}

pub struct Session {
    pub id: String,
    pub protocol_version: String,
    pub client_capabilities: Value,
    pub client_info: Value,
    created: Instant,
    last_seen_ms: AtomicU64,
    /// Messages not tied to a request (list_changed, resource updates): the GET stream or stdout.
    standalone: Mutex<Option<mpsc::Sender<Value>>>,
    /// Server→client requests we forwarded, by the id we gave them.
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    next_request: AtomicU64,
    /// The client's in-flight requests, by their JSON id text, for `notifications/cancelled`.
    inflight: Mutex<HashMap<String, Canceller>>,
    pub subscriptions: Mutex<HashSet<String>>,
    /// The level from the client's last `logging/setLevel`.
    pub log_level: Mutex<Option<String>>,
    /// Upstreams with `per_session = true`, started for this session on first use.
    pub own_upstreams: Mutex<HashMap<usize, Upstream>>,
    /// The credential the session was opened with ([`crate::authz::Principal::credential`]).
    /// Every later request on it must present the same one.
    pub credential: [u8; 32],
}

impl Session {
    pub fn new(id: String, protocol_version: String, client_capabilities: Value, client_info: Value, credential: [u8; 32]) -> Self {
        Self {
            id,
            protocol_version,
            client_capabilities,
            client_info,
            created: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
            standalone: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            inflight: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashSet::new()),
            log_level: Mutex::new(None),
            own_upstreams: Mutex::new(HashMap::new()),
            credential,
        }
    }

    pub fn touch(&self) {
        let ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.created.elapsed().saturating_sub(Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed)))
    }

    /// Did the client declare this capability (`sampling`, `elicitation`, `roots`)?
    pub fn can(&self, capability: &str) -> bool {
        self.client_capabilities.get(capability).is_some()
    }

    /// Installs the standalone stream, replacing (and so closing) any previous one.
    pub fn set_standalone(&self, tx: mpsc::Sender<Value>) {
        *lock(&self.standalone) = Some(tx);
    }

    /// Sends a message on the standalone stream; dropped when there is none (as MCP allows).
    pub fn send_standalone(&self, msg: Value) {
        let tx = lock(&self.standalone).clone();
        if let Some(tx) = tx
            && tx.try_send(msg).is_err() {
                tracing::debug!(session = %self.id, "standalone stream full or closed; message dropped");
            }
    }

    pub fn has_standalone(&self) -> bool {
        lock(&self.standalone).as_ref().is_some_and(|t| !t.is_closed())
    }

    /// Forwards a server→client request over `out`, and waits for the client's answer.
    /// The request gets a gateway id (`cg-<n>`); the answer comes back with it.
    pub async fn ask_client(&self, mut request: Value, out: &mpsc::Sender<Value>, timeout: Duration) -> Result<Value, CallError> {
        let id = format!("cg-{}", self.next_request.fetch_add(1, Ordering::Relaxed));
        if let Some(o) = request.as_object_mut() {
            o.insert("id".into(), id.clone().into());
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        if out.send(request).await.is_err() {
            lock(&self.pending).remove(&id);
            return Err(CallError::ClientCannot("server-initiated".into()));
        }
        let res = tokio::time::timeout(timeout, rx).await;
        lock(&self.pending).remove(&id);
        match res {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(CallError::ShuttingDown),
            Err(_) => Err(CallError::ClientTimeout(timeout)),
        }
    }

    /// Delivers a client's answer to a request we forwarded. `false` if nobody waits for it.
    pub fn complete(&self, response: Value) -> bool {
        let Some(id) = response.get("id").and_then(Value::as_str) else { return false };
        match lock(&self.pending).remove(id) {
            Some(tx) => tx.send(response).is_ok(),
            None => false,
        }
    }

    fn track(self: &Arc<Self>, client_id: &Value, handle: Canceller) -> Untrack {
        let key = client_id.to_string();
        lock(&self.inflight).insert(key.clone(), handle);
        Untrack { session: Arc::clone(self), key }
    }

    /// Aborts an in-flight request (the client sent `notifications/cancelled`). Dropping the
    /// call's future cancels it upstream too.
    pub fn cancel(&self, client_id: &Value) -> bool {
        match lock(&self.inflight).remove(&client_id.to_string()) {
            Some(h) => {
                h.cancel();
                true
            }
            None => false,
        }
    }

    pub async fn close(&self) {
        for (_, h) in lock(&self.inflight).drain() {
            h.cancel();
        }
        lock(&self.pending).clear();
        *lock(&self.standalone) = None;
        let ups: Vec<Upstream> = lock(&self.own_upstreams).drain().map(|(_, u)| u).collect();
        for u in ups {
            u.shutdown().await;
        }
    }
}

/// How an in-flight request is cancelled: its task aborted, or its inline future told to stop
/// (which drops the call, and so cancels it upstream too).
enum Canceller {
    Abort(AbortHandle),
    Signal(oneshot::Sender<()>),
}

impl Canceller {
    fn cancel(self) {
        match self {
            Self::Abort(h) => h.abort(),
            Self::Signal(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

/// Removes an in-flight entry when dropped: the call finished, or was aborted.
pub struct Untrack {
    session: Arc<Session>,
    key: String,
}

impl Drop for Untrack {
    fn drop(&mut self) {
        lock(&self.session.inflight).remove(&self.key);
    }
}

/// Spawns a client request's task, registered under the client's request id so that
/// `notifications/cancelled` can abort it. The registration lives inside the task and is
/// removed however the task ends (done, aborted, or the client went away).
pub fn spawn_tracked<F>(session: Option<&Arc<Session>>, client_id: &Value, fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (go_tx, go_rx) = oneshot::channel::<Option<Untrack>>();
    let task = tokio::spawn(async move {
        let _untrack = go_rx.await.ok().flatten();
        fut.await
    });
    let guard = session.map(|s| s.track(client_id, Canceller::Abort(task.abort_handle())));
    // If the task is already gone, the guard comes back here and is dropped: no stale entry.
    let _ = go_tx.send(guard);
    task
}

/// A client request's future, run inline by the caller (no task of its own: on the HTTP front
/// the response future drives it, and dropping that future drops the call), registered under
/// the client's request id so that `notifications/cancelled` ends it. Resolves to `None` if it
/// was cancelled.
pub fn tracked<F>(session: Option<&Arc<Session>>, client_id: &Value, fut: F) -> impl std::future::Future<Output = Option<F::Output>> + Send + 'static
where
    F: std::future::Future + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<()>();
    let guard = session.map(|s| s.track(client_id, Canceller::Signal(tx)));
    async move {
        let _untrack = guard;
        // Only a sent signal cancels: a sender dropped unsent (no session to register with, or
        // an entry replaced by a request reusing the id) leaves the call running.
        tokio::select! {
            biased;
            out = fut => Some(out),
            Ok(()) = rx => None,
        }
    }
}

/// All live sessions, bounded in number and swept when idle.
pub struct Sessions {
    map: RwLock<HashMap<String, Arc<Session>>>,
    max: usize,
    idle_timeout: Duration,
}

impl Sessions {
    pub fn new(max: usize, idle_timeout: Duration) -> Self {
        Self { map: RwLock::new(HashMap::new()), max, idle_timeout }
    }

    pub fn insert(&self, s: Arc<Session>) -> Result<(), CallError> {
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.max {
            return Err(CallError::TooManySessions);
        }
        map.insert(s.id.clone(), s);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).cloned();
        if let Some(s) = &s {
            s.touch();
        }
        s
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id)
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes sessions idle longer than the timeout; returns them so the caller can close them.
    pub fn sweep(&self) -> Vec<Arc<Session>> {
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let idle: Vec<String> = map.iter().filter(|(_, s)| s.idle_for() > self.idle_timeout).map(|(k, _)| k.clone()).collect();
        idle.iter().filter_map(|k| map.remove(k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_128_bit_hex_and_distinct() {
        let a = new_session_id().unwrap();
        let b = new_session_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn session_limit_is_enforced() {
        let s = Sessions::new(1, Duration::from_secs(60));
        s.insert(Arc::new(Session::new("a".into(), "v".into(), Value::Null, Value::Null, [0; 32]))).unwrap();
        assert!(matches!(s.insert(Arc::new(Session::new("b".into(), "v".into(), Value::Null, Value::Null, [0; 32]))), Err(CallError::TooManySessions)));
    }
}
