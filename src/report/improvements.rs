//! Identified improvements: deterministic rules over the run model.
//!
//! Each rule has a stable id (documented in `docs/reports.md`), a fixed severity, and
//! produces evidence quoting this run's own figures plus a concrete recommendation.
//! Rules read only the [`RunRecord`], so re-rendering a journal gives the same list.
//! Output order: severity (high first), then the position of the step concerned in
//! the run; run-level findings sit at the step they belong to (a guard breach at the
//! step running when it happened, the RTO at the steady-state re-check).

use super::words::human_ms;
use crate::model::{FaultRecord, Improvement, Phase, RunRecord, Severity, StepRecord, StepStatus};

/// `slow-detection` fires when a `within` check first held after more than this share
/// of its `within`.
pub const SLOW_DETECTION_SHARE: f64 = 0.5;
/// `rto-near` fires when recovery used more than this share of the RTO (but met it).
pub const RTO_NEAR_SHARE: f64 = 0.8;

/// `traffic-regression` fires when the success rate of `during` or `after` is lower
/// than `before` by more than this (an absolute difference: 0.02 = 2 points).
pub const REGRESSION_SUCCESS_DROP: f64 = 0.02;
/// ... or when its p99 or max latency is more than this factor of `before`'s ...
pub const REGRESSION_LATENCY_FACTOR: f64 = 2.0;
/// ... and also more than this many ms above it: on a quiet loopback run a p99 of
/// 0.4 ms becoming 1.5 ms is noise, not a regression.
pub const REGRESSION_LATENCY_FLOOR_MS: f64 = 100.0;
/// Phases with fewer requests than this (either side) are not compared: one slow
/// request among five is not a trend.
pub const REGRESSION_MIN_REQUESTS: f64 = 20.0;

/// Derives the improvements of a run, ordered by severity then step order.
pub fn derive(record: &RunRecord) -> Vec<Improvement> {
    let mut found: Vec<(usize, Improvement)> = Vec::new();
    for (i, s) in record.steps.iter().enumerate() {
        for imp in step_rules(record, s) {
            found.push((i, imp));
        }
    }
    for g in record.guards.iter().filter(|g| g.breached) {
        let at = g.breached_ms.unwrap_or(record.duration_ms);
        let (severity, title, recommendation) = if g.critical {
            (
                Severity::High,
                format!("guard \"{}\" breached", g.name),
                "The drill was stopped to protect the system: find out why the \
                 fault hurt more than the guard allows, then reduce the blast radius (a lower \
                 level, a smaller target) or fix the degradation before running it again.",
            )
        } else {
            (
                Severity::Medium,
                format!("non-critical guard \"{}\" breached", g.name),
                "The drill went on (the guard is not critical), but the fault hurt \
                 more than the guard allows: find out why, and make the guard critical once \
                 the limit is one the system must keep.",
            )
        };
        let times = if g.breaches > 1 {
            format!(" ({} breaches in all)", g.breaches)
        } else {
            String::new()
        };
        found.push((
            step_at(record, at),
            Improvement {
                rule: "guard-breached".into(),
                severity,
                title,
                evidence: format!(
                    "breached at {} into the run after {} failed poll(s) of {} ({}){times}: {}",
                    human_ms(at),
                    g.failures,
                    g.polls,
                    g.description,
                    g.detail
                ),
                recommendation: recommendation.into(),
                step: None,
                owner: None,
                due: None,
                status: Default::default(),
            },
        ));
    }
    for imp in notification_rule(record) {
        found.push((record.steps.len(), imp));
    }
    if let Some(imp) = rto_rule(record) {
        let at = record
            .steps
            .iter()
            .position(|s| s.phase == Phase::SteadyState)
            .unwrap_or(record.steps.len());
        found.push((at, imp));
    }
    // Stable: equal keys keep rule order within a step.
    found.sort_by_key(|(i, imp)| (imp.severity, *i));
    // Every finding starts with the exercise's defaults: an owner, a due date and a
    // status, so the record can be followed up.
    let x = &record.exercise;
    found
        .into_iter()
        .map(|(_, imp)| Improvement {
            owner: x.finding_owner.clone(),
            due: x.finding_due.clone(),
            status: x.finding_status,
            ..imp
        })
        .collect()
}

