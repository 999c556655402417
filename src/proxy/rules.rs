//! `http_fault` rules: which requests (method, path prefix or glob), what to do
//! with them (canned response, token-bucket rate limit, reset, delay), how often.
//!
//! Rules are tried in order; the first whose `match` fits the request decides. Its
//! probability roll then says whether the action applies; when it does not, the
//! request is forwarded untouched (a miss does not fall through to later rules, so
//! each rule's share is exactly what it says).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::latency::{Distribution, Toxic};
use super::profiles;
use crate::duration::HumanDuration;

/// One rule: which requests, what to do, how often.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Which requests the rule applies to; omitted, it matches every request.
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// What to do with a matching request.
    pub action: Action,
    /// Share of matching requests the action applies to, from 0 to 1 (default 1); the others are forwarded untouched.
    #[serde(default)]
    pub probability: Option<f64>,
    /// The same share in percent, from 0 to 100. Give `probability` or `percentage`, not both.
    #[serde(default)]
    pub percentage: Option<f64>,
}

/// A request matcher; every given field must match.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// HTTP method, case-insensitive (`POST`); omitted, any method.
    #[serde(default)]
    pub method: Option<String>,
    /// Path without the query string: a prefix (`/cgi-bin/message/`), or a glob over the whole path when it contains `*` or `?` (`/cgi-bin/*/send`).
    #[serde(default)]
    pub path: Option<String>,
}

/// What a rule does to a matching request.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Answer with this fixed response; the request never reaches the upstream.
    Respond(FixedResponse),
    /// Answer with an entry of the response-profile table, by name (e.g. `wecom_busy`, `http_503`).
    Profile(String),
    /// WeCom quota: a token bucket of `requests` per `per`; requests beyond it get HTTP 200 + `{"errcode":45009,...}`.
    WecomRateLimit(Bucket),
    /// A token bucket of `requests` per `per` with any profile as the over-limit answer.
    RateLimit(ProfileBucket),
    /// WeCom access_token expired: HTTP 200 + `{"errcode":42001,...}`; the client must refresh its token.
    WecomTokenExpired,
    /// WeCom system busy: HTTP 200 + `{"errcode":-1,...}`.
    WecomBusy,
    /// HTTP 429 Too Many Requests with a `Retry-After` header.
    #[serde(rename = "http_429")]
    Http429(Retry),
    /// Reset the connection (RST: SO_LINGER 0, then close) without answering.
    Abort,
    /// Forward the request after a delay (fixed plus jitter).
    Delay(DelaySpec),
    /// Switchover: send the request to another upstream (`to`) instead, for the rule's share of matching requests, or for a share that grows in `stages`.
    Reroute(Reroute),
}

/// Where `reroute` sends requests, and how the share grows.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reroute {
    /// The alternate upstream, `ip:port` (plain HTTP).
    pub to: String,
    /// A staged switchover: each stage sends its `percentage` of the matching requests to `to` for its `hold`, counted from the fault taking effect; the last stage then stays. Without stages, the rule's `percentage`/`probability` is the share (default all).
    #[serde(default)]
    pub stages: Vec<Stage>,
}

/// One stage of a staged switchover.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Share of the matching requests sent to the alternate upstream, 0 to 100.
    pub percentage: f64,
    /// How long the stage lasts before the next one starts.
    pub hold: HumanDuration,
}

impl Reroute {
    /// The stage in effect `elapsed` after the start: its index and share (0..=1).
    pub fn stage_at(&self, elapsed: Duration) -> Option<(usize, f64)> {
        let mut end = Duration::ZERO;
        for (i, s) in self.stages.iter().enumerate() {
            end += s.hold.0;
            if elapsed < end || i + 1 == self.stages.len() {
                return Some((i, s.percentage / 100.0));
            }
        }
        None
    }
}

/// A fixed HTTP response.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FixedResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (`content-length` is computed).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response body.
    #[serde(default)]
    pub body: String,
}

