//! The crate's error type.

use std::path::PathBuf;

/// `Result` with [`TracingError`].
pub type Result<T, E = TracingError> = std::result::Result<T, E>;

/// Everything that can go wrong while recording or storing traces.
///
/// Messages are lower-case and name the cause; database errors keep the
/// database's own text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TracingError {
    /// The database refused or failed an operation.
    #[error("database error: {0}")]
    Database(String),
    /// A tracer call needed an open session.
    #[error("no active session")]
    NoActiveSession,
    /// A tracer call needed an open timestep.
    #[error("no active timestep")]
    NoActiveTimestep,
    /// `start_session` was called while a session was open.
    #[error("session already active: {0}")]
    SessionAlreadyActive(String),
    /// The call does not fit the current state.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A value could not be serialized or parsed.
    #[error("serialization error: {0}")]
    Serialization(String),
    /// The storage was closed or never initialized.
    #[error("storage not initialized or already closed")]
    NotInitialized,
    /// A bug or an unexpected condition inside the crate.
    #[error("internal error: {0}")]
    Internal(String),
    /// The writer was closed, or its actor is gone.
    #[error("writer closed")]
    WriterClosed,
    /// The queue was full and the overflow policy is `Reject`.
    #[error("writer queue full")]
    QueueFull,
    /// Bad input, caught before anything was queued.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Some accepted operations could not be written since the last flush.
    #[error("{failed} operation(s) failed to be written; first cause: {first_cause}")]
    WriteFailed {
        /// How many operations failed since the previous flush.
        failed: u64,
        /// The first failure's cause.
        first_cause: String,
    },
    /// A wait ran past its deadline. Nothing accepted was dropped.
    #[error("timed out: {0}")]
    Timeout(String),
    /// `close()` could not commit everything in time; the rest was spilled.
    #[error("close deadline missed: {count} operation(s) were spilled to {}", path.display())]
    Spilled {
        /// The spill file, JSON lines, for [`crate::replay_spill_file`].
        path: PathBuf,
        /// How many operations it holds.
        count: usize,
    },
    /// `close()` could neither commit nor spill some operations.
    #[error("close failed: {count} operation(s) were left uncommitted: {cause}")]
    CloseFailed {
        /// How many operations were left.
        count: usize,
        /// Why they could not be committed or spilled.
        cause: String,
    },
}

impl TracingError {
    /// Whether the error is a transient database condition (busy, locked,
    /// I/O, disk full, a dropped remote connection) that a retry may clear.
    pub fn is_transient(&self) -> bool {
        matches!(self, TracingError::Database(msg) if msg.starts_with(TRANSIENT_PREFIX))
    }
}

/// Prefix put on database errors classed as transient, so the class survives
/// the conversion to a string.
pub(crate) const TRANSIENT_PREFIX: &str = "transient: ";

impl From<libsql::Error> for TracingError {
    fn from(err: libsql::Error) -> Self {
        if crate::libsql_storage::is_transient(&err) {
            TracingError::Database(format!("{TRANSIENT_PREFIX}{err}"))
        } else {
            TracingError::Database(err.to_string())
        }
    }
}

impl From<serde_json::Error> for TracingError {
    fn from(err: serde_json::Error) -> Self {
        TracingError::Serialization(err.to_string())
    }
}

/// The message of `.expect()` on states that only a bug can reach.
pub(crate) const BUG: &str = "trace-writer bug: please report it with this message and backtrace";
