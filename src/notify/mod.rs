//! Notifications: telling people a drill started, injected a fault, was aborted,
//! finished, or left a fault behind — on a WeCom group robot, a Slack incoming
//! webhook or a generic JSON webhook.
//!
//! A notification is a side channel and must never change the drill: each one is
//! sent from its own task with a timeout, a failure is recorded (and shown in the
//! report) and nothing else. The URLs of these endpoints carry their credential (the
//! robot's `key=`, Slack's path token), so each URL is registered as a secret when
//! the run starts: it is masked in every log line, error and report, whatever
//! encoding an error message gives it. Put it in a secret var
//! (`{ env: WECOM_ROBOT_URL, secret: true }`) so it is not in the scenario file.
//!
//! One file per kind ([`wecom_robot`], [`slack`], [`webhook`]): the body it sends and
//! how it tells an accepted message from a refused one.

pub(crate) mod slack;
pub(crate) mod webhook;
pub(crate) mod wecom_robot;

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// Where notifications about a run go.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyChannel {
    /// Name of this channel, shown in the report's notification table.
    pub name: String,
    /// The endpoint, by kind: `{ wecom_robot: { url } }`, `{ slack: { url } }` or
    /// `{ webhook: { url } }`.
    pub to: NotifyKind,
    /// Which events are sent [default: every event].
    #[serde(default = "NotifyEvent::all")]
    pub events: Vec<NotifyEvent>,
    /// How long one notification may take before it counts as failed (at most 30 s).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// The endpoint of a channel, by kind. Every URL is masked in logs and reports.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    /// A WeCom (企业微信) group robot: a markdown message to
    /// `https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…`; accepted when the
    /// answer is HTTP 200 with `errcode` 0.
    WecomRobot(Endpoint),
    /// A Slack incoming webhook (`https://hooks.slack.com/services/…`): `{"text": …}`;
    /// accepted when the answer is HTTP 200.
    Slack(Endpoint),
    /// Any HTTP endpoint taking a JSON POST with the event's fields (`event`,
    /// `run_id`, `scenario`, `status`, `exit_code`, `title`, `lines`, …); accepted on
    /// any 2xx answer.
    Webhook(Endpoint),
}

/// An endpoint's address.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The URL (http or https), usually `{{var}}` of a var declared `secret: true`.
    pub url: String,
}

/// Moments of a run that can be notified.
#[derive(
    Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// The run started (the target locks and the ledger are in place).
    Started,
    /// A fault took effect (one notification per fault).
    FaultInjected,
    /// The drill stopped early (a guard, a failed precheck or critical check, a
    /// signal, the duration cap); recovery is running.
    Aborted,
    /// The run finished: verdict, exit code, measured RTO.
    Finished,
    /// A fault could not be reverted (exit code 4): someone must act.
    RecoveryIncomplete,
}

impl NotifyEvent {
    pub fn all() -> Vec<NotifyEvent> {
        vec![
            NotifyEvent::Started,
            NotifyEvent::FaultInjected,
            NotifyEvent::Aborted,
            NotifyEvent::Finished,
            NotifyEvent::RecoveryIncomplete,
        ]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Started => "started",
            NotifyEvent::FaultInjected => "fault_injected",
            NotifyEvent::Aborted => "aborted",
            NotifyEvent::Finished => "finished",
            NotifyEvent::RecoveryIncomplete => "recovery_incomplete",
        }
    }
}

impl NotifyKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            NotifyKind::WecomRobot(_) => "wecom_robot",
            NotifyKind::Slack(_) => "slack",
            NotifyKind::Webhook(_) => "webhook",
        }
    }

    pub fn url(&self) -> &str {
        match self {
            NotifyKind::WecomRobot(e) | NotifyKind::Slack(e) | NotifyKind::Webhook(e) => &e.url,
        }
    }

    /// The request body for `msg`.
    pub fn payload(&self, msg: &Message) -> serde_json::Value {
        match self {
            NotifyKind::WecomRobot(_) => wecom_robot::payload(msg),
            NotifyKind::Slack(_) => slack::payload(msg),
            NotifyKind::Webhook(_) => webhook::payload(msg),
        }
    }

    /// Whether the endpoint accepted the message, from its answer.
    pub fn accepted(&self, status: u16, body: &str) -> Result<(), String> {
        match self {
            NotifyKind::WecomRobot(_) => wecom_robot::accepted(status, body),
            NotifyKind::Slack(_) => slack::accepted(status, body),
            NotifyKind::Webhook(_) => webhook::accepted(status, body),
        }
    }
}

