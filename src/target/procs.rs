//! Processes of this host, read from `/proc`, and signals sent to them.
//!
//! A process is identified by its pid *and* its start time (`/proc/PID/stat` field
//! 22): pids are recycled, and a revert or a dead-man watcher that signalled a bare
//! pid could hit an unrelated process that was born later under the same number.
//! [`signal`] opens a pidfd first and checks the start time through it, so the
//! process checked is the process signalled.
//!
//! Both target kinds of today (`local`, `netns`) share this host's pid namespace;
//! a `netns` target sees only the processes whose network namespace is its own
//! ([`in_netns`]).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::signal::Signal;
use serde::Serialize;

/// One process, as a target lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcInfo {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// State letter of `/proc/PID/stat` (`R`, `S`, `D`, `T` stopped, ...).
    pub state: char,
    /// Process name (`/proc/PID/comm`, at most 15 characters).
    pub comm: String,
    /// Full command line, arguments joined by spaces.
    pub cmdline: String,
    /// Parent pid.
    pub ppid: u32,
    /// Inode of its network namespace (`/proc/PID/ns/net`), when readable.
    pub netns: Option<u64>,
    /// Its cgroup2 path (`/a/b`, from `/proc/PID/cgroup`), when it is in one.
    pub cgroup: Option<String>,
}

/// The fields of `/proc/PID/stat` the engine uses.
pub(crate) struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub start_time: u64,
    /// Kernel flags (field 9); `PF_KTHREAD` marks a kernel thread.
    pub flags: u32,
}

/// `PF_KTHREAD` of include/linux/sched.h.
pub(crate) const PF_KTHREAD: u32 = 0x0020_0000;

/// Parses `/proc/PID/stat`. The name is in parentheses and may itself contain spaces
/// and parentheses, so fields are counted from the *last* `)`.
pub(crate) fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text.get(close + 2..)?.split(' ').collect();
    // rest[0] is field 3 (state); field 4 is ppid; field 9 flags; 22 starttime.
    Some(Stat {
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        flags: rest.get(6)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// Every live user process of this host: zombies (already dead) and kernel threads
/// are left out. Kernel threads are told by their flag, not by an empty command
/// line: a process in the middle of `execve` reads an empty one for a moment, and
/// would be missed. Processes that exit while the list is read are
/// simply missing from it.
pub(crate) fn list() -> io::Result<Vec<ProcInfo>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(p) = info(pid) {
            out.push(p);
        }
    }
    Ok(out)
}

/// One process, or None when it is gone, a zombie or a kernel thread.
pub(crate) fn info(pid: u32) -> Option<ProcInfo> {
    let s = read_stat(pid)?;
    if s.state == 'Z' || s.state == 'X' || s.flags & PF_KTHREAD != 0 {
        return None;
    }
    let cmdline = cmdline(pid);
    Some(ProcInfo {
        pid,
        start_time: s.start_time,
        state: s.state,
        comm: s.comm,
        cmdline,
        ppid: s.ppid,
        netns: netns_inode(format!("/proc/{pid}/ns/net")),
        cgroup: super::cgroup::cgroup_of(pid),
    })
}

/// The command line of `pid`, arguments joined by spaces ("" when unreadable).
pub(crate) fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim_end()
                .to_string()
        })
        .unwrap_or_default()
}

/// Inode of the network namespace at `path` (`/proc/PID/ns/net`, `/run/netns/NAME`):
/// two handles of one namespace have the same inode on nsfs.
pub(crate) fn netns_inode(path: impl AsRef<Path>) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// The processes of `all` that live in the network namespace named `name`
/// (`ip netns`). Fails when the namespace does not exist, so a typo never reads as
/// "no process matched".
pub(crate) fn in_netns(all: Vec<ProcInfo>, name: &str) -> io::Result<Vec<ProcInfo>> {
    super::netns::check_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let path = super::netns::netns_path(name);
    let ino = std::fs::metadata(&path).map(|m| m.ino()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot read network namespace `{name}` ({}): {e}; expected a namespace created with `ip netns add {name}`",
                path.display()
            ),
        )
    })?;
    Ok(all.into_iter().filter(|p| p.netns == Some(ino)).collect())
}

/// Same pid and same start time: still the very process that was selected.
pub(crate) fn same_process(pid: u32, start_time: u64) -> bool {
    read_stat(pid).is_some_and(|s| s.start_time == start_time)
}

/// State of `pid` if it is still the process born at `start_time`.
pub(crate) fn state_of(pid: u32, start_time: u64) -> Option<char> {
    read_stat(pid)
        .filter(|s| s.start_time == start_time)
        .map(|s| s.state)
}

