//! [`WriterConfig`] and its defaults, each with the reason for its value.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::TracingError;

/// Most operations in one transaction. A commit writes every page the batch
/// dirtied, and with thousands of concurrent rollouts that is about one
/// index page per session, so larger batches cost less per operation: at
/// 8,192 rollouts, batches of up to 65,536 operations (with 64 MiB and a
/// 256 MiB queue) ran the main job 9% faster than 32,768 (with 32 MiB and
/// a 64 MiB queue), as fast as 131,072, and 32,768 ran about 20% faster
/// than 16,384 (docs/scale.md). Batches grow this large only when that much
/// is queued. For a local database; see [`DEFAULT_REMOTE_MAX_BATCH_OPS`].
pub const DEFAULT_MAX_BATCH_OPS: usize = 65_536;
/// Most operations in one transaction on a remote database. Two batches are
/// in flight at a time, so a request's round trip hides behind the server's
/// work on the other batch only if that work takes about as long. At 100 ms
/// of added round trip, small events ran at about 0.8 of their loopback rate
/// in batches of 8,192, against about 0.6 in batches of 4,096, whose round
/// trip outlasted the server's work (docs/remote.md).
pub const DEFAULT_REMOTE_MAX_BATCH_OPS: usize = 8_192;
/// Most bytes in one transaction: bounds the work redone after a fault. It
/// must leave [`DEFAULT_MAX_BATCH_OPS`] room: at 16 MiB it, not the
/// operations, ended the main job's batches at about 18,000 operations. For
/// a local database; see [`DEFAULT_REMOTE_MAX_BATCH_BYTES`].
pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 << 20;
/// Most bytes in one transaction on a remote database: a batch is one
/// request, and larger ones were measured only locally, so a request of
/// large events stays as large as before.
pub const DEFAULT_REMOTE_MAX_BATCH_BYTES: usize = 16 << 20;
/// How long a batch may wait to grow once the queue runs dry. Under load the
/// queue never runs dry, so batches grow by themselves while the previous one
/// commits (group commit); linger only helps a trickle of operations share a
/// commit, and 1 ms is far below what a producer would notice.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(1);
/// Operations the queue may hold: four of the largest local batches, or 32
/// remote ones.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1 << 18;
/// Bytes the queue may hold, counted as resident memory (see
/// `queue_capacity_bytes`): the writer's memory bound when producers outrun
/// the disk, the batch being written included. When producers outrun the
/// actor, the queue is full and each batch takes what it holds, so this
/// bound sets the batch size: at 64 MiB, the main job's batches at 8,192
/// rollouts held about 30,000 operations of about 2 KiB each. For a local
/// database; see [`DEFAULT_REMOTE_QUEUE_CAPACITY_BYTES`].
pub const DEFAULT_QUEUE_CAPACITY_BYTES: usize = 256 << 20;
/// Bytes the queue may hold on a remote database: its batches are
/// [`DEFAULT_REMOTE_MAX_BATCH_OPS`] operations, so a larger queue would
/// only hold more rows in memory while the server is slow.
pub const DEFAULT_REMOTE_QUEUE_CAPACITY_BYTES: usize = 64 << 20;
/// The largest single operation accepted.
pub const DEFAULT_MAX_OP_BYTES: usize = 16 << 20;
/// How long `close()` may take to drain and commit before it spills.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `flush()` waits for its barrier before it gives up (the
/// operations stay queued and are not lost).
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a producer waits for queue space under `Block`, and for a read's
/// answer, before it gets `Timeout`.
pub const DEFAULT_ENQUEUE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long opening the database may take.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Ids leased per table at a time. The block doubles whenever a producer had
/// to wait for one, so busy tables lease rarely.
pub const DEFAULT_ID_BLOCK: i64 = 1024;
/// Ids leased per table at a time on a remote database. A lease rides in a
/// batch's request, so a producer that runs out waits for the batches in
/// flight and then the next one: at 100 ms of added round trip, about 300 ms
/// for the first events of a rollout run with 1,024 (`tests/remote_latency.rs`).
/// Ids left unused at close stay unused.
pub const DEFAULT_REMOTE_ID_BLOCK: i64 = 16_384;
/// First wait before retrying a transient fault; it doubles per attempt.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(10);
/// Longest wait between retries of a transient fault.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(1);
/// How many recent write errors [`crate::BufferedTraceWriter::recent_errors`] keeps.
pub const DEFAULT_ERROR_HISTORY: usize = 64;
/// Sessions whose step ids the writer remembers; older ones are reloaded
/// from the database when they are touched again.
pub const DEFAULT_SESSION_CACHE: usize = 16_384;

