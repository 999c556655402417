//! nftables: the one place that builds and applies firedrill's packet-filter rules.
//!
//! Why a module of its own: network faults (`network_partition`,
//! `network_rate_limit`) and the chaos proxy's transparent mode all change the
//! kernel's ruleset, and all must keep the same promises:
//!
//! - **Ownership.** Each run owns exactly one table, `inet firedrill_<run id>`
//!   ([`RunTable`]); every chain and set a fault creates lives there, named after
//!   the fault ([`object_prefix`]). Nothing here can name, change or delete any
//!   other table: [`RunTable::from_name`] refuses names that are not ours, and rules
//!   in foreign tables are never touched. (Our own table cannot override an
//!   `accept` in a foreign table, but our `drop`/`reject` stands: a packet has to
//!   pass every base chain on its hook.)
//! - **Dead-man.** Addresses live in sets whose elements carry a `timeout` equal to
//!   the fault's ttl. If the engine dies, the elements expire, the rules match
//!   nothing and traffic flows again, without anybody running anything.
//! - **Atomic and fast.** A fault is one JSON batch ([`nftables::batch::Batch`])
//!   applied with a single `nft -j -f -` (one process start, one kernel
//!   transaction). For a `netns` target, `nft` is started from a thread that entered
//!   the namespace with `setns(2)` (see [`crate::target::netns`]) rather than
//!   through `ip netns exec`, which costs a second process and a mount namespace.
//!
//! Builders: address sets ([`RunTable::add_address_set`]), filter base chains on
//! the input/output hooks ([`RunTable::add_filter_chain`]), rules made of the
//! statement helpers below, and a NAT redirect of `daddr @set tcp dport P` to a
//! local port ([`RunTable::add_redirect`]) for the proxy. Execution: [`apply`],
//! [`list_table`], [`delete_table`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io::{self, Write};
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::time::Duration;

use nftables::batch::Batch;
use nftables::expr::{
    CT, Elem, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, SetItem,
};
use nftables::schema::{Chain, NfListObject, Rule, Set, SetFlag, SetType, SetTypeValue, Table};
pub(crate) use nftables::stmt::Statement;
use nftables::stmt::{
    AnonymousCounter, Counter, JumpTarget, Limit, Match, NAT, Operator, Reject, RejectType,
};
use nftables::types::{NfChainType, NfFamily, NfHook, RejectCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::target::Target;

/// Every table firedrill creates is named `firedrill_<run id>`.
pub(crate) const TABLE_PREFIX: &str = "firedrill_";

/// Longest run id accepted in a table name (nftables allows 255 bytes; shorter
/// names keep `nft list ruleset` readable).
const MAX_RUN_ID: usize = 48;

/// Filter chains of partitions run at the `raw` priority: before conntrack (-200),
/// so a dropped packet never creates conntrack state, and before the usual
/// `filter` chains (0) of other tables.
pub(crate) const PRIO_EARLY: i32 = -300;

/// Chains that look at `ct state` must run after conntrack (-200) has classified
/// the packet; still before `mangle` (-150) and `filter` (0).
pub(crate) const PRIO_AFTER_CONNTRACK: i32 = -190;

/// NAT chains run at the standard destination-NAT priority.
#[cfg_attr(not(test), allow(dead_code))] // for the chaos proxy's transparent mode; tested here
pub(crate) const PRIO_DSTNAT: i32 = -100;

/// Why talking to nftables failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NftError {
    #[error(
        "found run id `{0}`, expected 1 to {MAX_RUN_ID} letters, digits or `_` (it names the nftables table)"
    )]
    BadRunId(String),
    #[error(
        "refusing to touch table `{0}`: firedrill only changes tables named {TABLE_PREFIX}<run id>"
    )]
    ForeignTable(String),
    #[error("cannot run nft on {target}: {source}")]
    Spawn { target: String, source: io::Error },
    #[error("nft on {target} failed while {what}: {stderr}")]
    Failed {
        target: String,
        what: String,
        stderr: String,
    },
    #[error("nft on {target} printed JSON that cannot be read: {source}")]
    Json {
        target: String,
        source: serde_json::Error,
    },
}

// ── addresses ────────────────────────────────────────────────────────────────

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
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6((bits & m).into())
        }
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
    fn set_type(self) -> SetType {
        match self {
            AddrFamily::V4 => SetType::Ipv4Addr,
            AddrFamily::V6 => SetType::Ipv6Addr,
        }
    }
    /// Payload protocol name in nftables (`ip daddr`, `ip6 daddr`).
    fn payload(self) -> &'static str {
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

