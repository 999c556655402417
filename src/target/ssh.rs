//! The `ssh` target: another host, reached over SSH.
//!
//! One multiplexed master connection per host (the `openssh` crate, process mux: an
//! `ssh -M` ControlMaster in a private temp directory), opened on first use and kept
//! in a process-wide cache. Every program then runs as one more `ssh -S <socket>`
//! session over that master, so a command costs a channel, not a handshake. The
//! master sends keep-alives (`ServerAliveInterval`), so a dead link is noticed within
//! seconds; a session that finds the master gone drops it from the cache and the
//! next call reconnects (reverts retry, see the engine).
//!
//! What never happens here:
//! - a value reaching a remote shell unquoted: the remote side of SSH always runs a
//!   shell on the command line it gets, so every argument is single-quoted
//!   ([`quote`]) and arrives as is;
//! - a secret on a remote command line (`ps` shows it to every user of the host):
//!   [`Cmd::envs`] variables travel on stdin, ahead of the program's own input, and
//!   a small `sh` prologue on the host exports them before it `exec`s the program;
//! - an interactive prompt: `BatchMode=yes`, and `sudo -n` (a password prompt is a
//!   clear error at connect time, not a hang).
//!
//! Host keys are checked strictly by default (`known_hosts: strict`): an unknown or
//! changed key refuses the connection with ssh's own words. `accept_new` records an
//! unknown key and still refuses a changed one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Cmd, TargetError};
use crate::duration::HumanDuration;

/// How to reach a remote host over SSH (also written into ledgers, so that
/// `firedrill recover` reconnects the same way).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    /// Host name or IP address of the remote host.
    pub host: String,
    /// SSH port of the remote host.
    #[serde(default = "default_port")]
    pub port: u16,
    /// User to log in as; default: ssh's own choice (this user, or `~/.ssh/config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Private key file to authenticate with; when set, only this key is offered (`IdentitiesOnly=yes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// Run every program through `sudo -n` on the host (non-interactive: a user without password-less sudo is refused with a clear error when connecting, never prompted).
    #[serde(default)]
    pub sudo: bool,
    /// Host-key policy: `strict` (default: the host's key must already be in known_hosts) or `accept_new` (an unknown key is recorded; a changed key is still refused).
    #[serde(default)]
    pub known_hosts: KnownHostsPolicy,
    /// known_hosts file to check the host key against; default: ssh's own (`~/.ssh/known_hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<String>,
    /// How long connecting (TCP and SSH handshake) may take.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Reach the host through this jump host (`[user@]host[:port]`, ssh's `-J`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump: Option<String>,
}

/// Host-key checking of an `ssh` target.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KnownHostsPolicy {
    /// The host's key must already be in known_hosts; anything else is refused.
    #[default]
    Strict,
    /// An unknown host's key is added to known_hosts; a changed key is refused.
    AcceptNew,
}

