//! The Kubernetes end-to-end drills against a real cluster (kind, k3d, ...):
//! `#[ignore]`d, enabled by `FIREDRILL_TEST_KUBECONFIG` naming a kubeconfig whose
//! current context may be used. Each test makes a namespace `firedrill-e2e-<n>` with
//! a Deployment `web` of 3 pause pods, runs `firedrill` against it, and deletes the
//! namespace. See docs/kubernetes.md for how to start a cluster.
//!
//! `cargo test --test integration kubernetes_real:: -- --ignored --test-threads=1`

use crate::common;

use std::time::Duration;

use common::*;
use firedrill::model::Status;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const VAR: &str = "FIREDRILL_TEST_KUBECONFIG";

fn kubeconfig() -> String {
    std::env::var(VAR).unwrap_or_else(|_| panic!("{VAR} must name a kubeconfig for these tests"))
}

/// A namespace with Deployment `web` (3 pause pods, all Ready); deleted on drop.
struct Lab {
    ns: String,
    client: kube::Client,
    rt: tokio::runtime::Runtime,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let ns = format!("firedrill-e2e-{tag}");
        let client = rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(kubeconfig()).unwrap();
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            kube::Client::try_from(cfg).unwrap()
        });
        let lab = Lab { ns, client, rt };
        lab.rt.block_on(async {
            let nss: Api<Namespace> = Api::all(lab.client.clone());
            let ns: Namespace = serde_json::from_value(serde_json::json!({
                "metadata": { "name": lab.ns }
            }))
            .unwrap();
            nss.create(&PostParams::default(), &ns).await.unwrap();
            let d: Deployment = serde_json::from_value(serde_json::json!({
                "metadata": { "name": "web" },
                "spec": {
                    "replicas": 3,
                    "selector": { "matchLabels": { "app": "web" } },
                    "template": {
                        "metadata": { "labels": { "app": "web" } },
                        "spec": {
                            "terminationGracePeriodSeconds": 0,
                            "containers": [{ "name": "pause", "image": "registry.k8s.io/pause:3.9" }]
                        }
                    }
                }
            }))
            .unwrap();
            Api::<Deployment>::namespaced(lab.client.clone(), &lab.ns)
                .create(&PostParams::default(), &d)
                .await
                .unwrap();
        });
        assert!(
            lab.wait_ready(3, Duration::from_secs(180)),
            "web never got 3 Ready pods"
        );
        lab
    }

    fn ready(&self) -> usize {
        self.rt.block_on(async {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
            pods.list(&ListParams::default().labels("app=web"))
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|p| {
                            p.metadata.deletion_timestamp.is_none()
                                && p.status
                                    .as_ref()
                                    .and_then(|s| s.conditions.as_ref())
                                    .is_some_and(|c| {
                                        c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                    })
                        })
                        .count()
                })
                .unwrap_or(0)
        })
    }

    fn wait_ready(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.ready() == n)
    }

    fn scenario(&self, faults: &str) -> String {
        format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: k8s-real }}
targets:
  k: {{ kubernetes: {{ kubeconfig: "{}", namespace: {} }} }}
prechecks:
  - name: web healthy
    probe: {{ kubernetes: {{ target: k, workload: {{ kind: deployment, name: web }}, label_selector: app=web }} }}
    within: 60s
faults:
{faults}
"#,
            kubeconfig(),
            self.ns
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let _ = self
            .rt
            .block_on(nss.delete(&self.ns, &DeleteParams::default()));
    }
}

#[test]
#[ignore = "needs a real cluster: FIREDRILL_TEST_KUBECONFIG"]
fn real_pod_kill_drill_measures_replacement() {
    let lab = Lab::new("kill");
    let dir = tempfile::tempdir().unwrap();
    let scen = write_scenario(
        dir.path(),
        &lab.scenario(
            "  - name: kill one
    kind: pod_kill
    target: k
    with: { label_selector: app=web, mode: { fixed: 2 }, grace_period: 0s, recovery_timeout: 3m }",
        ),
    );
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let j = journal(&reports);
    assert_eq!(j.outcome.status, Status::Passed);
    let step = j.steps.iter().find(|s| s.name == "kill one").unwrap();
    let d = &step
        .fault
        .as_ref()
        .unwrap()
        .effect
        .as_ref()
        .unwrap()
        .details;
    for r in d["pods"].as_array().unwrap() {
        let gone = r["gone_ms"].as_f64().unwrap();
        let sched = r["scheduled_ms"].as_f64().unwrap();
        let ready = r["ready_ms"].as_f64().unwrap();
        assert!(sched <= ready, "{r}");
        assert!(gone >= 0.0, "{r}");
    }
    assert_eq!(d["workloads"][0]["workload"], "Deployment/web");
    assert!(d["workloads"][0]["back_ms"].as_f64().is_some());
    assert!(lab.wait_ready(3, Duration::from_secs(60)));
}

#[test]
#[ignore = "needs a real cluster: FIREDRILL_TEST_KUBECONFIG"]
fn real_scale_is_reverted_by_recover_after_sigkill() {
    let lab = Lab::new("scale");
    let dir = tempfile::tempdir().unwrap();
    let scen = write_scenario(
        dir.path(),
        &lab.scenario(
            "  - name: zone down
    kind: scale
    target: k
    with: { workload: deployment, name: web, replicas: 0 }
    ramp_up: 5m",
        ),
    );
    let state = dir.path().join("state");
    let mut engine = spawn_drill(&scen, "k8sreal1", &state, &dir.path().join("reports"));
    assert!(lab.wait_ready(0, Duration::from_secs(120)), "scaled to 0");
    engine.kill().unwrap();
    engine.wait().unwrap();
    recover_all(&state);
    assert!(lab.wait_ready(3, Duration::from_secs(180)), "back to 3");
    let d = lab
        .rt
        .block_on(Api::<Deployment>::namespaced(lab.client.clone(), &lab.ns).get("web"))
        .unwrap();
    let ann = d.metadata.annotations.unwrap_or_default();
    assert!(
        !ann.contains_key("firedrill.dev/original-replicas"),
        "{ann:?}"
    );
}

#[test]
#[ignore = "needs a real cluster: FIREDRILL_TEST_KUBECONFIG"]
fn real_unrecovered_pods_fail_the_drill() {
    let lab = Lab::new("slow");
    let dir = tempfile::tempdir().unwrap();
    // A pause pod is never Ready within 1 ms of its delete.
    let scen = write_scenario(
        dir.path(),
        &lab.scenario(
            "  - name: kill all
    kind: pod_kill
    target: k
    with: { label_selector: app=web, mode: all, grace_period: 0s, recovery_timeout: 1ms }",
        ),
    );
    let reports = dir.path().join("reports");
    let out = run_cmd(&scen, &dir.path().join("state"), &reports)
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert_eq!(journal(&reports).outcome.status, Status::Failed);
}
