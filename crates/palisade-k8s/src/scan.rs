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
pub(crate) fn check(text: &str) -> Result<(), Refused> {
    let mut depth = 0usize;
    for (n, l) in text.split_inclusive('\n').enumerate() {
        let line = n + 1;
        if l.starts_with("%TAG") {
            return Err(Refused {
                line,
                message: "%TAG directives are not supported (Kubernetes manifests use no tags)"
                    .into(),
            });
        }
        let bytes = l.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(Refused {
                            line,
                            message: format!(
                                "[ and {{ nested more than {MAX_FLOW_DEPTH} deep (brackets inside strings and comments count too)"
                            ),
                        });
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'!' if node_start(bytes, i) => tag(&l[i..], line)?,
                _ => {}
            }
        }
    }
    Ok(())
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
fn node_start(line: &[u8], i: usize) -> bool {
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
                "[ and { nested more than 100 deep (brackets inside strings and comments count too)"
                    .to_string()
            ))
        );
        // Closed collections do not add up.
        let many = "a: [[1]]\n".repeat(10 * MAX_FLOW_DEPTH);
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
