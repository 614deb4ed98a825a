//! The audit log: one JSON record per line, each carrying the SHA-256 of the line before it, so
//! that editing, inserting or deleting a record breaks the chain (`clawgate audit verify`).
//!
//! Records are written by one thread from a bounded queue, never on the caller's path. A record
//! that cannot be kept (the queue is full, or its batch's write failed) is logged and counted in
//! the next record written (`dropped_before`). The pipeline asks [`Audit::writable`] and checks
//! what [`Audit::decision`] returns, so that under `[audit] on_failure = "deny"` (the default)
//! no call goes through while its decision cannot be recorded. Without `[audit] file` records go
//! to the log under the `clawgate::audit` target.
//!
//! It records one `decision` per call (principal, target, outcome, deciding policies, the
//! SHA-256 of the exact call; never argument values), approval outcomes, policy reloads and
//! rejections, and tool-integrity events: quarantines, poisoning flags, sanitised definitions
//! and results, first-use pins and approvals picked up.

use std::io::{Read as _, Seek as _, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clawgate_policies::decision::Decision;
use clawgate_policies::integrity::canonical;
use clawgate_policies::labels::LabelView;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

/// The hash a chain starts from.
const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
/// Records waiting to be written; more are dropped (and counted) rather than blocking callers.
const QUEUE: usize = 4096;
/// The longest last record [`Audit::start`] reads back to resume the chain.
const MAX_RECORD: usize = 16 << 20;
/// After each write the writer waits this long before taking the next batch (group commit): under
/// load, records gather in the queue without waking the writer once per call (each wakeup is a
/// futex call and a thread switch, which cost more than writing the record). When the queue is
/// empty the writer blocks until the next record, so an idle gateway does not poll, and a record
/// reaches the file at most this much later than without it.
const GROUP_COMMIT: std::time::Duration = std::time::Duration::from_millis(2);

/// The writer yields the core once per batch, before building its first deferred record, and
/// only while fewer records than this wait behind it.
const YIELD_BELOW: usize = 64;

/// Builds a record's fields on the writer thread (see [`Audit::record_later`]).
type Build = Box<dyn FnOnce() -> Value + Send>;

/// What the writer is sent: a record, one whose fields the writer builds, or a request to report
/// once everything before it is on disk.
enum Entry {
    Record(Value),
    Later { event: &'static str, ts_ms: u64, build: Build },
    Decision { ts_ms: u64, rec: Box<DecisionRecord> },
    Flush(tokio::sync::oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Entry>>,
    shared: Arc<Shared>,
}

/// What the callers and the writer thread share.
#[derive(Default)]
struct Shared {
    /// Records lost since the last one written (the queue was full, or a write failed): the
    /// next record written says so (`dropped_before`).
    dropped: AtomicU64,
    /// Records lost since the gateway started.
    lost: AtomicU64,
    /// True from a failed write until a write succeeds again.
    failing: AtomicBool,
}

/// The audit log's state, for the admin API's `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Whether records go to a file.
    pub file: bool,
    /// See [`Audit::writable`].
    pub writable: bool,
    /// Records lost since the gateway started.
    pub lost: u64,
}

impl Audit {
    /// Opens (or creates) the log and resumes its chain from the last line. A log that cannot be
    /// opened for appending, or whose last record is not valid, is an error here, at startup.
    pub fn start(file: Option<&Path>) -> Result<Self, String> {
        let Some(path) = file else { return Ok(Self { tx: None, shared: Arc::default() }) };
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| format!("{}: cannot open the audit log for appending: {e}", path.display()))?;
        let prev = match last_record(&mut f).map_err(|e| format!("{}: cannot read the audit log: {e}", path.display()))? {
            None => GENESIS.to_owned(),
            Some(line) => serde_json::from_slice::<Value>(&line)
                .ok()
                .and_then(|v| v.get("hash").and_then(Value::as_str).map(str::to_owned))
                .ok_or_else(|| format!("{}: the last audit record is not valid; refusing to extend a broken chain", path.display()))?,
        };
        Self::spawn(f, path.display().to_string(), prev, QUEUE)
    }

    /// Starts the writer thread on `out`, with room for `queue` records.
    fn spawn(out: impl Sink, name: String, prev: String, queue: usize) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel(queue);
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        // A thread of its own: blocking file writes never occupy (or hop through) the runtime.
        std::thread::Builder::new().name("clawgate-audit".into()).spawn(move || writer(out, &name, prev, rx, &theirs)).map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(Self { tx: Some(tx), shared })
    }

    /// Whether records go anywhere: to the file, or to the log at debug level. Callers skip
    /// building a record nobody will read.
    pub fn is_on(&self) -> bool {
        self.tx.is_some() || tracing::enabled!(target: "clawgate::audit", tracing::Level::DEBUG)
    }

    /// Whether records go to a file (and so can fail to be kept).
    pub fn has_file(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether a record queued now is expected to reach the file: the writer is running and its
    /// last write succeeded. (A record can still be lost to a write that fails after this.)
    pub fn writable(&self) -> bool {
        match &self.tx {
            None => true,
            Some(tx) => !tx.is_closed() && !self.shared.failing.load(Ordering::Relaxed),
        }
    }

    /// Whether records go to a file, whether it is writable, and how many records were lost.
    pub fn status(&self) -> Status {
        Status { file: self.has_file(), writable: self.writable(), lost: self.shared.lost.load(Ordering::Relaxed) }
    }

    /// Queues one record: `event` names it, `fields` says the rest.
    pub fn record(&self, event: &str, fields: Value) {
        let rec = assemble(event, now_ms(), fields);
        match &self.tx {
            // Without a file the records still exist, at debug level, for whoever wants them.
            None => tracing::debug!(target: "clawgate::audit", "{rec}"),
            Some(tx) => {
                self.send(tx, Entry::Record(rec));
            }
        }
    }

    /// Like [`Audit::record`], but `build` makes the fields on the writer thread, off the
    /// caller's path: for a record that costs more to build than to hand over (a call's
    /// decision with its labels). The record's time is still the time of this call.
    pub fn record_later(&self, event: &'static str, build: impl FnOnce() -> Value + Send + 'static) {
        let ts_ms = now_ms();
        match &self.tx {
            None => tracing::debug!(target: "clawgate::audit", "{}", assemble(event, ts_ms, build())),
            Some(tx) => {
                self.send(tx, Entry::Later { event, ts_ms, build: Box::new(build) });
            }
        }
    }

    /// Queues one call's `decision` record. The writer renders it straight into its canonical
    /// JSON, off the caller's path and without building a [`Value`]. False when the record was
    /// dropped (the queue is full, or the writer has stopped).
    #[must_use = "a call whose decision record was dropped may have to be denied"]
    pub fn decision(&self, rec: DecisionRecord) -> bool {
        let ts_ms = now_ms();
        match &self.tx {
            None => {
                tracing::debug!(target: "clawgate::audit", "{}", assemble("decision", ts_ms, rec.fields()));
                true
            }
            Some(tx) => self.send(tx, Entry::Decision { ts_ms, rec: Box::new(rec) }),
        }
    }

    fn send(&self, tx: &mpsc::Sender<Entry>, entry: Entry) -> bool {
        let sent = tx.try_send(entry).is_ok();
        if !sent {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            tracing::error!("audit queue full or closed; a record was dropped");
        }
        sent
    }
}

/// One call's decision: who asked for what, the outcome and the deciding policies, the SHA-256
/// of the exact call, and the arguments' labels (never argument values).
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    pub decision: Decision,
    pub principal: String,
    pub method: String,
    pub upstream: String,
    pub target: String,
    /// SHA-256 of the exact call (`authz::call_digest`).
    pub call: [u8; 32],
    /// Shadow mode: the decision was recorded, not enforced.
    pub shadow: bool,
    pub labels: Option<LabelView>,
}

