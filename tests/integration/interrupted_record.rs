//! A killed engine still leaves a record: `recover` writes the journal and reports of
//! a SIGKILLed run (what was injected and when, who reverted it, that it was
//! interrupted), and `plan` shows the `traffic:` section.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use firedrill::model::{Phase, RunRecord, Status};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `recover --all` with an explicit fallback report directory; asserts exit 0.
fn recover_with_reports(state: &Path, reports: &Path) -> String {
    let out = firedrill()
        .args(["recover", "--all", "--state-dir"])
        .arg(state)
        .arg("--report-dir")
        .arg(reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The record files of one run directory; asserts all three are there.
fn record_in(dir: &Path) -> (RunRecord, String, String) {
    let j: RunRecord =
        serde_json::from_str(&std::fs::read_to_string(dir.join("journal.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    (j, md, html)
}

/// Kills a drill holding a STOP fault once the marker is frozen.
fn kill_mid_fault(marker: &Marker, ttl: &str, run_id: &str, dir: &Path) -> PathBuf {
    let scen = write_scenario(dir, &stop_scenario(marker, "", ttl));
    let state = dir.join("state");
    let mut engine = spawn_drill(&scen, run_id, &state, &dir.join("reports"));
    assert!(marker.wait_frozen());
    engine.kill().unwrap();
    engine.wait().unwrap();
    state
}

fn assert_interrupted_record(j: &RunRecord, md: &str, html: &str, run_id: &str, by: &str) {
    assert_eq!(j.run_id, run_id);
    assert_eq!(j.outcome.status, Status::Interrupted);
    assert_eq!(j.scenario.name, "freeze-test");
    assert!(j.scenario.file.ends_with("s.yaml"), "{}", j.scenario.file);
    assert_eq!(j.scenario.sha256.len(), 64);
    assert_eq!(j.level, firedrill::scenario::Level::Full);
    let f = j
        .steps
        .iter()
        .find(|s| s.phase == Phase::Fault && s.name == "freeze marker")
        .unwrap_or_else(|| panic!("no fault step: {:#?}", j.steps));
    let fr = f.fault.as_ref().expect("fault record");
    assert_eq!(fr.kind, "process_kill");
    let inject = j
        .timeline
        .iter()
        .find(|e| e.event == "fault_injected" && e.step.as_deref() == Some("freeze marker"))
        .unwrap_or_else(|| panic!("no inject event: {:#?}", j.timeline));
    assert!(inject.at.starts_with("20"), "{}", inject.at);
    let revert = j
        .timeline
        .iter()
        .find(|e| e.event == "fault_reverted" && e.step.as_deref() == Some("freeze marker"))
        .unwrap_or_else(|| panic!("no revert event: {:#?}", j.timeline));
    assert!(revert.message.contains(by), "{}", revert.message);
    assert!(f.detail.contains(by), "{}", f.detail);
    for text in [md, html] {
        assert!(text.contains("interrupted"), "{text}");
        assert!(text.contains("written by firedrill recover"), "{text}");
        assert!(text.contains(run_id) && text.contains("freeze-test"));
        assert!(text.contains(&inject.at), "inject time missing");
        assert!(text.contains(by), "reverter missing");
    }
}

#[test]
fn a_sigkilled_run_gets_a_journal_and_report_from_recover() {
    let dir = tmp();
    let marker = Marker::spawn("rec-record");
    let state = kill_mid_fault(&marker, "10m", "reckill1", dir.path());
    // The run's own report directory, created before anything was injected, is empty.
    let run_dir = report_dir(&dir.path().join("reports"));
    assert!(!run_dir.join("journal.json").exists());

    let stdout = recover_all(&state);
    assert!(stdout.contains("reverted freeze marker"), "{stdout}");
    assert!(wait_until(Duration::from_secs(2), || marker.state() != 'T'));
    assert!(stdout.contains(&run_dir.display().to_string()), "{stdout}");
    let (j, md, html) = record_in(&run_dir);
    assert_interrupted_record(&j, &md, &html, "reckill1", "firedrill recover");
    // CI reading the JUnit must not see a pass.
    let junit = std::fs::read_to_string(run_dir.join("junit.xml")).unwrap();
    assert!(junit.contains("run interrupted"), "{junit}");
    assert!(!junit.contains("could not be injected"), "{junit}");
    assert!(
        html.contains("class=\"outcome bad\""),
        "outcome not marked bad"
    );
    // Written once: a second recover finds nothing, and leaves the record as it is.
    let journal = std::fs::read(run_dir.join("journal.json")).unwrap();
    assert!(recover_all(&state).contains("nothing to recover"));
    assert_eq!(
        std::fs::read(run_dir.join("journal.json")).unwrap(),
        journal
    );
}

#[test]
fn a_fault_the_deadman_undid_is_recorded_as_reverted_by_the_deadman() {
    let dir = tmp();
    let marker = Marker::spawn("rec-deadman");
    let state = kill_mid_fault(&marker, "2s", "recdm1", dir.path());
    assert!(wait_until(Duration::from_secs(6), || marker.state() != 'T'));
    recover_all(&state);
    let (j, md, html) = record_in(&report_dir(&dir.path().join("reports")));
    assert_interrupted_record(&j, &md, &html, "recdm1", "dead-man");
}

#[test]
fn an_old_ledger_without_a_report_dir_recovers_under_report_dir() {
    let dir = tmp();
    let marker = Marker::spawn("rec-old");
    let state = kill_mid_fault(&marker, "10m", "recold1", dir.path());
    // Rewrite the Started entry as an older version wrote it: no report directory.
    let ledger = state.join("runs/recold1/ledger.jsonl");
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["op"] == "started" {
            assert!(v.get("report_dir").is_some(), "{line}");
            v.as_object_mut().unwrap().remove("report_dir");
        }
        out.push_str(&format!("{v}\n"));
    }
    std::fs::write(&ledger, out).unwrap();

    let fallback = dir.path().join("fallback");
    recover_with_reports(&state, &fallback);
    assert!(wait_until(Duration::from_secs(2), || marker.state() != 'T'));
    let (j, md, html) = record_in(&report_dir(&fallback));
    assert_interrupted_record(&j, &md, &html, "recold1", "firedrill recover");
}

#[test]
fn plan_lists_the_traffic_entries() {
    let dir = tmp();
    let scen = write_scenario(
        dir.path(),
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: { name: plan-traffic }
faults:
  - name: freeze nothing
    kind: process_kill
    with: { pattern: "^no-such-process-xyz ", signal: STOP }
traffic:
  - name: checkout load
    probe: { url: "http://127.0.0.1:9/buy", rate: 20 }
    before: 3s
    after: 2s
"#,
    );
    for format in ["text", "json"] {
        let out = firedrill()
            .args(["plan", "--format", format])
            .arg(&scen)
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("checkout load"), "{stdout}");
        assert!(
            stdout.contains("20 req/s of HTTP GET http://127.0.0.1:9/buy"),
            "{stdout}"
        );
        assert!(stdout.contains("traffic"), "{stdout}");
    }
}

#[test]
fn the_timeline_shows_when_the_traffic_load_ran() {
    let dir = tmp();
    let demo = Demo::start(dir.path(), 100);
    let marker = Marker::spawn("traffic-timeline");
    let text = stop_scenario(
        &marker,
        &format!(
            r#"traffic:
  - name: health load
    probe: {{ url: "http://127.0.0.1:{}/health", rate: 10, timeout: 500ms }}
    before: 300ms
    after: 300ms
"#,
            demo.port
        ),
        "5m",
    )
    .replace("for: 60s", "for: 300ms");
    let scen = write_scenario(dir.path(), &text);
    let reports = dir.path().join("reports");
    let out = drill_cmd(&scen, "trafftl1", &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let j = journal(&reports);
    let at = |name: &str| {
        j.timeline
            .iter()
            .position(|e| e.event == name && e.step.as_deref() == Some("health load"))
            .unwrap_or_else(|| panic!("no {name} event: {:#?}", j.timeline))
    };
    let fault = j
        .timeline
        .iter()
        .position(|e| e.event == "fault_effective")
        .unwrap();
    let (started, stopped) = (at("traffic_started"), at("traffic_stopped"));
    assert!(started < fault && fault < stopped, "{:#?}", j.timeline);
    assert!(
        j.timeline[stopped].message.contains("requests"),
        "{}",
        j.timeline[stopped].message
    );
}

#[test]
fn a_relative_report_dir_is_found_by_a_recover_run_elsewhere() {
    let dir = tmp();
    let marker = Marker::spawn("rec-relative");
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, "", "10m"));
    let state = dir.path().join("state");
    let mut engine = spawn_quiet(
        drill_cmd(&scen, "recrel1", &state, Path::new("reports")).current_dir(dir.path()),
    );
    assert!(marker.wait_frozen());
    engine.kill().unwrap();
    engine.wait().unwrap();
    let elsewhere = tmp();
    let out = firedrill()
        .args(["recover", "--all", "--state-dir"])
        .arg(&state)
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let (j, _, _) = record_in(&report_dir(&dir.path().join("reports")));
    assert_eq!(j.run_id, "recrel1");
    assert!(!elsewhere.path().join("reports").exists());
}
