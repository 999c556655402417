//! The `ssh` target against real sshd hosts in network namespaces
//! ([`crate::common::sshd::Fleet`]): programs and their arguments arrive as is,
//! secrets travel on stdin, unknown host keys are refused, and whole drills (command
//! probe, `command` fault, recovery command) run over SSH, with the ledger naming
//! the ssh target and `recover` reconnecting from it. A cut link leaves the revert
//! to the dead-man on the host, which runs it by itself at the ttl.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firedrill::target::{Cmd, KnownHostsPolicy, Target};

use crate::common::sshd::Fleet;
use crate::common::{assert_exit, wait_until};

/// Standard output then standard error, after checking the exit code.
fn exit_text(out: &std::process::Output, code: i32) -> String {
    let err = assert_exit(out, code);
    format!("{}{err}", String::from_utf8_lossy(&out.stdout))
}

/// A long-running process started inside host `i`'s namespace, named `name` (a
/// symlink to `sleep`, so `/proc/PID/comm` is the name).
struct Svc {
    child: std::process::Child,
    pub name: String,
}

impl Svc {
    fn start(fleet: &Fleet, i: usize, name: &str) -> Svc {
        let link = fleet.path(name);
        std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &fleet.hosts[i].ns])
            .arg(&link)
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let svc = Svc {
            child,
            name: name.to_string(),
        };
        assert!(wait_until(Duration::from_secs(5), || svc.state().is_some()));
        svc
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// State letter of `/proc/PID/stat` once `ip netns exec` has exec'd the service.
    fn state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        let (name, rest) = stat.split_once(") ")?;
        name.ends_with(&self.name).then(|| rest.chars().next())?
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn programs_arguments_and_secrets_reach_the_host_as_is() {
    let Some(fleet) = Fleet::new("ssh_target::programs", 1) else {
        return;
    };
    let t = fleet.target(0);
    let ip = fleet.hosts[0].ip.to_string();
    let (addr, args, secret, sudo_user) = fleet.block_on(move || async move {
        // Runs in the host's network: its own address is there.
        let addr = t
            .run(&Cmd::new("ip").args(["-o", "-4", "addr", "show", "dev", "eth0"]))
            .await
            .unwrap();
        // Every argument arrives as one word, shell characters included.
        let args = t
            .run(&Cmd::new("printf").args(["%s|", "a b", "it's", "$(id)", "*", ""]))
            .await
            .unwrap();
        // A secret travels on stdin ahead of the program's own input.
        let secret = t
            .run(
                &Cmd::new("sh")
                    .args(["-c", r#"printf '%s:' "$TOKEN"; cat"#])
                    .envs([("TOKEN", "s3cret value")])
                    .stdin(b"body".to_vec()),
            )
            .await
            .unwrap();
        // A TCP connection opens from the host itself (its sshd listens on its own
        // loopback, which the engine's namespace does not have).
        let lo: std::net::SocketAddr = "127.0.0.1:22".parse().unwrap();
        t.tcp_reachable(lo, Duration::from_secs(5)).await.unwrap();
        let closed: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let e = t
            .tcp_reachable(closed, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        // Exit codes come back as they are.
        let code = t.run(&Cmd::new("sh").args(["-c", "exit 7"])).await.unwrap();
        assert_eq!(code.code, Some(7));
        // `sudo: true` goes through `sudo -n`, or says clearly that it cannot.
        let mut spec = match &t {
            Target::Ssh(s) => s.clone(),
            _ => unreachable!(),
        };
        spec.sudo = true;
        let sudo = Target::Ssh(spec)
            .run(&Cmd::new("sh").args(["-c", "echo ${SUDO_USER:-none}"]))
            .await;
        (addr, args, secret, sudo)
    });
    let addr = String::from_utf8_lossy(&addr.stdout).into_owned();
    assert!(addr.contains(&format!("{ip}/24")), "{addr}");
    assert_eq!(String::from_utf8_lossy(&args.stdout), "a b|it's|$(id)|*||");
    assert_eq!(String::from_utf8_lossy(&secret.stdout), "s3cret value:body");
    // `.ci/run` installs sudo: the program ran under `sudo -n`.
    let sudo_user = sudo_user.unwrap();
    assert_eq!(String::from_utf8_lossy(&sudo_user.stdout).trim(), "root");
}

#[test]
fn an_unknown_host_key_is_refused_unless_accept_new() {
    let Some(fleet) = Fleet::new("ssh_target::hostkey", 1) else {
        return;
    };
    let empty = fleet.path("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let mut spec = fleet.spec(0);
    spec.known_hosts_file = Some(empty.display().to_string());
    let strict = Target::Ssh(spec.clone());
    spec.known_hosts = KnownHostsPolicy::AcceptNew;
    let accept = Target::Ssh(spec);
    let (strict, accept) = fleet.block_on(move || async move {
        (
            strict.run(&Cmd::new("true")).await.map(|o| o.code),
            accept.run(&Cmd::new("true")).await.map(|o| o.code),
        )
    });
    let e = strict.unwrap_err().to_string();
    assert!(
        e.contains("Host key verification failed") && e.contains("known_hosts: strict"),
        "{e}"
    );
    assert_eq!(accept.unwrap(), Some(0));
    let learned = std::fs::read_to_string(&empty).unwrap();
    assert!(learned.contains("ssh-ed25519"), "{learned}");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A drill on one host: a command precheck there, a `command` fault freezing a
/// service there, a verification seeing it frozen, a recovery command.
fn freeze_scenario(fleet: &Fleet, svc: &Svc, ttl: &str, verify_for: &str) -> String {
    let marker = fleet.path("recovered");
    format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: ssh-freeze }}
targets:
  h0: {target}
prechecks:
  - name: service runs on the host
    probe: {{ command: {{ run: "pgrep -x {name}", target: h0 }} }}
    expect: {{ exit_code: 0 }}
faults:
  - name: freeze the service
    kind: command
    target: h0
    ttl: {ttl}
    with:
      apply: "pkill -STOP -x {name}"
      revert: "pkill -CONT -x {name}"
      check: "test \"$(ps -o stat= -p $(pgrep -x {name}) | cut -c1)\" = T"
verifications:
  - name: the service stays frozen
    critical: true
    for: {verify_for}
    probe: {{ command: {{ run: "ps -o stat= -p $(pgrep -x {name}) | grep -q T", target: h0 }} }}
    expect: {{ exit_code: 0 }}
recovery:
  - name: note recovery on the host
    command: {{ run: "ip -o -4 addr show dev eth0 > {marker}", target: h0 }}
"#,
        target = fleet.target_yaml(0),
        name = svc.name,
        marker = marker.display(),
    )
}

#[test]
fn a_drill_over_ssh_freezes_and_thaws_and_recovers() {
    let Some(fleet) = Fleet::new("ssh_target::drill", 1) else {
        return;
    };
    let svc = Svc::start(&fleet, 0, &format!("fdsvc{}", std::process::id() % 100000));
    let d = fleet.dir.path();
    let scenario = write(d, "s.yaml", &freeze_scenario(&fleet, &svc, "60s", "1s"));
    let out = drill(&fleet, &scenario, "sshdrill").output().unwrap();
    let text = exit_text(&out, 0);
    assert_eq!(svc.state(), Some('S'), "thawed after the drill\n{text}");
    // The recovery command ran on the host (its address, seen from there).
    let rec = std::fs::read_to_string(fleet.path("recovered")).unwrap();
    assert!(rec.contains(&fleet.hosts[0].ip.to_string()), "{rec}");
    // The ledger names the ssh target, so `recover` could reconnect from it.
    let ledger = std::fs::read_to_string(d.join("sshdrill/state/runs/sshdrill/ledger.jsonl"))
        .unwrap_or_default();
    assert!(
        ledger.contains(r#""type":"ssh""#) && ledger.contains(&fleet.hosts[0].ip.to_string()),
        "{ledger}"
    );
    // The dead-man was cancelled: no watcher left on the host.
    let left = fleet.on_host(0, "ls /tmp/firedrill-deadman-0/ | grep sshdrill || true");
    assert_eq!(String::from_utf8_lossy(&left.stdout), "");
}

#[test]
fn a_cut_link_leaves_the_revert_to_the_hosts_deadman() {
    let Some(fleet) = Fleet::new("ssh_target::cut", 1) else {
        return;
    };
    let svc = Svc::start(&fleet, 0, &format!("fdcut{}", std::process::id() % 100000));
    let d = fleet.dir.path();
    let ttl = Duration::from_secs(8);
    let scenario = write(d, "s.yaml", &freeze_scenario(&fleet, &svc, "8s", "6s"));
    let child = drill(&fleet, &scenario, "sshcut")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Frozen: the fault took effect; then the engine loses the host.
    assert!(wait_until(Duration::from_secs(30), || svc.state() == Some('T')));
    let frozen_at = Instant::now();
    fleet.link(0, false);
    // The host thaws by itself within ttl + 2 s of the injection.
    assert!(
        wait_until(ttl + Duration::from_secs(2), || svc.state() == Some('S')),
        "still {:?} {:?} after the freeze",
        svc.state(),
        frozen_at.elapsed()
    );
    let out = child.wait_with_output().unwrap();
    let text = exit_text(&out, 4);
    assert!(
        text.contains("revert pending on ssh:root@10.66.0.10:22"),
        "{text}"
    );
    assert!(text.contains("dead-man fires at"), "{text}");
    // The link is back: recover finds the dead-man did it, and nothing is left.
    fleet.link(0, true);
    let rec = fleet
        .firedrill()
        .args(["recover", "--all", "--state-dir"])
        .arg(d.join("sshcut/state"))
        .output()
        .unwrap();
    let rtext = exit_text(&rec, 0);
    assert!(rtext.contains("dead-man"), "{rtext}");
    assert_eq!(svc.state(), Some('S'));
    let again = fleet
        .firedrill()
        .args(["recover", "--all", "--state-dir"])
        .arg(d.join("sshcut/state"))
        .output()
        .unwrap();
    let again = exit_text(&again, 0);
    assert!(!again.contains("freeze the service"), "{again}");
    // The dead-man's files went with it.
    let left = fleet.on_host(
        0,
        "ls /tmp/firedrill-deadman-0/ 2>/dev/null | grep sshcut || true",
    );
    assert_eq!(String::from_utf8_lossy(&left.stdout), "");
}

/// `firedrill run` of `scenario` in the engine's namespace, with its own state.
fn drill(fleet: &Fleet, scenario: &Path, run_id: &str) -> Command {
    let d = fleet.dir.path().join(run_id);
    let mut c = fleet.firedrill();
    c.args(["run", "--run-id", run_id, "--state-dir"])
        .arg(d.join("state"))
        .arg("--lock-dir")
        .arg(d.join("locks"))
        .arg("--report-dir")
        .arg(d.join("reports"))
        .arg(scenario);
    c
}

#[test]
fn a_host_is_locked_on_the_host_against_another_engine() {
    let Some(fleet) = Fleet::new("ssh_target::lock", 1) else {
        return;
    };
    let svc = Svc::start(&fleet, 0, &format!("fdlck{}", std::process::id() % 100000));
    let scenario = write(
        fleet.dir.path(),
        "s.yaml",
        &freeze_scenario(&fleet, &svc, "60s", "8s"),
    );
    // Engine A holds the host; engine B (other state and lock directories, as on
    // another machine) is refused before it injects anything.
    let a = drill(&fleet, &scenario, "locka")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || svc.state() == Some('T')));
    let b = drill(&fleet, &scenario, "lockb").output().unwrap();
    let text = exit_text(&b, 3);
    assert!(
        text.contains("locked by another drill (run locka since"),
        "{text}"
    );
    assert_eq!(svc.state(), Some('T'), "B did not thaw what A froze");
    exit_text(&a.wait_with_output().unwrap(), 0);
    assert_eq!(svc.state(), Some('S'));
    // A has exited: its lock went with it.
    exit_text(
        &drill(
            &fleet,
            &write(
                fleet.dir.path(),
                "short.yaml",
                &freeze_scenario(&fleet, &svc, "60s", "1s"),
            ),
            "lockc",
        )
        .output()
        .unwrap(),
        0,
    );
}

#[test]
fn network_faults_on_a_remote_host_are_refused_at_validation() {
    let Some(fleet) = Fleet::new("ssh_target::netfault", 0) else {
        return;
    };
    let text = format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: refused }}
