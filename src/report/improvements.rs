//! Identified improvements: deterministic rules over the run model.
use super::model::{Improvement, RunRecord};

/// Derives the improvements of a run.
pub fn derive(_record: &RunRecord) -> Vec<Improvement> {
    Vec::new()
}
