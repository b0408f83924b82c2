//! The models keep the original serde shape.
use serde_json::{json, Value};
use trace_writer::*;

#[test]
fn fixture_parses_with_the_documented_shape() {
    let text = include_str!("fixtures/session_trace.json");
    let trace: SessionTrace = serde_json::from_str(text).unwrap();
    assert_eq!(trace.session_id, "fixture-session");
    let step = &trace.session_time_steps[0];
    assert_eq!(step.events.len(), 3);
    assert_eq!(step.events[0].event_type(), EventType::Cais);
    assert_eq!(step.events[1].event_type(), EventType::Environment);
    assert_eq!(step.events[2].event_type(), EventType::Runtime);
    let TracingEvent::Cais(cais) = &step.events[0] else {
        panic!("not cais")
    };
    assert_eq!(cais.base.system_instance_id, "agent");
    assert_eq!(cais.base.time_record.message_time, Some(1));
    let record = &cais.call_records.as_ref().unwrap()[0];
    assert_eq!(record.input_messages[0].text(), Some("hi"));
    assert_eq!(record.output_messages[0].parts[0].content_type, "image");
    assert_eq!(record.usage.as_ref().unwrap().reasoning_tokens, Some(3));
    let TracingEvent::Environment(env) = &step.events[1] else {
        panic!("not environment")
    };
    assert!(env.terminated && !env.truncated);
    assert_eq!(env.reward, 1.5);
    let TracingEvent::Runtime(rt) = &step.events[2] else {
        panic!("not runtime")
    };
    assert_eq!(rt.actions, vec![1, 2, 3]);
    assert_eq!(
        step.markov_blanket_messages[0].content.as_text(),
        Some("look around")
    );
    // Absent keys took their defaults.
    assert!(trace.event_history.is_empty());
    assert!(step.step_metadata.is_empty());

    // Serializing gives the same shape back: tag, flattened base, `type`.
    let out: Value = serde_json::to_value(&trace).unwrap();
    let e0 = &out["session_time_steps"][0]["events"][0];
    assert_eq!(e0["event_type"], json!("cais"));
    assert_eq!(e0["system_instance_id"], json!("agent"));
    assert!(e0.get("base").is_none());
    assert_eq!(
        e0["call_records"][0]["input_messages"][0]["parts"][0]["type"],
        json!("text")
    );
    let again: SessionTrace = serde_json::from_value(out).unwrap();
    assert_eq!(again, trace);
}

#[test]
fn reward_defaults_use_the_reward_key() {
    assert_eq!(OutcomeReward::default().objective_key, "reward");
    assert_eq!(EventReward::default().objective_key, "reward");
    let r: OutcomeReward = serde_json::from_value(json!({"total_reward": 2.0})).unwrap();
    assert_eq!(r.objective_key, "reward");
    let r: EventReward = serde_json::from_value(json!({"reward_value": 0.5})).unwrap();
    assert_eq!(r.objective_key, "reward");
}

#[test]
fn helpers() {
    assert_eq!(EventType::Environment.to_string(), "environment");
    let c = MessageContent::from_json(&json!([1]));
    assert_eq!(c.as_text(), Some("[1]"));
    assert_eq!(MessageContent::default().as_text(), None);
    let mut step = SessionTimeStep::new("s", 3);
    assert!(step.completed_at.is_none());
    step.complete();
    assert!(step.completed_at.is_some());
    let t = SessionTrace::new("x");
    assert_eq!(
        (t.num_timesteps(), t.num_events(), t.num_messages()),
        (0, 0, 0)
    );
    let part = LLMContentPart::text("a");
    assert_eq!(part.content_type, "text");
    let now = TimeRecord::now();
    assert_eq!((now.event_time * 1000.0).fract(), 0.0);
}

#[test]
fn missing_required_field_is_an_error() {
    let bad = json!({"event_type": "cais", "time_record": {"event_time": 1.0}});
    assert!(serde_json::from_value::<TracingEvent>(bad).is_err());
    let unknown = json!({"event_type": "other", "system_instance_id": "x", "time_record": {"event_time": 1.0}});
    assert!(serde_json::from_value::<TracingEvent>(unknown).is_err());
}
