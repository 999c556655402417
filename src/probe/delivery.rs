//! `delivery`: messages with unique ids sent through the system under test at a
//! fixed rate across the drill, then counted where they should have arrived.
//!
//! A scenario `delivery:` entry ([`DeliveryStep`]) starts sending once the prechecks
//! pass and stops after the steady-state re-check (like `traffic:`). Each message
//! carries an id `<run prefix>-<sequence>` (the prefix is random per run, so older
//! messages in a sink are never counted); the request is built from a template in
//! which `${id}` is replaced. A response meeting `success` means the system
//! *acknowledged* the message: it promised delivery.
//!
//! When sending has stopped, the sinks (any HTTP endpoint that lists received
//! messages: a WeCom simulator's `/admin/messages`, a mailbox API…) are read, by
//! JSONPath, until every acknowledged message is found or `settle` runs out. The
//! figures, overall and per drill phase of the send:
//! - `sent`, `acknowledged`, `delivered` (distinct ids found), `lost` (acknowledged,
//!   never found), `duplicated` (extra copies), `out_of_order`;
//! - `loss_rate` = lost / acknowledged, `duplicate_rate` = duplicated / delivered;
//! - delivery latency (first copy received − sent) `p50_ms`/`p95_ms`/`p99_ms`/`max_ms`,
//!   when the sink reports receive times (Unix epoch ms, as the simulator does);
//! - `rpo_ms`, the measured recovery point: from the send of the first lost
//!   acknowledged message to the acknowledgement of the last one (0 when none was
//!   lost). The engine reports it as the run's measured RPO.
//!
//! Bounded: at most [`MAX_RATE`] messages/s, `max_in_flight` open requests, `count`
//! messages if given, and never longer than the drill's `objectives.max_duration`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::traffic::TrafficVerdict;
use super::{Expect, Observation, ProbeCtx};
use crate::duration::HumanDuration;
use crate::rt::Phase;

/// Highest accepted send rate (messages per second).
pub const MAX_RATE: f64 = 2000.0;

/// The placeholder replaced by each message's id.
pub const ID: &str = "${id}";

/// A scenario `delivery:` entry.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryStep {
    /// Unique name of the entry; shown in reports and JUnit.
    pub name: String,
    /// How each message is handed to the system under test.
    pub send: DeliverySend,
    /// Where delivered messages are counted (every copy in every sink counts).
    pub sinks: Vec<DeliverySink>,
    /// Send the messages and read the sinks from inside this target (a `netns` target, for example): its connections and name lookups are the target's. Defaults to this host.
    #[serde(default)]
    pub target: Option<String>,
    /// Sending starts this long before the first fault (delays the faults by this much).
    #[serde(default = "default_window")]
    pub before: HumanDuration,
    /// Sending goes on this long after the steady-state re-check.
    #[serde(default = "default_window")]
    pub after: HumanDuration,
    /// After sending stops, how long the sinks are polled for acknowledged messages still on their way (queues being drained).
    #[serde(default = "default_settle")]
    pub settle: HumanDuration,
    /// Conditions on the figures: `metrics: { loss_rate: { eq: 0 }, duplicate_rate: { le: 0.001 }, rpo_ms: { le: 0 } }`. Per-phase figures are named `before.lost`, `during.p95_ms`, … .
    #[serde(default)]
    pub expect: Expect,
    /// A failed expectation fails the drill.
    #[serde(default = "yes")]
    pub critical: bool,
}

/// The request that hands one message to the system under test. `${id}` in the URL, a header value or the body is replaced by the message's unique id.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverySend {
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// HTTP method.
    #[serde(default = "post")]
    pub method: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body, e.g. `'{"id": "${id}", "content": "drill ${id}"}'`.
    #[serde(default)]
    pub body: Option<String>,
    /// Messages per second, scheduled by the clock (at most 2000).
    pub rate: f64,
    /// Send at most this many messages (default: until the entry stops).
    #[serde(default)]
    pub count: Option<u64>,
    /// Time after which a send counts as not acknowledged.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// What makes a response an acknowledgement, e.g. `{ status: 202 }`. Empty: an HTTP answer below 400.
    #[serde(default)]
    pub success: Expect,
    /// Sends open at once, at most.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
}

/// An HTTP endpoint listing received messages.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverySink {
    /// Absolute `http://` or `https://` URL, read with GET.
    pub url: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSONPath selecting one item per received message, e.g. `$.messages[*]`.
    pub items: String,
    /// JSONPath inside an item to the text holding the message id (the id may be part of a longer text), e.g. `$.content`.
    #[serde(default = "root")]
    pub id: String,
    /// JSONPath inside an item to its receive time in milliseconds since the Unix epoch, e.g. `$.received_ms`. Without it there are no latency figures.
    #[serde(default)]
    pub received_ms: Option<String>,
}

