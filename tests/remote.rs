//! Opt-in tests against a real libsql server (sqld or Turso).
//!
//! They are `#[ignore]`d, so `cargo test` lists them as ignored. Set
//! `TRACE_WRITER_TEST_URL` (and `TRACE_WRITER_TEST_TOKEN` if the server
//! wants one) and run `cargo test --test remote -- --ignored`; run that way
//! without a server, they fail and say why. The
//! server's database should be empty or disposable: the tests write
//! sessions with unique ids and delete them afterwards.
mod common;

use std::sync::Arc;

use trace_writer::*;

const NEEDS_SERVER: &str = "set TRACE_WRITER_TEST_URL to a libsql server to run the remote tests";

fn server() -> StorageConfig {
    match std::env::var("TRACE_WRITER_TEST_URL") {
        Ok(url) if !url.is_empty() => {
            let token = std::env::var("TRACE_WRITER_TEST_TOKEN").unwrap_or_default();
            StorageConfig::turso(url, token)
        }
        _ => panic!("{NEEDS_SERVER}"),
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

async fn round_trip_on(storage: Arc<dyn TraceStorage>) {
    let trace = common::sample_trace(&unique("remote"), 3);
    let event_ids = common::write_trace(&*storage, &trace).await;
    // Ids come from the inserts themselves, never `last_insert_rowid()`.
    assert!(event_ids.iter().all(|&id| id > 0));
    let mut sorted = event_ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), event_ids.len());
    let back = storage
        .get_session(&trace.session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, trace);
    assert!(storage.delete_session(&trace.session_id).await.unwrap());
    storage.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a libsql server: set TRACE_WRITER_TEST_URL, run with --ignored"]
async fn plain_backend_round_trip() {
    let config = server();
    round_trip_on(Arc::new(LibsqlTraceStorage::new(config).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a libsql server: set TRACE_WRITER_TEST_URL, run with --ignored"]
async fn writer_round_trip_with_multi_row_batches() {
    let config = server();
    let writer = BufferedTraceWriter::new(config, WriterConfig::default())
        .await
        .unwrap();
    round_trip_on(Arc::new(writer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a libsql server: set TRACE_WRITER_TEST_URL, run with --ignored"]
async fn writer_rollouts_over_the_network() {
    let config = server();
    let writer = BufferedTraceWriter::new(config, WriterConfig::default())
        .await
        .unwrap();
    let storage: Arc<dyn TraceStorage> = Arc::new(writer.clone());
    let mut tasks = Vec::new();
    for r in 0..16 {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            let tracer = SessionTracer::new(storage);
            workload::run_rollout(&tracer, r).await.unwrap()
        }));
    }
    let mut sessions = Vec::new();
    for t in tasks {
        sessions.push(t.await.unwrap());
    }
    writer.flush().await.unwrap();
    for s in &sessions {
        let trace = storage.get_session(s).await.unwrap().unwrap();
        assert_eq!(trace.num_events(), workload::EVENTS_PER_ROLLOUT);
        storage.delete_session(s).await.unwrap();
    }
    let stats = writer.stats();
    assert_eq!(stats.failed, 0);
    eprintln!(
        "remote: {} operations in {} batches",
        stats.committed, stats.batches
    );
    writer.close().await.unwrap();
}
