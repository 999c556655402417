//! Targets: where a fault acts and where a command runs.
//!
//! `local` is this host and always exists. `netns` is a Linux network namespace on
//! this host (`ip netns`), which is how the tests and the lab build several "hosts"
//! on one machine. A target also knows the engine's own control path to it, so that
//! network faults can refuse to cut it.

pub(crate) mod cgroup;
pub(crate) mod host;
pub(crate) mod netns;
pub(crate) mod procs;

pub use procs::ProcInfo;

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How to reach a target.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetSpec {
    /// A network namespace on this host, by its `ip netns` name.
    Netns(String),
}

impl TargetSpec {
    /// Static checks: `(path relative to the target's entry, message)`.
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        match self {
            TargetSpec::Netns(n) => netns::check_name(n)
                .err()
                .map(|e| ("netns".to_string(), e))
                .into_iter()
                .collect(),
        }
    }
}

/// A resolved target, as faults and probes use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    /// This host.
    Local,
    /// A network namespace on this host.
    Netns { name: String },
}

impl Target {
    pub fn from_spec(spec: &TargetSpec) -> Self {
        match spec {
            TargetSpec::Netns(n) => Target::Netns { name: n.clone() },
        }
    }

    /// A short human description: `local`, `netns:app`.
    pub fn describe(&self) -> String {
        match self {
            Target::Local => "local".into(),
            Target::Netns { name } => format!("netns:{name}"),
        }
    }

    /// Key used for the per-target run lock: two drills on the same key are refused.
    pub fn lock_key(&self) -> String {
        match self {
            Target::Local => "local".into(),
            Target::Netns { name } => format!("netns-{name}"),
        }
    }

    /// A command that runs `program args…` on the target.
    pub fn command(&self, program: &str, args: &[&str]) -> tokio::process::Command {
        match self {
            Target::Local => {
                let mut c = tokio::process::Command::new(program);
                c.args(args);
                c
            }
            Target::Netns { name } => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", name, program]).args(args);
                c
            }
        }
    }

    /// A command that runs a shell command line on the target. Only for fields that
    /// are shell by design (`command.run`): never build `line` from other values.
    pub fn shell(&self, line: &str) -> tokio::process::Command {
        self.command("sh", &["-c", line])
    }

    /// Addresses the engine itself uses to reach the target. A network fault must not
    /// cover any of them, or the engine would lose the ability to revert it. Local and
    /// netns targets are driven through the kernel directly, so there are none.
    pub fn control_path(&self) -> Vec<IpAddr> {
        match self {
            Target::Local | Target::Netns { .. } => Vec::new(),
        }
    }
}

/// Processes on a target: listing and signalling (see [`procs`]).
impl Target {
    /// The live user processes the target holds. `local` is the whole host; a `netns`
    /// target holds the processes whose network namespace is its own (they share this
    /// host's pid namespace, so their pids are this host's).
    pub fn processes(&self) -> std::io::Result<Vec<ProcInfo>> {
        let all = procs::list()?;
        match self {
            Target::Local => Ok(all),
            Target::Netns { name } => procs::in_netns(all, name),
        }
    }

    /// Sends `signal` to process `pid` of the target if it is still the process born
    /// at `start_time`; false when it is gone or its pid was recycled (nothing sent).
    pub fn signal(
        &self,
        pid: u32,
        start_time: u64,
        signal: nix::sys::signal::Signal,
    ) -> std::io::Result<bool> {
        match self {
            Target::Local | Target::Netns { .. } => procs::signal(pid, start_time, signal),
        }
    }
}
