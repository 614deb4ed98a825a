//! Federation: the tools, prompts and resources of every upstream merged into one namespace.
//!
//! Tools and prompts are exposed as `<prefix>__<name>`; resource URIs (and URI templates) as
//! `<prefix>+<uri>`, which is still a valid URI (`demo+file:///x` has scheme `demo+file`) and
//! reverses unambiguously because prefixes match `[a-z0-9-]+`. An upstream with an empty prefix
//! exposes its names unchanged. A name that would collide with another upstream's is hidden and
//! logged, never silently shadowed.

use std::collections::HashMap;

use serde_json::Value;

/// What one upstream currently lists (fetched at connect and on `list_changed`).
#[derive(Debug, Default, Clone)]
pub struct UpstreamLists {
    pub tools: Vec<Value>,
    pub prompts: Vec<Value>,
}

/// How a client-visible name maps back to an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Index of the upstream in config order.
    pub upstream: usize,
    /// The name (or URI) as the upstream knows it.
    pub original: String,
}

/// Namespacing rules for one upstream.
#[derive(Debug, Clone)]
pub struct Namespace {
    pub prefix: String,
}

impl Namespace {
    pub fn name(&self, original: &str) -> String {
        if self.prefix.is_empty() { original.to_owned() } else { format!("{}__{original}", self.prefix) }
    }

    pub fn uri(&self, original: &str) -> String {
        if self.prefix.is_empty() { original.to_owned() } else { format!("{}+{original}", self.prefix) }
    }
}

/// The merged tool and prompt lists, rebuilt whenever an upstream's lists change and swapped in
/// whole, so a reader always sees one consistent snapshot.
#[derive(Debug, Default)]
pub struct Catalog {
    pub tools: Vec<Value>,
    pub prompts: Vec<Value>,
    tool_routes: HashMap<String, Route>,
    prompt_routes: HashMap<String, Route>,
    /// Input schemas by exposed tool name (for `Mcp-Param-*` headers and, later, validation).
    pub tool_defs: HashMap<String, Value>,
}

impl Catalog {
    pub fn build(spaces: &[Namespace], lists: &[Option<UpstreamLists>]) -> Self {
        let mut cat = Catalog::default();
        for (i, (ns, lists)) in spaces.iter().zip(lists).enumerate() {
            let Some(lists) = lists else { continue };
            for tool in &lists.tools {
                if let Some((exposed, def)) = rename(ns, tool)
                    && insert_route(&mut cat.tool_routes, &exposed, i, tool, "tool") {
                        cat.tool_defs.insert(exposed, def.clone());
                        cat.tools.push(def);
                    }
            }
            for prompt in &lists.prompts {
                if let Some((exposed, def)) = rename(ns, prompt)
                    && insert_route(&mut cat.prompt_routes, &exposed, i, prompt, "prompt") {
                        cat.prompts.push(def);
                    }
            }
        }
        cat
    }

    pub fn tool(&self, exposed: &str) -> Option<&Route> {
        self.tool_routes.get(exposed)
    }

    pub fn prompt(&self, exposed: &str) -> Option<&Route> {
        self.prompt_routes.get(exposed)
    }
}

fn rename(ns: &Namespace, def: &Value) -> Option<(String, Value)> {
    let name = def.get("name")?.as_str()?;
    let exposed = ns.name(name);
    let mut def = def.clone();
    if let Some(o) = def.as_object_mut() {
        o.insert("name".into(), exposed.clone().into());
    }
    Some((exposed, def))
}

fn insert_route(routes: &mut HashMap<String, Route>, exposed: &str, upstream: usize, def: &Value, what: &str) -> bool {
    let original = def.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(existing) = routes.get(exposed) {
        tracing::error!(name = exposed, first = existing.upstream, second = upstream, "{what} name collides across upstreams; hiding the second");
        return false;
    }
    routes.insert(exposed.to_owned(), Route { upstream, original });
    true
}

