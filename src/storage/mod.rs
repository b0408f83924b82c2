//! The [`TraceStorage`] trait and [`StorageConfig`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::TracingError;
use crate::models::{
    EventReward, MarkovBlanketMessage, OutcomeReward, SessionTimeStep, SessionTrace, TracingEvent,
};

pub(crate) mod backend;

/// Abstract storage backend for traces.
///
/// Implementations can store traces in SQLite, Turso, or other backends.
/// [`crate::LibsqlTraceStorage`] runs one statement per call;
/// [`crate::BufferedTraceWriter`] queues writes and batches them.
#[async_trait]
pub trait TraceStorage: Send + Sync {
    // ========================================================================
    // INITIALIZATION
    // ========================================================================

    /// Initialize the storage backend (create tables, etc.).
    async fn initialize(&self) -> Result<(), TracingError>;

    /// Close the storage connection.
    async fn close(&self) -> Result<(), TracingError>;

    // ========================================================================
    // SESSION OPERATIONS
    // ========================================================================

    /// Ensure a session exists (create if not present).
    ///
    /// This is idempotent - calling multiple times with the same session_id
    /// will not create duplicates.
    async fn ensure_session(
        &self,
        session_id: &str,
        created_at: DateTime<Utc>,
        metadata: &Value,
    ) -> Result<(), TracingError>;

    /// [`ensure_session`](TraceStorage::ensure_session) for a session id the
    /// caller has just made up at random, as
    /// [`SessionTracer::start_session`](crate::SessionTracer::start_session)
    /// does when given none (a UUID v4). No process can have stored a step
    /// of such a session, so a storage may answer its `ensure_timestep`
    /// calls without looking for stored steps: the writer then never waits
    /// on the database for them, where it otherwise reads the session's
    /// stored steps once (a round trip to a remote server). The ids and
    /// every other result are as `ensure_session`'s; by default this is
    /// `ensure_session`.
    ///
    /// ```
    /// # use trace_writer::*;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let writer = BufferedTraceWriter::new(StorageConfig::memory(), WriterConfig::default()).await?;
    /// let sid = uuid::Uuid::new_v4().to_string();
    /// writer.ensure_new_session(&sid, chrono::Utc::now(), &serde_json::json!({})).await?;
    /// let step = SessionTimeStep::new("step-0", 0);
    /// let id = writer.ensure_timestep(&sid, &step).await?; // no read of stored steps
    /// assert_eq!(writer.ensure_timestep(&sid, &step).await?, id);
    /// writer.close().await?;
    /// # Ok::<(), TracingError>(())
    /// # }).unwrap();
    /// ```
    async fn ensure_new_session(
        &self,
        session_id: &str,
        created_at: DateTime<Utc>,
        metadata: &Value,
    ) -> Result<(), TracingError> {
        self.ensure_session(session_id, created_at, metadata).await
    }

    /// Get a session trace by ID.
    async fn get_session(&self, session_id: &str) -> Result<Option<SessionTrace>, TracingError>;

    /// Delete a session and all related data.
    async fn delete_session(&self, session_id: &str) -> Result<bool, TracingError>;

    // ========================================================================
    // TIMESTEP OPERATIONS
    // ========================================================================

    /// Ensure a timestep exists and return its database ID.
    ///
    /// This is idempotent - calling multiple times with the same session_id
    /// and step_id will return the same database ID.
    async fn ensure_timestep(
        &self,
        session_id: &str,
        step: &SessionTimeStep,
    ) -> Result<i64, TracingError>;

    /// Update a timestep (e.g., mark as completed).
    async fn update_timestep(
        &self,
        session_id: &str,
        step_id: &str,
        completed_at: Option<DateTime<Utc>>,
    ) -> Result<(), TracingError>;

    // ========================================================================
    // EVENT OPERATIONS
    // ========================================================================

    /// Insert an event and return its database ID.
    async fn insert_event(
        &self,
        session_id: &str,
        timestep_db_id: Option<i64>,
        event: &TracingEvent,
    ) -> Result<i64, TracingError>;

    // ========================================================================
    // MESSAGE OPERATIONS
    // ========================================================================

    /// Insert a message and return its database ID.
    async fn insert_message(
        &self,
        session_id: &str,
        timestep_db_id: Option<i64>,
        msg: &MarkovBlanketMessage,
    ) -> Result<i64, TracingError>;

    // ========================================================================
    // REWARD OPERATIONS
    // ========================================================================

    /// Insert an outcome (session-level) reward.
    async fn insert_outcome_reward(
        &self,
        session_id: &str,
        reward: &OutcomeReward,
    ) -> Result<i64, TracingError>;

