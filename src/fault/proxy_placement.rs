//! Where a fault's proxy sits, shared by `latency` and `http_fault`: starting it
//! (explicit or transparent), its undo record, stopping it, and checking that
//! nothing is left (port closed, redirect gone).
//!
//! - explicit: `listen` + `upstream`; the system under test is pointed at `listen`.
//! - transparent: `intercept: [ip:port, …]` on a `local` or `netns` target; an
//!   nftables `redirect` in the run's own table sends that traffic to the proxy,
//!   which finds the real destination with SO_ORIGINAL_DST. The proxy's own upstream
//!   connections carry [`MARK`] and are exempt from the redirect.

use std::net::SocketAddr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::proxy_redirect::RedirectUndo;
use super::{FaultCtx, FaultError, RevertCtx, Reverted};
use crate::proxy::{Behaviour, Config, Proxy, StatsSnapshot, Upstream};
use crate::target::Target;

/// SO_MARK carried by the proxy's upstream connections ("fd" in ASCII), so the
/// redirect rule does not send them back to the proxy.
pub const MARK: u32 = 0x6664;

/// The placement parameters as written in a scenario (fields of the fault's `with`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub intercept: Vec<String>,
    /// Transparent mode: reset connections to the intercepted destinations that were
    /// open before the redirect (see [`RedirectUndo::reset_established`]).
    pub reset_established: bool,
}

/// The undo record of a proxy fault: enough to stop it and to check, from another
/// process, that nothing is left.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(from = "ProxyUndoRecord")]
pub struct ProxyUndo {
    /// Key of the proxy handle in the run's runtime.
    pub key: String,
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// Explicit mode: the upstream `host:port`; transparent mode: None.
    pub upstream: Option<String>,
    /// The target the proxy's sockets live on, in full: the revert checks there,
    /// whichever process runs it and whatever the scenario says now.
    pub target: Target,
    /// Transparent mode: the nftables redirect to remove.
    #[serde(default)]
    pub redirect: Option<RedirectUndo>,
}

/// [`ProxyUndo`] as read from a ledger, also one written before the record carried
/// its target (then it held only a namespace name, and no name meant `local`).
#[derive(Deserialize)]
struct ProxyUndoRecord {
    key: String,
    listen: SocketAddr,
    upstream: Option<String>,
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    netns: Option<String>,
    #[serde(default)]
    redirect: Option<RedirectUndo>,
}

impl From<ProxyUndoRecord> for ProxyUndo {
    fn from(r: ProxyUndoRecord) -> Self {
        let target = match (r.target, r.netns) {
            (Some(t), _) => t,
            (None, Some(name)) => Target::Netns { name },
            (None, None) => Target::Local,
        };
        ProxyUndo {
            key: r.key,
            listen: r.listen,
            upstream: r.upstream,
            target,
            redirect: r.redirect,
        }
    }
}

