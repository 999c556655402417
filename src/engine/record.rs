//! The record of an interrupted run: when an engine dies mid-run (SIGKILL, OOM
//! killer, power loss) it writes no journal and no report, only its ledger. `recover`
//! then writes them from the ledger, so that every exercise leaves a record: what was
//! injected and when, who undid it (the engine, its dead-man or `recover`), and that
//! the run was interrupted.

use std::path::{Path, PathBuf};

use super::ledger::{self, Entry, now_rfc3339};
use super::recover::RunRecovery;
use crate::model::{
    Event, FaultRecord, ObjectivesRecord, Outcome, Phase, RevertRecord, RunRecord, ScenarioInfo,
    Status, StepRecord, StepStatus, ToolInfo,
};
use crate::report::ReportError;

/// Writes the journal and reports of run `rec.run_id` if its engine died without
/// finishing (no `Finished` entry) and `recover` did not skip it: into the report
/// directory named in the ledger, else a new one under `fallback`. Marks the ledger
/// finished, so a second `recover` does not write it again. None: nothing to write.
pub fn write_interrupted(
    state_dir: &Path,
    rec: &RunRecovery,
    fallback: &Path,
) -> Result<Option<Vec<PathBuf>>, ReportError> {
    if rec.skipped.is_some() {
        return Ok(None);
    }
    let path = state_dir
        .join("runs")
        .join(&rec.run_id)
        .join("ledger.jsonl");
    let Ok(scan) = ledger::scan(&path) else {
        return Ok(None);
    };
    let entries = &scan.entries;
    // A finished run wrote its own reports; a live one (e.g. still in its prechecks,
    // with nothing for `recover` to revert, or reverted under `--force`) still will.
    if entries.iter().any(|e| matches!(e, Entry::Finished { .. }))
        || super::recover::live_engine(entries).is_some()
    {
        return Ok(None);
    }
    let Some((scenario, started_at, pid, report_dir, identity)) =
        entries.iter().find_map(|e| match e {
            Entry::Started {
                scenario,
                at,
                pid,
                report_dir,
                identity,
                ..
            } => Some((
                scenario.clone(),
                at.clone(),
                *pid,
                report_dir.clone(),
                identity.clone(),
            )),
            _ => None,
        })
    else {
        return Ok(None);
    };
    let mut record = build(
        &rec.run_id,
        &scenario,
        &started_at,
        pid,
        entries,
        rec,
        &path,
    );
    if let Some(id) = identity {
        record.level = id.level;
        record.scenario.file = id.file;
        record.scenario.sha256 = id.sha256;
        record.host = id.host;
        record.operator = id.operator;
    }
    let dir = match report_dir.map(PathBuf::from) {
        // The run's own directory, created (empty) before anything was injected.
        Some(d) if d.is_dir() => d,
        _ => crate::report::create_run_dir(fallback, &scenario, &started_at)?.path,
    };
    let files = crate::report::write_reports(&record, &dir, None)?;
    if let Ok(mut l) = ledger::Ledger::open(&path) {
        let _ = l.append(&Entry::Finished { at: now_rfc3339() });
    }
    Ok(Some(files))
}

/// Milliseconds from `from` to `to` (RFC 3339); 0 when either does not parse.
fn between(from: &str, to: &str) -> f64 {
    match (
        humantime::parse_rfc3339_weak(from.trim_end_matches('Z')),
        humantime::parse_rfc3339_weak(to.trim_end_matches('Z')),
    ) {
        (Ok(a), Ok(b)) => b
            .duration_since(a)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        _ => 0.0,
    }
}

