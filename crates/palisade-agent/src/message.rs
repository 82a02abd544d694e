//! Errors as one sentence for people (`/healthz`, logs): the messages of
//! an error's source chain, each said once.
//!
//! Client libraries nest errors several deep, and some print their inner
//! errors with `{:?}` (`Transport(ConnectError(… Os { code: 111 …`). The
//! `Display` text of each link, without the parts an outer link already
//! said, reads as a sentence: `error trying to connect: tcp connect error:
//! Connection refused (os error 111)`.

use std::error::Error;

/// `e` and its sources as one line.
pub fn sentence(e: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        let text = text.trim();
        // A link whose text carries a Debug rendering of its source adds
        // nothing readable: its source's own text follows.
        let debug = ["Os {", "Error(", "Error {", "Kind("]
            .iter()
            .any(|d| text.contains(d));
        if !text.is_empty() && !debug && !parts.iter().any(|p| p.contains(text)) {
            parts.push(text.to_string());
        }
        cur = err.source();
    }
    if parts.is_empty() {
        return e.to_string();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transport error: Transport(ConnectError({:?}))", self.0)
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn Error + 'static>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(self.1.as_ref())
        }
    }

    #[test]
    fn debug_renderings_give_way_to_the_source_text() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = Wrap("cannot reach etcd", Box::new(Outer(io)));
        let s = sentence(&e);
        assert_eq!(s, "cannot reach etcd: connection refused");
        assert!(!s.contains("Os {") && !s.contains("Transport("), "{s}");
    }

    #[test]
    fn a_link_already_said_is_not_repeated() {
        let io = std::io::Error::other("connection reset");
        let e = Wrap("watch failed: connection reset", Box::new(io));
        assert_eq!(sentence(&e), "watch failed: connection reset");
    }
}
