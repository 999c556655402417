//! How fast a `network_partition` takes effect and how fast traffic flows again,
//! as a client in the partitioned namespace sees it.
//!
//! A prober thread inside the client namespace connects to the api every 1 ms and
//! records what each attempt saw. Over N injections (default 50, `FD_BENCH_N`) per
//! action, through the library exactly as the engine drives a fault:
//! - blocked: step start (before `prepare`) → first probe attempt that is blocked;
//! - flowing: revert start → first probe attempt that connects.
//!
//! Baselines measured in the same run and namespace, for ratios:
//! - `ip netns exec NS nft -f FILE` of a table with one timeout set and one rule,
//!   and `ip netns exec NS nft delete table` (the naive way, process starts included);
//! - the same `nft -f` started from a `setns(2)` thread (how firedrill starts it).
//!
//! Run as root: `cargo bench --bench network_partition` (or add `--profile dev` to
//! reuse the debug build: the timed work is the kernel and `nft`, not our code).

// Shared with the tests (the lab and what it builds on); the bench uses only part of it,
// and builds their `#[cfg(test)]` modules without a test harness to use them.
#[allow(unused_imports)]
#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::faults::{fault, run_id};
use common::netns::{self, API_IP, Lab};
use firedrill::fault::{FaultCtx, RevertCtx};
use firedrill::rt::Runtime;
use tokio_util::sync::CancellationToken;

const PORT: u16 = 8080;

/// Samples of the 1 ms prober: (attempt start, blocked?).
struct Prober {
    samples: Arc<Mutex<Vec<(Instant, bool)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(ns: &str, addr: SocketAddr) -> Prober {
        let samples = Arc::new(Mutex::new(Vec::with_capacity(100_000)));
        let stop = Arc::new(AtomicBool::new(false));
        let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        let (s, st) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let tick = Duration::from_millis(1);
            let mut next = Instant::now();
            while !st.load(Ordering::Relaxed) {
                let t = Instant::now();
                // In-namespace connects take ~0.1 ms; 3 ms without an answer is a drop.
                let blocked = TcpStream::connect_timeout(&addr, Duration::from_millis(3)).is_err();
                s.lock().unwrap().push((t, blocked));
                next += tick;
                match next.checked_duration_since(Instant::now()) {
                    Some(w) => std::thread::sleep(w),
                    None => next = Instant::now(),
                }
            }
        });
        Prober {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits for the first attempt started at or after `after` that saw `blocked`.
    fn first(&self, blocked: bool, after: Instant, within: Duration) -> Option<Duration> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((t, _)) = self
                .samples
                .lock()
                .unwrap()
                .iter()
                .rev()
                .take_while(|(t, _)| *t >= after)
                .filter(|(_, b)| *b == blocked)
                .last()
            {
                return Some(*t - after);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (median, p99) by nearest rank.
fn stats(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.5), rank(0.99))
}

fn timed(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{cmd:?}");
    ms(t.elapsed())
}

