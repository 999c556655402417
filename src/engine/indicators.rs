//! Service indicators: probes that say "the service works for its users", observed
//! at a short interval from just before the first fault until the service is seen
//! restored after the post-recovery check. Downtime, time to detect and the measured
//! RTO are computed from these observations by the pure [`measure`], counted from the
//! disruption (the first fault taking effect), not from recovery start: an outage
//! that mostly happened before recovery began still counts in full.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::timeline::Timeline;
use crate::model::ServiceState;
use crate::probe::ProbeCtx;
use crate::rt::sleep_or_cancel;
use crate::scenario::{Drill, Indicator, indicator_interval, three};

/// One observation of one indicator, in monotonic ms since run start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Obs {
    /// When the probe was issued: the moment the observation is about.
    pub(crate) start_ms: f64,
    /// When its answer (or error, or timeout) came.
    pub(crate) end_ms: f64,
    /// Whether the expectation held.
    pub(crate) ok: bool,
}

/// Everything one indicator saw.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) interval_ms: f64,
    pub(crate) restored_after: u32,
    pub(crate) obs: Vec<Obs>,
}

/// What the indicators say about the disruption, all in ms.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Measured {
    pub(crate) state: ServiceState,
    /// Disruption start until the first down observation.
    pub(crate) detect_ms: Option<f64>,
    /// First down observation until restored.
    pub(crate) downtime_ms: Option<f64>,
    /// Disruption start until restored.
    pub(crate) rto_measured_ms: Option<f64>,
    /// The largest observation interval.
    pub(crate) resolution_ms: Option<f64>,
}

/// The indicators a drill observes: its declared ones, or else its steady-state
/// checks (`steady_state`, or the prechecks) observed at the default interval.
pub(crate) fn declared(drill: &Drill) -> Vec<Indicator> {
    let sc = &drill.scenario;
    if !sc.indicators.is_empty() {
        return sc.indicators.clone();
    }
    sc.steady_checks()
        .iter()
        .map(|c| Indicator {
            name: c.name.clone(),
            probe: c.probe.clone(),
            expect: c.expect.clone(),
            interval: indicator_interval(),
            restored_after: three(),
        })
        .collect()
}

/// The observers of one run: not started until the faults are about to be injected.
#[derive(Default)]
pub(super) struct Indicators {
    /// Each observer stops once it sees its indicator restored.
    settle: CancellationToken,
    /// Each observer stops now.
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Series>>,
    started: bool,
}

impl Indicators {
    /// Starts observing every indicator; does nothing the second time.
    pub(super) fn start(&mut self, drill: &Arc<Drill>, http: &reqwest::Client, tl: &Arc<Timeline>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        self.tasks = declared(drill)
            .into_iter()
            .map(|ind| {
                tokio::spawn(observe(
                    drill.clone(),
                    ind,
                    http.clone(),
                    tl.clone(),
                    self.settle.clone(),
                    self.stop.clone(),
                ))
            })
            .collect();
    }

    /// Lets every observer run until it sees its indicator restored, at most
    /// `budget` (or until `hurry`), then returns what each saw.
    pub(super) async fn finish(
        &mut self,
        budget: Duration,
        hurry: &CancellationToken,
    ) -> Vec<Series> {
        self.settle.cancel();
        let stop = self.stop.clone();
        let hurry = hurry.clone();
        let timer = tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(budget) => {}
                _ = hurry.cancelled() => {}
            }
            stop.cancel();
        });
        let mut all = Vec::new();
        for t in self.tasks.drain(..) {
            if let Ok(s) = t.await {
                all.push(s);
            }
        }
        timer.abort();
        all
    }
}

