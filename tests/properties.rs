//! Property tests: random traces round-trip losslessly, and random operation
//! sequences give identical results and tables on both backends.
mod common;

use std::collections::HashMap;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};
use trace_writer::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,8}",
        "\\PC{0,12}",
        Just("'; DROP TABLE events; --".to_string()),
        Just("🚀 ünïcödé".to_string()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::hash_map("[a-z]{1,4}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn metadata() -> impl Strategy<Value = HashMap<String, Value>> {
    prop::collection::hash_map("[a-z]{1,6}", json_value(), 0..3)
}

fn time_record() -> impl Strategy<Value = TimeRecord> {
    (0.0f64..2e9, prop::option::of(any::<i64>())).prop_map(|(event_time, message_time)| {
        TimeRecord {
            event_time,
            message_time,
        }
    })
}

fn base() -> impl Strategy<Value = BaseEventFields> {
    (
        text(),
        time_record(),
        metadata(),
        prop::option::of(prop::collection::vec(json_value(), 0..2)),
    )
        .prop_map(|(id, tr, md, em)| BaseEventFields {
            system_instance_id: id,
            time_record: tr,
            metadata: md,
            event_metadata: em,
        })
}

fn event() -> impl Strategy<Value = TracingEvent> {
    let cais = (
        base(),
        text(),
        prop::option::of(text()),
        prop::option::of(any::<i32>()),
        prop::option::of(0.0f64..100.0),
        prop::option::of(text()),
        prop::option::of(prop::option::of(json_value())),
    )
        .prop_map(|(base, model, provider, tokens, cost, span, state)| {
            TracingEvent::Cais(LMCAISEvent {
                base,
                model_name: model,
                provider,
                input_tokens: tokens,
                output_tokens: tokens.map(|t| t / 2),
                total_tokens: None,
                cost_usd: cost,
                latency_ms: tokens,
                span_id: span.clone(),
                trace_id: span,
                call_records: state.as_ref().map(|_| {
                    vec![LLMCallRecord {
                        call_id: "c".into(),
                        api_type: "chat".into(),
                        model_name: "m".into(),
                        input_messages: vec![LLMMessage::new("user", "x")],
                        ..Default::default()
                    }]
                }),
                system_state_before: state.clone().flatten(),
                system_state_after: state.flatten(),
            })
        });
    let env = (
        base(),
        -1e6f64..1e6,
        any::<bool>(),
        any::<bool>(),
        prop::option::of(json_value()),
    )
        .prop_map(|(base, reward, terminated, truncated, state)| {
            TracingEvent::Environment(EnvironmentEvent {
                base,
                reward,
                terminated,
                truncated,
                system_state_before: state.clone(),
                system_state_after: state,
            })
        });
    let runtime = (base(), prop::collection::vec(any::<i32>(), 0..4))
        .prop_map(|(base, actions)| TracingEvent::Runtime(RuntimeEvent { base, actions }));
    prop_oneof![cais, env, runtime]
}

fn message() -> impl Strategy<Value = MarkovBlanketMessage> {
    (
        prop::option::of(text()),
        prop::option::of(text()),
        text(),
        time_record(),
        metadata(),
    )
        .prop_map(|(t, j, kind, tr, md)| MarkovBlanketMessage {
            content: MessageContent {
                text: t,
                json_payload: j,
            },
            message_type: kind,
            time_record: tr,
            metadata: md,
        })
}

fn trace() -> impl Strategy<Value = SessionTrace> {
    (
        "[a-zA-Z0-9-]{1,12}",
        metadata(),
        prop::collection::vec(
            (
                prop::collection::vec(event(), 0..3),
                prop::collection::vec(message(), 0..3),
                metadata(),
                prop::option::of(any::<i32>()),
                any::<bool>(),
            ),
            0..4,
        ),
        prop::collection::vec(event(), 0..2),
    )
        .prop_map(|(id, md, steps, loose)| {
            let mut trace = SessionTrace::new(id);
            trace.metadata = md;
            for (i, (events, msgs, smd, turn, done)) in steps.into_iter().enumerate() {
                let mut step = SessionTimeStep::new(format!("step-{i}"), i as i32);
                step.step_metadata = smd;
                step.turn_number = turn;
                if done {
                    step.completed_at =
                        Some(Utc.timestamp_opt(1_700_000_000 + i as i64, 7).unwrap());
                }
                trace.event_history.extend(events.clone());
                trace.markov_blanket_message_history.extend(msgs.clone());
                step.events = events;
                step.markov_blanket_messages = msgs;
                trace.session_time_steps.push(step);
            }
            trace.event_history.extend(loose);
            trace
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn traces_round_trip_on_the_plain_backend(trace in trace()) {
        rt().block_on(async {
            let s = LibsqlTraceStorage::new_memory().await.unwrap();
            common::write_trace(&s, &trace).await;
            let back = s.get_session(&trace.session_id).await.unwrap().unwrap();
            prop_assert_eq!(back, trace);
            Ok(())
        })?;
    }

    #[test]
    fn traces_round_trip_through_the_writer(trace in trace()) {
        rt().block_on(async {
            let w = BufferedTraceWriter::new(StorageConfig::memory(), WriterConfig::default()).await.unwrap();
            common::write_trace(&w, &trace).await;
            let back = w.get_session(&trace.session_id).await.unwrap().unwrap();
            prop_assert_eq!(back, trace);
            w.close().await.unwrap();
            Ok(())
        })?;
    }
}

/// One call on the trait, with indexes into small pools of ids.
#[derive(Debug, Clone)]
enum Call {
    Session(u8),
    Timestep(u8, u8),
    UpdateStep(u8, u8, bool),
    Event(u8, Option<u8>, u8),
    Message(u8, Option<u8>, u8),
    Outcome(u8, i16),
    EventReward(u8, u8, i16),
    Counts(u8),
    Delete(u8),
    Get(u8),
    Query(u8),
}

fn call() -> impl Strategy<Value = Call> {
    let s = 0u8..3;
    let t = 0u8..4;
    prop_oneof![
        2 => s.clone().prop_map(Call::Session),
        3 => (s.clone(), t.clone()).prop_map(|(a, b)| Call::Timestep(a, b)),
        1 => (s.clone(), t.clone(), any::<bool>()).prop_map(|(a, b, c)| Call::UpdateStep(a, b, c)),
        4 => (s.clone(), prop::option::of(t.clone()), 0u8..3).prop_map(|(a, b, c)| Call::Event(a, b, c)),
        3 => (s.clone(), prop::option::of(t.clone()), 0u8..3).prop_map(|(a, b, c)| Call::Message(a, b, c)),
        1 => (s.clone(), any::<i16>()).prop_map(|(a, b)| Call::Outcome(a, b)),
        2 => (s.clone(), any::<u8>(), any::<i16>()).prop_map(|(a, b, c)| Call::EventReward(a, b, c)),
        1 => s.clone().prop_map(Call::Counts),
        1 => s.clone().prop_map(Call::Delete),
        1 => s.clone().prop_map(Call::Get),
        1 => s.prop_map(Call::Query),
    ]
}

/// Runs the calls and returns every result as JSON, plus the step ids seen.
async fn run_calls(storage: &dyn TraceStorage, calls: &[Call]) -> Vec<Value> {
    let sid = |i: &u8| format!("session-{i}");
    let created = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let mut steps: HashMap<(u8, u8), i64> = HashMap::new();
    let mut events: Vec<i64> = Vec::new();
    let mut out = Vec::new();
    for c in calls {
        let r: Value = match c {
            Call::Session(s) => json!(storage
                .ensure_session(&sid(s), created, &json!({"s": s}))
                .await
                .is_ok()),
            Call::Timestep(s, t) => {
                let mut step = SessionTimeStep::new(format!("t{t}"), *t as i32);
                step.timestamp = created;
                let id = storage.ensure_timestep(&sid(s), &step).await.unwrap();
                steps.insert((*s, *t), id);
                json!(id)
            }
            Call::UpdateStep(s, t, done) => {
                let at = done.then_some(created);
                json!(storage
                    .update_timestep(&sid(s), &format!("t{t}"), at)
                    .await
                    .is_ok())
            }
            Call::Event(s, t, k) => {
                let ts = t.and_then(|t| steps.get(&(*s, t)).copied());
                let e = match k {
                    0 => common::cais_event(events.len()),
                    1 => common::env_event(events.len()),
                    _ => common::runtime_event(events.len()),
                };
                let id = storage.insert_event(&sid(s), ts, &e).await.unwrap();
                events.push(id);
                json!(id)
            }
            Call::Message(s, t, k) => {
                let ts = t.and_then(|t| steps.get(&(*s, t)).copied());
                json!(storage
                    .insert_message(&sid(s), ts, &common::message(*k as usize))
                    .await
                    .unwrap())
            }
            Call::Outcome(s, r) => {
                let reward = OutcomeReward {
                    total_reward: *r as f64 / 8.0,
                    ..Default::default()
                };
                json!(storage
                    .insert_outcome_reward(&sid(s), &reward)
                    .await
                    .unwrap())
            }
            Call::EventReward(s, e, r) => {
                let event_id = if events.is_empty() {
                    999
                } else {
                    events[*e as usize % events.len()]
                };
                let reward = EventReward {
                    reward_value: *r as f64,
                    key: Some("k".into()),
                    ..Default::default()
                };
                json!(storage
                    .insert_event_reward(&sid(s), event_id, None, Some(1), &reward)
                    .await
                    .unwrap())
            }
            Call::Counts(s) => json!(storage.update_session_counts(&sid(s)).await.is_ok()),
            Call::Delete(s) => {
                // A deleted session's steps are gone: forget them here too.
                steps.retain(|(ss, _), _| ss != s);
                json!(storage.delete_session(&sid(s)).await.unwrap())
            }
            Call::Get(s) => {
                let mut v =
                    serde_json::to_value(storage.get_session(&sid(s)).await.unwrap()).unwrap();
                if let Some(obj) = v.as_object_mut() {
                    obj.remove("created_at");
                }
                v
            }
            Call::Query(s) => Value::Array(
                storage
                    .query(
                        "SELECT id, event_type FROM events WHERE session_id = ? ORDER BY id",
                        vec![json!(sid(s))],
                    )
                    .await
                    .unwrap(),
            ),
        };
        out.push(r);
    }
    out
}

/// Every table's rows, without the wall-clock `created_at` of rewards.
async fn tables(storage: &dyn TraceStorage) -> Value {
    let mut all = serde_json::Map::new();
    for (table, order) in [
        ("session_traces", "session_id"),
        ("session_timesteps", "id"),
        ("events", "id"),
        ("messages", "id"),
        ("outcome_rewards", "id"),
        ("event_rewards", "id"),
    ] {
        let mut rows = storage
            .query(&format!("SELECT * FROM {table} ORDER BY {order}"), vec![])
            .await
            .unwrap();
        if table.ends_with("rewards") {
            for r in &mut rows {
                r.as_object_mut().unwrap().remove("created_at");
            }
        }
        all.insert(table.to_string(), Value::Array(rows));
    }
    Value::Object(all)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn both_backends_agree(calls in prop::collection::vec(call(), 1..40), multi_row in any::<bool>()) {
        rt().block_on(async {
            let plain = LibsqlTraceStorage::new_memory().await.unwrap();
            let config = WriterConfig::default().multi_row_inserts(multi_row).max_batch_ops(7);
            let writer = BufferedTraceWriter::new(StorageConfig::memory(), config).await.unwrap();
            let a = run_calls(&plain, &calls).await;
            let b = run_calls(&writer, &calls).await;
            prop_assert_eq!(a, b);
            writer.flush().await.unwrap();
            prop_assert_eq!(tables(&plain).await, tables(&writer).await);
            let stats = writer.stats();
            prop_assert_eq!(stats.enqueued, stats.committed);
            prop_assert_eq!(stats.failed, 0);
            writer.close().await.unwrap();
            Ok(())
        })?;
    }
}
