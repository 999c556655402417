//! SSH targets: fan-out, connection setup, and how fast a remote partition blocks.
//!
//! On a fleet of 20 namespaced sshd hosts (the tests' fixture), all in one run:
//! - **fan-out**: a `command` fault killing one process on each of the 20 hosts of
//!   an `ssh_group`, at `concurrency: 20` and at `concurrency: 1`: step start → every
//!   host's kill done (the fault's `effective_after_ms`, from a fresh engine, so SSH
//!   connection setup is included). Target: ≥ 10× faster at 20.
//! - **SSH setup per host**: the first program run on a host (connect the master +
//!   one session) against the next ones (a session over the open master).
//! - **remote partition**: step start → a connect from the host is blocked, for
//!   `network_partition` on an `ssh` target, against the same fault on a `netns`
//!   target naming the host's own namespace (the engine enters it with setns).
//!
//! Run as root: `cargo bench --bench ssh` (`FD_BENCH_N` repetitions, default 3).

#[allow(unused_imports, dead_code)]
#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sshd::Fleet;
use firedrill::target::{Cmd, Target};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `effective_after_ms` of the run's first fault, from its journal.
fn effect_ms(reports: &Path) -> f64 {
    for e in std::fs::read_dir(reports).unwrap() {
        let p = e.unwrap().path().join("journal.json");
        if let Ok(text) = std::fs::read_to_string(&p) {
            let j: serde_json::Value = serde_json::from_str(&text).unwrap();
            let mut found = None;
            find(&j, &mut found);
            return found.expect("an effective_after_ms in the journal");
        }
    }
    panic!("no journal under {}", reports.display());
}

fn find(v: &serde_json::Value, out: &mut Option<f64>) {
    match v {
        serde_json::Value::Object(m) => {
            if out.is_none()
                && let Some(x) = m.get("effective_after_ms").and_then(|x| x.as_f64())
            {
                *out = Some(x);
                return;
            }
            m.values().for_each(|x| find(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| find(x, out)),
        _ => {}
    }
}

fn drill(fleet: &Fleet, engine_ns: bool, yaml: &str, tag: &str) -> f64 {
    let d = fleet.dir.path().join(tag);
    std::fs::create_dir_all(&d).unwrap();
    let s = d.join("s.yaml");
    std::fs::write(&s, yaml).unwrap();
    let mut c = if engine_ns {
        fleet.firedrill()
    } else {
        Command::new(env!("CARGO_BIN_EXE_firedrill"))
    };
    let out = c
        .args(["run", "--run-id", tag, "--state-dir"])
        .arg(d.join("state"))
        .arg("--lock-dir")
        .arg(d.join("locks"))
        .arg("--report-dir")
        .arg(d.join("reports"))
        .arg(&s)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    effect_ms(&d.join("reports"))
}

fn main() {
    let n: usize = std::env::var("FD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let Some(fleet) = Fleet::new("bench ssh", 20) else {
        return;
    };
    let d = fleet.dir.path().to_path_buf();
    let hosts: Vec<String> = fleet.hosts.iter().map(|h| h.ip.to_string()).collect();

    // SSH setup per host: first run (master + session) vs later runs (session).
    let targets: Vec<Target> = (0..20).map(|i| fleet.target(i)).collect();
    let (first, next) = fleet.block_on(move || async move {
        let mut first = Vec::new();
        let mut next = Vec::new();
        for t in &targets {
            let s = Instant::now();
            t.run(&Cmd::new("true")).await.unwrap();
            first.push(s.elapsed().as_secs_f64() * 1000.0);
            for _ in 0..5 {
                let s = Instant::now();
                t.run(&Cmd::new("true")).await.unwrap();
                next.push(s.elapsed().as_secs_f64() * 1000.0);
            }
        }
        (first, next)
    });
    println!(
        "ssh setup per host: first run {:.1} ms (median of 20: connect + session), later runs {:.1} ms (session over the master): {:.1}x",
        median(first.clone()),
        median(next.clone()),
        median(first) / median(next)
    );

    // Fan-out: kill one process on each of the 20 hosts.
    let mut victims = Vec::new();
    let group = |conc: u32| {
        format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: fanout }}
targets:
  fleet:
    ssh_group: {{ hosts: {hosts:?}, concurrency: {conc}, user: root, identity_file: {key}, known_hosts_file: {known}, connect_timeout: 10s }}
faults:
  - name: kill one process per host
    kind: command
    target: fleet
    ttl: 120s
    with:
      apply: "pkill -KILL -x \"v$(ip -4 -o addr show dev eth0 | awk '{{print $4}}' | cut -d/ -f1 | cut -d. -f4)\""
      revert: "true"
"#,
            key = d.join("user_key").display(),
            known = d.join("known_hosts").display(),
        )
    };
    let mut times = [Vec::new(), Vec::new()];
    for rep in 0..n {
        for (k, conc) in [20u32, 1].into_iter().enumerate() {
            // One victim per host, named after the host's last octet.
            for (i, h) in fleet.hosts.iter().enumerate() {
                let name = format!("v{}", h.ip.octets()[3]);
                let link = d.join(&name);
                let _ = std::os::unix::fs::symlink("/bin/sleep", &link);
                let _ = i;
                victims.push(
                    Command::new("ip")
                        .args(["netns", "exec", &h.ns])
                        .arg(&link)
                        .arg("600")
                        .stdin(Stdio::null())
                        .spawn()
                        .unwrap(),
                );
            }
            std::thread::sleep(Duration::from_millis(300));
            times[k].push(drill(
                &fleet,
                true,
                &group(conc),
                &format!("fan{conc}r{rep}"),
            ));
            for v in victims.iter_mut() {
                let _ = v.kill();
                let _ = v.wait();
            }
            victims.clear();
        }
    }
    let (c20, c1) = (median(times[0].clone()), median(times[1].clone()));
    println!(
        "kill on 20 hosts: concurrency 20 {c20:.0} ms, concurrency 1 {c1:.0} ms (median of {n}, fresh engine: connections included): {:.1}x faster",
        c1 / c20
    );

    // Remote partition vs the same on a netns target (the host's namespace).
    let partition = |target: &str| {
        format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: part }}
targets:
  h0: {target}
faults:
  - name: cut h1
    kind: network_partition
    target: h0
    ttl: 60s
    with: {{ to: ["{h1}:22"], action: drop }}
"#,
            h1 = hosts[1]
        )
    };
    let ssh_yaml = partition(&fleet.target_yaml(0));
    let ns_yaml = partition(&format!("{{ netns: {} }}", fleet.hosts[0].ns));
    let mut ssh_t = Vec::new();
    let mut ns_t = Vec::new();
    for rep in 0..n {
        ssh_t.push(drill(&fleet, true, &ssh_yaml, &format!("pssh{rep}")));
        ns_t.push(drill(&fleet, false, &ns_yaml, &format!("pns{rep}")));
    }
    let (s, l) = (median(ssh_t), median(ns_t));
    println!(
        "step start -> partition blocks: ssh target {s:.0} ms, netns target {l:.0} ms (median of {n}): ssh/netns {:.1}x",
        s / l
    );
}
