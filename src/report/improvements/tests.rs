//! Rule tables: for every rule, runs where it fires and runs where it must not.

use std::collections::BTreeMap;

use test_case::test_case;

use super::*;
use crate::fault::{Effect, Reverted};
use crate::model::*;
use crate::scenario::Level;

fn step(phase: Phase, name: &str, started_ms: f64, duration_ms: f64) -> StepRecord {
    StepRecord {
        phase,
        name: name.into(),
        status: StepStatus::Passed,
        critical: true,
        started_ms,
        duration_ms,
        description: format!("{name} probe"),
        attempts: 1,
        first_held_ms: None,
        within_ms: None,
        detail: "ok".into(),
        fault: None,
        metrics: BTreeMap::new(),
        evidence: Vec::new(),
    }
}

/// A clean run on which no rule fires: precheck, SIGSTOP fault (effect 100 ms after
/// its start, reverted at 20 s), a verification held after 10 s of a 60 s `within`,
/// a guard that held, a recovery step, steady state back after 10 s of a 60 s RTO.
fn base() -> RunRecord {
    let mut fault = step(Phase::Fault, "freeze relay", 1_000.0, 120.0);
    fault.fault = Some(FaultRecord {
        kind: "process_kill".into(),
        target: "local".into(),
        level: Level::Smoke,
        ttl_ms: 600_000.0,
        ledger_seq: Some(1),
        reversible: Some(true),
        effect: Some(Effect {
            declared: "SIGSTOP relay".into(),
            measured: "stopped 1 process".into(),
            as_declared: true,
            effective_after_ms: Some(100.0),
            details: serde_json::Value::Null,
        }),
        revert: Some(RevertRecord {
            ok: true,
            started_ms: 20_000.0,
            duration_ms: 30.0,
            result: Some(Reverted {
                measured: "SIGCONT sent".into(),
                restored_after_ms: Some(5.0),
                details: serde_json::Value::Null,
            }),
            error: None,
        }),
        impact_start_ms: None,
        impact_end_ms: None,
        impact_ms: None,
    });
    let mut verif = step(Phase::Verification, "fails over", 2_000.0, 10_000.0);
    verif.within_ms = Some(60_000.0);
    verif.first_held_ms = Some(10_000.0);
    verif.attempts = 11;
    let mut steady = step(Phase::SteadyState, "steady state", 20_000.0, 10_000.0);
    steady.first_held_ms = Some(10_000.0);
    RunRecord {
        journal_version: JOURNAL_VERSION,
        tool: ToolInfo {
            name: "firedrill".into(),
            version: "test".into(),
            commit: None,
        },
        run_id: "run-1".into(),
        scenario: ScenarioInfo {
            name: "s".into(),
            description: None,
            owner: None,
            file: "s.yaml".into(),
            sha256: "00".into(),
            labels: BTreeMap::new(),
            text: None,
        },
        host: "h".into(),
        operator: "o".into(),
        level: Level::Full,
        vars: BTreeMap::new(),
        started_at: "2025-01-01T00:00:00.000Z".into(),
        finished_at: "2025-01-01T00:00:31.000Z".into(),
        duration_ms: 31_000.0,
        outcome: Outcome {
            status: Status::Passed,
            exit_code: 0,
            reason: "ok".into(),
            aborted: None,
        },
        objectives: ObjectivesRecord {
            rto_ms: Some(60_000.0),
            max_duration_ms: 900_000.0,
            recovery_ms: Some(10_000.0),
            rto_met: Some(true),
            service: ServiceState::Restored,
            disruption_start_ms: Some(1_000.0),
            detect_ms: Some(200.0),
            downtime_ms: Some(9_800.0),
            rto_measured_ms: Some(10_000.0),
            resolution_ms: Some(200.0),
            ..ObjectivesRecord::default()
        },
        timeline: Vec::new(),
        steps: vec![
            step(Phase::Precheck, "healthy", 0.0, 50.0),
            fault,
            verif,
            step(Phase::Recovery, "restart", 20_100.0, 500.0),
            steady,
        ],
        guards: vec![GuardRecord {
            name: "budget".into(),
            description: "GET /metrics".into(),
            polls: 20,
            failures: 0,
            breached: false,
            breached_ms: None,
            detail: "ok".into(),
            critical: true,
            breaches: 0,
        }],
        improvements: Vec::new(),
        ledger: "l".into(),
        rehearsal: false,
        notifications: Vec::new(),
        exercise: Default::default(),
    }
}

