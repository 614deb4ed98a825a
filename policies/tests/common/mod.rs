//! Shared fixtures: a demo-like tool set, principals, and the policy library.
#![allow(dead_code, clippy::unwrap_used, reason = "test fixtures: a panic is a failed test; each test binary uses a different part")]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clawgate_policies::cedar::{Engine, EngineOptions, Intent, Inventory, PolicySource, PreparedPrincipal, PrincipalInfo, PrincipalKind, ToolAttrs, ToolMeta, UpstreamMeta};
use serde_json::{Value, json};

/// Monday 2026-11-23 10:00 UTC.
pub fn monday_10() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_428_000)
}

/// Sunday 2026-11-22 10:00 UTC.
pub fn sunday_10() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_341_600)
}

fn tool(name: &str, upstream: &str, props: Value, required: &[&str], read_only: bool, destructive: bool, groups: &[&str]) -> ToolMeta {
    ToolMeta {
        name: name.into(),
        upstream: upstream.into(),
        input_schema: json!({"type": "object", "properties": props, "required": required}),
        attrs: ToolAttrs { read_only, destructive, open_world: false, ..ToolAttrs::default() },
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

pub fn inventory() -> Inventory {
    let up = |n: &str| UpstreamMeta { name: n.into(), trusted: false, known: true, prefix: n.into() };
    Inventory {
        upstreams: vec![up("demo"), up("admin")],
        tools: vec![
            tool("demo__list_threads", "demo", json!({}), &[], true, false, &[]),
            tool("demo__read_thread", "demo", json!({"thread_id": {"type": "string"}}), &["thread_id"], true, false, &[]),
            tool(
                "demo__send_email",
                "demo",
                json!({"to": {"type": "array", "items": {"type": "string"}}, "subject": {"type": "string"}, "body": {"type": "string"}}),
                &["to", "body"],
                false,
                false,
                &["send"],
            ),
            tool("demo__add_note", "demo", json!({"title": {"type": "string"}, "text": {"type": "string"}}), &["title", "text"], false, false, &[]),
            tool("demo__delete_note", "demo", json!({"id": {"type": "integer"}}), &["id"], false, true, &[]),
            tool("admin__reset", "admin", json!({"confirm": {"type": "boolean"}}), &["confirm"], false, true, &[]),
        ],
        prompts: Vec::new(),
    }
}

/// Argument assignments worth trying for each tool (cover every branch of the library).
pub fn candidate_args(tool: &str) -> Vec<Value> {
    match tool {
        "demo__read_thread" => vec![json!({"thread_id": "t-100"})],
        "demo__send_email" => vec![
            json!({"to": [], "body": "b"}),
            json!({"to": ["bob@corp.example"], "body": "b"}),
            json!({"to": ["eve@evil.example"], "body": "b"}),
            json!({"to": ["bob@corp.example", "eve@evil.example"], "body": "b", "subject": "s"}),
        ],
        "demo__add_note" => vec![json!({"title": "t", "text": "x"})],
        "demo__delete_note" => vec![json!({"id": 1})],
        "admin__reset" => vec![json!({"confirm": true}), json!({"confirm": false})],
        _ => vec![json!({})],
    }
}

pub fn principal(id: &str, task: Option<&str>, groups: &[&str], recipients: &[&str]) -> PreparedPrincipal {
    let info = PrincipalInfo {
        id: id.into(),
        kind: PrincipalKind::User,
        task: task.map(str::to_owned),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        intent: Intent { recipients: recipients.iter().map(|r| (*r).to_owned()).collect::<BTreeSet<_>>(), ..Intent::default() },
    };
    PreparedPrincipal::new(info).unwrap()
}

pub fn anonymous() -> PreparedPrincipal {
    PreparedPrincipal::new(PrincipalInfo::anonymous()).unwrap()
}

pub fn library_file(name: &str) -> PolicySource {
    let path = format!("{}/library/{name}", env!("CARGO_MANIFEST_DIR"));
    PolicySource { file: format!("library/{name}"), text: std::fs::read_to_string(&path).unwrap() }
}

pub const LIBRARY: [&str; 7] = [
    "base-permit.cedar",
    "read-only-task.cedar",
    "no-destructive.cedar",
    "task-allowlist.cedar",
    "recipient-allowlist.cedar",
    "business-hours.cedar",
    "admin-only-upstream.cedar",
];

pub fn engine(files: &[&str]) -> Engine {
    let sources: Vec<PolicySource> = files.iter().map(|f| library_file(f)).collect();
    Engine::build(&sources, &inventory(), EngineOptions::default()).unwrap()
}
