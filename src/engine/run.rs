//! One drill run, from lock to report model.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::check::run_check;
use super::ledger::{self, Entry, Ledger, now_rfc3339};
use super::lock::{self, LockError, TargetLocks};
use super::timeline::Timeline;
use super::{Control, RunOptions};
use crate::fault::{FaultCtx, RevertCtx};
use crate::model::*;
use crate::probe::ProbeCtx;
use crate::rt::Runtime;
use crate::rt::sleep_or_cancel;
use crate::scenario::{Check, Drill};

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
    _locks: TargetLocks,
}

/// Shared state of the forward phases.
struct Abort {
    token: CancellationToken,
    reason: Mutex<Option<(AbortReason, String)>>,
}

impl Abort {
    fn trip(&self, reason: AbortReason, why: String) {
        let mut r = self.reason.lock().unwrap();
        if r.is_none() {
            *r = Some((reason, why));
        }
        self.token.cancel();
    }
    fn get(&self) -> Option<(AbortReason, String)> {
        self.reason.lock().unwrap().clone()
    }
}

pub(crate) fn http_client() -> Result<reqwest::Client, EngineError> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .user_agent(concat!("firedrill/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| EngineError::Http(e.to_string()))
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
            .filter(|f| f.step.level <= opts.level)
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
        })?;
        Ok(Engine {
            http: http_client()?,
            timeline: Arc::new(Timeline::new(opts.progress)),
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
        let drill = self.drill.clone();
        let sc = &drill.scenario;
        let tl = self.timeline.clone();
        let abort = Arc::new(Abort {
            token: CancellationToken::new(),
            reason: Mutex::new(None),
        });
        let probe_ctx = ProbeCtx {
            targets: &drill.targets,
            http: &self.http,
            vars: &drill.vars,
        };
        let mut steps: Vec<StepRecord> = Vec::new();

        // Outside signals and the drill's own cap both abort the forward phases.
        let watcher = {
            let abort = abort.clone();
            let ext = control.abort.clone();
            let cap = sc.objectives.max_duration.0;
            tokio::spawn(async move {
                tokio::select! {
                    _ = ext.cancelled() => abort.trip(AbortReason::Signal, "interrupted by signal".into()),
                    _ = tokio::time::sleep(cap) => abort.trip(AbortReason::MaxDuration,
                        format!("objectives.max_duration ({}) reached", humantime::format_duration(cap))),
                    _ = abort.token.cancelled() => {}
                }
            })
        };

        tl.event(
            Phase::Setup,
            "run_started",
            None,
            format!(
                "drill `{}` run {} (level {}, ledger {})",
                sc.metadata.name,
                self.run_id,
                self.opts.level,
                self.ledger_path().display()
            ),
        );

        // ── prechecks ────────────────────────────────────────────────────────────
        self.runtime.set_phase(Phase::Precheck);
        for c in &sc.prechecks {
            if abort.token.is_cancelled() {
                steps.push(skipped(
                    Phase::Precheck,
                    &c.name,
                    &c.probe.describe(),
                    true,
                    "drill aborted",
                    &tl,
                ));
                continue;
            }
            let rec = self
                .check_step(Phase::Precheck, c, true, &probe_ctx, &abort.token)
                .await;
            if rec.status != StepStatus::Passed {
                abort.trip(
                    AbortReason::PrecheckFailed,
                    format!("precheck `{}` failed: {}", c.name, rec.detail),
                );
            }
            steps.push(rec);
        }

        // ── traffic: continuous load, from here to after the steady-state re-check ──
        let traffic = if abort.token.is_cancelled() {
            crate::probe::traffic::Section::not_started(&sc.traffic)
        } else {
            crate::probe::traffic::Section::start(
                &sc.traffic,
                &self.runtime,
                &self.http,
                sc.objectives.max_duration.0,
                tl.now_ms(),
                &abort.token,
            )
            .await
        };

        // ── faults ───────────────────────────────────────────────────────────────
        self.runtime.set_phase(Phase::Fault);
        let guard_stop = CancellationToken::new();
        let mut guard_tasks = Vec::new();
        let mut fault_step_index: BTreeMap<u64, usize> = BTreeMap::new();
        let mut injection_failed = false;
        for f in &drill.faults {
            let ttl = f.step.ttl.unwrap_or(sc.objectives.max_duration).0;
            let mut rec = StepRecord {
                phase: Phase::Fault,
                name: f.step.name.clone(),
                status: StepStatus::Skipped,
                critical: true,
                started_ms: tl.now_ms(),
                duration_ms: 0.0,
                description: f.spec.describe(),
                attempts: 0,
                first_held_ms: None,
                within_ms: None,
                detail: String::new(),
                fault: Some(FaultRecord {
                    kind: f.spec.kind().into(),
                    target: f.target.describe(),
                    level: f.step.level,
                    ttl_ms: ttl.as_secs_f64() * 1000.0,
                    ledger_seq: None,
                    reversible: None,
                    effect: None,
                    revert: None,
                }),
                metrics: BTreeMap::new(),
            };
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
                steps.push(rec);
                continue;
            }
            if abort.token.is_cancelled() {
                rec.detail = "drill aborted before this step".into();
                steps.push(rec);
                continue;
            }
            let started = Instant::now();
            tl.event(
                Phase::Fault,
                "step_started",
                Some(&f.step.name),
                format!("{}: {}", f.step.name, rec.description),
            );
            let ctx = FaultCtx {
                run_id: &self.run_id,
                step: &f.step.name,
                target: &f.target,
                ttl,
                started,
                cancel: abort.token.clone(),
                runtime: &self.runtime,
            };
            rec.attempts = 1;
            let outcome: Result<(), String> = async {
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
                    .map_err(|e| {
                        format!("cannot write the undo record, fault NOT injected: {e}")
                    })?;
                rec.fault.as_mut().unwrap().ledger_seq = Some(seq);
                rec.fault.as_mut().unwrap().reversible = Some(undo.is_reversible());
                fault_step_index.insert(seq, steps.len());
                if guard_tasks.is_empty() {
                    guard_tasks = self.start_guards(&guard_stop, &abort);
                }
                let effect = f.spec.apply(&ctx, &undo).await.map_err(|e| e.to_string())?;
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
                rec.fault.as_mut().unwrap().effect = Some(effect);
                if ok {
                    tl.event(Phase::Fault, "fault_effective", Some(&f.step.name), msg);
                    Ok(())
                } else {
                    Err(format!("measured effect differs from declared: {msg}"))
                }
            }
            .await;
            rec.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            match outcome {
                Ok(()) => rec.status = StepStatus::Passed,
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
                    injection_failed = true;
                    abort.trip(
                        AbortReason::InjectionFailed,
                        format!("fault `{}` could not be injected: {e}", f.step.name),
                    );
                }
            }
            steps.push(rec);
            if let Some(r) = f.step.ramp_up
                && !abort.token.is_cancelled()
            {
                tl.event(
                    Phase::Fault,
                    "ramp_up",
                    Some(&f.step.name),
                    format!("{}: settling for {r}", f.step.name),
                );
                sleep_or_cancel(r.0, &abort.token).await;
            }
        }

        // ── verifications ────────────────────────────────────────────────────────
        self.runtime.set_phase(Phase::Verification);
        for c in &sc.verifications {
            if abort.token.is_cancelled() {
                steps.push(skipped(
                    Phase::Verification,
                    &c.name,
                    &c.probe.describe(),
                    c.critical,
                    "drill aborted",
                    &tl,
                ));
                continue;
            }
            let rec = self
                .check_step(Phase::Verification, c, c.critical, &probe_ctx, &abort.token)
                .await;
            if rec.status != StepStatus::Passed && c.critical && !abort.token.is_cancelled() {
                abort.trip(
                    AbortReason::CriticalFailure,
                    format!("critical verification `{}` failed: {}", c.name, rec.detail),
                );
            }
            steps.push(rec);
        }

        // ── recovery: always ─────────────────────────────────────────────────────
        self.runtime.set_phase(Phase::Recovery);
        let recovery_start = Instant::now();
        let recovery_start_ms = tl.now_ms();
        tl.event(
            Phase::Recovery,
            "recovery_started",
            None,
            match abort.get() {
                Some((_, why)) => format!("recovering ({why})"),
                None => "recovering".to_string(),
            },
        );
        guard_stop.cancel();
        let mut guards = Vec::new();
        for t in guard_tasks {
            if let Ok(g) = t.await {
                guards.push(g);
            }
        }
        let revert_ok = self
            .revert_all(&mut steps, &fault_step_index, &control)
            .await;
        let mut recovery_steps_ok = true;
        for r in &sc.recovery {
            let rec = self.recovery_step(r, &control).await;
            recovery_steps_ok &= rec.status == StepStatus::Passed;
            steps.push(rec);
        }

        // ── steady state: prechecks hold again? ──────────────────────────────────
        self.runtime.set_phase(Phase::SteadyState);
        let injected_any = !fault_step_index.is_empty();
        let mut recovery_ms = None;
        let mut steady_ok = true;
        if injected_any && !sc.prechecks.is_empty() {
            let (ok, rec, ms) = self
                .steady_state(
                    &sc.prechecks,
                    &probe_ctx,
                    recovery_start,
                    recovery_start_ms,
                    &control,
                )
                .await;
            steady_ok = ok;
            recovery_ms = ms;
            steps.push(rec);
        }
        steps.extend(
            traffic
                .finish(&control.hurry)
                .await
                .into_iter()
                .map(StepRecord::from),
        );
        watcher.abort();
        {
            let mut l = self.ledger.lock().unwrap();
            let _ = l.append(&Entry::Finished { at: now_rfc3339() });
        }
        self.runtime.reap().await;

        // ── outcome: the loudest failure wins ────────────────────────────────────
        self.runtime.set_phase(Phase::Report);
        let rto_ms = sc.objectives.rto.map(|d| d.0.as_secs_f64() * 1000.0);
        let rto_met = match (rto_ms, recovery_ms) {
            (Some(r), Some(m)) => Some(m <= r),
            _ => None,
        };
        let critical_failed = steps.iter().any(|s| {
            s.critical
                && matches!(s.phase, Phase::Precheck | Phase::Verification)
                && s.status == StepStatus::Failed
        });
        let guard_breached = guards.iter().any(|g| g.breached);
        let aborted = abort.get();
        // The ledger, not the engine's memory, says whether everything was reverted.
        let revert_gaps = match ledger::scan(&self.ledger_path()) {
            Ok(scan) => revert_gaps(&scan),
            Err(e) => vec![format!("cannot read the ledger: {e}")],
        };
        let (status, reason) = decide(&Verdict {
            revert_ok,
            revert_gaps: &revert_gaps,
            injection_failed,
            aborted: aborted.as_ref(),
            critical_failed: critical_failed || guard_breached,
            steady_ok,
            rto_ms,
            recovery_ms,
            recovery_steps_ok,
        });
        tl.event_unprinted(
            Phase::Report,
            "run_finished",
            None,
            format!("{status:?}: {reason}"),
        );

        let mut record = RunRecord {
            journal_version: JOURNAL_VERSION,
            tool: ToolInfo {
                name: "firedrill".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            run_id: self.run_id.clone(),
            scenario: ScenarioInfo {
                name: sc.metadata.name.clone(),
                description: sc.metadata.description.clone(),
                owner: sc.metadata.owner.clone(),
                file: drill.file.display().to_string(),
                sha256: drill.sha256.clone(),
                labels: sc.metadata.labels.clone(),
            },
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            operator: operator(),
            level: self.opts.level,
            vars: drill.vars.redacted(),
            started_at,
            finished_at: now_rfc3339(),
            duration_ms: tl.now_ms(),
            outcome: Outcome {
                status,
                exit_code: status.exit_code(),
                reason,
                aborted: aborted.map(|a| a.0),
            },
            objectives: ObjectivesRecord {
                rto_ms,
                max_duration_ms: sc.objectives.max_duration.0.as_secs_f64() * 1000.0,
                recovery_ms,
                rto_met,
            },
            timeline: tl.events(),
            steps,
            guards,
            improvements: Vec::new(),
            ledger: self.ledger_path().display().to_string(),
        };
        crate::report::round_timings(&mut record);
        record.improvements = crate::report::improvements::derive(&record);
        crate::report::redact(&mut record, &drill.vars.secret_values());
        record
    }

    async fn check_step(
        &self,
        phase: Phase,
        c: &Check,
        critical: bool,
        ctx: &ProbeCtx<'_>,
        cancel: &CancellationToken,
    ) -> StepRecord {
        let tl = &self.timeline;
        let started_ms = tl.now_ms();
        tl.event(
            phase,
            "step_started",
            Some(&c.name),
            format!("{}: {}", c.name, c.probe.describe()),
        );
        let out = run_check(c, ctx, cancel).await;
        let status = if out.ok {
            StepStatus::Passed
        } else if out.interrupted {
            StepStatus::Skipped
        } else {
            StepStatus::Failed
        };
        let word = match status {
            StepStatus::Passed => "passed",
            StepStatus::Skipped => "interrupted",
            _ if critical => "FAILED",
            _ => "failed (non-critical)",
        };
        tl.event(
            phase,
            "step_finished",
            Some(&c.name),
            format!(
                "{}: {word} after {} attempt(s): {}",
                c.name, out.attempts, out.detail
            ),
        );
        StepRecord {
            phase,
            name: c.name.clone(),
            status,
            critical,
            started_ms,
            duration_ms: out.duration.as_secs_f64() * 1000.0,
            description: describe_check(c),
            attempts: out.attempts,
            first_held_ms: out.first_held.map(|d| d.as_secs_f64() * 1000.0),
            within_ms: c.within.map(|w| ms(w.0)),
            detail: out.detail,
            fault: None,
            metrics: out.last.map(|o| o.metrics).unwrap_or_default(),
        }
    }

    fn start_guards(
        &self,
        stop: &CancellationToken,
        abort: &Arc<Abort>,
    ) -> Vec<tokio::task::JoinHandle<GuardRecord>> {
        let drill = self.drill.clone();
        (0..drill.scenario.guards.len())
            .map(|i| {
                let drill = drill.clone();
                let stop = stop.clone();
                let abort = abort.clone();
                let tl = self.timeline.clone();
                let http = self.http.clone();
                tokio::spawn(async move {
                    let g = &drill.scenario.guards[i];
                    let ctx = ProbeCtx {
                        targets: &drill.targets,
                        http: &http,
                        vars: &drill.vars,
                    };
                    let mut rec = GuardRecord {
                        name: g.name.clone(),
                        description: g.probe.describe(),
                        polls: 0,
                        failures: 0,
                        breached: false,
                        breached_ms: None,
                        detail: String::new(),
                    };
                    let mut consecutive = 0;
                    tl.event(
                        Phase::Fault,
                        "guard_started",
                        Some(&g.name),
                        format!("guard `{}` watching {}", g.name, rec.description),
                    );
                    loop {
                        let obs = tokio::select! {
                            o = g.probe.observe(&ctx) => o,
                            _ = stop.cancelled() => break,
                        };
                        let v = g.expect.evaluate(&obs);
                        rec.polls += 1;
                        rec.detail = v.detail.clone();
                        if v.ok {
                            consecutive = 0;
                        } else {
                            rec.failures += 1;
                            consecutive += 1;
                            if consecutive >= g.breach_after {
                                rec.breached = true;
                                rec.breached_ms = Some(tl.now_ms());
                                tl.event(
                                    Phase::Fault,
                                    "guard_breached",
                                    Some(&g.name),
                                    format!("guard `{}` breached: {}", g.name, v.detail),
                                );
                                abort.trip(
                                    AbortReason::GuardBreached,
                                    format!("guard `{}` breached: {}", g.name, v.detail),
                                );
                                break;
                            }
                        }
                        if !sleep_or_cancel(g.interval.0, &stop).await {
                            break;
                        }
                    }
                    rec
                })
            })
            .collect()
    }

    /// Reverts every fault of this run that the ledger holds as not reverted, newest
    /// first. Returns false if any revert failed.
    async fn revert_all(
        &self,
        steps: &mut [StepRecord],
        index: &BTreeMap<u64, usize>,
        control: &Control,
    ) -> bool {
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
        let pending = ledger::pending(&scan.entries);
        for p in pending {
            let started_ms = self.timeline.now_ms();
            let t = Instant::now();
            let ctx = RevertCtx {
                runtime: Some(&self.runtime),
                hurry: control.hurry.is_cancelled(),
            };
            let result = p.undo.revert(&ctx).await;
            let rec = match result {
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
                    all_ok = false;
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
            };
            if let Some(fr) = index
                .get(&p.seq)
                .and_then(|i| steps.get_mut(*i))
                .and_then(|s| s.fault.as_mut())
            {
                fr.revert = Some(rec);
            }
        }
        all_ok
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
        let mut cmd = target.shell(&r.command.run);
        // Secrets travel in the environment, never on the command line (`ps`).
        cmd.envs(self.drill.vars.env_for(&r.command.run))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let _ = control; // recovery steps are not waits: a hurried recovery still runs them
        let tail = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .last()
                .unwrap_or("")
                .to_string()
        };
        let (status, detail) = match tokio::time::timeout(r.command.timeout.0, cmd.output()).await {
            Ok(Ok(out)) if out.status.success() => (
                StepStatus::Passed,
                format!("exit 0 {}", tail(&out.stdout)).trim().to_string(),
            ),
            Ok(Ok(out)) => (
                StepStatus::Failed,
                format!("exit {:?}: {}", out.status.code(), tail(&out.stderr)),
            ),
            Ok(Err(e)) => (StepStatus::Error, format!("cannot run: {e}")),
            Err(_) => (
                StepStatus::Failed,
                format!("timed out after {} (killed)", r.command.timeout),
            ),
        };
        tl.event(
            Phase::Recovery,
            "step_finished",
            Some(&r.name),
            format!("{}: {:?}: {detail}", r.name, status),
        );
        StepRecord {
            phase: Phase::Recovery,
            name: r.name.clone(),
            status,
            critical: true,
            started_ms,
            duration_ms: ms(t.elapsed()),
            description: format!("`{}` on {}", r.command.run, r.command.target),
            attempts: 1,
            first_held_ms: None,
            within_ms: None,
            detail,
            fault: None,
            metrics: BTreeMap::new(),
        }
    }

    /// Polls every precheck (once each, every 250 ms) until all hold: the recovery time.
    async fn steady_state(
        &self,
        checks: &[Check],
        ctx: &ProbeCtx<'_>,
        recovery_start: Instant,
        recovery_start_ms: f64,
        control: &Control,
    ) -> (bool, StepRecord, Option<f64>) {
        let tl = &self.timeline;
        let sc = &self.drill.scenario;
        let budget = sc.objectives.rto.map_or(Duration::from_secs(30), |r| {
            (r.0 * 2).max(Duration::from_secs(5))
        });
        let deadline = Instant::now() + budget;
        tl.event(
            Phase::SteadyState,
            "step_started",
            Some("steady state"),
            format!(
                "re-checking {} precheck(s) for up to {}",
                checks.len(),
                humantime::format_duration(budget)
            ),
        );
        let mut attempts = 0;
        let (ok, detail) = loop {
            attempts += 1;
            let mut failing = Vec::new();
            for c in checks {
                let obs = c.probe.observe(ctx).await;
                let v = c.expect.evaluate(&obs);
                if !v.ok {
                    failing.push(format!("{}: {}", c.name, v.detail));
                }
            }
            if failing.is_empty() {
                break (true, "all prechecks hold again".to_string());
            }
            if Instant::now() >= deadline || control.hurry.is_cancelled() {
                break (
                    false,
                    format!(
                        "still failing after {}: {}",
                        humantime::format_duration(budget),
                        failing.join("; ")
                    ),
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = control.hurry.cancelled() => {}
            }
        };
        let recovery_ms = ok.then(|| ms(recovery_start.elapsed()));
        let msg = match recovery_ms {
            Some(m) => format!("steady state: restored {m:.0} ms after recovery started"),
            None => format!("steady state: NOT restored: {detail}"),
        };
        tl.event(
            Phase::SteadyState,
            "step_finished",
            Some("steady state"),
            msg,
        );
        let rec = StepRecord {
            phase: Phase::SteadyState,
            name: "steady state".into(),
            status: if ok {
                StepStatus::Passed
            } else {
                StepStatus::Failed
            },
            critical: true,
            started_ms: recovery_start_ms,
            duration_ms: ms(recovery_start.elapsed()),
            description: "prechecks re-run until they all hold; measures the recovery time".into(),
            attempts,
            first_held_ms: recovery_ms,
            within_ms: None,
            detail,
            fault: None,
            metrics: BTreeMap::new(),
        };
        (ok, rec, recovery_ms)
    }
}

