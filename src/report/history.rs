//! History across runs: `reports/index.html` and `reports/index.md`, rebuilt after each
//! run from the journals under the reports root, and `firedrill history` on the terminal.
//!
//! Per scenario, one row per run: verdict, measured RTO against the objective,
//! downtime, success rate under the faults, data loss and duplicates (where a probe
//! measured them: older journals have no such figure and show `—`), open findings;
//! and inline SVG trends of the RTO and the downtime. Everything comes from the
//! journals alone, so the index can be rebuilt at any time (`firedrill history --write`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::ReportError;
use super::render::{escape_markup, escape_md};
use super::words::human_ms;
use crate::model::{RunRecord, Status};
use crate::scenario::FindingStatus;

/// One run as the history shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryRun {
    /// The run's directory, relative to the reports root.
    pub dir: String,
    pub run_id: String,
    pub scenario: String,
    pub started_at: String,
    pub status: Status,
    pub rto_ms: Option<f64>,
    pub rto_measured_ms: Option<f64>,
    pub rto_met: Option<bool>,
    pub downtime_ms: Option<f64>,
    /// Lowest success rate of any traffic load while the faults were active (or over
    /// the whole load when it has no per-phase figure), 0..1.
    pub success_rate: Option<f64>,
    /// Share of messages lost, 0..1, where a probe measured it.
    pub loss_rate: Option<f64>,
    /// Share of messages delivered more than once, 0..1, where measured.
    pub duplicate_rate: Option<f64>,
    /// Findings still open or in progress.
    pub open_findings: usize,
}

/// Every run found under a reports root, and what could not be read.
#[derive(Debug, Default)]
pub struct History {
    /// Per scenario name, runs oldest first.
    pub scenarios: BTreeMap<String, Vec<HistoryRun>>,
    /// `dir/journal.json: why` for journals that did not parse.
    pub unreadable: Vec<String>,
}

/// A figure named `key` anywhere a journal may carry it: `objectives.<key>`, or a
/// step metric `<key>` / `<phase>.<key>` (the largest, when several steps have one).
fn measured(v: &Value, key: &str) -> Option<f64> {
    let direct = v
        .pointer(&format!("/objectives/{key}"))
        .and_then(Value::as_f64);
    let metrics = v
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("metrics").and_then(Value::as_object))
        .flat_map(|m| m.iter())
        .filter(|(k, _)| *k == key || k.ends_with(&format!(".{key}")))
        .filter_map(|(_, x)| x.as_f64());
    direct.into_iter().chain(metrics).reduce(f64::max)
}

fn from_journal(dir: String, v: &Value, r: &RunRecord) -> HistoryRun {
    let success_rate = r
        .steps
        .iter()
        .filter_map(|s| {
            s.metrics
                .get("during.success_rate")
                .or_else(|| s.metrics.get("all.success_rate"))
                .copied()
        })
        .reduce(f64::min);
    let o = &r.objectives;
    HistoryRun {
        dir,
        run_id: r.run_id.clone(),
        scenario: r.scenario.name.clone(),
        started_at: r.started_at.clone(),
        status: r.outcome.status,
        rto_ms: o.rto_ms,
        rto_measured_ms: o.rto_measured_ms,
        rto_met: o.rto_met,
        downtime_ms: o.downtime_ms,
        success_rate,
        loss_rate: measured(v, "loss_rate"),
        duplicate_rate: measured(v, "duplicate_rate"),
        open_findings: r
            .improvements
            .iter()
            .filter(|i| matches!(i.status, FindingStatus::Open | FindingStatus::InProgress))
            .count(),
    }
}

/// Reads `root/*/journal.json`.
pub fn collect(root: &Path) -> Result<History, ReportError> {
    let mut h = History::default();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(h),
        Err(source) => {
            return Err(ReportError::Io {
                path: root.display().to_string(),
                source,
            });
        }
    };
    for e in entries.flatten() {
        let journal = e.path().join("journal.json");
        let Ok(text) = std::fs::read_to_string(&journal) else {
            continue;
        };
        let dir = e.file_name().to_string_lossy().into_owned();
        let parsed = serde_json::from_str::<Value>(&text).and_then(|v| {
            let r = serde_json::from_value::<RunRecord>(v.clone())?;
            Ok((v, r))
        });
        match parsed {
            Ok((v, r)) => {
                let run = from_journal(dir, &v, &r);
                h.scenarios
                    .entry(run.scenario.clone())
                    .or_default()
                    .push(run);
            }
            Err(err) => h.unreadable.push(format!("{dir}/journal.json: {err}")),
        }
    }
    for runs in h.scenarios.values_mut() {
        runs.sort_by(|a, b| (&a.started_at, &a.run_id).cmp(&(&b.started_at, &b.run_id)));
    }
    h.unreadable.sort();
    Ok(h)
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("—".into(), human_ms)
}

