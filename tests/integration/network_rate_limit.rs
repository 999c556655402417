//! `network_rate_limit` against the real kernel: the accepted rate of new
//! connections from the client namespace to a server in the api namespace must
//! match the configured rate.

use crate::common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::faults::{fault, inject_ok, revert};
use common::netns::{API_IP, Conn, Lab};
use firedrill::rt::Runtime;

const PORT: u16 = 8080;

fn api() -> SocketAddr {
    SocketAddr::new(API_IP.into(), PORT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_connection_rate_is_within_20_percent_of_the_limit() {
    let Some(lab) = Lab::serving_api("ratelimit", api()) else {
        return;
    };
    let rt = Runtime::default();
    const RATE: f64 = 20.0;
    // A bucket of 4 absorbs scheduling stalls of the offering thread (up to 200 ms)
    // without losing tokens; it is emptied before the window starts.
    const BURST: u32 = 4;
    let spec = fault(&format!(
        "kind: network_rate_limit\nwith: {{ to: ['{API_IP}:{PORT}'], per_second: {RATE}, burst: {BURST}, action: reject }}"
    ));
    let (undo, effect) = inject_ok(&spec, &lab.client_target(), "limit", &rt).await;
    assert!(effect.as_declared, "{effect:?}");
    assert!(
        effect.details["limited_packets"].as_u64().unwrap() > 0,
        "{effect:?}"
    );

    // Offer 200 new connections per second for 3 s (bounded: 600 attempts) and
    // count the ones the limit let through.
    let (accepted, offered, window) = lab.in_ns(&lab.client, || {
        // Empty the bucket: from here on only the rate lets connections through.
        for _ in 0..50 {
            if TcpStream::connect_timeout(&api(), Duration::from_millis(200)).is_err() {
                break;
            }
        }
        let start = Instant::now();
        let (mut accepted, mut offered) = (0u32, 0u32);
        for k in 0..600u32 {
            let due = start + Duration::from_millis(5) * k;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            offered += 1;
            if TcpStream::connect_timeout(&api(), Duration::from_millis(200)).is_ok() {
                accepted += 1;
            }
        }
        (accepted, offered, start.elapsed())
    });
    let rate = accepted as f64 / window.as_secs_f64();
    eprintln!("offered {offered}, accepted {accepted} in {window:?}: {rate:.1}/s (limit {RATE}/s)");
    assert!(
        (rate - RATE).abs() <= RATE * 0.2,
        "accepted {rate:.1}/s, expected {RATE}/s ±20% ({accepted} of {offered} in {window:?})"
    );
    revert(&undo).await.unwrap();
    // Unlimited again: a quick burst is accepted in full.
    let all = lab.in_ns(&lab.client, || {
        (0..30)
            .filter(|_| TcpStream::connect_timeout(&api(), Duration::from_millis(200)).is_ok())
            .count()
    });
    assert_eq!(all, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_limit_with_drop_is_measured_and_reverted() {
    let Some(lab) = Lab::serving_api("ratepkt", api()) else {
        return;
    };
    let rt = Runtime::default();
    let spec = fault(&format!(
        "kind: network_rate_limit\nwith: {{ to: ['10.77.0.0/24'], ports: [{PORT}], unit: packets, per_second: 5, burst: 3, action: drop }}"
    ));
    // A CIDR has no host to probe: the rules themselves are checked.
    let (undo, effect) = inject_ok(&spec, &lab.client_target(), "pkts", &rt).await;
    assert!(effect.as_declared, "{effect:?}");
    // 20 quick connects: only about burst + rate get their packets through.
    let ok = lab.in_ns(&lab.client, || {
        (0..20)
            .filter(|_| TcpStream::connect_timeout(&api(), Duration::from_millis(50)).is_ok())
            .count()
    });
    assert!(ok < 10, "{ok} of 20 connected through a 5 packets/s limit");
    revert(&undo).await.unwrap();
    assert_eq!(
        lab.connect(&lab.client, api(), Duration::from_millis(300)),
        Conn::Connected
    );
}
