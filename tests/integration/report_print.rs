//! The HTML report in a real headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`): a real drill against the demo service, whose failed check saw a hostile
//! HTTP body (`<script>`, `onerror=`) and whose exercise record carries hostile text.
//! The page loads with no console message, the hostile markup creates no element in
//! the DOM, and the PDF Chromium prints has the run id, the verdict and the measured
//! RTO in its text (`pdftotext`), a footer with the run id and page numbers on every
//! page, and every timeline event name and timestamp unbroken.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// What the hostile server answers, and what the scenario's rationale says: if any
/// of it became markup, the console would say so (and the DOM would show the element).
const HOSTILE: &str = r#"<script>console.error("firedrill-xss-script")</script><img src=x onerror="console.error('firedrill-xss-onerror')"><svg onload="console.error('firedrill-xss-svg')"></svg>"#;

/// `python3 -m http.server` serving [`HOSTILE`] as `/`, stopped on drop.
struct HostileServer {
    child: Child,
    port: u16,
}

impl HostileServer {
    fn start(dir: &Path) -> HostileServer {
        let root = dir.join("hostile");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), HOSTILE).unwrap();
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        assert!(
            wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "hostile server did not start"
        );
        HostileServer { child, port }
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scenario(demo: &Demo, hostile: &HostileServer) -> String {
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata:
  name: print-test
  owner: messaging-sre
  exercise_id: BCP-PRINT-1
  environment: test-lab
  rationale: '{rationale}'
  participants: [ {{ name: Alice, role: exercise lead }} ]
objectives: {{ rto: 5s, max_duration: 2m }}
indicators:
  - name: demo answers
    probe: {{ http: {{ url: "http://127.0.0.1:{port}/health", timeout: 500ms }} }}
    expect: {{ status: 200 }}
    interval: 200ms
    restored_after: 3
prechecks:
  - name: demo healthy
    probe: {{ http: {{ url: "http://127.0.0.1:{port}/health", timeout: 1s }} }}
    expect: {{ status: 200 }}
    within: 10s
faults:
  - name: kill the worker
    kind: process_kill
    with: {{ pidfile: "{pidfile}", signal: KILL }}
    ramp_up: 100ms
verifications:
  - name: hostile page says 500
    critical: false
    probe: {{ http: {{ url: "http://127.0.0.1:{hport}/" }} }}
    expect: {{ status: 500 }}
  - name: worker restarted
    probe: {{ http: {{ url: "http://127.0.0.1:{port}/health", timeout: 500ms }} }}
    expect: {{ status: 200 }}
    within: 10s
    interval: 100ms
"#,
        rationale = HOSTILE.replace('\'', "''"),
        port = demo.port,
        pidfile = demo.pidfile.display(),
        hport = hostile.port,
    )
}

/// Headless Chromium with the flags the issue asks for and a fresh profile.
fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    c
}

/// `--dump-dom` of `page`: (DOM, console lines from the log).
fn load(profile: &Path, page: &Path) -> (String, Vec<String>) {
    let out = chromium(profile)
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8(out.stdout).unwrap(), console)
}

fn missing_tools() -> Option<String> {
    for (tool, arg) in [
        ("chromium", "--version"),
        ("pdftotext", "-v"),
        ("pdfinfo", "-v"),
    ] {
        if Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Some(format!(
                "needs `{tool}` (apt-get install chromium poppler-utils)"
            ));
        }
    }
    None
}

/// Every start tag of a serialised DOM: its name and attribute names, lowercased.
/// Text is serialised with `<` as `&lt;`, so a `<` starts a tag; quoted attribute
/// values are skipped whole.
fn tags(dom: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let b = dom.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'<' || b.get(i + 1).is_none_or(|c| !c.is_ascii_alphabetic()) {
            i += 1;
            continue;
        }
        i += 1;
        let mut words = Vec::new();
        let mut word = String::new();
        while i < b.len() && b[i] != b'>' {
            match b[i] {
                q @ (b'"' | b'\'') => {
                    i += 1;
                    while i < b.len() && b[i] != q {
                        i += 1;
                    }
                }
                c if c.is_ascii_whitespace() || c == b'=' || c == b'/' => {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                }
                c => word.push(c.to_ascii_lowercase() as char),
            }
            i += 1;
        }
        if !word.is_empty() {
            words.push(word);
        }
        if !words.is_empty() {
            let name = words.remove(0);
            out.push((name, words));
        }
    }
    out
}

