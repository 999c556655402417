//! A two-namespace lab for network fault tests: `client` and `api`, joined by a veth
//! pair, with addresses that exist only inside these namespaces:
//!
//! ```text
//!   client  veth0 10.77.0.1/24, 10.77.1.1/24  <──>  api  veth0 10.77.0.2/24, 10.77.1.2/24
//! ```
//!
//! Servers run as threads of the test process whose sockets were opened inside a
//! namespace (via `setns(2)` on a dedicated thread), so they are real kernel TCP/UDP
//! endpoints without a process start. Names include the test name, the pid and a
//! counter: tests run in parallel and CI reuses the machine. Dropping the [`Lab`]
//! stops the servers, kills the children it started and deletes the namespaces,
//! also when the test panics; and, when the test did not panic, it asserts that
//! `nft list ruleset` of each namespace is exactly what it was when the lab was
//! built (or last [`Lab::snapshot`]ted).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use firedrill::target::Target;

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const API_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// A second address of the api namespace, outside 10.77.0.0/24 (for CIDR tests).
pub const API_IP2: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Why these tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root to create network namespaces".into());
    }
    let ok = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok("ip", &["netns", "list"]) {
        return Some("`ip netns` is not available".into());
    }
    if !ok("nft", &["--version"]) && !ok("/usr/sbin/nft", &["--version"]) {
        return Some("`nft` is not installed".into());
    }
    None
}

/// True when the lab can be built here. Otherwise prints why and returns false (the
/// test returns without running), or, when `CI` is set, panics: a CI run must never
/// pass by skipping the tests that need root.
pub fn available(test: &str) -> bool {
    super::skip::can_run(test, skip_reason())
}

/// What one connect attempt from a namespace saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conn {
    Connected,
    Refused,
    NoAnswer,
    Other,
}

pub struct Lab {
    pub client: String,
    pub api: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    children: Vec<Child>,
    snapshots: BTreeMap<String, String>,
    made: Vec<String>,
}

impl Lab {
    /// Builds the lab, or prints why it cannot and returns `None` (the test then
    /// returns without running); when `CI` is set it panics instead (see [`available`]).
    pub fn new(test: &str) -> Option<Lab> {
        if !available(test) {
            return None;
        }
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect();
        let pid = std::process::id();
        let mut lab = Lab {
            client: format!("fdt-{tag}-{pid}-{n}-c"),
            api: format!("fdt-{tag}-{pid}-{n}-a"),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            children: Vec::new(),
            snapshots: BTreeMap::new(),
            made: Vec::new(),
        };
        // Constructed first: a failure below still deletes what was made.
        for ns in [lab.client.clone(), lab.api.clone()] {
            run(Command::new("ip").args(["netns", "add", &ns]));
            lab.made.push(ns);
        }
        run(Command::new("ip").args([
            "link",
            "add",
            "veth0",
            "netns",
            &lab.client,
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            &lab.api,
        ]));
        for (ns, a, b) in [
            (&lab.client, CLIENT_IP, Ipv4Addr::new(10, 77, 1, 1)),
            (&lab.api, API_IP, API_IP2),
        ] {
            let script = format!(
                "addr add {a}/24 dev veth0\naddr add {b}/24 dev veth0\nlink set veth0 up\nlink set lo up\n"
            );
            run_with_stdin(Command::new("ip").args(["-n", ns, "-batch", "-"]), &script);
        }
        lab.snapshot();
        Some(lab)
    }

    pub fn client_target(&self) -> Target {
        Target::Netns {
            name: self.client.clone(),
        }
    }

    pub fn api_target(&self) -> Target {
        Target::Netns {
            name: self.api.clone(),
        }
    }

