//! What one input may cost. Decoding a YAML document into a tree takes
//! many times its size in memory, so a file or object past these limits is
//! refused with an error before it is parsed, never half-read.

/// Largest manifest file (or etcd value, or API object) read, in bytes.
/// Covers 50 MB of pods in one file; a larger file is refused whole.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
