//! Rate limits: a GCRA limiter (generic cell rate algorithm) keyed by string, in memory,
//! bounded, sharded. Pure: the caller passes the time in; nothing here reads a clock.
//!
//! GCRA keeps one number per key, the *theoretical arrival time* (TAT): the time at which the
//! key's bucket would be empty again. A [`Quota`] of `calls` per `per` with `burst` has an
//! emission interval `T = per / calls` (rounded up to the nanosecond, so never faster than
//! configured) and a tolerance `τ = T × burst`. A call at `now` is allowed when
//! `max(TAT, now) + T − τ ≤ now`, and then the TAT becomes `max(TAT, now) + T`; a refused
//! call changes nothing and is told how long to wait. So `burst` calls may come at once, and
//! after that one call every `T`.
//!
//! A key whose TAT is in the past is indistinguishable from a key never seen, so the table only
//! has to remember keys with a TAT in the future. [`Limiter`] holds at most `max_keys` of them,
//! split over 16 shards (each a `Mutex<HashMap>`, chosen by a randomly seeded hash of the key)
//! so that concurrent checks on different keys rarely meet. A shard that is full drops its
//! expired keys; if none have expired, a new key is refused (fail closed) rather than the
//! table growing.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Shards per limiter (fewer when `max_keys` is smaller).
const SHARDS: usize = 16;

/// The default bound on the keys one [`Limiter`] remembers.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// `calls` per `per`, with up to `burst` at once. Built only through [`Quota::new`], so every
/// `Quota` is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    calls: u64,
    per: Duration,
    burst: u64,
    /// `T`, in nanoseconds (at least 1).
    interval: u64,
    /// `τ = T × burst`, in nanoseconds.
    tolerance: u64,
}

/// Why a quota or limiter cannot be built. [`QuotaError::key`] names the parameter at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("must be greater than zero")]
    ZeroCalls,
    #[error("must be greater than zero")]
    ZeroPer,
    #[error("must be greater than zero")]
    ZeroBurst,
    #[error("more than one call per nanosecond cannot be limited")]
    TooFine,
    #[error("the quota is too long to represent (over 500 years to refill)")]
    TooLong,
    #[error("must be greater than zero")]
    ZeroMaxKeys,
}

impl QuotaError {
    /// The parameter at fault: `calls`, `per`, `burst` or `max_keys`.
    pub fn key(self) -> &'static str {
        match self {
            QuotaError::ZeroCalls | QuotaError::TooFine => "calls",
            QuotaError::ZeroPer | QuotaError::TooLong => "per",
            QuotaError::ZeroBurst => "burst",
            QuotaError::ZeroMaxKeys => "max_keys",
        }
    }
}

impl Quota {
    /// `calls` per `per`, up to `burst` at once (`None`: `burst = calls`).
    pub fn new(calls: u64, per: Duration, burst: Option<u64>) -> Result<Self, QuotaError> {
        if calls == 0 {
            return Err(QuotaError::ZeroCalls);
        }
        if per.is_zero() {
            return Err(QuotaError::ZeroPer);
        }
        let burst = burst.unwrap_or(calls);
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        let per_ns = per.as_nanos();
        let interval = per_ns.div_ceil(u128::from(calls));
        if per_ns < u128::from(calls) {
            return Err(QuotaError::TooFine);
        }
        let interval = u64::try_from(interval).map_err(|_| QuotaError::TooLong)?;
        let tolerance = interval.checked_mul(burst).ok_or(QuotaError::TooLong)?;
        // Keep every TAT far from u64::MAX nanoseconds (584 years) so sums cannot saturate in
        // practice; a limit that refills over centuries is a config mistake anyway.
        if tolerance > u64::MAX / 16 {
            return Err(QuotaError::TooLong);
        }
        Ok(Self { calls, per, burst, interval, tolerance })
    }

    pub fn calls(&self) -> u64 {
        self.calls
    }

    pub fn per(&self) -> Duration {
        self.per
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }
}

/// A refused call: how long until the same call would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    pub after: Duration,
    /// The key is new and the table holds `max_keys` keys none of which has expired: refused
    /// so that memory stays bounded. `after` is when the first of them expires.
    pub table_full: bool,
}

/// A GCRA limiter over string keys (see the module docs).
#[derive(Debug)]
pub struct Limiter {
    quota: Quota,
    max_keys: usize,
    shards: Box<[Shard]>,
    /// Picks the shard. Separate from the shards' own hashers, so that the keys of one shard
    /// do not all share the low bits their table indexes by.
    pick: ahash::RandomState,
    /// Times are kept as nanoseconds since the first `now` this limiter saw.
    epoch: OnceLock<Instant>,
}

/// One shard, on its own cache lines so that neighbouring locks do not share one.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<Table>);

