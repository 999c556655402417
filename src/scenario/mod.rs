//! The scenario file format (v1): plain serde types, loading, `{{var}}` substitution
//! and validation.
//!
//! Every type here rejects unknown keys and carries a doc comment on every field,
//! because these types *are* the JSON Schema (`firedrill schema`) and the reference
//! documentation. Nothing in this module has side effects: a scenario is fully
//! loaded and validated before the engine touches anything.

mod load;
mod schema;
mod span;
pub(crate) mod vars;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::fault::FaultSpec;
use crate::probe::{Expect, ProbeSpec};
use crate::target::TargetSpec;

pub use load::var_file::{self, Override};
pub use load::{Drill, LoadError, ResolvedFault, load_file, load_str};
pub use schema::{reference_markdown, schema_json, schema_value};
pub use span::SpanIndex;
pub use vars::{Resolved, VarValue};

/// The only `apiVersion` this build understands.
pub const API_VERSION: &str = "firedrill/v1";

/// A disaster-recovery drill: prechecks, graded faults, verifications, recovery.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Format version; must be `firedrill/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Document kind; must be `Scenario`.
    pub kind: ScenarioKind,
    /// Who owns the drill and what it proves.
    pub metadata: Metadata,
    /// Variables substituted into every string as `{{name}}`; override with `--var name=value`.
    #[serde(default)]
    pub vars: BTreeMap<String, VarValue>,
    /// Named places where faults and commands act. `local` (this host) is always defined.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSpec>,
    /// Recovery-time and recovery-point objectives, and the hard cap on the drill's duration.
    #[serde(default)]
    pub objectives: Objectives,
    /// Stop conditions, checked continuously while any fault is active; a breach aborts the drill (recovery still runs).
    #[serde(default)]
    pub guards: Vec<Guard>,
    /// Service indicators: probes that say "the service works for its users", observed every `interval` from just before the first fault until they are seen restored after the steady-state re-check (at most as long as that re-check may wait). Downtime, time to detect and the measured RTO come from them. Without any, the prechecks serve as indicators.
    #[serde(default)]
    pub indicators: Vec<Indicator>,
    /// Steady-state checks run before anything is injected; any failure means no fault is injected. They are re-checked after recovery (the steady state), and observed as the service indicators when no `indicators` are declared.
    #[serde(default)]
    pub prechecks: Vec<Check>,
    /// Faults injected in file order, each followed by its `ramp_up`.
    pub faults: Vec<FaultStep>,
    /// Assertions made while the faults are active.
    #[serde(default)]
    pub verifications: Vec<Check>,
    /// Continuous open-model load from the end of the prechecks to the end of the steady-state re-check; its figures are judged per phase (before, during, recovery, after the faults).
    #[serde(default)]
    pub traffic: Vec<crate::probe::traffic::TrafficStep>,
    /// Messages with unique ids sent through the system under test at a fixed rate from the end of the prechecks to the end of the steady-state re-check, then counted in sinks: sent, delivered, lost, duplicated, delivery latency per phase and the measured RPO (reported as the run's RPO).
    #[serde(default)]
    pub delivery: Vec<crate::probe::delivery::DeliveryStep>,
    /// Steps run after every injected fault has been reverted (newest first).
    #[serde(default)]
    pub recovery: Vec<RecoveryStep>,
    /// The steady state re-checked after recovery (until every check holds; the time it takes is the recovery time), polled at the smallest `interval` among them. Defaults to the prechecks; declare it when a precheck is true only before a failover ("r1 is the primary"). Also observed as the service indicators when no `indicators` are declared.
    #[serde(default)]
    pub steady_state: Vec<Check>,
    /// Assertions for what must become true once the faults are reverted and the recovery steps ran (e.g. a thawed old primary is demoted `within: 10s`). Each has its own verdict; a critical one that fails fails the drill.
    #[serde(default)]
    pub after_recovery: Vec<Check>,
    /// Where to tell people about the run: started, each fault injected, aborted, finished, recovery incomplete. A notification that fails is listed in the report and never fails or delays the drill.
    #[serde(default)]
    pub notify: Vec<crate::notify::NotifyChannel>,
}

