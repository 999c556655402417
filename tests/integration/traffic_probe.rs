//! The `traffic` probe against real HTTP servers on 127.0.0.1: its percentiles
//! agree with a reference computed over its raw samples, latency is counted from
//! the scheduled send time (no coordinated omission), and inside a drill its
//! figures are split per phase: a WeCom rate limit injected by `http_fault` shows in
//! `during` only, and the proxy's port is closed after the run.

use crate::proxy_support;

use std::sync::Arc;
use std::time::Duration;

use firedrill::engine::{Control, Engine, RunOptions};
use firedrill::probe::traffic::{TrafficProbe, run_for, summarize};
use proxy_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP server answering each request after `delay(n)` (n = request number).
async fn slow_server(delay: fn(u64) -> Duration) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let n = n.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut have = 0;
                loop {
                    let Ok(k) = c.read(&mut buf[have..]).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    have += k;
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(delay(i)).await;
                        let body = if i % 10 == 9 {
                            r#"{"errcode":45009}"#
                        } else {
                            r#"{"errcode":0}"#
                        };
                        let r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if c.write_all(r.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn probe(url: String, rate: f64, in_flight: u32) -> TrafficProbe {
    serde_json::from_value(serde_json::json!({
        "url": url, "rate": rate, "max_in_flight": in_flight,
        "success": { "status": 200, "json": { "path": "$.errcode", "eq": 0 } }
    }))
    .unwrap()
}

fn http() -> reqwest::Client {
    firedrill::install_crypto_provider();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_agree_with_a_reference_over_the_raw_samples() {
    // Spread latencies: 0–29 ms depending on the request.
    let addr = slow_server(|i| Duration::from_millis((i * 7) % 30)).await;
    let p = probe(format!("http://{addr}/"), 200.0, 256);
    let samples = run_for(&p, &http(), Duration::from_secs(3)).await;
    assert!((590..=600).contains(&samples.len()), "{}", samples.len());
    // Scheduled by the clock: due times are exactly 5 ms apart.
    for (i, s) in samples.iter().enumerate() {
        assert_eq!(s.due, Duration::from_micros(5000 * i as u64));
    }
    let m = summarize(samples.iter());
    let mut lat: Vec<f64> = samples
        .iter()
        .map(|s| s.latency.as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let nearest_rank = |q: f64| lat[((q * lat.len() as f64).ceil() as usize).max(1) - 1];
    for (key, q) in [
        ("p50_ms", 0.50),
        ("p95_ms", 0.95),
        ("p99_ms", 0.99),
        ("max_ms", 1.0),
    ] {
        let (got, want) = (m[key], nearest_rank(q));
        // HDR histogram with 3 significant digits: within 0.1% (+1 µs of rounding).
        assert!(
            (got - want).abs() <= want * 0.001 + 0.001,
            "{key}: histogram {got} ms, reference {want} ms"
        );
    }
    let ok = samples.iter().filter(|s| s.ok).count() as f64;
    assert_eq!(m["count"], samples.len() as f64);
    assert_eq!(m["success_rate"], ok / samples.len() as f64);
    // Every 10th answer carries errcode 45009: the success rule sees it.
    assert!(
        (m["success_rate"] - 0.9).abs() < 0.01,
        "{}",
        m["success_rate"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_counts_from_the_scheduled_time_not_the_send_time() {
    // One request at a time, 20 ms each, asked for 100/s during 1 s: the server can
    // only do 50/s, so requests queue. A closed-loop tool would report ~20 ms; the
    // honest figure grows to about a second for the last ones.
    let addr = slow_server(|_| Duration::from_millis(20)).await;
    let p = probe(format!("http://{addr}/"), 100.0, 1);
    let samples = run_for(&p, &http(), Duration::from_secs(1)).await;
    assert_eq!(samples.len(), 100);
    let m = summarize(samples.iter());
    assert!(m["max_ms"] >= 800.0, "max {} ms", m["max_ms"]);
    assert!(m["p50_ms"] >= 400.0, "p50 {} ms", m["p50_ms"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_reports_traffic_per_phase_around_an_http_fault() {
    let up = Upstream::start().await;
    let port = free_port();
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: traffic-phases }}
objectives: {{ max_duration: 1m }}
prechecks:
  - name: upstream answers
    probe: {{ http: {{ url: "http://{up}/" }} }}
faults:
  - name: wecom quota
    kind: http_fault
    with:
      listen: 127.0.0.1:{port}
      upstream: {up}
      rules:
        - match: {{ path: /cgi-bin/ }}
          action: {{ wecom_rate_limit: {{ requests: 2, per: 1s }} }}
    ramp_up: 2s
traffic:
  - name: message sends
    probe:
      url: http://127.0.0.1:{port}/cgi-bin/message/send
      rate: 25
      timeout: 1s
      success: {{ status: 200, json: {{ path: $.errcode, eq: 0 }} }}
    before: 1s
    after: 1s
    expect:
      during: {{ metrics: {{ success_rate: {{ le: 0.5 }} }} }}
      after: {{ metrics: {{ success_rate: {{ ge: 0.99 }}, p95_ms: {{ le: 200 }} }} }}
"#,
        up = up.addr
    );
    let drill = firedrill::scenario::load_str(&yaml, "t.yaml".as_ref(), &[]).unwrap();
    let opts = RunOptions {
        level: firedrill::scenario::Level::Full,
        state_dir: state.path().to_path_buf(),
        lock_dir: state.path().join("locks"),
        run_id: Some(format!("traffic{}", std::process::id())),
        progress: false,
        report_dir: None,
        rehearse: false,
    };
    let engine = Engine::prepare(Arc::new(drill), opts).unwrap();
    let rec = engine.run(Control::default()).await;
    let t = rec
        .steps
        .iter()
        .find(|s| s.name == "message sends")
        .expect("traffic step");
    let m = &t.metrics;
    // Before the fault the load went... to the proxy's port, which was not open yet:
    // every request failed, which is what the baseline must show.
    assert_eq!(m["before.success_rate"], 0.0, "{m:?}");
    assert!(m["during.count"] >= 40.0, "{m:?}");
    assert!(m["during.success_rate"] <= 0.5, "{m:?}");
    assert!(t.detail.contains("during: success_rate"), "{}", t.detail);
    let fault = rec.steps.iter().find(|s| s.name == "wecom quota").unwrap();
    let revert = fault.fault.as_ref().unwrap().revert.as_ref().unwrap();
    assert!(revert.ok);
    let applied = revert.result.as_ref().unwrap().details["stats"]["http"]["rules"][0]["applied"]
        .as_u64()
        .unwrap();
    assert!(applied >= 20, "{applied}");
    // After the revert the URL points at a closed port: the `after` expectation fails,
    // and with it the drill (the traffic entry is critical).
    assert!(m["after.success_rate"] < 0.5, "{m:?}");
    assert_eq!(t.status, firedrill::model::StepStatus::Failed);
    assert_eq!(rec.outcome.status, firedrill::model::Status::Failed);
    assert_closed(format!("127.0.0.1:{port}").parse().unwrap());
}
