//! How figures and statuses are written, in one place for the improvement rules and
//! every renderer (so the words agree everywhere, and neither imports the other).

use crate::model::{StepRecord, StepStatus};

/// Milliseconds in words: `850 ms`, `1.2 s`, `2 min 5 s`, `15 min`.
pub(crate) fn human_ms(ms: f64) -> String {
    let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        match s % 60 {
            0 => format!("{} min", s / 60),
            r => format!("{} min {r} s", s / 60),
        }
    }
}

/// Words for a step's status; a non-critical failure is told apart from a critical one.
pub(crate) fn step_label(s: &StepRecord) -> &'static str {
    match s.status {
        StepStatus::Passed => "passed",
        StepStatus::Failed if s.critical => "FAILED",
        StepStatus::Failed => "failed (non-critical)",
        StepStatus::Error => "ERROR",
        StepStatus::Skipped => "skipped",
    }
}

#[cfg(test)]
mod tests {
    use test_case::test_case;

    use super::*;

    #[test_case(0.4, "0 ms")]
    #[test_case(850.0, "850 ms")]
    #[test_case(1_240.0, "1.2 s")]
    #[test_case(59_940.0, "59.9 s")]
    #[test_case(60_000.0, "1 min")]
    #[test_case(125_000.0, "2 min 5 s")]
    #[test_case(-3.0, "0 ms")]
    #[test_case(f64::NAN, "0 ms")]
    fn durations(ms: f64, words: &str) {
        assert_eq!(human_ms(ms), words);
    }
}
