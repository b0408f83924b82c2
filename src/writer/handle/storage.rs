//! The writer's [`Backend`]: what its [`TraceStorage`] calls do with their
//! operations (queue them), the calls themselves being written once for
//! both backends (`storage/backend.rs`).

use serde_json::Value as Json;

use crate::db::{Op, Table};
use crate::error::Result;
use crate::models::SessionTrace;
use crate::storage::backend::{impl_trace_storage, Backend};
#[cfg(doc)]
use crate::storage::TraceStorage;
use crate::writer::actor::Msg;
use crate::writer::handle::BufferedTraceWriter;
use crate::writer::lock;
use crate::writer::reserve::{check_size, reserve};

impl Backend for BufferedTraceWriter {
    async fn ready(&self) -> Result<()> {
        self.check_open()
    }

    async fn shut_down(&self) -> Result<()> {
        self.close_now().await
    }

    /// Queues a write that returns no id.
    async fn write(&self, op: Op) -> Result<()> {
        self.check_open()?;
        let bytes = check_size(&self.inner.config, &op)?;
        let res = reserve(&self.inner.shared, &self.inner.config, bytes).await?;
        self.send_write(op, bytes, res)
    }

    /// Queues an insert with an id from `table`'s block, and returns the id.
    async fn insert(&self, mut op: Op, table: Table) -> Result<i64> {
        self.check_open()?;
        let bytes = check_size(&self.inner.config, &op)?;
        let res = reserve(&self.inner.shared, &self.inner.config, bytes).await?;
        let id = self.alloc(table).await?;
        op.set_id(id);
        self.send_write(op, bytes, res)?;
        Ok(id)
    }

    /// Asks for the session's committed steps ahead of its first
    /// `ensure_timestep` (see `prefetch_steps`).
    fn session_written(&self, session_id: &str) {
        self.prefetch_steps(session_id);
    }

    fn new_session_written(&self, session_id: &str) {
        self.steps_known_empty(session_id);
    }

    async fn ensure_step(&self, op: Op, session_id: &str, step_id: &str) -> Result<i64> {
        self.ensure_step_cached(op, session_id, step_id).await
    }

    async fn read_session(&self, session_id: &str) -> Result<Option<SessionTrace>> {
        self.request(self.inner.config.enqueue_timeout, "get_session", |reply| {
            Msg::GetSession {
                session_id: session_id.to_string(),
                reply,
            }
        })
        .await?
    }

    async fn remove_session(&self, session_id: &str) -> Result<bool> {
        // Forget the cached steps first: an `ensure_timestep` after this call
        // reloads them in FIFO order, after the delete.
        lock(&self.inner.sessions).forget(session_id, self.inner.config.session_cache);
        let result = self
            .request(
                self.inner.config.enqueue_timeout,
                "delete_session",
                |reply| Msg::DeleteSession {
                    session_id: session_id.to_string(),
                    reply,
                },
            )
            .await;
        if matches!(result, Ok(Ok(_))) {
            lock(&self.inner.sessions).deleted(session_id);
        }
        result?
    }

    async fn run_query(&self, sql: &str, params: Vec<Json>) -> Result<Vec<Json>> {
        self.request(self.inner.config.enqueue_timeout, "query", |reply| {
            Msg::Query {
                sql: sql.to_string(),
                params,
                reply,
            }
        })
        .await?
    }
}

impl_trace_storage!(BufferedTraceWriter {
    initialize:
        /// The schema was migrated by [`BufferedTraceWriter::new`]; this only
        /// checks that the writer is open.
    close:
        /// Drains the queue, commits, closes the connection and joins the actor,
        /// within `close_timeout`. Later calls fail with `WriterClosed`; a second
        /// `close()` returns `Ok`.
        ///
        /// # Errors
        /// `WriteFailed` if writes were refused since the last flush; `Spilled`
        /// naming the file and count if the deadline passed and the rest was
        /// spilled; `Halted` naming the cause, file and count if a fatal error
        /// halted the writer;
        /// `CloseFailed` if the actor did not answer in time.
    query:
        /// Commits what is queued before it, then runs the SQL on the writer's
        /// connection. SQL that leaves a transaction open is rolled back and
        /// refused.
    update_session_counts:
        /// Queued like a write: it returns once queued, and the counts are
        /// computed in FIFO order, over everything queued before it.
});