/// What the outcome of a run is decided from.
struct Verdict<'a> {
    /// Every revert attempted by this run succeeded.
    revert_ok: bool,
    /// What the ledger holds as injected and not reverted (or cannot read).
    revert_gaps: &'a [String],
    injection_failed: bool,
    aborted: Option<&'a (AbortReason, String)>,
    /// A critical precheck or verification failed, or a guard was breached.
    critical_failed: bool,
    steady_ok: bool,
    rto_ms: Option<f64>,
    recovery_ms: Option<f64>,
    recovery_steps_ok: bool,
}

/// The run's status and why: the loudest failure wins, and "something may be left
/// behind" is the loudest of all.
fn decide(v: &Verdict) -> (Status, String) {
    if !v.revert_ok {
        return (
            Status::RecoveryIncomplete,
            "a fault could not be reverted: something may be left behind; run `firedrill recover`"
                .to_string(),
        );
    }
    if !v.revert_gaps.is_empty() {
        return (
            Status::RecoveryIncomplete,
            format!(
                "the ledger holds faults with no revert recorded: {}; something may be left behind; run `firedrill recover`",
                v.revert_gaps.join("; ")
            ),
        );
    }
    if v.injection_failed {
        return (
            Status::InjectionFailed,
            v.aborted
                .map(|a| a.1.clone())
                .unwrap_or_else(|| "a fault could not be injected".into()),
        );
    }
    if let Some((AbortReason::Signal | AbortReason::MaxDuration, why)) = v.aborted {
        return (Status::Failed, format!("aborted: {why}"));
    }
    if v.critical_failed {
        return (
            Status::Failed,
            v.aborted
                .map(|a| a.1.clone())
                .unwrap_or_else(|| "a critical assertion failed".into()),
        );
    }
    if !v.steady_ok {
        return (
            Status::Failed,
            "steady state did not return after recovery".into(),
        );
    }
    if let (Some(rto), Some(took)) = (v.rto_ms, v.recovery_ms)
        && took > rto
    {
        return (
            Status::Failed,
            format!("recovery took {took:.0} ms, above the RTO of {rto:.0} ms"),
        );
    }
    if !v.recovery_steps_ok {
        return (Status::Failed, "a recovery step failed".into());
    }
    (
        Status::Passed,
        "every critical assertion held and every fault was reverted".into(),
    )
}

