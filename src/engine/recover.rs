//! `firedrill recover`: replay the ledger of runs that did not revert everything.
//!
//! A run whose engine is still alive is skipped (unless forced): reverting under a
//! live drill would fight it. Reverts are idempotent, so replaying a record whose
//! fault already expired by its ttl is harmless.

use std::path::Path;

use super::ledger::{self, Entry, Ledger, now_rfc3339};
use crate::fault::RevertCtx;

/// What recovering one run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecovery {
    pub run_id: String,
    pub reverted: Vec<String>,
    pub failed: Vec<String>,
    /// Set when the run was left alone, with why.
    pub skipped: Option<String>,
}

/// Recovers one run (`run = Some(id)`) or every run with pending records.
pub async fn recover(
    state_dir: &Path,
    run: Option<&str>,
    force: bool,
    runtime: Option<&crate::rt::Runtime>,
) -> Vec<RunRecovery> {
    let mut out = Vec::new();
    for (run_id, path) in ledger::all_ledgers(state_dir) {
        if run.is_some_and(|r| r != run_id) {
            continue;
        }
        out.push(recover_ledger(&run_id, &path, force, runtime).await);
    }
    out
}

/// Reverts the pending records of one ledger, newest first.
pub async fn recover_ledger(
    run_id: &str,
    path: &Path,
    force: bool,
    runtime: Option<&crate::rt::Runtime>,
) -> RunRecovery {
    let mut rec = RunRecovery {
        run_id: run_id.to_string(),
        reverted: vec![],
        failed: vec![],
        skipped: None,
    };
    let entries = match ledger::read(path) {
        Ok(e) => e,
        Err(e) => {
            rec.failed.push(e.to_string());
            return rec;
        }
    };
    let pending = ledger::pending(&entries);
    if pending.is_empty() {
        return rec;
    }
    if !force && let Some(Entry::Started { pid, pid_start, .. }) = entries.first() {
        let live = *pid != std::process::id()
            && crate::fault::process_kill::read_stat(*pid)
                .is_some_and(|s| s.start_time == *pid_start);
        if live {
            rec.skipped = Some(format!(
                "its engine (pid {pid}) is still running; stop it first or pass --force"
            ));
            return rec;
        }
    }
    let mut l = match Ledger::open(path) {
        Ok(l) => l,
        Err(e) => {
            rec.failed.push(e.to_string());
            return rec;
        }
    };
    for p in pending {
        let ctx = RevertCtx {
            runtime,
            hurry: false,
        };
        match p.undo.revert(&ctx).await {
            Ok(r) => {
                let _ = l.append(&Entry::Reverted {
                    seq: p.seq,
                    at: now_rfc3339(),
                });
                rec.reverted
                    .push(format!("{} ({}): {}", p.step, p.undo.kind(), r.measured));
            }
            Err(e) => {
                let _ = l.append(&Entry::RevertFailed {
                    seq: p.seq,
                    error: e.to_string(),
                    at: now_rfc3339(),
                });
                rec.failed
                    .push(format!("{} ({}): {e}", p.step, p.undo.kind()));
            }
        }
    }
    rec
}