fn rate(v: Option<f64>) -> String {
    v.map_or("—".into(), |x| format!("{:.2}%", 100.0 * x))
}

impl HistoryRun {
    /// `8.1 s / 1 min (met)`, `— / 5.0 s (not measured)`, `2.0 s (no objective)`.
    pub fn rto_words(&self) -> String {
        let verdict = match (self.rto_ms, self.rto_measured_ms, self.rto_met) {
            (None, _, _) => "no objective",
            (Some(_), _, Some(true)) => "met",
            (Some(_), _, Some(false)) => "EXCEEDED",
            (Some(_), _, None) => "not measured",
        };
        match self.rto_ms {
            Some(o) => format!(
                "{} / {} ({verdict})",
                opt_ms(self.rto_measured_ms),
                human_ms(o)
            ),
            None => format!("{} ({verdict})", opt_ms(self.rto_measured_ms)),
        }
    }

    /// `0.10% / 0.00%`, or `—` when neither was measured.
    pub fn loss_words(&self) -> String {
        match (self.loss_rate, self.duplicate_rate) {
            (None, None) => "—".into(),
            (l, d) => format!("{} / {}", rate(l), rate(d)),
        }
    }
}

/// The terminal table of `firedrill history`.
pub fn text(h: &History) -> String {
    let mut out = String::new();
    if h.scenarios.is_empty() {
        out.push_str("no runs found\n");
    }
    for (name, runs) in &h.scenarios {
        out.push_str(&format!("{name} ({} run(s))\n", runs.len()));
        out.push_str(&format!(
            "  {:<24} {:<19} {:<28} {:<10} {:<9} {:<15} {}\n",
            "started",
            "verdict",
            "RTO measured / objective",
            "downtime",
            "success",
            "loss / dup",
            "open findings"
        ));
        for r in runs.iter().rev() {
            out.push_str(&format!(
                "  {:<24} {:<19} {:<28} {:<10} {:<9} {:<15} {}\n",
                r.started_at,
                r.status.label(),
                r.rto_words(),
                opt_ms(r.downtime_ms),
                rate(r.success_rate),
                r.loss_words(),
                r.open_findings
            ));
        }
    }
    for u in &h.unreadable {
        out.push_str(&format!("unreadable: {u}\n"));
    }
    crate::secrets::redact(&out).into_owned()
}

/// A path segment for a link: anything but unreserved characters percent-encoded.
fn href(dir: &str, file: &str) -> String {
    let enc: String = dir
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{enc}/{file}")
}

/// `index.md`.
pub fn markdown(h: &History) -> String {
    let mut out = String::from("# firedrill: drill history\n\n");
    out.push_str(
        "Every run under this reports directory, newest first. RTO: measured from the \
         disruption until the service indicators were restored, against the objective. \
         Success: the lowest success rate of any traffic load while faults were active. \
         Loss / dup: messages lost / delivered twice, where a probe measured them.\n",
    );
    for (name, runs) in &h.scenarios {
        out.push_str(&format!("\n## {}\n\n", escape_md(name)));
        out.push_str(
            "| Run | Started | Verdict | RTO measured / objective | Downtime | Success | Loss / dup | Open findings |\n|---|---|---|---|---|---|---|---|\n",
        );
        for r in runs.iter().rev() {
            out.push_str(&format!(
                "| [{}]({}) | {} | {} | {} | {} | {} | {} | {} |\n",
                escape_md(&r.run_id),
                href(&r.dir, "report.md"),
                escape_md(&r.started_at),
                r.status.label(),
                r.rto_words(),
                opt_ms(r.downtime_ms),
                rate(r.success_rate),
                r.loss_words(),
                r.open_findings
            ));
        }
    }
    if !h.unreadable.is_empty() {
        out.push_str("\n## Unreadable journals\n\n");
        for u in &h.unreadable {
            out.push_str(&format!("- {}\n", escape_md(u)));
        }
    }
    crate::secrets::redact(&out).into_owned()
}

