//! HTTP/1.1 fault handling: requests are parsed incrementally (httparse), matched
//! against the rules, and then forwarded, delayed, answered with a canned response,
//! or reset.
//!
//! One request at a time per connection (keep-alive, no pipelining in flight): a
//! request is answered completely before the next one is read, which keeps canned
//! and forwarded answers in order. Bodies are streamed, never buffered whole;
//! framing follows RFC 9112 (Content-Length, chunked, or until close for responses).
//! The upstream connection is opened lazily and reused across requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::rules::{Compiled, Decision, Rule};
use super::{BUF_SIZE, Stats};

/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// The rules of one `http_fault` proxy, with counters.
#[derive(Debug)]
pub struct HttpFaults {
    rules: Vec<Compiled>,
    requests: AtomicU64,
    forwarded: AtomicU64,
    answered: AtomicU64,
    aborted: AtomicU64,
    delayed: AtomicU64,
    rerouted: AtomicU64,
}

/// Counters of an HTTP-mode proxy.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct HttpCounters {
    /// Requests read from clients.
    pub requests: u64,
    /// Requests sent on to the upstream (delayed ones included).
    pub forwarded: u64,
    /// Requests answered by the proxy (canned or fixed responses).
    pub answered: u64,
    /// Connections reset by an `abort` rule.
    pub aborted: u64,
    /// Requests forwarded after a delay.
    pub delayed: u64,
    /// Requests sent to an alternate upstream by `reroute`.
    pub rerouted: u64,
    /// Per rule, in order: requests matched and requests the action applied to.
    pub rules: Vec<RuleCounters>,
}

/// Counters of one rule.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RuleCounters {
    /// The rule, in words.
    pub rule: String,
    pub matched: u64,
    pub applied: u64,
    /// A staged reroute: the stage in effect (1-based) and its percentage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

impl HttpFaults {
    pub fn new(rules: Vec<Rule>) -> Self {
        HttpFaults {
            rules: rules.into_iter().map(Compiled::new).collect(),
            requests: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            rerouted: AtomicU64::new(0),
        }
    }

    pub fn counters(&self) -> HttpCounters {
        HttpCounters {
            requests: self.requests.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            answered: self.answered.load(Relaxed),
            aborted: self.aborted.load(Relaxed),
            delayed: self.delayed.load(Relaxed),
            rerouted: self.rerouted.load(Relaxed),
            rules: self
                .rules
                .iter()
                .map(|r| RuleCounters {
                    rule: r.rule.describe(),
                    matched: r.matched.load(Relaxed),
                    applied: r.applied.load(Relaxed),
                    stage: r.stage().map(|(i, s)| {
                        let n = match &r.rule.action {
                            super::rules::Action::Reroute(x) => x.stages.len(),
                            _ => 0,
                        };
                        format!("{} of {n} ({}%)", i + 1, s * 100.0)
                    }),
                })
                .collect(),
        }
    }

    /// The staged switchovers among the rules: where each sends requests, how long
    /// ago its stages started counting, and its stages (share 0–100, hold).
    pub fn switchovers(&self) -> Vec<Switchover> {
        self.rules
            .iter()
            .filter_map(|r| match &r.rule.action {
                super::rules::Action::Reroute(x) if !x.stages.is_empty() => Some(Switchover {
                    to: x.to.clone(),
                    since: r.started.elapsed(),
                    stages: x.stages.iter().map(|s| (s.percentage, s.hold.0)).collect(),
                }),
                _ => None,
            })
            .collect()
    }

    fn decide(&self, method: &str, path: &str) -> Decision {
        self.requests.fetch_add(1, Relaxed);
        match self.rules.iter().find(|r| r.matches(method, path)) {
            Some(r) => r.decide(),
            None => Decision::Forward,
        }
    }
}

/// One staged `reroute` rule as it runs (see [`HttpFaults::switchovers`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Switchover {
    /// The alternate upstream.
    pub to: String,
    /// How long ago the first stage started.
    pub since: std::time::Duration,
    /// Each stage's share (0–100) and hold, in order; the last one stays.
    pub stages: Vec<(f64, std::time::Duration)>,
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Response body that ends when the upstream closes.
    UntilClose,
}

