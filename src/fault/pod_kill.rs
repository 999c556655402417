//! `pod_kill`: delete pods of a Kubernetes workload and measure, from watch events,
//! how its controller replaced them.
//!
//! Selection: a namespace plus a label selector, a field selector and/or pod names
//! (at least one of them: an empty selector never means "every pod of the
//! namespace"). Only Running and Ready pods that are not terminating are candidates
//! unless `include_not_ready`. The mode picks how many: `one`, `all`, `fixed: N` or
//! `percent: P` — P% of the candidates **rounded down, but at least one** (P is in
//! (0, 100]: 0% is refused, it never means one pod), then capped by `max_pods`.
//! The pods are drawn at random with a seed (given, or drawn and written down), so a
//! run can be repeated exactly; seed and chosen pods are in the undo record and the
//! journal. Too few candidates fails the injection (exit 3) with the count found.
//!
//! Measurement, from events, not polling: the pods are listed, a watch is opened
//! from the list's resourceVersion *before* the first delete, and every event is
//! stamped when it arrives. For each deleted pod: when its UID disappeared (its
//! DELETED event), and when its replacement — a pod with a new UID and the same
//! controller, each replacement counted for one deleted pod only, in delete order —
//! was scheduled and became Ready, each in ms since that pod's delete; and for each
//! owning workload, when it was back to its desired number of Ready replicas (since
//! its first delete). Pods not replaced within `recovery_timeout` fail the step and
//! the drill (exit 1): the fault took effect, the system did not recover from it.
//!
//! A delete cannot be undone: the revert does nothing, and the report says that the
//! recovery was the controller's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Preconditions, WatchEvent, WatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Effect, FaultCtx, FaultError, RevertCtx, Reverted, ms_since};
use crate::duration::HumanDuration;
use crate::target::Target;
use crate::target::kubernetes::{self as k8s, Cluster, Permission};

/// Namespaces refused unless `allow_system_namespaces: true`.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Parameters of `pod_kill`. At least one of `label_selector`, `field_selector`, `names`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PodKill {
    /// Namespace of the pods; default: the target's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Label selector, as `kubectl -l` takes it (`app=web,tier!=cache`).
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Field selector, as `kubectl --field-selector` takes it (`spec.nodeName=node-1`).
    #[serde(default)]
    pub field_selector: Option<String>,
    /// Pod names; with a selector, a pod must match both.
    #[serde(default)]
    pub names: Vec<String>,
    /// How many candidates to delete: `one`, `all`, `{ fixed: N }` or `{ percent: P }` (P% rounded down, at least one pod; P in (0, 100]).
    #[serde(default)]
    pub mode: Mode,
    /// Seed of the random choice; default: drawn at run time. Either way it is written in the journal, so a run can be repeated.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Grace period of the delete, in whole seconds (`0s` forces an immediate delete); default: each pod's own `terminationGracePeriodSeconds`.
    #[serde(default)]
    pub grace_period: Option<HumanDuration>,
    /// Never delete more than this many pods, whatever the mode selects.
    #[serde(default)]
    pub max_pods: Option<u32>,
    /// Also pick pods that are not Running and Ready (by default only Running and Ready pods are candidates).
    #[serde(default)]
    pub include_not_ready: bool,
    /// Allow `kube-system`, `kube-public`, `kube-node-lease` and the `protected_namespaces` (refused otherwise).
    #[serde(default)]
    pub allow_system_namespaces: bool,
    /// More namespaces refused unless `allow_system_namespaces: true`.
    #[serde(default)]
    pub protected_namespaces: Vec<String>,
    /// Every deleted pod must be replaced by a Ready pod, and its workload be back to its desired Ready replicas, within this time of the delete; otherwise the step fails.
    #[serde(default = "default_recovery_timeout")]
    pub recovery_timeout: HumanDuration,
}

fn default_recovery_timeout() -> HumanDuration {
    HumanDuration::from_millis(5 * 60 * 1000)
}

/// How many of the candidate pods `pod_kill` deletes.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One pod.
    #[default]
    One,
    /// Every candidate.
    All,
    /// Exactly this many pods (fewer candidates fails the injection).
    Fixed(u32),
    /// This percentage of the candidates, rounded down but at least one pod; in (0, 100].
    Percent(f64),
}

