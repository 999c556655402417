//! The latency toxic: a fixed delay plus jitter (uniform or normal), with a
//! probability, for one direction of a TCP stream or for HTTP responses.
//!
//! On a TCP stream the delay applies to *every chunk*, pipelined: each chunk is due
//! at its own arrival time plus its own delay, so a 10 ms toxic adds 10 ms to each
//! chunk, not 10 ms per chunk in a row. Due times never decrease (a chunk is never
//! delivered before the one read ahead of it), so jitter cannot reorder the stream.

use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Stats;
use crate::duration::HumanDuration;

/// How jitter is distributed around the fixed delay.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Uniform in `[delay - jitter, delay + jitter]`.
    #[default]
    Uniform,
    /// Normal with mean `delay` and standard deviation `jitter`, cut at ±3 jitter.
    Normal,
}

/// A delay drawn per chunk or per request.
#[derive(Clone, Debug, PartialEq)]
pub struct Toxic {
    /// Fixed part of the delay.
    pub delay: Duration,
    /// Spread around the fixed part.
    pub jitter: Duration,
    /// Shape of the spread.
    pub distribution: Distribution,
    /// Share of chunks (or requests) that are delayed, 0..=1.
    pub probability: f64,
}

impl Toxic {
    /// A delay of exactly `d`, always applied.
    pub fn fixed(d: Duration) -> Self {
        Toxic {
            delay: d,
            jitter: Duration::ZERO,
            distribution: Distribution::Uniform,
            probability: 1.0,
        }
    }

    /// Draws the delay for one chunk or request; `None` when the probability roll misses.
    pub fn sample(&self) -> Option<Duration> {
        if self.probability < 1.0 && fastrand::f64() >= self.probability {
            return None;
        }
        let base = self.delay.as_secs_f64();
        let j = self.jitter.as_secs_f64();
        if j == 0.0 {
            return Some(self.delay);
        }
        let offset = match self.distribution {
            Distribution::Uniform => (fastrand::f64() * 2.0 - 1.0) * j,
            Distribution::Normal => (normal() * j).clamp(-3.0 * j, 3.0 * j),
        };
        Some(Duration::from_secs_f64((base + offset).max(0.0)))
    }

    /// The range a sampled delay falls in (for declared-vs-measured checks).
    pub fn bounds(&self) -> (Duration, Duration) {
        let k = match self.distribution {
            Distribution::Uniform => 1,
            Distribution::Normal => 3,
        };
        (
            self.delay.saturating_sub(self.jitter * k),
            self.delay + self.jitter * k,
        )
    }

    /// In words, e.g. `100ms ± 10ms (uniform)`.
    pub fn describe(&self) -> String {
        let mut s = HumanDuration(self.delay).to_string();
        if !self.jitter.is_zero() {
            let shape = match self.distribution {
                Distribution::Uniform => "uniform",
                Distribution::Normal => "normal σ",
            };
            s = format!("{s} ± {} ({shape})", HumanDuration(self.jitter));
        }
        if self.probability < 1.0 {
            s = format!("{s} on {:.1}% of chunks", self.probability * 100.0);
        }
        s
    }
}

/// A standard normal variate (Box–Muller).
fn normal() -> f64 {
    let u1 = fastrand::f64().max(f64::MIN_POSITIVE);
    let u2 = fastrand::f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// How many chunks may wait in one direction's delay line (memory bound: 64 × 64 KiB).
const LINE_DEPTH: usize = 64;

/// Copies `r` to `w`, holding each chunk until its arrival time plus its sampled
/// delay. Reading and writing run concurrently, so delays overlap (pipelined) and
/// the reader keeps draining the socket while earlier chunks wait.
pub(crate) async fn delayed_copy<R, W>(
    mut r: R,
    mut w: W,
    toxic: &Toxic,
    stats: &Stats,
    bytes: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use std::sync::atomic::Ordering::Relaxed;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(LINE_DEPTH);
    let reader = async move {
        let mut last_due = Instant::now();
        loop {
            let mut buf = vec![0u8; super::BUF_SIZE];
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            buf.truncate(n);
            let arrived = Instant::now();
            let due = match toxic.sample() {
                Some(d) => {
                    stats.chunks_delayed.fetch_add(1, Relaxed);
                    arrived + d
                }
                None => arrived,
            };
            // Never before the previous chunk: the byte stream keeps its order.
            last_due = last_due.max(due);
            if tx.send((last_due, buf)).await.is_err() {
                return Ok(());
            }
        }
    };
    let writer = async move {
        while let Some((due, buf)) = rx.recv().await {
            super::timer::sleep_until(due).await;
            w.write_all(&buf).await?;
            bytes.fetch_add(buf.len() as u64, Relaxed);
        }
        w.shutdown().await
    };
    // An error on either side ends both (try_join): a dead writer must not leave the
    // reader parked on a full delay line.
    tokio::try_join!(reader, writer).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_jitter_stays_in_bounds() {
        let t = Toxic {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            distribution: Distribution::Uniform,
            probability: 1.0,
        };
        let (lo, hi) = t.bounds();
        for _ in 0..10_000 {
            let d = t.sample().unwrap();
            assert!(d >= lo && d <= hi, "{d:?} outside {lo:?}..{hi:?}");
        }
    }

    #[test]
    fn normal_jitter_is_centred_and_cut() {
        let t = Toxic {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(5),
            distribution: Distribution::Normal,
            probability: 1.0,
        };
        let (lo, hi) = t.bounds();
        let n = 20_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let d = t.sample().unwrap();
            assert!(d >= lo && d <= hi);
            sum += d.as_secs_f64();
        }
        let mean_ms = sum / n as f64 * 1000.0;
        assert!((mean_ms - 50.0).abs() < 0.3, "mean {mean_ms}");
    }

    #[test]
    fn probability_zero_never_delays_and_one_always_does() {
        let mut t = Toxic::fixed(Duration::from_millis(1));
        t.probability = 0.0;
        assert!((0..1000).all(|_| t.sample().is_none()));
        t.probability = 1.0;
        assert!((0..1000).all(|_| t.sample().is_some()));
        t.probability = 0.3;
        let hits = (0..10_000).filter(|_| t.sample().is_some()).count();
        assert!((2700..3300).contains(&hits), "{hits}");
    }
}
