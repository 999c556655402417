//! Input that could exhaust memory or time, or block forever, is refused before it
//! is parsed (issue 7, item 11).
//!
//! Each case runs the real binary and asserts its message. The 10 s limit on the
//! child is a hang guard, not a performance assertion: before the limits these
//! cases took from seconds to forever (a FIFO blocked `validate` and `run`,
//! `/dev/zero` grew without limit, a 50 MB file used 7 GB).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const HANG_GUARD: Duration = Duration::from_secs(10);

/// A valid scenario (the fixtures' base), which the cases below pad or nest.
fn valid() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/invalid/30-undeclared-var-override.yaml"),
    )
    .unwrap()
}

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

/// Runs firedrill with `args`, killing it after the hang guard.
fn firedrill(args: &[&str]) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let err = tmp.path().join("stderr");
    let mut child = common::firedrill()
        .args(args)
        .env_remove("FIREDRILL_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn firedrill");
    let code = common::wait_exit(&mut child, HANG_GUARD);
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        code.is_some(),
        "firedrill {args:?} did not finish within {HANG_GUARD:?}; stderr so far:\n{stderr}"
    );
    Outcome { code, stderr }
}

fn validate(path: &Path) -> Outcome {
    firedrill(&["validate", path.to_str().unwrap()])
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn assert_refused(out: &Outcome, expected: &str) {
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(expected),
        "expected {expected:?} in:\n{}",
        out.stderr
    );
}

#[test]
fn a_scenario_larger_than_the_cap_is_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    // 2 MiB of valid YAML: before, 5 MB took 0.75 GB and 50 MB took 7 GB.
    let mut text = valid();
    text.push_str("traffic_padding:\n");
    while text.len() < 2 << 20 {
        text.push_str("  - 0123456789012345678901234567890123456789\n");
    }
    let p = write(tmp.path(), "big.yaml", &text);
    let out = validate(&p);
    assert_refused(
        &out,
        &format!(
            "error: {}: cannot read scenario: found a file of {} bytes, expected at most 1048576 bytes (1 MiB)",
            p.display(),
            text.len()
        ),
    );
}

#[test]
fn dev_zero_is_refused_as_a_device() {
    let out = validate(Path::new("/dev/zero"));
    assert_refused(
        &out,
        "error: /dev/zero: cannot read scenario: found a character device, expected a regular file",
    );
}

#[test]
fn a_directory_is_refused_as_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = validate(tmp.path());
    assert_refused(
        &out,
        &format!(
            "error: {}: cannot read scenario: found a directory, expected a regular file",
            tmp.path().display()
        ),
    );
}

#[test]
fn a_fifo_is_refused_without_blocking_validate_or_run() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("scenario.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let expected = format!(
        "error: {}: cannot read scenario: found a named pipe (FIFO), expected a regular file",
        fifo.display()
    );
    assert_refused(&validate(&fifo), &expected);
    let state = tmp.path().join("state");
    let reports = tmp.path().join("reports");
    let out = firedrill(&[
        "run",
        fifo.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--report-dir",
        reports.to_str().unwrap(),
    ]);
    assert_refused(&out, &expected);
    assert!(!reports.exists(), "a report dir was created");
}

#[test]
fn deep_flow_nesting_is_refused_at_the_bracket_that_crosses_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    // 40k levels took 2.6 s in the YAML scanner, 500 KB of nested maps 32 s.
    let line = valid().lines().count() + 1;
    let text = format!(
        "{}x: {}1{}\n",
        valid(),
        "{a: ".repeat(100_000),
        "}".repeat(100_000)
    );
    let p = write(tmp.path(), "deep-flow.yaml", &text);
    let out = validate(&p);
    // `x` is level 1; the 64th `{` (column 4 + 4 * 63) is level 65.
    assert_refused(
        &out,
        &format!(
            "error: {}:{line}:{}: x: found collections nested 65 levels deep, expected at most 64",
            p.display(),
            4 + 4 * 63
        ),
    );
    assert!(
        out.stderr.ends_with("1 problem(s); nothing was run\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn deep_block_nesting_is_refused_at_the_line_that_crosses_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let first = valid().lines().count() + 1;
    let mut text = valid();
    for i in 0..500 {
        text.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
    }
    let p = write(tmp.path(), "deep-block.yaml", &text);
    let out = validate(&p);
    // k0 is level 1; k64, on line first + 64, is level 65.
    assert_refused(
        &out,
        &format!(
            "error: {}:{}:65: k0: found collections nested 65 levels deep, expected at most 64",
            p.display(),
            first + 64
        ),
    );
}

#[test]
fn a_var_repeated_until_the_scenario_explodes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // 2 000 uses of a 64 KiB `--var` (the kernel allows 128 KiB per argument) would
    // make 128 MiB of text to parse.
    let mut text = valid().replace(
        "  relay: http://127.0.0.1:8080\n",
        "  relay: http://127.0.0.1:8080\n  blob: x\n",
    );
    text.push_str("  - name: echo\n    command: { run: \"echo");
    for _ in 0..2000 {
        text.push_str(" {{blob}}");
    }
    text.push_str("\" }\n");
    let p = write(tmp.path(), "amplified.yaml", &text);
    let blob = format!("blob={}", "b".repeat(64 << 10));
    let out = firedrill(&["validate", p.to_str().unwrap(), "--var", &blob]);
    assert_refused(
        &out,
        "vars.blob: found var `blob` (65536 bytes) used 2000 times",
    );
    assert!(
        out.stderr
            .contains("expected at most 4194304 bytes after substitution"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(&"b".repeat(100)),
        "the value was echoed:\n{}",
        out.stderr
    );
}

#[test]
fn a_long_key_over_many_entries_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Every path under a key repeats it: a 200 KB key over 40 000 entries took
    // 9.7 GB and over a minute. YAML limits `key:` to 1024 characters; `? key`
    // is the way around it.
    let line = valid().lines().count() + 2;
    let mut text = valid();
    text.push_str("extra:\n  ? ");
    text.push_str(&"k".repeat(200_000));
    text.push_str("\n  :\n");
    for i in 0..40_000 {
        text.push_str(&format!("    c{i}: 1\n"));
    }
    let p = write(tmp.path(), "long-key.yaml", &text);
    let out = validate(&p);
    assert_refused(
        &out,
        &format!(
            "error: {}:{line}:5: extra: found a key of 200000 characters, expected at most 1024",
            p.display()
        ),
    );
}

/// The limits leave room: the shipped scenarios are a few KiB, far below them.
#[test]
fn a_scenario_just_under_the_cap_still_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = valid();
    text.push_str("# ");
    text.push_str(&"x".repeat((1 << 20) - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len(), 1 << 20);
    let p = write(tmp.path(), "padded.yaml", &text);
    let out = Command::new(env!("CARGO_BIN_EXE_firedrill"))
        .arg("validate")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