impl DecisionRecord {
    /// The record's fields as JSON: for the log when there is no audit file, and the reference
    /// [`DecisionRecord::write_canonical`] is tested against.
    fn fields(self) -> Value {
        let mut rec = crate::authz::summary(&self.decision);
        if let Some(o) = rec.as_object_mut() {
            if let Some(l) = self.labels {
                o.insert("labels".into(), l.into_record());
            }
            o.insert("principal".into(), self.principal.into());
            o.insert("method".into(), self.method.into());
            o.insert("upstream".into(), self.upstream.into());
            o.insert("target".into(), self.target.into());
            o.insert("call".into(), format!("sha256:{}", hex::encode(self.call)).into());
            if self.shadow {
                o.insert("shadow".into(), true.into());
            }
        }
        rec
    }

    /// The whole record as the writer hashes it: exactly the canonical JSON of [`assemble`] of
    /// [`DecisionRecord::fields`] with the writer's own fields (`dropped_before` when not 0,
    /// `prev`), written key by key in canonical order.
    fn write_canonical(&self, ts_ms: u64, dropped_before: u64, prev: &str, out: &mut Vec<u8>) {
        let s = |v: &str, out: &mut Vec<u8>| canonical::write_str(v, out);
        let deny = match &self.decision {
            Decision::Deny(d) => Some(d),
            _ => None,
        };
        // Keys in canonical (byte) order: call, decision, detail, dropped_before, engine, event,
        // labels, method, policies, prev, principal, reason, shadow, target, ts_ms, upstream.
        out.extend_from_slice(b"{\"call\":\"sha256:");
        let mut hex = [0u8; 64];
        if hex::encode_to_slice(self.call, &mut hex).is_ok() {
            out.extend_from_slice(&hex);
        }
        out.extend_from_slice(b"\",\"decision\":");
        out.extend_from_slice(match self.decision {
            Decision::Allow { .. } => b"\"allow\"",
            Decision::Ask { .. } => b"\"ask\"",
            Decision::Deny(_) => b"\"deny\"",
        });
        if let Some(d) = deny {
            out.extend_from_slice(b",\"detail\":");
            s(&d.detail, out);
        }
        if dropped_before > 0 {
            out.extend_from_slice(format!(",\"dropped_before\":{dropped_before}").as_bytes());
        }
        if let Some(d) = deny {
            out.extend_from_slice(b",\"engine\":");
            s(d.engine.as_str(), out);
        }
        out.extend_from_slice(b",\"event\":\"decision\"");
        if let Some(l) = &self.labels {
            out.extend_from_slice(b",\"labels\":");
            l.write_record(out);
        }
        out.extend_from_slice(b",\"method\":");
        s(&self.method, out);
        out.extend_from_slice(b",\"policies\":");
        match &self.decision {
            Decision::Allow { policies } => canonical::write_strs(policies.iter().map(String::as_str), out),
            Decision::Ask { policy, .. } => canonical::write_strs([policy.as_str()], out),
            Decision::Deny(d) => canonical::write_strs(d.policies.iter().map(String::as_str), out),
        }
        out.extend_from_slice(b",\"prev\":");
        s(prev, out);
        out.extend_from_slice(b",\"principal\":");
        s(&self.principal, out);
        if let Some(d) = deny {
            out.extend_from_slice(b",\"reason\":");
            s(d.reason.as_str(), out);
        }
        if self.shadow {
            out.extend_from_slice(b",\"shadow\":true");
        }
        out.extend_from_slice(b",\"target\":");
        s(&self.target, out);
        out.extend_from_slice(format!(",\"ts_ms\":{ts_ms},\"upstream\":").as_bytes());
        s(&self.upstream, out);
        out.push(b'}');
    }
}

