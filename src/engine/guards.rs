//! Guards: stop conditions polled while any fault is active. A critical guard
//! breached `breach_after` polls in a row trips the abort, so the forward phases stop
//! and recovery starts; a non-critical one records the breach and keeps watching.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::abort::Abort;
use super::timeline::Timeline;
use crate::model::{AbortReason, GuardRecord, Phase};
use crate::probe::ProbeCtx;
use crate::rt::sleep_or_cancel;
use crate::scenario::Drill;

/// The guards of one run: not started until the first fault is about to take effect.
#[derive(Default)]
pub(super) struct Guards {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<GuardRecord>>,
    started: bool,
}

impl Guards {
    /// Starts watching every guard of the drill; does nothing the second time.
    pub(super) fn start(
        &mut self,
        drill: &Arc<Drill>,
        http: &reqwest::Client,
        tl: &Arc<Timeline>,
        abort: &Arc<Abort>,
    ) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        self.tasks = (0..drill.scenario.guards.len())
            .map(|i| {
                tokio::spawn(watch(
                    drill.clone(),
                    i,
                    http.clone(),
                    tl.clone(),
                    abort.clone(),
                    self.stop.clone(),
                ))
            })
            .collect();
    }

    /// Stops every guard and returns what each saw.
    pub(super) async fn stop(&mut self) -> Vec<GuardRecord> {
        self.stop.cancel();
        let mut guards = Vec::new();
        for t in self.tasks.drain(..) {
            if let Ok(g) = t.await {
                guards.push(g);
            }
        }
        guards
    }
}

/// Polls guard `i` of the drill until it is breached or `stop` is cancelled.
async fn watch(
    drill: Arc<Drill>,
    i: usize,
    http: reqwest::Client,
    tl: Arc<Timeline>,
    abort: Arc<Abort>,
    stop: CancellationToken,
) -> GuardRecord {
    let g = &drill.scenario.guards[i];
    let ctx = ProbeCtx {
        targets: &drill.targets,
        http: &http,
        vars: &drill.vars,
    };
    let mut rec = GuardRecord {
        name: g.name.clone(),
        description: g.probe.describe(),
        polls: 0,
        failures: 0,
        breached: false,
        breached_ms: None,
        detail: String::new(),
        critical: g.critical,
        breaches: 0,
    };
    let mut consecutive = 0;
    tl.event(
        Phase::Fault,
        "guard_started",
        Some(&g.name),
        format!("guard `{}` watching {}", g.name, rec.description),
    );
    loop {
        let obs = tokio::select! {
            o = g.probe.observe(&ctx) => o,
            _ = stop.cancelled() => break,
        };
        let v = g.expect.evaluate(&obs);
        rec.polls += 1;
        rec.detail = v.detail.clone();
        if v.ok {
            consecutive = 0;
        } else {
            rec.failures += 1;
            consecutive += 1;
            if consecutive >= g.breach_after {
                rec.breached = true;
                rec.breaches += 1;
                rec.breached_ms.get_or_insert(tl.now_ms());
                consecutive = 0;
                if g.critical {
                    tl.event(
                        Phase::Fault,
                        "guard_breached",
                        Some(&g.name),
                        format!("guard `{}` breached: {}", g.name, v.detail),
                    );
                    abort.trip(
                        AbortReason::GuardBreached,
                        format!("guard `{}` breached: {}", g.name, v.detail),
                    );
                    break;
                }
                // Only the first breach goes on the timeline: a guard failing at every
                // poll would flood it; the count is on the record.
                if rec.breaches == 1 {
                    tl.event(
                        Phase::Fault,
                        "guard_breached",
                        Some(&g.name),
                        format!(
                            "guard `{}` breached (non-critical, still watching): {}",
                            g.name, v.detail
                        ),
                    );
                }
            }
        }
        if !sleep_or_cancel(g.interval.0, &stop).await {
            break;
        }
    }
    rec
}
