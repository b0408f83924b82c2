//! Opt-in tests against a real sqld, each with a fresh server of its own.
//!
//! They are `#[ignore]`d, so `cargo test` lists them as ignored. To run
//! them, point `TRACE_WRITER_SQLD` at a sqld binary (0.24.33 was tested):
//!
//! ```text
//! TRACE_WRITER_SQLD=/path/to/sqld cargo test --test 'remote*' -- --ignored --skip _child --test-threads=1
//! ```
//!
//! Run with `--ignored` but without the variable, they fail and say why.
//! Tests named `*_child` are child processes the others start; run alone,
//! they fail, hence `--skip _child`.
//! The other `remote_*` files hold the fault tests (server restarts, fan-in
//! from several processes, a lost COMMIT reply), authentication and the
//! latency figures; `TRACE_WRITER_REMOTE_REPEAT` sets how often the fault
//! loops repeat (5 by default).
mod common;
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use serde_json::{json, Value};
use support::sqld::Sqld;
use trace_writer::*;

/// A config for `url` on a server without auth.
fn remote(url: String) -> StorageConfig {
    StorageConfig::turso(url, "")
}

async fn round_trip_on(storage: Arc<dyn TraceStorage>) {
    let trace = common::sample_trace("remote", 3);
    let event_ids = common::write_trace(&*storage, &trace).await;
    // A fresh database numbers rows from 1, on both backends.
    assert_eq!(event_ids, (1..=10).collect::<Vec<i64>>());
    let back = storage
        .get_session(&trace.session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, trace);
    assert!(storage.delete_session(&trace.session_id).await.unwrap());
    assert!(storage
        .get_session(&trace.session_id)
        .await
        .unwrap()
        .is_none());
    storage.close().await.unwrap();
}

