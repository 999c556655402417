//! Running code inside a target's network namespace without starting a process.
//!
//! `ip netns exec` costs a process start plus a mount-namespace setup (several ms,
//! tens under load). Network faults need to act and to measure within a few ms, so
//! they enter the namespace from a dedicated thread with `setns(2)` instead: sockets
//! opened there live in the namespace (and stay usable from any thread), and child
//! processes spawned there (e.g. `nft`) inherit it. The thread is never reused, so
//! no other code ever runs in a namespace it did not ask for.

use std::io;
use std::path::PathBuf;

use nix::sched::CloneFlags;

use super::Target;

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

/// Runs `f` on a fresh thread that lives in the network namespace of `target` (for
/// `local`, this host's namespace) and returns its result. The caller awaits it
/// without blocking a runtime worker.
pub(crate) async fn run_in<T, F>(target: &Target, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let ns = match target {
        Target::Local => None,
        Target::Netns { name } => Some(open_netns(name)?),
    };
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

    #[tokio::test]
    async fn local_runs_in_this_namespace() {
        let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let there = run_in(&Target::Local, || {
            std::fs::read_link("/proc/thread-self/ns/net").unwrap()
        })
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
        let e = run_in(&t, || ()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[tokio::test]
    async fn missing_namespace_is_a_clear_error() {
        let t = Target::Netns {
            name: "firedrill-no-such-ns".into(),
        };
        let e = run_in(&t, || ()).await.unwrap_err();
        assert!(e.to_string().contains("ip netns add"), "{e}");
    }
}
