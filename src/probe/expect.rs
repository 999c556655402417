//! Expectations: what an observation must show.
//!
//! An empty `expect` means "the probe succeeded": no transport error, HTTP status
//! below 400, exit code 0. Every condition that is written must hold; the verdict
//! lists each condition with what was found, so a report reader sees *why*.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::Observation;
use crate::duration::HumanDuration;

/// Conditions on an observation; all written conditions must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// HTTP status: a code (`200`), a list (`[200, 204]`) or a class (`"2xx"`).
    #[serde(default)]
    pub status: Option<StatusMatch>,
    /// The HTTP body contains this text.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// The HTTP body matches this regular expression.
    #[serde(default)]
    pub body_regex: Option<String>,
    /// Conditions on JSON fields of the HTTP body: one or a list of `{ path, eq|ne|lt|le|gt|ge|exists }`.
    #[serde(default)]
    pub json: Option<OneOrMany<JsonCheck>>,
    /// The observation took less than this (request round trip, connect time).
    #[serde(default)]
    pub max_latency: Option<HumanDuration>,
    /// The command exited with this code.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The command's standard output contains this text.
    #[serde(default)]
    pub stdout_contains: Option<String>,
    /// The command's standard output matches this regular expression.
    #[serde(default)]
    pub stdout_regex: Option<String>,
    /// `true`: the target must answer (default). `false`: the probe must FAIL to connect
    /// or get an answer (e.g. to prove a partition blocks traffic).
    #[serde(default)]
    pub reachable: Option<bool>,
    /// Conditions on the probe's figures, by name (e.g. the traffic probe's `success_rate`, `p95_ms`): `{ success_rate: { ge: 0.995 }, p95_ms: { le: 200 } }`.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricCheck>,
    /// Conditions on JSON fields of the command's standard output, same form as `json`: one or a list of `{ path, eq|ne|lt|le|gt|ge|exists }`, e.g. `{ path: $.lag_s, lt: 2 }`.
    #[serde(default)]
    pub stdout_json: Option<OneOrMany<JsonCheck>>,
    /// A number taken from the command's standard output by a regular expression (its first capture group, read as a decimal number) and compared: `{ regex: 'lag=([0-9.]+)', lt: 2 }`.
    #[serde(default)]
    pub stdout_number: Option<NumberCheck>,
}

/// A number extracted from text by the first capture group of `regex`, compared with
/// every bound given.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NumberCheck {
    /// Regular expression with at least one capture group; the first group's text of the first match is read as a number (e.g. `'lag=([0-9.]+)'`).
    pub regex: String,
    /// The number equals this.
    #[serde(default)]
    pub eq: Option<f64>,
    /// The number is below this.
    #[serde(default)]
    pub lt: Option<f64>,
    /// The number is at most this.
    #[serde(default)]
    pub le: Option<f64>,
    /// The number is above this.
    #[serde(default)]
    pub gt: Option<f64>,
    /// The number is at least this.
    #[serde(default)]
    pub ge: Option<f64>,
}

impl NumberCheck {
    fn bounds(&self) -> MetricCheck {
        MetricCheck {
            eq: self.eq,
            lt: self.lt,
            le: self.le,
            gt: self.gt,
            ge: self.ge,
        }
    }
}

/// Comparisons on one number of `Observation.metrics`; every one given must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricCheck {
    /// The figure equals this.
    #[serde(default)]
    pub eq: Option<f64>,
    /// The figure is below this.
    #[serde(default)]
    pub lt: Option<f64>,
    /// The figure is at most this.
    #[serde(default)]
    pub le: Option<f64>,
    /// The figure is above this.
    #[serde(default)]
    pub gt: Option<f64>,
    /// The figure is at least this.
    #[serde(default)]
    pub ge: Option<f64>,
}

impl MetricCheck {
    fn comparisons(&self) -> Vec<(&'static str, f64, fn(f64, f64) -> bool)> {
        let mut out: Vec<(&'static str, f64, fn(f64, f64) -> bool)> = Vec::new();
        if let Some(b) = self.eq {
            out.push(("==", b, |a, b| a == b));
        }
        if let Some(b) = self.lt {
            out.push(("<", b, |a, b| a < b));
        }
        if let Some(b) = self.le {
            out.push(("<=", b, |a, b| a <= b));
        }
        if let Some(b) = self.gt {
            out.push((">", b, |a, b| a > b));
        }
        if let Some(b) = self.ge {
            out.push((">=", b, |a, b| a >= b));
        }
        out
    }
}

/// One value or a list of values.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list of values.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let one = g.subschema_for::<T>();
        json_schema!({ "anyOf": [ one.clone(), { "type": "array", "items": one } ] })
    }
}