/// Milliseconds since the epoch: the time of the event, not of the write (which may come a
/// group commit later).
fn now_ms() -> u64 {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// One record: `event`, `ts_ms`, then the caller's fields, less the ones only the writer sets.
fn assemble(event: &str, ts_ms: u64, fields: Value) -> Value {
    let mut rec = json!({"event": event, "ts_ms": ts_ms});
    if let (Some(r), Value::Object(mut f)) = (rec.as_object_mut(), fields) {
        // The writer's own fields cannot be supplied by a caller.
        for own in ["ts_ms", "prev", "hash", "dropped_before"] {
            f.remove(own);
        }
        r.extend(f);
    }
    rec
}

impl Audit {
    /// Waits until every record queued before this call has been written (or its write failed);
    /// the gateway calls it on shutdown so that no queued record is lost. Bounded by `within`.
    pub async fn flush(&self, within: std::time::Duration) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = tokio::sync::oneshot::channel();
        // `send` waits for room: a full queue still gets its flush, after the records before it.
        let flushed = async {
            if tx.send(Entry::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(within, flushed).await.is_err() {
            tracing::error!("the audit writer did not finish within {within:?} of shutdown; records may be missing");
        }
    }
}

fn chain(prev: &str, rec: &Value) -> String {
    chain_text(prev, canonical::canonical_json(rec).as_bytes())
}

/// The chain hash over a record's canonical text.
fn chain_text(prev: &str, canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(canonical);
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The last non-empty line of `f` (read back from its end, in pieces), or `None` if it has none.
fn last_record(f: &mut std::fs::File) -> std::io::Result<Option<Vec<u8>>> {
    const STEP: u64 = 64 << 10;
    let mut pos = f.metadata()?.len();
    let mut tail: Vec<u8> = Vec::new();
    while pos > 0 {
        let step = pos.min(STEP);
        pos -= step;
        let mut piece = vec![0; usize::try_from(step).unwrap_or(0)];
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut piece)?;
        piece.extend_from_slice(&tail);
        tail = piece;
        let text = trim_line_ends(&tail);
        if let Some(start) = text.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(text[start + 1..].to_vec()));
        }
        if text.len() > MAX_RECORD {
            return Err(std::io::Error::other(format!("its last record is longer than {MAX_RECORD} bytes")));
        }
    }
    let text = trim_line_ends(&tail);
    Ok((!text.is_empty()).then(|| text.to_vec()))
}

