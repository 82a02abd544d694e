//! Kubernetes manifests to the Palisade model.
//!
//! Decoding is pure (bytes in, values and diagnostics out), never panics,
//! and reports every problem it finds with its file, object and field path.
//! Policy kinds are validated strictly, as `kubectl --validate=strict`
//! would: a misspelled field is an error, never a silently different policy.
//! Pods, Namespaces and Nodes are read leniently, since `kubectl get -o yaml`
//! output carries many fields Palisade does not need.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;

use palisade_model::{
    AdminPolicy, Cluster, Labels, Namespace, NetworkPolicy, Node, Pod, Workload, WorkloadKind,
};
use serde_json::{Map, Value};

pub use limits::Limits;

mod admin;
mod core;
pub mod encode;
pub mod limits;
mod netpol;
mod source;
mod staged;
mod walk;
mod workload;
mod workloads;

pub use staged::STAGED_ANNOTATION;
pub use workload::Template;

use walk::{as_map, as_str, dns1123_label_error, dns1123_subdomain_error, field, get_str, Cx};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found while decoding or assembling, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// The line of the problem, or of the document holding the object.
    pub line: Option<usize>,
    /// The object, as in `NetworkPolicy default/web` or `AdminNetworkPolicy deny-imds`.
    pub object: Option<String>,
    /// The field path, as in `spec.ingress[0].ports[1].endPort`.
    pub field: Option<String>,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `policies.yaml:12: NetworkPolicy default/web: spec.ingress[0].ports[1].endPort: 70 is below port 80`,
    /// with `warning: ` in front for warnings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        if let Some(p) = &self.field {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A decoded object of a kind Palisade uses.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    Node(Node),
    NetworkPolicy(NetworkPolicy),
    AdminPolicy(AdminPolicy),
    /// A Deployment, StatefulSet, DaemonSet, ReplicaSet,
    /// ReplicationController, Job or CronJob.
    Workload(Template),
}

impl Object {
    pub fn key(&self) -> ObjectKey {
        let (kind, namespace, name) = match self {
            Object::Namespace(n) => ("Namespace", None, &n.name),
            Object::Pod(p) => ("Pod", Some(&p.namespace), &p.name),
            Object::Node(n) => ("Node", None, &n.name),
            Object::NetworkPolicy(p) => ("NetworkPolicy", Some(&p.namespace), &p.name),
            Object::AdminPolicy(p) => (p.kind.as_str(), None, &p.name),
            Object::Workload(w) => (
                w.endpoint.template_kind().map_or("", WorkloadKind::as_str),
                Some(&w.endpoint.namespace),
                &w.endpoint.name,
            ),
        };
        ObjectKey {
            kind: kind.to_string(),
            namespace: namespace.cloned(),
            name: name.clone(),
        }
    }
}

/// What makes an object unique: kind, namespace (if namespaced) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A value with where it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Located<T> {
    pub file: String,
    /// The line where the document starts, 1-based, if known.
    pub line: Option<usize>,
    pub value: T,
}

impl<T> Located<T> {
    fn place(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}", self.file),
            None => self.file.clone(),
        }
    }
}

/// Decodes one file's contents. `file` is only used in messages. Files whose
/// name ends in `.json` are JSON; anything else is YAML, possibly with
/// several `---`-separated documents. The default [`Limits`] apply.
pub fn decode(file: &str, bytes: &[u8]) -> (Vec<Located<Object>>, Vec<Diagnostic>) {
    decode_with(&Limits::default(), file, bytes)
}

/// [`decode`] with other size limits.
pub fn decode_with(
    limits: &Limits,
    file: &str,
    bytes: &[u8],
) -> (Vec<Located<Object>>, Vec<Diagnostic>) {
    let json = file.to_ascii_lowercase().ends_with(".json");
    decode_text(limits, file, bytes, json)
}

