//! `kubernetes` probe: a workload's ready and available replicas against a number
//! or its desired count, the pods matching a selector all Ready, restart counts.
//!
//! One observation is one or two API reads from the cluster target (the workload,
//! and/or the pods of the selector). The figures go into `metrics` (`desired`,
//! `ready`, `available`, `pods`, `pods_ready`, `restarts_total`, `restarts_max`)
//! for `expect.metrics`, and a JSON summary into `body` for `expect.json`. The
//! probe's own condition — ready and available at least `min_ready` (default: the
//! desired count), every selected pod Ready (at least one), restarts at most
//! `max_restarts` — failing is reported as the observation's error, so an empty
//! `expect` means "the workload is healthy".

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Observation, ProbeCtx};
use crate::target::kubernetes::{self as k8s, Cluster, WorkloadKind, replicas};

/// Observe a workload and/or the pods of a selector on a `kubernetes` target. At least one of `workload`, `label_selector`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesProbe {
    /// The `kubernetes` target (a name from `targets`).
    pub target: String,
    /// Namespace; default: the target's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// A workload whose ready and available replicas must be at least `min_ready` (default: its desired replicas).
    #[serde(default)]
    pub workload: Option<WorkloadRef>,
    /// Pods matching this label selector must all be Running and Ready (and at least one must match).
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Ready replicas required of `workload`; default: its desired replicas (`spec.replicas`).
    #[serde(default)]
    pub min_ready: Option<u32>,
    /// Fail when a selected pod restarted more than this many times (its containers' restart counts summed).
    #[serde(default)]
    pub max_restarts: Option<u32>,
}

/// A Deployment or StatefulSet by kind and name.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRef {
    /// `deployment` or `stateful_set`.
    pub kind: WorkloadKind,
    /// Name of the workload.
    pub name: String,
}

impl KubernetesProbe {
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.workload.is_none()
            && self
                .label_selector
                .as_deref()
                .is_none_or(|s| s.trim().is_empty())
        {
            errs.push((
                "workload".into(),
                "found neither `workload` nor `label_selector`, expected at least one".into(),
            ));
        }
        if self.max_restarts.is_some() && self.label_selector.is_none() {
            errs.push((
                "max_restarts".into(),
                "found `max_restarts` without `label_selector`, expected a selector for the pods whose restarts count".into(),
            ));
        }
        if let Some(ns) = &self.namespace
            && let Err(e) = k8s::check_namespace(ns)
        {
            errs.push(("namespace".into(), e));
        }
        errs
    }

    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(w) = &self.workload {
            let want = self
                .min_ready
                .map_or("its desired replicas".to_string(), |n| format!("{n}"));
            parts.push(format!("{} {} ready ≥ {want}", w.kind.kind(), w.name));
        }
        if let Some(l) = &self.label_selector {
            parts.push(format!("pods `{l}` all Ready"));
        }
        if let Some(r) = self.max_restarts {
            parts.push(format!("restarts ≤ {r}"));
        }
        format!("kubernetes {}: {}", self.target, parts.join(", "))
    }

    pub(crate) async fn observe(&self, ctx: &ProbeCtx<'_>) -> Observation {
        let start = Instant::now();
        let mut obs = Observation::default();
        let cluster = match ctx.targets.get(&self.target).and_then(|t| t.cluster()) {
            Some(c) => c,
            None => {
                obs.error = Some(format!("`{}` is not a kubernetes target", self.target));
                return obs;
            }
        };
        let result = self.observe_cluster(cluster, &mut obs).await;
        obs.latency = start.elapsed();
        if let Err(e) = result {
            obs.error = Some(e);
        }
        obs
    }

    async fn observe_cluster(
        &self,
        cluster: &Cluster,
        obs: &mut Observation,
    ) -> Result<(), String> {
        let ns = self.namespace.as_deref().unwrap_or(&cluster.namespace);
        let client = cluster.client().await.map_err(|e| e.to_string())?;
        let mut summary = serde_json::Map::new();
        let mut problems = Vec::new();
        if let Some(w) = &self.workload {
            let (desired, ready, available) = replicas(&client, ns, w.kind, &w.name)
                .await
                .map_err(|e| format!("cannot read {} {}: {e}", w.kind.kind(), w.name))?;
            for (k, v) in [
                ("desired", desired),
                ("ready", ready),
                ("available", available),
            ] {
                obs.metrics.insert(k.into(), f64::from(v));
                summary.insert(k.into(), v.into());
            }
            let want = self.min_ready.map_or(desired, |n| n as i32);
            if ready < want || available < want {
                problems.push(format!(
                    "{} {}: {ready} ready, {available} available, expected at least {want}",
                    w.kind.kind(),
                    w.name
                ));
            }
        }
        if let Some(sel) = self
            .label_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let pods = api
                .list(&ListParams::default().labels(sel))
                .await
                .map_err(|e| format!("cannot list pods `{sel}`: {e}"))?
                .items;
            let ready = pods.iter().filter(|p| k8s::pod_ready(p)).count();
            let restarts: Vec<i64> = pods.iter().map(k8s::pod_restarts).collect();
            let max = restarts.iter().copied().max().unwrap_or(0);
            obs.metrics.insert("pods".into(), pods.len() as f64);
            obs.metrics.insert("pods_ready".into(), ready as f64);
            obs.metrics
                .insert("restarts_total".into(), restarts.iter().sum::<i64>() as f64);
            obs.metrics.insert("restarts_max".into(), max as f64);
            summary.insert(
                "pods".into(),
                pods.iter()
                    .map(|p| {
                        serde_json::json!({
                            "name": p.metadata.name, "ready": k8s::pod_ready(p),
                            "restarts": k8s::pod_restarts(p),
                        })
                    })
                    .collect(),
            );
            if pods.is_empty() {
                problems.push(format!("no pod matches `{sel}`"));
            } else if ready < pods.len() {
                problems.push(format!("{ready} of {} pods `{sel}` Ready", pods.len()));
            }
            if let Some(m) = self.max_restarts
                && max > i64::from(m)
            {
                problems.push(format!("a pod restarted {max} times, expected at most {m}"));
            }
        }
        obs.body = Some(serde_json::Value::Object(summary).to_string());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
