//! Driving a fault through the library as the engine does (prepare → apply → revert,
//! minus the ledger), for the network, proxy and transparent-proxy tests alike.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use firedrill::fault::{Effect, FaultCtx, FaultError, FaultSpec, RevertCtx, Reverted, Undo};
use firedrill::rt::Runtime;
use firedrill::target::Target;
use tokio_util::sync::CancellationToken;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fault parsed from `kind: ...\nwith: ...` YAML.
pub fn fault(yaml: &str) -> FaultSpec {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

/// A run id unique to this test.
pub fn run_id() -> String {
    format!(
        "t{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// prepare + apply through the library, as the engine does (minus the ledger).
pub async fn inject(
    spec: &FaultSpec,
    target: &Target,
    run_id: &str,
    step: &str,
    ttl: Duration,
    runtime: &Runtime,
) -> Result<(Undo, Effect), FaultError> {
    let ctx = FaultCtx {
        run_id,
        step,
        target,
        ttl,
        started: Instant::now(),
        cancel: CancellationToken::new(),
        runtime,
    };
    let undo = spec.prepare(&ctx).await?;
    let effect = spec.apply(&ctx, &undo).await?;
    Ok((undo, effect))
}

/// [`inject`] under a fresh run id with a ttl of 60 s (longer than any test), and
/// it must succeed.
pub async fn inject_ok(
    spec: &FaultSpec,
    target: &Target,
    step: &str,
    runtime: &Runtime,
) -> (Undo, Effect) {
    inject(
        spec,
        target,
        &run_id(),
        step,
        Duration::from_secs(60),
        runtime,
    )
    .await
    .unwrap_or_else(|e| panic!("inject {step}: {e}"))
}

/// Reverts as `firedrill recover` would (no runtime).
pub async fn revert(undo: &Undo) -> Result<Reverted, FaultError> {
    undo.revert(&RevertCtx {
        runtime: None,
        hurry: false,
    })
    .await
}

/// Reverts as the engine does, with the runtime that holds the fault's tasks (a
/// proxy's listener, for one).
pub async fn revert_with(undo: &Undo, runtime: &Runtime) -> Result<Reverted, FaultError> {
    undo.revert(&RevertCtx {
        runtime: Some(runtime),
        hurry: false,
    })
    .await
}
