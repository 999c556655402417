//! Traffic in the reports: each `traffic:` entry gets a table of p50/p95/p99/max and
//! success rate per drill phase in Markdown and HTML, not only a p95 in its detail.

use crate::report_support;

use firedrill::model::*;
use firedrill::report::{Format, render};
use report_support::{record, step};

/// The fixed run plus a traffic entry whose `during` phase failed and stalled.
fn with_traffic() -> RunRecord {
    let mut r = record();
    let mut s = step(Phase::Verification, "checkout load", 1_000.0, 60_000.0);
    s.description = "traffic: GET http://127.0.0.1:8080/checkout".into();
    s.attempts = 600;
    s.detail = "before: 100 requests, 100.00% ok".into();
    for (phase, n, ok, p50, p95, p99, max) in [
        ("before", 100.0, 1.0, 1.2, 2.5, 4.0, 6.1),
        ("during", 300.0, 0.8733, 2.0, 950.0, 1_890.5, 2_004.0),
        ("recovery", 50.0, 0.96, 1.5, 40.0, 120.0, 130.0),
        ("after", 200.0, 1.0, 1.3, 2.9, 5.2, 9.75),
        ("all", 650.0, 0.9367, 1.4, 700.0, 1_500.0, 2_004.0),
    ] {
        for (k, v) in [
            ("count", n),
            ("success_rate", ok),
            ("p50_ms", p50),
            ("p95_ms", p95),
            ("p99_ms", p99),
            ("max_ms", max),
        ] {
            s.metrics.insert(format!("{phase}.{k}"), v);
        }
    }
    r.steps.push(s);
    r
}

/// The Markdown section from its heading to the next one.
fn section<'a>(md: &'a str, heading: &str) -> &'a str {
    let start = md
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading} in:\n{md}"));
    let rest = &md[start + heading.len()..];
    let end = rest
        .find("\n### ")
        .map_or(md.len(), |e| start + heading.len() + e);
    &md[start..end]
}

#[test]
fn markdown_shows_percentiles_per_phase_for_each_traffic_entry() {
    let md = render(&with_traffic(), Format::Md, None).unwrap();
    insta::assert_snapshot!("report_md_traffic", section(&md, "### Traffic per phase"));
}

#[test]
fn html_shows_percentiles_per_phase_for_each_traffic_entry() {
    let html = render(&with_traffic(), Format::Html, None).unwrap();
    let start = html
        .find("<h2>Traffic per phase</h2>")
        .expect("traffic section");
    let sec = &html[start..start + html[start..].find("</section>").unwrap()];
    assert!(sec.contains("<th>p50</th><th>p95</th><th>p99</th><th>max</th>"));
    for cell in ["1890.5 ms", "2004.0 ms", "87.33%", "9.8 ms"] {
        assert!(sec.contains(cell), "{cell} missing in:\n{sec}");
    }
    assert_eq!(sec.matches("<tr><td>").count(), 5, "{sec}");
}

#[test]
fn runs_without_traffic_have_no_traffic_section() {
    let md = render(&record(), Format::Md, None).unwrap();
    assert!(!md.contains("Traffic per phase"));
    let html = render(&record(), Format::Html, None).unwrap();
    assert!(!html.contains("Traffic per phase"));
}
