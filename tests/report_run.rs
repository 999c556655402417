//! Reports of real drills through the binary: `firedrill report` re-renders a real
//! journal byte for byte, the end-of-run summary, and what happens when the report
//! directory cannot take the evidence (checked before anything is injected; never
//! exit 0 without the reports).

mod common;

use common::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A short drill: a SIGSTOP on the marker, many quick steps (many measured timings),
/// and `extra_verifications` appended to its verifications.
fn short_scenario(marker: &Marker, extra_verifications: &str) -> String {
    let mut prechecks = String::new();
    for i in 0..8 {
        prechecks.push_str(&format!(
            "  - name: up {i}\n    probe: {{ command: {{ run: \"true\" }} }}\n"
        ));
    }
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: short }}
prechecks:
{prechecks}faults:
  - name: freeze marker
    kind: process_kill
    with: {{ pattern: "^{tag} ", signal: STOP }}
    ttl: 5m
verifications:
  - name: frozen
    critical: false
    probe: {{ command: {{ run: "false" }} }}
{extra_verifications}"#,
        tag = marker.tag
    )
}

/// `journal.json` of a real run, re-rendered by `firedrill report`, gives the same
/// bytes as the run wrote, in every format. Measured timings used to come back one
/// ULP off (`7.2060580000000005` for `7.206058`): serde_json's default float parser
/// is not exact for 17-digit numbers.
#[test]
fn report_json_of_a_real_run_is_byte_identical_to_its_journal() {
    let dir = tmp();
    let marker = Marker::spawn("rerender");
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, short_scenario(&marker, "")).unwrap();
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rdir = report_dir(&reports);
    let journal = rdir.join("journal.json");
    for (format, file) in [
        ("json", "journal.json"),
        ("md", "report.md"),
        ("html", "report.html"),
        ("junit", "junit.xml"),
    ] {
        let again = firedrill()
            .arg("report")
            .arg(&journal)
            .args(["--format", format])
            .output()
            .unwrap();
        assert!(again.status.success());
        let written = std::fs::read_to_string(rdir.join(file)).unwrap();
        let rendered = String::from_utf8(again.stdout).unwrap();
        if written != rendered {
            let diff: Vec<(&str, &str)> = written
                .lines()
                .zip(rendered.lines())
                .filter(|(a, b)| a != b)
                .take(3)
                .collect();
            panic!("--format {format} differs from {file}: {diff:?}");
        }
    }
    // Timings are rounded to microseconds where the run model is built.
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&journal).unwrap()).unwrap();
    for e in j["timeline"].as_array().unwrap() {
        let t = e["t_ms"].to_string();
        let decimals = t.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "t_ms {t} is finer than a microsecond");
    }
}

/// The end of `firedrill run` says how the drill ended once (it was printed twice: as
/// the last progress line and again as the summary), with the exit code, and names
/// every identified improvement instead of only counting them.
#[test]
fn run_summary_prints_the_outcome_once_and_names_the_improvements() {
    let dir = tmp();
    let marker = Marker::spawn("summary");
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, short_scenario(&marker, "")).unwrap();
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let j = journal(&reports);
    let reason = &j.outcome.reason;
    let seen = stdout.matches(reason.as_str()).count() + stderr.matches(reason.as_str()).count();
    assert_eq!(
        seen, 1,
        "the outcome `{reason}` is printed {seen} times:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("PASSED (exit code 0): {reason}")),
        "{stdout}"
    );
    assert!(
        !j.improvements.is_empty(),
        "the non-critical failure is an improvement"
    );
    for i in &j.improvements {
        assert!(
            stdout.contains(&format!(
                "[{}] {} ({})",
                i.severity.as_str(),
                i.title,
                i.rule
            )),
            "improvement `{}` is not named:\n{stdout}",
            i.title
        );
    }
}