targets:
  h: {{ ssh: {{ host: 10.66.0.10, user: root }} }}
prechecks:
  - name: over http
    probe: {{ http: {{ url: "http://10.1.2.3/", target: h }} }}
faults:
  - name: slow
    kind: latency
    target: h
    with: {{ upstream: "10.1.2.3:80", listen: "127.0.0.1:30080", delay: 100ms }}
  - name: limit
    kind: network_rate_limit
    target: h
    with: {{ to: ["10.1.2.3:443"], per_second: 5 }}
  - name: kill
    kind: process_kill
    target: h
    with: {{ cgroup: system.slice/relay.service }}
"#
    );
    let s = write(fleet.dir.path(), "s.yaml", &text);
    let out = fleet.firedrill().arg("validate").arg(&s).output().unwrap();
    let err = exit_text(&out, 2);
    assert!(
        err.contains("prechecks[0].probe.http.target: found remote target"),
        "{err}"
    );
    assert!(
        err.contains("faults[0].target") && err.contains("the proxy runs inside the engine"),
        "{err}"
    );
    // A rate limit and a cgroup are hit on the host itself: accepted.
    assert!(
        !err.contains("faults[1]") && !err.contains("faults[2]"),
        "{err}"
    );
}

#[test]
fn remote_process_kill_freezes_thaws_and_kills_on_the_host() {
    let Some(fleet) = Fleet::new("ssh_target::pkill", 1) else {
        return;
    };
    let id = std::process::id() % 100000;
    let frozen = Svc::start(&fleet, 0, &format!("fdfrz{id}"));
    let killed = Svc::start(&fleet, 0, &format!("fdkil{id}"));
    let text = format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: ssh-pkill }}
