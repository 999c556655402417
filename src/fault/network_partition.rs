//! `network_partition`: block traffic between the target and some destinations
//! with nftables rules in the run's own table, expiring by themselves after the ttl.
//!
//! Rules: an `output` chain (egress: `daddr @set [dport P]`) and/or an `input`
//! chain (ingress: `saddr @set [sport P]`) at priority -300, one address set per
//! family and port group whose elements time out with the fault's ttl. Every rule
//! counts what it blocks, so the effect is proven from the kernel's side as well as
//! by a TCP connect from the target that now fails (refused for `reject`, no answer
//! for `drop`).
//!
//! Only that is here: resolving `to:`, the undo record, applying the batch, the
//! verdict's frame and the revert are the shared skeleton in [`super::network`].

use std::time::Instant;

use nftables::batch::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::network::{
    self, Action, Dests, Direction, Group, Measured, NetworkFault, Outcome, Placed, ProbePoint,
    Protocol, Undo,
};
use super::{FaultCtx, FaultError};
use crate::duration::HumanDuration;
use crate::nft::{self, AddrFamily, FilterHook, PRIO_EARLY, RunTable, Side};

/// Parameters of `network_partition`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkPartition {
    /// Destinations: IP addresses, CIDRs or host names (resolved when the fault is injected; the addresses are recorded in the journal), each optionally with `:port` (`[v6]:port` for IPv6), e.g. `10.0.0.5`, `10.0.0.0/24`, `qyapi.weixin.qq.com:443`.
    pub to: Vec<String>,
    /// Ports on the destinations' side (the remote service ports) for entries without their own `:port`. Empty: all ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Protocol to block: `tcp`, `udp`, `icmp` or `all` (with ports: TCP and UDP).
    #[serde(default)]
    pub protocol: Protocol,
    /// `egress` (packets to the destinations), `ingress` (packets from them) or `both`.
    #[serde(default)]
    pub direction: Direction,
    /// `drop` (peers see timeouts) or `reject` (TCP reset / ICMP unreachable: peers fail at once).
    #[serde(default)]
    pub action: Action,
    /// How long to keep trying to observe the effect before declaring the fault not effective.
    #[serde(default = "network::default_verify")]
    pub verify_timeout: HumanDuration,
}

impl NetworkPartition {
    /// The base chains: `output` for egress (destination addresses and ports),
    /// `input` for ingress (source addresses and ports).
    fn hooks(&self, prefix: &str) -> Vec<(String, FilterHook, Side)> {
        let mut hooks = Vec::new();
        if self.direction.egress() {
            hooks.push((format!("{prefix}_out"), FilterHook::Output, Side::Dst));
        }
        if self.direction.ingress() {
            hooks.push((format!("{prefix}_in"), FilterHook::Input, Side::Src));
        }
        hooks
    }
}

