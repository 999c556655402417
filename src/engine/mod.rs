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

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

pub use run::{Engine, EngineError};

use crate::scenario::Level;

/// Options of one run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Faults above this level are skipped.
    pub level: Level,
    /// Where ledgers and locks live.
    pub state_dir: PathBuf,
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

/// A new run id: UTC timestamp plus random suffix, short enough for nftables names.
pub fn new_run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("{}{:04x}", compact_utc(secs), fastrand::u16(..))
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time.
pub fn compact_utc(secs: u64) -> String {
    let t = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    )
    .to_string();
    t.replace(['-', ':'], "")
}
