//! Kubernetes: `pod_kill`, `scale`, the `kubernetes` probe and the permission
//! preflight, driven by the real `kube` client (in the library and in the
//! `firedrill` binary) against the stateful fake API server of
//! [`crate::common::fake_k8s`]: it lists, watches and deletes pods, and its
//! controller replaces a deleted pod after a known delay, so the measured
//! replacement times can be checked against it.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::fake_k8s::{FakeConfig, FakeK8s, Kind, WorkloadSpec};
use common::faults::{inject, revert, run_id};
use common::*;
use firedrill::fault::FaultError;
use firedrill::model::{Status, StepStatus};
use firedrill::rt::Runtime;
use firedrill::target::Target;
use firedrill::target::kubernetes::Cluster;

const NS: &str = "shop";

fn target(fake: &FakeK8s) -> Target {
    // `scale` starts its dead-man watcher with the firedrill binary, not this one.
    // SAFETY: every test sets the same value; nothing reads it concurrently in a way
    // that a torn write could affect (set before any fault runs in this test).
    unsafe { std::env::set_var("FIREDRILL_EXE", env!("CARGO_BIN_EXE_firedrill")) };
    Target::Kubernetes(Cluster {
        kubeconfig: Some(fake.kubeconfig().display().to_string()),
        context: Some("fake".into()),
        in_cluster: false,
        namespace: NS.into(),
    })
}

/// A fake with Deployment `web` (`app=web`) of `replicas` pods in `shop`.
fn fake_with(replicas: u32, recreate_ms: u64, ready_ms: u64) -> FakeK8s {
    FakeK8s::start(FakeConfig {
        recreate_delay: Duration::from_millis(recreate_ms),
        ready_delay: Duration::from_millis(ready_ms),
        workloads: vec![WorkloadSpec::deployment(NS, "web", replicas)],
        ..FakeConfig::default()
    })
}

/// A fault from `kind: …\nwith: …` YAML, decoded through JSON as the scenario loader
/// does (serde_yaml alone wants `!fixed 2` tags for `mode: { fixed: 2 }`).
fn fault(yaml: &str) -> firedrill::fault::FaultSpec {
    let v: serde_json::Value = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `pod_kill` with `with` (YAML flow) through the library, as the engine does.
fn kill(
    fake: &FakeK8s,
    with: &str,
) -> Result<(firedrill::fault::Undo, firedrill::fault::Effect), FaultError> {
    let spec = fault(&format!("kind: pod_kill\nwith: {with}"));
    let t = target(fake);
    let runtime = Runtime::default();
    rt().block_on(inject(
        &spec,
        &t,
        &run_id(),
        "kill",
        Duration::from_secs(60),
        &runtime,
    ))
}

fn deleted_names(fake: &FakeK8s) -> Vec<String> {
    let mut v: Vec<String> = fake.deletes().into_iter().map(|d| d.name).collect();
    v.sort();
    v
}

#[test]
fn modes_delete_the_right_number_of_pods_with_percent_rounded_down() {
    // (mode, pods in the workload, pods deleted)
    let cases = [
        ("one", 5, 1),
        ("all", 3, 3),
        ("{ fixed: 2 }", 5, 2),
        ("{ percent: 50 }", 5, 2), // 2.5 rounded down
        ("{ percent: 10 }", 3, 1), // 0.3 rounded down is 0: at least one
        ("{ percent: 100 }", 4, 4),
    ];
    for (mode, pods, want) in cases {
        let fake = fake_with(pods, 50, 50);
        let before: Vec<String> = fake.ready_pods(NS).into_iter().map(|p| p.0).collect();
        let (_, effect) = kill(&fake, &format!("{{ label_selector: app=web, mode: {mode}, seed: 7, grace_period: 0s, recovery_timeout: 20s }}"))
            .unwrap_or_else(|e| panic!("mode {mode}: {e}"));
        let deleted = deleted_names(&fake);
        assert_eq!(deleted.len(), want, "mode {mode}: {deleted:?}");
        assert!(
            deleted.iter().all(|d| before.contains(d)),
            "{deleted:?} ⊄ {before:?}"
        );
        assert_eq!(effect.details["seed"], 7);
        assert_eq!(effect.details["candidates"], pods);
        assert_eq!(effect.details["chosen"].as_array().unwrap().len(), want);
        assert!(effect.as_declared, "{}", effect.measured);
        // The controller put the workload back.
        assert!(fake.wait_pods(NS, Duration::from_secs(5), |p| p.len() == pods as usize));
    }
}

#[test]
fn the_same_seed_picks_the_same_pods() {
    let pick = |seed: u64| {
        let fake = fake_with(6, 50, 50);
        kill(&fake, &format!("{{ label_selector: app=web, mode: {{ fixed: 2 }}, seed: {seed}, grace_period: 0s }}")).unwrap();
        deleted_names(&fake)
    };
    assert_eq!(pick(11), pick(11));
    let all: std::collections::BTreeSet<Vec<String>> = (0..6).map(pick).collect();
    assert!(
        all.len() > 1,
        "different seeds pick different pods: {all:?}"
    );
}

#[test]
fn max_pods_caps_what_the_mode_selects() {
    let fake = fake_with(5, 50, 50);
    let (undo, effect) = kill(
        &fake,
        "{ label_selector: app=web, mode: all, max_pods: 2, grace_period: 0s }",
    )
    .unwrap();
    assert_eq!(deleted_names(&fake).len(), 2);
    assert_eq!(effect.details["capped_from"], 5);
    let firedrill::fault::Undo::PodKill(_) = undo else {
        panic!("{undo:?}")
    };
}

#[test]
fn too_few_candidates_injects_nothing_and_names_the_count() {
    let fake = fake_with(3, 50, 50);
    let err = kill(&fake, "{ label_selector: app=web, mode: { fixed: 5 } }").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("found 3 candidate pod(s), expected at least 5"),
        "{msg}"
    );
    assert!(fake.deletes().is_empty());
    // Field selectors are the server's: none of these pods is on node-9.
    let err = kill(
        &fake,
        "{ label_selector: app=web, field_selector: spec.nodeName=node-9 }",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("found 0 candidate pod(s)"),
        "{err}"
    );
    assert!(fake.deletes().is_empty());
}

