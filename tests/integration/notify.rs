//! Notifications (`notify:`) against real HTTP endpoints (wiremock): a WeCom group
//! robot, a Slack webhook, a JSON webhook that answers 500 and one that never answers
//! in time. The drill passes whatever the endpoints do, is not held up by the slow
//! one, lists every notification in its reports, and never shows the URLs' keys.

use std::time::Duration;

use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;
use firedrill::model::Phase;

const KEY: &str = "robotKEY-7d1c";

fn scenario(tag: &str) -> String {
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: notify-test }}
vars:
  robot: {{ env: FD_NOTIFY_ROBOT, secret: true }}
  slack: {{ env: FD_NOTIFY_SLACK, secret: true }}
  hook: {{ env: FD_NOTIFY_HOOK, secret: true }}
  slow: {{ env: FD_NOTIFY_SLOW, secret: true }}
notify:
  - name: ops-room
    to: {{ wecom_robot: {{ url: "{{{{robot}}}}" }} }}
  - name: slack-finished
    to: {{ slack: {{ url: "{{{{slack}}}}" }} }}
    events: [finished]
  - name: broken-hook
    to: {{ webhook: {{ url: "{{{{hook}}}}" }} }}
  - name: slow-hook
    to: {{ webhook: {{ url: "{{{{slow}}}}" }} }}
    events: [started]
    timeout: 1s
prechecks:
  - name: first check
    probe: {{ command: {{ run: "true" }} }}
faults:
  - name: kill marker
    kind: process_kill
    with: {{ pattern: "^{tag} ", signal: KILL }}
