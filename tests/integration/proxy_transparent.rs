//! Transparent mode against the real kernel: in the lab's `client` namespace an
//! nftables redirect (in the run's own table) sends traffic for the api's address
//! through the proxy, whose sockets live in that namespace. The client is unchanged
//! (it dials the api's own address), sees the fault, and after the revert the
//! namespace's ruleset is byte-identical and the proxy's port is closed. SIGKILL of
//! the engine: the redirect expires by its ttl, and `firedrill recover` removes the
//! leftover chains.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::faults::{inject_ok, revert, revert_with, run_id};
use common::netns::{API_IP, Lab};
use firedrill::fault::{FaultSpec, Undo};
use firedrill::rt::Runtime;

const PORT: u16 = 8080;

fn api() -> SocketAddr {
    SocketAddr::new(API_IP.into(), PORT)
}

fn spec(yaml: &str) -> FaultSpec {
    let v: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

/// An unchanged client: `GET /` to `addr` from inside `ns`; (body or error, time).
fn get(lab: &Lab, ns: &str, addr: SocketAddr) -> (Result<String, String>, Duration) {
    lab.in_ns(ns, move || {
        let t = Instant::now();
        let r = (|| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok::<_, std::io::Error>(out)
        })();
        (r.map_err(|e| e.to_string()), t.elapsed())
    })
}

fn proxy_port(undo: &Undo) -> u16 {
    match undo {
        Undo::HttpFault(u) | Undo::Latency(u) => u.listen.port(),
        other => panic!("not a proxy fault: {}", other.kind()),
    }
}

