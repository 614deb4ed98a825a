//! Cedar: the merged schema, policy loading, per-action policy slices, typed requests, and
//! decisions (concrete for calls, partial for list visibility).
//!
//! # The merged schema
//! [`BASE_SCHEMA`] (`policies/schema/clawgate.cedarschema`) declares the entity types, the
//! action groups and the prompt/resource actions. [`generate_schema`] adds one action per tool,
//! `action "<prefix>__<tool>" in [call_tool, …] appliesTo { … context: { "args": {…}, … } }`,
//! whose `args` record is typed from the tool's `inputSchema`:
//!
//! | JSON Schema | Cedar |
//! |---|---|
//! | `string` (any format), or an `enum` of strings | `String` |
//! | `integer` | `Long` |
//! | `boolean` | `Bool` |
//! | `array` of a typed scalar | `Set<…>` (order and duplicates are lost) |
//! | `object` with `properties` | a record; properties not in `required` are optional (`has`) |
//!
//! What cannot be typed is **left out of `args`**, so a policy that names it fails validation
//! at load instead of silently never matching: `number` (fractions; Cedar has no floats),
//! `null` and type unions, `anyOf`/`oneOf`/`allOf`, `$ref`, arrays of objects or arrays,
//! maps (`additionalProperties` without `properties`), property names holding `"` or `\`,
//! and anything nested deeper than [`MAX_TYPE_DEPTH`].
//!
//! # Slices
//! Cedar evaluates every policy it is given. At load, each tool gets the slice of policies
//! whose action and resource scope can match that tool (its action, one of its groups, its
//! upstream, or no constraint), and a call evaluates only its slice. The slice is exact: a
//! policy outside it has a scope that is false for every request on that tool, so the verdict
//! is the one Cedar would give on the whole set (the differential test checks this).
//!
//! # Fail closed
//! A policy that errors during evaluation is ignored by Cedar; here any evaluation error turns
//! the verdict into a deny, whatever else matched.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    Policy, PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use serde_json::Value;

/// The static part of the schema.
pub const BASE_SCHEMA: &str = include_str!("../schema/clawgate.cedarschema");
/// How deep a tool's argument types are followed.
pub const MAX_TYPE_DEPTH: usize = 4;
/// Action groups declared in the base schema.
pub const BASE_GROUPS: [&str; 5] = ["call_tool", "read", "write", "destructive", "open_world"];

// ---------------------------------------------------------------------------------------------
// Inputs

/// One policy file's text; `file` is how errors name it.
#[derive(Debug, Clone)]
pub struct PolicySource {
    pub file: String,
    pub text: String,
}

/// Tool attributes the policies see (entity `Tool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolAttrs {
    pub category: String,
    pub owner: String,
    pub sensitivity: String,
    pub read_only: bool,
    pub destructive: bool,
    pub open_world: bool,
}

impl Default for ToolAttrs {
    /// MCP's own defaults for unannotated tools: may write, may destroy, reaches the world.
    fn default() -> Self {
        Self { category: String::new(), owner: String::new(), sensitivity: String::new(), read_only: false, destructive: true, open_world: true }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolMeta {
    /// The name clients see (`<prefix>__<tool>`).
    pub name: String,
    pub upstream: String,
    pub input_schema: Value,
    pub attrs: ToolAttrs,
    /// Extra action groups from config (`groups = ["send"]`).
    pub groups: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct UpstreamMeta {
    pub name: String,
    pub trusted: bool,
    /// Whether this upstream's tool list is known (listed, or pinned). A policy naming a tool
    /// action of an upstream whose list is not known yet is accepted with a warning; for a
    /// known upstream an unknown tool action is an error (a typo would silently never match).
    pub known: bool,
    /// The prefix its tools carry (`<prefix>__`).
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct PromptMeta {
    pub name: String,
    pub upstream: String,
}

/// Everything the policies can be about.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub upstreams: Vec<UpstreamMeta>,
    pub tools: Vec<ToolMeta>,
    pub prompts: Vec<PromptMeta>,
}

/// Who is calling, as the policies see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalInfo {
    pub id: String,
    pub kind: PrincipalKind,
    pub task: Option<String>,
    pub groups: Vec<String>,
    pub intent: Intent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    User,
    Agent,
    Anonymous,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Agent => "agent",
            PrincipalKind::Anonymous => "anonymous",
        }
    }
}

/// Values the user named when the token was minted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intent {
    pub recipients: BTreeSet<String>,
    pub accounts: BTreeSet<String>,
    pub urls: BTreeSet<String>,
}

impl PrincipalInfo {
    pub fn anonymous() -> Self {
        Self { id: "anonymous".into(), kind: PrincipalKind::Anonymous, task: None, groups: Vec::new(), intent: Intent::default() }
    }
}

/// A principal turned into Cedar values once (per token or API key), reused by every call.
#[derive(Debug, Clone)]
pub struct PreparedPrincipal {
    pub info: PrincipalInfo,
    uid: EntityUid,
    groups: Vec<EntityUid>,
    entities: Vec<Entity>,
    /// `context.intent`'s attributes (a call builds the ones its slice reads).
    intent: Vec<(String, CtxVal)>,
    /// Identifies everything about the principal that its entities hold (id, kind, task,
    /// groups): the key of the engine's per-principal caches.
    key: String,
}

