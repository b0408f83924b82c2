//! Closing: `close()`, and the drop of the last handle, which closes too.

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use crate::error::TracingError;
use crate::writer::actor::{Control, Msg};
use crate::writer::handle::{BufferedTraceWriter, Inner, CLOSE_GRACE};
use crate::writer::lock;
use crate::writer::wait::{block_on_deadline, bounded};

impl Inner {
    /// Closes the gate and sends `Close` behind everything queued. `None` if
    /// the writer was closed already or its actor is gone.
    fn begin_close(&self) -> Option<oneshot::Receiver<Result<(), TracingError>>> {
        if !self.shared.close_gate() {
            return None;
        }
        self.shared.start_close_deadline(self.config.close_timeout);
        let (reply, answer) = oneshot::channel();
        // The gate is closed, so `send` would refuse: go to the channel.
        self.tx.send(Msg::Close { reply }).ok()?;
        // End a linger now (see `Control::Wake`).
        let _ = self.control_tx.send(Control::Wake);
        Some(answer)
    }

    /// What `close()` returns, from the actor's answer (or its absence).
    fn close_result(
        &self,
        answer: Result<Result<Result<(), TracingError>, oneshot::error::RecvError>, TracingError>,
    ) -> Result<(), TracingError> {
        match answer {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(TracingError::WriterClosed),
            Err(_) => {
                let left = self.shared.counters.snapshot().queue_depth as usize;
                Err(TracingError::CloseFailed {
                    count: left,
                    cause: format!(
                        "the close deadline of {:?} passed with {left} operation(s) uncommitted",
                        self.config.close_timeout
                    ),
                })
            }
        }
    }
}

impl Drop for Inner {
    /// The last handle is gone without `close()`: close here, blocking this
    /// thread until everything queued is committed, for at most
    /// `close_timeout` (plus a grace period to write the spill file). The
    /// actor has its own thread and runtime, so this cannot deadlock the
    /// caller's runtime, current-thread ones included.
    fn drop(&mut self) {
        let Some(answer) = self.begin_close() else {
            // Closed already, or the actor is gone: if it died (a bug) with
            // writes queued, nobody else is left to say they were lost.
            let left = self.shared.counters.snapshot().queue_depth;
            if let Some(cause) = self.shared.dead_cause().filter(|_| left > 0) {
                report_drop_error(&TracingError::CloseFailed {
                    count: left as usize,
                    cause,
                });
            }
            return;
        };
        if !self.ready.load(Ordering::Acquire) {
            // `new()` failed or timed out: nothing was ever accepted.
            return;
        }
        let limit = self.config.close_timeout.saturating_add(CLOSE_GRACE);
        let answered = block_on_deadline(answer, limit);
        let joined = matches!(answered, Some(Ok(_)));
        let result = self
            .close_result(answered.ok_or_else(|| TracingError::Timeout("closing on drop".into())));
        match &result {
            Ok(()) => tracing::debug!(target: "trace_writer",
                "the last handle was dropped: everything queued is committed"),
            Err(e) => report_drop_error(e),
        }
        if joined {
            // The actor answered just before its thread ends.
            if let Some(handle) = lock(&self.thread).take() {
                let _ = handle.join();
            }
        }
    }
}

/// Says what a close on drop could not commit: through `tracing`, and on
/// stderr as well when no subscriber is installed, since nobody is left to
/// receive an error.
fn report_drop_error(e: &TracingError) {
    let text = format!("trace-writer: the last writer handle was dropped without close(): {e}");
    tracing::error!(target: "trace_writer", error = %e,
        "the last writer handle was dropped without close()");
    if !tracing::dispatcher::has_been_set() {
        eprintln!("{text}");
    }
}

impl BufferedTraceWriter {
    /// `close()`: drains the queue, commits, closes the connection and joins
    /// the actor, within `close_timeout`.
    pub(super) async fn close_now(&self) -> Result<(), TracingError> {
        let Some(answer) = self.inner.begin_close() else {
            // Closing twice is harmless; a dead actor is reported as closed.
            return match self.failure_cause() {
                Some(_) => Err(self.closed_error()),
                None => Ok(()),
            };
        };
        let limit = self.inner.config.close_timeout.saturating_add(CLOSE_GRACE);
        let answered = bounded(limit, "close", answer).await;
        let timed_out = answered.is_err();
        let result = self.inner.close_result(answered);
        if timed_out {
            return result;
        }
        // The actor answered just before its thread ends: join it off the
        // runtime's threads, and give up waiting (not the result) after the
        // grace period.
        let handle = lock(&self.inner.thread).take();
        if let Some(handle) = handle {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let joined = rt.spawn_blocking(move || handle.join());
                    if bounded(CLOSE_GRACE, "joining the writer thread", joined)
                        .await
                        .is_err()
                    {
                        tracing::warn!(target: "trace_writer", "the writer thread did not end in time");
                    }
                }
                Err(_) => {
                    let _ = handle.join();
                }
            }
        }
        result
    }
}
