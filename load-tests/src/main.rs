//! `clawgate-load`: measures `tools/call` through clawgate against direct calls to the same
//! fixture upstream, with the same client, interleaved in one run (A/B/A/B…) so that machine
//! noise hits both sides alike. Prints p50/p90/p99/max latency, throughput and errors per system
//! and the gateway/direct ratios, and writes them as JSON.
//!
//! It starts its own fixture upstream (`fixture-upstream http`) and its own `clawgate serve`
//! process on free loopback ports, so the gateway never shares a runtime with the load.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use clawgate_tests::Client;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

#[derive(Parser, Debug)]
#[command(about = "Side-by-side load test: clawgate vs direct upstream calls")]
struct Args {
    /// The clawgate binary.
    #[arg(long, default_value = "target/release/clawgate")]
    clawgate: String,
    /// The fixture upstream binary.
    #[arg(long, default_value = "target/release/fixture-upstream")]
    fixture: String,
    /// Concurrent sessions, comma-separated.
    #[arg(long, default_value = "1,32", value_delimiter = ',')]
    sessions: Vec<usize>,
    /// Seconds per measured slice.
    #[arg(long, default_value_t = 2.0)]
    slice: f64,
    /// A/B rounds per concurrency level.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Size of the `text` argument in bytes.
    #[arg(long, default_value_t = 1024)]
    arg_size: usize,
    /// Write results here as JSON.
    #[arg(long)]
    out: Option<String>,
    /// `relay`: tools/call through clawgate vs direct. `tools-list`: tools/list through clawgate
    /// federating `--upstreams` fixtures with `--tools` tools each (pinned, sanitised).
    #[arg(long, default_value = "relay")]
    scenario: String,
    #[arg(long, default_value_t = 10)]
    upstreams: usize,
    #[arg(long, default_value_t = 50)]
    tools: usize,
}