impl Mode {
    fn describe(self) -> String {
        match self {
            Mode::One => "one pod".into(),
            Mode::All => "every pod".into(),
            Mode::Fixed(n) => format!("{n} pod(s)"),
            Mode::Percent(p) => format!("{p}% of the pods (rounded down, at least one)"),
        }
    }
}

/// How many pods `mode` deletes out of `candidates`, before the cap; an error
/// (with the count found) when there are too few.
pub(crate) fn count_for(mode: Mode, candidates: usize) -> Result<usize, String> {
    let need = match mode {
        Mode::One | Mode::All | Mode::Percent(_) => 1,
        Mode::Fixed(n) => n as usize,
    };
    if candidates < need || candidates == 0 {
        return Err(format!(
            "found {candidates} candidate pod(s), expected at least {}",
            need.max(1)
        ));
    }
    Ok(match mode {
        Mode::One => 1,
        Mode::All => candidates,
        Mode::Fixed(n) => n as usize,
        // The small epsilon keeps 100 × 0.07 = 7.000000000000001 from meaning 7.
        Mode::Percent(p) => (((p * candidates as f64) / 100.0 + 1e-9).floor() as usize).max(1),
    })
}

/// `k` of `n` indexes drawn with `seed` (a partial Fisher–Yates shuffle), sorted.
pub(crate) fn choose(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = rng.usize(i..n);
        idx.swap(i, j);
    }
    let mut out = idx[..k.min(n)].to_vec();
    out.sort_unstable();
    out
}

/// A pod as the fault saw it when choosing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// UID of the pod's controller (a ReplicaSet, a StatefulSet, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<String>,
    /// Whether it was Running and Ready (and not terminating).
    #[serde(default)]
    pub ready: bool,
}

/// A workload whose pods are deleted, and how many Ready replicas it wants.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Owner {
    /// UID of the pods' controller.
    pub uid: String,
    /// `Deployment/web`, `StatefulSet/db`, `ReplicaSet/web-5d…` (no Deployment above it).
    pub workload: String,
    /// Its desired replicas (`spec.replicas`), when the controller has them.
    pub desired: Option<i32>,
}

/// The undo record of `pod_kill`: what was chosen and how to measure it. Nothing to
/// undo: a delete is final.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Undo {
    pub target: Target,
    pub namespace: String,
    pub seed: u64,
    /// How many candidates there were.
    pub candidates: usize,
    /// How many the mode selected before `max_pods` capped it, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capped_from: Option<usize>,
    /// The pods to delete, in delete order.
    pub pods: Vec<PodRef>,
    pub owners: Vec<Owner>,
    /// Every pod the watch covers as listed at `resource_version` (the workloads'
    /// Ready counts start from it).
    pub listed: Vec<PodRef>,
    /// resourceVersion of the list: the watch starts there, so no event is missed.
    pub resource_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_s: Option<u32>,
}

impl PodKill {
    fn namespace<'a>(&'a self, cluster: &'a Cluster) -> &'a str {
        self.namespace.as_deref().unwrap_or(&cluster.namespace)
    }

