//! `process_kill` beyond one process of this host: on a `netns` target it selects
//! only that namespace's processes; `tree: true` freezes a process with all its
//! descendants; `cgroup:` freezes, kills or terminates a whole cgroup v2. Real
//! processes, real namespaces and real cgroups (as root), and the real engine binary
//! SIGKILLed to prove the dead-man watcher thaws what it froze.

use crate::common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::faults::{fault, inject, revert, run_id};
use common::*;
use firedrill::fault::{Effect, FaultSpec, Undo};
use firedrill::rt::Runtime;
use firedrill::target::Target;

/// True (after printing why, or failing when `CI` is set) when `test` cannot run:
/// `why` names a missing piece; root is always needed.
fn cannot_run(test: &str, why: Option<&str>) -> bool {
    let missing = match why {
        Some(w) => Some(w.to_string()),
        None if !nix::unistd::geteuid().is_root() => Some("needs root".into()),
        None => None,
    };
    !common::skip::can_run(test, missing)
}

/// A process group the test started, SIGKILLed (and thawed, so it can die at once)
/// on drop.
struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command) -> Group {
        cmd.process_group(0).stdin(Stdio::null());
        Group(cmd.spawn().expect("spawn"))
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let pg = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGCONT);
        let _ = self.0.wait();
    }
}

/// The library starts the dead-man watcher from the `firedrill` binary. Set once,
/// before the calling test starts threads of its own.
fn point_at_firedrill() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| unsafe {
        std::env::set_var("FIREDRILL_EXE", env!("CARGO_BIN_EXE_firedrill"))
    });
}

fn state(pid: u32) -> char {
    proc_stat(pid).map_or('?', |s| s.0)
}

/// Children of `pid` (from /proc/*/stat field 4).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/stat")).is_ok_and(|t| {
                t.rfind(')')
                    .and_then(|i| t[i + 2..].split(' ').nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// Injects `spec` on `target` (ttl 30 s) and asserts it took effect as declared.
async fn hit(spec: &FaultSpec, target: &Target, step: &str, rt: &Runtime) -> (Undo, Effect) {
    let (undo, effect) = inject(spec, target, &run_id(), step, Duration::from_secs(30), rt)
        .await
        .unwrap_or_else(|e| panic!("{step}: {e}"));
    assert!(effect.as_declared, "{effect:?}");
    (undo, effect)
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Network namespaces made by the test, deleted on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn count_one_on_a_netns_target_hits_only_that_namespaces_process() {
    if cannot_run(
        "count_one_on_a_netns_target_hits_only_that_namespaces_process",
        None,
    ) {
        return;
    }
    let pid = std::process::id();
    let (a, b) = (format!("fdpk-{pid}-a"), format!("fdpk-{pid}-b"));
    let nss = Namespaces(vec![a.clone(), b.clone()]);
    for ns in &nss.0 {
        let ok = Command::new("ip")
            .args(["netns", "add", ns])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {ns}");
    }
    // One command line in both namespaces; B's is the older, which `count: 1`
    // (oldest first) would hit if the namespace were not part of the selection.
    let tag = format!("fdpk-same-{pid}");
    let start_in = |ns: &str| {
        Group::spawn(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "bash",
            "-c",
            &format!("exec -a {tag} sleep 300"),
        ]))
    };
    // Only the exec'd sleep has `TAG 300` (`ip` and `bash` carry `TAG sleep 300`).
    let ready = format!("{tag} 300");
    let in_b = start_in(&b);
    assert!(wait_until(Duration::from_secs(5), || pids_matching(&ready)
        .contains(&in_b.pid())));
    std::thread::sleep(Duration::from_millis(20)); // a later start time for A's
    let in_a = start_in(&a);
    assert!(wait_until(Duration::from_secs(5), || pids_matching(&ready)
        .contains(&in_a.pid())));

    let spec = fault(&format!(
        "kind: process_kill\nwith: {{ pattern: '^{tag} ', count: 1, signal: STOP }}"
    ));
    point_at_firedrill();
    let target = Target::Netns { name: a.clone() };
    assert!(
        spec.validate(&target).is_empty(),
        "{:?}",
        spec.validate(&target)
    );
    let rt = Runtime::default();
    tokio().block_on(async {
        let (undo, effect) = hit(&spec, &target, "freeze A", &rt).await;
        assert_eq!(state(in_a.pid()), 'T', "A's process is frozen");
        assert_ne!(state(in_b.pid()), 'T', "B's process was hit: {effect:?}");
        match &undo {
            Undo::ProcessKill(u) => assert_eq!(u.target, target),
            other => panic!("{}", other.kind()),
        }
        revert(&undo).await.unwrap();
        assert_ne!(state(in_a.pid()), 'T');
        // A namespace that does not exist is an error, not "nothing matched".
        let gone = Target::Netns {
            name: format!("fdpk-{pid}-none"),
        };
        let e = inject(&spec, &gone, &run_id(), "x", Duration::from_secs(5), &rt)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("ip netns add"), "{e}");
    });
    drop((in_a, in_b));
}

