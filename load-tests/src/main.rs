//! `clawgate-load`: measures `tools/call` through clawgate against direct calls to the same
//! upstream and against a peer proxy, with the same client, interleaved in one run
//! (A/B/C/A/B/C…) so that machine noise hits every system alike. Prints p50/p90/p99/max
//! latency, throughput, errors and the gateway's CPU per call for each system, and the ratios,
//! and writes them as JSON.
//!
//! It starts every process itself (the fixture or `server-everything`, `clawgate serve`
//! relay-only and with the full pipeline, `mcp-proxy`) on free loopback ports, so no system
//! shares a runtime with the load. Scenarios: `relay` (the default), `tools-list`, `memory`.
//! `load-tests/bench.sh` runs the whole report; `docs/performance.md` explains the figures.

mod procs;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use clawgate_tests::Client;
use procs::{Pipeline, Proc, Scratch};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Side-by-side load test: clawgate vs direct upstream calls vs a peer proxy")]
struct Args {
    /// The clawgate binary.
    #[arg(long, default_value = "target/release/clawgate")]
    clawgate: String,
    /// A second clawgate binary (or a script that execs one) for A/B runs: the systems
    /// `relay-b` and `full-b` run it with the same configuration as `relay` and `full`, in the
    /// same interleaved run, and the ratios `relay-b/relay` and `full-b/full` are printed.
    #[arg(long)]
    clawgate_b: Option<String>,
    /// The fixture upstream binary.
    #[arg(long, default_value = "target/release/fixture-upstream")]
    fixture: String,
    /// The `mcp-proxy` binary (crates.io); the `mcp-proxy` system needs it.
    #[arg(long)]
    mcp_proxy: Option<String>,
    /// `fixture` (the Rust fixture) or `everything` (Node `server-everything`; needs
    /// `--everything`).
    #[arg(long, default_value = "fixture")]
    upstream: String,
    /// server-everything's npm launcher (`.cache/npm/.../mcp-server-everything`), run with the
    /// Node ≥ 22 on `PATH` (`. .cache/env.sh`).
    #[arg(long)]
    everything: Option<String>,
    /// Systems to interleave: `direct`, `relay` (clawgate, policies and labels off), `full`
    /// (clawgate, full pipeline), `mcp-proxy`, `tcp` (a process that only copies bytes between
    /// the client's connection and one of its own to the upstream: the floor any proxy's extra
    /// hop costs on this machine), `relay-b` and `full-b` (the same with `--clawgate-b`).
    #[arg(long, default_value = "direct,relay,full", value_delimiter = ',')]
    systems: Vec<String>,
    /// The fixture tool: `echo` (null work) or `work` (busy-waits `--work-ms`).
    #[arg(long, default_value = "echo")]
    tool: String,
    #[arg(long, default_value_t = 1)]
    work_ms: u64,
    /// Clients of clawgate speak `legacy` (2025-11-25 sessions) or `stateless` (2026-07-28).
    /// Direct and peer-proxy calls are always 2025-11-25, as the upstream is.
    #[arg(long, default_value = "legacy")]
    era: String,
    /// Concurrent sessions, comma-separated.
    #[arg(long, default_value = "1,32", value_delimiter = ',')]
    sessions: Vec<usize>,
    /// Seconds per measured slice.
    #[arg(long, default_value_t = 2.0)]
    slice: f64,
    /// Interleaved rounds per (sessions, size) point.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Sizes of the text argument in bytes, comma-separated.
    #[arg(long = "arg-size", default_value = "1024", value_delimiter = ',')]
    arg_sizes: Vec<usize>,
    /// Give every call new text (each word suffixed with the call's number, same size), as a
    /// tool that returns new data does: the gateway records every result as a new field
    /// instead of recognising the echo it has already stored.
    #[arg(long)]
    fresh_text: bool,
    /// Write results here as JSON.
    #[arg(long)]
    out: Option<String>,
    /// `relay`, `tools-list` (tools/list through clawgate over `--upstreams` fixtures with
    /// `--tools` tools each) or `memory` (clawgate's RSS idle and with `--idle-sessions` open).
    #[arg(long, default_value = "relay")]
    scenario: String,
    #[arg(long, default_value_t = 10)]
    upstreams: usize,
    #[arg(long, default_value_t = 50)]
    tools: usize,
    #[arg(long, default_value_t = 1000)]
    idle_sessions: usize,
    /// Internal: run as the `tcp` system's forwarder (LISTEN_PORT UPSTREAM_ADDR) and nothing else.
    #[arg(long, hide = true, num_args = 2, value_names = ["LISTEN_PORT", "UPSTREAM"])]
    tcp_forward: Option<Vec<String>>,
}