impl PreparedPrincipal {
    pub fn new(info: PrincipalInfo) -> Result<Self, String> {
        let me = uid("Principal", &info.id)?;
        let mut parents = HashSet::new();
        let mut entities = Vec::new();
        let mut groups = Vec::new();
        for g in &info.groups {
            let g = uid("Group", g)?;
            parents.insert(g.clone());
            groups.push(g.clone());
            entities.push(Entity::new_no_attrs(g, HashSet::new()));
        }
        let mut sorted = info.groups.clone();
        sorted.sort();
        let key = serde_json::json!([info.id, info.kind.as_str(), info.task, sorted]).to_string();
        let attrs = HashMap::from([
            ("kind".to_owned(), RestrictedExpression::new_string(info.kind.as_str().to_owned())),
            ("task".to_owned(), RestrictedExpression::new_string(info.task.clone().unwrap_or_default())),
        ]);
        entities.push(Entity::new(me.clone(), attrs, parents).map_err(|e| e.to_string())?);
        let intent = vec![
            ("recipients".to_owned(), CtxVal::strings(info.intent.recipients.iter())),
            ("accounts".to_owned(), CtxVal::strings(info.intent.accounts.iter())),
            ("urls".to_owned(), CtxVal::strings(info.intent.urls.iter())),
        ];
        Ok(Self { info, uid: me, groups, entities, intent, key })
    }
}

// ---------------------------------------------------------------------------------------------
// Argument types

/// A Cedar type for a JSON Schema (see the module docs for the mapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    Str,
    Long,
    Bool,
    Set(Box<Ty>),
    Record(Vec<Field>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
    pub required: bool,
}

/// The Cedar type of a JSON Schema, or `None` when it cannot be typed.
pub fn type_of(schema: &Value, depth: usize) -> Option<Ty> {
    if depth > MAX_TYPE_DEPTH {
        return None;
    }
    let o = schema.as_object()?;
    if ["$ref", "anyOf", "oneOf", "allOf", "not", "if"].iter().any(|k| o.contains_key(*k)) {
        return None;
    }
    let ty = match o.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return None,
        None => {
            // An untyped enum of strings is a string.
            return match o.get("enum") {
                Some(Value::Array(vs)) if !vs.is_empty() && vs.iter().all(Value::is_string) => Some(Ty::Str),
                _ => None,
            };
        }
    };
    match ty {
        "string" => Some(Ty::Str),
        "integer" => Some(Ty::Long),
        "boolean" => Some(Ty::Bool),
        "array" => match type_of(o.get("items")?, depth + 1)? {
            t @ (Ty::Str | Ty::Long | Ty::Bool) => Some(Ty::Set(Box::new(t))),
            _ => None,
        },
        "object" => {
            let props = o.get("properties").and_then(Value::as_object);
            let required: HashSet<&str> = o.get("required").and_then(Value::as_array).map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let mut fields = Vec::new();
            for (name, s) in props.into_iter().flatten() {
                if name.is_empty() || name.contains(['"', '\\']) || name.chars().any(char::is_control) {
                    continue;
                }
                if let Some(ty) = type_of(s, depth + 1) {
                    fields.push(Field { name: name.clone(), ty, required: required.contains(name.as_str()) });
                }
            }
            if props.is_none() && depth > 0 {
                return None;
            }
            Some(Ty::Record(fields))
        }
        _ => None,
    }
}

fn write_ty(out: &mut String, ty: &Ty) {
    match ty {
        Ty::Str => out.push_str("String"),
        Ty::Long => out.push_str("Long"),
        Ty::Bool => out.push_str("Bool"),
        Ty::Set(t) => {
            out.push_str("Set<");
            write_ty(out, t);
            out.push('>');
        }
        Ty::Record(fields) => {
            out.push('{');
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "\"{}\"{}: ", f.name, if f.required { "" } else { "?" });
                write_ty(out, &f.ty);
            }
            out.push('}');
        }
    }
}

/// Builds the Cedar value of `v` for type `ty`. Fields the type leaves out are skipped.
fn value_of(ty: &Ty, v: &Value) -> Result<CtxVal, String> {
    match (ty, v) {
        (Ty::Str, Value::String(s)) => Ok(CtxVal::Str(s.clone())),
        (Ty::Long, Value::Number(n)) => n.as_i64().map(CtxVal::Long).ok_or_else(|| format!("{n} is not a 64-bit integer")),
        (Ty::Bool, Value::Bool(b)) => Ok(CtxVal::Bool(*b)),
        (Ty::Set(t), Value::Array(items)) => Ok(CtxVal::Set(items.iter().map(|i| value_of(t, i)).collect::<Result<Vec<_>, _>>()?)),
        (Ty::Record(fields), Value::Object(o)) => {
            let mut pairs = Vec::with_capacity(fields.len());
            for f in fields {
                match o.get(&f.name) {
                    Some(v) => pairs.push((f.name.clone(), value_of(&f.ty, v).map_err(|e| format!("{}: {e}", f.name))?)),
                    None if f.required => return Err(format!("required argument {} is missing", f.name)),
                    None => {}
                }
            }
            Ok(CtxVal::Record(pairs))
        }
        (ty, v) => Err(format!("expected {}, got {}", ty_name(ty), json_kind(v))),
    }
}

/// A context value before it becomes a Cedar expression; also (with the principal and tool)
/// the key of the decision cache, so the cache key is by construction exactly what Cedar sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CtxVal {
    Bool(bool),
    Long(i64),
    Str(String),
    Set(Vec<CtxVal>),
    Record(Vec<(String, CtxVal)>),
    Unknown(&'static str),
}

impl CtxVal {
    fn expr(&self) -> Result<RestrictedExpression, String> {
        Ok(match self {
            CtxVal::Bool(b) => RestrictedExpression::new_bool(*b),
            CtxVal::Long(n) => RestrictedExpression::new_long(*n),
            CtxVal::Str(s) => RestrictedExpression::new_string(s.clone()),
            CtxVal::Set(items) => RestrictedExpression::new_set(items.iter().map(CtxVal::expr).collect::<Result<Vec<_>, _>>()?),
            CtxVal::Record(fields) => {
                let pairs = fields.iter().map(|(k, v)| Ok((k.clone(), v.expr()?))).collect::<Result<Vec<_>, String>>()?;
                RestrictedExpression::new_record(pairs).map_err(|e| e.to_string())?
            }
            CtxVal::Unknown(name) => RestrictedExpression::new_unknown(*name),
        })
    }

