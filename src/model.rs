//! The run model: everything that happened in a drill, as data.
//!
//! The engine fills it in; `journal.json` is this model serialised; every renderer
//! (HTML, Markdown, JUnit) and every improvement rule reads only this model, so a
//! journal can be re-rendered later (`firedrill report`) and gives the same report.
//! It sits between the faults and probes (whose effects it records) and the engine and
//! reports (which write and read it), so neither of those imports the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fault::{Effect, Reverted};
use crate::scenario::{FindingStatus, Level};

/// Bumped when the journal's shape changes incompatibly.
pub const JOURNAL_VERSION: u32 = 1;

/// One drill run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// Shape version of this journal.
    pub journal_version: u32,
    /// `firedrill` and its version.
    pub tool: ToolInfo,
    /// Unique id of the run; names the ledger and the nftables table.
    pub run_id: String,
    /// The scenario that ran.
    pub scenario: ScenarioInfo,
    /// Host name where the engine ran.
    pub host: String,
    /// Who ran it (`$SUDO_USER`, `$USER` or the uid).
    pub operator: String,
    /// The `--level` ceiling.
    pub level: Level,
    /// Variables as substituted, secrets shown as `***`.
    pub vars: BTreeMap<String, String>,
    /// RFC 3339 UTC start time.
    pub started_at: String,
    /// RFC 3339 UTC end time.
    pub finished_at: String,
    /// Whole run, in milliseconds.
    pub duration_ms: f64,
    /// How the drill ended.
    pub outcome: Outcome,
    /// Objectives and what was measured against them.
    pub objectives: ObjectivesRecord,
    /// Every event in order, with wall-clock and monotonic time.
    pub timeline: Vec<Event>,
    /// Every step (prechecks, faults, verifications, recovery, steady-state re-check) in order.
    pub steps: Vec<StepRecord>,
    /// What each guard saw.
    pub guards: Vec<GuardRecord>,
    /// Findings derived from this model by deterministic rules.
    pub improvements: Vec<Improvement>,
    /// Path of the ledger of undo records.
    pub ledger: String,
    /// A rehearsal (`run --rehearse`): every check ran, no fault was injected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rehearsal: bool,
    /// The notifications the run sent (`notify:`), and whether each was delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationRecord>,
    /// The exercise record: id, scope, rationale, participants, sign-off. Empty in
    /// journals written before it existed.
    #[serde(default)]
    pub exercise: ExerciseRecord,
}

/// One notification sent about the run: to whom, about what, and what came back.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NotificationRecord {
    /// The `notify:` entry's name.
    pub channel: String,
    /// `wecom_robot`, `slack` or `webhook`.
    pub kind: String,
    /// What happened: `started`, `fault_injected`, `aborted`, `finished`, `recovery_incomplete`.
    pub event: String,
    /// Milliseconds since the run started, when it was sent.
    pub t_ms: f64,
    /// Delivered (a 2xx answer, and for WeCom and Slack their own success marker).
    pub delivered: bool,
    /// The answer or the error, redacted and bounded.
    pub detail: String,
}

/// What an exercise record holds besides the run itself (ISO 22301 §8.5, SOC 2 A1.3,
/// DORA): from the scenario's `metadata` and `--participant`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ExerciseRecord {
    /// `metadata.exercise_id`; the reports fall back to the run id.
    #[serde(default)]
    pub id: Option<String>,
    /// The environment drilled (scope).
    #[serde(default)]
    pub environment: Option<String>,
    /// The systems in scope.
    #[serde(default)]
    pub systems: Vec<String>,
    /// Why the exercise is run.
    #[serde(default)]
    pub rationale: Option<String>,
    /// Risk-register or business-impact-analysis reference.
    #[serde(default)]
    pub risk_ref: Option<String>,
    /// From the scenario's metadata, then from `--participant`.
    #[serde(default)]
    pub participants: Vec<ParticipantRecord>,
    /// Roles that sign the record off.
    #[serde(default)]
    pub sign_off: Vec<String>,
    /// Defaults the findings got (owner, due date, status).
    #[serde(default)]
    pub finding_owner: Option<String>,
    /// Due date of new findings, `YYYY-MM-DD` (the run's start plus `findings.due_in`).
    #[serde(default)]
    pub finding_due: Option<String>,
    /// Status of new findings.
    #[serde(default)]
    pub finding_status: FindingStatus,
}