fn post() -> String {
    "POST".into()
}
fn root() -> String {
    "$".into()
}
fn yes() -> bool {
    true
}
fn default_window() -> HumanDuration {
    HumanDuration::from_millis(3000)
}
fn default_settle() -> HumanDuration {
    HumanDuration::from_millis(10_000)
}
fn default_timeout() -> HumanDuration {
    HumanDuration::from_millis(2000)
}
fn default_in_flight() -> u32 {
    64
}

impl DeliveryStep {
    /// Static checks: `(path relative to the entry, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let s = &self.send;
        if let Some(p) = super::http::url_problem(&s.url) {
            errs.push(("send.url".into(), p));
        }
        if reqwest::Method::from_bytes(s.method.to_uppercase().as_bytes()).is_err() {
            errs.push((
                "send.method".into(),
                format!("found `{}`, expected an HTTP method", s.method),
            ));
        }
        if !(s.rate > 0.0 && s.rate <= MAX_RATE) {
            errs.push((
                "send.rate".into(),
                format!(
                    "found {}, expected a rate above 0 and at most {MAX_RATE} messages/s",
                    s.rate
                ),
            ));
        }
        if s.count == Some(0) {
            errs.push(("send.count".into(), "found 0, expected at least 1".into()));
        }
        if s.timeout.0.is_zero() {
            errs.push((
                "send.timeout".into(),
                "found `0s`, expected a positive timeout".into(),
            ));
        }
        if s.max_in_flight == 0 || s.max_in_flight > 4096 {
            errs.push((
                "send.max_in_flight".into(),
                format!("found {}, expected 1 to 4096", s.max_in_flight),
            ));
        }
        let carries_id = s.url.contains(ID)
            || s.body.as_deref().is_some_and(|b| b.contains(ID))
            || s.headers.values().any(|v| v.contains(ID));
        if !carries_id {
            errs.push((
                "send".into(),
                format!("found no `{ID}` in the url, headers or body, expected the message id in one of them"),
            ));
        }
        for (p, m) in s.success.validate() {
            errs.push((format!("send.success.{p}"), m));
        }
        if self.sinks.is_empty() {
            errs.push((
                "sinks".into(),
                "found none, expected at least one sink".into(),
            ));
        }
        for (i, k) in self.sinks.iter().enumerate() {
            if let Some(p) = super::http::url_problem(&k.url) {
                errs.push((format!("sinks[{i}].url"), p));
            }
            let paths = [
                ("items", Some(&k.items)),
                ("id", Some(&k.id)),
                ("received_ms", k.received_ms.as_ref()),
            ];
            for (field, path) in paths {
                if let Some(path) = path
                    && let Err(e) = serde_json_path::JsonPath::parse(path)
                {
                    errs.push((
                        format!("sinks[{i}].{field}"),
                        format!("found `{path}`, expected a JSONPath ({e})"),
                    ));
                }
            }
        }
        for (p, m) in self.expect.validate() {
            errs.push((format!("expect.{p}"), m));
        }
        errs
    }

    /// What is sent and where it is counted, in words.
    pub fn describe(&self) -> String {
        let sinks: Vec<&str> = self.sinks.iter().map(|k| k.url.as_str()).collect();
        format!(
            "delivery: {} msg/s{} by HTTP {} {}, counted at {}{}",
            self.send.rate,
            self.send
                .count
                .map(|c| format!(" (at most {c})"))
                .unwrap_or_default(),
            self.send.method.to_uppercase(),
            self.send.url,
            sinks.join(", "),
            self.target
                .as_deref()
                .map(|t| format!(", from {t}"))
                .unwrap_or_default()
        )
    }
}

/// One message sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    /// Its sequence number (its id is `<prefix>-<seq>`).
    pub seq: u64,
    /// When the request went out, ms since the Unix epoch.
    pub sent_ms: f64,
    /// When the acknowledgement came, ms since the Unix epoch (`None`: not acknowledged).
    pub acked_ms: Option<f64>,
    /// The drill phase when it was sent.
    pub phase: Option<Phase>,
}

/// A named span of the drill (a switchover stage) over which the figures are broken
/// down, by when each message was sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// What the span is, e.g. "staged switchover: stage 2 of 4 (10%)".
    pub label: String,
    /// Start, ms since the Unix epoch (inclusive).
    pub from_unix_ms: f64,
    /// End, ms since the Unix epoch (exclusive).
    pub to_unix_ms: f64,
}

