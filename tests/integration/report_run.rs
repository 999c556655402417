//! Reports of real drills through the binary: `firedrill report` re-renders a real
//! journal byte for byte, the end-of-run summary, and what happens when the report
//! directory cannot take the evidence (checked before anything is injected; never
//! exit 0 without the reports).

use crate::common;

use std::path::{Path, PathBuf};

use common::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A short drill: a SIGSTOP on the marker, many quick steps (many measured timings),
/// and `extra_verifications` appended to its verifications.
fn short_scenario(marker: &Marker, extra_verifications: &str) -> String {
    scenario_with_signal(marker, "STOP", extra_verifications)
}

/// [`short_scenario`] with another signal (a KILL leaves a trace nothing undoes).
fn scenario_with_signal(marker: &Marker, signal: &str, extra_verifications: &str) -> String {
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
    with: {{ pattern: "^{tag} ", signal: {signal} }}
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
    let scen = write_scenario(dir.path(), &short_scenario(&marker, ""));
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let rdir = report_dir(&reports);
    let journal = rdir.join("journal.json");
    for (format, file) in [
        ("json", "journal.json"),
        ("md", "report.md"),
        ("html", "report.html"),
        ("junit", "junit.xml"),
    ] {
        let again = report_cmd(&journal, format).output().unwrap();
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
    let scen = write_scenario(dir.path(), &short_scenario(&marker, ""));
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

/// Whether this test can mount file systems (root; CI runs as root, so under `CI` a
/// skip is a failure).
fn can_mount(test: &str) -> bool {
    skip::can_run_as_root(test, "to mount a tmpfs")
}

/// A small tmpfs mounted on a temp directory, unmounted on drop.
struct Tmpfs {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tmp();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", path.display());
        Tmpfs { path, _dir: dir }
    }
    fn remount(&self, opts: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut c = std::process::Command::new("umount");
            if lazy {
                c.arg("-l");
            }
            c.arg(&self.path).status().is_ok_and(|s| s.success())
        };
        if !umount(false) {
            umount(true);
        }
    }
}

/// A drill (`s.yaml` in a new temp directory) whose fault would SIGKILL a marker of
/// its own: a run refused before injection leaves the marker alive.
fn kill_drill(tag: &str) -> (tempfile::TempDir, Marker, PathBuf) {
    let dir = tmp();
    let marker = Marker::spawn(tag);
    let scen = write_scenario(dir.path(), &scenario_with_signal(&marker, "KILL", ""));
    (dir, marker, scen)
}

/// The run's state directory holds no ledger: nothing was recorded, so nothing was
/// injected.
fn no_ledger(state: &Path) -> bool {
    std::fs::read_dir(state.join("runs")).map_or(true, |mut d| d.next().is_none())
}

/// Asserts the run was refused before anything was injected: exit 2, the KILL target
/// still alive, no ledger, and an error naming the report directory.
fn assert_refused_before_injection(
    out: &std::process::Output,
    marker: &mut Marker,
    state: &Path,
    reports: &Path,
) {
    let stderr = assert_exit(out, 2);
    assert!(
        marker.child.try_wait().unwrap().is_none() && marker.state() != 'T',
        "the fault's target was killed"
    );
    assert!(no_ledger(state), "a ledger was created");
    assert!(
        stderr.contains("cannot write reports")
            && stderr.contains(&reports.display().to_string())
            && stderr.contains("nothing was injected"),
        "{stderr}"
    );
}

/// `--report-dir` naming a file: found before the drill (exit 2, the process the
/// drill would SIGKILL is still running), not after it as "cannot write reports"
/// with exit 0.
#[test]
fn report_dir_that_is_a_file_is_refused_before_anything_is_injected() {
    let (dir, mut marker, scen) = kill_drill("reportfile");
    let reports = dir.path().join("reports");
    std::fs::write(&reports, "a file, not a directory").unwrap();
    let state = dir.path().join("state");
    let out = run_cmd(&scen, &state, &reports).output().unwrap();
    assert_refused_before_injection(&out, &mut marker, &state, &reports);
}

/// A read-only report file system (root ignores permission bits, so a read-only
/// mount): refused before the drill.
#[test]
fn read_only_report_dir_is_refused_before_anything_is_injected() {
    if !can_mount("read_only_report_dir_is_refused_before_anything_is_injected") {
        return;
    }
    let fs = Tmpfs::mount("1m");
    fs.remount("ro");
    let (dir, mut marker, scen) = kill_drill("reportro");
    let state = dir.path().join("state");
    for reports in [fs.path.clone(), fs.path.join("reports")] {
        let out = run_cmd(&scen, &state, &reports).output().unwrap();
        assert_refused_before_injection(&out, &mut marker, &state, &reports);
    }
}

/// The disk fills up during the drill (a verification fills the report file system
/// after the pre-drill check passed): the faults are still reverted, the outcome is
/// still printed, but the exit code is 5, not 0, and no empty or truncated
/// `journal.json` (nor a temp file) is left to pass for evidence.
#[test]
fn full_disk_after_the_check_exits_5_and_leaves_no_truncated_journal() {
    if !can_mount("full_disk_after_the_check_exits_5_and_leaves_no_truncated_journal") {
        return;
    }
    let fs = Tmpfs::mount("1m");
    let dir = tmp();
    let marker = Marker::spawn("reportfull");
    let fill = fs.path.join("fill");
    let scen = write_scenario(
        dir.path(),
        &short_scenario(
            &marker,
            &format!(
                "  - name: fill the disk\n    critical: false\n    probe: {{ command: {{ run: \"dd if=/dev/zero of={} bs=4k 2>/dev/null; true\" }} }}\n",
                fill.display()
            ),
        ),
    );
    let reports = fs.path.join("reports");
    let state = dir.path().join("state");
    let out = run_cmd(&scen, &state, &reports).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(fill.metadata().unwrap().len() > 0, "the disk was filled");
    assert_eq!(out.status.code(), Some(5), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("PASSED (exit code 5)"),
        "the outcome is still told: {stdout}"
    );
    assert!(
        stderr.contains("cannot write reports") && stderr.contains("No space left"),
        "{stderr}"
    );
    // Recovery ran all the same.
    assert_ne!(marker.state(), 'T');
    let rdir = report_dir(&reports);
    let left: Vec<String> = std::fs::read_dir(&rdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "files left in {} after the disk filled: {left:?}",
        rdir.display()
    );
}

/// A broken `--template-dir` template used to be found when the reports were written,
/// after the drill; now it is refused before anything is injected.
#[test]
fn broken_template_is_refused_before_anything_is_injected() {
    let (dir, mut marker, scen) = kill_drill("reporttpl");
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(templates.join("report.md.hbs"), "{{#if run}}\nunclosed\n").unwrap();
    let state = dir.path().join("state");
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &state, &reports)
        .arg("--template-dir")
        .arg(&templates)
        .output()
        .unwrap();
    let stderr = assert_exit(&out, 2);
    assert!(
        marker.child.try_wait().unwrap().is_none(),
        "the target was killed"
    );
    assert!(no_ledger(&state));
    assert!(
        stderr.contains("report.md.hbs: line ") && stderr.contains("nothing was injected"),
        "{stderr}"
    );
    assert!(!reports.exists() || std::fs::read_dir(&reports).unwrap().next().is_none());
}
