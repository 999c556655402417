//! The `local` target: this host, reached directly through the kernel.

use std::io;
use std::net::{IpAddr, SocketAddr};

pub(super) fn describe() -> String {
    "local".into()
}

pub(super) fn lock_key() -> String {
    "local".into()
}

/// The engine runs here: no network path to protect.
pub(super) fn control_path() -> Vec<IpAddr> {
    Vec::new()
}

pub(super) fn spawn(c: &mut tokio::process::Command) -> io::Result<tokio::process::Child> {
    c.spawn()
}

/// A fresh thread, so blocking socket code never holds a runtime worker.
pub(super) async fn in_network<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    super::netns::on_thread(None, f).await
}

pub(super) async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((host, port)).await?.collect())
}

pub(super) async fn connect_tcp(
    addr: SocketAddr,
    mark: Option<u32>,
) -> io::Result<tokio::net::TcpStream> {
    match mark {
        None => tokio::net::TcpStream::connect(addr).await,
        Some(_) => super::connect_socket(super::tcp_socket(addr, mark)?, addr).await,
    }
}