/// A parent (`bash`, with a unique `$0`) and two `sleep` children.
fn family(tag: &str) -> (Group, Vec<u32>) {
    let g = Group::spawn(Command::new("bash").args(["-c", "sleep 300 & sleep 300 & wait", tag]));
    assert!(
        wait_until(Duration::from_secs(5), || children(g.pid()).len() == 2),
        "the parent did not start two children"
    );
    let mut all = children(g.pid());
    all.push(g.pid());
    (g, all)
}

#[test]
fn tree_true_freezes_a_parent_and_both_children_and_revert_thaws_them() {
    let tag = format!("fdpk-tree-{}", std::process::id());
    let (g, all) = family(&tag);
    let spec = fault(&format!(
        "kind: process_kill\nwith: {{ pattern: 'wait {tag}$', tree: true, signal: STOP }}"
    ));
    let rt = Runtime::default();
    point_at_firedrill();
    tokio().block_on(async {
        let (undo, _effect) = hit(&spec, &Target::Local, "freeze tree", &rt).await;
        let states: Vec<char> = all.iter().map(|p| state(*p)).collect();
        assert_eq!(states, ['T', 'T', 'T'], "pids {all:?}");
        // Recorded children first, the parent last (the STOP order).
        let Undo::ProcessKill(u) = &undo else {
            panic!()
        };
        let order: Vec<u32> = u.processes.iter().map(|p| p.pid).collect();
        assert_eq!(order.len(), 3, "{order:?}");
        assert_eq!(order[2], g.pid(), "{order:?}");
        revert(&undo).await.unwrap();
        assert!(
            all.iter().all(|p| state(*p) != 'T'),
            "{:?}",
            all.iter().map(|p| state(*p)).collect::<Vec<_>>()
        );
        // Idempotent.
        revert(&undo).await.unwrap();
    });
    drop(g);
}

/// Runs a drill whose only fault is `with`, waits until `frozen()` holds, SIGKILLs
/// the engine, and returns how long after the freeze `thawed()` held (None: never,
/// within 6 s of a 2 s ttl).
fn freeze_then_kill_engine(
    with: &str,
    frozen: impl Fn() -> bool,
    thawed: impl Fn() -> bool,
) -> Option<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let run_id = format!("pkdm{}x{}", std::process::id(), run_id());
    let scen = dir.path().join("s.yaml");
    std::fs::write(&scen, hold_scenario(with, "", "2s")).unwrap();
    let log = dir.path().join("engine.log");
    let mut engine = drill_cmd(
        &scen,
        &run_id,
        &dir.path().join("state"),
        &dir.path().join("reports"),
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), &frozen),
        "the drill did not freeze"
    );
    let frozen_at = Instant::now();
    engine.kill().unwrap();
    engine.wait().unwrap();
    let watcher = pids_matching(&format!("__deadman --tag {run_id}-"));
    assert_eq!(
        watcher.len(),
        1,
        "the watcher outlives the engine; engine log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let ok = wait_until(Duration::from_secs(6), &thawed);
    let after = frozen_at.elapsed();
    assert!(wait_until(Duration::from_secs(2), || pids_matching(
        &format!("__deadman --tag {run_id}-")
    )
    .is_empty()));
    ok.then_some(after)
}