/// Maps a client-visible resource URI back to (upstream, original URI), given the prefixes in
/// config order. The empty-prefix upstream, if any, takes URIs no prefix claims.
pub fn route_uri(spaces: &[Namespace], uri: &str) -> Option<Route> {
    if let Some((prefix, rest)) = uri.split_once('+')
        && let Some(i) = spaces.iter().position(|n| !n.prefix.is_empty() && n.prefix == prefix) {
            return Some(Route { upstream: i, original: rest.to_owned() });
        }
    let i = spaces.iter().position(|n| n.prefix.is_empty())?;
    Some(Route { upstream: i, original: uri.to_owned() })
}

/// Rewrites every resource URI an upstream result carries into the client-visible namespace:
/// list entries (`uri`, `uriTemplate`), read contents, and resource links or embedded resources
/// inside tool and prompt results.
pub fn namespace_uris(ns: &Namespace, v: &mut Value) {
    if ns.prefix.is_empty() {
        return;
    }
    let Some(obj) = v.as_object_mut() else { return };
    for key in ["resources", "resourceTemplates", "contents", "content", "messages"] {
        if let Some(Value::Array(items)) = obj.get_mut(key) {
            for item in items {
                rewrite_item(ns, item);
            }
        }
    }
    if let Some(Value::String(u)) = obj.get_mut("uri") {
        *u = ns.uri(u);
    }
}

fn rewrite_item(ns: &Namespace, item: &mut Value) {
    let Some(o) = item.as_object_mut() else { return };
    for key in ["uri", "uriTemplate"] {
        if let Some(Value::String(u)) = o.get_mut(key) {
            *u = ns.uri(u);
        }
    }
    // Embedded resource (`{"type":"resource","resource":{"uri":...}}`) and prompt messages
    // (`{"role":..,"content":{...}}`).
    for key in ["resource", "content"] {
        if let Some(inner) = o.get_mut(key)
            && inner.is_object() {
                rewrite_item(ns, inner);
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spaces() -> Vec<Namespace> {
        vec![Namespace { prefix: "mail".into() }, Namespace { prefix: "".into() }, Namespace { prefix: "files".into() }]
    }

    #[test]
    fn names_are_namespaced_and_routed_back() {
        let lists = vec![
            Some(UpstreamLists { tools: vec![json!({"name":"send","x-vendor":1})], prompts: vec![] }),
            Some(UpstreamLists { tools: vec![json!({"name":"echo"}), json!({"name":"mail__send"})], prompts: vec![] }),
            None,
        ];
        let cat = Catalog::build(&spaces(), &lists);
        assert_eq!(cat.tool("mail__send"), Some(&Route { upstream: 0, original: "send".into() }));
        assert_eq!(cat.tool("echo"), Some(&Route { upstream: 1, original: "echo".into() }));
        // The empty-prefix upstream's `mail__send` would shadow upstream 0's: hidden.
        assert_eq!(cat.tools.len(), 2);
        assert_eq!(cat.tools[0], json!({"name":"mail__send","x-vendor":1}), "unknown fields survive");
    }

    #[test]
    fn uris_roundtrip() {
        let s = spaces();
        let ns = &s[2];
        let exposed = ns.uri("file:///a/b?c=d");
        assert_eq!(exposed, "files+file:///a/b?c=d");
        assert_eq!(route_uri(&s, &exposed), Some(Route { upstream: 2, original: "file:///a/b?c=d".into() }));
        assert_eq!(route_uri(&s, "git+ssh://x"), Some(Route { upstream: 1, original: "git+ssh://x".into() }));
        let mut res = json!({"contents":[{"uri":"file:///a","text":"t"}],"content":[{"type":"resource_link","uri":"x://1"},{"type":"resource","resource":{"uri":"x://2"}}]});
        namespace_uris(ns, &mut res);
        assert_eq!(res["contents"][0]["uri"], "files+file:///a");
        assert_eq!(res["content"][0]["uri"], "files+x://1");
        assert_eq!(res["content"][1]["resource"]["uri"], "files+x://2");
    }
}
