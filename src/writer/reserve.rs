//! Queue space: the operation and byte bounds a producer reserves before it
//! sends, and gives back if it does not send.

use tokio::sync::TryAcquireError;

use crate::db::Op;
use crate::error::TracingError;
use crate::writer::actor::Shared;
use crate::writer::config::{OverflowPolicy, WriterConfig};
use crate::writer::stats::Counters;
use crate::writer::wait::bounded;

/// Queue space taken by a producer; given back on drop unless sent.
#[must_use = "dropping a reservation gives its queue space back"]
pub(crate) struct Reservation<'a> {
    shared: &'a Shared,
    bytes: u32,
    armed: bool,
}

impl Reservation<'_> {
    /// The operation was sent: the actor gives the space back once it is done.
    pub(crate) fn sent(mut self) {
        self.armed = false;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.ops_sem.add_permits(1);
            self.shared.bytes_sem.add_permits(self.bytes as usize);
        }
    }
}

/// The bytes `op` counts against the byte bound.
///
/// # Errors
/// `InvalidInput` if it is larger than `max_op_bytes`.
pub(crate) fn check_size(config: &WriterConfig, op: &Op) -> Result<usize, TracingError> {
    let bytes = op.size_bytes();
    if bytes > config.max_op_bytes {
        return Err(TracingError::InvalidInput(format!(
            "{} of {bytes} bytes is larger than max_op_bytes ({})",
            op.kind(),
            config.max_op_bytes
        )));
    }
    Ok(bytes)
}

/// Takes queue space for one operation of `bytes`, as the overflow policy
/// says.
///
/// # Errors
/// `QueueFull` under `Reject`, `Timeout` past `enqueue_timeout` under
/// `Block`, `WriterClosed` once the actor is gone.
///
/// # Cancel safety
/// Dropped half-way, it gives back whatever it had taken.
pub(crate) async fn reserve<'a>(
    shared: &'a Shared,
    config: &WriterConfig,
    bytes: usize,
) -> Result<Reservation<'a>, TracingError> {
    let n = Shared::permits_for(bytes);
    let closed = |_| TracingError::WriterClosed;
    match config.overflow {
        OverflowPolicy::Reject => {
            let reject = |e: TryAcquireError| match e {
                TryAcquireError::NoPermits => {
                    Counters::add(&shared.counters.rejected, 1);
                    TracingError::QueueFull
                }
                TryAcquireError::Closed => TracingError::WriterClosed,
            };
            let ops = shared.ops_sem.try_acquire_many(1).map_err(reject)?;
            let b = shared.bytes_sem.try_acquire_many(n).map_err(reject)?;
            ops.forget();
            b.forget();
        }
        OverflowPolicy::Block => {
            // The common case takes no timer: space is there.
            let now = shared.ops_sem.try_acquire_many(1).ok().and_then(|ops| {
                let b = shared.bytes_sem.try_acquire_many(n).ok()?;
                Some((ops, b))
            });
            if let Some((ops, b)) = now {
                ops.forget();
                b.forget();
                return Ok(Reservation {
                    shared,
                    bytes: n,
                    armed: true,
                });
            }
            shared.want_space();
            let started = std::time::Instant::now();
            bounded(config.enqueue_timeout, "waiting for queue space", async {
                // Both guards give their permits back if this future is
                // dropped half-way.
                let ops = shared.ops_sem.acquire_many(1).await.map_err(closed)?;
                let b = shared.bytes_sem.acquire_many(n).await.map_err(closed)?;
                ops.forget();
                b.forget();
                Ok::<_, TracingError>(())
            })
            .await??;
            shared.metrics.enqueue_wait(started.elapsed());
        }
    }
    Ok(Reservation {
        shared,
        bytes: n,
        armed: true,
    })
}
