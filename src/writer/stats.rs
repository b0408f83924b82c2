//! Atomic counters shared by the handles and the actor, and their snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters. Relaxed ordering is enough: each counter is monotonic and
/// read only for reporting; `flush()` gives the happens-before edge that
/// makes `enqueued == committed + failed` exact after it returns.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) enqueued: AtomicU64,
    /// Write operations finished (committed, failed or spilled), added once
    /// per batch after it ends, so it never counts part of an open batch.
    pub(crate) done: AtomicU64,
    pub(crate) committed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) queued_bytes: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) spilled: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) max_batch_ops: AtomicU64,
    pub(crate) commit_nanos_total: AtomicU64,
    pub(crate) commit_nanos_max: AtomicU64,
    pub(crate) id_leases: AtomicU64,
    pub(crate) lease_waits: AtomicU64,
    pub(crate) step_loads: AtomicU64,
    pub(crate) checkpoint_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn record_batch(&self, ops: u64, nanos: u64) {
        self.batches.fetch_add(1, Relaxed);
        self.max_batch_ops.fetch_max(ops, Relaxed);
        self.commit_nanos_total.fetch_add(nanos, Relaxed);
        self.commit_nanos_max.fetch_max(nanos, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WriterStats {
        let enqueued = self.enqueued.load(Relaxed);
        let committed = self.committed.load(Relaxed);
        let failed = self.failed.load(Relaxed);
        let spilled = self.spilled.load(Relaxed);
        WriterStats {
            enqueued,
            committed,
            rejected: self.rejected.load(Relaxed),
            failed,
            batches: self.batches.load(Relaxed),
            queue_depth: enqueued.saturating_sub(committed + failed + spilled),
            queue_bytes: self.queued_bytes.load(Relaxed),
            retries: self.retries.load(Relaxed),
            spilled,
            dead_letters: self.dead_letters.load(Relaxed),
            // Filled in by the handle, from the watch's findings.
            foreign_sqlite: 0,
            max_batch_ops: self.max_batch_ops.load(Relaxed),
            commit_micros_total: self.commit_nanos_total.load(Relaxed) / 1000,
            commit_micros_max: self.commit_nanos_max.load(Relaxed) / 1000,
            id_leases: self.id_leases.load(Relaxed),
            lease_waits: self.lease_waits.load(Relaxed),
            step_loads: self.step_loads.load(Relaxed),
            checkpoint_failures: self.checkpoint_failures.load(Relaxed),
        }
    }
}

/// A snapshot of the writer's counters.
///
/// After a `flush()` returns, `enqueued == committed + failed` for everything
/// queued before it (plus `spilled`, after a `close()` that spilled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterStats {
    /// Write operations accepted into the queue (reads and flushes are not counted).
    pub enqueued: u64,
    /// Write operations that reached the database.
    pub committed: u64,
    /// Calls refused with `QueueFull`.
    pub rejected: u64,
    /// Accepted write operations that could not be written.
    pub failed: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Write operations queued now, not yet committed, failed or spilled.
    pub queue_depth: u64,
    /// Bytes of write operations queued now.
    pub queue_bytes: u64,
    /// Batch attempts retried after a transient fault (busy, I/O, network).
    pub retries: u64,
    /// Operations written to the spill file: by a `close()` that ran out of
    /// time, or after a fatal error halted the writer.
    pub spilled: u64,
    /// Refused operations (counted in `failed`) kept in the dead-letter file.
    pub dead_letters: u64,
    /// Files of this database (the database or its `-wal`) found open in
    /// this process by another SQLite library, each counted once: its locks
    /// cannot keep that library and this writer apart (Linux only).
    pub foreign_sqlite: u64,
    /// The largest batch committed, in operations.
    pub max_batch_ops: u64,
    /// Time spent applying and committing batches, in microseconds.
    pub commit_micros_total: u64,
    /// The slowest batch, in microseconds.
    pub commit_micros_max: u64,
    /// Id blocks leased from the database.
    pub id_leases: u64,
    /// Times a producer had to wait for an id block.
    pub lease_waits: u64,
    /// Reads of sessions' stored steps asked for (a round trip each on a
    /// remote server): the one `ensure_session` asks for ahead for a session
    /// this writer does not know, the one a first `ensure_timestep` asks for
    /// when none was, and their repeats after a failed or outdated read. A
    /// session begun with
    /// [`ensure_new_session`](crate::TraceStorage::ensure_new_session), as
    /// `SessionTracer::start_session(None, ..)` does, needs none.
    pub step_loads: u64,
    /// WAL checkpoints that failed on the writer's checkpoint thread (a
    /// local file in WAL mode). Nothing committed is lost by one: the rows
    /// are in the WAL, and the next batch checkpoints again. The first
    /// cause is also in `recent_errors()`.
    pub checkpoint_failures: u64,
}

impl WriterStats {
    /// Mean operations per committed batch.
    pub fn mean_batch_ops(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.committed as f64 / self.batches as f64
        }
    }
}
