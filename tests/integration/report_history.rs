//! History across runs, through the binary: two real nightly-style runs of the
//! quickstart drill against the demo service (one restarts fast and passes, one too
//! slowly and misses its RTO) both show up in `reports/index.html`, `index.md` and
//! `firedrill history`, with their verdicts and measured RTOs; a journal from before
//! the exercise record (none of its fields) still shows, and a damaged one is named.

use crate::common;

use std::path::Path;

use common::*;

/// The quickstart drill against a demo whose supervisor waits `delay_ms`; its exit code.
fn quickstart(dir: &Path, reports: &Path, run_id: &str, delay_ms: u64) -> i32 {
    let demo = Demo::start(dir, delay_ms);
    let out = firedrill()
        .args(["run", "scenarios/quickstart.yaml", "--run-id", run_id])
        .arg("--var")
        .arg(format!("port={}", demo.port))
        .arg("--var")
        .arg(format!("pidfile={}", demo.pidfile.display()))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--report-dir")
        .arg(reports)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("history: "),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.code().unwrap_or(-1)
}

#[test]
fn two_runs_show_up_in_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    assert_eq!(quickstart(dir.path(), &reports, "hist_fast", 300), 0);
    // Run directories are named by the second: the next run gets its own.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(quickstart(dir.path(), &reports, "hist_slow", 6000), 1);

    let html = std::fs::read_to_string(reports.join("index.html")).unwrap();
    let md = std::fs::read_to_string(reports.join("index.md")).unwrap();
    for page in [&html, &md] {
        assert!(
            page.contains("hist_fast") && page.contains("hist_slow"),
            "{page}"
        );
        assert!(page.contains("PASSED") && page.contains("FAILED"), "{page}");
        assert!(page.contains("/ 5.0 s (met)"), "{page}");
        assert!(page.contains("/ 5.0 s (EXCEEDED)"), "{page}");
    }
    // The trend: a point per run, a line through them, the objective.
    let svg_start = html.find("<svg").unwrap();
    let svg = &html[svg_start..html.find("</svg>").unwrap() + 6];
    roxmltree::Document::parse(svg).expect("well-formed SVG");
    assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
    assert!(svg.contains("class=\"rto\"") && svg.contains("class=\"objective\""));
    // Links go to each run's report.
    let j = |id: &str| -> (String, firedrill::model::RunRecord) {
        for e in std::fs::read_dir(&reports).unwrap() {
            let p = e.unwrap().path();
            if let Ok(t) = std::fs::read_to_string(p.join("journal.json")) {
                let r: firedrill::model::RunRecord = serde_json::from_str(&t).unwrap();
                if r.run_id == id {
                    return (p.file_name().unwrap().to_string_lossy().into_owned(), r);
                }
            }
        }
        panic!("no journal of {id}");
    };
    let (fast_dir, fast) = j("hist_fast");
    let (_, slow) = j("hist_slow");
    assert!(
        html.contains(&format!("href=\"{fast_dir}/report.html\"")),
        "{html}"
    );
    // The figures shown are the journals' own.
    let words = |ms: f64| {
        if ms < 1000.0 {
            format!("{ms:.0} ms")
        } else {
            format!("{:.1} s", ms / 1000.0)
        }
    };
    let slow_rto = slow.objectives.rto_measured_ms.expect("measured");
    assert!(slow_rto > 5_000.0);
    assert!(
        md.contains(&format!("{} / 5.0 s (EXCEEDED)", words(slow_rto))),
        "{md}"
    );
    let fast_rto = fast.objectives.rto_measured_ms.expect("measured");
    assert!(
        md.contains(&format!("{} / 5.0 s (met)", words(fast_rto))),
        "{md}"
    );
    // The slow run's finding is open and counted.
    assert!(slow.improvements.iter().any(|i| i.rule == "rto-exceeded"));

    // The terminal view lists both, newest first.
    let out = firedrill()
        .args(["history", "--report-dir"])
        .arg(&reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("quickstart (2 run(s))"), "{text}");
    let (a, b) = (text.find("FAILED").unwrap(), text.find("PASSED").unwrap());
    assert!(a < b, "newest first: {text}");

    // A journal from before the exercise record, with a loss figure from a future
    // delivery probe: read all the same, and the loss shown.
    let old = reports.join("quickstart-19990101T000000Z");
    std::fs::create_dir(&old).unwrap();
    let mut v: serde_json::Value = serde_json::to_value(&fast).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("exercise");
    o["tool"].as_object_mut().unwrap().remove("commit");
    o["scenario"].as_object_mut().unwrap().remove("text");
    o["run_id"] = "hist_old".into();
    o["started_at"] = "1999-01-01T00:00:00.000Z".into();
    o["steps"][0]["metrics"]["during.loss_rate"] = 0.25.into();
    std::fs::write(old.join("journal.json"), v.to_string()).unwrap();
    // A damaged journal is named, not fatal.
    std::fs::create_dir(reports.join("broken")).unwrap();
    std::fs::write(reports.join("broken").join("journal.json"), "{ not json").unwrap();
    let out = firedrill()
        .args(["history", "--write", "--report-dir"])
        .arg(&reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("quickstart (3 run(s))"), "{text}");
    assert!(text.contains("25.00% / —"), "{text}");
    assert!(text.contains("unreadable: broken/journal.json"), "{text}");
    let md = std::fs::read_to_string(reports.join("index.md")).unwrap();
    assert!(md.contains("hist_old"), "{md}");
}
