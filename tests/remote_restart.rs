//! The server is SIGKILLed and restarted while 16 tasks stream events
//! through one writer: every event is on the server exactly once.
//!
//! Opt-in, like every remote test: see `tests/remote.rs` for how to run.
//! `TRACE_WRITER_REMOTE_REPEAT` sets the repetitions (5 by default), each
//! with a fresh server, a kill point and a down time of its own.
mod support;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use support::rows::{self, Tagged};
use support::sqld::{Sqld, Watchdog, FLUSH_PAST_A_WEDGE};
use trace_writer::*;

const TASKS: usize = 16;
const EVENTS_PER_TASK: usize = 2_500;
const FLUSH_EVERY: usize = 250;
/// How long the server stays down, by repetition: the 3 s, and
/// shorter and longer ones.
const DOWN_MS: [u64; 4] = [3_000, 200, 1_000, 5_000];
/// Bounds the wait for the streams after the restart; healthy, they end
/// in seconds.
const TASKS_DEADLINE: Duration = Duration::from_secs(600);

fn remote(url: String) -> StorageConfig {
    StorageConfig::turso(url, "")
}

/// What one streaming task saw: the events whose flush returned `Ok`, the
/// events written after its last good flush, and its flush errors.
struct Task {
    acked: Vec<(i64, Tagged)>,
    unacked: Vec<(i64, Tagged)>,
    flush_errors: Vec<String>,
}

async fn stream(writer: BufferedTraceWriter, task: usize) -> Task {
    let sid = format!("stream-{task}");
    let mut out = Task {
        acked: Vec::new(),
        unacked: Vec::new(),
        flush_errors: Vec::new(),
    };
    for i in 0..EVENTS_PER_TASK {
        let id = writer
            .insert_event(&sid, None, &rows::tagged_event(task, i))
            .await
            .expect("insert_event queues while the server is down");
        out.unacked.push((
            id,
            Tagged {
                source: task as i64,
                i: i as i64,
            },
        ));
        if (i + 1) % FLUSH_EVERY == 0 {
            match writer.flush().await {
                Ok(()) => out.acked.append(&mut out.unacked),
                Err(e) => out.flush_errors.push(e.to_string()),
            }
        }
    }
    out
}

/// Waits until `done` holds, polling; panics with `what` after `limit`.
async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn one_run(run: usize) -> String {
    let mut server = Sqld::start().await;
    // A flush outlasts the watchdog's restart of a wedged server.
    let config = WriterConfig::default().flush_timeout(FLUSH_PAST_A_WEDGE);
    let writer = BufferedTraceWriter::new(remote(server.url()), config)
        .await
        .unwrap();
    for t in 0..TASKS {
        writer
            .ensure_session(&format!("stream-{t}"), Utc::now(), &json!({}))
            .await
            .unwrap();
    }
    writer.flush().await.unwrap();
    let total = (TASKS * EVENTS_PER_TASK) as u64;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| tokio::spawn(stream(writer.clone(), t)))
        .collect();

    // Kill somewhere in the first half of the stream, once that much is
    // committed: the stream is then under way, and far from done.
    let kill_at = TASKS as u64 + 1_000 + support::jitter(total / 2);
    wait_for(
        "the stream to reach the kill point",
        Duration::from_secs(300),
        || writer.stats().committed >= kill_at,
    )
    .await;
    server.kill();
    let at_kill = writer.stats();
    let down = Duration::from_millis(DOWN_MS[run % DOWN_MS.len()]);
    tokio::time::sleep(down).await;
    server.restart().await;
    // Nothing committed for a while after the restart: a wedged server is
    // restarted, stuck writers fail the test.
    let mut watchdog = Watchdog::new(writer.stats().committed);
    let this_run = format!("run {run}");
    let deadline = tokio::time::Instant::now() + TASKS_DEADLINE;
    while !tasks.iter().all(|t| t.is_finished()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run}: the streams did not end within {TASKS_DEADLINE:?}"
        );
        watchdog
            .check(writer.stats().committed, &mut server, &this_run)
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut acked = HashMap::new();
    let mut written = HashMap::new();
    let mut flush_errors = Vec::new();
    for task in tasks {
        let t = task.await.expect("a streaming task panicked");
        acked.extend(t.acked.iter().copied());
        written.extend(t.acked.into_iter().chain(t.unacked));
        flush_errors.extend(t.flush_errors);
    }
    assert_eq!(
        written.len() as u64,
        total,
        "the writer handed out an id twice"
    );
    let last_flush = writer.flush().await;
    let stats = writer.stats();
    let recent = writer.recent_errors();
    let closed = writer.close().await;

    // Read back through a client of its own.
    let check = LibsqlTraceStorage::new(remote(server.url())).await.unwrap();
    let stored = rows::stored(&check).await;
    check.close().await.unwrap();
    let what = format!(
        "run {run} (killed at {} of {total} committed, down {down:?}, {} retries, \
         {} wedged-server restarts)",
        at_kill.committed,
        stats.retries,
        server.wedged_restarts()
    );
    // Nothing acknowledged may be missing or doubled, whatever else failed.
    let acked_stored: Vec<(i64, Tagged)> = stored
        .iter()
        .copied()
        .filter(|(id, _)| acked.contains_key(id))
        .collect();
    rows::assert_exactly_once(
        &format!("{what}, acknowledged events"),
        &acked_stored,
        &acked,
    );
    assert!(
        flush_errors.is_empty() && last_flush.is_ok(),
        "{what}: flush failed across the restart: {} flush errors (first: {:?}), last flush {:?}; \
         {} of {} written events stored; {stats:?}; recent errors: {recent:?}",
        flush_errors.len(),
        flush_errors.first(),
        last_flush,
        stored.len(),
        written.len(),
    );
    // Every flush succeeded, so every event written is acknowledged.
    rows::assert_exactly_once(&what, &stored, &written);
    assert_eq!(stored.len() as u64, total, "{what}");
    assert_eq!(stats.failed, 0, "{what}: {stats:?}");
    assert_eq!(stats.committed, stats.enqueued, "{what}: {stats:?}");
    closed.unwrap_or_else(|e| panic!("{what}: close failed: {e}"));
    what
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_server_killed_and_restarted_mid_stream_loses_and_doubles_nothing() {
    support::sqld::binary();
    let runs = support::repeats();
    for run in 0..runs {
        let what = one_run(run).await;
        eprintln!(
            "restart: {what}: all {} events once",
            TASKS * EVENTS_PER_TASK
        );
    }
}