/// A participant and their role.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ParticipantRecord {
    pub name: String,
    pub role: String,
    /// `scenario` (its metadata) or `command line` (`--participant`).
    pub source: String,
}

impl ExerciseRecord {
    /// The record's part from the scenario metadata and `--participant` pairs;
    /// `started_at` (RFC 3339) dates the findings' due date.
    pub fn new(
        meta: &crate::scenario::Metadata,
        cli_participants: &[(String, String)],
        started_at: &str,
    ) -> Self {
        let mut participants: Vec<ParticipantRecord> = meta
            .participants
            .iter()
            .map(|p| ParticipantRecord {
                name: p.name.clone(),
                role: p.role.clone(),
                source: "scenario".into(),
            })
            .collect();
        participants.extend(cli_participants.iter().map(|(n, r)| ParticipantRecord {
            name: n.clone(),
            role: r.clone(),
            source: "command line".into(),
        }));
        let due = humantime::parse_rfc3339_weak(started_at.trim_end_matches('Z'))
            .ok()
            .map(|t| {
                let due = t + meta.findings.due_in.0;
                humantime::format_rfc3339_seconds(due).to_string()[..10].to_string()
            });
        ExerciseRecord {
            id: meta.exercise_id.clone(),
            environment: meta.environment.clone(),
            systems: meta.systems.clone(),
            rationale: meta.rationale.clone(),
            risk_ref: meta.risk_ref.clone(),
            participants,
            sign_off: meta.sign_off.clone(),
            finding_owner: meta.findings.owner.clone().or_else(|| meta.owner.clone()),
            finding_due: due,
            finding_status: meta.findings.status,
        }
    }
}

/// Tool name and version.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
    /// Git commit the binary was built from (`git rev-parse HEAD` at build time);
    /// None when built outside a git checkout, or in journals written before it existed.
    #[serde(default)]
    pub commit: Option<String>,
}

impl ToolInfo {
    /// This build of firedrill.
    pub fn current() -> Self {
        ToolInfo {
            name: "firedrill".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            commit: option_env!("FIREDRILL_GIT_COMMIT")
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        }
    }
}

/// The scenario, identified.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScenarioInfo {
    pub name: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    /// Path of the scenario file as given.
    pub file: String,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    pub labels: BTreeMap<String, String>,
    /// The whole scenario file as it ran (secrets it holds literally redacted), so the
    /// record shows exactly what was planned. Absent in older journals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Final status of a run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every critical assertion held and everything was reverted.
    Passed,
    /// A critical assertion, precheck, guard or objective failed.
    Failed,
    /// A fault could not be injected (or the target was locked by another run).
    InjectionFailed,
    /// A revert failed: something may be left behind.
    RecoveryIncomplete,
    /// The engine died mid-run (e.g. SIGKILL); `firedrill recover` wrote this record
    /// from the run's ledger.
    Interrupted,
}

impl Status {
    /// Exit code for CI, as documented in the README.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Passed => 0,
            Status::Failed => 1,
            Status::InjectionFailed => 3,
            Status::RecoveryIncomplete => 4,
            // The drill did not complete, so it did not pass.
            Status::Interrupted => 1,
        }
    }
}

impl Status {
    /// In capitals, as the reports and the end of `firedrill run` show it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Passed => "PASSED",
            Status::Failed => "FAILED",
            Status::InjectionFailed => "INJECTION FAILED",
            Status::RecoveryIncomplete => "RECOVERY INCOMPLETE",
            Status::Interrupted => "INTERRUPTED",
        }
    }
}

/// How the drill ended and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub exit_code: i32,
    /// One sentence: why the drill ended this way.
    pub reason: String,
    /// Why the drill stopped early, if it did.
    pub aborted: Option<AbortReason>,
}

/// Why a drill was cut short.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AbortReason {
    PrecheckFailed,
    CriticalFailure,
    GuardBreached,
    InjectionFailed,
    MaxDuration,
    Signal,
    Panic,
}