/// `b` without the line ends (and blank lines) it finishes with.
fn trim_line_ends(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|c| !matches!(c, b'\n' | b'\r')).map_or(0, |i| i + 1);
    &b[..end]
}

/// Where the writer appends: the log file (or a test's stand-in).
trait Sink: Write + Send + 'static {
    /// The length to go back to if the next write fails.
    fn len(&mut self) -> std::io::Result<u64>;
    /// Cuts off what a failed write left, so that the next record starts on a line of its own.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl Sink for std::fs::File {
    fn len(&mut self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
}

fn writer(mut file: impl Sink, name: &str, mut prev: String, mut rx: mpsc::Receiver<Entry>, shared: &Shared) {
    let mut batch = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut canon: Vec<u8> = Vec::with_capacity(1024);
    let mut flushes = Vec::new();
    // Records that queued up while the last batch was written go out in one write.
    while rx.blocking_recv_many(&mut batch, 256) > 0 {
        buf.clear();
        let mut last = prev.clone();
        // The records this batch's write would lose, and with them the earlier losses they report.
        let (mut records, mut at_stake) = (0, 0);
        let mut yielded = false;
        let mut entries = batch.drain(..);
        while let Some(entry) = entries.next() {
            // Building is the costly part: let a call's thread that waits for the core go
            // first, but only while the writer keeps up. Behind, it takes its full share, or a
            // busy machine would starve it and the queue would drop records. Once per batch:
            // a yield to a waiting thread is a thread switch, and one per record cost more
            // than the few microseconds each record takes to build.
            let deferred = matches!(entry, Entry::Later { .. } | Entry::Decision { .. });
            if deferred && !yielded && entries.len() + rx.len() < YIELD_BELOW {
                std::thread::yield_now();
                yielded = true;
            }
            canon.clear();
            // Each record written takes over the losses counted since the one before it.
            let mut take_dropped = || {
                let before = shared.dropped.swap(0, Ordering::Relaxed);
                records += 1;
                at_stake += 1 + before;
                before
            };
            match entry {
                Entry::Flush(done) => {
                    flushes.push(done);
                    continue;
                }
                Entry::Decision { ts_ms, rec } => rec.write_canonical(ts_ms, take_dropped(), &last, &mut canon),
                Entry::Record(rec) => write_generic(rec, take_dropped(), &last, &mut canon),
                Entry::Later { event, ts_ms, build } => write_generic(assemble(event, ts_ms, build()), take_dropped(), &last, &mut canon),
            }
            // Serialised once: the canonical form is hashed and is also the line written, with
            // `hash` appended (`verify` removes it and re-canonicalises the rest to the same text).
            let hash = chain_text(&last, &canon);
            match canon.strip_suffix(b"}") {
                Some(body) if body.len() > 1 => {
                    buf.extend_from_slice(body);
                    buf.extend_from_slice(b",\"hash\":\"");
                }
                _ => buf.extend_from_slice(b"{\"hash\":\""),
            }
            buf.extend_from_slice(hash.as_bytes());
            buf.extend_from_slice(b"\"}\n");
            last = hash;
        }
        // All or nothing per batch: on a failed write the chain goes on from the last record
        // that is on disk, the next record counts the lost ones, and until a write succeeds the
        // log is not writable (calls are denied under `on_failure = "deny"`).
        let written = buf.is_empty() || {
            // A write that fails part way (a full disk) leaves part of a line: cut it off, or the
            // next record would continue that line and the log would read as tampered with.
            let before = file.len();
            let wrote = file.write_all(&buf).and_then(|()| file.flush());
            if let Err(e) = &wrote {
                tracing::error!("{name}: audit write failed, {records} records lost: {e}");
                match before.and_then(|len| file.truncate(len)) {
                    Ok(()) => {}
                    Err(e) => tracing::error!("{name}: cannot cut off the failed write's partial record: {e}"),
                }
            }
            wrote.is_ok()
        };
        // A batch of flushes alone wrote nothing, so it says nothing about whether writes
        // succeed again: only a batch with records clears (or sets) `failing`.
        if written && !buf.is_empty() {
            prev = last;
            if shared.failing.swap(false, Ordering::Relaxed) {
                tracing::warn!("{name}: audit writes succeed again");
            }
        } else if !written {
            shared.dropped.fetch_add(at_stake, Ordering::Relaxed);
            shared.lost.fetch_add(records, Ordering::Relaxed);
            shared.failing.store(true, Ordering::Relaxed);
        }
        // Flushes are answered once the batch's outcome is recorded, so a flushed caller sees it.
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        std::thread::sleep(GROUP_COMMIT);
    }
}

