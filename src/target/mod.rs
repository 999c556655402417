//! Targets: where a fault acts and where a probe observes from.
//!
//! `local` is this host and always exists. `netns` is a Linux network namespace on
//! this host (`ip netns`), which is how the tests and the lab build several "hosts"
//! on one machine. Faults and probes reach a target only through the methods of
//! [`Target`]: run a program ([`Target::run`]), start a helper ([`Target::spawn`]),
//! connect TCP from there ([`Target::connect_tcp`]), run socket code in its network
//! ([`Target::in_network`]), resolve a name as it would ([`Target::resolve`]), and
//! its control path and lock key. Nothing outside this module matches on the
//! variants.
//!
//! Each kind lives in its own file ([`local`], [`netns`]); this file holds the enum
//! (it is written into ledgers: `{"type":"local"}`, `{"type":"netns","name":…}`),
//! the dispatch and the shared types. A new kind (SSH) is one new file, one variant
//! of [`Target`] and of [`TargetSpec`], and the arms the compiler asks for in this
//! file.

pub(crate) mod cgroup;
pub(crate) mod group;
pub(crate) mod host;
pub mod kubernetes;
pub(crate) mod local;
pub(crate) mod netns;
pub(crate) mod procs;
pub(crate) mod ssh;

pub use group::{Group, SshGroupSpec};
pub use procs::ProcInfo;
pub use ssh::{KnownHostsPolicy, SshSpec};

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::duration::HumanDuration;

/// How to reach a target.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetSpec {
    /// A network namespace on this host, by its `ip netns` name.
    Netns(String),
    /// A Kubernetes cluster (kubeconfig and context, or in-cluster) and its default namespace. Not a shell host: only the `pod_kill` and `scale` faults and the `kubernetes` probe act on it.
    Kubernetes(kubernetes::KubernetesSpec),
    /// A remote host reached over SSH (one multiplexed connection per host).
    Ssh(SshSpec),
    /// A fleet of hosts over SSH, of which a selection is drilled (faults and probes fan out with a concurrency limit).
    SshGroup(SshGroupSpec),
}

impl TargetSpec {
    /// Static checks: `(path relative to the target's entry, message)`.
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        match self {
            TargetSpec::Netns(n) => netns::check_name(n)
                .err()
                .map(|e| ("netns".to_string(), e))
                .into_iter()
                .collect(),
            TargetSpec::Kubernetes(k) => k.validate(),
            TargetSpec::Ssh(s) => s.validate(),
            TargetSpec::SshGroup(g) => g.validate(),
        }
    }
}

/// A resolved target, as faults and probes use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    /// This host.
    Local,
    /// A network namespace on this host.
    Netns { name: String },
    /// A Kubernetes cluster: not a shell host.
    Kubernetes(kubernetes::Cluster),
    /// A remote host over SSH.
    Ssh(SshSpec),
    /// The chosen hosts of an `ssh_group`.
    Group(Group),
}

/// A program to run on a target: never a shell unless the caller names one
/// (`Cmd::new("sh").args(["-c", line])`); every argument reaches the program as is.
#[derive(Clone, Debug, Default)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    env: Vec<(String, String)>,
    timeout: Option<Duration>,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            ..Default::default()
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Bytes written to the program's standard input (otherwise it reads nothing).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// Extra environment variables (secrets travel here, never in arguments: `ps`).
    pub fn envs<I, K, V>(mut self, vars: I) -> Cmd
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// After this long, [`Target::run`] kills the program and fails.
    pub fn timeout(mut self, d: Duration) -> Cmd {
        self.timeout = Some(d);
        self
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// The process to start, with piped output; stdin piped only when there is some.
    fn to_command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.program);
        c.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }
}

