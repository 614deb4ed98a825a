//! The per-call decision, measured side by side in one run with a bare Cedar baseline.
//!
//! - `baseline/cedar_is_authorized`: `Authorizer::is_authorized` on the whole 100-policy set,
//!   with the request, context and entities built beforehand (Cedar alone, nothing else).
//! - `decision/full`: what the gateway does per call with a cached token: verify (cache hit),
//!   the Biscuit authorizer under run limits, the JSON Schema check, and Cedar on the tool's
//!   slice with the request and context built from typed values.
//! - the parts of `decision/full` one by one.
//!
//! Before criterion runs, a percentile pass times 20,000 single calls of the baseline and the
//! full decision, interleaved, and prints p50/p99 (criterion reports means and medians only).
//! Run: `cargo bench -p clawgate-policies --bench decision`.

#![allow(clippy::unwrap_used, reason = "benchmark setup: a panic aborts the run")]

use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request, Schema};
use clawgate_policies::args::ArgSchema;
use clawgate_policies::cedar::{Engine, EngineOptions, Inventory, PolicySource, ToolAttrs, ToolMeta, UpstreamMeta, generate_schema};
use clawgate_policies::token::{self, CallFacts, MintSpec, Verifier};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

const TOOLS: usize = 45;

fn inventory() -> Inventory {
    let schema = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "fields": {"type": "array", "items": {"type": "string"}}, "limit": {"type": "integer"}, "to": {"type": "string"}
    }, "required": ["id"]});
    Inventory {
        upstreams: vec![UpstreamMeta { name: "fx".into(), trusted: true, known: true, prefix: "fx".into() }],
        tools: (0..TOOLS)
            .map(|i| ToolMeta {
                name: format!("fx__t{i:03}"),
                upstream: "fx".into(),
                input_schema: schema.clone(),
                attrs: ToolAttrs { read_only: i % 3 != 0, destructive: i % 3 == 0, ..ToolAttrs::default() },
                groups: if i % 5 == 0 { vec!["send".into()] } else { vec![] },
            })
            .collect(),
        prompts: Vec::new(),
    }
}

/// 100 policies: two per tool (90) and ten over groups or every action.
fn policies() -> String {
    let mut s = String::new();
    for i in 0..TOOLS {
        s.push_str(&format!(
            "@id(\"p{i}\")\npermit (principal in Group::\"team{}\", action == Action::\"fx__t{i:03}\", resource) when {{ principal.task != \"frozen\" && context.args.id like \"rec-*\" }};\n",
            i % 4
        ));
        s.push_str(&format!(
            "@id(\"f{i}\")\nforbid (principal, action == Action::\"fx__t{i:03}\", resource) when {{ context.args has limit && context.args.limit > 1000 }};\n"
        ));
    }
    s.push_str("@id(\"g0\")\nforbid (principal, action in Action::\"destructive\", resource) unless { principal in Group::\"admins\" };\n");
    s.push_str("@id(\"g1\")\nforbid (principal, action in Action::\"send\", resource) unless { context.args has to && context.intent.recipients.contains(context.args.to) };\n");
    s.push_str("@id(\"g2\")\nforbid (principal, action in Action::\"write\", resource) unless { context.time.weekday <= 5 };\n");
    s.push_str("@id(\"g3\")\npermit (principal in Group::\"admins\", action in Action::\"call_tool\", resource);\n");
    s.push_str("@id(\"g4\")\nforbid (principal, action, resource) when { principal.kind == \"anonymous\" };\n");
    s.push_str("@id(\"g5\")\nforbid (principal, action in Action::\"call_tool\", resource) when { principal.task == \"frozen\" };\n");
    s.push_str("@id(\"g6\")\nforbid (principal, action in Action::\"read\", resource) when { context.args has fields && context.args.fields.contains(\"ssn\") };\n");
    s.push_str("@id(\"g7\")\npermit (principal in Group::\"auditors\", action in Action::\"read\", resource);\n");
    s.push_str("@id(\"g8\")\nforbid (principal, action, resource in Upstream::\"fx\") when { context.time.hour < 0 };\n");
    s.push_str("@id(\"g9\")\nforbid (principal in Group::\"blocked\", action, resource);\n");
    s
}

