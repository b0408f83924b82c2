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
//!   explicit transaction with prepared statements. On a remote server the
//!   whole batch (`BEGIN`, multi-row inserts, `COMMIT`) is one Hrana
//!   pipeline request on a kept-alive connection, so a batch costs one round
//!   trip however large it is, and the next batch is sent behind it, to
//!   commit only after it did, so the round trip hides behind the server's
//!   work. Under load batches grow by themselves: group commit.
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
//! | file | what it holds |
//! |---|---|
//! | `src/models.rs` | the trace data types (serde), shaped as the original module's JSON, and the original's kind inference for untagged events |
//! | `src/pricing.rs` | the original module's LLM helpers: [`pricing::detect_provider`] and [`pricing::calculate_cost`] |
//! | `src/error.rs` | [`TracingError`], the [`Result`] alias, and error classes as data (transient, this operation's fault, fatal), decided once from the SQLite result code |
//! | `src/storage.rs` | the [`TraceStorage`] trait and [`StorageConfig`] |
//! | `src/schema.rs` | DDL and migrations, the only place that creates tables |
//! | `src/db/` | the layer both backends stand on (below) |
//! | `src/libsql_storage.rs` | [`LibsqlTraceStorage`], the plain one-statement-per-call backend, thin, on top of `db/` |
//! | `src/tracer/` | [`SessionTracer`], the high-level recording API (also what the Python bindings' tracer runs), and [`RecordedSession`] |
//! | `src/writer/` | [`BufferedTraceWriter`] and everything behind it (below) |
//! | `src/bin/trace-writer/` | the operators' command-line tool: `replay`, `check`, `stats` |
//! | `src/workload.rs` | synthetic rollouts for the examples, benches and report (feature `workload`, not public API) |
//!
//! Where to find the load-bearing pieces:
//! - **The one place that writes rows:** `Executor::apply` in `src/db/exec/mod.rs`.
//!   Every row is first an `Op` (`src/db/op.rs`), validated and serialized by
//!   the producer; each table's columns are defined once in `src/db/columns.rs`.
//! - **The one transaction helper:** `transaction` in `src/db/tx.rs`. No other
//!   code writes `BEGIN`, `COMMIT` or `ROLLBACK`.
//! - **The id lease:** `lease_ids` in `src/db/lease.rs`; the writer's blocks
//!   of ids are handed out in `src/writer/ids.rs`.
//! - **The actor loop:** `Actor::run` in `src/writer/actor/mod.rs`; one batch is
//!   applied by `Actor::execute` in `src/writer/actor/batch.rs`.
//! - Reads (decoding, `get_session`, step loads, `query`): `src/db/read.rs`.
//!   Named query parameters are ordered into positional ones by
//!   [`QueryParams::bind`] in `src/db/params.rs`.
//!   Opening and pragmas: `src/db/open.rs`. Remote batches in one request:
//!   `src/db/hrana.rs` (the client), laid out as a transaction by `RemoteTx`
//!   in `src/db/tx.rs`.
//!
//! `src/writer/`: `handle/` (the producers' handle, its `TraceStorage`
//! impl, and closing), `blocking.rs` ([`BlockingWriter`]), `cache.rs` (the step cache),
//! `reserve.rs` (queue space), `actor/` (the thread that owns the
//! connection), `ids.rs`, `config.rs`, `stats.rs`, `spill.rs` and `wait.rs`
//! (deadlines).
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod db;
pub mod error;
pub mod libsql_storage;
pub mod models;
pub mod pricing;
pub mod schema;
pub mod storage;
pub mod tracer;
#[cfg(feature = "workload")]
#[doc(hidden)]
pub mod workload;
pub mod writer;

pub use db::params::QueryParams;
pub use error::{Result, TracingError};
pub use libsql_storage::LibsqlTraceStorage;
pub use models::*;
pub use storage::{JournalMode, StorageConfig, Synchronous, TraceStorage, DEFAULT_BUSY_TIMEOUT};
pub use tracer::{HistorySlot, RecordedSession, SessionTracer};
pub use writer::{
    replay_spill_file, BlockingWriter, BufferedTraceWriter, OverflowPolicy, RefusedLine,
    ReplayReport, WriterConfig, WriterStats,
};

/// The README's code blocks, compiled as doctests so they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
