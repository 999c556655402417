//! The view model: what the templates see, computed in Rust from the run record so
//! that templates only lay things out (counts, labels, fault windows, chart rows).

use serde::Serialize;

use super::chart::{self, Chart};
use super::exercise::{self, ExerciseView};
use super::junit::{self, Junit};
use crate::model::*;
use crate::report::improvements::active_window;
use crate::report::words::step_label;
use crate::scenario::Level;

/// Everything a template can use. `run` is the record itself, for plain fields.
#[derive(Serialize)]
pub(crate) struct View<'a> {
    pub run: &'a RunRecord,
    pub outcome: OutcomeView,
    pub objectives: ObjectivesView,
    pub counts: Counts,
    pub prechecks: Vec<StepView<'a>>,
    pub faults: Vec<FaultView<'a>>,
    pub verifications: Vec<StepView<'a>>,
    pub recovery: Vec<StepView<'a>>,
    pub steady_state: Vec<StepView<'a>>,
    pub after_recovery: Vec<StepView<'a>>,
    /// Every step in run order.
    pub steps: Vec<StepView<'a>>,
    pub guards: Vec<GuardView<'a>>,
    /// Per-phase figures of each `traffic:` entry.
    pub traffic: Vec<TrafficView>,
    /// Counts, loss, duplicates, RPO and latency of each `delivery:` entry.
    pub delivery: Vec<DeliveryView>,
    pub vars: Vec<Pair>,
    pub labels: Vec<Pair>,
    pub chart: Chart,
    pub junit: Junit,
    /// Excerpts of what failed checks saw, one row per output of an attempt, in run order.
    pub evidence: Vec<EvidenceView<'a>>,
    /// The exercise record: scope, participants, deviations, findings, lessons, sign-off.
    pub exercise: ExerciseView<'a>,
    /// One row per pod deleted by a `pod_kill` fault: when it was gone, when its
    /// replacement was scheduled and Ready (ms since its delete).
    pub pod_replacements: Vec<PodRow>,
    /// One row per workload of a `pod_kill` fault: when it was back to its desired Ready replicas.
    pub workloads_back: Vec<WorkloadRow>,
}

/// A pod deleted by `pod_kill` and its replacement, from the fault's effect details.
#[derive(Serialize)]
pub(crate) struct PodRow {
    pub fault: String,
    pub pod: String,
    pub node: String,
    pub replacement: String,
    pub gone_ms: Option<f64>,
    pub scheduled_ms: Option<f64>,
    pub ready_ms: Option<f64>,
    /// `replaced` or `NOT REPLACED`.
    pub label: &'static str,
    pub status: &'static str,
}

/// A workload whose pods `pod_kill` deleted.
#[derive(Serialize)]
pub(crate) struct WorkloadRow {
    pub fault: String,
    pub workload: String,
    pub desired: String,
    pub back_ms: Option<f64>,
}

/// The per-pod and per-workload rows of every `pod_kill` fault that took effect.
fn pod_kill_rows(run: &RunRecord) -> (Vec<PodRow>, Vec<WorkloadRow>) {
    let (mut pods, mut workloads) = (Vec::new(), Vec::new());
    for s in &run.steps {
        let Some(f) = s.fault.as_ref().filter(|f| f.kind == "pod_kill") else {
            continue;
        };
        let Some(d) = f.effect.as_ref().map(|e| &e.details) else {
            continue;
        };
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("—").to_string();
        for p in d["pods"].as_array().into_iter().flatten() {
            let ready = p["ready_ms"].as_f64();
            pods.push(PodRow {
                fault: s.name.clone(),
                pod: text(&p["pod"]),
                node: text(&p["node"]),
                replacement: text(&p["replacement"]),
                gone_ms: p["gone_ms"].as_f64(),
                scheduled_ms: p["scheduled_ms"].as_f64(),
                ready_ms: ready,
                label: if ready.is_some() {
                    "replaced"
                } else {
                    "NOT REPLACED"
                },
                status: if ready.is_some() { "passed" } else { "failed" },
            });
        }
        for w in d["workloads"].as_array().into_iter().flatten() {
            workloads.push(WorkloadRow {
                fault: s.name.clone(),
                workload: text(&w["workload"]),
                desired: w["desired"]
                    .as_i64()
                    .map_or("unknown".into(), |n| n.to_string()),
                back_ms: w["back_ms"].as_f64(),
            });
        }
    }
    (pods, workloads)
}

