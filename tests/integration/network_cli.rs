//! `network_partition` through the real binary: `firedrill run` of a scenario in a
//! temporary directory against the lab's namespaces, and the dead-man: SIGKILL the
//! engine mid-partition, watch the partition heal by its ttl, then `firedrill
//! recover` removes the leftover (empty) table.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::netns::{API_IP, Conn, Lab};

const PORT: u16 = 8080;

fn api() -> SocketAddr {
    SocketAddr::new(API_IP.into(), PORT)
}

/// A drill: precheck, partition (reject) of api:PORT from the client, a check that
/// the client fails fast (refused within 200 ms, timed inside the namespace), and
/// an optional long verification that keeps the engine busy mid-partition.
fn scenario(client_ns: &str, ttl: &str, hold: bool) -> String {
    let hold = if hold {
        "  - name: keep the partition up\n    probe: { command: { run: \"sleep 30\", timeout: 60s } }\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: partition-cli, description: client must fail fast when the api is cut }}
targets:
  client: {{ netns: {client_ns} }}
objectives: {{ rto: 10s, max_duration: 2m }}
prechecks:
  - name: api reachable from client
    probe: {{ tcp: {{ address: "{API_IP}:{PORT}", target: client, timeout: 1s }} }}
faults:
  - name: cut api
    kind: network_partition
    target: client
    ttl: {ttl}
    with: {{ to: ["{API_IP}:{PORT}"], direction: egress, action: reject }}
verifications:
  - name: api unreachable from client
    probe: {{ tcp: {{ address: "{API_IP}:{PORT}", target: client, timeout: 1s }} }}
    expect: {{ reachable: false }}
  - name: client fails fast
    probe:
      command:
        target: client
        run: |
          python3 -c '
          import socket, sys, time
          s = socket.socket(); s.settimeout(2); t = time.monotonic()
          try:
              s.connect(("{API_IP}", {PORT})); sys.exit("connected")
          except ConnectionRefusedError:
              ms = (time.monotonic() - t) * 1000
              print(f"refused after {{ms:.1f}} ms"); sys.exit(0 if ms < 200 else 1)
          '
    expect: {{ exit_code: 0, stdout_contains: refused }}
{hold}"#
    )
}

fn journal(reports: &Path) -> serde_json::Value {
    let dir = std::fs::read_dir(reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("a report directory");
    serde_json::from_str(&std::fs::read_to_string(dir.join("journal.json")).unwrap()).unwrap()
}

#[test]
fn run_through_the_binary_passes_and_journals_the_effect() {
    let Some(lab) = Lab::serving_api("cli", api()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_scenario(tmp.path(), &scenario(&lab.client, "1m", false));
    let out = common::run_cmd(
        &file,
        &tmp.path().join("state"),
        &tmp.path().join("reports"),
    )
    .output()
    .unwrap();
    common::assert_exit(&out, 0);
    let j = journal(&tmp.path().join("reports"));
    let step = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "cut api")
        .unwrap();
    let fault = &step["fault"];
    assert_eq!(fault["kind"], "network_partition");
    let effect = &fault["effect"];
    assert_eq!(effect["as_declared"], true, "{effect}");
    assert!(effect["effective_after_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        effect["details"]["resolved"][0]["addresses"][0],
        API_IP.to_string()
    );
    assert_eq!(
        effect["details"]["table"],
        format!("firedrill_{}", j["run_id"].as_str().unwrap())
    );
    assert_eq!(fault["revert"]["ok"], true, "{fault}");
    assert!(
        fault["revert"]["result"]["restored_after_ms"]
            .as_f64()
            .is_some(),
        "{fault}"
    );
    assert!(j["objectives"]["recovery_ms"].as_f64().is_some());
    assert!(lab.http_ok(&lab.client, api()));
}

#[test]
fn sigkilled_engine_partition_heals_by_ttl_and_recover_removes_the_table() {
    let Some(mut lab) = Lab::serving_api("sigkill", api()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_scenario(tmp.path(), &scenario(&lab.client, "3s", true));
    let state = tmp.path().join("state");
    let pid = lab.spawn(
        common::run_cmd(&file, &state, &tmp.path().join("reports"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // The partition takes effect...
    let blocked = lab
        .wait_for(&lab.client, api(), Conn::Refused, Duration::from_secs(20))
        .expect("the partition took effect");
    let blocked_at = Instant::now();
    eprintln!("partition effective {blocked:?} after start");
    // ...then the engine (and the `sleep` it runs) die without any chance to revert.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(lab.wait_child(pid, Duration::from_secs(5)).is_some());
    assert_eq!(
        lab.firedrill_tables(&lab.client).len(),
        1,
        "nobody reverted"
    );
    // Traffic flows again by itself within ttl + 1 s of the partition.
    let healed = lab
        .wait_for(&lab.client, api(), Conn::Connected, Duration::from_secs(8))
        .expect("the partition healed by itself");
    let since_blocked = blocked_at.elapsed();
    eprintln!("healed {since_blocked:?} after the partition was seen ({healed:?} after the kill)");
    assert!(
        since_blocked <= Duration::from_secs(4),
        "healed {since_blocked:?} after the partition took effect, expected within ttl (3 s) + 1 s"
    );
    // The emptied table is still there until recover removes it.
    assert_eq!(lab.firedrill_tables(&lab.client).len(), 1);
    let stdout = common::recover_all(&state);
    assert!(
        stdout.contains("reverted cut api (network_partition)"),
        "{stdout}"
    );
    assert!(lab.firedrill_tables(&lab.client).is_empty());
    lab.assert_rulesets_unchanged();
    // The killed run's record names the dead-man: the elements had timed out.
    let j = common::journal(&tmp.path().join("reports"));
    assert_eq!(j.outcome.status, firedrill::model::Status::Interrupted);
    let cut = j.steps.iter().find(|s| s.name == "cut api").unwrap();
    assert!(
        cut.detail
            .contains("the dead-man (its nftables elements expired 3s"),
        "{}",
        cut.detail
    );
    // Recover is idempotent: nothing left to do.
    let again = common::recover_all_output(&state);
    assert_eq!(again.status.code(), Some(0));
}