#[test]
fn tree_frozen_by_a_sigkilled_engine_is_thawed_by_the_deadman() {
    let tag = format!("fdpk-treedm-{}", std::process::id());
    let (g, all) = family(&tag);
    let after = freeze_then_kill_engine(
        &format!("{{ pattern: 'wait {tag}$', tree: true, signal: STOP }}"),
        || all.iter().all(|p| state(*p) == 'T'),
        || all.iter().all(|p| state(*p) != 'T'),
    );
    let after = after.expect("the tree is still frozen 6 s after a 2 s ttl");
    assert!(after < Duration::from_secs(5), "{after:?}");
    eprintln!("tree thawed {after:?} after the freeze (ttl 2s)");
    drop(g);
}

/// A cgroup the test made, holding two `sleep`s; on drop it is thawed, emptied
/// (cgroup.kill) and removed.
struct Cg {
    name: String,
    dir: PathBuf,
    procs: Vec<Child>,
}

impl Cg {
    /// None (with the reason printed) where cgroups cannot be made.
    fn with_two_sleepers(test: &str) -> Option<Cg> {
        if cannot_run(test, None) {
            return None;
        }
        let Some(root) = cgroup2_mount() else {
            cannot_run(test, Some("no cgroup2 hierarchy is mounted"));
            return None;
        };
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("fdtest-pk-{}-{n}", std::process::id());
        let dir = root.join(&name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let mut cg = Cg {
            name,
            dir,
            procs: Vec::new(),
        };
        if !cg.dir.join("cgroup.kill").exists() || !cg.dir.join("cgroup.freeze").exists() {
            cannot_run(
                test,
                Some("this kernel has no cgroup.kill or cgroup.freeze"),
            );
            return None;
        }
        let procs = cg.dir.join("cgroup.procs");
        for _ in 0..2 {
            let child = Command::new("sleep")
                .arg("300")
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            std::fs::write(&procs, child.id().to_string()).unwrap();
            cg.procs.push(child);
        }
        Some(cg)
    }
    fn events(&self, key: &str) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .map(|t| t.lines().any(|l| l == format!("{key} 1")))
            .unwrap_or(false)
    }
    fn frozen(&self) -> bool {
        self.events("frozen")
    }
    fn populated(&self) -> bool {
        self.events("populated")
    }
}

