//! `process_kill`: send TERM, KILL or STOP to processes of a target, or freeze, kill
//! or terminate a whole cgroup.
//!
//! Processes are chosen by pid, pidfile, exact name or a command-line regex among
//! the target's processes ([`Target::processes`]: on a `netns` target, only those in
//! that namespace), optionally with all their descendants (`tree`), or as the whole
//! content of a cgroup v2 directory (`cgroup`). They are recorded with their start
//! time so that a recycled pid is never signalled by a revert ([`Target::signal`]).
//! `STOP` freezes; its undo is `CONT` (or thawing the cgroup), and a detached
//! dead-man watcher (`firedrill __deadman`) does the same after the ttl even if the
//! engine dies, also with its whole cgroup (the watcher is moved out of it, see
//! [`crate::target::cgroup`]).
//!
//! Order within a tree: `STOP` goes deepest first (every child before its parent)
//! and `CONT` goes the other way (every parent before its children). Both keep one
//! invariant at every instant: no running process has a stopped parent in the tree.
//! So a worker never runs on behalf of a frozen master (answering a session,
//! replicating), and never sees its parent unresponsive (a parent-death pipe, a
//! heartbeat to the supervisor) and exits on its own. The price is that the parent
//! briefly sees its children stopped, as it would with any `STOP` of a child.
//! `TERM` and `KILL` go parents first, so a supervisor cannot replace a worker that
//! was just killed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal as NixSignal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Effect, FaultCtx, FaultError, RevertCtx, Reverted, ms_since};
use crate::duration::HumanDuration;
use crate::target::cgroup::{self, Placement};
use crate::target::{ProcInfo, Target, procs};

mod remote;

/// Parameters of `process_kill`. Exactly one of `pid`, `pidfile`, `name`, `pattern`,
/// `cgroup`.
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
    /// Select every process of this cgroup v2 directory (and of the cgroups below it): a path relative to the cgroup2 mount (`system.slice/postgresql.service`) or an absolute path inside it (`/sys/fs/cgroup/system.slice/postgresql.service`). `STOP` freezes the cgroup (`cgroup.freeze`, thawed by the revert or the dead-man watcher), `KILL` kills it whole (`cgroup.kill`), `TERM` signals every process in it. Not with `tree`, `count` or `all`: a cgroup is hit whole. On an ssh target the path is resolved on the host's own cgroup2 mount.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Also hit every descendant of each selected process (a server's workers with its main process). `STOP` freezes children before their parents and the revert thaws parents before their children, so no worker ever runs under a frozen parent; `TERM` and `KILL` hit parents first, so a supervisor cannot replace a killed worker.
    #[serde(default)]
    pub tree: bool,
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

impl From<&ProcInfo> for ProcRef {
    fn from(p: &ProcInfo) -> Self {
        ProcRef {
            pid: p.pid,
            start_time: p.start_time,
            comm: p.comm.clone(),
        }
    }
}

/// The undo record of `process_kill`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Undo {
    /// The target whose processes were signalled (records written before it was
    /// recorded were all `local`, the only target process_kill accepted then).
    #[serde(default = "local")]
    pub target: Target,
    pub signal: Signal,
    /// The processes hit, in the order they are signalled (the revert goes the
    /// other way). With `cgroup`, the processes the cgroup held when selected.
    pub processes: Vec<ProcRef>,
    /// Tag on the dead-man watcher's command line (STOP only), so any process can find and end it.
    pub deadman_tag: Option<String>,
    /// Where the pid came from when a file named it (`pid 42 read from line 1 of …`),
    /// so the record shows which line of a multi-line pidfile was trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The cgroup2 path (`/a/b`) hit whole, when `cgroup` selected it (on a remote
    /// host: its directory there, `/sys/fs/cgroup/a/b`): the revert thaws this
    /// cgroup rather than sending CONT to its processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