// ── names ────────────────────────────────────────────────────────────────────

/// The table of a run: `firedrill_<run id>`. Run ids look like
/// `20261128T112233Z1a2b`; anything but letters, digits and `_` is refused so the
/// name is a plain nft identifier that a human can type.
pub(crate) fn table_name(run_id: &str) -> Result<String, NftError> {
    let ok = !run_id.is_empty()
        && run_id.len() <= MAX_RUN_ID
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(format!("{TABLE_PREFIX}{run_id}"))
    } else {
        Err(NftError::BadRunId(run_id.to_string()))
    }
}

/// Whether `name` is a table firedrill may own (`firedrill_<valid run id>`).
pub(crate) fn is_run_table(name: &str) -> bool {
    name.strip_prefix(TABLE_PREFIX)
        .is_some_and(|id| table_name(id).is_ok())
}

/// Prefix of the chains and sets of one fault: `f_<step, sanitized>_<hash>`. The
/// hash of the exact step name keeps two steps apart even when they sanitize alike
/// (`cut api` and `cut-api`); the readable part tells a human whose rules they see.
pub(crate) fn object_prefix(step: &str) -> String {
    let readable: String = step
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let hash = Sha256::digest(step.as_bytes());
    format!(
        "f_{}_{:02x}{:02x}{:02x}",
        readable.trim_matches('_'),
        hash[0],
        hash[1],
        hash[2]
    )
}

// ── the run table and its builders ───────────────────────────────────────────

/// The `inet` table owned by one run, and builders for what faults put in it.
/// Everything added through it carries this table's name; it cannot address any
/// other table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunTable {
    name: String,
}

/// Which hook a filter chain sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FilterHook {
    /// Packets for local sockets (`ingress` traffic).
    Input,
    /// Locally generated packets (`egress` traffic).
    Output,
}

/// Which hook a NAT (redirect) chain sits on.
#[cfg_attr(not(test), allow(dead_code))] // for the chaos proxy's transparent mode; tested here
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NatHook {
    /// Locally originated connections (`type nat hook output`).
    Output,
    /// Connections entering the host or namespace (`type nat hook prerouting`).
    Prerouting,
}

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

fn s(v: &str) -> Cow<'static, str> {
    Cow::Owned(v.to_string())
}

impl RunTable {
    /// The table of run `run_id`.
    pub(crate) fn for_run(run_id: &str) -> Result<Self, NftError> {
        Ok(RunTable {
            name: table_name(run_id)?,
        })
    }

    /// A table named in an undo record; refused unless it is a firedrill run table,
    /// so a corrupted or hand-edited ledger cannot make us delete someone's table.
    pub(crate) fn from_name(name: &str) -> Result<Self, NftError> {
        if is_run_table(name) {
            Ok(RunTable {
                name: name.to_string(),
            })
        } else {
            Err(NftError::ForeignTable(name.to_string()))
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn table(&self) -> Table<'static> {
        Table {
            family: NfFamily::INet,
            name: s(&self.name),
            handle: None,
        }
    }

    /// `add table` (idempotent: adding an existing table changes nothing).
    pub(crate) fn add_table(&self, b: &mut Batch<'static>) {
        b.add(NfListObject::Table(self.table()));
    }

    /// An address set (`ipv4_addr` or `ipv6_addr`, `flags interval, timeout`) holding
    /// `elems`, each expiring after `ttl` (rounded up to whole seconds, at least 1 s):
    /// the dead-man of everything matched through it.
    pub(crate) fn add_address_set(
        &self,
        b: &mut Batch<'static>,
        set: &str,
        family: AddrFamily,
        elems: &[IpNet],
        ttl: Duration,
    ) {
        b.add(NfListObject::Set(Box::new(Set {
            family: NfFamily::INet,
            table: s(&self.name),
            name: s(set),
            handle: None,
            set_type: SetTypeValue::Single(family.set_type()),
            policy: None,
            flags: Some(HashSet::from([SetFlag::Interval, SetFlag::Timeout])),
            elem: None,
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        })));
        if !elems.is_empty() {
            self.add_elements(b, set, elems, ttl);
        }
    }

    /// Adds elements with a timeout to an existing address set. (An element that is
    /// already there keeps its old timeout: to extend it, delete and add it.)
    pub(crate) fn add_elements(
        &self,
        b: &mut Batch<'static>,
        set: &str,
        elems: &[IpNet],
        ttl: Duration,
    ) {
        let timeout = ttl_secs(ttl);
        let elem: Vec<Expression<'static>> = normalize(elems)
            .iter()
            .map(|n| {
                Expression::Named(NamedExpression::Elem(Elem {
                    val: Box::new(net_expr(n)),
                    timeout: Some(timeout),
                    expires: None,
                    comment: None,
                    counter: None,
                }))
            })
            .collect();
        b.add(NfListObject::Element(nftables::schema::Element {
            family: NfFamily::INet,
            table: s(&self.name),
            name: s(set),
            elem: Cow::Owned(elem),
        }));
    }

    /// A chain of this run's table; base chains add their type, hook and priority.
    fn chain(&self, name: &str) -> Chain<'static> {
        Chain {
            family: NfFamily::INet,
            table: s(&self.name),
            name: s(name),
            ..Default::default()
        }
    }

