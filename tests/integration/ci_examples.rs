//! `examples/ci/`: the nightly GitHub Actions and GitLab CI pipelines. They parse,
//! they have what a nightly drill needs (a schedule, the report directory kept, the
//! JUnit published without deciding the job, report.md in the job summary), every
//! `firedrill` flag they use exists, and the drill command they run — the quickstart
//! at `--level standard` with `--junit-non-critical failure` — really produces a
//! junit.xml whose non-critical failure is a `<failure>` while the exit code is 0.

use std::process::{Command, Stdio};

use crate::common::*;

fn yaml(name: &str) -> serde_yaml::Value {
    let path = format!("{}/examples/ci/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Every shell line of a pipeline (`run:` of steps, `script:` of jobs).
fn shell_lines(v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    (Some("run"), serde_yaml::Value::String(s)) => {
                        out.extend(s.lines().map(str::to_string))
                    }
                    (Some("script"), serde_yaml::Value::Sequence(items)) => {
                        out.extend(items.iter().filter_map(|i| i.as_str().map(str::to_string)))
                    }
                    _ => shell_lines(v, out),
                }
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| shell_lines(v, out)),
        _ => {}
    }
}

/// `--flags` each firedrill command of the pipelines uses, with the subcommand whose
/// help must list them (`scripts/quickstart.sh ARGS` passes ARGS to `run`).
fn flags_used(lines: &[String]) -> Vec<(String, String)> {
    let text = lines.join("\n").replace("\\\n", " ");
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let sub = if let Some(i) = words.iter().position(|w| w.ends_with("/firedrill")) {
            words.get(i + 1).map(|s| s.to_string())
        } else if words.iter().any(|w| w.ends_with("quickstart.sh")) {
            Some("run".to_string())
        } else {
            None
        };
        if let Some(sub) = sub {
            for w in words.iter().filter(|w| w.starts_with("--")) {
                out.push((sub.clone(), w.to_string()));
            }
        }
    }
    out
}

#[test]
fn pipelines_have_what_a_nightly_drill_needs_and_use_only_real_flags() {
    let gh = yaml("github-actions.yml");
    assert!(!gh["on"]["schedule"][0]["cron"].as_str().unwrap().is_empty());
    let steps = gh["jobs"]["drill"]["steps"].as_sequence().unwrap();
    let step = |uses: &str| {
        steps
            .iter()
            .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(uses)))
    };
    assert_eq!(
        step("actions/upload-artifact").unwrap()["with"]["path"],
        "reports/"
    );
    let junit = step("dorny/test-reporter").unwrap();
    assert_eq!(junit["with"]["fail-on-error"], false);
    assert_eq!(junit["if"], "always()");
    assert!(steps.iter().any(|s| {
        s["run"]
            .as_str()
            .is_some_and(|r| r.contains("report.md") && r.contains("GITHUB_STEP_SUMMARY"))
    }));

    let gl = yaml("gitlab-ci.yml");
    let job = &gl["drill:nightly"];
    assert_eq!(job["rules"][0]["if"], "$CI_PIPELINE_SOURCE == \"schedule\"");
    assert_eq!(job["artifacts"]["when"], "always");
    assert_eq!(job["artifacts"]["reports"]["junit"], "reports/*/junit.xml");

    let mut lines = Vec::new();
    shell_lines(&gh, &mut lines);
    shell_lines(&gl, &mut lines);
    let used = flags_used(&lines);
    assert!(
        used.iter().any(|(_, f)| f == "--junit-non-critical"),
        "{used:?}"
    );
    for (sub, flag) in used {
        let help = firedrill().args([sub.as_str(), "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains(&flag), "`firedrill {sub}` has no {flag}");
    }
}

#[test]
fn the_pipelines_drill_command_marks_non_critical_failures_in_junit_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_firedrill"))
        .parent()
        .unwrap();
    let reports = dir.path().join("reports");
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/quickstart.sh"
        ))
        .args(["--level", "standard", "--report-dir"])
        .arg(&reports)
        .args(["--junit-non-critical", "failure", "--lock-dir"])
        .arg(dir.path().join("locks"))
        .env("PORT", free_port().to_string())
        .env("FIREDRILL_BIN_DIR", bin_dir)
        .env("FIREDRILL_STATE_DIR", dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let junit = std::fs::read_to_string(report_dir(&reports).join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&junit).unwrap();
    let failures: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .map(|n| n.attribute("message").unwrap().to_string())
        .collect();
    // The quickstart's one non-critical check fails (the supervisor waits 2 s).
    assert_eq!(failures.len(), 1, "{junit}");
    assert!(failures[0].starts_with("NON-CRITICAL: "), "{failures:?}");
    let root = doc.root_element();
    assert_eq!(root.attribute("failures"), Some("1"));

    // The same journal rendered with the default keeps the case passing.
    let journal = report_dir(&reports).join("journal.json");
    let again = report_cmd(&journal, "junit").output().unwrap();
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(!again.contains("<failure"), "{again}");
    assert!(again.contains("NON-CRITICAL FAILURE: "), "{again}");
}
