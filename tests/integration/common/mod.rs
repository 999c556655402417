//! Shared helpers for the end-to-end tests: the real binaries, real child processes,
//! temp directories, and checks that nothing was left behind.
#![allow(dead_code)]

/// A stateful fake of the Kubernetes API server (pods, watch, scale, access reviews).
pub mod fake_k8s;
/// Driving a fault through the library: inject, revert.
pub mod faults;
/// The two-namespace lab of the network fault tests.
pub mod netns;
/// Skipping what cannot run here, and failing instead when `CI` is set.
pub mod skip;
/// Real sshd hosts in network namespaces, for the ssh target.
pub mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `firedrill` with a lock directory of its own ([`own_lock_dir`]): the tests run
/// many drills against `local` at once, and the machine-wide default would refuse
/// all but one. A test whose drills must see each other's locks sets
/// `FIREDRILL_LOCK_DIR` to one directory for all of them (or removes it: the default).
pub fn firedrill() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_firedrill"));
    c.env("FIREDRILL_EXE", env!("CARGO_BIN_EXE_firedrill"))
        .env("FIREDRILL_LOCK_DIR", own_lock_dir())
        .env_remove("RUST_LOG");
    c
}

/// A lock directory no other command of the test run uses:
/// `$TMPDIR/firedrill-test-locks/<pid>-<n>`.
pub fn own_lock_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir()
        .join("firedrill-test-locks")
        .join(format!("{}-{n}", std::process::id()))
}

pub fn run_output(args: &[&str]) -> Output {
    firedrill()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run firedrill")
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// `(state, start_time)` of a process from /proc/PID/stat.
pub fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = text.rfind(')')?;
    let rest: Vec<&str> = text[close + 2..].split(' ').collect();
    Some((rest[0].chars().next()?, rest[19].parse().ok()?))
}

/// Pids whose command line contains `needle`.
pub fn pids_matching(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .filter(|pid| proc_stat(*pid).is_some_and(|(s, _)| s != 'Z'))
        .collect()
}

/// A marker process (`sleep`) with a unique command line, killed on drop.
pub struct Marker {
    pub child: Child,
    pub tag: String,
}