impl ProcessKill {
    pub(crate) fn validate(&self, target: &Target) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let selectors = [
            self.pid.is_some(),
            self.pidfile.is_some(),
            self.name.is_some(),
            self.pattern.is_some(),
            self.cgroup.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if selectors != 1 {
            errs.push((
                "with".into(),
                format!("found {selectors} process selectors, expected exactly one of pid, pidfile, name, pattern, cgroup"),
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
        if let Some(c) = &self.cgroup {
            // A remote host's mount is checked there, when the fault is prepared.
            let inside = if target.is_remote() {
                Ok(())
            } else {
                cgroup::check_inside_mount(c)
            };
            if let Err(e) = cgroup::check_spec(c).and(inside) {
                errs.push(("with.cgroup".into(), e));
            }
            if self.tree {
                errs.push((
                    "with.tree".into(),
                    "found `tree: true` with `cgroup`, expected one of them: a cgroup is hit whole, children included".into(),
                ));
            }
            if self.all || self.count != 1 {
                errs.push((
                    "with.count".into(),
                    "found `count` or `all` with `cgroup`, expected neither: a cgroup is hit whole"
                        .into(),
                ));
            }
        }
        // Every target kind of today lists its processes (no wildcard arm: a new
        // kind has to say whether it can).
        match target {
            Target::Local | Target::Netns { .. } => {}
            // Refused for every host fault by `FaultSpec::validate`.
            Target::Kubernetes(_) => {}
            // Processes and cgroups of a remote host are listed, signalled, frozen
            // and killed there (see [`remote`]; a group fans out to its hosts).
            Target::Ssh(_) | Target::Group(_) => {}
        }
        errs
    }

    pub(crate) fn describe(&self) -> String {
        let effect = match self.signal {
            Signal::Stop => "frozen until revert",
            _ => "gone",
        };
        if let Some(c) = &self.cgroup {
            let how = match self.signal {
                Signal::Stop => "freeze (cgroup.freeze)".to_string(),
                Signal::Kill => "SIGKILL (cgroup.kill)".to_string(),
                Signal::Term => "SIGTERM to every process".to_string(),
            };
            return format!("{how} of cgroup {c}; expected {effect}");
        }
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
        let tree = if self.tree {
            " and all their descendants"
        } else {
            ""
        };
        format!(
            "SIG{} to {how_many} of {who}{tree}; expected {effect}",
            self.signal.name()
        )
    }

    pub(crate) async fn prepare(&self, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
        if ctx.target.is_remote() {
            return remote::prepare(self, ctx).await;
        }
        let deadman_tag = (self.signal == Signal::Stop).then(|| deadman_tag(ctx.run_id, ctx.step));
        if let Some(spec) = &self.cgroup {
            let (cg, processes) = self.select_cgroup(spec, ctx.target)?;
            return Ok(Undo {
                target: ctx.target.clone(),
                signal: self.signal,
                processes,
                deadman_tag,
                source: None,
                cgroup: Some(cg.path),
            });
        }
        let (all, mut chosen, source) = self.select(ctx.target)?;
        chosen.sort_by_key(|p| (p.start_time, p.pid));
        if !self.all {
            chosen.truncate(self.count as usize);
        }
        if self.tree {
            let protected = protected_pids();
            chosen = procs::tree_deepest_first(&all, &chosen);
            chosen.retain(|p| !protected.contains(&p.pid));
            if self.signal != Signal::Stop {
                chosen.reverse(); // parents first, see the module doc
            }
        }
        Ok(Undo {
            target: ctx.target.clone(),
            signal: self.signal,
            processes: chosen.iter().map(ProcRef::from).collect(),
            deadman_tag,
            source,
            cgroup: None,
        })
    }

    /// The target's processes, the matching ones, and how the pid was found when a
    /// file said it.
    #[allow(clippy::type_complexity)]
    fn select(
        &self,
        target: &Target,
    ) -> Result<(Vec<ProcInfo>, Vec<ProcInfo>, Option<String>), FaultError> {
        let protected = protected_pids();
        let procs = target.processes().map_err(|e| {
            FaultError::Precondition(format!(
                "cannot list the processes of target {}: {e}",
                target.describe()
            ))
        })?;
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
        let matched = self.pick(&procs, pid_wanted, &protected, target)?;
        Ok((procs, matched, source))
    }

    /// The processes of `procs` the selection names (`pid_wanted` is the pid given
    /// or read from the pidfile), never one of `protected`.
    pub(super) fn pick(
        &self,
        procs: &[ProcInfo],
        pid_wanted: Option<u32>,
        protected: &[u32],
        target: &Target,
    ) -> Result<Vec<ProcInfo>, FaultError> {
        let re = self
            .pattern
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| FaultError::Precondition(e.to_string()))?;
        let matched: Vec<ProcInfo> = procs
            .iter()
            .filter(|p| !protected.contains(&p.pid))
            .filter(|p| match (&pid_wanted, &self.name, &re) {
                (Some(want), _, _) => p.pid == *want,
                (_, Some(n), _) => &p.comm == n,
                (_, _, Some(re)) => re.is_match(&p.cmdline),
                _ => false,
            })
            .cloned()
            .collect();
        if matched.is_empty() {
            let why = if pid_wanted.is_some_and(|p| protected.contains(&p)) {
                " (it is the engine itself or one of its ancestors, which are never signalled)"
                    .to_string()
            } else if let Target::Netns { name } = target {
                format!(" in network namespace `{name}`")
            } else {
                String::new()
            };
            return Err(FaultError::Precondition(format!(
                "no running process matches: {}{why}",
                self.describe()
            )));
        }
        Ok(matched)
    }

    /// The cgroup named by `spec` and the processes it holds. Refused when the engine
    /// lives in it (freezing or killing it would end the drill and its revert) and,
    /// on a `netns` target, when it holds a process outside that namespace.
    fn select_cgroup(
        &self,
        spec: &str,
        target: &Target,
    ) -> Result<(cgroup::Cgroup, Vec<ProcRef>), FaultError> {
        let cg = cgroup::resolve(spec).map_err(FaultError::Precondition)?;
        if let Some(mine) = cgroup::cgroup_of(std::process::id())
            && cgroup::contains(&cg.path, &mine)
        {
            return Err(FaultError::Precondition(format!(
                "cgroup {} holds the engine itself (in {mine}); it is never frozen or killed",
                cg.path
            )));
        }
        let pids = cgroup::pids(&cg.dir).map_err(|e| {
            FaultError::System(format!(
                "cannot read the processes of cgroup {}: {e}",
                cg.path
            ))
        })?;
        let members: Vec<ProcInfo> = pids.iter().filter_map(|&p| procs::info(p)).collect();
        if members.is_empty() {
            return Err(FaultError::Precondition(format!(
                "no running process matches: cgroup {} holds no process",
                cg.path
            )));
        }
        let on_target = target.processes().map_err(|e| {
            FaultError::Precondition(format!(
                "cannot list the processes of target {}: {e}",
                target.describe()
            ))
        })?;
        let outside: Vec<u32> = members
            .iter()
            .filter(|m| !on_target.iter().any(|t| t.pid == m.pid))
            .map(|m| m.pid)
            .collect();
        if !outside.is_empty() {
            return Err(FaultError::Precondition(format!(
                "cgroup {} holds pids {outside:?}, which are not processes of target {}",
                cg.path,
                target.describe()
            )));
        }
        Ok((cg, members.iter().map(ProcRef::from).collect()))
    }

    pub(crate) async fn apply(
        &self,
        ctx: &FaultCtx<'_>,
        undo: &Undo,
    ) -> Result<Effect, FaultError> {
        if ctx.target.is_remote() {
            return remote::apply(self, ctx, undo).await;
        }
        let cg_dir = match &undo.cgroup {
            Some(path) => Some(cgroup::dir_of(path).ok_or_else(|| {
                FaultError::Precondition(format!(
                    "cgroup {path} is not on this host's cgroup2 mount"
                ))
            })?),
            None => None,
        };
        let deadman = match &undo.deadman_tag {
            Some(tag) => {
                let (pid, placement) =
                    spawn_deadman(tag, ctx.ttl, undo, cg_dir.as_deref(), ctx.runtime)?;
                // A watcher inside the cgroup it must thaw would freeze with it.
                if let (Some(cg), Some(home)) = (&undo.cgroup, placement.cgroup())
                    && cgroup::contains(cg, home)
                {
                    end_deadman(tag, Some(ctx.runtime)).await;
                    return Err(FaultError::Precondition(format!(
                        "the dead-man watcher lives in {home}, inside cgroup {cg}; freezing it would freeze the watcher too"
                    )));
                }
                Some((pid, placement))
            }
            None => None,
        };
        let mut sent = Vec::new();
        match (&cg_dir, self.signal) {
            (Some(dir), Signal::Stop) => cgroup::set_frozen(dir, true).map_err(|e| {
                FaultError::System(format!("cannot freeze cgroup {}: {e}", dir.display()))
            })?,
            (Some(dir), Signal::Kill) => cgroup::kill_all(dir).map_err(|e| {
                FaultError::System(format!(
                    "cannot kill cgroup {} through cgroup.kill (Linux 5.14 or later): {e}",
                    dir.display()
                ))
            })?,
            _ => {
                for p in &undo.processes {
                    // false: exited between prepare and apply, nothing to signal.
                    if ctx
                        .target
                        .signal(p.pid, p.start_time, self.signal.nix())
                        .map_err(|e| {
                            FaultError::System(format!(
                                "cannot send SIG{} to pid {}: {e}",
                                self.signal.name(),
                                p.pid
                            ))
                        })?
                    {
                        sent.push(p.pid);
                    }
                }
            }
        }
        // Measure: every hit process gone (or stopped), or the cgroup frozen (or
        // empty), within verify_timeout.
        let deadline = Instant::now() + self.verify_timeout.0;
        let mut remaining: Vec<&ProcRef> = undo.processes.iter().collect();
        let mut cg_state = None;
        settle(deadline, Some(&ctx.cancel), || {
            match (&cg_dir, self.signal) {
                (Some(dir), Signal::Stop | Signal::Kill) => {
                    cg_state = cgroup::events(dir).ok();
                    cg_state.is_some_and(|e| match self.signal {
                        Signal::Stop => e.frozen,
                        _ => !e.populated,
                    })
                }
                _ => {
                    remaining.retain(|p| match self.signal {
                        Signal::Stop => {
                            procs::state_of(p.pid, p.start_time).is_some_and(|s| s != 'T')
                        }
                        _ => procs::alive(p.pid, p.start_time),
                    });
                    remaining.is_empty()
                }
            }
        })
        .await;
        // A parent still running while its children were stopped may have forked a
        // child the record does not hold: it runs, so the tree is not all frozen.
        let unrecorded = if self.tree && self.signal == Signal::Stop {
            born_since(ctx.target, &undo.processes)
        } else {
            Vec::new()
        };
        let pids: Vec<u32> = undo.processes.iter().map(|p| p.pid).collect();
        let (as_declared, mut measured) = match (&undo.cgroup, &cg_dir, self.signal) {
            (Some(cg), Some(_), Signal::Stop) => {
                let frozen = cg_state.is_some_and(|e| e.frozen);
                let m = if frozen {
                    format!(
                        "cgroup {cg} frozen (cgroup.events frozen 1), {} process(es): pids {pids:?}",
                        pids.len()
                    )
                } else {
                    format!("cgroup {cg} still not frozen after {}", self.verify_timeout)
                };
                (frozen, m)
            }
            (Some(cg), Some(_), Signal::Kill) => {
                let empty = cg_state.is_some_and(|e| !e.populated);
                let m = if empty {
                    format!(
                        "cgroup {cg} killed and empty (cgroup.events populated 0); it held pids {pids:?}"
                    )
                } else {
                    format!(
                        "cgroup {cg} still holds processes after {}",
                        self.verify_timeout
                    )
                };
                (empty, m)
            }
            _ => {
                let verb = if self.signal == Signal::Stop {
                    "stopped"
                } else {
                    "gone"
                };
                let m = if remaining.is_empty() {
                    format!("{} process(es) {verb}: pids {pids:?}", pids.len())
                } else {
                    let left: Vec<u32> = remaining.iter().map(|p| p.pid).collect();
                    format!(
                        "pids {left:?} still not {verb} after {}",
                        self.verify_timeout
                    )
                };
                (remaining.is_empty(), m)
            }
        };
        let as_declared = as_declared && unrecorded.is_empty();
        if !unrecorded.is_empty() {
            measured = format!(
                "{measured}; but descendants {unrecorded:?} were born after the selection and are not frozen"
            );
        }
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
                "cgroup": undo.cgroup,
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

    /// Whether the STOP still holds, as far as this host can see: a frozen cgroup, or
    /// one of the recorded processes still stopped. None when it cannot be told from
    /// here (another kind of signal, or processes on another host).
    pub(crate) fn still_in_effect(&self) -> Option<bool> {
        if self.signal != Signal::Stop || !matches!(self.target, Target::Local) {
            return None;
        }
        if let Some(cg) = &self.cgroup {
            return Some(
                cgroup::dir_of(cg).is_some_and(|d| cgroup::events(&d).is_ok_and(|e| e.frozen)),
            );
        }
        Some(
            self.processes
                .iter()
                .any(|p| procs::state_of(p.pid, p.start_time) == Some('T')),
        )
    }

    pub(crate) async fn revert(&self, ctx: &RevertCtx<'_>) -> Result<Reverted, FaultError> {
        if self.target.is_remote() {
            return remote::revert(self).await;
        }
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
        if let Some(cg) = &self.cgroup {
            return self.thaw_cgroup(cg, ctx, start).await;
        }
        // CONT in the reverse order of STOP: parents before their children.
        let mut thawed = Vec::new();
        let mut errors = Vec::new();
        for p in self.processes.iter().rev() {
            // The recorded target sends it: a pid recycled since is never hit.
            match self.target.signal(p.pid, p.start_time, NixSignal::SIGCONT) {
                Ok(true) => thawed.push(p.pid),
                Ok(false) => {}
                Err(e) => errors.push(format!("pid {}: {e}", p.pid)),
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
        let still = || -> Vec<u32> {
            self.processes
                .iter()
                .filter(|p| procs::state_of(p.pid, p.start_time) == Some('T'))
                .map(|p| p.pid)
                .collect()
        };
        if !settle(revert_deadline(ctx), None, || still().is_empty()).await {
            return Err(FaultError::NotEffective(format!(
                "pids {:?} are still stopped after SIGCONT",
                still()
            )));
        }
        Ok(Reverted {
            measured: format!("SIGCONT sent to pids {thawed:?}; none is stopped"),
            restored_after_ms: Some(ms_since(start)),
            details: serde_json::json!({ "thawed": thawed }),
        })
    }

    /// Thaws the frozen cgroup `cg` (idempotent: thawing a thawed cgroup changes
    /// nothing, and a cgroup removed since has nothing left to thaw).
    async fn thaw_cgroup(
        &self,
        cg: &str,
        ctx: &RevertCtx<'_>,
        start: Instant,
    ) -> Result<Reverted, FaultError> {
        let dir = cgroup::dir_of(cg).filter(|d| d.join("cgroup.freeze").exists());
        let result = match &dir {
            None => Ok(()),
            Some(d) => cgroup::set_frozen(d, false),
        };
        if let Some(tag) = &self.deadman_tag {
            end_deadman(tag, ctx.runtime).await;
        }
        let Some(dir) = dir else {
            return Ok(Reverted {
                measured: format!("cgroup {cg} no longer exists; nothing to thaw"),
                restored_after_ms: Some(ms_since(start)),
                details: serde_json::json!({ "cgroup": cg }),
            });
        };
        result.map_err(|e| FaultError::System(format!("cannot thaw cgroup {cg}: {e}")))?;
        // Thawed, or removed meanwhile.
        let thawed = || !cgroup::events(&dir).is_ok_and(|e| e.frozen);
        if !settle(revert_deadline(ctx), None, thawed).await {
            return Err(FaultError::NotEffective(format!(
                "cgroup {cg} is still frozen after writing 0 to cgroup.freeze"
            )));
        }
        Ok(Reverted {
            measured: format!("cgroup {cg} thawed (cgroup.events frozen 0)"),
            restored_after_ms: Some(ms_since(start)),
            details: serde_json::json!({ "cgroup": cg }),
        })
    }
}

/// Polls `done` every 5 ms until it holds, `deadline` passes or `cancel` fires;
/// returns whether it held.
async fn settle(
    deadline: Instant,
    cancel: Option<&tokio_util::sync::CancellationToken>,
    mut done: impl FnMut() -> bool,
) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline || cancel.is_some_and(|c| c.is_cancelled()) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long a revert waits to see its effect: 2 s, none on a second Ctrl-C.
fn revert_deadline(ctx: &RevertCtx<'_>) -> Instant {
    Instant::now() + Duration::from_secs(if ctx.hurry { 0 } else { 2 })
}

/// Descendants of the recorded processes that the record does not hold (born
/// after the selection), still running.
fn born_since(target: &Target, recorded: &[ProcRef]) -> Vec<u32> {
    let Ok(all) = target.processes() else {
        return Vec::new();
    };
    let known: Vec<ProcInfo> = all
        .iter()
        .filter(|p| {
            recorded
                .iter()
                .any(|r| r.pid == p.pid && r.start_time == p.start_time)
        })
        .cloned()
        .collect();
    procs::tree_deepest_first(&all, &known)
        .into_iter()
        .filter(|p| !recorded.iter().any(|r| r.pid == p.pid) && p.state != 'T')
        .map(|p| p.pid)
        .collect()
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
    format!("{run_id}-{}", super::step_tag(step))
}

/// The engine and its ancestors: never signalled, whatever the selector says, so a
/// careless `pattern` cannot kill the drill (or the shell or CI job running it).
fn protected_pids() -> Vec<u32> {
    let mut out = vec![std::process::id()];
    let mut pid = std::process::id();
    while let Some(ppid) = procs::read_stat(pid).map(|s| s.ppid) {
        if ppid == 0 || out.contains(&ppid) {
            break;
        }
        out.push(ppid);
        pid = ppid;
    }
    out
}

/// Starts the dead-man watcher: a detached `firedrill __deadman` that, when the ttl
/// runs out unless a revert ends it first, thaws the frozen cgroup or sends CONT to
/// the frozen processes (parents first: the reverse of the STOP order).
/// Returns its pid and where it lives: outside the engine's cgroup where the machine
/// allows it, so stopping the engine's unit or container does not end it too. It is
/// moved before anything is frozen.
fn spawn_deadman(
    tag: &str,
    ttl: Duration,
    undo: &Undo,
    cg_dir: Option<&std::path::Path>,
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
    match cg_dir {
        // The cgroup's processes were frozen, not SIGSTOPped: CONT is not theirs.
        Some(dir) => {
            cmd.arg("--thaw-cgroup").arg(dir);
        }
        None => {
            for p in undo.processes.iter().rev() {
                cmd.arg("--proc").arg(format!("{}:{}", p.pid, p.start_time));
            }
        }
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

/// Ends the dead-man watcher carrying `tag`, wherever it was started from (also
/// the watcher of `scale`).
pub(crate) async fn end_deadman(tag: &str, runtime: Option<&crate::rt::Runtime>) {
    let needle = format!("__deadman --tag {tag} ");
    let mut homes = Vec::new();
    for p in procs::list().unwrap_or_default() {
        if p.cmdline.contains(&needle) {
            homes.extend(p.cgroup.clone());
            let _ = procs::signal(p.pid, p.start_time, NixSignal::SIGKILL);
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

/// Body of `firedrill __deadman`: sleep for the ttl, then thaw every listed cgroup
/// and CONT every listed process (in the order given) that is still the same
/// process and still stopped.
pub fn deadman_main(ttl: Duration, frozen: &[(u32, u64)], thaw_cgroups: &[PathBuf]) {
    std::thread::sleep(ttl);
    for dir in thaw_cgroups {
        // Idempotent: 0 on a thawed cgroup changes nothing.
        let _ = cgroup::set_frozen(dir, false);
    }
    for &(pid, start) in frozen {
        if procs::state_of(pid, start) == Some('T') {
            let _ = procs::signal(pid, start, NixSignal::SIGCONT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            cgroup: Some("/fdtest/db".into()),
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
        let f: ProcessKill = serde_yaml::from_str("{ cgroup: db.service, pid: 3 }").unwrap();
        assert_eq!(f.validate(&Target::Local).len(), 1);
    }

    #[test]
    fn process_kill_on_a_netns_target_validates() {
        let f: ProcessKill = serde_yaml::from_str("{ name: sleep, tree: true }").unwrap();
        assert!(f.validate(&Target::Netns { name: "x".into() }).is_empty());
    }

    #[test]
    fn a_cgroup_is_hit_whole_and_stays_inside_the_hierarchy() {
        let errs = |y: &str| {
            serde_yaml::from_str::<ProcessKill>(y)
                .unwrap()
                .validate(&Target::Local)
                .into_iter()
                .map(|(path, msg)| format!("{path}: {msg}"))
                .collect::<Vec<_>>()
        };
        assert!(errs("{ cgroup: system.slice/db.service, signal: STOP }").is_empty());
        let e = errs("{ cgroup: ../../etc }");
        assert!(
            e.len() == 1 && e[0].starts_with("with.cgroup:") && e[0].contains(".."),
            "{e:?}"
        );
        let e = errs("{ cgroup: /etc/x }");
        assert!(e.len() == 1 && e[0].contains("cgroup2 mount"), "{e:?}");
        let e = errs("{ cgroup: db, tree: true }");
        assert!(e.len() == 1 && e[0].starts_with("with.tree:"), "{e:?}");
        let e = errs("{ cgroup: db, all: true }");
        assert!(e.len() == 1 && e[0].starts_with("with.count:"), "{e:?}");
    }
}
