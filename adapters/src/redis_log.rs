//! A bounded append-only log per key in Redis: the shared label store's wire. Each record is
//! an opaque byte string; readers remember how many records they applied and fetch only the
//! rest. Every operation is bounded by a timeout, and a failure is an error the caller must
//! treat as "store unavailable" (the gateway then denies).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

/// Appends unless the log is full; refreshes the TTL. Returns the new length, or -1 when full.
const APPEND: &str = r"
local n = redis.call('LLEN', KEYS[1])
if n >= tonumber(ARGV[2]) then return -1 end
n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n
";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(String),
    #[error("the session's label log is full ({0} results)")]
    Full(usize),
}

/// A connection to one Redis, opened on first use and re-established by the manager after
/// failures.
pub struct RedisLog {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
    append: redis::Script,
}

impl std::fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("RedisLog").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl RedisLog {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, LogError> {
        let client = redis::Client::open(url).map_err(|e| LogError::Redis(redact(&e.to_string(), url)))?;
        Ok(Self { client, conn: OnceCell::new(), timeout, append: redis::Script::new(APPEND) })
    }

    async fn conn(&self) -> Result<ConnectionManager, LogError> {
        let cfg = ConnectionManagerConfig::new().set_connection_timeout(Some(self.timeout)).set_response_timeout(Some(self.timeout));
        let c = self
            .conn
            .get_or_try_init(|| async { ConnectionManager::new_with_config(self.client.clone(), cfg).await.map_err(|e| LogError::Redis(e.to_string())) })
            .await?;
        Ok(c.clone())
    }

    async fn bounded<T>(&self, f: impl std::future::Future<Output = Result<T, LogError>>) -> Result<T, LogError> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| LogError::Timeout(self.timeout))?
    }

    /// Appends `record` to `key` unless it already holds `max` records. Returns the new length.
    pub async fn append(&self, key: &str, record: &[u8], max: usize, ttl: Duration) -> Result<u64, LogError> {
        self.bounded(async {
            let mut c = self.conn().await?;
            let n: i64 = self
                .append
                .key(key)
                .arg(record)
                .arg(max)
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                .invoke_async(&mut c)
                .await
                .map_err(|e| LogError::Redis(e.to_string()))?;
            u64::try_from(n).map_err(|_| LogError::Full(max))
        })
        .await
    }

    /// The log's length and the records from index `from` on.
    pub async fn read_from(&self, key: &str, from: u64) -> Result<(u64, Vec<Vec<u8>>), LogError> {
        self.bounded(async {
            let mut c = self.conn().await?;
            let start = i64::try_from(from).unwrap_or(i64::MAX);
            let (len, records): (u64, Vec<Vec<u8>>) =
                redis::pipe().cmd("LLEN").arg(key).cmd("LRANGE").arg(key).arg(start).arg(-1).query_async(&mut c).await.map_err(|e| LogError::Redis(e.to_string()))?;
            Ok((len, records))
        })
        .await
    }
}

/// Removes the URL (which may carry a password) from an error message.
fn redact(msg: &str, url: &str) -> String {
    msg.replace(url, "<redis url>")
}