/// Decodes one JSON text whatever `origin` is called, as an etcd value or
/// an API response is: strictly (a duplicate key or a non-finite number is
/// an error) and within the default [`Limits`]. `origin` names it in
/// messages.
pub fn decode_json_bytes(origin: &str, bytes: &[u8]) -> (Vec<Located<Object>>, Vec<Diagnostic>) {
    decode_text(&Limits::default(), origin, bytes, true)
}

fn decode_text(
    limits: &Limits,
    file: &str,
    bytes: &[u8],
    json: bool,
) -> (Vec<Located<Object>>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut out = Vec::new();
    let len = bytes.len() as u64;
    if len > limits.file_bytes {
        diags.push(Diagnostic {
            severity: Severity::Error,
            file: file.to_string(),
            line: None,
            object: None,
            field: None,
            message: format!(
                "the file is {}, over the limit of {} for one file; nothing in it was read",
                limits::size(len),
                limits::size(limits.file_bytes)
            ),
        });
        return (out, diags);
    }
    let Some(text) = source::text(file, bytes, &mut diags) else {
        return (out, diags);
    };
    let docs: Box<dyn Iterator<Item = Result<source::Document, Diagnostic>>> = if json {
        Box::new(source::json(file, text).into_iter())
    } else {
        Box::new(source::yaml(file, text))
    };
    for doc in docs {
        match doc {
            Ok(doc) => {
                let size = doc.bytes as u64;
                if size > limits.object_bytes && !is_list(&doc.value) {
                    let object = doc.value.as_object().and_then(|obj| {
                        let kind = obj.get("kind").and_then(Value::as_str)?;
                        Some(object_name(obj, kind))
                    });
                    diags.push(Diagnostic {
                        severity: Severity::Error,
                        file: file.to_string(),
                        line: doc.line,
                        object,
                        field: None,
                        message: format!(
                            "the document is {}, over the limit of {} for one object (the Kubernetes API server's request limit; only a List may be larger); nothing in it was read",
                            limits::size(size),
                            limits::size(limits.object_bytes)
                        ),
                    });
                    continue;
                }
                decode_document(file, doc.line, &doc.value, None, 0, &mut out, &mut diags)
            }
            Err(d) => diags.push(d),
        }
    }
    (out, diags)
}

/// Decodes one already-parsed object (or list of objects). `origin` names
/// it in messages. A `Value` can no longer show a duplicate key, and holds
/// a non-finite number as `null`, so text is better read with
/// [`decode_json_bytes`].
pub fn decode_value(origin: &str, value: Value) -> (Vec<Located<Object>>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut out = Vec::new();
    decode_document(origin, None, &value, None, 0, &mut out, &mut diags);
    (out, diags)
}

/// Whether a document is read as a list of objects, as `decode_document`
/// reads it.
fn is_list(value: &Value) -> bool {
    value.as_object().is_some_and(|obj| {
        obj.get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"))
            && obj.contains_key("items")
    })
}

/// How messages name an object of `kind`, from its raw metadata.
fn object_name(obj: &Map<String, Value>, kind: &str) -> String {
    let meta = obj.get("metadata").and_then(Value::as_object);
    let get = |key: &str| {
        meta.and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (name, ns) = (get("name"), get("namespace"));
    match (name, Kind::from_name(kind)) {
        (None, _) => kind.to_string(),
        (Some(n), Some(k)) if k.namespaced() => {
            format!("{kind} {}/{n}", ns.unwrap_or("default"))
        }
        (Some(n), Some(_)) => format!("{kind} {n}"),
        (Some(n), None) => match ns {
            Some(ns) => format!("{kind} {ns}/{n}"),
            None => format!("{kind} {n}"),
        },
    }
}

/// The object that a path inside a document falls in, as messages name
/// it, and the path within that object: a path into a list's items is
/// inside that item.
pub(crate) fn place(doc: &Value, path: &[source::Seg]) -> (Option<String>, String) {
    use source::Seg;
    let mut value = doc;
    let mut rest = path;
    let mut inherited: Option<&str> = None;
    loop {
        let Value::Object(obj) = value else {
            return (None, source::render(rest));
        };
        let Some(kind) = obj.get("kind").and_then(Value::as_str).or(inherited) else {
            return (None, source::render(rest));
        };
        let (Some(items_kind), Some(items)) = (kind.strip_suffix("List"), obj.get("items")) else {
            return (Some(object_name(obj, kind)), source::render(rest));
        };
        match rest {
            [Seg::Key(k), Seg::Index(i), more @ ..]
                if k == "items" && items.get(*i).is_some_and(Value::is_object) =>
            {
                inherited = (!items_kind.is_empty()).then_some(items_kind);
                value = &items[*i];
                rest = more;
            }
            _ => return (Some(kind.to_string()), source::render(rest)),
        }
    }
}

/// The kinds Palisade reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Namespace,
    Pod,
    Node,
    NetworkPolicy,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
    ClusterNetworkPolicy,
    Workload(WorkloadKind),
}

