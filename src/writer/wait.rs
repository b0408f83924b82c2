//! Deadlines for every wait, on any runtime or on a plain thread.
//!
//! The deadlines run on one small timer thread with the system clock, not on
//! tokio's timer: they work on a runtime without a time driver, on a plain
//! thread, and under `tokio::time::pause()`, where tokio's clock would jump
//! ahead and fire them while the actor (on its own thread) is still working.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::error::TracingError;
use crate::writer::lock;

/// One pending deadline.
struct Entry {
    at: Instant,
    state: Arc<SleepState>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

#[derive(Default)]
struct SleepState {
    fired: AtomicBool,
    /// Set when the sleep is dropped before it fired.
    cancelled: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

struct Timer {
    heap: Mutex<BinaryHeap<Reverse<Entry>>>,
    changed: Condvar,
}

/// Past this many pending entries, cancelled ones are swept out.
const SWEEP_AT: usize = 4096;

fn timer() -> Option<&'static Timer> {
    static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
    *TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            heap: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
        }));
        thread::Builder::new()
            .name("trace-writer-timer".into())
            .spawn(move || timer.run())
            .ok()
            .map(|_| timer)
    })
}

impl Timer {
    fn run(&self) {
        let mut heap = lock(&self.heap);
        loop {
            let now = Instant::now();
            while heap.peek().is_some_and(|e| e.0.at <= now) {
                if let Some(Reverse(e)) = heap.pop() {
                    e.state.fired.store(true, Ordering::Release);
                    if let Some(w) = lock(&e.state.waker).take() {
                        w.wake();
                    }
                }
            }
            if heap.len() > SWEEP_AT {
                heap.retain(|e| !e.0.state.cancelled.load(Ordering::Acquire));
            }
            heap = match heap.peek().map(|e| e.0.at) {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    self.changed
                        .wait_timeout(heap, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.changed.wait(heap).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

/// A future that completes at a system-clock instant.
struct Sleep {
    at: Instant,
    state: Option<Arc<SleepState>>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let Some(timer) = timer() else {
            // No timer thread could be started: the wait is unbounded rather
            // than failing at once.
            return Poll::Pending;
        };
        match &self.state {
            Some(state) => {
                if state.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                *lock(&state.waker) = Some(cx.waker().clone());
            }
            None => {
                let state = Arc::new(SleepState::default());
                *lock(&state.waker) = Some(cx.waker().clone());
                lock(&timer.heap).push(Reverse(Entry {
                    at: self.at,
                    state: state.clone(),
                }));
                timer.changed.notify_one();
                self.state = Some(state);
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            state.cancelled.store(true, Ordering::Release);
            lock(&state.waker).take();
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
    let mut sleep = pin!(Sleep { at, state: None });
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
    use super::*;

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
}