/// One output (stdout, stderr or body) of one attempt of a failed check.
#[derive(Serialize)]
pub(crate) struct EvidenceView<'a> {
    /// 1-based position of the step in the run.
    pub number: usize,
    pub name: &'a str,
    pub attempt: u32,
    /// `held` or `failed`: the verdict of that attempt.
    pub verdict: &'static str,
    /// Status word for the `cls` helper (passed / failed).
    pub status: &'static str,
    /// `stdout`, `stderr` or `body`.
    pub stream: &'static str,
    /// The redacted, bounded excerpt (escaped by the template engine like all data).
    pub text: &'a str,
}

/// Evidence rows for the checks that failed; passed checks keep theirs in the journal.
fn evidence_view(run: &RunRecord) -> Vec<EvidenceView<'_>> {
    let mut rows = Vec::new();
    for (i, s) in run.steps.iter().enumerate() {
        if !matches!(s.status, StepStatus::Failed | StepStatus::Error) {
            continue;
        }
        for e in &s.evidence {
            for (stream, text) in [
                ("stdout", &e.stdout),
                ("stderr", &e.stderr),
                ("body", &e.body),
            ] {
                // An empty stderr says nothing; an empty stdout or body is itself evidence.
                let Some(text) = text.as_deref() else {
                    continue;
                };
                if stream == "stderr" && text.is_empty() {
                    continue;
                }
                rows.push(EvidenceView {
                    number: i + 1,
                    name: &s.name,
                    attempt: e.attempt,
                    verdict: if e.held { "held" } else { "failed" },
                    status: if e.held { "passed" } else { "failed" },
                    stream,
                    text,
                });
            }
        }
    }
    rows
}

/// One `traffic:` entry: a row per phase that saw requests.
#[derive(Serialize)]
pub(crate) struct TrafficView {
    pub name: String,
    pub rows: Vec<TrafficRow>,
}

/// Figures of one phase, formatted (`-` when the phase has none).
#[derive(Serialize)]
pub(crate) struct TrafficRow {
    pub phase: &'static str,
    pub count: String,
    pub success: String,
    pub p50: String,
    pub p95: String,
    pub p99: String,
    pub max: String,
}

/// The traffic entries of a run: the steps whose figures are per phase.
fn traffic_views(run: &RunRecord) -> Vec<TrafficView> {
    run.steps
        .iter()
        .filter(|s| s.metrics.contains_key("all.count"))
        .map(|s| {
            let get = |p: &str, k: &str| s.metrics.get(&format!("{p}.{k}")).copied();
            let lat = |p: &str, k: &str| get(p, k).map_or("-".into(), |v| format!("{v:.1} ms"));
            let rows = crate::probe::traffic::BUCKETS
                .into_iter()
                .chain(["all"])
                .filter(|p| get(p, "count").is_some_and(|n| n > 0.0))
                .map(|p| TrafficRow {
                    phase: p,
                    count: format!("{}", get(p, "count").unwrap_or(0.0)),
                    success: get(p, "success_rate")
                        .map_or("-".into(), |v| format!("{:.2}%", 100.0 * v)),
                    p50: lat(p, "p50_ms"),
                    p95: lat(p, "p95_ms"),
                    p99: lat(p, "p99_ms"),
                    max: lat(p, "max_ms"),
                })
                .collect();
            TrafficView {
                name: s.name.clone(),
                rows,
            }
        })
        .collect()
}

