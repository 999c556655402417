//! `process_kill` on a remote host (a target this host's kernel cannot reach).
//!
//! The same selection (pid, pidfile, name, pattern, count, all, tree) and signals
//! (`TERM`, `KILL`, `STOP` reverted by `CONT`) as on this host, with the host's
//! `/proc` read and its processes signalled by one `bash` script run there
//! ([`PROCS`]: `bash` builtins only, no process per pid). A process is still named
//! by pid *and* start time; the start time is checked just before `kill`, so a
//! recycled pid is only hit if it was recycled within that instant (this host
//! closes even that gap with a pidfd, which no shell offers).
//!
//! A `STOP` arms a dead-man **on the host** before it is sent (the `command`
//! fault's watcher: a `systemd-run` timer or a detached `setsid` shell) that sends
//! `CONT` at the ttl, even if the engine dies or loses the host; the revert
//! cancels it, or finds that it already fired.
//!
//! `cgroup` is resolved on the host (its cgroup2 mount, from the host's
//! `/proc/mounts`): `STOP` writes `cgroup.freeze` (the dead-man and the revert write
//! it back), `KILL` writes `cgroup.kill`, `TERM` signals every member. A cgroup that
//! holds the engine's own SSH session on the host is refused (freezing or killing
//! it would take the revert's way in with it), and so is freezing `system.slice`,
//! where the host's `systemd-run` dead-man would start.

use std::time::{Duration, Instant};

use super::{ProcRef, ProcessKill, Signal, Undo, deadman_tag};
use crate::fault::command::{self, Outcome};
use crate::fault::{Effect, FaultCtx, FaultError, Reverted, ms_since};
use crate::target::procs::{self, ProcInfo};
use crate::target::{Cmd, Target};