const POLICY_GROUP_V1ALPHA1: &str = "policy.networking.k8s.io/v1alpha1";
const POLICY_GROUP_V1ALPHA2: &str = "policy.networking.k8s.io/v1alpha2";

impl Kind {
    /// Every kind Palisade reads, as Kubernetes spells it.
    const NAMES: &'static [&'static str] = &[
        "Namespace",
        "Pod",
        "Node",
        "NetworkPolicy",
        "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy",
        "ClusterNetworkPolicy",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "Job",
        "CronJob",
    ];

    fn from_name(kind: &str) -> Option<Kind> {
        use k8s_openapi::api::core::v1 as core;
        use k8s_openapi::api::networking::v1 as net;
        use k8s_openapi::Resource;
        Some(match kind {
            k if k == core::Namespace::KIND => Kind::Namespace,
            k if k == core::Pod::KIND => Kind::Pod,
            k if k == core::Node::KIND => Kind::Node,
            k if k == net::NetworkPolicy::KIND => Kind::NetworkPolicy,
            "AdminNetworkPolicy" => Kind::AdminNetworkPolicy,
            "BaselineAdminNetworkPolicy" => Kind::BaselineAdminNetworkPolicy,
            "ClusterNetworkPolicy" => Kind::ClusterNetworkPolicy,
            k => Kind::Workload(WorkloadKind::from_name(k)?),
        })
    }

    fn api_version(self) -> &'static str {
        use k8s_openapi::api::core::v1 as core;
        use k8s_openapi::api::networking::v1 as net;
        use k8s_openapi::Resource;
        match self {
            Kind::Namespace => core::Namespace::API_VERSION,
            Kind::Pod => core::Pod::API_VERSION,
            Kind::Node => core::Node::API_VERSION,
            Kind::NetworkPolicy => net::NetworkPolicy::API_VERSION,
            Kind::AdminNetworkPolicy | Kind::BaselineAdminNetworkPolicy => POLICY_GROUP_V1ALPHA1,
            Kind::ClusterNetworkPolicy => POLICY_GROUP_V1ALPHA2,
            Kind::Workload(w) => workload::api_version(w),
        }
    }

    fn namespaced(self) -> bool {
        matches!(self, Kind::Pod | Kind::NetworkPolicy | Kind::Workload(_))
    }

    /// Policy kinds: unknown fields are errors.
    fn strict(self) -> bool {
        matches!(
            self,
            Kind::NetworkPolicy
                | Kind::AdminNetworkPolicy
                | Kind::BaselineAdminNetworkPolicy
                | Kind::ClusterNetworkPolicy
        )
    }
}

/// Lists nest rarely; this bounds recursion on hostile input.
const MAX_LIST_DEPTH: usize = 8;

