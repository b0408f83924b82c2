//! Lost replies: the connection drops after the server applied a COMMIT,
//! before its reply arrives. The writer's retry must neither duplicate the
//! batch nor loop, and nothing may be lost.
//!
//! Opt-in, like every remote test: see `tests/remote.rs` for how to run.
//! The cuts come from the proxy in `tests/support/proxy.rs`.
mod support;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use support::proxy::Proxy;
use support::rows::{self, Tagged};
use support::sqld::Sqld;
use trace_writer::*;

fn remote(url: String) -> StorageConfig {
    StorageConfig::turso(url, "")
}

/// Deadlines well past a healthy flush, so a writer that loops ends in
/// `Timeout` rather than hanging the test.
fn config() -> WriterConfig {
    WriterConfig::default()
        .flush_timeout(Duration::from_secs(30))
        .close_timeout(Duration::from_secs(30))
        // One id lease covers the whole test: the only COMMITs after the
        // warm-up are the batches'.
        .id_block(1 << 20)
}

async fn write(
    writer: &BufferedTraceWriter,
    source: usize,
    n: usize,
    written: &mut HashMap<i64, Tagged>,
) {
    let sid = format!("s-{source}");
    writer
        .ensure_session(&sid, Utc::now(), &json!({}))
        .await
        .unwrap();
    for i in 0..n {
        let id = writer
            .insert_event(&sid, None, &rows::tagged_event(source, i))
            .await
            .unwrap();
        let fresh = written.insert(
            id,
            Tagged {
                source: source as i64,
                i: i as i64,
            },
        );
        assert!(fresh.is_none(), "id {id} handed out twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_lost_commit_reply_neither_duplicates_nor_loops() {
    support::sqld::binary();
    for run in 0..support::repeats() {
        let server = Sqld::start().await;
        let proxy = Proxy::start(server.addr(), Duration::ZERO).await;
        let writer = BufferedTraceWriter::new(remote(proxy.url()), config())
            .await
            .unwrap();
        let mut written = HashMap::new();
        // Warm-up: the id lease and a first batch.
        write(&writer, 0, 500, &mut written).await;
        writer.flush().await.unwrap();

        proxy.cut_after_request_containing("COMMIT");
        write(&writer, 1, 2_000, &mut written).await;
        // Bounded in any case: the outer wait only guards the test run.
        let flushed = tokio::time::timeout(Duration::from_secs(120), writer.flush())
            .await
            .expect("flush() ignored its own deadline");
        let stats = writer.stats();
        let recent = writer.recent_errors();
        assert_eq!(
            (proxy.pattern_hits(), proxy.pattern_cuts()),
            (1, 1),
            "run {run}: the proxy never cut a COMMIT's reply, so this run proved nothing"
        );

        // Read back directly, not through the proxy.
        let check = LibsqlTraceStorage::new(remote(server.url())).await.unwrap();
        let stored = rows::stored(&check).await;
        check.close().await.unwrap();
        let what = format!(
            "run {run}: flush {flushed:?}, {stats:?}, recent errors {:?}",
            &recent[..recent.len().min(2)]
        );
        rows::assert_exactly_once(&what, &stored, &written);
        assert!(flushed.is_ok(), "{what}");
        assert_eq!(stats.failed, 0, "{what}");
        assert_eq!(stats.committed, stats.enqueued, "{what}");
        writer.close().await.unwrap();
        eprintln!(
            "lost COMMIT reply, run {run}: {} events once; {} retries, {} batches",
            written.len(),
            stats.retries,
            stats.batches
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn connections_cut_again_and_again_mid_stream_lose_and_double_nothing() {
    support::sqld::binary();
    for run in 0..support::repeats() {
        let server = Sqld::start().await;
        // A little latency, so cuts land inside requests too.
        let proxy = Proxy::start(server.addr(), Duration::from_millis(2)).await;
        let writer = BufferedTraceWriter::new(remote(proxy.url()), config())
            .await
            .unwrap();
        let producer = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut written = HashMap::new();
                for source in 0..10 {
                    write(&writer, source, 2_000, &mut written).await;
                }
                written
            })
        };
        // Up to 10 cuts while the queue drains, far enough apart for a
        // batch to get through between two of them.
        let total = 10 * (2_000 + 1);
        let mut cuts = 0;
        while cuts < 10 && writer.stats().committed < total {
            tokio::time::sleep(Duration::from_millis(50 + support::jitter(250))).await;
            proxy.cut_all();
            cuts += 1;
        }
        let written = producer.await.unwrap();
        let flushed = tokio::time::timeout(Duration::from_secs(120), writer.flush())
            .await
            .expect("flush() ignored its own deadline");
        let stats = writer.stats();
        let recent = writer.recent_errors();
        let check = LibsqlTraceStorage::new(remote(server.url())).await.unwrap();
        let stored = rows::stored(&check).await;
        check.close().await.unwrap();
        let what = format!(
            "run {run} ({cuts} cuts): flush {flushed:?}, {stats:?}, recent errors {:?}",
            &recent[..recent.len().min(5)]
        );
        rows::assert_exactly_once(&what, &stored, &written);
        assert!(flushed.is_ok(), "{what}");
        assert_eq!(stats.failed, 0, "{what}");
        writer.close().await.unwrap();
        eprintln!(
            "cut again and again, run {run}: {cuts} cuts, {} events once; {} retries, {} batches",
            written.len(),
            stats.retries,
            stats.batches
        );
    }
}

/// A lost reply to a batch that made a step someone else had made first:
/// the reply would have told the step's real row. The check before the
/// resend reads it instead, so later records go under the real row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_lost_reply_still_teaches_the_real_row_of_a_step() {
    let server = Sqld::start().await;
    let proxy = Proxy::start(server.addr(), Duration::ZERO).await;
    let writer = BufferedTraceWriter::new(remote(proxy.url()), config())
        .await
        .unwrap();
    let plain = LibsqlTraceStorage::new(remote(server.url())).await.unwrap();
    writer
        .ensure_session("s", Utc::now(), &json!({}))
        .await
        .unwrap();
    // The writer loads the session's steps now, and learns of later ones
    // only from its own inserts.
    writer
        .ensure_timestep("s", &SessionTimeStep::new("first", 0))
        .await
        .unwrap();
    writer.flush().await.unwrap();
    let real = plain
        .ensure_timestep("s", &SessionTimeStep::new("cut-step", 1))
        .await
        .unwrap();
    proxy.cut_after_request_containing("cut-step");
    let ours = writer
        .ensure_timestep("s", &SessionTimeStep::new("cut-step", 1))
        .await
        .unwrap();
    assert_ne!(ours, real);
    writer
        .insert_event("s", Some(ours), &rows::tagged_event(0, 0))
        .await
        .unwrap();
    writer.flush().await.unwrap();
    assert_eq!(
        (proxy.pattern_hits(), proxy.pattern_cuts()),
        (1, 1),
        "the proxy never cut the step's reply, so this run proved nothing"
    );
    // After the lost reply: records of the step, in later batches.
    for i in 1..5 {
        writer
            .insert_event("s", Some(ours), &rows::tagged_event(0, i))
            .await
            .unwrap();
    }
    writer.flush().await.unwrap();
    let under_real = plain
        .query(
            "SELECT COUNT(*) AS n FROM events WHERE timestep_id = ?",
            vec![json!(real)],
        )
        .await
        .unwrap();
    assert_eq!(under_real[0]["n"], json!(5), "{:?}", writer.stats());
    assert_eq!(common_count(&plain, "session_timesteps").await, 2);
    writer.close().await.unwrap();
    plain.close().await.unwrap();
}

async fn common_count(storage: &dyn TraceStorage, table: &str) -> i64 {
    let rows = storage
        .query(&format!("SELECT COUNT(*) AS n FROM {table}"), vec![])
        .await
        .unwrap();
    rows[0]["n"].as_i64().unwrap()
}
