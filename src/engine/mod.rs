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
//!
//! `run.rs` holds [`Engine::run`], one method per phase in the order above;
//! `guards.rs` the guards, `abort.rs` the abort switch, `outcome.rs` the outcome's
//! order of precedence (a pure function), `check.rs` the timing rules of assertions,
//! `switchover.rs` the stages of a staged switchover as spans of the run.

mod abort;
mod background;
pub(crate) mod check;
pub mod doctor;
mod guards;
mod indicators;
pub mod ledger;
pub(crate) mod lock;
mod notifications;
mod outcome;
pub mod plan;
pub(crate) mod record;
pub mod recover;
mod run;
mod switchover;
pub(crate) mod timeline;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

pub use run::{Engine, EngineError};

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
    /// The run's report directory, recorded in the ledger for `recover`.
    pub report_dir: Option<PathBuf>,
    /// `run --rehearse`: every check, guard and indicator runs, no fault is
    /// injected (so no target is locked either).
    pub rehearse: bool,
}

/// How the outside world (signal handlers, tests) steers a run.
#[derive(Clone, Debug, Default)]
pub struct Control {
    /// Stop forward steps and recover (first SIGINT/SIGTERM).
    pub abort: CancellationToken,
    /// Skip recovery's waits (second signal); reverts still run.
    pub hurry: CancellationToken,
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