/// What a producer gets when the queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Wait for space: an async producer awaits, a blocking one blocks.
    /// Nothing is lost. The default.
    #[default]
    Block,
    /// Fail at once with [`TracingError::QueueFull`], counted in
    /// `stats().rejected`.
    Reject,
}

/// How the [`crate::BufferedTraceWriter`] batches, bounds and retries.
///
/// ```
/// use std::time::Duration;
/// use trace_writer::{OverflowPolicy, WriterConfig};
///
/// let config = WriterConfig::default()
///     .max_batch_ops(1000)
///     .linger(Duration::from_millis(5))
///     .queue_capacity(100_000)
///     .queue_capacity_bytes(100 << 20)
///     .overflow(OverflowPolicy::Reject)
///     .close_timeout(Duration::from_secs(10));
/// assert!(config.validate().is_ok());
/// assert!(WriterConfig::default().max_batch_ops(0).validate().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub(crate) max_batch_ops: usize,
    /// `max_batch_ops` was set, not left to the backend's default.
    pub(crate) max_batch_ops_set: bool,
    pub(crate) max_batch_bytes: usize,
    /// `max_batch_bytes` was set, not left to the backend's default.
    pub(crate) max_batch_bytes_set: bool,
    pub(crate) linger: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) queue_capacity_bytes: usize,
    /// `queue_capacity_bytes` was set, not left to the backend's default.
    pub(crate) queue_capacity_bytes_set: bool,
    pub(crate) max_op_bytes: usize,
    pub(crate) overflow: OverflowPolicy,
    pub(crate) close_timeout: Duration,
    pub(crate) flush_timeout: Duration,
    pub(crate) enqueue_timeout: Duration,
    pub(crate) open_timeout: Duration,
    pub(crate) id_block: i64,
    /// `id_block` was set, not left to the backend's default.
    pub(crate) id_block_set: bool,
    pub(crate) retry_initial: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) error_history: usize,
    pub(crate) session_cache: usize,
    pub(crate) spill_path: Option<PathBuf>,
    pub(crate) spill_dir: Option<PathBuf>,
    pub(crate) dead_letter_path: Option<PathBuf>,
    pub(crate) multi_row_inserts: Option<bool>,
    pub(crate) name: Option<String>,
    pub(crate) provisional_step_ids: bool,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch_ops: DEFAULT_MAX_BATCH_OPS,
            max_batch_ops_set: false,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_bytes_set: false,
            linger: DEFAULT_LINGER,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            queue_capacity_bytes: DEFAULT_QUEUE_CAPACITY_BYTES,
            queue_capacity_bytes_set: false,
            max_op_bytes: DEFAULT_MAX_OP_BYTES,
            overflow: OverflowPolicy::Block,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            enqueue_timeout: DEFAULT_ENQUEUE_TIMEOUT,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            id_block: DEFAULT_ID_BLOCK,
            id_block_set: false,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            error_history: DEFAULT_ERROR_HISTORY,
            session_cache: DEFAULT_SESSION_CACHE,
            spill_path: None,
            spill_dir: None,
            dead_letter_path: None,
            multi_row_inserts: None,
            name: None,
            provisional_step_ids: false,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = value;
            self
        }
    };
}