fn by_phase(r: &mut RunRecord, p: Phase) -> &mut StepRecord {
    r.steps.iter_mut().find(|s| s.phase == p).unwrap()
}
fn fault(r: &mut RunRecord) -> &mut FaultRecord {
    by_phase(r, Phase::Fault).fault.as_mut().unwrap()
}
fn fail(s: &mut StepRecord) {
    s.status = StepStatus::Failed;
    s.detail = "status 503 (expected 200)".into();
}

fn noop(_: &mut RunRecord) {}
fn verification_fails(r: &mut RunRecord) {
    fail(by_phase(r, Phase::Verification));
}
fn precheck_fails(r: &mut RunRecord) {
    fail(by_phase(r, Phase::Precheck));
}
fn noncritical_fails(r: &mut RunRecord) {
    let v = by_phase(r, Phase::Verification);
    v.critical = false;
    fail(v);
}
fn noncritical_passes(r: &mut RunRecord) {
    by_phase(r, Phase::Verification).critical = false;
}
fn recovery_fails(r: &mut RunRecord) {
    fail(by_phase(r, Phase::Recovery));
}
fn steady_fails(r: &mut RunRecord) {
    fail(by_phase(r, Phase::SteadyState));
}
fn precheck_retried(r: &mut RunRecord) {
    by_phase(r, Phase::Precheck).attempts = 3;
}
fn precheck_retried_and_failed(r: &mut RunRecord) {
    precheck_retried(r);
    precheck_fails(r);
}
/// The verification first held `ms` after its own start: its record counts from the
/// disruption (1 s into the run; the verification starts at 2 s).
fn held_at(r: &mut RunRecord, ms: f64) {
    by_phase(r, Phase::Verification).first_held_ms = Some(ms + 1_000.0);
}
fn held_late(r: &mut RunRecord) {
    held_at(r, 31_000.0);
}
fn held_at_half(r: &mut RunRecord) {
    held_at(r, 30_000.0);
}
fn held_late_without_within(r: &mut RunRecord) {
    held_late(r);
    by_phase(r, Phase::Verification).within_ms = None;
}
fn effect_differs(r: &mut RunRecord) {
    let e = fault(r).effect.as_mut().unwrap();
    e.as_declared = false;
    e.effective_after_ms = None;
}
fn verifications_skipped(r: &mut RunRecord) {
    let v = by_phase(r, Phase::Verification);
    v.status = StepStatus::Skipped;
    v.attempts = 0;
}
fn no_verifications(r: &mut RunRecord) {
    r.steps.retain(|s| s.phase != Phase::Verification);
}
fn verification_before_fault(r: &mut RunRecord) {
    let v = by_phase(r, Phase::Verification);
    v.started_ms = 100.0;
    v.duration_ms = 500.0;
}
fn guard_breached(r: &mut RunRecord) {
    let g = &mut r.guards[0];
    g.breached = true;
    g.breached_ms = Some(5_000.0);
    g.failures = 3;
    g.detail = "$.error_rate = 0.2 (expected < 0.05)".into();
}
fn revert_failed(r: &mut RunRecord) {
    let rv = fault(r).revert.as_mut().unwrap();
    rv.ok = false;
    rv.result = None;
    rv.error = Some("kill(4242, SIGCONT): permission denied".into());
}
fn irreversible(r: &mut RunRecord) {
    fault(r).reversible = Some(false);
}
fn reversibility_unknown(r: &mut RunRecord) {
    fault(r).reversible = None;
}
fn recovered_in(r: &mut RunRecord, ms: f64) {
    r.objectives.rto_measured_ms = Some(ms);
    r.objectives.rto_met = Some(ms <= 60_000.0);
}
fn rto_exceeded(r: &mut RunRecord) {
    recovered_in(r, 61_000.0);
}
fn rto_exactly(r: &mut RunRecord) {
    recovered_in(r, 60_000.0);
}
fn rto_near(r: &mut RunRecord) {
    recovered_in(r, 49_000.0);
}
fn rto_at_80(r: &mut RunRecord) {
    recovered_in(r, 48_000.0);
}
fn no_rto(r: &mut RunRecord) {
    rto_exceeded(r);
    r.objectives.rto_ms = None;
}

