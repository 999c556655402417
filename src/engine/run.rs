//! One drill run, from lock to report model.
//!
//! [`Engine::run`] reads as the lifecycle: one method per phase, in order, sharing a
//! [`RunState`]. Guards live in `guards.rs`, the abort switch in `abort.rs`, and the
//! outcome's order of precedence is the pure function in `outcome.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::abort::Abort;
use super::background::Background;
use super::check::{check_finished, check_started, describe_check, run_check};
use super::guards::Guards;
use super::indicators::{Indicators, Measured, Series, impacts, measure};
use super::ledger::{self, Entry, Ledger, RunIdentity, now_rfc3339};
use super::lock::{self, LockError, TargetLocks};
use super::notifications::Notifier;
use super::outcome::{Verdict, decide, revert_gaps};
use super::timeline::Timeline;
use super::{Control, RunOptions};
use crate::fault::{FaultCtx, RevertCtx};
use crate::model::*;
use crate::notify::NotifyEvent;
use crate::probe::ProbeCtx;
use crate::probe::traffic::Section;
use crate::rt::Runtime;
use crate::rt::sleep_or_cancel;
use crate::scenario::{Check, Drill, ResolvedFault};

/// Why a run could not even start (nothing was injected).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("{0}")]
    RunId(String),
}

impl EngineError {
    /// Whether the command line was at fault (a reused or malformed run id), rather
    /// than the target or the machine.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            EngineError::RunId(_) | EngineError::Ledger(ledger::LedgerError::RunIdInUse { .. })
        )
    }
}

/// A prepared run: run id chosen, targets locked, ledger created.
pub struct Engine {
    drill: Arc<Drill>,
    opts: RunOptions,
    run_id: String,
    runtime: Arc<Runtime>,
    timeline: Arc<Timeline>,
    ledger: Arc<Mutex<Ledger>>,
    http: reqwest::Client,
    notifier: Notifier,
    _locks: TargetLocks,
}

/// What the phases of one run share, filled in as they go.
struct RunState {
    /// Every step so far, in the order they ran.
    steps: Vec<StepRecord>,
    /// Stops the forward phases; says why.
    abort: Arc<Abort>,
    /// Trips `abort` on a signal or at `objectives.max_duration`.
    watcher: JoinHandle<()>,
    /// Started with the first fault, stopped when recovery starts.
    guards: Guards,
    /// The `background: true` verifications: from the first fault taking effect
    /// until recovery begins.
    background: Background,
    /// The service indicators, from just before the first fault until the service
    /// is seen restored after the steady-state re-check.
    indicators: Indicators,
    /// When the first fault took effect: every service figure is counted from here.
    disruption_start_ms: Option<f64>,
    /// The `traffic:` loads, from after the prechecks to after the steady state.
    traffic: Section,
    /// The `delivery:` senders, over the same span as the traffic loads.
    delivery: crate::probe::delivery::Section,
    /// The data-loss window measured by the `delivery:` entries (the largest).
    rpo_ms: Option<f64>,
    /// Where each injected fault's step is in `steps`, by ledger sequence number:
    /// its revert is recorded there.
    injected: BTreeMap<u64, usize>,
    /// A fault could not be injected.
    injection_failed: bool,
}

impl RunState {
    fn new(drill: &Drill, control: &Control) -> Self {
        let abort = Abort::new();
        RunState {
            steps: Vec::new(),
            watcher: abort.watch(
                control.abort.clone(),
                drill.scenario.objectives.max_duration.0,
            ),
            abort,
            guards: Guards::default(),
            background: Background::default(),
            indicators: Indicators::default(),
            disruption_start_ms: None,
            traffic: Section::not_started(&drill.scenario.traffic),
            delivery: crate::probe::delivery::Section::not_started(&drill.scenario.delivery),
            rpo_ms: None,
            injected: BTreeMap::new(),
            injection_failed: false,
        }
    }
}

/// What recovery found.
struct Recovered {
    /// When recovery started: the recovery time is measured from here.
    started: Instant,
    started_ms: f64,
    /// What each guard saw until recovery stopped it.
    guards: Vec<GuardRecord>,
    /// Every revert attempted succeeded.
    reverts_ok: bool,
    /// Every recovery step passed.
    steps_ok: bool,
}

/// What the steady-state re-check found.
struct Steady {
    /// The prechecks hold again (or there was nothing to re-check).
    ok: bool,
    /// From recovery start until they did; None when not measured.
    recovery_ms: Option<f64>,
    /// The re-check's polling interval; None when nothing was re-checked.
    resolution_ms: Option<f64>,
    /// The re-check's step, when it ran.
    step: Option<StepRecord>,
}

pub(crate) fn http_client() -> Result<reqwest::Client, EngineError> {
    crate::probe::http::client().map_err(|e| EngineError::Http(e.to_string()))
}