    /// A filter base chain on `hook` at `prio` (policy accept: a chain of ours never
    /// blocks by default, only its rules do).
    pub(crate) fn add_filter_chain(
        &self,
        b: &mut Batch<'static>,
        chain: &str,
        hook: FilterHook,
        prio: i32,
    ) {
        b.add(NfListObject::Chain(Chain {
            _type: Some(NfChainType::Filter),
            hook: Some(match hook {
                FilterHook::Input => NfHook::Input,
                FilterHook::Output => NfHook::Output,
            }),
            prio: Some(prio),
            ..self.chain(chain)
        }));
    }

    /// A NAT base chain at the destination-NAT priority.
    pub(crate) fn add_nat_chain(&self, b: &mut Batch<'static>, chain: &str, hook: NatHook) {
        b.add(NfListObject::Chain(Chain {
            _type: Some(NfChainType::NAT),
            hook: Some(match hook {
                NatHook::Output => NfHook::Output,
                NatHook::Prerouting => NfHook::Prerouting,
            }),
            prio: Some(PRIO_DSTNAT),
            ..self.chain(chain)
        }));
    }

    /// A regular chain (a `jump` target), e.g. to share one `limit` between rules.
    pub(crate) fn add_regular_chain(&self, b: &mut Batch<'static>, chain: &str) {
        b.add(NfListObject::Chain(self.chain(chain)));
    }

    /// Appends a rule made of `stmts` to `chain`.
    pub(crate) fn add_rule(
        &self,
        b: &mut Batch<'static>,
        chain: &str,
        stmts: Vec<Statement<'static>>,
        comment: Option<&str>,
    ) {
        b.add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: s(&self.name),
            chain: s(chain),
            expr: Cow::Owned(stmts),
            comment: comment.map(s),
            ..Default::default()
        }));
    }

    /// `delete chain` (its rules go with it). Chains before sets: a set that a rule
    /// still references cannot be deleted.
    pub(crate) fn delete_chain(&self, b: &mut Batch<'static>, chain: &str) {
        b.delete(NfListObject::Chain(self.chain(chain)));
    }

    /// `delete set`.
    pub(crate) fn delete_set(&self, b: &mut Batch<'static>, set: &str) {
        b.delete(NfListObject::Set(Box::new(Set {
            family: NfFamily::INet,
            table: s(&self.name),
            name: s(set),
            handle: None,
            set_type: SetTypeValue::Single(SetType::Ipv4Addr),
            policy: None,
            flags: None,
            elem: None,
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        })));
    }

    /// `delete table` (with everything in it).
    pub(crate) fn delete_table_in(&self, b: &mut Batch<'static>) {
        b.delete(NfListObject::Table(self.table()));
    }

    /// Transparent redirect for the chaos proxy: TCP connections to an address in
    /// the sets `<prefix>_v4` / `<prefix>_v6` (created here, elements expiring after
    /// `ttl`) on port `dport` are redirected to `to_port` on this host. Two NAT
    /// chains: `output` catches connections made on the target itself,
    /// `prerouting` those entering it (e.g. from another namespace). Returns the
    /// names of the chains and sets created, for the undo record.
    #[cfg_attr(not(test), allow(dead_code))] // for the chaos proxy's transparent mode; tested here
    pub(crate) fn add_redirect(
        &self,
        b: &mut Batch<'static>,
        prefix: &str,
        dests: &[IpNet],
        dport: u16,
        to_port: u16,
        ttl: Duration,
    ) -> Objects {
        let mut objs = Objects::default();
        let chains = [
            (format!("{prefix}_nat_out"), NatHook::Output),
            (format!("{prefix}_nat_pre"), NatHook::Prerouting),
        ];
        for (chain, hook) in &chains {
            self.add_nat_chain(b, chain, *hook);
            objs.chains.push(chain.clone());
        }
        for fam in [AddrFamily::V4, AddrFamily::V6] {
            let elems: Vec<IpNet> = dests
                .iter()
                .filter(|d| AddrFamily::of(d) == fam)
                .copied()
                .collect();
            if elems.is_empty() {
                continue;
            }
            let set = format!("{prefix}_{}", fam.suffix());
            self.add_address_set(b, &set, fam, &elems, ttl);
            objs.sets.push(set.clone());
            for (chain, _) in &chains {
                self.add_rule(
                    b,
                    chain,
                    vec![
                        addr_in_set(fam, Side::Dst, &set),
                        l4proto_in(&["tcp"]),
                        port_in(Side::Dst, &[dport]),
                        counter(),
                        redirect_to(to_port),
                    ],
                    Some("firedrill proxy redirect"),
                );
            }
        }
        objs
    }
}

