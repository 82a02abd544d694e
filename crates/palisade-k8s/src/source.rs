//! Turning file contents into JSON values, one per YAML document.

use serde_json::Value;

use crate::{Diagnostic, Severity};

/// One parsed document: the 1-based line where its content starts.
pub(crate) struct Document {
    pub line: Option<usize>,
    pub value: Value,
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

pub(crate) fn json(file: &str, text: &str) -> Vec<Result<Document, Diagnostic>> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => {
            if value.is_null() {
                return Vec::new();
            }
            let start = text.len() - text.trim_start().len();
            let line = text[..start].matches('\n').count() + 1;
            vec![Ok(Document {
                line: Some(line),
                value,
            })]
        }
        Err(e) => {
            let line = (e.line() > 0).then_some(e.line());
            vec![Err(syntax_error(
                file,
                line,
                format!("JSON syntax error: {e}"),
            ))]
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
/// syntax error in one document does not hide the others.
pub(crate) fn yaml(file: &str, text: &str) -> Vec<Result<Document, Diagnostic>> {
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

    let mut docs = Vec::new();
    for (first, from, to) in chunks {
        let chunk = &text[from..to];
        let Some(line) = chunk
            .split_inclusive('\n')
            .position(content)
            .map(|p| first + p + 1)
        else {
            continue;
        };
        match serde_norway::from_str::<Value>(chunk) {
            Ok(Value::Null) => {}
            Ok(value) => docs.push(Ok(Document {
                line: Some(line),
                value,
            })),
            Err(_) => {
                // Parse again with the chunk at its place in the file, so the
                // message's positions are the file's.
                let padded = format!("{}{chunk}", "\n".repeat(first));
                let err = serde_norway::from_str::<Value>(&padded).err();
                let (line, msg) = match err {
                    Some(e) => (e.location().map(|l| l.line()), e.to_string()),
                    None => (Some(line), "invalid document".to_string()),
                };
                docs.push(Err(syntax_error(
                    file,
                    line,
                    format!("YAML syntax error: {msg}"),
                )));
            }
        }
    }
    docs
}