const TOP_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn decode_document(
    file: &str,
    line: Option<usize>,
    value: &Value,
    inherited: Option<(&str, Option<&str>)>,
    depth: usize,
    out: &mut Vec<Located<Object>>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut cx = Cx::new(file, line, diags);
    let Value::Object(obj) = value else {
        cx.error(
            "",
            format!(
                "expected a Kubernetes object (a mapping with apiVersion and kind), found {}",
                walk::describe(value)
            ),
        );
        return;
    };
    let kind = match field(obj, "kind") {
        Some(v) => as_str(&mut cx, v, "kind").map(str::to_string),
        None => inherited.map(|(k, _)| k.to_string()),
    };
    let api_version = match field(obj, "apiVersion") {
        Some(v) => as_str(&mut cx, v, "apiVersion").map(str::to_string),
        None => inherited.and_then(|(_, a)| a.map(str::to_string)),
    };
    let Some(kind) = kind else {
        // A stray file among manifests (Helm values, a kustomization): a
        // document that does not even try to be a Kubernetes object.
        if depth == 0 && field(obj, "kind").is_none() && field(obj, "apiVersion").is_none() {
            cx.warn(
                "",
                "not a Kubernetes object (no apiVersion and no kind); skipped",
            );
            return;
        }
        if field(obj, "kind").is_none() {
            let named = obj
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(|n| format!(" (object named {n:?})"))
                .unwrap_or_default();
            cx.error("kind", format!("missing kind{named}"));
        }
        return;
    };

    // `kind: List` and any `FooList` with items.
    if let (Some(items_kind), Some(items)) = (kind.strip_suffix("List"), obj.get("items")) {
        if depth >= MAX_LIST_DEPTH {
            cx.error("items", "lists nested too deeply");
            return;
        }
        cx.object = Some(kind.clone());
        let Some(items) = walk::as_list(&mut cx, items, "items") else {
            return;
        };
        let inherit = (!items_kind.is_empty()).then_some((items_kind, api_version.as_deref()));
        for item in items {
            decode_document(file, line, item, inherit, depth + 1, out, diags);
        }
        return;
    }

    let Some(k) = Kind::from_name(&kind) else {
        // Repositories are full of kinds Palisade has no use for (Service,
        // ConfigMap, ...): silence, unless the kind looks like a misspelt
        // one that Palisade reads.
        if let Some(near) = walk::near_miss(&kind, Kind::NAMES) {
            cx.object = Some(object_name(obj, &kind));
            cx.warn(
                "kind",
                format!("skipped: kind {kind} is not used by Palisade (did you mean {near}?)"),
            );
        }
        return;
    };
    cx.object = Some(object_name(obj, &kind));

    match api_version.as_deref() {
        None => {
            if field(obj, "apiVersion").is_none() {
                cx.error(
                    "apiVersion",
                    format!("missing apiVersion (expected {})", k.api_version()),
                );
            }
        }
        Some(a) if a != k.api_version() => cx.error(
            "apiVersion",
            format!("{kind} is {}, not {a:?}", k.api_version()),
        ),
        Some(_) => {}
    }

    if k.strict() {
        as_map(&mut cx, value, "", Some(TOP_FIELDS));
    }
    let meta = metadata(&mut cx, obj, k);

    let object = match k {
        Kind::Namespace => Object::Namespace(core::namespace(&mut cx, obj, meta)),
        Kind::Pod => Object::Pod(core::pod(&mut cx, obj, meta)),
        Kind::Node => Object::Node(core::node(&mut cx, obj, meta)),
        Kind::NetworkPolicy => Object::NetworkPolicy(netpol::decode(&mut cx, obj, meta)),
        Kind::AdminNetworkPolicy => {
            Object::AdminPolicy(admin::decode(&mut cx, obj, meta, admin::Flavor::Anp))
        }
        Kind::BaselineAdminNetworkPolicy => {
            Object::AdminPolicy(admin::decode(&mut cx, obj, meta, admin::Flavor::Banp))
        }
        Kind::ClusterNetworkPolicy => {
            Object::AdminPolicy(admin::decode(&mut cx, obj, meta, admin::Flavor::Cnp))
        }
        Kind::Workload(w) => Object::Workload(workload::decode(&mut cx, obj, meta, w)),
    };
    if cx.errors == 0 {
        out.push(Located {
            file: file.to_string(),
            line,
            value: object,
        });
    }
}

