//! The steady state after recovery: declared apart from the prechecks, re-checked at
//! the declared interval with a record of what failed before it held, and the
//! after-recovery assertions. Real drills through the binary: a STOP fault on a
//! marker process, a real HTTP server on 127.0.0.1 whose answer the test changes as a
//! cluster would (failover while the primary is frozen, demotion after it thaws).

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use firedrill::model::{Phase, Status, StepStatus};

/// An HTTP server on 127.0.0.1 answering every request with `{"value": "<file>"}`,
/// the file read afresh each time; it lives as long as the test process.
fn value_server(file: &Path) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let file: PathBuf = file.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let value = std::fs::read_to_string(&file).unwrap_or_default();
            let body = serde_json::json!({ "value": value.trim() }).to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn value_check(name: &str, port: u16, eq: &str, timing: &str) -> String {
    format!(
        "  - name: {name}\n    probe: {{ http: {{ url: \"http://127.0.0.1:{port}/\" }} }}\n    expect: {{ json: {{ path: \"$.value\", eq: \"{eq}\" }} }}\n{timing}"
    )
}

/// A drill that freezes `marker` while the verification holds for `hold`, with the
/// given sections appended.
fn drill(marker: &Marker, hold: &str, sections: &str) -> String {
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: steady-test }}
faults:
  - name: freeze primary
    kind: process_kill
    with: {{ pattern: "^{tag} ", signal: STOP }}
    ttl: 2m
verifications:
  - name: hold on
    probe: {{ command: {{ run: "true" }} }}
    for: {hold}
    interval: 100ms
{sections}"#,
        tag = marker.tag
    )
}

/// The cluster of the test: `primary` says which node is the primary; `old_role`
/// is what the frozen node (the marker) says it is. While the marker is frozen the
/// cluster fails over to B; `demote_after` after it thaws, the old node says
/// `replica` (never, when None).
struct Cluster {
    primary: PathBuf,
    old_role: PathBuf,
    primary_port: u16,
    old_port: u16,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let primary = dir.join("primary");
        let old_role = dir.join("old_role");
        std::fs::write(&primary, "A\n").unwrap();
        std::fs::write(&old_role, "primary\n").unwrap();
        Cluster {
            primary_port: value_server(&primary),
            old_port: value_server(&old_role),
            primary,
            old_role,
        }
    }

    /// Plays the cluster's part during a drill: fails over when the marker freezes,
    /// demotes the old primary `demote_after` after it thaws.
    fn play(&self, marker: &Marker, demote_after: Option<Duration>) {
        assert!(marker.wait_frozen(), "the fault never froze the marker");
        std::fs::write(&self.primary, "B\n").unwrap();
        assert!(wait_until(Duration::from_secs(20), || marker.state() != 'T'));
        if let Some(d) = demote_after {
            std::thread::sleep(d);
            std::fs::write(&self.old_role, "replica\n").unwrap();
        }
    }
}

fn run_drill(
    dir: &Path,
    text: &str,
    marker: &Marker,
    cluster: &Cluster,
    demote: Option<Duration>,
) -> (Option<i32>, firedrill::model::RunRecord) {
    let scen = write_scenario(dir, text);
    let state = dir.join("state");
    let reports = dir.join("reports");
    let mut engine = spawn_quiet(&mut run_cmd(&scen, &state, &reports));
    cluster.play(marker, demote);
    let code = wait_exit(&mut engine, Duration::from_secs(30));
    (code, journal(&reports))
}

fn steps(j: &firedrill::model::RunRecord, phase: Phase) -> Vec<&firedrill::model::StepRecord> {
    j.steps.iter().filter(|s| s.phase == phase).collect()
}

#[test]
fn a_precheck_true_only_before_failover_is_not_the_steady_state() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("steady-sep");
    let cluster = Cluster::start(dir.path());
    let sections = format!(
        "prechecks:\n{}steady_state:\n{}",
        value_check("primary is A", cluster.primary_port, "A", ""),
        value_check(
            "a primary answers",
            cluster.primary_port,
            "B",
            "    interval: 100ms\n"
        ),
    );
    let (code, j) = run_drill(
        dir.path(),
        &drill(&marker, "500ms", &sections),
        &marker,
        &cluster,
        None,
    );
    assert_eq!(code, Some(0), "outcome: {:?}", j.outcome);
    let steady = steps(&j, Phase::SteadyState);
    assert_eq!(steady.len(), 1);
    assert_eq!(steady[0].status, StepStatus::Passed, "{}", steady[0].detail);
    assert!(steady[0].description.contains("steady-state checks"));
    // The declared steady state is the indicator, not the precheck that failover
    // makes false.
    assert_eq!(
        j.objectives.indicators,
        vec!["a primary answers".to_string()]
    );
}