impl Marker {
    pub fn spawn(tag: &str) -> Marker {
        let tag = format!("fdmarker-{tag}-{}", std::process::id());
        // `exec -a` gives the sleep a unique argv[0] for `pattern` selectors.
        let child = Command::new("bash")
            .arg("-c")
            .arg(format!("exec -a {tag} sleep 300"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let m = Marker { child, tag };
        // Until bash has exec'd, its own command line (`bash -c exec -a TAG …`)
        // contains the tag too: wait for the one that *starts* with it, as the
        // `^TAG ` selectors of the tests require.
        let exec_done = || {
            std::fs::read(format!("/proc/{}/cmdline", m.pid()))
                .is_ok_and(|b| b.starts_with(format!("{}\0", m.tag).as_bytes()))
        };
        assert!(wait_until(Duration::from_secs(5), exec_done));
        m
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn state(&self) -> char {
        proc_stat(self.pid()).map_or('?', |s| s.0)
    }
    /// Waits up to 10 s for the marker to be stopped (a STOP fault took effect);
    /// whether it was.
    pub fn wait_frozen(&self) -> bool {
        wait_until(Duration::from_secs(10), || self.state() == 'T')
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo service (supervisor + worker) on a free port, stopped on drop.
pub struct Demo {
    pub child: Child,
    pub port: u16,
    pub pidfile: PathBuf,
}

impl Demo {
    pub fn start(dir: &Path, restart_delay_ms: u64) -> Demo {
        let port = free_port();
        let pidfile = dir.join("worker.pid");
        let child = Command::new(env!("CARGO_BIN_EXE_firedrill-demo"))
            .args(["serve", "--port", &port.to_string(), "--pidfile"])
            .arg(&pidfile)
            .arg("--supervisor-pidfile")
            .arg(dir.join("worker.pid.supervisor"))
            .args(["--restart-delay-ms", &restart_delay_ms.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Demo {
            child,
            port,
            pidfile,
        };
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "demo did not start"
        );
        d
    }
    pub fn worker_pid(&self) -> u32 {
        std::fs::read_to_string(&self.pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// Waits for a child with a timeout; kills it if it overstays.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The only report directory under `dir` (the history index files beside it are not
/// report directories).
pub fn report_dir(dir: &Path) -> PathBuf {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "expected one report directory in {}: {entries:?}",
        dir.display()
    );
    entries.pop().unwrap()
}

pub fn journal(dir: &Path) -> firedrill::model::RunRecord {
    let text = std::fs::read_to_string(report_dir(dir).join("journal.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Faults recorded in a ledger that were never marked reverted.
pub fn pending_in_ledger(state: &Path, run_id: &str) -> usize {
    let entries =
        firedrill::engine::ledger::read(&state.join("runs").join(run_id).join("ledger.jsonl"))
            .unwrap();
    firedrill::engine::ledger::pending(&entries).len()
}

/// A scenario with one STOP fault on the marker and a long `for` verification, so the
/// engine sits with the fault active until something (signal, guard, cap) stops it.
pub fn stop_scenario(marker: &Marker, extra_top: &str, ttl: &str) -> String {
    hold_scenario(
        &format!(r#"{{ pattern: "^{} ", signal: STOP }}"#, marker.tag),
        extra_top,
        ttl,
    )
}

/// A scenario with one `process_kill` fault (`with` in YAML flow form) and a long
/// `for` verification, so the engine sits with the fault active.
pub fn hold_scenario(with: &str, extra_top: &str, ttl: &str) -> String {
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: freeze-test }}
{extra_top}
faults:
  - name: freeze marker
    kind: process_kill
    with: {with}
    ttl: {ttl}
verifications:
  - name: hold on
    probe: {{ command: {{ run: "true" }} }}
    for: 60s
    interval: 100ms
"#
    )
}

/// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup` on a pure v2 machine,
/// `/sys/fs/cgroup/unified` on a hybrid one), from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

/// `firedrill run SCENARIO --state-dir STATE --report-dir REPORTS`, no standard input.
pub fn run_cmd(scenario: &Path, state: &Path, reports: &Path) -> Command {
    let mut c = firedrill();
    c.arg("run")
        .arg(scenario)
        .arg("--state-dir")
        .arg(state)
        .arg("--report-dir")
        .arg(reports)
        .stdin(Stdio::null());
    c
}

/// [`run_cmd`] with a fixed run id.
pub fn drill_cmd(scenario: &Path, run_id: &str, state: &Path, reports: &Path) -> Command {
    let mut c = run_cmd(scenario, state, reports);
    c.args(["--run-id", run_id]);
    c
}

/// Starts a drill in the background with its output discarded.
pub fn spawn_drill(scenario: &Path, run_id: &str, state: &Path, reports: &Path) -> Child {
    spawn_quiet(&mut drill_cmd(scenario, run_id, state, reports))
}

/// Starts `cmd` in the background with its output discarded.
pub fn spawn_quiet(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start firedrill")
}

/// Sends `signal` (`libc::SIGINT`, ...) to a child, e.g. a drill started in the
/// background.
pub fn send_signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on the pid of our own child; no memory is involved.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// Writes a scenario as `s.yaml` in `dir`; its path.
pub fn write_scenario(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("s.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Asserts that a finished command exited with `code` (a failure shows what the
/// command printed); its standard error, for the checks that follow.
pub fn assert_exit(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// `firedrill report JOURNAL --format FORMAT`: a past run rendered again.
pub fn report_cmd(journal: &Path, format: &str) -> Command {
    let mut c = firedrill();
    c.arg("report").arg(journal).args(["--format", format]);
    c
}

/// `firedrill recover --all --state-dir STATE`, whatever it exits with.
pub fn recover_all_output(state: &Path) -> Output {
    firedrill()
        .args(["recover", "--all", "--state-dir"])
        .arg(state)
        .output()
        .unwrap()
}

/// `firedrill recover --all --state-dir STATE`; asserts exit 0 and returns stdout.
pub fn recover_all(state: &Path) -> String {
    let out = recover_all_output(state);
    assert_exit(&out, 0);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