/// Names of the chains and sets one fault created in the run table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objects {
    /// Chains, deleted first (their rules reference the sets).
    pub chains: Vec<String>,
    /// Sets.
    pub sets: Vec<String>,
}

impl Objects {
    /// Adds the deletion of every object to `b`, chains first.
    pub(crate) fn delete_in(&self, table: &RunTable, b: &mut Batch<'static>) {
        for c in &self.chains {
            table.delete_chain(b, c);
        }
        for st in &self.sets {
            table.delete_set(b, st);
        }
    }

    /// The objects of this list that `view` shows as present.
    pub(crate) fn present_in(&self, view: &TableView) -> Objects {
        Objects {
            chains: self
                .chains
                .iter()
                .filter(|c| view.chains.contains(c))
                .cloned()
                .collect(),
            sets: self
                .sets
                .iter()
                .filter(|st| view.sets.iter().any(|v| &v.name == *st))
                .cloned()
                .collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty()
    }
}

/// Element timeout in whole seconds (nftables' JSON unit), rounded up, at least 1.
pub(crate) fn ttl_secs(ttl: Duration) -> u32 {
    let ms = ttl.as_millis().max(1);
    ms.div_ceil(1000).min(u32::MAX as u128) as u32
}

fn net_expr(n: &IpNet) -> Expression<'static> {
    if n.is_host() {
        Expression::String(Cow::Owned(n.addr().to_string()))
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(Cow::Owned(n.addr().to_string()))),
            len: n.prefix() as u32,
        }))
    }
}

// ── statements ───────────────────────────────────────────────────────────────

fn match_eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

/// `ip daddr @set` (or `ip6 saddr @set`, ...).
pub(crate) fn addr_in_set(family: AddrFamily, side: Side, set: &str) -> Statement<'static> {
    match_eq(
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: s(family.payload()),
                field: s(side.addr()),
            },
        ))),
        Expression::String(Cow::Owned(format!("@{set}"))),
    )
}

/// `meta l4proto tcp` or `meta l4proto { tcp, udp }`.
pub(crate) fn l4proto_in(protos: &[&str]) -> Statement<'static> {
    let left = Expression::Named(NamedExpression::Meta(Meta {
        key: MetaKey::L4proto,
    }));
    let right = match protos {
        [one] => Expression::String(s(one)),
        many => Expression::Named(NamedExpression::Set(
            many.iter()
                .map(|p| SetItem::Element(Expression::String(s(p))))
                .collect(),
        )),
    };
    match_eq(left, right)
}

/// `th dport 443` or `th dport { 80, 443 }` (transport header: TCP and UDP alike;
/// pair it with an `l4proto` match so other protocols never reach it).
pub(crate) fn port_in(side: Side, ports: &[u16]) -> Statement<'static> {
    let left = Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: s("th"),
            field: s(side.port()),
        },
    )));
    let right = match ports {
        [one] => Expression::Number(*one as u32),
        many => Expression::Named(NamedExpression::Set(
            many.iter()
                .map(|p| SetItem::Element(Expression::Number(*p as u32)))
                .collect(),
        )),
    };
    match_eq(left, right)
}

