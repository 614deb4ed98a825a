//! An upstream MCP server run as a child process, speaking newline-delimited JSON-RPC on its
//! stdin/stdout. stderr is captured line by line into the log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use super::{Inbound, TransportError};

/// Environment variables a child inherits from the gateway. Everything else in the gateway's
/// environment (credentials, tokens) stays out of the child unless config names it in `env`.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TERM", "SHELL"];

/// How long a child gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct StdioSpec {
    pub command: String,
    pub args: Vec<String>,
    /// Expanded values; may hold secrets, so `Debug` shows the names only.
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
}

impl std::fmt::Debug for StdioSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioSpec")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("cwd", &self.cwd)
            .finish()
    }
}

/// A running child. Dropping it kills the child.
pub struct StdioTransport {
    out: mpsc::Sender<Vec<u8>>,
    /// Flips to `true` once the child's stdout closed or it exited.
    dead: watch::Receiver<bool>,
    pid: Option<u32>,
    child: tokio::sync::Mutex<Option<Child>>,
}

impl StdioTransport {
    /// Spawns the child and starts its reader, writer and stderr tasks.
    pub fn spawn(
        name: &str,
        spec: &StdioSpec,
        inbound: mpsc::Sender<Inbound>,
        max_message: usize,
    ) -> Result<Self, TransportError> {
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that shutdown reaches grandchildren (npx, shells).
            .process_group(0);
        for key in INHERITED_ENV {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        cmd.envs(&spec.env);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd.spawn().map_err(|e| TransportError::Spawn {
            command: spec.command.clone(),
            reason: e.to_string(),
        })?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(TransportError::Spawn {
                command: spec.command.clone(),
                reason: "stdio pipes unavailable".into(),
            });
        };
        let (dead_tx, dead) = watch::channel(false);
        let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(256);

        // Writer: one line per message, in order.
        let mut stdin = stdin;
        tokio::spawn(async move {
            while let Some(mut line) = out_rx.recv().await {
                line.push(b'\n');
                if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        });

        // Reader: bounded lines of JSON.
        let upstream = name.to_owned();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            loop {
                match read_bounded_line(&mut reader, max_message).await {
                    Ok(Some(Line::Ok(bytes))) => {
                        if bytes.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        match serde_json::from_slice(&bytes) {
                            Ok(msg) => {
                                if inbound.send(Inbound::Message { msg, related_to: None }).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => tracing::warn!(%upstream, error = %e, "upstream wrote a line that is not JSON"),
                        }
                    }
                    Ok(Some(Line::TooLong)) => {
                        tracing::warn!(%upstream, max_message, "upstream message over the size limit was dropped")
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = dead_tx.send(true);
        });

        // stderr goes to the log, one bounded line at a time.
        let upstream = name.to_owned();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr);
            while let Ok(Some(line)) = read_bounded_line(&mut reader, 8 * 1024).await {
                if let Line::Ok(bytes) = line {
                    tracing::info!(target: "clawgate::upstream_stderr", %upstream, "{}", String::from_utf8_lossy(&bytes).trim_end());
                }
            }
        });

        Ok(Self { out, dead, pid, child: tokio::sync::Mutex::new(Some(child)) })
    }

    pub async fn send(&self, msg: &serde_json::Value) -> Result<(), TransportError> {
        self.out.send(crate::jsonrpc::to_vec(msg)).await.map_err(|_| TransportError::Closed)
    }

    /// Resolves once the child is gone.
    pub async fn closed(&self) {
        let mut dead = self.dead.clone();
        let _ = dead.wait_for(|d| *d).await;
    }

    /// SIGTERM to the child's process group, then SIGKILL after a grace period.
    pub async fn shutdown(&self) {
        let Some(mut child) = self.child.lock().await.take() else { return };
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            let pgid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_ok() {
                return;
            }
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = child.kill().await;
    }
}

enum Line {
    Ok(Vec<u8>),
    TooLong,
}

/// Reads one `\n`-terminated line of at most `max` bytes. A longer line is consumed and
/// reported as [`Line::TooLong`] without being buffered.
async fn read_bounded_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() && !too_long { None } else if too_long { Some(Line::TooLong) } else { Some(Line::Ok(buf)) });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (available.get(..i).unwrap_or_default(), Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf = Vec::new();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(available.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some(if too_long { Line::TooLong } else { Line::Ok(buf) }));
        }
    }
}
