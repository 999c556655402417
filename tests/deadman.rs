//! The dead-man watcher of `process_kill` STOP faults (`firedrill __deadman`): each
//! fault has a watcher of its own, which only that fault's revert ends, and which
//! survives the death of the engine's whole cgroup (a `systemd` unit stop or a
//! container kill), so a frozen process thaws by its ttl whatever happens to the
//! engine.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use firedrill::engine::Runtime;
use firedrill::fault::{FaultCtx, FaultSpec, RevertCtx, Undo};
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

/// Root-only tests skip with a reason on an unprivileged machine, never in CI.
fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root, and CI must run it"
    );
    eprintln!("skipped {test}: needs root");
    true
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
        assert!(wait_until(Duration::from_secs(2), || watchers(&tag_a)
            .is_empty()));
        assert_eq!(
            watchers(&tag_b),
            watcher_b,
            "reverting db-1 ended the watcher of db_1"
        );
        assert_eq!(b.state(), 'T', "db_1 is still in effect");

        undos[1].revert(&ctx).await.unwrap();
        assert!(wait_until(Duration::from_secs(2), || b.state() != 'T'));
        assert!(wait_until(Duration::from_secs(2), || watchers(&tag_b)
            .is_empty()));
    });
}