/// A token bucket: `requests` per `per`, refilled continuously, starting full.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Requests allowed per interval (also the burst size).
    pub requests: u32,
    /// The interval.
    #[serde(default = "one_second")]
    pub per: HumanDuration,
}

/// A token bucket with a chosen over-limit answer.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProfileBucket {
    /// Requests allowed per interval (also the burst size).
    pub requests: u32,
    /// The interval.
    #[serde(default = "one_second")]
    pub per: HumanDuration,
    /// Profile answered beyond the limit (default `http_429`).
    #[serde(default = "http_429")]
    pub profile: String,
}

/// Parameters of `http_429`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Value of the `Retry-After` header, rounded up to whole seconds.
    #[serde(default = "one_second")]
    pub retry_after: HumanDuration,
}

/// A delay: fixed plus jitter.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DelaySpec {
    /// Fixed delay.
    pub delay: HumanDuration,
    /// Spread around the fixed delay (see `distribution`).
    #[serde(default)]
    pub jitter: HumanDuration,
    /// `uniform` (± jitter) or `normal` (σ = jitter, cut at ±3σ).
    #[serde(default)]
    pub distribution: Distribution,
}

fn one_second() -> HumanDuration {
    HumanDuration::from_millis(1000)
}

fn http_429() -> String {
    "http_429".into()
}

impl DelaySpec {
    pub(crate) fn toxic(&self) -> Toxic {
        Toxic {
            delay: self.delay.0,
            jitter: self.jitter.0,
            distribution: self.distribution,
            probability: 1.0,
        }
    }
}

impl Rule {
    /// Share of matching requests hit, 0..=1.
    pub fn share(&self) -> f64 {
        match (self.probability, self.percentage) {
            (Some(p), _) => p,
            (None, Some(p)) => p / 100.0,
            (None, None) => 1.0,
        }
    }