impl WriterConfig {
    /// Most operations in one transaction: [`DEFAULT_MAX_BATCH_OPS`] for a
    /// local database and [`DEFAULT_REMOTE_MAX_BATCH_OPS`] for a remote one
    /// unless set.
    pub fn max_batch_ops(mut self, value: usize) -> Self {
        self.max_batch_ops = value;
        self.max_batch_ops_set = true;
        self
    }

    /// The settings for a local (`remote == false`) or remote database:
    /// the defaults that depend on it filled in.
    pub(crate) fn for_backend(mut self, remote: bool) -> Self {
        if remote && !self.max_batch_ops_set {
            self.max_batch_ops = DEFAULT_REMOTE_MAX_BATCH_OPS;
        }
        if remote && !self.max_batch_bytes_set {
            self.max_batch_bytes = DEFAULT_REMOTE_MAX_BATCH_BYTES;
        }
        if remote && !self.id_block_set {
            self.id_block = DEFAULT_REMOTE_ID_BLOCK;
        }
        if remote && !self.queue_capacity_bytes_set {
            self.queue_capacity_bytes = DEFAULT_REMOTE_QUEUE_CAPACITY_BYTES;
        }
        self
    }
    /// Most bytes of operations in one transaction:
    /// [`DEFAULT_MAX_BATCH_BYTES`] for a local database and
    /// [`DEFAULT_REMOTE_MAX_BATCH_BYTES`] for a remote one unless set.
    pub fn max_batch_bytes(mut self, value: usize) -> Self {
        self.max_batch_bytes = value;
        self.max_batch_bytes_set = true;
        self
    }
    setter!(
        /// How long a batch may wait to grow once the queue runs dry,
        /// counted from the batch's first operation. On a remote database,
        /// a batch collected while only one other is in flight also ends
        /// once the queue stayed dry this long, and is sent behind that one
        /// at once when it can be (docs/remote.md).
        linger: Duration
    );
    setter!(
        /// Most write operations queued at once.
        queue_capacity: usize
    );
    /// Most bytes of write operations queued at once, the batch being
    /// written included: the writer's memory bound.
    /// [`DEFAULT_QUEUE_CAPACITY_BYTES`] for a local database and
    /// [`DEFAULT_REMOTE_QUEUE_CAPACITY_BYTES`] for a remote one unless set.
    /// Each operation counts the memory it holds (its values, each string,
    /// and the allocator's overhead), not only its payload.
    pub fn queue_capacity_bytes(mut self, value: usize) -> Self {
        self.queue_capacity_bytes = value;
        self.queue_capacity_bytes_set = true;
        self
    }
    setter!(
        /// The largest single operation; larger ones get `InvalidInput`.
        max_op_bytes: usize
    );
    setter!(
        /// What a producer gets when the queue is full.
        overflow: OverflowPolicy
    );
    setter!(
        /// How long `close()` (or the drop of the last handle) may take to
        /// commit what is queued before the rest is spilled.
        close_timeout: Duration
    );
    setter!(
        /// How long `flush()` waits before it returns `Timeout`.
        flush_timeout: Duration
    );
    setter!(
        /// How long a producer waits for queue space (under `Block`) or for a
        /// read's answer before it returns `Timeout`.
        enqueue_timeout: Duration
    );
    setter!(
        /// How long opening and migrating the database may take.
        open_timeout: Duration
    );
    /// Ids leased per table at a time, at first: [`DEFAULT_ID_BLOCK`] for a
    /// local database and [`DEFAULT_REMOTE_ID_BLOCK`] for a remote one
    /// unless set.
    pub fn id_block(mut self, value: i64) -> Self {
        self.id_block = value;
        self.id_block_set = true;
        self
    }
    setter!(
        /// First wait before a transient fault is retried.
        retry_initial: Duration
    );
    setter!(
        /// Longest wait between retries.
        retry_max: Duration
    );
    setter!(
        /// How many recent write errors are kept for `recent_errors()`.
        error_history: usize
    );
    setter!(
        /// Sessions whose step ids are kept in memory.
        session_cache: usize
    );

