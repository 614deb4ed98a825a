//! The label stage: per-session label state (in memory, or shared through Redis), argument
//! provenance before the decision, and result labelling after the call.
//!
//! Each session scope has a local mirror ([`SessionLabels`]). With Redis, the mirror replays
//! the scope's shared log of [`ResultBatch`]es before every call (fetching only what it has not
//! applied), so replicas on one Redis decide on the same labels. Any store failure or timeout
//! is an error: the caller denies the call, or withholds the result. Never allows.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clawgate_adapters::redis_log::{LogError, RedisLog};
use clawgate_policies::labels::{ArgRoles, IntentValues, LabelInput, LabelView, ResultBatch, SessionLabels, label_result};
use serde_json::Value;

use crate::config::{LabelsConfig, glob};

/// The label store failed: the call is denied (or its result withheld). `Display` gives the
/// whole story for logs and the audit; the client reads only [`StoreError::public`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("label store unavailable: {detail}")]
pub struct StoreError {
    pub fault: StoreFault,
    /// Redis's or the OS's own words; never shown to the client.
    pub detail: String,
}

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    Unreachable,
    Timeout,
    LogFull,
    ScopesFull,
    Unreadable,
}

impl StoreError {
    fn new(fault: StoreFault, detail: impl Into<String>) -> Self {
        Self { fault, detail: detail.into() }
    }

    /// What the client may read: the kind of failure, never a store's or the OS's error text
    /// (which can name hosts, addresses or keys).
    pub fn public(&self) -> &'static str {
        match self.fault {
            StoreFault::Unreachable => "the shared label store could not be reached",
            StoreFault::Timeout => "the shared label store did not answer in time",
            StoreFault::LogFull => "this session's label log is full",
            StoreFault::ScopesFull => "every label scope holds labels; a new session can trace calls once others close or their labels expire",
            StoreFault::Unreadable => "the label store holds a record it cannot read",
        }
    }
}

impl From<LogError> for StoreError {
    fn from(e: LogError) -> Self {
        let fault = match e {
            LogError::Timeout(_) => StoreFault::Timeout,
            LogError::Redis(_) => StoreFault::Unreachable,
            LogError::Full(_) => StoreFault::LogFull,
        };
        StoreError::new(fault, e.to_string())
    }
}

struct Mirror {
    labels: SessionLabels,
    /// Records of the shared log already applied.
    applied: u64,
    last_used: Instant,
}

/// Scopes kept in memory at once; the least recently used leave first.
const MAX_SCOPES: usize = 10_000;