impl Scenario {
    /// The checks that define the steady state: `steady_state`, or else the prechecks.
    pub(crate) fn steady_checks(&self) -> &[Check] {
        if self.steady_state.is_empty() {
            &self.prechecks
        } else {
            &self.steady_state
        }
    }
}

/// Document kind marker.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ScenarioKind {
    /// A drill scenario.
    Scenario,
}

/// Descriptive data about the drill; shown at the top of every report.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Short identifier (letters, digits, `-`, `_`, `.`); used in report directory names.
    pub name: String,
    /// What the drill proves, in one or two sentences.
    #[serde(default)]
    pub description: Option<String>,
    /// Team or person accountable for the system under test.
    #[serde(default)]
    pub owner: Option<String>,
    /// Free-form labels copied into the journal.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Identifier of the exercise in the business-continuity programme (e.g. `BCP-2025-Q3-07`), shown on the exercise record; defaults to the run id.
    #[serde(default)]
    pub exercise_id: Option<String>,
    /// The environment the drill runs against (e.g. `staging`, `production`): part of the exercise's scope.
    #[serde(default)]
    pub environment: Option<String>,
    /// The systems in the exercise's scope (e.g. `message-relay`, `wecom-gateway`).
    #[serde(default)]
    pub systems: Vec<String>,
    /// Why the exercise is run: the risk it addresses and what a pass proves.
    #[serde(default)]
    pub rationale: Option<String>,
    /// Reference to the risk-register or business-impact-analysis entry the exercise covers (an id or a URL).
    #[serde(default)]
    pub risk_ref: Option<String>,
    /// Who takes part in the exercise and in which role; `firedrill run --participant NAME:ROLE` adds more.
    #[serde(default)]
    pub participants: Vec<Participant>,
    /// Defaults for the findings (identified improvements) of each run: who owns them, when they are due, their status.
    #[serde(default)]
    pub findings: FindingDefaults,
    /// Roles that sign the exercise record off; the report has a signature line for each. Default: exercise lead and system owner.
    #[serde(default)]
    pub sign_off: Vec<String>,
}

/// A person taking part in an exercise.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    /// Name of the person (or team).
    pub name: String,
    /// Their role in the exercise (e.g. `exercise lead`, `observer`, `on-call`).
    pub role: String,
}

/// Defaults given to every finding of a run, to be changed in the follow-up.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FindingDefaults {
    /// Who owns the findings; defaults to `metadata.owner`.
    #[serde(default)]
    pub owner: Option<String>,
    /// Time from the run's start until a finding is due (e.g. `14d`, `30d`); the record shows the resulting date.
    #[serde(default = "default_due_in")]
    pub due_in: HumanDuration,
    /// Status a new finding starts in.
    #[serde(default)]
    pub status: FindingStatus,
}

fn default_due_in() -> HumanDuration {
    HumanDuration::from_millis(30 * 24 * 3600 * 1000)
}

impl Default for FindingDefaults {
    fn default() -> Self {
        Self {
            owner: None,
            due_in: default_due_in(),
            status: FindingStatus::default(),
        }
    }
}

/// Follow-up status of a finding.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FindingStatus {
    /// Not yet addressed.
    #[default]
    Open,
    /// Someone is working on it.
    InProgress,
    /// Addressed (to be confirmed by the next exercise).
    Closed,
    /// Accepted as a known risk; no change planned.
    Accepted,
}

impl FindingStatus {
    /// In words, as the reports show it.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::Open => "open",
            FindingStatus::InProgress => "in progress",
            FindingStatus::Closed => "closed",
            FindingStatus::Accepted => "accepted",
        }
    }
}

