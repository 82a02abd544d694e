//! What one YAML document is refused for before it is parsed, found in one
//! pass over its text: flow collections nested too deep (the parser's time
//! per token grows with their nesting, see `limits::MAX_FLOW_DEPTH`) and
//! tags the reading cannot honour. The parser resolves `!!binary`,
//! `!!timestamp`, `!!set` and the like to a plain string or collection,
//! so `name: !!binary bnM=` would silently read as the text `bnM=`.

use crate::limits::{self, MAX_FLOW_DEPTH};

/// Why a document is refused, on which of its lines (1-based).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub line: usize,
    pub message: String,
}

/// The core schema's tags: the reading gives each its meaning.
const CORE_TAGS: &[&str] = &["str", "int", "bool", "float", "null", "seq", "map"];

/// Checks one document's text.
///
/// The flow depth counted is never below the parser's: every `[` and `{`
/// counts, wherever it is, and a `]` or `}` is left uncounted inside what
/// may be a quoted scalar or a comment (a closer there would otherwise hide
/// real nesting: `{a: "}", b: {a: "}", ...`). A quoted scalar can only begin
/// where a node begins, after `[`, `{`, `,`, `:`, `?` or `- ` (and any tag
/// or anchor), which is where one is looked for; mistaking text for a
/// quoted scalar can only make the count too high.
pub(crate) fn check(text: &str) -> Result<(), Refused> {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    // Whether the next token begins a node (so a quote there opens a
    // quoted scalar), carried across whitespace, newlines and comments.
    let mut node_start = true;
    for (n, l) in text.split_inclusive('\n').enumerate() {
        let line = n + 1;
        if l.starts_with("%TAG") {
            return Err(Refused {
                line,
                message: "%TAG directives are not supported (Kubernetes manifests use no tags)"
                    .into(),
            });
        }
        // Outside flow collections a quoted scalar may span lines too, but
        // a stray quote in block text (`msg: it"s`) must not hide closers
        // for the rest of the document.
        if depth == 0 {
            quote = None;
            node_start = true;
        }
        let bytes = l.as_bytes();
        // A document marker, which a tag may follow (`--- !!omap`).
        let mut i = if l.starts_with("---") {
            node_start = true;
            3
        } else {
            0
        };
        while i < bytes.len() {
            let b = bytes[i];
            if let Some(q) = quote {
                match b {
                    b'\\' if q == b'"' => i += 1,
                    b'\'' if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                    _ if b == q => {
                        quote = None;
                        node_start = false;
                    }
                    b'[' | b'{' => depth = opened(depth, line)?,
                    _ => {}
                }
                i += 1;
                continue;
            }
            match b {
                b'[' | b'{' => {
                    depth = opened(depth, line)?;
                    node_start = true;
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    node_start = false;
                }
                b',' | b':' | b'?' => node_start = true,
                b'-' if bytes.get(i + 1).is_none_or(|c| c.is_ascii_whitespace()) => {
                    node_start = true
                }
                b'"' | b'\'' if node_start => quote = Some(b),
                b'#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => {
                    // A comment: only openers count in it.
                    for &c in &bytes[i..] {
                        if matches!(c, b'[' | b'{') {
                            depth = opened(depth, line)?;
                        }
                    }
                    break;
                }
                b'!' if node_start => {
                    if tag_at(bytes, i) {
                        tag(&l[i..], line)?;
                    }
                    // A tag keeps the node's start: skip to its end.
                    while i + 1 < bytes.len() && !is_break(bytes[i + 1]) {
                        i += 1;
                    }
                }
                b'&' if node_start => {
                    while i + 1 < bytes.len() && !is_break(bytes[i + 1]) {
                        i += 1;
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ => node_start = false,
            }
            i += 1;
        }
    }
    Ok(())
}

fn is_break(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b',' | b'[' | b']' | b'{' | b'}')
}

/// One more flow collection open, refused past the limit.
fn opened(depth: usize, line: usize) -> Result<usize, Refused> {
    if depth >= MAX_FLOW_DEPTH {
        return Err(Refused {
            line,
            message: format!(
                "[ and {{ nested more than {MAX_FLOW_DEPTH} deep (an opening bracket inside a string or comment counts too)"
            ),
        });
    }
    Ok(depth + 1)
}

/// Refuses the tag `t` starts with, unless it is one of the core schema's
/// or a local `!name` (the reading refuses those itself, naming the field).
fn tag(t: &str, line: usize) -> Result<(), Refused> {
    let end = if t.starts_with("!<") {
        t.find('>').map_or(t.len(), |e| e + 1)
    } else {
        t.find(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '{' | '}'))
            .unwrap_or(t.len())
    };
    let tag = &t[..end];
    let refused = match tag.strip_prefix("!!") {
        Some(name) => !CORE_TAGS.contains(&name),
        // Verbatim (`!<...>`) and named handles (`!e!name`).
        None => tag.starts_with("!<") || tag[1..].contains('!'),
    };
    if refused {
        return Err(Refused {
            line,
            message: format!(
                "the YAML tag {} is not supported (Kubernetes manifests use no tags)",
                limits::quoted(tag)
            ),
        });
    }
    Ok(())
}

