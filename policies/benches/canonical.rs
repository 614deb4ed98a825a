//! Canonical JSON of a call's arguments, as the call digest writes it before hashing: the
//! word-at-a-time string escaper (`canonical::write`) side by side with serde_json's escaper
//! (the writer before it), on the load benchmark's arguments (`text` of 1 KB or 16 KB, and
//! `to`). Both produce the same bytes (asserted before timing). Run:
//! `cargo bench -p clawgate-policies --bench canonical`.

#![allow(clippy::unwrap_used, reason = "benchmark setup: a panic aborts the run")]

use std::hint::black_box;

use clawgate_policies::integrity::canonical;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

/// The writer with serde_json's escaper for every string (keys sorted the same way).
fn serde_escaped(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            canonical::sort_keys(&mut entries, |e| e.0);
            out.push(b'{');
            for (i, (k, child)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).unwrap();
                out.push(b':');
                serde_escaped(child, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_escaped(item, out);
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other).unwrap(),
    }
}

fn words(bytes: usize) -> String {
    const W: [&str; 12] = ["the", "quarterly", "report", "shows", "revenue", "growth", "across", "all", "regions", "with", "strong", "margins"];
    let mut s = String::new();
    let mut i = 0;
    while s.len() < bytes {
        s.push_str(W[i % W.len()]);
        s.push(' ');
        i += 7;
    }
    s.truncate(bytes);
    s
}

fn bench(c: &mut Criterion) {
    for size in [1024, 16 * 1024] {
        let args = json!({"text": words(size), "to": "bob@example.com"});
        let (mut fast, mut serde) = (Vec::new(), Vec::new());
        canonical::write(&args, &mut fast);
        serde_escaped(&args, &mut serde);
        assert_eq!(fast, serde, "the two writers must agree");
        let mut g = c.benchmark_group(format!("canonical_{}k", size / 1024));
        g.bench_function("word_at_a_time", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(256);
                canonical::write(black_box(&args), &mut out);
                out
            })
        });
        g.bench_function("serde_escaper", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(256);
                serde_escaped(black_box(&args), &mut out);
                out
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
