//! Turning file contents into JSON values, one per YAML document.
//!
//! Both formats are read through one strict builder of [`Value`]s, which
//! refuses what a plain `Value` would silently change: a key given twice in
//! one mapping (a plain `Value` keeps the last, so a second `podSelector`
//! would replace the first) and a non-finite number (a plain `Value` turns
//! `.inf` into `null`, an absent field, so `port: .inf` would read as every
//! port). The Kubernetes API server refuses both as well.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use crate::{Diagnostic, Severity};

/// One parsed document: the 1-based line where its content starts.
pub(crate) struct Document {
    pub line: Option<usize>,
    pub value: Value,
    /// The length of the text it was read from, for the size limits.
    pub bytes: usize,
}

fn syntax_error(file: &str, line: Option<usize>, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_string(),
        line,
        object: None,
        field: None,
        message,
    }
}

/// Decodes UTF-8 (without a byte-order mark), reporting invalid bytes.
pub(crate) fn text<'b>(
    file: &str,
    bytes: &'b [u8],
    diags: &mut Vec<Diagnostic>,
) -> Option<&'b str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            diags.push(syntax_error(
                file,
                Some(line),
                format!("not valid UTF-8 (at byte {})", e.valid_up_to()),
            ));
            None
        }
    }
}

/// One step of a field path inside a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// What the strict reading refused, and where in the document.
struct Refusal {
    path: Vec<Seg>,
    message: String,
}

/// The path to the value being read, borrowed from the callers' frames so
/// that reading costs nothing until something is refused.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn segments(&self) -> Vec<Seg> {
        let mut out = Vec::new();
        let mut p = self;
        loop {
            match p {
                Path::Root => break,
                Path::Key(up, k) => {
                    out.push(Seg::Key(k.to_string()));
                    p = up;
                }
                Path::Index(up, i) => {
                    out.push(Seg::Index(*i));
                    p = up;
                }
            }
        }
        out.reverse();
        out
    }
}

/// Builds a [`Value`] as `Value`'s own `Deserialize` does, except for what
/// the module comment says it refuses. The refusal is kept in `refused`,
/// since the parser's error carries only its text and position.
#[derive(Clone, Copy)]
struct Strict<'a> {
    path: Path<'a>,
    refused: &'a Cell<Option<Refusal>>,
}

