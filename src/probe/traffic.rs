//! `traffic` probe: open-model HTTP load at a fixed rate, with success rate and
//! latency percentiles, overall and per drill phase.
//!
//! Requests are scheduled by the clock (request *i* is due at `start + i / rate`),
//! never by the previous response, and each latency is measured from its *scheduled*
//! time: when the system under test stalls, the requests that should have been sent
//! meanwhile count their waiting time (no coordinated omission). Percentiles come
//! from an HDR histogram (3 significant digits) over every request, failed ones
//! included (a timeout is a slow request, not a missing one).
//!
//! Two uses:
//! - as a probe (`probe: { traffic: {...} }`): one load of `duration`, and the
//!   observation's `metrics` hold the figures (`success_rate`, `p95_ms`, …);
//! - as a scenario `traffic:` entry ([`TrafficStep`]): the engine starts the load once
//!   the prechecks pass and stops it after the steady-state re-check; every sample is
//!   tagged with the drill phase, and expectations apply per phase (`before`,
//!   `during`, `after`). See [`Section`].
//!
//! Bounded always: at most [`MAX_RATE`] requests/s, at most `max_in_flight` requests
//! open, and never longer than the drill's `objectives.max_duration`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Expect, Observation, ProbeCtx};
use crate::duration::HumanDuration;
use crate::rt::Phase;

/// Highest accepted request rate (requests per second).
pub const MAX_RATE: f64 = 2000.0;

/// Open-model HTTP load.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficProbe {
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Send the load from inside this target (a `netns` target, for example): its connections and name lookups are the target's. Defaults to this host.
    #[serde(default)]
    pub target: Option<String>,
    /// HTTP method.
    #[serde(default = "get")]
    pub method: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body (sent as is).
    #[serde(default)]
    pub body: Option<String>,
    /// Requests per second, scheduled by the clock (at most 2000).
    pub rate: f64,
    /// How long the load runs when used as a probe (default 10s). In a `traffic:` section the load runs from the end of the prechecks to the end of the steady-state re-check instead.
    #[serde(default)]
    pub duration: Option<HumanDuration>,
    /// Time after which one request counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// What makes one request a success, e.g. `{ status: 200, json: { path: $.errcode, eq: 0 } }`. Empty: an HTTP answer below 400.
    #[serde(default)]
    pub success: Expect,
    /// Requests open at once, at most; beyond it, due requests wait (their wait counts in their latency).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
}

fn get() -> String {
    "GET".into()
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_millis(2000)
}

fn default_in_flight() -> u32 {
    256
}

fn default_window() -> HumanDuration {
    HumanDuration::from_millis(5000)
}

fn yes() -> bool {
    true
}

/// Default load duration of the probe form.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// One request of the load.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// When it was due, from the start of the load.
    pub due: Duration,
    /// From its due time to the end of the response (or the failure).
    pub latency: Duration,
    /// Whether it met the success rule.
    pub ok: bool,
    /// The drill phase at its due time (`None` for the probe form).
    pub phase: Option<Phase>,
}

