//! `firedrill report <journal.json>` re-renders a past run exactly as the run itself
//! rendered it, in every format, through the built binary.

use crate::report_support;

use std::process::Command;

use firedrill::report::{Format, render};

fn firedrill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_firedrill"))
}

#[test]
fn report_rerenders_identically_in_every_format() {
    let r = report_support::record();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.json");
    std::fs::write(&journal, render(&r, Format::Json, None).unwrap()).unwrap();
    for (flag, format) in [
        ("md", Format::Md),
        ("html", Format::Html),
        ("junit", Format::Junit),
        ("json", Format::Json),
    ] {
        let out = firedrill()
            .arg("report")
            .arg(&journal)
            .args(["--format", flag])
            .output()
            .unwrap();
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
    let st = firedrill()
        .arg("report")
        .arg(&journal)
        .args(["--format", "md", "-o"])
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
    let journal = dir.path().join("journal.json");
    std::fs::write(&journal, render(&r, Format::Json, None).unwrap()).unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(
        templates.join("junit.xml.hbs"),
        "<x run=\"{{run.run_id}}\">{{junit.tests}}</x>\n",
    )
    .unwrap();
    let out = firedrill()
        .arg("report")
        .arg(&journal)
        .args(["--format", "junit", "--template-dir"])
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
    let out = firedrill()
        .arg("report")
        .arg(&journal)
        .args(["--format", "md", "--template-dir"])
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