/// Objectives and measurements. Service figures (`detect_ms`, `downtime_ms`,
/// `rto_measured_ms`) come from the service indicators and are measured from the
/// disruption: the first fault taking effect.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ObjectivesRecord {
    /// Declared RTO, ms.
    pub rto_ms: Option<f64>,
    /// Declared cap on the drill, ms.
    pub max_duration_ms: f64,
    /// Time from recovery start (faults reverted) until the steady-state probes held
    /// again, ms. Not the RTO: it ignores the outage before recovery started.
    pub recovery_ms: Option<f64>,
    /// Whether `rto_measured_ms <= rto_ms`; false when the service was not restored;
    /// None when no RTO is declared or nothing was measured.
    pub rto_met: Option<bool>,
    /// Whether missing an objective fails the drill.
    #[serde(default = "yes")]
    pub critical: bool,
    /// What the indicators saw; `not_measured` in journals written before they existed.
    #[serde(default)]
    pub service: ServiceState,
    /// Names of the probes observed as service indicators.
    #[serde(default)]
    pub indicators: Vec<String>,
    /// Monotonic ms since run start when the first fault took effect.
    #[serde(default)]
    pub disruption_start_ms: Option<f64>,
    /// From the disruption until an indicator was first seen down, ms.
    #[serde(default)]
    pub detect_ms: Option<f64>,
    /// From the first down observation until restored, ms (0 when never down).
    #[serde(default)]
    pub downtime_ms: Option<f64>,
    /// From the disruption until restored (first of `restored_after` consecutive good
    /// observations of every indicator), ms (0 when never down).
    #[serde(default)]
    pub rto_measured_ms: Option<f64>,
    /// The indicators' observation interval, ms: each figure is exact to within it
    /// (plus the probe's own time).
    #[serde(default)]
    pub resolution_ms: Option<f64>,
    /// Declared RPO, ms.
    #[serde(default)]
    pub rpo_objective_ms: Option<f64>,
    /// Measured data-loss window, ms (the largest of the `delivery:` entries' `rpo_ms`); None: no delivery entry measured one.
    #[serde(default)]
    pub rpo_ms: Option<f64>,
    /// The steady-state re-check's polling interval (the smallest `interval` of its
    /// checks), ms: `recovery_ms` is late by at most this (plus the probes' own time).
    #[serde(default)]
    pub recovery_resolution_ms: Option<f64>,
}

fn yes() -> bool {
    true
}

impl Default for ObjectivesRecord {
    /// Nothing declared, nothing measured; objectives critical (the scenario default).
    fn default() -> Self {
        ObjectivesRecord {
            rto_ms: None,
            max_duration_ms: 0.0,
            recovery_ms: None,
            rto_met: None,
            critical: true,
            service: ServiceState::NotMeasured,
            indicators: Vec::new(),
            disruption_start_ms: None,
            detect_ms: None,
            downtime_ms: None,
            rto_measured_ms: None,
            resolution_ms: None,
            rpo_objective_ms: None,
            rpo_ms: None,
            recovery_resolution_ms: None,
        }
    }
}

/// What the service indicators saw of the disruption.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// No indicator observed after a disruption (no fault took effect, no indicator).
    #[default]
    NotMeasured,
    /// Every observation after the disruption was good: downtime and RTO are 0.
    NeverDown,
    /// Down, then restored.
    Restored,
    /// Down and still not restored when observation ended.
    NotRestored,
}

impl ServiceState {
    /// In words, as the reports show it.
    pub fn label(self) -> &'static str {
        match self {
            ServiceState::NotMeasured => "not measured",
            ServiceState::NeverDown => "never went down",
            ServiceState::Restored => "went down and was restored",
            ServiceState::NotRestored => "went down and was NOT restored",
        }
    }
}

pub use crate::rt::Phase;

impl From<crate::probe::traffic::TrafficVerdict> for StepRecord {
    /// A traffic entry is recorded as a verification step.
    fn from(v: crate::probe::traffic::TrafficVerdict) -> Self {
        StepRecord {
            status: match v.passed {
                None => StepStatus::Skipped,
                Some(true) => StepStatus::Passed,
                Some(false) => StepStatus::Failed,
            },
            critical: v.critical,
            duration_ms: v.duration_ms,
            attempts: v.requests,
            detail: v.detail,
            metrics: v.metrics,
            ..StepRecord::new(Phase::Verification, v.name, v.description, v.started_ms)
        }
    }
}

