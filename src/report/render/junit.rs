//! The JUnit mapping: one `<testsuite>` per phase, one `<testcase>` per assertion.
//!
//! Prechecks, verifications, recovery steps and the steady-state re-check are one case
//! each; every guard is one case; every fault is two ("fault effective", "fault
//! reverted"). Only critical failures become `<failure>`/`<error>`: a non-critical
//! failure is a passing case with `critical=false` and a `NON-CRITICAL FAILURE` line
//! in `<system-out>`, so it never turns CI red by itself (the exit code is the
//! authority; see docs/reports.md). Where the CI's test view should show it as a
//! failure (a publisher that never fails the job by itself: GitLab's JUnit report,
//! a GitHub reporter with `fail-on-error: false`), `--junit-non-critical failure`
//! writes it as a `<failure>` whose message starts `NON-CRITICAL:`.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::model::*;
use crate::report::words::human_ms;
use crate::report::words::step_label;

/// Set once by the command line (`--junit-non-critical failure`), before any report
/// is rendered: a rendering choice for the whole process, like its log format.
static NON_CRITICAL_AS_FAILURE: AtomicBool = AtomicBool::new(false);

/// How non-critical failures are written: a `<failure>` (true) or a passing case with
/// a `NON-CRITICAL FAILURE` line in its output (false, the default).
pub fn set_non_critical_as_failure(on: bool) {
    NON_CRITICAL_AS_FAILURE.store(on, Ordering::Relaxed);
}

#[derive(Serialize, Default)]
pub(crate) struct Junit {
    pub tests: usize,
    pub failures: usize,
    pub errors: usize,
    pub skipped: usize,
    pub suites: Vec<Suite>,
}

#[derive(Serialize, Default)]
pub(crate) struct Suite {
    pub name: String,
    pub tests: usize,
    pub failures: usize,
    pub errors: usize,
    pub skipped: usize,
    pub time_ms: f64,
    pub cases: Vec<Case>,
}

#[derive(Serialize)]
pub(crate) struct Case {
    pub name: String,
    pub classname: String,
    pub time_ms: f64,
    pub critical: bool,
    /// `passed`, `failure`, `error` or `skipped`.
    pub result: &'static str,
    pub failure: bool,
    pub error: bool,
    pub skipped: bool,
    /// Short message for `<failure message>`/`<skipped message>`.
    pub message: String,
    /// Body of `<failure>`/`<error>`.
    pub text: String,
    pub system_out: String,
}

impl Case {
    fn new(classname: &str, name: String, time_ms: f64, critical: bool) -> Self {
        Case {
            name,
            classname: classname.to_string(),
            time_ms,
            critical,
            result: "passed",
            failure: false,
            error: false,
            skipped: false,
            message: String::new(),
            text: String::new(),
            system_out: String::new(),
        }
    }
    fn fail(mut self, message: String, text: String) -> Self {
        if self.critical {
            self.result = "failure";
            self.failure = true;
            self.message = message;
            self.text = text;
        } else if NON_CRITICAL_AS_FAILURE.load(Ordering::Relaxed) {
            self.result = "failure";
            self.failure = true;
            self.message = format!("NON-CRITICAL: {message}");
            self.text = text;
        } else {
            self.system_out = format!("NON-CRITICAL FAILURE: {message}\n{text}");
        }
        self
    }
    fn error(mut self, message: String, text: String) -> Self {
        if self.critical {
            self.result = "error";
            self.error = true;
            self.message = message;
            self.text = text;
        } else {
            self.system_out = format!("NON-CRITICAL ERROR: {message}\n{text}");
        }
        self
    }
    fn skip(mut self, message: String) -> Self {
        self.result = "skipped";
        self.skipped = true;
        self.message = message;
        self
    }
    fn out(mut self, line: String) -> Self {
        if self.system_out.is_empty() {
            self.system_out = line;
        }
        self
    }
}

fn step_case(classname: &str, s: &StepRecord) -> Case {
    let c = Case::new(classname, s.name.clone(), s.duration_ms, s.critical);
    // Short message (first line of the detail); the body has everything.
    let message = format!(
        "{}: {}",
        step_label(s),
        s.detail.lines().next().unwrap_or_default()
    );
    let text = format!(
        "{}\n{} attempt(s) in {}\n{}",
        s.description,
        s.attempts,
        human_ms(s.duration_ms),
        s.detail
    );
    match s.status {
        StepStatus::Passed => c.out(format!("passed: {}", s.detail)),
        StepStatus::Failed => c.fail(message, text),
        StepStatus::Error => c.error(message, text),
        StepStatus::Skipped => c.skip(s.detail.clone()),
    }
}