/// What a program run by [`Target::run`] left.
#[derive(Clone, Debug)]
pub struct Output {
    /// Exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// From start to exit.
    pub took: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Why a target could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot start `{program}` on {target}: {source}")]
    Spawn {
        program: String,
        target: String,
        source: io::Error,
    },
    #[error("`{program}` on {target} failed: {source}")]
    Io {
        program: String,
        target: String,
        source: io::Error,
    },
    #[error("`{program}` on {target} timed out after {after} (killed)")]
    TimedOut {
        program: String,
        target: String,
        after: HumanDuration,
    },
    #[error("{target}: {message}")]
    Ssh { target: String, message: String },
    #[error("cannot enter {target}: {source}")]
    Enter { target: String, source: io::Error },
    #[error("cannot listen on {addr} on {target}: {source}")]
    Listen {
        addr: SocketAddr,
        target: String,
        source: io::Error,
    },
    #[error("cannot resolve `{host}` on {target}: {source}")]
    Resolve {
        host: String,
        target: String,
        source: io::Error,
    },
    #[error("cannot connect to {addr} from {target}: {source}")]
    Connect {
        addr: SocketAddr,
        target: String,
        source: io::Error,
    },
    #[error("connecting to {addr} from {target} timed out after {after}")]
    ConnectTimedOut {
        addr: SocketAddr,
        target: String,
        after: HumanDuration,
    },
    /// A cluster is not a shell host: it runs no program and has no network here.
    #[error("{what} is not supported on a kubernetes target ({target})")]
    Unsupported { what: &'static str, target: String },
}

impl TargetError {
    /// The underlying I/O error kind, where there is one (`TimedOut` for timeouts).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            TargetError::Spawn { source, .. }
            | TargetError::Io { source, .. }
            | TargetError::Enter { source, .. }
            | TargetError::Listen { source, .. }
            | TargetError::Resolve { source, .. }
            | TargetError::Connect { source, .. } => source.kind(),
            TargetError::TimedOut { .. } | TargetError::ConnectTimedOut { .. } => {
                io::ErrorKind::TimedOut
            }
            TargetError::Unsupported { .. } => io::ErrorKind::Unsupported,
            TargetError::Ssh { .. } => io::ErrorKind::ConnectionAborted,
        }
    }
}

impl From<TargetError> for io::Error {
    fn from(e: TargetError) -> io::Error {
        io::Error::new(e.kind(), e.to_string())
    }
}

impl Target {
    pub fn from_spec(spec: &TargetSpec) -> Self {
        match spec {
            TargetSpec::Netns(n) => Target::Netns { name: n.clone() },
            TargetSpec::Kubernetes(k) => Target::Kubernetes(k.resolve()),
            TargetSpec::Ssh(s) => Target::Ssh(s.clone()),
            TargetSpec::SshGroup(g) => Target::Group(g.resolve()),
        }
    }

    /// The cluster, when the target is one (what the kubernetes faults and probe act on).
    pub fn cluster(&self) -> Option<&kubernetes::Cluster> {
        match self {
            Target::Kubernetes(c) => Some(c),
            Target::Local | Target::Netns { .. } | Target::Ssh(_) | Target::Group(_) => None,
        }
    }

    /// Whether the target is a host that runs programs and has processes and a
    /// network here (every kind but a cluster).
    pub fn is_host(&self) -> bool {
        self.cluster().is_none()
    }

    /// The error of a host-only operation on a cluster.
    fn unsupported(&self, what: &'static str) -> TargetError {
        TargetError::Unsupported {
            what,
            target: self.describe(),
        }
    }

    /// A short human description: `local`, `netns:app`.
    pub fn describe(&self) -> String {
        match self {
            Target::Local => local::describe(),
            Target::Netns { name } => netns::describe(name),
            Target::Kubernetes(c) => c.describe(),
            Target::Ssh(s) => s.describe(),
            Target::Group(g) => g.describe(),
        }
    }

    /// Key used for the per-target run lock: two drills on the same key are refused.
    pub fn lock_key(&self) -> String {
        match self {
            Target::Local => local::lock_key(),
            Target::Netns { name } => netns::lock_key(name),
            Target::Kubernetes(c) => c.lock_key(),
            Target::Ssh(s) => s.lock_key(),
            // One key for the whole group (a file name): each host is also locked
            // on the host itself, which catches two groups sharing a host.
            Target::Group(g) => {
                use sha2::Digest;
                let keys: Vec<String> = g.members.iter().map(SshSpec::lock_key).collect();
                let h = sha2::Sha256::digest(keys.join("+").as_bytes());
                let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("ssh-group-{hex}")
            }
        }
    }