/// A socket with its read buffer (bytes read but not yet consumed).
struct Side {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Side {
    /// Reads more bytes; 0 means EOF.
    async fn fill(&mut self) -> std::io::Result<usize> {
        let old = self.buf.len();
        self.buf.resize(old + BUF_SIZE, 0);
        let r = self.s.read(&mut self.buf[old..]).await;
        let n = *r.as_ref().unwrap_or(&0);
        self.buf.truncate(old + n);
        r
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
    }
}

/// What we keep of a parsed request head.
struct ReqHead {
    len: usize,
    method: String,
    path: String,
    framing: Framing,
    close: bool,
    expect_continue: bool,
}

/// What we keep of a parsed response head.
struct RespHead {
    len: usize,
    status: u16,
    framing: Framing,
    close: bool,
}

fn header_has_token(v: &[u8], token: &str) -> bool {
    String::from_utf8_lossy(v)
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Body framing from headers (RFC 9112 §6.3): chunked wins over Content-Length.
fn body_framing(headers: &[httparse::Header<'_>]) -> std::io::Result<Option<Framing>> {
    let mut framing = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if header_has_token(h.value, "chunked") {
                return Ok(Some(Framing::Chunked));
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("invalid content-length"))?;
            framing = Some(Framing::Length(n));
        }
    }
    Ok(framing)
}

fn parse_request(buf: &[u8]) -> std::io::Result<Option<ReqHead>> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req
        .parse(buf)
        .map_err(|e| bad(format!("bad request: {e}")))?
    {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let version = req.version.unwrap_or(1);
    let mut close = version == 0;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            if header_has_token(h.value, "close") {
                close = true;
            } else if header_has_token(h.value, "keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = header_has_token(h.value, "100-continue");
        }
    }
    let framing = body_framing(req.headers)?.unwrap_or(Framing::None);
    Ok(Some(ReqHead {
        len,
        method: req.method.unwrap_or("GET").to_string(),
        path: req.path.unwrap_or("/").to_string(),
        framing,
        close,
        expect_continue,
    }))
}

fn parse_response(buf: &[u8], method: &str) -> std::io::Result<Option<RespHead>> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp
        .parse(buf)
        .map_err(|e| bad(format!("bad response: {e}")))?
    {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            if header_has_token(h.value, "close") {
                close = true;
            } else if header_has_token(h.value, "keep-alive") {
                close = false;
            }
        }
    }
    let framing = if method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Framing::None
    } else {
        match body_framing(resp.headers)? {
            Some(f) => f,
            None => {
                close = true;
                Framing::UntilClose
            }
        }
    };
    Ok(Some(RespHead {
        len,
        status,
        framing,
        close,
    }))
}

/// Reads until a complete head is buffered; `Ok(None)` on a clean EOF before any byte.
async fn read_head<T>(
    side: &mut Side,
    parse: impl Fn(&[u8]) -> std::io::Result<Option<T>>,
) -> std::io::Result<Option<T>> {
    loop {
        if !side.buf.is_empty() {
            if let Some(h) = parse(&side.buf)? {
                return Ok(Some(h));
            }
            if side.buf.len() > MAX_HEAD {
                return Err(bad("message head too large"));
            }
        }
        if side.fill().await? == 0 {
            return if side.buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside a message head",
                ))
            };
        }
    }
}

/// Incremental scanner of a chunked body: says how much of a buffer belongs to it.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
    /// Length of the current trailer line (0 at the start of a line).
    line: usize,
}

#[derive(Debug, Default, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    SizeExt,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    Done,
}

impl Chunked {
    /// Feeds bytes; returns how many belong to the body (all of them unless it ends
    /// inside `buf`) and whether the body is complete.
    fn feed(&mut self, buf: &[u8]) -> std::io::Result<(usize, bool)> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(d))
                            .ok_or_else(|| bad("chunk size overflow"))?;
                    }
                    b';' | b' ' | b'\t' => self.state = ChunkState::SizeExt,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err(bad("bad chunk size")),
                },
                ChunkState::SizeExt => {
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    }
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(bad("bad chunk line"));
                    }
                    if self.size == 0 {
                        self.state = ChunkState::Trailer;
                        self.line = 0;
                    } else {
                        self.state = ChunkState::Data;
                    }
                }
                ChunkState::Data => {
                    let take = (self.size as usize).min(buf.len() - i);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(bad("missing CRLF after chunk"));
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(bad("missing CRLF after chunk"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    if b == b'\r' {
                        self.state = ChunkState::TrailerLf;
                    } else {
                        self.line += 1;
                    }
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(bad("bad trailer line"));
                    }
                    if self.line == 0 {
                        self.state = ChunkState::Done;
                        return Ok((i + 1, true));
                    }
                    self.line = 0;
                    self.state = ChunkState::Trailer;
                }
                ChunkState::Done => return Ok((i, true)),
            }
            i += 1;
        }
        Ok((i, self.state == ChunkState::Done))
    }
}

