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
//! One macro writes the three, so the shared fields are listed once.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use trace_writer::{
    BaseEventFields, EnvironmentEvent, LLMCallRecord, LMCAISEvent, RuntimeEvent, TimeRecord,
};

/// A flat mirror of an event model: the shared fields, then `$field`s,
/// and the conversion into the model.
macro_rules! flat_event {
    ($(#[$doc:meta])* $flat:ident => $model:ident { $($(#[$attr:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        pub(crate) struct $flat {
            system_instance_id: String,
            time_record: TimeRecord,
            #[serde(default)]
            metadata: HashMap<String, Value>,
            #[serde(default)]
            event_metadata: Option<Vec<Value>>,
            $($(#[$attr])* $field: $ty,)*
        }

        impl From<$flat> for $model {
            fn from(e: $flat) -> Self {
                $model {
                    base: BaseEventFields {
                        system_instance_id: e.system_instance_id,
                        time_record: e.time_record,
                        metadata: e.metadata,
                        event_metadata: e.event_metadata,
                    },
                    $($field: e.$field,)*
                }
            }
        }
    };
}

flat_event! {
    /// [`LMCAISEvent`], flat.
    Cais => LMCAISEvent {
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
}

flat_event! {
    /// [`EnvironmentEvent`], flat.
    Environment => EnvironmentEvent {
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
}

flat_event! {
    /// [`RuntimeEvent`], flat.
    Runtime => RuntimeEvent {
        #[serde(default)]
        actions: Vec<i32>,
    }
}
