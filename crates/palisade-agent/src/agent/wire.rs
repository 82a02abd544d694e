//! The node's wiring as the agent applies it: local pods resolved against
//! the node's facts ([`crate::wiring`]), their sets patched with each
//! sync, bridged pods poked until their port is known, and the bridge
//! table.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use palisade_k8s::Object;
use palisade_nft::{Ruleset, Wiring};
use tracing::{info, warn};

use super::Agent;
use crate::delta::{self, SetDelta};
use crate::wiring::LocalPod;
use crate::{Backend, Error};

/// Deletes stale neighbour entries `(interface, address)`, then sends
/// one datagram to each address (see [`Agent::set_poke`]).
pub type Poke = Box<dyn FnMut(&[(u32, IpAddr)], &[IpAddr]) + Send>;

/// Element changes that bring the table's wiring sets to `w`; `None` when
/// the table lacks one of them (it is then replaced by the full path).
pub(super) fn wiring_deltas(applied: &Ruleset, w: &Wiring) -> Option<Vec<SetDelta>> {
    let mut out = Vec::new();
    for (name, want) in w.inet_elements() {
        out.extend(delta::set_delta(name, &applied.set(name)?.elements, &want));
    }
    Some(out)
}

impl<B: Backend> Agent<B> {
    /// Sends datagrams to bridged pods whose port is not known yet (see
    /// [`crate::wiring`]), so the node learns it.
    pub fn set_poke(&mut self, poke: Poke) {
        self.poke = Some(poke);
    }

    /// The local pods as the store has them, resolved against the node's
    /// facts.
    pub(super) fn rewire(&mut self) {
        // Without new facts or local pods nothing can have changed (a
        // bridged pod not bound yet is asked again when the facts change).
        if !std::mem::take(&mut self.wiring_stale) {
            return;
        }
        let mut pods: BTreeMap<String, LocalPod> = BTreeMap::new();
        for o in self.store.objects() {
            if let Object::Pod(p) = &o.value {
                if p.node.as_deref() == Some(self.cfg.node.as_str())
                    && !p.host_network
                    && p.is_endpoint()
                {
                    pods.insert(p.key(), LocalPod::of(p));
                }
            }
        }
        let pods: Vec<LocalPod> = pods.into_values().collect();
        let r = self.resolver.resolve(&self.facts, &pods);
        let unwired: Vec<String> = r.unwired().iter().map(|s| s.to_string()).collect();
        if unwired != self.health_mut().unwired {
            if !unwired.is_empty() {
                info!(
                    "{} local pods have no interface on this node yet; their packets are dropped until they do: {}",
                    unwired.len(),
                    unwired.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                );
            }
            self.metrics.pods_unwired.set(unwired.len() as i64);
            self.health_mut().unwired = unwired;
        }
        let now = Instant::now();
        // A new or vanished bridge port may be where an address went:
        // worth asking again at once.
        if r.wiring.bridge.ports != self.wiring.bridge.ports {
            self.poked.clear();
        }
        self.poked.retain(|ip, _| r.to_poke.contains(ip));
        let due: Vec<IpAddr> = r
            .to_poke
            .iter()
            .copied()
            .filter(|ip| {
                self.poked
                    .get(ip)
                    .is_none_or(|t| now.duration_since(*t) > Duration::from_secs(5))
            })
            .collect();
        if let (Some(poke), false) = (self.poke.as_mut(), due.is_empty()) {
            let stale: Vec<(u32, IpAddr)> = r
                .stale
                .iter()
                .copied()
                .filter(|(_, ip)| due.contains(ip))
                .collect();
            poke(&stale, &due);
            for ip in due {
                self.poked.insert(ip, now);
            }
        }
        self.wiring = r.wiring;
    }

    /// Brings the bridge table (bridged pods' per-port check) to the
    /// wiring: replaced whole when it changes (it holds a few elements per
    /// local pod), removed when no pod is bridged.
    pub(super) fn sync_bridge(&mut self) -> Result<(), Error> {
        if self.bridge.as_ref() == Some(&self.wiring.bridge) {
            return Ok(());
        }
        let want = palisade_nft::compile_bridge(&self.wiring.bridge);
        let text = palisade_nft::bridge_text(want.as_ref());
        match self.backend.apply_bridge(&text) {
            Ok(()) => {
                self.bridge = Some(self.wiring.bridge.clone());
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "the bridge table was not updated; retrying");
                self.metrics.error("apply");
                self.bridge = None;
                Err(Error::Apply(e.to_string()))
            }
        }
    }
}