/// An HTTP status condition.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum StatusMatch {
    /// Exactly this code.
    Code(u16),
    /// Any of these codes.
    Codes(Vec<u16>),
    /// A class such as `2xx` or `5xx`.
    Class(String),
}

impl<'de> Deserialize<'de> for StatusMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_yaml::Value::deserialize(d)?;
        match &v {
            serde_yaml::Value::Number(n) => match n.as_u64() {
                Some(c @ 100..=599) => Ok(StatusMatch::Code(c as u16)),
                _ => Err(D::Error::custom(format!(
                    "found status `{n}`, expected an HTTP status code from 100 to 599"
                ))),
            },
            serde_yaml::Value::Sequence(_) => Vec::<u16>::deserialize(v)
                .map(StatusMatch::Codes)
                .map_err(D::Error::custom),
            serde_yaml::Value::String(s) => {
                let ok = s.len() == 3
                    && matches!(s.as_bytes()[0], b'1'..=b'5')
                    && s[1..].eq_ignore_ascii_case("xx");
                if ok {
                    Ok(StatusMatch::Class(s.to_ascii_lowercase()))
                } else {
                    Err(D::Error::custom(format!(
                        "found status `{s}`, expected a code like 200, a list, or a class like \"2xx\""
                    )))
                }
            }
            other => Err(D::Error::custom(format!(
                "found {}, expected a status code like 200, a list, or a class like \"2xx\"",
                crate::scenario::kind_of(other)
            ))),
        }
    }
}

impl JsonSchema for StatusMatch {
    fn schema_name() -> Cow<'static, str> {
        "StatusMatch".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A status code, a list of codes, or a class like \"2xx\".",
            "anyOf": [
                { "type": "integer", "minimum": 100, "maximum": 599 },
                { "type": "array", "items": { "type": "integer", "minimum": 100, "maximum": 599 } },
                { "type": "string", "pattern": "^[1-5][xX][xX]$" }
            ]
        })
    }
}

impl StatusMatch {
    fn matches(&self, code: u16) -> bool {
        match self {
            StatusMatch::Code(c) => *c == code,
            StatusMatch::Codes(cs) => cs.contains(&code),
            StatusMatch::Class(s) => (code / 100) as u8 == s.as_bytes()[0] - b'0',
        }
    }
    fn describe(&self) -> String {
        match self {
            StatusMatch::Code(c) => c.to_string(),
            StatusMatch::Codes(cs) => format!("{cs:?}"),
            StatusMatch::Class(s) => s.clone(),
        }
    }
}

/// A condition on one JSON value of the response body, addressed by a JSONPath
/// (RFC 9535) such as `$.error_rate` or `$.items[0].state`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonCheck {
    /// JSONPath of the value, e.g. `$.errcode`.
    pub path: String,
    /// The value equals this.
    #[serde(default)]
    pub eq: Option<Json>,
    /// The value differs from this.
    #[serde(default)]
    pub ne: Option<Json>,
    /// The value is a number below this.
    #[serde(default)]
    pub lt: Option<f64>,
    /// The value is a number at most this.
    #[serde(default)]
    pub le: Option<f64>,
    /// The value is a number above this.
    #[serde(default)]
    pub gt: Option<f64>,
    /// The value is a number at least this.
    #[serde(default)]
    pub ge: Option<f64>,
    /// `true`: the path must exist; `false`: it must not.
    #[serde(default)]
    pub exists: Option<bool>,
}

/// The outcome of evaluating an [`Expect`] against an [`Observation`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// Whether every condition held.
    pub ok: bool,
    /// One clause per condition: what was expected and what was found.
    pub detail: String,
}