#[test]
fn names_and_field_selectors_narrow_the_choice() {
    let fake = fake_with(4, 50, 50);
    let pods: Vec<String> = fake.ready_pods(NS).into_iter().map(|p| p.0).collect();
    kill(
        &fake,
        &format!("{{ names: [{}], mode: all, grace_period: 0s }}", pods[2]),
    )
    .unwrap();
    assert_eq!(deleted_names(&fake), vec![pods[2].clone()]);
    let node = "node-2";
    let on_node: Vec<String> = fake
        .pods(NS)
        .iter()
        .filter(|p| p["spec"]["nodeName"] == node && common::fake_k8s::is_ready(p))
        .map(common::fake_k8s::name_of)
        .collect();
    let before = fake.deletes().len();
    kill(&fake, &format!("{{ label_selector: app=web, field_selector: spec.nodeName={node}, mode: all, grace_period: 0s }}")).unwrap();
    let mut now: Vec<String> = fake.deletes()[before..]
        .iter()
        .map(|d| d.name.clone())
        .collect();
    now.sort();
    let mut want = on_node.clone();
    want.sort();
    assert_eq!(now, want);
}

#[test]
fn a_bare_pod_without_a_controller_is_refused() {
    let fake = FakeK8s::start(FakeConfig {
        bare_pods: vec![(
            NS.into(),
            "lonely".into(),
            [("app".to_string(), "lonely".to_string())].into(),
        )],
        ..FakeConfig::default()
    });
    let err = kill(&fake, "{ label_selector: app=lonely }").unwrap_err();
    assert!(err.to_string().contains("has no controller"), "{err}");
    assert!(fake.deletes().is_empty());
}

fn within_10pct(got: f64, want: f64) -> bool {
    (got - want).abs() <= want * 0.10
}

#[test]
fn replacement_times_match_the_controllers_known_delays() {
    let (recreate, ready) = (800.0, 600.0);
    let fake = fake_with(3, recreate as u64, ready as u64);
    let (_, effect) = kill(&fake, "{ label_selector: app=web, mode: { fixed: 2 }, seed: 3, grace_period: 0s, recovery_timeout: 30s }").unwrap();
    assert!(effect.as_declared, "{}", effect.measured);
    let rows = effect.details["pods"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let deletes = fake.deletes();
    let mut replacements = std::collections::BTreeSet::new();
    for r in rows {
        let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
        // Grace 0: the pod is gone at once.
        assert!(f("gone_ms") < 0.10 * recreate, "{r}");
        assert!(within_10pct(f("scheduled_ms"), recreate), "scheduled: {r}");
        assert!(within_10pct(f("ready_ms"), recreate + ready), "ready: {r}");
        // A new pod with a new UID, counted for one deleted pod only.
        let uid = r["replacement_uid"].as_str().unwrap().to_string();
        assert!(deletes.iter().all(|d| d.uid != uid));
        assert!(
            replacements.insert(uid),
            "replacement counted twice: {rows:?}"
        );
        assert_eq!(
            deletes.iter().find(|d| d.name == r["pod"]).unwrap().grace,
            Some(0)
        );
    }
    let w = &effect.details["workloads"][0];
    assert_eq!(w["workload"], "Deployment/web");
    assert_eq!(w["desired"], 3);
    // Back when the later of the two replacements is Ready (the deletes are ms apart).
    let back = w["back_ms"].as_f64().unwrap();
    assert!(within_10pct(back, recreate + ready), "{w}");
    assert_eq!(effect.details["recovered_by"], "controller");
}

#[test]
fn a_watch_that_ends_is_opened_again_from_the_last_resource_version() {
    // Every watch ends after 250 ms; the replacement is Ready after 1.2 s.
    let fake = FakeK8s::start(FakeConfig {
        recreate_delay: Duration::from_millis(700),
        ready_delay: Duration::from_millis(500),
        watch_cap: Some(Duration::from_millis(250)),
        workloads: vec![WorkloadSpec::deployment(NS, "web", 2)],
        ..FakeConfig::default()
    });
    let (_, effect) = kill(
        &fake,
        "{ label_selector: app=web, grace_period: 0s, recovery_timeout: 20s }",
    )
    .unwrap();
    let r = &effect.details["pods"][0];
    assert!(
        within_10pct(r["scheduled_ms"].as_f64().unwrap(), 700.0),
        "{r}"
    );
    assert!(within_10pct(r["ready_ms"].as_f64().unwrap(), 1200.0), "{r}");
    assert!(fake.watches() >= 3, "watched {} times", fake.watches());
    // Each watch after the first starts where the previous one stopped.
    let rvs: Vec<u64> = fake
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true") || r.contains("watch=1"))
        .filter_map(|r| {
            r.split("resourceVersion=")
                .nth(1)?
                .split('&')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] <= w[1]), "{rvs:?}");
    assert!(rvs.last() > rvs.first(), "{rvs:?}");
}

