//! The outcome of a run: its status and the one sentence that says why, as a pure
//! function of what the phases found. The loudest failure wins, and "something may
//! be left behind" is the loudest of all.

use super::ledger;
use crate::model::{AbortReason, Status};

/// What the outcome of a run is decided from.
pub(super) struct Verdict<'a> {
    /// Every revert attempted by this run succeeded.
    pub(super) revert_ok: bool,
    /// What the ledger holds as injected and not reverted (or cannot read).
    pub(super) revert_gaps: &'a [String],
    /// A fault could not be injected.
    pub(super) injection_failed: bool,
    /// Why the forward phases stopped early, if they did.
    pub(super) aborted: Option<&'a (AbortReason, String)>,
    /// A critical precheck or verification failed, or a guard was breached.
    pub(super) critical_failed: bool,
    /// The prechecks held again after recovery (or there was nothing to re-check).
    pub(super) steady_ok: bool,
    /// The declared RTO, ms.
    pub(super) rto_ms: Option<f64>,
    /// The measured RTO: from the disruption until the service indicators were
    /// restored, ms (None when not measured or not restored).
    pub(super) rto_measured_ms: Option<f64>,
    /// Whether the service indicators saw the service restored (None: not measured).
    pub(super) service_restored: Option<bool>,
    /// Whether missing the RTO or the RPO fails the drill.
    pub(super) objectives_critical: bool,
    /// The declared RPO, ms.
    pub(super) rpo_ms: Option<f64>,
    /// The data-loss window measured by the `delivery:` entries, ms (None: not measured).
    pub(super) rpo_measured_ms: Option<f64>,
    /// Every recovery step passed.
    pub(super) recovery_steps_ok: bool,
}

/// The run's status and why: the loudest failure wins, and "something may be left
/// behind" is the loudest of all.
pub(super) fn decide(v: &Verdict) -> (Status, String) {
    const LEFT_BEHIND: &str = "something may be left behind; run `firedrill recover`";
    // The abort's own words when it was this failure that stopped the drill.
    let abort_or = |fallback: &str| v.aborted.map_or_else(|| fallback.into(), |a| a.1.clone());
    if !v.revert_ok {
        (
            Status::RecoveryIncomplete,
            format!("a fault could not be reverted: {LEFT_BEHIND}"),
        )
    } else if !v.revert_gaps.is_empty() {
        (
            Status::RecoveryIncomplete,
            format!(
                "the ledger holds faults with no revert recorded: {}; {LEFT_BEHIND}",
                v.revert_gaps.join("; ")
            ),
        )
    } else if v.injection_failed {
        (
            Status::InjectionFailed,
            abort_or("a fault could not be injected"),
        )
    } else if let Some((AbortReason::Signal | AbortReason::MaxDuration, why)) = v.aborted {
        (Status::Failed, format!("aborted: {why}"))
    } else if v.critical_failed {
        (Status::Failed, abort_or("a critical assertion failed"))
    } else if !v.steady_ok {
        (
            Status::Failed,
            "steady state did not return after recovery".into(),
        )
    } else if let Some(rto) = v.rto_ms
        && v.objectives_critical
        && v.service_restored == Some(false)
    {
        (
            Status::Failed,
            format!("the service was not restored (RTO {rto:.0} ms)"),
        )
    } else if let (Some(rto), Some(took)) = (v.rto_ms, v.rto_measured_ms)
        && v.objectives_critical
        && took > rto
    {
        (
            Status::Failed,
            format!(
                "measured RTO {took:.0} ms (disruption to service restored) is above the RTO of {rto:.0} ms"
            ),
        )
    } else if let (Some(rpo), Some(lost)) = (v.rpo_ms, v.rpo_measured_ms)
        && v.objectives_critical
        && lost > rpo
    {
        (
            Status::Failed,
            format!(
                "measured RPO {lost:.0} ms (acknowledged messages lost) is above the RPO of {rpo:.0} ms"
            ),
        )
    } else if !v.recovery_steps_ok {
        (Status::Failed, "a recovery step failed".into())
    } else {
        (
            Status::Passed,
            "every critical assertion held and every fault was reverted".into(),
        )
    }
}

