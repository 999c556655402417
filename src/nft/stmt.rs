//! Statements: the pieces a rule is made of — matches on addresses, protocols,
//! ports, conntrack state and TCP flags; counters and limits; verdicts (`drop`,
//! `reject`, `redirect`, `return`, `jump`).
//!
//! Why apart from the table builders: a fault composes its rules from these (a
//! selector, a counter, a verdict) without knowing the JSON shapes of the
//! `nftables` crate, and the builders in [`super::table`] take them as they come.
//! Each function's doc shows the `nft` syntax it stands for.

use std::borrow::Cow;

use nftables::expr::{
    CT, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, SetItem,
};
pub(crate) use nftables::stmt::Statement;
use nftables::stmt::{
    AnonymousCounter, Counter, JumpTarget, Limit, Match, NAT, Operator, Reject, RejectType,
};
use nftables::types::RejectCode;

use super::addr::AddrFamily;
use super::s;

/// Which address of a packet a rule looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Src,
    Dst,
}

impl Side {
    fn addr(self) -> &'static str {
        match self {
            Side::Src => "saddr",
            Side::Dst => "daddr",
        }
    }
    fn port(self) -> &'static str {
        match self {
            Side::Src => "sport",
            Side::Dst => "dport",
        }
    }
}

/// `<protocol> <field>`, e.g. `ip daddr`, `th dport`, `tcp flags`.
fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: s(protocol),
            field: s(field),
        },
    )))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn match_eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    matches(left, Operator::EQ, right)
}

/// `x` for one value, `{ x, y }` for several.
fn one_or_set(values: Vec<Expression<'static>>) -> Expression<'static> {
    match <[_; 1]>::try_from(values) {
        Ok([one]) => one,
        Err(many) => Expression::Named(NamedExpression::Set(
            many.into_iter().map(SetItem::Element).collect(),
        )),
    }
}

/// `ip daddr @set` (or `ip6 saddr @set`, ...).
pub(crate) fn addr_in_set(family: AddrFamily, side: Side, set: &str) -> Statement<'static> {
    match_eq(
        payload(family.payload(), side.addr()),
        Expression::String(Cow::Owned(format!("@{set}"))),
    )
}

/// `meta l4proto tcp` or `meta l4proto { tcp, udp }`.
pub(crate) fn l4proto_in(protos: &[&str]) -> Statement<'static> {
    let left = Expression::Named(NamedExpression::Meta(Meta {
        key: MetaKey::L4proto,
    }));
    let right = one_or_set(protos.iter().map(|p| Expression::String(s(p))).collect());
    match_eq(left, right)
}

/// `th dport 443` or `th dport { 80, 443 }` (transport header: TCP and UDP alike;
/// pair it with an `l4proto` match so other protocols never reach it).
pub(crate) fn port_in(side: Side, ports: &[u16]) -> Statement<'static> {
    let right = one_or_set(
        ports
            .iter()
            .map(|p| Expression::Number(*p as u32))
            .collect(),
    );
    match_eq(payload("th", side.port()), right)
}

/// `ct state new` (the first packet of a connection). Needs a chain after conntrack
/// ([`super::PRIO_AFTER_CONNTRACK`]).
pub(crate) fn ct_state_new() -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::CT(CT {
            key: s("state"),
            family: None,
            dir: None,
        })),
        Operator::IN,
        Expression::String(s("new")),
    )
}

/// An anonymous `counter`: lets a fault prove that its rule matched real packets.
pub(crate) fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(Some(AnonymousCounter {
        packets: None,
        bytes: None,
    })))
}

/// `limit rate over N/second burst B packets`: matches the packets beyond the rate.
pub(crate) fn limit_over(per_second: u32, burst: u32) -> Statement<'static> {
    Statement::Limit(Limit {
        rate: per_second,
        rate_unit: None,
        per: Some(s("second")),
        burst: Some(burst),
        burst_unit: None,
        inv: Some(true),
    })
}

/// `ip saddr 10.0.0.1` (or `ip6 daddr ...`): one address.
pub(crate) fn addr_eq(side: Side, ip: std::net::IpAddr) -> Statement<'static> {
    let fam = AddrFamily::of(&super::IpNet::host(ip));
    match_eq(
        payload(fam.payload(), side.addr()),
        Expression::String(Cow::Owned(ip.to_string())),
    )
}

/// `accept`.
pub(crate) fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

/// `drop`.
pub(crate) fn drop() -> Statement<'static> {
    Statement::Drop(None)
}

/// `reject with tcp reset` (only valid after an `l4proto tcp` match).
pub(crate) fn reject_tcp_reset() -> Statement<'static> {
    Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None)))
}

/// How a non-TCP packet is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreachable {
    Port,
    Host,
}

/// `reject with icmpx port-unreachable` / `host-unreachable` (ICMP or ICMPv6,
/// whichever fits the packet).
pub(crate) fn reject_icmpx(code: Unreachable) -> Statement<'static> {
    let code = match code {
        Unreachable::Port => RejectCode::PortUnreach,
        Unreachable::Host => RejectCode::HostUnreach,
    };
    Statement::Reject(Some(Reject::new(Some(RejectType::ICMPX), Some(code))))
}

/// `redirect to :PORT`.
#[cfg_attr(not(test), allow(dead_code))] // for the chaos proxy's transparent mode; tested here
pub(crate) fn redirect_to(port: u16) -> Statement<'static> {
    Statement::Redirect(Some(NAT {
        addr: None,
        family: None,
        port: Some(Expression::Number(port as u32)),
        flags: None,
    }))
}

/// `tcp flags rst` (any packet with the reset flag; implies `meta l4proto tcp`).
pub(crate) fn tcp_rst() -> Statement<'static> {
    matches(
        payload("tcp", "flags"),
        Operator::IN,
        Expression::String(s("rst")),
    )
}

/// `icmp type destination-unreachable` (or the ICMPv6 one): the error a `reject`
/// sends for non-TCP traffic.
pub(crate) fn icmp_unreachable(family: AddrFamily) -> Statement<'static> {
    let proto = match family {
        AddrFamily::V4 => "icmp",
        AddrFamily::V6 => "icmpv6",
    };
    match_eq(
        payload(proto, "type"),
        Expression::String(s("destination-unreachable")),
    )
}

/// `return`: leave this chain; the packet goes on to the next base chain.
pub(crate) fn ret() -> Statement<'static> {
    Statement::Return(None)
}

/// `jump CHAIN`.
pub(crate) fn jump(chain: &str) -> Statement<'static> {
    Statement::Jump(JumpTarget { target: s(chain) })
}
