//! Deadlines for every wait, on any runtime or on a plain thread.
//! (Over 500 lines: 235 of them are the unit tests of the timer.)
//!
//! The deadlines run on one small timer thread with the system clock, not on
//! tokio's timer: they work on a runtime without a time driver, on a plain
//! thread, and under `tokio::time::pause()`, where tokio's clock would jump
//! ahead and fire them while the actor (on its own thread) is still working.
//!
//! A wait costs the same however many others are pending: the pending
//! deadlines are an ordered map keyed by `(instant, sequence)`, so arming,
//! cancelling and firing one are each a map operation (`O(log n)`), and a
//! wait that ends before its deadline removes its own entry at once. The
//! timer thread is woken only when a new deadline is the earliest one, not
//! on every arming, so in steady state (long deadlines, short waits) it
//! sleeps.

use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::error::TracingError;
use crate::writer::lock;

/// Identifies one pending deadline: when it is due, then a sequence number
/// that makes keys unique and keeps deadlines of the same instant in the
/// order they were armed.
type Key = (Instant, u64);

/// The pending deadlines, earliest first.
#[derive(Default)]
struct Deadlines {
    pending: BTreeMap<Key, Waker>,
    next_seq: u64,
}

impl Deadlines {
    /// Adds a deadline; returns its key and whether it is now the earliest
    /// (then whoever sleeps until the earliest must be told).
    fn insert(&mut self, at: Instant, waker: Waker) -> (Key, bool) {
        let key = (at, self.next_seq);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.pending.insert(key, waker);
        let earliest = self
            .pending
            .first_key_value()
            .is_some_and(|(k, _)| *k == key);
        (key, earliest)
    }

    /// Points a pending deadline at a new waker; `false` if it is no longer
    /// pending (it fired).
    fn rewake(&mut self, key: Key, waker: &Waker) -> bool {
        match self.pending.get_mut(&key) {
            Some(w) => {
                if !w.will_wake(waker) {
                    w.clone_from(waker);
                }
                true
            }
            None => false,
        }
    }

    /// Forgets a deadline (its wait ended first).
    fn remove(&mut self, key: Key) {
        self.pending.remove(&key);
    }

    /// Takes the earliest deadline due at `now`, if any.
    fn pop_due(&mut self, now: Instant) -> Option<Waker> {
        let entry = self.pending.first_entry()?;
        if entry.key().0 <= now {
            Some(entry.remove())
        } else {
            None
        }
    }

    /// When the earliest pending deadline is due.
    fn next_at(&self) -> Option<Instant> {
        self.pending.first_key_value().map(|(k, _)| k.0)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.len()
    }
}

struct Timer {
    deadlines: Mutex<Deadlines>,
    /// Signalled when a deadline earlier than every other one is armed.
    changed: Condvar,
}

/// Wakers fired per turn of the timer thread before it takes the lock
/// again: it never holds the lock while it wakes tasks.
const FIRE_BATCH: usize = 64;

fn timer() -> Option<&'static Timer> {
    static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
    *TIMER.get_or_init(Timer::start)
}