verifications:
  - name: still fine
    probe: {{ command: {{ run: "true" }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_their_endpoints_and_failures_are_reported_not_fatal() {
    let wecom = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/cgi-bin/webhook/send"))
        .and(query_param("key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"errcode":0,"errmsg":"ok"}"#))
        .mount(&wecom)
        .await;
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/services/T0/B0/{KEY}")))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&slack)
        .await;
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .mount(&hook)
        .await;
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&slow)
        .await;

    let marker = Marker::spawn("notify");
    let dir = tempfile::tempdir().unwrap();
    let file = write_scenario(dir.path(), &scenario(&marker.tag));
    let state = dir.path().join("state");
    let reports = dir.path().join("reports");
    let mut cmd = drill_cmd(&file, "notify1", &state, &reports);
    cmd.arg("--lock-dir")
        .arg(dir.path().join("locks"))
        .env(
            "FD_NOTIFY_ROBOT",
            format!("{}/cgi-bin/webhook/send?key={KEY}", wecom.uri()),
        )
        .env(
            "FD_NOTIFY_SLACK",
            format!("{}/services/T0/B0/{KEY}", slack.uri()),
        )
        .env("FD_NOTIFY_HOOK", format!("{}/hook?token={KEY}", hook.uri()))
        .env("FD_NOTIFY_SLOW", format!("{}/slow?token={KEY}", slow.uri()));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stderr = assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();

    // The robot got started, fault_injected and finished, as WeCom markdown.
    let got = wecom.received_requests().await.unwrap();
    let bodies: Vec<serde_json::Value> = got.iter().map(|r| r.body_json().unwrap()).collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert!(bodies.iter().all(|b| b["msgtype"] == "markdown"));
    let content = |i: usize| {
        bodies[i]["markdown"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        content(0).contains("`notify-test`: drill started"),
        "{}",
        content(0)
    );
    assert!(
        content(1).contains("fault `kill marker` injected"),
        "{}",
        content(1)
    );
    assert!(
        content(2).contains("PASSED (exit code 0)"),
        "{}",
        content(2)
    );
    // Slack only on `finished`.
    let got = slack.received_requests().await.unwrap();
    assert_eq!(got.len(), 1);
    let text = got[0].body_json::<serde_json::Value>().unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("PASSED"), "{text}");
    // The JSON webhook got every event with its fields.
    let events: Vec<String> = hook
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.body_json::<serde_json::Value>().unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(events, ["started", "fault_injected", "finished"]);

    let j = journal(&reports);
    let by = |channel: &str| -> Vec<&firedrill::model::NotificationRecord> {
        j.notifications
            .iter()
            .filter(|n| n.channel == channel)
            .collect()
    };
    assert!(
        by("ops-room").iter().all(|n| n.delivered),
        "{:?}",
        j.notifications
    );
    assert_eq!(by("slack-finished").len(), 1);
    assert!(
        by("broken-hook")
            .iter()
            .all(|n| !n.delivered && n.detail.contains("HTTP 500"))
    );
    let slow_rec = by("slow-hook");
    assert_eq!(slow_rec.len(), 1);
    assert!(!slow_rec[0].delivered);
    assert_eq!(slow_rec[0].detail, "not answered within 1s");
    // The slow endpoint held its `started` message for a second; the drill did not
    // wait for it: the first precheck started right away.
    let first = j.steps.iter().find(|s| s.phase == Phase::Precheck).unwrap();
    assert!(
        first.started_ms < 900.0,
        "precheck started at {} ms",
        first.started_ms
    );
    let imp: Vec<_> = j
        .improvements
        .iter()
        .filter(|i| i.rule == "notification-failed")
        .collect();
    assert_eq!(imp.len(), 2, "{:?}", j.improvements);

    let rdir = report_dir(&reports);
    let md = std::fs::read_to_string(rdir.join("report.md")).unwrap();
    assert!(
        md.contains("### Notifications") && md.contains("**FAILED**"),
        "{md}"
    );
    let html = std::fs::read_to_string(rdir.join("report.html")).unwrap();
    assert!(html.contains("<h2>Notifications</h2>"));
    // The endpoints' keys are nowhere.
    let journal_text = std::fs::read_to_string(rdir.join("journal.json")).unwrap();
    for (what, text) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("journal", &journal_text),
        ("report.md", &md),
        ("report.html", &html),
    ] {
        assert!(!text.contains(KEY), "the key leaked into {what}");
    }
}

#[test]
fn a_bad_channel_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_scenario(
        dir.path(),
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: { name: notify-bad }
notify:
  - name: ops
    to: { wecom_robot: { url: "gopher://x?key=abc123" } }
    timeout: 2m
  - name: ops
    to: { pager: { url: "http://127.0.0.1:9" } }
faults:
  - name: f
    kind: process_kill
    with: { pidfile: /nonexistent, signal: TERM }
"#,
    );
    let out = firedrill().arg("validate").arg(&file).output().unwrap();
    let stderr = assert_exit(&out, 2);
    assert!(
        stderr.contains("notify[0].to.wecom_robot.url: found scheme `gopher`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("notify[0].timeout: found 2m, expected more than 0 and at most 30s"),
        "{stderr}"
    );
    assert!(stderr.contains("notify[1].to"), "{stderr}");
}

/// The WeCom robot channel against the project's WeCom simulator: the messages land
/// in its admin list as WeCom markdown, and a robot with a wrong key (WeCom answers
/// HTTP 200 with errcode 93000) is recorded as not delivered.
#[test]
fn wecom_robot_notifications_reach_the_wecom_simulator_and_errcodes_count_as_failures() {
    const SIM_KEY: &str = "simKEY-42";
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_firedrill-wecom-sim"))
        .args(["--port", &port.to_string(), "--name", "robot"])
        .env("WECOM_SIM_WEBHOOK_KEY", SIM_KEY)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let marker = Marker::spawn("notifysim");
    let file = write_scenario(
        dir.path(),
        &format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: notify-sim }}
vars:
  robot: {{ env: FD_NOTIFY_ROBOT, secret: true }}
  wrong: {{ env: FD_NOTIFY_WRONG, secret: true }}
notify:
  - name: ops-room
    to: {{ wecom_robot: {{ url: "{{{{robot}}}}" }} }}
  - name: stale-key
    to: {{ wecom_robot: {{ url: "{{{{wrong}}}}" }} }}
    events: [finished]
faults:
  - name: kill marker
    kind: process_kill
    with: {{ pattern: "^{} ", signal: KILL }}
"#,
            marker.tag
        ),
    );
    let reports = dir.path().join("reports");
    let out = drill_cmd(&file, "notifysim1", &dir.path().join("state"), &reports)
        .arg("--lock-dir")
        .arg(dir.path().join("locks"))
        .env(
            "FD_NOTIFY_ROBOT",
            format!("http://127.0.0.1:{port}/cgi-bin/webhook/send?key={SIM_KEY}"),
        )
        .env(
            "FD_NOTIFY_WRONG",
            format!("http://127.0.0.1:{port}/cgi-bin/webhook/send?key=old-{SIM_KEY}"),
        )
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let admin = admin_get::blocking_get(&format!("http://127.0.0.1:{port}/admin/messages"));
    let _ = sim.kill();
    let _ = sim.wait();
    let msgs = admin["messages"]
        .as_array()
        .expect("the simulator's message list")
        .clone();
    let contents: Vec<String> = msgs
        .iter()
        .map(|m| {
            assert_eq!(m["msgtype"], "markdown", "{m}");
            m["content"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(contents.len(), 3, "{contents:?}");
    assert!(
        contents[0].contains("`notify-sim`: drill started"),
        "{contents:?}"
    );
    assert!(
        contents[1].contains("fault `kill marker` injected"),
        "{contents:?}"
    );
    assert!(contents[2].contains("PASSED (exit code 0)"), "{contents:?}");
    let j = journal(&reports);
    let stale: Vec<_> = j
        .notifications
        .iter()
        .filter(|n| n.channel == "stale-key")
        .collect();
    assert_eq!(stale.len(), 1);
    assert!(!stale[0].delivered);
    assert!(
        stale[0].detail.contains("errcode 93000"),
        "{}",
        stale[0].detail
    );
    assert!(!serde_json::to_string(&j).unwrap().contains(SIM_KEY));
}

/// A plain HTTP/1.0 GET of the simulator's admin list (no client library needed).
mod admin_get {
    use std::io::{Read, Write};
    pub fn blocking_get(url: &str) -> serde_json::Value {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (_, body) = out.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap()
    }
}
