//! The lockfile (`clawgate.lock`): the pinned digest and the canonical definition of every
//! upstream tool, prompt and resource template an operator (or trust-on-first-use) approved.
//!
//! It is JSON, sorted, one entry per definition, so that it diffs well in review:
//!
//! ```json
//! {"version": 1, "upstreams": {"demo": {"tools": {"send_email": {
//!     "digest": "sha256:…", "reviewed": true, "definition": {…}}}}}}
//! ```
//!
//! `reviewed` is true when a human approved the definition (`clawgate tools approve`); a
//! definition pinned on first use is not reviewed, so poisoning findings still quarantine it.
//! Writes are atomic (temp file, then rename) and merge with what is on disk, so a running
//! gateway adding first-use pins never drops an approval written meanwhile.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const LOCK_VERSION: u32 = 1;

/// Which list a definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Tool,
    Prompt,
    ResourceTemplate,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Prompt => "prompt",
            Self::ResourceTemplate => "resource template",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    pub digest: String,
    #[serde(default)]
    pub reviewed: bool,
    pub definition: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamLock {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, LockEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prompts: BTreeMap<String, LockEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_templates: BTreeMap<String, LockEntry>,
}

impl UpstreamLock {
    fn section(&self, kind: Kind) -> &BTreeMap<String, LockEntry> {
        match kind {
            Kind::Tool => &self.tools,
            Kind::Prompt => &self.prompts,
            Kind::ResourceTemplate => &self.resource_templates,
        }
    }
    fn section_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, LockEntry> {
        match kind {
            Kind::Tool => &mut self.tools,
            Kind::Prompt => &mut self.prompts,
            Kind::ResourceTemplate => &mut self.resource_templates,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub version: u32,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamLock>,
}

impl Default for LockFile {
    fn default() -> Self {
        Self { version: LOCK_VERSION, upstreams: BTreeMap::new() }
    }
}

/// A pin to add: (upstream, kind, name) → entry.
#[derive(Debug, Clone)]
pub struct NewPin {
    pub upstream: String,
    pub kind: Kind,
    pub name: String,
    pub entry: LockEntry,
}

impl LockFile {
    /// Reads a lockfile; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let lock: LockFile = serde_json::from_str(&text).map_err(|e| format!("{}: not a clawgate lockfile: {e}", path.display()))?;
                if lock.version != LOCK_VERSION {
                    return Err(format!("{}: lockfile version {} is not supported (expected {LOCK_VERSION})", path.display(), lock.version));
                }
                Ok(lock)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: cannot read lockfile: {e}", path.display())),
        }
    }

    /// Writes atomically: a temp file beside it, then a rename.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        let tmp = path.with_extension(format!("lock.tmp.{}", std::process::id()));
        std::fs::write(&tmp, text + "\n").map_err(|e| format!("{}: cannot write lockfile: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: cannot write lockfile: {e}", path.display()))
    }

    pub fn get(&self, upstream: &str, kind: Kind, name: &str) -> Option<&LockEntry> {
        self.upstreams.get(upstream)?.section(kind).get(name)
    }

    pub fn set(&mut self, upstream: &str, kind: Kind, name: &str, entry: LockEntry) {
        self.upstreams.entry(upstream.to_owned()).or_default().section_mut(kind).insert(name.to_owned(), entry);
    }

    /// Adds first-use pins that are still absent (an approval written meanwhile wins).
    pub fn add_absent(&mut self, pins: &[NewPin]) -> bool {
        let mut changed = false;
        for p in pins {
            if self.get(&p.upstream, p.kind, &p.name).is_none() {
                self.set(&p.upstream, p.kind, &p.name, p.entry.clone());
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roundtrip_and_merge() {
        let dir = tempfile::Builder::new().prefix("clawgate-pins").tempdir().unwrap();
        let path = dir.path().join("clawgate.lock");
        assert_eq!(LockFile::load(&path).unwrap(), LockFile::default());
        let mut lock = LockFile::default();
        let e = LockEntry { digest: "sha256:a".into(), reviewed: true, definition: json!({"name": "t"}) };
        lock.set("up", Kind::Tool, "t", e.clone());
        lock.save(&path).unwrap();
        let mut back = LockFile::load(&path).unwrap();
        assert_eq!(back, lock);
        let tofu = NewPin { upstream: "up".into(), kind: Kind::Tool, name: "t".into(), entry: LockEntry { digest: "sha256:b".into(), reviewed: false, definition: json!({}) } };
        assert!(!back.add_absent(&[tofu]), "an existing pin is never overwritten by a first-use pin");
        assert_eq!(back.get("up", Kind::Tool, "t"), Some(&e));
        std::fs::write(&path, "{\"version\": 9}").unwrap();
        assert!(LockFile::load(&path).unwrap_err().contains("version 9"));
    }
}
