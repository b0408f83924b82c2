//! [`BufferedTraceWriter`]: the producers' handle, and its
//! [`TraceStorage`] implementation.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use tokio::sync::{oneshot, Semaphore};

use crate::db::{Op, Table};
use crate::error::TracingError;
use crate::storage::StorageConfig;
#[cfg(doc)]
use crate::storage::TraceStorage;
use crate::writer::actor::{self, CloseDeadline, Control, Msg, Shared};
use crate::writer::cache::SessionCache;
use crate::writer::config::WriterConfig;
use crate::writer::ids;
use crate::writer::lock;
use crate::writer::metrics::{self, WriterMetrics};
use crate::writer::reserve::Reservation;
use crate::writer::stats::{Counters, WriterStats};
use crate::writer::wait::{block_on_deadline, bounded};

mod close;
mod steps;
mod storage;

/// Extra time `close()` gives the actor past `close_timeout` to write the
/// spill file and answer.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A batching writer that stands in for [`crate::LibsqlTraceStorage`].
///
/// It is a cheap [`Clone`] handle: every clone feeds the same actor thread,
/// which owns the only connection. Share it as `Arc<dyn TraceStorage>` with
/// code written for the plain backend, or use [`BufferedTraceWriter::blocking`]
/// on threads without a runtime.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use trace_writer::*;
///
/// let writer = BufferedTraceWriter::new(StorageConfig::memory(), WriterConfig::default()).await?;
/// let storage: Arc<dyn TraceStorage> = Arc::new(writer.clone());
/// storage.ensure_session("s1", chrono::Utc::now(), &serde_json::json!({})).await?;
/// let reward = OutcomeReward { total_reward: 1.0, ..Default::default() };
/// assert_eq!(storage.insert_outcome_reward("s1", &reward).await?, 1);
/// writer.flush().await?;
/// assert_eq!(writer.stats().committed, 2);
/// writer.close().await?;
/// assert!(matches!(storage.get_session("s1").await, Err(TracingError::WriterClosed)));
/// # Ok::<(), TracingError>(()) }).unwrap();
/// ```
///
/// # Durability
/// - When a write call returns `Ok`, the operation is in the writer's memory
///   and ends in exactly one of three places: committed in order; refused
///   by the database and kept, with its cause, in the dead-letter file; or
///   spilled, in order, to the spill file (past the close deadline, or
///   after a fatal error). Both files replay with
///   [`crate::replay_spill_file`]. Nothing accepted is discarded.
/// - When [`BufferedTraceWriter::flush`] returns `Ok`, everything queued
///   before it is committed to the database (on a WAL file with
///   `Synchronous::Normal`, a power loss may still drop the last commits; an
///   application crash cannot).
/// - When [`TraceStorage::close`] returns, everything is committed, or was
///   spilled to the file that its error names.
///
/// # Cancel safety
/// A write call's future is cancel safe: dropped before it completes, it has
/// queued nothing and used up no id (its queue space is given back). Once it
/// returned `Ok`, the operation is queued whatever happens to the caller. A
/// read, `query` or `delete_session` dropped after it was sent still runs in
/// its turn; only the answer is discarded.
///
/// # Errors
/// Write calls fail with `InvalidInput` for bad input (nothing queued),
/// `QueueFull` under [`OverflowPolicy::Reject`](crate::OverflowPolicy::Reject), `Timeout` after
/// `enqueue_timeout` under [`OverflowPolicy::Block`](crate::OverflowPolicy::Block), `WriterClosed`
/// after `close()` or when the actor is gone, and `Halted` once an error no
/// retry can fix (a missing or read-only table, a corrupt file, a refused
/// token) halted the writer: they fail fast with its cause and spill file
/// rather than accept writes that could only be spilled. Failures of queued
/// writes are reported by the next `flush()` or `close()`, counted in
/// [`WriterStats::failed`] (refused) or [`WriterStats::spilled`], and listed
/// by [`BufferedTraceWriter::recent_errors`] (each distinct cause once
/// between two flushes).
///
/// # Drop
/// Dropping the last handle without `close()` (returning from `main`, a
/// panic unwinding) closes the writer there and then: the dropping thread
/// blocks until everything queued is committed, for at most
/// `close_timeout` plus a 5 s grace period. Whatever cannot be committed by
/// then is spilled, and the drop says so through `tracing` (and on stderr
/// when no subscriber is installed). The actor runs on its own thread and
/// runtime, so this never deadlocks a current-thread runtime. Call
/// [`TraceStorage::close`] in async code to wait without blocking a runtime
/// thread and to get the result.
///
/// # Runtime
/// Every deadline runs on the writer's own timer thread with the system
/// clock, not on tokio's timer: the runtime needs no time driver, and a
/// paused tokio clock (`tokio::time::pause()`) does not fire them. A wait
/// costs the same however many others are pending. Both multi-thread and
/// current-thread runtimes work; the actor has its own thread.
///
/// ```
/// use trace_writer::*;
///
/// // A runtime with neither a time nor an I/O driver.
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// rt.block_on(async {
///     let writer = BufferedTraceWriter::new(StorageConfig::memory(), WriterConfig::default()).await?;
///     writer.ensure_session("s", chrono::Utc::now(), &serde_json::json!({})).await?;
///     writer.flush().await?;
///     writer.close().await
/// })?;
/// # Ok::<(), TracingError>(())
/// ```
#[derive(Clone)]
pub struct BufferedTraceWriter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BufferedTraceWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedTraceWriter")
            .field("storage", &self.inner.storage)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    tx: Sender<Msg>,
    /// Step loads that need not wait their turn (see [`SessionCache`]).
    control_tx: Sender<Control>,
    shared: Arc<Shared>,
    config: WriterConfig,
    storage: StorageConfig,
    /// Set once the database is open: only then can anything be queued, and
    /// only then does a drop wait for the actor.
    ready: AtomicBool,
    sessions: Mutex<SessionCache>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BufferedTraceWriter {
    /// Starts the actor, opens the database and migrates its schema before it
    /// returns, so a bad path or URL fails here.
    ///
    /// # Errors
    /// `InvalidInput` for a bad config, URL or folder; `Database` when the
    /// database cannot be opened, reached or migrated; `Timeout` past
    /// `open_timeout`.
    pub async fn new(storage: StorageConfig, config: WriterConfig) -> Result<Self, TracingError> {
        let (writer, ready) = Self::spawn(storage, config.clone())?;
        let outcome = bounded(config.open_timeout, "opening the database", ready)
            .await?
            .map_err(|_| writer.closed_error())?;
        outcome?;
        writer.inner.ready.store(true, Ordering::Release);
        Ok(writer)
    }

    /// As [`BufferedTraceWriter::new`], for threads without a runtime.
    ///
    /// # Errors
    /// As [`BufferedTraceWriter::new`].
    pub fn new_blocking(
        storage: StorageConfig,
        config: WriterConfig,
    ) -> Result<Self, TracingError> {
        let (writer, ready) = Self::spawn(storage, config.clone())?;
        let outcome = block_on_deadline(ready, config.open_timeout)
            .ok_or_else(|| TracingError::Timeout("opening the database".into()))?
            .map_err(|_| writer.closed_error())?;
        outcome?;
        writer.inner.ready.store(true, Ordering::Release);
        Ok(writer)
    }

    fn spawn(
        storage: StorageConfig,
        config: WriterConfig,
    ) -> Result<(Self, actor::StartReply), TracingError> {
        let remote = matches!(storage.kind()?, crate::storage::DbKind::Remote(_));
        // Checked with the backend's defaults filled in: a remote writer's
        // queue is smaller, and `max_op_bytes` must fit in it.
        let config = config.for_backend(remote);
        config.validate()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            counters: counters.clone(),
            metrics: WriterMetrics::new(
                &(config.name.clone()).unwrap_or_else(|| metrics::default_name(&storage)),
            ),
            ids: ids::IdAllocator::new(config.id_block, control_tx.clone(), counters),
            ops_sem: Semaphore::new(config.queue_capacity),
            bytes_sem: Semaphore::new(config.queue_capacity_bytes),
            close_deadline: Mutex::new(CloseDeadline::Open),
            close_wake: std::sync::Condvar::new(),
            failed_steps: Mutex::new(Vec::new()),
            recent_errors: Mutex::new(VecDeque::new()),
            dead: Mutex::new(None),
            held: Mutex::default(),
            halt: Mutex::new(None),
            foreign: Arc::default(),
            full_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            space_wanted: std::sync::atomic::AtomicBool::new(false),
            wake_tx: control_tx.clone(),
            gate: RwLock::new(false),
        });
        let (thread, ready) = actor::spawn(
            rx,
            control_rx,
            shared.clone(),
            config.clone(),
            storage.clone(),
        )?;
        let writer = Self {
            inner: Arc::new(Inner {
                tx,
                control_tx,
                shared,
                config,
                storage,
                ready: AtomicBool::new(false),
                sessions: Mutex::new(SessionCache::default()),
                thread: Mutex::new(Some(thread)),
            }),
        };
        Ok((writer, ready))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WriterStats {
        let mut stats = self.inner.shared.counters.snapshot();
        stats.foreign_sqlite = self.inner.shared.foreign.count();
        stats
    }

    /// Warnings about a second SQLite library that has this writer's
    /// database (or its `-wal`) open in this process, each returned once:
    /// POSIX locks are per process, so SQLite's locking cannot keep the two
    /// apart, and either can lose the other's commits. Looked for on Linux
    /// when the writer opens, and at most once a second while it writes;
    /// each file is also reported once through a `tracing` WARN and counted
    /// in [`WriterStats::foreign_sqlite`]. The Python bindings raise each as
    /// a `RuntimeWarning`.
    ///
    /// Read from the same process through the writer itself
    /// ([`TraceStorage::query`], [`TraceStorage::get_session`]), or from
    /// another process.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use trace_writer::*;
    /// let writer = BufferedTraceWriter::new(StorageConfig::memory(), WriterConfig::default()).await?;
    /// assert!(writer.take_foreign_sqlite_warnings().is_empty());
    /// assert_eq!(writer.stats().foreign_sqlite, 0);
    /// writer.close().await?;
    /// # Ok::<(), TracingError>(()) }).unwrap();
    /// ```
    pub fn take_foreign_sqlite_warnings(&self) -> Vec<String> {
        self.inner.shared.foreign.take()
    }

    /// The most recent write errors, oldest first: refusals (naming the
    /// operation's kind and session), retried faults, a fatal error. Each
    /// distinct cause appears once between two flushes, not once per row or
    /// batch; [`WriterStats`] has the counts.
    pub fn recent_errors(&self) -> Vec<String> {
        lock(&self.inner.shared.recent_errors)
            .iter()
            .cloned()
            .collect()
    }

    /// Why the actor stopped, if it stopped abnormally (a bug). Every call
    /// then fails with `WriterClosed`. If it panicked, the writes it held
    /// (the batch it was writing or collecting, and the batches collected
    /// behind it) and the writes still queued are in a spill file for
    /// [`crate::replay_spill_file`], in the order they were accepted; the
    /// cause names the file and both counts, and any accepted write that
    /// could not be kept. A remote batch the server committed before its
    /// reply was handled is among them, and its replay counts duplicates.
    pub fn failure_cause(&self) -> Option<String> {
        self.inner.shared.dead_cause()
    }

    /// Fault injection for tests: makes the actor thread panic, as a bug
    /// would. Only with the `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn inject_actor_crash(&self) {
        let _ = self.inner.control_tx.send(Control::Crash);
    }

    /// Fault injection for tests: makes the actor thread panic the next
    /// time it encodes a batch to send behind one in flight (remotely), as
    /// a bug in the encoder would. Only with the `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn inject_crash_when_encoding_behind(&self) {
        let _ = self.inner.control_tx.send(Control::CrashWhenEncodingBehind);
    }

    /// The writer's configuration.
    pub fn config(&self) -> &WriterConfig {
        &self.inner.config
    }

    /// The writer's name, the `writer` label of its metrics:
    /// [`WriterConfig::name`], or by default the database file's name,
    /// `:memory:`, or a remote server's host.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use trace_writer::*;
    /// let w = BufferedTraceWriter::new(StorageConfig::memory(), WriterConfig::default()).await?;
    /// assert_eq!(w.name(), ":memory:");
    /// # w.close().await?;
    /// # Ok::<(), TracingError>(()) }).unwrap();
    /// ```
    pub fn name(&self) -> String {
        (self.inner.config.name.clone())
            .unwrap_or_else(|| metrics::default_name(&self.inner.storage))
    }

    /// Resolves once every operation queued before it is committed, and
    /// their queue space is free again: a producer that filled the queue
    /// can send as much once more without waiting (or, under
    /// [`OverflowPolicy::Reject`](crate::OverflowPolicy::Reject), without a `QueueFull`).
    ///
    /// # Errors
    /// - `WriteFailed` with the count and first cause, if the database
    ///   refused writes since the previous flush; the good operations are
    ///   committed all the same, and the refused ones are kept in the
    ///   dead-letter file that the cause names.
    /// - `Halted` (after a fatal error) or `Spilled` (a `close()` ran past
    ///   its deadline meanwhile) while writes are being spilled: nothing
    ///   queued before the flush was committed since. Both name the spill
    ///   file and its count.
    /// - `Timeout` after `flush_timeout`; the operations stay queued.
    /// - `WriterClosed` after `close()`, or if the actor is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves the queue as it was.
    ///
    /// # Durability
    /// On `Ok`, everything queued before the call is committed.
    pub async fn flush(&self) -> Result<(), TracingError> {
        let limit = self.inner.config.flush_timeout;
        self.request(limit, "flush", |reply| Msg::Flush { reply })
            .await?
    }

    /// The one error for a closed channel, a dropped reply and a closed
    /// writer; why the actor stopped, if it died, is in `failure_cause()`.
    fn closed_error(&self) -> TracingError {
        TracingError::WriterClosed
    }

    /// Whether a write may be queued: not after `close()`, and not once a
    /// fatal error halted the writer (failing fast with the cause, rather
    /// than accepting writes that could only be spilled).
    fn check_open(&self) -> Result<(), TracingError> {
        if *self.inner.shared.gate_closed() {
            return Err(TracingError::WriterClosed);
        }
        match self.inner.shared.halted_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends a message that expects an answer, and waits for it.
    async fn request<T>(
        &self,
        limit: Duration,
        what: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, TracingError>>) -> Msg,
    ) -> Result<Result<T, TracingError>, TracingError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply))?;
        // A dropped reply means the actor is gone: the same error as a
        // closed channel.
        bounded(limit, what, answer)
            .await?
            .map_err(|_| self.closed_error())
    }

    fn send(&self, msg: Msg) -> Result<(), TracingError> {
        let gate = self.inner.shared.gate_closed();
        if *gate {
            return Err(TracingError::WriterClosed);
        }
        let write = matches!(msg, Msg::Write { .. });
        let c = &self.inner.shared.counters;
        // A write is counted under the gate and before the send: a dying
        // actor that closed the gate then counts exactly the writes
        // accepted (see `DeathGuard`), and a count read after this call
        // returns (the step cache's eviction marker, taken under its lock)
        // covers this operation, so "done >= marker" cannot pass while it
        // is queued.
        if write {
            Counters::add(&c.enqueued, 1);
        }
        // Unbounded channel: never blocks. Space was reserved beforehand.
        if self.inner.tx.send(msg).is_err() {
            if write {
                c.enqueued.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(self.closed_error());
        }
        if !write {
            // Someone waits for the answer: end a linger now (see
            // `Control::Wake`). A closed channel means the actor is gone,
            // which the answer reports.
            let _ = self.inner.control_tx.send(Control::Wake);
        }
        Ok(())
    }

    /// Write operations finished one way or another (committed, failed or
    /// spilled), counted a whole batch at a time, after the batch.
    fn done_count(&self) -> u64 {
        self.inner.shared.counters.done.load(Ordering::Acquire)
    }

    fn send_write(&self, op: Op, bytes: usize, res: Reservation<'_>) -> Result<(), TracingError> {
        let c = &self.inner.shared.counters;
        self.send(Msg::Write { op, bytes })?;
        res.sent();
        Counters::add(&c.queued_bytes, bytes as u64);
        let shared = &self.inner.shared;
        if c.enqueued.load(Ordering::Acquire) >= shared.full_at.load(Ordering::Acquire)
            && shared.full_at.swap(u64::MAX, Ordering::AcqRel) != u64::MAX
        {
            // The lingering batch is full: send it now.
            let _ = self.inner.control_tx.send(Control::Wake);
        }
        Ok(())
    }

    async fn alloc(&self, table: Table) -> Result<i64, TracingError> {
        let ids = &self.inner.shared.ids;
        // The fast path takes no await and no timer.
        if let Some(id) = ids.try_alloc(table)? {
            return Ok(id);
        }
        bounded(
            self.inner.config.enqueue_timeout,
            "waiting for an id block",
            ids.alloc(table),
        )
        .await?
    }
}