#[test]
fn a_grace_period_keeps_the_pod_until_it_ends() {
    let fake = fake_with(2, 100, 100);
    let (_, effect) = kill(
        &fake,
        "{ label_selector: app=web, grace_period: 1s, recovery_timeout: 20s }",
    )
    .unwrap();
    assert_eq!(fake.deletes()[0].grace, Some(1));
    let r = &effect.details["pods"][0];
    // Gone after the grace; replaced meanwhile (a terminating pod does not count).
    assert!(r["gone_ms"].as_f64().unwrap() >= 1000.0, "{r}");
    assert!(r["ready_ms"].as_f64().unwrap() < 1000.0, "{r}");
}

#[test]
fn a_pod_not_replaced_in_time_fails_the_fault_with_its_table() {
    let fake = FakeK8s::start(FakeConfig {
        workloads: vec![WorkloadSpec::deployment(NS, "web", 2).no_recreate()],
        ..FakeConfig::default()
    });
    let err = kill(
        &fake,
        "{ label_selector: app=web, grace_period: 0s, recovery_timeout: 1s }",
    )
    .unwrap_err();
    let FaultError::Unrecovered { effect, why } = err else {
        panic!("{err}")
    };
    assert!(why.contains("within the recovery_timeout of 1s"), "{why}");
    assert!(why.contains("no replacement"), "{why}");
    assert!(why.contains("Deployment/web not back to 2 Ready"), "{why}");
    assert!(effect.as_declared);
    assert!(effect.details["pods"][0]["ready_ms"].is_null());
}

// ---- scale -------------------------------------------------------------------

#[test]
fn scale_down_and_back_with_the_annotation() {
    let fake = fake_with(3, 50, 50);
    let spec = fault("kind: scale\nwith: { workload: deployment, name: web, replicas: 1 }");
    let t = target(&fake);
    let runtime = Runtime::default();
    let rt = rt();
    let (undo, effect) = rt
        .block_on(inject(
            &spec,
            &t,
            "scalerun1",
            "down",
            Duration::from_secs(60),
            &runtime,
        ))
        .unwrap();
    assert!(effect.as_declared, "{}", effect.measured);
    let (replicas, ann) = fake.workload(NS, Kind::Deployment, "web");
    assert_eq!(replicas, 1);
    assert_eq!(
        ann.get("firedrill.dev/original-replicas")
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(
        ann.get("firedrill.dev/scaled-by-run").map(String::as_str),
        Some("scalerun1")
    );
    assert_eq!(fake.ready_pods(NS).len(), 1);
    let firedrill::fault::Undo::Scale(u) = &undo else {
        panic!("{undo:?}")
    };
    let tag = u.deadman_tag.clone().expect("scale has a dead-man watcher");
    assert!(
        effect.details["deadman_pid"].as_u64().is_some(),
        "{}",
        effect.details
    );
    assert_eq!(pids_matching(&format!("__deadman --tag {tag} ")).len(), 1);
    let reverted = rt.block_on(revert(&undo)).unwrap();
    assert!(
        pids_matching(&format!("__deadman --tag {tag} ")).is_empty(),
        "the revert ends the watcher"
    );
    assert!(
        reverted.restored_after_ms.is_some(),
        "{}",
        reverted.measured
    );
    let (replicas, ann) = fake.workload(NS, Kind::Deployment, "web");
    assert_eq!(replicas, 3);
    assert!(ann.is_empty(), "{ann:?}");
    assert_eq!(fake.ready_pods(NS).len(), 3);
    // Idempotent.
    rt.block_on(revert(&undo)).unwrap();
    assert_eq!(fake.workload(NS, Kind::Deployment, "web").0, 3);
}

// ---- the binary: scenarios, preflight, recover, report --------------------------

fn scenario(fake: &FakeK8s, faults: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: k8s-drill }}
targets:
  shop: {{ kubernetes: {{ kubeconfig: "{}", context: fake, namespace: {NS} }} }}
prechecks:
  - name: web healthy
    probe: {{ kubernetes: {{ target: shop, workload: {{ kind: deployment, name: web }}, label_selector: app=web }} }}
faults:
{faults}
{extra}
"#,
        fake.kubeconfig().display()
    )
}

