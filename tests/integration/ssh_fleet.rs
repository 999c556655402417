//! A fleet of 20 namespaced sshd hosts drilled as one `ssh_group` target: each
//! selection mode picks the right number of hosts (a seeded random pick records
//! its seed and hosts in the journal), and the fan-out never works on more hosts at
//! once than the group's `concurrency`.

use std::path::Path;

use crate::common::assert_exit;
use crate::common::sshd::Fleet;

/// `(start ns, end ns, host)` of every `apply` the hosts ran.
fn spans(log: &Path) -> Vec<(u128, u128, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
                w.next()?.to_string(),
            ))
        })
        .collect()
}

/// The most applies in progress at one instant.
fn max_overlap(spans: &[(u128, u128, String)]) -> usize {
    spans
        .iter()
        .map(|(s, _, _)| spans.iter().filter(|(a, b, _)| a <= s && s < b).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_group_selects_the_right_hosts_and_respects_its_concurrency() {
    let Some(fleet) = Fleet::new("ssh_fleet::group", 20) else {
        return;
    };
    let d = fleet.dir.path();
    let hosts: Vec<String> = fleet.hosts.iter().map(|h| h.ip.to_string()).collect();
    for (n, (select, want)) in [
        ("all", 20),
        ("{ count: 5 }", 5),
        ("{ percent: 33 }", 7),
        ("{ random: { count: 3, seed: 42 } }", 3),
    ]
    .into_iter()
    .enumerate()
    {
        let log = d.join(format!("applies-{n}.log"));
        let scenario = format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: fleet }}
targets:
  fleet:
    ssh_group:
      hosts: {hosts:?}
      select: {select}
      concurrency: 4
      user: root
      identity_file: {key}
      known_hosts_file: {known}
      connect_timeout: 5s
faults:
  - name: touch every chosen host
    kind: command
    target: fleet
    ttl: 60s
    with:
      apply: "s=$(date +%s%N); sleep 0.3; e=$(date +%s%N); echo \"$s $e $(ip -4 -o addr show dev eth0 | awk '{{print $4}}')\" >> {log}"
      revert: "true"
verifications:
  - name: every chosen host answers
    probe: {{ command: {{ run: "true", target: fleet }} }}
    expect: {{ exit_code: 0 }}
"#,
            key = d.join("user_key").display(),
            known = d.join("known_hosts").display(),
            log = log.display(),
        );
        let s = d.join(format!("s{n}.yaml"));
        std::fs::write(&s, scenario).unwrap();
        let run_id = format!("fleet{n}");
        let out = fleet
            .firedrill()
            .args(["run", "--run-id", &run_id, "--state-dir"])
            .arg(d.join(&run_id).join("state"))
            .arg("--lock-dir")
            .arg(d.join(&run_id).join("locks"))
            .arg("--report-dir")
            .arg(d.join(&run_id).join("reports"))
            .arg(&s)
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let spans = spans(&log);
        let mut seen: Vec<&str> = spans.iter().map(|(_, _, h)| h.as_str()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(spans.len(), want, "{select}: {spans:?}");
        assert_eq!(seen.len(), want, "{select}: one apply per chosen host");
        let peak = max_overlap(&spans);
        assert!(peak <= 4, "{select}: {peak} applies at once, limit 4");
        if want >= 8 {
            assert!(peak >= 2, "{select}: never more than one at once");
        }
        // The journal names the selection, and a random pick's seed.
        let journal = std::fs::read_dir(d.join(&run_id).join("reports"))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("journal.json")).ok())
            .collect::<String>();
        assert!(journal.contains(&format!("{want} of 20")), "{select}");
        if select.contains("random") {
            assert!(journal.contains("random count 3 seed 42"), "{journal}");
        }
    }
}