/// Adds a traffic entry: `before` 100 requests, all ok, p99 5 ms, max 8 ms; then
/// `during` and `after` as given (count, success rate, p99, max).
fn traffic(r: &mut RunRecord, during: (f64, f64, f64, f64), after: (f64, f64, f64, f64)) {
    let mut t = step(Phase::Verification, "checkout load", 60.0, 30_000.0);
    for (phase, (n, ok, p99, max)) in [
        ("before", (100.0, 1.0, 5.0, 8.0)),
        ("during", during),
        ("after", after),
    ] {
        if n == 0.0 {
            continue;
        }
        for (k, v) in [
            ("count", n),
            ("success_rate", ok),
            ("p50_ms", 1.0),
            ("p95_ms", 3.0),
            ("p99_ms", p99),
            ("max_ms", max),
        ] {
            t.metrics.insert(format!("{phase}.{k}"), v);
        }
    }
    r.steps.push(t);
}
const QUIET: (f64, f64, f64, f64) = (100.0, 1.0, 5.0, 8.0);
fn traffic_errors_during(r: &mut RunRecord) {
    traffic(r, (100.0, 0.90, 5.0, 8.0), QUIET);
}
fn traffic_slow_after(r: &mut RunRecord) {
    traffic(r, QUIET, (100.0, 1.0, 450.0, 900.0));
}
/// Loopback noise: p99 triples but by 10 ms; one error in 100 (1 point).
fn traffic_noise(r: &mut RunRecord) {
    traffic(r, (100.0, 0.99, 15.0, 60.0), (100.0, 1.0, 12.0, 100.0));
}
fn traffic_without_before(r: &mut RunRecord) {
    traffic(r, (100.0, 0.5, 900.0, 2_000.0), QUIET);
    let t = r.steps.last_mut().unwrap();
    t.metrics.retain(|k, _| !k.starts_with("before."));
}
fn traffic_too_few_during(r: &mut RunRecord) {
    traffic(r, (5.0, 0.4, 900.0, 2_000.0), QUIET);
}