/// Collapses every run of whitespace to one space: table cells wrap over lines.
fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn human(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

#[test]
fn the_report_loads_cleanly_in_chromium_and_prints_to_pdf() {
    if !common::skip::can_run("report_print", missing_tools()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 300);
    let hostile = HostileServer::start(dir.path());
    let scen = write_scenario(dir.path(), &scenario(&demo, &hostile));
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let rdir = report_dir(&reports);
    let run: firedrill::model::RunRecord =
        serde_json::from_str(&std::fs::read_to_string(rdir.join("journal.json")).unwrap()).unwrap();
    let page = rdir.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // The hostile body reached the report (as text), so the checks below test something.
    let body_seen = run
        .steps
        .iter()
        .flat_map(|s| &s.evidence)
        .any(|e| e.body.as_deref().is_some_and(|b| b.contains("<script>")));
    assert!(
        body_seen,
        "the failed check kept the hostile body as evidence"
    );
    assert!(
        html.contains("&lt;script&gt;console.error"),
        "shown escaped"
    );

    let profile = dir.path().join("chromium-profile");
    // The console check can fail: a page that logs is seen logging.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<p>x</p><script>console.error('control')</script>",
    )
    .unwrap();
    let (_, console) = load(&profile, &control);
    assert!(
        console.iter().any(|l| l.contains("control")),
        "chromium's console log is not captured: {console:?}"
    );

    let (dom, console) = load(&profile, &page);
    assert!(console.is_empty(), "console messages: {console:?}");
    assert!(dom.contains("Drill report: print-test"), "the page loaded");
    // No element from the hostile text: the report has no script, image or inline
    // handler of its own, so any in the DOM came from data.
    let tags = tags(&dom);
    assert!(
        tags.iter()
            .any(|(n, a)| n == "svg" && a.contains(&"viewbox".to_string()))
    );
    for (name, attrs) in tags {
        assert!(
            !["script", "img", "iframe", "object", "embed"].contains(&name.as_str()),
            "the DOM has a <{name}> element"
        );
        assert!(
            !attrs.iter().any(|a| a.starts_with("on")),
            "<{name}> has an event handler: {attrs:?}"
        );
    }
    assert!(dom.matches("&lt;script&gt;").count() >= 2, "shown as text");

    // Print to PDF.
    let pdf = dir.path().join("report.pdf");
    let out = chromium(&profile)
        .arg("--no-pdf-header-footer")
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success() && pdf.exists(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = Command::new("pdftotext")
        .arg(&pdf)
        .arg("-")
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = flat(&String::from_utf8_lossy(&text.stdout));
    let rto = run
        .objectives
        .rto_measured_ms
        .expect("the indicators measured an RTO");
    for must in [
        run.run_id.clone(),
        "PASSED".into(),
        // The measured RTO, in the objectives table and in the lessons learned (a
        // list item: table cells that wrap can interleave in pdftotext's output).
        format!("{} (resolution 200 ms)", human(rto)),
        format!(
            "restored {} after the disruption, within its RTO of 5.0 s",
            human(rto)
        ),
        "BCP-PRINT-1".into(),
        // The footer, on the first page at least.
        format!("firedrill run {}", run.run_id),
        "page 1 of".into(),
    ] {
        assert!(text.contains(&must), "the PDF text lacks `{must}`:\n{text}");
    }
    // No mid-word breaks: table headings, the owner's name, every event name and
    // timestamp of the timeline are whole.
    for word in [
        "Declared",
        "Measured",
        "Result",
        "Severity",
        "Owner",
        "Status",
        "Attempts",
        "Started",
        "Duration",
        "messaging-sre",
    ] {
        assert!(text.contains(word), "`{word}` broken in the PDF:\n{text}");
    }
    for e in &run.timeline {
        assert!(
            text.contains(&e.event),
            "event `{}` broken in the PDF",
            e.event
        );
        assert!(
            text.contains(&e.at),
            "timestamp `{}` broken in the PDF",
            e.at
        );
    }
    let info = Command::new("pdfinfo").arg(&pdf).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    let pages: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("pdfinfo gives the page count");
    // Every page has the footer with its number.
    assert!(text.contains(&format!("page {pages} of {pages}")), "{text}");
    eprintln!(
        "report.pdf: {pages} page(s), {} timeline events",
        run.timeline.len()
    );
    // To look at the PDF: FIREDRILL_KEEP_PDF=/tmp/report.pdf.
    if let Ok(keep) = std::env::var("FIREDRILL_KEEP_PDF") {
        std::fs::copy(&pdf, keep).unwrap();
    }
}