    /// Addresses the engine itself uses to reach the target. A network fault must not
    /// cover any of them, or the engine would lose the ability to revert it.
    pub fn control_path(&self) -> Vec<IpAddr> {
        match self {
            Target::Local => local::control_path(),
            Target::Netns { .. } => netns::control_path(),
            // No network fault acts on a cluster: there is no path of ours to cover.
            Target::Kubernetes(_) => Vec::new(),
            Target::Ssh(s) => s.control_path(),
            Target::Group(g) => {
                let mut all: Vec<IpAddr> =
                    g.members.iter().flat_map(|m| m.control_path()).collect();
                all.sort();
                all.dedup();
                all
            }
        }
    }

    /// The control path as it is at run time: [`Target::control_path`], plus, on a
    /// remote host, the engine's own address as that host sees it (rules run
    /// there must never cover it). An address that cannot be learnt is left out:
    /// the host was reached, so the static path still holds.
    pub async fn control_peers(&self) -> Vec<IpAddr> {
        let mut out = self.control_path();
        let hosts: Vec<&SshSpec> = match self {
            Target::Ssh(s) => vec![s],
            Target::Group(g) => g.members.iter().collect(),
            _ => Vec::new(),
        };
        for s in hosts {
            if let Ok(Some(link)) = Box::pin(ssh::peer(s)).await
                && !out.contains(&link.ip())
            {
                out.push(link.ip());
            }
        }
        out
    }

    /// On an `ssh` target, the engine's SSH link as the host sees it: the engine's
    /// address and the host's SSH port (`$SSH_CONNECTION`). None elsewhere.
    pub async fn control_link(&self) -> Option<SocketAddr> {
        match self {
            Target::Ssh(s) => Box::pin(ssh::peer(s)).await.ok().flatten(),
            _ => None,
        }
    }

    /// Whether this process can make sockets in the target's network itself (the
    /// target shares this host's kernel): what the in-engine proxy and
    /// [`Target::in_network`] need.
    pub fn sockets_here(&self) -> bool {
        match self {
            Target::Local | Target::Netns { .. } => true,
            Target::Kubernetes(_) => false,
            Target::Ssh(_) | Target::Group(_) => false,
        }
    }

    /// Locks the target's host itself for run `run_id`, where the lock in this
    /// host's lock directory cannot reach: a remote host, which engines on other
    /// machines may drill too. Held until this process exits.
    pub async fn lock_on_host(&self, run_id: &str) -> Result<(), TargetError> {
        match self {
            Target::Local | Target::Netns { .. } | Target::Kubernetes(_) => Ok(()),
            Target::Ssh(s) => Box::pin(ssh::lock_host(s, run_id)).await,
            Target::Group(g) => {
                let mut futs: Vec<BoxFut<'_, Result<(), TargetError>>> = Vec::new();
                for s in &g.members {
                    futs.push(Box::pin(ssh::lock_host(s, run_id)));
                }
                bounded(futs, g.concurrency as usize)
                    .await
                    .into_iter()
                    .collect()
            }
        }
    }

    /// Whether the target is another machine: its processes, files and kernel are
    /// reached only by running programs there.
    pub fn is_remote(&self) -> bool {
        match self {
            Target::Local | Target::Netns { .. } | Target::Kubernetes(_) => false,
            Target::Ssh(_) | Target::Group(_) => true,
        }
    }

    /// The hosts of a group target, one target each, and how many may be worked
    /// on at once (fan-out); None for a single target.
    pub fn members(&self) -> Option<(Vec<Target>, usize)> {
        match self {
            Target::Group(g) => Some((
                g.members.iter().cloned().map(Target::Ssh).collect(),
                g.concurrency as usize,
            )),
            _ => None,
        }
    }

    /// Whether the target is known to be gone for good (a deleted namespace), and
    /// with it everything a fault left there: reverts then have nothing to undo.
    pub fn is_gone(&self) -> bool {
        match self {
            Target::Local => false,
            Target::Netns { name } => netns::is_gone(name),
            Target::Kubernetes(_) => false,
            // A host that does not answer may come back: never assumed gone.
            Target::Ssh(_) | Target::Group(_) => false,
        }
    }