fn default_port() -> u16 {
    22
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// Keep-alive interval of a master: with ssh's default `ServerAliveCountMax` of 3, a
/// dead link is noticed within about 6 s.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// How long a master outlives its last session once this engine has gone (killed
/// without closing it): long enough for `recover` right after, short enough that
/// nothing lingers.
const PERSIST_S: usize = 30;

/// A host name, user or jump host becomes an argument of the local `ssh`: one
/// starting with `-` would be an option, and whitespace or control characters have
/// no business there.
fn check_word(field: &str, v: &str, what: &str) -> Option<(String, String)> {
    let bad = v.is_empty()
        || v.starts_with('-')
        || v.chars().any(|c| c.is_whitespace() || c.is_control())
        || v.len() > 255;
    bad.then(|| {
        (
            field.to_string(),
            format!("found `{v}`, expected {what}: not empty, not starting with `-`, no spaces or control characters"),
        )
    })
}

impl SshSpec {
    /// Static checks: `(path relative to the target's entry, message)`.
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        out.extend(check_word("ssh.host", &self.host, "a host name or address"));
        if let Some(u) = &self.user {
            out.extend(check_word("ssh.user", u, "a user name"));
        }
        if let Some(j) = &self.jump {
            out.extend(check_word(
                "ssh.jump",
                j,
                "a jump host `[user@]host[:port]`",
            ));
        }
        if self.port == 0 {
            out.push((
                "ssh.port".into(),
                "found 0, expected a port from 1 to 65535".into(),
            ));
        }
        if self.connect_timeout.0.is_zero() {
            out.push((
                "ssh.connect_timeout".into(),
                "found 0s, expected a positive duration".into(),
            ));
        }
        out
    }

    /// `ssh:deploy@10.0.0.5:22`.
    pub(crate) fn describe(&self) -> String {
        match &self.user {
            Some(u) => format!("ssh:{u}@{}:{}", self.host, self.port),
            None => format!("ssh:{}:{}", self.host, self.port),
        }
    }

    /// One host is one lock, however the engine logs in to it.
    pub(crate) fn lock_key(&self) -> String {
        format!("ssh-{}-{}", self.host, self.port)
    }

    /// The addresses of the host and of its jump host: the engine's link to it.
    pub(crate) fn control_path(&self) -> Vec<IpAddr> {
        let mut out = addrs_of(&self.host, self.port);
        if let Some(j) = &self.jump {
            let hostport = j.rsplit('@').next().unwrap_or(j);
            let (h, p) = match hostport.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().unwrap_or(22)),
                _ => (hostport, 22),
            };
            out.extend(addrs_of(h.trim_start_matches('[').trim_end_matches(']'), p));
        }
        out.sort();
        out.dedup();
        out
    }

    /// Key of the connection cache: everything that changes how we log in.
    fn cache_key(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| self.describe())
    }
}

fn addrs_of(host: &str, port: u16) -> Vec<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    (host, port)
        .to_socket_addrs()
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default()
}

/// One slot per host, by [`SshSpec::cache_key`]: the map is locked only to find
/// the slot, and each slot while its host connects, so hosts connect in parallel.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<openssh::Session>>>>;
static SESSIONS: LazyLock<tokio::sync::Mutex<HashMap<String, Slot>>> =
    LazyLock::new(Default::default);

fn ssh_err(spec: &SshSpec, message: impl Into<String>) -> TargetError {
    TargetError::Ssh {
        target: spec.describe(),
        message: message.into(),
    }
}