    /// About how many bytes it holds (a cache entry's weight).
    fn weight(&self) -> usize {
        16 + match self {
            CtxVal::Str(s) => s.len(),
            CtxVal::Set(items) => items.iter().map(CtxVal::weight).sum(),
            CtxVal::Record(fields) => fields.iter().map(|(k, v)| k.len() + v.weight()).sum(),
            _ => 0,
        }
    }

    fn strings<'a>(it: impl Iterator<Item = &'a String>) -> Self {
        CtxVal::Set(it.map(|s| CtxVal::Str(s.clone())).collect())
    }
}

fn ty_name(ty: &Ty) -> &'static str {
    match ty {
        Ty::Str => "a string",
        Ty::Long => "an integer",
        Ty::Bool => "a boolean",
        Ty::Set(_) => "an array",
        Ty::Record(_) => "an object",
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// Schema generation

/// The action groups of a tool: `call_tool`, those its attributes imply, and configured ones.
pub fn tool_groups(t: &ToolMeta) -> Vec<String> {
    let mut g = vec!["call_tool".to_owned()];
    g.push(if t.attrs.read_only { "read" } else { "write" }.to_owned());
    if t.attrs.destructive && !t.attrs.read_only {
        g.push("destructive".into());
    }
    if t.attrs.open_world {
        g.push("open_world".into());
    }
    for extra in &t.groups {
        if !g.contains(extra) {
            g.push(extra.clone());
        }
    }
    g
}

/// A name usable as a Cedar action id and schema string: no quotes, backslashes or controls.
/// A tool's top-level argument names that can be Cedar attribute names.
pub fn arg_names(schema: &Value) -> Vec<String> {
    schema.get("properties").and_then(Value::as_object).map(|p| p.keys().filter(|k| plain(k)).cloned().collect()).unwrap_or_default()
}

/// A label as a Cedar `Label` record.
/// One label as a Cedar record, with the attributes `reads` needs under `path`.
fn label_val(l: &crate::labels::Label, reads: &Reads, path: &[&str]) -> CtxVal {
    let want = |attr: &str| {
        let mut full = [""; 5];
        let n = path.len().min(4);
        full[..n].copy_from_slice(&path[..n]);
        full[n] = attr;
        reads.needs(&full[..=n])
    };
    let mut pairs = Vec::with_capacity(4);
    if want("trusted") {
        pairs.push(("trusted".to_owned(), CtxVal::Bool(l.trusted)));
    }
    if want("public") {
        pairs.push(("public".to_owned(), CtxVal::Bool(l.readers.is_none())));
    }
    if want("readers") {
        pairs.push(("readers".to_owned(), l.readers.as_ref().map_or(CtxVal::Set(Vec::new()), |r| CtxVal::strings(r.iter()))));
    }
    if want("origins") {
        pairs.push(("origins".to_owned(), CtxVal::strings(l.origins.iter())));
    }
    CtxVal::Record(pairs)
}

/// `context.labels` for a call on a tool with argument names `names`, with what `reads` needs.
fn labels_val(v: &crate::labels::LabelView, names: &[String], reads: &Reads) -> CtxVal {
    let mut pairs = Vec::with_capacity(6);
    for (key, label) in [("session", &v.session), ("control", &v.control), ("data", &v.data)] {
        if reads.needs(&["labels", key]) {
            pairs.push((key.to_owned(), label_val(label, reads, &["labels", key])));
        }
    }
    if reads.needs(&["labels", "recipients"]) {
        pairs.push(("recipients".to_owned(), CtxVal::strings(v.recipients.iter())));
    }
    if reads.needs(&["labels", "strict"]) {
        pairs.push(("strict".to_owned(), CtxVal::Bool(v.strict)));
    }
    if reads.needs(&["labels", "args"]) {
        let args = v
            .args
            .iter()
            .filter(|(k, _)| names.contains(k) && reads.needs(&["labels", "args", k.as_str()]))
            .map(|(k, a)| (k.clone(), label_val(&a.label, reads, &["labels", "args", k.as_str()])))
            .collect();
        pairs.push(("args".to_owned(), CtxVal::Record(args)));
    }
    CtxVal::Record(pairs)
}

fn plain(name: &str) -> bool {
    !name.is_empty() && !name.contains(['"', '\\']) && !name.chars().any(char::is_control)
}

/// The merged schema text: the base plus one action per tool.
pub fn generate_schema(inv: &Inventory) -> String {
    let mut out = String::from(BASE_SCHEMA);
    out.push_str("\n// ---- generated from the current tool set ----\n");
    let mut extra: BTreeSet<&str> = BTreeSet::new();
    for t in &inv.tools {
        for g in &t.groups {
            if !BASE_GROUPS.contains(&g.as_str()) && plain(g) {
                extra.insert(g);
            }
        }
    }
    for g in extra {
        let _ = writeln!(out, "action \"{g}\";");
    }
    for t in &inv.tools {
        if !plain(&t.name) {
            continue;
        }
        let groups: Vec<String> = tool_groups(t).into_iter().filter(|g| plain(g)).map(|g| format!("\"{g}\"")).collect();
        let args = type_of(&t.input_schema, 0).unwrap_or(Ty::Record(Vec::new()));
        let mut ty = String::new();
        write_ty(&mut ty, &args);
        let arg_labels: Vec<String> = arg_names(&t.input_schema).into_iter().map(|n| format!("\"{n}\"?: Label")).collect();
        let _ = writeln!(
            out,
            "action \"{}\" in [{}] appliesTo {{ principal: Principal, resource: Tool, context: {{ \"args\": {ty}, \"time\": Time, \"intent\": Intent, \"labels\": {{ \"session\": Label, \"control\": Label, \"data\": Label, \"recipients\": Set<String>, \"strict\": Bool, \"args\": {{{}}} }} }} }};",
            t.name,
            groups.join(", "),
            arg_labels.join(", ")
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Why a policy set was refused: the file, the line and the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for LoadError {}

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub index: usize,
}

#[derive(Debug, Clone)]
struct ToolEntry {
    action: EntityUid,
    resource: EntityUid,
    args: Ty,
    /// Top-level argument names (the keys of `context.labels.args`).
    arg_names: Vec<String>,
    /// The action (with its groups), the tool and its upstream: the static entities of a call.
    entities: Entities,
    slice: PolicySet,
    /// What the slice can read of `context`: the rest is never built.
    reads: Reads,
}

/// The parts of `context` a policy set can read, as the maximal access paths under it
/// (`context.labels.data.public` is `["labels", "data", "public"]`; `has` counts as a read).
/// A context value is built only where some path runs through it or ends above it, so an
/// omitted attribute is one no policy in the set can observe: the decision is the same as with
/// the whole context, and a policy that somehow did read one would error, which denies.
#[derive(Debug, Clone, Default)]
pub struct Reads {
    all: bool,
    paths: Vec<Vec<String>>,
}

impl Reads {
    /// Reads everything (the context is built whole).
    pub fn everything() -> Self {
        Self { all: true, paths: Vec::new() }
    }

    /// The reads of every policy in `set`. A policy that cannot be rendered reads everything.
    pub fn of(set: &PolicySet) -> Self {
        let mut out = Self::default();
        for p in set.policies() {
            match p.to_json() {
                Ok(j) => visit_reads(&j, &mut out.paths),
                Err(_) => return Self::everything(),
            }
            if out.paths.iter().any(Vec::is_empty) {
                return Self::everything();
            }
        }
        out.paths.sort();
        out.paths.dedup();
        out
    }

    /// Whether anything at `path`, above it or below it can be read.
    pub fn needs(&self, path: &[&str]) -> bool {
        self.all || self.paths.iter().any(|q| q.iter().zip(path).all(|(a, b)| a == b))
    }
}

/// Collects the maximal `context.a.b…` chains in a policy's JSON form. `context` used whole
/// (compared, passed to a function) is the empty path: everything.
fn visit_reads(v: &Value, out: &mut Vec<Vec<String>>) {
    fn chain(v: &Value) -> Option<Vec<String>> {
        let o = v.as_object()?;
        let node = o.get(".").or_else(|| o.get("has"))?;
        let attr = node.get("attr")?.as_str()?.to_owned();
        let left = node.get("left")?;
        let mut path = if left.get("Var").and_then(Value::as_str) == Some("context") { Vec::new() } else { chain(left)? };
        path.push(attr);
        Some(path)
    }
    if let Some(path) = chain(v) {
        out.push(path);
        return;
    }
    match v {
        Value::Object(o) if o.get("Var").and_then(Value::as_str) == Some("context") => out.push(Vec::new()),
        Value::Object(o) => o.values().for_each(|x| visit_reads(x, out)),
        Value::Array(a) => a.iter().for_each(|x| visit_reads(x, out)),
        _ => {}
    }
}

/// A validated policy set bound to one tool set. Immutable (but for its caches); the gateway
/// swaps whole engines.
#[derive(Debug)]
pub struct Engine {
    schema_text: String,
    all: PolicySet,
    tools: HashMap<String, ToolEntry>,
    prompt: ActionSlice,
    resource: ActionSlice,
    upstream_entities: HashMap<String, Entity>,
    origins: HashMap<String, Origin>,
    ask: HashMap<String, String>,
    /// Policies accepted with a warning (they name tools of upstreams not listed yet).
    pub warnings: Vec<String>,
    utc_offset_minutes: i32,
    /// Per (principal, tool): the tool's slice narrowed to the policies whose principal scope
    /// can match this principal, and the call's entities with the principal's added.
    per_principal: std::sync::Mutex<HashMap<(String, String), Prepared>>,
    /// Verdicts of `tools/call` decisions by (principal, tool, the context built): Cedar is
    /// deterministic and the engine immutable, so an equal key is an equal verdict.
    decisions: std::sync::Mutex<HashMap<DecisionKey, Verdict, ahash::RandomState>>,
    decision_cache: usize,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DecisionKey {
    principal: String,
    tool: String,
    context: Pairs,
}

/// The heaviest context a cached decision may hold (bytes, about).
const DECISION_MAX_WEIGHT: usize = 4_096;

/// A tool's slice narrowed to one principal, and that call's entities.
type Prepared = std::sync::Arc<(PolicySet, Entities)>;

/// Entries kept in [`Engine::per_principal`]; cleared when full.
const PER_PRINCIPAL_CACHE: usize = 8_192;

#[derive(Debug, Clone)]
struct ActionSlice {
    action: EntityUid,
    slice: PolicySet,
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(ty).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes().iter().take(offset).filter(|b| **b == b'\n').count() + 1
}

fn first_offset(d: &dyn miette::Diagnostic) -> Option<usize> {
    d.labels().and_then(|mut l| l.next()).map(|l| l.offset())
}

/// Options that shape decisions.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Offset of `context.time` from UTC, in minutes.
    pub utc_offset_minutes: i32,
    /// Most `tools/call` verdicts kept by (principal, tool, context read); 0 turns the cache
    /// off. Cleared when full, and with the engine on every reload.
    pub decision_cache: usize,
}

/// [`EngineOptions::decision_cache`] by default.
pub const DECISION_CACHE: usize = 1_024;

impl Default for EngineOptions {
    fn default() -> Self {
        Self { utc_offset_minutes: 0, decision_cache: DECISION_CACHE }
    }
}

impl Engine {
    /// Parses every file, validates the merged set against the merged schema (strict mode) and
    /// builds the per-action slices. The first problem is returned, naming file and line.
    pub fn build(files: &[PolicySource], inv: &Inventory, opts: EngineOptions) -> Result<Self, LoadError> {
        let schema_text = generate_schema(inv);
        let (schema, _warnings) = Schema::from_cedarschema_str(&schema_text)
            .map_err(|e| LoadError { file: "<generated schema>".into(), line: first_offset(&e).map(|o| line_of(&schema_text, o)), message: e.to_string() })?;
        let mut all = PolicySet::new();
        let mut origins = HashMap::new();
        let mut texts: HashMap<String, &str> = HashMap::new();
        let mut ask = HashMap::new();
        for f in files {
            texts.insert(f.file.clone(), &f.text);
            let parsed = PolicySet::from_str(&f.text).map_err(|e| LoadError {
                file: f.file.clone(),
                line: first_offset(&e).map(|o| line_of(&f.text, o)),
                message: e.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("; "),
            })?;
            if parsed.templates().next().is_some() {
                return Err(LoadError { file: f.file.clone(), line: None, message: "policy templates (?principal/?resource slots) are not supported".into() });
            }
            // `from_str` numbers policies policy0, policy1, … in source order.
            let mut ps: Vec<&Policy> = parsed.policies().collect();
            ps.sort_by_key(|p| p.id().to_string().trim_start_matches("policy").parse::<usize>().unwrap_or(usize::MAX));
            for (i, p) in ps.into_iter().enumerate() {
                let id = match p.annotation("id") {
                    Some(id) => id.to_owned(),
                    None => format!("{}#{}", f.file, i + 1),
                };
                if let Some(msg) = p.annotation("ask") {
                    if p.effect() != Effect::Permit {
                        return Err(LoadError { file: f.file.clone(), line: None, message: format!("policy {id}: @ask applies to permit policies only") });
                    }
                    ask.insert(id.clone(), msg.to_owned());
                }
                let p = p.new_id(PolicyId::new(&id));
                all.add(p).map_err(|_| LoadError { file: f.file.clone(), line: None, message: format!("policy id {id:?} is used twice") })?;
                origins.insert(id, Origin { file: f.file.clone(), index: i + 1 });
            }
        }
        // Strict validation against the merged schema.
        let result = Validator::new(schema.clone()).validate(&all, ValidationMode::Strict);
        let mut warnings = Vec::new();
        for e in result.validation_errors() {
            let id = e.policy_id().to_string();
            let origin = origins.get(&id).cloned().unwrap_or(Origin { file: "<unknown>".into(), index: 0 });
            let text = texts.get(&origin.file).copied().unwrap_or("");
            let line = first_offset(e).map(|o| line_of(text, o));
            if let cedar_policy::ValidationError::UnrecognizedActionId(_) = e
                && let Some(action) = e.to_string().split('"').nth(1).map(str::to_owned)
                && let Some(up) = inv.upstreams.iter().find(|u| action.starts_with(&format!("{}__", u.prefix)))
                && !up.known
            {
                warnings.push(format!("{}:{}: policy {id} names {action}, a tool of upstream {} whose tools are not listed yet", origin.file, line.unwrap_or(0), up.name));
                continue;
            }
            let mut message = format!("policy {id}: {e}");
            if let Some(help) = miette::Diagnostic::help(e) {
                let _ = write!(message, " ({help})");
            }
            return Err(LoadError { file: origin.file, line, message });
        }
        // Tolerated policies still mention actions the schema lacks; evaluation never reaches
        // them for a listed tool (their scope cannot match), so keep them in the set.

        let mut upstream_entities = HashMap::new();
        for u in &inv.upstreams {
            let e = Entity::new(uid("Upstream", &u.name).map_err(gen_err)?, HashMap::from([("trusted".to_owned(), RestrictedExpression::new_bool(u.trusted))]), HashSet::new())
                .map_err(|e| gen_err(e.to_string()))?;
            upstream_entities.insert(u.name.clone(), e);
        }
        let mut tools = HashMap::new();
        for t in &inv.tools {
            if !plain(&t.name) {
                continue;
            }
            let action = uid("Action", &t.name).map_err(gen_err)?;
            let groups: Vec<EntityUid> = tool_groups(t).iter().filter(|g| plain(g)).map(|g| uid("Action", g)).collect::<Result<_, _>>().map_err(gen_err)?;
            let up = uid("Upstream", &t.upstream).map_err(gen_err)?;
            let resource = uid("Tool", &t.name).map_err(gen_err)?;
            let attrs = HashMap::from([
                ("upstream".to_owned(), RestrictedExpression::new_string(t.upstream.clone())),
                ("category".to_owned(), RestrictedExpression::new_string(t.attrs.category.clone())),
                ("owner".to_owned(), RestrictedExpression::new_string(t.attrs.owner.clone())),
                ("sensitivity".to_owned(), RestrictedExpression::new_string(t.attrs.sensitivity.clone())),
                ("read_only".to_owned(), RestrictedExpression::new_bool(t.attrs.read_only)),
                ("destructive".to_owned(), RestrictedExpression::new_bool(t.attrs.destructive)),
                ("open_world".to_owned(), RestrictedExpression::new_bool(t.attrs.open_world)),
            ]);
            let mut ents = vec![
                Entity::new(resource.clone(), attrs, HashSet::from([up.clone()])).map_err(|e| gen_err(e.to_string()))?,
                Entity::new_no_attrs(action.clone(), groups.iter().cloned().collect()),
            ];
            ents.extend(groups.iter().map(|g| Entity::new_no_attrs(g.clone(), HashSet::new())));
            if let Some(u) = upstream_entities.get(&t.upstream) {
                ents.push(u.clone());
            }
            let entities = Entities::from_entities(ents, None).map_err(|e| gen_err(e.to_string()))?;
            let slice = slice_for(&all, &action, &groups, &resource, &[up])?;
            let args = type_of(&t.input_schema, 0).unwrap_or(Ty::Record(Vec::new()));
            let reads = Reads::of(&slice);
            tools.insert(t.name.clone(), ToolEntry { action, resource, args, arg_names: arg_names(&t.input_schema), entities, slice, reads });
        }
        let prompt_action = uid("Action", "get_prompt").map_err(gen_err)?;
        let resource_action = uid("Action", "read_resource").map_err(gen_err)?;
        let prompt = ActionSlice { slice: slice_by_action(&all, &prompt_action)?, action: prompt_action };
        let resource = ActionSlice { slice: slice_by_action(&all, &resource_action)?, action: resource_action };
        Ok(Self {
            schema_text,
            all,
            tools,
            prompt,
            resource,
            upstream_entities,
            origins,
            ask,
            warnings,
            utc_offset_minutes: opts.utc_offset_minutes,
            per_principal: std::sync::Mutex::new(HashMap::new()),
            decisions: std::sync::Mutex::new(HashMap::default()),
            decision_cache: opts.decision_cache,
        })
    }

    /// The merged schema, as `clawgate schema` prints it.
    pub fn schema_text(&self) -> &str {
        &self.schema_text
    }

    /// The whole validated policy set.
    pub fn policy_set(&self) -> &PolicySet {
        &self.all
    }

    pub fn origin(&self, id: &str) -> Option<&Origin> {
        self.origins.get(id)
    }

    /// The ids of the policies that read `context.<attr>` (an attribute access or `has`).
    pub fn reading_context(&self, attr: &str) -> Vec<String> {
        fn reads(v: &Value, attr: &str) -> bool {
            match v {
                Value::Object(o) => {
                    let direct = ["." , "has"].iter().any(|op| {
                        o.get(*op).is_some_and(|x| x.get("attr").and_then(Value::as_str) == Some(attr) && x.pointer("/left/Var").and_then(Value::as_str) == Some("context"))
                    });
                    direct || o.values().any(|x| reads(x, attr))
                }
                Value::Array(a) => a.iter().any(|x| reads(x, attr)),
                _ => false,
            }
        }
        // A policy that cannot be rendered is counted as reading it (the caller refuses).
        self.all.policies().filter(|p| p.to_json().map_or(true, |j| reads(&j, attr))).map(|p| p.annotation("id").map_or_else(|| p.id().to_string(), str::to_owned)).collect()
    }

    /// How many policies a call to `tool` evaluates.
    pub fn slice_len(&self, tool: &str) -> Option<usize> {
        self.tools.get(tool).map(|t| t.slice.policies().count())
    }

    /// The verdict for a `tools/call`.
    pub fn decide_tool(&self, p: &PreparedPrincipal, tool: &str, args: Option<&Value>, now: SystemTime) -> Verdict {
        self.decide_tool_labelled(p, tool, args, &crate::labels::LabelView::empty(false), now)
    }

    /// The verdict for a `tools/call`, with the call's data-flow labels as `context.labels`.
    pub fn decide_tool_labelled(&self, p: &PreparedPrincipal, tool: &str, args: Option<&Value>, labels: &crate::labels::LabelView, now: SystemTime) -> Verdict {
        let Some(t) = self.tools.get(tool) else {
            return Verdict::deny(DenyKind::Error, Vec::new(), format!("the policy engine does not know tool {tool} yet"));
        };
        let empty = Value::Object(serde_json::Map::new());
        let args = match value_of(&t.args, args.unwrap_or(&empty)) {
            Ok(a) => a,
            Err(e) => return Verdict::deny(DenyKind::Error, Vec::new(), format!("arguments cannot be typed for the policies: {e}")),
        };
        // Only what the tool's slice can read is built (see [`Reads`]); the arguments are typed
        // either way, so a call whose arguments cannot be typed is still denied.
        let mut pairs: Vec<(&str, CtxVal)> = Vec::with_capacity(2);
        if t.reads.needs(&["args"]) {
            pairs.push(("args", args));
        }
        if t.reads.needs(&["labels"]) {
            pairs.push(("labels", labels_val(labels, &t.arg_names, &t.reads)));
        }
        let ctx = self.with_time(self.context(pairs, p, &t.reads), now, &t.reads);
        let cacheable = self.decision_cache > 0 && ctx.iter().map(|(k, v)| k.len() + v.weight()).sum::<usize>() <= DECISION_MAX_WEIGHT;
        let key = DecisionKey { principal: p.key.clone(), tool: tool.to_owned(), context: ctx };
        if cacheable && let Some(hit) = self.decisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return hit.clone();
        }
        let Some(prepared) = self.for_principal(p, tool, t) else {
            return Verdict::deny(DenyKind::Error, Vec::new(), "the principal's entities conflict with the tool's".into());
        };
        let verdict = self.run_with(p, &t.action, &t.resource, &key.context, &prepared.1, &prepared.0);
        if cacheable {
            let mut cache = self.decisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.len() >= self.decision_cache {
                cache.clear();
            }
            cache.insert(key, verdict.clone());
        }
        verdict
    }

    /// The tool's slice narrowed to `p` and the call's entities, built once per (principal,
    /// tool). Narrowing is exact: a dropped policy's principal scope is false for `p`, whose
    /// only ancestors are its groups.
    fn for_principal(&self, p: &PreparedPrincipal, tool: &str, t: &ToolEntry) -> Option<Prepared> {
        let key = (p.key.clone(), tool.to_owned());
        if let Some(hit) = self.per_principal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return Some(std::sync::Arc::clone(hit));
        }
        let mut slice = PolicySet::new();
        for pol in t.slice.policies() {
            let in_ok = |u: &EntityUid| u == &p.uid || p.groups.contains(u);
            let keep = match pol.principal_constraint() {
                PrincipalConstraint::Any => true,
                PrincipalConstraint::Eq(u) => u == p.uid,
                PrincipalConstraint::In(u) => in_ok(&u),
                PrincipalConstraint::Is(ty) => &ty == p.uid.type_name(),
                PrincipalConstraint::IsIn(ty, u) => &ty == p.uid.type_name() && in_ok(&u),
            };
            if keep && slice.add(pol.clone()).is_err() {
                return None;
            }
        }
        let entities = self.entities_with(&t.entities, p)?;
        let built = std::sync::Arc::new((slice, entities));
        let mut cache = self.per_principal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= PER_PRINCIPAL_CACHE {
            cache.clear();
        }
        cache.insert(key, std::sync::Arc::clone(&built));
        Some(built)
    }

    /// Whether `tool` is callable by `p` for at least one assignment of arguments, by partial
    /// evaluation with `context.args` unknown. A residual that Cedar cannot settle counts as
    /// callable: the answer over-approximates, so a callable tool is never hidden.
    pub fn tool_visible(&self, p: &PreparedPrincipal, tool: &str, now: SystemTime) -> bool {
        let Some(t) = self.tools.get(tool) else { return false };
        let all = Reads::everything();
        let ctx = self.with_time(self.context([("args", CtxVal::Unknown("args")), ("labels", CtxVal::Unknown("labels"))], p, &all), now, &all);
        let Ok(ctx) = to_context(&ctx) else { return true };
        let Some(prepared) = self.for_principal(p, tool, t) else { return false };
        let Ok(req) = Request::new(p.uid.clone(), t.action.clone(), t.resource.clone(), ctx, None) else { return false };
        let resp = Authorizer::new().is_authorized_partial(&req, &prepared.0, &prepared.1);
        resp.decision() != Some(CedarDecision::Deny)
    }

    /// The verdict for `prompts/get` on a prompt of `upstream`.
    pub fn decide_prompt(&self, p: &PreparedPrincipal, upstream: &str, name: &str, now: SystemTime) -> Verdict {
        self.decide_other(p, &self.prompt, "Prompt", upstream, name, None, now)
    }

    /// The verdict for `resources/read` of `uri` (as clients see it) on `upstream`.
    pub fn decide_resource(&self, p: &PreparedPrincipal, upstream: &str, uri: &str, now: SystemTime) -> Verdict {
        self.decide_other(p, &self.resource, "Resource", upstream, uri, Some(uri), now)
    }

    #[allow(clippy::too_many_arguments, reason = "one private helper for prompts and resources")]
    fn decide_other(&self, p: &PreparedPrincipal, a: &ActionSlice, ty: &str, upstream: &str, id: &str, uri: Option<&str>, now: SystemTime) -> Verdict {
        let built = (|| -> Result<(EntityUid, Pairs, Entities), String> {
            let resource = uid(ty, id)?;
            let up = uid("Upstream", upstream)?;
            let attrs = HashMap::from([("upstream".to_owned(), RestrictedExpression::new_string(upstream.to_owned()))]);
            let mut ents = vec![Entity::new(resource.clone(), attrs, HashSet::from([up])).map_err(|e| e.to_string())?, Entity::new_no_attrs(a.action.clone(), HashSet::new())];
            if let Some(u) = self.upstream_entities.get(upstream) {
                ents.push(u.clone());
            }
            ents.extend(p.entities.iter().cloned());
            let entities = Entities::from_entities(ents, None).map_err(|e| e.to_string())?;
            let extra: Vec<(&str, CtxVal)> = uri.map(|u| ("uri", CtxVal::Str(u.to_owned()))).into_iter().collect();
            let all = Reads::everything();
            Ok((resource, self.with_time(self.context(extra, p, &all), now, &all), entities))
        })();
        match built {
            Ok((resource, ctx, entities)) => self.run_with(p, &a.action, &resource, &ctx, &entities, &a.slice),
            Err(e) => Verdict::deny(DenyKind::Error, Vec::new(), e),
        }
    }

    fn context<'a>(&self, extra: impl IntoIterator<Item = (&'a str, CtxVal)>, p: &PreparedPrincipal, reads: &Reads) -> Pairs {
        let mut pairs: Pairs = extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if reads.needs(&["intent"]) {
            let parts = p.intent.iter().filter(|(k, _)| reads.needs(&["intent", k])).cloned().collect();
            pairs.push(("intent".into(), CtxVal::Record(parts)));
        }
        pairs
    }

    fn with_time(&self, mut pairs: Pairs, now: SystemTime, reads: &Reads) -> Pairs {
        if reads.needs(&["time"]) {
            pairs.push(("time".into(), time_val(now, self.utc_offset_minutes)));
        }
        pairs
    }

    fn entities_with(&self, base: &Entities, p: &PreparedPrincipal) -> Option<Entities> {
        base.clone().add_entities(p.entities.iter().cloned(), None).ok()
    }

    fn run_with(&self, p: &PreparedPrincipal, action: &EntityUid, resource: &EntityUid, ctx: &Pairs, entities: &Entities, slice: &PolicySet) -> Verdict {
        let ctx = match to_context(ctx) {
            Ok(c) => c,
            Err(e) => return Verdict::deny(DenyKind::Error, Vec::new(), format!("the context cannot be built: {e}")),
        };
        let req = match Request::new(p.uid.clone(), action.clone(), resource.clone(), ctx, None) {
            Ok(r) => r,
            Err(e) => return Verdict::deny(DenyKind::Error, Vec::new(), e.to_string()),
        };
        let resp = Authorizer::new().is_authorized(&req, slice, entities);
        self.verdict(&resp)
    }

    fn verdict(&self, resp: &cedar_policy::Response) -> Verdict {
        let reasons: Vec<String> = resp.diagnostics().reason().map(ToString::to_string).collect();
        let errors: Vec<String> = resp.diagnostics().errors().map(ToString::to_string).collect();
        match resp.decision() {
            CedarDecision::Deny if !reasons.is_empty() => Verdict::deny(DenyKind::Forbidden, reasons, String::new()),
            _ if !errors.is_empty() => Verdict::deny(DenyKind::Error, reasons, errors.join("; ")),
            CedarDecision::Deny => Verdict::deny(DenyKind::NoPermit, Vec::new(), String::new()),
            CedarDecision::Allow => match reasons.iter().find_map(|r| self.ask.get(r).map(|m| (r, m))) {
                Some((id, msg)) => Verdict::Ask { policy: id.clone(), message: msg.clone() },
                None => Verdict::Allow { policies: reasons },
            },
        }
    }
}