/// The parts of `metadata` Palisade uses.
pub(crate) struct Meta {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    /// The controlling workload, for pods and workloads.
    pub owner: Option<Workload>,
    /// [`STAGED_ANNOTATION`] is `"true"` (read on policy kinds only).
    pub staged: bool,
}

/// Whether `kind` is one of the policy kinds (NetworkPolicy and the admin
/// kinds): the kinds that are decoded strictly and can be staged.
pub fn is_policy_kind(kind: &str) -> bool {
    Kind::from_name(kind).is_some_and(Kind::strict)
}

fn metadata(cx: &mut Cx, obj: &Map<String, Value>, kind: Kind) -> Meta {
    let allowed = kind.strict().then_some(OBJECT_META_FIELDS);
    let m = match field(obj, "metadata") {
        Some(v) => as_map(cx, v, "metadata", allowed),
        None => None,
    };
    let m = m.cloned().unwrap_or_default();
    let name = get_str(cx, &m, "metadata", "name").unwrap_or_default();
    if name.is_empty()
        && !(m
            .get("name")
            .is_some_and(|v| !v.is_null() && !v.is_string()))
    {
        cx.error("metadata.name", "missing name");
    } else if !name.is_empty() {
        let err = if kind == Kind::Namespace {
            dns1123_label_error(name)
        } else {
            dns1123_subdomain_error(name)
        };
        if let Some(e) = err {
            cx.error("metadata.name", format!("invalid name {name:?}: {e}"));
        }
    }
    let mut namespace = "default".to_string();
    if let Some(ns) = get_str(cx, &m, "metadata", "namespace").filter(|s| !s.is_empty()) {
        if kind.namespaced() {
            if let Some(e) = dns1123_label_error(ns) {
                cx.error(
                    "metadata.namespace",
                    format!("invalid namespace {ns:?}: {e}"),
                );
            }
            namespace = ns.to_string();
        } else {
            cx.warn(
                "metadata.namespace",
                format!("ignored: {kind:?} is not namespaced"),
            );
        }
    }
    let labels = match field(&m, "labels") {
        Some(v) => walk::labels(cx, v, "metadata.labels"),
        None => Labels::new(),
    };
    let mut is_staged = false;
    if kind.strict() {
        if let Some(a) = field(&m, "annotations") {
            if let Some(a) = walk::as_map(cx, a, "metadata.annotations", None) {
                is_staged = staged::read(cx, a);
            }
        }
    }
    let owner = match kind {
        Kind::Pod | Kind::Workload(_) => workload::controller(cx, &m),
        _ => None,
    };
    Meta {
        name: name.to_string(),
        namespace,
        labels,
        owner,
        staged: is_staged,
    }
}

/// Where an object was read from: its file and the line its document
/// starts on (a `List`'s items share the list's line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: Option<usize>,
}

/// Objects merged into a cluster, with what merging found.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub cluster: Cluster,
    pub diagnostics: Vec<Diagnostic>,
    /// Where each object of `cluster` came from (implicit namespaces have
    /// no entry), so that findings about an object can point at it.
    pub origins: BTreeMap<ObjectKey, Origin>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Merges objects from many files into a [`Cluster`].
