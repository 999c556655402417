//! `firedrill recover`: replay the ledger of runs that did not revert everything.
//!
//! A run whose engine is still alive is skipped (unless forced): reverting under a
//! live drill would fight it. Reverts are idempotent, so replaying a record whose
//! fault already expired by its ttl is harmless. A ledger line that cannot be read
//! is reported (file, line, byte offset) and every other record is still reverted:
//! one bad line must not keep the faults of the good ones in place.

use std::path::Path;

use super::ledger::{self, Entry, Ledger, now_rfc3339};
use crate::fault::RevertCtx;

/// What recovering one run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecovery {
    pub run_id: String,
    pub reverted: Vec<String>,
    /// Records whose revert failed (or a ledger that could not be opened at all).
    pub failed: Vec<String>,
    /// Ledger lines that could not be read: each may be a fault still in effect.
    pub unreadable: Vec<String>,
    /// Set when the run was left alone, with why.
    pub skipped: Option<String>,
    /// Each pending record `recover` dealt with: who undid it and when.
    pub reverts: Vec<RevertNote>,
}

/// Who undid one pending fault, as `recover` found it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RevertNote {
    /// Ledger sequence number of the undo record.
    pub seq: u64,
    /// `the dead-man (...)` when the fault was already undone when `recover` looked,
    /// else `firedrill recover`.
    pub by: String,
    /// When `recover` reverted (or confirmed) it, RFC 3339.
    pub at: String,
    /// What reverting did, or why it failed.
    pub detail: String,
    pub ok: bool,
}

impl RunRecovery {
    /// Whether everything this run may have left behind is known to be reverted.
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && self.unreadable.is_empty() && self.skipped.is_none()
    }
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

/// The engine of a `Started` entry that is still running (same pid, same start
/// time), other than this process. Every `Started` entry counts, not only the first:
/// whichever engine wrote to this ledger and still lives could be fighting us.
pub(crate) fn live_engine(entries: &[Entry]) -> Option<u32> {
    entries.iter().rev().find_map(|e| match e {
        Entry::Started { pid, pid_start, .. }
            if *pid != std::process::id()
                && crate::target::procs::read_stat(*pid)
                    .is_some_and(|s| s.start_time == *pid_start) =>
        {
            Some(*pid)
        }
        _ => None,
    })
}

/// When the undo record `seq` was written (the last one of that number).
fn injected_at(entries: &[Entry], seq: u64) -> Option<std::time::SystemTime> {
    entries.iter().rev().find_map(|e| match e {
        Entry::Inject { seq: s, at, .. } if *s == seq => {
            humantime::parse_rfc3339_weak(at.trim_end_matches('Z')).ok()
        }
        _ => None,
    })
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
        unreadable: vec![],
        skipped: None,
        reverts: vec![],
    };
    let scan = match ledger::scan(path) {
        Ok(s) => s,
        Err(e) => {
            rec.failed.push(e.to_string());
            return rec;
        }
    };
    rec.unreadable = scan.unreadable.iter().map(|e| e.to_string()).collect();
    let pending = ledger::pending(&scan.entries);
    if pending.is_empty() && scan.torn_tail.is_none() {
        return rec;
    }
    if !force && let Some(pid) = live_engine(&scan.entries) {
        // A live engine's torn tail is an append in progress: leave it alone.
        if !pending.is_empty() {
            rec.skipped = Some(format!(
                "its engine (pid {pid}) is still running; stop it first or pass --force"
            ));
        }
        return rec;
    }
    // Opening cuts off a torn last line (and logs it) before anything is appended.
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
        // Looked at before reverting: a fault already undone was undone by its
        // dead-man (the ttl), as no engine is left to have done it.
        let expired = p.undo.expires_after().and_then(|ttl| {
            let at = injected_at(&scan.entries, p.seq)?;
            (std::time::SystemTime::now() >= at + ttl).then_some(ttl)
        });
        let by = match (p.undo.still_in_effect(), expired) {
            (Some(false), _) => "the dead-man (already undone when recover looked)".to_string(),
            (None, Some(ttl)) => format!(
                "the dead-man (its nftables elements expired {}s after injection)",
                ttl.as_secs()
            ),
            _ => "firedrill recover".to_string(),
        };
        let result = p.undo.revert(&ctx).await;
        rec.reverts.push(RevertNote {
            seq: p.seq,
            by,
            at: now_rfc3339(),
            detail: match &result {
                Ok(r) => r.measured.clone(),
                Err(e) => e.to_string(),
            },
            ok: result.is_ok(),
        });
        match result {
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