/// What the service indicators saw, for a failed verification with a `within`: the
/// run's own downtime explains the failure ("down 2.0 s against a 1 s `within`")
/// better than the check's last verdict alone. Empty when nothing connects them.
fn service_context(record: &RunRecord, s: &StepRecord) -> String {
    use crate::model::ServiceState as S;
    let o = &record.objectives;
    let Some(within) = s.within_ms.filter(|_| s.phase == Phase::Verification) else {
        return String::new();
    };
    let res = o
        .resolution_ms
        .map_or(String::new(), |r| format!(", resolution {}", human_ms(r)));
    // The check's deadline on the disruption's clock: `within` runs from its own start.
    let deadline = o
        .disruption_start_ms
        .map_or(within, |t0| (s.started_ms - t0).max(0.0) + within);
    match (o.service, o.downtime_ms, o.rto_measured_ms) {
        (S::Restored, Some(down), Some(rto)) if rto > deadline => format!(
            "; the service indicators saw the service down {} and restored only {} after the disruption{res}, later than this check's {} `within` allowed ({} after the disruption): it ran out before the service was back, so shorten the outage (e.g. the restart or failover delay) or allow a longer `within`",
            human_ms(down),
            human_ms(rto),
            human_ms(within),
            human_ms(deadline)
        ),
        (S::Restored, Some(down), Some(rto)) => format!(
            "; the service indicators saw the service down {} and restored {} after the disruption{res}, within this check's {} `within`: the check itself expects something the restored service did not show",
            human_ms(down),
            human_ms(rto),
            human_ms(within)
        ),
        (S::NotRestored, _, _) => format!(
            "; the service indicators never saw the service restored{res}: no `within` could have held"
        ),
        (S::NeverDown, _, _) => format!(
            "; the service indicators never saw the service down{res}: the failure is in what this check expects, not an outage"
        ),
        _ => String::new(),
    }
}

/// A channel that did not get every message: whoever relies on it did not hear
/// that a drill was running, or how it ended.
fn notification_rule(record: &RunRecord) -> Vec<Improvement> {
    let mut by_channel: std::collections::BTreeMap<&str, (usize, Vec<String>)> =
        std::collections::BTreeMap::new();
    for n in &record.notifications {
        let e = by_channel.entry(n.channel.as_str()).or_default();
        e.0 += 1;
        if !n.delivered {
            e.1.push(format!("{}: {}", n.event, n.detail));
        }
    }
    by_channel
        .into_iter()
        .filter(|(_, (_, failed))| !failed.is_empty())
        .map(|(channel, (sent, failed))| Improvement {
            rule: "notification-failed".into(),
            severity: Severity::Low,
            title: format!("notifications to \"{channel}\" failed"),
            evidence: format!(
                "{} of {sent} not delivered: {}",
                failed.len(),
                failed.join("; ")
            ),
            recommendation: "Check the channel's URL and key and that the endpoint is \
                reachable from where drills run: the people who rely on it were not told \
                about this run. The drill itself was not affected."
                .into(),
            step: None,
            owner: None,
            due: None,
            status: Default::default(),
        })
        .collect()
}

/// Index of the last step that had started by `t_ms` (0 when none had).
fn step_at(record: &RunRecord, t_ms: f64) -> usize {
    record
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status != StepStatus::Skipped && s.started_ms <= t_ms)
        .map(|(i, _)| i)
        .next_back()
        .unwrap_or(0)
}

fn failed(s: &StepRecord) -> bool {
    matches!(s.status, StepStatus::Failed | StepStatus::Error)
}

fn imp(
    rule: &str,
    severity: Severity,
    s: &StepRecord,
    title: String,
    evidence: String,
    recommendation: &str,
) -> Improvement {
    Improvement {
        rule: rule.into(),
        severity,
        title,
        evidence,
        recommendation: recommendation.into(),
        step: Some(s.name.clone()),
        owner: None,
        due: None,
        status: Default::default(),
    }
}

