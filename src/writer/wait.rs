//! Deadlines for every wait, on a tokio runtime or on a plain thread.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::error::TracingError;

/// Which clock bounds a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// tokio's timer: the caller is on a runtime.
    Tokio,
    /// An outer [`block_on_deadline`] bounds the whole call.
    External,
}

impl Clock {
    /// tokio's timer when called on a runtime, else none (the caller is
    /// bounded from outside).
    pub(crate) fn current() -> Self {
        if tokio::runtime::Handle::try_current().is_ok() {
            Clock::Tokio
        } else {
            Clock::External
        }
    }
}

/// Runs `fut`, failing with `Timeout` after `limit` on the tokio clock.
pub(crate) async fn bounded<T>(
    clock: Clock,
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> Result<T, TracingError> {
    match clock {
        Clock::Tokio => tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| TracingError::Timeout(format!("{what} took longer than {limit:?}"))),
        Clock::External => Ok(fut.await),
    }
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

/// Drives `fut` on this thread, parking between polls; `None` after `limit`.
///
/// The futures driven here only use runtime-free primitives (channels,
/// semaphores, `Notify`), so no tokio runtime is needed.
pub(crate) fn block_on_deadline<F: Future>(fut: F, limit: Duration) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let end = Instant::now() + limit;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= end {
            return None;
        }
        thread::park_timeout(end - now);
    }
}
