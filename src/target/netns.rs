//! The `netns` target: a network namespace on this host (`ip netns`).
//!
//! Code enters the namespace from a dedicated thread with `setns(2)` rather than
//! through `ip netns exec`, which costs a process start plus a mount-namespace setup
//! (several ms, tens under load): network faults act and measure within a few ms.
//! Sockets opened on that thread live in the namespace (and stay usable from any
//! thread), and processes started from it inherit it. The thread is never reused,
//! so no other code ever runs in a namespace it did not ask for.
//!
//! Processes started here see the namespace's network but this host's files:
//! unlike `ip netns exec`, `/etc/netns/NAME/` is not bind-mounted over `/etc` and
//! `/sys` is not remounted. Names resolve the same way for a probe's sockets, for
//! [`resolve`] and for a command, with this host's `/etc/hosts` and resolver
//! configuration, queried from inside the namespace.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use nix::sched::CloneFlags;

/// Checks a network-namespace name. It becomes a path under `/run/netns` and an
/// argument of `ip netns exec`, so it must be one path component of safe characters:
/// letters, digits, `_`, `-` and `.`, at most 64, not starting with `.` or `-` (never
/// `..`, never an option). `ip netns add` accepts every such name.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "found namespace name `{name}`, expected a name as `ip netns add` makes it: 1 to 64 letters, digits, `_`, `-` or `.`, not starting with `.` or `-`"
        ))
    }
}

/// Where `ip netns` keeps the handle of a named namespace.
pub(crate) fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

pub(super) fn describe(name: &str) -> String {
    format!("netns:{name}")
}

pub(super) fn lock_key(name: &str) -> String {
    format!("netns-{name}")
}

/// Driven through the kernel of this host: no network path to protect.
pub(super) fn control_path() -> Vec<IpAddr> {
    Vec::new()
}

/// A namespace whose handle is gone took its sockets and rules with it.
pub(super) fn is_gone(name: &str) -> bool {
    !netns_path(name).exists()
}

pub(super) async fn in_network<T, F>(name: &str, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    on_thread(Some(open_netns(name)?), f).await
}

/// Started from a thread in the namespace, on the caller's runtime (which reaps it).
pub(super) async fn spawn(
    name: &str,
    mut c: tokio::process::Command,
) -> io::Result<tokio::process::Child> {
    let rt = tokio::runtime::Handle::current();
    in_network(name, move || {
        let _in_rt = rt.enter();
        c.spawn()
    })
    .await?
}

pub(super) async fn resolve(name: &str, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    let host = host.to_string();
    in_network(name, move || {
        (host.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
    })
    .await?
}

/// The socket is made in the namespace, then connected on the caller's runtime.
pub(super) async fn connect_tcp(
    name: &str,
    addr: SocketAddr,
    mark: Option<u32>,
) -> io::Result<tokio::net::TcpStream> {
    let sock = in_network(name, move || super::tcp_socket(addr, mark)).await??;
    super::connect_socket(sock, addr).await
}

/// Runs `f` on a fresh thread, inside namespace `ns` when given, and returns its
/// result; the caller awaits it without blocking a runtime worker.
pub(super) async fn on_thread<T, F>(ns: Option<std::fs::File>, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("firedrill-netns".into())
        .spawn(move || {
            let result = match ns {
                Some(fd) => nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)
                    .map(|()| f()),
                None => Ok(f()),
            };
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

fn open_netns(name: &str) -> io::Result<std::fs::File> {
    // Scenarios are validated, but a target also comes back from a ledger on disk.
    check_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let path = netns_path(name);
    std::fs::File::open(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot open network namespace `{name}` ({}): {e}; expected a namespace created with `ip netns add {name}`",
                path.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

    #[tokio::test]
    async fn local_runs_in_this_namespace() {
        let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let there = Target::Local
            .in_network(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
            .await
            .unwrap();
        assert_eq!(mine, there);
    }

    #[test]
    fn namespace_names() {
        for ok in ["app", "fdt-cli-12-0-c", "a.b_c", "A1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../proc/1/ns/net",
            "a/b",
            ".hidden",
            "-n",
            "a b",
            "a;b",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_path_is_never_opened_as_a_namespace() {
        let t = Target::Netns {
            name: "../../proc/1/ns/net".into(),
        };
        let e = t.in_network(|| ()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[tokio::test]
    async fn missing_namespace_is_a_clear_error() {
        let t = Target::Netns {
            name: "firedrill-no-such-ns".into(),
        };
        let e = t.in_network(|| ()).await.unwrap_err();
        assert!(e.to_string().contains("ip netns add"), "{e}");
    }
}
