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
    /// The database refused some accepted operations since the last flush
    /// (a constraint, a trigger's `RAISE`, a type mismatch). The rest were
    /// committed; the refused ones are kept in the writer's dead-letter file,
    /// which `first_cause` names.
    #[error("{failed} operation(s) failed to be written; first cause: {first_cause}")]
    WriteFailed {
        /// How many operations failed since the previous flush.
        failed: u64,
        /// The first failure's cause, and the dead-letter file that keeps
        /// the refused operations for [`crate::replay_spill_file`].
        first_cause: String,
    },
    /// A batch met an error that no retry can fix: a missing, renamed or
    /// read-only table, a corrupt file, a token the server refuses. That
    /// batch and every write queued after it were spilled, in order, to
    /// `path`; write calls fail fast with this error, and `flush()` and
    /// `close()` return it, until the writer is closed. Fix the cause, then
    /// apply the file with [`crate::replay_spill_file`] (or
    /// `trace-writer replay`): every spilled row keeps its id.
    #[error("the writer stopped writing after a fatal error: {cause}; {spilled} operation(s) \
             are kept in {} for replay", path.display())]
    Halted {
        /// The database's error.
        cause: String,
        /// The spill file.
        path: PathBuf,
        /// How many operations it holds so far.
        spilled: usize,
    },
    /// A wait ran past its deadline. Nothing accepted was dropped.
    #[error("timed out: {0}")]
    Timeout(String),
    /// `close()` could not commit everything in time; the rest was spilled
    /// (`flush()` returns it too if it ran into that close).
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

/// What a database error means for the operation or batch that met it.
///
/// Decided once, from the SQLite result code (local) or the code a remote
/// server sends inside its Hrana error, and carried as a value beside the
/// error from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// Busy, locked, I/O, a full disk, a refused or dropped connection: a
    /// retry of the same work may succeed.
    Transient,
    /// The operation itself was refused: a constraint, a type mismatch, a
    /// trigger's `RAISE`. Set it aside; the rest of the batch is good.
    Operation,
    /// Anything else: no retry can fix it. The batch, and everything
    /// after it, is spilled, and the writer halts (`TracingError::Halted`).
    Fatal,
}

/// A database error and its class: what the database layer returns.
///
/// It becomes [`TracingError::Database`] at the public boundary, with the
/// database's own text and no marker in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DbError {
    pub(crate) class: ErrorClass,
    pub(crate) message: String,
}

impl DbError {
    /// An error of `class` with a message of ours.
    pub(crate) fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }

    pub(crate) fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<libsql::Error> for DbError {
    fn from(err: libsql::Error) -> Self {
        Self {
            class: classify(&err),
            message: err.to_string(),
        }
    }
}

impl From<DbError> for TracingError {
    fn from(err: DbError) -> Self {
        TracingError::Database(err.message)
    }
}

impl From<libsql::Error> for TracingError {
    fn from(err: libsql::Error) -> Self {
        TracingError::Database(err.to_string())
    }
}

/// Classes a libsql error by its SQLite result code.
pub(crate) fn classify(err: &libsql::Error) -> ErrorClass {
    match err {
        libsql::Error::SqliteFailure(code, _) | libsql::Error::RemoteSqliteFailure(code, _, _) => {
            class_of_code(*code)
        }
        libsql::Error::ConnectionFailed(_) | libsql::Error::WriteDelegation(_) => {
            ErrorClass::Transient
        }
        // libsql keeps its Hrana error type private: the server's code is
        // only reachable in the error's text, so it is read from there once.
        libsql::Error::Hrana(inner) => classify_remote(&inner.to_string()),
        _ => ErrorClass::Fatal,
    }
}

/// Classes a (possibly extended) SQLite result code.
pub(crate) fn class_of_code(code: i32) -> ErrorClass {
    // Extended codes keep the primary code in the low byte.
    match code & 0xff {
        // BUSY, LOCKED, IOERR, FULL, PROTOCOL (a lock race).
        5 | 6 | 10 | 13 | 15 => ErrorClass::Transient,
        // TOOBIG, CONSTRAINT (triggers' RAISE included), MISMATCH, RANGE.
        18 | 19 | 20 | 25 => ErrorClass::Operation,
        _ => ErrorClass::Fatal,
    }
}