    /// The spill file: where the writer keeps, in order, the operations it
    /// could not commit (past `close_timeout`, or after a fatal error), for
    /// [`crate::replay_spill_file`]. It is created new, mode `0600`; if the
    /// name is taken, a sibling with random bits in its name is used, and
    /// errors name that one. The dead-letter file goes beside it
    /// (`<path>.dead-letter.jsonl`) unless [`WriterConfig::dead_letter_path`]
    /// names it.
    ///
    /// By default, beside a file database (`<db>.spill-<time>-<pid>-<random>.jsonl`),
    /// or, for `:memory:` and remote databases, in the per-user folder
    /// `$XDG_STATE_HOME/trace-writer` (else `~/.local/state/trace-writer`,
    /// else `trace-writer-<uid>` in the temp folder), made mode `0700`.
    pub fn spill_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.spill_path = Some(path.into());
        self
    }

    /// The folder for the default-named spill and dead-letter files, instead
    /// of the places [`WriterConfig::spill_path`] describes. Made mode `0700`
    /// if it does not exist.
    ///
    /// ```
    /// let config = trace_writer::WriterConfig::default().spill_dir("/var/lib/traces/kept");
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// The dead-letter file: where operations the database refused (a
    /// constraint, a trigger's `RAISE`) are kept, each line with its cause,
    /// in the spill file's format, so that [`crate::replay_spill_file`]
    /// applies them once the cause is fixed. Created new, mode `0600`. By
    /// default beside the spill file (see [`WriterConfig::spill_path`]).
    pub fn dead_letter_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.dead_letter_path = Some(path.into());
        self
    }

    /// Forces multi-row `INSERT` statements on (`true`) or off. By default
    /// they are on for remote databases, where a batch travels as one
    /// request and fewer, larger statements cost the server less, and off
    /// for local ones, where one prepared statement per row is faster. A
    /// multi-row statement that fails is retried one row per statement, so
    /// a refused row is still found and set aside alone.
    pub fn multi_row_inserts(mut self, on: bool) -> Self {
        self.multi_row_inserts = Some(on);
        self
    }

    /// The writer's name: the `writer` label of its metrics (see
    /// [`crate::writer::metrics`]). By default the database file's name,
    /// `:memory:`, or a remote server's host, never a URL's token.
    ///
    /// ```
    /// let config = trace_writer::WriterConfig::default().name("crafter-runs");
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Lets `ensure_timestep` answer at once on a session this writer has
    /// not read yet, instead of waiting for one read of the session's
    /// stored steps (a round trip to a remote server). Off by default.
    ///
    /// When on, such a call returns a fresh id. If the step turns out to be
    /// stored already (made by another process), the writer learns the
    /// stored row when its insert meets it, and every event and message
    /// written through this writer under the fresh id is filed under the
    /// stored row; reads show the stored row's id. So the rows are the same
    /// as with the setting off, but the id returned may not be the stored
    /// row's, and an id is used up. Turn it on when rollouts mostly start
    /// sessions of their own, far from the server.
    ///
    /// ```
    /// let config = trace_writer::WriterConfig::default().provisional_step_ids(true);
    /// ```
    pub fn provisional_step_ids(mut self, on: bool) -> Self {
        self.provisional_step_ids = on;
        self
    }

    /// Checks the settings. [`crate::BufferedTraceWriter::new`] calls it, so
    /// a bad value fails there. `Duration::MAX` is accepted wherever a
    /// duration is a deadline or a wait, and means "no deadline".
    ///
    /// # Errors
    /// `InvalidInput` whose message names the first bad setting.
    pub fn validate(&self) -> Result<(), TracingError> {
        let bad = |m: String| Err(TracingError::InvalidInput(m));
        if self.max_batch_ops == 0 {
            return bad("max_batch_ops must be at least 1".into());
        }
        if self.max_batch_bytes == 0 {
            return bad("max_batch_bytes must be at least 1".into());
        }
        if self.queue_capacity == 0 || self.queue_capacity > MAX_PERMITS {
            return bad(format!(
                "queue_capacity must be between 1 and {MAX_PERMITS}, got {}",
                self.queue_capacity
            ));
        }
        if self.queue_capacity_bytes == 0 || self.queue_capacity_bytes > MAX_PERMITS {
            return bad(format!(
                "queue_capacity_bytes must be between 1 and {MAX_PERMITS}, got {}",
                self.queue_capacity_bytes
            ));
        }
        if self.max_op_bytes == 0 || self.max_op_bytes > self.queue_capacity_bytes {
            return bad(format!(
                "max_op_bytes must be between 1 and queue_capacity_bytes ({}), got {}",
                self.queue_capacity_bytes, self.max_op_bytes
            ));
        }
        for (name, value) in [
            ("flush_timeout", self.flush_timeout),
            ("enqueue_timeout", self.enqueue_timeout),
            ("open_timeout", self.open_timeout),
        ] {
            if value.is_zero() {
                return bad(format!(
                    "{name} must be positive (Duration::MAX means no deadline); \
                     with zero every call would time out"
                ));
            }
        }
        if !(1..=MAX_ID_BLOCK).contains(&self.id_block) {
            return bad(format!(
                "id_block must be between 1 and {MAX_ID_BLOCK}, got {}",
                self.id_block
            ));
        }
        if self.retry_initial.is_zero() || self.retry_initial > self.retry_max {
            return bad("retry_initial must be positive and at most retry_max".into());
        }
        if self.retry_max > MAX_RETRY_WAIT {
            return bad(format!(
                "retry_max must be at most {MAX_RETRY_WAIT:?}: the actor sleeps that long \
                 between retries and serves nothing meanwhile"
            ));
        }
        Ok(())
    }
}

