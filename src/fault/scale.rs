//! `scale`: set a Deployment or StatefulSet to N replicas (the "zone down" drill),
//! and put it back.
//!
//! The original replica count is in the undo record (the ledger) and also on the
//! object itself, as the annotation [`ANNOTATION`] (with the run id in
//! [`RUN_ANNOTATION`]), written *before* the replicas change. So the revert —
//! from the run, or `firedrill recover` — restores it, and an operator on another
//! machine without the ledger can read it back with `kubectl` (README). The revert
//! sets the replicas back through the `scale` subresource, removes both
//! annotations, and is idempotent.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Effect, FaultCtx, FaultError, RevertCtx, Reverted, ms_since};
use crate::duration::HumanDuration;
use crate::target::Target;
pub use crate::target::kubernetes::WorkloadKind;
use crate::target::kubernetes::{self as k8s, Cluster, Permission, replicas};

/// The annotation that holds the replica count to restore.
pub const ANNOTATION: &str = "firedrill.dev/original-replicas";
/// The annotation that names the run that scaled the workload.
pub const RUN_ANNOTATION: &str = "firedrill.dev/scaled-by-run";

/// Parameters of `scale`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    /// Kind of the workload.
    pub workload: WorkloadKind,
    /// Name of the workload.
    pub name: String,
    /// Namespace of the workload; default: the target's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Replicas to set (0 takes the workload down).
    pub replicas: u32,
    /// How long to wait for the workload to reach the new count (ready replicas at most `replicas` when scaling down, at least when scaling up) before declaring the fault not effective.
    #[serde(default = "default_verify")]
    pub verify_timeout: HumanDuration,
}

fn default_verify() -> HumanDuration {
    HumanDuration::from_millis(60_000)
}

/// The undo record of `scale`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Undo {
    pub target: Target,
    pub namespace: String,
    pub workload: WorkloadKind,
    pub name: String,
    /// `spec.replicas` before the fault: what the revert restores.
    pub original: i32,
    /// What the fault set.
    pub replicas: i32,
    /// Tag on the dead-man watcher's command line (`firedrill __deadman --tag …`),
    /// so any process can find and end it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadman_tag: Option<String>,
}

/// Merge-patches `body` into the workload (`patch_scale` for `/scale`).
async fn patch(
    client: &kube::Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    scale: bool,
    body: serde_json::Value,
) -> Result<(), kube::Error> {
    let pp = PatchParams::default();
    let p = Patch::Merge(&body);
    match (kind, scale) {
        (WorkloadKind::Deployment, false) => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(name, &pp, &p)
            .await
            .map(drop),
        (WorkloadKind::Deployment, true) => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch_scale(name, &pp, &p)
            .await
            .map(drop),
        (WorkloadKind::StatefulSet, false) => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(name, &pp, &p)
            .await
            .map(drop),
        (WorkloadKind::StatefulSet, true) => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch_scale(name, &pp, &p)
            .await
            .map(drop),
    }
}

