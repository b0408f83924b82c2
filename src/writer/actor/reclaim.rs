//! Freeing finished batches off the actor's thread.
//!
//! A committed batch is thousands of operations, each a row of values the
//! producers allocated. Freeing them is work the actor need not do: with
//! thousands of rollouts at once the actor's thread is the one that bounds
//! the writer, while the other cores wait. So the actor hands each finished
//! batch to a thread of its own, `trace-writer-free`, which frees it and
//! only then gives the batch's queue space back. The queue's bounds
//! (`queue_capacity`, `queue_capacity_bytes`) keep covering the batch until
//! its memory is gone.
//!
//! The hand-over never waits: when the thread still frees the batch before
//! (one at a time is enough to keep up), or could not be started, the actor
//! frees the batch itself, as it did before. A flush waits for the thread
//! ([`Reclaim::settle`]), so that once it returns, the queue space of every
//! batch before it is back.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::writer::actor::{Item, Shared};

/// A finished batch and the queue space it holds.
struct Garbage {
    items: Vec<Item>,
    ops: usize,
    bytes: usize,
}

impl Garbage {
    /// Frees the batch, then gives its queue space back.
    fn free(self, shared: &Shared) {
        let Garbage { items, ops, bytes } = self;
        drop(items);
        shared.ops_sem.add_permits(ops);
        shared
            .bytes_sem
            .add_permits(Shared::permits_for(bytes) as usize);
    }
}

/// Batches handed to the thread and not freed yet.
#[derive(Default)]
struct Held {
    batches: Mutex<usize>,
    freed: Condvar,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.batches.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The freeing thread, or nothing if it could not be started.
pub(crate) struct Reclaim {
    shared: Arc<Shared>,
    held: Arc<Held>,
    tx: Option<Sender<Garbage>>,
    thread: Option<JoinHandle<()>>,
}

impl Reclaim {
    /// Starts the thread. Without one (the system refused a thread), every
    /// batch is freed by the caller of [`Reclaim::free`].
    pub(crate) fn start(shared: Arc<Shared>) -> Reclaim {
        // One batch waits while one is freed: at most two batches' memory
        // beyond the queue's, and the queue's bounds cover both.
        let (tx, rx) = crossbeam_channel::bounded::<Garbage>(1);
        let held = Arc::new(Held::default());
        let (for_thread, held_for_thread) = (shared.clone(), held.clone());
        let spawned = std::thread::Builder::new()
            .name("trace-writer-free".into())
            .spawn(move || {
                // Ends when the actor drops its sender.
                for garbage in rx {
                    garbage.free(&for_thread);
                    *held_for_thread.lock() -= 1;
                    held_for_thread.freed.notify_all();
                }
            });
        match spawned {
            Ok(thread) => Reclaim {
                shared,
                held,
                tx: Some(tx),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::debug!(target: "trace_writer", error = %e,
                    "no thread to free batches on; the writer frees them itself");
                Reclaim {
                    shared,
                    held,
                    tx: None,
                    thread: None,
                }
            }
        }
    }

    /// Frees a finished batch of `ops` writes holding `bytes` of queue
    /// space, on the freeing thread if it is free, else here.
    pub(crate) fn free(&self, items: Vec<Item>, ops: usize, bytes: usize) {
        let garbage = Garbage { items, ops, bytes };
        let garbage = match &self.tx {
            Some(tx) => {
                // Counted before the send: the thread uncounts it once freed.
                *self.held.lock() += 1;
                match tx.try_send(garbage) {
                    Ok(()) => return,
                    Err(TrySendError::Full(g) | TrySendError::Disconnected(g)) => {
                        *self.held.lock() -= 1;
                        g
                    }
                }
            }
            None => garbage,
        };
        garbage.free(&self.shared);
    }

    /// Waits, for up to `limit`, until the thread has freed every batch
    /// handed to it, so that their queue space is back. Freeing a batch
    /// takes milliseconds; the limit only guards against a thread that
    /// stopped. Returns whether it got there.
    pub(crate) fn settle(&self, limit: Duration) -> bool {
        let held = self.held.lock();
        let (held, _) = self
            .held
            .freed
            .wait_timeout_while(held, limit, |n| *n > 0)
            .unwrap_or_else(|p| p.into_inner());
        *held == 0
    }
}

impl Drop for Reclaim {
    /// Lets the thread free what it holds and end. Its work is bounded (at
    /// most two batches), so the wait is too.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