/// Context entries before they become a [`Context`].
type Pairs = Vec<(String, CtxVal)>;

/// The Cedar context of `pairs`. Keys are distinct and values plain literals, so this fails
/// only on a bug; the caller then denies.
fn to_context(pairs: &Pairs) -> Result<Context, String> {
    let exprs = pairs.iter().map(|(k, v)| Ok((k.clone(), v.expr()?))).collect::<Result<Vec<_>, String>>()?;
    Context::from_pairs(exprs).map_err(|e| e.to_string())
}

fn gen_err(message: impl Into<String>) -> LoadError {
    LoadError { file: "<generated entities>".into(), line: None, message: message.into() }
}

/// The policies of `all` whose action and resource scope can match a tool call.
fn slice_for(all: &PolicySet, action: &EntityUid, groups: &[EntityUid], resource: &EntityUid, ancestors: &[EntityUid]) -> Result<PolicySet, LoadError> {
    let tool_type = resource.type_name();
    let mut out = PolicySet::new();
    for p in all.policies() {
        let action_ok = match p.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(a) => &a == action,
            ActionConstraint::In(list) => list.iter().any(|a| a == action || groups.contains(a)),
        };
        let in_ok = |u: &EntityUid| u == resource || ancestors.contains(u);
        let resource_ok = match p.resource_constraint() {
            ResourceConstraint::Any => true,
            ResourceConstraint::Eq(r) => &r == resource,
            ResourceConstraint::In(r) => in_ok(&r),
            ResourceConstraint::Is(t) => &t == tool_type,
            ResourceConstraint::IsIn(t, r) => &t == tool_type && in_ok(&r),
        };
        if action_ok && resource_ok {
            out.add(p.clone()).map_err(|e| gen_err(e.to_string()))?;
        }
    }
    Ok(out)
}