/// One `delivery:` entry: the totals, then a row per phase of sending.
#[derive(Serialize)]
pub(crate) struct DeliveryView {
    pub name: String,
    pub sent: String,
    pub acknowledged: String,
    pub delivered: String,
    pub lost: String,
    pub duplicated: String,
    pub out_of_order: String,
    pub rpo: String,
    pub gap: String,
    /// Some acknowledged message was lost.
    pub any_lost: bool,
    /// Some message was delivered more than once.
    pub any_duplicated: bool,
    pub rows: Vec<DeliveryRow>,
    /// During a staged switchover: a row per stage that ran, by send time.
    pub stages: Vec<StageRow>,
}

/// Figures of the messages sent during one stage of a staged switchover.
#[derive(Serialize)]
pub(crate) struct StageRow {
    pub stage: String,
    pub duration: String,
    pub sent: String,
    pub lost: String,
    pub duplicated: String,
    pub p95: String,
    /// Some message sent in this stage was lost or duplicated.
    pub bad: bool,
}

/// Figures of the messages sent in one phase.
#[derive(Serialize)]
pub(crate) struct DeliveryRow {
    pub phase: &'static str,
    pub sent: String,
    pub lost: String,
    pub duplicated: String,
    pub p50: String,
    pub p95: String,
    pub p99: String,
    pub max: String,
}

/// The delivery entries of a run: the steps whose figures carry a `duplicate_rate`.
fn delivery_views(run: &RunRecord) -> Vec<DeliveryView> {
    // The engine broke the figures down over these stages, in this order.
    let spans: Vec<crate::model::StageSpan> = run
        .steps
        .iter()
        .flat_map(|s| s.switchover_stages(run.duration_ms))
        .collect();
    run.steps
        .iter()
        .filter(|s| s.metrics.contains_key("duplicate_rate"))
        .map(|s| {
            let g = |k: &str| s.metrics.get(k).copied();
            let n = |k: &str| g(k).map_or("-".into(), |v| format!("{v}"));
            let lat = |k: &str| g(k).map_or("-".into(), |v| format!("{v:.1} ms"));
            let rate = |k: &str, r: &str| match (g(k), g(r)) {
                (Some(c), Some(r)) => format!("{c} ({:.2}%)", 100.0 * r),
                _ => "-".into(),
            };
            let rows = crate::probe::traffic::BUCKETS
                .into_iter()
                .chain(["all"])
                .filter(|p| *p == "all" || g(&format!("{p}.sent")).is_some_and(|c| c > 0.0))
                .map(|p| {
                    let k = |x: &str| {
                        if p == "all" {
                            x.to_string()
                        } else {
                            format!("{p}.{x}")
                        }
                    };
                    DeliveryRow {
                        phase: p,
                        sent: n(&k("sent")),
                        lost: n(&k("lost")),
                        duplicated: n(&k("duplicated")),
                        p50: lat(&k("p50_ms")),
                        p95: lat(&k("p95_ms")),
                        p99: lat(&k("p99_ms")),
                        max: lat(&k("max_ms")),
                    }
                })
                .collect();
            let stages = spans
                .iter()
                .enumerate()
                .filter(|(k, _)| g(&format!("stage{}.sent", k + 1)).is_some())
                .map(|(k, span)| {
                    let key = |x: &str| format!("stage{}.{x}", k + 1);
                    let bad = g(&key("lost")).unwrap_or(0.0) > 0.0
                        || g(&key("duplicated")).unwrap_or(0.0) > 0.0;
                    StageRow {
                        stage: span.label.clone(),
                        duration: crate::report::words::human_ms(span.to_ms - span.from_ms),
                        sent: n(&key("sent")),
                        lost: n(&key("lost")),
                        duplicated: n(&key("duplicated")),
                        p95: lat(&key("p95_ms")),
                        bad,
                    }
                })
                .collect();
            DeliveryView {
                name: s.name.clone(),
                sent: n("sent"),
                acknowledged: n("acknowledged"),
                delivered: n("delivered"),
                lost: rate("lost", "loss_rate"),
                duplicated: rate("duplicated", "duplicate_rate"),
                out_of_order: n("out_of_order"),
                rpo: g("rpo_ms").map_or("-".into(), crate::report::words::human_ms),
                gap: g("max_delivery_gap_ms").map_or("-".into(), crate::report::words::human_ms),
                any_lost: g("lost").unwrap_or(0.0) > 0.0,
                any_duplicated: g("duplicated").unwrap_or(0.0) > 0.0,
                rows,
                stages,
            }
        })
        .collect()
}

