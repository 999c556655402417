//! Rendered reports of a fixed run: Markdown and JUnit snapshots, the HTML report's
//! self-containment, escaping and SVG timeline, JUnit structure, template overrides.

use crate::report_support;

use firedrill::model::*;
use firedrill::report::{Format, ReportError, render, write_reports};
use report_support::record;

const HOSTILE: &str = "<script>alert(1)</script>";

#[test]
fn markdown_snapshot() {
    let md = render(&record(), Format::Md, None).unwrap();
    insta::assert_snapshot!("report_md", md);
}

#[test]
fn junit_snapshot() {
    let xml = render(&record(), Format::Junit, None).unwrap();
    insta::assert_snapshot!("junit_xml", xml);
}

/// Every string in the record (to tell data apart from the template's own text).
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('`', "&#x60;")
        .replace('=', "&#x3D;")
}

#[test]
fn html_is_self_contained() {
    let r = record();
    let html = render(&r, Format::Html, None).unwrap();
    for banned in [
        "<link", "<script", "src=", "url(", "@import", "<iframe", "<object",
    ] {
        assert!(!html.contains(banned), "html contains {banned}");
    }
    // URLs may appear only as (escaped) data of the run: the fixture's probe URLs.
    let mut data = Vec::new();
    strings(&serde_json::to_value(&r).unwrap(), &mut data);
    let mut rest = html.clone();
    let mut removed = 0;
    for s in data.iter().filter(|s| s.contains("http")) {
        let e = html_escape(s);
        removed += rest.matches(&e).count();
        rest = rest.replace(&e, "");
    }
    assert!(removed > 0, "the fixture's URLs are shown");
    assert!(
        !rest.contains("http://") && !rest.contains("https://"),
        "a URL that is not run data: {}",
        &rest[rest.find("http").unwrap()..][..60]
    );
    // The auditor's header.
    for must in [
        "wecom-relay-failover",
        "messaging-sre",
        "20250314T021000Z-7f3a",
        "drill-runner-01",
        "alice",
        "3f1c9a4e5b7d2c8f0a6e1b3d5c7f9a2e4b6d8c0f1a3e5b7d9c2f4a6e8b0d1c3f",
        "PASSED",
        "Exit code <strong>0</strong>",
        "8.1 s (resolution 200 ms), 13% of RTO",
        "From the disruption (the first fault taking effect)",
        "Recovery time after recovery started",
        "1 min",
        "Findings (identified improvements)",
        "slow-detection",
        // The exercise record.
        "BCP-2025-Q1-07",
        "staging",
        "message-relay, sms-gateway",
        "BIA-12 (customer notifications)",
        "Alice Wang",
        "exercise lead",
        "Bob Li",
        "Deviations from plan",
        "Lessons learned",
        "Sign-off",
        "system owner",
        "2025-04-13",
        "commit 0123456789abcdef0123456789abcdef01234567",
        "Scenario as run",
        "SIGCONT sent to 2 process(es); both running again",
        "after its start: 57% of within)",
        "First held after the disruption",
    ] {
        assert!(html.contains(must), "html lacks {must}");
    }
    assert!(html.contains("failed (non-critical)"));
    assert!(html.contains("@media print"));
}