#[test]
fn after_recovery_within_passes_when_the_old_primary_is_demoted_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("after-ok");
    let cluster = Cluster::start(dir.path());
    let sections = format!(
        "after_recovery:\n{}",
        value_check(
            "old primary demoted",
            cluster.old_port,
            "replica",
            "    within: 2s\n    interval: 100ms\n"
        ),
    );
    let (code, j) = run_drill(
        dir.path(),
        &drill(&marker, "500ms", &sections),
        &marker,
        &cluster,
        Some(Duration::from_secs(1)),
    );
    assert_eq!(code, Some(0), "outcome: {:?}", j.outcome);
    let after = steps(&j, Phase::AfterRecovery);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].status, StepStatus::Passed, "{}", after[0].detail);
    let held = after[0].first_held_ms.unwrap();
    assert!((700.0..2000.0).contains(&held), "held after {held} ms");
}

#[test]
fn after_recovery_that_never_holds_fails_the_drill() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("after-bad");
    let cluster = Cluster::start(dir.path());
    let sections = format!(
        "after_recovery:\n{}",
        value_check(
            "old primary demoted",
            cluster.old_port,
            "replica",
            "    within: 2s\n    interval: 100ms\n"
        ),
    );
    let (code, j) = run_drill(
        dir.path(),
        &drill(&marker, "500ms", &sections),
        &marker,
        &cluster,
        None,
    );
    assert_eq!(code, Some(1), "outcome: {:?}", j.outcome);
    assert_eq!(j.outcome.status, Status::Failed);
    let after = steps(&j, Phase::AfterRecovery);
    assert_eq!(after[0].status, StepStatus::Failed);
    assert!(
        j.improvements
            .iter()
            .any(|i| i.title.contains("old primary demoted")),
        "{:?}",
        j.improvements
    );
    let md = std::fs::read_to_string(report_dir(&dir.path().join("reports")).join("report.html"))
        .unwrap();
    assert!(md.contains("After recovery"));
}

#[test]
fn steady_state_recheck_observes_at_the_declared_interval_and_records_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("resolution");
    let cluster = Cluster::start(dir.path());
    let up = dir.path().join("up");
    std::fs::write(&up, "").unwrap();
    // The service comes back 600 ms after the recovery step ran.
    let sections = format!(
        "recovery:\n  - name: restart\n    command: {{ run: \"rm -f {up}; (sleep 0.6; touch {up}) >/dev/null 2>&1 &\" }}\nsteady_state:\n  - name: service up\n    probe: {{ command: {{ run: \"test -e {up}\" }} }}\n    interval: 50ms\n",
        up = up.display()
    );
    let (code, j) = run_drill(
        dir.path(),
        &drill(&marker, "300ms", &sections),
        &marker,
        &cluster,
        None,
    );
    assert_eq!(code, Some(0), "outcome: {:?}", j.outcome);
    assert_eq!(j.objectives.recovery_resolution_ms, Some(50.0));
    let steady = steps(&j, Phase::SteadyState)[0];
    let restart_done = j
        .timeline
        .iter()
        .find(|e| e.event == "step_finished" && e.step.as_deref() == Some("restart"))
        .unwrap()
        .t_ms;
    let restored_truth = restart_done + 600.0;
    let restored_seen = steady.started_ms + steady.first_held_ms.unwrap();
    let late = restored_seen - restored_truth;
    eprintln!(
        "restored {late:.0} ms after the truth, {} rounds; {}",
        steady.attempts, steady.detail
    );
    // One interval, plus the probe's own process start.
    assert!(
        (-15.0..=50.0 + 30.0).contains(&late),
        "seen {late:.0} ms after the truth"
    );
    assert!(steady.attempts >= 8, "only {} rounds", steady.attempts);
    assert!(
        steady.detail.contains("round 1: service up: "),
        "{}",
        steady.detail
    );
    assert!(steady.detail.len() < 1500, "{}", steady.detail.len());
    // The report gives the resolution next to the recovery time.
    let md =
        std::fs::read_to_string(report_dir(&dir.path().join("reports")).join("report.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.contains("Recovery time after recovery started"))
        .unwrap();
    assert!(row.contains("(resolution 50 ms)"), "{row}");
}

#[test]
fn plan_shows_the_declared_steady_state_and_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("plan");
    let sections = "prechecks:\n  - name: primary is A\n    probe: { command: { run: \"true\" } }\nsteady_state:\n  - name: a primary answers\n    probe: { command: { run: \"true\" } }\n    interval: 50ms\nafter_recovery:\n  - name: old primary demoted\n    probe: { command: { run: \"true\" } }\n    within: 2s\n";
    let scen = write_scenario(dir.path(), &drill(&marker, "1s", sections));
    let out = firedrill().arg("plan").arg(&scen).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("re-run the steady-state checks every 50ms"),
        "{stdout}"
    );
    assert!(
        stdout.contains("old primary demoted: (critical)"),
        "{stdout}"
    );
}
