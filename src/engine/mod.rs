//! The run: phases, timeline, guards, cancellation, ledger and recovery.
//!
//! ```text
//! prechecks ─▶ faults (graded, in order, ramp_up) ─▶ verifications
//!                 │ guards watched while any fault is active
//!                 ▼
//! recovery (ALWAYS: revert every injected fault newest first, then recovery steps)
//!   ─▶ steady-state re-check (measures recovery time against the RTO) ─▶ report
//! ```
//!
//! Aborting (signal, guard breach, critical failure, max_duration, injection error)
//! cancels the forward steps only; recovery always runs to the end. A second signal
//! sets `hurry`, which skips recovery's waits but never its reverts.

pub(crate) mod check;
pub mod ledger;
pub(crate) mod lock;
pub mod plan;
pub mod recover;
mod run;
pub(crate) mod timeline;

use std::any::Any;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

pub use run::{Engine, EngineError};

use crate::report::model::Phase;
use crate::scenario::Level;

/// Options of one run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Faults above this level are skipped.
    pub level: Level,
    /// Where ledgers live.
    pub state_dir: PathBuf,
    /// Where the per-target locks live: the same directory for every engine on the
    /// machine (see [`default_lock_dir`]), whatever its state dir.
    pub lock_dir: PathBuf,
    /// Fixed run id (tests); generated when None.
    pub run_id: Option<String>,
    /// Print a progress line per event on stderr.
    pub progress: bool,
}

/// How the outside world (signal handlers, tests) steers a run.
#[derive(Clone, Debug, Default)]
pub struct Control {
    /// Stop forward steps and recover (first SIGINT/SIGTERM).
    pub abort: CancellationToken,
    /// Skip recovery's waits (second signal); reverts still run.
    pub hurry: CancellationToken,
}

/// In-process resources that live as long as a fault: helper child processes to reap
/// and handles (e.g. a proxy's task) that a revert in the same process can stop.
pub struct Runtime {
    children: Mutex<Vec<std::process::Child>>,
    resources: Mutex<HashMap<String, Box<dyn Any + Send>>>,
    phase: tokio::sync::watch::Sender<Phase>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            children: Mutex::default(),
            resources: Mutex::default(),
            phase: tokio::sync::watch::channel(Phase::Setup).0,
        }
    }
}

impl Runtime {
    /// Announces the phase the drill is in (continuous probes tag samples with it).
    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Follows the drill's phase.
    pub fn subscribe_phase(&self) -> tokio::sync::watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Keeps a detached helper's handle so that its exit status is collected (no zombie).
    pub fn adopt(&self, child: std::process::Child) {
        self.children.lock().unwrap().push(child);
    }

    /// Collects the exit status of helpers, waiting up to 500 ms for those still
    /// exiting (e.g. a watcher just sent SIGKILL). Waits asynchronously: a sleeping
    /// worker thread would stall every probe and timer scheduled on it.
    pub async fn reap(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        loop {
            {
                let mut children = self.children.lock().unwrap();
                children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
                if children.is_empty() {
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Stores a resource under `key` (e.g. the undo record's id).
    pub fn put(&self, key: impl Into<String>, value: Box<dyn Any + Send>) {
        self.resources.lock().unwrap().insert(key.into(), value);
    }

    /// Takes the resource stored under `key`, if this process holds it.
    pub fn take(&self, key: &str) -> Option<Box<dyn Any + Send>> {
        self.resources.lock().unwrap().remove(key)
    }
}

/// Path of the `firedrill` binary, for detached helpers (`__deadman`). Tests and
/// embedders that are not the binary point `FIREDRILL_EXE` at it.
pub fn self_exe() -> std::io::Result<PathBuf> {
    if let Ok(p) = std::env::var("FIREDRILL_EXE") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let is_firedrill = exe.file_name().is_some_and(|n| n == "firedrill");
    if is_firedrill {
        Ok(exe)
    } else {
        Err(std::io::Error::other(format!(
            "{} is not the firedrill binary; set FIREDRILL_EXE",
            exe.display()
        )))
    }
}

/// Default state directory: `/var/lib/firedrill` as root, else
/// `$XDG_STATE_HOME/firedrill` (or `~/.local/state/firedrill`).
pub fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/firedrill");
    }
    if let Ok(x) = std::env::var("XDG_STATE_HOME")
        && !x.is_empty()
    {
        return PathBuf::from(x).join("firedrill");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    PathBuf::from(home).join(".local/state/firedrill")
}

/// A new run id: UTC timestamp, this process's pid and 32 random bits
/// (`20260101T120000Z_1f2e_9a8b7c6d`), short enough for nftables names. Two engines
/// alive at once differ by pid; the random part covers pid reuse and other hosts
/// sharing a state dir, and `Ledger::create` refuses whatever still collides.
pub fn new_run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "{}_{:x}_{:08x}",
        compact_utc(secs),
        std::process::id(),
        fastrand::u32(..)
    )
}

/// Default lock directory: `/run/lock/firedrill`, shared by every engine on the
/// machine, root or not (`/run/lock` is world-writable and sticky). Only where it
/// cannot be used (no `/run/lock`, or not writable for this user) does a per-user
/// directory stand in, `$XDG_RUNTIME_DIR/firedrill` or `/tmp/firedrill-locks-<uid>`,
/// and a warning says that drills of other users will not see these locks.
pub fn default_lock_dir() -> PathBuf {
    lock::default_dir()
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time.
pub fn compact_utc(secs: u64) -> String {
    let t = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    )
    .to_string();
    t.replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn reap_does_not_block_the_runtime() {
        // One thread: anything reap does to block it stops every other task.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = Runtime::default();
            r.adopt(
                std::process::Command::new("sleep")
                    .arg("0.3")
                    .spawn()
                    .unwrap(),
            );
            let ticks = Arc::new(AtomicU32::new(0));
            let ticker = {
                let ticks = ticks.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            tokio::task::yield_now().await;
            let start = Instant::now();
            r.reap().await;
            let waited = start.elapsed();
            let ticked = ticks.load(Ordering::Relaxed);
            ticker.abort();
            assert!(waited >= Duration::from_millis(200), "{waited:?}");
            assert!(r.children.lock().unwrap().is_empty(), "child not reaped");
            // ~30 ticks in 300 ms; a blocking reap allows none.
            assert!(
                ticked >= 10,
                "only {ticked} tick(s) while reap waited {waited:?}"
            );
        });
    }
}
