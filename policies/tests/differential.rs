//! Differential property test over generated cases (principal, tool, args, policy set):
//! - the engine's verdict (per-action slices, typed context, fail closed) equals a direct
//!   `cedar_policy::Authorizer` call on the whole set, built independently from JSON;
//! - whenever Cedar reports an evaluation error, the engine denies;
//! - any engine's deny means deny (token × Cedar);
//! - adding a forbid never turns a deny into an allow.
//!
//! The generator is a fixed-seed xorshift, so a failure names a reproducible case number.

#![allow(clippy::unwrap_used, clippy::too_many_arguments, reason = "test code: a panic is a failed test")]

mod common;

use std::str::FromStr;

use cedar_policy::{Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicySet, Request, Schema};
use clawgate_policies::cedar::{Engine, EngineOptions, PolicySource, PreparedPrincipal, Verdict, generate_schema};
use clawgate_policies::decision::{Decision, combine};
use clawgate_policies::token::TokenDenial;
use common::*;
use serde_json::{Value, json};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

const TOOLS: [&str; 6] = ["demo__list_threads", "demo__read_thread", "demo__send_email", "demo__add_note", "demo__delete_note", "admin__reset"];
const GROUPS: [&str; 6] = ["call_tool", "read", "write", "destructive", "send", "open_world"];

/// Conditions that typecheck for a given tool's action (or any action when `tool` is None).
fn condition(rng: &mut Rng, tool: Option<&str>) -> String {
    let generic = [
        "",
        "when { principal.task == \"triage\" }",
        "unless { principal.task == \"triage\" }",
        "when { principal in Group::\"admins\" }",
        "when { context.time.hour >= 9 && context.time.hour < 18 }",
        "when { context.time.weekday > 5 }",
        "when { principal.kind == \"anonymous\" }",
        "when { context.intent.recipients.contains(\"bob@corp.example\") }",
        // The whole context (the engine then builds all of it).
        "when { context == context }",
        // Overflows whenever it is evaluated: an evaluation error.
        "when { context.time.unix * 9223372036854775807 > 0 }",
    ];
    let specific: &[&str] = match tool {
        Some("demo__send_email") => &[
            "when { context.args.to.contains(\"eve@evil.example\") }",
            "unless { context.intent.recipients.containsAll(context.args.to) }",
            "when { context.args has subject && context.args.subject like \"*urgent*\" }",
        ],
        Some("demo__delete_note") => &[
            "when { context.args.id > 5 }",
            // Overflows for any positive id: an evaluation error.
            "when { context.args.id + 9223372036854775807 > 0 }",
        ],
        Some("admin__reset") => &["when { context.args.confirm }", "unless { context.args.confirm }"],
        Some("demo__read_thread") => &["when { context.args.thread_id like \"t-1*\" }"],
        // A group or a list of tools: every applicable action has a Tool resource.
        Some(_) => &["when { resource.read_only }", "when { resource.upstream == \"demo\" }", "when { resource.destructive }"],
        // Any action, prompts and resources included: only what every action's context has.
        None => &["when { context.time.minute == 0 }"],
    };
    // Label reads (tool actions only), down to single attributes and whole records: the engine
    // builds only what a slice reads, which must never change a decision.
    let labelled = [
        "when { context.labels.session.trusted && context.labels.data.public }",
        "unless { context.labels.control.origins.contains(\"x\") }",
        "when { context.labels.control == context.labels.data }",
        "when { context.labels has strict && !context.labels.strict }",
    ];
    if tool.is_some() && rng.chance(20) {
        return rng.pick(&labelled).to_string();
    }
    if rng.chance(50) { rng.pick(&generic).to_string() } else { rng.pick(specific).to_string() }
}

