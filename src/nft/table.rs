//! The run's table and what faults build in it.
//!
//! Names first: every run owns one `inet` table, `firedrill_<run id>`
//! ([`table_name`]), and every chain and set of one fault is named after the fault
//! ([`object_prefix`]), so a human reading `nft list ruleset` sees whose rules they
//! are, and nothing of ours can collide with anything else. Then [`RunTable`]: the
//! only way to address that table. Its builders add address sets whose elements
//! time out with the fault's ttl (the dead-man), filter and NAT base chains at the
//! priorities below, regular chains, rules, and the proxy's transparent redirect.
//! [`Objects`] is the list of chains and sets one fault created, which its undo
//! record keeps so the revert deletes exactly those.
//!
//! Everything here only adds to a [`Batch`]; nothing runs `nft` (see
//! [`super::exec`]).

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Duration;

use nftables::batch::Batch;
use nftables::expr::{Elem, Expression, NamedExpression};
use nftables::schema::{Chain, NfListObject, Rule, Set, SetFlag, SetType, SetTypeValue, Table};
use nftables::types::{NfChainType, NfFamily, NfHook};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::addr::{AddrFamily, IpNet, net_expr, normalize};
use super::stmt::{Side, Statement, addr_in_set, counter, l4proto_in, port_in, redirect_to};
use super::view::TableView;
use super::{NftError, s};

/// Every table firedrill creates is named `firedrill_<run id>`.
pub(crate) const TABLE_PREFIX: &str = "firedrill_";

/// Longest run id accepted in a table name (nftables allows 255 bytes; shorter
/// names keep `nft list ruleset` readable).
pub(super) const MAX_RUN_ID: usize = 48;

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

    /// Inserts a rule made of `stmts` at the top of `chain` (before the rules
    /// added so far in the batch).
    pub(crate) fn insert_rule(
        &self,
        b: &mut Batch<'static>,
        chain: &str,
        stmts: Vec<Statement<'static>>,
        comment: Option<&str>,
    ) {
        b.add_cmd(nftables::schema::NfCmd::Insert(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: s(&self.name),
            chain: s(chain),
            expr: Cow::Owned(stmts),
            comment: comment.map(s),
            ..Default::default()
        })));
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::nft::exec::to_json;
    use crate::nft::stmt::reject_tcp_reset;

    /// A batch adding run `run_id`'s table and address `sets` (name, family,
    /// elements) whose elements expire after `ttl`.
    pub(in crate::nft) fn with_sets(
        run_id: &str,
        sets: &[(&str, AddrFamily, &[IpNet])],
        ttl: Duration,
    ) -> (RunTable, Batch<'static>) {
        let t = RunTable::for_run(run_id).unwrap();
        let mut b = Batch::new();
        t.add_table(&mut b);
        for (name, fam, elems) in sets {
            t.add_address_set(&mut b, name, *fam, elems, ttl);
        }
        (t, b)
    }

    /// A rule for IPv4 destinations in `set` on ports 80 and 443 of `protos`, with a
    /// counter and `verdict`: the shape of a partition's rules.
    pub(in crate::nft) fn web_rule(
        set: &str,
        protos: &[&str],
        verdict: Statement<'static>,
    ) -> Vec<Statement<'static>> {
        vec![
            addr_in_set(AddrFamily::V4, Side::Dst, set),
            l4proto_in(protos),
            port_in(Side::Dst, &[80, 443]),
            counter(),
            verdict,
        ]
    }

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
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(2000)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn batch_json_has_the_table_set_elements_and_rule() {
        let nets = ["10.0.0.0/24".parse().unwrap(), "10.1.0.1".parse().unwrap()];
        let sets = [("f_x_v4", AddrFamily::V4, &nets[..])];
        let (t, mut b) = with_sets("r1", &sets, Duration::from_secs(30));
        t.add_filter_chain(&mut b, "f_x_out", FilterHook::Output, PRIO_EARLY);
        t.add_rule(
            &mut b,
            "f_x_out",
            web_rule("f_x_v4", &["tcp"], reject_tcp_reset()),
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
}