    /// Starts `cmd` on the target: a long-running helper, killed when the handle is
    /// dropped (`kill_on_drop`). Its stdout and stderr are piped; stdin is piped
    /// when `cmd` has some, which the caller then writes.
    pub async fn spawn(&self, cmd: &Cmd) -> Result<tokio::process::Child, TargetError> {
        let mut c = cmd.to_command();
        let spawned = match self {
            Target::Local => local::spawn(&mut c),
            Target::Netns { name } => netns::spawn(name, c).await,
            Target::Kubernetes(_) => return Err(self.unsupported("running a program")),
            Target::Ssh(s) => return Box::pin(spawn_ssh(s, cmd)).await,
            Target::Group(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a helper is started on one host, not on a group",
            )),
        };
        spawned.map_err(|source| TargetError::Spawn {
            program: cmd.program.clone(),
            target: self.describe(),
            source,
        })
    }

    /// Runs `cmd` on the target to its end (or its timeout, then kills it) and
    /// returns its exit code and output. A non-zero exit is an [`Output`], not an
    /// error.
    pub async fn run(&self, cmd: &Cmd) -> Result<Output, TargetError> {
        if let Target::Ssh(s) = self {
            return Box::pin(ssh::run(s, cmd)).await;
        }
        if let Target::Group(g) = self {
            return run_on_all(&g.members, g.concurrency as usize, cmd).await;
        }
        let start = Instant::now();
        let child = self.spawn(cmd).await?;
        finish(child, cmd, &self.describe(), start).await
    }

    /// Runs blocking `f` on a fresh thread whose sockets live in the target's
    /// network, and returns its result. Sockets opened there keep that network for
    /// life and may be used from any thread; processes started there inherit it.
    /// The thread is never reused: no other code runs in a network it did not ask
    /// for.
    pub async fn in_network<T, F>(&self, f: F) -> Result<T, TargetError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let r = match self {
            Target::Local => local::in_network(f).await,
            Target::Netns { name } => netns::in_network(name, f).await,
            Target::Kubernetes(_) => return Err(self.unsupported("running code in its network")),
            Target::Ssh(_) | Target::Group(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "sockets cannot be opened in a remote host's network from the engine",
            )),
        };
        r.map_err(|source| TargetError::Enter {
            target: self.describe(),
            source,
        })
    }

    /// Runs the async job `f` to its end on a fresh thread in the target's network,
    /// with a single-threaded runtime of its own: every socket the job opens (an
    /// HTTP client's connections, a resolver's queries) is the target's. Made on that
    /// thread, the job need not be `Send`.
    pub async fn in_network_async<T, F, Fut>(&self, f: F) -> Result<T, TargetError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let job = move || -> io::Result<T> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(f()))
        };
        self.in_network(job)
            .await?
            .map_err(|source| TargetError::Enter {
                target: self.describe(),
                source,
            })
    }

    /// Resolves `host` (a name or an IP literal) as the target would: the
    /// resolver's queries leave from the target's network.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, TargetError> {
        // A literal needs no resolver (and no trip into the target).
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let r = match self {
            Target::Local => local::resolve(host, port).await,
            Target::Netns { name } => netns::resolve(name, host, port).await,
            Target::Kubernetes(_) => return Err(self.unsupported("resolving a name")),
            Target::Ssh(s) => return Box::pin(ssh::resolve(s, host, port)).await,
            Target::Group(g) => match g.members.first() {
                Some(s) => return Box::pin(ssh::resolve(s, host, port)).await,
                None => Ok(Vec::new()),
            },
        };
        let err = |source| TargetError::Resolve {
            host: host.to_string(),
            target: self.describe(),
            source,
        };
        let addrs = r.map_err(err)?;
        if addrs.is_empty() {
            return Err(err(io::Error::new(
                io::ErrorKind::NotFound,
                "resolved to no address",
            )));
        }
        Ok(addrs)
    }

    /// A TCP connection to `addr` whose socket lives in the target's network, with
    /// SO_MARK `mark` when given (firewall rules may tell it apart by it), within
    /// `timeout` when given.
    pub async fn connect_tcp(
        &self,
        addr: SocketAddr,
        timeout: Option<Duration>,
        mark: Option<u32>,
    ) -> Result<tokio::net::TcpStream, TargetError> {
        if !self.is_host() {
            return Err(self.unsupported("connecting TCP"));
        }
        let connect = async {
            match self {
                Target::Local => local::connect_tcp(addr, mark).await,
                Target::Netns { name } => netns::connect_tcp(name, addr, mark).await,
                Target::Kubernetes(_) => unreachable!("refused above"),
                Target::Ssh(_) | Target::Group(_) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a TCP socket cannot live on a remote host; remote probes run a program there",
                )),
            }
        };
        let r = match timeout {
            Some(t) => tokio::time::timeout(t, connect).await.map_err(|_| {
                TargetError::ConnectTimedOut {
                    addr,
                    target: self.describe(),
                    after: HumanDuration(t),
                }
            })?,
            None => connect.await,
        };
        r.map_err(|source| TargetError::Connect {
            addr,
            target: self.describe(),
            source,
        })
    }

    /// Whether a TCP connection to `addr` opens from the target within `timeout`
    /// (closed at once). A remote host tries it itself (bash's `/dev/tcp`, the
    /// address as an argument, never in the script); other targets connect a
    /// socket of their network.
    pub async fn tcp_reachable(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        match self {
            Target::Ssh(s) => Box::pin(ssh::tcp_reachable(s, addr, timeout)).await,
            Target::Group(g) => {
                // Reachable from every chosen host.
                for s in &g.members {
                    Box::pin(ssh::tcp_reachable(s, addr, timeout)).await?;
                }
                Ok(())
            }
            _ => self.connect_tcp(addr, Some(timeout), None).await.map(drop),
        }
    }

    /// A listening TCP socket on `addr` in the target's network (SO_REUSEADDR,
    /// backlog 1024), not yet registered with a runtime.
    pub async fn listen_tcp(&self, addr: SocketAddr) -> Result<std::net::TcpListener, TargetError> {
        self.in_network(move || listen_blocking(addr))
            .await?
            .map_err(|source| TargetError::Listen {
                addr,
                target: self.describe(),
                source,
            })
    }
}

