//! End-to-end drills through the real binary: the quickstart, signals, SIGKILL +
//! `recover`, the dead-man timer, guards, critical failures, caps and locks.
//! Every test checks afterwards that its processes are as before (nothing frozen,
//! no dead-man watcher left) and that the ledger holds nothing pending.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use firedrill::report::model::{AbortReason, Phase, Status, StepStatus};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn no_deadman(run_id: &str) -> bool {
    pids_matching(&format!("__deadman --tag {run_id}")).is_empty()
}

#[test]
fn quickstart_end_to_end() {
    let dir = tmp();
    let demo = Demo::start(dir.path(), 1500);
    let worker_before = demo.worker_pid();
    let state = dir.path().join("state");
    let reports = dir.path().join("reports");
    let out = firedrill()
        .args(["run", "scenarios/quickstart.yaml", "--run-id", "qs1"])
        .arg("--var")
        .arg(format!("port={}", demo.port))
        .arg("--var")
        .arg(format!("pidfile={}", demo.pidfile.display()))
        .arg("--state-dir")
        .arg(&state)
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );

    let rdir = report_dir(&reports);
    for f in ["report.html", "report.md", "journal.json", "junit.xml"] {
        let meta = std::fs::metadata(rdir.join(f)).unwrap_or_else(|_| panic!("{f} missing"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    let junit = std::fs::read_to_string(rdir.join("junit.xml")).unwrap();
    roxmltree::Document::parse(&junit).expect("junit.xml is well-formed XML");

    let j = journal(&reports);
    assert_eq!(j.outcome.status, Status::Passed);
    assert_eq!(j.run_id, "qs1");
    assert_eq!(j.scenario.sha256.len(), 64);
    // The killed worker really died, and the supervisor started a new one.
    let fault = j.steps.iter().find(|s| s.phase == Phase::Fault).unwrap();
    let effect = fault.fault.as_ref().unwrap().effect.as_ref().unwrap();
    assert!(effect.as_declared);
    assert_eq!(effect.details["pids"], serde_json::json!([worker_before]));
    assert!(
        proc_stat(worker_before).is_none_or(|(s, _)| s == 'Z'),
        "killed worker still alive"
    );
    assert_ne!(demo.worker_pid(), worker_before);
    // The non-critical check reveals the restart gap; the critical ones hold.
    let nc = j
        .steps
        .iter()
        .find(|s| s.name == "answers within 1 s of the kill")
        .unwrap();
    assert_eq!(nc.status, StepStatus::Failed);
    assert!(!nc.critical);
    let restarted = j
        .steps
        .iter()
        .find(|s| s.name == "worker restarted by its supervisor")
        .unwrap();
    assert_eq!(restarted.status, StepStatus::Passed);
    assert!(restarted.first_held_ms.unwrap() > 100.0);
    assert!(j.objectives.recovery_ms.is_some());
    // The ledger ends with everything reverted.
    assert_eq!(pending_in_ledger(&state, "qs1"), 0);
    // Timeline has wall-clock and monotonic times, in order.
    assert!(j.timeline.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
    assert!(j.timeline.iter().all(|e| e.at.ends_with('Z')));
}

#[test]
fn sigint_mid_drill_recovers_and_exits_1() {
    let dir = tmp();
    let marker = Marker::spawn("sigint");
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, stop_scenario(&marker, "", "5m")).unwrap();
    let state = dir.path().join("state");
    let reports = dir.path().join("reports");
    let mut engine = spawn_drill(&scen, "sigint1", &state, &reports);
    assert!(
        wait_until(Duration::from_secs(10), || marker.state() == 'T'),
        "fault never took effect"
    );
    unsafe {
        libc::kill(engine.id() as i32, libc::SIGINT);
    }
    let code = wait_exit(&mut engine, Duration::from_secs(15));
    assert_eq!(code, Some(1));
    assert_ne!(marker.state(), 'T', "marker still frozen after SIGINT");
    assert!(no_deadman("sigint1"));
    assert_eq!(pending_in_ledger(&state, "sigint1"), 0);
    let j = journal(&reports);
    assert_eq!(j.outcome.aborted, Some(AbortReason::Signal));
    let revert = j
        .steps
        .iter()
        .find_map(|s| s.fault.as_ref()?.revert.clone())
        .unwrap();
    assert!(revert.ok);
}

#[test]
fn sigkill_then_recover_all_thaws_the_frozen_process() {
    let dir = tmp();
    let marker = Marker::spawn("sigkill");
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, stop_scenario(&marker, "", "10m")).unwrap();
    let state = dir.path().join("state");
    let mut engine = spawn_drill(&scen, "sigkill1", &state, &dir.path().join("reports"));
    assert!(wait_until(Duration::from_secs(10), || marker.state() == 'T'));
    engine.kill().unwrap();
    engine.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        marker.state(),
        'T',
        "nothing should thaw it before recover (ttl is 10m)"
    );
    assert!(
        !no_deadman("sigkill1"),
        "the dead-man watcher must outlive the engine"
    );
    assert_eq!(pending_in_ledger(&state, "sigkill1"), 1);

    let stdout = recover_all(&state);
    assert!(stdout.contains("reverted freeze marker"), "{stdout}");
    assert!(wait_until(Duration::from_secs(2), || marker.state() != 'T'));
    assert!(wait_until(Duration::from_secs(2), || no_deadman(
        "sigkill1"
    )));
    assert_eq!(pending_in_ledger(&state, "sigkill1"), 0);
    // Idempotent: a second recover finds nothing.
    let out = firedrill()
        .args(["recover", "--all", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to recover"));
}

#[test]
fn deadman_thaws_after_ttl_without_recover() {
    let dir = tmp();
    let marker = Marker::spawn("deadman");
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, stop_scenario(&marker, "", "2s")).unwrap();
    let state = dir.path().join("state");
    let mut engine = spawn_drill(&scen, "deadman1", &state, &dir.path().join("reports"));
    assert!(wait_until(Duration::from_secs(10), || marker.state() == 'T'));
    let frozen_at = Instant::now();
    engine.kill().unwrap();
    engine.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(4), || marker.state() != 'T'),
        "ttl did not thaw the process"
    );
    let thawed_after = frozen_at.elapsed();
    assert!(
        thawed_after < Duration::from_secs(3) + Duration::from_millis(500),
        "{thawed_after:?}"
    );
    assert!(wait_until(Duration::from_secs(2), || no_deadman(
        "deadman1"
    )));
    // recover is still safe (idempotent) and clears the ledger.
    let out = firedrill()
        .args(["recover", "--run", "deadman1", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(pending_in_ledger(&state, "deadman1"), 0);
}

#[test]
fn guard_breach_aborts_and_recovers() {
    let dir = tmp();
    let marker = Marker::spawn("guard");
    let flag = dir.path().join("flag");
    std::fs::write(&flag, "ok\n").unwrap();
    let guards = format!(
        "guards:\n  - name: flag ok\n    probe: {{ command: {{ run: \"grep -q ok {}\" }} }}\n    interval: 100ms\n",
        flag.display()
    );
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, stop_scenario(&marker, &guards, "5m")).unwrap();
    let state = dir.path().join("state");
    let reports = dir.path().join("reports");
    let mut engine = spawn_drill(&scen, "guard1", &state, &reports);
    assert!(wait_until(Duration::from_secs(10), || marker.state() == 'T'));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&flag, "bad\n").unwrap();
    let code = wait_exit(&mut engine, Duration::from_secs(15));
    assert_eq!(code, Some(1));
    assert_ne!(marker.state(), 'T');
    assert!(no_deadman("guard1"));
    let j = journal(&reports);
    assert_eq!(j.outcome.aborted, Some(AbortReason::GuardBreached));
    assert!(j.guards[0].breached);
    assert!(j.guards[0].polls >= 2);
    assert_eq!(pending_in_ledger(&state, "guard1"), 0);
}

