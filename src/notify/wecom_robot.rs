//! WeCom (企业微信) group robot: `POST …/cgi-bin/webhook/send?key=KEY` with a markdown
//! message. WeCom answers HTTP 200 even when it refuses (`{"errcode":93000,…}` for a
//! bad key, 45009 when the robot's 20-messages-a-minute limit is hit), so only
//! `errcode` 0 counts as delivered.

use serde_json::{Value, json};

use super::Message;

pub(crate) fn payload(msg: &Message) -> Value {
    // WeCom markdown: `<font color="…">` is its own extension; a colour per verdict
    // is what people scan a busy group for.
    let colour = match msg.status.as_deref() {
        Some("passed") => "info",
        Some(_) => "warning",
        None => "comment",
    };
    let mut content = format!(
        "**<font color=\"{colour}\">{}</font>**\n",
        escape(&msg.headline())
    );
    for l in &msg.lines {
        content.push_str(&format!("> {}\n", escape(l)));
    }
    content.push_str(&format!(
        "> run `{}` on {}",
        escape(&msg.run_id),
        escape(&msg.host)
    ));
    // WeCom refuses markdown content over 4096 bytes.
    if content.len() > 4000 {
        let mut end = 4000;
        while !content.is_char_boundary(end) {
            end -= 1;
        }
        content.truncate(end);
        content.push('…');
    }
    json!({ "msgtype": "markdown", "markdown": { "content": content } })
}

/// WeCom markdown has no escape syntax; the characters that would start markup in a
/// value (a step name, a reason) are replaced by look-alikes rather than lost.
fn escape(s: &str) -> String {
    s.replace('<', "‹").replace('>', "›")
}

pub(crate) fn accepted(status: u16, body: &str) -> Result<(), String> {
    if status != 200 {
        return Err(format!("expected HTTP 200, got {status}"));
    }
    let v: Value = serde_json::from_str(body).map_err(|_| "expected a JSON answer".to_string())?;
    match v.get("errcode").and_then(Value::as_i64) {
        Some(0) => Ok(()),
        Some(code) => Err(format!(
            "errcode {code} ({})",
            v.get("errmsg")
                .and_then(Value::as_str)
                .unwrap_or("no errmsg")
        )),
        None => Err("expected an `errcode` in the answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::NotifyEvent;

    #[test]
    fn markdown_names_the_run_and_only_errcode_zero_is_delivered() {
        let m = Message {
            event: NotifyEvent::Finished,
            run_id: "r1".into(),
            scenario: "wecom-outage".into(),
            host: "h".into(),
            rehearsal: false,
            title: "PASSED <b>".into(),
            lines: vec!["measured RTO 2012 ms".into()],
            status: Some("passed".into()),
            exit_code: Some(0),
        };
        let p = payload(&m);
        let c = p["markdown"]["content"].as_str().unwrap();
        assert!(
            c.starts_with("**<font color=\"info\">firedrill `wecom-outage`: PASSED ‹b›</font>**"),
            "{c}"
        );
        assert!(c.contains("> measured RTO 2012 ms\n> run `r1` on h"), "{c}");
        assert_eq!(accepted(200, r#"{"errcode":0,"errmsg":"ok"}"#), Ok(()));
        assert_eq!(
            accepted(200, r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#),
            Err("errcode 45009 (api freq out of limit)".into())
        );
        assert!(accepted(502, "").is_err());
    }
}
