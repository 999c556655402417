//! Moving a detached helper out of the engine's cgroup, so it outlives the engine.
//!
//! A new process group protects a helper from Ctrl-C, not from the way services and
//! containers are stopped: `systemctl stop`, a container kill or an OOM kill of the
//! group end every process of the engine's cgroup (`cgroup.kill`), the dead-man
//! watcher with them, and a frozen process would then stay frozen long after its
//! ttl. So the watcher is moved to a cgroup of its own next to the engine's,
//! `<parent of the engine's cgroup>/firedrill-deadman`, which the stop of the
//! engine's unit or container does not touch.
//!
//! Only the cgroup2 hierarchy is used: it is where systemd tracks units (also on
//! hybrid machines, where it is mounted at `/sys/fs/cgroup/unified`), so the mount
//! point is read from `/proc/self/mountinfo` rather than assumed. Where the move is
//! not possible (no cgroup2 mount, the engine at the root of its cgroup tree, no
//! permission), the helper stays where it was born and the caller is told why.
//!
//! `process_kill` with `cgroup:` also acts on a whole cgroup through the same
//! hierarchy: [`resolve`] finds it, [`set_frozen`] freezes and thaws it
//! (`cgroup.freeze`, confirmed by `cgroup.events`), [`kill_all`] writes `cgroup.kill`.

use std::path::{Path, PathBuf};

/// The cgroup every watcher is moved to, next to the engine's own.
pub(crate) const DEADMAN_CGROUP: &str = "firedrill-deadman";

/// Where a helper lives after [`move_out_of_engine_cgroup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Moved to this cgroup (cgroup2 path, e.g. `/system.slice/firedrill-deadman`),
    /// outside the engine's.
    Moved { cgroup: String, engine: String },
    /// Left where it was born, for this reason.
    Stayed { cgroup: Option<String>, why: String },
}

impl Placement {
    /// The helper's cgroup2 path, when known.
    pub(crate) fn cgroup(&self) -> Option<&str> {
        match self {
            Placement::Moved { cgroup, .. } => Some(cgroup),
            Placement::Stayed { cgroup, .. } => cgroup.as_deref(),
        }
    }

    /// In words, for the effect and the log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Placement::Moved { cgroup, engine } => {
                format!("in cgroup {cgroup}, outside the engine's {engine}")
            }
            Placement::Stayed { cgroup, why } => format!(
                "in the engine's cgroup {}: {why}",
                cgroup.as_deref().unwrap_or("(unknown)")
            ),
        }
    }
}

/// Moves process `pid` (a child of this engine, in the engine's cgroup) to
/// [`DEADMAN_CGROUP`] next to the engine's cgroup. Never fails: where the move is not
/// possible the process stays, and the placement says why.
pub(crate) fn move_out_of_engine_cgroup(pid: u32) -> Placement {
    let engine = match own_cgroup(Path::new("/proc/self/cgroup")) {
        Some(c) => c,
        None => {
            return Placement::Stayed {
                cgroup: None,
                why: "the engine is in no cgroup2 hierarchy (cgroup v1 only)".into(),
            };
        }
    };
    let stay = |why: String| Placement::Stayed {
        cgroup: Some(engine.clone()),
        why,
    };
    let Some(mount) = cgroup2_mount(Path::new("/proc/self/mountinfo")) else {
        return stay("no cgroup2 hierarchy is mounted".into());
    };
    let Some(dest) = destination(&engine) else {
        return stay(
            "the engine is at the root of its cgroup tree, there is no cgroup outside it to \
             move to; in a container, the watcher dies with the container"
                .into(),
        );
    };
    let Some(dir) = mount.under(&dest) else {
        return stay(format!(
            "cgroup {dest} is not inside the cgroup2 mount at {}",
            mount.point.display()
        ));
    };
    // Two attempts: another engine may remove the (empty) cgroup between our mkdir
    // and our write.
    let mut last = String::new();
    for _ in 0..2 {
        if let Err(e) = std::fs::create_dir(&dir)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return stay(format!("cannot create {}: {e}", dir.display()));
        }
        match std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
            Ok(()) => {
                return Placement::Moved {
                    cgroup: dest,
                    engine,
                };
            }
            Err(e) => last = format!("cannot move pid {pid} to {}: {e}", dir.display()),
        }
    }
    stay(last)
}

/// Removes [`DEADMAN_CGROUP`] at cgroup2 path `cgroup` if it is empty (the kernel
/// refuses while a process lives there, so a watcher of another drill is safe).
/// Any other cgroup is left alone.
pub(crate) fn remove_if_empty(cgroup: &str) {
    if Path::new(cgroup)
        .file_name()
        .is_none_or(|n| n != DEADMAN_CGROUP)
    {
        return;
    }
    if let Some(dir) =
        cgroup2_mount(Path::new("/proc/self/mountinfo")).and_then(|m| m.under(cgroup))
    {
        let _ = std::fs::remove_dir(dir);
    }
}

