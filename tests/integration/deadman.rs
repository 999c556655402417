//! The dead-man watcher of `process_kill` STOP faults (`firedrill __deadman`): each
//! fault has a watcher of its own, which only that fault's revert ends, and which
//! survives the death of the engine's whole cgroup (a `systemd` unit stop or a
//! container kill), so a frozen process thaws by its ttl whatever happens to the
//! engine.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use firedrill::fault::{FaultCtx, FaultSpec, RevertCtx, Undo};
use firedrill::rt::Runtime;
use firedrill::target::Target;
use tokio_util::sync::CancellationToken;

/// Pids of the dead-man watchers whose tag is exactly `tag`.
fn watchers(tag: &str) -> Vec<u32> {
    pids_matching(&format!("__deadman --tag {tag} "))
}

fn deadman_tag(undo: &Undo) -> String {
    match undo {
        Undo::ProcessKill(u) => u.deadman_tag.clone().expect("a STOP fault has a watcher"),
        other => panic!("not a process_kill record: {}", other.kind()),
    }
}

#[test]
fn deadman_tags_of_steps_db_dash_1_and_db_underscore_1_do_not_collide() {
    // The library spawns the watcher from the `firedrill` binary. Set before this
    // test starts any thread of its own; no other test in this binary reads it.
    unsafe { std::env::set_var("FIREDRILL_EXE", env!("CARGO_BIN_EXE_firedrill")) };
    let a = Marker::spawn("tag-a");
    let b = Marker::spawn("tag-b");
    let run_id = format!("tags{}", std::process::id());
    let rt = Runtime::default();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let mut undos = Vec::new();
        for (step, m) in [("db-1", &a), ("db_1", &b)] {
            let f: FaultSpec = serde_yaml::from_str(&format!(
                "kind: process_kill\nwith: {{ pattern: '^{} ', signal: STOP }}",
                m.tag
            ))
            .unwrap();
            let ctx = FaultCtx {
                run_id: &run_id,
                step,
                target: &Target::Local,
                ttl: Duration::from_secs(60),
                started: Instant::now(),
                cancel: CancellationToken::new(),
                runtime: &rt,
            };
            let undo = f.prepare(&ctx).await.unwrap();
            let effect = f.apply(&ctx, &undo).await.unwrap();
            assert!(effect.as_declared, "{effect:?}");
            // Where the watcher lives is part of the evidence.
            assert!(
                effect.measured.contains("dead-man watcher pid")
                    && effect.details["deadman"]["placement"].is_string(),
                "{effect:?}"
            );
            undos.push(undo);
        }
        let (tag_a, tag_b) = (deadman_tag(&undos[0]), deadman_tag(&undos[1]));
        assert_ne!(tag_a, tag_b, "two steps, one watcher tag");
        assert_eq!(watchers(&tag_a).len(), 1, "watcher of db-1");
        assert_eq!(watchers(&tag_b).len(), 1, "watcher of db_1");
        let watcher_b = watchers(&tag_b);
        assert_eq!((a.state(), b.state()), ('T', 'T'));

        let ctx = RevertCtx {
            runtime: Some(&rt),
            hurry: false,
        };
        undos[0].revert(&ctx).await.unwrap();
        assert!(wait_until(Duration::from_secs(2), || a.state() != 'T'));
        assert!(wait_until(Duration::from_secs(2), || watchers(&tag_a).is_empty()));
        assert_eq!(
            watchers(&tag_b),
            watcher_b,
            "reverting db-1 ended the watcher of db_1"
        );
        assert_eq!(b.state(), 'T', "db_1 is still in effect");

        undos[1].revert(&ctx).await.unwrap();
        assert!(wait_until(Duration::from_secs(2), || b.state() != 'T'));
        assert!(wait_until(Duration::from_secs(2), || watchers(&tag_b).is_empty()));
    });
}