/// Processes on a target: listing and signalling (see [`procs`]).
impl Target {
    /// The live user processes the target holds. `local` is the whole host; a `netns`
    /// target holds the processes whose network namespace is its own (they share this
    /// host's pid namespace, so their pids are this host's).
    pub fn processes(&self) -> std::io::Result<Vec<ProcInfo>> {
        if !self.is_host() {
            return Err(self.unsupported("listing processes").into());
        }
        let all = procs::list()?;
        match self {
            Target::Local => Ok(all),
            Target::Netns { name } => procs::in_netns(all, name),
            Target::Kubernetes(_) => unreachable!("refused above"),
            Target::Ssh(_) | Target::Group(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!(
                    "the processes of {} are listed over ssh, not from this host",
                    self.describe()
                ),
            )),
        }
    }

    /// Sends `signal` to process `pid` of the target if it is still the process born
    /// at `start_time`; false when it is gone or its pid was recycled (nothing sent).
    pub fn signal(
        &self,
        pid: u32,
        start_time: u64,
        signal: nix::sys::signal::Signal,
    ) -> std::io::Result<bool> {
        match self {
            Target::Local | Target::Netns { .. } => procs::signal(pid, start_time, signal),
            Target::Kubernetes(_) => Err(self.unsupported("signalling a process").into()),
            Target::Ssh(_) | Target::Group(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!(
                    "processes of {} are signalled over ssh, not from this host",
                    self.describe()
                ),
            )),
        }
    }
}

/// A TCP socket for `addr`'s family, with SO_MARK `mark`, made in the calling
/// thread's network.
pub(crate) fn tcp_socket(addr: SocketAddr, mark: Option<u32>) -> io::Result<socket2::Socket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    if let Some(m) = mark {
        sock.set_mark(m)?;
    }
    Ok(sock)
}

/// Connects a socket made by [`tcp_socket`] on the caller's runtime.
pub(crate) async fn connect_socket(
    sock: socket2::Socket,
    addr: SocketAddr,
) -> io::Result<tokio::net::TcpStream> {
    sock.set_nonblocking(true)?;
    let std_stream: std::net::TcpStream = sock.into();
    tokio::net::TcpSocket::from_std_stream(std_stream)
        .connect(addr)
        .await
}

