//! A deadline-precise sleep for injected latency.
//!
//! tokio's timer wheel has millisecond ticks and rounds every deadline *up* to the
//! next tick, and epoll's timeout is in whole milliseconds too, so a bare
//! `tokio::time::sleep(10ms)` wakes 10.0–12 ms later. Every Rust chaos proxy we
//! measured delivers injected latency 1.2–1.6 ms late at p50 because of this.
//!
//! The default ([`TimerKind::Spin`]) sleeps with tokio until [`COARSE_MARGIN`] before
//! the deadline (cheap, no CPU), then yield-spins the last stretch: the task
//! re-checks the clock each time the scheduler comes back to it, other tasks still
//! run in between, and the deadline is hit to a few microseconds when the machine is
//! not overloaded. Its cost is the spin: about 1 ms of CPU per delayed request at
//! 100 req/s (issue 14).
//!
//! [`TimerKind::Thread`] is the attempt to keep that accuracy cheaper, and it lost
//! (`benches/proxy.rs` section (d), in docs/chaos-proxy.md): one process-wide timer
//! thread holds every pending deadline in a heap and sleeps in a futex wait (the
//! condvar's timeout, an hrtimer like `clock_nanosleep`, interruptible by an earlier
//! deadline) with its timer slack at 1 ns; it wakes early by a margin learned from
//! its own wake-up lateness, spins that margin, and releases each task early by a
//! second learned margin (the hop to the proxy runtime), which yield-spins the rest.
//! On this shared 2-core VM the learned margins grow with the host's load, so it
//! spins as long as the old timer, on a second thread that competes with the proxy
//! thread: more CPU and later responses. Kept selectable so the benchmark can
//! re-measure it.
//!
//! `FIREDRILL_PROXY_TIMER` (read once) selects the timer, for benchmarks only:
//! `spin` (default), `thread`, or `tokio` (a plain tokio sleep: the CPU baseline,
//! ~1.2 ms late).
//!
//! Tried and dropped: a `timerfd` (hrtimer, no spin) awaited on the runtime's epoll.
//! It burns no CPU, but this VM takes ~0.18 ms to wake an idle CPU: alone it woke
//! 179 µs late at p50 and 846 µs at p99.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Which sleep [`sleep_until`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// The shared timer thread with learned wake-up margins (opt-in; measured
    /// costlier than `Spin` on a loaded host).
    Thread,
    /// tokio sleep to [`COARSE_MARGIN`] before the deadline, then yield-spin (the
    /// default).
    Spin,
    /// A plain tokio sleep (benchmark baseline; ~1.2 ms late).
    Tokio,
}

impl TimerKind {
    /// From `FIREDRILL_PROXY_TIMER` (`spin`, `thread`, `tokio`), read once per process;
    /// anything else is the default, `spin`.
    pub fn from_env() -> TimerKind {
        static KIND: OnceLock<TimerKind> = OnceLock::new();
        *KIND.get_or_init(|| match std::env::var("FIREDRILL_PROXY_TIMER").as_deref() {
            Ok("thread") => TimerKind::Thread,
            Ok("tokio") => TimerKind::Tokio,
            _ => TimerKind::Spin,
        })
    }
}

/// Sleeps until `deadline`, never before it, waking within microseconds of it with
/// the default timer (a few µs when the host is not overloaded).
pub async fn sleep_until(deadline: Instant) {
    sleep_until_with(TimerKind::from_env(), deadline).await
}

/// [`sleep_until`] with an explicit timer (benchmarks compare them in one process).
pub async fn sleep_until_with(kind: TimerKind, deadline: Instant) {
    match kind {
        TimerKind::Thread => thread_sleep_until(deadline).await,
        TimerKind::Spin => spin_sleep_until(deadline).await,
        TimerKind::Tokio => tokio::time::sleep_until(deadline.into()).await,
    }
}

/// How long before the deadline the coarse tokio sleep of [`TimerKind::Spin`] ends.
/// Tokio can overshoot by up to ~2 ms (tick rounding plus the epoll timeout
/// rounding), so it stops early by that much and spins the rest.
const COARSE_MARGIN: Duration = Duration::from_micros(2_100);

async fn spin_sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    if deadline - now > COARSE_MARGIN {
        tokio::time::sleep_until((deadline - COARSE_MARGIN).into()).await;
    }
    yield_until(deadline).await;
}

/// Yields to the scheduler until the deadline passes: other tasks (and the other
/// direction of the connection) keep running meanwhile.
async fn yield_until(deadline: Instant) {
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

// ── the timer thread ─────────────────────────────────────────────────────────

/// Bounds of a learned margin: never below what a hot wake-up costs, never above
/// what the old timer spun anyway.
const MARGIN_MIN_NS: u64 = 5_000;
const MARGIN_MAX_NS: u64 = 2_000_000;

/// A wake-up margin that tracks a high quantile of the measured lateness: it rises a
/// quarter of the way to a sample above it and falls 1/64 of the way to one below,
/// so it settles where lateness exceeds it about one time in 17.
struct Margin(AtomicU64);

impl Margin {
    const fn new(ns: u64) -> Margin {
        Margin(AtomicU64::new(ns))
    }

    fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    fn learn(&self, late: Duration) {
        let s = late.as_nanos().min(u64::MAX as u128) as u64;
        let m = self.0.load(Ordering::Relaxed);
        let next = if s > m {
            m + (s - m) / 4
        } else {
            m - (m - s) / 64
        };
        // Racing learners may lose an update; the margin is an estimate anyway.
        self.0
            .store(next.clamp(MARGIN_MIN_NS, MARGIN_MAX_NS), Ordering::Relaxed);
    }
}

/// Lateness of the timer thread's own futex wake-ups.
static SELF_MARGIN: Margin = Margin::new(200_000);
/// Lateness from the timer thread releasing a task to the proxy runtime polling it.
static HOP_MARGIN: Margin = Margin::new(100_000);

/// One pending release: when, a tie-breaker, and the task to wake.
struct Entry {
    at: Instant,
    seq: u64,
    tx: tokio::sync::oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    /// The thread is in its futex wait.
    asleep: bool,
    /// While asleep: the release it waits for (`None`: the heap was empty). A push
    /// with an earlier release notifies it; later ones need no wake-up (no syscall).
    waiting_for: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// Set by a push earlier than the release the thread is spinning towards.
    earlier: AtomicBool,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<&'static Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let s: &'static Shared = Box::leak(Box::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            earlier: AtomicBool::new(false),
        }));
        std::thread::Builder::new()
            .name("firedrill-timer".into())
            .spawn(move || run(s))
            .expect("spawn the proxy timer thread");
        s
    })
}

