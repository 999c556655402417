//! End-to-end drills through the real binary: the quickstart, signals, SIGKILL +
//! `recover`, the dead-man timer, guards, critical failures, caps and locks.
//! Every test checks afterwards that its processes are as before (nothing frozen,
//! no dead-man watcher left) and that the ledger holds nothing pending.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use firedrill::model::{AbortReason, Phase, Status, StepStatus};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Held by the tests whose drills lock in the machine-wide default lock directory:
/// they all lock `local` there, so one at a time.
static DEFAULT_LOCK_DIR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn default_lock_dir_for_this_test() -> std::sync::MutexGuard<'static, ()> {
    DEFAULT_LOCK_DIR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    assert_exit(&out, 0);

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
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, "", "5m"));
    let state = dir.path().join("state");
    let reports = dir.path().join("reports");
    let mut engine = spawn_drill(&scen, "sigint1", &state, &reports);
    assert!(marker.wait_frozen(), "fault never took effect");
    send_signal(&engine, libc::SIGINT);
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
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, "", "10m"));
    let state = dir.path().join("state");
    let mut engine = spawn_drill(&scen, "sigkill1", &state, &dir.path().join("reports"));
    assert!(marker.wait_frozen());
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
    let out = recover_all_output(&state);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to recover"));
}

#[test]
fn deadman_thaws_after_ttl_without_recover() {
    let dir = tmp();
    let marker = Marker::spawn("deadman");
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, "", "2s"));
    let state = dir.path().join("state");
    let mut engine = spawn_drill(&scen, "deadman1", &state, &dir.path().join("reports"));
    assert!(marker.wait_frozen());
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
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, &guards, "5m"));
    let state = dir.path().join("state");
    let reports = dir.path().join("reports");
    let mut engine = spawn_drill(&scen, "guard1", &state, &reports);
    assert!(marker.wait_frozen());
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
    let scen = write_scenario(
        dir.path(),
        &format!(
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
    );
    let reports = dir.path().join("reports");
    let out = drill_cmd(&scen, "crit1", &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 1);
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
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, &extra, "5m"));
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
    let scen = write_scenario(
        dir.path(),
        &stop_scenario(&marker, "objectives: { max_duration: 1500ms }", "5m"),
    );
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
    let scen = write_scenario(
        dir.path(),
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: { name: nomatch }
faults:
  - name: kill nothing
    kind: process_kill
    with: { pattern: "^no-such-process-anywhere-42 " }
"#,
    );
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
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, "", "5m"));
    let state = dir.path().join("state");
    let locks = dir.path().join("locks");
    let mut first = spawn_quiet(
        drill_cmd(&scen, "lockA", &state, &dir.path().join("reports"))
            .env("FIREDRILL_LOCK_DIR", &locks),
    );
    assert!(marker.wait_frozen());
    let out = drill_cmd(&scen, "lockB", &state, &dir.path().join("reports-b"))
        .arg("--lock-dir")
        .arg(&locks)
        .output()
        .unwrap();
    let stderr = assert_exit(&out, 3);
    assert!(
        stderr.contains("in use by another drill") && stderr.contains("lockA"),
        "{stderr}"
    );
    assert!(!dir.path().join("reports-b").exists());
    send_signal(&first, libc::SIGTERM);
    assert_eq!(wait_exit(&mut first, Duration::from_secs(15)), Some(1));
    assert_ne!(marker.state(), 'T');
    assert!(no_deadman("lockA"));
}

#[test]
fn plan_and_dry_run_have_no_side_effects() {
    let dir = tmp();
    let marker = Marker::spawn("plan");
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, "", "5m"));
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
        assert_exit(&out, 0);
        let stdout = String::from_utf8_lossy(&out.stdout);
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
    let text = stop_scenario(&marker, "", "5m")
        .replace("    ttl: 5m", "    ttl: 5m\n    level: full")
        .replace("for: 60s", "for: 200ms");
    let scen = write_scenario(dir.path(), &text);
    let reports = dir.path().join("reports");
    let out = drill_cmd(&scen, "lvl1", &dir.path().join("state"), &reports)
        .args(["--level", "smoke"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
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
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, "", "5m"));
    let state = dir.path().join("state");
    let out = drill_cmd(&scen, "panic1", &state, &dir.path().join("reports"))
        .env("FIREDRILL_DEBUG_PANIC_AFTER", "freeze marker")
        .output()
        .unwrap();
    let stderr = assert_exit(&out, 1);
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
    let scen = write_scenario(
        dir.path(),
        &format!(
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
    );
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
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, &extra, "5m"));
    let reports = dir.path().join("reports");
    let mut engine = spawn_drill(&scen, "hurry1", &dir.path().join("state"), &reports);
    assert!(marker.wait_frozen());
    std::fs::write(&flag, "bad\n").unwrap();
    send_signal(&engine, libc::SIGINT);
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
    send_signal(&engine, libc::SIGINT);
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

