//! `clawgate tools diff` and `clawgate tools approve`: review what changed in upstream
//! definitions against the lockfile, and approve it. Both connect to the configured upstreams
//! exactly as the gateway does, list them, and compare; only `approve` writes the lockfile (a
//! running gateway picks the change up within a second).

use std::path::Path;

/// Prints a line to stdout; a closed pipe (`| head`) is not an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

use clawgate_policies::integrity::{canonical, diff, poison};

use crate::catalog::{self, Namespace, UpstreamLists, UpstreamPolicy};
use crate::config::{Config, PinMode};
use crate::pins::{Kind, LockEntry, LockFile};
use crate::pipeline::Gateway;

/// One definition as an upstream lists it now, with where it would be exposed.
struct Current {
    upstream: String,
    kind: Kind,
    original: String,
    exposed: String,
    definition: serde_json::Value,
}

/// A throwaway gateway for offline commands. Listing must not write first-use pins: it runs
/// with in-memory pins. Nor may it write to the audit log, whose chain belongs to the running
/// gateway.
pub fn probe(cfg: &Config) -> anyhow::Result<std::sync::Arc<Gateway>> {
    let mut probe = cfg.clone();
    probe.pins.lockfile = None;
    probe.audit.file = None;
    Gateway::start(probe).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn current(cfg: &Config) -> anyhow::Result<(Vec<Current>, Vec<(String, Option<UpstreamLists>)>)> {
    let gw = probe(cfg)?;
    let lists = gw.upstream_lists().await;
    gw.shutdown().await;
    let mut out = Vec::new();
    for ((name, l), up) in lists.iter().zip(&cfg.upstreams) {
        let policy = policy_of(up);
        let Some(l) = l else { continue };
        for (kind, defs) in [(Kind::Tool, &l.tools), (Kind::Prompt, &l.prompts), (Kind::ResourceTemplate, &l.resource_templates)] {
            for d in defs {
                let Some(original) = catalog::original_name(kind, d) else { continue };
                let Some(exposed) = catalog::exposed_name(&policy, kind, original) else { continue };
                out.push(Current { upstream: name.clone(), kind, original: original.to_owned(), exposed, definition: d.clone() });
            }
        }
    }
    Ok((out, lists))
}

fn policy_of(up: &crate::config::UpstreamConfig) -> UpstreamPolicy {
    UpstreamPolicy { name: up.name.clone(), ns: Namespace { prefix: up.prefix.clone() }, pin: up.pin, poisoning: up.poisoning, overrides: up.tools.clone() }
}

fn lockfile(cfg: &Config) -> anyhow::Result<(std::path::PathBuf, LockFile)> {
    let path = cfg.pins.lockfile.clone().ok_or_else(|| anyhow::anyhow!("this config keeps no lockfile"))?;
    let lock = LockFile::load(&path).map_err(|e| anyhow::anyhow!(e))?;
    Ok((path, lock))
}

/// Prints every difference between the upstreams and the lockfile. Returns how many there are.
pub async fn diff_cmd(config: &Path) -> anyhow::Result<usize> {
    let (lines, n) = diff_report(config).await?;
    for l in lines {
        say!("{l}");
    }
    Ok(n)
}

/// Every difference between the upstreams and the lockfile, one line each (changed paths
/// indented under their definition), and how many definitions differ.
pub async fn diff_report(config: &Path) -> anyhow::Result<(Vec<String>, usize)> {
    let mut report = Vec::new();
    macro_rules! say {
        ($($arg:tt)*) => { report.push(format!($($arg)*)) };
    }
    let cfg = Config::load(config)?;
    let (_, lock) = lockfile(&cfg)?;
    let (now, lists) = current(&cfg).await?;
    let pinned_upstreams: Vec<&str> = cfg.upstreams.iter().filter(|u| u.pin != PinMode::Off).map(|u| u.name.as_str()).collect();
    let mut n = 0;
    for (name, l) in &lists {
        if l.is_none() {
            say!("? upstream `{name}` could not be listed");
            n += 1;
        }
    }
    let policies: Vec<UpstreamPolicy> = cfg.upstreams.iter().map(policy_of).collect();
    let raw: Vec<Option<UpstreamLists>> = lists.iter().map(|(_, l)| l.clone()).collect();
    let names = catalog::tool_names(&policies, &raw);
    for c in &now {
        let what = format!("{} `{}` (upstream `{}`, `{}`)", c.kind.as_str(), c.exposed, c.upstream, c.original);
        let entry = lock.get(&c.upstream, c.kind, &c.original);
        let digest = canonical::digest(&c.definition);
        if pinned_upstreams.contains(&c.upstream.as_str()) {
            match entry {
                None => {
                    say!("+ new {what}: not in the lockfile ({digest})");
                    n += 1;
                }
                Some(e) if e.digest != digest => {
                    say!("~ changed {what}: {} → {digest}", e.digest);
                    for ch in diff::diff(&e.definition, &c.definition) {
                        say!("    {}", diff::describe(&ch, 120));
                    }
                    n += 1;
                }
                Some(_) => {}
            }
        }
        let reviewed = entry.is_some_and(|e| e.reviewed && e.digest == digest);
        if c.kind != Kind::ResourceTemplate && !reviewed {
            let i = cfg.upstreams.iter().position(|u| u.name == c.upstream).unwrap_or(usize::MAX);
            let others = catalog::names_of_others(&names, i);
            for p in poison::inspect(&c.definition, &others) {
                say!("! flagged {what}: {p}");
                n += 1;
            }
        }
    }
    for (upstream, ul) in &lock.upstreams {
        for (kind, section) in [(Kind::Tool, &ul.tools), (Kind::Prompt, &ul.prompts), (Kind::ResourceTemplate, &ul.resource_templates)] {
            for name in section.keys() {
                let listed = lists.iter().any(|(u, l)| u == upstream && l.is_some());
                if listed && !now.iter().any(|c| &c.upstream == upstream && c.kind == kind && &c.original == name) {
                    say!("- removed {} `{name}` (upstream `{upstream}`): pinned but no longer listed", kind.as_str());
                    n += 1;
                }
            }
        }
    }
    if n == 0 {
        say!("no differences: every listed definition matches {}", cfg.pins.lockfile.as_deref().map(|p| p.display().to_string()).unwrap_or_default());
    }
    Ok((report, n))
}

/// Approves the named definitions (as clients see them, e.g. `demo__send_email`) in their
/// current form, or every current definition with `all`.
pub async fn approve_cmd(config: &Path, names: &[String], all: bool) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let (path, mut lock) = lockfile(&cfg)?;
    let (now, _) = current(&cfg).await?;
    let mut missing: Vec<&String> = names.iter().filter(|n| !now.iter().any(|c| &c.exposed == *n)).collect();
    missing.dedup();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
        anyhow::bail!("not listed by any upstream: {} (names are as clients see them, e.g. `<prefix>__<tool>`)", list.join(", "));
    }
    let mut approved = 0;
    for c in now.iter().filter(|c| all || names.contains(&c.exposed)) {
        let digest = canonical::digest(&c.definition);
        lock.set(&c.upstream, c.kind, &c.original, LockEntry { digest: digest.clone(), reviewed: true, definition: c.definition.clone() });
        say!("approved {} `{}` ({digest})", c.kind.as_str(), c.exposed);
        approved += 1;
    }
    if approved == 0 {
        anyhow::bail!("nothing to approve: name definitions, or pass --all");
    }
    lock.save(&path).map_err(|e| anyhow::anyhow!(e))?;
    say!("wrote {}", path.display());
    Ok(())
}
