//! The TOML config: parsed once, validated into typed structs, and rejected with an error that
//! names the file, the key and the line when anything is off. Unknown keys are errors: for a
//! security gateway a typo must never become a silent default.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// The demo config shipped with the repo; `clawgate serve` with no `--config` runs it.
pub const QUICKSTART: &str = include_str!("../../examples/quickstart.toml");
/// The quickstart's policies, compiled in so that the embedded default needs no files.
pub const EMBEDDED_POLICIES: &[(&str, &str)] = &[
    ("<embedded>/examples/policies/demo.cedar", include_str!("../../examples/policies/demo.cedar")),
    ("<embedded>/examples/policies/labels.cedar", include_str!("../../examples/policies/labels.cedar")),
];

/// Where the embedded quickstart keeps its demo API key: `$CLAWGATE_DEMO_KEY_FILE`, else
/// `$XDG_CONFIG_HOME/clawgate/demo.key`, else `~/.config/clawgate/demo.key`.
pub fn demo_key_file() -> Result<PathBuf, String> {
    if let Some(f) = std::env::var_os("CLAWGATE_DEMO_KEY_FILE") {
        return Ok(PathBuf::from(f));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or("neither XDG_CONFIG_HOME nor HOME is set; set CLAWGATE_DEMO_KEY")?;
    Ok(base.join("clawgate").join("demo.key"))
}

fn read_or_create_key(path: &Path) -> Result<String, String> {
    if let Ok(k) = std::fs::read_to_string(path) {
        let k = k.trim().to_owned();
        if k.len() >= 16 {
            return Ok(k);
        }
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for the demo key: {e}"))?;
    let key = format!("cg_demo_{}", hex::encode(bytes));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| format!("{}: cannot write the demo key: {e}", path.display()))?;
    writeln!(f, "{key}").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}

/// A config error: where (file, line, key) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (`<embedded quickstart>` for the built-in default).
    pub source: PathBuf,
    pub listen: Listen,
    pub limits: Limits,
    pub pins: Pins,
    pub audit: Audit,
    pub admin: Admin,
    pub auth: Auth,
    /// `None` when the config has no `[policy]` section: every call is then denied.
    pub policy: Option<PolicyConfig>,
    pub labels: LabelsConfig,
    /// `None` when the config has no `[rate_limit]` section: no call is rate limited.
    pub rate_limit: Option<RateLimitConfig>,
    pub upstreams: Vec<UpstreamConfig>,
}

/// `[rate_limit]`: in-memory call rate limits, per gateway process.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Calls per principal across all tools; `None` when only per-tool limits are set.
    pub all: Option<clawgate_policies::ratelimit::Quota>,
    /// Most keys each limiter remembers (principals, or principal and tool pairs).
    pub max_keys: usize,
    /// `[[rate_limit.tool]]`, in config order (the first whose `name` matches applies, on top
    /// of `all`).
    pub tools: Vec<RateLimitTool>,
}

/// `[[rate_limit.tool]]`: calls per principal and tool, for the tools `name` matches.
#[derive(Debug, Clone)]
pub struct RateLimitTool {
    /// The client-visible tool name; `*` matches any run of characters.
    pub name: String,
    pub quota: clawgate_policies::ratelimit::Quota,
}

/// `[labels]`: data-flow labels (docs/labels.md).
#[derive(Debug, Clone)]
pub struct LabelsConfig {
    /// `false`: no label is traced or recorded, and a policy that reads `context.labels` is
    /// refused at load (it would see nothing and so could never deny).
    pub enabled: bool,
    /// `None`: in memory (one process). `Some(url)`: Redis, shared by replicas.
    pub redis_url: Option<String>,
    /// How long a label-store operation may take before the call is denied.
    pub timeout: Duration,
    /// A session's labels are forgotten this long after its last use.
    pub ttl: Duration,
    /// Fields indexed per session (oldest leave first).
    pub max_fields: usize,
    /// Results recorded per session in the shared store; past it, results are withheld.
    pub max_results: usize,
    /// Whole values shorter than this never match.
    pub min_match_len: usize,
    /// `context.labels.strict`.
    pub strict: bool,
    /// Per-tool rules, in config order (the first whose `name` matches wins).
    pub tools: Vec<LabelTool>,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        Self { enabled: true, redis_url: None, timeout: Duration::from_millis(250), ttl: Duration::from_secs(24 * 3600), max_fields: 4096, max_results: 10_000, min_match_len: 5, strict: false, tools: Vec::new() }
    }
}

/// `[[labels.tool]]`: how one tool's results are labelled and what its arguments are.
#[derive(Debug, Clone)]
pub struct LabelTool {
    /// The client-visible tool name; `*` matches any run of characters.
    pub name: String,
    /// `None`: the default label (untrusted, private).
    pub output: Option<clawgate_policies::labels::OutputRule>,
    pub control: Option<Vec<String>>,
    pub recipients: Option<Vec<String>>,
}

/// `[auth]`: how callers prove who they are.
#[derive(Clone, Default)]
pub struct Auth {
    /// File holding the hex ed25519 root public key that Biscuit tokens must be signed by.
    pub biscuit_public_key: Option<PathBuf>,
    /// File of revoked token revocation ids (hex, one per line, `#` comments).
    pub revocation_file: Option<PathBuf>,
    pub api_keys: Vec<ApiKey>,
}

/// `[[auth.api_keys]]`: a static key (from an environment variable) for one principal.
#[derive(Clone)]
pub struct ApiKey {
    pub key_env: String,
    /// The key itself: a secret, redacted from `Debug`.
    pub key: String,
    pub principal: String,
    pub agent: bool,
    pub task: Option<String>,
    pub groups: Vec<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("biscuit_public_key", &self.biscuit_public_key)
            .field("revocation_file", &self.revocation_file)
            .field("api_keys", &self.api_keys.iter().map(|k| (&k.key_env, &k.principal)).collect::<Vec<_>>())
            .finish()
    }
}

/// `[policy]`.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Directory of `*.cedar` files (read recursively, in name order).
    pub dir: Option<PathBuf>,
    /// Policies written in the config itself, after the directory's.
    pub inline: Option<String>,
    /// Policies compiled into the binary (the embedded quickstart's), as (name, text).
    pub embedded: Vec<(String, String)>,
    pub mode: PolicyMode,
    /// `context.time` is computed at this offset from UTC (`utc_offset = "+02:00"`).
    pub utc_offset_minutes: i32,
    /// How long a human has to answer an `@ask` approval, and how long a given approval stays
    /// usable by the retried call.
    pub approval_timeout: Duration,
}

