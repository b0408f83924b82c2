//! Opening databases: URL kinds, migrations, the original layout.
use serde_json::json;
use trace_writer::*;

/// The original module's DDL, without the columns this crate added.
const ORIGINAL: &str = "
CREATE TABLE session_traces (session_id TEXT PRIMARY KEY, created_at TEXT NOT NULL,
  num_timesteps INTEGER DEFAULT 0, num_events INTEGER DEFAULT 0, num_messages INTEGER DEFAULT 0, metadata TEXT);
CREATE TABLE session_timesteps (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, step_id TEXT NOT NULL,
  step_index INTEGER NOT NULL, turn_number INTEGER, started_at TEXT, completed_at TEXT, step_metadata TEXT,
  UNIQUE(session_id, step_id));
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, timestep_id INTEGER,
  event_type TEXT NOT NULL, system_instance_id TEXT, event_time REAL, message_time INTEGER, model_name TEXT,
  provider TEXT, input_tokens INTEGER, output_tokens INTEGER, total_tokens INTEGER, cost_cents INTEGER,
  latency_ms INTEGER, call_records TEXT, reward REAL, terminated INTEGER, truncated INTEGER,
  system_state_before TEXT, system_state_after TEXT, metadata TEXT, event_metadata TEXT);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, timestep_id INTEGER,
  message_type TEXT NOT NULL, content TEXT, event_time REAL, message_time INTEGER, metadata TEXT);
CREATE TABLE outcome_rewards (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL,
  objective_key TEXT DEFAULT 'reward', total_reward REAL NOT NULL, achievements_count INTEGER, total_steps INTEGER,
  created_at TEXT, reward_metadata TEXT, annotation TEXT);
CREATE TABLE event_rewards (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id INTEGER, session_id TEXT NOT NULL,
  message_id INTEGER, turn_number INTEGER, objective_key TEXT DEFAULT 'reward', reward_value REAL NOT NULL,
  reward_type TEXT, key TEXT, annotation TEXT, source TEXT, created_at TEXT);
INSERT INTO session_traces (session_id, created_at, metadata) VALUES ('old', '2024-01-01T00:00:00Z', '{\"v\":1}');
INSERT INTO events (session_id, event_type, system_instance_id, event_time, model_name, cost_cents, metadata)
  VALUES ('old', 'cais', 'agent', 1.5, 'gpt', 12, '{}');
INSERT INTO messages (session_id, message_type, content, event_time, metadata) VALUES ('old', 'user', 'hi', 2.0, '{}');
";

async fn raw(path: &std::path::Path) -> libsql::Connection {
    let db = libsql::Builder::new_local(path).build().await.unwrap();
    db.connect().unwrap()
}

#[tokio::test]
async fn original_layout_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    raw(&path).await.execute_batch(ORIGINAL).await.unwrap();

    for backend in ["plain", "writer"] {
        let config = StorageConfig::file(path.to_str().unwrap());
        let storage: Box<dyn TraceStorage> = if backend == "plain" {
            Box::new(LibsqlTraceStorage::new(config).await.unwrap())
        } else {
            Box::new(
                BufferedTraceWriter::new(config, WriterConfig::default())
                    .await
                    .unwrap(),
            )
        };
        let old = storage.get_session("old").await.unwrap().unwrap();
        assert_eq!(old.metadata["v"], json!(1));
        let TracingEvent::Cais(e) = &old.event_history[0] else {
            panic!("not cais")
        };
        // Old rows have only the rounded cents.
        assert_eq!(e.cost_usd, Some(0.12));
        assert_eq!(
            old.markov_blanket_message_history[0].content.as_text(),
            Some("hi")
        );
        // New rows continue the old ids.
        let id = storage
            .insert_event("old", None, &trace_writer::workload::small_event(1))
            .await
            .unwrap();
        assert!(id >= 2, "{backend}: id {id}");
        let version = storage.query("PRAGMA user_version", vec![]).await.unwrap();
        assert_eq!(version[0]["user_version"], json!(schema::SCHEMA_VERSION));
        storage.close().await.unwrap();
    }
}

#[tokio::test]
async fn migration_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let conn = raw(&path).await;
    schema::migrate(&conn).await.unwrap();
    schema::migrate(&conn).await.unwrap();
    assert_eq!(
        schema::user_version(&conn).await.unwrap(),
        schema::SCHEMA_VERSION
    );
    // Opening twice more through the backends changes nothing either.
    for _ in 0..2 {
        let s = LibsqlTraceStorage::new_file(path.to_str().unwrap())
            .await
            .unwrap();
        s.initialize().await.unwrap();
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn bad_urls_fail_at_open_with_a_clear_error() {
    let missing = "/definitely/not/a/folder/traces.db";
    for url in [missing, "postgres://localhost/db", ""] {
        let err = LibsqlTraceStorage::new(StorageConfig::file(url))
            .await
            .unwrap_err();
        assert!(matches!(err, TracingError::InvalidInput(_)), "{url}: {err}");
        let err = BufferedTraceWriter::new(StorageConfig::file(url), WriterConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, TracingError::InvalidInput(_)), "{url}: {err}");
    }
    let err = LibsqlTraceStorage::new(StorageConfig::file(missing))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn file_prefix_and_journal_modes() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal.db");
    let s = LibsqlTraceStorage::new(StorageConfig::file(format!("file:{}", wal.display())))
        .await
        .unwrap();
    let mode = s.query("PRAGMA journal_mode", vec![]).await.unwrap();
    assert_eq!(mode[0]["journal_mode"], json!("wal"));
    s.close().await.unwrap();
    assert!(wal.exists());

    let del = dir.path().join("delete.db");
    let s = LibsqlTraceStorage::new(
        StorageConfig::file(del.to_str().unwrap())
            .with_journal_mode(JournalMode::Delete)
            .with_synchronous(Synchronous::Full),
    )
    .await
    .unwrap();
    let mode = s.query("PRAGMA journal_mode", vec![]).await.unwrap();
    assert_eq!(mode[0]["journal_mode"], json!("delete"));
    let sync = s.query("PRAGMA synchronous", vec![]).await.unwrap();
    assert_eq!(sync[0]["synchronous"], json!(2));
    s.close().await.unwrap();
}