const W: f64 = 640.0;
const H: f64 = 160.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// The trend of one scenario: measured RTO (line and points coloured by verdict),
/// downtime (dashed line) and the RTO objective (a horizontal rule), oldest run left.
fn trend_svg(name: &str, runs: &[HistoryRun]) -> String {
    let ys: Vec<f64> = runs
        .iter()
        .flat_map(|r| [r.rto_measured_ms, r.downtime_ms, r.rto_ms])
        .flatten()
        .collect();
    let max = ys.iter().copied().fold(0.0, f64::max).max(1.0) * 1.1;
    let n = runs.len();
    let x = |i: usize| {
        if n <= 1 {
            LEFT + (W - LEFT - RIGHT) / 2.0
        } else {
            LEFT + (W - LEFT - RIGHT) * i as f64 / (n - 1) as f64
        }
    };
    let y = |ms: f64| TOP + (H - TOP - BOTTOM) * (1.0 - ms / max);
    let mut s = format!(
        "<svg class=\"trend\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">\n",
        escape_markup(&format!(
            "trend of {name}: measured RTO and downtime per run"
        ))
    );
    s.push_str(&format!(
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\"/><line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\n",
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    ));
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">0</text>\n",
        LEFT - 4.0,
        TOP + 8.0,
        escape_markup(&human_ms(max)),
        LEFT - 4.0,
        H - BOTTOM
    ));
    if let Some(o) = runs.iter().rev().find_map(|r| r.rto_ms) {
        s.push_str(&format!(
            "<line class=\"objective\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"><title>{}</title></line>\n",
            W - RIGHT,
            y(o),
            y(o),
            escape_markup(&format!("RTO objective {}", human_ms(o)))
        ));
    }
    for (class, get) in [
        (
            "rto",
            (|r: &HistoryRun| r.rto_measured_ms) as fn(&HistoryRun) -> Option<f64>,
        ),
        ("downtime", |r: &HistoryRun| r.downtime_ms),
    ] {
        let pts: Vec<String> = runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| get(r).map(|v| format!("{:.1},{:.1}", x(i), y(v))))
            .collect();
        if pts.len() > 1 {
            s.push_str(&format!(
                "<polyline class=\"{class}\" points=\"{}\"/>\n",
                pts.join(" ")
            ));
        }
    }
    for (i, r) in runs.iter().enumerate() {
        let cls = match r.status {
            Status::Passed => "ok",
            _ => "bad",
        };
        let v = r.rto_measured_ms.unwrap_or(0.0);
        s.push_str(&format!(
            "<circle class=\"{cls}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\"><title>{}</title></circle>\n",
            x(i),
            y(v),
            escape_markup(&format!(
                "{} {}: {}; RTO {}; downtime {}",
                r.started_at,
                r.run_id,
                r.status.label(),
                r.rto_words(),
                opt_ms(r.downtime_ms)
            ))
        ));
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x(i),
            H - BOTTOM + 14.0,
            i + 1
        ));
    }
    s.push_str("</svg>\n");
    s
}