targets:
  h0: {target}
faults:
  - name: freeze
    kind: process_kill
    target: h0
    ttl: 60s
    with: {{ name: {f}, signal: STOP }}
  - name: kill
    kind: process_kill
    target: h0
    with: {{ pattern: "^{k} 600$", signal: KILL }}
verifications:
  - name: frozen on the host
    critical: true
    probe: {{ command: {{ run: "ps -o stat= -p $(pgrep -x {f}) | grep -q T", target: h0 }} }}
    expect: {{ exit_code: 0 }}
"#,
        target = fleet.target_yaml(0),
        f = frozen.name,
        k = fleet.path(&killed.name).display(),
    );
    let s = write(fleet.dir.path(), "s.yaml", &text);
    let out = drill(&fleet, &s, "pkill").output().unwrap();
    exit_text(&out, 0);
    assert_eq!(frozen.state(), Some('S'), "thawed by the revert");
    assert!(
        wait_until(Duration::from_secs(5), || killed.state() != Some('S')),
        "killed"
    );
    // The dead-man was cancelled by the revert: nothing left on the host.
    let left = fleet.on_host(
        0,
        "ls /tmp/firedrill-deadman-0/ 2>/dev/null | grep pkill || true",
    );
    assert_eq!(String::from_utf8_lossy(&left.stdout), "");
}