/// Polls until `ok(ready)` holds or `timeout`: ms it took, or the last count seen.
async fn wait_ready(
    client: &kube::Client,
    u: &Undo,
    timeout: Duration,
    ok: impl Fn(i32) -> bool,
) -> Result<f64, i32> {
    let start = Instant::now();
    let mut last = -1;
    loop {
        if let Ok((_, ready, _)) = replicas(client, &u.namespace, u.workload, &u.name).await {
            last = ready;
            if ok(ready) {
                return Ok(ms_since(start));
            }
        }
        if start.elapsed() >= timeout {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cluster(target: &Target) -> Result<&Cluster, FaultError> {
    target.cluster().ok_or_else(|| {
        FaultError::Precondition(format!(
            "scale acts on a kubernetes target, found {}",
            target.describe()
        ))
    })
}

async fn client(target: &Target) -> Result<kube::Client, FaultError> {
    cluster(target)?
        .client()
        .await
        .map_err(|e| FaultError::System(e.to_string()))
}

impl Scale {
    fn namespace<'a>(&'a self, cluster: &'a Cluster) -> &'a str {
        self.namespace.as_deref().unwrap_or(&cluster.namespace)
    }

    pub(crate) fn validate(&self, _target: &Target) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.name.trim().is_empty() {
            errs.push((
                "with.name".into(),
                "found an empty name, expected the name of the workload".into(),
            ));
        }
        if let Some(ns) = &self.namespace
            && let Err(e) = k8s::check_namespace(ns)
        {
            errs.push(("with.namespace".into(), e));
        }
        errs
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "scale {} {} to {} replica(s); expected at most {} ready within {} (restored on revert)",
            self.workload.kind(),
            self.name,
            self.replicas,
            self.replicas,
            self.verify_timeout
        )
    }

    pub(crate) fn permissions(&self, cluster: &Cluster) -> Vec<Permission> {
        let ns = self.namespace(cluster);
        let r = self.workload.plural();
        vec![
            Permission::new("get", "apps", r, ns),
            Permission::new("patch", "apps", r, ns),
            Permission::new("get", "apps", &format!("{r}/scale"), ns),
            Permission::new("patch", "apps", &format!("{r}/scale"), ns),
        ]
    }

    pub(crate) async fn prepare(&self, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
        let c = cluster(ctx.target)?;
        let ns = self.namespace(c).to_string();
        let client = client(ctx.target).await?;
        let (original, _, _) = replicas(&client, &ns, self.workload, &self.name)
            .await
            .map_err(|e| {
                FaultError::Precondition(format!(
                    "cannot read {} {} in namespace {ns}: {e}",
                    self.workload.kind(),
                    self.name
                ))
            })?;
        Ok(Undo {
            target: ctx.target.clone(),
            namespace: ns,
            workload: self.workload,
            name: self.name.clone(),
            original,
            replicas: self.replicas as i32,
            deadman_tag: Some(format!(
                "{}-scale-{}",
                ctx.run_id,
                super::step_tag(ctx.step)
            )),
        })
    }

    pub(crate) async fn apply(&self, ctx: &FaultCtx<'_>, u: &Undo) -> Result<Effect, FaultError> {
        let client = client(&u.target).await?;
        let sys = |what: &str, e: kube::Error| {
            FaultError::System(format!(
                "cannot {what} {} {}: {e}",
                u.workload.kind(),
                u.name
            ))
        };
        // The dead-man first: from here on the workload comes back after the ttl
        // even if the engine dies (and the ledger is not replayed).
        let deadman = match &u.deadman_tag {
            Some(tag) => Some(spawn_deadman(tag, ctx.ttl, u, ctx.runtime)?),
            None => None,
        };
        // The object carries its own way back before it changes.
        patch(
            &client,
            &u.namespace,
            u.workload,
            &u.name,
            false,
            serde_json::json!({ "metadata": { "annotations": {
                ANNOTATION: u.original.to_string(),
                RUN_ANNOTATION: ctx.run_id,
            } } }),
        )
        .await
        .map_err(|e| sys("annotate", e))?;
        patch(
            &client,
            &u.namespace,
            u.workload,
            &u.name,
            true,
            serde_json::json!({ "spec": { "replicas": u.replicas } }),
        )
        .await
        .map_err(|e| sys("scale", e))?;
        let to = u.replicas;
        let seen = wait_ready(&client, u, self.verify_timeout.0, |r| r <= to).await;
        let (measured, as_declared) = match seen {
            Ok(ms) => (
                format!(
                    "{} {} scaled from {} to {to} replica(s); {to} or fewer ready after {ms:.0} ms",
                    u.workload.kind(),
                    u.name,
                    u.original
                ),
                true,
            ),
            Err(last) => (
                format!(
                    "{} {} set to {to} replica(s) but still {last} ready after {}",
                    u.workload.kind(),
                    u.name,
                    self.verify_timeout
                ),
                false,
            ),
        };
        Ok(Effect {
            declared: self.describe(),
            measured,
            as_declared,
            effective_after_ms: as_declared.then(|| ms_since(ctx.started)),
            details: serde_json::json!({
                "namespace": u.namespace, "workload": format!("{}/{}", u.workload.kind(), u.name),
                "original_replicas": u.original, "replicas": u.replicas,
                "annotation": ANNOTATION,
                "deadman_pid": deadman,
                "deadman_ttl_ms": ctx.ttl.as_millis() as u64,
            }),
        })
    }
}

impl Undo {
    /// Sets the replicas back and removes the annotations, and ends the dead-man
    /// watcher; idempotent.
    pub(crate) async fn revert(&self, ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
        if let Some(tag) = &self.deadman_tag {
            super::process_kill::end_deadman(tag, ctx.runtime).await;
        }
        let client = client(&self.target).await?;
        let sys = |what: &str, e: kube::Error| {
            FaultError::System(format!(
                "cannot {what} {} {} in namespace {}: {e}",
                self.workload.kind(),
                self.name,
                self.namespace
            ))
        };
        let start = Instant::now();
        let back = patch(
            &client,
            &self.namespace,
            self.workload,
            &self.name,
            true,
            serde_json::json!({ "spec": { "replicas": self.original } }),
        )
        .await;
        match back {
            Ok(()) => {}
            // Deleted meanwhile: nothing is left to restore (as a namespace that is gone).
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Ok(Reverted {
                    measured: format!(
                        "{} {} no longer exists in namespace {}: nothing to restore",
                        self.workload.kind(),
                        self.name,
                        self.namespace
                    ),
                    restored_after_ms: None,
                    details: serde_json::json!({ "gone": true }),
                });
            }
            Err(e) => return Err(sys("scale back", e)),
        }
        patch(
            &client,
            &self.namespace,
            self.workload,
            &self.name,
            false,
            serde_json::json!({ "metadata": { "annotations": {
                ANNOTATION: null, RUN_ANNOTATION: null,
            } } }),
        )
        .await
        .map_err(|e| sys("remove the annotations of", e))?;
        let want = self.original;
        let (measured, restored_after_ms) = if ctx.hurry {
            (format!("replicas set back to {want} (not waiting)"), None)
        } else {
            match wait_ready(&client, self, Duration::from_secs(120), |r| r >= want).await {
                Ok(_) => (
                    format!("replicas set back to {want}; {want} ready"),
                    Some(ms_since(start)),
                ),
                Err(last) => (
                    format!("replicas set back to {want}; only {last} ready after 120 s"),
                    None,
                ),
            }
        };
        Ok(Reverted {
            measured,
            restored_after_ms,
            details: serde_json::json!({ "replicas": want }),
        })
    }
}

