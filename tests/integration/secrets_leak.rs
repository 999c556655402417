//! A secret var never leaves the engine in any encoding: not in `plan` or
//! `run --dry-run`, not on a command line other users can read in `ps`, not
//! percent-, JSON- or HTML-encoded in journals, reports and logs, and not in
//! validation errors. The secret has a space and `<`, so each encoding differs from
//! the raw value.

use crate::common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn secret() -> String {
    format!("s3cr3t canary<{}>", std::process::id())
}

const ENV: &str = "FD_LEAK_KEY";

/// `firedrill ARGS SCENARIO` with the secret in the environment variable it is read
/// from.
fn with_secret(args: &[&str], scenario: &Path, secret: &str) -> Output {
    firedrill()
        .args(args)
        .arg(scenario)
        .env(ENV, secret)
        .output()
        .unwrap()
}

/// Standard base64 (RFC 4648) with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form of the secret that must not appear, by name. The words `s3cr3t` and
/// `canary` survive every text encoding (only their surroundings get escaped), so
/// finding either one means some encoding leaked; base64 (of the secret alone and
/// of `user:secret`, as in a basic-auth header) is checked on its stable middle.
fn leaks(text: &str, secret: &str) -> Vec<String> {
    let mut found = Vec::new();
    for word in ["s3cr3t", "canary"] {
        if text.contains(word) {
            let at = text.find(word).unwrap();
            let from = at.saturating_sub(40);
            let to = (at + 60).min(text.len());
            let ctx: String = text
                .get(from..to)
                .map_or_else(|| word.to_string(), str::to_string);
            found.push(format!("`{word}` in …{ctx}…"));
        }
    }
    for prefix in ["", "u:", "ab:"] {
        let b = base64(format!("{prefix}{secret}").as_bytes());
        // Skip the characters the prefix and padding influence.
        let skip = (prefix.len() * 8).div_ceil(6);
        let core = &b[skip..b.len() - 4];
        if text.contains(core) {
            found.push(format!("base64 `{core}`"));
        }
    }
    found
}

fn assert_no_leak(what: &str, text: &str, secret: &str) {
    let l = leaks(text, secret);
    assert!(l.is_empty(), "the secret leaked into {what}: {l:?}");
}

/// A drill with the secret in an http probe URL and header (a reachable one and a
/// refused one, whose error repeats the URL percent-encoded), in a command probe and
/// in a recovery command; both commands write what they received to a file and stay
/// alive for a second so `ps` can be checked.
fn leak_scenario(dir: &Path, port: u16, closed: u16, marker: &Marker) -> String {
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: secret-leaks }}
vars:
  port: {port}
  key: {{ env: {ENV}, secret: true }}
prechecks:
  - name: health with key
    probe: {{ http: {{ url: "http://127.0.0.1:{{{{port}}}}/health?key={{{{key}}}}", headers: {{ X-Key: "{{{{key}}}}" }} }} }}
faults:
  - name: freeze marker
    kind: process_kill
    with: {{ pattern: "^{tag} ", signal: STOP }}
    ttl: 1m
verifications:
  - name: refused with key
    probe: {{ http: {{ url: "http://127.0.0.1:{closed}/x?key={{{{key}}}}&k2={{{{key}}}}", timeout: 1s }} }}
    critical: false
  - name: command gets the key
    probe: {{ command: {{ run: 'printf %s "{{{{key}}}}" > {dir}/probe.out; sleep 1; echo "{{{{key}}}}"' }} }}
    expect: {{ exit_code: 0 }}
recovery:
  - name: recovery gets the key
    command: {{ run: 'printf %s "{{{{key}}}}" > {dir}/recovery.out; sleep 1; echo "{{{{key}}}}" >&2' }}
"#,
        tag = marker.tag,
        dir = dir.display()
    )
}