fn port_open(lab: &Lab, ns: &str, port: u16) -> bool {
    lab.in_ns(ns, move || {
        TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(300),
        )
        .is_ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fault_reaches_an_unchanged_client_and_leaves_nothing() {
    let Some(lab) = Lab::serving_api("pxhttp", api()) else {
        return;
    };
    let client = lab.client.clone();
    let (before, _) = get(&lab, &client, api());
    assert!(before.unwrap().ends_with("ok"));

    let rt = Runtime::default();
    let f = spec(&format!(
        "kind: http_fault\nwith: {{ intercept: ['{API_IP}:{PORT}'], rules: [ {{ match: {{ path: / }}, action: wecom_busy }} ] }}"
    ));
    let (undo, effect) = inject_ok(&f, &lab.client_target(), "busy api", &rt).await;
    assert!(effect.as_declared, "{effect:?}");
    let port = proxy_port(&undo);
    assert!(port_open(&lab, &client, port));
    assert_eq!(lab.firedrill_tables(&client).len(), 1);

    // The client dials the api's own address and gets WeCom's "system busy".
    for _ in 0..3 {
        let (r, _) = get(&lab, &client, api());
        let body = r.unwrap();
        assert!(body.contains(r#""errcode":-1"#), "{body}");
    }

    let r = revert_with(&undo, &rt).await.unwrap();
    assert_eq!(r.details["stats"]["http"]["requests"], 3, "{r:?}");
    // Only the redirected clients and the effect checks' direct dials: a dial of the
    // proxy's own port must not make it connect to itself (it did once, in a loop).
    let conns = r.details["stats"]["connections"].as_u64().unwrap();
    assert!(conns <= 6, "{conns} connections: {r:?}");
    assert_eq!(r.details["stats"]["http"]["rules"][0]["applied"], 3);
    let (after, _) = get(&lab, &client, api());
    assert!(after.unwrap().ends_with("ok"));
    assert!(!port_open(&lab, &client, port), "proxy port still open");
    lab.assert_rulesets_unchanged();
    // Idempotent, as `firedrill recover` would replay it.
    revert(&undo).await.unwrap();
    lab.assert_rulesets_unchanged();
}

/// A switchover (`reroute`) in transparent mode on a namespace target: the alternate
/// exists only inside the namespace, so it must be dialled there, and the redirect
/// intercepts it too, so the proxy's own connection to it must carry the proxy's
/// mark (without it, every rerouted request came back into the proxy, was rerouted
/// again, and so on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reroute_dials_its_alternate_in_the_namespace_past_the_redirect() {
    let Some(mut lab) = Lab::serving_api("pxreroute", api()) else {
        return;
    };
    let alt = SocketAddr::new(API_IP.into(), PORT + 1);
    lab.serve_http_body(&lab.api.clone(), alt, "alternate");
    let client = lab.client.clone();
    let rt = Runtime::default();
    let f = spec(&format!(
        "kind: http_fault\nwith: {{ intercept: ['{API_IP}:{PORT}', '{alt}'], rules: [ {{ match: {{ path: / }}, action: {{ reroute: {{ to: '{alt}' }} }}, percentage: 100 }} ] }}"
    ));
    let (undo, effect) = inject_ok(&f, &lab.client_target(), "switch over", &rt).await;
    assert!(effect.as_declared, "{effect:?}");
    for _ in 0..3 {
        let (r, _) = get(&lab, &client, api());
        let body = r.unwrap();
        assert!(body.ends_with("alternate"), "{body}");
    }
    let r = revert_with(&undo, &rt).await.unwrap();
    // Three requests seen, three rerouted: none came back through the redirect.
    assert_eq!(r.details["stats"]["http"]["requests"], 3, "{r:?}");
    assert_eq!(r.details["stats"]["http"]["rerouted"], 3, "{r:?}");
    assert_eq!(r.details["stats"]["upstream_errors"], 0, "{r:?}");
    let (after, _) = get(&lab, &client, api());
    assert!(after.unwrap().ends_with("ok"));
    lab.assert_rulesets_unchanged();
}

/// A connection opened before the fault bypasses a NAT redirect; with
/// `reset_established` its next packet is answered with a TCP reset (the client
/// reconnects, through the proxy), while without it the old connection keeps
/// reaching the real service. New connections go through the proxy either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_open_before_the_fault_are_reset_only_when_asked() {
    let Some(mut lab) = Lab::serving_api("pxreset", api()) else {
        return;
    };
    let client = lab.client.clone();
    // Connection tracking already running in the client namespace (as on any host
    // with a stateful firewall): the old connection is tracked from its first packet,
    // so the redirect, decided at a connection's first packet, leaves it alone.
    // (Without it, conntrack picks the old connection up mid-stream as a new one
    // and the redirect breaks it anyway.)
    let ct = std::process::Command::new("ip")
        .args(["netns", "exec", &client, "nft", "add table ip fdtest_ct; add chain ip fdtest_ct c { type filter hook output priority 0; }; add rule ip fdtest_ct c ct state established accept"])
        .status()
        .unwrap();
    assert!(ct.success());
    lab.snapshot();
    // A server on another port that keeps every connection and counts the bytes.
    let held = SocketAddr::new(API_IP.into(), PORT + 10);
    let listener = lab.in_ns(&lab.api.clone(), move || {
        std::net::TcpListener::bind(held).unwrap()
    });
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let got2 = got.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let got = got2.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    let rt = Runtime::default();
    for (reset, name) in [(false, "keep"), (true, "reset")] {
        let mut old = lab.in_ns(&client, move || {
            let s = TcpStream::connect_timeout(&held, Duration::from_secs(2)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        });
        let before = got.load(std::sync::atomic::Ordering::SeqCst);
        let f = spec(&format!(
            "kind: http_fault\nwith: {{ intercept: ['{held}', '{API_IP}:{PORT}'], reset_established: {reset}, rules: [ {{ match: {{ path: / }}, action: wecom_busy }} ] }}"
        ));
        let (undo, effect) = inject_ok(&f, &lab.client_target(), name, &rt).await;
        assert!(effect.as_declared, "{effect:?}");
        // New connections go through the proxy.
        let (r, _) = get(&lab, &client, api());
        assert!(r.unwrap().contains(r#""errcode":-1"#));
        // The old connection: reset, or still straight to the service.
        let wrote = old.write_all(b"ping").and_then(|()| old.flush());
        std::thread::sleep(Duration::from_millis(300));
        let mut buf = [0u8; 16];
        let read = old.read(&mut buf);
        let arrived = got.load(std::sync::atomic::Ordering::SeqCst) - before;
        if reset {
            assert_eq!(arrived, 0, "the old connection reached the service");
            let e = wrote.err().or(read.err()).expect("a reset");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        } else {
            assert!(wrote.is_ok(), "{wrote:?}");
            assert_eq!(arrived, 4, "the old connection bypasses the proxy");
        }
        revert_with(&undo, &rt).await.unwrap();
        lab.assert_rulesets_unchanged();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_added_to_an_unchanged_client_and_measured() {
    let Some(lab) = Lab::serving_api("pxlat", api()) else {
        return;
    };
    let client = lab.client.clone();
    let rt = Runtime::default();
    let f = spec(&format!(
        "kind: latency\nwith: {{ intercept: ['{API_IP}:{PORT}'], delay: 80ms }}"
    ));
    let (undo, effect) = inject_ok(&f, &lab.client_target(), "slow api", &rt).await;
    // Declared vs measured: the probe went through the redirect and directly.
    assert!(effect.as_declared, "{effect:?}");
    assert_eq!(effect.details["proxied_ms"].as_array().unwrap().len(), 5);
    let (r, took) = get(&lab, &client, api());
    assert!(r.unwrap().ends_with("ok"));
    assert!(took >= Duration::from_millis(80), "{took:?}");
    let port = proxy_port(&undo);
    revert_with(&undo, &rt).await.unwrap();
    let (r, took) = get(&lab, &client, api());
    assert!(r.unwrap().ends_with("ok"));
    assert!(took < Duration::from_millis(60), "{took:?}");
    assert!(!port_open(&lab, &client, port));
    lab.assert_rulesets_unchanged();
}

#[test]
fn sigkilled_engine_redirect_expires_by_its_ttl_and_recover_cleans_up() {
    let Some(mut lab) = Lab::serving_api("pxkill", api()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_scenario(
        tmp.path(),
        &format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: proxy-sigkill }}
targets:
  client: {{ netns: {client} }}
faults:
  - name: busy api
    kind: http_fault
    target: client
    with:
      intercept: ["{API_IP}:{PORT}"]
      rules: [ {{ action: wecom_busy }} ]
    ttl: 3s
verifications:
  - name: keep the fault up
    probe: {{ command: {{ run: "sleep 30", timeout: 60s }} }}
"#,
            client = lab.client
        ),
    );
    let state = tmp.path().join("state");
    let pid = lab.spawn(
        common::run_cmd(&file, &state, &tmp.path().join("reports"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let client = lab.client.clone();
    // The fault reaches the unchanged client...
    let start = Instant::now();
    let seen = loop {
        if let (Ok(b), _) = get(&lab, &client, api()) {
            if b.contains(r#""errcode":-1"#) {
                break Instant::now();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "fault never seen"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // ...then the engine dies with its proxy, without reverting anything.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(lab.wait_child(pid, Duration::from_secs(5)).is_some());
    assert_eq!(lab.firedrill_tables(&client).len(), 1, "nobody reverted");
    // The redirect's elements expire: the client reaches the api directly again
    // within ttl (3 s) + 1 s of the fault being seen.
    let healed = loop {
        if let (Ok(b), _) = get(&lab, &client, api()) {
            if b.ends_with("ok") {
                break seen.elapsed();
            }
        }
        assert!(
            seen.elapsed() < Duration::from_secs(10),
            "redirect never expired"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(healed <= Duration::from_secs(4), "healed after {healed:?}");
    // `recover` removes the inert chains and the table; the proxy is already gone.
    let stdout = common::recover_all(&state);
    assert!(stdout.contains("busy api (http_fault)"), "{stdout}");
    assert!(lab.firedrill_tables(&client).is_empty());
    lab.assert_rulesets_unchanged();
}

/// A proxy fault's ledger record, as `recover` reads it in a fresh process: the
/// revert checks the port on the target the record names (the client namespace),
/// not on the host where `recover` runs. A listener on the same port in the host
/// must not fail it, and one left in the namespace must.
#[test]
fn ledger_record_is_reverted_on_its_recorded_netns_target() {
    let Some(lab) = Lab::new("pxledger") else {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let target = lab.client_target();
    // The record an engine on `target` writes for an explicit-mode proxy, written
    // with the library's own ledger, as a SIGKILLed engine leaves it.
    let write_record = |run_id: &str, port: u16| {
        let undo: Undo = serde_json::from_value(serde_json::json!({
            "kind": "latency",
            "key": format!("proxy:{run_id}:slow api"),
            "listen": format!("127.0.0.1:{port}"),
            "upstream": format!("{API_IP}:{PORT}"),
            "target": serde_json::to_value(&target).unwrap(),
        }))
        .unwrap();
        assert_eq!(undo.target(), &target);
        let mut l = firedrill::engine::ledger::Ledger::create(&state, run_id).unwrap();
        l.record_inject("slow api", &target, &undo).unwrap();
    };
    let recover = |run_id: &str| {
        let out = common::firedrill()
            .args(["recover", "--run", run_id, "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    // Closed in the namespace, open on the host (someone else's service).
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let run_a = run_id();
    write_record(&run_a, port);
    let (code, out) = recover(&run_a);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("reverted slow api (latency)") && out.contains(&lab.client),
        "the revert must say it checked the namespace: {out}"
    );
    drop(host);

    // Left open in the namespace (a proxy that outlived its engine): not reverted.
    let ns_listener = lab.in_ns(&lab.client, move || {
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap()
    });
    let run_b = run_id();
    write_record(&run_b, port);
    let (code, out) = recover(&run_b);
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("still accepts connections") && out.contains(&lab.client),
        "{out}"
    );
    drop(ns_listener);
}
