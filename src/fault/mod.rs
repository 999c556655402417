//! Faults: the closed set of fault kinds, and how each is injected and reverted.
//!
//! Injection is split in two so that the engine, not each fault, keeps the first
//! promise ("nothing is left behind"):
//! 1. [`FaultSpec::prepare`] resolves everything the fault will touch (pids, table
//!    names, addresses) and returns the [`Undo`] record, without side effects;
//! 2. the engine appends that record to the ledger and fsyncs it;
//! 3. [`FaultSpec::apply`] takes effect and measures that it did.
//!
//! Reverting an [`Undo`] is idempotent, and works from a fresh process
//! (`firedrill recover`) as well as from the run that injected it.
//!
//! A new fault kind is one new file, one variant in [`FaultSpec`] and one in [`Undo`]:
//! the compiler points at every `match` that needs an arm.

pub(crate) mod command;
pub(crate) mod group;
pub(crate) mod http_fault;
pub(crate) mod latency;
pub(crate) mod network;
pub(crate) mod network_partition;
pub(crate) mod network_rate_limit;
pub(crate) mod pod_kill;
pub(crate) mod process_kill;
pub(crate) mod proxy_placement;
pub(crate) mod proxy_redirect;
pub(crate) mod scale;

use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::target::Target;
// The network kinds' validate/describe/prepare/apply are their shared skeleton's.
use network::NetworkFault;

/// The fault kinds, selected by `kind:`; the parameters are under `with:`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "kind", content = "with", rename_all = "snake_case")]
pub enum FaultSpec {
    /// Kill, terminate or freeze (`STOP`, undone by `CONT`) processes of the target, with their descendants or as a whole cgroup.
    ProcessKill(process_kill::ProcessKill),
    /// Delay traffic (fixed + jitter, per direction, per chunk or per HTTP request) through the built-in chaos proxy.
    Latency(latency::Latency),
    /// HTTP/1.1 faults through the built-in chaos proxy: canned vendor errors (WeCom 45009/42001/-1, 429), rate limits, resets, delays.
    HttpFault(http_fault::HttpFault),
    /// Block traffic between the target and some destinations (nftables, expires with the ttl).
    NetworkPartition(network_partition::NetworkPartition),
    /// Cap new connections or packets per second to some destinations (nftables `limit`, expires with the ttl).
    NetworkRateLimit(network_rate_limit::NetworkRateLimit),
    /// Delete pods of a Kubernetes workload (seeded random choice) and measure, from watch events, how its controller replaced them.
    PodKill(pod_kill::PodKill),
    /// Set a Kubernetes Deployment or StatefulSet to N replicas; restored on revert (also from the annotation it leaves on the object).
    Scale(scale::Scale),
    /// Any fault as a pair of shell commands on any target (local, netns, ssh): `apply`, and `revert` (in the ledger before `apply` runs, armed on the host as a dead-man at the ttl).
    Command(command::CommandFault),
}

/// Why a fault could not be injected or reverted.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// Nothing matched, bad parameters found only at run time, unsupported target.
    #[error("{0}")]
    Precondition(String),
    /// The system refused (permissions, missing tool, kernel error).
    #[error("{0}")]
    System(String),
    /// The fault was applied but its effect could not be observed.
    #[error("fault not effective: {0}")]
    NotEffective(String),
    /// The fault took effect, but the system did not recover from it as the fault
    /// requires (pods not replaced in time): the step fails, and with it the drill,
    /// while `effect` still goes into the report.
    #[error("{why}")]
    Unrecovered { effect: Box<Effect>, why: String },
}

/// What a fault needs from the engine.
pub struct FaultCtx<'a> {
    /// Run id; names everything the run creates (e.g. nftables table `firedrill_<id>`).
    pub run_id: &'a str,
    /// Name of the fault step.
    pub step: &'a str,
    /// Where the fault acts.
    pub target: &'a Target,
    /// Dead-man time: the fault must expire by itself after this.
    pub ttl: Duration,
    /// When the step started; effect times are measured from here.
    pub started: Instant,
    /// Cancelled when the drill is aborting (a fault may stop waiting for its effect).
    pub cancel: CancellationToken,
    /// In-process resources that live as long as a fault (e.g. proxy tasks).
    pub runtime: &'a crate::rt::Runtime,
}

