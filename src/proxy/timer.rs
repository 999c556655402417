//! A deadline-precise sleep for injected latency.
//!
//! tokio's timer wheel has millisecond ticks and rounds every deadline *up* to the
//! next tick, and epoll's timeout is in whole milliseconds too, so a bare
//! `tokio::time::sleep(10ms)` wakes 10.0–12 ms later. Every Rust chaos proxy we
//! measured delivers injected latency 1.2–1.6 ms late at p50 because of this.
//!
//! The default ([`TimerKind::Hr`]) arms a one-shot `timerfd` for the time left — a
//! kernel hrtimer, exact to the nanosecond and not subject to timer slack — and
//! awaits it on the runtime's own epoll. Nothing spins: a delayed request costs about
//! what it costs with a plain tokio sleep (≤ 1.4× the CPU at 100, 1,000 and 5,000
//! req/s in `benches/proxy.rs` section (d)), and it is late only by the time the
//! kernel takes to wake the runtime's thread (0.1–0.2 ms at p50 on this VM, which
//! leaves an idle CPU slowly; far less on a busy or bare-metal one). A proxy's own
//! thread keeps its timerfds registered for reuse ([`pool_timerfds_on_this_thread`]):
//! one `timerfd_settime` per sleep (the expiry is never `read`: re-arming
//! resets it).
//!
//! [`TimerKind::Spin`] sleeps with tokio until [`COARSE_MARGIN`] before the deadline,
//! then yield-spins the last stretch: a few microseconds late, but the spin costs
//! about 1 ms of CPU per delayed request (issue 14: 4–13× a plain sleep's CPU). It was
//! the default until the hrtimer; kept for the rare drill that needs microseconds.
//!
//! [`TimerKind::Thread`] was the first attempt to keep that accuracy cheaper, and it
//! lost (`benches/proxy.rs` section (d), in docs/chaos-proxy.md): one process-wide
//! timer thread holds every pending deadline in a heap and sleeps in a futex wait
//! with its timer slack at 1 ns; it wakes early by a margin learned from its own
//! wake-up lateness, spins that margin, and releases each task early by a second
//! learned margin, which yield-spins the rest. On this shared 2-core VM the learned
//! margins grow with the host's load, so it spins as long as the old timer, on a
//! second thread that competes with the proxy thread. Kept selectable so the
//! benchmark can re-measure it.
//!
//! `FIREDRILL_PROXY_TIMER` (read once) selects the timer: `hr` (default), `spin`,
//! `thread`, or `tokio` (a plain tokio sleep: the benchmarks' CPU baseline, ~1.1 ms
//! late because its wheel has millisecond ticks and rounds deadlines up).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Which sleep [`sleep_until`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// A one-shot `timerfd` (a kernel hrtimer, nanosecond resolution) awaited on the
    /// runtime's own epoll: no spinning, no extra thread (the default).
    Hr,
    /// The shared timer thread with learned wake-up margins (opt-in; measured
    /// costlier than `Spin` on a loaded host).
    Thread,
    /// tokio sleep to [`COARSE_MARGIN`] before the deadline, then yield-spin (the
    /// most precise, at 1–2 ms of CPU per sleep; opt-in).
    Spin,
    /// A plain tokio sleep (benchmark baseline; ~1.2 ms late).
    Tokio,
}