#[test]
fn reused_run_id_is_refused_and_nothing_is_injected() {
    let dir = tmp();
    let marker = Marker::spawn("reuse");
    // A short drill, and a short ttl so that the old behaviour cannot leave a watcher.
    let scen = write_scenario(
        dir.path(),
        &stop_scenario(&marker, "", "5s").replace("for: 60s", "for: 300ms"),
    );
    let state = dir.path().join("state");
    let first = drill_cmd(&scen, "reuse1", &state, &dir.path().join("reports"))
        .output()
        .unwrap();
    assert_exit(&first, 0);
    assert_ne!(marker.state(), 'T');

    let second = drill_cmd(&scen, "reuse1", &state, &dir.path().join("reports-2"))
        .output()
        .unwrap();
    let frozen = marker.state() == 'T';
    let stderr = assert_exit(&second, 2);
    assert!(!frozen, "the refused run left the process frozen");
    let ledger = state.join("runs/reuse1/ledger.jsonl");
    assert!(
        stderr.contains("`reuse1`") && stderr.contains(&ledger.display().to_string()),
        "the refusal must name the run id and its ledger: {stderr}"
    );
    assert!(stderr.contains("nothing was injected"), "{stderr}");
    assert!(!dir.path().join("reports-2").exists());
    // The first run's ledger is untouched: one run, one Started entry.
    let entries = firedrill::engine::ledger::read(&ledger).unwrap();
    let started = entries
        .iter()
        .filter(|e| matches!(e, firedrill::engine::ledger::Entry::Started { .. }))
        .count();
    assert_eq!(started, 1);
    assert_eq!(pending_in_ledger(&state, "reuse1"), 0);
}

/// A ledger line for a SIGSTOP undo record of `pid`, as the engine writes it.
fn stop_record(seq: u64, step: &str, pid: u32) -> String {
    let (_, start) = proc_stat(pid).unwrap();
    format!(
        r#"{{"op":"inject","seq":{seq},"step":"{step}","target":{{"type":"local"}},"undo":{{"kind":"process_kill","signal":"STOP","processes":[{{"pid":{pid},"start_time":{start},"comm":"sleep"}}],"deadman_tag":null}},"at":"2026-01-01T00:00:00.000Z"}}"#
    )
}

#[test]
fn recover_reverts_around_a_corrupt_line_and_drops_a_torn_one() {
    let dir = tmp();
    let a = Marker::spawn("torn-a");
    let b = Marker::spawn("torn-b");
    // The engine that wrote this ledger is dead: a child that has exited.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let state = dir.path().join("state");
    let run_dir = state.join("runs/torn1");
    std::fs::create_dir_all(&run_dir).unwrap();
    let started = format!(
        r#"{{"op":"started","run_id":"torn1","scenario":"t","pid":{dead_pid},"pid_start":1,"at":"2026-01-01T00:00:00.000Z"}}"#
    );
    let corrupt = r#"{"op":"inject","seq":2,"step":"half a rec"#;
    let torn = r#"{"op":"reverted","seq":3,"at":"2026-01"#;
    let lines = [
        started,
        stop_record(1, "freeze a", a.pid()),
        corrupt.to_string(),
        stop_record(3, "freeze b", b.pid()),
    ];
    let text = format!("{}\n{torn}", lines.join("\n"));
    let corrupt_offset = lines[0].len() + 1 + lines[1].len() + 1;
    let ledger = run_dir.join("ledger.jsonl");
    std::fs::write(&ledger, &text).unwrap();
    for m in [&a, &b] {
        unsafe {
            libc::kill(m.pid() as i32, libc::SIGSTOP);
        }
        assert!(wait_until(Duration::from_secs(2), || m.state() == 'T'));
    }

    let out = recover_all_output(&state);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every record that can be read is reverted ...
    assert_ne!(a.state(), 'T', "{stdout}\n{stderr}");
    assert_ne!(b.state(), 'T', "{stdout}\n{stderr}");
    assert!(
        stdout.contains("reverted freeze a") && stdout.contains("reverted freeze b"),
        "{stdout}"
    );
    // ... the unreadable one is named by file, line and byte offset ...
    assert!(
        stdout.contains(&format!("{}:3 (byte {corrupt_offset})", ledger.display())),
        "{stdout}"
    );
    // ... and the exit code says something may be left behind, and why.
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("1 ledger record(s) could not be read"),
        "{stderr}"
    );
    // The torn last line was cut off, and the log says so with its size.
    assert!(
        stderr.contains(&format!("dropped a torn last line ({} bytes)", torn.len())),
        "{stderr}"
    );
    let after = std::fs::read_to_string(&ledger).unwrap();
    assert!(after.ends_with('\n'), "{after}");
    assert!(!after.contains(torn), "{after}");
    assert!(after.starts_with(&text[..text.len() - torn.len()]));
    // A second recover has nothing left to revert; the corrupt line is still reported.
    let again = recover_all_output(&state);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(4), "{stdout}");
    assert!(!stdout.contains("reverted"), "{stdout}");
    assert!(stdout.contains("(byte "), "{stdout}");
}

