//! The durability contract on a real sqld with JWT auth: the token expires
//! mid-run, so every batch after it meets a 401, an error no retry can fix.
//! Nothing acknowledged is lost: it is spilled, `flush()` says so, write
//! calls fail fast, and a replay with a fresh token puts every row there
//! under its id. Also: a token given inside the URL is used and never shown.
//!
//! Opt-in, like every remote test: see `tests/remote.rs` for how to run.
mod common;
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::jwt::Key;
use support::sqld::Sqld;
use trace_writer::*;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

async fn event_ids(config: StorageConfig) -> BTreeSet<i64> {
    let plain = LibsqlTraceStorage::new(config).await.expect("plain");
    let rows = plain
        .query("SELECT id FROM events", vec![])
        .await
        .expect("ids");
    plain.close().await.expect("close");
    rows.iter()
        .map(|r| r["id"].as_i64().expect("integer id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn an_expired_token_halts_the_writer_and_nothing_acknowledged_is_lost() {
    let key = Key::from_seed(3);
    let server = Sqld::start_with_jwt_key(&key.public_key()).await;
    let expires = now_secs() + 6;
    let short = key.token(&json!({ "exp": expires }));
    let fresh = key.token(&json!({}));
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = BufferedTraceWriter::new(
        StorageConfig::turso(server.url(), short.clone()),
        WriterConfig::default().spill_dir(dir.path()),
    )
    .await
    .expect("open before the token expires");
    writer
        .ensure_session("s", chrono::Utc::now(), &json!({}))
        .await
        .expect("session");
    let mut acknowledged = BTreeSet::new();
    for i in 0..20 {
        acknowledged.insert(
            writer
                .insert_event("s", None, &common::env_event(i))
                .await
                .expect("event"),
        );
    }
    writer.flush().await.expect("committed before expiry");
    // The server may allow some leeway past `exp`: write and flush until
    // the batches are refused, for at most three minutes.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut i = 20;
    let spill = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never refused the expired token (exp {expires}, now {})",
            now_secs()
        );
        for _ in 0..5 {
            match writer.insert_event("s", None, &common::env_event(i)).await {
                Ok(id) => {
                    acknowledged.insert(id);
                }
                // Fail fast once halted; an id lease refused with the same
                // 401 is an error too. Neither was acknowledged.
                Err(TracingError::Halted { .. } | TracingError::Database(_)) => break,
                Err(other) => panic!("unexpected {other:?}"),
            }
            i += 1;
        }
        // A write that needs no id lease, so a batch goes out even when
        // leases are refused first.
        match writer
            .ensure_session(&format!("s{i}"), chrono::Utc::now(), &json!({}))
            .await
        {
            Ok(()) | Err(TracingError::Halted { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
        match writer.flush().await {
            Ok(()) => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(TracingError::Halted { cause, path, .. }) => {
                let lower = cause.to_ascii_lowercase();
                assert!(
                    lower.contains("401") || lower.contains("unauthorized"),
                    "{cause}"
                );
                assert!(!cause.contains(&short));
                break path;
            }
            Err(other) => panic!("flush must say Halted once the token expired, got {other:?}"),
        }
    };
    assert!(matches!(
        writer.insert_event("s", None, &common::env_event(0)).await,
        Err(TracingError::Halted { .. })
    ));
    let stats = writer.stats();
    let _ = writer.close().await;
    assert_eq!(stats.failed, 0, "{stats:?}");
    let fresh_config = StorageConfig::turso(server.url(), fresh);
    let report = replay_spill_file(fresh_config.clone(), &spill)
        .await
        .expect("replay with a fresh token");
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(event_ids(fresh_config).await, acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_token_inside_the_url_is_used() {
    let key = Key::from_seed(4);
    let server = Sqld::start_with_jwt_key(&key.public_key()).await;
    let token = key.token(&json!({}));
    let config = StorageConfig::file(format!("{}?authToken={token}", server.url()));
    assert!(!format!("{config:?}").contains(&token));
    let writer = BufferedTraceWriter::new(config.clone(), WriterConfig::default())
        .await
        .expect("the token inside the url is used");
    assert!(!format!("{writer:?}").contains(&token));
    writer
        .ensure_session("u", chrono::Utc::now(), &json!({}))
        .await
        .expect("session");
    writer.flush().await.expect("flush");
    writer.close().await.expect("close");
    let plain = LibsqlTraceStorage::new(config).await.expect("plain");
    assert!(plain.get_session("u").await.expect("read").is_some());
    plain.close().await.expect("close");
}

/// A spill file of one session and `n` events, from a template line that a
/// halted local writer spilled.
async fn spill_of_events(dir: &std::path::Path, n: i64) -> std::path::PathBuf {
    let path = dir.join("template.db");
    let writer = BufferedTraceWriter::new(
        StorageConfig::file(path.to_str().expect("utf-8")),
        WriterConfig::default().spill_dir(dir),
    )
    .await
    .expect("open");
    writer
        .query("ALTER TABLE events RENAME TO events_away", vec![])
        .await
        .expect("rename");
    writer
        .ensure_session("r", chrono::Utc::now(), &json!({}))
        .await
        .expect("session");
    writer
        .insert_event("r", None, &common::env_event(0))
        .await
        .expect("event");
    let spill = match writer.flush().await {
        Err(TracingError::Halted { path, .. }) => path,
        other => panic!("expected Halted, got {other:?}"),
    };
    let _ = writer.close().await;
    let text = std::fs::read_to_string(&spill).expect("spill");
    let mut lines = text.lines();
    let session = lines.next().expect("session line").to_string();
    let event: serde_json::Value =
        serde_json::from_str(lines.next().expect("event line")).expect("json");
    let mut out = session;
    out.push('\n');
    for id in 1..=n {
        let mut line = event.clone();
        line["values"][0] = json!(id);
        out.push_str(&line.to_string());
        out.push('\n');
    }
    let big = dir.join("big.spill.jsonl");
    std::fs::write(&big, out).expect("write");
    big
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_remote_replay_of_100k_rows_at_20_ms_takes_seconds() {
    let server = Sqld::start().await;
    let proxy = support::proxy::Proxy::start(server.addr(), Duration::from_millis(20)).await;
    let config = StorageConfig::turso(proxy.url(), "");
    let plain = LibsqlTraceStorage::new(config.clone())
        .await
        .expect("schema");
    plain.close().await.expect("close");
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 100_000;
    let spill = spill_of_events(dir.path(), n).await;

    let started = std::time::Instant::now();
    let mut calls = 0;
    let report = replay_spill_file_with_progress(config.clone(), &spill, |_, _| calls += 1)
        .await
        .expect("replay");
    let took = started.elapsed();
    eprintln!(
        "remote replay: {} operations through a 20 ms round trip in {:.1} s ({calls} progress calls)",
        report.operations,
        took.as_secs_f64()
    );
    assert_eq!(report.inserted, n as usize + 1, "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");
    assert!(calls >= 100, "one progress call per chunk: {calls}");
    assert_eq!(event_ids(config.clone()).await.len(), n as usize);

    // Idempotent: a second replay inserts nothing.
    let again = replay_spill_file(config.clone(), &spill)
        .await
        .expect("replay again");
    assert_eq!(again.inserted, 0, "{again:?}");
    assert_eq!(again.duplicates, n as usize + 1, "{again:?}");
    assert_eq!(event_ids(config).await.len(), n as usize);
}

/// A lost reply while the server is still working on the request: a
/// trigger makes the batch's first event slow to insert (a second or so of
/// work on the server), and the client's connection is cut meanwhile, but
/// not the server's (as behind a load balancer), so the server goes on and
/// commits after the writer's probe found nothing. The resend then meets
/// the rows: they must count as committed, not as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_resend_refused_after_a_lost_reply_counts_stored_rows_as_committed() {
    support::sqld::binary();
    let runs = support::repeats();
    let mut exercised = 0;
    for run in 0..runs {
        let server = Sqld::start().await;
        let proxy = support::proxy::Proxy::start(server.addr(), Duration::ZERO).await;
        let writer = BufferedTraceWriter::new(
            StorageConfig::turso(proxy.url(), ""),
            WriterConfig::default()
                .retry_initial(Duration::from_millis(20))
                .flush_timeout(Duration::from_secs(120))
                .close_timeout(Duration::from_secs(120))
                .id_block(1 << 20),
        )
        .await
        .expect("open");
        writer
            .ensure_session("s", chrono::Utc::now(), &json!({}))
            .await
            .expect("session");
        let warm = writer
            .insert_event("s", None, &common::env_event(0))
            .await
            .expect("event");
        writer.flush().await.expect("warm-up");
        let direct = LibsqlTraceStorage::new(StorageConfig::turso(server.url(), ""))
            .await
            .expect("direct");
        direct
            .query(
                &format!(
                    "CREATE TRIGGER slow AFTER INSERT ON events WHEN NEW.id = {} BEGIN \
                     SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
                     SELECT x + 1 FROM c WHERE x < 5000000) SELECT x FROM c); END",
                    warm + 1
                ),
                vec![],
            )
            .await
            .expect("trigger");
        direct.close().await.expect("close");
        let mut acknowledged = BTreeSet::from([warm]);
        for i in 1..=200 {
            acknowledged.insert(
                writer
                    .insert_event("s", None, &common::env_event(i))
                    .await
                    .expect("event"),
            );
        }
        let started = std::time::Instant::now();
        let flushing = tokio::spawn({
            let writer = writer.clone();
            async move { writer.flush().await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The server does not learn of the cut: it goes on with the request.
        proxy.cut_clients_only();
        let flushed = tokio::time::timeout(Duration::from_secs(180), flushing)
            .await
            .expect("flush() ignored its own deadline")
            .expect("join");
        let stats = writer.stats();
        let recent = writer.recent_errors();
        let what = format!("run {run}: flush {flushed:?}, {stats:?}, recent errors {recent:?}");
        assert!(flushed.is_ok(), "{what}");
        assert_eq!(stats.failed, 0, "{what}");
        writer.close().await.expect("close");
        let stored = event_ids(StorageConfig::turso(server.url(), "")).await;
        assert_eq!(stored, acknowledged, "{what}");
        if recent
            .iter()
            .any(|e| e.contains("committed after the check"))
        {
            exercised += 1;
        }
        eprintln!(
            "lost reply, slow server, run {run}: {} retries, flush took {:?}; {recent:?}",
            stats.retries,
            started.elapsed()
        );
    }
    eprintln!(
        "late commit after the probe (stored rows counted as committed): {exercised} of {runs} runs"
    );
    assert!(
        exercised > 0,
        "no run had the first request commit after the probe: the test proved nothing"
    );
}