/// The run model of an interrupted run, from its ledger and what `recover` did.
fn build(
    run_id: &str,
    scenario: &str,
    started_at: &str,
    pid: u32,
    entries: &[Entry],
    rec: &RunRecovery,
    ledger_path: &Path,
) -> RunRecord {
    let finished_at = now_rfc3339();
    let mut timeline = Vec::new();
    let mut steps = Vec::new();
    let event = |at: &str, phase, event: &str, step: Option<&str>, message: String| Event {
        t_ms: between(started_at, at),
        at: at.to_string(),
        phase,
        event: event.to_string(),
        step: step.map(str::to_string),
        message,
    };
    timeline.push(event(
        started_at,
        Phase::Precheck,
        "run_started",
        None,
        format!("run {run_id} of `{scenario}` started (engine pid {pid})"),
    ));
    for e in entries {
        let Entry::Inject {
            seq,
            step,
            target,
            undo,
            at,
        } = e
        else {
            continue;
        };
        timeline.push(event(
            at,
            Phase::Fault,
            "fault_injected",
            Some(step),
            format!(
                "`{step}` injected ({}) on {}",
                undo.kind(),
                target.describe()
            ),
        ));
        // What this `recover` found first (the ledger already holds its own
        // `Reverted` entries); else a revert in the ledger: the engine's, or an
        // earlier `recover`'s.
        let by_engine = entries.iter().find_map(|x| match x {
            Entry::Reverted { seq: s, at } if s == seq => Some(at.clone()),
            _ => None,
        });
        let note = rec.reverts.iter().find(|n| n.seq == *seq);
        let (ok, by, rat, what) = match (note, &by_engine) {
            (Some(n), _) => (n.ok, n.by.clone(), n.at.clone(), n.detail.clone()),
            (None, Some(at)) => (
                true,
                "the engine or an earlier recover".to_string(),
                at.clone(),
                String::new(),
            ),
            (None, None) => (
                false,
                "nobody".to_string(),
                finished_at.clone(),
                "not reverted".to_string(),
            ),
        };
        let verdict = if ok { "reverted" } else { "NOT reverted" };
        timeline.push(event(
            &rat,
            Phase::Recovery,
            "fault_reverted",
            Some(step),
            format!("`{step}` {verdict} by {by}{}", sep(&what)),
        ));
        let started_ms = between(started_at, at);
        let revert_ms = between(started_at, &rat);
        steps.push(StepRecord {
            status: if ok {
                StepStatus::Passed
            } else {
                StepStatus::Error
            },
            duration_ms: (revert_ms - started_ms).max(0.0),
            attempts: 1,
            detail: format!("injected at {at}; {verdict} by {by} at {rat}{}", sep(&what)),
            fault: Some(FaultRecord {
                kind: undo.kind().to_string(),
                target: target.describe(),
                // The ledger does not keep the declared level or ttl.
                level: Default::default(),
                ttl_ms: 0.0,
                ledger_seq: Some(*seq),
                reversible: None,
                effect: None,
                revert: Some(RevertRecord {
                    ok,
                    started_ms: revert_ms,
                    duration_ms: 0.0,
                    result: None,
                    error: (!ok).then(|| what.clone()),
                }),
                // No indicator watched an interrupted run from here.
                impact_start_ms: None,
                impact_end_ms: None,
                impact_ms: None,
            }),
            ..StepRecord::new(
                Phase::Fault,
                step.clone(),
                format!("{} on {}", undo.kind(), target.describe()),
                started_ms,
            )
        });
    }
    let complete = rec.complete();
    let reason = format!(
        "interrupted: the engine (pid {pid}) stopped before the run finished, so the drill has no verdict; this record was written by firedrill recover from the run's ledger{}",
        if complete {
            ""
        } else {
            ", and something may be left behind"
        }
    );
    RunRecord {
        journal_version: crate::model::JOURNAL_VERSION,
        tool: ToolInfo::current(),
        run_id: run_id.to_string(),
        scenario: ScenarioInfo {
            name: scenario.to_string(),
            description: None,
            owner: None,
            file: String::new(),
            sha256: String::new(),
            labels: Default::default(),
            text: None,
        },
        // Filled in from the ledger when it kept them (not in older ledgers).
        host: String::new(),
        operator: String::new(),
        level: Default::default(),
        vars: Default::default(),
        started_at: started_at.to_string(),
        duration_ms: between(started_at, &finished_at),
        finished_at,
        outcome: Outcome {
            status: Status::Interrupted,
            // Recover's exit code is unchanged; the journal's says what CI should see.
            exit_code: if complete { 1 } else { 4 },
            reason,
            aborted: None,
        },
        objectives: ObjectivesRecord::default(),
        timeline,
        steps,
        guards: vec![],
        improvements: vec![],
        ledger: ledger_path.display().to_string(),
        rehearsal: false,
        notifications: Vec::new(),
        exercise: Default::default(),
    }
}

fn sep(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn between_reads_ledger_timestamps() {
        assert_eq!(
            between("2025-03-14T02:10:00.123Z", "2025-03-14T02:10:01.623Z"),
            1500.0
        );
        assert_eq!(between("garbage", "2025-03-14T02:10:01.623Z"), 0.0);
    }
}
