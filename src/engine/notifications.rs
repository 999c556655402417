//! The run's notifications (`notify:`): what the engine says, when, and what came
//! of it.
//!
//! Each message is sent from its own tracked task, so a slow or dead endpoint never
//! holds up a phase: the drill only waits, once, after recovery and the verdict,
//! for the messages still in flight (each bounded by its channel's `timeout`), so
//! that the report can list every notification and whether it arrived. Endpoint
//! URLs are registered as secrets here, before the first message: they carry their
//! key and must not appear in any log, error or report.

use std::sync::{Arc, Mutex};

use tokio_util::task::TaskTracker;

use super::timeline::Timeline;
use crate::model::NotificationRecord;
use crate::notify::{self, Message, NotifyChannel, NotifyEvent};

pub(super) struct Notifier {
    channels: Arc<Vec<NotifyChannel>>,
    http: reqwest::Client,
    /// The fields every message shares (run, scenario, host, rehearsal).
    base: Message,
    timeline: Arc<Timeline>,
    sent: Arc<Mutex<Vec<NotificationRecord>>>,
    tracker: TaskTracker,
}

impl Notifier {
    pub(super) fn new(
        channels: &[NotifyChannel],
        http: reqwest::Client,
        timeline: Arc<Timeline>,
        run_id: &str,
        scenario: &str,
        host: &str,
        rehearsal: bool,
    ) -> Notifier {
        crate::secrets::register(channels.iter().map(|c| c.to.url().to_string()));
        Notifier {
            channels: Arc::new(channels.to_vec()),
            http,
            base: Message {
                event: NotifyEvent::Started,
                run_id: run_id.to_string(),
                scenario: scenario.to_string(),
                host: host.to_string(),
                rehearsal,
                title: String::new(),
                lines: Vec::new(),
                status: None,
                exit_code: None,
            },
            timeline,
            sent: Arc::default(),
            tracker: TaskTracker::new(),
        }
    }

    /// Sends `event` to every channel that wants it, in the background.
    pub(super) fn notify(
        &self,
        event: NotifyEvent,
        title: String,
        lines: Vec<String>,
        verdict: Option<(&str, i32)>,
    ) {
        // Redacted before it leaves the engine: a reason may quote a probe's output.
        let redact = |s: &str| crate::secrets::redact(s).into_owned();
        let msg = Message {
            event,
            title: redact(&title),
            lines: lines.iter().map(|l| redact(l)).collect(),
            status: verdict.map(|(s, _)| s.to_string()),
            exit_code: verdict.map(|(_, c)| c),
            ..self.base.clone()
        };
        for (i, c) in self.channels.iter().enumerate() {
            if !c.events.contains(&event) {
                continue;
            }
            let (channels, http, msg) = (self.channels.clone(), self.http.clone(), msg.clone());
            let (sent, timeline) = (self.sent.clone(), self.timeline.clone());
            let t_ms = timeline.now_ms();
            self.tracker.spawn(async move {
                let c = &channels[i];
                let r = notify::send(&http, c, &msg).await;
                let detail = crate::secrets::redact(&r.detail).into_owned();
                if !r.delivered {
                    tracing::warn!(channel = %c.name, event = event.as_str(), "notification failed: {detail}");
                }
                sent.lock().unwrap().push(NotificationRecord {
                    channel: c.name.clone(),
                    kind: c.to.as_str().to_string(),
                    event: event.as_str().to_string(),
                    t_ms,
                    delivered: r.delivered,
                    detail,
                });
            });
        }
    }

    /// Waits for every message still in flight (each is bounded by its channel's
    /// timeout); every notification of the run, in the order they were sent.
    pub(super) async fn finish(&self) -> Vec<NotificationRecord> {
        self.tracker.close();
        self.tracker.wait().await;
        let mut all = std::mem::take(&mut *self.sent.lock().unwrap());
        all.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms).then(a.channel.cmp(&b.channel)));
        all
    }
}