#[derive(Serialize)]
pub(crate) struct Pair {
    pub name: String,
    pub value: String,
}

#[derive(Serialize)]
pub(crate) struct OutcomeView {
    /// `PASSED`, `FAILED`, `INJECTION FAILED`, `RECOVERY INCOMPLETE`.
    pub label: &'static str,
    /// Why the drill stopped early, in words.
    pub aborted: Option<&'static str>,
}

#[derive(Serialize)]
pub(crate) struct ObjectivesView {
    /// One row per figure, each with its definition.
    pub rows: Vec<ObjectiveRow>,
    /// Whether the run stayed under `max_duration`.
    pub within_max_duration: bool,
}

/// One objective or figure: what it is, declared next to measured, and the result.
#[derive(Serialize)]
pub(crate) struct ObjectiveRow {
    pub name: &'static str,
    /// One sentence: what the figure measures, from when to when.
    pub definition: String,
    pub declared: String,
    /// With its resolution.
    pub measured: String,
    /// `met`, `EXCEEDED`, `not measured`, `no RTO declared`, or empty for a plain figure.
    pub result: String,
    /// Status word for the `cls` helper (passed / failed / skipped).
    pub status: &'static str,
}

#[derive(Serialize, Default)]
pub(crate) struct Counts {
    pub steps: usize,
    pub passed: usize,
    pub failed: usize,
    pub noncritical_failed: usize,
    pub errors: usize,
    pub skipped: usize,
    pub improvements: usize,
    pub high: usize,
    pub medium: usize,
    pub low: usize,
}

#[derive(Serialize)]
pub(crate) struct StepView<'a> {
    #[serde(flatten)]
    pub step: &'a StepRecord,
    /// 1-based position in the run.
    pub number: usize,
    /// `passed`, `FAILED`, `failed (non-critical)`, `ERROR`, `skipped`.
    pub label: &'static str,
    pub ended_ms: f64,
    pub metric_list: Vec<Pair>,
    /// First held on the check's own clock, for its share of `within` (the record's
    /// `first_held_ms` counts from the disruption).
    pub held_own_ms: Option<f64>,
}

#[derive(Serialize)]
pub(crate) struct FaultView<'a> {
    #[serde(flatten)]
    pub view: StepView<'a>,
    pub kind: &'a str,
    pub target: &'a str,
    pub level: Level,
    pub ttl_ms: f64,
    pub declared: &'a str,
    pub measured: &'a str,
    /// `as declared`, `DIFFERS` or `not injected`.
    pub effect_label: &'static str,
    pub effect_status: &'static str,
    pub effective_after_ms: Option<f64>,
    /// `reverted`, `nothing to undo`, `REVERT FAILED`, `NOT REVERTED`, `not injected`.
    pub revert_label: &'static str,
    pub revert_status: &'static str,
    pub revert_detail: String,
    pub revert_started_ms: Option<f64>,
    pub revert_duration_ms: Option<f64>,
    pub restored_after_ms: Option<f64>,
    pub active_from_ms: Option<f64>,
    pub active_to_ms: Option<f64>,
    /// This fault's own impact window on the service indicators, in words.
    pub impact: String,
}

#[derive(Serialize)]
pub(crate) struct GuardView<'a> {
    #[serde(flatten)]
    pub guard: &'a GuardRecord,
    /// `held`, `BREACHED`, `BREACHED (non-critical)` or `not run`.
    pub label: &'static str,
    pub status: &'static str,
}