fn policy(rng: &mut Rng, effect: &str, id: usize) -> String {
    let principal = rng.pick(&["principal", "principal == Principal::\"alice\"", "principal in Group::\"admins\"", "principal in Group::\"mail\""]).to_string();
    // `scope` says which conditions typecheck: a tool's own, tool-level ones, or generic ones.
    let (action, tool, scope) = match rng.next() % 4 {
        0 => ("action".to_owned(), None, None),
        1 => {
            let t = *rng.pick(&TOOLS);
            (format!("action == Action::\"{t}\""), Some(t), Some(t))
        }
        2 => (format!("action in Action::\"{}\"", rng.pick(&GROUPS)), None, Some("tools")),
        _ => (format!("action in [Action::\"{}\", Action::\"{}\"]", rng.pick(&TOOLS), rng.pick(&TOOLS)), None, Some("tools")),
    };
    // Resource scopes only with tool-level actions (any action may also target prompts).
    let resource = match (tool, rng.next() % 3) {
        (Some(t), 0) => format!("resource == Tool::\"{t}\""),
        (_, 1) => format!("resource in Upstream::\"{}\"", rng.pick(&["demo", "admin"])),
        _ => "resource".to_owned(),
    };
    let cond = condition(rng, scope);
    format!("@id(\"p{id}\")\n{effect} ({principal}, {action}, {resource})\n{cond};\n")
}

fn principals() -> Vec<(PreparedPrincipal, Value)> {
    let mk = |id: &str, task: Option<&str>, groups: &[&str], recipients: &[&str]| {
        let p = principal(id, task, groups, recipients);
        let json = json!({
            "uid": {"type": "Principal", "id": id},
            "attrs": {"kind": "user", "task": task.unwrap_or("")},
            "parents": groups.iter().map(|g| json!({"type": "Group", "id": g})).collect::<Vec<_>>(),
        });
        (p, json)
    };
    let anon = (anonymous(), json!({"uid": {"type": "Principal", "id": "anonymous"}, "attrs": {"kind": "anonymous", "task": ""}, "parents": []}));
    vec![
        mk("alice", None, &[], &[]),
        mk("bob", Some("triage"), &["mail"], &["bob@corp.example"]),
        mk("root", None, &["admins", "mail"], &[]),
        anon,
    ]
}

fn args_for(rng: &mut Rng, tool: &str) -> Value {
    let c = candidate_args(tool);
    let mut a = rng.pick(&c).clone();
    if tool == "demo__delete_note" {
        a = json!({"id": (rng.next() % 12) as i64 - 2});
    }
    if tool == "demo__read_thread" && rng.chance(50) {
        a = json!({"thread_id": "x-9"});
    }
    a
}

/// The direct Cedar answer: the whole set, entities and context from JSON, schema-checked.
fn direct(schema: &Schema, set: &PolicySet, principal_json: &Value, principal_id: &str, recipients: &[&str], tool: &str, args: &Value, at: std::time::SystemTime) -> cedar_policy::Response {
    let t = inventory().tools.into_iter().find(|t| t.name == tool).unwrap();
    let entities = json!([
        principal_json,
        {"uid": {"type": "Group", "id": "admins"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Group", "id": "mail"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Upstream", "id": "demo"}, "attrs": {"trusted": false}, "parents": []},
        {"uid": {"type": "Upstream", "id": "admin"}, "attrs": {"trusted": false}, "parents": []},
        {"uid": {"type": "Tool", "id": tool}, "attrs": {
            "upstream": t.upstream, "category": "", "owner": "", "sensitivity": "",
            "read_only": t.attrs.read_only, "destructive": t.attrs.destructive, "open_world": t.attrs.open_world,
        }, "parents": [{"type": "Upstream", "id": t.upstream}]},
    ]);
    let entities = Entities::from_json_value(entities, Some(schema)).unwrap();
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let action = EntityUid::from_str(&format!("Action::\"{tool}\"")).unwrap();
    let ctx = json!({
        "args": args,
        "time": {"unix": secs, "hour": rem / 3600, "minute": (rem % 3600) / 60, "weekday": (days + 3).rem_euclid(7) + 1},
        "intent": {"recipients": recipients, "accounts": [], "urls": []},
        // What `Engine::decide_tool` passes: no labels recorded (trusted, public, nowhere).
        "labels": {
            "session": bottom_label(), "control": bottom_label(), "data": bottom_label(),
            "recipients": [], "strict": false, "args": {},
        },
    });
    let ctx = Context::from_json_value(ctx, Some((schema, &action))).unwrap();
    let p = EntityUid::from_str(&format!("Principal::\"{principal_id}\"")).unwrap();
    let r = EntityUid::from_str(&format!("Tool::\"{tool}\"")).unwrap();
    let req = Request::new(p, action, r, ctx, Some(schema)).unwrap();
    Authorizer::new().is_authorized(&req, set, &entities)
}

fn bottom_label() -> serde_json::Value {
    json!({"trusted": true, "public": true, "readers": [], "origins": []})
}

