//! Faults on a group of hosts (an `ssh_group` target): one fault per chosen host,
//! at most the group's `concurrency` at a time.
//!
//! Each host gets its own undo record, prepared, applied and reverted on that host
//! exactly as a single `ssh` target's would be (dead-men included); the group's
//! record ([`Undo`]) holds them all, so the ledger has every host's revert before
//! anything takes effect. The effect is the hosts' effects side by side: declared
//! when every host's is; its details list each host's outcome, and the selection
//! (with a random pick's seed) and the chosen hosts.
//!
//! A host that fails to inject fails the step (exit 3) and the whole group record
//! is reverted: reverting a host where nothing took effect is a no-op, as every
//! revert is idempotent.

use serde::{Deserialize, Serialize};

use super::{Effect, FaultCtx, FaultError, FaultSpec, RevertCtx, Reverted, ms_since};
use crate::target::{BoxFut, Target, bounded};

/// The undo record of a fault on a group: one record per host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Undo {
    /// The group as resolved (its chosen hosts, selection and seed).
    pub target: Target,
    /// Each chosen host's own undo record, in host order.
    pub members: Vec<super::Undo>,
}

fn fan(t: &Target) -> (Vec<Target>, usize) {
    t.members().unwrap_or_else(|| (vec![t.clone()], 1))
}

fn member_ctx<'a>(ctx: &FaultCtx<'a>, t: &'a Target) -> FaultCtx<'a> {
    FaultCtx {
        run_id: ctx.run_id,
        step: ctx.step,
        target: t,
        ttl: ctx.ttl,
        started: ctx.started,
        cancel: ctx.cancel.clone(),
        runtime: ctx.runtime,
    }
}

pub(crate) async fn prepare(spec: &FaultSpec, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
    let (members, limit) = fan(ctx.target);
    let mut futs: Vec<BoxFut<'_, Result<super::Undo, FaultError>>> = Vec::new();
    for t in &members {
        futs.push(Box::pin(async move {
            let c = member_ctx(ctx, t);
            spec.prepare_one(&c)
                .await
                .map_err(|e| FaultError::Precondition(format!("{}: {e}", t.describe())))
        }));
    }
    let results = bounded(futs, limit).await;
    Ok(Undo {
        target: ctx.target.clone(),
        members: results.into_iter().collect::<Result<_, _>>()?,
    })
}

pub(crate) async fn apply(
    spec: &FaultSpec,
    ctx: &FaultCtx<'_>,
    undo: &Undo,
) -> Result<Effect, FaultError> {
    let (members, limit) = fan(ctx.target);
    let mut futs: Vec<BoxFut<'_, (String, Result<Effect, FaultError>)>> = Vec::new();
    for (t, u) in members.iter().zip(&undo.members) {
        futs.push(Box::pin(async move {
            let c = member_ctx(ctx, t);
            (t.describe(), spec.apply_one(&c, u).await)
        }));
    }
    let results = bounded(futs, limit).await;
    let n = results.len();
    let ok = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|e| e.as_declared))
        .count();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(h, r)| r.as_ref().err().map(|e| format!("{h}: {e}")))
        .collect();
    let hosts: Vec<serde_json::Value> = results
        .iter()
        .map(|(h, r)| match r {
            Ok(e) => serde_json::json!({
                "host": h, "as_declared": e.as_declared, "measured": e.measured,
                "effective_after_ms": e.effective_after_ms, "details": e.details,
            }),
            Err(e) => {
                serde_json::json!({ "host": h, "as_declared": false, "error": e.to_string() })
            }
        })
        .collect();
    if !failed.is_empty() {
        return Err(FaultError::System(format!(
            "{} of {n} host(s) failed: {}",
            failed.len(),
            failed.join("; ")
        )));
    }
    let slowest = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok()?.effective_after_ms)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let lines: Vec<String> = results
        .iter()
        .filter_map(|(h, r)| Some(format!("{h}: {}", r.as_ref().ok()?.measured)))
        .collect();
    Ok(Effect {
        declared: format!("on each of {n} host(s): {}", spec.describe()),
        measured: format!("{ok} of {n} host(s) as declared; {}", lines.join("; ")),
        as_declared: ok == n,
        effective_after_ms: (ok == n).then(|| slowest.unwrap_or_else(|| ms_since(ctx.started))),
        details: serde_json::json!({
            "group": ctx.target,
            "concurrency": limit,
            "hosts": hosts,
        }),
    })
}

pub(crate) async fn revert(undo: &Undo, ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
    let (_, limit) = fan(&undo.target);
    let mut futs: Vec<BoxFut<'_, (String, Result<Reverted, FaultError>)>> = Vec::new();
    for u in &undo.members {
        futs.push(Box::pin(async move {
            (u.target().describe(), u.revert_one(ctx).await)
        }));
    }
    let results = bounded(futs, limit).await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(h, r)| r.as_ref().err().map(|e| format!("{h}: {e}")))
        .collect();
    if !failed.is_empty() {
        return Err(FaultError::System(format!(
            "{} of {} host(s) not reverted: {}",
            failed.len(),
            results.len(),
            failed.join("; ")
        )));
    }
    Ok(Reverted {
        measured: results
            .iter()
            .filter_map(|(h, r)| Some(format!("{h}: {}", r.as_ref().ok()?.measured)))
            .collect::<Vec<_>>()
            .join("; "),
        restored_after_ms: None,
        details: serde_json::json!({ "hosts": results.iter().map(|(h, r)| serde_json::json!({
            "host": h, "measured": r.as_ref().map(|x| x.measured.clone()).unwrap_or_default(),
        })).collect::<Vec<_>>() }),
    })
}
