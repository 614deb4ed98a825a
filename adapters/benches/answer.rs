//! An upstream's answer on its way to the client, the two ways the gateway can take it, side by
//! side on the load benchmark's answer (the fixture's `echo` of 1 KB or 16 KB of text, which
//! it returns twice: as content and inside `structuredContent`; `words` is the load
//! generator's text):
//! - `parsed`: the whole body into `Value`, every string cleaned (`sanitize_value`), written
//!   out again (`jsonrpc::to_vec`): the general path, and every answer's path before raw
//!   answers;
//! - `raw`: the envelope parsed borrowed (`RawAnswer::parse`), the `"uri` search the gateway
//!   makes, the result's bytes checked (`json_is_clean`, `within_parse_depth`) and spliced
//!   under the client's id (`write_response`): a relay with labels off;
//! - `raw+labels`: the envelope, the search, the result parsed once for its labels, refusing
//!   members named twice (`unique_result_value`), and that parse cleaned (finding nothing)
//!   instead of the bytes scanned, then spliced: the full pipeline.
//!
//! Every path produces the same response (asserted before timing). Run:
//! `cargo bench -p clawgate-adapters --bench answer`.

#![allow(clippy::unwrap_used, reason = "benchmark setup: a panic aborts the run")]

use std::hint::black_box;

use bytes::Bytes;
use clawgate_adapters::jsonrpc::{self, RawAnswer};
use clawgate_policies::integrity::sanitize;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

fn words(size: usize) -> String {
    const W: [&str; 16] = ["the", "quarterly", "report", "shows", "revenue", "growth", "across", "all", "regions", "with", "strong", "margins", "and", "steady", "customer", "demand"];
    let mut s = String::new();
    let mut i = 0usize;
    while s.len() < size {
        s.push_str(W[(i * 7 + i / 16) % W.len()]);
        s.push(' ');
        i += 1;
    }
    s.truncate(size);
    s
}

fn parsed(body: &[u8], id: &Value) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    let findings = sanitize::sanitize_value(&mut v);
    assert!(findings.is_empty());
    v["id"] = id.clone();
    jsonrpc::to_vec(&v)
}

fn raw(body: &Bytes, id: &Value, labels: bool) -> Vec<u8> {
    let a = RawAnswer::parse(body.clone(), 7).unwrap();
    assert!(memchr::memmem::find(a.result(), b"\"uri").is_none());
    if labels {
        let mut v = a.unique_result_value().unwrap();
        assert!(sanitize::sanitize_value(&mut v).is_empty());
        black_box(v);
    } else {
        assert!(sanitize::json_is_clean(a.result()) && a.within_parse_depth());
    }
    let mut out = Vec::new();
    a.write_response(id, &mut out);
    out
}

fn bench(c: &mut Criterion) {
    let id = json!("client-1");
    for size in [1024, 16 * 1024] {
        let text = words(size);
        let args = json!({"text": text, "to": "bob@example.com"});
        let answer = json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": text}], "structuredContent": {"upstream": "fx", "pid": 4242, "params": {"name": "echo", "arguments": args}}}});
        let body = Bytes::from(serde_json::to_vec(&answer).unwrap());
        let want: Value = serde_json::from_slice(&parsed(&body, &id)).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&raw(&body, &id, true)).unwrap(), want);
        let mut g = c.benchmark_group(format!("answer_{}k", size / 1024));
        g.bench_function("parsed", |b| b.iter(|| parsed(black_box(&body), &id)));
        g.bench_function("raw", |b| b.iter(|| raw(black_box(&body), &id, false)));
        g.bench_function("raw+labels", |b| b.iter(|| raw(black_box(&body), &id, true)));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