/// Observes `ind` every `interval` until `stop`, or until `settle` and the last
/// `restored_after` observations were all good.
async fn observe(
    drill: Arc<Drill>,
    ind: Indicator,
    http: reqwest::Client,
    tl: Arc<Timeline>,
    settle: CancellationToken,
    stop: CancellationToken,
) -> Series {
    let ctx = ProbeCtx {
        targets: &drill.targets,
        http: &http,
        vars: &drill.vars,
    };
    let mut series = Series {
        name: ind.name.clone(),
        interval_ms: ms(ind.interval.0),
        restored_after: ind.restored_after,
        obs: Vec::new(),
    };
    loop {
        let t = std::time::Instant::now();
        let start_ms = tl.now_ms();
        let o = tokio::select! {
            o = ind.probe.observe(&ctx) => o,
            _ = stop.cancelled() => break,
        };
        let ok = ind.expect.evaluate(&o).ok;
        series.obs.push(Obs {
            start_ms,
            end_ms: tl.now_ms(),
            ok,
        });
        let good_run = series.obs.iter().rev().take_while(|o| o.ok).count();
        if settle.is_cancelled() && good_run >= ind.restored_after as usize {
            break;
        }
        // Observations start every `interval`, whatever the probe took.
        if !sleep_or_cancel(ind.interval.0.saturating_sub(t.elapsed()), &stop).await {
            break;
        }
    }
    series
}

/// The figures, from what the indicators saw and when the disruption started.
/// Observations answered before the disruption do not count; a down observation
/// issued just before it (answered after) counts as seen at the disruption.
pub(crate) fn measure(series: &[Series], disruption_start_ms: Option<f64>) -> Measured {
    let resolution_ms = series.iter().map(|s| s.interval_ms).reduce(f64::max);
    let not_measured = Measured {
        state: ServiceState::NotMeasured,
        detect_ms: None,
        downtime_ms: None,
        rto_measured_ms: None,
        resolution_ms,
    };
    let Some(ds) = disruption_start_ms else {
        return not_measured;
    };
    // Per indicator: None (saw nothing after the disruption), or (first down, restored).
    let mut measured = 0;
    let mut first_down: Option<f64> = None;
    let mut restored: Option<f64> = None;
    let mut not_restored = false;
    for s in series {
        let after: Vec<&Obs> = s.obs.iter().filter(|o| o.end_ms >= ds).collect();
        if after.is_empty() {
            continue;
        }
        measured += 1;
        let Some(d) = after.iter().position(|o| !o.ok) else {
            continue;
        };
        let down_at = after[d].start_ms.max(ds);
        first_down = Some(first_down.map_or(down_at, |f| f.min(down_at)));
        let back = restored_at(&after, d, s.restored_after);
        match back {
            Some(b) => restored = Some(restored.map_or(b, |r| r.max(b))),
            None => not_restored = true,
        }
    }
    if measured == 0 {
        return not_measured;
    }
    let detect_ms = first_down.map(|f| f - ds);
    match (first_down, restored) {
        (None, _) => Measured {
            state: ServiceState::NeverDown,
            detect_ms: None,
            downtime_ms: Some(0.0),
            rto_measured_ms: Some(0.0),
            resolution_ms,
        },
        _ if not_restored => Measured {
            state: ServiceState::NotRestored,
            detect_ms,
            ..not_measured
        },
        (Some(f), Some(r)) => Measured {
            state: ServiceState::Restored,
            detect_ms,
            downtime_ms: Some(r - f),
            rto_measured_ms: Some(r - ds),
            resolution_ms,
        },
        (Some(_), None) => unreachable!("a down indicator is either restored or not"),
    }
}

/// When the service was restored after the down observation at `down`: the start
/// of the first run of `restored_after` good observations in a row (the figure the
/// RTO and each fault's impact window end at).
fn restored_at(obs: &[&Obs], down: usize, restored_after: u32) -> Option<f64> {
    let n = restored_after.max(1) as usize;
    let mut run = 0;
    for (i, o) in obs.iter().enumerate().skip(down + 1) {
        run = if o.ok { run + 1 } else { 0 };
        if run == n {
            return Some(obs[i + 1 - n].start_ms);
        }
    }
    None
}