/// `ct state new` (the first packet of a connection). Needs a chain after conntrack
/// ([`PRIO_AFTER_CONNTRACK`]).
pub(crate) fn ct_state_new() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(CT {
            key: s("state"),
            family: None,
            dir: None,
        })),
        right: Expression::String(s("new")),
        op: Operator::IN,
    })
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
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: s("tcp"),
                field: s("flags"),
            },
        ))),
        right: Expression::String(s("rst")),
        op: Operator::IN,
    })
}

/// `icmp type destination-unreachable` (or the ICMPv6 one): the error a `reject`
/// sends for non-TCP traffic.
pub(crate) fn icmp_unreachable(family: AddrFamily) -> Statement<'static> {
    let proto = match family {
        AddrFamily::V4 => "icmp",
        AddrFamily::V6 => "icmpv6",
    };
    match_eq(
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: s(proto),
                field: s("type"),
            },
        ))),
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

// ── execution ────────────────────────────────────────────────────────────────

/// The JSON document `nft -j -f -` reads for `batch`.
pub(crate) fn to_json(batch: Batch<'static>) -> String {
    let mut doc = serde_json::to_value(batch.to_nftables()).expect("nftables batch serialises");
    strip_elem_nulls(&mut doc);
    doc.to_string()
}

/// The crate writes absent optional fields of set elements as `null`; nft reads a
/// `"counter": null` there as "add a counter". Drop those keys.
fn strip_elem_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::Object(e)) = m.get_mut("elem")
                && e.contains_key("val")
            {
                e.retain(|_, x| !x.is_null());
            }
            for x in m.values_mut() {
                strip_elem_nulls(x);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_elem_nulls),
        _ => {}
    }
}

/// Applies `batch` on `target` as one transaction (`nft -j -f -`).
pub(crate) async fn apply(target: &Target, batch: Batch<'static>) -> Result<(), NftError> {
    let doc = to_json(batch);
    let out = run_nft(target, &["-j", "-f", "-"], Some(doc)).await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(target, "applying a batch", &out))
    }
}

/// A run table as `nft -j list table` shows it: enough to know what is in it and
/// how many packets its rules matched.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TableView {
    /// Chain names.
    pub chains: Vec<String>,
    /// Sets with their element count.
    pub sets: Vec<SetView>,
    /// Rules with their counters.
    pub rules: Vec<RuleView>,
}

/// A set in a [`TableView`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SetView {
    pub name: String,
    /// Elements not expired yet.
    pub elems: usize,
}

/// A rule in a [`TableView`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RuleView {
    pub chain: String,
    /// Packets counted by the rule's counters (in rule order).
    pub counters: Vec<u64>,
    pub comment: Option<String>,
}

impl TableView {
    /// Packets counted by the first counter of every rule in `chains`.
    pub(crate) fn packets_in(&self, chains: &[String]) -> u64 {
        self.rules
            .iter()
            .filter(|r| chains.contains(&r.chain))
            .filter_map(|r| r.counters.first())
            .sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty()
    }