/// Every inject record of a ledger without a recorded revert, and every line that
/// cannot be read (it may be one). Empty when the ledger proves all was reverted.
pub(super) fn revert_gaps(scan: &ledger::Scan) -> Vec<String> {
    let mut gaps: Vec<String> = ledger::pending(&scan.entries)
        .iter()
        .rev()
        .map(|p| format!("`{}` (record {})", p.step, p.seq))
        .collect();
    gaps.extend(scan.unreadable.iter().map(|e| e.to_string()));
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ledger::tests::undo as stop;
    use crate::engine::ledger::{Entry, Ledger, now_rfc3339};
    use crate::target::Target;

    fn passing(gaps: &[String]) -> Verdict<'_> {
        Verdict {
            revert_ok: true,
            revert_gaps: gaps,
            injection_failed: false,
            aborted: None,
            critical_failed: false,
            steady_ok: true,
            rto_ms: None,
            rto_measured_ms: None,
            service_restored: None,
            objectives_critical: true,
            rpo_ms: None,
            rpo_measured_ms: None,
            recovery_steps_ok: true,
        }
    }

    #[test]
    fn a_missed_rpo_fails_and_an_unmeasured_one_never_does() {
        let missed = Verdict {
            rpo_ms: Some(0.0),
            rpo_measured_ms: Some(2500.0),
            ..passing(&[])
        };
        let (status, reason) = decide(&missed);
        assert_eq!(status, Status::Failed);
        assert!(reason.contains("measured RPO 2500 ms"), "{reason}");
        let met = Verdict {
            rpo_measured_ms: Some(0.0),
            ..missed
        };
        assert_eq!(decide(&met).0, Status::Passed);
        let unmeasured = Verdict {
            rpo_measured_ms: None,
            ..missed
        };
        assert_eq!(decide(&unmeasured).0, Status::Passed);
        let lenient = Verdict {
            objectives_critical: false,
            ..missed
        };
        assert_eq!(decide(&lenient).0, Status::Passed);
    }

    fn gaps_of(l: &Ledger) -> Vec<String> {
        revert_gaps(&ledger::scan(l.path()).unwrap())
    }

    #[test]
    fn a_run_whose_ledger_proves_every_revert_passes() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(dir.path(), "r1").unwrap();
        let a = l.record_inject("a", &Target::Local, &stop(1)).unwrap();
        l.append(&Entry::Reverted {
            seq: a,
            at: now_rfc3339(),
        })
        .unwrap();
        let gaps = gaps_of(&l);
        assert!(gaps.is_empty(), "{gaps:?}");
        let (status, _) = decide(&passing(&gaps));
        assert_eq!(status, Status::Passed);
        assert_eq!(status.exit_code(), 0);
    }

    #[test]
    fn an_inject_without_a_recorded_revert_is_recovery_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(dir.path(), "r1").unwrap();
        let a = l.record_inject("a", &Target::Local, &stop(1)).unwrap();
        l.record_inject("freeze db", &Target::Local, &stop(2))
            .unwrap();
        l.append(&Entry::Reverted {
            seq: a,
            at: now_rfc3339(),
        })
        .unwrap();
        let gaps = gaps_of(&l);
        assert_eq!(gaps, ["`freeze db` (record 2)"]);
        // Even when every revert the engine attempted succeeded and all else held.
        let (status, reason) = decide(&passing(&gaps));
        assert_eq!(status, Status::RecoveryIncomplete);
        assert_eq!(status.exit_code(), 4);
        assert!(reason.contains("`freeze db` (record 2)"), "{reason}");
        // And it wins over every other failure.
        let aborted = (AbortReason::InjectionFailed, "x".to_string());
        let v = Verdict {
            injection_failed: true,
            critical_failed: true,
            steady_ok: false,
            aborted: Some(&aborted),
            ..passing(&gaps)
        };
        assert_eq!(decide(&v).0, Status::RecoveryIncomplete);
    }

    #[test]
    fn an_unreadable_ledger_line_is_recovery_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::create(dir.path(), "r1").unwrap();
        std::fs::write(l.path(), "{\"op\":\"inject\",\"seq\":1\n").unwrap();
        let gaps = gaps_of(&l);
        assert_eq!(gaps.len(), 1);
        assert!(
            gaps[0].contains(":1 (byte 0): unreadable record"),
            "{gaps:?}"
        );
        assert_eq!(decide(&passing(&gaps)).0, Status::RecoveryIncomplete);
    }

    #[test]
    fn the_loudest_failure_wins() {
        let signal = (AbortReason::Signal, "interrupted by signal".to_string());
        let critical = (
            AbortReason::CriticalFailure,
            "critical verification `sms` failed".to_string(),
        );
        let mut v = Verdict {
            revert_ok: false,
            injection_failed: true,
            aborted: Some(&signal),
            critical_failed: true,
            steady_ok: false,
            rto_ms: Some(1000.0),
            rto_measured_ms: Some(1500.0),
            service_restored: Some(true),
            recovery_steps_ok: false,
            ..passing(&[])
        };
        // Each failure is mended in turn, and the next loudest one speaks.
        let said = |v: &Verdict, status: Status, reason: &str| {
            let (s, r) = decide(v);
            assert_eq!(s, status, "{r}");
            assert!(r.starts_with(reason), "{r:?} should start with {reason:?}");
        };
        said(
            &v,
            Status::RecoveryIncomplete,
            "a fault could not be reverted",
        );
        v.revert_ok = true;
        said(&v, Status::InjectionFailed, "interrupted by signal");
        v.injection_failed = false;
        said(&v, Status::Failed, "aborted: interrupted by signal");
        // An abort for a failed assertion is not "aborted": the assertion speaks.
        v.aborted = Some(&critical);
        said(&v, Status::Failed, "critical verification `sms` failed");
        v.aborted = None;
        said(&v, Status::Failed, "a critical assertion failed");
        v.critical_failed = false;
        said(&v, Status::Failed, "steady state did not return");
        v.steady_ok = true;
        said(
            &v,
            Status::Failed,
            "measured RTO 1500 ms (disruption to service restored) is above the RTO of 1000 ms",
        );
        v.rto_measured_ms = Some(1000.0);
        said(&v, Status::Failed, "a recovery step failed");
        v.recovery_steps_ok = true;
        said(&v, Status::Passed, "every critical assertion held");
    }

    #[test]
    fn a_missed_rto_fails_unless_non_critical_and_unmeasured_never_fails() {
        let v = Verdict {
            rto_ms: Some(5000.0),
            rto_measured_ms: Some(6100.0),
            service_restored: Some(true),
            ..passing(&[])
        };
        assert_eq!(decide(&v).0, Status::Failed);
        let lenient = Verdict {
            objectives_critical: false,
            ..v
        };
        assert_eq!(decide(&lenient).0, Status::Passed);
        let down = Verdict {
            rto_measured_ms: None,
            service_restored: Some(false),
            ..passing(&[])
        };
        assert_eq!(
            decide(&Verdict {
                rto_ms: Some(5000.0),
                ..down
            })
            .0,
            Status::Failed
        );
        // Not measured is not a failure, and not met either (see the record).
        let unmeasured = Verdict {
            rto_ms: Some(5000.0),
            ..passing(&[])
        };
        assert_eq!(decide(&unmeasured).0, Status::Passed);
    }
}
