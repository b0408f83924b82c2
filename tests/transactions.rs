//! A failed COMMIT: in rollback-journal mode, a reader in another connection
//! holding a read transaction makes COMMIT return SQLITE_BUSY. The one
//! transaction helper must roll back, so that no transaction stays open on
//! the backend's connection and no later write is lost inside it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use trace_writer::*;

/// Rollback journal, and a short busy timeout so that COMMIT gives up soon.
fn config(path: &Path) -> StorageConfig {
    StorageConfig::file(path.to_str().expect("utf-8 path"))
        .with_journal_mode(JournalMode::Delete)
        .with_busy_timeout(Duration::from_millis(100))
}

/// Another connection, in its own read transaction: it holds a SHARED lock
/// until it commits, so no writer can take the EXCLUSIVE lock COMMIT needs.
struct Reader {
    _db: libsql::Database,
    conn: libsql::Connection,
}

impl Reader {
    async fn hold(path: &Path) -> Reader {
        let db = libsql::Builder::new_local(path).build().await.expect("db");
        let conn = db.connect().expect("conn");
        conn.execute("BEGIN", ()).await.expect("begin");
        let mut rows = conn
            .query("SELECT COUNT(*) FROM events", ())
            .await
            .expect("read");
        rows.next().await.expect("row");
        Reader { _db: db, conn }
    }

    async fn release(self) {
        self.conn.execute("COMMIT", ()).await.expect("end read");
    }
}

/// Counts rows as a fresh connection sees them: only committed rows.
async fn committed(path: &Path, sql: &str) -> i64 {
    let db = libsql::Builder::new_local(path).build().await.expect("db");
    let conn = db.connect().expect("conn");
    let mut rows = conn.query(sql, ()).await.expect("query");
    let row = rows.next().await.expect("row").expect("a row");
    row.get::<i64>(0).expect("count")
}

async fn seed(storage: &dyn TraceStorage) {
    storage
        .ensure_session("s", chrono::Utc::now(), &json!({}))
        .await
        .expect("session");
    storage
        .insert_event("s", None, &common::env_event(0))
        .await
        .expect("event");
}

#[tokio::test]
async fn plain_backend_rolls_back_a_failed_commit_and_loses_no_later_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plain.db");
    let plain = LibsqlTraceStorage::new(config(&path)).await.expect("open");
    seed(&plain).await;

    let reader = Reader::hold(&path).await;
    let err = plain
        .delete_session("s")
        .await
        .expect_err("COMMIT cannot get its lock while the reader holds one");
    assert!(matches!(err, TracingError::Database(_)), "{err:?}");
    reader.release().await;

    // The delete was rolled back, and this write is committed on its own,
    // not swallowed by a transaction left open.
    let id = plain
        .insert_event("s", None, &common::env_event(1))
        .await
        .expect("a later write");
    assert_eq!(id, 2);
    assert_eq!(committed(&path, "SELECT COUNT(*) FROM events").await, 2);
    assert_eq!(
        committed(&path, "SELECT COUNT(*) FROM session_traces").await,
        1
    );
    plain.close().await.expect("close");
    assert_eq!(committed(&path, "SELECT COUNT(*) FROM events").await, 2);
}

/// Waits, up to a generous bound, until `cond` holds: for state, never as a
/// measure of time.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_retries_a_failed_commit_and_loses_no_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("writer.db");
    let writer = BufferedTraceWriter::new(config(&path), WriterConfig::default())
        .await
        .expect("open");
    seed(&writer).await;
    writer.flush().await.expect("first flush");

    let reader = Reader::hold(&path).await;
    for i in 0..50 {
        writer
            .insert_event("s", None, &common::env_event(i))
            .await
            .expect("queued");
    }
    let flushing = tokio::spawn({
        let writer = writer.clone();
        async move { writer.flush().await }
    });
    // The batch's COMMIT fails with BUSY at least once while the reader holds
    // its lock: the helper rolls back and the actor retries.
    wait_until("a failed commit was retried", || {
        writer.stats().retries >= 1
    })
    .await;
    assert_eq!(committed(&path, "SELECT COUNT(*) FROM events").await, 1);
    reader.release().await;
    flushing
        .await
        .expect("join")
        .expect("flush after the reader left");
    assert_eq!(committed(&path, "SELECT COUNT(*) FROM events").await, 51);

    // A delete whose COMMIT fails is reported and rolled back; the writes
    // after it are committed.
    let reader = Reader::hold(&path).await;
    let deleting = tokio::spawn({
        let writer = writer.clone();
        async move { writer.delete_session("s").await }
    });
    let err = deleting.await.expect("join").expect_err("busy commit");
    assert!(matches!(err, TracingError::Database(_)), "{err:?}");
    reader.release().await;
    writer
        .insert_event("s", None, &common::env_event(99))
        .await
        .expect("a later write");
    writer.flush().await.expect("flush");
    assert_eq!(committed(&path, "SELECT COUNT(*) FROM events").await, 52);
    assert_eq!(
        committed(&path, "SELECT COUNT(*) FROM session_traces").await,
        1
    );
    let stats = writer.stats();
    assert_eq!(stats.failed, 0);
    assert_eq!(stats.enqueued, stats.committed);
    writer.close().await.expect("close");
}

/// An error that is neither transient nor one operation's fault (here a
/// trigger that writes to a table that does not exist, so no insert into
/// `events` can even be prepared) is not retried, and nothing of the batch
/// is dropped: it is spilled, the writer halts, and later write calls fail
/// fast with the cause. Once the cause is gone, the spill file replays.
#[tokio::test]
async fn a_fatal_error_spills_the_whole_batch_and_halts_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fatal.db");
    let config = StorageConfig::file(path.to_str().expect("utf-8 path"));
    let writer = BufferedTraceWriter::new(config.clone(), WriterConfig::default())
        .await
        .expect("open");
    writer
        .query(
            "CREATE TRIGGER broken AFTER INSERT ON events \
             BEGIN INSERT INTO no_such_table VALUES (1); END",
            vec![],
        )
        .await
        .expect("trigger");
    writer
        .ensure_session("s", chrono::Utc::now(), &json!({}))
        .await
        .expect("session");
    writer
        .insert_event("s", None, &common::env_event(0))
        .await
        .expect("queued");
    let err = writer.flush().await.expect_err("the batch failed");
    let spill = match err {
        TracingError::Halted {
            cause,
            path,
            spilled,
        } => {
            // The session row shared the batch, so it was spilled with it.
            assert_eq!(spilled, 2);
            assert!(cause.contains("no_such_table"), "{cause}");
            path
        }
        other => panic!("expected Halted, got {other:?}"),
    };
    assert_eq!(writer.stats().retries, 0);
    assert_eq!(writer.stats().failed, 0);
    assert!(matches!(
        writer.insert_event("s", None, &common::env_event(1)).await,
        Err(TracingError::Halted { .. })
    ));
    assert!(matches!(
        writer.close().await,
        Err(TracingError::Halted { spilled: 2, .. })
    ));
    let plain = LibsqlTraceStorage::new(config.clone())
        .await
        .expect("plain");
    plain
        .query("DROP TRIGGER broken", vec![])
        .await
        .expect("drop trigger");
    let report = replay_spill_file(config, &spill).await.expect("replay");
    assert_eq!(report.inserted, 2, "{report:?}");
    assert_eq!(common::count(&plain, "events").await, 1);
    plain.close().await.expect("close");
}
