//! The three event models read field by field, for the fast path.
//!
//! The crate's event structs keep their shared fields in a
//! `#[serde(flatten)]` `base`, and serde reads a flattened struct by first
//! buffering every key it does not know (the base fields, `event_type`, and
//! any extra key) into an intermediate tree, then reading the base fields
//! from that tree. These mirrors list every field side by side, so each
//! value is read once, straight into its place; unknown keys are skipped
//! without being looked at. Each mirror builds its model with a struct
//! literal, so a field added to a model and not here fails to compile.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use trace_writer::{
    BaseEventFields, EnvironmentEvent, LLMCallRecord, LMCAISEvent, RuntimeEvent, TimeRecord,
};

/// [`LMCAISEvent`], flat.
#[derive(Deserialize)]
pub(crate) struct Cais {
    system_instance_id: String,
    time_record: TimeRecord,
    #[serde(default)]
    metadata: HashMap<String, Value>,
    #[serde(default)]
    event_metadata: Option<Vec<Value>>,
    model_name: String,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    input_tokens: Option<i32>,
    #[serde(default)]
    output_tokens: Option<i32>,
    #[serde(default)]
    total_tokens: Option<i32>,
    #[serde(default)]
    cost_usd: Option<f64>,
    #[serde(default)]
    latency_ms: Option<i32>,
    #[serde(default)]
    span_id: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    call_records: Option<Vec<LLMCallRecord>>,
    #[serde(default)]
    system_state_before: Option<Value>,
    #[serde(default)]
    system_state_after: Option<Value>,
}

impl From<Cais> for LMCAISEvent {
    fn from(e: Cais) -> Self {
        LMCAISEvent {
            base: BaseEventFields {
                system_instance_id: e.system_instance_id,
                time_record: e.time_record,
                metadata: e.metadata,
                event_metadata: e.event_metadata,
            },
            model_name: e.model_name,
            provider: e.provider,
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            total_tokens: e.total_tokens,
            cost_usd: e.cost_usd,
            latency_ms: e.latency_ms,
            span_id: e.span_id,
            trace_id: e.trace_id,
            call_records: e.call_records,
            system_state_before: e.system_state_before,
            system_state_after: e.system_state_after,
        }
    }
}

/// [`EnvironmentEvent`], flat.
#[derive(Deserialize)]
pub(crate) struct Environment {
    system_instance_id: String,
    time_record: TimeRecord,
    #[serde(default)]
    metadata: HashMap<String, Value>,
    #[serde(default)]
    event_metadata: Option<Vec<Value>>,
    #[serde(default)]
    reward: f64,
    #[serde(default)]
    terminated: bool,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    system_state_before: Option<Value>,
    #[serde(default)]
    system_state_after: Option<Value>,
}

impl From<Environment> for EnvironmentEvent {
    fn from(e: Environment) -> Self {
        EnvironmentEvent {
            base: BaseEventFields {
                system_instance_id: e.system_instance_id,
                time_record: e.time_record,
                metadata: e.metadata,
                event_metadata: e.event_metadata,
            },
            reward: e.reward,
            terminated: e.terminated,
            truncated: e.truncated,
            system_state_before: e.system_state_before,
            system_state_after: e.system_state_after,
        }
    }
}

/// [`RuntimeEvent`], flat.
#[derive(Deserialize)]
pub(crate) struct Runtime {
    system_instance_id: String,
    time_record: TimeRecord,
    #[serde(default)]
    metadata: HashMap<String, Value>,
    #[serde(default)]
    event_metadata: Option<Vec<Value>>,
    #[serde(default)]
    actions: Vec<i32>,
}

impl From<Runtime> for RuntimeEvent {
    fn from(e: Runtime) -> Self {
        RuntimeEvent {
            base: BaseEventFields {
                system_instance_id: e.system_instance_id,
                time_record: e.time_record,
                metadata: e.metadata,
                event_metadata: e.event_metadata,
            },
            actions: e.actions,
        }
    }
}