    /// Static checks: `(path relative to the rule, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.probability.is_some() && self.percentage.is_some() {
            errs.push((
                "percentage".into(),
                "found both `probability` and `percentage`, expected one of them".into(),
            ));
        }
        if let Some(p) = self.probability
            && !(0.0..=1.0).contains(&p)
        {
            errs.push((
                "probability".into(),
                format!("found {p}, expected a share from 0 to 1"),
            ));
        }
        if let Some(p) = self.percentage
            && !(0.0..=100.0).contains(&p)
        {
            errs.push((
                "percentage".into(),
                format!("found {p}, expected a percentage from 0 to 100"),
            ));
        }
        if let Some(m) = &self.matcher.method
            && (m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            errs.push((
                "match.method".into(),
                format!("found `{m}`, expected an HTTP method such as GET or POST"),
            ));
        }
        if let Some(p) = &self.matcher.path
            && !p.starts_with('/')
            && !p.starts_with('*')
        {
            errs.push((
                "match.path".into(),
                format!(
                    "found `{p}`, expected a path starting with `/` (or a glob starting with `*`)"
                ),
            ));
        }
        let bucket =
            |requests: u32, per: HumanDuration, errs: &mut Vec<(String, String)>, at: &str| {
                if requests == 0 {
                    errs.push((
                    format!("action.{at}.requests"),
                    "found 0, expected at least 1 (use a profile action to reject every request)"
                        .into(),
                ));
                }
                if per.0.is_zero() {
                    errs.push((
                        format!("action.{at}.per"),
                        "found `0s`, expected a positive interval".into(),
                    ));
                }
            };
        match &self.action {
            Action::Respond(r) => {
                if !(100..=599).contains(&r.status) {
                    errs.push((
                        "action.respond.status".into(),
                        format!(
                            "found {}, expected an HTTP status from 100 to 599",
                            r.status
                        ),
                    ));
                }
                for (k, v) in &r.headers {
                    let bad = k.is_empty()
                        || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                        || v.bytes().any(|b| b == b'\r' || b == b'\n');
                    if bad {
                        errs.push((
                            format!("action.respond.headers.{k}"),
                            "found an invalid header name or value".into(),
                        ));
                    }
                }
            }
            Action::Profile(name) => {
                if profiles::find(name).is_none() {
                    errs.push((
                        "action.profile".into(),
                        format!(
                            "found `{name}`, expected one of the profiles: {}",
                            profiles::names()
                        ),
                    ));
                }
            }
            Action::WecomRateLimit(b) => bucket(b.requests, b.per, &mut errs, "wecom_rate_limit"),
            Action::RateLimit(b) => {
                bucket(b.requests, b.per, &mut errs, "rate_limit");
                if profiles::find(&b.profile).is_none() {
                    errs.push((
                        "action.rate_limit.profile".into(),
                        format!(
                            "found `{}`, expected one of the profiles: {}",
                            b.profile,
                            profiles::names()
                        ),
                    ));
                }
            }
            Action::Delay(d) => {
                if d.delay.0 > Duration::from_secs(600) {
                    errs.push((
                        "action.delay.delay".into(),
                        format!("found {}, expected at most 10m", d.delay),
                    ));
                }
            }
            Action::Reroute(r) => {
                if r.to.parse::<std::net::SocketAddr>().is_err() {
                    errs.push((
                        "action.reroute.to".into(),
                        format!("found `{}`, expected an `ip:port` address", r.to),
                    ));
                }
                if !r.stages.is_empty() && (self.probability.is_some() || self.percentage.is_some())
                {
                    errs.push((
                        "action.reroute.stages".into(),
                        "found stages and a rule share, expected one of them (each stage has its percentage)".into(),
                    ));
                }
                for (i, s) in r.stages.iter().enumerate() {
                    if !(0.0..=100.0).contains(&s.percentage) {
                        errs.push((
                            format!("action.reroute.stages[{i}].percentage"),
                            format!(
                                "found {}, expected a percentage from 0 to 100",
                                s.percentage
                            ),
                        ));
                    }
                    if s.hold.0.is_zero() {
                        errs.push((
                            format!("action.reroute.stages[{i}].hold"),
                            "found `0s`, expected a positive duration".into(),
                        ));
                    }
                }
            }
            Action::WecomTokenExpired | Action::WecomBusy | Action::Http429(_) | Action::Abort => {}
        }
        errs
    }

    /// In words, for `plan` and reports.
    pub fn describe(&self) -> String {
        let who = match (&self.matcher.method, &self.matcher.path) {
            (None, None) => "every request".to_string(),
            (m, p) => format!(
                "{} {}",
                m.as_deref().unwrap_or("*").to_uppercase(),
                p.as_deref().unwrap_or("/*")
            ),
        };
        let what = match &self.action {
            Action::Respond(r) => format!("answer {}", r.status),
            Action::Profile(p) => format!("answer profile {p}"),
            Action::WecomRateLimit(b) => {
                format!("WeCom rate limit {} per {} (then 45009)", b.requests, b.per)
            }
            Action::RateLimit(b) => format!(
                "rate limit {} per {} (then {})",
                b.requests, b.per, b.profile
            ),
            Action::WecomTokenExpired => "answer WeCom 42001 (token expired)".into(),
            Action::WecomBusy => "answer WeCom -1 (system busy)".into(),
            Action::Http429(r) => format!("answer 429, Retry-After {}", r.retry_after),
            Action::Abort => "reset the connection".into(),
            Action::Delay(d) => format!("delay {}", d.toxic().describe()),
            Action::Reroute(r) if r.stages.is_empty() => format!("reroute to {}", r.to),
            Action::Reroute(r) => format!(
                "reroute to {} in stages {}",
                r.to,
                r.stages
                    .iter()
                    .map(|s| format!("{}% for {}", s.percentage, s.hold))
                    .collect::<Vec<_>>()
                    .join(" → ")
            ),
        };
        let share = self.share();
        if share < 1.0 {
            format!("{who}: {what} ({:.1}% of them)", share * 100.0)
        } else {
            format!("{who}: {what}")
        }
    }
}

