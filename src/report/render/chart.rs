//! Layout of the HTML report's SVG timeline: phase bands, one row per step, fault
//! active windows and markers, all in milliseconds since run start. The `tx`/`tw`
//! template helpers turn those times into x coordinates with [`Scale`]; rows get their
//! y here, so templates hold no arithmetic.

use serde::Serialize;

use crate::model::*;
use crate::report::improvements::active_window;
use crate::report::words::step_label;

/// Chart geometry, in SVG user units.
pub(crate) const WIDTH: f64 = 960.0;
const PLOT_LEFT: f64 = 230.0;
const PLOT_RIGHT: f64 = 945.0;
const TOP: f64 = 26.0;
const ROW_H: f64 = 20.0;
const LABEL_CHARS: usize = 34;

#[derive(Serialize)]
pub(crate) struct Chart {
    pub width: f64,
    pub height: f64,
    pub plot_left: f64,
    pub plot_right: f64,
    /// y of the top and bottom of the plot area.
    pub top: f64,
    pub bottom: f64,
    /// y of the tick labels.
    pub tick_label_y: f64,
    pub span_ms: f64,
    pub ticks: Vec<Tick>,
    pub bands: Vec<Band>,
    pub rows: Vec<Row>,
    pub markers: Vec<Marker>,
}

#[derive(Serialize)]
pub(crate) struct Tick {
    pub ms: f64,
    pub label: String,
}

#[derive(Serialize)]
pub(crate) struct Band {
    pub phase: Phase,
    pub from_ms: f64,
    pub to_ms: f64,
    /// Whether the band is wide enough for its name.
    pub labelled: bool,
}

#[derive(Serialize)]
pub(crate) struct Row {
    /// Top of the row and the baseline of its label.
    pub y: f64,
    pub bar_y: f64,
    pub text_y: f64,
    pub label: String,
    pub from_ms: f64,
    pub to_ms: f64,
    pub status: StepStatus,
    pub critical: bool,
    pub title: String,
    /// For faults: when the fault was in effect.
    pub window: Option<Window>,
}

#[derive(Serialize)]
pub(crate) struct Window {
    pub from_ms: f64,
    pub to_ms: f64,
    pub title: String,
}

#[derive(Serialize)]
pub(crate) struct Marker {
    pub ms: f64,
    /// Centre of the marker.
    pub y: f64,
    /// `breach` (vertical line over the whole plot) or `failure` (on a step's row).
    pub kind: &'static str,
    /// A failure of a non-critical step is drawn as a warning.
    pub critical: bool,
    pub title: String,
}

/// Maps milliseconds to x coordinates.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scale {
    left: f64,
    right: f64,
    span_ms: f64,
}

impl Scale {
    pub fn of(chart: &Chart) -> Self {
        Scale {
            left: chart.plot_left,
            right: chart.plot_right,
            span_ms: chart.span_ms,
        }
    }
    pub fn x(&self, ms: f64) -> f64 {
        let ms = ms.clamp(0.0, self.span_ms);
        self.left + ms / self.span_ms * (self.right - self.left)
    }
    /// Width of an interval; at least 1.5 so that instant steps stay visible.
    pub fn w(&self, from_ms: f64, to_ms: f64) -> f64 {
        (self.x(to_ms) - self.x(from_ms)).max(1.5)
    }
}