/// One fault's own impact window, ms since run start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Impact {
    /// The first down observation at or after the fault took effect.
    pub(crate) start_ms: f64,
    /// When the service was seen restored, or the next fault taking effect if that
    /// came first; None when it was never seen restored and no fault followed.
    pub(crate) end_ms: Option<f64>,
}

/// Each fault's own impact window, from the indicators. `effective_ms[i]` is when
/// fault i took effect (None: it never did, and gets no window). A fault's window
/// opens at the first down observation from its effect on, before the next fault
/// took effect, and closes when the service was seen restored (the first of
/// `restored_after` good observations in a row), or at the next fault's effect if
/// that is earlier: so windows never overlap and no downtime counts twice. A revert
/// does not close it: an outage that outlasts the revert is still this fault's.
/// With several indicators: the earliest down to the latest restore.
pub(crate) fn impacts(series: &[Series], effective_ms: &[Option<f64>]) -> Vec<Option<Impact>> {
    effective_ms
        .iter()
        .map(|e| {
            let e = (*e)?;
            // The next fault to take effect after this one bounds the window.
            let bound = effective_ms
                .iter()
                .flatten()
                .copied()
                .filter(|&n| n > e)
                .reduce(f64::min);
            let mut window: Option<Impact> = None;
            let mut open_ended = false;
            for s in series {
                let after: Vec<&Obs> = s.obs.iter().filter(|o| o.end_ms >= e).collect();
                let Some(d) = after
                    .iter()
                    .position(|o| !o.ok && bound.is_none_or(|b| o.start_ms < b))
                else {
                    continue;
                };
                // Still down from an earlier fault when this one took effect: the
                // window opens at this effect, where the earlier one was closed.
                let earlier = effective_ms.iter().flatten().any(|&p| p < e);
                let carried = earlier
                    && d == 0
                    && s.obs
                        .iter()
                        .rev()
                        .find(|o| o.end_ms < e)
                        .is_some_and(|o| !o.ok);
                let down_at = if carried { e } else { after[d].start_ms.max(e) };
                let back = restored_at(&after, d, s.restored_after);
                let end = match (back, bound) {
                    (Some(r), Some(b)) => Some(r.min(b)),
                    (Some(r), None) => Some(r),
                    (None, b) => b,
                };
                open_ended |= end.is_none();
                window = Some(match window {
                    None => Impact {
                        start_ms: down_at,
                        end_ms: end,
                    },
                    Some(w) => Impact {
                        start_ms: w.start_ms.min(down_at),
                        end_ms: w.end_ms.zip(end).map(|(a, b)| a.max(b)),
                    },
                });
            }
            window.map(|w| Impact {
                end_ms: if open_ended { None } else { w.end_ms },
                ..w
            })
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series observed every 100 ms from t=0, `pattern` one char per observation
    /// (`+` good, `-` down), each answered 10 ms after it was issued.
    fn series(name: &str, pattern: &str, restored_after: u32) -> Series {
        Series {
            name: name.into(),
            interval_ms: 100.0,
            restored_after,
            obs: pattern
                .chars()
                .enumerate()
                .map(|(i, c)| Obs {
                    start_ms: i as f64 * 100.0,
                    end_ms: i as f64 * 100.0 + 10.0,
                    ok: c == '+',
                })
                .collect(),
        }
    }

    #[test]
    fn rto_is_counted_from_the_disruption_not_from_the_first_down() {
        // Disruption at 250; down from 400 (obs 4) to 900; 3 good from 1000.
        let s = series("health", "++++-----++++", 3);
        let m = measure(&[s], Some(250.0));
        assert_eq!(m.state, ServiceState::Restored);
        assert_eq!(m.detect_ms, Some(150.0));
        assert_eq!(m.downtime_ms, Some(500.0));
        assert_eq!(m.rto_measured_ms, Some(650.0));
        assert_eq!(m.resolution_ms, Some(100.0));
    }

    #[test]
    fn a_good_run_shorter_than_restored_after_is_not_restored() {
        // Two good, down again, then three good: restored at the three.
        let m = measure(&[series("h", "+--++-+++", 3)], Some(50.0));
        assert_eq!(m.state, ServiceState::Restored);
        assert_eq!(m.rto_measured_ms, Some(550.0));
        assert_eq!(m.downtime_ms, Some(500.0));
        let m = measure(&[series("h", "+--++", 3)], Some(50.0));
        assert_eq!(m.state, ServiceState::NotRestored);
        assert_eq!(m.rto_measured_ms, None);
        assert_eq!(m.detect_ms, Some(50.0));
    }

    #[test]
    fn never_down_is_zero_and_no_disruption_is_not_measured() {
        let m = measure(&[series("h", "+++++", 3)], Some(150.0));
        assert_eq!(m.state, ServiceState::NeverDown);
        assert_eq!((m.downtime_ms, m.rto_measured_ms), (Some(0.0), Some(0.0)));
        let m = measure(&[series("h", "+++++", 3)], None);
        assert_eq!(m.state, ServiceState::NotMeasured);
        assert_eq!(m.rto_measured_ms, None);
        // Observations all before the disruption observe nothing of it.
        let m = measure(&[series("h", "---", 3)], Some(1000.0));
        assert_eq!(m.state, ServiceState::NotMeasured);
        assert_eq!(measure(&[], Some(0.0)).state, ServiceState::NotMeasured);
    }

    #[test]
    fn each_fault_gets_its_own_window_without_double_counting() {
        // Fault A effective at 150: down 200..=400, restored at 500 (3 good).
        // Fault B effective at 950: down 1000..=1200, restored at 1300.
        let s = series("h", "++---+++++---+++", 3);
        let w = impacts(&[s], &[Some(150.0), Some(950.0)]);
        assert_eq!(
            w,
            vec![
                Some(Impact {
                    start_ms: 200.0,
                    end_ms: Some(500.0)
                }),
                Some(Impact {
                    start_ms: 1000.0,
                    end_ms: Some(1300.0)
                }),
            ]
        );
    }

    #[test]
    fn an_outage_still_running_when_the_next_fault_hits_is_split_at_it() {
        // A at 150, B at 450 while still down; restored at 700.
        let s = series("h", "++-----+++", 3);
        let w = impacts(&[s], &[Some(150.0), Some(450.0)]);
        assert_eq!(
            w[0],
            Some(Impact {
                start_ms: 200.0,
                end_ms: Some(450.0)
            })
        );
        assert_eq!(
            w[1],
            Some(Impact {
                start_ms: 450.0,
                end_ms: Some(700.0)
            })
        );
    }

    #[test]
    fn a_fault_with_no_down_or_no_effect_has_no_window() {
        // A hurts nothing before B; B is never restored; C never took effect.
        let s = series("h", "+++++---", 3);
        let w = impacts(&[s], &[Some(50.0), Some(450.0), None]);
        assert_eq!(w[0], None);
        assert_eq!(
            w[1],
            Some(Impact {
                start_ms: 500.0,
                end_ms: None
            })
        );
        assert_eq!(w[2], None);
    }

    #[test]
    fn several_indicators_span_the_earliest_down_to_the_latest_restore() {
        let a = series("a", "++--+++++++", 3); // down 200, restored 400
        let b = series("b", "+++----++++", 3); // down 300, restored 700
        let m = measure(&[a, b], Some(150.0));
        assert_eq!(m.state, ServiceState::Restored);
        assert_eq!(m.detect_ms, Some(50.0));
        assert_eq!(m.downtime_ms, Some(500.0));
        assert_eq!(m.rto_measured_ms, Some(550.0));
    }
}