/// A record built as JSON, with the writer's fields set, as canonical JSON into `out`.
fn write_generic(mut rec: Value, dropped_before: u64, prev: &str, out: &mut Vec<u8>) {
    if let Some(o) = rec.as_object_mut() {
        if dropped_before > 0 {
            o.insert("dropped_before".into(), dropped_before.into());
        }
        o.insert("prev".into(), prev.into());
    }
    canonical::write(&rec, out);
}

/// Checks a log's chain. Returns the number of records, or the line where it breaks.
pub fn verify(path: &Path) -> Result<usize, String> {
    check(path).map(|v| v.records)
}

/// What [`check`] found in a log whose chain is intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub records: usize,
    /// Records the gateway lost before writing them, as the records after them report
    /// (`dropped_before`): gaps the chain itself cannot show.
    pub lost: u64,
}

/// Checks a log's hash chain, reading it a line at a time (a log of any size, in bounded
/// memory; a line longer than 16 MiB is an error), and adds up the losses its records report.
pub fn check(path: &Path) -> Result<Verified, String> {
    use std::io::BufRead as _;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(256 << 10, file);
    let mut prev = GENESIS.to_owned();
    let (mut n, mut lost) = (0, 0u64);
    let mut buf = Vec::new();
    let limit = u64::try_from(MAX_RECORD).unwrap_or(u64::MAX) + 1;
    for i in 0.. {
        let at = || format!("{}:{}", path.display(), i + 1);
        buf.clear();
        if (&mut reader).take(limit).read_until(b'\n', &mut buf).map_err(|e| format!("{}: {e}", at()))? == 0 {
            break;
        }
        if buf.len() > MAX_RECORD {
            return Err(format!("{}: longer than {MAX_RECORD} bytes", at()));
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut rec: Value = serde_json::from_slice(line).map_err(|e| format!("{}: not JSON: {e}", at()))?;
        let o = rec.as_object_mut().ok_or_else(|| format!("{}: not a record", at()))?;
        let hash = o.remove("hash").and_then(|h| h.as_str().map(str::to_owned)).ok_or_else(|| format!("{}: no hash", at()))?;
        if o.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(format!("{}: chain broken: `prev` does not match the record before", at()));
        }
        if chain(&prev, &rec) != hash {
            return Err(format!("{}: record altered: its hash does not match its content", at()));
        }
        lost += rec.get("dropped_before").and_then(Value::as_u64).unwrap_or(0);
        prev = hash;
        n += 1;
    }
    Ok(Verified { records: n, lost })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The writer is a task: wait (bounded) until it has written `n` lines.
    async fn wait_lines(path: &Path, n: usize) {
        for _ in 0..200 {
            if std::fs::read_to_string(path).is_ok_and(|t| t.lines().count() == n) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// An empty log path in a scratch directory, removed when the returned guard drops.
    #[allow(clippy::unwrap_used, reason = "test helper")]
    fn fresh_log(name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::Builder::new().prefix(name).tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        (dir, path)
    }

    #[tokio::test]
    async fn chain_verifies_and_detects_tampering() {
        let (_dir, path) = fresh_log("clawgate-audit");
        let a = Audit::start(Some(&path)).unwrap();
        for i in 0..5 {
            a.record("test", json!({"i": i}));
        }
        drop(a);
        wait_lines(&path, 5).await;
        assert_eq!(verify(&path), Ok(5));
        // A restarted gateway continues the chain.
        let a = Audit::start(Some(&path)).unwrap();
        a.record("test", json!({"i": 5}));
        drop(a);
        wait_lines(&path, 6).await;
        assert_eq!(verify(&path), Ok(6));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"i\":2", "\"i\":7", 1)).unwrap();
        assert!(verify(&path).unwrap_err().contains(":3: record altered"));
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(verify(&path).unwrap_err().contains(":2: chain broken"));
    }

    /// `flush` returns only once everything queued before it is on disk, whatever the group
    /// commit delay: this is what shutdown relies on.
    #[tokio::test]
    async fn flush_writes_everything_queued_before_it() {
        let (_dir, path) = fresh_log("clawgate-audit-flush");
        let a = Audit::start(Some(&path)).unwrap();
        for round in 0..3 {
            for i in 0..40 {
                a.record("test", json!({"round": round, "i": i, "ts_ms": 1}));
            }
            a.flush(std::time::Duration::from_secs(5)).await;
            // No waiting: the lines are there when flush returns.
            let n = std::fs::read_to_string(&path).unwrap().lines().count();
            assert_eq!(n, 40 * (round + 1));
        }
        assert_eq!(verify(&path), Ok(120));
        let text = std::fs::read_to_string(&path).unwrap();
        // A caller cannot set the writer's fields.
        assert!(!text.contains("\"ts_ms\":1,"), "{text}");
    }

    /// A deferred record is built on the writer thread, keeps its place among the plain ones,
    /// carries the time it was recorded (not built), and cannot set the writer's fields either.
    #[tokio::test]
    async fn deferred_records_are_built_by_the_writer_in_order() {
        let (_dir, path) = fresh_log("clawgate-audit-later");
        let a = Audit::start(Some(&path)).unwrap();
        let before = now_ms();
        for i in 0..20 {
            if i % 2 == 0 {
                a.record("test", json!({"i": i}));
            } else {
                a.record_later("later", move || json!({"i": i, "thread": std::thread::current().name(), "hash": "forged", "ts_ms": 1}));
            }
        }
        let after = now_ms();
        a.flush(std::time::Duration::from_secs(5)).await;
        assert_eq!(verify(&path), Ok(20));
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let rec: Value = serde_json::from_str(line).unwrap();
            assert_eq!(rec["i"], i, "{line}");
            let ts = rec["ts_ms"].as_u64().unwrap();
            assert!((before..=after).contains(&ts), "{line}");
            if i % 2 == 1 {
                assert_eq!(rec["event"], "later");
                assert_eq!(rec["thread"], "clawgate-audit", "built off the caller's thread");
                assert_ne!(rec["hash"], "forged");
            }
        }
    }

    /// Decision records of every shape, from the calls' own paths: allowed with labels, asked,
    /// denied with and without deciding policies, in shadow mode.
    fn decisions() -> Vec<DecisionRecord> {
        use clawgate_policies::decision::{Denial, DenyReason, EngineKind};
        use clawgate_policies::labels::{ArgLabel, Label};
        let mut args = std::collections::BTreeMap::new();
        let mut data = Label::untrusted_private(Some("mail/read#c1:/0/body".into()));
        data.readers = Some(["alice@example.com".to_owned()].into());
        args.insert("body".to_owned(), ArgLabel { label: data.clone(), sources: ["matched", "model"].into(), matched: ["mail/read#c1:/0/body".to_owned()].into() });
        args.insert("\u{1f600}\u{ff61}".to_owned(), ArgLabel { label: Label::intent(), sources: ["intent"].into(), matched: Default::default() });
        args.insert("\u{ff61}".to_owned(), ArgLabel { label: Label::model_generated(), sources: ["model"].into(), matched: Default::default() });
        let view = LabelView { session: data.clone(), control: Label::intent(), data, recipients: Default::default(), strict: true, args };
        let base = DecisionRecord {
            decision: Decision::Allow { policies: vec!["p1".into(), "tasks/mail \"reply\"".into()] },
            principal: "agent:é\n".into(),
            method: "tools/call".into(),
            upstream: "mail".into(),
            target: "mail__send".into(),
            call: [0xab; 32],
            shadow: false,
            labels: Some(view),
        };
        let deny = |policies: Vec<String>, detail: &str| Decision::Deny(Denial { reason: DenyReason::Forbidden, engine: EngineKind::Cedar, policies, detail: detail.into() });
        vec![
            base.clone(),
            DecisionRecord { labels: Some(LabelView::empty(false)), ..base.clone() },
            DecisionRecord { labels: None, decision: Decision::Allow { policies: vec![] }, ..base.clone() },
            DecisionRecord { decision: Decision::Ask { policy: "ask-first".into(), message: "may I?".into() }, ..base.clone() },
            DecisionRecord { decision: deny(vec!["no-exfil".into()], "forbid \"no-exfil\" matched\u{7}"), ..base.clone() },
            DecisionRecord { decision: deny(vec![], ""), labels: None, shadow: true, ..base.clone() },
            DecisionRecord { decision: Decision::deny(DenyReason::RateLimited, EngineKind::Gateway, "over 10/s"), shadow: true, ..base },
        ]
    }

    /// The writer renders a decision straight into canonical JSON: byte for byte what building
    /// the record as JSON and canonicalising it gives (what `verify` recomputes), with and
    /// without the writer's `dropped_before`.
    #[test]
    fn decision_records_written_directly_match_the_generic_path() {
        let prev = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for rec in decisions() {
            for dropped in [0, 3] {
                let mut direct = Vec::new();
                rec.write_canonical(1_700_000_000_123, dropped, prev, &mut direct);
                let mut generic = Vec::new();
                write_generic(assemble("decision", 1_700_000_000_123, rec.clone().fields()), dropped, prev, &mut generic);
                assert_eq!(String::from_utf8(direct).unwrap(), String::from_utf8(generic).unwrap());
            }
        }
    }

    /// Decision records go through the file and verify, among plain records.
    #[tokio::test]
    async fn decision_records_chain_and_verify() {
        let (_dir, path) = fresh_log("clawgate-audit-decision");
        let a = Audit::start(Some(&path)).unwrap();
        for (i, rec) in decisions().into_iter().enumerate() {
            a.record("test", json!({"i": i}));
            assert!(a.decision(rec));
        }
        a.flush(std::time::Duration::from_secs(5)).await;
        assert_eq!(verify(&path), Ok(14));
        let text = std::fs::read_to_string(&path).unwrap();
        let first: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(first["event"], "decision");
        assert_eq!(first["decision"], "allow");
        assert_eq!(first["labels"]["args"]["body"]["label"]["readers"], json!(["alice@example.com"]));
        // An edited decision breaks the chain.
        std::fs::write(&path, text.replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1)).unwrap();
        assert!(verify(&path).unwrap_err().contains("record altered"), "{:?}", verify(&path));
    }

    /// A log the gateway cannot append to stops it at startup, naming the file; before, the
    /// writer failed alone and every record was dropped while calls went on.
    #[test]
    fn a_log_that_cannot_be_opened_is_an_error_at_startup() {
        let (_dir, path) = fresh_log("clawgate-audit-open");
        let path = path.join("missing-dir").join("audit.jsonl");
        let e = Audit::start(Some(&path)).err().unwrap();
        assert!(e.starts_with(&format!("{}: cannot open the audit log for appending: ", path.display())), "{e}");
    }

    /// The chain resumes from the last record read back from the end of the file, including a
    /// record longer than one read and a log far longer than one; a broken last line refuses.
    #[tokio::test]
    async fn the_chain_resumes_from_the_end_of_a_long_log() {
        let (_dir, path) = fresh_log("clawgate-audit-resume");
        let a = Audit::start(Some(&path)).unwrap();
        for i in 0..2000 {
            a.record("test", json!({"i": i, "pad": "x".repeat(100)}));
        }
        a.record("test", json!({"big": "y".repeat(200_000)}));
        a.flush(std::time::Duration::from_secs(5)).await;
        drop(a);
        let a = Audit::start(Some(&path)).unwrap();
        a.record("test", json!({"after": "restart"}));
        a.flush(std::time::Duration::from_secs(5)).await;
        drop(a);
        assert_eq!(verify(&path), Ok(2002));
        // Trailing blank lines do not hide the last record.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"\n\n").unwrap();
        let a = Audit::start(Some(&path)).unwrap();
        a.record("test", json!({"after": "blank lines"}));
        a.flush(std::time::Duration::from_secs(5)).await;
        drop(a);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\n\n\n", "\n")).unwrap();
        assert_eq!(verify(&path), Ok(2003));
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"cut\": ").unwrap();
        let e = Audit::start(Some(&path)).err().unwrap();
        assert!(e.contains("the last audit record is not valid"), "{e}");
        // `verify` reads a line at a time, and refuses one past the bound instead of holding it.
        assert!(check(&path).unwrap_err().contains(":2004: not JSON"), "{:?}", check(&path));
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&vec![b'x'; MAX_RECORD + 10]).unwrap();
        assert!(check(&path).unwrap_err().ends_with(&format!(":2004: longer than {MAX_RECORD} bytes")), "{:?}", check(&path));
    }

    /// A sink that, while `fail` is set, takes the first 10 bytes of a write and then fails (as
    /// a filling disk does), and otherwise takes everything, into `out`.
    struct Flaky {
        fail: Arc<AtomicBool>,
        out: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    #[allow(clippy::unwrap_used, reason = "test code")]
    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut out = self.out.lock().unwrap();
            if self.fail.load(Ordering::Relaxed) {
                if buf.len() > 10 {
                    out.extend_from_slice(&buf[..10]);
                    return Ok(10);
                }
                return Err(std::io::Error::other("no space left (test)"));
            }
            out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[allow(clippy::unwrap_used, reason = "test code")]
    impl Sink for Flaky {
        fn len(&mut self) -> std::io::Result<u64> {
            Ok(self.out.lock().unwrap().len() as u64)
        }
        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            self.out.lock().unwrap().truncate(usize::try_from(len).unwrap());
            Ok(())
        }
    }

    /// A failed write makes the log unwritable (the pipeline then denies calls) until a write
    /// succeeds again; the records it lost are counted in the next record, which chains on from
    /// the last record actually written, on a line of its own (the failed write's partial
    /// record is cut off).
    #[tokio::test]
    async fn a_failed_write_makes_the_log_unwritable_until_a_write_succeeds() {
        let fail = Arc::new(AtomicBool::new(false));
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let a = Audit::spawn(Flaky { fail: Arc::clone(&fail), out: Arc::clone(&out) }, "test".into(), GENESIS.into(), 64).unwrap();
        a.record("test", json!({"i": 0}));
        a.flush(std::time::Duration::from_secs(5)).await;
        assert!(a.writable());
        fail.store(true, Ordering::Relaxed);
        for rec in decisions().into_iter().take(3) {
            assert!(a.decision(rec), "queued; the write fails later");
        }
        a.flush(std::time::Duration::from_secs(5)).await;
        assert!(!a.writable());
        // A flush with no record before it is a batch that writes nothing: it proves nothing.
        a.flush(std::time::Duration::from_secs(5)).await;
        assert!(!a.writable(), "a batch of flushes alone does not make the log writable");
        a.record("test", json!({"i": 1}));
        a.flush(std::time::Duration::from_secs(5)).await;
        assert!(!a.writable(), "still failing");
        fail.store(false, Ordering::Relaxed);
        a.record("test", json!({"i": 2}));
        a.flush(std::time::Duration::from_secs(5)).await;
        assert!(a.writable(), "a write succeeded");
        let (_dir, path) = fresh_log("clawgate-audit-flaky");
        std::fs::write(&path, out.lock().unwrap().as_slice()).unwrap();
        assert_eq!(verify(&path), Ok(2));
        let text = std::fs::read_to_string(&path).unwrap();
        let last: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!((last["i"].as_u64(), last["dropped_before"].as_u64()), (Some(2), Some(4)), "{last}");
        assert_eq!(a.status(), Status { file: true, writable: true, lost: 4 });
        // `audit verify` shows the gap the chain cannot.
        assert_eq!(check(&path), Ok(Verified { records: 2, lost: 4 }));
    }

    /// A sink whose every write waits for a go-ahead (or for the test to hang up).
    struct Stalled(std::sync::mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink for Stalled {
        fn len(&mut self) -> std::io::Result<u64> {
            Ok(0)
        }
        fn truncate(&mut self, _: u64) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// With the writer stuck, the queue fills and `decision` says the record was dropped
    /// (the pipeline then denies the call); the next record written counts what was lost.
    #[tokio::test]
    async fn a_full_queue_refuses_decision_records() {
        let (go, wait) = std::sync::mpsc::channel();
        let a = Audit::spawn(Stalled(wait), "test".into(), GENESIS.into(), 2).unwrap();
        let mut refused = 0;
        for rec in decisions().into_iter().cycle().take(10) {
            if !a.decision(rec) {
                refused += 1;
            }
        }
        assert!(refused >= 5, "{refused} of 10 refused with room for 2 queued and 1 batch in the writer");
        assert!(a.shared.dropped.load(Ordering::Relaxed) >= 5);
        assert_eq!(a.status().lost, refused);
        drop(go);
        a.flush(std::time::Duration::from_secs(5)).await;
        assert!(a.writable());
        assert_eq!(a.shared.dropped.load(Ordering::Relaxed), 0, "the next record counted them");
        assert_eq!(a.status(), Status { file: true, writable: true, lost: refused }, "losses since start stay counted");
    }

    /// On a machine whose cores are all busy the writer still keeps up: it stops yielding once
    /// records wait behind it, so none is dropped. (Yielding before every record let spinning
    /// threads take a whole time slice per record, and the queue overflowed.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_busy_machine_does_not_starve_the_writer() {
        use std::sync::atomic::AtomicBool;
        let (_dir, path) = fresh_log("clawgate-audit-busy");
        let a = Audit::start(Some(&path)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let spinners: Vec<_> = (0..4)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let n = 20_000;
        for i in 0..n {
            a.record_later("busy", move || json!({"i": i}));
            if i % 50 == 49 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        a.flush(std::time::Duration::from_secs(20)).await;
        stop.store(true, Ordering::Relaxed);
        for s in spinners {
            s.join().unwrap();
        }
        // Every record is on file, and none tells of records dropped before it.
        assert_eq!(verify(&path), Ok(n));
        assert!(!std::fs::read_to_string(&path).unwrap().contains("dropped_before"));
    }
}