    /// Runs `f` on a fresh thread inside namespace `ns`.
    pub fn in_ns<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("namespace exists");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    }

    /// [`Lab::new`] with an HTTP server in the api namespace on `addr` (the service
    /// most tests cut, slow down or redirect).
    pub fn serving_api(test: &str, addr: SocketAddr) -> Option<Lab> {
        let mut lab = Lab::new(test)?;
        lab.serve_http(&lab.api.clone(), addr);
        Some(lab)
    }

    /// A tiny HTTP server on `addr` inside `ns` (answers every request `200 ok`).
    /// Listening when this returns.
    pub fn serve_http(&mut self, ns: &str, addr: SocketAddr) {
        self.serve_http_body(ns, addr, "ok");
    }

    /// [`Lab::serve_http`] answering `body` (tells two servers apart).
    pub fn serve_http_body(&mut self, ns: &str, addr: SocketAddr, body: &'static str) {
        let listener = self.in_ns(ns, move || {
            TcpListener::bind(addr).expect("bind in namespace")
        });
        listener.set_nonblocking(true).unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = [0u8; 1024];
                        if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                            let _ = s.write_all(
                                format!(
                                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            );
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }));
    }

    /// A UDP echo server on `addr` inside `ns`.
    pub fn serve_udp_echo(&mut self, ns: &str, addr: SocketAddr) {
        let sock = self.in_ns(ns, move || {
            UdpSocket::bind(addr).expect("bind udp in namespace")
        });
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        }));
    }

    /// One TCP connect from `ns` to `addr`.
    pub fn connect(&self, ns: &str, addr: SocketAddr, timeout: Duration) -> Conn {
        self.in_ns(ns, move || {
            classify(TcpStream::connect_timeout(&addr, timeout))
        })
    }

    /// An HTTP GET from `ns`; true when the answer is `200`.
    pub fn http_ok(&self, ns: &str, addr: SocketAddr) -> bool {
        self.in_ns(ns, move || {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out.starts_with("HTTP/1.0 200")
        })
    }

    /// One UDP round trip from `ns`: `Connected` when the echo came back.
    pub fn udp_echo(&self, ns: &str, addr: SocketAddr, timeout: Duration) -> Conn {
        self.in_ns(ns, move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect(addr).unwrap();
            s.set_read_timeout(Some(timeout)).unwrap();
            if s.send(b"ping").is_err() {
                return Conn::Other;
            }
            let mut buf = [0u8; 16];
            match s.recv(&mut buf) {
                Ok(_) => Conn::Connected,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Conn::Refused,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    Conn::NoAnswer
                }
                Err(_) => Conn::Other,
            }
        })
    }

    /// Polls a connect from `ns` every ms until `want` is seen or `within` passes;
    /// returns when it was seen.
    pub fn wait_for(
        &self,
        ns: &str,
        addr: SocketAddr,
        want: Conn,
        within: Duration,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.connect(ns, addr, Duration::from_millis(100)) == want {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }

    /// `nft list ruleset` inside `ns`.
    pub fn ruleset(&self, ns: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "list", "ruleset"])
            .output()
            .expect("nft list ruleset");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Tables named `firedrill_*` in `ns`.
    pub fn firedrill_tables(&self, ns: &str) -> Vec<String> {
        self.ruleset(ns)
            .lines()
            .filter_map(|l| l.strip_prefix("table inet "))
            .filter_map(|l| l.strip_suffix(" {"))
            .filter(|t| t.starts_with("firedrill_"))
            .map(String::from)
            .collect()
    }

    /// Records the ruleset of every namespace as the state to come back to.
    pub fn snapshot(&mut self) {
        for ns in [self.client.clone(), self.api.clone()] {
            let r = self.ruleset(&ns);
            self.snapshots.insert(ns, r);
        }
    }

    /// Every namespace's ruleset is byte-identical to the snapshot.
    pub fn assert_rulesets_unchanged(&self) {
        for (ns, before) in &self.snapshots {
            let now = self.ruleset(ns);
            assert_eq!(&now, before, "ruleset of {ns} changed");
        }
    }

    /// A table firedrill does not own, with a set, a base chain that `accept`s the
    /// api's traffic (it cannot override our drop) and a regular chain.
    pub fn add_foreign_table(&self, ns: &str) {
        let script = format!(
            "table inet foreign_guard {{\n  set keep {{ type ipv4_addr; elements = {{ {API_IP}, {API_IP2} }} }}\n  chain out {{ type filter hook output priority 0; policy accept; ip daddr @keep accept; }}\n  chain in {{ type filter hook input priority -400; policy accept; ip saddr @keep accept; }}\n  chain helper {{ tcp dport 9 drop; }}\n}}\n"
        );
        run_with_stdin(
            Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]),
            &script,
        );
    }

    /// Starts a child that the lab kills (with its process group) when dropped.
    pub fn spawn(&mut self, cmd: &mut Command) -> u32 {
        let child = cmd.process_group(0).spawn().expect("spawn child");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Waits for a child started with [`Lab::spawn`], bounded.
    pub fn wait_child(&mut self, pid: u32, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        let child = self.children.iter_mut().find(|c| c.id() == pid)?;
        while start.elapsed() < within {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let mut changed = None;
        if !std::thread::panicking() {
            for (ns, before) in &self.snapshots {
                let now = self.ruleset(ns);
                if &now != before {
                    changed = Some(format!(
                        "ruleset of {ns} changed during the test:\n--- before\n{before}\n--- after\n{now}"
                    ));
                }
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for c in &mut self.children {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.made.drain(..) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        if let Some(msg) = changed {
            panic!("{msg}");
        }
    }
}

fn classify(r: std::io::Result<TcpStream>) -> Conn {
    match r {
        Ok(_) => Conn::Connected,
        Err(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Conn::Refused,
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Conn::NoAnswer,
            _ => Conn::Other,
        },
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_with_stdin(cmd: &mut Command, input: &str) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
