//! Typed ids: what each bare integer of the index stands for, checked by the
//! compiler. Each is a `u32` underneath, so tables of them stay compact and
//! the verdict hot path pays nothing for the type.

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u32);

        impl $name {
            /// The id at position `i` of its table. Tables are far smaller
            /// than `u32::MAX` entries (each entry is an object in memory).
            #[inline(always)]
            pub const fn new(i: usize) -> Self {
                debug_assert!(i <= u32::MAX as usize);
                $name(i as u32)
            }

            /// Its position in its table.
            #[inline(always)]
            pub const fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

id!(
    /// A pod: its position in `Cluster::pods`.
    PodId
);
id!(
    /// An identity: its position in [`crate::Index::identities`].
    IdentityId
);
id!(
    /// A shared identity set, one per distinct selector.
    SetId
);
id!(
    /// An address matcher (ipBlock, networks, node addresses).
    MatcherId
);
id!(
    /// A rule of one direction's classifier: its bit, in evaluation order.
    RuleId
);
