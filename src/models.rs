//! Trace data models. (Over 500 lines: every model of the API, as serde shapes it.)
//!
//! These types keep the field names, types and serde shape of the original
//! tracing module, so JSON traces written by earlier tools still parse. They
//! hold data only: storage lives in [`crate::libsql_storage`] and the writer.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn default_objective_key() -> String {
    "reward".to_string()
}

/// When something happened: a wall-clock time and an optional message clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeRecord {
    /// Unix time in seconds, with millisecond precision from [`TimeRecord::now`].
    pub event_time: f64,
    /// An optional logical clock for message ordering.
    #[serde(default)]
    pub message_time: Option<i64>,
}

impl TimeRecord {
    /// The current wall-clock time, in Unix seconds with millisecond precision.
    ///
    /// ```
    /// let t = trace_writer::TimeRecord::now();
    /// assert!(t.event_time > 1.0e9);
    /// assert!(t.message_time.is_none());
    /// ```
    pub fn now() -> Self {
        let millis = Utc::now().timestamp_millis();
        Self {
            event_time: millis as f64 / 1000.0,
            message_time: None,
        }
    }
}

/// The content of a message: plain text, a JSON payload, or both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageContent {
    /// Plain text content.
    #[serde(default)]
    pub text: Option<String>,
    /// JSON content, kept as its serialized text.
    #[serde(default)]
    pub json_payload: Option<String>,
}

impl MessageContent {
    /// Content that is plain text.
    ///
    /// ```
    /// let c = trace_writer::MessageContent::from_text("hi");
    /// assert_eq!(c.as_text(), Some("hi"));
    /// ```
    pub fn from_text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            json_payload: None,
        }
    }

    /// Content that is a JSON value, stored as `value.to_string()`.
    ///
    /// ```
    /// let c = trace_writer::MessageContent::from_json(&serde_json::json!({"a": 1}));
    /// assert_eq!(c.as_text(), Some(r#"{"a":1}"#));
    /// ```
    pub fn from_json(value: &Value) -> Self {
        Self {
            text: None,
            json_payload: Some(value.to_string()),
        }
    }

    /// The text, or else the JSON payload.
    pub fn as_text(&self) -> Option<&str> {
        self.text.as_deref().or(self.json_payload.as_deref())
    }
}

/// The kind of a [`TracingEvent`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// An LLM call ([`LMCAISEvent`]).
    #[default]
    Cais,
    /// An environment step ([`EnvironmentEvent`]).
    Environment,
    /// An action selection ([`RuntimeEvent`]).
    Runtime,
}

impl EventType {
    /// The name stored in the `event_type` column and the serde tag.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Cais => "cais",
            EventType::Environment => "environment",
            EventType::Runtime => "runtime",
        }
    }
}

/// The fields whose presence marks an untagged event as an LLM call, as
/// the original binding infers it.
const CAIS_FIELDS: &[&str] = &[
    "model_name",
    "call_records",
    "input_tokens",
    "output_tokens",
];
/// The fields that mark an untagged event as an environment step.
const ENVIRONMENT_FIELDS: &[&str] = &["reward", "terminated", "truncated"];
/// The field that marks an untagged event as an action selection.
const RUNTIME_FIELDS: &[&str] = &["actions"];

/// How deep a value given from outside (a payload, metadata, a query
/// parameter) may nest, the payload itself counting as level 1: deeper
/// values, and values that contain themselves, are refused with
/// `InvalidInput` before anything is queued. `serde_json` refuses text
/// nested 128 levels deep; 100 leaves room for the levels that a stored
/// row or a spill file adds around a value, so that every value accepted
/// reads back. (Python's `json` allows about 1,000.)
///
/// ```
/// assert!(trace_writer::MAX_NESTING_DEPTH >= 64);
/// ```
pub const MAX_NESTING_DEPTH: usize = 100;

