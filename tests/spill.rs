//! Spill files made strict: once spilling starts everything after it is
//! spilled, each writer has its own file, and replay tells a row already
//! there from a row the database refuses, reporting each refused line.
mod common;

use common::Lock;

use std::time::{Duration, Instant};

use serde_json::json;
use trace_writer::*;

fn file_config(dir: &tempfile::TempDir, name: &str) -> StorageConfig {
    StorageConfig::file(dir.path().join(name).to_str().expect("utf-8"))
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes a session and `n` events into a writer whose database is locked,
/// and closes it past its deadline: returns the spill file and its count.
async fn spill_of(dir: &tempfile::TempDir, name: &str, n: usize) -> (std::path::PathBuf, usize) {
    let path = dir.path().join(name);
    let writer = BufferedTraceWriter::new(
        file_config(dir, name).with_busy_timeout(Duration::from_millis(20)),
        WriterConfig::default().close_timeout(Duration::from_millis(200)),
    )
    .await
    .expect("open");
    let lock = Lock::take(&path).await;
    writer
        .ensure_session("s", chrono::Utc::now(), &json!({}))
        .await
        .expect("session");
    for i in 0..n {
        writer
            .insert_event("s", None, &common::env_event(i))
            .await
            .expect("event");
    }
    let spilled = match writer.close().await {
        Err(TracingError::Spilled { path, count }) => (path, count),
        other => panic!("expected Spilled, got {other:?}"),
    };
    lock.release().await;
    spilled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_spilling_starts_every_later_batch_is_spilled_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("order.db");
    let spill = dir.path().join("order.jsonl");
    let writer = BufferedTraceWriter::new(
        file_config(&dir, "order.db").with_busy_timeout(Duration::from_millis(300)),
        WriterConfig::default()
            .max_batch_ops(5)
            .close_timeout(Duration::from_millis(100))
            .spill_path(&spill),
    )
    .await
    .expect("open");
    let lock = Lock::take(&path).await;
    for i in 0..20 {
        writer
            .insert_event("s", None, &common::env_event(i))
            .await
            .expect("event");
    }
    let closing = tokio::spawn({
        let writer = writer.clone();
        async move { writer.close().await }
    });
    // The first batch is spilled while the lock is held; the lock goes at
    // once, so the batches after it could commit, ahead of it, if they tried.
    wait_until("the first batch is spilled", || writer.stats().spilled > 0).await;
    lock.release().await;
    match closing.await.expect("join") {
        Err(TracingError::Spilled { count, .. }) => assert_eq!(count, 20),
        other => panic!("expected Spilled, got {other:?}"),
    }
    let plain = LibsqlTraceStorage::new(file_config(&dir, "order.db"))
        .await
        .expect("plain");
    assert_eq!(
        common::count(&plain, "events").await,
        0,
        "nothing skipped ahead"
    );
    let report = replay_spill_file(file_config(&dir, "order.db"), &spill)
        .await
        .expect("replay");
    assert_eq!(report.inserted, 20);
    let ids = plain
        .query("SELECT id FROM events ORDER BY id", vec![])
        .await
        .expect("ids");
    let ids: Vec<i64> = ids.iter().filter_map(|r| r["id"].as_i64()).collect();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_writer_spills_to_its_own_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, count_a) = spill_of(&dir, "shared.db", 3).await;
    let (b, count_b) = spill_of(&dir, "shared.db", 4).await;
    assert_ne!(a, b);
    assert_eq!((count_a, count_b), (4, 5));
    assert_eq!(std::fs::read_to_string(&a).expect("a").lines().count(), 4);
    assert_eq!(std::fs::read_to_string(&b).expect("b").lines().count(), 5);
    assert!(a.starts_with(dir.path()), "beside the database: {a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reports_refused_lines_and_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spill, count) = spill_of(&dir, "refuse.db", 5).await;
    assert_eq!(count, 6);
    // A line that is not an operation, as a crash mid-write could leave.
    let mut text = std::fs::read_to_string(&spill).expect("read");
    text.push_str("{\"op\": \"insert\", \"table\": \"eve\n");
    std::fs::write(&spill, text).expect("write");
    // The database now refuses one of the events (event_time 1700000002.5).
    let plain = LibsqlTraceStorage::new(file_config(&dir, "refuse.db"))
        .await
        .expect("plain");
    plain
        .query(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.event_time = 1700000002.5 \
             BEGIN SELECT RAISE(ABORT, 'refused by policy'); END",
            vec![],
        )
        .await
        .expect("trigger");
    let config = file_config(&dir, "refuse.db");
    let report = replay_spill_file(config.clone(), &spill)
        .await
        .expect("replay");
    assert_eq!(report.operations, 7);
    assert_eq!(report.inserted, 5, "{report:?}");
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.refused.len(), 2, "{report:?}");
    let trigger = report
        .refused
        .iter()
        .find(|r| r.kind == "insert_event")
        .expect("the refused event");
    assert!(trigger.cause.contains("refused by policy"), "{trigger:?}");
    assert!(trigger.line >= 2 && trigger.line <= 6, "{trigger:?}");
    let garbage = report
        .refused
        .iter()
        .find(|r| r.kind == "unreadable")
        .expect("the unreadable line");
    assert_eq!(garbage.line, 7);
    assert_eq!(common::count(&plain, "events").await, 4);

    // Again: what is there is a duplicate, what is refused stays refused.
    let again = replay_spill_file(config, &spill).await.expect("again");
    assert_eq!((again.inserted, again.duplicates), (0, 5), "{again:?}");
    assert_eq!(again.refused.len(), 2);
    assert_eq!(common::count(&plain, "events").await, 4);
}