#[test_case("traffic-regression", traffic_errors_during, true ; "success rate down 10 points during")]
#[test_case("traffic-regression", traffic_slow_after, true ; "p99 and max far above before after recovery")]
#[test_case("traffic-regression", traffic_noise, false ; "loopback noise below the floor")]
#[test_case("traffic-regression", traffic_without_before, false ; "no before figures")]
#[test_case("traffic-regression", traffic_too_few_during, false ; "too few requests during")]
#[test_case("critical-failure", verification_fails, true ; "critical verification failed")]
#[test_case("critical-failure", precheck_fails, true ; "precheck failed")]
#[test_case("critical-failure", noncritical_fails, false ; "non-critical failure is not critical")]
#[test_case("noncritical-failure", noncritical_fails, true ; "non-critical failed")]
#[test_case("noncritical-failure", noncritical_passes, false ; "non-critical passed")]
#[test_case("noncritical-failure", verification_fails, false ; "critical failure is not non-critical")]
#[test_case("recovery-step-failed", recovery_fails, true ; "recovery step failed")]
#[test_case("recovery-step-failed", noop, false ; "recovery step passed")]
#[test_case("steady-state-not-restored", steady_fails, true ; "steady state failed")]
#[test_case("steady-state-not-restored", noop, false ; "steady state passed")]
#[test_case("precheck-retried", precheck_retried, true ; "precheck passed on third attempt")]
#[test_case("precheck-retried", precheck_retried_and_failed, false ; "retried precheck that failed")]
#[test_case("precheck-retried", noop, false ; "precheck passed first time")]
#[test_case("slow-detection", held_late, true ; "held after 52 percent of within")]
#[test_case("slow-detection", held_at_half, false ; "held at exactly half of within")]
#[test_case("slow-detection", held_late_without_within, false ; "no within declared")]
#[test_case("effect-mismatch", effect_differs, true ; "measured effect differs")]
#[test_case("effect-mismatch", noop, false ; "effect as declared")]
#[test_case("fault-uncovered", verifications_skipped, true ; "every verification skipped")]
#[test_case("fault-uncovered", no_verifications, true ; "no verifications at all")]
#[test_case("fault-uncovered", verification_before_fault, true ; "verification ran before the fault")]
#[test_case("fault-uncovered", effect_differs, false ; "mismatch reported by its own rule")]
#[test_case("fault-uncovered", noop, false ; "verification ran while active")]
#[test_case("guard-breached", guard_breached, true ; "guard breached")]
#[test_case("guard-breached", noop, false ; "guard held")]
#[test_case("revert-failed", revert_failed, true ; "revert failed")]
#[test_case("revert-failed", noop, false ; "revert ok")]
#[test_case("fault-irreversible", irreversible, true ; "sigkill cannot be undone")]
#[test_case("fault-irreversible", noop, false ; "sigstop is reversible")]
#[test_case("fault-irreversible", reversibility_unknown, false ; "old journal without the field")]
#[test_case("rto-exceeded", rto_exceeded, true ; "recovery above rto")]
#[test_case("rto-exceeded", rto_exactly, false ; "recovery equal to rto")]
#[test_case("rto-exceeded", no_rto, false ; "no rto declared")]
#[test_case("rto-near", rto_near, true ; "recovery at 82 percent of rto")]
#[test_case("rto-near", rto_exactly, true ; "recovery at 100 percent of rto")]
#[test_case("rto-near", rto_at_80, false ; "recovery at exactly 80 percent")]
#[test_case("rto-near", rto_exceeded, false ; "exceeded is reported instead")]
fn rule(rule: &str, mutate: fn(&mut RunRecord), fires: bool) {
    let mut r = base();
    mutate(&mut r);
    let found = derive(&r);
    let hits: Vec<&Improvement> = found.iter().filter(|i| i.rule == rule).collect();
    assert_eq!(
        !hits.is_empty(),
        fires,
        "rule {rule}: found {:#?}",
        found.iter().map(|i| &i.rule).collect::<Vec<_>>()
    );
    for i in hits {
        assert!(!i.evidence.is_empty() && !i.recommendation.is_empty());
    }
}

#[test]
fn a_clean_run_has_no_findings() {
    assert_eq!(derive(&base()), Vec::<Improvement>::new());
}

fn only(r: &RunRecord, rule: &str) -> Improvement {
    let mut v: Vec<Improvement> = derive(r).into_iter().filter(|i| i.rule == rule).collect();
    assert_eq!(v.len(), 1, "{rule}");
    v.remove(0)
}