/// The largest id block: a block the size of the id space would leave
/// `sqlite_sequence` at its end, and every other writer without ids.
pub(crate) const MAX_ID_BLOCK: i64 = 1 << 20;

/// The longest wait between two retries.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(3600);

/// Permits are counted in `u32` by acquire calls; stay well inside.
const MAX_PERMITS: usize = (u32::MAX >> 1) as usize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_and_id_block_defaults_depend_on_the_backend_unless_set() {
        let local = WriterConfig::default().for_backend(false);
        assert_eq!(local.max_batch_ops, DEFAULT_MAX_BATCH_OPS);
        assert_eq!(local.max_batch_bytes, DEFAULT_MAX_BATCH_BYTES);
        let remote = WriterConfig::default().for_backend(true);
        assert_eq!(remote.max_batch_ops, DEFAULT_REMOTE_MAX_BATCH_OPS);
        assert_eq!(remote.max_batch_bytes, DEFAULT_REMOTE_MAX_BATCH_BYTES);
        assert_eq!(remote.id_block, DEFAULT_REMOTE_ID_BLOCK);
        assert_eq!(local.id_block, DEFAULT_ID_BLOCK);
        assert_eq!(local.queue_capacity_bytes, DEFAULT_QUEUE_CAPACITY_BYTES);
        assert_eq!(
            remote.queue_capacity_bytes,
            DEFAULT_REMOTE_QUEUE_CAPACITY_BYTES
        );
        let set = WriterConfig::default()
            .max_batch_ops(100)
            .max_batch_bytes(5000)
            .id_block(7)
            .queue_capacity_bytes(9000)
            .for_backend(true);
        assert_eq!(
            (
                set.max_batch_ops,
                set.max_batch_bytes,
                set.id_block,
                set.queue_capacity_bytes
            ),
            (100, 5000, 7, 9000)
        );
    }

    #[test]
    fn an_operation_larger_than_the_remote_queue_is_refused_at_open() {
        let config = WriterConfig::default().max_op_bytes(100 << 20);
        assert!(config.clone().for_backend(false).validate().is_ok());
        assert!(config.for_backend(true).validate().is_err());
    }
}
