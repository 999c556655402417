//! `firedrill doctor`: a preflight that injects nothing and says, one line per check,
//! why a drill would fail here: a pidfile naming nothing, a proxy port taken, a
//! target locked by a running drill, no CAP_NET_ADMIN for a network fault.

use std::time::Duration;

use crate::common::*;

fn doctor(
    scenario: &std::path::Path,
    dir: &std::path::Path,
    vars: &[String],
) -> std::process::Output {
    let mut c = firedrill();
    c.arg("doctor")
        .arg(scenario)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--report-dir")
        .arg(dir.join("reports"))
        .arg("--lock-dir")
        .arg(dir.join("locks"));
    for v in vars {
        c.args(["--var", v]);
    }
    c.output().unwrap()
}

#[test]
fn doctor_passes_the_quickstart_against_a_running_demo_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 500);
    let worker = demo.worker_pid();
    let out = doctor(
        "scenarios/quickstart.yaml".as_ref(),
        dir.path(),
        &[
            format!("port={}", demo.port),
            format!("pidfile={}", demo.pidfile.display()),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_exit(&out, 0);
    assert!(stdout.contains("ok   target local: reachable"), "{stdout}");
    assert!(
        stdout.contains("ok   target local: not locked by another drill"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "ok   fault \"kill the worker\": process_kill: 1 process(es) match now: {worker} (firedrill-demo)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("check(s):") && stdout.contains(", 0 failed"),
        "{stdout}"
    );
    // Nothing was done to the worker, and no run was started.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(demo.worker_pid(), worker);
    assert!(!dir.path().join("state/runs").exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("reports"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn doctor_names_every_reason_the_drill_would_fail() {
    let dir = tempfile::tempdir().unwrap();
    // A drill that holds the `local` lock (a frozen marker, a long verification).
    let marker = Marker::spawn("doctor");
    let hold = write_scenario(dir.path(), &stop_scenario(&marker, "", "60s"));
    let held = dir.path().join("held.yaml");
    std::fs::rename(&hold, &held).unwrap();
    let mut first = spawn_quiet(
        drill_cmd(
            &held,
            "holder1",
            &dir.path().join("state1"),
            &dir.path().join("reports1"),
        )
        .arg("--lock-dir")
        .arg(dir.path().join("locks")),
    );
    assert!(marker.wait_frozen());
    // A port already taken where an explicit proxy wants to listen.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let scenario = write_scenario(
        dir.path(),
        &format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: doctor-bad }}
faults:
  - name: kill nothing
    kind: process_kill
    with: {{ pidfile: {}/no-such.pid, signal: KILL }}
  - name: slow api
    kind: latency
    with: {{ listen: "127.0.0.1:{port}", upstream: "127.0.0.1:9", delay: 10ms }}
"#,
            dir.path().display()
        ),
    );
    let out = doctor(&scenario, dir.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    send_signal(&first, libc::SIGTERM);
    let first_code = wait_exit(&mut first, Duration::from_secs(15));
    assert_exit(&out, 1);
    assert!(
        stdout
            .contains("FAIL target local: target `local` is in use by another drill (run holder1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL fault \"kill nothing\": process_kill would not be injected:")
            && stdout.contains("no-such.pid"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "FAIL fault \"slow api\": latency: cannot listen on 127.0.0.1:{port}"
        )),
        "{stdout}"
    );
    assert!(stdout.contains(", 3 failed"), "{stdout}");
    assert_eq!(first_code, Some(1));
    drop(taken);
}

#[test]
fn doctor_says_a_network_fault_needs_cap_net_admin() {
    if !crate::common::skip::can_run_as_root(
        "doctor_says_a_network_fault_needs_cap_net_admin",
        "to run doctor as another user with setpriv",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let scenario = write_scenario(
        dir.path(),
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: { name: doctor-nft }
faults:
  - name: cut
    kind: network_partition
    with: { to: ["10.99.0.1"] }
"#,
    );
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_firedrill"))
        .arg("doctor")
        .arg(&scenario)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--report-dir")
        .arg(dir.path().join("reports"))
        .arg("--lock-dir")
        .arg(dir.path().join("locks"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_exit(&out, 1);
    assert!(
        stdout.contains("FAIL engine: CAP_NET_ADMIN missing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL target local: nftables not usable"),
        "{stdout}"
    );
}