    fn parse(doc: &serde_json::Value) -> Self {
        let mut v = TableView::default();
        let items = doc
            .get("nftables")
            .and_then(|n| n.as_array())
            .cloned()
            .unwrap_or_default();
        let str_of = |o: &serde_json::Value, k: &str| {
            o.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        for item in &items {
            if let Some(c) = item.get("chain") {
                v.chains.push(str_of(c, "name"));
            } else if let Some(st) = item.get("set") {
                let elems = st
                    .get("elem")
                    .and_then(|e| e.as_array())
                    .map_or(0, |a| a.len());
                v.sets.push(SetView {
                    name: str_of(st, "name"),
                    elems,
                });
            } else if let Some(r) = item.get("rule") {
                let counters = r
                    .get("expr")
                    .and_then(|e| e.as_array())
                    .map(|stmts| {
                        stmts
                            .iter()
                            .filter_map(|st| st.get("counter")?.get("packets")?.as_u64())
                            .collect()
                    })
                    .unwrap_or_default();
                v.rules.push(RuleView {
                    chain: str_of(r, "chain"),
                    counters,
                    comment: r.get("comment").and_then(|c| c.as_str()).map(String::from),
                });
            }
        }
        v
    }
}

/// Lists the run table on `target`; `None` when it does not exist.
pub(crate) async fn list_table(
    target: &Target,
    table: &RunTable,
) -> Result<Option<TableView>, NftError> {
    let out = run_nft(target, &["-j", "list", "table", "inet", table.name()], None).await?;
    if !out.status.success() {
        if no_such_object(&out) {
            return Ok(None);
        }
        return Err(failed(target, "listing the run table", &out));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|source| NftError::Json {
            target: target.describe(),
            source,
        })?;
    Ok(Some(TableView::parse(&doc)))
}

/// Deletes the run table on `target`. Idempotent: returns `false` when it was not
/// there. Only ever deletes a `firedrill_<run id>` table (see [`RunTable`]).
pub(crate) async fn delete_table(target: &Target, table: &RunTable) -> Result<bool, NftError> {
    let mut b = Batch::new();
    table.delete_table_in(&mut b);
    match apply(target, b).await {
        Ok(()) => Ok(true),
        Err(NftError::Failed { stderr, .. }) if is_enoent(&stderr) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes `objs` from the run table, tolerating objects (or a table) that are
/// already gone: the fast path is one transaction; when it fails because something
/// is missing, only what is still present is deleted. Returns what was deleted.
pub(crate) async fn delete_objects(
    target: &Target,
    table: &RunTable,
    objs: &Objects,
) -> Result<Objects, NftError> {
    if objs.is_empty() {
        return Ok(Objects::default());
    }
    let mut b = Batch::new();
    objs.delete_in(table, &mut b);
    match apply(target, b).await {
        Ok(()) => return Ok(objs.clone()),
        Err(NftError::Failed { stderr, .. }) if is_enoent(&stderr) => {}
        Err(e) => return Err(e),
    }
    let Some(view) = list_table(target, table).await? else {
        return Ok(Objects::default());
    };
    let present = objs.present_in(&view);
    if !present.is_empty() {
        let mut b = Batch::new();
        present.delete_in(table, &mut b);
        apply(target, b).await?;
    }
    Ok(present)
}

/// Deletes the run table if nothing is left in it. Returns whether it was deleted.
pub(crate) async fn delete_table_if_empty(
    target: &Target,
    table: &RunTable,
) -> Result<bool, NftError> {
    match list_table(target, table).await? {
        Some(v) if v.is_empty() => delete_table(target, table).await,
        _ => Ok(false),
    }
}

fn is_enoent(stderr: &str) -> bool {
    stderr.contains("No such file or directory")
}

fn no_such_object(out: &Output) -> bool {
    is_enoent(&String::from_utf8_lossy(&out.stderr))
}

fn failed(target: &Target, what: &str, out: &Output) -> NftError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    NftError::Failed {
        target: target.describe(),
        what: what.to_string(),
        stderr: if stderr.is_empty() {
            format!("exit status {}", out.status)
        } else {
            stderr.join(" | ")
        },
    }
}

/// The `nft` program: `FIREDRILL_NFT` if set, else from `PATH`, else the usual
/// `/usr/sbin/nft` (non-login root shells do not always have sbin in `PATH`).
fn nft_program() -> String {
    if let Ok(p) = std::env::var("FIREDRILL_NFT")
        && !p.is_empty()
    {
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("nft").is_file()));
    if on_path {
        "nft".into()
    } else {
        "/usr/sbin/nft".into()
    }
}

/// Runs `nft ARGS` on `target`, feeding `stdin`. Every target kind has an arm here:
/// a new kind (SSH) must say how `nft` reaches its host.
pub(crate) async fn run_nft(
    target: &Target,
    args: &[&str],
    stdin: Option<String>,
) -> Result<Output, NftError> {
    let spawn_err = |source| NftError::Spawn {
        target: target.describe(),
        source,
    };
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    match target {
        Target::Local | Target::Netns { .. } => {
            crate::target::netns::run_in(target, move || nft_blocking(&args, stdin))
                .await
                .map_err(spawn_err)?
                .map_err(spawn_err)
        }
    }
}

fn nft_blocking(args: &[String], stdin: Option<String>) -> io::Result<Output> {
    let mut cmd = Command::new(nft_program());
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    child.wait_with_output()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_make_valid_table_names() {
        assert_eq!(
            table_name("20261128T112233Z1a2b").unwrap(),
            "firedrill_20261128T112233Z1a2b"
        );
        assert!(table_name(&crate::engine::new_run_id()).is_ok());
        for bad in [
            "",
            "a b",
            "x;delete table inet filter",
            "ä",
            &"x".repeat(49),
        ] {
            assert!(table_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_run_tables_can_be_addressed() {
        assert!(RunTable::from_name("firedrill_20261128T112233Z1a2b").is_ok());
        for foreign in ["filter", "firedrill_", "firedrill_a-b", "kube-proxy", "nat"] {
            let e = RunTable::from_name(foreign).unwrap_err();
            assert!(e.to_string().contains("refusing"), "{e}");
        }
    }

    #[test]
    fn object_prefixes_are_identifiers_and_distinct() {
        let a = object_prefix("cut API (primary)");
        let b = object_prefix("cut-API-(primary)");
        assert_ne!(a, b);
        for p in [&a, &b] {
            assert!(p.starts_with("f_cut_api"), "{p}");
            assert!(
                p.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
            );
        }
        assert!(object_prefix(&"x".repeat(300)).len() < 40);
    }

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

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(2000)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn batch_json_has_the_table_set_elements_and_rule() {
        let t = RunTable::for_run("r1").unwrap();
        let mut b = Batch::new();
        t.add_table(&mut b);
        let nets = ["10.0.0.0/24".parse().unwrap(), "10.1.0.1".parse().unwrap()];
        t.add_address_set(
            &mut b,
            "f_x_v4",
            AddrFamily::V4,
            &nets,
            Duration::from_secs(30),
        );
        t.add_filter_chain(&mut b, "f_x_out", FilterHook::Output, PRIO_EARLY);
        t.add_rule(
            &mut b,
            "f_x_out",
            vec![
                addr_in_set(AddrFamily::V4, Side::Dst, "f_x_v4"),
                l4proto_in(&["tcp"]),
                port_in(Side::Dst, &[80, 443]),
                counter(),
                reject_tcp_reset(),
            ],
            None,
        );
        let doc: serde_json::Value = serde_json::from_str(&to_json(b)).unwrap();
        let cmds = doc["nftables"].as_array().unwrap();
        assert_eq!(cmds[0]["add"]["table"]["name"], "firedrill_r1");
        assert_eq!(cmds[0]["add"]["table"]["family"], "inet");
        let elems = cmds[2]["add"]["element"]["elem"].as_array().unwrap();
        assert_eq!(elems[0]["elem"]["timeout"], 30);
        assert_eq!(elems[0]["elem"]["val"]["prefix"]["len"], 24);
        assert_eq!(elems[1]["elem"]["val"], "10.1.0.1");
        assert!(elems[0]["elem"].get("counter").is_none());
        assert_eq!(cmds[3]["add"]["chain"]["prio"], -300);
        assert_eq!(cmds[3]["add"]["chain"]["hook"], "output");
        let expr = cmds[4]["add"]["rule"]["expr"].as_array().unwrap();
        assert_eq!(expr[0]["match"]["right"], "@f_x_v4");
        assert_eq!(expr[4]["reject"]["type"], "tcp reset");
    }

    #[test]
    fn table_view_reads_listing() {
        let doc = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "firedrill_r1", "handle": 6}},
            {"set": {"family": "inet", "name": "s4", "table": "firedrill_r1", "type": "ipv4_addr",
                     "elem": [{"elem": {"val": "10.9.9.9", "timeout": 30, "expires": 29}}]}},
            {"chain": {"family": "inet", "table": "firedrill_r1", "name": "out", "hook": "output"}},
            {"rule": {"family": "inet", "table": "firedrill_r1", "chain": "out", "handle": 3,
                      "expr": [{"counter": {"packets": 7, "bytes": 420}}, {"drop": null}]}}
        ]});
        let v = TableView::parse(&doc);
        assert_eq!(v.chains, ["out"]);
        assert_eq!(v.sets[0].elems, 1);
        assert_eq!(v.packets_in(&["out".into()]), 7);
        assert!(!v.is_empty());
    }
}