/// A cgroup the test made (the fleet's hosts share this machine's cgroup2 tree); on
/// drop it is thawed, emptied (`cgroup.kill`) and removed.
struct TestCg {
    dir: std::path::PathBuf,
    name: String,
}

impl TestCg {
    fn new(name: &str) -> Option<TestCg> {
        let root = crate::common::cgroup2_mount()?;
        let dir = root.join(name);
        std::fs::create_dir(&dir).ok()?;
        let cg = TestCg {
            dir,
            name: name.to_string(),
        };
        (cg.dir.join("cgroup.freeze").exists() && cg.dir.join("cgroup.kill").exists()).then_some(cg)
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    fn event(&self, key: &str) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .unwrap()
            .lines()
            .any(|l| l == format!("{key} 1"))
    }
}

impl Drop for TestCg {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.freeze"), "0");
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        wait_until(Duration::from_secs(5), || !self.event("populated"));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `cgroup` on an ssh target: resolved on the host, frozen whole (the host's
/// `cgroup.events` says frozen while the drill runs) and thawed by the revert, then
/// killed whole; a cgroup holding the engine's own SSH session on the host is refused
/// before anything is injected.
#[test]
fn a_remote_cgroup_is_frozen_thawed_and_killed_on_the_host() {
    let Some(fleet) = Fleet::new("ssh_target::cgroup", 1) else {
        return;
    };
    let id = std::process::id();
    let Some(cg) = TestCg::new(&format!("fdtest-ssh-{id}")) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI must be able to make a cgroup2 directory with cgroup.freeze and cgroup.kill"
            );
        }
        eprintln!("skipped: no cgroup2 directory with cgroup.freeze and cgroup.kill here");
        return;
    };
    // `ip netns exec` gave the host a fresh /sys without cgroup mounts: mount the
    // cgroup2 tree in the host's mount namespace, where a real host has it.
    let sshd = fleet.hosts[0].sshd_pid().unwrap().to_string();
    let mounted = Command::new("nsenter")
        .args([
            "--target",
            &sshd,
            "--mount",
            "--",
            "mount",
            "-t",
            "cgroup2",
            "cgroup2",
            "/sys/fs/cgroup",
        ])
        .status()
        .unwrap();
    assert!(mounted.success(), "mount cgroup2 on the host");
    let host_dir = format!("/sys/fs/cgroup/{}", cg.name);
    let mut sleepers: Vec<std::process::Child> = (0..2)
        .map(|_| {
            let c = Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            cg.add(c.id());
            c
        })
        .collect();
    let scenario_for = |name: &str, signal: &str, check: &str, ttl: &str, hold: &str| {
        format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: ssh-cgroup-{signal} }}