const KILL_ONE: &str = "  - name: kill a web pod
    kind: pod_kill
    target: shop
    with: { label_selector: app=web, mode: one, seed: 5, grace_period: 0s, recovery_timeout: 20s }";

#[test]
fn an_end_to_end_drill_kills_measures_and_reports() {
    let fake = fake_with(3, 300, 300);
    let dir = tempfile::tempdir().unwrap();
    let verif = "verifications:
  - name: web back to 3 ready
    within: 20s
    interval: 100ms
    probe: { kubernetes: { target: shop, workload: { kind: deployment, name: web }, min_ready: 3 } }";
    let scen = write_scenario(dir.path(), &scenario(&fake, KILL_ONE, verif));
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(fake.deletes().len(), 1);
    let j = journal(&reports);
    assert_eq!(j.outcome.status, Status::Passed);
    let step = j.steps.iter().find(|s| s.name == "kill a web pod").unwrap();
    let fr = step.fault.as_ref().unwrap();
    let effect = fr.effect.as_ref().unwrap();
    assert_eq!(
        effect.details["pods"][0]["pod"],
        fake.deletes()[0].name.as_str()
    );
    assert!(effect.details["pods"][0]["ready_ms"].as_f64().unwrap() >= 600.0 * 0.9);
    assert_eq!(fr.reversible, Some(false));
    let revert = fr.revert.as_ref().unwrap();
    let measured = &revert.result.as_ref().unwrap().measured;
    assert!(
        measured.contains("recovery was the controller's"),
        "{revert:?}"
    );
    // The preflight asked for what pod_kill does.
    let reviews = fake.reviews();
    for (verb, res) in [("list", "pods"), ("watch", "pods"), ("delete", "pods")] {
        assert!(
            reviews
                .iter()
                .any(|r| r.verb == verb && r.resource == res && r.namespace == NS),
            "{verb} {res}: {reviews:?}"
        );
    }
    // The per-pod table in the reports.
    let rdir = report_dir(&reports);
    let md = std::fs::read_to_string(rdir.join("report.md")).unwrap();
    let html = std::fs::read_to_string(rdir.join("report.html")).unwrap();
    let pod = &fake.deletes()[0].name;
    for text in [&md, &html] {
        assert!(text.contains(pod.as_str()), "pod {pod} in the report");
        assert!(
            text.contains("recovery was the controller"),
            "controller's recovery in the report"
        );
        assert!(text.contains("Deployment/web"), "the workload row");
    }
    let replacement = effect.details["pods"][0]["replacement"].as_str().unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with(&format!("| kill a web pod | {pod} |")))
        .unwrap_or_else(|| panic!("a row for {pod} in\n{md}"));
    assert!(
        row.contains(replacement) && row.ends_with("| replaced |"),
        "{row}"
    );
}

#[test]
fn the_disruption_starts_at_the_deletes_not_when_the_replacements_are_ready() {
    // Replacement Ready 1.5 s after the delete; the indicator (all 3 Ready) sees the
    // workload down from the delete until then.
    let fake = fake_with(3, 900, 600);
    let dir = tempfile::tempdir().unwrap();
    let extra = "indicators:
  - name: web at full strength
    interval: 100ms
    restored_after: 1
    probe: { kubernetes: { target: shop, workload: { kind: deployment, name: web } } }";
    let scen = write_scenario(dir.path(), &scenario(&fake, KILL_ONE, extra));
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let j = journal(&reports);
    let step = j.steps.iter().find(|s| s.name == "kill a web pod").unwrap();
    let effect = step.fault.as_ref().unwrap().effect.as_ref().unwrap();
    let start = j.objectives.disruption_start_ms.unwrap();
    // At the deletes (the step's start plus the effect's own time), long before the
    // step ended with the replacement Ready.
    let at = step.started_ms + effect.effective_after_ms.unwrap();
    assert!(
        (start - at).abs() < 1.0,
        "disruption {start} vs effect {at}"
    );
    assert!(
        step.started_ms + step.duration_ms - start > 1000.0,
        "{step:?}"
    );
    let down = j.objectives.downtime_ms.expect("downtime measured");
    assert!(down > 1000.0 && down < 3000.0, "downtime {down} ms");
}

#[test]
fn a_denied_permission_injects_nothing_and_exits_3() {
    let fake = fake_with(3, 50, 50);
    fake.deny("delete", "pods", NS);
    let dir = tempfile::tempdir().unwrap();
    let scen = write_scenario(dir.path(), &scenario(&fake, KILL_ONE, ""));
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    let stderr = assert_exit(&out, 3);
    assert!(fake.deletes().is_empty());
    assert!(!fake.requests().iter().any(|r| r.starts_with("DELETE")));
    let j = journal(&reports);
    assert_eq!(j.outcome.status, Status::InjectionFailed);
    let all = format!("{stderr}{}", serde_json::to_string(&j).unwrap());
    assert!(
        all.contains("cannot delete pods in namespace shop"),
        "{all}"
    );
}

