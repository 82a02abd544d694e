//! Turning file contents into JSON values, one per YAML document.
//!
//! Both formats are read through one strict builder of [`Value`]s, which
//! refuses what a plain `Value` would silently change: a key given twice in
//! one mapping (a plain `Value` keeps the last, so a second `podSelector`
//! would replace the first) and a non-finite number (a plain `Value` turns
//! `.inf` into `null`, an absent field, so `port: .inf` would read as every
//! port). The Kubernetes API server refuses both as well.
//!
//! The builder also bounds what a document may cost (`limits.rs`): how deep
//! its values nest, and how much it builds, since YAML aliases can make a
//! small text stand for an enormous tree. A tag other than the core
//! schema's is an error, not its text (`!!binary` would otherwise read as
//! base64).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use crate::limits::Q;
use crate::limits::{self, MAX_DEPTH};
use crate::{scan, Diagnostic, Severity};

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

/// What one reading of a document shares: the refusal, if any, and what
/// is left of the document's budget of values built.
struct Reading {
    refused: Cell<Option<Refusal>>,
    budget: Cell<u64>,
    /// Read as a plain `Value` would be (a duplicate key keeps the last
    /// value, a non-finite number is `null`), only to name the object a
    /// refusal is in; the cost limits still apply.
    lenient: bool,
}

impl Reading {
    fn new(text: &str, lenient: bool) -> Reading {
        Reading {
            refused: Cell::new(None),
            budget: Cell::new(limits::build_budget(text.len())),
            lenient,
        }
    }
}

/// Builds a [`Value`] as `Value`'s own `Deserialize` does, except for what
/// the module comment says it refuses. The refusal is kept in the
/// [`Reading`], since the parser's error carries only its text and
/// position.
#[derive(Clone, Copy)]
struct Strict<'a> {
    path: Path<'a>,
    depth: usize,
    reading: &'a Reading,
}

impl<'a> Strict<'a> {
    fn root(reading: &'a Reading) -> Self {
        Strict {
            path: Path::Root,
            depth: 0,
            reading,
        }
    }

    fn refuse<E: de::Error>(&self, path: Path, message: String) -> E {
        let err = E::custom(&message);
        self.reading.refused.set(Some(Refusal {
            path: path.segments(),
            message,
        }));
        err
    }

    /// Takes one value of `bytes` of text from the budget: what a document
    /// builds is bounded by its size however its aliases multiply it.
    fn spend<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let cost = 1 + bytes as u64;
        let left = self.reading.budget.get();
        if cost > left {
            return Err(self.refuse(self.path, limits::BUILD_REFUSAL.to_string()));
        }
        self.reading.budget.set(left - cost);
        Ok(())
    }

    /// The reader of a value inside this one.
    fn child<'b>(&'b self, path: Path<'b>) -> Strict<'b> {
        Strict {
            path,
            depth: self.depth + 1,
            reading: self.reading,
        }
    }

    /// Refuses a mapping or list inside [`MAX_DEPTH`] others.
    fn enter<E: de::Error>(&self) -> Result<(), E> {
        self.spend(0)?;
        if self.depth >= MAX_DEPTH {
            return Err(self.refuse(
                self.path,
                format!("mappings and lists nested more than {MAX_DEPTH} deep"),
            ));
        }
        Ok(())
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

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        self.spend(0)?;
        Number::deserialize(de::value::I128Deserializer::new(v)).map(Value::Number)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        self.spend(0)?;
        Number::deserialize(de::value::U128Deserializer::new(v)).map(Value::Number)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend(0)?;
        match Number::from_f64(v) {
            Some(n) => Ok(Value::Number(n)),
            None if self.reading.lenient => Ok(Value::Null),
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

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend(v.len())?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.spend(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.spend(0)?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child(Path::Index(&self.path, out.len())))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key_seed(Key {
            outer: self,
            map: &map,
        })? {
            let value = access.next_value_seed(self.child(Path::Key(&self.path, &key)))?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }

    /// A YAML tag of the document's own (`!name`): Kubernetes has none.
    /// The lenient reading, which only names the object, reads past it.
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, value) = data.variant::<String>()?;
        if self.reading.lenient {
            return de::VariantAccess::newtype_variant_seed(value, self);
        }
        Err(self.refuse(
            self.path,
            format!(
                "the YAML tag {} is not supported",
                limits::quoted(&format!("!{tag}"))
            ),
        ))
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
        self.outer.spend(k.len())?;
        if self.map.contains_key(k) && !self.outer.reading.lenient {
            let path = Path::Key(&self.outer.path, k);
            return Err(self
                .outer
                .refuse(path, format!("duplicate field {k:?}", k = Q(k))));
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
                out.push_str(&limits::short(k));
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Reads one JSON text strictly.
pub(crate) fn json(file: &str, text: &str) -> Option<Result<Document, Diagnostic>> {
    let reading = Reading::new(text, false);
    let seed = Strict::root(&reading);
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
            Some(Err(match reading.refused.take() {
                Some(r) => refusal_diagnostic(file, line, r, serde_json::from_str(text).ok()),
                None => syntax_error(
                    file,
                    line,
                    format!("JSON syntax error: {}", limits::clip(&e.to_string())),
                ),
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
    // Checked before parsing: the parser's own cost grows with the nesting
    // of flow collections, and it reads a tag outside the core schema as
    // plain text.
    if let Err(e) = scan::check(chunk) {
        return Some(Err(syntax_error(file, Some(first + e.line), e.message)));
    }
    let reading = Reading::new(chunk, false);
    match Strict::root(&reading).deserialize(serde_norway::Deserializer::from_str(chunk)) {
        Ok(Value::Null) => None,
        Ok(value) => Some(Ok(Document {
            line: Some(line),
            value,
            bytes: chunk.len(),
        })),
        Err(e) => {
            let at = e.location().map_or(line, |l| first + l.line());
            if let Some(r) = reading.refused.take() {
                let reading = Reading::new(chunk, true);
                let lenient = Strict::root(&reading)
                    .deserialize(serde_norway::Deserializer::from_str(chunk))
                    .ok();
                return Some(Err(refusal_diagnostic(file, Some(at), r, lenient)));
            }
            Some(Err(syntax_error(
                file,
                Some(at),
                format!(
                    "YAML syntax error: {}",
                    file_positions(&e.to_string(), first)
                ),
            )))
        }
    }
}

/// A parser message about one document with its positions ("at line 3
/// column 5") made the file's, by adding the lines before the document.
/// Cheaper than parsing the document again at its place in the file,
/// which made a file of many broken documents quadratic.
fn file_positions(message: &str, first: usize) -> String {
    let message = limits::clip(message);
    let mut out = String::with_capacity(message.len());
    let mut rest = message.as_str();
    while let Some(i) = rest.find(" at line ") {
        let (head, tail) = rest.split_at(i + " at line ".len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        match tail[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + first).to_string()),
            Err(_) => out.push_str(&tail[..digits]),
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}
