//! The timeline: every event of a run with wall-clock and monotonic time, plus the
//! live progress line an operator sees on a terminal.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use crate::model::{Event, Phase};

pub struct Timeline {
    start: Instant,
    events: Mutex<Vec<Event>>,
    progress: bool,
}

impl Timeline {
    pub fn new(progress: bool) -> Self {
        Timeline {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
            progress,
        }
    }

    /// Monotonic milliseconds since the run started.
    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// Records an event; also logs it and, on a terminal, prints a progress line.
    pub fn event(&self, phase: Phase, event: &str, step: Option<&str>, message: impl Into<String>) {
        self.push(phase, event, step, message.into(), self.progress);
    }

    /// Records and logs an event without a progress line: for the run's outcome, which
    /// the command prints itself, once, with the exit code and where the reports are.
    pub fn event_unprinted(
        &self,
        phase: Phase,
        event: &str,
        step: Option<&str>,
        message: impl Into<String>,
    ) {
        self.push(phase, event, step, message.into(), false);
    }

    fn push(&self, phase: Phase, event: &str, step: Option<&str>, message: String, print: bool) {
        let t_ms = self.now_ms();
        tracing::info!(phase = phase.as_str(), event, step, t_ms, "{message}");
        if print {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "[{:>8.1}s] {:<12} {}",
                t_ms / 1000.0,
                phase.as_str(),
                crate::secrets::redact(&message)
            );
        }
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        self.events.lock().unwrap().push(Event {
            t_ms,
            at,
            phase,
            event: event.to_string(),
            step: step.map(str::to_string),
            message,
        });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}
