//! `process_kill`: send TERM, KILL or STOP to processes on this host (via `nix`).
//!
//! Processes are chosen by pid, pidfile, exact name or a command-line regex, and are
//! recorded with their start time so that a recycled pid is never signalled by a
//! revert. `STOP` freezes a process; its undo is `CONT`, and a detached dead-man
//! watcher (`firedrill __deadman`) thaws it after the ttl even if the engine dies.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal as NixSignal, kill};
use nix::unistd::Pid;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Effect, FaultCtx, FaultError, RevertCtx, Reverted, ms_since};
use crate::duration::HumanDuration;
use crate::target::Target;

/// Parameters of `process_kill`. Exactly one of `pid`, `pidfile`, `name`, `pattern`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProcessKill {
    /// Select the process with this pid.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Select the process whose pid is written in this file.
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
    pub signal: Signal,
    pub processes: Vec<ProcRef>,
    /// Tag on the dead-man watcher's command line (STOP only), so any process can find and end it.
    pub deadman_tag: Option<String>,
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
        let mut chosen = self.select()?;
        chosen.sort_by_key(|p| (p.start_time, p.pid));
        if !self.all {
            chosen.truncate(self.count as usize);
        }
        let deadman_tag =
            (self.signal == Signal::Stop).then(|| format!("{}-{}", ctx.run_id, sanitize(ctx.step)));
        Ok(Undo {
            signal: self.signal,
            processes: chosen,
            deadman_tag,
        })
    }

    fn select(&self) -> Result<Vec<ProcRef>, FaultError> {
        let protected = protected_pids();
        let procs = list_processes();
        let re = self
            .pattern
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| FaultError::Precondition(e.to_string()))?;
        let pid_wanted = match (&self.pid, &self.pidfile) {
            (Some(p), _) => Some(*p),
            (_, Some(f)) => {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    FaultError::Precondition(format!("cannot read pidfile {f}: {e}"))
                })?;
                Some(text.trim().parse::<u32>().map_err(|_| {
                    FaultError::Precondition(format!(
                        "pidfile {f} holds `{}`, expected a pid",
                        text.trim()
                    ))
                })?)
            }
            _ => None,
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
        Ok(matched)
    }

    pub(crate) async fn apply(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &Undo,
    ) -> Result<Effect, FaultError> {
        if let Some(tag) = &undo.deadman_tag {
            spawn_deadman(tag, ctx.ttl, &undo.processes, ctx.runtime)?;
        }
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
        let measured = if as_declared {
            format!("{} process(es) {verb}: pids {pids:?}", pids.len())
        } else {
            let left: Vec<u32> = remaining.iter().map(|p| p.pid).collect();
            format!(
                "pids {left:?} still not {verb} after {}",
                self.verify_timeout
            )
        };
        Ok(Effect {
            declared: self.describe(),
            measured,
            as_declared,
            effective_after_ms: as_declared.then(|| ms_since(ctx.started)),
            details: serde_json::json!({ "signal": self.signal.name(), "pids": pids, "signalled": sent,
                "processes": undo.processes }),
        })
    }
}

impl Undo {
    pub(crate) fn is_reversible(&self) -> bool {
        self.signal == Signal::Stop
    }

    pub(crate) async fn revert(&self, ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
        let start = Instant::now();
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
            end_deadman(tag, ctx.runtime);
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

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
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
fn spawn_deadman(
    tag: &str,
    ttl: Duration,
    procs: &[ProcRef],
    runtime: &crate::rt::Runtime,
) -> Result<(), FaultError> {
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
    runtime.adopt(child);
    Ok(())
}

/// Ends the dead-man watcher carrying `tag`, wherever it was started from.
fn end_deadman(tag: &str, runtime: Option<&crate::rt::Runtime>) {
    let needle = format!("__deadman --tag {tag} ");
    for p in list_processes() {
        if cmdline(p.pid).contains(&needle) {
            let _ = kill(Pid::from_raw(p.pid as i32), NixSignal::SIGKILL);
        }
    }
    if let Some(rt) = runtime {
        rt.reap();
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
