//! The next batch is collected and encoded while one is in flight: what the
//! batch in flight turns out to teach or refuse must still reach the next.
//!
//! A proxy adds a long round trip, so that the next batch is surely encoded
//! before the reply arrives. Opt-in, like every remote test: see
//! `tests/remote.rs` for how to run.
mod common;
mod support;

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use support::proxy::Proxy;
use support::sqld::Sqld;
use trace_writer::*;

fn remote(url: String) -> StorageConfig {
    StorageConfig::turso(url, "")
}

/// Long enough that a producer queues the next batch before the reply.
const ROUND_TRIP: Duration = Duration::from_millis(300);

/// Small batches, so that one write sequence spans several of them, and
/// deadlines well past a healthy flush.
fn small_batches() -> WriterConfig {
    WriterConfig::default()
        .max_batch_ops(2)
        .flush_timeout(Duration::from_secs(60))
        .close_timeout(Duration::from_secs(60))
}

/// A writer with `config` through a proxy adding `round_trip`, on a server
/// of its own; keep the server and the proxy alive.
async fn through_proxy(
    round_trip: Duration,
    config: WriterConfig,
) -> (Sqld, Proxy, BufferedTraceWriter) {
    let server = Sqld::start().await;
    let proxy = Proxy::start(server.addr(), round_trip).await;
    let writer = BufferedTraceWriter::new(remote(proxy.url()), config)
        .await
        .expect("writer");
    (server, proxy, writer)
}

/// A writer through the proxy, with `max_batch_ops`, on a server whose
/// trigger refuses [`refused_event`]s; keep the server and the proxy alive.
async fn refusing_writer(max_batch_ops: usize) -> (Sqld, Proxy, BufferedTraceWriter) {
    let (server, proxy, writer) =
        through_proxy(ROUND_TRIP, small_batches().max_batch_ops(max_batch_ops)).await;
    writer
        .query(
            "CREATE TRIGGER no_poison BEFORE INSERT ON events WHEN NEW.model_name = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned row'); END",
            vec![],
        )
        .await
        .expect("trigger");
    (server, proxy, writer)
}

/// An event the trigger of [`refusing_writer`] refuses.
fn refused_event(i: usize) -> TracingEvent {
    let mut e = common::cais_event(i);
    if let TracingEvent::Cais(c) = &mut e {
        c.model_name = "poison".into();
    }
    e
}

/// An event that carries the step it was recorded for.
fn tagged_event(step: &str, i: usize) -> TracingEvent {
    let mut e = common::env_event(i);
    if let TracingEvent::Environment(env) = &mut e {
        env.base.metadata = common::meta(&[("step", json!(step))]);
    }
    e
}

/// Events whose step row is missing or is another step than theirs.
async fn misfiled(storage: &dyn TraceStorage) -> i64 {
    let rows = storage
        .query(
            "SELECT COUNT(*) AS n FROM events r \
             LEFT JOIN session_timesteps t ON t.id = r.timestep_id \
             WHERE r.timestep_id IS NOT NULL AND (t.id IS NULL \
                OR t.session_id <> r.session_id \
                OR t.step_id <> json_extract(r.metadata, '$.step'))",
            vec![],
        )
        .await
        .expect("query");
    rows[0]["n"].as_i64().expect("count")
}

/// The writer makes a step that the plain backend made a moment before,
/// and records events under it. The step's batch learns the real row only
/// from its reply, after the next batch, which carries events under the
/// writer's own id, was encoded and sent behind it: that one must move its
/// events itself. The events after the first are large, so that the step's
/// batch reaches the server's lock first; three rounds, in case one does
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn records_sent_behind_their_steps_batch_go_under_its_real_row() {
    step_made_elsewhere_while_in_flight(2).await;
}

/// One operation per batch: the step's batch has no row to check, so the
/// next batch is only encoded while it is in flight, not sent; once the
/// reply taught the real row, it must be encoded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn records_encoded_while_their_step_was_in_flight_go_under_its_real_row() {
    step_made_elsewhere_while_in_flight(1).await;
}

async fn step_made_elsewhere_while_in_flight(max_batch_ops: usize) {
    let (server, _proxy, writer) =
        through_proxy(ROUND_TRIP, small_batches().max_batch_ops(max_batch_ops)).await;
    let plain = LibsqlTraceStorage::new(remote(server.url()))
        .await
        .expect("plain");
    writer
        .ensure_session("s", Utc::now(), &json!({}))
        .await
        .expect("session");
    // The writer loads the session's steps now, so it learns of later ones
    // only from its own inserts.
    writer
        .ensure_timestep("s", &SessionTimeStep::new("first", 0))
        .await
        .expect("step");
    writer.flush().await.expect("flush");
    const EVENTS: usize = 8;
    let padding = "x".repeat(256 << 10);
    for round in 0..3 {
        let step_id = format!("shared-{round}");
        // The writer knows session `s` and its steps; this one comes after.
        let real = plain
            .ensure_timestep("s", &SessionTimeStep::new(&step_id, round + 1))
            .await
            .expect("plain step");
        let ours = writer
            .ensure_timestep("s", &SessionTimeStep::new(&step_id, round + 1))
            .await
            .expect("writer step");
        assert_ne!(
            ours, real,
            "the writer numbered the step before it could know"
        );
        for i in 0..EVENTS {
            let mut e = tagged_event(&step_id, i);
            if i > 0 {
                if let TracingEvent::Environment(env) = &mut e {
                    env.base.metadata.insert("padding".into(), json!(padding));
                }
            }
            writer
                .insert_event("s", Some(ours), &e)
                .await
                .expect("event");
        }
        writer.flush().await.expect("flush");
        let under_real = plain
            .query(
                "SELECT COUNT(*) AS n FROM events WHERE timestep_id = ?",
                vec![json!(real)],
            )
            .await
            .expect("query");
        assert_eq!(under_real[0]["n"], json!(EVENTS), "round {round}");
    }
    assert_eq!(misfiled(&plain).await, 0, "{:?}", writer.stats());
    assert_eq!(common::count(&plain, "session_timesteps").await, 4);
    writer.close().await.expect("close");
    plain.close().await.expect("close");
}