impl Placement {
    /// Static checks: `(path relative to the step, message)`.
    pub fn validate(&self, target: &Target) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let explicit = self.listen.is_some() || self.upstream.is_some();
        if explicit && !self.intercept.is_empty() {
            errs.push((
                "with.intercept".into(),
                "found `intercept` together with `listen`/`upstream`, expected either explicit mode (listen + upstream) or transparent mode (intercept)".into(),
            ));
        }
        if explicit && self.reset_established {
            errs.push((
                "with.reset_established".into(),
                "found `reset_established` in explicit mode, expected it only with `intercept` (in explicit mode the client connects to the proxy itself)".into(),
            ));
        }
        if !explicit && self.intercept.is_empty() {
            errs.push((
                "with".into(),
                "found neither `listen` + `upstream` nor `intercept`, expected one of the two modes".into(),
            ));
        }
        if explicit {
            match self.listen.as_deref().map(str::parse::<SocketAddr>) {
                None => errs.push((
                    "with.listen".into(),
                    "missing `listen`, expected an address such as 127.0.0.1:18080 to point the system under test at".into(),
                )),
                Some(Err(_)) => errs.push((
                    "with.listen".into(),
                    format!("found `{}`, expected ip:port such as 127.0.0.1:18080", self.listen.as_deref().unwrap_or("")),
                )),
                Some(Ok(a)) if a.port() == 0 => errs.push((
                    "with.listen".into(),
                    "found port 0, expected a fixed port: the system under test must be pointed at it".into(),
                )),
                Some(Ok(_)) => {}
            }
            match self.upstream.as_deref() {
                None => errs.push((
                    "with.upstream".into(),
                    "missing `upstream`, expected host:port of the real service".into(),
                )),
                Some(u) if !valid_host_port(u) => errs.push((
                    "with.upstream".into(),
                    format!("found `{u}`, expected host:port such as qyapi.example:80"),
                )),
                Some(_) => {}
            }
        }
        for (i, a) in self.intercept.iter().enumerate() {
            match a.parse::<SocketAddr>() {
                Ok(SocketAddr::V4(v)) if v.port() != 0 => {}
                _ => errs.push((
                    format!("with.intercept[{i}]"),
                    format!("found `{a}`, expected an IPv4 ip:port such as 10.0.0.2:80"),
                )),
            }
        }
        errs.extend(target_check(target));
        errs
    }

    fn is_transparent(&self) -> bool {
        !self.intercept.is_empty()
    }

    /// In words: `127.0.0.1:18080 → api:80` or `intercepting 10.0.0.2:80`.
    pub fn describe(&self) -> String {
        if self.is_transparent() {
            format!("transparently intercepting {}", self.intercept.join(", "))
        } else {
            format!(
                "proxy {} → {}",
                self.listen.as_deref().unwrap_or("?"),
                self.upstream.as_deref().unwrap_or("?")
            )
        }
    }

    /// Resolves the undo record. The only effect is choosing a free port for a
    /// transparent proxy (bound and released at once).
    pub async fn prepare(&self, ctx: &FaultCtx<'_>) -> Result<ProxyUndo, FaultError> {
        let key = format!("proxy:{}:{}", ctx.run_id, ctx.step);
        if !self.is_transparent() {
            let listen: SocketAddr = self
                .listen
                .as_deref()
                .unwrap_or("")
                .parse()
                .map_err(|_| FaultError::Precondition("invalid listen address".into()))?;
            return Ok(ProxyUndo {
                key,
                listen,
                upstream: self.upstream.clone(),
                target: ctx.target.clone(),
                redirect: None,
            });
        }
        // All addresses of the target: `redirect` in the output hook sends local
        // connections to 127.0.0.1, in prerouting to the incoming interface's address.
        let free = ctx
            .target
            .listen_tcp("0.0.0.0:0".parse().unwrap())
            .await
            .map_err(std::io::Error::from)
            .and_then(|l| l.local_addr())
            .map_err(|e| FaultError::System(format!("cannot pick a port for the proxy: {e}")))?;
        let targets: Vec<SocketAddr> = self
            .intercept
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        Ok(ProxyUndo {
            key,
            listen: free,
            upstream: None,
            target: ctx.target.clone(),
            redirect: Some(RedirectUndo::plan(
                ctx.run_id,
                ctx.step,
                ctx.target,
                &targets,
                free.port(),
                MARK,
                ctx.ttl,
                self.reset_established,
            )?),
        })
    }

    /// Binds the port, starts the proxy (stored in the runtime under `undo.key`) and,
    /// in transparent mode, installs the redirect.
    pub async fn start(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &ProxyUndo,
        behaviour: Behaviour,
    ) -> Result<SocketAddr, FaultError> {
        // Everything from here on acts on the record's target: what the ledger holds is
        // what was done.
        let listener = undo
            .target
            .listen_tcp(undo.listen)
            .await
            .map_err(|e| FaultError::System(format!("cannot start the proxy: {e}")))?;
        let cfg = Config {
            upstream: match &undo.upstream {
                Some(u) => Upstream::Addr(u.clone()),
                None => Upstream::OriginalDst,
            },
            behaviour,
            network: undo.target.clone(),
            mark: undo.redirect.as_ref().map(|_| MARK),
        };
        let proxy = Proxy::start(listener, cfg)
            .map_err(|e| FaultError::System(format!("cannot start the proxy: {e}")))?;
        let addr = proxy.local_addr();
        ctx.runtime.put(undo.key.clone(), Box::new(proxy));
        if let Some(r) = &undo.redirect
            && let Err(e) = r.install().await
        {
            // Nothing may outlive a failed injection: stop the proxy again.
            if let Some(p) = ctx.runtime.take(&undo.key)
                && let Ok(p) = p.downcast::<Proxy>()
            {
                p.stop().await;
            }
            return Err(e);
        }
        Ok(addr)
    }
}

