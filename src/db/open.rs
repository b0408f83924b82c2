//! Opening a database: the connection, its pragmas, and the schema.

use std::path::Path;
use std::sync::Arc;

use libsql::{Connection, Database};

use crate::db::foreign::{self, Findings, ForeignWatch};
use crate::db::hrana::HranaClient;
use crate::db::url;
use crate::error::TracingError;
use crate::schema;
use crate::storage::{DbKind, JournalMode, StorageConfig};

/// An open database and its one connection.
pub(crate) struct Opened {
    /// Kept so the database outlives the connection, and so a remote
    /// connection can be opened again after the server dropped it.
    pub(crate) db: Database,
    pub(crate) conn: Connection,
    pub(crate) remote: bool,
    /// For a remote server: the client that sends a batch in one request.
    pub(crate) pipeline: Option<Arc<HranaClient>>,
    /// For a file: the watch for a second SQLite library with it open.
    /// Whoever keeps the connection keeps this too, and drops it last.
    pub(crate) watch: ForeignWatch,
}

/// Opens the database the config names, applies the pragmas and, with
/// `auto_init`, migrates the schema.
///
/// # Errors
/// `InvalidInput` for a bad URL or a missing folder; `Database` when the
/// database cannot be opened or reached.
pub(crate) async fn open(config: &StorageConfig) -> Result<Opened, TracingError> {
    open_watched(config, Arc::default()).await
}

/// As [`open`], reporting a second SQLite library with a file database open
/// in this process into `findings` (see `foreign.rs`): once now, and again
/// whenever the owner calls `watch.scan_if_due()`.
///
/// # Errors
/// As [`open`].
pub(crate) async fn open_watched(
    config: &StorageConfig,
    findings: Arc<Findings>,
) -> Result<Opened, TracingError> {
    let kind = config.kind()?;
    match &kind {
        DbKind::File(path) => {
            check_parent_exists(path)?;
            let (mut opened, watch) =
                foreign::open_claimed(path, findings, open_kind(config, &kind)).await?;
            opened.watch = watch;
            Ok(opened)
        }
        _ => {
            let mut opened = open_kind(config, &kind).await?;
            opened.watch = ForeignWatch::none(findings);
            Ok(opened)
        }
    }
}

/// What every local connection of the crate to `config`'s database is
/// set to: its busy timeout and its `synchronous` setting.
///
/// # Errors
/// The pragma's error.
pub(crate) async fn connection_settings(
    conn: &libsql::Connection,
    config: &StorageConfig,
) -> libsql::Result<()> {
    // SQLite takes milliseconds as an `i32`: longer is "forever" anyway.
    let most = std::time::Duration::from_millis(i32::MAX as u64);
    conn.busy_timeout(config.busy_timeout.min(most))?;
    conn.execute(
        &format!("PRAGMA synchronous = {}", config.synchronous.pragma()),
        (),
    )
    .await?;
    Ok(())
}

async fn open_kind(config: &StorageConfig, kind: &DbKind) -> Result<Opened, TracingError> {
    let mut pipeline = None;
    let (db, remote) = match kind {
        DbKind::Memory => (libsql::Builder::new_local(":memory:").build().await?, false),
        DbKind::File(path) => (libsql::Builder::new_local(path).build().await?, false),
        DbKind::Remote(url) => {
            // A token inside the URL is the token (unless one was given
            // apart), and it leaves the URL: nothing the connection prints
            // can show it.
            let (url, in_url) = url::take_token(url);
            let token = config
                .auth_token
                .clone()
                .filter(|t| !t.is_empty())
                .or(in_url)
                .unwrap_or_default();
            pipeline = Some(Arc::new(HranaClient::new(&url, Some(&token))?));
            let db = libsql::Builder::new_remote(url, token).build().await?;
            (db, true)
        }
    };
    let conn = db.connect()?;
    if !remote {
        connection_settings(&conn, config).await?;
        if matches!(kind, DbKind::File(_)) {
            let mode = config.journal_mode.pragma();
            // `PRAGMA journal_mode` answers with a row, so it is a query.
            let mut rows = conn
                .query(&format!("PRAGMA journal_mode = {mode}"), ())
                .await?;
            let got: String = match rows.next().await? {
                Some(row) => row.get(0)?,
                None => String::new(),
            };
            if config.journal_mode == JournalMode::Wal && !got.eq_ignore_ascii_case("wal") {
                return Err(TracingError::Database(format!(
                    "could not switch the database to WAL mode (it reports `{got}`)"
                )));
            }
        }
        if matches!(kind, DbKind::File(_)) {
            // One connection does the writing. Rows of thousands of
            // concurrent rollouts land all over the session-keyed indexes,
            // so a batch dirties about one index page per session: the cache
            // holds them (SQLite's default is 2 MB; it grows only as used),
            // and a WAL checkpoint every 10,000 pages instead of 1,000 copies
            // a hot page back once per several batches (docs/scale.md). The
            // writer then turns its connection's checkpoints off and runs
            // them beside its batches (`writer/actor/checkpoint.rs`).
            for pragma in [
                "PRAGMA cache_size = -32768",
                "PRAGMA wal_autocheckpoint = 10000",
                "PRAGMA journal_size_limit = 67108864",
            ] {
                // Each answers with a row, so each is a query.
                let mut rows = conn.query(pragma, ()).await?;
                while rows.next().await?.is_some() {}
            }
        }
    }
    // Before any migration: a foreign database that is refused is left as
    // it was.
    let named = |e: TracingError| match e {
        TracingError::Database(msg) => {
            TracingError::Database(format!("cannot open `{}`: {msg}", config.redacted_url()))
        }
        other => other,
    };
    schema::check_autoincrement(&conn).await.map_err(named)?;
    if config.auto_init {
        schema::migrate(&conn).await.map_err(named)?;
    }
    Ok(Opened {
        db,
        conn,
        remote,
        pipeline,
        watch: ForeignWatch::none(Arc::default()),
    })
}

fn check_parent_exists(path: &Path) -> Result<(), TracingError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => {
            Err(TracingError::InvalidInput(format!(
                "the folder of database file `{}` does not exist",
                path.display()
            )))
        }
        _ => Ok(()),
    }
}
