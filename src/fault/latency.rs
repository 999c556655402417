//! `latency`: delay traffic through the built-in chaos proxy.
//!
//! A fixed delay plus jitter (uniform or normal), per direction, with a probability.
//! On a TCP stream (`per: chunk`, the default) every chunk is delayed, pipelined, so
//! it works for any protocol including TLS (no decryption); with `per: request` the
//! proxy speaks HTTP/1.1 and delays each request once. Explicit mode (`listen` +
//! `upstream`) or transparent mode (`intercept`), see [`super::proxy_placement`].
//!
//! The effect is measured: requests are timed directly and through the proxy, and
//! the difference must match the declared delay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::proxy_placement::{MARK, Placement, ProxyUndo};
use super::{Effect, FaultCtx, FaultError, ms_since};
use crate::duration::HumanDuration;
use crate::proxy::latency::{Distribution, Toxic};
use crate::proxy::rules::{Action, DelaySpec, Rule};
use crate::proxy::{Behaviour, http::HttpFaults};
use crate::target::Target;

/// Parameters of `latency`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Explicit mode: where the proxy listens (`ip:port`); point the system under test here.
    #[serde(default)]
    pub listen: Option<String>,
    /// Explicit mode: the real service, `host:port`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Transparent mode: IPv4 `ip:port` destinations whose traffic is redirected through the proxy (nftables `redirect` on the target; the client is unchanged).
    #[serde(default)]
    pub intercept: Vec<String>,
    /// Transparent mode: also reset, with a TCP reset on their next packet, connections to the intercepted destinations that were open before the fault took effect (a NAT redirect catches new connections only, so a pooled keep-alive connection would bypass the proxy for the whole fault). Connections made on the target only; the proxy's own are exempt. Default false.
    #[serde(default)]
    pub reset_established: bool,
    /// Fixed delay added to each chunk (or request).
    pub delay: HumanDuration,
    /// Spread around `delay` (see `distribution`).
    #[serde(default)]
    pub jitter: HumanDuration,
    /// `uniform`: delay ± jitter; `normal`: σ = jitter, cut at ±3σ.
    #[serde(default)]
    pub distribution: Distribution,
    /// Which traffic is delayed: `downstream` (responses, default), `upstream` (requests) or `both`.
    #[serde(default)]
    pub direction: Direction,
    /// Share of chunks (or requests) delayed, from 0 to 1.
    #[serde(default = "one")]
    pub probability: f64,
    /// `chunk`: every chunk of the TCP stream (any protocol, TLS included); `request`: once per HTTP/1.1 request (plain-text HTTP only).
    #[serde(default)]
    pub per: Per,
    /// Measure the effect with HTTP GET requests to this path, direct vs through the proxy; `null` when the upstream does not speak HTTP (then only the listening proxy is checked).
    #[serde(default = "root")]
    pub verify_path: Option<String>,
}

fn one() -> f64 {
    1.0
}

fn root() -> Option<String> {
    Some("/".into())
}

/// Which direction of the connection is delayed.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Upstream → client (responses).
    #[default]
    Downstream,
    /// Client → upstream (requests).
    Upstream,
    /// Both ways (a request/response round trip gains twice the delay).
    Both,
}

/// What one delay applies to.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// Every chunk of a TCP stream.
    #[default]
    Chunk,
    /// Every HTTP/1.1 request.
    Request,
}

/// The undo record of `latency`.
pub type Undo = ProxyUndo;

impl Latency {
    fn placement(&self) -> Placement {
        Placement {
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            intercept: self.intercept.clone(),
            reset_established: self.reset_established,
        }
    }

    fn toxic(&self) -> Toxic {
        Toxic {
            delay: self.delay.0,
            jitter: self.jitter.0,
            distribution: self.distribution,
            probability: self.probability,
        }
    }

    /// Delay legs on one request/response round trip.
    fn legs(&self) -> u32 {
        match (self.per, self.direction) {
            (Per::Request, _) => 1,
            (_, Direction::Both) => 2,
            _ => 1,
        }
    }