fn slice_by_action(all: &PolicySet, action: &EntityUid) -> Result<PolicySet, LoadError> {
    let mut out = PolicySet::new();
    for p in all.policies() {
        let ok = match p.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(a) => &a == action,
            ActionConstraint::In(list) => list.contains(action),
        };
        if ok {
            out.add(p.clone()).map_err(|e| gen_err(e.to_string()))?;
        }
    }
    Ok(out)
}

/// `context.time` for `now` at `offset` minutes from UTC.
fn time_val(now: SystemTime, offset_minutes: i32) -> CtxVal {
    let unix = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let local = unix + i64::from(offset_minutes) * 60;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    // 1970-01-01 was a Thursday (4).
    let weekday = (days + 3).rem_euclid(7) + 1;
    CtxVal::Record(vec![
        ("unix".to_owned(), CtxVal::Long(unix)),
        ("hour".to_owned(), CtxVal::Long(secs / 3600)),
        ("minute".to_owned(), CtxVal::Long((secs % 3600) / 60)),
        ("weekday".to_owned(), CtxVal::Long(weekday)),
    ])
}

// ---------------------------------------------------------------------------------------------
// Verdicts

/// What Cedar said about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow { policies: Vec<String> },
    /// A satisfied permit carries `@ask("message")`: allowed once a human approves.
    Ask { policy: String, message: String },
    Deny { kind: DenyKind, policies: Vec<String>, detail: String },
}

