//! Why the forward phases stop early: a signal, the drill's own time cap, a failed
//! precheck or critical verification, a guard breach or a fault that could not be
//! injected. The first reason wins and is the one reported. Recovery never looks at
//! this: it always runs to the end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::model::AbortReason;

/// The run's abort switch, shared by the phases, the guards and the watcher.
pub(super) struct Abort {
    token: CancellationToken,
    reason: Mutex<Option<(AbortReason, String)>>,
}

impl Abort {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Abort {
            token: CancellationToken::new(),
            reason: Mutex::new(None),
        })
    }

    /// Stops the forward phases; a later reason does not replace the first.
    pub(super) fn trip(&self, reason: AbortReason, why: String) {
        let mut r = self.reason.lock().unwrap();
        if r.is_none() {
            *r = Some((reason, why));
        }
        self.token.cancel();
    }

    /// The first reason, if the run was aborted.
    pub(super) fn get(&self) -> Option<(AbortReason, String)> {
        self.reason.lock().unwrap().clone()
    }

    pub(super) fn is_tripped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Cancelled once tripped: waits of the forward phases end on it.
    pub(super) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Trips on an outside signal (`signal` cancelled) or once `cap` has passed.
    /// Abort the returned task when the run is over, so a late timer trips nothing.
    pub(super) fn watch(
        self: &Arc<Self>,
        signal: CancellationToken,
        cap: Duration,
    ) -> JoinHandle<()> {
        let abort = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = signal.cancelled() => abort.trip(AbortReason::Signal, "interrupted by signal".into()),
                _ = tokio::time::sleep(cap) => abort.trip(AbortReason::MaxDuration,
                    format!("objectives.max_duration ({}) reached", humantime::format_duration(cap))),
                _ = abort.token.cancelled() => {}
            }
        })
    }
}