#[test]
fn drills_with_different_state_dirs_share_the_default_target_lock() {
    let _default = default_lock_dir_for_this_test();
    let dir = tmp();
    let marker = Marker::spawn("lockdirs");
    let long = dir.path().join("long.yaml");
    std::fs::write(&long, stop_scenario(&marker, "", "5m")).unwrap();
    // Were the second drill let in, it would freeze, verify briefly, and thaw the
    // process in the middle of the first drill's verification.
    let short = dir.path().join("short.yaml");
    std::fs::write(
        &short,
        stop_scenario(&marker, "", "5m").replace("for: 60s", "for: 200ms"),
    )
    .unwrap();
    // The machine-wide default lock directory, as two operators would use it (root
    // and non-root have different default state dirs).
    let mut first = spawn_quiet(
        drill_cmd(
            &long,
            "dirsA",
            &dir.path().join("state-a"),
            &dir.path().join("reports-a"),
        )
        .env_remove("FIREDRILL_LOCK_DIR"),
    );
    assert!(marker.wait_frozen());
    let out = drill_cmd(
        &short,
        "dirsB",
        &dir.path().join("state-b"),
        &dir.path().join("reports-b"),
    )
    .env_remove("FIREDRILL_LOCK_DIR")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    std::thread::sleep(Duration::from_millis(300));
    let still_frozen = marker.state() == 'T';
    send_signal(&first, libc::SIGTERM);
    let first_code = wait_exit(&mut first, Duration::from_secs(15));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("in use by another drill") && stderr.contains("dirsA"),
        "{stderr}"
    );
    assert!(
        still_frozen,
        "the refused drill thawed the first drill's freeze"
    );
    assert!(!dir.path().join("reports-b").exists());
    assert_eq!(first_code, Some(1));
    assert_ne!(marker.state(), 'T');
    assert!(no_deadman("dirsA"));
}