/// The master for `spec`: the cached one, or a new connection (checked: a `sudo`
/// target also proves `sudo -n` works before anything runs).
pub(crate) async fn session(spec: &SshSpec) -> Result<Arc<openssh::Session>, TargetError> {
    let key = spec.cache_key();
    let slot = SESSIONS.lock().await.entry(key).or_default().clone();
    let mut held = slot.lock().await;
    if let Some(s) = held.as_ref() {
        return Ok(s.clone());
    }
    let s = Arc::new(connect(spec).await?);
    *held = Some(s.clone());
    drop(held);
    if spec.sudo {
        let out = run_over(spec, &s, &Cmd::new("true").timeout(spec.connect_timeout.0)).await?;
        if !out.success() {
            forget(spec).await;
            return Err(ssh_err(
                spec,
                format!(
                    "`sudo -n` was refused ({}); expected password-less sudo (NOPASSWD) for this user, since a drill never answers a prompt",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
    }
    Ok(s)
}

/// Drops the cached master of `spec` (it was found dead): the next use reconnects.
pub(crate) async fn forget(spec: &SshSpec) {
    let slot = SESSIONS.lock().await.get(&spec.cache_key()).cloned();
    if let Some(slot) = slot {
        *slot.lock().await = None;
    }
}

/// This process's directory for its masters' sockets and logs
/// (`$TMPDIR/firedrill-ssh-<pid>`, mode 700), removed when the process exits (the
/// masters end by themselves [`PERSIST_S`] later). The cached sessions are never
/// dropped, so the crate's own per-session directories would outlive the process.
fn control_dir() -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static HOOK: std::sync::Once = std::sync::Once::new();
    let d = own_control_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)?;
    HOOK.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn` with no captured state.
        unsafe { libc::atexit(remove_control_dir) };
        // A SIGKILLed engine never ran its exit hook: its directory is removed by
        // the next engine that uses SSH.
        for gone in sweep_stale_control_dirs(&std::env::temp_dir()) {
            tracing::debug!("removed {} (its engine is gone)", gone.display());
        }
    });
    Ok(d)
}

/// Removes `base/firedrill-ssh-<pid>` directories whose process no longer exists.
/// Only real directories owned by this user are touched (never a symlink, never
/// another user's); a live pid keeps its directory. Returns what was removed.
fn sweep_stale_control_dirs(base: &std::path::Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("firedrill-ssh-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me || pid == std::process::id() {
            continue;
        }
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

fn own_control_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("firedrill-ssh-{}", std::process::id()))
}

extern "C" fn remove_control_dir() {
    let _ = std::fs::remove_dir_all(own_control_dir());
}

async fn connect(spec: &SshSpec) -> Result<openssh::Session, TargetError> {
    let mut b = openssh::SessionBuilder::default();
    b.port(spec.port)
        .known_hosts_check(match spec.known_hosts {
            KnownHostsPolicy::Strict => openssh::KnownHosts::Strict,
            KnownHostsPolicy::AcceptNew => openssh::KnownHosts::Add,
        })
        .connect_timeout(spec.connect_timeout.0.max(Duration::from_secs(1)))
        .server_alive_interval(KEEPALIVE)
        .control_directory(control_dir().map_err(|e| {
            ssh_err(
                spec,
                format!("cannot create the control socket directory: {e}"),
            )
        })?)
        .control_persist(openssh::ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(PERSIST_S).expect("non-zero"),
        ));
    if let Some(u) = &spec.user {
        b.user(u.clone());
    }
    if let Some(k) = &spec.identity_file {
        b.keyfile(k);
    }
    if let Some(f) = &spec.known_hosts_file {
        b.user_known_hosts_file(f);
    }
    if let Some(j) = &spec.jump {
        b.jump_hosts([j.as_str()]);
    }
    // The whole handshake is bounded too: ConnectTimeout covers only the TCP part.
    let limit = spec.connect_timeout.0 * 2 + Duration::from_secs(5);
    match tokio::time::timeout(limit, b.connect(&spec.host)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(ssh_err(spec, connect_message(&e))),
        Err(_) => Err(ssh_err(
            spec,
            format!("connecting timed out after {}", HumanDuration(limit)),
        )),
    }
}

/// ssh's own words for a failed connection, with what to do for the usual ones.
fn connect_message(e: &openssh::Error) -> String {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        src = s.source();
    }
    let text = text.trim().to_string();
    if text.contains("Host key verification failed") || text.contains("REMOTE HOST IDENTIFICATION")
    {
        format!(
            "cannot connect: {text}; the host's key is not the one in known_hosts (known_hosts: strict); expected its key in known_hosts (ssh-keyscan, checked out of band) or `known_hosts: accept_new` for a host never seen before"
        )
    } else {
        format!("cannot connect: {text}")
    }
}

/// Quotes `s` for a POSIX shell: it arrives as one word, as is.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Exports `NAME=VALUE` lines read from stdin up to an empty line, then runs "$@"
/// with what is left of stdin (`read` takes a pipe byte by byte: nothing more).
const ENV_PROLOGUE: &str =
    r#"while IFS= read -r l && [ -n "$l" ]; do export "$l" || exit 126; done; exec "$@""#;

/// The remote command line and the bytes for its stdin.
fn remote_line(spec: &SshSpec, cmd: &Cmd) -> Result<(String, Option<Vec<u8>>), String> {
    let mut words: Vec<String> = Vec::new();
    if spec.sudo {
        words.extend(["sudo", "-n", "--"].map(String::from));
    }
    let mut stdin = cmd.stdin.clone();
    if !cmd.env.is_empty() {
        let mut head = Vec::new();
        for (k, v) in &cmd.env {
            let name_ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok || v.contains(['\n', '\0']) {
                return Err(format!(
                    "environment variable `{k}` cannot travel over ssh: expected a name of letters, digits and `_` and a value without newlines"
                ));
            }
            head.extend_from_slice(format!("{k}={v}\n").as_bytes());
        }
        head.push(b'\n');
        head.extend(stdin.take().unwrap_or_default());
        stdin = Some(head);
        words.extend(["sh", "-c", ENV_PROLOGUE, "firedrill-env"].map(String::from));
    }
    words.push(cmd.program.clone());
    words.extend(cmd.args.iter().cloned());
    let line = words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
    Ok((line, stdin))
}

/// The local `ssh` client command that runs `cmd` on the host over master `s`.
fn client_cmd(spec: &SshSpec, s: &openssh::Session, cmd: &Cmd) -> Result<Cmd, TargetError> {
    let (line, stdin) = remote_line(spec, cmd).map_err(|m| ssh_err(spec, m))?;
    let ctl = s.control_socket().to_string_lossy().into_owned();
    // `-p 9` and host `none`: should the master be gone, this client must fail, not
    // open a connection of its own (as the openssh crate does).
    let mut c = Cmd::new("ssh").args([
        "-S",
        &ctl,
        "-o",
        "BatchMode=yes",
        "-o",
        "ControlMaster=no",
        "-T",
        "-p",
        "9",
        "none",
        "--",
        &line,
    ]);
    c.stdin = stdin;
    c.timeout = cmd.timeout;
    Ok(c)
}

/// Starts `cmd` on the host: the returned child is the local `ssh` client; its
/// stdin, stdout and stderr are the remote program's.
pub(super) async fn spawn(
    spec: &SshSpec,
    cmd: &Cmd,
) -> Result<(tokio::process::Child, Option<Vec<u8>>), TargetError> {
    let s = session(spec).await?;
    let c = client_cmd(spec, &s, cmd)?;
    let child = spawn_client(spec, &c, cmd)?;
    Ok((child, c.stdin))
}

/// Starts the prepared `ssh` client for `cmd`.
fn spawn_client(spec: &SshSpec, c: &Cmd, cmd: &Cmd) -> Result<tokio::process::Child, TargetError> {
    c.to_command().spawn().map_err(|source| TargetError::Spawn {
        program: cmd.program.clone(),
        target: spec.describe(),
        source,
    })
}

async fn run_over(
    spec: &SshSpec,
    s: &openssh::Session,
    cmd: &Cmd,
) -> Result<super::Output, TargetError> {
    let c = client_cmd(spec, s, cmd)?;
    let start = std::time::Instant::now();
    let child = spawn_client(spec, &c, cmd)?;
    super::finish(child, &c, "local", start)
        .await
        .map_err(|e| match e {
            TargetError::TimedOut { after, .. } => TargetError::TimedOut {
                program: cmd.program.clone(),
                target: spec.describe(),
                after,
            },
            other => ssh_err(spec, other.to_string()),
        })
}

/// Runs `cmd` on the host. Exit status 255 is ssh's own failure: when the master
/// is found dead it is forgotten (the next call reconnects) and this is an error,
/// not an [`super::Output`].
pub(super) async fn run(spec: &SshSpec, cmd: &Cmd) -> Result<super::Output, TargetError> {
    let s = session(spec).await?;
    let out = run_over(spec, &s, cmd).await?;
    if out.code == Some(255) && s.check().await.is_err() {
        forget(spec).await;
        return Err(ssh_err(
            spec,
            format!(
                "the connection to {} was lost while running `{}`: {}",
                spec.host,
                cmd.program,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(out)
}

/// Resolves `host` as the remote host does (`getent ahosts`).
pub(super) async fn resolve(
    spec: &SshSpec,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, TargetError> {
    let out = run(
        spec,
        &Cmd::new("getent")
            .args(["ahosts", host])
            .timeout(Duration::from_secs(10)),
    )
    .await?;
    let mut addrs: Vec<SocketAddr> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    addrs.dedup();
    Ok(addrs)
}

/// Connects from the host to `addr` within `timeout` (bash's `/dev/tcp`, under
/// `timeout`): `$0` is the address, `$1` the port, never part of the script.
pub(super) async fn tcp_reachable(
    spec: &SshSpec,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), TargetError> {
    let secs = format!("{:.3}", timeout.as_secs_f64().max(0.001));
    let out = run(
        spec,
        &Cmd::new("timeout")
            .args([&secs, "bash", "-c", r#"exec 3<>"/dev/tcp/$0/$1""#])
            .args([addr.ip().to_string(), addr.port().to_string()])
            // The session's own setup may take a while on a loaded host.
            .timeout(timeout + Duration::from_secs(10)),
    )
    .await?;
    match out.code {
        Some(0) => Ok(()),
        Some(124) => Err(TargetError::ConnectTimedOut {
            addr,
            target: spec.describe(),
            after: HumanDuration(timeout),
        }),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            use std::io::ErrorKind as K;
            let kind = if err.contains("refused") {
                K::ConnectionRefused
            } else if err.contains("No route to host") {
                K::HostUnreachable
            } else if err.contains("Network is unreachable") {
                K::NetworkUnreachable
            } else if err.contains("not permitted") {
                K::PermissionDenied
            } else {
                K::Other
            };
            let msg = err.lines().last().unwrap_or("").trim().to_string();
            Err(TargetError::Connect {
                addr,
                target: spec.describe(),
                source: std::io::Error::new(kind, msg),
            })
        }
    }
}

/// The engine's own address as the host sees it (`$SSH_CONNECTION`: client
/// address first), asked without `sudo` (which would reset the environment).
pub(crate) async fn peer(spec: &SshSpec) -> Result<Option<SocketAddr>, TargetError> {
    let plain = SshSpec {
        sudo: false,
        ..spec.clone()
    };
    let s = session(spec).await?;
    let out = run_over(
        &plain,
        &s,
        &Cmd::new("printenv")
            .arg("SSH_CONNECTION")
            .timeout(spec.connect_timeout.0 + Duration::from_secs(10)),
    )
    .await?;
    // "client_ip client_port server_ip server_port"
    let text = String::from_utf8_lossy(&out.stdout);
    let w: Vec<&str> = text.split_whitespace().collect();
    Ok(match (w.first(), w.get(3)) {
        (Some(ip), Some(port)) => match (ip.parse::<IpAddr>(), port.parse::<u16>()) {
            (Ok(ip), Ok(port)) => Some(SocketAddr::new(ip, port)),
            _ => None,
        },
        _ => None,
    })
}

/// Takes the host's drill lock on fd 9 and holds it while its stdin is open (this
/// engine alive): `$1` is the run id. The lock file is per network namespace of the
/// host (`/proc/self/ns/net`): one per host in production, one per namespace when
/// several "hosts" share a machine (the lab, the tests). Prints `locked`, or
/// `held by RUN since TIME` and exits 1.
const LOCK: &str = r#"d=/run/lock; [ -d "$d" ] && [ -w "$d" ] || d=/tmp
f="$d/firedrill-host-$(readlink /proc/self/ns/net | tr -cd 0-9).lock"
exec 9>>"$f" || exit 2
command -v flock > /dev/null || { echo "flock is not installed on the host (util-linux)"; exit 2; }
if ! flock -n 9; then echo "held by $(cat "$f.owner" 2>/dev/null || echo 'another engine')"; exit 1; fi
echo "run $1 since $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$f.owner"
echo locked
exec cat > /dev/null
"#;

/// Host locks this process holds, by [`SshSpec::lock_key`]: the remote `flock`
/// lives as long as the child's stdin is open, so it is released when this process
/// exits, however it exits.
static HOST_LOCKS: LazyLock<tokio::sync::Mutex<HashMap<String, tokio::process::Child>>> =
    LazyLock::new(Default::default);

/// Locks the host itself for run `run_id` (once per process; later calls return at
/// once), so that two engines on two machines never drill one host together.
pub(crate) async fn lock_host(spec: &SshSpec, run_id: &str) -> Result<(), TargetError> {
    use tokio::io::AsyncBufReadExt;
    if HOST_LOCKS.lock().await.contains_key(&spec.lock_key()) {
        return Ok(());
    }
    let cmd = Cmd::new("sh")
        .args(["-c", LOCK, "firedrill-lock", run_id])
        .stdin(Vec::new());
    let (mut child, _) = spawn(spec, &cmd).await?;
    let mut line = String::new();
    let read = async {
        let out = child.stdout.as_mut().expect("piped");
        tokio::io::BufReader::new(out).read_line(&mut line).await
    };
    let limit = spec.connect_timeout.0 + Duration::from_secs(10);
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(_)) if line.trim() == "locked" => {
            HOST_LOCKS.lock().await.insert(spec.lock_key(), child);
            Ok(())
        }
        Ok(_) if line.trim().starts_with("held by") => Err(ssh_err(
            spec,
            format!(
                "the host is locked by another drill ({}); expected no other engine drilling it",
                line.trim().trim_start_matches("held by ")
            ),
        )),
        Ok(_) => Err(ssh_err(
            spec,
            format!("cannot lock the host: {}", line.trim()),
        )),
        Err(_) => Err(ssh_err(
            spec,
            format!(
                "cannot lock the host: no answer within {}",
                HumanDuration(limit)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SshSpec {
        serde_yaml::from_str("host: 10.1.2.3\nuser: deploy").unwrap()
    }

    /// A dead engine's control directory goes; a live process's, this process's, a
    /// symlink with the same name and unrelated entries stay.
    #[test]
    fn stale_control_dirs_of_dead_engines_are_swept() {
        let base = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mk = |name: String| {
            let d = base.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("master.sock.log"), b"x").unwrap();
            d
        };
        let stale = mk(format!("firedrill-ssh-{dead}"));
        let alive = mk(format!("firedrill-ssh-{}", live.id()));
        let mine = mk(format!("firedrill-ssh-{}", std::process::id()));
        let other = mk("firedrill-ssh-notapid".into());
        let target = mk("elsewhere".into());
        // A symlink named like a dead engine's directory: never followed, kept.
        let link = base
            .path()
            .join(format!("firedrill-ssh-{}", dead + 1_000_000));
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let removed = sweep_stale_control_dirs(base.path());
        let _ = live.kill();
        let _ = live.wait();
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists());
        for kept in [&alive, &mine, &other, &target] {
            assert!(kept.join("master.sock.log").exists(), "{}", kept.display());
        }
        assert!(std::fs::symlink_metadata(&link).is_ok());
    }

    #[test]
    fn quoting_keeps_every_byte() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn secrets_travel_on_stdin_not_on_the_line() {
        let cmd = Cmd::new("curl")
            .arg("-sS")
            .envs([("TOKEN", "s3cret")])
            .stdin(b"body".to_vec());
        let (line, stdin) = remote_line(&spec(), &cmd).unwrap();
        assert!(!line.contains("s3cret"), "{line}");
        assert_eq!(stdin.unwrap(), b"TOKEN=s3cret\n\nbody");
        let mut s = spec();
        s.sudo = true;
        let (line, _) = remote_line(&s, &Cmd::new("id")).unwrap();
        assert_eq!(line, "'sudo' '-n' '--' 'id'");
    }

    #[test]
    fn a_value_with_a_newline_is_refused() {
        let cmd = Cmd::new("x").envs([("A", "1\nB=2")]);
        assert!(remote_line(&spec(), &cmd).is_err());
    }

    #[test]
    fn defaults_and_checks() {
        let s = spec();
        assert_eq!(s.port, 22);
        assert_eq!(s.known_hosts, KnownHostsPolicy::Strict);
        assert_eq!(s.describe(), "ssh:deploy@10.1.2.3:22");
        assert_eq!(
            s.control_path(),
            vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
        let bad: SshSpec = serde_yaml::from_str("host: -oProxyCommand=x\nport: 0").unwrap();
        let errs = bad.validate();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].0, "ssh.host");
        assert!(serde_yaml::from_str::<SshSpec>("host: a\nbogus: 1").is_err());
    }
}