#[test]
fn hostile_names_are_escaped_everywhere() {
    let mut r = record();
    r.steps[4].name = HOSTILE.into();
    r.steps[4].detail = "\"><img src=x onerror=alert(2)> a|b".into();
    r.scenario.description = Some(HOSTILE.into());
    r.timeline[11].message = HOSTILE.into();
    let html = render(&r, Format::Html, None).unwrap();
    assert!(!html.contains(HOSTILE) && !html.contains("<img"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&quot;&gt;&lt;img src&#x3D;x onerror&#x3D;alert(2)&gt;"));
    // The SVG label is escaped too, and stays well-formed.
    roxmltree::Document::parse(svg_fragment(&html)).unwrap();

    let md = render(&r, Format::Md, None).unwrap();
    assert!(!md.contains(HOSTILE) && !md.contains("<img"));
    assert!(md.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(md.contains("a\\|b"), "pipes inside cells are escaped");

    let xml = render(&r, Format::Junit, None).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert!(
        doc.descendants()
            .any(|n| n.attribute("name") == Some(HOSTILE))
    );
}

fn svg_fragment(html: &str) -> &str {
    let start = html.find("<svg").expect("an svg");
    let end = html.find("</svg>").expect("svg closed") + "</svg>".len();
    &html[start..end]
}

fn class_count(doc: &roxmltree::Document, class: &str) -> usize {
    doc.descendants()
        .filter(|n| {
            n.attribute("class")
                .is_some_and(|c| c.split(' ').any(|w| w == class))
        })
        .count()
}

#[test]
fn svg_timeline_is_well_formed_and_complete() {
    let mut r = record();
    r.guards[0].breached = true;
    r.guards[0].breached_ms = Some(20_000.0);
    let html = render(&r, Format::Html, None).unwrap();
    let doc = roxmltree::Document::parse(svg_fragment(&html)).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    // One bar per step that ran, one window for the fault, phase bands, axis ticks.
    assert_eq!(class_count(&doc, "bar"), r.steps.len());
    assert_eq!(class_count(&doc, "window"), 1);
    for phase in [
        "precheck",
        "fault",
        "verification",
        "recovery",
        "steady_state",
    ] {
        assert_eq!(class_count(&doc, &format!("band-{phase}")), 1, "{phase}");
    }
    assert_eq!(class_count(&doc, "breach"), 1);
    // The non-critical failure is marked, as a warning.
    let failures: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("failure warn"))
        .collect();
    assert_eq!(failures.len(), 1);
    let ticks: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text") && n.text().is_some_and(|t| t.ends_with(" s")))
        .map(|n| n.text().unwrap().to_string())
        .collect();
    assert_eq!(ticks.first().map(String::as_str), Some("0 s"));
    assert!(ticks.contains(&"50 s".to_string()), "{ticks:?}");
    // The fault window spans effect (650 ms) to end of revert (49 760 ms).
    let w = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("window"))
        .unwrap();
    let x: f64 = w.attribute("x").unwrap().parse().unwrap();
    let width: f64 = w.attribute("width").unwrap().parse().unwrap();
    let bar0 = doc
        .descendants()
        .find(|n| n.attribute("class").is_some_and(|c| c.starts_with("bar")))
        .unwrap();
    let x0: f64 = bar0.attribute("x").unwrap().parse().unwrap();
    let scale = (945.0 - 230.0) / r.duration_ms;
    assert!((x - (230.0 + 650.0 * scale)).abs() < 0.1, "{x}");
    assert!((width - (49_760.0 - 650.0) * scale).abs() < 0.2, "{width}");
    assert!((x0 - (230.0 + 5.0 * scale)).abs() < 0.1, "{x0}");
}

struct Counts {
    cases: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
}

fn junit_counts(xml: &str) -> (roxmltree::Document<'_>, Counts) {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let n = |tag: &str| doc.descendants().filter(|n| n.has_tag_name(tag)).count();
    let c = Counts {
        cases: n("testcase"),
        failures: n("failure"),
        errors: n("error"),
        skipped: n("skipped"),
    };
    // The suites' own attributes agree with their elements.
    let root = doc.root_element();
    assert_eq!(root.attribute("tests").unwrap(), c.cases.to_string());
    assert_eq!(root.attribute("failures").unwrap(), c.failures.to_string());
    assert_eq!(root.attribute("errors").unwrap(), c.errors.to_string());
    for s in root.children().filter(|n| n.has_tag_name("testsuite")) {
        let k = |tag: &str| s.descendants().filter(|n| n.has_tag_name(tag)).count();
        assert_eq!(s.attribute("tests").unwrap(), k("testcase").to_string());
        assert_eq!(s.attribute("failures").unwrap(), k("failure").to_string());
        assert_eq!(s.attribute("skipped").unwrap(), k("skipped").to_string());
    }
    (doc, c)
}

/// One case per precheck, verification, recovery step, steady-state check and guard;
/// two per fault.
fn expected_cases(r: &RunRecord) -> usize {
    r.steps
        .iter()
        .map(|s| if s.fault.is_some() { 2 } else { 1 })
        .sum::<usize>()
        + r.guards.len()
}

#[test]
fn junit_counts_match_the_record_and_non_critical_stays_green() {
    let r = record();
    let xml = render(&r, Format::Junit, None).unwrap();
    let (doc, c) = junit_counts(&xml);
    assert_eq!(c.cases, expected_cases(&r));
    assert_eq!((c.failures, c.errors, c.skipped), (0, 0, 0));
    let nc = doc
        .descendants()
        .find(|n| n.attribute("name") == Some("p95 latency under 2 s"))
        .unwrap();
    assert!(nc.descendants().any(|p| p.has_tag_name("property")
        && p.attribute("name") == Some("critical")
        && p.attribute("value") == Some("false")));
    let out = nc
        .children()
        .find(|n| n.has_tag_name("system-out"))
        .unwrap();
    assert!(out.text().unwrap().starts_with(
        "NON-CRITICAL FAILURE: failed (non-critical): $.p95_ms = 3450 | expected < 2000"
    ));
    assert!(xml.contains("time=\"34.020\""));
}

#[test]
fn junit_failures_errors_and_skips() {
    let mut r = record();
    r.steps[3].status = StepStatus::Failed; // critical verification
    r.guards[0].breached = true;
    r.guards[0].breached_ms = Some(9_000.0);
    let f = r.steps[2].fault.as_mut().unwrap();
    let rv = f.revert.as_mut().unwrap();
    rv.ok = false;
    rv.error = Some("kill: \u{1b}[31mEPERM\u{1b}[0m".into()); // control chars too
    r.steps[6].status = StepStatus::Error;
    let mut skipped = r.steps[3].clone();
    skipped.name = "never ran".into();
    skipped.status = StepStatus::Skipped;
    r.steps.insert(4, skipped);
    let xml = render(&r, Format::Junit, None).unwrap();
    let (doc, c) = junit_counts(&xml);
    assert_eq!(c.cases, expected_cases(&r));
    assert_eq!((c.failures, c.errors, c.skipped), (3, 1, 1));
    let reverted = doc
        .descendants()
        .find(|n| n.attribute("name") == Some("stop relay worker: fault reverted"))
        .unwrap();
    let failure = reverted
        .children()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert_eq!(failure.text(), Some("kill: \u{fffd}[31mEPERM\u{fffd}[0m"));
}

#[test]
fn sparse_runs_render_in_every_format() {
    let mut r = record();
    r.steps.truncate(1);
    r.steps[0].status = StepStatus::Failed;
    r.guards.clear();
    r.timeline.clear();
    r.vars.clear();
    r.scenario.description = None;
    r.scenario.owner = None;
    r.objectives = ObjectivesRecord {
        rto_ms: None,
        max_duration_ms: 60_000.0,
        recovery_ms: None,
        rto_met: None,
        ..ObjectivesRecord::default()
    };
    r.outcome = Outcome {
        status: Status::Failed,
        exit_code: 1,
        reason: "precheck `relay healthy` failed".into(),
        aborted: Some(AbortReason::PrecheckFailed),
    };
    r.improvements = firedrill::report::improvements::derive(&r);
    let html = render(&r, Format::Html, None).unwrap();
    roxmltree::Document::parse(svg_fragment(&html)).unwrap();
    assert!(html.contains("stopped early: a precheck failed"));
    assert!(html.contains("no RTO declared"));
    assert!(html.contains("No faults declared."));
    let md = render(&r, Format::Md, None).unwrap();
    assert!(md.contains("**FAILED** (exit code 1)"));
    assert!(md.contains("critical-failure"));
    let (_, c) = junit_counts(&render(&r, Format::Junit, None).unwrap());
    assert_eq!((c.cases, c.failures), (1, 1));
}

#[test]
fn write_reports_writes_four_files_a_faithful_journal_and_the_manifest_last() {
    let r = record();
    let dir = tempfile::tempdir().unwrap();
    let files = write_reports(&r, dir.path(), None).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "journal.json",
            "report.html",
            "report.md",
            "junit.xml",
            "MANIFEST.sha256"
        ]
    );
    let v = firedrill::report::integrity::verify(dir.path(), None).unwrap();
    assert!(v.ok() && v.intact == 4, "{v:?}");
    let back: RunRecord =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(back, r);
    for (p, f) in files
        .iter()
        .zip([Format::Json, Format::Html, Format::Md, Format::Junit])
    {
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            render(&r, f, None).unwrap()
        );
    }
}