#[test]
fn critical_failure_skips_the_rest_and_recovers() {
    let dir = tmp();
    let marker = Marker::spawn("critical");
    let closed = free_port();
    let scen = dir.path().join("s.yaml");
    std::fs::write(
        &scen,
        format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: critical-test }}
faults:
  - name: freeze marker
    kind: process_kill
    with: {{ pattern: "^{tag} ", signal: STOP }}
verifications:
  - name: service answers
    probe: {{ tcp: {{ address: "127.0.0.1:{closed}", timeout: 500ms }} }}
  - name: never reached
    probe: {{ command: {{ run: "true" }} }}
"#,
            tag = marker.tag
        ),
    )
    .unwrap();
    let reports = dir.path().join("reports");
    let out = drill_cmd(&scen, "crit1", &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(marker.state(), 'T');
    let j = journal(&reports);
    assert_eq!(j.outcome.aborted, Some(AbortReason::CriticalFailure));
    let skipped = j.steps.iter().find(|s| s.name == "never reached").unwrap();
    assert_eq!(skipped.status, StepStatus::Skipped);
    assert!(no_deadman("crit1"));
}

#[test]
fn failed_precheck_injects_nothing() {
    let dir = tmp();
    let marker = Marker::spawn("precheck");
    let closed = free_port();
    let extra = format!(
        "prechecks:\n  - name: up\n    probe: {{ tcp: {{ address: \"127.0.0.1:{closed}\", timeout: 300ms }} }}\n    retries: 1\n    interval: 50ms\n"
    );
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, stop_scenario(&marker, &extra, "5m")).unwrap();
    let state = dir.path().join("state");
    let reports = dir.path().join("reports");
    let out = drill_cmd(&scen, "pre1", &state, &reports).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_ne!(marker.state(), 'T');
    let entries = firedrill::engine::ledger::read(&state.join("runs/pre1/ledger.jsonl")).unwrap();
    assert!(
        !entries
            .iter()
            .any(|e| matches!(e, firedrill::engine::ledger::Entry::Inject { .. })),
        "a fault was recorded although the precheck failed"
    );
    let j = journal(&reports);
    assert_eq!(j.outcome.aborted, Some(AbortReason::PrecheckFailed));
    let pre = j.steps.iter().find(|s| s.name == "up").unwrap();
    assert_eq!(pre.attempts, 2);
}

