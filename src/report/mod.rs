//! Reports: the improvement rules and the renderers, pure functions of the run model
//! ([`crate::model`]).
//!
//! Renderers read only [`RunRecord`], so `firedrill report journal.json`
//! re-renders any past run exactly.

pub mod improvements;
pub mod render;
pub(crate) mod words;

pub use render::{Format, ReportError, render, write_reports};

use crate::model::RunRecord;

/// Replaces every secret value in every string of the record by `***`. Done once, on
/// the model, so no renderer can forget it.
pub fn redact(record: &mut RunRecord, secrets: &[String]) {
    if secrets.is_empty() {
        return;
    }
    let mut v = serde_json::to_value(&*record).expect("run record serialises");
    redact_value(&mut v, secrets);
    *record = serde_json::from_value(v).expect("redaction keeps the shape");
}

fn redact_value(v: &mut serde_json::Value, secrets: &[String]) {
    match v {
        serde_json::Value::String(s) => {
            for secret in secrets {
                if !secret.is_empty() && s.contains(secret.as_str()) {
                    *s = s.replace(secret.as_str(), "***");
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| redact_value(x, secrets)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| redact_value(x, secrets)),
        _ => {}
    }
}