impl TimerKind {
    /// From `FIREDRILL_PROXY_TIMER` (`hr`, `spin`, `thread`, `tokio`), read once per
    /// process; anything else is the default, `hr`.
    pub fn from_env() -> TimerKind {
        static KIND: OnceLock<TimerKind> = OnceLock::new();
        *KIND.get_or_init(|| match std::env::var("FIREDRILL_PROXY_TIMER").as_deref() {
            Ok("spin") => TimerKind::Spin,
            Ok("thread") => TimerKind::Thread,
            Ok("tokio") => TimerKind::Tokio,
            _ => TimerKind::Hr,
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
        TimerKind::Hr => hr_sleep_until(deadline).await,
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

// ── the hrtimer: a timerfd on the runtime's epoll ─────────────────────────────

/// Sleeps on a one-shot `timerfd` armed for the time left, then re-checks the clock
/// (the kernel fires an hrtimer at or after its expiry, so the loop runs once).
///
/// Per sleep: `timerfd_create`, `timerfd_settime`, two `epoll_ctl` and a `close`,
/// a few microseconds of CPU, against the 1–2 ms a spin costs. Its lateness is the
/// time the kernel takes to wake the runtime's thread, which on an idle VM is the
/// cost of leaving the idle state (~0.2 ms measured here), far less on a busy one.
/// Should the descriptor be refused (descriptor limit), it falls back to the spin.
async fn hr_sleep_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        match hr_wait(deadline - now).await {
            Ok(()) => {}
            Err(e) => {
                tracing::debug!("timerfd unavailable ({e}); spinning instead");
                return spin_sleep_until(deadline).await;
            }
        }
    }
}

/// Timerfds kept registered with the epoll of a thread that runs one runtime for its
/// whole life (a proxy's thread: see [`pool_timerfds_on_this_thread`]), so that a
/// sleep costs one `timerfd_settime` instead of six syscalls. `None`
/// on every other thread, where a runtime may end and another start: a descriptor
/// registered with the old one's epoll would never wake.
type Pool = Vec<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>;
thread_local! {
    static POOL: std::cell::RefCell<Option<Pool>> = const { std::cell::RefCell::new(None) };
}

/// Most timerfds a pool keeps (more concurrent sleeps get fresh ones, closed after).
const POOL_MAX: usize = 256;

/// Lets [`TimerKind::Hr`] keep its timerfds on this thread. Only for a thread that
/// runs a single runtime until it exits.
pub(crate) fn pool_timerfds_on_this_thread() {
    POOL.with(|p| *p.borrow_mut() = Some(Vec::new()));
}

fn new_timerfd() -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: timerfd_create returns a new descriptor or -1; it is owned from here.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the OwnedFd is moved into the AsyncFd, which closes it only after
    // deregistering it; nothing else holds the descriptor.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

async fn hr_wait(left: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let pooled = POOL.with(|p| p.borrow_mut().as_mut().map(|v| v.pop()));
    let afd = match pooled {
        Some(Some(afd)) => afd,
        _ => new_timerfd()?,
    };
    // Relative to the moment of the call, which is after `left` was measured: the
    // expiry is at or after the deadline, never before.
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            // A zero it_value would disarm the timer: at least 1 ns.
            tv_nsec: (left.subsec_nanos().max(u32::from(left.as_secs() == 0))) as libc::c_long,
        },
    };
    // SAFETY: a valid timerfd and a fully initialised itimerspec; no old value wanted.
    if unsafe { libc::timerfd_settime(afd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    {
        let mut guard = afd.readable().await?;
        // The expiration count is never read: the next `timerfd_settime` resets it
        // (the kernel zeroes a re-armed timer's count), and tokio's epoll is
        // edge-triggered, so the next expiry reports the descriptor afresh. Only
        // tokio's own readiness flag is cleared. One syscall fewer per sleep.
        guard.clear_ready();
    }
    // Back to the pool only after it fired: a sleep dropped before (its connection
    // closed) drops its descriptor, armed or not.
    POOL.with(|p| {
        if let Some(v) = p.borrow_mut().as_mut()
            && v.len() < POOL_MAX
        {
            v.push(afd);
        }
    });
    Ok(())
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
        for kind in [
            TimerKind::Hr,
            TimerKind::Thread,
            TimerKind::Spin,
            TimerKind::Tokio,
        ] {
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

    /// The hrtimer, on a multi-thread runtime as the engine runs it: 300 concurrent
    /// deadlines, each woken at or after its own, and every descriptor closed again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hr_timer_never_fires_before_a_deadline_and_closes_its_descriptors() {
        let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let before = fds();
        let start = Instant::now();
        let tasks: Vec<_> = (0..300)
            .map(|_| {
                let deadline = start + Duration::from_micros(fastrand::u64(0..20_000));
                tokio::spawn(async move {
                    sleep_until_with(TimerKind::Hr, deadline).await;
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
        // Other tests of this binary open files concurrently: allow a little slack,
        // but 300 leaked timerfds would not fit in it.
        assert!(
            fds() <= before + 20,
            "{before} descriptors before, {} after",
            fds()
        );
    }

    /// A proxy's thread keeps its timerfds: thousands of sleeps in waves of 100
    /// concurrent ones, none woken early, and the descriptors stop growing after the
    /// first wave (they are reused, not leaked or recreated).
    #[test]
    fn pooled_hr_timers_are_reused_and_never_early() {
        std::thread::spawn(|| {
            pool_timerfds_on_this_thread();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
            rt.block_on(async {
                let pooled = || POOL.with(|p| p.borrow().as_ref().map_or(0, Vec::len));
                // Descriptors other than the pool's: the pool may still grow after the
                // first wave (on a loaded machine some deadlines pass before their
                // task first runs and never take a timerfd), so it is set apart.
                let mut others_after_first = 0;
                for wave in 0..20 {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..100)
                        .map(|_| {
                            let d = start + Duration::from_micros(fastrand::u64(50..3_000));
                            tokio::spawn(async move {
                                sleep_until_with(TimerKind::Hr, d).await;
                                (d, Instant::now())
                            })
                        })
                        .collect();
                    for t in tasks {
                        let (d, woke) = t.await.unwrap();
                        assert!(woke >= d, "woke {:?} early", d - woke);
                    }
                    if wave == 0 {
                        others_after_first = fds() - pooled();
                    }
                }
                assert!(
                    pooled() <= 100,
                    "{} pooled for 100 concurrent sleeps",
                    pooled()
                );
                // Other tests may open files meanwhile: a little slack, far below the
                // 1,900 descriptors a leak would leave.
                let others = fds() - pooled();
                assert!(
                    others <= others_after_first + 20,
                    "{others_after_first} then {others}"
                );
            });
        })
        .join()
        .unwrap();
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