/// Time objectives for the drill.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Recovery-time objective: the service indicators must be restored within this time of the disruption (the first fault taking effect). A measured RTO above it fails the drill unless `critical: false`.
    #[serde(default)]
    pub rto: Option<HumanDuration>,
    /// Recovery-point objective (largest acceptable data-loss window). Measured by the `delivery:` entries (the time span of acknowledged messages that were lost); without any it is reported as "not measured", never as met.
    #[serde(default)]
    pub rpo: Option<HumanDuration>,
    /// Whether missing an objective fails the drill (exit 1); `false` reports it without failing.
    #[serde(default = "yes")]
    pub critical: bool,
    /// Hard cap on the whole drill; when it is reached the drill aborts and recovers. Also the default fault `ttl`.
    #[serde(default = "default_max_duration")]
    pub max_duration: HumanDuration,
}

fn default_max_duration() -> HumanDuration {
    HumanDuration::from_millis(15 * 60 * 1000)
}

impl Default for Objectives {
    fn default() -> Self {
        Self {
            rto: None,
            rpo: None,
            critical: true,
            max_duration: default_max_duration(),
        }
    }
}

/// Fault levels, ordered: `smoke < standard < full`. `--level` picks the ceiling.
#[derive(
    Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Gentle faults that are safe to run often.
    #[default]
    Smoke,
    /// The usual drill.
    Standard,
    /// Everything, including the harshest faults.
    Full,
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "smoke" => Ok(Level::Smoke),
            "standard" => Ok(Level::Standard),
            "full" => Ok(Level::Full),
            other => Err(format!(
                "unknown level `{other}`; expected smoke, standard or full"
            )),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Smoke => "smoke",
            Level::Standard => "standard",
            Level::Full => "full",
        })
    }
}

/// An assertion: a probe and what it must show. Used by prechecks, verifications, the steady state and after-recovery assertions.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Unique name of the step (within its section); shown in reports and JUnit.
    pub name: String,
    /// What to observe.
    pub probe: ProbeSpec,
    /// What the observation must show. Empty means "the probe succeeded" (HTTP 2xx/3xx, TCP connected, exit code 0).
    #[serde(default)]
    pub expect: Expect,
    /// A critical failure fails the drill and, for verifications, skips the remaining steps and goes straight to recovery. Prechecks are always critical.
    #[serde(default = "yes")]
    pub critical: bool,
    /// Eventually: poll until the expectation holds or this time runs out.
    #[serde(default)]
    pub within: Option<HumanDuration>,
    /// Continuously: the expectation must hold at every poll for this long.
    #[serde(default, rename = "for")]
    pub hold_for: Option<HumanDuration>,
    /// Time between polls for `within` and `for`.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Extra attempts (each after `interval`) before a check without `within`/`for` is declared failed.
    #[serde(default)]
    pub retries: u32,
    /// Verifications only: run from the first fault taking effect until recovery begins, side by side with the other verifications, with a verdict of its own. `for` must hold over that whole window (or for its duration, if shorter); `within` must hold before recovery begins. A critical failure aborts the drill like a critical verification; a non-critical one is only reported.
    #[serde(default)]
    pub background: bool,
}

pub(crate) fn default_interval() -> HumanDuration {
    HumanDuration::from_millis(500)
}

/// A stop condition watched while faults are active.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// Unique name of the guard.
    pub name: String,
    /// What to observe.
    pub probe: ProbeSpec,
    /// What must stay true; the guard is breached when it does not.
    #[serde(default)]
    pub expect: Expect,
    /// Time between polls.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Consecutive failed polls that count as a breach (1 = the first failure aborts).
    #[serde(default = "one")]
    pub breach_after: u32,
    /// Whether a breach aborts the drill (and fails it). `false` records every breach in the report, as a non-critical failure and an improvement, and keeps watching without aborting.
    #[serde(default = "yes")]
    pub critical: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// A service indicator: one probe whose expectation says the service works for its users.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Indicator {
    /// Unique name of the indicator.
    pub name: String,
    /// What to observe.
    pub probe: ProbeSpec,
    /// What holds while the service is up; an observation where it does not counts as down.
    #[serde(default)]
    pub expect: Expect,
    /// Time between observations; the resolution of every figure measured from them.
    #[serde(default = "indicator_interval")]
    pub interval: HumanDuration,
    /// Consecutive good observations that count as restored (restored = the first of them).
    #[serde(default = "three")]
    pub restored_after: u32,
}

