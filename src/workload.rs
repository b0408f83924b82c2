//! Synthetic RL rollouts, shared by the main example, the benches and the
//! report, so that all of them measure the same rows.

use std::collections::HashMap;

use chrono::Utc;
use serde_json::json;

use crate::error::Result;
use crate::models::{
    BaseEventFields, EnvironmentEvent, EventReward, LLMCallRecord, LLMMessage, LLMUsage,
    LMCAISEvent, MessageContent, OutcomeReward, TimeRecord, TracingEvent,
};
use crate::tracer::SessionTracer;

/// Timesteps in a realistic rollout.
pub const STEPS_PER_ROLLOUT: usize = 20;

/// Events written by one realistic rollout.
pub const EVENTS_PER_ROLLOUT: usize = 2 * STEPS_PER_ROLLOUT;
/// Messages written by one realistic rollout.
pub const MESSAGES_PER_ROLLOUT: usize = 2 * STEPS_PER_ROLLOUT;
/// Event rewards written by one realistic rollout.
pub const EVENT_REWARDS_PER_ROLLOUT: usize = 5;
/// Write calls made by one realistic rollout: the session, 20 × (timestep,
/// two events, two messages, the step's completion), the outcome reward,
/// five event rewards and the counts.
pub const OPS_PER_ROLLOUT: usize = 1 + STEPS_PER_ROLLOUT * 6 + 1 + EVENT_REWARDS_PER_ROLLOUT + 1;

/// A small event, about 150 bytes as a row: an environment step with a
/// small JSON metadata column.
pub fn small_event(i: usize) -> TracingEvent {
    TracingEvent::Environment(EnvironmentEvent {
        base: BaseEventFields {
            system_instance_id: "env-0".into(),
            time_record: TimeRecord {
                event_time: 1_700_000_000.0 + i as f64 * 0.001,
                message_time: Some(i as i64),
            },
            metadata: HashMap::from([("step".to_string(), json!(i))]),
            event_metadata: None,
        },
        reward: (i % 7) as f64 * 0.1,
        terminated: false,
        truncated: false,
        system_state_before: None,
        system_state_after: None,
    })
}

/// An LLM call event with a call record of about 400 bytes of JSON.
pub fn cais_event(rollout: usize, step: usize) -> TracingEvent {
    let now = Utc::now();
    TracingEvent::Cais(LMCAISEvent {
        base: BaseEventFields::new(format!("agent-{rollout}")),
        model_name: "gpt-4o-mini".into(),
        provider: Some("openai".into()),
        input_tokens: Some(412),
        output_tokens: Some(37),
        total_tokens: Some(449),
        cost_usd: Some(0.000_084),
        latency_ms: Some(640),
        span_id: None,
        trace_id: None,
        call_records: Some(vec![LLMCallRecord {
            call_id: format!("call-{rollout}-{step}"),
            api_type: "chat_completions".into(),
            model_name: "gpt-4o-mini".into(),
            provider: Some("openai".into()),
            started_at: Some(now),
            completed_at: Some(now),
            latency_ms: Some(640),
            input_messages: vec![LLMMessage::new(
                "user",
                format!(
                    "Step {step}: you see a tree to the north and water to the east. What next?"
                ),
            )],
            output_messages: vec![LLMMessage::new("assistant", "move_north; collect_wood")],
            usage: Some(LLMUsage {
                input_tokens: Some(412),
                output_tokens: Some(37),
                total_tokens: Some(449),
                ..Default::default()
            }),
            finish_reason: Some("stop".into()),
            ..Default::default()
        }]),
        system_state_before: None,
        system_state_after: None,
    })
}

/// An environment step with a reward and a small state.
pub fn env_event(step: usize) -> TracingEvent {
    TracingEvent::Environment(EnvironmentEvent {
        base: BaseEventFields::new("crafter-env"),
        reward: if step % 5 == 4 { 1.0 } else { 0.0 },
        terminated: step + 1 == STEPS_PER_ROLLOUT,
        truncated: false,
        system_state_before: None,
        system_state_after: Some(
            json!({"pos": [step, 3], "health": 9, "inventory": {"wood": step / 2}}),
        ),
    })
}

/// One realistic rollout through a tracer: 20 timesteps, each with an LLM
/// call event, an environment event and two messages; then an outcome
/// reward, five event rewards and the final counts.
///
/// # Errors
/// The storage's errors.
pub async fn run_rollout(tracer: &SessionTracer, rollout: usize) -> Result<String> {
    let session = tracer
        .start_session(
            None,
            HashMap::from([
                ("env".to_string(), json!("crafter")),
                ("rollout".to_string(), json!(rollout)),
            ]),
        )
        .await?;
    let mut env_events = Vec::with_capacity(STEPS_PER_ROLLOUT);
    for step in 0..STEPS_PER_ROLLOUT {
        tracer
            .start_timestep(&format!("step-{step}"), Some(step as i32), HashMap::new())
            .await?;
        tracer.record_event(cais_event(rollout, step)).await?;
        if let Some(id) = tracer.record_event(env_event(step)).await? {
            env_events.push(id);
        }
        tracer
            .record_message(
                MessageContent::from_text(format!("observation {step}")),
                "user",
                HashMap::new(),
            )
            .await?;
        tracer
            .record_message(
                MessageContent::from_text("move_north"),
                "assistant",
                HashMap::new(),
            )
            .await?;
    }
    tracer
        .record_outcome_reward(OutcomeReward {
            total_reward: 4.0,
            achievements_count: 2,
            total_steps: STEPS_PER_ROLLOUT as i32,
            ..Default::default()
        })
        .await?;
    for &event_id in env_events
        .iter()
        .skip(3)
        .step_by(4)
        .take(EVENT_REWARDS_PER_ROLLOUT)
    {
        tracer
            .record_event_reward(
                event_id,
                EventReward {
                    reward_value: 1.0,
                    reward_type: Some("sparse".into()),
                    source: Some("environment".into()),
                    ..Default::default()
                },
            )
            .await?;
    }
    tracer.end_session(true).await?;
    Ok(session)
}
