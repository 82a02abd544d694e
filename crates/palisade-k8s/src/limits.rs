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
}
