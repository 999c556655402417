//! What the two nftables faults share: destinations (`to:`), protocol and action
//! parameters, host-name resolution, the control-path safety check, the TCP probe
//! that measures an effect, and the undo record with its revert.
//!
//! `network_partition.rs` and `network_rate_limit.rs` only decide which rules to
//! build and how to read their effect; everything that touches the kernel goes
//! through [`crate::nft`], inside the run's own table.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{FaultCtx, FaultError, RevertCtx, Reverted, ms_since};
use crate::nft::{self, AddrFamily, IpNet, Objects, RunTable, Side, Statement, Unreachable};
use crate::target::Target;

// ── parameters ───────────────────────────────────────────────────────────────

/// Which transport protocol a network fault applies to.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
    /// ICMP (ICMPv6 for IPv6 destinations); takes no ports.
    Icmp,
    /// Everything; with `ports`, TCP and UDP on those ports.
    #[default]
    All,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::All => "all",
        }
    }
    /// Whether TCP traffic is affected (so a TCP connect can measure the effect).
    pub(crate) fn covers_tcp(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::All)
    }
}

/// Which traffic a partition blocks, seen from the target.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Packets the target sends to the destinations (to their `ports`).
    Egress,
    /// Packets the target receives from the destinations (from their `ports`).
    Ingress,
    /// Both: the destinations and the target cannot talk at all.
    #[default]
    Both,
}

impl Direction {
    pub(crate) fn egress(self) -> bool {
        matches!(self, Direction::Egress | Direction::Both)
    }
    pub(crate) fn ingress(self) -> bool {
        matches!(self, Direction::Ingress | Direction::Both)
    }
}

/// What happens to a blocked packet.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Silently discarded: the peer sees timeouts (a cut cable, a black-holing firewall).
    #[default]
    Drop,
    /// Refused at once: TCP reset for TCP, ICMP port unreachable for UDP, ICMP host
    /// unreachable otherwise (a firewall that rejects; clients fail fast).
    Reject,
}

impl Action {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Reject => "reject",
        }
    }
}

/// The verdict statement for blocked packets of `proto` (a concrete protocol, or
/// `All` for "anything else").
pub(crate) fn verdict(action: Action, proto: Protocol) -> Statement<'static> {
    match (action, proto) {
        (Action::Drop, _) => nft::drop(),
        (Action::Reject, Protocol::Tcp) => nft::reject_tcp_reset(),
        (Action::Reject, Protocol::Udp) => nft::reject_icmpx(Unreachable::Port),
        (Action::Reject, _) => nft::reject_icmpx(Unreachable::Host),
    }
}

/// One entry of `to:` as written: an address or network, or a host name resolved
/// when the fault is injected; optionally with a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dest {
    pub addr: DestAddr,
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DestAddr {
    Net(IpNet),
    Host(String),
}

const DEST_EXPECTED: &str =
    "expected an IP address, a CIDR or a host name, optionally with :port ([v6]:port for IPv6)";

/// Parses `10.0.0.1`, `10.0.0.0/24`, `10.0.0.1:443`, `10.0.0.0/24:443`, `::1`,
/// `[2001:db8::1]:443`, `api.example.com`, `api.example.com:443`.
pub(crate) fn parse_dest(s: &str) -> Result<Dest, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("found an empty destination, {DEST_EXPECTED}"));
    }
    if let Some(rest) = t.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("found `{t}` without a closing `]`, {DEST_EXPECTED}"))?;
        let net: IpNet = inside.parse().map_err(|e| format!("{e} in `{t}`"))?;
        let port = match after {
            "" => None,
            p => Some(parse_port(
                p.strip_prefix(':').ok_or_else(|| {
                    format!("found `{after}` after `]` in `{t}`, expected `:port`")
                })?,
                t,
            )?),
        };
        return Ok(Dest {
            addr: DestAddr::Net(net),
            port,
        });
    }
    if let Ok(net) = t.parse::<IpNet>() {
        return Ok(Dest {
            addr: DestAddr::Net(net),
            port: None,
        });
    }
    if let Some((left, p)) = t.rsplit_once(':') {
        // `10.0.0.0/24:80`, `2001:db8::/32:80`, `10.0.0.1:80`, `host:80`.
        if left.contains('/') || left.parse::<IpAddr>().is_ok() {
            let net: IpNet = left.parse().map_err(|e| format!("{e} in `{t}`"))?;
            return Ok(Dest {
                addr: DestAddr::Net(net),
                port: Some(parse_port(p, t)?),
            });
        }
        if !left.contains(':') {
            check_hostname(left, t)?;
            return Ok(Dest {
                addr: DestAddr::Host(left.to_string()),
                port: Some(parse_port(p, t)?),
            });
        }
        return Err(format!("found `{t}`, {DEST_EXPECTED}"));
    }
    if t.contains('/') {
        return Err(t.parse::<IpNet>().unwrap_err());
    }
    check_hostname(t, t)?;
    Ok(Dest {
        addr: DestAddr::Host(t.to_string()),
        port: None,
    })
}

