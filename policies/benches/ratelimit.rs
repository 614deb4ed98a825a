//! The rate limiter on the call path (target: well under 1 µs per check).
//!
//! - `ratelimit/allowed`: one check of a known key that is allowed (the common case).
//! - `ratelimit/refused`: one check of a key over its limit.
//! - `ratelimit/tool_key`: the gateway's per-tool key (`len:principal target`, built per call)
//!   and its check.
//! - `ratelimit/10k_keys`: checks cycling over 10,000 principals (a cold-ish table).
//!
//! Before criterion, a threaded pass runs 2 threads × 2,000,000 checks over 1,000 keys on one
//! shared limiter and prints the mean per check (the shards' locks under contention).
//! Run: `cargo bench -p clawgate-policies --bench ratelimit`.

#![allow(clippy::unwrap_used, reason = "benchmark setup: a panic aborts the run")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawgate_policies::ratelimit::{Limiter, Quota};
use criterion::{Criterion, criterion_group, criterion_main};

fn limiter(calls: u64) -> Limiter {
    Limiter::new(Quota::new(calls, Duration::from_secs(3600), None).unwrap(), 100_000).unwrap()
}

fn threaded() {
    let l = Arc::new(limiter(u64::from(u32::MAX)));
    let keys: Arc<Vec<String>> = Arc::new((0..1000).map(|i| format!("principal-{i}")).collect());
    let n = 2_000_000;
    let start = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let (l, keys) = (Arc::clone(&l), Arc::clone(&keys));
            std::thread::spawn(move || {
                for i in 0..n {
                    let _ = black_box(l.check(&keys[(i * 7 + t) % keys.len()], Instant::now()));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let per = start.elapsed() / (2 * n as u32);
    println!("threaded: 2 threads x {n} checks (Instant::now() included): {per:?} per check (wall / total)");
}

fn bench(c: &mut Criterion) {
    threaded();
    let mut g = c.benchmark_group("ratelimit");
    let now = Instant::now();
    let l = limiter(u64::from(u32::MAX));
    g.bench_function("allowed", |b| b.iter(|| l.check(black_box("alice@example.com"), now)));
    let l = limiter(1);
    let _ = l.check("alice@example.com", now);
    g.bench_function("refused", |b| b.iter(|| l.check(black_box("alice@example.com"), now)));
    let l = limiter(u64::from(u32::MAX));
    g.bench_function("tool_key", |b| {
        b.iter(|| {
            let (p, t) = (black_box("alice@example.com"), black_box("mail__send_email"));
            let key = format!("{}:{p}{t}", p.len());
            l.check(&key, now)
        });
    });
    let keys: Vec<String> = (0..10_000).map(|i| format!("principal-{i}")).collect();
    let mut i = 0;
    g.bench_function("10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            l.check(&keys[i], now)
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
