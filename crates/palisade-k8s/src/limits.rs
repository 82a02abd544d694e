//! What one input may cost. Decoding a YAML document into a tree takes
//! many times its size in memory, so a file past its limit is refused with
//! an error before it is parsed, and a document past its limit is refused
//! whole: never half-read. The file limit bounds the memory, since a `List`
//! may take the whole file anyway; the object limit keeps out what no
//! cluster could hold.

/// Largest manifest file (or etcd value, or API object) read, in bytes.
/// Covers 50 MB of pods in one file; a larger file is refused whole.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Largest document that is not a `List`, in bytes: the Kubernetes API
/// server refuses a request body over 3 MiB, so no real object is larger.
/// A `List` may take the whole file, since `kubectl get -o yaml` prints a
/// whole cluster as one.
pub const MAX_OBJECT_BYTES: u64 = 3 << 20;

/// Deepest nesting of values (mappings and lists) in one document. Real
/// objects nest about 15 deep (a List adds 2, a CRD's schema perhaps 40);
/// the YAML and JSON readers stop at 128 with a less helpful message.
pub const MAX_DEPTH: usize = 100;

/// Deepest nesting of YAML flow collections (`[`, `{`), counted on the
/// text before it is parsed: the YAML parser's time per token grows with
/// that nesting, so `{a: ` repeated 100,000 times took minutes. The count
/// is never below the parser's (`scan.rs` says how); it is the same as
/// [`MAX_DEPTH`], which a real nesting that deep would meet anyway.
pub const MAX_FLOW_DEPTH: usize = MAX_DEPTH;

/// What one document may build beyond twice its size, in values and bytes
/// of text: see [`build_budget`].
pub const BUILD_SLACK: u64 = 64 << 10;

/// The values one document of `bytes` may build, each counting 1 plus the
/// bytes of its text (keys included). A document without aliases builds at
/// most one value per byte and at most its own text, so it always fits;
/// YAML aliases can make 1 MiB stand for terabytes (6.1 GB were allocated
/// before this limit), and past it the document is refused.
pub fn build_budget(bytes: usize) -> u64 {
    2 * bytes as u64 + BUILD_SLACK
}

pub(crate) const BUILD_REFUSAL: &str = "the document builds more values than its size allows (twice its size plus 64 KiB, each value counting 1 plus the bytes of its text): its YAML aliases expand it too far";

/// Longest user-supplied text quoted whole in a message, in characters;
/// longer text is cut there and its size given.
pub const MAX_QUOTED_CHARS: usize = 64;

/// Longest message from a parser shown whole, in characters.
pub const MAX_MESSAGE_CHARS: usize = 400;

/// User-supplied text as a message quotes it: `"abc"`, escaped as Rust
/// debug strings are (so control characters cannot reach a terminal), and
/// cut after [`MAX_QUOTED_CHARS`] characters: `"vvvv…" (10485760 bytes)`.
pub fn quoted(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => {
            let head = format!("{:?}", &s[..cut]);
            format!("{}…\" ({} bytes)", &head[..head.len() - 1], s.len())
        }
    }
}

/// A name as a message writes it unquoted (`Pod ns/name`): whole if it
/// could be a valid name (253 bytes), else cut like [`quoted`] text.
pub(crate) fn short(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) if s.len() > 253 => format!("{}… ({} bytes)", &s[..cut], s.len()).into(),
        _ => s.into(),
    }
}

/// User-supplied text whose `Debug` is [`quoted`], for messages that quote
/// with `{x:?}`.
pub struct Q<'a>(pub &'a str);

impl std::fmt::Debug for Q<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&quoted(self.0))
    }
}

/// A message cut after [`MAX_MESSAGE_CHARS`] characters (parser messages
/// may quote the input).
pub(crate) fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// The limits one decoding applies; [`Default`] is the constants above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub file_bytes: u64,
    pub object_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            file_bytes: MAX_FILE_BYTES,
            object_bytes: MAX_OBJECT_BYTES,
        }
    }
}

/// A size as the limit messages write it: `200.0 MiB`, `64 MiB`, `12 bytes`.
pub(crate) fn size(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    let (unit, name) = match bytes {
        b if b >= MIB => (MIB, "MiB"),
        b if b >= KIB => (KIB, "KiB"),
        _ => return format!("{bytes} bytes"),
    };
    let whole = bytes / unit;
    if whole * unit == bytes {
        format!("{whole} {name}")
    } else {
        format!("{:.1} {name}", bytes as f64 / unit as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(12), "12 bytes");
        assert_eq!(size(3 << 20), "3 MiB");
        assert_eq!(size(200 << 20), "200 MiB");
        assert_eq!(size((200 << 20) + (1 << 19)), "200.5 MiB");
        assert_eq!(size(1536), "1.5 KiB");
    }

    #[test]
    fn parser_messages_are_cut_at_max_message_chars() {
        let at = "m".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(clip(&at), at);
        let past = format!("{at}é");
        assert_eq!(clip(&past), format!("{at}… (402 bytes)"));
    }

    #[test]
    fn long_names_are_cut_only_past_a_valid_names_length() {
        let at = "n".repeat(253);
        assert_eq!(short(&at), at);
        assert_eq!(
            short(&"n".repeat(254)),
            format!("{}… (254 bytes)", "n".repeat(MAX_QUOTED_CHARS))
        );
    }
}