#[tokio::test]
async fn remote_url_to_a_closed_port_fails_at_open() {
    // Bind then drop a listener: the port is closed, on loopback only.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let err = LibsqlTraceStorage::new(StorageConfig::turso(url.clone(), "token"))
        .await
        .unwrap_err();
    assert!(matches!(err, TracingError::Database(_)), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    let err = BufferedTraceWriter::new(StorageConfig::turso(url, "t"), WriterConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TracingError::Database(_)), "{err}");
}

#[test]
fn from_env_reads_the_documented_variables() {
    // One test touches the environment, so no other test races it.
    std::env::set_var("SYNTH_TRACES_DB", "/tmp/from-env.db");
    std::env::set_var("TURSO_AUTH_TOKEN", "tok");
    let c = StorageConfig::from_env();
    assert_eq!(c.db_url, "/tmp/from-env.db");
    assert_eq!(c.auth_token.as_deref(), Some("tok"));
    std::env::remove_var("SYNTH_TRACES_DB");
    std::env::set_var("LIBSQL_URL", "libsql://x.io");
    assert_eq!(StorageConfig::from_env().db_url, "libsql://x.io");
    std::env::remove_var("LIBSQL_URL");
    std::env::remove_var("TURSO_AUTH_TOKEN");
    assert_eq!(StorageConfig::from_env().db_url, ":memory:");
}

/// Trace tables made by another tool without AUTOINCREMENT would let SQLite
/// reuse ids, colliding with leased ones: both backends refuse them at open.
#[tokio::test]
async fn tables_without_autoincrement_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.db");
    {
        let conn = raw(&path).await;
        let foreign = ORIGINAL.replacen(
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT",
            "CREATE TABLE events (id INTEGER PRIMARY KEY",
            1,
        );
        assert_ne!(foreign, ORIGINAL);
        conn.execute_batch(&foreign).await.unwrap();
    }
    let config = StorageConfig::file(path.to_str().unwrap());
    let plain = LibsqlTraceStorage::new(config.clone()).await;
    let writer = BufferedTraceWriter::new(config, WriterConfig::default()).await;
    for err in [plain.err(), writer.err()] {
        match err {
            Some(TracingError::Database(msg)) => {
                assert!(msg.contains("`events`"), "{msg}");
                assert!(msg.contains("AUTOINCREMENT"), "{msg}");
            }
            other => panic!("expected a Database error, got {other:?}"),
        }
    }
}

/// The indexes whose first column is `session_id`, as `(table, index)`,
/// by table.
async fn session_indexes(conn: &libsql::Connection) -> Vec<(String, String)> {
    let mut rows = conn
        .query(
            "SELECT m.tbl_name, m.name FROM sqlite_master AS m, pragma_index_info(m.name) AS i \
             WHERE m.type = 'index' AND i.seqno = 0 AND i.name = 'session_id' \
             ORDER BY m.tbl_name, m.name",
            (),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        out.push((row.get(0).unwrap(), row.get(1).unwrap()));
    }
    out
}

/// A new database has one index on `session_id` per child table, no two:
/// the steps' unique key `(session_id, step_id)` serves their lookups by
/// session (a second index there only cost every batch a page per session).
/// Every lookup by session finds its rows through an index.
#[tokio::test]
async fn each_child_table_has_one_index_on_session_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let storage = LibsqlTraceStorage::new(StorageConfig::file(path.to_string_lossy()))
        .await
        .unwrap();
    storage.close().await.unwrap();
    let conn = raw(&path).await;
    let indexes = session_indexes(&conn).await;
    let tables = [
        "event_rewards",
        "events",
        "messages",
        "outcome_rewards",
        "session_timesteps",
        "session_traces",
    ];
    for table in tables {
        let on_table: Vec<_> = indexes.iter().filter(|(t, _)| t == table).collect();
        assert_eq!(on_table.len(), 1, "{table}: {indexes:?}");
        let mut plan = conn
            .query(
                &format!("EXPLAIN QUERY PLAN SELECT * FROM {table} WHERE session_id = 'x'"),
                (),
            )
            .await
            .unwrap();
        while let Some(row) = plan.next().await.unwrap() {
            let detail: String = row.get(3).unwrap();
            assert!(detail.starts_with("SEARCH"), "{table}: {detail}");
        }
    }
}