#[test]
fn an_unrecovered_pod_fails_the_drill() {
    let fake = FakeK8s::start(FakeConfig {
        workloads: vec![WorkloadSpec::deployment(NS, "web", 2).no_recreate()],
        ..FakeConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let faults = "  - name: kill a web pod
    kind: pod_kill
    target: shop
    with: { label_selector: app=web, grace_period: 0s, recovery_timeout: 1s }";
    // No steady state to wait for: the broken controller never brings it back.
    let extra = "steady_state:\n  - name: anything\n    probe: { command: { run: 'true' } }\nindicators:\n  - name: up\n    probe: { command: { run: 'true' } }";
    let scen = write_scenario(dir.path(), &scenario(&fake, faults, extra));
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 1);
    let j = journal(&reports);
    assert_eq!(j.outcome.status, Status::Failed);
    let step = j.steps.iter().find(|s| s.name == "kill a web pod").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    let effect = step.fault.as_ref().unwrap().effect.as_ref().unwrap();
    assert!(effect.details["pods"][0]["replacement"].is_null());
    assert!(
        j.outcome.reason.contains("not recovered"),
        "{}",
        j.outcome.reason
    );
}

#[test]
fn scales_dead_man_restores_the_replicas_after_the_ttl_without_recover() {
    let fake = fake_with(3, 50, 50);
    let dir = tempfile::tempdir().unwrap();
    let faults = "  - name: zone down
    kind: scale
    target: shop
    with: { workload: deployment, name: web, replicas: 0 }
    ttl: 3s
    ramp_up: 60s";
    let scen = write_scenario(dir.path(), &scenario(&fake, faults, ""));
    let state = dir.path().join("state");
    let mut engine = spawn_drill(&scen, "k8sttl1", &state, &dir.path().join("reports"));
    assert!(
        wait_until(Duration::from_secs(30), || fake
            .workload(NS, Kind::Deployment, "web")
            .0
            == 0),
        "scaled to 0"
    );
    engine.kill().unwrap();
    engine.wait().unwrap();
    let killed = std::time::Instant::now();
    assert_eq!(
        fake.workload(NS, Kind::Deployment, "web").0,
        0,
        "still down right after the kill"
    );
    // Nobody runs recover: the watcher puts it back after the ttl.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let (replicas, annotations) = fake.workload(NS, Kind::Deployment, "web");
            replicas == 3 && annotations.is_empty()
        }),
        "restored by the dead-man, annotations removed"
    );
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(fake.wait_pods(NS, Duration::from_secs(5), |p| p.len() == 3));
    // recover still finds the record, and reverting again changes nothing.
    recover_all(&state);
    assert_eq!(fake.workload(NS, Kind::Deployment, "web").0, 3);
    assert!(pids_matching("__deadman --tag k8sttl1-").is_empty());
}

#[test]
fn scale_is_reverted_by_recover_after_the_engine_is_killed() {
    let fake = fake_with(3, 50, 50);
    let dir = tempfile::tempdir().unwrap();
    let faults = "  - name: zone down
    kind: scale
    target: shop
    with: { workload: deployment, name: web, replicas: 0 }
    ramp_up: 60s";
    let scen = write_scenario(dir.path(), &scenario(&fake, faults, ""));
    let state = dir.path().join("state");
    let mut engine = spawn_drill(&scen, "k8skill1", &state, &dir.path().join("reports"));
    assert!(
        wait_until(Duration::from_secs(30), || fake
            .workload(NS, Kind::Deployment, "web")
            .0
            == 0
            && fake.ready_pods(NS).is_empty()),
        "scaled to 0"
    );
    // The annotation is there for an operator without the ledger.
    let ann = fake.workload(NS, Kind::Deployment, "web").1;
    assert_eq!(ann["firedrill.dev/original-replicas"], "3");
    engine.kill().unwrap();
    engine.wait().unwrap();
    assert_eq!(pending_in_ledger(&state, "k8skill1"), 1);
    recover_all(&state);
    let (replicas, ann) = fake.workload(NS, Kind::Deployment, "web");
    assert_eq!(replicas, 3);
    assert!(ann.is_empty(), "{ann:?}");
    assert!(fake.wait_pods(NS, Duration::from_secs(5), |p| p.len() == 3));
    assert_eq!(pending_in_ledger(&state, "k8skill1"), 0);
    // The revert ended the dead-man watcher (its ttl was the 15 min default).
    assert!(pids_matching("__deadman --tag k8skill1-").is_empty());
}

fn validate_out(fake: &FakeK8s, faults: &str, extra: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let scen = write_scenario(dir.path(), &scenario(fake, faults, extra));
    let out = firedrill().arg("validate").arg(&scen).output().unwrap();
    assert_exit(&out, 2)
}