/// Every inject record of a ledger without a recorded revert, and every line that
/// cannot be read (it may be one). Empty when the ledger proves all was reverted.
fn revert_gaps(scan: &ledger::Scan) -> Vec<String> {
    let mut gaps: Vec<String> = ledger::pending(&scan.entries)
        .iter()
        .rev()
        .map(|p| format!("`{}` (record {})", p.step, p.seq))
        .collect();
    gaps.extend(scan.unreadable.iter().map(|e| e.to_string()));
    gaps
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn describe_check(c: &Check) -> String {
    let timing = match (c.within, c.hold_for) {
        (Some(w), _) => format!(" within {w}"),
        (_, Some(f)) => format!(" for {f}"),
        _ if c.retries > 0 => format!(" ({} retries)", c.retries),
        _ => String::new(),
    };
    format!("{}{timing}", c.probe.describe())
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
        phase,
        name: name.into(),
        status: StepStatus::Skipped,
        critical,
        started_ms: tl.now_ms(),
        duration_ms: 0.0,
        description: desc.into(),
        attempts: 0,
        first_held_ms: None,
        within_ms: None,
        detail: why.into(),
        fault: None,
        metrics: BTreeMap::new(),
    }
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
    use super::*;
    use crate::fault::Undo;
    use crate::fault::process_kill::{ProcRef, Signal, Undo as PkUndo};
    use crate::target::Target;

    fn stop(pid: u32) -> Undo {
        Undo::ProcessKill(PkUndo {
            signal: Signal::Stop,
            processes: vec![ProcRef {
                pid,
                start_time: 1,
                comm: "x".into(),
            }],
            deadman_tag: None,
            target: Target::Local,
            source: None,
            cgroup: None,
        })
    }

    fn passing(gaps: &[String]) -> Verdict<'_> {
        Verdict {
            revert_ok: true,
            revert_gaps: gaps,
            injection_failed: false,
            aborted: None,
            critical_failed: false,
            steady_ok: true,
            rto_ms: None,
            recovery_ms: None,
            recovery_steps_ok: true,
        }
    }

    fn gaps_of(l: &Ledger) -> Vec<String> {
        revert_gaps(&ledger::scan(l.path()).unwrap())
    }

    #[test]
    fn a_run_whose_ledger_proves_every_revert_passes() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(dir.path(), "r1").unwrap();
        let a = l.record_inject("a", &Target::Local, &stop(1)).unwrap();
        l.append(&Entry::Reverted {
            seq: a,
            at: now_rfc3339(),
        })
        .unwrap();
        let gaps = gaps_of(&l);
        assert!(gaps.is_empty(), "{gaps:?}");
        let (status, _) = decide(&passing(&gaps));
        assert_eq!(status, Status::Passed);
        assert_eq!(status.exit_code(), 0);
    }

    #[test]
    fn an_inject_without_a_recorded_revert_is_recovery_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(dir.path(), "r1").unwrap();
        let a = l.record_inject("a", &Target::Local, &stop(1)).unwrap();
        l.record_inject("freeze db", &Target::Local, &stop(2))
            .unwrap();
        l.append(&Entry::Reverted {
            seq: a,
            at: now_rfc3339(),
        })
        .unwrap();
        let gaps = gaps_of(&l);
        assert_eq!(gaps, ["`freeze db` (record 2)"]);
        // Even when every revert the engine attempted succeeded and all else held.
        let (status, reason) = decide(&passing(&gaps));
        assert_eq!(status, Status::RecoveryIncomplete);
        assert_eq!(status.exit_code(), 4);
        assert!(reason.contains("`freeze db` (record 2)"), "{reason}");
        // And it wins over every other failure.
        let aborted = (AbortReason::InjectionFailed, "x".to_string());
        let v = Verdict {
            injection_failed: true,
            critical_failed: true,
            steady_ok: false,
            aborted: Some(&aborted),
            ..passing(&gaps)
        };
        assert_eq!(decide(&v).0, Status::RecoveryIncomplete);
    }

    #[test]
    fn an_unreadable_ledger_line_is_recovery_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::create(dir.path(), "r1").unwrap();
        std::fs::write(l.path(), "{\"op\":\"inject\",\"seq\":1\n").unwrap();
        let gaps = gaps_of(&l);
        assert_eq!(gaps.len(), 1);
        assert!(
            gaps[0].contains(":1 (byte 0): unreadable record"),
            "{gaps:?}"
        );
        assert_eq!(decide(&passing(&gaps)).0, Status::RecoveryIncomplete);
    }
}
