//! Prints the ruleset of one node of the large synthetic cluster:
//! `cargo run --release -p palisade-bench --example synth_ruleset -- node1`
use palisade_bench::synth::{self, Params};
use palisade_engine::Engine;

fn main() {
    let node = std::env::args().nth(1).unwrap_or_else(|| "node1".into());
    let engine = Engine::new(synth::cluster(&Params::large()));
    let local = palisade_nft::Local::Node(node.clone());
    let wiring = palisade_nft::named_wiring(&engine, &local, palisade_nft::interface_name);
    match palisade_nft::compile(&engine, Some(&node), &wiring) {
        Ok(r) => print!("{}", r.to_nft_text()),
        Err(e) => eprintln!("{e}"),
    }
}