#[test]
fn validation_refuses_empty_selectors_system_namespaces_and_host_kinds_on_a_cluster() {
    let fake = fake_with(1, 50, 50);
    let empty = "  - name: k\n    kind: pod_kill\n    target: shop\n    with: { mode: all }";
    let e = validate_out(&fake, empty, "");
    assert!(
        e.contains("faults[0].with") && e.contains("found no pod selector"),
        "{e}"
    );
    let system = "  - name: k\n    kind: pod_kill\n    target: shop\n    with: { namespace: kube-system, label_selector: k8s-app=kube-dns }";
    let e = validate_out(&fake, system, "");
    assert!(
        e.contains("faults[0].with.namespace") && e.contains("protected namespace `kube-system`"),
        "{e}"
    );
    let zero = "  - name: k\n    kind: pod_kill\n    target: shop\n    with: { label_selector: app=web, mode: { percent: 0 } }";
    let e = validate_out(&fake, zero, "");
    assert!(e.contains("faults[0].with.mode.percent"), "{e}");
    let host = "  - name: k\n    kind: process_kill\n    target: shop\n    with: { name: nginx }";
    let e = validate_out(&fake, host, "");
    assert!(
        e.contains("faults[0].target") && e.contains("expected a host target"),
        "{e}"
    );
    let probe =
        "verifications:\n  - name: v\n    probe: { command: { run: 'true', target: shop } }";
    let e = validate_out(&fake, KILL_ONE, probe);
    assert!(e.contains("verifications[0].probe.command.target"), "{e}");
    let recovery = "recovery:\n  - name: r\n    command: { run: 'true', target: shop }";
    let e = validate_out(&fake, KILL_ONE, recovery);
    assert!(
        e.contains("recovery[0].command.target") && e.contains("runs no shell command"),
        "{e}"
    );
    let scale_local =
        "  - name: k\n    kind: scale\n    with: { workload: deployment, name: web, replicas: 0 }";
    let e = validate_out(&fake, scale_local, "");
    assert!(
        e.contains("faults[0].target") && e.contains("expected a kubernetes target"),
        "{e}"
    );
    // Nothing was asked of the cluster.
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[test]
fn plan_lists_the_pods_a_selector_matches_now() {
    let fake = fake_with(3, 50, 50);
    let dir = tempfile::tempdir().unwrap();
    let scen = write_scenario(dir.path(), &scenario(&fake, KILL_ONE, ""));
    let out = firedrill().arg("plan").arg(&scen).output().unwrap();
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("matches 3 pod(s) right now"), "{text}");
    for (name, _) in fake.ready_pods(NS) {
        assert!(
            text.contains(&format!("{name} on node-")),
            "{name} in {text}"
        );
    }
    // The JSON plan carries the same pods under the fault step.
    let out = firedrill()
        .args(["plan", "--format", "json"])
        .arg(&scen)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let steps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let fault = steps
        .iter()
        .find(|s| s["phase"] == "fault")
        .expect("a fault step");
    let pods: Vec<&str> = fault["matching_pods"]
        .as_array()
        .unwrap_or_else(|| panic!("no matching_pods: {fault}"))
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(pods.len(), 3, "{pods:?}");
    for (name, _) in fake.ready_pods(NS) {
        assert!(
            pods.iter()
                .any(|p| p.starts_with(&format!("{name} on node-"))),
            "{name} in {pods:?}"
        );
    }
    assert!(
        steps
            .iter()
            .filter(|s| s["phase"] != "fault")
            .all(|s| s.get("matching_pods").is_none())
    );
    assert!(fake.deletes().is_empty());
}

#[test]
fn the_kubernetes_probe_sees_a_workload_below_desired() {
    let fake = fake_with(2, 5_000, 50);
    // After the kill, 1 of 2 is ready for 5 s: the probe says so, with the counts.
    let v: serde_json::Value = serde_yaml::from_str(
        "kubernetes: { target: shop, workload: { kind: deployment, name: web }, label_selector: app=web, max_restarts: 0 }",
    )
    .unwrap();
    let spec: firedrill::probe::ProbeSpec = serde_json::from_value(v).unwrap();
    let targets = std::collections::BTreeMap::from([("shop".to_string(), target(&fake))]);
    firedrill::install_crypto_provider();
    let http = reqwest::Client::new();
    let vars = firedrill::scenario::Resolved::default();
    let ctx = firedrill::probe::ProbeCtx {
        targets: &targets,
        http: &http,
        vars: &vars,
    };
    let rt = rt();
    let obs = rt.block_on(spec.observe(&ctx));
    assert_eq!(obs.error, None, "{obs:?}");
    assert_eq!(obs.metrics["desired"], 2.0);
    assert_eq!(obs.metrics["ready"], 2.0);
    assert_eq!(obs.metrics["pods_ready"], 2.0);
    assert_eq!(obs.metrics["restarts_max"], 0.0);
    let _ = kill(
        &fake,
        "{ label_selector: app=web, grace_period: 0s, recovery_timeout: 100ms }",
    );
    let obs = rt.block_on(spec.observe(&ctx));
    let e = obs.error.clone().unwrap_or_default();
    assert!(
        e.contains("Deployment web: 1 ready, 1 available, expected at least 2"),
        "{obs:?}"
    );
    assert_eq!(obs.metrics["ready"], 1.0);
}

// ---- deploy/kubernetes ------------------------------------------------------------

