//! `scripts/quickstart.sh`, the first thing a new user runs: with the port taken it
//! fails fast with the demo's own error, and a drill it runs keeps its ledger.

use crate::common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The script, using the binaries this test was built with (no `cargo build` inside
/// `cargo test`).
fn quickstart(port: u16) -> Command {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_firedrill"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut c = Command::new("bash");
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/quickstart.sh"
    ))
    .env("PORT", port.to_string())
    .env("FIREDRILL_BIN_DIR", bin_dir)
    .env_remove("FIREDRILL_STATE_DIR")
    .env_remove("RUST_LOG")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Its own process group, so that a hung script is stopped with everything it
    // started.
    .process_group(0);
    c
}

/// Runs the script to its end (at most `timeout`, then its whole process group is
/// killed): exit code, time taken, stdout, stderr.
fn run_script(mut c: Command, timeout: Duration) -> (Option<i32>, Duration, String, String) {
    let started = Instant::now();
    let mut child = c.spawn().unwrap();
    let pgid = child.id() as i32;
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let code = wait_exit(&mut child, timeout);
    let took = started.elapsed();
    if code.is_none() {
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    (code, took, out.join().unwrap(), err.join().unwrap())
}

/// With 127.0.0.1:PORT held by another program, the demo cannot listen: the script
/// stops within a few seconds and shows the demo's bind error (it used to delete the
/// demo's log and let the drill fail its precheck with a 404 from the other program
/// after 10 s).
#[test]
fn quickstart_with_a_busy_port_fails_fast_with_the_demo_bind_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let reports = tempfile::tempdir().unwrap();
    let mut c = quickstart(port);
    c.arg("--report-dir").arg(reports.path());
    let (code, took, stdout, stderr) = run_script(c, Duration::from_secs(60));
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?}\n{stdout}\n{stderr}"
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && stderr.contains("Address already in use"),
        "the demo's bind error is not shown:\n{stderr}"
    );
    assert!(
        std::fs::read_dir(reports.path()).unwrap().next().is_none(),
        "a drill ran against the other program"
    );
    drop(holder);
}

/// The quickstart passes, and the journal's `ledger` still exists after the script
/// has cleaned up (it pointed into the script's deleted temp dir). The ledger is in
/// firedrill's default state directory, where `firedrill recover --all` looks.
#[test]
fn quickstart_passes_and_keeps_the_ledger_its_journal_names() {
    let reports = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut c = quickstart(free_port());
    // Unprivileged, the default state dir is under $XDG_STATE_HOME: keep it in a temp
    // dir. As root it is /var/lib/firedrill; the run's directory is removed below.
    c.env("XDG_STATE_HOME", home.path())
        .arg("--report-dir")
        .arg(reports.path());
    let (code, _, stdout, stderr) = run_script(c, Duration::from_secs(90));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let j = journal(reports.path());
    let ledger = std::path::PathBuf::from(&j.ledger);
    let kept = ledger.is_file();
    let pending = kept.then(|| {
        let entries = firedrill::engine::ledger::read(&ledger).unwrap();
        firedrill::engine::ledger::pending(&entries).len()
    });
    if let Some(run_dir) = ledger.parent()
        && run_dir.ends_with(format!("runs/{}", j.run_id))
    {
        let _ = std::fs::remove_dir_all(run_dir);
    }
    assert!(kept, "the journal's ledger {} is gone", ledger.display());
    assert_eq!(
        pending,
        Some(0),
        "every fault of the quickstart was reverted"
    );
}