#[test]
fn engine_matches_direct_cedar_over_10k_cases() {
    let inv = inventory();
    let schema = Schema::from_cedarschema_str(&generate_schema(&inv)).unwrap().0;
    let people = principals();
    let recipients_of = |id: &str| -> Vec<&'static str> { if id == "bob" { vec!["bob@corp.example"] } else { vec![] } };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut cases, mut errors_seen, mut allows_seen, mut forbids_added) = (0, 0, 0, 0);
    let mut sets = 0;
    while cases < 10_000 {
        sets += 1;
        let n = 1 + (rng.next() % 8) as usize;
        let mut text = String::new();
        for i in 0..n {
            let effect = if rng.chance(60) { "permit" } else { "forbid" };
            text.push_str(&policy(&mut rng, effect, i));
        }
        let sources = [PolicySource { file: "gen.cedar".into(), text: text.clone() }];
        let engine = match Engine::build(&sources, &inv, EngineOptions::default()) {
            Ok(e) => e,
            Err(e) => panic!("set {sets}: a generated set failed to load: {e}\n{text}"),
        };
        let full = PolicySet::from_str(&text).unwrap();
        // The same set plus one more forbid.
        let extra = policy(&mut rng, "forbid", 99);
        let more_text = format!("{text}{extra}");
        let more = Engine::build(&[PolicySource { file: "gen.cedar".into(), text: more_text.clone() }], &inv, EngineOptions::default()).unwrap();
        for _ in 0..20 {
            cases += 1;
            let (p, pj) = rng.pick(&people);
            let tool = *rng.pick(&TOOLS);
            let args = args_for(&mut rng, tool);
            let at = if rng.chance(50) { monday_10() } else { sunday_10() };
            let ours = engine.decide_tool(p, tool, Some(&args), at);
            let theirs = direct(&schema, &full, pj, &p.info.id, &recipients_of(&p.info.id), tool, &args, at);
            let errored = theirs.diagnostics().errors().next().is_some();
            if errored {
                errors_seen += 1;
                assert!(matches!(ours, Verdict::Deny { .. }), "case {cases}: an engine error must deny: {ours:?}\n{text}");
            } else {
                let direct_allow = theirs.decision() == CedarDecision::Allow;
                let ours_allow = matches!(ours, Verdict::Allow { .. } | Verdict::Ask { .. });
                assert_eq!(ours_allow, direct_allow, "case {cases}: {} {tool} {args}\n{text}", p.info.id);
                if direct_allow {
                    allows_seen += 1;
                    // `from_str` numbers policies policy0, policy1, … in order; the generator's @ids are p0, p1, ….
                    let mut a: Vec<String> = theirs.diagnostics().reason().map(|r| r.to_string().replacen("policy", "p", 1)).collect();
                    a.sort();
                    if let Verdict::Allow { policies } = &ours {
                        let mut b = policies.clone();
                        b.sort();
                        assert_eq!(a, b, "case {cases}: same determining policies");
                    }
                }
            }
            // Deny wins across engines.
            for token in [Some(Ok(())), Some(Err(TokenDenial::NotAllowed("x".into()))), Some(Err(TokenDenial::Limits)), None] {
                let token_denies = matches!(token, Some(Err(_)));
                let d = combine(token, ours.clone());
                if token_denies || matches!(ours, Verdict::Deny { .. }) {
                    assert!(matches!(d, Decision::Deny(_)), "case {cases}: any deny means deny");
                }
            }
            // Adding a forbid never yields an allow.
            let with_forbid = more.decide_tool(p, tool, Some(&args), at);
            if !ours.is_allow() && !matches!(ours, Verdict::Ask { .. }) {
                assert!(matches!(with_forbid, Verdict::Deny { .. }), "case {cases}: a forbid turned deny into {with_forbid:?}\n{more_text}");
            }
            if matches!(with_forbid, Verdict::Allow { .. } | Verdict::Ask { .. }) {
                forbids_added += 1;
            }
        }
    }
    println!("{cases} cases over {sets} policy sets: {allows_seen} allowed, {errors_seen} with evaluation errors");
    assert!(allows_seen > 500 && errors_seen > 50 && forbids_added > 100, "the generator must cover allows ({allows_seen}), errors ({errors_seen}) and forbids ({forbids_added})");
}
