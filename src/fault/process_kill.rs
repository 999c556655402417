//! `process_kill`: send TERM, KILL or STOP to processes on this host (via `nix`).
//!
//! Processes are chosen by pid, pidfile, exact name or a command-line regex, and are
//! recorded with their start time so that a recycled pid is never signalled by a
//! revert. `STOP` freezes a process; its undo is `CONT`, and a detached dead-man
//! watcher (`firedrill __deadman`) thaws it after the ttl even if the engine dies,
//! also with its whole cgroup (the watcher is moved out of it, see
//! [`crate::target::cgroup`]).

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal as NixSignal, kill};
use nix::unistd::Pid;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Effect, FaultCtx, FaultError, RevertCtx, Reverted, ms_since};
use crate::duration::HumanDuration;
use crate::target::Target;
use crate::target::cgroup::{self, Placement};

/// Parameters of `process_kill`. Exactly one of `pid`, `pidfile`, `name`, `pattern`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProcessKill {
    /// Select the process with this pid.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Select the process whose pid is on the first line of this file (later lines are ignored, as in PostgreSQL's `postmaster.pid`).
    #[serde(default)]
    pub pidfile: Option<String>,
    /// Select processes whose name (`/proc/PID/comm`, at most 15 characters) is exactly this.
    #[serde(default)]
    pub name: Option<String>,
    /// Select processes whose full command line matches this regular expression.
    #[serde(default)]
    pub pattern: Option<String>,
    /// How many of the matching processes to hit (oldest first). Ignored with `all`.
    #[serde(default = "one")]
    pub count: u32,
    /// Hit every matching process.
    #[serde(default)]
    pub all: bool,
    /// Signal to send: `TERM` (graceful), `KILL` (abrupt) or `STOP` (freeze; reverted with `CONT`).
    #[serde(default)]
    pub signal: Signal,
    /// How long to wait for the process to die (or stop) before declaring the fault not effective.
    #[serde(default = "default_verify")]
    pub verify_timeout: HumanDuration,
}

fn one() -> u32 {
    1
}

fn local() -> Target {
    Target::Local
}

fn default_verify() -> HumanDuration {
    HumanDuration::from_millis(5000)
}

/// A signal `process_kill` may send.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Signal {
    /// SIGTERM: ask the process to exit.
    #[default]
    Term,
    /// SIGKILL: kill it at once.
    Kill,
    /// SIGSTOP: freeze it until SIGCONT (sent by the revert or by the dead-man timer).
    Stop,
}

impl Signal {
    fn nix(self) -> NixSignal {
        match self {
            Signal::Term => NixSignal::SIGTERM,
            Signal::Kill => NixSignal::SIGKILL,
            Signal::Stop => NixSignal::SIGSTOP,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
            Signal::Stop => "STOP",
        }
    }
}

/// A process as identified by the fault: pid plus start time, so a recycled pid is
/// never mistaken for the process we hit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcRef {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// Process name at selection time.
    pub comm: String,
}

