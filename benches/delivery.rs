//! The `delivery` probe's highest sustained send rate on one core, and its latency
//! figures against a reference computed from the raw samples.
//!
//! The system under test is a `firedrill-wecom-sim` (its group-robot webhook
//! acknowledges and stores each message; `/admin/messages` is the sink), pinned to
//! CPU 1; the probe runs on a current-thread tokio runtime in this process, pinned to
//! CPU 0. For each target rate (`FD_BENCH_RATES`, default 250,500,1000,2000 msg/s,
//! `FD_BENCH_SECS` s each, default 3):
//! - achieved rate = messages sent / time from the first due time to the last ack;
//! - sustained = every message acknowledged, achieved ≥ 98% of the target, and the
//!   probe's p99 delivery latency under 50 ms (the probe is not falling behind);
//! - the probe's CPU time per message (getrusage of this process: only the probe
//!   runs here), and its ratio to a baseline measured in the same run: a plain loop
//!   sending the same requests at the same rate (`vs base`).
//!
//! Reference: the bench reads the sink itself, joins the raw (sent, received) pairs
//! by id, and computes the percentiles with an independent selection
//! (`select_nth_unstable_by`, nearest rank); the probe's figures must equal them.
//!
//! Run: `cargo bench --bench delivery` (builds the simulator binary first:
//! `cargo build --release --bin firedrill-wecom-sim`, or set `FD_SIM` to its path).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firedrill::probe::delivery::{self, DeliverySend, DeliverySink};
use tokio_util::sync::CancellationToken;

fn pin(pid: i32, cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &set);
    }
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage(2) fills the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    t(u.ru_utime) + t(u.ru_stime)
}

fn get(port: u16, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap()
}

/// Nearest-rank percentile by selection (independent of the probe's sort).
fn reference(mut v: Vec<f64>, q: f64) -> f64 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    *v.select_nth_unstable_by(rank - 1, f64::total_cmp).1
}

/// The baseline: the same requests at the same rate by a plain loop (clock-scheduled
/// `reqwest` sends, responses read and dropped: no id, no templating, no figures).
async fn baseline(http: reqwest::Client, url: String, rate: f64, n: u64) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
        let req = http.post(&url).body(format!(
            "{{\"msgtype\":\"text\",\"text\":{{\"content\":\"base {i}\"}}}}"
        ));
        tasks.spawn(async move {
            if let Ok(r) = req.send().await {
                let _ = r.bytes().await;
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

fn main() {
    let sim_bin = std::env::var("FD_SIM").unwrap_or_else(|_| {
        let release = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/release/firedrill-wecom-sim"
        );
        if std::path::Path::new(release).exists() {
            release.into()
        } else {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/debug/firedrill-wecom-sim"
            )
            .into()
        }
    });
    let rates: Vec<f64> = std::env::var("FD_BENCH_RATES")
        .unwrap_or_else(|_| "250,500,1000,2000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs: f64 = std::env::var("FD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let port = 32990;
    let mut sim = Command::new(&sim_bin)
        .args(["--port", &port.to_string(), "--name", "bench"])
        .env("WECOM_SIM_WEBHOOK_KEY", "bench-key")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {sim_bin}: {e} (build it first)"));
    pin(sim.id() as i32, 1);
    pin(0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "simulator did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    firedrill::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::builder().build().unwrap();
    let sink: DeliverySink = serde_json::from_value(serde_json::json!({
        "url": format!("http://127.0.0.1:{port}/admin/messages"),
        "items": "$.messages[*]", "id": "$.content", "received_ms": "$.received_ms"
    }))
    .unwrap();
    println!(
        "delivery probe, one core (current-thread runtime on CPU 0; simulator on CPU 1), {secs} s per rate, simulator {sim_bin}"
    );
    println!(
        "{:>8} {:>9} {:>7} {:>10} {:>7} {:>9} | {:>21} | {:>21} | {:>9}",
        "target",
        "achieved",
        "acked%",
        "CPU us/msg",
        "vs base",
        "sustained",
        "probe p50/p95/p99 ms",
        "ref p50/p95/p99 ms",
        "max diff"
    );
    let mut best = None;
    for rate in rates {
        get(port, "/admin/stats");
        let _ = {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(s, "POST /admin/clear HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
            let mut o = String::new();
            s.read_to_string(&mut o)
        };
        let send: DeliverySend = serde_json::from_value(serde_json::json!({
            "url": format!("http://127.0.0.1:{port}/cgi-bin/webhook/send?key=bench-key"),
            "body": "{\"msgtype\":\"text\",\"text\":{\"content\":\"bench ${id}\"}}",
            "rate": rate,
            "count": (rate * secs) as u64,
            "timeout": "5s",
            "success": { "json": { "path": "$.errcode", "eq": 0 } },
            "max_in_flight": 256
        }))
        .unwrap();
        let prefix = delivery::new_prefix();
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        let sent = rt.block_on(delivery::send_loop(
            Arc::new(send),
            prefix.clone(),
            http.clone(),
            None,
            Duration::from_secs_f64(secs * 3.0),
            CancellationToken::new(),
        ));
        let took = t0.elapsed();
        let cpu = cpu_time() - cpu0;
        let n_base = (rate * secs) as u64;
        let b0 = cpu_time();
        rt.block_on(baseline(
            http.clone(),
            format!("http://127.0.0.1:{port}/cgi-bin/webhook/send?key=bench-key"),
            rate,
            n_base,
        ));
        let base_per_msg = (cpu_time() - b0).as_secs_f64() / n_base as f64;
        let body = get(port, "/admin/messages");
        let received = delivery::extract(&sink, &body, &prefix).unwrap();
        let m = delivery::figures(&sent, &received);
        // The reference, from the raw pairs.
        let at: HashMap<u64, f64> = received
            .iter()
            .filter_map(|r| r.at_ms.map(|t| (r.seq, t)))
            .collect();
        let raw: Vec<f64> = sent
            .iter()
            .filter_map(|s| at.get(&s.seq).map(|t| (t - s.sent_ms).max(0.0)))
            .collect();
        let n = sent.len() as f64;
        let acked = m["acknowledged"];
        let achieved = n / took.as_secs_f64();
        let qs = [0.5, 0.95, 0.99];
        let refs: Vec<f64> = qs.iter().map(|q| reference(raw.clone(), *q)).collect();
        let probe: Vec<f64> = ["p50_ms", "p95_ms", "p99_ms"]
            .iter()
            .map(|k| m[*k])
            .collect();
        let diff = probe
            .iter()
            .zip(&refs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let sustained = acked == n && achieved >= 0.98 * rate && probe[2] < 50.0;
        if sustained {
            best = Some(rate);
        }
        println!(
            "{rate:>8} {achieved:>9.0} {:>7.2} {:>10.1} {:>6.2}x {:>9} | {:>6.2}/{:>6.2}/{:>7.2} | {:>6.2}/{:>6.2}/{:>7.2} | {diff:>9.4}",
            100.0 * acked / n,
            cpu.as_secs_f64() * 1e6 / n,
            cpu.as_secs_f64() / n / base_per_msg,
            if sustained { "yes" } else { "no" },
            probe[0],
            probe[1],
            probe[2],
            refs[0],
            refs[1],
            refs[2]
        );
        assert!(
            diff < 1e-9,
            "the probe's percentiles differ from the reference"
        );
    }
    match best {
        Some(r) => println!("highest sustained rate: {r} msg/s (of the rates tried)"),
        None => println!("no rate tried was sustained"),
    }
    let _ = sim.kill();
    let _ = sim.wait();
}