/// `list`: one line per live process, its `stat` line, a tab, its command line.
/// `signal SIG PID START...`: `sent PID` or `gone PID` per process, in order.
/// `state PID START...`: `PID STATE`, or `PID -` when gone (or recycled).
const PROCS: &str = r#"mode=$1; shift
case $mode in
list)
  for d in /proc/[0-9]*; do
    { IFS= read -r st < "$d/stat"; } 2>/dev/null || continue
    c=""
    { while IFS= read -r -d '' a; do c+="$a "; done < "$d/cmdline"; } 2>/dev/null
    c=${c//$'\n'/ }; c=${c//$'\t'/ }
    printf '%s\t%s\n' "$st" "$c"
  done ;;
signal)
  sig=$1; shift
  while [ $# -ge 2 ]; do p=$1; t=$2; shift 2
    { IFS= read -r st < "/proc/$p/stat"; } 2>/dev/null || { echo "gone $p"; continue; }
    f=(${st##*") "})
    if [ "${f[19]}" = "$t" ] && kill -s "$sig" "$p" 2>/dev/null; then echo "sent $p"; else echo "gone $p"; fi
  done ;;
state)
  while [ $# -ge 2 ]; do p=$1; t=$2; shift 2
    { IFS= read -r st < "/proc/$p/stat"; } 2>/dev/null || { echo "$p -"; continue; }
    f=(${st##*") "})
    if [ "${f[19]}" = "$t" ]; then echo "$p ${f[0]}"; else echo "$p -"; fi
  done ;;
cgroup)
  m=""
  while read -r _ mnt type _; do [ "$type" = cgroup2 ] && { m=$mnt; break; }; done < /proc/mounts
  [ -n "$m" ] || { echo "no cgroup2 hierarchy is mounted on this host" >&2; exit 3; }
  s=${1%/}
  case $s in
    /*) case $s/ in "$m"/?*) d=$s ;; *) echo "cgroup \`$1\` is not inside the cgroup2 mount at $m (nor below it); give a path inside it or one relative to it" >&2; exit 3 ;; esac ;;
    *) d=$m/$s ;;
  esac
  [ -e "$d/cgroup.procs" ] || { echo "cgroup $d does not exist" >&2; exit 3; }
  me=""
  while IFS= read -r l; do case $l in 0::*) me=${l#0::} ;; esac; done < /proc/self/cgroup
  echo "dir $d"; echo "rel ${d#"$m"/}"; echo "self $me"
  shopt -s globstar nullglob
  for c in "$d"/**/cgroup.procs; do
    while IFS= read -r p; do
      { IFS= read -r st < "/proc/$p/stat"; } 2>/dev/null || continue
      f=(${st##*") "}); echo "proc $p ${f[19]}"
    done < "$c"
  done ;;
freeze) echo "$2" > "$1/cgroup.freeze" ;;
cgkill) echo 1 > "$1/cgroup.kill" ;;
events) while read -r k v; do echo "$k $v"; done < "$1/cgroup.events" ;;
esac
"#;

fn procs_cmd(mode: &str, args: &[String]) -> Cmd {
    Cmd::new("bash")
        .args(["-c", PROCS, "firedrill-procs", mode])
        .args(args.iter().cloned())
        .timeout(Duration::from_secs(30))
}

fn pairs(ps: &[ProcRef]) -> Vec<String> {
    ps.iter()
        .flat_map(|p| [p.pid.to_string(), p.start_time.to_string()])
        .collect()
}

/// The host's live user processes (no zombies, no kernel threads).
pub(crate) async fn list(target: &Target) -> Result<Vec<ProcInfo>, FaultError> {
    let out = target.run(&procs_cmd("list", &[])).await.map_err(|e| {
        FaultError::Precondition(format!(
            "cannot list the processes of target {}: {e}",
            target.describe()
        ))
    })?;
    if !out.success() {
        return Err(FaultError::Precondition(format!(
            "cannot list the processes of target {}: {}",
            target.describe(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_line)
        .collect())
}

fn parse_line(line: &str) -> Option<ProcInfo> {
    // The command line holds no tab (the script made them spaces); the name may.
    let tab = line.rfind('\t')?;
    let stat = &line[..tab];
    let pid: u32 = stat.split(' ').next()?.parse().ok()?;
    let s = procs::parse_stat(stat)?;
    if s.state == 'Z' || s.state == 'X' || s.flags & procs::PF_KTHREAD != 0 {
        return None;
    }
    Some(ProcInfo {
        pid,
        start_time: s.start_time,
        state: s.state,
        comm: s.comm,
        cmdline: line[tab + 1..].trim_end().to_string(),
        ppid: s.ppid,
        netns: None,
        cgroup: None,
    })
}

async fn read_pidfile(target: &Target, path: &str) -> Result<u32, FaultError> {
    let out = target
        .run(
            &Cmd::new("head")
                .args(["-n", "1", "--", path])
                .timeout(Duration::from_secs(30)),
        )
        .await
        .map_err(|e| FaultError::Precondition(format!("cannot read pidfile {path}: {e}")))?;
    if !out.success() {
        return Err(FaultError::Precondition(format!(
            "cannot read pidfile {path} on {}: {}",
            target.describe(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.trim();
    match first.parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(FaultError::Precondition(format!(
            "pidfile {path} line 1 holds `{first}`, expected a pid (the first line of a pidfile)"
        ))),
    }
}

/// The shell line the dead-man runs (and the revert): the cgroup thawed, or `CONT`
/// to the processes, parents before their children, each only if it is still the
/// one recorded.
fn cont_line(undo: &Undo) -> String {
    let mut words = vec![
        "bash".to_string(),
        "-c".into(),
        PROCS.into(),
        "firedrill-procs".into(),
    ];
    match &undo.cgroup {
        Some(dir) => words.extend(["freeze".to_string(), dir.clone(), "0".into()]),
        None => {
            let mut rev: Vec<ProcRef> = undo.processes.clone();
            rev.reverse();
            words.extend(["signal".to_string(), "CONT".into()]);
            words.extend(pairs(&rev));
        }
    }
    words
        .iter()
        .map(|w| crate::target::ssh::quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A cgroup on the host: its directory there and its members.
struct HostCgroup {
    dir: String,
    members: Vec<ProcRef>,
}

/// Resolves `spec` on the host and lists its members (the cgroups below it
/// included). Refused: a cgroup holding this SSH session, and freezing
/// `system.slice` (see the module doc).
async fn host_cgroup(f: &ProcessKill, t: &Target, spec: &str) -> Result<HostCgroup, FaultError> {
    let out = t
        .run(&procs_cmd("cgroup", &[spec.to_string()]))
        .await
        .map_err(|e| {
            FaultError::Precondition(format!(
                "cannot read cgroup {spec} on {}: {e}",
                t.describe()
            ))
        })?;
    if !out.success() {
        return Err(FaultError::Precondition(format!(
            "cgroup {spec} on {}: {}",
            t.describe(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
            .unwrap_or("")
            .to_string()
    };
    let (dir, rel, me) = (field("dir"), field("rel"), field("self"));
    let rel_abs = format!("/{}", rel.trim_matches('/'));
    if me == rel_abs || me.starts_with(&format!("{rel_abs}/")) {
        return Err(FaultError::Precondition(format!(
            "cgroup {dir} on {} holds the engine's own SSH session (in {me}); it is never frozen, killed or signalled whole",
            t.describe()
        )));
    }
    if f.signal == Signal::Stop && rel.trim_matches('/') == "system.slice" {
        return Err(FaultError::Precondition(format!(
            "freezing {dir} on {} would freeze the host's dead-man too (systemd-run starts it in system.slice); name the service's own cgroup",
            t.describe()
        )));
    }
    let listed: Vec<(u32, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("proc ")?.split(' ');
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect();
    let all = list(t).await?;
    let members: Vec<ProcRef> = all
        .iter()
        .filter(|p| listed.contains(&(p.pid, p.start_time)))
        .map(ProcRef::from)
        .collect();
    if members.is_empty() {
        return Err(FaultError::Precondition(format!(
            "no running process matches: cgroup {dir} on {} holds no process",
            t.describe()
        )));
    }
    Ok(HostCgroup { dir, members })
}

pub(crate) async fn prepare(f: &ProcessKill, ctx: &FaultCtx<'_>) -> Result<Undo, FaultError> {
    let t = ctx.target;
    if let Some(spec) = &f.cgroup {
        let cg = host_cgroup(f, t, spec).await?;
        return Ok(Undo {
            target: t.clone(),
            signal: f.signal,
            processes: cg.members,
            deadman_tag: (f.signal == Signal::Stop).then(|| deadman_tag(ctx.run_id, ctx.step)),
            source: None,
            cgroup: Some(cg.dir),
        });
    }
    let all = list(t).await?;
    let (pid_wanted, source) = match (&f.pid, &f.pidfile) {
        (Some(p), _) => (Some(*p), None),
        (_, Some(file)) => {
            let pid = read_pidfile(t, file).await?;
            (
                Some(pid),
                Some(format!(
                    "pid {pid} read from line 1 of {file} on {}",
                    t.describe()
                )),
            )
        }
        _ => (None, None),
    };
    // The engine is not on that host: nothing of the host is protected but pid 1.
    let mut chosen = f.pick(&all, pid_wanted, &[1], t)?;
    chosen.sort_by_key(|p| (p.start_time, p.pid));
    if !f.all {
        chosen.truncate(f.count as usize);
    }
    if f.tree {
        chosen = procs::tree_deepest_first(&all, &chosen);
        chosen.retain(|p| p.pid != 1);
        if f.signal != Signal::Stop {
            chosen.reverse();
        }
    }
    Ok(Undo {
        target: t.clone(),
        signal: f.signal,
        processes: chosen.iter().map(ProcRef::from).collect(),
        deadman_tag: (f.signal == Signal::Stop).then(|| deadman_tag(ctx.run_id, ctx.step)),
        source,
        cgroup: None,
    })
}

/// `(pid, state)` of each recorded process; `None` when gone (or recycled).
async fn states(target: &Target, ps: &[ProcRef]) -> Result<Vec<(u32, Option<char>)>, String> {
    let out = target
        .run(&procs_cmd("state", &pairs(ps)))
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (p, s) = l.split_once(' ')?;
            Some((p.parse().ok()?, s.chars().next().filter(|c| *c != '-')))
        })
        .collect())
}

pub(crate) async fn apply(
    f: &ProcessKill,
    ctx: &FaultCtx<'_>,
    undo: &Undo,
) -> Result<Effect, FaultError> {
    let t = ctx.target;
    let armed = match &undo.deadman_tag {
        Some(tag) => Some(
            command::arm(
                t,
                tag,
                ctx.ttl.as_secs().max(1),
                &cont_line(undo),
                Duration::from_secs(30),
            )
            .await?,
        ),
        None => None,
    };
    if let Some(dir) = &undo.cgroup
        && f.signal != Signal::Term
    {
        return apply_cgroup(f, ctx, undo, dir, armed).await;
    }
    let out = t
        .run(&procs_cmd(
            "signal",
            &[vec![f.signal.name().to_string()], pairs(&undo.processes)].concat(),
        ))
        .await
        .map_err(|e| FaultError::System(format!("cannot send SIG{}: {e}", f.signal.name())))?;
    let sent: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("sent ")?.parse().ok())
        .collect();
    // Measure: every hit process gone (or stopped) within verify_timeout.
    let deadline = Instant::now() + f.verify_timeout.0;
    let mut left: Vec<u32>;
    loop {
        let now = states(t, &undo.processes).await.unwrap_or_default();
        left = now
            .iter()
            .filter(|(_, s)| match f.signal {
                Signal::Stop => s.is_some_and(|c| c != 'T'),
                // A zombie is dead: only its parent's wait is missing.
                _ => s.is_some_and(|c| c != 'Z' && c != 'X'),
            })
            .map(|(p, _)| *p)
            .collect();
        if left.is_empty() || Instant::now() >= deadline || ctx.cancel.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pids: Vec<u32> = undo.processes.iter().map(|p| p.pid).collect();
    let verb = if f.signal == Signal::Stop {
        "stopped"
    } else {
        "gone"
    };
    let mut measured = if left.is_empty() {
        format!(
            "{} process(es) {verb} on {}: pids {pids:?}",
            pids.len(),
            t.describe()
        )
    } else {
        format!("pids {left:?} still not {verb} after {}", f.verify_timeout)
    };
    if let Some(src) = &undo.source {
        measured = format!("{measured} ({src})");
    }
    if let Some(how) = &armed {
        measured = format!("{measured}; dead-man on the host ({how}) sends CONT at the ttl");
    }
    Ok(Effect {
        declared: f.describe(),
        measured,
        as_declared: left.is_empty(),
        effective_after_ms: left.is_empty().then(|| ms_since(ctx.started)),
        details: serde_json::json!({
            "signal": f.signal.name(), "pids": pids, "signalled": sent,
            "processes": undo.processes, "host": t.describe(),
            "deadman": armed.map(|how| serde_json::json!({ "on": t.describe(), "armed_with": how })),
        }),
    })
}

/// `cgroup.events` of a host cgroup: `(frozen, populated)`.
async fn events(t: &Target, dir: &str) -> Option<(bool, bool)> {
    let out = t.run(&procs_cmd("events", &[dir.to_string()])).await.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let flag = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
            .map(|v| v.trim() == "1")
    };
    Some((flag("frozen")?, flag("populated")?))
}

/// `STOP` (freeze) or `KILL` of a whole host cgroup, then watched in its
/// `cgroup.events` until frozen or empty (or `verify_timeout`).
async fn apply_cgroup(
    f: &ProcessKill,
    ctx: &FaultCtx<'_>,
    undo: &Undo,
    dir: &str,
    armed: Option<String>,
) -> Result<Effect, FaultError> {
    let t = ctx.target;
    let (mode, args, what) = match f.signal {
        Signal::Stop => ("freeze", vec![dir.to_string(), "1".into()], "cgroup.freeze"),
        _ => ("cgkill", vec![dir.to_string()], "cgroup.kill"),
    };
    let out = t.run(&procs_cmd(mode, &args)).await.map_err(|e| {
        FaultError::System(format!(
            "cannot write {what} of {dir} on {}: {e}",
            t.describe()
        ))
    })?;
    if !out.success() {
        return Err(FaultError::System(format!(
            "cannot write {what} of {dir} on {}: {}",
            t.describe(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let deadline = Instant::now() + f.verify_timeout.0;
    let done = loop {
        let done = match events(t, dir).await {
            Some((frozen, populated)) => match f.signal {
                Signal::Stop => frozen,
                _ => !populated,
            },
            None => false,
        };
        if done || Instant::now() >= deadline || ctx.cancel.is_cancelled() {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pids: Vec<u32> = undo.processes.iter().map(|p| p.pid).collect();
    let on = t.describe();
    let mut measured = match (f.signal, done) {
        (Signal::Stop, true) => format!(
            "cgroup {dir} on {on} frozen (cgroup.events frozen 1), {} process(es): pids {pids:?}",
            pids.len()
        ),
        (Signal::Stop, false) => format!(
            "cgroup {dir} on {on} still not frozen after {}",
            f.verify_timeout
        ),
        (_, true) => format!(
            "cgroup {dir} on {on} killed and empty (cgroup.events populated 0); it held pids {pids:?}"
        ),
        (_, false) => format!(
            "cgroup {dir} on {on} still holds processes after {}",
            f.verify_timeout
        ),
    };
    if let Some(how) = &armed {
        measured = format!("{measured}; dead-man on the host ({how}) thaws it at the ttl");
    }
    Ok(Effect {
        declared: f.describe(),
        measured,
        as_declared: done,
        effective_after_ms: done.then(|| ms_since(ctx.started)),
        details: serde_json::json!({
            "signal": f.signal.name(), "pids": pids, "cgroup": dir,
            "processes": undo.processes, "host": on,
            "deadman": armed.map(|how| serde_json::json!({ "on": t.describe(), "armed_with": how })),
        }),
    })
}

pub(crate) async fn revert(undo: &Undo) -> Result<Reverted, FaultError> {
    let start = Instant::now();
    let t = &undo.target;
    let Some(tag) = &undo.deadman_tag else {
        return Ok(Reverted {
            measured: format!(
                "SIG{} cannot be undone; nothing to revert",
                undo.signal.name()
            ),
            restored_after_ms: None,
            details: serde_json::Value::Null,
        });
    };
    match command::cancel_and_revert(t, tag, &cont_line(undo), Duration::from_secs(30)).await {
        Err((e, attempts)) => Err(FaultError::System(format!(
            "revert pending on {}: {e} (after {attempts} attempts); its dead-man sends CONT there by itself at the ttl",
            t.describe()
        ))),
        Ok(Outcome::Fired(_)) => Ok(Reverted {
            measured: format!(
                "the dead-man on {} had already {} at the ttl",
                t.describe(),
                if undo.cgroup.is_some() {
                    "thawed the cgroup"
                } else {
                    "sent CONT"
                }
            ),
            restored_after_ms: None,
            details: serde_json::json!({ "by": "deadman" }),
        }),
        Ok(Outcome::Ran(code, _, stderr)) if undo.cgroup.is_some() => {
            let dir = undo.cgroup.as_deref().unwrap_or_default();
            if code != "0" {
                return Err(FaultError::System(format!(
                    "thawing cgroup {dir} on {} failed (exit {code}): {stderr}",
                    t.describe()
                )));
            }
            Ok(Reverted {
                measured: format!(
                    "cgroup {dir} thawed on {} (cgroup.freeze 0); dead-man cancelled",
                    t.describe()
                ),
                restored_after_ms: Some(ms_since(start)),
                details: serde_json::json!({ "thawed_cgroup": dir, "by": "revert" }),
            })
        }
        Ok(Outcome::Ran(code, out, stderr)) => {
            let thawed: Vec<u32> = out
                .lines()
                .filter_map(|l| l.strip_prefix("sent ")?.parse().ok())
                .collect();
            if code != "0" {
                return Err(FaultError::System(format!(
                    "CONT on {} failed (exit {code}): {stderr}",
                    t.describe()
                )));
            }
            Ok(Reverted {
                measured: format!(
                    "CONT sent on {} to pids {thawed:?}; dead-man cancelled",
                    t.describe()
                ),
                restored_after_ms: Some(ms_since(start)),
                details: serde_json::json!({ "thawed": thawed, "by": "revert" }),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_as_proc_stat_plus_command_line() {
        let l = "42 (a) b\tc) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 1 1\t/usr/bin/x --flag ";
        let p = parse_line(l).unwrap();
        assert_eq!(
            (p.pid, p.comm.as_str(), p.state, p.ppid, p.start_time),
            (42, "a) b\tc", 'S', 1, 777)
        );
        assert_eq!(p.cmdline, "/usr/bin/x --flag");
        // Kernel threads are left out.
        let k = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0\t";
        assert!(parse_line(k).is_none());
    }
}
