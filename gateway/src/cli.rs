//! The command line: `serve`, `stdio`, `check`, and the bundled `demo-upstream`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::pipeline::Gateway;

#[derive(Debug, Parser)]
#[command(name = "clawgate", version, about = "MCP policy gateway")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP over Streamable HTTP. Without --config, runs the embedded quickstart (the
    /// bundled demo upstream, in-memory state).
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override `[listen] http`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Serve one MCP client over stdin/stdout (Claude Desktop-style). Logs go to stderr.
    Stdio {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file, its keys and its policies (against the upstreams' live tools,
    /// as a reload would): exit 0 if valid, 1 with precise messages if not.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Test and compare Cedar policies against recorded calls.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print the merged Cedar schema (base + one typed action per tool) for Cedar's own tools.
    Schema {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Review and approve upstream tool definitions against the lockfile.
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Biscuit capability tokens: keys, minting, offline attenuation, inspection.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect data-flow labels held by a running gateway (through its admin API).
    #[command(subcommand)]
    Labels(LabelsCommand),
    /// Run the bundled demo MCP server on stdin/stdout.
    DemoUpstream,
}

#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// Print a session's label state: the session label, and the recent fields with their
    /// labels. Without --session, list the scopes the gateway holds.
    Show {
        /// The config of the running gateway (for `[admin] http` and its token).
        #[arg(long, short)]
        config: PathBuf,
        /// The MCP session id (`Mcp-Session-Id`), or a scope as listed (`s:…`, `c:…`).
        #[arg(long)]
        session: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The decision for each recorded call (JSON Lines in, one JSON line out per call).
    /// Exits 0 when every call is allowed or asked, 3 when some are denied.
    Test {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        calls: PathBuf,
    },
    /// Which recorded calls' decisions flip between two policy directories. Exits 0 when
    /// none flips, 2 when some do.
    Diff {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        old: PathBuf,
        #[arg(long)]
        new: PathBuf,
        #[arg(long)]
        calls: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Write a new ed25519 root key to FILE (private, mode 0600) and FILE.pub (public).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Mint a token signed by the root key; prints it (base64) on stdout.
    Mint {
        /// The private key file written by `keygen`.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        principal: String,
        /// The principal is an agent (`principal.kind == "agent"`), not a user.
        #[arg(long)]
        agent: bool,
        #[arg(long)]
        task: Option<String>,
        /// A group the principal belongs to (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A tool the holder may call, as clients name it (repeatable; with no --tool and no
        /// --upstream, every tool).
        #[arg(long = "tool")]
        tools: Vec<String>,
        /// An upstream all of whose tools the holder may call (repeatable).
        #[arg(long = "upstream")]
        upstreams: Vec<String>,
        /// Something the user named: `recipient=bob@corp.example`, `account=…`, `url=…`.
        #[arg(long = "intent")]
        intents: Vec<String>,
        /// Lifetime, e.g. `1h`, `30m`.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Append checks to a token (offline); prints the narrower token.
    Attenuate {
        #[arg(long)]
        token: String,
        /// Datalog checks, e.g. `check if call_tool("demo__read_thread");`
        #[arg(long)]
        check: String,
    },
    /// Print a token's blocks and revocation ids (the signature is not verified).
    Inspect {
        #[arg(long)]
        token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of an audit log: exit 0 if intact, 1 naming the first bad line.
    Verify { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// Show how the upstreams' current definitions differ from the lockfile, and what the
    /// poisoning heuristics flag. Exits 0 when nothing differs, 2 when something does.
    Diff {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Pin the current definition of each named tool, prompt or template (as clients see it,
    /// e.g. `demo__send_email`) as reviewed. A running gateway picks the change up.
    Approve {
        #[arg(long, short)]
        config: PathBuf,
        /// Approve every definition currently listed.
        #[arg(long)]
        all: bool,
        names: Vec<String>,
    },
}

fn load(config: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match config {
        Some(p) => Config::load(p)?,
        None => {
            let cfg = Config::embedded_default()?;
            if std::env::var_os("CLAWGATE_DEMO_KEY").is_none()
                && let Ok(p) = crate::config::demo_key_file()
            {
                tracing::info!("embedded quickstart: the demo user's API key is in {} (send `Authorization: Bearer <key>`)", p.display());
            }
            cfg
        }
    })
}

/// Logs go to stderr always: stdout belongs to the protocol in `stdio` mode.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAWGATE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
}

/// Descriptors the gateway needs besides client connections: upstream connections and pipes,
/// the audit log, listeners, the runtime's own.
const OTHER_FILES: u64 = 256;

/// Raises the soft limit on open files to the hard one (as Go's runtime does at start), so that
/// `limits.max_connections` is not cut short by a distribution's default of 1,024; warns if the
/// limit is still too low, since at it `accept` fails and accepting pauses. Returns the soft
/// limit now in force.
pub fn raise_open_file_limit(max_connections: usize) -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() { hard } else { soft };
    let wanted = u64::try_from(max_connections).unwrap_or(u64::MAX).saturating_add(OTHER_FILES);
    if soft < wanted {
        tracing::warn!(target: "clawgate::front", "the open-file limit is {soft} (hard limit {hard}), below `limits.max_connections` ({max_connections}) plus {OTHER_FILES}: raise it (`ulimit -n`, systemd `LimitNOFILE`) or lower max_connections");
    }
    Some(soft)
}

/// CLI tools keep stdout for their report and log only errors (to stderr).
fn init_quiet_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAWGATE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
}

/// Runs a parsed command. Returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Check { config } => {
            init_quiet_logging();
            match crate::policy_cli::check(&config).await {
                Ok(report) => {
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stdout().lock(), "{report}");
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(1)
                }
            }
        }
        Command::Policy(PolicyCommand::Test { config, calls }) => {
            init_quiet_logging();
            let denied = crate::policy_cli::test(&config, &calls).await?;
            Ok(if denied == 0 { 0 } else { 3 })
        }
        Command::Policy(PolicyCommand::Diff { config, old, new, calls }) => {
            init_quiet_logging();
            let flips = crate::policy_cli::diff(config.as_deref(), &old, &new, &calls).await?;
            Ok(if flips == 0 { 0 } else { 2 })
        }
        Command::Schema { config } => {
            init_quiet_logging();
            use std::io::Write as _;
            let s = crate::policy_cli::schema(config.as_deref()).await?;
            let _ = write!(std::io::stdout().lock(), "{s}");
            Ok(0)
        }
        Command::Tools(ToolsCommand::Diff { config }) => {
            init_quiet_logging();
            let n = crate::tools_cli::diff_cmd(&config).await?;
            Ok(if n == 0 { 0 } else { 2 })
        }
        Command::Tools(ToolsCommand::Approve { config, all, names }) => {
            init_quiet_logging();
            crate::tools_cli::approve_cmd(&config, &names, all).await?;
            Ok(0)
        }
        Command::Labels(LabelsCommand::Show { config, session }) => labels_show(&config, session.as_deref()).await,
        Command::Audit(AuditCommand::Verify { file }) => match crate::audit::check(&file) {
            Ok(v) => {
                use std::io::Write as _;
                let gaps = match v.lost {
                    0 => String::new(),
                    n => format!("; the records report {n} record(s) lost before they were written (`dropped_before`)"),
                };
                let _ = writeln!(std::io::stdout().lock(), "{}: {} record(s), chain intact{gaps}", file.display(), v.records);
                Ok(0)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(1)
            }
        },
        Command::Token(cmd) => token_cmd(cmd),
        Command::DemoUpstream => {
            crate::demo::run().await?;
            Ok(0)
        }
        Command::Serve { config, listen } => {
            init_logging();
            let mut cfg = load(config.as_deref())?;
            if let Some(addr) = listen {
                cfg.listen.http = addr;
            }
            let addr = cfg.listen.http;
            let path = cfg.listen.path.clone();
            raise_open_file_limit(cfg.limits.max_connections);
            let gw = Gateway::start(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!("clawgate listening on http://{local}{path}");
            if let Some(admin_addr) = gw.config().admin.http {
                let admin = tokio::net::TcpListener::bind(admin_addr).await.with_context(|| format!("cannot listen on {admin_addr} (admin)"))?;
                tracing::info!("admin API on http://{}", admin.local_addr()?);
                let (g, mut closing) = (Arc::clone(&gw), gw.closing());
                tokio::spawn(async move {
                    let _ = crate::admin::serve(g, admin, async move { closing.changed_to_true().await }).await;
                });
            }
            let g = Arc::clone(&gw);
            let shutdown = async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                g.begin_shutdown();
            };
            crate::front::http::serve(Arc::clone(&gw), listener, shutdown).await?;
            gw.shutdown().await;
            Ok(0)
        }
        Command::Stdio { config } => {
            init_logging();
            let cfg = load(config.as_deref())?;
            let gw = Gateway::start(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
            let token = std::env::var("CLAWGATE_TOKEN").ok().filter(|t| !t.is_empty());
            let principal = gw.authz.authenticate(token.as_deref()).map_err(|e| anyhow::anyhow!("CLAWGATE_TOKEN: {e}"))?;
            tracing::info!("stdio client acts as principal `{}`", principal.id());
            tokio::select! {
                r = crate::front::stdio::serve(Arc::clone(&gw), token, tokio::io::stdin(), tokio::io::stdout()) => r?,
                () = shutdown_signal() => {}
            }
            gw.shutdown().await;
            Ok(0)
        }
    }
}

fn token_cmd(cmd: TokenCommand) -> anyhow::Result<i32> {
    use clawgate_policies::token;
    use std::io::Write as _;
    let say = |s: &str| {
        let _ = writeln!(std::io::stdout().lock(), "{s}");
    };
    match cmd {
        TokenCommand::Keygen { out } => {
            let (private, public) = token::keygen();
            let pub_path = PathBuf::from(format!("{}.pub", out.display()));
            write_private(&out, &private).with_context(|| format!("cannot write {}", out.display()))?;
            std::fs::write(&pub_path, format!("{public}\n")).with_context(|| format!("cannot write {}", pub_path.display()))?;
            say(&format!("wrote {} (private) and {} (public)", out.display(), pub_path.display()));
        }
        TokenCommand::Mint { key, principal, agent, task, groups, tools, upstreams, intents, ttl } => {
            let hex = std::fs::read_to_string(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let root = token::private_key_from_hex(&hex).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            let ttl = ttl.map(|t| crate::config::parse_duration(&t).map_err(|e| anyhow::anyhow!("--ttl: {e}"))).transpose()?;
            let intents = intents
                .iter()
                .map(|i| i.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| anyhow::anyhow!("--intent {i:?}: expected kind=value")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let spec = token::MintSpec { principal, agent, task, groups, tools, upstreams, intents, ttl };
            say(&token::mint(&root, &spec, std::time::SystemTime::now()).map_err(|e| anyhow::anyhow!(e))?);
        }
        TokenCommand::Attenuate { token: t, check } => say(&token::attenuate(&t, &check).map_err(|e| anyhow::anyhow!(e))?),
        TokenCommand::Inspect { token: t } => say(token::inspect(&t).map_err(|e| anyhow::anyhow!(e))?.trim_end()),
    }
    Ok(0)
}

/// `clawgate labels show`: GET the admin API's `/labels` or `/labels/{scope}`.
async fn labels_show(config: &Path, session: Option<&str>) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?;
    let Some(addr) = cfg.admin.http else {
        anyhow::bail!("{}: key `admin.http` is not set, so there is no admin API to ask", config.display());
    };
    let path = match session {
        None => "/labels".to_owned(),
        Some(s) if s.contains(':') => format!("/labels/{s}"),
        Some(s) => format!("/labels/s:{s}"),
    };
    let http = clawgate_adapters::transport::http::client(1).map_err(|e| anyhow::anyhow!("http client: {e}"))?;
    let mut req = http.pooled().get(format!("http://{addr}{path}"));
    if let Some(t) = &cfg.admin.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("cannot reach the admin API at {addr}"))?;
    let status = resp.status();
    let body = resp.text().await?;
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        Err(_) => println!("{body}"),
    }
    Ok(if status.is_success() { 0 } else { 1 })
}

/// A private key is readable by its owner only.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    writeln!(f, "{contents}")
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};

    /// A low soft limit is raised to the hard one (lowering the soft limit is always allowed, so
    /// the test can set one up).
    #[test]
    #[allow(clippy::unwrap_used, reason = "test code")]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let low = hard.min(1024) / 2;
        setrlimit(Resource::RLIMIT_NOFILE, low, hard).unwrap();
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, low);
        assert_eq!(super::raise_open_file_limit(10), Some(hard));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