    pub(crate) fn validate(&self, target: &Target) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        if blank(&self.label_selector) && blank(&self.field_selector) && self.names.is_empty() {
            errs.push((
                "with".into(),
                "found no pod selector, expected at least one of `label_selector`, `field_selector`, `names`: an empty selector would pick from every pod of the namespace".into(),
            ));
        }
        if let Some(ns) = &self.namespace
            && let Err(e) = k8s::check_namespace(ns)
        {
            errs.push(("with.namespace".into(), e));
        }
        if let Some(ns) = target.cluster().map(|c| self.namespace(c).to_string())
            && !self.allow_system_namespaces
            && (SYSTEM_NAMESPACES.contains(&ns.as_str()) || self.protected_namespaces.contains(&ns))
        {
            let path = if self.namespace.is_some() {
                "with.namespace"
            } else {
                "target"
            };
            errs.push((
                path.into(),
                format!("found protected namespace `{ns}`, expected an application namespace (set `allow_system_namespaces: true` to drill it anyway)"),
            ));
        }
        match self.mode {
            Mode::Fixed(0) => errs.push((
                "with.mode.fixed".into(),
                "found 0, expected at least 1 pod".into(),
            )),
            Mode::Percent(p) if !(p > 0.0 && p <= 100.0) => errs.push((
                "with.mode.percent".into(),
                format!("found {p}, expected a percentage in (0, 100]: 0% would delete nothing"),
            )),
            _ => {}
        }
        if self.max_pods == Some(0) {
            errs.push((
                "with.max_pods".into(),
                "found 0, expected at least 1".into(),
            ));
        }
        if let Some(g) = self.grace_period
            && g.0.subsec_nanos() != 0
        {
            errs.push((
                "with.grace_period".into(),
                format!("found `{g}`, expected whole seconds (Kubernetes counts grace periods in seconds)"),
            ));
        }
        if self.recovery_timeout.0.is_zero() {
            errs.push((
                "with.recovery_timeout".into(),
                "found `0s`, expected a positive duration".into(),
            ));
        }
        errs
    }

    pub(crate) fn describe(&self) -> String {
        let mut sel = Vec::new();
        if let Some(l) = &self.label_selector {
            sel.push(format!("labels `{l}`"));
        }
        if let Some(f) = &self.field_selector {
            sel.push(format!("fields `{f}`"));
        }
        if !self.names.is_empty() {
            sel.push(format!("names {}", self.names.join(", ")));
        }
        let ns = self
            .namespace
            .as_deref()
            .map_or("the target's namespace".to_string(), |n| {
                format!("namespace {n}")
            });
        let cap = self
            .max_pods
            .map_or(String::new(), |m| format!(", at most {m}"));
        let grace = self
            .grace_period
            .map_or("each pod's own grace period".to_string(), |g| {
                format!("grace period {}s", g.0.as_secs())
            });
        format!(
            "delete {}{cap} of the {}pods matching {} in {ns} ({grace}); expected the controller to replace each with a Ready pod within {}",
            self.mode.describe(),
            if self.include_not_ready {
                ""
            } else {
                "Running and Ready "
            },
            sel.join(" and "),
            self.recovery_timeout
        )
    }

    /// The permissions the fault needs, for the preflight.
    pub(crate) fn permissions(&self, cluster: &Cluster) -> Vec<Permission> {
        let ns = self.namespace(cluster);
        vec![
            Permission::new("list", "", "pods", ns),
            Permission::new("watch", "", "pods", ns),
            Permission::new("delete", "", "pods", ns),
            Permission::new("get", "apps", "replicasets", ns),
            Permission::new("get", "apps", "statefulsets", ns),
        ]
    }

    fn cluster<'a>(&self, target: &'a Target) -> Result<&'a Cluster, FaultError> {
        target.cluster().ok_or_else(|| {
            FaultError::Precondition(format!(
                "pod_kill acts on a kubernetes target, found {}",
                target.describe()
            ))
        })
    }

    /// The pods that match now, with whether each is a candidate (for `plan`).
    pub(crate) async fn matching(
        &self,
        target: &Target,
    ) -> Result<Vec<(PodRef, bool)>, FaultError> {
        let cluster = self.cluster(target)?;
        let client = cluster
            .client()
            .await
            .map_err(|e| FaultError::System(e.to_string()))?;
        let api: Api<Pod> = Api::namespaced(client, self.namespace(cluster));
        let pods = self.list_candidates(&api).await?;
        Ok(pods
            .iter()
            .map(|p| {
                let r = pod_ref(p);
                let ok = self.is_candidate(p);
                (r, ok)
            })
            .collect())
    }

    fn is_candidate(&self, p: &Pod) -> bool {
        !k8s::pod_terminating(p) && (self.include_not_ready || k8s::pod_ready(p))
    }

    /// The pods that match the selectors and names, sorted by name.
    async fn list_candidates(&self, api: &Api<Pod>) -> Result<Vec<Pod>, FaultError> {
        let mut lp = ListParams::default();
        if let Some(l) = self
            .label_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            lp = lp.labels(l);
        }
        if let Some(f) = self
            .field_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            lp = lp.fields(f);
        }
        let list = api.list(&lp).await.map_err(|e| list_error(api, e))?;
        let mut pods: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| {
                self.names.is_empty()
                    || self
                        .names
                        .iter()
                        .any(|n| Some(n) == p.metadata.name.as_ref())
            })
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    pub(crate) async fn prepare(&self, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
        let cluster = self.cluster(ctx.target)?;
        let ns = self.namespace(cluster).to_string();
        let client = cluster
            .client()
            .await
            .map_err(|e| FaultError::System(e.to_string()))?;
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        // What the watch will cover (the label selector only: a replacement has
        // another name, and may not match a field selector), listed first: its
        // resourceVersion is where the watch starts.
        let mut lp = ListParams::default();
        if let Some(l) = self
            .label_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            lp = lp.labels(l);
        }
        let watched = api.list(&lp).await.map_err(|e| list_error(&api, e))?;
        let resource_version = watched
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let matched = self.list_candidates(&api).await?;
        let candidates: Vec<&Pod> = matched.iter().filter(|p| self.is_candidate(p)).collect();
        let what = if self.include_not_ready {
            ""
        } else {
            "Running and Ready "
        };
        let wanted = count_for(self.mode, candidates.len()).map_err(|e| {
            FaultError::Precondition(format!(
                "{e}: {} {what}pod(s) of {} match in namespace {ns} ({} match at all)",
                candidates.len(),
                self.selector_words(),
                matched.len()
            ))
        })?;
        let k = self.max_pods.map_or(wanted, |m| wanted.min(m as usize));
        let seed = self.seed.unwrap_or_else(|| fastrand::u64(..));
        let chosen: Vec<PodRef> = choose(candidates.len(), k, seed)
            .into_iter()
            .map(|i| pod_ref(candidates[i]))
            .collect();
        // A pod without a controller is never replaced: the measurement would only
        // ever time out, and the pod would be gone for good.
        if let Some(bare) = chosen.iter().find(|p| p.owner_uid.is_none()) {
            return Err(FaultError::Precondition(format!(
                "pod {} has no controller that would replace it; pod_kill deletes only pods of a workload (Deployment, StatefulSet, ...)",
                bare.name
            )));
        }
        let mut owners = Vec::new();
        for p in &matched {
            let Some(o) = k8s::controller_of(p) else {
                continue;
            };
            if !chosen
                .iter()
                .any(|c| c.owner_uid.as_deref() == Some(o.uid.as_str()))
                || owners.iter().any(|x: &Owner| x.uid == o.uid)
            {
                continue;
            }
            owners.push(owner(&client, &ns, o).await?);
        }
        Ok(Undo {
            target: ctx.target.clone(),
            namespace: ns,
            seed,
            candidates: candidates.len(),
            capped_from: (k < wanted).then_some(wanted),
            pods: chosen,
            owners,
            listed: watched.items.iter().map(pod_ref).collect(),
            resource_version,
            grace_period_s: self.grace_period.map(|g| g.0.as_secs() as u32),
        })
    }

    fn selector_words(&self) -> String {
        let mut sel = Vec::new();
        if let Some(l) = &self.label_selector {
            sel.push(format!("labels `{l}`"));
        }
        if let Some(f) = &self.field_selector {
            sel.push(format!("fields `{f}`"));
        }
        if !self.names.is_empty() {
            sel.push(format!("names {}", self.names.join(", ")));
        }
        sel.join(" and ")
    }

    pub(crate) async fn apply(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &Undo,
    ) -> Result<Effect, FaultError> {
        let cluster = self.cluster(&undo.target)?;
        let client = cluster
            .client()
            .await
            .map_err(|e| FaultError::System(e.to_string()))?;
        let api: Api<Pod> = Api::namespaced(client, &undo.namespace);
        // The watch is open before the first delete and read by its own task, so
        // every event is stamped when it arrives, deletes or not.
        let mut wp = WatchParams::default().timeout(290);
        if let Some(l) = self
            .label_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            wp = wp.labels(l);
        }
        let first = api.watch(&wp, &undo.resource_version).await.map_err(|e| {
            FaultError::System(format!(
                "cannot watch the pods of namespace {}: {e}",
                undo.namespace
            ))
        })?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (watch_api, mut rv) = (api.clone(), undo.resource_version.clone());
        let reader = tokio::spawn(async move {
            // A watch ends after its timeout (or when the server closes it): it is
            // opened again from the last resourceVersion seen, so no event is lost.
            let mut stream = Box::pin(first);
            loop {
                while let Some(ev) = stream.next().await {
                    if let Ok(
                        WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p),
                    ) = &ev
                        && let Some(v) = &p.metadata.resource_version
                    {
                        rv = v.clone();
                    }
                    let fatal = matches!(ev, Err(_) | Ok(WatchEvent::Error(_)));
                    if tx.send((Instant::now(), ev)).is_err() || fatal {
                        return;
                    }
                }
                match watch_api.watch(&wp, &rv).await {
                    Ok(s) => stream = Box::pin(s),
                    Err(e) => {
                        let _ = tx.send((Instant::now(), Err(e)));
                        return;
                    }
                }
            }
        });
        let _stop_reader = AbortOnDrop(reader);

        let mut tracks: Vec<Track> = Vec::new();
        let mut errors = Vec::new();
        for p in &undo.pods {
            let dp = DeleteParams {
                grace_period_seconds: undo.grace_period_s,
                preconditions: Some(Preconditions {
                    uid: Some(p.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let at = Instant::now();
            let wall = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            match api.delete(&p.name, &dp).await {
                Ok(_) => tracks.push(Track::new(p, at, wall)),
                // Gone already (or replaced under the same name): not ours to count.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                    errors.push(format!("{}: already gone ({})", p.name, s.message));
                }
                Err(e) => errors.push(format!("{}: {e}", p.name)),
            }
        }
        let deleted_after_ms = ms_since(ctx.started);
        if tracks.is_empty() {
            return Err(FaultError::System(format!(
                "no pod could be deleted: {}",
                errors.join("; ")
            )));
        }

        let mut m = Measure::new(undo, tracks);
        let deadline = tokio::time::Instant::now() + self.recovery_timeout.0;
        let mut stop = None;
        while !m.done() {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some((_, Ok(WatchEvent::Error(s)))) => { stop = Some(format!("the watch failed: {s}")); break; }
                    Some((at, Ok(ev))) => m.event(at, ev),
                    Some((_, Err(e))) => { stop = Some(format!("the watch failed: {e}")); break; }
                    None => { stop = Some("the watch ended".into()); break; }
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = ctx.cancel.cancelled() => { stop = Some("the drill is aborting".into()); break; }
            }
        }
        let (measured, rows, workloads, unrecovered) =
            m.report(self.recovery_timeout, stop.as_deref());
        let as_declared = errors.is_empty();
        let effect = Effect {
            declared: self.describe(),
            measured: if errors.is_empty() {
                measured
            } else {
                format!("{measured}; not deleted: {}", errors.join("; "))
            },
            as_declared,
            effective_after_ms: as_declared.then_some(deleted_after_ms),
            details: serde_json::json!({
                "namespace": undo.namespace,
                "seed": undo.seed,
                "candidates": undo.candidates,
                "capped_from": undo.capped_from,
                "chosen": undo.pods.iter().map(|p| &p.name).collect::<Vec<_>>(),
                "grace_period_s": undo.grace_period_s,
                "recovered_by": "controller",
                "pods": rows,
                "workloads": workloads,
            }),
        };
        match unrecovered {
            Some(why) if as_declared => Err(FaultError::Unrecovered {
                effect: Box::new(effect),
                why,
            }),
            _ => Ok(effect),
        }
    }
}