struct Setup {
    verifier: Verifier,
    token: String,
    /// The same token narrowed by a check that reads an argument: its authorizer runs per call.
    token_args: String,
    engine: Engine,
    args_schema: ArgSchema,
    args: Value,
    tool: String,
    // baseline
    set: PolicySet,
    request: Request,
    entities: Entities,
}

fn setup() -> Setup {
    let inv = inventory();
    let text = policies();
    assert_eq!(PolicySet::from_str(&text).unwrap().policies().count(), 100);
    let engine = Engine::build(&[PolicySource { file: "bench.cedar".into(), text: text.clone() }], &inv, EngineOptions::default()).unwrap();
    let (private, public) = token::keygen();
    let root = token::private_key_from_hex(&private).unwrap();
    let spec = MintSpec { principal: "alice".into(), task: Some("triage".into()), groups: vec!["team1".into()], ttl: Some(Duration::from_secs(365 * 86_400)), ..MintSpec::default() };
    // Minted a day before the fixed instant the decisions are made at.
    let tok = token::mint(&root, &spec, SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_428_000 - 86_400)).unwrap();
    let tok = token::attenuate(&tok, "check if call_tool($t), $t.starts_with(\"fx__\");").unwrap();
    let token_args = token::attenuate(&tok, "check if arg(\"id\", $i), $i.starts_with(\"rec-\");").unwrap();
    let verifier = Verifier::new(token::public_key_from_hex(&public).unwrap(), []);
    verifier.verify(&tok).unwrap();
    verifier.verify(&token_args).unwrap();
    let tool = "fx__t001".to_owned();
    let args = json!({"id": "rec-4471", "fields": ["name", "email"], "limit": 20});
    let args_schema = ArgSchema::compile(&inv.tools[1].input_schema);

    // The baseline request, built once from JSON with the schema.
    let schema = Schema::from_cedarschema_str(&generate_schema(&inv)).unwrap().0;
    let action = EntityUid::from_str(&format!("Action::\"{tool}\"")).unwrap();
    let ctx = Context::from_json_value(
        json!({"args": args, "time": {"unix": 1_795_428_000i64, "hour": 10, "minute": 0, "weekday": 1}, "intent": {"recipients": [], "accounts": [], "urls": []}}),
        Some((&schema, &action)),
    )
    .unwrap();
    let entities = Entities::from_json_value(
        json!([
            {"uid": {"type": "Principal", "id": "alice"}, "attrs": {"kind": "user", "task": "triage"}, "parents": [{"type": "Group", "id": "team1"}]},
            {"uid": {"type": "Group", "id": "team1"}, "attrs": {}, "parents": []},
            {"uid": {"type": "Upstream", "id": "fx"}, "attrs": {"trusted": true}, "parents": []},
            {"uid": {"type": "Tool", "id": tool}, "attrs": {"upstream": "fx", "category": "", "owner": "", "sensitivity": "", "read_only": true, "destructive": false, "open_world": true}, "parents": [{"type": "Upstream", "id": "fx"}]},
        ]),
        Some(&schema),
    )
    .unwrap();
    let request = Request::new(
        EntityUid::from_str("Principal::\"alice\"").unwrap(),
        action,
        EntityUid::from_str(&format!("Tool::\"{tool}\"")).unwrap(),
        ctx,
        Some(&schema),
    )
    .unwrap();
    let set = PolicySet::from_str(&text).unwrap();
    Setup { verifier, token: tok, token_args, engine, args_schema, args, tool, set, request, entities }
}

/// One whole decision, as the gateway makes it for a call with a cached token.
fn decide(s: &Setup, now: SystemTime) -> bool {
    decide_with(s, &s.token, now)
}