impl EventType {
    /// The kind of an event that carries no `event_type`, from the fields it
    /// has, by the original binding's rules, checked in this order:
    /// [`Cais`](EventType::Cais) if it has `model_name`, `call_records`,
    /// `input_tokens` or `output_tokens`; else
    /// [`Environment`](EventType::Environment) if it has `reward`,
    /// `terminated` or `truncated`; else [`Runtime`](EventType::Runtime) if it
    /// has `actions`; else `None`. A field counts when present, even if null.
    ///
    /// ```
    /// use trace_writer::EventType;
    /// let keys = ["system_instance_id", "reward", "actions"];
    /// assert_eq!(EventType::infer(|k| keys.contains(&k)), Some(EventType::Environment));
    /// assert_eq!(EventType::infer(|_| false), None);
    /// ```
    pub fn infer(has_field: impl Fn(&str) -> bool) -> Option<EventType> {
        [
            (EventType::Cais, CAIS_FIELDS),
            (EventType::Environment, ENVIRONMENT_FIELDS),
            (EventType::Runtime, RUNTIME_FIELDS),
        ]
        .into_iter()
        .find(|(_, fields)| fields.iter().any(|f| has_field(f)))
        .map(|(kind, _)| kind)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fields every event carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BaseEventFields {
    /// Which system instance produced the event.
    pub system_instance_id: String,
    /// When the event happened.
    pub time_record: TimeRecord,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: HashMap<String, Value>,
    /// Extra structured metadata entries.
    #[serde(default)]
    pub event_metadata: Option<Vec<Value>>,
}

impl BaseEventFields {
    /// Base fields stamped with [`TimeRecord::now`].
    pub fn new(system_instance_id: impl Into<String>) -> Self {
        Self {
            system_instance_id: system_instance_id.into(),
            time_record: TimeRecord::now(),
            metadata: HashMap::new(),
            event_metadata: None,
        }
    }
}

/// An LLM call event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LMCAISEvent {
    /// Shared event fields, flattened into the JSON object.
    #[serde(flatten)]
    pub base: BaseEventFields,
    /// The model that was called.
    pub model_name: String,
    /// The provider, for example `openai`.
    #[serde(default)]
    pub provider: Option<String>,
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: Option<i32>,
    /// Completion tokens.
    #[serde(default)]
    pub output_tokens: Option<i32>,
    /// Total tokens.
    #[serde(default)]
    pub total_tokens: Option<i32>,
    /// Cost in US dollars, stored exactly (and as rounded cents for old tools).
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// Latency of the call in milliseconds.
    #[serde(default)]
    pub latency_ms: Option<i32>,
    /// Span id for distributed tracing.
    #[serde(default)]
    pub span_id: Option<String>,
    /// Trace id for distributed tracing.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Normalized records of the calls made.
    #[serde(default)]
    pub call_records: Option<Vec<LLMCallRecord>>,
    /// System state before the call.
    #[serde(default)]
    pub system_state_before: Option<Value>,
    /// System state after the call.
    #[serde(default)]
    pub system_state_after: Option<Value>,
}

/// A Gym-style environment step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentEvent {
    /// Shared event fields, flattened into the JSON object.
    #[serde(flatten)]
    pub base: BaseEventFields,
    /// The step's reward.
    #[serde(default)]
    pub reward: f64,
    /// Whether the episode terminated.
    #[serde(default)]
    pub terminated: bool,
    /// Whether the episode was truncated.
    #[serde(default)]
    pub truncated: bool,
    /// Environment state before the step.
    #[serde(default)]
    pub system_state_before: Option<Value>,
    /// Environment state after the step.
    #[serde(default)]
    pub system_state_after: Option<Value>,
}

/// An action selection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeEvent {
    /// Shared event fields, flattened into the JSON object.
    #[serde(flatten)]
    pub base: BaseEventFields,
    /// The actions chosen.
    #[serde(default)]
    pub actions: Vec<i32>,
}

/// Any trace event, tagged by `event_type` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", rename_all = "snake_case")]
pub enum TracingEvent {
    /// An LLM call.
    Cais(LMCAISEvent),
    /// An environment step.
    Environment(EnvironmentEvent),
    /// An action selection.
    Runtime(RuntimeEvent),
}

impl TracingEvent {
    /// The event's kind.
    pub fn event_type(&self) -> EventType {
        match self {
            TracingEvent::Cais(_) => EventType::Cais,
            TracingEvent::Environment(_) => EventType::Environment,
            TracingEvent::Runtime(_) => EventType::Runtime,
        }
    }

