//! The systems under test as child processes: the Rust fixture upstream, the Node
//! `server-everything`, clawgate (relay-only or full pipeline) and the peer proxy `mcp-proxy`,
//! each on a free loopback port, plus what `/proc` says about a process (CPU time, RSS).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clawgate_tests::Client;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

/// A child killed on drop.
pub struct Proc(pub tokio::process::Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id().unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(format!("clawgate-load-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
    pub fn file(&self, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let p = self.0.join(name);
        std::fs::write(&p, contents)?;
        Ok(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `fixture-upstream http` with `extra_tools` generated tools; returns its MCP URL.
pub async fn start_fixture(bin: &str, extra_tools: usize) -> anyhow::Result<(Proc, String)> {
    let mut child = tokio::process::Command::new(bin)
        .args(["http", "--port", "0", "--name", "fx", "--extra-tools", &extra_tools.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {bin}"))?;
    let out = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(out).lines();
    let addr = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await??.context("fixture printed no address")?;
    Ok((Proc(child), format!("http://{addr}/mcp")))
}

/// The Node reference server `@modelcontextprotocol/server-everything` in Streamable HTTP
/// mode; `bin` is its npm launcher (`mcp-server-everything`), run with the `node` on `PATH`.
pub async fn start_everything(bin: &str) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let child = tokio::process::Command::new(bin)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {bin}"))?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    wait_for(&url, None, "echo", json!({"message": "warm"})).await.context("server-everything did not come up")?;
    Ok((Proc(child), url))
}

/// Waits until a session on `url` can call `tool`.
async fn wait_for(url: &str, bearer: Option<&str>, tool: &str, args: serde_json::Value) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match Client::legacy_as(url, json!({}), bearer).await {
            Ok(c) => match c.call(tool, args.clone()).await {
                Ok(e) if e.response.get("result").is_some() && e.response["result"]["isError"] != true => return Ok(()),
                Ok(e) => e.response.to_string(),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("{url} never answered {tool}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How clawgate is configured for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipeline {
    /// Policies and labels off: one `permit` policy, no token, no labels.
    Relay,
    /// Biscuit token, 100 Cedar policies (the data-flow label rules among them), the pinned
    /// schema plus a stricter operator schema, labels, an in-memory rate limit, the audit file.
    Full,
}

/// The tool the load calls: upstream `fx` (the Rust fixture: `echo` or `work`) or `ev`
/// (server-everything's `echo`).
#[derive(Debug, Clone)]
pub struct Target {
    pub upstream: String,
    pub tool: String,
}

impl Target {
    /// The name clients call through a proxy.
    pub fn name(&self) -> String {
        format!("{}__{}", self.upstream, self.tool)
    }
    /// The arguments of one call.
    pub fn args(&self, size: usize, work_ms: u64) -> serde_json::Value {
        match (self.upstream.as_str(), self.tool.as_str()) {
            (_, "work") => json!({"ms": work_ms}),
            ("ev", _) => json!({"message": words(size)}),
            _ => json!({"text": words(size), "to": "bob@example.com"}),
        }
    }
    /// An operator schema stricter than the upstream's.
    fn stricter_schema(&self) -> serde_json::Value {
        match (self.upstream.as_str(), self.tool.as_str()) {
            (_, "work") => json!({"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 1000}}, "required": ["ms"], "additionalProperties": false}),
            ("ev", _) => json!({"type": "object", "properties": {"message": {"type": "string", "maxLength": 1_048_576}}, "required": ["message"], "additionalProperties": false}),
            _ => json!({"type": "object", "properties": {"text": {"type": "string", "maxLength": 1_048_576}, "to": {"type": "string", "maxLength": 320}}, "required": ["text"], "additionalProperties": false}),
        }
    }
}

/// What the full pipeline needs on the client side.
pub struct FullPipeline {
    pub token: String,
}

/// Starts `clawgate serve` in front of `upstreams` ((name, URL) pairs); the load calls
/// `target` (its stricter schema and label rule are configured for the full pipeline).
pub async fn start_gateway(bin: &str, upstreams: &[(String, String)], pipeline: Pipeline, target: &Target, scratch: &Scratch) -> anyhow::Result<(Proc, String, Option<FullPipeline>)> {
    let port = free_port()?;
    let lock = scratch.0.join(format!("pins-{port}.lock"));
    let mut cfg = format!("[listen]\nhttp = \"127.0.0.1:{port}\"\n[limits]\nmax_sessions = 100000\n[pins]\nlockfile = \"{}\"\n", lock.display());
    let mut full = None;
    let schema = scratch.0.join(format!("stricter-{port}.json"));
    match pipeline {
        Pipeline::Relay => {
            cfg.push_str("[policy]\ninline = \"permit (principal, action, resource);\"\n[labels]\nenabled = false\n");
        }
        Pipeline::Full => {
            let (private, public) = clawgate_policies::token::keygen();
            let root = clawgate_policies::token::private_key_from_hex(&private).map_err(anyhow::Error::msg)?;
            let spec = clawgate_policies::token::MintSpec {
                principal: "alice".into(),
                task: Some("bench".into()),
                groups: vec!["team1".into()],
                upstreams: upstreams.iter().map(|u| u.0.clone()).collect(),
                intents: vec![("recipient".into(), "bob@example.com".into())],
                ttl: Some(Duration::from_secs(86_400)),
                ..Default::default()
            };
            let token = clawgate_policies::token::mint(&root, &spec, std::time::SystemTime::now()).map_err(anyhow::Error::msg)?;
            // Attenuated, as an agent's task token would be.
            let token = clawgate_policies::token::attenuate(&token, &format!("check if call_tool($t), $t.starts_with(\"{}__\");", target.upstream)).map_err(anyhow::Error::msg)?;
            let key = scratch.file(&format!("root-{port}.pub"), &public)?;
            let policies = scratch.0.join(format!("policies-{port}"));
            std::fs::create_dir_all(&policies)?;
            std::fs::write(policies.join("bench.cedar"), bench_policies(target))?;
            std::fs::write(&schema, target.stricter_schema().to_string())?;
            let audit = scratch.0.join(format!("audit-{port}.jsonl"));
            let _ = write!(
                cfg,
                "[auth]\nbiscuit_public_key = \"{}\"\n[policy]\ndir = \"{}\"\n[audit]\nfile = \"{}\"\n\
                 [rate_limit]\ncalls = 100000000\nper = \"1s\"\n\
                 [labels]\n[[labels.tool]]\nname = \"{}\"\npublic = true\ncontrol = [\"to\"]\nrecipients = [\"to\"]\n",
                key.display(),
                policies.display(),
                audit.display(),
                target.name()
            );
            full = Some(FullPipeline { token });
        }
    }
    for (name, url) in upstreams {
        let _ = write!(cfg, "[[upstream]]\nname = \"{name}\"\ntransport = \"http\"\nurl = \"{url}\"\ntimeout = \"30s\"\n");
        if *name == target.upstream && pipeline == Pipeline::Full {
            let _ = write!(cfg, "[upstream.tools.{}]\nschema = \"{}\"\ngroups = [\"bench\"]\n", target.tool, schema.display());
        }
    }
    let path = scratch.file(&format!("clawgate-{port}.toml"), &cfg)?;
    let child = tokio::process::Command::new(bin)
        .args(["serve", "--config", &path.to_string_lossy()])
        .env("CLAWGATE_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {bin}"))?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    wait_for(&url, full.as_ref().map(|f| f.token.as_str()), &target.name(), target.args(16, 0)).await.with_context(|| format!("clawgate did not come up (config {})", path.display()))?;
    Ok((Proc(child), url, full))
}

/// `mcp-proxy` (crates.io, joshrotenberg/mcp-proxy) in front of `upstream`, relay only, with
/// the same `__` separator so clients call the same names as through clawgate.
pub async fn start_mcp_proxy(bin: &str, upstream: &str, target: &Target, scratch: &Scratch) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let cfg = format!(
        "[proxy]\nname = \"bench\"\nversion = \"1.0.0\"\nseparator = \"__\"\n[proxy.listen]\nhost = \"127.0.0.1\"\nport = {port}\n\
         [[backends]]\nname = \"{}\"\ntransport = \"http\"\nurl = \"{upstream}\"\n[observability]\nlog_level = \"warn\"\n",
        target.upstream
    );
    let path = scratch.file(&format!("mcp-proxy-{port}.toml"), &cfg)?;
    let child = tokio::process::Command::new(bin)
        .args(["--config", &path.to_string_lossy()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {bin}"))?;
    // mcp-proxy serves MCP at the root path.
    let url = format!("http://127.0.0.1:{port}/");
    wait_for(&url, None, &target.name(), target.args(16, 0)).await.context("mcp-proxy did not come up")?;
    Ok((Proc(child), url))
}

/// The `tcp` system: this same binary, re-run as [`tcp_forward`] in front of `upstream`.
pub async fn start_tcp_forward(upstream: &str, target: &Target) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let rest = upstream.strip_prefix("http://").context("the upstream's URL is not http://host:port/...")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--tcp-forward", &port.to_string(), authority])
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the tcp forwarder")?;
    let url = format!("http://127.0.0.1:{port}{path}");
    wait_for(&url, None, &target.tool, target.args(16, 0)).await.context("the tcp forwarder did not come up")?;
    Ok((Proc(child), url))
}

/// Copies bytes both ways between each accepted connection and a new one to `upstream`, with
/// Nagle off on both, on the same multi-threaded tokio runtime clawgate uses: one more hop,
/// with no HTTP, MCP or policy work at all. What it costs is what any proxy's hop costs here.
pub async fn tcp_forward(port: u16, upstream: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (mut client, _) = listener.accept().await?;
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else { return };
            let _ = (client.set_nodelay(true), up.set_nodelay(true));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        });
    }
}

/// The 100-policy set (`load-tests/policies/bench.cedar`): the data-flow label rules, rules over
/// the bench tools' arguments and principal, and 90 policies over the fixture's generated
/// tools (which a call's slice leaves out, as it would in a real deployment).
pub const BENCH_POLICIES: &str = include_str!("../policies/bench.cedar");

/// The policy set for `target`: server-everything's `echo` takes the place of the fixture's.
fn bench_policies(target: &Target) -> String {
    if target.tool == "echo" {
        BENCH_POLICIES.replace("Action::\"fx__echo\"", &format!("Action::\"{}\"", target.name()))
    } else {
        BENCH_POLICIES.to_owned()
    }
}

/// The generated tools the policy set names (`fixture-upstream --extra-tools`).
pub const BENCH_EXTRA_TOOLS: usize = 45;

/// `size` bytes of deterministic English-like text.
pub fn words(size: usize) -> String {
    const W: [&str; 16] = ["the", "quarterly", "report", "shows", "revenue", "growth", "across", "all", "regions", "with", "strong", "margins", "and", "steady", "customer", "demand"];
    let mut s = String::with_capacity(size + 16);
    let mut i = 0usize;
    while s.len() < size {
        s.push_str(W[(i * 7 + i / 16) % W.len()]);
        s.push(' ');
        i += 1;
    }
    s.truncate(size);
    s
}

/// Total user+system CPU seconds `pid` has used (from `/proc/PID/stat`).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    // CLK_TCK is 100 on every Linux this runs on; `getconf` confirms it when present.
    std::process::Command::new("getconf").arg("CLK_TCK").output().ok().and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse().ok()).unwrap_or(100.0)
}

/// (VmRSS, VmHWM) of `pid` in bytes.
pub fn rss(pid: u32) -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return (0, 0) };
    let kb = |key: &str| status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024;
    (kb("VmRSS:"), kb("VmHWM:"))
}

pub fn exists(p: &str) -> bool {
    Path::new(p).exists()
}