pub struct LabelStore {
    cfg: LabelsConfig,
    mirrors: Mutex<HashMap<String, Arc<Mutex<Mirror>>>>,
    redis: Option<RedisLog>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LabelStore {
    pub fn new(cfg: &LabelsConfig) -> Result<Self, StoreError> {
        let redis = match &cfg.redis_url {
            Some(url) => Some(RedisLog::new(url, cfg.timeout)?),
            None => None,
        };
        Ok(Self { cfg: cfg.clone(), mirrors: Mutex::new(HashMap::new()), redis })
    }

    /// `[labels] enabled`: whether calls are traced and results recorded at all.
    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    pub fn shared(&self) -> bool {
        self.redis.is_some()
    }

    fn key(scope: &str) -> String {
        format!("clawgate:labels:{scope}")
    }

    /// The scope's mirror, made on first use. At [`MAX_SCOPES`] the least recently used scope
    /// that can be dropped without losing anything goes: with a shared store any (it is
    /// replayed on next use), in memory only one that recorded no result, since its labels
    /// exist nowhere else and its session's later calls would pass as untainted. With none,
    /// the new scope is refused and its call denied (fail closed).
    fn mirror(&self, scope: &str) -> Result<Arc<Mutex<Mirror>>, StoreError> {
        let mut m = lock(&self.mirrors);
        if let Some(x) = m.get(scope) {
            return Ok(Arc::clone(x));
        }
        if m.len() >= MAX_SCOPES {
            let shared = self.redis.is_some();
            let droppable = m
                .iter()
                .filter_map(|(k, v)| {
                    let v = lock(v);
                    (shared || v.labels.result_count() == 0).then(|| (v.last_used, k.clone()))
                })
                .min();
            match droppable {
                Some((_, k)) => {
                    m.remove(&k);
                }
                None => return Err(StoreError::new(StoreFault::ScopesFull, format!("all {MAX_SCOPES} label scopes hold labels; a new session can trace calls once others close or their labels expire"))),
            }
        }
        let x = Arc::new(Mutex::new(Mirror { labels: SessionLabels::new(self.cfg.max_fields, self.cfg.min_match_len), applied: 0, last_used: Instant::now() }));
        m.insert(scope.to_owned(), Arc::clone(&x));
        Ok(x)
    }

    /// Forgets a closed session's scope: its id is never used again, so its labels can go at
    /// once instead of holding a slot until the TTL. (A shared log expires by its own TTL.)
    pub fn forget(&self, scope: &str) {
        lock(&self.mirrors).remove(scope);
    }

    /// Brings the scope's mirror up to date with the shared log (a no-op in memory).
    async fn sync(&self, scope: &str) -> Result<Arc<Mutex<Mirror>>, StoreError> {
        let mirror = self.mirror(scope)?;
        let Some(redis) = &self.redis else { return Ok(mirror) };
        let from = lock(&mirror).applied;
        let key = Self::key(scope);
        let (len, records) = redis.read_from(&key, from).await?;
        let (records, reset) = if len < from {
            // The store lost this log (flushed, restarted without persistence). Keep what this
            // replica knows and replay whatever the store has now.
            tracing::warn!(target: "clawgate::labels", scope, "the shared label log is shorter than what this replica applied; replaying it");
            let (_, records) = redis.read_from(&key, 0).await?;
            (records, true)
        } else {
            (records, false)
        };
        let start = if reset { 0 } else { from };
        let mut m = lock(&mirror);
        if reset {
            m.applied = 0;
        }
        for (i, r) in records.iter().enumerate() {
            let idx = start + i as u64;
            // Another task may have applied this one meanwhile.
            if idx < m.applied {
                continue;
            }
            let batch = serde_json::from_slice::<ResultBatch>(r).map_err(|e| StoreError::new(StoreFault::Unreadable, format!("a record in the shared label log is unreadable: {e}")))?;
            m.labels.apply(&batch);
            m.applied = idx + 1;
        }
        m.last_used = Instant::now();
        drop(m);
        Ok(mirror)
    }

    /// Labels of a call's arguments, joined per role, for the decision.
    ///
    /// A shared log already holding `max_results` fails here, before the call runs: its result
    /// could not be recorded and would be withheld after the upstream had acted on it. (Calls
    /// racing for the last place can still fill it; theirs are withheld.)
    pub async fn trace(&self, scope: &str, args: Option<&Value>, intent: &IntentValues, roles: &ArgRoles) -> Result<LabelView, StoreError> {
        let mirror = self.sync(scope).await?;
        let m = lock(&mirror);
        if self.redis.is_some() && m.applied >= self.cfg.max_results as u64 {
            return Err(LogError::Full(self.cfg.max_results).into());
        }
        let traced = m.labels.trace_args(args, intent);
        Ok(LabelView::build(m.labels.session_label().clone(), traced, args, roles, self.cfg.strict))
    }

    /// Records a result: labels it and appends it to the scope (shared log first, then the
    /// mirror). An error means the result must not reach the client.
    pub async fn record(&self, scope: &str, origin: &str, tool: &str, declared: bool, result: &Value) -> Result<(), StoreError> {
        let mirror = self.mirror(scope)?;
        let seq = lock(&mirror).labels.result_count() + 1;
        let rule = self.rule(tool).and_then(|t| t.output.as_ref());
        let batch = label_result(&LabelInput { origin: format!("{origin}#{seq}"), rule, declared }, result);
        match &self.redis {
            None => {
                let mut m = lock(&mirror);
                m.labels.apply(&batch);
                m.last_used = Instant::now();
            }
            Some(redis) => {
                let bytes = serde_json::to_vec(&batch).map_err(|e| StoreError::new(StoreFault::Unreadable, e.to_string()))?;
                let len = redis.append(&Self::key(scope), &bytes, self.cfg.max_results, self.cfg.ttl).await?;
                let mut m = lock(&mirror);
                if m.applied + 1 == len {
                    m.labels.apply(&batch);
                    m.applied = len;
                }
                // Otherwise other records came first: the next sync applies them in order.
                m.last_used = Instant::now();
            }
        }
        Ok(())
    }

    /// The first `[[labels.tool]]` entry matching `tool`.
    pub fn rule(&self, tool: &str) -> Option<&crate::config::LabelTool> {
        self.cfg.tools.iter().find(|t| glob(&t.name, tool))
    }

    /// The argument roles of `tool` (config, else by name over `arg_names`).
    pub fn roles<'a>(&self, tool: &str, arg_names: impl IntoIterator<Item = &'a str> + Clone) -> ArgRoles {
        let by_name = ArgRoles::by_name(arg_names);
        match self.rule(tool) {
            Some(t) => ArgRoles {
                control: t.control.as_ref().map_or(by_name.control, |c| c.iter().cloned().collect::<BTreeSet<_>>()),
                recipients: t.recipients.as_ref().map_or(by_name.recipients, |c| c.iter().cloned().collect::<BTreeSet<_>>()),
            },
            None => by_name,
        }
    }

