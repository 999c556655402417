//! Transparent mode: the nftables redirect that sends intercepted traffic to the proxy.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fault::FaultError;
use crate::target::Target;

/// The redirect of one transparent proxy, as written to the ledger.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RedirectUndo {
    pub target: Target,
    pub table: String,
    pub set: String,
    pub chain: String,
    pub intercept: Vec<SocketAddr>,
    pub port: u16,
    pub mark: u32,
    pub ttl_ms: u64,
}

impl RedirectUndo {
    pub(crate) fn plan(
        run_id: &str,
        step: &str,
        target: &Target,
        intercept: &[SocketAddr],
        port: u16,
        mark: u32,
        ttl: Duration,
    ) -> Self {
        let tag: String = step
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(24)
            .collect();
        RedirectUndo {
            target: target.clone(),
            table: format!("firedrill_{run_id}"),
            set: format!("redir_{tag}"),
            chain: format!("redir_{tag}"),
            intercept: intercept.to_vec(),
            port,
            mark,
            ttl_ms: ttl.as_millis() as u64,
        }
    }

    pub(crate) async fn install(&self, _target: &Target) -> Result<(), FaultError> {
        Err(FaultError::Precondition(
            "transparent mode is not wired yet".into(),
        ))
    }

    pub(crate) async fn remove(&self) -> Result<(), FaultError> {
        Ok(())
    }
}
