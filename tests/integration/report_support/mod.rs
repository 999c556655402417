//! A fixed, realistic run record shared by the report tests: two prechecks (one passed
//! only on its second attempt), a `process_kill` (SIGSTOP) fault with its effect and
//! revert, a critical verification that held late in its `within`, a non-critical
//! verification that failed, one guard that held, a recovery step and the steady-state
//! re-check. Improvements are derived by the real rules.

#![allow(dead_code)]

use std::collections::BTreeMap;

use firedrill::fault::{Effect, Reverted};
use firedrill::model::*;
use firedrill::report::improvements;
use firedrill::scenario::Level;

pub fn ev(t_ms: f64, phase: Phase, event: &str, step: Option<&str>, message: &str) -> Event {
    let s = (t_ms / 1000.0).floor() as u64;
    let ms = (t_ms as u64) % 1000;
    Event {
        t_ms,
        at: format!("2025-03-14T02:{:02}:{:02}.{ms:03}Z", 10 + s / 60, s % 60),
        phase,
        event: event.into(),
        step: step.map(str::to_string),
        message: message.into(),
    }
}

pub fn step(phase: Phase, name: &str, started_ms: f64, duration_ms: f64) -> StepRecord {
    StepRecord {
        phase,
        name: name.into(),
        status: StepStatus::Passed,
        critical: true,
        started_ms,
        duration_ms,
        description: String::new(),
        attempts: 1,
        first_held_ms: None,
        within_ms: None,
        detail: String::new(),
        fault: None,
        metrics: BTreeMap::new(),
        evidence: Vec::new(),
    }
}

/// The scenario text embedded in the fixture's journal.
pub const SCENARIO_TEXT: &str = "apiVersion: firedrill/v1\nkind: Scenario\nmetadata: { name: wecom-relay-failover }\nfaults: []\n";