/// `mode = "enforce" | "shadow"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Denials deny.
    #[default]
    Enforce,
    /// Decisions are computed, logged and audited as "would deny"/"would ask"; calls go through.
    Shadow,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub http: SocketAddr,
    pub path: String,
    /// Origins browsers may call from. Requests with any other `Origin` get 403.
    pub allowed_origins: Vec<String>,
    /// Extra `Host` header values accepted besides loopback names and the listen address.
    pub allowed_hosts: Vec<String>,
}

/// Limits on client input. Each exists to bound memory or CPU an unauthenticated peer can use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body (and stdio line) accepted from a client.
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted from a client; deeper documents are refused before parsing.
    pub max_json_depth: usize,
    /// Largest message accepted from an upstream.
    pub max_upstream_message_bytes: usize,
    /// Most concurrent client sessions (legacy era); the oldest idle one is not evicted, new
    /// ones are refused.
    pub max_sessions: usize,
    /// A session unused for this long is dropped.
    #[serde(deserialize_with = "de_duration")]
    pub session_idle_timeout: Duration,
    /// How long the gateway waits for a client to answer a server→client request.
    #[serde(deserialize_with = "de_duration")]
    pub client_request_timeout: Duration,
    /// How long an HTTP client has to send a request's headers (from the connection's start or
    /// the previous answer), and then its body. A connection that is silent or slow for longer
    /// is closed (headers) or answered 408 (body), so it cannot hold a socket indefinitely.
    #[serde(deserialize_with = "de_duration")]
    pub client_read_timeout: Duration,
    /// Most client connections the HTTP front holds open at once (each SSE stream is one). At
    /// the limit it stops accepting: new connections wait in the listen backlog until one
    /// closes.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_json_depth: 64,
            max_upstream_message_bytes: 32 * 1024 * 1024,
            max_sessions: 10_000,
            session_idle_timeout: Duration::from_secs(30 * 60),
            client_request_timeout: Duration::from_secs(300),
            client_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    /// Namespace prefix; empty exposes names unchanged.
    pub prefix: String,
    pub timeout: Duration,
    pub transport: TransportConfig,
    /// How this upstream's definitions are pinned.
    pub pin: PinMode,
    /// What a poisoning finding in a description does.
    pub poisoning: PoisonAction,
    /// Operator overrides by the upstream's own tool name.
    pub tools: BTreeMap<String, ToolOverride>,
    /// Whether this upstream's tool annotations (readOnlyHint, …) count as policy attributes.
    pub trusted: bool,
    /// Whether labels this upstream declares in result `_meta["io.clawgate/labels"]` are used.
    pub declares_labels: bool,
    /// Request methods and client notifications the gateway does not know that are relayed to
    /// this upstream as they are, with no policy decision. Any other unknown method is refused
    /// (-32601), and any other unknown notification dropped.
    pub relay_methods: Vec<String>,
}

/// `pin = "strict" | "tofu" | "off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PinMode {
    /// Only definitions in the lockfile are exposed; new or changed ones wait for approval.
    Strict,
    /// A definition is pinned the first time it is seen; a later change waits for approval.
    #[default]
    Tofu,
    /// No pinning.
    Off,
}

/// `poisoning = "warn" | "quarantine"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoisonAction {
    /// Log the finding and expose the tool.
    Warn,
    /// Hide the tool until an operator approves it.
    #[default]
    Quarantine,
}

/// `[upstream.tools.<name>]`: what the operator changes about one tool.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolOverride {
    /// Expose the tool under this name (still prefixed).
    pub rename: Option<String>,
    /// Replace the description the model sees.
    pub description: Option<String>,
    /// Do not expose the tool at all; calls get "unknown tool".
    #[serde(default)]
    pub hide: bool,
    /// Argument values the gateway sets on every call; the client cannot change them, and they
    /// are removed from the schema the client sees.
    #[serde(default)]
    pub fixed_arguments: serde_json::Map<String, serde_json::Value>,
    // --- policy attributes (entity `Tool`) ---
    pub category: Option<String>,
    pub owner: Option<String>,
    pub sensitivity: Option<String>,
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
    pub open_world: Option<bool>,
    /// Extra Cedar action groups (`groups = ["send"]`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// A JSON Schema file the arguments must also satisfy (stricter than the upstream's).
    pub schema: Option<String>,
    /// The parsed `schema` file.
    #[serde(skip)]
    pub schema_value: Option<serde_json::Value>,
}

/// `[pins]`.
#[derive(Debug, Clone)]
pub struct Pins {
    /// The lockfile; `None` keeps pins in memory (the embedded default).
    pub lockfile: Option<PathBuf>,
    /// Every upstream is re-listed this often, besides at connect and on `list_changed`, so a
    /// server that changes silently is still caught.
    pub relist_interval: Duration,
}

/// `[audit]`.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// Append-only, hash-chained JSON Lines file; `None` sends audit records to the log.
    pub file: Option<PathBuf>,
    /// What happens to a call whose decision record cannot be kept.
    pub on_failure: AuditOnFailure,
}

/// `[audit] on_failure = "deny" | "allow"`: what happens to a call that would go through when
/// its decision record cannot be kept (the queue to the writer is full, or the log's last write
/// failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditOnFailure {
    /// The call is denied (`audit_unavailable`): no call goes through unrecorded.
    #[default]
    Deny,
    /// The call goes through; the record is counted as lost (`dropped_before` in the next one).
    Allow,
}

impl AuditOnFailure {
    /// The value as the config file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }
}

/// `[admin]`: the operator API. Off unless `http` is set.
#[derive(Clone, Default)]
pub struct Admin {
    pub http: Option<SocketAddr>,
    /// Bearer token required on every admin request (read from this environment variable).
    pub token: Option<String>,
}

#[derive(Clone)]
pub enum TransportConfig {
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<PathBuf>,
        per_session: bool,
    },
    Http {
        url: String,
        /// Expanded values; may hold secrets, so `Debug` redacts them.
        headers: Vec<(String, String)>,
    },
}

impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdio { command, args, env, cwd, per_session } => f
                .debug_struct("Stdio")
                .field("command", command)
                .field("args", args)
                .field("env", &env.keys().collect::<Vec<_>>())
                .field("cwd", cwd)
                .field("per_session", per_session)
                .finish(),
            Self::Http { url, headers } => f
                .debug_struct("Http")
                .field("url", &clawgate_adapters::transport::http::redacted_url(url))
                .field("headers", &headers.iter().map(|(k, _)| k).collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").field("http", &self.http).field("token", &self.token.as_ref().map(|_| "<redacted>")).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (as written) shapes.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    pins: RawPins,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    auth: RawAuth,
    policy: Option<Spanned<RawPolicy>>,
    #[serde(default)]
    labels: RawLabels,
    rate_limit: Option<Spanned<RawRateLimit>>,
    #[serde(default)]
    upstream: Vec<Spanned<RawUpstream>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    calls: Option<Spanned<u64>>,
    per: Option<Spanned<String>>,
    burst: Option<Spanned<u64>>,
    max_keys: Option<Spanned<usize>>,
    #[serde(default)]
    tool: Vec<Spanned<RawRateLimitTool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimitTool {
    name: Spanned<String>,
    calls: Spanned<u64>,
    per: Spanned<String>,
    burst: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLabels {
    enabled: Option<bool>,
    store: Option<Spanned<String>>,
    redis_url: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    ttl: Option<Duration>,
    max_fields: Option<usize>,
    max_results: Option<usize>,
    min_match_len: Option<usize>,
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    tool: Vec<RawLabelTool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabelTool {
    name: String,
    each: Option<String>,
    #[serde(default)]
    readers: Vec<String>,
    #[serde(default)]
    public: bool,
    trusted: Option<bool>,
    trusted_if_domain: Option<RawDomainRule>,
    control: Option<Vec<String>>,
    recipients: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomainRule {
    field: String,
    domains: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    biscuit_public_key: Option<String>,
    revocation_file: Option<String>,
    #[serde(default)]
    api_keys: Vec<Spanned<RawApiKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    key_env: Spanned<String>,
    principal: Spanned<String>,
    #[serde(default)]
    kind: RawKind,
    task: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    #[default]
    User,
    Agent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    dir: Option<String>,
    inline: Option<String>,
    #[serde(default)]
    mode: PolicyMode,
    utc_offset: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    approval_timeout: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPins {
    lockfile: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    relist_interval: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    file: Option<String>,
    #[serde(default)]
    on_failure: AuditOnFailure,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    http: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    #[serde(default = "default_http")]
    http: Spanned<String>,
    #[serde(default = "default_path")]
    path: Spanned<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

impl Default for RawListen {
    fn default() -> Self {
        Self { http: default_http(), path: default_path(), allowed_origins: Vec::new(), allowed_hosts: Vec::new() }
    }
}

fn default_http() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".into())
}
fn default_path() -> Spanned<String> {
    Spanned::new(0..0, "/mcp".into())
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawTransport {
    Stdio,
    Http,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: Spanned<String>,
    transport: Spanned<RawTransport>,
    prefix: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    timeout: Option<Duration>,
    // stdio
    command: Option<Spanned<String>>,
    args: Option<Spanned<Vec<String>>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    cwd: Option<Spanned<String>>,
    per_session: Option<Spanned<bool>>,
    // http
    url: Option<Spanned<String>>,
    headers: Option<Spanned<BTreeMap<String, String>>>,
    // integrity
    #[serde(default)]
    pin: PinMode,
    #[serde(default)]
    poisoning: PoisonAction,
    #[serde(default)]
    tools: BTreeMap<String, ToolOverride>,
    #[serde(default)]
    trusted: bool,
    #[serde(default)]
    declares_labels: bool,
    relay_methods: Option<Spanned<Vec<String>>>,
}

const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: None,
            key: None,
            message: format!("cannot read config: {e}"),
        })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        Self::parse(&text, path, &base, &|k| std::env::var(k).ok())
    }

    /// The built-in default: the quickstart config, with the demo upstream run from this very
    /// binary (`<current exe> demo-upstream`) so that it works before anything is installed.
    pub fn embedded_default() -> Result<Self, ConfigError> {
        let source = PathBuf::from("<embedded quickstart>");
        let fail = |message: String| ConfigError { file: source.clone(), line: None, key: Some("auth.api_keys[0].key_env".into()), message };
        // The demo API key: `CLAWGATE_DEMO_KEY` if set, else the one in the demo key file
        // (created on first run, owner-only). Its path is logged; the key never is.
        let demo_key = match std::env::var("CLAWGATE_DEMO_KEY").ok().filter(|k| !k.is_empty()) {
            Some(k) => k,
            None => demo_key_file().and_then(|p| read_or_create_key(&p)).map_err(fail)?,
        };
        let env = move |k: &str| if k == "CLAWGATE_DEMO_KEY" { Some(demo_key.clone()) } else { std::env::var(k).ok() };
        let mut cfg = Self::parse(QUICKSTART, &source, Path::new("."), &env)?;
        if let Some(p) = &mut cfg.policy {
            p.dir = None;
            p.embedded = EMBEDDED_POLICIES.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect();
        }
        let exe = std::env::current_exe().map_err(|e| ConfigError {
            file: source.clone(),
            line: None,
            key: None,
            message: format!("cannot locate the clawgate binary: {e}"),
        })?;
        // The embedded default keeps its pins in memory: besides the demo key file it writes
        // nothing to disk.
        cfg.pins.lockfile = None;
        for up in &mut cfg.upstreams {
            if let TransportConfig::Stdio { command, .. } = &mut up.transport
                && command == "clawgate" {
                    *command = exe.to_string_lossy().into_owned();
                }
        }
        Ok(cfg)
    }

    /// Parses config text. `base` resolves relative paths; `env` looks up `${VAR}` references.
    pub fn parse(
        text: &str,
        file: &Path,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let err = |span: Option<std::ops::Range<usize>>, key: Option<String>, message: String| ConfigError {
            file: file.to_owned(),
            line: span.filter(|s| !(s.start == 0 && s.end == 0)).map(|s| line_of(text, s.start)),
            key,
            message,
        };
        let de = toml::Deserializer::parse(text).map_err(|e| err(e.span(), None, e.message().to_owned()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            // `Spanned` wrappers show up as an internal path segment; they are not keys.
            let path = e.path().to_string().replace("$__serde_spanned_private_value.", "").replace(".$__serde_spanned_private_value", "");
            let inner = e.into_inner();
            err(inner.span(), (path != ".").then_some(path), inner.message().to_owned())
        })?;

        let listen = {
            let http = raw.listen.http.get_ref().parse::<SocketAddr>().map_err(|e| {
                err(Some(raw.listen.http.span()), Some("listen.http".into()), format!("not a socket address (`127.0.0.1:8080`): {e}"))
            })?;
            let path = raw.listen.path.get_ref().clone();
            if !path.starts_with('/') {
                return Err(err(Some(raw.listen.path.span()), Some("listen.path".into()), "must start with `/`".into()));
            }
            Listen { http, path, allowed_origins: raw.listen.allowed_origins, allowed_hosts: raw.listen.allowed_hosts }
        };
        if raw.limits.max_json_depth < 8 || raw.limits.max_body_bytes < 1024 {
            return Err(err(None, Some("limits".into()), "max_json_depth must be at least 8 and max_body_bytes at least 1024".into()));
        }
        if raw.limits.client_read_timeout < Duration::from_millis(10) {
            return Err(err(None, Some("limits.client_read_timeout".into()), "must be at least 10ms".into()));
        }
        if raw.limits.max_connections == 0 {
            return Err(err(None, Some("limits.max_connections".into()), "must be at least 1".into()));
        }

        let mut upstreams = Vec::new();
        let mut names = HashSet::new();
        let mut prefixes = HashSet::new();
        let mut relayed = HashSet::new();
        for (i, up) in raw.upstream.iter().enumerate() {
            let key = |k: &str| Some(format!("upstream[{i}].{k}"));
            let u = up.get_ref();
            let name = u.name.get_ref().clone();
            if !valid_name(&name) {
                return Err(err(Some(u.name.span()), key("name"), format!("`{name}` must match [a-z0-9-]+")));
            }
            if !names.insert(name.clone()) {
                return Err(err(Some(u.name.span()), key("name"), format!("upstream `{name}` is defined twice")));
            }
            let prefix = match &u.prefix {
                Some(p) => {
                    if !p.get_ref().is_empty() && !valid_name(p.get_ref()) {
                        return Err(err(Some(p.span()), key("prefix"), format!("`{}` must be empty or match [a-z0-9-]+", p.get_ref())));
                    }
                    p.get_ref().clone()
                }
                None => name.clone(),
            };
            if !prefixes.insert(prefix.clone()) {
                let span = u.prefix.as_ref().map_or(u.name.span(), Spanned::span);
                let what = if prefix.is_empty() { "more than one upstream has an empty prefix".to_owned() } else { format!("prefix `{prefix}` is used by two upstreams") };
                return Err(err(Some(span), key("prefix"), format!("{what}: their names would collide")));
            }
            let stdio_keys = [("command", u.command.as_ref().map(Spanned::span)), ("args", u.args.as_ref().map(Spanned::span)), ("env", u.env.as_ref().map(Spanned::span)), ("cwd", u.cwd.as_ref().map(Spanned::span)), ("per_session", u.per_session.as_ref().map(Spanned::span))];
            let http_keys = [("url", u.url.as_ref().map(Spanned::span)), ("headers", u.headers.as_ref().map(Spanned::span))];
            let expand = |v: &Spanned<String>, k: String| -> Result<String, ConfigError> {
                expand_env(v.get_ref(), env).map_err(|var| {
                    err(Some(v.span()), Some(k), format!("environment variable `{var}` is not set"))
                })
            };
            let transport = match *u.transport.get_ref() {
                RawTransport::Stdio => {
                    if let Some((k, span)) = http_keys.iter().find(|(_, s)| s.is_some()) {
                        return Err(err(span.clone(), key(k), "only valid for `transport = \"http\"`".into()));
                    }
                    let Some(command) = &u.command else {
                        return Err(err(Some(up.span()), key("command"), "missing: a stdio upstream needs `command`".into()));
                    };
                    let mut env_out = BTreeMap::new();
                    if let Some(e) = &u.env {
                        for (k, v) in e.get_ref() {
                            let expanded = expand_env(v, env).map_err(|var| {
                                err(Some(e.span()), key(&format!("env.{k}")), format!("environment variable `{var}` is not set"))
                            })?;
                            env_out.insert(k.clone(), expanded);
                        }
                    }
                    TransportConfig::Stdio {
                        command: expand(command, format!("upstream[{i}].command"))?,
                        args: u.args.as_ref().map(|a| a.get_ref().clone()).unwrap_or_default(),
                        env: env_out,
                        cwd: u.cwd.as_ref().map(|c| base.join(c.get_ref())),
                        per_session: u.per_session.as_ref().is_some_and(|p| *p.get_ref()),
                    }
                }
                RawTransport::Http => {
                    if let Some((k, span)) = stdio_keys.iter().find(|(_, s)| s.is_some()) {
                        return Err(err(span.clone(), key(k), "only valid for `transport = \"stdio\"`".into()));
                    }
                    let Some(url) = &u.url else {
                        return Err(err(Some(up.span()), key("url"), "missing: an http upstream needs `url`".into()));
                    };
                    let url_s = expand(url, format!("upstream[{i}].url"))?;
                    match url::Url::parse(&url_s) {
                        Ok(p) if p.scheme() == "http" || p.scheme() == "https" => {}
                        _ => return Err(err(Some(url.span()), key("url"), "must be an absolute http:// or https:// URL".into())),
                    }
                    let mut headers = Vec::new();
                    if let Some(h) = &u.headers {
                        for (k, v) in h.get_ref() {
                            if k.eq_ignore_ascii_case("mcp-session-id") || k.eq_ignore_ascii_case("mcp-protocol-version") {
                                return Err(err(Some(h.span()), key(&format!("headers.{k}")), "is managed by clawgate and cannot be set".into()));
                            }
                            let expanded = expand_env(v, env).map_err(|var| {
                                err(Some(h.span()), key(&format!("headers.{k}")), format!("environment variable `{var}` is not set"))
                            })?;
                            if http::HeaderName::from_bytes(k.as_bytes()).is_err() || http::HeaderValue::from_str(&expanded).is_err() {
                                return Err(err(Some(h.span()), key(&format!("headers.{k}")), "not a valid HTTP header".into()));
                            }
                            headers.push((k.clone(), expanded));
                        }
                    }
                    TransportConfig::Http { url: url_s, headers }
                }
            };
            let mut tools = u.tools.clone();
            for (tool, o) in &mut tools {
                if let Some(r) = &o.rename
                    && (r.is_empty() || r.contains("__") || r.chars().any(|c| c.is_control() || c.is_whitespace()))
                {
                    return Err(err(Some(up.span()), key(&format!("tools.{tool}.rename")), format!("`{r}` must be non-empty, without whitespace or `__`")));
                }
                if let Some(g) = o.groups.iter().find(|g| !valid_group(g)) {
                    return Err(err(Some(up.span()), key(&format!("tools.{tool}.groups")), format!("`{g}` must match [a-z_][a-z0-9_]*")));
                }
                if let Some(f) = &o.schema {
                    let path = base.join(f);
                    let k = key(&format!("tools.{tool}.schema"));
                    let text = std::fs::read_to_string(&path).map_err(|e| err(Some(up.span()), k.clone(), format!("cannot read {}: {e}", path.display())))?;
                    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(Some(up.span()), k.clone(), format!("{} is not JSON: {e}", path.display())))?;
                    if let clawgate_policies::args::ArgSchema::Broken(m) = clawgate_policies::args::ArgSchema::compile(&v) {
                        return Err(err(Some(up.span()), k, format!("{}: {m}", path.display())));
                    }
                    o.schema_value = Some(v);
                }
            }
            let mut relay_methods = Vec::new();
            if let Some(m) = &u.relay_methods {
                for method in m.get_ref() {
                    let bad = |why: &str| err(Some(m.span()), key("relay_methods"), format!("`{method}` {why}"));
                    if method.is_empty() || method.len() > 128 || method.chars().any(|c| c.is_control() || c.is_whitespace()) {
                        return Err(bad("must be 1 to 128 characters without whitespace"));
                    }
                    if crate::pipeline::Gateway::OWN_METHODS.contains(&method.as_str()) {
                        return Err(bad("is handled by the gateway itself and cannot be relayed"));
                    }
                    if method.starts_with("tasks/") || method.starts_with("rpc.") {
                        return Err(bad("cannot be relayed: tasks would be shared across principals, and `rpc.` is reserved"));
                    }
                    if !relayed.insert(method.clone()) {
                        return Err(bad("is relayed by two upstreams; give it to one"));
                    }
                    relay_methods.push(method.clone());
                }
            }
            upstreams.push(UpstreamConfig {
                name,
                prefix,
                timeout: u.timeout.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT),
                transport,
                pin: u.pin,
                poisoning: u.poisoning,
                tools,
                trusted: u.trusted,
                declares_labels: u.declares_labels,
                relay_methods,
            });
        }
        // The lockfile sits beside the config unless `[pins] lockfile` says otherwise.
        let pins = Pins {
            lockfile: Some(base.join(raw.pins.lockfile.as_deref().unwrap_or("clawgate.lock"))),
            relist_interval: raw.pins.relist_interval.unwrap_or(Duration::from_secs(300)),
        };
        let audit = Audit { file: raw.audit.file.as_deref().map(|f| base.join(f)), on_failure: raw.audit.on_failure };
        let admin = Admin {
            http: match &raw.admin.http {
                Some(h) => Some(h.get_ref().parse::<SocketAddr>().map_err(|e| err(Some(h.span()), Some("admin.http".into()), format!("not a socket address: {e}")))?),
                None => None,
            },
            token: match &raw.admin.token_env {
                Some(v) => Some(env(v.get_ref()).filter(|t| !t.is_empty()).ok_or_else(|| {
                    err(Some(v.span()), Some("admin.token_env".into()), format!("environment variable `{}` is not set", v.get_ref()))
                })?),
                None => None,
            },
        };
        if let Some(addr) = admin.http
            && !addr.ip().is_loopback()
            && admin.token.is_none()
        {
            return Err(err(raw.admin.http.as_ref().map(Spanned::span), Some("admin.http".into()), "a non-loopback admin address needs `token_env`".into()));
        }
        let mut api_keys = Vec::new();
        let mut seen_keys = HashSet::new();
        for (i, k) in raw.auth.api_keys.iter().enumerate() {
            let r = k.get_ref();
            let key = |f: &str| Some(format!("auth.api_keys[{i}].{f}"));
            let value = env(r.key_env.get_ref()).filter(|v| !v.is_empty()).ok_or_else(|| {
                err(Some(r.key_env.span()), key("key_env"), format!("environment variable `{}` is not set", r.key_env.get_ref()))
            })?;
            if value.len() < 16 {
                return Err(err(Some(r.key_env.span()), key("key_env"), format!("the key in `{}` is shorter than 16 characters", r.key_env.get_ref())));
            }
            let p = r.principal.get_ref();
            if p.is_empty() || p == "anonymous" {
                return Err(err(Some(r.principal.span()), key("principal"), "must be a non-empty name other than `anonymous`".into()));
            }
            if !seen_keys.insert(value.clone()) {
                return Err(err(Some(r.key_env.span()), key("key_env"), "two API keys have the same value".into()));
            }
            api_keys.push(ApiKey { key_env: r.key_env.get_ref().clone(), key: value, principal: p.clone(), agent: r.kind == RawKind::Agent, task: r.task.clone(), groups: r.groups.clone() });
        }
        let auth = Auth {
            biscuit_public_key: raw.auth.biscuit_public_key.as_deref().map(|f| base.join(f)),
            revocation_file: raw.auth.revocation_file.as_deref().map(|f| base.join(f)),
            api_keys,
        };
        let policy = match &raw.policy {
            None => None,
            Some(p) => {
                let r = p.get_ref();
                if r.dir.is_none() && r.inline.is_none() {
                    return Err(err(Some(p.span()), Some("policy".into()), "needs `dir` or `inline` (or both)".into()));
                }
                let utc_offset_minutes = match &r.utc_offset {
                    None => 0,
                    Some(o) => parse_utc_offset(o.get_ref()).ok_or_else(|| err(Some(o.span()), Some("policy.utc_offset".into()), "must look like \"+02:00\" or \"-05:30\"".into()))?,
                };
                Some(PolicyConfig {
                    dir: r.dir.as_deref().map(|d| base.join(d)),
                    inline: r.inline.clone(),
                    embedded: Vec::new(),
                    mode: r.mode,
                    utc_offset_minutes,
                    approval_timeout: r.approval_timeout.unwrap_or(Duration::from_secs(120)),
                })
            }
        };
        let labels = parse_labels(&raw.labels, env).map_err(|(span, key, message)| err(span, Some(key), message))?;
        let rate_limit = raw.rate_limit.as_ref().map(parse_rate_limit).transpose().map_err(|(span, key, message)| err(span, Some(key), message))?;
        Ok(Config { source: file.to_owned(), listen, limits: raw.limits, pins, audit, admin, auth, policy, labels, rate_limit, upstreams })
    }
}