/// Against the real kernel, inside a namespace made for the test (root only).
#[cfg(test)]
mod kernel_tests {
    use super::*;

    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn netns(tag: &str) -> Option<(Ns, Target)> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to create a network namespace");
            return None;
        }
        let name = format!("fdunit-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: `ip netns add` is not available");
            return None;
        }
        let t = Target::Netns { name: name.clone() };
        Some((Ns(name), t))
    }

    #[tokio::test]
    async fn apply_list_and_delete_in_a_namespace() {
        let Some((_ns, target)) = netns("nft") else {
            return;
        };
        let t = RunTable::for_run("20261128T112233Z1a2b").unwrap();
        let mut b = Batch::new();
        t.add_table(&mut b);
        let v4 = ["10.0.0.0/24".parse().unwrap(), "10.1.0.1".parse().unwrap()];
        let v6 = ["2001:db8::/32".parse().unwrap()];
        t.add_address_set(
            &mut b,
            "f_a_v4",
            AddrFamily::V4,
            &v4,
            Duration::from_secs(60),
        );
        t.add_address_set(
            &mut b,
            "f_a_v6",
            AddrFamily::V6,
            &v6,
            Duration::from_secs(60),
        );
        t.add_filter_chain(&mut b, "f_a_out", FilterHook::Output, PRIO_EARLY);
        t.add_filter_chain(&mut b, "f_a_in", FilterHook::Input, PRIO_EARLY);
        t.add_regular_chain(&mut b, "f_a_lim");
        t.add_rule(
            &mut b,
            "f_a_lim",
            vec![ct_state_new(), limit_over(20, 2), counter(), drop()],
            None,
        );
        t.add_rule(
            &mut b,
            "f_a_out",
            vec![
                addr_in_set(AddrFamily::V4, Side::Dst, "f_a_v4"),
                l4proto_in(&["tcp", "udp"]),
                port_in(Side::Dst, &[80, 443]),
                counter(),
                reject_icmpx(Unreachable::Port),
            ],
            Some("firedrill test"),
        );
        t.add_rule(
            &mut b,
            "f_a_in",
            vec![
                addr_in_set(AddrFamily::V6, Side::Src, "f_a_v6"),
                counter(),
                drop(),
            ],
            None,
        );
        t.add_rule(
            &mut b,
            "f_a_out",
            vec![
                addr_in_set(AddrFamily::V6, Side::Dst, "f_a_v6"),
                l4proto_in(&["tcp"]),
                reject_tcp_reset(),
            ],
            None,
        );
        t.add_rule(
            &mut b,
            "f_a_out",
            vec![
                addr_in_set(AddrFamily::V4, Side::Dst, "f_a_v4"),
                jump("f_a_lim"),
            ],
            None,
        );
        let redirect = t.add_redirect(&mut b, "f_p", &v4, 443, 15443, Duration::from_secs(60));
        apply(&target, b).await.unwrap();

        let v = list_table(&target, &t).await.unwrap().unwrap();
        assert_eq!(v.chains.len(), 5, "{v:?}");
        let s4 = v.sets.iter().find(|st| st.name == "f_a_v4").unwrap();
        assert_eq!(s4.elems, 2);
        assert_eq!(v.rules.len(), 7, "{v:?}");
        assert_eq!(redirect.chains, ["f_p_nat_out", "f_p_nat_pre"]);

        // Idempotent deletion: the second time, nothing is left to delete.
        let objs = Objects {
            chains: vec!["f_a_out".into(), "f_a_in".into(), "f_a_lim".into()],
            sets: vec!["f_a_v4".into(), "f_a_v6".into()],
        };
        assert_eq!(delete_objects(&target, &t, &objs).await.unwrap(), objs);
        assert!(delete_objects(&target, &t, &objs).await.unwrap().is_empty());
        assert!(
            !delete_table_if_empty(&target, &t).await.unwrap(),
            "redirect objects remain"
        );
        delete_objects(&target, &t, &redirect).await.unwrap();
        assert!(delete_table_if_empty(&target, &t).await.unwrap());
        assert!(!delete_table(&target, &t).await.unwrap());
        assert!(list_table(&target, &t).await.unwrap().is_none());
        assert!(delete_objects(&target, &t, &objs).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn elements_expire_by_themselves() {
        let Some((_ns, target)) = netns("ttl") else {
            return;
        };
        let t = RunTable::for_run("ttltest").unwrap();
        let mut b = Batch::new();
        t.add_table(&mut b);
        t.add_address_set(
            &mut b,
            "s",
            AddrFamily::V4,
            &["10.0.0.1".parse().unwrap()],
            Duration::from_millis(900),
        );
        apply(&target, b).await.unwrap();
        let v = list_table(&target, &t).await.unwrap().unwrap();
        assert_eq!(v.sets[0].elems, 1);
        std::thread::sleep(Duration::from_millis(1300));
        let v = list_table(&target, &t).await.unwrap().unwrap();
        assert_eq!(v.sets[0].elems, 0, "the element outlived its timeout");
        assert!(delete_table(&target, &t).await.unwrap());
    }
}
