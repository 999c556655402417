//! Scenario and `--var` values never reach a shell they were not written for: the
//! tcp probe connects from inside a namespace without a shell, hosts and namespace
//! names are validated where they are accepted, and a bad one is refused with its
//! position before anything runs.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::netns::{API_IP, Lab};
use common::*;

/// A namespace of its own for one test, deleted on drop.
struct Ns(String);

impl Ns {
    fn add(tag: &str) -> Ns {
        let name = format!("fdsh-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Ns(name)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The issue's reproduction: a tcp probe whose host comes from a var, run from a
/// netns target, with a fault on a marker process so the drill is complete.
fn tcp_scenario(netns: &str, marker_tag: &str) -> String {
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: tcp-injection }}
vars:
  host: 127.0.0.1
  port: 1
targets:
  client: {{ netns: {netns} }}
prechecks:
  - name: reachable
    probe: {{ tcp: {{ address: "{{{{host}}}}:{{{{port}}}}", target: client, timeout: 1s }} }}
faults:
  - name: freeze marker
    kind: process_kill
    with: {{ pattern: "^{marker_tag} ", signal: STOP }}
    ttl: 1m
"#
    )
}

fn validate(scenario: &Path, vars: &[&str]) -> std::process::Output {
    let mut c = firedrill();
    c.arg("validate").arg(scenario);
    for v in vars {
        c.arg("--var").arg(v);
    }
    c.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn tcp_host_with_shell_characters_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let scen = write_scenario(dir.path(), &tcp_scenario("app", "nothing"));
    let touched = dir.path().join("x");
    let var = format!("host=127.0.0.1/1;touch {};#", touched.display());
    let out = validate(&scen, &[&var]);
    let stderr = assert_exit(&out, 2);
    assert!(
        stderr.contains(&format!(
            "{}:11:30: prechecks[0].probe.tcp.address:",
            scen.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("host name"), "{stderr}");
    assert!(!touched.exists());
    // A well-formed host still validates.
    let out = validate(&scen, &["host=db-1.internal"]);
    assert_exit(&out, 0);
}

#[test]
fn tcp_host_injection_from_a_netns_runs_nothing() {
    if !common::netns::available("tcp_host_injection_from_a_netns_runs_nothing") {
        return;
    }
    let ns = Ns::add("inj");
    let marker = Marker::spawn("tcpinj");
    let dir = tempfile::tempdir().unwrap();
    let scen = write_scenario(dir.path(), &tcp_scenario(&ns.0, &marker.tag));
    let touched = dir.path().join("x");
    let out = run_cmd(
        &scen,
        &dir.path().join("state"),
        &dir.path().join("reports"),
    )
    .arg("--var")
    .arg(format!("host=127.0.0.1/1;touch {};#", touched.display()))
    .output()
    .unwrap();
    assert_exit(&out, 2);
    assert!(!touched.exists(), "the host reached a shell");
    assert_ne!(marker.state(), 'T');
}

#[test]
fn netns_name_that_is_a_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let scen = write_scenario(dir.path(), &tcp_scenario("../../proc/1/ns/net", "nothing"));
    for cmd in ["validate", "plan"] {
        let out = firedrill()
            .arg(cmd)
            .arg(&scen)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(
            stderr.contains(&format!("{}:8:20: targets.client.netns:", scen.display())),
            "{cmd}: {stderr}"
        );
        assert!(stderr.contains("ip netns"), "{cmd}: {stderr}");
    }
}

fn netns_tcp_scenario(client: &str, address: SocketAddr) -> String {
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: tcp-from-netns }}
targets:
  client: {{ netns: {client} }}
prechecks:
  - name: port reachable from client
    probe: {{ tcp: {{ address: "{address}", target: client, timeout: 1s }} }}
faults:
  - name: freeze nothing
    kind: process_kill
    level: full
    with: {{ pattern: "^fd-no-such-process-ever ", signal: STOP }}
"#
    )
}

#[test]
fn tcp_probe_from_a_netns_to_a_refusing_port_fails() {
    if !common::netns::available("tcp_probe_from_a_netns_to_a_refusing_port_fails") {
        return;
    }
    let mut lab = Lab::new("tcpnetns").expect("lab");
    let open = SocketAddr::new(API_IP.into(), 8080);
    let closed = SocketAddr::new(API_IP.into(), 8081);
    lab.serve_http(&lab.api.clone(), open);
    let dir = tempfile::tempdir().unwrap();
    // `--level smoke` leaves the fault out.
    let smoke_run = |address: SocketAddr, reports: &Path| {
        let scen = write_scenario(dir.path(), &netns_tcp_scenario(&lab.client, address));
        run_cmd(&scen, &dir.path().join("state"), reports)
            .args(["--level", "smoke"])
            .output()
            .unwrap()
    };

    // The open port is reachable only from inside the client namespace: passing
    // proves the connect happened there.
    let out = smoke_run(open, &dir.path().join("r1"));
    assert_exit(&out, 0);

    // The refusing port fails the precheck (exit 1), with the kernel's reason.
    let reports = dir.path().join("r2");
    let out = smoke_run(closed, &reports);
    assert_exit(&out, 1);
    let j = journal(&reports);
    let pre = &j.steps[0];
    assert!(
        pre.detail.to_lowercase().contains("refused"),
        "{}",
        pre.detail
    );
    // Nothing of the drill stays behind in the namespace thread or as a child. Only
    // this drill's addresses: other tests of the binary use `/dev/tcp` themselves.
    for addr in [open, closed] {
        let needle = format!("/dev/tcp/{}/{}", addr.ip(), addr.port());
        assert!(pids_matching(&needle).is_empty(), "{needle} left running");
    }
}
