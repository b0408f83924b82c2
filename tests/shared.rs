//! Several writers, a plain backend and other processes on one database:
//! every event and message is filed under the real row of the step it was
//! recorded for, whoever created that step.
mod common;

use std::sync::Arc;

use chrono::Utc;
use proptest::prelude::*;
use serde_json::json;
use trace_writer::*;

/// An event that carries the `(session, step)` it was recorded for.
fn tagged_event(session: &str, step: &str, i: usize) -> TracingEvent {
    let mut e = common::env_event(i);
    if let TracingEvent::Environment(env) = &mut e {
        env.base.metadata = common::meta(&[("session", json!(session)), ("step", json!(step))]);
    }
    e
}

/// A message tagged the same way.
fn tagged_message(session: &str, step: &str, i: usize) -> MarkovBlanketMessage {
    let mut m = common::message(i);
    m.metadata = common::meta(&[("session", json!(session)), ("step", json!(step))]);
    m
}

/// Events and messages whose `timestep_id` names no step row, or a step
/// other than the one they were recorded for.
async fn misfiled(storage: &dyn TraceStorage) -> i64 {
    let mut bad = 0;
    for table in ["events", "messages"] {
        let rows = storage
            .query(
                &format!(
                    "SELECT COUNT(*) AS n FROM {table} r \
                     LEFT JOIN session_timesteps t ON t.id = r.timestep_id \
                     WHERE r.timestep_id IS NOT NULL AND (t.id IS NULL \
                        OR t.session_id <> r.session_id \
                        OR t.step_id <> json_extract(r.metadata, '$.step'))"
                ),
                vec![],
            )
            .await
            .expect("query");
        bad += rows[0]["n"].as_i64().expect("count");
    }
    bad
}

fn step(id: &str, index: i32) -> SessionTimeStep {
    SessionTimeStep::new(id, index)
}

async fn record(storage: &dyn TraceStorage, session: &str, step_id: &str, i: usize) -> i64 {
    let ts = storage
        .ensure_timestep(session, &step(step_id, i as i32))
        .await
        .expect("ensure_timestep");
    storage
        .insert_event(session, Some(ts), &tagged_event(session, step_id, i))
        .await
        .expect("event");
    storage
        .insert_message(session, Some(ts), &tagged_message(session, step_id, i))
        .await
        .expect("message");
    ts
}

/// The plain backend on `config`, with session `s` and its step `stored`
/// (and a record under it); returns the step's row id.
async fn stored_elsewhere(config: StorageConfig) -> (LibsqlTraceStorage, i64) {
    let plain = LibsqlTraceStorage::new(config).await.expect("plain");
    plain
        .ensure_session("s", Utc::now(), &json!({}))
        .await
        .expect("session");
    let real = record(&plain, "s", "stored", 0).await;
    (plain, real)
}

