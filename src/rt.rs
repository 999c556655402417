//! Run-time helpers shared by faults, probes and the engine.
//!
//! They sit low in the layering (just above scenario and target) so that a fault or a
//! probe never has to import the engine: the in-process [`Runtime`] a fault keeps its
//! helpers in, the drill's [`Phase`] that continuous probes tag samples with, the path
//! of our own binary for detached helpers, and a cancellation-aware sleep.

use std::any::Any;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Phases of a drill, in order.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Setup,
    Precheck,
    Fault,
    Verification,
    Recovery,
    SteadyState,
    AfterRecovery,
    Report,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Precheck => "precheck",
            Phase::Fault => "fault",
            Phase::Verification => "verification",
            Phase::Recovery => "recovery",
            Phase::SteadyState => "steady_state",
            Phase::AfterRecovery => "after_recovery",
            Phase::Report => "report",
        }
    }
}

/// In-process resources that live as long as a fault: helper child processes to reap
/// and handles (e.g. a proxy's task) that a revert in the same process can stop.
pub struct Runtime {
    children: Mutex<Vec<std::process::Child>>,
    resources: Mutex<HashMap<String, Box<dyn Any + Send>>>,
    phase: tokio::sync::watch::Sender<Phase>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            children: Mutex::default(),
            resources: Mutex::default(),
            phase: tokio::sync::watch::channel(Phase::Setup).0,
        }
    }
}

impl Runtime {
    /// Announces the phase the drill is in (continuous probes tag samples with it).
    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Follows the drill's phase.
    pub fn subscribe_phase(&self) -> tokio::sync::watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Keeps a detached helper's handle so that its exit status is collected (no zombie).
    pub fn adopt(&self, child: std::process::Child) {
        self.children.lock().unwrap().push(child);
    }

    /// Collects the exit status of helpers, waiting up to 500 ms for those still
    /// exiting (e.g. a watcher just sent SIGKILL). Waits asynchronously: a sleeping
    /// worker thread would stall every probe and timer scheduled on it.
    pub async fn reap(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        loop {
            {
                let mut children = self.children.lock().unwrap();
                children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
                if children.is_empty() {
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Stores a resource under `key` (e.g. the undo record's id).
    pub fn put(&self, key: impl Into<String>, value: Box<dyn Any + Send>) {
        self.resources.lock().unwrap().insert(key.into(), value);
    }

    /// Takes the resource stored under `key`, if this process holds it.
    pub fn take(&self, key: &str) -> Option<Box<dyn Any + Send>> {
        self.resources.lock().unwrap().remove(key)
    }
}

/// Path of the `firedrill` binary, for detached helpers (`__deadman`). Tests and
/// embedders that are not the binary point `FIREDRILL_EXE` at it.
pub fn self_exe() -> std::io::Result<PathBuf> {
    if let Ok(p) = std::env::var("FIREDRILL_EXE") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let is_firedrill = exe.file_name().is_some_and(|n| n == "firedrill");
    if is_firedrill {
        Ok(exe)
    } else {
        Err(std::io::Error::other(format!(
            "{} is not the firedrill binary; set FIREDRILL_EXE",
            exe.display()
        )))
    }
}

/// Sleeps `d` unless `cancel` fires first; returns false when cancelled.
pub async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::Runtime;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn reap_does_not_block_the_runtime() {
        // One thread: anything reap does to block it stops every other task.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = Runtime::default();
            r.adopt(
                std::process::Command::new("sleep")
                    .arg("0.3")
                    .spawn()
                    .unwrap(),
            );
            let ticks = Arc::new(AtomicU32::new(0));
            let ticker = {
                let ticks = ticks.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            tokio::task::yield_now().await;
            let start = Instant::now();
            r.reap().await;
            let waited = start.elapsed();
            let ticked = ticks.load(Ordering::Relaxed);
            ticker.abort();
            assert!(waited >= Duration::from_millis(200), "{waited:?}");
            assert!(r.children.lock().unwrap().is_empty(), "child not reaped");
            // ~30 ticks in 300 ms; a blocking reap allows none.
            assert!(
                ticked >= 10,
                "only {ticked} tick(s) while reap waited {waited:?}"
            );
        });
    }
}
