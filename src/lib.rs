//! # trace-writer
//!
//! High-throughput logging of RL rollout traces into libsql: a local SQLite
//! file, `:memory:`, or a remote libsql server (Turso, sqld).
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

pub mod error;
pub mod libsql_storage;
pub mod models;
pub mod schema;
pub mod storage;
pub mod tracer;
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