fn wal(dir: &tempfile::TempDir, name: &str) -> StorageConfig {
    StorageConfig::file(dir.path().join(name).to_str().expect("utf-8"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_created_by_another_writer_gets_its_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = BufferedTraceWriter::new(wal(&dir, "two.db"), WriterConfig::default())
        .await
        .expect("a");
    let b = BufferedTraceWriter::new(wal(&dir, "two.db"), WriterConfig::default())
        .await
        .expect("b");
    a.ensure_session("s", Utc::now(), &json!({}))
        .await
        .expect("session");
    record(&a, "s", "a", 0).await;
    a.flush().await.expect("flush a");
    // B creates step `b`; A already knows session `s`, but not this step.
    let real = record(&b, "s", "b", 1).await;
    b.flush().await.expect("flush b");
    let ours = record(&a, "s", "b", 2).await;
    assert_ne!(ours, real, "A handed out its own id before it could know");
    a.flush()
        .await
        .expect("no dangling reference behind an Ok flush");
    assert_eq!(misfiled(&a).await, 0);
    let trace = a.get_session("s").await.expect("read").expect("session");
    let step_b = trace
        .session_time_steps
        .iter()
        .find(|s| s.step_id == "b")
        .expect("step b");
    assert_eq!(step_b.events.len(), 2, "B's event and A's event");
    assert_eq!(step_b.markov_blanket_messages.len(), 2);
    // Later records under A's id keep going to the real row.
    a.insert_event("s", Some(ours), &tagged_event("s", "b", 3))
        .await
        .expect("event");
    a.flush().await.expect("flush");
    assert_eq!(misfiled(&b).await, 0);
    assert_eq!(common::count(&b, "session_timesteps").await, 2);
    a.close().await.expect("close a");
    b.close().await.expect("close b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_created_by_the_plain_backend_gets_the_writers_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = BufferedTraceWriter::new(wal(&dir, "mixed.db"), WriterConfig::default())
        .await
        .expect("writer");
    let plain = LibsqlTraceStorage::new(wal(&dir, "mixed.db"))
        .await
        .expect("plain");
    writer
        .ensure_session("s", Utc::now(), &json!({}))
        .await
        .expect("session");
    record(&writer, "s", "first", 0).await;
    writer.flush().await.expect("flush");
    record(&plain, "s", "by-plain", 1).await;
    record(&writer, "s", "by-plain", 2).await;
    writer.flush().await.expect("flush");
    assert_eq!(misfiled(&plain).await, 0);
    let trace = plain
        .get_session("s")
        .await
        .expect("read")
        .expect("session");
    let step = trace
        .session_time_steps
        .iter()
        .find(|s| s.step_id == "by-plain")
        .expect("step");
    assert_eq!(step.events.len(), 2);
    writer.close().await.expect("close");
    plain.close().await.expect("close");
}

/// A writer with provisional step ids learnt that its id stands for a step
/// stored elsewhere, then its actor died with records under that id still
/// unwritten: the spill file has them under the stored row, so the replay
/// files them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_spilled_by_a_dying_actor_go_under_the_stored_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("die.db");
    let spill = dir.path().join("die.jsonl");
    let config = wal(&dir, "die.db").with_busy_timeout(std::time::Duration::from_millis(20));
    let (plain, real) = stored_elsewhere(config.clone()).await;
    let writer = BufferedTraceWriter::new(
        config.clone(),
        WriterConfig::default()
            .provisional_step_ids(true)
            .spill_path(&spill),
    )
    .await
    .expect("writer");
    let ours = record(&writer, "s", "stored", 1).await;
    assert_ne!(ours, real);
    // The step insert meets the stored row: the writer learns its id.
    writer.flush().await.expect("flush");
    let lock = common::Lock::take(&path).await;
    writer
        .insert_event("s", Some(ours), &tagged_event("s", "stored", 2))
        .await
        .expect("event");
    common::eventually("the batch retries", || async { writer.stats().retries > 0 }).await;
    writer
        .insert_event("s", Some(ours), &tagged_event("s", "stored", 3))
        .await
        .expect("event");
    writer.inject_actor_crash();
    common::eventually("the actor is dead", || async {
        writer.failure_cause().is_some()
    })
    .await;
    assert_eq!(writer.stats().spilled, 2, "{:?}", writer.failure_cause());
    drop(writer);
    lock.release().await;
    let report = replay_spill_file(config, &spill).await.expect("replay");
    assert_eq!(report.inserted, 2);
    assert_eq!(misfiled(&plain).await, 0);
    let rows = plain
        .query(
            "SELECT COUNT(*) AS n FROM events WHERE timestep_id = ?",
            vec![json!(real)],
        )
        .await
        .expect("query");
    assert_eq!(rows[0]["n"], json!(4), "every event under the stored row");
}

/// With `provisional_step_ids`, a session this writer has not read gets its
/// step id at once; steps another backend stored first still get every
/// record, and no step row is made twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisional_step_ids_file_records_under_steps_stored_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (plain, real) = stored_elsewhere(wal(&dir, "prov.db")).await;
    let config = WriterConfig::default().provisional_step_ids(true);
    let writer = BufferedTraceWriter::new(wal(&dir, "prov.db"), config)
        .await
        .expect("writer");
    writer
        .ensure_session("s", Utc::now(), &json!({}))
        .await
        .expect("session");
    let ours = record(&writer, "s", "stored", 1).await;
    assert_ne!(
        ours, real,
        "the writer answered without reading the session"
    );
    // Idempotent within the writer: the same id again, no id used up.
    let again = writer
        .ensure_timestep("s", &step("stored", 1))
        .await
        .expect("again");
    assert_eq!(again, ours);
    let fresh = record(&writer, "s", "new", 2).await;
    writer.flush().await.expect("flush");
    // A later batch still files records under the stored row.
    writer
        .insert_event("s", Some(ours), &tagged_event("s", "stored", 3))
        .await
        .expect("event");
    writer.flush().await.expect("flush");
    assert_eq!(misfiled(&plain).await, 0);
    assert_eq!(common::count(&plain, "session_timesteps").await, 2);
    let trace = plain
        .get_session("s")
        .await
        .expect("read")
        .expect("session");
    assert_eq!(trace.session_time_steps.len(), 2);
    let stored = trace
        .session_time_steps
        .iter()
        .find(|s| s.step_id == "stored")
        .expect("stored step");
    assert_eq!(
        stored.events.len(),
        3,
        "the plain backend's event and two of the writer's"
    );
    assert_eq!(stored.markov_blanket_messages.len(), 2);
    let new = trace
        .session_time_steps
        .iter()
        .find(|s| s.step_id == "new")
        .expect("new step");
    assert_eq!(new.events.len(), 1);
    let rows = plain
        .query(
            "SELECT id FROM session_timesteps WHERE step_id = 'new'",
            vec![],
        )
        .await
        .expect("query");
    assert_eq!(
        rows[0]["id"].as_i64(),
        Some(fresh),
        "a new step keeps its id"
    );
    writer.close().await.expect("close");
    plain.close().await.expect("close");
}

const PROCESS_SESSIONS: usize = 20;
const PROCESS_STEPS: usize = 5;

/// The child of `two_processes_file_steps_under_the_real_rows`: records
/// every step of every session, as the other process does at the same time.
#[test]
#[ignore = "child process of two_processes_file_steps_under_the_real_rows; run by it"]
fn shared_child() {
    let path = std::env::var("TRACE_WRITER_SHARED_DB").expect("TRACE_WRITER_SHARED_DB");
    let me: usize = std::env::var("TRACE_WRITER_SHARED_CHILD")
        .expect("TRACE_WRITER_SHARED_CHILD")
        .parse()
        .expect("number");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let writer = BufferedTraceWriter::new(StorageConfig::file(path), WriterConfig::default())
            .await
            .expect("open");
        for s in 0..PROCESS_SESSIONS {
            let sid = format!("p{s}");
            writer
                .ensure_session(&sid, Utc::now(), &json!({}))
                .await
                .expect("session");
            for k in 0..PROCESS_STEPS {
                // The two children walk the steps in opposite orders.
                let k = if me == 0 { k } else { PROCESS_STEPS - 1 - k };
                record(&writer, &sid, &format!("step-{k}"), me * 1000 + k).await;
            }
            // Commit often, so the other process meets committed rows.
            writer.flush().await.expect("flush");
        }
        writer.close().await.expect("close");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_file_steps_under_the_real_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("procs.db");
    LibsqlTraceStorage::new_file(path.to_str().expect("utf-8"))
        .await
        .expect("schema")
        .close()
        .await
        .expect("close");
    let exe = std::env::current_exe().expect("exe");
    let children: Vec<_> = (0..2)
        .map(|me| {
            std::process::Command::new(&exe)
                .args(["--exact", "shared_child", "--ignored", "--test-threads=1"])
                .env("TRACE_WRITER_SHARED_DB", &path)
                .env("TRACE_WRITER_SHARED_CHILD", me.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait").success(), "a child failed");
    }
    let plain = LibsqlTraceStorage::new_file(path.to_str().expect("utf-8"))
        .await
        .expect("open");
    assert_eq!(misfiled(&plain).await, 0);
    let n = (PROCESS_SESSIONS * PROCESS_STEPS) as i64;
    assert_eq!(common::count(&plain, "session_timesteps").await, n);
    assert_eq!(common::count(&plain, "events").await, 2 * n);
    for s in 0..PROCESS_SESSIONS {
        let trace = plain
            .get_session(&format!("p{s}"))
            .await
            .expect("read")
            .expect("session");
        for step in &trace.session_time_steps {
            assert_eq!(
                step.events.len(),
                2,
                "{} {}",
                trace.session_id,
                step.step_id
            );
        }
    }
}

/// One action of the property test.
#[derive(Debug, Clone)]
struct Act {
    /// 0 and 1: the two writers; 2: the plain backend.
    who: usize,
    session: usize,
    step: usize,
    flush: bool,
}

fn act() -> impl Strategy<Value = Act> {
    (
        0..3usize,
        0..12usize,
        0..3usize,
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(who, session, step, flush)| Act {
            who,
            session,
            step,
            flush,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Two writers whose step caches hold two sessions out of twelve (so
    /// they evict and reload all the time), one of them with provisional
    /// step ids, and a plain backend record steps
    /// of the same sessions in any order: every record lands under its step.
    #[test]
    fn steps_stay_right_under_eviction_and_sharing(acts in proptest::collection::vec(act(), 1..120)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let config = WriterConfig::default().session_cache(2);
            let w0 = BufferedTraceWriter::new(wal(&dir, "p.db"), config.clone()).await.unwrap();
            // The second writer answers `ensure_timestep` without loading
            // a session it has not read.
            let w1 = BufferedTraceWriter::new(wal(&dir, "p.db"), config.provisional_step_ids(true))
                .await
                .unwrap();
            let plain = LibsqlTraceStorage::new(wal(&dir, "p.db")).await.unwrap();
            let all: [Arc<dyn TraceStorage>; 3] =
                [Arc::new(w0.clone()), Arc::new(w1.clone()), Arc::new(plain)];
            let mut expected = 0i64;
            for (i, a) in acts.iter().enumerate() {
                let storage = &*all[a.who];
                let sid = format!("s{}", a.session);
                storage.ensure_session(&sid, Utc::now(), &json!({})).await.unwrap();
                record(storage, &sid, &format!("k{}", a.step), i).await;
                expected += 1;
                if a.flush {
                    w0.flush().await.unwrap();
                    w1.flush().await.unwrap();
                }
            }
            w0.flush().await.unwrap();
            w1.flush().await.unwrap();
            assert_eq!(misfiled(&*all[2]).await, 0);
            assert_eq!(common::count(&*all[2], "events").await, expected);
            w0.close().await.unwrap();
            w1.close().await.unwrap();
        });
    }
}

/// Records spilled after a writer learnt that a step was created elsewhere
/// are written to the spill file under the real row, so replay files them
/// right although the step's insert is not in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_records_keep_the_real_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spill.db");
    let spill = dir.path().join("spill.jsonl");
    let a = BufferedTraceWriter::new(
        wal(&dir, "spill.db").with_busy_timeout(std::time::Duration::from_millis(20)),
        WriterConfig::default()
            .close_timeout(std::time::Duration::from_millis(200))
            .spill_path(&spill),
    )
    .await
    .expect("a");
    let b = BufferedTraceWriter::new(wal(&dir, "spill.db"), WriterConfig::default())
        .await
        .expect("b");
    a.ensure_session("s", Utc::now(), &json!({}))
        .await
        .expect("session");
    record(&a, "s", "a", 0).await;
    a.flush().await.expect("flush a");
    record(&b, "s", "b", 1).await;
    b.flush().await.expect("flush b");
    b.close().await.expect("close b");
    // A hands out its own id for `b`, and learns the real one when it commits.
    let ours = record(&a, "s", "b", 2).await;
    a.flush().await.expect("flush");
    let lock = common::Lock::take(&path).await;
    for i in 3..6 {
        a.insert_event("s", Some(ours), &tagged_event("s", "b", i))
            .await
            .expect("queued");
    }
    match a.close().await {
        Err(TracingError::Spilled { count, .. }) => assert_eq!(count, 3),
        other => panic!("expected Spilled, got {other:?}"),
    }
    lock.release().await;
    let report = replay_spill_file(wal(&dir, "spill.db"), &spill)
        .await
        .expect("replay");
    assert_eq!(report.inserted, 3, "{report:?}");
    let plain = LibsqlTraceStorage::new(wal(&dir, "spill.db"))
        .await
        .expect("plain");
    assert_eq!(misfiled(&plain).await, 0);
    let trace = plain
        .get_session("s")
        .await
        .expect("read")
        .expect("session");
    let step_b = trace
        .session_time_steps
        .iter()
        .find(|s| s.step_id == "b")
        .expect("step b");
    assert_eq!(step_b.events.len(), 5, "B's, A's, and the 3 replayed");
}

/// A step whose insert failed is not handed out again from the cache: the
/// next `ensure_timestep` makes it anew, and the records after it are filed
/// under a row that exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_insert_failed_is_made_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = BufferedTraceWriter::new(wal(&dir, "refused.db"), WriterConfig::default())
        .await
        .expect("open");
    w.query(
        "CREATE TRIGGER no_bad_step BEFORE INSERT ON session_timesteps \
         WHEN NEW.step_id = 'bad' BEGIN SELECT RAISE(ABORT, 'step refused'); END",
        vec![],
    )
    .await
    .expect("trigger");
    w.ensure_session("s", Utc::now(), &json!({}))
        .await
        .expect("session");
    let first = w.ensure_timestep("s", &step("bad", 0)).await.expect("id");
    match w.flush().await {
        Err(TracingError::WriteFailed { failed, .. }) => assert_eq!(failed, 1),
        other => panic!("expected the step to fail, got {other:?}"),
    }
    w.query("DROP TRIGGER no_bad_step", vec![])
        .await
        .expect("drop");
    let again = w.ensure_timestep("s", &step("bad", 0)).await.expect("id");
    assert_ne!(again, first, "the failed id is not handed out again");
    w.insert_event("s", Some(again), &tagged_event("s", "bad", 1))
        .await
        .expect("event");
    w.flush().await.expect("flush");
    assert_eq!(misfiled(&w).await, 0);
    assert_eq!(common::count(&w, "session_timesteps").await, 1);
    w.close().await.expect("close");
}
