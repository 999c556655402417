//! `http_fault`: HTTP/1.1 faults through the built-in chaos proxy.
//!
//! Requests are matched by method and path (prefix or glob) against `rules`; the
//! first matching rule answers with a canned response from the profile table (WeCom
//! errcodes 45009/42001/-1, 429 with Retry-After, …) or a fixed one, applies a token
//! bucket rate limit, resets the connection, or delays the request. Plain-text HTTP
//! only: a TLS upstream needs explicit mode with the client pointed at the proxy over
//! `http://`, or an L4 fault (`latency`, network faults).
//!
//! The effect: the proxy must be listening and the upstream reachable; the counters
//! (requests seen, hits per rule) are in the effect's and the revert's details.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::proxy_placement::{MARK, Placement, ProxyUndo};
use super::{Effect, FaultCtx, FaultError, RevertCtx, Reverted, ms_since};
use crate::proxy::Behaviour;
use crate::proxy::http::HttpFaults;
use crate::proxy::rules::Rule;
use crate::target::Target;

/// Parameters of `http_fault`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    /// Explicit mode: where the proxy listens (`ip:port`); point the system under test here (over `http://`).
    #[serde(default)]
    pub listen: Option<String>,
    /// Explicit mode: the real service, `host:port` (plain HTTP).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Transparent mode: IPv4 `ip:port` destinations whose traffic is redirected through the proxy (nftables `redirect` on the target; the client is unchanged).
    #[serde(default)]
    pub intercept: Vec<String>,
    /// Transparent mode: also reset, with a TCP reset on their next packet, connections to the intercepted destinations that were open before the fault took effect (a NAT redirect catches new connections only, so a pooled keep-alive connection would bypass the proxy for the whole fault). Connections made on the target only; the proxy's own are exempt. Default false.
    #[serde(default)]
    pub reset_established: bool,
    /// Fault rules, tried in order; the first whose `match` fits a request decides. Requests no rule matches are forwarded untouched.
    pub rules: Vec<Rule>,
}

/// The undo record of `http_fault`.
pub type Undo = ProxyUndo;

impl HttpFault {
    fn placement(&self) -> Placement {
        Placement {
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            intercept: self.intercept.clone(),
            reset_established: self.reset_established,
        }
    }

    pub(crate) fn validate(&self, target: &Target) -> Vec<(String, String)> {
        let mut errs = self.placement().validate(target);
        if self.rules.is_empty() {
            errs.push((
                "with.rules".into(),
                "found no rules, expected at least one".into(),
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            for (p, m) in r.validate() {
                errs.push((format!("with.rules[{i}].{p}"), m));
            }
        }
        errs
    }

    pub(crate) fn describe(&self) -> String {
        let rules: Vec<String> = self.rules.iter().map(Rule::describe).collect();
        format!("{}; {}", self.placement().describe(), rules.join("; "))
    }

    pub(crate) async fn prepare(&self, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
        self.placement().prepare(ctx).await
    }

    pub(crate) async fn apply(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &Undo,
    ) -> Result<Effect, FaultError> {
        let faults = Arc::new(HttpFaults::new(self.rules.clone()));
        let addr = self
            .placement()
            .start(ctx, undo, Behaviour::Http(faults.clone()))
            .await?;
        // Declared = the proxy answers on its port and can reach the upstream.
        let on = &undo.target;
        let listening = super::proxy_placement::is_listening(addr, on).await;
        let upstream_ok = match (&undo.upstream, &undo.redirect) {
            (Some(u), _) => {
                // Resolved and dialled as the proxy does, from its target.
                let reach = async {
                    let (host, port) = crate::target::host::parse_host_port(u)?;
                    let a = on.resolve(&host, port).await.map_err(|e| e.to_string())?[0];
                    on.connect_tcp(a, None, None)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                };
                tokio::time::timeout(Duration::from_secs(5), reach)
                    .await
                    .unwrap_or_else(|_| Err("timed out".to_string()))
            }
            (None, Some(r)) => on
                .connect_tcp(r.intercept[0], None, Some(MARK))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            (None, None) => Err("no upstream".into()),
        };
        let as_declared = listening && upstream_ok.is_ok();
        let measured = match (&upstream_ok, listening) {
            (Ok(()), true) => format!(
                "proxy answering on {addr}, upstream reachable; {} rule(s) armed",
                self.rules.len()
            ),
            (_, false) => format!("proxy NOT accepting connections on {addr}"),
            (Err(e), true) => format!("proxy on {addr} cannot reach its upstream: {e}"),
        };
        let mut details = serde_json::json!({ "listen": addr, "target": undo.target,
            "counters": faults.counters() });
        // A staged switchover's schedule, its start in ms after the step started: the
        // `delivery:` figures are broken down by stage from it.
        let now_ms = ms_since(ctx.started);
        let switchovers: Vec<serde_json::Value> = faults
            .switchovers()
            .iter()
            .map(|sw| {
                serde_json::json!({
                    "to": sw.to,
                    "started_after_ms": (now_ms - sw.since.as_secs_f64() * 1000.0).max(0.0),
                    "stages": sw.stages.iter().map(|(p, hold)| serde_json::json!({
                        "percentage": p, "hold_ms": hold.as_secs_f64() * 1000.0
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        if !switchovers.is_empty() {
            details["switchovers"] = serde_json::json!(switchovers);
        }
        Ok(Effect {
            declared: self.describe(),
            measured,
            as_declared,
            effective_after_ms: as_declared.then(|| ms_since(ctx.started)),
            details,
        })
    }
}

/// Reverts `http_fault`; the details hold how many requests each rule hit.
pub(crate) async fn revert(undo: &Undo, ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
    let mut r = undo.revert(ctx, "HTTP fault proxy").await?;
    if let Some(h) = r.details.get("stats").and_then(|s| s.get("http")).cloned() {
        let hits: u64 = h["rules"]
            .as_array()
            .map(|rs| rs.iter().filter_map(|x| x["applied"].as_u64()).sum())
            .unwrap_or(0);
        r.measured = format!(
            "{}; {} request(s) seen, {hits} hit by a rule",
            r.measured,
            h["requests"].as_u64().unwrap_or(0)
        );
        // A staged switchover: where it stood when it was rolled back.
        for stage in h["rules"].as_array().into_iter().flatten() {
            if let Some(s) = stage["stage"].as_str() {
                r.measured = format!(
                    "{}; switchover at stage {s} when reverted ({} request(s) rerouted)",
                    r.measured,
                    h["rerouted"].as_u64().unwrap_or(0)
                );
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_points_into_rules() {
        let f: HttpFault = serde_json::from_value(
            serde_yaml::from_str::<serde_json::Value>(
                "{ listen: 127.0.0.1:18081, upstream: 127.0.0.1:80, rules: [ { match: { path: x }, action: { profile: nope } } ] }",
            )
            .unwrap(),
        )
        .unwrap();
        let errs = f.validate(&Target::Local);
        let paths: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            ["with.rules[0].match.path", "with.rules[0].action.profile"]
        );
    }
}
