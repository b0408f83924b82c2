//! WAL checkpoints beside the writer: on a file in WAL mode the writer's
//! own connection never checkpoints, a thread of its own does after each
//! commit (see `src/writer/actor/checkpoint.rs`; the WAL's bound is a unit
//! test there).
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use trace_writer::*;

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Some 20 MB of rows in small batches, more than the 8 MiB of rows after
/// which the writer checkpoints and under the 10,000 pages (40 MB) at which
/// SQLite would first checkpoint inline: the pages reach the database file
/// while the writer is still open, and every row is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_pages_reach_the_database_file_while_the_writer_runs() {
    const EVENTS: usize = 12_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let writer = BufferedTraceWriter::new(
        StorageConfig::file(path.to_str().expect("utf-8 path")),
        WriterConfig::default().max_batch_ops(250),
    )
    .await
    .expect("writer");
    let empty = file_size(&path);
    writer
        .ensure_session("s", chrono::Utc::now(), &json!({}))
        .await
        .expect("session");
    for i in 0..EVENTS {
        writer
            .insert_event("s", None, &common::cais_event(i))
            .await
            .expect("event");
    }
    writer.flush().await.expect("flush");
    // The last checkpoint may still run: wait for it, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut size = file_size(&path);
    while size < empty + (1 << 20) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        size = file_size(&path);
    }
    assert!(
        size >= empty + (1 << 20),
        "the database file is still {size} bytes (empty: {empty}): nothing was checkpointed"
    );
    assert_eq!(common::count(&writer, "events").await, EVENTS as i64);
    let stats = writer.stats();
    assert_eq!(stats.failed, 0);
    assert_eq!(stats.checkpoint_failures, 0, "{:?}", writer.recent_errors());
    writer.close().await.expect("close");
}
