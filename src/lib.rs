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
//! - Faults: a poison operation is set aside, counted, reported and kept in
//!   the dead-letter file while the rest commit. Busy, locked, I/O,
//!   disk-full and network faults are retried with bounded backoff. Past
//!   `close_timeout`, or after an error no retry can fix, what is left is
//!   spilled to a JSON-lines file that [`replay_spill_file`] applies later.
//!
//! # Durability
//! - When a write call returns `Ok`, the operation is in memory and queued.
//!   From then on it ends in exactly one of three places, whatever the
//!   error: **committed**; **refused** by the database (a constraint, a
//!   trigger's `RAISE`) and kept, with its cause, in the dead-letter file; or
//!   **spilled**, in order, to the spill file. Both files are in the same
//!   JSON-lines format, and [`replay_spill_file`] (or `trace-writer replay`)
//!   applies either once the cause is fixed; ids are kept, so a replay
//!   duplicates nothing.
//! - When `flush()` returns `Ok`, everything queued before it is committed.
//!   With WAL and `Synchronous::Normal` (the default), an application crash
//!   loses no commit, and a power loss may lose the last ones. Use
//!   `Synchronous::Full` if it must not. Otherwise it returns `WriteFailed`
//!   (refused operations since the last flush: their count, first cause and
//!   the dead-letter file), or `Halted` / `Spilled` (writes are being
//!   spilled: the spill file and count).
//! - An error no retry can fix (a missing, renamed or read-only table, a
//!   corrupt file, a token the server refuses) **halts** the writer: the
//!   batch and every write queued after it are spilled, and write calls fail
//!   fast with [`TracingError::Halted`], naming the cause and the spill
//!   file, instead of accepting writes that could only be spilled. The
//!   writer stays halted until it is closed: fix the cause, replay the spill
//!   file, open a new writer.
//! - When `close()` returns, everything is committed, or its error names the
//!   spill file and how many operations it holds.
//! - Each distinct cause is logged (`tracing`) and kept for
//!   `recent_errors()` once between two flushes, not once per row or batch.
//! - The spill and dead-letter files are private: created new, mode `0600`,
//!   under names with random bits. Beside a file database by default; for
//!   `:memory:` and remote databases in the per-user folder
//!   `$XDG_STATE_HOME/trace-writer` (else `~/.local/state/trace-writer`,
//!   else `trace-writer-<uid>` in the temp folder), kept at mode `0700`.
//!   `WriterConfig::spill_path`, `spill_dir` and `dead_letter_path` choose
//!   other places.
//! - No token shows: one given as `auth_token` or inside the URL
//!   (`?authToken=`, `auth_token=`, `jwt=`, taken out of the URL and used as
//!   the token) appears in no `Debug`, error or log line.
//! - **One SQLite library per process.** POSIX locks belong to the process,
//!   so a second SQLite library in the same process (Python's `sqlite3`, a
//!   system `libsqlite3`) with the database open is not kept apart by
//!   SQLite's locking: either can silently lose the other's commits, and
//!   closing its connection drops the writer's locks. On Linux this is
//!   detected (at open, then at most once a second while writing, through
//!   `/proc/self/fd`) and reported once per file: a `tracing` WARN,
//!   [`WriterStats::foreign_sqlite`], and
//!   [`BufferedTraceWriter::take_foreign_sqlite_warnings`] (a
//!   `RuntimeWarning` in Python). Read through the writer's own `query` and
//!   `get_session`, or from another process, which SQLite's locks do
//!   separate.
//!
//! # Layout
//! | file | what it holds |
//! |---|---|
//! | `src/models.rs` | the trace data types (serde), shaped as the original module's JSON, and the original's kind inference for untagged events |
//! | `src/pricing.rs` | the original module's LLM helpers: [`pricing::detect_provider`] and [`pricing::calculate_cost`] |
//! | `src/error.rs` | [`TracingError`], the [`Result`] alias, and error classes as data (transient, this operation's fault, fatal), decided once from the SQLite result code |
//! | `src/storage/` | the [`TraceStorage`] trait and [`StorageConfig`]; `backend.rs`: the trait's one implementation, over what each backend does with an operation |
//! | `src/schema.rs` | DDL and migrations, the only place that creates tables |
//! | `src/db/` | the layer both backends stand on (below) |
//! | `src/libsql_storage.rs` | [`LibsqlTraceStorage`], the plain one-statement-per-call backend, thin, on top of `db/` |
//! | `src/tracer/` | [`SessionTracer`], the high-level recording API (also what the Python bindings' tracer runs), and [`RecordedSession`] |
//! | `src/writer/` | [`BufferedTraceWriter`] and everything behind it (below) |
//! | `src/bin/trace-writer/` | the operators' command-line tool: `replay`, `check`, `stats`, `watch` |
//! | `src/workload.rs` | synthetic rollouts for the examples, benches and report (feature `workload`, not public API) |
//!
//! Where to find the load-bearing pieces:
//! - **The one place that writes rows:** `Executor::apply` in `src/db/exec/mod.rs`.
//!   Every row is first an `Op` (`src/db/op.rs`), validated and serialized by
//!   the producer; each table's columns are defined once in `src/db/columns.rs`.
//! - **The one transaction helper:** `transaction` in `src/db/tx.rs`. No other
//!   code writes `BEGIN`, `COMMIT` or `ROLLBACK`.
//! - **The id lease:** the statements in `src/db/lease.rs`, run by
//!   `Executor::lease_blocks`; the writer's blocks of ids are handed out in
//!   `src/writer/ids.rs`.
//! - **The actor loop:** `Actor::run` in `src/writer/actor/mod.rs`; one batch is
//!   applied by `Actor::execute` in `src/writer/actor/batch.rs`.
//! - Reads (decoding, `get_session`, step loads, `query`): `src/db/read.rs`.
//!   Named query parameters are ordered into positional ones by
//!   [`QueryParams::bind`] in `src/db/params.rs`.
//!   Opening and pragmas: `src/db/open.rs`; tokens inside URLs:
//!   `src/db/url.rs`; a second SQLite library in the process:
//!   `src/db/foreign.rs`. Remote batches in one request:
//!   `src/db/hrana.rs` (the client), encoded by `RemoteEncoder` in
//!   `src/db/exec/encode.rs`, laid out as a transaction by `RemoteTx` in
//!   `src/db/tx.rs`, and sent by the `Pipeline` in `src/writer/pipeline.rs`.
//!
//! `src/writer/`: `handle/` (the producers' handle, its side of the
//! `TraceStorage` calls, the step loads, and closing), `blocking.rs` ([`BlockingWriter`]), `cache.rs` (the step cache),
//! `reserve.rs` (queue space), `protocol.rs` (the messages between the
//! handles and the actor), `actor/` (the thread that owns the connection),
//! `pipeline.rs` (batches in flight to a remote server),
//! `ids.rs`, `config.rs`, `stats.rs`, `metrics.rs` (the `metrics` facade),
//! `spill.rs` (the spill and dead-letter files, and replay) and `wait.rs`
//! (deadlines).
//!
//! The full walk of one event to its row is `docs/ARCHITECTURE.md`.
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
mod unwind;
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
    replay_spill_file, replay_spill_file_with_progress, BlockingWriter, BufferedTraceWriter,
    OverflowPolicy, RefusedLine, ReplayReport, WriterConfig, WriterStats,
};

/// The README's code blocks, compiled as doctests so they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
