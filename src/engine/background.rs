//! Background verifications (`background: true`): started when the first fault takes
//! effect, run side by side with the other verifications until recovery begins, each
//! with a verdict of its own. Tracked tasks: the window's end (or an abort) cancels
//! them, and recovery waits until every one has returned its record.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::abort::Abort;
use super::check::{check_finished, check_started, run_check};
use super::timeline::Timeline;
use crate::model::{AbortReason, Phase, StepRecord, StepStatus};
use crate::probe::ProbeCtx;
use crate::scenario::Drill;

/// The background verifications of one run: not started until the first fault took
/// effect.
#[derive(Default)]
pub(super) struct Background {
    tracker: TaskTracker,
    /// Ends the window: cancelled when recovery is about to begin (a child of the
    /// abort token, so an abort ends it too).
    stop: Option<CancellationToken>,
    tasks: Vec<JoinHandle<(usize, StepRecord)>>,
}

impl Background {
    /// Starts every background verification of the drill; does nothing the second
    /// time. `disruption_ms` is when the first fault took effect.
    pub(super) fn start(
        &mut self,
        drill: &Arc<Drill>,
        http: &reqwest::Client,
        tl: &Arc<Timeline>,
        abort: &Arc<Abort>,
        disruption_ms: Option<f64>,
    ) {
        if self.stop.is_some() {
            return;
        }
        let stop = abort.token().child_token();
        for (i, c) in drill.scenario.verifications.iter().enumerate() {
            if !c.background {
                continue;
            }
            self.tasks.push(self.tracker.spawn(watch(
                drill.clone(),
                i,
                http.clone(),
                tl.clone(),
                abort.clone(),
                stop.clone(),
                disruption_ms,
            )));
        }
        self.stop = Some(stop);
    }

    /// Whether the window was opened (a fault took effect).
    pub(super) fn started(&self) -> bool {
        self.stop.is_some()
    }

    /// Ends the window and waits for every background verification; their records,
    /// by index in `verifications`.
    pub(super) async fn finish(&mut self) -> Vec<(usize, StepRecord)> {
        if let Some(stop) = &self.stop {
            stop.cancel();
        }
        self.tracker.close();
        self.tracker.wait().await;
        let mut out = Vec::new();
        for t in self.tasks.drain(..) {
            if let Ok(r) = t.await {
                out.push(r);
            }
        }
        out
    }
}

/// Runs background verification `i` over the window that `stop` ends.
async fn watch(
    drill: Arc<Drill>,
    i: usize,
    http: reqwest::Client,
    tl: Arc<Timeline>,
    abort: Arc<Abort>,
    stop: CancellationToken,
    disruption_ms: Option<f64>,
) -> (usize, StepRecord) {
    let c = &drill.scenario.verifications[i];
    let ctx = ProbeCtx {
        targets: &drill.targets,
        http: &http,
        vars: &drill.vars,
    };
    let started_ms = check_started(&tl, Phase::Verification, c);
    let mut out = run_check(c, &ctx, &stop).await;
    if out.interrupted {
        // The window ended before the check's own rule did.
        out.interrupted = false;
        if c.hold_for.is_some() && out.first_held.is_some() {
            // A `for` check returns at its first failed poll: interrupted, it held at
            // every poll of the window.
            out.ok = true;
            out.detail = format!(
                "held until recovery began ({} polls): {}",
                out.attempts,
                out.detail.trim_start_matches("interrupted: ")
            );
        } else if abort.is_tripped() {
            out.interrupted = true;
        } else {
            out.detail = format!(
                "did not hold before recovery began ({} polls): {}",
                out.attempts,
                out.detail.trim_start_matches("interrupted: ")
            );
        }
    }
    let rec = check_finished(
        &tl,
        Phase::Verification,
        c,
        c.critical,
        out,
        started_ms,
        disruption_ms,
    );
    if rec.status == StepStatus::Failed && c.critical {
        abort.trip(
            AbortReason::CriticalFailure,
            format!(
                "critical background verification `{}` failed: {}",
                c.name, rec.detail
            ),
        );
    }
    (i, rec)
}
