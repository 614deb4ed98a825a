//! Every in-process check of one `tools/call` in the full pipeline, summed, as the gateway runs
//! them: the cached Biscuit token (verify hit + authorizer), the JSON Schema check (pinned and
//! the operator's stricter schema), the data-flow label trace and join, the Cedar decision on
//! the 100-policy set of the load benchmark (`load-tests/policies/bench.cedar`) with
//! `context.labels` filled, and the local rate limit. Target: the sum ≤ 40 µs p50.
//!
//! The engine caches verdicts by (principal, tool, the context its slice reads): a session
//! whose labels and arguments read the same as a previous call's gets that verdict without
//! evaluating Cedar, which is what the load benchmark's steady state sees. The sum is also
//! timed with an engine whose cache is off, so every call evaluates (a miss).
//!
//! The call is the load benchmark's: `fx__echo` with a 1 KB `text` and `to`, in a session whose
//! label index holds about 1,000 fields from 200 earlier results, one of which the text quotes.
//! Recording the result's labels (after dispatch) is timed separately.
//!
//! A percentile pass times 20,000 interleaved calls of the whole sequence and of each part,
//! then criterion runs the parts. `CHECKS_BENCH_QUICK=1` runs 2,000 calls and no criterion.
//! Run: `cargo bench -p clawgate-policies --bench checks`.

#![allow(clippy::unwrap_used, reason = "benchmark setup: a panic aborts the run")]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use clawgate_policies::args::ArgSchema;
use clawgate_policies::cedar::{Engine, EngineOptions, Inventory, PolicySource, ToolAttrs, ToolMeta, UpstreamMeta};
use clawgate_policies::labels::{ArgRoles, IntentValues, LabelInput, LabelView, OutputRule, SessionLabels, label_result};
use clawgate_policies::ratelimit::{Limiter, Quota};
use clawgate_policies::token::{self, CallFacts, MintSpec, VerifiedToken, Verifier};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

const POLICIES: &str = include_str!("../../load-tests/policies/bench.cedar");
const TOOL: &str = "fx__echo";

/// `n` words of varied English-like text (a fixed LCG over a small vocabulary).
fn text(seed: u64, bytes: usize) -> String {
    const W: [&str; 24] = [
        "the", "quarterly", "report", "shows", "revenue", "growth", "across", "all", "regions", "with", "strong", "margins", "and", "steady", "customer", "demand", "while",
        "costs", "fell", "in", "most", "markets", "over", "summer",
    ];
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    let mut s = String::with_capacity(bytes + 16);
    while s.len() < bytes {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        s.push_str(W[((x >> 33) as usize) % W.len()]);
        s.push(' ');
    }
    s.truncate(bytes);
    s
}

fn inventory() -> Inventory {
    let generated = json!({"type": "object", "properties": {"id": {"type": "string"}, "fields": {"type": "array", "items": {"type": "string"}}, "cursor": {"type": "string"}}, "required": ["id"]});
    let mut tools = vec![
        // The fixture's pinned definitions.
        ToolMeta { name: TOOL.into(), upstream: "fx".into(), input_schema: json!({"type": "object"}), attrs: ToolAttrs { read_only: false, destructive: false, ..ToolAttrs::default() }, groups: vec!["bench".into()] },
        ToolMeta { name: "fx__work".into(), upstream: "fx".into(), input_schema: json!({"type": "object", "properties": {"ms": {"type": "integer"}}}), attrs: ToolAttrs::default(), groups: vec![] },
    ];
    for i in 0..45 {
        tools.push(ToolMeta { name: format!("fx__t{i:03}"), upstream: "fx".into(), input_schema: generated.clone(), attrs: ToolAttrs { read_only: true, ..ToolAttrs::default() }, groups: vec![] });
    }
    Inventory { upstreams: vec![UpstreamMeta { name: "fx".into(), trusted: true, known: true, prefix: "fx".into() }], tools, prompts: Vec::new() }
}

struct Setup {
    verifier: Verifier,
    token: String,
    pinned: ArgSchema,
    stricter: ArgSchema,
    engine: Engine,
    /// The same engine without its decision cache: every call evaluated.
    uncached: Engine,
    labels: SessionLabels,
    rule: OutputRule,
    roles: ArgRoles,
    intent: IntentValues,
    limiter: Limiter,
    args: Value,
    result: Value,
    now: SystemTime,
}

