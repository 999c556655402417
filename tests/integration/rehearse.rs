//! `run --rehearse`: the quickstart's checks, guards and indicators run against the
//! real demo, and nothing is injected: the worker keeps its pid, the ledger holds no
//! undo record, and every report says it was a rehearsal.

use std::time::Duration;

use crate::common::*;
use firedrill::model::{Phase, StepStatus};

#[test]
fn a_rehearsal_runs_every_check_and_injects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 500);
    let worker = demo.worker_pid();
    let state = dir.path().join("state");
    let reports = dir.path().join("reports");
    let out = drill_cmd(
        "scenarios/quickstart.yaml".as_ref(),
        "rehearse1",
        &state,
        &reports,
    )
    .arg("--rehearse")
    .args(["--var", &format!("port={}", demo.port)])
    .arg("--var")
    .arg(format!("pidfile={}", demo.pidfile.display()))
    .arg("--lock-dir")
    .arg(dir.path().join("locks"))
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_exit(&out, 0);
    assert!(stdout.contains("rehearsal, no fault injected"), "{stdout}");

    // The worker was never killed (a kill would have given it a new pid by now: the
    // supervisor restarts it after 0.5 s).
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(demo.worker_pid(), worker);
    let ledger = std::fs::read_to_string(state.join("runs/rehearse1/ledger.jsonl")).unwrap();
    assert!(!ledger.contains("\"inject\""), "{ledger}");
    assert_eq!(pending_in_ledger(&state, "rehearse1"), 0);

    let j = journal(&reports);
    assert!(j.rehearsal);
    let faults: Vec<_> = j.steps.iter().filter(|s| s.phase == Phase::Fault).collect();
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].status, StepStatus::Skipped);
    assert!(
        faults[0].detail.starts_with("rehearsal: not injected"),
        "{}",
        faults[0].detail
    );
    // Everything else ran as in the drill.
    let verifications: Vec<_> = j
        .steps
        .iter()
        .filter(|s| s.phase == Phase::Verification)
        .collect();
    assert_eq!(verifications.len(), 3);
    assert!(
        verifications.iter().all(|s| s.status == StepStatus::Passed),
        "{verifications:?}"
    );
    assert_eq!(j.guards.len(), 1);
    assert!(j.guards[0].polls >= 1, "{:?}", j.guards);
    assert!(
        j.steps
            .iter()
            .any(|s| s.phase == Phase::Recovery && s.status == StepStatus::Passed)
    );
    // No fault took effect, so there is no disruption to measure an RTO from.
    assert_eq!(j.objectives.rto_measured_ms, None);

    let rdir = report_dir(&reports);
    let md = std::fs::read_to_string(rdir.join("report.md")).unwrap();
    assert!(md.contains("**Rehearsal**"), "{md}");
    let html = std::fs::read_to_string(rdir.join("report.html")).unwrap();
    assert!(html.contains("no fault was injected"));
    let junit = std::fs::read_to_string(rdir.join("junit.xml")).unwrap();
    assert!(
        junit.contains(r#"<property name="rehearsal" value="true"/>"#),
        "{junit}"
    );
}

#[test]
fn rehearse_and_dry_run_are_exclusive() {
    let out = firedrill()
        .args([
            "run",
            "scenarios/quickstart.yaml",
            "--rehearse",
            "--dry-run",
        ])
        .output()
        .unwrap();
    let stderr = assert_exit(&out, 2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
