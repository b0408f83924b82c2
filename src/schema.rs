//! DDL and migrations: the only place that creates tables.
//!
//! The tables and columns of the original tracing module are kept, so that
//! existing queries and tools still work. Version 1 adds the columns that a
//! lossless [`crate::TraceStorage::get_session`] needs. The version lives in
//! `PRAGMA user_version`; every step is idempotent, so migrating twice, or a
//! database made by the original module, is safe.

use libsql::Connection;

use crate::error::TracingError;

/// The schema version this crate writes.
pub const SCHEMA_VERSION: i64 = 1;

/// The original tables, with the version-1 columns included.
const CREATE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS session_traces (
    session_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    num_timesteps INTEGER NOT NULL DEFAULT 0,
    num_events INTEGER NOT NULL DEFAULT 0,
    num_messages INTEGER NOT NULL DEFAULT 0,
    metadata TEXT
);
CREATE TABLE IF NOT EXISTS session_timesteps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    turn_number INTEGER,
    started_at TEXT,
    completed_at TEXT,
    step_metadata TEXT,
    UNIQUE(session_id, step_id)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    timestep_id INTEGER,
    event_type TEXT NOT NULL,
    system_instance_id TEXT,
    event_time REAL,
    message_time INTEGER,
    model_name TEXT,
    provider TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    total_tokens INTEGER,
    cost_cents INTEGER,
    latency_ms INTEGER,
    call_records TEXT,
    reward REAL,
    terminated INTEGER,
    truncated INTEGER,
    system_state_before TEXT,
    system_state_after TEXT,
    metadata TEXT,
    event_metadata TEXT,
    cost_usd REAL,
    span_id TEXT,
    trace_id TEXT,
    actions TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    timestep_id INTEGER,
    message_type TEXT NOT NULL,
    content TEXT,
    event_time REAL,
    message_time INTEGER,
    metadata TEXT,
    content_kind TEXT,
    json_payload TEXT
);
CREATE TABLE IF NOT EXISTS outcome_rewards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    objective_key TEXT NOT NULL DEFAULT 'reward',
    total_reward REAL NOT NULL,
    achievements_count INTEGER,
    total_steps INTEGER,
    created_at TEXT,
    reward_metadata TEXT,
    annotation TEXT
);
CREATE TABLE IF NOT EXISTS event_rewards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER,
    session_id TEXT NOT NULL,
    message_id INTEGER,
    turn_number INTEGER,
    objective_key TEXT NOT NULL DEFAULT 'reward',
    reward_value REAL NOT NULL,
    reward_type TEXT,
    key TEXT,
    annotation TEXT,
    source TEXT,
    created_at TEXT
);
-- session_timesteps has no index of its own on session_id: its unique key
-- (session_id, step_id) serves those lookups, and a second index cost the
-- main job at 8,192 concurrent rollouts about a tenth of its rate (each
-- batch dirtied a page of it per session). A database that has one keeps it.
CREATE INDEX IF NOT EXISTS idx_events_session ON events(session_id);
CREATE INDEX IF NOT EXISTS idx_events_timestep ON events(timestep_id);
CREATE INDEX IF NOT EXISTS idx_messages_session ON messages(session_id);
CREATE INDEX IF NOT EXISTS idx_outcome_rewards_session ON outcome_rewards(session_id);
CREATE INDEX IF NOT EXISTS idx_event_rewards_session ON event_rewards(session_id);
";

/// Columns added by version 1 to tables the original module created.
const V1_COLUMNS: &[(&str, &str, &str)] = &[
    ("events", "cost_usd", "REAL"),
    ("events", "span_id", "TEXT"),
    ("events", "trace_id", "TEXT"),
    ("events", "actions", "TEXT"),
    ("messages", "content_kind", "TEXT"),
    ("messages", "json_payload", "TEXT"),
];

/// Brings the database to [`SCHEMA_VERSION`], in one transaction.
///
/// # Errors
/// `Database` if a statement fails, `COMMIT` included; the transaction is
/// rolled back.
pub async fn migrate(conn: &Connection) -> Result<(), TracingError> {
    if user_version(conn).await? >= SCHEMA_VERSION && has_all_columns(conn).await? {
        return Ok(());
    }
    crate::db::transaction(conn, migrate_in_tx(conn)).await
}

async fn migrate_in_tx(conn: &Connection) -> Result<(), TracingError> {
    conn.execute_batch(CREATE_TABLES).await?;
    for (table, column, ty) in V1_COLUMNS {
        if !table_columns(conn, table)
            .await?
            .iter()
            .any(|c| c == column)
        {
            conn.execute(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"), ())
                .await?;
        }
    }
    conn.execute(&format!("PRAGMA user_version = {SCHEMA_VERSION}"), ())
        .await?;
    Ok(())
}

/// Refuses trace tables whose ids lack AUTOINCREMENT, as another tool may
/// create them. Without it SQLite may hand out an id again (the largest one,
/// once deleted) and ignores `sqlite_sequence`, so a plain backend would
/// collide with the ids writers lease ahead of time.
///
/// # Errors
/// `Database` naming the first such table.
pub async fn check_autoincrement(conn: &Connection) -> Result<(), TracingError> {
    for table in [
        "session_timesteps",
        "events",
        "messages",
        "outcome_rewards",
        "event_rewards",
    ] {
        let mut rows = conn
            .query(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                [table],
            )
            .await?;
        let Some(row) = rows.next().await? else {
            // Not created yet (a database opened without `auto_init`).
            continue;
        };
        let sql: String = row.get::<Option<String>>(0)?.unwrap_or_default();
        if !sql.to_ascii_uppercase().contains("AUTOINCREMENT") {
            return Err(TracingError::Database(format!(
                "table `{table}` was created without AUTOINCREMENT (by another tool?): \
                 SQLite could reuse its ids, and they would collide with the ids writers \
                 lease ahead of time. Recreate it with `id INTEGER PRIMARY KEY AUTOINCREMENT` \
                 (copying its rows), or use a database created by this crate"
            )));
        }
    }
    Ok(())
}

async fn has_all_columns(conn: &Connection) -> Result<bool, TracingError> {
    for (table, column, _) in V1_COLUMNS {
        if !table_columns(conn, table)
            .await?
            .iter()
            .any(|c| c == column)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `PRAGMA user_version`.
pub async fn user_version(conn: &Connection) -> Result<i64, TracingError> {
    let mut rows = conn.query("PRAGMA user_version", ()).await?;
    match rows.next().await? {
        Some(row) => Ok(row.get::<i64>(0)?),
        None => Ok(0),
    }
}

async fn table_columns(conn: &Connection, table: &str) -> Result<Vec<String>, TracingError> {
    let mut rows = conn
        .query(&format!("PRAGMA table_info({table})"), ())
        .await?;
    let mut names = Vec::new();
    while let Some(row) = rows.next().await? {
        names.push(row.get::<String>(1)?);
    }
    Ok(names)
}

/// An in-memory database with the schema, for unit tests that need
/// SQLite itself. The database is returned too: the connection needs it
/// alive.
#[cfg(test)]
pub(crate) async fn memory_with_schema() -> (libsql::Database, Connection) {
    let db = libsql::Builder::new_local(":memory:")
        .build()
        .await
        .expect("open an in-memory database");
    let conn = db.connect().expect("connect");
    migrate(&conn).await.expect("migrate");
    (db, conn)
}
