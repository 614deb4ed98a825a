//! `clawgate check`, `clawgate policy test|diff` and `clawgate schema`: the policy engine run
//! offline against the live tool set, so SecOps can see what a policy change does before it
//! ships.
//!
//! Each command starts the config's upstreams (as `tools diff` does), waits for their lists,
//! and builds the engine exactly as the gateway would.
//!
//! # Recorded calls (`--calls FILE`, JSON Lines)
//! One call per line:
//! `{"tool": "demo__send_email", "arguments": {…}, "principal": "alice", "kind": "user",
//!   "task": "triage", "groups": ["mail"], "intent": {"recipients": ["bob@corp.example"]},
//!   "time": 1795000000}`.
//! Instead of `principal`/`kind`/`task`/`groups`/`intent`, a line may carry `"token": "<biscuit>"`
//! (verified with the config's key, and its authorizer applied) or nothing (anonymous).
//! `time` is Unix seconds (default: now).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clawgate_policies::cedar::{Engine, EngineOptions, Intent, PolicySource, PreparedPrincipal, PrincipalInfo, PrincipalKind};
use clawgate_policies::decision::{Decision, combine};
use serde_json::{Value, json};

use crate::authz::{self, Principal};
use crate::config::Config;
use crate::pipeline::Gateway;

/// Starts a probe gateway (no lockfile writes, no audit) and waits for every upstream's list.
async fn probe(cfg: &Config) -> anyhow::Result<Arc<Gateway>> {
    let gw = crate::tools_cli::probe(cfg)?;
    let _ = gw.catalog().await;
    Ok(gw)
}

/// `clawgate check`: the config, its keys and its policies against the live tool set.
pub async fn check(config: &Path) -> anyhow::Result<String> {
    let cfg = Config::load(config)?;
    let gw = probe(&cfg).await?;
    // Build again now that the tools are listed: this is the validation a reload performs.
    if let Err(e) = gw.authz.reload(&cfg) {
        gw.shutdown().await;
        anyhow::bail!("{e}");
    }
    let n = gw.authz.engine().map_or(0, |e| e.policy_set().policies().count());
    let mut out = format!("{}: ok ({} upstream(s), {n} polic{})", config.display(), cfg.upstreams.len(), if n == 1 { "y" } else { "ies" });
    if let Some(e) = gw.authz.engine() {
        for w in &e.warnings {
            out.push_str(&format!("\nwarning: {w}"));
        }
    }
    if cfg.policy.is_none() {
        out.push_str("\nwarning: no [policy] section: every call will be denied");
    }
    gw.shutdown().await;
    Ok(out)
}

/// `clawgate schema`: the merged Cedar schema.
pub async fn schema(config: Option<&Path>) -> anyhow::Result<String> {
    let cfg = match config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default()?,
    };
    let gw = probe(&cfg).await?;
    let inv = gw.authz.inventory();
    gw.shutdown().await;
    Ok(clawgate_policies::cedar::generate_schema(&inv))
}

struct Call {
    line: usize,
    tool: String,
    arguments: Option<Value>,
    principal: Result<Principal, String>,
    time: SystemTime,
}

fn read_calls(gw: &Gateway, file: &Path) -> anyhow::Result<Vec<Call>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut calls = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", file.display(), i + 1))?;
        let tool = v.get("tool").and_then(Value::as_str).with_context(|| format!("{}:{}: key `tool` must be a string", file.display(), i + 1))?.to_owned();
        let principal = if let Some(t) = v.get("token").and_then(Value::as_str) {
            gw.authz.authenticate(Some(t)).map_err(|e| e.to_string())
        } else if let Some(id) = v.get("principal").and_then(Value::as_str) {
            let strs = |k: &str| -> BTreeSet<String> {
                v.get("intent").and_then(|i| i.get(k)).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default()
            };
            let info = PrincipalInfo {
                id: id.to_owned(),
                kind: if v.get("kind").and_then(Value::as_str) == Some("agent") { PrincipalKind::Agent } else { PrincipalKind::User },
                task: v.get("task").and_then(Value::as_str).map(str::to_owned),
                groups: v.get("groups").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default(),
                intent: Intent { recipients: strs("recipients"), accounts: strs("accounts"), urls: strs("urls") },
            };
            PreparedPrincipal::new(info).map(|p| Principal::ApiKey { principal: Arc::new(p), digest: [1; 32] })
        } else {
            Principal::anonymous()
        };
        let time = v.get("time").and_then(Value::as_u64).map_or_else(SystemTime::now, |t| UNIX_EPOCH + Duration::from_secs(t));
        calls.push(Call { line: i + 1, tool, arguments: v.get("arguments").cloned(), principal, time });
    }
    Ok(calls)
}

