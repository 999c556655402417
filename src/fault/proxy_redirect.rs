//! Transparent mode: the nftables redirect that sends intercepted traffic to the
//! proxy, built with the shared table code ([`crate::nft`]) in the run's own table.
//!
//! Two NAT chains (`output` for connections made on the target itself, `prerouting`
//! for connections entering it), and per intercepted port a set of IPv4 addresses
//! whose elements expire after the fault's ttl: if the engine is SIGKILLed, the
//! redirect stops matching by itself and traffic goes straight to the real service
//! again. The rule skips packets carrying the proxy's SO_MARK, so the proxy's own
//! connection to the original destination is not redirected back to the proxy.
//!
//! A NAT redirect is decided at a connection's first packet: a connection opened
//! before the fault (a client's pooled keep-alive connection) keeps going straight
//! to the service. With `reset_established`, a filter chain on `output` placed after
//! NAT (where a redirected packet already carries the proxy's address) answers the
//! packets still addressed to an intercepted destination, unmarked, with a TCP
//! reset: only such older connections match, and their clients reconnect through
//! the proxy.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression};
use nftables::stmt::{Match, Operator, Statement};
use serde::{Deserialize, Serialize};

use super::FaultError;
use crate::nft::{self, AddrFamily, FilterHook, IpNet, NatHook, Objects, RunTable, Side};
use crate::target::Target;

/// The redirect of one transparent proxy, as written to the ledger.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RedirectUndo {
    /// Where the rules live (the proxy's target).
    pub target: Target,
    /// The run's table (`firedrill_<run id>`, family inet).
    pub table: String,
    /// This fault's chains and sets in that table.
    pub objects: Objects,
    /// The intercepted destinations.
    pub intercept: Vec<SocketAddr>,
    /// The proxy's port on the target.
    pub port: u16,
    /// SO_MARK of the proxy's own connections (exempt from the redirect).
    pub mark: u32,
    /// Element timeout: when the redirect stops matching by itself.
    pub ttl_s: u32,
    /// Connections opened before the redirect are reset (an extra `output` filter
    /// chain, the last of `objects.chains`).
    #[serde(default)]
    pub reset_established: bool,
}

impl RedirectUndo {
    /// Names everything the redirect will create; no side effects.
    pub(crate) fn plan(
        run_id: &str,
        step: &str,
        target: &Target,
        intercept: &[SocketAddr],
        port: u16,
        mark: u32,
        ttl: Duration,
        reset_established: bool,
    ) -> Result<Self, FaultError> {
        let table = nft::table_name(run_id).map_err(|e| FaultError::Precondition(e.to_string()))?;
        let prefix = format!("{}_px", nft::object_prefix(step));
        let mut objects = Objects {
            chains: vec![format!("{prefix}_out"), format!("{prefix}_pre")],
            sets: Vec::new(),
        };
        if reset_established {
            objects.chains.push(format!("{prefix}_rst"));
        }
        for p in ports(intercept).keys() {
            objects.sets.push(format!("{prefix}_p{p}"));
        }
        Ok(RedirectUndo {
            target: target.clone(),
            table,
            objects,
            intercept: intercept.to_vec(),
            port,
            mark,
            ttl_s: nft::ttl_secs(ttl),
            reset_established,
        })
    }

    fn run_table(&self) -> Result<RunTable, FaultError> {
        RunTable::from_name(&self.table).map_err(|e| FaultError::Precondition(e.to_string()))
    }

    /// Installs the chains, sets and rules in one transaction, on the record's target.
    pub(crate) async fn install(&self) -> Result<(), FaultError> {
        let table = self.run_table()?;
        let mut b = Batch::new();
        table.add_table(&mut b);
        let (out, pre) = (&self.objects.chains[0], &self.objects.chains[1]);
        table.add_nat_chain(&mut b, out, NatHook::Output);
        table.add_nat_chain(&mut b, pre, NatHook::Prerouting);
        let rst = self
            .reset_established
            .then(|| self.objects.chains.get(2))
            .flatten();
        if let Some(rst) = rst {
            // After NAT (priority 0 > -100): redirected packets no longer match.
            table.add_filter_chain(&mut b, rst, FilterHook::Output, 0);
        }
        let ttl = Duration::from_secs(self.ttl_s as u64);
        for ((dport, ips), set) in ports(&self.intercept).iter().zip(&self.objects.sets) {
            let nets: Vec<IpNet> = ips.iter().map(|ip| IpNet::host(*ip)).collect();
            table.add_address_set(&mut b, set, AddrFamily::V4, &nets, ttl);
            // Unmarked TCP to an intercepted address and port, counted; then the verdict.
            let traffic = |verdict: Statement<'static>| {
                vec![
                    mark_is_not(self.mark),
                    nft::addr_in_set(AddrFamily::V4, Side::Dst, set),
                    nft::l4proto_in(&["tcp"]),
                    nft::port_in(Side::Dst, &[*dport]),
                    nft::counter(),
                    verdict,
                ]
            };
            for chain in [out, pre] {
                table.add_rule(
                    &mut b,
                    chain,
                    traffic(nft::redirect_to(self.port)),
                    Some("firedrill proxy redirect"),
                );
            }
            if let Some(rst) = rst {
                table.add_rule(
                    &mut b,
                    rst,
                    traffic(nft::reject_tcp_reset()),
                    Some("firedrill proxy: reset a connection opened before the redirect"),
                );
            }
        }
        nft::apply(&self.target, b)
            .await
            .map_err(|e| FaultError::System(format!("cannot install the redirect: {e}")))
    }

    /// Removes the chains and sets (idempotent), and the run table if it is empty.
    pub(crate) async fn remove(&self) -> Result<(), FaultError> {
        if self.target.is_gone() {
            return Ok(()); // the namespace took its rules with it
        }
        let table = self.run_table()?;
        let sys = |e: nft::NftError| FaultError::System(format!("cannot remove the redirect: {e}"));
        nft::delete_objects(&self.target, &table, &self.objects)
            .await
            .map_err(sys)?;
        nft::delete_table_if_empty(&self.target, &table)
            .await
            .map_err(sys)?;
        Ok(())
    }
}

/// Intercepted addresses grouped by port.
fn ports(intercept: &[SocketAddr]) -> BTreeMap<u16, Vec<IpAddr>> {
    let mut m: BTreeMap<u16, Vec<IpAddr>> = BTreeMap::new();
    for a in intercept {
        let v = m.entry(a.port()).or_default();
        if !v.contains(&a.ip()) {
            v.push(a.ip());
        }
    }
    m
}

/// `meta mark != MARK`.
fn mark_is_not(mark: u32) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Mark })),
        right: Expression::Number(mark),
        op: Operator::NEQ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_objects_per_port() {
        let a: Vec<SocketAddr> = ["10.1.0.2:80", "10.1.0.3:80", "10.1.0.2:8080"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let r = RedirectUndo::plan(
            "run1",
            "slow api",
            &Target::Local,
            &a,
            4000,
            7,
            Duration::from_millis(1500),
            false,
        )
        .unwrap();
        assert_eq!(r.table, "firedrill_run1");
        assert_eq!(r.objects.chains.len(), 2);
        assert_eq!(r.objects.sets.len(), 2);
        assert!(r.objects.sets[0].ends_with("_p80"));
        assert_eq!(r.ttl_s, 2);
        assert!(
            RedirectUndo::plan(
                "bad-id",
                "s",
                &Target::Local,
                &a,
                1,
                1,
                Duration::ZERO,
                false
            )
            .is_err()
        );
    }
}