/// Moves one body from `src` to `dst` (or discards it when `dst` is None). Bytes
/// after the body stay in `src.buf` (the next message).
async fn relay_body(
    src: &mut Side,
    mut dst: Option<&mut TcpStream>,
    framing: Framing,
    bytes: &AtomicU64,
) -> std::io::Result<()> {
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed inside a body");
    match framing {
        Framing::None => Ok(()),
        Framing::Length(mut left) => {
            while left > 0 {
                if src.buf.is_empty() && src.fill().await? == 0 {
                    return Err(eof());
                }
                let k = (left as usize).min(src.buf.len());
                if let Some(d) = dst.as_deref_mut() {
                    d.write_all(&src.buf[..k]).await?;
                    bytes.fetch_add(k as u64, Relaxed);
                }
                src.consume(k);
                left -= k as u64;
            }
            Ok(())
        }
        Framing::Chunked => {
            let mut sc = Chunked::default();
            loop {
                if src.buf.is_empty() && src.fill().await? == 0 {
                    return Err(eof());
                }
                let (k, done) = sc.feed(&src.buf)?;
                if let Some(d) = dst.as_deref_mut() {
                    d.write_all(&src.buf[..k]).await?;
                    bytes.fetch_add(k as u64, Relaxed);
                }
                src.consume(k);
                if done {
                    return Ok(());
                }
            }
        }
        Framing::UntilClose => loop {
            if !src.buf.is_empty() {
                if let Some(d) = dst.as_deref_mut() {
                    d.write_all(&src.buf).await?;
                    bytes.fetch_add(src.buf.len() as u64, Relaxed);
                }
                src.buf.clear();
            }
            if src.fill().await? == 0 {
                return Ok(());
            }
        },
    }
}

/// Resets `s`: SO_LINGER 0 makes close() send RST instead of FIN.
fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

/// The head to send upstream: as received, minus `Expect: 100-continue` (the proxy
/// answers the 100 itself, see below).
fn upstream_head(raw: &[u8], strip_expect: bool) -> Vec<u8> {
    if !strip_expect {
        return raw.to_vec();
    }
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(raw.len());
    for line in text.split_inclusive("\r\n") {
        let is_expect = line
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("expect"));
        if !is_expect {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

/// Serves one client connection in HTTP mode. `upstream` is already connected; a
/// `reroute` alternate is dialled like it was: in `network` (the target's network
/// namespace) with the proxy's `mark`, so that an alternate the redirect also
/// intercepts is not sent back into the proxy.
pub(crate) async fn serve(
    client: TcpStream,
    upstream: TcpStream,
    faults: &Arc<HttpFaults>,
    stats: &Stats,
    network: &crate::target::Target,
    mark: Option<u32>,
) -> std::io::Result<()> {
    let mut c = Side {
        s: client,
        buf: Vec::with_capacity(BUF_SIZE),
    };
    let mut u = Side {
        s: upstream,
        buf: Vec::with_capacity(BUF_SIZE),
    };
    // The alternate upstream of `reroute` rules, opened on first use.
    let mut alt: Option<(std::net::SocketAddr, Side)> = None;
    loop {
        let Some(req) = read_head(&mut c, parse_request).await? else {
            return Ok(()); // client closed between requests
        };
        let read_at = Instant::now();
        let decision = faults.decide(&req.method, &req.path);
        if req.expect_continue && req.framing != Framing::None {
            // The client waits for "100 Continue" before sending the body; answering
            // it here lets both forwarding and canned answers read the body.
            c.s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        match decision {
            Decision::Abort => {
                faults.aborted.fetch_add(1, Relaxed);
                reset(c.s);
                return Ok(());
            }
            Decision::Respond(bytes) => {
                faults.answered.fetch_add(1, Relaxed);
                c.consume(req.len);
                relay_body(&mut c, None, req.framing, &stats.bytes_up).await?;
                c.s.write_all(&bytes).await?;
                if req.close {
                    return c.s.shutdown().await;
                }
                continue;
            }
            Decision::Delay(d) => {
                faults.delayed.fetch_add(1, Relaxed);
                super::timer::sleep_until(read_at + d).await;
            }
            Decision::Reroute(to) => {
                if alt.as_ref().is_none_or(|(a, _)| *a != to) {
                    let s = match network.connect_tcp(to, None, mark).await {
                        Ok(s) => s,
                        Err(e) => {
                            stats.upstream_errors.fetch_add(1, Relaxed);
                            return Err(e.into());
                        }
                    };
                    let _ = s.set_nodelay(true);
                    alt = Some((
                        to,
                        Side {
                            s,
                            buf: Vec::with_capacity(BUF_SIZE),
                        },
                    ));
                }
                faults.rerouted.fetch_add(1, Relaxed);
                let (_, a) = alt.as_mut().expect("opened above");
                match exchange(&mut c, a, &req, stats).await? {
                    Exchange::Done => {}
                    Exchange::Close => return c.s.shutdown().await,
                    Exchange::AltClosed => alt = None,
                }
                continue;
            }
            Decision::Forward => {}
        }
        faults.forwarded.fetch_add(1, Relaxed);
        let head = upstream_head(&c.buf[..req.len], req.expect_continue);
        u.s.write_all(&head).await?;
        stats.bytes_up.fetch_add(head.len() as u64, Relaxed);
        c.consume(req.len);
        relay_body(&mut c, Some(&mut u.s), req.framing, &stats.bytes_up).await?;
        // The response, after any interim (1xx) ones.
        let close = loop {
            let Some(resp) = read_head(&mut u, |b| parse_response(b, &req.method)).await? else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "upstream closed without answering",
                ));
            };
            c.s.write_all(&u.buf[..resp.len]).await?;
            stats.bytes_down.fetch_add(resp.len as u64, Relaxed);
            u.consume(resp.len);
            if resp.status == 101 {
                // Protocol switch (e.g. WebSocket): from here on it is a byte stream.
                let Side { s: cs, buf: cbuf } = c;
                let Side { s: us, buf: ubuf } = u;
                let (cr, mut cw) = cs.into_split();
                let (ur, mut uw) = us.into_split();
                uw.write_all(&cbuf).await?;
                cw.write_all(&ubuf).await?;
                let a = super::copy(cr, uw, &stats.bytes_up);
                let b = super::copy(ur, cw, &stats.bytes_down);
                return tokio::try_join!(a, b).map(|_| ());
            }
            if (100..200).contains(&resp.status) {
                continue;
            }
            relay_body(&mut u, Some(&mut c.s), resp.framing, &stats.bytes_down).await?;
            break resp.close;
        };
        if close || req.close {
            return c.s.shutdown().await;
        }
    }
}