impl TrafficProbe {
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Some(problem) = super::http::url_problem(&self.url) {
            errs.push(("url".into(), problem));
        }
        if reqwest::Method::from_bytes(self.method.to_uppercase().as_bytes()).is_err() {
            errs.push((
                "method".into(),
                format!("found `{}`, expected an HTTP method", self.method),
            ));
        }
        if !(self.rate > 0.0 && self.rate <= MAX_RATE) {
            errs.push((
                "rate".into(),
                format!(
                    "found {}, expected a rate above 0 and at most {MAX_RATE} requests/s",
                    self.rate
                ),
            ));
        }
        if self.timeout.0.is_zero() {
            errs.push((
                "timeout".into(),
                "found `0s`, expected a positive timeout".into(),
            ));
        }
        if self.duration.is_some_and(|d| d.0.is_zero()) {
            errs.push((
                "duration".into(),
                "found `0s`, expected a positive duration".into(),
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 4096 {
            errs.push((
                "max_in_flight".into(),
                format!("found {}, expected 1 to 4096", self.max_in_flight),
            ));
        }
        for (p, m) in self.success.validate() {
            errs.push((format!("success.{p}"), m));
        }
        errs
    }

    pub(crate) fn describe(&self) -> String {
        let from = self
            .target
            .as_deref()
            .map(|t| format!(" from {t}"))
            .unwrap_or_default();
        format!(
            "{} req/s of HTTP {} {}{from}",
            self.rate,
            self.method.to_uppercase(),
            self.url
        )
    }

    /// The probe form: one load of `duration`; figures in `metrics`.
    pub(crate) async fn observe(&self, ctx: &ProbeCtx<'_>) -> Observation {
        let d = self.duration.map_or(DEFAULT_DURATION, |d| d.0);
        let start = Instant::now();
        let load = Load::start(
            Arc::new(self.clone()),
            ctx,
            None,
            d,
            CancellationToken::new(),
        );
        let (samples, error) = match load.finish_after_cap().await {
            Ok(s) => {
                let e = s.is_empty().then(|| "no request was sent".to_string());
                (s, e)
            }
            Err(e) => (Vec::new(), Some(e)),
        };
        Observation {
            latency: start.elapsed(),
            error,
            metrics: summarize(samples.iter()),
            ..Default::default()
        }
    }
}

/// Runs the load for `d` from this host and returns every sample.
pub async fn run_for(p: &TrafficProbe, http: &reqwest::Client, d: Duration) -> Vec<Sample> {
    let p = Arc::new(TrafficProbe {
        target: None,
        ..p.clone()
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(schedule(p, http.clone(), None, d, stop.clone()));
    let load = Load {
        task: task_ok(task),
        stop,
    };
    load.finish_after_cap().await.unwrap_or_default()
}

type LoadTask = tokio::task::JoinHandle<Result<Vec<Sample>, String>>;

fn task_ok(t: tokio::task::JoinHandle<Vec<Sample>>) -> LoadTask {
    tokio::spawn(async move { t.await.map_err(|e| format!("the load failed: {e}")) })
}

/// A running load.
struct Load {
    task: LoadTask,
    stop: CancellationToken,
}

impl Load {
    /// Starts the scheduler; it stops by itself after `cap`, or when `stop` fires.
    /// With a `target`, the load runs on a thread in that target's network with an
    /// HTTP client of its own; without one, on this runtime with the shared client.
    fn start(
        p: Arc<TrafficProbe>,
        ctx: &ProbeCtx<'_>,
        phase: Option<tokio::sync::watch::Receiver<Phase>>,
        cap: Duration,
        stop: CancellationToken,
    ) -> Load {
        let stop2 = stop.clone();
        let task = match p.target.clone() {
            None => task_ok(tokio::spawn(schedule(
                p,
                ctx.http.clone(),
                phase,
                cap,
                stop2,
            ))),
            Some(name) => match super::http::named_target(ctx, &name) {
                Ok(target) => tokio::spawn(super::http::from_target(target, move |http| {
                    schedule(p, http, phase, cap, stop2)
                })),
                Err(e) => tokio::spawn(async move { Err(e) }),
            },
        };
        Load { task, stop }
    }

    /// Waits for the load to reach its cap (only the requests still in flight are
    /// awaited after it) and returns every sample in due order.
    async fn finish_after_cap(self) -> Result<Vec<Sample>, String> {
        let mut s = self
            .task
            .await
            .map_err(|e| format!("the load failed: {e}"))??;
        s.sort_by_key(|x| x.due);
        Ok(s)
    }

    /// Stops scheduling, waits for the requests in flight (bounded by their
    /// timeout) and returns every sample in due order.
    async fn finish(self) -> Result<Vec<Sample>, String> {
        self.stop.cancel();
        self.finish_after_cap().await
    }
}

async fn schedule(
    p: Arc<TrafficProbe>,
    http: reqwest::Client,
    phase: Option<tokio::sync::watch::Receiver<Phase>>,
    cap: Duration,
    stop: CancellationToken,
) -> Vec<Sample> {
    let method = reqwest::Method::from_bytes(p.method.to_uppercase().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let rate = p.rate.clamp(f64::MIN_POSITIVE, MAX_RATE);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let permits = Arc::new(tokio::sync::Semaphore::new(p.max_in_flight.max(1) as usize));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for i in 0u64.. {
        let due_off = interval.mul_f64(i as f64);
        if due_off >= cap {
            break;
        }
        let due = start + due_off;
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stop.cancelled() => break,
        }
        let tag = phase.as_ref().map(|w| *w.borrow());
        // Waiting for a permit delays the send, not the clock: the wait is counted.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore open"),
            _ = stop.cancelled() => break,
        };
        let mut req = http.request(method.clone(), &p.url).timeout(p.timeout.0);
        for (k, v) in &p.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &p.body {
            req = req.body(b.clone());
        }
        let (p2, samples) = (p.clone(), samples.clone());
        tasks.spawn(async move {
            let obs = match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    match r.text().await {
                        Ok(body) => Observation {
                            status: Some(status),
                            body: Some(body),
                            ..Default::default()
                        },
                        Err(e) => Observation {
                            error: Some(e.to_string()),
                            ..Default::default()
                        },
                    }
                }
                Err(e) => Observation {
                    error: Some(e.to_string()),
                    ..Default::default()
                },
            };
            let latency = due.elapsed();
            let ok = p2.success.evaluate(&obs).ok;
            drop(permit);
            samples.lock().unwrap().push(Sample {
                due: due_off,
                latency,
                ok,
                phase: tag,
            });
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    std::mem::take(&mut *samples.lock().unwrap())
}

/// Count, success rate and latency percentiles (ms) of some samples.
pub fn summarize<'a>(samples: impl Iterator<Item = &'a Sample>) -> BTreeMap<String, f64> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .expect("valid histogram bounds");
    let (mut n, mut ok) = (0u64, 0u64);
    for s in samples {
        n += 1;
        ok += s.ok as u64;
        h.saturating_record((s.latency.as_micros() as u64).max(1));
    }
    let mut m = BTreeMap::new();
    m.insert("count".into(), n as f64);
    m.insert("ok".into(), ok as f64);
    m.insert("errors".into(), (n - ok) as f64);
    if n == 0 {
        return m;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    m.insert("success_rate".into(), ok as f64 / n as f64);
    m.insert("p50_ms".into(), ms(h.value_at_quantile(0.50)));
    m.insert("p95_ms".into(), ms(h.value_at_quantile(0.95)));
    m.insert("p99_ms".into(), ms(h.value_at_quantile(0.99)));
    m.insert("max_ms".into(), ms(h.max()));
    m.insert("mean_ms".into(), h.mean() / 1000.0);
    m
}

/// The phase buckets of a `traffic:` entry.
pub const BUCKETS: [&str; 4] = ["before", "during", "recovery", "after"];

fn bucket(p: Phase) -> &'static str {
    match p {
        Phase::Setup | Phase::Precheck => "before",
        Phase::Fault | Phase::Verification => "during",
        Phase::Recovery => "recovery",
        Phase::SteadyState | Phase::AfterRecovery | Phase::Report => "after",
    }
}

/// A scenario `traffic:` entry: load that runs through the drill, judged per phase.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficStep {
    /// Unique name of the load; shown in reports and JUnit.
    pub name: String,
    /// The load: URL, rate, success rule (the `duration` is ignored here).
    pub probe: TrafficProbe,
    /// Baseline collected after the prechecks pass and before the first fault is injected (delays the faults by this much).
    #[serde(default = "default_window")]
    pub before: HumanDuration,
    /// Collected after the steady-state re-check, before the load stops.
    #[serde(default = "default_window")]
    pub after: HumanDuration,
    /// Conditions per phase on the figures (`metrics: { success_rate: { ge: 0.995 }, p95_ms: { le: 200 } }`).
    #[serde(default)]
    pub expect: PhaseExpect,
    /// A failed expectation fails the drill.
    #[serde(default = "yes")]
    pub critical: bool,
}

/// Expectations per drill phase; each is evaluated against that phase's figures.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseExpect {
    /// Before the first fault (the baseline).
    #[serde(default)]
    pub before: Option<Expect>,
    /// While faults are active (fault injection and verifications).
    #[serde(default)]
    pub during: Option<Expect>,
    /// While faults are being reverted and recovery steps run.
    #[serde(default)]
    pub recovery: Option<Expect>,
    /// After recovery (steady-state re-check and the `after` window).
    #[serde(default)]
    pub after: Option<Expect>,
}

