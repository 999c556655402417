//! The original destination of a redirected connection (transparent mode).
//!
//! An nftables `redirect` rewrites the destination of a connection to the proxy's
//! port; conntrack remembers the address the client really dialled, and the kernel
//! hands it back through `getsockopt(SOL_IP, SO_ORIGINAL_DST)`. IPv4 only: the
//! redirect rules this engine writes are IPv4 rules.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use nix::sys::socket::{getsockopt, sockopt::OriginalDst};

/// The address the client dialled before the redirect.
pub(crate) fn original_dst(s: &tokio::net::TcpStream) -> std::io::Result<SocketAddr> {
    let sin = getsockopt(s, OriginalDst).map_err(|e| {
        std::io::Error::other(format!(
            "cannot read the original destination (SO_ORIGINAL_DST): {e}"
        ))
    })?;
    let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
    Ok(SocketAddr::V4(SocketAddrV4::new(
        ip,
        u16::from_be(sin.sin_port),
    )))
}
