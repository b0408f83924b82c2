//! [`BufferedTraceWriter`]: producers enqueue, one actor batches and commits.
//!
//! A write call validates and serializes its row on the caller's thread,
//! takes queue space, takes an id from a leased block, sends the row to the
//! actor and returns the id: microseconds, no database round trip. Reads go
//! through the same FIFO, so they see every write queued before them.
//!
//! - `handle`: [`BufferedTraceWriter`], the producers' handle, and its
//!   [`TraceStorage`](crate::TraceStorage) implementation.
//! - `blocking`: [`BlockingWriter`], the same writes for plain threads.
//! - `cache`: the step cache that answers repeated `ensure_timestep` calls.
//! - `reserve`: queue space (the operation and byte bounds).
//! - `actor`: the thread that owns the connection and commits batches.
//! - `ids`: id blocks leased from the database and handed out by producers.
//! - `config`, `stats`, `spill`, `wait`: settings, counters, the spill
//!   and dead-letter files (and their replay), and deadlines.

mod actor;
mod blocking;
mod cache;
mod config;
mod handle;
mod ids;
pub mod metrics;
mod pipeline;
mod protocol;
mod replay;
mod reserve;
mod spill;
mod stats;
mod wait;

use std::sync::Mutex;

pub use blocking::BlockingWriter;
pub use config::{
    OverflowPolicy, WriterConfig, DEFAULT_CLOSE_TIMEOUT, DEFAULT_ENQUEUE_TIMEOUT,
    DEFAULT_ERROR_HISTORY, DEFAULT_FLUSH_TIMEOUT, DEFAULT_ID_BLOCK, DEFAULT_LINGER,
    DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_OPS, DEFAULT_MAX_OP_BYTES, DEFAULT_OPEN_TIMEOUT,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_QUEUE_CAPACITY_BYTES, DEFAULT_REMOTE_ID_BLOCK,
    DEFAULT_REMOTE_MAX_BATCH_BYTES, DEFAULT_REMOTE_MAX_BATCH_OPS,
    DEFAULT_REMOTE_QUEUE_CAPACITY_BYTES, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
    DEFAULT_SESSION_CACHE,
};
pub use handle::BufferedTraceWriter;
pub use replay::{replay_spill_file, replay_spill_file_with_progress, RefusedLine, ReplayReport};
pub use stats::WriterStats;

/// Locks a mutex of the writer's, whether or not a panic poisoned it.
///
/// Every critical section on the writer's mutexes is a few assignments, a
/// map insert or a heap push: a panic elsewhere cannot leave the data
/// half-updated, so a poisoned lock is safe to use, and a producer never
/// panics because another one did.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
