//! The plain backend: one statement per call, as the original module ran.
//!
//! A thin layer over the database layer (`src/db/`): each call builds an
//! operation and applies it through the shared executor, or runs the shared
//! read (its [`TraceStorage`](crate::TraceStorage) calls are written once for
//! both backends, in `storage/backend.rs`).

use std::sync::Arc;

use libsql::Database;
use serde_json::Value as Json;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::db::foreign::{Findings, ForeignWatch};
use crate::db::{self, read, Executor, Op, Table};
use crate::error::{Result, TracingError};
use crate::models::SessionTrace;
use crate::schema;
use crate::storage::backend::{impl_trace_storage, Backend};
use crate::storage::StorageConfig;
use crate::writer::metrics::{default_name, PlainMetrics};

/// The plain backend: one statement per call, as the original module ran.
///
/// It is the baseline the [`crate::BufferedTraceWriter`] beats, and the
/// simplest correct choice for a single, slow producer. Each call holds the
/// connection for its statement, so concurrent callers queue on a lock.
///
/// ```
/// # tokio_test();
/// # fn tokio_test() { tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use trace_writer::{LibsqlTraceStorage, TraceStorage};
///
/// let storage = LibsqlTraceStorage::new_memory().await?;
/// storage.ensure_session("s1", chrono::Utc::now(), &serde_json::json!({})).await?;
/// assert!(storage.get_session("s1").await?.is_some());
/// storage.close().await?;
/// assert!(storage.get_session("s1").await.is_err());
/// # Ok::<(), trace_writer::TracingError>(()) }).unwrap(); }
/// ```
pub struct LibsqlTraceStorage {
    config: StorageConfig,
    /// `None` once closed. A tokio mutex, because the guard is held across
    /// the statement's `.await`.
    inner: Mutex<Option<PlainInner>>,
    metrics: PlainMetrics,
    /// A second SQLite library found with the database open.
    foreign: Arc<Findings>,
}

struct PlainInner {
    _db: Database,
    exec: Executor,
    /// Last, so it is dropped after the connection (see `db/foreign.rs`).
    watch: ForeignWatch,
}

impl std::fmt::Debug for LibsqlTraceStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("LibsqlTraceStorage");
        d.field("config", &self.config).finish_non_exhaustive()
    }
}

impl LibsqlTraceStorage {
    /// Opens the database the config names and, with `auto_init`, migrates
    /// its schema.
    ///
    /// # Errors
    /// `InvalidInput` for a bad URL or missing folder, `Database` when the
    /// database cannot be opened, reached or migrated.
    pub async fn new(config: StorageConfig) -> Result<Self, TracingError> {
        let foreign = Arc::<Findings>::default();
        let opened = db::open_watched(&config, foreign.clone()).await?;
        Ok(Self {
            metrics: PlainMetrics::new(&default_name(&config)),
            config,
            inner: Mutex::new(Some(PlainInner {
                _db: opened.db,
                exec: Executor::new(opened.conn, opened.remote),
                watch: opened.watch,
            })),
            foreign,
        })
    }

    /// Warnings about a second SQLite library that has this database (or
    /// its `-wal`) open in this process, each returned once (Linux only;
    /// looked for at open and at most once a second while writing; also
    /// logged as a `tracing` WARN). See
    /// [`BufferedTraceWriter::take_foreign_sqlite_warnings`](crate::BufferedTraceWriter::take_foreign_sqlite_warnings).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let storage = trace_writer::LibsqlTraceStorage::new_memory().await?;
    /// assert!(storage.take_foreign_sqlite_warnings().is_empty());
    /// # Ok::<(), trace_writer::TracingError>(()) }).unwrap();
    /// ```
    pub fn take_foreign_sqlite_warnings(&self) -> Vec<String> {
        self.foreign.take()
    }

    /// An in-memory database.
    ///
    /// # Errors
    /// As [`LibsqlTraceStorage::new`].
    pub async fn new_memory() -> Result<Self, TracingError> {
        Self::new(StorageConfig::memory()).await
    }

    /// A file database at `path`, in WAL mode.
    ///
    /// # Errors
    /// As [`LibsqlTraceStorage::new`].
    pub async fn new_file(path: &str) -> Result<Self, TracingError> {
        Self::new(StorageConfig::file(path)).await
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// The executor, held for the duration of one call; `NotInitialized`
    /// once closed.
    async fn exec(&self) -> Result<MappedMutexGuard<'_, Executor>, TracingError> {
        MutexGuard::try_map(self.inner.lock().await, |inner| {
            inner.as_mut().map(|i| &mut i.exec)
        })
        .map_err(|_| TracingError::NotInitialized)
    }

    async fn apply(&self, op: Op) -> Result<Option<i64>, TracingError> {
        let started = std::time::Instant::now();
        let mut inner = self.inner.lock().await;
        let inner = inner.as_mut().ok_or(TracingError::NotInitialized)?;
        inner.watch.scan_if_due();
        let result = inner.exec.apply(&op).await;
        self.metrics.statement(started.elapsed());
        Ok(result?)
    }
}

impl Backend for LibsqlTraceStorage {
    async fn ready(&self) -> Result<()> {
        schema::migrate(&self.exec().await?.conn).await
    }

    async fn shut_down(&self) -> Result<()> {
        // Dropping the connection closes it; a second close is a no-op.
        self.inner.lock().await.take();
        Ok(())
    }

    async fn write(&self, op: Op) -> Result<()> {
        self.apply(op).await.map(drop)
    }

    async fn insert(&self, op: Op, _: Table) -> Result<i64> {
        self.apply(op).await?.ok_or_else(|| {
            TracingError::Internal("the database returned no id for an insert".into())
        })
    }

    async fn ensure_step(&self, op: Op, session_id: &str, step_id: &str) -> Result<i64> {
        let mut exec = self.exec().await?;
        // Look first, so that a repeated call uses up no id.
        if let Some(id) = read::find_timestep(&exec.conn, session_id, step_id).await? {
            return Ok(id);
        }
        match exec.apply(&op).await? {
            Some(id) => Ok(id),
            // Another connection inserted it between the two statements.
            None => read::find_timestep(&exec.conn, session_id, step_id)
                .await?
                .ok_or_else(|| TracingError::Internal("timestep vanished after insert".into())),
        }
    }

    async fn read_session(&self, session_id: &str) -> Result<Option<SessionTrace>> {
        read::get_session(&self.exec().await?.conn, session_id).await
    }

    async fn remove_session(&self, session_id: &str) -> Result<bool> {
        Ok(self.exec().await?.delete_session(session_id).await?)
    }

    async fn run_query(&self, sql: &str, params: Vec<Json>) -> Result<Vec<Json>> {
        Ok(read::run_query(&self.exec().await?.conn, sql, &params).await?)
    }
}

impl_trace_storage!(LibsqlTraceStorage);
