//! Building flows between endpoints: which addresses a flow uses, and the
//! identities it carries so that a verdict need not look them up again.

use std::net::IpAddr;

use palisade_model::Protocol;

use super::{Endpoint, Flow, Resolved};
use crate::{Engine, Error, IdentityId, PodId};

impl Engine {
    pub(crate) fn ips_of<'a>(&'a self, e: &'a Endpoint) -> &'a [IpAddr] {
        match *e {
            Endpoint::Pod(i) => &self.cluster.pods[i].ips,
            Endpoint::Ip(ref ip) => std::slice::from_ref(ip),
        }
    }

    /// Whether the endpoint is a workload's pod template (no address).
    pub(super) fn is_unaddressed(&self, e: Endpoint) -> bool {
        matches!(e, Endpoint::Pod(i) if self.cluster.pods[i].template_kind().is_some())
    }

    /// The endpoint's address in a family: `Some(None)` for a template,
    /// which fits any family with no address; `None` when it has no
    /// address of that family.
    pub(super) fn address_in(&self, e: Endpoint, v4: bool) -> Option<Option<IpAddr>> {
        if self.is_unaddressed(e) {
            return Some(None);
        }
        self.ips_of(&e)
            .iter()
            .find(|ip| ip.is_ipv4() == v4)
            .map(|ip| Some(*ip))
    }

    /// Builds a flow, choosing the addresses: the family of an explicit
    /// address, else IPv4 when both pods have it, else IPv6. A template
    /// endpoint fits any family (it has no address).
    pub fn flow(
        &self,
        src: Endpoint,
        dst: Endpoint,
        protocol: Protocol,
        port: u16,
    ) -> Result<Flow, Error> {
        let families: &[bool] = match (src, dst) {
            (Endpoint::Ip(a), _) | (_, Endpoint::Ip(a)) => {
                if a.is_ipv4() {
                    &[true]
                } else {
                    &[false]
                }
            }
            _ => &[true, false],
        };
        for &v4 in families {
            if let Some(f) = self.flow_in_family(src, dst, protocol, port, v4) {
                return Ok(f);
            }
        }
        Err(Error::NoCommonFamily {
            src: self.describe(src),
            dst: self.describe(dst),
        })
    }

    /// Like [`Engine::flow`] but over one address family (`true`: IPv4).
    pub fn flow_in_family(
        &self,
        src: Endpoint,
        dst: Endpoint,
        protocol: Protocol,
        port: u16,
        v4: bool,
    ) -> Option<Flow> {
        let s = self.address_in(src, v4)?;
        let d = self.address_in(dst, v4)?;
        Some(Flow {
            src,
            dst,
            src_ip: s,
            dst_ip: d,
            protocol,
            port,
            primary: (true, true),
            resolved: self.resolve(src, dst),
        })
    }

    pub(crate) fn resolve(&self, src: Endpoint, dst: Endpoint) -> Resolved {
        Resolved {
            stamp: self.stamp,
            src: self.endpoint_identity(src),
            dst: self.endpoint_identity(dst),
        }
    }

    #[inline(always)]
    pub(super) fn endpoint_identity(&self, e: Endpoint) -> Option<IdentityId> {
        match e {
            Endpoint::Pod(p) => self.index.identity_of(PodId::new(p)),
            Endpoint::Ip(_) => None,
        }
    }

    /// The identities of the flow's source and destination pods.
    #[inline(always)]
    pub(super) fn identities_of(&self, flow: &Flow) -> (Option<IdentityId>, Option<IdentityId>) {
        let r = &flow.resolved;
        if r.stamp == self.stamp {
            (r.src, r.dst)
        } else {
            (
                self.endpoint_identity(flow.src),
                self.endpoint_identity(flow.dst),
            )
        }
    }
}