#[test]
fn template_dir_overrides_by_file_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("report.md.hbs"),
        "{{run.scenario.name}}: {{outcome.label}} in {{dur run.duration_ms}}, {{cell run.steps.4.detail}}\n",
    )
    .unwrap();
    let r = record();
    let md = render(&r, Format::Md, Some(dir.path())).unwrap();
    assert_eq!(
        md,
        "wecom-relay-failover: PASSED in 52.2 s, $.p95_ms = 3450 \\| expected &lt; 2000<br>last body: {\"p95_ms\":3450}\n"
    );
    // Formats without an override keep the built-in template.
    assert_eq!(
        render(&r, Format::Html, Some(dir.path())).unwrap(),
        render(&r, Format::Html, None).unwrap()
    );
}

fn template_error(file: &str, text: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    let format = match file {
        "report.html.hbs" => Format::Html,
        "junit.xml.hbs" => Format::Junit,
        _ => Format::Md,
    };
    match render(&record(), format, Some(dir.path())) {
        Err(e @ ReportError::Template { .. }) => (e.to_string(), path.display().to_string()),
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn broken_templates_are_named_with_their_line() {
    // A syntax error, found when the template is parsed.
    let (msg, path) = template_error("report.html.hbs", "<p>\n{{#each steps}}\n{{name}}\n");
    assert!(msg.starts_with(&format!("template {path}: line ")), "{msg}");
    // A field that does not exist, found when rendering (strict mode).
    let (msg, path) = template_error("junit.xml.hbs", "<a>\n\n{{run.no_such_field}}\n</a>\n");
    assert!(
        msg.starts_with(&format!("template {path}: line 3, column ")),
        "{msg}"
    );
    assert!(msg.contains("no_such_field"), "{msg}");
}

#[test]
fn a_missing_template_dir_is_an_error() {
    let err = render(
        &record(),
        Format::Md,
        Some(std::path::Path::new("/nonexistent/firedrill-templates")),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/firedrill-templates: template directory not found"
    );
}

/// Run data that tries to break out of its place in report.md: a new block (heading,
/// quote, list, code block), HTML, a code span, emphasis, a link and a table pipe.
const BREAKOUT: &str = "x\n\n# ALL GOOD\n> quoted\n- item\n    indented\n<b>bold</b> | `code` *em* _u_ [l](http://e)\r\n1. one";

/// Every interpolated string goes through escaping: a step name, scenario name,
/// description or outcome reason with blank lines and block markers must not start a
/// heading (e.g. a fake `# ALL GOOD` in a CI job summary), quote, list or HTML of its
/// own, and must not add or split table rows.
#[test]
fn markdown_breakout_names_stay_inside_their_line() {
    let clean = render(&record(), Format::Md, None).unwrap();
    let mut r = record();
    r.scenario.name = BREAKOUT.into();
    // At the start of a line of its own (the reason's paragraph, the quote).
    r.scenario.description = Some(format!("    {BREAKOUT}"));
    r.outcome.reason = format!("# ALL GOOD {BREAKOUT}");
    r.scenario.owner = Some(format!("- {BREAKOUT}"));
    r.operator = BREAKOUT.into();
    for s in &mut r.steps {
        s.name = BREAKOUT.into();
        s.detail = BREAKOUT.into();
        if let Some(f) = &mut s.fault {
            f.kind = BREAKOUT.into();
            f.target = BREAKOUT.into();
            if let Some(e) = &mut f.effect {
                e.declared = BREAKOUT.into();
                e.measured = BREAKOUT.into();
            }
        }
    }
    for g in &mut r.guards {
        g.name = BREAKOUT.into();
        g.description = BREAKOUT.into();
    }
    for i in &mut r.improvements {
        i.title = BREAKOUT.into();
        i.evidence = BREAKOUT.into();
    }
    for e in &mut r.timeline {
        e.event = BREAKOUT.into();
        e.message = BREAKOUT.into();
        e.step = Some(BREAKOUT.into());
    }
    let md = render(&r, Format::Md, None).unwrap();

    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(
        lines.len(),
        clean.lines().count(),
        "data added lines:\n{md}"
    );
    let rows = |s: &str| s.lines().filter(|l| l.starts_with('|')).count();
    assert_eq!(rows(&md), rows(&clean), "table rows added or lost");
    let quotes = |s: &str| s.lines().filter(|l| l.starts_with('>')).count();
    assert_eq!(
        quotes(&md),
        quotes(&clean),
        "a quote that the template did not open"
    );
    for l in &lines {
        let t = l.trim_start();
        assert!(
            !t.starts_with("# ALL GOOD") && !t.starts_with("ALL GOOD"),
            "a fake heading: {l}"
        );
        assert!(
            !t.starts_with("- item") && !t.starts_with("1. one"),
            "a list: {l}"
        );
        assert!(!l.starts_with("    "), "an indented code block: {l}");
        // The only headings are the template's own.
        assert!(
            !l.starts_with('#') || l.starts_with("## firedrill: ") || l.starts_with("### "),
            "a heading from data: {l}"
        );
    }
    assert!(!md.contains("<b>"), "HTML from data");
    assert!(!md.contains('\r'));
    insta::assert_snapshot!("report_md_breakout", md);
}

/// The objective row of the Markdown report named `name`, as one line.
fn objective_row<'a>(md: &'a str, name: &str) -> &'a str {
    md.lines()
        .find(|l| l.starts_with(&format!("| {name}:")))
        .unwrap_or_else(|| panic!("no `{name}` row in:\n{md}"))
}