/// One system under test, ready to take load.
struct System {
    name: String,
    url: String,
    tool: String,
    /// The process whose CPU is charged to this system (not for `direct`).
    pid: Option<u32>,
    bearer: Option<String>,
    stateless: bool,
}

#[derive(Default)]
struct Sample {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    cpu_s: f64,
}

async fn clients(sys: &System, n: usize) -> anyhow::Result<Vec<Arc<Client>>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let c = if sys.stateless {
            let mut c = Client::stateless(&sys.url);
            c.bearer.clone_from(&sys.bearer);
            c
        } else {
            Client::legacy_as(&sys.url, json!({}), sys.bearer.as_deref()).await.with_context(|| format!("{}: cannot open a session", sys.name))?
        };
        v.push(Arc::new(c));
    }
    Ok(v)
}

/// Numbers the calls made with `--fresh-text`, across systems, so that no text repeats.
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `args` with its text argument (`text` or `message`) made unique to call `n`: every word
/// suffixed with `n` in hex, cut back to the original length.
fn fresh_text(args: &Value, n: u64) -> Value {
    let mut out = args.clone();
    for key in ["text", "message"] {
        if let Some(Value::String(t)) = out.get_mut(key) {
            let mut s = String::with_capacity(t.len() * 2);
            for w in t.split(' ') {
                if !s.is_empty() {
                    s.push(' ');
                }
                s.push_str(w);
                if !w.is_empty() {
                    s.push_str(&format!("{n:x}"));
                }
            }
            let mut len = t.len();
            while !s.is_char_boundary(len) {
                len -= 1;
            }
            s.truncate(len);
            *t = s;
        }
    }
    out
}