impl PhaseExpect {
    fn get(&self, bucket: &str) -> Option<&Expect> {
        match bucket {
            "before" => self.before.as_ref(),
            "during" => self.during.as_ref(),
            "recovery" => self.recovery.as_ref(),
            _ => self.after.as_ref(),
        }
    }
}

impl TrafficStep {
    /// Static checks: `(path relative to the entry, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs: Vec<(String, String)> = self
            .probe
            .validate()
            .into_iter()
            .map(|(p, m)| (format!("probe.{p}"), m))
            .collect();
        for b in BUCKETS {
            if let Some(e) = self.expect.get(b) {
                errs.extend(
                    e.validate()
                        .into_iter()
                        .map(|(p, m)| (format!("expect.{b}.{p}"), m)),
                );
            }
        }
        errs
    }
}

/// The `traffic:` section of a running drill.
pub struct Section {
    loads: Vec<(usize, Instant, f64, Load)>,
    steps: Arc<Vec<TrafficStep>>,
    started: bool,
}

impl Section {
    /// Starts every load (the engine calls this once the prechecks passed), then
    /// waits the longest `before` window so the baseline has samples. `cancel`
    /// cuts the wait short; loads stop by themselves after `cap`.
    pub async fn start(
        steps: &[TrafficStep],
        runtime: &crate::rt::Runtime,
        ctx: &ProbeCtx<'_>,
        cap: Duration,
        now_ms: f64,
        cancel: &CancellationToken,
    ) -> Section {
        let steps = Arc::new(steps.to_vec());
        let loads = steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let load = Load::start(
                    Arc::new(s.probe.clone()),
                    ctx,
                    Some(runtime.subscribe_phase()),
                    cap,
                    CancellationToken::new(),
                );
                (i, Instant::now(), now_ms, load)
            })
            .collect();
        let wait = steps.iter().map(|s| s.before.0).max().unwrap_or_default();
        if !steps.is_empty() {
            crate::rt::sleep_or_cancel(wait, cancel).await;
        }
        Section {
            loads,
            steps,
            started: true,
        }
    }

    /// A section that never started (prechecks failed): its entries are skipped.
    pub fn not_started(steps: &[TrafficStep]) -> Section {
        Section {
            loads: Vec::new(),
            steps: Arc::new(steps.to_vec()),
            started: false,
        }
    }

    /// Waits the longest `after` window (unless `hurry`), stops every load and
    /// judges each entry per phase: one verdict per entry.
    pub async fn finish(self, hurry: &CancellationToken) -> Vec<TrafficVerdict> {
        if !self.started {
            return self
                .steps
                .iter()
                .map(|s| TrafficVerdict {
                    name: s.name.clone(),
                    critical: s.critical,
                    description: s.probe.describe(),
                    passed: None,
                    started_ms: 0.0,
                    duration_ms: 0.0,
                    requests: 0,
                    detail: "the load never started (prechecks did not pass)".into(),
                    metrics: BTreeMap::new(),
                })
                .collect();
        }
        let wait = self
            .steps
            .iter()
            .map(|s| s.after.0)
            .max()
            .unwrap_or_default();
        if !self.steps.is_empty() {
            crate::rt::sleep_or_cancel(wait, hurry).await;
        }
        let mut out = Vec::new();
        for (i, t0, started_ms, load) in self.loads {
            let s = &self.steps[i];
            match load.finish().await {
                Ok(samples) => out.push(judge(s, &samples, started_ms, t0.elapsed())),
                // No figure at all is a failed load, not a vacuously met one.
                Err(e) => out.push(TrafficVerdict {
                    name: s.name.clone(),
                    critical: s.critical,
                    description: format!("traffic: {}", s.probe.describe()),
                    passed: Some(false),
                    started_ms,
                    duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
                    requests: 0,
                    detail: format!("the load could not run: {e}"),
                    metrics: BTreeMap::new(),
                }),
            }
        }
        out
    }
}