/// One timeline event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Monotonic milliseconds since the run started.
    pub t_ms: f64,
    /// RFC 3339 UTC wall-clock time (millisecond precision).
    pub at: String,
    pub phase: Phase,
    /// Machine-readable event name, e.g. `fault_effective`, `guard_breached`.
    pub event: String,
    /// The step concerned, if any.
    pub step: Option<String>,
    /// Human sentence.
    pub message: String,
}

/// Result of a step.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Passed,
    Failed,
    /// Not run (level above ceiling, drill aborted before it, dry run).
    Skipped,
    /// Could not be carried out (injection error, revert error, command could not start).
    Error,
}

/// One step of the drill.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub phase: Phase,
    pub name: String,
    pub status: StepStatus,
    /// Whether a failure fails the drill.
    pub critical: bool,
    /// Monotonic ms since run start when the step started.
    pub started_ms: f64,
    pub duration_ms: f64,
    /// What the step does, in words (probe description, fault declaration, command).
    pub description: String,
    /// Observations made (1 for a single check, more for `within`/`for`/retries).
    pub attempts: u32,
    /// For `within`/`for`/retried checks: ms until the expectation first held, counted
    /// from the disruption start (the first fault taking effect) for verifications once
    /// a fault took effect, from the step's own start otherwise (prechecks; journals
    /// written before issue 12).
    pub first_held_ms: Option<f64>,
    /// For `within` checks: the declared deadline, ms (improvement rules compare
    /// `first_held_ms` against it). Absent in journals written before it existed.
    #[serde(default)]
    pub within_ms: Option<f64>,
    /// The last verdict or error, in words.
    pub detail: String,
    /// For faults: kind, target, level and ttl.
    pub fault: Option<FaultRecord>,
    /// Probe figures (e.g. traffic percentiles per phase).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// For checks: excerpts of what the probe saw (stdout/stderr, HTTP body) in the
    /// last failed attempts and the last attempt, redacted and bounded, so a failure
    /// keeps the measured value. Absent in journals written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

/// What one attempt of a check saw: an excerpt of each output it produced, secrets
/// redacted before the cut (so a cut cannot leave half a secret behind).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    /// Which attempt (1-based) this is.
    pub attempt: u32,
    /// Whether the expectation held at this attempt.
    pub held: bool,
    /// Command standard output (excerpt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Command standard error (excerpt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// HTTP response body (excerpt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl StepRecord {
    /// A step of `phase` that started at `started_ms`, before anything about it is
    /// known: skipped, critical, no attempts, nothing measured. Callers set what they
    /// measured with struct update syntax (`StepRecord { status, ..StepRecord::new(..) }`),
    /// so every record names only what differs from "did not run".
    pub(crate) fn new(
        phase: Phase,
        name: impl Into<String>,
        description: impl Into<String>,
        started_ms: f64,
    ) -> Self {
        StepRecord {
            phase,
            name: name.into(),
            status: StepStatus::Skipped,
            critical: true,
            started_ms,
            duration_ms: 0.0,
            description: description.into(),
            attempts: 0,
            first_held_ms: None,
            within_ms: None,
            detail: String::new(),
            fault: None,
            metrics: BTreeMap::new(),
            evidence: Vec::new(),
        }
    }
}

impl StepRecord {
    /// The first-held time on the check's own clock (from its start), which is what
    /// its `within` is counted against: a verification's `first_held_ms` is counted
    /// from the disruption (`disruption_start_ms`), so the time from the disruption
    /// to the check's start comes off.
    pub fn first_held_own_ms(&self, disruption_start_ms: Option<f64>) -> Option<f64> {
        self.first_held_ms.map(|h| match disruption_start_ms {
            Some(t0) if self.phase == Phase::Verification => {
                (h - (self.started_ms - t0).max(0.0)).max(0.0)
            }
            _ => h,
        })
    }
}

/// One stage of a staged switchover that ran (see [`StepRecord::switchover_stages`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StageSpan {
    /// "STEP: stage 2 of 4 (10%)".
    pub label: String,
    /// Start, ms since the run started.
    pub from_ms: f64,
    /// End, ms since the run started.
    pub to_ms: f64,
}