fn main() {
    if let Some(why) = netns::skip_reason() {
        println!("network_partition bench skipped: {why}");
        return;
    }
    let n: usize = std::env::var("FD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut lab = Lab::new("bench").expect("lab");
    let api = SocketAddr::new(API_IP.into(), PORT);
    lab.serve_http(&lab.api.clone(), api);
    let prober = Prober::start(&lab.client, api);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        prober
            .first(false, Instant::now(), Duration::from_secs(1))
            .is_some()
    );
    let target = lab.client_target();
    let runtime = Runtime::default();

    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let mut medians = std::collections::BTreeMap::new();
    for action in ["reject", "drop"] {
        let spec = fault(&format!(
            "kind: network_partition\nwith: {{ to: ['{API_IP}:{PORT}'], direction: egress, action: {action} }}"
        ));
        let (mut blocked, mut flowing, mut effect_ms, mut restored_ms) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let rid = run_id();
            let started = Instant::now();
            let ctx = FaultCtx {
                run_id: &rid,
                step: "bench",
                target: &target,
                ttl: Duration::from_secs(60),
                started,
                cancel: CancellationToken::new(),
                runtime: &runtime,
            };
            let (undo, effect) = tokio.block_on(async {
                let undo = spec.prepare(&ctx).await.unwrap();
                let effect = spec.apply(&ctx, &undo).await.unwrap();
                (undo, effect)
            });
            assert!(effect.as_declared, "{effect:?}");
            blocked.push(ms(prober
                .first(true, started, Duration::from_secs(3))
                .expect("prober saw the partition")));
            effect_ms.push(effect.effective_after_ms.unwrap());
            std::thread::sleep(Duration::from_millis(10));
            let revert_start = Instant::now();
            let r = tokio
                .block_on(undo.revert(&RevertCtx {
                    runtime: Some(&runtime),
                    hurry: false,
                }))
                .unwrap();
            flowing.push(ms(prober
                .first(false, revert_start, Duration::from_secs(3))
                .expect("prober saw traffic flow again")));
            restored_ms.push(r.restored_after_ms.unwrap());
            std::thread::sleep(Duration::from_millis(10));
        }
        for (name, v) in [
            (
                format!("{action}: step start -> prober sees blocked"),
                &mut blocked,
            ),
            (
                format!("{action}: effect.effective_after_ms (own probe)"),
                &mut effect_ms,
            ),
            (
                format!("{action}: revert start -> prober sees flow"),
                &mut flowing,
            ),
            (
                format!("{action}: reverted.restored_after_ms (own probe)"),
                &mut restored_ms,
            ),
        ] {
            let (m, p) = stats(v);
            medians.insert(name.clone(), m);
            rows.push((name, m, p));
        }
    }

    // Baselines, same namespace, a table of their own.
    let dir = std::env::temp_dir().join(format!("fdbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("one.nft");
    std::fs::write(
        &file,
        "table inet fdbench_base {\n  set s { type ipv4_addr; flags interval,timeout; elements = { 10.99.99.99 timeout 60s } }\n  chain out { type filter hook output priority -300; ip daddr @s counter reject; }\n}\n",
    )
    .unwrap();
    let ns = lab.client.clone();
    let netns_file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    let (mut add, mut del, mut add_setns, mut del_setns) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        add.push(timed(
            Command::new("ip")
                .args(["netns", "exec", &ns, "nft", "-f"])
                .arg(&file),
        ));
        del.push(timed(Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "nft",
            "delete",
            "table",
            "inet",
            "fdbench_base",
        ])));
        let f = file.clone();
        let nf = netns_file.try_clone().unwrap();
        let (a, d) = std::thread::spawn(move || {
            nix::sched::setns(&nf, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            (
                timed(Command::new("nft").arg("-f").arg(&f)),
                timed(Command::new("nft").args(["delete", "table", "inet", "fdbench_base"])),
            )
        })
        .join()
        .unwrap();
        add_setns.push(a);
        del_setns.push(d);
    }
    std::fs::remove_dir_all(&dir).ok();
    for (name, v) in [
        (
            "baseline: ip netns exec nft -f (1 timeout set, 1 rule)",
            &mut add,
        ),
        ("baseline: ip netns exec nft delete table", &mut del),
        ("baseline: nft -f from a setns thread", &mut add_setns),
        (
            "baseline: nft delete table from a setns thread",
            &mut del_setns,
        ),
    ] {
        let (m, p) = stats(v);
        medians.insert(name.to_string(), m);
        rows.push((name.to_string(), m, p));
    }
    drop(prober);

    println!(
        "\nnetwork_partition bench: {n} injections per action, 1 ms prober in the client namespace"
    );
    println!("{:<58} {:>10} {:>10}", "", "median ms", "p99 ms");
    for (name, m, p) in &rows {
        println!("{name:<58} {m:>10.2} {p:>10.2}");
    }
    let base_add = medians["baseline: ip netns exec nft -f (1 timeout set, 1 rule)"];
    let base_del = medians["baseline: ip netns exec nft delete table"];
    println!("\nratios (medians):");
    for action in ["reject", "drop"] {
        let b = medians[&format!("{action}: step start -> prober sees blocked")];
        let f = medians[&format!("{action}: revert start -> prober sees flow")];
        println!(
            "  {action}: blocked / baseline nft -f = {:.2}; flowing / baseline delete table = {:.2}",
            b / base_add,
            f / base_del
        );
        println!(
            "  {action}: target blocked <= 20 ms: {}; flowing <= 50 ms: {}",
            if b <= 20.0 { "met" } else { "MISSED" },
            if f <= 50.0 { "met" } else { "MISSED" }
        );
    }
    drop(lab);
}
