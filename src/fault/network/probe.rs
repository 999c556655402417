//! Measuring from the target: TCP connects made by a thread inside the target's
//! network namespace, classified as connected, refused, unreachable or no answer.
//!
//! A network fault picks one endpoint among its destinations ([`ProbePoint`]),
//! connects once before it takes effect (read-only, like any probe), then connects
//! again until the effect shows; its revert connects until traffic flows again.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::dest::Resolved;
use super::params::Protocol;
use crate::fault::FaultError;
use crate::target::Target;

/// What one TCP connect attempt saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The handshake completed.
    Connected,
    /// Refused: a TCP reset (or an ICMP port unreachable).
    Refused,
    /// An ICMP host/network unreachable or a local "not permitted".
    Unreachable,
    /// No answer within the attempt's timeout (packets dropped).
    NoAnswer,
    /// Anything else (e.g. no route).
    Error,
}

impl Outcome {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::Refused => "refused",
            Outcome::Unreachable => "unreachable",
            Outcome::NoAnswer => "no answer",
            Outcome::Error => "failed",
        }
    }
}

/// One TCP connect from the current thread (which lives in the target's namespace).
pub(crate) fn connect_once(addr: SocketAddr, timeout: Duration) -> Outcome {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => Outcome::Connected,
        Err(e) => classify(&e),
    }
}

/// One TCP connect made by the remote host itself ([`Target::tcp_reachable`]). A
/// lost link to the host is `Error`, never mistaken for a blocked destination.
pub(crate) async fn remote_once(target: &Target, addr: SocketAddr, timeout: Duration) -> Outcome {
    match target.tcp_reachable(addr, timeout).await {
        Ok(()) => Outcome::Connected,
        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Outcome::Error,
        Err(e) => classify(&io::Error::from(e)),
    }
}

/// Back-to-back connects on a remote host, in one program run there (a program per
/// connect over SSH would be far slower than any rate worth limiting): `burst
/// ADDR PORT MAX SECONDS` prints `turned I CODE AT START` at the first attempt that
/// fails (`CODE` 124: no answer within SECONDS; anything else: refused; `AT` and
/// `START` are `$EPOCHREALTIME`s) or `all MAX`.
const BURST: &str = r#"a=$1 p=$2 n=$3 t=$4
s=$EPOCHREALTIME
for ((i = 0; i < n; i++)); do
  b=$EPOCHREALTIME
  timeout "$t" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$a" "$p" 2>/dev/null
  r=$?
  if [ "$r" -ne 0 ]; then echo "turned $i $r $b $s"; exit 0; fi
done
echo "all $n"
"#;