type KeyError = (Option<std::ops::Range<usize>>, String, String);

fn parse_labels(r: &RawLabels, env: &dyn Fn(&str) -> Option<String>) -> Result<LabelsConfig, KeyError> {
    use clawgate_policies::labels::{FieldPath, OutputRule};
    let d = LabelsConfig::default();
    let redis_url = match (&r.store, &r.redis_url) {
        (None, None) => None,
        (Some(s), _) if s.get_ref() == "memory" => {
            if let Some(u) = &r.redis_url {
                return Err((Some(u.span()), "labels.redis_url".into(), "only valid with `store = \"redis\"`".into()));
            }
            None
        }
        (Some(s), Some(u)) if s.get_ref() == "redis" => {
            let url = expand_env(u.get_ref(), env).map_err(|var| (Some(u.span()), "labels.redis_url".to_owned(), format!("environment variable `{var}` is not set")))?;
            if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis+unix://") || url.starts_with("unix://")) {
                return Err((Some(u.span()), "labels.redis_url".into(), "must be a redis:// URL".into()));
            }
            Some(url)
        }
        (Some(s), None) if s.get_ref() == "redis" => return Err((Some(s.span()), "labels.redis_url".into(), "missing: `store = \"redis\"` needs `redis_url`".into())),
        (Some(s), _) => return Err((Some(s.span()), "labels.store".into(), format!("`{}` is neither \"memory\" nor \"redis\"", s.get_ref()))),
        (None, Some(u)) => return Err((Some(u.span()), "labels.redis_url".into(), "set `store = \"redis\"` as well".into())),
    };
    let mut tools = Vec::new();
    for (i, t) in r.tool.iter().enumerate() {
        let key = |k: &str| format!("labels.tool[{i}].{k}");
        if t.name.is_empty() {
            return Err((None, key("name"), "must not be empty".into()));
        }
        let path = |k: &str, s: &str| FieldPath::parse(s).map_err(|e| (None, key(k), e));
        let has_output = t.each.is_some() || !t.readers.is_empty() || t.public || t.trusted.is_some() || t.trusted_if_domain.is_some();
        if t.trusted.is_some() && t.trusted_if_domain.is_some() {
            return Err((None, key("trusted"), "give `trusted` or `trusted_if_domain`, not both".into()));
        }
        if t.public && !t.readers.is_empty() {
            return Err((None, key("public"), "give `public = true` or `readers`, not both".into()));
        }
        let output = if has_output {
            Some(OutputRule {
                each: t.each.as_deref().map(|e| path("each", e)).transpose()?,
                readers: t.readers.iter().map(|p| path("readers", p)).collect::<Result<_, _>>()?,
                public: t.public,
                trusted: t.trusted,
                trusted_if_domain: match &t.trusted_if_domain {
                    Some(dr) => {
                        if dr.domains.is_empty() {
                            return Err((None, key("trusted_if_domain.domains"), "must list at least one domain".into()));
                        }
                        Some((path("trusted_if_domain.field", &dr.field)?, dr.domains.clone()))
                    }
                    None => None,
                },
            })
        } else {
            None
        };
        tools.push(LabelTool { name: t.name.clone(), output, control: t.control.clone(), recipients: t.recipients.clone() });
    }
    let positive = |v: Option<usize>, k: &str, def: usize| match v {
        Some(0) => Err((None, format!("labels.{k}"), "must be greater than zero".to_owned())),
        Some(n) => Ok(n),
        None => Ok(def),
    };
    Ok(LabelsConfig {
        enabled: r.enabled.unwrap_or(true),
        redis_url,
        timeout: r.timeout.unwrap_or(d.timeout),
        ttl: r.ttl.unwrap_or(d.ttl),
        max_fields: positive(r.max_fields, "max_fields", d.max_fields)?,
        max_results: positive(r.max_results, "max_results", d.max_results)?,
        min_match_len: positive(r.min_match_len, "min_match_len", d.min_match_len)?,
        strict: r.strict,
        tools,
    })
}