    /// Insert an event-level reward.
    async fn insert_event_reward(
        &self,
        session_id: &str,
        event_id: i64,
        message_id: Option<i64>,
        turn_number: Option<i32>,
        reward: &EventReward,
    ) -> Result<i64, TracingError>;

    // ========================================================================
    // QUERY OPERATIONS
    // ========================================================================

    /// Execute a raw SQL query and return results as JSON values.
    ///
    /// On a local database, libsql reads a TEXT result as a C string: a NUL
    /// ends it, and text that is not UTF-8 is a [`TracingError::Database`]
    /// that names its column. Select such a column `CAST(... AS BLOB)` to
    /// get every byte (a BLOB comes back as an array of byte values).
    /// Sessions read with [`TraceStorage::get_session`] come back whole.
    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Value>, TracingError>;

    /// Update session counts (num_timesteps, num_events, num_messages).
    async fn update_session_counts(&self, session_id: &str) -> Result<(), TracingError>;
}

/// SQLite journal mode of a file database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalMode {
    /// Write-ahead log: readers never block the writer, commits need no
    /// fsync at `Synchronous::Normal`. The default for a file.
    #[default]
    Wal,
    /// The rollback journal, as the original backend ran.
    Delete,
}

impl JournalMode {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            JournalMode::Wal => "WAL",
            JournalMode::Delete => "DELETE",
        }
    }
}

/// SQLite `synchronous` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// No fsync at all: an OS crash can corrupt the database.
    Off,
    /// In WAL mode, fsync only at checkpoints: a power loss can drop the last
    /// commits but never corrupts. The default.
    #[default]
    Normal,
    /// fsync at every commit.
    Full,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Default busy timeout: how long SQLite waits for another connection's lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Storage configuration.
///
/// The URL decides the kind of database: `:memory:` is in memory;
/// `libsql://`, `http://`, `https://`, `ws://` and `wss://` are remote;
/// anything else, including a `file:` prefix, is a local file.
///
/// ```
/// use std::time::Duration;
/// use trace_writer::{JournalMode, StorageConfig, Synchronous};
///
/// let config = StorageConfig::file("traces.db")
///     .with_journal_mode(JournalMode::Delete)
///     .with_synchronous(Synchronous::Full)
///     .with_busy_timeout(Duration::from_secs(1));
/// assert_eq!(config.db_url, "traces.db");
///
/// let remote = StorageConfig::turso("libsql://db.example.io", "secret");
/// assert!(!format!("{remote:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct StorageConfig {
    /// Database URL (file path, :memory:, or libsql:// URL). A token may be
    /// given inside it (`?authToken=…`, also `auth_token=` or `jwt=`): it is
    /// then taken as the token, unless `auth_token` is set, and removed from
    /// the URL the connection uses. `Debug` and errors show the URL through
    /// [`StorageConfig::redacted_url`].
    pub db_url: String,
    /// Auth token for remote databases. No `Debug`, error or log line shows it.
    pub auth_token: Option<String>,
    /// Whether to auto-initialize schema
    pub auto_init: bool,
    /// Journal mode of a file database; ignored elsewhere.
    pub journal_mode: JournalMode,
    /// `PRAGMA synchronous` of a local database.
    pub synchronous: Synchronous,
    /// How long to wait for another connection's lock before `SQLITE_BUSY`.
    pub busy_timeout: Duration,
}

impl StorageConfig {
    /// The URL as it may be printed or logged: a token inside it (and any
    /// `user:password@`) replaced by `<redacted>`.
    ///
    /// ```
    /// let config = trace_writer::StorageConfig::file("libsql://db.example.io?authToken=secret");
    /// assert_eq!(config.redacted_url(), "libsql://db.example.io?authToken=<redacted>");
    /// assert!(!format!("{config:?}").contains("secret"));
    /// ```
    pub fn redacted_url(&self) -> String {
        crate::db::url::redact(&self.db_url)
    }
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("db_url", &self.redacted_url())
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("auto_init", &self.auto_init)
            .field("journal_mode", &self.journal_mode)
            .field("synchronous", &self.synchronous)
            .field("busy_timeout", &self.busy_timeout)
            .finish()
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            db_url: ":memory:".to_string(),
            auth_token: None,
            auto_init: true,
            journal_mode: JournalMode::Wal,
            synchronous: Synchronous::Normal,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }
}

impl StorageConfig {
    /// Create config for in-memory database.
    pub fn memory() -> Self {
        Self::default()
    }