fn parse_port(p: &str, whole: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "found port `{p}` in `{whole}`, expected a number from 1 to 65535"
        )),
    }
}

fn check_hostname(h: &str, whole: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let ok = h.len() <= 253
        && h.trim_end_matches('.').split('.').all(label_ok)
        // All-numeric dotted names are malformed IPv4 addresses, not host names.
        && !h.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!("found `{whole}`, {DEST_EXPECTED}"))
    }
}

/// Validation shared by both faults: `to` (non-empty, parseable, never covering
/// the engine's control path to `target`) and `ports`.
pub(crate) fn validate_common(
    to: &[String],
    ports: &[u16],
    protocol: Protocol,
    target: &Target,
) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    if to.is_empty() {
        errs.push((
            "with.to".into(),
            "found no destination, expected at least one IP address, CIDR or host name".into(),
        ));
    }
    let control = target.control_path();
    for (i, entry) in to.iter().enumerate() {
        match parse_dest(entry) {
            Ok(d) => {
                if let DestAddr::Net(n) = d.addr {
                    for ip in control_path_hits(&[n], &control) {
                        errs.push((
                            format!("with.to[{i}]"),
                            control_path_message(entry, ip, target),
                        ));
                    }
                }
                if d.port.is_some() && protocol == Protocol::Icmp {
                    errs.push((
                        format!("with.to[{i}]"),
                        format!("found port in `{entry}` with protocol icmp, expected no port: ICMP has none"),
                    ));
                }
            }
            Err(e) => errs.push((format!("with.to[{i}]"), e)),
        }
    }
    for (i, p) in ports.iter().enumerate() {
        if *p == 0 {
            errs.push((
                format!("with.ports[{i}]"),
                "found port 0, expected a number from 1 to 65535".into(),
            ));
        }
    }
    if !ports.is_empty() && protocol == Protocol::Icmp {
        errs.push((
            "with.ports".into(),
            "found ports with protocol icmp, expected no ports: ICMP has none".into(),
        ));
    }
    errs
}

/// The addresses of `control` that any of `nets` covers. A network fault covering
/// the engine's own connection to its target (e.g. the SSH peer) could never be
/// reverted by that engine, so such destinations are refused, both when the
/// scenario is validated (IPs, CIDRs) and after host names are resolved.
pub(crate) fn control_path_hits(nets: &[IpNet], control: &[IpAddr]) -> Vec<IpAddr> {
    control
        .iter()
        .filter(|ip| nets.iter().any(|n| n.contains(ip)))
        .copied()
        .collect()
}

fn control_path_message(entry: &str, ip: IpAddr, target: &Target) -> String {
    format!(
        "found `{entry}`, which covers {ip}, the engine's own control path to {}; expected destinations that leave it reachable (the engine could not revert the fault otherwise)",
        target.describe()
    )
}

// ── resolution ───────────────────────────────────────────────────────────────

/// What one `to:` entry became at injection time (host names resolved).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resolved {
    /// The entry as written.
    pub to: String,
    /// Its addresses (one network for an IP or CIDR; every address of a host name).
    pub addresses: Vec<IpNet>,
    /// Ports the rules match for this entry (empty: all ports).
    pub ports: Vec<u16>,
}

/// Resolves every `to:` entry (host names through this host's resolver, bounded to
/// 5 s each) and refuses any that covers the target's control path.
pub(crate) async fn resolve(
    to: &[String],
    ports: &[u16],
    target: &Target,
) -> Result<Vec<Resolved>, FaultError> {
    let control = target.control_path();
    let mut out = Vec::new();
    for entry in to {
        let d = parse_dest(entry).map_err(FaultError::Precondition)?;
        let addresses = match &d.addr {
            DestAddr::Net(n) => vec![*n],
            DestAddr::Host(h) => lookup(h).await?,
        };
        if let Some(ip) = control_path_hits(&addresses, &control).first() {
            return Err(FaultError::Precondition(control_path_message(
                entry, *ip, target,
            )));
        }
        out.push(Resolved {
            to: entry.clone(),
            addresses,
            ports: d.port.map_or_else(|| ports.to_vec(), |p| vec![p]),
        });
    }
    Ok(out)
}