/// The probe the fault tests use to tell a wedged server from stuck
/// writers (`Sqld::restart_if_wedged`) sees a healthy server commit, and a
/// stopped one not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn the_wedge_probe_tells_a_committing_server_from_a_stopped_one() {
    let server = Sqld::start().await;
    assert_eq!(server.commits().await, Ok(true), "a healthy server");
    server.signal("STOP");
    let stopped = server.commits().await;
    server.signal("CONT");
    assert_eq!(stopped, Ok(false), "a stopped server");
    assert_eq!(server.commits().await, Ok(true), "the server resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn plain_backend_round_trip() {
    let server = Sqld::start().await;
    let plain = LibsqlTraceStorage::new(remote(server.url())).await.unwrap();
    round_trip_on(Arc::new(plain)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn writer_round_trip() {
    let server = Sqld::start().await;
    let writer = BufferedTraceWriter::new(remote(server.url()), WriterConfig::default())
        .await
        .unwrap();
    round_trip_on(Arc::new(writer)).await;
}

/// Text with NULs reads back whole from sqld too, through both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn text_with_nul_reads_back_whole_from_the_server() {
    let server = Sqld::start().await;
    let plain = LibsqlTraceStorage::new(remote(server.url())).await.unwrap();
    common::text_with_nul_reads_back_whole(common::Backend {
        storage: Arc::new(plain),
        dir: None,
    })
    .await;
    let server = Sqld::start().await;
    let writer = BufferedTraceWriter::new(remote(server.url()), WriterConfig::default())
        .await
        .unwrap();
    common::text_with_nul_reads_back_whole(common::Backend {
        storage: Arc::new(writer),
        dir: None,
    })
    .await;
}

/// Floats read back from sqld to the bit, and strings as they were. A batch
/// of plain values goes with its rows in one JSON argument, read by the
/// server's SQLite (see `push_json_value` in `src/db/exec/encode.rs`); a
/// batch with a float outside that form's range goes as bound parameters.
/// Both are checked, through the writer and through the plain backend,
/// which sends each row alone: `n` random bit patterns and the decimal
/// fractions rewards are (`-0.9299999999999999` among them, which a bound
/// parameter turned into `-0.93`), then the extremes.
async fn values_read_back_exactly(
    storage: &dyn TraceStorage,
    writer: Option<&BufferedTraceWriter>,
    n: usize,
) {
    // xorshift64*, seeded: the same floats every run.
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    };
    let mut plain: Vec<f64> = (0..n.min(200)).map(|i| i as f64 * 0.01 - 1.0).collect();
    while plain.len() < n {
        let f = f64::from_bits(next());
        if (1e-290..=1e290).contains(&f.abs()) {
            plain.push(f);
        }
    }
    // Integers at both ends too.
    let message_time = |i: usize| match i {
        1 => i64::MIN,
        2 => i64::MAX,
        _ => i as i64,
    };
    let extreme = vec![
        5e-324,
        f64::MIN_POSITIVE,
        1e-300,
        1e300,
        f64::MAX,
        -f64::MAX,
        0.1,
    ];
    for (sid, floats) in [("plain", &plain), ("extreme", &extreme)] {
        // Not -0.0: SQLite keeps no sign of zero, on either path.
        let negated = |f: f64| if f == 0.0 { 0.0 } else { -f };
        for (i, f) in floats.iter().enumerate() {
            let mut event = workload::small_event(i);
            if let TracingEvent::Environment(e) = &mut event {
                e.reward = *f;
                e.base.time_record.event_time = negated(*f);
                e.base.system_instance_id = format!("env \"{i}\" \\ é😀\u{1}");
                e.base.time_record.message_time = Some(message_time(i));
            }
            storage.insert_event(sid, None, &event).await.unwrap();
        }
        if let Some(w) = writer {
            w.flush().await.unwrap();
        }
        let rows = storage
            .query(
                "SELECT reward, event_time, message_time, system_instance_id FROM events \
                 WHERE session_id = ? ORDER BY id",
                vec![json!(sid)],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), floats.len(), "{sid}");
        for (i, (row, f)) in rows.iter().zip(floats.iter()).enumerate() {
            let reward = row["reward"].as_f64().unwrap();
            let time = row["event_time"].as_f64().unwrap();
            assert_eq!(
                reward.to_bits(),
                f.to_bits(),
                "{sid} reward {f:e}: {reward:e}"
            );
            let want = negated(*f);
            assert_eq!(
                time.to_bits(),
                want.to_bits(),
                "{sid} time {want:e}: {time:e}"
            );
            assert_eq!(row["message_time"], json!(message_time(i)), "{sid}");
            assert_eq!(
                row["system_instance_id"],
                json!(format!("env \"{i}\" \\ é😀\u{1}")),
                "{sid}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn values_read_back_exactly_from_the_server() {
    let server = Sqld::start().await;
    let writer = BufferedTraceWriter::new(remote(server.url()), WriterConfig::default())
        .await
        .unwrap();
    values_read_back_exactly(&writer, Some(&writer), 4_000).await;
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn values_read_back_exactly_from_the_server_on_the_plain_backend() {
    let server = Sqld::start().await;
    let plain = LibsqlTraceStorage::new(remote(server.url())).await.unwrap();
    values_read_back_exactly(&plain, None, 300).await;
    plain.close().await.unwrap();
}

// ---------------------------------------------------------------------------
// Parity
// ---------------------------------------------------------------------------

/// Rollouts in the mixed workload, and sample traces beside them.
const ROLLOUTS: usize = 6;
const TRACES: usize = 10;

/// A mixed workload of about 1,000 operations, one call after another so
/// that both backends hand out the same ids: sample traces through the
/// trait, rewards, SessionTracer rollouts, a delete, counts and reads.
/// Returns every result, and the rollouts' session ids (random, so the
/// comparison maps them to names).
async fn mixed_workload(storage: Arc<dyn TraceStorage>) -> (Vec<Value>, Vec<String>) {
    let mut out = Vec::new();
    let mut first_events = Vec::new();
    for t in 0..TRACES {
        let trace = common::sample_trace(&format!("parity-{t}"), 3);
        let ids = common::write_trace(&*storage, &trace).await;
        first_events.push(ids[0]);
        out.push(json!(ids));
    }
    for (t, &event_id) in first_events.iter().enumerate() {
        let sid = format!("parity-{t}");
        let outcome = OutcomeReward {
            total_reward: t as f64 * 0.5,
            achievements_count: t as i32,
            total_steps: 3,
            ..Default::default()
        };
        out.push(json!(storage
            .insert_outcome_reward(&sid, &outcome)
            .await
            .unwrap()));
        let reward = EventReward {
            reward_value: 1.0 + t as f64,
            reward_type: Some("dense".into()),
            key: Some(format!("k{t}")),
            ..Default::default()
        };
        out.push(json!(storage
            .insert_event_reward(&sid, event_id, Some(1), Some(0), &reward)
            .await
            .unwrap()));
    }
    let mut rollouts = Vec::new();
    for r in 0..ROLLOUTS {
        let tracer = SessionTracer::new(storage.clone());
        rollouts.push(workload::run_rollout(&tracer, r).await.unwrap());
    }
    out.push(json!(storage.delete_session("parity-3").await.unwrap()));
    out.push(json!(storage.delete_session("parity-3").await.unwrap()));
    for t in 0..TRACES {
        storage
            .update_session_counts(&format!("parity-{t}"))
            .await
            .unwrap();
    }
    let sessions: Vec<String> = (0..TRACES)
        .map(|t| format!("parity-{t}"))
        .chain(rollouts.iter().cloned())
        .collect();
    for sid in &sessions {
        out.push(serde_json::to_value(storage.get_session(sid).await.unwrap()).unwrap());
    }
    out.push(Value::Array(
        storage
            .query(
                "SELECT COUNT(*) AS n, SUM(reward) AS r, COUNT(DISTINCT session_id) AS s \
                 FROM events",
                vec![],
            )
            .await
            .unwrap(),
    ));
    (out, rollouts)
}

/// Every table's rows, normalized and sorted: `session_id` is random for
/// the rollouts, so no column orders all tables alike on both backends.
async fn tables(storage: &dyn TraceStorage, names: &HashMap<String, String>) -> Value {
    let mut all = serde_json::Map::new();
    for table in [
        "session_traces",
        "session_timesteps",
        "events",
        "messages",
        "outcome_rewards",
        "event_rewards",
    ] {
        let rows = storage
            .query(&format!("SELECT * FROM {table}"), vec![])
            .await
            .unwrap();
        let mut rows: Vec<Value> = rows.iter().map(|r| normalize(r, names)).collect();
        rows.sort_by_key(|r| r.to_string());
        all.insert(table.to_string(), Value::Array(rows));
    }
    Value::Object(all)
}

/// Makes two runs comparable: random session ids become `rollout-N`, and
/// wall-clock values (times within a day of now, as text or as epoch
/// seconds) become `"<now>"`, also inside JSON held in text columns.
fn normalize(v: &Value, names: &HashMap<String, String>) -> Value {
    let now = Utc::now().timestamp() as f64;
    let recent = |t: f64| (t - now).abs() < 86_400.0;
    match v {
        Value::String(s) => {
            if let Some(name) = names.get(s) {
                return json!(name);
            }
            if let Some(t) = parse_time(s) {
                if recent(t) {
                    return json!("<now>");
                }
            }
            if s.starts_with('{') || s.starts_with('[') {
                if let Ok(inner) = serde_json::from_str::<Value>(s) {
                    return json!(normalize(&inner, names).to_string());
                }
            }
            v.clone()
        }
        Value::Number(n) => match n.as_f64() {
            Some(t) if recent(t) => json!("<now>"),
            _ => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(|i| normalize(i, names)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalize(v, names)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

fn parse_time(s: &str) -> Option<f64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp() as f64);
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc().timestamp() as f64);
        }
    }
    None
}

fn names(rollouts: &[String]) -> HashMap<String, String> {
    rollouts
        .iter()
        .enumerate()
        .map(|(r, sid)| (sid.clone(), format!("rollout-{r}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn both_backends_agree_on_a_mixed_workload() {
    let plain_server = Sqld::start().await;
    let writer_server = Sqld::start().await;
    let plain: Arc<dyn TraceStorage> = Arc::new(
        LibsqlTraceStorage::new(remote(plain_server.url()))
            .await
            .unwrap(),
    );
    let writer = BufferedTraceWriter::new(remote(writer_server.url()), WriterConfig::default())
        .await
        .unwrap();
    let writer_dyn: Arc<dyn TraceStorage> = Arc::new(writer.clone());

    let (plain_out, plain_rollouts) = mixed_workload(plain.clone()).await;
    let (writer_out, writer_rollouts) = mixed_workload(writer_dyn.clone()).await;
    writer.flush().await.unwrap();
    let stats = writer.stats();
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.enqueued, stats.committed, "{stats:?}");
    assert!(
        stats.enqueued >= 1_000,
        "the workload is about 1,000 operations: {stats:?}"
    );

    let plain_names = names(&plain_rollouts);
    let writer_names = names(&writer_rollouts);
    let a = normalize(&json!(plain_out), &plain_names);
    let b = normalize(&json!(writer_out), &writer_names);
    assert_eq!(a, b, "the calls' results differ");
    let a = tables(&*plain, &plain_names).await;
    let b = tables(&*writer_dyn, &writer_names).await;
    for (table, rows) in a.as_object().unwrap() {
        assert!(
            !rows.as_array().unwrap().is_empty(),
            "{table} is empty: the workload missed it"
        );
        assert_eq!(rows, &b[table], "table {table} differs");
    }
    writer.close().await.unwrap();
    plain.close().await.unwrap();

    // What the writer committed is on the server, for any other client.
    let check = LibsqlTraceStorage::new(remote(writer_server.url()))
        .await
        .unwrap();
    let c = tables(&check, &writer_names).await;
    assert_eq!(b, c, "a second client sees other tables than the writer");
    eprintln!(
        "parity: {} operations in {} batches, {} retries",
        stats.committed, stats.batches, stats.retries
    );
}

// ---------------------------------------------------------------------------
// A refused row
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_poison_row_is_isolated_remotely() {
    poison_row_isolated("ABORT").await;
}

/// A trigger that rolls the whole transaction back (`RAISE(ROLLBACK)`): the
/// statements after it must not run, and commit one by one, in autocommit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_poison_row_that_rolls_back_the_transaction_is_isolated_remotely() {
    poison_row_isolated("ROLLBACK").await;
}

async fn poison_row_isolated(raise: &str) {
    let server = Sqld::start().await;
    // Deadlines well past a healthy flush: a writer that retries the
    // refused batch gets `Timeout` from them, not a hang.
    let writer = BufferedTraceWriter::new(
        remote(server.url()),
        WriterConfig::default()
            .flush_timeout(Duration::from_secs(20))
            .close_timeout(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    writer
        .query(
            &format!(
                "CREATE TRIGGER no_poison BEFORE INSERT ON events WHEN NEW.model_name = 'poison' \
                 BEGIN SELECT RAISE({raise}, 'poisoned row'); END"
            ),
            vec![],
        )
        .await
        .unwrap();
    writer
        .ensure_session("p", Utc::now(), &json!({}))
        .await
        .unwrap();
    let mut good = Vec::new();
    for i in 0..100 {
        let mut e = common::cais_event(i);
        if i == 37 {
            if let TracingEvent::Cais(c) = &mut e {
                c.model_name = "poison".into();
            }
            writer.insert_event("p", None, &e).await.unwrap();
        } else {
            good.push(writer.insert_event("p", None, &e).await.unwrap());
        }
    }
    // Bounded in any case: the outer wait only guards the test run.
    let flushed = tokio::time::timeout(Duration::from_secs(90), writer.flush())
        .await
        .expect("flush() ignored its own deadline");
    let stats = writer.stats();
    match &flushed {
        Err(TracingError::WriteFailed {
            failed,
            first_cause,
        }) => {
            assert_eq!(*failed, 1, "{first_cause}");
            assert!(first_cause.contains("poisoned row"), "{first_cause}");
        }
        other => panic!(
            "expected WriteFailed for 1 operation, got {other:?}; {stats:?}; recent errors: {:?}",
            writer.recent_errors()
        ),
    }
    assert_eq!(
        (stats.enqueued, stats.committed, stats.failed),
        (101, 100, 1),
        "{stats:?}"
    );
    // The good rows are on the server, under the ids handed out.
    let rows = writer
        .query("SELECT id FROM events ORDER BY id", vec![])
        .await
        .unwrap();
    let stored: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(stored, good);
    // The failure was reported once; the writer carries on.
    writer
        .insert_event("p", None, &common::env_event(1))
        .await
        .unwrap();
    writer.flush().await.unwrap();
    assert_eq!(common::count(&writer, "events").await, 100);
    writer.close().await.unwrap();
    assert_eq!(writer.stats().spilled, 0);
    eprintln!(
        "poison: {} batches, {} retries",
        stats.batches, stats.retries
    );
}
