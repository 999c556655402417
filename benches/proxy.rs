//! Chaos-proxy benchmark: our proxy vs a direct connection vs haproxy (`mode tcp`)
//! vs fault-cli, on loopback, in interleaved rounds (every target once per round, so
//! a slow moment of the shared machine hits every target alike).
//!
//! (a) no fault: requests/s with `wrk -t1 -c32` (keep-alive), p50/p99 at
//!     concurrency 1 from our own raw samples, MB/s for a 10 MiB body;
//! (b) injected latency (10 and 50 ms on every keep-alive response): how late each
//!     response is, i.e. measured − (direct p50 + injected), p50 and p99;
//! (c) the proxy's timer alone (`firedrill::proxy::timer::sleep_until`): how late
//!     a 10 ms sleep wakes, vs a plain tokio sleep (the baseline), p50 and p99.
//!
//! Each server is its own process (this binary re-executed with a role), so no
//! target shares a runtime with the client. Run with `benches/proxy.sh`.
//! Environment: ROUNDS (default 3), SECS (wrk seconds, default 3), FAULT_BIN (path
//! of fault-cli's `fault`, optional).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIG: usize = 10 * 1024 * 1024;

fn main() {
    match std::env::var("BENCH_ROLE").as_deref() {
        Ok("upstream") => return upstream(std::env::var("BENCH_PORT").unwrap().parse().unwrap()),
        Ok("proxy") => return proxy(),
        _ => {}
    }
    // `cargo bench` passes `--bench`; only run when asked for by name or plainly.
    let rounds: usize = env_or("ROUNDS", 3);
    let secs: u64 = env_or("SECS", 3);
    let fault_bin = std::env::var("FAULT_BIN")
        .ok()
        .filter(|p| std::path::Path::new(p).exists());
    let mut kids = Kids(Vec::new());

    let up_port = free_port();
    kids.0.push(spawn_role(
        "upstream",
        &[("BENCH_PORT", up_port.to_string())],
    ));
    let up: SocketAddr = format!("127.0.0.1:{up_port}").parse().unwrap();
    wait_port(up);

    let ours = start_ours(&mut kids, up, None);
    let haproxy = start_haproxy(&mut kids, up);
    let fault = fault_bin
        .as_deref()
        .map(|b| start_fault(&mut kids, b, up, None));
    let ours_lat: Vec<(u64, SocketAddr)> = [10, 50]
        .iter()
        .map(|ms| (*ms, start_ours(&mut kids, up, Some(*ms))))
        .collect();
    let fault_lat: Vec<(u64, SocketAddr)> = match fault_bin.as_deref() {
        Some(b) => [10, 50]
            .iter()
            .map(|ms| (*ms, start_fault(&mut kids, b, up, Some(*ms))))
            .collect(),
        None => Vec::new(),
    };

    let mut targets: Vec<(&str, SocketAddr)> = vec![("direct", up), ("firedrill", ours)];
    if let Some(h) = haproxy {
        targets.push(("haproxy (mode tcp)", h));
    }
    if let Some(f) = fault {
        targets.push(("fault-cli", f));
    }
    let mut a: Vec<Vec<RoundA>> = vec![Vec::new(); targets.len()];
    let mut b: Vec<(String, u64, Vec<f64>)> = Vec::new();
    // Direct path paced like (b), minus its own p50: the loopback path's own spread.
    let mut b_direct: Vec<(u64, Vec<f64>)> = Vec::new();
    let mut timers: Vec<(&str, Vec<f64>)> = TIMERS.iter().map(|t| (*t, Vec::new())).collect();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let mut direct_p50 = 0.0;
        for (i, (name, addr)) in targets.iter().enumerate() {
            let r = measure_a(*addr, secs);
            eprintln!(
                "  {name:<20} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs  max {:>7.2} ms  {:>7.0} MB/s",
                r.rps, r.p50_us, r.p99_us, r.max_ms, r.mbps
            );
            if i == 0 {
                direct_p50 = r.p50_us;
            }
            a[i].push(r);
        }
        let lat_targets = ours_lat
            .iter()
            .map(|(ms, addr)| ("firedrill", *ms, *addr))
            .chain(fault_lat.iter().map(|(ms, addr)| ("fault-cli", *ms, *addr)));
        let _ = direct_p50;
        for (name, ms, addr) in lat_targets {
            let n = if ms <= 10 { 150 } else { 50 };
            // The baseline is the direct path paced like the delayed one (one request
            // per `ms`): an upstream idle for 10 ms answers ~0.2 ms slower on a VM
            // (idle-state exit), and that must not be charged to the proxy.
            let paced = paced_c1(up, n.min(60), ms);
            let base = pct(&paced, 50.0);
            if name == "firedrill" {
                let spread = paced.iter().map(|us| (us - base) / 1000.0);
                match b_direct.iter_mut().find(|(m, _)| *m == ms) {
                    Some(e) => e.1.extend(spread),
                    None => b_direct.push((ms, spread.collect())),
                }
            }
            let late: Vec<f64> = samples_c1(addr, n)
                .into_iter()
                .map(|us| (us - base) / 1000.0 - ms as f64)
                .collect();
            eprintln!(
                "  {name:<10} +{ms} ms: late p50 {:.3} ms p99 {:.3} ms",
                pct(&late, 50.0),
                pct(&late, 99.0)
            );
            match b.iter_mut().find(|(n, m, _)| n == name && *m == ms) {
                Some(e) => e.2.extend(late),
                None => b.push((name.to_string(), ms, late)),
            }
        }
        for (name, late) in timers.iter_mut() {
            let got = timer_late(name, 100);
            eprintln!(
                "  timer {name:<12} late p50 {:.1} µs p99 {:.1} µs",
                pct(&got, 50.0),
                pct(&got, 99.0)
            );
            late.extend(got);
        }
    }

    // Medians across rounds.
    let med = |v: Vec<f64>| pct(&v, 50.0);
    let direct_rps = med(a[0].iter().map(|r| r.rps).collect());
    let direct_mbps = med(a[0].iter().map(|r| r.mbps).collect());
    let direct_p50 = med(a[0].iter().map(|r| r.p50_us).collect());
    let mut out = String::new();
    out.push_str(&format!(
        "(a) no fault, {rounds} interleaved rounds (median of rounds); wrk -t1 -c32 {secs}s; c=1 from 3000 raw samples; 10 MiB body ×5\n\n"
    ));
    out.push_str("| target | req/s (× direct) | p50 c=1 (added) | p99 c=1 | max c=1 | MB/s 10 MiB (× direct) |\n|---|---|---|---|---|---|\n");
    for (i, (name, _)) in targets.iter().enumerate() {
        let rps = med(a[i].iter().map(|r| r.rps).collect());
        let mbps = med(a[i].iter().map(|r| r.mbps).collect());
        let p50 = med(a[i].iter().map(|r| r.p50_us).collect());
        let p99 = med(a[i].iter().map(|r| r.p99_us).collect());
        let max = a[i].iter().map(|r| r.max_ms).fold(0.0, f64::max);
        out.push_str(&format!(
            "| {name} | {rps:.0} ({:.2}×) | {p50:.1} µs (+{:.1} µs) | {p99:.1} µs | {max:.2} ms | {mbps:.0} ({:.2}×) |\n",
            rps / direct_rps,
            p50 - direct_p50,
            mbps / direct_mbps
        ));
    }
    out.push_str("\n(b) injected latency, every keep-alive response, c=1: measured − (direct p50 paced one request per injected interval + injected)\n\n| target | injected | late p50 | late p99 | samples |\n|---|---|---|---|---|\n");
    for (name, ms, late) in &b {
        out.push_str(&format!(
            "| {name} | {ms} ms | {:.3} ms | {:.3} ms | {} |\n",
            pct(late, 50.0),
            pct(late, 99.0),
            late.len()
        ));
    }
    for (ms, spread) in &b_direct {
        out.push_str(&format!(
            "| direct, paced every {ms} ms (path spread: sample − its p50) | — | {:.3} ms | {:.3} ms | {} |\n",
            pct(spread, 50.0),
            pct(spread, 99.0),
            spread.len()
        ));
    }
    let plain_p99 = pct(&timers[TIMERS.len() - 1].1, 99.0);
    out.push_str("\n(c) the timer alone: a 10 ms sleep on a current-thread runtime, how late it wakes\n\n| timer | late p50 | late p99 | p99 ÷ tokio sleep's | samples |\n|---|---|---|---|---|\n");
    for (name, late) in &timers {
        let p99 = pct(late, 99.0);
        out.push_str(&format!(
            "| {name} | {:.1} µs | {p99:.1} µs | {:.3}× | {} |\n",
            pct(late, 50.0),
            p99 / plain_p99,
            late.len()
        ));
    }
    println!("{out}");
    let _ = std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-proxy.md"),
        &out,
    );
}