fn manifest<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_manifests_are_valid_objects_and_the_role_grants_what_the_preflight_asks() {
    use k8s_openapi::api::batch::v1::CronJob;
    use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let sa: ServiceAccount = manifest("serviceaccount.yaml");
    let role: Role = manifest("role.yaml");
    let binding: RoleBinding = manifest("rolebinding.yaml");
    let cm: ConfigMap = manifest("configmap.yaml");
    let pvc: PersistentVolumeClaim = manifest("pvc.yaml");
    let cron: CronJob = manifest("cronjob.yaml");
    // Every file is in the directory, and of the kind it says.
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".yaml"))
            .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "configmap.yaml",
            "cronjob.yaml",
            "pvc.yaml",
            "role.yaml",
            "rolebinding.yaml",
            "serviceaccount.yaml"
        ]
    );

    let sa_name = sa.metadata.name.clone().unwrap();
    let ns = sa.metadata.namespace.clone().unwrap();
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", sa_name.as_str())
    );
    let job = cron.spec.job_template.spec.unwrap().template.spec.unwrap();
    assert_eq!(job.service_account_name.as_deref(), Some(sa_name.as_str()));
    let vols = job.volumes.unwrap();
    assert!(
        vols.iter()
            .any(|v| v.config_map.as_ref().map(|c| c.name.as_str()) == cm.metadata.name.as_deref())
    );
    assert!(vols.iter().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str())
            == pvc.metadata.name.as_deref()
    }));
    let args = job.containers[0].args.clone().unwrap();
    assert_eq!(args[0], "run");

    // The scenario of the ConfigMap is valid for this build.
    let dir = tempfile::tempdir().unwrap();
    let scen = dir.path().join("drill.yaml");
    std::fs::write(&scen, &cm.data.unwrap()["drill.yaml"]).unwrap();
    let out = firedrill().arg("validate").arg(&scen).output().unwrap();
    assert_exit(&out, 0);

    // Every permission the preflight asks for the kubernetes faults is granted.
    let cluster = Target::Kubernetes(Cluster {
        kubeconfig: None,
        context: None,
        in_cluster: true,
        namespace: ns.clone(),
    });
    let rules = role.rules.unwrap();
    let specs = [
        "kind: pod_kill\nwith: { label_selector: app=web }",
        "kind: scale\nwith: { workload: deployment, name: web, replicas: 0 }",
        "kind: scale\nwith: { workload: stateful_set, name: db, replicas: 0 }",
    ];
    let mut asked = 0;
    for yaml in specs {
        for p in fault(yaml).permissions(&cluster) {
            asked += 1;
            assert_eq!(p.namespace, ns);
            let resource = if p.subresource.is_empty() {
                p.resource.clone()
            } else {
                format!("{}/{}", p.resource, p.subresource)
            };
            let granted = rules.iter().any(|r| {
                r.api_groups.as_ref().is_some_and(|g| g.contains(&p.group))
                    && r.resources
                        .as_ref()
                        .is_some_and(|rs| rs.contains(&resource))
                    && r.verbs.contains(&p.verb)
            });
            assert!(granted, "the Role does not grant {}", p.describe());
        }
    }
    assert!(asked >= 9);
    // And nothing cluster-wide or wildcard.
    for r in &rules {
        assert!(!r.verbs.iter().any(|v| v == "*"), "{r:?}");
        assert!(!r.resources.iter().flatten().any(|v| v == "*"), "{r:?}");
    }
}

#[test]
fn a_cluster_is_not_a_shell_host() {
    let fake = fake_with(1, 50, 50);
    let t = target(&fake);
    let rt = rt();
    let e = rt
        .block_on(t.run(&firedrill::target::Cmd::new("true")))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("running a program is not supported on a kubernetes target"),
        "{e}"
    );
    let e = t.processes().unwrap_err();
    assert!(
        e.to_string()
            .contains("not supported on a kubernetes target"),
        "{e}"
    );
    let e = rt
        .block_on(t.connect_tcp("127.0.0.1:1".parse().unwrap(), None, None))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("not supported on a kubernetes target"),
        "{e}"
    );
    assert!(rt.block_on(t.resolve("example.org", 80)).is_err());
    assert!(!t.sockets_here());
    assert_eq!(t.describe(), "kubernetes:fake/shop");
}