impl<'a> View<'a> {
    pub fn new(run: &'a RunRecord) -> Self {
        let steps: Vec<StepView> = run
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| step_view(run, i, s))
            .collect();
        let in_phase = |p: Phase| -> Vec<StepView<'a>> {
            run.steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.phase == p)
                .map(|(i, s)| step_view(run, i, s))
                .collect()
        };
        let faults = run
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.fault.is_some())
            .map(|(i, s)| fault_view(run, i, s))
            .collect();
        let guards = run
            .guards
            .iter()
            .map(|g| GuardView {
                guard: g,
                label: match (g.breached, g.polls) {
                    (true, _) if !g.critical => "BREACHED (non-critical)",
                    (true, _) => "BREACHED",
                    (false, 0) => "not run",
                    _ => "held",
                },
                status: match (g.breached, g.polls) {
                    (true, _) => "failed",
                    (false, 0) => "skipped",
                    _ => "passed",
                },
            })
            .collect();
        let pairs = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| Pair {
                    name: k.clone(),
                    value: v.clone(),
                })
                .collect()
        };
        let (pod_replacements, workloads_back) = pod_kill_rows(run);
        View {
            pod_replacements,
            workloads_back,
            outcome: outcome_view(&run.outcome),
            objectives: objectives_view(run),
            counts: counts(run),
            prechecks: in_phase(Phase::Precheck),
            verifications: in_phase(Phase::Verification),
            recovery: in_phase(Phase::Recovery),
            steady_state: in_phase(Phase::SteadyState),
            after_recovery: in_phase(Phase::AfterRecovery),
            faults,
            steps,
            guards,
            traffic: traffic_views(run),
            delivery: delivery_views(run),
            vars: pairs(&run.vars),
            labels: pairs(&run.scenario.labels),
            chart: chart::layout(run),
            junit: junit::build(run),
            evidence: evidence_view(run),
            exercise: exercise::build(run),
            run,
        }
    }
}

fn step_view<'a>(run: &RunRecord, i: usize, s: &'a StepRecord) -> StepView<'a> {
    StepView {
        held_own_ms: s.first_held_own_ms(run.objectives.disruption_start_ms),
        step: s,
        number: i + 1,
        label: step_label(s),
        ended_ms: s.started_ms + s.duration_ms,
        metric_list: s
            .metrics
            .iter()
            .map(|(k, v)| Pair {
                name: k.clone(),
                value: format!("{v}"),
            })
            .collect(),
    }
}

/// `+a → +b (c)`; `down from +a, not seen restored`; `not seen down`; `not measured`.
fn impact_words(run: &RunRecord, f: &FaultRecord) -> String {
    use crate::report::words::human_ms;
    match (f.impact_start_ms, f.impact_end_ms, f.impact_ms) {
        (Some(a), Some(b), Some(c)) => {
            format!("+{} → +{} ({})", human_ms(a), human_ms(b), human_ms(c))
        }
        (Some(a), _, _) => format!("down from +{}, not seen restored", human_ms(a)),
        _ if f.effect.is_none() || run.objectives.service == ServiceState::NotMeasured => {
            "not measured".into()
        }
        _ => "not seen down".into(),
    }
}

fn fault_view<'a>(run: &'a RunRecord, i: usize, s: &'a StepRecord) -> FaultView<'a> {
    let f = s.fault.as_ref().expect("fault steps carry a fault record");
    let effect = f.effect.as_ref();
    let revert = f.revert.as_ref();
    let injected = f.ledger_seq.is_some() || effect.is_some();
    let (effect_label, effect_status) = match effect {
        Some(e) if e.as_declared => ("as declared", "passed"),
        Some(_) => ("DIFFERS", "failed"),
        None if s.status == StepStatus::Skipped => ("not injected", "skipped"),
        None => ("not injected", "error"),
    };
    let (revert_label, revert_status) = match revert {
        Some(r) if !r.ok => ("REVERT FAILED", "failed"),
        Some(_) if f.reversible == Some(false) => ("nothing to undo", "passed"),
        Some(_) => ("reverted", "passed"),
        None if injected => ("NOT REVERTED", "failed"),
        None => ("not injected", "skipped"),
    };
    let window = active_window(run, s);
    FaultView {
        view: step_view(run, i, s),
        kind: &f.kind,
        target: &f.target,
        level: f.level,
        ttl_ms: f.ttl_ms,
        declared: effect.map_or(s.description.as_str(), |e| e.declared.as_str()),
        measured: effect.map_or("", |e| e.measured.as_str()),
        effect_label,
        effect_status,
        effective_after_ms: effect.and_then(|e| e.effective_after_ms),
        revert_label,
        revert_status,
        revert_detail: match revert {
            Some(r) => match (&r.result, &r.error) {
                (_, Some(e)) => e.clone(),
                (Some(res), None) => res.measured.clone(),
                (None, None) => String::new(),
            },
            None => String::new(),
        },
        revert_started_ms: revert.map(|r| r.started_ms),
        revert_duration_ms: revert.map(|r| r.duration_ms),
        restored_after_ms: revert
            .and_then(|r| r.result.as_ref())
            .and_then(|r| r.restored_after_ms),
        active_from_ms: window.map(|w| w.0),
        active_to_ms: window.map(|w| w.1),
        impact: impact_words(run, f),
    }
}