/// The undo record of `process_kill`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Undo {
    /// The target whose processes were signalled (records written before it was
    /// recorded were all `local`, the only target process_kill accepts).
    #[serde(default = "local")]
    pub target: Target,
    pub signal: Signal,
    pub processes: Vec<ProcRef>,
    /// Tag on the dead-man watcher's command line (STOP only), so any process can find and end it.
    pub deadman_tag: Option<String>,
    /// Where the pid came from when a file named it (`pid 42 read from line 1 of …`),
    /// so the record shows which line of a multi-line pidfile was trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl ProcessKill {
    pub(crate) fn validate(&self, target: &Target) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let selectors = [
            self.pid.is_some(),
            self.pidfile.is_some(),
            self.name.is_some(),
            self.pattern.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if selectors != 1 {
            errs.push((
                "with".into(),
                format!("found {selectors} process selectors, expected exactly one of pid, pidfile, name, pattern"),
            ));
        }
        if let Some(p) = &self.pattern
            && let Err(e) = regex::Regex::new(p)
        {
            errs.push((
                "with.pattern".into(),
                format!("found an invalid regular expression: {e}"),
            ));
        }
        if self.count == 0 && !self.all {
            errs.push((
                "with.count".into(),
                "found 0, expected at least 1 (or `all: true`)".into(),
            ));
        }
        if let Some(n) = &self.name
            && n.len() > 15
        {
            errs.push((
                    "with.name".into(),
                    format!("found `{n}` ({} characters), expected at most 15: the kernel truncates process names; use `pattern` for longer names", n.len()),
                ));
        }
        if !matches!(target, Target::Local) {
            errs.push((
                "target".into(),
                format!(
                    "found target {}, expected `local`: process_kill acts on this host's processes",
                    target.describe()
                ),
            ));
        }
        errs
    }

    pub(crate) fn describe(&self) -> String {
        let who = if let Some(p) = self.pid {
            format!("pid {p}")
        } else if let Some(f) = &self.pidfile {
            format!("the pid in {f}")
        } else if let Some(n) = &self.name {
            format!("processes named `{n}`")
        } else {
            format!(
                "processes matching /{}/",
                self.pattern.as_deref().unwrap_or("")
            )
        };
        let how_many = if self.all {
            "all".to_string()
        } else {
            format!("{}", self.count)
        };
        let effect = match self.signal {
            Signal::Stop => "frozen until revert",
            _ => "gone",
        };
        format!(
            "SIG{} to {how_many} of {who}; expected {effect}",
            self.signal.name()
        )
    }

    pub(crate) async fn prepare(&self, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
        let (mut chosen, source) = self.select()?;
        chosen.sort_by_key(|p| (p.start_time, p.pid));
        if !self.all {
            chosen.truncate(self.count as usize);
        }
        let deadman_tag = (self.signal == Signal::Stop).then(|| deadman_tag(ctx.run_id, ctx.step));
        Ok(Undo {
            target: ctx.target.clone(),
            signal: self.signal,
            processes: chosen,
            deadman_tag,
            source,
        })
    }

    /// The matching processes, and how the pid was found when a file said it.
    fn select(&self) -> Result<(Vec<ProcRef>, Option<String>), FaultError> {
        let protected = protected_pids();
        let procs = list_processes();
        let re = self
            .pattern
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| FaultError::Precondition(e.to_string()))?;
        let (pid_wanted, source) = match (&self.pid, &self.pidfile) {
            (Some(p), _) => (Some(*p), None),
            (_, Some(f)) => {
                let pid = read_pidfile(f)?;
                (
                    Some(pid),
                    Some(format!("pid {pid} read from line 1 of {f}")),
                )
            }
            _ => (None, None),
        };
        let matched: Vec<ProcRef> = procs
            .into_iter()
            .filter(|p| !protected.contains(&p.pid))
            .filter(|p| match (&pid_wanted, &self.name, &re) {
                (Some(want), _, _) => p.pid == *want,
                (_, Some(n), _) => &p.comm == n,
                (_, _, Some(re)) => re.is_match(&cmdline(p.pid)),
                _ => false,
            })
            .collect();
        if matched.is_empty() {
            let why = if pid_wanted.is_some_and(|p| protected.contains(&p)) {
                " (it is the engine itself or one of its ancestors, which are never signalled)"
            } else {
                ""
            };
            return Err(FaultError::Precondition(format!(
                "no running process matches: {}{why}",
                self.describe()
            )));
        }
        Ok((matched, source))
    }

    pub(crate) async fn apply(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &Undo,
    ) -> Result<Effect, FaultError> {
        let deadman = match &undo.deadman_tag {
            Some(tag) => Some(spawn_deadman(tag, ctx.ttl, &undo.processes, ctx.runtime)?),
            None => None,
        };
        let mut sent = Vec::new();
        for p in &undo.processes {
            if !same_process(p) {
                continue; // exited between prepare and apply: nothing to signal
            }
            kill(Pid::from_raw(p.pid as i32), self.signal.nix()).map_err(|e| {
                FaultError::System(format!(
                    "cannot send SIG{} to pid {}: {e}",
                    self.signal.name(),
                    p.pid
                ))
            })?;
            sent.push(p.pid);
        }
        // Measure: every hit process must be gone (or stopped) within verify_timeout.
        let deadline = Instant::now() + self.verify_timeout.0;
        let mut remaining: Vec<&ProcRef> = undo.processes.iter().collect();
        loop {
            remaining.retain(|p| match self.signal {
                Signal::Stop => same_process(p) && proc_state(p.pid) != Some('T'),
                _ => alive(p),
            });
            if remaining.is_empty() || Instant::now() >= deadline || ctx.cancel.is_cancelled() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let pids: Vec<u32> = undo.processes.iter().map(|p| p.pid).collect();
        let as_declared = remaining.is_empty();
        let verb = if self.signal == Signal::Stop {
            "stopped"
        } else {
            "gone"
        };
        let mut measured = if as_declared {
            format!("{} process(es) {verb}: pids {pids:?}", pids.len())
        } else {
            let left: Vec<u32> = remaining.iter().map(|p| p.pid).collect();
            format!(
                "pids {left:?} still not {verb} after {}",
                self.verify_timeout
            )
        };
        if let Some(src) = &undo.source {
            measured = format!("{measured} ({src})");
        }
        if let Some((pid, placement)) = &deadman {
            measured = format!(
                "{measured}; dead-man watcher pid {pid} {}",
                placement.describe()
            );
        }
        Ok(Effect {
            declared: self.describe(),
            measured,
            as_declared,
            effective_after_ms: as_declared.then(|| ms_since(ctx.started)),
            details: serde_json::json!({ "signal": self.signal.name(), "pids": pids, "signalled": sent,
                "processes": undo.processes,
                "deadman": deadman.as_ref().map(|(pid, p)| serde_json::json!({
                    "pid": pid,
                    "cgroup": p.cgroup(),
                    "outside_engine_cgroup": matches!(p, Placement::Moved { .. }),
                    "placement": p.describe(),
                })) }),
        })
    }
}