///
/// Duplicates (same kind, namespace and name) are errors naming both places;
/// the first is kept. Implicit namespaces are added. Two admin policies of
/// one tier sharing a priority get a warning: the engine breaks the tie by
/// name. Live pods are grouped into their workloads and workloads become
/// endpoints as `workloads` says. Pods and policies are sorted by namespace
/// and name, nodes by name,
/// admin policies by tier, priority and name.
pub fn assemble(objects: Vec<Located<Object>>) -> Loaded {
    let mut diagnostics = Vec::new();
    let mut seen: BTreeMap<ObjectKey, String> = BTreeMap::new();
    let mut cluster = Cluster::default();
    let mut admin_places: BTreeMap<(String, String), Located<()>> = BTreeMap::new();
    let mut templates = Vec::new();
    let mut origins: BTreeMap<ObjectKey, Origin> = BTreeMap::new();

    for located in objects {
        let key = located.value.key();
        if let Some(first) = seen.get(&key) {
            diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: located.file.clone(),
                line: located.line,
                object: Some(key.to_string()),
                field: None,
                message: format!(
                    "duplicate {key}: already defined at {first}; the first definition is kept"
                ),
            });
            continue;
        }
        seen.insert(key.clone(), located.place());
        origins.insert(
            key,
            Origin {
                file: located.file.clone(),
                line: located.line,
            },
        );
        let Located { file, line, value } = located;
        match value {
            Object::Namespace(n) => {
                cluster.namespaces.insert(n.name.clone(), n);
            }
            Object::Pod(p) => cluster.pods.push(p),
            Object::Workload(w) => templates.push(w),
            Object::Node(n) => cluster.nodes.push(n),
            Object::NetworkPolicy(p) => cluster.policies.push(p),
            Object::AdminPolicy(p) => {
                admin_places.insert(
                    (p.kind.clone(), p.name.clone()),
                    Located {
                        file,
                        line,
                        value: (),
                    },
                );
                cluster.admin_policies.push(p);
            }
        }
    }

    workloads::resolve(&mut cluster.pods, templates);
    cluster.complete_namespaces();
    // A pod before the templates of its name, templates by kind name.
    let kind = |p: &Pod| p.template_kind().map(WorkloadKind::as_str);
    cluster
        .pods
        .sort_by(|a, b| (&a.namespace, &a.name, kind(a)).cmp(&(&b.namespace, &b.name, kind(b))));
    cluster
        .policies
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    cluster.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    cluster.admin_policies.sort_by(|a, b| {
        (a.tier, a.priority, &a.name, &a.kind).cmp(&(b.tier, b.priority, &b.name, &b.kind))
    });

    for pair in cluster.admin_policies.windows(2) {
        let [a, b] = pair else { continue };
        if a.tier != b.tier || a.priority != b.priority {
            continue;
        }
        let place = admin_places.get(&(b.kind.clone(), b.name.clone()));
        diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            file: place.map(|p| p.file.clone()).unwrap_or_default(),
            line: place.and_then(|p| p.line),
            object: Some(format!("{} {}", b.kind, b.name)),
            field: None,
            message: format!(
                "same tier ({:?}) and priority ({}) as {} {}; the tie is broken by name, lexicographically, so {} {} is evaluated first",
                a.tier, a.priority, a.kind, a.name, a.kind, a.name
            ),
        });
    }

    Loaded {
        cluster,
        diagnostics,
        origins,
    }
}

/// Decodes several `(name, contents)` inputs and assembles them.
pub fn load(inputs: &[(String, Vec<u8>)]) -> Loaded {
    load_with(inputs, &mut |_| {})
}

/// [`load`], calling `decoded` with the number of inputs decoded so far
/// after each one (a caller's progress report).
pub fn load_with(inputs: &[(String, Vec<u8>)], decoded: &mut dyn FnMut(usize)) -> Loaded {
    let mut objects = Vec::new();
    let mut diagnostics = Vec::new();
    for (i, (name, bytes)) in inputs.iter().enumerate() {
        let (o, d) = decode(name, bytes);
        objects.extend(o);
        diagnostics.extend(d);
        decoded(i + 1);
    }
    let mut loaded = assemble(objects);
    diagnostics.append(&mut loaded.diagnostics);
    loaded.diagnostics = diagnostics;
    loaded
}