async fn lookup(host: &str) -> Result<Vec<IpNet>, FaultError> {
    let fut = tokio::net::lookup_host((host, 0));
    let addrs = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| FaultError::Precondition(format!("resolving `{host}` timed out after 5s")))?
        .map_err(|e| FaultError::Precondition(format!("cannot resolve `{host}`: {e}")))?;
    let mut nets: Vec<IpNet> = Vec::new();
    for a in addrs {
        let n = IpNet::host(a.ip());
        if !nets.contains(&n) {
            nets.push(n);
        }
    }
    if nets.is_empty() {
        return Err(FaultError::Precondition(format!(
            "`{host}` resolved to no address"
        )));
    }
    Ok(nets)
}

/// Destinations grouped by the ports their rules match: every group gets its own
/// address sets (`<prefix>_g<N>_v4|v6`, or `<prefix>_v4|v6` for a single group).
pub(crate) struct Group {
    pub ports: Vec<u16>,
    /// `(family, set name, addresses)` for each family with addresses.
    pub sets: Vec<(AddrFamily, String, Vec<IpNet>)>,
}

pub(crate) fn groups(prefix: &str, resolved: &[Resolved]) -> Vec<Group> {
    let mut by_ports: Vec<(Vec<u16>, Vec<IpNet>)> = Vec::new();
    for r in resolved {
        let mut ports = r.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        match by_ports.iter_mut().find(|(p, _)| *p == ports) {
            Some((_, nets)) => nets.extend(&r.addresses),
            None => by_ports.push((ports, r.addresses.clone())),
        }
    }
    let single = by_ports.len() == 1;
    by_ports
        .into_iter()
        .enumerate()
        .map(|(i, (ports, nets))| {
            let nets = nft::normalize(&nets);
            let sets = [AddrFamily::V4, AddrFamily::V6]
                .into_iter()
                .filter_map(|fam| {
                    let of: Vec<IpNet> = nets
                        .iter()
                        .filter(|n| AddrFamily::of(n) == fam)
                        .copied()
                        .collect();
                    let name = if single {
                        format!("{prefix}_{}", fam.suffix())
                    } else {
                        format!("{prefix}_g{i}_{}", fam.suffix())
                    };
                    (!of.is_empty()).then_some((fam, name, of))
                })
                .collect();
            Group { ports, sets }
        })
        .collect()
}

/// The statements that select the traffic of one group and family: addresses,
/// then protocol and ports. `proto` is a concrete protocol, or `All` for "any".
pub(crate) fn selector(
    fam: AddrFamily,
    side: Side,
    set: &str,
    proto: Protocol,
    ports: &[u16],
) -> Vec<Statement<'static>> {
    let mut v = vec![nft::addr_in_set(fam, side, set)];
    match proto {
        Protocol::Tcp => v.push(nft::l4proto_in(&["tcp"])),
        Protocol::Udp => v.push(nft::l4proto_in(&["udp"])),
        Protocol::Icmp => v.push(nft::l4proto_in(&[fam.icmp()])),
        Protocol::All if !ports.is_empty() => v.push(nft::l4proto_in(&["tcp", "udp"])),
        Protocol::All => {}
    }
    if !ports.is_empty() && proto != Protocol::Icmp {
        v.push(nft::port_in(side, ports));
    }
    v
}