/// Runs every client for `slice`, each issuing calls back to back.
async fn measure(sys: &System, clients: &[Arc<Client>], args: &Value, slice: Duration, fresh: bool) -> Sample {
    let cpu0 = sys.pid.map(procs::cpu_seconds);
    let start = Instant::now();
    let end = start + slice;
    let mut tasks = Vec::new();
    for c in clients {
        let c = Arc::clone(c);
        let tool = sys.tool.clone();
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first = None;
            while Instant::now() < end {
                let t0 = Instant::now();
                let call = if fresh { fresh_text(&args, CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) } else { args.clone() };
                match c.call(&tool, call).await {
                    Ok(ex) if ex.response.get("result").is_some() && ex.response["result"]["isError"] != true => {
                        lat.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    Ok(ex) => {
                        errors += 1;
                        first.get_or_insert_with(|| ex.response.to_string().chars().take(300).collect());
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (lat, errors, first)
        }));
    }
    let mut s = Sample::default();
    for t in tasks {
        if let Ok((lat, e, first)) = t.await {
            s.latencies_us.extend(lat);
            s.errors += e;
            if s.first_error.is_none() {
                s.first_error = first;
            }
        }
    }
    s.elapsed = start.elapsed();
    s.cpu_s = match (sys.pid, cpu0) {
        (Some(pid), Some(c0)) => procs::cpu_seconds(pid) - c0,
        _ => 0.0,
    };
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
    let cpu: f64 = samples.iter().map(|s| s.cpu_s).sum();
    let calls = all.len() as f64;
    let throughput = if secs > 0.0 { calls / secs } else { 0.0 };
    let mut v = json!({
        "calls": all.len(),
        "errors": errors,
        "throughput_per_s": throughput,
        "p50_us": pct(&all, 0.50),
        "p90_us": pct(&all, 0.90),
        "p99_us": pct(&all, 0.99),
        "max_us": all.last().copied().unwrap_or_default(),
        "cpu_s": cpu,
        // vCPU used per 1,000 calls/s = CPU seconds per 1,000 calls.
        "vcpu_per_1k_calls_per_s": if calls > 0.0 { cpu * 1000.0 / calls } else { 0.0 },
    });
    if let Some(e) = samples.iter().find_map(|s| s.first_error.clone()) {
        v["first_error"] = e.into();
    }
    v
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

/// tools/list through clawgate over many upstreams: the list is served from the pinned,
/// sanitised catalog, so its cost once warm is the gateway's per-list overhead.
async fn tools_list(args: &Args) -> anyhow::Result<Value> {
    let scratch = Scratch::new("list")?;
    let mut procs = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..args.upstreams {
        let (p, u) = procs::start_fixture(&args.fixture, args.tools).await?;
        procs.push(p);
        urls.push(u);
    }
    let named: Vec<(String, String)> = urls.iter().enumerate().map(|(i, u)| (if i == 0 { "fx".to_owned() } else { format!("fx{i}") }, u.clone())).collect();
    let target = procs::Target { upstream: "fx".into(), tool: "echo".into() };
    let (_gw, gw_url, _) = procs::start_gateway(&args.clawgate, &named, Pipeline::Relay, &target, &scratch).await?;
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
        let r = c.http.post(&gw_url).header("content-type", "application/json").header("accept", "application/json").header("mcp-session-id", c.session.clone().unwrap_or_default()).body(body.clone()).send().await?;
        bytes = r.bytes().await?.len();
        lat.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    lat.sort_unstable();
    let out = json!({"scenario": "tools-list", "upstreams": args.upstreams, "tools_listed": n, "response_bytes": bytes, "calls": lat.len(),
        "p50_us": pct(&lat, 0.5), "p90_us": pct(&lat, 0.9), "p99_us": pct(&lat, 0.99), "max_us": lat.last().copied().unwrap_or_default()});
    println!(
        "tools/list over {} upstreams x {} tools ({n} listed, {bytes} bytes): p50={}µs p90={}µs p99={}µs over {} calls",
        args.upstreams,
        per_upstream,
        out["p50_us"],
        out["p90_us"],
        out["p99_us"],
        lat.len()
    );
    drop(procs);
    Ok(out)
}

/// clawgate's resident memory: idle (upstream connected, catalog built, no session), then
/// with `--idle-sessions` sessions open, each having made one call (so each holds its label
/// scope and session state).
async fn memory(args: &Args) -> anyhow::Result<Value> {
    let scratch = Scratch::new("mem")?;
    let (_fx, fx_url) = procs::start_fixture(&args.fixture, procs::BENCH_EXTRA_TOOLS).await?;
    let target = procs::Target { upstream: "fx".into(), tool: "echo".into() };
    let mut out = Vec::new();
    for pipeline in [Pipeline::Relay, Pipeline::Full] {
        let (gw, url, full) = procs::start_gateway(&args.clawgate, &[("fx".to_owned(), fx_url.clone())], pipeline, &target, &scratch).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = procs::rss(gw.pid());
        let bearer = full.as_ref().map(|f| f.token.clone());
        let call = target.args(1024, 0);
        // Sessions opened in parallel batches; each makes one call.
        let mut open = Vec::with_capacity(args.idle_sessions);
        let batch = 50;
        let mut i = 0;
        while i < args.idle_sessions {
            let mut set = Vec::new();
            for _ in i..(i + batch).min(args.idle_sessions) {
                let url = url.clone();
                let bearer = bearer.clone();
                let call = call.clone();
                set.push(tokio::spawn(async move {
                    let c = Client::legacy_as(&url, json!({}), bearer.as_deref()).await?;
                    let r = c.call("fx__echo", call).await?;
                    if r.response.get("result").is_none() {
                        bail!("call failed: {}", r.response);
                    }
                    anyhow::Ok(c)
                }));
            }
            for t in set {
                open.push(t.await??);
            }
            i += batch;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loaded = procs::rss(gw.pid());
        let name = if pipeline == Pipeline::Full { "full" } else { "relay" };
        println!(
            "memory {name:<5}: idle RSS {:.1} MB; with {} sessions open RSS {:.1} MB (peak {:.1} MB)",
            idle.0 as f64 / 1e6,
            open.len(),
            loaded.0 as f64 / 1e6,
            loaded.1 as f64 / 1e6
        );
        out.push(json!({"pipeline": name, "idle_rss_bytes": idle.0, "sessions": open.len(), "rss_bytes": loaded.0, "peak_rss_bytes": loaded.1}));
        drop(open);
        drop(gw);
    }
    Ok(json!({"scenario": "memory", "results": out}))
}

async fn relay(args: &Args) -> anyhow::Result<Value> {
    let scratch = Scratch::new("relay")?;
    // The fixture always runs: it is the upstream, or (with server-everything) it carries the
    // tools the 100-policy set names, so the full pipeline's policies are the same.
    let (_fx, fx_url) = procs::start_fixture(&args.fixture, procs::BENCH_EXTRA_TOOLS).await?;
    let mut upstreams = vec![("fx".to_owned(), fx_url.clone())];
    let mut _everything = None;
    let (target, up_url) = if args.upstream == "everything" {
        let bin = args.everything.as_deref().context("--upstream everything needs --everything PATH (the mcp-server-everything launcher)")?;
        let (p, url) = procs::start_everything(bin).await?;
        _everything = Some(p);
        upstreams.push(("ev".to_owned(), url.clone()));
        (procs::Target { upstream: "ev".into(), tool: "echo".into() }, url)
    } else {
        (procs::Target { upstream: "fx".into(), tool: args.tool.clone() }, fx_url)
    };
    let stateless = args.era == "stateless";
    let mut keep: Vec<Proc> = Vec::new();
    let mut systems = Vec::new();
    for s in &args.systems {
        let sys = match s.as_str() {
            "direct" => System { name: s.clone(), url: up_url.clone(), tool: target.tool.clone(), pid: None, bearer: None, stateless: false },
            "relay" | "full" | "relay-b" | "full-b" => {
                let pipeline = if s.starts_with("full") { Pipeline::Full } else { Pipeline::Relay };
                let bin = if s.ends_with("-b") { args.clawgate_b.as_deref().context("the relay-b and full-b systems need --clawgate-b PATH")? } else { args.clawgate.as_str() };
                let (p, url, full) = procs::start_gateway(bin, &upstreams, pipeline, &target, &scratch).await?;
                let sys = System { name: s.clone(), url, tool: target.name(), pid: Some(p.pid()), bearer: full.map(|f| f.token), stateless };
                keep.push(p);
                sys
            }
            "mcp-proxy" => {
                let bin = args.mcp_proxy.as_deref().context("the mcp-proxy system needs --mcp-proxy PATH (load-tests/bench.sh installs it)")?;
                let (p, url) = procs::start_mcp_proxy(bin, &up_url, &target, &scratch).await?;
                let sys = System { name: s.clone(), url, tool: target.name(), pid: Some(p.pid()), bearer: None, stateless: false };
                keep.push(p);
                sys
            }
            "tcp" => {
                let (p, url) = procs::start_tcp_forward(&up_url, &target).await?;
                let sys = System { name: s.clone(), url, tool: target.tool.clone(), pid: Some(p.pid()), bearer: None, stateless: false };
                keep.push(p);
                sys
            }
            other => bail!("unknown system {other:?} (direct, relay, full, relay-b, full-b, mcp-proxy, tcp)"),
        };
        systems.push(sys);
    }
    let slice = Duration::from_secs_f64(args.slice);
    let mut results = Vec::new();
    let mut errors = 0u64;
    for &size in &args.arg_sizes {
        let call = target.args(size, args.work_ms);
        for &n in &args.sessions {
            let mut cs = Vec::new();
            for sys in &systems {
                cs.push(clients(sys, n).await?);
            }
            // Warm every path.
            for (sys, c) in systems.iter().zip(&cs) {
                measure(sys, c, &call, Duration::from_millis(300), args.fresh_text).await;
            }
            let mut samples: Vec<Vec<Sample>> = systems.iter().map(|_| Vec::new()).collect();
            for _ in 0..args.rounds {
                for (i, (sys, c)) in systems.iter().zip(&cs).enumerate() {
                    let s = measure(sys, c, &call, slice, args.fresh_text).await;
                    if let Some(v) = samples.get_mut(i) {
                        v.push(s);
                    }
                }
            }
            let mut point = json!({"sessions": n, "arg_size": size, "fresh_text": args.fresh_text, "tool": target.name(), "work_ms": if target.tool == "work" { args.work_ms } else { 0 },
                "upstream": args.upstream, "era": args.era, "rounds": args.rounds, "slice_s": args.slice, "systems": {}});
            let mut line = format!("sessions={n:<4} arg={size:<6}");
            for (sys, s) in systems.iter().zip(&samples) {
                let sum = summary(s);
                errors += sum["errors"].as_u64().unwrap_or(0);
                line.push_str(&format!(
                    " | {}: {:.0}/s p50={} p99={}{}",
                    sys.name,
                    f(&sum, "throughput_per_s"),
                    sum["p50_us"],
                    sum["p99_us"],
                    if sys.pid.is_some() { format!(" cpu/1k={:.3}", f(&sum, "vcpu_per_1k_calls_per_s")) } else { String::new() }
                ));
                if let Some(e) = sum.get("first_error") {
                    line.push_str(&format!(" first error: {e}"));
                }
                point["systems"][&sys.name] = sum;
            }
            let mut ratios = json!({});
            let sys = &point["systems"];
            let pairs = [("relay", "direct"), ("full", "direct"), ("relay", "mcp-proxy"), ("full", "mcp-proxy"), ("mcp-proxy", "direct"), ("tcp", "direct"), ("relay", "tcp"), ("full", "tcp"), ("relay-b", "relay"), ("full-b", "full"), ("relay-b", "direct"), ("full-b", "direct")];
            for (a, b) in pairs {
                if sys.get(a).is_some() && sys.get(b).is_some() {
                    let r = f(&sys[a], "throughput_per_s") / f(&sys[b], "throughput_per_s").max(1e-9);
                    ratios[format!("{a}/{b}")] = r.into();
                    line.push_str(&format!("\n    {a}/{b}: throughput {r:.2}x"));
                    if b == "direct" {
                        let added50 = f(&sys[a], "p50_us") - f(&sys[b], "p50_us");
                        let added99 = f(&sys[a], "p99_us") - f(&sys[b], "p99_us");
                        ratios[format!("{a}_added_p50_us")] = added50.into();
                        ratios[format!("{a}_added_p99_us")] = added99.into();
                        line.push_str(&format!(", added p50 {added50:.0}µs, added p99 {added99:.0}µs"));
                    }
                    if a.ends_with("-b") && b != "direct" {
                        let cpu = f(&sys[a], "vcpu_per_1k_calls_per_s") / f(&sys[b], "vcpu_per_1k_calls_per_s").max(1e-9);
                        ratios[format!("{a}/{b}_cpu_per_call")] = cpu.into();
                        line.push_str(&format!(", CPU per call {cpu:.2}x"));
                    }
                }
            }
            point["ratios"] = ratios;
            println!("{line}");
            results.push(point);
        }
    }
    if errors > 0 {
        bail!("{errors} calls failed");
    }
    Ok(json!({"scenario": "relay", "results": results}))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some([port, upstream]) = args.tcp_forward.as_deref() {
        return procs::tcp_forward(port.parse().context("--tcp-forward: not a port")?, upstream).await;
    }
    for (bin, what) in [(&args.clawgate, "--clawgate"), (&args.fixture, "--fixture")] {
        if !procs::exists(bin) {
            bail!("{what} {bin}: no such file (build it: cargo build --release --workspace --bins)");
        }
    }
    let out = match args.scenario.as_str() {
        "tools-list" => tools_list(&args).await?,
        "memory" => memory(&args).await?,
        "relay" => relay(&args).await?,
        other => bail!("unknown scenario {other:?} (relay, tools-list, memory)"),
    };
    let out = json!({"machine": machine(), "args": format!("{args:?}"), "result": out});
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&out)?).with_context(|| format!("cannot write {path}"))?;
    }
    Ok(())
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_owned()));
    json!({"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "cpu": cpu})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_text_keeps_the_size_and_changes_every_word() {
        let args = json!({"text": procs::words(1024), "to": "bob@example.com"});
        let (a, b) = (fresh_text(&args, 1), fresh_text(&args, 2));
        let (ta, tb) = (a["text"].as_str().unwrap(), b["text"].as_str().unwrap());
        assert_eq!(ta.len(), 1024);
        assert_eq!(tb.len(), 1024);
        assert_eq!(a["to"], args["to"]);
        let original: Vec<&str> = args["text"].as_str().unwrap().split(' ').collect();
        // Every whole word differs from the original and between calls (the last may be cut).
        for ((o, x), y) in original.iter().zip(ta.split(' ')).zip(tb.split(' ')).take(original.len() - 2) {
            assert!(x != *o && x != y && x.starts_with(o), "{o} {x} {y}");
        }
    }
}
