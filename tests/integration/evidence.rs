//! Evidence of what was observed: a failed check keeps excerpts of the command's
//! stdout/stderr and of HTTP bodies in the journal and shows them in the reports,
//! redacted (even where an excerpt's cut falls inside a secret), bounded, and escaped
//! (a hostile body never becomes markup). Command checks compare a number or a JSON
//! value taken from stdout, and a failure shows the value measured.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;

use common::*;
use firedrill::model::StepStatus;

/// An HTTP server on 127.0.0.1 that answers every request with 500 and `body`;
/// it lives as long as the test process (the thread blocks in `accept`).
fn serve_500(body: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn a_failed_check_keeps_redacted_bounded_escaped_excerpts_in_journal_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Marker::spawn("evidence");
    let secret = format!("s3cr3t-{}-corpsecret", std::process::id());
    // The secret straddles the 2 KiB cut: a cut before redaction would leave its
    // first bytes in the journal.
    let body = format!(
        "{}{secret} <script>alert(1)</script> replica lag=9.5",
        "x".repeat(2040)
    );
    let port = serve_500(body);
    let scen = write_scenario(
        dir.path(),
        &format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: evidence-test }}
vars:
  key: {{ env: FD_TEST_EVIDENCE_KEY, secret: true }}
faults:
  - name: freeze marker
    kind: process_kill
    with: {{ pattern: "^{tag} ", signal: STOP }}
verifications:
  - name: replica lag is small
    critical: false
    retries: 4
    interval: 20ms
    probe: {{ command: {{ run: "echo \"lag=7.5 key={{{{key}}}} <script>alert(1)</script>\"; echo 'pg: replica behind' >&2; exit 1" }} }}
  - name: lag below 2 s
    critical: false
    probe: {{ command: {{ run: "echo 'replica r2 lag=7.5 s'" }} }}
    expect: {{ stdout_number: {{ regex: 'lag=([0-9.]+)', lt: 2 }} }}
  - name: lag json below 2 s
    critical: false
    probe: {{ command: {{ run: "echo '{{\"lag_s\": 3.25}}'" }} }}
    expect: {{ stdout_json: {{ path: $.lag_s, lt: 2 }} }}
  - name: relay health
    critical: false
    probe: {{ http: {{ url: "http://127.0.0.1:{port}/health", timeout: 2s }} }}
  - name: a passing check keeps no report rows
    probe: {{ command: {{ run: "echo fine-output" }} }}
"#,
            tag = marker.tag
        ),
    );
    let reports = dir.path().join("reports");
    let out = drill_cmd(&scen, "evid1", &dir.path().join("state"), &reports)
        .env("FD_TEST_EVIDENCE_KEY", &secret)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(marker.state(), 'T', "{stderr}");
    let j = journal(&reports);
    let step = |name: &str| j.steps.iter().find(|s| s.name == name).unwrap();

    // The command failed 5 times: the last 3 failed attempts are kept, with stdout
    // and stderr, the secret redacted.
    let lag = step("replica lag is small");
    assert_eq!(lag.status, StepStatus::Failed);
    assert_eq!(lag.attempts, 5);
    let attempts: Vec<u32> = lag.evidence.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [3, 4, 5], "{:?}", lag.evidence);
    let last = lag.evidence.last().unwrap();
    assert!(!last.held);
    let stdout = last.stdout.as_deref().unwrap();
    assert!(stdout.contains("lag=7.5 key=*** <script>"), "{stdout}");
    assert_eq!(last.stderr.as_deref(), Some("pg: replica behind\n"));

    // Numbers and JSON from stdout: the failure names the value measured.
    let num = step("lag below 2 s");
    assert_eq!(num.status, StepStatus::Failed);
    assert!(
        num.detail.contains("= 7.5 (expected < 2)"),
        "{}",
        num.detail
    );
    let js = step("lag json below 2 s");
    assert_eq!(js.status, StepStatus::Failed);
    assert!(
        js.detail.contains("$.lag_s = 3.25 (expected < 2)"),
        "{}",
        js.detail
    );

    // The HTTP body: bounded to 2 KiB, redacted before the cut.
    let health = step("relay health");
    assert_eq!(health.status, StepStatus::Failed);
    let excerpt = health.evidence.last().unwrap().body.as_deref().unwrap();
    assert!(excerpt.len() < 2 * 1024 + 40, "{} bytes", excerpt.len());
    assert!(excerpt.ends_with("more bytes]"), "{excerpt}");
    assert!(excerpt.contains("x***"), "{excerpt}");

    // A passing check keeps its last attempt in the journal, not in the reports.
    let fine = step("a passing check keeps no report rows");
    assert_eq!(fine.status, StepStatus::Passed);
    assert_eq!(fine.evidence.len(), 1);
    assert!(fine.evidence[0].held);

    let dir_ = report_dir(&reports);
    let read = |f: &str| std::fs::read_to_string(dir_.join(f)).unwrap();
    for f in ["journal.json", "report.md", "report.html", "junit.xml"] {
        let text = read(f);
        assert!(
            !text.contains(&secret[..8]),
            "a secret's prefix leaked into {f}"
        );
    }
    let md = read("report.md");
    assert!(md.contains("### Evidence from failed checks"), "{md}");
    assert!(md.contains("pg: replica behind"), "{md}");
    assert!(md.contains("lag=7.5 key=\\*\\*\\* &lt;script&gt;"), "{md}");
    assert!(
        !md.contains("<script>"),
        "a hostile output became markup in report.md"
    );
    let section = md.split("### Evidence from failed checks").nth(1).unwrap();
    let section = section.split("\n#").next().unwrap();
    assert!(
        section.contains("| replica lag is small | 5 | failed | stderr |"),
        "{section}"
    );
    assert!(
        !section.contains("a passing check"),
        "a passing check has evidence rows in report.md: {section}"
    );
    let html = read("report.html");
    assert!(html.contains("Evidence from failed checks"));
    assert!(html.contains("lag&#x3D;7.5 key&#x3D;*** &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        !html.contains("<script>alert"),
        "a hostile output became markup in report.html"
    );
}