/// `index.html`: self-contained (inline CSS and SVG), every datum escaped.
pub fn html(h: &History) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>firedrill: drill history</title>\n<style>\n\
  body { font: 14px/1.45 system-ui, sans-serif; color: #1f2328; margin: 0 auto; padding: 24px; max-width: 1200px; }\n\
  table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }\n\
  th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }\n\
  th { background: #f6f8fa; }\n\
  .ts { white-space: nowrap; }\n\
  .ok { color: #1a7f37; font-weight: 600; } .bad { color: #cf222e; font-weight: 600; }\n\
  svg.trend { border: 1px solid #d0d7de; background: #fff; max-width: 100%; height: auto; }\n\
  svg.trend text { font-size: 10px; fill: #57606a; }\n\
  svg.trend .axis { stroke: #8c959f; }\n\
  svg.trend .objective { stroke: #cf222e; stroke-dasharray: 6 3; }\n\
  svg.trend .rto { fill: none; stroke: #0969da; stroke-width: 2; }\n\
  svg.trend .downtime { fill: none; stroke: #9a6700; stroke-width: 1.5; stroke-dasharray: 3 3; }\n\
  svg.trend circle.ok { fill: #1a7f37; } svg.trend circle.bad { fill: #cf222e; }\n\
  @media print { thead { display: table-header-group; } tr, svg.trend { break-inside: avoid; } }\n\
</style>\n</head>\n<body>\n<h1>Drill history</h1>\n\
<p>Every run under this reports directory. RTO: measured from the disruption until the service indicators were restored, against the objective. Success: the lowest success rate of any traffic load while faults were active. Loss / dup: messages lost / delivered twice, where a probe measured them. Trend: measured RTO (blue, dots coloured by verdict), downtime (dashed), RTO objective (red dashed), runs numbered oldest first.</p>\n",
    );
    if h.scenarios.is_empty() {
        out.push_str("<p>No runs found.</p>\n");
    }
    for (name, runs) in &h.scenarios {
        out.push_str(&format!("<section>\n<h2>{}</h2>\n", escape_markup(name)));
        out.push_str(&trend_svg(name, runs));
        out.push_str("<table>\n<thead><tr><th>#</th><th>Run</th><th>Started</th><th>Verdict</th><th>RTO measured / objective</th><th>Downtime</th><th>Success</th><th>Loss / dup</th><th>Open findings</th></tr></thead>\n<tbody>\n");
        for (i, r) in runs.iter().enumerate().rev() {
            let cls = if r.status == Status::Passed {
                "ok"
            } else {
                "bad"
            };
            out.push_str(&format!(
                "<tr><td>{}</td><td><a href=\"{}\">{}</a></td><td class=\"ts\">{}</td><td class=\"{cls}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                i + 1,
                escape_markup(&href(&r.dir, "report.html")),
                escape_markup(&r.run_id),
                escape_markup(&r.started_at),
                r.status.label(),
                escape_markup(&r.rto_words()),
                escape_markup(&opt_ms(r.downtime_ms)),
                rate(r.success_rate),
                r.loss_words(),
                r.open_findings
            ));
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
    }
    if !h.unreadable.is_empty() {
        out.push_str("<h2>Unreadable journals</h2>\n<ul>\n");
        for u in &h.unreadable {
            out.push_str(&format!("<li>{}</li>\n", escape_markup(u)));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body>\n</html>\n");
    crate::secrets::redact(&out).into_owned()
}

/// Rebuilds `root/index.html` and `root/index.md` from every journal under `root`.
pub fn write_index(root: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let h = collect(root)?;
    let html_path = root.join("index.html");
    let md_path = root.join("index.md");
    super::write_atomic(&html_path, html(&h).as_bytes())?;
    super::write_atomic(&md_path, markdown(&h).as_bytes())?;
    Ok(vec![html_path, md_path])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(started: &str, rto: Option<f64>, status: Status) -> HistoryRun {
        HistoryRun {
            dir: format!("s-{started}"),
            run_id: format!("id-{started}"),
            scenario: "s".into(),
            started_at: started.into(),
            status,
            rto_ms: Some(5_000.0),
            rto_measured_ms: rto,
            rto_met: rto.map(|r| r <= 5_000.0),
            downtime_ms: rto.map(|r| r - 100.0),
            success_rate: None,
            loss_rate: None,
            duplicate_rate: None,
            open_findings: 1,
        }
    }

    #[test]
    fn figures_in_words() {
        let r = run("a", Some(2_000.0), Status::Passed);
        assert_eq!(r.rto_words(), "2.0 s / 5.0 s (met)");
        assert_eq!(r.loss_words(), "—");
        let mut r = run("b", None, Status::Failed);
        assert_eq!(r.rto_words(), "— / 5.0 s (not measured)");
        r.loss_rate = Some(0.001);
        assert_eq!(r.loss_words(), "0.10% / —");
    }

    #[test]
    fn measured_figures_are_found_where_a_journal_may_carry_them() {
        let v = serde_json::json!({
            "objectives": { "loss_rate": 0.01 },
            "steps": [ { "metrics": { "during.loss_rate": 0.02, "duplicate_rate": 0.5 } } ]
        });
        assert_eq!(measured(&v, "loss_rate"), Some(0.02));
        assert_eq!(measured(&v, "duplicate_rate"), Some(0.5));
        assert_eq!(measured(&serde_json::json!({}), "loss_rate"), None);
    }

    #[test]
    fn hostile_names_are_escaped_and_links_encoded() {
        let mut h = History::default();
        let mut r = run("x", Some(1.0), Status::Passed);
        r.dir = "a\"><script>b".into();
        r.run_id = "<img src=x onerror=alert(1)>".into();
        h.scenarios.insert("<b>s</b>".into(), vec![r]);
        let page = html(&h);
        assert!(!page.contains("<script>b") && !page.contains("<img") && !page.contains("<b>s"));
        assert!(
            page.contains("href=\"a%22%3E%3Cscript%3Eb/report.html\""),
            "{page}"
        );
        let md = markdown(&h);
        assert!(!md.contains("<img") && !md.contains("<b>"), "{md}");
    }

    #[test]
    fn the_trend_has_a_point_per_run_and_a_line_when_two() {
        let runs = vec![
            run("2025-01-01", Some(2_000.0), Status::Passed),
            run("2025-01-02", Some(6_000.0), Status::Failed),
        ];
        let svg = trend_svg("s", &runs);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(svg.matches("class=\"rto\"").count(), 1);
        assert_eq!(svg.matches("class=\"objective\"").count(), 1);
        assert!(svg.contains("circle class=\"bad\""));
        roxmltree::Document::parse(&svg).expect("well-formed SVG");
    }
}