targets:
  h0: {target}
faults:
  - name: {signal} the cgroup
    kind: process_kill
    target: h0
    ttl: {ttl}
    with: {{ cgroup: "{name}", signal: {signal} }}
verifications:
  - name: seen on the host
    critical: true
    for: {hold}
    interval: 500ms
    probe: {{ command: {{ run: "{check}", target: h0 }} }}
    expect: {{ exit_code: 0 }}
"#,
            target = fleet.target_yaml(0),
        )
    };
    let scenario =
        |name: &str, signal: &str, check: &str| scenario_for(name, signal, check, "60s", "0s");
    let events = format!("{host_dir}/cgroup.events");
    let s = write(
        fleet.dir.path(),
        "freeze.yaml",
        &scenario(&cg.name, "STOP", &format!("grep -qx 'frozen 1' {events}")),
    );
    let out = drill(&fleet, &s, "cgfreeze").output().unwrap();
    let text = exit_text(&out, 0);
    assert!(!cg.event("frozen"), "thawed by the revert: {text}");
    for c in &sleepers {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.id())).unwrap();
        assert!(stat.contains(") S "), "{stat}");
    }

    // The engine SIGKILLed while the cgroup is frozen: the dead-man on the host
    // thaws it at the ttl (3 s).
    let s = write(
        fleet.dir.path(),
        "deadman.yaml",
        &scenario_for(
            &cg.name,
            "STOP",
            &format!("grep -qx 'frozen 1' {events}"),
            "3s",
            "60s",
        ),
    );
    let mut engine = drill(&fleet, &s, "cgdeadman")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || cg.event("frozen")),
        "frozen"
    );
    let frozen_at = Instant::now();
    engine.kill().unwrap();
    engine.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(6), || !cg.event("frozen")),
        "still frozen {:?} after the freeze, the engine killed",
        frozen_at.elapsed()
    );

    // An absolute path inside the host's mount, killed whole.
    let s = write(
        fleet.dir.path(),
        "kill.yaml",
        &scenario(
            &host_dir,
            "KILL",
            &format!("grep -qx 'populated 0' {events}"),
        ),
    );
    let out = drill(&fleet, &s, "cgkill").output().unwrap();
    exit_text(&out, 0);
    for c in sleepers.iter_mut() {
        let status = c.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    // The host's sshd (and so the engine's session) moved into a cgroup: that
    // cgroup is refused, nothing is frozen.
    let Some(own) = TestCg::new(&format!("fdtest-ssh-own-{id}")) else {
        panic!("a second test cgroup");
    };
    own.add(fleet.hosts[0].sshd_pid().unwrap());
    let s = write(
        fleet.dir.path(),
        "own.yaml",
        &scenario(&own.name, "STOP", "true"),
    );
    let out = drill(&fleet, &s, "cgown").output().unwrap();
    let text = exit_text(&out, 3);
    assert!(
        text.contains("holds the engine's own SSH session"),
        "{text}"
    );
    assert!(!own.event("frozen"));
}

/// `network_rate_limit` on a remote host: the limit goes into the host's own
/// nftables, its effect is a burst of connects made by the host (the first ones
/// accepted, then one turned away), the SSH link is never limited, and after the
/// revert the host connects freely again with its ruleset byte-identical.
#[test]
fn a_remote_rate_limit_turns_away_the_hosts_connects_beyond_the_burst() {
    let Some(fleet) = Fleet::new("ssh_target::ratelimit", 2) else {
        return;
    };
    let ruleset =
        || String::from_utf8_lossy(&fleet.on_host(0, "nft list ruleset").stdout).into_owned();
    let before = ruleset();
    let other = fleet.hosts[1].ip;
    let text = format!(
        r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: ssh-rate-limit }}
targets:
  h0: {target}
