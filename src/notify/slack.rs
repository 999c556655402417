//! Slack incoming webhook: `POST` `{"text": …}` (mrkdwn). Slack answers `200 ok`, and
//! `4xx` with a reason (`invalid_payload`, `no_service`) when it refuses.

use serde_json::{Value, json};

use super::Message;

pub(crate) fn payload(msg: &Message) -> Value {
    let mut text = format!("*{}*", escape(&msg.headline()));
    for l in &msg.lines {
        text.push_str(&format!("\n• {}", escape(l)));
    }
    text.push_str(&format!(
        "\nrun `{}` on {}",
        escape(&msg.run_id),
        escape(&msg.host)
    ));
    json!({ "text": text })
}

/// Slack's three control characters in mrkdwn.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) fn accepted(status: u16, _body: &str) -> Result<(), String> {
    if status == 200 {
        Ok(())
    } else {
        Err(format!("expected HTTP 200, got {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::NotifyEvent;

    #[test]
    fn text_is_escaped_mrkdwn() {
        let m = Message {
            event: NotifyEvent::Aborted,
            run_id: "r1".into(),
            scenario: "s".into(),
            host: "h".into(),
            rehearsal: true,
            title: "aborted <@here>".into(),
            lines: vec!["guard & co".into()],
            status: None,
            exit_code: None,
        };
        assert_eq!(
            payload(&m)["text"],
            "*firedrill (rehearsal) `s`: aborted &lt;@here&gt;*\n• guard &amp; co\nrun `r1` on h"
        );
        assert!(accepted(404, "no_service").is_err());
    }
}