impl Expect {
    /// Static checks: regexes and JSONPaths compile, comparisons are not empty.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (field, re) in [
            ("body_regex", &self.body_regex),
            ("stdout_regex", &self.stdout_regex),
        ] {
            if let Some(re) = re
                && let Err(e) = regex::Regex::new(re)
            {
                errs.push((
                    field.to_string(),
                    format!("found an invalid regular expression: {e}"),
                ));
            }
        }
        if let Some(checks) = &self.json {
            validate_json_checks("json", checks, &mut errs);
        }
        if let Some(checks) = &self.stdout_json {
            validate_json_checks("stdout_json", checks, &mut errs);
        }
        if let Some(n) = &self.stdout_number {
            match regex::Regex::new(&n.regex) {
                Err(e) => errs.push((
                    "stdout_number.regex".into(),
                    format!("found an invalid regular expression: {e}"),
                )),
                // captures_len counts the whole match as group 0.
                Ok(r) if r.captures_len() < 2 => errs.push((
                    "stdout_number.regex".into(),
                    format!(
                        "found `{}` without a capture group, expected a group around the number like `lag=([0-9.]+)`",
                        n.regex
                    ),
                )),
                Ok(_) => {}
            }
            if n.bounds().comparisons().is_empty() {
                errs.push((
                    "stdout_number".into(),
                    "found no comparison, expected one of eq, lt, le, gt, ge".into(),
                ));
            }
        }
        for (name, m) in &self.metrics {
            if m.comparisons().is_empty() {
                errs.push((
                    format!("metrics.{name}"),
                    "found no comparison, expected one of eq, lt, le, gt, ge".into(),
                ));
            }
        }
        errs
    }

    /// Decides whether `obs` satisfies every condition.
    pub fn evaluate(&self, obs: &Observation) -> Verdict {
        let mut clauses: Vec<String> = Vec::new();
        let mut ok = true;
        let mut check = |pass: bool, text: String| {
            ok &= pass;
            clauses.push(if pass { text } else { format!("FAILED {text}") });
        };

        let want_reachable = self.reachable.unwrap_or(true);
        if !want_reachable {
            // The probe must fail to get through; nothing else is meaningful.
            let blocked = obs.error.is_some();
            let found = match &obs.error {
                Some(e) => format!("blocked ({e})"),
                None => format!("reached in {}", fmt_ms(obs.latency)),
            };
            check(blocked, format!("unreachable: {found}"));
            return Verdict {
                ok,
                detail: clauses.join("; "),
            };
        }
        if let Some(e) = &obs.error {
            check(false, format!("reachable: {e}"));
            return Verdict {
                ok,
                detail: clauses.join("; "),
            };
        }

        // Unless written otherwise, an HTTP answer must be below 400 and a command must
        // exit 0: a 503 whose body happens to contain "ok" is not a success.
        if let Some(code) = obs.status {
            match &self.status {
                Some(m) => check(
                    m.matches(code),
                    format!("status {code} (expected {})", m.describe()),
                ),
                None => check(code < 400, format!("status {code} (expected < 400)")),
            }
        } else if let Some(m) = &self.status {
            check(false, format!("status: none (expected {})", m.describe()));
        }
        let is_command = obs.stdout.is_some();
        if is_command {
            let want = self.exit_code.unwrap_or(0);
            check(
                obs.exit_code == Some(want),
                format!("exit code {} (expected {want})", show_exit(obs.exit_code)),
            );
        } else if let Some(want) = self.exit_code {
            check(false, format!("exit code: none (expected {want})"));
        }
        let body = obs.body.as_deref().unwrap_or("");
        if let Some(s) = &self.body_contains {
            check(body.contains(s.as_str()), format!("body contains {s:?}"));
        }
        if let Some(re) = &self.body_regex {
            let m = regex::Regex::new(re)
                .map(|r| r.is_match(body))
                .unwrap_or(false);
            check(m, format!("body matches /{re}/"));
        }
        let stdout = obs.stdout.as_deref().unwrap_or("");
        if let Some(s) = &self.stdout_contains {
            check(
                stdout.contains(s.as_str()),
                format!("stdout contains {s:?}"),
            );
        }
        if let Some(re) = &self.stdout_regex {
            let m = regex::Regex::new(re)
                .map(|r| r.is_match(stdout))
                .unwrap_or(false);
            check(m, format!("stdout matches /{re}/"));
        }
        if let Some(max) = self.max_latency {
            check(
                obs.latency < max.0,
                format!("latency {} (expected < {max})", fmt_ms(obs.latency)),
            );
        }
        if let Some(checks) = &self.json {
            match serde_json::from_str::<Json>(body) {
                Err(e) => check(false, format!("body is JSON: {e}")),
                Ok(doc) => {
                    for c in checks.as_slice() {
                        let (pass, text) = eval_json(c, &doc);
                        check(pass, text);
                    }
                }
            }
        }
        if let Some(checks) = &self.stdout_json {
            match serde_json::from_str::<Json>(stdout) {
                Err(e) => check(false, format!("stdout is JSON: {e}")),
                Ok(doc) => {
                    for c in checks.as_slice() {
                        let (pass, text) = eval_json(c, &doc);
                        check(pass, format!("stdout {text}"));
                    }
                }
            }
        }
        if let Some(n) = &self.stdout_number {
            let (pass, text) = eval_number(n, stdout);
            check(pass, text);
        }
        for (name, m) in &self.metrics {
            let found = obs.metrics.get(name).copied();
            let want: Vec<String> = m
                .comparisons()
                .iter()
                .map(|(op, b, _)| format!("{op} {b}"))
                .collect();
            let pass = found.is_some_and(|v| m.comparisons().iter().all(|(_, b, f)| f(v, *b)));
            let shown = found.map_or_else(|| "missing".to_string(), |v| format!("{v:.4}"));
            check(
                pass,
                format!("{name} = {shown} (expected {})", want.join(" and ")),
            );
        }
        if clauses.is_empty() {
            clauses.push(format!("answered in {}", fmt_ms(obs.latency)));
        }
        Verdict {
            ok,
            detail: clauses.join("; "),
        }
    }
}

