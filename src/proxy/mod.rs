//! The chaos proxy: a tokio TCP proxy that the `latency` and `http_fault` faults
//! start and their reverts stop.
//!
//! It lives inside the engine (no helper process) so that its lifetime is the
//! fault's: the handle is stored in the run's [`crate::rt::Runtime`] and the
//! revert takes it back and awaits [`Proxy::stop`], which cancels the accept loop and
//! every connection task and waits for all of them, so the port is closed when the
//! revert returns. If the engine dies, the proxy dies with it.
//!
//! What lives where:
//! - this file: lifecycle (listen, accept, connect upstream, forward, shutdown) and
//!   the counters;
//! - [`latency`]: the latency toxic (per chunk on TCP, per request on HTTP);
//! - [`http`]: HTTP/1.1 request/response framing and the fault rules' effects;
//! - [`rules`]: the `http_fault` rule types, matching and token buckets;
//! - [`profiles`]: the table of canned vendor error responses (WeCom errcodes, 429…);
//! - [`timer`]: the deadline-precise sleep;
//! - [`orig_dst`]: the original destination of a redirected connection (transparent
//!   mode). The proxy's sockets live in its target's network: the caller binds the
//!   listener there ([`Target::listen_tcp`]) and upstream connections are made
//!   there ([`Target::connect_tcp`]); the proxy knows no target kind.
//!
//! Both sides get TCP_NODELAY: a proxy that lets Nagle hold small writes adds ~40 ms
//! stalls to request/response traffic, which would be an unintended fault.

pub mod http;
pub mod latency;
pub(crate) mod orig_dst;
pub mod profiles;
pub mod rules;
pub mod timer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::target::Target;

pub use latency::Toxic;

/// Read buffer per direction: large enough that bulk transfers are not syscall-bound.
pub(crate) const BUF_SIZE: usize = 64 * 1024;

/// Where the proxy sends what it accepts.
#[derive(Clone, Debug)]
pub enum Upstream {
    /// A fixed `host:port` (explicit mode).
    Addr(String),
    /// The destination the client originally dialled, recovered with SO_ORIGINAL_DST
    /// from a connection that an nftables `redirect` sent here (transparent mode).
    OriginalDst,
}

/// What the proxy does to the traffic.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Byte stream; optional latency per chunk for each direction.
    Tcp {
        /// Client → upstream.
        up: Option<Toxic>,
        /// Upstream → client.
        down: Option<Toxic>,
    },
    /// HTTP/1.1 requests, each matched against the fault rules.
    Http(Arc<http::HttpFaults>),
}

/// How to run one proxy.
#[derive(Clone, Debug)]
pub struct Config {
    pub upstream: Upstream,
    pub behaviour: Behaviour,
    /// The target whose network the upstream connections are made in (the caller
    /// binds the listening socket there too, with [`Target::listen_tcp`]).
    pub network: Target,
    /// SO_MARK on upstream connections, so the redirect rule can let the proxy's
    /// own traffic through instead of redirecting it back to the proxy.
    pub mark: Option<u32>,
}

/// Traffic counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub active: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub chunks_delayed: AtomicU64,
    pub upstream_errors: AtomicU64,
}

/// A copy of the counters, for effects, reverts and tests.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct StatsSnapshot {
    pub connections: u64,
    pub active: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub chunks_delayed: u64,
    pub upstream_errors: u64,
    /// HTTP mode only: requests seen, forwarded, and hits per rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<http::HttpCounters>,
}