impl StepRecord {
    /// The stages of this fault step's staged switchovers that ran: an `http_fault`
    /// with a staged `reroute` records its schedule in its effect
    /// (`details.switchovers`: when stage 1 started after the step, each stage's
    /// share and hold). Stages are cut at the fault's revert (a rollback mid-way
    /// leaves the later ones out); one still running ends at `now_ms`.
    pub fn switchover_stages(&self, now_ms: f64) -> Vec<StageSpan> {
        let mut out = Vec::new();
        let Some(f) = &self.fault else { return out };
        let Some(effect) = &f.effect else { return out };
        let Some(switchovers) = effect.details.get("switchovers").and_then(|v| v.as_array()) else {
            return out;
        };
        let end = f.revert.as_ref().map_or(now_ms, |r| r.started_ms);
        for sw in switchovers {
            let Some(started) = sw["started_after_ms"].as_f64() else {
                continue;
            };
            let stages: Vec<(f64, f64)> = sw["stages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| Some((s["percentage"].as_f64()?, s["hold_ms"].as_f64()?)))
                .collect();
            let n = stages.len();
            let mut from = self.started_ms + started;
            for (i, (share, hold)) in stages.into_iter().enumerate() {
                if from >= end {
                    break; // rolled back before this stage began
                }
                let to = if i + 1 == n {
                    end
                } else {
                    (from + hold).min(end)
                };
                out.push(StageSpan {
                    label: format!("{}: stage {} of {n} ({share}%)", self.name, i + 1),
                    from_ms: from,
                    to_ms: to,
                });
                from += hold;
            }
        }
        out
    }
}

/// A fault step's specifics: declared next to measured, and how it was reverted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaultRecord {
    pub kind: String,
    pub target: String,
    pub level: Level,
    pub ttl_ms: f64,
    /// Ledger sequence number of the undo record.
    pub ledger_seq: Option<u64>,
    /// Whether the engine can undo the fault (`Undo::is_reversible`; a SIGKILL cannot
    /// be undone). None when the fault was not prepared or the journal predates it.
    #[serde(default)]
    pub reversible: Option<bool>,
    /// Declared vs measured effect (None when injection failed before effect).
    pub effect: Option<Effect>,
    /// How the fault was reverted (None when it was not injected).
    pub revert: Option<RevertRecord>,
    /// This fault's own impact on the service indicators, ms since run start: the
    /// first down observation after it took effect (None: the indicators never saw
    /// the service down in its window) ...
    #[serde(default)]
    pub impact_start_ms: Option<f64>,
    /// ... until the service was seen restored, or the next fault took effect if that
    /// came first (windows never overlap). None when never seen restored.
    #[serde(default)]
    pub impact_end_ms: Option<f64>,
    /// `impact_end_ms - impact_start_ms`.
    #[serde(default)]
    pub impact_ms: Option<f64>,
}

/// How reverting one fault went.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RevertRecord {
    pub ok: bool,
    /// Monotonic ms since run start.
    pub started_ms: f64,
    pub duration_ms: f64,
    pub result: Option<Reverted>,
    pub error: Option<String>,
}

/// What one guard saw while faults were active.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GuardRecord {
    pub name: String,
    pub description: String,
    pub polls: u32,
    pub failures: u32,
    pub breached: bool,
    /// Monotonic ms since run start of the (first) breach.
    pub breached_ms: Option<f64>,
    /// Last verdict, in words.
    pub detail: String,
    /// Whether a breach aborts and fails the drill; a non-critical guard's breaches are
    /// only reported. True in journals written before it existed.
    #[serde(default = "yes")]
    pub critical: bool,
    /// Breaches seen (a non-critical guard keeps watching after one; a critical guard
    /// stops at its first). Absent in journals written before it existed.
    #[serde(default)]
    pub breaches: u32,
}

/// Severity of an improvement.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    High,
    Medium,
    Low,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}

/// A finding: what was seen, why it matters, what to do.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Improvement {
    /// Stable rule id, e.g. `rto-exceeded`.
    pub rule: String,
    pub severity: Severity,
    /// One-line title.
    pub title: String,
    /// The figures from this run that triggered the rule.
    pub evidence: String,
    /// What to change.
    pub recommendation: String,
    /// The step concerned, if any.
    pub step: Option<String>,
    /// Who follows the finding up (from `metadata.findings.owner`, else the owner).
    #[serde(default)]
    pub owner: Option<String>,
    /// When it is due, `YYYY-MM-DD`.
    #[serde(default)]
    pub due: Option<String>,
    /// Follow-up status (`open` for a new finding unless the scenario says otherwise).
    #[serde(default)]
    pub status: FindingStatus,
}
