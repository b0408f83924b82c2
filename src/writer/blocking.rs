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

/// The trait's write calls, each a blocking fn with the same arguments that
/// runs the async method on this thread, bounded by `enqueue_timeout`.
macro_rules! blocking_calls {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ok:ty;)*) => {$(
        #[doc = concat!("See [`TraceStorage::", stringify!($name), "`].")]
        ///
        /// # Errors
        /// As the async method, plus `Timeout` past `enqueue_timeout`.
        pub fn $name(&self, $($arg: $ty),*) -> Result<$ok, TracingError> {
            self.run(self.limit(), TraceStorage::$name(&self.writer, $($arg),*))
        }
    )*};
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

    blocking_calls! {
        fn ensure_session(session_id: &str, created_at: DateTime<Utc>, metadata: &Json) -> ();
        fn ensure_new_session(session_id: &str, created_at: DateTime<Utc>, metadata: &Json) -> ();
        fn ensure_timestep(session_id: &str, step: &SessionTimeStep) -> i64;
        fn update_timestep(session_id: &str, step_id: &str, completed_at: Option<DateTime<Utc>>) -> ();
        fn insert_event(session_id: &str, timestep_db_id: Option<i64>, event: &TracingEvent) -> i64;
        fn insert_message(session_id: &str, timestep_db_id: Option<i64>, msg: &MarkovBlanketMessage) -> i64;
        fn insert_outcome_reward(session_id: &str, reward: &OutcomeReward) -> i64;
        fn insert_event_reward(session_id: &str, event_id: i64, message_id: Option<i64>, turn_number: Option<i32>, reward: &EventReward) -> i64;
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
