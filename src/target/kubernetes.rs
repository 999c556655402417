//! The `kubernetes` target: a cluster reached through its API server (`kube`).
//!
//! A cluster is a target but not a shell host: it runs no program, lists no
//! process and has no network of its own on this machine, so those methods of
//! [`super::Target`] fail with [`super::TargetError::Unsupported`], and validation
//! refuses faults and probes that need a host on it. What acts on a cluster (the
//! `pod_kill` and `scale` faults, the `kubernetes` probe) gets a client from
//! [`Cluster::client`].
//!
//! The client is built from a kubeconfig (a path, or `KUBECONFIG` /
//! `~/.kube/config` when none is given) and a context, or from the pod's service
//! account when the engine runs inside the cluster (`in_cluster: true`, the
//! CronJob of `deploy/kubernetes/`). Nothing of it is kept in the ledger but how
//! to build it again: `firedrill recover` on another machine reaches the same
//! cluster through its own kubeconfig of the same context.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How to reach a Kubernetes cluster.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// Path of the kubeconfig file (`~/` is the home directory); default: `KUBECONFIG`, else `~/.kube/config`. Not with `in_cluster`.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// Context of the kubeconfig to use; default: its current context.
    #[serde(default)]
    pub context: Option<String>,
    /// Use the service account of the pod the engine runs in (a CronJob in the cluster) instead of a kubeconfig.
    #[serde(default)]
    pub in_cluster: bool,
    /// Namespace that faults and probes on this target use unless they name one.
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

fn default_namespace() -> String {
    "default".into()
}

/// A resolved cluster target, as written into ledgers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default)]
    pub in_cluster: bool,
    pub namespace: String,
}

/// Why no client could be made for a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the kubeconfig of {target}: {source}")]
    Kubeconfig {
        target: String,
        source: kube::config::KubeconfigError,
    },
    #[error("cannot use the in-cluster service account of {target}: {source}")]
    InCluster {
        target: String,
        source: kube::config::InClusterError,
    },
    #[error("cannot make a client for {target}: {source}")]
    Client { target: String, source: kube::Error },
}

impl KubernetesSpec {
    /// Static checks: `(path relative to the target's entry, message)`.
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.in_cluster && self.kubeconfig.is_some() {
            errs.push((
                "kubernetes.in_cluster".into(),
                "found both `in_cluster: true` and `kubeconfig`, expected one of them".into(),
            ));
        }
        if let Err(e) = check_namespace(&self.namespace) {
            errs.push(("kubernetes.namespace".into(), e));
        }
        errs
    }

    pub(crate) fn resolve(&self) -> Cluster {
        Cluster {
            // Absolute in the ledger: `recover` may run from another directory.
            kubeconfig: self.kubeconfig.as_ref().map(|p| {
                if p.starts_with("~/") {
                    p.clone()
                } else {
                    std::path::absolute(p).map_or_else(|_| p.clone(), |a| a.display().to_string())
                }
            }),
            context: self.context.clone(),
            in_cluster: self.in_cluster,
            namespace: self.namespace.clone(),
        }
    }
}

/// A namespace name is a DNS label: 1 to 63 lowercase letters, digits or `-`,
/// starting and ending with a letter or digit.
pub(crate) fn check_namespace(ns: &str) -> Result<(), String> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "found namespace `{ns}`, expected a DNS label: 1 to 63 lowercase letters, digits or `-`, starting and ending with a letter or digit"
        ))
    }
}

impl Cluster {
    /// `kubernetes:CONTEXT/NAMESPACE` (`in-cluster` or `current` for the context).
    pub(crate) fn describe(&self) -> String {
        let ctx = if self.in_cluster {
            "in-cluster"
        } else {
            self.context.as_deref().unwrap_or("current-context")
        };
        format!("kubernetes:{ctx}/{}", self.namespace)
    }

    /// One lock per cluster context and namespace.
    pub(crate) fn lock_key(&self) -> String {
        format!(
            "kubernetes-{}",
            self.describe().trim_start_matches("kubernetes:")
        )
    }

    /// A client for the cluster, built afresh (cheap next to a drill).
    pub async fn client(&self) -> Result<kube::Client, ClientError> {
        let target = self.describe();
        let config = if self.in_cluster {
            kube::Config::incluster().map_err(|source| ClientError::InCluster {
                target: target.clone(),
                source,
            })?
        } else {
            let options = kube::config::KubeConfigOptions {
                context: self.context.clone(),
                cluster: None,
                user: None,
            };
            let r = match &self.kubeconfig {
                Some(path) => match kube::config::Kubeconfig::read_from(expand_home(path)) {
                    Ok(kc) => kube::Config::from_custom_kubeconfig(kc, &options).await,
                    Err(e) => Err(e),
                },
                None => kube::Config::from_kubeconfig(&options).await,
            };
            r.map_err(|source| ClientError::Kubeconfig {
                target: target.clone(),
                source,
            })?
        };
        kube::Client::try_from(config).map_err(|source| ClientError::Client { target, source })
    }
}

/// `~/x` as `$HOME/x`, as a shell would have written it (kubeconfig paths are
/// usually given that way); anything else as is.
fn expand_home(path: &str) -> std::path::PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => std::path::Path::new(&home).join(rest),
        _ => std::path::PathBuf::from(path),
    }
}