#[derive(Debug)]
struct Table {
    /// Key → TAT (nanoseconds since the epoch).
    tat: HashMap<Box<str>, u64, ahash::RandomState>,
    /// Most keys this shard holds.
    cap: usize,
    /// No TAT in the table is earlier than this (a lower bound; `u64::MAX` when empty), so a
    /// full shard scans for expired keys only when one may exist.
    earliest: u64,
}

impl Limiter {
    /// A limiter for `quota` remembering at most `max_keys` keys.
    pub fn new(quota: Quota, max_keys: usize) -> Result<Self, QuotaError> {
        if max_keys == 0 {
            return Err(QuotaError::ZeroMaxKeys);
        }
        // Every shard holds at least one key and the caps sum to exactly `max_keys`.
        let n = SHARDS.min(max_keys);
        let shards = (0..n)
            .map(|i| {
                let cap = max_keys / n + usize::from(i < max_keys % n);
                Shard(Mutex::new(Table { tat: HashMap::with_hasher(ahash::RandomState::new()), cap, earliest: u64::MAX }))
            })
            .collect();
        Ok(Self { quota, max_keys, shards, pick: ahash::RandomState::new(), epoch: OnceLock::new() })
    }

    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// One call for `key` at `now`: allowed (and counted), or refused (and not counted).
    pub fn check(&self, key: &str, now: Instant) -> Result<(), RetryAfter> {
        let now = self.nanos(now);
        let q = &self.quota;
        let mut table = self.lock(key);
        let t = &mut *table;
        let entry = t.tat.get_mut(key);
        let start = entry.as_deref().map_or(now, |&tat| tat.max(now));
        let next = start.saturating_add(q.interval);
        let allow_at = next.saturating_sub(q.tolerance);
        if allow_at > now {
            return Err(RetryAfter { after: Duration::from_nanos(allow_at - now), table_full: false });
        }
        match entry {
            Some(tat) => *tat = next,
            None => t.insert(key, next, now)?,
        }
        Ok(())
    }

    /// Gives back one call that [`Limiter::check`] allowed for `key` (when a later limit
    /// refused the same call, so that it counts against neither).
    pub fn refund(&self, key: &str) {
        let interval = self.quota.interval;
        if let Some(tat) = self.lock(key).tat.get_mut(key) {
            *tat = tat.saturating_sub(interval);
        }
    }

    /// How many keys are remembered now (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).tat.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn nanos(&self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_init(|| now);
        u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self, key: &str) -> MutexGuard<'_, Table> {
        // `hash % len` is below `len`, which is at least 1 (`max_keys > 0`).
        let i = self.pick.hash_one(key) % self.shards.len() as u64;
        lock(&self.shards[i as usize])
    }
}