/// Up to `max` connects to `addr` made back to back by the remote host itself,
/// each waiting at most `attempt`: how many were accepted before the first one
/// that was not, that one's outcome, and when it was made (on the engine's clock:
/// the program's start is taken as the moment the engine launched it, so the time
/// is late by the link's latency at most).
pub(crate) async fn remote_burst(
    target: &Target,
    addr: SocketAddr,
    max: u32,
    attempt: Duration,
) -> Result<(u32, Option<(Outcome, Instant)>), FaultError> {
    let launched = Instant::now();
    let out = target
        .run(
            &crate::target::Cmd::new("bash")
                .args(["-c", BURST, "firedrill-burst"])
                .args([
                    addr.ip().to_string(),
                    addr.port().to_string(),
                    max.to_string(),
                    format!("{:.3}", attempt.as_secs_f64().max(0.001)),
                ])
                .timeout(attempt * max + Duration::from_secs(30)),
        )
        .await
        .map_err(|e| {
            FaultError::System(format!("cannot connect from {}: {e}", target.describe()))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let w: Vec<&str> = line.split(' ').collect();
    match w.as_slice() {
        ["all", n] => Ok((n.parse().unwrap_or(max), None)),
        ["turned", i, code, at, start] => {
            let secs = |v: &str| v.parse::<f64>().unwrap_or(0.0);
            let after = Duration::from_secs_f64((secs(at) - secs(start)).max(0.0));
            let outcome = if *code == "124" {
                Outcome::NoAnswer
            } else {
                Outcome::Refused
            };
            Ok((i.parse().unwrap_or(0), Some((outcome, launched + after))))
        }
        _ => Err(FaultError::System(format!(
            "connect burst on {} said `{}` ({})",
            target.describe(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

fn classify(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => Outcome::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::NoAnswer,
        io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable
        | io::ErrorKind::PermissionDenied => Outcome::Unreachable,
        _ => match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Outcome::Unreachable,
            _ => Outcome::Error,
        },
    }
}

/// Where a fault proves its effect: a TCP endpoint among the destinations.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProbePoint {
    /// The address connected to.
    pub address: SocketAddr,
    /// What a connect saw just before the fault was injected.
    pub before: Outcome,
    /// How long that connect took, in ms (sets how long later attempts wait).
    pub before_ms: f64,
}

impl ProbePoint {
    /// Timeout of one attempt: long enough that "no answer" cannot be a slow
    /// answer (10x what the connect took before, at least 100 ms), at most 1 s.
    pub(crate) fn attempt_timeout(&self) -> Duration {
        let ms = (self.before_ms * 10.0).clamp(100.0, 1000.0);
        Duration::from_micros((ms * 1000.0) as u64)
    }

    pub(crate) fn reachable_before(&self) -> bool {
        self.before == Outcome::Connected
    }
}

/// Picks a TCP endpoint the fault covers (a host address with a known port, IPv4
/// first) and connects once to learn how it behaves before the fault. Read-only:
/// a connect is an observation, like any probe.
pub(crate) async fn probe_point(
    target: &Target,
    resolved: &[Resolved],
    protocol: Protocol,
) -> Result<Option<ProbePoint>, FaultError> {
    if !protocol.covers_tcp() {
        return Ok(None);
    }
    let mut candidates: Vec<SocketAddr> = resolved
        .iter()
        .filter_map(|r| {
            let port = *r.ports.first()?;
            let host = r.addresses.iter().find(|a| a.is_host())?;
            Some(SocketAddr::new(host.addr(), port))
        })
        .collect();
    candidates.sort_by_key(|a| !a.is_ipv4());
    let Some(address) = candidates.first().copied() else {
        return Ok(None);
    };
    let (before, took) = if target.is_remote() {
        let t = Instant::now();
        let o = remote_once(target, address, Duration::from_millis(500)).await;
        (o, t.elapsed())
    } else {
        target
            .in_network(move || {
                let t = Instant::now();
                let o = connect_once(address, Duration::from_millis(500));
                (o, t.elapsed())
            })
            .await
            .map_err(|e| FaultError::System(e.to_string()))?
    };
    Ok(Some(ProbePoint {
        address,
        before,
        before_ms: took.as_secs_f64() * 1000.0,
    }))
}

/// Connects repeatedly (from the target's namespace) until `done(outcome)` holds,
/// `deadline` passes or `cancel` fires. Returns the last outcome and when the
/// attempt that produced it started.
pub(crate) async fn probe_until(
    target: &Target,
    address: SocketAddr,
    attempt: Duration,
    deadline: Instant,
    cancel: CancellationToken,
    done: fn(Outcome) -> bool,
) -> Result<(Outcome, Instant, u32), FaultError> {
    if target.is_remote() {
        // Each attempt is a program run on the host (bash's /dev/tcp).
        let mut attempts = 0;
        loop {
            let started = Instant::now();
            let o = remote_once(target, address, attempt).await;
            attempts += 1;
            if done(o) || Instant::now() >= deadline || cancel.is_cancelled() {
                return Ok((o, started, attempts));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    target
        .in_network(move || {
            let mut attempts = 0;
            loop {
                let started = Instant::now();
                let o = connect_once(address, attempt);
                attempts += 1;
                if done(o) || Instant::now() >= deadline || cancel.is_cancelled() {
                    return (o, started, attempts);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .await
        .map_err(|e| FaultError::System(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_timeout_scales_with_the_baseline() {
        let mut p = ProbePoint {
            address: "10.0.0.1:80".parse().unwrap(),
            before: Outcome::Connected,
            before_ms: 0.2,
        };
        assert_eq!(p.attempt_timeout(), Duration::from_millis(100));
        p.before_ms = 50.0;
        assert_eq!(p.attempt_timeout(), Duration::from_millis(500));
        p.before_ms = 5000.0;
        assert_eq!(p.attempt_timeout(), Duration::from_secs(1));
    }
}
