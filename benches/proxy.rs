//! Chaos-proxy benchmark: our proxy vs a direct connection vs haproxy (`mode tcp`)
//! vs fault-cli, on loopback, in interleaved rounds (every target once per round, so
//! a slow moment of the shared machine hits every target alike).
//!
//! (a) no fault: requests/s with `wrk -t1 -c32` (keep-alive), p50/p99 at
//!     concurrency 1 from our own raw samples, MB/s for a 10 MiB body;
//! (b) injected latency (10 and 50 ms on every keep-alive response): how late each
//!     response is, i.e. measured − (direct p50 + injected), p50 and p99;
//! (c) the proxy's timers alone (`firedrill::proxy::timer::sleep_until_with`): how
//!     late a 10 ms sleep wakes, vs a plain tokio sleep (the baseline), p50 and p99;
//! (d) CPU per delayed request: the proxy process's CPU time (every thread's, from
//!     /proc/PID/task/*/schedstat, ns) while an open-model loader sends requests at
//!     100, 1,000 and 5,000 req/s through a 10 ms latency fault, for each timer
//!     (`FIREDRILL_PROXY_TIMER`: the default spin, the timer thread, and a plain
//!     tokio sleep as the baseline), with how late those responses are.
//!
//! Each server is its own process (this binary re-executed with a role), so no
//! target shares a runtime with the client. Run with `benches/proxy.sh`.
//! Environment: ROUNDS (default 3), SECS (wrk seconds, default 3), FAULT_BIN (path
//! of fault-cli's `fault`, optional), SECTIONS (default `abcd`; e.g. `d` for the CPU
//! table alone), CPU_SECS (seconds of load per CPU sample, default 2).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firedrill::proxy::timer::TimerKind;

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
    let sections = std::env::var("SECTIONS").unwrap_or_else(|_| "abcd".into());
    let cpu_secs: f64 = env_or("CPU_SECS", 2.0);
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
    // (d): one 10 ms latency proxy per timer.
    let cpu_procs: Vec<(&str, u32, SocketAddr)> = if sections.contains('d') {
        cpu_timers()
            .iter()
            .map(|(name, env)| {
                let (pid, addr) = start_ours_timer(&mut kids, up, Some(10), env);
                (*name, pid, addr)
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut cpu: Vec<CpuRow> = Vec::new();
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
        if sections.contains('a') {
            // Throughput and bulk per target; then the c=1 samples of every target
            // interleaved in blocks, so that all of them see the same states of the
            // host (on this VM the idle round trip drifts between ~45 and ~120 µs in
            // spells of a few hundred ms; 3000 samples of one target in a row caught
            // one or two spells and decided the comparison).
            let mut round_a: Vec<RoundA> = targets
                .iter()
                .map(|(_, addr)| RoundA {
                    rps: wrk(*addr, secs),
                    mbps: big_body(*addr, 5),
                    p50_us: 0.0,
                    p99_us: 0.0,
                    max_ms: 0.0,
                })
                .collect();
            let addrs: Vec<SocketAddr> = targets.iter().map(|(_, a)| *a).collect();
            for (r, mut s) in round_a
                .iter_mut()
                .zip(interleaved_c1(&addrs, 3000, 100, round))
            {
                s.sort_by(f64::total_cmp);
                r.p50_us = pct(&s, 50.0);
                r.p99_us = pct(&s, 99.0);
                r.max_ms = s.last().copied().unwrap_or(0.0) / 1000.0;
            }
            for (i, ((name, _), r)) in targets.iter().zip(round_a).enumerate() {
                eprintln!(
                    "  {name:<20} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs  max {:>7.2} ms  {:>7.0} MB/s",
                    r.rps, r.p50_us, r.p99_us, r.max_ms, r.mbps
                );
                a[i].push(r);
            }
        }
        let lat_targets = ours_lat
            .iter()
            .map(|(ms, addr)| ("firedrill", *ms, *addr))
            .chain(fault_lat.iter().map(|(ms, addr)| ("fault-cli", *ms, *addr)));
        for (name, ms, addr) in lat_targets {
            if !sections.contains('b') {
                break;
            }
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
            if !sections.contains('c') {
                break;
            }
            let got = timer_late(name, 100);
            eprintln!(
                "  timer {name:<12} late p50 {:.1} µs p99 {:.1} µs",
                pct(&got, 50.0),
                pct(&got, 99.0)
            );
            late.extend(got);
        }
        if sections.contains('d') {
            cpu_round(&mut cpu, &cpu_procs, up, cpu_secs, round);
        }
    }

    // Medians across rounds.
    let med = |v: Vec<f64>| pct(&v, 50.0);
    let direct_rps = med(a[0].iter().map(|r| r.rps).collect());
    let direct_mbps = med(a[0].iter().map(|r| r.mbps).collect());
    let direct_p50 = med(a[0].iter().map(|r| r.p50_us).collect());
    let mut out = String::new();
    if sections.contains('a') {
        out.push_str(&format!(
        "(a) no fault, {rounds} interleaved rounds (median of rounds); wrk -t1 -c32 {secs}s; c=1: 3000 raw samples per target, interleaved in blocks of 100; 10 MiB body ×5\n\n"
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
    }
    if sections.contains('b') {
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
    }
    if sections.contains('c') {
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
    }
    if sections.contains('d') {
        out.push_str(&cpu_table(&cpu, rounds, cpu_secs));
    }
    println!("{out}");
    let _ = std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-proxy.md"),
        &out,
    );
}

/// The sleeps (c) compares; the last one is the baseline.
const TIMERS: [&str; 4] = ["hrtimer", "spin", "timer thread", "tokio sleep"];

/// Microseconds late of `n` 10 ms sleeps with timer `name`, on a fresh
/// current-thread runtime (like the proxy's).
fn timer_late(name: &str, n: usize) -> Vec<f64> {
    use firedrill::proxy::timer::sleep_until_with;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut late = Vec::with_capacity(n);
        for _ in 0..n {
            let d = Instant::now() + Duration::from_millis(10);
            let kind = match name {
                "hrtimer" => TimerKind::Hr,
                "timer thread" => TimerKind::Thread,
                "spin" => TimerKind::Spin,
                _ => TimerKind::Tokio,
            };
            sleep_until_with(kind, d).await;
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

/// Keep-alive `GET /` at concurrency 1 against every address, interleaved: blocks of
/// `block` requests per target in turn (the first target rotates with `round`), `n`
/// samples per target, in µs.
fn interleaved_c1(addrs: &[SocketAddr], n: usize, block: usize, round: usize) -> Vec<Vec<f64>> {
    let mut conns: Vec<Conn> = addrs.iter().map(|a| Conn::new(*a)).collect();
    for c in conns.iter_mut() {
        for _ in 0..20 {
            c.get("/"); // warm-up
        }
    }
    let mut out: Vec<Vec<f64>> = vec![Vec::with_capacity(n); addrs.len()];
    for b in 0..n.div_ceil(block) {
        for k in 0..conns.len() {
            let i = (k + b + round) % conns.len();
            let take = block.min(n - out[i].len());
            for _ in 0..take {
                let t = Instant::now();
                conns[i].get("/");
                out[i].push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    out
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
    /// Read buffer, allocated once: a fresh 256 KiB buffer per request would put a
    /// calloc of it inside every timed sample.
    tmp: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            s,
            buf: Vec::with_capacity(1 << 20),
            tmp: vec![0u8; 256 * 1024],
        }
    }

    /// Sends GET `path`, reads the whole response; returns the body length.
    fn get(&mut self, path: &str) -> usize {
        self.s
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n").as_bytes())
            .unwrap();
        let tmp = &mut self.tmp;
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
                    let k = self.s.read(tmp).unwrap();
                    assert!(k > 0, "closed mid-body");
                    self.buf.extend_from_slice(&tmp[..k]);
                }
                self.buf.drain(..total);
                return cl;
            }
            let k = self.s.read(tmp).unwrap();
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

// ── (d) CPU per delayed request ─────────────────────────────────────────────

/// The timers (d) compares, with their `FIREDRILL_PROXY_TIMER`; the last is the
/// baseline.
const CPU_TIMERS: [(&str, &str); 4] = [
    ("hrtimer", "hr"),
    ("spin", "spin"),
    ("timer thread", "thread"),
    ("tokio sleep", "tokio"),
];
const CPU_RATES: [u64; 3] = [100, 1_000, 5_000];

/// The timers of (d) to run: `CPU_TIMERS=hr,spin` (their `FIREDRILL_PROXY_TIMER`
/// names) narrows them; the baseline always runs.
fn cpu_timers() -> Vec<(&'static str, &'static str)> {
    let only = std::env::var("CPU_TIMERS").unwrap_or_default();
    CPU_TIMERS
        .iter()
        .copied()
        .filter(|(_, env)| {
            only.is_empty() || *env == "tokio" || only.split(',').any(|o| o.trim() == *env)
        })
        .collect()
}

/// The rates of (d): `CPU_RATES=5000` narrows them.
fn cpu_rates() -> Vec<u64> {
    match std::env::var("CPU_RATES") {
        Ok(v) if !v.is_empty() => v.split(',').filter_map(|r| r.trim().parse().ok()).collect(),
        _ => CPU_RATES.to_vec(),
    }
}

/// One timer at one rate in one round.
struct CpuRow {
    timer: &'static str,
    rate: u64,
    round: usize,
    /// Proxy CPU (all threads) per second of load, ms.
    cpu_ms_per_s: f64,
    /// Responses received in the measured window.
    done: usize,
    /// Per response: ms late = measured − (direct p50 at this rate) − 10 ms.
    late: Vec<f64>,
}

/// Nanoseconds on CPU of every thread of `pid` (schedstat's first field).
fn proc_cpu_ns(pid: u32) -> u64 {
    let dir = format!("/proc/{pid}/task");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// One round of (d): per rate, the direct path (the baseline of lateness), then each
/// timer's proxy in a rotated order.
fn cpu_round(
    rows: &mut Vec<CpuRow>,
    procs: &[(&'static str, u32, SocketAddr)],
    up: SocketAddr,
    secs: f64,
    round: usize,
) {
    for rate in cpu_rates() {
        let direct = open_load(up, rate, secs);
        let base_ms = pct(&direct, 50.0) / 1000.0;
        for k in 0..procs.len() {
            let (timer, pid, addr) = procs[(k + round) % procs.len()];
            // Warm-up: connections, and the learned margins settle.
            open_load(addr, rate, 0.5);
            let c0 = proc_cpu_ns(pid);
            let t0 = Instant::now();
            let lat = open_load(addr, rate, secs);
            let cpu_ms_per_s = (proc_cpu_ns(pid) - c0) as f64 / 1e6 / t0.elapsed().as_secs_f64();
            let late: Vec<f64> = lat.iter().map(|us| us / 1000.0 - base_ms - 10.0).collect();
            eprintln!(
                "  cpu {timer:<16} {rate:>5} req/s: {cpu_ms_per_s:>6.1} ms CPU/s  late p50 {:.3} ms p99 {:.3} ms  ({} responses)",
                pct(&late, 50.0),
                pct(&late, 99.0),
                late.len()
            );
            rows.push(CpuRow {
                timer,
                rate,
                round,
                cpu_ms_per_s,
                done: late.len(),
                late,
            });
        }
    }
}

/// The keep-alive response of `GET /` (the loader counts responses by length).
const SMALL_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";

/// Open-model load: requests at `rate` per second for `secs` (at most rate × secs
/// requests, whatever the answers do), spread over 16 pipelined keep-alive
/// connections; returns each response's latency in µs. Readers give up 5 s after the
/// last send.
fn open_load(addr: SocketAddr, rate: u64, secs: f64) -> Vec<f64> {
    const CONNS: usize = 16;
    let n = (rate as f64 * secs) as usize;
    let conns: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_nodelay(true).unwrap();
            s
        })
        .collect();
    let queues: Vec<Arc<Mutex<std::collections::VecDeque<Instant>>>> =
        (0..CONNS).map(|_| Arc::default()).collect();
    let readers: Vec<_> = conns
        .iter()
        .zip(&queues)
        .enumerate()
        .map(|(i, (c, q))| {
            let mut r = c.try_clone().unwrap();
            r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let q = q.clone();
            let expect = n / CONNS + usize::from(i < n % CONNS);
            std::thread::spawn(move || {
                let mut got = Vec::with_capacity(expect);
                let mut buf = [0u8; 64 * 1024];
                let mut pending = 0usize;
                while got.len() < expect {
                    let Ok(k) = r.read(&mut buf) else { break };
                    if k == 0 {
                        break;
                    }
                    let now = Instant::now();
                    pending += k;
                    while pending >= SMALL_RESPONSE.len() {
                        pending -= SMALL_RESPONSE.len();
                        if let Some(sent) = q.lock().unwrap().pop_front() {
                            got.push((now - sent).as_secs_f64() * 1e6);
                        }
                    }
                }
                got
            })
        })
        .collect();
    let mut writers = conns;
    let t0 = Instant::now();
    for i in 0..n {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let c = i % CONNS;
        queues[c].lock().unwrap().push_back(Instant::now());
        writers[c]
            .write_all(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
            .unwrap();
    }
    readers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn cpu_table(rows: &[CpuRow], rounds: usize, secs: f64) -> String {
    let mut out = format!(
        "\n(d) CPU per delayed request: 10 ms latency fault, open-model load over 16 keep-alive connections, {secs} s per sample, {rounds} rounds (timers in rotated order); proxy process CPU (all threads); late = measured − (direct p50 at the same rate) − 10 ms, all responses of all rounds\n\n| timer | req/s | CPU ms/s (% of a core), median [min–max] | CPU µs/request | × tokio sleep, median [min–max] of rounds | late p50 | late p99 | responses |\n|---|---|---|---|---|---|---|---|\n"
    );
    let base_timer = CPU_TIMERS[CPU_TIMERS.len() - 1].0;
    for rate in cpu_rates() {
        for (timer, _) in cpu_timers() {
            let mine: Vec<&CpuRow> = rows
                .iter()
                .filter(|r| r.timer == timer && r.rate == rate)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let cpus: Vec<f64> = mine.iter().map(|r| r.cpu_ms_per_s).collect();
            let ratios: Vec<f64> = mine
                .iter()
                .filter_map(|r| {
                    let b = rows
                        .iter()
                        .find(|b| b.timer == base_timer && b.rate == rate && b.round == r.round)?;
                    Some(r.cpu_ms_per_s / b.cpu_ms_per_s)
                })
                .collect();
            let late: Vec<f64> = mine.iter().flat_map(|r| r.late.iter().copied()).collect();
            let done: usize = mine.iter().map(|r| r.done).sum();
            let cpu = pct(&cpus, 50.0);
            let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            out.push_str(&format!(
                "| {timer} | {rate} | {cpu:.1} ({:.1}%) [{:.1}–{:.1}] | {:.0} | {:.2}× [{:.2}–{:.2}] | {:.3} ms | {:.3} ms | {done} |\n",
                cpu / 10.0,
                min(&cpus),
                max(&cpus),
                cpu * 1000.0 / rate as f64,
                pct(&ratios, 50.0),
                min(&ratios),
                max(&ratios),
                pct(&late, 50.0),
                pct(&late, 99.0),
            ));
        }
    }
    out
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
    start_ours_timer(kids, up, lat, "hr").1
}

/// Our proxy with the timer `FIREDRILL_PROXY_TIMER=timer`: its pid and address.
fn start_ours_timer(
    kids: &mut Kids,
    up: SocketAddr,
    lat: Option<u64>,
    timer: &str,
) -> (u32, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = spawn_role(
        "proxy",
        &[
            ("BENCH_LISTEN", addr.to_string()),
            ("BENCH_UPSTREAM", up.to_string()),
            ("BENCH_LATENCY_MS", lat.unwrap_or(0).to_string()),
            ("FIREDRILL_PROXY_TIMER", timer.to_string()),
        ],
    );
    let pid = child.id();
    kids.0.push(child);
    wait_port(addr);
    (pid, addr)
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