/// A shard's lock. A panic while it was held cannot leave the table inconsistent (every
/// update is a single store), so a poisoned lock is used as is.
fn lock(s: &Shard) -> MutexGuard<'_, Table> {
    s.0.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Table {
    /// Remembers a new key, dropping expired keys first if the shard is full; refuses when
    /// none have expired.
    fn insert(&mut self, key: &str, tat: u64, now: u64) -> Result<(), RetryAfter> {
        if self.tat.len() >= self.cap {
            if self.earliest <= now {
                let mut earliest = u64::MAX;
                self.tat.retain(|_, &mut t| {
                    let keep = t > now;
                    if keep {
                        earliest = earliest.min(t);
                    }
                    keep
                });
                self.earliest = earliest;
            }
            if self.tat.len() >= self.cap {
                // Every TAT left is in the future (`earliest > now`): the first frees a slot.
                return Err(RetryAfter { after: Duration::from_nanos(self.earliest.saturating_sub(now).max(1)), table_full: true });
            }
        }
        self.tat.insert(key.into(), tat);
        self.earliest = self.earliest.min(tat);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limiter(calls: u64, per: Duration, burst: Option<u64>, max_keys: usize) -> Limiter {
        Limiter::new(Quota::new(calls, per, burst).unwrap(), max_keys).unwrap()
    }

    #[test]
    fn burst_is_allowed_then_refused() {
        let l = limiter(3, Duration::from_secs(2), None, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check("a", t0), Ok(()));
        }
        let r = l.check("a", t0).unwrap_err();
        assert!(!r.table_full);
        // A refused call is not counted: refusing again says the same.
        assert_eq!(l.check("a", t0), Err(r));
        let l = limiter(10, Duration::from_secs(1), Some(2), 10);
        assert!(l.check("a", t0).is_ok() && l.check("a", t0).is_ok());
        assert!(l.check("a", t0).is_err(), "burst 2 allows 2 at once, not 10");
    }

    #[test]
    fn retry_after_is_exact_and_refill_allows_again() {
        // 3 per 2 s: one call every 666.67 ms once the burst is spent.
        let l = limiter(3, Duration::from_secs(2), None, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check("a", t0).unwrap();
        }
        let wait = l.check("a", t0).unwrap_err().after;
        assert!(wait.abs_diff(Duration::from_nanos(666_666_667)) <= Duration::from_nanos(3), "{wait:?}");
        // Just before the wait is over: still refused, with the rest of the wait.
        let almost = t0 + wait - MS;
        assert_eq!(l.check("a", almost).unwrap_err().after, MS);
        // After it: exactly one call, then refused again for one interval.
        let later = t0 + wait;
        assert_eq!(l.check("a", later), Ok(()));
        let again = l.check("a", later).unwrap_err().after;
        assert!(again.abs_diff(Duration::from_nanos(666_666_667)) <= Duration::from_nanos(3), "{again:?}");
        // A long pause refills the whole burst, never more.
        let idle = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(l.check("a", idle), Ok(()));
        }
        assert!(l.check("a", idle).is_err());
    }

    #[test]
    fn steady_rate_is_held_over_time() {
        // 10 per second, burst 1: calls every 50 ms get through exactly every other time.
        let l = limiter(10, Duration::from_secs(1), Some(1), 10);
        let t0 = Instant::now();
        let allowed = (0..200).filter(|i| l.check("a", t0 + MS * (50 * i)).is_ok()).count();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn keys_are_independent() {
        let l = limiter(1, Duration::from_secs(60), None, 100);
        let t0 = Instant::now();
        assert!(l.check("alice", t0).is_ok());
        assert!(l.check("alice", t0).is_err());
        assert!(l.check("bob", t0).is_ok(), "alice's limit is not bob's");
        assert!(l.check("alice\u{0}", t0).is_ok());
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn refund_gives_back_one_call() {
        let l = limiter(2, Duration::from_secs(60), None, 10);
        let t0 = Instant::now();
        l.check("a", t0).unwrap();
        l.check("a", t0).unwrap();
        assert!(l.check("a", t0).is_err());
        l.refund("a");
        assert!(l.check("a", t0).is_ok());
        assert!(l.check("a", t0).is_err());
        l.refund("never-seen");
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn memory_is_bounded_expired_keys_make_room_and_a_full_table_refuses() {
        let max = 64;
        let l = limiter(1, Duration::from_secs(1), None, max);
        let t0 = Instant::now();
        let mut refused = None;
        for i in 0..10 * max {
            if let Err(r) = l.check(&format!("k{i}"), t0) {
                refused = Some(r);
            }
            assert!(l.len() <= max, "at most max_keys keys");
        }
        // Each shard takes its share (640 keys over 16 shards fill every one of them), the rest
        // are refused, fail closed, and told when the first key expires.
        let r = refused.unwrap();
        assert!(r.table_full);
        assert!(r.after > Duration::ZERO && r.after <= Duration::from_secs(1), "{r:?}");
        assert_eq!(l.len(), max);
        // Once the keys have expired, new keys take their places, up to the same bound.
        let t1 = t0 + Duration::from_secs(1);
        let accepted = (0..10 * max).filter(|i| l.check(&format!("new{i}"), t1).is_ok()).count();
        assert_eq!((accepted, l.len()), (max, max));
        // A tiny table still holds exactly max_keys keys.
        let l = limiter(1, Duration::from_secs(1), None, 1);
        assert!(l.check("a", t0).is_ok());
        assert!(l.check("b", t0).unwrap_err().table_full);
        assert!(l.check("b", t0 + Duration::from_secs(1)).is_ok());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn zero_and_invalid_parameters_are_rejected() {
        let s = Duration::from_secs(1);
        assert_eq!(Quota::new(0, s, None), Err(QuotaError::ZeroCalls));
        assert_eq!(Quota::new(1, Duration::ZERO, None), Err(QuotaError::ZeroPer));
        assert_eq!(Quota::new(1, s, Some(0)), Err(QuotaError::ZeroBurst));
        assert_eq!(Quota::new(2_000_000_000, s, None), Err(QuotaError::TooFine));
        assert_eq!(Quota::new(1, Duration::from_secs(u64::MAX), None), Err(QuotaError::TooLong));
        assert_eq!(Quota::new(1, Duration::from_secs(3600 * 24 * 365), Some(u64::MAX)), Err(QuotaError::TooLong));
        assert_eq!(Limiter::new(Quota::new(1, s, None).unwrap(), 0).unwrap_err(), QuotaError::ZeroMaxKeys);
        assert_eq!((QuotaError::ZeroBurst.key(), QuotaError::TooFine.key(), QuotaError::ZeroMaxKeys.key()), ("burst", "calls", "max_keys"));
        let q = Quota::new(600, Duration::from_secs(60), None).unwrap();
        assert_eq!((q.calls(), q.per(), q.burst()), (600, Duration::from_secs(60), 600));
    }

    #[test]
    fn a_time_before_the_epoch_counts_as_the_epoch() {
        let l = limiter(1, Duration::from_secs(1), None, 10);
        let t0 = Instant::now() + Duration::from_secs(5);
        assert!(l.check("a", t0).is_ok());
        assert!(l.check("a", t0 - Duration::from_secs(5)).is_err(), "an earlier clock reading is never a refill");
    }
}
