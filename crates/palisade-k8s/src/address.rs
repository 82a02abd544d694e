//! IP addresses and CIDRs as Kubernetes' strict validation reads them
//! (`k8s.io/apimachinery/pkg/util/validation/ip.go`, strict since 1.33):
//! no leading zeros in an IPv4 octet or a prefix length, and no
//! IPv4-mapped IPv6 address. Both have two readings: `010.0.0.1` is
//! 10.0.0.1 to Go's old parser but 8.0.0.1 to libc's (octal), and
//! `::ffff:10.0.0.1` is IPv4 to some software and IPv6 to other, so a
//! policy written with them could mean one thing to Palisade and another
//! to the cluster.

use std::net::{IpAddr, Ipv4Addr};

use palisade_model::IpNet;

/// Why an address or CIDR is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Not an address at all (nor one with leading zeros).
    Invalid,
    /// An address once read leniently: `010.0.0.1`, `10.0.0.0/08`. No
    /// reading is suggested, since which one was meant is the question.
    LeadingZeros,
    /// `::ffff:a.b.c.d`, with the IPv4 address (or CIDR) it stands for.
    Mapped(String),
}

impl Bad {
    /// The reason, after "`s` is not a valid IP address" or "CIDR".
    pub(crate) fn reason(&self) -> String {
        match self {
            Bad::Invalid => String::new(),
            Bad::LeadingZeros => {
                ": must not have leading 0s (an octet like 010 is 10 to some software and 8 to other)"
                    .to_string()
            }
            Bad::Mapped(v4) => {
                format!(": must not be an IPv4-mapped IPv6 address (write {v4})")
            }
        }
    }
}

/// An IP address, strictly.
pub(crate) fn ip(s: &str) -> Result<IpAddr, Bad> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => Err(Bad::Mapped(v4.to_string())),
            None => Ok(IpAddr::V6(v6)),
        },
        Ok(ip) => Ok(ip),
        Err(_) => Err(match without_leading_zeros(s) {
            Some(fixed) if fixed.parse::<Ipv4Addr>().is_ok() => Bad::LeadingZeros,
            _ => Bad::Invalid,
        }),
    }
}

/// An IPv4 address written with its octets' leading zeros dropped, if it
/// has four decimal octets at all.
fn without_leading_zeros(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 || !parts.iter().all(|p| decimal(p)) {
        return None;
    }
    let trimmed: Vec<&str> = parts.iter().map(|p| trim_zeros(p)).collect();
    Some(trimmed.join("."))
}

fn decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn trim_zeros(s: &str) -> &str {
    let t = s.trim_start_matches('0');
    if t.is_empty() {
        "0"
    } else {
        t
    }
}

/// A CIDR, strictly (host bits are the caller's business); `Ok(None)` for
/// text without a `/`.
pub(crate) fn cidr(s: &str) -> Result<Option<IpNet>, Bad> {
    let Some((addr, len)) = s.split_once('/') else {
        return Ok(None);
    };
    if !decimal(len) {
        return Err(Bad::Invalid);
    }
    let ip = match ip(addr) {
        Ok(ip) => ip,
        Err(Bad::LeadingZeros) => return Err(Bad::LeadingZeros),
        Err(Bad::Mapped(v4)) => {
            // The same addresses as IPv4, where the prefix allows it.
            let len = len.parse::<u8>().map_err(|_| Bad::Invalid)?;
            return Err(match len.checked_sub(96).filter(|&l| l <= 32) {
                Some(l) => Bad::Mapped(format!("{v4}/{l}")),
                None => Bad::Invalid,
            });
        }
        Err(Bad::Invalid) => return Err(Bad::Invalid),
    };
    if len.len() > 1 && len.starts_with('0') {
        return Err(Bad::LeadingZeros);
    }
    let len = len.parse::<u8>().map_err(|_| Bad::Invalid)?;
    IpNet::new(ip, len).map(Some).map_err(|_| Bad::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_strict_kubernetes_validation_reads_them() {
        assert_eq!(ip("10.0.0.1"), Ok("10.0.0.1".parse().unwrap()));
        assert_eq!(ip("2001:db8::1"), Ok("2001:db8::1".parse().unwrap()));
        assert_eq!(ip("0.0.0.0"), Ok("0.0.0.0".parse().unwrap()));
        assert_eq!(ip("010.0.0.1"), Err(Bad::LeadingZeros));
        assert_eq!(ip("10.00.0.01"), Err(Bad::LeadingZeros));
        assert_eq!(ip("::ffff:10.0.0.1"), Err(Bad::Mapped("10.0.0.1".into())));
        assert_eq!(ip("::ffff:a00:1"), Err(Bad::Mapped("10.0.0.1".into())));
        // IPv4-compatible (deprecated, not mapped) and NAT64 stay IPv6.
        assert!(ip("::10.0.0.1").is_ok());
        assert!(ip("64:ff9b::10.0.0.1").is_ok());
        assert_eq!(ip("0256.0.0.1"), Err(Bad::Invalid));
        assert_eq!(ip("10.0.0"), Err(Bad::Invalid));
        assert_eq!(ip("fe80::1%eth0"), Err(Bad::Invalid));
    }

    #[test]
    fn cidrs_as_strict_kubernetes_validation_reads_them() {
        let net = |s: &str| Ok(Some(s.parse::<IpNet>().unwrap()));
        assert_eq!(cidr("10.0.0.0/8"), net("10.0.0.0/8"));
        assert_eq!(cidr("0.0.0.0/0"), net("0.0.0.0/0"));
        assert_eq!(cidr("2001:db8::/32"), net("2001:db8::/32"));
        assert_eq!(cidr("10.0.0.1"), Ok(None));
        assert_eq!(cidr("010.0.0.0/8"), Err(Bad::LeadingZeros));
        assert_eq!(cidr("10.0.0.0/08"), Err(Bad::LeadingZeros));
        assert_eq!(
            cidr("::ffff:10.0.0.1/128"),
            Err(Bad::Mapped("10.0.0.1/32".into()))
        );
        assert_eq!(cidr("10.0.0.0/33"), Err(Bad::Invalid));
        assert_eq!(cidr("10.0.0.0/"), Err(Bad::Invalid));
        assert_eq!(cidr("10.0.0.0/+8"), Err(Bad::Invalid));
        assert_eq!(cidr("::ffff:10.0.0.1/64"), Err(Bad::Invalid));
    }
}