/// The verdict on one traffic entry; the engine records it as a verification step.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficVerdict {
    /// The entry's name.
    pub name: String,
    /// Whether a failure fails the drill.
    pub critical: bool,
    /// The load, in words.
    pub description: String,
    /// Whether every per-phase expectation held; `None` when the load never started.
    pub passed: Option<bool>,
    /// When the load started, in run milliseconds.
    pub started_ms: f64,
    /// How long the load ran.
    pub duration_ms: f64,
    /// Requests sent.
    pub requests: u32,
    /// Per-phase clauses, in words.
    pub detail: String,
    /// Figures per phase (`before.p95_ms`, `during.success_rate`, ...).
    pub metrics: BTreeMap<String, f64>,
}

/// Per-phase figures and expectations of one entry.
pub fn judge(
    s: &TrafficStep,
    samples: &[Sample],
    started_ms: f64,
    took: Duration,
) -> TrafficVerdict {
    let mut metrics = BTreeMap::new();
    for (k, v) in summarize(samples.iter()) {
        metrics.insert(format!("all.{k}"), v);
    }
    let mut clauses = Vec::new();
    let mut ok = true;
    for b in BUCKETS {
        let m = summarize(
            samples
                .iter()
                .filter(|x| x.phase.is_some_and(|p| bucket(p) == b)),
        );
        let count = m.get("count").copied().unwrap_or(0.0);
        if let Some(e) = s.expect.get(b) {
            let obs = Observation {
                error: (count == 0.0).then(|| format!("no request fell in the {b} phase")),
                metrics: m.clone(),
                ..Default::default()
            };
            let v = e.evaluate(&obs);
            ok &= v.ok;
            clauses.push(format!("{b}: {}", v.detail));
        } else if count > 0.0 {
            clauses.push(format!(
                "{b}: {count} requests, {:.2}% ok, p50/p95/p99/max {:.1}/{:.1}/{:.1}/{:.1} ms",
                m.get("success_rate").copied().unwrap_or(0.0) * 100.0,
                m.get("p50_ms").copied().unwrap_or(0.0),
                m.get("p95_ms").copied().unwrap_or(0.0),
                m.get("p99_ms").copied().unwrap_or(0.0),
                m.get("max_ms").copied().unwrap_or(0.0)
            ));
        }
        for (k, v) in m {
            metrics.insert(format!("{b}.{k}"), v);
        }
    }
    TrafficVerdict {
        name: s.name.clone(),
        critical: s.critical,
        description: format!("traffic: {}", s.probe.describe()),
        passed: Some(ok),
        started_ms,
        duration_ms: took.as_secs_f64() * 1000.0,
        requests: samples.len() as u32,
        detail: clauses.join("; "),
        metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, ok: bool, phase: Phase) -> Sample {
        Sample {
            due: Duration::ZERO,
            latency: Duration::from_millis(ms),
            ok,
            phase: Some(phase),
        }
    }

    #[test]
    fn per_phase_figures_and_expectations() {
        let step: TrafficStep = serde_json::from_value(serde_json::json!({
            "name": "sends",
            "probe": { "url": "http://127.0.0.1:1/", "rate": 10 },
            "expect": {
                "before": { "metrics": { "success_rate": { "ge": 0.99 } } },
                "during": { "metrics": { "success_rate": { "ge": 0.99 } } },
                "after": { "metrics": { "p95_ms": { "le": 50 } } }
            }
        }))
        .unwrap();
        assert!(step.validate().is_empty());
        let mut s: Vec<Sample> = (0..100)
            .map(|i| sample(10 + i % 5, true, Phase::Precheck))
            .collect();
        s.extend((0..100).map(|i| sample(100, i % 2 == 0, Phase::Fault)));
        s.extend((0..100).map(|_| sample(20, true, Phase::SteadyState)));
        let rec = judge(&step, &s, 0.0, Duration::from_secs(1));
        assert_eq!(rec.passed, Some(false), "{}", rec.detail);
        assert_eq!(rec.metrics["before.success_rate"], 1.0);
        assert_eq!(rec.metrics["during.success_rate"], 0.5);
        // HDR histogram, 3 significant digits: within 0.1%.
        assert!((rec.metrics["after.p95_ms"] - 20.0).abs() <= 0.02);
        assert_eq!(rec.metrics["all.count"], 300.0);
        assert!(rec.detail.contains("FAILED"), "{}", rec.detail);
        assert!(rec.detail.starts_with("before: "), "{}", rec.detail);
    }

    #[test]
    fn rate_is_bounded() {
        let p: TrafficProbe = serde_json::from_value(
            serde_json::json!({ "url": "http://127.0.0.1:1/", "rate": 1e6 }),
        )
        .unwrap();
        assert_eq!(p.validate()[0].0, "rate");
    }
}
