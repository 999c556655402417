//! Probes observe *from* their target: an `http` or `traffic` probe with `target:`
//! naming a netns target makes its requests from inside that namespace, so it
//! reaches a server that listens only there (the namespace's own 127.0.0.1, or a
//! 10.x address of the lab) and the same probe from this host does not. A target
//! name that is not defined is refused at validation with `file:line:column`.

use crate::common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use common::netns::{API_IP, Lab};
use firedrill::probe::{Observation, ProbeCtx, ProbeSpec};
use firedrill::target::Target;

/// The lab, or `None` after printing why (never in CI: there the test fails).
fn lab(test: &str) -> Option<Lab> {
    let lab = Lab::new(test);
    if lab.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs root and network namespaces in CI"
        );
    }
    lab
}

async fn observe(yaml: &str, targets: &BTreeMap<String, Target>) -> Observation {
    firedrill::install_crypto_provider();
    // As the scenario loader reads it: YAML to a value, then the enum from that.
    let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
    let spec: ProbeSpec = serde_json::from_value(value).unwrap();
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let vars = firedrill::scenario::Resolved::default();
    let ctx = ProbeCtx {
        targets,
        http: &http,
        vars: &vars,
    };
    spec.observe(&ctx).await
}

/// The lab with an HTTP server on the client namespace's own 127.0.0.1, on a port
/// on which nothing listens on this host (bound here, then released); the targets
/// `local` and `client`.
fn lab_serving(test: &str) -> Option<(Lab, u16, BTreeMap<String, Target>)> {
    let mut lab = lab(test)?;
    let port = common::free_port();
    let client = lab.client.clone();
    lab.serve_http(&client, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let targets = BTreeMap::from([
        ("local".to_string(), Target::Local),
        ("client".to_string(), lab.client_target()),
    ]);
    Some((lab, port, targets))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_probe_with_a_netns_target_requests_from_inside_it() {
    let Some((mut lab, port, t)) = lab_serving("http_probe_target") else {
        return;
    };
    let api = lab.api.clone();
    lab.serve_http(&api, SocketAddr::from((API_IP, port)));

    // The namespace's own loopback: only a request made inside it gets an answer.
    let inside = observe(
        &format!("http: {{ url: 'http://127.0.0.1:{port}/', target: client, timeout: 2s }}"),
        &t,
    )
    .await;
    assert_eq!(inside.status, Some(200), "{inside:?}");
    assert_eq!(inside.body.as_deref(), Some("ok"));
    let here = observe(
        &format!("http: {{ url: 'http://127.0.0.1:{port}/', timeout: 2s }}"),
        &t,
    )
    .await;
    assert!(here.error.is_some() && here.status.is_none(), "{here:?}");
    let explicit_local = observe(
        &format!("http: {{ url: 'http://127.0.0.1:{port}/', target: local, timeout: 2s }}"),
        &t,
    )
    .await;
    assert!(explicit_local.status.is_none(), "{explicit_local:?}");

    // An address of the lab, routed only between its namespaces.
    let across = observe(
        &format!("http: {{ url: 'http://{API_IP}:{port}/', target: client, timeout: 2s }}"),
        &t,
    )
    .await;
    assert_eq!(across.status, Some(200), "{across:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_probe_with_a_netns_target_loads_from_inside_it() {
    let Some((_lab, port, t)) = lab_serving("traffic_probe_target") else {
        return;
    };
    let load = |target: &str| {
        format!(
            "traffic: {{ url: 'http://127.0.0.1:{port}/', rate: 20, duration: 1s, timeout: 1s{target} }}"
        )
    };

    let inside = observe(&load(", target: client"), &t).await;
    assert!(inside.error.is_none(), "{inside:?}");
    assert_eq!(inside.metrics["count"], 20.0, "{inside:?}");
    assert_eq!(inside.metrics["success_rate"], 1.0, "{inside:?}");
    let here = observe(&load(""), &t).await;
    assert_eq!(here.metrics["count"], 20.0, "{here:?}");
    assert_eq!(here.metrics["success_rate"], 0.0, "{here:?}");
}

#[test]
fn http_and_traffic_probe_targets_must_be_defined() {
    let dir = tempfile::tempdir().unwrap();
    let scen = dir.path().join("s.yaml");
    std::fs::write(
        &scen,
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: { name: probe-targets }
targets:
  client: { netns: app }
prechecks:
  - name: reachable
    probe: { http: { url: "http://127.0.0.1:1/", target: clinet } }
  - name: loaded
    probe: { traffic: { url: "http://127.0.0.1:1/", rate: 1, target: nowhere } }
  - name: fine
    probe: { http: { url: "http://127.0.0.1:1/", target: client } }
traffic:
  - name: sends
    probe: { url: "http://127.0.0.1:1/", rate: 1, target: elsewhere }
faults:
  - name: freeze nothing
    kind: process_kill
    with: { pattern: "^firedrill-nothing-matches ", signal: STOP }
    ttl: 1m
"#,
    )
    .unwrap();
    let out = common::run_output(&["validate", scen.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for (at, path, name) in [
        ("8:58", "prechecks[0].probe.http.target", "clinet"),
        ("10:70", "prechecks[1].probe.traffic.target", "nowhere"),
        ("15:59", "traffic[0].probe.target", "elsewhere"),
    ] {
        assert!(
            stderr.contains(&format!(
                "{}:{at}: {path}: found target `{name}`, expected one of the defined targets (client, local)",
                scen.display()
            )),
            "{stderr}"
        );
    }
    assert_eq!(stderr.matches("found target").count(), 3, "{stderr}");
}

/// Through the binary: a precheck and a scenario `traffic:` entry, both from the
/// namespace, reach the server on its own loopback in every phase of the drill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_prechecks_and_loads_from_a_netns_target() {
    let Some((lab, port, _)) = lab_serving("drill_probe_target") else {
        return;
    };
    let marker = common::Marker::spawn("probetarget");
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: probes-from-a-namespace }}
objectives: {{ max_duration: 1m }}
targets:
  client: {{ netns: {client} }}
prechecks:
  - name: served inside the namespace
    probe: {{ http: {{ url: "http://127.0.0.1:{port}/", target: client, timeout: 2s }} }}
    expect: {{ status: 200, body_contains: ok }}
faults:
  - name: freeze marker
    kind: process_kill
    with: {{ pattern: "^{tag} ", signal: STOP }}
    ttl: 1m
traffic:
  - name: load from the namespace
    probe: {{ url: "http://127.0.0.1:{port}/", rate: 20, timeout: 1s, target: client }}
    before: 1s
    after: 1s
    expect:
      before: {{ metrics: {{ success_rate: {{ ge: 1.0 }} }} }}
      after: {{ metrics: {{ success_rate: {{ ge: 1.0 }} }} }}
"#,
        client = lab.client,
        tag = marker.tag
    );
    let scen = state.path().join("s.yaml");
    std::fs::write(&scen, yaml).unwrap();
    let reports = state.path().join("reports");
    let out = common::run_cmd(&scen, &state.path().join("state"), &reports)
        .output()
        .unwrap();
    let rec = common::journal(&reports);
    let passed = |name: &str| {
        let s = rec.steps.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            s.status,
            firedrill::model::StepStatus::Passed,
            "{name}: {}",
            s.detail
        );
        s
    };
    passed("served inside the namespace");
    let load = passed("load from the namespace");
    assert!(load.metrics["before.count"] >= 10.0, "{:?}", load.metrics);
    assert!(load.metrics["after.count"] >= 10.0, "{:?}", load.metrics);
    assert_eq!(rec.outcome.status, firedrill::model::Status::Passed);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