/// A refused row in the batch in flight: that batch is sent again without
/// it, and only then the next one, already encoded; every other row
/// commits, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_refused_row_in_flight_holds_back_only_itself() {
    let (_server, _proxy, writer) = refusing_writer(8).await;
    writer
        .ensure_session("p", Utc::now(), &json!({}))
        .await
        .expect("session");
    let mut good = Vec::new();
    for i in 0..40 {
        if i == 3 || i == 21 {
            writer
                .insert_event("p", None, &refused_event(i))
                .await
                .expect("enqueue");
        } else {
            let e = common::cais_event(i);
            good.push(writer.insert_event("p", None, &e).await.expect("enqueue"));
        }
    }
    match writer.flush().await {
        Err(TracingError::WriteFailed { failed: 2, .. }) => {}
        other => panic!("expected 2 failed writes, got {other:?}"),
    }
    let rows = writer
        .query("SELECT id FROM events ORDER BY id", vec![])
        .await
        .expect("query");
    let stored: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().expect("id")).collect();
    assert_eq!(stored, good);
    let stats = writer.stats();
    assert_eq!(
        (stats.enqueued, stats.committed, stats.failed),
        (41, 39, 2),
        "{stats:?}"
    );
    writer.close().await.expect("close");
}

/// A batch sent behind one that then rolls back (a refused row) must not
/// commit before it: its updates would find none of that batch's rows. Here
/// the batch behind completes a step the batch in flight makes, and counts
/// the session's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_batch_sent_behind_commits_only_after_the_one_before() {
    let (_server, _proxy, writer) = refusing_writer(3).await;
    writer
        .ensure_session("o", Utc::now(), &json!({}))
        .await
        .expect("session");
    writer.flush().await.expect("flush");
    // The batch in flight: a good event (its marker row), a refused one and
    // a new step.
    writer
        .insert_event("o", None, &common::cais_event(0))
        .await
        .expect("event");
    writer
        .insert_event("o", None, &refused_event(1))
        .await
        .expect("enqueue");
    writer
        .ensure_timestep("o", &SessionTimeStep::new("late", 0))
        .await
        .expect("step");
    // The batch behind it: needs all of that one's good rows.
    let done = Utc::now();
    writer
        .update_timestep("o", "late", Some(done))
        .await
        .expect("update");
    writer.update_session_counts("o").await.expect("counts");
    writer
        .insert_event("o", None, &common::cais_event(2))
        .await
        .expect("event");
    match writer.flush().await {
        Err(TracingError::WriteFailed { failed: 1, .. }) => {}
        other => panic!("expected 1 failed write, got {other:?}"),
    }
    let step = writer
        .query(
            "SELECT completed_at FROM session_timesteps WHERE step_id = 'late'",
            vec![],
        )
        .await
        .expect("query");
    assert_eq!(step.len(), 1);
    assert!(
        !step[0]["completed_at"].is_null(),
        "the step's update ran before the step was made: {step:?}"
    );
    let counts = writer
        .query(
            "SELECT num_timesteps, num_events FROM session_traces WHERE session_id = 'o'",
            vec![],
        )
        .await
        .expect("query");
    // Counted after the good event and the step, before the last event.
    assert_eq!(counts[0]["num_timesteps"], json!(1), "{counts:?}");
    assert_eq!(counts[0]["num_events"], json!(1), "{counts:?}");
    assert_eq!(common::count(&writer, "events").await, 2);
    writer.close().await.expect("close");
}

