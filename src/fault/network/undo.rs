//! The undo record of a network fault and its revert: delete this fault's chains
//! and sets from the run table, confirm that traffic to the probe point flows
//! again, and delete the run table once nothing of the run is left in it.
//!
//! Both kinds share it (`Undo::NetworkPartition` and `Undo::NetworkRateLimit` hold
//! the same record): what to remove is a list of objects, whatever rules they held.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::dest::Resolved;
use super::probe::{Outcome, ProbePoint, probe_until};
use crate::fault::{FaultCtx, FaultError, RevertCtx, Reverted, ms_since};
use crate::nft::{self, Objects, RunTable};
use crate::target::Target;

/// The undo record of a network fault: which objects of which run table on which
/// target to delete, and what was resolved and observed at injection time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Undo {
    /// Where the rules live.
    pub target: Target,
    /// The run's table (`firedrill_<run id>`, family inet).
    pub table: String,
    /// This fault's chains and sets in that table.
    pub objects: Objects,
    /// What `to:` resolved to.
    pub resolved: Vec<Resolved>,
    /// The TCP endpoint used to measure the effect, if any.
    pub probe: Option<ProbePoint>,
    /// Element timeout in seconds: when the rules stop matching by themselves.
    pub ttl_s: u32,
    /// On a remote host, the engine's SSH link as the host sees it (the engine's
    /// address and the host's SSH port): the fault's chains accept it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exempt: Option<std::net::SocketAddr>,
}

impl Undo {
    /// Builds the record for a fault of step `step` in run `run_id`.
    pub(crate) fn new(
        ctx: &FaultCtx<'_>,
        objects: Objects,
        resolved: Vec<Resolved>,
        probe: Option<ProbePoint>,
    ) -> Result<Self, FaultError> {
        let table =
            RunTable::for_run(ctx.run_id).map_err(|e| FaultError::Precondition(e.to_string()))?;
        Ok(Undo {
            target: ctx.target.clone(),
            table: table.name().to_string(),
            objects,
            resolved,
            probe,
            ttl_s: nft::ttl_secs(ctx.ttl),
            exempt: None,
        })
    }

    pub(crate) fn run_table(&self) -> Result<RunTable, FaultError> {
        RunTable::from_name(&self.table).map_err(|e| FaultError::Precondition(e.to_string()))
    }

    /// The addresses, for reports.
    pub(crate) fn addresses(&self) -> serde_json::Value {
        serde_json::to_value(&self.resolved).unwrap_or_default()
    }

    /// Deletes this fault's chains and sets (one transaction), confirms traffic
    /// to the probe point flows again when it did before, then deletes the run
    /// table if nothing else of the run is left in it. Idempotent.
    pub(crate) async fn revert(&self, ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
        let start = Instant::now();
        let table = self.run_table()?;
        // A target that no longer exists (a deleted namespace) took its rules with
        // it; failing here forever would only make `recover` unable to ever finish.
        if self.target.is_gone() {
            return Ok(Reverted {
                measured: format!(
                    "{} no longer exists; its rules went with it",
                    self.target.describe()
                ),
                restored_after_ms: None,
                details: serde_json::json!({ "table": table.name(), "namespace_gone": true }),
            });
        }
        let sys = |e: nft::NftError| FaultError::System(e.to_string());
        let deleted = nft::delete_objects(&self.target, &table, &self.objects)
            .await
            .map_err(sys)?;
        let removed_ms = ms_since(start);
        let mut restored_after_ms = None;
        let mut flow = String::new();
        match &self.probe {
            Some(p) if p.reachable_before() && !ctx.hurry => {
                let deadline = Instant::now() + Duration::from_secs(2);
                let (o, _, attempts) = probe_until(
                    &self.target,
                    p.address,
                    p.attempt_timeout(),
                    deadline,
                    CancellationToken::new(),
                    |o| o == Outcome::Connected,
                )
                .await?;
                if o == Outcome::Connected {
                    restored_after_ms = Some(ms_since(start));
                    flow = format!("; {} connects again ({attempts} attempt(s))", p.address);
                } else {
                    flow = format!(
                        "; {} still {} after 2s although it connected before the fault",
                        p.address,
                        o.describe()
                    );
                }
            }
            Some(p) if !ctx.hurry => {
                flow = format!(
                    "; flow not confirmed: {} was already {} before the fault",
                    p.address,
                    p.before.describe()
                );
            }
            _ => {}
        }
        let table_deleted = nft::delete_table_if_empty(&self.target, &table)
            .await
            .map_err(sys)?;
        let what = if deleted.is_empty() {
            "rules already gone".to_string()
        } else {
            format!(
                "removed {} chain(s) and {} set(s) in {removed_ms:.1} ms",
                deleted.chains.len(),
                deleted.sets.len()
            )
        };
        let table_note = if table_deleted {
            format!("; table {} deleted", table.name())
        } else {
            String::new()
        };
        Ok(Reverted {
            measured: format!("{what} on {}{flow}{table_note}", self.target.describe()),
            restored_after_ms,
            details: serde_json::json!({
                "table": table.name(),
                "deleted": deleted,
                "rules_removed_ms": removed_ms,
                "table_deleted": table_deleted,
            }),
        })
    }
}