    /// Create config for a file-based database.
    pub fn file(path: impl Into<String>) -> Self {
        Self {
            db_url: path.into(),
            ..Self::default()
        }
    }

    /// Create config for a remote Turso database.
    pub fn turso(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            db_url: url.into(),
            auth_token: Some(token.into()),
            ..Self::default()
        }
    }

    /// Sets the journal mode of a file database.
    pub fn with_journal_mode(mut self, mode: JournalMode) -> Self {
        self.journal_mode = mode;
        self
    }

    /// Sets `PRAGMA synchronous`.
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Sets how long to wait on another connection's lock.
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Reads the URL from `SYNTH_TRACES_DB`, `LIBSQL_URL` or
    /// `TURSO_DATABASE_URL` (the first that is set) and the token from
    /// `LIBSQL_AUTH_TOKEN` or `TURSO_AUTH_TOKEN`. With no URL set, the
    /// database is in memory.
    pub fn from_env() -> Self {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        let mut config = Self::default();
        if let Some(url) = var(&["SYNTH_TRACES_DB", "LIBSQL_URL", "TURSO_DATABASE_URL"]) {
            config.db_url = url;
        }
        config.auth_token = var(&["LIBSQL_AUTH_TOKEN", "TURSO_AUTH_TOKEN"]);
        config
    }

    /// Decides what kind of database the URL names.
    ///
    /// # Errors
    /// `InvalidInput` for an empty URL or an unknown scheme.
    pub(crate) fn kind(&self) -> Result<DbKind, TracingError> {
        let url = self.db_url.trim();
        if url.is_empty() {
            return Err(TracingError::InvalidInput("empty database url".into()));
        }
        if url == ":memory:" {
            return Ok(DbKind::Memory);
        }
        if let Some(rest) = url.strip_prefix("file:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(TracingError::InvalidInput(format!(
                    "file url has no path: {url}"
                )));
            }
            if path == ":memory:" {
                return Ok(DbKind::Memory);
            }
            return Ok(DbKind::File(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "libsql" | "http" | "https" | "ws" | "wss" => Ok(DbKind::Remote(url.to_string())),
                other => Err(TracingError::InvalidInput(format!(
                    "unknown database url scheme `{other}://` (expected a file path, \
                     :memory:, libsql://, http://, https://, ws:// or wss://)"
                ))),
            };
        }
        Ok(DbKind::File(PathBuf::from(url)))
    }
}

/// What kind of database a [`StorageConfig`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DbKind {
    Memory,
    File(PathBuf),
    Remote(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_storage_config_default() {
        let config = StorageConfig::default();
        assert_eq!(config.db_url, ":memory:");
        assert!(config.auth_token.is_none());
        assert!(config.auto_init);
        assert_eq!(config.journal_mode, JournalMode::Wal);
        assert_eq!(config.synchronous, Synchronous::Normal);
        assert_eq!(config.busy_timeout, Duration::from_secs(5));
    }

    #[test]
    fn test_storage_config_file() {
        let config = StorageConfig::file("/tmp/test.db");
        assert_eq!(config.db_url, "/tmp/test.db");
        assert_eq!(
            config.kind().unwrap(),
            DbKind::File(PathBuf::from("/tmp/test.db"))
        );
    }

    #[test]
    fn test_storage_config_turso() {
        let config = StorageConfig::turso("libsql://test.turso.io", "token123");
        assert_eq!(config.db_url, "libsql://test.turso.io");
        assert_eq!(config.auth_token, Some("token123".to_string()));
        assert!(!format!("{config:?}").contains("token123"));
    }

    #[test]
    fn url_kinds() {
        let kind = |u: &str| StorageConfig::file(u).kind();
        assert_eq!(kind(":memory:").unwrap(), DbKind::Memory);
        for remote in [
            "libsql://a.io",
            "http://127.0.0.1:8080",
            "https://a.io",
            "ws://a",
            "wss://a",
        ] {
            assert!(
                matches!(kind(remote).unwrap(), DbKind::Remote(_)),
                "{remote}"
            );
        }
        assert_eq!(
            kind("file:traces.db").unwrap(),
            DbKind::File(PathBuf::from("traces.db"))
        );
        assert_eq!(
            kind("file:///tmp/x.db").unwrap(),
            DbKind::File(PathBuf::from("/tmp/x.db"))
        );
        assert!(matches!(
            kind("postgres://x"),
            Err(TracingError::InvalidInput(_))
        ));
        assert!(matches!(kind(""), Err(TracingError::InvalidInput(_))));
    }
}