pub fn record() -> RunRecord {
    let mut steps = Vec::new();

    let mut s = step(Phase::Precheck, "relay healthy", 5.0, 35.0);
    s.description = "GET http://127.0.0.1:8080/health".into();
    s.detail = "status 200 (expected 200)".into();
    steps.push(s);

    let mut s = step(Phase::Precheck, "queue reachable", 41.0, 519.0);
    s.description = "tcp 127.0.0.1:5672 (1 retries)".into();
    s.attempts = 2;
    s.first_held_ms = Some(515.0);
    s.detail = "connected in 2 ms".into();
    steps.push(s);

    let mut s = step(Phase::Fault, "stop relay worker", 600.0, 52.0);
    s.description = "SIGSTOP every process matching `relay-worker` on local".into();
    s.detail = "stopped 2 process(es) (pids 4242, 4243); both in state T".into();
    s.fault = Some(FaultRecord {
        kind: "process_kill".into(),
        target: "local".into(),
        level: Level::Standard,
        ttl_ms: 600_000.0,
        ledger_seq: Some(1),
        reversible: Some(true),
        effect: Some(Effect {
            declared: "SIGSTOP every process matching `relay-worker` on local".into(),
            measured: "stopped 2 process(es) (pids 4242, 4243); both in state T".into(),
            as_declared: true,
            effective_after_ms: Some(50.0),
            details: serde_json::json!({ "signal": "STOP", "pids": [4242, 4243] }),
        }),
        revert: Some(RevertRecord {
            ok: true,
            started_ms: 49_712.0,
            duration_ms: 48.0,
            result: Some(Reverted {
                measured: "SIGCONT sent to 2 process(es); both running again".into(),
                restored_after_ms: Some(35.0),
                details: serde_json::Value::Null,
            }),
            error: None,
        }),
        impact_start_ms: Some(900.0),
        impact_end_ms: Some(8_700.0),
        impact_ms: Some(7_800.0),
    });
    steps.push(s);

    let mut s = step(
        Phase::Verification,
        "messages fail over to SMS",
        5_651.0,
        34_020.0,
    );
    s.description = "GET http://127.0.0.1:8080/stats within 60s".into();
    s.attempts = 35;
    // Counted from the disruption (650 ms): 34 s after the check's own start.
    s.first_held_ms = Some(34_000.0 + 5_651.0 - 650.0);
    s.within_ms = Some(60_000.0);
    s.detail = "$.sent_via = \"sms\" (expected \"sms\")".into();
    steps.push(s);

    let mut s = step(
        Phase::Verification,
        "p95 latency under 2 s",
        39_690.0,
        10_010.0,
    );
    s.critical = false;
    s.status = StepStatus::Failed;
    s.description = "GET http://127.0.0.1:8080/metrics within 10s".into();
    s.attempts = 11;
    s.within_ms = Some(10_000.0);
    s.detail = "$.p95_ms = 3450 | expected < 2000\nlast body: {\"p95_ms\":3450}".into();
    s.metrics.insert("latency_ms".into(), 3.2);
    steps.push(s);

    let mut s = step(Phase::Recovery, "restart relay", 49_770.0, 1_130.0);
    s.description = "`systemctl restart relay` on local".into();
    s.detail = "exit 0".into();
    steps.push(s);

    let mut s = step(Phase::SteadyState, "steady state", 49_710.0, 2_400.0);
    s.description = "prechecks re-run until they all hold; measures the recovery time".into();
    s.attempts = 3;
    s.first_held_ms = Some(2_400.0);
    s.detail = "all prechecks hold again".into();
    steps.push(s);

    let timeline = vec![
        ev(
            0.0,
            Phase::Setup,
            "run_started",
            None,
            "drill `wecom-relay-failover` run 20250314T021000Z-7f3a (level full)",
        ),
        ev(
            5.0,
            Phase::Precheck,
            "step_started",
            Some("relay healthy"),
            "relay healthy: GET http://127.0.0.1:8080/health",
        ),
        ev(
            40.0,
            Phase::Precheck,
            "step_finished",
            Some("relay healthy"),
            "relay healthy: passed after 1 attempt(s)",
        ),
        ev(
            41.0,
            Phase::Precheck,
            "step_started",
            Some("queue reachable"),
            "queue reachable: tcp 127.0.0.1:5672",
        ),
        ev(
            560.0,
            Phase::Precheck,
            "step_finished",
            Some("queue reachable"),
            "queue reachable: passed after 2 attempt(s)",
        ),
        ev(
            600.0,
            Phase::Fault,
            "step_started",
            Some("stop relay worker"),
            "stop relay worker: SIGSTOP every process matching `relay-worker`",
        ),
        ev(
            602.0,
            Phase::Fault,
            "guard_started",
            Some("error budget"),
            "guard `error budget` watching GET http://127.0.0.1:8080/metrics",
        ),
        ev(
            650.0,
            Phase::Fault,
            "fault_effective",
            Some("stop relay worker"),
            "stop relay worker: stopped 2 process(es)",
        ),
        ev(
            651.0,
            Phase::Fault,
            "ramp_up",
            Some("stop relay worker"),
            "stop relay worker: settling for 5s",
        ),
        ev(
            5_651.0,
            Phase::Verification,
            "step_started",
            Some("messages fail over to SMS"),
            "messages fail over to SMS: GET http://127.0.0.1:8080/stats",
        ),
        ev(
            39_671.0,
            Phase::Verification,
            "step_finished",
            Some("messages fail over to SMS"),
            "messages fail over to SMS: passed after 35 attempt(s)",
        ),
        ev(
            39_690.0,
            Phase::Verification,
            "step_started",
            Some("p95 latency under 2 s"),
            "p95 latency under 2 s: GET http://127.0.0.1:8080/metrics",
        ),
        ev(
            49_700.0,
            Phase::Verification,
            "step_finished",
            Some("p95 latency under 2 s"),
            "p95 latency under 2 s: failed (non-critical) after 11 attempt(s): $.p95_ms = 3450 | expected < 2000",
        ),
        ev(
            49_710.0,
            Phase::Recovery,
            "recovery_started",
            None,
            "recovering",
        ),
        ev(
            49_760.0,
            Phase::Recovery,
            "fault_reverted",
            Some("stop relay worker"),
            "stop relay worker: reverted: SIGCONT sent to 2 process(es)",
        ),
        ev(
            49_770.0,
            Phase::Recovery,
            "step_started",
            Some("restart relay"),
            "restart relay: `systemctl restart relay` on local",
        ),
        ev(
            50_900.0,
            Phase::Recovery,
            "step_finished",
            Some("restart relay"),
            "restart relay: Passed: exit 0",
        ),
        ev(
            50_910.0,
            Phase::SteadyState,
            "step_started",
            Some("steady state"),
            "re-checking 2 precheck(s) for up to 2m",
        ),
        ev(
            52_110.0,
            Phase::SteadyState,
            "step_finished",
            Some("steady state"),
            "steady state: restored 2400 ms after recovery started",
        ),
        ev(
            52_200.0,
            Phase::Report,
            "run_finished",
            None,
            "Passed: every critical assertion held and every fault was reverted",
        ),
    ];

    let mut vars = BTreeMap::new();
    vars.insert("relay".into(), "http://127.0.0.1:8080".into());
    vars.insert("wecom_secret".into(), "***".into());
    let mut labels = BTreeMap::new();
    labels.insert("team".into(), "messaging".into());

    let mut r = RunRecord {
        journal_version: JOURNAL_VERSION,
        tool: ToolInfo {
            name: "firedrill".into(),
            version: "0.1.0".into(),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        },
        run_id: "20250314T021000Z-7f3a".into(),
        scenario: ScenarioInfo {
            name: "wecom-relay-failover".into(),
            description: Some(
                "Relay worker frozen; messages must fail over to SMS within 60 s".into(),
            ),
            owner: Some("messaging-sre".into()),
            file: "scenarios/wecom-relay-failover.yaml".into(),
            sha256: "3f1c9a4e5b7d2c8f0a6e1b3d5c7f9a2e4b6d8c0f1a3e5b7d9c2f4a6e8b0d1c3f".into(),
            labels,
            text: Some(SCENARIO_TEXT.into()),
        },
        host: "drill-runner-01".into(),
        operator: "alice".into(),
        level: Level::Full,
        vars,
        started_at: "2025-03-14T02:10:00.000Z".into(),
        finished_at: "2025-03-14T02:10:52.210Z".into(),
        duration_ms: 52_210.0,
        outcome: Outcome {
            status: Status::Passed,
            exit_code: 0,
            reason: "every critical assertion held and every fault was reverted".into(),
            aborted: None,
        },
        objectives: ObjectivesRecord {
            rto_ms: Some(60_000.0),
            max_duration_ms: 900_000.0,
            recovery_ms: Some(2_400.0),
            rto_met: Some(true),
            service: ServiceState::Restored,
            indicators: vec!["api answers".into()],
            disruption_start_ms: Some(650.0),
            detect_ms: Some(250.0),
            downtime_ms: Some(7_800.0),
            rto_measured_ms: Some(8_050.0),
            resolution_ms: Some(200.0),
            ..ObjectivesRecord::default()
        },
        timeline,
        steps,
        guards: vec![GuardRecord {
            name: "error budget".into(),
            description: "GET http://127.0.0.1:8080/metrics".into(),
            polls: 48,
            failures: 2,
            breached: false,
            breached_ms: None,
            detail: "$.error_rate = 0.012 (expected < 0.05)".into(),
            critical: true,
            breaches: 0,
        }],
        improvements: Vec::new(),
        ledger: "/var/lib/firedrill/ledgers/20250314T021000Z-7f3a.jsonl".into(),
        rehearsal: false,
        notifications: Vec::new(),
        exercise: ExerciseRecord {
            id: Some("BCP-2025-Q1-07".into()),
            environment: Some("staging".into()),
            systems: vec!["message-relay".into(), "sms-gateway".into()],
            rationale: Some("WeCom outages stop customer notifications; SMS must take over".into()),
            risk_ref: Some("BIA-12 (customer notifications)".into()),
            participants: vec![
                ParticipantRecord {
                    name: "Alice Wang".into(),
                    role: "exercise lead".into(),
                    source: "scenario".into(),
                },
                ParticipantRecord {
                    name: "Bob Li".into(),
                    role: "observer".into(),
                    source: "command line".into(),
                },
            ],
            sign_off: vec!["exercise lead".into(), "system owner".into()],
            finding_owner: Some("messaging-sre".into()),
            finding_due: Some("2025-04-13".into()),
            finding_status: firedrill::scenario::FindingStatus::Open,
        },
    };
    r.improvements = improvements::derive(&r);
    r
}
