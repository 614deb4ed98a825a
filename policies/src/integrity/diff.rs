//! A structural diff of two JSON values, as a list of changed paths, so that a reviewer sees
//! `inputSchema.properties.to.description` changed rather than two walls of JSON.

use serde_json::Value;

/// One difference between an old and a new value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Dotted path (`inputSchema.required[1]`); empty for the root.
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// Every path at which `old` and `new` differ, in a stable order.
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk(String::new(), Some(old), Some(new), &mut out, 0);
    out
}

/// Deeper than this, a difference is reported at the level reached rather than followed.
const MAX_DEPTH: usize = 64;

fn walk(path: String, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>, depth: usize) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) if depth < MAX_DEPTH => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))).collect();
            keys.sort();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                walk(p, a.get(k), b.get(k), out, depth + 1);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if depth < MAX_DEPTH => {
            for i in 0..a.len().max(b.len()) {
                walk(format!("{path}[{i}]"), a.get(i), b.get(i), out, depth + 1);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Change { path, old: a.cloned(), new: b.cloned() }),
    }
}

/// Renders a change on one line, values shortened to `max` characters.
pub fn describe(c: &Change, max: usize) -> String {
    let show = |v: &Option<Value>| match v {
        None => "(absent)".to_owned(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > max { format!("{}…", s.chars().take(max).collect::<String>()) } else { s }
        }
    };
    let path = if c.path.is_empty() { "(definition)" } else { &c.path };
    format!("{path}: {} → {}", show(&c.old), show(&c.new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_each_changed_path() {
        let old = json!({"name": "t", "inputSchema": {"properties": {"to": {"type": "string"}}, "required": ["to"]}, "annotations": {"readOnlyHint": true}});
        let new = json!({"name": "t", "inputSchema": {"properties": {"to": {"type": "string"}, "bcc": {"type": "string"}}, "required": ["to", "bcc"]}, "annotations": {"readOnlyHint": false}});
        let paths: Vec<String> = diff(&old, &new).into_iter().map(|c| c.path).collect();
        assert_eq!(paths, vec!["annotations.readOnlyHint", "inputSchema.properties.bcc", "inputSchema.required[1]"]);
        assert!(diff(&old, &old).is_empty());
        assert_eq!(describe(&diff(&json!({"a": 1}), &json!({"a": 2}))[0], 10), "a: 1 → 2");
    }
}
