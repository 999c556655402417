//! The parameters both network faults share and what they mean as nftables
//! statements: [`Protocol`], [`Direction`], [`Action`], the verdict for a blocked
//! packet and the selector of a destination group's traffic.
//!
//! Why here: `network_partition` and `network_rate_limit` take the same words in
//! their `with:` and must mean the same packets by them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::nft::{self, AddrFamily, Side, Statement, Unreachable};

/// Which transport protocol a network fault applies to.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
    /// ICMP (ICMPv6 for IPv6 destinations); takes no ports.
    Icmp,
    /// Everything; with `ports`, TCP and UDP on those ports.
    #[default]
    All,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::All => "all",
        }
    }
    /// Whether TCP traffic is affected (so a TCP connect can measure the effect).
    pub(crate) fn covers_tcp(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::All)
    }
}

/// Which traffic a partition blocks, seen from the target.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Packets the target sends to the destinations (to their `ports`).
    Egress,
    /// Packets the target receives from the destinations (from their `ports`).
    Ingress,
    /// Both: the destinations and the target cannot talk at all.
    #[default]
    Both,
}

impl Direction {
    pub(crate) fn egress(self) -> bool {
        matches!(self, Direction::Egress | Direction::Both)
    }
    pub(crate) fn ingress(self) -> bool {
        matches!(self, Direction::Ingress | Direction::Both)
    }
}

/// What happens to a blocked packet.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Silently discarded: the peer sees timeouts (a cut cable, a black-holing firewall).
    #[default]
    Drop,
    /// Refused at once: TCP reset for TCP, ICMP port unreachable for UDP, ICMP host
    /// unreachable otherwise (a firewall that rejects; clients fail fast).
    Reject,
}

impl Action {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Reject => "reject",
        }
    }
}

/// The verdict statement for blocked packets of `proto` (a concrete protocol, or
/// `All` for "anything else").
pub(crate) fn verdict(action: Action, proto: Protocol) -> Statement<'static> {
    match (action, proto) {
        (Action::Drop, _) => nft::drop(),
        (Action::Reject, Protocol::Tcp) => nft::reject_tcp_reset(),
        (Action::Reject, Protocol::Udp) => nft::reject_icmpx(Unreachable::Port),
        (Action::Reject, _) => nft::reject_icmpx(Unreachable::Host),
    }
}

/// The statements that select the traffic of one group and family: addresses,
/// then protocol and ports. `proto` is a concrete protocol, or `All` for "any".
pub(crate) fn selector(
    fam: AddrFamily,
    side: Side,
    set: &str,
    proto: Protocol,
    ports: &[u16],
) -> Vec<Statement<'static>> {
    let mut v = vec![nft::addr_in_set(fam, side, set)];
    match proto {
        Protocol::Tcp => v.push(nft::l4proto_in(&["tcp"])),
        Protocol::Udp => v.push(nft::l4proto_in(&["udp"])),
        Protocol::Icmp => v.push(nft::l4proto_in(&[fam.icmp()])),
        Protocol::All if !ports.is_empty() => v.push(nft::l4proto_in(&["tcp", "udp"])),
        Protocol::All => {}
    }
    if !ports.is_empty() && proto != Protocol::Icmp {
        v.push(nft::port_in(side, ports));
    }
    v
}

/// Default `verify_timeout`: how long a fault keeps trying to observe its effect.
pub(crate) fn default_verify() -> HumanDuration {
    HumanDuration::from_millis(2000)
}

/// ` port(s) 80,443` for a description, or nothing when `ports` is empty.
pub(crate) fn ports_note(ports: &[u16]) -> String {
    if ports.is_empty() {
        return String::new();
    }
    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    format!(" port(s) {}", list.join(","))
}