/// Checks the JSONPaths and comparisons of `json` or `stdout_json` (`field`).
fn validate_json_checks(
    field: &str,
    checks: &OneOrMany<JsonCheck>,
    errs: &mut Vec<(String, String)>,
) {
    let many = matches!(checks, OneOrMany::Many(_));
    for (i, c) in checks.as_slice().iter().enumerate() {
        let p = if many {
            format!("{field}[{i}]")
        } else {
            field.to_string()
        };
        if let Err(e) = serde_json_path::JsonPath::parse(&c.path) {
            errs.push((
                format!("{p}.path"),
                format!(
                    "found `{}`, expected a JSONPath like `$.errcode` ({e})",
                    c.path
                ),
            ));
        }
        let n = [
            c.eq.is_some(),
            c.ne.is_some(),
            c.lt.is_some(),
            c.le.is_some(),
            c.gt.is_some(),
            c.ge.is_some(),
            c.exists.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n == 0 {
            errs.push((
                p,
                "found no comparison, expected one of eq, ne, lt, le, gt, ge, exists".into(),
            ));
        }
    }
}

/// Extracts the number of `stdout_number` and compares it; the clause shows the
/// number found (or why there is none) so a failed check keeps the measured value.
fn eval_number(n: &NumberCheck, text: &str) -> (bool, String) {
    let bounds = n.bounds();
    let want: Vec<String> = bounds
        .comparisons()
        .iter()
        .map(|(op, b, _)| format!("{op} {b}"))
        .collect();
    let want = want.join(" and ");
    let Ok(re) = regex::Regex::new(&n.regex) else {
        return (false, format!("stdout number /{}/: invalid regex", n.regex));
    };
    let Some(raw) = re
        .captures(text)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().trim())
    else {
        return (
            false,
            format!("stdout number /{}/: no match (expected {want})", n.regex),
        );
    };
    match raw.parse::<f64>() {
        Err(_) => (
            false,
            format!(
                "stdout number /{}/ = {raw:?}: not a number (expected {want})",
                n.regex
            ),
        ),
        Ok(v) => (
            bounds.comparisons().iter().all(|(_, b, f)| f(v, *b)),
            format!("stdout number /{}/ = {v} (expected {want})", n.regex),
        ),
    }
}

fn show_exit(c: Option<i32>) -> String {
    c.map_or_else(|| "none (signal or timeout)".into(), |c| c.to_string())
}