impl Undo {
    pub(crate) fn is_reversible(&self) -> bool {
        self.signal == Signal::Stop
    }

    pub(crate) async fn revert(&self, ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
        let start = Instant::now();
        // The recorded target decides where CONT goes. Both kinds share this host's
        // pid namespace; a target on another host must send it there (no wildcard
        // arm, so a new kind has to say).
        match &self.target {
            Target::Local | Target::Netns { .. } => {}
        }
        if self.signal != Signal::Stop {
            return Ok(Reverted {
                measured: format!(
                    "SIG{} cannot be undone; nothing to revert",
                    self.signal.name()
                ),
                restored_after_ms: None,
                details: serde_json::Value::Null,
            });
        }
        let mut thawed = Vec::new();
        let mut errors = Vec::new();
        for p in &self.processes {
            if same_process(p) {
                match kill(Pid::from_raw(p.pid as i32), NixSignal::SIGCONT) {
                    Ok(()) => thawed.push(p.pid),
                    Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => errors.push(format!("pid {}: {e}", p.pid)),
                }
            }
        }
        if let Some(tag) = &self.deadman_tag {
            end_deadman(tag, ctx.runtime).await;
        }
        if !errors.is_empty() {
            return Err(FaultError::System(format!(
                "cannot send SIGCONT: {}",
                errors.join(", ")
            )));
        }
        // Confirm: none of our processes is still in state T.
        let deadline = Instant::now() + Duration::from_secs(if ctx.hurry { 0 } else { 2 });
        loop {
            let still: Vec<u32> = self
                .processes
                .iter()
                .filter(|p| same_process(p) && proc_state(p.pid) == Some('T'))
                .map(|p| p.pid)
                .collect();
            if still.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(FaultError::NotEffective(format!(
                    "pids {still:?} are still stopped after SIGCONT"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Reverted {
            measured: format!("SIGCONT sent to pids {thawed:?}; none is stopped"),
            restored_after_ms: Some(ms_since(start)),
            details: serde_json::json!({ "thawed": thawed }),
        })
    }
}

/// The pid in a pidfile: its first line, as PostgreSQL's `postmaster.pid`, nginx,
/// sshd and start-stop-daemon write it (later lines, when any, hold other data).
fn read_pidfile(path: &str) -> Result<u32, FaultError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FaultError::Precondition(format!("cannot read pidfile {path}: {e}")))?;
    let first = text.lines().next().unwrap_or("").trim();
    match first.parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(FaultError::Precondition(format!(
            "pidfile {path} line 1 holds `{first}`, expected a pid (the first line of a pidfile)"
        ))),
    }
}

/// The watcher's tag: run id, a readable form of the step name, and a hash of the
/// exact name. The readable form alone maps `db-1` and `db_1` to one tag, and the
/// revert of one step would end the other's watcher; step names are unique within
/// a run, so the hash keeps every step's tag apart. Only `[A-Za-z0-9_-]`, so the
/// tag is one word on the watcher's command line.
fn deadman_tag(run_id: &str, step: &str) -> String {
    use sha2::Digest;
    let readable: String = step
        .chars()
        .take(24)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let hash = sha2::Sha256::digest(step.as_bytes());
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{run_id}-{readable}-{hex}")
}

