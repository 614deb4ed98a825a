//! Data-flow labels on the call path, measured side by side in one run.
//!
//! - `provenance/trace_1000_fields`: tracing a send-mail call's arguments (two recipients, a
//!   subject, a 60-word body quoting a stored message, a thread id) against a session holding
//!   1,000 stored fields, and joining them per role (`LabelView::build`): what the label stage
//!   adds to a call.
//! - `provenance/no_labels`: the same call's path with labels off (`LabelView::empty`).
//! - `join_and_check`: joining the control and data labels and checking the recipients against
//!   the readers: the label join and check.
//! - `cedar/with_labels` vs `cedar/without_labels`: the Cedar decision with `context.labels`
//!   filled (four label rules) against the same engine with an empty view.
//!
//! - `record/new_1k`, `record/new_16k`: recording a tool result whose text the session has not
//!   seen (one 1 KB or 16 KB text field) into a session bounded at 256 fields, cycling through
//!   512 distinct results so that every one is new: lowercasing, normalising, the index keys
//!   and the stored lines, with eviction amortised in. `record/repeat_16k` records the same
//!   16 KB result again (the dedupe hit an echo tool sees).
//!
//! Before criterion, a percentile pass times 20,000 interleaved single calls and prints
//! p50/p99 against the targets (provenance ≤ 20 µs p50 added; join+check ≤ 1 µs).
//! Run: `cargo bench -p clawgate-policies --bench labels`.

#![allow(clippy::unwrap_used, reason = "benchmark setup: a panic aborts the run")]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use clawgate_policies::cedar::{Engine, EngineOptions, Intent, Inventory, PolicySource, PreparedPrincipal, PrincipalInfo, PrincipalKind, ToolAttrs, ToolMeta, UpstreamMeta};
use clawgate_policies::labels::{ArgRoles, FieldPath, IntentValues, Label, LabelInput, LabelView, OutputRule, ResultBatch, SessionLabels, label_result};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

const WORDS: &[&str] = &[
    "budget", "review", "quarter", "travel", "meeting", "forecast", "invoice", "draft", "team", "plan", "office", "launch", "report", "numbers",
    "client", "contract", "schedule", "update", "notes", "friday", "monday", "agenda", "please", "attached", "thanks", "call", "week", "before",
    "after", "project", "design", "hiring", "offsite", "slides", "deadline", "approve", "sign", "legal", "vendor", "price", "order", "shipping",
    "delay", "customer", "support", "ticket", "release", "bug", "fix", "test", "deploy", "server", "costs", "revenue", "growth", "risk", "audit",
    "policy", "training", "lunch", "room", "booked", "moved", "cancelled",
];