#[test]
fn max_duration_caps_the_drill() {
    let dir = tmp();
    let marker = Marker::spawn("cap");
    let scen = dir.path().join("s.yaml");
    std::fs::write(
        &scen,
        stop_scenario(&marker, "objectives: { max_duration: 1500ms }", "5m"),
    )
    .unwrap();
    let reports = dir.path().join("reports");
    let start = Instant::now();
    let out = drill_cmd(&scen, "cap1", &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_ne!(marker.state(), 'T');
    assert_eq!(
        journal(&reports).outcome.aborted,
        Some(AbortReason::MaxDuration)
    );
}

#[test]
fn unmatched_process_is_an_injection_failure() {
    let dir = tmp();
    let scen = dir.path().join("s.yaml");
    std::fs::write(
        &scen,
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: { name: nomatch }
faults:
  - name: kill nothing
    kind: process_kill
    with: { pattern: "^no-such-process-anywhere-42 " }
"#,
    )
    .unwrap();
    let out = drill_cmd(
        &scen,
        "nomatch1",
        &dir.path().join("state"),
        &dir.path().join("reports"),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let j = journal(&dir.path().join("reports"));
    assert_eq!(j.outcome.status, Status::InjectionFailed);
}

#[test]
fn a_second_drill_on_the_same_target_is_refused() {
    let dir = tmp();
    let marker = Marker::spawn("lock");
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, stop_scenario(&marker, "", "5m")).unwrap();
    let state = dir.path().join("state");
    let mut first = spawn_drill(&scen, "lockA", &state, &dir.path().join("reports"));
    assert!(wait_until(Duration::from_secs(10), || marker.state() == 'T'));
    let out = drill_cmd(&scen, "lockB", &state, &dir.path().join("reports-b"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("in use by another drill") && stderr.contains("lockA"),
        "{stderr}"
    );
    assert!(!dir.path().join("reports-b").exists());
    unsafe {
        libc::kill(first.id() as i32, libc::SIGTERM);
    }
    assert_eq!(wait_exit(&mut first, Duration::from_secs(15)), Some(1));
    assert_ne!(marker.state(), 'T');
    assert!(no_deadman("lockA"));
}

#[test]
fn plan_and_dry_run_have_no_side_effects() {
    let dir = tmp();
    let marker = Marker::spawn("plan");
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, stop_scenario(&marker, "", "5m")).unwrap();
    let reports = dir.path().join("reports").display().to_string();
    for args in [
        vec!["plan"],
        vec!["run", "--dry-run", "--report-dir", &reports],
    ] {
        let out = firedrill()
            .args(&args)
            .arg(&scen)
            .env("FIREDRILL_STATE_DIR", dir.path().join("state"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("freeze marker") && stdout.contains("SIGSTOP"),
            "{stdout}"
        );
        assert!(stdout.contains("revert every injected fault"), "{stdout}");
    }
    assert_ne!(marker.state(), 'T');
    assert!(!dir.path().join("state").exists());
    assert!(!dir.path().join("reports").exists());
}

#[test]
fn level_ceiling_skips_harsher_faults() {
    let dir = tmp();
    let marker = Marker::spawn("level");
    let scen = dir.path().join("s.yaml");
    let text = stop_scenario(&marker, "", "5m")
        .replace("    ttl: 5m", "    ttl: 5m\n    level: full")
        .replace("for: 60s", "for: 200ms");
    std::fs::write(&scen, text).unwrap();
    let reports = dir.path().join("reports");
    let out = firedrill()
        .arg("run")
        .arg(&scen)
        .args(["--level", "smoke", "--run-id", "lvl1", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(marker.state(), 'T');
    let j = journal(&reports);
    let f = j.steps.iter().find(|s| s.phase == Phase::Fault).unwrap();
    assert_eq!(f.status, StepStatus::Skipped);
    assert!(f.detail.contains("above --level smoke"), "{}", f.detail);
}

#[test]
fn a_panicking_engine_still_reverts() {
    let dir = tmp();
    let marker = Marker::spawn("panic");
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, stop_scenario(&marker, "", "5m")).unwrap();
    let state = dir.path().join("state");
    let out = drill_cmd(&scen, "panic1", &state, &dir.path().join("reports"))
        .env("FIREDRILL_DEBUG_PANIC_AFTER", "freeze marker")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("reverting every fault of run panic1"),
        "{stderr}"
    );
    assert_ne!(marker.state(), 'T', "a panic left the process frozen");
    assert!(no_deadman("panic1"));
    assert_eq!(pending_in_ledger(&state, "panic1"), 0);
}

#[test]
fn secrets_never_reach_reports_or_logs() {
    let dir = tmp();
    let demo = Demo::start(dir.path(), 300);
    let marker = Marker::spawn("secret");
    let secret = format!("s3cr3t-{}-corpsecret", std::process::id());
    let scen = dir.path().join("s.yaml");
    std::fs::write(
        &scen,
        format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: secret-test }}
vars:
  port: {port}
  key: {{ env: FD_TEST_BOT_KEY, secret: true }}
prechecks:
  - name: health with key
    probe: {{ http: {{ url: "http://127.0.0.1:{{{{port}}}}/health?key={{{{key}}}}", headers: {{ X-Key: "{{{{key}}}}" }} }} }}
faults:
  - name: freeze marker {{{{key}}}}
    kind: process_kill
    with: {{ pattern: "^{tag} ", signal: STOP }}
verifications:
  - name: bot key {{{{key}}}} is not echoed
    probe: {{ command: {{ run: "echo {{{{key}}}}; exit 3" }} }}
    critical: false
"#,
            port = demo.port,
            tag = marker.tag
        ),
    )
    .unwrap();
    let reports = dir.path().join("reports");
    let out = drill_cmd(&scen, "secret1", &dir.path().join("state"), &reports)
        .arg("-v")
        .env("FD_TEST_BOT_KEY", &secret)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("***"),
        "the secret should appear redacted in the logs"
    );
    assert!(
        !stderr.contains(&secret) && !stdout.contains(&secret),
        "secret leaked to the terminal"
    );
    for f in ["report.html", "report.md", "journal.json", "junit.xml"] {
        let text = std::fs::read_to_string(report_dir(&reports).join(f)).unwrap();
        assert!(!text.contains(&secret), "secret leaked into {f}");
    }
    let j = journal(&reports);
    assert_eq!(j.vars["key"], "***");
    assert_ne!(marker.state(), 'T');
}