pub(crate) fn layout(run: &RunRecord) -> Chart {
    let shown: Vec<&StepRecord> = run
        .steps
        .iter()
        .filter(|s| s.status != StepStatus::Skipped)
        .collect();
    let mut span_ms = run.duration_ms;
    for s in &shown {
        span_ms = span_ms.max(s.started_ms + s.duration_ms);
        if let Some((_, to)) = active_window(run, s) {
            span_ms = span_ms.max(to);
        }
    }
    for e in &run.timeline {
        span_ms = span_ms.max(e.t_ms);
    }
    let span_ms = span_ms.max(1.0);

    let mut rows = Vec::new();
    let mut markers = Vec::new();
    for (i, s) in shown.iter().enumerate() {
        let y = TOP + i as f64 * ROW_H;
        let to_ms = s.started_ms + s.duration_ms;
        let window = active_window(run, s).map(|(from_ms, to_ms)| Window {
            from_ms,
            to_ms,
            title: format!(
                "{}: in effect from {} to {}",
                s.name,
                secs(from_ms),
                secs(to_ms)
            ),
        });
        if matches!(s.status, StepStatus::Failed | StepStatus::Error) {
            markers.push(Marker {
                ms: to_ms,
                y: y + ROW_H / 2.0,
                kind: "failure",
                critical: s.critical,
                title: format!("{} {}: {}", s.name, step_label(s), s.detail),
            });
        }
        if let Some(r) = s.fault.as_ref().and_then(|f| f.revert.as_ref())
            && !r.ok
        {
            markers.push(Marker {
                ms: r.started_ms + r.duration_ms,
                y: y + ROW_H / 2.0,
                kind: "failure",
                critical: true,
                title: format!(
                    "{}: REVERT FAILED: {}",
                    s.name,
                    r.error.as_deref().unwrap_or("")
                ),
            });
        }
        rows.push(Row {
            y,
            bar_y: y + 4.0,
            text_y: y + 14.0,
            label: truncate(&s.name, LABEL_CHARS),
            from_ms: s.started_ms,
            to_ms,
            status: s.status,
            critical: s.critical,
            title: format!(
                "{} ({}): {} at {} for {}",
                s.name,
                s.phase.as_str(),
                step_label(s),
                secs(s.started_ms),
                secs(s.duration_ms)
            ),
            window,
        });
    }
    let bottom = TOP + rows.len().max(1) as f64 * ROW_H;
    for g in &run.guards {
        if let (true, Some(t)) = (g.breached, g.breached_ms) {
            markers.push(Marker {
                ms: t,
                y: TOP - 6.0,
                kind: "breach",
                critical: true,
                title: format!("guard {} breached at {}: {}", g.name, secs(t), g.detail),
            });
        }
    }
    Chart {
        width: WIDTH,
        height: bottom + 30.0,
        plot_left: PLOT_LEFT,
        plot_right: PLOT_RIGHT,
        top: TOP,
        bottom,
        tick_label_y: bottom + 16.0,
        span_ms,
        ticks: ticks(span_ms),
        bands: bands(run, span_ms),
        rows,
        markers,
    }
}

/// Phase bands from the timeline: a phase starts at its first event and lasts until
/// the next phase starts. (Guard events are tagged `fault` but happen later; they are
/// never a phase's first event because guards start with the first fault.) The
/// after-recovery assertions run alongside the steady-state re-check: no band of
/// their own, which would squash the steady state's.
fn bands(run: &RunRecord, span_ms: f64) -> Vec<Band> {
    let mut starts: Vec<(Phase, f64)> = Vec::new();
    for e in &run.timeline {
        if matches!(e.phase, Phase::Setup | Phase::Report | Phase::AfterRecovery) {
            continue;
        }
        if !starts.iter().any(|(p, _)| *p == e.phase) {
            starts.push((e.phase, e.t_ms));
        }
    }
    starts.sort_by_key(|(p, _)| *p);
    let end = run
        .timeline
        .iter()
        .filter(|e| e.phase == Phase::Report)
        .map(|e| e.t_ms)
        .next()
        .unwrap_or(span_ms);
    (0..starts.len())
        .map(|i| {
            let (phase, from_ms) = starts[i];
            let to_ms = starts.get(i + 1).map_or(end, |n| n.1).max(from_ms);
            let px = (to_ms - from_ms) / span_ms * (PLOT_RIGHT - PLOT_LEFT);
            Band {
                phase,
                from_ms,
                to_ms,
                labelled: px >= 7.0 * phase.as_str().len() as f64 + 6.0,
            }
        })
        .collect()
}

/// About 5 to 10 ticks at a round number of seconds.
fn ticks(span_ms: f64) -> Vec<Tick> {
    const STEPS: [f64; 16] = [
        100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3,
        1800e3, 3600e3,
    ];
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span_ms / s <= 10.0)
        .unwrap_or(span_ms / 10.0);
    let n = (span_ms / step).floor() as usize;
    (0..=n)
        .map(|k| {
            let ms = k as f64 * step;
            Tick {
                ms,
                label: if step < 1000.0 {
                    format!("{:.1} s", ms / 1000.0)
                } else {
                    format!("{:.0} s", ms / 1000.0)
                },
            }
        })
        .collect()
}

fn secs(ms: f64) -> String {
    format!("{:.1} s", ms / 1000.0)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}
