//! State shared by the handles and the actor: counters, ids, queue space,
//! the close deadline, recent errors, and why the actor died (set by the
//! [`DeathGuard`] if its thread stops without a clean close).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tokio::sync::Semaphore;

use crate::db::foreign::Findings;
use crate::db::op::Op;
use crate::error::TracingError;
use crate::writer::ids::IdAllocator;
use crate::writer::lock;
use crate::writer::metrics::WriterMetrics;
use crate::writer::protocol::{Control, Msg};
use crate::writer::spill::KeptFile;
use crate::writer::stats::Counters;
use crate::writer::wait::deadline;

/// Whether the writer is closing, and until when it may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseDeadline {
    /// Not closing.
    Open,
    /// Closing: past this instant, what is left is spilled.
    At(Instant),
    /// Closing with no deadline (`close_timeout(Duration::MAX)`).
    Never,
}

/// State shared by the handles and the actor.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Arc<Counters>,
    /// `true` once closed. Producers hold the read lock only across their
    /// non-blocking send, and `close()` takes the write lock before it sends
    /// `Close`: so every accepted write is queued ahead of `Close`. A dying
    /// actor closes it too ([`DeathGuard`]): after that no write can be
    /// queued, so the ones it takes from the queue are all there are.
    pub(crate) gate: RwLock<bool>,
    /// The metric handles, published by the actor (see `writer/metrics.rs`).
    pub(crate) metrics: WriterMetrics,
    pub(crate) ids: IdAllocator,
    /// Queue space in operations and in bytes. Producers take permits before
    /// they send; the actor gives them back when an operation is done.
    pub(crate) ops_sem: Semaphore,
    pub(crate) bytes_sem: Semaphore,
    /// Set by `close()` or the drop of the last handle: past it, the actor
    /// spills instead of retrying.
    pub(crate) close_deadline: Mutex<CloseDeadline>,
    /// Notified when the close deadline starts.
    pub(crate) close_wake: std::sync::Condvar,
    /// Sessions one of whose step inserts failed: the step caches forget
    /// them before their next lookup, so the step is looked up (and made)
    /// again rather than filed under an id whose row does not exist.
    pub(crate) failed_steps: Mutex<Vec<String>>,
    pub(crate) recent_errors: Mutex<VecDeque<String>>,
    /// Why the actor stopped, if it stopped abnormally.
    pub(crate) dead: Mutex<Option<String>>,
    /// The writes the actor held when it panicked (see
    /// `Actor::hold_on_panic`). The [`DeathGuard`] spills them ahead of what
    /// is still queued.
    pub(crate) held: Mutex<Held>,
    /// The fatal error that halted the writer, and its spill file: write
    /// calls fail fast with it (see `TracingError::Halted`).
    pub(crate) halt: Mutex<Option<(String, PathBuf)>>,
    /// A second SQLite library found with the database open (see
    /// `db/foreign.rs`): counted, and warnings kept for the handles.
    pub(crate) foreign: Arc<Findings>,
    /// While the actor lingers: the count of enqueued writes at which its
    /// batch is full. The producer whose write reaches it sends
    /// `Control::Wake`; `u64::MAX` otherwise (see `Actor::linger`).
    pub(crate) full_at: AtomicU64,
    /// A producer waits for queue space: the lingering batch holds it, so
    /// the batch is sent at once (see `Actor::linger`).
    pub(crate) space_wanted: AtomicBool,
    /// The control channel, for `Control::Wake`.
    pub(crate) wake_tx: crossbeam_channel::Sender<Control>,
}

impl Shared {
    /// Keeps `text` for `recent_errors()`, the oldest going past `history`.
    pub(crate) fn remember(&self, text: String, history: usize) {
        let mut recent = lock(&self.recent_errors);
        if recent.len() >= history.max(1) {
            recent.pop_front();
        }
        recent.push_back(text);
    }

    /// Ends a linger because a producer must wait for queue space.
    pub(crate) fn want_space(&self) {
        self.space_wanted.store(true, Ordering::Release);
        // A closed channel means the actor is gone; the wait reports it.
        let _ = self.wake_tx.send(Control::Wake);
    }