#[test]
fn second_signal_skips_waits_but_still_reverts() {
    let dir = tmp();
    let marker = Marker::spawn("hurry");
    let flag = dir.path().join("flag");
    std::fs::write(&flag, "ok\n").unwrap();
    // After recovery the steady-state re-check would wait up to 2 × rto = 60 s for
    // this precheck (the test breaks it); the second signal must cut that short.
    let extra = format!(
        "objectives: {{ rto: 30s }}\nprechecks:\n  - name: flag ok\n    probe: {{ command: {{ run: \"grep -q ok {}\" }} }}\n",
        flag.display()
    );
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, stop_scenario(&marker, &extra, "5m")).unwrap();
    let reports = dir.path().join("reports");
    let mut engine = spawn_drill(&scen, "hurry1", &dir.path().join("state"), &reports);
    assert!(wait_until(Duration::from_secs(10), || marker.state() == 'T'));
    std::fs::write(&flag, "bad\n").unwrap();
    unsafe {
        libc::kill(engine.id() as i32, libc::SIGINT);
    }
    // Recovery reverts, then sits in the steady-state re-check.
    assert!(
        wait_until(Duration::from_secs(5), || marker.state() != 'T'),
        "first signal did not revert"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        engine.try_wait().unwrap().is_none(),
        "engine should still be waiting for steady state"
    );
    let t = Instant::now();
    unsafe {
        libc::kill(engine.id() as i32, libc::SIGINT);
    }
    assert_eq!(wait_exit(&mut engine, Duration::from_secs(10)), Some(1));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "second signal did not skip the wait: {:?}",
        t.elapsed()
    );
    let j = journal(&reports);
    let steady = j
        .steps
        .iter()
        .find(|s| s.phase == Phase::SteadyState)
        .unwrap();
    assert_eq!(steady.status, StepStatus::Failed);
    assert!(
        j.steps
            .iter()
            .find_map(|s| s.fault.as_ref()?.revert.as_ref())
            .unwrap()
            .ok
    );
}
