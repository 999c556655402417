//! The exercise-record part of the view: what an audit needs besides the step tables
//! (ISO 22301 §8.5, SOC 2 A1.3, DORA): id and scope, participants, deviations from the
//! plan, findings with their follow-up, lessons learned and the sign-off block. All of
//! it is computed here from the run record, so templates only lay it out.

use serde::Serialize;

use crate::model::*;
use crate::report::words::human_ms;

/// The exercise record as the templates see it.
#[derive(Serialize)]
pub(crate) struct ExerciseView<'a> {
    /// `metadata.exercise_id`, else the run id.
    pub id: &'a str,
    /// Whether `id` is the run id (no exercise id declared).
    pub id_is_run_id: bool,
    pub environment: &'a str,
    /// The systems in scope, comma-separated, or `—`.
    pub systems: String,
    pub rationale: Option<&'a str>,
    pub risk_ref: &'a str,
    pub participants: &'a [ParticipantRecord],
    /// One signature line per role.
    pub sign_off: Vec<String>,
    /// `0.1.0 (commit 0123abc…)` or `0.1.0 (commit unknown)`.
    pub build: String,
    /// The scenario text embedded in the journal, if it is.
    pub scenario_text: Option<&'a str>,
    /// Steps that did not go as planned.
    pub deviations: Vec<Deviation>,
    /// The improvements with their follow-up fields in words.
    pub findings: Vec<FindingView<'a>>,
    /// What the run confirmed and what it showed needs work.
    pub lessons: Vec<Lesson>,
}

/// A departure from the plan: a step skipped, retried, timed out, or the drill aborted.
#[derive(Serialize)]
pub(crate) struct Deviation {
    /// `skipped`, `retried`, `timed out`, `aborted`, `effect differs`.
    pub kind: &'static str,
    /// The step concerned (empty for the run as a whole).
    pub step: String,
    pub phase: String,
    pub detail: String,
}

/// One finding with its follow-up.
#[derive(Serialize)]
pub(crate) struct FindingView<'a> {
    #[serde(flatten)]
    pub finding: &'a Improvement,
    pub owner_label: &'a str,
    pub due_label: &'a str,
    pub status_label: &'static str,
}

/// One lesson: `confirmed` (the plan worked) or `to improve` (a finding).
#[derive(Serialize)]
pub(crate) struct Lesson {
    pub kind: &'static str,
    pub text: String,
}

pub(crate) fn build(run: &RunRecord) -> ExerciseView<'_> {
    let x = &run.exercise;
    ExerciseView {
        id: x.id.as_deref().unwrap_or(&run.run_id),
        id_is_run_id: x.id.is_none(),
        environment: x.environment.as_deref().unwrap_or("—"),
        systems: if x.systems.is_empty() {
            "—".into()
        } else {
            x.systems.join(", ")
        },
        rationale: x.rationale.as_deref(),
        risk_ref: x.risk_ref.as_deref().unwrap_or("—"),
        participants: &x.participants,
        sign_off: if x.sign_off.is_empty() {
            vec!["exercise lead".into(), "system owner".into()]
        } else {
            x.sign_off.clone()
        },
        build: format!(
            "{} (commit {})",
            run.tool.version,
            run.tool.commit.as_deref().unwrap_or("unknown")
        ),
        scenario_text: run.scenario.text.as_deref(),
        deviations: deviations(run),
        findings: run
            .improvements
            .iter()
            .map(|i| FindingView {
                finding: i,
                owner_label: i.owner.as_deref().unwrap_or("unassigned"),
                due_label: i.due.as_deref().unwrap_or("—"),
                status_label: i.status.as_str(),
            })
            .collect(),
        lessons: lessons(run),
    }
}

/// Whether a failed step's detail says it ran out of time.
fn timed_out(s: &StepRecord) -> bool {
    let d = s.detail.to_ascii_lowercase();
    d.contains("timed out") || d.contains("timeout") || d.contains("deadline")
}

fn deviations(run: &RunRecord) -> Vec<Deviation> {
    let mut out = Vec::new();
    if let Some(a) = run.outcome.aborted {
        out.push(Deviation {
            kind: "aborted",
            step: String::new(),
            phase: String::new(),
            detail: format!(
                "the drill was stopped early ({}): {}",
                serde_json::to_value(a)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                    .unwrap_or_default(),
                run.outcome.reason
            ),
        });
    }
    for s in &run.steps {
        let failed = matches!(s.status, StepStatus::Failed | StepStatus::Error);
        let (kind, detail) = match s.status {
            StepStatus::Skipped => (
                "skipped",
                if s.detail.is_empty() {
                    "not run".to_string()
                } else {
                    s.detail.clone()
                },
            ),
            _ if failed && s.within_ms.is_some() => (
                "timed out",
                format!(
                    "did not hold within its {} `within` ({} attempt(s)): {}",
                    human_ms(s.within_ms.unwrap_or_default()),
                    s.attempts,
                    s.detail
                ),
            ),
            _ if failed && timed_out(s) => ("timed out", s.detail.clone()),
            StepStatus::Passed
                if s.attempts > 1
                    && matches!(s.phase, Phase::Precheck | Phase::Recovery)
                    && s.within_ms.is_none() =>
            {
                (
                    "retried",
                    format!("passed after {} attempts: {}", s.attempts, s.detail),
                )
            }
            _ => match s.fault.as_ref().and_then(|f| f.effect.as_ref()) {
                Some(e) if !e.as_declared => (
                    "effect differs",
                    format!("declared: {}; measured: {}", e.declared, e.measured),
                ),
                _ => continue,
            },
        };
        out.push(Deviation {
            kind,
            step: s.name.clone(),
            phase: s.phase.as_str().to_string(),
            detail,
        });
    }
    out
}

fn lessons(run: &RunRecord) -> Vec<Lesson> {
    let mut out = Vec::new();
    let o = &run.objectives;
    if let (Some(rto), Some(m), Some(true)) = (o.rto_ms, o.rto_measured_ms, o.rto_met) {
        out.push(Lesson {
            kind: "confirmed",
            text: format!(
                "the service was restored {} after the disruption, within its RTO of {}",
                human_ms(m),
                human_ms(rto)
            ),
        });
    }
    for s in &run.steps {
        if s.phase == Phase::Verification && s.critical && s.status == StepStatus::Passed {
            let when = s
                .first_held_ms
                .map(|h| format!(" ({} after the disruption)", human_ms(h)))
                .unwrap_or_default();
            out.push(Lesson {
                kind: "confirmed",
                text: format!("\"{}\" held{when}", s.name),
            });
        }
    }
    for i in &run.improvements {
        out.push(Lesson {
            kind: "to improve",
            text: format!("{}: {}", i.title, i.recommendation),
        });
    }
    out
}
