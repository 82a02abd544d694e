//! The one input type every source produces.

use palisade_k8s::{Diagnostic, Located, Object};

/// The decoded contents of one origin: a manifest file, an etcd key, an API
/// object. `errors` are the decoder's error diagnostics; objects that had
/// errors are absent from `objects`.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Unique across sources: `dir:<path>`, `etcd:<key>`, `kube:<Kind>/<ns>/<name>`.
    pub origin: String,
    pub objects: Vec<Located<Object>>,
    pub errors: Vec<Diagnostic>,
}

impl Entry {
    /// Decodes a file's bytes (YAML or JSON by `name`'s extension).
    pub fn decode_bytes(origin: String, name: &str, bytes: &[u8]) -> Entry {
        let (objects, diags) = palisade_k8s::decode(name, bytes);
        Entry::new(origin, objects, diags)
    }

    /// Decodes one JSON text strictly (duplicate keys and over-size values
    /// are errors); `name` appears in messages.
    pub fn decode_json_bytes(origin: String, name: &str, bytes: &[u8]) -> Entry {
        let (objects, diags) = palisade_k8s::decode_json_bytes(name, bytes);
        Entry::new(origin, objects, diags)
    }

    /// Decodes one parsed object; `name` appears in messages.
    pub fn decode_json(origin: String, name: &str, value: serde_json::Value) -> Entry {
        let (objects, diags) = palisade_k8s::decode_value(name, value);
        Entry::new(origin, objects, diags)
    }

    fn new(origin: String, objects: Vec<Located<Object>>, diags: Vec<Diagnostic>) -> Entry {
        Entry {
            origin,
            objects,
            errors: diags.into_iter().filter(Diagnostic::is_error).collect(),
        }
    }
}

/// What a source tells the agent's loop.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// An origin was created or changed.
    Upsert(Entry),
    /// An origin is gone, with all its objects.
    Delete { origin: String },
    /// The complete contents of a source: every origin starting with `scope`
    /// is replaced by `entries`. Sent on start and after any gap (lost
    /// connection, compaction); also means the source is up.
    Resync { scope: String, entries: Vec<Entry> },
    /// The source named `scope` is unreachable; the last state is kept.
    SourceDown { scope: String, reason: String },
    /// What the node's kernel says about how pods are wired (complete,
    /// each time it changes): not objects, so never stored.
    NodeFacts(crate::facts::NodeFacts),
}

impl Input {
    pub fn kind(&self) -> &'static str {
        match self {
            Input::Upsert(_) => "upsert",
            Input::Delete { .. } => "delete",
            Input::Resync { .. } => "resync",
            Input::SourceDown { .. } => "source_down",
            Input::NodeFacts(_) => "node_facts",
        }
    }
}
