//! Destinations (`to:`): parsing what a scenario wrote (IP addresses, CIDRs, host
//! names, each optionally with a port), the checks made when a scenario is
//! validated, resolution of host names when the fault is injected, and the
//! grouping of the resolved addresses into the address sets the rules match.
//!
//! Why in one place: whatever the fault kind, `to:` must parse the same way and
//! must never cover the engine's own control path to the target, both before the
//! drill (addresses written as such) and after resolution (host names).

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::params::Protocol;
use crate::fault::FaultError;
use crate::nft::{self, AddrFamily, IpNet};
use crate::target::Target;

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
    // On a remote host, also the engine's own address as the host sees it.
    let control = target.control_peers().await;
    let mut out = Vec::new();
    for entry in to {
        let d = parse_dest(entry).map_err(FaultError::Precondition)?;
        let addresses = match &d.addr {
            DestAddr::Net(n) => vec![*n],
            // A remote host's rules act on what its own resolver says.
            DestAddr::Host(h) if target.is_remote() => {
                let addrs = target
                    .resolve(h, 0)
                    .await
                    .map_err(|e| FaultError::Precondition(e.to_string()))?;
                let nets = distinct_hosts(addrs);
                if nets.is_empty() {
                    return Err(FaultError::Precondition(format!(
                        "`{h}` resolved to no address on {}",
                        target.describe()
                    )));
                }
                nets
            }
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

/// Each address once, as a host network, in the resolver's order.
fn distinct_hosts(addrs: impl IntoIterator<Item = std::net::SocketAddr>) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = Vec::new();
    for a in addrs {
        let n = IpNet::host(a.ip());
        if !nets.contains(&n) {
            nets.push(n);
        }
    }
    nets
}

async fn lookup(host: &str) -> Result<Vec<IpNet>, FaultError> {
    let fut = tokio::net::lookup_host((host, 0));
    let addrs = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| FaultError::Precondition(format!("resolving `{host}` timed out after 5s")))?
        .map_err(|e| FaultError::Precondition(format!("cannot resolve `{host}`: {e}")))?;
    let nets = distinct_hosts(addrs);
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

#[cfg(test)]
impl Resolved {
    /// `to` resolved to `addresses`, its rules matching `ports`.
    pub(crate) fn of(to: &str, addresses: &[&str], ports: &[u16]) -> Self {
        Resolved {
            to: to.into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            ports: ports.to_vec(),
        }
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
        let ip = |s: &str| DestAddr::Net(net(s));
        let host = |h: &str| DestAddr::Host(h.into());
        for (written, addr, port) in [
            ("10.0.0.1", ip("10.0.0.1"), None),
            ("10.0.0.1:443", ip("10.0.0.1"), Some(443)),
            ("10.0.0.0/24:80", ip("10.0.0.0/24"), Some(80)),
            ("2001:db8::1", ip("2001:db8::1"), None),
            ("[2001:db8::1]:8443", ip("2001:db8::1"), Some(8443)),
            ("2001:db8::/32:80", ip("2001:db8::/32"), Some(80)),
            (
                "qyapi.weixin.qq.com:443",
                host("qyapi.weixin.qq.com"),
                Some(443),
            ),
            ("localhost", host("localhost"), None),
        ] {
            let d = parse_dest(written).unwrap();
            assert_eq!((d.addr, d.port), (addr, port), "{written}");
        }
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
            Resolved::of("a", &["10.0.0.1", "::1"], &[]),
            Resolved::of("b", &["10.0.0.0/24"], &[]),
            Resolved::of("c:80", &["10.9.0.1"], &[80]),
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
}