#[test]
fn pods_not_running_and_ready_are_not_candidates_unless_asked() {
    // The replacement of a first kill stays not Ready for 30 s.
    let fake = fake_with(3, 50, 30_000);
    let _ = kill(
        &fake,
        "{ label_selector: app=web, grace_period: 0s, recovery_timeout: 300ms }",
    )
    .unwrap_err();
    assert!(fake.wait_pods(NS, Duration::from_secs(5), |p| p.len() == 3));
    let not_ready: Vec<String> = fake
        .pods(NS)
        .iter()
        .filter(|p| !common::fake_k8s::is_ready(p))
        .map(common::fake_k8s::name_of)
        .collect();
    assert_eq!(not_ready.len(), 1);
    let before = fake.deletes().len();
    let err = kill(
        &fake,
        "{ label_selector: app=web, mode: all, grace_period: 0s, recovery_timeout: 300ms }",
    )
    .unwrap_err();
    let FaultError::Unrecovered { effect, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(effect.details["candidates"], 2);
    let hit: Vec<String> = fake.deletes()[before..]
        .iter()
        .map(|d| d.name.clone())
        .collect();
    assert_eq!(hit.len(), 2);
    assert!(!hit.contains(&not_ready[0]), "{hit:?}");
    // With `include_not_ready`, the pending pods count too.
    let fake = fake_with(3, 50, 30_000);
    let _ = kill(
        &fake,
        "{ label_selector: app=web, grace_period: 0s, recovery_timeout: 300ms }",
    );
    assert!(fake.wait_pods(NS, Duration::from_secs(5), |p| p.len() == 3));
    let err = kill(&fake, "{ label_selector: app=web, mode: all, include_not_ready: true, grace_period: 0s, recovery_timeout: 300ms }")
        .unwrap_err();
    let FaultError::Unrecovered { effect, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(effect.details["candidates"], 3);
}

#[test]
fn a_statefulset_pod_is_replaced_under_its_own_name_with_a_new_uid() {
    let fake = FakeK8s::start(FakeConfig {
        recreate_delay: Duration::from_millis(300),
        ready_delay: Duration::from_millis(300),
        workloads: vec![WorkloadSpec::statefulset(NS, "db", 3)],
        ..FakeConfig::default()
    });
    let (_, effect) = kill(
        &fake,
        "{ label_selector: app=db, names: [db-1], grace_period: 0s, recovery_timeout: 20s }",
    )
    .unwrap();
    let r = &effect.details["pods"][0];
    assert_eq!(r["pod"], "db-1");
    assert_eq!(r["replacement"], "db-1");
    assert_ne!(r["replacement_uid"], r["uid"]);
    assert!(within_10pct(r["ready_ms"].as_f64().unwrap(), 600.0), "{r}");
    let w = &effect.details["workloads"][0];
    assert_eq!(w["workload"], "StatefulSet/db");
    assert_eq!(w["desired"], 3);
}

#[test]
fn the_shipped_kubernetes_scenario_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/kubernetes-pod-kill.yaml");
    let out = firedrill().arg("validate").arg(&path).output().unwrap();
    assert_exit(&out, 0);
}

#[test]
fn an_unreadable_kubeconfig_fails_the_preflight_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    let text = format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: k8s-no-config }}
targets:
  shop: {{ kubernetes: {{ kubeconfig: "{}", namespace: {NS} }} }}
faults:
{KILL_ONE}
"#,
        missing.display()
    );
    let scen = write_scenario(dir.path(), &text);
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    let stderr = assert_exit(&out, 3);
    let j = journal(&reports);
    let all = format!("{stderr}{}", j.outcome.reason);
    assert!(
        all.contains("cannot read the kubeconfig of kubernetes:"),
        "{all}"
    );
    assert!(
        j.steps
            .iter()
            .all(|s| s.fault.as_ref().is_none_or(|f| f.ledger_seq.is_none()))
    );
}

#[test]
fn too_few_candidates_in_a_drill_exits_3_with_the_count() {
    let fake = fake_with(2, 50, 50);
    let dir = tempfile::tempdir().unwrap();
    let faults = "  - name: kill five
    kind: pod_kill
    target: shop
    with: { label_selector: app=web, mode: { fixed: 5 } }";
    let scen = write_scenario(dir.path(), &scenario(&fake, faults, ""));
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 3);
    let j = journal(&reports);
    assert_eq!(j.outcome.status, Status::InjectionFailed);
    let step = j.steps.iter().find(|s| s.name == "kill five").unwrap();
    assert!(
        step.detail
            .contains("found 2 candidate pod(s), expected at least 5"),
        "{}",
        step.detail
    );
    assert!(fake.deletes().is_empty());
}

/// `firedrill doctor` on a cluster: the pods a kill would pick now, the permission
/// it lacks (named), and nothing deleted, scaled or annotated.
#[test]
fn doctor_previews_the_pods_and_names_a_missing_permission_without_touching_anything() {
    let fake = fake_with(3, 50, 50);
    let dir = tempfile::tempdir().unwrap();
    let scen = write_scenario(dir.path(), &scenario(&fake, KILL_ONE, ""));
    let doctor = || {
        firedrill()
            .arg("doctor")
            .arg(&scen)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--report-dir")
            .arg(dir.path().join("reports"))
            .arg("--lock-dir")
            .arg(dir.path().join("locks"))
            .output()
            .unwrap()
    };
    let out = doctor();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_exit(&out, 0);
    assert!(
        stdout.contains("permission(s) granted (SelfSubjectAccessReview)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pod_kill: 1 of 3 candidate pod(s) in shop would be deleted now: web-"),
        "{stdout}"
    );
    fake.deny("delete", "pods", NS);
    let out = doctor();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_exit(&out, 1);
    assert!(
        stdout.contains("FAIL target kubernetes")
            && stdout.contains("cannot delete pods in namespace shop"),
        "{stdout}"
    );
    assert!(fake.deletes().is_empty());
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.starts_with("DELETE") || r.starts_with("PATCH") || r.starts_with("PUT")),
        "{:?}",
        fake.requests()
    );
}