/// Classes a remote server's error code: SQLite's names, as sqld sends
/// them (`SQLITE_CONSTRAINT`, also extended ones such as
/// `SQLITE_CONSTRAINT_TRIGGER`), and sqld's own.
fn class_of_remote_code(code: &str) -> ErrorClass {
    let primary = code
        .strip_prefix("SQLITE_")
        .map(|rest| rest.split('_').next().unwrap_or(rest));
    match primary {
        Some("BUSY" | "LOCKED" | "IOERR" | "FULL" | "PROTOCOL") => ErrorClass::Transient,
        Some("TOOBIG" | "CONSTRAINT" | "MISMATCH" | "RANGE") => ErrorClass::Operation,
        Some(_) => ErrorClass::Fatal,
        None => match code {
            // The server dropped the stream or is overloaded: the batch's
            // transaction is gone and a retry starts afresh.
            "TRANSACTION_TIMEOUT" | "TRANSACTION_BUSY" | "STREAM_EXPIRED" | "PROXY_ERROR" => {
                ErrorClass::Transient
            }
            "ARGS_INVALID" => ErrorClass::Operation,
            _ => ErrorClass::Fatal,
        },
    }
}

/// Classes an error a remote server reported: by its code when it sent one,
/// else by its text.
pub(crate) fn classify_remote_error(code: Option<&str>, message: &str) -> ErrorClass {
    match code.filter(|c| !c.is_empty()) {
        Some(code) => class_of_remote_code(code),
        None => classify_remote(message),
    }
}

