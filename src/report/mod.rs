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