impl NetworkFault for NetworkPartition {
    fn dests(&self) -> Dests<'_> {
        Dests::new(&self.to, &self.ports, self.protocol)
    }

    fn describe(&self) -> String {
        let expect = match (self.action, self.direction) {
            (Action::Reject, Direction::Egress | Direction::Both) => "connections refused at once",
            _ => "connections time out",
        };
        let with_port = !self.ports.is_empty()
            || self
                .to
                .iter()
                .any(|d| network::parse_dest(d).is_ok_and(|d| d.port.is_some()));
        let proto = match self.protocol {
            Protocol::All if with_port => "tcp/udp",
            p => p.name(),
        };
        let prep = match self.direction {
            Direction::Egress => "to",
            Direction::Ingress => "from",
            Direction::Both => "to and from",
        };
        format!(
            "{} {proto} traffic {prep} {}{}; expected {expect}",
            self.action.name(),
            self.to.join(", "),
            network::ports_note(&self.ports)
        )
    }

    fn chains(&self, prefix: &str) -> Vec<String> {
        self.hooks(prefix).into_iter().map(|(c, _, _)| c).collect()
    }

    fn add_rules(&self, table: &RunTable, b: &mut Batch<'static>, prefix: &str, groups: &[Group]) {
        // Which rules: with `reject`, each protocol gets the refusal that fits it.
        let protos: Vec<Protocol> = match (self.protocol, self.action) {
            (Protocol::All, Action::Reject) => vec![Protocol::Tcp, Protocol::Udp, Protocol::All],
            (p, _) => vec![p],
        };
        for (chain, hook, side) in &self.hooks(prefix) {
            table.add_filter_chain(b, chain, *hook, PRIO_EARLY);
            if self.action == Action::Reject && self.direction == Direction::Both {
                // Our own refusals travel between the same two parties: a reset
                // or ICMP error answering a blocked packet would be blocked by the
                // other direction's rules, and the refused side would see a
                // timeout instead of the declared fast failure. Let them pass.
                let mut exempt = vec![vec![nft::tcp_rst(), nft::ret()]];
                for fam in [AddrFamily::V4, AddrFamily::V6] {
                    if groups
                        .iter()
                        .any(|g| g.sets.iter().any(|(f, _, _)| *f == fam))
                    {
                        exempt.push(vec![nft::icmp_unreachable(fam), nft::ret()]);
                    }
                }
                for stmts in exempt {
                    table.add_rule(b, chain, stmts, Some("firedrill: let refusals through"));
                }
            }
            for g in groups {
                for (fam, set, _) in &g.sets {
                    for proto in &protos {
                        // With ports, "all" means TCP and UDP, both already covered.
                        if *proto == Protocol::All && protos.len() > 1 && !g.ports.is_empty() {
                            continue;
                        }
                        let mut stmts = network::selector(*fam, *side, set, *proto, &g.ports);
                        stmts.push(nft::counter());
                        stmts.push(network::verdict(self.action, *proto));
                        table.add_rule(b, chain, stmts, None);
                    }
                }
            }
        }
    }

    fn unprobed(&self, undo: &Undo, placed: &Placed) -> (bool, String) {
        let Placed { present, elems } = placed;
        let ok = *present == undo.objects && *elems > 0;
        let measured = if ok {
            format!(
                "rules in place ({} chain(s), {elems} address element(s) expiring in {} s); traffic not probed: no TCP port among the destinations",
                present.chains.len(),
                undo.ttl_s
            )
        } else {
            format!("rules missing after apply: found {present:?}, {elems} element(s)")
        };
        (ok, measured)
    }

    /// Connects until the endpoint stops answering, and checks that our rules
    /// counted the attempts.
    async fn measure(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &Undo,
        p: &ProbePoint,
        _prefix: &str,
        table: &RunTable,
    ) -> Result<Measured, FaultError> {
        // Expected outcome of a connect from the target: refused when our egress
        // rule rejects the SYN; otherwise the handshake never completes.
        let expected = if self.action == Action::Reject && self.direction.egress() {
            Outcome::Refused
        } else {
            Outcome::NoAnswer
        };
        let deadline = Instant::now() + self.verify_timeout.0;
        let (outcome, at, attempts) = network::probe_until(
            ctx.target,
            p.address,
            p.attempt_timeout(),
            deadline,
            ctx.cancel.clone(),
            |o| o != Outcome::Connected,
        )
        .await?;
        let blocked_at_ms = (at - ctx.started).as_secs_f64() * 1000.0;
        let matched = network::counters(ctx, table)
            .await
            .map(|v| v.packets_in(&undo.objects.chains))
            .unwrap_or(0);
        let blocked = outcome != Outcome::Connected;
        // Our own rule must be the cause: either the endpoint answered before the
        // fault, or our rules counted the probe's packets.
        let ours = p.reachable_before() || matched > 0;
        let as_declared = blocked && outcome == expected && ours;
        let measured = if !blocked {
            format!(
                "{} still connects after {attempts} attempt(s) over {}",
                p.address, self.verify_timeout
            )
        } else {
            let why = if ours {
                format!("{matched} packet(s) blocked by the fault's rules")
            } else {
                format!(
                    "but it was already {} before the fault and the rules counted no packet",
                    p.before.describe()
                )
            };
            let mismatch = if outcome == expected {
                String::new()
            } else {
                format!(" (expected {})", expected.describe())
            };
            format!(
                "connect to {} {}{mismatch} {blocked_at_ms:.1} ms after step start (was {} before); {why}",
                p.address,
                outcome.describe(),
                p.before.describe()
            )
        };
        Ok(Measured {
            as_declared,
            measured,
            effective_after_ms: as_declared.then_some(blocked_at_ms),
            probe: serde_json::json!({
                "after": outcome,
                "expected": expected,
                "attempts": attempts,
            }),
            details: serde_json::json!({ "matched_packets": matched }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultSpec;
    use crate::target::Target;

    #[test]
    fn defaults_and_unknown_fields() {
        let p: NetworkPartition =
            network::spec("kind: network_partition\nwith: { to: [10.0.0.1] }");
        assert_eq!(p.direction, Direction::Both);
        assert_eq!(p.action, Action::Drop);
        assert_eq!(p.protocol, Protocol::All);
        let e = serde_yaml::from_str::<FaultSpec>(
            "kind: network_partition\nwith: { to: [10.0.0.1], colour: red }",
        )
        .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn validation_goes_through_faultspec() {
        let f: FaultSpec = serde_yaml::from_str(
            "kind: network_partition\nwith: { to: [10.0.0.0/40, 'x:0'], ports: [0] }",
        )
        .unwrap();
        let errs = f.validate(&Target::Local);
        assert_eq!(errs.len(), 3, "{errs:?}");
        let f: FaultSpec =
            serde_yaml::from_str("kind: network_partition\nwith: { to: [] }").unwrap();
        assert_eq!(f.validate(&Target::Local)[0].0, "with.to");
    }

    #[test]
    fn describe_says_what_to_expect() {
        let p: NetworkPartition = network::spec(
            "kind: network_partition\nwith: { to: [api:443], direction: egress, action: reject }",
        );
        assert_eq!(
            p.describe(),
            "reject tcp/udp traffic to api:443; expected connections refused at once"
        );
    }

    /// The rules of the partition written in `yaml` once `to` resolved to `resolved`.
    fn rules(yaml: &str, resolved: network::Resolved) -> Vec<serde_json::Value> {
        let p: NetworkPartition = network::spec(yaml);
        network::batch_json(&p, vec![resolved], "f_s_123456")["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get("rule").cloned())
            .collect()
    }

    #[test]
    fn reject_gets_a_refusal_per_protocol() {
        let r = rules(
            "kind: network_partition\nwith: { to: [10.0.0.1], direction: both, action: reject }",
            network::Resolved::of("10.0.0.1", &["10.0.0.1"], &[]),
        );
        // Per chain: refusals pass (tcp reset, icmp unreachable), then tcp reset,
        // udp port-unreachable, anything else host-unreachable; out and in.
        assert_eq!(r.len(), 10);
        let last = |i: usize| r[i]["expr"].as_array().unwrap().last().unwrap().clone();
        assert!(last(0).get("return").is_some());
        assert!(last(1).get("return").is_some());
        assert_eq!(last(2)["reject"]["type"], "tcp reset");
        assert_eq!(last(3)["reject"]["expr"], "port-unreachable");
        assert_eq!(last(4)["reject"]["expr"], "host-unreachable");
        assert_eq!(r[7]["chain"], "f_s_123456_in");
        assert_eq!(
            r[7]["expr"][0]["match"]["left"]["payload"]["field"],
            "saddr"
        );
    }

    #[test]
    fn ports_become_a_transport_port_match() {
        let r = rules(
            "kind: network_partition\nwith: { to: ['10.0.0.1:8080'], direction: egress }",
            network::Resolved::of("10.0.0.1:8080", &["10.0.0.1"], &[8080]),
        );
        assert_eq!(r.len(), 1);
        let e = r[0]["expr"].as_array().unwrap();
        assert_eq!(e[2]["match"]["left"]["payload"]["field"], "dport");
        assert_eq!(e[2]["match"]["right"], 8080);
        assert!(e[4].get("drop").is_some());
    }
}
