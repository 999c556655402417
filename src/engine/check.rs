//! Running one assertion with its timing rule: once (with retries), `within`
//! (eventually) or `for` (continuously).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::rt::sleep_or_cancel;

use crate::probe::{Expect, Observation, ProbeCtx, ProbeSpec};
use crate::scenario::Check;

/// The outcome of a check.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub ok: bool,
    pub attempts: u32,
    /// Time from start until the expectation first held.
    pub first_held: Option<Duration>,
    pub detail: String,
    pub duration: Duration,
    pub last: Option<Observation>,
    pub interrupted: bool,
}

async fn observe(
    probe: &ProbeSpec,
    expect: &Expect,
    ctx: &ProbeCtx<'_>,
) -> (bool, String, Observation) {
    let obs = probe.observe(ctx).await;
    let v = expect.evaluate(&obs);
    (v.ok, v.detail, obs)
}

/// Runs a check. `cancel` interrupts waiting (the drill is aborting).
pub async fn run_check(
    check: &Check,
    ctx: &ProbeCtx<'_>,
    cancel: &CancellationToken,
) -> CheckOutcome {
    let start = Instant::now();
    let interval = check.interval.0;
    let mut attempts = 0;
    let mut first_held = None;
    let mut last;
    let mut detail;
    let done = |ok, attempts, first_held, detail: String, last, interrupted| CheckOutcome {
        ok,
        attempts,
        first_held,
        detail,
        duration: start.elapsed(),
        last,
        interrupted,
    };

    if let Some(hold) = check.hold_for {
        // Must hold at every poll until `hold` has elapsed.
        let deadline = start + hold.0;
        loop {
            attempts += 1;
            let (ok, d, obs) = observe(&check.probe, &check.expect, ctx).await;
            last = Some(obs);
            if !ok {
                let at = start.elapsed();
                return done(
                    false,
                    attempts,
                    first_held,
                    format!("broke after {:.1}s: {d}", at.as_secs_f64()),
                    last,
                    false,
                );
            }
            first_held.get_or_insert(start.elapsed());
            detail = d;
            if Instant::now() >= deadline {
                return done(
                    true,
                    attempts,
                    first_held,
                    format!("held for {hold} ({attempts} polls): {detail}"),
                    last,
                    false,
                );
            }
            if !sleep_or_cancel(interval.min(deadline - Instant::now()), cancel).await {
                return done(
                    false,
                    attempts,
                    first_held,
                    format!("interrupted: {detail}"),
                    last,
                    true,
                );
            }
        }
    }

    let deadline = check.within.map(|w| start + w.0);
    let max_attempts = if deadline.is_some() {
        u32::MAX
    } else {
        1 + check.retries
    };
    loop {
        attempts += 1;
        let (ok, d, obs) = observe(&check.probe, &check.expect, ctx).await;
        last = Some(obs);
        detail = d;
        if ok {
            first_held = Some(start.elapsed());
            return done(true, attempts, first_held, detail, last, false);
        }
        let out_of_time =
            deadline.is_some_and(|dl| Instant::now() + interval > dl) || attempts >= max_attempts;
        if out_of_time {
            let why = match check.within {
                Some(w) => format!("did not hold within {w} ({attempts} polls): {detail}"),
                None if attempts > 1 => format!("failed {attempts} attempts: {detail}"),
                None => detail,
            };
            return done(false, attempts, None, why, last, false);
        }
        if !sleep_or_cancel(interval, cancel).await {
            return done(
                false,
                attempts,
                None,
                format!("interrupted: {detail}"),
                last,
                true,
            );
        }
    }
}
