//! Argument validation: a call's arguments against the tool's pinned `inputSchema` (and an
//! optional stricter schema from config), with the `jsonschema` crate.
//!
//! A schema is compiled once per distinct schema text ([`SchemaCache`]); the gateway keeps one
//! cache across catalog rebuilds, so a tool version is compiled once.
//!
//! **No `$ref` is ever fetched.** The crate is built without its `resolve-http` and
//! `resolve-file` features, and every validator is given [`RefuseRetriever`], which refuses
//! every URI. A schema whose `$ref` points outside itself does not compile; calls to that tool
//! are then refused ("fail closed"), never validated against a partial schema.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Refuses to retrieve anything: neither the network nor the file system is ever read because
/// of a `$ref`.
#[derive(Debug, Clone, Copy)]
pub struct RefuseRetriever;

impl jsonschema::Retrieve for RefuseRetriever {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("clawgate never resolves external $ref ({uri})").into())
    }
}

/// A compiled schema, or why it could not be compiled.
#[derive(Debug, Clone)]
pub enum ArgSchema {
    Compiled(Arc<jsonschema::Validator>),
    /// The schema does not compile (bad keyword, or a `$ref` outside the document). Every call
    /// is refused with this message.
    Broken(String),
}

/// The first failure of a call's arguments: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// JSON Pointer into the arguments (`/to/0`), or `""` for the whole object.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() { "arguments".to_owned() } else { format!("arguments{}", self.path) };
        write!(f, "{path}: {}", self.message)
    }
}

/// Most errors reported for one call.
const MAX_ERRORS: usize = 8;

impl ArgSchema {
    pub fn compile(schema: &Value) -> Self {
        match jsonschema::options().with_retriever(RefuseRetriever).build(schema) {
            Ok(v) => ArgSchema::Compiled(Arc::new(v)),
            Err(e) => ArgSchema::Broken(format!("the tool's input schema cannot be used: {e}")),
        }
    }

    /// Checks arguments; `None` is validated as an empty object.
    pub fn check(&self, args: Option<&Value>) -> Result<(), Vec<ArgError>> {
        let empty = Value::Object(serde_json::Map::new());
        let args = args.unwrap_or(&empty);
        match self {
            ArgSchema::Broken(msg) => Err(vec![ArgError { path: String::new(), message: msg.clone() }]),
            ArgSchema::Compiled(v) => {
                if v.is_valid(args) {
                    return Ok(());
                }
                let errs: Vec<ArgError> = v
                    .iter_errors(args)
                    .take(MAX_ERRORS)
                    .map(|e| ArgError { path: e.instance_path().as_str().to_owned(), message: e.to_string() })
                    .collect();
                // The validator said invalid: that stands even if it names no error.
                if errs.is_empty() { Err(vec![ArgError { path: String::new(), message: "the arguments do not match the tool's schema".into() }]) } else { Err(errs) }
            }
        }
    }
}

/// Compiled schemas by the SHA-256 of their canonical text. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct SchemaCache {
    map: HashMap<[u8; 32], ArgSchema>,
}

const CACHE_MAX: usize = 8_192;

impl SchemaCache {
    pub fn get(&mut self, schema: &Value) -> ArgSchema {
        let key: [u8; 32] = Sha256::digest(crate::integrity::canonical::canonical_json(schema).as_bytes()).into();
        if let Some(s) = self.map.get(&key) {
            return s.clone();
        }
        if self.map.len() >= CACHE_MAX {
            self.map.clear();
        }
        let s = ArgSchema::compile(schema);
        self.map.insert(key, s.clone());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_failing_path() {
        let s = ArgSchema::compile(&json!({
            "type": "object",
            "properties": {"to": {"type": "array", "items": {"type": "string", "format": "email"}}, "n": {"type": "integer", "maximum": 3}},
            "required": ["to"],
            "additionalProperties": false
        }));
        assert!(s.check(Some(&json!({"to": ["a@b"]}))).is_ok());
        let e = s.check(Some(&json!({"to": ["a@b", 7]}))).unwrap_err();
        assert_eq!(e[0].path, "/to/1");
        let e = s.check(Some(&json!({"to": [], "n": 9}))).unwrap_err();
        assert_eq!(e[0].path, "/n");
        assert!(e[0].to_string().starts_with("arguments/n: "), "{}", e[0]);
        let e = s.check(None).unwrap_err();
        assert!(e[0].message.contains("to"), "{e:?}");
        let e = s.check(Some(&json!({"to": [], "extra": 1}))).unwrap_err();
        assert!(e[0].message.contains("extra"), "{e:?}");
    }

    #[test]
    fn external_refs_are_never_fetched() {
        // A listener that would see any fetch of the http $ref.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let http = ArgSchema::compile(&json!({"type": "object", "properties": {"x": {"$ref": format!("http://127.0.0.1:{port}/s.json")}}}));
        assert!(matches!(http, ArgSchema::Broken(_)), "{http:?}");
        assert!(listener.accept().is_err(), "nothing connected to the $ref's host");
        // A file that exists and would make the call valid is not read either.
        let dir = tempfile::Builder::new().prefix("clawgate-ref").tempdir().unwrap();
        let f = dir.path().join("s.json");
        std::fs::write(&f, r#"{"type":"string"}"#).unwrap();
        let file = ArgSchema::compile(&json!({"type": "object", "properties": {"x": {"$ref": format!("file://{}", f.display())}}}));
        assert!(matches!(&file, ArgSchema::Broken(m) if m.contains("cannot be used")), "{file:?}");
        // A refused schema refuses every call (fail closed).
        assert!(file.check(Some(&json!({"x": "s"}))).is_err());
        // Local refs still work.
        let local = ArgSchema::compile(&json!({"$defs": {"s": {"type": "string"}}, "type": "object", "properties": {"x": {"$ref": "#/$defs/s"}}}));
        assert!(local.check(Some(&json!({"x": "s"}))).is_ok());
        assert_eq!(local.check(Some(&json!({"x": 1}))).unwrap_err()[0].path, "/x");
    }

    #[test]
    fn the_cache_compiles_once_per_schema() {
        let mut c = SchemaCache::default();
        let a = c.get(&json!({"type": "object", "properties": {"a": {"type": "string"}}}));
        let b = c.get(&json!({"properties": {"a": {"type": "string"}}, "type": "object"}));
        match (a, b) {
            (ArgSchema::Compiled(a), ArgSchema::Compiled(b)) => assert!(Arc::ptr_eq(&a, &b)),
            other => panic!("{other:?}"),
        }
    }
}
