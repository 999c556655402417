//! A generic JSON webhook: the message's fields as they are (`event`, `run_id`,
//! `scenario`, `host`, `rehearsal`, `title`, `lines`, `status`, `exit_code`), for
//! whatever the receiver does with them (an incident tool, a chat bridge, a log).

use serde_json::Value;

use super::Message;

pub(crate) fn payload(msg: &Message) -> Value {
    serde_json::to_value(msg).expect("a message serialises")
}

pub(crate) fn accepted(status: u16, _body: &str) -> Result<(), String> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("expected a 2xx answer, got {status}"))
    }
}