    pub(crate) fn validate(&self, target: &Target) -> Vec<(String, String)> {
        let mut errs = self.placement().validate(target);
        if !(0.0..=1.0).contains(&self.probability) {
            errs.push((
                "with.probability".into(),
                format!("found {}, expected a share from 0 to 1", self.probability),
            ));
        }
        if self.delay.0 > Duration::from_secs(600) {
            errs.push((
                "with.delay".into(),
                format!("found {}, expected at most 10m", self.delay),
            ));
        }
        if self.jitter.0 > self.delay.0 && self.distribution == Distribution::Uniform {
            errs.push((
                "with.jitter".into(),
                format!(
                    "found jitter {} above delay {}, expected at most the delay (a delay cannot be negative)",
                    self.jitter, self.delay
                ),
            ));
        }
        if self.per == Per::Request && self.direction != Direction::Downstream {
            errs.push((
                "with.direction".into(),
                "found a direction with `per: request`, expected none: a request is delayed once"
                    .into(),
            ));
        }
        if let Some(p) = &self.verify_path
            && !p.starts_with('/')
        {
            errs.push((
                "with.verify_path".into(),
                format!("found `{p}`, expected a path starting with `/`"),
            ));
        }
        errs
    }

    pub(crate) fn describe(&self) -> String {
        let what = match (self.per, self.direction) {
            (Per::Request, _) => "each HTTP request",
            (_, Direction::Downstream) => "each response chunk",
            (_, Direction::Upstream) => "each request chunk",
            (_, Direction::Both) => "each chunk both ways",
        };
        format!(
            "+{} on {what}; {}",
            self.toxic().describe(),
            self.placement().describe()
        )
    }

    pub(crate) async fn prepare(&self, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
        self.placement().prepare(ctx).await
    }

    fn behaviour(&self) -> Behaviour {
        let t = self.toxic();
        match self.per {
            Per::Request => Behaviour::Http(Arc::new(HttpFaults::new(vec![Rule {
                matcher: Default::default(),
                action: Action::Delay(DelaySpec {
                    delay: self.delay,
                    jitter: self.jitter,
                    distribution: self.distribution,
                }),
                probability: Some(self.probability),
                percentage: None,
            }]))),
            Per::Chunk => Behaviour::Tcp {
                up: matches!(self.direction, Direction::Upstream | Direction::Both)
                    .then(|| t.clone()),
                down: matches!(self.direction, Direction::Downstream | Direction::Both)
                    .then_some(t),
            },
        }
    }