/// The engine and its ancestors: never signalled, whatever the selector says, so a
/// careless `pattern` cannot kill the drill (or the shell or CI job running it).
fn protected_pids() -> Vec<u32> {
    let mut out = vec![std::process::id()];
    let mut pid = std::process::id();
    while let Some(ppid) = read_stat(pid).map(|s| s.ppid) {
        if ppid == 0 || out.contains(&ppid) {
            break;
        }
        out.push(ppid);
        pid = ppid;
    }
    out
}

pub(crate) struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub start_time: u64,
}

/// Parses `/proc/PID/stat`. The name is in parentheses and may itself contain spaces
/// and parentheses, so fields are counted from the *last* `)`.
pub(crate) fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 2..].split(' ').collect();
    // rest[0] is field 3 (state); field 4 is ppid; field 22 is starttime.
    Some(Stat {
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

fn list_processes() -> Vec<ProcRef> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let s = read_stat(pid)?;
            // Zombies are already dead; kernel threads have no command line.
            (s.state != 'Z' && !cmdline(pid).is_empty()).then_some(ProcRef {
                pid,
                start_time: s.start_time,
                comm: s.comm,
            })
        })
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim_end()
                .to_string()
        })
        .unwrap_or_default()
}

fn proc_state(pid: u32) -> Option<char> {
    read_stat(pid).map(|s| s.state)
}

/// Same pid and same start time: the very process we selected.
fn same_process(p: &ProcRef) -> bool {
    read_stat(p.pid).is_some_and(|s| s.start_time == p.start_time)
}

/// Alive = the same process exists and is not a zombie (a zombie has exited; only its
/// parent has not collected the status yet).
fn alive(p: &ProcRef) -> bool {
    read_stat(p.pid)
        .is_some_and(|s| s.start_time == p.start_time && s.state != 'Z' && s.state != 'X')
}

/// Starts the dead-man watcher: a detached `firedrill __deadman` that sends CONT to
/// the frozen processes when the ttl runs out, unless a revert ends it first.
/// Returns its pid and where it lives: outside the engine's cgroup where the machine
/// allows it, so stopping the engine's unit or container does not end it too. It is
/// moved before any process is frozen.
fn spawn_deadman(
    tag: &str,
    ttl: Duration,
    procs: &[ProcRef],
    runtime: &crate::rt::Runtime,
) -> Result<(u32, Placement), FaultError> {
    use std::os::unix::process::CommandExt;
    let exe = crate::rt::self_exe().map_err(|e| {
        FaultError::System(format!(
            "cannot find the firedrill binary for the dead-man watcher: {e}"
        ))
    })?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__deadman")
        .arg("--tag")
        .arg(tag)
        .arg("--ttl-ms")
        .arg(ttl.as_millis().to_string());
    for p in procs {
        cmd.arg("--proc").arg(format!("{}:{}", p.pid, p.start_time));
    }
    // Its own session: Ctrl-C in the engine's terminal must not kill the watcher.
    cmd.process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = cmd
        .spawn()
        .map_err(|e| FaultError::System(format!("cannot start the dead-man watcher: {e}")))?;
    let pid = child.id();
    runtime.adopt(child);
    let placement = cgroup::move_out_of_engine_cgroup(pid);
    match &placement {
        Placement::Moved { .. } => {
            tracing::info!(pid, tag, "dead-man watcher {}", placement.describe())
        }
        Placement::Stayed { .. } => tracing::warn!(
            pid,
            tag,
            "dead-man watcher {}: stopping the engine's whole cgroup ends it too",
            placement.describe()
        ),
    }
    Ok((pid, placement))
}

/// Ends the dead-man watcher carrying `tag`, wherever it was started from.
async fn end_deadman(tag: &str, runtime: Option<&crate::rt::Runtime>) {
    let needle = format!("__deadman --tag {tag} ");
    let mut homes = Vec::new();
    for p in list_processes() {
        if cmdline(p.pid).contains(&needle) {
            homes.extend(cgroup::cgroup_of(p.pid));
            let _ = kill(Pid::from_raw(p.pid as i32), NixSignal::SIGKILL);
        }
    }
    if let Some(rt) = runtime {
        rt.reap().await;
    }
    // The watchers' cgroup goes when its last watcher has gone (the kernel refuses
    // while another drill's watcher lives there).
    for h in homes {
        cgroup::remove_if_empty(&h);
    }
}

