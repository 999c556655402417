//! A fleet of SSH hosts on this machine: one `engine` network namespace, where the
//! engine and its `ssh` clients run, and N `host` namespaces, each with a real
//! `sshd -D -f <temp config>` on port 22, joined to the engine by a bridge:
//!
//! ```text
//!   engine  br0 10.66.0.1/24 ── veth hI ──  hostI  eth0 10.66.0.(10+I)/24, sshd :22
//! ```
//!
//! Host and user keys are generated with `ssh-keygen` in a temp dir, and a
//! `known_hosts` file naming every host's key is written there: the machine's own
//! sshd configuration, keys and `~/.ssh` are never touched. Every address lives
//! inside namespaces the fleet creates; interface names live inside them too, so
//! fleets of parallel tests never collide. Dropping the [`Fleet`] kills the sshds
//! (and every process left in its namespaces) and deletes the namespaces, also when
//! the test panics.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use firedrill::target::{KnownHostsPolicy, SshSpec, Target};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Why these tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if let Some(r) = super::netns::skip_reason() {
        return Some(r);
    }
    for tool in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is not installed (apt-get install openssh-server openssh-client)"
            ));
        }
    }
    None
}

pub struct Fleet {
    /// The namespace the engine runs in.
    pub engine: String,
    pub hosts: Vec<Host>,
    pub dir: tempfile::TempDir,
    made: Vec<String>,
}

pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
    sshd: Option<Child>,
}

impl Host {
    /// The pid of this host's `sshd` (every session on the host is its child).
    pub fn sshd_pid(&self) -> Option<u32> {
        self.sshd.as_ref().map(Child::id)
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("start");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Fleet {
    /// `n` hosts, or None (printed why) when the test cannot run here; panics in CI.
    pub fn new(test: &str, n: usize) -> Option<Fleet> {
        if !super::skip::can_run(test, skip_reason()) {
            return None;
        }
        assert!(n <= 200);
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let base = format!("fdssh-{}-{seq}", std::process::id());
        let dir = tempfile::Builder::new().prefix("fdssh-").tempdir().unwrap();
        let mut fleet = Fleet {
            engine: format!("{base}-e"),
            hosts: Vec::new(),
            dir,
            made: Vec::new(),
        };
        // sshd's privilege-separation directory (what the service unit creates).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let d = fleet.dir.path().to_path_buf();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port 22\nListenAddress 0.0.0.0\nHostKey {hk}\nPidFile none\nAuthorizedKeysFile {ak}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nMaxSessions 100\nMaxStartups 100\nLogLevel ERROR\n",
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
            ),
        )
        .unwrap();

        run(Command::new("ip").args(["netns", "add", &fleet.engine]));
        fleet.made.push(fleet.engine.clone());
        let e = fleet.engine.clone();
        let batch = "link add br0 type bridge\naddr add 10.66.0.1/24 dev br0\nlink set br0 up\nlink set lo up\n";
        ip_batch(&e, batch);
        let mut known = String::new();
        for i in 0..n {
            let ns = format!("{base}-h{i}");
            let ip = Ipv4Addr::new(10, 66, 0, 10 + i as u8);
            run(Command::new("ip").args(["netns", "add", &ns]));
            fleet.made.push(ns.clone());
            run(Command::new("ip").args([
                "-n",
                &e,
                "link",
                "add",
                &format!("h{i}"),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ]));
            ip_batch(&e, &format!("link set h{i} master br0\nlink set h{i} up\n"));
            ip_batch(
                &ns,
                &format!("addr add {ip}/24 dev eth0\nlink set eth0 up\nlink set lo up\n"),
            );
            known.push_str(&format!("{ip} {} {}\n", host_pub[0], host_pub[1]));
            fleet.hosts.push(Host { ns, ip, sshd: None });
        }
        std::fs::write(d.join("known_hosts"), known).unwrap();
        for h in &mut fleet.hosts {
            h.sshd = Some(
                Command::new("ip")
                    .args(["netns", "exec", &h.ns, "/usr/sbin/sshd", "-D", "-f"])
                    .arg(d.join("sshd_config"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    // Its log (`-E`): readiness probes make it complain on stderr.
                    .arg("-E")
                    .arg(d.join(format!("sshd-{}.log", h.ip)))
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("sshd"),
            );
        }
        for h in &fleet.hosts {
            let ip = h.ip;
            let ok = super::wait_until(Duration::from_secs(20), || {
                fleet.in_engine(move || {
                    std::net::TcpStream::connect_timeout(&(ip, 22).into(), Duration::from_secs(1))
                        .is_ok()
                })
            });
            assert!(ok, "sshd on {ip} did not start listening");
        }
        Some(fleet)
    }

    /// The scenario/ledger form of host `i`: root, the fleet's key, strict host keys
    /// against the fleet's known_hosts.
    pub fn spec(&self, i: usize) -> SshSpec {
        let d = self.dir.path();
        SshSpec {
            host: self.hosts[i].ip.to_string(),
            port: 22,
            user: Some("root".into()),
            identity_file: Some(d.join("user_key").display().to_string()),
            sudo: false,
            known_hosts: KnownHostsPolicy::Strict,
            known_hosts_file: Some(d.join("known_hosts").display().to_string()),
            connect_timeout: firedrill::duration::HumanDuration(Duration::from_secs(5)),
            jump: None,
        }
    }

    pub fn target(&self, i: usize) -> Target {
        Target::Ssh(self.spec(i))
    }

    /// The `targets:` entry of host `i` in a scenario (YAML flow mapping).
    pub fn target_yaml(&self, i: usize) -> String {
        let d = self.dir.path();
        format!(
            "{{ ssh: {{ host: {}, user: root, identity_file: {}, known_hosts_file: {}, connect_timeout: 5s }} }}",
            self.hosts[i].ip,
            d.join("user_key").display(),
            d.join("known_hosts").display()
        )
    }

    /// Runs `f` on a fresh thread inside the engine's namespace: every process it
    /// starts (the `ssh` clients) is there too.
    pub fn in_engine<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/run/netns/{}", self.engine)).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("engine thread")
    }

    /// Runs the async `f` to its end on a runtime inside the engine's namespace.
    pub fn block_on<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        self.in_engine(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
    }

    /// `firedrill ARGS` run inside the engine's namespace (`ip netns exec`).
    pub fn firedrill(&self) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.engine,
            env!("CARGO_BIN_EXE_firedrill"),
        ]);
        c
    }

    /// Runs `sh -c script` on host `i` directly (not over ssh): the test's own view.
    pub fn on_host(&self, i: usize, script: &str) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.hosts[i].ns, "sh", "-c", script])
            .output()
            .unwrap()
    }

    /// Cuts (or restores) the engine's traffic to host `i` from outside the host:
    /// its bridge port goes down.
    pub fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        run(Command::new("ip").args(["-n", &self.engine, "link", "set", &format!("h{i}"), state]));
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "firedrill-test",
            "-f",
        ])
        .arg(path));
}

fn ip_batch(ns: &str, script: &str) {
    use std::io::Write;
    let mut c = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ip -n {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pids of every process whose network namespace is `ns`.
fn pids_in(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut c) = h.sshd.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Sessions, watchers and test processes the hosts still hold.
        for ns in &self.made {
            for pid in pids_in(ns) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
