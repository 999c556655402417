//! Probes: how the engine observes the system under test.
//!
//! A probe makes one observation ([`Observation`]); an [`Expect`] decides whether the
//! observation is good. Prechecks, guards and verifications all share both, so a
//! probe kind written once works in every section. Timing (`within`, `for`,
//! retries) belongs to the engine, not to probes.
//!
//! A new probe kind is one new file and one variant of [`ProbeSpec`].

pub(crate) mod command;
pub mod delivery;
pub(crate) mod expect;
pub(crate) mod http;
pub(crate) mod kubernetes;
pub(crate) mod tcp;
pub mod traffic;

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use expect::{Expect, Verdict};

use crate::target::Target;

/// What to observe. Written as `probe: { http: { ... } }`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ProbeSpec {
    /// An HTTP request.
    Http(http::HttpProbe),
    /// A TCP connect.
    Tcp(tcp::TcpProbe),
    /// A shell command on a target.
    Command(command::CommandProbe),
    /// Open-model HTTP load at a fixed rate: success rate and latency percentiles in `metrics`.
    Traffic(traffic::TrafficProbe),
    /// A Kubernetes workload's ready replicas, the pods of a selector all Ready, restart counts (on a `kubernetes` target).
    Kubernetes(kubernetes::KubernetesProbe),
}

/// One observation made by a probe. Fields a probe kind does not produce stay `None`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Observation {
    /// How long the observation took (request round trip, connect time, command run time).
    pub latency: Duration,
    /// Transport-level failure: connection refused, timeout, DNS, spawn failure.
    pub error: Option<String>,
    /// HTTP status code.
    pub status: Option<u16>,
    /// HTTP response body (truncated to 64 KiB).
    pub body: Option<String>,
    /// Command exit code (`None` when killed by a signal or timed out).
    pub exit_code: Option<i32>,
    /// Command standard output (truncated to 64 KiB).
    pub stdout: Option<String>,
    /// Command standard error (truncated to 64 KiB).
    pub stderr: Option<String>,
    /// Probe-specific figures (e.g. the traffic probe's success rate and percentiles).
    pub metrics: BTreeMap<String, f64>,
}

/// What probes need from the engine.
pub struct ProbeCtx<'a> {
    /// Resolved targets by name (`local` always present).
    pub targets: &'a BTreeMap<String, Target>,
    /// Shared HTTP client (connection pool); per-request options are set by the probe.
    pub http: &'a reqwest::Client,
    /// The drill's vars: shell commands get the secrets they refer to from here, in
    /// their environment (see `scenario::vars`).
    pub vars: &'a crate::scenario::vars::Resolved,
}

impl ProbeSpec {
    /// The kind name as written in scenarios.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeSpec::Http(_) => "http",
            ProbeSpec::Tcp(_) => "tcp",
            ProbeSpec::Command(_) => "command",
            ProbeSpec::Traffic(_) => "traffic",
            ProbeSpec::Kubernetes(_) => "kubernetes",
        }
    }

    /// The target this probe observes from, if it names one (must exist in `targets`).
    pub fn target(&self) -> Option<&str> {
        match self {
            ProbeSpec::Command(c) => Some(&c.target),
            ProbeSpec::Tcp(t) => t.target.as_deref(),
            ProbeSpec::Http(h) => h.target.as_deref(),
            ProbeSpec::Traffic(t) => t.target.as_deref(),
            ProbeSpec::Kubernetes(k) => Some(&k.target),
        }
    }

    /// Static checks beyond the types: `(path relative to the probe, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        match self {
            ProbeSpec::Http(p) => p.validate(),
            ProbeSpec::Tcp(p) => p.validate(),
            ProbeSpec::Command(p) => p.validate(),
            ProbeSpec::Traffic(p) => p.validate(),
            ProbeSpec::Kubernetes(p) => p.validate(),
        }
    }

    /// One line saying what is observed (for `plan` and reports). It may contain a
    /// secret written into a URL or header: `plan` and reports redact it.
    pub fn describe(&self) -> String {
        match self {
            ProbeSpec::Http(p) => p.describe(),
            ProbeSpec::Tcp(p) => p.describe(),
            ProbeSpec::Command(p) => p.describe(),
            ProbeSpec::Traffic(p) => p.describe(),
            ProbeSpec::Kubernetes(p) => p.describe(),
        }
    }

    /// Makes one observation. Transport failures are part of the observation
    /// (`error`), not an `Err`: a refused connection is a perfectly good answer.
    #[tracing::instrument(skip_all, fields(kind = self.kind()))]
    pub async fn observe(&self, ctx: &ProbeCtx<'_>) -> Observation {
        match self {
            ProbeSpec::Http(p) => p.observe(ctx).await,
            ProbeSpec::Tcp(p) => p.observe(ctx).await,
            ProbeSpec::Command(p) => p.observe(ctx).await,
            ProbeSpec::Traffic(p) => p.observe(ctx).await,
            ProbeSpec::Kubernetes(p) => p.observe(ctx).await,
        }
    }
}

/// Keeps at most 64 KiB of captured text, on a character boundary.
pub(crate) fn truncate_capture(mut s: String) -> String {
    const MAX: usize = 64 * 1024;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("…[truncated]");
    }
    s
}