impl Drop for Cg {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.freeze"), "0");
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_until(Duration::from_secs(5), || !self.populated());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn pids_of(cg: &Cg) -> Vec<u32> {
    cg.procs.iter().map(|c| c.id()).collect()
}

#[test]
fn cgroup_stop_freezes_the_whole_cgroup_and_revert_thaws_it() {
    let Some(cg) =
        Cg::with_two_sleepers("cgroup_stop_freezes_the_whole_cgroup_and_revert_thaws_it")
    else {
        return;
    };
    // The absolute form, inside the mount.
    let spec = fault(&format!(
        "kind: process_kill\nwith: {{ cgroup: '{}', signal: STOP }}",
        cg.dir.display()
    ));
    assert!(spec.validate(&Target::Local).is_empty());
    point_at_firedrill();
    let rt = Runtime::default();
    tokio().block_on(async {
        let (undo, effect) = hit(&spec, &Target::Local, "freeze cg", &rt).await;
        assert!(cg.frozen(), "cgroup.events frozen 1");
        assert!(effect.measured.contains("frozen"), "{}", effect.measured);
        let Undo::ProcessKill(u) = &undo else {
            panic!()
        };
        assert_eq!(u.cgroup.as_deref(), Some(format!("/{}", cg.name).as_str()));
        let mut recorded: Vec<u32> = u.processes.iter().map(|p| p.pid).collect();
        recorded.sort();
        let mut mine = pids_of(&cg);
        mine.sort();
        assert_eq!(recorded, mine, "{effect:?}");
        revert(&undo).await.unwrap();
        assert!(!cg.frozen(), "thawed by the revert");
        assert!(cg.procs.iter().all(|c| state(c.id()) != 'T'));
        // Idempotent, and the watcher is gone.
        revert(&undo).await.unwrap();
        let tag = u.deadman_tag.clone().unwrap();
        assert!(pids_matching(&format!("__deadman --tag {tag} ")).is_empty());
    });
}

/// Injects `signal` on a cgroup of two sleepers (by its path relative to the mount)
/// and returns the effect, the undo record and the signal each sleeper died of.
fn end_a_cgroup(test: &str, signal: &str) -> Option<(Effect, Undo, Vec<Option<i32>>)> {
    let mut cg = Cg::with_two_sleepers(test)?;
    let spec = fault(&format!(
        "kind: process_kill\nwith: {{ cgroup: '{}', signal: {signal} }}",
        cg.name
    ));
    let rt = Runtime::default();
    let (undo, effect) = tokio().block_on(hit(&spec, &Target::Local, "end cg", &rt));
    let died_of = cg
        .procs
        .iter_mut()
        .map(|c| std::os::unix::process::ExitStatusExt::signal(&c.wait().unwrap()))
        .collect();
    assert!(!cg.populated(), "cgroup.events populated 0");
    Some((effect, undo, died_of))
}

#[test]
fn cgroup_kill_empties_it() {
    if let Some((_, _, died_of)) = end_a_cgroup("cgroup_kill_empties_it", "KILL") {
        assert_eq!(died_of, [Some(9), Some(9)]);
    }
}

#[test]
fn cgroup_term_signals_every_process_in_it() {
    let Some((effect, undo, died_of)) =
        end_a_cgroup("cgroup_term_signals_every_process_in_it", "TERM")
    else {
        return;
    };
    assert_eq!(died_of, [Some(15), Some(15)]);
    assert_eq!(
        effect.details["signalled"].as_array().map(Vec::len),
        Some(2),
        "{effect:?}"
    );
    // Not reversible: the revert says so and does nothing.
    let reverted = tokio().block_on(revert(&undo)).unwrap();
    assert!(
        reverted.measured.contains("cannot be undone"),
        "{reverted:?}"
    );
}

#[test]
fn cgroup_frozen_by_a_sigkilled_engine_is_thawed_by_the_deadman() {
    let Some(cg) =
        Cg::with_two_sleepers("cgroup_frozen_by_a_sigkilled_engine_is_thawed_by_the_deadman")
    else {
        return;
    };
    let after = freeze_then_kill_engine(
        &format!("{{ cgroup: '{}', signal: STOP }}", cg.name),
        || cg.frozen(),
        || !cg.frozen(),
    );
    let after = after.expect("the cgroup is still frozen 6 s after a 2 s ttl");
    assert!(after < Duration::from_secs(5), "{after:?}");
    eprintln!("cgroup thawed {after:?} after the freeze (ttl 2s)");
    drop(cg);
}

#[test]
fn cgroup_frozen_by_a_sigkilled_engine_is_thawed_by_recover() {
    let Some(cg) =
        Cg::with_two_sleepers("cgroup_frozen_by_a_sigkilled_engine_is_thawed_by_recover")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let scen = dir.path().join("s.yaml");
    let with = format!("{{ cgroup: '{}', signal: STOP }}", cg.name);
    std::fs::write(&scen, hold_scenario(&with, "", "60s")).unwrap();
    let run_id = format!("pkrec{}x{}", std::process::id(), run_id());
    let mut engine = spawn_drill(&scen, &run_id, &state, &dir.path().join("reports"));
    assert!(wait_until(Duration::from_secs(10), || cg.frozen()));
    engine.kill().unwrap();
    engine.wait().unwrap();
    // A fresh process reverts from the ledger alone, long before the 60 s ttl.
    let out = recover_all(&state);
    assert!(!cg.frozen(), "{out}");
    assert!(out.contains("thawed"), "{out}");
    assert!(pids_matching(&format!("__deadman --tag {run_id}-")).is_empty());
}
