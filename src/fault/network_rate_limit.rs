//! `network_rate_limit`: an upstream that sheds load at L4. New connections (or
//! packets) from the target to the destinations beyond N per second are dropped or
//! rejected, with an nftables `limit` in the run's own table.
//!
//! Rules: an `output` chain at priority -190 (after conntrack, so `ct state new`
//! knows a connection's first packet) selects the traffic and jumps to one
//! `<prefix>_lim` chain holding the single `limit rate over N/second` statement, so
//! every destination, family and port shares one token bucket: the cap is on the
//! total, as an upstream's would be. The addresses sit in sets whose elements expire
//! with the ttl, like a partition's. The effect is measured by connecting until the
//! first connection is turned away, confirmed by the `limit` rule's counter.
//!
//! Only that is here: resolving `to:`, the undo record, applying the batch, the
//! verdict's frame and the revert are the shared skeleton in [`super::network`].

use std::time::{Duration, Instant};

use nftables::batch::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::network::{
    self, Action, Dests, Group, Measured, NetworkFault, Outcome, Placed, ProbePoint, Protocol, Undo,
};
use super::{FaultCtx, FaultError};
use crate::duration::HumanDuration;
use crate::nft::{self, FilterHook, PRIO_AFTER_CONNTRACK, RunTable, Side};
use crate::target::Target;

/// Parameters of `network_rate_limit`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkRateLimit {
    /// Destinations: IP addresses, CIDRs or host names (resolved when the fault is injected; the addresses are recorded in the journal), each optionally with `:port` (`[v6]:port` for IPv6).
    pub to: Vec<String>,
    /// Ports on the destinations' side for entries without their own `:port`. Empty: all ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Protocol to limit: `tcp` (default), `udp`, `icmp` or `all`.
    #[serde(default = "tcp")]
    pub protocol: Protocol,
    /// What is counted: `connections` (new connections, conntrack state `new`) or `packets` (every packet).
    #[serde(default)]
    pub unit: RateUnit,
    /// Allowed rate per second, shared by all destinations; beyond it traffic is dropped or rejected.
    pub per_second: u32,
    /// How many connections (or packets) may pass at once above the rate (token bucket depth).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// `drop` (turned-away connections time out and retry) or `reject` (they fail at once: TCP reset / ICMP unreachable).
    #[serde(default)]
    pub action: Action,
    /// How long to keep trying to observe the limit before declaring the fault not effective.
    #[serde(default = "network::default_verify")]
    pub verify_timeout: HumanDuration,
}

/// What a rate limit counts.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateUnit {
    /// New connections per second (the first packet of each connection).
    #[default]
    Connections,
    /// Packets per second.
    Packets,
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

fn default_burst() -> u32 {
    5
}

/// At most this many connects are made to observe the limit.
const MAX_PROBES: u32 = 200;

impl NetworkRateLimit {
    /// `reject` of more than one protocol needs a chain choosing the refusal.
    fn rejects_several(&self) -> bool {
        self.action == Action::Reject && self.protocol == Protocol::All
    }
}