impl NotifyChannel {
    /// Static checks: `(path relative to the channel, message)`.
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.name.trim().is_empty() {
            errs.push((
                "name".into(),
                "found an empty name, expected a channel name".into(),
            ));
        }
        let url = self.to.url();
        let problem = match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => None,
            Ok(u) => Some(format!(
                "found scheme `{}`, expected an http or https URL with a host",
                u.scheme()
            )),
            // The URL is not echoed: it carries the endpoint's key.
            Err(e) => Some(format!(
                "found a URL that does not parse ({e}), expected an absolute http or https URL"
            )),
        };
        if let Some(p) = problem {
            errs.push((format!("to.{}.url", self.to.as_str()), p));
        }
        if self.events.is_empty() {
            errs.push((
                "events".into(),
                "found an empty list, expected at least one event (or no `events` for all)".into(),
            ));
        }
        let t = self.timeout.0;
        if t.is_zero() || t > Duration::from_secs(30) {
            errs.push((
                "timeout".into(),
                format!(
                    "found {}, expected more than 0 and at most 30s",
                    self.timeout
                ),
            ));
        }
        errs
    }
}

/// What one notification says, whatever the kind renders it as.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub event: NotifyEvent,
    pub run_id: String,
    pub scenario: String,
    pub host: String,
    /// A rehearsal: no fault is injected (said in every message).
    pub rehearsal: bool,
    /// One line: what happened.
    pub title: String,
    /// Details, one per line (verdict reason, measured RTO, report directory, …).
    pub lines: Vec<String>,
    /// `passed`, `failed`, … for `finished` and `recovery_incomplete`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl Message {
    /// The title with the run named, for the chat kinds.
    pub(crate) fn headline(&self) -> String {
        format!(
            "firedrill{} `{}`: {}",
            if self.rehearsal { " (rehearsal)" } else { "" },
            self.scenario,
            self.title
        )
    }
}

/// What came of sending one message.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    pub delivered: bool,
    /// The endpoint's answer or the error, bounded (not yet redacted).
    pub detail: String,
}

/// Longest answer kept in a record.
const DETAIL_MAX: usize = 300;

/// Sends `msg` to `channel` once, within its timeout.
pub async fn send(http: &reqwest::Client, channel: &NotifyChannel, msg: &Message) -> Sent {
    let body = channel.to.payload(msg);
    // The whole exchange is bounded below, so that a timeout reads as one.
    let req = http.post(channel.to.url()).json(&body);
    let res = async {
        let resp = req.send().await.map_err(|e| format!("not sent: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("HTTP {status}, body unreadable: {e}"))?;
        let short = bounded(&text);
        channel
            .to
            .accepted(status, &text)
            .map(|()| format!("HTTP {status} {short}"))
            .map_err(|why| format!("refused: {why} (HTTP {status} {short})"))
    };
    match tokio::time::timeout(channel.timeout.0, res).await {
        Ok(Ok(detail)) => Sent {
            delivered: true,
            detail,
        },
        Ok(Err(detail)) => Sent {
            delivered: false,
            detail,
        },
        Err(_) => Sent {
            delivered: false,
            detail: format!("not answered within {}", channel.timeout),
        },
    }
}

fn bounded(text: &str) -> String {
    let t = text.trim();
    if t.len() <= DETAIL_MAX {
        return t.to_string();
    }
    let mut end = DETAIL_MAX;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &t[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(yaml: &str) -> NotifyChannel {
        // As the loader does: through JSON (serde_yaml 0.9 reads enums only from tags).
        let v: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_channel_decodes_with_every_event_by_default() {
        let c = channel(
            "name: ops\nto: { wecom_robot: { url: 'http://127.0.0.1:1/cgi-bin/webhook/send?key=k' } }\n",
        );
        assert_eq!(c.to.as_str(), "wecom_robot");
        assert_eq!(c.events, NotifyEvent::all());
        assert_eq!(c.timeout.0, Duration::from_secs(5));
        assert!(c.validate().is_empty());
    }

    #[test]
    fn bad_channels_are_named_without_echoing_the_url() {
        let c = channel(
            "name: ''\nto: { slack: { url: 'not a url key=SECRET' } }\nevents: []\ntimeout: 1m\n",
        );
        let errs = c.validate();
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["name", "to.slack.url", "events", "timeout"]);
        assert!(errs.iter().all(|(_, m)| !m.contains("SECRET")), "{errs:?}");
        let c = channel("name: x\nto: { webhook: { url: 'ftp://h/x' } }\n");
        assert_eq!(
            c.validate()[0].1,
            "found scheme `ftp`, expected an http or https URL with a host"
        );
    }

    #[test]
    fn long_answers_are_cut_on_a_char_boundary() {
        let s = "é".repeat(400);
        let b = bounded(&s);
        assert!(b.len() <= DETAIL_MAX + '…'.len_utf8());
        assert!(b.ends_with('…'));
    }
}
