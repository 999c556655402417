//! Sockets inside a network namespace.
//!
//! A socket belongs to the namespace of the thread that created it, for its whole
//! life, whatever thread uses it later. So a proxy serving a namespace creates its
//! listening and upstream sockets on a short-lived thread that joined the namespace
//! with setns(2), and then drives them from the engine's ordinary tokio threads.

use std::os::fd::AsFd;

use nix::sched::{CloneFlags, setns};

/// Path of a named namespace as `ip netns` creates it.
pub(crate) fn path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// Runs `f` on a fresh thread that joined network namespace `name` (by `ip netns`
/// name), and returns its result. The calling thread's namespace is untouched.
pub(crate) fn in_netns<T, F>(name: &str, f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let path = path(name);
    std::thread::Builder::new()
        .name("firedrill-netns".into())
        .spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot open network namespace {path}: {e}"),
                )
            })?;
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                std::io::Error::other(format!("cannot enter network namespace {path}: {e}"))
            })?;
            f()
        })?
        .join()
        .map_err(|_| std::io::Error::other("namespace helper thread panicked"))?
}