/// The sleeps (c) compares; the last one is the baseline.
const TIMERS: [&str; 2] = ["deadline-precise", "tokio sleep"];

/// Microseconds late of `n` 10 ms sleeps with timer `name`, on a fresh
/// current-thread runtime (like the proxy's).
fn timer_late(name: &str, n: usize) -> Vec<f64> {
    use firedrill::proxy::timer::sleep_until;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut late = Vec::with_capacity(n);
        for _ in 0..n {
            let d = Instant::now() + Duration::from_millis(10);
            match name {
                "deadline-precise" => sleep_until(d).await,
                _ => tokio::time::sleep_until(d.into()).await,
            }
            late.push(d.elapsed().as_secs_f64() * 1e6);
        }
        late
    })
}

#[derive(Clone, Debug)]
struct RoundA {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    max_ms: f64,
    mbps: f64,
}

fn measure_a(addr: SocketAddr, secs: u64) -> RoundA {
    let rps = wrk(addr, secs);
    let mut s = samples_c1(addr, 3000);
    s.sort_by(f64::total_cmp);
    RoundA {
        rps,
        p50_us: pct(&s, 50.0),
        p99_us: pct(&s, 99.0),
        max_ms: s.last().copied().unwrap_or(0.0) / 1000.0,
        mbps: big_body(addr, 5),
    }
}