impl Undo {
    /// Nothing to do: a deleted pod stays deleted; its controller replaced it.
    pub(crate) async fn revert(&self, _ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
        Ok(Reverted {
            measured: format!(
                "{} deleted pod(s) cannot be undeleted; recovery was the controller's (see the pod replacement table)",
                self.pods.len()
            ),
            restored_after_ms: None,
            details: serde_json::json!({ "recovered_by": "controller" }),
        })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn list_error(api: &Api<Pod>, e: kube::Error) -> FaultError {
    FaultError::System(format!(
        "cannot list pods in namespace {}: {e}",
        api.namespace().unwrap_or("?")
    ))
}

fn pod_ref(p: &Pod) -> PodRef {
    PodRef {
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        owner_uid: k8s::controller_of(p).map(|o| o.uid.clone()),
        ready: k8s::pod_ready(p),
    }
}

/// The workload behind a pod's controller, and its desired replicas.
async fn owner(
    client: &kube::Client,
    ns: &str,
    o: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Result<Owner, FaultError> {
    let fail =
        |e: kube::Error| FaultError::System(format!("cannot read {} {}: {e}", o.kind, o.name));
    match o.kind.as_str() {
        "ReplicaSet" => {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get(&o.name)
                .await
                .map_err(fail)?;
            let workload = rs
                .metadata
                .owner_references
                .as_ref()
                .and_then(|os| os.iter().find(|x| x.controller == Some(true)))
                .map_or(format!("ReplicaSet/{}", o.name), |d| {
                    format!("{}/{}", d.kind, d.name)
                });
            Ok(Owner {
                uid: o.uid.clone(),
                workload,
                desired: rs.spec.replicas,
            })
        }
        "StatefulSet" => {
            let ss = Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get(&o.name)
                .await
                .map_err(fail)?;
            Ok(Owner {
                uid: o.uid.clone(),
                workload: format!("StatefulSet/{}", o.name),
                desired: ss.spec.replicas,
            })
        }
        // A DaemonSet, a Job, a custom controller: replacement is measured per pod;
        // its desired count is not known here.
        _ => Ok(Owner {
            uid: o.uid.clone(),
            workload: format!("{}/{}", o.kind, o.name),
            desired: None,
        }),
    }
}

/// One deleted pod and what became of it.
struct Track {
    pod: PodRef,
    deleted_at: Instant,
    deleted_wall: String,
    gone_ms: Option<f64>,
    replacement: Option<String>,
    replacement_uid: Option<String>,
    scheduled_ms: Option<f64>,
    ready_ms: Option<f64>,
}

impl Track {
    fn new(pod: &PodRef, at: Instant, wall: String) -> Track {
        Track {
            pod: pod.clone(),
            deleted_at: at,
            deleted_wall: wall,
            gone_ms: None,
            replacement: None,
            replacement_uid: None,
            scheduled_ms: None,
            ready_ms: None,
        }
    }
    fn since(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.deleted_at).as_secs_f64() * 1000.0
    }
}

/// The state the watch events build: the pods seen (by uid) and each deleted
/// pod's track.
struct Measure<'a> {
    undo: &'a Undo,
    tracks: Vec<Track>,
    /// uid → (owner uid, Ready, terminating) of every pod the watch covers.
    pods: HashMap<String, (Option<String>, bool, bool)>,
    /// uids that existed at the list (never a replacement).
    known: BTreeSet<String>,
    /// owner uid → ms since its first delete when it was back to its desired Ready.
    back: BTreeMap<String, f64>,
}

impl<'a> Measure<'a> {
    fn new(undo: &'a Undo, tracks: Vec<Track>) -> Measure<'a> {
        let pods = undo
            .listed
            .iter()
            .map(|p| (p.uid.clone(), (p.owner_uid.clone(), p.ready, false)))
            .collect();
        let known = undo.listed.iter().map(|p| p.uid.clone()).collect();
        let mut m = Measure {
            undo,
            tracks,
            pods,
            known,
            back: BTreeMap::new(),
        };
        // The deleted pods stop counting as Ready at their delete.
        for t in &m.tracks {
            if let Some(p) = m.pods.get_mut(&t.pod.uid) {
                p.2 = true;
            }
        }
        m
    }

    fn event(&mut self, at: Instant, ev: WatchEvent<Pod>) {
        let (pod, deleted) = match ev {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => (p, false),
            WatchEvent::Deleted(p) => (p, true),
            WatchEvent::Bookmark(_) | WatchEvent::Error(_) => return,
        };
        let r = pod_ref(&pod);
        if deleted {
            self.pods.remove(&r.uid);
            if let Some(t) = self.tracks.iter_mut().find(|t| t.pod.uid == r.uid)
                && t.gone_ms.is_none()
            {
                t.gone_ms = Some(t.since(at));
            }
        } else {
            let terminating =
                k8s::pod_terminating(&pod) || self.tracks.iter().any(|t| t.pod.uid == r.uid);
            self.pods.insert(
                r.uid.clone(),
                (r.owner_uid.clone(), k8s::pod_ready(&pod), terminating),
            );
            // A replacement: a new uid with the owner of a deleted pod, counted once,
            // for the earliest-deleted pod of that owner still without one.
            if !self.known.contains(&r.uid) {
                let assigned = self
                    .tracks
                    .iter()
                    .any(|t| t.replacement_uid.as_deref() == Some(&r.uid));
                if !assigned
                    && let Some(t) = self
                        .tracks
                        .iter_mut()
                        .find(|t| t.replacement_uid.is_none() && t.pod.owner_uid == r.owner_uid)
                {
                    t.replacement = Some(r.name.clone());
                    t.replacement_uid = Some(r.uid.clone());
                }
            }
            for t in self.tracks.iter_mut() {
                if t.replacement_uid.as_deref() == Some(r.uid.as_str()) {
                    if t.scheduled_ms.is_none() && k8s::pod_scheduled(&pod) {
                        t.scheduled_ms = Some(t.since(at));
                    }
                    if t.ready_ms.is_none() && k8s::pod_ready(&pod) {
                        t.ready_ms = Some(t.since(at));
                        // A pod Ready at once was scheduled at the latest then.
                        t.scheduled_ms.get_or_insert(t.since(at));
                    }
                }
            }
        }
        for o in &self.undo.owners {
            let Some(desired) = o.desired else { continue };
            if self.back.contains_key(&o.uid) {
                continue;
            }
            let ready = self
                .pods
                .values()
                .filter(|(own, ready, term)| {
                    own.as_deref() == Some(o.uid.as_str()) && *ready && !*term
                })
                .count();
            let replaced = self
                .tracks
                .iter()
                .filter(|t| t.pod.owner_uid.as_deref() == Some(o.uid.as_str()))
                .all(|t| t.ready_ms.is_some());
            if ready as i64 >= i64::from(desired)
                && replaced
                && let Some(first) = self
                    .tracks
                    .iter()
                    .filter(|t| t.pod.owner_uid.as_deref() == Some(o.uid.as_str()))
                    .map(|t| t.deleted_at)
                    .min()
            {
                self.back.insert(
                    o.uid.clone(),
                    at.saturating_duration_since(first).as_secs_f64() * 1000.0,
                );
            }
        }
    }

    fn done(&self) -> bool {
        self.tracks
            .iter()
            .all(|t| t.gone_ms.is_some() && t.ready_ms.is_some())
            && self
                .undo
                .owners
                .iter()
                .filter(|o| o.desired.is_some())
                .all(|o| self.back.contains_key(&o.uid))
    }

    /// The sentence, the per-pod rows, the per-workload rows, and why the
    /// recovery failed (if it did).
    fn report(
        &self,
        timeout: HumanDuration,
        stop: Option<&str>,
    ) -> (
        String,
        Vec<serde_json::Value>,
        Vec<serde_json::Value>,
        Option<String>,
    ) {
        let rows: Vec<serde_json::Value> = self
            .tracks
            .iter()
            .map(|t| {
                serde_json::json!({
                    "pod": t.pod.name, "uid": t.pod.uid, "node": t.pod.node,
                    "deleted_at": t.deleted_wall,
                    "gone_ms": t.gone_ms.map(round1),
                    "replacement": t.replacement,
                    "replacement_uid": t.replacement_uid,
                    "scheduled_ms": t.scheduled_ms.map(round1),
                    "ready_ms": t.ready_ms.map(round1),
                })
            })
            .collect();
        let workloads: Vec<serde_json::Value> = self
            .undo
            .owners
            .iter()
            .map(|o| {
                serde_json::json!({
                    "workload": o.workload, "desired": o.desired,
                    "back_ms": self.back.get(&o.uid).copied().map(round1),
                })
            })
            .collect();
        let names: Vec<&str> = self.tracks.iter().map(|t| t.pod.name.as_str()).collect();
        let mut measured = format!(
            "deleted {} of {} candidate pod(s) (seed {}): {}",
            self.tracks.len(),
            self.undo.candidates,
            self.undo.seed,
            names.join(", ")
        );
        if let Some(c) = self.undo.capped_from {
            measured.push_str(&format!(" (max_pods capped {c})"));
        }
        let ready: Vec<String> = self
            .tracks
            .iter()
            .filter_map(|t| {
                Some(format!(
                    "{} {:.0} ms",
                    t.replacement.as_deref()?,
                    t.ready_ms?
                ))
            })
            .collect();
        if !ready.is_empty() {
            measured.push_str(&format!(
                "; the controller replaced them, Ready after: {}",
                ready.join(", ")
            ));
        }
        for o in &self.undo.owners {
            if let (Some(d), Some(b)) = (o.desired, self.back.get(&o.uid)) {
                measured.push_str(&format!(
                    "; {} back to {d} Ready after {b:.0} ms",
                    o.workload
                ));
            }
        }
        let missing: Vec<String> = self
            .tracks
            .iter()
            .filter(|t| t.ready_ms.is_none() || t.gone_ms.is_none())
            .map(|t| {
                let what = if t.gone_ms.is_none() {
                    "still not gone"
                } else if t.replacement.is_none() {
                    "no replacement"
                } else {
                    "replacement not Ready"
                };
                format!("{} ({what})", t.pod.name)
            })
            .collect();
        let not_back: Vec<String> = self
            .undo
            .owners
            .iter()
            .filter(|o| o.desired.is_some() && !self.back.contains_key(&o.uid))
            .map(|o| {
                format!(
                    "{} not back to {} Ready",
                    o.workload,
                    o.desired.unwrap_or(0)
                )
            })
            .collect();
        let unrecovered = if missing.is_empty() && not_back.is_empty() {
            None
        } else {
            let why = stop.map_or(format!("within the recovery_timeout of {timeout}"), |s| {
                format!("before {s}")
            });
            let mut parts = missing;
            parts.extend(not_back);
            Some(format!("pods not recovered {why}: {}", parts.join(", ")))
        };
        if let Some(u) = &unrecovered {
            measured.push_str(&format!("; {u}"));
        }
        (measured, rows, workloads, unrecovered)
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_mode_and_rounding() {
        assert_eq!(count_for(Mode::One, 5), Ok(1));
        assert_eq!(count_for(Mode::All, 5), Ok(5));
        assert_eq!(count_for(Mode::Fixed(3), 5), Ok(3));
        // Rounded down...
        assert_eq!(count_for(Mode::Percent(50.0), 5), Ok(2));
        assert_eq!(count_for(Mode::Percent(99.0), 10), Ok(9));
        assert_eq!(count_for(Mode::Percent(7.0), 100), Ok(7));
        assert_eq!(count_for(Mode::Percent(100.0), 3), Ok(3));
        // ...but at least one pod.
        assert_eq!(count_for(Mode::Percent(10.0), 3), Ok(1));
        assert_eq!(count_for(Mode::Percent(0.1), 1), Ok(1));
    }

    #[test]
    fn too_few_candidates_names_the_count() {
        assert_eq!(
            count_for(Mode::Fixed(4), 3),
            Err("found 3 candidate pod(s), expected at least 4".into())
        );
        for m in [Mode::One, Mode::All, Mode::Percent(50.0)] {
            assert_eq!(
                count_for(m, 0),
                Err("found 0 candidate pod(s), expected at least 1".into())
            );
        }
    }

    #[test]
    fn choice_is_seeded_and_distinct() {
        let a = choose(10, 4, 42);
        assert_eq!(a, choose(10, 4, 42));
        assert_eq!(a.len(), 4);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|&i| i < 10));
        // Another seed draws another set (for these seeds; checked once).
        let others: BTreeSet<Vec<usize>> = (0..20).map(|s| choose(10, 4, s)).collect();
        assert!(others.len() > 10, "seeds draw different sets: {others:?}");
        assert_eq!(choose(3, 5, 1), vec![0, 1, 2]);
    }

