//! Reading the kernel's table back (`nft -j list table inet palisade`):
//! the parsing is palisade-nft's ([`palisade_nft::syntax::KernelTable`]).
//! What the agent does with it: a table whose structure is the desired
//! one ([`KernelTable::as_ruleset`]) is patched with element changes;
//! anything else is replaced.

pub use palisade_nft::syntax::KernelTable;