/// Alive = the same process exists and is not a zombie (a zombie has exited; only its
/// parent has not collected the status yet).
pub(crate) fn alive(pid: u32, start_time: u64) -> bool {
    state_of(pid, start_time).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Sends `sig` to `pid` if it is still the process born at `start_time`. Returns
/// false (and sends nothing) when it is gone or the pid now belongs to another
/// process. The pidfd pins the process between the check and the signal.
pub(crate) fn signal(pid: u32, start_time: u64, sig: Signal) -> io::Result<bool> {
    let raw = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscalls on integers; the fd is owned and closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(false),
            // Kernels before 5.3: check, then kill (a window of microseconds).
            Some(libc::ENOSYS) => {
                if !same_process(pid, start_time) {
                    return Ok(false);
                }
                match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig) {
                    Ok(()) => Ok(true),
                    Err(nix::errno::Errno::ESRCH) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            _ => Err(e),
        };
    }
    let fd = fd as i32;
    let result = if same_process(pid, start_time) {
        // SAFETY: fd is a pidfd we own; no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                sig as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r == 0 {
            Ok(true)
        } else {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                Ok(false)
            } else {
                Err(e)
            }
        }
    } else {
        Ok(false)
    };
    // SAFETY: closing the fd opened above, once.
    unsafe { libc::close(fd) };
    result
}

/// `roots` and all their descendants among `all`, deepest first: every process comes
/// before its parent, so a STOP in this order never leaves a running process under a
/// stopped one. Roots that are descendants of other roots appear once.
pub(crate) fn tree_deepest_first(all: &[ProcInfo], roots: &[ProcInfo]) -> Vec<ProcInfo> {
    let mut levels: Vec<Vec<ProcInfo>> = Vec::new();
    let mut seen: std::collections::HashSet<u32> = std::collections::HashSet::new();
    let mut frontier: Vec<ProcInfo> = roots
        .iter()
        .filter(|r| {
            // A root under another root is reached from that one.
            !is_descendant_of_any(all, r, roots)
        })
        .cloned()
        .collect();
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for p in &frontier {
            seen.insert(p.pid);
        }
        for p in &frontier {
            for c in all
                .iter()
                .filter(|c| c.ppid == p.pid && !seen.contains(&c.pid))
            {
                // A child is younger than its parent; an older "child" is a recycled
                // ppid that only looks related.
                if c.start_time >= p.start_time {
                    next.push(c.clone());
                }
            }
        }
        levels.push(std::mem::take(&mut frontier));
        next.sort_by_key(|c| c.pid);
        next.dedup_by_key(|c| c.pid);
        frontier = next;
    }
    levels.into_iter().rev().flatten().collect()
}

fn is_descendant_of_any(all: &[ProcInfo], p: &ProcInfo, roots: &[ProcInfo]) -> bool {
    let mut ppid = p.ppid;
    let mut hops = 0;
    while ppid > 1 && hops < 4096 {
        if roots.iter().any(|r| r.pid == ppid) {
            return true;
        }
        ppid = all.iter().find(|q| q.pid == ppid).map_or(0, |q| q.ppid);
        hops += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_counts_fields_from_the_last_paren() {
        let s =
            parse_stat("42 (a) b (c)) S 7 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0")
                .unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!((s.state, s.ppid, s.start_time), ('S', 7, 12345));
        assert_eq!(s.flags, 4194560);
        let me = read_stat(std::process::id()).unwrap();
        assert!(me.start_time > 0);
    }

    #[test]
    fn this_process_is_listed_with_its_namespace() {
        let all = list().unwrap();
        let me = all.iter().find(|p| p.pid == std::process::id()).unwrap();
        assert_eq!(me.netns, netns_inode("/proc/self/ns/net"));
        assert!(!me.cmdline.is_empty());
        // kthreadd (pid 2) is a kernel thread, when this pid namespace shows it.
        if read_stat(2).is_some_and(|s| s.comm == "kthreadd") {
            assert!(all.iter().all(|p| p.pid != 2));
        }
    }

    fn p(pid: u32, ppid: u32, start: u64) -> ProcInfo {
        ProcInfo {
            pid,
            start_time: start,
            state: 'S',
            comm: format!("p{pid}"),
            cmdline: format!("p{pid}"),
            ppid,
            netns: None,
            cgroup: None,
        }
    }

    #[test]
    fn a_tree_lists_children_before_their_parents() {
        // 10 ─┬─ 11 ── 13
        //     └─ 12
        // 20 (unrelated), 30 claims ppid 10 but is older than 10 (a recycled pid).
        let all = vec![
            p(10, 1, 100),
            p(11, 10, 101),
            p(12, 10, 102),
            p(13, 11, 103),
            p(20, 1, 50),
            p(30, 10, 90),
        ];
        let order: Vec<u32> = tree_deepest_first(&all, &[all[0].clone()])
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(order, [13, 11, 12, 10]);
        // A root inside another root's tree appears once.
        let order: Vec<u32> = tree_deepest_first(&all, &[all[1].clone(), all[0].clone()])
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(order, [13, 11, 12, 10]);
    }

    #[test]
    fn a_recycled_pid_is_not_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = read_stat(pid).unwrap().start_time;
        assert!(!signal(pid, start + 1, Signal::SIGKILL).unwrap());
        assert!(alive(pid, start));
        assert!(signal(pid, start, Signal::SIGKILL).unwrap());
        child.wait().unwrap();
        assert!(!signal(pid, start, Signal::SIGKILL).unwrap(), "gone");
    }
}
