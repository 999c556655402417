//! Shared pieces of the chaos-proxy tests: a real HTTP/1.1 upstream on 127.0.0.1,
//! a raw keep-alive client that times each response, and fault injection through
//! the library's fault API (prepare → apply → revert), exactly as the engine does.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::faults;
pub use crate::common::free_port;
use firedrill::fault::{Effect, FaultSpec, Reverted, Undo};
use firedrill::rt::Runtime;
use firedrill::target::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A minimal keep-alive HTTP/1.1 server. `GET /stream` answers with 5 chunks sent
/// 20 ms apart (chunked encoding); everything else gets `{"errcode":0,...}`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (r, s) = (requests.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (c, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    a = l.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (r, s) = (r.clone(), s.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = s.cancelled() => {}
                        _ = serve(c, r) => {}
                    }
                });
            }
        });
        Upstream {
            addr,
            requests,
            stop,
        }
    }
}

async fn serve(mut c: TcpStream, count: Arc<AtomicU64>) -> std::io::Result<()> {
    c.set_nodelay(true)?;
    let mut buf = Vec::new();
    loop {
        let (len, path, body_len) = loop {
            let mut h = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut h);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let cl = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                break (n, req.path.unwrap_or("/").to_string(), cl);
            }
            let mut tmp = [0u8; 8192];
            let n = c.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        while buf.len() < len + body_len {
            let mut tmp = [0u8; 8192];
            let n = c.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        buf.drain(..len + body_len);
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if path == "/stream" {
            c.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            for i in 0..5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let chunk = format!("chunk{i}\n");
                c.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                    .await?;
            }
            c.write_all(b"0\r\n\r\n").await?;
            continue;
        }
        let body = format!(r#"{{"errcode":0,"errmsg":"ok","n":{n}}}"#);
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        c.write_all(resp.as_bytes()).await?;
    }
}

/// A raw keep-alive client: one connection, one request at a time.
pub struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

/// One timed response.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub elapsed: Duration,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, buf: Vec::new() }
    }

    /// Sends `GET path` and reads one Content-Length response; timed from the write.
    pub async fn get(&mut self, path: &str) -> std::io::Result<Answer> {
        let t = Instant::now();
        self.s
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await?;
        loop {
            let mut h = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut h);
            if let Ok(httparse::Status::Complete(n)) = resp.parse(&self.buf) {
                let status = resp.code.unwrap();
                let cl: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= n + cl {
                    let body = String::from_utf8_lossy(&self.buf[n..n + cl]).into_owned();
                    self.buf.drain(..n + cl);
                    return Ok(Answer {
                        status,
                        body,
                        elapsed: t.elapsed(),
                    });
                }
            }
            let mut tmp = [0u8; 8192];
            let n = self.s.read(&mut tmp).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed",
                ));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}

/// A fault built from `kind` + `with`, as a scenario would write it.
pub fn spec(kind: &str, with: serde_json::Value) -> FaultSpec {
    let spec: FaultSpec =
        serde_json::from_value(serde_json::json!({ "kind": kind, "with": with })).unwrap();
    let errs = spec.validate(&Target::Local);
    assert!(errs.is_empty(), "invalid fault: {errs:?}");
    spec
}

/// A chaos-proxy fault of `kind` in front of `upstream`, listening on a free port of
/// 127.0.0.1 and injected on the local host: the proxy's address and the injection.
/// `with` is the rest of the fault's `with` (`listen` and `upstream` are set here).
pub async fn inject_local_proxy(
    kind: &str,
    upstream: SocketAddr,
    mut with: serde_json::Value,
) -> (SocketAddr, Injected) {
    let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
    with["listen"] = proxy.to_string().into();
    with["upstream"] = upstream.to_string().into();
    (proxy, inject(&spec(kind, with), &Target::Local).await)
}

/// An injected fault and what is needed to revert it.
pub struct Injected {
    pub runtime: Runtime,
    pub undo: Undo,
    pub effect: Effect,
}

/// Injects with a runtime of its own, as one step of the engine would.
pub async fn inject(spec: &FaultSpec, target: &Target) -> Injected {
    let runtime = Runtime::default();
    let (undo, effect) = faults::inject_ok(spec, target, "proxy", &runtime).await;
    Injected {
        runtime,
        undo,
        effect,
    }
}

impl Injected {
    pub async fn revert(&self) -> Reverted {
        let r = faults::revert_with(&self.undo, &self.runtime)
            .await
            .expect("revert");
        // Idempotent: a second revert (as `firedrill recover` would do) succeeds too.
        faults::revert(&self.undo).await.expect("second revert");
        r
    }
}

/// Asserts nothing accepts connections on `addr` any more.
pub fn assert_closed(addr: SocketAddr) {
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
        "{addr} still accepts connections"
    );
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