    /// The shared fields.
    pub fn base(&self) -> &BaseEventFields {
        match self {
            TracingEvent::Cais(e) => &e.base,
            TracingEvent::Environment(e) => &e.base,
            TracingEvent::Runtime(e) => &e.base,
        }
    }

    /// When the event happened.
    pub fn time_record(&self) -> &TimeRecord {
        &self.base().time_record
    }

    /// Which system instance produced the event.
    pub fn system_instance_id(&self) -> &str {
        &self.base().system_instance_id
    }
}

impl TracingEvent {
    /// An event from JSON, tagged by `event_type` or, without the tag, of
    /// the kind [`EventType::infer`] gives, as the original binding accepts
    /// it.
    ///
    /// ```
    /// use serde_json::json;
    /// use trace_writer::{EventType, TracingEvent};
    /// let e = TracingEvent::from_json(json!({
    ///     "system_instance_id": "env", "time_record": {"event_time": 1.0},
    ///     "reward": 0.5, "terminated": true,
    /// })).unwrap();
    /// assert_eq!(e.event_type(), EventType::Environment);
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if the object has no tag and no field that marks a
    /// kind, or does not fit the kind's model.
    pub fn from_json(mut value: Value) -> Result<TracingEvent, crate::TracingError> {
        if let Value::Object(map) = &mut value {
            if !map.contains_key("event_type") {
                let kind = EventType::infer(|k| map.contains_key(k))
                    .ok_or_else(|| crate::TracingError::InvalidInput(UNTAGGED_EVENT.into()))?;
                map.insert("event_type".into(), Value::from(kind.as_str()));
            }
        }
        serde_json::from_value(value).map_err(|e| crate::TracingError::InvalidInput(e.to_string()))
    }
}

/// Why an untagged event that matches no kind is refused.
///
/// ```
/// assert!(trace_writer::UNTAGGED_EVENT.contains("event_type"));
/// ```
pub const UNTAGGED_EVENT: &str =
    "event_type is missing and cannot be inferred: an event needs model_name, call_records, \
     input_tokens or output_tokens (cais), reward, terminated or truncated (environment), or \
     actions (runtime)";

/// Token usage and cost of one LLM call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LLMUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: Option<i32>,
    /// Completion tokens.
    #[serde(default)]
    pub output_tokens: Option<i32>,
    /// Total tokens.
    #[serde(default)]
    pub total_tokens: Option<i32>,
    /// Reasoning tokens.
    #[serde(default)]
    pub reasoning_tokens: Option<i32>,
    /// Tokens read from a prompt cache.
    #[serde(default)]
    pub cache_read_tokens: Option<i32>,
    /// Tokens written to a prompt cache.
    #[serde(default)]
    pub cache_write_tokens: Option<i32>,
    /// Cost in US dollars.
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

/// One part of an LLM message: text, an image, and so on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LLMContentPart {
    /// The part's kind, `type` in JSON: `text`, `image`, ...
    #[serde(rename = "type")]
    pub content_type: String,
    /// Text of a text part.
    #[serde(default)]
    pub text: Option<String>,
    /// Structured data of other parts.
    #[serde(default)]
    pub data: Option<Value>,
    /// MIME type of binary parts.
    #[serde(default)]
    pub mime_type: Option<String>,
}

impl LLMContentPart {
    /// A part of type `text`.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            content_type: "text".to_string(),
            text: Some(text.into()),
            data: None,
            mime_type: None,
        }
    }
}

/// A message sent to or received from an LLM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LLMMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The content parts.
    #[serde(default)]
    pub parts: Vec<LLMContentPart>,
    /// An optional author name.
    #[serde(default)]
    pub name: Option<String>,
    /// The tool call this message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: HashMap<String, Value>,
}

impl LLMMessage {
    /// A message with one text part.
    ///
    /// ```
    /// let m = trace_writer::LLMMessage::new("user", "hello");
    /// assert_eq!(m.text(), Some("hello"));
    /// ```
    pub fn new(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            parts: vec![LLMContentPart::text(text)],
            ..Self::default()
        }
    }

    /// The text of the first text part.
    pub fn text(&self) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p.content_type == "text")
            .and_then(|p| p.text.as_deref())
    }
}

