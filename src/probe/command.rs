//! `command` probe: run a shell command on a target and look at its exit code and output.

use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Observation, ProbeCtx, truncate_capture};
use crate::duration::HumanDuration;
use crate::target::{Cmd, Target, TargetError};

/// A shell command (`sh -c`) run on a target. `run` is a shell line by design: var
/// values are pasted into it as text, secret ones as environment references.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandProbe {
    /// Shell command line, run with `sh -c`: shell by design, so `{{var}}` values are pasted in as text (quote them); a secret var becomes a reference to an environment variable set for this command only (`"${FIREDRILL_SECRET_<NAME>}"`), never its value.
    pub run: String,
    /// Where to run it; a name from `targets`, or `local`.
    #[serde(default = "crate::scenario::local")]
    pub target: String,
    /// Time after which the command is killed and the observation fails.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_millis(30_000)
}

impl CommandProbe {
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        if self.run.trim().is_empty() {
            vec![(
                "run".into(),
                "found an empty command, expected a shell command line".into(),
            )]
        } else {
            vec![]
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!("`{}` on {}", self.run, self.target)
    }

    pub(crate) async fn observe(&self, ctx: &ProbeCtx<'_>) -> Observation {
        let target = ctx.targets.get(&self.target).unwrap_or(&Target::Local);
        // Secrets travel in the environment, never on the command line (`ps`).
        let cmd = Cmd::new("sh")
            .args(["-c", &self.run])
            .envs(ctx.vars.env_for(&self.run))
            .timeout(self.timeout.0);
        let start = Instant::now();
        let out = target.run(&cmd).await;
        let latency = start.elapsed();
        match out {
            Ok(out) => Observation {
                latency,
                exit_code: out.code,
                stdout: Some(truncate_capture(
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                )),
                stderr: Some(truncate_capture(
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )),
                ..Default::default()
            },
            Err(TargetError::TimedOut { .. }) => Observation {
                latency,
                error: Some(format!("timed out after {} (killed)", self.timeout)),
                ..Default::default()
            },
            Err(e @ TargetError::Spawn { .. }) => Observation {
                latency,
                error: Some(e.to_string()),
                ..Default::default()
            },
            Err(e) => Observation {
                latency,
                error: Some(format!("command failed: {e}")),
                ..Default::default()
            },
        }
    }
}