fn upstream_of(gw: &Gateway, tool: &str) -> String {
    gw.authz.inventory().tools.iter().find(|t| t.name == tool).map(|t| t.upstream.clone()).unwrap_or_default()
}

/// `clawgate policy test`: the decision for each recorded call, with reasons. Returns how
/// many calls were denied.
pub async fn test(config: &Path, calls_file: &Path) -> anyhow::Result<usize> {
    let cfg = Config::load(config)?;
    let gw = probe(&cfg).await?;
    let calls = read_calls(&gw, calls_file)?;
    let state = gw.authz.state();
    let mut denied = 0;
    let mut out = std::io::stdout().lock();
    for c in calls {
        let upstream = upstream_of(&gw, &c.tool);
        let rec = match &c.principal {
            Err(e) => json!({"line": c.line, "tool": c.tool, "decision": "deny", "reason": "token_invalid", "detail": e}),
            Ok(p) => {
                let d = match gw.authz.check_args(&state, &c.tool, c.arguments.as_ref()) {
                    Err(errs) => Decision::deny(
                        clawgate_policies::decision::DenyReason::InvalidArguments,
                        clawgate_policies::decision::EngineKind::Schema,
                        errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                    ),
                    // No session is replayed here: labels are empty (every argument counts as
                    // trusted and public), so only label-independent rules are exercised.
                    Ok(()) => gw.authz.decide_tool(&state, p, &c.tool, &upstream, c.arguments.as_ref(), &clawgate_policies::labels::LabelView::empty(gw.config().labels.strict), c.time),
                };
                let mut r = authz::summary(&d);
                if let (Some(o), Decision::Ask { message, .. }) = (r.as_object_mut(), &d) {
                    o.insert("message".into(), message.clone().into());
                }
                if let Some(o) = r.as_object_mut() {
                    o.insert("line".into(), c.line.into());
                    o.insert("tool".into(), c.tool.clone().into());
                    o.insert("principal".into(), p.id().into());
                }
                r
            }
        };
        if rec.get("decision").and_then(Value::as_str) == Some("deny") {
            denied += 1;
        }
        let _ = writeln!(out, "{rec}");
    }
    drop(out);
    gw.shutdown().await;
    Ok(denied)
}

/// `clawgate policy diff`: which recorded calls' Cedar verdicts flip between two policy
/// directories (same tool set, same config otherwise). Returns the number of flips.
pub async fn diff(config: Option<&Path>, old: &Path, new: &Path, calls_file: &Path) -> anyhow::Result<usize> {
    let cfg = match config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default()?,
    };
    let gw = probe(&cfg).await?;
    let inv = gw.authz.inventory();
    let opts = EngineOptions { utc_offset_minutes: cfg.policy.as_ref().map_or(0, |p| p.utc_offset_minutes), ..EngineOptions::default() };
    let load = |dir: &Path| -> anyhow::Result<Engine> {
        let pc = crate::config::PolicyConfig { dir: Some(dir.to_owned()), inline: None, embedded: Vec::new(), mode: Default::default(), utc_offset_minutes: 0, approval_timeout: Duration::from_secs(1) };
        let sources: Vec<PolicySource> = authz::read_sources(&pc, &cfg.source).map_err(|e| anyhow::anyhow!(e))?;
        Engine::build(&sources, &inv, opts).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let (a, b) = (load(old)?, load(new)?);
    let calls = read_calls(&gw, calls_file)?;
    let mut flips = 0;
    let mut out = std::io::stdout().lock();
    for c in calls {
        let Ok(p) = &c.principal else { continue };
        let da = combine(None, a.decide_tool(p.prepared(), &c.tool, c.arguments.as_ref(), c.time));
        let db = combine(None, b.decide_tool(p.prepared(), &c.tool, c.arguments.as_ref(), c.time));
        if da.label() != db.label() {
            flips += 1;
            let _ = writeln!(out, "{}", json!({"line": c.line, "tool": c.tool, "principal": p.id(), "old": authz::summary(&da), "new": authz::summary(&db)}));
        }
    }
    let _ = writeln!(out, "{flips} decision(s) flip");
    drop(out);
    gw.shutdown().await;
    Ok(flips)
}