impl ProxyUndo {
    /// Reverts a proxy fault: stop it, check the port is closed, report the counters.
    pub(crate) async fn revert(
        &self,
        ctx: &RevertCtx<'_>,
        what: &str,
    ) -> Result<Reverted, FaultError> {
        let undo = self;
        let (stats, ms) = undo.stop(ctx).await?;
        let on = undo.target.describe();
        let measured = match &stats {
            Some(s) => format!(
                "{what} on {} ({on}) stopped after {} connection(s); port closed",
                undo.listen, s.connections
            ),
            None => format!(
                "{what} on {} ({on}) was not running in this process (it ended with its engine); port closed",
                undo.listen
            ),
        };
        Ok(Reverted {
            measured,
            restored_after_ms: Some(ms),
            details: serde_json::json!({ "listen": undo.listen, "target": undo.target, "stats": stats }),
        })
    }

    /// Stops the proxy (when this process runs it), removes the redirect, and checks
    /// the port is closed. Returns the final counters when the proxy was ours.
    pub async fn stop(
        &self,
        ctx: &RevertCtx<'_>,
    ) -> Result<(Option<StatsSnapshot>, f64), FaultError> {
        let start = Instant::now();
        // The redirect first: from here on, clients reach the real service directly.
        if let Some(r) = &self.redirect {
            r.remove().await?;
        }
        let stats = match ctx.runtime.and_then(|rt| rt.take(&self.key)) {
            Some(b) => match b.downcast::<Proxy>() {
                Ok(p) => Some(p.stop().await),
                Err(_) => None,
            },
            None => None,
        };
        if self.target.is_gone() {
            // The namespace is gone, and every socket in it with it.
            return Ok((stats, start.elapsed().as_secs_f64() * 1000.0));
        }
        let mut addr = self.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let open = is_listening(addr, &self.target).await;
        if open {
            return Err(FaultError::NotEffective(format!(
                "{} on {} still accepts connections after the proxy was stopped{}",
                self.listen,
                self.target.describe(),
                if stats.is_none() {
                    " (this process does not run it: is its engine still alive?)"
                } else {
                    ""
                }
            )));
        }
        Ok((stats, start.elapsed().as_secs_f64() * 1000.0))
    }
}

/// Whether something accepts TCP connections on `addr` on target `on` (500 ms).
pub(crate) async fn is_listening(addr: SocketAddr, on: &Target) -> bool {
    on.connect_tcp(addr, Some(std::time::Duration::from_millis(500)), None)
        .await
        .is_ok()
}

/// The proxy runs inside the engine: its target must be one whose sockets this
/// process can make.
fn target_check(t: &Target) -> Vec<(String, String)> {
    if t.sockets_here() {
        return Vec::new();
    }
    vec![(
        "target".into(),
        format!(
            "found target {}, expected `local` or a netns target: the proxy runs inside the engine",
            t.describe()
        ),
    )]
}

fn valid_host_port(s: &str) -> bool {
    s.parse::<SocketAddr>().is_ok() || crate::target::host::parse_host_port(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(extra: serde_json::Value) -> serde_json::Value {
        let mut v = serde_json::json!({
            "key": "proxy:r1:slow api", "listen": "127.0.0.1:18080", "upstream": "10.0.0.2:80",
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn undo_record_round_trips_its_target() {
        let target = serde_json::json!({ "type": "netns", "name": "app" });
        let undo: ProxyUndo =
            serde_json::from_value(record(serde_json::json!({ "target": target }))).unwrap();
        let written = serde_json::to_value(&undo).unwrap();
        assert_eq!(written["target"], target, "{written}");
        let read: ProxyUndo = serde_json::from_value(written).unwrap();
        assert_eq!(read, undo);
        assert_eq!(
            serde_json::to_value(&read).unwrap()["target"],
            target,
            "the target survives a second trip"
        );
    }

    #[test]
    fn undo_records_of_older_ledgers_still_read() {
        let old: ProxyUndo =
            serde_json::from_value(record(serde_json::json!({ "netns": "app" }))).unwrap();
        assert_eq!(
            serde_json::to_value(&old).unwrap()["target"],
            serde_json::json!({ "type": "netns", "name": "app" })
        );
        let old: ProxyUndo =
            serde_json::from_value(record(serde_json::json!({ "netns": null }))).unwrap();
        assert_eq!(
            serde_json::to_value(&old).unwrap()["target"],
            serde_json::json!({ "type": "local" })
        );
    }
}
