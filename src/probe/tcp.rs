//! `tcp` probe: can a TCP connection be opened?

use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Observation, ProbeCtx};
use crate::duration::HumanDuration;
use crate::target::Target;

/// A TCP connect to `address` (`host:port`).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    /// `host:port` to connect to.
    pub address: String,
    /// Time after which the connect counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Connect from inside this target (a `netns` target, for example). Defaults to this host.
    #[serde(default)]
    pub target: Option<String>,
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_millis(2000)
}

impl TcpProbe {
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        match self.address.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => vec![],
            _ => vec![(
                "address".into(),
                format!("found `{}`, expected host:port", self.address),
            )],
        }
    }

    pub(crate) fn describe(&self) -> String {
        match &self.target {
            Some(t) => format!("TCP connect to {} from {t}", self.address),
            None => format!("TCP connect to {}", self.address),
        }
    }

    pub(crate) async fn observe(&self, ctx: &ProbeCtx<'_>) -> Observation {
        let target = self
            .target
            .as_deref()
            .and_then(|t| ctx.targets.get(t))
            .unwrap_or(&Target::Local);
        let start = Instant::now();
        let result = match target {
            Target::Local => {
                match tokio::time::timeout(
                    self.timeout.0,
                    tokio::net::TcpStream::connect(&self.address),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("timed out after {}", self.timeout)),
                }
            }
            // Inside a namespace the connect must happen from a process living there.
            // bash's /dev/tcp keeps that to one tiny helper process.
            Target::Netns { .. } => {
                let (host, port) = self
                    .address
                    .rsplit_once(':')
                    .unwrap_or((&self.address, "0"));
                let line = format!("exec 3<>/dev/tcp/{host}/{port}");
                let mut cmd = target.command("bash", &["-c", &line]);
                cmd.kill_on_drop(true)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped());
                match tokio::time::timeout(self.timeout.0, cmd.output()).await {
                    Ok(Ok(out)) if out.status.success() => Ok(()),
                    Ok(Ok(out)) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
                    Ok(Err(e)) => Err(format!("cannot start probe in {}: {e}", target.describe())),
                    Err(_) => Err(format!("timed out after {}", self.timeout)),
                }
            }
        };
        Observation {
            latency: start.elapsed(),
            error: result.err(),
            ..Default::default()
        }
    }
}