fn listen_blocking(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = tcp_socket(addr, None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// Feeds `cmd`'s stdin to `child` while its output is read, to its end or `cmd`'s
/// timeout (then kills it): what [`Target::run`] does once the program started.
pub(crate) async fn finish(
    mut child: tokio::process::Child,
    cmd: &Cmd,
    target: &str,
    start: Instant,
) -> Result<Output, TargetError> {
    let io_err = |source| TargetError::Io {
        program: cmd.program.clone(),
        target: target.to_string(),
        source,
    };
    // Stdin is fed while the output is read: a program that writes before it has
    // read everything must not block on a full pipe.
    let feed = {
        let pipe = child.stdin.take();
        let bytes = cmd.stdin.clone();
        async move {
            if let (Some(mut pipe), Some(bytes)) = (pipe, bytes) {
                // A program that exits without reading all of it is its business.
                let _ = pipe.write_all(&bytes).await;
            }
        }
    };
    let wait = async {
        let (_, out) = tokio::join!(feed, child.wait_with_output());
        out
    };
    let out = match cmd.timeout {
        Some(t) => match tokio::time::timeout(t, wait).await {
            Ok(r) => r.map_err(io_err)?,
            // Dropping the child (kill_on_drop) kills it; tokio reaps it.
            Err(_) => {
                return Err(TargetError::TimedOut {
                    program: cmd.program.clone(),
                    target: target.to_string(),
                    after: HumanDuration(t),
                });
            }
        },
        None => wait.await.map_err(io_err)?,
    };
    Ok(Output {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
        took: start.elapsed(),
    })
}

/// A boxed future that may move between threads (what fan-outs are made of).
pub(crate) type BoxFut<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs `futs` with at most `limit` of them in progress at once; their results in
/// the order given.
pub(crate) async fn bounded<'a, T: 'a>(futs: Vec<BoxFut<'a, T>>, limit: usize) -> Vec<T> {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut wrapped: Vec<BoxFut<'a, T>> = Vec::with_capacity(futs.len());
    for f in futs {
        let sem = sem.clone();
        wrapped.push(Box::pin(async move {
            let _permit = sem.acquire_owned().await;
            f.await
        }));
    }
    futures_util::future::join_all(wrapped).await
}

/// [`Target::run`] on a group: `cmd` on every host, at most `limit` at once. The
/// exit code is the first non-zero one in host order (0 when all succeeded);
/// every line of output is prefixed with its host.
async fn run_on_all(members: &[SshSpec], limit: usize, cmd: &Cmd) -> Result<Output, TargetError> {
    let start = Instant::now();
    let mut futs: Vec<BoxFut<'_, (String, Result<Output, TargetError>)>> = Vec::new();
    for s in members {
        futs.push(Box::pin(
            async move { (s.describe(), ssh::run(s, cmd).await) },
        ));
    }
    let results = bounded(futs, limit).await;
    let mut out = Output {
        code: Some(0),
        stdout: Vec::new(),
        stderr: Vec::new(),
        took: Duration::ZERO,
    };
    for (host, r) in results {
        let o = r?;
        if out.code == Some(0) && o.code != Some(0) {
            out.code = o.code;
        }
        for (to, from) in [(&mut out.stdout, &o.stdout), (&mut out.stderr, &o.stderr)] {
            for line in String::from_utf8_lossy(from).lines() {
                to.extend_from_slice(format!("[{host}] {line}\n").as_bytes());
            }
        }
    }
    out.took = start.elapsed();
    Ok(out)
}

/// [`Target::spawn`] on an ssh target: secrets that travel on stdin ahead of the
/// program's own input are written here; the caller writes the rest.
async fn spawn_ssh(s: &SshSpec, cmd: &Cmd) -> Result<tokio::process::Child, TargetError> {
    let (mut child, stdin) = ssh::spawn(s, cmd).await?;
    if !cmd.env.is_empty()
        && let (Some(mut pipe), Some(all)) = (child.stdin.take(), stdin)
    {
        let own = cmd.stdin.as_ref().map_or(0, Vec::len);
        let head = &all[..all.len() - own];
        pipe.write_all(head)
            .await
            .map_err(|source| TargetError::Io {
                program: cmd.program.clone(),
                target: s.describe(),
                source,
            })?;
        // Without input of its own, the program reads end-of-file after the header.
        if cmd.stdin.is_some() {
            child.stdin = Some(pipe);
        }
    }
    Ok(child)
}

#[cfg(test)]
mod tests;