fn parse_rate_limit(section: &Spanned<RawRateLimit>) -> Result<RateLimitConfig, KeyError> {
    use clawgate_policies::ratelimit::{DEFAULT_MAX_KEYS, Quota};
    let r = section.get_ref();
    // One quota from its written parts; an invalid one is reported at the key at fault.
    let quota = |prefix: &str, calls: &Spanned<u64>, per: &Spanned<String>, burst: Option<&Spanned<u64>>| -> Result<Quota, KeyError> {
        let d = parse_duration(per.get_ref()).map_err(|m| (Some(per.span()), format!("{prefix}.per"), m))?;
        Quota::new(*calls.get_ref(), d, burst.map(|b| *b.get_ref())).map_err(|e| {
            let span = match e.key() {
                "per" => per.span(),
                "burst" => burst.map_or(calls.span(), Spanned::span),
                _ => calls.span(),
            };
            (Some(span), format!("{prefix}.{}", e.key()), e.to_string())
        })
    };
    let all = match (&r.calls, &r.per) {
        (Some(c), Some(p)) => Some(quota("rate_limit", c, p, r.burst.as_ref())?),
        (Some(c), None) => return Err((Some(c.span()), "rate_limit.per".into(), "missing: `calls` needs `per`".into())),
        (None, Some(p)) => return Err((Some(p.span()), "rate_limit.calls".into(), "missing: `per` needs `calls`".into())),
        (None, None) => {
            if let Some(b) = &r.burst {
                return Err((Some(b.span()), "rate_limit.burst".into(), "only valid with `calls` and `per`".into()));
            }
            None
        }
    };
    let max_keys = match &r.max_keys {
        Some(m) if *m.get_ref() == 0 => return Err((Some(m.span()), "rate_limit.max_keys".into(), "must be greater than zero".into())),
        Some(m) => *m.get_ref(),
        None => DEFAULT_MAX_KEYS,
    };
    let mut tools = Vec::new();
    for (i, t) in r.tool.iter().enumerate() {
        let prefix = format!("rate_limit.tool[{i}]");
        let t = t.get_ref();
        if t.name.get_ref().is_empty() {
            return Err((Some(t.name.span()), format!("{prefix}.name"), "must not be empty".into()));
        }
        tools.push(RateLimitTool { name: t.name.get_ref().clone(), quota: quota(&prefix, &t.calls, &t.per, t.burst.as_ref())? });
    }
    if all.is_none() && tools.is_empty() {
        return Err((Some(section.span()), "rate_limit".into(), "needs `calls` and `per`, or at least one `[[rate_limit.tool]]`".into()));
    }
    Ok(RateLimitConfig { all, max_keys, tools })
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name.ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// `+HH:MM` / `-HH:MM` → minutes.
fn parse_utc_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, s.get(1..)?),
        b'-' => (-1, s.get(1..)?),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60 && h >= 0 && m >= 0).then_some(sign * (h * 60 + m))
}