/// A burst of writes that ends while a batch is in flight goes behind that
/// batch at once, not a round trip later when its reply is in: the server
/// comes to hold the burst while the writer still waits for the reply of
/// the batch before it (with the old order the burst was sent only after
/// that reply, so nothing of it could be stored before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_burst_that_ended_goes_behind_the_batch_in_flight() {
    const BURST: usize = 10;
    // A linger far above a pause between two of the burst's calls, far
    // below the pause before the burst.
    let config = small_batches()
        .max_batch_ops(64)
        .linger(Duration::from_millis(50));
    let (server, proxy, writer) = through_proxy(Duration::ZERO, config).await;
    writer
        .ensure_session("b", Utc::now(), &json!({}))
        .await
        .expect("session");
    // Leases the ids the rest needs, before the round trip grows.
    writer
        .insert_event("b", None, &common::cais_event(0))
        .await
        .expect("event");
    writer.flush().await.expect("flush");
    let direct = LibsqlTraceStorage::new(remote(server.url()))
        .await
        .expect("a connection past the proxy");
    proxy.set_round_trip(Duration::from_secs(4));
    let before = writer.stats();
    // The batch in flight: one event, sent once the actor's linger ends.
    writer
        .insert_event("b", None, &common::cais_event(1))
        .await
        .expect("event");
    // Should the actor take the burst into the same batch, the count of
    // batches below fails the test.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..BURST {
        writer
            .insert_event("b", None, &common::cais_event(2 + i))
            .await
            .expect("event");
    }
    // Until the server holds the burst, the first batch's reply must not be
    // in.
    common::eventually("the server holds the burst", || async {
        let count = common::count(&direct, "events");
        let stored = tokio::time::timeout(Duration::from_secs(20), count)
            .await
            .expect("a count of the server's events answers");
        if stored == 2 + BURST as i64 {
            return true;
        }
        assert_eq!(
            writer.stats().committed,
            before.committed,
            "the first batch's reply came in while the server held {stored} of {} events: \
             the burst waited for it",
            2 + BURST
        );
        false
    })
    .await;
    writer.flush().await.expect("flush");
    let after = writer.stats();
    // The event and the burst went as two batches (one would prove nothing).
    assert_eq!(after.batches - before.batches, 2, "{after:?}");
    assert_eq!(after.committed - before.committed, 1 + BURST as u64);
    direct.close().await.expect("close");
    writer.close().await.expect("close");
}

/// A lease asked for while a batch is in flight, and then a flush with no
/// write before it: the next "batch" has nothing to carry the lease, which
/// must still be served (a producer waits for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_lease_asked_for_in_flight_is_served_before_a_lone_flush() {
    let config = small_batches()
        .id_block(1)
        .enqueue_timeout(Duration::from_secs(20));
    let (_server, _proxy, writer) = through_proxy(ROUND_TRIP, config).await;
    writer
        .ensure_session("l", Utc::now(), &json!({}))
        .await
        .expect("session");
    writer.flush().await.expect("flush");
    // Takes the only event id left: a batch, in flight for a round trip.
    writer
        .insert_event("l", None, &common::cais_event(0))
        .await
        .expect("event");
    tokio::time::sleep(ROUND_TRIP / 4).await;
    // No id left: this one asks for a lease and waits.
    let starved = {
        let writer = writer.clone();
        tokio::spawn(async move { writer.insert_event("l", None, &common::cais_event(1)).await })
    };
    tokio::time::sleep(ROUND_TRIP / 5).await;
    writer.flush().await.expect("flush");
    // A lost lease makes this wait out `enqueue_timeout`, then fail.
    let got = starved.await.expect("task");
    got.unwrap_or_else(|e| panic!("the lease was lost: {e}; {:?}", writer.stats()));
    writer.flush().await.expect("flush");
    assert_eq!(common::count(&writer, "events").await, 2);
    writer.close().await.expect("close");
}

/// A panic while the actor encodes the batch collected behind the one in
/// flight (a bug) loses nothing: the batch in flight, the one being
/// encoded and the writes still queued are spilled, and replay in the
/// order they were accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_crash_while_encoding_behind_keeps_the_batch_being_encoded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spill = dir.path().join("encode.jsonl");
    let (server, _proxy, writer) =
        through_proxy(ROUND_TRIP, small_batches().spill_path(&spill)).await;
    writer.inject_crash_when_encoding_behind();
    // The actor takes the control message before any write.
    tokio::time::sleep(ROUND_TRIP / 6).await;
    // The first two are a batch in flight for a round trip; the next two
    // are collected behind it, and encoding them panics.
    for i in 0..10 {
        writer
            .insert_event("e", None, &common::env_event(i))
            .await
            .expect("event");
    }
    common::eventually("the actor is dead", || async {
        writer.failure_cause().is_some()
    })
    .await;
    let cause = writer.failure_cause().expect("cause");
    assert!(
        cause.contains("panicked; 10 operation(s) (") && !cause.contains("not kept"),
        "{cause}"
    );
    assert_eq!(writer.stats().spilled, 10);
    drop(writer);
    let report = replay_spill_file(remote(server.url()), &spill)
        .await
        .expect("replay");
    // The batch in flight may have committed before the actor died.
    assert_eq!(report.inserted + report.duplicates, 10, "{report:?}");
    let plain = LibsqlTraceStorage::new(remote(server.url()))
        .await
        .expect("plain");
    let rows = plain
        .query(
            "SELECT json_extract(system_state_after, '$.pos[0]') AS i FROM events ORDER BY id",
            vec![],
        )
        .await
        .expect("query");
    let order: Vec<i64> = rows.iter().filter_map(|r| r["i"].as_i64()).collect();
    assert_eq!(order, (0..10).collect::<Vec<i64>>());
}