fn outcome_view(o: &Outcome) -> OutcomeView {
    OutcomeView {
        label: o.status.label(),
        aborted: o.aborted.map(|a| match a {
            AbortReason::PrecheckFailed => "a precheck failed",
            AbortReason::CriticalFailure => "a critical verification failed",
            AbortReason::GuardBreached => "a guard was breached",
            AbortReason::InjectionFailed => "a fault could not be injected",
            AbortReason::MaxDuration => "max_duration was reached",
            AbortReason::Signal => "interrupted by a signal",
            AbortReason::Panic => "the engine panicked",
        }),
    }
}

fn objectives_view(run: &RunRecord) -> ObjectivesView {
    use crate::model::ServiceState as S;
    use crate::report::words::human_ms;
    let o = &run.objectives;
    let declared = |v: Option<f64>| v.map_or("—".to_string(), human_ms);
    let res = o
        .resolution_ms
        .map_or(String::new(), |r| format!(" (resolution {})", human_ms(r)));
    let by = if o.indicators.is_empty() {
        String::new()
    } else {
        format!(" Indicators: {}.", o.indicators.join(", "))
    };
    // A service figure in words: measured, zero because never down, or why not.
    let figure = |v: Option<f64>| match (o.service, v) {
        (S::NotMeasured, _) => "not measured (no indicator observed a disruption)".to_string(),
        (S::NeverDown, _) => format!("0 ms: never went down{res}"),
        (S::NotRestored, None) => "not restored".to_string(),
        (_, Some(v)) => format!("{}{res}", human_ms(v)),
        (_, None) => "—".to_string(),
    };
    let mut rto_measured = figure(o.rto_measured_ms);
    if let (Some(m), Some(r)) = (o.rto_measured_ms, o.rto_ms)
        && r > 0.0
        && o.service != S::NotMeasured
    {
        rto_measured = format!("{rto_measured}, {:.0}% of RTO", 100.0 * m / r);
    }
    let lenient = if o.critical { "" } else { " (non-critical)" };
    let (rto_result, rto_status) = match (o.rto_ms, o.service, o.rto_met) {
        (None, _, _) => ("no RTO declared".to_string(), "skipped"),
        (Some(_), S::NotMeasured, _) | (Some(_), _, None) => {
            ("not measured".to_string(), "skipped")
        }
        (Some(_), _, Some(true)) => ("met".to_string(), "passed"),
        (Some(_), _, Some(false)) => (
            format!("EXCEEDED{lenient}"),
            if o.critical { "failed" } else { "medium" },
        ),
    };
    let plain = |name, definition: String, measured| ObjectiveRow {
        name,
        definition,
        declared: "—".into(),
        measured,
        result: String::new(),
        status: "skipped",
    };
    let mut rows = vec![
        ObjectiveRow {
            name: "RTO (measured)",
            definition: format!(
                "From the disruption (the first fault taking effect) until the service \
                 indicators were restored (the first of the run of good observations in a row \
                 that each indicator requires).{by}"
            ),
            declared: declared(o.rto_ms),
            measured: rto_measured,
            result: rto_result,
            status: rto_status,
        },
        plain(
            "Downtime",
            "From the first observation of the service down until it was restored.".into(),
            figure(o.downtime_ms),
        ),
        plain(
            "Time to detect",
            "From the disruption until an indicator first saw the service down.".into(),
            match o.service {
                S::NeverDown => format!("never down{res}"),
                _ => figure(o.detect_ms),
            },
        ),
    ];
    if o.rpo_objective_ms.is_some() || o.rpo_ms.is_some() {
        let (result, status) = match (o.rpo_objective_ms, o.rpo_ms) {
            (_, None) => ("not measured".to_string(), "skipped"),
            (None, Some(_)) => ("no RPO declared".to_string(), "skipped"),
            (Some(r), Some(m)) if m <= r => ("met".to_string(), "passed"),
            (Some(_), Some(_)) => (
                format!("EXCEEDED{lenient}"),
                if o.critical { "failed" } else { "medium" },
            ),
        };
        rows.push(ObjectiveRow {
            name: "RPO",
            definition: if o.rpo_ms.is_some() {
                "Data-loss window measured by the `delivery:` messages: from the send of the \
                 first acknowledged message that was never delivered to the acknowledgement of \
                 the last one (0 when nothing acknowledged was lost)."
                    .into()
            } else {
                "Largest data-loss window; measured only by a `delivery:` entry (messages \
                 sent and counted where they arrive), and none ran."
                    .into()
            },
            declared: declared(o.rpo_objective_ms),
            measured: o.rpo_ms.map_or("not measured".into(), human_ms),
            result,
            status,
        });
    }
    // Success rates: each traffic load's share of good requests per phase, against
    // its verdict (a declared threshold, or none).
    for s in run
        .steps
        .iter()
        .filter(|s| s.metrics.contains_key("all.count"))
    {
        let rate = |p: &str| {
            s.metrics
                .get(&format!("{p}.success_rate"))
                .map(|v| format!("{p} {:.2}%", 100.0 * v))
        };
        let measured: Vec<String> = crate::probe::traffic::BUCKETS
            .into_iter()
            .filter_map(rate)
            .collect();
        let (result, status) = match s.status {
            StepStatus::Passed => ("met", "passed"),
            StepStatus::Skipped => ("not judged", "skipped"),
            _ if !s.critical => ("MISSED (non-critical)", "medium"),
            _ => ("MISSED", "failed"),
        };
        rows.push(ObjectiveRow {
            name: "Success rate",
            definition: format!(
                "Share of the requests of the traffic load \"{}\" that succeeded, per phase.",
                s.name
            ),
            declared: s.description.clone(),
            measured: if measured.is_empty() {
                "not measured".into()
            } else {
                measured.join(", ")
            },
            result: result.into(),
            status,
        });
    }
    rows.push(plain(
        "Recovery time after recovery started",
        "From the start of recovery (faults being reverted) until the steady-state checks \
         held again, re-checked at their smallest declared interval (the resolution); not the \
         RTO: the outage before recovery started is not in it."
            .into(),
        o.recovery_ms
            .map_or("not measured".into(), |m| match o.recovery_resolution_ms {
                Some(r) => format!("{} (resolution {})", human_ms(m), human_ms(r)),
                // Journals written before the resolution was recorded: it was 250 ms.
                None => format!("{} (resolution 250 ms)", human_ms(m)),
            }),
    ));
    ObjectivesView {
        rows,
        within_max_duration: run.duration_ms <= o.max_duration_ms,
    }
}

fn counts(run: &RunRecord) -> Counts {
    let mut c = Counts {
        steps: run.steps.len(),
        improvements: run.improvements.len(),
        ..Counts::default()
    };
    for s in &run.steps {
        match s.status {
            StepStatus::Passed => c.passed += 1,
            StepStatus::Failed if s.critical => c.failed += 1,
            StepStatus::Failed => c.noncritical_failed += 1,
            StepStatus::Error => c.errors += 1,
            StepStatus::Skipped => c.skipped += 1,
        }
    }
    for i in &run.improvements {
        match i.severity {
            Severity::High => c.high += 1,
            Severity::Medium => c.medium += 1,
            Severity::Low => c.low += 1,
        }
    }
    c
}
