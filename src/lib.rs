//! # trace-writer
//!
//! High-throughput logging of RL rollout traces (sessions, timesteps, LLM
//! calls, environment steps, messages and rewards) into libsql: a local
//! SQLite file, `:memory:`, or a remote libsql server (Turso, sqld).
//!
//! # Guide
//! Open a [`BufferedTraceWriter`] and hand it, as `Arc<dyn TraceStorage>`,
//! to code written for the plain [`LibsqlTraceStorage`], or record through a
//! [`SessionTracer`]. Write calls return the row's real id at once; call
//! [`BufferedTraceWriter::flush`] where you need to know it is committed,
//! and `close()` at the end.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use trace_writer::*;
//!
//! let writer = BufferedTraceWriter::new(StorageConfig::memory(), WriterConfig::default()).await?;
//! let tracer = SessionTracer::new(Arc::new(writer.clone()));
//! let session = tracer.start_session(None, Default::default()).await?;
//! tracer.start_timestep("step-0", Some(0), Default::default()).await?;
//! let event = TracingEvent::Runtime(RuntimeEvent { base: BaseEventFields::new("agent"), actions: vec![2] });
//! assert_eq!(tracer.record_event(event).await?, Some(1));
//! tracer.end_session(true).await?;
//! writer.flush().await?;
//! assert_eq!(writer.get_session(&session).await?.unwrap().num_events(), 1);
//! writer.close().await?;
//! # Ok::<(), TracingError>(()) }).unwrap();
//! ```
//!
//! # Design
//! - Producers validate their input and serialize every JSON column on their
//!   own thread, then send a ready row (an operation) over a crossbeam
//!   channel. The actor thread only binds values.
//! - Ids come from blocks leased ahead of time by raising the table's row in
//!   `sqlite_sequence`. Ids stay unique across processes and beside a plain
//!   backend, and on a fresh database one writer numbers rows 1, 2, 3, …
//! - One actor thread owns the only connection. It takes whatever is queued,
//!   up to `max_batch_ops` and `max_batch_bytes`, and applies it in one
//!   explicit transaction with prepared statements (on remote servers, with
//!   multi-row inserts). Under load batches grow by themselves: group commit.
//! - All producers share one FIFO. Reads are answered in it, so they see
//!   every write queued before them. `flush()` is a barrier message in that
//!   FIFO, not a counter.
//! - Faults: a poison operation is set aside, counted and reported while the
//!   rest commit. Busy, locked, I/O, disk-full and network faults are retried
//!   with bounded backoff. Past `close_timeout` what is left is spilled to a
//!   JSON-lines file that [`replay_spill_file`] applies later.
//!
//! # Durability
//! - When a write call returns `Ok`, the operation is in memory and queued.
//! - When `flush()` returns `Ok`, everything queued before it is committed.
//!   With WAL and `Synchronous::Normal` (the default), an application crash
//!   loses no commit, and a power loss may lose the last ones. Use
//!   `Synchronous::Full` if it must not.
//! - When `close()` returns, everything is committed, or its error names the
//!   spill file and how many operations it holds.
//!
//! # Layout
//! - [`models`]: the trace data types (serde), shaped as the original module's JSON.
//! - [`error`]: [`TracingError`] and the [`Result`] alias.
//! - [`storage`]: the [`TraceStorage`] trait and [`StorageConfig`].
//! - [`schema`]: DDL and migrations, the only place that creates tables.
//! - [`libsql_storage`]: [`LibsqlTraceStorage`], the plain one-statement-per-call
//!   backend, and the one executor that writes rows.
//! - [`tracer`]: [`SessionTracer`], the high-level recording API.
//! - [`workload`]: synthetic rollouts shared by the example, benches and report.
//! - [`writer`]: [`BufferedTraceWriter`], the batching writer: producer
//!   handles, the actor thread that owns the connection, id leases, counters
//!   and spill files.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod db;
pub mod error;
pub mod libsql_storage;
pub mod models;
pub mod schema;
pub mod storage;
pub mod tracer;
#[cfg(feature = "workload")]
#[doc(hidden)]
pub mod workload;
pub mod writer;

pub use error::{Result, TracingError};
pub use libsql_storage::LibsqlTraceStorage;
pub use models::*;
pub use storage::{JournalMode, StorageConfig, Synchronous, TraceStorage, DEFAULT_BUSY_TIMEOUT};
pub use tracer::SessionTracer;
pub use writer::{
    replay_spill_file, BlockingWriter, BufferedTraceWriter, OverflowPolicy, ReplayReport,
    WriterConfig, WriterStats,
};

/// The README's code blocks, compiled as doctests so they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