/// A running proxy. Dropping it without [`Proxy::stop`] still cancels every task.
///
/// The proxy runs on its own thread with a single-threaded tokio runtime: its
/// timing (injected delays, added latency) does not depend on what the engine's
/// runtime is busy with (probes, traffic load), and a single thread avoids
/// cross-thread wake-ups on every forwarded chunk (they cost tens of µs at p99).
pub struct Proxy {
    addr: SocketAddr,
    cancel: CancellationToken,
    stats: Arc<Stats>,
    http: Option<Arc<http::HttpFaults>>,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Proxy {
    /// Starts serving on `listener` (already bound, possibly inside a namespace).
    pub fn start(listener: std::net::TcpListener, cfg: Config) -> std::io::Result<Proxy> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let http = match &cfg.behaviour {
            Behaviour::Http(h) => Some(h.clone()),
            Behaviour::Tcp { .. } => None,
        };
        let cfg = Arc::new(cfg);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (cancel2, stats2) = (cancel.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("firedrill-proxy".into())
            .spawn(move || {
                // This thread runs this one runtime until it exits: the latency
                // timers may keep their descriptors registered with its epoll.
                timer::pool_timerfds_on_this_thread();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let tracker = TaskTracker::new();
                    accept_loop(listener, cfg, addr, &cancel2, &stats2, &tracker).await;
                    // Dropping the listener (above) closed the port; now every
                    // connection task ends and is awaited.
                    tracker.close();
                    tracker.wait().await;
                });
                drop(rt);
                let _ = done_tx.send(());
            })?;
        ready_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("proxy thread died at start")))?;
        Ok(Proxy {
            addr,
            cancel,
            stats,
            http,
            done: Some(done_rx),
            thread: Some(thread),
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Current counters.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            connections: s.connections.load(Relaxed),
            active: s.active.load(Relaxed),
            bytes_up: s.bytes_up.load(Relaxed),
            bytes_down: s.bytes_down.load(Relaxed),
            chunks_delayed: s.chunks_delayed.load(Relaxed),
            upstream_errors: s.upstream_errors.load(Relaxed),
            http: self.http.as_ref().map(|h| h.counters()),
        }
    }

    /// Stops accepting, ends every connection and waits for every task and the
    /// proxy's thread; the listening port is closed when this returns. Returns the
    /// final counters.
    pub async fn stop(mut self) -> StatsSnapshot {
        self.cancel.cancel();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        self.stats()
    }
}

/// Accepts until cancelled; each connection is a tracked task.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    cfg: Arc<Config>,
    addr: SocketAddr,
    cancel: &CancellationToken,
    stats: &Arc<Stats>,
    tracker: &TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else {
            // EMFILE and friends: back off a little instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        };
        stats.connections.fetch_add(1, Relaxed);
        let (cfg, cancel, stats) = (cfg.clone(), cancel.clone(), stats.clone());
        tracker.spawn(async move {
            stats.active.fetch_add(1, Relaxed);
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = serve(client, &cfg, addr, &stats) => {
                    if let Err(e) = r {
                        tracing::debug!("proxy connection ended: {e}");
                    }
                }
            }
            stats.active.fetch_sub(1, Relaxed);
        });
    }
}

/// One accepted connection: connect upstream, then forward until either side is done.
async fn serve(
    client: TcpStream,
    cfg: &Config,
    me: SocketAddr,
    stats: &Stats,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let dest = match &cfg.upstream {
        Upstream::Addr(a) => resolve_upstream(&cfg.network, a).await?,
        Upstream::OriginalDst => {
            let d = orig_dst::original_dst(&client)?;
            let to_me = d.port() == me.port() && (me.ip().is_unspecified() || d.ip() == me.ip());
            if to_me {
                // Not redirected: someone dialled the proxy itself. Forwarding to
                // ourselves would loop forever.
                return Err(std::io::Error::other(
                    "connection was not redirected (original destination is the proxy)",
                ));
            }
            d
        }
    };
    let upstream = match cfg.network.connect_tcp(dest, None, cfg.mark).await {
        Ok(u) => u,
        Err(e) => {
            stats.upstream_errors.fetch_add(1, Relaxed);
            return Err(e.into());
        }
    };
    upstream.set_nodelay(true)?;
    match &cfg.behaviour {
        Behaviour::Http(faults) => {
            http::serve(client, upstream, faults, stats, &cfg.network, cfg.mark).await
        }
        Behaviour::Tcp { up, down } => {
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            let to_up = async {
                match up {
                    Some(t) => latency::delayed_copy(cr, uw, t, stats, &stats.bytes_up).await,
                    None => copy(cr, uw, &stats.bytes_up).await,
                }
            };
            let to_down = async {
                match down {
                    Some(t) => latency::delayed_copy(ur, cw, t, stats, &stats.bytes_down).await,
                    None => copy(ur, cw, &stats.bytes_down).await,
                }
            };
            tokio::try_join!(to_up, to_down).map(|_| ())
        }
    }
}

/// Plain copy with a large buffer; passes the half-close on.
pub(crate) async fn copy<R, W>(mut r: R, mut w: W, bytes: &AtomicU64) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        w.write_all(&buf[..n]).await?;
        bytes.fetch_add(n as u64, Relaxed);
    }
}

/// The first address of upstream `host:port`, resolved as the proxy's target would.
async fn resolve_upstream(on: &Target, a: &str) -> std::io::Result<SocketAddr> {
    if let Ok(addr) = a.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = crate::target::host::parse_host_port(a)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    Ok(on.resolve(&host, port).await?[0])
}
