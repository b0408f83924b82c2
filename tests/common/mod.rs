//! The conformance suite: every check runs against any `TraceStorage`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use trace_writer::*;

/// A storage under test, and the temp folder that must outlive it.
pub struct Backend {
    pub storage: Arc<dyn TraceStorage>,
    pub dir: Option<tempfile::TempDir>,
}

pub fn meta(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub fn time(secs: f64) -> TimeRecord {
    TimeRecord {
        event_time: secs,
        message_time: Some(secs as i64),
    }
}

pub fn cais_event(i: usize) -> TracingEvent {
    TracingEvent::Cais(LMCAISEvent {
        base: BaseEventFields {
            system_instance_id: format!("agent-{i}"),
            time_record: time(1_700_000_000.125 + i as f64),
            metadata: meta(&[("i", json!(i))]),
            event_metadata: Some(vec![json!({"k": "v"})]),
        },
        model_name: "gpt-test".into(),
        provider: Some("openai".into()),
        input_tokens: Some(10),
        output_tokens: Some(20),
        total_tokens: Some(30),
        cost_usd: Some(0.001_234_5),
        latency_ms: Some(250),
        span_id: Some(format!("span-{i}")),
        trace_id: Some("trace".into()),
        call_records: Some(vec![LLMCallRecord {
            call_id: format!("call-{i}"),
            api_type: "chat_completions".into(),
            model_name: "gpt-test".into(),
            provider: Some("openai".into()),
            started_at: Some(Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap()),
            completed_at: None,
            latency_ms: Some(250),
            input_messages: vec![LLMMessage::new("user", "hello")],
            output_messages: vec![LLMMessage::new("assistant", "hi")],
            output_tool_calls: vec![ToolCallSpec {
                name: "move".into(),
                arguments_json: "{\"dir\":\"up\"}".into(),
                call_id: Some("t1".into()),
                index: Some(0),
            }],
            tool_results: vec![ToolCallResult {
                call_id: Some("t1".into()),
                output_text: Some("ok".into()),
                exit_code: Some(0),
                ..Default::default()
            }],
            usage: Some(LLMUsage {
                input_tokens: Some(10),
                cost_usd: Some(0.0012345),
                ..Default::default()
            }),
            finish_reason: Some("stop".into()),
            metadata: HashMap::new(),
        }]),
        system_state_before: Some(json!({"hp": 10})),
        system_state_after: Some(Value::Null),
    })
}

pub fn env_event(i: usize) -> TracingEvent {
    TracingEvent::Environment(EnvironmentEvent {
        base: BaseEventFields {
            system_instance_id: "env".into(),
            time_record: time(1_700_000_000.5 + i as f64),
            metadata: HashMap::new(),
            event_metadata: None,
        },
        reward: 0.1 * i as f64,
        terminated: i % 2 == 0,
        truncated: false,
        system_state_before: None,
        system_state_after: Some(json!({"pos": [i, 2]})),
    })
}

pub fn runtime_event(i: usize) -> TracingEvent {
    TracingEvent::Runtime(RuntimeEvent {
        base: BaseEventFields {
            system_instance_id: "runtime".into(),
            time_record: time(1_700_000_002.25 + i as f64),
            metadata: HashMap::new(),
            event_metadata: None,
        },
        actions: vec![i as i32, 3, -1],
    })
}

pub fn message(i: usize) -> MarkovBlanketMessage {
    let content = match i % 3 {
        0 => MessageContent::from_text(format!("text {i}")),
        1 => MessageContent::from_json(&json!({"i": i})),
        _ => MessageContent {
            text: Some("both".into()),
            json_payload: Some("[1,2]".into()),
        },
    };
    MarkovBlanketMessage {
        content,
        message_type: if i % 2 == 0 { "user" } else { "assistant" }.into(),
        time_record: time(1_700_000_001.0 + i as f64),
        metadata: meta(&[("n", json!(i))]),
    }
}

/// A session with `steps` steps, each with three events and two messages,
/// plus one event and one message outside any step.
pub fn sample_trace(id: &str, steps: usize) -> SessionTrace {
    let mut trace = SessionTrace::new(id);
    trace.metadata = meta(&[("env", json!("crafter")), ("seed", json!(7))]);
    for s in 0..steps {
        let mut step = SessionTimeStep::new(format!("step-{s}"), s as i32);
        step.turn_number = Some(s as i32);
        step.step_metadata = meta(&[("s", json!(s))]);
        step.events = vec![cais_event(s), env_event(s), runtime_event(s)];
        step.markov_blanket_messages = vec![message(2 * s), message(2 * s + 1)];
        if s % 2 == 0 {
            step.completed_at = Some(Utc.timestamp_opt(1_700_000_100 + s as i64, 5).unwrap());
        }
        trace.event_history.extend(step.events.clone());
        trace
            .markov_blanket_message_history
            .extend(step.markov_blanket_messages.clone());
        trace.session_time_steps.push(step);
    }
    trace.event_history.push(env_event(99));
    trace.markov_blanket_message_history.push(message(99));
    trace
}

/// Writes a trace through the trait, in the order a tracer would: each step
/// with its events and messages, then the events and messages that belong to
/// no step (those past the steps' own in the histories). Returns the event ids.
pub async fn write_trace(storage: &dyn TraceStorage, trace: &SessionTrace) -> Vec<i64> {
    let sid = &trace.session_id;
    let meta = Value::Object(trace.metadata.clone().into_iter().collect());
    storage
        .ensure_session(sid, trace.created_at, &meta)
        .await
        .unwrap();
    let mut event_ids = Vec::new();
    for step in &trace.session_time_steps {
        let mut bare = step.clone();
        bare.completed_at = None;
        let ts = storage.ensure_timestep(sid, &bare).await.unwrap();
        for e in &step.events {
            event_ids.push(storage.insert_event(sid, Some(ts), e).await.unwrap());
        }
        for m in &step.markov_blanket_messages {
            storage.insert_message(sid, Some(ts), m).await.unwrap();
        }
        if step.completed_at.is_some() {
            storage
                .update_timestep(sid, &step.step_id, step.completed_at)
                .await
                .unwrap();
        }
    }
    let steps = &trace.session_time_steps;
    let in_steps: usize = steps.iter().map(|s| s.events.len()).sum();
    for e in &trace.event_history[in_steps..] {
        event_ids.push(storage.insert_event(sid, None, e).await.unwrap());
    }
    let in_steps: usize = steps.iter().map(|s| s.markov_blanket_messages.len()).sum();
    for m in &trace.markov_blanket_message_history[in_steps..] {
        storage.insert_message(sid, None, m).await.unwrap();
    }
    event_ids
}

pub async fn count(storage: &dyn TraceStorage, table: &str) -> i64 {
    let rows = storage
        .query(&format!("SELECT COUNT(*) AS n FROM {table}"), vec![])
        .await
        .unwrap();
    rows[0]["n"].as_i64().unwrap()
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

pub async fn round_trip(b: Backend) {
    let s = &*b.storage;
    let trace = sample_trace("round-trip", 4);
    write_trace(s, &trace).await;
    let back = s.get_session("round-trip").await.unwrap().unwrap();
    assert_eq!(back, trace);
    s.close().await.unwrap();
}

pub async fn ids_are_sequential(b: Backend) {
    let s = &*b.storage;
    s.ensure_session("s", Utc::now(), &json!({})).await.unwrap();
    for i in 1..=5 {
        let step = SessionTimeStep::new(format!("t{i}"), i as i32);
        assert_eq!(s.ensure_timestep("s", &step).await.unwrap(), i);
        assert_eq!(
            s.insert_event("s", Some(i), &env_event(1)).await.unwrap(),
            i
        );
        assert_eq!(
            s.insert_message("s", Some(i), &message(1)).await.unwrap(),
            i
        );
        let r = OutcomeReward {
            total_reward: i as f64,
            ..Default::default()
        };
        assert_eq!(s.insert_outcome_reward("s", &r).await.unwrap(), i);
        let r = EventReward {
            reward_value: 0.5,
            ..Default::default()
        };
        assert_eq!(
            s.insert_event_reward("s", i, Some(i), Some(1), &r)
                .await
                .unwrap(),
            i
        );
    }
    s.close().await.unwrap();
}

pub async fn ensure_is_idempotent(b: Backend) {
    let s = &*b.storage;
    s.ensure_session("s", Utc::now(), &json!({"a": 1}))
        .await
        .unwrap();
    s.ensure_session("s", Utc::now(), &json!({"a": 2}))
        .await
        .unwrap();
    assert_eq!(count(s, "session_traces").await, 1);
    let step = SessionTimeStep::new("t", 0);
    let a = s.ensure_timestep("s", &step).await.unwrap();
    let b2 = s.ensure_timestep("s", &step).await.unwrap();
    let b3 = s.ensure_timestep("s", &step).await.unwrap();
    assert_eq!((a, b2, b3), (1, 1, 1));
    // A repeated call used up no id.
    let next = s
        .ensure_timestep("s", &SessionTimeStep::new("u", 1))
        .await
        .unwrap();
    assert_eq!(next, 2);
    assert_eq!(count(s, "session_timesteps").await, 2);
    // The first metadata wins.
    let trace = s.get_session("s").await.unwrap().unwrap();
    assert_eq!(trace.metadata["a"], json!(1));
    s.close().await.unwrap();
}

pub async fn delete_session(b: Backend) {
    let s = &*b.storage;
    write_trace(s, &sample_trace("keep", 2)).await;
    write_trace(s, &sample_trace("gone", 2)).await;
    s.insert_outcome_reward("gone", &OutcomeReward::default())
        .await
        .unwrap();
    assert!(s.delete_session("gone").await.unwrap());
    assert!(!s.delete_session("gone").await.unwrap());
    assert!(!s.delete_session("never").await.unwrap());
    assert!(s.get_session("gone").await.unwrap().is_none());
    for table in ["events", "messages", "session_timesteps", "outcome_rewards"] {
        let rows = s
            .query(
                &format!("SELECT COUNT(*) AS n FROM {table} WHERE session_id = ?"),
                vec![json!("gone")],
            )
            .await
            .unwrap();
        assert_eq!(rows[0]["n"], json!(0), "{table}");
    }
    assert_eq!(
        s.get_session("keep").await.unwrap().unwrap().num_events(),
        7
    );
    s.close().await.unwrap();
}

pub async fn query_params(b: Backend) {
    let s = &*b.storage;
    let rows = s
        .query(
            "SELECT ? AS n, ? AS t, ? AS f, ? AS i, ? AS r, ? AS s, ? AS a, ? AS o",
            vec![
                Value::Null,
                json!(true),
                json!(false),
                json!(42),
                json!(2.5),
                json!("x'; DROP TABLE events; --"),
                json!([1, "a"]),
                json!({"k": [true]}),
            ],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0],
        json!({"n": null, "t": 1, "f": 0, "i": 42, "r": 2.5,
               "s": "x'; DROP TABLE events; --", "a": "[1,\"a\"]", "o": "{\"k\":[true]}"})
    );
    // Parameters bind into a real table, too.
    s.ensure_session("q", Utc::now(), &json!({})).await.unwrap();
    let rows = s
        .query(
            "SELECT session_id FROM session_traces WHERE session_id = ?",
            vec![json!("q")],
        )
        .await
        .unwrap();
    assert_eq!(rows, vec![json!({"session_id": "q"})]);
    s.close().await.unwrap();
}

pub async fn bad_sql_is_an_error(b: Backend) {
    let s = &*b.storage;
    assert!(s.query("SELEKT nonsense", vec![]).await.is_err());
    assert!(s
        .query("SELECT * FROM no_such_table", vec![])
        .await
        .is_err());
    // Still usable afterwards.
    s.ensure_session("after", Utc::now(), &json!({}))
        .await
        .unwrap();
    assert!(s.get_session("after").await.unwrap().is_some());
    s.close().await.unwrap();
}

pub async fn session_counts(b: Backend) {
    let s = &*b.storage;
    write_trace(s, &sample_trace("c", 3)).await;
    s.update_session_counts("c").await.unwrap();
    let rows = s
        .query(
            "SELECT num_timesteps, num_events, num_messages FROM session_traces WHERE session_id = ?",
            vec![json!("c")],
        )
        .await
        .unwrap();
    assert_eq!(
        rows[0],
        json!({"num_timesteps": 3, "num_events": 10, "num_messages": 7})
    );
    s.close().await.unwrap();
}

pub async fn unknown_session_is_none(b: Backend) {
    let s = &*b.storage;
    assert!(s.get_session("nope").await.unwrap().is_none());
    s.close().await.unwrap();
}

pub async fn use_after_close(b: Backend) {
    let s = &*b.storage;
    s.initialize().await.unwrap();
    s.ensure_session("s", Utc::now(), &json!({})).await.unwrap();
    s.close().await.unwrap();
    s.close().await.unwrap();
    assert!(s.ensure_session("t", Utc::now(), &json!({})).await.is_err());
    assert!(s.get_session("s").await.is_err());
    assert!(s.insert_event("s", None, &env_event(1)).await.is_err());
    assert!(s.query("SELECT 1", vec![]).await.is_err());
}

pub async fn bad_input_is_rejected(b: Backend) {
    let s = &*b.storage;
    s.ensure_session("s", Utc::now(), &json!({})).await.unwrap();
    let bad = OutcomeReward {
        total_reward: f64::NAN,
        ..Default::default()
    };
    assert!(matches!(
        s.insert_outcome_reward("s", &bad).await,
        Err(TracingError::InvalidInput(_))
    ));
    let bad = EventReward {
        reward_value: f64::INFINITY,
        ..Default::default()
    };
    assert!(matches!(
        s.insert_event_reward("s", 1, None, None, &bad).await,
        Err(TracingError::InvalidInput(_))
    ));
    assert!(matches!(
        s.ensure_session("", Utc::now(), &json!({})).await,
        Err(TracingError::InvalidInput(_))
    ));
    assert!(matches!(
        s.ensure_timestep("s", &SessionTimeStep::new("", 0)).await,
        Err(TracingError::InvalidInput(_))
    ));
    let mut e = env_event(1);
    if let TracingEvent::Environment(env) = &mut e {
        env.base.time_record.event_time = f64::NAN;
    }
    assert!(matches!(
        s.insert_event("s", None, &e).await,
        Err(TracingError::InvalidInput(_))
    ));
    // Nothing was written, and ids were not used up.
    assert_eq!(count(s, "outcome_rewards").await, 0);
    assert_eq!(count(s, "events").await, 0);
    let good = OutcomeReward::default();
    assert_eq!(s.insert_outcome_reward("s", &good).await.unwrap(), 1);
    s.close().await.unwrap();
}

pub async fn verbatim_text(b: Backend) {
    let s = &*b.storage;
    let id = "séssion-🚀-'; DROP TABLE session_traces; --";
    s.ensure_session(id, Utc::now(), &json!({"ü": "🙂"}))
        .await
        .unwrap();
    let step = SessionTimeStep::new("步骤\"1\"", 0);
    let ts = s.ensure_timestep(id, &step).await.unwrap();
    let msg = MarkovBlanketMessage {
        content: MessageContent::from_text("Robert'); DROP TABLE messages;--"),
        message_type: "user".into(),
        time_record: time(1.0),
        metadata: HashMap::new(),
    };
    s.insert_message(id, Some(ts), &msg).await.unwrap();
    let back = s.get_session(id).await.unwrap().unwrap();
    assert_eq!(back.session_id, id);
    assert_eq!(back.session_time_steps[0].step_id, "步骤\"1\"");
    assert_eq!(back.markov_blanket_message_history[0], msg);
    assert_eq!(back.metadata["ü"], json!("🙂"));
    s.close().await.unwrap();
}

/// Text with NULs in it, in plain and in JSON columns, reads back whole:
/// libsql reads a TEXT value as a C string, which would end at the NUL.
pub async fn text_with_nul_reads_back_whole(b: Backend) {
    let s = &*b.storage;
    let id = "nul\0session";
    s.ensure_session(id, Utc::now(), &json!({"k\0": "v\0w"}))
        .await
        .unwrap();
    let step = SessionTimeStep::new("step\0one", 0);
    let ts = s.ensure_timestep(id, &step).await.unwrap();
    // The same step again is the same row, looked up by its whole id.
    assert_eq!(s.ensure_timestep(id, &step).await.unwrap(), ts);
    let mut event = cais_event(1);
    if let TracingEvent::Cais(e) = &mut event {
        e.model_name = "model\0name".into();
        e.base.system_instance_id = "\0".into();
    }
    s.insert_event(id, Some(ts), &event).await.unwrap();
    let msg = MarkovBlanketMessage {
        content: MessageContent::from_text("before\0after"),
        message_type: "user\0".into(),
        time_record: time(1.0),
        metadata: HashMap::new(),
    };
    s.insert_message(id, Some(ts), &msg).await.unwrap();
    let back = s.get_session(id).await.unwrap().unwrap();
    assert_eq!(back.session_id, id);
    assert_eq!(back.metadata, meta(&[("k\0", json!("v\0w"))]));
    assert_eq!(back.session_time_steps[0].step_id, "step\0one");
    assert_eq!(back.event_history, vec![event]);
    assert_eq!(back.markov_blanket_message_history, vec![msg]);
    s.close().await.unwrap();
}

/// Text that is not UTF-8 (only SQL, or another program, can store it) is
/// an error in a query's result and U+FFFD in a read session, and the
/// storage goes on working: libsql (0.9.30) panics on such text.
pub async fn text_that_is_not_utf8_is_an_error_not_a_crash(b: Backend) {
    let s = &*b.storage;
    let err = s
        .query("SELECT CAST(x'ff' AS TEXT) AS t", vec![])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");
    s.ensure_session("bad", Utc::now(), &json!({}))
        .await
        .unwrap();
    let ts = s
        .ensure_timestep("bad", &SessionTimeStep::new("a", 0))
        .await
        .unwrap();
    s.insert_event("bad", Some(ts), &cais_event(1))
        .await
        .unwrap();
    s.query(
        "UPDATE events SET model_name = CAST(x'41ff42' AS TEXT) WHERE session_id = 'bad'",
        vec![],
    )
    .await
    .unwrap();
    let back = s.get_session("bad").await.unwrap().unwrap();
    match &back.event_history[0] {
        TracingEvent::Cais(e) => assert_eq!(e.model_name, "A\u{FFFD}B"),
        other => panic!("not an LLM event: {other:?}"),
    }
    // Still writing, still reading.
    s.ensure_session("after", Utc::now(), &json!({}))
        .await
        .unwrap();
    assert!(s.get_session("after").await.unwrap().is_some());
    let rows = s
        .query("SELECT count(*) AS n FROM events", vec![])
        .await
        .unwrap();
    assert_eq!(rows, vec![json!({"n": 1})]);
    s.close().await.unwrap();
}

/// Runs every check with a fresh backend from `make`.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn round_trip() {
            common::round_trip($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ids_are_sequential() {
            common::ids_are_sequential($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ensure_is_idempotent() {
            common::ensure_is_idempotent($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn delete_session() {
            common::delete_session($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn query_params() {
            common::query_params($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn bad_sql_is_an_error() {
            common::bad_sql_is_an_error($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn session_counts() {
            common::session_counts($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn unknown_session_is_none() {
            common::unknown_session_is_none($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn use_after_close() {
            common::use_after_close($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn bad_input_is_rejected() {
            common::bad_input_is_rejected($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn verbatim_text() {
            common::verbatim_text($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn text_with_nul_reads_back_whole() {
            common::text_with_nul_reads_back_whole($make.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn text_that_is_not_utf8_is_an_error_not_a_crash() {
            common::text_that_is_not_utf8_is_an_error_not_a_crash($make.await).await
        }
    };
}

/// Another connection that holds the write lock (`BEGIN IMMEDIATE`) until
/// released: nothing else can commit meanwhile.
pub struct Lock {
    conn: libsql::Connection,
    _db: libsql::Database,
}

impl Lock {
    pub async fn take(path: &std::path::Path) -> Lock {
        let db = libsql::Builder::new_local(path).build().await.expect("db");
        let conn = db.connect().expect("conn");
        conn.execute("BEGIN IMMEDIATE", ()).await.expect("lock");
        Lock { conn, _db: db }
    }

    pub async fn release(self) {
        self.conn.execute("COMMIT", ()).await.expect("unlock");
    }
}

/// Polls `check` until it is true; fails (does not hang) after a minute.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check().await {
        assert!(std::time::Instant::now() < end, "never happened: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