faults:
  - name: limit h1's ssh
    kind: network_rate_limit
    target: h0
    ttl: 60s
    with: {{ to: ["{other}:22"], per_second: 1, burst: 3, action: reject }}
verifications:
  - name: the engine still reaches h0 over ssh while h0 is limited
    critical: true
    probe: {{ command: {{ run: "true", target: h0 }} }}
    expect: {{ exit_code: 0 }}
"#,
        target = fleet.target_yaml(0),
    );
    let s = write(fleet.dir.path(), "s.yaml", &text);
    let out = drill(&fleet, &s, "ratelimit").output().unwrap();
    exit_text(&out, 0);
    let j: serde_json::Value = {
        let reports = fleet.dir.path().join("ratelimit/reports");
        let run = std::fs::read_dir(&reports)
            .unwrap()
            .flatten()
            .find(|e| e.path().join("journal.json").exists())
            .unwrap()
            .path();
        serde_json::from_slice(&std::fs::read(run.join("journal.json")).unwrap()).unwrap()
    };
    let fault = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "limit h1's ssh")
        .unwrap();
    let effect = &fault["fault"]["effect"];
    assert_eq!(effect["as_declared"], true, "{effect}");
    let measured = effect["measured"].as_str().unwrap();
    // The burst of 3 (and what refilled meanwhile) went through, then a reset.
    let accepted = effect["details"]["probe"]["accepted"].as_u64().unwrap();
    assert!((3..=6).contains(&accepted), "{measured}");
    assert_eq!(
        effect["details"]["probe"]["turned_away"], "refused",
        "{effect}"
    );
    assert!(measured.contains("then one refused"), "{measured}");
    // Afterwards h1 answers h0 again, as often as asked, and h0's ruleset is as
    // before.
    for _ in 0..5 {
        let again = fleet.on_host(
            0,
            &format!("timeout 2 bash -c 'exec 3<>/dev/tcp/{other}/22'"),
        );
        assert!(again.status.success());
    }
    assert_eq!(ruleset(), before);
}

#[test]
fn a_remote_partition_blocks_its_destination_never_the_ssh_link() {
    let Some(fleet) = Fleet::new("ssh_target::partition", 2) else {
        return;
    };
    let ruleset =
        || String::from_utf8_lossy(&fleet.on_host(0, "nft list ruleset").stdout).into_owned();
    let before = ruleset();
    let other = fleet.hosts[1].ip;
    let scenario = |to: &str| {
        format!(
            r#"apiVersion: firedrill/v1
kind: Scenario
metadata: {{ name: ssh-partition }}
targets:
  h0: {target}
faults:
  - name: cut h1
    kind: network_partition
    target: h0
    ttl: 60s
    with: {{ to: ["{to}"], action: drop }}
verifications:
  - name: h1 unreachable from h0, over the still-working ssh link
    critical: true
    for: 2s
    probe: {{ command: {{ run: "! timeout 1 bash -c 'exec 3<>/dev/tcp/{other}/22'", target: h0 }} }}
    expect: {{ exit_code: 0 }}
  - name: the fault's chains let the engine's ssh link through first
    critical: true
    probe: {{ command: {{ run: "nft list table inet firedrill_part | grep -c \"10.66.0.1 .*22 accept comment .firedrill: the engine's ssh link\"", target: h0 }} }}
    expect: {{ stdout_number: {{ regex: '([0-9]+)', ge: 2 }} }}
"#,
            target = fleet.target_yaml(0),
        )
    };
    let s = write(
        fleet.dir.path(),
        "s.yaml",
        &scenario(&format!("{other}:22")),
    );
    let out = drill(&fleet, &s, "part").output().unwrap();
    let text = exit_text(&out, 0);
    assert!(text.contains("no answer"), "{text}");
    // Afterwards h1 answers again, and h0's ruleset is byte-identical.
    let again = fleet.on_host(
        0,
        &format!("timeout 2 bash -c 'exec 3<>/dev/tcp/{other}/22'"),
    );
    assert!(again.status.success());
    assert_eq!(ruleset(), before);
    // The engine's own address, as h0 sees it, is refused at injection: nothing
    // is applied.
    let s = write(fleet.dir.path(), "peer.yaml", &scenario("10.66.0.1"));
    let out = drill(&fleet, &s, "peer").output().unwrap();
    let text = exit_text(&out, 3);
    assert!(
        text.contains("covers 10.66.0.1, the engine's own control path"),
        "{text}"
    );
    assert_eq!(ruleset(), before);
}