impl Verdict {
    fn deny(kind: DenyKind, policies: Vec<String>, detail: String) -> Self {
        Verdict::Deny { kind, policies, detail }
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// A forbid matched.
    Forbidden,
    /// No permit matched (default deny).
    NoPermit,
    /// Evaluation failed somewhere: fail closed.
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::unwrap_used, reason = "test helper: a panic is a failed test")]
    fn reads(text: &str) -> Reads {
        Reads::of(&PolicySet::from_str(text).unwrap())
    }

    #[test]
    fn reads_are_the_maximal_context_paths() {
        let r = reads(r#"permit (principal, action, resource) when { !context.labels.data.public && !context.labels.data.readers.containsAll(context.labels.recipients) && context.args has cursor };"#);
        assert!(r.needs(&["labels", "data", "public"]) && r.needs(&["labels", "data", "readers"]) && r.needs(&["labels", "recipients"]));
        assert!(r.needs(&["labels"]) && r.needs(&["args", "cursor"]), "a parent of a read is built");
        assert!(!r.needs(&["labels", "data", "origins"]) && !r.needs(&["labels", "session"]) && !r.needs(&["time"]) && !r.needs(&["args", "id"]));
        // A record used whole is built whole.
        let r = reads(r#"permit (principal, action, resource) when { context.labels.control == context.labels.data };"#);
        assert!(r.needs(&["labels", "control", "origins"]) && !r.needs(&["labels", "session"]));
        // The whole context: everything.
        let r = reads(r#"permit (principal, action, resource) when { context == context };"#);
        assert!(r.needs(&["anything", "at", "all"]));
        // No condition: nothing.
        assert!(!reads("permit (principal, action, resource);").needs(&["labels"]));
    }
}
