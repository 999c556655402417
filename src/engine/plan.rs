//! `firedrill plan` (= `run --dry-run`): the ordered, fully resolved steps, with no
//! side effects at all, and no secret in clear.

use serde::Serialize;

use crate::scenario::{Drill, Level};

/// One planned step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlannedStep {
    pub phase: &'static str,
    pub name: String,
    /// Whether the step will run at this level.
    pub runs: bool,
    pub description: String,
}

/// The plan of a drill at a level ceiling.
pub fn plan(drill: &Drill, level: Level) -> Vec<PlannedStep> {
    let sc = &drill.scenario;
    let mut out = Vec::new();
    let timing = |c: &crate::scenario::Check| match (c.within, c.hold_for) {
        (Some(w), _) => format!(" within {w}"),
        (_, Some(f)) => format!(" for {f}"),
        _ => String::new(),
    };
    for c in &sc.prechecks {
        out.push(PlannedStep {
            phase: "precheck",
            name: c.name.clone(),
            runs: true,
            description: format!("{}{}", c.probe.describe(), timing(c)),
        });
    }
    for g in &sc.guards {
        out.push(PlannedStep {
            phase: "guard",
            name: g.name.clone(),
            runs: true,
            description: format!(
                "while faults are active, every {}: {}",
                g.interval,
                g.probe.describe()
            ),
        });
    }
    // The load starts once the prechecks passed, and its baseline delays the faults.
    for t in &sc.traffic {
        out.push(PlannedStep {
            phase: "traffic",
            name: t.name.clone(),
            runs: true,
            description: format!(
                "{} from after the prechecks to after the steady state ({} before the first fault, {} after recovery){}",
                t.probe.describe(),
                t.before,
                t.after,
                if t.critical { "" } else { " (non-critical)" }
            ),
        });
    }
    for t in &sc.delivery {
        out.push(PlannedStep {
            phase: "delivery",
            name: t.name.clone(),
            runs: true,
            description: format!(
                "{} from after the prechecks to after the steady state ({} before the first fault, {} after recovery, then up to {} for stragglers){}",
                t.describe(),
                t.before,
                t.after,
                t.settle,
                if t.critical { "" } else { " (non-critical)" }
            ),
        });
    }
    for f in &drill.faults {
        let runs = f.step.level <= level;
        let ttl = f.step.ttl.unwrap_or(sc.objectives.max_duration);
        let mut d = format!(
            "[{} on {}, level {}, ttl {ttl}] {}",
            f.spec.kind(),
            f.target.describe(),
            f.step.level,
            f.spec.describe()
        );
        if let Some(r) = f.step.ramp_up {
            d.push_str(&format!("; then settle {r}"));
        }
        if !runs {
            d.push_str(&format!(" (skipped: above --level {level})"));
        }
        out.push(PlannedStep {
            phase: "fault",
            name: f.step.name.clone(),
            runs,
            description: d,
        });
    }
    for c in &sc.verifications {
        let crit = if c.critical {
            "critical"
        } else {
            "non-critical"
        };
        out.push(PlannedStep {
            phase: "verification",
            name: c.name.clone(),
            runs: true,
            description: format!(
                "({crit}{}) {}{}",
                if c.background {
                    ", background: from the first fault until recovery"
                } else {
                    ""
                },
                c.probe.describe(),
                timing(c)
            ),
        });
    }
    out.push(PlannedStep {
        phase: "recovery",
        name: "revert faults".into(),
        runs: true,
        description: "revert every injected fault, newest first".into(),
    });
    for r in &sc.recovery {
        out.push(PlannedStep {
            phase: "recovery",
            name: r.name.clone(),
            runs: true,
            description: format!("`{}` on {}", r.command.run, r.command.target),
        });
    }
    let steady = sc.steady_checks();
    if !steady.is_empty() {
        let rto = sc
            .objectives
            .rto
            .map_or("no RTO set".to_string(), |r| format!("RTO {r}"));
        let what = if sc.steady_state.is_empty() {
            "the prechecks"
        } else {
            "the steady-state checks"
        };
        let every = humantime::format_duration(
            steady
                .iter()
                .map(|c| c.interval.0)
                .min()
                .unwrap_or_default(),
        );
        out.push(PlannedStep {
            phase: "steady_state",
            name: "steady state".into(),
            runs: true,
            description: format!("re-run {what} every {every} until they hold ({rto})"),
        });
    }
    for c in &sc.after_recovery {
        let crit = if c.critical {
            "critical"
        } else {
            "non-critical"
        };
        out.push(PlannedStep {
            phase: "after_recovery",
            name: c.name.clone(),
            runs: true,
            description: format!("({crit}) {}{}", c.probe.describe(), timing(c)),
        });
    }
    // Secrets written into URLs, headers or names are shown masked; shell commands
    // already carry references to them, not values.
    let redactor = crate::secrets::Redactor::new(drill.vars.secret_values());
    for s in &mut out {
        s.name = redactor.redact(&s.name).into_owned();
        s.description = redactor.redact(&s.description).into_owned();
    }
    out
}
