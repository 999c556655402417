//! Hosts as scenarios write them (`10.0.0.5`, `[2001:db8::1]`, `api.example.com`),
//! checked where they are accepted.
//!
//! A host reaches sockets, resolvers and, in older code, reached a shell line: any
//! value here may come from a `--var` set by a CI parameter. Only an IP literal or a
//! DNS name per RFC 1123 is a host, so `/`, `;`, spaces, quotes and the like are
//! refused at validation, before anything runs.

use std::net::IpAddr;

/// What a host may be, in the words of validation messages.
pub(crate) const HOST_EXPECTED: &str =
    "expected an IP address or a host name (letters, digits, `-` and `.`, as RFC 1123 allows)";

/// Whether `h` is a DNS host name per RFC 1123: dot-separated labels of 1 to 63
/// letters, digits and `-` (not at either end of a label), 253 characters at most,
/// optionally ending in `.`. All-numeric dotted names are malformed IPv4 addresses,
/// not names.
pub(crate) fn is_dns_name(h: &str) -> bool {
    let name = h.strip_suffix('.').unwrap_or(h);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(label_ok)
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Checks a host: an IP literal (IPv6 with or without brackets) or a DNS name.
pub(crate) fn check_host(h: &str) -> Result<(), String> {
    let bare = h
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(h);
    if bare.parse::<IpAddr>().is_ok() || is_dns_name(h) {
        Ok(())
    } else {
        Err(format!("found host `{h}`, {HOST_EXPECTED}"))
    }
}

/// Splits and checks `host:port` (`[v6]:port` for IPv6). The port is 1 to 65535.
/// Returns the host without brackets, ready for a resolver.
pub(crate) fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let expected = "expected host:port ([v6]:port for IPv6)";
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("found `{s}` without a closing `]`, {expected}"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| format!("found `{s}`, {expected}"))?;
            if inside.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!(
                    "found `[{inside}]` in `{s}`, expected an IPv6 address between `[` and `]`"
                ));
            }
            (inside, port)
        }
        None => {
            let (h, p) = s
                .rsplit_once(':')
                .ok_or_else(|| format!("found `{s}`, {expected}"))?;
            if h.is_empty() {
                return Err(format!("found `{s}` without a host, {expected}"));
            }
            if h.contains(':') {
                return Err(format!(
                    "found `{s}`, {expected}: an IPv6 address needs brackets"
                ));
            }
            if check_host(h).is_err() {
                return Err(format!("found host `{h}` in `{s}`, {HOST_EXPECTED}"));
            }
            (h, p)
        }
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_string(), p)),
        _ => Err(format!(
            "found port `{port}` in `{s}`, expected a number from 1 to 65535"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in [
            "127.0.0.1",
            "::1",
            "[::1]",
            "localhost",
            "db-1.internal",
            "api.example.com.",
            "a",
            "1password.com",
        ] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1/1;touch /tmp/x;#",
            "a b",
            "a;b",
            "$(id)",
            "`id`",
            "a/b",
            "-rf",
            "a..b",
            "a-.b",
            "1.2.3",
            "256.1.1.1",
            "x\ny",
            "a_b",
            &"a".repeat(64),
        ] {
            let e = check_host(bad).unwrap_err();
            assert!(e.contains("RFC 1123"), "{bad}: {e}");
        }
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            parse_host_port("127.0.0.1:80").unwrap(),
            ("127.0.0.1".into(), 80)
        );
        assert_eq!(parse_host_port("[::1]:443").unwrap(), ("::1".into(), 443));
        assert_eq!(
            parse_host_port("db.internal:5432").unwrap(),
            ("db.internal".into(), 5432)
        );
        for (bad, why) in [
            ("127.0.0.1/1;touch /tmp/x;#:1", "RFC 1123"),
            ("127.0.0.1", "host:port"),
            (":80", "without a host"),
            ("::1:80", "brackets"),
            ("[::1:80", "closing"),
            ("[nope]:80", "IPv6"),
            ("h:0", "1 to 65535"),
            ("h:http", "1 to 65535"),
        ] {
            let e = parse_host_port(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
