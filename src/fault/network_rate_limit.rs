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

use std::time::{Duration, Instant};

use nftables::batch::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::network::{self, Action, Outcome, Protocol, Undo};
use super::{Effect, FaultCtx, FaultError, ms_since};
use crate::duration::HumanDuration;
use crate::nft::{self, FilterHook, Objects, PRIO_AFTER_CONNTRACK, Side};
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
    #[serde(default = "default_verify")]
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

fn default_verify() -> HumanDuration {
    HumanDuration::from_millis(2000)
}

/// At most this many connects are made to observe the limit.
const MAX_PROBES: u32 = 200;

impl NetworkRateLimit {
    pub(crate) fn validate(&self, target: &Target) -> Vec<(String, String)> {
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

    pub(crate) fn describe(&self) -> String {
        let what = match self.unit {
            RateUnit::Connections => "new connections",
            RateUnit::Packets => "packets",
        };
        let ports = if self.ports.is_empty() {
            String::new()
        } else {
            format!(
                " port(s) {}",
                self.ports
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        format!(
            "cap {} {what} to {}{ports} at {}/s (burst {}); excess {}ped",
            self.protocol.name(),
            self.to.join(", "),
            self.per_second,
            self.burst,
            match self.action {
                Action::Drop => "drop",
                Action::Reject => "reject",
            }
        )
    }

    pub(crate) async fn prepare(&self, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
        let resolved = network::resolve(&self.to, &self.ports, ctx.target).await?;
        let prefix = nft::object_prefix(ctx.step);
        let mut objects = Objects {
            chains: vec![format!("{prefix}_out"), format!("{prefix}_lim")],
            sets: Vec::new(),
        };
        if self.rejects_several() {
            objects.chains.push(format!("{prefix}_rej"));
        }
        for g in network::groups(&prefix, &resolved) {
            objects
                .sets
                .extend(g.sets.into_iter().map(|(_, name, _)| name));
        }
        let probe = network::probe_point(ctx.target, &resolved, self.protocol).await?;
        Undo::new(ctx, objects, resolved, probe)
    }

    /// `reject` of more than one protocol needs a chain choosing the refusal.
    fn rejects_several(&self) -> bool {
        self.action == Action::Reject && self.protocol == Protocol::All
    }

    fn batch(
        &self,
        undo: &Undo,
        prefix: &str,
        ttl: Duration,
    ) -> Result<Batch<'static>, FaultError> {
        let table = undo.run_table()?;
        let out = format!("{prefix}_out");
        let lim = format!("{prefix}_lim");
        let rej = format!("{prefix}_rej");
        let mut b = Batch::new();
        table.add_table(&mut b);
        let groups = network::groups(prefix, &undo.resolved);
        for g in &groups {
            for (fam, set, nets) in &g.sets {
                table.add_address_set(&mut b, set, *fam, nets, ttl);
            }
        }
        // Jump targets first: a rule cannot jump to a chain that does not exist yet.
        if self.rejects_several() {
            table.add_regular_chain(&mut b, &rej);
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::All] {
                let mut stmts = match proto {
                    Protocol::Tcp => vec![nft::l4proto_in(&["tcp"])],
                    Protocol::Udp => vec![nft::l4proto_in(&["udp"])],
                    _ => vec![],
                };
                stmts.push(network::verdict(Action::Reject, proto));
                table.add_rule(&mut b, &rej, stmts, None);
            }
        }
        table.add_regular_chain(&mut b, &lim);
        let last = if self.rejects_several() {
            nft::jump(&rej)
        } else {
            network::verdict(self.action, self.protocol)
        };
        table.add_rule(
            &mut b,
            &lim,
            vec![
                nft::limit_over(self.per_second, self.burst),
                nft::counter(),
                last,
            ],
            Some("firedrill rate limit: over the rate"),
        );
        table.add_filter_chain(&mut b, &out, FilterHook::Output, PRIO_AFTER_CONNTRACK);
        for g in &groups {
            for (fam, set, _) in &g.sets {
                let mut stmts = network::selector(*fam, Side::Dst, set, self.protocol, &g.ports);
                if self.unit == RateUnit::Connections {
                    stmts.push(nft::ct_state_new());
                }
                stmts.push(nft::counter());
                stmts.push(nft::jump(&lim));
                table.add_rule(&mut b, &out, stmts, None);
            }
        }
        Ok(b)
    }

    pub(crate) async fn apply(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &Undo,
    ) -> Result<Effect, FaultError> {
        let prefix = nft::object_prefix(ctx.step);
        let batch = self.batch(undo, &prefix, ctx.ttl)?;
        nft::apply(ctx.target, batch)
            .await
            .map_err(|e| FaultError::System(e.to_string()))?;
        let applied_ms = ms_since(ctx.started);
        let table = undo.run_table()?;
        let mut details = serde_json::json!({
            "table": undo.table,
            "chains": undo.objects.chains,
            "sets": undo.objects.sets,
            "resolved": undo.addresses(),
            "ttl_s": undo.ttl_s,
            "per_second": self.per_second,
            "burst": self.burst,
            "rules_applied_ms": applied_ms,
        });
        let Some(p) = &undo.probe else {
            let view = nft::list_table(ctx.target, &table)
                .await
                .map_err(|e| FaultError::System(e.to_string()))?
                .unwrap_or_default();
            let ok = undo.objects.present_in(&view) == undo.objects;
            return Ok(Effect {
                declared: self.describe(),
                measured: if ok {
                    "limit rules in place; not probed: no TCP port among the destinations".into()
                } else {
                    "limit rules missing after apply".into()
                },
                as_declared: ok,
                effective_after_ms: ok.then(|| ms_since(ctx.started)),
                details,
            });
        };

        // Connect until the first connection is turned away (a burst's worth plus a
        // margin, bounded in count and time).
        let attempt = p.attempt_timeout().min(Duration::from_millis(100));
        let max = (self.burst + 20).min(MAX_PROBES);
        let deadline = Instant::now() + self.verify_timeout.0;
        let cancel = ctx.cancel.clone();
        let address = p.address;
        let (accepted, turned_away) = crate::target::netns::run_in(ctx.target, move || {
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
        .map_err(|e| FaultError::System(e.to_string()))?;
        let view = nft::list_table(ctx.target, &table).await.ok().flatten();
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
        details["probe"] = serde_json::json!({
            "address": p.address,
            "before": p.before,
            "accepted": accepted,
            "turned_away": turned_away.map(|(o, _)| o),
        });
        details["limited_packets"] = limited.into();
        details["counted_packets"] = seen.into();
        Ok(Effect {
            declared: self.describe(),
            measured,
            as_declared,
            effective_after_ms: turned_away
                .filter(|_| as_declared)
                .map(|(_, at)| (at - ctx.started).as_secs_f64() * 1000.0),
            details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultSpec;

    fn spec(yaml: &str) -> NetworkRateLimit {
        match serde_yaml::from_str::<FaultSpec>(yaml).unwrap() {
            FaultSpec::NetworkRateLimit(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_validation() {
        let r = spec("kind: network_rate_limit\nwith: { to: ['10.0.0.1:80'], per_second: 20 }");
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
        let r = spec(
            "kind: network_rate_limit\nwith: { to: ['10.0.0.1', '::1'], ports: [80], per_second: 20, action: reject, protocol: all }",
        );
        let undo = Undo {
            target: Target::Local,
            table: "firedrill_r1".into(),
            objects: Objects::default(),
            resolved: vec![network::Resolved {
                to: "x".into(),
                addresses: vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
                ports: vec![80],
            }],
            probe: None,
            ttl_s: 5,
        };
        let doc: serde_json::Value = serde_json::from_str(&nft::to_json(
            r.batch(&undo, "f_r", Duration::from_secs(5)).unwrap(),
        ))
        .unwrap();
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
