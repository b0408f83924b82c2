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
//! frees the batch itself, as it did before.

use std::sync::Arc;
use std::thread::JoinHandle;

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

/// The freeing thread, or nothing if it could not be started.
pub(crate) struct Reclaim {
    shared: Arc<Shared>,
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
        let for_thread = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("trace-writer-free".into())
            .spawn(move || {
                // Ends when the actor drops its sender.
                for garbage in rx {
                    garbage.free(&for_thread);
                }
            });
        match spawned {
            Ok(thread) => Reclaim {
                shared,
                tx: Some(tx),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::debug!(target: "trace_writer", error = %e,
                    "no thread to free batches on; the writer frees them itself");
                Reclaim {
                    shared,
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
            Some(tx) => match tx.try_send(garbage) {
                Ok(()) => return,
                Err(TrySendError::Full(g) | TrySendError::Disconnected(g)) => g,
            },
            None => garbage,
        };
        garbage.free(&self.shared);
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