/// Body of `firedrill __deadman`: sleep for the ttl, then CONT every listed process
/// that is still the same process and still stopped.
pub fn deadman_main(ttl: Duration, procs: &[(u32, u64)]) {
    std::thread::sleep(ttl);
    for &(pid, start) in procs {
        if read_stat(pid).is_some_and(|s| s.start_time == start && s.state == 'T') {
            let _ = kill(Pid::from_raw(pid as i32), NixSignal::SIGCONT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parses_names_with_spaces_and_parens() {
        let me = read_stat(std::process::id()).unwrap();
        assert!(me.start_time > 0);
        assert!(matches!(me.state, 'R' | 'S'), "{}", me.state);
    }

    #[test]
    fn protected_pids_include_self_and_parent() {
        let p = protected_pids();
        assert!(p.contains(&std::process::id()));
        assert!(p.len() >= 2);
    }

    /// A `sleep` child, killed and reaped on drop.
    struct Sleeper(std::process::Child);
    impl Sleeper {
        fn spawn() -> Self {
            Sleeper(
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap(),
            )
        }
    }
    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn postmaster_pid_shaped_pidfile_is_read_from_its_first_line() {
        let child = Sleeper::spawn();
        let pid = child.0.id();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("postmaster.pid");
        // PostgreSQL 16's layout: pid, data directory, start time, port, socket
        // directory, listen address, shared memory key, status.
        std::fs::write(
            &file,
            format!(
                "{pid}\n/var/lib/postgresql/16/main\n1712345678\n5432\n/var/run/postgresql\n*\n  5432001         0\nready   \n"
            ),
        )
        .unwrap();
        let f: ProcessKill = serde_yaml::from_str(&format!(
            "{{ pidfile: {}, signal: KILL, verify_timeout: 5s }}",
            file.display()
        ))
        .unwrap();
        let rt = crate::rt::Runtime::default();
        let ctx = FaultCtx {
            run_id: "r1",
            step: "kill postgres",
            target: &Target::Local,
            ttl: Duration::from_secs(10),
            started: Instant::now(),
            cancel: Default::default(),
            runtime: &rt,
        };
        let undo = f.prepare(&ctx).await.unwrap();
        assert_eq!(
            undo.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
            [pid]
        );
        let effect = f.apply(&ctx, &undo).await.unwrap();
        assert!(effect.as_declared, "{effect:?}");
        let source = format!("line 1 of {}", file.display());
        assert!(effect.measured.contains(&source), "{}", effect.measured);

        // A first line that is not a pid names the line it read.
        std::fs::write(&file, "\n{pid}\n").unwrap();
        let e = f.prepare(&ctx).await.unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("expected a pid"), "{e}");
    }

    #[test]
    fn deadman_tags_keep_similar_step_names_apart() {
        let (a, b) = (deadman_tag("r1", "db-1"), deadman_tag("r1", "db_1"));
        assert_ne!(a, b);
        assert!(a.starts_with("r1-db_1-"), "{a}");
        assert_eq!(
            a,
            deadman_tag("r1", "db-1"),
            "a revert from another process finds it"
        );
        let long = deadman_tag("r1", &"x y".repeat(100));
        assert!(long.len() < 48, "{long}");
        assert!(
            long.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
    }

    #[test]
    fn undo_record_round_trips_its_target() {
        let undo = Undo {
            target: Target::Netns { name: "app".into() },
            signal: Signal::Stop,
            processes: vec![],
            deadman_tag: Some("r1-x-0a0b0c0d0e0f".into()),
            source: None,
        };
        let v = serde_json::to_value(&undo).unwrap();
        assert_eq!(
            v["target"],
            serde_json::json!({ "type": "netns", "name": "app" })
        );
        assert_eq!(serde_json::from_value::<Undo>(v).unwrap(), undo);
        // A record from before the target was recorded: process_kill was local only.
        let old: Undo = serde_json::from_value(
            serde_json::json!({ "signal": "STOP", "processes": [], "deadman_tag": null }),
        )
        .unwrap();
        assert_eq!(old.target, Target::Local);
    }

    #[test]
    fn validation_requires_one_selector() {
        let f: ProcessKill = serde_yaml::from_str("{}").unwrap();
        assert_eq!(f.validate(&Target::Local).len(), 1);
        let f: ProcessKill = serde_yaml::from_str("{ name: a, pid: 3 }").unwrap();
        assert_eq!(f.validate(&Target::Local).len(), 1);
        let f: ProcessKill = serde_yaml::from_str("{ name: sleep }").unwrap();
        assert!(f.validate(&Target::Local).is_empty());
        assert_eq!(f.validate(&Target::Netns { name: "x".into() }).len(), 1);
    }
}