/// Starts the dead-man watcher: a detached `firedrill __deadman` in its own session
/// (and, where it can, outside the engine's cgroup) that reverts `undo` when the ttl
/// runs out, unless a revert ends it first. Its pid.
fn spawn_deadman(
    tag: &str,
    ttl: Duration,
    undo: &Undo,
    runtime: &crate::rt::Runtime,
) -> Result<u32, FaultError> {
    use std::os::unix::process::CommandExt;
    let exe = crate::rt::self_exe().map_err(|e| {
        FaultError::System(format!(
            "cannot find the firedrill binary for the dead-man watcher: {e}"
        ))
    })?;
    // The record holds no secret (a kubeconfig path and context, not its tokens).
    let json = serde_json::to_string(undo).map_err(|e| FaultError::System(e.to_string()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__deadman")
        .arg("--tag")
        .arg(tag)
        .arg("--ttl-ms")
        .arg(ttl.as_millis().to_string())
        .arg("--scale-undo")
        .arg(json)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = cmd
        .spawn()
        .map_err(|e| FaultError::System(format!("cannot start the dead-man watcher: {e}")))?;
    let pid = child.id();
    runtime.adopt(child);
    let placement = crate::target::cgroup::move_out_of_engine_cgroup(pid);
    tracing::info!(pid, tag, "scale dead-man watcher {}", placement.describe());
    Ok(pid)
}

/// Body of `firedrill __deadman --scale-undo JSON`: sleep for the ttl, then put the
/// replicas back as a revert would (without waiting for them to be ready). Exit code
/// 0 when restored, 1 when it could not be.
pub fn deadman_main(ttl: Duration, undo_json: &str) -> i32 {
    std::thread::sleep(ttl);
    let Ok(mut undo) = serde_json::from_str::<Undo>(undo_json) else {
        return 1;
    };
    // Not itself: ending its own watcher would end this very process.
    undo.deadman_tag = None;
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 1;
    };
    crate::install_crypto_provider();
    let ctx = RevertCtx {
        runtime: None,
        hurry: true,
    };
    match rt.block_on(undo.revert(&ctx)) {
        Ok(_) => 0,
        Err(e) => {
            tracing::warn!("scale dead-man could not restore the replicas: {e}");
            1
        }
    }
}