/// A ledger under a freshly generated run id. Ids carry the pid and 32 random bits,
/// so a collision is unlikely; `create_new` makes it harmless: draw again.
fn create_with_new_id(state_dir: &std::path::Path) -> Result<(String, Ledger), EngineError> {
    let mut tries = 0;
    loop {
        let id = super::new_run_id();
        match Ledger::create(state_dir, &id) {
            Ok(l) => return Ok((id, l)),
            Err(ledger::LedgerError::RunIdInUse { .. }) if tries < 8 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

impl Engine {
    /// Locks the targets the faults touch and creates the ledger.
    ///
    /// The ledger comes first: a given run id that is already taken is refused
    /// before anything else, and a generated one that collides is drawn again.
    pub fn prepare(drill: Arc<Drill>, opts: RunOptions) -> Result<Self, EngineError> {
        let (run_id, mut ledger) = match &opts.run_id {
            Some(id) => {
                crate::nft::table_name(id).map_err(|e| EngineError::RunId(e.to_string()))?;
                (id.clone(), Ledger::create(&opts.state_dir, id)?)
            }
            None => create_with_new_id(&opts.state_dir)?,
        };
        let keys: Vec<String> = drill
            .faults
            .iter()
            .filter(|f| f.step.level <= opts.level && !opts.rehearse)
            .map(|f| f.target.lock_key())
            .collect();
        let locks = match lock::acquire(&opts.lock_dir, &keys, &run_id) {
            Ok(l) => l,
            Err(e) => {
                // Refused before it started: leave no empty ledger behind.
                ledger.discard();
                return Err(e.into());
            }
        };
        let me = std::process::id();
        ledger.append(&Entry::Started {
            run_id: run_id.clone(),
            scenario: drill.scenario.metadata.name.clone(),
            pid: me,
            pid_start: crate::target::procs::read_stat(me).map_or(0, |s| s.start_time),
            at: now_rfc3339(),
            report_dir: opts.report_dir.as_ref().map(|d| d.display().to_string()),
            identity: Some(RunIdentity {
                level: opts.level,
                file: drill.file.display().to_string(),
                sha256: drill.sha256.clone(),
                host: hostname(),
                operator: operator(),
            }),
        })?;
        let http = http_client()?;
        let timeline = Arc::new(Timeline::new(opts.progress));
        let notifier = Notifier::new(
            &drill.scenario.notify,
            http.clone(),
            timeline.clone(),
            &run_id,
            &drill.scenario.metadata.name,
            &hostname(),
            opts.rehearse,
        );
        Ok(Engine {
            http,
            timeline,
            notifier,
            drill,
            opts,
            run_id,
            runtime: Arc::new(Runtime::default()),
            ledger: Arc::new(Mutex::new(ledger)),
            _locks: locks,
        })
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.ledger.lock().unwrap().path().to_path_buf()
    }

    /// The in-process resources, so that a panicking run can still be reverted.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.clone()
    }

    /// Runs the drill to the end. Never returns before recovery has run.
    pub async fn run(self, control: Control) -> RunRecord {
        let started_at = now_rfc3339();
        let mut run = RunState::new(&self.drill, &control);
        self.announce();
        self.notifier.notify(
            NotifyEvent::Started,
            format!("drill started at level {}", self.opts.level),
            vec![format!(
                "{} fault(s) at or below level {}{}",
                self.drill
                    .faults
                    .iter()
                    .filter(|f| f.step.level <= self.opts.level)
                    .count(),
                self.opts.level,
                if self.opts.rehearse {
                    " (rehearsal: none is injected)"
                } else {
                    ""
                }
            )],
            None,
        );
        self.prechecks(&mut run).await;
        self.start_traffic(&mut run).await;
        self.inject(&mut run).await;
        self.verify(&mut run).await;
        let recovered = self.recover(&mut run, &control).await;
        // The after-recovery assertions run alongside the re-check: their `within`
        // counts from the end of recovery, not from when the steady state held.
        let (steady, after) = tokio::join!(
            self.steady_state(&recovered, &control, !run.injected.is_empty()),
            self.after_recovery(&control, !run.injected.is_empty()),
        );
        run.steps.extend(steady.step.clone());
        run.steps.extend(after);
        let service = self.service_figures(&mut run, &control).await;
        self.finish(&mut run, &control).await;
        let mut record = self.outcome(run, recovered, steady, service, started_at);
        self.notify_outcome(&record);
        record.notifications = self.notifier.finish().await;
        if !record.notifications.is_empty() {
            // Again, now that the notifications' fate is known (the record is
            // already redacted; so are their details).
            record.improvements = crate::report::improvements::derive(&record);
        }
        record
    }

    /// `finished` with the verdict and the measured figures, and
    /// `recovery_incomplete` when a fault is still in place.
    fn notify_outcome(&self, record: &RunRecord) {
        let o = &record.outcome;
        let mut lines = vec![o.reason.clone()];
        let obj = &record.objectives;
        if let Some(rto) = obj.rto_measured_ms {
            lines.push(match obj.rto_ms {
                Some(target) => format!("measured RTO {rto:.0} ms (objective {target:.0} ms)"),
                None => format!("measured RTO {rto:.0} ms"),
            });
        }
        if let Some(d) = obj.downtime_ms {
            lines.push(format!("downtime {d:.0} ms"));
        }
        if let Some(dir) = &self.opts.report_dir {
            lines.push(format!("reports: {}", dir.display()));
        }
        let status = serde_json::to_value(o.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let verdict = Some((status.as_str(), o.exit_code));
        let title = format!("{} (exit code {})", o.status.label(), o.exit_code);
        if o.status == Status::RecoveryIncomplete {
            self.notifier.notify(
                NotifyEvent::RecoveryIncomplete,
                format!(
                    "RECOVERY INCOMPLETE: a fault may still be in place (ledger {})",
                    record.ledger
                ),
                vec![
                    o.reason.clone(),
                    format!("run `firedrill recover --run {}`", record.run_id),
                ],
                verdict,
            );
        }
        self.notifier
            .notify(NotifyEvent::Finished, title, lines, verdict);
    }

    /// Setup: names the drill, the run and its ledger on the timeline.
    fn announce(&self) {
        self.timeline.event(
            Phase::Setup,
            "run_started",
            None,
            format!(
                "drill `{}` run {} (level {}, ledger {})",
                self.drill.scenario.metadata.name,
                self.run_id,
                self.opts.level,
                self.ledger_path().display()
            ),
        );
    }

    /// Prechecks, in order: the first that fails aborts the drill before any fault.
    async fn prechecks(&self, run: &mut RunState) {
        self.runtime.set_phase(Phase::Precheck);
        for c in &self.drill.scenario.prechecks {
            let rec = self
                .check_step(Phase::Precheck, c, true, &run.abort, None)
                .await;
            if rec.status != StepStatus::Passed && !run.abort.is_tripped() {
                run.abort.trip(
                    AbortReason::PrecheckFailed,
                    format!("precheck `{}` failed: {}", c.name, rec.detail),
                );
            }
            run.steps.push(rec);
        }
    }

    /// Starts the `traffic:` loads once the prechecks passed; they run until after
    /// the steady-state re-check.
    async fn start_traffic(&self, run: &mut RunState) {
        if run.abort.is_tripped() {
            return;
        }
        let sc = &self.drill.scenario;
        // Delivery senders first: their `before` window overlaps the traffic's.
        let ctx = self.probe_ctx();
        let senders = crate::probe::delivery::Section::start(
            &sc.delivery,
            &self.runtime,
            &ctx,
            sc.objectives.max_duration.0,
            self.timeline.now_ms(),
            run.abort.token(),
        );
        for t in &sc.delivery {
            self.timeline.event(
                Phase::Precheck,
                "delivery_started",
                Some(&t.name),
                format!(
                    "messages `{}` started: {}; baseline {} before the first fault",
                    t.name,
                    t.describe(),
                    t.before
                ),
            );
        }
        run.delivery = senders.await;
        run.traffic = Section::start(
            &sc.traffic,
            &self.runtime,
            &self.probe_ctx(),
            sc.objectives.max_duration.0,
            self.timeline.now_ms(),
            run.abort.token(),
        )
        .await;
        // On the timeline too, so that it shows the load around the faults.
        for t in &sc.traffic {
            self.timeline.event(
                Phase::Precheck,
                "traffic_started",
                Some(&t.name),
                format!(
                    "load `{}` started: {}; baseline {} before the first fault",
                    t.name,
                    t.probe.describe(),
                    t.before
                ),
            );
        }
    }

    /// Faults, in order, up to `--level`: each one's undo record is on disk before it
    /// takes effect, the guards start with the first, and `ramp_up` lets each settle
    /// before the next. One that cannot be injected aborts the drill.
    async fn inject(&self, run: &mut RunState) {
        self.runtime.set_phase(Phase::Fault);
        let tl = &self.timeline;
        if !run.abort.is_tripped() {
            self.preflight(run).await;
        }
        // The indicators see the service before the first fault, to see it change.
        if !run.abort.is_tripped()
            && self
                .drill
                .faults
                .iter()
                .any(|f| f.step.level <= self.opts.level)
        {
            run.indicators
                .start(&self.drill, &self.http, &self.timeline);
        }
        for f in &self.drill.faults {
            let ttl = f
                .step
                .ttl
                .unwrap_or(self.drill.scenario.objectives.max_duration)
                .0;
            let mut rec = fault_record(f, ttl, tl.now_ms());
            if f.step.level > self.opts.level {
                rec.detail = format!(
                    "level {} is above --level {}",
                    f.step.level, self.opts.level
                );
                tl.event(
                    Phase::Fault,
                    "step_skipped",
                    Some(&f.step.name),
                    format!("{}: skipped ({})", f.step.name, rec.detail),
                );
                run.steps.push(rec);
                continue;
            }
            if run.abort.is_tripped() {
                rec.detail = "drill aborted before this step".into();
                run.steps.push(rec);
                continue;
            }
            if self.opts.rehearse {
                self.rehearse_fault(f, &mut rec, run);
                run.steps.push(rec);
                if let Some(r) = f.step.ramp_up {
                    sleep_or_cancel(r.0, run.abort.token()).await;
                }
                continue;
            }
            self.fault_step(f, ttl, &mut rec, run).await;
            run.steps.push(rec);
            if let Some(r) = f.step.ramp_up
                && !run.abort.is_tripped()
            {
                tl.event(
                    Phase::Fault,
                    "ramp_up",
                    Some(&f.step.name),
                    format!("{}: settling for {r}", f.step.name),
                );
                sleep_or_cancel(r.0, run.abort.token()).await;
            }
        }
    }

    /// A rehearsal's fault step: nothing is prepared, recorded or applied. What the
    /// first fault would have started (guards, background verifications) starts
    /// here, so every check of the scenario runs as in the drill. No disruption
    /// starts, so no RTO is measured.
    fn rehearse_fault(&self, f: &ResolvedFault, rec: &mut StepRecord, run: &mut RunState) {
        rec.detail = format!("rehearsal: not injected (would have: {})", rec.description);
        self.timeline.event(
            Phase::Fault,
            "step_skipped",
            Some(&f.step.name),
            format!("{}: skipped ({})", f.step.name, rec.detail),
        );
        run.guards
            .start(&self.drill, &self.http, &self.timeline, &run.abort);
        if !run.background.started() {
            let at = Some(self.timeline.now_ms());
            run.background
                .start(&self.drill, &self.http, &self.timeline, &run.abort, at);
        }
    }

    /// Before anything is injected: every permission the faults up to `--level` need
    /// on a Kubernetes cluster, asked with SelfSubjectAccessReview. One missing fails
    /// the injection (exit 3) naming verb, resource and namespace.
    async fn preflight(&self, run: &mut RunState) {
        let mut by_cluster: Vec<(&crate::target::kubernetes::Cluster, Vec<_>)> = Vec::new();
        for f in self
            .drill
            .faults
            .iter()
            .filter(|f| f.step.level <= self.opts.level)
        {
            let Some(cluster) = f.target.cluster() else {
                continue;
            };
            let perms = f.spec.permissions(&f.target);
            match by_cluster.iter_mut().find(|(c, _)| *c == cluster) {
                Some((_, all)) => all.extend(perms),
                None => by_cluster.push((cluster, perms)),
            }
        }
        for (cluster, mut perms) in by_cluster {
            perms.sort();
            perms.dedup();
            let asked = perms.len();
            match crate::target::kubernetes::preflight(cluster, &perms).await {
                Ok(()) => self.timeline.event(
                    Phase::Fault,
                    "preflight_passed",
                    None,
                    format!(
                        "permission preflight on {}: {asked} permission(s) granted",
                        cluster.describe()
                    ),
                ),
                Err(e) => {
                    self.timeline
                        .event(Phase::Fault, "preflight_failed", None, e.clone());
                    run.injection_failed = true;
                    run.abort.trip(AbortReason::InjectionFailed, e);
                    return;
                }
            }
        }
    }

    /// Injects one fault and records how it went on `rec`; a fault that cannot be
    /// injected, or whose measured effect differs from the declared one, aborts the
    /// drill.
    async fn fault_step(
        &self,
        f: &ResolvedFault,
        ttl: Duration,
        rec: &mut StepRecord,
        run: &mut RunState,
    ) {
        let tl = &self.timeline;
        let started = Instant::now();
        tl.event(
            Phase::Fault,
            "step_started",
            Some(&f.step.name),
            format!("{}: {}", f.step.name, rec.description),
        );
        rec.attempts = 1;
        let outcome = self.inject_fault(f, ttl, started, rec, run).await;
        rec.duration_ms = ms(started.elapsed());
        match outcome {
            Ok(None) => rec.status = StepStatus::Passed,
            // It took effect; what it requires of the system did not happen.
            Ok(Some(why)) => {
                rec.status = StepStatus::Failed;
                tl.event(
                    Phase::Fault,
                    "fault_unrecovered",
                    Some(&f.step.name),
                    format!("{}: {why}", f.step.name),
                );
                if !run.abort.is_tripped() {
                    run.abort.trip(
                        AbortReason::CriticalFailure,
                        format!("fault `{}`: {why}", f.step.name),
                    );
                }
            }
            Err(e) => {
                rec.status = StepStatus::Error;
                if rec.detail.is_empty() {
                    rec.detail = e.clone();
                } else {
                    rec.detail = format!("{}; {e}", rec.detail);
                }
                tl.event(
                    Phase::Fault,
                    "fault_failed",
                    Some(&f.step.name),
                    format!("{}: {e}", f.step.name),
                );
                run.injection_failed = true;
                run.abort.trip(
                    AbortReason::InjectionFailed,
                    format!("fault `{}` could not be injected: {e}", f.step.name),
                );
            }
        }
    }

    /// One fault: prepare, write the undo record, start the guards, apply, and check
    /// the measured effect against the declared one. Fills in `rec` as it goes.
    /// `Ok(Some(why))`: it took effect, but the system did not recover from it as
    /// the fault requires (the step fails, not the injection).
    async fn inject_fault(
        &self,
        f: &ResolvedFault,
        ttl: Duration,
        started: Instant,
        rec: &mut StepRecord,
        run: &mut RunState,
    ) -> Result<Option<String>, String> {
        let ctx = FaultCtx {
            run_id: &self.run_id,
            step: &f.step.name,
            target: &f.target,
            ttl,
            started,
            cancel: run.abort.token().clone(),
            runtime: &self.runtime,
        };
        // A remote host is locked on the host too: engines elsewhere see it.
        f.target
            .lock_on_host(&self.run_id)
            .await
            .map_err(|e| format!("cannot lock the target: {e}"))?;
        let undo = f
            .spec
            .prepare(&ctx)
            .await
            .map_err(|e| format!("cannot prepare: {e}"))?;
        // The promise: the undo record is on disk before anything takes effect.
        let seq = self
            .ledger
            .lock()
            .unwrap()
            .record_inject(&f.step.name, &f.target, &undo)
            .map_err(|e| format!("cannot write the undo record, fault NOT injected: {e}"))?;
        let fault = rec.fault.as_mut().unwrap();
        fault.ledger_seq = Some(seq);
        fault.reversible = Some(undo.is_reversible());
        run.injected.insert(seq, run.steps.len());
        run.guards
            .start(&self.drill, &self.http, &self.timeline, &run.abort);
        let (effect, unrecovered) = match f.spec.apply(&ctx, &undo).await {
            Ok(e) => (e, None),
            Err(crate::fault::FaultError::Unrecovered { effect, why }) => (*effect, Some(why)),
            Err(e) => return Err(e.to_string()),
        };
        // Test hook (debug builds only): prove that a panicking engine still reverts.
        #[cfg(debug_assertions)]
        if std::env::var("FIREDRILL_DEBUG_PANIC_AFTER").is_ok_and(|s| s == f.step.name) {
            panic!(
                "FIREDRILL_DEBUG_PANIC_AFTER: panicking after `{}` took effect",
                f.step.name
            );
        }
        let ok = effect.as_declared;
        let msg = format!(
            "{}: {} (declared: {})",
            f.step.name, effect.measured, effect.declared
        );
        rec.detail = effect.measured.clone();
        let effect_ms = effect.effective_after_ms.map(|e| rec.started_ms + e);
        rec.fault.as_mut().unwrap().effect = Some(effect);
        if ok {
            self.notifier.notify(
                NotifyEvent::FaultInjected,
                format!("fault `{}` injected", f.step.name),
                vec![
                    msg.clone(),
                    format!(
                        "reverted at the latest after its ttl of {}",
                        crate::duration::HumanDuration(ttl)
                    ),
                ],
                None,
            );
            self.timeline
                .event(Phase::Fault, "fault_effective", Some(&f.step.name), msg);
            // The disruption starts when the first fault took effect: the time of
            // its `fault_effective` event, so that journal and timeline agree.
            if run.disruption_start_ms.is_none() {
                let event_ms = self
                    .timeline
                    .events()
                    .iter()
                    .rev()
                    .find(|e| e.event == "fault_effective")
                    .map(|e| e.t_ms);
                // A kind that keeps measuring after it took effect (pod_kill waits
                // for the replacements) returns long after its effect: there the
                // disruption starts at the effect it measured.
                run.disruption_start_ms = if f.spec.measures_after_effect() {
                    effect_ms.or(event_ms)
                } else {
                    event_ms
                };
                run.background.start(
                    &self.drill,
                    &self.http,
                    &self.timeline,
                    &run.abort,
                    run.disruption_start_ms,
                );
            }
            Ok(unrecovered)
        } else {
            Err(format!("measured effect differs from declared: {msg}"))
        }
    }

    /// Verifications: the foreground ones in order (a critical one that fails aborts
    /// the rest), while the background ones, started with the first fault, run side
    /// by side; their window ends once the foreground ones are done. Records keep
    /// the declared order.
    async fn verify(&self, run: &mut RunState) {
        self.runtime.set_phase(Phase::Verification);
        let mut recs = Vec::new();
        for (i, c) in self.drill.scenario.verifications.iter().enumerate() {
            if c.background {
                continue;
            }
            let rec = self
                .check_step(
                    Phase::Verification,
                    c,
                    c.critical,
                    &run.abort,
                    run.disruption_start_ms,
                )
                .await;
            if rec.status != StepStatus::Passed && c.critical && !run.abort.is_tripped() {
                run.abort.trip(
                    AbortReason::CriticalFailure,
                    format!("critical verification `{}` failed: {}", c.name, rec.detail),
                );
            }
            recs.push((i, rec));
        }
        let started = run.background.started();
        recs.extend(run.background.finish().await);
        if !started {
            for (i, c) in self.drill.scenario.verifications.iter().enumerate() {
                if c.background {
                    let why = if run.abort.is_tripped() {
                        "drill aborted"
                    } else {
                        "no fault took effect"
                    };
                    let desc = describe_check(c);
                    let rec = skipped(
                        Phase::Verification,
                        &c.name,
                        &desc,
                        c.critical,
                        why,
                        &self.timeline,
                    );
                    recs.push((i, rec));
                }
            }
        }
        recs.sort_by_key(|(i, _)| *i);
        run.steps.extend(recs.into_iter().map(|(_, r)| r));
    }

    /// Recovery, always: the guards stop, every fault the ledger holds as injected
    /// is reverted newest first, then the scenario's recovery steps run.
    async fn recover(&self, run: &mut RunState, control: &Control) -> Recovered {
        self.runtime.set_phase(Phase::Recovery);
        let started = Instant::now();
        let started_ms = self.timeline.now_ms();
        self.timeline.event(
            Phase::Recovery,
            "recovery_started",
            None,
            match run.abort.get() {
                Some((_, why)) => format!("recovering ({why})"),
                None => "recovering".to_string(),
            },
        );
        if let Some((_, why)) = run.abort.get() {
            self.notifier.notify(
                NotifyEvent::Aborted,
                format!("drill aborted: {why}"),
                vec!["recovery is running: every injected fault is being reverted".into()],
                None,
            );
        }
        let guards = run.guards.stop().await;
        let reverts_ok = self.revert_all(run, control).await;
        let mut steps_ok = true;
        for r in &self.drill.scenario.recovery {
            let rec = self.recovery_step(r, control).await;
            steps_ok &= rec.status == StepStatus::Passed;
            run.steps.push(rec);
        }
        Recovered {
            started,
            started_ms,
            guards,
            reverts_ok,
            steps_ok,
        }
    }

    /// Reverts every fault of this run that the ledger holds as not reverted, newest
    /// first, and records each revert on its fault's step. Returns false if any
    /// revert failed.
    async fn revert_all(&self, run: &mut RunState, control: &Control) -> bool {
        let path = self.ledger_path();
        let scan = match ledger::scan(&path) {
            Ok(s) => s,
            Err(e) => {
                self.timeline.event(
                    Phase::Recovery,
                    "revert_failed",
                    None,
                    format!("cannot read the ledger: {e}"),
                );
                return false;
            }
        };
        let mut all_ok = true;
        // A line this run wrote and cannot read back may be one of its faults:
        // revert the rest, and say the recovery is incomplete.
        for e in &scan.unreadable {
            all_ok = false;
            self.timeline
                .event(Phase::Recovery, "revert_failed", None, e.to_string());
        }
        for p in ledger::pending(&scan.entries) {
            let rec = self.revert(&p, control).await;
            all_ok &= rec.ok;
            if let Some(fr) = run
                .injected
                .get(&p.seq)
                .and_then(|i| run.steps.get_mut(*i))
                .and_then(|s| s.fault.as_mut())
            {
                fr.revert = Some(rec);
            }
        }
        all_ok
    }

    /// Reverts one fault and records in the ledger whether it worked.
    async fn revert(&self, p: &ledger::Pending, control: &Control) -> RevertRecord {
        let started_ms = self.timeline.now_ms();
        let t = Instant::now();
        let ctx = RevertCtx {
            runtime: Some(&self.runtime),
            hurry: control.hurry.is_cancelled(),
        };
        match p.undo.revert(&ctx).await {
            Ok(r) => {
                let _ = self.ledger.lock().unwrap().append(&Entry::Reverted {
                    seq: p.seq,
                    at: now_rfc3339(),
                });
                self.timeline.event(
                    Phase::Recovery,
                    "fault_reverted",
                    Some(&p.step),
                    format!("{}: reverted: {}", p.step, r.measured),
                );
                RevertRecord {
                    ok: true,
                    started_ms,
                    duration_ms: ms(t.elapsed()),
                    result: Some(r),
                    error: None,
                }
            }
            Err(e) => {
                let _ = self.ledger.lock().unwrap().append(&Entry::RevertFailed {
                    seq: p.seq,
                    error: e.to_string(),
                    at: now_rfc3339(),
                });
                self.timeline.event(
                    Phase::Recovery,
                    "revert_failed",
                    Some(&p.step),
                    format!("{}: REVERT FAILED: {e}", p.step),
                );
                RevertRecord {
                    ok: false,
                    started_ms,
                    duration_ms: ms(t.elapsed()),
                    result: None,
                    error: Some(e.to_string()),
                }
            }
        }
    }

    async fn recovery_step(
        &self,
        r: &crate::scenario::RecoveryStep,
        control: &Control,
    ) -> StepRecord {
        let tl = &self.timeline;
        let started_ms = tl.now_ms();
        let t = Instant::now();
        tl.event(
            Phase::Recovery,
            "step_started",
            Some(&r.name),
            format!("{}: `{}` on {}", r.name, r.command.run, r.command.target),
        );
        let target = self
            .drill
            .targets
            .get(&r.command.target)
            .cloned()
            .unwrap_or(crate::target::Target::Local);
        // Secrets travel in the environment, never on the command line (`ps`).
        let cmd = crate::target::Cmd::new("sh")
            .args(["-c", &r.command.run])
            .envs(self.drill.vars.env_for(&r.command.run))
            .timeout(r.command.timeout.0);
        let _ = control; // recovery steps are not waits: a hurried recovery still runs them
        let tail = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .last()
                .unwrap_or("")
                .to_string()
        };
        let (status, detail) = match target.run(&cmd).await {
            Ok(out) if out.success() => (
                StepStatus::Passed,
                format!("exit 0 {}", tail(&out.stdout)).trim().to_string(),
            ),
            Ok(out) => (
                StepStatus::Failed,
                format!("exit {:?}: {}", out.code, tail(&out.stderr)),
            ),
            Err(crate::target::TargetError::TimedOut { .. }) => (
                StepStatus::Failed,
                format!("timed out after {} (killed)", r.command.timeout),
            ),
            Err(e) => (StepStatus::Error, format!("cannot run: {e}")),
        };
        tl.event(
            Phase::Recovery,
            "step_finished",
            Some(&r.name),
            format!("{}: {:?}: {detail}", r.name, status),
        );
        StepRecord {
            status,
            duration_ms: ms(t.elapsed()),
            attempts: 1,
            detail,
            ..StepRecord::new(
                Phase::Recovery,
                &r.name,
                format!("`{}` on {}", r.command.run, r.command.target),
                started_ms,
            )
        }
    }

    /// Steady state: once any fault was injected, polls every steady-state check
    /// (`steady_state`, or the prechecks) until all hold again. The time from recovery
    /// start until they do is the recovery time.
    async fn steady_state(
        &self,
        recovered: &Recovered,
        control: &Control,
        injected: bool,
    ) -> Steady {
        self.runtime.set_phase(Phase::SteadyState);
        let sc = &self.drill.scenario;
        let checks = sc.steady_checks();
        if !injected || checks.is_empty() {
            return Steady {
                ok: true,
                recovery_ms: None,
                resolution_ms: None,
                step: None,
            };
        }
        let tl = &self.timeline;
        let budget = sc.objectives.rto.map_or(Duration::from_secs(30), |r| {
            (r.0 * 2).max(Duration::from_secs(5))
        });
        let interval = recheck_interval(checks);
        tl.event(
            Phase::SteadyState,
            "step_started",
            Some("steady state"),
            format!(
                "re-checking {} steady-state check(s) every {} for up to {}",
                checks.len(),
                humantime::format_duration(interval),
                humantime::format_duration(budget)
            ),
        );
        let (ok, attempts, detail) = self.until_steady(checks, interval, budget, control).await;
        let recovery_ms = ok.then(|| ms(recovered.started.elapsed()));
        let msg = match recovery_ms {
            Some(m) => format!(
                "steady state: restored {m:.0} ms after recovery started (resolution {:.0} ms)",
                ms(interval)
            ),
            None => format!("steady state: NOT restored: {detail}"),
        };
        tl.event(
            Phase::SteadyState,
            "step_finished",
            Some("steady state"),
            msg,
        );
        let what = if sc.steady_state.is_empty() {
            "prechecks"
        } else {
            "steady-state checks"
        };
        let step = StepRecord {
            status: if ok {
                StepStatus::Passed
            } else {
                StepStatus::Failed
            },
            duration_ms: ms(recovered.started.elapsed()),
            attempts,
            first_held_ms: recovery_ms,
            detail,
            ..StepRecord::new(
                Phase::SteadyState,
                "steady state",
                format!(
                    "{what} re-run every {} until they all hold; measures the recovery time",
                    humantime::format_duration(interval)
                ),
                recovered.started_ms,
            )
        };
        Steady {
            ok,
            recovery_ms,
            resolution_ms: Some(ms(interval)),
            step: Some(step),
        }
    }

    /// Polls every steady-state check (once each, every `interval`) until all hold,
    /// `budget` has passed or the operator hurries. Returns whether they held, the
    /// number of rounds and why, with what failed in the rounds before.
    async fn until_steady(
        &self,
        checks: &[Check],
        interval: Duration,
        budget: Duration,
        control: &Control,
    ) -> (bool, u32, String) {
        let ctx = self.probe_ctx();
        let deadline = Instant::now() + budget;
        let mut history = FailureHistory::default();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let round = Instant::now();
            let mut failing = Vec::new();
            for c in checks {
                let obs = c.probe.observe(&ctx).await;
                let v = c.expect.evaluate(&obs);
                if !v.ok {
                    failing.push(format!("{}: {}", c.name, v.detail));
                }
            }
            if failing.is_empty() {
                let mut detail = format!("all steady-state checks hold again (round {attempts})");
                if let Some(h) = history.render() {
                    detail = format!("{detail}; before: {h}");
                }
                return (true, attempts, detail);
            }
            let failing = failing.join("; ");
            if Instant::now() >= deadline || control.hurry.is_cancelled() {
                let mut why = format!(
                    "still failing after {} ({attempts} rounds): {failing}",
                    humantime::format_duration(budget),
                );
                if let Some(h) = history.render() {
                    why = format!("{why}; before: {h}");
                }
                return (false, attempts, why);
            }
            history.push(attempts, failing);
            // Rounds start every `interval`, whatever the probes took.
            tokio::select! {
                _ = tokio::time::sleep(interval.saturating_sub(round.elapsed())) => {}
                _ = control.hurry.cancelled() => {}
            }
        }
    }

    /// After-recovery assertions, each with its own verdict and timing rule, once
    /// any fault was injected. They run even after an abort: they are about the
    /// system once the faults are gone.
    async fn after_recovery(&self, control: &Control, injected: bool) -> Vec<StepRecord> {
        let checks = &self.drill.scenario.after_recovery;
        if !injected {
            let tl = &self.timeline;
            return checks
                .iter()
                .map(|c| {
                    skipped(
                        Phase::AfterRecovery,
                        &c.name,
                        &describe_check(c),
                        c.critical,
                        "no fault was injected",
                        tl,
                    )
                })
                .collect();
        }
        let mut out = Vec::new();
        for c in checks {
            // Not the forward phases' abort token (it is tripped by any abort, and
            // these run after it); a hurried recovery (second Ctrl-C) stops them.
            out.push(
                self.check_step_with(Phase::AfterRecovery, c, c.critical, &control.hurry, None)
                    .await,
            );
        }
        out
    }

    /// The service figures: the indicators are observed until they are restored (at
    /// most as long as the steady-state re-check may wait), then measured from the
    /// disruption.
    async fn service_figures(
        &self,
        run: &mut RunState,
        control: &Control,
    ) -> (Vec<Series>, Measured) {
        let budget = self
            .drill
            .scenario
            .objectives
            .rto
            .map_or(Duration::from_secs(30), |r| {
                (r.0 * 2).max(Duration::from_secs(5))
            });
        let series = run.indicators.finish(budget, &control.hurry).await;
        let m = measure(&series, run.disruption_start_ms);
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
        let msg = match m.state {
            ServiceState::NotMeasured => {
                "service figures not measured: no indicator observed a disruption".to_string()
            }
            ServiceState::NotRestored => format!(
                "service down {} after the disruption and NOT restored (resolution {})",
                f(m.detect_ms),
                f(m.resolution_ms)
            ),
            _ => format!(
                "service {}: down after {}, for {}; restored {} after the disruption (resolution {})",
                m.state.label(),
                f(m.detect_ms),
                f(m.downtime_ms),
                f(m.rto_measured_ms),
                f(m.resolution_ms)
            ),
        };
        self.timeline
            .event(Phase::SteadyState, "service_measured", None, msg);
        (series, m)
    }

    /// The run is over: the traffic loads are judged, the watcher stops, the ledger
    /// is closed and every helper process reaped.
    async fn finish(&self, run: &mut RunState, control: &Control) {
        // Judging consumes the section; an empty one takes its place.
        let traffic = std::mem::replace(&mut run.traffic, Section::not_started(&[]));
        let delivery = std::mem::replace(
            &mut run.delivery,
            crate::probe::delivery::Section::not_started(&[]),
        );
        // The stages of staged switchovers: delivery figures per stage.
        let now_ms = self.timeline.now_ms();
        let unix_now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        let windows = super::switchover::windows(&run.steps, now_ms, unix_now_ms - now_ms);
        let (traffic, delivery) = tokio::join!(
            traffic.finish(&control.hurry),
            delivery.finish(&self.http, &control.hurry, &windows)
        );
        for v in delivery {
            if v.passed.is_some() {
                if let Some(r) = v.metrics.get("rpo_ms")
                    && v.metrics.get("acknowledged").is_some_and(|a| *a > 0.0)
                {
                    run.rpo_ms = Some(run.rpo_ms.map_or(*r, |x: f64| x.max(*r)));
                }
                self.timeline.event(
                    Phase::SteadyState,
                    "delivery_stopped",
                    Some(&v.name),
                    format!(
                        "messages `{}` stopped after {} sends in {:.1} s",
                        v.name,
                        v.requests,
                        v.duration_ms / 1000.0
                    ),
                );
            }
            run.steps.push(StepRecord::from(v));
        }
        for v in traffic {
            if v.passed.is_some() {
                self.timeline.event(
                    Phase::SteadyState,
                    "traffic_stopped",
                    Some(&v.name),
                    format!(
                        "load `{}` stopped after {} requests in {:.1} s",
                        v.name,
                        v.requests,
                        v.duration_ms / 1000.0
                    ),
                );
            }
            run.steps.push(StepRecord::from(v));
        }
        run.watcher.abort();
        {
            let mut l = self.ledger.lock().unwrap();
            let _ = l.append(&Entry::Finished { at: now_rfc3339() });
        }
        self.runtime.reap().await;
    }

    /// The outcome: the loudest failure wins (see [`decide`]); the ledger, not the
    /// engine's memory, says whether everything was reverted. Returns the run model,
    /// improvements derived and secrets redacted.
    fn outcome(
        &self,
        mut run: RunState,
        recovered: Recovered,
        steady: Steady,
        (series, service): (Vec<Series>, Measured),
        started_at: String,
    ) -> RunRecord {
        self.runtime.set_phase(Phase::Report);
        let sc = &self.drill.scenario;
        let rto_ms = sc.objectives.rto.map(|d| ms(d.0));
        let critical_failed = run.steps.iter().any(|s| {
            s.critical
                && matches!(
                    s.phase,
                    // A fault step fails (rather than errs) when the system did not
                    // recover from it as required.
                    Phase::Precheck | Phase::Verification | Phase::AfterRecovery | Phase::Fault
                )
                && s.status == StepStatus::Failed
        });
        let guard_breached = recovered.guards.iter().any(|g| g.breached && g.critical);
        let aborted = run.abort.get();
        let revert_gaps = match ledger::scan(&self.ledger_path()) {
            Ok(scan) => revert_gaps(&scan),
            Err(e) => vec![format!("cannot read the ledger: {e}")],
        };
        let (status, reason) = decide(&Verdict {
            revert_ok: recovered.reverts_ok,
            revert_gaps: &revert_gaps,
            injection_failed: run.injection_failed,
            aborted: aborted.as_ref(),
            critical_failed: critical_failed || guard_breached,
            steady_ok: steady.ok,
            rto_ms,
            rto_measured_ms: service.rto_measured_ms,
            service_restored: match service.state {
                ServiceState::NotMeasured => None,
                ServiceState::NotRestored => Some(false),
                _ => Some(true),
            },
            objectives_critical: sc.objectives.critical,
            rpo_ms: sc.objectives.rpo.map(|d| ms(d.0)),
            rpo_measured_ms: run.rpo_ms,
            recovery_steps_ok: recovered.steps_ok,
        });
        // Said first, so no reader takes a rehearsal's PASSED for a drill's.
        let reason = if self.opts.rehearse {
            let reason = reason.replace(" and every fault was reverted", "");
            format!("rehearsal, no fault injected: {reason}")
        } else {
            reason
        };
        self.timeline.event_unprinted(
            Phase::Report,
            "run_finished",
            None,
            format!("{status:?}: {reason}"),
        );
        let outcome = Outcome {
            status,
            exit_code: status.exit_code(),
            reason,
            aborted: aborted.map(|a| a.0),
        };
        record_impacts(&mut run.steps, &series);
        let objectives = ObjectivesRecord {
            rto_ms,
            max_duration_ms: ms(sc.objectives.max_duration.0),
            recovery_ms: steady.recovery_ms,
            rto_met: match (rto_ms, service.state, service.rto_measured_ms) {
                (Some(_), ServiceState::NotRestored, _) => Some(false),
                (Some(r), _, Some(m)) => Some(m <= r),
                _ => None,
            },
            critical: sc.objectives.critical,
            service: service.state,
            indicators: series.into_iter().map(|s| s.name).collect(),
            disruption_start_ms: run.disruption_start_ms,
            detect_ms: service.detect_ms,
            downtime_ms: service.downtime_ms,
            rto_measured_ms: service.rto_measured_ms,
            resolution_ms: service.resolution_ms,
            rpo_objective_ms: sc.objectives.rpo.map(|d| ms(d.0)),
            // Only a `delivery:` entry measures a data-loss window: never claim one otherwise.
            rpo_ms: run.rpo_ms,
            recovery_resolution_ms: steady.resolution_ms,
        };
        self.record(started_at, outcome, objectives, run.steps, recovered.guards)
    }

    /// The run model, with improvements derived and secrets redacted.
    fn record(
        &self,
        started_at: String,
        outcome: Outcome,
        objectives: ObjectivesRecord,
        steps: Vec<StepRecord>,
        guards: Vec<GuardRecord>,
    ) -> RunRecord {
        let drill = &self.drill;
        let meta = &drill.scenario.metadata;
        let exercise = ExerciseRecord::new(meta, &[], &started_at);
        let mut record = RunRecord {
            journal_version: JOURNAL_VERSION,
            tool: ToolInfo::current(),
            run_id: self.run_id.clone(),
            scenario: ScenarioInfo {
                name: meta.name.clone(),
                description: meta.description.clone(),
                owner: meta.owner.clone(),
                file: drill.file.display().to_string(),
                sha256: drill.sha256.clone(),
                labels: meta.labels.clone(),
                text: Some(drill.text.clone()),
            },
            host: hostname(),
            operator: operator(),
            level: self.opts.level,
            vars: drill.vars.redacted(),
            started_at,
            finished_at: now_rfc3339(),
            duration_ms: self.timeline.now_ms(),
            outcome,
            objectives,
            timeline: self.timeline.events(),
            steps,
            guards,
            improvements: Vec::new(),
            ledger: self.ledger_path().display().to_string(),
            rehearsal: self.opts.rehearse,
            notifications: Vec::new(),
            exercise,
        };
        crate::report::round_timings(&mut record);
        record.improvements = crate::report::improvements::derive(&record);
        crate::report::redact(&mut record, &drill.vars.secret_values());
        record
    }

    fn probe_ctx(&self) -> ProbeCtx<'_> {
        ProbeCtx {
            targets: &self.drill.targets,
            http: &self.http,
            vars: &self.drill.vars,
        }
    }

    /// One precheck or verification with its timing rule; skipped once the drill
    /// is aborted. `disruption_ms`: when the first fault took effect, if one did.
    async fn check_step(
        &self,
        phase: Phase,
        c: &Check,
        critical: bool,
        abort: &Abort,
        disruption_ms: Option<f64>,
    ) -> StepRecord {
        let tl = &self.timeline;
        if abort.is_tripped() {
            return skipped(
                phase,
                &c.name,
                &c.probe.describe(),
                critical,
                "drill aborted",
                tl,
            );
        }
        self.check_step_with(phase, c, critical, abort.token(), disruption_ms)
            .await
    }

    /// One check with its timing rule, stopped early by `cancel`.
    async fn check_step_with(
        &self,
        phase: Phase,
        c: &Check,
        critical: bool,
        cancel: &tokio_util::sync::CancellationToken,
        disruption_ms: Option<f64>,
    ) -> StepRecord {
        let tl = &self.timeline;
        let started_ms = check_started(tl, phase, c);
        let out = run_check(c, &self.probe_ctx(), cancel).await;
        check_finished(tl, phase, c, critical, out, started_ms, disruption_ms)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The steady-state re-check polls at the smallest interval its checks declare: the
/// user chose that resolution.
fn recheck_interval(checks: &[Check]) -> Duration {
    checks
        .iter()
        .map(|c| c.interval.0)
        .min()
        .unwrap_or(crate::scenario::default_interval().0)
        .max(Duration::from_millis(1))
}

/// What failed in the rounds of the re-check before it ended, bounded: the first
/// rounds and the latest are kept, the ones between are counted, each line cut.
#[derive(Default)]
struct FailureHistory {
    head: Vec<String>,
    tail: std::collections::VecDeque<String>,
    dropped: u32,
}

impl FailureHistory {
    const HEAD: usize = 3;
    const TAIL: usize = 3;
    const LINE: usize = 160;

    fn push(&mut self, round: u32, failing: String) {
        let mut line = format!("round {round}: {failing}");
        if line.len() > Self::LINE {
            let mut cut = Self::LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        if self.head.len() < Self::HEAD {
            self.head.push(line);
            return;
        }
        self.tail.push_back(line);
        if self.tail.len() > Self::TAIL {
            self.tail.pop_front();
            self.dropped += 1;
        }
    }

    fn render(&self) -> Option<String> {
        if self.head.is_empty() {
            return None;
        }
        let mut parts: Vec<String> = self.head.clone();
        if self.dropped > 0 {
            parts.push(format!("({} more rounds failed)", self.dropped));
        }
        parts.extend(self.tail.iter().cloned());
        Some(parts.join("; "))
    }
}

/// Writes each fault's own impact window (see [`impacts`]) on its record; a fault
/// takes effect when its effect was observed (as the report's fault windows count it).
fn record_impacts(steps: &mut [StepRecord], series: &[Series]) {
    let effective: Vec<Option<f64>> = steps
        .iter()
        .filter(|s| s.fault.is_some())
        .map(|s| {
            let e = s.fault.as_ref()?.effect.as_ref()?;
            Some(s.started_ms + e.effective_after_ms.unwrap_or(s.duration_ms))
        })
        .collect();
    let windows = impacts(series, &effective);
    for (f, w) in steps
        .iter_mut()
        .filter_map(|s| s.fault.as_mut())
        .zip(windows)
    {
        let Some(w) = w else { continue };
        f.impact_start_ms = Some(w.start_ms);
        f.impact_end_ms = w.end_ms;
        f.impact_ms = w.end_ms.map(|e| e - w.start_ms);
    }
}

/// A fault step before it runs: declared, not injected.
fn fault_record(f: &ResolvedFault, ttl: Duration, started_ms: f64) -> StepRecord {
    StepRecord {
        fault: Some(FaultRecord {
            kind: f.spec.kind().into(),
            target: f.target.describe(),
            level: f.step.level,
            ttl_ms: ms(ttl),
            ledger_seq: None,
            reversible: None,
            effect: None,
            revert: None,
            impact_start_ms: None,
            impact_end_ms: None,
            impact_ms: None,
        }),
        ..StepRecord::new(Phase::Fault, &f.step.name, f.spec.describe(), started_ms)
    }
}

fn skipped(
    phase: Phase,
    name: &str,
    desc: &str,
    critical: bool,
    why: &str,
    tl: &Timeline,
) -> StepRecord {
    tl.event(
        phase,
        "step_skipped",
        Some(name),
        format!("{name}: skipped ({why})"),
    );
    StepRecord {
        critical,
        detail: why.into(),
        ..StepRecord::new(phase, name, desc, tl.now_ms())
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn operator() -> String {
    for k in ["SUDO_USER", "USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(k)
            && !v.is_empty()
        {
            return v;
        }
    }
    format!("uid {}", nix::unistd::getuid())
}

#[cfg(test)]
mod tests {
    use super::FailureHistory;

    #[test]
    fn failure_history_keeps_first_and_last_rounds_and_counts_the_rest() {
        let mut h = FailureHistory::default();
        assert_eq!(h.render(), None);
        for round in 1..=100 {
            h.push(
                round,
                format!("relay healthy: {}", "connection refused ".repeat(20)),
            );
        }
        let text = h.render().unwrap();
        assert!(text.starts_with("round 1: relay healthy: connection refused"));
        assert!(text.contains("round 3: "));
        assert!(!text.contains("round 4: "));
        assert!(text.contains("(94 more rounds failed)"));
        assert!(text.contains("round 98: ") && text.contains("round 100: "));
        assert!(text.chars().count() < 6 * 170 + 40, "{}", text.len());
    }
}