    pub(crate) fn permits_for(bytes: usize) -> u32 {
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    pub(crate) fn past_close_deadline(&self) -> bool {
        match *lock(&self.close_deadline) {
            CloseDeadline::At(d) => Instant::now() >= d,
            CloseDeadline::Open | CloseDeadline::Never => false,
        }
    }

    /// Sleeps `d` between retries, but not past the close deadline: once it
    /// passes, the retry loop spills instead of waiting.
    ///
    /// A close that starts during the sleep wakes it (the condition variable
    /// is notified under the same lock), so a long `retry_max` never delays
    /// a close past its deadline.
    pub(crate) fn sleep_until_close_deadline(&self, d: Duration) {
        let until = deadline(d);
        let mut state = lock(&self.close_deadline);
        loop {
            let end = match (*state, until) {
                (CloseDeadline::At(at), Some(u)) => at.min(u),
                (CloseDeadline::At(at), None) => at,
                (_, Some(u)) => u,
                // No deadline on either side: wait for a close.
                (_, None) => Instant::now() + Duration::from_secs(86_400),
            };
            let now = Instant::now();
            if now >= end {
                return;
            }
            state = self
                .close_wake
                .wait_timeout(state, end - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// `d`, but no longer than the time left before the close deadline:
    /// how long a wait on the actor's thread may last.
    pub(crate) fn within_close_deadline(&self, d: Duration) -> Duration {
        self.until_close_deadline().map_or(d, |left| left.min(d))
    }

    /// Time left before the close deadline, if one runs.
    pub(crate) fn until_close_deadline(&self) -> Option<Duration> {
        match *lock(&self.close_deadline) {
            CloseDeadline::At(at) => Some(at.saturating_duration_since(Instant::now())),
            CloseDeadline::Open | CloseDeadline::Never => None,
        }
    }

    /// Starts the close deadline, `limit` from now, unless one runs already.
    pub(crate) fn start_close_deadline(&self, limit: Duration) {
        let mut d = lock(&self.close_deadline);
        if *d == CloseDeadline::Open {
            *d = match deadline(limit) {
                Some(at) => CloseDeadline::At(at),
                None => CloseDeadline::Never,
            };
            // Wake a retry backoff: it sleeps on this lock's condvar.
            self.close_wake.notify_all();
        }
    }

    /// `TracingError::Halted` if a fatal error halted the writer.
    pub(crate) fn halted_error(&self) -> Option<TracingError> {
        let halt = lock(&self.halt);
        let (cause, path) = halt.as_ref()?;
        Some(TracingError::Halted {
            cause: cause.clone(),
            path: path.clone(),
            spilled: self
                .counters
                .spilled
                .load(std::sync::atomic::Ordering::Relaxed) as usize,
        })
    }

    pub(crate) fn dead_cause(&self) -> Option<String> {
        lock(&self.dead).clone()
    }

    /// The gate, read: `true` once closed. A producer holds it across its
    /// non-blocking send (see [`Shared::gate`]).
    pub(crate) fn gate_closed(&self) -> RwLockReadGuard<'_, bool> {
        self.gate.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the gate: no write is queued after this returns. `false` if it
    /// was closed already.
    pub(crate) fn close_gate(&self) -> bool {
        let mut gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        !std::mem::replace(&mut *gate, true)
    }
}

/// Takes the writes still queued. Reads and flushes in the queue fail as
/// their reply is dropped.
pub(super) fn queued_writes(rx: &Receiver<Msg>) -> impl Iterator<Item = Op> + '_ {
    rx.try_iter().filter_map(|msg| match msg {
        Msg::Write { op, .. } => Some(op),
        _ => None,
    })
}

/// The writes a panicking actor held, in the order they were accepted:
/// what it was collecting, the batch it was writing and the batches
/// collected behind it, then what it took from the queue.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// The writes, filed under the step rows the executor learnt.
    pub(crate) ops: Vec<Op>,
    /// How many of `ops`, at their end, it took from the queue.
    pub(crate) from_queue: usize,
}

/// Marks the writer dead if the actor thread unwinds or returns early, so
/// that no producer is left waiting, and spills the writes the actor held
/// ([`Held`]) and what was still queued.
pub(super) struct DeathGuard {
    pub(super) shared: Arc<Shared>,
    pub(super) clean: bool,
    /// The queue, to take what is left in it.
    pub(super) rx: Receiver<Msg>,
    /// A spill file of its own beside the actor's (which may be open).
    pub(super) spill: KeptFile,
}

impl Drop for DeathGuard {
    fn drop(&mut self) {
        // Nothing more is queued; every producer that waits for space or ids
        // is woken and fails with `WriterClosed` instead of hanging.
        self.shared.close_gate();
        self.shared.ops_sem.close();
        self.shared.bytes_sem.close();
        self.shared.ids.shut_down(TracingError::WriterClosed);
        if self.clean {
            return;
        }
        let how = if std::thread::panicking() {
            "panicked"
        } else {
            "stopped"
        };
        let cause = format!("the writer's actor thread {how}");
        // Writes the actor held, then writes still queued: all were
        // accepted, so they go to the spill file, in queue order, for
        // replay.
        let held = std::mem::take(&mut *lock(&self.shared.held));
        let in_batch = held.ops.len().saturating_sub(held.from_queue);
        let ops: Vec<Op> = held
            .ops
            .into_iter()
            .chain(queued_writes(&self.rx))
            .collect();
        let what = format!(
            "{} operation(s) ({in_batch} the actor held in its batches, {} still queued)",
            ops.len(),
            ops.len() - in_batch
        );
        let kept = match self.spill.append(ops.iter().map(|op| (op, cause.as_str()))) {
            Ok(()) => {
                Counters::add(&self.shared.counters.spilled, ops.len() as u64);
                format!("{what} were spilled to {}", self.spill.path().display())
            }
            Err(e) => format!(
                "{what} could not be spilled to {}: {e}",
                self.spill.path().display()
            ),
        };
        // What is accepted and neither committed, refused nor spilled is
        // lost: nothing, unless the actor stopped without panicking in the
        // middle of a batch, or the spill file could not be written.
        let lost = self.shared.counters.snapshot().queue_depth;
        let cause = if lost == 0 {
            format!("{cause}; {kept}")
        } else {
            format!("{cause}; {kept}; {lost} accepted operation(s) were not kept")
        };
        tracing::error!(target: "trace_writer", "{cause}");
        lock(&self.shared.dead).get_or_insert(cause);
    }
}