/// Runs the drill and watches every process's command line until it ends.
fn run_watching_ps(cmd: &mut std::process::Command, secret: &str) -> (Output, Vec<String>) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while proc_stat(pid).is_some_and(|(s, _)| s != 'Z') && Instant::now() < deadline {
        for p in pids_matching("canary") {
            let line = std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            if !leaks(&line, secret).is_empty() && !seen.contains(&line) {
                seen.push(line);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (child.wait_with_output().unwrap(), seen)
}

#[test]
fn secret_never_leaks_in_any_encoding() {
    let secret = secret();
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 300);
    let marker = Marker::spawn("leak");
    let closed = free_port();
    let scen = write_scenario(
        dir.path(),
        &leak_scenario(dir.path(), demo.port, closed, &marker),
    );

    // plan and dry run, text and JSON.
    for args in [
        &["plan"][..],
        &["plan", "--format", "json"],
        &["run", "--dry-run"],
    ] {
        let out = with_secret(args, &scen, &secret);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("***"), "{args:?}: {text}");
        assert_no_leak(&format!("`{}`", args.join(" ")), &text, &secret);
    }

    for (i, format) in ["text", "json"].into_iter().enumerate() {
        let reports = dir.path().join(format!("reports-{format}"));
        let _ = std::fs::remove_file(dir.path().join("probe.out"));
        let _ = std::fs::remove_file(dir.path().join("recovery.out"));
        let mut cmd = drill_cmd(
            &scen,
            &format!("leak{i}"),
            &dir.path().join("state"),
            &reports,
        );
        cmd.args(["-vv", "--log-format", format]).env(ENV, &secret);
        let (out, in_ps) = run_watching_ps(&mut cmd, &secret);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(in_ps.is_empty(), "the secret is visible in ps: {in_ps:?}");
        // The commands did get the real value (through their environment).
        for f in ["probe.out", "recovery.out"] {
            assert_eq!(
                std::fs::read_to_string(dir.path().join(f)).unwrap(),
                secret,
                "{f}"
            );
        }
        assert_no_leak(&format!("stderr ({format} logs)"), &stderr, &secret);
        assert_no_leak(&format!("stdout ({format} logs)"), &stdout, &secret);
        let rdir = report_dir(&reports);
        for f in ["report.html", "report.md", "journal.json", "junit.xml"] {
            let text = std::fs::read_to_string(rdir.join(f)).unwrap();
            assert_no_leak(f, &text, &secret);
        }
        for f in ["journal.json", "report.html"] {
            let text = std::fs::read_to_string(rdir.join(f)).unwrap();
            assert!(text.contains("***"), "{f} shows no redaction");
        }
        // The refused probe's error still says what failed, secret masked.
        let j = journal(&reports);
        let refused = j
            .steps
            .iter()
            .find(|s| s.name == "refused with key")
            .unwrap();
        assert!(refused.detail.contains("127.0.0.1"), "{}", refused.detail);
        assert_ne!(marker.state(), 'T');
    }
}

#[test]
fn validation_errors_never_echo_a_secret() {
    let secret = secret();
    let dir = tempfile::tempdir().unwrap();
    let scen = dir.path().join("s.yaml");
    // A type error (the secret where a duration belongs) and a validation error
    // (the secret as a host), each the only problem of its file.
    for (ttl, host, path) in [
        ("\"{{key}}\"", "127.0.0.1", "faults[0].ttl"),
        ("1m", "{{key}}", "prechecks[0].probe.tcp.address"),
    ] {
        std::fs::write(
            &scen,
            format!(
                r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: secret-validation }}
vars:
  key: {{ env: {ENV}, secret: true }}
prechecks:
  - name: up
    probe: {{ tcp: {{ address: "{host}:80" }} }}
faults:
  - name: freeze
    kind: process_kill
    ttl: {ttl}
    with: {{ pattern: "^fd-no-such-process$", signal: STOP }}
"#
            ),
        )
        .unwrap();
        for cmd in ["validate", "plan"] {
            let out = with_secret(&[cmd], &scen, &secret);
            let stderr = assert_exit(&out, 2);
            assert!(stderr.contains(path), "{stderr}");
            assert!(stderr.contains("***"), "{stderr}");
            assert_no_leak(&format!("`{cmd}` errors"), &stderr, &secret);
        }
    }
}
