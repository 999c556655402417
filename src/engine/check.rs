//! Running one assertion with its timing rule: once (with retries), `within`
//! (eventually) or `for` (continuously).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::rt::sleep_or_cancel;

use super::timeline::Timeline;
use crate::model::{Evidence, Phase, StepRecord, StepStatus};
use crate::probe::{Expect, Observation, ProbeCtx, ProbeSpec};
use crate::scenario::Check;
use crate::secrets::Redactor;

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
    /// Excerpts of the last failed attempts and of the last attempt, oldest first.
    pub evidence: Vec<Evidence>,
}

/// At most this many bytes of each output are kept per attempt.
pub(crate) const EXCERPT_MAX: usize = 2 * 1024;
/// At most this many failed attempts are kept per check (the most recent ones).
pub(crate) const EVIDENCE_FAILED_MAX: usize = 3;

/// Keeps bounded, redacted excerpts of what a check's attempts saw: the last
/// [`EVIDENCE_FAILED_MAX`] failed attempts, and the last attempt even if it held.
struct EvidenceLog {
    redactor: Redactor,
    failed: VecDeque<Evidence>,
    /// The latest attempt's excerpt when it held (a failed one is in `failed`).
    held: Option<Evidence>,
}

impl EvidenceLog {
    fn new(ctx: &ProbeCtx<'_>) -> Self {
        EvidenceLog {
            redactor: Redactor::new(ctx.vars.secret_values()),
            failed: VecDeque::new(),
            held: None,
        }
    }

    fn excerpt(&self, text: &Option<String>) -> Option<String> {
        let text = text.as_deref()?;
        // Redact before cutting: a cut through a secret would leave a prefix the
        // journal-wide redaction no longer recognises.
        let text = self.redactor.redact(text);
        Some(excerpt(&text, EXCERPT_MAX))
    }

    fn of(&self, attempt: u32, held: bool, obs: &Observation) -> Option<Evidence> {
        if obs.stdout.is_none() && obs.stderr.is_none() && obs.body.is_none() {
            return None; // tcp, traffic, transport errors: the verdict says it all
        }
        Some(Evidence {
            attempt,
            held,
            stdout: self.excerpt(&obs.stdout),
            stderr: self.excerpt(&obs.stderr),
            body: self.excerpt(&obs.body),
        })
    }

    fn record(&mut self, attempt: u32, held: bool, obs: &Observation) {
        let e = self.of(attempt, held, obs);
        if held {
            self.held = e;
            return;
        }
        self.held = None;
        if let Some(e) = e {
            if self.failed.len() == EVIDENCE_FAILED_MAX {
                self.failed.pop_front();
            }
            self.failed.push_back(e);
        }
    }

    /// The kept excerpts, oldest first.
    fn finish(&self) -> Vec<Evidence> {
        self.failed.iter().chain(&self.held).cloned().collect()
    }
}

/// The first `max` bytes of `text` (on a character boundary), saying how much was cut.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[{} more bytes]", &text[..cut], text.len() - cut)
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
    let mut log = EvidenceLog::new(ctx);
    let done = |ok,
                attempts,
                first_held,
                detail: String,
                last: Option<Observation>,
                interrupted,
                log: &EvidenceLog| CheckOutcome {
        ok,
        attempts,
        first_held,
        detail,
        duration: start.elapsed(),
        evidence: log.finish(),
        last,
        interrupted,
    };

    if let Some(hold) = check.hold_for {
        // Must hold at every poll until `hold` has elapsed.
        let deadline = start + hold.0;
        loop {
            attempts += 1;
            let (ok, d, obs) = observe(&check.probe, &check.expect, ctx).await;
            log.record(attempts, ok, &obs);
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
                    &log,
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
                    &log,
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
                    &log,
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
        log.record(attempts, ok, &obs);
        last = Some(obs);
        detail = d;
        if ok {
            first_held = Some(start.elapsed());
            return done(true, attempts, first_held, detail, last, false, &log);
        }
        let out_of_time =
            deadline.is_some_and(|dl| Instant::now() + interval > dl) || attempts >= max_attempts;
        if out_of_time {
            let why = match check.within {
                Some(w) => format!("did not hold within {w} ({attempts} polls): {detail}"),
                None if attempts > 1 => format!("failed {attempts} attempts: {detail}"),
                None => detail,
            };
            return done(false, attempts, None, why, last, false, &log);
        }
        if !sleep_or_cancel(interval, cancel).await {
            return done(
                false,
                attempts,
                None,
                format!("interrupted: {detail}"),
                last,
                true,
                &log,
            );
        }
    }
}

/// Puts a check's start on the timeline; when it started.
pub(super) fn check_started(tl: &Timeline, phase: Phase, c: &Check) -> f64 {
    let started_ms = tl.now_ms();
    tl.event(
        phase,
        "step_started",
        Some(&c.name),
        format!("{}: {}", c.name, c.probe.describe()),
    );
    started_ms
}

/// A check's record, and its end on the timeline. A verification's first-held time
/// is counted from the disruption (`disruption_ms`), not from its own start: with a
/// `ramp_up`, the check starts late and its own clock would understate failover.
pub(super) fn check_finished(
    tl: &Timeline,
    phase: Phase,
    c: &Check,
    critical: bool,
    out: CheckOutcome,
    started_ms: f64,
    disruption_ms: Option<f64>,
) -> StepRecord {
    let status = if out.ok {
        StepStatus::Passed
    } else if out.interrupted {
        StepStatus::Skipped
    } else {
        StepStatus::Failed
    };
    let word = match status {
        StepStatus::Passed => "passed",
        StepStatus::Skipped => "interrupted",
        _ if critical => "FAILED",
        _ => "failed (non-critical)",
    };
    let first_held_ms = out.first_held.map(|d| match disruption_ms {
        Some(t0) if phase == Phase::Verification => (started_ms + ms(d) - t0).max(0.0),
        _ => ms(d),
    });
    let held = match (first_held_ms, disruption_ms) {
        (Some(h), Some(_)) if phase == Phase::Verification => {
            format!(", first held {h:.0} ms after the disruption")
        }
        _ => String::new(),
    };
    tl.event(
        phase,
        "step_finished",
        Some(&c.name),
        format!(
            "{}: {word} after {} attempt(s){held}: {}",
            c.name, out.attempts, out.detail
        ),
    );
    StepRecord {
        status,
        critical,
        duration_ms: ms(out.duration),
        attempts: out.attempts,
        first_held_ms,
        within_ms: c.within.map(|w| ms(w.0)),
        detail: out.detail,
        metrics: out.last.map(|o| o.metrics).unwrap_or_default(),
        evidence: out.evidence,
        ..StepRecord::new(phase, &c.name, describe_check(c), started_ms)
    }
}

/// A check in words: its probe and its timing rule.
pub(super) fn describe_check(c: &Check) -> String {
    let timing = match (c.within, c.hold_for) {
        (Some(w), _) => format!(" within {w}"),
        (_, Some(f)) => format!(" for {f}"),
        _ if c.retries > 0 => format!(" ({} retries)", c.retries),
        _ => String::new(),
    };
    format!("{}{timing}", c.probe.describe())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(excerpt("lag=7.5\n", 2048), "lag=7.5\n");
        let long = "é".repeat(1500); // 3000 bytes, 2 per char
        let cut = excerpt(&long, 2047);
        assert!(cut.starts_with(&"é".repeat(1023)), "cut inside a character");
        assert!(
            cut.ends_with("…[954 more bytes]"),
            "{}",
            &cut[cut.len() - 30..]
        );
    }
}