#[test]
fn evidence_quotes_the_runs_figures() {
    let mut r = base();
    held_late(&mut r);
    let i = only(&r, "slow-detection");
    assert_eq!(i.severity, Severity::Medium);
    assert_eq!(i.step.as_deref(), Some("fails over"));
    assert_eq!(
        i.evidence,
        "first held after 31.0 s of its 1 min `within` (52%; threshold: more than 50%)"
    );

    let mut r = base();
    rto_near(&mut r);
    r.objectives.downtime_ms = Some(48_800.0);
    fault(&mut r).impact_ms = Some(48_800.0);
    assert_eq!(
        only(&r, "rto-near").evidence,
        "service restored 49.0 s after the disruption (measured RTO) against an RTO of 1 min \
         (82% of it; warning above 80%); the indicators saw the service down 200 ms after the \
         disruption and it stayed down 48.8 s, resolution 200 ms; the longest impact was \
         fault \"freeze relay\"'s (48.8 s)"
    );
    // Nothing measured by the indicators: the bare figures.
    r.objectives.detect_ms = None;
    fault(&mut r).impact_ms = None;
    assert_eq!(
        only(&r, "rto-near").evidence,
        "service restored 49.0 s after the disruption (measured RTO) against an RTO of 1 min (82% of it; warning above 80%)"
    );

    let mut r = base();
    traffic_slow_after(&mut r);
    let i = only(&r, "traffic-regression");
    assert_eq!(i.step.as_deref(), Some("checkout load"));
    assert!(i.title.contains("after"), "{}", i.title);
    assert!(
        i.evidence.starts_with(
            "after (100 requests vs 100): p99 450.0 ms against 5.0 ms before, max 900.0 ms against 8.0 ms before"
        ),
        "{}",
        i.evidence
    );

    let mut r = base();
    revert_failed(&mut r);
    let i = only(&r, "revert-failed");
    assert!(i.evidence.contains("30 ms") && i.evidence.contains("permission denied"));

    let mut r = base();
    verifications_skipped(&mut r);
    let i = only(&r, "fault-uncovered");
    assert_eq!(
        i.evidence,
        "active from 1.1 s to 20.0 s into the run; none of the 1 verification(s) ran while it \
         was active (1 skipped)"
    );
}

#[test]
fn ordered_by_severity_then_step_order() {
    let mut r = base();
    precheck_retried(&mut r); // low, step 0
    held_late(&mut r); // medium, step 2
    revert_failed(&mut r); // high, step 1
    recovery_fails(&mut r); // high, step 3
    guard_breached(&mut r); // high, at 5 s: while step 2 (the verification) ran
    rto_near(&mut r); // medium, at the steady-state step (4)
    let rules: Vec<String> = derive(&r).into_iter().map(|i| i.rule).collect();
    assert_eq!(
        rules,
        [
            "revert-failed",
            "guard-breached",
            "recovery-step-failed",
            "slow-detection",
            "rto-near",
            "precheck-retried"
        ]
    );
    assert_eq!(derive(&r), derive(&r), "deterministic");
}

/// A failed `within` verification is explained by the run's own downtime: the
/// quickstart's "answers within 1 s of the kill" fails because the worker was down
/// 2.0 s, and the finding says so with the measured figures.
#[test]
fn a_failed_within_is_explained_by_the_measured_downtime() {
    let mut r = base();
    r.objectives.downtime_ms = Some(2_000.0);
    r.objectives.rto_measured_ms = Some(2_150.0);
    // The check starts 1 s after the disruption (at 2 s; the disruption at 1 s): its
    // deadline is 2 s after the disruption.
    let v = by_phase(&mut r, Phase::Verification);
    v.critical = false;
    v.within_ms = Some(1_000.0);
    fail(v);
    let i = only(&r, "noncritical-failure");
    assert!(
        i.evidence.ends_with(
            "status 503 (expected 200); the service indicators saw the service down 2.0 s \
             and restored only 2.1 s after the disruption, resolution 200 ms, later than \
             this check's 1.0 s `within` allowed (2.0 s after the disruption): it ran out \
             before the service was back, so shorten the outage (e.g. the restart or \
             failover delay) or allow a longer `within`"
        ),
        "{}",
        i.evidence
    );
    // Restored in time: the check's expectation is what failed, and it says that instead.
    r.objectives.rto_measured_ms = Some(900.0);
    let i = only(&r, "noncritical-failure");
    assert!(
        i.evidence.contains("within this check's 1.0 s `within`"),
        "{}",
        i.evidence
    );
    // Nothing measured: nothing claimed.
    r.objectives.service = ServiceState::NotMeasured;
    let i = only(&r, "noncritical-failure");
    assert!(
        i.evidence.ends_with("status 503 (expected 200)"),
        "{}",
        i.evidence
    );
}