fn step_rules(record: &RunRecord, s: &StepRecord) -> Vec<Improvement> {
    let mut out = Vec::new();
    let attempts = format!("{} attempt(s) in {}", s.attempts, human_ms(s.duration_ms));
    match s.phase {
        Phase::Precheck | Phase::Verification if s.critical && failed(s) => {
            let rec = if s.phase == Phase::Precheck {
                "Restore the steady state (or fix the precheck) before drilling: no fault was \
                 injected, and a drill only proves something when it starts from a healthy system."
            } else {
                "The behaviour this verification proves did not happen: fix the failover path \
                 (or the expectation, if it is wrong) and re-run the drill before relying on it."
            };
            out.push(imp(
                "critical-failure",
                Severity::High,
                s,
                format!("critical {} \"{}\" failed", s.phase.as_str(), s.name),
                format!(
                    "failed after {attempts}: {}{}",
                    s.detail,
                    service_context(record, s)
                ),
                rec,
            ));
        }
        Phase::Precheck | Phase::Verification if !s.critical && failed(s) => out.push(imp(
            "noncritical-failure",
            Severity::Medium,
            s,
            format!("non-critical {} \"{}\" failed", s.phase.as_str(), s.name),
            format!(
                "failed after {attempts} (did not fail the drill): {}{}",
                s.detail,
                service_context(record, s)
            ),
            "Find out why it did not hold and fix the behaviour; if it matters for business \
             continuity, make it `critical: true` so CI catches it.",
        )),
        Phase::Recovery if failed(s) => out.push(imp(
            "recovery-step-failed",
            Severity::High,
            s,
            format!("recovery step \"{}\" failed", s.name),
            format!(
                "{} failed after {}: {}",
                s.description,
                human_ms(s.duration_ms),
                s.detail
            ),
            "Fix the recovery command and rehearse it on its own: a recovery that fails during \
             a drill will fail during an incident.",
        )),
        Phase::AfterRecovery if failed(s) => out.push(imp(
            "after-recovery-failed",
            if s.critical {
                Severity::High
            } else {
                Severity::Medium
            },
            s,
            format!("after-recovery assertion \"{}\" failed", s.name),
            format!("failed after {attempts}: {}", s.detail),
            "What must be true once the faults are gone is not: check the system by hand now \
             (e.g. two primaries after a thawed old primary), then fix the recovery path.",
        )),
        Phase::SteadyState if failed(s) => out.push(imp(
            "steady-state-not-restored",
            Severity::High,
            s,
            "steady state not restored after recovery".into(),
            format!(
                "steady-state checks still failing {} after recovery started ({} attempt(s)): {}",
                human_ms(s.duration_ms),
                s.attempts,
                s.detail
            ),
            "Check the system by hand now; then find which dependency does not come back by \
             itself and add a recovery step (or fix the self-healing) for it.",
        )),
        _ => {}
    }
    if s.phase == Phase::Precheck && s.status == StepStatus::Passed && s.attempts > 1 {
        out.push(imp(
            "precheck-retried",
            Severity::Low,
            s,
            format!("precheck \"{}\" passed only after retries", s.name),
            format!("passed after {attempts}: {}", s.detail),
            "The steady state was flaky before any fault was injected: stabilise the system \
             (or the probe) so that drill results are not blurred by pre-existing noise.",
        ));
    }
    // `within` runs from the check's own start, while a verification's first-held
    // time is counted from the disruption: compare on the check's own clock.
    let own_held = s.first_held_own_ms(record.objectives.disruption_start_ms);
    if let (Some(within), Some(held)) = (s.within_ms, own_held)
        && s.status == StepStatus::Passed
        && within > 0.0
        && held > SLOW_DETECTION_SHARE * within
    {
        out.push(imp(
            "slow-detection",
            Severity::Medium,
            s,
            format!("\"{}\" held late in its `within` window", s.name),
            format!(
                "first held after {} of its {} `within` ({:.0}%; threshold: more than {:.0}%)",
                human_ms(held),
                human_ms(within),
                100.0 * held / within,
                100.0 * SLOW_DETECTION_SHARE
            ),
            "Failover is close to its deadline: shorten failure detection in the system \
             under test (health-check interval, timeouts, circuit-breaker thresholds) so it \
             switches sooner, or raise `within` deliberately if the delay is acceptable.",
        ));
    }
    if let Some(f) = &s.fault {
        fault_rules(record, s, f, &mut out);
    }
    regression_rule(s, &mut out);
    delivery_rules(s, &mut out);
    out
}

