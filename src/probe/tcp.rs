//! `tcp` probe: can a TCP connection be opened?

use std::time::{Duration, Instant};

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
        match crate::target::host::parse_host_port(&self.address) {
            Ok(_) => vec![],
            Err(e) => vec![("address".into(), e)],
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
        let result = match crate::target::host::parse_host_port(&self.address) {
            // Validation refuses this; a probe built another way must not guess.
            Err(e) => Err(e),
            // Resolved and connected from the target: no helper process, and no
            // shell that could read the address as a command.
            Ok((host, port)) => connect(target, &host, port, self.timeout.0).await,
        };
        Observation {
            latency: start.elapsed(),
            error: result.err(),
            ..Default::default()
        }
    }
}

/// Resolves `host` on `target` and connects to each of its addresses in turn,
/// within `timeout` overall (the resolver has no timeout of its own); the first
/// connection wins.
async fn connect(target: &Target, host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let timed_out = || format!("timed out after {}", HumanDuration(timeout));
    let attempt = async {
        let addrs = target
            .resolve(host, port)
            .await
            .map_err(|e| e.to_string())?;
        let mut last = format!("`{host}` resolved to no address");
        for a in addrs {
            match target.tcp_reachable(a, timeout).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(address: &str, target: Option<&str>) -> TcpProbe {
        TcpProbe {
            address: address.into(),
            timeout: HumanDuration::from_millis(1000),
            target: target.map(str::to_string),
        }
    }

    #[test]
    fn addresses_are_checked_hosts() {
        assert!(probe("127.0.0.1:80", None).validate().is_empty());
        assert!(probe("[::1]:80", None).validate().is_empty());
        let e = probe("127.0.0.1/1;touch /tmp/x;#:1", None).validate();
        assert_eq!(e[0].0, "address");
        assert!(e[0].1.contains("RFC 1123"), "{e:?}");
    }

    /// A probe that bypassed validation still never runs its address: it is
    /// refused, and nothing is created (root: it needs a namespace).
    #[tokio::test]
    async fn an_address_with_shell_characters_runs_nothing_from_a_netns() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "needs root in CI");
            eprintln!("skipped: needs root to create a network namespace");
            return;
        }
        let name = format!("fdunit-tcp-{}", std::process::id());
        assert!(
            std::process::Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .is_ok_and(|s| s.success())
        );
        let dir = std::env::temp_dir().join(format!("fd-tcp-inj-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let mut targets = std::collections::BTreeMap::new();
        targets.insert("ns".to_string(), Target::Netns { name: name.clone() });
        crate::install_crypto_provider();
        let http = reqwest::Client::new();
        let vars = crate::scenario::vars::Resolved::default();
        let ctx = ProbeCtx {
            targets: &targets,
            http: &http,
            vars: &vars,
        };
        let evil = probe(
            &format!("127.0.0.1/1;touch {};#:1", dir.display()),
            Some("ns"),
        );
        let o = evil.observe(&ctx).await;
        // A refused port fails too, from inside the namespace (its loopback is down).
        let refused = probe("127.0.0.1:1", Some("ns")).observe(&ctx).await;
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .status();
        assert!(!dir.exists(), "the address reached a shell");
        let _ = std::fs::remove_file(&dir);
        assert!(o.error.is_some(), "{o:?}");
        assert!(refused.error.is_some(), "{refused:?}");
    }
}
