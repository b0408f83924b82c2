//! The `--db` and `--auth-token` arguments, opening the database, queries,
//! and the tool's error type.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::path::PathBuf;

use clap::Args;
use serde_json::Value as Json;
use trace_writer::{JournalMode, LibsqlTraceStorage, StorageConfig, TraceStorage, TracingError};

/// The env variable the tool reads a token from before the crate's own names.
const TOKEN_ENV: &str = "TRACE_WRITER_AUTH_TOKEN";

/// The tables the crate creates, in the order they are printed.
pub(crate) const TABLES: [&str; 6] = [
    "session_traces",
    "session_timesteps",
    "events",
    "messages",
    "outcome_rewards",
    "event_rewards",
];

/// Where the database is, and how to reach it.
#[derive(Args)]
pub(crate) struct DbArgs {
    /// The database: a file path, a `file:` URL, `:memory:`, or a remote
    /// `libsql://`, `http(s)://` or `ws(s)://` URL.
    #[arg(long, visible_alias = "url", value_name = "URL")]
    pub(crate) db: String,
    /// Auth token for a remote database. Defaults to $TRACE_WRITER_AUTH_TOKEN,
    /// then $LIBSQL_AUTH_TOKEN or $TURSO_AUTH_TOKEN. Prefer the environment:
    /// other users can read command lines.
    #[arg(long, value_name = "TOKEN")]
    auth_token: Option<String>,
}

// Hand-written so that the token can never reach a log or a panic message.
impl fmt::Debug for DbArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbArgs")
            .field("db", &self.db)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// What kind of database `--db` names; mirrors `StorageConfig`'s own rules.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Memory,
    File(PathBuf),
    /// A remote server, or a scheme the crate will refuse with its own message.
    Url,
}

fn target(url: &str) -> Target {
    let url = url.trim();
    if url == ":memory:" {
        return Target::Memory;
    }
    if let Some(rest) = url.strip_prefix("file:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        return match path {
            ":memory:" => Target::Memory,
            // An empty path is the crate's error to report.
            "" => Target::Url,
            _ => Target::File(PathBuf::from(path)),
        };
    }
    if url.contains("://") || url.is_empty() {
        return Target::Url;
    }
    Target::File(PathBuf::from(url))
}

/// The journal mode an SQLite file is in, from its header: byte 18 is 1 for
/// a rollback journal and 2 for WAL. `None` if it cannot be read or is not
/// an SQLite file.
fn journal_mode(path: &std::path::Path) -> Option<JournalMode> {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .ok()?;
    if !header.starts_with(b"SQLite format 3\0") {
        return None;
    }
    match header[18] {
        1 => Some(JournalMode::Delete),
        2 => Some(JournalMode::Wal),
        _ => None,
    }
}