/// `traffic-regression`: a traffic entry whose `during` or `after` phase is clearly
/// worse than its `before` phase, whether or not the scenario declared a threshold.
/// Clearly worse: the success rate lower by more than [`REGRESSION_SUCCESS_DROP`],
/// or the p99 or max latency higher than [`REGRESSION_LATENCY_FACTOR`] times
/// `before`'s and by more than [`REGRESSION_LATENCY_FLOOR_MS`]; each phase compared
/// needs [`REGRESSION_MIN_REQUESTS`]. Without `before` figures nothing is compared.
fn regression_rule(s: &StepRecord, out: &mut Vec<Improvement>) {
    let m = &s.metrics;
    let get = |phase: &str, k: &str| m.get(&format!("{phase}.{k}")).copied();
    let enough = |phase: &str| get(phase, "count").is_some_and(|n| n >= REGRESSION_MIN_REQUESTS);
    if !enough("before") {
        return;
    }
    for phase in ["during", "after"] {
        if !enough(phase) {
            continue;
        }
        let mut worse = Vec::new();
        if let (Some(b), Some(p)) = (get("before", "success_rate"), get(phase, "success_rate"))
            && b - p > REGRESSION_SUCCESS_DROP
        {
            worse.push(format!(
                "success rate {:.2}% against {:.2}% before",
                100.0 * p,
                100.0 * b
            ));
        }
        for (k, label) in [("p99_ms", "p99"), ("max_ms", "max")] {
            if let (Some(b), Some(p)) = (get("before", k), get(phase, k))
                && p > REGRESSION_LATENCY_FACTOR * b
                && p - b > REGRESSION_LATENCY_FLOOR_MS
            {
                worse.push(format!("{label} {p:.1} ms against {b:.1} ms before"));
            }
        }
        if worse.is_empty() {
            continue;
        }
        out.push(imp(
            "traffic-regression",
            Severity::Medium,
            s,
            format!(
                "traffic \"{}\" worse {phase} than before the faults",
                s.name
            ),
            format!(
                "{phase} ({} requests vs {}): {} (rule: success rate lower by more than {:.0} \
                 points, or p99/max over {}x before and over {} ms more)",
                get(phase, "count").unwrap_or(0.0),
                get("before", "count").unwrap_or(0.0),
                worse.join(", "),
                100.0 * REGRESSION_SUCCESS_DROP,
                REGRESSION_LATENCY_FACTOR,
                REGRESSION_LATENCY_FLOOR_MS
            ),
            if phase == "after" {
                "Users still feel the drill after recovery: find what stays degraded once the \
                 faults are reverted (cold caches, a pool that did not reconnect, a replica \
                 catching up) and add a recovery step or an after-recovery check for it."
            } else {
                "Users felt the fault: if this is the expected cost, write it down as a \
                 `traffic:` threshold for the phase; otherwise shorten failover (retries, \
                 timeouts, health-check interval) so fewer requests fail or stall."
            },
        ));
    }
}

