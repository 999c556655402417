//! A minimal HTTP/1.1 server for the WeCom simulator and relay: keep-alive,
//! `Content-Length` bodies, JSON answers. Just enough for loopback drills; both
//! binaries include this file (`#[path]`), so it is not part of the library.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One parsed request.
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One answer: status and JSON body. `None` from a handler: close without answering.
pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Response {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Response { status, body }
    }
}

pub type Handler =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Option<Response>> + Send>> + Send + Sync>;

/// Serves `listener` forever, one task per connection.
pub async fn serve(listener: TcpListener, handler: Handler) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let _ = connection(s, h).await;
        });
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .collect()
}

async fn connection(mut s: TcpStream, h: Handler) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Read until the headers are complete.
        let (req, used, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Request::new(&mut headers);
            match r.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut len = 0usize;
                    let mut close = r.version == Some(0);
                    for hd in r.headers.iter() {
                        if hd.name.eq_ignore_ascii_case("content-length") {
                            len = std::str::from_utf8(hd.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                        }
                        if hd.name.eq_ignore_ascii_case("connection") {
                            close = hd.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    if len > 4 << 20 {
                        return Ok(());
                    }
                    let target = r.path.unwrap_or("/").to_string();
                    let method = r.method.unwrap_or("GET").to_string();
                    while buf.len() < n + len {
                        let mut chunk = [0u8; 8192];
                        let k = s.read(&mut chunk).await?;
                        if k == 0 {
                            return Ok(());
                        }
                        buf.extend_from_slice(&chunk[..k]);
                    }
                    let (path, query) = match target.split_once('?') {
                        Some((p, q)) => (p.to_string(), parse_query(q)),
                        None => (target, HashMap::new()),
                    };
                    let body = buf[n..n + len].to_vec();
                    break (
                        Request {
                            method,
                            path,
                            query,
                            body,
                        },
                        n + len,
                        close,
                    );
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > 64 * 1024 {
                        return Ok(());
                    }
                    let mut chunk = [0u8; 8192];
                    let k = s.read(&mut chunk).await?;
                    if k == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..k]);
                }
                Err(_) => {
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return Ok(());
                }
            }
        };
        buf.drain(..used);
        let Some(resp) = h(req).await else {
            return Ok(()); // the handler chose to drop the connection
        };
        let body = resp.body.to_string();
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n",
            resp.status,
            reason(resp.status),
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Milliseconds since the Unix epoch (what admin endpoints report as receive times).
pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// `--name VALUE` from the arguments, repeated ones in order.
pub fn opts(args: &[String], name: &str) -> Vec<String> {
    args.iter()
        .enumerate()
        .filter(|(_, a)| *a == name)
        .filter_map(|(i, _)| args.get(i + 1).cloned())
        .collect()
}

/// The last `--name VALUE`.
pub fn opt(args: &[String], name: &str) -> Option<String> {
    opts(args, name).pop()
}

/// Serves until SIGTERM or SIGINT, then removes the pidfile: how both binaries end
/// (exit 0).
pub async fn serve_until_signal(listener: TcpListener, handler: Handler, pidfile: Option<&str>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = serve(listener, handler) => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    if let Some(p) = pidfile {
        let _ = std::fs::remove_file(p);
    }
}