/// Classes the text of a Hrana error. A server error carries its code
/// (`code: "SQLITE_BUSY"` in the stream error, or `"code":"..."` in an HTTP
/// body); an error with no code is the transport's: a refused, reset or
/// dropped connection, or an HTTP status.
fn classify_remote(text: &str) -> ErrorClass {
    if let Some(code) = remote_code(text) {
        return class_of_remote_code(code);
    }
    if let Some(status) = http_status(text) {
        return match status {
            408 | 429 | 500..=599 => ErrorClass::Transient,
            _ => ErrorClass::Fatal,
        };
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("constraint failed") {
        // A batch step's error keeps only the message.
        return ErrorClass::Operation;
    }
    if lower.starts_with("http error")
        || lower.starts_with("stream closed")
        || lower.starts_with("unexpected response")
        || lower.contains("connection")
        || lower.contains("database is locked")
    {
        return ErrorClass::Transient;
    }
    ErrorClass::Fatal
}

/// The value of the first `code` field in a Hrana error's text.
fn remote_code(text: &str) -> Option<&str> {
    for pat in ["code: \"", "\"code\":\"", "\"code\": \""] {
        if let Some(at) = text.find(pat) {
            let rest = &text[at + pat.len()..];
            let code = &rest[..rest.find('"')?];
            if !code.is_empty() {
                return Some(code);
            }
        }
    }
    None
}

/// The status of an HTTP error (`status=502, body=...`).
fn http_status(text: &str) -> Option<u16> {
    let at = text.find("status=")?;
    let digits: String = text[at + 7..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl From<serde_json::Error> for TracingError {
    fn from(err: serde_json::Error) -> Self {
        TracingError::Serialization(err.to_string())
    }
}

/// The message of `.expect()` on states that only a bug can reach.
pub(crate) const BUG: &str = "trace-writer bug: please report it with this message and backtrace";

#[cfg(test)]
mod tests {
    use super::*;

    fn local(code: i32) -> ErrorClass {
        classify(&libsql::Error::SqliteFailure(code, "x".into()))
    }

    fn remote(text: &str) -> ErrorClass {
        classify(&libsql::Error::Hrana(Box::new(std::io::Error::other(
            text.to_string(),
        ))))
    }

    #[test]
    fn local_codes_are_classed_by_their_primary_code() {
        // BUSY, LOCKED, BUSY_SNAPSHOT, IOERR_WRITE, FULL.
        for code in [5, 6, 5 | (2 << 8), 10 | (3 << 8), 13] {
            assert_eq!(local(code), ErrorClass::Transient, "{code}");
        }
        // CONSTRAINT, CONSTRAINT_UNIQUE, CONSTRAINT_TRIGGER, MISMATCH, TOOBIG.
        for code in [19, 2067, 1811, 20, 18] {
            assert_eq!(local(code), ErrorClass::Operation, "{code}");
        }
        // ERROR (no such table), READONLY, CORRUPT, NOTADB, MISUSE.
        for code in [1, 8, 11, 26, 21] {
            assert_eq!(local(code), ErrorClass::Fatal, "{code}");
        }
        let remote_failure = libsql::Error::RemoteSqliteFailure(19, 2067, "UNIQUE".into());
        assert_eq!(classify(&remote_failure), ErrorClass::Operation);
        assert_eq!(
            classify(&libsql::Error::ConnectionFailed("refused".into())),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(&libsql::Error::Misuse("bad".into())),
            ErrorClass::Fatal
        );
    }

    #[test]
    fn remote_errors_are_classed_by_the_servers_code() {
        // sqld's stream error, as libsql renders it.
        let constraint = "stream error: `Error { message: \"SQLite error: UNIQUE constraint \
                          failed: events.id\", code: \"SQLITE_CONSTRAINT\" }`";
        assert_eq!(remote(constraint), ErrorClass::Operation);
        let trigger = "cursor error: `error at step 1: Error { message: \"SQLite error: \
                       refused\", code: \"SQLITE_CONSTRAINT_TRIGGER\" }`";
        assert_eq!(remote(trigger), ErrorClass::Operation);
        let busy = "stream error: `Error { message: \"SQLite error: database is locked\", \
                    code: \"SQLITE_BUSY\" }`";
        assert_eq!(remote(busy), ErrorClass::Transient);
        let timeout = "stream error: `Error { message: \"Transaction timed out\", \
                       code: \"TRANSACTION_TIMEOUT\" }`";
        assert_eq!(remote(timeout), ErrorClass::Transient);
        let parse = "stream error: `Error { message: \"SQL string could not be parsed\", \
                     code: \"SQL_PARSE_ERROR\" }`";
        assert_eq!(remote(parse), ErrorClass::Fatal);
        // An HTTP body with a JSON error.
        let body =
            r#"api error: `status=400, body={"message":"mismatch","code":"SQLITE_MISMATCH"}`"#;
        assert_eq!(remote(body), ErrorClass::Operation);
    }

    #[test]
    fn remote_transport_errors_are_transient_and_auth_is_fatal() {
        let refused = "http error: `hyper::Error(Connect, ConnectError(\"tcp connect error\", \
                       Os { code: 111, kind: ConnectionRefused }))`";
        assert_eq!(remote(refused), ErrorClass::Transient);
        assert_eq!(
            remote("http error: `connection closed before message completed`"),
            ErrorClass::Transient
        );
        assert_eq!(
            remote("api error: `status=502, body=bad gateway`"),
            ErrorClass::Transient
        );
        assert_eq!(
            remote("api error: `status=401, body=Unauthorized`"),
            ErrorClass::Fatal
        );
        assert_eq!(
            remote("stream closed: `baton expired`"),
            ErrorClass::Transient
        );
    }

    #[test]
    fn display_shows_the_database_text_and_no_marker() {
        let busy: DbError = libsql::Error::SqliteFailure(5, "database is locked".into()).into();
        assert!(busy.is_transient());
        let public = TracingError::from(busy);
        let text = public.to_string();
        assert!(text.contains("database is locked"), "{text}");
        assert!(!text.contains("transient"), "{text}");
        assert!(matches!(public, TracingError::Database(_)));
    }
}
