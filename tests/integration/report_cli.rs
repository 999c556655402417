//! `firedrill report <journal.json>` re-renders a past run exactly as the run itself
//! rendered it, in every format, through the built binary.

use crate::report_support;

use std::path::{Path, PathBuf};

use crate::common::report_cmd;
use firedrill::model::RunRecord;
use firedrill::report::{Format, render};

/// `r` written as `journal.json` in `dir`, as a run writes it; its path.
fn write_journal(dir: &Path, r: &RunRecord) -> PathBuf {
    let journal = dir.join("journal.json");
    std::fs::write(&journal, render(r, Format::Json, None).unwrap()).unwrap();
    journal
}

#[test]
fn report_rerenders_identically_in_every_format() {
    let r = report_support::record();
    let dir = tempfile::tempdir().unwrap();
    let journal = write_journal(dir.path(), &r);
    for (flag, format) in [
        ("md", Format::Md),
        ("html", Format::Html),
        ("junit", Format::Junit),
        ("json", Format::Json),
    ] {
        let out = report_cmd(&journal, flag).output().unwrap();
        assert!(
            out.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            render(&r, format, None).unwrap(),
            "--format {flag}"
        );
    }
    // -o writes the same bytes to a file.
    let md = dir.path().join("out.md");
    let st = report_cmd(&journal, "md")
        .arg("-o")
        .arg(&md)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(&md).unwrap(),
        render(&r, Format::Md, None).unwrap()
    );
}

#[test]
fn report_uses_the_template_dir_and_names_a_broken_template() {
    let r = report_support::record();
    let dir = tempfile::tempdir().unwrap();
    let journal = write_journal(dir.path(), &r);
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(
        templates.join("junit.xml.hbs"),
        "<x run=\"{{run.run_id}}\">{{junit.tests}}</x>\n",
    )
    .unwrap();
    let out = report_cmd(&journal, "junit")
        .arg("--template-dir")
        .arg(&templates)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "<x run=\"20250314T021000Z-7f3a\">9</x>\n"
    );

    let broken = templates.join("report.md.hbs");
    std::fs::write(&broken, "# {{run.run_id}}\n{{#if outcome}}\nunclosed\n").unwrap();
    let out = report_cmd(&journal, "md")
        .arg("--template-dir")
        .arg(&templates)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage-class error");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(&format!("error: template {}: line ", broken.display())),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