/// Whether a pod is Running, Ready and not terminating.
pub(crate) fn pod_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Running");
    running && pod_condition(pod, "Ready") && !pod_terminating(pod)
}

/// Whether the pod's condition `kind` is `True`.
pub(crate) fn pod_condition(pod: &k8s_openapi::api::core::v1::Pod, kind: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// Whether the pod is being deleted.
pub(crate) fn pod_terminating(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether the pod has been placed on a node.
pub(crate) fn pod_scheduled(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
        || pod_condition(pod, "PodScheduled")
}

/// The pod's controller (the owner reference marked `controller`).
pub(crate) fn controller_of(
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// The total restarts of a pod's containers.
pub(crate) fn pod_restarts(pod: &k8s_openapi::api::core::v1::Pod) -> i64 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| i64::from(c.restart_count)).sum())
}

/// One permission a fault needs: `verb` on `group`/`resource`[/`subresource`] in
/// `namespace`, as SelfSubjectAccessReview asks it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Permission {
    pub verb: String,
    /// API group: empty for the core group (pods), `apps` for workloads.
    pub group: String,
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    pub namespace: String,
}

impl Permission {
    pub fn new(verb: &str, group: &str, resource: &str, namespace: &str) -> Permission {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Permission {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
        }
    }

    /// `delete pods in namespace shop`, `patch apps/deployments/scale in namespace shop`.
    pub fn describe(&self) -> String {
        let mut r = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.group, self.resource)
        };
        if !self.subresource.is_empty() {
            r = format!("{r}/{}", self.subresource);
        }
        format!("{} {r} in namespace {}", self.verb, self.namespace)
    }

    /// Asks the API server whether the identity of `client` has this permission.
    pub async fn check(&self, client: &kube::Client) -> Result<bool, kube::Error> {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(self.verb.clone()),
                    group: Some(self.group.clone()),
                    resource: Some(self.resource.clone()),
                    subresource: (!self.subresource.is_empty()).then(|| self.subresource.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: kube::Api<SelfSubjectAccessReview> = kube::Api::all(client.clone());
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

/// Checks every permission in `needed` on `cluster`; the first missing one (or the
/// failure to ask) is the error, naming verb, resource and namespace.
pub async fn preflight(cluster: &Cluster, needed: &[Permission]) -> Result<(), String> {
    let client = cluster.client().await.map_err(|e| e.to_string())?;
    for p in needed {
        match p.check(&client).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "permission missing on {}: cannot {} (SelfSubjectAccessReview denied it); nothing was injected",
                    cluster.describe(),
                    p.describe()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "cannot check the permission to {} on {}: {e}",
                    p.describe(),
                    cluster.describe()
                ));
            }
        }
    }
    Ok(())
}

/// The workload kinds the `scale` fault and the `kubernetes` probe act on.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// An `apps/v1` Deployment.
    Deployment,
    /// An `apps/v1` StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }
    pub(crate) fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
        }
    }
}

/// Desired, ready and available replicas of a workload now.
pub async fn replicas(
    client: &kube::Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
) -> Result<(i32, i32, i32), kube::Error> {
    Ok(match kind {
        WorkloadKind::Deployment => {
            let d =
                kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
                    .get(name)
                    .await?;
            let s = d.status.unwrap_or_default();
            (
                d.spec.replicas.unwrap_or(1),
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0),
            )
        }
        WorkloadKind::StatefulSet => {
            let d = kube::Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(
                client.clone(),
                ns,
            )
            .get(name)
            .await?;
            let s = d.status.unwrap_or_default();
            (
                d.spec.replicas.unwrap_or(1),
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_is_expanded_in_kubeconfig_paths_only_at_the_start() {
        let home = std::env::var("HOME").unwrap();
        assert_eq!(
            expand_home("~/.kube/config"),
            std::path::Path::new(&home).join(".kube/config")
        );
        assert_eq!(
            expand_home("/etc/kube/config"),
            std::path::PathBuf::from("/etc/kube/config")
        );
        assert_eq!(expand_home("a/~/b"), std::path::PathBuf::from("a/~/b"));
    }

    #[test]
    fn namespaces_are_dns_labels_and_permissions_read_as_kubectl_would() {
        assert!(check_namespace("shop-1").is_ok());
        for bad in ["", "Shop", "-shop", "shop-", "a_b", &"x".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
        let p = Permission::new("patch", "apps", "deployments/scale", "shop");
        assert_eq!(p.subresource, "scale");
        assert_eq!(
            p.describe(),
            "patch apps/deployments/scale in namespace shop"
        );
        assert_eq!(
            Permission::new("delete", "", "pods", "shop").describe(),
            "delete pods in namespace shop"
        );
    }

    #[test]
    fn a_cluster_describes_itself_by_context_and_namespace() {
        let mut c = KubernetesSpec {
            kubeconfig: None,
            context: Some("prod".into()),
            in_cluster: false,
            namespace: "shop".into(),
        };
        assert_eq!(c.resolve().describe(), "kubernetes:prod/shop");
        assert!(c.validate().is_empty());
        c.in_cluster = true;
        c.kubeconfig = Some("x".into());
        let errs = c.validate();
        assert_eq!(errs[0].0, "kubernetes.in_cluster");
    }
}