/// One copy found in a sink.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub seq: u64,
    /// Receive time, ms since the Unix epoch, if the sink says.
    pub at_ms: Option<f64>,
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A fresh id prefix: `fd` and 10 random lowercase letters and digits.
pub fn new_prefix() -> String {
    let mut s = String::from("fd");
    for _ in 0..10 {
        s.push(fastrand::alphanumeric().to_ascii_lowercase());
    }
    s
}

/// The id of message `seq`.
pub fn message_id(prefix: &str, seq: u64) -> String {
    format!("{prefix}-{seq:07}")
}

/// The sequence numbers of this run's ids found in `text` (usually one).
fn seqs_in(text: &str, prefix: &str) -> Vec<u64> {
    let needle = format!("{prefix}-");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(&needle) {
        rest = &rest[i + needle.len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = digits.parse() {
            out.push(n);
        }
    }
    out
}

/// Extracts this run's messages from one sink's answer.
pub fn extract(
    sink: &DeliverySink,
    body: &serde_json::Value,
    prefix: &str,
) -> Result<Vec<Received>, String> {
    let parse = |p: &str| serde_json_path::JsonPath::parse(p).map_err(|e| format!("{p}: {e}"));
    let items = parse(&sink.items)?;
    let id = parse(&sink.id)?;
    let at = sink.received_ms.as_deref().map(parse).transpose()?;
    let mut out = Vec::new();
    for item in items.query(body).all() {
        let text = match id.query(item).first() {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => continue,
        };
        let at_ms = at
            .as_ref()
            .and_then(|p| p.query(item).first().and_then(|v| v.as_f64()));
        for seq in seqs_in(&text, prefix) {
            out.push(Received { seq, at_ms });
        }
    }
    Ok(out)
}

/// The `delivery:` section of a running drill.
pub struct Section {
    runs: Vec<Running>,
    steps: Vec<DeliveryStep>,
    started: bool,
}

struct Running {
    prefix: String,
    started: Instant,
    started_ms: f64,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<Vec<Sent>, String>>,
    /// Where the messages are sent from and the sinks read from (`None`: this host).
    target: Option<crate::target::Target>,
}

impl Section {
    /// A section that never started (prechecks failed): its entries are skipped.
    pub fn not_started(steps: &[DeliveryStep]) -> Section {
        Section {
            runs: Vec::new(),
            steps: steps.to_vec(),
            started: false,
        }
    }

    /// Starts sending for every entry, then waits the longest `before` window.
    pub async fn start(
        steps: &[DeliveryStep],
        runtime: &crate::rt::Runtime,
        ctx: &ProbeCtx<'_>,
        cap: Duration,
        now_ms: f64,
        cancel: &CancellationToken,
    ) -> Section {
        let runs = steps
            .iter()
            .map(|s| {
                let prefix = new_prefix();
                let stop = CancellationToken::new();
                let (send, pre, phase, stop2) = (
                    Arc::new(s.send.clone()),
                    prefix.clone(),
                    Some(runtime.subscribe_phase()),
                    stop.clone(),
                );
                let target = s
                    .target
                    .as_deref()
                    .map(|name| super::http::named_target(ctx, name));
                let (task, target) = match target {
                    None => {
                        let http = ctx.http.clone();
                        let t = tokio::spawn(async move {
                            Ok(send_loop(send, pre, http, phase, cap, stop2).await)
                        });
                        (t, None)
                    }
                    Some(Ok(target)) => {
                        let t =
                            tokio::spawn(super::http::from_target(target.clone(), move |http| {
                                send_loop(send, pre, http, phase, cap, stop2)
                            }));
                        (t, Some(target))
                    }
                    Some(Err(e)) => (tokio::spawn(async move { Err(e) }), None),
                };
                Running {
                    prefix,
                    started: Instant::now(),
                    started_ms: now_ms,
                    stop,
                    task,
                    target,
                }
            })
            .collect();
        if let Some(wait) = steps.iter().map(|s| s.before.0).max() {
            crate::rt::sleep_or_cancel(wait, cancel).await;
        }
        Section {
            runs,
            steps: steps.to_vec(),
            started: true,
        }
    }

    /// Waits the longest `after` window (unless `hurry`), stops sending, reads the
    /// sinks until the acknowledged messages are in (or `settle` runs out) and judges
    /// each entry.
    ///
    /// `windows` (the stages of a staged switchover) break the figures down further.
    pub async fn finish(
        self,
        http: &reqwest::Client,
        hurry: &CancellationToken,
        windows: &[Window],
    ) -> Vec<TrafficVerdict> {
        if !self.started {
            return self
                .steps
                .iter()
                .map(|s| TrafficVerdict {
                    name: s.name.clone(),
                    critical: s.critical,
                    description: s.describe(),
                    passed: None,
                    started_ms: 0.0,
                    duration_ms: 0.0,
                    requests: 0,
                    detail: "no message was sent (prechecks did not pass)".into(),
                    metrics: BTreeMap::new(),
                })
                .collect();
        }
        if let Some(wait) = self.steps.iter().map(|s| s.after.0).max() {
            crate::rt::sleep_or_cancel(wait, hurry).await;
        }
        let mut out = Vec::new();
        for (s, r) in self.steps.iter().zip(self.runs) {
            r.stop.cancel();
            let sent = match r.task.await {
                Ok(Ok(sent)) => Ok(sent),
                Ok(Err(e)) => Err(format!("the messages could not be sent: {e}")),
                Err(e) => Err(format!("the sender failed: {e}")),
            };
            let received = match (&sent, r.target) {
                (Err(e), _) => Err(e.clone()),
                (Ok(sent), None) => collect(s, sent, &r.prefix, http, hurry).await,
                (Ok(sent), Some(target)) => {
                    let (s2, sent2, pre, hurry2) =
                        (s.clone(), sent.clone(), r.prefix.clone(), hurry.clone());
                    super::http::from_target(target, move |http| async move {
                        collect(&s2, &sent2, &pre, &http, &hurry2).await
                    })
                    .await
                    .and_then(|x| x)
                }
            };
            let sent = sent.unwrap_or_default();
            let mut v = match received {
                Ok(rcv) => judge(s, &sent, &rcv, windows),
                // Without the sinks nothing is known of delivery: only what was sent
                // and acknowledged is reported (no loss figure, no RPO).
                Err(e) => {
                    let acked = sent.iter().filter(|m| m.acked_ms.is_some()).count();
                    TrafficVerdict {
                        name: s.name.clone(),
                        critical: s.critical,
                        description: s.describe(),
                        passed: Some(false),
                        started_ms: 0.0,
                        duration_ms: 0.0,
                        requests: sent.len() as u32,
                        detail: format!("{} sent, {acked} acknowledged; FAILED: {e}", sent.len()),
                        metrics: BTreeMap::from([
                            ("sent".to_string(), sent.len() as f64),
                            ("acknowledged".to_string(), acked as f64),
                        ]),
                    }
                }
            };
            v.started_ms = r.started_ms;
            v.duration_ms = r.started.elapsed().as_secs_f64() * 1000.0;
            out.push(v);
        }
        out
    }
}

/// Reads every sink until each acknowledged message was found or `settle` ran out
/// (or `hurry` fired), then returns every copy found in the last reading.
async fn collect(
    s: &DeliveryStep,
    sent: &[Sent],
    prefix: &str,
    http: &reqwest::Client,
    hurry: &CancellationToken,
) -> Result<Vec<Received>, String> {
    collect_until(s, sent, prefix, http, hurry)
        .await
        .map_err(|e| format!("the sinks could not be read: {e}"))
}

async fn collect_until(
    s: &DeliveryStep,
    sent: &[Sent],
    prefix: &str,
    http: &reqwest::Client,
    hurry: &CancellationToken,
) -> Result<Vec<Received>, String> {
    let deadline = Instant::now() + s.settle.0;
    let acked: Vec<u64> = sent
        .iter()
        .filter(|m| m.acked_ms.is_some())
        .map(|m| m.seq)
        .collect();
    loop {
        let mut all = Vec::new();
        for k in &s.sinks {
            all.extend(read_sink(k, http, prefix).await?);
        }
        let found: std::collections::HashSet<u64> = all.iter().map(|r| r.seq).collect();
        let complete = acked.iter().all(|q| found.contains(q));
        if complete || Instant::now() >= deadline || hurry.is_cancelled() {
            return Ok(all);
        }
        crate::rt::sleep_or_cancel(Duration::from_millis(500), hurry).await;
    }
}

async fn read_sink(
    k: &DeliverySink,
    http: &reqwest::Client,
    prefix: &str,
) -> Result<Vec<Received>, String> {
    let mut req = http.get(&k.url).timeout(Duration::from_secs(10));
    for (h, v) in &k.headers {
        req = req.header(h, v);
    }
    let r = req.send().await.map_err(|e| format!("{}: {e}", k.url))?;
    if !r.status().is_success() {
        return Err(format!("{}: HTTP {}", k.url, r.status().as_u16()));
    }
    let body: serde_json::Value = r
        .json()
        .await
        .map_err(|e| format!("{}: not JSON: {e}", k.url))?;
    extract(k, &body, prefix).map_err(|e| format!("{}: {e}", k.url))
}

/// Sends messages by the clock until `stop`, `cap` or `count`; returns them in order.
pub async fn send_loop(
    p: Arc<DeliverySend>,
    prefix: String,
    http: reqwest::Client,
    phase: Option<tokio::sync::watch::Receiver<Phase>>,
    cap: Duration,
    stop: CancellationToken,
) -> Vec<Sent> {
    let method = reqwest::Method::from_bytes(p.method.to_uppercase().as_bytes())
        .unwrap_or(reqwest::Method::POST);
    let interval = Duration::from_secs_f64(1.0 / p.rate.clamp(1e-3, MAX_RATE));
    let permits = Arc::new(tokio::sync::Semaphore::new(p.max_in_flight.max(1) as usize));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for seq in 1u64.. {
        if p.count.is_some_and(|c| seq > c) {
            break;
        }
        let due_off = interval.mul_f64((seq - 1) as f64);
        if due_off >= cap {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until((start + due_off).into()) => {}
            _ = stop.cancelled() => break,
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore open"),
            _ = stop.cancelled() => break,
        };
        let tag = phase.as_ref().map(|w| *w.borrow());
        let id = message_id(&prefix, seq);
        let mut req = http
            .request(method.clone(), p.url.replace(ID, &id))
            .timeout(p.timeout.0);
        for (k, v) in &p.headers {
            req = req.header(k, v.replace(ID, &id));
        }
        if let Some(b) = &p.body {
            req = req.body(b.replace(ID, &id));
        }
        let (p2, sent2) = (p.clone(), sent.clone());
        tasks.spawn(async move {
            let sent_ms = unix_ms();
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
            let ok = p2.success.evaluate(&obs).ok;
            drop(permit);
            sent2.lock().unwrap().push(Sent {
                seq,
                sent_ms,
                acked_ms: ok.then(unix_ms),
                phase: tag,
            });
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut v = std::mem::take(&mut *sent.lock().unwrap());
    v.sort_by_key(|m| m.seq);
    v
}

fn bucket(p: Option<Phase>) -> &'static str {
    match p {
        None | Some(Phase::Setup | Phase::Precheck) => "before",
        Some(Phase::Fault | Phase::Verification) => "during",
        Some(Phase::Recovery) => "recovery",
        Some(_) => "after",
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The figures of one entry, and its verdict against `expect`.
pub fn judge(
    s: &DeliveryStep,
    sent: &[Sent],
    received: &[Received],
    windows: &[Window],
) -> TrafficVerdict {
    let mut m = figures(sent, received);
    let per_window = window_figures(sent, received, windows, &mut m);
    let acked = m["acknowledged"];
    let obs = Observation {
        error: (acked == 0.0).then(|| "no message was acknowledged".to_string()),
        metrics: m.clone(),
        ..Default::default()
    };
    let v = s.expect.evaluate(&obs);
    let g = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let lat = if m.contains_key("p50_ms") {
        format!(
            "; delivery latency p50/p95/p99/max {:.1}/{:.1}/{:.1}/{:.1} ms; longest gap between deliveries {:.0} ms",
            g("p50_ms"),
            g("p95_ms"),
            g("p99_ms"),
            g("max_ms"),
            g("max_delivery_gap_ms")
        )
    } else {
        String::new()
    };
    let mut phases = Vec::new();
    for b in super::traffic::BUCKETS {
        if g(&format!("{b}.sent")) > 0.0 {
            phases.push(format!(
                "{b}: {} sent, {} lost, {} duplicated{}",
                g(&format!("{b}.sent")),
                g(&format!("{b}.lost")),
                g(&format!("{b}.duplicated")),
                m.get(&format!("{b}.p95_ms"))
                    .map(|p| format!(", p95 {p:.1} ms"))
                    .unwrap_or_default()
            ));
        }
    }
    let stages = if per_window.is_empty() {
        String::new()
    } else {
        format!(
            " Per switchover stage (by send time): {}.",
            per_window.join("; ")
        )
    };
    let detail = format!(
        "{} sent, {} acknowledged, {} delivered, {} lost ({:.2}%), {} duplicated ({:.2}%), {} out of order; measured RPO {:.0} ms{lat}. Per phase: {}.{stages} {}",
        g("sent"),
        acked,
        g("delivered"),
        g("lost"),
        100.0 * g("loss_rate"),
        g("duplicated"),
        100.0 * g("duplicate_rate"),
        g("out_of_order"),
        g("rpo_ms"),
        phases.join("; "),
        v.detail
    );
    TrafficVerdict {
        name: s.name.clone(),
        critical: s.critical,
        description: s.describe(),
        passed: Some(v.ok),
        started_ms: 0.0,
        duration_ms: 0.0,
        requests: sent.len() as u32,
        detail,
        metrics: m,
    }
}

/// Per message sent: how many copies the sinks hold and the first receive time.
fn copies(sent: &[Sent], received: &[Received]) -> HashMap<u64, (u64, Option<f64>)> {
    let mut copies: HashMap<u64, (u64, Option<f64>)> = HashMap::new();
    let ours: std::collections::HashSet<u64> = sent.iter().map(|m| m.seq).collect();
    for r in received.iter().filter(|r| ours.contains(&r.seq)) {
        let e = copies.entry(r.seq).or_insert((0, None));
        e.0 += 1;
        if let Some(t) = r.at_ms {
            e.1 = Some(e.1.map_or(t, |x: f64| x.min(t)));
        }
    }
    copies
}

/// The figures of each window (`stage<k>.sent`, `.lost`, `.duplicated`, `.p95_ms`,
/// k from 1) into `m`, and a sentence per window. A message belongs to the window
/// its send time falls in.
fn window_figures(
    sent: &[Sent],
    received: &[Received],
    windows: &[Window],
    m: &mut BTreeMap<String, f64>,
) -> Vec<String> {
    if windows.is_empty() {
        return Vec::new();
    }
    let copies = copies(sent, received);
    let mut out = Vec::new();
    for (k, w) in windows.iter().enumerate() {
        let (mut n, mut lost, mut dup) = (0u64, 0u64, 0u64);
        let mut lat = Vec::new();
        for msg in sent
            .iter()
            .filter(|x| x.sent_ms >= w.from_unix_ms && x.sent_ms < w.to_unix_ms)
        {
            n += 1;
            match copies.get(&msg.seq) {
                Some((c, at)) => {
                    dup += c - 1;
                    if let Some(t) = at {
                        lat.push((t - msg.sent_ms).max(0.0));
                    }
                }
                None => lost += u64::from(msg.acked_ms.is_some()),
            }
        }
        lat.sort_by(f64::total_cmp);
        let key = |f: &str| format!("stage{}.{f}", k + 1);
        m.insert(key("sent"), n as f64);
        m.insert(key("lost"), lost as f64);
        m.insert(key("duplicated"), dup as f64);
        let p95 = percentile(&lat, 0.95);
        if let Some(p) = p95 {
            m.insert(key("p95_ms"), p);
        }
        out.push(format!(
            "{} for {:.1} s: {n} sent, {lost} lost, {dup} duplicated{}",
            w.label,
            (w.to_unix_ms - w.from_unix_ms).max(0.0) / 1000.0,
            p95.map(|p| format!(", p95 {p:.1} ms")).unwrap_or_default()
        ));
    }
    out
}

/// Every figure of a delivery entry (see the module doc).
pub fn figures(sent: &[Sent], received: &[Received]) -> BTreeMap<String, f64> {
    let copies = copies(sent, received);
    let mut m = BTreeMap::new();
    let mut phase_lat: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut all_lat = Vec::new();
    let (mut acked, mut lost, mut dup, mut delivered) = (0u64, 0u64, 0u64, 0u64);
    let (mut lost_from, mut lost_to) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut per: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    for msg in sent {
        let b = bucket(msg.phase);
        let slot = per.entry(b).or_default();
        slot[0] += 1;
        acked += msg.acked_ms.is_some() as u64;
        match copies.get(&msg.seq) {
            Some((n, at)) => {
                delivered += 1;
                dup += n - 1;
                slot[2] += n - 1;
                if let Some(t) = at {
                    let l = (t - msg.sent_ms).max(0.0);
                    all_lat.push(l);
                    phase_lat.entry(b).or_default().push(l);
                }
            }
            None => {
                if let Some(a) = msg.acked_ms {
                    lost += 1;
                    slot[1] += 1;
                    lost_from = lost_from.min(msg.sent_ms);
                    lost_to = lost_to.max(a);
                }
            }
        }
    }
    // Out of order: a message first received before one sent earlier than it.
    let mut latest = f64::NEG_INFINITY;
    let mut ooo = 0u64;
    let mut firsts = Vec::new();
    for msg in sent {
        if let Some((_, Some(t))) = copies.get(&msg.seq) {
            if *t < latest {
                ooo += 1;
            }
            latest = latest.max(*t);
            firsts.push(*t);
        }
    }
    firsts.sort_by(f64::total_cmp);
    let gap = firsts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    let n = sent.len() as u64;
    m.insert("sent".into(), n as f64);
    m.insert("acknowledged".into(), acked as f64);
    m.insert("unacknowledged".into(), (n - acked) as f64);
    m.insert("delivered".into(), delivered as f64);
    m.insert("lost".into(), lost as f64);
    m.insert("duplicated".into(), dup as f64);
    m.insert("out_of_order".into(), ooo as f64);
    m.insert(
        "loss_rate".into(),
        if acked > 0 {
            lost as f64 / acked as f64
        } else {
            0.0
        },
    );
    m.insert(
        "duplicate_rate".into(),
        if delivered > 0 {
            dup as f64 / delivered as f64
        } else {
            0.0
        },
    );
    m.insert(
        "rpo_ms".into(),
        if lost > 0 {
            (lost_to - lost_from).max(0.0)
        } else {
            0.0
        },
    );
    if !firsts.is_empty() {
        m.insert("max_delivery_gap_ms".into(), gap);
    }
    let mut put_lat = |prefix: &str, v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        for (k, q) in [
            ("p50_ms", 0.5),
            ("p95_ms", 0.95),
            ("p99_ms", 0.99),
            ("max_ms", 1.0),
        ] {
            if let Some(x) = percentile(v, q) {
                m.insert(format!("{prefix}{k}"), x);
            }
        }
    };
    put_lat("", &mut all_lat);
    for (b, v) in phase_lat.iter_mut() {
        put_lat(&format!("{b}."), v);
    }
    for (b, [s, l, d]) in per {
        m.insert(format!("{b}.sent"), s as f64);
        m.insert(format!("{b}.lost"), l as f64);
        m.insert(format!("{b}.duplicated"), d as f64);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(seq: u64, t: f64, acked: bool, phase: Phase) -> Sent {
        Sent {
            seq,
            sent_ms: t,
            acked_ms: acked.then_some(t + 1.0),
            phase: Some(phase),
        }
    }

    #[test]
    fn ids_are_found_inside_text_and_other_runs_ignored() {
        let p = "fdabc";
        let t = format!("drill {} and fdzzz-0000009", message_id(p, 42));
        assert_eq!(seqs_in(&t, p), vec![42]);
        let sink: DeliverySink = serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:1/", "items": "$.messages[*]", "id": "$.content", "received_ms": "$.at"
        }))
        .unwrap();
        let body = serde_json::json!({ "messages": [
            { "content": format!("x {}", message_id(p, 1)), "at": 10.0 },
            { "content": "fdother-0000001", "at": 11.0 },
            { "content": message_id(p, 2) }
        ]});
        let r = extract(&sink, &body, p).unwrap();
        assert_eq!(
            r,
            vec![
                Received {
                    seq: 1,
                    at_ms: Some(10.0)
                },
                Received {
                    seq: 2,
                    at_ms: None
                }
            ]
        );
    }

    #[test]
    fn loss_duplicates_order_and_rpo() {
        // 1..=10 sent 100 ms apart; 4 and 5 acknowledged but lost; 7 not acknowledged
        // and lost (not counted as lost: never promised); 2 delivered twice; 9 arrives
        // before 8.
        let s: Vec<Sent> = (1..=10)
            .map(|i| {
                let ph = if i <= 3 {
                    Phase::Precheck
                } else {
                    Phase::Fault
                };
                sent(i, 1000.0 + 100.0 * i as f64, i != 7, ph)
            })
            .collect();
        let mut r = Vec::new();
        for i in [1u64, 2, 2, 3, 6, 9, 8, 10] {
            let at = match i {
                8 => 1930.0,
                _ => 1000.0 + 100.0 * i as f64 + 20.0,
            };
            r.push(Received {
                seq: i,
                at_ms: Some(at),
            });
        }
        let m = figures(&s, &r);
        assert_eq!(m["sent"], 10.0);
        assert_eq!(m["acknowledged"], 9.0);
        assert_eq!(m["delivered"], 7.0);
        assert_eq!(m["lost"], 2.0);
        assert_eq!(m["duplicated"], 1.0);
        assert_eq!(m["out_of_order"], 1.0);
        assert!((m["loss_rate"] - 2.0 / 9.0).abs() < 1e-12);
        assert!((m["duplicate_rate"] - 1.0 / 7.0).abs() < 1e-12);
        // From the send of 4 (1400) to the acknowledgement of 5 (1501).
        assert_eq!(m["rpo_ms"], 101.0);
        assert_eq!(m["before.sent"], 3.0);
        assert_eq!(m["during.lost"], 2.0);
        assert_eq!(m["before.duplicated"], 1.0);
        assert_eq!(m["p50_ms"], 20.0);
    }

    /// Each message counts in the window its send time falls in: losses and copies
    /// show up in the stage where they were sent, and a message outside every
    /// window counts in none.
    #[test]
    fn switchover_stages_break_the_figures_down_by_send_time() {
        // 1..=10 sent at 1100..=2000; stage 1 [1000, 1500), stage 2 [1500, 1900).
        let s: Vec<Sent> = (1..=10)
            .map(|i| sent(i, 1000.0 + 100.0 * i as f64, true, Phase::Fault))
            .collect();
        // 6 and 7 lost (stage 2), 2 twice (stage 1), 10 (after both) delivered.
        let r: Vec<Received> = [1u64, 2, 2, 3, 4, 5, 8, 9, 10]
            .iter()
            .map(|&i| Received {
                seq: i,
                at_ms: Some(1000.0 + 100.0 * i as f64 + if i < 5 { 10.0 } else { 40.0 }),
            })
            .collect();
        let w = |label: &str, a: f64, b: f64| Window {
            label: label.into(),
            from_unix_ms: a,
            to_unix_ms: b,
        };
        let windows = [
            w("stage 1 of 2 (10%)", 1000.0, 1500.0),
            w("stage 2 of 2 (100%)", 1500.0, 1900.0),
        ];
        let step: DeliveryStep = serde_json::from_value(serde_json::json!({
            "name": "d",
            "send": { "url": "http://127.0.0.1:1/send", "body": "{\"id\":\"${id}\"}", "rate": 10 },
            "sinks": [{ "url": "http://127.0.0.1:1/m", "items": "$[*]" }],
        }))
        .unwrap();
        let v = judge(&step, &s, &r, &windows);
        let m = &v.metrics;
        assert_eq!(m["stage1.sent"], 4.0, "{m:?}"); // 1100..1400
        assert_eq!(m["stage1.lost"], 0.0);
        assert_eq!(m["stage1.duplicated"], 1.0);
        assert_eq!(m["stage1.p95_ms"], 10.0);
        assert_eq!(m["stage2.sent"], 4.0); // 1500..1800
        assert_eq!(m["stage2.lost"], 2.0);
        assert_eq!(m["stage2.duplicated"], 0.0);
        assert_eq!(m["stage2.p95_ms"], 40.0);
        // The whole-entry figures are unchanged by the windows.
        assert_eq!(m["sent"], 10.0);
        assert_eq!(m["lost"], 2.0);
        assert!(
            v.detail.contains(
                "stage 2 of 2 (100%) for 0.4 s: 4 sent, 2 lost, 0 duplicated, p95 40.0 ms"
            ),
            "{}",
            v.detail
        );
        // Without windows: no stage figures, no stage sentence.
        let v = judge(&step, &s, &r, &[]);
        assert!(!v.metrics.contains_key("stage1.sent"));
        assert!(!v.detail.contains("switchover"), "{}", v.detail);
    }

    #[test]
    fn nothing_lost_means_rpo_zero_and_expectations_hold() {
        let step: DeliveryStep = serde_json::from_value(serde_json::json!({
            "name": "d",
            "send": { "url": "http://127.0.0.1:1/send", "body": "{\"id\":\"${id}\"}", "rate": 10 },
            "sinks": [{ "url": "http://127.0.0.1:1/m", "items": "$[*]" }],
            "expect": { "metrics": { "loss_rate": { "eq": 0 }, "rpo_ms": { "le": 0 }, "duplicate_rate": { "le": 0.001 } } }
        }))
        .unwrap();
        assert!(step.validate().is_empty(), "{:?}", step.validate());
        let s: Vec<Sent> = (1..=5)
            .map(|i| sent(i, i as f64, true, Phase::Fault))
            .collect();
        let r: Vec<Received> = (1..=5)
            .map(|i| Received {
                seq: i,
                at_ms: None,
            })
            .collect();
        let v = judge(&step, &s, &r, &[]);
        assert_eq!(v.passed, Some(true), "{}", v.detail);
        assert_eq!(v.metrics["rpo_ms"], 0.0);
        let v = judge(&step, &s, &r[..4], &[]);
        assert_eq!(v.passed, Some(false), "{}", v.detail);
        assert!(v.detail.contains("1 lost"), "{}", v.detail);
    }

    #[test]
    fn a_template_without_the_id_is_rejected() {
        let step: DeliveryStep = serde_json::from_value(serde_json::json!({
            "name": "d",
            "send": { "url": "http://127.0.0.1:1/send", "body": "{}", "rate": 10 },
            "sinks": []
        }))
        .unwrap();
        let paths: Vec<String> = step.validate().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, vec!["send".to_string(), "sinks".to_string()]);
    }
}