pub(crate) fn fmt_ms(d: std::time::Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

fn eval_json(c: &JsonCheck, doc: &Json) -> (bool, String) {
    let Ok(path) = serde_json_path::JsonPath::parse(&c.path) else {
        return (false, format!("{}: invalid JSONPath", c.path));
    };
    let found = path.query(doc).first().cloned();
    let shown = found
        .as_ref()
        .map_or_else(|| "missing".to_string(), |v| v.to_string());
    let mut pass = true;
    let mut want = Vec::new();
    if let Some(e) = c.exists {
        pass &= found.is_some() == e;
        want.push(if e {
            "exists".to_string()
        } else {
            "absent".to_string()
        });
    }
    if let Some(eq) = &c.eq {
        pass &= found.as_ref().is_some_and(|f| json_eq(f, eq));
        want.push(format!("== {eq}"));
    }
    if let Some(ne) = &c.ne {
        pass &= !found.as_ref().is_some_and(|f| json_eq(f, ne));
        want.push(format!("!= {ne}"));
    }
    let num = found.as_ref().and_then(Json::as_f64);
    for (op, bound, f) in [
        ("<", c.lt, (|a: f64, b: f64| a < b) as fn(f64, f64) -> bool),
        ("<=", c.le, |a, b| a <= b),
        (">", c.gt, |a, b| a > b),
        (">=", c.ge, |a, b| a >= b),
    ] {
        if let Some(b) = bound {
            pass &= num.is_some_and(|n| f(n, b));
            want.push(format!("{op} {b}"));
        }
    }
    (
        pass,
        format!("{} = {shown} (expected {})", c.path, want.join(" and ")),
    )
}

/// Equality that treats `1` and `1.0` as equal and compares strings to scalars by text,
/// because YAML authors write `eq: 0` for a JSON `0` and `eq: "sms"` for `"sms"`.
fn json_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn http(status: u16, body: &str) -> Observation {
        Observation {
            latency: Duration::from_millis(12),
            status: Some(status),
            body: Some(body.into()),
            ..Default::default()
        }
    }

    fn expect(yaml: &str) -> Expect {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn empty_expect_means_success() {
        assert!(Expect::default().evaluate(&http(204, "")).ok);
        assert!(!Expect::default().evaluate(&http(503, "")).ok);
        let refused = Observation {
            error: Some("connection refused".into()),
            ..Default::default()
        };
        assert!(!Expect::default().evaluate(&refused).ok);
    }

    #[test]
    fn status_forms() {
        assert!(expect("status: 200").evaluate(&http(200, "")).ok);
        assert!(expect("status: [200, 204]").evaluate(&http(204, "")).ok);
        assert!(expect("status: 5xx").evaluate(&http(503, "")).ok);
        assert!(!expect("status: 2xx").evaluate(&http(503, "")).ok);
    }

    #[test]
    fn json_comparisons() {
        let obs = http(200, r#"{"errcode":45009,"rate":0.01,"via":"sms"}"#);
        assert!(
            expect("json: { path: $.errcode, eq: 45009 }")
                .evaluate(&obs)
                .ok
        );
        assert!(expect("json: { path: $.rate, lt: 0.05 }").evaluate(&obs).ok);
        assert!(
            expect("json: [{ path: $.via, eq: sms }, { path: $.rate, ge: 0.01 }]")
                .evaluate(&obs)
                .ok
        );
        let v = expect("json: { path: $.via, ne: sms }").evaluate(&obs);
        assert!(!v.ok);
        assert!(v.detail.contains("FAILED $.via = \"sms\""), "{}", v.detail);
        assert!(
            !expect("json: { path: $.missing, exists: true }")
                .evaluate(&obs)
                .ok
        );
    }

    #[test]
    fn unreachable_expectation() {
        let refused = Observation {
            error: Some("connection refused".into()),
            ..Default::default()
        };
        assert!(expect("reachable: false").evaluate(&refused).ok);
        assert!(!expect("reachable: false").evaluate(&http(200, "")).ok);
    }

    #[test]
    fn command_exit_and_stdout() {
        let obs = Observation {
            exit_code: Some(0),
            stdout: Some("state: active\n".into()),
            ..Default::default()
        };
        assert!(expect("stdout_contains: active").evaluate(&obs).ok);
        assert!(
            expect("stdout_regex: '^state: (active|idle)'")
                .evaluate(&obs)
                .ok
        );
        let failed = Observation {
            exit_code: Some(3),
            stdout: Some(String::new()),
            ..Default::default()
        };
        assert!(!Expect::default().evaluate(&failed).ok);
        assert!(expect("exit_code: 3").evaluate(&failed).ok);
    }

    #[test]
    fn latency_bound() {
        assert!(expect("max_latency: 50ms").evaluate(&http(200, "")).ok);
        assert!(!expect("max_latency: 5ms").evaluate(&http(200, "")).ok);
    }

    #[test]
    fn metric_conditions() {
        let e: Expect = serde_json::from_value(serde_json::json!(
            { "metrics": { "success_rate": { "ge": 0.995 }, "p95_ms": { "le": 200 } } }
        ))
        .unwrap();
        let mut obs = Observation::default();
        obs.metrics.insert("success_rate".into(), 0.999);
        obs.metrics.insert("p95_ms".into(), 150.0);
        assert!(e.evaluate(&obs).ok);
        obs.metrics.insert("p95_ms".into(), 250.0);
        let v = e.evaluate(&obs);
        assert!(!v.ok);
        assert!(v.detail.contains("FAILED p95_ms = 250"), "{}", v.detail);
        obs.metrics.clear();
        assert!(!e.evaluate(&obs).ok, "a missing figure fails");
    }

    fn cmd(stdout: &str) -> Observation {
        Observation {
            exit_code: Some(0),
            stdout: Some(stdout.into()),
            stderr: Some(String::new()),
            ..Default::default()
        }
    }

    #[test]
    fn stdout_json_holds_and_fails_with_the_value_found() {
        let e = expect("stdout_json: { path: $.lag_s, lt: 2 }");
        assert!(e.evaluate(&cmd(r#"{"lag_s": 1.5}"#)).ok);
        let v = e.evaluate(&cmd(r#"{"lag_s": 3.25}"#));
        assert!(!v.ok);
        assert!(
            v.detail
                .contains("FAILED stdout $.lag_s = 3.25 (expected < 2)"),
            "{}",
            v.detail
        );
        let many = expect("stdout_json: [{ path: $.role, eq: replica }, { path: $.lag_s, ge: 0 }]");
        assert!(many.evaluate(&cmd(r#"{"role":"replica","lag_s":0}"#)).ok);
    }

    #[test]
    fn stdout_json_fails_on_output_that_is_not_json() {
        let v = expect("stdout_json: { path: $.lag_s, lt: 2 }").evaluate(&cmd("lag=1.5\n"));
        assert!(!v.ok);
        assert!(v.detail.contains("FAILED stdout is JSON"), "{}", v.detail);
        let missing = expect("stdout_json: { path: $.lag_s, lt: 2 }").evaluate(&cmd("{}"));
        assert!(!missing.ok, "a missing value is not below 2");
    }

    #[test]
    fn stdout_number_holds_and_fails_with_the_value_found() {
        let e = expect("stdout_number: { regex: 'lag=([0-9.]+)', lt: 2 }");
        assert!(e.evaluate(&cmd("replica r2 lag=1.25 s\n")).ok);
        let v = e.evaluate(&cmd("replica r2 lag=7.5 s\n"));
        assert!(!v.ok);
        assert!(v.detail.contains("= 7.5 (expected < 2)"), "{}", v.detail);
        let both = expect("stdout_number: { regex: 'offset ([-0-9]+)', ge: -5, le: 5 }");
        assert!(both.evaluate(&cmd("offset -3")).ok);
        assert!(!both.evaluate(&cmd("offset -30")).ok);
    }

    #[test]
    fn stdout_number_fails_when_nothing_matches_or_it_is_not_a_number() {
        let e = expect("stdout_number: { regex: 'lag=(\\S+)', lt: 2 }");
        let v = e.evaluate(&cmd("no replication info"));
        assert!(!v.ok);
        assert!(v.detail.contains("no match"), "{}", v.detail);
        let v = e.evaluate(&cmd("lag=unknown"));
        assert!(!v.ok);
        assert!(v.detail.contains("not a number"), "{}", v.detail);
    }

    #[test]
    fn stdout_checks_validate_path_regex_group_and_comparison() {
        let errs = expect("stdout_json: { path: 'lag', lt: 2 }").validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "stdout_json.path");
        let errs = expect("stdout_number: { regex: 'lag=[0-9.]+', lt: 2 }").validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "stdout_number.regex");
        assert!(
            errs[0].1.contains("without a capture group"),
            "{}",
            errs[0].1
        );
        let errs = expect("stdout_number: { regex: 'lag=([0-9.]+)' }").validate();
        assert_eq!(errs[0].0, "stdout_number");
        assert!(
            expect("stdout_number: { regex: 'lag=([0-9.]+)', lt: 2 }")
                .validate()
                .is_empty()
        );
    }

    #[test]
    fn validation_names_the_field() {
        let e = expect("body_regex: '('\njson: { path: 'nope' }");
        let errs = e.validate();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[0].0, "body_regex");
        assert_eq!(errs[1].0, "json.path");
        assert_eq!(errs[2].0, "json");
    }
}
