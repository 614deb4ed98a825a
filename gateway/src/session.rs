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
    let task = tokio::spawn(Gated { go: Some(go_rx), untrack: None, fut });
    let guard = session.map(|s| s.track(client_id, Canceller::Abort(task.abort_handle())));
    // If the task is already gone, the guard comes back here and is dropped: no stale entry.
    let _ = go_tx.send(guard);
    task
}

/// A client request's future, run inline by the caller (no task of its own: on the HTTP front
/// the response future drives it, and dropping that future drops the call), registered under
/// the client's request id so that `notifications/cancelled` ends it. Resolves to `None` if it
/// was cancelled.
pub fn tracked<F>(session: Option<&Arc<Session>>, client_id: &Value, fut: F) -> Tracked<F>
where
    F: std::future::Future + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<()>();
    let untrack = session.map(|s| s.track(client_id, Canceller::Signal(tx)));
    Tracked { cancel: Some(rx), _untrack: untrack, fut }
}

// These two are written out as structs rather than `async` blocks: an `async` block that
// holds a future and then awaits it (or hands it to `select!`) keeps two copies of it, and the
// call pipeline's future is several kilobytes, copied whole into its box on every request.
pin_project_lite::pin_project! {
    /// The future [`tracked`] returns.
    pub struct Tracked<F> {
        // Taken once it resolves: a sender dropped unsent (no session to register with, or an
        // entry replaced by a request reusing the id) leaves the call running. Only a sent
        // signal cancels.
        cancel: Option<oneshot::Receiver<()>>,
        // Removes the registration when the call ends, however it ends.
        _untrack: Option<Untrack>,
        #[pin]
        fut: F,
    }
}

impl<F: std::future::Future> std::future::Future for Tracked<F> {
    type Output = Option<F::Output>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.project();
        // The call first: an answer ready in the same poll as a cancellation still goes out.
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        if let Some(rx) = this.cancel.as_mut()
            && let Poll::Ready(signal) = std::pin::Pin::new(rx).poll(cx)
        {
            *this.cancel = None;
            if signal.is_ok() {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    }
}

pin_project_lite::pin_project! {
    /// [`spawn_tracked`]'s task: waits for its registration (made once the task exists, since
    /// it holds the task's abort handle), then runs the call with the registration held.
    struct Gated<F> {
        go: Option<oneshot::Receiver<Option<Untrack>>>,
        untrack: Option<Untrack>,
        #[pin]
        fut: F,
    }
}

impl<F: std::future::Future> std::future::Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.project();
        if let Some(go) = this.go.as_mut() {
            match std::pin::Pin::new(go).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(guard) => {
                    *this.untrack = guard.ok().flatten();
                    *this.go = None;
                }
            }
        }
        this.fut.poll(cx)
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

    fn session() -> Arc<Session> {
        Arc::new(Session::new("s".into(), "v".into(), Value::Null, Value::Null, [0; 32]))
    }

    /// A call whose state holds 4 KB across an await, as the pipeline's does.
    async fn large_state() -> u8 {
        let buf = std::hint::black_box([7u8; 4096]);
        tokio::task::yield_now().await;
        buf[4095]
    }

    #[test]
    fn tracking_a_call_keeps_one_copy_of_its_future() {
        let inner = std::mem::size_of_val(&large_state());
        assert!(inner >= 4096, "{inner}");
        // An `async` block holding the call and selecting on it would take two copies (8 KB
        // here), all of it copied into the call's box on every request.
        let t = tracked(Some(&session()), &Value::from(1), large_state());
        assert!(std::mem::size_of_val(&t) <= inner + 64, "tracked: {} bytes for a {inner}-byte call", std::mem::size_of_val(&t));
    }

    #[tokio::test]
    async fn a_tracked_call_ends_when_cancelled_and_otherwise_runs_to_its_end() {
        let s = session();
        // Cancelled: a call that would never finish resolves to None, and is no longer listed.
        let h = tokio::spawn(tracked(Some(&s), &Value::from(1), std::future::pending::<()>()));
        assert!(s.cancel(&Value::from(1)));
        assert_eq!(h.await.unwrap(), None);
        assert!(lock(&s.inflight).is_empty());
        // A second request reusing the id replaces the first one's entry, which drops its
        // signal unsent: the first call is not cancelled by that, and finishes.
        let (go, wait) = oneshot::channel::<u8>();
        let first = tokio::spawn(tracked(Some(&s), &Value::from(2), async move { wait.await.unwrap_or(0) }));
        tokio::task::yield_now().await;
        let second = tracked(Some(&s), &Value::from(2), std::future::pending::<u8>());
        tokio::task::yield_now().await;
        go.send(5).unwrap();
        assert_eq!(first.await.unwrap(), Some(5));
        drop(second);
        // An answer ready in the same poll as the cancellation still counts.
        let t = tracked(Some(&s), &Value::from(3), async { 9 });
        assert!(s.cancel(&Value::from(3)));
        assert_eq!(t.await, Some(9));
        // Without a session nothing is listed, and the call runs.
        assert_eq!(tracked(None, &Value::from(4), large_state()).await, Some(7));
        assert!(lock(&s.inflight).is_empty());
    }

    #[tokio::test]
    async fn a_spawned_tracked_call_is_aborted_when_cancelled_and_unlisted_when_done() {
        let s = session();
        let h = spawn_tracked(Some(&s), &Value::from(1), std::future::pending::<()>());
        assert!(s.cancel(&Value::from(1)));
        assert!(h.await.unwrap_err().is_cancelled());
        let h = spawn_tracked(Some(&s), &Value::from(2), large_state());
        assert!(lock(&s.inflight).contains_key("2"));
        assert_eq!(h.await.unwrap(), 7);
        assert!(lock(&s.inflight).is_empty());
    }
}