struct Proc(tokio::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn start_fixture(bin: &str, extra_tools: usize) -> anyhow::Result<(Proc, String)> {
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

async fn start_gateway(bin: &str, upstreams: &[String]) -> anyhow::Result<(Proc, String, tempfile_path::TempPath)> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let lock = std::env::temp_dir().join(format!("clawgate-load-{}.lock", std::process::id()));
    let _ = std::fs::remove_file(&lock);
    // Relay-only scenario: every call is allowed by an explicit policy.
    let mut cfg = format!("[listen]\nhttp = \"127.0.0.1:{port}\"\n[limits]\nmax_sessions = 100000\n[pins]\nlockfile = \"{}\"\n[policy]\ninline = \"permit (principal, action, resource);\"\n", lock.display());
    for (i, u) in upstreams.iter().enumerate() {
        let name = if i == 0 { "fx".to_owned() } else { format!("fx{i}") };
        cfg.push_str(&format!("[[upstream]]\nname = \"{name}\"\ntransport = \"http\"\nurl = \"{u}\"\ntimeout = \"30s\"\n"));
    }
    let path = tempfile_path::TempPath::new("clawgate-load", ".toml", &cfg)?;
    let child = tokio::process::Command::new(bin)
        .args(["serve", "--config", path.as_str()])
        .env("CLAWGATE_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {bin}"))?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(c) = Client::legacy(&url).await
            && c.call("fx__echo", json!({"text": "warm"})).await.is_ok_and(|e| e.response.get("result").is_some())
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("gateway did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((Proc(child), url, path))
}

mod tempfile_path {
    /// A file removed on drop.
    pub struct TempPath(std::path::PathBuf);
    impl TempPath {
        pub fn new(prefix: &str, suffix: &str, contents: &str) -> std::io::Result<Self> {
            let p = std::env::temp_dir().join(format!("{prefix}-{}{suffix}", std::process::id()));
            std::fs::write(&p, contents)?;
            Ok(Self(p))
        }
        pub fn as_str(&self) -> &str {
            self.0.to_str().unwrap_or_default()
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[derive(Default)]
struct Sample {
    latencies_us: Vec<u64>,
    errors: u64,
    elapsed: Duration,
}

/// Runs `n` sessions against `url` for `slice`, each issuing calls back to back.
async fn measure(clients: &[Arc<Client>], tool: &str, text: &str, slice: Duration) -> Sample {
    let start = Instant::now();
    let end = start + slice;
    let mut tasks = Vec::new();
    for c in clients {
        let c = Arc::clone(c);
        let tool = tool.to_owned();
        let text = text.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                let t0 = Instant::now();
                match c.call(&tool, json!({"text": text})).await {
                    Ok(ex) if ex.response.get("result").is_some() => lat.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX)),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut s = Sample::default();
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            s.latencies_us.extend(lat);
            s.errors += e;
        }
    }
    s.elapsed = start.elapsed();
    s
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

fn summary(samples: &[Sample]) -> Value {
    let mut all: Vec<u64> = samples.iter().flat_map(|s| s.latencies_us.iter().copied()).collect();
    all.sort_unstable();
    let secs: f64 = samples.iter().map(|s| s.elapsed.as_secs_f64()).sum();
    let errors: u64 = samples.iter().map(|s| s.errors).sum();
    json!({
        "calls": all.len(),
        "errors": errors,
        "throughput_per_s": if secs > 0.0 { all.len() as f64 / secs } else { 0.0 },
        "p50_us": pct(&all, 0.50),
        "p90_us": pct(&all, 0.90),
        "p99_us": pct(&all, 0.99),
        "max_us": all.last().copied().unwrap_or_default(),
    })
}

/// tools/list through clawgate over many upstreams: the list is served from the pinned,
/// sanitised catalog, so its cost once warm is the gateway's per-list overhead.
async fn tools_list(args: &Args) -> anyhow::Result<()> {
    let mut procs = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..args.upstreams {
        let (p, u) = start_fixture(&args.fixture, args.tools).await?;
        procs.push(p);
        urls.push(u);
    }
    let (_gw, gw_url, _cfg) = start_gateway(&args.clawgate, &urls).await?;
    let c = Client::legacy(&gw_url).await?;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string().into_bytes();
    let first = c.post_raw(body.clone(), &[]).await?.1;
    let n = first["result"]["tools"].as_array().map_or(0, Vec::len);
    let direct = Client::legacy(urls.first().map(String::as_str).unwrap_or_default()).await?;
    let per_upstream = direct.request("tools/list", None).await?.response["result"]["tools"].as_array().map_or(0, Vec::len);
    let expected = args.upstreams * per_upstream;
    if n != expected {
        bail!("tools/list returned {n} tools, expected {expected}");
    }
    // Raw POSTs, body read as bytes: the client does not parse, so the figure is the round trip.
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(args.slice * args.rounds as f64);
    let mut bytes = 0;
    while Instant::now() < end {
        let t0 = Instant::now();
        let r = c.http.post(&gw_url).header("content-type", "application/json").header("accept", "application/json")
            .header("mcp-session-id", c.session.clone().unwrap_or_default()).body(body.clone()).send().await?;
        bytes = r.bytes().await?.len();
        lat.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    lat.sort_unstable();
    let out = json!({"scenario": "tools-list", "upstreams": args.upstreams, "tools_listed": n, "response_bytes": bytes, "calls": lat.len(),
        "p50_us": pct(&lat, 0.5), "p90_us": pct(&lat, 0.9), "p99_us": pct(&lat, 0.99), "max_us": lat.last().copied().unwrap_or_default()});
    println!("tools/list over {} upstreams x {} tools ({n} listed, {bytes} bytes): p50={}µs p90={}µs p99={}µs over {} calls (target p50 <= 1000µs)",
        args.upstreams, per_upstream, out["p50_us"], out["p90_us"], out["p99_us"], lat.len());
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    drop(procs);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.scenario == "tools-list" {
        return tools_list(&args).await;
    }
    let (_fx, direct_url) = start_fixture(&args.fixture, 0).await?;
    let (_gw, gw_url, _cfg) = start_gateway(&args.clawgate, std::slice::from_ref(&direct_url)).await?;
    let text = "x".repeat(args.arg_size);
    let slice = Duration::from_secs_f64(args.slice);
    let mut results = Vec::new();
    for &n in &args.sessions {
        let mut direct_clients = Vec::new();
        let mut gw_clients = Vec::new();
        for _ in 0..n {
            direct_clients.push(Arc::new(Client::legacy(&direct_url).await?));
            gw_clients.push(Arc::new(Client::legacy(&gw_url).await?));
        }
        // Warm both paths.
        measure(&direct_clients, "echo", &text, Duration::from_millis(200)).await;
        measure(&gw_clients, "fx__echo", &text, Duration::from_millis(200)).await;
        let (mut direct, mut gateway) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            direct.push(measure(&direct_clients, "echo", &text, slice).await);
            gateway.push(measure(&gw_clients, "fx__echo", &text, slice).await);
        }
        let d = summary(&direct);
        let g = summary(&gateway);
        let ratio = |k: &str| g[k].as_f64().unwrap_or(0.0) / d[k].as_f64().unwrap_or(1.0).max(1e-9);
        let added = |k: &str| g[k].as_i64().unwrap_or(0) - d[k].as_i64().unwrap_or(0);
        println!(
            "sessions={n:<4} arg={}B  direct: {:>8.0} calls/s p50={}µs p99={}µs | clawgate: {:>8.0} calls/s p50={}µs p99={}µs | throughput ratio {:.2}, added p50 {}µs, added p99 {}µs, errors {}/{}",
            args.arg_size,
            d["throughput_per_s"].as_f64().unwrap_or(0.0), d["p50_us"], d["p99_us"],
            g["throughput_per_s"].as_f64().unwrap_or(0.0), g["p50_us"], g["p99_us"],
            ratio("throughput_per_s"), added("p50_us"), added("p99_us"), d["errors"], g["errors"],
        );
        results.push(json!({"sessions": n, "arg_size": args.arg_size, "rounds": args.rounds, "slice_s": args.slice, "direct": d, "clawgate": g,
            "throughput_ratio": ratio("throughput_per_s"), "added_p50_us": added("p50_us"), "added_p99_us": added("p99_us")}));
    }
    let out = json!({"machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)}, "results": results});
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    let errors: u64 = out["results"].as_array().map(|r| r.iter().map(|x| x["clawgate"]["errors"].as_u64().unwrap_or(0) + x["direct"]["errors"].as_u64().unwrap_or(0)).sum()).unwrap_or(0);
    if errors > 0 {
        bail!("{errors} calls failed");
    }
    Ok(())
}
