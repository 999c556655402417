//! Checks that run side by side and figures measured from the disruption:
//! `background: true` verifications, non-critical guards, and "first held after"
//! counted from the first fault taking effect rather than from the check's own start.
//! Each drill freezes a marker process of its own (SIGSTOP, reverted by SIGCONT).

use crate::common;

use common::*;
use firedrill::model::{Phase, Status, StepStatus};

fn scenario(marker: &Marker, ramp_up: &str, extra_top: &str, verifications: &str) -> String {
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: side-by-side }}
{extra_top}
faults:
  - name: freeze marker
    kind: process_kill
    with: {{ pattern: "^{tag} ", signal: STOP }}
    ttl: 5m
{ramp_up}
verifications:
{verifications}
"#,
        tag = marker.tag
    )
}

#[test]
fn a_background_verification_runs_while_a_foreground_one_waits() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("background");
    let scen = write_scenario(
        dir.path(),
        &scenario(
            &marker,
            "",
            "",
            r#"  - name: watch all along
    background: true
    probe: { command: { run: "true" } }
    for: 10m
    interval: 100ms
  - name: foreground wait
    probe: { command: { run: "true" } }
    for: 2s
    interval: 100ms
"#,
        ),
    );
    let reports = dir.path().join("reports");
    let out = drill_cmd(&scen, "bg1", &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let j = journal(&reports);
    assert_eq!(j.outcome.status, Status::Passed);
    let bg = j
        .steps
        .iter()
        .find(|s| s.name == "watch all along")
        .unwrap();
    let fg = j
        .steps
        .iter()
        .find(|s| s.name == "foreground wait")
        .unwrap();
    assert_eq!(bg.status, StepStatus::Passed, "{}", bg.detail);
    assert_eq!(fg.status, StepStatus::Passed, "{}", fg.detail);
    // Side by side: the background check started no later than the foreground one
    // and was still running when the foreground one ended.
    assert!(bg.started_ms <= fg.started_ms + 50.0, "{bg:?} {fg:?}");
    assert!(
        bg.started_ms + bg.duration_ms >= fg.started_ms + fg.duration_ms - 50.0,
        "background ended before the foreground wait: {bg:?} {fg:?}"
    );
    assert!(bg.attempts >= 10, "{} polls", bg.attempts);
    // It watched the whole fault window, not its 10 min.
    assert!(bg.duration_ms < 10_000.0, "{}", bg.duration_ms);
    assert_eq!(pending_in_ledger(&dir.path().join("state"), "bg1"), 0);
}

#[test]
fn a_critical_background_failure_fails_the_drill_and_aborts_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("bgfail");
    let flag = dir.path().join("flag");
    std::fs::write(&flag, "ok\n").unwrap();
    let scen = write_scenario(
        dir.path(),
        &scenario(
            &marker,
            "",
            "",
            &format!(
                r#"  - name: flag stays ok
    background: true
    probe: {{ command: {{ run: "grep -q ok {}" }} }}
    for: 10m
    interval: 100ms
  - name: long wait
    probe: {{ command: {{ run: "true" }} }}
    for: 60s
    interval: 100ms
"#,
                flag.display()
            ),
        ),
    );
    let reports = dir.path().join("reports");
    let mut engine = spawn_drill(&scen, "bg2", &dir.path().join("state"), &reports);
    assert!(marker.wait_frozen());
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::write(&flag, "bad\n").unwrap();
    let code = wait_exit(&mut engine, std::time::Duration::from_secs(15));
    assert_eq!(code, Some(1));
    assert_ne!(marker.state(), 'T');
    let j = journal(&reports);
    assert_eq!(
        j.outcome.aborted,
        Some(firedrill::model::AbortReason::CriticalFailure)
    );
    let bg = j.steps.iter().find(|s| s.name == "flag stays ok").unwrap();
    assert_eq!(bg.status, StepStatus::Failed);
    let fg = j.steps.iter().find(|s| s.name == "long wait").unwrap();
    assert_ne!(fg.status, StepStatus::Passed);
}

#[test]
fn a_non_critical_guard_breach_is_reported_without_aborting() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("ncguard");
    let guards = r#"guards:
  - name: soft limit
    critical: false
    probe: { command: { run: "false" } }
    interval: 100ms
"#;
    let scen = write_scenario(
        dir.path(),
        &scenario(
            &marker,
            "",
            guards,
            r#"  - name: keeps going
    probe: { command: { run: "true" } }
    for: 1s
    interval: 100ms
"#,
        ),
    );
    let reports = dir.path().join("reports");
    let out = drill_cmd(&scen, "ncg1", &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let j = journal(&reports);
    assert_eq!(j.outcome.status, Status::Passed, "{}", j.outcome.reason);
    assert_eq!(j.outcome.aborted, None);
    let g = &j.guards[0];
    assert!(g.breached);
    assert!(!g.critical);
    // It kept watching after its breach.
    assert!(g.polls >= 5, "{} polls", g.polls);
    let step = j.steps.iter().find(|s| s.name == "keeps going").unwrap();
    assert_eq!(step.status, StepStatus::Passed);
    assert!(
        j.improvements.iter().any(|i| i.rule == "guard-breached"),
        "{:?}",
        j.improvements
    );
    let md = std::fs::read_to_string(report_dir(&reports).join("report.md")).unwrap();
    assert!(md.contains("soft limit"), "{md}");
    assert!(md.contains("BREACHED (non-critical)"), "{md}");
}

#[test]
fn first_held_is_counted_from_the_disruption_not_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("rampup");
    let scen = write_scenario(
        dir.path(),
        &scenario(
            &marker,
            "    ramp_up: 2s",
            "",
            r#"  - name: holds at once
    probe: { command: { run: "true" } }
    within: 5s
"#,
        ),
    );
    let reports = dir.path().join("reports");
    let out = drill_cmd(&scen, "ramp1", &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let j = journal(&reports);
    let v = j
        .steps
        .iter()
        .find(|s| s.phase == Phase::Verification)
        .unwrap();
    let held = v.first_held_ms.unwrap();
    assert!(
        (2000.0..3500.0).contains(&held),
        "first held {held} ms after the disruption, expected about 2 s (the ramp-up)"
    );
    // The check's own duration stays its own: it held at its first poll.
    assert!(v.duration_ms < 1000.0, "{}", v.duration_ms);
    let html = std::fs::read_to_string(report_dir(&reports).join("report.html")).unwrap();
    assert!(html.contains("First held after the disruption"));
}

#[test]
fn a_background_verification_without_an_injected_fault_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("bgskip");
    let text = scenario(
        &marker,
        "    level: full",
        "",
        r#"  - name: watch all along
    background: true
    probe: { command: { run: "true" } }
    for: 10m
    interval: 100ms
"#,
    );
    let scen = write_scenario(dir.path(), &text);
    let plan = firedrill()
        .args(["plan"])
        .arg(&scen)
        .args(["--level", "smoke"])
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("background: from the first fault until recovery"),
        "{plan}"
    );
    let reports = dir.path().join("reports");
    let out = drill_cmd(&scen, "bgskip1", &dir.path().join("state"), &reports)
        .args(["--level", "smoke"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let j = journal(&reports);
    let bg = j
        .steps
        .iter()
        .find(|s| s.name == "watch all along")
        .unwrap();
    assert_eq!(bg.status, StepStatus::Skipped);
    assert_eq!(bg.detail, "no fault took effect");
}