/// A cgroup named by a scenario: its cgroup2 path (`/a/b`, as `/proc/PID/cgroup`
/// shows it) and its directory under the cgroup2 mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cgroup {
    pub path: String,
    pub dir: PathBuf,
}

/// Static checks of a scenario's `cgroup:` value: a path relative to the cgroup2
/// mount (`system.slice/db.service`) or an absolute one inside it
/// (`/sys/fs/cgroup/system.slice/db.service`); never `..`, never the root cgroup
/// (which can be neither frozen nor killed).
pub(crate) fn check_spec(spec: &str) -> Result<(), String> {
    let expected = "expected a cgroup2 directory: a path relative to the cgroup2 mount or an absolute path inside it";
    if spec.trim_matches('/').is_empty() {
        return Err(format!(
            "found `{spec}`, {expected}, other than the root cgroup"
        ));
    }
    if spec.contains('\0') || spec.contains('\n') {
        return Err(format!(
            "found a control character in `{}`, {expected}",
            spec.escape_debug()
        ));
    }
    if Path::new(spec).components().any(|c| {
        matches!(
            c,
            std::path::Component::ParentDir | std::path::Component::CurDir
        )
    }) {
        return Err(format!(
            "found `{spec}` with a `.` or `..` component, {expected}"
        ));
    }
    Ok(())
}

/// An absolute `cgroup:` value must lie inside this machine's cgroup2 mount (when
/// it has one: a machine without cgroup2 is told at run time).
pub(crate) fn check_inside_mount(spec: &str) -> Result<(), String> {
    match cgroup2_mount(Path::new("/proc/self/mountinfo")) {
        Some(m) if spec.starts_with('/') && !Path::new(spec).starts_with(&m.point) => Err(format!(
            "found `{spec}`, expected a path inside the cgroup2 mount at {} or a path relative to it",
            m.point.display()
        )),
        _ => Ok(()),
    }
}

/// The cgroup a scenario's `cgroup:` names, on this machine's cgroup2 mount (found
/// in /proc/self/mountinfo: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid machine). It must exist.
pub(crate) fn resolve(spec: &str) -> Result<Cgroup, String> {
    check_spec(spec)?;
    let mount = cgroup2_mount(Path::new("/proc/self/mountinfo"))
        .ok_or_else(|| "no cgroup2 hierarchy is mounted on this host".to_string())?;
    let rel = if spec.starts_with('/') {
        Path::new(spec)
            .strip_prefix(&mount.point)
            .map_err(|_| {
                format!(
                    "cgroup `{spec}` is not inside the cgroup2 mount at {}; give a path inside it or one relative to it",
                    mount.point.display()
                )
            })?
            .to_string_lossy()
            .into_owned()
    } else {
        spec.trim_end_matches('/').to_string()
    };
    if rel.is_empty() {
        return Err(format!(
            "found the root cgroup `{spec}`, which can be neither frozen nor killed"
        ));
    }
    let dir = mount.point.join(&rel);
    if !dir.join("cgroup.procs").exists() {
        return Err(format!("cgroup {} does not exist", dir.display()));
    }
    let root = mount.root.trim_end_matches('/');
    Ok(Cgroup {
        path: format!("{root}/{rel}"),
        dir,
    })
}

/// The directory of cgroup2 path `path` on this machine, if the mount shows it.
pub(crate) fn dir_of(path: &str) -> Option<PathBuf> {
    cgroup2_mount(Path::new("/proc/self/mountinfo")).and_then(|m| m.under(path))
}

/// Whether cgroup2 path `inner` is `outer` or below it.
pub(crate) fn contains(outer: &str, inner: &str) -> bool {
    let outer = outer.trim_end_matches('/');
    inner == outer || outer.is_empty() || inner.starts_with(&format!("{outer}/"))
}

/// The pids of the processes in `dir` and in every cgroup below it (`cgroup.procs`
/// lists only a cgroup's own members).
pub(crate) fn pids(dir: &Path) -> std::io::Result<Vec<u32>> {
    let mut out: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            // A child removed while reading is simply gone.
            out.extend(pids(&e.path()).unwrap_or_default());
        }
    }
    Ok(out)
}

/// `cgroup.events`: whether the cgroup (or one below it) holds a process, and
/// whether it is frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Events {
    pub populated: bool,
    pub frozen: bool,
}

pub(crate) fn events(dir: &Path) -> std::io::Result<Events> {
    let text = std::fs::read_to_string(dir.join("cgroup.events"))?;
    let flag = |key: &str| {
        text.lines()
            .any(|l| l.strip_prefix(key).is_some_and(|v| v.trim() == "1"))
    };
    Ok(Events {
        populated: flag("populated "),
        frozen: flag("frozen "),
    })
}

