//! Addresses: IP networks ([`IpNet`]: an address and a prefix, a host being a /32
//! or /128) and address families ([`AddrFamily`]).
//!
//! Why apart from the rules: these are plain values, parsed from scenarios,
//! recorded in undo records and compared (does a destination cover the engine's
//! control path?) long before anything talks to nftables. Only [`AddrFamily`]'s
//! set type and payload name, and [`net_expr`], know the nftables vocabulary.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use nftables::expr::{Expression, NamedExpression, Prefix};
use nftables::schema::SetType;
use serde::{Deserialize, Serialize};

/// An IP network: an address and a prefix length (a host is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct IpNet {
    /// Network address (host bits are always zero).
    addr: IpAddr,
    /// Prefix length.
    prefix: u8,
}

impl IpNet {
    /// A network; host bits of `addr` are cleared. Fails when `prefix` is too long.
    pub(crate) fn new(addr: IpAddr, prefix: u8) -> Result<Self, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!(
                "found prefix length /{prefix}, expected at most /{max} for {addr}"
            ));
        }
        Ok(IpNet {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// A single host.
    pub(crate) fn host(addr: IpAddr) -> Self {
        IpNet {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    pub(crate) fn addr(&self) -> IpAddr {
        self.addr
    }

    pub(crate) fn prefix(&self) -> u8 {
        self.prefix
    }

    pub(crate) fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub(crate) fn is_host(&self) -> bool {
        self.prefix == if self.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `ip` is inside this network.
    pub(crate) fn contains(&self, ip: &IpAddr) -> bool {
        // An IPv4-mapped IPv6 address is the same host as its IPv4 form.
        let ip = canonical(*ip);
        ip.is_ipv4() == self.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    /// Whether every address of `other` is inside this network.
    pub(crate) fn covers(&self, other: &IpNet) -> bool {
        other.prefix >= self.prefix && self.contains(&other.addr)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    // The first `prefix` of the address's `width` bits; a shift by the full width
    // would overflow, hence /0 apart.
    let keep = |bits: u128, width: u8| {
        if prefix == 0 {
            0
        } else {
            bits & (u128::MAX << (width - prefix))
        }
    };
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(keep(u32::from(a).into(), 32) as u32)),
        IpAddr::V6(a) => IpAddr::V6(keep(u128::from(a), 128).into()),
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for IpNet {
    type Err = String;
    /// `10.0.0.1`, `10.0.0.0/8`, `2001:db8::/32`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a
                    .parse()
                    .map_err(|_| format!("found `{a}` in `{s}`, expected an IP address"))?;
                let prefix: u8 = p
                    .parse()
                    .map_err(|_| format!("found `/{p}` in `{s}`, expected a prefix length"))?;
                IpNet::new(addr, prefix)
            }
            None => s
                .parse::<IpAddr>()
                .map(IpNet::host)
                .map_err(|_| format!("found `{s}`, expected an IP address or CIDR")),
        }
    }
}

impl From<IpNet> for String {
    fn from(n: IpNet) -> String {
        n.to_string()
    }
}

impl TryFrom<String> for IpNet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Drops networks that another network of the list already covers (an interval set
/// refuses overlapping elements) and duplicates; keeps the order otherwise.
pub(crate) fn normalize(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for n in nets {
        if out.iter().any(|o| o.covers(n)) {
            continue;
        }
        out.retain(|o| !n.covers(o));
        out.push(*n);
    }
    out
}

/// IPv4 or IPv6: which set type, which payload protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AddrFamily {
    V4,
    V6,
}

impl AddrFamily {
    pub(crate) fn of(net: &IpNet) -> Self {
        if net.is_ipv4() {
            AddrFamily::V4
        } else {
            AddrFamily::V6
        }
    }
    pub(super) fn set_type(self) -> SetType {
        match self {
            AddrFamily::V4 => SetType::Ipv4Addr,
            AddrFamily::V6 => SetType::Ipv6Addr,
        }
    }
    /// Payload protocol name in nftables (`ip daddr`, `ip6 daddr`).
    pub(super) fn payload(self) -> &'static str {
        match self {
            AddrFamily::V4 => "ip",
            AddrFamily::V6 => "ip6",
        }
    }
    /// The ICMP protocol of this family, as `meta l4proto` names it.
    pub(crate) fn icmp(self) -> &'static str {
        match self {
            AddrFamily::V4 => "icmp",
            AddrFamily::V6 => "ipv6-icmp",
        }
    }
    /// Short suffix for object names (`_v4`, `_v6`).
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            AddrFamily::V4 => "v4",
            AddrFamily::V6 => "v6",
        }
    }
}
/// A set element for `n`: a plain address for a host, a prefix otherwise.
pub(super) fn net_expr(n: &IpNet) -> Expression<'static> {
    if n.is_host() {
        Expression::String(Cow::Owned(n.addr().to_string()))
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(Cow::Owned(n.addr().to_string()))),
            len: n.prefix() as u32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipnet_parses_masks_and_covers() {
        let n: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains(&"10.200.0.1".parse().unwrap()));
        assert!(!n.contains(&"11.0.0.1".parse().unwrap()));
        assert!(n.contains(&"::ffff:10.0.0.1".parse().unwrap()));
        let h: IpNet = "10.0.0.1".parse().unwrap();
        assert!(h.is_host() && n.covers(&h) && !h.covers(&n));
        let v6: IpNet = "2001:db8::1/32".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::/32");
        assert!(!v6.contains(&"10.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("10.0.0/8".parse::<IpNet>().is_err());
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn normalize_drops_covered_networks() {
        let nets: Vec<IpNet> = ["10.0.0.1", "10.0.0.0/8", "10.0.0.1", "192.168.1.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let n: Vec<String> = normalize(&nets).iter().map(|n| n.to_string()).collect();
        assert_eq!(n, ["10.0.0.0/8", "192.168.1.1"]);
    }
}
