//! The WeCom story end to end: the simulator speaks WeCom, the relay is drilled with
//! the shipped `scenarios/wecom/` drills, and the delivery probe's counts are checked
//! independently against what the simulators' admin endpoints say they accepted.
//!
//! Everything is a real process on 127.0.0.1 (ports in 32000-32999, this area's
//! range), in a temp dir; the network-cut drills need root (nftables).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::common::{self, skip};

const SECRET: &str = "test-secret-wecom";
const HOOK_KEY: &str = "test-hook-wecom";

/// Port blocks of 3 (relay, primary, standby), one per stack, never reused in a run;
/// kept below 32768, where the kernel's ephemeral ports (and `free_port`) start.
fn port_base() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 10;
    32000 + (std::process::id() % 20) as u16 * 30 + n * 3
}

/// One HTTP/1.1 exchange (`Connection: close`): status and JSON body.
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn sim(port: u16, name: &str, dir: &Path, extra: &[&str]) -> Child {
    let c = Command::new(env!("CARGO_BIN_EXE_firedrill-wecom-sim"))
        .args(["--port", &port.to_string(), "--name", name])
        .arg("--pidfile")
        .arg(dir.join(format!("{name}.pid")))
        .args(extra)
        .env("WECOM_SIM_CORPSECRET", SECRET)
        .env("WECOM_SIM_WEBHOOK_KEY", HOOK_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the simulator");
    assert!(
        common::wait_until(Duration::from_secs(10), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "simulator {name} did not listen on {port}"
    );
    c
}

/// Two simulators and the relay, stopped (and thawed first) on drop.
struct Stack {
    dir: PathBuf,
    relay: u16,
    primary: u16,
    standby: u16,
    children: Vec<Child>,
}

impl Stack {
    fn start(dir: &Path, relay_flags: &[&str]) -> Stack {
        let base = port_base();
        let (relay, primary, standby) = (base, base + 1, base + 2);
        let mut children = vec![
            sim(primary, "primary", dir, &[]),
            sim(standby, "standby", dir, &[]),
        ];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_firedrill-wecom-relay"));
        cmd.args(["--port", &relay.to_string()])
            .arg("--channel")
            .arg(format!("primary=app:http://127.0.0.1:{primary}"))
            .arg("--channel")
            .arg(format!("standby=app:http://127.0.0.1:{standby}"))
            .args(relay_flags)
            .env("WECOM_CORPID", "ww-test")
            .env("WECOM_CORPSECRET", SECRET)
            .env("WECOM_WEBHOOK_KEY", HOOK_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !relay_flags.contains(&"--no-spool") {
            cmd.arg("--spool").arg(dir.join("relay.spool"));
        }
        children.push(cmd.spawn().expect("start the relay"));
        assert!(
            common::wait_until(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                relay
            ))
            .is_ok()),
            "relay did not listen on {relay}"
        );
        Stack {
            dir: dir.to_path_buf(),
            relay,
            primary,
            standby,
            children,
        }
    }

    /// `firedrill run scenarios/wecom/NAME.yaml` against this stack.
    fn drill(
        &self,
        name: &str,
        level: &str,
    ) -> (std::process::Output, firedrill::model::RunRecord, PathBuf) {
        let scenario =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scenarios/wecom/{name}.yaml"));
        let reports = self
            .dir
            .join(format!("reports-{name}-{level}-{}", self.relay));
        let out = common::run_cmd(&scenario, &self.dir.join("state"), &reports)
            .args(["--level", level])
            .args(["--var", &format!("relay_port={}", self.relay)])
            .args(["--var", &format!("primary_port={}", self.primary)])
            .args(["--var", &format!("standby_port={}", self.standby)])
            .arg("--var")
            .arg(format!(
                "primary_pidfile={}",
                self.dir.join("primary.pid").display()
            ))
            .arg("--var")
            .arg(format!(
                "standby_pidfile={}",
                self.dir.join("standby.pid").display()
            ))
            .output()
            .expect("run firedrill");
        let report = common::report_dir(&reports);
        let journal = common::journal(&reports);
        (out, journal, report)
    }

    /// Copies of each drill message the simulators accepted, by content: what the
    /// delivery probe should have counted, read without it.
    fn accepted(&self) -> BTreeMap<String, u64> {
        let mut copies = BTreeMap::new();
        for port in [self.primary, self.standby] {
            let (status, v) = http(port, "GET", "/admin/messages", "");
            assert_eq!(status, 200);
            for m in v["messages"].as_array().unwrap() {
                let c = m["content"].as_str().unwrap();
                if c.starts_with("firedrill drill message ") {
                    *copies.entry(c.to_string()).or_default() += 1;
                }
            }
        }
        copies
    }

    /// What the relay says it received from the delivery probe: `own_sends` is what
    /// the scenario's checks sent of their own (the outage and network-cut
    /// verifications send one message).
    fn relay_received(&self, own_sends: f64) -> f64 {
        let (_, v) = http(self.relay, "GET", "/stats", "");
        v["received"].as_f64().unwrap() - own_sends
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for c in &mut self.children {
            // A frozen simulator must be thawed to die of SIGTERM.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        for c in &mut self.children {
            if common::wait_exit(c, Duration::from_secs(5)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn delivery_step(r: &firedrill::model::RunRecord) -> &firedrill::model::StepRecord {
    r.steps
        .iter()
        .find(|s| s.name == "messages through the relay")
        .expect("the delivery entry's step")
}

/// The probe's figures agree with the simulators' own lists and the relay's count.
fn assert_counts_match(stack: &Stack, m: &BTreeMap<String, f64>, own_sends: f64) {
    let accepted = stack.accepted();
    let distinct = accepted.len() as f64;
    let extra: u64 = accepted.values().map(|n| n - 1).sum();
    assert_eq!(m["delivered"], distinct, "{m:?}");
    assert_eq!(m["duplicated"], extra as f64, "{m:?}");
    assert_eq!(m["acknowledged"], stack.relay_received(own_sends), "{m:?}");
    assert_eq!(m["lost"], m["acknowledged"] - distinct, "{m:?}");
}

fn rules(r: &firedrill::model::RunRecord) -> Vec<String> {
    r.improvements.iter().map(|i| i.rule.clone()).collect()
}

#[test]
fn the_simulator_speaks_wecom() {
    let dir = tempfile::tempdir().unwrap();
    let port = port_base();
    let _sim = ChildGuard(sim(
        port,
        "api",
        dir.path(),
        &["--quota", "3", "--quota-window-ms", "60000"],
    ));
    let (_, v) = http(
        port,
        "GET",
        "/cgi-bin/gettoken?corpid=ww1&corpsecret=wrong",
        "",
    );
    assert_eq!(v["errcode"], 40001, "{v}");
    let (_, v) = http(
        port,
        "GET",
        &format!("/cgi-bin/gettoken?corpid=ww1&corpsecret={SECRET}"),
        "",
    );
    assert_eq!(v["errcode"], 0, "{v}");
    assert_eq!(v["expires_in"], 7200, "{v}");
    let tok = v["access_token"].as_str().unwrap().to_string();
    let send = |token: &str, body: &str| {
        http(
            port,
            "POST",
            &format!("/cgi-bin/message/send?access_token={token}"),
            body,
        )
        .1
    };
    assert_eq!(
        send("nope", r#"{"msgtype":"text","text":{"content":"a"}}"#)["errcode"],
        40014
    );
    let v = send(
        &tok,
        r#"{"touser":"@all","msgtype":"text","text":{"content":"one"},"enable_duplicate_check":1}"#,
    );
    assert_eq!(v["errcode"], 0, "{v}");
    assert!(v["msgid"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    // WeCom's duplicate check: the same content again is answered but not sent again.
    let v = send(
        &tok,
        r#"{"touser":"@all","msgtype":"text","text":{"content":"one"},"enable_duplicate_check":1}"#,
    );
    assert_eq!(v["errcode"], 0, "{v}");
    let v = send(
        &tok,
        r#"{"msgtype":"markdown","markdown":{"content":"**two**"}}"#,
    );
    assert_eq!(v["errcode"], 0, "{v}");
    // The quota (3 per window) is spent: 45009.
    assert_eq!(
        send(&tok, r#"{"msgtype":"text","text":{"content":"four"}}"#)["errcode"],
        45009
    );
    let hook = http(
        port,
        "POST",
        &format!("/cgi-bin/webhook/send?key={HOOK_KEY}"),
        r#"{"msgtype":"text","text":{"content":"robot"}}"#,
    )
    .1;
    assert_eq!(hook["errcode"], 0, "{hook}");
    let bad = http(
        port,
        "POST",
        "/cgi-bin/webhook/send?key=x",
        r#"{"msgtype":"text","text":{"content":"r"}}"#,
    )
    .1;
    assert_eq!(bad["errcode"], 93000, "{bad}");
    let (_, list) = http(port, "GET", "/admin/messages", "");
    let contents: Vec<&str> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, vec!["one", "**two**", "robot"]);
    assert!(list["messages"][0]["received_ms"].as_f64().unwrap() > 1.7e12);
    // Admin controls: expired tokens, busy, caller IP not allowed.
    http(port, "POST", "/admin/expire_tokens", "");
    assert_eq!(
        send(&tok, r#"{"msgtype":"text","text":{"content":"x"}}"#)["errcode"],
        42001
    );
    http(port, "POST", "/admin/mode", r#"{"mode":"busy"}"#);
    assert_eq!(
        send(&tok, r#"{"msgtype":"text","text":{"content":"x"}}"#)["errcode"],
        -1
    );
    http(port, "POST", "/admin/mode", r#"{"mode":"ip_denied"}"#);
    assert_eq!(
        send(&tok, r#"{"msgtype":"text","text":{"content":"x"}}"#)["errcode"],
        60020
    );
}

struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The relay as shipped re-sends a timed-out message and fails over without the
/// duplicate check: the outage drill finds the duplicates; with `--safe-failover`
/// they are gone. Both times the probe's counts match the simulators'.
#[test]
fn outage_drill_finds_duplicates_and_the_fix_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let stack = Stack::start(&dir.path().join("a").tap_mkdir(), &[]);
        let (out, r, report) = stack.drill("outage", "smoke");
        common::assert_exit(&out, 1);
        let m = &delivery_step(&r).metrics;
        assert!(m["duplicated"] > 0.0, "{m:?}");
        assert_eq!(m["lost"], 0.0, "{m:?}");
        assert_counts_match(&stack, m, 1.0);
        assert!(
            rules(&r).contains(&"message-duplicates".to_string()),
            "{:?}",
            rules(&r)
        );
        let md = std::fs::read_to_string(report.join("report.md")).unwrap();
        assert!(md.contains("duplicated"), "{md}");
        assert!(md.contains("message-duplicates"), "{md}");
        m["duplicated"]
    };
    let stack = Stack::start(&dir.path().join("b").tap_mkdir(), &["--safe-failover"]);
    let (out, r, _) = stack.drill("outage", "smoke");
    common::assert_exit(&out, 0);
    let m = &delivery_step(&r).metrics;
    assert_eq!(m["duplicated"], 0.0, "{m:?} (before the fix: {before})");
    assert_eq!(m["lost"], 0.0, "{m:?}");
    assert!(m["acknowledged"] > 100.0, "{m:?}");
    assert_counts_match(&stack, m, 1.0);
    assert_eq!(r.objectives.rpo_ms, Some(0.0));
    assert!(
        !rules(&r).iter().any(|x| x.starts_with("message-")),
        "{:?}",
        rules(&r)
    );
}

/// The relay without its spool acknowledges messages and drops them when every
/// channel is cut: the drill exits 1 with the loss and a measured RPO above 0 in
/// the journal and the report, and an improvement naming it. With the spool the same
/// drill loses nothing.
#[test]
fn network_cut_catches_the_relay_without_spool_losing_messages() {
    if !skip::can_run_as_root(
        "network_cut_catches_the_relay_without_spool_losing_messages",
        "for nftables",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let stack = Stack::start(&dir.path().join("a").tap_mkdir(), &["--no-spool"]);
        let (out, r, report) = stack.drill("network-cut", "full");
        common::assert_exit(&out, 1);
        let m = &delivery_step(&r).metrics;
        assert!(m["lost"] > 0.0, "{m:?}");
        assert!(m["loss_rate"] > 0.0, "{m:?}");
        assert!(m["rpo_ms"] > 0.0, "{m:?}");
        assert_counts_match(&stack, m, 1.0);
        assert_eq!(r.objectives.rpo_ms, Some(m["rpo_ms"]));
        assert!(
            rules(&r).contains(&"message-loss".to_string()),
            "{:?}",
            rules(&r)
        );
        let md = std::fs::read_to_string(report.join("report.md")).unwrap();
        assert!(md.contains("message-loss"), "{md}");
        assert!(md.contains("### Message delivery"), "{md}");
        assert!(md.contains(&format!("{} sent", m["sent"])), "{md}");
        assert!(md.contains("EXCEEDED"), "the RPO row: {md}");
        let html = std::fs::read_to_string(report.join("report.html")).unwrap();
        assert!(html.contains("acknowledged message(s) lost"), "html report");
        assert!(html.contains("<h2>Message delivery</h2>"), "html report");
    }
    let stack = Stack::start(&dir.path().join("b").tap_mkdir(), &[]);
    let (out, r, _) = stack.drill("network-cut", "full");
    common::assert_exit(&out, 0);
    let m = &delivery_step(&r).metrics;
    assert_eq!(m["lost"], 0.0, "{m:?}");
    assert_eq!(m["duplicated"], 0.0, "{m:?}");
    assert_counts_match(&stack, m, 1.0);
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// The token-expiry and quota drills at `full` pass against the relay as shipped:
/// it refreshes its token on 42001, backs off on 45009 and fails over, and the
/// probe's counts match the simulators'.
#[test]
fn token_expiry_and_quota_drills_pass_with_the_shipped_relay() {
    if !skip::can_run_as_root(
        "token_expiry_and_quota_drills_pass_with_the_shipped_relay",
        "for nftables",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, counter) in [("token-expiry", "token_refreshes"), ("quota", "backoffs")] {
        let stack = Stack::start(&dir.path().join(name).tap_mkdir(), &[]);
        let (out, r, _) = stack.drill(name, "full");
        common::assert_exit(&out, 0);
        let m = &delivery_step(&r).metrics;
        assert_eq!(m["lost"], 0.0, "{name}: {m:?}");
        assert_eq!(m["duplicated"], 0.0, "{name}: {m:?}");
        assert_counts_match(&stack, m, 0.0);
        let (_, stats) = http(stack.relay, "GET", "/stats", "");
        assert!(stats[counter].as_f64().unwrap() > 1.0, "{name}: {stats}");
        assert!(
            stats["via"]["standby"].as_f64().unwrap_or(0.0) > 0.0,
            "{name}: failed over: {stats}"
        );
    }
}

/// The staged switchover: at `standard` it goes through (all four stages, nothing
/// lost or duplicated, counts matching the simulators); at `full` the private
/// deployment hangs mid-way, a guard rolls it back, and the fault's revert says at
/// which stage the switchover stood.
#[test]
fn staged_switchover_goes_through_and_is_rolled_back_by_a_guard() {
    if !skip::can_run_as_root(
        "staged_switchover_goes_through_and_is_rolled_back_by_a_guard",
        "for nftables",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let stack = Stack::start(&dir.path().join("a").tap_mkdir(), &[]);
        let (out, r, report) = stack.drill("switchover", "standard");
        common::assert_exit(&out, 0);
        let m = &delivery_step(&r).metrics;
        assert_eq!(m["lost"], 0.0, "{m:?}");
        assert_eq!(m["duplicated"], 0.0, "{m:?}");
        assert_counts_match(&stack, m, 0.0);
        // The figures per stage (20 messages/s, 2 s per stage): every stage sent,
        // none lost, and the stages together never count more than was sent.
        for k in 1..=4 {
            assert!(m[&format!("stage{k}.sent")] >= 10.0, "stage {k}: {m:?}");
            assert_eq!(m[&format!("stage{k}.lost")], 0.0, "stage {k}: {m:?}");
        }
        let staged: f64 = (1..=4).map(|k| m[&format!("stage{k}.sent")]).sum();
        assert!(staged <= m["sent"], "{staged} > {}", m["sent"]);
        let detail = &delivery_step(&r).detail;
        assert!(detail.contains("stage 4 of 4 (100%) for"), "{detail}");
        // Both reports carry a table of the stages.
        let md = std::fs::read_to_string(report.join("report.md")).unwrap();
        assert!(
            md.contains("| Stage | Lasted | Sent | Lost | Duplicated | p95 |"),
            "{md}"
        );
        for k in 1..=4 {
            assert!(
                md.contains(&format!(": stage {k} of 4 (")),
                "stage {k}: {md}"
            );
        }
        let html = std::fs::read_to_string(report.join("report.html")).unwrap();
        assert!(
            html.contains("<th>Stage</th><th>Lasted</th>"),
            "no stage table in the HTML"
        );
        let (_, standby) = http(stack.standby, "GET", "/admin/stats", "");
        assert!(standby["accepted"].as_u64().unwrap() > 10, "{standby}");
        let sw = &r
            .steps
            .iter()
            .find(|s| s.name.starts_with("staged switchover"))
            .unwrap();
        let revert = sw.fault.as_ref().unwrap().revert.as_ref().unwrap();
        let reverted = &revert.result.as_ref().unwrap().measured;
        assert!(
            reverted.contains("switchover at stage 4 of 4 (100%)"),
            "{reverted}"
        );
    }
    let stack = Stack::start(&dir.path().join("b").tap_mkdir(), &[]);
    let (out, r, report) = stack.drill("switchover", "full");
    common::assert_exit(&out, 1);
    assert!(
        r.guards.iter().any(|g| g.breached),
        "a guard rolled it back"
    );
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("switchover at stage"), "{md}");
    // The rollback cut the switchover short: the stages that ran are in the
    // delivery figures, the ones after the rollback are not.
    assert!(md.contains("Per switchover stage"), "{md}");
    let m = &delivery_step(&r).metrics;
    assert!(m["stage1.sent"] > 0.0, "{m:?}");
    let ran = (1..=4)
        .filter(|k| m.contains_key(&format!("stage{k}.sent")))
        .count();
    let sw = r
        .steps
        .iter()
        .find(|s| s.name.starts_with("staged switchover"))
        .unwrap();
    let reverted = &sw
        .fault
        .as_ref()
        .unwrap()
        .revert
        .as_ref()
        .unwrap()
        .result
        .as_ref()
        .unwrap()
        .measured;
    // The proxy names its stage when it is stopped, a moment after the revert began
    // (where the windows end): one stage later at most, if a boundary fell between.
    let at = (1..=4)
        .find(|k| reverted.contains(&format!("switchover at stage {k} of 4")))
        .unwrap_or_else(|| panic!("{reverted}"));
    assert!(
        at == ran || at == ran + 1,
        "{ran} stage(s) in the figures; {reverted}"
    );
}

/// `scripts/wecom-drill.sh`, the one command a new user runs: it starts both
/// simulators and the relay, runs the outage drill (which finds the shipped
/// relay's duplicates: exit 1), writes the reports and stops everything it started.
#[test]
fn the_one_command_outage_drill_runs_and_cleans_up() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_firedrill")).parent().unwrap();
    let base = port_base();
    let reports = dir.path().join("reports");
    let mut child = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/wecom-drill.sh"
        ))
        .args(["outage", "--level", "smoke", "--report-dir"])
        .arg(&reports)
        .env("PORT_BASE", base.to_string())
        .env("FIREDRILL_BIN_DIR", bin_dir)
        .env("FIREDRILL_STATE_DIR", dir.path().join("state"))
        .env("FIREDRILL_LOCK_DIR", common::own_lock_dir())
        .env_remove("RELAY_FLAGS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let code = common::wait_exit(&mut child, Duration::from_secs(180));
    if code.is_none() {
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    }
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("message-duplicates"), "{out}");
    let r = common::journal(&reports);
    assert!(delivery_step(&r).metrics["duplicated"] > 0.0);
    // Nothing it started is left: every port of the stack is free again.
    for p in [base, base + 1, base + 2] {
        assert!(
            common::wait_until(Duration::from_secs(5), || TcpStream::connect((
                "127.0.0.1",
                p
            ))
            .is_err()),
            "port {p} still answers after the script ended"
        );
    }
}

/// A `delivery:` entry with `target:` sends and reads its sinks from inside that
/// target: a simulator listening only on a namespace's own 127.0.0.1 gets every
/// message; the same entry from this host reaches nothing and fails.
#[test]
fn delivery_from_a_netns_target_sends_and_counts_from_inside_it() {
    let Some(lab) = common::netns::Lab::new("delivery_netns") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = port_base();
    let pidfile = dir.path().join("nssim.pid");
    let sim = Command::new("ip")
        .args(["netns", "exec", &lab.client])
        .arg(env!("CARGO_BIN_EXE_firedrill-wecom-sim"))
        .args(["--port", &port.to_string(), "--name", "ns"])
        .arg("--pidfile")
        .arg(&pidfile)
        .env("WECOM_SIM_WEBHOOK_KEY", HOOK_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Stopped even when an assertion below fails (the namespace goes with the lab,
    // the process would not).
    let _sim = NsSim(sim, pidfile.clone());
    assert!(common::wait_until(Duration::from_secs(10), || pidfile.exists()));
    let marker = common::Marker::spawn("wecomdelivns");
    let scenario = |target: &str| {
        format!(
            r#"
apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: delivery-from-a-namespace }}
objectives: {{ max_duration: 1m, rpo: 0s }}
targets:
  client: {{ netns: {ns} }}
faults:
  - name: freeze marker
    kind: process_kill
    with: {{ pattern: "^{tag} ", signal: STOP }}
    ramp_up: 1s
    ttl: 1m
delivery:
  - name: messages from the namespace
    {target}
    send:
      url: "http://127.0.0.1:{port}/cgi-bin/webhook/send?key={HOOK_KEY}"
      body: '{{"msgtype": "text", "text": {{"content": "ns ${{id}}"}}}}'
      rate: 20
      timeout: 1s
      success: {{ json: {{ path: $.errcode, eq: 0 }} }}
    sinks:
      - url: "http://127.0.0.1:{port}/admin/messages"
        items: $.messages[*]
        id: $.content
        received_ms: $.received_ms
    before: 1s
    after: 1s
    settle: 3s
    expect: {{ metrics: {{ loss_rate: {{ eq: 0 }}, duplicate_rate: {{ eq: 0 }} }} }}
"#,
            ns = lab.client,
            tag = marker.tag
        )
    };
    let run = |name: &str, target: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let scen = common::write_scenario(&d, &scenario(target));
        let out = common::run_cmd(&scen, &d.join("state"), &d.join("reports"))
            .output()
            .unwrap();
        (out, common::journal(&d.join("reports")))
    };
    let (out, r) = run("inside", "target: client");
    common::assert_exit(&out, 0);
    let m = &delivery_step_named(&r, "messages from the namespace").metrics;
    assert!(m["sent"] >= 20.0, "{m:?}");
    assert_eq!(m["delivered"], m["sent"], "{m:?}");
    assert_eq!(r.objectives.rpo_ms, Some(0.0));
    let (_, list) = {
        // The simulator's own count, read from inside the namespace.
        let o = Command::new("ip")
            .args(["netns", "exec", &lab.client, "bash", "-c"])
            .arg(format!(
                "exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET /admin/stats HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\n\\r\\n' >&3; cat <&3"
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        (
            (),
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    assert_eq!(list["accepted"].as_f64(), Some(m["delivered"]), "{list}");
    // From this host the same entry reaches nothing: no acknowledgement, a failure.
    let (out, r) = run("outside", "");
    common::assert_exit(&out, 1);
    let s = delivery_step_named(&r, "messages from the namespace");
    assert_eq!(s.metrics.get("acknowledged"), Some(&0.0), "{}", s.detail);
    assert!(
        s.detail.contains("the sinks could not be read"),
        "{}",
        s.detail
    );
    assert_eq!(
        r.objectives.rpo_ms, None,
        "nothing acknowledged: RPO not measured"
    );
}

/// A simulator started with `ip netns exec` (which execs it), stopped on drop.
struct NsSim(Child, PathBuf);
impl Drop for NsSim {
    fn drop(&mut self) {
        let pid: i32 = std::fs::read_to_string(&self.1)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(self.0.id() as i32);
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if common::wait_exit(&mut self.0, Duration::from_secs(5)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn delivery_step_named<'a>(
    r: &'a firedrill::model::RunRecord,
    name: &str,
) -> &'a firedrill::model::StepRecord {
    r.steps
        .iter()
        .find(|s| s.name == name)
        .expect("the delivery step")
}