fn setup() -> Setup {
    let sources = [PolicySource { file: "bench.cedar".into(), text: POLICIES.into() }];
    let engine = Engine::build(&sources, &inventory(), EngineOptions::default()).unwrap();
    let uncached = Engine::build(&sources, &inventory(), EngineOptions { decision_cache: 0, ..EngineOptions::default() }).unwrap();
    let (private, public) = token::keygen();
    let root = token::private_key_from_hex(&private).unwrap();
    let spec = MintSpec {
        principal: "alice".into(),
        task: Some("bench".into()),
        groups: vec!["team1".into()],
        upstreams: vec!["fx".into()],
        intents: vec![("recipient".into(), "bob@example.com".into())],
        ttl: Some(Duration::from_secs(86_400)),
        ..MintSpec::default()
    };
    let now = SystemTime::now();
    let tok = token::mint(&root, &spec, now).unwrap();
    let tok = token::attenuate(&tok, "check if call_tool($t), $t.starts_with(\"fx__\");").unwrap();
    let verifier = Verifier::new(token::public_key_from_hex(&public).unwrap(), []);
    let stricter = ArgSchema::compile(&json!({"type": "object", "properties": {"text": {"type": "string", "maxLength": 1_048_576}, "to": {"type": "string", "maxLength": 320}}, "required": ["text"], "additionalProperties": false}));
    // As in the load benchmark's config: echo results are public (the fixture's plain-text
    // content could carry no readers), so the call is allowed and every check runs in full.
    let rule = OutputRule { public: true, ..OutputRule::default() };
    // 200 earlier echo results, as the fixture returns them.
    let echo = |t: &str| json!({"content": [{"type": "text", "text": t}], "structuredContent": {"upstream": "fx", "pid": 4242, "params": {"name": "echo", "arguments": {"text": t, "to": "bob@example.com"}}}});
    let mut labels = SessionLabels::new(4096, 5);
    for i in 0..200 {
        labels.apply(&label_result(&LabelInput { origin: format!("fx/echo#{i}"), rule: Some(&rule), declared: false }, &echo(&text(i, 1024))));
    }
    let quoted = text(77, 1024);
    let args = json!({"text": quoted, "to": "bob@example.com"});
    let roles = ArgRoles { control: ["to".to_owned()].into(), recipients: ["to".to_owned()].into() };
    let intent_values = ["bob@example.com".to_owned()];
    Setup {
        verifier,
        token: tok,
        pinned: ArgSchema::compile(&json!({"type": "object"})),
        stricter,
        engine,
        uncached,
        labels,
        rule,
        roles,
        intent: IntentValues::new(intent_values.iter()),
        limiter: Limiter::new(Quota::new(100_000_000, Duration::from_secs(1), None).unwrap(), 100_000).unwrap(),
        result: echo(&quoted),
        args,
        now,
    }
}

