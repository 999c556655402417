//! Bad input never injects anything (guarantee 3).
//!
//! Every file under `tests/fixtures/invalid/` is a realistic scenario with ONE
//! mistake (except `40-five-problems-in-one-file`, whose five must all be reported
//! in one run, in file order). The drill they describe kills one of two relay workers and checks that
//! the other keeps serving. For each fixture, the built binary must:
//! - `validate` it with exit code 2 and a message naming `file:line:column`, the
//!   dotted field path, what was found and what was expected (snapshotted, one
//!   snapshot per fixture);
//! - `run` it with exit code 2, the same message, and no effect at all: no ledger or
//!   lock under the state dir, no report dir, and the fixture's fault and recovery
//!   did not happen. Each fixture kills a marker process by `pattern` and its
//!   recovery writes a marker file, both given with `--var`, so running it would be
//!   visible: both marker processes must still run and the file must not exist.
//!
//! A positive control runs the one fixture whose only mistake is on the command line
//! without that mistake, and sees one process killed and the file written: the
//! observations above can fail.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use test_case::test_case;

use crate::common::assert_exit;

const BIN: &str = env!("CARGO_BIN_EXE_firedrill");
const FIXTURES: &str = "tests/fixtures/invalid";

/// Fixtures whose mistake is an argument, not the file: extra arguments for them.
fn mistake_args(name: &str) -> Vec<String> {
    match name {
        "30-undeclared-var-override" => vec!["--var".into(), "relay_url=http://127.0.0.1:9".into()],
        _ => vec![],
    }
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Two "relay workers": long-lived processes with one unique command line
/// (`<tag> 300`), the target of the fixtures' `process_kill`. Killed and reaped on
/// drop.
struct Victim {
    workers: Vec<Child>,
    tag: String,
}

impl Victim {
    fn spawn(name: &str) -> Self {
        let tag = format!("firedrill-fixture-{}-{name}", std::process::id());
        let workers = (0..2)
            .map(|_| {
                let child = Command::new("sleep")
                    .arg0(&tag)
                    .arg("300")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn sleep");
                // Wait until the command line shows the tag, so a pattern can match.
                for _ in 0..400 {
                    let cmdline =
                        std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
                    if String::from_utf8_lossy(&cmdline).starts_with(&tag) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                child
            })
            .collect();
        Victim { workers, tag }
    }

    /// The regex the fixtures receive as `victim`: these processes and nothing else.
    fn pattern(&self) -> String {
        format!("^{} 300$", self.tag)
    }

    /// How many workers are alive and not frozen (a `STOP` leaves a process alive
    /// but stopped).
    fn running(&mut self) -> usize {
        self.workers
            .iter_mut()
            .filter_map(|c| {
                if c.try_wait().expect("try_wait").is_some() {
                    return None;
                }
                let stat =
                    std::fs::read_to_string(format!("/proc/{}/stat", c.id())).unwrap_or_default();
                let state = stat
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next());
                matches!(state, Some('S' | 'R' | 'D')).then_some(())
            })
            .count()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        for c in &mut self.workers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Everything one invocation needs: a victim, a marker path, state and report dirs.
struct Sandbox {
    victim: Victim,
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new(name: &str) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("firedrill-invalid-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir(tmp.path().join("state")).expect("state dir");
        Sandbox {
            victim: Victim::spawn(name),
            tmp,
        }
    }
    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    fn reports(&self) -> PathBuf {
        self.tmp.path().join("reports")
    }
    fn marker(&self) -> PathBuf {
        self.tmp.path().join("recovered.marker")
    }
    fn var_args(&self) -> Vec<String> {
        vec![
            "--var".into(),
            format!("victim={}", self.victim.pattern()),
            "--var".into(),
            format!("marker={}", self.marker().display()),
        ]
    }

    fn firedrill(&self, args: &[String]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(manifest_dir())
            // The unset-env fixture relies on this being unset; a stray state dir
            // from the environment must not be used either.
            .env_remove("RELAY_TOKEN_FIREDRILL_FIXTURE")
            .env_remove("FIREDRILL_STATE_DIR")
            // Sandboxes run in parallel against `local`: each locks on its own.
            .env("FIREDRILL_LOCK_DIR", self.tmp.path().join("locks"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run firedrill")
    }

    fn validate(&self, file: &str, extra: &[String]) -> Output {
        let mut args = vec!["validate".to_string(), file.to_string()];
        args.extend(self.var_args());
        args.extend(extra.iter().cloned());
        self.firedrill(&args)
    }

    fn run(&self, file: &str, extra: &[String]) -> Output {
        let mut args = vec![
            "run".to_string(),
            file.to_string(),
            "--state-dir".into(),
            self.state().display().to_string(),
            "--report-dir".into(),
            self.reports().display().to_string(),
        ];
        args.extend(self.var_args());
        args.extend(extra.iter().cloned());
        self.firedrill(&args)
    }

    /// stderr with everything that differs between runs replaced by a placeholder.
    fn normalise(&self, bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes)
            .replace(&self.marker().display().to_string(), "[MARKER]")
            .replace(&self.tmp.path().display().to_string(), "[TMP]")
            .replace(&self.victim.tag, "[VICTIM]")
            .replace(&format!("{}/", manifest_dir().display()), "")
    }
}

fn file_of(name: &str) -> String {
    format!("{FIXTURES}/{name}.yaml")
}

#[test_case("01-unknown-top-level-key")]
#[test_case("02-unknown-key-in-with")]
#[test_case("03-unknown-key-in-probe")]
#[test_case("04-unknown-key-in-expect")]
#[test_case("05-duration-decimal-comma")]
#[test_case("06-duration-without-unit")]
#[test_case("07-bad-level")]
#[test_case("08-empty-fault-list")]
#[test_case("09-duplicate-fault-names")]
#[test_case("10-duplicate-verification-names")]
#[test_case("11-undefined-fault-target")]
#[test_case("12-undefined-recovery-target")]
#[test_case("13-undefined-var")]
#[test_case("14-bad-api-version")]
#[test_case("15-wrong-type-count")]
#[test_case("16-missing-metadata-name")]
#[test_case("17-missing-fault-kind")]
#[test_case("18-yaml-bad-indentation")]
#[test_case("19-yaml-unclosed-quote")]
#[test_case("20-unknown-fault-kind")]
#[test_case("21-unknown-probe-kind")]
#[test_case("22-within-and-for")]
#[test_case("23-invalid-regex")]
#[test_case("24-two-process-selectors")]
#[test_case("25-bad-status-class")]
#[test_case("26-bad-jsonpath")]
#[test_case("27-name-with-spaces")]
#[test_case("28-redefine-local")]
#[test_case("29-unset-env-var")]
#[test_case("30-undeclared-var-override")]
#[test_case("31-duplicate-key")]
#[test_case("32-unknown-key-in-json-check")]
#[test_case("33-tab-indentation")]
#[test_case("34-indicator-never-restored")]
#[test_case("40-five-problems-in-one-file")]
#[test_case("50-stdout-json-bad-path")]
#[test_case("51-stdout-number-regex-without-group")]
fn rejected_before_anything_runs(name: &str) {
    let mut sb = Sandbox::new(name);
    let file = file_of(name);
    let extra = mistake_args(name);

    // validate: exit 2, a precise message.
    let out = sb.validate(&file, &extra);
    let stderr = sb.normalise(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "validate {name}:\n{stderr}");
    assert!(out.stdout.is_empty(), "validate {name} printed on stdout");
    assert_message_shape(name, &stderr);
    insta::assert_snapshot!(name, stderr);

    // run: exit 2, the same message, and no effect.
    let out = sb.run(&file, &extra);
    let run_stderr = sb.normalise(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "run {name}:\n{run_stderr}");
    assert_eq!(run_stderr, stderr, "run and validate disagree for {name}");
    assert_nothing_ran(name, &mut sb);
}

/// Every diagnostic: `error: FILE:LINE:COL: PATH: found …, expected …`, a real
/// position, a field path, then the summary line.
fn assert_message_shape(name: &str, stderr: &str) {
    let line_re = regex::Regex::new(&format!(
        r"^error: {}:(\d+):(\d+): ([A-Za-z_][\w.\[\]]*): found .+, expected .+$",
        regex::escape(&file_of(name))
    ))
    .unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 2, "{name}: {stderr}");
    let (summary, diags) = lines.split_last().unwrap();
    assert_eq!(
        *summary,
        format!("{} problem(s); nothing was run", diags.len()),
        "{name}"
    );
    let text = std::fs::read_to_string(manifest_dir().join(file_of(name))).unwrap();
    for d in diags {
        let caps = line_re
            .captures(d)
            .unwrap_or_else(|| panic!("{name}: malformed diagnostic:\n{d}"));
        let line: usize = caps[1].parse().unwrap();
        let col: usize = caps[2].parse().unwrap();
        let src = text
            .lines()
            .nth(line.wrapping_sub(1))
            .unwrap_or_else(|| panic!("{name}: line {line} is not in the file: {d}"));
        assert!(
            col >= 1 && col <= src.chars().count(),
            "{name}: column {col} is not on line {line} ({src:?}): {d}"
        );
        // Pointing at a tab is fine: YAML never allows one in indentation.
        let c = src.chars().nth(col - 1).unwrap();
        assert!(
            !c.is_whitespace() || c == '\t',
            "{name}: {line}:{col} points at whitespace in {src:?}"
        );
    }
}

fn assert_nothing_ran(name: &str, sb: &mut Sandbox) {
    let state: Vec<_> = std::fs::read_dir(sb.state())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        state.is_empty(),
        "{name}: the state dir was written to: {state:?}"
    );
    assert!(
        !sb.reports().exists(),
        "{name}: a report dir was created for an invalid scenario"
    );
    assert_eq!(
        sb.victim.running(),
        2,
        "{name}: a marker process was signalled by an invalid scenario"
    );
    assert!(
        !sb.marker().exists(),
        "{name}: the recovery command of an invalid scenario ran"
    );
}

/// All the problems of a file in one run, sorted by position, and counted in the
/// summary. Before, serde stopped at its first problem and the semantic checks ran
/// only when nothing else was wrong: a file with four mistakes took four runs, and
/// they came in no useful order.
#[test]
fn every_problem_is_reported_in_one_run_in_file_order() {
    let name = "40-five-problems-in-one-file";
    let sb = Sandbox::new(name);
    let out = sb.validate(&file_of(name), &[]);
    let stderr = sb.normalise(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let (summary, diags) = stderr
        .trim_end()
        .lines()
        .collect::<Vec<_>>()
        .split_last()
        .map(|(s, d)| (s.to_string(), d.to_vec()))
        .unwrap();
    let found: Vec<(usize, String)> = diags
        .iter()
        .map(|d| {
            let rest = d
                .strip_prefix(&format!("error: {}:", file_of(name)))
                .unwrap_or_else(|| panic!("{d}"));
            let (line, rest) = rest.split_once(':').unwrap();
            let (_col, rest) = rest.split_once(": ").unwrap();
            let path = rest.split_once(": ").unwrap().0;
            (line.parse().unwrap(), path.to_string())
        })
        .collect();
    let expected: Vec<(usize, String)> = [
        (20, "prechecks[0].probe.command.target"),
        (23, "prechecks[1].retries"),
        (35, "faults[0].ttl"),
        (39, "verifications[0].intervall"),
        (40, "verifications[0].critical"),
    ]
    .into_iter()
    .map(|(l, p)| (l, p.to_string()))
    .collect();
    assert_eq!(found, expected, "{stderr}");
    assert_eq!(summary, "5 problem(s); nothing was run");
}

/// The positive control: the same harness sees a fault and a recovery when they do
/// run, so "nothing ran" above is a real observation.
#[test]
fn control_a_valid_fixture_does_kill_and_recover() {
    let name = "30-undeclared-var-override";
    let mut sb = Sandbox::new("control");
    assert_eq!(sb.victim.running(), 2, "the marker processes did not start");
    let out = sb.run(&file_of(name), &[]);
    let stderr = sb.normalise(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "control run failed:\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        sb.victim.running(),
        1,
        "the fault did not kill exactly one marker process"
    );
    assert!(sb.marker().exists(), "the recovery command did not run");
    assert!(sb.state().join("runs").is_dir(), "no ledger was written");
    assert!(sb.reports().is_dir(), "no report was written");
}

/// Every fixture file is in the table above (a new one cannot be silently skipped),
/// and there are at least 20.
#[test]
fn every_fixture_is_tested() {
    let src = std::fs::read_to_string(manifest_dir().join(file!())).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(manifest_dir().join(FIXTURES))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 20, "only {} fixtures", names.len());
    for n in &names {
        assert!(
            src.contains(&format!("#[test_case(\"{n}\")]")),
            "fixture {n} has no test_case line"
        );
    }
}

/// The valid scenarios shipped with firedrill validate, and so does the fixtures'
/// base (the `--var` fixture, without its bad argument).
#[test]
fn shipped_scenarios_validate() {
    let mut files = vec![manifest_dir().join(file_of("30-undeclared-var-override"))];
    let shipped = manifest_dir().join("scenarios");
    let mut found = 0;
    if let Ok(dir) = std::fs::read_dir(&shipped) {
        for e in dir {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                files.push(p);
                found += 1;
            }
        }
    }
    if found == 0 {
        eprintln!("note: no scenarios under {}", shipped.display());
    }
    let out = Command::new(BIN)
        .arg("validate")
        .args(&files)
        .env_remove("FIREDRILL_STATE_DIR")
        .output()
        .expect("run firedrill");
    assert_exit(&out, 0);
    let ok_lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(": ok ("))
        .count();
    assert_eq!(ok_lines, files.len());
}