/// `message-loss` and `message-duplicates`: a `delivery:` entry (its figures carry a
/// `duplicate_rate`) that found acknowledged messages never delivered, or messages
/// delivered more than once: whether or not the scenario declared a threshold.
fn delivery_rules(s: &StepRecord, out: &mut Vec<Improvement>) {
    let m = &s.metrics;
    if !m.contains_key("duplicate_rate") {
        return;
    }
    let g = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let phases = |what: &str| {
        crate::probe::traffic::BUCKETS
            .iter()
            .filter(|b| g(&format!("{b}.{what}")) > 0.0)
            .map(|b| format!("{} {b}", g(&format!("{b}.{what}"))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if g("lost") > 0.0 {
        out.push(imp(
            "message-loss",
            Severity::High,
            s,
            format!(
                "\"{}\": {} acknowledged message(s) lost, measured RPO {}",
                s.name,
                g("lost"),
                human_ms(g("rpo_ms"))
            ),
            format!(
                "{} of {} acknowledged messages never arrived in any sink (loss rate {:.2}%; by phase of sending: {}); \
                 the data-loss window (first lost message sent to last lost one acknowledged) is {}",
                g("lost"),
                g("acknowledged"),
                100.0 * g("loss_rate"),
                phases("lost"),
                human_ms(g("rpo_ms"))
            ),
            "The system acknowledged messages it then dropped: make the acknowledgement \
             mean durable (write messages to a persistent queue or spool before answering, \
             keep them there until a channel confirms delivery, and drain it when a channel \
             returns), or stop acknowledging while every channel is down.",
        ));
    }
    if g("duplicated") > 0.0 {
        out.push(imp(
            "message-duplicates",
            Severity::High,
            s,
            format!(
                "\"{}\": {} message(s) delivered more than once",
                s.name,
                g("duplicated")
            ),
            format!(
                "{} extra copies among {} delivered messages (duplicate rate {:.2}%; by phase of sending: {})",
                g("duplicated"),
                g("delivered"),
                100.0 * g("duplicate_rate"),
                phases("duplicated")
            ),
            "A send whose outcome is unknown (a timeout) was sent again, to the same or \
             another channel, and both copies arrived: send an idempotency key or use the \
             API's duplicate check (WeCom `enable_duplicate_check`), and never re-send a \
             message in doubt through another channel (for the shipped relay: \
             `--safe-failover`).",
        ));
    }
}

fn fault_rules(record: &RunRecord, s: &StepRecord, f: &FaultRecord, out: &mut Vec<Improvement>) {
    if let Some(e) = &f.effect
        && !e.as_declared
    {
        out.push(imp(
            "effect-mismatch",
            Severity::High,
            s,
            format!("fault \"{}\" did not take the declared effect", s.name),
            format!("declared: {}; measured: {}", e.declared, e.measured),
            "The drill did not test what it declares: fix the fault's parameters or target \
             (process pattern, address, namespace) until the measured effect matches.",
        ));
    }
    if let Some(r) = &f.revert
        && !r.ok
    {
        out.push(imp(
            "revert-failed",
            Severity::High,
            s,
            format!("fault \"{}\" could not be reverted", s.name),
            format!(
                "revert failed after {}: {}",
                human_ms(r.duration_ms),
                r.error.as_deref().unwrap_or("no error recorded")
            ),
            "Something may be left behind: run `firedrill recover`, check the target by \
             hand, and fix the revert path before the next drill.",
        ));
    }
    // A fault whose effect differed from the declared one is reported by
    // `effect-mismatch`; coverage is judged only for faults that took effect as declared.
    let Some((from, to)) =
        active_window(record, s).filter(|_| f.effect.as_ref().is_some_and(|e| e.as_declared))
    else {
        return;
    };
    let verifications: Vec<&StepRecord> = record
        .steps
        .iter()
        .filter(|v| v.phase == Phase::Verification)
        .collect();
    let covered = verifications.iter().any(|v| {
        v.attempts > 0
            && v.status != StepStatus::Skipped
            && v.started_ms <= to
            && v.started_ms + v.duration_ms >= from
    });
    if !covered {
        let why = if verifications.is_empty() {
            "the scenario has no verifications".to_string()
        } else {
            let skipped = verifications
                .iter()
                .filter(|v| v.status == StepStatus::Skipped)
                .count();
            format!(
                "none of the {} verification(s) ran while it was active ({skipped} skipped)",
                verifications.len()
            )
        };
        out.push(imp(
            "fault-uncovered",
            Severity::Medium,
            s,
            format!("no verification covered fault \"{}\"", s.name),
            format!(
                "active from {} to {} into the run; {why}",
                human_ms(from),
                human_ms(to)
            ),
            "Add a verification that runs while this fault is active (e.g. a `within` check on \
             the fallback path); without one the drill proves the fault can be injected, not \
             that the system copes with it.",
        ));
    }
    if f.reversible == Some(false) {
        let how = f
            .revert
            .as_ref()
            .and_then(|r| r.result.as_ref())
            .map(|r| r.measured.as_str())
            .unwrap_or("no revert possible");
        out.push(imp(
            "fault-irreversible",
            Severity::Low,
            s,
            format!("fault \"{}\" cannot be undone by the engine", s.name),
            format!("{} on {}: {how}", f.kind, f.target),
            if f.kind == "pod_kill" {
                // The fault measures the controller's replacement itself.
                "Recovery from deleted pods is the controller's: the pod replacement table shows \
                 how long it took per pod; keep `recovery_timeout` at what the service can afford, \
                 and watch the service during the kill with indicators or guards."
            } else {
                "Recovery from this fault relies on the system itself (supervisor restart, replica \
                 takeover): verify that mechanism explicitly, e.g. a verification that the process \
                 came back, or rehearse with a reversible variant (SIGSTOP) first."
            },
        ));
    }
}

/// `rto-exceeded` / `rto-near`: the measured RTO (disruption until the service
/// indicators were restored) against the declared RTO.
fn rto_rule(record: &RunRecord) -> Option<Improvement> {
    let o = &record.objectives;
    let (rto, took) = (o.rto_ms?, o.rto_measured_ms?);
    if rto <= 0.0 {
        return None;
    }
    let share = took / rto;
    let (rule, severity, title, recommendation) = if took > rto {
        (
            "rto-exceeded",
            Severity::High,
            "recovery time objective exceeded",
            "Recovery is slower than promised: shorten the slowest part of the recovery \
             (see the timeline: detection, time until recovery started, revert, recovery steps, time until the indicators were restored), \
             automate manual steps, or renegotiate the RTO with the business owner.",
        )
    } else if share > RTO_NEAR_SHARE {
        (
            "rto-near",
            Severity::Medium,
            "recovery time close to the objective",
            "Little headroom: a slightly worse incident would miss the RTO; speed up the \
             slowest part of the recovery or agree a realistic RTO.",
        )
    } else {
        return None;
    };
    Some(Improvement {
        rule: rule.into(),
        severity,
        title: title.into(),
        evidence: format!(
            "service restored {} after the disruption (measured RTO) against an RTO of {} ({:.0}% of it; warning above {:.0}%){}",
            human_ms(took),
            human_ms(rto),
            100.0 * share,
            100.0 * RTO_NEAR_SHARE,
            rto_breakdown(record)
        ),
        recommendation: recommendation.into(),
        step: None,
        owner: None,
        due: None,
        status: Default::default(),
    })
}

/// Where the measured RTO went, from the figures the run has: the time until the
/// indicators saw the service down, how long it stayed down, and the fault whose own
/// impact window was the longest. Empty when the indicators measured none of it.
fn rto_breakdown(record: &RunRecord) -> String {
    let o = &record.objectives;
    let mut parts = Vec::new();
    if let (Some(d), Some(down)) = (o.detect_ms, o.downtime_ms) {
        let res = o
            .resolution_ms
            .map_or(String::new(), |r| format!(", resolution {}", human_ms(r)));
        parts.push(format!(
            "the indicators saw the service down {} after the disruption and it stayed down {}{res}",
            human_ms(d),
            human_ms(down)
        ));
    }
    let longest = record
        .steps
        .iter()
        .filter_map(|s| Some((s, s.fault.as_ref()?.impact_ms?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((s, ms)) = longest {
        parts.push(format!(
            "the longest impact was fault \"{}\"'s ({})",
            s.name,
            human_ms(ms)
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join("; "))
    }
}

/// When a fault was in effect, ms since run start: from the moment its effect was
/// observed until its revert finished (or, when no revert is recorded, the end of the
/// run). None when it never took effect.
pub(crate) fn active_window(record: &RunRecord, s: &StepRecord) -> Option<(f64, f64)> {
    let f = s.fault.as_ref()?;
    let e = f.effect.as_ref()?;
    let from = s.started_ms + e.effective_after_ms.unwrap_or(s.duration_ms);
    let to = f
        .revert
        .as_ref()
        .map_or(record.duration_ms, |r| r.started_ms + r.duration_ms);
    Some((from, to.max(from)))
}

#[cfg(test)]
mod tests;