/// Nothing measured is never "met": with no indicator observation (e.g. no fault took
/// effect) the RTO, downtime and a declared RPO all say "not measured", even in a
/// journal whose `rto_met` claims otherwise.
#[test]
fn unmeasured_rto_and_rpo_are_not_measured_never_met() {
    let mut r = record();
    r.objectives.service = ServiceState::NotMeasured;
    r.objectives.rto_met = Some(true);
    r.objectives.rpo_objective_ms = Some(1_000.0);
    let md = render(&r, Format::Md, None).unwrap();
    let rto = objective_row(&md, "RTO (measured)");
    assert!(rto.ends_with("| not measured |"), "{rto}");
    assert!(rto.contains("not measured (no indicator observed"), "{rto}");
    let rpo = objective_row(&md, "RPO");
    assert!(
        rpo.ends_with("| 1.0 s | not measured | not measured |"),
        "{rpo}"
    );
    assert!(objective_row(&md, "Downtime").contains("not measured"));
    // Never down: the figures are 0, and the report says why.
    r.objectives.service = ServiceState::NeverDown;
    r.objectives.rto_measured_ms = Some(0.0);
    r.objectives.downtime_ms = Some(0.0);
    let md = render(&r, Format::Md, None).unwrap();
    let rto = objective_row(&md, "RTO (measured)");
    assert!(
        rto.contains("0 ms: never went down (resolution 200 ms)"),
        "{rto}"
    );
    assert!(rto.ends_with("| met |"), "{rto}");
    // A missed non-critical objective is shown as such.
    r.objectives.service = ServiceState::Restored;
    r.objectives.rto_measured_ms = Some(70_000.0);
    r.objectives.rto_met = Some(false);
    r.objectives.critical = false;
    let md = render(&r, Format::Md, None).unwrap();
    assert!(
        objective_row(&md, "RTO (measured)").ends_with("| EXCEEDED (non-critical) |"),
        "{md}"
    );
}