pub(crate) fn indicator_interval() -> HumanDuration {
    HumanDuration::from_millis(200)
}

pub(crate) fn three() -> u32 {
    3
}

/// One fault to inject. `kind` selects the fault and `with` holds its parameters.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultStep {
    /// Unique name of the fault step.
    pub name: String,
    /// Severity level; the step runs only when `--level` is at least this.
    #[serde(default)]
    pub level: Level,
    /// The fault kind (see `with` for its parameters).
    pub kind: String,
    /// Parameters of the fault kind.
    #[serde(default)]
    pub with: serde_yaml::Value,
    /// Where the fault acts; a name from `targets`, or `local`.
    #[serde(default = "local")]
    pub target: String,
    /// Settle time after the fault took effect, before the next step.
    #[serde(default)]
    pub ramp_up: Option<HumanDuration>,
    /// Dead-man time: the fault expires by itself after this even if the engine dies. Defaults to `objectives.max_duration`.
    #[serde(default)]
    pub ttl: Option<HumanDuration>,
}

pub(crate) fn local() -> String {
    "local".into()
}

/// The fields of a fault step other than `kind`/`with`, only for the JSON Schema.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct FaultStepCommon {
    /// Unique name of the fault step.
    name: String,
    /// Severity level; the step runs only when `--level` is at least this.
    #[serde(default)]
    level: Level,
    /// Where the fault acts; a name from `targets`, or `local`.
    #[serde(default = "local")]
    target: String,
    /// Settle time after the fault took effect, before the next step.
    #[serde(default)]
    ramp_up: Option<HumanDuration>,
    /// Dead-man time: the fault expires by itself after this even if the engine dies. Defaults to `objectives.max_duration`.
    #[serde(default)]
    ttl: Option<HumanDuration>,
}

impl JsonSchema for FaultStep {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FaultStep".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // `kind` + `with` are validated against the closed enum of fault kinds; the
        // common fields come from FaultStepCommon. `unevaluatedProperties` keeps the
        // "unknown keys are errors" promise across the `allOf`.
        let common = generator.subschema_for::<FaultStepCommon>();
        let spec = generator.subschema_for::<FaultSpec>();
        schemars::json_schema!({
            "description": "One fault to inject. `kind` selects the fault and `with` holds its parameters.",
            "type": "object",
            "allOf": [common, spec],
            "unevaluatedProperties": false
        })
    }
}

/// A recovery step, run after every injected fault has been reverted.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryStep {
    /// Unique name of the step.
    pub name: String,
    /// The command to run.
    pub command: CommandAction,
}

/// A shell command run on a target.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandAction {
    /// Shell command line, run with `sh -c`: shell by design, so `{{var}}` values are pasted in as text (quote them); a secret var becomes a reference to an environment variable set for this command only (`"${FIREDRILL_SECRET_<NAME>}"`), never its value.
    pub run: String,
    /// Where to run it; a name from `targets`, or `local`.
    #[serde(default = "local")]
    pub target: String,
    /// Time after which the command is killed and the step fails.
    #[serde(default = "default_command_timeout")]
    pub timeout: HumanDuration,
}

pub(crate) fn default_command_timeout() -> HumanDuration {
    HumanDuration::from_millis(60_000)
}

pub use load::Diagnostic;
pub(crate) use vars::kind_of;
