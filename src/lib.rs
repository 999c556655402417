//! firedrill: a disaster-recovery drill engine.
//!
//! A drill is a YAML scenario ([`scenario`]) run by the [`engine`]: prechecks, graded
//! [`fault`]s, verifications made with [`probe`]s, and a recovery that always runs.
//! Every run leaves a [`report`] (HTML, Markdown, JSON journal, JUnit XML).
//! The binary (`src/main.rs`) is a thin shell over this library.

pub mod app;
pub mod cli;
pub mod duration;
pub mod engine;
pub mod fault;
pub mod model;
pub(crate) mod nft;
pub mod notify;
pub mod probe;
pub mod proxy;
pub mod report;
pub mod rt;
pub mod scenario;
pub mod secrets;
pub mod target;

/// rustls needs one process-wide crypto provider; we build with `ring` only (lighter
/// than aws-lc for a 2-core build machine). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