impl NetworkFault for NetworkRateLimit {
    fn dests(&self) -> Dests<'_> {
        Dests::new(&self.to, &self.ports, self.protocol)
    }

    fn describe(&self) -> String {
        let what = match self.unit {
            RateUnit::Connections => "new connections",
            RateUnit::Packets => "packets",
        };
        format!(
            "cap {} {what} to {}{} at {}/s (burst {}); excess {}ped",
            self.protocol.name(),
            self.to.join(", "),
            network::ports_note(&self.ports),
            self.per_second,
            self.burst,
            self.action.name()
        )
    }

    /// The shared checks, and a rate and a burst that let something through.
    fn validate(&self, target: &Target) -> Vec<(String, String)> {
        let mut errs = network::validate_common(&self.to, &self.ports, self.protocol, target);
        if self.per_second == 0 {
            errs.push((
                "with.per_second".into(),
                "found 0, expected at least 1 (use network_partition to block everything)".into(),
            ));
        }
        if self.burst == 0 {
            errs.push(("with.burst".into(), "found 0, expected at least 1".into()));
        }
        errs
    }

    fn chains(&self, prefix: &str) -> Vec<String> {
        let mut chains = vec![format!("{prefix}_out"), format!("{prefix}_lim")];
        if self.rejects_several() {
            chains.push(format!("{prefix}_rej"));
        }
        chains
    }

    fn add_rules(&self, table: &RunTable, b: &mut Batch<'static>, prefix: &str, groups: &[Group]) {
        let out = format!("{prefix}_out");
        let lim = format!("{prefix}_lim");
        let rej = format!("{prefix}_rej");
        // Jump targets first: a rule cannot jump to a chain that does not exist yet.
        if self.rejects_several() {
            table.add_regular_chain(b, &rej);
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::All] {
                let mut stmts = match proto {
                    Protocol::Tcp => vec![nft::l4proto_in(&["tcp"])],
                    Protocol::Udp => vec![nft::l4proto_in(&["udp"])],
                    _ => vec![],
                };
                stmts.push(network::verdict(Action::Reject, proto));
                table.add_rule(b, &rej, stmts, None);
            }
        }
        table.add_regular_chain(b, &lim);
        let last = if self.rejects_several() {
            nft::jump(&rej)
        } else {
            network::verdict(self.action, self.protocol)
        };
        table.add_rule(
            b,
            &lim,
            vec![
                nft::limit_over(self.per_second, self.burst),
                nft::counter(),
                last,
            ],
            Some("firedrill rate limit: over the rate"),
        );
        table.add_filter_chain(b, &out, FilterHook::Output, PRIO_AFTER_CONNTRACK);
        for g in groups {
            for (fam, set, _) in &g.sets {
                let mut stmts = network::selector(*fam, Side::Dst, set, self.protocol, &g.ports);
                if self.unit == RateUnit::Connections {
                    stmts.push(nft::ct_state_new());
                }
                stmts.push(nft::counter());
                stmts.push(nft::jump(&lim));
                table.add_rule(b, &out, stmts, None);
            }
        }
    }

    fn param_details(&self) -> serde_json::Value {
        serde_json::json!({ "per_second": self.per_second, "burst": self.burst })
    }

    fn unprobed(&self, undo: &Undo, placed: &Placed) -> (bool, String) {
        let ok = placed.present == undo.objects;
        let measured = if ok {
            "limit rules in place; not probed: no TCP port among the destinations"
        } else {
            "limit rules missing after apply"
        };
        (ok, measured.into())
    }

    /// Connects until the first connection is turned away (a burst's worth plus a
    /// margin, bounded in count and time), confirmed by the `limit` rule's counter.
    async fn measure(
        &self,
        ctx: &FaultCtx<'_>,
        _undo: &Undo,
        p: &ProbePoint,
        prefix: &str,
        table: &RunTable,
    ) -> Result<Measured, FaultError> {
        let attempt = p.attempt_timeout().min(Duration::from_millis(100));
        let max = (self.burst + 20).min(MAX_PROBES);
        let deadline = Instant::now() + self.verify_timeout.0;
        let cancel = ctx.cancel.clone();
        let address = p.address;
        let (accepted, turned_away) = if ctx.target.is_remote() {
            network::remote_burst(ctx.target, address, max, attempt).await?
        } else {
            ctx.target
                .in_network(move || {
                    let mut accepted = 0u32;
                    for _ in 0..max {
                        let at = Instant::now();
                        match network::connect_once(address, attempt) {
                            Outcome::Connected => accepted += 1,
                            o => return (accepted, Some((o, at))),
                        }
                        if Instant::now() >= deadline || cancel.is_cancelled() {
                            break;
                        }
                    }
                    (accepted, None)
                })
                .await
                .map_err(|e| FaultError::System(e.to_string()))?
        };
        let view = network::counters(ctx, table).await;
        let lim = format!("{prefix}_lim");
        let limited = view
            .as_ref()
            .map_or(0, |v| v.packets_in(std::slice::from_ref(&lim)));
        let seen = view.as_ref().map_or(0, |v| {
            v.packets_in(std::slice::from_ref(&format!("{prefix}_out")))
        });
        let as_declared = limited > 0 && (accepted > 0 || !p.reachable_before());
        let measured = match turned_away {
            Some((o, at)) => format!(
                "{accepted} connection(s) to {} accepted, then one {} {:.1} ms after step start; the limit turned away {limited} of {seen} counted",
                p.address,
                o.describe(),
                (at - ctx.started).as_secs_f64() * 1000.0
            ),
            None => format!(
                "all {accepted} connection(s) to {} accepted; the limit counted {limited} turned away",
                p.address
            ),
        };
        Ok(Measured {
            as_declared,
            measured,
            effective_after_ms: turned_away
                .filter(|_| as_declared)
                .map(|(_, at)| (at - ctx.started).as_secs_f64() * 1000.0),
            probe: serde_json::json!({
                "accepted": accepted,
                "turned_away": turned_away.map(|(o, _)| o),
            }),
            details: serde_json::json!({ "limited_packets": limited, "counted_packets": seen }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultSpec;

    #[test]
    fn defaults_and_validation() {
        let r: NetworkRateLimit = network::spec(
            "kind: network_rate_limit\nwith: { to: ['10.0.0.1:80'], per_second: 20 }",
        );
        assert_eq!(
            (r.protocol, r.unit, r.burst),
            (Protocol::Tcp, RateUnit::Connections, 5)
        );
        assert_eq!(
            r.describe(),
            "cap tcp new connections to 10.0.0.1:80 at 20/s (burst 5); excess dropped"
        );
        let f: FaultSpec = serde_yaml::from_str(
            "kind: network_rate_limit\nwith: { to: [], per_second: 0, burst: 0 }",
        )
        .unwrap();
        let paths: Vec<String> = f
            .validate(&Target::Local)
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(paths, ["with.to", "with.per_second", "with.burst"]);
        assert!(
            serde_yaml::from_str::<FaultSpec>("kind: network_rate_limit\nwith: { to: [a] }")
                .is_err(),
            "per_second is required"
        );
    }

    #[test]
    fn one_limit_shared_by_every_destination() {
        let r: NetworkRateLimit = network::spec(
            "kind: network_rate_limit\nwith: { to: ['10.0.0.1', '::1'], ports: [80], per_second: 20, action: reject, protocol: all }",
        );
        let resolved = vec![network::Resolved::of("x", &["10.0.0.1", "::1"], &[80])];
        let doc = network::batch_json(&r, resolved, "f_r");
        let limits = doc.to_string().matches("\"limit\"").count();
        assert_eq!(limits, 1, "{doc}");
        let rules: Vec<&serde_json::Value> = doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .filter(|r| r["chain"] == "f_r_out")
            .collect();
        assert_eq!(rules.len(), 2, "one rule per family");
        assert!(rules.iter().all(|r| r.to_string().contains("\"jump\"")));
    }
}