/// What a fault did, declared next to measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Effect {
    /// What the scenario asked for, in words.
    pub declared: String,
    /// What was observed, in words.
    pub measured: String,
    /// Whether the measured effect matches the declared one.
    pub as_declared: bool,
    /// Time from step start until the effect was observed.
    pub effective_after_ms: Option<f64>,
    /// Kind-specific figures (pids hit, addresses resolved, requests affected, ...).
    #[serde(default)]
    pub details: serde_json::Value,
}

/// What reverting a fault did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Reverted {
    /// What was done and observed, in words.
    pub measured: String,
    /// Time from revert start until the system was observed restored, when measurable.
    pub restored_after_ms: Option<f64>,
    /// Kind-specific figures.
    #[serde(default)]
    pub details: serde_json::Value,
}

/// The undo record of one injected fault, as written to the ledger before the fault
/// takes effect. Everything needed to revert it from another process is in here,
/// the full target it acted on included ([`Undo::target`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Undo {
    /// Processes signalled by `process_kill`.
    ProcessKill(process_kill::Undo),
    /// The proxy started by `latency` (and its redirect, in transparent mode).
    Latency(latency::Undo),
    /// The proxy started by `http_fault` (and its redirect, in transparent mode).
    HttpFault(http_fault::Undo),
    /// Chains and sets added to the run's nftables table by `network_partition`.
    NetworkPartition(network::Undo),
    /// Chains and sets added to the run's nftables table by `network_rate_limit`.
    NetworkRateLimit(network::Undo),
    /// Pods deleted by `pod_kill` (nothing to undo: the controller replaces them).
    PodKill(pod_kill::Undo),
    /// The replica count `scale` changed, and the original.
    Scale(scale::Undo),
    /// The revert line of a `command` fault and its dead-man on the host.
    Command(command::Undo),
    /// One undo record per host of a group target.
    Group(group::Undo),
}