/// Whether the `!` at `i` can begin a node's tag: it follows the start of
/// the line, a flow indicator, or whitespace after an indicator, an anchor
/// or a document marker. A `!` inside a plain scalar (`a: hi !x`) does not.
fn tag_at(line: &[u8], i: usize) -> bool {
    let before = &line[..i];
    match before.last() {
        None => true,
        Some(b'[' | b'{' | b',') => true,
        Some(b' ' | b'\t') => {
            let trimmed = before.trim_ascii_end();
            let token_start = trimmed
                .iter()
                .rposition(|b| b.is_ascii_whitespace())
                .map_or(0, |p| p + 1);
            let token = &trimmed[token_start..];
            match token.last() {
                None => true,
                Some(b':' | b'-' | b'?' | b',' | b'[' | b'{') => true,
                _ => token.starts_with(b"&") || token == b"---",
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Option<(usize, String)> {
        check(text).err().map(|r| (r.line, r.message))
    }

    #[test]
    fn flow_nesting_is_bounded_at_the_limit() {
        let at = format!(
            "a: {}{}\n",
            "[".repeat(MAX_FLOW_DEPTH),
            "]".repeat(MAX_FLOW_DEPTH)
        );
        assert_eq!(refused(&at), None);
        let past = format!("b: 1\na: {}\n", "{a: ".repeat(MAX_FLOW_DEPTH + 1));
        assert_eq!(
            refused(&past),
            Some((
                2,
                "[ and { nested more than 100 deep (an opening bracket inside a string or comment counts too)"
                    .to_string()
            ))
        );
        // Closed collections do not add up.
        let many = "a: [[1]]\n".repeat(10 * MAX_FLOW_DEPTH);
        assert_eq!(refused(&many), None);
    }

    #[test]
    fn closers_inside_quotes_and_comments_do_not_hide_nesting() {
        let deep = |unit: &str| unit.repeat(MAX_FLOW_DEPTH + 1);
        for hostile in [
            deep("{a: \"}\", b: "),
            deep("{a: '}', b: "),
            deep("{a: 'it''s }', b: "),
            deep("{a: \"\\\"}\", b: "),
            deep("{\"a\":\"}\",\"b\":"),
            deep("[\"]\", "),
            deep("{a: !!str \"}\", b: "),
            deep("{a: &x \"}\", b: "),
            deep("{? \"}\" : x, b: "),
            deep("{a:\n  \"}\", b: "),
            deep("[ # ]\n"),
            deep("[a, # ]]]\n"),
        ] {
            let text = format!("x: {hostile}\n");
            assert!(refused(&text).is_some(), "{hostile:?}");
        }
        // Quotes and closers in block text and plain scalars stay text.
        for ok in [
            "msg: it\"s ]]]]\nb: [1]\n",
            "a: don't\nb: {c: [1]}\n",
            "script: |\n  echo \"a: \"b\n  ]]]\nc: {d: 1}\n",
            "a: {b: \"x]\", c: 'y}'}\n",
            "a: [x, y] # ]]]\n",
        ] {
            assert_eq!(refused(ok), None, "{ok:?}");
        }
        let many = "a: {b: \"it's\", c: [x]}\n".repeat(10 * MAX_FLOW_DEPTH);
        assert_eq!(refused(&many), None);
    }

    #[test]
    fn tags_outside_the_core_schema_are_refused() {
        let message = |t: &str| {
            format!("the YAML tag {t:?} is not supported (Kubernetes manifests use no tags)")
        };
        for (text, line, tag) in [
            ("name: !!binary bnM=\n", 1, "!!binary"),
            ("a: 1\nb: - !!timestamp 2001-12-14\n", 2, "!!timestamp"),
            ("a: [x, !!set {a}]\n", 1, "!!set"),
            ("a: &x !!binary bnM=\n", 1, "!!binary"),
            ("--- !!omap\n", 1, "!!omap"),
            (
                "a: !<tag:yaml.org,2002:binary> bnM=\n",
                1,
                "!<tag:yaml.org,2002:binary>",
            ),
        ] {
            assert_eq!(refused(text), Some((line, message(tag))), "{text}");
        }
        assert_eq!(
            refused("%TAG !e! tag:yaml.org,2002:\n---\na: !e!binary x\n"),
            Some((
                1,
                "%TAG directives are not supported (Kubernetes manifests use no tags)".into()
            ))
        );
        for ok in [
            "a: !!str 80\n",
            "a: !!int \"80\"\n",
            "a: hi !!binary\n",
            "a: wow!\n",
            "a: !local x\n",
        ] {
            assert_eq!(refused(ok), None, "{ok}");
        }
    }
}