/// A tool call requested by the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallSpec {
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON text.
    pub arguments_json: String,
    /// The call's id.
    #[serde(default)]
    pub call_id: Option<String>,
    /// The call's position among parallel calls.
    #[serde(default)]
    pub index: Option<i32>,
}

/// The result of running a tool call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallResult {
    /// The call this answers.
    #[serde(default)]
    pub call_id: Option<String>,
    /// The tool's output.
    #[serde(default)]
    pub output_text: Option<String>,
    /// The exit code, for process tools.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// `ok`, `error`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// The error, if any.
    #[serde(default)]
    pub error_message: Option<String>,
    /// How long the tool ran.
    #[serde(default)]
    pub duration_ms: Option<i32>,
}

/// A normalized record of one LLM call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LLMCallRecord {
    /// The call's id.
    pub call_id: String,
    /// The API used, for example `chat_completions`.
    pub api_type: String,
    /// The model called.
    pub model_name: String,
    /// The provider.
    #[serde(default)]
    pub provider: Option<String>,
    /// When the call started.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When the call completed.
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Latency in milliseconds.
    #[serde(default)]
    pub latency_ms: Option<i32>,
    /// The prompt messages.
    #[serde(default)]
    pub input_messages: Vec<LLMMessage>,
    /// The returned messages.
    #[serde(default)]
    pub output_messages: Vec<LLMMessage>,
    /// Tool calls the model asked for.
    #[serde(default)]
    pub output_tool_calls: Vec<ToolCallSpec>,
    /// Results of tool calls.
    #[serde(default)]
    pub tool_results: Vec<ToolCallResult>,
    /// Token usage.
    #[serde(default)]
    pub usage: Option<LLMUsage>,
    /// Why generation stopped.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: HashMap<String, Value>,
}

/// A message between systems: user, assistant, system, tool_use, tool_result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MarkovBlanketMessage {
    /// The content.
    pub content: MessageContent,
    /// The message's kind.
    pub message_type: String,
    /// When it was sent.
    pub time_record: TimeRecord,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: HashMap<String, Value>,
}

/// One step of a session: its events and messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionTimeStep {
    /// The step's id, unique within its session.
    pub step_id: String,
    /// The step's position in the session.
    pub step_index: i32,
    /// When the step started.
    pub timestamp: DateTime<Utc>,
    /// The conversation turn, if any.
    #[serde(default)]
    pub turn_number: Option<i32>,
    /// The step's events.
    #[serde(default)]
    pub events: Vec<TracingEvent>,
    /// The step's messages.
    #[serde(default)]
    pub markov_blanket_messages: Vec<MarkovBlanketMessage>,
    /// Free-form metadata.
    #[serde(default)]
    pub step_metadata: HashMap<String, Value>,
    /// When the step completed.
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
}

impl SessionTimeStep {
    /// A step that starts now.
    pub fn new(step_id: impl Into<String>, step_index: i32) -> Self {
        Self {
            step_id: step_id.into(),
            step_index,
            timestamp: Utc::now(),
            turn_number: None,
            events: Vec::new(),
            markov_blanket_messages: Vec::new(),
            step_metadata: HashMap::new(),
            completed_at: None,
        }
    }

    /// Marks the step completed now.
    pub fn complete(&mut self) {
        self.completed_at = Some(Utc::now());
    }
}

/// A whole session: its steps, every event and message, and metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionTrace {
    /// The session's id.
    pub session_id: String,
    /// When the session was created.
    pub created_at: DateTime<Utc>,
    /// The steps in step order.
    #[serde(default)]
    pub session_time_steps: Vec<SessionTimeStep>,
    /// Every event of the session, in id order.
    #[serde(default)]
    pub event_history: Vec<TracingEvent>,
    /// Every message of the session, in id order.
    #[serde(default)]
    pub markov_blanket_message_history: Vec<MarkovBlanketMessage>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: HashMap<String, Value>,
}