fn fault_cases(classname: &str, s: &StepRecord, f: &FaultRecord) -> [Case; 2] {
    let effective = {
        let time = f
            .effect
            .as_ref()
            .and_then(|e| e.effective_after_ms)
            .unwrap_or(s.duration_ms);
        let c = Case::new(
            classname,
            format!("{}: fault effective", s.name),
            time,
            true,
        );
        match (&f.effect, s.status) {
            (_, StepStatus::Skipped) => c.skip(s.detail.clone()),
            (Some(e), _) if e.as_declared => c.out(format!(
                "declared: {}\nmeasured: {}",
                e.declared, e.measured
            )),
            (Some(e), _) => c.fail(
                "measured effect differs from declared".into(),
                format!("declared: {}\nmeasured: {}", e.declared, e.measured),
            ),
            // A record written by `recover` for a killed run: injected (the ledger
            // says so) but its effect never measured.
            (None, StepStatus::Passed) if f.ledger_seq.is_some() => {
                c.skip(format!("effect not measured: {}", s.detail))
            }
            (None, _) => c.error(
                "fault could not be injected".into(),
                format!("{}\n{}", s.description, s.detail),
            ),
        }
    };
    let reverted = {
        let r = f.revert.as_ref();
        let c = Case::new(
            classname,
            format!("{}: fault reverted", s.name),
            r.map_or(0.0, |r| r.duration_ms),
            true,
        );
        let injected = f.ledger_seq.is_some() || f.effect.is_some();
        match r {
            Some(r) if r.ok => c.out(
                r.result
                    .as_ref()
                    .map_or_else(String::new, |x| format!("reverted: {}", x.measured)),
            ),
            Some(r) => c.fail(
                "revert failed: something may be left behind".into(),
                r.error.clone().unwrap_or_default(),
            ),
            None if injected => c.fail(
                "no revert recorded: something may be left behind".into(),
                format!("ledger sequence {:?}", f.ledger_seq),
            ),
            None => c.skip("not injected".into()),
        }
    };
    [effective, reverted]
}

fn guard_case(classname: &str, g: &GuardRecord) -> Case {
    let c = Case::new(classname, g.name.clone(), 0.0, true);
    let text = format!(
        "{}\n{} poll(s), {} failed; {}",
        g.description, g.polls, g.failures, g.detail
    );
    if g.breached {
        c.fail(format!("guard breached: {}", g.detail), text)
    } else if g.polls == 0 {
        c.skip("guard never polled (no fault was active)".into())
    } else {
        c.out(text)
    }
}

pub(crate) fn build(run: &RunRecord) -> Junit {
    let class = |phase: &str| format!("firedrill.{}.{phase}", run.scenario.name);
    let mut suites: Vec<Suite> = Vec::new();
    let mut push = |name: &str, cases: Vec<Case>| {
        if cases.is_empty() {
            return;
        }
        let mut s = Suite {
            name: format!("{} / {name}", run.scenario.name),
            ..Suite::default()
        };
        for c in &cases {
            s.tests += 1;
            s.failures += c.failure as usize;
            s.errors += c.error as usize;
            s.skipped += c.skipped as usize;
            s.time_ms += c.time_ms;
        }
        s.cases = cases;
        suites.push(s);
    };
    let steps_of = |p: Phase| -> Vec<Case> {
        run.steps
            .iter()
            .filter(|s| s.phase == p && s.fault.is_none())
            .map(|s| step_case(&class(p.as_str()), s))
            .collect()
    };
    push("prechecks", steps_of(Phase::Precheck));
    push(
        "faults",
        run.steps
            .iter()
            .filter_map(|s| s.fault.as_ref().map(|f| (s, f)))
            .flat_map(|(s, f)| fault_cases(&class("fault"), s, f))
            .collect(),
    );
    push("verifications", steps_of(Phase::Verification));
    push(
        "guards",
        run.guards
            .iter()
            .map(|g| guard_case(&class("guard"), g))
            .collect(),
    );
    push("recovery", steps_of(Phase::Recovery));
    push("steady state", steps_of(Phase::SteadyState));
    push("after recovery", steps_of(Phase::AfterRecovery));
    if run.outcome.status == Status::Interrupted {
        // Every step may look fine: the run itself never finished, so CI must not
        // read this as a pass.
        push(
            "run",
            vec![
                Case::new(&class("run"), "run finished".into(), run.duration_ms, true)
                    .error("run interrupted".into(), run.outcome.reason.clone()),
            ],
        );
    }
    let mut j = Junit::default();
    for s in &suites {
        j.tests += s.tests;
        j.failures += s.failures;
        j.errors += s.errors;
        j.skipped += s.skipped;
    }
    j.suites = suites;
    j
}
