//! Palisade's benchmarks and the synthetic cluster generator they share
//! with the property tests of the other crates.
//!
//! Kept apart from the library crates so that none of them carries
//! measurement code: `palisade bench`, `palisade agent bench` and
//! `palisade lab bench` call the drivers here, and tests take this crate as
//! a dev-dependency for [`synth`].
//!
//! The agent and lab drivers pull in those edge crates (an async runtime,
//! datastore clients, netlink); the features `agent` and `lab` (both on by
//! default) let the pure crates' tests use [`synth`] without building them.

pub mod engine;
pub mod manifests;
pub mod synth;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "lab")]
pub mod lab;