// ── measuring ────────────────────────────────────────────────────────────────

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
    let (before, took) = crate::target::netns::run_in(target, move || {
        let t = Instant::now();
        let o = connect_once(address, Duration::from_millis(500));
        (o, t.elapsed())
    })
    .await
    .map_err(|e| FaultError::System(e.to_string()))?;
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
    crate::target::netns::run_in(target, move || {
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

// ── the undo record ──────────────────────────────────────────────────────────

/// The undo record of a network fault: which objects of which run table on which
/// target to delete, and what was resolved and observed at injection time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Undo {
    /// Where the rules live.
    pub target: Target,
    /// The run's table (`firedrill_<run id>`, family inet).
    pub table: String,
    /// This fault's chains and sets in that table.
    pub objects: Objects,
    /// What `to:` resolved to.
    pub resolved: Vec<Resolved>,
    /// The TCP endpoint used to measure the effect, if any.
    pub probe: Option<ProbePoint>,
    /// Element timeout in seconds: when the rules stop matching by themselves.
    pub ttl_s: u32,
}

impl Undo {
    /// Builds the record for a fault of step `step` in run `run_id`.
    pub(crate) fn new(
        ctx: &FaultCtx<'_>,
        objects: Objects,
        resolved: Vec<Resolved>,
        probe: Option<ProbePoint>,
    ) -> Result<Self, FaultError> {
        let table =
            RunTable::for_run(ctx.run_id).map_err(|e| FaultError::Precondition(e.to_string()))?;
        Ok(Undo {
            target: ctx.target.clone(),
            table: table.name().to_string(),
            objects,
            resolved,
            probe,
            ttl_s: nft::ttl_secs(ctx.ttl),
        })
    }

    pub(crate) fn run_table(&self) -> Result<RunTable, FaultError> {
        RunTable::from_name(&self.table).map_err(|e| FaultError::Precondition(e.to_string()))
    }

    /// The addresses, for reports.
    pub(crate) fn addresses(&self) -> serde_json::Value {
        serde_json::to_value(&self.resolved).unwrap_or_default()
    }

    /// Deletes this fault's chains and sets (one transaction), confirms traffic
    /// to the probe point flows again when it did before, then deletes the run
    /// table if nothing else of the run is left in it. Idempotent.
    pub(crate) async fn revert(&self, ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
        let start = Instant::now();
        let table = self.run_table()?;
        if let Target::Netns { name } = &self.target {
            // A namespace that no longer exists took its rules with it; failing here
            // forever would only make `recover` unable to ever finish.
            if !crate::target::netns::netns_path(name).exists() {
                return Ok(Reverted {
                    measured: format!(
                        "network namespace `{name}` no longer exists; its rules went with it"
                    ),
                    restored_after_ms: None,
                    details: serde_json::json!({ "table": table.name(), "namespace_gone": true }),
                });
            }
        }
        let sys = |e: nft::NftError| FaultError::System(e.to_string());
        let deleted = nft::delete_objects(&self.target, &table, &self.objects)
            .await
            .map_err(sys)?;
        let removed_ms = ms_since(start);
        let mut restored_after_ms = None;
        let mut flow = String::new();
        match &self.probe {
            Some(p) if p.reachable_before() && !ctx.hurry => {
                let deadline = Instant::now() + Duration::from_secs(2);
                let (o, _, attempts) = probe_until(
                    &self.target,
                    p.address,
                    p.attempt_timeout(),
                    deadline,
                    CancellationToken::new(),
                    |o| o == Outcome::Connected,
                )
                .await?;
                if o == Outcome::Connected {
                    restored_after_ms = Some(ms_since(start));
                    flow = format!("; {} connects again ({attempts} attempt(s))", p.address);
                } else {
                    flow = format!(
                        "; {} still {} after 2s although it connected before the fault",
                        p.address,
                        o.describe()
                    );
                }
            }
            Some(p) if !ctx.hurry => {
                flow = format!(
                    "; flow not confirmed: {} was already {} before the fault",
                    p.address,
                    p.before.describe()
                );
            }
            _ => {}
        }
        let table_deleted = nft::delete_table_if_empty(&self.target, &table)
            .await
            .map_err(sys)?;
        let what = if deleted.is_empty() {
            "rules already gone".to_string()
        } else {
            format!(
                "removed {} chain(s) and {} set(s) in {removed_ms:.1} ms",
                deleted.chains.len(),
                deleted.sets.len()
            )
        };
        let table_note = if table_deleted {
            format!("; table {} deleted", table.name())
        } else {
            String::new()
        };
        Ok(Reverted {
            measured: format!("{what} on {}{flow}{table_note}", self.target.describe()),
            restored_after_ms,
            details: serde_json::json!({
                "table": table.name(),
                "deleted": deleted,
                "rules_removed_ms": removed_ms,
                "table_deleted": table_deleted,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn destinations_parse() {
        let d = parse_dest("10.0.0.1").unwrap();
        assert_eq!((d.addr, d.port), (DestAddr::Net(net("10.0.0.1")), None));
        let d = parse_dest("10.0.0.1:443").unwrap();
        assert_eq!(d.port, Some(443));
        let d = parse_dest("10.0.0.0/24:80").unwrap();
        assert_eq!(
            (d.addr, d.port),
            (DestAddr::Net(net("10.0.0.0/24")), Some(80))
        );
        let d = parse_dest("2001:db8::1").unwrap();
        assert_eq!((d.addr, d.port), (DestAddr::Net(net("2001:db8::1")), None));
        let d = parse_dest("[2001:db8::1]:8443").unwrap();
        assert_eq!(d.port, Some(8443));
        let d = parse_dest("2001:db8::/32:80").unwrap();
        assert_eq!(
            (d.addr, d.port),
            (DestAddr::Net(net("2001:db8::/32")), Some(80))
        );
        let d = parse_dest("qyapi.weixin.qq.com:443").unwrap();
        assert_eq!(
            (d.addr, d.port),
            (DestAddr::Host("qyapi.weixin.qq.com".into()), Some(443))
        );
        assert_eq!(
            parse_dest("localhost").unwrap().addr,
            DestAddr::Host("localhost".into())
        );
    }

    #[test]
    fn bad_destinations_say_what_was_expected() {
        for (bad, says) in [
            ("", "empty"),
            ("10.0.0.0/33", "prefix"),
            ("10.0.0.1:0", "port `0`"),
            ("10.0.0.1:99999", "port `99999`"),
            ("host:http", "port `http`"),
            ("bad host", "expected an IP address"),
            ("10.0.0", "expected an IP address"),
            ("[::1", "closing"),
            ("10.0.0.0/8x", "prefix length"),
        ] {
            let e = parse_dest(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn control_path_check_refuses_covering_destinations() {
        // A fake control path, as an SSH target will report it.
        let control: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::5".parse().unwrap(),
        ];
        assert_eq!(
            control_path_hits(&[net("192.0.2.0/24")], &control),
            vec![control[0]]
        );
        assert_eq!(
            control_path_hits(&[net("2001:db8::/32")], &control),
            vec![control[1]]
        );
        assert!(control_path_hits(&[net("192.0.3.0/24"), net("10.0.0.1")], &control).is_empty());
        assert_eq!(
            control_path_hits(&[net("0.0.0.0/0")], &control),
            vec![control[0]]
        );
        // Local and netns targets have no control path: nothing is refused there.
        let errs = validate_common(&["0.0.0.0/0".into()], &[], Protocol::All, &Target::Local);
        assert!(errs.is_empty(), "{errs:?}");
        let msg = control_path_message("192.0.2.0/24", control[0], &Target::Local);
        assert!(
            msg.contains("192.0.2.10") && msg.contains("control path"),
            "{msg}"
        );
    }

    #[test]
    fn validation_reports_paths() {
        let errs = validate_common(&[], &[0], Protocol::All, &Target::Local);
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["with.to", "with.ports[0]"]);
        let errs = validate_common(
            &["10.0.0.1".into(), "nope nope".into(), "10.0.0.2:22".into()],
            &[80],
            Protocol::Icmp,
            &Target::Local,
        );
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["with.to[1]", "with.to[2]", "with.ports"]);
    }

    #[test]
    fn groups_split_by_ports_and_family() {
        let r = vec![
            Resolved {
                to: "a".into(),
                addresses: vec![net("10.0.0.1"), net("::1")],
                ports: vec![],
            },
            Resolved {
                to: "b".into(),
                addresses: vec![net("10.0.0.0/24")],
                ports: vec![],
            },
            Resolved {
                to: "c:80".into(),
                addresses: vec![net("10.9.0.1")],
                ports: vec![80],
            },
        ];
        let g = groups("f_x", &r);
        assert_eq!(g.len(), 2);
        assert!(g[0].ports.is_empty());
        assert_eq!(g[0].sets.len(), 2);
        assert_eq!(g[0].sets[0].1, "f_x_g0_v4");
        assert_eq!(
            g[0].sets[0].2,
            vec![net("10.0.0.0/24")],
            "the host inside the /24 is folded into it"
        );
        assert_eq!(g[1].sets[0].1, "f_x_g1_v4");
        let single = groups("f_y", &r[..1]);
        assert_eq!(single[0].sets[1].1, "f_y_v6");
    }

    #[tokio::test]
    async fn resolve_records_host_name_addresses() {
        let r = resolve(
            &["localhost:8080".into(), "10.0.0.0/8".into()],
            &[443],
            &Target::Local,
        )
        .await
        .unwrap();
        assert!(
            r[0].addresses.iter().any(|a| a.addr().is_loopback()),
            "{r:?}"
        );
        assert_eq!(r[0].ports, [8080]);
        assert_eq!(r[1].ports, [443]);
        let e = resolve(&["no-such-host.invalid".into()], &[], &Target::Local)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
    }

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