impl SessionTrace {
    /// An empty session created now.
    pub fn new(session_id: impl Into<String>) -> Self {
        Self {
            session_id: session_id.into(),
            created_at: Utc::now(),
            session_time_steps: Vec::new(),
            event_history: Vec::new(),
            markov_blanket_message_history: Vec::new(),
            metadata: HashMap::new(),
        }
    }

    /// The number of steps.
    pub fn num_timesteps(&self) -> usize {
        self.session_time_steps.len()
    }

    /// The number of events.
    pub fn num_events(&self) -> usize {
        self.event_history.len()
    }

    /// The number of messages.
    pub fn num_messages(&self) -> usize {
        self.markov_blanket_message_history.len()
    }
}

/// A session-level reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeReward {
    /// Which objective this scores; `reward` by default.
    #[serde(default = "default_objective_key")]
    pub objective_key: String,
    /// The total reward.
    pub total_reward: f64,
    /// Achievements unlocked.
    #[serde(default)]
    pub achievements_count: i32,
    /// Steps taken.
    #[serde(default)]
    pub total_steps: i32,
    /// Free-form metadata.
    #[serde(default)]
    pub reward_metadata: HashMap<String, Value>,
    /// A free-form annotation.
    #[serde(default)]
    pub annotation: Option<Value>,
}

impl Default for OutcomeReward {
    fn default() -> Self {
        Self {
            objective_key: default_objective_key(),
            total_reward: 0.0,
            achievements_count: 0,
            total_steps: 0,
            reward_metadata: HashMap::new(),
            annotation: None,
        }
    }
}

/// An event-level reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventReward {
    /// Which objective this scores; `reward` by default.
    #[serde(default = "default_objective_key")]
    pub objective_key: String,
    /// The reward.
    pub reward_value: f64,
    /// shaped, sparse, achievement, penalty, evaluator or human.
    #[serde(default)]
    pub reward_type: Option<String>,
    /// A key, for example the achievement's name.
    #[serde(default)]
    pub key: Option<String>,
    /// A free-form annotation.
    #[serde(default)]
    pub annotation: Option<Value>,
    /// environment, runner, evaluator or human.
    #[serde(default)]
    pub source: Option<String>,
}

impl Default for EventReward {
    fn default() -> Self {
        Self {
            objective_key: default_objective_key(),
            reward_value: 0.0,
            reward_type: None,
            key: None,
            annotation: None,
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"system_instance_id": "x", "time_record": {"event_time": 1.0}})
    }

    fn with(fields: Value) -> Value {
        let mut v = base();
        for (k, f) in fields.as_object().expect("object") {
            v[k] = f.clone();
        }
        v
    }

    #[test]
    fn infers_kinds_in_the_original_order() {
        let kind = |fields: Value| TracingEvent::from_json(with(fields)).map(|e| e.event_type());
        assert_eq!(kind(json!({"model_name": "m"})).ok(), Some(EventType::Cais));
        assert_eq!(
            kind(json!({"input_tokens": 3, "model_name": "m"})).ok(),
            Some(EventType::Cais)
        );
        assert_eq!(
            kind(json!({"call_records": [], "model_name": "m", "reward": 1.0})).ok(),
            Some(EventType::Cais)
        );
        assert_eq!(
            kind(json!({"reward": 1.0, "actions": [1]})).ok(),
            Some(EventType::Environment)
        );
        assert_eq!(
            kind(json!({"truncated": true})).ok(),
            Some(EventType::Environment)
        );
        assert_eq!(
            kind(json!({"actions": [1, 2]})).ok(),
            Some(EventType::Runtime)
        );
        // A tag wins over inference.
        assert_eq!(
            kind(json!({"event_type": "runtime", "reward": 1.0})).ok(),
            Some(EventType::Runtime)
        );
        // Present but null still counts (then the model refuses the null).
        assert!(matches!(
            kind(json!({"terminated": null})),
            Err(crate::TracingError::InvalidInput(_))
        ));
        match kind(json!({"metadata": {}})) {
            Err(crate::TracingError::InvalidInput(m)) => assert!(m.contains("event_type"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