fn wrk(addr: SocketAddr, secs: u64) -> f64 {
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c32",
            &format!("-d{secs}s"),
            &format!("http://{addr}/"),
        ])
        .output()
        .expect("wrk is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output: {text}"))
}

/// Keep-alive GET / at concurrency 1: microseconds per request, raw.
fn samples_c1(addr: SocketAddr, n: usize) -> Vec<f64> {
    let mut c = Conn::new(addr);
    for _ in 0..20 {
        c.get("/"); // warm-up
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            c.get("/");
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// Like [`samples_c1`], with a pause of `gap_ms` before each request.
fn paced_c1(addr: SocketAddr, n: usize, gap_ms: u64) -> Vec<f64> {
    let mut c = Conn::new(addr);
    c.get("/");
    (0..n)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(gap_ms));
            let t = Instant::now();
            c.get("/");
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// MB/s (MiB counted as 10^6 bytes ×1.048576) for GET /big, `n` times, keep-alive.
fn big_body(addr: SocketAddr, n: usize) -> f64 {
    let mut c = Conn::new(addr);
    c.get("/big");
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(c.get("/big"), BIG);
    }
    (BIG * n) as f64 / t.elapsed().as_secs_f64() / 1e6
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            s,
            buf: Vec::with_capacity(1 << 20),
        }
    }

    /// Sends GET `path`, reads the whole response; returns the body length.
    fn get(&mut self, path: &str) -> usize {
        self.s
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n").as_bytes())
            .unwrap();
        let mut tmp = vec![0u8; 256 * 1024];
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let cl: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                let total = end + 4 + cl;
                while self.buf.len() < total {
                    let k = self.s.read(&mut tmp).unwrap();
                    assert!(k > 0, "closed mid-body");
                    self.buf.extend_from_slice(&tmp[..k]);
                }
                self.buf.drain(..total);
                return cl;
            }
            let k = self.s.read(&mut tmp).unwrap();
            assert!(k > 0, "closed mid-head");
            self.buf.extend_from_slice(&tmp[..k]);
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[(((p / 100.0) * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]
}

// ── servers ──────────────────────────────────────────────────────────────────

/// The upstream: keep-alive HTTP/1.1, `GET /` → 5 bytes, `GET /big` → 10 MiB.
fn upstream(port: u16) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let big: &'static [u8] = {
            let mut v = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n").into_bytes();
            v.resize(v.len() + BIG, b'x');
            Box::leak(v.into_boxed_slice())
        };
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            c.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut have = 0;
                loop {
                    let Ok(k) = c.read(&mut buf[have..]).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    have += k;
                    let mut out = Vec::new();
                    while let Some(end) = find(&buf[..have], b"\r\n\r\n") {
                        if buf[..end].starts_with(b"GET /big") {
                            out.extend_from_slice(big);
                        } else {
                            out.extend_from_slice(
                                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
                            );
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                    if !out.is_empty() && c.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Our proxy (L4, optional downstream latency) as its own process.
fn proxy() {
    use firedrill::proxy::{Behaviour, Config, Proxy, Toxic, Upstream};
    let listen: SocketAddr = std::env::var("BENCH_LISTEN").unwrap().parse().unwrap();
    let up = std::env::var("BENCH_UPSTREAM").unwrap();
    let lat: u64 = env_or("BENCH_LATENCY_MS", 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let down = (lat > 0).then(|| Toxic::fixed(Duration::from_millis(lat)));
        let cfg = Config {
            upstream: Upstream::Addr(up),
            behaviour: Behaviour::Tcp { up: None, down },
            network: firedrill::target::Target::Local,
            mark: None,
        };
        let p = Proxy::start(
            firedrill::target::Target::Local
                .listen_tcp(listen)
                .await
                .unwrap(),
            cfg,
        )
        .unwrap();
        std::future::pending::<()>().await;
        drop(p);
    });
}

fn start_ours(kids: &mut Kids, up: SocketAddr, lat: Option<u64>) -> SocketAddr {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    kids.0.push(spawn_role(
        "proxy",
        &[
            ("BENCH_LISTEN", addr.to_string()),
            ("BENCH_UPSTREAM", up.to_string()),
            ("BENCH_LATENCY_MS", lat.unwrap_or(0).to_string()),
        ],
    ));
    wait_port(addr);
    addr
}

fn start_haproxy(kids: &mut Kids, up: SocketAddr) -> Option<SocketAddr> {
    let port = free_port();
    let cfg = format!(
        "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  server s1 {up}\n"
    );
    let path = std::env::temp_dir().join(format!(
        "firedrill-bench-haproxy-{}.cfg",
        std::process::id()
    ));
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    kids.0.push(child);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_port(addr);
    Some(addr)
}

fn start_fault(kids: &mut Kids, bin: &str, up: SocketAddr, lat: Option<u64>) -> SocketAddr {
    let port = free_port();
    let faults = match lat {
        Some(ms) => format!(
            "        faults:\n          - type: latency\n            flow: to-client\n            distribution:\n              type: uniform\n              min_ms: {ms}.0\n              max_ms: {ms}.0\n"
        ),
        None => "        faults: []\n".to_string(),
    };
    let doc = format!(
        "schema_version: 1\nname: bench\nproxies:\n  - name: p\n    protocol: tcp\n    listen: 127.0.0.1:{port}\n    upstream: {up}\nphases:\n  - name: run\n    proxies:\n      - proxy: p\n{faults}"
    );
    let path = std::env::temp_dir().join(format!(
        "firedrill-bench-fault-{}-{port}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, doc).unwrap();
    let child = Command::new(bin)
        .args(["--color", "never", "--output", "json", "run"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fault-cli");
    kids.0.push(child);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_port(addr);
    addr
}

fn spawn_role(role: &str, env: &[(&str, String)]) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env("BENCH_ROLE", role).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Children we started; killed (by pid) and reaped when the bench ends or panics.
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The haproxy and fault-cli configurations written for this run.
        let tag = "firedrill-bench-";
        let pid = format!("-{}", std::process::id());
        if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&tag) && name.contains(&pid) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(addr: SocketAddr) {
    let t = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "{addr} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}