impl Strict<'_> {
    fn refuse<E: de::Error>(&self, path: Path, message: String) -> E {
        let err = E::custom(&message);
        self.refused.set(Some(Refusal {
            path: path.segments(),
            message,
        }));
        err
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Number::deserialize(de::value::I128Deserializer::new(v)).map(Value::Number)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Number::deserialize(de::value::U128Deserializer::new(v)).map(Value::Number)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        match Number::from_f64(v) {
            Some(n) => Ok(Value::Number(n)),
            None => {
                let name = if v.is_nan() {
                    ".nan"
                } else if v > 0.0 {
                    ".inf"
                } else {
                    "-.inf"
                };
                Err(self.refuse(self.path, format!("{name} is not a finite number")))
            }
        }
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict {
            path: Path::Index(&self.path, out.len()),
            refused: self.refused,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key_seed(Key {
            outer: self,
            map: &map,
        })? {
            let value = access.next_value_seed(Strict {
                path: Path::Key(&self.path, &key),
                refused: self.refused,
            })?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// A mapping's key, refused if the mapping already has it. Checked while
/// the key is read so that the parser's position is the key's line.
struct Key<'a, 'm> {
    outer: Strict<'a>,
    map: &'m Map<String, Value>,
}

impl Key<'_, '_> {
    fn check<E: de::Error>(&self, k: &str) -> Result<(), E> {
        if self.map.contains_key(k) {
            let path = Path::Key(&self.outer.path, k);
            return Err(self.outer.refuse(path, format!("duplicate field {k:?}")));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, k: &str) -> Result<String, E> {
        self.check(k)?;
        Ok(k.to_string())
    }

    fn visit_string<E: de::Error>(self, k: String) -> Result<String, E> {
        self.check(&k)?;
        Ok(k)
    }
}

/// The diagnostic for a refusal: the object it is in and the path within,
/// named from a lenient reading of the same text (if that reads at all).
fn refusal_diagnostic(
    file: &str,
    line: Option<usize>,
    refusal: Refusal,
    lenient: Option<Value>,
) -> Diagnostic {
    let (object, field) = match &lenient {
        Some(doc) => crate::place(doc, &refusal.path),
        None => (None, render(&refusal.path)),
    };
    Diagnostic {
        severity: Severity::Error,
        file: file.to_string(),
        line,
        object,
        field: (!field.is_empty()).then_some(field),
        message: refusal.message,
    }
}

/// A path as the diagnostics write it: `spec.ingress[0].ports`.
pub(crate) fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Reads one JSON text strictly.
pub(crate) fn json(file: &str, text: &str) -> Option<Result<Document, Diagnostic>> {
    let refused = Cell::new(None);
    let seed = Strict {
        path: Path::Root,
        refused: &refused,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    match seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v)) {
        Ok(Value::Null) => None,
        Ok(value) => {
            let start = text.len() - text.trim_start().len();
            let line = text[..start].matches('\n').count() + 1;
            Some(Ok(Document {
                line: Some(line),
                value,
                bytes: text.len(),
            }))
        }
        Err(e) => {
            let line = (e.line() > 0).then_some(e.line());
            Some(Err(match refused.take() {
                Some(r) => refusal_diagnostic(file, line, r, serde_json::from_str(text).ok()),
                None => syntax_error(file, line, format!("JSON syntax error: {e}")),
            }))
        }
    }
}

/// A line that starts (`---`) or ends (`...`) a YAML document.
fn marker(line: &str, m: &str) -> bool {
    line.strip_prefix(m)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Whether a line carries document content (not blank, comment, directive
/// or a bare marker).
fn content(line: &str) -> bool {
    let rest = line
        .strip_prefix("---")
        .filter(|_| marker(line, "---"))
        .unwrap_or(line);
    let t = rest.trim();
    !(t.is_empty() || t.starts_with('#') || (line.starts_with('%') && rest.len() == line.len()))
}

/// Splits a YAML stream into documents and parses each on its own, so a
/// syntax error in one document does not hide the others. Documents are
/// parsed as the iterator is consumed, so only one is held at a time.
pub(crate) fn yaml<'t>(
    file: &'t str,
    text: &'t str,
) -> impl Iterator<Item = Result<Document, Diagnostic>> + 't {
    // (first line index, byte range) of each chunk.
    let mut chunks: Vec<(usize, usize, usize)> = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0usize;
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if marker(line, "---") {
            if offset > start {
                chunks.push((start_line, start, offset));
            }
            start = offset;
            start_line = i;
        } else if marker(line, "...") {
            chunks.push((start_line, start, offset + line.len()));
            start = offset + line.len();
            start_line = i + 1;
        }
        offset += line.len();
    }
    if offset > start {
        chunks.push((start_line, start, offset));
    }
    chunks
        .into_iter()
        .filter_map(move |(first, from, to)| yaml_chunk(file, first, &text[from..to]))
}

/// One document of a YAML stream; `first` is the index of its first line
/// in the file.
fn yaml_chunk(file: &str, first: usize, chunk: &str) -> Option<Result<Document, Diagnostic>> {
    let line = chunk
        .split_inclusive('\n')
        .position(content)
        .map(|p| first + p + 1)?;
    let refused = Cell::new(None);
    let seed = Strict {
        path: Path::Root,
        refused: &refused,
    };
    match seed.deserialize(serde_norway::Deserializer::from_str(chunk)) {
        Ok(Value::Null) => None,
        Ok(value) => Some(Ok(Document {
            line: Some(line),
            value,
            bytes: chunk.len(),
        })),
        Err(e) => {
            if let Some(r) = refused.take() {
                let at = e.location().map_or(line, |l| first + l.line());
                let lenient = serde_norway::from_str(chunk).ok();
                return Some(Err(refusal_diagnostic(file, Some(at), r, lenient)));
            }
            // Parse again with the chunk at its place in the file, so the
            // message's positions are the file's.
            let padded = format!("{}{chunk}", "\n".repeat(first));
            let err = serde_norway::from_str::<Value>(&padded).err();
            let (line, msg) = match err {
                Some(e) => (e.location().map(|l| l.line()), e.to_string()),
                None => (Some(line), "invalid document".to_string()),
            };
            Some(Err(syntax_error(
                file,
                line,
                format!("YAML syntax error: {msg}"),
            )))
        }
    }
}
