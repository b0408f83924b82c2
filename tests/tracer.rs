//! `SessionTracer` on both backends: `auto_save == false`, whole messages,
//! event rewards with their defaults, and the open session and step.
mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{cais_event, count, env_event, message, meta, runtime_event, time};
use serde_json::{json, Value};
use trace_writer::tracer::{HistorySlot, RecordedSession};
use trace_writer::*;

const TABLES: [&str; 6] = [
    "session_traces",
    "session_timesteps",
    "events",
    "messages",
    "outcome_rewards",
    "event_rewards",
];

async fn plain() -> Arc<dyn TraceStorage> {
    Arc::new(LibsqlTraceStorage::new_memory().await.unwrap())
}

async fn writer() -> Arc<dyn TraceStorage> {
    Arc::new(
        BufferedTraceWriter::new(StorageConfig::memory(), WriterConfig::default())
            .await
            .unwrap(),
    )
}

/// Both backends, named.
async fn backends() -> Vec<(&'static str, Arc<dyn TraceStorage>)> {
    vec![("plain", plain().await), ("writer", writer().await)]
}

fn reward(v: f64) -> EventReward {
    EventReward {
        reward_value: v,
        ..Default::default()
    }
}

/// One rollout through every recording method: records outside and inside
/// steps, a step ended by the next, one ended explicitly, rewards with and
/// without a message id and turn number. Returns what the calls returned.
async fn rollout(t: &SessionTracer) -> (Vec<Option<i64>>, SessionTrace) {
    let mut ids = Vec::new();
    t.start_session(Some("r"), meta(&[("env", json!("crafter"))]))
        .await
        .unwrap();
    ids.push(t.record_event(env_event(0)).await.unwrap());
    ids.push(t.record_markov_message(message(0)).await.unwrap());
    t.start_timestep("s0", Some(0), meta(&[("k", json!(1))]))
        .await
        .unwrap();
    ids.push(t.record_event(cais_event(1)).await.unwrap());
    ids.push(t.record_markov_message(message(1)).await.unwrap());
    ids.push(t.record_event_reward(1, reward(0.5)).await.unwrap());
    t.start_timestep("s1", Some(7), HashMap::new())
        .await
        .unwrap();
    ids.push(t.record_event(runtime_event(2)).await.unwrap());
    let turn = Some(9);
    let r = t.record_event_reward_for(2, reward(1.0), Some(1), turn);
    ids.push(r.await.unwrap());
    t.end_timestep().await.unwrap();
    ids.push(t.record_event(runtime_event(3)).await.unwrap());
    ids.push(
        t.record_event_reward_for(3, reward(2.0), None, None)
            .await
            .unwrap(),
    );
    let outcome = OutcomeReward {
        total_reward: 3.5,
        total_steps: 2,
        ..Default::default()
    };
    ids.push(t.record_outcome_reward(outcome).await.unwrap());
    (ids, t.end_session(true).await.unwrap())
}

/// Every row of every table, in id order, without the columns that hold
/// the wall clock (a completion time is kept as whether it is set).
async fn rows(s: &dyn TraceStorage) -> Vec<Vec<Value>> {
    let mut all = Vec::new();
    for table in TABLES {
        let order = if table == "session_traces" {
            "session_id"
        } else {
            "id"
        };
        let sql = format!("SELECT * FROM {table} ORDER BY {order}");
        let mut got = s.query(&sql, vec![]).await.unwrap();
        for row in &mut got {
            let row = row.as_object_mut().unwrap();
            row.remove("created_at");
            row.remove("started_at");
            if let Some(done) = row.remove("completed_at") {
                row.insert("completed".into(), json!(!done.is_null()));
            }
        }
        all.push(got);
    }
    all
}

