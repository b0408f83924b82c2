//! Faults and bad input: nothing accepted is lost, nothing hangs.
mod common;

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use trace_writer::*;

fn file(dir: &tempfile::TempDir, name: &str) -> (StorageConfig, std::path::PathBuf) {
    let path = dir.path().join(name);
    (
        StorageConfig::file(path.to_str().unwrap()).with_busy_timeout(Duration::from_millis(100)),
        path,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_held_past_the_busy_timeout_is_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let (config, path) = file(&dir, "busy.db");
    let w = BufferedTraceWriter::new(config, WriterConfig::default())
        .await
        .unwrap();
    let db = libsql::Builder::new_local(&path).build().await.unwrap();
    let other = db.connect().unwrap();
    other.execute("BEGIN IMMEDIATE", ()).await.unwrap();

    let mut producers = Vec::new();
    for p in 0..4 {
        let w = w.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..200 {
                w.insert_event(&format!("busy-{p}"), None, &workload::small_event(i))
                    .await
                    .unwrap();
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    // Six busy timeouts' worth: the actor must retry, not fail.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(w.stats().committed, 0);
    other.execute("COMMIT", ()).await.unwrap();
    w.flush().await.unwrap();
    assert_eq!(common::count(&w, "events").await, 800);
    let s = w.stats();
    assert_eq!((s.enqueued, s.committed, s.failed), (800, 800, 0));
    assert!(s.retries > 0, "{s:?}");
    assert!(w.recent_errors().iter().any(|e| e.contains("retrying")));
    w.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_retried_then_spilled_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = file(&dir, "full.db");
    let spill = dir.path().join("full.spill.jsonl");
    let w = BufferedTraceWriter::new(
        config.clone(),
        WriterConfig::default()
            .flush_timeout(Duration::from_millis(800))
            .close_timeout(Duration::from_millis(800))
            .spill_path(&spill),
    )
    .await
    .unwrap();
    // Cap the writer's connection a few pages above what it uses now.
    let pages = w.query("PRAGMA page_count", vec![]).await.unwrap()[0]["page_count"]
        .as_i64()
        .unwrap();
    w.query(&format!("PRAGMA max_page_count = {}", pages + 4), vec![])
        .await
        .unwrap();
    let big = "x".repeat(2000);
    let mut ids = Vec::new();
    for i in 0..300 {
        let msg = MarkovBlanketMessage {
            content: MessageContent::from_text(format!("{i}:{big}")),
            message_type: "user".into(),
            time_record: common::time(i as f64),
            metadata: Default::default(),
        };
        ids.push(w.insert_message("full", None, &msg).await.unwrap());
    }
    // The disk is "full": flush cannot succeed, and says so in time.
    let flushed = w.flush().await;
    assert!(
        matches!(flushed, Err(TracingError::Timeout(_))),
        "{flushed:?}"
    );
    assert!(
        w.recent_errors().iter().any(|e| e.contains("full")),
        "{:?}",
        w.recent_errors()
    );
    assert_eq!(w.stats().failed, 0, "a full disk is retried, not failed");
    let err = w.close().await.unwrap_err();
    let TracingError::Spilled { count, .. } = err else {
        panic!("expected Spilled, got {err}")
    };
    let s = w.stats();
    assert_eq!(s.committed + s.spilled, 300);
    assert_eq!(count as u64, s.spilled);
    // With space again, the spill file brings back every message.
    replay_spill_file(config.clone(), &spill).await.unwrap();
    let plain = LibsqlTraceStorage::new(config).await.unwrap();
    assert_eq!(common::count(&plain, "messages").await, 300);
    let rows = plain
        .query("SELECT id FROM messages ORDER BY id", vec![])
        .await
        .unwrap();
    let stored: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(stored, ids, "the ids handed out are the ids stored");
}

async fn poison_is_isolated(multi_row: bool) {
    let w = BufferedTraceWriter::new(
        StorageConfig::memory(),
        WriterConfig::default().multi_row_inserts(multi_row),
    )
    .await
    .unwrap();
    // A user's constraint that refuses one row.
    w.query(
        "CREATE TRIGGER no_poison BEFORE INSERT ON events WHEN NEW.model_name = 'poison' \
         BEGIN SELECT RAISE(ABORT, 'poisoned row'); END",
        vec![],
    )
    .await
    .unwrap();
    w.ensure_session("p", Utc::now(), &json!({})).await.unwrap();
    for i in 0..10 {
        let mut e = common::cais_event(i);
        if i == 5 {
            if let TracingEvent::Cais(c) = &mut e {
                c.model_name = "poison".into();
            }
        }
        w.insert_event("p", None, &e).await.unwrap();
    }
    let err = w.flush().await.unwrap_err();
    let TracingError::WriteFailed {
        failed,
        first_cause,
    } = &err
    else {
        panic!("expected WriteFailed, got {err}")
    };
    assert_eq!(*failed, 1);
    assert!(first_cause.contains("poisoned row"), "{first_cause}");
    assert!(first_cause.contains("insert_event"), "{first_cause}");
    assert_eq!(common::count(&w, "events").await, 9);
    let s = w.stats();
    assert_eq!((s.enqueued, s.committed, s.failed), (11, 10, 1));
    assert!(w.recent_errors()[0].contains("session `p`"));
    // The failure was reported once; the writer carries on.
    w.insert_event("p", None, &common::env_event(1))
        .await
        .unwrap();
    w.flush().await.unwrap();
    assert_eq!(common::count(&w, "events").await, 10);
    w.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_operation_is_isolated() {
    poison_is_isolated(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_operation_is_isolated_in_multi_row_mode() {
    poison_is_isolated(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_of_several_megabytes() {
    let w = BufferedTraceWriter::new(
        StorageConfig::memory(),
        WriterConfig::default().max_op_bytes(8 << 20),
    )
    .await
    .unwrap();
    w.ensure_session("big", Utc::now(), &json!({}))
        .await
        .unwrap();
    let five_mb = MarkovBlanketMessage {
        content: MessageContent::from_text("é".repeat(5 << 19)),
        message_type: "user".into(),
        time_record: common::time(1.0),
        metadata: Default::default(),
    };
    w.insert_message("big", None, &five_mb).await.unwrap();
    let back = w.get_session("big").await.unwrap().unwrap();
    assert_eq!(back.markov_blanket_message_history[0], five_mb);

    let before = w.stats().enqueued;
    let nine_mb = MarkovBlanketMessage {
        content: MessageContent::from_text("x".repeat(9 << 20)),
        ..five_mb.clone()
    };
    let err = w.insert_message("big", None, &nine_mb).await.unwrap_err();
    assert!(matches!(err, TracingError::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("max_op_bytes"), "{err}");
    assert_eq!(w.stats().enqueued, before, "nothing was queued");
    // No id was used up by the refusal.
    assert_eq!(
        w.insert_message("big", None, &common::message(1))
            .await
            .unwrap(),
        2
    );
    w.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_refused_at_start() {
    for config in [
        WriterConfig::default().max_batch_ops(0),
        WriterConfig::default().queue_capacity(0),
        WriterConfig::default()
            .queue_capacity_bytes(1000)
            .max_op_bytes(2000),
        WriterConfig::default().id_block(0),
    ] {
        let err = BufferedTraceWriter::new(StorageConfig::memory(), config)
            .await
            .unwrap_err();
        assert!(matches!(err, TracingError::InvalidInput(_)), "{err}");
    }
}