/// Mail-like text: `n` words drawn from a 64-word vocabulary by a fixed LCG (distinct per
/// seed, as real messages are).
fn sentence(seed: usize, n: usize) -> String {
    let mut x = (seed as u64).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            WORDS[((x >> 33) as usize) % WORDS.len()]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The adversarial case: every stored body is the same 40 words, so every shingle of the
/// argument hits every body (1,000 verified matches, 200 distinct labels to join).
fn repeated(_seed: usize, n: usize) -> String {
    sentence(7, n)
}

/// A session with 1,000 stored fields: 50 thread reads of 4 messages (5 fields each).
fn session() -> SessionLabels {
    session_with(sentence)
}

fn session_with(body: fn(usize, usize) -> String) -> SessionLabels {
    let rule = OutputRule {
        each: Some(FieldPath::parse("messages[*]").unwrap()),
        readers: vec![FieldPath::parse("from").unwrap(), FieldPath::parse("to").unwrap(), FieldPath::parse("cc").unwrap()],
        trusted_if_domain: Some((FieldPath::parse("from").unwrap(), vec!["corp.example".into()])),
        ..OutputRule::default()
    };
    let mut s = SessionLabels::new(4096, 5);
    for t in 0..50 {
        let msgs: Vec<Value> = (0..4)
            .map(|m| {
                let k = t * 4 + m;
                json!({"from": format!("user{k}@corp.example"), "to": [format!("user{}@corp.example", k + 1)], "cc": [format!("user{}@corp.example", k + 2)], "subject": format!("Thread {t} {}", sentence(k, 3)), "body": body(k, 40)})
            })
            .collect();
        s.apply(&label_result(&LabelInput { origin: format!("mail/read_thread#{t}"), rule: Some(&rule), declared: false }, &json!({"structuredContent": {"messages": msgs}})));
    }
    assert!(s.field_count() >= 1000, "{}", s.field_count());
    s
}

/// 512 tool results, each one text field of `words` mail-like words (each result's text is
/// different; 150 words is about 1 KB, 2,400 words fill the 16 KB a field keeps), labelled as
/// the gateway labels a result with no rule.
fn new_results(words: usize) -> Vec<ResultBatch> {
    (0..512).map(|k| label_result(&LabelInput { origin: format!("fx/echo#{k}"), rule: None, declared: false }, &json!({"content": [{"type": "text", "text": sentence(10_000 + k, words)}]}))).collect()
}

fn args() -> Value {
    json!({"to": ["user101@corp.example", "user102@corp.example"], "subject": "Re: the plan", "body": format!("Thanks, see below. {} Regards", sentence(100, 40)), "thread_id": "thread-25"})
}

fn roles() -> ArgRoles {
    ArgRoles { control: BTreeSet::from(["to".to_owned(), "thread_id".to_owned()]), recipients: BTreeSet::from(["to".to_owned()]) }
}

fn engine() -> (Engine, PreparedPrincipal) {
    let inv = Inventory {
        upstreams: vec![UpstreamMeta { name: "mail".into(), trusted: true, known: true, prefix: "mail".into() }],
        tools: vec![ToolMeta {
            name: "mail__send".into(),
            upstream: "mail".into(),
            input_schema: json!({"type": "object", "properties": {"to": {"type": "array", "items": {"type": "string"}}, "subject": {"type": "string"}, "body": {"type": "string"}, "thread_id": {"type": "string"}}}),
            attrs: ToolAttrs { category: "messaging".into(), read_only: false, destructive: false, ..ToolAttrs::default() },
            groups: Vec::new(),
        }],
        prompts: Vec::new(),
    };
    let lib = |f: &str| PolicySource { file: f.into(), text: std::fs::read_to_string(format!("{}/library/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap() };
    let files = vec![
        PolicySource { file: "base.cedar".into(), text: "permit (principal, action, resource);".into() },
        lib("labels-trusted-control.cedar"),
        lib("labels-readers.cedar"),
        lib("labels-ask-untrusted-messaging.cedar"),
        lib("labels-strict.cedar"),
    ];
    let e = Engine::build(&files, &inv, EngineOptions::default()).unwrap();
    let p = PreparedPrincipal::new(PrincipalInfo { id: "me".into(), kind: PrincipalKind::User, task: None, groups: Vec::new(), intent: Intent::default() }).unwrap();
    (e, p)
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Everything both passes measure against.
struct Setup {
    s: SessionLabels,
    a: Value,
    roles: ArgRoles,
    intent: IntentValues,
    engine: Engine,
    p: PreparedPrincipal,
    now: SystemTime,
    view: LabelView,
    empty: LabelView,
}

impl Setup {
    fn new() -> Self {
        let (s, a, roles, intent) = (session(), args(), roles(), IntentValues::default());
        let (engine, p) = engine();
        let view = LabelView::build(s.session_label().clone(), s.trace_args(Some(&a), &intent), Some(&a), &roles, false);
        Self { s, a, roles, intent, engine, p, now: SystemTime::now(), view, empty: LabelView::empty(false) }
    }

    /// What the label stage does per call.
    fn trace(&self) -> LabelView {
        LabelView::build(self.s.session_label().clone(), self.s.trace_args(Some(black_box(&self.a)), &self.intent), Some(&self.a), &self.roles, false)
    }
}

fn percentile_pass() {
    let setup = Setup::new();
    let Setup { a, roles, intent, engine, p, now, view, empty, .. } = &setup;
    let adversarial = session_with(repeated);
    let adv_args = json!({"to": ["user101@corp.example"], "body": repeated(0, 40)});
    let (mut tr, mut none, mut jc, mut cl, mut cn, mut adv) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..20_000 {
        if i % 10 == 0 {
            let t = Instant::now();
            black_box(LabelView::build(adversarial.session_label().clone(), adversarial.trace_args(Some(black_box(&adv_args)), intent), Some(&adv_args), roles, false));
            adv.push(t.elapsed());
        }
        let t = Instant::now();
        black_box(setup.trace());
        tr.push(t.elapsed());
        let t = Instant::now();
        black_box(LabelView::empty(black_box(false)));
        none.push(t.elapsed());
        let t = Instant::now();
        let j = black_box(&view.control).join(black_box(&view.data));
        black_box(j.trusted && j.readable_by(view.recipients.iter().map(String::as_str)));
        jc.push(t.elapsed());
        let t = Instant::now();
        black_box(engine.decide_tool_labelled(p, "mail__send", Some(a), view, *now));
        cl.push(t.elapsed());
        let t = Instant::now();
        black_box(engine.decide_tool_labelled(p, "mail__send", Some(a), empty, *now));
        cn.push(t.elapsed());
    }
    let (t50, t99) = percentiles(tr);
    let (n50, n99) = percentiles(none);
    let (j50, j99) = percentiles(jc);
    let (l50, l99) = percentiles(cl);
    let (e50, e99) = percentiles(cn);
    let (a50, a99) = percentiles(adv);
    println!("percentiles over 20000 interleaved calls ({} stored fields in the session):", setup.s.field_count());
    println!("  provenance: trace args + join per role:  p50 {:>7.2} µs   p99 {:>7.2} µs", us(t50), us(t99));
    println!("  labels off (empty view):                 p50 {:>7.2} µs   p99 {:>7.2} µs", us(n50), us(n99));
    println!("  adversarial: body shared by every field: p50 {:>7.2} µs   p99 {:>7.2} µs  (2,000 calls)", us(a50), us(a99));
    println!("  label join + readers check:              p50 {:>7.3} µs   p99 {:>7.3} µs", us(j50), us(j99));
    println!("  cedar decision with context.labels:      p50 {:>7.2} µs   p99 {:>7.2} µs", us(l50), us(l99));
    println!("  cedar decision, empty labels:            p50 {:>7.2} µs   p99 {:>7.2} µs", us(e50), us(e99));
    let added = t50.saturating_sub(n50);
    println!("  target: provenance adds <= 20 µs p50 ({:.2} µs) -> {}", us(added), if added <= Duration::from_micros(20) { "met" } else { "MISSED" });
    println!("  target: join + check <= 1 µs p50 ({:.3} µs) -> {}", us(j50), if j50 <= Duration::from_micros(1) { "met" } else { "MISSED" });
}

fn bench(c: &mut Criterion) {
    // Set when profiling one criterion benchmark (`--profile-time`) without the pass.
    if std::env::var_os("LABELS_BENCH_NO_PERCENTILES").is_none() {
        percentile_pass();
    }
    let setup = Setup::new();
    let Setup { engine, p, now, view, empty, a, .. } = &setup;
    let mut g = c.benchmark_group("provenance");
    g.bench_function("trace_1000_fields", |b| b.iter(|| setup.trace()));
    g.bench_function("no_labels", |b| b.iter(|| LabelView::empty(black_box(false))));
    g.finish();
    c.bench_function("join_and_check", |b| {
        b.iter(|| {
            let j: Label = black_box(&view.control).join(black_box(&view.data));
            j.trusted && j.readable_by(view.recipients.iter().map(String::as_str))
        })
    });
    let mut g = c.benchmark_group("record");
    for (name, words) in [("new_1k", 150), ("new_16k", 2_400)] {
        let batches = new_results(words);
        let mut s = SessionLabels::new(256, 5);
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                s.apply(black_box(&batches[i % batches.len()]));
                i += 1;
            })
        });
    }
    let repeat = new_results(2_400).swap_remove(0);
    let mut s = SessionLabels::new(256, 5);
    s.apply(&repeat);
    g.bench_function("repeat_16k", |b| b.iter(|| s.apply(black_box(&repeat))));
    g.finish();
    let mut g = c.benchmark_group("cedar");
    g.bench_function("with_labels", |b| b.iter(|| engine.decide_tool_labelled(p, "mail__send", Some(black_box(a)), view, *now)));
    g.bench_function("without_labels", |b| b.iter(|| engine.decide_tool_labelled(p, "mail__send", Some(black_box(a)), empty, *now)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(50);
    targets = bench
}
criterion_main!(benches);