#[test]
fn a_non_root_drill_sees_the_lock_of_a_root_drill() {
    if !skip::can_run_as_root(
        "a_non_root_drill_sees_the_lock_of_a_root_drill",
        "to run the second drill as another user",
    ) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let _default = default_lock_dir_for_this_test();
    let dir = tmp();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody_home = dir.path().join("nobody");
    std::fs::create_dir(&nobody_home).unwrap();
    std::fs::set_permissions(&nobody_home, std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = Marker::spawn("rootlock");
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, "", "5m"));
    std::fs::set_permissions(&scen, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut first = spawn_quiet(
        drill_cmd(
            &scen,
            "rootA",
            &dir.path().join("state"),
            &dir.path().join("reports"),
        )
        .env_remove("FIREDRILL_LOCK_DIR"),
    );
    assert!(marker.wait_frozen());
    // Everything at its default, as an unprivileged operator would run it.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_firedrill"))
        .arg("run")
        .arg(&scen)
        .arg("--report-dir")
        .arg(nobody_home.join("reports"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &nobody_home)
        .env("FIREDRILL_EXE", env!("CARGO_BIN_EXE_firedrill"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let still_frozen = marker.state() == 'T';
    send_signal(&first, libc::SIGTERM);
    let first_code = wait_exit(&mut first, Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("in use by another drill") && stderr.contains("rootA"),
        "{stderr}"
    );
    assert!(still_frozen);
    assert_eq!(first_code, Some(1));
    assert_ne!(marker.state(), 'T');
}

/// The quickstart against a demo whose supervisor waits `delay_ms` before restarting
/// the killed worker: exit code and journal.
fn quickstart_with_restart_delay(
    delay_ms: u64,
    run_id: &str,
) -> (i32, firedrill::model::RunRecord) {
    let dir = tmp();
    let demo = Demo::start(dir.path(), delay_ms);
    let state = dir.path().join("state");
    let reports = dir.path().join("reports");
    let out = firedrill()
        .args(["run", "scenarios/quickstart.yaml", "--run-id", run_id])
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
    assert_eq!(pending_in_ledger(&state, run_id), 0);
    let j = journal(&reports);
    let md = std::fs::read_to_string(report_dir(&reports).join("report.md")).unwrap();
    assert!(
        md.contains("RTO (measured): From the disruption (the first fault taking effect)"),
        "the report defines the measured RTO where it shows it:\n{md}"
    );
    (out.status.code().unwrap_or(-1), j)
}

/// How far a figure may be from the truth: one indicator interval (200 ms) plus the
/// indicator probe's own timeout (500 ms).
const SLACK_MS: f64 = 200.0 + 500.0;

/// The outage is the supervisor's delay, from the kill until the new worker answers
/// (plus its start-up, well under the slack).
fn assert_near(what: &str, measured: Option<f64>, truth: f64) {
    let m = measured.unwrap_or_else(|| panic!("{what} not measured"));
    assert!(
        (truth - SLACK_MS..=truth + SLACK_MS).contains(&m),
        "{what} = {m:.0} ms, expected {truth:.0} ms ± {SLACK_MS:.0} ms"
    );
}

/// The RTO used to be counted from recovery start, so a 6 s outage against a 5 s RTO
/// passed as "4 ms, met". Counted from the kill, it fails with about 6 s of downtime.
#[test]
fn quickstart_with_a_6s_outage_fails_its_5s_rto_measured_from_the_kill() {
    let (code, j) = quickstart_with_restart_delay(6000, "rto_long");
    let o = &j.objectives;
    assert_eq!(code, 1, "{:?}", j.outcome);
    assert_eq!(j.outcome.status, Status::Failed);
    assert!(
        j.outcome.reason.starts_with("measured RTO"),
        "fails on its RTO: {}",
        j.outcome.reason
    );
    assert_eq!(o.service, firedrill::model::ServiceState::Restored);
    assert_eq!(o.indicators, ["demo answers"]);
    assert_eq!(o.rto_met, Some(false));
    assert_eq!(o.resolution_ms, Some(200.0));
    assert_near("downtime_ms", o.downtime_ms, 6000.0);
    assert_near("rto_measured_ms", o.rto_measured_ms, 6000.0);
    assert!(o.rto_measured_ms.unwrap() >= 6000.0, "{o:?}");
    assert!(o.detect_ms.unwrap() <= SLACK_MS, "{o:?}");
    // Every critical check held: only the objective failed the drill.
    assert!(
        j.steps
            .iter()
            .all(|s| !s.critical || s.status != StepStatus::Failed),
        "{:?}",
        j.steps
    );
}

/// A 2 s outage meets the 5 s RTO, with figures within one interval of the truth.
#[test]
fn quickstart_with_a_2s_outage_meets_its_rto_with_figures_near_the_truth() {
    let (code, j) = quickstart_with_restart_delay(2000, "rto_short");
    let o = &j.objectives;
    assert_eq!(code, 0, "{:?}", j.outcome);
    assert_eq!(o.service, firedrill::model::ServiceState::Restored);
    assert_eq!(o.rto_met, Some(true));
    assert_near("downtime_ms", o.downtime_ms, 2000.0);
    assert_near("rto_measured_ms", o.rto_measured_ms, 2000.0);
    assert!(o.rto_measured_ms.unwrap() >= 2000.0, "{o:?}");
    // The disruption is the kill taking effect.
    let effective = j
        .timeline
        .iter()
        .find(|e| e.event == "fault_effective")
        .unwrap();
    assert_eq!(o.disruption_start_ms, Some(effective.t_ms));
    assert_eq!(o.rpo_ms, None);
}

/// With no fault injected (its level is above `--level`) no indicator observed a
/// disruption: the RTO is "not measured", never "met", and nothing fails for it.
#[test]
fn a_drill_without_an_injected_fault_has_its_rto_not_measured() {
    let dir = tmp();
    let demo = Demo::start(dir.path(), 2000);
    let text = std::fs::read_to_string("scenarios/quickstart.yaml")
        .unwrap()
        .replace("level: smoke", "level: full");
    let scen = write_scenario(dir.path(), &text);
    let reports = dir.path().join("reports");
    let out = firedrill()
        .arg("run")
        .arg(&scen)
        .args(["--level", "smoke", "--run-id", "rto_none"])
        .arg("--var")
        .arg(format!("port={}", demo.port))
        .arg("--var")
        .arg(format!("pidfile={}", demo.pidfile.display()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let j = journal(&reports);
    let o = &j.objectives;
    assert_eq!(o.service, firedrill::model::ServiceState::NotMeasured);
    assert_eq!(o.rto_met, None);
    assert_eq!(o.disruption_start_ms, None);
    assert_eq!((o.downtime_ms, o.rto_measured_ms), (None, None));
    assert!(
        !j.outcome.reason.contains("RTO"),
        "an unmeasured RTO fails nothing: {}",
        j.outcome.reason
    );
    let md = std::fs::read_to_string(report_dir(&reports).join("report.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with("| RTO (measured):"))
        .unwrap();
    assert!(row.ends_with("| not measured |"), "{row}");
}

/// Two kills of the demo worker, 2 s apart, each restarted 1 s later by the
/// supervisor: each fault's own impact window is about that 1 s, starts within one
/// indicator interval of its kill, and the first ends before the second begins.
#[test]
fn two_faults_each_get_their_own_impact_window() {
    let dir = tmp();
    let demo = Demo::start(dir.path(), 1000);
    let text = std::fs::read_to_string("scenarios/quickstart.yaml").unwrap();
    let (head, rest) = text.split_once("faults:\n").unwrap();
    let (_, tail) = rest.split_once("verifications:\n").unwrap();
    let faults = "faults:
  - name: first kill
    level: smoke
    kind: process_kill
    with: { pidfile: \"{{pidfile}}\", signal: KILL }
    ramp_up: 2s
  - name: second kill
    level: smoke
    kind: process_kill
    with: { pidfile: \"{{pidfile}}\", signal: KILL }
    ramp_up: 100ms
verifications:
";
    let scen = write_scenario(
        dir.path(),
        &format!("{head}{faults}{tail}").replace("rto: 5s", "rto: 10s"),
    );
    let reports = dir.path().join("reports");
    let out = firedrill()
        .arg("run")
        .arg(&scen)
        .args(["--run-id", "impacts"])
        .arg("--var")
        .arg(format!("port={}", demo.port))
        .arg("--var")
        .arg(format!("pidfile={}", demo.pidfile.display()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let j = journal(&reports);
    let interval = j.objectives.resolution_ms.unwrap();
    let faults: Vec<(f64, &firedrill::model::FaultRecord)> = j
        .steps
        .iter()
        .filter_map(|s| {
            let f = s.fault.as_ref()?;
            let e = f.effect.as_ref()?.effective_after_ms?;
            Some((s.started_ms + e, f))
        })
        .collect();
    assert_eq!(faults.len(), 2, "{:?}", j.steps);
    for (effective, f) in &faults {
        let start = f.impact_start_ms.expect("impact start recorded");
        let took = f.impact_ms.expect("impact recorded");
        eprintln!(
            "fault effective at {effective:.0}: impact {start:.0}..{:.0} ({took:.0} ms)",
            f.impact_end_ms.unwrap()
        );
        // Seen down at the first observation after the kill: one interval, plus
        // the observer's own scheduling on a busy 2-core machine.
        let interval = interval + 50.0;
        // The journal rounds each figure to the microsecond, so the sum of two
        // rounded figures (`effective`) may exceed the rounded start by 1 µs.
        assert!(
            (effective - 0.002..=effective + interval).contains(&start),
            "impact starts at {start:.0}, kill took effect at {effective:.0}"
        );
        // Down for the supervisor's 1 s delay plus the new worker's start-up (tens
        // of ms, at most 100 here), as seen at one observation per interval.
        assert!(
            (1000.0 - interval..=1100.0 + interval).contains(&took),
            "impact {took:.0} ms, expected 1000..1100 ms ± {interval:.0} ms"
        );
    }
    // No double counting: the first window is over before the second kill.
    assert!(faults[0].1.impact_end_ms.unwrap() <= faults[1].0);
    let md = std::fs::read_to_string(report_dir(&reports).join("report.md")).unwrap();
    assert!(md.contains("Impact: this fault's own window"), "{md}");
}