impl FaultSpec {
    /// The kind name as written in scenarios.
    pub fn kind(&self) -> &'static str {
        match self {
            FaultSpec::ProcessKill(_) => "process_kill",
            FaultSpec::Latency(_) => "latency",
            FaultSpec::HttpFault(_) => "http_fault",
            FaultSpec::NetworkPartition(_) => "network_partition",
            FaultSpec::NetworkRateLimit(_) => "network_rate_limit",
            FaultSpec::PodKill(_) => "pod_kill",
            FaultSpec::Scale(_) => "scale",
            FaultSpec::Command(_) => "command",
        }
    }

    /// Whether the kind acts on a Kubernetes cluster (every other kind needs a host).
    pub fn acts_on_cluster(&self) -> bool {
        matches!(self, FaultSpec::PodKill(_) | FaultSpec::Scale(_))
    }

    /// Whether `apply` goes on measuring after the fault took effect (pod_kill
    /// waits for the controller's replacements): the disruption then starts at the
    /// effect's own time (`effective_after_ms`), not when `apply` returned.
    pub fn measures_after_effect(&self) -> bool {
        matches!(self, FaultSpec::PodKill(_))
    }

    /// The Kubernetes permissions the fault needs on `target` (checked with
    /// SelfSubjectAccessReview before anything is injected); empty for host faults.
    pub fn permissions(&self, target: &Target) -> Vec<crate::target::kubernetes::Permission> {
        let Some(cluster) = target.cluster() else {
            return Vec::new();
        };
        match self {
            FaultSpec::PodKill(f) => f.permissions(cluster),
            FaultSpec::Scale(f) => f.permissions(cluster),
            _ => Vec::new(),
        }
    }

    /// For `plan`: the pods a `pod_kill` selector matches right now, one line each
    /// (`name (node) candidate|not Running and Ready`); None for other kinds.
    pub async fn matching_now(&self, target: &Target) -> Option<Result<Vec<String>, String>> {
        let FaultSpec::PodKill(f) = self else {
            return None;
        };
        Some(
            f.matching(target)
                .await
                .map(|pods| {
                    pods.into_iter()
                        .map(|(p, ok)| {
                            format!(
                                "{}{}: {}",
                                p.name,
                                p.node.map_or(String::new(), |n| format!(" on {n}")),
                                if ok {
                                    "candidate"
                                } else {
                                    "not a candidate (not Running and Ready, or terminating)"
                                }
                            )
                        })
                        .collect()
                })
                .map_err(|e| e.to_string()),
        )
    }

    /// Static checks beyond the types: returns `(path relative to the step, message)`.
    pub fn validate(&self, target: &Target) -> Vec<(String, String)> {
        // A cluster is not a host, and a host is not a cluster (reported with the
        // kind's own problems: every problem in one run).
        let mut errs = Vec::new();
        if self.acts_on_cluster() != target.cluster().is_some() {
            let expected = if self.acts_on_cluster() {
                "a kubernetes target"
            } else {
                "a host target (local, netns, ...): a cluster runs no program and has no network here"
            };
            errs.push((
                "target".into(),
                format!(
                    "found target {} for fault kind `{}`, expected {expected}",
                    target.describe(),
                    self.kind()
                ),
            ));
        }
        errs.extend(match self {
            FaultSpec::ProcessKill(f) => f.validate(target),
            FaultSpec::Latency(f) => f.validate(target),
            FaultSpec::HttpFault(f) => f.validate(target),
            FaultSpec::NetworkPartition(f) => f.validate(target),
            FaultSpec::NetworkRateLimit(f) => f.validate(target),
            FaultSpec::PodKill(f) => f.validate(target),
            FaultSpec::Scale(f) => f.validate(target),
            FaultSpec::Command(f) => f.validate(target),
        });
        errs
    }

    /// The declared effect, in words (used by `plan` and the report).
    pub fn describe(&self) -> String {
        match self {
            FaultSpec::ProcessKill(f) => f.describe(),
            FaultSpec::Latency(f) => f.describe(),
            FaultSpec::HttpFault(f) => f.describe(),
            FaultSpec::NetworkPartition(f) => f.describe(),
            FaultSpec::NetworkRateLimit(f) => f.describe(),
            FaultSpec::PodKill(f) => f.describe(),
            FaultSpec::Scale(f) => f.describe(),
            FaultSpec::Command(f) => f.describe(),
        }
    }

    /// Resolves what the fault will touch; no side effects.
    #[tracing::instrument(skip_all, fields(kind = self.kind(), step = ctx.step))]
    pub async fn prepare(&self, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
        if ctx.target.members().is_some() {
            return group::prepare(self, ctx).await.map(Undo::Group);
        }
        self.prepare_one(ctx).await
    }

    /// [`FaultSpec::prepare`] on one host (a group's member, or a single target).
    pub(crate) async fn prepare_one(&self, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
        match self {
            FaultSpec::ProcessKill(f) => f.prepare(ctx).await.map(Undo::ProcessKill),
            FaultSpec::Latency(f) => f.prepare(ctx).await.map(Undo::Latency),
            FaultSpec::HttpFault(f) => f.prepare(ctx).await.map(Undo::HttpFault),
            FaultSpec::NetworkPartition(f) => f.prepare(ctx).await.map(Undo::NetworkPartition),
            FaultSpec::NetworkRateLimit(f) => f.prepare(ctx).await.map(Undo::NetworkRateLimit),
            FaultSpec::PodKill(f) => f.prepare(ctx).await.map(Undo::PodKill),
            FaultSpec::Scale(f) => f.prepare(ctx).await.map(Undo::Scale),
            FaultSpec::Command(f) => f.prepare(ctx).await.map(Undo::Command),
        }
    }

    /// Takes effect and measures it. Only called after `undo` is durably in the ledger.
    #[tracing::instrument(skip_all, fields(kind = self.kind(), step = ctx.step))]
    pub async fn apply(&self, ctx: &FaultCtx<'_>, undo: &Undo) -> Result<Effect, FaultError> {
        if let Undo::Group(u) = undo {
            return group::apply(self, ctx, u).await;
        }
        self.apply_one(ctx, undo).await
    }

    /// [`FaultSpec::apply`] on one host.
    pub(crate) async fn apply_one(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &Undo,
    ) -> Result<Effect, FaultError> {
        match (self, undo) {
            (FaultSpec::ProcessKill(f), Undo::ProcessKill(u)) => f.apply(ctx, u).await,
            (FaultSpec::Latency(f), Undo::Latency(u)) => f.apply(ctx, u).await,
            (FaultSpec::HttpFault(f), Undo::HttpFault(u)) => f.apply(ctx, u).await,
            (FaultSpec::NetworkPartition(f), Undo::NetworkPartition(u)) => f.apply(ctx, u).await,
            (FaultSpec::NetworkRateLimit(f), Undo::NetworkRateLimit(u)) => f.apply(ctx, u).await,
            (FaultSpec::PodKill(f), Undo::PodKill(u)) => f.apply(ctx, u).await,
            (FaultSpec::Scale(f), Undo::Scale(u)) => f.apply(ctx, u).await,
            (FaultSpec::Command(f), Undo::Command(u)) => f.apply(ctx, u).await,
            #[allow(unreachable_patterns)]
            _ => Err(FaultError::Precondition(
                "undo record does not match fault kind".into(),
            )),
        }
    }
}