impl DbArgs {
    /// The token: the flag, else the environment.
    pub(crate) fn token(&self) -> Option<String> {
        self.auth_token
            .clone()
            .filter(|t| !t.is_empty())
            .or_else(|| std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()))
            .or_else(|| StorageConfig::from_env().auth_token)
    }

    /// `--db` as it may be printed: the crate's own redaction
    /// (`StorageConfig::redacted_url`), so a token inside the URL never shows.
    pub(crate) fn shown(&self) -> String {
        StorageConfig::file(self.db.clone()).redacted_url()
    }

    /// The local file `--db` names, if it names one.
    pub(crate) fn local_path(&self) -> Option<PathBuf> {
        match target(&self.db) {
            Target::File(path) => Some(path),
            _ => None,
        }
    }

    /// Whether `--db` is an in-memory database, which dies with the process.
    pub(crate) fn is_memory(&self) -> bool {
        target(&self.db) == Target::Memory
    }

    /// The storage config. `auto_init` decides whether tables may be created.
    /// An existing local file keeps its journal mode: opening switches it
    /// otherwise, and a tool that only looks should change nothing.
    pub(crate) fn config(&self, auto_init: bool) -> StorageConfig {
        let mut config = StorageConfig::file(self.db.clone());
        config.auth_token = self.token();
        config.auto_init = auto_init;
        if let Target::File(path) = target(&self.db) {
            if let Some(mode) = journal_mode(&path) {
                config = config.with_journal_mode(mode);
            }
        }
        config
    }

    /// Fails unless a local database file already exists, so that opening
    /// it never creates a new empty file.
    pub(crate) fn require_existing(&self) -> Result<(), CliError> {
        if let Target::File(path) = target(&self.db) {
            if !path.is_file() {
                let what = if path.exists() {
                    "is not a file"
                } else {
                    "does not exist"
                };
                return Err(CliError::new(format!(
                    "database file `{}` {what}",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Opens an existing trace database without creating or migrating
    /// anything, and checks that it has the crate's tables.
    pub(crate) async fn open_existing(&self) -> Result<LibsqlTraceStorage, CliError> {
        if self.is_memory() {
            return Err(CliError::new(
                "`:memory:` opens a new, empty database: give a file path or a server url",
            ));
        }
        self.require_existing()?;
        let storage = LibsqlTraceStorage::new(self.config(false))
            .await
            .map_err(|e| CliError::new(format!("cannot open `{}`: {e}", self.shown())))?;
        // The first statement: on a remote server, the first contact too.
        let found = query(
            &storage,
            "SELECT name FROM sqlite_master WHERE type = 'table'",
            vec![],
        )
        .await
        .map_err(|e| CliError::new(format!("cannot read `{}`: {}", self.shown(), e.msg)))?;
        let names: Vec<&str> = found.iter().filter_map(|r| r["name"].as_str()).collect();
        let missing: Vec<&str> = TABLES
            .iter()
            .copied()
            .filter(|t| !names.contains(t))
            .collect();
        if !missing.is_empty() {
            return Err(CliError::new(format!(
                "`{}` is not a trace database: missing table(s) {}",
                self.shown(),
                missing.join(", ")
            )));
        }
        Ok(storage)
    }
}

/// Runs a query through the public `TraceStorage::query`.
pub(crate) async fn query(
    storage: &LibsqlTraceStorage,
    sql: &str,
    params: Vec<Json>,
) -> Result<Vec<Json>, CliError> {
    Ok(storage.query(sql, params).await?)
}

/// Runs a query whose one row has an integer column `n`.
pub(crate) async fn count(storage: &LibsqlTraceStorage, sql: &str) -> Result<i64, CliError> {
    let rows = query(storage, sql, vec![]).await?;
    rows.first()
        .and_then(|r| r["n"].as_i64())
        .ok_or_else(|| CliError::new(format!("no count came back from `{sql}`")))
}

/// A column value as text: strings bare, NULL as `NULL`.
pub(crate) fn render(v: &Json) -> String {
    match v {
        Json::Null => "NULL".to_string(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes one line to stdout; the `say!` macro's body.
pub(crate) fn say(args: fmt::Arguments<'_>) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| CliError {
            // A reader that went away (`| head`) is no error worth a word.
            quiet: e.kind() == ErrorKind::BrokenPipe,
            msg: format!("cannot write to stdout: {e}"),
        })
}

/// An error that ends a command with exit status 2.
#[derive(Debug)]
pub(crate) struct CliError {
    msg: String,
    /// Exit without printing: stdout was closed by its reader.
    quiet: bool,
}

impl CliError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self {
            msg: msg.into(),
            quiet: false,
        }
    }

    /// The message as it stands.
    pub(crate) fn message(&self) -> &str {
        &self.msg
    }

    /// Whether to exit without a message.
    pub(crate) fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// The message, with the token (if any) cut out, in case a server or
    /// library ever echoes it.
    pub(crate) fn redacted(&self, token: Option<&str>) -> String {
        match token {
            Some(t) if !t.is_empty() => self.msg.replace(t, "<redacted>"),
            _ => self.msg.clone(),
        }
    }
}

impl From<TracingError> for CliError {
    fn from(e: TracingError) -> Self {
        Self::new(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target(":memory:"), Target::Memory);
        assert_eq!(target("file::memory:"), Target::Memory);
        assert_eq!(target("a.db"), Target::File("a.db".into()));
        assert_eq!(target("file:a.db"), Target::File("a.db".into()));
        assert_eq!(target("file:///t/a.db"), Target::File("/t/a.db".into()));
        assert_eq!(target("libsql://x.io"), Target::Url);
        assert_eq!(target("https://x.io"), Target::Url);
    }

    #[test]
    fn tokens_are_cut_out() {
        let e = CliError::new("bad token s3cret at libsql://x");
        assert_eq!(
            e.redacted(Some("s3cret")),
            "bad token <redacted> at libsql://x"
        );
    }
}
