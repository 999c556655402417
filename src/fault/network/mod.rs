//! The network faults' shared skeleton: what `network_partition` and
//! `network_rate_limit` have in common, and the one lifecycle both follow.
//!
//! The two kinds differ only in the rules they build and in how they read their
//! effect; a kind says that by implementing [`NetworkFault`]. Everything else is
//! here, once:
//!
//! 1. **prepare** ([`NetworkFault::prepare`], no side effects): resolve `to:`
//!    ([`dest`]), name the fault's chains and sets after the step, connect once to
//!    the probe point to learn how it behaves before the fault ([`probe`]), and
//!    return the [`Undo`] record ([`undo`]), which the engine makes durable;
//! 2. **apply** ([`NetworkFault::apply`]): one batch — the run's table, one address
//!    set per family and port group whose elements expire with the ttl (the
//!    dead-man), then the kind's chains and rules — applied with one `nft -j -f -`;
//! 3. **verify**: with a TCP endpoint among the destinations, the kind measures its
//!    effect from the target ([`NetworkFault::measure`]); without one, what the
//!    kernel holds is the evidence ([`NetworkFault::unprobed`]);
//! 4. **revert** ([`Undo::revert`]): delete this fault's chains and sets, confirm
//!    traffic flows again, delete the run table once it is empty.
//!
//! The parameter words both kinds take (`protocol`, `action`, `direction`) are in
//! [`params`]. Everything that touches the kernel goes through [`crate::nft`],
//! inside the run's own table.

mod dest;
mod params;
mod probe;
mod undo;

use std::time::Duration;

use nftables::batch::Batch;

pub(crate) use dest::{Group, Resolved, groups, parse_dest, validate_common};
pub(crate) use params::{
    Action, Direction, Protocol, default_verify, ports_note, selector, verdict,
};
pub(crate) use probe::{Outcome, ProbePoint, connect_once, probe_until, remote_burst};
pub(crate) use undo::Undo;

use super::{Effect, FaultCtx, FaultError, ms_since};
use crate::nft::{self, Objects, RunTable, TableView};
use crate::target::Target;

/// The parameters every network fault has: where its rules apply.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dests<'a> {
    /// Destinations as written (`with.to`).
    pub to: &'a [String],
    /// Ports for the entries without their own `:port` (`with.ports`).
    pub ports: &'a [u16],
    /// The protocol the rules match (`with.protocol`).
    pub protocol: Protocol,
}

impl<'a> Dests<'a> {
    pub(crate) fn new(to: &'a [String], ports: &'a [u16], protocol: Protocol) -> Self {
        Dests {
            to,
            ports,
            protocol,
        }
    }
}

