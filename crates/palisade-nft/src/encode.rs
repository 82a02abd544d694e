//! The byte encoding that identity marks, policy-group ids and the
//! structure hash are computed from.
//!
//! These numbers are written into the kernel and compared across agent
//! restarts and upgrades, so they must not depend on how the compiler
//! happens to hash or print a type: the standard library's `Hash` impls
//! and `Debug` text may change between toolchains, and an agent built with
//! another one would then rewrite every node's table. Every key is instead
//! written out field by field: integers little-endian, `bool` as one byte,
//! strings and sequences prefixed with their length (`u32`), enum variants
//! with a tag byte, the whole preceded by [`FORMAT_VERSION`]. Changing
//! anything here renumbers every table once: bump the version, and update
//! the golden values in the tests below on purpose.

use std::collections::BTreeMap;
use std::net::IpAddr;

use palisade_engine::index::AddressMatcher;
use palisade_model::{ContainerPort, IpBlock, IpNet, Protocol};

/// The version of this encoding, the first byte of every encoded key.
pub const FORMAT_VERSION: u8 = 1;

/// Collects the bytes of one encoded key.
#[derive(Debug)]
pub struct Encoder {
    bytes: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder that has written the format version.
    pub fn new() -> Encoder {
        Encoder {
            bytes: vec![FORMAT_VERSION],
        }
    }

    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// A length prefix. Keys are far below 4 GiB; saturating keeps the
    /// encoding total without a panic path.
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    pub fn str(&mut self, s: &str) {
        self.len(s.len());
        self.bytes.extend_from_slice(s.as_bytes());
    }

    /// A sequence: its length, then each item.
    pub fn seq<'a, T: Encode + 'a>(&mut self, items: impl ExactSizeIterator<Item = &'a T>) {
        self.len(items.len());
        for i in items {
            i.encode(self);
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// A value with a fixed, explicit encoding (see the module documentation).
pub trait Encode {
    fn encode(&self, e: &mut Encoder);
}

/// The encoding of `k`, version byte first.
pub fn encoding<K: Encode + ?Sized>(k: &K) -> Vec<u8> {
    let mut e = Encoder::new();
    k.encode(&mut e);
    e.into_bytes()
}

impl<T: Encode + ?Sized> Encode for &T {
    fn encode(&self, e: &mut Encoder) {
        (**self).encode(e);
    }
}

impl Encode for u8 {
    fn encode(&self, e: &mut Encoder) {
        e.u8(*self);
    }
}

impl Encode for u16 {
    fn encode(&self, e: &mut Encoder) {
        e.u16(*self);
    }
}

impl Encode for u32 {
    fn encode(&self, e: &mut Encoder) {
        e.u32(*self);
    }
}

impl Encode for u64 {
    fn encode(&self, e: &mut Encoder) {
        e.u64(*self);
    }
}

/// As `u64`, whatever the platform's width.
impl Encode for usize {
    fn encode(&self, e: &mut Encoder) {
        e.u64(*self as u64);
    }
}

impl Encode for bool {
    fn encode(&self, e: &mut Encoder) {
        e.bool(*self);
    }
}

impl Encode for str {
    fn encode(&self, e: &mut Encoder) {
        e.str(self);
    }
}

impl Encode for String {
    fn encode(&self, e: &mut Encoder) {
        e.str(self);
    }
}

impl Encode for () {
    fn encode(&self, _: &mut Encoder) {}
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, e: &mut Encoder) {
        match self {
            None => e.u8(0),
            Some(v) => {
                e.u8(1);
                v.encode(e);
            }
        }
    }
}

impl<T: Encode> Encode for [T] {
    fn encode(&self, e: &mut Encoder) {
        e.seq(self.iter());
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, e: &mut Encoder) {
        e.seq(self.iter());
    }
}

/// In key order (labels are a `BTreeMap`).
impl<K: Encode, V: Encode> Encode for BTreeMap<K, V> {
    fn encode(&self, e: &mut Encoder) {
        e.len(self.len());
        for (k, v) in self {
            k.encode(e);
            v.encode(e);
        }
    }
}

macro_rules! tuple {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Encode),+> Encode for ($($t,)+) {
            fn encode(&self, e: &mut Encoder) {
                $(self.$i.encode(e);)+
            }
        }
    };
}

tuple!(A 0, B 1);
tuple!(A 0, B 1, C 2);
tuple!(A 0, B 1, C 2, D 3);
tuple!(A 0, B 1, C 2, D 3, F 4);
tuple!(A 0, B 1, C 2, D 3, F 4, G 5);
tuple!(A 0, B 1, C 2, D 3, F 4, G 5, H 6);

/// Family tag (4 or 6), then the address bytes in network order.
impl Encode for IpAddr {
    fn encode(&self, e: &mut Encoder) {
        match self {
            IpAddr::V4(a) => {
                e.u8(4);
                e.bytes.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                e.u8(6);
                e.bytes.extend_from_slice(&a.octets());
            }
        }
    }
}

impl Encode for IpNet {
    fn encode(&self, e: &mut Encoder) {
        self.addr().encode(e);
        e.u8(self.prefix_len());
    }
}

impl Encode for IpBlock {
    fn encode(&self, e: &mut Encoder) {
        self.cidr.encode(e);
        self.except.encode(e);
    }
}

/// The IANA protocol number.
impl Encode for Protocol {
    fn encode(&self, e: &mut Encoder) {
        e.u8(self.number());
    }
}

impl Encode for ContainerPort {
    fn encode(&self, e: &mut Encoder) {
        self.name.encode(e);
        e.u16(self.port);
        self.protocol.encode(e);
    }
}

impl Encode for AddressMatcher {
    fn encode(&self, e: &mut Encoder) {
        match self {
            AddressMatcher::Block(b) => {
                e.u8(0);
                b.encode(e);
            }
            AddressMatcher::Networks(ns) => {
                e.u8(1);
                ns.encode(e);
            }
            AddressMatcher::Nodes(addrs) => {
                e.u8(2);
                addrs.encode(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_is_explicit() {
        assert_eq!(encoding(&()), vec![FORMAT_VERSION]);
        assert_eq!(
            encoding(&(7u8, 0x0102u16, true, "ab")),
            vec![FORMAT_VERSION, 7, 2, 1, 1, 2, 0, 0, 0, b'a', b'b']
        );
        // &str and String encode alike: the full and the incremental
        // compilers build the same keys from either.
        assert_eq!(encoding("x"), encoding(&"x".to_string()));
        assert_eq!(
            encoding(&vec![Some(3u32), None]),
            vec![FORMAT_VERSION, 2, 0, 0, 0, 1, 3, 0, 0, 0, 0]
        );
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(encoding(&ip), vec![FORMAT_VERSION, 4, 10, 0, 0, 1]);
        assert_eq!(encoding(&5usize), encoding(&5u64));
    }
}
