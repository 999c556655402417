//! Reports: the improvement rules, the renderers, and how the files reach the disk;
//! pure functions of the run model ([`crate::model`]).
//!
//! Renderers read only [`RunRecord`], so `firedrill report journal.json`
//! re-renders any past run exactly.

mod atomic;
pub mod history;
pub mod improvements;
pub mod integrity;
pub mod render;
pub(crate) mod words;
pub mod write;

pub use render::{Format, ReportError, check_templates, render};
pub use write::{RunDir, create_run_dir, write_atomic, write_reports};

use crate::model::RunRecord;

/// Rounds every timing (every number under a key ending in `_ms`: `t_ms`,
/// `duration_ms`, `effective_after_ms`, a traffic probe's `p95_ms`, …) to whole
/// microseconds. Done once, where the run model is built: a measured `7.206058000000001`
/// carries no information beyond the microsecond, and numbers with that few digits read
/// back exactly, so `journal.json`, `firedrill report --format json` and every renderer
/// show the same figures.
pub fn round_timings(record: &mut RunRecord) {
    let mut v = serde_json::to_value(&*record).expect("run record serialises");
    round_value(&mut v, false);
    *record = serde_json::from_value(v).expect("rounding keeps the shape");
}

fn round_value(v: &mut serde_json::Value, timing: bool) {
    match v {
        serde_json::Value::Number(n) if timing && n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            let rounded = (x * 1000.0).round() / 1000.0;
            if let Some(r) = serde_json::Number::from_f64(rounded) {
                *n = r;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| round_value(x, timing)),
        serde_json::Value::Object(o) => o
            .iter_mut()
            .for_each(|(k, x)| round_value(x, timing || k.ends_with("_ms"))),
        _ => {}
    }
}

/// Replaces every secret value, in every encoding it can take (percent-encoded in a
/// URL, escaped in a message, …), in every string of the record by `***`. Done once,
/// on the model, so no renderer can forget it.
pub fn redact(record: &mut RunRecord, secrets: &[String]) {
    let redactor = crate::secrets::Redactor::new(secrets.iter().cloned());
    if redactor.is_empty() {
        return;
    }
    let mut v = serde_json::to_value(&*record).expect("run record serialises");
    redact_value(&mut v, &redactor);
    *record = serde_json::from_value(v).expect("redaction keeps the shape");
}

fn redact_value(v: &mut serde_json::Value, redactor: &crate::secrets::Redactor) {
    match v {
        serde_json::Value::String(s) => {
            if let std::borrow::Cow::Owned(r) = redactor.redact(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| redact_value(x, redactor)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| redact_value(x, redactor)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::round_value;

    #[test]
    fn only_timings_are_rounded_to_microseconds() {
        let mut v = json!({
            "t_ms": 9.541106000000001,
            "metrics": { "p95_ms": 13.016399999999999, "success_rate": 0.6666666666666666 },
            "effect": { "samples_ms": [1.0000004, 2.5], "count": 3 },
            "ratio": 1.23456789
        });
        round_value(&mut v, false);
        assert_eq!(
            v,
            json!({
                "t_ms": 9.541,
                "metrics": { "p95_ms": 13.016, "success_rate": 0.6666666666666666 },
                "effect": { "samples_ms": [1.0, 2.5], "count": 3 },
                "ratio": 1.23456789
            })
        );
    }
}
