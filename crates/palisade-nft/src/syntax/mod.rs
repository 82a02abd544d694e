//! All of nft's syntax, both ways: rendering a ruleset as `nft -f` text or
//! JSON ([`render`]), rendering element transactions and the agent's table
//! replacement ([`transaction`]), and reading a table back from `nft -j
//! list table` ([`parse`]).

mod parse;
mod render;
mod transaction;

pub use parse::KernelTable;
pub use render::{element_lines, mac_text, parse_mac, ELEMENT_CHUNK};
pub use transaction::{element_transaction, replace_text, STRUCTURE_COMMENT};