/// What the proxy does with one request.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    /// Forward untouched.
    Forward,
    /// Forward once this much time has passed since the request was read.
    Delay(Duration),
    /// Answer with these bytes (a complete response); the upstream never sees it.
    Respond(Vec<u8>),
    /// Reset the client connection.
    Abort,
    /// Forward to this other upstream instead.
    Reroute(std::net::SocketAddr),
}

/// A rule ready to run: compiled matcher, live bucket, counters.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub rule: Rule,
    bucket: Option<Mutex<TokenBucket>>,
    /// Requests that matched.
    pub matched: AtomicU64,
    /// Requests the action was applied to (for rate limits: the ones rejected).
    pub applied: AtomicU64,
    /// When the rule started to apply (a staged reroute counts its stages from here).
    pub started: Instant,
}

#[derive(Debug)]
struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(requests: u32, per: Duration) -> Self {
        TokenBucket {
            capacity: requests as f64,
            tokens: requests as f64,
            per_sec: requests as f64 / per.as_secs_f64(),
            last: Instant::now(),
        }
    }
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Compiled {
    pub(crate) fn new(rule: Rule) -> Self {
        let bucket = match &rule.action {
            Action::WecomRateLimit(b) => Some(TokenBucket::new(b.requests, b.per.0)),
            Action::RateLimit(b) => Some(TokenBucket::new(b.requests, b.per.0)),
            _ => None,
        };
        Compiled {
            rule,
            bucket: bucket.map(Mutex::new),
            matched: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// For a staged reroute: the stage in effect now, `(index, share)`.
    pub(crate) fn stage(&self) -> Option<(usize, f64)> {
        match &self.rule.action {
            Action::Reroute(r) => r.stage_at(self.started.elapsed()),
            _ => None,
        }
    }

    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        let m = &self.rule.matcher;
        if m.method
            .as_deref()
            .is_some_and(|want| !want.eq_ignore_ascii_case(method))
        {
            return false;
        }
        let path = path.split('?').next().unwrap_or(path);
        match m.path.as_deref() {
            None => true,
            Some(p) if p.contains(['*', '?']) => glob(p.as_bytes(), path.as_bytes()),
            Some(p) => path.starts_with(p),
        }
    }

    /// Decides for one matching request (counts it).
    pub(crate) fn decide(&self) -> Decision {
        self.matched.fetch_add(1, Relaxed);
        let share = self.stage().map_or(self.rule.share(), |(_, s)| s);
        if share < 1.0 && fastrand::f64() >= share {
            return Decision::Forward;
        }
        let canned = |name: &str, extra: &[(String, String)]| {
            Decision::Respond(
                profiles::find(name)
                    .map(|p| p.response(extra))
                    .unwrap_or_else(|| profiles::render(500, &[], b"unknown profile")),
            )
        };
        let d = match &self.rule.action {
            Action::WecomRateLimit(_) | Action::RateLimit(_) => {
                let allowed = self
                    .bucket
                    .as_ref()
                    .is_some_and(|b| b.lock().unwrap().take(Instant::now()));
                if allowed {
                    return Decision::Forward;
                }
                match &self.rule.action {
                    Action::RateLimit(b) => canned(&b.profile, &[]),
                    _ => canned("wecom_rate_limit", &[]),
                }
            }
            Action::Respond(r) => {
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Decision::Respond(profiles::render(r.status, &headers, r.body.as_bytes()))
            }
            Action::Profile(p) => canned(p, &[]),
            Action::WecomTokenExpired => canned("wecom_token_expired", &[]),
            Action::WecomBusy => canned("wecom_busy", &[]),
            Action::Http429(r) => {
                let secs = r.retry_after.0.as_secs_f64().ceil() as u64;
                canned("http_429", &[("retry-after".into(), secs.to_string())])
            }
            Action::Abort => Decision::Abort,
            Action::Delay(d) => match d.toxic().sample() {
                Some(t) => Decision::Delay(t),
                None => Decision::Forward,
            },
            // Validated as `ip:port`; an unparsable one is forwarded untouched.
            Action::Reroute(r) => match r.to.parse() {
                Ok(a) => Decision::Reroute(a),
                Err(_) => return Decision::Forward,
            },
        };
        self.applied.fetch_add(1, Relaxed);
        d
    }
}

/// Glob over bytes: `*` any run (including `/`), `?` one byte.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Rule {
        serde_json::from_value(serde_yaml::from_str::<serde_json::Value>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn globs_and_prefixes() {
        assert!(glob(b"/cgi-bin/*/send", b"/cgi-bin/message/send"));
        assert!(!glob(b"/cgi-bin/*/send", b"/cgi-bin/message/sendx"));
        assert!(glob(b"/a?c*", b"/abc/def"));
        let r = Compiled::new(rule(
            "{ match: { method: post, path: /cgi-bin/message/ }, action: wecom_busy }",
        ));
        assert!(r.matches("POST", "/cgi-bin/message/send?access_token=x"));
        assert!(!r.matches("GET", "/cgi-bin/message/send"));
        assert!(!r.matches("POST", "/cgi-bin/gettoken"));
    }

    #[test]
    fn action_forms_parse() {
        let r = rule("{ action: { wecom_rate_limit: { requests: 5, per: 1s } } }");
        assert!(matches!(
            r.action,
            Action::WecomRateLimit(Bucket { requests: 5, .. })
        ));
        let r = rule("{ action: abort, percentage: 50 }");
        assert_eq!(r.share(), 0.5);
        let r = rule("{ action: { respond: { status: 503, body: down } } }");
        assert!(r.validate().is_empty());
        let r = rule("{ action: { profile: nope }, probability: 2 }");
        let errs = r.validate();
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn token_bucket_refills_continuously() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5, Duration::from_secs(1));
        b.last = t0;
        assert_eq!((0..10).filter(|_| b.take(t0)).count(), 5);
        assert!(!b.take(t0 + Duration::from_millis(100)));
        assert!(b.take(t0 + Duration::from_millis(300)));
    }

    #[test]
    fn probability_zero_never_applies() {
        let r = Compiled::new(rule("{ action: wecom_busy, probability: 0 }"));
        assert!((0..100).all(|_| r.decide() == Decision::Forward));
        assert_eq!(r.applied.load(Relaxed), 0);
        assert_eq!(r.matched.load(Relaxed), 100);
    }

    #[test]
    fn reroute_stages_follow_the_clock_and_validate() {
        let r: Reroute = serde_json::from_value(serde_json::json!({
            "to": "127.0.0.1:9",
            "stages": [{ "percentage": 0, "hold": "2s" }, { "percentage": 10, "hold": "2s" }, { "percentage": 100, "hold": "1s" }]
        }))
        .unwrap();
        let at = |ms| r.stage_at(Duration::from_millis(ms));
        assert_eq!(at(0), Some((0, 0.0)));
        assert_eq!(at(2500), Some((1, 0.1)));
        assert_eq!(at(4100), Some((2, 1.0)));
        assert_eq!(at(60_000), Some((2, 1.0)), "the last stage stays");
        let rule = Rule {
            matcher: Match::default(),
            action: Action::Reroute(r.clone()),
            probability: None,
            percentage: Some(50.0),
        };
        let paths: Vec<String> = rule.validate().into_iter().map(|e| e.0).collect();
        assert_eq!(paths, ["action.reroute.stages"]);
        // Stage 0 (0%) forwards everything; a static reroute sends every request away.
        let c = Compiled::new(Rule {
            percentage: None,
            ..rule
        });
        assert!((0..50).all(|_| c.decide() == Decision::Forward));
        let all = Compiled::new(Rule {
            matcher: Match::default(),
            action: Action::Reroute(Reroute {
                to: "127.0.0.1:9".into(),
                stages: vec![],
            }),
            probability: None,
            percentage: None,
        });
        assert_eq!(
            all.decide(),
            Decision::Reroute("127.0.0.1:9".parse().unwrap())
        );
    }
}