/// A network fault kind. The kind says what is specific to it (its chains and
/// rules, how it reads its effect); the provided methods are the lifecycle both
/// kinds share: [`validate`](Self::validate), [`prepare`](Self::prepare),
/// [`batch`](Self::batch), [`apply`](Self::apply).
pub(crate) trait NetworkFault {
    /// `to`, `ports` and `protocol` of this fault.
    fn dests(&self) -> Dests<'_>;
    /// The declared effect, in words (used by `plan` and the report).
    fn describe(&self) -> String;
    /// The chains this fault creates, named from `prefix` (its sets are named by
    /// [`groups`]).
    fn chains(&self, prefix: &str) -> Vec<String>;
    /// Adds the kind's chains and rules to `b`, in which the run table and the
    /// address sets of `groups` already are.
    fn add_rules(&self, table: &RunTable, b: &mut Batch<'static>, prefix: &str, groups: &[Group]);
    /// The kind's parameters among the effect's details, next to the shared ones.
    fn param_details(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    /// The verdict when no TCP endpoint can be probed: whether what the kernel
    /// holds (`placed`) is this fault, and the words for what was measured.
    fn unprobed(&self, undo: &Undo, placed: &Placed) -> (bool, String);
    /// Observes the effect through the probe point `p`, from the target.
    async fn measure(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &Undo,
        p: &ProbePoint,
        prefix: &str,
        table: &RunTable,
    ) -> Result<Measured, FaultError>;

    /// Static checks of `to` and `ports` (a kind with more parameters adds its own).
    fn validate(&self, target: &Target) -> Vec<(String, String)> {
        let d = self.dests();
        validate_common(d.to, d.ports, d.protocol, target)
    }

    /// Resolves the destinations, names the chains and sets, and observes the
    /// probe point once. Nothing is changed on the target.
    async fn prepare(&self, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
        let d = self.dests();
        let resolved: Vec<Resolved> = dest::resolve(d.to, d.ports, ctx.target).await?;
        let prefix = nft::object_prefix(ctx.step);
        let mut objects = Objects {
            chains: self.chains(&prefix),
            sets: Vec::new(),
        };
        for g in groups(&prefix, &resolved) {
            objects
                .sets
                .extend(g.sets.into_iter().map(|(_, name, _)| name));
        }
        let probe = probe::probe_point(ctx.target, &resolved, d.protocol).await?;
        let mut undo = Undo::new(ctx, objects, resolved, probe)?;
        undo.exempt = ctx.target.control_link().await;
        Ok(undo)
    }

    /// The whole fault as one batch: table, sets with ttl'd elements, then the
    /// kind's chains and rules.
    fn batch(
        &self,
        undo: &Undo,
        prefix: &str,
        ttl: Duration,
    ) -> Result<Batch<'static>, FaultError> {
        let table = undo.run_table()?;
        let mut b = Batch::new();
        table.add_table(&mut b);
        let groups = groups(prefix, &undo.resolved);
        for g in &groups {
            for (fam, set, nets) in &g.sets {
                table.add_address_set(&mut b, set, *fam, nets, ttl);
            }
        }
        self.add_rules(&table, &mut b, prefix, &groups);
        // The engine's own SSH link to a remote host is never ours to cut: the
        // first rules of every chain of the fault let it through.
        if let Some(link) = undo.exempt {
            for chain in &undo.objects.chains {
                for (side_engine, side_ssh) in [
                    (nft::Side::Src, nft::Side::Dst),
                    (nft::Side::Dst, nft::Side::Src),
                ] {
                    table.insert_rule(
                        &mut b,
                        chain,
                        vec![
                            nft::addr_eq(side_engine, link.ip()),
                            nft::l4proto_in(&["tcp"]),
                            nft::port_in(side_ssh, &[link.port()]),
                            nft::accept(),
                        ],
                        Some("firedrill: the engine's ssh link"),
                    );
                }
            }
        }
        Ok(b)
    }

    /// Applies the fault's batch, then verifies its effect: through the probe
    /// point when there is one, otherwise by finding its rules and addresses in
    /// the kernel. Only called after `undo` is durably in the ledger.
    async fn apply(&self, ctx: &FaultCtx<'_>, undo: &Undo) -> Result<Effect, FaultError> {
        let prefix = nft::object_prefix(ctx.step);
        let batch = self.batch(undo, &prefix, ctx.ttl)?;
        nft::apply(ctx.target, batch).await.map_err(system)?;
        let applied_ms = ms_since(ctx.started);
        let table = undo.run_table()?;
        let mut details = serde_json::json!({
            "table": undo.table,
            "chains": undo.objects.chains,
            "sets": undo.objects.sets,
            "resolved": undo.addresses(),
            "ttl_s": undo.ttl_s,
            "rules_applied_ms": applied_ms,
        });
        extend(&mut details, self.param_details());

        let Some(p) = &undo.probe else {
            // No TCP endpoint to try: prove that the rules and addresses are in place.
            let view = nft::list_table(ctx.target, &table)
                .await
                .map_err(system)?
                .unwrap_or_default();
            let placed = Placed {
                present: undo.objects.present_in(&view),
                elems: view
                    .sets
                    .iter()
                    .filter(|s| undo.objects.sets.contains(&s.name))
                    .map(|s| s.elems)
                    .sum(),
            };
            let (ok, measured) = self.unprobed(undo, &placed);
            return Ok(Effect {
                declared: self.describe(),
                measured,
                as_declared: ok,
                effective_after_ms: ok.then(|| ms_since(ctx.started)),
                details,
            });
        };
        let m = self.measure(ctx, undo, p, &prefix, &table).await?;
        let mut probe = serde_json::json!({ "address": p.address, "before": p.before });
        extend(&mut probe, m.probe);
        details["probe"] = probe;
        extend(&mut details, m.details);
        Ok(Effect {
            declared: self.describe(),
            measured: m.measured,
            as_declared: m.as_declared,
            effective_after_ms: m.effective_after_ms,
            details,
        })
    }
}

/// What of a fault the kernel holds right after it was applied.
pub(crate) struct Placed {
    /// The fault's chains and sets found in the run table.
    pub present: Objects,
    /// Address elements (not expired) in the fault's sets.
    pub elems: usize,
}

/// What a kind measured through its probe point.
pub(crate) struct Measured {
    pub as_declared: bool,
    /// In words.
    pub measured: String,
    pub effective_after_ms: Option<f64>,
    /// What the probe point showed, added to `details.probe` next to its
    /// address and what it showed before the fault.
    pub probe: serde_json::Value,
    /// Other kind-specific figures, added to the effect's details.
    pub details: serde_json::Value,
}

/// The run table as the kernel holds it now, for reading counters: `None` when it
/// cannot be read (a missing figure, not a failed fault).
pub(crate) async fn counters(ctx: &FaultCtx<'_>, table: &RunTable) -> Option<TableView> {
    nft::list_table(ctx.target, table).await.ok().flatten()
}

fn system(e: nft::NftError) -> FaultError {
    FaultError::System(e.to_string())
}

fn extend(details: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(d), serde_json::Value::Object(more)) = (details.as_object_mut(), more) {
        d.extend(more);
    }
}

/// The batch `f` builds for `resolved` in table `firedrill_r1`, as nft's JSON.
#[cfg(test)]
pub(crate) fn batch_json(
    f: &impl NetworkFault,
    resolved: Vec<Resolved>,
    prefix: &str,
) -> serde_json::Value {
    let undo = Undo {
        target: Target::Local,
        table: "firedrill_r1".into(),
        objects: Objects::default(),
        resolved,
        probe: None,
        ttl_s: 5,
        exempt: None,
    };
    let b = f.batch(&undo, prefix, Duration::from_secs(5)).unwrap();
    serde_json::from_str(&nft::to_json(b)).unwrap()
}

/// The `with:` of a fault step written in YAML (`kind: …` and `with: …`), read as
/// a scenario reads it (through [`FaultSpec`](super::FaultSpec): the kind's tag,
/// unknown fields refused), then as the kind's parameters `T`.
#[cfg(test)]
pub(crate) fn spec<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str::<super::FaultSpec>(yaml).unwrap();
    let step: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    serde_yaml::from_value(step["with"].clone()).unwrap()
}