fn decide_with(s: &Setup, token: &str, now: SystemTime) -> bool {
    let Ok(t) = s.verifier.verify(token) else { return false };
    let facts = CallFacts { tool: &s.tool, upstream: "fx", arguments: Some(&s.args), now };
    if s.verifier.authorize_token(&t, &facts).is_err() {
        return false;
    }
    if s.args_schema.check(Some(&s.args)).is_err() {
        return false;
    }
    s.engine.decide_tool(&t.principal, &s.tool, Some(&s.args), now).is_allow()
}

fn baseline(s: &Setup) -> bool {
    Authorizer::new().is_authorized(&s.request, &s.set, &s.entities).decision() == cedar_policy::Decision::Allow
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

/// p50/p99 of single calls, baseline and full decision interleaved in one run.
fn percentile_pass(s: &Setup) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_428_000);
    assert!(decide(s, now), "the benchmarked call is allowed");
    assert!(baseline(s), "and Cedar alone agrees");
    for _ in 0..2_000 {
        black_box(decide(s, now));
        black_box(baseline(s));
    }
    assert!(decide_with(s, &s.token_args, now), "the argument-reading token allows it too");
    let (mut a, mut b, mut c) = (Vec::with_capacity(20_000), Vec::with_capacity(20_000), Vec::with_capacity(20_000));
    for _ in 0..20_000 {
        let t0 = Instant::now();
        black_box(baseline(s));
        a.push(t0.elapsed());
        let t0 = Instant::now();
        black_box(decide(s, now));
        b.push(t0.elapsed());
        let t0 = Instant::now();
        black_box(decide_with(s, &s.token_args, now));
        c.push(t0.elapsed());
    }
    let (a50, a99) = percentiles(a);
    let (b50, b99) = percentiles(b);
    let (c50, c99) = percentiles(c);
    println!("percentiles over 20000 interleaved calls (100 policies; the tool's slice holds {} of them):", s.engine.slice_len(&s.tool).unwrap_or(0));
    println!("  baseline Authorizer::is_authorized, whole set:  p50 {:>7.1} µs   p99 {:>7.1} µs", a50.as_secs_f64() * 1e6, a99.as_secs_f64() * 1e6);
    println!("  full decision (token+biscuit+schema+cedar):     p50 {:>7.1} µs   p99 {:>7.1} µs", b50.as_secs_f64() * 1e6, b99.as_secs_f64() * 1e6);
    println!("  full decision, token with an argument check:     p50 {:>7.1} µs   p99 {:>7.1} µs", c50.as_secs_f64() * 1e6, c99.as_secs_f64() * 1e6);
    println!("  target: p50 <= 25 µs, p99 <= 100 µs -> {}", if b50 <= Duration::from_micros(25) && b99 <= Duration::from_micros(100) { "met" } else { "MISSED" });
}

fn benches(c: &mut Criterion) {
    let s = setup();
    percentile_pass(&s);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_428_000);
    let t = s.verifier.verify(&s.token).unwrap();
    let facts = CallFacts { tool: &s.tool, upstream: "fx", arguments: Some(&s.args), now };
    c.bench_function("baseline/cedar_is_authorized_100_policies", |b| b.iter(|| black_box(baseline(&s))));
    c.bench_function("decision/full", |b| b.iter(|| black_box(decide(&s, now))));
    c.bench_function("decision/full_argument_checking_token", |b| b.iter(|| black_box(decide_with(&s, &s.token_args, now))));
    c.bench_function("decision/token_verify_cached", |b| b.iter(|| black_box(s.verifier.verify(&s.token).is_ok())));
    c.bench_function("decision/biscuit_authorizer", |b| b.iter(|| black_box(s.verifier.authorize(&t.biscuit, &facts).is_ok())));
    c.bench_function("decision/biscuit_verdict_cached", |b| b.iter(|| black_box(s.verifier.authorize_token(&t, &facts).is_ok())));
    c.bench_function("decision/schema_check", |b| b.iter(|| black_box(s.args_schema.check(Some(&s.args)).is_ok())));
    c.bench_function("decision/cedar_slice_typed_request", |b| b.iter(|| black_box(s.engine.decide_tool(&t.principal, &s.tool, Some(&s.args), now).is_allow())));
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(50).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = benches
}

criterion_main!(group);