/// Freezes (`true`) or thaws the cgroup through `cgroup.freeze`. The kernel freezes
/// asynchronously: `cgroup.events` says `frozen 1` once every task is frozen.
pub(crate) fn set_frozen(dir: &Path, frozen: bool) -> std::io::Result<()> {
    std::fs::write(dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
}

/// SIGKILLs every process of the cgroup and below it at once (`cgroup.kill`,
/// Linux 5.14), which also catches processes forked while it acts.
pub(crate) fn kill_all(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("cgroup.kill"), "1")
}

/// The cgroup2 path of process `pid`, as in `/proc/PID/cgroup` (`0::/a/b`).
pub(crate) fn cgroup_of(pid: u32) -> Option<String> {
    own_cgroup(&PathBuf::from(format!("/proc/{pid}/cgroup")))
}

fn own_cgroup(proc_cgroup: &Path) -> Option<String> {
    let text = std::fs::read_to_string(proc_cgroup).ok()?;
    parse_proc_cgroup(&text)
}

fn parse_proc_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        // A deleted cgroup reads `/a/b (deleted)`; nothing can be moved next to it.
        .filter(|p| p.starts_with('/') && !p.ends_with(" (deleted)"))
        .map(str::to_string)
}

/// `<parent of engine>/firedrill-deadman`; None when the engine is in `/`.
fn destination(engine: &str) -> Option<String> {
    let engine = engine.trim_end_matches('/');
    if engine.is_empty() {
        return None;
    }
    let parent = engine.rsplit_once('/').map_or("", |(p, _)| p);
    Some(format!("{parent}/{DEADMAN_CGROUP}"))
}

/// The cgroup2 mount: where it is, and which cgroup its root shows.
#[derive(Debug, PartialEq)]
struct Mount {
    point: PathBuf,
    root: String,
}

impl Mount {
    /// The directory of cgroup `path` under this mount, if the mount shows it.
    fn under(&self, path: &str) -> Option<PathBuf> {
        let root = self.root.trim_end_matches('/');
        let rel = path.strip_prefix(root)?;
        if !rel.is_empty() && !rel.starts_with('/') {
            return None; // `/ab` is not under `/a`
        }
        Some(self.point.join(rel.trim_start_matches('/')))
    }
}

fn cgroup2_mount(mountinfo: &Path) -> Option<Mount> {
    parse_mountinfo(&std::fs::read_to_string(mountinfo).ok()?)
}

/// The first cgroup2 line of /proc/self/mountinfo:
/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER`.
fn parse_mountinfo(text: &str) -> Option<Mount> {
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut f = left.split(' ');
        let root = unescape(f.nth(3)?);
        let point = unescape(f.next()?);
        Some(Mount {
            point: PathBuf::from(point),
            root,
        })
    })
}

/// mountinfo writes space, tab, newline and backslash as `\NNN` (octal).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_and_unified_mounts_are_found() {
        let hybrid = "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(hybrid).unwrap().point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        let unified =
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_mountinfo(unified).unwrap().point,
            PathBuf::from("/sys/fs/cgroup")
        );
        assert_eq!(
            parse_mountinfo("22 1 0:21 / /proc rw - proc proc rw\n"),
            None
        );
        let odd = "41 31 0:38 /kube /mnt/cg\\040v2 rw - cgroup2 cgroup2 rw\n";
        let m = parse_mountinfo(odd).unwrap();
        assert_eq!(m.point, PathBuf::from("/mnt/cg v2"));
        assert_eq!(m.under("/kube/a"), Some(PathBuf::from("/mnt/cg v2/a")));
        assert_eq!(m.under("/kubelet"), None);
        assert_eq!(m.under("/other"), None);
    }

    #[test]
    fn the_watcher_goes_next_to_the_engine() {
        assert_eq!(
            destination("/system.slice/db-drill.service").as_deref(),
            Some("/system.slice/firedrill-deadman")
        );
        assert_eq!(
            destination("/fdtest").as_deref(),
            Some("/firedrill-deadman")
        );
        assert_eq!(destination("/"), None);
        assert_eq!(
            parse_proc_cgroup("4:memory:/x\n0::/user.slice/s.scope\n").as_deref(),
            Some("/user.slice/s.scope")
        );
        assert_eq!(parse_proc_cgroup("0::/gone (deleted)\n"), None);
        assert_eq!(parse_proc_cgroup("1:name=systemd:/\n"), None);
    }

    #[test]
    fn cgroup_specs_stay_inside_the_hierarchy() {
        let cases = [
            ("db.service", true),
            ("system.slice/db.service", true),
            ("/sys/fs/cgroup/a", true),
            ("", false),
            ("/", false),
            ("../etc", false),
            ("a/../../b", false),
            ("/sys/fs/cgroup/../../etc", false),
            ("./a", false),
            ("a\nb", false),
        ];
        for (spec, ok) in cases {
            assert_eq!(check_spec(spec).is_ok(), ok, "{spec:?}");
        }
        assert!(contains("/a", "/a") && contains("/a", "/a/b") && contains("/", "/x"));
        assert!(!contains("/a", "/ab") && !contains("/a/b", "/a"));
    }
}
