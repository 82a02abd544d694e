//! What users write: `namespace/pod` or an address for an endpoint, a pair
//! of them for a flow, `80`, `80/TCP` or `53/udp` for a port.

use std::net::IpAddr;
use std::str::FromStr;

use palisade_model::Protocol;

use super::{Endpoint, Flow};
use crate::{Engine, Error, PodId, PortProto};

impl Engine {
    /// Resolves `namespace/name`, `namespace/name[Kind]` (a workload's pod
    /// template) or an IP address to an endpoint.
    pub fn endpoint(&self, s: &str) -> Result<Endpoint, Error> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(self.endpoint_for_ip(ip));
        }
        if !s.contains('/') {
            return Err(Error::NotAnEndpoint(s.to_string()));
        }
        let i = self.pod_named(s)?;
        if self.index.identity_of(PodId::new(i)).is_none() {
            let p = &self.cluster.pods[i];
            return Err(Error::NotServing {
                pod: s.to_string(),
                has_ip: !p.ips.is_empty(),
                phase: p.phase().unwrap_or(palisade_model::PodPhase::Unknown),
            });
        }
        Ok(Endpoint::Pod(i))
    }

    /// An address is a pod when an endpoint pod (not host-network) holds it.
    pub fn endpoint_for_ip(&self, ip: IpAddr) -> Endpoint {
        match self.index.pod_at(&ip) {
            Some(p) => Endpoint::Pod(p.index()),
            None => Endpoint::Ip(ip),
        }
    }

    /// Resolves `SRC DST` as written by a user: `namespace/pod` or an
    /// address. An address fixes the family and, for a pod with several
    /// addresses, which one the flow uses.
    pub fn flow_between(
        &self,
        src: &str,
        dst: &str,
        protocol: Protocol,
        port: u16,
    ) -> Result<Flow, Error> {
        let s = self.endpoint(src)?;
        let d = self.endpoint(dst)?;
        let (sip, dip) = (src.parse::<IpAddr>().ok(), dst.parse::<IpAddr>().ok());
        self.flow_at((s, sip), (d, dip), protocol, port)
    }

    /// The flow between two addresses, as a packet shows it: an address an
    /// endpoint pod holds is that pod (at that address), any other is
    /// outside the pod network.
    pub fn flow_between_addresses(
        &self,
        src: IpAddr,
        dst: IpAddr,
        protocol: Protocol,
        port: u16,
    ) -> Result<Flow, Error> {
        let (s, d) = (self.endpoint_for_ip(src), self.endpoint_for_ip(dst));
        self.flow_at((s, Some(src)), (d, Some(dst)), protocol, port)
    }

    /// A flow between resolved endpoints, at the addresses given for them
    /// (the family of either fixes the family of both).
    fn flow_at(
        &self,
        (s, sip): (Endpoint, Option<IpAddr>),
        (d, dip): (Endpoint, Option<IpAddr>),
        protocol: Protocol,
        port: u16,
    ) -> Result<Flow, Error> {
        let Some(v4) = sip.or(dip).map(|ip| ip.is_ipv4()) else {
            return self.flow(s, d, protocol, port);
        };
        if let (Some(a), Some(b)) = (sip, dip) {
            if a.is_ipv4() != b.is_ipv4() {
                return Err(Error::MixedFamilies {
                    src: a.to_string(),
                    dst: b.to_string(),
                });
            }
        }
        let pick = |e: Endpoint, explicit: Option<IpAddr>| -> Result<Option<IpAddr>, Error> {
            match explicit {
                Some(ip) => Ok(Some(ip)),
                None => self
                    .address_in(e, v4)
                    .ok_or_else(|| Error::NoAddressOfFamily {
                        endpoint: self.describe(e),
                        family: if v4 { "IPv4" } else { "IPv6" },
                    }),
            }
        };
        let (src_ip, dst_ip) = (pick(s, sip)?, pick(d, dip)?);
        let first = |e: Endpoint, ip: Option<IpAddr>| match ip {
            None => true,
            Some(ip) => self.ips_of(&e).iter().find(|a| a.is_ipv4() == v4) == Some(&ip),
        };
        Ok(Flow {
            src: s,
            dst: d,
            src_ip,
            dst_ip,
            protocol,
            port,
            primary: (first(s, src_ip), first(d, dst_ip)),
            resolved: self.resolve(s, d),
        })
    }
}

impl FromStr for PortProto {
    type Err = Error;
    /// `80`, `80/TCP`, `53/udp`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let (port, proto) = match s.split_once('/') {
            Some((p, proto)) => (p, proto.parse::<Protocol>().map_err(Error::Protocol)?),
            None => (s, Protocol::Tcp),
        };
        let port: u16 =
            port.trim()
                .parse()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| Error::InvalidPort {
                    port: port.to_string(),
                    text: s.to_string(),
                })?;
        Ok(PortProto {
            port,
            protocol: proto,
        })
    }
}