async fn total_rows(s: &dyn TraceStorage) -> i64 {
    let mut n = 0;
    for table in TABLES {
        n += count(s, table).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_save_nothing_is_written_until_end_session_then_the_same_rows() {
    for ((name, saved), (_, kept)) in backends().await.into_iter().zip(backends().await) {
        let (ids, trace) = rollout(&SessionTracer::new(saved.clone())).await;
        assert_eq!(
            ids,
            [1, 1, 2, 2, 1, 3, 2, 4, 3, 1].map(Some),
            "{name}: ids in call order"
        );
        let tracer = SessionTracer::with_auto_save(kept.clone(), false);
        assert!(!tracer.auto_save());
        tracer
            .start_session(Some("r"), HashMap::new())
            .await
            .unwrap();
        tracer
            .start_timestep("s0", Some(0), HashMap::new())
            .await
            .unwrap();
        assert_eq!(tracer.record_event(env_event(0)).await.unwrap(), None);
        assert_eq!(
            tracer.record_event_reward(1, reward(1.0)).await.unwrap(),
            None
        );
        tracer.end_timestep().await.unwrap();
        assert_eq!(
            total_rows(&*kept).await,
            0,
            "{name}: written before the end"
        );
        tracer.end_session(false).await.unwrap();
        assert_eq!(
            total_rows(&*kept).await,
            0,
            "{name}: end_session(false) wrote"
        );

        let tracer = SessionTracer::with_auto_save(kept.clone(), false);
        let (ids, kept_trace) = rollout(&tracer).await;
        assert_eq!(ids, [None; 10], "{name}");
        assert_eq!(rows(&*kept).await, rows(&*saved).await, "{name}");
        assert_eq!(kept.get_session("r").await.unwrap().unwrap(), kept_trace);
        assert_eq!(saved.get_session("r").await.unwrap().unwrap(), trace);
        let counts = kept.query("SELECT * FROM session_traces", vec![]);
        let counts = &counts.await.unwrap()[0];
        assert_eq!(
            (
                counts["num_timesteps"].as_i64(),
                counts["num_events"].as_i64()
            ),
            (Some(2), Some(4)),
            "{name}: final counts"
        );
        saved.close().await.unwrap();
        kept.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_end_session_stays_open_and_can_be_repeated() {
    for (name, s) in backends().await {
        let tracer = SessionTracer::with_auto_save(s.clone(), false);
        tracer
            .start_session(Some("r"), HashMap::new())
            .await
            .unwrap();
        tracer.record_event(env_event(0)).await.unwrap();
        s.close().await.unwrap();
        assert!(tracer.end_session(true).await.is_err(), "{name}");
        assert_eq!(tracer.current_session_id().await.as_deref(), Some("r"));
        let trace = tracer.end_session(false).await.unwrap();
        assert_eq!(trace.event_history, [env_event(0)], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_markov_message_keeps_its_time_record() {
    for (name, s) in backends().await {
        for auto_save in [true, false] {
            let tracer = SessionTracer::with_auto_save(s.clone(), auto_save);
            let sid = format!("m-{auto_save}");
            tracer
                .start_session(Some(&sid), HashMap::new())
                .await
                .unwrap();
            tracer
                .start_timestep("s0", None, HashMap::new())
                .await
                .unwrap();
            let mut msg = message(3);
            msg.time_record = time(1_234.5);
            tracer.record_markov_message(msg.clone()).await.unwrap();
            let trace = tracer.end_session(true).await.unwrap();
            assert_eq!(trace.markov_blanket_message_history, [msg.clone()]);
            let back = s.get_session(&sid).await.unwrap().unwrap();
            let got = &back.markov_blanket_message_history[0];
            assert_eq!(got.time_record, msg.time_record, "{name} {auto_save}");
            assert_eq!(got, &msg, "{name} {auto_save}");
        }
        s.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_event_reward_for_takes_the_open_steps_turn_number() {
    for (name, s) in backends().await {
        for auto_save in [true, false] {
            let tracer = SessionTracer::with_auto_save(s.clone(), auto_save);
            let sid = format!("r-{auto_save}");
            tracer
                .start_session(Some(&sid), HashMap::new())
                .await
                .unwrap();
            // No step open: NULL.
            tracer
                .record_event_reward_for(1, reward(0.0), None, None)
                .await
                .unwrap();
            tracer
                .start_timestep("s0", Some(4), HashMap::new())
                .await
                .unwrap();
            tracer
                .record_event_reward_for(1, reward(1.0), None, None)
                .await
                .unwrap();
            tracer
                .record_event_reward_for(1, reward(2.0), Some(6), Some(9))
                .await
                .unwrap();
            // A step without a turn number: NULL.
            tracer
                .start_timestep("s1", None, HashMap::new())
                .await
                .unwrap();
            tracer.record_event_reward(1, reward(3.0)).await.unwrap();
            tracer.end_session(true).await.unwrap();
            let sql = "SELECT turn_number, message_id, reward_value FROM event_rewards \
                       WHERE session_id = ? ORDER BY id";
            let got = s.query(sql, vec![json!(sid)]).await.unwrap();
            let want = [
                json!({"turn_number": null, "message_id": null, "reward_value": 0.0}),
                json!({"turn_number": 4, "message_id": null, "reward_value": 1.0}),
                json!({"turn_number": 9, "message_id": 6, "reward_value": 2.0}),
                json!({"turn_number": null, "message_id": null, "reward_value": 3.0}),
            ];
            assert_eq!(got, want, "{name} auto_save={auto_save}");
        }
        s.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_session_and_step_and_the_recorded_histories() {
    for (name, s) in backends().await {
        let tracer = SessionTracer::new(s.clone());
        assert_eq!(tracer.current_session_id().await, None);
        assert!(matches!(
            tracer.end_session(true).await,
            Err(TracingError::NoActiveSession)
        ));
        tracer
            .start_session(Some("o"), HashMap::new())
            .await
            .unwrap();
        assert_eq!(tracer.current_session_id().await.as_deref(), Some("o"));
        assert_eq!(tracer.current_timestep().await, None);
        tracer.record_event(env_event(0)).await.unwrap();
        tracer
            .start_timestep("a", None, HashMap::new())
            .await
            .unwrap();
        assert_eq!(tracer.current_timestep().await, Some(("o".into(), 0)));
        tracer.record_event(env_event(1)).await.unwrap();
        tracer
            .start_timestep("b", None, HashMap::new())
            .await
            .unwrap();
        assert_eq!(tracer.current_timestep().await, Some(("o".into(), 1)));
        tracer.record_event(env_event(2)).await.unwrap();
        tracer.end_timestep().await.unwrap();
        assert!(matches!(
            tracer.end_timestep().await,
            Err(TracingError::NoActiveTimestep)
        ));
        tracer.record_event(env_event(3)).await.unwrap();
        let recorded: RecordedSession = tracer.end_session_recorded(true).await.unwrap();
        assert_eq!(tracer.current_session_id().await, None, "{name}");
        assert_eq!(
            recorded.event_order,
            [
                HistorySlot::Loose(0),
                HistorySlot::Step { step: 0, index: 0 },
                HistorySlot::Step { step: 1, index: 0 },
                HistorySlot::Loose(1),
            ]
        );
        assert!(recorded.trace.event_history.is_empty());
        let trace = recorded.into_trace();
        let want: Vec<_> = (0..4).map(env_event).collect();
        assert_eq!(trace.event_history, want, "{name}");
        assert_eq!(s.get_session("o").await.unwrap().unwrap(), trace, "{name}");
        s.close().await.unwrap();
    }
}

/// A session the tracer makes up (`start_session(None, ..)`) begins with
/// `ensure_new_session`: the writer answers its steps without reading the
/// database for them (`step_loads` stays 0), and the trace reads back
/// whole. A session given by name is read once, so that a step an earlier
/// writer stored keeps its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_tracer_makes_up_is_not_read_for_stored_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let config = || StorageConfig::file(path.to_str().unwrap());
    let open = || BufferedTraceWriter::new(config(), WriterConfig::default());

    // An earlier writer stores step "s0" of the named session.
    let earlier = open().await.unwrap();
    earlier
        .ensure_session("named", chrono::Utc::now(), &json!({}))
        .await
        .unwrap();
    let stored = earlier
        .ensure_timestep("named", &SessionTimeStep::new("s0", 0))
        .await
        .unwrap();
    earlier.close().await.unwrap();

    let writer = open().await.unwrap();
    let tracer = SessionTracer::new(Arc::new(writer.clone()));
    let made_up = tracer.start_session(None, HashMap::new()).await.unwrap();
    for s in 0..3 {
        tracer
            .start_timestep(&format!("s{s}"), Some(s), HashMap::new())
            .await
            .unwrap();
        tracer.record_event(env_event(s as usize)).await.unwrap();
    }
    let trace = tracer.end_session(true).await.unwrap();
    assert_eq!(writer.stats().step_loads, 0);
    assert_eq!(writer.get_session(&made_up).await.unwrap(), Some(trace));

    tracer
        .start_session(Some("named"), HashMap::new())
        .await
        .unwrap();
    tracer
        .start_timestep("s0", Some(0), HashMap::new())
        .await
        .unwrap();
    tracer.end_session(true).await.unwrap();
    assert_eq!(writer.stats().step_loads, 1);
    let rows = writer
        .query(
            "SELECT id FROM session_timesteps WHERE session_id = 'named'",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(rows, vec![json!({ "id": stored })]);
    writer.close().await.unwrap();
}