fn valid_group(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase() || c == b'_') && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(1, |t| t.bytes().filter(|&b| b == b'\n').count() + 1)
}

/// Expands `${VAR}` references. `$$` is a literal `$`. Returns the missing variable's name.
pub fn expand_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 1..).unwrap_or_default();
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else { return Err(after.to_owned()) };
            let var = body.get(..end).unwrap_or_default();
            out.push_str(&env(var).ok_or_else(|| var.to_owned())?);
            rest = body.get(end + 1..).unwrap_or_default();
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Durations are written `"30s"`, `"500ms"`, `"5m"`, `"1h"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like \"30s\" or \"500ms\""))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("`{s}` needs a unit: ms, s, m or h")),
    };
    if d.is_zero() {
        return Err("a duration must be greater than zero".into());
    }
    Ok(d)
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), Path::new("/base"), &|k| match k {
            "TOKEN" => Some("s3cret".to_owned()),
            "CLAWGATE_DEMO_KEY" => Some("demo-key-0123456789".to_owned()),
            _ => None,
        })
    }

    #[test]
    fn quickstart_parses() {
        let cfg = parse(QUICKSTART).unwrap();
        assert!(!cfg.upstreams.is_empty());
        assert_eq!(cfg.auth.api_keys[0].principal, "demo-user");
        assert!(!format!("{:?}", cfg.auth).contains("demo-key-0123456789"), "keys are redacted");
        assert_eq!(cfg.policy.as_ref().unwrap().mode, PolicyMode::Enforce);
    }

    #[test]
    fn auth_and_policy_errors_name_the_key() {
        let e = parse("[[auth.api_keys]]\nkey_env = \"NOPE\"\nprincipal = \"a\"\n").unwrap_err();
        assert_eq!((e.key.as_deref(), e.line), (Some("auth.api_keys[0].key_env"), Some(2)), "{e}");
        let e = parse("[policy]\nmode = \"enforce\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("policy"), "{e}");
        let e = parse("[policy]\ninline = \"\"\nmode = \"lax\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = parse("[policy]\ninline = \"\"\nutc_offset = \"2h\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("policy.utc_offset"), "{e}");
        let ok = parse("[policy]\ninline = \"\"\nutc_offset = \"-05:30\"\n").unwrap();
        assert_eq!(ok.policy.unwrap().utc_offset_minutes, -330);
    }

    #[test]
    fn audit_on_failure_defaults_to_deny_and_bad_values_name_the_line() {
        assert_eq!(parse("[audit]\nfile = \"a.jsonl\"\n").unwrap().audit.on_failure, AuditOnFailure::Deny);
        assert_eq!(parse("[audit]\nfile = \"a.jsonl\"\non_failure = \"allow\"\n").unwrap().audit.on_failure, AuditOnFailure::Allow);
        let e = parse("[audit]\nfile = \"a.jsonl\"\non_failure = \"shrug\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("shrug") && e.to_string().contains("deny"), "{e}");
    }

    #[test]
    fn label_config_errors_name_the_key() {
        let e = parse("[labels]\nstore = \"disk\"\n").unwrap_err();
        assert_eq!((e.key.as_deref(), e.line), (Some("labels.store"), Some(2)), "{e}");
        let e = parse("[labels]\nstore = \"redis\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("labels.redis_url"), "{e}");
        let e = parse("[labels]\nstore = \"redis\"\nredis_url = \"http://x\"\n").unwrap_err();
        assert_eq!((e.key.as_deref(), e.line), (Some("labels.redis_url"), Some(3)), "{e}");
        let e = parse("[[labels.tool]]\nname = \"a\"\neach = \"m[\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("labels.tool[0].each"), "{e}");
        let e = parse("[[labels.tool]]\nname = \"a\"\ntrusted = true\ntrusted_if_domain = { field = \"f\", domains = [\"x\"] }\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("labels.tool[0].trusted"), "{e}");
        let e = parse("[labels]\nmax_fields = 0\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("labels.max_fields"), "{e}");
        let cfg = parse("[labels]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:1/0\"\nstrict = true\n").unwrap();
        assert!(cfg.labels.strict && cfg.labels.redis_url.is_some());
        let q = parse(QUICKSTART).unwrap();
        assert!(q.labels.redis_url.is_none() && !q.labels.tools.is_empty(), "the quickstart keeps labels in memory");
        assert!(glob("demo__*", "demo__read") && glob("*__send_*", "mail__send_email") && !glob("demo__*", "chat__x") && glob("a", "a") && !glob("a*b", "ab_"));
    }

    #[test]
    fn relay_methods_are_checked_and_name_the_key() {
        let up = |name: &str, methods: &str| format!("[[upstream]]\nname = \"{name}\"\ntransport = \"http\"\nurl = \"http://127.0.0.1:1/mcp\"\nrelay_methods = [{methods}]\n");
        let cfg = parse(&format!("{}{}", up("a", "\"vendor/x\", \"notifications/vendor/x\""), up("b", "\"vendor/y\", \"other\""))).unwrap();
        assert_eq!(cfg.upstreams[0].relay_methods, ["vendor/x", "notifications/vendor/x"]);
        assert_eq!(cfg.upstreams[1].relay_methods, ["vendor/y", "other"]);
        assert!(parse(&up("a", "")).unwrap().upstreams[0].relay_methods.is_empty());
        for (methods, why) in [
            ("\"tools/call\"", "handled by the gateway"),
            ("\"subscriptions/listen\"", "handled by the gateway"),
            ("\"tasks/get\"", "cannot be relayed"),
            ("\"notifications/cancelled\"", "handled by the gateway"),
            ("\"rpc.discover\"", "cannot be relayed"),
            ("\"vendor x\"", "without whitespace"),
            ("\"\"", "without whitespace"),
        ] {
            let e = parse(&up("a", methods)).unwrap_err();
            assert_eq!((e.key.as_deref(), e.line), (Some("upstream[0].relay_methods"), Some(5)), "{e}");
            assert!(e.message.contains(why), "{methods}: {e}");
        }
        let e = parse(&format!("{}{}", up("a", "\"vendor/x\""), up("b", "\"vendor/x\""))).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("upstream[1].relay_methods"), "{e}");
        assert!(e.message.contains("two upstreams"), "{e}");
    }

    #[test]
    fn rate_limit_config_and_errors_naming_the_key() {
        use std::time::Duration;
        assert!(parse("").unwrap().rate_limit.is_none(), "no section, no limiting");
        let cfg = parse("[rate_limit]\ncalls = 600\nper = \"1m\"\nburst = 100\nmax_keys = 5000\n[[rate_limit.tool]]\nname = \"mail__send_*\"\ncalls = 10\nper = \"1m\"\nburst = 2\n[[rate_limit.tool]]\nname = \"x\"\ncalls = 1\nper = \"1s\"\n").unwrap();
        let r = cfg.rate_limit.unwrap();
        let all = r.all.unwrap();
        assert_eq!((all.calls(), all.per(), all.burst(), r.max_keys), (600, Duration::from_secs(60), 100, 5000));
        assert_eq!((r.tools[0].name.as_str(), r.tools[0].quota.calls(), r.tools[0].quota.burst()), ("mail__send_*", 10, 2));
        assert_eq!(r.tools[1].quota.burst(), 1, "burst defaults to calls");
        let r = parse("[rate_limit]\ncalls = 3\nper = \"2s\"\n").unwrap().rate_limit.unwrap();
        assert_eq!((r.all.unwrap().burst(), r.max_keys, r.tools.len()), (3, 100_000, 0));
        assert!(parse("[[rate_limit.tool]]\nname = \"a\"\ncalls = 1\nper = \"1s\"\n").unwrap().rate_limit.unwrap().all.is_none(), "per-tool limits alone");
        let bad = |text: &str, key: &str, line: Option<usize>| {
            let e = parse(text).unwrap_err();
            assert_eq!((e.key.as_deref(), e.line), (Some(key), line), "{e}");
            assert!(e.to_string().starts_with("test.toml:"), "{e}");
        };
        bad("[rate_limit]\ncalls = 0\nper = \"1m\"\n", "rate_limit.calls", Some(2));
        bad("[rate_limit]\ncalls = 10\nper = \"soon\"\n", "rate_limit.per", Some(3));
        bad("[rate_limit]\ncalls = 10\nper = \"0s\"\n", "rate_limit.per", Some(3));
        bad("[rate_limit]\ncalls = 10\nper = \"1m\"\nburst = 0\n", "rate_limit.burst", Some(4));
        bad("[rate_limit]\ncalls = 10\nper = \"1m\"\nmax_keys = 0\n", "rate_limit.max_keys", Some(4));
        bad("[rate_limit]\ncalls = -1\nper = \"1m\"\n", "rate_limit.calls", Some(2));
        bad("[rate_limit]\ncalls = 10\n", "rate_limit.per", Some(2));
        bad("[rate_limit]\nper = \"1m\"\n", "rate_limit.calls", Some(2));
        bad("[rate_limit]\nburst = 3\n", "rate_limit.burst", Some(2));
        bad("[rate_limit]\ncalls = 10\nper = \"1m\"\n[[rate_limit.tool]]\nname = \"a\"\ncalls = 0\nper = \"1m\"\n", "rate_limit.tool[0].calls", Some(6));
        bad("[rate_limit]\ncalls = 10\nper = \"1m\"\n[[rate_limit.tool]]\nname = \"a\"\ncalls = 1\nper = \"1 minute\"\n", "rate_limit.tool[0].per", Some(7));
        bad("[[rate_limit.tool]]\nname = \"\"\ncalls = 1\nper = \"1m\"\n", "rate_limit.tool[0].name", Some(2));
        let e = parse("[[rate_limit.tool]]\nname = \"a\"\nper = \"1m\"\n").unwrap_err();
        assert!(e.message.contains("calls"), "{e}");
        let e = parse("[rate_limit]\ncalls = 10\nper = \"1m\"\nrate = 5\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("rate"), "{e}");
        let e = parse("[rate_limit]\nmax_keys = 10\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("rate_limit"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_key_and_line() {
        let e = parse("[listen]\nhttp = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert_eq!(e.file, Path::new("test.toml"));
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("bogus"), "{e}");
        let e = parse("[[upstream]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\ncomand = \"y\"\n").unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().contains("comand"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("[[upstream]]\nname = \"Bad_Name\"\ntransport = \"stdio\"\ncommand = \"x\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("upstream[0].name")));
        let e = parse("[[upstream]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\ntimeout = \"10 parsecs\"\n").unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert_eq!(e.key.as_deref(), Some("upstream[0].timeout"), "{e}");
        let e = parse("[[upstream]]\nname = \"a\"\ntransport = \"ftp\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = parse("[listen]\nhttp = \"nope\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("listen.http")));
        let e = parse("[limits]\nclient_read_timeout = \"1ms\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("limits.client_read_timeout"), "{e}");
        assert!(e.message.contains("at least 10ms"), "{e}");
        assert_eq!(parse("[limits]\nclient_read_timeout = \"250ms\"\n").unwrap().limits.client_read_timeout, Duration::from_millis(250));
        assert_eq!(parse("").unwrap().limits.client_read_timeout, Duration::from_secs(30), "the default");
        let e = parse("[limits]\nmax_connections = 0\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("limits.max_connections"), "{e}");
        assert_eq!(parse("").unwrap().limits.max_connections, 10_000, "the default");
    }

    #[test]
    fn transport_keys_must_match_transport() {
        let e = parse("[[upstream]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://x/mcp\"\ncommand = \"y\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("upstream[0].command")));
        let e = parse("[[upstream]]\nname = \"a\"\ntransport = \"stdio\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("upstream[0].command"));
    }

    #[test]
    fn collisions_are_rejected_at_load() {
        let two = "[[upstream]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\n[[upstream]]\nname = \"b\"\nprefix = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\n";
        let e = parse(two).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(7), Some("upstream[1].prefix")));
        let empty = "[[upstream]]\nname = \"a\"\nprefix = \"\"\ntransport = \"stdio\"\ncommand = \"x\"\n[[upstream]]\nname = \"b\"\nprefix = \"\"\ntransport = \"stdio\"\ncommand = \"x\"\n";
        assert!(parse(empty).unwrap_err().message.contains("empty prefix"));
        let dup = "[[upstream]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\n[[upstream]]\nname = \"a\"\nprefix = \"z\"\ntransport = \"stdio\"\ncommand = \"x\"\n";
        assert!(parse(dup).unwrap_err().message.contains("twice"));
    }

    #[test]
    fn env_references_expand_and_missing_ones_fail_without_leaking() {
        let ok = parse("[[upstream]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://x/mcp\"\nheaders = { Authorization = \"Bearer ${TOKEN}\" }\n").unwrap();
        let TransportConfig::Http { headers, .. } = &ok.upstreams[0].transport else { panic!() };
        assert_eq!(headers[0].1, "Bearer s3cret");
        assert!(!format!("{ok:?}").contains("s3cret"), "Debug must redact header values");
        let in_url = parse("[[upstream]]\nname = \"a\"\ntransport = \"http\"\nurl = \"https://x:8443/mcp?key=${TOKEN}\"\n").unwrap();
        let shown = format!("{in_url:?}");
        assert!(!shown.contains("s3cret") && shown.contains("https://x:8443/<redacted>"), "Debug must redact the URL past its origin: {shown}");
        let e = parse("[[upstream]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://x/mcp\"\nheaders = { Authorization = \"Bearer ${NOPE}\" }\n").unwrap_err();
        assert!(e.message.contains("NOPE"));
        assert_eq!(e.key.as_deref(), Some("upstream[0].headers.Authorization"));
        assert_eq!(expand_env("a$$b${TOKEN}$c", &|_| Some("v".into())).unwrap(), "a$bv$c");
    }

    #[test]
    fn integrity_keys() {
        let cfg = parse("[pins]\nlockfile = \"locks/x.lock\"\n[[upstream]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\npin = \"strict\"\npoisoning = \"warn\"\n[upstream.tools.send_email]\nrename = \"send\"\ndescription = \"Send mail.\"\nfixed_arguments = { from = \"me@corp.example\" }\n[upstream.tools.delete]\nhide = true\n").unwrap();
        assert_eq!(cfg.pins.lockfile.as_deref(), Some(Path::new("/base/locks/x.lock")));
        let up = &cfg.upstreams[0];
        assert_eq!((up.pin, up.poisoning), (PinMode::Strict, PoisonAction::Warn));
        assert_eq!(up.tools["send_email"].rename.as_deref(), Some("send"));
        assert!(up.tools["delete"].hide);
        assert_eq!(up.tools["send_email"].fixed_arguments["from"], "me@corp.example");
        let e = parse("[[upstream]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\npin = \"sometimes\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("upstream[0].pin")));
        let e = parse("[[upstream]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\n[upstream.tools.t]\nhidden = true\n").unwrap_err();
        assert!(e.message.contains("hidden"), "{e}");
        assert_eq!(e.line, Some(6), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5").is_err());
    }
}
