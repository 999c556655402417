//! The stages of a staged switchover as spans of the run.
//!
//! An `http_fault` with a staged `reroute` moves a growing share of requests to an
//! alternate upstream (0 %, 10 %, 50 %, 100 % …). A drill-wide "2 messages lost" does
//! not say at which share the loss began, which is what decides where a real
//! switchover must stop. The fault records its schedule in its effect's details
//! (`switchovers`: when stage 1 started, each stage's share and hold); the run model
//! reads it back as the stages that ran, cut at the fault's revert
//! ([`StepRecord::switchover_stages`], which the reports use too), and this file
//! turns them into wall-clock windows over which the `delivery:` figures are broken
//! down.

use crate::model::StepRecord;
use crate::probe::delivery::Window;

/// One window per stage that ran ([`StepRecord::switchover_stages`]), in unix ms:
/// `run_start_unix_ms` converts run time to wall-clock time (the send times of
/// messages are wall-clock).
pub(crate) fn windows(steps: &[StepRecord], now_ms: f64, run_start_unix_ms: f64) -> Vec<Window> {
    steps
        .iter()
        .flat_map(|s| s.switchover_stages(now_ms))
        .map(|st| Window {
            label: st.label,
            from_unix_ms: run_start_unix_ms + st.from_ms,
            to_unix_ms: run_start_unix_ms + st.to_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(revert_at: Option<f64>) -> StepRecord {
        let details = serde_json::json!({ "switchovers": [{
            "to": "127.0.0.1:9",
            "started_after_ms": 5.0,
            "stages": [
                { "percentage": 0.0, "hold_ms": 2000.0 },
                { "percentage": 10.0, "hold_ms": 2000.0 },
                { "percentage": 50.0, "hold_ms": 2000.0 },
                { "percentage": 100.0, "hold_ms": 2000.0 }
            ]
        }]});
        serde_json::from_value(serde_json::json!({
            "phase": "fault", "name": "switch", "status": "passed", "critical": true,
            "started_ms": 1000.0, "duration_ms": 10.0, "description": "", "attempts": 1,
            "detail": "",
            "fault": {
                "kind": "http_fault", "target": "local", "level": "smoke", "ttl_ms": 60000.0,
                "effect": { "declared": "", "measured": "", "as_declared": true, "details": details },
                "revert": revert_at.map(|t| serde_json::json!({ "ok": true, "started_ms": t, "duration_ms": 1.0 }))
            }
        }))
        .unwrap()
    }

    fn spans(w: &[Window]) -> Vec<(String, f64, f64)> {
        w.iter()
            .map(|w| (w.label.clone(), w.from_unix_ms, w.to_unix_ms))
            .collect()
    }

    #[test]
    fn a_rollback_mid_way_cuts_the_stage_it_stood_at_and_drops_the_rest() {
        // Stage 1 from 1005; reverted at 4505, in stage 2.
        let w = windows(&[step(Some(4505.0))], 9e9, 100_000.0);
        assert_eq!(
            spans(&w),
            vec![
                ("switch: stage 1 of 4 (0%)".into(), 101_005.0, 103_005.0),
                ("switch: stage 2 of 4 (10%)".into(), 103_005.0, 104_505.0),
            ]
        );
    }

    #[test]
    fn the_last_stage_lasts_until_the_revert_or_now() {
        let w = windows(&[step(Some(20_000.0))], 9e9, 0.0);
        assert_eq!(w.len(), 4);
        assert_eq!((w[3].from_unix_ms, w[3].to_unix_ms), (7005.0, 20_000.0));
        let w = windows(&[step(None)], 12_000.0, 0.0);
        assert_eq!((w[3].from_unix_ms, w[3].to_unix_ms), (7005.0, 12_000.0));
    }

    #[test]
    fn faults_without_a_schedule_give_no_window() {
        let mut s = step(None);
        s.fault.as_mut().unwrap().effect.as_mut().unwrap().details = serde_json::json!({});
        assert!(windows(&[s], 1e9, 0.0).is_empty());
    }
}
