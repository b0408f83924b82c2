//! [`BlockingWriter`]: the writer's write calls for plain threads.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use crate::error::TracingError;
use crate::models::{
    EventReward, MarkovBlanketMessage, OutcomeReward, SessionTimeStep, TracingEvent,
};
use crate::storage::TraceStorage;
use crate::writer::handle::BufferedTraceWriter;
use crate::writer::stats::WriterStats;
use crate::writer::wait::block_on_deadline;

/// The writer for plain threads with no tokio runtime.
///
/// Each call blocks its own thread: for queue space under
/// [`OverflowPolicy::Block`](crate::OverflowPolicy::Block) (at most `enqueue_timeout`), and in `flush()`
/// (at most `flush_timeout`). Never call it from async code: it would block
/// a runtime thread.
///
/// ```
/// use trace_writer::*;
///
/// let writer = BufferedTraceWriter::new_blocking(StorageConfig::memory(), WriterConfig::default())?;
/// let handle = writer.blocking();
/// let t = std::thread::spawn(move || {
///     handle.ensure_session("s", chrono::Utc::now(), &serde_json::json!({}))?;
///     let step = SessionTimeStep::new("step-0", 0);
///     let ts = handle.ensure_timestep("s", &step)?;
///     handle.flush()?;
///     Ok::<i64, TracingError>(ts)
/// });
/// assert_eq!(t.join().unwrap()?, 1);
/// assert_eq!(writer.stats().committed, 2);
/// # Ok::<(), TracingError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BlockingWriter {
    writer: BufferedTraceWriter,
}

// Here rather than in `handle/`, so that the handle does not import this
// file while this file imports the handle.
impl BufferedTraceWriter {
    /// A handle for plain threads with no tokio runtime.
    pub fn blocking(&self) -> BlockingWriter {
        BlockingWriter {
            writer: self.clone(),
        }
    }
}

impl BlockingWriter {
    fn run<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = Result<T, TracingError>>,
    ) -> Result<T, TracingError> {
        block_on_deadline(fut, limit).unwrap_or_else(|| {
            Err(TracingError::Timeout(format!(
                "blocking call took longer than {limit:?}"
            )))
        })
    }

    fn limit(&self) -> Duration {
        self.writer.config().enqueue_timeout
    }

    /// See [`TraceStorage::ensure_session`].
    ///
    /// # Errors
    /// As the async method, plus `Timeout` past `enqueue_timeout`.
    pub fn ensure_session(
        &self,
        session_id: &str,
        created_at: DateTime<Utc>,
        metadata: &Json,
    ) -> Result<(), TracingError> {
        self.run(
            self.limit(),
            TraceStorage::ensure_session(&self.writer, session_id, created_at, metadata),
        )
    }

    /// See [`TraceStorage::ensure_timestep`].
    ///
    /// # Errors
    /// As the async method, plus `Timeout` past `enqueue_timeout`.
    pub fn ensure_timestep(
        &self,
        session_id: &str,
        step: &SessionTimeStep,
    ) -> Result<i64, TracingError> {
        self.run(
            self.limit(),
            TraceStorage::ensure_timestep(&self.writer, session_id, step),
        )
    }

    /// See [`TraceStorage::update_timestep`].
    ///
    /// # Errors
    /// As the async method, plus `Timeout` past `enqueue_timeout`.
    pub fn update_timestep(
        &self,
        session_id: &str,
        step_id: &str,
        completed_at: Option<DateTime<Utc>>,
    ) -> Result<(), TracingError> {
        self.run(
            self.limit(),
            TraceStorage::update_timestep(&self.writer, session_id, step_id, completed_at),
        )
    }

    /// See [`TraceStorage::insert_event`].
    ///
    /// # Errors
    /// As the async method, plus `Timeout` past `enqueue_timeout`.
    pub fn insert_event(
        &self,
        session_id: &str,
        timestep_db_id: Option<i64>,
        event: &TracingEvent,
    ) -> Result<i64, TracingError> {
        self.run(
            self.limit(),
            TraceStorage::insert_event(&self.writer, session_id, timestep_db_id, event),
        )
    }

    /// See [`TraceStorage::insert_message`].
    ///
    /// # Errors
    /// As the async method, plus `Timeout` past `enqueue_timeout`.
    pub fn insert_message(
        &self,
        session_id: &str,
        timestep_db_id: Option<i64>,
        msg: &MarkovBlanketMessage,
    ) -> Result<i64, TracingError> {
        self.run(
            self.limit(),
            TraceStorage::insert_message(&self.writer, session_id, timestep_db_id, msg),
        )
    }

    /// See [`TraceStorage::insert_outcome_reward`].
    ///
    /// # Errors
    /// As the async method, plus `Timeout` past `enqueue_timeout`.
    pub fn insert_outcome_reward(
        &self,
        session_id: &str,
        reward: &OutcomeReward,
    ) -> Result<i64, TracingError> {
        self.run(
            self.limit(),
            TraceStorage::insert_outcome_reward(&self.writer, session_id, reward),
        )
    }

    /// See [`TraceStorage::insert_event_reward`].
    ///
    /// # Errors
    /// As the async method, plus `Timeout` past `enqueue_timeout`.
    pub fn insert_event_reward(
        &self,
        session_id: &str,
        event_id: i64,
        message_id: Option<i64>,
        turn_number: Option<i32>,
        reward: &EventReward,
    ) -> Result<i64, TracingError> {
        self.run(
            self.limit(),
            TraceStorage::insert_event_reward(
                &self.writer,
                session_id,
                event_id,
                message_id,
                turn_number,
                reward,
            ),
        )
    }

    /// See [`BufferedTraceWriter::flush`].
    ///
    /// # Errors
    /// As the async method; `Timeout` past `flush_timeout`.
    pub fn flush(&self) -> Result<(), TracingError> {
        self.run(self.writer.config().flush_timeout, self.writer.flush())
    }

    /// The writer's counters.
    pub fn stats(&self) -> WriterStats {
        self.writer.stats()
    }
}