/// Registers a release at `at`; the receiver completes at or after it.
fn register(at: Instant) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sh = shared();
    let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
    let head = st.heap.peek().map(|Reverse(e)| e.at);
    st.seq += 1;
    let seq = st.seq;
    st.heap.push(Reverse(Entry { at, seq, tx }));
    let wake_it = st.asleep && st.waiting_for.is_none_or(|w| at < w);
    drop(st);
    if wake_it {
        sh.cv.notify_one();
    } else if head.is_some_and(|h| at < h) {
        sh.earlier.store(true, Ordering::Release);
    }
    rx
}

/// The timer thread: sleep to the next release minus the learned margin, spin the
/// margin, release everything due.
fn run(sh: &'static Shared) {
    // SAFETY: prctl with PR_SET_TIMERSLACK takes an unsigned long and touches only
    // this thread's timer slack. 1 ns: the kernel may not defer our wake-ups.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let mut due = Vec::new();
    let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        while st.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            let Some(Reverse(e)) = st.heap.pop() else {
                break;
            };
            due.push(e.tx);
        }
        if !due.is_empty() {
            drop(st);
            // Outside the lock: a send wakes the proxy runtime (a syscall).
            for tx in due.drain(..) {
                let _ = tx.send(());
            }
            st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let Some(next) = st.heap.peek().map(|Reverse(e)| e.at) else {
            (st.asleep, st.waiting_for) = (true, None);
            st = sh.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            st.asleep = false;
            continue;
        };
        let wake = next.checked_sub(SELF_MARGIN.get()).unwrap_or(next);
        if wake > now {
            (st.asleep, st.waiting_for) = (true, Some(wake));
            let (g, res) = sh
                .cv
                .wait_timeout(st, wake - now)
                .unwrap_or_else(|e| e.into_inner());
            st = g;
            st.asleep = false;
            if res.timed_out() {
                SELF_MARGIN.learn(Instant::now().saturating_duration_since(wake));
            }
            continue;
        }
        // Within the margin: spin (lock released) until the release or an earlier push.
        drop(st);
        sh.earlier.store(false, Ordering::Relaxed);
        while Instant::now() < next && !sh.earlier.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
    }
}

async fn thread_sleep_until(deadline: Instant) {
    let release = deadline.checked_sub(HOP_MARGIN.get()).unwrap_or(deadline);
    if release > Instant::now() && register(release).await.is_ok() {
        HOP_MARGIN.learn(Instant::now().saturating_duration_since(release));
    }
    // Released early by the hop margin (or too close to bother the thread): the
    // last stretch is a yield-spin on the caller's runtime.
    yield_until(deadline).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn never_wakes_early() {
        for kind in [TimerKind::Thread, TimerKind::Spin, TimerKind::Tokio] {
            for ms in [0u64, 1, 3, 7] {
                let start = Instant::now();
                let deadline = start + Duration::from_millis(ms);
                sleep_until_with(kind, deadline).await;
                assert!(
                    Instant::now() >= deadline,
                    "{kind:?} woke before the {ms} ms deadline"
                );
            }
        }
    }

    /// 200 concurrent deadlines at random offsets, on a proxy-like current-thread
    /// runtime: every task is woken at or after its own deadline, though the timer
    /// thread releases each early by its learned margins.
    #[tokio::test(flavor = "current_thread")]
    async fn thread_timer_never_fires_before_a_deadline() {
        let start = Instant::now();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let deadline = start + Duration::from_micros(fastrand::u64(0..30_000));
                tokio::spawn(async move {
                    sleep_until_with(TimerKind::Thread, deadline).await;
                    (deadline, Instant::now())
                })
            })
            .collect();
        for t in tasks {
            let (deadline, woke) = t.await.unwrap();
            assert!(
                woke >= deadline,
                "woke {:?} before its deadline",
                deadline - woke
            );
        }
    }

    #[test]
    fn margin_rises_fast_and_falls_slowly() {
        let m = Margin::new(100_000);
        m.learn(Duration::from_micros(500));
        assert_eq!(m.get(), Duration::from_nanos(200_000));
        m.learn(Duration::ZERO);
        assert_eq!(m.get(), Duration::from_nanos(200_000 - 200_000 / 64));
        for _ in 0..10_000 {
            m.learn(Duration::ZERO);
        }
        assert_eq!(m.get(), Duration::from_nanos(MARGIN_MIN_NS));
    }
}