impl Timer {
    /// A timer with its thread running, or `None` if no thread could be
    /// started. It lives as long as the process.
    fn start() -> Option<&'static Timer> {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            deadlines: Mutex::new(Deadlines::default()),
            changed: Condvar::new(),
        }));
        thread::Builder::new()
            .name("trace-writer-timer".into())
            .spawn(move || timer.run())
            .ok()
            .map(|_| timer)
    }

    fn run(&self) {
        let mut due: Vec<Waker> = Vec::with_capacity(FIRE_BATCH);
        let mut deadlines = lock(&self.deadlines);
        loop {
            let now = Instant::now();
            while due.len() < FIRE_BATCH {
                match deadlines.pop_due(now) {
                    Some(w) => due.push(w),
                    None => break,
                }
            }
            if !due.is_empty() {
                // Wake without the lock: a woken task that polls its sleep
                // at once takes it.
                drop(deadlines);
                for w in due.drain(..) {
                    w.wake();
                }
                deadlines = lock(&self.deadlines);
                continue;
            }
            deadlines = match deadlines.next_at() {
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(deadlines, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self
                    .changed
                    .wait(deadlines)
                    .unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Arms (or re-arms with a new waker) the deadline `at` of one sleep;
    /// `false` if it is already due.
    fn arm(&self, key: &mut Option<Key>, at: Instant, waker: &Waker) -> bool {
        let mut deadlines = lock(&self.deadlines);
        if let Some(k) = *key {
            if deadlines.rewake(k, waker) {
                return true;
            }
            // It fired since the caller looked at the clock.
            *key = None;
            if Instant::now() >= at {
                return false;
            }
        }
        let (k, earliest) = deadlines.insert(at, waker.clone());
        *key = Some(k);
        drop(deadlines);
        if earliest {
            // The thread sleeps until the previous earliest deadline: this
            // one is sooner. A later one needs no wake-up.
            self.changed.notify_one();
        }
        true
    }

    fn cancel(&self, key: Key) {
        lock(&self.deadlines).remove(key);
    }
}

/// A future that completes at a system-clock instant.
struct Sleep {
    at: Instant,
    timer: Option<&'static Timer>,
    /// Set while a deadline is armed for this sleep.
    key: Option<Key>,
}

impl Sleep {
    fn new(at: Instant) -> Self {
        Self::on(timer(), at)
    }

    fn on(timer: Option<&'static Timer>, at: Instant) -> Self {
        Self {
            at,
            timer,
            key: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let Some(timer) = self.timer else {
            // No timer thread could be started: the wait is unbounded rather
            // than failing at once.
            return Poll::Pending;
        };
        let at = self.at;
        if timer.arm(&mut self.key, at, cx.waker()) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let (Some(timer), Some(key)) = (self.timer, self.key.take()) {
            // Whether it fired or not: removing a fired key is a no-op.
            timer.cancel(key);
        }
    }
}

/// The instant `limit` from now, or `None` (no deadline) when it lies past
/// what the clock can represent: `Duration::MAX` means "wait forever".
pub(crate) fn deadline(limit: Duration) -> Option<Instant> {
    Instant::now().checked_add(limit)
}

/// Runs `fut`, failing with `Timeout` after `limit` (never, for a limit past
/// what the clock can represent, such as `Duration::MAX`).
pub(crate) async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> Result<T, TracingError> {
    let Some(at) = deadline(limit) else {
        return Ok(fut.await);
    };
    let mut fut = pin!(fut);
    let mut sleep = pin!(Sleep::new(at));
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(TracingError::Timeout(format!(
                "{what} took longer than {limit:?}"
            )))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives `fut` on this thread, parking between polls; `None` after `limit`
/// (never, for a limit past what the clock can represent).
///
/// The futures driven here only use runtime-free primitives (channels,
/// semaphores, `Notify`, [`bounded`]), so no tokio runtime is needed.
pub(crate) fn block_on_deadline<F: Future>(fut: F, limit: Duration) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let end = deadline(limit);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        match end {
            None => thread::park(),
            Some(end) => {
                let now = Instant::now();
                if now >= end {
                    return None;
                }
                thread::park_timeout(end - now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A waker that counts its wakes.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A deadline at `at` with a counting waker.
    fn armed(d: &mut Deadlines, at: Instant) -> (Arc<Counting>, Key) {
        let (c, w) = counting();
        (c, d.insert(at, w).0)
    }

    fn counting() -> (Arc<Counting>, Waker) {
        let c = Arc::new(Counting(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn private_timer() -> &'static Timer {
        Timer::start().expect("timer thread")
    }

    fn pending(timer: &'static Timer) -> usize {
        lock(&timer.deadlines).len()
    }

    #[test]
    fn deadlines_fire_in_order_of_instant_then_arming() {
        let base = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Deadlines::default();
        let mut wakers = Vec::new();
        // Armed out of order, two of them for the same instant.
        for offset in [30, 10, 20, 10, 40] {
            let (c, w) = counting();
            let (_, earliest) = d.insert(base + ms(offset), w);
            wakers.push((offset, c, earliest));
        }
        // Only the first arming and the first 10 ms one were the earliest.
        let earliest: Vec<_> = wakers.iter().map(|(_, _, e)| *e).collect();
        assert_eq!(earliest, [true, true, false, false, false]);
        assert!(d.pop_due(base + ms(5)).is_none(), "nothing is due early");
        let mut fired = Vec::new();
        while let Some(w) = d.pop_due(base + ms(25)) {
            w.wake();
            let order: Vec<usize> = wakers
                .iter()
                .map(|(_, c, _)| c.0.load(Ordering::SeqCst))
                .collect();
            fired.push(order);
        }
        // The two 10 ms deadlines in arming order, then the 20 ms one.
        assert_eq!(
            fired,
            [
                vec![0, 1, 0, 0, 0],
                vec![0, 1, 0, 1, 0],
                vec![0, 1, 1, 1, 0]
            ]
        );
        assert_eq!(d.next_at(), Some(base + ms(30)));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn a_cancelled_deadline_is_gone_at_once_and_never_fires() {
        let (base, mut d) = (Instant::now(), Deadlines::default());
        let (c1, k1) = armed(&mut d, base);
        let (c2, k2) = armed(&mut d, base);
        d.remove(k1);
        assert_eq!(d.len(), 1);
        // Removing twice, or removing a fired key, touches nothing else.
        d.remove(k1);
        assert_eq!(d.len(), 1);
        let w = d.pop_due(base).expect("the other one is due");
        w.wake();
        d.remove(k2);
        assert_eq!(
            (c1.0.load(Ordering::SeqCst), c2.0.load(Ordering::SeqCst)),
            (0, 1)
        );
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn rewaking_replaces_the_waker_of_a_pending_deadline_only() {
        let (base, mut d) = (Instant::now(), Deadlines::default());
        let (old, k) = armed(&mut d, base);
        let (new, w_new) = counting();
        assert!(d.rewake(k, &w_new));
        d.pop_due(base).expect("due").wake();
        assert_eq!(old.0.load(Ordering::SeqCst), 0);
        assert_eq!(new.0.load(Ordering::SeqCst), 1);
        assert!(!d.rewake(k, &w_new), "a fired deadline is not re-armed");
    }

    #[test]
    fn many_pending_waits_leave_nothing_behind() {
        let timer = private_timer();
        let far = Instant::now() + Duration::from_secs(3600);
        let mut cx = Context::from_waker(Waker::noop());
        let mut sleeps: Vec<Pin<Box<Sleep>>> = (0..50_000)
            .map(|_| Box::pin(Sleep::on(Some(timer), far)))
            .collect();
        for s in &mut sleeps {
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        // Polling again re-arms in place rather than adding entries.
        for s in sleeps.iter_mut().take(100) {
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(pending(timer), 50_000);
        // A short wait still fires, and not before its instant, with all of
        // them pending.
        let at = Instant::now() + Duration::from_millis(20);
        let fired = block_on_deadline(Sleep::on(Some(timer), at), Duration::from_secs(60));
        assert_eq!(fired, Some(()));
        assert!(Instant::now() >= at);
        // Every wait that ends removes its own entry.
        sleeps.truncate(10_000);
        assert_eq!(pending(timer), 10_000);
        drop(sleeps);
        assert_eq!(pending(timer), 0);
    }

    #[test]
    fn sleeps_wake_their_tasks_at_their_instants() {
        let timer = private_timer();
        let start = Instant::now();
        let done = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = [60u64, 20, 40]
            .into_iter()
            .map(|ms| {
                let done = done.clone();
                thread::spawn(move || {
                    let at = start + Duration::from_millis(ms);
                    let r = block_on_deadline(Sleep::on(Some(timer), at), Duration::from_secs(60));
                    // Never early.
                    assert!(Instant::now() >= at);
                    lock(&done).push(ms);
                    r
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().expect("thread"), Some(()));
        }
        let mut got = lock(&done).clone();
        got.sort_unstable();
        assert_eq!(got, [20, 40, 60]);
        assert_eq!(pending(timer), 0);
    }

    #[test]
    fn bounded_times_out_and_completes() {
        let never = std::future::pending::<()>();
        let r = block_on_deadline(
            bounded(Duration::from_millis(20), "never", never),
            Duration::from_secs(10),
        );
        assert!(matches!(r, Some(Err(TracingError::Timeout(_)))));
        let ready = async { 7 };
        let r = block_on_deadline(
            bounded(Duration::from_secs(10), "ready", ready),
            Duration::from_secs(10),
        );
        assert_eq!(r.map(|r| r.ok()), Some(Some(7)));
    }

    #[test]
    fn no_deadline_for_duration_max() {
        assert_eq!(deadline(Duration::MAX), None);
        let r = block_on_deadline(
            bounded(Duration::MAX, "ready", async { 3 }),
            Duration::from_secs(10),
        );
        assert_eq!(r.map(|r| r.ok()), Some(Some(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn paused_tokio_time_does_not_fire_deadlines() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let _ = tx.send(5);
        });
        // tokio's paused clock would jump past 10 s at once; the system clock does not.
        let got = bounded(Duration::from_secs(10), "reply", rx).await;
        assert_eq!(got.ok().and_then(|r| r.ok()), Some(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waits_that_end_first_leave_no_deadline() {
        let timer = timer().expect("timer");
        let sem = Arc::new(tokio::sync::Semaphore::new(0));
        let tasks: Vec<_> = (0..2_000)
            .map(|_| {
                let sem = sem.clone();
                tokio::spawn(async move {
                    bounded(Duration::from_secs(600), "permit", sem.acquire())
                        .await
                        .map(|p| p.map(|p| p.forget()).is_ok())
                })
            })
            .collect();
        // Other tests share the global timer, but none arms a 600 s deadline.
        let far = Instant::now() + Duration::from_secs(300);
        let armed = || {
            lock(&timer.deadlines)
                .pending
                .keys()
                .filter(|k| k.0 > far)
                .count()
        };
        // Every task waits, with its deadline armed.
        let mut spins = 0;
        while armed() < 2_000 {
            spins += 1;
            assert!(spins < 60_000, "the tasks never all waited");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sem.add_permits(2_000);
        for t in tasks {
            assert_eq!(t.await.expect("task").ok(), Some(true));
        }
        assert_eq!(armed(), 0);
    }
}