/// Every finding gets the exercise's follow-up defaults: owner, due date, status.
#[test]
fn findings_carry_owner_due_date_and_status() {
    let mut r = base();
    verification_fails(&mut r);
    r.exercise.finding_owner = Some("messaging-sre".into());
    r.exercise.finding_due = Some("2025-01-31".into());
    r.exercise.finding_status = crate::scenario::FindingStatus::InProgress;
    let found = derive(&r);
    assert!(!found.is_empty());
    for i in found {
        assert_eq!(i.owner.as_deref(), Some("messaging-sre"));
        assert_eq!(i.due.as_deref(), Some("2025-01-31"));
        assert_eq!(i.status, crate::scenario::FindingStatus::InProgress);
    }
}

/// The due date is the run's start plus `metadata.findings.due_in`; the owner falls
/// back to `metadata.owner`; `--participant`s follow the scenario's.
#[test]
fn exercise_record_from_metadata() {
    let meta: crate::scenario::Metadata = serde_yaml::from_str(
        "{ name: x, owner: sre, exercise_id: BCP-7, findings: { due_in: 14d }, \
         participants: [ { name: Alice, role: lead } ] }",
    )
    .unwrap();
    let x = ExerciseRecord::new(
        &meta,
        &[("Bob".into(), "observer".into())],
        "2025-01-25T23:59:00.000Z",
    );
    assert_eq!(x.id.as_deref(), Some("BCP-7"));
    assert_eq!(x.finding_owner.as_deref(), Some("sre"));
    assert_eq!(x.finding_due.as_deref(), Some("2025-02-08"));
    let who: Vec<(&str, &str, &str)> = x
        .participants
        .iter()
        .map(|p| (p.name.as_str(), p.role.as_str(), p.source.as_str()))
        .collect();
    assert_eq!(
        who,
        [
            ("Alice", "lead", "scenario"),
            ("Bob", "observer", "command line")
        ]
    );
}

/// Adds a `delivery:` entry (passed: the rules fire on the figures, threshold or not).
fn delivery(r: &mut RunRecord, lost: f64, duplicated: f64) {
    let mut s = step(Phase::Verification, "messages", 1_000.0, 30_000.0);
    for (k, v) in [
        ("sent", 200.0),
        ("acknowledged", 200.0),
        ("delivered", 200.0 - lost),
        ("lost", lost),
        ("duplicated", duplicated),
        ("loss_rate", lost / 200.0),
        ("duplicate_rate", duplicated / (200.0 - lost)),
        ("rpo_ms", if lost > 0.0 { 4200.0 } else { 0.0 }),
        ("during.lost", lost),
        ("during.duplicated", duplicated),
        ("during.sent", 120.0),
    ] {
        s.metrics.insert(k.into(), v);
    }
    r.steps.push(s);
}

#[test]
fn delivery_rules_name_loss_and_duplicates() {
    let rules = |lost, dup| {
        let mut r = base();
        delivery(&mut r, lost, dup);
        derive(&r)
    };
    assert!(
        rules(0.0, 0.0)
            .iter()
            .all(|i| !i.rule.starts_with("message-"))
    );
    let found = rules(7.0, 0.0);
    let loss = found.iter().find(|i| i.rule == "message-loss").unwrap();
    assert_eq!(loss.severity, Severity::High);
    assert!(
        loss.title
            .contains("7 acknowledged message(s) lost, measured RPO 4.2 s"),
        "{}",
        loss.title
    );
    assert!(loss.evidence.contains("7 during"), "{}", loss.evidence);
    assert!(found.iter().all(|i| i.rule != "message-duplicates"));
    let found = rules(0.0, 3.0);
    let dup = found
        .iter()
        .find(|i| i.rule == "message-duplicates")
        .unwrap();
    assert!(
        dup.title.contains("3 message(s) delivered more than once"),
        "{}",
        dup.title
    );
    assert!(
        dup.recommendation.contains("--safe-failover"),
        "{}",
        dup.recommendation
    );
}
