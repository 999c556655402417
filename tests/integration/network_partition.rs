//! `network_partition` against the real kernel: two namespaces joined by a veth pair,
//! servers in `api`, connects from `client`, rules in the client's run table.
//! Every test leaves each namespace's ruleset byte-identical (checked by the lab).

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::faults::{fault, inject, inject_ok, revert, run_id};
use common::netns::{API_IP, API_IP2, Conn, Lab};
use firedrill::rt::Runtime;

const PORT: u16 = 8080;
const OTHER_PORT: u16 = 8081;

fn api(port: u16) -> SocketAddr {
    SocketAddr::new(API_IP.into(), port)
}

fn quick() -> Duration {
    Duration::from_millis(300)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_drop_and_reject_block_only_their_port_then_revert() {
    let Some(mut lab) = Lab::serving_api("egress", api(PORT)) else {
        return;
    };
    lab.serve_http(&lab.api.clone(), api(OTHER_PORT));
    assert_eq!(
        lab.connect(&lab.client, api(PORT), quick()),
        Conn::Connected
    );
    let rt = Runtime::default();
    for (action, blocked) in [("drop", Conn::NoAnswer), ("reject", Conn::Refused)] {
        let spec = fault(&format!(
            "kind: network_partition\nwith: {{ to: ['{API_IP}'], ports: [{PORT}], direction: egress, action: {action} }}"
        ));
        let rid = run_id();
        let (undo, effect) = inject(
            &spec,
            &lab.client_target(),
            &rid,
            "cut api",
            Duration::from_secs(60),
            &rt,
        )
        .await
        .unwrap();
        assert!(effect.as_declared, "{action}: {effect:?}");
        assert!(effect.effective_after_ms.unwrap() < 2000.0, "{effect:?}");
        assert_eq!(effect.details["probe"]["before"], "connected");
        assert!(
            effect.details["matched_packets"].as_u64().unwrap() > 0,
            "{effect:?}"
        );
        assert_eq!(
            lab.firedrill_tables(&lab.client),
            [format!("firedrill_{rid}")]
        );

        // Blocked as declared, and only on the declared port.
        let t = Instant::now();
        assert_eq!(
            lab.connect(&lab.client, api(PORT), quick()),
            blocked,
            "{action}"
        );
        if action == "reject" {
            assert!(
                t.elapsed() < Duration::from_millis(200),
                "reject must fail fast: {:?}",
                t.elapsed()
            );
        }
        assert!(
            lab.http_ok(&lab.client, api(OTHER_PORT)),
            "{action}: port {OTHER_PORT} must still work"
        );

        let r = revert(&undo).await.unwrap();
        assert!(r.restored_after_ms.is_some(), "{r:?}");
        assert_eq!(r.details["table_deleted"], true, "{r:?}");
        assert!(lab.http_ok(&lab.client, api(PORT)));
        lab.assert_rulesets_unchanged();
        // Idempotent: a second revert finds nothing and succeeds.
        let again = revert(&undo).await.unwrap();
        assert!(again.measured.contains("already gone"), "{again:?}");
        lab.assert_rulesets_unchanged();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_with_reject_fail_fast() {
    let Some(mut lab) = Lab::serving_api("both", api(PORT)) else {
        return;
    };
    let rt = Runtime::default();
    let spec = fault(&format!(
        "kind: network_partition\nwith: {{ to: ['{API_IP}'], direction: both, action: reject }}"
    ));
    let (undo, effect) = inject_ok(&spec, &lab.client_target(), "both", &rt).await;
    // No port given: nothing to connect to, so the rules themselves are checked.
    assert!(effect.as_declared, "{effect:?}");
    assert!(effect.measured.contains("rules in place"), "{effect:?}");
    let t = Instant::now();
    assert_eq!(lab.connect(&lab.client, api(PORT), quick()), Conn::Refused);
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    // The api cannot reach the client either (ingress part).
    lab.serve_http(
        &lab.client.clone(),
        SocketAddr::new(common::netns::CLIENT_IP.into(), PORT),
    );
    assert_ne!(
        lab.connect(
            &lab.api,
            SocketAddr::new(common::netns::CLIENT_IP.into(), PORT),
            quick()
        ),
        Conn::Connected
    );
    revert(&undo).await.unwrap();
    assert!(lab.http_ok(&lab.client, api(PORT)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_only_drops_the_answers() {
    let Some(mut lab) = Lab::serving_api("ingress", api(PORT)) else {
        return;
    };
    lab.serve_http(&lab.api.clone(), api(OTHER_PORT));
    let rt = Runtime::default();
    // On the client: packets FROM api:PORT are dropped, so handshakes to it never complete.
    let spec = fault(&format!(
        "kind: network_partition\nwith: {{ to: ['{API_IP}:{PORT}'], direction: ingress, action: reject }}"
    ));
    let (undo, effect) = inject_ok(&spec, &lab.client_target(), "in", &rt).await;
    assert!(effect.as_declared, "{effect:?}");
    assert_eq!(effect.details["probe"]["after"], "no_answer", "{effect:?}");
    assert_eq!(lab.connect(&lab.client, api(PORT), quick()), Conn::NoAnswer);
    assert!(lab.http_ok(&lab.client, api(OTHER_PORT)));
    revert(&undo).await.unwrap();
    assert!(lab.http_ok(&lab.client, api(PORT)));

    // On the api side: ingress from the client blocks the client's connections too.
    let spec = fault(&format!(
        "kind: network_partition\nwith: {{ to: ['{}'], direction: ingress, action: drop }}",
        common::netns::CLIENT_IP
    ));
    let (undo, effect) = inject_ok(&spec, &lab.api_target(), "in api", &rt).await;
    assert!(effect.as_declared, "{effect:?}");
    assert_eq!(lab.connect(&lab.client, api(PORT), quick()), Conn::NoAnswer);
    revert(&undo).await.unwrap();
    assert!(lab.http_ok(&lab.client, api(PORT)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cidrs_cover_exactly_their_networks() {
    let Some(mut lab) = Lab::serving_api("cidr", api(PORT)) else {
        return;
    };
    lab.serve_http(&lab.api.clone(), SocketAddr::new(API_IP2.into(), PORT));
    let rt = Runtime::default();
    // 10.77.0.0/24 holds API_IP, not API_IP2; the /32 inside it is folded into it.
    let spec = fault(&format!(
        "kind: network_partition\nwith: {{ to: ['10.77.0.0/24', '{API_IP}'], ports: [{PORT}], protocol: tcp, direction: egress, action: reject }}"
    ));
    let (undo, effect) = inject_ok(&spec, &lab.client_target(), "cidr", &rt).await;
    assert!(effect.as_declared, "{effect:?}");
    assert_eq!(lab.connect(&lab.client, api(PORT), quick()), Conn::Refused);
    assert!(lab.http_ok(&lab.client, SocketAddr::new(API_IP2.into(), PORT)));
    let resolved = effect.details["resolved"].to_string();
    assert!(resolved.contains("10.77.0.0/24"), "{resolved}");
    revert(&undo).await.unwrap();
    assert!(lab.http_ok(&lab.client, api(PORT)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_reject_and_drop() {
    let Some(mut lab) = Lab::new("udp") else {
        return;
    };
    let echo = api(5353);
    lab.serve_udp_echo(&lab.api.clone(), echo);
    assert_eq!(lab.udp_echo(&lab.client, echo, quick()), Conn::Connected);
    let rt = Runtime::default();
    // On the api, datagrams from the client are refused (ICMP port unreachable,
    // which the client's socket reports as "connection refused") or dropped.
    for (action, blocked) in [("reject", Conn::Refused), ("drop", Conn::NoAnswer)] {
        let spec = fault(&format!(
            "kind: network_partition\nwith: {{ to: ['{}'], protocol: udp, direction: ingress, action: {action} }}",
            common::netns::CLIENT_IP
        ));
        let (undo, effect) = inject_ok(&spec, &lab.api_target(), "udp", &rt).await;
        assert!(effect.as_declared, "{effect:?}");
        assert_eq!(
            lab.udp_echo(&lab.client, echo, quick()),
            blocked,
            "{action}"
        );
        revert(&undo).await.unwrap();
        assert_eq!(lab.udp_echo(&lab.client, echo, quick()), Conn::Connected);
    }
    // On the client, egress: the kernel fails the send itself (EPERM), at once.
    let spec = fault(&format!(
        "kind: network_partition\nwith: {{ to: ['{echo}'], protocol: udp, direction: egress, action: drop }}"
    ));
    let (undo, _) = inject_ok(&spec, &lab.client_target(), "udp out", &rt).await;
    assert_eq!(lab.udp_echo(&lab.client, echo, quick()), Conn::Other);
    revert(&undo).await.unwrap();
    assert_eq!(lab.udp_echo(&lab.client, echo, quick()), Conn::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_table_is_byte_identical_afterwards() {
    let Some(mut lab) = Lab::new("foreign") else {
        return;
    };
    lab.add_foreign_table(&lab.client.clone());
    lab.snapshot();
    let foreign_before = lab.ruleset(&lab.client);
    assert!(foreign_before.contains("foreign_guard"));
    lab.serve_http(&lab.api.clone(), api(PORT));
    let rt = Runtime::default();
    let spec = fault(&format!(
        "kind: network_partition\nwith: {{ to: ['{API_IP}:{PORT}'], action: drop }}"
    ));
    let (undo, effect) = inject_ok(&spec, &lab.client_target(), "foreign", &rt).await;
    // The foreign table accepts the api's traffic; our drop still stands.
    assert!(effect.as_declared, "{effect:?}");
    assert_eq!(lab.connect(&lab.client, api(PORT), quick()), Conn::NoAnswer);
    assert!(
        lab.ruleset(&lab.client)
            .contains("table inet foreign_guard")
    );
    revert(&undo).await.unwrap();
    assert_eq!(lab.ruleset(&lab.client), foreign_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_faults_share_the_run_table_until_the_last_revert() {
    let Some(mut lab) = Lab::serving_api("twofaults", api(PORT)) else {
        return;
    };
    lab.serve_http(&lab.api.clone(), api(OTHER_PORT));
    let rt = Runtime::default();
    let rid = run_id();
    let a = fault(&format!(
        "kind: network_partition\nwith: {{ to: ['{API_IP}:{PORT}'], direction: egress, action: reject }}"
    ));
    let b = fault(&format!(
        "kind: network_partition\nwith: {{ to: ['{API_IP}:{OTHER_PORT}'], direction: egress, action: reject }}"
    ));
    let target = lab.client_target();
    let (ua, _) = inject(&a, &target, &rid, "first", Duration::from_secs(60), &rt)
        .await
        .unwrap();
    let (ub, _) = inject(&b, &target, &rid, "second", Duration::from_secs(60), &rt)
        .await
        .unwrap();
    assert_eq!(lab.firedrill_tables(&lab.client).len(), 1);
    let rb = revert(&ub).await.unwrap();
    assert_eq!(
        rb.details["table_deleted"], false,
        "the first fault is still active"
    );
    assert_eq!(lab.connect(&lab.client, api(PORT), quick()), Conn::Refused);
    assert!(lab.http_ok(&lab.client, api(OTHER_PORT)));
    let ra = revert(&ua).await.unwrap();
    assert_eq!(ra.details["table_deleted"], true);
    assert!(lab.http_ok(&lab.client, api(PORT)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_resolve_and_are_recorded() {
    let Some(mut lab) = Lab::new("hostname") else {
        return;
    };
    // Inside the client namespace `localhost` is the namespace's own loopback.
    let local = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), PORT);
    lab.serve_http(&lab.client.clone(), local);
    assert!(lab.http_ok(&lab.client, local));
    let rt = Runtime::default();
    let spec = fault(&format!(
        "kind: network_partition\nwith: {{ to: ['localhost:{PORT}'], direction: egress, action: reject }}"
    ));
    let (undo, effect) = inject_ok(&spec, &lab.client_target(), "by name", &rt).await;
    assert!(effect.as_declared, "{effect:?}");
    let resolved = &effect.details["resolved"][0];
    assert_eq!(resolved["to"], format!("localhost:{PORT}"));
    assert!(
        resolved["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "127.0.0.1"),
        "{resolved}"
    );
    let firedrill::fault::Undo::NetworkPartition(u) = &undo else {
        panic!("{undo:?}")
    };
    assert_eq!(u.resolved[0].to, format!("localhost:{PORT}"));
    assert_eq!(lab.connect(&lab.client, local, quick()), Conn::Refused);
    revert(&undo).await.unwrap();
    assert!(lab.http_ok(&lab.client, local));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elements_expire_with_the_ttl_without_any_revert() {
    let Some(lab) = Lab::serving_api("ttl", api(PORT)) else {
        return;
    };
    let rt = Runtime::default();
    let spec = fault(&format!(
        "kind: network_partition\nwith: {{ to: ['{API_IP}:{PORT}'], direction: egress, action: reject }}"
    ));
    let injected = Instant::now();
    let (undo, effect) = inject(
        &spec,
        &lab.client_target(),
        &run_id(),
        "ttl",
        Duration::from_secs(2),
        &rt,
    )
    .await
    .unwrap();
    assert!(effect.as_declared, "{effect:?}");
    assert_eq!(lab.connect(&lab.client, api(PORT), quick()), Conn::Refused);
    let flowed = lab
        .wait_for(
            &lab.client,
            api(PORT),
            Conn::Connected,
            Duration::from_secs(4),
        )
        .expect("traffic flows again after the ttl");
    assert!(
        injected.elapsed() < Duration::from_secs(3),
        "flowed after {:?} (ttl 2 s)",
        injected.elapsed()
    );
    assert!(
        flowed >= Duration::from_millis(1000),
        "expired too early: {flowed:?}"
    );
    // The table is still there (empty sets) until someone reverts.
    assert_eq!(lab.firedrill_tables(&lab.client).len(), 1);
    revert(&undo).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_path_and_bad_parameters_are_refused_before_anything_runs() {
    // No namespace needed: validation has no side effects.
    let spec = fault("kind: network_partition\nwith: { to: ['10.0.0.0/33', 'a b'], ports: [0] }");
    let errs = spec.validate(&firedrill::target::Target::Local);
    let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["with.to[0]", "with.to[1]", "with.ports[0]"],
        "{errs:?}"
    );
    let e = serde_yaml::from_str::<firedrill::fault::FaultSpec>(
        "kind: network_partition\nwith: { to: [10.0.0.1], direction: sideways }",
    )
    .unwrap_err();
    assert!(e.to_string().contains("sideways"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_after_the_namespace_is_gone_succeeds() {
    let Some(lab) = Lab::serving_api("nsgone", api(PORT)) else {
        return;
    };
    let rt = Runtime::default();
    // The fault acts in a third namespace that disappears before the revert.
    let extra = format!("{}-x", lab.client);
    assert!(
        std::process::Command::new("ip")
            .args(["netns", "add", &extra])
            .status()
            .unwrap()
            .success()
    );
    let target = firedrill::target::Target::Netns {
        name: extra.clone(),
    };
    let spec = fault("kind: network_partition\nwith: { to: ['10.1.2.3'] }");
    let (undo, effect) = inject_ok(&spec, &target, "gone", &rt).await;
    assert!(effect.as_declared, "{effect:?}");
    assert!(
        std::process::Command::new("ip")
            .args(["netns", "del", &extra])
            .status()
            .unwrap()
            .success()
    );
    let r = revert(&undo).await.unwrap();
    assert!(r.measured.contains("no longer exists"), "{r:?}");
}