    pub(crate) async fn apply(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &Undo,
    ) -> Result<Effect, FaultError> {
        let addr = self.placement().start(ctx, undo, self.behaviour()).await?;
        let Some(path) = self.verify_path.clone() else {
            let listening = super::proxy_placement::is_listening(addr, &undo.target).await;
            return Ok(Effect {
                declared: self.describe(),
                measured: format!(
                    "proxy listening on {addr} (delay not measured: verify_path is null)"
                ),
                as_declared: listening,
                effective_after_ms: listening.then(|| ms_since(ctx.started)),
                details: serde_json::json!({ "listen": addr, "target": undo.target }),
            });
        };
        let (direct, via) = probe_pair(undo, addr, &path).await.map_err(|e| {
            FaultError::NotEffective(format!("cannot measure the added delay: {e}"))
        })?;
        let base = median(&direct);
        let added: Vec<f64> = via.iter().map(|v| v - base).collect();
        let (lo, hi) = self.toxic().bounds();
        let legs = self.legs() as f64;
        // Window of a delayed sample: the toxic's bounds per leg, minus 1 ms, plus
        // 5 ms of scheduling noise. An untouched sample adds less than half the low bound.
        let hit_lo = lo.as_secs_f64() * 1000.0 * legs - 1.0;
        let hit_hi = hi.as_secs_f64() * 1000.0 * legs + 5.0;
        let miss_hi = (lo.as_secs_f64() * 1000.0 / 2.0).max(1.0);
        // A single sample may be late by scheduling noise on a busy host; the median
        // may not.
        let noise = (hit_hi * 0.25).max(10.0);
        let hit = |a: f64| a >= hit_lo && a <= hit_hi + noise;
        let miss = |a: f64| a < miss_hi;
        let as_declared = match self.probability {
            p if p >= 1.0 => added.iter().all(|a| hit(*a)) && median(&added) <= hit_hi,
            p if p <= 0.0 => added.iter().all(|a| miss(*a)),
            _ => added.iter().all(|a| hit(*a) || miss(*a)),
        };
        let measured = format!(
            "added {} ms (median {:.2} ms) over a direct {:.2} ms; expected {:.1}–{:.1} ms per delayed request",
            added
                .iter()
                .map(|a| format!("{a:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            median(&added),
            base,
            hit_lo.max(0.0),
            hit_hi
        );
        Ok(Effect {
            declared: self.describe(),
            measured,
            as_declared,
            effective_after_ms: as_declared.then(|| ms_since(ctx.started)),
            details: serde_json::json!({
                "listen": addr, "target": undo.target,
                "direct_ms": direct, "proxied_ms": via, "added_ms": added,
                "expected_added_ms": [hit_lo.max(0.0), hit_hi],
            }),
        })
    }
}

/// Times `n` HTTP GETs directly and through the proxy, alternating; milliseconds
/// from sending the request to the first response byte.
async fn probe_pair(
    undo: &ProxyUndo,
    proxy: SocketAddr,
    path: &str,
) -> std::io::Result<(Vec<f64>, Vec<f64>)> {
    const N: usize = 5;
    let (direct_addr, host, mark) = match (&undo.upstream, &undo.redirect) {
        (Some(u), _) => {
            // Resolved as the proxy resolves it: on the record's target.
            let (h, port) = crate::target::host::parse_host_port(u)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let a = undo.target.resolve(&h, port).await?[0];
            (a, u.clone(), None)
        }
        // Transparent: the client dials the intercepted address; our direct probe
        // carries the mark that exempts it from the redirect.
        (None, Some(r)) => {
            let a = *r
                .intercept
                .first()
                .ok_or_else(|| std::io::Error::other("no intercepted address"))?;
            (a, a.to_string(), Some(MARK))
        }
        (None, None) => return Err(std::io::Error::other("no upstream to compare with")),
    };
    let via_addr = if undo.redirect.is_some() {
        direct_addr // through the redirect, like the real client
    } else {
        proxy
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: firedrill-latency-check\r\nConnection: close\r\n\r\n"
    );
    let run = move || -> std::io::Result<(Vec<f64>, Vec<f64>)> {
        let (mut d, mut v) = (Vec::new(), Vec::new());
        for _ in 0..N {
            d.push(time_first_byte(direct_addr, mark, &req)?);
            v.push(time_first_byte(via_addr, None, &req)?);
        }
        Ok((d, v))
    };
    // A thread of its own (in the record's target's namespace when there is one):
    // the measurement blocks on sockets for up to a few hundred ms.
    undo.target.in_network(run).await?
}

fn time_first_byte(addr: SocketAddr, mark: Option<u32>, req: &str) -> std::io::Result<f64> {
    use std::io::{Read, Write};
    // Made on the thread that entered the target's network (see `probe_pair`).
    let sock = crate::target::tcp_socket(addr, mark)?;
    sock.set_tcp_nodelay(true)?;
    sock.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    let mut s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let t = Instant::now();
    s.write_all(req.as_bytes())?;
    let mut b = [0u8; 1];
    s.read(&mut b)
        .map_err(|e| std::io::Error::new(e.kind(), format!("no answer from {addr}: {e}")))?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Latency {
        serde_json::from_value(serde_yaml::from_str::<serde_json::Value>(y).unwrap()).unwrap()
    }

    #[test]
    fn validation() {
        let l = parse("{ listen: 127.0.0.1:18080, upstream: 127.0.0.1:80, delay: 100ms }");
        assert!(l.validate(&Target::Local).is_empty());
        let l = parse(
            "{ listen: 127.0.0.1:0, upstream: nope, delay: 10ms, jitter: 20ms, probability: 2 }",
        );
        let errs = l.validate(&Target::Local);
        let paths: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "with.listen",
                "with.upstream",
                "with.probability",
                "with.jitter"
            ],
            "{errs:?}"
        );
        let l = parse("{ intercept: [10.0.0.2:80], delay: 5ms, listen: 127.0.0.1:1 }");
        assert!(
            l.validate(&Target::Local)
                .iter()
                .any(|e| e.0 == "with.intercept")
        );
    }
}