/// The cgroup2 path of a process (`0::/a/b` in /proc/PID/cgroup).
fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// A cgroup the test made; on drop its processes are killed and it is removed.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn create(root: &Path, name: &str) -> TestCgroup {
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup(dir)
    }
    fn populated(&self) -> bool {
        std::fs::read_to_string(self.0.join("cgroup.events"))
            .map(|t| t.lines().any(|l| l == "populated 1"))
            .unwrap_or(false)
    }
    fn kill(&self) {
        std::fs::write(self.0.join("cgroup.kill"), "1").expect("write cgroup.kill");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if self.populated() {
            let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        }
        wait_until(Duration::from_secs(5), || !self.populated());
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn deadman_thaws_after_cgroup_kill_of_the_engine() {
    if !skip::can_run_as_root(
        "deadman_thaws_after_cgroup_kill_of_the_engine",
        "to create a cgroup",
    ) {
        return;
    }
    let Some(root) = cgroup2_mount() else {
        assert!(std::env::var_os("CI").is_none(), "CI needs a cgroup2 mount");
        eprintln!("skipped: no cgroup2 hierarchy is mounted");
        return;
    };
    let run_id = format!("cgkill{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    // The frozen process lives outside the engine's cgroup (in the test's own).
    let marker = Marker::spawn("cgkill");
    let scen = write_scenario(dir.path(), &stop_scenario(&marker, "", "2s"));
    let cg = TestCgroup::create(&root, &format!("fdtest-engine-{}", std::process::id()));
    // cgroup.kill exists in every cgroup but the root one (Linux >= 5.14).
    if !cg.0.join("cgroup.kill").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs cgroup.kill (Linux >= 5.14)"
        );
        eprintln!("skipped: this kernel has no cgroup.kill");
        return;
    }
    let deadman_cg_existed = root.join("firedrill-deadman").exists();

    // The engine enters the test cgroup before it execs: everything it starts is
    // born there, as under a systemd unit or in a container.
    let procs = std::ffi::CString::new(
        cg.0.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    let mut cmd = drill_cmd(
        &scen,
        &run_id,
        &dir.path().join("state"),
        &dir.path().join("reports"),
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // Only async-signal-safe calls between fork and exec.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut engine = cmd.spawn().expect("start the engine in the test cgroup");
    let engine_cg = cgroup_of(engine.id()).unwrap();
    assert!(
        cg.0.ends_with(engine_cg.trim_start_matches('/')),
        "{engine_cg}"
    );

    assert!(
        wait_until(Duration::from_secs(10), || marker.state() == 'T'),
        "the drill did not freeze the marker"
    );
    let frozen_at = Instant::now();
    let watcher = pids_matching(&format!("__deadman --tag {run_id}"));
    assert_eq!(watcher.len(), 1, "{watcher:?}");
    let watcher_cg = cgroup_of(watcher[0]).unwrap();

    // A systemd unit stop or a container kill: every process of the cgroup dies.
    cg.kill();
    assert_eq!(
        wait_exit(&mut engine, Duration::from_secs(5)),
        None,
        "SIGKILLed"
    );
    assert!(wait_until(Duration::from_secs(2), || !cg.populated()));

    let thawed = wait_until(Duration::from_secs(4), || marker.state() != 'T');
    let after = frozen_at.elapsed();
    assert!(
        thawed,
        "the process is still frozen {after:?} after the fault (ttl 2s): the dead-man \
         watcher lived in {watcher_cg}, inside the engine's cgroup {engine_cg}, and died with it"
    );
    assert!(after < Duration::from_secs(4), "{after:?}");
    eprintln!("thawed {after:?} after the freeze (ttl 2s); watcher lived in {watcher_cg}");
    assert!(
        watcher_cg.ends_with("/firedrill-deadman") && watcher_cg != engine_cg,
        "{watcher_cg}"
    );
    assert!(wait_until(Duration::from_secs(2), || pids_matching(
        &format!("__deadman --tag {run_id}")
    )
    .is_empty()));
    drop(cg);
    if !deadman_cg_existed {
        // Only if empty: another drill's watcher may live there now.
        let _ = std::fs::remove_dir(root.join("firedrill-deadman"));
    }
}