impl Setup {
    fn token(&self) -> Option<std::sync::Arc<VerifiedToken>> {
        let t = self.verifier.verify(&self.token).ok()?;
        let facts = CallFacts { tool: TOOL, upstream: "fx", arguments: Some(&self.args), now: self.now };
        self.verifier.authorize_token(&t, &facts).ok()?;
        Some(t)
    }
    fn schema(&self) -> bool {
        self.pinned.check(Some(&self.args)).is_ok() && self.stricter.check(Some(&self.args)).is_ok()
    }
    fn trace(&self) -> LabelView {
        LabelView::build(self.labels.session_label().clone(), self.labels.trace_args(Some(black_box(&self.args)), &self.intent), Some(&self.args), &self.roles, false)
    }
    fn cedar(&self, t: &VerifiedToken, view: &LabelView) -> bool {
        self.engine.decide_tool_labelled(&t.principal, TOOL, Some(&self.args), view, self.now).is_allow()
    }
    fn cedar_evaluated(&self, t: &VerifiedToken, view: &LabelView) -> bool {
        self.uncached.decide_tool_labelled(&t.principal, TOOL, Some(&self.args), view, self.now).is_allow()
    }
    fn rate(&self) -> bool {
        self.limiter.check("alice", Instant::now()).is_ok()
    }
    /// Everything before dispatch, in the gateway's order.
    fn all(&self) -> bool {
        self.all_with(Self::cedar)
    }
    /// The same with every decision evaluated (a decision-cache miss on each call).
    fn all_evaluated(&self) -> bool {
        self.all_with(Self::cedar_evaluated)
    }
    fn all_with(&self, cedar: fn(&Self, &VerifiedToken, &LabelView) -> bool) -> bool {
        let Some(t) = self.token() else { return false };
        if !self.schema() {
            return false;
        }
        let view = self.trace();
        cedar(self, &t, &view) && self.rate()
    }
    /// After dispatch: the result's labels, built (recording into the index is a clone here,
    /// so the session does not grow across iterations).
    fn record(&self) -> usize {
        let batch = label_result(&LabelInput { origin: "fx/echo#9999".into(), rule: Some(&self.rule), declared: false }, black_box(&self.result));
        batch.fields.len()
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentile_pass(s: &Setup, n: usize) {
    assert!(s.all(), "the benchmarked call is allowed");
    assert!(s.all_evaluated(), "the benchmarked call is allowed when evaluated too");
    let t = s.token().unwrap();
    let view = s.trace();
    assert!(view.args.get("text").is_some_and(|a| !a.matched.is_empty()), "the text argument matched stored fields: {:?}", view.args.get("text"));
    for _ in 0..n / 10 {
        black_box(s.all());
    }
    let mut times: Vec<Vec<Duration>> = (0..9).map(|_| Vec::with_capacity(n)).collect();
    for _ in 0..n {
        let mut time = |i: usize, f: &dyn Fn() -> bool| {
            let t0 = Instant::now();
            black_box(f());
            times[i].push(t0.elapsed());
        };
        time(0, &|| s.all());
        time(1, &|| s.token().is_some());
        time(2, &|| s.schema());
        time(3, &|| s.trace().strict);
        time(4, &|| s.cedar(&t, &view));
        time(5, &|| s.rate());
        time(6, &|| s.record() > 0);
        time(7, &|| s.all_evaluated());
        time(8, &|| s.cedar_evaluated(&t, &view));
    }
    let names = [
        "all checks (the sum)",
        "token (cached) + authorizer",
        "schema (pinned + stricter)",
        "labels: trace + join",
        "cedar, 100 policies (cached verdict)",
        "rate limit (local)",
        "after dispatch: label the result",
        "all checks, cedar evaluated",
        "cedar evaluated (cache miss)",
    ];
    println!("percentiles over {n} interleaved calls (the tool's slice holds {} of the 100 policies):", s.engine.slice_len(TOOL).unwrap_or(0));
    let mut p50_all = 0.0;
    for (i, (name, mut v)) in names.iter().zip(times).enumerate() {
        v.sort();
        let (p50, p99) = (us(v[v.len() / 2]), us(v[v.len() * 99 / 100]));
        if i == 0 {
            p50_all = p50;
        }
        println!("  {name:<36} p50 {p50:>7.1} µs   p99 {p99:>7.1} µs");
    }
    println!("  target: all checks p50 <= 40 µs -> {} with the cached verdict", if p50_all <= 40.0 { "met" } else { "MISSED" });
}

fn benches(c: &mut Criterion) {
    let s = setup();
    let quick = std::env::var_os("CHECKS_BENCH_QUICK").is_some_and(|v| !v.is_empty());
    percentile_pass(&s, if quick { 2_000 } else { 20_000 });
    if quick {
        return;
    }
    let t = s.token().unwrap();
    let view = s.trace();
    c.bench_function("checks/all", |b| b.iter(|| black_box(s.all())));
    c.bench_function("checks/token_cached", |b| b.iter(|| black_box(s.token().is_some())));
    c.bench_function("checks/schema", |b| b.iter(|| black_box(s.schema())));
    c.bench_function("checks/labels_trace", |b| b.iter(|| black_box(s.trace())));
    c.bench_function("checks/cedar_labels", |b| b.iter(|| black_box(s.cedar(&t, &view))));
    c.bench_function("checks/cedar_labels_evaluated", |b| b.iter(|| black_box(s.cedar_evaluated(&t, &view))));
    c.bench_function("checks/rate_limit", |b| b.iter(|| black_box(s.rate())));
    c.bench_function("checks/record_result", |b| b.iter(|| black_box(s.record())));
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = benches
}

criterion_main!(group);