    fn cluster() -> Target {
        Target::Kubernetes(Cluster {
            kubeconfig: None,
            context: None,
            in_cluster: false,
            namespace: "shop".into(),
        })
    }

    /// Through JSON, as the scenario loader decodes `with:` (serde_yaml alone wants
    /// `!fixed 2` tags for enum variants with data).
    fn spec(yaml: &str) -> PodKill {
        let v: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn validation_refuses_empty_selector_zero_percent_and_system_namespaces() {
        let errs = spec("{}").validate(&cluster());
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "with");
        let errs = spec("{ label_selector: '  ' }").validate(&cluster());
        assert_eq!(errs[0].0, "with");
        let errs = spec("{ label_selector: app=web, mode: { percent: 0 } }").validate(&cluster());
        assert_eq!(errs[0].0, "with.mode.percent", "{errs:?}");
        let errs =
            spec("{ label_selector: app=web, mode: { percent: 100.5 } }").validate(&cluster());
        assert_eq!(errs[0].0, "with.mode.percent");
        let errs = spec("{ label_selector: app=web, namespace: kube-system }").validate(&cluster());
        assert_eq!(errs[0].0, "with.namespace");
        assert!(
            errs[0].1.contains("protected namespace `kube-system`"),
            "{errs:?}"
        );
        assert!(
            spec(
                "{ label_selector: app=web, namespace: kube-system, allow_system_namespaces: true }"
            )
            .validate(&cluster())
            .is_empty()
        );
        let errs =
            spec("{ label_selector: app=web, protected_namespaces: [shop] }").validate(&cluster());
        assert_eq!(errs[0].0, "target", "{errs:?}");
        assert!(
            spec("{ names: [web-1], mode: all }")
                .validate(&cluster())
                .is_empty()
        );
        let errs = spec("{ names: [a], grace_period: 1500ms }").validate(&cluster());
        assert_eq!(errs[0].0, "with.grace_period");
    }
}