/// What reverting needs from the engine (or from `firedrill recover`).
pub struct RevertCtx<'a> {
    /// In-process resources of the run, when reverting from the run itself.
    pub runtime: Option<&'a crate::rt::Runtime>,
    /// When true, skip waiting to confirm restoration (second Ctrl-C).
    pub hurry: bool,
}

impl Undo {
    /// Whether the fault is still in effect, when that can be checked from outside
    /// the run; None when it cannot. `recover` uses it to tell a fault the dead-man
    /// already undid from one it reverts itself.
    pub fn still_in_effect(&self) -> Option<bool> {
        match self {
            Undo::ProcessKill(u) => u.still_in_effect(),
            _ => None,
        }
    }

    /// How long after injection the fault ends by itself, when the kernel guarantees
    /// it: nftables set elements time out after their ttl. None otherwise.
    pub fn expires_after(&self) -> Option<std::time::Duration> {
        match self {
            Undo::NetworkPartition(u) | Undo::NetworkRateLimit(u) => {
                Some(std::time::Duration::from_secs(u.ttl_s.into()))
            }
            // Its watcher may have failed to run the revert: its revert tells.
            _ => None,
        }
    }

    /// The kind name as written in scenarios.
    pub fn kind(&self) -> &'static str {
        match self {
            Undo::ProcessKill(_) => "process_kill",
            Undo::Latency(_) => "latency",
            Undo::HttpFault(_) => "http_fault",
            Undo::NetworkPartition(_) => "network_partition",
            Undo::NetworkRateLimit(_) => "network_rate_limit",
            Undo::PodKill(_) => "pod_kill",
            Undo::Scale(_) => "scale",
            Undo::Command(_) => "command",
            Undo::Group(u) => u.members.first().map_or("group", Undo::kind),
        }
    }

    /// Reverts the fault. Idempotent: reverting twice, or reverting a fault that
    /// expired by its ttl, succeeds.
    #[tracing::instrument(skip_all, fields(kind = self.kind()))]
    pub async fn revert(&self, ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
        match self {
            Undo::Group(u) => group::revert(u, ctx).await,
            one => one.revert_one(ctx).await,
        }
    }

    /// [`Undo::revert`] of one host's record (never a group's).
    pub(crate) async fn revert_one(&self, ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
        match self {
            Undo::ProcessKill(u) => u.revert(ctx).await,
            Undo::Latency(u) => u.revert(ctx, "latency proxy").await,
            Undo::HttpFault(u) => http_fault::revert(u, ctx).await,
            Undo::NetworkPartition(u) | Undo::NetworkRateLimit(u) => u.revert(ctx).await,
            Undo::PodKill(u) => u.revert(ctx).await,
            Undo::Scale(u) => u.revert(ctx).await,
            Undo::Command(u) => u.revert(ctx).await,
            Undo::Group(_) => Err(FaultError::Precondition(
                "a group's record holds hosts, not groups".into(),
            )),
        }
    }

    /// The target the fault acted on, as recorded: every revert acts there, whichever
    /// process runs it and whatever the scenario says by then.
    pub fn target(&self) -> &Target {
        match self {
            Undo::ProcessKill(u) => &u.target,
            Undo::Latency(u) | Undo::HttpFault(u) => &u.target,
            Undo::NetworkPartition(u) | Undo::NetworkRateLimit(u) => &u.target,
            Undo::PodKill(u) => &u.target,
            Undo::Scale(u) => &u.target,
            Undo::Command(u) => &u.target,
            Undo::Group(u) => &u.target,
        }
    }

    /// What the fault would touch, in words (`firedrill doctor` shows the record that
    /// `prepare` resolved, then throws it away).
    pub fn preview(&self) -> String {
        match self {
            Undo::ProcessKill(u) => {
                let shown: Vec<String> = u
                    .processes
                    .iter()
                    .take(5)
                    .map(|p| format!("{} ({})", p.pid, p.comm))
                    .collect();
                let more = u.processes.len().saturating_sub(shown.len());
                format!(
                    "{} process(es) match now: {}{}",
                    u.processes.len(),
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            }
            Undo::Latency(u) | Undo::HttpFault(u) => match (&u.upstream, &u.redirect) {
                (Some(up), _) => format!("proxy would listen on {} in front of {up}", u.listen),
                (None, _) => format!(
                    "transparent proxy would listen on {} (a free port now)",
                    u.listen
                ),
            },
            Undo::NetworkPartition(u) | Undo::NetworkRateLimit(u) => {
                let n: usize = u.resolved.iter().map(|r| r.addresses.len()).sum();
                let to: Vec<&str> = u.resolved.iter().map(|r| r.to.as_str()).collect();
                format!(
                    "{n} address(es) from {} in table {}",
                    to.join(", "),
                    u.table
                )
            }
            Undo::PodKill(u) => {
                let names: Vec<&str> = u.pods.iter().take(5).map(|p| p.name.as_str()).collect();
                let more = u.pods.len().saturating_sub(names.len());
                format!(
                    "{} of {} candidate pod(s) in {} would be deleted now: {}{}",
                    u.pods.len(),
                    u.candidates,
                    u.namespace,
                    names.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            }
            Undo::Scale(u) => format!(
                "{} {}/{} has {} replica(s) now; would be scaled to {}",
                u.workload.kind(),
                u.namespace,
                u.name,
                u.original,
                u.replicas
            ),
            Undo::Command(u) => format!(
                "would run its apply command on {}; revert `{}` armed as a dead-man for {} s",
                u.target.describe(),
                u.revert,
                u.ttl_s
            ),
            Undo::Group(u) => u
                .members
                .iter()
                .map(|m| format!("{}: {}", m.target().describe(), m.preview()))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    /// Whether reverting does anything (a SIGKILL cannot be undone, for example).
    pub fn is_reversible(&self) -> bool {
        match self {
            Undo::ProcessKill(u) => u.is_reversible(),
            Undo::Latency(_) | Undo::HttpFault(_) => true,
            Undo::NetworkPartition(_) | Undo::NetworkRateLimit(_) => true,
            Undo::PodKill(_) => false,
            Undo::Scale(_) => true,
            Undo::Command(_) => true,
            Undo::Group(u) => u.members.iter().any(Undo::is_reversible),
        }
    }
}

/// The step's part of a dead-man tag: the name's first 24 letters and digits (others
/// as `_`), and 12 hex digits of the SHA-256 of the exact name. The readable part
/// alone maps `db-1` and `db_1` to one tag, and the revert of one step would end the
/// other's watcher; the hash keeps every step apart. Only `[A-Za-z0-9_-]`, so a tag
/// is one word on a watcher's command line.
pub(crate) fn step_tag(step: &str) -> String {
    use sha2::Digest;
    let readable: String = step
        .chars()
        .take(24)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let hash = sha2::Sha256::digest(step.as_bytes());
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{readable}-{hex}")
}

/// Milliseconds since `t`, as a float (for effect timings).
pub(crate) fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