/// How a rerouted exchange ended.
enum Exchange {
    /// Answered; the client connection goes on.
    Done,
    /// Answered; the client asked to close (or the answer did).
    Close,
    /// Answered, and the alternate upstream closes its side: open it again next time.
    AltClosed,
}

/// Sends one request (head already parsed in `c`) to `a` and relays the answer:
/// the plain forwarding path of a rerouted request (no protocol switch).
async fn exchange(
    c: &mut Side,
    a: &mut Side,
    req: &ReqHead,
    stats: &Stats,
) -> std::io::Result<Exchange> {
    let head = upstream_head(&c.buf[..req.len], req.expect_continue);
    a.s.write_all(&head).await?;
    stats.bytes_up.fetch_add(head.len() as u64, Relaxed);
    c.consume(req.len);
    relay_body(c, Some(&mut a.s), req.framing, &stats.bytes_up).await?;
    loop {
        let Some(resp) = read_head(a, |b| parse_response(b, &req.method)).await? else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "alternate upstream closed without answering",
            ));
        };
        c.s.write_all(&a.buf[..resp.len]).await?;
        stats.bytes_down.fetch_add(resp.len as u64, Relaxed);
        a.consume(resp.len);
        if (100..200).contains(&resp.status) {
            continue;
        }
        relay_body(a, Some(&mut c.s), resp.framing, &stats.bytes_down).await?;
        return Ok(if req.close {
            Exchange::Close
        } else if resp.close {
            Exchange::AltClosed
        } else {
            Exchange::Done
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_scanner_finds_the_end_across_splits() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut sc = Chunked::default();
            let (a, done_a) = sc.feed(&body[..split]).unwrap();
            assert_eq!(a, split.min(body.len() - 4), "split at {split}");
            let total = if done_a {
                a
            } else {
                let (b, done) = sc.feed(&body[split..]).unwrap();
                assert!(done, "split at {split}");
                a + b
            };
            assert_eq!(&body[total..], b"NEXT", "split at {split}");
        }
    }

    #[test]
    fn framing_rules() {
        let r = parse_request(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Length(3));
        assert!(!r.close);
        let r = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(r.close);
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", "GET")
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::UntilClose);
        assert!(r.close);
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "HEAD")
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::None);
        assert!(parse_request(b"GET / HT").unwrap().is_none());
    }

    #[test]
    fn expect_header_is_stripped() {
        let h = upstream_head(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            true,
        );
        assert_eq!(
            h,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n".to_vec()
        );
    }
}