    /// A scope's label state for operators (synced with the shared store first).
    pub async fn report(&self, scope: &str) -> Result<Option<Value>, StoreError> {
        if self.redis.is_none() && !lock(&self.mirrors).contains_key(scope) {
            return Ok(None);
        }
        let mirror = self.sync(scope).await?;
        let m = lock(&mirror);
        let mut v = m.labels.report(50);
        if let Some(o) = v.as_object_mut() {
            o.insert("scope".into(), scope.into());
            o.insert("store".into(), if self.redis.is_some() { "redis" } else { "memory" }.into());
        }
        Ok(Some(v))
    }

    /// The scopes this process holds.
    pub fn scopes(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.mirrors).keys().cloned().collect();
        v.sort();
        v
    }

    /// Forgets scopes idle for longer than the TTL (the shared log expires by itself).
    pub fn sweep(&self) {
        let ttl = self.cfg.ttl;
        lock(&self.mirrors).retain(|_, m| lock(m).last_used.elapsed() < ttl);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;
    use clawgate_policies::labels::{ArgRoles, IntentValues};
    use serde_json::json;

    /// In memory a scope's labels exist nowhere else: a full table never drops one that holds
    /// any (that would let its session's next call pass as untainted). It refuses the new scope
    /// instead, drops only scopes that recorded nothing, and a closed session frees its slot.
    #[tokio::test]
    async fn a_full_table_never_drops_labels_it_cannot_get_back() {
        let store = LabelStore::new(&LabelsConfig::default()).unwrap();
        let result = json!({"structuredContent": {"memo": "private words only the first sessions saw"}});
        for i in 0..MAX_SCOPES {
            store.record(&format!("s:{i}"), "up/read", "up__read", false, &result).await.unwrap();
        }
        let none = Vec::<String>::new();
        let intent = IntentValues::new(none.iter());
        let trace = |scope: &'static str| {
            let store = &store;
            let intent = &intent;
            async move { store.trace(scope, Some(&json!({"body": "hello"})), intent, &ArgRoles::default()).await }
        };
        assert!(trace("s:new").await.is_err(), "a new scope is refused, so its call is denied");
        assert_eq!(store.scopes().len(), MAX_SCOPES);
        assert_eq!(store.report("s:0").await.unwrap().unwrap()["results"], 1, "the oldest kept its labels");
        // A closed session's scope frees its slot.
        store.forget("s:0");
        assert!(trace("s:new").await.is_ok());
        // The table is full again; the one scope that recorded nothing is the one that goes.
        assert!(trace("s:other").await.is_ok());
        let scopes = store.scopes();
        assert!(!scopes.contains(&"s:new".to_owned()) && scopes.contains(&"s:other".to_owned()) && scopes.contains(&"s:1".to_owned()));
    }
}
